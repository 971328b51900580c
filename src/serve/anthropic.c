/* anthropic.c: Anthropic's Messages API as a translation onto the OpenAI
 * chat path: request bodies one way, answers (JSON, SSE, errors) the other.
 * See anthropic.h.
 *
 * The request rules (docs/anthropic.md): every field is either translated,
 * ignored by the README's unknown-field rule (metadata, service_tier, and
 * cache_control on a block: hints that cannot change the answer), or
 * refused with 400 naming it. Content blocks other than text, tool_use
 * (assistant turns) and tool_result (user turns) are refused: images and
 * documents too, since the engine runs no vision model. A final assistant
 * turn is Anthropic's "prefill": the answer continues its text (the chat
 * path's continue_final_message). */
#define _GNU_SOURCE /* memmem */
#include "serve/anthropic.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "lib/log.h"
#include "serve/openai.h"

/* An answer's bytes held at once: a whole JSON answer, or SSE bytes that
 * are not yet a whole event. Far above any answer a context can produce. */
#define ANTHROPIC_MAX_HELD (64u << 20)

/* ---- small helpers ----------------------------------------------------------*/

typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} text_buf;

static void text_add(text_buf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->len + n + 1) nc *= 2;
        char *p = realloc(b->p, nc);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = nc;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

/* A block's "type", or NULL (with a message) when it is not a string. */
static const char *block_type(const cJSON *block, const char *where, char *err, size_t errlen)
{
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(block, "type");
    if (!cJSON_IsObject(block) || !cJSON_IsString(type)) {
        snprintf(err, errlen, "each content block in %s must be an object with a string 'type'", where);
        return NULL;
    }
    return type->valuestring;
}

/* One text block ({"type": "text", "text"}), appended to out. */
static int text_block(const cJSON *block, const char *where, text_buf *out, char *err, size_t errlen)
{
    static const char *const text_fields[] = {"type", "text", "cache_control", NULL};
    const char *type = block_type(block, where, err, errlen);
    if (!type) return -1;
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(block, "text");
    if (strcmp(type, "text") != 0 || !cJSON_IsString(text)) {
        snprintf(err, errlen, "%s may only hold text blocks ({\"type\": \"text\", \"text\": ...}), not '%.32s'",
                 where, type);
        return -1;
    }
    if (openai_check_fields(block, text_fields, "a text block", err, errlen)) return -1;
    text_add(out, text->valuestring, strlen(text->valuestring));
    return 0;
}

/* Text content: a string, or an array of text blocks (joined by newlines). */
static int text_of(const cJSON *content, const char *where, text_buf *out, char *err, size_t errlen)
{
    if (cJSON_IsString(content)) {
        text_add(out, content->valuestring, strlen(content->valuestring));
        return 0;
    }
    if (!cJSON_IsArray(content) || cJSON_GetArraySize(content) > ANTHROPIC_MAX_BLOCKS) {
        snprintf(err, errlen, "%s must be a string or an array of at most %d text blocks", where,
                 ANTHROPIC_MAX_BLOCKS);
        return -1;
    }
    const cJSON *block;
    int first = 1;
    cJSON_ArrayForEach(block, content) {
        if (!first) text_add(out, "\n", 1);
        if (text_block(block, where, out, err, errlen)) return -1;
        first = 0;
    }
    return 0;
}

/* A tool_use id as OpenAI's path keeps it: without the "toolu_" this file
 * puts before the chat path's call ids (Mistral's template accepts only
 * its own 9-character ids back). */
static const char *call_id_of(const char *id)
{
    return strncmp(id, "toolu_", 6) == 0 ? id + 6 : id;
}

/* ---- requests -----------------------------------------------------------------*/

/* One message's blocks onto the chat messages: a user turn's tool_result
 * blocks become tool messages (in order, before the turn's text), an
 * assistant turn's tool_use blocks its tool_calls. */
