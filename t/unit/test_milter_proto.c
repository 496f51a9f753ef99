/*
 * Unit tests of the milter protocol layer (modules/milter/milter_proto.c):
 * framing, and every reply parser with good and hostile input and the
 * exact error texts. When libmilter's headers are there, our constants are
 * compared with Sendmail's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../tap.h"
#include "milter_proto.h"

#ifdef HAVE_LIBMILTER
#include <mfdef.h>
#endif

static char err[512];

static void test_constants(void)
{
#ifdef HAVE_LIBMILTER
    ok(MILTER_CMD_ABORT == SMFIC_ABORT && MILTER_CMD_BODY == SMFIC_BODY && MILTER_CMD_CONNECT == SMFIC_CONNECT
       && MILTER_CMD_MACRO == SMFIC_MACRO && MILTER_CMD_EOM == SMFIC_BODYEOB && MILTER_CMD_HELO == SMFIC_HELO
       && MILTER_CMD_QUIT_NC == SMFIC_QUIT_NC && MILTER_CMD_HEADER == SMFIC_HEADER && MILTER_CMD_MAIL == SMFIC_MAIL
       && MILTER_CMD_EOH == SMFIC_EOH && MILTER_CMD_OPTNEG == SMFIC_OPTNEG && MILTER_CMD_QUIT == SMFIC_QUIT
       && MILTER_CMD_RCPT == SMFIC_RCPT && MILTER_CMD_DATA == SMFIC_DATA && MILTER_CMD_UNKNOWN == SMFIC_UNKNOWN,
       "command codes are libmilter's");
    ok(MILTER_RSP_ADDRCPT == SMFIR_ADDRCPT && MILTER_RSP_DELRCPT == SMFIR_DELRCPT
       && MILTER_RSP_ADDRCPT_PAR == SMFIR_ADDRCPT_PAR && MILTER_RSP_SHUTDOWN == SMFIR_SHUTDOWN
       && MILTER_RSP_ACCEPT == SMFIR_ACCEPT && MILTER_RSP_REPLBODY == SMFIR_REPLBODY
       && MILTER_RSP_CONTINUE == SMFIR_CONTINUE && MILTER_RSP_DISCARD == SMFIR_DISCARD
       && MILTER_RSP_CHGFROM == SMFIR_CHGFROM && MILTER_RSP_CONN_FAIL == SMFIR_CONN_FAIL
       && MILTER_RSP_ADDHEADER == SMFIR_ADDHEADER && MILTER_RSP_INSHEADER == SMFIR_INSHEADER
       && MILTER_RSP_SETSYMLIST == SMFIR_SETSYMLIST && MILTER_RSP_CHGHEADER == SMFIR_CHGHEADER
       && MILTER_RSP_PROGRESS == SMFIR_PROGRESS && MILTER_RSP_QUARANTINE == SMFIR_QUARANTINE
       && MILTER_RSP_REJECT == SMFIR_REJECT && MILTER_RSP_SKIP == SMFIR_SKIP
       && MILTER_RSP_TEMPFAIL == SMFIR_TEMPFAIL && MILTER_RSP_REPLYCODE == SMFIR_REPLYCODE,
       "reply codes are libmilter's");
    ok(MILTER_P_NOCONNECT == SMFIP_NOCONNECT && MILTER_P_NOHELO == SMFIP_NOHELO && MILTER_P_NOMAIL == SMFIP_NOMAIL
       && MILTER_P_NORCPT == SMFIP_NORCPT && MILTER_P_NOBODY == SMFIP_NOBODY && MILTER_P_NOHDRS == SMFIP_NOHDRS
       && MILTER_P_NOEOH == SMFIP_NOEOH && MILTER_P_NR_HDR == SMFIP_NR_HDR && MILTER_P_NOUNKNOWN == SMFIP_NOUNKNOWN
       && MILTER_P_NODATA == SMFIP_NODATA && MILTER_P_SKIP == SMFIP_SKIP && MILTER_P_RCPT_REJ == SMFIP_RCPT_REJ
       && MILTER_P_NR_CONN == SMFIP_NR_CONN && MILTER_P_NR_HELO == SMFIP_NR_HELO && MILTER_P_NR_MAIL == SMFIP_NR_MAIL
       && MILTER_P_NR_RCPT == SMFIP_NR_RCPT && MILTER_P_NR_DATA == SMFIP_NR_DATA && MILTER_P_NR_UNKN == SMFIP_NR_UNKN
       && MILTER_P_NR_EOH == SMFIP_NR_EOH && MILTER_P_NR_BODY == SMFIP_NR_BODY
       && MILTER_P_HDR_LEADSPC == SMFIP_HDR_LEADSPC && MILTER_P_V2 == SMFI_V2_PROT,
       "protocol flags are libmilter's");
    ok(MILTER_ACT_ALL == SMFI_CURR_ACTS && MILTER_CHUNK_MAX == MILTER_CHUNK_SIZE
       && MILTER_FAMILY_INET == SMFIA_INET && MILTER_FAMILY_INET6 == SMFIA_INET6
       && MILTER_FAMILY_UNIX == SMFIA_UNIX && MILTER_FAMILY_UNKNOWN == SMFIA_UNKNOWN,
       "action flags, chunk size and families are libmilter's");
#else
    ok(1, "libmilter headers not available: constants not compared (install libmilter-dev)");
#endif
}

static void test_config_words(void)
{
    int v;
    uint32_t offer;
    ok(milter_protocol_parse("6", &v, &offer, err, sizeof err) == 0 && v == 6 && offer == MILTER_P_V6,
       "milter_protocol 6");
    ok(milter_protocol_parse("2, no_header_reply", &v, &offer, err, sizeof err) == 0 && v == 2
       && offer == (MILTER_P_V2 | MILTER_P_NR_HDR), "milter_protocol 2 with no_header_reply");
    ok(milter_protocol_parse("4", &v, &offer, err, sizeof err) == 0 && !(offer & MILTER_P_SKIP)
       && (offer & MILTER_P_NODATA), "version 4 offers NODATA, not SKIP");
    ok(milter_protocol_parse("5", &v, &offer, err, sizeof err) < 0, "milter_protocol 5 is refused");
    is_str(err, "bad protocol information: 5 (expected 2, 3, 4 or 6, and optionally no_header_reply)",
           "  with Postfix's words");
    ok(milter_protocol_parse("6 4", &v, &offer, err, sizeof err) < 0, "two versions are refused");
    is_str(err, "bad protocol information: more than one version", "  text");
    ok(milter_protocol_parse("no_header_reply", &v, &offer, err, sizeof err) < 0, "no version");
    is_str(err, "no protocol version information", "  text");

    milter_default_action a;
    ok(milter_default_action_parse("Quarantine", &a) == 0 && a == MILTER_DEFAULT_QUARANTINE,
       "default action words, any case");
    ok(milter_default_action_parse("bounce", &a) < 0, "unknown default action");

    milter_macro_list l;
    ok(milter_macro_list_parse(&l, milter_macro_params[MILTER_MACRO_CONNECT].default_value, err, sizeof err) == 0
       && l.count == 5 && strcmp(l.names[1], "{daemon_name}") == 0 && strcmp(l.names[4], "_") == 0,
       "Postfix's default connect macros parse");
    ok(milter_macro_list_parse(&l, "i,{rcpt_addr}  {x}", err, sizeof err) == 0 && l.count == 3,
       "commas and spaces separate");
    ok(milter_macro_list_parse(&l, "{bad name}", err, sizeof err) < 0, "a brace list with a space");
    ok(milter_macro_list_parse(&l, "ab", err, sizeof err) < 0, "a two-letter name without braces");
    is_str(err, "bad macro name \"ab\" (a single character or {name})", "  text");
    char canon[80];
    milter_macro_canonical("j", canon, sizeof canon);
    is_str(canon, "{j}", "j is looked up as {j}");
    milter_macro_canonical("{auth_authen}", canon, sizeof canon);
    is_str(canon, "{auth_authen}", "braced names stay");
    is_str(milter_macro_params[MILTER_MACRO_MAIL].parameter, "milter_mail_macros", "parameter names are Postfix's");
    is_str(milter_macro_params[MILTER_MACRO_EOM].parameter, "milter_end_of_data_macros", "  end of data");
}

/* Packs a packet into a static buffer. */
static size_t pack(unsigned char *out, int cmd, const void *payload, size_t len)
{
    uint32_t n = (uint32_t)len + 1;
    out[0] = (unsigned char)(n >> 24);
    out[1] = (unsigned char)(n >> 16);
    out[2] = (unsigned char)(n >> 8);
    out[3] = (unsigned char)n;
    out[4] = (unsigned char)cmd;
    if (len)
        memcpy(out + 5, payload, len);
    return len + 5;
}

