/*
 * petrelctl stats: the figures of the metrics endpoint for a person (or as
 * JSON), with rates over the last minute.
 *
 * A rate needs a past value: the master samples the totals every
 * STATS_SAMPLE_SECONDS into a ring covering a bit more than a minute, and
 * a rate is (now - the sample about 60 s ago) per minute. Right after the
 * start the oldest sample there is serves, and the window says how long it
 * was; with none the rate is unknown (JSON null, "-" in the text). The
 * totals themselves are the shared region's (module/metrics_core.h), read
 * when asked, so they are exactly what /metrics shows.
 */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/buf.h"
#include "lib/xalloc.h"
#include "master/master_int.h"
#include "module/metrics.h"

#define STATS_SAMPLE_SECONDS MASTER_STATS_SAMPLE_SECONDS
#define STATS_WINDOW_SECONDS 60
#define STATS_RING (STATS_WINDOW_SECONDS / STATS_SAMPLE_SECONDS + 2)
#define STATS_MAX_MODULES 32

/* A total: the family's series summed, or only those whose label at
 * label_index has the value `value`. */
struct tracked {
    const char *key;          /* JSON name */
    const char *title;        /* for a person */
    const char *family;
    int label_index;          /* -1: all series */
    const char *value;
};

static const struct tracked tracked[] = {
    { "connections", "connections", "petrel_smtpd_connections_total", -1, NULL },
    { "messages_received", "messages received", "petrel_smtpd_messages_received_total", -1, NULL },
    { "bytes_received", "bytes received", "petrel_smtpd_received_bytes_total", -1, NULL },
    { "recipients_received", "recipients received", "petrel_smtpd_received_recipients_total", -1, NULL },
    { "rejects", "rejects", "petrel_smtpd_rejects_total", -1, NULL },
    { "replies_4xx", "4xx replies", "petrel_smtpd_replies_total", 1, "4xx" },
    { "replies_5xx", "5xx replies", "petrel_smtpd_replies_total", 1, "5xx" },
    { "deliveries_sent", "deliveries sent", "petrel_deliveries_total", 1, "sent" },
    { "deliveries_deferred", "deliveries deferred", "petrel_deliveries_total", 1, "deferred" },
    { "deliveries_bounced", "deliveries bounced", "petrel_deliveries_total", 1, "bounced" },
    { "tls_handshakes", "TLS handshakes", "petrel_smtpd_tls_handshakes_total", 1, "ok" },
    { "tls_failures", "TLS handshake failures", "petrel_smtpd_tls_handshakes_total", 1, "failed" },
    { "process_restarts", "process restarts", "petrel_process_restarts_total", -1, NULL },
};
#define NTRACKED (sizeof(tracked) / sizeof(tracked[0]))

/* Per module: calls, latency and circuit state from the core's module figures. */
struct module_row {
    char name[64];
    double calls, duration_count, duration_sum, circuit_open;
};
struct module_table {
    struct module_row rows[STATS_MAX_MODULES];
    size_t n;
};

struct sample {
    double when;              /* 0: unused */
    double v[NTRACKED];
    struct module_table modules;   /* for the modules' calls and latency over the last minute */
};

struct master_stats {
    struct sample ring[STATS_RING];
    unsigned next;
};

struct sum_arg {
    int label_index;
    const char *value;
    double total;
};

static void add_series(void *arg, const char *const *labels, size_t nlabels, double value, double sum)
{
    struct sum_arg *a = arg;
    (void)sum;
    if (a->label_index < 0 || ((size_t)a->label_index < nlabels && strcmp(labels[a->label_index], a->value) == 0))
        a->total += value;
}

static void read_totals(struct module_metrics *mm, double *out)
{
    for (size_t i = 0; i < NTRACKED; i++) {
        struct sum_arg a = { tracked[i].label_index, tracked[i].value, 0 };
        module_metrics_foreach(mm, tracked[i].family, add_series, &a);
        out[i] = a.total;
    }
}

struct master_stats *master_stats_new(void)
{
    return xcalloc(1, sizeof(struct master_stats));
}

void master_stats_free(struct master_stats *st)
{
    free(st);
}


