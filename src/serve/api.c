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
#include <math.h>
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
#include "serve/openai.h"
#include "serve/scheduler.h"
#include "serve/tunnel.h"

#define API_MAX_PEERS 256
#define API_MAX_ATTEMPTS 3  /* hosts tried for one forwarded request */
#define API_MAX_PROMPT_IDS (1 << 20) /* token ids in one prompt */
#define API_MAX_MESSAGES 4096        /* chat messages in one request */

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

/* ---- request parsing ------------------------------------------------------*/

static int append_text(char **buf, size_t *len, size_t *cap, const char *text, size_t n);

typedef struct {
    char model[MESH_MAX_NAME];
    engine_request *er;     /* owned; er->prompt / er->prompt_ids point at the copies below */
    char *prompt;           /* owned text prompt (or rendered chat) */
    size_t prompt_len;
    int32_t *ids;           /* owned token-id prompt (completions), or NULL */
    int n_ids;
    int stream;
    int include_usage;      /* stream_options.include_usage */
    int echo;               /* completions: the prompt comes back before the completion */
    int max_id;             /* largest token id in the prompt or logit_bias (-1: none) */
    chat_message *msgs;     /* chat: owned roles and contents, rendered by the serving node */
    int n_msgs;
} gen_request;

static void gen_request_free(gen_request *r)
{
    free(r->er);
    free(r->prompt);
    free(r->ids);
    for (int i = 0; i < r->n_msgs; i++) {
        free((char *)r->msgs[i].role);
        free((char *)r->msgs[i].content);
    }
    free(r->msgs);
    r->msgs = NULL;
    r->n_msgs = 0;
    r->er = NULL;
    r->prompt = NULL;
    r->ids = NULL;
}

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

/* The same for a float field. */
static int opt_float(cJSON *root, const char *name, double lo, double hi, float *out, char *err, size_t errlen)
{
    double v = *out;
    if (opt_number(root, name, lo, hi, &v, err, errlen)) return -1;
    *out = (float)v;
    return 0;
}

/* Reads an optional boolean; -1 with a message when present but not one. */
static int opt_bool(cJSON *root, const char *name, int *out, char *err, size_t errlen)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsBool(v)) {
        snprintf(err, errlen, "'%s' must be a boolean", name);
        return -1;
    }
    *out = cJSON_IsTrue(v);
    return 0;
}

/* An array of token ids: each an integer in [0, 2^31). Returns the ids
 * (malloc'ed) or NULL with a message; *max gets the largest. */
static int32_t *parse_token_ids(cJSON *arr, const char *name, int *n_out, int *max, char *err, size_t errlen)
{
    int n = cJSON_GetArraySize(arr);
    if (n > API_MAX_PROMPT_IDS) {
        snprintf(err, errlen, "'%s' has %d token ids; at most %d are accepted", name, n, API_MAX_PROMPT_IDS);
        return NULL;
    }
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
    if (!ids) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    int i = 0;
    cJSON *v;
    cJSON_ArrayForEach(v, arr) {
        if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 0 ||
            v->valuedouble >= 2147483647.0) {
            snprintf(err, errlen, "'%s' must hold token ids (non-negative integers)", name);
            free(ids);
            return NULL;
        }
        ids[i] = (int32_t)v->valuedouble;
        if (ids[i] > *max) *max = ids[i];
        i++;
    }
    *n_out = n;
    return ids;
}

/* prompt: a string, an array of token ids, or a one-element array of either. */
static int parse_prompt(cJSON *prompt, gen_request *req, char *err, size_t errlen)
{
    if (cJSON_IsArray(prompt) && cJSON_GetArraySize(prompt) >= 1 &&
        (cJSON_IsString(cJSON_GetArrayItem(prompt, 0)) || cJSON_IsArray(cJSON_GetArrayItem(prompt, 0)))) {
        if (cJSON_GetArraySize(prompt) > 1) {
            snprintf(err, errlen, "'prompt' holds %d prompts; batches are not supported (one prompt "
                     "per request, n = 1)", cJSON_GetArraySize(prompt));
            return -1;
        }
        prompt = cJSON_GetArrayItem(prompt, 0);
    }
    if (cJSON_IsString(prompt)) {
        req->prompt_len = strlen(prompt->valuestring);
        req->prompt = strdup(prompt->valuestring);
        if (!req->prompt) snprintf(err, errlen, "out of memory");
        return req->prompt ? 0 : -1;
    }
    if (cJSON_IsArray(prompt)) {
        if (cJSON_GetArraySize(prompt) == 0) {
            snprintf(err, errlen, "'prompt' is an empty array of token ids");
            return -1;
        }
        req->ids = parse_token_ids(prompt, "prompt", &req->n_ids, &req->max_id, err, errlen);
        return req->ids ? 0 : -1;
    }
    snprintf(err, errlen, "'prompt' must be a string or an array of token ids");
    return -1;
}

