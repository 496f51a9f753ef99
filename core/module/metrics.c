/*
 * The shared metrics region (see metrics.h).
 *
 * Layout: a header with a robust process-shared mutex, the family table
 * and the series table. Families and series are only ever added, under the
 * mutex; a slot becomes visible when its `ready` flag is stored with
 * release order, and readers (updates, rendering) load it with acquire
 * order, so updates never take the lock. A series is found by open
 * addressing on a hash of its family and label values. Values are doubles
 * kept as 64-bit patterns and added with compare-and-swap; bucket and
 * sample counts are plain atomic integers.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "lib/buf.h"
#include "lib/hash.h"
#include "lib/log.h"
#include "module/metrics.h"

#define NAME_MAX_LEN 96
#define HELP_MAX_LEN 200
#define LABEL_NAME_MAX 32
#define KEY_MAX (METRICS_MAX_LABELS * (METRICS_MAX_LABEL_VALUE + 1))
#define KEY_SEP '\x1f'

static const double latency_buckets[] = { 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30 };

struct metric_family {
    uint32_t ready;
    uint8_t type, nlabels, nbuckets;
    char name[NAME_MAX_LEN];
    char help[HELP_MAX_LEN];
    char labels[METRICS_MAX_LABELS][LABEL_NAME_MAX];
    double buckets[METRICS_MAX_BUCKETS];
};

struct metric_series {
    uint32_t ready;
    uint16_t family;
    uint32_t hash;
    char key[KEY_MAX];                    /* label values joined by KEY_SEP */
    union {
        uint64_t total;                   /* counter: a double's bits */
        uint64_t column[METRICS_MAX_PROCESSES];   /* gauge: one double per process */
        struct {
            uint64_t count;
            uint64_t sum;                 /* a double's bits */
            uint64_t bucket[METRICS_MAX_BUCKETS];   /* not cumulative */
        } histogram;
    } v;
};

struct metric_recent {
    uint64_t seq;                         /* odd while being written; 0: never written */
    int64_t when;
    char line[METRICS_RECENT_LINE];
};

struct module_metrics {
    pthread_mutex_t lock;
    size_t map_size;
    uint32_t nfamilies;
    struct metric_family families[METRICS_MAX_FAMILIES];
    struct metric_series series[METRICS_MAX_SERIES];
    uint64_t recent_next;                 /* entries ever written */
    struct metric_recent recent[METRICS_RECENT];
    int64_t board_when;                   /* 0: no board yet */
    char board[METRICS_BOARD_SIZE];
};

struct module_metrics *module_metrics_create(void)
{
    size_t size = sizeof(struct module_metrics);
    struct module_metrics *mm = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mm == MAP_FAILED) {
        msg_error("metrics: cannot map %zu bytes: %s; metrics are not recorded", size, strerror(errno));
        return NULL;
    }
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&mm->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    mm->map_size = size;
    return mm;
}

void module_metrics_destroy(struct module_metrics *mm)
{
    if (mm)
        munmap(mm, mm->map_size);
}

static void lock(struct module_metrics *mm)
{
    if (pthread_mutex_lock(&mm->lock) == EOWNERDEAD)
        pthread_mutex_consistent(&mm->lock);   /* additions are published last: the tables are sane */
}

static int ready(const uint32_t *flag)
{
    return __atomic_load_n(flag, __ATOMIC_ACQUIRE) != 0;
}

static void publish(uint32_t *flag)
{
    __atomic_store_n(flag, 1, __ATOMIC_RELEASE);
}

static double bits_to_double(uint64_t bits)
{
    double d;
    memcpy(&d, &bits, sizeof(d));
    return d;
}

static uint64_t double_to_bits(double d)
{
    uint64_t bits;
    memcpy(&bits, &d, sizeof(bits));
    return bits;
}