/* The sample closest to a minute old (the oldest one when none is that old). */
static const struct sample *minute_ago(const struct master_stats *st, double now)
{
    const struct sample *best = NULL;
    for (unsigned i = 0; i < STATS_RING; i++) {
        const struct sample *s = &st->ring[i];
        if (s->when <= 0 || now - s->when < 1)
            continue;
        if (now - s->when <= STATS_WINDOW_SECONDS + 0.5) {
            if (best == NULL || s->when < best->when)
                best = s;
        }
    }
    return best;
}


static struct module_row *row_of(struct module_table *t, const char *name)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->rows[i].name, name) == 0)
            return &t->rows[i];
    if (t->n == STATS_MAX_MODULES)
        return NULL;
    struct module_row *r = &t->rows[t->n++];
    memset(r, 0, sizeof(*r));
    snprintf(r->name, sizeof(r->name), "%s", name);
    return r;
}

static void module_calls(void *arg, const char *const *labels, size_t nlabels, double value, double sum)
{
    struct module_row *r = nlabels ? row_of(arg, labels[0]) : NULL;
    (void)sum;
    if (r)
        r->calls += value;
}

static void module_durations(void *arg, const char *const *labels, size_t nlabels, double value, double sum)
{
    struct module_row *r = nlabels ? row_of(arg, labels[0]) : NULL;
    if (r) {
        r->duration_count += value;
        r->duration_sum += sum;
    }
}

static void module_circuit(void *arg, const char *const *labels, size_t nlabels, double value, double sum)
{
    struct module_row *r = nlabels ? row_of(arg, labels[0]) : NULL;
    (void)sum;
    if (r)
        r->circuit_open += value;
}

static void read_modules(struct module_metrics *mm, struct module_table *modules)
{
    modules->n = 0;
    module_metrics_foreach(mm, "petrel_module_hook_calls_total", module_calls, modules);
    module_metrics_foreach(mm, "petrel_module_hook_duration_seconds", module_durations, modules);
    module_metrics_foreach(mm, "petrel_module_circuit_open", module_circuit, modules);
}

void master_stats_sample(struct master_stats *st, struct module_metrics *mm, double now)
{
    struct sample *s = &st->ring[st->next];
    s->when = now;
    read_totals(mm, s->v);
    read_modules(mm, &s->modules);
    st->next = (st->next + 1) % STATS_RING;
}

/* A module's calls and mean latency since the sample `old` (NULL: unknown):
 * *calls is NAN when unknown, *mean NAN when there was no call. */
static void module_minute(const struct module_row *r, const struct sample *old, double *calls, double *mean)
{
    *calls = NAN;
    *mean = NAN;
    if (old == NULL)
        return;
    struct module_row before = { .calls = 0 };
    for (size_t i = 0; i < old->modules.n; i++)
        if (strcmp(old->modules.rows[i].name, r->name) == 0)
            before = old->modules.rows[i];
    *calls = r->calls - before.calls;
    double count = r->duration_count - before.duration_count;
    if (count > 0)
        *mean = (r->duration_sum - before.duration_sum) / count;
}

static void put_json_string(struct buf *out, const char *s)
{
    buf_putc(out, '"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            buf_printf(out, "\\%c", c);
        else if (c < 0x20)
            buf_printf(out, "\\u%04x", c);
        else
            buf_putc(out, (char)c);
    }
    buf_putc(out, '"');
}

static void put_json_number(struct buf *out, double v)
{
    if (!isfinite(v))
        buf_puts(out, "null");
    else if (v == floor(v) && fabs(v) < 1e15)
        buf_printf(out, "%.0f", v);
    else
        buf_printf(out, "%.3f", v);
}

static void human_duration(char *out, size_t size, double seconds)
{
    long s = (long)seconds;
    if (s < 120)
        snprintf(out, size, "%ld s", s);
    else if (s < 7200)
        snprintf(out, size, "%ldm %02lds", s / 60, s % 60);
    else if (s < 172800)
        snprintf(out, size, "%ldh %02ldm", s / 3600, (s % 3600) / 60);
    else
        snprintf(out, size, "%ldd %02ldh", s / 86400, (s % 86400) / 3600);
}

