/*
 * Defaults computed from the host when a generation is loaded, as Postfix
 * computes them: myhostname (gethostname(), made fully qualified through the
 * resolver), mydomain (myhostname without its first label), mynetworks
 * (from mynetworks_style and the interfaces' addresses) and
 * config_directory (the directory being loaded). A computed default reads
 * other values (mydomain reads myhostname), so it sits above the values
 * layer (config.c), not in the parameter table (params.c).
 */
#include "config.h"

#include <arpa/inet.h>
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

cfg_compute_fn *cfg_computed_default(const char *name)
{
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
