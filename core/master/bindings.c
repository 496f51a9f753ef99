/*
 * Every binding table of the core in one list (config/bind.h): which
 * parameters each role binds into its settings or reads itself. The list
 * sits here, above the roles, because the master is the one part of the
 * daemon that knows them all (it forks them); tests and tools reach it
 * through master/master.h.
 *
 * The tools (petrelctl, petrel-sendmail, petrel-postdrop) are programs of
 * their own, outside the core library; what they read (cfg_peek, or the
 * configuration petrelctl loads) is written down here.
 */
#include "config.h"

#include "config/bind.h"
#include "mail/addr_class.h"
#include "mail/resolve.h"
#include "mail/rewrite.h"
#include "master/master.h"
#include "qmgr/mailbox_helper.h"
#include "qmgr/qmgr.h"
#include "qmgr/route.h"
#include "smtpd/smtpd.h"

/* What the master reads itself, where it needs it (master.c: listeners,
 * logging, the queue, privileges, how many workers; the module set). Kept
 * here, not in master.c, because the loader (load.c) checks every table
 * and master.c runs the loader. */
static const struct cfg_bind master_binds[] = {
    CFG_BIND_READ("inet_interfaces"),
    CFG_BIND_READ("inet_protocols"),
    CFG_BIND_READ("dns_resolver"),
    CFG_BIND_READ("smtpd_workers"),
    CFG_BIND_READ("syslog_name"),
    CFG_BIND_READ("maillog_file"),
    CFG_BIND_READ("syslog_facility"),
    CFG_BIND_READ("queue_directory"),
    CFG_BIND_READ("mail_owner"),
    CFG_BIND_READ("setgid_group"),
    CFG_BIND_READ("data_directory"),
    CFG_BIND_READ("postscreen_cache_map"),
    CFG_BIND_READ("smtpd_tls_session_cache_timeout"),   /* the ticket keys' lifetime */
    CFG_BIND_READ("metrics_listen"),                    /* the metrics endpoint (http.c) */
    CFG_BIND_READ("metrics_allow"),
    /* module/module.c, when master_load_config loads the module set */
    CFG_BIND_READ("modules"),
    CFG_BIND_READ("module_directory"),
};
static const struct cfg_bind_table master_bind_table = CFG_BIND_TABLE("master", master_binds);

static const struct cfg_bind tools_binds[] = {
    CFG_BIND_READ("queue_directory"),              /* petrelctl, petrel-sendmail, petrel-postdrop */
    CFG_BIND_READ("alternate_config_directories"), /* petrel-postdrop */
    CFG_BIND_READ("multi_instance_directories"),   /* petrel-postdrop */
    CFG_BIND_READ("message_size_limit"),           /* petrel-postdrop, petrel-sendmail */
    CFG_BIND_READ("command_directory"),            /* petrel-sendmail */
    CFG_BIND_READ("mail_name"),                    /* petrel-sendmail */
    CFG_BIND_READ("myhostname"),                   /* petrel-sendmail */
    CFG_BIND_READ("myorigin"),                     /* petrel-sendmail */
    CFG_BIND_READ("alias_database"),               /* petrelctl newaliases */
    CFG_BIND_READ("default_database_type"),        /* petrelctl map, alias */
};
static const struct cfg_bind_table tools_bind_table = CFG_BIND_TABLE("tools", tools_binds);

const struct cfg_bind_table *const petrel_bind_tables[] = {
    &cfg_machinery_bind_table,
    &master_bind_table,
    &smtpd_bind_table,
    &smtpd_service_bind_table,
    &smtpd_rcpt_maps_bind_table,
    &smtpd_worker_bind_table,
    &smtpd_pickup_bind_table,
    &psc_bind_table,
    &smtpd_cleanup_bind_table,
    &mail_domains_bind_table,
    &mail_rewrite_bind_table,
    &mail_resolve_bind_table,
    &router_bind_table,
    &qmgr_bind_table,
    &smtp_client_bind_table,
    &lmtp_client_bind_table,
    &mailbox_helper_bind_table,
    &tools_bind_table,
};
const size_t petrel_bind_ntables = sizeof(petrel_bind_tables) / sizeof(petrel_bind_tables[0]);