static void put_html(struct buf *out, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&': buf_puts(out, "&amp;"); break;
        case '<': buf_puts(out, "&lt;"); break;
        case '>': buf_puts(out, "&gt;"); break;
        case '"': buf_puts(out, "&quot;"); break;
        case '\'': buf_puts(out, "&#39;"); break;
        default:
            if ((unsigned char)*s < 0x20)
                buf_putc(out, ' ');
            else
                buf_putc(out, *s);
        }
    }
}

static void put_recent(void *arg, long long when, const char *line)
{
    struct buf *out = arg;
    time_t t = (time_t)when;
    struct tm tm;
    char stamp[32];
    gmtime_r(&t, &tm);
    strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%SZ", &tm);
    buf_printf(out, "<li><time>%s</time> ", stamp);
    put_html(out, line);
    buf_puts(out, "</li>\n");
}

static const char status_style[] =
    "body{font-family:sans-serif;margin:1.5em;color:#222;background:#fafafa}"
    "h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.4em}"
    "table{border-collapse:collapse}td,th{padding:.2em .8em;border-bottom:1px solid #ddd;text-align:right}"
    "td:first-child,th:first-child{text-align:left}"
    ".healthy{color:#070}.unhealthy{color:#b00;font-weight:bold}.open{color:#b00;font-weight:bold}"
    ".closed{color:#070}ol{font-family:monospace;font-size:.9em}footer{margin-top:2em;color:#777;font-size:.8em}";

static void render_html(const double *current, const double *rate, double window, const struct module_table *modules,
                        struct module_metrics *mm, const struct master_snapshot *snap, double uptime, struct buf *out)
{
    char up[32];
    human_duration(up, sizeof(up), uptime);
    buf_printf(out, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
               "<meta http-equiv=\"refresh\" content=\"%d\"><title>Petrel status</title><style>%s</style>"
               "</head><body>\n", MASTER_STATUS_REFRESH_SECONDS, status_style);
    buf_printf(out, "<h1>Petrel <span id=\"uptime\">up %s</span>, configuration generation "
               "<span id=\"generation\">%u</span></h1>\n", up, snap->generation);
    if (snap->health == NULL || snap->health[0] == '\0') {
        buf_puts(out, "<p id=\"health\" class=\"healthy\">healthy</p>\n");
    } else {
        buf_puts(out, "<p id=\"health\" class=\"unhealthy\">unhealthy: ");
        put_html(out, snap->health);
        buf_puts(out, "</p>\n");
    }
    buf_printf(out, "<p id=\"processes\">smtpd <span id=\"smtpd\">%d/%d</span>, qmgr <span id=\"qmgr\">%d/%d</span>, "
               "pickup <span id=\"pickup\">%d/%d</span>%s</p>\n", snap->smtpd, snap->smtpd_expected, snap->qmgr,
               snap->qmgr_expected, snap->pickup, snap->pickup_expected, snap->draining ? " (draining after a reload)" : "");
    buf_printf(out, "<h2>Traffic</h2>\n<table id=\"counters\"><tr><th></th><th>total</th><th>per minute%s</th></tr>\n",
               window > 0 && window < STATS_WINDOW_SECONDS - 1 ? " (since the start)" : "");
    for (size_t i = 0; i < NTRACKED; i++) {
        buf_printf(out, "<tr id=\"%s\"><td>%s</td><td class=\"total\">%.0f</td><td class=\"rate\">", tracked[i].key,
                   tracked[i].title, current[i]);
        if (isnan(rate[i]))
            buf_puts(out, "-");
        else
            buf_printf(out, "%.1f", rate[i]);
        buf_puts(out, "</td></tr>\n");
    }
    buf_puts(out, "</table>\n<h2>Queue</h2>\n<table id=\"queue\"><tr><th></th><th>messages</th><th>oldest</th></tr>\n");
    for (int i = 0; i < MASTER_QUEUES; i++) {
        char age[32] = "-";
        if (snap->queue[i].messages > 0)
            human_duration(age, sizeof(age), snap->queue[i].oldest_age);
        buf_printf(out, "<tr id=\"queue-%s\"><td>%s</td><td class=\"messages\">%ld</td><td class=\"oldest\">%s</td>"
                   "</tr>\n", snap->queue[i].name, snap->queue[i].name, snap->queue[i].messages, age);
    }
    buf_puts(out, "</table>\n<h2>Modules</h2>\n<table id=\"modules\"><tr><th></th><th>hook calls</th>"
             "<th>mean latency</th><th>circuit</th></tr>\n");
    for (size_t i = 0; i < modules->n; i++) {
        const struct module_row *r = &modules->rows[i];
        buf_puts(out, "<tr class=\"module\"><td>");
        put_html(out, r->name);
        buf_printf(out, "</td><td class=\"calls\">%.0f</td><td>", r->calls);
        if (r->duration_count > 0)
            buf_printf(out, "%.1f ms", r->duration_sum / r->duration_count * 1000);
        else
            buf_puts(out, "-");
        buf_printf(out, "</td><td class=\"circuit %s\">%s</td></tr>\n", r->circuit_open > 0 ? "open" : "closed",
                   r->circuit_open > 0 ? "open" : "closed");
    }
    if (modules->n == 0)
        buf_puts(out, "<tr><td colspan=\"4\">no module loaded</td></tr>\n");
    buf_puts(out, "</table>\n<h2>Busiest destinations</h2>\n");
    master_board_render(mm, MASTER_STATS_HTML, out);
    buf_puts(out, "<h2>Recent rejects</h2>\n<ol id=\"recent-rejects\">\n");
    module_metrics_recent_each(mm, put_recent, out);
    buf_printf(out, "</ol>\n<footer>Refreshes every %d s. The same figures: /metrics (Prometheus), petrelctl stats."
               "</footer>\n</body></html>\n", MASTER_STATUS_REFRESH_SECONDS);
}

