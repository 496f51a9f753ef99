/*
 * The Sendmail milter protocol, MTA side, versions 2 to 6: the wire
 * constants, packet encoding, an incremental packet reader, and the parsing
 * and validation of everything a milter can answer. Pure functions over byte
 * buffers (no I/O, no global state), so the fuzz target drives exactly the
 * code the connection uses; milter_conn.h is the state machine on top.
 * The names and configuration words (macro stages and lists,
 * milter_protocol, milter_default_action, command names for logs) are in
 * milter_names.h, which this header includes.
 *
 * A packet is a 4-byte network-order length (the command byte plus the
 * payload), one command byte, and the payload. Strings in payloads end with
 * a NUL. Constants carry our own names (the values are Sendmail's, from
 * libmilter's mfdef.h; a unit test compares them) because a module includes
 * nothing but standard headers and <petrel/...>.
 *
 * Everything a milter sends is bounded and checked before anyone sees it:
 * a packet longer than the reader's limit, a string without its NUL, bytes
 * left over, a reply code that is not 4xx/5xx, a header name with a colon
 * or a value whose continuation line does not start with white space (that
 * would inject a header), an address with control characters: each is an
 * error with a text that says what was wrong, never an overread.
 */
#ifndef PETREL_MILTER_PROTO_H
#define PETREL_MILTER_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "milter_names.h"

/* ------------------------------------------------------------------ */
/* wire constants (values from Sendmail's libmilter/mfdef.h)           */

/* Commands, MTA to milter. */
#define MILTER_CMD_ABORT    'A'
#define MILTER_CMD_BODY     'B'
#define MILTER_CMD_CONNECT  'C'
#define MILTER_CMD_MACRO    'D'
#define MILTER_CMD_EOM      'E'   /* end of body (SMFIC_BODYEOB) */
#define MILTER_CMD_HELO     'H'
#define MILTER_CMD_QUIT_NC  'K'   /* quit, a new connection follows on this socket */
#define MILTER_CMD_HEADER   'L'
#define MILTER_CMD_MAIL     'M'
#define MILTER_CMD_EOH      'N'
#define MILTER_CMD_OPTNEG   'O'
#define MILTER_CMD_QUIT     'Q'
#define MILTER_CMD_RCPT     'R'
#define MILTER_CMD_DATA     'T'
#define MILTER_CMD_UNKNOWN  'U'

/* Replies, milter to MTA. */
#define MILTER_RSP_ADDRCPT     '+'
#define MILTER_RSP_DELRCPT     '-'
#define MILTER_RSP_ADDRCPT_PAR '2'
#define MILTER_RSP_SHUTDOWN    '4'
#define MILTER_RSP_ACCEPT      'a'
#define MILTER_RSP_REPLBODY    'b'
#define MILTER_RSP_CONTINUE    'c'
#define MILTER_RSP_DISCARD     'd'
#define MILTER_RSP_CHGFROM     'e'
#define MILTER_RSP_CONN_FAIL   'f'
#define MILTER_RSP_ADDHEADER   'h'
#define MILTER_RSP_INSHEADER   'i'
#define MILTER_RSP_SETSYMLIST  'l'
#define MILTER_RSP_CHGHEADER   'm'
#define MILTER_RSP_PROGRESS    'p'
#define MILTER_RSP_QUARANTINE  'q'
#define MILTER_RSP_REJECT      'r'
#define MILTER_RSP_SKIP        's'
#define MILTER_RSP_TEMPFAIL    't'
#define MILTER_RSP_REPLYCODE   'y'

/* Actions the milter may request (SMFIF_*): the second word of OPTNEG. */
#define MILTER_ACT_ADDHDRS     0x001u
#define MILTER_ACT_CHGBODY     0x002u
#define MILTER_ACT_ADDRCPT     0x004u
#define MILTER_ACT_DELRCPT     0x008u
#define MILTER_ACT_CHGHDRS     0x010u
#define MILTER_ACT_QUARANTINE  0x020u
#define MILTER_ACT_CHGFROM     0x040u
#define MILTER_ACT_ADDRCPT_PAR 0x080u
#define MILTER_ACT_SETSYMLIST  0x100u
#define MILTER_ACT_ALL         0x1ffu   /* every action we can carry out */

