/* openai.c: OpenAI's wire dialect: the JSON objects and SSE chunks of
 * /v1/completions and /v1/chat/completions answers (with log-probabilities,
 * echo and usage), model lists and error bodies. See openai.h.
 *
 * Error shape: {"error":{"message","type","param","code"}}; a stream that
 * fails after it started ends with an error event and "data: [DONE]". */
#include "serve/openai.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/json_grammar.h"
#include "lib/log.h"

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

/* ---- request parsing ------------------------------------------------------*/

void openai_request_free(openai_request *r)
{
    free(r->er);
    free(r->prompt);
    free(r->ids);
    for (int i = 0; i < r->n_msgs; i++) {
        free((char *)r->msgs[i].role);
        free((char *)r->msgs[i].content);
        free((char *)r->msgs[i].json);
    }
    tools_request_free(r->tools);
    r->tools = NULL;
    free(r->msgs);
    json_grammar_free(r->grammar);
    r->grammar = NULL;
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
int openai_read_bool(cJSON *root, const char *name, int *out, char *err, size_t errlen)
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
int32_t *openai_read_token_ids(cJSON *arr, const char *name, int *n_out, int *max, char *err,
                               size_t errlen)
{
    int n = cJSON_GetArraySize(arr);
    if (n > OPENAI_MAX_PROMPT_IDS) {
        snprintf(err, errlen, "'%s' has %d token ids; at most %d are accepted", name, n, OPENAI_MAX_PROMPT_IDS);
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
static int parse_prompt(cJSON *prompt, openai_request *req, char *err, size_t errlen)
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
        req->ids = openai_read_token_ids(prompt, "prompt", &req->n_ids, &req->max_id, err, errlen);
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

/* response_format: {"type": "text"}, {"type": "json_object"} (any JSON
 * object) or {"type": "json_schema", "json_schema": {"name", "schema",
 * "strict"?, "description"?}}: the answer is constrained to JSON that
 * matches (engine/json_grammar.h); a schema keyword the compiler does not
 * implement is a 400 that names it. */
static int parse_response_format(cJSON *rf, openai_request *req, char *err, size_t errlen)
{
    static const char *const rf_fields[] = {"type", "json_schema", NULL};
    static const char *const js_fields[] = {"name", "schema", "strict", "description", NULL};
    if (!rf || cJSON_IsNull(rf)) return 0;
    cJSON *type = cJSON_GetObjectItemCaseSensitive(rf, "type");
    if (!cJSON_IsObject(rf) || !cJSON_IsString(type)) {
        snprintf(err, errlen, "'response_format' must be an object with a string 'type'");
        return -1;
    }
    if (openai_check_fields(rf, rf_fields, "response_format", err, errlen)) return -1;
    const char *t = type->valuestring;
    if (!strcmp(t, "text")) return 0;
    if (!strcmp(t, "json_object")) {
        req->grammar = json_grammar_object(err, errlen);
        return req->grammar ? 0 : -1;
    }
    if (strcmp(t, "json_schema") != 0) {
        snprintf(err, errlen, "'response_format.type' must be \"text\", \"json_object\" or \"json_schema\"");
        return -1;
    }
    cJSON *js = cJSON_GetObjectItemCaseSensitive(rf, "json_schema");
    cJSON *schema = cJSON_GetObjectItemCaseSensitive(js, "schema");
    if (!cJSON_IsObject(js) || !cJSON_IsObject(schema)) {
        snprintf(err, errlen, "'response_format.json_schema' must be an object with an object 'schema'");
        return -1;
    }
    if (openai_check_fields(js, js_fields, "response_format.json_schema", err, errlen)) return -1;
    char *text = cJSON_PrintUnformatted(schema);
    if (!text) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    char why[400];
    req->grammar = json_grammar_from_schema(text, strlen(text), why, sizeof why);
    free(text);
    if (!req->grammar) {
        snprintf(err, errlen, "response_format.json_schema.schema: %s", why);
        return -1;
    }
    return 0;
}

/* Reads chat messages: each a string role and a content that is a string,
 * null, or an array of {type: "text", text} parts (joined). Rendering waits
 * until the node that runs the model is known: it owns the chat template. */
static int parse_messages(cJSON *messages, openai_request *req, char *err, size_t errlen)
{
    int n = cJSON_GetArraySize(messages);
    if (!cJSON_IsArray(messages) || n == 0 || n > OPENAI_MAX_MESSAGES) {
        snprintf(err, errlen, "'messages' must be a non-empty array (at most %d messages)", OPENAI_MAX_MESSAGES);
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
        if (openai_check_fields(msg, openai_known_fields(OPENAI_FIELDS_MESSAGE), "a message", err, errlen))
            return -1;
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
        char *json;
        if (tools_message_json(msg, &json, err, errlen)) return -1;
        m->json = json; /* assistant tool_calls, a tool result's tool_call_id */
    }
    return 0;
}

/* Parses a completion or chat request body. Returns 0, or -1 with a message
 * (then nothing is left to free). */
int openai_parse_request(const char *body, size_t len, int chat, openai_request *req, char *err,
                         size_t errlen)
{
    memset(req, 0, sizeof *req);
    req->chat = chat;
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
    if (openai_check_fields(root, openai_known_fields(chat ? OPENAI_FIELDS_CHAT : OPENAI_FIELDS_COMPLETION),
                            NULL, err, errlen))
        goto done;

    if (chat) {
        if (parse_messages(cJSON_GetObjectItemCaseSensitive(root, "messages"), req, err, errlen)) goto done;
        if (tools_parse_request(root, &req->tools, err, errlen)) goto done;
        /* vLLM's name: the answer continues the last (assistant) message,
         * rendered open (an assistant prefill, as Anthropic's API has it). */
        if (openai_read_bool(root, "continue_final_message", &req->continue_final, err, errlen)) goto done;
        const chat_message *last = &req->msgs[req->n_msgs - 1];
        if (req->continue_final && (strcmp(last->role, "assistant") != 0 || last->json)) {
            snprintf(err, errlen, "'continue_final_message' needs the last message to be an assistant turn "
                     "with text content only (the text the answer continues)");
            goto done;
        }
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
    if (opt_number(root, "n", 1, OPENAI_MAX_CHOICES, &n, err, errlen) || n != floor(n)) {
        snprintf(err, errlen, "'n' must be an integer between 1 and %d", OPENAI_MAX_CHOICES);
        goto done;
    }
    req->n_choices = (int)n;
    if (parse_stop(cJSON_GetObjectItemCaseSensitive(root, "stop"), s, err, errlen)) goto done;
    if (parse_response_format(cJSON_GetObjectItemCaseSensitive(root, "response_format"), req, err, errlen))
        goto done;
    er->grammar = req->grammar;
    if (parse_logit_bias(cJSON_GetObjectItemCaseSensitive(root, "logit_bias"), s, &req->max_id, err, errlen))
        goto done;

    /* Log-probabilities. Completions (legacy): logprobs = N alternatives,
     * 0..20 (OpenAI allows 5; lm-evaluation-harness asks for 1); echo.
     * Chat: logprobs = true, top_logprobs = N. */
    if (chat) {
        if (openai_read_bool(root, "logprobs", &er->logprobs, err, errlen)) goto done;
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
        if (openai_read_bool(root, "echo", &req->echo, err, errlen)) goto done;
        er->echo_logprobs = req->echo && er->logprobs;
        /* A string prompt's special-token texts ("<|im_start|>", "</s>")
         * become those tokens, as llama.cpp's server does, so that prompts
         * rendered by the caller work; "parse_special": false keeps them text. */
        er->parse_special = 1;
        if (openai_read_bool(root, "parse_special", &er->parse_special, err, errlen)) goto done;
    }
    if (openai_read_bool(root, "stream", &req->stream, err, errlen)) goto done;
    cJSON *so = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
    if (so && !cJSON_IsNull(so)) {
        if (!cJSON_IsObject(so) || openai_read_bool(so, "include_usage", &req->include_usage, err, errlen) ||
            openai_read_bool(so, "prompt_usage", &req->prompt_usage, err, errlen)) {
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
    if (rc != 0) openai_request_free(req);
    return rc;
}

int openai_request_render_chat(openai_request *req, const engine_model *em, char *err, size_t errlen)
{
    int parse_special = 0;
    if (req->tools) {
        json_grammar *call = NULL;
        if (tools_render(req->tools, em, req->msgs, req->n_msgs, req->continue_final, &req->prompt, &req->prompt_len,
                         &parse_special, &call, err, errlen) != 0)
            return -1;
        if (call && req->grammar) {
            json_grammar_free(call);
            snprintf(err, errlen, "'response_format' and a required or named 'tool_choice' cannot be combined");
            return -1;
        }
        if (call) {
            req->grammar = call;
            req->er->grammar = call;
        }
        req->tool_forced = call != NULL;
        if (req->tools->choice != TOOLS_NONE) req->tool_format = engine_chat_tool_format(em);
    } else if (engine_render_chat_tools(em, req->msgs, req->n_msgs, NULL, req->continue_final, &req->prompt,
                                        &req->prompt_len, &parse_special, err, errlen) != 0) {
        return -1;
    }
    req->er->prompt = req->prompt;
    req->er->prompt_len = req->prompt_len;
    req->er->parse_special = parse_special;
    return 0;
}

/* ---- plain answers and errors ---------------------------------------------*/

char *openai_error_json(const char *message, const char *type, const char *code)
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

void openai_send_json(api_sink *sink, int status, cJSON *body)
{
    char *text = cJSON_PrintUnformatted(body);
    sink->ops->begin(sink, status, "application/json");
    if (text) sink->ops->write(sink, text, strlen(text));
    sink->ops->end(sink);
    free(text);
}

void openai_send_error(api_counters *counters, api_sink *sink, int status, const char *code,
                       const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *type = status == 404 ? "not_found_error" : status == 429 ? "rate_limit_error"
                     : status < 500 ? "invalid_request_error" : "server_error";
    if (status < 500) counters->bad_requests++;
    else counters->failed++;
    log_debug("api", "%d %s", status, msg);
    char *body = openai_error_json(msg, type, code);
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

void openai_sse_error_and_done(api_sink *sink, const char *message)
{
    char *body = openai_error_json(message, "server_error", NULL);
    char line[1024];
    int n = snprintf(line, sizeof line, "data: %s\n\n", body ? body : "{}");
    sink->ops->write(sink, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    sink->ops->write(sink, sse_done, sizeof sse_done - 1);
    free(body);
}

void openai_send_model_list(api_sink *sink, const char *const *ids, int n)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(root, "data");
    for (int i = 0; i < n; i++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "id", ids[i]);
        cJSON_AddStringToObject(m, "object", "model");
        cJSON_AddNumberToObject(m, "created", 0);
        cJSON_AddStringToObject(m, "owned_by", "llmesh");
        cJSON_AddItemToArray(data, m);
    }
    openai_send_json(sink, 200, root);
    cJSON_Delete(root);
}

/* ---- completions and chat completions -------------------------------------*/

void openai_answer_init(openai_answer *ans, api_sink *sink, const char *model, const char *id_prefix,
                        uint64_t serial)
{
    ans->sink = sink;
    ans->created = (long)time(NULL);
    snprintf(ans->model, sizeof ans->model, "%s", model);
    snprintf(ans->id, sizeof ans->id, "%s-%016llx", id_prefix,
             (unsigned long long)(serial * 0x9E3779B97F4A7C15ull ^ (uint64_t)ans->created));
}

static void choice_state_free(openai_choice_state *st)
{
    cJSON_Delete(st->done);
    free(st->text);
    free(st->toks);
    memset(st, 0, sizeof *st);
}

void openai_answer_free(openai_answer *ans)
{
    choice_state_free(&ans->cur);
    for (int i = 0; i < OPENAI_MAX_CHOICES; i++) choice_state_free(&ans->saved[i]);
    free(ans->echo_text);
}

void openai_answer_select(openai_answer *ans, int i)
{
    if (i < 0 || i >= OPENAI_MAX_CHOICES || i == ans->choice) return;
    ans->saved[ans->choice] = ans->cur;
    ans->cur = ans->saved[i];
    memset(&ans->saved[i], 0, sizeof ans->saved[i]);
    ans->choice = i;
}

int openai_answer_prepare(openai_answer *ans, const openai_request *req, engine_model *em)
{
    ans->chat = req->chat;
    ans->stream = req->stream;
    ans->engine = em;
    ans->logprobs = req->er->logprobs;
    ans->top_logprobs = req->er->top_logprobs;
    ans->include_usage = req->include_usage;
    ans->prompt_usage = req->prompt_usage;
    ans->tool_format = req->tool_format;
    ans->tool_forced = req->tool_forced;
    ans->tools_parallel = req->tools ? req->tools->parallel : 1;
    ans->n_choices = req->n_choices > 0 ? req->n_choices : 1;
    ans->n_stop = req->er->sampling.n_stop;
    memcpy(ans->stop, req->er->sampling.stop, sizeof ans->stop);
    if (req->echo) {
        char err[512];
        size_t n;
        ans->echo_text = req->ids ? engine_detokenize(em, req->ids, req->n_ids, &n, err, sizeof err)
                                  : strdup(req->prompt);
        if (!ans->echo_text) return -1;
    }
    return 0;
}

static cJSON *chunk_object(openai_answer *ans)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", ans->id);
    cJSON_AddStringToObject(o, "object", ans->chat ? "chat.completion.chunk" : "text_completion");
    cJSON_AddNumberToObject(o, "created", (double)ans->created);
    cJSON_AddStringToObject(o, "model", ans->model);
    return o;
}

/* A token's text for logprobs: its bytes made valid UTF-8 (a token holding
 * part of a character shows U+FFFD there; the exact bytes are in chat's
 * "bytes"). Returns a malloc'ed string and its raw bytes in *raw (malloc'ed,
 * *raw_len bytes) when raw is not NULL. */
static char *token_string(const openai_answer *ans, int32_t id, unsigned char **raw, size_t *raw_len)
{
    char buf[256];
    int n = engine_token_bytes(ans->engine, id, buf, sizeof buf);
    if (n < 0) n = 0;
    char *bytes = buf;
    if (n > (int)sizeof buf) {
        bytes = malloc((size_t)n);
        if (!bytes) return NULL;
        engine_token_bytes(ans->engine, id, bytes, (size_t)n);
    }
    char *out = malloc((size_t)n * 3 + 1);
    if (out) engine_utf8_sanitize(bytes, (size_t)n, out);
    if (raw) {
        *raw = malloc((size_t)n + 1);
        if (*raw) memcpy(*raw, bytes, (size_t)n);
        *raw_len = (size_t)n;
    }
    if (bytes != buf) free(bytes);
    return out;
}

/* Code points in a valid UTF-8 string: OpenAI's text_offset counts
 * characters, not bytes. */
static long utf8_chars(const char *s)
{
    long n = 0;
    for (; *s; s++) n += ((unsigned char)*s & 0xc0) != 0x80;
    return n;
}

/* JSON has no infinities: a token the model gives no chance gets -9999. */
static double json_logprob(float lp) { return lp > -9999.0f ? (double)lp : -9999.0; }

/* Completions' legacy logprobs object for tokens t[0, n): tokens,
 * token_logprobs, top_logprobs, text_offset. Offsets are characters into the
 * choice's text; ans->cur.text_offset carries on across streamed chunks. */
static cJSON *completion_logprobs(openai_answer *ans, const engine_token *t, int n)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *tokens = cJSON_AddArrayToObject(o, "tokens");
    cJSON *lps = cJSON_AddArrayToObject(o, "token_logprobs");
    cJSON *tops = cJSON_AddArrayToObject(o, "top_logprobs");
    cJSON *offsets = cJSON_AddArrayToObject(o, "text_offset");
    for (int i = 0; i < n; i++) {
        if (!t[i].prompt && !ans->cur.past_prompt) {
            /* The completion starts after the echoed prompt text (whose
             * tokens' strings need not add up to it, e.g. a BOS). */
            ans->cur.past_prompt = 1;
            if (ans->echo_text) ans->cur.text_offset = utf8_chars(ans->echo_text);
        }
        char *s = token_string(ans, t[i].id, NULL, NULL);
        cJSON_AddItemToArray(tokens, cJSON_CreateString(s ? s : ""));
        cJSON_AddItemToArray(offsets, cJSON_CreateNumber((double)ans->cur.text_offset));
        ans->cur.text_offset += s ? utf8_chars(s) : 0;
        free(s);
        if (isnan(t[i].logprob)) {
            cJSON_AddItemToArray(lps, cJSON_CreateNull());
            cJSON_AddItemToArray(tops, cJSON_CreateNull());
            continue;
        }
        cJSON_AddItemToArray(lps, cJSON_CreateNumber(json_logprob(t[i].logprob)));
        cJSON *top = cJSON_CreateObject();
        for (int k = 0; k < t[i].n_top; k++) {
            char *ks = token_string(ans, t[i].top[k].id, NULL, NULL);
            /* Two ids can print the same: keep the first, the more likely. */
            if (ks && !cJSON_GetObjectItemCaseSensitive(top, ks))
                cJSON_AddNumberToObject(top, ks, json_logprob(t[i].top[k].logprob));
            free(ks);
        }
        cJSON_AddItemToArray(tops, top);
    }
    return o;
}

/* One chat logprobs entry: {token, logprob, bytes}. */
static cJSON *chat_logprob_entry(const openai_answer *ans, int32_t id, float logprob)
{
    cJSON *e = cJSON_CreateObject();
    unsigned char *raw = NULL;
    size_t raw_len = 0;
    char *s = token_string(ans, id, &raw, &raw_len);
    cJSON_AddStringToObject(e, "token", s ? s : "");
    cJSON_AddNumberToObject(e, "logprob", json_logprob(logprob));
    cJSON *bytes = cJSON_AddArrayToObject(e, "bytes");
    for (size_t i = 0; raw && i < raw_len; i++) cJSON_AddItemToArray(bytes, cJSON_CreateNumber(raw[i]));
    free(s);
    free(raw);
    return e;
}

/* Chat's logprobs object {content: [...]} for tokens t[0, n). */
static cJSON *chat_logprobs(const openai_answer *ans, const engine_token *t, int n)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *content = cJSON_AddArrayToObject(o, "content");
    for (int i = 0; i < n; i++) {
        cJSON *e = chat_logprob_entry(ans, t[i].id, t[i].logprob);
        cJSON *top = cJSON_AddArrayToObject(e, "top_logprobs");
        for (int k = 0; k < t[i].n_top && k < ans->top_logprobs; k++)
            cJSON_AddItemToArray(top, chat_logprob_entry(ans, t[i].top[k].id, t[i].top[k].logprob));
        cJSON_AddItemToArray(content, e);
    }
    return o;
}

/* The logprobs member of a choice for tokens t[0, n): null when not asked. */
static void add_logprobs(openai_answer *ans, cJSON *choice, const engine_token *t, int n)
{
    if (!ans->logprobs) cJSON_AddNullToObject(choice, "logprobs");
    else if (ans->chat) cJSON_AddItemToObject(choice, "logprobs", chat_logprobs(ans, t, n));
    else cJSON_AddItemToObject(choice, "logprobs", completion_logprobs(ans, t, n));
}

/* llama-server's `timings` (its field names): the prompt tokens evaluated
 * (prompt_n: the cached ones not; with several choices, over all of them:
 * the prompt once and each other choice's last token) and their time, the
 * generated tokens and theirs, and the rates. Times are the engine's: they leave out the queue and HTTP. */
static void add_timings(cJSON *o, const engine_result *r, int prompt_n)
{
    cJSON *t = cJSON_AddObjectToObject(o, "timings");
    int predicted_n = r->completion_tokens;
    cJSON_AddNumberToObject(t, "cache_n", r->cached_tokens);
    cJSON_AddNumberToObject(t, "prompt_n", prompt_n);
    cJSON_AddNumberToObject(t, "prompt_ms", r->prompt_ms);
    cJSON_AddNumberToObject(t, "prompt_per_token_ms", prompt_n > 0 ? r->prompt_ms / prompt_n : 0);
    cJSON_AddNumberToObject(t, "prompt_per_second", r->prompt_ms > 0 ? prompt_n * 1e3 / r->prompt_ms : 0);
    cJSON_AddNumberToObject(t, "predicted_n", predicted_n);
    cJSON_AddNumberToObject(t, "predicted_ms", r->predicted_ms);
    cJSON_AddNumberToObject(t, "predicted_per_token_ms", predicted_n > 0 ? r->predicted_ms / predicted_n : 0);
    cJSON_AddNumberToObject(t, "predicted_per_second",
                            r->predicted_ms > 0 ? predicted_n * 1e3 / r->predicted_ms : 0);
    if (r->n_stages <= 0) return;
    /* A split model: where the request's time went, stage by stage. */
    cJSON *stages = cJSON_AddArrayToObject(t, "stages");
    for (int i = 0; i < r->n_stages; i++) {
        const engine_stage_time *st = &r->stages[i];
        cJSON *so = cJSON_CreateObject();
        cJSON_AddStringToObject(so, "node", st->node);
        cJSON *layers = cJSON_AddArrayToObject(so, "layers");
        cJSON_AddItemToArray(layers, cJSON_CreateNumber(st->first));
        cJSON_AddItemToArray(layers, cJSON_CreateNumber(st->end));
        cJSON_AddNumberToObject(so, "compute_ms", st->compute_ms);
        cJSON_AddNumberToObject(so, "wait_ms", st->wait_ms);
        cJSON_AddItemToArray(stages, so);
    }
    cJSON_AddNumberToObject(t, "hop_ms", r->hop_ms);
}

static void add_usage(cJSON *o, const engine_result *r);

/* One streamed choice: text (may be NULL for the role-only first chat chunk),
 * the tokens it carries and an optional finish reason. */
static void send_stream_chunk(openai_answer *ans, const char *text, size_t len, const engine_token *toks,
                              int n_toks, const char *finish, int role)
{
    cJSON *o = chunk_object(ans);
    cJSON *choices = cJSON_AddArrayToObject(o, "choices");
    cJSON *choice = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, choice);
    cJSON_AddNumberToObject(choice, "index", ans->choice);
    char *copy = NULL;
    if (text) {
        copy = malloc(len + 1);
        if (copy) { memcpy(copy, text, len); copy[len] = 0; }
    }
    if (ans->chat) {
        cJSON *delta = cJSON_AddObjectToObject(choice, "delta");
        if (role) cJSON_AddStringToObject(delta, "role", "assistant");
        if (copy) cJSON_AddStringToObject(delta, "content", copy);
    } else {
        cJSON_AddStringToObject(choice, "text", copy ? copy : "");
    }
    if (n_toks > 0) add_logprobs(ans, choice, toks, n_toks);
    else cJSON_AddNullToObject(choice, "logprobs");
    if (finish) cJSON_AddStringToObject(choice, "finish_reason", finish);
    else cJSON_AddNullToObject(choice, "finish_reason");
    if (finish && ans->stopped_by) cJSON_AddStringToObject(choice, "stop_reason", ans->stopped_by);
    if (finish && ans->result) add_timings(o, ans->result, ans->prompt_evaluated);
    if (ans->prompt_usage && !ans->prompt_usage_sent && ans->prompt_known > 0) {
        /* stream_options.prompt_usage: the prompt's count in the first
         * chunk (serve/anthropic.c's message_start needs it then) */
        ans->prompt_usage_sent = 1;
        engine_result r = {.prompt_tokens = ans->prompt_known, .cached_tokens = ans->prompt_known_cached};
        add_usage(o, &r);
    }
    sse_send(ans->sink, o);
    cJSON_Delete(o);
    free(copy);
}

/* A streamed choice's first chunks: chat's role, and the echoed prompt
 * when it does not wait for its tokens. */
static void choice_begin(openai_answer *ans)
{
    if (!ans->stream || ans->cur.begun) return;
    ans->cur.begun = 1;
    if (ans->chat) send_stream_chunk(ans, NULL, 0, NULL, 0, NULL, 1);
    if (ans->echo_text && !ans->logprobs) { /* with logprobs it goes out with the prompt's tokens */
        ans->cur.echo_sent = 1;
        send_stream_chunk(ans, ans->echo_text, strlen(ans->echo_text), NULL, 0, NULL, 0);
    }
}

void openai_answer_begin_stream(openai_answer *ans)
{
    ans->sink->ops->begin(ans->sink, 200, "text/event-stream");
    choice_begin(ans);
}

void openai_answer_output(openai_answer *ans, const char *text, size_t len, const engine_token *toks,
                          int n_toks)
{
    choice_begin(ans);
    if (ans->stream && ans->tool_format != ENGINE_TOOLS_NONE) {
        /* Tools: content goes out up to where a call may begin; the rest
         * waits for the end (openai_answer_finish). */
        if (len) append_text(&ans->cur.text, &ans->cur.text_len, &ans->cur.text_cap, text, len);
        size_t upto = tools_stream_release(ans->tool_format, ans->tool_forced, ans->cur.text ? ans->cur.text : "",
                                           ans->cur.text_len);
        if (upto > ans->cur.released) {
            send_stream_chunk(ans, ans->cur.text + ans->cur.released, upto - ans->cur.released, toks, n_toks, NULL, 0);
            ans->cur.released = upto;
        }
        return;
    }
    if (ans->stream) {
        /* The echoed prompt goes out with its tokens, in the first chunk. */
        if (ans->echo_text && !ans->cur.echo_sent && n_toks > 0 && toks[0].prompt) {
            ans->cur.echo_sent = 1;
            send_stream_chunk(ans, ans->echo_text, strlen(ans->echo_text), toks, n_toks, NULL, 0);
        } else {
            send_stream_chunk(ans, text, len, toks, n_toks, NULL, 0);
        }
        return;
    }
    if (len) append_text(&ans->cur.text, &ans->cur.text_len, &ans->cur.text_cap, text, len);
    if (n_toks > 0) {
        if (ans->cur.n_toks + n_toks > ans->cur.toks_cap) {
            int cap = ans->cur.toks_cap ? ans->cur.toks_cap : 64;
            while (cap < ans->cur.n_toks + n_toks) cap *= 2;
            engine_token *p = realloc(ans->cur.toks, sizeof *p * (size_t)cap);
            if (!p) return;
            ans->cur.toks = p;
            ans->cur.toks_cap = cap;
        }
        memcpy(ans->cur.toks + ans->cur.n_toks, toks, sizeof *toks * (size_t)n_toks);
        ans->cur.n_toks += n_toks;
    }
}

static void add_usage(cJSON *o, const engine_result *r)
{
    cJSON *usage = cJSON_AddObjectToObject(o, "usage");
    cJSON_AddNumberToObject(usage, "prompt_tokens", r->prompt_tokens);
    cJSON_AddNumberToObject(usage, "completion_tokens", r->completion_tokens);
    cJSON_AddNumberToObject(usage, "total_tokens", r->prompt_tokens + r->completion_tokens);
    cJSON *details = cJSON_AddObjectToObject(usage, "prompt_tokens_details");
    cJSON_AddNumberToObject(details, "cached_tokens", r->cached_tokens);
}

/* A call's id: 9 letters and digits from a hash of the answer's id and the
 * call's index, so ids differ across answers and calls. Nine alphanumerics
 * because Mistral's template refuses any other id when the call comes back
 * in the history (OpenAI's own ids are free-form, so no client minds). */
static void call_id(const openai_answer *ans, int i, char *out, size_t cap)
{
    static const char digits[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    uint64_t h = 1469598103934665603ull;
    for (const char *p = ans->id; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
    h = (h ^ (uint64_t)i) * 1099511628211ull;
    char id[10];
    for (int k = 0; k < 9; k++, h /= 62) id[k] = digits[h % 62];
    id[9] = 0;
    snprintf(out, cap, "%s", id);
}

/* Streamed tool calls, as OpenAI streams them: per call a delta with its
 * index, id, type and name (arguments ""), then the arguments in fragments. */
#define TOOL_ARGS_FRAGMENT 32
static void send_tool_call_chunks(openai_answer *ans, const tools_call *calls, int n)
{
    for (int i = 0; i < n; i++) {
        size_t alen = strlen(calls[i].arguments);
        for (size_t off = 0, first = 1; first || off < alen; first = 0) {
            cJSON *o = chunk_object(ans);
            cJSON *choice = cJSON_CreateObject();
            cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "choices"), choice);
            cJSON_AddNumberToObject(choice, "index", ans->choice);
            cJSON *tc = cJSON_CreateObject();
            cJSON_AddItemToArray(cJSON_AddArrayToObject(cJSON_AddObjectToObject(choice, "delta"), "tool_calls"), tc);
            cJSON_AddNumberToObject(tc, "index", i);
            cJSON *fn;
            if (first) {
                char id[80];
                call_id(ans, i, id, sizeof id);
                cJSON_AddStringToObject(tc, "id", id);
                cJSON_AddStringToObject(tc, "type", "function");
                fn = cJSON_AddObjectToObject(tc, "function");
                cJSON_AddStringToObject(fn, "name", calls[i].name);
                cJSON_AddStringToObject(fn, "arguments", "");
            } else {
                size_t k = alen - off < TOOL_ARGS_FRAGMENT ? alen - off : TOOL_ARGS_FRAGMENT;
                /* never cut a UTF-8 character */
                while (off + k < alen && ((unsigned char)calls[i].arguments[off + k] & 0xc0) == 0x80) k++;
                char piece[TOOL_ARGS_FRAGMENT + 8];
                memcpy(piece, calls[i].arguments + off, k);
                piece[k] = 0;
                fn = cJSON_AddObjectToObject(tc, "function");
                cJSON_AddStringToObject(fn, "arguments", piece);
                off += k;
            }
            cJSON_AddNullToObject(choice, "logprobs");
            cJSON_AddNullToObject(choice, "finish_reason");
            sse_send(ans->sink, o);
            cJSON_Delete(o);
        }
    }
}

/* The message of a chat answer with tools: content (null when it was all
 * calls) and tool_calls. Returns the finish reason. */
static const char *tool_message(openai_answer *ans, cJSON *msg, const tools_call *calls, int n,
                                const char *content, const char *finish)
{
    if (content) cJSON_AddStringToObject(msg, "content", content);
    else cJSON_AddNullToObject(msg, "content");
    if (n == 0) return finish;
    cJSON *list = cJSON_AddArrayToObject(msg, "tool_calls");
    for (int i = 0; i < n; i++) {
        char id[80];
        call_id(ans, i, id, sizeof id);
        cJSON *c = cJSON_CreateObject();
        cJSON_AddStringToObject(c, "id", id);
        cJSON_AddStringToObject(c, "type", "function");
        cJSON *fn = cJSON_AddObjectToObject(c, "function");
        cJSON_AddStringToObject(fn, "name", calls[i].name);
        cJSON_AddStringToObject(fn, "arguments", calls[i].arguments);
        cJSON_AddItemToArray(list, c);
    }
    return "tool_calls";
}

/* The finished choice's object for a JSON answer. */
static cJSON *final_choice(openai_answer *ans, const char *finish, const tools_call *calls, int n_calls,
                           const char *content)
{
    cJSON *choice = cJSON_CreateObject();
    cJSON_AddNumberToObject(choice, "index", ans->choice);
    if (ans->echo_text) { /* echo: the prompt, then the completion */
        char *whole = NULL;
        size_t wlen = 0, wcap = 0;
        append_text(&whole, &wlen, &wcap, ans->echo_text, strlen(ans->echo_text));
        if (ans->cur.text) append_text(&whole, &wlen, &wcap, ans->cur.text, ans->cur.text_len);
        free(ans->cur.text);
        ans->cur.text = whole;
        ans->cur.text_len = wlen;
        ans->cur.text_cap = wcap;
    }
    const char *text = ans->cur.text ? ans->cur.text : "";
    if (ans->chat) {
        cJSON *msg = cJSON_AddObjectToObject(choice, "message");
        cJSON_AddStringToObject(msg, "role", "assistant");
        if (ans->tool_format != ENGINE_TOOLS_NONE) finish = tool_message(ans, msg, calls, n_calls, content, finish);
        else cJSON_AddStringToObject(msg, "content", text);
    } else {
        cJSON_AddStringToObject(choice, "text", text);
    }
    add_logprobs(ans, choice, ans->cur.toks, ans->cur.n_toks);
    cJSON_AddStringToObject(choice, "finish_reason", finish);
    if (ans->stopped_by) cJSON_AddStringToObject(choice, "stop_reason", ans->stopped_by);
    return choice;
}

int openai_answer_finish(openai_answer *ans, const engine_result *r)
{
    tools_call *calls = NULL;
    int n_calls = 0, n_parsed = 0;
    char *content = NULL;
    const char *finish = r->finish_reason ? r->finish_reason : "stop";
    ans->stopped_by = r->stop_string > 0 && r->stop_string <= ans->n_stop ? ans->stop[r->stop_string - 1] : NULL;
    if (ans->tool_format != ENGINE_TOOLS_NONE) {
        if (tools_parse_output(ans->tool_format, ans->tool_forced, ans->cur.text ? ans->cur.text : "",
                               ans->cur.text_len, &calls, &n_parsed, &content) != 0)
            log_warn("api", "out of memory parsing tool calls");
        n_calls = n_parsed;
        if (n_calls > 1 && !ans->tools_parallel) n_calls = 1; /* parallel_tool_calls: false */
        if (n_calls && !strcmp(finish, "stop")) finish = "tool_calls";
    }
    /* Usage over the choices: the prompt once (they share its keys and
     * values), every choice's completion. */
    ans->prompt_tokens = r->prompt_tokens;
    ans->completion_tokens += r->completion_tokens;
    ans->prompt_evaluated += r->prompt_tokens - r->cached_tokens;
    if (ans->choice == 0) {
        ans->cached_tokens = r->cached_tokens;
        ans->prompt_ms = r->prompt_ms;
    }
    ans->predicted_ms += r->predicted_ms;
    /* Split: each choice's stage times add up (the stages are those of the
     * last choice's pipeline). */
    if (r->n_stages > 0) {
        for (int i = 0; i < r->n_stages; i++) {
            double compute = ans->n_stages == r->n_stages ? ans->stages[i].compute_ms : 0;
            double wait = ans->n_stages == r->n_stages ? ans->stages[i].wait_ms : 0;
            ans->stages[i] = r->stages[i];
            ans->stages[i].compute_ms += compute;
            ans->stages[i].wait_ms += wait;
        }
        ans->n_stages = r->n_stages;
        ans->hop_ms += r->hop_ms;
    }
    engine_result total = {.prompt_tokens = ans->prompt_tokens, .completion_tokens = ans->completion_tokens,
                           .finish_reason = finish, .cached_tokens = ans->cached_tokens,
                           .prompt_ms = ans->prompt_ms, .predicted_ms = ans->predicted_ms,
                           .n_stages = ans->n_stages, .hop_ms = ans->hop_ms};
    memcpy(total.stages, ans->stages, sizeof total.stages[0] * (size_t)ans->n_stages);
    choice_begin(ans);
    ans->cur.finished = 1;
    int last = ++ans->n_finished >= ans->n_choices;
    if (ans->stream) {
        if (ans->tool_format != ENGINE_TOOLS_NONE) {
            /* What was held back: content not yet sent, then the calls. */
            size_t clen = content ? strlen(content) : 0;
            if (!n_calls) clen = ans->cur.text_len; /* no calls: all of the text is content */
            if (clen > ans->cur.released)
                send_stream_chunk(ans, ans->cur.text + ans->cur.released, clen - ans->cur.released, NULL, 0, NULL, 0);
            send_tool_call_chunks(ans, calls, n_calls);
        } else if (ans->echo_text && !ans->cur.echo_sent) {
            send_stream_chunk(ans, ans->echo_text, strlen(ans->echo_text), NULL, 0, NULL, 0);
        }
        ans->result = last ? &total : NULL; /* the last finish chunk carries the timings */
        send_stream_chunk(ans, NULL, 0, NULL, 0, finish, 0);
        ans->result = NULL;
        tools_calls_free(calls, n_parsed);
        free(content);
        if (!last) return 1;
        if (ans->include_usage) { /* OpenAI: one more chunk, empty choices, with usage */
            cJSON *o = chunk_object(ans);
            cJSON_AddArrayToObject(o, "choices");
            add_usage(o, &total);
            sse_send(ans->sink, o);
            cJSON_Delete(o);
        }
        ans->sink->ops->write(ans->sink, sse_done, sizeof sse_done - 1);
        ans->sink->ops->end(ans->sink);
        return 0;
    }
    ans->cur.done = final_choice(ans, finish, calls, n_calls, content);
    tools_calls_free(calls, n_parsed);
    free(content);
    if (!last) return 1;
    cJSON *choices = cJSON_CreateArray();
    for (int i = 0; i < ans->n_choices; i++) { /* in index order, whatever order they ended in */
        openai_answer_select(ans, i);
        cJSON_AddItemToArray(choices, ans->cur.done);
        ans->cur.done = NULL;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", ans->id);
    cJSON_AddStringToObject(o, "object", ans->chat ? "chat.completion" : "text_completion");
    cJSON_AddNumberToObject(o, "created", (double)ans->created);
    cJSON_AddStringToObject(o, "model", ans->model);
    cJSON_AddItemToObject(o, "choices", choices);
    add_usage(o, &total);
    add_timings(o, &total, ans->prompt_evaluated);
    openai_send_json(ans->sink, 200, o);
    cJSON_Delete(o);
    return 0;
}