static void atomic_add_double(uint64_t *slot, double value)
{
    uint64_t old = __atomic_load_n(slot, __ATOMIC_RELAXED);
    for (;;) {
        uint64_t new = double_to_bits(bits_to_double(old) + value);
        if (__atomic_compare_exchange_n(slot, &old, new, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            return;
    }
}

/* ------------------------------------------------------------------ */
/* families                                                            */

static int valid_name(const char *name, size_t max)
{
    size_t n = strlen(name);
    if (n == 0 || n >= max || (name[0] >= '0' && name[0] <= '9'))
        return 0;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
            return 0;
    return 1;
}

static int same_shape(const struct metric_family *f, enum metric_type type, const char *const *labels, size_t nlabels,
                      const double *buckets, size_t nbuckets)
{
    if (f->type != type || f->nlabels != nlabels || (type == METRIC_HISTOGRAM && f->nbuckets != nbuckets))
        return 0;
    for (size_t i = 0; i < nlabels; i++)
        if (strcmp(f->labels[i], labels[i]) != 0)
            return 0;
    for (size_t i = 0; type == METRIC_HISTOGRAM && i < nbuckets; i++)
        if (f->buckets[i] != buckets[i])
            return 0;
    return 1;
}

int module_metrics_family(struct module_metrics *mm, enum metric_type type, const char *name, const char *help,
                          const char *const *labels, const double *buckets, size_t nbuckets, char *error,
                          size_t error_size)
{
    size_t nlabels = 0;
    while (labels && labels[nlabels])
        nlabels++;
    if (mm == NULL) {
        snprintf(error, error_size, "metrics are not recorded in this process");
        return -1;
    }
    if (name == NULL || !valid_name(name, NAME_MAX_LEN)) {
        snprintf(error, error_size, "bad metric name \"%.100s\" (lower-case letters, digits and _, at most %d)",
                 name ? name : "(null)", NAME_MAX_LEN - 1);
        return -1;
    }
    if (type == METRIC_COUNTER && (strlen(name) < 7 || strcmp(name + strlen(name) - 6, "_total") != 0)) {
        snprintf(error, error_size, "counter %s: a counter's name ends in _total", name);
        return -1;
    }
    if (type != METRIC_COUNTER && strlen(name) >= 6 && strcmp(name + strlen(name) - 6, "_total") == 0) {
        snprintf(error, error_size, "%s: only counters end in _total", name);
        return -1;
    }
    if (nlabels > METRICS_MAX_LABELS) {
        snprintf(error, error_size, "%s: at most %d labels", name, METRICS_MAX_LABELS);
        return -1;
    }
    for (size_t i = 0; i < nlabels; i++) {
        if (!valid_name(labels[i], LABEL_NAME_MAX) || strncmp(labels[i], "__", 2) == 0 ||
            (type == METRIC_HISTOGRAM && strcmp(labels[i], "le") == 0)) {
            snprintf(error, error_size, "%s: bad label name \"%.40s\"", name, labels[i]);
            return -1;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(labels[i], labels[j]) == 0) {
                snprintf(error, error_size, "%s: label \"%s\" given twice", name, labels[i]);
                return -1;
            }
    }
    if (type == METRIC_HISTOGRAM) {
        if (buckets == NULL) {
            buckets = latency_buckets;
            nbuckets = sizeof(latency_buckets) / sizeof(latency_buckets[0]);
        }
        if (nbuckets == 0 || nbuckets > METRICS_MAX_BUCKETS) {
            snprintf(error, error_size, "%s: 1 to %d histogram buckets", name, METRICS_MAX_BUCKETS);
            return -1;
        }
        for (size_t i = 0; i < nbuckets; i++)
            if (!isfinite(buckets[i]) || (i > 0 && buckets[i] <= buckets[i - 1])) {
                snprintf(error, error_size, "%s: histogram buckets must be finite and ascending", name);
                return -1;
            }
    } else {
        nbuckets = 0;
    }
    lock(mm);
    int found = -1;
    for (uint32_t i = 0; i < mm->nfamilies; i++) {
        if (strcmp(mm->families[i].name, name) == 0) {
            found = (int)i;
            break;
        }
    }
    if (found >= 0) {
        int same = same_shape(&mm->families[found], type, labels, nlabels, buckets, nbuckets);
        pthread_mutex_unlock(&mm->lock);
        if (!same) {
            snprintf(error, error_size, "%s is already registered with another type, labels or buckets", name);
            return -1;
        }
        return found;
    }
    if (mm->nfamilies == METRICS_MAX_FAMILIES) {
        pthread_mutex_unlock(&mm->lock);
        snprintf(error, error_size, "%s: the metrics table is full (%d metric names)", name, METRICS_MAX_FAMILIES);
        return -1;
    }
    struct metric_family *f = &mm->families[mm->nfamilies];
    f->type = (uint8_t)type;
    f->nlabels = (uint8_t)nlabels;
    f->nbuckets = (uint8_t)nbuckets;
    snprintf(f->name, sizeof(f->name), "%s", name);
    snprintf(f->help, sizeof(f->help), "%s", help ? help : "");
    for (size_t i = 0; i < nlabels; i++)
        snprintf(f->labels[i], sizeof(f->labels[i]), "%s", labels[i]);
    for (size_t i = 0; i < nbuckets; i++)
        f->buckets[i] = buckets[i];
    publish(&f->ready);
    int index = (int)mm->nfamilies;
    __atomic_store_n(&mm->nfamilies, mm->nfamilies + 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&mm->lock);
    return index;
}

size_t module_metrics_nlabels(const struct module_metrics *mm, int family)
{
    return mm && family >= 0 ? mm->families[family].nlabels : 0;
}

enum metric_type module_metrics_type(const struct module_metrics *mm, int family)
{
    return (enum metric_type)mm->families[family].type;
}

/* ------------------------------------------------------------------ */
/* series                                                              */

/* The key of a label-value tuple; values longer than the limit are cut,
 * separators and NULs cannot occur in C strings but KEY_SEP is replaced. */
static void make_key(char *key, const char *const *values, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (i)
            key[k++] = KEY_SEP;
        const char *v = values && values[i] ? values[i] : "";
        for (size_t j = 0; v[j] && j < METRICS_MAX_LABEL_VALUE; j++)
            key[k++] = v[j] == KEY_SEP ? '?' : v[j];
    }
    key[k] = '\0';
}

static uint32_t key_hash(int family, const char *key)
{
    return hash_string(key) * 31u + (uint32_t)family;
}

static struct metric_series *probe(struct module_metrics *mm, int family, const char *key, uint32_t h, int *empty)
{
    *empty = -1;
    for (uint32_t i = 0; i < METRICS_MAX_SERIES; i++) {
        uint32_t slot = (h + i) % METRICS_MAX_SERIES;
        struct metric_series *s = &mm->series[slot];
        if (!ready(&s->ready)) {
            *empty = (int)slot;
            return NULL;   /* series are never removed: the key is not further on */
        }
        if (s->hash == h && s->family == family && strcmp(s->key, key) == 0)
            return s;
    }
    return NULL;
}

static struct metric_series *series_of(struct module_metrics *mm, int family, const char *const *values)
{
    if (mm == NULL || family < 0 || (uint32_t)family >= __atomic_load_n(&mm->nfamilies, __ATOMIC_ACQUIRE))
        return NULL;
    char key[KEY_MAX];
    make_key(key, values, mm->families[family].nlabels);
    uint32_t h = key_hash(family, key);
    int empty;
    struct metric_series *s = probe(mm, family, key, h, &empty);
    if (s)
        return s;
    lock(mm);
    s = probe(mm, family, key, h, &empty);   /* another process may have added it meanwhile */
    if (s == NULL && empty >= 0) {
        s = &mm->series[empty];
        s->family = (uint16_t)family;
        s->hash = h;
        snprintf(s->key, sizeof(s->key), "%s", key);
        publish(&s->ready);
    }
    pthread_mutex_unlock(&mm->lock);
    if (s == NULL) {
        static int told;   /* once per process */
        if (!told++)
            msg_warn("metrics: the shared metrics table is full (%d series): new series (first: %s) are not "
                     "recorded", METRICS_MAX_SERIES, mm->families[family].name);
    }
    return s;
}

void module_metrics_add(struct module_metrics *mm, int family, const char *const *values, double value,
                        unsigned process)
{
    struct metric_series *s = series_of(mm, family, values);
    if (s == NULL || !isfinite(value))
        return;
    switch (mm->families[family].type) {
    case METRIC_COUNTER:
        if (value > 0)
            atomic_add_double(&s->v.total, value);
        break;
    case METRIC_GAUGE:
        if (process < METRICS_MAX_PROCESSES)
            atomic_add_double(&s->v.column[process], value);
        break;
    default:
        break;
    }
}

void module_metrics_set(struct module_metrics *mm, int family, const char *const *values, double value,
                        unsigned process)
{
    struct metric_series *s = series_of(mm, family, values);
    if (s == NULL || !isfinite(value) || mm->families[family].type != METRIC_GAUGE || process >= METRICS_MAX_PROCESSES)
        return;
    __atomic_store_n(&s->v.column[process], double_to_bits(value), __ATOMIC_RELAXED);
}

void module_metrics_observe(struct module_metrics *mm, int family, const char *const *values, double value)
{
    struct metric_series *s = series_of(mm, family, values);
    if (s == NULL || !isfinite(value) || mm->families[family].type != METRIC_HISTOGRAM)
        return;
    const struct metric_family *f = &mm->families[family];
    for (unsigned i = 0; i < f->nbuckets; i++) {
        if (value <= f->buckets[i]) {
            __atomic_add_fetch(&s->v.histogram.bucket[i], 1, __ATOMIC_RELAXED);
            break;
        }
    }
    atomic_add_double(&s->v.histogram.sum, value);
    __atomic_add_fetch(&s->v.histogram.count, 1, __ATOMIC_RELAXED);
}

void module_metrics_forget_process(struct module_metrics *mm, unsigned process)
{
    if (mm == NULL || process >= METRICS_MAX_PROCESSES)
        return;
    for (uint32_t i = 0; i < METRICS_MAX_SERIES; i++) {
        struct metric_series *s = &mm->series[i];
        if (ready(&s->ready) && mm->families[s->family].type == METRIC_GAUGE)
            __atomic_store_n(&s->v.column[process], double_to_bits(0), __ATOMIC_RELAXED);
    }
}

size_t module_metrics_foreach(struct module_metrics *mm, const char *name, metrics_series_fn *fn, void *arg)
{
    if (mm == NULL)
        return 0;
    uint32_t nfamilies = __atomic_load_n(&mm->nfamilies, __ATOMIC_ACQUIRE);
    int family = -1;
    for (uint32_t i = 0; i < nfamilies; i++)
        if (ready(&mm->families[i].ready) && strcmp(mm->families[i].name, name) == 0)
            family = (int)i;
    if (family < 0)
        return 0;
    const struct metric_family *f = &mm->families[family];
    size_t n = 0;
    for (int i = 0; i < METRICS_MAX_SERIES; i++) {
        const struct metric_series *s = &mm->series[i];
        if (!ready(&s->ready) || s->family != family)
            continue;
        char key[KEY_MAX];
        char *labels[METRICS_MAX_LABELS];
        snprintf(key, sizeof(key), "%s", s->key);
        char *v = key;
        for (unsigned l = 0; l < f->nlabels; l++) {
            labels[l] = v;
            char *sep = strchr(v, KEY_SEP);
            if (sep) {
                *sep = '\0';
                v = sep + 1;
            } else {
                v += strlen(v);
            }
        }
        double value = 0, sum = 0;
        if (f->type == METRIC_COUNTER) {
            value = bits_to_double(__atomic_load_n(&s->v.total, __ATOMIC_RELAXED));
        } else if (f->type == METRIC_GAUGE) {
            for (int p = 0; p < METRICS_MAX_PROCESSES; p++)
                value += bits_to_double(__atomic_load_n(&s->v.column[p], __ATOMIC_RELAXED));
        } else {
            value = (double)__atomic_load_n(&s->v.histogram.count, __ATOMIC_RELAXED);
            sum = bits_to_double(__atomic_load_n(&s->v.histogram.sum, __ATOMIC_RELAXED));
        }
        fn(arg, (const char *const *)labels, f->nlabels, value, sum);
        n++;
    }
    return n;
}

/* ------------------------------------------------------------------ */
/* recent events                                                       */

void module_metrics_recent_add(struct module_metrics *mm, const char *line)
{
    if (mm == NULL)
        return;
    uint64_t n = __atomic_fetch_add(&mm->recent_next, 1, __ATOMIC_RELAXED);
    struct metric_recent *r = &mm->recent[n % METRICS_RECENT];
    /* Two writers on one entry (the ring wrapped within one write) both
       leave it odd-then-even; a reader sees a changed or odd seq and skips. */
    uint64_t seq = __atomic_add_fetch(&r->seq, 1, __ATOMIC_ACQ_REL);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    r->when = (int64_t)time(NULL);
    char copy[METRICS_RECENT_LINE];
    snprintf(copy, sizeof(copy), "%s", line);
    memcpy(r->line, copy, sizeof(copy));
    __atomic_store_n(&r->seq, seq + 1, __ATOMIC_RELEASE);
}

void module_metrics_recent_each(struct module_metrics *mm, metrics_recent_fn *fn, void *arg)
{
    if (mm == NULL)
        return;
    uint64_t next = __atomic_load_n(&mm->recent_next, __ATOMIC_ACQUIRE);
    for (uint64_t k = 0; k < METRICS_RECENT && k < next; k++) {
        const struct metric_recent *r = &mm->recent[(next - 1 - k) % METRICS_RECENT];
        uint64_t before = __atomic_load_n(&r->seq, __ATOMIC_ACQUIRE);
        if (before == 0 || (before & 1))
            continue;
        char line[METRICS_RECENT_LINE];
        memcpy(line, r->line, sizeof(line));
        long long when = (long long)r->when;
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&r->seq, __ATOMIC_RELAXED) != before)
            continue;
        line[sizeof(line) - 1] = '\0';
        fn(arg, when, line);
    }
}