/* stop: a string or an array of at most ENGINE_MAX_STOP non-empty strings. */
static int parse_stop(cJSON *stop, engine_sampling *s, char *err, size_t errlen)
{
    if (!stop || cJSON_IsNull(stop)) return 0;
    cJSON *one = cJSON_IsString(stop) ? stop : NULL;
    if (!one && (!cJSON_IsArray(stop) || cJSON_GetArraySize(stop) > ENGINE_MAX_STOP)) {
        snprintf(err, errlen, "'stop' must be a string or an array of at most %d strings", ENGINE_MAX_STOP);
        return -1;
    }
    for (int i = 0; i < (one ? 1 : cJSON_GetArraySize(stop)); i++) {
        cJSON *v = one ? one : cJSON_GetArrayItem(stop, i);
        size_t n = cJSON_IsString(v) ? strlen(v->valuestring) : 0;
        if (n == 0 || n > ENGINE_MAX_STOP_BYTES) {
            snprintf(err, errlen, "each stop string must be a non-empty string of at most %d bytes",
                     ENGINE_MAX_STOP_BYTES);
            return -1;
        }
        memcpy(s->stop[s->n_stop++], v->valuestring, n + 1);
    }
    return 0;
}

/* logit_bias: {"token id": bias in [-100, 100], ...}, at most ENGINE_MAX_LOGIT_BIAS. */
static int parse_logit_bias(cJSON *bias, engine_sampling *s, int *max_id, char *err, size_t errlen)
{
    if (!bias || cJSON_IsNull(bias)) return 0;
    if (!cJSON_IsObject(bias) || cJSON_GetArraySize(bias) > ENGINE_MAX_LOGIT_BIAS) {
        snprintf(err, errlen, "'logit_bias' must be an object of at most %d token ids", ENGINE_MAX_LOGIT_BIAS);
        return -1;
    }
    cJSON *v;
    cJSON_ArrayForEach(v, bias) {
        char *end;
        long id = strtol(v->string, &end, 10);
        if (!v->string[0] || *end || id < 0 || id >= INT32_MAX || !cJSON_IsNumber(v) ||
            !isfinite(v->valuedouble) || v->valuedouble < -100 || v->valuedouble > 100) {
            snprintf(err, errlen, "'logit_bias' maps token ids (decimal strings) to numbers in [-100, 100]");
            return -1;
        }
        s->logit_bias[s->n_logit_bias].token = (int32_t)id;
        s->logit_bias[s->n_logit_bias++].bias = (float)v->valuedouble;
        if (id > *max_id) *max_id = (int)id;
    }
    return 0;
}

/* Reads chat messages: each a string role and a content that is a string,
 * null, or an array of {type: "text", text} parts (joined). Rendering waits
 * until the node that runs the model is known: it owns the chat template. */
static int parse_messages(cJSON *messages, gen_request *req, char *err, size_t errlen)
{
    int n = cJSON_GetArraySize(messages);
    if (!cJSON_IsArray(messages) || n == 0 || n > API_MAX_MESSAGES) {
        snprintf(err, errlen, "'messages' must be a non-empty array (at most %d messages)", API_MAX_MESSAGES);
        return -1;
    }
    req->msgs = calloc((size_t)n, sizeof *req->msgs);
    if (!req->msgs) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    cJSON *msg;
    cJSON_ArrayForEach(msg, messages) {
        cJSON *role = cJSON_GetObjectItemCaseSensitive(msg, "role");
        cJSON *content = cJSON_GetObjectItemCaseSensitive(msg, "content");
        if (!cJSON_IsString(role)) {
            snprintf(err, errlen, "each message needs a string 'role'");
            return -1;
        }
        char *text = NULL;
        size_t len = 0, cap = 0;
        if (cJSON_IsString(content)) {
            append_text(&text, &len, &cap, content->valuestring, strlen(content->valuestring));
        } else if (cJSON_IsArray(content)) {
            cJSON *part;
            cJSON_ArrayForEach(part, content) {
                cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "text");
                if (!cJSON_IsString(t)) {
                    free(text);
                    snprintf(err, errlen, "message content parts must be text parts");
                    return -1;
                }
                append_text(&text, &len, &cap, t->valuestring, strlen(t->valuestring));
            }
        } else if (content && !cJSON_IsNull(content)) {
            snprintf(err, errlen, "message 'content' must be a string or an array of text parts");
            return -1;
        }
        chat_message *m = &req->msgs[req->n_msgs++];
        m->role = strdup(role->valuestring);
        m->content = text ? text : strdup("");
        if (!m->role || !m->content) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    return 0;
}

