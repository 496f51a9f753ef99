/*
 * Fuzz target for the dmarc module's From header parser
 * (modules/dmarc/dmarc_from.c). Besides crashes and sanitizer reports it
 * checks that every domain kept is non-empty, at most 253 bytes, and made
 * of letters, digits, '-', '.', '_' and UTF-8 bytes only, so that nothing
 * else can reach a DNS query or an Authentication-Results header.
 *
 * make check builds it with t/fuzz/replay_main.c and replays
 * t/fuzz/corpus/dmarc_from; `make fuzz` runs it with libFuzzer (doc/testing.md).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dmarc_from.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond)
{
    if (!cond)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 8192)
        return 0;
    char *value = malloc(size + 1);
    if (value == NULL)
        return 0;
    memcpy(value, data, size);
    value[size] = '\0';
    struct dmarc_from f;
    memset(&f, 0, sizeof(f));
    dmarc_from_parse(&f, value);
    check(f.headers == 1 && f.ndomains >= 0 && f.ndomains <= DMARC_FROM_MAX_DOMAINS + 1);
    check(f.ndomains <= f.addresses);
    for (int i = 0; i < f.ndomains && i < DMARC_FROM_MAX_DOMAINS; i++) {
        size_t n = strlen(f.domains[i]);
        check(n > 0 && n <= 253);
        for (size_t k = 0; k < n; k++) {
            unsigned char c = (unsigned char)f.domains[i][k];
            check((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c >= 0x80);
        }
        for (int j = 0; j < i; j++)
            check(strcmp(f.domains[i], f.domains[j]) != 0);
    }
    free(value);
    return 0;
}