static int translate_message(const cJSON *msg, int last, cJSON *out, char *err, size_t errlen)
{
    static const char *const msg_fields[] = {"role", "content", NULL};
    static const char *const use_fields[] = {"type", "id", "name", "input", "cache_control", NULL};
    static const char *const result_fields[] = {"type", "tool_use_id", "content", "is_error", "cache_control", NULL};
    const cJSON *role = cJSON_GetObjectItemCaseSensitive(msg, "role");
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(msg, "content");
    if (!cJSON_IsObject(msg) || !cJSON_IsString(role) ||
        (strcmp(role->valuestring, "user") != 0 && strcmp(role->valuestring, "assistant") != 0)) {
        snprintf(err, errlen, "each message needs a 'role' of \"user\" or \"assistant\" (the system prompt "
                 "is the top-level 'system')");
        return -1;
    }
    if (openai_check_fields(msg, msg_fields, "a message", err, errlen)) return -1;
    int assistant = role->valuestring[0] == 'a';
    text_buf text = {0};
    cJSON *calls = NULL;
    int n_results = 0;
    if (cJSON_IsString(content)) {
        text_add(&text, content->valuestring, strlen(content->valuestring));
    } else if (cJSON_IsArray(content) && cJSON_GetArraySize(content) <= ANTHROPIC_MAX_BLOCKS) {
        const cJSON *block;
        int n_text = 0;
        cJSON_ArrayForEach(block, content) {
            const char *type = block_type(block, "a message", err, errlen);
            if (!type) goto fail;
            if (!strcmp(type, "text")) {
                if (n_text++) text_add(&text, "\n", 1);
                if (text_block(block, "a message", &text, err, errlen)) goto fail;
            } else if (!strcmp(type, "tool_use") && assistant) {
                const cJSON *id = cJSON_GetObjectItemCaseSensitive(block, "id");
                const cJSON *name = cJSON_GetObjectItemCaseSensitive(block, "name");
                const cJSON *input = cJSON_GetObjectItemCaseSensitive(block, "input");
                if (!cJSON_IsString(id) || !cJSON_IsString(name) || !cJSON_IsObject(input)) {
                    snprintf(err, errlen, "a tool_use block needs a string 'id', a string 'name' and an object 'input'");
                    goto fail;
                }
                if (openai_check_fields(block, use_fields, "a tool_use block", err, errlen)) goto fail;
                char *args = cJSON_PrintUnformatted(input);
                if (!calls) calls = cJSON_CreateArray();
                cJSON *call = cJSON_CreateObject();
                cJSON_AddItemToArray(calls, call);
                cJSON_AddStringToObject(call, "id", call_id_of(id->valuestring));
                cJSON_AddStringToObject(call, "type", "function");
                cJSON *fn = cJSON_AddObjectToObject(call, "function");
                cJSON_AddStringToObject(fn, "name", name->valuestring);
                cJSON_AddStringToObject(fn, "arguments", args ? args : "{}");
                free(args);
            } else if (!strcmp(type, "tool_result") && !assistant) {
                const cJSON *use_id = cJSON_GetObjectItemCaseSensitive(block, "tool_use_id");
                const cJSON *result = cJSON_GetObjectItemCaseSensitive(block, "content");
                const cJSON *is_error = cJSON_GetObjectItemCaseSensitive(block, "is_error");
                if (!cJSON_IsString(use_id) || (is_error && !cJSON_IsNull(is_error) && !cJSON_IsBool(is_error))) {
                    snprintf(err, errlen, "a tool_result block needs a string 'tool_use_id' ('is_error' is a boolean)");
                    goto fail;
                }
                if (openai_check_fields(block, result_fields, "a tool_result block", err, errlen)) goto fail;
                /* The chat templates know no failed result: an error is said
                 * in its text, where the model reads it. */
                text_buf rt = {0};
                if (cJSON_IsTrue(is_error)) text_add(&rt, "Error: ", 7);
                if (result && !cJSON_IsNull(result) && text_of(result, "a tool_result's content", &rt, err, errlen)) {
                    free(rt.p);
                    goto fail;
                }
                cJSON *tool = cJSON_CreateObject();
                cJSON_AddStringToObject(tool, "role", "tool");
                cJSON_AddStringToObject(tool, "tool_call_id", call_id_of(use_id->valuestring));
                cJSON_AddStringToObject(tool, "content", rt.p ? rt.p : "");
                cJSON_AddItemToArray(out, tool);
                free(rt.p);
                n_results++;
            } else {
                snprintf(err, errlen, "content blocks of type '%.32s' are not supported in %s turns (llmesh "
                         "takes text, tool_use in assistant turns and tool_result in user turns)", type,
                         assistant ? "assistant" : "user");
                goto fail;
            }
        }
    } else {
        snprintf(err, errlen, "message 'content' must be a string or an array of at most %d content blocks",
                 ANTHROPIC_MAX_BLOCKS);
        goto fail;
    }
    if (text.oom) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    /* A final assistant turn is a prefill: the answer continues its text
     * (continue_final_message on the chat path). As Anthropic's API: text
     * only, without trailing white space. */
    if (assistant && last) {
        if (calls) {
            snprintf(err, errlen, "the last message is an assistant turn (a prefill) with tool_use blocks: a "
                     "prefill may hold text only");
            goto fail;
        }
        if (text.len > 0 && strchr(" \t\r\n", text.p[text.len - 1])) {
            snprintf(err, errlen, "final assistant content cannot end with trailing whitespace");
            goto fail;
        }
    }
    /* A user turn of tool results alone is those tool messages. */
    if (assistant || text.len > 0 || n_results == 0) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", role->valuestring);
        if (calls && text.len == 0) cJSON_AddNullToObject(m, "content");
        else cJSON_AddStringToObject(m, "content", text.p ? text.p : "");
        if (calls) cJSON_AddItemToObject(m, "tool_calls", calls);
        calls = NULL;
        cJSON_AddItemToArray(out, m);
    }
    free(text.p);
    return 0;
