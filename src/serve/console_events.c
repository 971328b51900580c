/* console_events.c: the /api/events hub. See console_events.h.
 *
 * Subscribers are evhttp requests held open in chunked mode. One timer,
 * armed only while there are subscribers, builds the status once per tick
 * and writes it to whoever needs it; nothing else runs while nobody
 * listens. */
#include "serve/console_events.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/clock.h"
#include "lib/log.h"

typedef struct subscriber {
    console_events *hub;
    struct evhttp_request *req;
    uint64_t last_sent_ms;
    struct subscriber *next, *prev;
} subscriber;

struct console_events {
    struct event_base *base;
    char *(*status)(void *ctx);
    void *ctx;
    struct event *tick;
    subscriber *subs;
    char *last;                  /* the last document sent by a tick */
    console_events_stats stats;
};

static void sub_unlink(subscriber *s)
{
    console_events *ev = s->hub;
    if (s->prev) s->prev->next = s->next;
    else ev->subs = s->next;
    if (s->next) s->next->prev = s->prev;
    ev->stats.subscribers--;
    if (!ev->subs) event_del(ev->tick);
}

/* The subscriber's connection closed (it went away, or evhttp is being
 * freed): forget it. evhttp frees a request still attached to its
 * connection; one it detached (the peer left while we were still
 * replying, the usual case here) is ours to free. */
static void sub_on_close(struct evhttp_connection *conn, void *arg)
{
    subscriber *s = arg;
    struct evhttp_request *req = s->req;
    log_debug("console", "an /api/events subscriber went away");
    sub_unlink(s);
    free(s);
    if (evhttp_request_get_connection(req) == NULL) evhttp_request_free(req);
}

/* Too slow: close its connection now (evhttp_connection_free frees the
 * request with it) rather than queue without end or wait for it. */
static void sub_drop(subscriber *s)
{
    struct evhttp_connection *conn = evhttp_request_get_connection(s->req);
    s->hub->stats.dropped++;
    log_info("console", "dropping an /api/events subscriber that does not keep up");
    sub_unlink(s);
    free(s);
    if (conn) {
        evhttp_connection_set_closecb(conn, NULL, NULL);
        evhttp_connection_free(conn);
    }
}

static size_t sub_queued(const subscriber *s)
{
    struct evhttp_connection *conn = evhttp_request_get_connection(s->req);
    struct bufferevent *bev = conn ? evhttp_connection_get_bufferevent(conn) : NULL;
    return bev ? evbuffer_get_length(bufferevent_get_output(bev)) : 0;
}

/* Writes one event; 0, or -1 after dropping s. */
static int sub_send(subscriber *s, const char *doc)
{
    if (sub_queued(s) > CONSOLE_EVENTS_MAX_QUEUED) {
        sub_drop(s);
        return -1;
    }
    struct evbuffer *chunk = evbuffer_new();
    if (!chunk) return 0;
    /* The document is one line (cJSON_PrintUnformatted escapes newlines). */
    evbuffer_add_printf(chunk, "event: status\ndata: %s\n\n", doc);
    evhttp_send_reply_chunk(s->req, chunk);
    evbuffer_free(chunk);
    s->last_sent_ms = clock_ms();
    s->hub->stats.events++;
    return 0;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    console_events *ev = arg;
    char *doc = ev->status(ev->ctx);
    if (!doc) return;
    int changed = !ev->last || strcmp(ev->last, doc) != 0;
    uint64_t now = clock_ms();
    /* Quiet subscribers get the document again one tick before the 2 s are
     * up (the half tick absorbs clock rounding): a tick that a busy machine
     * runs late still keeps the promise. */
    uint64_t quiet_ms = CONSOLE_EVENTS_KEEPALIVE_MS - CONSOLE_EVENTS_POLL_MS - CONSOLE_EVENTS_POLL_MS / 2;
    for (subscriber *s = ev->subs, *next; s; s = next) {
        next = s->next;
        if (changed || now - s->last_sent_ms >= quiet_ms) sub_send(s, doc);
    }
    free(ev->last);
    ev->last = doc;
}

console_events *console_events_new(struct event_base *base, char *(*status)(void *ctx), void *ctx)
{
    console_events *ev = calloc(1, sizeof *ev);
    if (!ev) return NULL;
    ev->base = base;
    ev->status = status;
    ev->ctx = ctx;
    ev->tick = event_new(base, -1, EV_PERSIST, on_tick, ev);
    if (!ev->tick) {
        free(ev);
        return NULL;
    }
    return ev;
}

void console_events_free(console_events *ev)
{
    if (!ev) return;
    while (ev->subs) {
        subscriber *s = ev->subs;
        struct evhttp_connection *conn = evhttp_request_get_connection(s->req);
        if (conn) evhttp_connection_set_closecb(conn, NULL, NULL);
        evhttp_send_reply_end(s->req);
        sub_unlink(s);
        free(s);
    }
    event_free(ev->tick);
    free(ev->last);
    free(ev);
}

static void refuse(struct evhttp_request *req)
{
    struct evkeyvalq *headers = evhttp_request_get_output_headers(req);
    evhttp_add_header(headers, "Content-Type", "application/json");
    evhttp_add_header(headers, "Retry-After", "5");
    struct evbuffer *body = evbuffer_new();
    if (body)
        evbuffer_add_printf(body, "{\"error\":{\"message\":\"too many /api/events subscribers (at most %d)\","
                                  "\"type\":\"server_error\",\"param\":null,\"code\":null}}",
                            CONSOLE_EVENTS_MAX);
    evhttp_send_reply(req, 503, "Service Unavailable", body);
    if (body) evbuffer_free(body);
}

void console_events_subscribe(console_events *ev, struct evhttp_request *req)
{
    if (ev->stats.subscribers >= CONSOLE_EVENTS_MAX) {
        ev->stats.refused++;
        refuse(req);
        return;
    }
    char *doc = ev->status(ev->ctx);
    subscriber *s = calloc(1, sizeof *s);
    if (!doc || !s) {
        free(doc);
        free(s);
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    s->hub = ev;
    s->req = req;
    s->next = ev->subs;
    if (ev->subs) ev->subs->prev = s;
    ev->subs = s;
    ev->stats.subscribers++;
    ev->stats.accepted++;
    struct evkeyvalq *headers = evhttp_request_get_output_headers(req);
    evhttp_add_header(headers, "Content-Type", "text/event-stream; charset=utf-8");
    evhttp_add_header(headers, "Cache-Control", "no-store");
    evhttp_send_reply_start(req, 200, "OK");
    evhttp_connection_set_closecb(evhttp_request_get_connection(req), sub_on_close, s);
    struct evbuffer *hello = evbuffer_new();
    if (hello) {
        /* For EventSource clients: reconnect after 2 s if the stream breaks. */
        evbuffer_add_printf(hello, "retry: %d\n\n", CONSOLE_EVENTS_KEEPALIVE_MS);
        evhttp_send_reply_chunk(req, hello);
        evbuffer_free(hello);
    }
    sub_send(s, doc);
    free(doc);
    if (!event_pending(ev->tick, EV_TIMEOUT, NULL)) {
        struct timeval tv = {0, CONSOLE_EVENTS_POLL_MS * 1000};
        event_add(ev->tick, &tv);
    }
}

void console_events_get_stats(const console_events *ev, console_events_stats *out)
{
    if (ev) *out = ev->stats;
    else memset(out, 0, sizeof *out);
}
