/*
 * queue-check: validates every file of a queue directory with the daemon's own
 * reader (queue_message_read) and prints one JSON object per file:
 *
 *   {"dir":"active","id":"...","result":"ok","content_offset":N,
 *    "content_length":N,"file_size":N,"sender":"...","nrcpt":N}
 *   {"dir":"incoming","id":"...","result":"incomplete"|"damaged"|"error",
 *    "error":"..."}
 *
 * Names that are not queue IDs and non-regular files are reported with
 * result "foreign" (a temporary under any name is something the durability
 * tests must notice). The durability tests (t/integration/test_durability.py,
 * t/integration/test_fsync_order.py) read the content through the offsets.
 *
 * Usage: queue-check QUEUE_DIRECTORY [DIR...]   (default: incoming active
 * deferred hold corrupt). Exit status 0 when every directory could be read.
 */
#include "config.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <petrel/pool.h>
#include "queue/queue.h"

static void json_str(const char *s)
{
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            printf("\\%c", *p);
        else if (*p < 0x20 || *p >= 0x7f)
            printf("\\u%04x", *p);
        else
            putchar(*p);
    }
    putchar('"');
}

static int check_dir(const char *top, const char *dir)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", top, dir);
    int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        if (errno == ENOENT)
            return 0;
        fprintf(stderr, "queue-check: %s: %s\n", path, strerror(errno));
        return -1;
    }
    DIR *d = fdopendir(dup(dfd));
    if (!d) {
        fprintf(stderr, "queue-check: %s: %s\n", path, strerror(errno));
        close(dfd);
        return -1;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        printf("{\"dir\":");
        json_str(dir);
        printf(",\"id\":");
        json_str(e->d_name);
        struct stat st;
        if (!queue_id_valid(e->d_name) || fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0
            || !S_ISREG(st.st_mode)) {
            printf(",\"result\":\"foreign\"}\n");
            continue;
        }
        petrel_pool *pool = petrel_pool_create(0);
        struct queue_message m;
        char *error = NULL;
        if (queue_message_read(dfd, e->d_name, pool, &m, &error) == 0) {
            printf(",\"result\":\"ok\",\"content_offset\":%lld,\"content_length\":%llu,\"file_size\":%lld,"
                   "\"sender\":",
                   (long long)m.content_offset, m.content_length, (long long)m.file_size);
            json_str(m.env.sender);
            printf(",\"nrcpt\":%zu}\n", m.env.rcpt_count);
        } else {
            int err = errno;
            const char *result = err == ENODATA ? "incomplete" : err == EBADMSG ? "damaged" : "error";
            printf(",\"result\":\"%s\",\"error\":", result);
            json_str(error ? error : strerror(err));
            printf("}\n");
        }
        petrel_pool_destroy(pool);
    }
    closedir(d);
    close(dfd);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: queue-check QUEUE_DIRECTORY [DIR...]\n");
        return 2;
    }
    static const char *defaults[] = { "incoming", "active", "deferred", "hold", "corrupt" };
    int rc = 0;
    if (argc > 2) {
        for (int i = 2; i < argc; i++)
            rc |= check_dir(argv[1], argv[i]) != 0;
    } else {
        for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++)
            rc |= check_dir(argv[1], defaults[i]) != 0;
    }
    fflush(stdout);
    return rc;
}
