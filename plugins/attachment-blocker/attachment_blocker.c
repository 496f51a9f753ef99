/*
 * attachment_blocker: an example Petrel plugin that refuses messages
 * carrying an attachment whose file name ends in a forbidden extension:
 *
 *   554 5.7.1 Attachment type .exe not allowed
 *
 * Parameter (main.cf):
 *   attachment_blocker_extensions   extensions refused, compared without
 *                                   regard to case (default
 *                                   "exe com bat scr js vbs cmd pif")
 *
 * How it reads MIME. The message's own headers come through the header
 * hook: a multipart Content-Type gives the first boundary (and a
 * single-part message may itself be the attachment). The body then streams
 * through the body hook in chunks of any size; the scanner cuts it into
 * lines (a line may be split across any number of chunks), looks for
 * boundary delimiters of the open multiparts (nested ones too, up to
 * MAX_DEPTH), and reads each part's headers: the filename= parameter of
 * Content-Disposition and the name= parameter of Content-Type, quoted or
 * not, in any case, in RFC 2231 form (filename*=UTF-8''a%2Eexe and
 * continuations filename*0=, filename*1*=) and RFC 2047 encoded words
 * (=?UTF-8?B?...?=). Every candidate name is checked, so a part cannot hide
 * an .exe behind a harmless plain filename next to a hostile extended one.
 * A message/rfc822 part is followed into its own headers, and uuencoded
 * "begin 644 name" lines are checked too.
 *
 * Everything is bounded: a line keeps at most MAX_LINE bytes (longer ones
 * cannot be delimiters and are cut), a part header keeps MAX_HEADER bytes
 * after unfolding, parameter values MAX_NAME bytes. The verdict is given at
 * end_of_message (the body hook only records what it found), so the
 * refusal is the answer to the end of DATA and nothing is queued.
 *
 * State: the module's configuration lives in a pool made in init
 * (petrel_module_set_data), the scanner in the transaction's slot,
 * allocated from the transaction pool: no global mutable state, nothing to
 * free, and RSET or a new MAIL starts from a clean scanner.
 *
 * Build: make (uses pkg-config petrel-plugin); see README.md.
 */
#include <stddef.h>
#include <string.h>

#include <petrel/plugin.h>

#define MAX_LINE 998          /* RFC 5322 line length; delimiters are far shorter */
#define MAX_HEADER 8192       /* one unfolded part header */
#define MAX_DEPTH 8           /* nested multiparts followed */
#define MAX_BOUNDARY 70       /* RFC 2046 */
#define MAX_NAME 255          /* a decoded file name (the longest file systems allow) */
#define MAX_SECTIONS 10       /* RFC 2231 continuations kept */
#define MAX_EXT 32            /* an extension in the list */

struct blocker_conf {
    petrel_pool *pool;
    char (*exts)[MAX_EXT + 1];
    size_t nexts;
};

enum scan_state { IN_BODY, IN_PART_HEADERS };

/* The file name parameters of one header, decoded. */
struct name_params {
    char plain[2][MAX_NAME + 1];                    /* filename=, name= */
    char extended[2][MAX_NAME + 1];                 /* filename*=, name*= (decoded) */
    char section[2][MAX_SECTIONS][MAX_NAME + 1];    /* filename*N[*]= (decoded when *) */
    unsigned char section_set[2][MAX_SECTIONS];
};

/* One per transaction: the scanner and what it found. */
struct blocker_tx {
    enum scan_state state;
    int done;                           /* a forbidden name was found: stop scanning */
    int part_is_rfc822;                 /* the part being read is message/rfc822 */
    unsigned parts;
    int warned_header;
    char line[MAX_LINE + 1];
    size_t line_len;
    int line_cut;
    char header[MAX_HEADER + 1];        /* the part header being assembled */
    size_t header_len;
    int header_cut;
    char boundary[MAX_DEPTH][MAX_BOUNDARY + 1];
    size_t boundary_len[MAX_DEPTH];
    int depth;
    struct name_params *params;         /* scratch for one header, made on first use */
    const char *blocked_ext;            /* from the configured list: safe in a reply */
    const char *blocked_name;           /* sanitised for the log */
};

