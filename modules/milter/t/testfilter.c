/*
 * milter-testfilter: a libmilter filter of our own, for the milter tests.
 * It can give every reply and request every modification and protocol
 * option libmilter has, and writes what it saw to a log file, one line per
 * callback, so a test can check both directions.
 *
 *   milter-testfilter -p SOCKET -l LOGFILE [-n OPTIONS] [-A STAGE=VERDICT]...
 *
 * SOCKET: libmilter's form (inet:PORT@127.0.0.1 or a path).
 * -n OPTIONS (comma-separated), asked for in xxfi_negotiate:
 *   noconnect nohelo nomail norcpt nodata nohdrs noeoh nobody nounknown
 *   nr_conn nr_helo nr_mail nr_rcpt nr_data nr_unkn nr_hdr nr_eoh nr_body
 *   leadspc skip rcpt_rej symlist actions=HEX
 *   ("symlist" asks for {client_addr} at CONNECT, {mail_addr} and i at MAIL,
 *   {rcpt_addr} at RCPT, i at EOH, and j {daemon_name} at EOM).
 * -A STAGE=VERDICT: connect, helo, mail, rcpt, data, unknown, header, eoh,
 *   body; VERDICT: continue accept reject tempfail discard skip
 *   or reply:CODE:XCODE:TEXT or mlreply:CODE:XCODE:LINE|LINE|... (up to 10
 *   lines, smfi_setmlreply).
 * Recipients whose local part starts with reject-, tempfail-, discard-,
 *   accept-, reply- or mlreply- get that verdict at RCPT.
 * A recipient whose local part starts with halfclose- makes the filter shut
 *   the read side of its socket (a unix one) before it answers CONTINUE,
 *   keeping a duplicate open: the MTA's next write on it fails (EPIPE) while
 *   the MTA's end never turns readable, as a milter whose socket breaks
 *   between two events (see half_close()). Logged "halfclose", or
 *   "halfclose failed: WHY".
 * The Subject "do: A B C" lists what happens at end of message, in order:
 *   addheader insheader foldheader chgheader delheader chgfrom chgfrom_args
 *   chgfrom_badargs addrcpt addrcpt_par addrcpt_orcpt delrcpt replbody replbody_big replbody_lf quarantine
 *   progress sleep2 sleep5 accept reject tempfail discard replycode multiline.
 *
 * Log lines: negotiate, connect, helo, envfrom, envrcpt, data, unknown,
 * header NAME=[VALUE] (\n and \t escaped, so the leading space shows),
 * eoh, body LEN, eom bytes=N fnv=HEX, abort, close, and "macro NAME=VALUE"
 * for the macros a callback could read.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <libmilter/mfapi.h>

static FILE *logfp;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char *options = "";
static const char *stage_verdict[16];

enum { ST_CONNECT, ST_HELO, ST_MAIL, ST_RCPT, ST_DATA, ST_UNKNOWN, ST_HEADER, ST_EOH, ST_BODY, ST_COUNT };
static const char *const stage_names[ST_COUNT] = { "connect", "helo", "mail", "rcpt", "data", "unknown",
                                                   "header", "eoh", "body" };

typedef struct priv {
    char actions[512];
    unsigned long body_bytes;
    uint64_t fnv;
    int body_chunks;
    unsigned long pflags;   /* what was negotiated */
    int header_macros_logged;
} priv;

__attribute__((format(printf, 1, 2)))
static void logline(const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&log_lock);
    va_start(ap, fmt);
    vfprintf(logfp, fmt, ap);
    va_end(ap);
    fputc('\n', logfp);
    fflush(logfp);
    pthread_mutex_unlock(&log_lock);
}

