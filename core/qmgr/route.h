/*
 * Routing: Postfix's address classes. For one envelope recipient the
 * router applies canonical and virtual alias rewriting (recursive, with loop
 * and expansion limits), then decides the address class (mail/addr_class.h,
 * shared with smtpd's recipient checks) and so the transport and next hop:
 *
 *   mydestination (or no domain)             -> local_transport: alias_maps, then the system user
 *   virtual alias domain (no alias matched)  -> error: User unknown in virtual alias table
 *   virtual mailbox domain                   -> virtual_transport, mailbox from virtual_mailbox_maps
 *   relay_domains                            -> relay_transport, next hop = the domain
 *   anything else                            -> default_transport, relayhost or the domain
 *
 * transport_maps overrides the class's transport/next hop, and
 * sender_dependent_relayhost_maps the default relayhost. One recipient may
 * expand to several destinations (aliases); each is a struct route.
 */
#ifndef PETREL_QMGR_ROUTE_H
#define PETREL_QMGR_ROUTE_H

#include <stddef.h>

#include <petrel/pool.h>

struct cfg;
struct tbl_registry;
struct router;
struct cfg_bind_table;

enum route_kind {
    ROUTE_SMTP,        /* smtp/relay client: nexthop is a domain, [host]:port, ... */
    ROUTE_LMTP,        /* lmtp client: nexthop unix:/path or inet:host:port */
    ROUTE_MAILDIR,     /* path = the Maildir (ends with /) */
    ROUTE_MBOX,        /* path = the mbox file */
    ROUTE_PIPE,        /* argv from master.cf (transport) or an alias's |command (path) */
    ROUTE_DISCARD,     /* report success, deliver nothing */
    ROUTE_ERROR,       /* bounce with text (dsn 5.x.x) */
    ROUTE_RETRY,       /* defer with text (dsn 4.x.x) */
};

struct route {
    enum route_kind kind;
    const char *transport;     /* the transport name for logs: "smtp", "virtual", "local", ... */
    const char *nexthop;       /* smtp/lmtp next hop; for error/retry the text */
    const char *address;       /* the final recipient address */
    const char *path;          /* maildir/mbox path, or a |command */
    const char *dsn;           /* for ROUTE_ERROR / ROUTE_RETRY */
    const char *user;          /* local part without extension, for pipe macros */
    const char *extension;     /* recipient extension or NULL */
    long uid, gid;             /* mailbox owner (-1: the current user) */
    int from_alias;            /* a |command or /file named by alias_maps: runs as default_privs,
                                * the command through /bin/sh with no macro expansion */
    /* a master.cf pipe transport: its argv= words, flags= and user= */
    const char *const *pipe_argv;
    const char *pipe_flags;
    const char *pipe_user;
};

struct route_list {
    struct route *items;
    size_t count;
};

/* Builds a router from the configuration; tables are opened through reg.
 * Returns NULL with *error (malloc'd) naming the parameter. */
/* quiet: give none of the warnings about the configuration (overlapping
 * domain lists, the default alias_maps left out, alias tables owned by
 * someone else): the master gives them once when it checks the
 * configuration, and the roles open the same tables again quietly. */
struct router *router_create(const struct cfg *cfg, struct tbl_registry *reg, int quiet, char **error);
void router_free(struct router *r);
/* The parameters router_create binds or reads (config/bind.h). */
extern const struct cfg_bind_table router_bind_table;
/* What a message's queue file says about its routing. */
struct route_opts {
    const char *filter;   /* content filter "transport:nexthop" (content_filter, a FILTER action): every
                             recipient goes there, after virtual alias expansion, instead of its own
                             destination; an empty nexthop means default_filter_nexthop, else the
                             recipient's domain (Postfix 2.7+) */
    int no_mappings;      /* receive_override_options = no_address_mappings: no canonical, masquerade
                             or virtual alias mapping (the pass after the content filter does them) */
    int redirected;       /* the recipients are a REDIRECT target: no canonical or virtual alias
                             mapping for them (Postfix's rule) */
};
/* The envelope sender as delivered: sender_canonical_maps, then
 * canonical_maps, then masquerade_domains (mail/rewrite.h, which smtpd
 * uses for headers). "" stays "". opts may be NULL. A canonical table that
 * cannot answer sets *failed (the caller defers the message). */
const char *router_sender(struct router *r, const char *sender, const struct route_opts *opts, petrel_pool *pool,
                          int *failed);
/* Routes one recipient for a message from sender. Results come from pool.
 * opts may be NULL. Returns 0; -1 with a ROUTE_RETRY entry when a table
 * lookup failed. Inside a lookup scope (tables/table.h) a remote table
 * that has not answered yet is such a failure too: the caller tells it
 * apart with tbl_scope_pending_count(), throws the routes away and routes
 * the recipient again once the scope has fetched the answers. */
int router_route(struct router *r, const char *sender, const char *recipient, const struct route_opts *opts,
                 petrel_pool *pool, struct route_list *out);

#endif
