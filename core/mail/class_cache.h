/*
 * The address class cache: the last few domains' classes (addr_class.h),
 * so that the RCPTs of one domain ask the domain lists' tables once per
 * TTL instead of once each. Postfix gets the same from resolve_clnt, whose
 * cache of the last trivial-rewrite answer (one address, 30 seconds) spares
 * its smtpd and queue manager the domain lookups of a repeated address.
 *
 * Design decisions:
 * - Keyed by the domain alone: a class depends on nothing else (not the
 *   sender, not the local part), so one entry serves every address of the
 *   domain. Domains compare without case, as the domain lists match them.
 * - A few entries, least recently used out first: it serves the hot
 *   domains of a process, not a copy of the tables.
 * - Only answers are kept: mail_class_cache_put ignores MAIL_CLASS_ERROR,
 *   and the caller (addr_class.c) never offers a class computed while a
 *   remote table had no answer yet.
 * - Owned by one struct mail_domains (one configuration generation of one
 *   process, single-threaded), so a reload starts with an empty cache; the
 *   owner flushes it when a table of a domain list was reloaded.
 */
#ifndef PETREL_MAIL_CLASS_CACHE_H
#define PETREL_MAIL_CLASS_CACHE_H

#include <stddef.h>
#include <time.h>

#include "mail/addr_class.h"

struct mail_class_cache;

/* Holds up to size entries (at least 1), each valid for ttl seconds
 * (more than 0). */
struct mail_class_cache *mail_class_cache_new(size_t size, time_t ttl);
void mail_class_cache_free(struct mail_class_cache *c);

/* 1 with *cls when domain has an entry that has not expired at now (a
 * monotonic clock, seconds), else 0. */
int mail_class_cache_get(struct mail_class_cache *c, const char *domain, time_t now, enum mail_class *cls);
/* Keeps cls for domain until now + ttl, replacing the least recently used
 * entry when full. MAIL_CLASS_ERROR, and a domain longer than a DNS name
 * (255), are not kept. */
void mail_class_cache_put(struct mail_class_cache *c, const char *domain, enum mail_class cls, time_t now);
/* Forgets every entry. */
void mail_class_cache_flush(struct mail_class_cache *c);
/* The tables' generation now (tbl_generation, summed by the owner):
 * forgets every entry when it is not the one last given. */
void mail_class_cache_generation(struct mail_class_cache *c, unsigned long generation);

#endif
