/*
 * The access(5) search order (see access.h), following Postfix's
 * check_mail_access, check_domain_access and check_addr_access. Every key
 * is a piece of the caller's string, so no key grows past its input; keys
 * longer than TBL_KEY_MAX are refused by tbl_lookup itself.
 */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "lib/xalloc.h"
#include "tables/access.h"
#include "tables/cidr.h"

/* Looks up key unless the table only takes full keys and this one is partial. */
static int try_key(struct tbl *t, const char *key, int partial, const char **value)
{
    if (partial && tbl_is_pattern(t))
        return TBL_NOTFOUND;
    return tbl_lookup(t, key, value);
}

/* Postfix's check_domain_access loop: the name, then each parent. */
static int domain_walk(struct tbl *t, const char *domain, int first_partial, unsigned flags,
                       const char **value)
{
    int partial = first_partial;
    const char *name = domain;
    while (*name) {
        int r = try_key(t, name, partial, value);
        if (r != TBL_NOTFOUND)
            return r;
        const char *next = strchr(name + 1, '.');
        if (next == NULL)
            break;
        if (!(flags & TBL_ACCESS_DOT_PARENT))
            next++;
        name = next;
        partial = 1;
    }
    return TBL_NOTFOUND;
}

int tbl_access_lookup_domain_ex(struct tbl *t, const char *domain, unsigned flags,
                                const char **value)
{
    *value = NULL;
    return domain_walk(t, domain, 0, flags, value);
}

int tbl_access_lookup_domain(struct tbl *t, const char *domain, const char **value)
{
    return tbl_access_lookup_domain_ex(t, domain, 0, value);
}

/* Postfix's split_addr: the length of the unextended local part, or 0 when
 * the local part must not be split. */
static size_t unextended_length(const char *local, size_t len, const char *delimiters)
{
    if (delimiters == NULL || *delimiters == '\0')
        return 0;
    if ((len == 10 && strncasecmp(local, "postmaster", len) == 0)
        || (len == 13 && strncasecmp(local, "mailer-daemon", len) == 0)
        || (len == 13 && strncasecmp(local, "double-bounce", len) == 0))
        return 0;
    if (strchr(delimiters, '-')) {
        if (len >= 6 && strncasecmp(local, "owner-", 6) == 0)
            return 0;
        if (len > 8 && strncasecmp(local + len - 8, "-request", 8) == 0)
            return 0;
    }
    size_t user = 0;
    while (user < len && strchr(delimiters, local[user]) == NULL)
        user++;
    return (user > 0 && user < len) ? user : 0;
}

int tbl_access_lookup_address_ex(struct tbl *t, const char *address,
                                 const char *recipient_delimiter, unsigned flags,
                                 const char **value)
{
    *value = NULL;
    if (*address == '\0')
        return TBL_NOTFOUND;
    int r = tbl_lookup(t, address, value);
    if (r != TBL_NOTFOUND || tbl_is_pattern(t))
        return r;

    const char *at = strrchr(address, '@');
    size_t local_len = at ? (size_t)(at - address) : strlen(address);
    size_t user_len = unextended_length(address, local_len, recipient_delimiter);
    /* One buffer for every derived key: none is longer than the address. */
    size_t size = strlen(address) + 2;
    char *key = xmalloc(size);

    if (at && user_len) {
        memcpy(key, address, user_len);
        strcpy(key + user_len, at);
        if ((r = try_key(t, key, 1, value)) != TBL_NOTFOUND)
            goto done;
    }
    if (at && at[1] && (r = domain_walk(t, at + 1, 1, flags, value)) != TBL_NOTFOUND)
        goto done;
    memcpy(key, address, local_len);
    strcpy(key + local_len, "@");
    if ((r = try_key(t, key, 1, value)) != TBL_NOTFOUND)
        goto done;
    if (user_len) {
        strcpy(key + user_len, "@");
        r = try_key(t, key, 1, value);
    }
done:
    free(key);
    if (r != TBL_FOUND)
        *value = NULL;
    return r;
}

int tbl_access_lookup_address(struct tbl *t, const char *address, const char *recipient_delimiter,
                              const char **value)
{
    return tbl_access_lookup_address_ex(t, address, recipient_delimiter, 0, value);
}

/* Writes the canonical text of addr into out; 0, or -1 if not an address. */
static int canonical_address(const char *addr, char *out, size_t size)
{
    struct cidr_addr parsed;
    if (cidr_addr_parse(addr, &parsed) != 0)
        return -1;
    return inet_ntop(parsed.family, parsed.bytes, out, (socklen_t)size) ? 0 : -1;
}

int tbl_access_lookup_client_ex(struct tbl *t, const char *hostname, const char *addr,
                                unsigned flags, const char **value)
{
    *value = NULL;
    int r;
    if (hostname && *hostname && (r = domain_walk(t, hostname, 0, flags, value)) != TBL_NOTFOUND)
        return r;
    if (addr == NULL || *addr == '\0')
        return TBL_NOTFOUND;
    char key[INET6_ADDRSTRLEN];
    if (canonical_address(addr, key, sizeof(key)) != 0)
        /* Not an address: one full-key lookup, no made-up prefixes. */
        return tbl_lookup(t, addr, value);
    char delimiter = strchr(key, ':') ? ':' : '.';
    int partial = 0;
    for (;;) {
        if ((r = try_key(t, key, partial, value)) != TBL_NOTFOUND)
            return r;
        char *cut = strrchr(key, delimiter);
        if (cut == NULL)
            return TBL_NOTFOUND;
        *cut = '\0';
        if (key[0] == '\0')   /* "::1" leaves nothing worth a lookup */
            return TBL_NOTFOUND;
        partial = 1;
    }
}

int tbl_access_lookup_client(struct tbl *t, const char *hostname, const char *addr,
                             const char **value)
{
    return tbl_access_lookup_client_ex(t, hostname, addr, 0, value);
}
