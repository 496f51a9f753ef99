/*
 * The milter protocol's wire format and reply parsers (see milter_proto.h).
 *
 * Every parser works on a payload whose length it is told, never on a C
 * string it hopes is terminated: a string field is accepted only when its
 * NUL lies inside the payload, and bytes left after the last field are an
 * error, as in Postfix's milter8.c. Strings handed out are copies in the
 * caller's scratch buffer, so they can be normalised (line ends, '%',
 * control characters) without touching the packet.
 */
#include "milter_proto.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* buffers                                                             */

int milter_buf_reserve(milter_buf *b, size_t extra)
{
    if (b->off > 0 && b->off == b->len) {
        b->off = b->len = 0;
    }
    if (b->cap - b->len >= extra)
        return 0;
    /* Reuse the consumed front before growing. */
    if (b->off > 0) {
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->cap - b->len >= extra)
            return 0;
    }
    if (extra > SIZE_MAX / 2 - b->len)
        return -1;
    size_t need = b->len + extra;
    if (b->limit && need > b->limit)
        return -1;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    if (b->limit && cap > b->limit)
        cap = b->limit;
    unsigned char *p = realloc(b->data, cap);
    if (p == NULL)
        return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

int milter_buf_append(milter_buf *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    if (milter_buf_reserve(b, n) < 0)
        return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

void milter_buf_consume(milter_buf *b, size_t n)
{
    if (n >= b->len - b->off)
        b->off = b->len = 0;
    else
        b->off += n;
}

void milter_buf_reset(milter_buf *b)
{
    b->off = b->len = 0;
}

void milter_buf_free(milter_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->off = b->len = b->cap = 0;
}

/* ------------------------------------------------------------------ */
/* encoding                                                            */

long milter_packet_begin(milter_buf *b, int cmd)
{
    if (milter_buf_reserve(b, 5) < 0)
        return -1;
    long start = (long)b->len;
    memset(b->data + b->len, 0, 4);
    b->data[b->len + 4] = (unsigned char)cmd;
    b->len += 5;
    return start;
}

int milter_put_byte(milter_buf *b, int byte)
{
    unsigned char c = (unsigned char)byte;
    return milter_buf_append(b, &c, 1);
}

int milter_put_u16(milter_buf *b, unsigned value)
{
    unsigned char v[2] = { (unsigned char)(value >> 8), (unsigned char)value };
    return milter_buf_append(b, v, 2);
}

int milter_put_u32(milter_buf *b, uint32_t value)
{
    unsigned char v[4] = { (unsigned char)(value >> 24), (unsigned char)(value >> 16),
                           (unsigned char)(value >> 8), (unsigned char)value };
    return milter_buf_append(b, v, 4);
}

int milter_put_str(milter_buf *b, const char *s)
{
    return milter_buf_append(b, s, strlen(s) + 1);
}

int milter_put_bytes(milter_buf *b, const void *p, size_t n)
{
    return milter_buf_append(b, p, n);
}

int milter_packet_end(milter_buf *b, long start)
{
    if (start < 0 || (size_t)start + 5 > b->len)
        return -1;
    size_t n = b->len - (size_t)start - 4;   /* command byte + payload */
    if (n > 0x7fffffffu)
        return -1;
    unsigned char *p = b->data + start;
    p[0] = (unsigned char)(n >> 24);
    p[1] = (unsigned char)(n >> 16);
    p[2] = (unsigned char)(n >> 8);
    p[3] = (unsigned char)n;
    return 0;
}

int milter_put_header_value(milter_buf *b, const char *value, int leadspc)
{
    const char *p = value;
    if (!leadspc && *p == ' ')
        p++;
    for (; *p; p++) {
        if (p[0] == '\r' && p[1] == '\n')
            continue;    /* CRLF -> LF: the LF follows */
        if (milter_put_byte(b, *p) < 0)
            return -1;
    }
    return milter_put_byte(b, 0);
}

/* ------------------------------------------------------------------ */
/* the reader                                                          */

void milter_reader_init(milter_reader *r, size_t max_packet, size_t max_stream, int stream_cmd)
{
    memset(r, 0, sizeof *r);
    r->max_packet = max_packet ? max_packet : MILTER_REPLY_MAX_DEFAULT;
    r->max_stream = max_stream;
    r->stream_cmd = stream_cmd;
    r->payload.limit = r->max_packet;
}

void milter_reader_free(milter_reader *r)
{
    milter_buf_free(&r->payload);
}

int milter_reader_idle(const milter_reader *r)
{
    return r->head_len == 0 && r->remaining == 0 && !r->streaming;
}

int milter_reader_next(milter_reader *r, const unsigned char **in, size_t *inlen, milter_frame *f)
{
    memset(f, 0, sizeof *f);
    if (r->error[0])
        return -1;
    for (;;) {
        if (r->head_len < 5) {
            if (*inlen == 0)
                return 0;
            size_t take = 5 - r->head_len;
            if (take > *inlen)
                take = *inlen;
            memcpy(r->head + r->head_len, *in, take);
            r->head_len += take;
            *in += take;
            *inlen -= take;
            if (r->head_len < 5)
                return 0;
            uint32_t n = ((uint32_t)r->head[0] << 24) | ((uint32_t)r->head[1] << 16)
                         | ((uint32_t)r->head[2] << 8) | r->head[3];
            if (n == 0 || n > 0x7fffffffu) {
                snprintf(r->error, sizeof r->error, "bad packet length: %lu", (unsigned long)n);
                return -1;
            }
            r->cmd = r->head[4];
            r->total = r->remaining = n - 1;
            r->streaming = r->stream_cmd != 0 && r->cmd == r->stream_cmd;
            r->started = 0;
            size_t limit = r->streaming ? r->max_stream : r->max_packet;
            if (limit && r->total > limit) {
                snprintf(r->error, sizeof r->error,
                         "unreasonable packet length: %zu > %zu (%s)", r->total, limit,
                         milter_reply_name(r->cmd));
                return -1;
            }
            milter_buf_reset(&r->payload);
        }
        f->cmd = r->cmd;
        f->total = r->total;
        if (r->streaming) {
            /* Hand out what is here; an empty payload gives one empty piece. */
            size_t take = r->remaining < *inlen ? r->remaining : *inlen;
            if (take == 0 && r->remaining > 0)
                return 0;
            f->piece = 1;
            f->data = *in;
            f->len = take;
            f->first = !r->started;
            r->started = 1;
            *in += take;
            *inlen -= take;
            r->remaining -= take;
            f->last = r->remaining == 0;
            if (f->last) {
                r->head_len = 0;
                r->streaming = 0;
            }
            return 1;
        }
        if (milter_buf_used(&r->payload) == 0 && *inlen >= r->remaining) {
            /* The whole payload is in the input: no copy. */
            f->data = *in;
            f->len = r->remaining;
            *in += r->remaining;
            *inlen -= r->remaining;
            r->remaining = 0;
            r->head_len = 0;
            return 1;
        }
        size_t take = r->remaining < *inlen ? r->remaining : *inlen;
        if (milter_buf_append(&r->payload, *in, take) < 0) {
            snprintf(r->error, sizeof r->error, "out of memory for a %zu-byte packet", r->total);
            return -1;
        }
        *in += take;
        *inlen -= take;
        r->remaining -= take;
        if (r->remaining > 0)
            return 0;
        f->data = milter_buf_head(&r->payload);
        f->len = milter_buf_used(&r->payload);
        r->head_len = 0;
        return 1;
    }
}

/* ------------------------------------------------------------------ */
/* field extraction                                                    */

typedef struct cursor {
    const unsigned char *p;
    size_t left;
} cursor;

static int take_u32(cursor *c, uint32_t *v)
{
    if (c->left < 4)
        return -1;
    *v = ((uint32_t)c->p[0] << 24) | ((uint32_t)c->p[1] << 16) | ((uint32_t)c->p[2] << 8) | c->p[3];
    c->p += 4;
    c->left -= 4;
    return 0;
}

/* A NUL-terminated string inside the payload; *s points into it. */
static int take_str(cursor *c, const char **s, size_t *n)
{
    const unsigned char *nul = c->left ? memchr(c->p, 0, c->left) : NULL;
    if (nul == NULL)
        return -1;
    *s = (const char *)c->p;
    *n = (size_t)(nul - c->p);
    c->p = nul + 1;
    c->left -= *n + 1;
    return 0;
}

/* Room in scratch for the normalised copies of one reply's strings. */
static char *scratch_alloc(milter_buf *scratch, size_t n)
{
    if (milter_buf_reserve(scratch, n) < 0)
        return NULL;
    char *p = (char *)scratch->data + scratch->len;
    scratch->len += n;
    return p;
}

/* Scratch may move when it grows: strings are placed by offset and turned
 * into pointers at the end. */
#define SCRATCH_PTR(scratch, off) ((const char *)(scratch)->data + (off))

int milter_parse_optneg(const unsigned char *data, size_t len, milter_buf *scratch,
                        milter_optneg *o, char *err, size_t errlen)
{
    memset(o, 0, sizeof *o);
    milter_buf_reset(scratch);
    cursor c = { data, len };
    if (take_u32(&c, &o->version) < 0 || take_u32(&c, &o->actions) < 0 || take_u32(&c, &o->steps) < 0)
        return milter_fail(err, errlen, "option negotiation reply too short: %zu bytes (need 12)", len);
    long offsets[MILTER_SYMLIST_STAGES];
    for (int i = 0; i < MILTER_SYMLIST_STAGES; i++)
        offsets[i] = -1;
    while (c.left > 0) {
        uint32_t stage;
        const char *s;
        size_t n;
        if (take_u32(&c, &stage) < 0)
            return milter_fail(err, errlen, "truncated macro list in option negotiation reply");
        if (take_str(&c, &s, &n) < 0)
            return milter_fail(err, errlen, "macro list without its terminating NUL in option negotiation reply");
        if (stage >= MILTER_SYMLIST_STAGES) {
            o->unknown_stages++;
            continue;
        }
        milter_macro_list check;
        char why[128];
        if (milter_macro_list_parse(&check, s, why, sizeof why) < 0)
            return milter_fail(err, errlen, "macro list for stage %u: %s", (unsigned)stage, why);
        long off = (long)scratch->len;
        char *copy = scratch_alloc(scratch, n + 1);
        if (copy == NULL)
            return milter_fail(err, errlen, "out of memory");
        memcpy(copy, s, n);
        copy[n] = 0;
        offsets[stage] = off;
    }
    for (int i = 0; i < MILTER_SYMLIST_STAGES; i++)
        if (offsets[i] >= 0)
            o->symlist[i] = SCRATCH_PTR(scratch, offsets[i]);
    return 0;
}

/* ------------------------------------------------------------------ */
/* REPLYCODE                                                           */

/* Length of an enhanced status code "c.d.d" (c = class, 1-3 digits each
 * after the first) at p, followed by a space or the end; 0 if none. */
static size_t enhanced_code_len(const char *p, size_t n)
{
    size_t i = 0;
    if (i >= n || !(p[i] == '2' || p[i] == '4' || p[i] == '5'))
        return 0;
    i++;
    for (int part = 0; part < 2; part++) {
        if (i >= n || p[i] != '.')
            return 0;
        i++;
        size_t digits = 0;
        while (i < n && isdigit((unsigned char)p[i]) && digits < 4) {
            i++;
            digits++;
        }
        if (digits == 0 || digits > 3)
            return 0;
    }
    if (i < n && p[i] != ' ')
        return 0;
    return i;
}

int milter_parse_replycode(const unsigned char *data, size_t len, milter_buf *scratch,
                           milter_smtp_reply *r, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    milter_buf_reset(scratch);
    /* One terminal NUL belongs to the protocol, not to the reply. */
    if (len > 0 && data[len - 1] == 0)
        len--;
    if (len == 0)
        return milter_fail(err, errlen, "empty reply");
    if (memchr(data, 0, len) != NULL)
        return milter_fail(err, errlen, "NUL inside the reply");
    const char *text = (const char *)data;

    /* Pass 1: structure, exactly as given. */
    struct { size_t start, len; } lines[MILTER_REPLY_LINES_MAX];
    size_t nlines = 0, pos = 0;
    int code = 0;
    for (;;) {
        size_t line_len = 0;
        while (pos + line_len < len && text[pos + line_len] != '\r' && text[pos + line_len] != '\n')
            line_len++;
        int final = pos + line_len == len;
        const char *l = text + pos;
        if (nlines == MILTER_REPLY_LINES_MAX)
            return milter_fail(err, errlen, "more than %d lines", MILTER_REPLY_LINES_MAX);
        if (line_len < 4 || (l[0] != '4' && l[0] != '5') || !isdigit((unsigned char)l[1])
            || !isdigit((unsigned char)l[2]) || l[3] != (final ? ' ' : '-'))
            return milter_fail(err, errlen, "line %zu is not \"4xx%c\" or \"5xx%c\" followed by text", nlines + 1,
                        final ? ' ' : '-', final ? ' ' : '-');
        int line_code = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
        if (nlines == 0)
            code = line_code;
        else if (line_code != code)
            return milter_fail(err, errlen, "line %zu has code %d, the first line %d", nlines + 1, line_code, code);
        /* As Postfix: text that starts with a digit starts with the
         * reply's class (an enhanced code such as 5.7.1 for a 550). */
        if (line_len > 4 && isdigit((unsigned char)l[4]) && l[4] != l[0])
            return milter_fail(err, errlen, "line %zu: enhanced status code class %c with reply code %d",
                        nlines + 1, l[4], code);
        lines[nlines].start = pos;
        lines[nlines].len = line_len;
        nlines++;
        if (final)
            break;
        if (pos + line_len + 2 > len || text[pos + line_len] != '\r' || text[pos + line_len + 1] != '\n')
            return milter_fail(err, errlen, "line %zu does not end with CRLF", nlines);
        pos += line_len + 2;
    }

    /* Pass 2: the safe copy. */
    char *out = scratch_alloc(scratch, len + 1);
    if (out == NULL)
        return milter_fail(err, errlen, "out of memory");
    size_t o = 0;
    size_t first_text = 0;
    for (size_t i = 0; i < nlines; i++) {
        const char *l = text + lines[i].start;
        size_t line_start = o;
        for (size_t k = 0; k < lines[i].len; k++) {
            unsigned char ch = (unsigned char)l[k];
            if (ch == '%') {
                /* "%%" -> "%"; a lone '%' is dropped (Sendmail formats replies). */
                if (k + 1 < lines[i].len && l[k + 1] == '%')
                    k++;
                else
                    continue;
            } else if (ch < 32 || ch >= 127)
                ch = '?';
            if (o - line_start < MILTER_REPLY_LINE_MAX)
                out[o++] = (char)ch;
        }
        if (i == 0) {
            size_t t = 4;
            size_t e = lines[0].len > 4 && isdigit((unsigned char)l[4])
                           ? enhanced_code_len(l + 4, lines[0].len - 4) : 0;
            if (e > 0) {
                memcpy(r->enhanced, l + 4, e);
                r->enhanced[e] = 0;
                t += e;
                if (t < lines[0].len && l[t] == ' ')
                    t++;
            }
            first_text = t;   /* an offset into the copy: its prefix has no '%' */
        }
        if (i + 1 < nlines) {
            out[o++] = '\r';
            out[o++] = '\n';
        }
    }
    out[o] = 0;
    r->code = code;
    r->lines = nlines;
    r->text = out;
    r->first_text = out + (first_text < o ? first_text : o);
    /* The first line's text ends at CRLF in the copy; hand out a separate copy. */
    const char *eol = strstr(r->first_text, "\r\n");
    if (eol != NULL) {
        size_t ft_off = (size_t)(r->first_text - (const char *)scratch->data);
        size_t n = (size_t)(eol - r->first_text);
        size_t out_off = (size_t)(out - (const char *)scratch->data);
        char *ft = scratch_alloc(scratch, n + 1);
        if (ft == NULL)
            return milter_fail(err, errlen, "out of memory");
        memcpy(ft, scratch->data + ft_off, n);
        ft[n] = 0;
        r->text = (const char *)scratch->data + out_off;
        r->first_text = ft;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* edits                                                               */

/* Header field names: printable ASCII except ':' (RFC 5322 ftext). */
static int check_header_name(const char *s, size_t n, char *err, size_t errlen)
{
    if (n == 0)
        return milter_fail(err, errlen, "empty header name");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 32 || c >= 127 || c == ':')
            return milter_fail(err, errlen, "header name \"%.*s\" has a character that is not allowed (0x%02x)",
                        (int)(n > 60 ? 60 : n), s, c);
    }
    return 0;
}

/* A header value from a milter, as the text after the colon: LF or CRLF
 * between lines becomes CRLF; every continuation line must start with white
 * space (otherwise it would be a header of its own); trailing line ends are
 * dropped; a CR that is not part of a line end is refused. */
static long header_value_copy(milter_buf *scratch, const char *s, size_t n, int leadspc, char *err,
                              size_t errlen)
{
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        n--;
    long off = (long)scratch->len;
    char *out = scratch_alloc(scratch, 2 * n + 2);
    if (out == NULL)
        return milter_fail(err, errlen, "out of memory");
    size_t o = 0;
    if (!leadspc && n > 0)
        out[o++] = ' ';
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '\r' && i + 1 < n && s[i + 1] == '\n')
            continue;
        if (ch == '\r')
            return milter_fail(err, errlen, "a carriage return that does not end a line");
        if (ch == '\n') {
            if (i + 1 >= n || (s[i + 1] != ' ' && s[i + 1] != '\t'))
                return milter_fail(err, errlen, "a continuation line that does not start with white space");
            out[o++] = '\r';
            out[o++] = '\n';
            continue;
        }
        out[o++] = ch;
    }
    out[o] = 0;
    scratch->len = (size_t)off + o + 1;
    return off;
}

