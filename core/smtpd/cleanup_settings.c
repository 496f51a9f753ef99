/*
 * The content stage's settings (cleanup.c): Postfix's smtpd and pickup hand
 * their mail to the cleanup service that cleanup_service_name names, so
 * header_checks, body_checks, milter_header_checks and the MIME and size
 * limits are read from that service's configuration (its -o overrides in
 * master.cf included), not from the smtpd or pickup line.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/bind.h"
#include "config/cfg.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "mail/hbc.h"
#include "mail/mime.h"
#include "smtpd/content_int.h"
#include "smtpd/smtpd.h"
#include "smtpd/smtpd_int.h"
#include "tables/table.h"

const char *const smtpd_cleanup_check_params[HBC_NLISTS] = { "header_checks", "mime_header_checks",
                                                             "nested_header_checks", "body_checks" };


/* Read from the cleanup service's configuration (cleanup_cfg below). */
static const struct cfg_bind cleanup_binds[] = {
    CFG_BIND_READ("cleanup_service_name"),
    CFG_BIND_READ("header_checks"),
    CFG_BIND_READ("mime_header_checks"),
    CFG_BIND_READ("nested_header_checks"),
    CFG_BIND_READ("body_checks"),
    CFG_BIND_READ("milter_header_checks"),
    CFG_BIND_READ("header_size_limit"),
    CFG_BIND_READ("line_length_limit"),
    CFG_BIND_READ("mime_nesting_limit"),
    CFG_BIND_READ("mime_boundary_length_limit"),
    CFG_BIND_READ("body_checks_size_limit"),
    CFG_BIND_READ("hopcount_limit"),
    CFG_BIND_READ("disable_mime_input_processing"),
    CFG_BIND_READ("strict_8bitmime"),
    CFG_BIND_READ("strict_7bit_headers"),
    CFG_BIND_READ("strict_8bitmime_body"),
    CFG_BIND_READ("strict_mime_encoding_domain"),
};
const struct cfg_bind_table smtpd_cleanup_bind_table = CFG_BIND_TABLE("cleanup (smtpd, pickup)", cleanup_binds);

/* The cleanup service whose settings apply: Postfix's smtpd and pickup
 * hand mail to the cleanup service named by cleanup_service_name, and
 * that service's -o overrides are what its header_checks and the like
 * read. */
static const struct cfg *cleanup_cfg(const struct smtpd_worker *w, const struct master_service *svc,
                                     const struct cfg *cfg, char **error)
{
    const char *name = cfg_get(cfg, "cleanup_service_name");
    if (name == NULL || *name == '\0')
        name = "cleanup";
    const struct cfg *main_cfg = w->cfg ? w->cfg : cfg;
    for (size_t i = 0; i < cfg_service_count(main_cfg); i++) {
        const struct master_service *c = cfg_service(main_cfg, i);
        if (strcmp(c->name, name) == 0 && c->role == ROLE_CLEANUP)
            return c->cfg;
    }
    if (strcmp(name, "cleanup") != 0 && cfg_service_count(main_cfg) > 0) {
        if (asprintf(error, "cleanup_service_name: master.cf has no cleanup service \"%s\" (service %s would "
                     "hand its mail to it)", name, svc->name) < 0)
            *error = NULL;
        return NULL;
    }
    return main_cfg;
}

struct smtpd_cleanup_settings *smtpd_cleanup_settings_create(struct smtpd_worker *w,
                                                              const struct master_service *svc,
                                                              const struct cfg *cfg, char **error)
{
    const struct cfg *cc = cleanup_cfg(w, svc, cfg, error);
    if (cc == NULL)
        return NULL;
    struct smtpd_cleanup_settings *c = xcalloc(1, sizeof(*c));
    if (hbc_open(&c->checks, cc, w->tables, smtpd_cleanup_check_params, error) != 0) {
        free(c);
        return NULL;
    }
    static const char *const milter_params[HBC_NLISTS] = { "milter_header_checks", NULL, NULL, NULL };
    if (hbc_open(&c->milter_checks, cc, w->tables, milter_params, error) != 0) {
        hbc_close(&c->checks);
        free(c);
        return NULL;
    }
    c->limits.header_limit = (size_t)cfg_int(cc, "header_size_limit");
    c->limits.line_limit = (size_t)cfg_int(cc, "line_length_limit");
    c->limits.nesting_limit = (int)cfg_int(cc, "mime_nesting_limit");
    c->limits.boundary_limit = (size_t)cfg_int(cc, "mime_boundary_length_limit");
    if (c->limits.header_limit > TBL_KEY_MAX - c->limits.line_limit - 16) {
        /* A header is a table key: keep every header short enough to be one. */
        if (asprintf(error, "header_size_limit: %zu is more than the longest header the tables can look up "
                     "(%zu with line_length_limit = %zu)", c->limits.header_limit,
                     (size_t)(TBL_KEY_MAX - c->limits.line_limit - 16), c->limits.line_limit) < 0)
            *error = NULL;
        hbc_close(&c->checks);
        hbc_close(&c->milter_checks);
        free(c);
        return NULL;
    }
    c->checks_remote = hbc_any_remote(&c->checks);
    c->milter_checks_remote = hbc_any_remote(&c->milter_checks);
    c->body_check_len = cfg_int(cc, "body_checks_size_limit");
    c->hopcount_limit = (int)cfg_int(cc, "hopcount_limit");
    int strict_all = cfg_bool(cc, "strict_8bitmime");
    int strict_hdrs = strict_all || cfg_bool(cc, "strict_7bit_headers");
    int strict_body = strict_all || cfg_bool(cc, "strict_8bitmime_body");
    int strict_enc = cfg_bool(cc, "strict_mime_encoding_domain");
    c->strict = strict_hdrs || strict_body || strict_enc;
    if (cfg_bool(cc, "disable_mime_input_processing")) {
        c->mime_options = MIME_OPT_DISABLE_MIME;
    } else {
        if (strict_hdrs)
            c->mime_options |= MIME_OPT_REPORT_8BIT_IN_HEADER;
        if (strict_body)
            c->mime_options |= MIME_OPT_REPORT_8BIT_IN_7BIT_BODY;
        if (strict_enc)
            c->mime_options |= MIME_OPT_REPORT_ENCODING_DOMAIN;
        if (c->strict || hbc_any_header(&c->checks))
            c->mime_options |= MIME_OPT_REPORT_NESTING;
    }
    return c;
}

void smtpd_cleanup_warn_overrides(const struct master_service *svc)
{
    /* -o header_checks on an smtpd line: Postfix's smtpd never reads it,
     * its cleanup does; Petrel does as Postfix, but says so. */
    for (size_t i = 1; i < sizeof(cleanup_binds) / sizeof(cleanup_binds[0]); i++) {
        const char *name = cleanup_binds[i].name;
        const char *file = NULL;
        int line = 0;
        if (strcmp(name, "line_length_limit") == 0)
            continue;   /* smtpd reads that one too */
        cfg_origin(svc->cfg, name, &file, &line);
        if (file && svc->file && strcmp(file, svc->file) == 0)
            msg_warn("%s, line %d: service %s: -o %s has no effect on an %s service (Postfix's cleanup reads it, "
                     "not smtpd or pickup): set it on the cleanup service that cleanup_service_name names",
                     file, line, svc->name, name, svc->role == ROLE_PICKUP ? "pickup" : "smtpd");
    }
}

void smtpd_cleanup_settings_free(struct smtpd_cleanup_settings *c)
{
    if (c == NULL)
        return;
    hbc_close(&c->checks);
    hbc_close(&c->milter_checks);
    free(c);
}
