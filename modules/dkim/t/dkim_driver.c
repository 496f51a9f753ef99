/*
 * dkim-driver: runs the dkim module's message component (dkim_msg.c) on a
 * message file the way the module does with the stored message at end of
 * message (petrel_message_read): the file is fed in chunks (--chunk
 * bytes, default 64 KiB), then written out again with the component's
 * results applied (our Authentication-Results and DKIM-Signature headers
 * on top, forged Authentication-Results removed), the body copied from
 * the file a second time, never held in memory.
 *
 *   dkim-driver [--key-table F --signing-table F [--multiple]]
 *               [--key DOMAIN SELECTOR KEYFILE] [--verify] [--dns HOST:PORT]
 *               [--authserv-id ID] [--chunk N] [--simple | --canon H/B] [--rss] MESSAGE
 *
 * --simple is --canon simple/simple; H and B are relaxed or simple.
 *
 * Key records (verification) are fetched from --dns with c-ares, as the
 * core's resolver does. --rss prints the process's peak RSS (VmHWM, KiB) on
 * stderr at the end, to show memory stays flat with big messages.
 * Test tool only: not installed.
 */
#include <arpa/nameser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/select.h>

#include <ares.h>

#include "../dkim_msg.h"

struct fetch_result {
    int done;
    int rc;
    char *buf;
    size_t size;
};

static void on_txt(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct fetch_result *r = arg;
    r->done = 1;
    if (status == ARES_ENOTFOUND || status == ARES_ENODATA) {
        r->rc = 1;
        return;
    }
    if (status != ARES_SUCCESS) {
        r->rc = -1;
        return;
    }
    struct ares_txt_ext *txt = NULL;
    if (ares_parse_txt_reply_ext(abuf, alen, &txt) != ARES_SUCCESS) {
        r->rc = -1;
        return;
    }
    /* the first record, its strings joined (RFC 6376 3.6.2.2) */
    size_t o = 0;
    int records = 0;
    for (struct ares_txt_ext *p = txt; p; p = p->next) {
        if (p->record_start && ++records > 1)
            break;
        size_t take = p->length < r->size - 1 - o ? p->length : r->size - 1 - o;
        memcpy(r->buf + o, p->txt, take);
        o += take;
    }
    r->buf[o] = '\0';
    r->rc = records ? 0 : 1;
    ares_free_data(txt);
}

static int fetch(void *ctx, const char *qname, char *buf, size_t size)
{
    ares_channel *ch = ctx;
    if (ch == NULL)
        return -1;
    struct fetch_result r = { 0, -1, buf, size };
    ares_query(*ch, qname, ns_c_in, ns_t_txt, on_txt, &r);
    while (!r.done) {
        fd_set rd, wr;
        FD_ZERO(&rd);
        FD_ZERO(&wr);
        int nfds = ares_fds(*ch, &rd, &wr);
        if (nfds == 0)
            break;
        struct timeval tv, *tvp = ares_timeout(*ch, NULL, &tv);
        select(nfds, &rd, &wr, NULL, tvp);
        ares_process(*ch, &rd, &wr);
    }
    return r.rc;
}

static void usage(void)
{
    fprintf(stderr, "usage: dkim-driver [--key-table F --signing-table F [--multiple]] [--key DOMAIN SELECTOR KEYFILE]\n"
                    "                   [--verify] [--dns HOST:PORT] [--authserv-id ID] [--chunk N] [--simple | --canon H/B]"
                    " [--rss]"
                    " MESSAGE\n");
    exit(2);
}

static void put_header(const char *name, const char *value)
{
    printf("%s: %s\r\n", name, value);
}

/* Pass 2: the message again, minus the forged Authentication-Results. */
static int copy_out(FILE *f, struct dkmsg *m, size_t chunk)
{
    char *buf = malloc(chunk);
    char line[65536];
    if (buf == NULL)
        return -1;
    rewind(f);
    size_t ar_seen = 0, next_forged = 0;
    int skipping = 0;
    /* header section line by line (headers are small), then raw chunks */
    while (fgets(line, sizeof(line), f)) {
        if (line[0] == ' ' || line[0] == '\t') {
            if (!skipping)
                fputs(line, stdout);
            continue;
        }
        skipping = 0;
        if (strcmp(line, "\r\n") == 0 || strcmp(line, "\n") == 0) {
            fputs(line, stdout);
            break;
        }
        if (strncasecmp(line, "Authentication-Results:", 23) == 0) {
            ar_seen++;
            if (next_forged < dkmsg_forged_count(m) && dkmsg_forged(m, next_forged) == ar_seen) {
                next_forged++;
                skipping = 1;
                continue;
            }
        }
        fputs(line, stdout);
    }
    size_t n;
    while ((n = fread(buf, 1, chunk, f)) > 0)
        fwrite(buf, 1, n, stdout);
    free(buf);
    return 0;
}

