/* clock.h: the monotonic clock in the units the code measures in. Header
 * only: every timer, deadline and duration in llmesh reads this one clock
 * (CLOCK_MONOTONIC: never steps back, unaffected by the wall clock). */
#ifndef LLMESH_CLOCK_H
#define LLMESH_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint64_t clock_us(void) { return clock_ns() / 1000; }
static inline uint64_t clock_ms(void) { return clock_ns() / 1000000; }
static inline double clock_s(void) { return (double)clock_ns() * 1e-9; }

#endif