static void escape(char *out, size_t outlen, const char *in)
{
    size_t o = 0;
    for (; *in && o + 5 < outlen; in++) {
        if (*in == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else if (*in == '\r') {
            out[o++] = '\\';
            out[o++] = 'r';
        } else if (*in == '\t') {
            out[o++] = '\\';
            out[o++] = 't';
        } else
            out[o++] = *in;
    }
    out[o] = 0;
}

static int has_option(const char *name)
{
    size_t n = strlen(name);
    for (const char *p = options; *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && strncmp(p, name, n) == 0)
            return 1;
        p += len + (end ? 1 : 0);
    }
    return 0;
}

static priv *get_priv(SMFICTX *ctx)
{
    priv *p = smfi_getpriv(ctx);
    if (p == NULL) {
        p = calloc(1, sizeof *p);
        smfi_setpriv(ctx, p);
    }
    return p;
}

static void log_macros(SMFICTX *ctx, const char *where)
{
    static const char *const names[] = { "j", "{daemon_name}", "{daemon_addr}", "v", "_", "{client_addr}",
                                         "{client_name}", "{client_port}", "{daemon_port}", "i", "{auth_type}", "{auth_authen}", "{auth_author}",
                                         "{mail_addr}", "{mail_host}", "{mail_mailer}", "{rcpt_addr}",
                                         "{rcpt_host}", "{rcpt_mailer}", "{tls_version}", "{cipher}",
                                         "{cipher_bits}", "{cert_subject}", "{cert_issuer}", "{client_ptr}",
                                         "{client_resolve}", "{client_connections}", "{petrel_test}", NULL };
    for (int i = 0; names[i]; i++) {
        const char *v = smfi_getsymval(ctx, (char *)names[i]);
        if (v != NULL)
            logline("macro %s %s=%s", where, names[i], v);
    }
}

/* The reply for a verdict word; sets a custom reply for reply:CODE:XCODE:TEXT. */
static sfsistat verdict(SMFICTX *ctx, const char *word, int stage)
{
    if (word == NULL || strcmp(word, "continue") == 0) {
        static const unsigned long nr[ST_COUNT] = { SMFIP_NR_CONN, SMFIP_NR_HELO, SMFIP_NR_MAIL, SMFIP_NR_RCPT,
                                                    SMFIP_NR_DATA, SMFIP_NR_UNKN, SMFIP_NR_HDR, SMFIP_NR_EOH,
                                                    SMFIP_NR_BODY };
        priv *p = get_priv(ctx);
        return stage >= 0 && (p->pflags & nr[stage]) ? SMFIS_NOREPLY : SMFIS_CONTINUE;
    }
    if (strcmp(word, "accept") == 0)
        return SMFIS_ACCEPT;
    if (strcmp(word, "reject") == 0)
        return SMFIS_REJECT;
    if (strcmp(word, "tempfail") == 0)
        return SMFIS_TEMPFAIL;
    if (strcmp(word, "discard") == 0)
        return SMFIS_DISCARD;
    if (strcmp(word, "skip") == 0)
        return SMFIS_SKIP;
    if (strncmp(word, "reply:", 6) == 0) {
        char copy[512];
        snprintf(copy, sizeof copy, "%s", word + 6);
        char *code = strtok(copy, ":"), *xcode = strtok(NULL, ":"), *text = strtok(NULL, "");
        if (smfi_setreply(ctx, code, xcode, text) != MI_SUCCESS)
            logline("smfi_setreply failed");
        return code && code[0] == '4' ? SMFIS_TEMPFAIL : SMFIS_REJECT;
    }
    if (strncmp(word, "mlreply:", 8) == 0) {
        char copy[2048];
        snprintf(copy, sizeof copy, "%s", word + 8);
        char *code = strtok(copy, ":"), *xcode = strtok(NULL, ":"), *rest = strtok(NULL, "");
        char *l[10] = { 0 };
        for (int i = 0; i < 10 && rest; i++)
            l[i] = strsep(&rest, "|");
        if (smfi_setmlreply(ctx, code, xcode, l[0], l[1], l[2], l[3], l[4], l[5], l[6], l[7], l[8], l[9],
                            NULL) != MI_SUCCESS)
            logline("smfi_setmlreply failed");
        return code && code[0] == '4' ? SMFIS_TEMPFAIL : SMFIS_REJECT;
    }
    logline("unknown verdict %s", word);
    return SMFIS_TEMPFAIL;
}

