/* api.c: OpenAI-compatible endpoints: /v1/models, /v1/completions,
 * /v1/chat/completions (plain and streamed, with stop strings, penalties,
 * logit_bias, log-probabilities and echo), llama.cpp-style /tokenize and
 * /detokenize, and the routing of a request to the local scheduler or to a
 * peer. See api.h.
 *
 * Not here: HTTP parsing (serve/http.c uses libevent's evhttp), the tunnel
 * wire format (serve/tunnel.c), generation (engine via serve/scheduler.c).
 *
 * Error policy: every malformed request gets OpenAI's error shape
 * {"error":{"message","type","param","code"}} with 400; an unknown model 404;
 * a model known in the mesh but not reachable now 503; failures after a
 * stream started become an error event followed by "data: [DONE]". */
#include "serve/api.h"

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "lib/hash.h"
#include "lib/log.h"
#include "mesh/identity.h"
#include "mesh/mesh.h"
#include "serve/openai.h"
#include "serve/scheduler.h"
#include "serve/tunnel.h"

#define API_MAX_PEERS 256
#define API_MAX_ATTEMPTS 3  /* hosts tried for one forwarded request */

struct api {
    struct event_base *base;
    sched *sched;
    mesh *mesh;
    api_counters counters;
    uint64_t next_id;
    struct api_call *live;  /* calls whose answer is not complete */
    int draining;           /* shutting down: no new generations */
};

typedef enum { CALL_LOCAL, CALL_REMOTE } call_kind;

struct api_call {
    api *a;
    api_sink proxy;         /* what a tunnel writes into (CALL_REMOTE) */
    call_kind kind;
    sched_job *job;
    tunnel_call *tunnel;
    int failed_status;      /* remote answer status, for counters */
    int began;              /* sink->begin was called */
    /* Forwarding: what is needed to send the request again elsewhere. */
    char method[16];
    char *path, *body;
    size_t body_len;
    uint8_t tried[API_MAX_ATTEMPTS][MESH_ID_BYTES];
    int n_tried;
    int discarding;         /* swallowing a failed host's answer before a retry */
    struct api_call *next, *prev; /* a->live */

    openai_answer answer;   /* the transport's sink, model, id; a local answer's state */
};

/* ---- small helpers --------------------------------------------------------*/

char *api_error_json(const char *message, const char *type, const char *code)
{
    return openai_error_json(message, type, code);
}

/* ---- local generation -----------------------------------------------------*/

static void call_free(api_call *c)
{
    if (c->prev) c->prev->next = c->next;
    else if (c->a->live == c) c->a->live = c->next;
    if (c->next) c->next->prev = c->prev;
    free(c->path);
    free(c->body);
    openai_answer_free(&c->answer);
    free(c);
}

static void local_on_output(void *user, const char *text, size_t len, const engine_token *toks, int n_toks)
{
    api_call *c = user;
    openai_answer_output(&c->answer, text, len, toks, n_toks);
}

static void local_on_done(void *user, const engine_result *r, const char *error)
{
    api_call *c = user;
    api *a = c->a;
    c->job = NULL;
    if (error) {
        if (c->answer.stream) {
            openai_sse_error_and_done(c->answer.sink, error);
            c->answer.sink->ops->end(c->answer.sink);
            a->counters.failed++;
        } else {
            /* Errors the caller could fix (prompt too long, a token id out
             * of range) come back as 400. */
            int bad = strstr(error, "context") || strstr(error, "out of range") || strstr(error, "empty prompt");
            openai_send_error(&a->counters, c->answer.sink, bad ? 400 : 500, NULL, "%s", error);
        }
        call_free(c);
        return;
    }
    openai_answer_finish(&c->answer, r);
    call_free(c);
}

static const sched_callbacks local_callbacks = {local_on_output, local_on_done};

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

/* A live host for c->answer.model not tried yet, or -1. Among the candidates the
 * choice is a rendezvous hash of (this node's id, host id, model): each entry
 * node sticks to one host per model (its KV cache stays warm for follow-up
 * prompts), different entry nodes spread over the hosts, and when a host
 * goes away only the entry nodes that used it move. */