/* ------------------------------------------------------------------ */
/* the queue manager's destination board                              */

void module_metrics_board_set(struct module_metrics *mm, const char *text)
{
    if (mm == NULL)
        return;
    lock(mm);
    snprintf(mm->board, sizeof(mm->board), "%s", text);
    mm->board_when = (int64_t)time(NULL);
    pthread_mutex_unlock(&mm->lock);
}

long long module_metrics_board_get(struct module_metrics *mm, char *out, size_t size)
{
    if (size)
        out[0] = '\0';
    if (mm == NULL || size == 0)
        return 0;
    lock(mm);
    snprintf(out, size, "%s", mm->board);
    long long when = (long long)mm->board_when;
    pthread_mutex_unlock(&mm->lock);
    return when;
}

/* ------------------------------------------------------------------ */
/* the Prometheus text format                                          */

static void put_number(struct buf *out, double v)
{
    if (isnan(v))
        buf_puts(out, "NaN");
    else if (isinf(v))
        buf_puts(out, v > 0 ? "+Inf" : "-Inf");
    else if (v == (double)(long long)v && fabs(v) < 1e15)
        buf_printf(out, "%lld", (long long)v);
    else {
        /* The shortest text that reads back as the same double (0.1, not 0.10000000000000001). */
        char text[40];
        for (int precision = 15; precision <= 17; precision++) {
            snprintf(text, sizeof(text), "%.*g", precision, v);
            if (strtod(text, NULL) == v)
                break;
        }
        buf_puts(out, text);
    }
}

