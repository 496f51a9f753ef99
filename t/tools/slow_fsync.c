/*
 * An LD_PRELOAD shim for tests: makes fdatasync(2) slow, so that a test can
 * act while a queue file's commit is under way (test_shutdown.py sends
 * SIGTERM then). Inactive unless PETREL_TEST_FDATASYNC_DELAY_MS is set;
 * each call first appends a line to PETREL_TEST_FDATASYNC_MARK (when set),
 * so the test knows the commit has begun, then sleeps, then syncs for real.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int fdatasync(int fd)
{
    static int (*real_fdatasync)(int);
    if (real_fdatasync == NULL)
        real_fdatasync = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    const char *delay = getenv("PETREL_TEST_FDATASYNC_DELAY_MS");
    if (delay && *delay) {
        const char *mark = getenv("PETREL_TEST_FDATASYNC_MARK");
        if (mark && *mark) {
            int m = open(mark, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
            if (m >= 0) {
                (void)!write(m, "fdatasync\n", 10);
                close(m);
            }
        }
        long ms = atol(delay);
        struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
        while (nanosleep(&ts, &ts) != 0)
            ;
    }
    return real_fdatasync(fd);
}
