/*
 * Recipient validation at RCPT (Postfix's check_rcpt_maps): is an address
 * in one of our domains a user that exists? The address class (from
 * mail/addr_class.h, the same code the router routes with) says which table
 * knows:
 *
 *   local            local_recipient_maps  (default: the system's users and $alias_maps)
 *   virtual alias    virtual_alias_maps    (no other way in)
 *   virtual mailbox  virtual_mailbox_maps
 *   relay            relay_recipient_maps
 *   default          nobody: not ours, reject_unauth_destination's business
 *
 * An address that canonical_maps, recipient_canonical_maps (or, for a
 * sender, sender_canonical_maps) or virtual_alias_maps rewrite is known in
 * every class, as in Postfix. A class whose table parameter is empty is
 * not checked. A table that fails makes the answer "retry": the client is
 * told 451 4.3.0, never "unknown".
 *
 * The lookups use the router's key forms (mail/addr_find.h) for the maps
 * the router reads, so an address the router would deliver is never
 * refused here; local_recipient_maps and relay_recipient_maps, which only
 * this check reads, use Postfix's full key order (user+ext@domain,
 * user@domain, user+ext, user, @domain).
 */
#ifndef PETREL_SMTPD_RCPT_MAPS_H
#define PETREL_SMTPD_RCPT_MAPS_H

#include <petrel/pool.h>

struct cfg;
struct tbl_registry;
struct mail_domains;
struct smtpd_rcpt_maps;

enum rcpt_maps_status { RCPT_MAPS_KNOWN, RCPT_MAPS_UNKNOWN, RCPT_MAPS_RETRY };

/* For RCPT_MAPS_UNKNOWN: the reply code (the class's unknown_*_reject_code),
 * the enhanced status (5.1.1, 5.1.0 for a sender; its class digit follows
 * the code's) and the reason, e.g. "User unknown in local recipient table". */
struct rcpt_maps_answer {
    int code;
    const char *enhanced;
    const char *why;
};

/* Opens the tables; NULL when one cannot be opened, with a line
 * "parameter: why" appended to *error (malloc'd) for each, and *param the
 * first parameter at fault. */
struct smtpd_rcpt_maps *smtpd_rcpt_maps_open(const struct cfg *cfg, struct tbl_registry *reg, const char **param,
                                             char **error);
void smtpd_rcpt_maps_free(struct smtpd_rcpt_maps *m);

/* Checks address (a recipient, or the sender when sender is 1). */
enum rcpt_maps_status smtpd_rcpt_maps_check(struct smtpd_rcpt_maps *m, const struct mail_domains *domains,
                                            const char *address, int sender, petrel_pool *pool,
                                            struct rcpt_maps_answer *answer);

#endif
