/*
 * Automatic BCC recipients: always_bcc, sender_bcc_maps (by the envelope
 * sender) and recipient_bcc_maps (by each recipient), the extra recipients
 * Postfix's cleanup adds to mail that enters from outside (cleanup_addr.c,
 * cleanup_extracted.c).
 *
 * Design decisions:
 * - Looked up once per transaction, at DATA or the first BDAT (after
 *   smtpd_data_restrictions and the data hooks), before the queue file is
 *   created: its envelope holds them. DATA ends a pipelined group (RFC
 *   2920) and a BDAT chunk stays unread while the session waits, so the
 *   client sees the replies, and in the order, it saw when these lookups
 *   blocked the worker; what changed is that nobody else waits.
 * - Remote tables (pgsql:, socketmap:, ...) answer in a lookup scope of the
 *   transaction's own (tables/table.h): one pass over the sender and every
 *   recipient registers each address's next missing key, the scope fetches
 *   them all in parallel, and the pass runs again when they are in; only a
 *   pass with nothing missing counts. Local tables answer at once, so with
 *   them the first pass is the last and nothing waits. The scope dies with
 *   the transaction's pool, cancelling what is in flight.
 * - The answers are kept in the transaction (tx->auto_bcc) for every queue
 *   file it writes (edits at the end of the message write a new one);
 *   recipients a milter or module adds get none, as in Postfix, whose
 *   cleanup adds those without a lookup.
 * - Postfix's key order (mail_addr_find, MA_FIND_DEFAULT): user+ext@domain,
 *   user@domain, then user+ext and user when the domain is $myorigin or in
 *   $mydestination, then @domain; each key in every table of the list
 *   before the next key, and only the full address in pattern tables. An
 *   address without a domain gets @$myorigin first, as cleanup's rewrite
 *   gives it. The first value found is the one address added.
 * - Each one is a recipient with NOTIFY=NEVER and no ORCPT (Postfix 2.3 and
 *   later): the sender never hears about a BCC copy that failed.
 * - A table that cannot answer is never "not found": the message is not
 *   accepted (Postfix's CLEANUP_STAT_WRITE, "451 4.3.0 Error: queue file
 *   write error", data.c), with Postfix's warning "... map lookup problem
 *   -- message not accepted, try again later". There is no queue ID yet:
 *   the warning says NOQUEUE.
 * - receive_override_options = no_address_mappings: none of them, as
 *   Postfix's cleanup without CLEANUP_FLAG_BCC_OK (the pass after the
 *   content filter adds them).
 */
#include "config.h"

#include <string.h>
#include <strings.h>

#include "lib/log.h"
#include "mail/addr_find.h"
#include "mail/maps.h"
#include "smtpd/smtpd_int.h"
#include "tables/table.h"

/* Which map failed, for the warning. */
enum { BCC_FAILED_SENDER = 1, BCC_FAILED_RECIPIENT = 2 };

/* One address in maps, in Postfix's key order. 1 found (*value), 0 not
 * found, -1 a table failed or has no answer yet (then the scope has it as
 * missing, and the pass does not count). */
static int bcc_find(struct smtpd_session *s, struct mail_maps *maps, const char *address, const char **value)
{
    const struct smtpd_settings *set = s->set;
    petrel_pool *pool = s->tx->pool;
    if (strchr(address, '@') == NULL)
        address = petrel_pool_printf(pool, "%s@%s", address, set->myorigin);
    struct mail_addr a;
    mail_addr_split(address, set->recipient_delimiter, pool, &a);
    int rc = mail_addr_find(maps, &a, MAIL_FIND_FULL | MAIL_FIND_NOEXT, pool, value);
    if (rc != 0)
        return rc;
    /* The local part alone only for a local domain; mydestination may be
     * a table too, asked only now, as Postfix's resolve_local is. */
    int local = strcasecmp(a.domain, set->myorigin) == 0 ? 1 : mail_domain_is_local(&set->domains, a.domain);
    if (local < 0)
        return -1;
    return mail_addr_find(maps, &a, (local ? MAIL_FIND_LOCALPART : 0) | MAIL_FIND_AT_DOMAIN, pool, value);
}

static void bcc_add(struct smtpd_tx *tx, const char *address)
{
    /* each address once (Postfix's duplicate filter for the same
     * recipient with the same NOTIFY and ORCPT) */
    for (size_t i = 0; i < tx->nauto_bcc; i++)
        if (strcasecmp(tx->auto_bcc[i], address) == 0)
            return;
    tx->auto_bcc[tx->nauto_bcc++] = address;
}

/* One address: 1 found (*value), 0 not found (or not known yet), -1 its
 * table failed. A search that met a key with no answer yet (the scope now
 * has it as missing) ended early or went on without it: its result is
 * void, the pass runs again. Only a failure met without such a key is
 * final (Postfix would have asked exactly these keys). */
