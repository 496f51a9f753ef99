/*
 * The queue manager role: from safe on disk to delivered, deferred or
 * bounced.
 *
 * Intake. A message becomes the queue manager's when its file in incoming/
 * is complete and durable: smtpd closes it only after the commit, and
 * inotify reports that close (IN_CLOSE_WRITE; IN_MOVED_TO for requeued
 * files). A periodic scan picks up what inotify missed, but only files
 * that have not been written for a while, so a file still being written or
 * committed is never taken. A file in incoming/ is never taken while its
 * writer holds the writer lock (queue_file_writer_active), however old it
 * looks; an incomplete file whose writer is gone (a crashed smtpd worker)
 * is removed, as the recovery scan removes it at start. Files there are
 * opened read-only: closing a writable descriptor would raise the very
 * IN_CLOSE_WRITE event we listen for, and a file left alone would then come
 * back forever. The message is renamed into active/ and parsed
 * once; at most qmgr_message_active_limit messages are in memory, the rest
 * waits on disk (bounded memory whatever the queue size).
 *
 * Routing (route.c) turns each pending recipient into one or more routes.
 * SMTP/LMTP recipients of one message with the same next hop form one job
 * (up to default_destination_recipient_limit); mailbox and pipe deliveries
 * are one job each and run on worker threads (they block on the disk).
 * Every destination (transport + next hop) has its own job queue and
 * concurrency limit (default_destination_concurrency_limit), so one slow
 * destination occupies only its own slots: the others keep flowing.
 *
 * Results are collected per recipient in memory. When a message has no
 * job left, finish.c marks them in the queue file in place, queues the
 * notifications it owes (bounce, never to <>; postmaster notification;
 * success report; delay warning) durably before the original may go,
 * then defers the message (next attempt time as the file's mtime, reasons
 * in defer/ID) or removes it; expired messages are returned there too.
 *
 * Stop (SIGTERM): no new delivery starts; the loop ends when the last
 * delivery and notification commit in flight is done, or after 5 s.
 *
 * Files, as Postfix's qmgr/ is cut: this one starts and stops the role;
 * intake.c finds new and due messages (inotify, scans); message.c takes a
 * message into memory and turns its recipients into jobs (Postfix's
 * qmgr_message.c); schedule.c holds the destinations and their job queues
 * and picks what runs next (qmgr_queue.c, qmgr_job.c); delivery.c runs a
 * job on its delivery agent and collects the results (qmgr_deliver.c);
 * finish.c ends a message. qmgr_int.h has the structs they share.
 */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "config/bind.h"
#include "config/cfg.h"
#include "deliver/smtp_client.h"
#include "lib/dns.h"
#include "lib/hash.h"
#include "lib/log.h"
#include "lib/workq.h"
#include "lib/xalloc.h"
#include "mail/notify.h"
#include "qmgr/qmgr.h"
#include "qmgr/qmgr_int.h"
#include "qmgr/route.h"
#include "module/metrics_core.h"
#include "module/module.h"
#include "module/runtime.h"
#include "queue/queue.h"
#include "tables/table.h"

#define GLOBAL_DELIVERY_LIMIT 100

/* ------------------------------------------------------------------ */
/* shared helpers                                                      */

unsigned qmgr_id_bucket(const char *id)
{
    return hash_string(id) % MSG_BUCKETS;
}

double qmgr_now(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec / 1e6;
}


static void stop_now(evutil_socket_t fd, short what, void *arg)
{
    struct qmgr *q = arg;
    event_base_loopbreak(q->base);
}

static void on_sigterm(evutil_socket_t sig, short what, void *arg)
{
    struct qmgr *q = arg;
    if (q->stopping)
        return;
    q->stopping = 1;
    if (q->deliveries == 0 && q->notices_in_flight == 0) {
        event_base_loopexit(q->base, NULL);
        return;
    }
    /* Deliveries and notification commits in flight get a moment to
     * finish (the loop ends as soon as the last one does); messages left
     * in active/ are taken again at the next start (at worst delivered
     * twice). */
    struct timeval grace = { 5, 0 };
    q->stop_timer = evtimer_new(q->base, stop_now, q);
    evtimer_add(q->stop_timer, &grace);
}

static void on_sighup(evutil_socket_t sig, short what, void *arg)
{
    /* The master replaces the queue manager on reload. */
}

