/* http_guard.h: bounds on what HTTP clients can hold on one of the node's
 * evhttp servers (the API, the console): connections in all and per client
 * address, and the time a request may take to arrive.
 *
 * evhttp 2.1 (Debian 12) bounds header and body sizes but has no per-request
 * deadline, no connection limit, and tells nobody about a new connection:
 * a client that trickles a header byte every few seconds holds a connection
 * (and its buffers) for ever, and a few thousand such clients exhaust the
 * process's descriptors. The guard sits in evhttp's one hook for new
 * connections (evhttp_set_bevcb) and keeps its own list of them:
 *   - at most max_conns connections (HTTP_GUARD_MAX_CONNS by default),
 *     max_per_addr (HTTP_GUARD_MAX_PER_ADDR) from one IP address; beyond
 *     that a new one is shut down at once;
 *   - a request must arrive whole (headers and body) within request_ms
 *     (HTTP_GUARD_REQUEST_MS) of the connection opening or of the previous
 *     answer's end (so an idle keep-alive connection is closed after that
 *     too); a connection that misses it is shut down. While a request is
 *     being answered (a long stream included) there is no deadline.
 * Everything shut down is counted.
 *
 * How connections are known: the guard makes each connection's bufferevent
 * and holds a reference on it, so its descriptor cannot be closed and reused
 * behind the guard's back; every HTTP_GUARD_TICK_MS it drops the references
 * of connections evhttp has freed (their callbacks are cleared). The cost: a
 * connection evhttp closes keeps its descriptor up to one tick longer (a
 * client reading an HTTP/1.0 answer to its end sees the end that much later).
 *
 * Threading: event-loop thread only. */
#ifndef LLMESH_HTTP_GUARD_H
#define LLMESH_HTTP_GUARD_H

#include <stdint.h>

struct event_base;
struct evhttp;
struct evhttp_request;

#define HTTP_GUARD_MAX_CONNS 1024     /* per server */
#define HTTP_GUARD_MAX_PER_ADDR 64    /* per server and client IP address */
#define HTTP_GUARD_REQUEST_MS 15000
#define HTTP_GUARD_TICK_MS 250

/* The bounds (llmesh serve's --http-max-conns, --http-max-conns-per-addr,
 * --http-request-timeout); 0 = the default above. */
typedef struct {
    uint32_t max_conns;
    uint32_t max_per_addr;
    uint32_t request_ms;
} http_guard_limits;

typedef struct http_guard http_guard;

typedef struct {
    uint64_t refused;            /* connections shut at once: too many in all or from one address */
    uint64_t cut_slow;           /* connections shut for missing the request deadline */
    uint64_t open;               /* connections now */
} http_guard_stats;

/* Installs the guard on http (its bevcb), with the default bounds. NULL
 * when out of memory. */
http_guard *http_guard_new(struct event_base *base, struct evhttp *http);
/* New bounds, for connections from now on (zeros: the defaults). */
void http_guard_set_limits(http_guard *g, const http_guard_limits *limits);
/* A whole request arrived on req's connection: no deadline until its answer
 * is sent. Call from the request callback. */
void http_guard_request(http_guard *g, struct evhttp_request *req);
void http_guard_get_stats(const http_guard *g, http_guard_stats *out);
/* After evhttp_free: drops the guard's references and frees it. */
void http_guard_free(http_guard *g);

#endif
