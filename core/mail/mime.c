/*
 * The MIME structure of a message (see mime.h), after Postfix's
 * mime_state.c: the same states (primary headers, multipart headers,
 * nested headers, body), the same reading of Content-Type and
 * Content-Transfer-Encoding (an RFC 822 tokenizer that skips comments and
 * unquotes strings), the same boundary stack, which takes every boundary=
 * of a multipart header (several at one level are illegal and would hide
 * content otherwise) and matches "--boundary" lines at any depth, popping
 * the inner ones, and the same recovery from garbage: a line that is
 * neither a header nor empty where headers were expected starts the body.
 *
 * One difference: where the primary headers end with a line that is not
 * empty, Postfix inserts an empty line into the stored message; Petrel
 * leaves the message as it came (the line is body either way).
 *
 * Input lines are assembled in one buffer of line_limit bytes; a longer
 * line becomes records of line_limit bytes, "continued" but the last, as
 * Postfix's smtpd writes them (a boundary is never looked for at the start
 * of a record that continues a line, a header grows by its records).
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/buf.h"
#include "lib/xalloc.h"
#include "mail/mime.h"

enum { ST_PRIMARY = MIME_PRIMARY, ST_MULTIPART = MIME_MULTIPART, ST_NESTED = MIME_NESTED, ST_BODY };
enum { CT_OTHER, CT_TEXT, CT_MESSAGE, CT_MULTIPART };
enum { STP_OTHER, STP_PLAIN, STP_RFC822, STP_PARTIAL, STP_EXTERN_BODY, STP_GLOBAL };
/* Encodings and their domains share codes, so "encoding != domain" says
 * a transformation was given where only a domain is allowed. */
enum { ENC_QP = 1, ENC_BASE64 = 2, ENC_7BIT = 7, ENC_8BIT = 8, ENC_BINARY = 9 };

static const struct {
    const char *name;
    int encoding, domain;
} encodings[] = {
    { "7bit", ENC_7BIT, ENC_7BIT },
    { "8bit", ENC_8BIT, ENC_8BIT },
    { "binary", ENC_BINARY, ENC_BINARY },
    { "base64", ENC_BASE64, ENC_7BIT },
    { "quoted-printable", ENC_QP, ENC_7BIT },
};

struct boundary {
    int def_ctype, def_stype;   /* the default type of its body parts */
    char *text;
    size_t len;
};

#define MAX_TOKENS 3
enum { TOK_TOKEN = 256, TOK_QSTRING = 257 };
struct token {
    int type;                   /* TOK_*, or the special character itself */
    size_t offset;              /* of its NUL-terminated text in the token buffer */
};

struct mime_parser {
    struct mime_limits lim;
    unsigned options;
    struct mime_callbacks cb;
    void *ctx;

    struct buf line;                  /* the physical line being assembled */
    unsigned long long line_start;    /* its input offset */
    unsigned long long input_pos;     /* bytes fed so far */

    int state, ctype, stype, encoding, domain;
    int prev_cont;                    /* the last record continued a line */
    struct buf hdr;                   /* the header being collected */
    size_t hdr_name_len;
    unsigned long long hdr_input_start;
    int primary_done;
    struct boundary *stack;           /* stack[depth - 1] is the innermost */
    int depth, stack_cap;
    int nesting_level;
    unsigned errs;
    unsigned long long head_offset, body_offset;

    struct buf tokbuf;
    struct token tok[MAX_TOKENS];
};

/* ------------------------------------------------------------------ */
/* helpers                                                             */

static int is_space_tab(int c)
{
    return c == ' ' || c == '\t';
}

static int is_lwsp(int c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static int is_cntrl(int c)
{
    return (c >= 0 && c < 32) || c == 127;
}

size_t mime_header_name_len(const char *text, size_t len)
{
    /* Printable ASCII up to ':', white space allowed only between the name
     * and the colon (RFC 822's obsolete "Name :"). */
    size_t name = 0;
    int in_space = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == ':')
            return name;
        if (c == ' ' || c == '\t') {
            if (name == 0)
                return 0;
            in_space = 1;
            continue;
        }
        if (c == 0 || c >= 128 || is_cntrl(c) || in_space)
            return 0;
        name++;
    }
    return 0;
}