static int pick_untried_host(const api_call *c, uint8_t out[MESH_ID_BYTES])
{
    mesh *m = c->a->mesh;
    static mesh_peer peers[API_MAX_PEERS];
    int n = mesh_peers(m, peers, API_MAX_PEERS);
    if (n > API_MAX_PEERS) n = API_MAX_PEERS;
    uint64_t best_score = 0;
    int found = 0;
    size_t model_len = strlen(c->answer.model);
    for (int i = 0; i < n; i++) {
        if (strcmp(peers[i].state, "alive") != 0) continue;
        int serves = 0;
        for (int j = 0; j < peers[i].n_models && !serves; j++) serves = !strcmp(peers[i].models[j], c->answer.model);
        uint8_t id[MESH_ID_BYTES];
        if (!serves || identity_id_from_hex(peers[i].id, id) != 0 || host_tried(c, id)) continue;
        uint8_t key[2 * MESH_ID_BYTES + MESH_MAX_NAME];
        memcpy(key, mesh_node_id(m), MESH_ID_BYTES);
        memcpy(key + MESH_ID_BYTES, id, MESH_ID_BYTES);
        memcpy(key + 2 * MESH_ID_BYTES, c->answer.model, model_len);
        uint64_t score = hash_fnv1a(key, 2 * MESH_ID_BYTES + model_len);
        if (!found || score > best_score) {
            best_score = score;
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
    while (c->n_tried < API_MAX_ATTEMPTS) {
        uint8_t host[MESH_ID_BYTES];
        if (pick_untried_host(c, host) != 0) return -1;
        memcpy(c->tried[c->n_tried++], host, MESH_ID_BYTES);
        c->proxy.ops = &proxy_ops;
        c->tunnel = tunnel_forward(c->a->mesh, host, c->method, c->path, c->body, c->body_len,
                                   &c->proxy, err, errlen);
        if (c->tunnel) {
            c->a->counters.forwarded++;
            return 0;
        }
    }
    return -1;
}

static void proxy_begin(api_sink *sink, int status, const char *content_type)
{
    api_call *c = (api_call *)((char *)sink - offsetof(api_call, proxy));
    uint8_t next[MESH_ID_BYTES];
    if ((status == 502 || status == 503) && c->n_tried < API_MAX_ATTEMPTS &&
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
        c->a->counters.retried++;
        log_info("api", "model %s: host failed before answering, trying another", c->answer.model);
        char err[256];
        mesh_refresh_routes(c->a->mesh);   /* a client's routing table may be stale */
        if (forward_next(c, err, sizeof err) == 0) return;
        openai_send_error(&c->a->counters, c->answer.sink, 502, NULL,
                          "model '%s': every node tried failed before answering (%s)", c->answer.model, err);
        call_free(c);
        return;
    }
    if (c->failed_status >= 500) {
        c->a->counters.failed++;
        mesh_refresh_routes(c->a->mesh);
    }
    else if (c->failed_status >= 400) c->a->counters.bad_requests++;
    c->answer.sink->ops->end(c->answer.sink);
    call_free(c);
}

static const api_sink_ops proxy_ops = {proxy_begin, proxy_write, proxy_end};

/* ---- endpoints ------------------------------------------------------------*/

static int model_known_in_mesh(api *a, const char *model_id)
{
    if (!a->mesh) return 0;
    static mesh_peer peers[API_MAX_PEERS];
    int n = mesh_peers(a->mesh, peers, API_MAX_PEERS);
    if (n > API_MAX_PEERS) n = API_MAX_PEERS;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < peers[i].n_models; j++)
            if (!strcmp(peers[i].models[j], model_id)) return 1;
    return 0;
}

/* Sends c's request to a peer serving c->answer.model, or answers why it cannot.
 * Returns c while forwarding, or NULL once c is freed and the answer sent. */
static api_call *forward_or_refuse(api *a, api_call *c, const char *method, const char *path,
                                   const char *body, size_t len, int from_peer)
{
    char err[512];
    api_sink *sink = c->answer.sink;
    uint8_t host[MESH_ID_BYTES];
    if (!from_peer && a->mesh && pick_untried_host(c, host) == 0) {
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
        mesh_refresh_routes(a->mesh);
        openai_send_error(&a->counters, sink, 503, NULL, "model '%s': could not reach the node serving it: %s", model, err);
        return NULL;
    }
    char model[MESH_MAX_NAME];
    snprintf(model, sizeof model, "%s", c->answer.model);
    call_free(c);
    /* On a client, an unknown or unreachable model may be news its routing
     * table has not caught up with: pull it now for the next request. */
    if (a->mesh) mesh_refresh_routes(a->mesh);
    if (from_peer)
        openai_send_error(&a->counters, sink, 503, NULL, "model '%s' is not served by this node", model);
    else if (model_known_in_mesh(a, model))
        openai_send_error(&a->counters, sink, 503, NULL, "model '%s' is known in the mesh but no node serving it is reachable now", model);
    else
        openai_send_error(&a->counters, sink, 404, "model_not_found", "The model '%s' does not exist", model);
    return NULL;
}

/* A call for this request, linked into a->live; NULL (answered) when the
 * node is shutting down or out of memory. */
static api_call *call_new(api *a, api_sink *sink, const char *model, const char *id_prefix)
{
    if (a->draining) {
        openai_send_error(&a->counters, sink, 503, NULL, "this node is shutting down");
        return NULL;
    }
    api_call *c = calloc(1, sizeof *c);
    if (!c) {
        openai_send_error(&a->counters, sink, 500, NULL, "out of memory");
        return NULL;
    }
    c->a = a;
    openai_answer_init(&c->answer, sink, model, id_prefix, ++a->next_id);
    c->next = a->live;
    if (a->live) a->live->prev = c;
    a->live = c;
    return c;
}

static api_call *handle_generate(api *a, const char *method, const char *path, const char *body,
                                 size_t len, api_sink *sink, int from_peer, int chat)
{
    char err[512];
    openai_request req;
    if (openai_parse_request(body, len, chat, &req, err, sizeof err) != 0) {
        openai_send_error(&a->counters, sink, 400, NULL, "%s", err);
        return NULL;
    }
    engine_model *em = sched_find_model(a->sched, req.model);
    if (em && req.max_id >= engine_model_n_vocab(em)) {
        openai_send_error(&a->counters, sink, 400, NULL, "token id %d is out of range: model '%s' has %d tokens",
                          req.max_id, req.model, engine_model_n_vocab(em));
        openai_request_free(&req);
        return NULL;
    }
    api_call *c = call_new(a, sink, req.model, chat ? "chatcmpl" : "cmpl");
    if (!c) {
        openai_request_free(&req);
        return NULL;
    }
    c->answer.chat = chat;
    c->answer.stream = req.stream;
    if (!em) {
        openai_request_free(&req);
        return forward_or_refuse(a, c, method, path, body, len, from_peer);
    }

    /* the chat template is the serving model's */
    if (chat && openai_request_render_chat(&req, em, err, sizeof err) != 0) {
        call_free(c);
        openai_request_free(&req);
        openai_send_error(&a->counters, sink, 400, NULL, "chat template: %s", err);
        return NULL;
    }
    c->kind = CALL_LOCAL;
    if (openai_answer_prepare(&c->answer, &req, em) != 0) {
        call_free(c);
        openai_request_free(&req);
        openai_send_error(&a->counters, sink, 500, NULL, "out of memory");
        return NULL;
    }
    if (c->answer.stream) {
        c->began = 1;
        openai_answer_begin_stream(&c->answer);
    }
    c->job = sched_submit(a->sched, req.model, req.er, &local_callbacks, c);
    openai_request_free(&req);
    if (!c->job) {
        int began = c->began;
        call_free(c);
        if (began) { /* not reached in practice: the model was just found */
            openai_sse_error_and_done(sink, "could not queue the request");
            sink->ops->end(sink);
        } else {
            openai_send_error(&a->counters, sink, 500, NULL, "could not queue the request");
        }
        return NULL;
    }
    return c;
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
        em = sched_find_model(a->sched, model->valuestring);
        if (!em) { /* served elsewhere, maybe */
            c = call_new(a, sink, model->valuestring, "tok");
            if (c) c = forward_or_refuse(a, c, method, path, body, len, from_peer);
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
        int32_t *ids = cJSON_IsArray(tokens) ? openai_read_token_ids(tokens, "tokens", &n, &max_id, err, sizeof err) : NULL;
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

static void handle_models(api *a, api_sink *sink)
{
    /* Local models first, then every model a live peer serves, once each. */
    const char *seen[API_MAX_PEERS];
    int n_seen = 0;
    for (int i = 0; i < sched_model_count(a->sched) && n_seen < API_MAX_PEERS; i++)
        seen[n_seen++] = engine_model_id(sched_model_at(a->sched, i));
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
    if (!strcmp(route, "/tokenize") || !strcmp(route, "/detokenize") ||
        !strcmp(route, "/v1/tokenize") || !strcmp(route, "/v1/detokenize")) {
        if (!is_post) { openai_send_error(&a->counters, sink, 405, NULL, "use POST for %s", route); return NULL; }
        return handle_tokenize(a, method, path, body ? body : "", body_len, sink, from_peer,
                               strstr(route, "/detokenize") != NULL);
    }
    openai_send_error(&a->counters, sink, 404, NULL, "no such endpoint: %s %s", method, route);
    return NULL;
}

void api_call_abort(api_call *c)
{
    if (c->kind == CALL_LOCAL) {
        if (c->job) sched_cancel(c->job);
    } else if (c->tunnel) {
        tunnel_abort(c->tunnel);
    }
    call_free(c);
}

api *api_new(struct event_base *base, sched *s, mesh *m)
{
    api *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->base = base;
    a->sched = s;
    a->mesh = m;
    return a;
}

void api_free(api *a) { free(a); }

void api_get_counters(const api *a, api_counters *out) { *out = a->counters; }

int api_calls_active(const api *a)
{
    int n = 0;
    for (const api_call *c = a->live; c; c = c->next) n++;
    return n;
}

void api_set_draining(api *a) { a->draining = 1; }

void api_close_all(api *a, const char *reason)
{
    while (a->live) {
        api_call *c = a->live;
        if (c->kind == CALL_LOCAL && c->job) sched_cancel(c->job);
        if (c->kind == CALL_REMOTE && c->tunnel) tunnel_abort(c->tunnel);
        c->job = NULL;
        c->tunnel = NULL;
        if (!c->began) {
            openai_send_error(&a->counters, c->answer.sink, 503, NULL, "%s", reason);
        } else {
            if (c->answer.stream) openai_sse_error_and_done(c->answer.sink, reason);
            a->counters.failed++;
            c->answer.sink->ops->end(c->answer.sink);
        }
        call_free(c);
    }
}
