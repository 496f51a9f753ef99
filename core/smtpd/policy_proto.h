/*
 * Postfix's policy delegation protocol, the bytes on the wire (pure
 * functions, unit tested and fuzzed; policy.c does the I/O).
 *
 * A request is "name=value" lines ended by an empty line; the reply is
 * "name=value" lines ended by an empty line, of which only the first
 * "action=" matters (Postfix's attr_scan_plain: other attributes are
 * skipped). Petrel bounds what it reads: a reply longer than
 * POLICY_REPLY_MAX bytes, an action longer than POLICY_ACTION_MAX bytes or
 * holding a NUL byte is a broken reply, like one without an action.
 */
#ifndef PETREL_SMTPD_POLICY_PROTO_H
#define PETREL_SMTPD_POLICY_PROTO_H

#include <stddef.h>
#include <sys/types.h>

#include "lib/buf.h"

#define POLICY_REPLY_MAX 16384
#define POLICY_ACTION_MAX 4096

/* Appends "name=value\n". A value cannot end the line or the request
 * early: control bytes (CR, LF, NUL never reach here) become '?'. */
void policy_request_attr(struct buf *b, const char *name, const char *value);
void policy_request_attr_number(struct buf *b, const char *name, unsigned long long value);
/* The empty line that ends a request. */
void policy_request_end(struct buf *b);

/* Where the reply in data[0..len) ends: the length up to and including its
 * empty line; 0 when the end has not arrived yet; -1 when POLICY_REPLY_MAX
 * bytes have arrived without an end. */
ssize_t policy_reply_end(const char *data, size_t len);

/* Parses a complete reply (len as policy_reply_end returned). Returns 0
 * with the first action's value copied into action (NUL-terminated), or
 * -1 with *why saying what is wrong ("missing attribute action", ...). */
int policy_reply_parse(const char *data, size_t len, char *action, size_t action_size, const char **why);

#endif
