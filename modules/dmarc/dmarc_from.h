/*
 * The From header's domains for DMARC (RFC 7489 6.6.1): the addr-specs of
 * an RFC 5322 address list (display names, quoted strings, comments and
 * group names skipped), their domains lower-cased and de-duplicated. A
 * parser of network bytes: bounded (an address longer than 1 KiB or a
 * domain longer than 253 bytes is invalid, never cut), fuzzed
 * (t/fuzz/fuzz_dmarc_from.c), unit-tested (t/unit/test_dmarc_from.c).
 */
#ifndef PETREL_MODULE_DMARC_FROM_H
#define PETREL_MODULE_DMARC_FROM_H

#define DMARC_FROM_MAX_DOMAINS 4

struct dmarc_from {
    int headers;       /* From headers given to dmarc_from_parse */
    int addresses;     /* addr-specs found */
    int ndomains;      /* distinct domains; DMARC_FROM_MAX_DOMAINS + 1 means "more" */
    int invalid;       /* an address whose domain is empty, too long or not a domain name */
    char domains[DMARC_FROM_MAX_DOMAINS][256];
};

/* Adds one From header's value (as the header hook gives it) to f, which
 * starts zeroed. */
void dmarc_from_parse(struct dmarc_from *f, const char *value);

#endif