fail:
    free(text.p);
    cJSON_Delete(calls);
    return -1;
}

/* tools: [{name, description?, input_schema}] -> OpenAI functions. A
 * server tool (a "type" other than "custom") runs on Anthropic's side,
 * which llmesh does not have: refused. */
static int translate_tools(const cJSON *tools, cJSON *chat, char *err, size_t errlen)
{
    static const char *const tool_fields[] = {"name", "description", "input_schema", "type", "cache_control", NULL};
    if (!cJSON_IsArray(tools)) {
        snprintf(err, errlen, "'tools' must be an array");
        return -1;
    }
    cJSON *list = cJSON_AddArrayToObject(chat, "tools");
    const cJSON *tool;
    cJSON_ArrayForEach(tool, tools) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(tool, "name");
        const cJSON *desc = cJSON_GetObjectItemCaseSensitive(tool, "description");
        const cJSON *schema = cJSON_GetObjectItemCaseSensitive(tool, "input_schema");
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(tool, "type");
        if (type && !cJSON_IsNull(type) && (!cJSON_IsString(type) || strcmp(type->valuestring, "custom") != 0)) {
            snprintf(err, errlen, "tools of type '%.40s' (Anthropic's server tools) are not supported; give "
                     "client tools: {\"name\", \"description\", \"input_schema\"}",
                     cJSON_IsString(type) ? type->valuestring : "?");
            return -1;
        }
        if (!cJSON_IsObject(tool) || !cJSON_IsString(name) || !cJSON_IsObject(schema) ||
            (desc && !cJSON_IsNull(desc) && !cJSON_IsString(desc))) {
            snprintf(err, errlen, "each tool needs a string 'name' and an object 'input_schema' ('description' "
                     "is a string)");
            return -1;
        }
        if (openai_check_fields(tool, tool_fields, "a tool", err, errlen)) return -1;
        cJSON *t = cJSON_CreateObject();
        cJSON_AddItemToArray(list, t);
        cJSON_AddStringToObject(t, "type", "function");
        cJSON *fn = cJSON_AddObjectToObject(t, "function");
        cJSON_AddStringToObject(fn, "name", name->valuestring);
        if (cJSON_IsString(desc)) cJSON_AddStringToObject(fn, "description", desc->valuestring);
        cJSON_AddItemToObject(fn, "parameters", cJSON_Duplicate(schema, 1));
    }
    return 0;
}

/* tool_choice: auto, any (OpenAI's required), tool (a named function),
 * none; disable_parallel_tool_use is parallel_tool_calls false. */
static int translate_tool_choice(const cJSON *tc, cJSON *chat, char *err, size_t errlen)
{
    static const char *const tc_fields[] = {"type", "name", "disable_parallel_tool_use", NULL};
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(tc, "type");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(tc, "name");
    const cJSON *serial = cJSON_GetObjectItemCaseSensitive(tc, "disable_parallel_tool_use");
    if (!cJSON_IsObject(tc) || !cJSON_IsString(type) || (serial && !cJSON_IsNull(serial) && !cJSON_IsBool(serial))) {
        snprintf(err, errlen, "'tool_choice' must be an object with a string 'type' (\"auto\", \"any\", \"tool\" "
                 "or \"none\")");
        return -1;
    }
    if (openai_check_fields(tc, tc_fields, "tool_choice", err, errlen)) return -1;
    const char *t = type->valuestring;
    if (!strcmp(t, "auto") || !strcmp(t, "none")) {
        cJSON_AddStringToObject(chat, "tool_choice", t);
    } else if (!strcmp(t, "any")) {
        cJSON_AddStringToObject(chat, "tool_choice", "required");
    } else if (!strcmp(t, "tool")) {
        if (!cJSON_IsString(name)) {
            snprintf(err, errlen, "'tool_choice' of type \"tool\" needs the tool's 'name'");
            return -1;
        }
        cJSON *choice = cJSON_AddObjectToObject(chat, "tool_choice");
        cJSON_AddStringToObject(choice, "type", "function");
        cJSON_AddStringToObject(cJSON_AddObjectToObject(choice, "function"), "name", name->valuestring);
    } else {
        snprintf(err, errlen, "'tool_choice.type' must be \"auto\", \"any\", \"tool\" or \"none\"");
        return -1;
    }
    if (cJSON_IsTrue(serial)) cJSON_AddFalseToObject(chat, "parallel_tool_calls");
    return 0;
}

