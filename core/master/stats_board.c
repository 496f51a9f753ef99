/*
 * The busiest destinations in petrelctl stats (and so petrelctl top), its
 * JSON and /status: the board the queue manager publishes every second in
 * the shared region (qmgr/board.c says what each field means), read here
 * as it is and laid out for a person.
 *
 * The board's text is printable ASCII by construction (the queue manager
 * replaces anything else), and is still escaped for JSON and HTML here. A
 * board older than BOARD_STALE_SECONDS is from a queue manager that is
 * gone: it is shown with its age rather than as current.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/buf.h"
#include "master/master_int.h"
#include "module/metrics.h"

#define BOARD_FIELDS 15
#define BOARD_STALE_SECONDS 5

struct board_row {
    const char *transport, *destination;
    unsigned long active, in_delivery, deferred, jobs, limit;
    unsigned long minute_sent, minute_deferred, minute_bounced;
    unsigned long long sent, deferred_total, bounced;
    double error_age;             /* < 0: no error */
    const char *error;
};

/* Splits one line of the board in place; 0, or -1 when it is not one. */
static int parse_row(char *line, struct board_row *r)
{
    char *f[BOARD_FIELDS];
    int n = 0;
    for (char *p = line; n < BOARD_FIELDS; n++) {
        f[n] = p;
        char *tab = strchr(p, '\t');
        if (tab == NULL) {
            n++;
            break;
        }
        *tab = '\0';
        p = tab + 1;
    }
    if (n != BOARD_FIELDS)
        return -1;
    r->transport = f[0];
    r->destination = f[1];
    r->active = strtoul(f[2], NULL, 10);
    r->in_delivery = strtoul(f[3], NULL, 10);
    r->deferred = strtoul(f[4], NULL, 10);
    r->jobs = strtoul(f[5], NULL, 10);
    r->limit = strtoul(f[6], NULL, 10);
    r->minute_sent = strtoul(f[7], NULL, 10);
    r->minute_deferred = strtoul(f[8], NULL, 10);
    r->minute_bounced = strtoul(f[9], NULL, 10);
    r->sent = strtoull(f[10], NULL, 10);
    r->deferred_total = strtoull(f[11], NULL, 10);
    r->bounced = strtoull(f[12], NULL, 10);
    r->error_age = strtod(f[13], NULL);
    r->error = f[14];
    return 0;
}

static void put_json_text(struct buf *out, const char *s)
{
    buf_putc(out, '"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            buf_printf(out, "\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            buf_printf(out, "\\u%04x", (unsigned char)*s);
        else
            buf_putc(out, *s);
    }
    buf_putc(out, '"');
}

static void put_html_text(struct buf *out, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&': buf_puts(out, "&amp;"); break;
        case '<': buf_puts(out, "&lt;"); break;
        case '>': buf_puts(out, "&gt;"); break;
        case '"': buf_puts(out, "&quot;"); break;
        case '\'': buf_puts(out, "&#39;"); break;
        default: buf_putc(out, (unsigned char)*s < 0x20 ? ' ' : *s);
        }
    }
}

/* "smtp:[192.0.2.1]:25" for an SMTP or LMTP next hop (transport(5)'s
 * syntax), the transport alone for the others. */
static void display_name(char *out, size_t size, const struct board_row *r)
{
    if (r->destination[0])
        snprintf(out, size, "%s:%s", r->transport, r->destination);
    else
        snprintf(out, size, "%s", r->transport);
}

