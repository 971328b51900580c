/* http_guard.c: see http_guard.h. */
#include "serve/http_guard.h"

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "lib/clock.h"
#include "lib/log.h"
#include "lib/sockaddr_ip.h"

typedef struct guard_conn {
    struct bufferevent *bev;     /* our reference keeps it (and its descriptor) */
    struct sockaddr_storage addr;
    socklen_t addr_len;
    int checked;                 /* address known and limits applied */
    int cut;                     /* shut down by us */
    uint64_t deadline_ms;        /* 0 while a request is being answered */
    struct guard_conn *next;
} guard_conn;

struct http_guard {
    struct event_base *base;
    struct evhttp *http;
    guard_conn *conns;
    struct event *tick;          /* persistent: reap, deadlines */
    struct event *check_ev;      /* deferred: limits on new connections */
    http_guard_stats stats;
    http_guard_limits limits;    /* resolved: no zeros */
};

static void guard_cut(guard_conn *c)
{
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    c->cut = 1;
    /* evhttp reads the end of the stream and frees the connection; the
     * descriptor is ours until the reap. */
    if (fd >= 0) shutdown(fd, SHUT_RDWR);
}

/* Drops connections evhttp has freed: bufferevent_free clears the
 * callbacks, and ours is then the last reference. */
static void guard_reap(http_guard *g)
{
    for (guard_conn **at = &g->conns; *at;) {
        guard_conn *c = *at;
        bufferevent_data_cb rcb = NULL, wcb = NULL;
        bufferevent_event_cb ecb = NULL;
        bufferevent_getcb(c->bev, &rcb, &wcb, &ecb, NULL);
        if (rcb || wcb || ecb) {
            at = &c->next;
            continue;
        }
        *at = c->next;
        bufferevent_disable(c->bev, EV_READ | EV_WRITE);
        bufferevent_decref(c->bev);
        g->stats.open--;
        free(c);
    }
}

static void guard_check_cb(evutil_socket_t fd, short what, void *arg)
{
    http_guard *g = arg;
    guard_reap(g);
    uint64_t live = 0;
    for (guard_conn *c = g->conns; c; c = c->next) live += !c->cut;
    for (guard_conn *c = g->conns; c; c = c->next) {
        if (c->checked) continue;
        c->checked = 1;
        evutil_socket_t sock = bufferevent_getfd(c->bev);
        c->addr_len = sizeof c->addr;
        if (sock < 0 || getpeername(sock, (struct sockaddr *)&c->addr, &c->addr_len) != 0) {
            c->addr_len = 0;
            continue;
        }
        uint64_t same = 0;
        for (guard_conn *o = g->conns; o; o = o->next)
            same += o != c && !o->cut && o->addr_len && sockaddr_same_ip(&o->addr, &c->addr);
        if (live > g->limits.max_conns || same >= g->limits.max_per_addr) {
            g->stats.refused++;
            live--;
            guard_cut(c);
            /* Not logged one by one: a flood would flood the log too. */
        }
    }
}

static void guard_tick_cb(evutil_socket_t fd, short what, void *arg)
{
    http_guard *g = arg;
    guard_reap(g);
    uint64_t now = clock_ms();
    for (guard_conn *c = g->conns; c; c = c->next) {
        if (c->cut || !c->deadline_ms || now < c->deadline_ms) continue;
        g->stats.cut_slow++;
        log_debug("http", "connection cut: no whole request within %u ms", (unsigned)g->limits.request_ms);
        guard_cut(c);
    }
}

static struct bufferevent *guard_bevcb(struct event_base *base, void *arg)
{
    http_guard *g = arg;
    struct bufferevent *bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    guard_conn *c = bev ? calloc(1, sizeof *c) : NULL;
    if (!c) return bev;          /* unguarded rather than refused: out of memory */
    bufferevent_incref(bev);
    c->bev = bev;
    c->deadline_ms = clock_ms() + g->limits.request_ms;
    c->next = g->conns;
    g->conns = c;
    g->stats.open++;
    /* evhttp sets the descriptor after this returns: look at it then. */
    event_active(g->check_ev, 0, 0);
    return bev;
}

static guard_conn *guard_find(http_guard *g, struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    for (guard_conn *c = g->conns; c && bev; c = c->next)
        if (c->bev == bev) return c;
    return NULL;
}

static void guard_request_done(struct evhttp_request *req, void *arg)
{
    http_guard *g = arg;
    guard_conn *c = guard_find(g, req);
    if (c) c->deadline_ms = clock_ms() + g->limits.request_ms;
}

void http_guard_request(http_guard *g, struct evhttp_request *req)
{
    guard_conn *c = guard_find(g, req);
    if (!c) return;
    c->deadline_ms = 0;
    evhttp_request_set_on_complete_cb(req, guard_request_done, g);
}

http_guard *http_guard_new(struct event_base *base, struct evhttp *http)
{
    http_guard *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->base = base;
    g->http = http;
    http_guard_set_limits(g, &(http_guard_limits){0});
    g->tick = event_new(base, -1, EV_PERSIST, guard_tick_cb, g);
    g->check_ev = event_new(base, -1, 0, guard_check_cb, g);
    if (!g->tick || !g->check_ev) {
        http_guard_free(g);
        return NULL;
    }
    struct timeval tv = {0, HTTP_GUARD_TICK_MS * 1000};
    event_add(g->tick, &tv);
    evhttp_set_bevcb(http, guard_bevcb, g);
    return g;
}

void http_guard_set_limits(http_guard *g, const http_guard_limits *limits)
{
    g->limits.max_conns = limits->max_conns ? limits->max_conns : HTTP_GUARD_MAX_CONNS;
    g->limits.max_per_addr = limits->max_per_addr ? limits->max_per_addr : HTTP_GUARD_MAX_PER_ADDR;
    g->limits.request_ms = limits->request_ms ? limits->request_ms : HTTP_GUARD_REQUEST_MS;
}

void http_guard_get_stats(const http_guard *g, http_guard_stats *out) { *out = g->stats; }

void http_guard_free(http_guard *g)
{
    if (!g) return;
    while (g->conns) {
        guard_conn *c = g->conns;
        g->conns = c->next;
        bufferevent_decref(c->bev);
        free(c);
    }
    if (g->tick) event_free(g->tick);
    if (g->check_ev) event_free(g->check_ev);
    free(g);
}