/* A number field in [lo, hi] copied to the chat body (integer: whole). */
static int copy_number(const cJSON *root, const char *name, double lo, double hi, int integer, cJSON *chat,
                       const char *as, char *err, size_t errlen)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < lo || v->valuedouble > hi ||
        (integer && v->valuedouble != floor(v->valuedouble))) {
        snprintf(err, errlen, "'%s' must be %s between %g and %g", name, integer ? "an integer" : "a number", lo, hi);
        return -1;
    }
    cJSON_AddNumberToObject(chat, as, v->valuedouble);
    return 0;
}

int anthropic_translate_request(const char *body, size_t len, int count_tokens, char **chat_out, size_t *chat_len,
                                anthropic_request_info *info, char *err, size_t errlen)
{
    static const char *const message_fields[] = {"model", "messages", "system", "max_tokens", "stop_sequences",
                                                 "temperature", "top_p", "top_k", "stream", "tools",
                                                 "tool_choice", NULL};
    static const char *const count_fields[] = {"model", "messages", "system", "tools", "tool_choice", NULL};
    *chat_out = NULL;
    memset(info, 0, sizeof *info);
    cJSON *root = cJSON_ParseWithLength(body, len);
    cJSON *chat = cJSON_CreateObject();
    int rc = -1;
    if (!root || !cJSON_IsObject(root)) {
        snprintf(err, errlen, root ? "request body must be a JSON object" : "request body is not valid JSON");
        goto done;
    }
    if (!chat) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsString(model) || !model->valuestring[0] || strlen(model->valuestring) >= MESH_MAX_NAME) {
        snprintf(err, errlen, "'model' must be a non-empty string (at most %d bytes)", MESH_MAX_NAME - 1);
        goto done;
    }
    snprintf(info->model, sizeof info->model, "%s", model->valuestring);
    if (openai_check_fields(root, count_tokens ? count_fields : message_fields, NULL, err, errlen)) goto done;
    cJSON_AddStringToObject(chat, "model", model->valuestring);

    /* max_tokens: required, as Anthropic requires it. */
    const cJSON *max = cJSON_GetObjectItemCaseSensitive(root, "max_tokens");
    if (!count_tokens && (!max || cJSON_IsNull(max))) {
        snprintf(err, errlen, "'max_tokens' is required (the most tokens the answer may have)");
        goto done;
    }
    if (count_tokens) cJSON_AddNumberToObject(chat, "max_tokens", 1);
    else if (copy_number(root, "max_tokens", 1, 1e6, 1, chat, "max_tokens", err, errlen)) goto done;
    if (copy_number(root, "temperature", 0, 1, 0, chat, "temperature", err, errlen) ||
        copy_number(root, "top_p", 0, 1, 0, chat, "top_p", err, errlen) ||
        copy_number(root, "top_k", 0, 1e6, 1, chat, "top_k", err, errlen))
        goto done;

    const cJSON *stops = cJSON_GetObjectItemCaseSensitive(root, "stop_sequences");
    if (stops && !cJSON_IsNull(stops)) {
        if (!cJSON_IsArray(stops) || cJSON_GetArraySize(stops) > ENGINE_MAX_STOP) {
            snprintf(err, errlen, "'stop_sequences' must be an array of at most %d strings", ENGINE_MAX_STOP);
            goto done;
        }
        const cJSON *s;
        cJSON_ArrayForEach(s, stops) {
            if (!cJSON_IsString(s) || !s->valuestring[0] || strlen(s->valuestring) > ENGINE_MAX_STOP_BYTES) {
                snprintf(err, errlen, "each of 'stop_sequences' must be a non-empty string of at most %d bytes",
                         ENGINE_MAX_STOP_BYTES);
                goto done;
            }
        }
        if (cJSON_GetArraySize(stops) > 0) cJSON_AddItemToObject(chat, "stop", cJSON_Duplicate(stops, 1));
    }

    const cJSON *stream = cJSON_GetObjectItemCaseSensitive(root, "stream");
    if (stream && !cJSON_IsNull(stream) && !cJSON_IsBool(stream)) {
        snprintf(err, errlen, "'stream' must be a boolean");
        goto done;
    }
    info->stream = cJSON_IsTrue(stream);
    if (info->stream) {
        cJSON_AddTrueToObject(chat, "stream");
        /* the prompt's count comes with the first chunk (message_start has
         * it), all of them with the last (message_delta) */
        cJSON *so = cJSON_AddObjectToObject(chat, "stream_options");
        cJSON_AddTrueToObject(so, "include_usage");
        cJSON_AddTrueToObject(so, "prompt_usage");
    }

    cJSON *msgs = cJSON_AddArrayToObject(chat, "messages");
    const cJSON *system = cJSON_GetObjectItemCaseSensitive(root, "system");
    if (system && !cJSON_IsNull(system)) {
        text_buf st = {0};
        if (text_of(system, "'system'", &st, err, errlen)) {
            free(st.p);
            goto done;
        }
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "system");
        cJSON_AddStringToObject(m, "content", st.p ? st.p : "");
        cJSON_AddItemToArray(msgs, m);
        free(st.p);
    }
    const cJSON *messages = cJSON_GetObjectItemCaseSensitive(root, "messages");
    int n = cJSON_GetArraySize(messages);
    if (!cJSON_IsArray(messages) || n == 0 || n > OPENAI_MAX_MESSAGES) {
        snprintf(err, errlen, "'messages' must be a non-empty array (at most %d messages)", OPENAI_MAX_MESSAGES);
        goto done;
    }
    const cJSON *msg;
    int i = 0;
    const cJSON *last_role = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(messages, n - 1), "role");
    int prefill = cJSON_IsString(last_role) && !strcmp(last_role->valuestring, "assistant");
    cJSON_ArrayForEach(msg, messages)
        if (translate_message(msg, ++i == n, msgs, err, errlen)) goto done;
    if (prefill) cJSON_AddTrueToObject(chat, "continue_final_message");

    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(root, "tools");
    if (tools && !cJSON_IsNull(tools) && translate_tools(tools, chat, err, errlen)) goto done;
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(root, "tool_choice");
    if (tc && !cJSON_IsNull(tc) && translate_tool_choice(tc, chat, err, errlen)) goto done;

    *chat_out = cJSON_PrintUnformatted(chat);
    if (!*chat_out) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    *chat_len = strlen(*chat_out);
    rc = 0;