static void test_framing(void)
{
    milter_buf b;
    memset(&b, 0, sizeof b);
    long start = milter_packet_begin(&b, MILTER_CMD_CONNECT);
    milter_put_str(&b, "host");
    milter_put_byte(&b, '4');
    milter_put_u16(&b, 25);
    milter_put_str(&b, "192.0.2.1");
    milter_packet_end(&b, start);
    static const unsigned char want[] = { 0, 0, 0, 19, 'C', 'h', 'o', 's', 't', 0, '4', 0, 25,
                                          '1', '9', '2', '.', '0', '.', '2', '.', '1', 0 };
    ok(milter_buf_used(&b) == sizeof want && memcmp(milter_buf_head(&b), want, sizeof want) == 0,
       "CONNECT encodes as Sendmail's");
    milter_buf_free(&b);

    /* Three packets, fed one byte at a time and in one piece. */
    unsigned char stream[256];
    size_t n = pack(stream, 'c', NULL, 0);
    n += pack(stream + n, 'h', "X-A\0v\0", 6);
    n += pack(stream + n, 'a', NULL, 0);
    for (int bytewise = 0; bytewise < 2; bytewise++) {
        milter_reader r;
        milter_reader_init(&r, 1024, 0, MILTER_RSP_REPLBODY);
        int got[3] = { 0, 0, 0 };
        size_t frames = 0, hlen = 0;
        for (size_t i = 0; i < n;) {
            size_t take = bytewise ? 1 : n - i;
            const unsigned char *p = stream + i;
            size_t left = take;
            milter_frame f;
            while (milter_reader_next(&r, &p, &left, &f) == 1) {
                if (frames < 3)
                    got[frames] = f.cmd;
                if (f.cmd == 'h')
                    hlen = f.len;
                frames++;
            }
            i += take;
        }
        ok(frames == 3 && got[0] == 'c' && got[1] == 'h' && got[2] == 'a' && hlen == 6 && milter_reader_idle(&r),
           "three packets %s", bytewise ? "byte by byte" : "in one read");
        milter_reader_free(&r);
    }

    milter_reader r;
    milter_frame f;
    const unsigned char *p;
    size_t left;
    static const unsigned char zero[] = { 0, 0, 0, 0, 'c' };
    milter_reader_init(&r, 1024, 0, MILTER_RSP_REPLBODY);
    p = zero;
    left = sizeof zero;
    ok(milter_reader_next(&r, &p, &left, &f) == -1, "length 0 is an error");
    is_str(r.error, "bad packet length: 0", "  text");
    milter_reader_free(&r);

    static const unsigned char huge[] = { 0x7f, 0xff, 0xff, 0xff, 'h' };
    milter_reader_init(&r, 1024, 0, MILTER_RSP_REPLBODY);
    p = huge;
    left = sizeof huge;
    ok(milter_reader_next(&r, &p, &left, &f) == -1, "a packet above the limit is refused before reading it");
    is_str(r.error, "unreasonable packet length: 2147483646 > 1024 (SMFIR_ADDHEADER)", "  text");
    milter_reader_free(&r);

    static const unsigned char neg[] = { 0xff, 0xff, 0xff, 0xff, 'c' };
    milter_reader_init(&r, 1024, 0, MILTER_RSP_REPLBODY);
    p = neg;
    left = sizeof neg;
    ok(milter_reader_next(&r, &p, &left, &f) == -1, "a length with the top bit set is refused");
    is_str(r.error, "bad packet length: 4294967295", "  text");
    milter_reader_free(&r);

    /* REPLBODY is handed out in pieces as it arrives, past max_packet. */
    unsigned char body[3000];
    memset(body, 'x', sizeof body);
    unsigned char pkt[3100];
    size_t plen = pack(pkt, 'b', body, sizeof body);
    milter_reader_init(&r, 100, 1 << 20, MILTER_RSP_REPLBODY);
    size_t total = 0, pieces = 0;
    int first_ok = 0, last_ok = 0;
    for (size_t i = 0; i < plen; i += 1000) {
        p = pkt + i;
        left = plen - i < 1000 ? plen - i : 1000;
        while (milter_reader_next(&r, &p, &left, &f) == 1) {
            if (pieces == 0)
                first_ok = f.first && f.piece;
            total += f.len;
            pieces++;
            last_ok = f.last;
        }
    }
    ok(total == sizeof body && pieces == 4 && first_ok && last_ok, "REPLBODY streams in pieces (%zu pieces)", pieces);
    milter_reader_free(&r);

    milter_reader_init(&r, 100, 1000, MILTER_RSP_REPLBODY);
    p = pkt;
    left = plen;
    ok(milter_reader_next(&r, &p, &left, &f) == -1, "REPLBODY above its own limit");
    is_str(r.error, "unreasonable packet length: 3000 > 1000 (SMFIR_REPLBODY)", "  text");
    milter_reader_free(&r);

    static const unsigned char empty_body[] = { 0, 0, 0, 1, 'b' };
    milter_reader_init(&r, 100, 1000, MILTER_RSP_REPLBODY);
    p = empty_body;
    left = sizeof empty_body;
    ok(milter_reader_next(&r, &p, &left, &f) == 1 && f.piece && f.first && f.last && f.len == 0,
       "an empty REPLBODY is one empty piece");
    milter_reader_free(&r);
}