static void render_row(const struct board_row *r, double age, enum master_stats_format format, int first,
                       struct buf *out)
{
    char name[600];
    display_name(name, sizeof(name), r);
    double error_age = r->error_age >= 0 ? r->error_age + age : -1;
    if (format == MASTER_STATS_JSON) {
        buf_puts(out, first ? "{\"transport\":" : ",{\"transport\":");
        put_json_text(out, r->transport);
        buf_puts(out, ",\"destination\":");
        if (r->destination[0])
            put_json_text(out, r->destination);
        else
            buf_puts(out, "null");
        buf_printf(out, ",\"active\":%lu,\"in_delivery\":%lu,\"deferred\":%lu,\"concurrency\":%lu,"
                   "\"concurrency_limit\":%lu,\"last_minute\":{\"sent\":%lu,\"deferred\":%lu,\"bounced\":%lu},"
                   "\"total\":{\"sent\":%llu,\"deferred\":%llu,\"bounced\":%llu},\"last_error\":", r->active,
                   r->in_delivery, r->deferred, r->jobs, r->limit, r->minute_sent, r->minute_deferred,
                   r->minute_bounced, r->sent, r->deferred_total, r->bounced);
        if (error_age >= 0) {
            buf_printf(out, "{\"seconds_ago\":%.0f,\"text\":", error_age);
            put_json_text(out, r->error);
            buf_puts(out, "}}");
        } else {
            buf_puts(out, "null}");
        }
        return;
    }
    if (format == MASTER_STATS_HTML) {
        buf_puts(out, "<tr class=\"destination\"><td class=\"name\">");
        put_html_text(out, name);
        buf_printf(out, "</td><td class=\"active\">%lu</td><td class=\"concurrency\">%lu/%lu</td>"
                   "<td class=\"deferred\">%lu</td><td class=\"sent\">%lu</td><td class=\"deferrals\">%lu</td>"
                   "<td class=\"bounces\">%lu</td><td class=\"error\">", r->active, r->jobs, r->limit, r->deferred,
                   r->minute_sent, r->minute_deferred, r->minute_bounced);
        if (error_age >= 0) {
            buf_printf(out, "%.0f s ago: ", error_age);
            put_html_text(out, r->error);
        } else {
            buf_puts(out, "-");
        }
        buf_puts(out, "</td></tr>\n");
        return;
    }
    if (strlen(name) > 30)
        memcpy(name + 27, "...", 4);
    char concurrency[48];
    snprintf(concurrency, sizeof(concurrency), "%lu/%lu", r->jobs, r->limit);
    buf_printf(out, "  %-30s %7lu %7s %8lu %8lu %8lu %8lu  ", name, r->active, concurrency, r->deferred,
               r->minute_sent, r->minute_deferred, r->minute_bounced);
    if (error_age >= 0) {
        char error[64];
        snprintf(error, sizeof(error), "%s", r->error);
        if (strlen(r->error) >= sizeof(error))
            memcpy(error + sizeof(error) - 4, "...", 4);
        char ago[32];
        if (error_age < 120)
            snprintf(ago, sizeof(ago), "%.0f s", error_age);
        else if (error_age < 7200)
            snprintf(ago, sizeof(ago), "%.0f min", error_age / 60);
        else
            snprintf(ago, sizeof(ago), "%.0f h", error_age / 3600);
        buf_printf(out, "%s ago: %s\n", ago, error);
    } else {
        buf_puts(out, "-\n");
    }
}

void master_board_render(struct module_metrics *mm, enum master_stats_format format, struct buf *out)
{
    char board[METRICS_BOARD_SIZE];
    long long when = module_metrics_board_get(mm, board, sizeof(board));
    double age = when > 0 ? (double)(time(NULL) - when) : 0;
    if (age < 0)
        age = 0;
    if (format == MASTER_STATS_JSON)
        buf_putc(out, '[');
    else if (format == MASTER_STATS_HTML)
        buf_puts(out, "<table id=\"destinations\"><tr><th>destination</th><th>active</th>"
                 "<th>concurrency</th><th>deferred</th>"
                 "<th>sent last minute</th><th>deferrals last minute</th><th>bounces last minute</th>"
                 "<th>last error</th></tr>\n");
    else if (when > 0)
        buf_printf(out, "\ndestinations%s:\n  %-30s %7s %7s %8s %8s %8s %8s  %s\n",
                   age > BOARD_STALE_SECONDS ? " (the queue manager's last report)" : "", "(busiest first)",
                   "active", "conc", "deferred", "sent/m", "defer/m", "bounce/m", "last error");
    int rows = 0;
    for (char *line = board, *next; when > 0 && *line; line = next) {
        char *nl = strchr(line, '\n');
        next = nl ? nl + 1 : line + strlen(line);
        if (nl)
            *nl = '\0';
        struct board_row r;
        if (parse_row(line, &r) == 0)
            render_row(&r, age, format, rows++ == 0, out);
    }
    if (format == MASTER_STATS_JSON) {
        buf_putc(out, ']');
    } else if (format == MASTER_STATS_HTML) {
        if (rows == 0)
            buf_puts(out, "<tr><td colspan=\"8\">no delivery yet</td></tr>\n");
        buf_puts(out, "</table>\n");
        if (when > 0 && age > BOARD_STALE_SECONDS)
            buf_printf(out, "<p>As the queue manager last reported it, %.0f s ago.</p>\n", age);
    } else if (when > 0) {
        if (rows == 0)
            buf_puts(out, "  no delivery yet\n");
        if (age > BOARD_STALE_SECONDS)
            buf_printf(out, "  (%.0f s ago)\n", age);
    }
}