static sfsistat tf_negotiate(SMFICTX *ctx, unsigned long f0, unsigned long f1, unsigned long f2, unsigned long f3,
                             unsigned long *pf0, unsigned long *pf1, unsigned long *pf2, unsigned long *pf3)
{
    static const struct { const char *name; unsigned long flag; } flags[] = {
        { "noconnect", SMFIP_NOCONNECT }, { "nohelo", SMFIP_NOHELO }, { "nomail", SMFIP_NOMAIL },
        { "norcpt", SMFIP_NORCPT }, { "nodata", SMFIP_NODATA }, { "nohdrs", SMFIP_NOHDRS },
        { "noeoh", SMFIP_NOEOH }, { "nobody", SMFIP_NOBODY }, { "nounknown", SMFIP_NOUNKNOWN },
        { "nr_conn", SMFIP_NR_CONN }, { "nr_helo", SMFIP_NR_HELO }, { "nr_mail", SMFIP_NR_MAIL },
        { "nr_rcpt", SMFIP_NR_RCPT }, { "nr_data", SMFIP_NR_DATA }, { "nr_unkn", SMFIP_NR_UNKN },
        { "nr_hdr", SMFIP_NR_HDR }, { "nr_eoh", SMFIP_NR_EOH }, { "nr_body", SMFIP_NR_BODY },
        { "leadspc", SMFIP_HDR_LEADSPC }, { "skip", SMFIP_SKIP }, { "rcpt_rej", SMFIP_RCPT_REJ },
    };
    (void)f2;
    (void)f3;
    unsigned long want = 0;
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        if (has_option(flags[i].name))
            want |= flags[i].flag;
    unsigned long actions = f0;
    const char *a = strstr(options, "actions=");
    if (a != NULL)
        actions = strtoul(a + 8, NULL, 16);
    logline("negotiate mta_actions=0x%lx mta_flags=0x%lx want_flags=0x%lx", f0, f1, want);
    if ((want & f1) != want)
        logline("negotiate: the MTA does not offer 0x%lx", want & ~f1);
    *pf0 = actions & f0;
    *pf1 = want & f1;
    *pf2 = 0;
    *pf3 = 0;
    get_priv(ctx)->pflags = *pf1;
    if (has_option("symlist")) {
        smfi_setsymlist(ctx, SMFIM_CONNECT, "{client_addr}");
        smfi_setsymlist(ctx, SMFIM_ENVFROM, "{mail_addr} i");
        smfi_setsymlist(ctx, SMFIM_ENVRCPT, "{rcpt_addr}");
        smfi_setsymlist(ctx, SMFIM_EOH, "i");
        smfi_setsymlist(ctx, SMFIM_EOM, "j {daemon_name}");
    }
    return SMFIS_CONTINUE;
}

static sfsistat tf_connect(SMFICTX *ctx, char *host, _SOCK_ADDR *sa)
{
    char addr[128] = "none";
    int port = -1;
    const char *family = "unknown";
    if (sa != NULL) {
        if (sa->sa_family == AF_INET) {
            struct sockaddr_in *in = (struct sockaddr_in *)sa;
            inet_ntop(AF_INET, &in->sin_addr, addr, sizeof addr);
            port = ntohs(in->sin_port);
            family = "inet";
        } else if (sa->sa_family == AF_INET6) {
            struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)sa;
            inet_ntop(AF_INET6, &in6->sin6_addr, addr, sizeof addr);
            port = ntohs(in6->sin6_port);
            family = "inet6";
        } else if (sa->sa_family == AF_UNIX) {
            snprintf(addr, sizeof addr, "%s", ((struct sockaddr_un *)sa)->sun_path);
            family = "unix";
        }
    }
    logline("connect host=%s family=%s port=%d addr=%s", host, family, port, addr);
    log_macros(ctx, "connect");
    return verdict(ctx, stage_verdict[ST_CONNECT], ST_CONNECT);
}

