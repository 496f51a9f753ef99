/*
 * Recipient validation (see rcpt_maps.h). One struct per listener, opened
 * with its settings, so -o overrides of the maps apply per service and a
 * table that cannot be opened stops the start.
 */
#include "config.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/bind.h"
#include "config/cfg.h"
#include "smtpd/smtpd.h"
#include "lib/xalloc.h"
#include "mail/addr_class.h"
#include "mail/addr_find.h"
#include "mail/maps.h"
#include "smtpd/rcpt_maps.h"

struct smtpd_rcpt_maps {
    struct mail_maps rcpt_canonical, sender_canonical, canonical, virtual_alias;
    struct mail_maps local, virtual_mailbox, relay;
    /* a class is checked when its parameter is not empty, even if every
     * table in it was left out (the default alias_maps) */
    int check_local, check_virtual_mailbox, check_relay;
    const char *delimiter, *myorigin, *double_bounce;
    int local_code, virtual_alias_code, virtual_mailbox_code, relay_code;
    int show_table;
};

#define M(name, kind, field) CFG_BIND(name, kind, struct smtpd_rcpt_maps, field)
static const struct cfg_bind rcpt_binds[] = {
    M("recipient_delimiter", STR, delimiter),
    M("myorigin", STR, myorigin),
    M("double_bounce_sender", STR, double_bounce),
    M("unknown_local_recipient_reject_code", INT, local_code),
    M("unknown_virtual_alias_reject_code", INT, virtual_alias_code),
    M("unknown_virtual_mailbox_reject_code", INT, virtual_mailbox_code),
    M("unknown_relay_recipient_reject_code", INT, relay_code),
    M("show_user_unknown_table_name", BOOL, show_table),
    CFG_BIND_READ("recipient_canonical_maps"),
    CFG_BIND_READ("sender_canonical_maps"),
    CFG_BIND_READ("canonical_maps"),
    CFG_BIND_READ("virtual_alias_maps"),
    CFG_BIND_READ("local_recipient_maps"),
    CFG_BIND_READ("virtual_mailbox_maps"),
    CFG_BIND_READ("relay_recipient_maps"),
};
const struct cfg_bind_table smtpd_rcpt_maps_bind_table = CFG_BIND_TABLE("smtpd recipient validation", rcpt_binds);

static int not_empty(const struct cfg *cfg, const char *param)
{
    return cfg_list(cfg, param)[0] != NULL;
}

struct smtpd_rcpt_maps *smtpd_rcpt_maps_open(const struct cfg *cfg, struct tbl_registry *reg, const char **param,
                                             char **error)
{
    struct smtpd_rcpt_maps *m = xcalloc(1, sizeof(*m));
    static const struct { const char *param; size_t offset; int flags; } maps[] = {
        { "recipient_canonical_maps", offsetof(struct smtpd_rcpt_maps, rcpt_canonical), 0 },
        { "sender_canonical_maps", offsetof(struct smtpd_rcpt_maps, sender_canonical), 0 },
        { "canonical_maps", offsetof(struct smtpd_rcpt_maps, canonical), 0 },
        { "virtual_alias_maps", offsetof(struct smtpd_rcpt_maps, virtual_alias), 0 },
        /* The router leaves an unusable default alias_maps out (local
         * aliases are then not delivered): so does the check, which then
         * knows exactly the users the router delivers to. */
        { "local_recipient_maps", offsetof(struct smtpd_rcpt_maps, local),
          MAIL_MAPS_DEFAULT_ALIASES_OPTIONAL | MAIL_MAPS_QUIET },
        { "virtual_mailbox_maps", offsetof(struct smtpd_rcpt_maps, virtual_mailbox), 0 },
        { "relay_recipient_maps", offsetof(struct smtpd_rcpt_maps, relay), 0 },
    };
    int failed = 0;
    for (size_t i = 0; i < sizeof(maps) / sizeof(maps[0]); i++) {
        /* Each is tried, so that every bad table is reported. */
        struct mail_maps *mm = (struct mail_maps *)((char *)m + maps[i].offset);
        if (mail_maps_open(mm, cfg, reg, maps[i].param, maps[i].flags, error) != 0) {
            if (!failed)
                *param = maps[i].param;
            failed = 1;
        }
    }
    if (failed) {
        smtpd_rcpt_maps_free(m);
        return NULL;
    }
    m->check_local = not_empty(cfg, "local_recipient_maps");
    m->check_virtual_mailbox = not_empty(cfg, "virtual_mailbox_maps");
    m->check_relay = not_empty(cfg, "relay_recipient_maps");
    cfg_bind_apply(cfg, &smtpd_rcpt_maps_bind_table, m);
    return m;
}

