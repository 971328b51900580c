/* api.c: the API's entry points: which endpoint a request is, and the glue
 * between parsing (serve/openai.c) and running it (serve/router.c).
 * Endpoints: /v1/models, /v1/completions, /v1/chat/completions (plain and
 * streamed, with stop strings, penalties, logit_bias, log-probabilities,
 * echo, tools, response_format and n), /v1/embeddings, llama.cpp-style
 * /tokenize and /detokenize, and Anthropic's /v1/messages and
 * /v1/messages/count_tokens (translated onto the chat path by
 * serve/anthropic.c). See api.h.
 *
 * A request's path through serve/: http.c or tunnel.c -> api_handle here
 * (route by path) -> openai.c (parse and validate) -> router.c (a local
 * scheduler job, rendered by openai.c, or a peer through tunnel.c).
 *
 * Dependency direction: api.c -> (openai.c, router.c, tunnel.c,
 * scheduler.c, mesh). Nothing it calls calls back into it by name: the
 * tunnel's host side reaches api_handle through the tunnel_handler that
 * api_serve_tunnel registers, the HTTP server through api.h.
 *
 * Not here: HTTP parsing (serve/http.c uses libevent's evhttp), the tunnel
 * wire format (serve/tunnel.c), generation (engine via serve/scheduler.c).
 *
 * Error policy: every malformed request gets OpenAI's error shape
 * {"error":{"message","type","param","code"}} (Anthropic's on /v1/messages)
 * with 400; an unknown model 404;
 * a model known in the mesh but not reachable now 503; failures after a
 * stream started become an error event followed by "data: [DONE]". */
#include "serve/api.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "mesh/mesh.h"
#include "serve/anthropic.h"
#include "serve/demand.h"
#include "serve/openai.h"
#include "serve/pipeline.h"
#include "serve/router.h"
#include "serve/scheduler.h"
#include "serve/tunnel.h"

#define API_MAX_PEERS 256

struct api {
    struct event_base *base;
    sched *sched;
    mesh *mesh;             /* NULL: no peers (tests) */
    pipelines *pipelines;   /* NULL: every local model runs (tests) */
    router *router;         /* where requests run; owns the calls in flight */
    api_counters counters;  /* counted here, in the router and in openai_send_error */
    tunnel_handler tunnel;  /* how peers' requests reach api_handle (api_serve_tunnel) */
    demand *demand;         /* requests per model (serve/demand.h); NULL: not counted */
};

/* ---- small helpers --------------------------------------------------------*/

char *api_error_json(const char *message, const char *type, const char *code)
{
    return openai_error_json(message, type, code);
}

/* Tells the transport which model the request named (metrics). */
static void sink_label(api_sink *sink, const char *model)
{
    if (sink->ops->label) sink->ops->label(sink, model);
}

/* ---- endpoints ------------------------------------------------------------*/

static api_call *handle_generate(api *a, const char *method, const char *path, const char *body,
                                 size_t len, api_sink *sink, int from_peer, int chat)
{
    char err[512];
    openai_request req;
    if (openai_parse_request(body, len, chat, &req, err, sizeof err) != 0) {
        openai_send_error(&a->counters, sink, 400, NULL, "%s", err);
        return NULL;
    }
    sink_label(sink, req.model);
    demand_note(a->demand, req.model);
    engine_model *em = sched_find_model(a->sched, req.model);
    char why[8];
    if (em && a->pipelines && pipelines_model_state(a->pipelines, req.model, why, sizeof why) != PIPELINE_READY)
        em = NULL; /* coordinated here but not running (planning, loading): the router says why */
    if (em && req.max_id >= engine_model_n_vocab(em)) {
        openai_send_error(&a->counters, sink, 400, NULL,
                          "token id %d is out of range: model '%s' has %d tokens", req.max_id, req.model,
                          engine_model_n_vocab(em));
        openai_request_free(&req);
        return NULL;
    }
    /* Every local lane busy and the queue full: another host of the model
     * first (a request from a peer is never sent on again), else 429. */
    if (em && !from_peer && sched_model_full(a->sched, req.model) && router_other_host(a->router, req.model))
        em = NULL;
    if (!em) { /* served elsewhere, maybe */
        api_call *c = router_forward(a->router, sink, req.model, chat ? "chatcmpl" : "cmpl", method, path,
                                     body, len, from_peer);
        openai_request_free(&req);
        return c;
    }
    return router_run_local(a->router, sink, &req, em);
}

/* POST /v1/embeddings: parsed and bounded here (serve/embeddings.c), run
 * on a local lane or forwarded to a host like a completion. */
