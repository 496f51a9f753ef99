/*
 * Fuzz target for the maildrop file reader (core/queue/maildrop.c): the
 * bytes are a maildrop file that a local user could have written. Besides
 * crashes and sanitizer reports it checks invariants:
 *   - the verdict and everything reported are the same whether the input
 *     arrives in one piece or in pieces of 1..16 bytes (the first byte
 *     picks the size): the pickup role and petrel-postdrop read in blocks;
 *   - an accepted file has 1..MAILDROP_RCPT_MAX recipients, addresses that
 *     pass maildrop_address_ok and carry no control character, and as many
 *     content bytes as its end record says;
 *   - writing the accepted records back with the writer gives a file the
 *     parser accepts again with the same result (writer and reader agree);
 *   - a refusal always carries a reason.
 *
 * make check builds it with t/fuzz/replay_main.c and replays
 * t/fuzz/corpus/maildrop; `make fuzz` runs it with libFuzzer (doc/testing.md).
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "queue/maildrop.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond)
{
    if (!cond)
        abort();
}

struct result {
    struct buf log;                 /* every record, in order */
    unsigned long long content;
    unsigned long long end_length;
    size_t rcpts;
    int has_time;
    long long sec;
    long usec;
    char *sender;
    char **rcpt;
    struct buf body;
};

static void check_address(const char *a, int sender)
{
    const char *why = NULL;
    check(maildrop_address_ok(a, sender, &why) == 0);
    for (; *a; a++)
        check((unsigned char)*a >= 32 && *a != 127);
}

static int on_time(void *ctx, long long sec, long usec)
{
    struct result *r = ctx;
    r->has_time = 1;
    r->sec = sec;
    r->usec = usec;
    buf_printf(&r->log, "T%lld.%ld;", sec, usec);
    return 0;
}

static int on_sender(void *ctx, const char *a)
{
    struct result *r = ctx;
    check_address(a, 1);
    free(r->sender);
    r->sender = strdup(a);
    buf_printf(&r->log, "S%s;", a);
    return 0;
}

static int on_rcpt(void *ctx, const char *a)
{
    struct result *r = ctx;
    check_address(a, 0);
    check(r->rcpts < MAILDROP_RCPT_MAX);
    r->rcpt = realloc(r->rcpt, (r->rcpts + 1) * sizeof(*r->rcpt));
    check(r->rcpt != NULL);
    r->rcpt[r->rcpts++] = strdup(a);
    buf_printf(&r->log, "R%s;", a);
    return 0;
}

static int on_content(void *ctx, const void *d, size_t n)
{
    struct result *r = ctx;
    check(n > 0);
    r->content += n;
    buf_append(&r->body, d, n);
    return 0;
}

static int on_end(void *ctx, unsigned long long length)
{
    struct result *r = ctx;
    r->end_length = length;
    return 0;
}

static const struct maildrop_handler handler = { on_time, on_sender, on_rcpt, NULL, on_content, on_end };

static void result_free(struct result *r)
{
    buf_free(&r->log);
    buf_free(&r->body);
    free(r->sender);
    for (size_t i = 0; i < r->rcpts; i++)
        free(r->rcpt[i]);
    free(r->rcpt);
    memset(r, 0, sizeof(*r));
}

/* 0 when accepted; the parser's error is copied to error. */
static int run(const uint8_t *data, size_t size, size_t step, struct result *r, char *error, size_t esize)
{
    struct maildrop_parser p;
    maildrop_parser_init(&p, MAILDROP_FILE, 0);
    int rc = 0;
    for (size_t off = 0; off < size && rc == 0; off += step)
        rc = maildrop_parse(&p, data + off, size - off < step ? size - off : step, &handler, r);
    if (rc == 0)
        rc = maildrop_parse_finish(&p);
    if (rc != 0) {
        check(p.error[0] != '\0');
        snprintf(error, esize, "%s", p.error);
    }
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1024 * 1024)
        return 0;
    struct result whole, split;
    memset(&whole, 0, sizeof(whole));
    memset(&split, 0, sizeof(split));
    char err1[256] = "", err2[256] = "";
    int rc1 = run(data, size, size ? size : 1, &whole, err1, sizeof(err1));
    size_t step = size ? (size_t)(data[0] % 16) + 1 : 1;
    int rc2 = run(data, size, step, &split, err2, sizeof(err2));
    check(rc1 == rc2);
    check(strcmp(err1, err2) == 0);
    check((whole.log.data == NULL) == (split.log.data == NULL));
    check(whole.log.data == NULL || strcmp(whole.log.data, split.log.data) == 0);
    check(whole.content == split.content);

    if (rc1 == 0) {
        check(whole.has_time && whole.sender != NULL && whole.rcpts >= 1);
        check(whole.content == whole.end_length);
        /* Write it back and read it again. */
        char *mem = NULL;
        size_t len = 0;
        FILE *fp = open_memstream(&mem, &len);
        check(fp != NULL);
        struct maildrop_writer w;
        maildrop_writer_init(&w, fp);
        maildrop_write_time(&w, whole.sec, whole.usec);
        maildrop_write_sender(&w, whole.sender);
        for (size_t i = 0; i < whole.rcpts; i++)
            maildrop_write_recipient(&w, whole.rcpt[i]);
        maildrop_write_content_start(&w);
        maildrop_write_content(&w, whole.body.data ? whole.body.data : "", whole.body.len);
        check(maildrop_write_end(&w) == 0);
        maildrop_writer_free(&w);
        fclose(fp);
        struct result again;
        memset(&again, 0, sizeof(again));
        char err3[256] = "";
        check(run((const uint8_t *)mem, len, len, &again, err3, sizeof(err3)) == 0);
        check(strcmp(again.log.data, whole.log.data) == 0 && again.content == whole.content);
        check(again.body.len == whole.body.len &&
              (whole.body.len == 0 || memcmp(again.body.data, whole.body.data, whole.body.len) == 0));
        result_free(&again);
        free(mem);
    }
    result_free(&whole);
    result_free(&split);
    return 0;
}