/* Envelope addresses and ESMTP arguments: no control characters. One pair
 * of <> around an address is removed. */
static long address_copy(milter_buf *scratch, const char *s, size_t n, int strip_brackets, const char *what,
                         char *err, size_t errlen)
{
    while (n > 0 && (s[0] == ' ' || s[0] == '\t')) {
        s++;
        n--;
    }
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    if (strip_brackets && n >= 2 && s[0] == '<' && s[n - 1] == '>') {
        s++;
        n -= 2;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 32 || c == 127)
            return milter_fail(err, errlen, "%s has a control character (0x%02x)", what, c);
    }
    long off = (long)scratch->len;
    char *out = scratch_alloc(scratch, n + 1);
    if (out == NULL)
        return milter_fail(err, errlen, "out of memory");
    memcpy(out, s, n);
    out[n] = 0;
    return off;
}

int milter_parse_edit(int cmd, const unsigned char *data, size_t len, int leadspc, milter_buf *scratch,
                      milter_edit *e, char *err, size_t errlen)
{
    memset(e, 0, sizeof *e);
    milter_buf_reset(scratch);
    cursor c = { data, len };
    const char *s1 = NULL, *s2 = NULL;
    size_t n1 = 0, n2 = 0;
    long o1 = -1, o2 = -1;
    char why[160];
    const char *name = milter_reply_name(cmd);

    switch (cmd) {
    case MILTER_RSP_ADDHEADER:
    case MILTER_RSP_INSHEADER:
    case MILTER_RSP_CHGHEADER:
        if (cmd != MILTER_RSP_ADDHEADER && take_u32(&c, &e->index) < 0)
            return milter_fail(err, errlen, "%s: packet too short for the header index", name);
        if (take_str(&c, &s1, &n1) < 0 || take_str(&c, &s2, &n2) < 0)
            return milter_fail(err, errlen, "%s: header name or value without its terminating NUL", name);
        if (c.left != 0)
            return milter_fail(err, errlen, "%s: %zu bytes after the header value", name, c.left);
        if (check_header_name(s1, n1, why, sizeof why) < 0)
            return milter_fail(err, errlen, "%s: %s", name, why);
        if ((o1 = (long)scratch->len, scratch_alloc(scratch, n1 + 1)) == NULL)
            return milter_fail(err, errlen, "out of memory");
        memcpy(scratch->data + o1, s1, n1);
        scratch->data[o1 + (long)n1] = 0;
        if (cmd == MILTER_RSP_CHGHEADER && n2 == 0) {
            e->type = MILTER_EDIT_DELETE_HEADER;
        } else {
            if ((o2 = header_value_copy(scratch, s2, n2, leadspc, why, sizeof why)) < 0)
                return milter_fail(err, errlen, "%s: value of %.*s: %s", name, (int)(n1 > 60 ? 60 : n1), s1, why);
            e->type = cmd == MILTER_RSP_ADDHEADER ? MILTER_EDIT_ADD_HEADER
                    : cmd == MILTER_RSP_INSHEADER ? MILTER_EDIT_INSERT_HEADER : MILTER_EDIT_CHANGE_HEADER;
        }
        /* Sendmail: index 0 in a change means the first occurrence. */
        if (cmd == MILTER_RSP_CHGHEADER && e->index == 0)
            e->index = 1;
        e->name = SCRATCH_PTR(scratch, o1);
        e->value = o2 >= 0 ? SCRATCH_PTR(scratch, o2) : NULL;
        return 0;

    case MILTER_RSP_CHGFROM:
    case MILTER_RSP_ADDRCPT:
    case MILTER_RSP_ADDRCPT_PAR:
    case MILTER_RSP_DELRCPT:
        if (take_str(&c, &s1, &n1) < 0)
            return milter_fail(err, errlen, "%s: address without its terminating NUL", name);
        if ((cmd == MILTER_RSP_CHGFROM || cmd == MILTER_RSP_ADDRCPT_PAR) && c.left > 0
            && take_str(&c, &s2, &n2) < 0)
            return milter_fail(err, errlen, "%s: ESMTP arguments without their terminating NUL", name);
        if (c.left != 0)
            return milter_fail(err, errlen, "%s: %zu bytes after the last field", name, c.left);
        if ((o1 = address_copy(scratch, s1, n1, 1, "the address", why, sizeof why)) < 0)
            return milter_fail(err, errlen, "%s: %s", name, why);
        if ((o2 = address_copy(scratch, s2 ? s2 : "", n2, 0, "the ESMTP arguments", why, sizeof why)) < 0)
            return milter_fail(err, errlen, "%s: %s", name, why);
        e->type = cmd == MILTER_RSP_CHGFROM ? MILTER_EDIT_CHANGE_FROM
                : cmd == MILTER_RSP_DELRCPT ? MILTER_EDIT_DELETE_RCPT : MILTER_EDIT_ADD_RCPT;
        e->address = SCRATCH_PTR(scratch, o1);
        e->args = SCRATCH_PTR(scratch, o2);
        return 0;

    case MILTER_RSP_QUARANTINE: {
        /* As Postfix: the reason is kept to 100 characters; ours are made
         * printable too, since they end up in logs and queue records. */
        if (take_str(&c, &s1, &n1) < 0)
            return milter_fail(err, errlen, "%s: reason without its terminating NUL", name);
        if (c.left != 0)
            return milter_fail(err, errlen, "%s: %zu bytes after the reason", name, c.left);
        size_t keep = n1 > 100 ? 100 : n1;
        o1 = (long)scratch->len;
        char *out = scratch_alloc(scratch, keep + 1);
        if (out == NULL)
            return milter_fail(err, errlen, "out of memory");
        for (size_t i = 0; i < keep; i++) {
            unsigned char ch = (unsigned char)s1[i];
            out[i] = (char)(ch < 32 || ch >= 127 ? '?' : ch);
        }
        out[keep] = 0;
        e->type = MILTER_EDIT_QUARANTINE;
        e->reason = SCRATCH_PTR(scratch, o1);
        return 0;
    }
    default:
        return milter_fail(err, errlen, "%s is not a modification", name);
    }
}

