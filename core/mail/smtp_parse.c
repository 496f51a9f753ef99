/*
 * SMTP command-line parsers: verb split, MAIL/RCPT paths with their ESMTP
 * parameters, BDAT arguments, the HELO name as we keep it. The syntax the
 * SMTP client needs too (host names, address literals, xtext, UTF-8) is in
 * core/mail/smtp_syntax.c.
 *
 * Design: every parser works on a NUL-terminated copy whose length is
 * bounded by the command line, scans it once, and never recurses, so hostile
 * input costs linear time. Character classes are plain ASCII tables, not
 * <ctype.h>, so a locale can never widen what counts as a letter. A path is
 * validated completely (route, local part, domain, lengths, 8-bit use)
 * before any parameter is looked at, and the reply for each failure is the
 * one Postfix's smtpd gives for the same input.
 */
#include "config.h"

#include <arpa/inet.h>
#include <limits.h>
#include <string.h>

#include "mail/addrlist.h"
#include "mail/smtp_parse.h"

/* ---- character classes --------------------------------------------- */

static int is_blank(int c)
{
    return c == ' ' || c == '\t';
}

static int is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static int is_alpha(int c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static int is_alnum(int c)
{
    return is_alpha(c) || is_digit(c);
}

static int to_upper(int c)
{
    return (c >= 'a' && c <= 'z') ? c - 'a' + 'A' : c;
}

/* RFC 5322 atext: the characters of an unquoted local-part atom. */
static int is_atext(int c)
{
    return is_alnum(c) || (c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

static int ascii_casecmp(const char *a, const char *b)
{
    for (; *a && *b; a++, b++)
        if (to_upper((unsigned char)*a) != to_upper((unsigned char)*b))
            return 1;
    return *a != *b;
}

static int ascii_ncasecmp(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (to_upper((unsigned char)a[i]) != to_upper((unsigned char)b[i]))
            return 1;
        if (a[i] == 0)
            return 0;
    }
    return 0;
}

/* ---- the HELO name as we keep it ------------------------------------ */

/* Length of the valid UTF-8 character at s (1-4), or 0. */
static size_t utf8_char_len(const unsigned char *s, size_t avail)
{
    size_t n = s[0] < 0x80 ? 1 : (s[0] & 0xE0) == 0xC0 ? 2 : (s[0] & 0xF0) == 0xE0 ? 3
                                 : (s[0] & 0xF8) == 0xF0 ? 4 : 0;
    if (n == 0 || n > avail)
        return 0;
    return smtp_valid_utf8(s, n) ? n : 0;
}

char *smtp_helo_printable(const char *arg, size_t len, int utf8, petrel_pool *pool)
{
    static const char neutered[] = " <>()\\\";@";
    const unsigned char *in = (const unsigned char *)arg;
    while (len && (in[0] == ' ' || in[0] == '\t'))
        in++, len--;
    while (len && (in[len - 1] == ' ' || in[len - 1] == '\t'))
        len--;
    char *out = petrel_pool_alloc(pool, len + 1);
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        unsigned char c = in[i];
        if (c == ' ' || c == '\t') {
            while (i < len && (in[i] == ' ' || in[i] == '\t'))
                i++;
            out[o++] = '?';
            continue;
        }
        if (c >= 0x80) {
            size_t n = utf8 ? utf8_char_len(in + i, len - i) : 0;
            if (n > 1) {
                memcpy(out + o, in + i, n);
                o += n;
                i += n;
                continue;
            }
            out[o++] = '?';
            i++;
            continue;
        }
        out[o++] = c < 0x20 || c == 0x7f || strchr(neutered, c) ? '?' : (char)c;
        i++;
    }
    out[o] = '\0';
    return out;
}

/* ---- commands ------------------------------------------------------ */

static const struct {
    const char *name;
    enum smtp_verb verb;
} smtp_verbs[] = {
    { "HELO", SMTP_VERB_HELO }, { "EHLO", SMTP_VERB_EHLO }, { "MAIL", SMTP_VERB_MAIL },
    { "RCPT", SMTP_VERB_RCPT }, { "DATA", SMTP_VERB_DATA }, { "BDAT", SMTP_VERB_BDAT },
    { "RSET", SMTP_VERB_RSET }, { "NOOP", SMTP_VERB_NOOP }, { "QUIT", SMTP_VERB_QUIT },
    { "VRFY", SMTP_VERB_VRFY }, { "EXPN", SMTP_VERB_EXPN }, { "HELP", SMTP_VERB_HELP },
    { "STARTTLS", SMTP_VERB_STARTTLS }, { "AUTH", SMTP_VERB_AUTH }, { "ETRN", SMTP_VERB_ETRN },
    { "XFORWARD", SMTP_VERB_XFORWARD },
};

const char *smtp_verb_name(enum smtp_verb verb)
{
    for (size_t i = 0; i < sizeof smtp_verbs / sizeof smtp_verbs[0]; i++)
        if (smtp_verbs[i].verb == verb)
            return smtp_verbs[i].name;
    return "UNKNOWN";
}

int smtp_parse_command(const char *line, size_t len, struct smtp_command *out)
{
    out->verb = SMTP_VERB_UNKNOWN;
    out->args = "";
    out->args_len = 0;
    if (memchr(line, '\0', len) != NULL)
        return -1;

    size_t verb_len = 0;
    while (verb_len < len && !is_blank((unsigned char)line[verb_len]))
        verb_len++;
    for (size_t i = 0; i < sizeof smtp_verbs / sizeof smtp_verbs[0]; i++) {
        if (strlen(smtp_verbs[i].name) == verb_len
            && ascii_ncasecmp(line, smtp_verbs[i].name, verb_len) == 0) {
            out->verb = smtp_verbs[i].verb;
            break;
        }
    }
    size_t args = verb_len;
    while (args < len && is_blank((unsigned char)line[args]))
        args++;
    out->args = line + args;
    out->args_len = len - args;
    return 0;
}

/* ---- replies ------------------------------------------------------- */

static int fail(struct smtp_reply_err *err, int code, const char *enhanced, const char *text)
{
    err->code = code;
    err->enhanced = enhanced;
    err->text = text;
    return -1;
}

/* "Unsupported option: X" quotes client text: make it printable and short
 * so a hostile parameter can neither inject reply lines nor bloat them. */
static int fail_unsupported(struct smtp_reply_err *err, petrel_pool *pool, const char *opt,
                            size_t opt_len)
{
    enum { SHOWN_MAX = 64 };
    size_t shown = opt_len > SHOWN_MAX ? SHOWN_MAX : opt_len;
    char *text = petrel_pool_alloc(pool, sizeof "Unsupported option: " + shown + 3);
    size_t n = sizeof "Unsupported option: " - 1;
    memcpy(text, "Unsupported option: ", n);
    for (size_t i = 0; i < shown; i++) {
        unsigned char c = (unsigned char)opt[i];
        text[n++] = (c >= 32 && c < 127) ? (char)c : '?';
    }
    if (shown < opt_len) {
        memcpy(text + n, "...", 3);
        n += 3;
    }
    text[n] = 0;
    return fail(err, 555, "5.5.4", text);
}

static int all_printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 32 || (unsigned char)*s > 126)
            return 0;
    return 1;
}