static sfsistat tf_helo(SMFICTX *ctx, char *helo)
{
    logline("helo %s", helo);
    log_macros(ctx, "helo");
    return verdict(ctx, stage_verdict[ST_HELO], ST_HELO);
}

static void log_argv(const char *what, char **argv)
{
    char line[2048];
    size_t o = 0;
    for (int i = 0; argv[i] && o < sizeof line - 4; i++)
        o += (size_t)snprintf(line + o, sizeof line - o, "%s%s", i ? " " : "", argv[i]);
    line[sizeof line - 1] = 0;
    logline("%s %s", what, line);
}

static sfsistat tf_envfrom(SMFICTX *ctx, char **argv)
{
    priv *p = get_priv(ctx);
    p->actions[0] = 0;
    p->body_bytes = 0;
    p->body_chunks = 0;
    p->fnv = 1469598103934665603ull;
    log_argv("envfrom", argv);
    log_macros(ctx, "mail");
    return verdict(ctx, stage_verdict[ST_MAIL], ST_MAIL);
}

/* Descriptors half_close() keeps, so that they are never taken for a
 * conversation's socket again. */
#define HELD_MAX 64
static int held[HELD_MAX];
static size_t held_count;
static pthread_mutex_t held_lock = PTHREAD_MUTEX_INITIALIZER;

static int is_held(int fd)
{
    for (size_t i = 0; i < held_count; i++)
        if (held[i] == fd)
            return 1;
    return 0;
}

/* Breaks the current conversation's socket the way no read watch on the
 * MTA's side sees: on a unix stream socket, shutdown(SHUT_RD) here sets
 * only "no more sending" on the MTA's end (its writes fail with EPIPE; it
 * gets neither EOF nor POLLIN nor POLLHUP). libmilter then reads EOF and
 * closes its descriptor; the duplicate kept here (until the filter exits)
 * keeps the socket from being released, which would hang up the MTA's end.
 * libmilter gives a callback no descriptor: the socket is found as the one
 * connected unix stream socket of the process, which holds only while a
 * single conversation is open (the tests that use this run one). Returns 0,
 * or -1 with why. */
static int half_close(char *why, size_t whylen)
{
    pthread_mutex_lock(&held_lock);
    int found = -1, candidates = 0;
    for (int fd = 3; fd < 1024; fd++) {
        struct stat st;
        struct sockaddr_storage ss;
        socklen_t sslen = sizeof ss;
        int type = 0, listening = 0;
        socklen_t optlen = sizeof type;
        if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode) || is_held(fd))
            continue;
        if (getsockname(fd, (struct sockaddr *)&ss, &sslen) < 0 || ss.ss_family != AF_UNIX)
            continue;
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &optlen) < 0 || type != SOCK_STREAM)
            continue;
        optlen = sizeof listening;
        if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &optlen) < 0 || listening)
            continue;
        found = fd;
        candidates++;
    }
    int rc = -1;
    if (candidates != 1)
        snprintf(why, whylen, "%d connected unix sockets (need exactly one)", candidates);
    else if (held_count == HELD_MAX)
        snprintf(why, whylen, "%d sockets held already", HELD_MAX);
    else {
        int keep = dup(found);
        if (keep < 0 || shutdown(found, SHUT_RD) < 0) {
            snprintf(why, whylen, "%s", strerror(errno));
            if (keep >= 0)
                close(keep);
        } else {
            held[held_count++] = keep;
            rc = 0;
        }
    }
    pthread_mutex_unlock(&held_lock);
    return rc;
}