static api_call *handle_embeddings(api *a, const char *method, const char *path, const char *body,
                                   size_t len, api_sink *sink, int from_peer)
{
    char err[512];
    embeddings_request *req;
    if (embeddings_parse(body, len, &req, err, sizeof err) != 0) {
        openai_send_error(&a->counters, sink, 400, NULL, "%s", err);
        return NULL;
    }
    sink_label(sink, req->model);
    engine_model *em = sched_find_model(a->sched, req->model);
    char why[8];
    if (em && a->pipelines && pipelines_model_state(a->pipelines, req->model, why, sizeof why) != PIPELINE_READY)
        em = NULL;
    if (em && req->max_id >= engine_model_n_vocab(em)) {
        openai_send_error(&a->counters, sink, 400, NULL, "token id %d is out of range: model '%s' has %d tokens",
                          req->max_id, req->model, engine_model_n_vocab(em));
        embeddings_request_free(req);
        return NULL;
    }
    if (!em) {
        api_call *c = router_forward(a->router, sink, req->model, "embd", method, path, body, len, from_peer);
        embeddings_request_free(req);
        return c;
    }
    return router_run_embeddings(a->router, sink, req);
}

/* POST /tokenize {"content", "add_special"?, "parse_special"?, "model"?} ->
 * {"tokens"}; POST /detokenize {"tokens", "model"?} -> {"content"}
 * (llama.cpp's server shapes). "model" may be left out when this node serves
 * exactly one model; a model served elsewhere is forwarded like a
 * completion. No BOS unless add_special; special-token texts stay text
 * unless parse_special. */
static api_call *handle_tokenize(api *a, const char *method, const char *path, const char *body,
                                 size_t len, api_sink *sink, int from_peer, int detokenize)
{
    char err[512] = "";
    cJSON *root = cJSON_ParseWithLength(body, len);
    cJSON *out = NULL;
    api_call *c = NULL;
    int status = 400;
    if (!cJSON_IsObject(root)) {
        snprintf(err, sizeof err, "request body must be a JSON object");
        goto done;
    }
    cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    engine_model *em = NULL;
    if (model && !cJSON_IsNull(model)) {
        if (!cJSON_IsString(model) || !model->valuestring[0] || strlen(model->valuestring) >= MESH_MAX_NAME) {
            snprintf(err, sizeof err, "'model' must be a non-empty string (at most %d bytes)", MESH_MAX_NAME - 1);
            goto done;
        }
        sink_label(sink, model->valuestring);
        em = sched_find_model(a->sched, model->valuestring);
        if (!em) { /* served elsewhere, maybe */
            c = router_forward(a->router, sink, model->valuestring, "tok", method, path, body, len,
                               from_peer);
            cJSON_Delete(root);
            return c;
        }
    } else if (sched_model_count(a->sched) == 1) {
        em = sched_model_at(a->sched, 0);
    } else {
        snprintf(err, sizeof err, "'model' is required: this node serves %d models", sched_model_count(a->sched));
        goto done;
    }
    out = cJSON_CreateObject();
    if (!detokenize) {
        cJSON *content = cJSON_GetObjectItemCaseSensitive(root, "content");
        int add_special = 0, parse_special = 0;
        if (!cJSON_IsString(content)) {
            snprintf(err, sizeof err, "'content' must be a string");
            goto done;
        }
        if (openai_read_bool(root, "add_special", &add_special, err, sizeof err) ||
            openai_read_bool(root, "parse_special", &parse_special, err, sizeof err))
            goto done;
        int32_t *ids = NULL;
        int n = 0;
        if (engine_tokenize(em, content->valuestring, strlen(content->valuestring), add_special,
                            parse_special, &ids, &n, err, sizeof err) != 0) {
            status = 500;
            goto done;
        }
        cJSON *arr = cJSON_AddArrayToObject(out, "tokens");
        for (int i = 0; i < n; i++) cJSON_AddItemToArray(arr, cJSON_CreateNumber(ids[i]));
        free(ids);
    } else {
        cJSON *tokens = cJSON_GetObjectItemCaseSensitive(root, "tokens");
        int n = 0, max_id = -1;
        int32_t *ids = cJSON_IsArray(tokens)
                     ? openai_read_token_ids(tokens, "tokens", &n, &max_id, err, sizeof err) : NULL;
        if (!ids) {
            if (!cJSON_IsArray(tokens)) snprintf(err, sizeof err, "'tokens' must be an array of token ids");
            goto done;
        }
        size_t text_len;
        char *text = max_id < engine_model_n_vocab(em)
                   ? engine_detokenize(em, ids, n, &text_len, err, sizeof err) : NULL;
        if (max_id >= engine_model_n_vocab(em))
            snprintf(err, sizeof err, "token id %d is out of range: the model has %d tokens", max_id,
                     engine_model_n_vocab(em));
        free(ids);
        if (!text) goto done;
        cJSON_AddStringToObject(out, "content", text);
        free(text);
    }
    openai_send_json(sink, 200, out);
    err[0] = 0;
done:
    if (err[0]) openai_send_error(&a->counters, sink, status, NULL, "%s", err);
    cJSON_Delete(out);
    cJSON_Delete(root);
    return NULL;
}

