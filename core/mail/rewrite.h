/*
 * Address rewriting that the SMTP server (addresses in headers) and the
 * queue manager (the envelope) share, as Postfix's cleanup does it for
 * both: canonical maps (sender_canonical_maps, recipient_canonical_maps,
 * then canonical_maps for the classes in canonical_classes) and
 * masquerading (masquerade_domains, masquerade_exceptions, for the classes
 * in masquerade_classes). A canonical result without a domain gets
 * @$myorigin.
 *
 * The classes are Postfix's: envelope_sender, envelope_recipient,
 * header_sender, header_recipient.
 */
#ifndef PETREL_MAIL_REWRITE_H
#define PETREL_MAIL_REWRITE_H

#include <petrel/pool.h>

#include "mail/maps.h"

struct cfg;
struct cfg_bind_table;
struct tbl_registry;

struct mail_rewrite {
    const char *myorigin, *delimiter;
    struct mail_maps canonical, rcpt_canonical, sender_canonical;
    const char *const *masquerade_domains, *const *masquerade_exceptions;
    const char *const *canonical_classes, *const *masquerade_classes;
};

/* The parameters mail_rewrite_open reads (config/bind.h). */
extern const struct cfg_bind_table mail_rewrite_bind_table;

/* Reads the parameters and opens canonical_maps, recipient_canonical_maps
 * and sender_canonical_maps (in that order) through reg; quiet as for
 * mail_maps_open. Returns 0, or -1 with *error (malloc'd) naming the
 * parameter; nothing stays open then. */
int mail_rewrite_open(struct mail_rewrite *rw, const struct cfg *cfg, struct tbl_registry *reg, int quiet,
                      char **error);
void mail_rewrite_close(struct mail_rewrite *rw);

/* 1 when some header rewriting is configured at all. */
int mail_rewrite_headers(const struct mail_rewrite *rw);
/* An address found in a header (recipient: To/Cc/...; else From/Sender/...).
 * A table that cannot answer (down, or a remote table still pending inside
 * a lookup scope) sets *failed (when not NULL) to the parameter that names
 * it ("sender_canonical_maps", ...) and leaves the address as it is. */
const char *mail_rewrite_header_address(struct mail_rewrite *rw, const char *address, int recipient,
                                        petrel_pool *pool, const char **failed);
/* The envelope sender as delivered; "" stays "". A table that cannot
 * answer (down, or a remote table still pending inside a lookup scope) sets
 * *failed (when not NULL) and leaves the address as it is: a caller that
 * passes failed defers instead of using an unmapped address. */
const char *mail_rewrite_sender(struct mail_rewrite *rw, const char *sender, petrel_pool *pool, int *failed);
/* The envelope recipient: recipient_canonical_maps, else canonical_maps.
 * Returns recipient itself when neither has it. failed as above. */
const char *mail_rewrite_recipient(struct mail_rewrite *rw, const char *recipient, petrel_pool *pool,
                                   int *failed);
/* addr with @$myorigin appended when it has no domain (a copy from pool). */
const char *mail_rewrite_qualify(const struct mail_rewrite *rw, const char *addr, petrel_pool *pool);

#endif
