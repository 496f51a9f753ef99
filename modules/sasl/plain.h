/*
 * The PLAIN message (RFC 4616 2) as smtpd_sasl_type = table receives it,
 * decoded: [authzid] NUL authcid NUL passwd. Split without a session so
 * that the fuzz target t/fuzz/fuzz_sasl_table_plain.c and table.c share
 * one parser.
 *
 * Decision: exactly two NULs and a login that is not empty, or the message
 * is malformed; an empty password goes on to the table, which refuses it
 * (as Postfix, Dovecot and Cyrus do). An authzid other than the login is
 * told apart: the back-end cannot act for another identity.
 */
#ifndef PETREL_MODULES_SASL_PLAIN_H
#define PETREL_MODULES_SASL_PLAIN_H

#include <stddef.h>

enum plain_verdict {
    PLAIN_OK,
    PLAIN_MALFORMED,          /* not two NULs, or an empty login */
    PLAIN_OTHER_AUTHZID,      /* well formed, but the authzid is neither empty nor the login */
};

/* The fields point into the message (no NUL in any of them); set unless
 * the verdict is PLAIN_MALFORMED. */
struct plain_fields {
    const char *authzid, *login, *password;
    size_t authzid_len, login_len, password_len;
};

enum plain_verdict plain_split(const unsigned char *data, size_t len, struct plain_fields *out);

#endif