static const char *const mime_headers[] = {
    "Content-Description", "Content-Disposition", "Content-ID", "Content-Transfer-Encoding", "Content-Type",
    "MIME-Version",
};

int mime_is_mime_header(const char *name, size_t name_len)
{
    for (size_t i = 0; i < sizeof(mime_headers) / sizeof(mime_headers[0]); i++)
        if (strlen(mime_headers[i]) == name_len && strncasecmp(name, mime_headers[i], name_len) == 0)
            return 1;
    return 0;
}

static int name_is(const struct mime_parser *p, const char *name)
{
    return strlen(name) == p->hdr_name_len && strncasecmp(p->hdr.data, name, p->hdr_name_len) == 0;
}

static void report(struct mime_parser *p, unsigned err, const char *text, size_t len)
{
    if (p->errs & err)
        return;
    p->errs |= err;
    if (p->cb.error)
        p->cb.error(p->ctx, err, text, len);
}

static void set_state(struct mime_parser *p, int state)
{
    p->state = state;
    if (state == ST_BODY)
        p->body_offset = 0;
    else
        p->head_offset = 0;
}

static void set_mime_state(struct mime_parser *p, int state, int ctype, int stype, int encoding, int domain)
{
    set_state(p, state);
    p->ctype = ctype;
    p->stype = stype;
    p->encoding = encoding;
    p->domain = domain;
}

/* ------------------------------------------------------------------ */
/* the boundary stack                                                  */

static void push(struct mime_parser *p, int def_ctype, int def_stype, const char *boundary)
{
    if (p->depth == p->stack_cap) {
        p->stack_cap = p->stack_cap ? p->stack_cap * 2 : 4;
        p->stack = xrealloc(p->stack, (size_t)p->stack_cap * sizeof(*p->stack));
    }
    struct boundary *b = &p->stack[p->depth++];
    p->nesting_level++;
    b->def_ctype = def_ctype;
    b->def_stype = def_stype;
    b->len = strlen(boundary);
    if (b->len > p->lim.boundary_limit)
        b->len = p->lim.boundary_limit;   /* a cut boundary still matches its lines: they are cut too */
    b->text = xmalloc(b->len + 1);
    memcpy(b->text, boundary, b->len);
    b->text[b->len] = '\0';
}

static void pop(struct mime_parser *p)
{
    if (p->depth == 0)
        return;
    p->depth--;
    p->nesting_level--;
    free(p->stack[p->depth].text);
}

/* ------------------------------------------------------------------ */
/* header tokens (Postfix's header_token: RFC 822 lexing)             */

/* Reads the next item of a header value at *cursor: up to MAX_TOKENS
 * tokens (more are skipped), until terminator (when not 0). Returns the
 * number of tokens, or -1 when nothing is left. */