done:
    cJSON_Delete(root);
    cJSON_Delete(chat);
    return rc;
}

/* ---- errors -------------------------------------------------------------------*/

const char *anthropic_error_type(int status)
{
    switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 503:
    case 529: return "overloaded_error";
    default: return status < 500 ? "invalid_request_error" : "api_error";
    }
}

char *anthropic_error_json(int status, const char *message)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "type", "error");
    cJSON *e = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(e, "type", anthropic_error_type(status));
    cJSON_AddStringToObject(e, "message", message);
    char *out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return out;
}

/* Writes an error answer without counting it (it was counted when the
 * OpenAI path made it, or is counted by the caller). */
static void send_error_body(api_sink *sink, int status, const char *message)
{
    char *body = anthropic_error_json(status, message);
    sink->ops->begin(sink, status, "application/json");
    if (body) sink->ops->write(sink, body, strlen(body));
    sink->ops->end(sink);
    free(body);
}

void anthropic_send_error(api_counters *counters, api_sink *sink, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (status < 500) counters->bad_requests++;
    else counters->failed++;
    log_debug("api", "%d %s", status, msg);
    send_error_body(sink, status, msg);
}

/* ---- answers ------------------------------------------------------------------*/

struct anthropic_answer {
    api_sink sink;               /* what the OpenAI path writes into */
    api_sink *client;
    int kind;                    /* ANTHROPIC_MESSAGE or ANTHROPIC_PASS */
    char model[MESH_MAX_NAME];
    int status;
    int stream;                  /* the OpenAI answer is SSE */
    text_buf held;               /* the JSON answer, or SSE bytes short of an event */
    /* Streaming: the message as it is rewritten. */
    int started;                 /* message_start went out */
    int n_blocks;                /* content blocks started */
    int block_open;              /* the last one is not stopped yet */
    int block_tool;              /* it is a tool_use block */
    int ended;                   /* message_stop or an error event went out */
    char finish[16];             /* OpenAI's finish_reason */
    char *stop_sequence;         /* the stop string that ended it (OpenAI's stop_reason), or NULL */
    int prompt_tokens, completion_tokens, cached_tokens;
};

/* "msg_" and the hex of OpenAI's "chatcmpl-<hex>". */
static void message_id(const char *openai_id, char *out, size_t cap)
{
    const char *dash = openai_id ? strrchr(openai_id, '-') : NULL;
    snprintf(out, cap, "msg_%.40s", dash ? dash + 1 : openai_id ? openai_id : "0");
}

static const char *stop_reason(const char *finish, const char *stop_sequence)
{
    if (!strcmp(finish, "length")) return "max_tokens";
    if (!strcmp(finish, "tool_calls")) return "tool_use";
    return stop_sequence ? "stop_sequence" : "end_turn";
}

/* A token count from an answer: a number in [0, 2^31), else 0. */
static int count_of(const cJSON *v)
{
    return cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < 2147483647.0 ? (int)v->valuedouble : 0;
}

static void usage_object(cJSON *o, int prompt, int completion, int cached)
{
    cJSON *u = cJSON_AddObjectToObject(o, "usage");
    cJSON_AddNumberToObject(u, "input_tokens", prompt - cached > 0 ? prompt - cached : 0);
    cJSON_AddNumberToObject(u, "cache_creation_input_tokens", 0);
    cJSON_AddNumberToObject(u, "cache_read_input_tokens", cached);
    cJSON_AddNumberToObject(u, "output_tokens", completion);
}