/* ---- paths --------------------------------------------------------- */

enum path_role { PATH_SENDER, PATH_RECIPIENT };

struct path_result {
    char *address;          /* canonical "local@domain" */
    int null_path;
    int eight_bit_local;    /* the local part holds bytes >= 0x80 */
    int eight_bit_domain;
};

static int fail_syntax(struct smtp_reply_err *err, enum path_role role)
{
    if (role == PATH_SENDER)
        return fail(err, 501, "5.1.7", "Bad sender address syntax");
    return fail(err, 501, "5.1.3", "Bad recipient address syntax");
}

static int fail_too_long(struct smtp_reply_err *err, enum path_role role)
{
    if (role == PATH_SENDER)
        return fail(err, 501, "5.1.7", "Bad sender address syntax: address too long");
    return fail(err, 501, "5.1.3", "Bad recipient address syntax: address too long");
}

/* A domain in a path or a route: hostname or address literal. 8-bit bytes
 * are admitted here and policed by the caller once SMTPUTF8 is known. */
static int valid_path_domain(const char *domain, size_t len, petrel_pool *pool)
{
    if (len == 0 || len > SMTP_DOMAIN_MAX)
        return 0;
    char *copy = petrel_pool_strndup(pool, domain, len);
    if (copy[0] == '[')
        return smtp_valid_address_literal(copy);
    return smtp_valid_hostname_8bit(copy) && smtp_valid_utf8((const unsigned char *)copy, len);
}

