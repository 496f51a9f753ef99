/* Unit tests for the local delivery agents (core/deliver/local.h): Maildir,
 * mbox and pipe. A fake queue file (some envelope-like bytes, then CRLF
 * content) stands in for the queue; everything happens in a fresh
 * directory under $TMPDIR (or /tmp), removed at the end. Write failures
 * are made deterministic with RLIMIT_FSIZE in a child process. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "deliver/local.h"
#include "lib/xalloc.h"
#include "../tap.h"

static char root[4096];

static void remove_tree(const char *path)
{
    DIR *d = opendir(path);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                continue;
            char sub[8192];
            snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
            struct stat st;
            if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode)) {
                chmod(sub, 0700);
                remove_tree(sub);
            } else {
                unlink(sub);
            }
        }
        closedir(d);
    }
    rmdir(path);
}

static char *slurp(const char *path, size_t *size)
{
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0)
        return NULL;
    char *data = xmalloc((size_t)st.st_size + 1);
    ssize_t n = read(fd, data, (size_t)st.st_size);
    close(fd);
    data[n < 0 ? 0 : n] = '\0';
    if (size)
        *size = n < 0 ? 0 : (size_t)n;
    return data;
}

static size_t count_entries(const char *dir, char *first, size_t size)
{
    DIR *d = opendir(dir);
    size_t n = 0;
    if (!d)
        return 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        if (n++ == 0 && first)
            snprintf(first, size, "%s", de->d_name);
    }
    closedir(d);
    return n;
}

static double now_secs(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* A fake queue file: 37 bytes of "envelope", then the content. */
struct fake {
    int fd;
    struct queue_message msg;
    struct queue_rcpt rcpt;
    struct dlv_job job;
    const char *addr[1];
    size_t index[1];
};

static void fake_init(struct fake *f, const char *content, size_t len, const char *sender, const char *rcpt)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/queuefile.XXXXXX", root);
    memset(f, 0, sizeof(*f));
    f->fd = mkstemp(path);
    unlink(path);
    static const char env[] = "ENVELOPE-BYTES-THAT-ARE-NOT-CONTENT\r\n";
    if (write(f->fd, env, sizeof(env) - 1) < 0 || write(f->fd, content, len) < 0)
        abort();
    f->rcpt.address = rcpt;
    f->rcpt.orcpt = "rfc822;Orig@Example.ORG";
    f->msg.id = "0ABCDEFGHJK0000000A";
    f->msg.env.sender = sender;
    f->msg.env.rcpt_count = 1;
    f->msg.env.rcpts = &f->rcpt;
    f->msg.env.client_addr = "192.0.2.7";
    f->msg.content_offset = sizeof(env) - 1;
    f->msg.content_length = len;
    f->addr[0] = rcpt;
    f->index[0] = 0;
    f->job.queue_id = f->msg.id;
    f->job.fd = f->fd;
    f->job.msg = &f->msg;
    f->job.sender = sender;
    f->job.nrcpt = 1;
    f->job.rcpt_index = f->index;
    f->job.rcpt_addr = f->addr;
    f->job.nexthop = "hop.example";
}

static const char CONTENT[] =
    "Received: from client (client [192.0.2.7]) by mx.example with ESMTP id X\r\n"
    "From: Sender <s@example.com>\r\n"
    "Subject: test\r\n"
    "\r\n"
    "line one\r\n"
    "From the start of a line\r\n"
    ">From already quoted\r\n"
    ">>From twice\r\n"
    ">Fro not a match\r\n"
    "bare\rcr\r\n"
    "Fromage\r\n"
    "last line\r\n";

/* Runs fn in a child with RLIMIT_FSIZE = limit bytes and SIGXFSZ ignored;
 * the child writes its result through a pipe. */