static int replycode(const char *text, size_t len, milter_smtp_reply *r, milter_buf *scratch)
{
    return milter_parse_replycode((const unsigned char *)text, len, scratch, r, err, sizeof err);
}
#define RC(lit, r, s) replycode(lit, sizeof lit, r, s)   /* with the terminating NUL */

static void test_replycode(void)
{
    milter_buf s;
    memset(&s, 0, sizeof s);
    milter_smtp_reply r;
    ok(RC("554 5.7.1 Spam detected", &r, &s) == 0 && r.code == 554 && strcmp(r.enhanced, "5.7.1") == 0
       && strcmp(r.text, "554 5.7.1 Spam detected") == 0 && strcmp(r.first_text, "Spam detected") == 0,
       "a plain reply");
    ok(RC("451 try later", &r, &s) == 0 && r.code == 451 && r.enhanced[0] == 0
       && strcmp(r.first_text, "try later") == 0, "no enhanced code");
    ok(RC("550-5.7.1 first\r\n550-5.7.1 second\r\n550 5.7.1 third", &r, &s) == 0 && r.lines == 3
       && strcmp(r.text, "550-5.7.1 first\r\n550-5.7.1 second\r\n550 5.7.1 third") == 0
       && strcmp(r.first_text, "first") == 0, "a multi-line reply");
    ok(RC("550 5.7.1 100%% sure, 50% off", &r, &s) == 0 && strcmp(r.text, "550 5.7.1 100% sure, 50 off") == 0,
       "%%%% becomes %%, a lone %% goes (Postfix)");
    ok(RC("550 5.7.1 bell\a and \x80high", &r, &s) == 0 && strcmp(r.text, "550 5.7.1 bell? and ?high") == 0,
       "control and 8-bit characters become ?");
    ok(RC("550 text", &r, &s) == 0, "text without a NUL terminator still parses");
    ok(replycode("550 no nul", 10, &r, &s) == 0 && strcmp(r.text, "550 no nul") == 0, "  without the NUL");

    ok(RC("250 2.0.0 ok", &r, &s) < 0, "a 2xx is refused");
    is_str(err, "line 1 is not \"4xx \" or \"5xx \" followed by text", "  text");
    ok(RC("550-5.7.1 one\r\n550-5.7.1 two", &r, &s) < 0, "a final line with '-'");
    is_str(err, "line 2 is not \"4xx \" or \"5xx \" followed by text", "  text");
    ok(RC("550-5.7.1 one\r\n451 4.7.1 two", &r, &s) < 0, "codes that differ between lines");
    is_str(err, "line 2 has code 451, the first line 550", "  text");
    ok(RC("550 4.7.1 wrong class", &r, &s) < 0, "an enhanced code of another class");
    is_str(err, "line 1: enhanced status code class 4 with reply code 550", "  text");
    ok(RC("550-one\n550 two", &r, &s) < 0, "lines separated by a bare LF");
    is_str(err, "line 1 does not end with CRLF", "  text");
    ok(RC("550 one\r\n", &r, &s) < 0, "a reply ending with CRLF");
    ok(RC("550", &r, &s) < 0, "a code alone");
    ok(RC("", &r, &s) < 0, "empty");
    is_str(err, "empty reply", "  text");
    ok(replycode("550 a\0b", 8, &r, &s) < 0, "a NUL inside");
    is_str(err, "NUL inside the reply", "  text");
    ok(RC("5x0 oops", &r, &s) < 0, "letters in the code");

    char many[40 * 16];
    size_t o = 0;
    for (int i = 0; i < 33; i++)
        o += (size_t)sprintf(many + o, "550%c x%s", i == 32 ? ' ' : '-', i == 32 ? "" : "\r\n");
    ok(replycode(many, o, &r, &s) < 0, "33 lines");
    is_str(err, "more than 32 lines", "  text");

    char longline[2000];
    memcpy(longline, "550 ", 4);
    memset(longline + 4, 'y', sizeof longline - 5);
    longline[sizeof longline - 1] = 0;
    ok(replycode(longline, sizeof longline, &r, &s) == 0 && strlen(r.text) == MILTER_REPLY_LINE_MAX,
       "a long line is cut at %d characters", MILTER_REPLY_LINE_MAX);
    milter_buf_free(&s);
}

