/*
 * smtp_header_checks, smtp_mime_header_checks, smtp_nested_header_checks
 * and smtp_body_checks (lmtp_* for LMTP transports) for the SMTP client,
 * per transport: a master.cf smtp or lmtp service reads them with its -o
 * overrides, as each Postfix smtp(8) process does; a transport that is no
 * master.cf service reads main.cf. Tables are opened the first time a
 * transport delivers and kept for the life of the queue manager; the
 * master opened every one of them before (qmgr_checks_validate), so a bad
 * table stops the start instead of a delivery.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/cfg.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "mail/hbc.h"
#include "mail/mime.h"
#include "qmgr/qmgr.h"
#include "qmgr/qmgr_int.h"

struct qmgr_checks {
    struct qmgr_checks *next;
    char *transport;
    int lmtp;
    int failed;                 /* the tables did not open: deliveries defer */
    struct hbc_tables tables;
    struct mime_limits limits;
};

static void params_for(int lmtp, const char *params[HBC_NLISTS])
{
    params[HBC_HEADER] = lmtp ? "lmtp_header_checks" : "smtp_header_checks";
    params[HBC_MIME_HEADER] = lmtp ? "lmtp_mime_header_checks" : "smtp_mime_header_checks";
    params[HBC_NESTED_HEADER] = lmtp ? "lmtp_nested_header_checks" : "smtp_nested_header_checks";
    params[HBC_BODY] = lmtp ? "lmtp_body_checks" : "smtp_body_checks";
}

/* The configuration a transport's client runs with. */
static const struct cfg *transport_cfg(const struct cfg *cfg, const char *transport)
{
    for (size_t i = 0; i < cfg_service_count(cfg); i++) {
        const struct master_service *svc = cfg_service(cfg, i);
        if (strcmp(svc->name, transport) == 0 && (svc->role == ROLE_SMTP || svc->role == ROLE_LMTP))
            return svc->cfg;
    }
    return cfg;
}

static void read_limits(const struct cfg *cfg, struct mime_limits *l)
{
    l->header_limit = (size_t)cfg_int(cfg, "header_size_limit");
    l->line_limit = (size_t)cfg_int(cfg, "line_length_limit");
    l->nesting_limit = (int)cfg_int(cfg, "mime_nesting_limit");
    l->boundary_limit = (size_t)cfg_int(cfg, "mime_boundary_length_limit");
}

int qmgr_checks_validate(const struct cfg *cfg, struct tbl_registry *reg, char **error)
{
    const char *params[HBC_NLISTS];
    for (int lmtp = 0; lmtp <= 1; lmtp++) {
        params_for(lmtp, params);
        struct hbc_tables h;
        if (hbc_open(&h, cfg, reg, params, error) != 0)
            return -1;
        hbc_close(&h);
    }
    for (size_t i = 0; i < cfg_service_count(cfg); i++) {
        const struct master_service *svc = cfg_service(cfg, i);
        if (svc->role != ROLE_SMTP && svc->role != ROLE_LMTP)
            continue;
        params_for(svc->role == ROLE_LMTP, params);
        struct hbc_tables h;
        char *why = NULL;
        if (hbc_open(&h, svc->cfg, reg, params, &why) != 0) {
            if (asprintf(error, "%s, line %d: service %s: %s", svc->file, svc->line, svc->name, why) < 0)
                *error = NULL;
            free(why);
            return -1;
        }
        hbc_close(&h);
    }
    return 0;
}

struct hbc_tables *qmgr_transport_checks(struct qmgr *q, const char *transport, int lmtp,
                                         const struct mime_limits **limits, int *failed)
{
    struct qmgr_checks *c;
    for (c = q->checks; c; c = c->next)
        if (c->lmtp == lmtp && strcmp(c->transport, transport) == 0)
            break;
    if (c == NULL) {
        c = xcalloc(1, sizeof(*c));
        c->transport = xstrdup(transport);
        c->lmtp = lmtp;
        const struct cfg *cfg = transport_cfg(q->cfg, transport);
        const char *params[HBC_NLISTS];
        params_for(lmtp, params);
        char *error = NULL;
        if (hbc_open(&c->tables, cfg, q->tables, params, &error) != 0) {
            msg_warn("transport %s: %s: its deliveries are deferred", transport, error);
            free(error);
            c->failed = 1;
        }
        read_limits(cfg, &c->limits);
        c->next = q->checks;
        q->checks = c;
    }
    *failed = c->failed;
    *limits = &c->limits;
    return !c->failed && hbc_any(&c->tables) ? &c->tables : NULL;
}

void qmgr_checks_free(struct qmgr *q)
{
    while (q->checks) {
        struct qmgr_checks *c = q->checks;
        q->checks = c->next;
        hbc_close(&c->tables);
        free(c->transport);
        free(c);
    }
}
