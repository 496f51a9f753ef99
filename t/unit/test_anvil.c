/*
 * The shared connection table (core/smtpd/anvil.c): a slot whose rate
 * window still runs is never reused for another key, whatever window the
 * other key's caller counts with. The table is made tiny (one or two
 * slots) so that every key competes for the same slots.
 */
#include "config.h"

#include <string.h>
#include <time.h>

#include "../tap.h"
#include "smtpd/anvil.h"

static void test_rate_survives_other_callers(void)
{
    struct anvil *a = anvil_create(1);
    time_t now = 1000000;
    unsigned concurrent = 0, rate = 0;
    ok(anvil_connect(a, 0, "client:smtp:192.0.2.1", now, 60, &concurrent, &rate) == 0, "a connection is counted");
    is_int(rate, 1, "first connection in the 60 s window");
    anvil_disconnect(a, 0, "client:smtp:192.0.2.1");

    /* Callers that count with no window, or a shorter one, must not take the slot. */
    struct anvil_take take;
    is_int(anvil_service_take(a, 0, "service:smtp", 10, 0, now + 1, &take), ANVIL_UNCOUNTED,
           "a service slot finds no free slot while the client's window runs");
    is_int(anvil_count(a, "auth:192.0.2.1", now + 2, 0), 0, "an event count with no window finds none either");
    is_int(anvil_count(a, "auth:192.0.2.2", now + 15, 10), 0, "nor one with a 10 s window, 15 s later");
    anvil_lock(a, "lock:someone", now + 3, now + 100);
    is_int(anvil_locked_until(a, "lock:someone", now + 3), 0, "nor a lockout");

    ok(anvil_connect(a, 0, "client:smtp:192.0.2.1", now + 20, 60, &concurrent, &rate) == 0, "the client again");
    is_int(rate, 2, "its rate window was kept: second connection in the window");
    anvil_disconnect(a, 0, "client:smtp:192.0.2.1");
    is_int(anvil_peek(a, "client:smtp:192.0.2.1", now + 30, 60), 2, "peek sees both");

    /* Once its window is over, the slot is free for anyone. */
    is_int(anvil_count(a, "auth:192.0.2.1", now + 61, 30), 1, "after the window the slot is reused");
    ok(anvil_connect(a, 0, "client:smtp:192.0.2.1", now + 62, 60, &concurrent, &rate) != 0,
       "and now the client finds the table full while that 30 s window runs (fails open)");
    anvil_destroy(a);
}

static void test_longest_window_wins(void)
{
    /* One key counted with two windows keeps the longer one for idleness. */
    struct anvil *a = anvil_create(1);
    time_t now = 2000000;
    is_int(anvil_count(a, "auth:x", now, 300), 1, "counted with a 300 s window");
    is_int(anvil_count(a, "auth:x", now + 1, 5), 2, "then with a 5 s one");
    is_int(anvil_count(a, "other", now + 100, 0), 0, "100 s later the slot is still in use");
    is_int(anvil_count(a, "other", now + 301, 0), 1, "after 300 s it is free");
    anvil_destroy(a);
}

static void test_connections_without_window(void)
{
    struct anvil *a = anvil_create(1);
    time_t now = 3000000;
    unsigned concurrent = 0, rate = 0;
    ok(anvil_connect(a, 0, "client:a", now, 0, &concurrent, &rate) == 0, "a connection without a rate limit");
    is_int(anvil_count(a, "other", now, 0), 0, "its slot is busy while it is connected");
    anvil_disconnect(a, 0, "client:a");
    is_int(anvil_count(a, "other", now, 0), 1, "and free as soon as it is gone (no window to keep)");
    anvil_destroy(a);
}

static void test_hysteresis_shared_by_workers(void)
{
    /* postscreen's stress: one state for all workers. Worker 0 sees the
     * high mark; the clients that leave are worker 1's: the state turns
     * off at the low mark whoever's client leaves, and once. */
    struct anvil *a = anvil_create(4);
    time_t now = 4000000;
    unsigned concurrent = 0, rate = 0, n = 0;
    int on = -1;
    for (int i = 0; i < 8; i++)
        anvil_connect(a, 1, "screen:smtp", now, 0, &concurrent, &rate);
    is_int(anvil_hysteresis(a, "screen:smtp", 9, 7, &n, &on), 0, "8 of high 9: no change");
    is_int(on, 0, "(off)");
    anvil_connect(a, 0, "screen:smtp", now, 0, &concurrent, &rate);
    is_int(anvil_hysteresis(a, "screen:smtp", 9, 7, &n, &on), 1, "the 9th (worker 0's) turns it on");
    is_int((int)n, 9, "with the count of all workers");
    is_int(anvil_hysteresis(a, "screen:smtp", 9, 7, &n, &on), 0, "a second look changes nothing");
    is_int(anvil_high(a, "screen:smtp"), 1, "on for every worker");
    anvil_disconnect(a, 1, "screen:smtp");
    is_int(anvil_hysteresis(a, "screen:smtp", 9, 7, &n, &on), 0, "8 left: still on (hysteresis)");
    anvil_disconnect(a, 1, "screen:smtp");
    is_int(anvil_hysteresis(a, "screen:smtp", 9, 7, &n, &on), -1, "7 left (worker 1's clients went): off");
    is_int(on, 0, "(off)");
    anvil_disconnect(a, 1, "screen:smtp");
    is_int(anvil_hysteresis(a, "screen:smtp", 9, 7, &n, &on), 0, "and told once");
    is_int(anvil_high(a, "screen:smtp"), 0, "off for every worker");
    is_int(anvil_hysteresis(a, "screen:smtp", 0, 0, &n, &on), 0, "high 0: never on");
    is_int(anvil_hysteresis(a, "unknown", 1, 0, &n, &on), 0, "a key never counted: no state");
    anvil_destroy(a);
}

int main(void)
{
    test_rate_survives_other_callers();
    test_longest_window_wins();
    test_connections_without_window();
    test_hysteresis_shared_by_workers();
    return done_testing();
}