static int bcc_address(struct smtpd_session *s, struct mail_maps *maps, const char *address, const char **value)
{
    struct tbl_scope *sc = s->tx->bcc_lookups;
    unsigned long before = tbl_scope_pending_count(sc);
    int rc = bcc_find(s, maps, address, value);
    if (tbl_scope_pending_count(sc) != before)
        return 0;
    return rc;
}

/* One pass over the sender and every recipient; tx->auto_bcc holds what
 * this pass found. Returns 0, or the BCC_FAILED_* of the maps that
 * failed. */
static int bcc_pass(struct smtpd_session *s)
{
    struct smtpd_tx *tx = s->tx;
    const struct smtpd_settings *set = s->set;
    int failed = 0;
    const char *v;
    tx->nauto_bcc = 0;
    if (set->always_bcc && *set->always_bcc)
        bcc_add(tx, set->always_bcc);
    if (set->sender_bcc_maps->n && *tx->mail.address) {
        int rc = bcc_address(s, set->sender_bcc_maps, tx->mail.address, &v);
        if (rc > 0)
            bcc_add(tx, v);
        else if (rc < 0)
            failed |= BCC_FAILED_SENDER;
    }
    for (size_t r = 0; !failed && set->recipient_bcc_maps->n && r < tx->nrcpts; r++) {
        int rc = bcc_address(s, set->recipient_bcc_maps, tx->rcpts[r].address, &v);
        if (rc > 0)
            bcc_add(tx, v);
        else if (rc < 0)
            failed |= BCC_FAILED_RECIPIENT;
    }
    return failed;
}

static void bcc_finish(struct smtpd_session *s, int failed)
{
    struct smtpd_tx *tx = s->tx;
    if (failed & BCC_FAILED_SENDER)
        msg_warn("NOQUEUE: sender_bcc_maps map lookup problem -- message not accepted, try again later");
    if (failed & BCC_FAILED_RECIPIENT)
        msg_warn("NOQUEUE: recipient_bcc_maps map lookup problem -- message not accepted, try again later");
    if (failed)
        tx->nauto_bcc = 0;
    void (*done)(struct smtpd_session *, int) = tx->bcc_done;
    tx->bcc_done = NULL;
    done(s, failed != 0);
}

static void bcc_run(struct smtpd_session *s);

/* The remote tables' answers are in: the pass runs again. */
static void bcc_answered(void *arg)
{
    bcc_run(arg);
}

static void bcc_run(struct smtpd_session *s)
{
    struct smtpd_tx *tx = s->tx;
    struct tbl_registry *reg = s->worker->tables;
    for (;;) {
        tbl_scope_enter(reg, tx->bcc_lookups);
        int failed = bcc_pass(s);
        tbl_scope_leave(reg);
        if (failed || !tbl_scope_missing(tx->bcc_lookups)) {
            /* a table failed (the message is refused whatever the others
             * say), or every key this pass asked had its answer */
            bcc_finish(s, failed);
            return;
        }
        if (tbl_scope_fetch(tx->bcc_lookups, bcc_answered, s)) {
            s->state = SMTPD_WAIT;
            return;   /* bcc_answered() goes on */
        }
        /* every answer came at once: the pass again */
    }
}

static void scope_free(void *arg)
{
    tbl_scope_free(arg);   /* cancels what is in flight: bcc_answered() never runs */
}

void smtpd_bcc_lookup(struct smtpd_session *s, void (*done)(struct smtpd_session *s, int failed))
{
    struct smtpd_tx *tx = s->tx;
    const struct smtpd_settings *set = s->set;
    tx->nauto_bcc = 0;
    if (set->receive_override & RO_NO_ADDRESS_MAPPINGS) {
        done(s, 0);
        return;
    }
    /* always_bcc, the sender's and one per recipient */
    tx->auto_bcc = petrel_pool_zalloc(tx->pool, (tx->nrcpts + 2) * sizeof(char *));
    if (set->sender_bcc_maps->n == 0 && set->recipient_bcc_maps->n == 0) {
        bcc_pass(s);   /* always_bcc alone */
        done(s, 0);
        return;
    }
    if (tx->bcc_lookups == NULL) {
        /* Room for every key of every address: the full address, without
         * its extension, the local parts, @domain, in each table, plus
         * mydestination's tables. */
        size_t ntables = set->sender_bcc_maps->n + set->recipient_bcc_maps->n + set->domains.mydestination.n;
        tx->bcc_lookups = tbl_scope_new_sized((tx->nrcpts + 1) * (6 * ntables + 2));
        petrel_pool_cleanup_add(tx->pool, scope_free, tx->bcc_lookups);
    }
    tx->bcc_done = done;
    bcc_run(s);
}
