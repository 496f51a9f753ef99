/*
 * The hosts file (/etc/hosts) as glibc's "files" name service reads it, for
 * smtpd's client-name lookup (core/smtpd/peer.c): Postfix finds the
 * client's name with getnameinfo() and verifies it with getaddrinfo(),
 * which on a default Debian ("hosts: files dns") answer from this file
 * before asking DNS.
 *
 * One per worker, parsed into hash indexes and re-read when the file's
 * identity, size or modification time change, looked at no more than once a
 * second (glibc re-reads it on every lookup; a changed file takes effect
 * here within a second or so, without a restart). On a worker's loop (made
 * with its event_base) the first read is done at once, before any client
 * is served; later ones read and parse on a thread of the hosts file's
 * own, and lookups answer from the old indexes until the new ones are ready
 * (a 10 MB file takes up to a few hundred milliseconds to parse: never on
 * the loop). The loop only stat()s the path once a second.
 */
#ifndef PETREL_LIB_HOSTS_FILE_H
#define PETREL_LIB_HOSTS_FILE_H

#include <stddef.h>

struct event_base;
struct hosts_file;

/* A file larger than this is read up to the last line break within it, and
 * the log says so each time it is read. A hosts file this large is an
 * ad-blocking list: the largest common ones (StevenBlack's unified list
 * with every extension: about 225,000 entries) are around 7 MB. The cap
 * bounds each worker's copy (text and indexes: typically about 3.5 times the file,
 * 36 MB for a 10 MB file) and the parse (80-350 ms for 10 MB on a busy
 * 2-CPU machine, off the loop). */
#define HOSTS_FILE_MAX_SIZE (16L * 1024 * 1024)

/* path: the hosts file, read now. base: the worker's loop, whose timer
 * looks at the file once a second and whose thread re-reads it; NULL: each
 * lookup looks (once a second) and re-reads it on the caller's thread (the
 * unit tests). Never fails: a file that cannot be read answers nothing
 * (a lookup goes on to DNS when smtpd asks DNS) and is logged once per change. quiet: log
 * nothing of the file (every worker reads it; the first one tells). */
struct hosts_file *hosts_file_create(const char *path, struct event_base *base, int quiet);
/* The same from text in memory, never re-read (the fuzz target's). */
struct hosts_file *hosts_file_from_text(const char *text, size_t len);
void hosts_file_free(struct hosts_file *h);
const char *hosts_file_path(const struct hosts_file *h);

/* getnameinfo() through the files backend: the first name of the first line
 * listing the address (family AF_INET with 4 bytes, AF_INET6 with 16; an
 * IPv4-mapped IPv6 address is looked up as IPv4, as glibc does). NULL when
 * no line lists it; "" when a line lists it with no name. The string lives
 * until the next lookup on h or the loop's next turn: copy it. */
const char *hosts_file_name_of(struct hosts_file *h, int family, const void *addr);

enum hosts_file_match {
    HOSTS_NOT_LISTED,   /* no line of that family names it: ask DNS */
    HOSTS_OTHER,        /* lines name it, none with that address */
    HOSTS_MATCH,        /* a line names it with that address */
};

/* getaddrinfo(name, family) through the files backend: does a line naming
 * `name` (first name or alias, case-insensitive) carry `addr`? An IPv4 lookup
 * sees IPv4 lines, IPv4-mapped IPv6 lines as their IPv4 address and "::1" as
 * 127.0.0.1; an IPv6 lookup sees IPv6 lines only (glibc's rules). */
enum hosts_file_match hosts_file_name_has(struct hosts_file *h, const char *name, int family, const void *addr);

/* Does glibc consult the hosts file first for host names, by the "hosts:"
 * line of nsswitch.conf at `path`? 1 yes, with *dns 1 when dns follows
 * (0: glibc never asks DNS); 0 no, with *why saying why (malloc'd). *note
 * (malloc'd, or NULL) tells of a files-first line whose other sources or
 * actions Petrel does not follow. */
int hosts_file_first_in_nsswitch(const char *path, int *dns, char **why, char **note);

#endif