static int edit(int cmd, const void *payload, size_t len, int leadspc, milter_edit *e, milter_buf *s)
{
    return milter_parse_edit(cmd, payload, len, leadspc, s, e, err, sizeof err);
}
#define ED(cmd, lit, lead, e, s) edit(cmd, lit, sizeof lit - 1, lead, e, s)

static void test_edits(void)
{
    milter_buf s;
    memset(&s, 0, sizeof s);
    milter_edit e;
    ok(ED(MILTER_RSP_ADDHEADER, "X-Spam-Flag\0YES\0", 0, &e, &s) == 0 && e.type == MILTER_EDIT_ADD_HEADER
       && strcmp(e.name, "X-Spam-Flag") == 0 && strcmp(e.value, " YES") == 0,
       "ADDHEADER gets the customary space (no LEADSPC)");
    ok(ED(MILTER_RSP_ADDHEADER, "X-A\0YES\0", 1, &e, &s) == 0 && strcmp(e.value, "YES") == 0,
       "with LEADSPC the value is kept as sent");
    ok(ED(MILTER_RSP_ADDHEADER, "X-A\0one\n\ttwo\r\n three\0", 0, &e, &s) == 0
       && strcmp(e.value, " one\r\n\ttwo\r\n three") == 0, "folded lines get CRLF");
    ok(ED(MILTER_RSP_ADDHEADER, "X-A\0value\n\0", 0, &e, &s) == 0 && strcmp(e.value, " value") == 0,
       "a trailing line end is dropped");
    ok(ED(MILTER_RSP_ADDHEADER, "X-A\0ok\nInjected: yes\0", 0, &e, &s) < 0, "a header injection is refused");
    is_str(err, "SMFIR_ADDHEADER: value of X-A: a continuation line that does not start with white space", "  text");
    ok(ED(MILTER_RSP_ADDHEADER, "X-A\0a\n\nbody\0", 0, &e, &s) < 0, "an empty line inside the value");
    ok(ED(MILTER_RSP_ADDHEADER, "X-A\0a\rb\0", 0, &e, &s) < 0, "a lone CR");
    is_str(err, "SMFIR_ADDHEADER: value of X-A: a carriage return that does not end a line", "  text");
    ok(ED(MILTER_RSP_ADDHEADER, "X A\0v\0", 0, &e, &s) < 0, "a space in the name");
    is_str(err, "SMFIR_ADDHEADER: header name \"X A\" has a character that is not allowed (0x20)", "  text");
    ok(ED(MILTER_RSP_ADDHEADER, "X:A\0v\0", 0, &e, &s) < 0, "a colon in the name");
    ok(ED(MILTER_RSP_ADDHEADER, "\0v\0", 0, &e, &s) < 0, "an empty name");
    is_str(err, "SMFIR_ADDHEADER: empty header name", "  text");
    ok(ED(MILTER_RSP_ADDHEADER, "X-A\0v", 0, &e, &s) < 0, "a value without its NUL");
    is_str(err, "SMFIR_ADDHEADER: header name or value without its terminating NUL", "  text");
    ok(ED(MILTER_RSP_ADDHEADER, "X-A\0v\0junk", 0, &e, &s) < 0, "bytes after the value");
    is_str(err, "SMFIR_ADDHEADER: 4 bytes after the header value", "  text");

    ok(ED(MILTER_RSP_INSHEADER, "\0\0\0\0X-First\0v\0", 0, &e, &s) == 0 && e.type == MILTER_EDIT_INSERT_HEADER
       && e.index == 0 && strcmp(e.name, "X-First") == 0, "INSHEADER at index 0");
    ok(ED(MILTER_RSP_INSHEADER, "\0\0\0", 0, &e, &s) < 0, "INSHEADER too short for its index");
    is_str(err, "SMFIR_INSHEADER: packet too short for the header index", "  text");
    ok(ED(MILTER_RSP_CHGHEADER, "\0\0\0\2Subject\0new\0", 0, &e, &s) == 0 && e.type == MILTER_EDIT_CHANGE_HEADER
       && e.index == 2 && strcmp(e.value, " new") == 0, "CHGHEADER of the second Subject");
    ok(ED(MILTER_RSP_CHGHEADER, "\0\0\0\0Subject\0\0", 0, &e, &s) == 0 && e.type == MILTER_EDIT_DELETE_HEADER
       && e.index == 1 && e.value == NULL, "CHGHEADER with an empty value deletes; index 0 means 1 (Sendmail)");

    ok(ED(MILTER_RSP_CHGFROM, "<new@example.com>\0", 0, &e, &s) == 0 && e.type == MILTER_EDIT_CHANGE_FROM
       && strcmp(e.address, "new@example.com") == 0 && strcmp(e.args, "") == 0, "CHGFROM without arguments");
    ok(ED(MILTER_RSP_CHGFROM, "<>\0RET=HDRS ENVID=x\0", 0, &e, &s) == 0 && strcmp(e.address, "") == 0
       && strcmp(e.args, "RET=HDRS ENVID=x") == 0, "CHGFROM to <> with ESMTP arguments");
    ok(ED(MILTER_RSP_ADDRCPT, "extra@example.org\0", 0, &e, &s) == 0 && e.type == MILTER_EDIT_ADD_RCPT
       && strcmp(e.address, "extra@example.org") == 0, "ADDRCPT without brackets");
    ok(ED(MILTER_RSP_ADDRCPT_PAR, "<p@example.org>\0NOTIFY=NEVER\0", 0, &e, &s) == 0
       && strcmp(e.args, "NOTIFY=NEVER") == 0, "ADDRCPT_PAR");
    ok(ED(MILTER_RSP_ADDRCPT, "<a@b>\0NOTIFY=NEVER\0", 0, &e, &s) < 0, "ADDRCPT with arguments it cannot have");
    is_str(err, "SMFIR_ADDRCPT: 13 bytes after the last field", "  text");
    ok(ED(MILTER_RSP_DELRCPT, "<old@example.org>\0", 0, &e, &s) == 0 && e.type == MILTER_EDIT_DELETE_RCPT
       && strcmp(e.address, "old@example.org") == 0, "DELRCPT");
    ok(ED(MILTER_RSP_ADDRCPT, "<a@b>\r\nRCPT TO:<c@d>\0", 0, &e, &s) < 0, "an address with a line end");
    is_str(err, "SMFIR_ADDRCPT: the address has a control character (0x0d)", "  text");
    ok(ED(MILTER_RSP_CHGFROM, "<a@b>\0RET=\x01\0", 0, &e, &s) < 0, "arguments with a control character");

    char reason[300];
    memset(reason, 'r', 150);
    memcpy(reason + 150, "\x01\0", 2);
    ok(edit(MILTER_RSP_QUARANTINE, reason, 152, 0, &e, &s) == 0 && e.type == MILTER_EDIT_QUARANTINE
       && strlen(e.reason) == 100, "a quarantine reason is kept to 100 characters (Postfix)");
    ok(ED(MILTER_RSP_QUARANTINE, "virus\tfound\0", 0, &e, &s) == 0 && strcmp(e.reason, "virus?found") == 0,
       "  and made printable");
    ok(ED(MILTER_RSP_ACCEPT, "", 0, &e, &s) < 0, "ACCEPT is not a modification");
    milter_buf_free(&s);
}

