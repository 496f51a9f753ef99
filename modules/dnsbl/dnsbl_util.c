/*
 * The dnsbl module's pure parts (see dnsbl.h): filters, list specs, query
 * names and reply templates. Written from Postfix's documentation of the
 * syntax (postconf(5): reject_rbl_client, postscreen_dnsbl_sites,
 * default_rbl_reply), not from its code.
 *
 * A filter is kept as four 256-bit sets, one per octet: matching is four
 * bit tests, and any mix of numbers and ranges costs the same.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dnsbl.h"

/* ------------------------------------------------------------------ */
/* filters                                                             */

static void set_bit(unsigned char *set, unsigned v)
{
    set[v / 8] |= (unsigned char)(1u << (v % 8));
}

/* An octet value 0..255 at *p; advances *p. -1 when there is none. */
static int parse_octet(const char **p)
{
    const char *s = *p;
    if (!isdigit((unsigned char)*s))
        return -1;
    int v = 0;
    while (isdigit((unsigned char)*s)) {
        v = v * 10 + (*s - '0');
        if (v > 255)
            return -1;
        s++;
    }
    *p = s;
    return v;
}

const char *dnsbl_filter_parse(const char *text, struct dnsbl_filter *out, petrel_pool *pool)
{
    memset(out, 0, sizeof(*out));
    const char *p = text;
    for (int field = 0; field < 4; field++) {
        if (field > 0) {
            if (*p != '.')
                return petrel_pool_printf(pool, "bad filter \"%s\": expected four fields separated by \".\"", text);
            p++;
        }
        if (*p == '[') {
            p++;
            int members = 0;
            for (;;) {
                int lo = parse_octet(&p);
                if (lo < 0)
                    return petrel_pool_printf(pool, "bad filter \"%s\": expected a number from 0 to 255 in [...]",
                                              text);
                int hi = lo;
                if (p[0] == '.' && p[1] == '.') {
                    p += 2;
                    hi = parse_octet(&p);
                    if (hi < 0 || hi < lo)
                        return petrel_pool_printf(pool, "bad filter \"%s\": bad range in [...]", text);
                }
                for (int v = lo; v <= hi; v++)
                    set_bit(out->octet[field], (unsigned)v);
                members++;
                if (*p == ';') {
                    p++;
                    continue;
                }
                if (*p == ']') {
                    p++;
                    break;
                }
                return petrel_pool_printf(pool, "bad filter \"%s\": expected \";\" or \"]\" in [...]", text);
            }
        } else {
            int v = parse_octet(&p);
            if (v < 0)
                return petrel_pool_printf(pool, "bad filter \"%s\": expected a number from 0 to 255 or [...]", text);
            set_bit(out->octet[field], (unsigned)v);
        }
    }
    if (*p != '\0')
        return petrel_pool_printf(pool, "bad filter \"%s\": unexpected text after the fourth field", text);
    return NULL;
}

int dnsbl_filter_match(const struct dnsbl_filter *f, const char *answer)
{
    unsigned char a[4];
    if (inet_pton(AF_INET, answer, a) != 1)
        return 0;
    for (int i = 0; i < 4; i++)
        if (!(f->octet[i][a[i] / 8] & (1u << (a[i] % 8))))
            return 0;
    return 1;
}

/* ------------------------------------------------------------------ */
/* list specs                                                          */

/* A DNS name as a DNSBL zone: letters, digits, '-', '_' and dots, no empty
 * label, at most 253 characters. */
static int valid_zone(const char *z)
{
    size_t n = strlen(z), label = 0;
    if (n == 0 || n > 253 || z[0] == '.' || z[n - 1] == '.')
        return 0;
    for (const char *p = z; *p; p++) {
        if (*p == '.') {
            if (label == 0)
                return 0;
            label = 0;
        } else if (isalnum((unsigned char)*p) || *p == '-' || *p == '_') {
            if (++label > 63)
                return 0;
        } else {
            return 0;
        }
    }
    return 1;
}