static int next_tokens(struct mime_parser *p, const char **cursor, const char *specials, int terminator)
{
    const char *cp = *cursor;
    int count = 0;
    int ch = 0;
    buf_reset(&p->tokbuf);
    while ((ch = (unsigned char)*cp) != 0 && (terminator != 0 || count < MAX_TOKENS)) {
        cp++;
        if (is_lwsp(ch))
            continue;
        if (ch == terminator)
            break;
        if (ch == '(') {
            int level = 1;
            while ((ch = (unsigned char)*cp) != 0) {
                cp++;
                if (ch == '(') {
                    level++;
                } else if (ch == ')') {
                    if (--level == 0)
                        break;
                } else if (ch == '\\') {
                    if (*cp == 0)
                        break;
                    cp++;
                }
            }
            continue;
        }
        if (ch == '"') {
            if (count < MAX_TOKENS) {
                p->tok[count].offset = p->tokbuf.len;
                p->tok[count].type = TOK_QSTRING;
            }
            while ((ch = (unsigned char)*cp) != 0) {
                cp++;
                if (ch == '"')
                    break;
                if (ch == '\n') {
                    /* unfold: white space before the line break goes */
                    if (count < MAX_TOKENS) {
                        size_t len = p->tokbuf.len;
                        while (len > p->tok[count].offset && is_lwsp((unsigned char)p->tokbuf.data[len - 1]))
                            len--;
                        p->tokbuf.len = len;
                    }
                    continue;
                }
                if (ch == '\\') {
                    if ((ch = (unsigned char)*cp) == 0)
                        break;
                    cp++;
                }
                if (count < MAX_TOKENS)
                    buf_putc(&p->tokbuf, (char)ch);
            }
            if (count < MAX_TOKENS) {
                buf_putc(&p->tokbuf, '\0');
                count++;
            }
            continue;
        }
        if (strchr(specials, ch) || is_cntrl(ch)) {
            if (count < MAX_TOKENS) {
                p->tok[count].offset = p->tokbuf.len;
                p->tok[count].type = ch;
                buf_putc(&p->tokbuf, (char)ch);
                buf_putc(&p->tokbuf, '\0');
                count++;
            }
            continue;
        }
        if (count < MAX_TOKENS) {
            p->tok[count].offset = p->tokbuf.len;
            p->tok[count].type = TOK_TOKEN;
            buf_putc(&p->tokbuf, (char)ch);
        }
        while ((ch = (unsigned char)*cp) != 0 && !is_lwsp(ch) && !is_cntrl(ch) && !strchr(specials, ch)) {
            cp++;
            if (count < MAX_TOKENS)
                buf_putc(&p->tokbuf, (char)ch);
        }
        if (count < MAX_TOKENS) {
            buf_putc(&p->tokbuf, '\0');
            count++;
        }
    }
    if (count == 0 && ch == 0)
        return -1;
    *cursor = cp;
    return count;
}

static const char *tok_text(const struct mime_parser *p, int i)
{
    return p->tokbuf.data + p->tok[i].offset;
}

static int tok_is(const struct mime_parser *p, int i, const char *word)
{
    return p->tok[i].type == TOK_TOKEN && strcasecmp(tok_text(p, i), word) == 0;
}

#define RFC2045_TSPECIALS "()<>@,;:\\\"/[]?="
#define RFC822_SPECIALS "()<>@,;:\\\".[]"

static void content_type(struct mime_parser *p)
{
    const char *cp = p->hdr.data + p->hdr_name_len + 1;
    int n = next_tokens(p, &cp, RFC2045_TSPECIALS, ';');
    if (n <= 0)
        return;
    if (tok_is(p, 0, "text")) {
        p->ctype = CT_TEXT;
        p->stype = n >= 3 && p->tok[1].type == '/' && tok_is(p, 2, "plain") ? STP_PLAIN : STP_OTHER;
        return;
    }
    if (tok_is(p, 0, "message")) {
        p->ctype = CT_MESSAGE;
        p->stype = STP_OTHER;
        if (n >= 3 && p->tok[1].type == '/') {
            if (tok_is(p, 2, "rfc822"))
                p->stype = STP_RFC822;
            else if (tok_is(p, 2, "partial"))
                p->stype = STP_PARTIAL;
            else if (tok_is(p, 2, "external-body"))
                p->stype = STP_EXTERN_BODY;
            else if (tok_is(p, 2, "global"))
                p->stype = STP_GLOBAL;
        }
        return;
    }
    if (tok_is(p, 0, "multipart")) {
        p->ctype = CT_MULTIPART;
        int def_ctype = CT_TEXT, def_stype = STP_PLAIN;
        if (n >= 3 && p->tok[1].type == '/' && tok_is(p, 2, "digest")) {
            def_ctype = CT_MESSAGE;
            def_stype = STP_RFC822;
        }
        /* Every boundary= is taken (see the top of the file), whatever the
         * value's type. */
        while ((n = next_tokens(p, &cp, RFC2045_TSPECIALS, ';')) >= 0) {
            if (n >= 3 && tok_is(p, 0, "boundary") && p->tok[1].type == '=') {
                if (p->nesting_level > p->lim.nesting_limit) {
                    if (p->options & MIME_OPT_REPORT_NESTING)
                        report(p, MIME_ERR_NESTING, p->hdr.data, p->hdr.len);
                } else {
                    push(p, def_ctype, def_stype, tok_text(p, 2));
                }
            }
        }
        return;
    }
    p->ctype = CT_OTHER;
}