/* Protocol steps (SMFIP_*): the third word of OPTNEG. NO* = don't send that
 * event; NR_* = the milter will not reply to that event. */
#define MILTER_P_NOCONNECT   0x00000001u
#define MILTER_P_NOHELO      0x00000002u
#define MILTER_P_NOMAIL      0x00000004u
#define MILTER_P_NORCPT      0x00000008u
#define MILTER_P_NOBODY      0x00000010u
#define MILTER_P_NOHDRS      0x00000020u
#define MILTER_P_NOEOH       0x00000040u
#define MILTER_P_NR_HDR      0x00000080u   /* also "no_header_reply" in milter_protocol */
#define MILTER_P_NOUNKNOWN   0x00000100u
#define MILTER_P_NODATA      0x00000200u
#define MILTER_P_SKIP        0x00000400u   /* the MTA understands SKIP */
#define MILTER_P_RCPT_REJ    0x00000800u   /* the milter wants rejected recipients too */
#define MILTER_P_NR_CONN     0x00001000u
#define MILTER_P_NR_HELO     0x00002000u
#define MILTER_P_NR_MAIL     0x00004000u
#define MILTER_P_NR_RCPT     0x00008000u
#define MILTER_P_NR_DATA     0x00010000u
#define MILTER_P_NR_UNKN     0x00020000u
#define MILTER_P_NR_EOH      0x00040000u
#define MILTER_P_NR_BODY     0x00080000u
#define MILTER_P_HDR_LEADSPC 0x00100000u   /* header values keep their leading space */

#define MILTER_P_NOSEND_MASK (MILTER_P_NOCONNECT | MILTER_P_NOHELO | MILTER_P_NOMAIL | \
    MILTER_P_NORCPT | MILTER_P_NOBODY | MILTER_P_NOHDRS | MILTER_P_NOEOH | MILTER_P_NOUNKNOWN | \
    MILTER_P_NODATA)
#define MILTER_P_NOREPLY_MASK (MILTER_P_NR_CONN | MILTER_P_NR_HELO | MILTER_P_NR_MAIL | \
    MILTER_P_NR_RCPT | MILTER_P_NR_DATA | MILTER_P_NR_UNKN | MILTER_P_NR_HDR | MILTER_P_NR_EOH | \
    MILTER_P_NR_BODY)

/* What each protocol version lets us offer (as Postfix's milter8.c): the
 * events a milter of that version knows, and with 6 the reply options. */
#define MILTER_P_V2 (MILTER_P_NOCONNECT | MILTER_P_NOHELO | MILTER_P_NOMAIL | MILTER_P_NORCPT | \
    MILTER_P_NOBODY | MILTER_P_NOHDRS | MILTER_P_NOEOH)
#define MILTER_P_V3 (MILTER_P_V2 | MILTER_P_NOUNKNOWN)
#define MILTER_P_V4 (MILTER_P_V3 | MILTER_P_NODATA)
#define MILTER_P_V6 (MILTER_P_V4 | MILTER_P_SKIP | MILTER_P_RCPT_REJ | MILTER_P_NOREPLY_MASK | \
    MILTER_P_HDR_LEADSPC)

/* Address families in CONNECT. */
#define MILTER_FAMILY_UNKNOWN 'U'
#define MILTER_FAMILY_UNIX    'L'
#define MILTER_FAMILY_INET    '4'
#define MILTER_FAMILY_INET6   '6'

/* Body chunks: at most this many bytes per BODY packet (MILTER_CHUNK_SIZE). */
#define MILTER_CHUNK_MAX 65535u

/* Default limit on the payload of one reply packet. libmilter sends at most
 * 64 KiB - 1 (1 MiB with the MDS extension); other implementations are
 * allowed up to this. REPLBODY is streamed and has its own limit. */
#define MILTER_REPLY_MAX_DEFAULT (1024u * 1024u)

/* ------------------------------------------------------------------ */
/* growable byte buffers                                               */

/* A byte buffer with a read offset (consumed bytes are dropped lazily) and
 * a hard limit: growing past it fails instead of allocating. */