typedef int (*deliver_fn)(const char *path, const struct dlv_job *job, size_t i, struct dlv_result *out);
static int deliver_limited(deliver_fn fn, const char *path, struct fake *f, rlim_t limit, struct dlv_result *r)
{
    int p[2];
    if (pipe(p) < 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = { limit, limit };
        setrlimit(RLIMIT_FSIZE, &rl);
        struct dlv_result res;
        fn(path, &f->job, 0, &res);
        if (write(p[1], &res, sizeof(res)) != (ssize_t)sizeof(res))
            _exit(1);
        _exit(0);
    }
    close(p[1]);
    ssize_t n = read(p[0], r, sizeof(*r));
    close(p[0]);
    waitpid(pid, NULL, 0);
    return n == (ssize_t)sizeof(*r) ? 0 : -1;
}

static void test_maildir(void)
{
    struct fake f;
    fake_init(&f, CONTENT, sizeof(CONTENT) - 1, "s@example.com", "user+ext@example.org");
    char md[4400], sub[4500], name[1024], path[5600];
    snprintf(md, sizeof(md), "%s/Maildir", root);
    struct dlv_result r;
    is_int(maildir_deliver(md, &f.job, 0, &r), 0, "maildir: returns 0");
    is_int(r.status, DLV_SENT, "maildir: sent");
    is_str(r.dsn, "2.0.0", "maildir: dsn 2.0.0");
    is_str(r.text, "delivered to maildir", "maildir: text");
    struct stat st;
    const char *subs[] = { "tmp", "new", "cur" };
    for (int k = 0; k < 3; k++) {
        snprintf(sub, sizeof(sub), "%s/%s", md, subs[k]);
        ok(stat(sub, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 0777) == 0700, "maildir: %s/ created 0700",
           subs[k]);
    }
    snprintf(sub, sizeof(sub), "%s/new", md);
    is_int(count_entries(sub, name, sizeof(name)), 1, "maildir: one file in new/");
    snprintf(sub, sizeof(sub), "%s/tmp", md);
    is_int(count_entries(sub, NULL, 0), 0, "maildir: tmp/ left empty");
    snprintf(path, sizeof(path), "%s/new/%s", md, name);
    size_t size;
    char *data = slurp(path, &size);
    static const char head[] = "Return-Path: <s@example.com>\nDelivered-To: user+ext@example.org\nReceived: ";
    ok(data && strncmp(data, head, sizeof(head) - 1) == 0,
       "maildir: Return-Path, Delivered-To, then our Received header");
    ok(data && strchr(data, '\r') == strstr(data, "bare\rcr") + 4, "maildir: LF line ends (only the bare CR stays)");
    ok(data && strstr(data, "\nFrom the start of a line\n"), "maildir: no From_ quoting");
    ok(data && size > 10 && data[size - 1] == '\n' && data[size - 2] == 'e', "maildir: ends with the last line");
    char want[64];
    snprintf(want, sizeof(want), ",S=%zu", size);
    ok(strstr(name, want) != NULL, "maildir: name %s carries %s", name, want);
    ok(strchr(name, '/') == NULL && strstr(name, ".M") && strstr(name, "P") && strstr(name, "R"),
       "maildir: name shaped TIME.M<usec>P<pid>R<rand>.HOST");
    free(data);

    /* 1000 more: every one gets its own name. */
    int fails = 0;
    for (int k = 0; k < 1000; k++) {
        maildir_deliver(md, &f.job, 0, &r);
        fails += r.status != DLV_SENT;
    }
    is_int(fails, 0, "maildir: 1000 deliveries succeed");
    snprintf(sub, sizeof(sub), "%s/new", md);
    is_int(count_entries(sub, NULL, 0), 1001, "maildir: 1001 distinct files in new/");

    /* A maildir whose parent does not exist: deferred, Postfix's 4.2.0. */
    snprintf(md, sizeof(md), "%s/no/such/Maildir", root);
    maildir_deliver(md, &f.job, 0, &r);
    is_int(r.status, DLV_DEFERRED, "maildir: missing parent defers");
    is_str(r.dsn, "4.2.0", "maildir: missing parent is 4.2.0");
    ok(strstr(r.text, "maildir delivery failed: create maildir") && strstr(r.text, "No such file"),
       "maildir: reason names the problem: %s", r.text);

    /* An unwritable parent: as root, the check runs in a child that has
     * become nobody (root ignores modes). */
    {
        char ro[4200];
        snprintf(ro, sizeof(ro), "%s/ro", root);
        mkdir(ro, 0555);
        chmod(ro, 0555);
        chmod(root, 0711);
        snprintf(md, sizeof(md), "%s/Maildir", ro);
        int p[2];
        if (pipe(p) < 0)
            abort();
        pid_t pid = fork();
        if (pid == 0) {
            if (geteuid() == 0 && (setgid(65534) < 0 || setuid(65534) < 0))
                _exit(1);
            maildir_deliver(md, &f.job, 0, &r);
            if (write(p[1], &r, sizeof(r)) != (ssize_t)sizeof(r))
                _exit(1);
            _exit(0);
        }
        close(p[1]);
        memset(&r, 0, sizeof(r));
        ssize_t n = read(p[0], &r, sizeof(r));
        close(p[0]);
        waitpid(pid, NULL, 0);
        chmod(root, 0700);
        is_int(n, sizeof(r), "maildir: unprivileged child ran");
        is_int(r.status, DLV_DEFERRED, "maildir: unwritable directory defers");
        ok(strstr(r.text, "Permission denied") != NULL, "maildir: says permission denied: %s", r.text);
    }

    /* A file too big for the (limited) file system: EFBIG is Postfix's
     * "mailbox full" 5.2.2, and nothing is left behind. */
    snprintf(md, sizeof(md), "%s/Maildir2", root);
    struct dlv_result lr;
    ok(deliver_limited(maildir_deliver, md, &f, 100, &lr) == 0, "maildir: limited child ran");
    is_int(lr.status, DLV_BOUNCED, "maildir: EFBIG bounces");
    is_str(lr.dsn, "5.2.2", "maildir: EFBIG is 5.2.2");
    snprintf(sub, sizeof(sub), "%s/tmp", md);
    is_int(count_entries(sub, NULL, 0), 0, "maildir: failed tmp file removed");
    snprintf(sub, sizeof(sub), "%s/new", md);
    is_int(count_entries(sub, NULL, 0), 0, "maildir: nothing in new/");

    /* A queue file shorter than its envelope says: deferred, not half-delivered. */
    f.msg.content_length += 100;
    maildir_deliver(md, &f.job, 0, &r);
    is_int(r.status, DLV_DEFERRED, "maildir: short queue file defers");
    is_int(count_entries(sub, NULL, 0), 0, "maildir: ... and leaves nothing in new/");
    close(f.fd);
}

