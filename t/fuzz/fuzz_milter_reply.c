/*
 * Fuzz target for the milter reply parsers (modules/milter/milter_proto.c):
 * the packet reader, fed in pieces, and every parser a milter's answer goes
 * through (OPTNEG with its macro lists, REPLYCODE, the modifications,
 * QUARANTINE, replacement-body line ends). Byte 0 picks the piece size and
 * the limits, byte 1 whether SMFIP_HDR_LEADSPC was negotiated; the rest is
 * what the milter sent.
 *
 * Besides crashes and sanitizer reports it checks what the parsers promise:
 * a reply is 4xx/5xx with the same code on every line, printable, lines of
 * at most MILTER_REPLY_LINE_MAX characters separated by CRLF; a header name
 * is printable without ':'; a header value never starts a new line without
 * white space after it (no header injection); addresses and arguments have
 * no control characters; a normalised body has no bare LF and no bytes were
 * lost; streamed pieces add up to the packet's length.
 *
 * make check builds it with t/fuzz/replay_main.c and replays
 * t/fuzz/corpus/milter_reply; `make fuzz` runs it with libFuzzer (doc/testing.md).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "milter_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond)
{
    if (!cond)
        abort();
}

static void check_reply(const milter_smtp_reply *r)
{
    check(r->code >= 400 && r->code <= 599);
    check(r->lines >= 1 && r->lines <= MILTER_REPLY_LINES_MAX);
    const char *p = r->text;
    size_t lines = 0;
    for (;;) {
        const char *eol = strstr(p, "\r\n");
        size_t n = eol ? (size_t)(eol - p) : strlen(p);
        check(n >= 4 && n <= MILTER_REPLY_LINE_MAX);
        check((p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0') == r->code);
        check(p[3] == (eol ? '-' : ' '));
        for (size_t i = 0; i < n; i++)
            check((unsigned char)p[i] >= 32 && (unsigned char)p[i] < 127);
        lines++;
        if (eol == NULL)
            break;
        p = eol + 2;
    }
    check(lines == r->lines);
    if (r->enhanced[0])
        check(r->enhanced[0] == '0' + r->code / 100);
    for (const char *t = r->first_text; *t; t++)
        check((unsigned char)*t >= 32 && (unsigned char)*t < 127);
}

static void check_no_controls(const char *s)
{
    for (; *s; s++)
        check((unsigned char)*s >= 32 && (unsigned char)*s != 127);
}

static void check_edit(const milter_edit *e, int leadspc)
{
    switch (e->type) {
    case MILTER_EDIT_ADD_HEADER:
    case MILTER_EDIT_INSERT_HEADER:
    case MILTER_EDIT_CHANGE_HEADER:
        check(e->value != NULL);
        if (!leadspc && e->value[0])
            check(e->value[0] == ' ');
        for (const char *v = e->value; *v; v++) {
            if (*v == '\r') {
                check(v[1] == '\n' && (v[2] == ' ' || v[2] == '\t'));
            } else if (*v == '\n') {
                check(v > e->value && v[-1] == '\r');
            }
        }
        /* FALLTHROUGH */
    case MILTER_EDIT_DELETE_HEADER:
        check(e->name != NULL && e->name[0] != 0);
        for (const char *n = e->name; *n; n++)
            check((unsigned char)*n > 32 && (unsigned char)*n < 127 && *n != ':');
        if (e->type == MILTER_EDIT_CHANGE_HEADER || e->type == MILTER_EDIT_DELETE_HEADER)
            check(e->index >= 1);
        break;
    case MILTER_EDIT_CHANGE_FROM:
    case MILTER_EDIT_ADD_RCPT:
    case MILTER_EDIT_DELETE_RCPT:
        check(e->address != NULL && e->args != NULL);
        check_no_controls(e->address);
        check_no_controls(e->args);
        break;
    case MILTER_EDIT_QUARANTINE:
        check(strlen(e->reason) <= 100);
        for (const char *r = e->reason; *r; r++)
            check((unsigned char)*r >= 32 && (unsigned char)*r < 127);
        break;
    default:
        check(0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2 || size > (1u << 20))
        return 0;
    size_t piece = (size_t)(data[0] & 0x3f) + 1;
    size_t max_packet = data[0] & 0x40 ? 64 : MILTER_REPLY_MAX_DEFAULT;
    size_t max_stream = data[0] & 0x80 ? 100 : 0;
    int leadspc = data[1] & 1;
    data += 2;
    size -= 2;

    milter_reader r;
    milter_reader_init(&r, max_packet, max_stream, MILTER_RSP_REPLBODY);
    milter_buf scratch;
    memset(&scratch, 0, sizeof scratch);
    milter_body_norm norm;
    milter_body_norm_init(&norm);
    unsigned char *out = malloc(2 * piece + 2);
    size_t streamed = 0;
    char err[256];

    for (size_t off = 0; off < size;) {
        const unsigned char *p = data + off;
        size_t left = size - off < piece ? size - off : piece;
        off += left;
        milter_frame f;
        int rc;
        while ((rc = milter_reader_next(&r, &p, &left, &f)) == 1) {
            check(f.len <= f.total);
            if (f.piece) {
                check(f.cmd == MILTER_RSP_REPLBODY);
                check(max_stream == 0 || f.total <= max_stream);
                if (f.first) {
                    milter_body_norm_init(&norm);
                    streamed = 0;
                }
                streamed += f.len;
                size_t n = milter_body_normalize(&norm, f.data, f.len, out);
                check(n <= 2 * f.len + 1);
                for (size_t i = 0; i < n; i++)
                    if (out[i] == '\n')
                        check(i > 0 && out[i - 1] == '\r');
                if (f.last) {
                    check(streamed == f.total);
                    unsigned char tail[2];
                    size_t t = milter_body_norm_finish(&norm, tail);
                    check(t == 0 || (t == 2 && tail[0] == '\r' && tail[1] == '\n'));
                }
                continue;
            }
            check(f.len == f.total && f.len <= max_packet);
            switch (f.cmd) {
            case MILTER_CMD_OPTNEG: {
                milter_optneg o;
                if (milter_parse_optneg(f.data, f.len, &scratch, &o, err, sizeof err) == 0) {
                    for (int i = 0; i < MILTER_SYMLIST_STAGES; i++)
                        if (o.symlist[i] != NULL) {
                            milter_macro_list l;
                            check(milter_macro_list_parse(&l, o.symlist[i], err, sizeof err) == 0);
                            for (size_t k = 0; k < l.count; k++) {
                                char canon[MILTER_MACRO_NAME_MAX + 4];
                                milter_macro_canonical(l.names[k], canon, sizeof canon);
                                check(canon[0] == '{' && canon[strlen(canon) - 1] == '}');
                            }
                        }
                } else
                    check(err[0] != 0);
                break;
            }
            case MILTER_RSP_REPLYCODE: {
                milter_smtp_reply rep;
                if (milter_parse_replycode(f.data, f.len, &scratch, &rep, err, sizeof err) == 0)
                    check_reply(&rep);
                else
                    check(err[0] != 0);
                break;
            }
            case MILTER_RSP_ADDHEADER:
            case MILTER_RSP_INSHEADER:
            case MILTER_RSP_CHGHEADER:
            case MILTER_RSP_CHGFROM:
            case MILTER_RSP_ADDRCPT:
            case MILTER_RSP_ADDRCPT_PAR:
            case MILTER_RSP_DELRCPT:
            case MILTER_RSP_QUARANTINE: {
                milter_edit e;
                if (milter_parse_edit(f.cmd, f.data, f.len, leadspc, &scratch, &e, err, sizeof err) == 0)
                    check_edit(&e, leadspc);
                else
                    check(err[0] != 0);
                break;
            }
            default:
                /* Replies without payload: the connection checks f.len == 0. */
                check(milter_reply_name(f.cmd) != NULL);
                break;
            }
        }
        if (rc < 0) {
            check(r.error[0] != 0);
            break;
        }
    }
    free(out);
    milter_buf_free(&scratch);
    milter_reader_free(&r);
    return 0;
}