const char *dnsbl_list_parse(const char *text, int with_weight, struct dnsbl_list *out, petrel_pool *pool)
{
    memset(out, 0, sizeof(*out));
    out->spec = petrel_pool_strdup(pool, text);
    out->weight = 1;
    char *copy = petrel_pool_strdup(pool, text);
    if (with_weight) {
        char *star = strchr(copy, '*');
        if (star) {
            *star = '\0';
            char *end;
            errno = 0;
            long w = strtol(star + 1, &end, 10);
            if (star[1] == '\0' || *end != '\0' || errno || w < INT_MIN / 2 || w > INT_MAX / 2)
                return petrel_pool_printf(pool, "bad weight \"%s\" in \"%s\": an integer is expected", star + 1,
                                          text);
            out->weight = (int)w;
        }
    }
    char *eq = strchr(copy, '=');
    if (eq) {
        *eq = '\0';
        struct dnsbl_filter *f = petrel_pool_zalloc(pool, sizeof(*f));
        const char *err = dnsbl_filter_parse(eq + 1, f, pool);
        if (err)
            return err;
        out->filter = f;
    }
    if (!valid_zone(copy))
        return petrel_pool_printf(pool, "bad DNS list domain \"%s\" in \"%s\"", copy, text);
    out->zone = copy;
    return NULL;
}

/* ------------------------------------------------------------------ */
/* query names                                                         */

char *dnsbl_address_query(const char *addr, const char *zone, petrel_pool *pool)
{
    unsigned char a[16];
    if (inet_pton(AF_INET, addr, a) == 1)
        return petrel_pool_printf(pool, "%u.%u.%u.%u.%s", a[3], a[2], a[1], a[0], zone);
    if (inet_pton(AF_INET6, addr, a) != 1)
        return NULL;
    static const unsigned char v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
    if (memcmp(a, v4mapped, 12) == 0)
        return petrel_pool_printf(pool, "%u.%u.%u.%u.%s", a[15], a[14], a[13], a[12], zone);
    /* RFC 5782 section 2.4: the 32 nibbles, least significant first. */
    char name[64 + 1];
    static const char hex[] = "0123456789abcdef";
    char *p = name;
    for (int i = 15; i >= 0; i--) {
        *p++ = hex[a[i] & 0xf];
        *p++ = '.';
        *p++ = hex[a[i] >> 4];
        *p++ = '.';
    }
    *p = '\0';
    return petrel_pool_printf(pool, "%s%s", name, zone);
}