/* One SSE event: "event: name" and data with "type": name first, as
 * Anthropic writes them (data's members are moved; data is freed). */
static void send_event(anthropic_answer *a, const char *name, cJSON *members)
{
    cJSON *data = cJSON_CreateObject();
    cJSON_AddStringToObject(data, "type", name);
    while (members->child) {
        cJSON *item = cJSON_DetachItemViaPointer(members, members->child);
        cJSON_AddItemToObject(data, item->string, item);
    }
    cJSON_Delete(members);
    char *json = cJSON_PrintUnformatted(data);
    cJSON_Delete(data);
    if (!json) return;
    text_buf line = {0};
    text_add(&line, "event: ", 7);
    text_add(&line, name, strlen(name));
    text_add(&line, "\ndata: ", 7);
    text_add(&line, json, strlen(json));
    text_add(&line, "\n\n", 2);
    if (!line.oom) a->client->ops->write(a->client, line.p, line.len);
    free(line.p);
    free(json);
}

static void stream_error(anthropic_answer *a, const char *message)
{
    if (a->ended) return;
    a->ended = 1;
    cJSON *e = cJSON_CreateObject();
    cJSON *inner = cJSON_AddObjectToObject(e, "error");
    cJSON_AddStringToObject(inner, "type", "api_error");
    cJSON_AddStringToObject(inner, "message", message);
    send_event(a, "error", e);
}

static void stop_block(anthropic_answer *a)
{
    if (!a->block_open) return;
    cJSON *e = cJSON_CreateObject();
    cJSON_AddNumberToObject(e, "index", a->n_blocks - 1);
    send_event(a, "content_block_stop", e);
    a->block_open = 0;
}

static void start_block(anthropic_answer *a, cJSON *block, int tool)
{
    stop_block(a);
    cJSON *e = cJSON_CreateObject();
    cJSON_AddNumberToObject(e, "index", a->n_blocks++);
    cJSON_AddItemToObject(e, "content_block", block);
    send_event(a, "content_block_start", e);
    a->block_open = 1;
    a->block_tool = tool;
}

static void block_delta(anthropic_answer *a, const char *kind, const char *field, const char *text)
{
    cJSON *e = cJSON_CreateObject();
    cJSON_AddNumberToObject(e, "index", a->n_blocks - 1);
    cJSON *d = cJSON_AddObjectToObject(e, "delta");
    cJSON_AddStringToObject(d, "type", kind);
    cJSON_AddStringToObject(d, field, text);
    send_event(a, "content_block_delta", e);
}

static void message_start(anthropic_answer *a, const char *openai_id)
{
    char id[64];
    message_id(openai_id, id, sizeof id);
    cJSON *e = cJSON_CreateObject();
    cJSON *m = cJSON_AddObjectToObject(e, "message");
    cJSON_AddStringToObject(m, "id", id);
    cJSON_AddStringToObject(m, "type", "message");
    cJSON_AddStringToObject(m, "role", "assistant");
    cJSON_AddStringToObject(m, "model", a->model);
    cJSON_AddArrayToObject(m, "content");
    cJSON_AddNullToObject(m, "stop_reason");
    cJSON_AddNullToObject(m, "stop_sequence");
    /* The prompt's count comes with the first chunk (the chat path's
     * stream_options.prompt_usage); the others with message_delta. */
    usage_object(m, a->prompt_tokens, 0, a->cached_tokens);
    send_event(a, "message_start", e);
    send_event(a, "ping", cJSON_CreateObject());
    a->started = 1;
}

