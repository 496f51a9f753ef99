/*
 * Defaults computed from the host when a generation is loaded, as Postfix
 * computes them: myhostname (gethostname(), made fully qualified through the
 * resolver), mydomain (myhostname without its first label), mynetworks
 * (from mynetworks_style and the interfaces' addresses) and
 * config_directory (the directory being loaded). A computed default reads
 * other values (mydomain reads myhostname), so it sits above the values
 * layer (config.c), not in the parameter table (params.c).
 *
 * Also the defaults that depend on compatibility_level, as Postfix's
 * mail_params.h makes them depend on it: below the level where Postfix
 * changed a default, a parameter main.cf does not set keeps the old
 * default (relay_domains = $mydestination below level 2, ...), and
 * cfg_check_compatibility_level logs Postfix's "using backwards-compatible
 * default setting" for each one, and a warning for an old default Petrel
 * cannot honour.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config/config_impl.h"

static const char *compute_config_directory(struct cfg *cfg)
{
    return cfg->confdir;
}

/* Postfix: gethostname(), made fully qualified through the resolver when it is not. */
static const char *compute_myhostname(struct cfg *cfg)
{
    char host[256];
    if (gethostname(host, sizeof(host) - 1) < 0)
        return "localhost";
    host[sizeof(host) - 1] = '\0';
    if (!strchr(host, '.')) {
        struct addrinfo hints = { .ai_flags = AI_CANONNAME, .ai_socktype = SOCK_STREAM };
        struct addrinfo *res = NULL;
        if (getaddrinfo(host, NULL, &hints, &res) == 0 && res && res->ai_canonname
            && strchr(res->ai_canonname, '.')) {
            char *fqdn = petrel_pool_strdup(cfg->pool, res->ai_canonname);
            freeaddrinfo(res);
            return fqdn;
        }
        if (res)
            freeaddrinfo(res);
    }
    return petrel_pool_strdup(cfg->pool, host);
}

static const char *compute_mydomain(struct cfg *cfg)
{
    struct cfg_value *host = cfg_value_find(cfg, "myhostname");
    if (!host || cfg_value_expand(cfg, host, 0) < 0)
        return "localdomain";
    const char *dot = strchr(host->value, '.');
    return dot && dot[1] ? petrel_pool_strdup(cfg->pool, dot + 1) : "localdomain";
}

static void append_network(struct buf *b, int family, const void *addr, const void *mask,
                           const char *style)
{
    char text[INET6_ADDRSTRLEN];
    int bits = 0;
    if (family == AF_INET) {
        unsigned char net[4];
        memcpy(net, addr, 4);
        if (net[0] == 127)
            return;                   /* loopback is always listed as 127.0.0.0/8 */
        if (strcmp(style, "host") == 0 || !mask) {
            bits = 32;
        } else if (strcmp(style, "class") == 0) {
            bits = net[0] < 128 ? 8 : net[0] < 192 ? 16 : 24;
        } else {
            const unsigned char *m = mask;
            for (int i = 0; i < 4; i++)
                for (int j = 7; j >= 0; j--)
                    bits += (m[i] >> j) & 1;
        }
        for (int i = 0; i < 4; i++) {
            int keep = bits - i * 8;
            net[i] &= keep >= 8 ? 0xff : keep <= 0 ? 0 : (unsigned char)(0xff << (8 - keep));
        }
        inet_ntop(AF_INET, net, text, sizeof(text));
        buf_printf(b, " %s/%d", text, bits);
    } else {
        unsigned char net[16];
        memcpy(net, addr, 16);
        if (IN6_IS_ADDR_LOOPBACK((struct in6_addr *)net) || IN6_IS_ADDR_LINKLOCAL((struct in6_addr *)net))
            return;                   /* link-local needs a %scope that lists cannot carry */
        if (strcmp(style, "host") == 0 || !mask) {
            bits = 128;
        } else {
            const unsigned char *m = mask;
            for (int i = 0; i < 16; i++)
                for (int j = 7; j >= 0; j--)
                    bits += (m[i] >> j) & 1;
            for (int i = 0; i < 16; i++) {
                int keep = bits - i * 8;
                net[i] &= keep >= 8 ? 0xff : keep <= 0 ? 0 : (unsigned char)(0xff << (8 - keep));
            }
        }
        inet_ntop(AF_INET6, net, text, sizeof(text));
        buf_printf(b, " [%s]/%d", text, bits);
    }
}

