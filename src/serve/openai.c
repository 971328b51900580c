/* openai.c: OpenAI's wire dialect: the JSON objects and SSE chunks of
 * /v1/completions and /v1/chat/completions answers (with log-probabilities,
 * echo and usage), model lists and error bodies. See openai.h.
 *
 * Error shape: {"error":{"message","type","param","code"}}; a stream that
 * fails after it started ends with an error event and "data: [DONE]". */
#include "serve/openai.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
    const char *type = status == 404 ? "not_found_error"
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

void openai_answer_free(openai_answer *ans)
{
    free(ans->text);
    free(ans->echo_text);
    free(ans->toks);
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
 * choice's text; ans->text_offset carries on across streamed chunks. */
static cJSON *completion_logprobs(openai_answer *ans, const engine_token *t, int n)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *tokens = cJSON_AddArrayToObject(o, "tokens");
    cJSON *lps = cJSON_AddArrayToObject(o, "token_logprobs");
    cJSON *tops = cJSON_AddArrayToObject(o, "top_logprobs");
    cJSON *offsets = cJSON_AddArrayToObject(o, "text_offset");
    for (int i = 0; i < n; i++) {
        if (!t[i].prompt && !ans->past_prompt) {
            /* The completion starts after the echoed prompt text (whose
             * tokens' strings need not add up to it, e.g. a BOS). */
            ans->past_prompt = 1;
            if (ans->echo_text) ans->text_offset = utf8_chars(ans->echo_text);
        }
        char *s = token_string(ans, t[i].id, NULL, NULL);
        cJSON_AddItemToArray(tokens, cJSON_CreateString(s ? s : ""));
        cJSON_AddItemToArray(offsets, cJSON_CreateNumber((double)ans->text_offset));
        ans->text_offset += s ? utf8_chars(s) : 0;
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

/* One streamed choice: text (may be NULL for the role-only first chat chunk),
 * the tokens it carries and an optional finish reason. */
static void send_stream_chunk(openai_answer *ans, const char *text, size_t len, const engine_token *toks,
                              int n_toks, const char *finish, int role)
{
    cJSON *o = chunk_object(ans);
    cJSON *choices = cJSON_AddArrayToObject(o, "choices");
    cJSON *choice = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, choice);
    cJSON_AddNumberToObject(choice, "index", 0);
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
    sse_send(ans->sink, o);
    cJSON_Delete(o);
    free(copy);
}

void openai_answer_begin_stream(openai_answer *ans)
{
    ans->sink->ops->begin(ans->sink, 200, "text/event-stream");
    if (ans->chat) send_stream_chunk(ans, NULL, 0, NULL, 0, NULL, 1);
    if (ans->echo_text && !ans->logprobs) { /* with logprobs it goes out with the prompt's tokens */
        ans->echo_sent = 1;
        send_stream_chunk(ans, ans->echo_text, strlen(ans->echo_text), NULL, 0, NULL, 0);
    }
}

void openai_answer_output(openai_answer *ans, const char *text, size_t len, const engine_token *toks,
                          int n_toks)
{
    if (ans->stream) {
        /* The echoed prompt goes out with its tokens, in the first chunk. */
        if (ans->echo_text && !ans->echo_sent && n_toks > 0 && toks[0].prompt) {
            ans->echo_sent = 1;
            send_stream_chunk(ans, ans->echo_text, strlen(ans->echo_text), toks, n_toks, NULL, 0);
        } else {
            send_stream_chunk(ans, text, len, toks, n_toks, NULL, 0);
        }
        return;
    }
    if (len) append_text(&ans->text, &ans->text_len, &ans->text_cap, text, len);
    if (n_toks > 0) {
        if (ans->n_toks + n_toks > ans->toks_cap) {
            int cap = ans->toks_cap ? ans->toks_cap : 64;
            while (cap < ans->n_toks + n_toks) cap *= 2;
            engine_token *p = realloc(ans->toks, sizeof *p * (size_t)cap);
            if (!p) return;
            ans->toks = p;
            ans->toks_cap = cap;
        }
        memcpy(ans->toks + ans->n_toks, toks, sizeof *toks * (size_t)n_toks);
        ans->n_toks += n_toks;
    }
}

static void add_usage(cJSON *o, const engine_result *r)
{
    cJSON *usage = cJSON_AddObjectToObject(o, "usage");
    cJSON_AddNumberToObject(usage, "prompt_tokens", r->prompt_tokens);
    cJSON_AddNumberToObject(usage, "completion_tokens", r->completion_tokens);
    cJSON_AddNumberToObject(usage, "total_tokens", r->prompt_tokens + r->completion_tokens);
}

void openai_answer_finish(openai_answer *ans, const engine_result *r)
{
    if (ans->stream) {
        if (ans->echo_text && !ans->echo_sent)
            send_stream_chunk(ans, ans->echo_text, strlen(ans->echo_text), NULL, 0, NULL, 0);
        send_stream_chunk(ans, NULL, 0, NULL, 0, r->finish_reason, 0);
        if (ans->include_usage) { /* OpenAI: one more chunk, empty choices, with usage */
            cJSON *o = chunk_object(ans);
            cJSON_AddArrayToObject(o, "choices");
            add_usage(o, r);
            sse_send(ans->sink, o);
            cJSON_Delete(o);
        }
        ans->sink->ops->write(ans->sink, sse_done, sizeof sse_done - 1);
        ans->sink->ops->end(ans->sink);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", ans->id);
    cJSON_AddStringToObject(o, "object", ans->chat ? "chat.completion" : "text_completion");
    cJSON_AddNumberToObject(o, "created", (double)ans->created);
    cJSON_AddStringToObject(o, "model", ans->model);
    cJSON *choices = cJSON_AddArrayToObject(o, "choices");
    cJSON *choice = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, choice);
    cJSON_AddNumberToObject(choice, "index", 0);
    if (ans->echo_text) { /* echo: the prompt, then the completion */
        char *whole = NULL;
        size_t wlen = 0, wcap = 0;
        append_text(&whole, &wlen, &wcap, ans->echo_text, strlen(ans->echo_text));
        if (ans->text) append_text(&whole, &wlen, &wcap, ans->text, ans->text_len);
        free(ans->text);
        ans->text = whole;
    }
    const char *text = ans->text ? ans->text : "";
    if (ans->chat) {
        cJSON *msg = cJSON_AddObjectToObject(choice, "message");
        cJSON_AddStringToObject(msg, "role", "assistant");
        cJSON_AddStringToObject(msg, "content", text);
    } else {
        cJSON_AddStringToObject(choice, "text", text);
    }
    add_logprobs(ans, choice, ans->toks, ans->n_toks);
    cJSON_AddStringToObject(choice, "finish_reason", r->finish_reason ? r->finish_reason : "stop");
    add_usage(o, r);
    openai_send_json(ans->sink, 200, o);
    cJSON_Delete(o);
}