static const petrel_param blocker_params[] = {
    { PETREL_PARAM_INIT, .name = "attachment_blocker_extensions", .type = PETREL_PARAM_LIST,
      .default_value = "exe com bat scr js vbs cmd pif",
      .help = "file name extensions refused in attachments (case-insensitive, without the dot)" },
    { .name = NULL },
};

/* ------------------------------------------------------------------ */
/* small ASCII helpers (the locale must not change what matches)       */

static int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

static int is_space(int c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static int equal_nocase_n(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b);
    if (alen != blen)
        return 0;
    for (size_t i = 0; i < alen; i++)
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
            return 0;
    return 1;
}

static int starts_nocase(const char *s, size_t len, const char *prefix)
{
    size_t plen = strlen(prefix);
    return len >= plen && equal_nocase_n(s, plen, prefix);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = lower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Appends to a bounded string buffer (dst has room for cap bytes plus NUL). */
static void append(char *dst, size_t *len, size_t cap, const char *src, size_t n)
{
    if (*len >= cap)
        return;
    if (n > cap - *len)
        n = cap - *len;
    memcpy(dst + *len, src, n);
    *len += n;
    dst[*len] = '\0';
}

/* ------------------------------------------------------------------ */
/* configuration                                                       */

static int blocker_init(petrel_module *m, const char **error)
{
    const char *list = petrel_param_string(m, "attachment_blocker_extensions");
    petrel_pool *pool = petrel_pool_create(1024);
    struct blocker_conf *c = petrel_pool_zalloc(pool, sizeof(*c));
    c->pool = pool;
    size_t cap = 1;
    for (const char *p = list ? list : ""; *p; p++)
        if (*p == ' ' || *p == ',' || *p == '\t')
            cap++;
    c->exts = petrel_pool_zalloc(pool, cap * sizeof(*c->exts));
    for (const char *p = list ? list : ""; *p;) {
        while (*p == ' ' || *p == ',' || *p == '\t' || *p == '\r' || *p == '\n')
            p++;
        if (*p == '.')
            p++;
        size_t n = 0;
        while (p[n] && p[n] != ' ' && p[n] != ',' && p[n] != '\t' && p[n] != '\r' && p[n] != '\n')
            n++;
        if (n == 0)
            continue;
        if (n > MAX_EXT || memchr(p, '.', n)) {
            *error = "attachment_blocker_extensions: an entry is not a file name extension";
            petrel_pool_destroy(pool);
            return -1;
        }
        for (size_t i = 0; i < n; i++)
            c->exts[c->nexts][i] = (char)lower((unsigned char)p[i]);
        c->nexts++;
        p += n;
    }
    petrel_module_set_data(m, c);
    petrel_module_log(m, PETREL_LOG_DEBUG, "%zu extension%s refused", c->nexts, c->nexts == 1 ? "" : "s");
    return 0;
}

static void blocker_fini(petrel_module *m)
{
    struct blocker_conf *c = petrel_module_data(m);
    if (c)
        petrel_pool_destroy(c->pool);
    petrel_module_set_data(m, NULL);
}

static struct blocker_tx *tx_state(petrel_session *s)
{
    void **slot = petrel_tx_slot(s);
    if (slot == NULL)
        return NULL;
    if (*slot == NULL)
        *slot = petrel_pool_zalloc(petrel_tx_pool(s), sizeof(struct blocker_tx));
    return *slot;
}

/* ------------------------------------------------------------------ */
/* file names                                                          */

/* The configured extension a name ends with, or NULL. Windows ignores
 * trailing dots and spaces ("a.exe. " runs as a.exe), so they go first. */
static const char *forbidden_ext(const struct blocker_conf *c, const char *name, size_t len)
{
    while (len && (name[len - 1] == '.' || is_space((unsigned char)name[len - 1]) || name[len - 1] == '\0'))
        len--;
    size_t dot = len;
    while (dot && name[dot - 1] != '.' && name[dot - 1] != '/' && name[dot - 1] != '\\')
        dot--;
    if (dot == 0 || name[dot - 1] != '.' || dot == len)
        return NULL;
    for (size_t i = 0; i < c->nexts; i++)
        if (equal_nocase_n(name + dot, len - dot, c->exts[i]))
            return c->exts[i];
    return NULL;
}

/* Decodes RFC 2047 encoded words (B and Q) in text; other text is copied.
 * White space between two encoded words is dropped, as the RFC says. */
static void decode_2047(const char *in, char *out, size_t cap)
{
    size_t len = 0;
    out[0] = '\0';
    const char *p = in;
    int last_was_word = 0;
    while (*p) {
        const char *q = NULL, *enc = NULL, *text = NULL, *end = NULL;
        if (p[0] == '=' && p[1] == '?') {
            q = strchr(p + 2, '?');                        /* end of charset */
            if (q && (q[1] == 'B' || q[1] == 'b' || q[1] == 'Q' || q[1] == 'q') && q[2] == '?') {
                enc = q + 1;
                text = q + 3;
                end = strstr(text, "?=");
            }
        }
        if (end == NULL) {
            if (last_was_word && is_space((unsigned char)*p)) {
                /* keep the space only if no encoded word follows */
                const char *n = p;
                while (is_space((unsigned char)*n))
                    n++;
                if (n[0] == '=' && n[1] == '?') {
                    p = n;
                    continue;
                }
            }
            append(out, &len, cap, p, 1);
            last_was_word = 0;
            p++;
            continue;
        }
        if (lower((unsigned char)*enc) == 'q') {
            for (const char *t = text; t < end; t++) {
                char ch = *t;
                if (ch == '_') {
                    ch = ' ';
                } else if (ch == '=' && t + 2 < end && hexval((unsigned char)t[1]) >= 0 &&
                           hexval((unsigned char)t[2]) >= 0) {
                    ch = (char)(hexval((unsigned char)t[1]) * 16 + hexval((unsigned char)t[2]));
                    t += 2;
                }
                append(out, &len, cap, &ch, 1);
            }
        } else {
            static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            unsigned acc = 0;
            int bits = 0;
            for (const char *t = text; t < end; t++) {
                const char *pos = *t ? strchr(b64, *t) : NULL;
                if (pos == NULL)
                    continue;                                  /* padding and junk */
                acc = (acc << 6) | (unsigned)(pos - b64);
                bits += 6;
                if (bits >= 8) {
                    bits -= 8;
                    char ch = (char)((acc >> bits) & 0xff);
                    append(out, &len, cap, &ch, 1);
                }
            }
        }
        last_was_word = 1;
        p = end + 2;
    }
}

/* %XX decoding of an RFC 2231 extended value. */
static void percent_decode(const char *in, size_t n, char *out, size_t *len, size_t cap)
{
    for (size_t i = 0; i < n; i++) {
        char ch = in[i];
        if (ch == '%' && i + 2 < n && hexval((unsigned char)in[i + 1]) >= 0 &&
            hexval((unsigned char)in[i + 2]) >= 0) {
            ch = (char)(hexval((unsigned char)in[i + 1]) * 16 + hexval((unsigned char)in[i + 2]));
            i += 2;
        }
        append(out, len, cap, &ch, 1);
    }
}

/* Printable copy of an untrusted name for the log. */
static const char *sanitise(petrel_pool *pool, const char *name)
{
    char *copy = petrel_pool_strndup(pool, name, 200);
    for (char *p = copy; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f || *p == '"')
            *p = '?';
    return copy;
}

static void check_name(petrel_session *s, const struct blocker_conf *c, struct blocker_tx *t, const char *name)
{
    if (t->done || *name == '\0')
        return;
    char decoded[MAX_NAME + 1];
    const char *ext = forbidden_ext(c, name, strlen(name));
    if (ext == NULL) {
        decode_2047(name, decoded, MAX_NAME);
        if (strcmp(decoded, name) != 0)
            ext = forbidden_ext(c, decoded, strlen(decoded));
        if (ext)
            name = decoded;
    }
    if (ext == NULL)
        return;
    t->done = 1;
    t->blocked_ext = ext;
    t->blocked_name = sanitise(petrel_tx_pool(s), name);
    petrel_log(s, PETREL_LOG_INFO, "attachment \"%s\" (part %u) has a refused extension .%s", t->blocked_name,
               t->parts, ext);
}

/* ------------------------------------------------------------------ */
/* MIME header parameters (RFC 2045, 2231)                             */


/* Which of filename / name an attribute is about, with its RFC 2231 form:
 * returns 0 or 1 (the base), or -1 for other attributes. *section is -1
 * without a section number; *encoded says a trailing '*'. */
static int classify(const char *attr, size_t n, int *section, int *encoded)
{
    static const char *const bases[2] = { "filename", "name" };
    for (int b = 0; b < 2; b++) {
        size_t bl = strlen(bases[b]);
        if (n < bl || !equal_nocase_n(attr, bl, bases[b]))
            continue;
        const char *p = attr + bl, *end = attr + n;
        *section = -1;
        *encoded = 0;
        if (p == end)
            return b;
        if (*p != '*')
            continue;
        p++;
        if (p == end) {
            *encoded = 1;
            return b;
        }
        int num = 0, digits = 0;
        while (p < end && *p >= '0' && *p <= '9' && digits < 3)
            num = num * 10 + (*p++ - '0'), digits++;
        if (digits == 0)
            continue;
        if (p < end && *p == '*')
            *encoded = 1, p++;
        if (p != end)
            continue;
        *section = num;
        return b;
    }
    return -1;
}

/* Reads the parameters after the first ';' of a structured header value. */
static void parse_params(const char *v, struct name_params *np, char *boundary, size_t *boundary_len)
{
    const char *p = strchr(v, ';');
    while (p && *p) {
        while (*p == ';' || is_space((unsigned char)*p))
            p++;
        const char *attr = p;
        while (*p && *p != '=' && *p != ';' && !is_space((unsigned char)*p))
            p++;
        size_t alen = (size_t)(p - attr);
        while (is_space((unsigned char)*p))
            p++;
        if (*p != '=') {
            /* junk without a value: skip to the next parameter */
            while (*p && *p != ';')
                p++;
            continue;
        }
        p++;
        while (is_space((unsigned char)*p))
            p++;
        char value[MAX_NAME + 1];
        size_t vlen = 0;
        value[0] = '\0';
        if (*p == '"') {
            p++;
            while (*p && *p != '"') {
                if (*p == '\\' && p[1])
                    p++;
                if (*p != '\r' && *p != '\n')      /* folding inside quotes */
                    append(value, &vlen, MAX_NAME, p, 1);
                p++;
            }
            if (*p == '"')
                p++;
        } else {
            const char *start = p;
            while (*p && *p != ';' && !is_space((unsigned char)*p))
                p++;
            append(value, &vlen, MAX_NAME, start, (size_t)(p - start));
        }
        while (*p && *p != ';')
            p++;

        if (boundary && equal_nocase_n(attr, alen, "boundary")) {
            size_t n = vlen > MAX_BOUNDARY ? MAX_BOUNDARY : vlen;
            memcpy(boundary, value, n);
            boundary[n] = '\0';
            *boundary_len = n;
            continue;
        }
        int section, encoded;
        int b = classify(attr, alen, &section, &encoded);
        if (b < 0)
            continue;
        char *dst;
        if (section < 0 && !encoded) {
            dst = np->plain[b];
        } else if (section < 0) {
            dst = np->extended[b];
        } else if (section < MAX_SECTIONS) {
            dst = np->section[b][section];
            np->section_set[b][section] = 1;
        } else {
            continue;
        }
        size_t dlen = 0;
        dst[0] = '\0';
        if (!encoded) {
            append(dst, &dlen, MAX_NAME, value, vlen);
            continue;
        }
        /* charset'language'%XX-text: the prefix is only on the unsectioned
         * form and on section 0. */
        const char *text = value;
        if (section <= 0) {
            const char *q1 = strchr(value, '\'');
            const char *q2 = q1 ? strchr(q1 + 1, '\'') : NULL;
            if (q2)
                text = q2 + 1;
        }
        percent_decode(text, strlen(text), dst, &dlen, MAX_NAME);
    }
}

/* Checks every file name a header's parameters give. */
static void check_params(petrel_session *s, const struct blocker_conf *c, struct blocker_tx *t,
                         struct name_params *np)
{
    for (int b = 0; b < 2; b++) {
        check_name(s, c, t, np->plain[b]);
        check_name(s, c, t, np->extended[b]);
        char joined[MAX_NAME + 1];
        size_t jlen = 0;
        joined[0] = '\0';
        for (int i = 0; i < MAX_SECTIONS && np->section_set[b][i]; i++)
            append(joined, &jlen, MAX_NAME, np->section[b][i], strlen(np->section[b][i]));
        check_name(s, c, t, joined);
    }
}

/* One unfolded header of the message or of a part. */
static void examine_header(petrel_session *s, const struct blocker_conf *c, struct blocker_tx *t,
                           const char *name, size_t name_len, const char *value)
{
    int is_type = equal_nocase_n(name, name_len, "Content-Type");
    if (!is_type && !equal_nocase_n(name, name_len, "Content-Disposition"))
        return;
    if (t->params == NULL)
        t->params = petrel_pool_alloc(petrel_tx_pool(s), sizeof(*t->params));
    struct name_params *np = t->params;
    memset(np, 0, sizeof(*np));
    char boundary[MAX_BOUNDARY + 1] = "";
    size_t boundary_len = 0;
    parse_params(value, np, is_type ? boundary : NULL, &boundary_len);
    check_params(s, c, t, np);
    if (!is_type)
        return;
    while (is_space((unsigned char)*value))
        value++;
    size_t type_len = strcspn(value, "; \t\r\n");
    if (starts_nocase(value, type_len, "multipart/") && boundary_len > 0 && t->depth < MAX_DEPTH) {
        memcpy(t->boundary[t->depth], boundary, boundary_len + 1);
        t->boundary_len[t->depth] = boundary_len;
        t->depth++;
    } else if (equal_nocase_n(value, type_len, "message/rfc822")) {
        t->part_is_rfc822 = 1;
    }
}

/* The part header assembled in t->header ("Name: value"), if any. */
static void finish_part_header(petrel_session *s, const struct blocker_conf *c, struct blocker_tx *t)
{
    if (t->header_len == 0)
        return;
    if (t->header_cut && !t->warned_header) {
        t->warned_header = 1;
        petrel_log(s, PETREL_LOG_WARNING, "a MIME part header is longer than %d bytes: only its start was examined",
                   MAX_HEADER);
    }
    char *colon = memchr(t->header, ':', t->header_len);
    if (colon) {
        size_t name_len = (size_t)(colon - t->header);
        while (name_len && is_space((unsigned char)t->header[name_len - 1]))
            name_len--;
        examine_header(s, c, t, t->header, name_len, colon + 1);
    }
    t->header_len = 0;
    t->header_cut = 0;
    t->header[0] = '\0';
}

/* ------------------------------------------------------------------ */
/* the body scanner                                                    */

/* A delimiter of an open multipart: returns the level (0-based) and sets
 * *closing for "--boundary--", or -1. Inner boundaries are tried first. */
static int delimiter(const struct blocker_tx *t, const char *line, size_t len, int *closing)
{
    if (len < 3 || line[0] != '-' || line[1] != '-')
        return -1;
    for (int i = t->depth - 1; i >= 0; i--) {
        size_t bl = t->boundary_len[i];
        if (len < 2 + bl || memcmp(line + 2, t->boundary[i], bl) != 0)
            continue;
        const char *rest = line + 2 + bl;
        size_t rlen = len - 2 - bl;
        *closing = rlen >= 2 && rest[0] == '-' && rest[1] == '-';
        size_t k = *closing ? 2 : 0;
        while (k < rlen && (rest[k] == ' ' || rest[k] == '\t'))   /* transport padding */
            k++;
        if (k == rlen)
            return i;
    }
    return -1;
}

/* "begin 644 name" opens a uuencoded file. */
static void check_uuencode(petrel_session *s, const struct blocker_conf *c, struct blocker_tx *t,
                           const char *line, size_t len)
{
    if (len < 10 || memcmp(line, "begin ", 6) != 0)
        return;
    size_t i = 6, digits = 0;
    while (i < len && line[i] >= '0' && line[i] <= '7')
        i++, digits++;
    if (digits < 3 || digits > 4 || i >= len || line[i] != ' ')
        return;
    char name[MAX_NAME + 1];
    size_t n = 0;
    name[0] = '\0';
    append(name, &n, MAX_NAME, line + i + 1, len - i - 1);
    check_name(s, c, t, name);
}

static void scan_line(petrel_session *s, const struct blocker_conf *c, struct blocker_tx *t, const char *line,
                      size_t len, int cut)
{
    if (len && line[len - 1] == '\r')
        len--;
    int closing = 0;
    int level = cut ? -1 : delimiter(t, line, len, &closing);
    if (level >= 0) {
        if (t->state == IN_PART_HEADERS)
            finish_part_header(s, c, t);
        t->part_is_rfc822 = 0;
        if (closing) {
            t->depth = level;              /* closes this multipart and any inside it */
            t->state = IN_BODY;            /* its epilogue, in the enclosing part */
        } else {
            t->depth = level + 1;          /* a new part of this multipart */
            t->state = IN_PART_HEADERS;
            t->parts++;
        }
        return;
    }
    if (t->state == IN_PART_HEADERS) {
        if (len == 0) {
            finish_part_header(s, c, t);
            if (t->part_is_rfc822) {
                /* An attached message: its own headers follow. */
                t->part_is_rfc822 = 0;
                return;
            }
            t->state = IN_BODY;
            return;
        }
        if (line[0] != ' ' && line[0] != '\t')
            finish_part_header(s, c, t);
        else
            append(t->header, &t->header_len, MAX_HEADER, " ", 1);
        size_t before = t->header_len;
        append(t->header, &t->header_len, MAX_HEADER, line, len);
        if (t->header_len - before < len || cut)
            t->header_cut = 1;
        return;
    }
    check_uuencode(s, c, t, line, len);
}

/* ------------------------------------------------------------------ */
/* hooks                                                               */

static petrel_verdict blocker_header(petrel_session *s, const char *name, const char *value)
{
    const struct blocker_conf *c = petrel_module_data(petrel_session_module(s));
    struct blocker_tx *t = tx_state(s);
    if (t == NULL || t->done)
        return PETREL_CONTINUE;
    /* A single-part message can itself be the attachment; a multipart
     * Content-Type opens the first level. Only the first Content-Type
     * counts for the structure. */
    if (equal_nocase_n(name, strlen(name), "Content-Type") && t->depth > 0)
        return PETREL_CONTINUE;
    examine_header(s, c, t, name, strlen(name), value);
    t->part_is_rfc822 = 0;   /* a top-level message/rfc822 body is not followed */
    return PETREL_CONTINUE;
}

static petrel_verdict blocker_body(petrel_session *s, const char *chunk, size_t len)
{
    const struct blocker_conf *c = petrel_module_data(petrel_session_module(s));
    struct blocker_tx *t = tx_state(s);
    while (t && !t->done && len > 0) {
        const char *nl = memchr(chunk, '\n', len);
        size_t n = nl ? (size_t)(nl - chunk) : len;
        size_t room = MAX_LINE - t->line_len;
        size_t take = n < room ? n : room;
        memcpy(t->line + t->line_len, chunk, take);
        t->line_len += take;
        if (take < n)
            t->line_cut = 1;
        if (nl == NULL)
            break;                          /* the line goes on in the next chunk */
        scan_line(s, c, t, t->line, t->line_len, t->line_cut);
        t->line_len = 0;
        t->line_cut = 0;
        chunk += n + 1;
        len -= n + 1;
    }
    return PETREL_CONTINUE;
}

static petrel_verdict blocker_end_of_message(petrel_session *s)
{
    struct blocker_tx *t = tx_state(s);
    if (t == NULL)
        return PETREL_CONTINUE;
    if (!t->done && t->line_len > 0) {
        /* A last line without its line end. */
        const struct blocker_conf *c = petrel_module_data(petrel_session_module(s));
        scan_line(s, c, t, t->line, t->line_len, t->line_cut);
        t->line_len = 0;
    }
    if (!t->done)
        return PETREL_CONTINUE;
    char text[80];
    size_t n = 0;
    text[0] = '\0';
    append(text, &n, sizeof(text) - 1, "Attachment type .", 17);
    append(text, &n, sizeof(text) - 1, t->blocked_ext, strlen(t->blocked_ext));
    append(text, &n, sizeof(text) - 1, " not allowed", 12);
    petrel_log(s, PETREL_LOG_INFO, "reject: attachment \"%s\": %s", t->blocked_name, text);
    petrel_set_reply(s, 554, "5.7.1", text);
    return PETREL_REJECT;
}

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "attachment_blocker",
    .version = "1.0",
    .description = "refuses messages with attachments of listed file name extensions",
    .params = blocker_params,
    .init = blocker_init,
    .fini = blocker_fini,
    .hooks = {
        .header = blocker_header,
        .body = blocker_body,
        .end_of_message = blocker_end_of_message,
    },
};
