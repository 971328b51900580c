/* router.c: where a request runs: a job on the local scheduler, or a peer
 * host through the HTTP tunnel, with retries and failover. See router.h.
 *
 * Dependency direction: api.c -> router.c -> (openai.c, tunnel.c,
 * scheduler.c, mesh). The tunnel never calls back in here by name: it drives
 * a forwarded call through the api_sink the router hands it (proxy_ops).
 *
 * Not here: parsing and rendering (serve/openai.c), which endpoint a path is
 * (serve/api.c), the tunnel's frames (serve/tunnel.c). */
#include "serve/router.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/json_grammar.h"
#include "lib/clock.h"
#include "lib/hash.h"
#include "lib/log.h"
#include "mesh/identity.h"
#include "mesh/mesh.h"
#include "serve/pipeline.h"
#include "serve/tunnel.h"

#define ROUTER_MAX_PEERS 256
#define ROUTER_MAX_ATTEMPTS 3  /* hosts tried for one forwarded request */
_Static_assert(OPENAI_MAX_CHOICES <= SCHED_MAX_CHOICES, "a request's choices are jobs of one group");

struct router {
    sched *sched;
    mesh *mesh;             /* NULL: nothing is forwarded */
    struct pipelines *pipelines; /* plans, for the reason a model is not running; may be NULL */
    api_counters *counters; /* the API's */
    uint64_t next_id;
    struct api_call *live;  /* calls whose answer is not complete */
    int draining;           /* shutting down: no new generations */
    metrics *metrics;       /* local generations' tokens and latencies; may be NULL */
};

typedef enum { CALL_LOCAL, CALL_REMOTE } call_kind;

/* A local choice's handle: what its job's callbacks get as user. */
typedef struct {
    struct api_call *c;
    int index;
} call_choice;

struct api_call {
    router *r;
    api_sink proxy;         /* what a tunnel writes into (CALL_REMOTE) */
    call_kind kind;
    sched_job *jobs[OPENAI_MAX_CHOICES]; /* local: the choices' jobs (NULL once done); embeddings: [0] */
    call_choice choices[OPENAI_MAX_CHOICES];
    int n_jobs;
    tunnel_call *tunnel;
    int failed_status;      /* remote answer status, for counters */
    int began;              /* sink->begin was called */
    uint64_t start_ns, first_output_ns; /* local: job queued, first text or token delivered (0: none yet) */
    /* Embeddings: the inputs, the next one to run, the items so far. */
    embeddings_request *emb;
    int emb_next, emb_tokens;
    cJSON *emb_data;
    /* Forwarding: what is needed to send the request again elsewhere. */
    char method[16];
    char *path, *body;
    size_t body_len;
    uint8_t tried[ROUTER_MAX_ATTEMPTS][MESH_ID_BYTES];
    int n_tried;
    int discarding;         /* swallowing a failed host's answer before a retry */
    struct api_call *next, *prev; /* r->live */

    openai_answer answer;   /* the transport's sink, model, id; a local answer's state */
};

/* ---- calls ----------------------------------------------------------------*/

/* A call for this request, linked into r->live; NULL (answered) when the
 * node is shutting down or out of memory. */
static api_call *call_new(router *r, api_sink *sink, const char *model, const char *id_prefix)
{
    if (r->draining) {
        openai_send_error(r->counters, sink, 503, NULL, "this node is shutting down");
        return NULL;
    }
    api_call *c = calloc(1, sizeof *c);
    if (!c) {
        openai_send_error(r->counters, sink, 500, NULL, "out of memory");
        return NULL;
    }
    c->r = r;
    openai_answer_init(&c->answer, sink, model, id_prefix, ++r->next_id);
    c->next = r->live;
    if (r->live) r->live->prev = c;
    r->live = c;
    return c;
}

static void call_free(api_call *c)
{
    if (c->prev) c->prev->next = c->next;
    else if (c->r->live == c) c->r->live = c->next;
    if (c->next) c->next->prev = c->prev;
    free(c->path);
    free(c->body);
    embeddings_request_free(c->emb);
    cJSON_Delete(c->emb_data);
    openai_answer_free(&c->answer);
    free(c);
}