/* Parses a completion or chat request body. Returns 0, or -1 with a message
 * (then nothing is left to free). */
static int parse_gen_request(const char *body, size_t len, int chat, gen_request *req,
                             char *err, size_t errlen)
{
    memset(req, 0, sizeof *req);
    req->max_id = -1;
    cJSON *root = cJSON_ParseWithLength(body, len);
    if (!root) {
        snprintf(err, errlen, "request body is not valid JSON");
        return -1;
    }
    int rc = -1;
    engine_request *er = req->er = malloc(sizeof *er);
    if (!er) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    engine_request_defaults(er);
    engine_sampling *s = &er->sampling;
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
        if (parse_messages(cJSON_GetObjectItemCaseSensitive(root, "messages"), req, err, errlen)) goto done;
    } else if (parse_prompt(cJSON_GetObjectItemCaseSensitive(root, "prompt"), req, err, errlen)) {
        goto done;
    }

    double v;
    if (opt_float(root, "temperature", 0, 2, &s->temperature, err, errlen)) goto done;
    if (opt_float(root, "top_p", 0, 1, &s->top_p, err, errlen)) goto done;
    v = s->top_k;
    if (opt_number(root, "top_k", 0, 1e6, &v, err, errlen)) goto done;
    s->top_k = (int)v;
    if (opt_float(root, "min_p", 0, 1, &s->min_p, err, errlen)) goto done;
    if (opt_float(root, "presence_penalty", -2, 2, &s->presence_penalty, err, errlen)) goto done;
    if (opt_float(root, "frequency_penalty", -2, 2, &s->frequency_penalty, err, errlen)) goto done;
    /* repetition_penalty (Hugging Face's name) or repeat_penalty (llama.cpp's) */
    if (opt_float(root, "repetition_penalty", 0, 10, &s->repeat_penalty, err, errlen)) goto done;
    if (opt_float(root, "repeat_penalty", 0, 10, &s->repeat_penalty, err, errlen)) goto done;
    v = 0;
    if (opt_number(root, "repeat_last_n", 0, 4096, &v, err, errlen)) goto done;
    s->repeat_last_n = (int)v;
    v = 16;
    if (opt_number(root, chat ? "max_completion_tokens" : "max_tokens", 0, 1e6, &v, err, errlen)) goto done;
    if (chat && opt_number(root, "max_tokens", 0, 1e6, &v, err, errlen)) goto done;
    if (chat && !cJSON_GetObjectItemCaseSensitive(root, "max_tokens") &&
        !cJSON_GetObjectItemCaseSensitive(root, "max_completion_tokens"))
        v = 1e6; /* chat default: until EOS or the end of the context */
    s->max_tokens = (int)v;
    /* No seed: a fresh one per request (time and a counter, mixed). */
    static uint64_t seed_counter;
    cJSON *seed = cJSON_GetObjectItemCaseSensitive(root, "seed");
    if (seed && !cJSON_IsNull(seed)) {
        if (!cJSON_IsNumber(seed) || seed->valuedouble != floor(seed->valuedouble) ||
            fabs(seed->valuedouble) > 9.0e15) {
            snprintf(err, errlen, "'seed' must be an integer");
            goto done;
        }
        s->seed = (uint64_t)(int64_t)seed->valuedouble;
    } else {
        s->seed = ((uint64_t)time(NULL) << 20) ^ (++seed_counter * 0x9E3779B97F4A7C15ull);
    }
    double n = 1;
    if (opt_number(root, "n", 1, 1, &n, err, errlen)) {
        snprintf(err, errlen, "'n' must be 1 (several choices per request are not supported)");
        goto done;
    }
    if (parse_stop(cJSON_GetObjectItemCaseSensitive(root, "stop"), s, err, errlen)) goto done;
    if (parse_logit_bias(cJSON_GetObjectItemCaseSensitive(root, "logit_bias"), s, &req->max_id, err, errlen))
        goto done;

    /* Log-probabilities. Completions (legacy): logprobs = N alternatives,
     * 0..20 (OpenAI allows 5; lm-evaluation-harness asks for 1); echo.
     * Chat: logprobs = true, top_logprobs = N. */
    if (chat) {
        if (opt_bool(root, "logprobs", &er->logprobs, err, errlen)) goto done;
        v = 0;
        if (opt_number(root, "top_logprobs", 0, ENGINE_MAX_TOP_LOGPROBS, &v, err, errlen)) goto done;
        er->top_logprobs = (int)v;
    } else {
        cJSON *lp = cJSON_GetObjectItemCaseSensitive(root, "logprobs");
        if (cJSON_IsBool(lp)) {
            er->logprobs = cJSON_IsTrue(lp);
        } else if (lp && !cJSON_IsNull(lp)) {
            v = 0;
            if (opt_number(root, "logprobs", 0, ENGINE_MAX_TOP_LOGPROBS, &v, err, errlen) ||
                v != floor(v)) {
                snprintf(err, errlen, "'logprobs' must be an integer between 0 and %d", ENGINE_MAX_TOP_LOGPROBS);
                goto done;
            }
            er->logprobs = 1;
            er->top_logprobs = (int)v;
        }
        if (opt_bool(root, "echo", &req->echo, err, errlen)) goto done;
        er->echo_logprobs = req->echo && er->logprobs;
        /* A string prompt's special-token texts ("<|im_start|>", "</s>")
         * become those tokens, as llama.cpp's server does, so that prompts
         * rendered by the caller work; "parse_special": false keeps them text. */
        er->parse_special = 1;
        if (opt_bool(root, "parse_special", &er->parse_special, err, errlen)) goto done;
    }
    if (opt_bool(root, "stream", &req->stream, err, errlen)) goto done;
    cJSON *so = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
    if (so && !cJSON_IsNull(so)) {
        if (!cJSON_IsObject(so) || opt_bool(so, "include_usage", &req->include_usage, err, errlen)) {
            if (!cJSON_IsObject(so)) snprintf(err, errlen, "'stream_options' must be an object");
            goto done;
        }
    }
    er->prompt = req->prompt ? req->prompt : "";
    er->prompt_len = req->prompt_len;
    er->prompt_ids = req->ids;
    er->n_prompt_ids = req->n_ids;
    rc = 0;
