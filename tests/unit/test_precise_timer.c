/* test_precise_timer.c: lib/precise_timer.h on a real libevent loop.
 * Checked: a timer fires once, not before its time; the median lateness
 * of nine firings 3.05 ms ahead is under 0.5 ms (a libevent timer, rounded
 * up to whole milliseconds, would be ~0.95 ms late: this is why the module
 * exists) in at least one of three rounds (a loaded machine deschedules the
 * loop now and then: one firing 20 ms late was seen in a build beside four
 * others, so no single firing is bounded); a time in the past fires at once; a
 * new time replaces the old one; a stopped timer does not fire; freeing a
 * set timer is clean. Every loop run is bounded by a libevent deadline. */
#include <event2/event.h>
#include <stdint.h>
#include <stdlib.h>

#include "lib/clock.h"
#include "lib/precise_timer.h"
#include "testlib.h"

typedef struct {
    int fired;
    uint64_t at_us;
    struct event_base *base;
} firing;

static void on_fire(void *arg)
{
    firing *f = arg;
    f->fired++;
    f->at_us = clock_us();
    event_base_loopbreak(f->base);
}

/* Runs the loop until the timer fires or `ms` pass. */
static void run_for(struct event_base *base, int ms)
{
    struct timeval limit = {ms / 1000, (ms % 1000) * 1000};
    event_base_loopexit(base, &limit);
    event_base_dispatch(base);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The median lateness of nine firings 3.05 ms ahead, in microseconds. */
static uint64_t median_lateness(precise_timer *t, firing *f)
{
    uint64_t late[9];
    for (int i = 0; i < 9; i++) {
        f->fired = 0;
        uint64_t at = clock_us() + 3050;
        precise_timer_at(t, at);
        run_for(f->base, 1000);
        CHECK_EQ_INT(f->fired, 1);
        CHECK(f->at_us >= at);
        late[i] = f->fired ? f->at_us - at : UINT64_MAX;
    }
    qsort(late, 9, sizeof late[0], cmp_u64);
    return late[4];
}

static void test_fires_on_time(void)
{
    struct event_base *base = event_base_new();
    REQUIRE(base);
    firing f = {.base = base};
    char err[128];
    precise_timer *t = precise_timer_new(base, on_fire, &f, err, sizeof err);
    REQUIRE(t);
    uint64_t best = UINT64_MAX;
    for (int round = 0; round < 3 && best >= 500; round++) {
        uint64_t m = median_lateness(t, &f);
        fprintf(stderr, "  round %d: median lateness %llu us\n", round + 1, (unsigned long long)m);
        if (m < best) best = m;
    }
    CHECK(best < 500);
    precise_timer_free(t);
    event_base_free(base);
}

static void test_past_replace_stop(void)
{
    struct event_base *base = event_base_new();
    REQUIRE(base);
    firing f = {.base = base};
    char err[128];
    precise_timer *t = precise_timer_new(base, on_fire, &f, err, sizeof err);
    REQUIRE(t);
    /* A time that has passed: at once. */
    uint64_t t0 = clock_us();
    precise_timer_at(t, t0 - 5000);
    run_for(base, 1000);
    CHECK_EQ_INT(f.fired, 1);
    CHECK(f.at_us - t0 < 50000);
    /* A later time replaces an earlier one: one firing, at the later. */
    f.fired = 0;
    uint64_t later = clock_us() + 20000;
    precise_timer_at(t, clock_us() + 2000);
    precise_timer_at(t, later);
    run_for(base, 1000);
    CHECK_EQ_INT(f.fired, 1);
    CHECK(f.at_us >= later);
    /* Stopped: nothing within 30 ms of when it was due. */
    f.fired = 0;
    precise_timer_at(t, clock_us() + 2000);
    precise_timer_stop(t);
    run_for(base, 30);
    CHECK_EQ_INT(f.fired, 0);
    /* Freed while set: its event goes with it. */
    precise_timer_at(t, clock_us() + 2000);
    precise_timer_free(t);
    run_for(base, 30);
    CHECK_EQ_INT(f.fired, 0);
    event_base_free(base);
}

int main(void)
{
    RUN(test_fires_on_time);
    RUN(test_past_replace_stop);
    return testlib_finish();
}