/* ---- local generation -----------------------------------------------------*/

/* Time to first token, measured on the loop thread where the output
 * reaches the answer (what a client sees, less the socket): two clock reads
 * per request and one per output delivery. The gaps between tokens are
 * measured on the worker, where each is made (local_on_gaps): the loop may
 * get several tokens in one wake-up, and would see them as one. */
static void count_generation(router *r, api_call *c, const engine_result *result)
{
    if (!r->metrics) return;
    uint64_t end = clock_ns();
    uint64_t first = c->first_output_ns ? c->first_output_ns : end; /* all held back (stop strings) */
    int n = result->completion_tokens;
    double ttft = n >= 1 ? (double)(first - c->start_ns) * 1e-9 : -1;
    metrics_count_generation(r->metrics, c->answer.model, result->prompt_tokens, n, ttft);
}

/* Cancels the call's jobs still running (its answer is over). */
static void cancel_jobs(api_call *c)
{
    for (int i = 0; i < c->n_jobs; i++)
        if (c->jobs[i]) {
            sched_cancel(c->jobs[i]);
            c->jobs[i] = NULL;
        }
}

/* A stream's head goes out with its first output (or its end), not at
 * submission: a request refused by the queue (429) or that waited past its
 * deadline (503) can then still say so with its status. The first output
 * also knows the prompt's tokens (stream_options.prompt_usage). */
static void local_begin_stream(api_call *c, int i)
{
    openai_answer_select(&c->answer, i);
    if (c->answer.stream && !c->began) {
        c->began = 1;
        if (c->jobs[i]) c->answer.prompt_known = sched_job_prompt_tokens(c->jobs[i], &c->answer.prompt_known_cached);
        openai_answer_begin_stream(&c->answer);
    }
}

static void local_on_output(void *user, const char *text, size_t len, const engine_token *toks, int n_toks)
{
    call_choice *ch = user;
    api_call *c = ch->c;
    if (!c->first_output_ns && len && c->r->metrics) c->first_output_ns = clock_ns();
    local_begin_stream(c, ch->index);
    openai_answer_output(&c->answer, text, len, toks, n_toks);
}

static void local_on_gaps(void *user, const uint32_t *gaps_us, int n_gaps)
{
    call_choice *ch = user;
    metrics_observe_gaps(ch->c->r->metrics, ch->c->answer.model, gaps_us, n_gaps);
}

/* A choice ended. The answer ends with the last one, or with the first
 * error (the other choices are then cancelled). */
static void local_on_done(void *user, const engine_result *result, const char *error, int status)
{
    call_choice *ch = user;
    api_call *c = ch->c;
    router *r = c->r;
    c->jobs[ch->index] = NULL;
    if (error && status && !c->began) {
        cancel_jobs(c);
        openai_send_error(r->counters, c->answer.sink, status, NULL, "%s", error);
        call_free(c);
        return;
    }
    local_begin_stream(c, ch->index);
    if (error) {
        cancel_jobs(c);
        if (c->answer.stream) {
            openai_sse_error_and_done(c->answer.sink, error);
            c->answer.sink->ops->end(c->answer.sink);
            r->counters->failed++;
        } else {
            /* Errors the caller could fix (prompt too long, a token id out
             * of range) come back as 400. */
            int bad = strstr(error, "context") || strstr(error, "out of range") || strstr(error, "empty prompt");
            openai_send_error(r->counters, c->answer.sink, bad ? 400 : 500, NULL, "%s", error);
        }
        call_free(c);
        return;
    }
    count_generation(r, c, result);
    if (openai_answer_finish(&c->answer, result)) return; /* other choices still run */
    call_free(c);
}

static const sched_callbacks local_callbacks = {local_on_output, local_on_done, local_on_gaps};