/*
 * Parses the path starting at *cursor (just after "FROM:"/"TO:" and any
 * blanks) and advances *cursor past it. Route domains are checked and then
 * dropped (RFC 5321 4.1.1.3 says to ignore them). An unquoted local part
 * may have leading, trailing or repeated dots, as Postfix accepts from
 * real-world senders; a quoted one is stored in canonical form: unquoted
 * when it is a plain dot-atom, otherwise re-quoted with only '"' and '\'
 * escaped.
 */
static int parse_path(const char **cursor, enum path_role role,
                      const struct smtp_parse_opts *opts, petrel_pool *pool,
                      struct path_result *res, struct smtp_reply_err *err)
{
    const char *p = *cursor;
    const char *inner, *end;
    size_t wire_len;
    int quoted = 0;

    memset(res, 0, sizeof *res);
    if (*p == '<') {
        inner = ++p;
        for (; *p; p++) {
            if (quoted && *p == '\\') {
                if (p[1] == 0)
                    return fail_syntax(err, role);
                p++;
            } else if (*p == '"') {
                quoted = !quoted;
            } else if (*p == '>' && !quoted) {
                break;
            }
        }
        if (*p != '>')
            return fail_syntax(err, role);
        end = p++;
        if (*p != 0 && !is_blank((unsigned char)*p))
            return fail_syntax(err, role);
        wire_len = (size_t)(end - inner) + 2;
    } else {
        /* strict_rfc821_envelopes = no: a bare address up to the next blank. */
        inner = p;
        for (; *p; p++) {
            if (quoted && *p == '\\') {
                if (p[1] == 0)
                    return fail_syntax(err, role);
                p++;
            } else if (*p == '"') {
                quoted = !quoted;
            } else if (is_blank((unsigned char)*p) && !quoted) {
                break;
            }
        }
        if (quoted)
            return fail_syntax(err, role);
        end = p;
        wire_len = (size_t)(end - inner) + 2;
        if (end == inner || *inner == '>')
            return fail_syntax(err, role);
    }
    *cursor = p;
    if (wire_len > SMTP_PATH_MAX)
        return fail_too_long(err, role);

    if (end == inner) {
        if (role == PATH_RECIPIENT)
            return fail_syntax(err, role);
        res->address = petrel_pool_strdup(pool, "");
        res->null_path = 1;
        return 0;
    }

    /* Source route: @a,@b:mailbox. */
    const char *s = inner;
    if (*s == '@') {
        for (;;) {
            const char *dom = ++s;
            while (s < end && *s != ',' && *s != ':')
                s++;
            if (s == end || !valid_path_domain(dom, (size_t)(s - dom), pool))
                return fail_syntax(err, role);
            if (*s == ':') {
                s++;
                break;
            }
            s++;                /* ',' */
            if (s == end || *s != '@')
                return fail_syntax(err, role);
        }
    }

