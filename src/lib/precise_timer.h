/* precise_timer.h: a one-shot timer on a libevent loop that fires within
 * microseconds of its time. libevent 2.1's own timers wait in epoll_wait,
 * whose timeout is whole milliseconds rounded up, so they fire up to a
 * millisecond late; this one is a timerfd (Linux) watched by the loop.
 * Not for: periodic timers, or anything a millisecond late does not hurt
 * (use evtimer). Loop thread only, except precise_timer_at and
 * precise_timer_stop: a syscall on the timerfd, safe from any thread, and
 * unlike an evtimer set from another thread they do not wake the loop. */
#ifndef LLMESH_PRECISE_TIMER_H
#define LLMESH_PRECISE_TIMER_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
typedef struct precise_timer precise_timer;
typedef void (*precise_timer_fn)(void *arg);

/* NULL with a message in err when the system has no timerfd. */
precise_timer *precise_timer_new(struct event_base *base, precise_timer_fn fn, void *arg, char *err,
                                 size_t errlen);
/* Fires fn once at `at_us` (lib/clock.h's clock_us: CLOCK_MONOTONIC), at
 * once if that has passed; replaces any time set before. */
void precise_timer_at(precise_timer *t, uint64_t at_us);
void precise_timer_stop(precise_timer *t);
void precise_timer_free(precise_timer *t);

#endif
