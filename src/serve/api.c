/* api.c: OpenAI-compatible endpoints: /v1/models, /v1/completions,
 * /v1/chat/completions (plain and streamed), and the routing of a request to
 * the local scheduler or to a peer. See api.h.
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
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine.h"
#include "lib/hash.h"
#include "lib/log.h"
#include "mesh/identity.h"
#include "mesh/mesh.h"
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
    api_sink *sink;         /* the transport's sink */
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

    int stream;             /* SSE instead of one JSON object */
    int chat;
    char id[48];
    char model[MESH_MAX_NAME];
    long created;
    char *text;             /* whole completion (non-streaming) */
    size_t text_len, text_cap;
};

/* ---- small helpers --------------------------------------------------------*/

char *api_error_json(const char *message, const char *type, const char *code)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *err = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(err, "message", message);
    cJSON_AddStringToObject(err, "type", type);
    cJSON_AddNullToObject(err, "param");
    if (code) cJSON_AddStringToObject(err, "code", code);
    else cJSON_AddNullToObject(err, "code");
    char *out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return out;
}

static void send_json(api_sink *sink, int status, cJSON *body)
{
    char *text = cJSON_PrintUnformatted(body);
    sink->ops->begin(sink, status, "application/json");
    if (text) sink->ops->write(sink, text, strlen(text));
    sink->ops->end(sink);
    free(text);
}

static void send_error(api *a, api_sink *sink, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void send_error(api *a, api_sink *sink, int status, const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *type = status == 404 ? "not_found_error"
                     : status < 500 ? "invalid_request_error" : "server_error";
    if (status < 500) a->counters.bad_requests++;
    else a->counters.failed++;
    log_debug("api", "%d %s", status, msg);
    char *body = api_error_json(msg, type, code);
    sink->ops->begin(sink, status, "application/json");
    if (body) sink->ops->write(sink, body, strlen(body));
    sink->ops->end(sink);
    free(body);
}

static void sse_send(api_sink *sink, cJSON *obj)
{
    char *text = cJSON_PrintUnformatted(obj);
    if (!text) return;
    size_t n = strlen(text);
    char *line = malloc(n + 9);
    if (line) {
        memcpy(line, "data: ", 6);
        memcpy(line + 6, text, n);
        memcpy(line + 6 + n, "\n\n", 2);
        sink->ops->write(sink, line, n + 8);
        free(line);
    }
    free(text);
}

static const char sse_done[] = "data: [DONE]\n\n";

/* Ends a started SSE answer with an error event and [DONE]. */
static void sse_error_and_done(api_sink *sink, const char *message)
{
    char *body = api_error_json(message, "server_error", NULL);
    char line[1024];
    int n = snprintf(line, sizeof line, "data: %s\n\n", body ? body : "{}");
    sink->ops->write(sink, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    sink->ops->write(sink, sse_done, sizeof sse_done - 1);
    free(body);
}

/* ---- request parsing ------------------------------------------------------*/

typedef struct {
    char model[MESH_MAX_NAME];
    char *prompt;           /* owned */
    size_t prompt_len;
    engine_sampling sampling;
    int stream;
} gen_request;

/* Reads an optional number in [lo, hi]; writes a message and returns -1 when
 * present but wrong. */
static int opt_number(cJSON *root, const char *name, double lo, double hi, double *out,
                      char *err, size_t errlen)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < lo || v->valuedouble > hi) {
        snprintf(err, errlen, "'%s' must be a number between %g and %g", name, lo, hi);
        return -1;
    }
    *out = v->valuedouble;
    return 0;
}

/* Renders chat messages with a plain role-prefixed template. Models with a
 * chat template get it rendered by the engine in a later version; this
 * fallback is what a model without one gets. */