static void test_optneg(void)
{
    milter_buf s;
    memset(&s, 0, sizeof s);
    milter_optneg o;
    static const unsigned char plain[] = { 0, 0, 0, 6, 0, 0, 0, 0x11, 0, 0x10, 0, 0x7f };
    ok(milter_parse_optneg(plain, sizeof plain, &s, &o, err, sizeof err) == 0 && o.version == 6
       && o.actions == 0x11 && o.steps == 0x10007f, "OPTNEG reply");
    ok(milter_parse_optneg(plain, 11, &s, &o, err, sizeof err) < 0, "too short");
    is_str(err, "option negotiation reply too short: 11 bytes (need 12)", "  text");
    unsigned char lists[128];
    memcpy(lists, plain, 12);
    size_t n = 12;
    static const char mail_list[] = "\0\0\0\2{mail_addr} i";   /* stage 2: MAIL, with the literal's NUL */
    static const char odd_list[] = "\0\0\0\x09x";               /* an unknown stage */
    memcpy(lists + n, mail_list, sizeof mail_list);
    n += sizeof mail_list;
    memcpy(lists + n, odd_list, sizeof odd_list);
    n += sizeof odd_list;
    ok(milter_parse_optneg(lists, n, &s, &o, err, sizeof err) == 0 && o.symlist[MILTER_MACRO_MAIL] != NULL
       && strcmp(o.symlist[MILTER_MACRO_MAIL], "{mail_addr} i") == 0 && o.unknown_stages == 1
       && o.symlist[MILTER_MACRO_CONNECT] == NULL, "SETSYMLIST lists");
    ok(milter_parse_optneg(lists, n - 1, &s, &o, err, sizeof err) < 0, "a list without its NUL");
    is_str(err, "macro list without its terminating NUL in option negotiation reply", "  text");
    ok(milter_parse_optneg(lists, 14, &s, &o, err, sizeof err) < 0, "a truncated stage number");
    is_str(err, "truncated macro list in option negotiation reply", "  text");
    memcpy(lists + 12, "\0\0\0\1bad name!", 14);
    ok(milter_parse_optneg(lists, 26, &s, &o, err, sizeof err) < 0, "a list with bad names");
    is_str(err, "macro list for stage 1: bad macro name \"bad\" (a single character or {name})", "  text");
    milter_buf_free(&s);
}

