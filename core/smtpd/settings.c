/*
 * Per-listener settings: main.cf plus one master.cf line's -o overrides,
 * turned once into plain fields, compiled restriction lists and a TLS
 * context, so that sessions never look at configuration text.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/statvfs.h>

#include "config/cfg.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "mail/addr_class.h"
#include "smtpd/rcpt_maps.h"
#include "smtpd/anvil.h"
#include "smtpd/restrict.h"
#include "smtpd/smtpd_int.h"
#include "tables/cidr.h"
#include "module/module.h"
#include "queue/maildrop.h"
#include "tables/table.h"
#include "tables/access.h"

__attribute__((format(printf, 2, 3)))
static int fail(char **error, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(error, fmt, ap) < 0)
        *error = NULL;
    va_end(ap);
    return -1;
}

/* The errors above read "parameter: problem". Say where to fix it: the
 * main.cf line when the value comes from main.cf, the master.cf line and
 * service only for a -o override there (or a default value, or a problem
 * that is not one parameter's), so an admin is never sent to master.cf for
 * a main.cf mistake. */
static void locate_error(const struct master_service *svc, char **error)
{
    if (*error == NULL)
        return;
    char *located = NULL;
    size_t name_len = strcspn(*error, ": ");
    if (name_len > 0 && strncmp(*error + name_len, ": ", 2) == 0) {
        char *param = xstrndup(*error, name_len);
        const char *file = NULL;
        int line = 0;
        if (cfg_get(svc->cfg, param) != NULL)
            cfg_origin(svc->cfg, param, &file, &line);
        if (file && (svc->file == NULL || strcmp(file, svc->file) != 0) && line > 0 &&
            asprintf(&located, "%s:%d: %s", file, line, *error) < 0)
            located = NULL;
        free(param);
    }
    if (located == NULL &&
        asprintf(&located, "%s, line %d: service %s: %s", svc->file, svc->line, svc->name, *error) < 0)
        return;   /* out of memory: the bare message still says what is wrong */
    free(*error);
    *error = located;
}

static struct cidr_list *networks(const struct cfg *cfg, const char *param, char **error)
{
    char *err = NULL;
    struct cidr_list *list = cidr_list_new();
    for (const char *const *item = cfg_list(cfg, param); *item; item++) {
        if (cidr_list_add(list, *item, &err) != 0) {
            fail(error, "%s: %s", param, err);
            free(err);
            cidr_list_free(list);
            return NULL;
        }
    }
    return list;
}

static int compile_list(struct smtpd_settings *set, struct smtpd_worker *w, const char *param,
                        struct restrict_list **out, char **error)
{
    char *err = NULL;
    *out = restrict_compile(set->pool, param, cfg_list(set->cfg, param), w->tables, w->modules, &err);
    if (*out == NULL) {
        fail(error, "%s: %s", param, err);
        free(err);
        return -1;
    }
    if (restrict_list_has(*out, "reject_unauth_pipelining"))
        set->uses_unauth_pipelining = 1;
    return 0;
}

static void free_settings_pool(void *arg)
{
    struct smtpd_settings *set = arg;
    if (set->borrowed)
        return;   /* the tables, lists and TLS context belong to the settings it shares them with */
    if (set->tls_ctx)
        SSL_CTX_free(set->tls_ctx);
    cidr_list_free(set->mynetworks);
    cidr_list_free(set->bare_lf_exclusions);
    cidr_list_free(set->conn_limit_exceptions);
    cidr_list_free(set->debug_peers);
    for (size_t i = 0; i < set->nsender_bcc_maps; i++)
        tbl_close(set->sender_bcc_maps[i]);
    smtpd_rcpt_maps_free(set->rcpt_maps);
}

/* What a service's stress configuration usually changes: values read into
 * plain fields. When nothing else differs, the stress settings share the
 * tables, restriction lists and TLS context of the normal ones instead of
 * opening everything a second time. */
static const char *const scalar_params[] = {
    "stress", "smtpd_timeout", "smtpd_hard_error_limit", "smtpd_soft_error_limit", "smtpd_junk_command_limit",
    "smtpd_error_sleep_time", "smtpd_banner", "smtpd_recipient_limit", "message_size_limit", "line_length_limit",
    "smtpd_client_connection_count_limit", "smtpd_client_connection_rate_limit", "smtpd_helo_required",
    "disable_vrfy_command", "smtpd_delay_reject", "smtpd_sasl_response_limit", NULL
};

