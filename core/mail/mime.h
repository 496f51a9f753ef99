/*
 * The MIME structure of a message as Postfix's cleanup and SMTP client see
 * it (Postfix's mime_state): which lines are headers (of the message, of a
 * multipart body part, of an attached message/rfc822) and which are body,
 * so that header_checks, mime_header_checks, nested_header_checks and
 * body_checks each see their own part.
 *
 * Content goes in as bytes, split anywhere; lines end with LF (a CR before
 * it is dropped). A line longer than line_limit is cut into records of
 * line_limit bytes, as Postfix's smtpd stores it (the pieces but the last
 * are "continued"). Out come three kinds of callback:
 *
 *   header  one logical header: its physical lines joined with "\n" (no
 *           CR), the obsolete "Name :" normalised to "Name:", at most
 *           header_limit bytes plus one record (the rest of a longer header
 *           is dropped, as Postfix drops it); with its class (primary,
 *           multipart, nested) and whether it is a MIME header
 *           (Content-*, MIME-Version), which Postfix checks with
 *           mime_header_checks wherever it appears;
 *   header_end  once, when the primary header section ends;
 *   body    one record of everything else, multipart boundaries included,
 *           with its offset in its body part (body_checks_size_limit).
 *
 * Nothing is decoded: base64 and quoted-printable parts are seen as they
 * are written, as Postfix sees them. The parser is bounded whatever the
 * input: one line of line_limit bytes, one header of header_limit bytes
 * plus one record, and at most nesting_limit + 2 boundaries of at most
 * boundary_limit bytes each. It holds no global state and does no I/O.
 */
#ifndef PETREL_MAIL_MIME_H
#define PETREL_MAIL_MIME_H

#include <stddef.h>

enum mime_class { MIME_PRIMARY, MIME_MULTIPART, MIME_NESTED };

/* Errors, as Postfix's MIME_ERR_* (each reported once). */
#define MIME_ERR_NESTING           0x01u  /* deeper than nesting_limit */
#define MIME_ERR_TRUNC_HEADER      0x02u  /* a header longer than header_limit */
#define MIME_ERR_8BIT_IN_HEADER    0x04u
#define MIME_ERR_8BIT_IN_7BIT_BODY 0x08u
#define MIME_ERR_ENCODING_DOMAIN   0x10u  /* message/ or multipart/ with base64 or quoted-printable */
#define MIME_ERR_NON_EMPTY_EOH     0x20u  /* the primary headers ended with a non-empty line */

/* Options, as Postfix's MIME_OPT_*. */
#define MIME_OPT_DISABLE_MIME             0x01u  /* disable_mime_input_processing: all after the
                                                    primary headers is body */
#define MIME_OPT_REPORT_TRUNC_HEADER      0x02u
#define MIME_OPT_REPORT_8BIT_IN_HEADER    0x04u
#define MIME_OPT_REPORT_8BIT_IN_7BIT_BODY 0x08u
#define MIME_OPT_REPORT_ENCODING_DOMAIN   0x10u
#define MIME_OPT_REPORT_NESTING           0x20u
#define MIME_OPT_REPORT_NON_EMPTY_EOH     0x40u

struct mime_limits {
    size_t header_limit;      /* header_size_limit (102400) */
    size_t line_limit;        /* line_length_limit (2048): longer lines are cut into records */
    int nesting_limit;        /* mime_nesting_limit (100) */
    size_t boundary_limit;    /* mime_boundary_length_limit (2048) */
};

struct mime_header {
    enum mime_class cls;
    int is_mime;                    /* Content-Type, -Transfer-Encoding, -Disposition, -Description,
                                       -ID, MIME-Version */
    const char *text;               /* "Name: value\n\tmore"; NUL-terminated (may also hold NUL bytes) */
    size_t len;
    size_t name_len;                /* length of "Name" */
    unsigned long long offset;      /* in its header block (lines count one byte for their end) */
    unsigned long long input_start; /* input offset of its first byte */
};

struct mime_callbacks {
    void (*header)(void *ctx, const struct mime_header *h);
    /* The primary header section ended. end_input is the input offset of
     * the line that ended it (the empty line, or the first line that is no
     * header), body_input the offset of the first body byte (after the
     * empty line when there was one: separator is then 1); both equal the
     * input size when the input ended inside the headers. */
    void (*header_end)(void *ctx, unsigned long long end_input, unsigned long long body_input, int separator);
    /* One body record: text without its line end; cont is 1 when no line
     * end follows it (a piece of a longer line, or the unterminated last
     * line). offset: in its body part. input_start: its input offset. */
    void (*body)(void *ctx, const char *text, size_t len, int cont, unsigned long long offset,
                 unsigned long long input_start);
    /* May be NULL. Called once per error kind, with the offending text. */
    void (*error)(void *ctx, unsigned err, const char *text, size_t len);
};

struct mime_parser;

/* Limits of 0 take Postfix's defaults. */
struct mime_parser *mime_parser_new(const struct mime_limits *limits, unsigned options,
                                    const struct mime_callbacks *cb, void *ctx);
/* Feeds content; may call back any number of times. */
void mime_parser_feed(struct mime_parser *p, const char *data, size_t len);
/* The end of the content: flushes a last line without a line end and a
 * pending header, and calls header_end if the headers never ended. */
void mime_parser_end(struct mime_parser *p);
/* Inside a header or header_end callback: the raw bytes (as they came,
 * a CR before the LF included) of the line being recorded, from its first
 * byte up to what the parser has taken of it so far, its LF excluded. A
 * consumer that copies the input through from header_end's end_input on
 * finds here the part of that line fed in earlier calls. */
const char *mime_parser_current_line(const struct mime_parser *p, size_t *len);
/* The MIME_ERR_* bits seen so far (only those the options ask to report). */
unsigned mime_parser_errors(const struct mime_parser *p);
void mime_parser_free(struct mime_parser *p);

/* Postfix's text and enhanced status code for the most serious error in
 * errs ("MIME nesting exceeds safety limit", "5.6.0"). */
const char *mime_error_text(unsigned errs, const char **dsn);

/* Postfix's is_header(): the length of the name of a header line ("Name:"
 * or the obsolete "Name :"), 0 when text is not one. */
size_t mime_header_name_len(const char *text, size_t len);
/* 1 when the header named name (name_len bytes) is a MIME header. */
int mime_is_mime_header(const char *name, size_t name_len);

#endif