api_call *router_run_local(router *r, api_sink *sink, openai_request *req, engine_model *em)
{
    char err[512];
    api_call *c = call_new(r, sink, req->model, req->chat ? "chatcmpl" : "cmpl");
    if (!c) {
        openai_request_free(req);
        return NULL;
    }
    /* the chat template is the serving model's */
    if (req->chat && openai_request_render_chat(req, em, err, sizeof err) != 0) {
        call_free(c);
        openai_request_free(req);
        openai_send_error(r->counters, sink, 400, NULL, "chat template: %s", err);
        return NULL;
    }
    c->kind = CALL_LOCAL;
    c->start_ns = r->metrics ? clock_ns() : 0;
    if (openai_answer_prepare(&c->answer, req, em) != 0) {
        call_free(c);
        openai_request_free(req);
        openai_send_error(r->counters, sink, 500, NULL, "out of memory");
        return NULL;
    }
    /* The choices at once, in the same batch steps (sched_submit_choices):
     * choice i's seed is the request's plus i. */
    int n = c->answer.n_choices;
    void *users[OPENAI_MAX_CHOICES];
    for (int i = 0; i < n; i++) {
        c->choices[i] = (call_choice){c, i};
        users[i] = &c->choices[i];
    }
    sched_refusal why;
    int rc = sched_submit_choices(r->sched, req->model, req->er, n, &local_callbacks, users, c->jobs, &why);
    if (rc == 0) {
        c->n_jobs = n;
        req->grammar = NULL; /* the jobs own it now */
    }
    openai_request_free(req);
    if (rc != 0) {
        char model[MESH_MAX_NAME];
        snprintf(model, sizeof model, "%s", c->answer.model);
        call_free(c);
        if (why == SCHED_REFUSED_FULL)
            openai_send_error(r->counters, sink, 429, "rate_limit_exceeded",
                              "model '%s': every lane is busy and the queue is full; retry later", model);
        else
            openai_send_error(r->counters, sink, 500, NULL, "could not queue the request");
        return NULL;
    }
    return c;
}

/* ---- embeddings -------------------------------------------------------------*/

static const sched_callbacks embed_callbacks;

/* Queues the embedding of input c->emb_next. 0, or the HTTP status to
 * answer when it is not queued (429: the model's queue is full). */
static int embed_submit(router *r, api_call *c)
{
    engine_request *e = malloc(sizeof *e); /* ~10 KB: not on the stack */
    if (!e) return -1;
    engine_request_defaults(e);
    int i = c->emb_next;
    if (c->emb->texts[i]) {
        e->prompt = c->emb->texts[i];
        e->prompt_len = strlen(c->emb->texts[i]);
    } else {
        e->prompt_ids = c->emb->ids[i];
        e->n_prompt_ids = c->emb->n_ids[i];
    }
    e->embed = 1;
    sched_refusal why;
    c->jobs[0] = sched_submit(r->sched, c->emb->model, e, &embed_callbacks, c, &why);
    c->n_jobs = 1;
    free(e);
    return c->jobs[0] ? 0 : why == SCHED_REFUSED_FULL ? 429 : 500;
}

static void embed_on_output(void *user, const char *text, size_t len, const engine_token *toks, int n)
{
    (void)user, (void)text, (void)len, (void)toks, (void)n;
}

static void embed_on_done(void *user, const engine_result *result, const char *error, int status)
{
    api_call *c = user;
    router *r = c->r;
    c->jobs[0] = NULL;
    cJSON *item = error ? NULL : embeddings_item(c->emb_next, result->embedding, result->n_embedding, c->emb->base64);
    if (!item) {
        int bad = error && (strstr(error, "context") || strstr(error, "out of range") || strstr(error, "empty prompt") ||
                            strstr(error, "not supported"));
        openai_send_error(r->counters, c->answer.sink, status ? status : bad ? 400 : 500, NULL, "%s",
                          error ? error : "out of memory");
        call_free(c);
        return;
    }
    cJSON_AddItemToArray(c->emb_data, item);
    c->emb_tokens += result->prompt_tokens;
    if (++c->emb_next < c->emb->n_inputs) {
        int st = embed_submit(r, c);
        if (st == 0) return;
        openai_send_error(r->counters, c->answer.sink, st, st == 429 ? "rate_limit_exceeded" : NULL,
                          st == 429 ? "the model's queue is full; retry later" : "could not queue the request");
        call_free(c);
        return;
    }
    cJSON *o = embeddings_answer(c->emb_data, c->emb->model, c->emb_tokens);
    c->emb_data = NULL;
    openai_send_json(c->answer.sink, 200, o);
    cJSON_Delete(o);
    call_free(c);
}