    /* Local part. */
    const char *local = s;
    char *local_canon;
    size_t local_canon_len;
    if (s < end && *s == '"') {
        char *decoded = petrel_pool_alloc(pool, (size_t)(end - s) + 1);
        size_t n = 0;
        for (s++; s < end && *s != '"'; s++) {
            unsigned char c = (unsigned char)*s;
            if (c == '\\') {
                if (s + 1 >= end)
                    return fail_syntax(err, role);
                c = (unsigned char)*++s;
                if (c < 32 || c == 127)
                    return fail_syntax(err, role);
            } else if (c < 32 || c == 127) {
                return fail_syntax(err, role);
            }
            if (c >= 0x80)
                res->eight_bit_local = 1;
            decoded[n++] = (char)c;
        }
        if (s == end)
            return fail_syntax(err, role);
        s++;                    /* closing quote */
        decoded[n] = 0;
        /* The canonical form: unquoted when it is a plain dot-atom, else
         * re-quoted with only '"' and '\' escaped (no NUL can be in it). */
        local_canon = addrlist_quote_local(pool, decoded);
        local_canon_len = strlen(local_canon);
    } else {
        while (s < end && *s != '@') {
            unsigned char c = (unsigned char)*s;
            if (c >= 0x80)
                res->eight_bit_local = 1;
            else if (c != '.' && !is_atext(c))
                return fail_syntax(err, role);
            s++;
        }
        if (s == local)
            return fail_syntax(err, role);
        local_canon = petrel_pool_strndup(pool, local, (size_t)(s - local));
        local_canon_len = (size_t)(s - local);
    }
    if ((size_t)(s - local) > SMTP_LOCAL_PART_MAX)
        return fail_too_long(err, role);

    /* Domain. */
    if (s == end) {
        int postmaster = role == PATH_RECIPIENT && ascii_casecmp(local_canon, "postmaster") == 0;
        if (!postmaster && !(opts && opts->allow_missing_domain))
            return fail_syntax(err, role);
        res->address = local_canon;
        return 0;
    }
    if (*s != '@')
        return fail_syntax(err, role);
    const char *domain = ++s;
    size_t domain_len = (size_t)(end - domain);
    if (domain_len > SMTP_DOMAIN_MAX)
        return fail_too_long(err, role);
    if (!valid_path_domain(domain, domain_len, pool))
        return fail_syntax(err, role);
    for (size_t i = 0; i < domain_len; i++)
        if ((unsigned char)domain[i] >= 0x80)
            res->eight_bit_domain = 1;

    res->address = petrel_pool_alloc(pool, local_canon_len + 1 + domain_len + 1);
    memcpy(res->address, local_canon, local_canon_len);
    res->address[local_canon_len] = '@';
    memcpy(res->address + local_canon_len + 1, domain, domain_len);
    res->address[local_canon_len + 1 + domain_len] = 0;
    return 0;
}

/* RFC 6531: non-ASCII only in an SMTPUTF8 transaction, and then valid
 * UTF-8; Postfix's old 8-bit leniency only for the local part, on request. */
static int check_8bit(const struct path_result *res, int utf8_transaction,
                      const struct smtp_parse_opts *opts, enum path_role role,
                      struct smtp_reply_err *err)
{
    if (!res->eight_bit_local && !res->eight_bit_domain)
        return 0;
    if (utf8_transaction) {
        if (!smtp_valid_utf8((const unsigned char *)res->address, strlen(res->address)))
            return fail_syntax(err, role);
        return 0;
    }
    if (!res->eight_bit_domain && opts && opts->allow_8bit_localpart_without_smtputf8)
        return 0;
    return fail(err, 553, "5.6.7", "Must declare SMTPUTF8 to send unicode address");
}

/* Splits "FROM:" / "TO:" (case-insensitive) and the blanks after it. */
static const char *skip_keyword(const char *args, const char *keyword)
{
    size_t n = strlen(keyword);
    if (ascii_ncasecmp(args, keyword, n) != 0)
        return NULL;
    args += n;
    while (is_blank((unsigned char)*args))
        args++;
    return args;
}

/* ESMTP parameter iteration: "KEYWORD[=VALUE]" separated by blanks. */
struct esmtp_param {
    const char *token;      /* the whole token, for replies */
    size_t token_len;
    char *keyword;          /* NUL-terminated copies */
    char *value;            /* NULL when there is no '=' */
};

static int next_param(const char **cursor, petrel_pool *pool, struct esmtp_param *param)
{
    const char *p = *cursor;
    while (is_blank((unsigned char)*p))
        p++;
    if (*p == 0) {
        *cursor = p;
        return 0;
    }
    const char *start = p;
    while (*p && !is_blank((unsigned char)*p))
        p++;
    *cursor = p;
    param->token = start;
    param->token_len = (size_t)(p - start);
    const char *eq = memchr(start, '=', param->token_len);
    size_t kw_len = eq ? (size_t)(eq - start) : param->token_len;
    param->keyword = petrel_pool_strndup(pool, start, kw_len);
    param->value = eq ? petrel_pool_strndup(pool, eq + 1, (size_t)(p - eq - 1)) : NULL;
    return 1;
}