#define Q(name, kind, field) CFG_BIND(name, kind, struct qmgr, field)
static const struct cfg_bind qmgr_binds[] = {
    Q("myhostname", STR, myhostname),
    Q("myorigin", STR, myorigin),
    Q("mail_name", STR, mail_name),
    Q("2bounce_notice_recipient", STR, notice_recipient),
    Q("bounce_notice_recipient", STR, bounce_notice_raw),
    Q("delay_notice_recipient", STR, delay_notice_raw),
    Q("error_notice_recipient", STR, error_notice_raw),
    Q("notify_classes", LIST, notify_class_words),
    Q("qmgr_message_active_limit", UINT, active_limit),
    Q("default_destination_concurrency_limit", UINT, dest_limit),
    Q("default_destination_recipient_limit", UINT, dest_rcpt_limit),
    Q("default_destination_rate_delay", LONG, dest_rate_delay),
    Q("minimal_backoff_time", LONG, min_backoff),
    Q("maximal_backoff_time", LONG, max_backoff),
    Q("queue_run_delay", LONG, run_delay),
    Q("maximal_queue_lifetime", LONG, max_lifetime),
    Q("bounce_queue_lifetime", LONG, bounce_lifetime),
    Q("delay_warning_time", LONG, delay_warning),
    Q("queue_directory", STR, queue_directory),
    Q("dns_resolver", STR, dns_resolver),
    Q("module_thread_limit", UINT, module_threads),
    Q("command_expansion_filter", STR, command_expansion_filter),
    Q("recipient_delimiter", STR, recipient_delimiter),
    Q("soft_bounce", BOOL, soft_bounce),
    Q("mailbox_size_limit", ULONG, mailbox_size_limit),
    Q("virtual_mailbox_limit", ULONG, virtual_mailbox_limit),
    CFG_BIND_READ("smtp_tls_policy_maps"),   /* transports.c */
    CFG_BIND_READ("lmtp_tls_policy_maps"),
    /* TRANSPORT_destination_*: looked up for each transport a destination uses */
    CFG_BIND_READ("*_destination_concurrency_limit"),
    CFG_BIND_READ("*_destination_rate_delay"),
    CFG_BIND_READ("*_destination_recipient_limit"),
    /* checks.c, per transport: the SMTP and LMTP clients' content checks */
    CFG_BIND_READ("smtp_header_checks"),
    CFG_BIND_READ("smtp_mime_header_checks"),
    CFG_BIND_READ("smtp_nested_header_checks"),
    CFG_BIND_READ("smtp_body_checks"),
    CFG_BIND_READ("lmtp_header_checks"),
    CFG_BIND_READ("lmtp_mime_header_checks"),
    CFG_BIND_READ("lmtp_nested_header_checks"),
    CFG_BIND_READ("lmtp_body_checks"),
    CFG_BIND_READ("header_size_limit"),
    CFG_BIND_READ("line_length_limit"),
    CFG_BIND_READ("mime_nesting_limit"),
    CFG_BIND_READ("mime_boundary_length_limit"),
};
/* Also read: the router's (route.c), and bounce.c's through finish.c. */
const struct cfg_bind_table qmgr_bind_table = CFG_BIND_TABLE("queue manager", qmgr_binds);

/* A notice recipient as an address: "postmaster" becomes postmaster@$myorigin. */
static const char *qualified(const char *who, const char *myorigin)
{
    if (who == NULL || *who == '\0')
        who = "postmaster";
    if (strchr(who, '@'))
        return xstrdup(who);
    size_t n = strlen(who) + strlen(myorigin) + 2;
    char *out = xmalloc(n);
    snprintf(out, n, "%s@%s", who, myorigin);
    return out;
}