int main(int argc, char **argv)
{
    const char *keytable = NULL, *signingtable = NULL, *dns = NULL, *authserv = "localhost", *path = NULL;
    const char *kd = NULL, *ks = NULL, *kf = NULL;
    int verify = 0, multiple = 0, rss = 0, relaxed_header = 1, relaxed_body = 1;
    size_t chunk = 65536;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--key-table") == 0 && i + 1 < argc)
            keytable = argv[++i];
        else if (strcmp(argv[i], "--signing-table") == 0 && i + 1 < argc)
            signingtable = argv[++i];
        else if (strcmp(argv[i], "--key") == 0 && i + 3 < argc) {
            kd = argv[++i];
            ks = argv[++i];
            kf = argv[++i];
        } else if (strcmp(argv[i], "--verify") == 0)
            verify = 1;
        else if (strcmp(argv[i], "--multiple") == 0)
            multiple = 1;
        else if (strcmp(argv[i], "--simple") == 0)
            relaxed_header = relaxed_body = 0;
        else if (strcmp(argv[i], "--canon") == 0 && i + 1 < argc) {
            const char *c = argv[++i];
            const char *slash = strchr(c, '/');
            if (slash == NULL)
                usage();
            relaxed_header = strncmp(c, "relaxed/", 8) == 0;
            relaxed_body = strcmp(slash + 1, "relaxed") == 0;
            if ((!relaxed_header && strncmp(c, "simple/", 7) != 0) ||
                (!relaxed_body && strcmp(slash + 1, "simple") != 0))
                usage();
        }
        else if (strcmp(argv[i], "--rss") == 0)
            rss = 1;
        else if (strcmp(argv[i], "--dns") == 0 && i + 1 < argc)
            dns = argv[++i];
        else if (strcmp(argv[i], "--authserv-id") == 0 && i + 1 < argc)
            authserv = argv[++i];
        else if (strcmp(argv[i], "--chunk") == 0 && i + 1 < argc)
            chunk = strtoul(argv[++i], NULL, 10);
        else if (argv[i][0] != '-' && path == NULL)
            path = argv[i];
        else
            usage();
    }
    if (path == NULL || chunk == 0 || (!!keytable != !!signingtable))
        usage();

    char err[512];
    struct dk_tables tables;
    int signing = 0;
    if (keytable) {
        if (dk_tables_load(&tables, keytable, signingtable, err, sizeof(err)) != 0) {
            fprintf(stderr, "dkim-driver: %s\n", err);
            return 1;
        }
        signing = 1;
    } else if (kd) {
        if (dk_tables_single(&tables, kd, ks, kf, err, sizeof(err)) != 0) {
            fprintf(stderr, "dkim-driver: %s\n", err);
            return 1;
        }
        signing = 1;
    }
    ares_channel ch;
    ares_channel *chp = NULL;
    if (dns) {
        ares_library_init(ARES_LIB_INIT_ALL);
        struct ares_options opts = { .timeout = 2000, .tries = 2 };
        if (ares_init_options(&ch, &opts, ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES) != ARES_SUCCESS ||
            ares_set_servers_ports_csv(ch, dns) != ARES_SUCCESS) {
            fprintf(stderr, "dkim-driver: bad --dns %s\n", dns);
            return 1;
        }
        chp = &ch;
    }
    struct dkmsg_conf conf = {
        .tables = signing ? &tables : NULL, .authserv_id = authserv, .multiple = multiple,
        .relaxed_header = relaxed_header, .relaxed_body = relaxed_body, .fetch = fetch, .fetch_ctx = chp,
    };
    if (dkmsg_conf_init(&conf, err, sizeof(err)) != 0) {
        fprintf(stderr, "dkim-driver: %s\n", err);
        return 1;
    }
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        return 1;
    }
    struct dkmsg *m = dkmsg_new(&conf, (signing ? DKMSG_SIGN : 0) | (verify ? DKMSG_VERIFY : 0), "driver");
    char *buf = malloc(chunk);
    size_t n;
    int rc = 0;
    while (rc == 0 && (n = fread(buf, 1, chunk, f)) > 0)
        rc = dkmsg_feed(m, buf, n);
    free(buf);
    if (rc == 0)
        rc = dkmsg_end(m);
    int status = 0;
    if (rc != 0) {
        /* A refused message is an expected outcome: free as on success, so
         * the sanitizer build checks this path for leaks too. */
        fprintf(stderr, "dkim-driver: %s\n", dkmsg_error(m));
        fclose(f);
        status = 1;
        goto done;
    }
    if (dkmsg_auth_results(m))
        put_header("Authentication-Results", dkmsg_auth_results(m));
    for (size_t i = 0; i < dkmsg_signature_count(m); i++)
        put_header("DKIM-Signature", dkmsg_signature(m, i));
    copy_out(f, m, chunk);
    fclose(f);
    fflush(stdout);
    if (rss) {
        /* VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over
         * an execve, so a driver started by a big parent would report the
         * parent's peak. */
        FILE *st = fopen("/proc/self/status", "r");
        char l[256];
        while (st && fgets(l, sizeof(l), st))
            if (strncmp(l, "VmHWM:", 6) == 0)
                fprintf(stderr, "max_rss_kib=%ld\n", strtol(l + 6, NULL, 10));
        if (st)
            fclose(st);
    }
done:
    dkmsg_free(m);
    dkmsg_conf_free(&conf);
    if (signing)
        dk_tables_free(&tables);
    if (chp)
        ares_destroy(ch);
    return status;
}