static void test_body(void)
{
    milter_body_norm n;
    unsigned char out[64];
    char all[64];
    size_t o = 0;
    milter_body_norm_init(&n);
    o += milter_body_normalize(&n, (const unsigned char *)"a\nb\r", 4, out + o);
    o += milter_body_normalize(&n, (const unsigned char *)"\nc\rd", 4, out + o);
    o += milter_body_norm_finish(&n, out + o);
    memcpy(all, out, o);
    all[o] = 0;
    is_str(all, "a\r\nb\r\nc\rd\r\n", "LF -> CRLF, a CR split from its LF, a lone CR kept, a final CRLF added");
    ok(n.bytes == o, "bytes counted");

    milter_body_norm_init(&n);
    o = milter_body_normalize(&n, (const unsigned char *)"x\r\n", 3, out);
    o += milter_body_norm_finish(&n, out + o);
    ok(o == 3, "a body that ends with CRLF gets nothing more");

    milter_body_norm_init(&n);
    o = milter_body_normalize(&n, (const unsigned char *)"x\r", 2, out);
    o += milter_body_norm_finish(&n, out + o);
    memcpy(all, out, o);
    all[o] = 0;
    is_str(all, "x\r\n", "a CR at the very end ends the line");

    milter_buf b;
    memset(&b, 0, sizeof b);
    milter_put_header_value(&b, " one\r\n\ttwo", 0);
    ok(milter_buf_used(&b) == 9 && memcmp(milter_buf_head(&b), "one\n\ttwo", 9) == 0,
       "header values go out without the first space and with LF between lines");
    milter_buf_reset(&b);
    milter_put_header_value(&b, " v", 1);
    ok(milter_buf_used(&b) == 3 && memcmp(milter_buf_head(&b), " v", 3) == 0, "  with LEADSPC the space stays");
    milter_buf_reset(&b);
    milter_put_header_value(&b, "\tv", 0);
    ok(milter_buf_used(&b) == 3 && memcmp(milter_buf_head(&b), "\tv", 3) == 0, "  a tab is not eaten");
    milter_buf_free(&b);
}

int main(void)
{
    test_constants();
    test_config_words();
    test_framing();
    test_replycode();
    test_edits();
    test_optneg();
    test_body();
    return done_testing();
}