int qmgr_main(const struct qmgr_args *args)
{
    struct qmgr q;
    memset(&q, 0, sizeof(q));
    log_set_role("qmgr");
    signal(SIGPIPE, SIG_IGN);
    const struct cfg *cfg = args->cfg;
    q.cfg = cfg;
    q.queue = args->queue;
    q.metrics = args->metrics;
    q.process_index = args->process_index;
    q.base = event_base_new();
    q.workq = workq_create(q.base, 4);
    q.modules = args->modules;
    q.helper_fd = args->mailbox_helper_fd;
    if (q.helper_fd >= 0) {
        q.helper_ev = event_new(q.base, q.helper_fd, EV_READ | EV_PERSIST, qmgr_on_helper, &q);
        event_add(q.helper_ev, NULL);
    }
    queue_id_gen_init(&q.idgen, (unsigned)getpid());
    q.tables = tbl_registry_new();
    /* Module table types (lmdb:, cdb:, sqlite:, ...) route mail too. */
    if (module_set_register_tables(args->modules, q.tables) != 0)
        msg_fatal("cannot start: a module's table type clashes with another (see above)");
    cfg_bind_apply(cfg, &qmgr_bind_table, &q);
    q.postmaster = qualified(q.notice_recipient, q.myorigin);
    q.bounce_notice = qualified(q.bounce_notice_raw, q.myorigin);
    q.delay_notice = qualified(q.delay_notice_raw, q.myorigin);
    q.error_notice = qualified(q.error_notice_raw, q.myorigin);
    const char *bad = NULL;
    if (mail_notify_classes(q.notify_class_words, &q.notify_classes, &bad) != 0)
        msg_fatal("notify_classes: unknown class \"%s\"", bad);   /* checked at load */
    if (q.notify_classes & MAIL_NOTIFY_BOUNCE)
        q.notify_classes |= MAIL_NOTIFY_2BOUNCE;   /* "bounce (also implies 2bounce)" */
    if (q.active_limit == 0)
        q.active_limit = 20000;
    /* Every message in memory holds its queue file open: raise the soft
     * descriptor limit to the hard one, and keep the active limit below it. */
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0) {
        if (nofile.rlim_cur < nofile.rlim_max) {
            nofile.rlim_cur = nofile.rlim_max;
            setrlimit(RLIMIT_NOFILE, &nofile);
        }
        if (nofile.rlim_cur != RLIM_INFINITY && nofile.rlim_cur < (rlim_t)q.active_limit + 512) {
            unsigned room = nofile.rlim_cur > 1024 ? (unsigned)(nofile.rlim_cur - 512) : (unsigned)(nofile.rlim_cur / 2);
            msg_warn("open file limit %lu: keeping at most %u messages in memory (qmgr_message_active_limit %u)",
                     (unsigned long)nofile.rlim_cur, room, q.active_limit);
            q.active_limit = room;
        }
    }
    q.delivery_limit = GLOBAL_DELIVERY_LIMIT;
    if (q.dest_rcpt_limit == 0)
        q.dest_rcpt_limit = 50;
    if (q.run_delay <= 0)
        q.run_delay = 300;
    snprintf(q.defer_dir, sizeof(q.defer_dir), "%s/defer", q.queue_directory);
    mkdir(q.defer_dir, 0700);

    char *error = NULL;
    /* quiet: the master already warned about these tables when it checked them */
    q.router = router_create(cfg, q.tables, 1, &error);
    if (q.router == NULL)
        msg_fatal("%s", error);
    q.dns = dns_resolver_create(q.base, q.dns_resolver, &error);
    if (q.dns == NULL)
        msg_fatal("dns_resolver: %s", error);
    core_metrics_watch_dns(q.metrics, q.dns);
    core_metrics_watch_tables(q.metrics, q.tables);
    /* Modules with a queue-manager hook (delivery results) are initialised
     * here too: init runs in every role process that uses the module. */
    struct module_runtime_args rt = { .set = q.modules, .role = MODULE_ROLE_QMGR,
                                      .base = q.base, .threads = q.module_threads, .dns = q.dns, .metrics = args->metrics,
                                      .process_index = args->process_index };
    if (module_runtime_start(&rt) != 0)
        msg_fatal("cannot start: a module failed to initialise");
    q.inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (q.inotify_fd < 0)
        msg_fatal("inotify_init1: %s", strerror(errno));
    char incoming[4200];
    snprintf(incoming, sizeof(incoming), "/proc/self/fd/%d", queue_dir_fd(q.queue, QDIR_INCOMING));
    if (inotify_add_watch(q.inotify_fd, incoming, IN_CLOSE_WRITE | IN_MOVED_TO) < 0)
        msg_fatal("inotify_add_watch %s: %s", incoming, strerror(errno));
    q.inotify_ev = event_new(q.base, q.inotify_fd, EV_READ | EV_PERSIST, qmgr_on_inotify, &q);
    event_add(q.inotify_ev, NULL);
    q.scan_timer = evtimer_new(q.base, qmgr_on_scan, &q);
    q.refill_timer = evtimer_new(q.base, qmgr_on_refill, &q);
    q.deferred_timer = evtimer_new(q.base, qmgr_on_deferred_scan, &q);
    q.sig_term = evsignal_new(q.base, SIGTERM, on_sigterm, &q);
    q.sig_flush = evsignal_new(q.base, SIGUSR2, qmgr_on_flush, &q);
    q.sig_hup = evsignal_new(q.base, SIGHUP, on_sighup, &q);
    event_add(q.sig_term, NULL);
    event_add(q.sig_flush, NULL);
    event_add(q.sig_hup, NULL);

    /* Messages left in active/ (by the recovery scan or a previous queue
     * manager) are ours at once; incoming/ and deferred/ follow. */
    qmgr_scan_dir(&q, QDIR_ACTIVE);
    qmgr_scan_dir(&q, QDIR_INCOMING);
    struct timeval first = { 1, 0 };
    evtimer_add(q.scan_timer, &first);
    struct timeval now0 = { 0, 0 };
    evtimer_add(q.deferred_timer, &now0);

    qmgr_board_start(&q);

    event_base_dispatch(q.base);
    q.exiting = 1;
    qmgr_board_stop(&q);

    /* The SMTP clients and their tables first: deliveries still waiting for
     * a module's remote table (smtp_tls_policy_maps, smtp_sasl_password_maps)
     * cancel their lookups while the module runtime can take the cancel. */
    qmgr_transports_free(&q);
    qmgr_checks_free(&q);
    module_runtime_stop();
    workq_destroy(q.workq);
    return 0;
}