/* One OpenAI chat chunk, rewritten. */
static void stream_chunk(anthropic_answer *a, const cJSON *chunk)
{
    const cJSON *error = cJSON_GetObjectItemCaseSensitive(chunk, "error");
    if (error) {
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(error, "message");
        stream_error(a, cJSON_IsString(msg) ? msg->valuestring : "the answer failed");
        return;
    }
    if (a->ended) return;
    const cJSON *usage = cJSON_GetObjectItemCaseSensitive(chunk, "usage");
    if (cJSON_IsObject(usage)) {
        const cJSON *details = cJSON_GetObjectItemCaseSensitive(usage, "prompt_tokens_details");
        a->prompt_tokens = count_of(cJSON_GetObjectItemCaseSensitive(usage, "prompt_tokens"));
        a->completion_tokens = count_of(cJSON_GetObjectItemCaseSensitive(usage, "completion_tokens"));
        a->cached_tokens = count_of(cJSON_GetObjectItemCaseSensitive(details, "cached_tokens"));
    }
    if (!a->started) message_start(a, cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(chunk, "id")));
    const cJSON *choice = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(chunk, "choices"), 0);
    if (!cJSON_IsObject(choice)) return;
    const cJSON *delta = cJSON_GetObjectItemCaseSensitive(choice, "delta");
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(delta, "content");
    if (cJSON_IsString(content) && content->valuestring[0]) {
        if (!a->block_open || a->block_tool) {
            cJSON *b = cJSON_CreateObject();
            cJSON_AddStringToObject(b, "type", "text");
            cJSON_AddStringToObject(b, "text", "");
            start_block(a, b, 0);
        }
        block_delta(a, "text_delta", "text", content->valuestring);
    }
    const cJSON *tc;
    cJSON_ArrayForEach(tc, cJSON_GetObjectItemCaseSensitive(delta, "tool_calls")) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(tc, "id");
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(tc, "function");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
        const cJSON *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
        if (cJSON_IsString(id)) { /* a new call */
            char tool_id[96];
            snprintf(tool_id, sizeof tool_id, "toolu_%.80s", id->valuestring);
            cJSON *b = cJSON_CreateObject();
            cJSON_AddStringToObject(b, "type", "tool_use");
            cJSON_AddStringToObject(b, "id", tool_id);
            cJSON_AddStringToObject(b, "name", cJSON_IsString(name) ? name->valuestring : "");
            cJSON_AddObjectToObject(b, "input");
            start_block(a, b, 1);
        }
        if (a->block_open && a->block_tool && cJSON_IsString(args) && args->valuestring[0])
            block_delta(a, "input_json_delta", "partial_json", args->valuestring);
    }
    const cJSON *finish = cJSON_GetObjectItemCaseSensitive(choice, "finish_reason");
    if (cJSON_IsString(finish)) snprintf(a->finish, sizeof a->finish, "%s", finish->valuestring);
    const cJSON *stop = cJSON_GetObjectItemCaseSensitive(choice, "stop_reason");
    if (cJSON_IsString(stop) && !a->stop_sequence) a->stop_sequence = strdup(stop->valuestring);
}

/* data: [DONE]: the message's end. */
static void stream_done(anthropic_answer *a)
{
    if (a->ended) return;
    if (!a->started) message_start(a, NULL);
    stop_block(a);
    a->ended = 1;
    cJSON *e = cJSON_CreateObject();
    cJSON *d = cJSON_AddObjectToObject(e, "delta");
    cJSON_AddStringToObject(d, "stop_reason", stop_reason(a->finish[0] ? a->finish : "stop", a->stop_sequence));
    if (a->stop_sequence) cJSON_AddStringToObject(d, "stop_sequence", a->stop_sequence);
    else cJSON_AddNullToObject(d, "stop_sequence");
    usage_object(e, a->prompt_tokens, a->completion_tokens, a->cached_tokens);
    send_event(a, "message_delta", e);
    send_event(a, "message_stop", cJSON_CreateObject());
}

/* Rewrites the whole SSE events held so far; keeps a partial one. */
static void stream_events(anthropic_answer *a)
{
    size_t at = 0;
    for (;;) {
        char *end = a->held.len > at ? memmem(a->held.p + at, a->held.len - at, "\n\n", 2) : NULL;
        if (!end) break;
        const char *ev = a->held.p + at;
        size_t ev_len = (size_t)(end - ev);
        at = (size_t)(end - a->held.p) + 2;
        if (ev_len < 6 || memcmp(ev, "data: ", 6) != 0) continue; /* OpenAI's chunks are data lines only */
        const char *data = ev + 6;
        if (ev_len == 12 && !memcmp(data, "[DONE]", 6)) {
            stream_done(a);
            continue;
        }
        cJSON *chunk = cJSON_ParseWithLength(data, ev_len - 6);
        if (chunk) stream_chunk(a, chunk);
        else stream_error(a, "the answer could not be read");
        cJSON_Delete(chunk);
    }
    memmove(a->held.p, a->held.p + at, a->held.len - at);
    a->held.len -= at;
    a->held.p[a->held.len] = 0;
}