/* The fields read straight from the configuration (no table, list or TLS). */
static void read_plain_values(struct smtpd_settings *set, const struct master_service *svc, const struct cfg *cfg)
{
    petrel_pool *pool = set->pool;
    set->service_name = petrel_pool_strdup(pool, svc->name);
    set->myhostname = cfg_get(cfg, "myhostname");
    set->mail_name = cfg_get(cfg, "mail_name");
    set->banner = cfg_get(cfg, "smtpd_banner");
    set->line_length_limit = (size_t)cfg_int(cfg, "line_length_limit");
    if (set->line_length_limit < 512)
        set->line_length_limit = 512;   /* RFC 5321 4.5.3.1.4: a command line may be 512 octets */
    set->message_size_limit = (unsigned long long)cfg_int(cfg, "message_size_limit");
    set->recipient_limit = (unsigned)cfg_int(cfg, "smtpd_recipient_limit");
    set->timeout.tv_sec = (time_t)cfg_int(cfg, "smtpd_timeout");
    set->soft_error_limit = (int)cfg_int(cfg, "smtpd_soft_error_limit");
    set->hard_error_limit = (int)cfg_int(cfg, "smtpd_hard_error_limit");
    set->error_sleep_time = cfg_int(cfg, "smtpd_error_sleep_time");
    set->junk_command_limit = (int)cfg_int(cfg, "smtpd_junk_command_limit");
    set->sasl_response_limit = (size_t)cfg_int(cfg, "smtpd_sasl_response_limit");
    set->helo_required = cfg_bool(cfg, "smtpd_helo_required");
    set->disable_vrfy = cfg_bool(cfg, "disable_vrfy_command");
    set->delay_reject = cfg_bool(cfg, "smtpd_delay_reject");
    set->smtputf8 = cfg_bool(cfg, "smtputf8_enable");
    set->forbid_unauth_pipelining = cfg_bool(cfg, "smtpd_forbid_unauth_pipelining");
    const char *bare = cfg_get(cfg, "smtpd_forbid_bare_newline");
    if (strcasecmp(bare, "reject") == 0)
        set->bare_lf_policy = DATA_BARE_LF_REJECT;
    else if (strcasecmp(bare, "no") == 0)
        set->bare_lf_policy = DATA_BARE_LF_ALLOW;
    else
        set->bare_lf_policy = DATA_BARE_LF_NORMALIZE;   /* normalize, yes */
    set->bare_lf_reject_code = (int)cfg_int(cfg, "smtpd_forbid_bare_newline_reject_code");
    set->conn_count_limit = (unsigned)cfg_int(cfg, "smtpd_client_connection_count_limit");
    set->conn_rate_limit = (unsigned)cfg_int(cfg, "smtpd_client_connection_rate_limit");
    set->rate_time_unit = (unsigned)cfg_int(cfg, "anvil_rate_time_unit");
    set->maxproc = svc->maxproc;
    mail_domains_init(&set->domains, cfg);
    set->recipient_delimiter = cfg_get(cfg, "recipient_delimiter");
    set->reject_unlisted_recipient = cfg_bool(cfg, "smtpd_reject_unlisted_recipient");
    set->reject_unlisted_sender = cfg_bool(cfg, "smtpd_reject_unlisted_sender");
    set->always_bcc = cfg_get(cfg, "always_bcc");
    set->discard_ehlo_keywords = cfg_list(cfg, "smtpd_discard_ehlo_keywords");
}