typedef struct milter_buf {
    unsigned char *data;
    size_t off;     /* first unconsumed byte */
    size_t len;     /* end of the data (data[off..len) is the content) */
    size_t cap;
    size_t limit;   /* 0: no limit */
} milter_buf;

int milter_buf_reserve(milter_buf *b, size_t extra);   /* 0 or -1 (limit / out of memory) */
int milter_buf_append(milter_buf *b, const void *p, size_t n);
void milter_buf_consume(milter_buf *b, size_t n);
void milter_buf_reset(milter_buf *b);
void milter_buf_free(milter_buf *b);
static inline size_t milter_buf_used(const milter_buf *b) { return b->len - b->off; }
static inline unsigned char *milter_buf_head(const milter_buf *b) { return b->data + b->off; }

/* ------------------------------------------------------------------ */
/* packet encoding                                                     */

/* Start a packet: returns its start offset, to give to milter_packet_end
 * after the payload was appended with the milter_put_* functions. All
 * return 0 (or the offset) and -1 when the buffer's limit is reached. */
long milter_packet_begin(milter_buf *b, int cmd);
int milter_put_byte(milter_buf *b, int byte);
int milter_put_u16(milter_buf *b, unsigned value);
int milter_put_u32(milter_buf *b, uint32_t value);
int milter_put_str(milter_buf *b, const char *s);          /* with its NUL */
int milter_put_bytes(milter_buf *b, const void *p, size_t n);
int milter_packet_end(milter_buf *b, long start);

/* ------------------------------------------------------------------ */
/* the packet reader                                                   */

/* Reads packets from a byte stream in pieces as they arrive. A packet is
 * handed out whole (its payload at most max_packet bytes), except the
 * command stream_cmd (REPLBODY), whose payload is handed out in pieces as
 * the bytes arrive (at most max_stream bytes in all), so a replacement body
 * never has to fit in memory. */
typedef struct milter_reader {
    unsigned char head[5];
    size_t head_len;
    int cmd;
    size_t total;        /* payload length of the current packet */
    size_t remaining;    /* payload bytes still to come */
    int streaming;
    int started;         /* a piece of the current streamed packet went out */
    milter_buf payload;  /* a packet's payload that arrived in several reads */
    size_t max_packet;
    size_t max_stream;
    int stream_cmd;
    char error[160];
} milter_reader;

typedef struct milter_frame {
    int cmd;
    const unsigned char *data;  /* valid until the next call */
    size_t len;
    size_t total;               /* the packet's whole payload length */
    int piece;                  /* 1: a piece of a streamed packet */
    int first, last;            /* for pieces */
} milter_frame;

void milter_reader_init(milter_reader *r, size_t max_packet, size_t max_stream, int stream_cmd);
void milter_reader_free(milter_reader *r);
/* Takes bytes from *in (advancing it). Returns 1 with *f set, 0 when the
 * input is used up without completing a frame, -1 on a framing error (text
 * in r->error; the stream is unusable after it). */
int milter_reader_next(milter_reader *r, const unsigned char **in, size_t *inlen, milter_frame *f);
/* 1 when no packet is partly read. */
int milter_reader_idle(const milter_reader *r);

/* ------------------------------------------------------------------ */
/* parsing what a milter answers                                       */

/* The OPTNEG reply: version, actions, steps, and the macro lists the
 * milter asked for (SETSYMLIST), NULL where it asked for none. */
typedef struct milter_optneg {
    uint32_t version;
    uint32_t actions;
    uint32_t steps;
    const char *symlist[MILTER_SYMLIST_STAGES];
    int unknown_stages;          /* lists for stage numbers we don't know (ignored) */
} milter_optneg;

/* scratch receives copies of the strings; the results point into it. */
int milter_parse_optneg(const unsigned char *data, size_t len, milter_buf *scratch,
                        milter_optneg *o, char *err, size_t errlen);

/* A custom SMTP reply (REPLYCODE), validated and made safe. */
#define MILTER_REPLY_LINES_MAX 32
#define MILTER_REPLY_LINE_MAX 510    /* text of one line, without CRLF (RFC 5321: 512 with it) */
typedef struct milter_smtp_reply {
    int code;                 /* 400..599 */
    char enhanced[16];        /* "5.7.1", or "" when the milter gave none */
    const char *text;         /* the whole reply: "550-5.7.1 one\r\n550 5.7.1 two" */
    const char *first_text;   /* the first line's text after the code (and enhanced code) */
    size_t lines;
} milter_smtp_reply;

