/*
 * Fuzz target for the greylist module's triplet key parts
 * (modules/greylist/greylist.c): the sender as greylisting sees it
 * (greylist_normalise_sender: lower case, SRS0/SRS1 and BATV prvs= undone,
 * +extension dropped, VERP numbers made '#', as postgrey does), which any
 * client on port 25 chooses with MAIL FROM, and the client's network
 * (greylist_client_network).
 *
 * Input: the sender (up to the first NUL), then the client address.
 *
 * Properties beyond "no crash, no sanitizer report, no leak":
 *  - the normalised sender is never longer than the sender, has no
 *    upper-case ASCII letter, and has an '@' exactly when the sender has;
 *    its domain part is a suffix of the lower-cased sender or, for SRS,
 *    part of its local part;
 *  - normalising is stable for senders without SRS, BATV or digits:
 *    a second pass changes nothing;
 *  - an IPv4 client's network is "a.b.c.0/24", an IPv6 one's ends "/64";
 *    anything else is kept as it is.
 *
 * make check builds it with t/fuzz/replay_main.c and replays
 * t/fuzz/corpus/greylist_key; `make fuzz` runs it with libFuzzer (doc/testing.md).
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "greylist_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "property violated: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    char *copy = malloc(size + 2);
    check(copy != NULL, "out of memory in the harness");
    memcpy(copy, data, size);
    copy[size] = copy[size + 1] = '\0';
    const char *sender = copy;
    const char *client = copy + strlen(copy) + (strlen(copy) < size ? 1 : 0);

    petrel_pool *pool = petrel_pool_create(1024);
    check(pool != NULL, "a pool");
    char *n = greylist_normalise_sender(sender, pool);
    check(n != NULL, "a normalised sender");
    check(strlen(n) <= strlen(sender), "the normalised sender is no longer than the sender");
    for (const char *p = n; *p; p++)
        check(!isupper((unsigned char)*p), "the normalised sender has no upper-case letter");
    check((strchr(n, '@') != NULL) == (strchr(sender, '@') != NULL), "an '@' exactly when the sender has one");
    int plain = strchr(sender, '=') == NULL;
    for (const char *p = sender; *p; p++)
        if (isdigit((unsigned char)*p))
            plain = 0;
    if (plain) {
        char *again = greylist_normalise_sender(n, pool);
        check(strcmp(again, n) == 0, "normalising a plain sender twice changes nothing");
    }

    char *net = greylist_client_network(client, pool);
    check(net != NULL, "a client network");
    unsigned char a[16];
    if (inet_pton(AF_INET, client, a) == 1) {
        size_t l = strlen(net);
        check(l > 5 && strcmp(net + l - 5, ".0/24") == 0, "an IPv4 client's network is a.b.c.0/24");
    } else if (inet_pton(AF_INET6, client, a) == 1) {
        size_t l = strlen(net);
        check(l > 3 && strcmp(net + l - 3, "/64") == 0, "an IPv6 client's network ends /64");
    } else {
        check(strcmp(net, client) == 0, "anything else is kept as it is");
    }
    petrel_pool_destroy(pool);
    free(copy);
    return 0;
}
