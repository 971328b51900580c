/* router.h: where a request runs, and the calls in flight.
 *
 * A parsed request for a model served here becomes a job on the local
 * scheduler, its answer rendered by serve/openai.c as the tokens come. A
 * request for a model served elsewhere goes, as received (method, path,
 * body), to a live peer serving it through the HTTP tunnel (serve/tunnel.c),
 * and the peer's answer passes through untouched. The router picks the host,
 * retries on another host when one fails before the client saw a byte, and
 * refuses with 503/404 when no host is reachable. It owns every call until
 * its answer ends or it is aborted, and closes them all at shutdown.
 *
 * Depends on: openai (local answers, error bodies), tunnel (tunnel_forward,
 * tunnel_abort), scheduler, mesh (peers, routes). Called by serve/api.c
 * only; it calls nothing in api.c (api.h gives it the sink, the counters and
 * the opaque api_call, which is defined in router.c).
 *
 * Threading: event-loop thread only. */
#ifndef LLMESH_ROUTER_H
#define LLMESH_ROUTER_H

#include "serve/api.h"
#include "serve/embeddings.h"
#include "serve/metrics.h"
#include "serve/openai.h"
#include "serve/scheduler.h"

typedef struct router router;

/* counters are the API's; the router counts forwards, retries and the
 * answers it ends in them. m may be NULL (no mesh: nothing is forwarded). */
router *router_new(sched *s, struct mesh *m, api_counters *counters);
struct pipelines;
/* Plans consulted for a model not served here: 503 with the reason while it
 * is planning or loading. NULL: none. */
void router_set_pipelines(router *r, struct pipelines *ps);
/* Where local generations' tokens, time to first token and inter-token
 * latency are counted (serve/metrics.h). NULL: nowhere. */
void router_set_metrics(router *r, metrics *m);
/* Frees the router; the calls must be closed already (router_close_all). */
void router_free(router *r);

/* Runs req on em, a model served here; takes req (it is freed). Returns the
 * call while its answer is still being produced, or NULL when sink->end was
 * already called. */
api_call *router_run_local(router *r, api_sink *sink, openai_request *req, engine_model *em);
/* Embeds req's inputs (req->model served here), one after another; takes
 * req. Same return as router_run_local. */
api_call *router_run_embeddings(router *r, api_sink *sink, embeddings_request *req);
/* A request for model, which is not served here: sent to a live host serving
 * it, or refused (from_peer: a request that arrived through a tunnel is
 * never forwarded again). id_prefix names the call ("cmpl", "tok", ...).
 * Same return as router_run_local. */
api_call *router_forward(router *r, api_sink *sink, const char *model, const char *id_prefix,
                         const char *method, const char *path, const char *body, size_t len,
                         int from_peer);

/* Whether a live peer other than this node serves model: where a request
 * goes when the local queue is full (sched_model_full), before a 429. */
int router_other_host(router *r, const char *model);

/* api.h's api_call_abort, api_calls_active, api_set_draining and
 * api_close_all, for the calls the router owns. */
void router_call_abort(api_call *c);
int router_calls_active(const router *r);
void router_set_draining(router *r);
void router_close_all(router *r, const char *reason);

#endif