/* POST /v1/messages (Anthropic's Messages API): the body translated into
 * the OpenAI chat body that asks the same (serve/anthropic.c), run by
 * handle_generate like any chat request (here, or forwarded to a host as a
 * chat request), its answer rewritten on the way out by an
 * anthropic_answer. */
static api_call *handle_messages(api *a, const char *method, const char *body, size_t len, api_sink *sink,
                                 int from_peer)
{
    char err[512], *chat;
    size_t chat_len;
    anthropic_request_info info;
    if (anthropic_translate_request(body, len, 0, &chat, &chat_len, &info, err, sizeof err) != 0) {
        anthropic_send_error(&a->counters, sink, 400, "%s", err);
        return NULL;
    }
    anthropic_answer *ans = anthropic_answer_new(sink, info.model, ANTHROPIC_MESSAGE);
    if (!ans) {
        free(chat);
        anthropic_send_error(&a->counters, sink, 500, "out of memory");
        return NULL;
    }
    api_call *c = handle_generate(a, method, "/v1/chat/completions", chat, chat_len, anthropic_answer_sink(ans),
                                  from_peer, 1);
    free(chat);
    return c;
}

/* POST /v1/messages/count_tokens -> {"input_tokens": N}: the prompt the
 * serving model's template renders from the request (system, messages,
 * tools), in its tokens. A model served elsewhere: the request goes to a
 * host as it came, and the host counts. */
static api_call *handle_count_tokens(api *a, const char *method, const char *path, const char *body,
                                     size_t len, api_sink *sink, int from_peer)
{
    char err[512], *chat;
    size_t chat_len;
    anthropic_request_info info;
    if (anthropic_translate_request(body, len, 1, &chat, &chat_len, &info, err, sizeof err) != 0) {
        anthropic_send_error(&a->counters, sink, 400, "%s", err);
        return NULL;
    }
    openai_request req;
    int rc = openai_parse_request(chat, chat_len, 1, &req, err, sizeof err);
    free(chat);
    if (rc != 0) {
        anthropic_send_error(&a->counters, sink, 400, "%s", err);
        return NULL;
    }
    sink_label(sink, req.model);
    engine_model *em = sched_find_model(a->sched, req.model);
    char why[8];
    if (em && a->pipelines && pipelines_model_state(a->pipelines, req.model, why, sizeof why) != PIPELINE_READY)
        em = NULL;
    if (!em) {
        openai_request_free(&req);
        anthropic_answer *ans = anthropic_answer_new(sink, info.model, ANTHROPIC_PASS);
        if (!ans) {
            anthropic_send_error(&a->counters, sink, 500, "out of memory");
            return NULL;
        }
        return router_forward(a->router, anthropic_answer_sink(ans), info.model, "msg", method, path, body, len,
                              from_peer);
    }
    int32_t *ids = NULL;
    int n = 0;
    if (openai_request_render_chat(&req, em, err, sizeof err) != 0 ||
        engine_prompt_tokens(em, req.er, &ids, &n, err, sizeof err) != 0) {
        openai_request_free(&req);
        anthropic_send_error(&a->counters, sink, 400, "%s", err);
        return NULL;
    }
    free(ids);
    openai_request_free(&req);
    cJSON *out = cJSON_CreateObject();
    cJSON_AddNumberToObject(out, "input_tokens", n);
    openai_send_json(sink, 200, out);
    cJSON_Delete(out);
    return NULL;
}

static void handle_models(api *a, api_sink *sink)
{
    /* Local models first, then every model a live peer serves, once each. */
    const char *seen[API_MAX_PEERS];
    int n_seen = 0;
    for (int i = 0; i < sched_model_count(a->sched) && n_seen < API_MAX_PEERS; i++) {
        const char *id = engine_model_id(sched_model_at(a->sched, i));
        char why[8];
        if (!a->pipelines || pipelines_model_state(a->pipelines, id, why, sizeof why) == PIPELINE_READY)
            seen[n_seen++] = id;
    }
    static mesh_peer peers[API_MAX_PEERS];
    int n_peers = a->mesh ? mesh_peers(a->mesh, peers, API_MAX_PEERS) : 0;
    if (n_peers > API_MAX_PEERS) n_peers = API_MAX_PEERS;
    for (int i = 0; i < n_peers; i++) {
        if (strcmp(peers[i].state, "alive") != 0) continue;
        for (int j = 0; j < peers[i].n_models && n_seen < API_MAX_PEERS; j++) {
            int dup = 0;
            for (int k = 0; k < n_seen; k++) dup |= !strcmp(seen[k], peers[i].models[j]);
            if (!dup) seen[n_seen++] = peers[i].models[j];
        }
    }
    openai_send_model_list(sink, seen, n_seen);
}