static char *render_chat(cJSON *messages, size_t *len_out, char *err, size_t errlen)
{
    if (!cJSON_IsArray(messages) || cJSON_GetArraySize(messages) == 0) {
        snprintf(err, errlen, "'messages' must be a non-empty array");
        return NULL;
    }
    size_t cap = 256, len = 0;
    char *out = malloc(cap);
    if (!out) return NULL;
    cJSON *msg;
    cJSON_ArrayForEach(msg, messages) {
        cJSON *role = cJSON_GetObjectItemCaseSensitive(msg, "role");
        cJSON *content = cJSON_GetObjectItemCaseSensitive(msg, "content");
        if (!cJSON_IsString(role)) {
            snprintf(err, errlen, "each message needs a string 'role'");
            free(out);
            return NULL;
        }
        /* content: a string, or an array of {type:"text", text:...} parts. */
        const char *parts[64];
        int n_parts = 0;
        if (cJSON_IsString(content)) {
            parts[n_parts++] = content->valuestring;
        } else if (cJSON_IsArray(content)) {
            cJSON *part;
            cJSON_ArrayForEach(part, content) {
                cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
                if (!cJSON_IsString(text) || n_parts == 64) {
                    snprintf(err, errlen, "message content parts must be text parts (at most 64)");
                    free(out);
                    return NULL;
                }
                parts[n_parts++] = text->valuestring;
            }
        } else if (!cJSON_IsNull(content)) {
            snprintf(err, errlen, "message 'content' must be a string or an array of text parts");
            free(out);
            return NULL;
        }
        const char *r = role->valuestring;
        const char *label = !strcmp(r, "system") ? "System" : !strcmp(r, "assistant") ? "Assistant"
                          : !strcmp(r, "user") ? "User" : r;
        size_t need = strlen(label) + 4;
        for (int i = 0; i < n_parts; i++) need += strlen(parts[i]);
        if (len + need + 16 > cap) {
            while (len + need + 16 > cap) cap *= 2;
            char *p = realloc(out, cap);
            if (!p) { free(out); return NULL; }
            out = p;
        }
        len += (size_t)sprintf(out + len, "%s: ", label);
        for (int i = 0; i < n_parts; i++) {
            size_t n = strlen(parts[i]);
            memcpy(out + len, parts[i], n);
            len += n;
        }
        out[len++] = '\n';
    }
    len += (size_t)sprintf(out + len, "Assistant:");
    *len_out = len;
    return out;
}

/* Parses a completion or chat request body. Returns 0, or -1 with a message. */
static int parse_gen_request(const char *body, size_t len, int chat, gen_request *req,
                             char *err, size_t errlen)
{
    memset(req, 0, sizeof *req);
    engine_sampling_defaults(&req->sampling);
    cJSON *root = cJSON_ParseWithLength(body, len);
    if (!root) {
        snprintf(err, errlen, "request body is not valid JSON");
        return -1;
    }
    int rc = -1;
    if (!cJSON_IsObject(root)) {
        snprintf(err, errlen, "request body must be a JSON object");
        goto done;
    }
    cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsString(model) || !model->valuestring[0] || strlen(model->valuestring) >= MESH_MAX_NAME) {
        snprintf(err, errlen, "'model' must be a non-empty string (at most %d bytes)", MESH_MAX_NAME - 1);
        goto done;
    }
    snprintf(req->model, sizeof req->model, "%s", model->valuestring);

    if (chat) {
        req->prompt = render_chat(cJSON_GetObjectItemCaseSensitive(root, "messages"),
                                  &req->prompt_len, err, errlen);
        if (!req->prompt) goto done;
    } else {
        cJSON *prompt = cJSON_GetObjectItemCaseSensitive(root, "prompt");
        /* A one-element array of strings is common in client libraries. */
        if (cJSON_IsArray(prompt) && cJSON_GetArraySize(prompt) == 1 &&
            cJSON_IsString(cJSON_GetArrayItem(prompt, 0)))
            prompt = cJSON_GetArrayItem(prompt, 0);
        if (!cJSON_IsString(prompt)) {
            snprintf(err, errlen, "'prompt' must be a string");
            goto done;
        }
        req->prompt_len = strlen(prompt->valuestring);
        req->prompt = strdup(prompt->valuestring);
        if (!req->prompt) goto done;
    }

    double v;
    v = req->sampling.temperature;
    if (opt_number(root, "temperature", 0, 2, &v, err, errlen)) goto done;
    req->sampling.temperature = (float)v;
    v = req->sampling.top_p;
    if (opt_number(root, "top_p", 0, 1, &v, err, errlen)) goto done;
    req->sampling.top_p = (float)v;
    v = req->sampling.top_k;
    if (opt_number(root, "top_k", 0, 1e6, &v, err, errlen)) goto done;
    req->sampling.top_k = (int)v;
    v = 16;
    if (opt_number(root, chat ? "max_completion_tokens" : "max_tokens", 0, 1e6, &v, err, errlen)) goto done;
    if (chat && opt_number(root, "max_tokens", 0, 1e6, &v, err, errlen)) goto done;
    if (chat && !cJSON_GetObjectItemCaseSensitive(root, "max_tokens") &&
        !cJSON_GetObjectItemCaseSensitive(root, "max_completion_tokens"))
        v = 1e6; /* chat default: until EOS or the end of the context */
    req->sampling.max_tokens = (int)v;
    /* No seed: a fresh one per request (time and a counter, mixed). */
    static uint64_t seed_counter;
    cJSON *seed = cJSON_GetObjectItemCaseSensitive(root, "seed");
    if (seed && !cJSON_IsNull(seed)) {
        if (!cJSON_IsNumber(seed) || seed->valuedouble != floor(seed->valuedouble) ||
            fabs(seed->valuedouble) > 9.0e15) {
            snprintf(err, errlen, "'seed' must be an integer");
            goto done;
        }
        req->sampling.seed = (uint64_t)(int64_t)seed->valuedouble;
    } else {
        req->sampling.seed = ((uint64_t)time(NULL) << 20) ^ (++seed_counter * 0x9E3779B97F4A7C15ull);
    }
    double n = 1;
    if (opt_number(root, "n", 1, 1, &n, err, errlen)) {
        snprintf(err, errlen, "'n' must be 1 (several choices per request are not supported)");
        goto done;
    }
    cJSON *stream = cJSON_GetObjectItemCaseSensitive(root, "stream");
    if (stream && !cJSON_IsNull(stream) && !cJSON_IsBool(stream)) {
        snprintf(err, errlen, "'stream' must be a boolean");
        goto done;
    }
    req->stream = cJSON_IsTrue(stream);
    rc = 0;
