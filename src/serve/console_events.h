/* console_events.h: GET /api/events on the console port, the status
 * document as server-sent events, so the web console updates live.
 *
 * Each subscriber gets the status at once, then again whenever it changed
 * (looked at every CONSOLE_EVENTS_POLL_MS while anyone listens) and at
 * least every CONSOLE_EVENTS_KEEPALIVE_MS even when it did not; each event
 * is "event: status\ndata: JSON\n\n" (docs/PROTOCOL.md, "Console events").
 * Why polling rather than a hook in every place that changes the status:
 * the status gathers a dozen sources (mesh, plans, stages, weights,
 * counters) and most of them change on every packet (bytes, RTT), so a
 * hook would fire all the time; one document per tick costs a few hundred
 * microseconds and exists only while someone watches.
 *
 * Bounds: at most CONSOLE_EVENTS_MAX subscribers; one more is answered 503
 * (counted: refused). A subscriber whose unsent bytes pass
 * CONSOLE_EVENTS_MAX_QUEUED (it reads slower than we write, or stopped
 * reading) is dropped, its connection closed without waiting (counted:
 * dropped); one that goes away is forgotten. The loop never blocks on one.
 *
 * Threading: event-loop thread only. Ownership: the hub belongs to the
 * console's http_server (serve/http.c), which frees it before evhttp. */
#ifndef LLMESH_CONSOLE_EVENTS_H
#define LLMESH_CONSOLE_EVENTS_H

#include <stdint.h>

#define CONSOLE_EVENTS_MAX 16
#define CONSOLE_EVENTS_POLL_MS 500
#define CONSOLE_EVENTS_KEEPALIVE_MS 2000
#define CONSOLE_EVENTS_MAX_QUEUED (256u << 10)

struct event_base;
struct evhttp_request;
typedef struct console_events console_events;

typedef struct {
    int subscribers;       /* now */
    uint64_t accepted;     /* since start */
    uint64_t refused;      /* turned away: CONSOLE_EVENTS_MAX reached */
    uint64_t dropped;      /* closed by us: too slow */
    uint64_t events;       /* status events written, all subscribers */
} console_events_stats;

/* status returns a malloc'ed JSON document (the /api/status one). */
console_events *console_events_new(struct event_base *base, char *(*status)(void *ctx), void *ctx);
/* Ends every subscriber's stream (their requests stay with evhttp, which
 * frees them with their connections) and frees the hub. NULL is fine. */
void console_events_free(console_events *ev);
/* Answers req (a GET /api/events that passed the key check): a stream, or
 * 503 when full. */
void console_events_subscribe(console_events *ev, struct evhttp_request *req);
void console_events_get_stats(const console_events *ev, console_events_stats *out);

#endif