static sfsistat tf_envrcpt(SMFICTX *ctx, char **argv)
{
    log_argv("envrcpt", argv);
    log_macros(ctx, "rcpt");
    const char *local = argv[0][0] == '<' ? argv[0] + 1 : argv[0];
    static const char *const prefixes[] = { "reject-", "tempfail-", "discard-", "accept-", NULL };
    for (int i = 0; prefixes[i]; i++)
        if (strncmp(local, prefixes[i], strlen(prefixes[i])) == 0) {
            char word[16];
            snprintf(word, sizeof word, "%.*s", (int)strlen(prefixes[i]) - 1, prefixes[i]);
            return verdict(ctx, word, ST_RCPT);
        }
    if (strncmp(local, "reply-", 6) == 0)
        return verdict(ctx, "reply:550:5.1.1:No such user here", ST_RCPT);
    if (strncmp(local, "halfclose-", 10) == 0) {
        char why[128];
        if (half_close(why, sizeof why) == 0)
            logline("halfclose");
        else
            logline("halfclose failed: %s", why);
    }
    if (strncmp(local, "mlreply-", 8) == 0)
        return verdict(ctx, "mlreply:550:5.1.1:No such user here|See https://example.org/why|Ask your postmaster",
                       ST_RCPT);
    return verdict(ctx, stage_verdict[ST_RCPT], ST_RCPT);
}

static sfsistat tf_data(SMFICTX *ctx)
{
    logline("data");
    log_macros(ctx, "data");
    return verdict(ctx, stage_verdict[ST_DATA], ST_DATA);
}

static sfsistat tf_unknown(SMFICTX *ctx, const char *cmd)
{
    logline("unknown %s", cmd);
    return verdict(ctx, stage_verdict[ST_UNKNOWN], ST_UNKNOWN);
}

static sfsistat tf_header(SMFICTX *ctx, char *name, char *value)
{
    char v[4096];
    escape(v, sizeof v, value);
    logline("header %s=[%s]", name, v);
    if (strcasecmp(name, "Subject") == 0) {
        const char *p = value;
        while (*p == ' ')
            p++;
        if (strncmp(p, "do:", 3) == 0)
            snprintf(get_priv(ctx)->actions, sizeof get_priv(ctx)->actions, "%s", p + 3);
    }
    if (!get_priv(ctx)->header_macros_logged++)
        log_macros(ctx, "header");
    return verdict(ctx, stage_verdict[ST_HEADER], ST_HEADER);
}

static sfsistat tf_eoh(SMFICTX *ctx)
{
    logline("eoh");
    log_macros(ctx, "eoh");
    return verdict(ctx, stage_verdict[ST_EOH], ST_EOH);
}

static sfsistat tf_body(SMFICTX *ctx, unsigned char *data, size_t len)
{
    priv *p = get_priv(ctx);
    logline("body %zu", len);
    p->body_bytes += len;
    p->body_chunks++;
    for (size_t i = 0; i < len; i++) {
        p->fnv ^= data[i];
        p->fnv *= 1099511628211ull;
    }
    return verdict(ctx, stage_verdict[ST_BODY], ST_BODY);
}