static const sched_callbacks embed_callbacks = {embed_on_output, embed_on_done, NULL};

api_call *router_run_embeddings(router *r, api_sink *sink, embeddings_request *req)
{
    api_call *c = call_new(r, sink, req->model, "embd");
    if (!c) {
        embeddings_request_free(req);
        return NULL;
    }
    c->kind = CALL_LOCAL;
    c->emb = req;
    c->emb_data = cJSON_CreateArray();
    int st = c->emb_data ? embed_submit(r, c) : 500;
    if (st != 0) {
        call_free(c);
        openai_send_error(r->counters, sink, st, st == 429 ? "rate_limit_exceeded" : NULL,
                          st == 429 ? "the model's queue is full; retry later" : "could not queue the request");
        return NULL;
    }
    return c;
}

/* ---- forwarding -----------------------------------------------------------*/

/* A forwarded request is retried on another host when the first one fails
 * before the client has seen a byte: the tunnel died before the response
 * head (the tunnel reports that as 502), or the host answered 503 (shutting
 * down, or no longer serving the model). Once a byte reached the client
 * nothing is retried: a stream cannot be taken back. */

static int host_tried(const api_call *c, const uint8_t id[MESH_ID_BYTES])
{
    for (int i = 0; i < c->n_tried; i++)
        if (!memcmp(c->tried[i], id, MESH_ID_BYTES)) return 1;
    return 0;
}

/* A live host for c->answer.model not tried yet, or -1. Among the
 * candidates the choice is a rendezvous hash of (this node's id, host id, model): each entry
 * node sticks to one host per model (its KV cache stays warm for follow-up
 * prompts), different entry nodes spread over the hosts, and when a host
 * goes away only the entry nodes that used it move. A host whose record
 * marks the model saturated (its queue over the threshold, with
 * hysteresis: docs/models.md) comes after every host that does not: the
 * entry node moves off it while it is saturated, and back when it clears. */
static int pick_untried_host(const api_call *c, uint8_t out[MESH_ID_BYTES])
{
    mesh *m = c->r->mesh;
    static mesh_peer peers[ROUTER_MAX_PEERS];
    int n = mesh_peers(m, peers, ROUTER_MAX_PEERS);
    if (n > ROUTER_MAX_PEERS) n = ROUTER_MAX_PEERS;
    static uint8_t app[MESH_MAX_APP];
    uint64_t best_score = 0;
    int found = 0, best_saturated = 0;
    size_t model_len = strlen(c->answer.model);
    for (int i = 0; i < n; i++) {
        if (strcmp(peers[i].state, "alive") != 0) continue;
        int serves = 0;
        for (int j = 0; j < peers[i].n_models && !serves; j++)
            serves = !strcmp(peers[i].models[j], c->answer.model);
        uint8_t id[MESH_ID_BYTES];
        if (!serves || identity_id_from_hex(peers[i].id, id) != 0 || host_tried(c, id)) continue;
        uint8_t key[2 * MESH_ID_BYTES + MESH_MAX_NAME];
        memcpy(key, mesh_node_id(m), MESH_ID_BYTES);
        memcpy(key + MESH_ID_BYTES, id, MESH_ID_BYTES);
        memcpy(key + 2 * MESH_ID_BYTES, c->answer.model, model_len);
        uint64_t score = hash_fnv1a(key, 2 * MESH_ID_BYTES + model_len);
        int len = peers[i].app_len ? mesh_node_app_data(m, id, app, sizeof app) : 0;
        int saturated = len > 0 && plan_app_marks_saturated(app, (size_t)len, c->answer.model);
        if (!found || saturated < best_saturated || (saturated == best_saturated && score > best_score)) {
            best_score = score;
            best_saturated = saturated;
            memcpy(out, id, MESH_ID_BYTES);
            found = 1;
        }
    }
    return found ? 0 : -1;
}