/* ------------------------------------------------------------------ */
/* replacement bodies                                                  */

void milter_body_norm_init(milter_body_norm *n)
{
    memset(n, 0, sizeof *n);
    n->at_line_start = 1;
}

size_t milter_body_normalize(milter_body_norm *n, const unsigned char *in, size_t len, unsigned char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = in[i];
        if (n->pending_cr) {
            n->pending_cr = 0;
            if (ch == '\n') {
                out[o++] = '\r';
                out[o++] = '\n';
                n->at_line_start = 1;
                continue;
            }
            out[o++] = '\r';    /* a lone CR stays */
            n->at_line_start = 0;
        }
        if (ch == '\r') {
            n->pending_cr = 1;
            continue;
        }
        if (ch == '\n') {
            out[o++] = '\r';
            out[o++] = '\n';
            n->at_line_start = 1;
            continue;
        }
        out[o++] = ch;
        n->at_line_start = 0;
    }
    n->bytes += o;
    return o;
}

size_t milter_body_norm_finish(milter_body_norm *n, unsigned char *out)
{
    size_t o = 0;
    if (n->pending_cr || !n->at_line_start) {
        /* A CR at the very end, or a last line without its line end. */
        n->pending_cr = 0;
        out[o++] = '\r';
        out[o++] = '\n';
        n->at_line_start = 1;
    }
    n->bytes += o;
    return o;
}