static int eom_do(SMFICTX *ctx, const char *a, sfsistat *final)
{
    int rc = MI_SUCCESS;
    if (strcmp(a, "addheader") == 0)
        rc = smfi_addheader(ctx, "X-Test-Added", "added by the test filter");
    else if (strcmp(a, "insheader") == 0)
        rc = smfi_insheader(ctx, 0, "X-Test-First", "inserted at the top");
    else if (strcmp(a, "foldheader") == 0)
        rc = smfi_addheader(ctx, "X-Test-Folded", "first line\n\tsecond line");
    else if (strcmp(a, "chgheader") == 0)
        rc = smfi_chgheader(ctx, "Subject", 1, "changed subject");
    else if (strcmp(a, "delheader") == 0)
        rc = smfi_chgheader(ctx, "X-Delete-Me", 1, NULL);
    else if (strcmp(a, "chgfrom") == 0)
        rc = smfi_chgfrom(ctx, "<new-sender@example.net>", NULL);
    else if (strcmp(a, "chgfrom_args") == 0)
        rc = smfi_chgfrom(ctx, "<bounces@example.net>", "RET=HDRS ENVID=abc123");
    else if (strcmp(a, "chgfrom_badargs") == 0)   /* SIZE= is not for CHGFROM, +ZZ is not xtext */
        rc = smfi_chgfrom(ctx, "<bounces@example.net>", "RET=FULL SIZE=1 ENVID=a+ZZ");
    else if (strcmp(a, "addrcpt") == 0)
        rc = smfi_addrcpt(ctx, "<added@example.org>");
    else if (strcmp(a, "addrcpt_orcpt") == 0)
        rc = smfi_addrcpt_par(ctx, "<added-orcpt@example.org>",
                              "NOTIFY=SUCCESS,DELAY ORCPT=rfc822;orig+2Bx@example.org FOO=bar");
    else if (strcmp(a, "addrcpt_par") == 0)
        rc = smfi_addrcpt_par(ctx, "<added-par@example.org>", "NOTIFY=NEVER");
    else if (strcmp(a, "delrcpt") == 0)
        rc = smfi_delrcpt(ctx, "<rcpt@example.org>");
    else if (strcmp(a, "replbody") == 0) {
        static char body[] = "This body was replaced.\r\nSecond line.\r\n";
        rc = smfi_replacebody(ctx, (unsigned char *)body, (int)strlen(body));
    } else if (strcmp(a, "replbody_lf") == 0) {
        static char body[] = "LF line one\nLF line two";
        rc = smfi_replacebody(ctx, (unsigned char *)body, (int)strlen(body));
    } else if (strcmp(a, "replbody_big") == 0) {
        /* 200,000 bytes of lines: libmilter sends it in 64 KiB packets. */
        size_t n = 200000;
        unsigned char *big = malloc(n);
        for (size_t i = 0; i < n; i++)
            big[i] = (i % 100 == 98) ? '\r' : (i % 100 == 99) ? '\n' : (unsigned char)('a' + i % 26);
        rc = smfi_replacebody(ctx, big, (int)n);
        free(big);
    } else if (strcmp(a, "quarantine") == 0)
        rc = smfi_quarantine(ctx, "held by the test filter");
    else if (strcmp(a, "progress") == 0) {
        for (int i = 0; i < 6 && rc == MI_SUCCESS; i++) {
            usleep(300000);
            rc = smfi_progress(ctx);
        }
    } else if (strcmp(a, "sleep2") == 0)
        sleep(2);
    else if (strcmp(a, "sleep5") == 0)
        sleep(5);
    else if (strcmp(a, "accept") == 0)
        *final = SMFIS_ACCEPT;
    else if (strcmp(a, "reject") == 0)
        *final = SMFIS_REJECT;
    else if (strcmp(a, "tempfail") == 0)
        *final = SMFIS_TEMPFAIL;
    else if (strcmp(a, "discard") == 0)
        *final = SMFIS_DISCARD;
    else if (strcmp(a, "replycode") == 0) {
        rc = smfi_setreply(ctx, "554", "5.7.1", "Rejected by the test filter: 100%% sure");
        *final = SMFIS_REJECT;
    } else if (strcmp(a, "multiline") == 0) {
        rc = smfi_setmlreply(ctx, "450", "4.7.0", "first line", "second line", "third line", NULL);
        *final = SMFIS_TEMPFAIL;
    } else {
        logline("unknown eom action %s", a);
        return MI_FAILURE;
    }
    if (rc != MI_SUCCESS)
        logline("eom action %s failed", a);
    return rc;
}

