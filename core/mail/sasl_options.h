/*
 * Postfix's SASL security options (smtpd_sasl_security_options,
 * smtp_sasl_security_options and their _tls_ forms): noplaintext,
 * noactive, nodictionary, noanonymous, forward_secrecy, mutual_auth. The
 * SMTP server and the SMTP client both read them.
 */
#ifndef PETREL_MAIL_SASL_OPTIONS_H
#define PETREL_MAIL_SASL_OPTIONS_H

#include <petrel/pool.h>

#define SASL_OPT_NOPLAINTEXT 0x01
#define SASL_OPT_NOACTIVE 0x02
#define SASL_OPT_NODICTIONARY 0x04
#define SASL_OPT_NOANONYMOUS 0x08
#define SASL_OPT_FORWARD_SECRECY 0x10
#define SASL_OPT_MUTUAL_AUTH 0x20

/* Words separated by commas and white space; an unknown word is an error
 * (Postfix's NAME_MASK_FATAL): -1 with *bad (pool text). */
int sasl_options_parse(const char *value, unsigned *out, const char **bad, petrel_pool *pool);

#endif