/* Label values escape backslash, double quote and line feed; HELP text
 * backslash and line feed. */
static void put_escaped(struct buf *out, const char *s, size_t n, int quotes)
{
    for (size_t i = 0; i < n && s[i]; i++) {
        if (s[i] == '\\')
            buf_puts(out, "\\\\");
        else if (s[i] == '\n')
            buf_puts(out, "\\n");
        else if (quotes && s[i] == '"')
            buf_puts(out, "\\\"");
        else
            buf_putc(out, s[i]);
    }
}

static void put_labels(struct buf *out, const struct metric_family *f, const char *key, const char *le)
{
    if (f->nlabels == 0 && le == NULL)
        return;
    buf_putc(out, '{');
    const char *v = key;
    for (unsigned i = 0; i < f->nlabels; i++) {
        const char *end = strchr(v, KEY_SEP);
        size_t n = end ? (size_t)(end - v) : strlen(v);
        buf_printf(out, "%s%s=\"", i ? "," : "", f->labels[i]);
        put_escaped(out, v, n, 1);
        buf_putc(out, '"');
        v = end ? end + 1 : v + n;
    }
    if (le)
        buf_printf(out, "%sle=\"%s\"", f->nlabels ? "," : "", le);
    buf_putc(out, '}');
}

static int by_key(const void *a, const void *b, void *arg)
{
    const struct module_metrics *mm = arg;
    return strcmp(mm->series[*(const int *)a].key, mm->series[*(const int *)b].key);
}