static void test_mbox(void)
{
    struct fake f;
    fake_init(&f, CONTENT, sizeof(CONTENT) - 1, "s@example.com", "u@example.org");
    char mb[4200];
    snprintf(mb, sizeof(mb), "%s/mbox", root);
    struct dlv_result r;
    mbox_deliver(mb, &f.job, 0, &r);
    is_int(r.status, DLV_SENT, "mbox: first delivery sent (%s)", r.text);
    is_str(r.text, "delivered to mailbox", "mbox: text");
    f.job.sender = "";
    mbox_deliver(mb, &f.job, 0, &r);
    is_int(r.status, DLV_SENT, "mbox: second delivery sent");
    f.job.sender = "s@example.com";
    size_t size;
    char *data = slurp(mb, &size);
    ok(data && strncmp(data, "From s@example.com ", 19) == 0, "mbox: starts with a From_ line");
    ok(data && strstr(data, "\n\nFrom MAILER-DAEMON ") != NULL, "mbox: second message's From_ (null sender)");
    ok(data && strstr(data, "\nReturn-Path: <s@example.com>\nDelivered-To: u@example.org\nReceived:"),
       "mbox: Return-Path and Delivered-To");
    ok(data && strstr(data, "\n>From the start of a line\n"), "mbox: From quoted");
    ok(data && strstr(data, "\n>>From already quoted\n"), "mbox: >From quoted again (mboxrd)");
    ok(data && strstr(data, "\n>>>From twice\n"), "mbox: >>From quoted again");
    ok(data && strstr(data, "\n>Fro not a match\n"), "mbox: >Fro left alone");
    ok(data && strstr(data, "\nFromage\n"), "mbox: Fromage left alone");
    ok(data && size > 2 && data[size - 1] == '\n' && data[size - 2] == '\n', "mbox: ends with a blank line");
    ok(data && strchr(data, '\r') == strstr(data, "bare\rcr") + 4, "mbox: LF line ends");
    int seps = 0;
    for (char *p = data; p && (p = strstr(p, "\nFrom ")) != NULL; p++)
        seps++;
    is_int(seps, 1, "mbox: exactly one From_ after the first (the other From lines are quoted)");
    free(data);
    struct stat st;
    char lock[4300];
    snprintf(lock, sizeof(lock), "%s.lock", mb);
    ok(stat(lock, &st) < 0 && errno == ENOENT, "mbox: dotlock removed");

    /* Lock contention: a child holds a classic fcntl lock for 1 s. */
    int p[2];
    if (pipe(p) < 0)
        abort();
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(mb, O_RDWR);
        struct flock l = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
        fcntl(fd, F_SETLKW, &l);
        if (write(p[1], "L", 1) < 0)
            _exit(1);
        sleep(1);
        _exit(0);
    }
    char c;
    close(p[1]);
    if (read(p[0], &c, 1) != 1)
        abort();
    close(p[0]);
    off_t before = stat(mb, &st) == 0 ? st.st_size : -1;
    double t0 = now_secs();
    mbox_deliver(mb, &f.job, 0, &r);
    double waited = now_secs() - t0;
    waitpid(pid, NULL, 0);
    is_int(r.status, DLV_SENT, "mbox: delivery after the lock is released");
    ok(waited >= 0.8 && waited < 5, "mbox: waited for the lock (%.2f s)", waited);
    ok(stat(mb, &st) == 0 && st.st_size > before, "mbox: appended");

    /* A stale dotlock (10 minutes old) is broken. */
    int lfd = open(lock, O_CREAT | O_WRONLY, 0600);
    close(lfd);
    struct timeval old[2];
    gettimeofday(&old[0], NULL);
    old[0].tv_sec -= 600;
    old[1] = old[0];
    utimes(lock, old);
    mbox_deliver(mb, &f.job, 0, &r);
    is_int(r.status, DLV_SENT, "mbox: stale dotlock broken");
    ok(stat(lock, &st) < 0, "mbox: and removed");

    /* A write failure halfway (RLIMIT_FSIZE): the mailbox is truncated back. */
    before = stat(mb, &st) == 0 ? st.st_size : -1;
    struct dlv_result lr;
    ok(deliver_limited(mbox_deliver, mb, &f, (rlim_t)before + 100, &lr) == 0, "mbox: limited child ran");
    is_int(lr.status, DLV_BOUNCED, "mbox: EFBIG bounces (5.2.2, mailbox full)");
    is_str(lr.dsn, "5.2.2", "mbox: dsn 5.2.2");
    ok(stat(mb, &st) == 0 && st.st_size == before, "mbox: truncated back to %lld bytes (now %lld)",
       (long long)before, (long long)st.st_size);

    /* A symlinked mailbox bounces; a missing directory defers. */
    char link[4300];
    snprintf(link, sizeof(link), "%s/linkbox", root);
    if (symlink(mb, link) < 0)
        abort();
    mbox_deliver(link, &f.job, 0, &r);
    is_int(r.status, DLV_BOUNCED, "mbox: symlink refused (%s)", r.text);
    snprintf(link, sizeof(link), "%s/nodir/mbox", root);
    mbox_deliver(link, &f.job, 0, &r);
    is_int(r.status, DLV_DEFERRED, "mbox: missing directory defers (%s)", r.text);
    close(f.fd);
}

