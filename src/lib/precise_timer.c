/* precise_timer.c: see precise_timer.h. */
#include "lib/precise_timer.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

struct precise_timer {
    int fd;
    struct event *ev;
    precise_timer_fn fn;
    void *arg;
};

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    precise_timer *t = arg;
    uint64_t expirations;
    /* Nonblocking: nothing to read when the timer was reset after it fired. */
    if (read(fd, &expirations, sizeof expirations) != (ssize_t)sizeof expirations) return;
    t->fn(t->arg);
}

precise_timer *precise_timer_new(struct event_base *base, precise_timer_fn fn, void *arg, char *err,
                                 size_t errlen)
{
    precise_timer *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    t->fn = fn;
    t->arg = arg;
    t->fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (t->fd < 0) {
        snprintf(err, errlen, "timerfd_create: %s", strerror(errno));
        free(t);
        return NULL;
    }
    t->ev = event_new(base, t->fd, EV_READ | EV_PERSIST, on_readable, t);
    if (!t->ev || event_add(t->ev, NULL) != 0) {
        snprintf(err, errlen, "cannot watch a timerfd");
        precise_timer_free(t);
        return NULL;
    }
    return t;
}

void precise_timer_at(precise_timer *t, uint64_t at_us)
{
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    its.it_value.tv_sec = (time_t)(at_us / 1000000);
    /* + 1 ns: an all-zero time would stop the timer instead of firing it. */
    its.it_value.tv_nsec = (long)(at_us % 1000000) * 1000 + 1;
    timerfd_settime(t->fd, TFD_TIMER_ABSTIME, &its, NULL);
}

void precise_timer_stop(precise_timer *t)
{
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    timerfd_settime(t->fd, TFD_TIMER_ABSTIME, &its, NULL);
}

void precise_timer_free(precise_timer *t)
{
    if (!t) return;
    if (t->ev) event_free(t->ev);
    close(t->fd);
    free(t);
}