/* Checks a REPLYCODE payload as Postfix does (each line "ddd-" or "ddd "
 * with the same 4xx or 5xx code, an enhanced code of the same class, lines
 * separated by CRLF, nothing after the final line), then makes it safe:
 * Sendmail's "%%" becomes "%" and a lone '%' goes (Sendmail formats replies,
 * we don't), control and 8-bit characters become '?', lines longer than
 * MILTER_REPLY_LINE_MAX are cut. Returns 0, or -1 with err. */
int milter_parse_replycode(const unsigned char *data, size_t len, milter_buf *scratch,
                           milter_smtp_reply *r, char *err, size_t errlen);

/* A modification requested at end of message, or a quarantine. */
typedef enum milter_edit_type {
    MILTER_EDIT_ADD_HEADER,      /* name, value: append */
    MILTER_EDIT_INSERT_HEADER,   /* index, name, value: insert at index (0: before the first) */
    MILTER_EDIT_CHANGE_HEADER,   /* index >= 1, name, value: change the index-th name: header */
    MILTER_EDIT_DELETE_HEADER,   /* index >= 1, name: delete the index-th name: header */
    MILTER_EDIT_CHANGE_FROM,     /* address (may be ""), args */
    MILTER_EDIT_ADD_RCPT,        /* address, args ("" for ADDRCPT) */
    MILTER_EDIT_DELETE_RCPT,     /* address */
    MILTER_EDIT_BODY_CHUNK,      /* data, len: the next bytes of the new body (CRLF line ends) */
    MILTER_EDIT_BODY_END,        /* the new body is complete */
    MILTER_EDIT_QUARANTINE,      /* reason: hold the message */
} milter_edit_type;

typedef struct milter_edit {
    milter_edit_type type;
    uint32_t index;
    const char *name;
    /* Header values are the exact text that follows the colon, CRLF between
     * folded lines: without SMFIP_HDR_LEADSPC the customary space is put in
     * front (as Postfix does), with it the milter's value is kept as sent. */
    const char *value;
    const char *address;    /* one pair of surrounding <> removed */
    const char *args;       /* ESMTP arguments, "" when none */
    const char *reason;
    const unsigned char *data;
    size_t len;
    int body_first;         /* BODY_CHUNK: the first chunk of the new body */
} milter_edit;

/* Parses the payload of ADDHEADER, INSHEADER, CHGHEADER, CHGFROM, ADDRCPT,
 * ADDRCPT_PAR, DELRCPT or QUARANTINE (not REPLBODY: see
 * milter_body_normalize). leadspc: SMFIP_HDR_LEADSPC was negotiated.
 * Returns 0, or -1 with err. */
int milter_parse_edit(int cmd, const unsigned char *data, size_t len, int leadspc,
                      milter_buf *scratch, milter_edit *e, char *err, size_t errlen);

/* Replacement body line ends: LF and CRLF become CRLF, a CR split across
 * pieces is handled, a lone CR is kept (as Postfix keeps it), and the body
 * ends with CRLF. out needs 2 * len + 2 bytes; returns the bytes written. */
typedef struct milter_body_norm {
    int pending_cr;     /* the previous piece ended with CR */
    int at_line_start;  /* nothing or a line end was written last */
    size_t bytes;       /* bytes written so far */
} milter_body_norm;
void milter_body_norm_init(milter_body_norm *n);
size_t milter_body_normalize(milter_body_norm *n, const unsigned char *in, size_t len, unsigned char *out);
size_t milter_body_norm_finish(milter_body_norm *n, unsigned char *out);   /* out: 2 bytes */

/* Header values we send: the text after the colon as the message has it
 * (CRLF between folded lines). Sendmail sends folded lines separated by LF
 * and, without SMFIP_HDR_LEADSPC, without the first space after the colon.
 * Appends the converted value, with its NUL, to b. */
int milter_put_header_value(milter_buf *b, const char *value, int leadspc);

#endif