static void content_encoding(struct mime_parser *p)
{
    const char *cp = p->hdr.data + p->hdr_name_len + 1;
    if (next_tokens(p, &cp, RFC822_SPECIALS, 0) > 0 && p->tok[0].type == TOK_TOKEN) {
        for (size_t i = 0; i < sizeof(encodings) / sizeof(encodings[0]); i++) {
            if (strcasecmp(tok_text(p, 0), encodings[i].name) == 0) {
                p->encoding = encodings[i].encoding;
                p->domain = encodings[i].domain;
                break;
            }
        }
    }
}

static const char *encoding_name(int encoding)
{
    for (size_t i = 0; i < sizeof(encodings) / sizeof(encodings[0]); i++)
        if (encodings[i].encoding == encoding)
            return encodings[i].name;
    return "unknown";
}

/* ------------------------------------------------------------------ */
/* records                                                             */

static void flush_header(struct mime_parser *p)
{
    if (p->hdr.len == 0)
        return;
    if (!(p->options & MIME_OPT_DISABLE_MIME)) {
        if (name_is(p, "Content-Type"))
            content_type(p);
        else if (name_is(p, "Content-Transfer-Encoding"))
            content_encoding(p);
    }
    if ((p->options & MIME_OPT_REPORT_8BIT_IN_HEADER) && !(p->errs & MIME_ERR_8BIT_IN_HEADER)) {
        for (size_t i = 0; i < p->hdr.len; i++) {
            if ((unsigned char)p->hdr.data[i] & 0x80) {
                report(p, MIME_ERR_8BIT_IN_HEADER, p->hdr.data, p->hdr.len);
                break;
            }
        }
    }
    struct mime_header h = {
        .cls = (enum mime_class)p->state,
        .is_mime = mime_is_mime_header(p->hdr.data, p->hdr_name_len),
        .text = p->hdr.data,
        .len = p->hdr.len,
        .name_len = p->hdr_name_len,
        .offset = p->head_offset,
        .input_start = p->hdr_input_start,
    };
    if (p->cb.header)
        p->cb.header(p->ctx, &h);
    p->head_offset += p->hdr.len + 1;
    buf_reset(&p->hdr);
    p->hdr_name_len = 0;
}

/* Grows the header being collected, within header_limit. */
static void header_grow(struct mime_parser *p, const char *sep, const char *text, size_t len)
{
    if (p->hdr.len < p->lim.header_limit) {
        buf_puts(&p->hdr, sep);
        buf_append(&p->hdr, text, len);
    } else if (p->options & MIME_OPT_REPORT_TRUNC_HEADER) {
        report(p, MIME_ERR_TRUNC_HEADER, p->hdr.data, p->hdr.len);
    }
}

static void body_record(struct mime_parser *p, const char *text, size_t len, int cont, unsigned long long start)
{
    if ((p->options & MIME_OPT_REPORT_8BIT_IN_7BIT_BODY) && p->encoding == ENC_7BIT &&
        !(p->errs & MIME_ERR_8BIT_IN_7BIT_BODY)) {
        for (size_t i = 0; i < len; i++) {
            if ((unsigned char)text[i] & 0x80) {
                report(p, MIME_ERR_8BIT_IN_7BIT_BODY, text, len);
                break;
            }
        }
    }
    if (p->depth > 0 && !p->prev_cont && len > 2 && text[0] == '-' && text[1] == '-') {
        for (int i = p->depth - 1; i >= 0; i--) {
            struct boundary *b = &p->stack[i];
            if (len >= 2 + b->len && memcmp(text + 2, b->text, b->len) == 0) {
                while (p->depth - 1 > i)
                    pop(p);
                if (len >= 4 + b->len && memcmp(text + 2 + b->len, "--", 2) == 0) {
                    pop(p);
                    set_mime_state(p, ST_BODY, CT_OTHER, STP_OTHER, ENC_7BIT, ENC_7BIT);
                } else {
                    set_mime_state(p, ST_MULTIPART, b->def_ctype, b->def_stype, ENC_7BIT, ENC_7BIT);
                }
                break;
            }
        }
    }
    if (p->cb.body)
        p->cb.body(p->ctx, text, len, cont, p->body_offset, start);
    p->body_offset += len + 1;
}