done:
    cJSON_Delete(root);
    if (rc != 0) { free(req->prompt); req->prompt = NULL; }
    return rc;
}

/* ---- local generation -----------------------------------------------------*/

static void call_free(api_call *c)
{
    if (c->prev) c->prev->next = c->next;
    else if (c->a->live == c) c->a->live = c->next;
    if (c->next) c->next->prev = c->prev;
    free(c->path);
    free(c->body);
    free(c->text);
    free(c);
}

static cJSON *chunk_object(api_call *c)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", c->id);
    cJSON_AddStringToObject(o, "object", c->chat ? "chat.completion.chunk" : "text_completion");
    cJSON_AddNumberToObject(o, "created", (double)c->created);
    cJSON_AddStringToObject(o, "model", c->model);
    return o;
}

/* One streamed choice: text (may be NULL for the role-only first chat chunk)
 * and an optional finish reason. */
static void send_stream_chunk(api_call *c, const char *text, size_t len, const char *finish, int role)
{
    cJSON *o = chunk_object(c);
    cJSON *choices = cJSON_AddArrayToObject(o, "choices");
    cJSON *choice = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, choice);
    cJSON_AddNumberToObject(choice, "index", 0);
    char *copy = NULL;
    if (text) {
        copy = malloc(len + 1);
        if (copy) { memcpy(copy, text, len); copy[len] = 0; }
    }
    if (c->chat) {
        cJSON *delta = cJSON_AddObjectToObject(choice, "delta");
        if (role) cJSON_AddStringToObject(delta, "role", "assistant");
        if (copy) cJSON_AddStringToObject(delta, "content", copy);
    } else {
        cJSON_AddStringToObject(choice, "text", copy ? copy : "");
        cJSON_AddNullToObject(choice, "logprobs");
    }
    if (finish) cJSON_AddStringToObject(choice, "finish_reason", finish);
    else cJSON_AddNullToObject(choice, "finish_reason");
    sse_send(c->sink, o);
    cJSON_Delete(o);
    free(copy);
}

static void local_on_piece(void *user, const char *text, size_t len)
{
    api_call *c = user;
    if (c->stream) {
        send_stream_chunk(c, text, len, NULL, 0);
        return;
    }
    if (c->text_len + len + 1 > c->text_cap) {
        size_t cap = c->text_cap ? c->text_cap : 256;
        while (cap < c->text_len + len + 1) cap *= 2;
        char *p = realloc(c->text, cap);
        if (!p) return;
        c->text = p;
        c->text_cap = cap;
    }
    memcpy(c->text + c->text_len, text, len);
    c->text_len += len;
    c->text[c->text_len] = 0;
}