static sfsistat tf_eom(SMFICTX *ctx)
{
    priv *p = get_priv(ctx);
    logline("eom bytes=%lu chunks=%d fnv=%016llx", p->body_bytes, p->body_chunks, (unsigned long long)p->fnv);
    log_macros(ctx, "eom");
    sfsistat final = SMFIS_CONTINUE;
    char copy[512];
    snprintf(copy, sizeof copy, "%s", p->actions);
    for (char *a = strtok(copy, " ,"); a != NULL; a = strtok(NULL, " ,"))
        eom_do(ctx, a, &final);
    return final;
}

static sfsistat tf_abort(SMFICTX *ctx)
{
    (void)ctx;
    logline("abort");
    return SMFIS_CONTINUE;
}

static sfsistat tf_close(SMFICTX *ctx)
{
    logline("close");
    free(smfi_getpriv(ctx));
    smfi_setpriv(ctx, NULL);
    return SMFIS_CONTINUE;
}

int main(int argc, char **argv)
{
    const char *socket = NULL, *logpath = NULL;
    int c;
    while ((c = getopt(argc, argv, "p:l:n:A:")) != -1) {
        switch (c) {
        case 'p': socket = optarg; break;
        case 'l': logpath = optarg; break;
        case 'n': options = optarg; break;
        case 'A': {
            char *eq = strchr(optarg, '=');
            int found = 0;
            for (int i = 0; eq && i < ST_COUNT; i++)
                if ((size_t)(eq - optarg) == strlen(stage_names[i]) && strncmp(optarg, stage_names[i], (size_t)(eq - optarg)) == 0) {
                    stage_verdict[i] = eq + 1;
                    found = 1;
                }
            if (!found) {
                fprintf(stderr, "bad -A %s\n", optarg);
                return 2;
            }
            break;
        }
        default:
            fprintf(stderr, "usage: milter-testfilter -p SOCKET -l LOGFILE [-n OPTIONS] [-A STAGE=VERDICT]\n");
            return 2;
        }
    }
    if (socket == NULL || logpath == NULL) {
        fprintf(stderr, "usage: milter-testfilter -p SOCKET -l LOGFILE [-n OPTIONS] [-A STAGE=VERDICT]\n");
        return 2;
    }
    if ((logfp = fopen(logpath, "a")) == NULL) {
        fprintf(stderr, "%s: %s\n", logpath, strerror(errno));
        return 1;
    }
    struct smfiDesc desc = {
        .xxfi_name = "petrel-testfilter",
        .xxfi_version = SMFI_VERSION,
        .xxfi_flags = SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_CHGBODY | SMFIF_ADDRCPT | SMFIF_ADDRCPT_PAR
                      | SMFIF_DELRCPT | SMFIF_QUARANTINE | SMFIF_CHGFROM | SMFIF_SETSYMLIST,
        .xxfi_connect = tf_connect,
        .xxfi_helo = tf_helo,
        .xxfi_envfrom = tf_envfrom,
        .xxfi_envrcpt = tf_envrcpt,
        .xxfi_header = tf_header,
        .xxfi_eoh = tf_eoh,
        .xxfi_body = tf_body,
        .xxfi_eom = tf_eom,
        .xxfi_abort = tf_abort,
        .xxfi_close = tf_close,
        .xxfi_unknown = tf_unknown,
        .xxfi_data = tf_data,
        .xxfi_negotiate = tf_negotiate,
    };
    if (smfi_setconn((char *)socket) != MI_SUCCESS || smfi_register(desc) != MI_SUCCESS) {
        fprintf(stderr, "cannot set up the milter\n");
        return 1;
    }
    /* Fail fast when the socket cannot be made (a port in use). */
    if (smfi_opensocket(1) != MI_SUCCESS) {
        fprintf(stderr, "cannot open %s\n", socket);
        return 1;
    }
    logline("ready");
    return smfi_main() == MI_SUCCESS ? 0 : 1;
}