/* The parameters after the path, as sent, runs of blanks made one space
 * (what the milters get with MAIL and RCPT, as Postfix's argv). */
static char *params_text(const char *p, petrel_pool *pool)
{
    char *out = petrel_pool_alloc(pool, strlen(p) + 1);
    size_t o = 0;
    while (*p) {
        while (is_blank((unsigned char)*p))
            p++;
        if (*p == 0)
            break;
        if (o > 0)
            out[o++] = ' ';
        while (*p && !is_blank((unsigned char)*p))
            out[o++] = *p++;
    }
    out[o] = 0;
    return out;
}

static int all_digits(const char *s)
{
    if (*s == 0)
        return 0;
    for (; *s; s++)
        if (!is_digit((unsigned char)*s))
            return 0;
    return 1;
}

/* Decimal without overflow; -1 when it does not fit. */
static int parse_decimal(const char *s, unsigned long long max, unsigned long long *out)
{
    unsigned long long v = 0;
    for (; *s; s++) {
        unsigned d = (unsigned)(*s - '0');
        if (v > (max - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

int smtp_parse_mail(const char *args, const struct smtp_parse_opts *opts, petrel_pool *pool,
                    struct smtp_mail_args *out, struct smtp_reply_err *err)
{
    static const struct smtp_parse_opts no_opts;
    if (opts == NULL)
        opts = &no_opts;
    memset(out, 0, sizeof *out);
    out->size = -1;

    const char *p = skip_keyword(args, "FROM:");
    if (p == NULL || *p == 0)
        return fail(err, 501, "5.5.4", "Syntax: MAIL FROM:<address>");
    struct path_result path;
    if (parse_path(&p, PATH_SENDER, opts, pool, &path, err) < 0)
        return -1;
    out->params = params_text(p, pool);

    struct esmtp_param param;
    while (next_param(&p, pool, &param)) {
        const char *kw = param.keyword, *val = param.value;
        if (ascii_casecmp(kw, "SIZE") == 0 && val != NULL) {
            unsigned long long size;
            if (out->size >= 0)
                return fail(err, 501, "5.5.4", "Error: multiple SIZE= options");
            if (!all_digits(val))
                return fail(err, 501, "5.5.4", "Bad message size syntax");
            if (parse_decimal(val, LLONG_MAX, &size) < 0)
                return fail(err, 552, "5.3.4", "Message size exceeds file system imposed limit");
            out->size = (long long)size;
        } else if (ascii_casecmp(kw, "BODY") == 0 && val != NULL) {
            if (out->body != SMTP_BODY_UNSET)
                return fail(err, 501, "5.5.4", "Error: multiple BODY= options");
            if (ascii_casecmp(val, "7BIT") == 0)
                out->body = SMTP_BODY_7BIT;
            else if (ascii_casecmp(val, "8BITMIME") == 0)
                out->body = SMTP_BODY_8BITMIME;
            else        /* BINARYMIME included: it is not offered */
                return fail_unsupported(err, pool, param.token, param.token_len);
        } else if (ascii_casecmp(kw, "SMTPUTF8") == 0 && val == NULL && opts->smtputf8_enabled) {
            if (out->smtputf8)
                return fail(err, 501, "5.5.4", "Error: multiple SMTPUTF8 options");
            out->smtputf8 = 1;
        } else if (ascii_casecmp(kw, "RET") == 0 && val != NULL) {
            if (!opts->dsn_enabled)
                return fail(err, 501, "5.7.1", "DSN support is disabled");
            if (out->ret != SMTP_DSN_RET_UNSET)
                return fail(err, 501, "5.5.4", "Bad RET parameter syntax");
            if (ascii_casecmp(val, "FULL") == 0)
                out->ret = SMTP_DSN_RET_FULL;
            else if (ascii_casecmp(val, "HDRS") == 0)
                out->ret = SMTP_DSN_RET_HDRS;
            else
                return fail(err, 501, "5.5.4", "Bad RET parameter syntax");
        } else if (ascii_casecmp(kw, "ENVID") == 0 && val != NULL) {
            if (!opts->dsn_enabled)
                return fail(err, 501, "5.7.1", "DSN support is disabled");
            if (out->envid != NULL || *val == 0 || strlen(val) > SMTP_ENVID_MAX
                || smtp_xtext_decode(val, pool, &out->envid) < 0 || !all_printable(out->envid))
                return fail(err, 501, "5.5.4", "Bad ENVID parameter syntax");
        } else if (ascii_casecmp(kw, "AUTH") == 0 && val != NULL) {
            if (out->auth != NULL)
                return fail(err, 503, "5.5.4", "Error: multiple AUTH= options");
            if (strcmp(val, "<>") == 0)
                out->auth = petrel_pool_strdup(pool, "<>");
            else if (*val == 0 || smtp_xtext_decode(val, pool, &out->auth) < 0
                     || !all_printable(out->auth))
                return fail(err, 501, "5.5.4", "Bad AUTH parameter syntax");
        } else {
            return fail_unsupported(err, pool, param.token, param.token_len);
        }
    }

    if (check_8bit(&path, out->smtputf8, opts, PATH_SENDER, err) < 0)
        return -1;
    out->address = path.address;
    out->null_sender = path.null_path;
    return 0;
}

/* RFC 3461 NOTIFY: NEVER alone, or a list of SUCCESS/FAILURE/DELAY. */
static unsigned parse_notify(const char *val)
{
    unsigned mask = 0;
    const char *p = val;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (n == 7 && ascii_ncasecmp(p, "SUCCESS", 7) == 0)
            mask |= SMTP_NOTIFY_SUCCESS;
        else if (n == 7 && ascii_ncasecmp(p, "FAILURE", 7) == 0)
            mask |= SMTP_NOTIFY_FAILURE;
        else if (n == 5 && ascii_ncasecmp(p, "DELAY", 5) == 0)
            mask |= SMTP_NOTIFY_DELAY;
        else if (n == 5 && ascii_ncasecmp(p, "NEVER", 5) == 0)
            mask |= SMTP_NOTIFY_NEVER;
        else
            return 0;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    if ((mask & SMTP_NOTIFY_NEVER) && mask != SMTP_NOTIFY_NEVER)
        return 0;
    return mask;
}

/* ORCPT=addr-type;xtext. The type is an atom; the decoded address may not
 * carry control characters, since it ends up in DSN headers. */
static int parse_orcpt(const char *val, petrel_pool *pool, char **out)
{
    const char *semi = strchr(val, ';');
    if (semi == NULL || semi == val || strlen(val) > SMTP_ORCPT_MAX)
        return -1;
    for (const char *t = val; t < semi; t++)
        if (!is_atext((unsigned char)*t))
            return -1;
    char *decoded;
    if (smtp_xtext_decode(semi + 1, pool, &decoded) < 0)
        return -1;
    for (const char *d = decoded; *d; d++)
        if ((unsigned char)*d < 32 || *d == 127)
            return -1;
    *out = petrel_pool_printf(pool, "%.*s;%s", (int)(semi - val), val, decoded);
    return 0;
}

int smtp_parse_edit_param(const char *token, petrel_pool *pool, struct smtp_mail_args *mail,
                          struct smtp_rcpt_args *rcpt)
{
    const char *eq = strchr(token, '=');
    if (eq == NULL || eq[1] == 0)
        return -1;
    size_t kw = (size_t)(eq - token);
    const char *val = eq + 1;
    if (mail != NULL && kw == 3 && ascii_ncasecmp(token, "RET", 3) == 0) {
        if (ascii_casecmp(val, "FULL") == 0)
            mail->ret = SMTP_DSN_RET_FULL;
        else if (ascii_casecmp(val, "HDRS") == 0)
            mail->ret = SMTP_DSN_RET_HDRS;
        else
            return -1;
        return 0;
    }
    if (mail != NULL && kw == 5 && ascii_ncasecmp(token, "ENVID", 5) == 0) {
        char *envid;
        if (strlen(val) > SMTP_ENVID_MAX || smtp_xtext_decode(val, pool, &envid) < 0 || !all_printable(envid))
            return -1;
        mail->envid = envid;
        return 0;
    }
    if (rcpt != NULL && kw == 6 && ascii_ncasecmp(token, "NOTIFY", 6) == 0) {
        unsigned notify = parse_notify(val);
        if (notify == 0)
            return -1;
        rcpt->notify = notify;
        return 0;
    }
    if (rcpt != NULL && kw == 5 && ascii_ncasecmp(token, "ORCPT", 5) == 0)
        return parse_orcpt(val, pool, &rcpt->orcpt);
    return -1;
}

int smtp_parse_rcpt(const char *args, const struct smtp_parse_opts *opts, petrel_pool *pool,
                    struct smtp_rcpt_args *out, struct smtp_reply_err *err)
{
    static const struct smtp_parse_opts no_opts;
    if (opts == NULL)
        opts = &no_opts;
    memset(out, 0, sizeof *out);

    const char *p = skip_keyword(args, "TO:");
    if (p == NULL || *p == 0)
        return fail(err, 501, "5.5.4", "Syntax: RCPT TO:<address>");
    struct path_result path;
    if (parse_path(&p, PATH_RECIPIENT, opts, pool, &path, err) < 0)
        return -1;
    out->params = params_text(p, pool);

    struct esmtp_param param;
    while (next_param(&p, pool, &param)) {
        const char *kw = param.keyword, *val = param.value;
        if (ascii_casecmp(kw, "NOTIFY") == 0 && val != NULL) {
            if (!opts->dsn_enabled)
                return fail(err, 501, "5.7.1", "DSN support is disabled");
            if (out->notify != 0 || (out->notify = parse_notify(val)) == 0)
                return fail(err, 501, "5.5.4", "Error: Bad NOTIFY parameter syntax");
        } else if (ascii_casecmp(kw, "ORCPT") == 0 && val != NULL) {
            if (!opts->dsn_enabled)
                return fail(err, 501, "5.7.1", "DSN support is disabled");
            if (out->orcpt != NULL || parse_orcpt(val, pool, &out->orcpt) < 0)
                return fail(err, 501, "5.5.4", "Error: Bad ORCPT parameter syntax");
        } else {
            return fail_unsupported(err, pool, param.token, param.token_len);
        }
    }

    if (check_8bit(&path, opts->smtputf8_enabled && opts->transaction_smtputf8, opts,
                   PATH_RECIPIENT, err) < 0)
        return -1;
    out->address = path.address;
    return 0;
}

int smtp_parse_bdat(const char *args, unsigned long long *chunk_size, int *last,
                    struct smtp_reply_err *err)
{
    const char *p = args;
    const char *digits = p;
    *chunk_size = 0;
    *last = 0;
    while (is_digit((unsigned char)*p))
        p++;
    size_t ndigits = (size_t)(p - digits);
    if (ndigits == 0 || (*p != 0 && !is_blank((unsigned char)*p)))
        return fail(err, 501, "5.5.4", "Syntax: BDAT count [LAST]");
    unsigned long long value = 0;
    for (size_t i = 0; i < ndigits; i++) {
        unsigned d = (unsigned)(digits[i] - '0');
        if (value > (ULLONG_MAX - d) / 10)
            return fail(err, 552, "5.3.4", "Chunk exceeds message size limit");
        value = value * 10 + d;
    }
    while (is_blank((unsigned char)*p))
        p++;
    if (*p != 0) {
        const char *word = p;
        while (*p && !is_blank((unsigned char)*p))
            p++;
        if (p - word != 4 || ascii_ncasecmp(word, "LAST", 4) != 0)
            return fail(err, 501, "5.5.4", "Syntax: BDAT count [LAST]");
        while (is_blank((unsigned char)*p))
            p++;
        if (*p != 0)
            return fail(err, 501, "5.5.4", "Syntax: BDAT count [LAST]");
        *last = 1;
    }
    *chunk_size = value;
    return 0;
}
