/* api.h: the OpenAI-compatible API, independent of where a request came from.
 *
 * A request reaches api_handle from the local HTTP server (serve/http.c) or
 * from a peer through an HTTP tunnel stream (serve/tunnel.c). Either way the
 * transport hands over an api_sink, and the API answers through it, maybe
 * much later (generation runs on the scheduler's workers). A request for a
 * model this node does not serve is forwarded to a peer that does, through
 * the same sink, so a streamed answer passes through untouched.
 *
 * Inside: api.c (endpoints) -> openai.c (parsing, rendering) and router.c
 * (local job or peer, retries) -> tunnel.c. The transports (http.c,
 * tunnel.c) reach the API through this header and the sink; tunnel.c gets
 * api_handle as a handler (api_serve_tunnel), never by name.
 *
 * Threading: event-loop thread only. */
#ifndef LLMESH_API_H
#define LLMESH_API_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct sched;
struct mesh;

#define API_MAX_BODY (8u << 20)   /* bytes of request body accepted */

/* Where a response goes. begin is called once, then write any number of
 * times, then end once; after end the sink is not touched again. */
typedef struct api_sink api_sink;
typedef struct {
    void (*begin)(api_sink *sink, int status, const char *content_type);
    void (*write)(api_sink *sink, const char *data, size_t len);
    void (*end)(api_sink *sink);
    /* Optional (may be NULL): the model the request named, once the API
     * has parsed it (before begin), for the transport's metrics. */
    void (*label)(api_sink *sink, const char *model);
    /* Optional (may be NULL): the call was aborted (its transport is gone),
     * so end will never come; the sink frees what it holds. A sink that
     * wraps the transport's (serve/anthropic.c) needs it. */
    void (*release)(api_sink *sink);
} api_sink_ops;
struct api_sink {
    const api_sink_ops *ops;
};

typedef struct api api;
typedef struct api_call api_call;

typedef struct {
    uint64_t requests;        /* every request handled */
    uint64_t bad_requests;    /* answered 4xx */
    uint64_t forwarded;       /* sent to a peer (each attempt) */
    uint64_t retried;         /* forwarded again after a host failed before answering */
    uint64_t failed;          /* answered 5xx, or ended with an error event */
} api_counters;

api *api_new(struct event_base *base, struct sched *sched, struct mesh *mesh);
void api_free(api *a);
/* The plans of the models (serve/pipeline.h): a local model runs only while
 * its plan is ready, and a request for a model that is planning or loading
 * (here or on its coordinator) gets 503 with the plan's reason. */
struct pipelines;
void api_set_pipelines(api *a, struct pipelines *ps);
/* Counts every generation request by the model it names (serve/demand.h). */
struct demand;
void api_set_demand(api *a, struct demand *d);
/* Counts local generations' tokens and latencies there (serve/metrics.h);
 * NULL: not counted. */
struct metrics;
void api_set_metrics(api *a, struct metrics *m);

/* Handles one request. from_peer marks requests that arrived through a
 * tunnel: they are never forwarded again. Returns the call while its answer
 * is still being produced, or NULL when sink->end was already called. */
api_call *api_handle(api *a, const char *method, const char *path, const char *body,
                     size_t body_len, api_sink *sink, int from_peer);
/* The transport is gone (client disconnected, stream reset): no more sink
 * calls; generation or forwarding is stopped. The call is invalid after. */
void api_call_abort(api_call *c);
/* Serves the requests peers forward here (HTTP_TUNNEL streams on the mesh
 * given to api_new) with api_handle, from_peer set. */
void api_serve_tunnel(api *a);

void api_get_counters(const api *a, api_counters *out);

/* Shutdown, in two steps: api_set_draining makes new generation requests
 * answer 503; api_close_all ends every call still in flight: an error event
 * and [DONE] for a started stream, a 503 for an answer not yet begun. */
void api_set_draining(api *a);
void api_close_all(api *a, const char *reason);
int api_calls_active(const api *a);
/* A body for an OpenAI-shaped error; caller frees. */
char *api_error_json(const char *message, const char *type, const char *code);

#endif