/* One record: text without its line end; cont when the line goes on;
 * start is its input offset and next the offset after its line end. */
static void record(struct mime_parser *p, const char *text, size_t len, int cont, unsigned long long start,
                   unsigned long long next)
{
    if (p->state != ST_BODY) {
        if (p->hdr.len > 0) {
            if (p->prev_cont) {
                header_grow(p, "", text, len);
                p->prev_cont = cont;
                return;
            }
            if (len > 0 && is_space_tab((unsigned char)text[0])) {
                header_grow(p, "\n", text, len);
                p->prev_cont = cont;
                return;
            }
            flush_header(p);
        }
        size_t name_len = mime_header_name_len(text, len);
        if (name_len > 0) {
            /* "Name :" is kept as "Name:" */
            size_t rest = name_len;
            while (rest < len && is_space_tab((unsigned char)text[rest]))
                rest++;
            buf_append(&p->hdr, text, name_len);
            buf_append(&p->hdr, text + rest, len - rest);
            p->hdr_name_len = name_len;
            p->hdr_input_start = start;
            p->prev_cont = cont;
            return;
        }
        /* The end of a block of headers. */
        if (p->state == ST_PRIMARY) {
            if (len > 0 && (p->options & MIME_OPT_REPORT_NON_EMPTY_EOH))
                report(p, MIME_ERR_NON_EMPTY_EOH, text, len);
            p->primary_done = 1;
            if (p->cb.header_end)
                p->cb.header_end(p->ctx, start, len == 0 ? next : start, len == 0);
        }
        if (p->options & MIME_OPT_REPORT_ENCODING_DOMAIN) {
            if (p->ctype == CT_MESSAGE) {
                if (p->stype == STP_PARTIAL || p->stype == STP_EXTERN_BODY) {
                    if (p->domain != ENC_7BIT) {
                        const char *name = encoding_name(p->encoding);
                        report(p, MIME_ERR_ENCODING_DOMAIN, name, strlen(name));
                    }
                } else if (p->stype == STP_RFC822 && p->encoding != p->domain) {
                    const char *name = encoding_name(p->encoding);
                    report(p, MIME_ERR_ENCODING_DOMAIN, name, strlen(name));
                }
            } else if (p->ctype == CT_MULTIPART && p->encoding != p->domain) {
                const char *name = encoding_name(p->encoding);
                report(p, MIME_ERR_ENCODING_DOMAIN, name, strlen(name));
            }
        }
        if (len == 0) {
            p->body_offset = 0;
            if (p->ctype == CT_MESSAGE && (p->stype == STP_RFC822 || p->stype == STP_GLOBAL))
                set_mime_state(p, ST_NESTED, CT_TEXT, STP_PLAIN, ENC_7BIT, ENC_7BIT);
            else if (p->ctype == CT_MULTIPART)
                set_mime_state(p, ST_BODY, CT_OTHER, STP_OTHER, ENC_7BIT, ENC_7BIT);
            else
                set_state(p, ST_BODY);
        } else {
            /* Not a header, not empty: the body starts here. */
            set_state(p, ST_BODY);
        }
        /* The line that ended the headers is body (of the outer part when
         * nested headers begin next). */
    }
    body_record(p, text, len, cont, start);
    p->prev_cont = cont;
}

/* ------------------------------------------------------------------ */
/* input                                                               */