static void pipe_run(struct fake *f, const char *const *argv, unsigned timeout, int crlf, struct dlv_result *r)
{
    struct pipe_options o = { .argv = argv, .recipient_delimiter = "+", .timeout = timeout, .crlf = crlf };
    pipe_deliver(&o, &f->job, 0, r);
}

static void test_pipe(void)
{
    struct fake f;
    fake_init(&f, CONTENT, sizeof(CONTENT) - 1, "s@example.com", "user+ext@Example.org");
    char out1[4200], out2[4200], script[9000];
    snprintf(out1, sizeof(out1), "%s/args", root);
    snprintf(out2, sizeof(out2), "%s/stdin", root);
    snprintf(script, sizeof(script), "printf '[%%s]' \"$@\" > %s; cat > %s", out1, out2);
    const char *argv[] = { "/bin/sh", "-c", script, "sh", "${sender}", "${recipient}", "${user}", "${extension}",
                           "${mailbox}", "${domain}", "${nexthop}", "${queue_id}", "${original_recipient}",
                           "<$size>", "${client_address}", "a b;$user", NULL };
    struct dlv_result r;
    pipe_run(&f, argv, 10, 0, &r);
    is_int(r.status, DLV_SENT, "pipe: exit 0 is sent (%s)", r.text);
    is_str(r.text, "delivered via pipe service", "pipe: text");
    is_str(r.relay, "pipe", "pipe: relay is the service");
    char *args = slurp(out1, NULL);
    char want[1024];
    snprintf(want, sizeof(want),
             "[s@example.com][user+ext@Example.org][user][ext][user+ext][Example.org][hop.example]"
             "[0ABCDEFGHJK0000000A][Orig@Example.ORG][<%zu>][192.0.2.7][a b;user]", sizeof(CONTENT) - 1);
    is_str(args, want, "pipe: every macro expanded, one argument each, no shell");
    free(args);
    size_t size;
    char *in = slurp(out2, &size);
    ok(in && strncmp(in, "Received: ", 10) == 0 && strchr(in, '\r') == strstr(in, "bare\rcr") + 4,
       "pipe: stdin is the content with LF line ends");
    ok(in && strstr(in, "\nFrom the start of a line\n"), "pipe: no quoting by default");
    free(in);

    const char *cat_argv[] = { "cat", NULL };
    const char *crlf_argv[] = { "/bin/sh", "-c", script, "sh", NULL };
    pipe_run(&f, crlf_argv, 10, 1, &r);
    in = slurp(out2, &size);
    ok(in && size == sizeof(CONTENT) - 1 && memcmp(in, CONTENT, size) == 0, "pipe: crlf keeps the content as is");
    free(in);
    pipe_run(&f, cat_argv, 10, 0, &r);
    is_int(r.status, DLV_SENT, "pipe: command found in the fixed PATH");

    const char *t75[] = { "/bin/sh", "-c", "cat >/dev/null; echo try later; exit 75", NULL };
    pipe_run(&f, t75, 10, 0, &r);
    is_int(r.status, DLV_DEFERRED, "pipe: EX_TEMPFAIL defers");
    is_str(r.dsn, "4.3.0", "pipe: EX_TEMPFAIL is 4.3.0");
    is_str(r.text, "temporary failure. Command output: try later", "pipe: text with output");

    const char *t67[] = { "/bin/sh", "-c", "echo no such user >&2; exit 67", NULL };
    pipe_run(&f, t67, 10, 0, &r);
    is_int(r.status, DLV_BOUNCED, "pipe: EX_NOUSER bounces");
    is_str(r.dsn, "5.1.1", "pipe: EX_NOUSER is 5.1.1");
    is_str(r.text, "user unknown. Command output: no such user", "pipe: stderr captured");

    const char *t1[] = { "/bin/sh", "-c", "exit 1", NULL };
    pipe_run(&f, t1, 10, 0, &r);
    is_int(r.status, DLV_BOUNCED, "pipe: other status bounces");
    is_str(r.text, "Command died with status 1: \"/bin/sh\"", "pipe: Postfix's text");

    const char *tdsn[] = { "/bin/sh", "-c", "echo 4.2.1 mailbox busy; exit 1", NULL };
    pipe_run(&f, tdsn, 10, 0, &r);
    is_int(r.status, DLV_DEFERRED, "pipe: a leading 4.x.x in the output wins");
    is_str(r.dsn, "4.2.1", "pipe: its code is used");

    const char *tbig[] = { "/bin/sh", "-c", "head -c 70000 /dev/zero | tr '\\0' x; exit 67", NULL };
    pipe_run(&f, tbig, 10, 0, &r);
    ok(strlen(r.text) < sizeof(r.text) && strstr(r.text, "Command output: xxxx"), "pipe: big output is cut");

    const char *tsig[] = { "/bin/sh", "-c", "kill -TERM $$", NULL };
    pipe_run(&f, tsig, 10, 0, &r);
    is_int(r.status, DLV_DEFERRED, "pipe: death by signal defers (%s)", r.text);

    /* Not reading stdin at all, with a 2 MB message: EPIPE is not an error. */
    size_t biglen = 2u << 20;
    char *big = xmalloc(biglen);
    for (size_t k = 0; k < biglen; k++)
        big[k] = (k % 80 == 79) ? '\n' : 'a';
    struct fake fb;
    fake_init(&fb, big, biglen, "s@example.com", "u@example.org");
    const char *t0[] = { "/bin/sh", "-c", "exit 0", NULL };
    pipe_run(&fb, t0, 10, 0, &r);
    is_int(r.status, DLV_SENT, "pipe: a command that ignores stdin still succeeds");
    const char *twc[] = { "/bin/sh", "-c", "wc -c", NULL };
    pipe_run(&fb, twc, 10, 0, &r);
    is_int(r.status, DLV_SENT, "pipe: a 2 MB message streams through");
    close(fb.fd);
    free(big);

    const char *tslow[] = { "/bin/sh", "-c", "sleep 30 & exec sleep 30", NULL };
    double t = now_secs();
    pipe_run(&f, tslow, 1, 0, &r);
    t = now_secs() - t;
    is_int(r.status, DLV_BOUNCED, "pipe: time limit bounces, as Postfix");
    is_str(r.dsn, "5.3.0", "pipe: time limit is 5.3.0");
    ok(strncmp(r.text, "Command time limit exceeded: \"/bin/sh\"", 38) == 0, "pipe: text %s", r.text);
    ok(t >= 0.9 && t < 4, "pipe: killed after the limit (%.2f s), offspring included", t);

    const char *tbad[] = { "/bin/echo", "${nosuch}", NULL };
    pipe_run(&f, tbad, 10, 0, &r);
    is_int(r.status, DLV_DEFERRED, "pipe: unknown macro defers");
    is_str(r.dsn, "4.3.5", "pipe: unknown macro is 4.3.5");
    const char *tmissing[] = { "/nonexistent/cmd", NULL };
    pipe_run(&f, tmissing, 10, 0, &r);
    is_int(r.status, DLV_DEFERRED, "pipe: exec failure defers (%s)", r.text);
    close(f.fd);
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(root, sizeof(root), "%s/petrel-dlv-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (mkdtemp(root) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    test_maildir();
    test_mbox();
    test_pipe();
    remove_tree(root);
    return done_testing();
}