void smtpd_rcpt_maps_free(struct smtpd_rcpt_maps *m)
{
    if (m == NULL)
        return;
    mail_maps_close(&m->rcpt_canonical);
    mail_maps_close(&m->sender_canonical);
    mail_maps_close(&m->canonical);
    mail_maps_close(&m->virtual_alias);
    mail_maps_close(&m->local);
    mail_maps_close(&m->virtual_mailbox);
    mail_maps_close(&m->relay);
    free(m);
}

/* Postfix's local exceptions: mail to these always comes in (bounces and
 * RFC 5321's postmaster), whatever the tables say. */
static int always_local(const struct smtpd_rcpt_maps *m, const char *full_local)
{
    return strcasecmp(full_local, "postmaster") == 0 || strcasecmp(full_local, "MAILER-DAEMON") == 0 ||
           (m->double_bounce && *m->double_bounce && strcasecmp(full_local, m->double_bounce) == 0);
}

static enum rcpt_maps_status unknown(const struct smtpd_rcpt_maps *m, int code, int sender, const char *table,
                                     petrel_pool *pool, struct rcpt_maps_answer *answer)
{
    char *enhanced = petrel_pool_strdup(pool, sender ? "5.1.0" : "5.1.1");
    enhanced[0] = (char)('0' + code / 100);   /* Postfix: the reply code's class wins */
    answer->code = code;
    answer->enhanced = enhanced;
    answer->why = m->show_table ? petrel_pool_printf(pool, "User unknown in %s", table) : "User unknown";
    return RCPT_MAPS_UNKNOWN;
}

/* 1 found, 0 not, -1 a table failed */
static int find(struct mail_maps *maps, const struct mail_addr *a, unsigned strategy, petrel_pool *pool)
{
    const char *value;
    return mail_addr_find(maps, a, strategy, pool, &value);
}

enum rcpt_maps_status smtpd_rcpt_maps_check(struct smtpd_rcpt_maps *m, const struct mail_domains *domains,
                                            const char *address, int sender, petrel_pool *pool,
                                            struct rcpt_maps_answer *answer)
{
    struct mail_addr a;
    mail_addr_split(address, m->delimiter, pool, &a);
    if (*a.domain == '\0' || *a.domain == '[')
        return RCPT_MAPS_KNOWN;   /* <postmaster>; address literals are never our domains */

    /* Rewritten addresses are known: the router delivers what they become. */
    struct mail_maps *rewriting[] = { sender ? &m->sender_canonical : &m->rcpt_canonical, &m->canonical,
                                      &m->virtual_alias };
    for (size_t i = 0; i < sizeof(rewriting) / sizeof(rewriting[0]); i++) {
        int rc = find(rewriting[i], &a, MAIL_FIND_ADDRESS, pool);
        if (rc < 0)
            return RCPT_MAPS_RETRY;
        if (rc > 0)
            return RCPT_MAPS_KNOWN;
    }

    int rc;
    switch (mail_domain_class(domains, a.domain)) {
    case MAIL_CLASS_LOCAL:
        if (!m->check_local || always_local(m, a.full_local))
            return RCPT_MAPS_KNOWN;
        rc = find(&m->local, &a, MAIL_FIND_ADDRESS | MAIL_FIND_LOCALPART, pool);
        if (rc == 0)
            return unknown(m, m->local_code, sender, "local recipient table", pool, answer);
        break;
    case MAIL_CLASS_VIRTUAL_ALIAS:
        /* virtual_alias_maps did not match: the router has nowhere to send it */
        return unknown(m, m->virtual_alias_code, sender, "virtual alias table", pool, answer);
    case MAIL_CLASS_VIRTUAL_MAILBOX:
        if (!m->check_virtual_mailbox)
            return RCPT_MAPS_KNOWN;
        rc = find(&m->virtual_mailbox, &a, MAIL_FIND_ADDRESS, pool);
        if (rc == 0)
            return unknown(m, m->virtual_mailbox_code, sender, "virtual mailbox table", pool, answer);
        break;
    case MAIL_CLASS_RELAY:
        if (!m->check_relay)
            return RCPT_MAPS_KNOWN;
        rc = find(&m->relay, &a,
                  MAIL_FIND_ADDRESS | (strcasecmp(a.domain, m->myorigin) == 0 ? MAIL_FIND_LOCALPART : 0), pool);
        if (rc == 0)
            return unknown(m, m->relay_code, sender, "relay recipient table", pool, answer);
        break;
    case MAIL_CLASS_ERROR:
        return RCPT_MAPS_RETRY;   /* a domain list's table failed: we cannot tell whose it is */
    default:
        return RCPT_MAPS_KNOWN;
    }
    return rc < 0 ? RCPT_MAPS_RETRY : RCPT_MAPS_KNOWN;
}