done:
    cJSON_Delete(root);
    if (rc != 0) gen_request_free(req);
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
    openai_answer_free(&c->answer);
    free(c);
}

static int append_text(char **buf, size_t *len, size_t *cap, const char *text, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t nc = *cap ? *cap : 256;
        while (nc < *len + n + 1) nc *= 2;
        char *p = realloc(*buf, nc);
        if (!p) return -1;
        *buf = p;
        *cap = nc;
    }
    memcpy(*buf + *len, text, n);
    *len += n;
    (*buf)[*len] = 0;
    return 0;
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
    gen_request req;
    if (parse_gen_request(body, len, chat, &req, err, sizeof err) != 0) {
        openai_send_error(&a->counters, sink, 400, NULL, "%s", err);
        return NULL;
    }
    engine_model *em = sched_find_model(a->sched, req.model);
    if (em && req.max_id >= engine_model_n_vocab(em)) {
        openai_send_error(&a->counters, sink, 400, NULL, "token id %d is out of range: model '%s' has %d tokens",
                   req.max_id, req.model, engine_model_n_vocab(em));
        gen_request_free(&req);
        return NULL;
    }
    api_call *c = call_new(a, sink, req.model, chat ? "chatcmpl" : "cmpl");
    if (!c) {
        gen_request_free(&req);
        return NULL;
    }
    c->answer.chat = chat;
    c->answer.stream = req.stream;
    if (!em) {
        gen_request_free(&req);
        return forward_or_refuse(a, c, method, path, body, len, from_peer);
    }

    if (chat) { /* the chat template is the serving model's */
        int parse_special = 0;
        if (engine_render_chat(em, req.msgs, req.n_msgs, &req.prompt, &req.prompt_len, &parse_special,
                               err, sizeof err) != 0) {
            call_free(c);
            gen_request_free(&req);
            openai_send_error(&a->counters, sink, 400, NULL, "chat template: %s", err);
            return NULL;
        }
        req.er->prompt = req.prompt;
        req.er->prompt_len = req.prompt_len;
        req.er->parse_special = parse_special;
    }
    c->kind = CALL_LOCAL;
    c->answer.engine = em;
    c->answer.logprobs = req.er->logprobs;
    c->answer.top_logprobs = req.er->top_logprobs;
    c->answer.include_usage = req.include_usage;
    if (req.echo) {
        size_t n;
        c->answer.echo_text = req.ids ? engine_detokenize(em, req.ids, req.n_ids, &n, err, sizeof err)
                                      : strdup(req.prompt);
        if (!c->answer.echo_text) {
            call_free(c);
            gen_request_free(&req);
            openai_send_error(&a->counters, sink, 500, NULL, "out of memory");
            return NULL;
        }
    }
    if (c->answer.stream) {
        c->began = 1;
        openai_answer_begin_stream(&c->answer);
    }
    c->job = sched_submit(a->sched, req.model, req.er, &local_callbacks, c);
    gen_request_free(&req);
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
        if (opt_bool(root, "add_special", &add_special, err, sizeof err) ||
            opt_bool(root, "parse_special", &parse_special, err, sizeof err))
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
        int32_t *ids = cJSON_IsArray(tokens) ? parse_token_ids(tokens, "tokens", &n, &max_id, err, sizeof err) : NULL;
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