void master_stats_render(const struct master_stats *st, struct module_metrics *mm, const struct master_snapshot *snap,
                         double now, enum master_stats_format format, struct buf *out)
{
    int json = format == MASTER_STATS_JSON;
    double current[NTRACKED];
    read_totals(mm, current);
    const struct sample *old = minute_ago(st, now);
    double window = old ? now - old->when : 0;
    double rate[NTRACKED];
    for (size_t i = 0; i < NTRACKED; i++)
        rate[i] = old ? (current[i] - old->v[i]) * 60.0 / window : NAN;
    struct module_table modules;
    read_modules(mm, &modules);
    double uptime = now - (double)snap->started;
    if (format == MASTER_STATS_HTML) {
        render_html(current, rate, old ? window : 0, &modules, mm, snap, uptime, out);
        return;
    }

    if (json) {
        buf_puts(out, "{\"uptime_seconds\":");
        put_json_number(out, floor(uptime));
        buf_printf(out, ",\"configuration_generation\":%u,\"rate_window_seconds\":", snap->generation);
        put_json_number(out, old ? window : NAN);
        buf_printf(out, ",\"processes\":{\"smtpd\":{\"running\":%d,\"expected\":%d},\"qmgr\":{\"running\":%d,"
                   "\"expected\":%d},\"pickup\":{\"running\":%d,\"expected\":%d},\"draining\":%d}",
                   snap->smtpd, snap->smtpd_expected, snap->qmgr, snap->qmgr_expected, snap->pickup,
                   snap->pickup_expected, snap->draining);
        buf_puts(out, ",\"counters\":{");
        for (size_t i = 0; i < NTRACKED; i++) {
            buf_printf(out, "%s\"%s\":{\"total\":", i ? "," : "", tracked[i].key);
            put_json_number(out, current[i]);
            buf_puts(out, ",\"per_minute\":");
            put_json_number(out, rate[i]);
            buf_putc(out, '}');
        }
        buf_puts(out, "},\"queue\":{");
        for (int i = 0; i < MASTER_QUEUES; i++) {
            buf_printf(out, "%s\"%s\":{\"messages\":%ld,\"oldest_age_seconds\":", i ? "," : "", snap->queue[i].name,
                       snap->queue[i].messages);
            put_json_number(out, floor(snap->queue[i].oldest_age));
            buf_putc(out, '}');
        }
        buf_puts(out, "},\"modules\":[");
        for (size_t i = 0; i < modules.n; i++) {
            const struct module_row *r = &modules.rows[i];
            buf_puts(out, i ? ",{\"module\":" : "{\"module\":");
            put_json_string(out, r->name);
            buf_puts(out, ",\"hook_calls\":");
            put_json_number(out, r->calls);
            buf_puts(out, ",\"mean_hook_seconds\":");
            put_json_number(out, r->duration_count > 0 ? r->duration_sum / r->duration_count : NAN);
            double calls, mean;
            module_minute(r, old, &calls, &mean);
            buf_puts(out, ",\"hook_calls_per_minute\":");
            put_json_number(out, old ? calls * 60.0 / window : NAN);
            buf_puts(out, ",\"mean_hook_seconds_last_minute\":");
            if (isnan(mean))
                buf_puts(out, "null");
            else
                buf_printf(out, "%.6f", mean);
            buf_printf(out, ",\"circuit_open\":%s}", r->circuit_open > 0 ? "true" : "false");
        }
        buf_puts(out, "],\"destinations\":");
        master_board_render(mm, MASTER_STATS_JSON, out);
        buf_putc(out, '}');
        return;
    }

    char up[32];
    human_duration(up, sizeof(up), uptime);
    buf_printf(out, "petrel: up %s, configuration generation %u\n", up, snap->generation);
    buf_printf(out, "processes: smtpd %d/%d, qmgr %d/%d, pickup %d/%d", snap->smtpd, snap->smtpd_expected, snap->qmgr,
               snap->qmgr_expected, snap->pickup, snap->pickup_expected);
    if (snap->draining)
        buf_printf(out, " (+%d draining)", snap->draining);
    buf_putc(out, '\n');
    if (old)
        buf_printf(out, "\n%-24s %14s %14s\n", "", "total", window >= STATS_WINDOW_SECONDS - 1 ? "last minute"
                                                                                                : "per minute");
    else
        buf_printf(out, "\n%-24s %14s %14s\n", "", "total", "per minute");
    for (size_t i = 0; i < NTRACKED; i++) {
        char rate_text[32];
        if (isnan(rate[i]))
            snprintf(rate_text, sizeof(rate_text), "-");
        else
            snprintf(rate_text, sizeof(rate_text), "%.1f/min", rate[i]);
        buf_printf(out, "%-24s %14.0f %14s\n", tracked[i].title, current[i], rate_text);
    }
    if (old && window < STATS_WINDOW_SECONDS - 1)
        buf_printf(out, "(rates over the %.0f s since the start)\n", window);
    buf_puts(out, "\nqueue:");
    for (int i = 0; i < MASTER_QUEUES; i++) {
        buf_printf(out, "%s %s %ld", i ? "," : "", snap->queue[i].name, snap->queue[i].messages);
        if (snap->queue[i].messages > 0) {
            char age[32];
            human_duration(age, sizeof(age), snap->queue[i].oldest_age);
            buf_printf(out, " (oldest %s)", age);
        }
    }
    buf_putc(out, '\n');
    if (modules.n) {
        buf_puts(out, "\nmodules:\n");
        for (size_t i = 0; i < modules.n; i++) {
            const struct module_row *r = &modules.rows[i];
            buf_printf(out, "  %-20s %10.0f hook calls", r->name, r->calls);
            if (r->duration_count > 0)
                buf_printf(out, ", mean %.1f ms", r->duration_sum / r->duration_count * 1000);
            buf_printf(out, ", circuit %s", r->circuit_open > 0 ? "open" : "closed");
            double calls, mean;
            module_minute(r, old, &calls, &mean);
            if (!isnan(calls)) {
                buf_printf(out, "; %.1f calls/min", calls * 60.0 / window);
                if (!isnan(mean))
                    buf_printf(out, ", mean %.1f ms", mean * 1000);
            }
            buf_putc(out, '\n');
        }
    }
    master_board_render(mm, MASTER_STATS_TEXT, out);
}