/* A whole chat.completion, rewritten into a message object. */
static cJSON *message_object(anthropic_answer *a, const cJSON *completion)
{
    const cJSON *choice = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(completion, "choices"), 0);
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(choice, "message");
    if (!cJSON_IsObject(msg)) return NULL;
    char id[64];
    message_id(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(completion, "id")), id, sizeof id);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "type", "message");
    cJSON_AddStringToObject(o, "role", "assistant");
    cJSON_AddStringToObject(o, "model", a->model);
    cJSON *content = cJSON_AddArrayToObject(o, "content");
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(msg, "content");
    if (cJSON_IsString(text) && text->valuestring[0]) {
        cJSON *b = cJSON_CreateObject();
        cJSON_AddStringToObject(b, "type", "text");
        cJSON_AddStringToObject(b, "text", text->valuestring);
        cJSON_AddItemToArray(content, b);
    }
    const cJSON *call;
    cJSON_ArrayForEach(call, cJSON_GetObjectItemCaseSensitive(msg, "tool_calls")) {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(call, "function");
        const char *cid = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(call, "id"));
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(fn, "name"));
        const char *args = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(fn, "arguments"));
        char tool_id[96];
        snprintf(tool_id, sizeof tool_id, "toolu_%.80s", cid ? cid : "0");
        cJSON *input = args ? cJSON_Parse(args) : NULL;
        if (!cJSON_IsObject(input)) { /* tools.c gives objects; anything else cannot be an input */
            cJSON_Delete(input);
            input = cJSON_CreateObject();
        }
        cJSON *b = cJSON_CreateObject();
        cJSON_AddStringToObject(b, "type", "tool_use");
        cJSON_AddStringToObject(b, "id", tool_id);
        cJSON_AddStringToObject(b, "name", name ? name : "");
        cJSON_AddItemToObject(b, "input", input);
        cJSON_AddItemToArray(content, b);
    }
    const char *finish = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(choice, "finish_reason"));
    const char *stop = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(choice, "stop_reason"));
    cJSON_AddStringToObject(o, "stop_reason", stop_reason(finish ? finish : "stop", stop));
    if (stop) cJSON_AddStringToObject(o, "stop_sequence", stop);
    else cJSON_AddNullToObject(o, "stop_sequence");
    const cJSON *usage = cJSON_GetObjectItemCaseSensitive(completion, "usage");
    const cJSON *details = cJSON_GetObjectItemCaseSensitive(usage, "prompt_tokens_details");
    usage_object(o, count_of(cJSON_GetObjectItemCaseSensitive(usage, "prompt_tokens")),
                 count_of(cJSON_GetObjectItemCaseSensitive(usage, "completion_tokens")),
                 count_of(cJSON_GetObjectItemCaseSensitive(details, "cached_tokens")));
    return o;
}

/* The end of a JSON answer: rewritten and sent whole. */
static void json_done(anthropic_answer *a)
{
    cJSON *root = a->held.p ? cJSON_ParseWithLength(a->held.p, a->held.len) : NULL;
    if (a->status == 200 && a->kind == ANTHROPIC_PASS) {
        a->client->ops->begin(a->client, 200, "application/json");
        if (a->held.len) a->client->ops->write(a->client, a->held.p, a->held.len);
        a->client->ops->end(a->client);
    } else if (a->status == 200) {
        cJSON *o = root ? message_object(a, root) : NULL;
        if (o) openai_send_json(a->client, 200, o);
        else send_error_body(a->client, 502, "the answer could not be read");
        cJSON_Delete(o);
    } else {
        const cJSON *error = cJSON_GetObjectItemCaseSensitive(root, "error");
        const char *msg = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(error, "message"));
        send_error_body(a->client, a->status, msg ? msg : a->held.len ? a->held.p : "the request failed");
    }
    cJSON_Delete(root);
}

static void answer_free(anthropic_answer *a)
{
    free(a->held.p);
    free(a->stop_sequence);
    free(a);
}

static void answer_begin(api_sink *sink, int status, const char *content_type)
{
    anthropic_answer *a = (anthropic_answer *)sink;
    a->status = status;
    a->stream = content_type && !strncmp(content_type, "text/event-stream", 17);
    if (a->stream) a->client->ops->begin(a->client, status, "text/event-stream");
}

static void answer_write(api_sink *sink, const char *data, size_t len)
{
    anthropic_answer *a = (anthropic_answer *)sink;
    if (a->held.oom) return;
    if (a->held.len + len > ANTHROPIC_MAX_HELD) {
        a->held.oom = 1;
        return;
    }
    text_add(&a->held, data, len);
    if (a->stream && !a->held.oom) stream_events(a);
}

static void answer_end(api_sink *sink)
{
    anthropic_answer *a = (anthropic_answer *)sink;
    if (a->stream) {
        if (a->held.oom) stream_error(a, "the answer was too large to rewrite");
        stream_error(a, "the answer ended early"); /* nothing when it ended */
        a->client->ops->end(a->client);
    } else if (a->held.oom) {
        send_error_body(a->client, 500, "the answer was too large to rewrite");
    } else {
        json_done(a);
    }
    answer_free(a);
}

static void answer_label(api_sink *sink, const char *model)
{
    anthropic_answer *a = (anthropic_answer *)sink;
    if (a->client->ops->label) a->client->ops->label(a->client, model);
}

static void answer_release(api_sink *sink) { answer_free((anthropic_answer *)sink); }

static const api_sink_ops answer_ops = {answer_begin, answer_write, answer_end, answer_label, answer_release};

anthropic_answer *anthropic_answer_new(api_sink *client, const char *model, int kind)
{
    anthropic_answer *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->sink.ops = &answer_ops;
    a->client = client;
    a->kind = kind;
    snprintf(a->model, sizeof a->model, "%s", model);
    return a;
}

api_sink *anthropic_answer_sink(anthropic_answer *ans) { return &ans->sink; }