api_call *api_handle(api *a, const char *method, const char *path, const char *body,
                     size_t body_len, api_sink *sink, int from_peer)
{
    a->counters.requests++;
    /* Ignore a query string for routing. */
    char route[256];
    size_t n = strcspn(path, "?");
    if (n >= sizeof route) n = sizeof route - 1;
    memcpy(route, path, n);
    route[n] = 0;

    int is_get = !strcmp(method, "GET"), is_post = !strcmp(method, "POST");
    if (!strcmp(route, "/v1/models")) {
        if (!is_get) { openai_send_error(&a->counters, sink, 405, NULL, "use GET for %s", route); return NULL; }
        handle_models(a, sink);
        return NULL;
    }
    if (!strcmp(route, "/v1/completions") || !strcmp(route, "/v1/chat/completions")) {
        if (!is_post) { openai_send_error(&a->counters, sink, 405, NULL, "use POST for %s", route); return NULL; }
        return handle_generate(a, method, path, body ? body : "", body_len, sink, from_peer,
                               route[4] == 'c' && route[5] == 'h');
    }
    if (!strcmp(route, "/v1/embeddings")) {
        if (!is_post) { openai_send_error(&a->counters, sink, 405, NULL, "use POST for %s", route); return NULL; }
        return handle_embeddings(a, method, path, body ? body : "", body_len, sink, from_peer);
    }
    if (!strcmp(route, "/v1/messages") || !strcmp(route, "/v1/messages/count_tokens")) {
        if (!is_post) {
            anthropic_send_error(&a->counters, sink, 405, "use POST for %s", route);
            return NULL;
        }
        if (route[12] == '/')
            return handle_count_tokens(a, method, path, body ? body : "", body_len, sink, from_peer);
        return handle_messages(a, method, body ? body : "", body_len, sink, from_peer);
    }
    if (!strcmp(route, "/tokenize") || !strcmp(route, "/detokenize") ||
        !strcmp(route, "/v1/tokenize") || !strcmp(route, "/v1/detokenize")) {
        if (!is_post) { openai_send_error(&a->counters, sink, 405, NULL, "use POST for %s", route); return NULL; }
        return handle_tokenize(a, method, path, body ? body : "", body_len, sink, from_peer,
                               strstr(route, "/detokenize") != NULL);
    }
    openai_send_error(&a->counters, sink, 404, NULL, "no such endpoint: %s %s", method, route);
    return NULL;
}

void api_call_abort(api_call *c) { router_call_abort(c); }

/* The tunnel's host side calls these instead of api_handle by name. */
static void *from_peer_handle(void *ctx, const char *method, const char *path, const char *body,
                              size_t body_len, api_sink *sink)
{
    return api_handle(ctx, method, path, body, body_len, sink, 1);
}

static void from_peer_abort(void *call) { api_call_abort(call); }

void api_serve_tunnel(api *a)
{
    a->tunnel = (tunnel_handler){from_peer_handle, from_peer_abort, a};
    tunnel_register(a->mesh, &a->tunnel);
}

api *api_new(struct event_base *base, sched *s, mesh *m)
{
    api *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->base = base;
    a->sched = s;
    a->mesh = m;
    a->router = router_new(s, m, &a->counters);
    if (!a->router) {
        free(a);
        return NULL;
    }
    return a;
}

void api_set_demand(api *a, demand *d) { a->demand = d; }

void api_set_pipelines(api *a, pipelines *ps)
{
    a->pipelines = ps;
    router_set_pipelines(a->router, ps);
}

void api_set_metrics(api *a, metrics *m) { router_set_metrics(a->router, m); }

void api_free(api *a)
{
    if (!a) return;
    router_free(a->router);
    free(a);
}

void api_get_counters(const api *a, api_counters *out) { *out = a->counters; }

int api_calls_active(const api *a) { return router_calls_active(a->router); }

void api_set_draining(api *a) { router_set_draining(a->router); }

void api_close_all(api *a, const char *reason) { router_close_all(a->router, reason); }