static const api_sink_ops proxy_ops;

/* Sends the request to the next untried host. 0 when a tunnel is under way. */
static int forward_next(api_call *c, char *err, size_t errlen)
{
    snprintf(err, errlen, "no node serving it is reachable");
    while (c->n_tried < ROUTER_MAX_ATTEMPTS) {
        uint8_t host[MESH_ID_BYTES];
        if (pick_untried_host(c, host) != 0) return -1;
        memcpy(c->tried[c->n_tried++], host, MESH_ID_BYTES);
        c->proxy.ops = &proxy_ops;
        c->tunnel = tunnel_forward(c->r->mesh, host, c->method, c->path, c->body, c->body_len,
                                   &c->proxy, err, errlen);
        if (c->tunnel) {
            c->r->counters->forwarded++;
            return 0;
        }
    }
    return -1;
}

static void proxy_begin(api_sink *sink, int status, const char *content_type)
{
    api_call *c = (api_call *)((char *)sink - offsetof(api_call, proxy));
    uint8_t next[MESH_ID_BYTES];
    if ((status == 502 || status == 503 || status == 429) && c->n_tried < ROUTER_MAX_ATTEMPTS &&
        pick_untried_host(c, next) == 0) {
        c->discarding = 1;
        return;
    }
    c->failed_status = status;
    c->began = 1;
    c->answer.stream = strncmp(content_type, "text/event-stream", 17) == 0;
    c->answer.sink->ops->begin(c->answer.sink, status, content_type);
}

static void proxy_write(api_sink *sink, const char *data, size_t len)
{
    api_call *c = (api_call *)((char *)sink - offsetof(api_call, proxy));
    if (!c->discarding) c->answer.sink->ops->write(c->answer.sink, data, len);
}

static void proxy_end(api_sink *sink)
{
    api_call *c = (api_call *)((char *)sink - offsetof(api_call, proxy));
    c->tunnel = NULL; /* the tunnel is done with us */
    if (c->discarding) {
        c->discarding = 0;
        c->r->counters->retried++;
        log_info("api", "model %s: host failed before answering, trying another", c->answer.model);
        char err[256];
        mesh_refresh_routes(c->r->mesh);   /* a client's routing table may be stale */
        if (forward_next(c, err, sizeof err) == 0) return;
        openai_send_error(c->r->counters, c->answer.sink, 502, NULL,
                          "model '%s': every node tried failed before answering (%s)", c->answer.model, err);
        call_free(c);
        return;
    }
    if (c->failed_status >= 500) {
        c->r->counters->failed++;
        mesh_refresh_routes(c->r->mesh);
    }
    else if (c->failed_status >= 400) c->r->counters->bad_requests++;
    c->answer.sink->ops->end(c->answer.sink);
    call_free(c);
}

static const api_sink_ops proxy_ops = {proxy_begin, proxy_write, proxy_end, NULL, NULL};

static int model_known_in_mesh(router *r, const char *model_id)
{
    if (!r->mesh) return 0;
    static mesh_peer peers[ROUTER_MAX_PEERS];
    int n = mesh_peers(r->mesh, peers, ROUTER_MAX_PEERS);
    if (n > ROUTER_MAX_PEERS) n = ROUTER_MAX_PEERS;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < peers[i].n_models; j++)
            if (!strcmp(peers[i].models[j], model_id)) return 1;
    return 0;
}

/* Sends c's request to a peer serving c->answer.model, or answers why it
 * cannot. Returns c while forwarding, or NULL once c is freed and the answer sent. */
