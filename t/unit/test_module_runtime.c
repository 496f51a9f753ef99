/*
 * The module runtime's handles and session state (core/module/handles.c,
 * sessions.c, notes.c, the end of a session in dispatch.c), without a
 * role: generation-checked handle tables (stale, foreign and forged
 * handles, FIFO reuse), and a module session's notes through the plugin
 * API over their whole life: set, read by another module, transaction
 * notes cleared when the transaction ends, limits, the session's close
 * (every handle stale at once, also when a module is running on it) and
 * a later session in the same slot.
 *
 * Two modules are built by hand (a descriptor and a set, no shared
 * object). In the sanitizer build this test is where the notes' memory is
 * checked: LeakSanitizer runs when it exits, which the role processes
 * (they end with _exit) never give it.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "module/module.h"
#include "module/runtime.h"
#include "module/runtime_int.h"
#include "../tap.h"

static const char *log_id(void *host)
{
    return "NOQUEUE";
}

static const char *peer(void *host)
{
    return "localhost[127.0.0.1]";
}

static const struct module_host host_ops = { .log_id = log_id, .peer = peer };

static void test_handle_tables(void)
{
    struct handle_table t, other;
    handle_table_init(&t, "session", HANDLE_TAG_SESSION);
    handle_table_init(&other, "pending call", HANDLE_TAG_PENDING);
    int a, b, c;
    uint32_t slot = 0;
    unsigned mod = 0;

    uintptr_t ha = handle_alloc(&t, &a, 3);
    ok(ha != 0 && handle_lookup(&t, ha, &slot, &mod) == &a && mod == 3, "a handle finds its object and module");
    ok((ha & 1) && (ha >> 63), "a handle is no aligned address and not a canonical one");
    uintptr_t ha5 = handle_for(&t, slot, 5);
    ok(handle_lookup(&t, ha5, NULL, &mod) == &a && mod == 5, "the same slot's handle for another module");
    handle_alloc(&other, &b, 3);
    ok(handle_lookup(&other, ha, NULL, NULL) == NULL, "a handle of another kind does not validate");
    ok(handle_lookup(&t, 0, NULL, NULL) == NULL && handle_lookup(&t, (uintptr_t)&a, NULL, NULL) == NULL &&
           handle_lookup(&t, ~(uintptr_t)0, NULL, NULL) == NULL,
       "0, a real pointer and all ones do not validate");

    handle_release(&t, slot);
    ok(handle_lookup(&t, ha, NULL, NULL) == NULL && handle_lookup(&t, ha5, NULL, NULL) == NULL,
       "a released slot's handles are stale");
    is_int(handle_module(&t, ha), 3, "a stale handle still names its module");
    uintptr_t hb = handle_alloc(&t, &b, 3);
    ok(hb != ha && handle_slot(hb) == handle_slot(ha), "the slot is reused with a new generation");
    ok(handle_lookup(&t, ha, NULL, NULL) == NULL && handle_lookup(&t, hb, NULL, NULL) == &b,
       "the old handle stays stale, the new one finds the new object");

    uintptr_t hc = handle_alloc(&t, &c, 0);
    handle_release(&t, handle_slot(hb));
    handle_release(&t, handle_slot(hc));
    uintptr_t first = handle_alloc(&t, &a, 0);
    is_int(handle_slot(first), handle_slot(hb), "freed slots are reused first freed, first taken");
    handle_table_free(&t);
    handle_table_free(&other);
}

static void test_notes(void)
{
    static const petrel_module_desc alpha_desc = {
        .abi_major = PETREL_ABI_MAJOR, .abi_minor = PETREL_ABI_MINOR, .name = "alpha", .version = "1",
    };
    static const petrel_module_desc beta_desc = {
        .abi_major = PETREL_ABI_MAJOR, .abi_minor = PETREL_ABI_MINOR, .name = "beta", .version = "1",
    };
    struct petrel_module alpha = { .desc = &alpha_desc, .name = "alpha", .index = 0 };
    struct petrel_module beta = { .desc = &beta_desc, .name = "beta", .index = 1 };
    struct petrel_module *mods[] = { &alpha, &beta };
    struct module_set set = { .mods = mods, .n = 2 };
    alpha.set = beta.set = &set;
    struct module_runtime_args args = { .set = &set, .role = MODULE_ROLE_SMTPD };
    is_int(module_runtime_start(&args), 0, "the runtime starts with two modules");

    int host;
    petrel_pool *pool = petrel_pool_create(1024);
    struct module_session *ms = module_session_open(&host, &host_ops, pool);
    ok(ms != NULL, "a module session opens");
    petrel_session *a = module_session_handle(ms, &alpha), *b = module_session_handle(ms, &beta);

    is_int(petrel_note_set(a, PETREL_NOTE_SESSION, "alpha.result", "pass"), 0, "a session note is set");
    is_int(petrel_note_set(a, PETREL_NOTE_TRANSACTION, "alpha.tx", "x"), -1,
           "a transaction note outside a transaction is refused");
    is_int(petrel_note_set(a, PETREL_NOTE_SESSION, "beta.result", "fail"), -1,
           "a note in another module's namespace is refused");
    is_int(petrel_note_set(a, PETREL_NOTE_SESSION, "alpha.Bad", "x"), -1, "a key with upper case is refused");

    petrel_pool *tx_pool = petrel_pool_create(1024);
    module_session_tx(ms, tx_pool);
    ok(petrel_tx_pool(a) == tx_pool, "a transaction begins");
    is_int(petrel_note_set(a, PETREL_NOTE_TRANSACTION, "alpha.tx", "first"), 0, "a transaction note is set");
    is_int(petrel_note_set(a, PETREL_NOTE_TRANSACTION, "alpha.tx", "second"), 0, "and set again");
    is_str(petrel_note_get(b, "alpha.tx"), "second", "another module reads the transaction note's last value");
    is_str(petrel_note_get(b, "alpha.result"), "pass", "and the session note");
    petrel_note_set(a, PETREL_NOTE_TRANSACTION, "alpha.result", "tempfail");
    is_str(petrel_note_get(b, "alpha.result"), "tempfail", "a transaction note hides the session's of that name");
    char big[4098];
    memset(big, 'v', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    is_int(petrel_note_set(a, PETREL_NOTE_TRANSACTION, "alpha.big", big), -1, "a value over 4096 bytes is refused");
    big[4096] = '\0';
    is_int(petrel_note_set(a, PETREL_NOTE_TRANSACTION, "alpha.big", big), 0, "4096 bytes are taken");

    module_session_tx(ms, NULL);
    petrel_pool_destroy(tx_pool);
    ok(petrel_note_get(b, "alpha.tx") == NULL && petrel_note_get(b, "alpha.big") == NULL,
       "the transaction's notes end with it");
    is_str(petrel_note_get(b, "alpha.result"), "pass", "the session note is there again");
    ok(petrel_tx_pool(a) == NULL, "there is no transaction pool between transactions");

    is_int(petrel_note_set(a, PETREL_NOTE_SESSION, "alpha.result", NULL), 0, "a note is removed");
    ok(petrel_note_get(b, "alpha.result") == NULL, "and reads as NULL");
    int set_ok = 0;
    char name[32];
    for (int i = 0; i < 128; i++) {
        snprintf(name, sizeof(name), "beta.n%d", i);
        set_ok += petrel_note_set(b, PETREL_NOTE_SESSION, name, "v") == 0;
    }
    is_int(set_ok, 128, "a session holds 128 notes");
    is_int(petrel_note_set(b, PETREL_NOTE_SESSION, "beta.one_more", "v"), -1, "not 129");

    /* The connection ends with 128 notes in the session: close frees them
     * (LeakSanitizer checks in the sanitizer build). */
    module_session_close(ms);
    ok(petrel_note_get(a, "beta.n0") == NULL, "after the close, a note read with the old handle is NULL");
    is_int(petrel_note_set(a, PETREL_NOTE_SESSION, "alpha.late", "x"), -1, "and a note set is refused");
    ok(petrel_session_pool(a) == NULL && petrel_session_slot(a) == NULL, "the pool and slot are gone for it too");
    ok(petrel_session_module(a) == (petrel_module *)&alpha, "the stale handle still names its module");

    /* The next connection takes the same slot: the old handles must not reach it. */
    struct module_session *ms2 = module_session_open(&host, &host_ops, pool);
    petrel_session *a2 = module_session_handle(ms2, &alpha);
    ok(handle_slot((uintptr_t)a2) == handle_slot((uintptr_t)a) && a2 != a, "a new session takes the same slot");
    petrel_note_set(a2, PETREL_NOTE_SESSION, "alpha.result", "new");
    ok(petrel_note_get(a, "alpha.result") == NULL, "the old handle does not see the new session's note");
    is_str(petrel_note_get(a2, "alpha.result"), "new", "the new handle does");

    /* Closed while a module runs on it (the module made the role end the
     * session): handles go stale now, the memory goes when the call returns. */
    ms2->calling = &alpha;
    module_session_close(ms2);
    ok(petrel_note_get(a2, "alpha.result") == NULL, "closed during a call: its handles are stale at once");
    ok(ms2->closed, "and it is freed when the call returns");
    ms2->calling = NULL;
    module_session_destroy(ms2);

    module_runtime_stop();
    petrel_pool_destroy(pool);
}

int main(void)
{
    log_init("petrel", "test");
    test_handle_tables();
    test_notes();
    return done_testing();
}