struct smtpd_settings *smtpd_settings_create(struct smtpd_worker *w, const struct master_service *svc,
                                             const struct cfg *cfg, const struct smtpd_settings *like,
                                             char **error)
{
    if (strlen(svc->name) > ANVIL_SERVICE_NAME_MAX) {
        fail(error, "the service name is longer than %d characters (connection accounting keys include it)",
             ANVIL_SERVICE_NAME_MAX);
        locate_error(svc, error);
        return NULL;
    }
    petrel_pool *pool = petrel_pool_create(8192);
    struct smtpd_settings *set = petrel_pool_zalloc(pool, sizeof(*set));
    if (like && cfg_same_except(like->cfg, cfg, scalar_params)) {
        /* Everything like has, with this configuration's plain values. */
        *set = *like;
        set->pool = pool;
        set->cfg = cfg;
        set->borrowed = 1;
        petrel_pool_cleanup_add(pool, free_settings_pool, set);
        read_plain_values(set, svc, cfg);
        return set;
    }
    set->pool = pool;
    set->cfg = cfg;
    petrel_pool_cleanup_add(pool, free_settings_pool, set);
    read_plain_values(set, svc, cfg);
    {
        const char *param = NULL;
        set->rcpt_maps = smtpd_rcpt_maps_open(cfg, w->tables, &param, error);
        if (set->rcpt_maps == NULL)
            goto failed;
    }
    {
        const char *const *specs = cfg_list(cfg, "sender_bcc_maps");
        size_t n = 0;
        while (specs[n])
            n++;
        set->sender_bcc_maps = petrel_pool_zalloc(pool, (n ? n : 1) * sizeof(struct tbl *));
        for (size_t i = 0; i < n; i++) {
            char *why = NULL;
            struct tbl *t = tbl_open(w->tables, specs[i], TBL_FLAG_FOLD_CASE, &why);
            if (t == NULL) {
                fail(error, "sender_bcc_maps: %s", why ? why : specs[i]);
                free(why);
                goto failed;
            }
            set->sender_bcc_maps[set->nsender_bcc_maps++] = t;
        }
    }

    if ((set->mynetworks = networks(cfg, "mynetworks", error)) == NULL ||
        (set->bare_lf_exclusions = networks(cfg, "smtpd_forbid_bare_newline_exclusions", error)) == NULL ||
        (set->conn_limit_exceptions = networks(cfg, "smtpd_client_event_limit_exceptions", error)) == NULL ||
        (set->debug_peers = networks(cfg, "debug_peer_list", error)) == NULL)
        goto failed;

    const char *level = cfg_get(cfg, "smtpd_tls_security_level");
    if (level == NULL || *level == '\0' || strcasecmp(level, "none") == 0)
        set->tls_level = TLS_LEVEL_NONE;
    else if (strcasecmp(level, "may") == 0)
        set->tls_level = TLS_LEVEL_MAY;
    else if (strcasecmp(level, "encrypt") == 0)
        set->tls_level = TLS_LEVEL_ENCRYPT;
    else {
        fail(error, "smtpd_tls_security_level: unknown level \"%s\" (use none, may or encrypt)", level);
        goto failed;
    }
    set->tls_wrappermode = cfg_bool(cfg, "smtpd_tls_wrappermode");
    set->tls_auth_only = cfg_bool(cfg, "smtpd_tls_auth_only");
    if (cfg_bool(cfg, "smtpd_sasl_auth_enable")) {
        const char *type = cfg_get(cfg, "smtpd_sasl_type");
        set->sasl = module_set_find_sasl(w->modules, type, &set->sasl_module);
        if (set->sasl == NULL) {
            fail(error, "smtpd_sasl_type: no loaded module provides the SASL back-end \"%s\" "
                 "(load the module that does in `modules`)", type);
            goto failed;
        }
        set->sasl_path = cfg_get(cfg, "smtpd_sasl_path");
    }
    if (svc->role == ROLE_PICKUP) {
        /* The pickup role's in-process sessions (local submission): the
         * limits and the TLS and AUTH requirements meant for network
         * clients do not apply, as in Postfix, where sendmail mail never
         * meets smtpd. Restrictions and module hooks do. */
        set->tls_level = TLS_LEVEL_NONE;
        set->tls_wrappermode = 0;
        set->tls_auth_only = 0;
        set->sasl = NULL;
        set->recipient_limit = MAILDROP_RCPT_MAX;
        set->soft_error_limit = INT_MAX;
        set->hard_error_limit = INT_MAX;
        set->error_sleep_time = 0;
        set->junk_command_limit = INT_MAX;
        set->maxproc = 0;
    }
    if (set->tls_level != TLS_LEVEL_NONE || set->tls_wrappermode) {
        set->tls_ctx = smtpd_tls_ctx_create(cfg, error);
        if (set->tls_ctx == NULL)
            goto failed;
    }

    if (compile_list(set, w, "smtpd_client_restrictions", &set->client_restrictions, error) ||
        compile_list(set, w, "smtpd_helo_restrictions", &set->helo_restrictions, error) ||
        compile_list(set, w, "smtpd_sender_restrictions", &set->sender_restrictions, error) ||
        compile_list(set, w, "smtpd_recipient_restrictions", &set->recipient_restrictions, error) ||
        compile_list(set, w, "smtpd_relay_restrictions", &set->relay_restrictions, error) ||
        compile_list(set, w, "smtpd_data_restrictions", &set->data_restrictions, error) ||
        compile_list(set, w, "smtpd_end_of_data_restrictions", &set->eod_restrictions, error))
        goto failed;
    /* Postfix refuses to run with neither list guarding relaying. */
    if (restrict_list_empty(set->relay_restrictions) &&
        !restrict_list_has(set->recipient_restrictions, "reject_unauth_destination") &&
        !restrict_list_has(set->recipient_restrictions, "defer_unauth_destination") &&
        !restrict_list_has(set->recipient_restrictions, "reject")) {
        fail(error, "smtpd_recipient_restrictions: the relay restrictions are empty and the "
             "recipient restrictions lack reject_unauth_destination, defer_unauth_destination or reject: "
             "this would be an open relay");
        goto failed;
    }
    return set;

failed:
    locate_error(svc, error);
    petrel_pool_destroy(pool);
    return NULL;
}

void smtpd_settings_free(struct smtpd_settings *set)
{
    if (set)
        petrel_pool_destroy(set->pool);
}

int smtpd_queue_space_ok(struct smtpd_worker *w, unsigned long long message_size_limit)
{
    time_t now = time(NULL);
    if (now == w->space_checked)
        return w->space_ok;
    w->space_checked = now;
    struct statvfs st;
    if (fstatvfs(queue_dir_fd(w->queue, QDIR_INCOMING), &st) != 0) {
        w->space_ok = 1;   /* cannot tell: let the write itself fail if it must */
        return 1;
    }
    unsigned long long avail = (unsigned long long)st.f_bavail * st.f_frsize;
    unsigned long long need = (unsigned long long)w->queue_minfree;
    if (need < message_size_limit + message_size_limit / 2)
        need = message_size_limit + message_size_limit / 2;
    w->space_ok = avail >= need;
    return w->space_ok;
}