struct mime_parser *mime_parser_new(const struct mime_limits *limits, unsigned options,
                                    const struct mime_callbacks *cb, void *ctx)
{
    struct mime_parser *p = xcalloc(1, sizeof(*p));
    p->lim = *limits;
    if (p->lim.header_limit == 0)
        p->lim.header_limit = 102400;
    if (p->lim.line_limit == 0)
        p->lim.line_limit = 2048;
    if (p->lim.nesting_limit <= 0)
        p->lim.nesting_limit = 100;
    if (p->lim.boundary_limit == 0)
        p->lim.boundary_limit = 2048;
    p->options = options;
    p->cb = *cb;
    p->ctx = ctx;
    p->nesting_level = -1;
    set_mime_state(p, ST_PRIMARY, CT_TEXT, STP_PLAIN, ENC_7BIT, ENC_7BIT);
    return p;
}

void mime_parser_feed(struct mime_parser *p, const char *data, size_t len)
{
    size_t i = 0;
    while (i < len) {
        if (p->line.len == 0)
            p->line_start = p->input_pos + i;
        if (p->line.len == p->lim.line_limit) {
            /* A full buffer: the next byte decides whether the line ends
             * here or goes on in another record, so that how the input was
             * split never changes the records. */
            if (data[i] == '\n') {
                i++;
                size_t text = p->line.len;
                if (text > 0 && p->line.data[text - 1] == '\r')
                    text--;
                record(p, p->line.data, text, 0, p->line_start, p->input_pos + i);
            } else {
                record(p, p->line.data, p->line.len, 1, p->line_start, p->input_pos + i);
            }
            buf_reset(&p->line);
            continue;
        }
        const char *lf = memchr(data + i, '\n', len - i);
        size_t avail = lf ? (size_t)(lf - (data + i)) : len - i;
        size_t room = p->lim.line_limit - p->line.len;
        size_t take = avail < room ? avail : room;
        buf_append(&p->line, data + i, take);
        i += take;
        if (p->line.len == p->lim.line_limit || !lf)
            continue;
        i++;   /* the LF */
        size_t text = p->line.len;
        if (text > 0 && p->line.data[text - 1] == '\r')
            text--;
        record(p, p->line.data, text, 0, p->line_start, p->input_pos + i);
        buf_reset(&p->line);
    }
    p->input_pos += len;
}

void mime_parser_end(struct mime_parser *p)
{
    if (p->line.len > 0) {
        record(p, p->line.data, p->line.len, 1, p->line_start, p->input_pos);
        buf_reset(&p->line);
    }
    if (p->state != ST_BODY) {
        flush_header(p);
        if (p->state == ST_PRIMARY && !p->primary_done) {
            p->primary_done = 1;
            if (p->cb.header_end)
                p->cb.header_end(p->ctx, p->input_pos, p->input_pos, 0);
        }
        set_state(p, ST_BODY);
    }
}

const char *mime_parser_current_line(const struct mime_parser *p, size_t *len)
{
    *len = p->line.len;
    return p->line.data ? p->line.data : "";
}

unsigned mime_parser_errors(const struct mime_parser *p)
{
    return p->errs;
}

void mime_parser_free(struct mime_parser *p)
{
    if (p == NULL)
        return;
    while (p->depth > 0)
        pop(p);
    free(p->stack);
    buf_free(&p->line);
    buf_free(&p->hdr);
    buf_free(&p->tokbuf);
    free(p);
}

const char *mime_error_text(unsigned errs, const char **dsn)
{
    /* Most serious first: only one is reported. */
    static const struct {
        unsigned err;
        const char *text;
    } details[] = {
        { MIME_ERR_NESTING, "MIME nesting exceeds safety limit" },
        { MIME_ERR_TRUNC_HEADER, "message header length exceeds safety limit" },
        { MIME_ERR_8BIT_IN_HEADER, "improper use of 8-bit data in message header" },
        { MIME_ERR_8BIT_IN_7BIT_BODY, "improper use of 8-bit data in message body" },
        { MIME_ERR_ENCODING_DOMAIN, "invalid message/* or multipart/* encoding domain" },
        { MIME_ERR_NON_EMPTY_EOH, "primary header was terminated with non-empty line" },
    };
    if (dsn)
        *dsn = "5.6.0";
    for (size_t i = 0; i < sizeof(details) / sizeof(details[0]); i++)
        if (errs & details[i].err)
            return details[i].text;
    return "no MIME error";
}
