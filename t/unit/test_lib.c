/* Unit tests for core/lib: pools and buffers. */
#include "config.h"

#include <stdint.h>
#include <string.h>

#include <petrel/pool.h>
#include "lib/base64.h"
#include "lib/buf.h"
#include "../tap.h"

static int cleanup_runs;
static void count_cleanup(void *arg)
{
    cleanup_runs += *(int *)arg;
}

int main(void)
{
    petrel_pool *pool = petrel_pool_create(0);
    char *s = petrel_pool_strdup(pool, "hello");
    is_str(s, "hello", "pool strdup copies");
    char *p = petrel_pool_printf(pool, "%s-%d", "x", 42);
    is_str(p, "x-42", "pool printf formats");
    char *big = petrel_pool_alloc(pool, 100000);
    memset(big, 'a', 100000);
    ok(((uintptr_t)big & 15) == 0, "large allocation is aligned");
    for (int i = 0; i < 10000; i++)
        petrel_pool_alloc(pool, 24);
    ok(petrel_pool_bytes(pool) > 100000, "pool accounts its blocks");
    is_str(petrel_pool_strndup(pool, "abcdef", 3), "abc", "pool strndup bounds");
    int one = 1;
    petrel_pool_cleanup_add(pool, count_cleanup, &one);
    petrel_pool_reset(pool);
    is_int(cleanup_runs, 1, "reset runs cleanups");
    ok(petrel_pool_bytes(pool) < 4096, "reset releases all but the first block");
    petrel_pool_cleanup_add(pool, count_cleanup, &one);
    petrel_pool_destroy(pool);
    is_int(cleanup_runs, 2, "destroy runs cleanups");

    struct buf b = BUF_INIT;
    buf_puts(&b, "abc");
    buf_printf(&b, "%0300d", 7);
    is_int(b.len, 303, "buf grows past its inline format buffer");
    ok(b.data[b.len] == '\0', "buf stays NUL-terminated");
    buf_reset(&b);
    is_int(b.len, 0, "buf reset empties");
    buf_free(&b);
    {
        /* base64 (RFC 4648), strict as SMTP AUTH wants it */
        char out[64];
        long n = base64_decode("AGFsaWNlAHNlY3JldA==", out);
        ok(n == 13 && memcmp(out, "\0alice\0secret", 13) == 0, "base64: AUTH PLAIN data with NUL bytes");
        is_int(base64_decode("", out), 0, "base64: empty is empty");
        ok(base64_decode("YQ==", out) == 1 && out[0] == 'a', "base64: two padding characters");
        ok(base64_decode("YWI=", out) == 2 && memcmp(out, "ab", 2) == 0, "base64: one padding character");
        is_int(base64_decode("YWJj", out), 3, "base64: no padding");
        is_int(base64_decode("YWJ", out), -1, "base64: a length not a multiple of 4");
        is_int(base64_decode("YW=j", out), -1, "base64: padding inside the group");
        is_int(base64_decode("YQ==YWJj", out), -1, "base64: padding before the end");
        is_int(base64_decode("Y===", out), -1, "base64: three padding characters");
        is_int(base64_decode("YW Jj", out), -1, "base64: white space");
        is_int(base64_decode("YW\r\nJj", out), -1, "base64: a line break");
        is_int(base64_decode("YW*j", out), -1, "base64: a character outside the alphabet");
    }
    return done_testing();
}