static void add_usage(cJSON *o, const engine_result *r)
{
    cJSON *usage = cJSON_AddObjectToObject(o, "usage");
    cJSON_AddNumberToObject(usage, "prompt_tokens", r->prompt_tokens);
    cJSON_AddNumberToObject(usage, "completion_tokens", r->completion_tokens);
    cJSON_AddNumberToObject(usage, "total_tokens", r->prompt_tokens + r->completion_tokens);
}

static void local_on_done(void *user, const engine_result *r, const char *error)
{
    api_call *c = user;
    api *a = c->a;
    c->job = NULL;
    if (error) {
        if (c->stream) {
            sse_error_and_done(c->sink, error);
            c->sink->ops->end(c->sink);
            a->counters.failed++;
        } else {
            /* Errors the caller could fix (prompt too long) come back as 400. */
            send_error(a, c->sink, strstr(error, "context") ? 400 : 500, NULL, "%s", error);
        }
        call_free(c);
        return;
    }
    if (c->stream) {
        send_stream_chunk(c, NULL, 0, r->finish_reason, 0);
        c->sink->ops->write(c->sink, sse_done, sizeof sse_done - 1);
        c->sink->ops->end(c->sink);
        call_free(c);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", c->id);
    cJSON_AddStringToObject(o, "object", c->chat ? "chat.completion" : "text_completion");
    cJSON_AddNumberToObject(o, "created", (double)c->created);
    cJSON_AddStringToObject(o, "model", c->model);
    cJSON *choices = cJSON_AddArrayToObject(o, "choices");
    cJSON *choice = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, choice);
    cJSON_AddNumberToObject(choice, "index", 0);
    const char *text = c->text ? c->text : "";
    if (c->chat) {
        cJSON *msg = cJSON_AddObjectToObject(choice, "message");
        cJSON_AddStringToObject(msg, "role", "assistant");
        cJSON_AddStringToObject(msg, "content", text);
    } else {
        cJSON_AddStringToObject(choice, "text", text);
        cJSON_AddNullToObject(choice, "logprobs");
    }
    cJSON_AddStringToObject(choice, "finish_reason", r->finish_reason ? r->finish_reason : "stop");
    add_usage(o, r);
    send_json(c->sink, 200, o);
    cJSON_Delete(o);
    call_free(c);
}

static const sched_callbacks local_callbacks = {local_on_piece, local_on_done};

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

/* A live host for c->model not tried yet, or -1. Among the candidates the
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
    size_t model_len = strlen(c->model);
    for (int i = 0; i < n; i++) {
        if (strcmp(peers[i].state, "alive") != 0) continue;
        int serves = 0;
        for (int j = 0; j < peers[i].n_models && !serves; j++) serves = !strcmp(peers[i].models[j], c->model);
        uint8_t id[MESH_ID_BYTES];
        if (!serves || identity_id_from_hex(peers[i].id, id) != 0 || host_tried(c, id)) continue;
        uint8_t key[2 * MESH_ID_BYTES + MESH_MAX_NAME];
        memcpy(key, mesh_node_id(m), MESH_ID_BYTES);
        memcpy(key + MESH_ID_BYTES, id, MESH_ID_BYTES);
        memcpy(key + 2 * MESH_ID_BYTES, c->model, model_len);
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
    c->stream = strncmp(content_type, "text/event-stream", 17) == 0;
    c->sink->ops->begin(c->sink, status, content_type);
}

static void proxy_write(api_sink *sink, const char *data, size_t len)
{
    api_call *c = (api_call *)((char *)sink - offsetof(api_call, proxy));
    if (!c->discarding) c->sink->ops->write(c->sink, data, len);
}

static void proxy_end(api_sink *sink)
{
    api_call *c = (api_call *)((char *)sink - offsetof(api_call, proxy));
    c->tunnel = NULL; /* the tunnel is done with us */
    if (c->discarding) {
        c->discarding = 0;
        c->a->counters.retried++;
        log_info("api", "model %s: host failed before answering, trying another", c->model);
        char err[256];
        if (forward_next(c, err, sizeof err) == 0) return;
        send_error(c->a, c->sink, 502, NULL, "model '%s': every node tried failed before answering (%s)",
                   c->model, err);
        call_free(c);
        return;
    }
    if (c->failed_status >= 500) c->a->counters.failed++;
    else if (c->failed_status >= 400) c->a->counters.bad_requests++;
    c->sink->ops->end(c->sink);
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