static api_call *forward_or_refuse(router *r, api_call *c, const char *method, const char *path,
                                   const char *body, size_t len, int from_peer)
{
    char err[512];
    api_sink *sink = c->answer.sink;
    uint8_t host[MESH_ID_BYTES];
    if (!from_peer && r->mesh && pick_untried_host(c, host) == 0) {
        c->kind = CALL_REMOTE;
        snprintf(c->method, sizeof c->method, "%s", method);
        c->path = strdup(path);
        c->body = malloc(len ? len : 1);
        if (c->path && c->body) {
            memcpy(c->body, body, len);
            c->body_len = len;
            if (forward_next(c, err, sizeof err) == 0) return c;
        }
        char model[MESH_MAX_NAME];
        snprintf(model, sizeof model, "%s", c->answer.model);
        call_free(c);
        mesh_refresh_routes(r->mesh);
        openai_send_error(r->counters, sink, 503, NULL, "model '%s': could not reach the node serving it: %s",
                          model, err);
        return NULL;
    }
    char model[MESH_MAX_NAME];
    snprintf(model, sizeof model, "%s", c->answer.model);
    call_free(c);
    /* On a client, an unknown or unreachable model may be news its routing
     * table has not caught up with: pull it now for the next request. */
    if (r->mesh) mesh_refresh_routes(r->mesh);
    char reason[512];
    if (r->pipelines && pipelines_model_state(r->pipelines, model, reason, sizeof reason) == PIPELINE_NOT_READY)
        openai_send_error(r->counters, sink, 503, NULL, "%s", reason);
    else if (from_peer)
        openai_send_error(r->counters, sink, 503, NULL, "model '%s' is not served by this node", model);
    else if (model_known_in_mesh(r, model))
        openai_send_error(r->counters, sink, 503, NULL,
                          "model '%s' is known in the mesh but no node serving it is reachable now", model);
    else
        openai_send_error(r->counters, sink, 404, "model_not_found", "The model '%s' does not exist", model);
    return NULL;
}

int router_other_host(router *r, const char *model)
{
    if (!r->mesh) return 0;
    api_call probe = {.r = r};
    snprintf(probe.answer.model, sizeof probe.answer.model, "%s", model);
    uint8_t host[MESH_ID_BYTES];
    return pick_untried_host(&probe, host) == 0;
}

api_call *router_forward(router *r, api_sink *sink, const char *model, const char *id_prefix,
                         const char *method, const char *path, const char *body, size_t len,
                         int from_peer)
{
    api_call *c = call_new(r, sink, model, id_prefix);
    return c ? forward_or_refuse(r, c, method, path, body, len, from_peer) : NULL;
}

/* ---- the router -----------------------------------------------------------*/

router *router_new(sched *s, mesh *m, api_counters *counters)
{
    router *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->sched = s;
    r->mesh = m;
    r->counters = counters;
    return r;
}

void router_set_pipelines(router *r, struct pipelines *ps) { r->pipelines = ps; }

void router_set_metrics(router *r, metrics *m) { r->metrics = m; }

void router_free(router *r) { free(r); }

void router_call_abort(api_call *c)
{
    if (c->kind == CALL_LOCAL) {
        cancel_jobs(c);
    } else if (c->tunnel) {
        tunnel_abort(c->tunnel);
    }
    api_sink *sink = c->answer.sink;
    call_free(c);
    if (sink->ops->release) sink->ops->release(sink);
}

int router_calls_active(const router *r)
{
    int n = 0;
    for (const api_call *c = r->live; c; c = c->next) n++;
    return n;
}

void router_set_draining(router *r) { r->draining = 1; }

void router_close_all(router *r, const char *reason)
{
    while (r->live) {
        api_call *c = r->live;
        if (c->kind == CALL_LOCAL) cancel_jobs(c);
        if (c->kind == CALL_REMOTE && c->tunnel) tunnel_abort(c->tunnel);
        c->tunnel = NULL;
        if (!c->began) {
            openai_send_error(r->counters, c->answer.sink, 503, NULL, "%s", reason);
        } else {
            if (c->answer.stream) openai_sse_error_and_done(c->answer.sink, reason);
            r->counters->failed++;
            c->answer.sink->ops->end(c->answer.sink);
        }
        call_free(c);
    }
}