void module_metrics_render(struct module_metrics *mm, struct buf *out)
{
    module_metrics_render_as(mm, out, 0);
}

void module_metrics_render_as(struct module_metrics *mm, struct buf *out, int openmetrics)
{
    if (mm == NULL)
        return;
    uint32_t nfamilies = __atomic_load_n(&mm->nfamilies, __ATOMIC_ACQUIRE);
    int *members = malloc(METRICS_MAX_SERIES * sizeof(*members));
    if (members == NULL)
        return;
    for (uint32_t fi = 0; fi < nfamilies; fi++) {
        const struct metric_family *f = &mm->families[fi];
        if (!ready(&f->ready))
            continue;
        static const char *const types[] = { "counter", "gauge", "histogram" };
        /* OpenMetrics names a counter's family without the _total its
           samples carry (every counter's name ends in _total). */
        int family_len = (int)strlen(f->name);
        if (openmetrics && f->type == METRIC_COUNTER)
            family_len -= 6;
        buf_printf(out, "# HELP %.*s ", family_len, f->name);
        put_escaped(out, f->help, sizeof(f->help), 0);
        buf_printf(out, "\n# TYPE %.*s %s\n", family_len, f->name, types[f->type]);
        int n = 0;
        for (int i = 0; i < METRICS_MAX_SERIES; i++)
            if (ready(&mm->series[i].ready) && mm->series[i].family == fi)
                members[n++] = i;
        qsort_r(members, (size_t)n, sizeof(*members), by_key, mm);
        for (int k = 0; k < n; k++) {
            const struct metric_series *s = &mm->series[members[k]];
            if (f->type == METRIC_COUNTER) {
                buf_puts(out, f->name);
                put_labels(out, f, s->key, NULL);
                buf_putc(out, ' ');
                put_number(out, bits_to_double(__atomic_load_n(&s->v.total, __ATOMIC_RELAXED)));
                buf_putc(out, '\n');
            } else if (f->type == METRIC_GAUGE) {
                double sum = 0;
                for (int p = 0; p < METRICS_MAX_PROCESSES; p++)
                    sum += bits_to_double(__atomic_load_n(&s->v.column[p], __ATOMIC_RELAXED));
                buf_puts(out, f->name);
                put_labels(out, f, s->key, NULL);
                buf_putc(out, ' ');
                put_number(out, sum);
                buf_putc(out, '\n');
            } else {
                uint64_t cumulative = 0;
                for (unsigned b = 0; b < f->nbuckets; b++) {
                    char le[32];
                    struct buf tmp = BUF_INIT;
                    put_number(&tmp, f->buckets[b]);
                    snprintf(le, sizeof(le), "%s", tmp.data);
                    buf_free(&tmp);
                    cumulative += __atomic_load_n(&s->v.histogram.bucket[b], __ATOMIC_RELAXED);
                    buf_printf(out, "%s_bucket", f->name);
                    put_labels(out, f, s->key, le);
                    buf_printf(out, " %llu\n", (unsigned long long)cumulative);
                }
                uint64_t count = __atomic_load_n(&s->v.histogram.count, __ATOMIC_RELAXED);
                /* A sample being recorded has its bucket counted before its
                   count: never let +Inf read lower than a finite bucket. */
                if (count < cumulative)
                    count = cumulative;
                buf_printf(out, "%s_bucket", f->name);
                put_labels(out, f, s->key, "+Inf");
                buf_printf(out, " %llu\n%s_sum", (unsigned long long)count, f->name);
                put_labels(out, f, s->key, NULL);
                buf_putc(out, ' ');
                put_number(out, bits_to_double(__atomic_load_n(&s->v.histogram.sum, __ATOMIC_RELAXED)));
                buf_printf(out, "\n%s_count", f->name);
                put_labels(out, f, s->key, NULL);
                buf_printf(out, " %llu\n", (unsigned long long)count);
            }
        }
    }
    free(members);
}