char *dnsbl_domain_query(const char *what, const char *zone, petrel_pool *pool)
{
    if (what == NULL)
        return NULL;
    const char *at = strrchr(what, '@');
    const char *domain = at ? at + 1 : what;
    if (*domain == '\0' || *domain == '[')
        return NULL;
    /* Postfix skips a name whose last label is all digits (lists refuse
     * what looks like an address query). */
    const char *dot = strrchr(domain, '.');
    const char *last = dot ? dot + 1 : domain;
    int all_digits = 1;
    for (const char *p = last; *p; p++)
        if (!isdigit((unsigned char)*p))
            all_digits = 0;
    if (all_digits)
        return NULL;
    size_t n = strlen(domain);
    if (n > 1 && domain[n - 1] == '.')
        n--;
    char *d = petrel_pool_strndup(pool, domain, n);
    for (char *p = d; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    if (!valid_zone(d) || strlen(d) + 1 + strlen(zone) > 253)
        return NULL;
    return petrel_pool_printf(pool, "%s.%s", d, zone);
}

/* ------------------------------------------------------------------ */
/* reply templates (Postfix's $name, ${name}, $(name), ${name?text},    */
/* ${name:text}, ${name?{text}:{text}})                                 */

struct expander {
    const struct dnsbl_reply_facts *facts;   /* NULL: only check */
    petrel_pool *pool;
    char *out;
    size_t len, cap;
    const char *error;
    char code_text[8];
};

static void put(struct expander *x, const char *s, size_t n)
{
    if (x->facts == NULL)
        return;
    if (x->len + n + 1 > x->cap) {
        size_t cap = x->cap ? x->cap * 2 : 256;
        while (cap < x->len + n + 1)
            cap *= 2;
        char *bigger = petrel_pool_alloc(x->pool, cap);
        if (x->len)
            memcpy(bigger, x->out, x->len);
        x->out = bigger;
        x->cap = cap;
    }
    memcpy(x->out + x->len, s, n);
    x->len += n;
    x->out[x->len] = '\0';
}

/* A value from outside (a TXT record, an address): printable ASCII only,
 * anything else becomes '_', as Postfix's smtpd_expansion_filter does. */
static void put_filtered(struct expander *x, const char *s)
{
    for (; s && *s; s++) {
        char c = (*s >= 0x20 && *s < 0x7f) ? *s : '_';
        put(x, &c, 1);
    }
}

static const char *part_after(const char *s, char sep)
{
    const char *p = s ? strrchr(s, sep) : NULL;
    return p ? p + 1 : "";
}

/* 1 when name is known, with *value (NULL: empty). */
static int lookup(struct expander *x, const char *name, size_t n, const char **value)
{
    static const char *const names[] = {
        "rbl_code", "rbl_domain", "rbl_reason", "rbl_txt", "rbl_what", "rbl_class", "client_address",
        "client_name", "reverse_client_name", "helo_name", "sender", "sender_name", "sender_domain",
        "recipient", "recipient_name", "recipient_domain", NULL,
    };
    int which = -1;
    for (int i = 0; names[i]; i++)
        if (strlen(names[i]) == n && strncmp(names[i], name, n) == 0)
            which = i;
    if (which < 0)
        return 0;
    *value = NULL;
    const struct dnsbl_reply_facts *f = x->facts;
    if (f == NULL)
        return 1;
    switch (which) {
    case 0:
        snprintf(x->code_text, sizeof(x->code_text), "%d", f->code);
        *value = x->code_text;
        break;
    case 1: *value = f->domain; break;
    case 2: case 3: *value = f->reason; break;
    case 4: *value = f->what; break;
    case 5: *value = f->class_name; break;
    case 6: *value = f->client_address; break;
    case 7: *value = f->client_name; break;
    case 8: *value = f->reverse_client_name; break;
    case 9: *value = f->helo_name; break;
    case 10: *value = f->sender; break;
    case 11:
        *value = f->sender ? petrel_pool_strndup(x->pool, f->sender, strcspn(f->sender, "@")) : NULL;
        break;
    case 12: *value = f->sender && strchr(f->sender, '@') ? part_after(f->sender, '@') : NULL; break;
    case 13: *value = f->recipient; break;
    case 14:
        *value = f->recipient ? petrel_pool_strndup(x->pool, f->recipient, strcspn(f->recipient, "@")) : NULL;
        break;
    case 15: *value = f->recipient && strchr(f->recipient, '@') ? part_after(f->recipient, '@') : NULL; break;
    }
    return 1;
}

static int is_name_char(char c)
{
    return isalnum((unsigned char)c) || c == '_';
}

/* The index just past the bracket that closes text[0], or 0. */
static size_t closing(const char *text, size_t len, char open, char close)
{
    int depth = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == open)
            depth++;
        else if (text[i] == close && --depth == 0)
            return i + 1;
    }
    return 0;
}

static void expand(struct expander *x, const char *t, size_t len);

static void expand_braced(struct expander *x, const char *in, size_t n)
{
    size_t k = 0;
    while (k < n && is_name_char(in[k]))
        k++;
    const char *value;
    if (k == 0 || !lookup(x, in, k, &value)) {
        x->error = petrel_pool_printf(x->pool, "unknown name \"${%.*s}\"", (int)n, in);
        return;
    }
    int empty = value == NULL || *value == '\0';
    if (k == n) {
        put_filtered(x, value);
        return;
    }
    char op = in[k];
    if (op != '?' && op != ':') {
        x->error = petrel_pool_printf(x->pool, "bad expression \"${%.*s}\"", (int)n, in);
        return;
    }
    const char *rest = in + k + 1;
    size_t rn = n - k - 1;
    const char *when_set = NULL, *when_empty = NULL;
    size_t set_n = 0, empty_n = 0;
    if (rn > 0 && rest[0] == '{') {
        size_t e = closing(rest, rn, '{', '}');
        if (!e) {
            x->error = petrel_pool_printf(x->pool, "missing \"}\" in \"${%.*s}\"", (int)n, in);
            return;
        }
        const char *first = rest + 1;
        size_t first_n = e - 2;
        if (e == rn) {
            if (op == '?') {
                when_set = first;
                set_n = first_n;
            } else {
                when_empty = first;
                empty_n = first_n;
            }
        } else if (op == '?' && rest[e] == ':' && e + 1 < rn && rest[e + 1] == '{' &&
                   closing(rest + e + 1, rn - e - 1, '{', '}') == rn - e - 1) {
            when_set = first;
            set_n = first_n;
            when_empty = rest + e + 2;
            empty_n = rn - e - 3;
        } else {
            x->error = petrel_pool_printf(x->pool, "bad expression \"${%.*s}\"", (int)n, in);
            return;
        }
    } else if (op == '?') {
        when_set = rest;
        set_n = rn;
    } else {
        when_empty = rest;
        empty_n = rn;
    }
    /* Both branches are checked; the chosen one is expanded. */
    if (x->facts == NULL) {
        if (when_set)
            expand(x, when_set, set_n);
        if (when_empty)
            expand(x, when_empty, empty_n);
        return;
    }
    if (!empty && when_set)
        expand(x, when_set, set_n);
    else if (empty && when_empty)
        expand(x, when_empty, empty_n);
}