/* mynetworks from mynetworks_style: loopback plus this host's own addresses or networks. */
static const char *compute_mynetworks(struct cfg *cfg)
{
    struct cfg_value *style_value = cfg_value_find(cfg, "mynetworks_style");
    const char *style = "host";
    if (style_value && cfg_value_expand(cfg, style_value, 0) == 0)
        style = style_value->value;
    struct buf b = BUF_INIT;
    buf_puts(&b, "127.0.0.0/8 [::1]/128");
    struct ifaddrs *ifs = NULL;
    if (getifaddrs(&ifs) == 0) {
        for (struct ifaddrs *i = ifs; i; i = i->ifa_next) {
            if (!i->ifa_addr)
                continue;
            if (i->ifa_addr->sa_family == AF_INET)
                append_network(&b, AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr,
                               i->ifa_netmask ? (void *)&((struct sockaddr_in *)i->ifa_netmask)->sin_addr : NULL,
                               style);
            else if (i->ifa_addr->sa_family == AF_INET6)
                append_network(&b, AF_INET6, &((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr,
                               i->ifa_netmask ? (void *)&((struct sockaddr_in6 *)i->ifa_netmask)->sin6_addr : NULL,
                               style);
        }
        freeifaddrs(ifs);
    }
    const char *result = petrel_pool_strdup(cfg->pool, b.data);
    buf_free(&b);
    return result;
}

/* ---- compatibility_level ---- */

/* Postfix's compatibility levels: "major[.minor[.patch]]", compared as
 * numbers (compat_level.c). -1 when malformed. */
long long cfg_compat_level_parse(const char *text)
{
    long long part[3] = { 0, 0, 0 };
    const char *p = text;
    for (int i = 0; i < 3; i++) {
        if (!isdigit((unsigned char)*p))
            return -1;
        long long n = 0;
        for (; isdigit((unsigned char)*p); p++) {
            n = n * 10 + (*p - '0');
            if (n > 99999)
                return -1;
        }
        part[i] = n;
        if (*p == '\0')
            return part[0] * 10000000000LL + part[1] * 100000LL + part[2];
        if (*p++ != '.')
            return -1;
    }
    return -1;
}

/* The defaults Postfix changed with a compatibility level, for the
 * parameters Petrel has: below level, the default is legacy. The old
 * defaults Petrel does not implement are only said (note). */
static const struct compat_default {
    const char *name;            /* NULL: note only */
    const char *level;
    const char *legacy;
    const char *current;
    const char *note;            /* name NULL: what Postfix would do that Petrel does not */
} compat_defaults[] = {
    { NULL, "1", NULL, NULL,
      "Postfix's backwards-compatible default append_dot_mydomain=yes is not implemented: "
      "incomplete domains do NOT get .$mydomain appended" },
    { "smtputf8_enable", "1", "no", "yes", NULL },
    { "smtpd_relay_restrictions", "1", "", "permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination",
      NULL },
    { "relay_domains", "2", "$mydestination", "", NULL },
    { "mynetworks_style", "2", "subnet", "host", NULL },
    { NULL, "3.6", NULL, NULL,
      "Postfix's backwards-compatible default smtpd_relay_before_recipient_restrictions=no is not implemented: "
      "smtpd_relay_restrictions are still evaluated before smtpd_recipient_restrictions" },
    { "smtp_tls_security_level", "3.11", "", "may", NULL },
};

static const struct compat_default *compat_default_find(const char *name)
{
    for (size_t i = 0; i < sizeof(compat_defaults) / sizeof(compat_defaults[0]); i++)
        if (compat_defaults[i].name && strcmp(compat_defaults[i].name, name) == 0)
            return &compat_defaults[i];
    return NULL;
}

/* The level main.cf sets (Petrel's default, 3.6, when it is malformed:
 * cfg_check_compatibility_level reports that). */
static long long compat_level(struct cfg *cfg)
{
    struct cfg_value *v = cfg_value_find(cfg, "compatibility_level");
    long long level = -1;
    if (v && cfg_value_expand(cfg, v, 0) == 0)
        level = cfg_compat_level_parse(v->value);
    return level >= 0 ? level : cfg_compat_level_parse("3.6");
}

static const char *compat_value(struct cfg *cfg, const char *name)
{
    const struct compat_default *d = compat_default_find(name);
    return compat_level(cfg) < cfg_compat_level_parse(d->level) ? d->legacy : d->current;
}

#define COMPAT_COMPUTE(fn, name) \
    static const char *fn(struct cfg *cfg) { return compat_value(cfg, name); }
COMPAT_COMPUTE(compute_smtputf8_enable, "smtputf8_enable")
COMPAT_COMPUTE(compute_smtpd_relay_restrictions, "smtpd_relay_restrictions")
COMPAT_COMPUTE(compute_relay_domains, "relay_domains")
COMPAT_COMPUTE(compute_mynetworks_style, "mynetworks_style")
COMPAT_COMPUTE(compute_smtp_tls_security_level, "smtp_tls_security_level")

int cfg_compat_chroot_default(const struct cfg *cfg)
{
    return compat_level((struct cfg *)cfg) < cfg_compat_level_parse("1");
}

int cfg_check_compatibility_level(const struct cfg *cfg)
{
    struct cfg_value *v = cfg_value_find(cfg, "compatibility_level");
    if (v == NULL || v->value == NULL || v->file == NULL)
        return 0;   /* Petrel's own default, 3.6: nothing to say */
    if (cfg_compat_level_parse(v->value) < 0) {
        cfg_error((struct cfg *)cfg, cfg_value_file(cfg, v), v->line, v->name,
                  "malformed compatibility level syntax: \"%s\" (expected major[.minor[.patch]], e.g. 3.6)",
                  v->value);
        return 1;
    }
    int legacy = 0;
    for (size_t i = 0; i < sizeof(compat_defaults) / sizeof(compat_defaults[0]); i++) {
        const struct compat_default *d = &compat_defaults[i];
        if (compat_level((struct cfg *)cfg) >= cfg_compat_level_parse(d->level))
            continue;
        if (d->name == NULL) {
            cfg_warn((struct cfg *)cfg, cfg_value_file(cfg, v), v->line, NULL, "compatibility_level = %s: %s",
                     v->value, d->note);
            continue;
        }
        struct cfg_value *p = cfg_value_find(cfg, d->name);
        if (p && p->file)
            continue;
        legacy = 1;
        if (!cfg_is_quiet(cfg))
            msg_info("%s:%d: compatibility_level = %s: using backwards-compatible default setting %s=%s",
                     cfg_value_file(cfg, v), v->line, v->value, d->name, *d->legacy ? d->legacy : "(empty)");
    }
    if (legacy && !cfg_is_quiet(cfg))
        msg_info("%s:%d: compatibility_level = %s: set it to 3.6 or later (and the parameters above to the "
                 "values you want) to use the current defaults", cfg_value_file(cfg, v), v->line, v->value);
    return 0;
}

cfg_compute_fn *cfg_computed_default(const char *name)
{
    static const struct { const char *name; cfg_compute_fn *fn; } compat_fns[] = {
        { "smtputf8_enable", compute_smtputf8_enable },
        { "smtpd_relay_restrictions", compute_smtpd_relay_restrictions },
        { "relay_domains", compute_relay_domains },
        { "mynetworks_style", compute_mynetworks_style },
        { "smtp_tls_security_level", compute_smtp_tls_security_level },
    };
    for (size_t i = 0; i < sizeof(compat_fns) / sizeof(compat_fns[0]); i++)
        if (strcmp(name, compat_fns[i].name) == 0)
            return compat_fns[i].fn;
    if (strcmp(name, "myhostname") == 0)
        return compute_myhostname;
    if (strcmp(name, "mydomain") == 0)
        return compute_mydomain;
    if (strcmp(name, "mynetworks") == 0)
        return compute_mynetworks;
    if (strcmp(name, "config_directory") == 0)
        return compute_config_directory;
    return NULL;
}