static api_call *handle_generate(api *a, const char *method, const char *path, const char *body,
                                 size_t len, api_sink *sink, int from_peer, int chat)
{
    char err[512];
    gen_request req;
    if (parse_gen_request(body, len, chat, &req, err, sizeof err) != 0) {
        send_error(a, sink, 400, NULL, "%s", err);
        return NULL;
    }
    api_call *c = calloc(1, sizeof *c);
    if (!c) {
        free(req.prompt);
        send_error(a, sink, 500, NULL, "out of memory");
        return NULL;
    }
    c->a = a;
    c->sink = sink;
    c->chat = chat;
    c->stream = req.stream;
    c->created = (long)time(NULL);
    snprintf(c->model, sizeof c->model, "%s", req.model);
    snprintf(c->id, sizeof c->id, "%s-%016llx", chat ? "chatcmpl" : "cmpl",
             (unsigned long long)(++a->next_id * 0x9E3779B97F4A7C15ull ^ (uint64_t)c->created));

    if (a->draining) {
        free(req.prompt);
        call_free(c);
        send_error(a, sink, 503, NULL, "this node is shutting down");
        return NULL;
    }
    c->next = a->live;
    if (a->live) a->live->prev = c;
    a->live = c;

    if (sched_find_model(a->sched, req.model)) {
        c->kind = CALL_LOCAL;
        if (c->stream) {
            c->began = 1;
            sink->ops->begin(sink, 200, "text/event-stream");
            if (chat) send_stream_chunk(c, NULL, 0, NULL, 1);
        }
        c->job = sched_submit(a->sched, req.model, req.prompt, req.prompt_len, &req.sampling,
                              &local_callbacks, c);
        free(req.prompt);
        if (!c->job) { /* cannot happen: the model was just found */
            call_free(c);
            send_error(a, sink, 500, NULL, "could not queue the request");
            return NULL;
        }
        return c;
    }
    free(req.prompt);

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
        call_free(c);
        send_error(a, sink, 503, NULL, "model '%s': could not reach the node serving it: %s", req.model, err);
        return NULL;
    }
    call_free(c);
    if (from_peer)
        send_error(a, sink, 503, NULL, "model '%s' is not served by this node", req.model);
    else if (model_known_in_mesh(a, req.model))
        send_error(a, sink, 503, NULL, "model '%s' is known in the mesh but no node serving it is reachable now", req.model);
    else
        send_error(a, sink, 404, "model_not_found", "The model '%s' does not exist", req.model);
    return NULL;
}

static void handle_models(api *a, api_sink *sink)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(root, "data");
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
    for (int i = 0; i < n_seen; i++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "id", seen[i]);
        cJSON_AddStringToObject(m, "object", "model");
        cJSON_AddNumberToObject(m, "created", 0);
        cJSON_AddStringToObject(m, "owned_by", "llmesh");
        cJSON_AddItemToArray(data, m);
    }
    send_json(sink, 200, root);
    cJSON_Delete(root);
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
        if (!is_get) { send_error(a, sink, 405, NULL, "use GET for %s", route); return NULL; }
        handle_models(a, sink);
        return NULL;
    }
    if (!strcmp(route, "/v1/completions") || !strcmp(route, "/v1/chat/completions")) {
        if (!is_post) { send_error(a, sink, 405, NULL, "use POST for %s", route); return NULL; }
        return handle_generate(a, method, path, body ? body : "", body_len, sink, from_peer,
                               route[4] == 'c' && route[5] == 'h');
    }
    send_error(a, sink, 404, NULL, "no such endpoint: %s %s", method, route);
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
            send_error(a, c->sink, 503, NULL, "%s", reason);
        } else {
            if (c->stream) sse_error_and_done(c->sink, reason);
            a->counters.failed++;
            c->sink->ops->end(c->sink);
        }
        call_free(c);
    }
}