static void expand(struct expander *x, const char *t, size_t len)
{
    size_t i = 0;
    while (i < len && x->error == NULL) {
        if (t[i] != '$') {
            size_t j = i;
            while (j < len && t[j] != '$')
                j++;
            put(x, t + i, j - i);
            i = j;
            continue;
        }
        if (i + 1 >= len) {
            x->error = "a \"$\" ends the template";
            return;
        }
        char c = t[i + 1];
        if (c == '$') {
            put(x, "$", 1);
            i += 2;
        } else if (c == '{' || c == '(') {
            size_t e = closing(t + i + 1, len - i - 1, c, c == '{' ? '}' : ')');
            if (!e) {
                x->error = petrel_pool_printf(x->pool, "missing \"%c\" after \"%.*s\"", c == '{' ? '}' : ')',
                                              (int)(len - i > 20 ? 20 : len - i), t + i);
                return;
            }
            expand_braced(x, t + i + 2, e - 2);
            i += 1 + e;
        } else if (is_name_char(c)) {
            size_t j = i + 1;
            while (j < len && is_name_char(t[j]))
                j++;
            const char *value;
            if (!lookup(x, t + i + 1, j - i - 1, &value)) {
                x->error = petrel_pool_printf(x->pool, "unknown name \"$%.*s\"", (int)(j - i - 1), t + i + 1);
                return;
            }
            put_filtered(x, value);
            i = j;
        } else {
            x->error = petrel_pool_printf(x->pool, "bad \"$\" before \"%c\"", c);
            return;
        }
    }
}

const char *dnsbl_template_check(const char *template_text, petrel_pool *pool)
{
    struct expander x = { .pool = pool };
    expand(&x, template_text, strlen(template_text));
    return x.error;
}

char *dnsbl_template_expand(const char *template_text, const struct dnsbl_reply_facts *facts, petrel_pool *pool)
{
    struct expander x = { .facts = facts, .pool = pool };
    put(&x, "", 0);
    expand(&x, template_text, strlen(template_text));
    return x.error ? NULL : x.out;
}

int dnsbl_reply_split(const char *reply, int *code, char *enhanced, size_t enhanced_size, const char **text)
{
    if ((reply[0] != '4' && reply[0] != '5') || !isdigit((unsigned char)reply[1]) ||
        !isdigit((unsigned char)reply[2]) || reply[3] != ' ')
        return -1;
    *code = (reply[0] - '0') * 100 + (reply[1] - '0') * 10 + (reply[2] - '0');
    const char *p = reply + 4;
    while (*p == ' ')
        p++;
    /* An enhanced code d.ddd.ddd of class 2, 4 or 5 after the reply code. */
    size_t n = 0;
    int dots = 0, ok = 0;
    if ((p[0] == '2' || p[0] == '4' || p[0] == '5') && p[1] == '.') {
        n = 1;
        int digits = 1;
        ok = 1;
        for (; p[n] && p[n] != ' '; n++) {
            if (p[n] == '.') {
                if (digits == 0)
                    ok = 0;
                dots++;
                digits = 0;
            } else if (isdigit((unsigned char)p[n]) && ++digits <= 3) {
                continue;
            } else {
                ok = 0;
            }
        }
        if (dots != 2 || digits == 0)
            ok = 0;
    }
    if (ok && n < enhanced_size) {
        memcpy(enhanced, p, n);
        enhanced[n] = '\0';
        p += n;
        while (*p == ' ')
            p++;
    } else {
        snprintf(enhanced, enhanced_size, "4.7.1");
    }
    enhanced[0] = reply[0];   /* the class follows the reply code */
    *text = *p ? p : "Service unavailable";
    return 0;
}
