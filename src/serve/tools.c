/* tools.c: OpenAI tool calls through the model's chat template, and the
 * family's tool-call output parsed back into OpenAI's tool_calls. See
 * tools.h.
 *
 * Decisions: tool_choice "none" renders the conversation without the tools
 * (the model is not told of them; history calls still render). "required"
 * and a named function produce exactly one call (the grammar closes after
 * it); "auto" returns every call the model writes (parallel_tool_calls
 * false keeps the first). Output that looks like a call but does not parse
 * stays content: a client sees what the model wrote. */
#include "serve/tools.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/json_grammar.h"

/* ---- requests -----------------------------------------------------------------*/

void tools_request_free(tools_request *t)
{
    if (!t) return;
    for (int i = 0; t->params && i < t->n_tools; i++) free(t->params[i]);
    free(t->params);
    free(t->names);
    free(t->tools_json);
    free(t);
}

/* Every member of obj is one of names (null counts as absent). */
static int only_fields(const cJSON *obj, const char *const *names, const char *where, char *err, size_t errlen)
{
    const cJSON *v;
    cJSON_ArrayForEach(v, obj) {
        if (cJSON_IsNull(v)) continue;
        int ok = 0;
        for (const char *const *n = names; *n && !ok; n++) ok = !strcmp(*n, v->string);
        if (!ok) {
            snprintf(err, errlen, "'%.64s' in %s is not supported by llmesh", v->string, where);
            return -1;
        }
    }
    return 0;
}

static int valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > TOOLS_MAX_NAME) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_' ||
              *s == '-'))
            return 0;
    return 1;
}

int tools_parse_request(const cJSON *root, tools_request **out, char *err, size_t errlen)
{
    static const char *const tool_fields[] = {"type", "function", NULL};
    static const char *const fn_fields[] = {"name", "description", "parameters", "strict", NULL};
    *out = NULL;
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(root, "tools");
    const cJSON *choice = cJSON_GetObjectItemCaseSensitive(root, "tool_choice");
    const cJSON *parallel = cJSON_GetObjectItemCaseSensitive(root, "parallel_tool_calls");
    if (cJSON_IsNull(tools)) tools = NULL;
    if (cJSON_IsNull(choice)) choice = NULL;
    if (parallel && !cJSON_IsNull(parallel) && !cJSON_IsBool(parallel)) {
        snprintf(err, errlen, "'parallel_tool_calls' must be a boolean");
        return -1;
    }
    if (!tools) {
        if (choice && !(cJSON_IsString(choice) && (!strcmp(choice->valuestring, "none") ||
                                                   !strcmp(choice->valuestring, "auto")))) {
            snprintf(err, errlen, "'tool_choice' needs 'tools'");
            return -1;
        }
        return 0;
    }
    int n = cJSON_GetArraySize(tools);
    if (!cJSON_IsArray(tools) || n < 1 || n > TOOLS_MAX) {
        snprintf(err, errlen, "'tools' must be an array of 1 to %d tools", TOOLS_MAX);
        return -1;
    }
    tools_request *t = calloc(1, sizeof *t);
    if (!t || !(t->names = calloc((size_t)n, sizeof *t->names)) || !(t->params = calloc((size_t)n, sizeof *t->params)) ||
        !(t->tools_json = cJSON_PrintUnformatted(tools))) {
        tools_request_free(t);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    t->parallel = !cJSON_IsFalse(parallel);
    const cJSON *tool;
    cJSON_ArrayForEach(tool, tools) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(tool, "type");
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(tool, "function");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
        const cJSON *desc = cJSON_GetObjectItemCaseSensitive(fn, "description");
        const cJSON *params = cJSON_GetObjectItemCaseSensitive(fn, "parameters");
        if (!cJSON_IsObject(tool) || !cJSON_IsString(type) || strcmp(type->valuestring, "function") ||
            !cJSON_IsObject(fn)) {
            snprintf(err, errlen, "each tool must be {\"type\": \"function\", \"function\": {...}}");
            goto fail;
        }
        if (only_fields(tool, tool_fields, "a tool", err, errlen) ||
            only_fields(fn, fn_fields, "a tool's function", err, errlen))
            goto fail;
        if (!cJSON_IsString(name) || !valid_name(name->valuestring)) {
            snprintf(err, errlen, "a function's 'name' must be 1 to %d of a-z, A-Z, 0-9, _ and -", TOOLS_MAX_NAME);
            goto fail;
        }
        if ((desc && !cJSON_IsNull(desc) && !cJSON_IsString(desc)) ||
            (params && !cJSON_IsNull(params) && !cJSON_IsObject(params))) {
            snprintf(err, errlen, "a function's 'description' must be a string and 'parameters' an object");
            goto fail;
        }
        for (int i = 0; i < t->n_tools; i++)
            if (!strcmp(t->names[i], name->valuestring)) {
                snprintf(err, errlen, "two tools are named '%s'", name->valuestring);
                goto fail;
            }
        snprintf(t->names[t->n_tools], sizeof t->names[0], "%s", name->valuestring);
        t->params[t->n_tools] = cJSON_IsObject(params) ? cJSON_PrintUnformatted(params) : strdup("{\"type\":\"object\"}");
        if (!t->params[t->n_tools++]) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
    }
    t->choice = TOOLS_AUTO;
    if (cJSON_IsString(choice)) {
        const char *c = choice->valuestring;
        t->choice = !strcmp(c, "auto") ? TOOLS_AUTO : !strcmp(c, "none") ? TOOLS_NONE
                  : !strcmp(c, "required") ? TOOLS_REQUIRED : -1;
        if (t->choice < 0) {
            snprintf(err, errlen, "'tool_choice' must be \"auto\", \"none\", \"required\" or a named function");
            goto fail;
        }
    } else if (choice) {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(choice, "function");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
        if (!cJSON_IsString(name)) {
            snprintf(err, errlen, "'tool_choice' must be \"auto\", \"none\", \"required\" or "
                                  "{\"type\": \"function\", \"function\": {\"name\"}}");
            goto fail;
        }
        t->choice = TOOLS_NAMED;
        t->named = -1;
        for (int i = 0; i < t->n_tools; i++)
            if (!strcmp(t->names[i], name->valuestring)) t->named = i;
        if (t->named < 0) {
            snprintf(err, errlen, "'tool_choice' names '%.64s', which is not among the tools", name->valuestring);
            goto fail;
        }
    }
    *out = t;
    return 0;
fail:
    tools_request_free(t);
    return -1;
}

int tools_message_json(const cJSON *msg, char **json, char *err, size_t errlen)
{
    *json = NULL;
    const cJSON *calls = cJSON_GetObjectItemCaseSensitive(msg, "tool_calls");
    const cJSON *call_id = cJSON_GetObjectItemCaseSensitive(msg, "tool_call_id");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(msg, "name");
    if (cJSON_IsNull(calls)) calls = NULL;
    if (cJSON_IsNull(call_id)) call_id = NULL;
    if (!calls && !call_id) return 0;
    cJSON *o = cJSON_CreateObject();
    if (call_id) {
        if (!cJSON_IsString(call_id)) {
            snprintf(err, errlen, "a message's 'tool_call_id' must be a string");
            goto fail;
        }
        cJSON_AddStringToObject(o, "tool_call_id", call_id->valuestring);
        if (cJSON_IsString(name)) cJSON_AddStringToObject(o, "name", name->valuestring);
    }
    if (calls) {
        int n = cJSON_GetArraySize(calls);
        if (!cJSON_IsArray(calls) || n > TOOLS_MAX_CALLS) {
            snprintf(err, errlen, "a message's 'tool_calls' must be an array of at most %d calls", TOOLS_MAX_CALLS);
            goto fail;
        }
        cJSON *list = cJSON_AddArrayToObject(o, "tool_calls");
        const cJSON *c;
        cJSON_ArrayForEach(c, calls) {
            const cJSON *fn = cJSON_GetObjectItemCaseSensitive(c, "function");
            const cJSON *fname = cJSON_GetObjectItemCaseSensitive(fn, "name");
            const cJSON *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(c, "id");
            if (!cJSON_IsString(fname) || !cJSON_IsString(args)) {
                snprintf(err, errlen, "each tool call needs 'function' with string 'name' and 'arguments'");
                goto fail;
            }
            cJSON *item = cJSON_CreateObject();
            cJSON_AddItemToArray(list, item);
            if (cJSON_IsString(id)) cJSON_AddStringToObject(item, "id", id->valuestring);
            cJSON_AddStringToObject(item, "type", "function");
            cJSON *f = cJSON_AddObjectToObject(item, "function");
            cJSON_AddStringToObject(f, "name", fname->valuestring);
            /* Templates write arguments with tojson: an object, not its text. */
            cJSON *parsed = cJSON_Parse(args->valuestring);
            if (parsed) cJSON_AddItemToObject(f, "arguments", parsed);
            else cJSON_AddStringToObject(f, "arguments", args->valuestring);
        }
    }
    *json = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!*json) snprintf(err, errlen, "out of memory");
    return *json ? 0 : -1;
fail:
    cJSON_Delete(o);
    return -1;
}

/* ---- the serving node: render, and the forced call's grammar ---------------*/

static const char *opener(engine_tool_format fmt)
{
    return fmt == ENGINE_TOOLS_HERMES ? "<tool_call>\n" : fmt == ENGINE_TOOLS_MISTRAL ? "[TOOL_CALLS]" : "";
}

/* The schema of one call to tool i in the family's shape. */
static cJSON *call_schema(const tools_request *t, int i, engine_tool_format fmt)
{
    const char *args = fmt == ENGINE_TOOLS_LLAMA3 ? "parameters" : "arguments";
    cJSON *s = cJSON_CreateObject();
    cJSON_AddStringToObject(s, "type", "object");
    cJSON *props = cJSON_AddObjectToObject(s, "properties");
    cJSON *name = cJSON_AddObjectToObject(props, "name");
    cJSON_AddStringToObject(name, "const", t->names[i]);
    cJSON *params = cJSON_Parse(t->params[i]);
    cJSON_AddItemToObject(props, args, params ? params : cJSON_CreateObject());
    cJSON *req = cJSON_AddArrayToObject(s, "required");
    cJSON_AddItemToArray(req, cJSON_CreateString("name"));
    cJSON_AddItemToArray(req, cJSON_CreateString(args));
    cJSON_AddFalseToObject(s, "additionalProperties");
    return s;
}

static json_grammar *call_grammar(const tools_request *t, engine_tool_format fmt, char *err, size_t errlen)
{
    cJSON *schema;
    if (t->choice == TOOLS_NAMED || t->n_tools == 1) {
        schema = call_schema(t, t->choice == TOOLS_NAMED ? t->named : 0, fmt);
    } else {
        schema = cJSON_CreateObject();
        cJSON *any = cJSON_AddArrayToObject(schema, "anyOf");
        for (int i = 0; i < t->n_tools && i < JSON_GRAMMAR_MAX_ENUM; i++)
            cJSON_AddItemToArray(any, call_schema(t, i, fmt));
    }
    if (fmt == ENGINE_TOOLS_MISTRAL) { /* a list of one call */
        cJSON *list = cJSON_CreateObject();
        cJSON_AddStringToObject(list, "type", "array");
        cJSON_AddItemToObject(list, "items", schema);
        cJSON_AddNumberToObject(list, "minItems", 1);
        cJSON_AddNumberToObject(list, "maxItems", 1);
        schema = list;
    }
    char *text = cJSON_PrintUnformatted(schema);
    cJSON_Delete(schema);
    if (!text) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    char why[400];
    json_grammar *g = json_grammar_from_schema(text, strlen(text), why, sizeof why);
    free(text);
    if (!g) snprintf(err, errlen, "a tool's parameters: %s", why);
    return g;
}

int tools_render(const tools_request *t, const engine_model *em, const chat_message *msgs, int n_msgs,
                 int continue_final, char **prompt, size_t *len, int *parse_special,
                 struct json_grammar **grammar, char *err, size_t errlen)
{
    *grammar = NULL;
    if (t->choice == TOOLS_NONE)
        return engine_render_chat_tools(em, msgs, n_msgs, NULL, continue_final, prompt, len, parse_special, err,
                                        errlen);
    if (continue_final && t->choice != TOOLS_AUTO) {
        snprintf(err, errlen, "a required or named 'tool_choice' cannot continue an assistant turn's text "
                 "(continue_final_message)");
        return -1;
    }
    engine_tool_format fmt = engine_chat_tool_format(em);
    if (fmt == ENGINE_TOOLS_NONE) {
        snprintf(err, errlen, "model '%s' cannot take tools: its chat template shows no tool-call format "
                 "(Hermes/Qwen <tool_call>, Llama 3.1 JSON, Mistral [TOOL_CALLS])", engine_model_id(em));
        return -1;
    }
    if (engine_render_chat_tools(em, msgs, n_msgs, t->tools_json, continue_final, prompt, len, parse_special, err,
                                 errlen))
        return -1;
    for (int i = 0; i < t->n_tools; i++)
        if (!strstr(*prompt, t->names[i])) {
            snprintf(err, errlen, "model '%s' cannot take tools: its chat template did not render tool '%s'",
                     engine_model_id(em), t->names[i]);
            free(*prompt);
            *prompt = NULL;
            return -1;
        }
    if (t->choice != TOOLS_REQUIRED && t->choice != TOOLS_NAMED) return 0;
    const char *open = opener(fmt);
    size_t n = strlen(open);
    char *p = realloc(*prompt, *len + n + 1);
    if (!p || !(*grammar = call_grammar(t, fmt, err, errlen))) {
        if (!p) snprintf(err, errlen, "out of memory");
        free(p ? p : *prompt);
        *prompt = NULL;
        return -1;
    }
    memcpy(p + *len, open, n + 1);
    *len += n;
    *prompt = p;
    return 0;
}

/* ---- answers ---------------------------------------------------------------------*/

void tools_calls_free(tools_call *calls, int n)
{
    for (int i = 0; i < n; i++) {
        free(calls[i].name);
        free(calls[i].arguments);
    }
    free(calls);
}

/* One call object {"name", "arguments"|"parameters"} into calls[*n]. */
static int add_call(const cJSON *o, tools_call *calls, int *n)
{
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "name");
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(o, "arguments");
    if (!args) args = cJSON_GetObjectItemCaseSensitive(o, "parameters");
    if (!cJSON_IsObject(o) || !cJSON_IsString(name) || !name->valuestring[0] || *n >= TOOLS_MAX_CALLS) return -1;
    tools_call *c = &calls[*n];
    c->name = strdup(name->valuestring);
    c->arguments = !args ? strdup("{}") : cJSON_IsString(args) ? strdup(args->valuestring)
                                                               : cJSON_PrintUnformatted(args);
    (*n)++;
    return c->name && c->arguments ? 0 : -1;
}

static const char *skip_ws(const char *s, const char *end)
{
    while (s < end && (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r')) s++;
    return s;
}

static const char *find(const char *s, const char *end, const char *needle)
{
    size_t n = strlen(needle);
    for (; s + n <= end; s++)
        if (!memcmp(s, needle, n)) return s;
    return NULL;
}

int tools_parse_output(engine_tool_format fmt, int forced, const char *text, size_t len,
                       tools_call **calls_out, int *n_calls, char **content)
{
    *calls_out = NULL;
    *n_calls = 0;
    *content = NULL;
    tools_call *calls = calloc(TOOLS_MAX_CALLS, sizeof *calls);
    if (!calls) return -1;
    const char *end = text + len, *lead_end = text; /* content is text[0, lead_end) */
    int n = 0, ok = 1;
    const char *p = skip_ws(text, end);
    if (fmt == ENGINE_TOOLS_MISTRAL && end - p >= 12 && !memcmp(p, "[TOOL_CALLS]", 12)) p += 12;
    if (forced || ((fmt == ENGINE_TOOLS_LLAMA3 || fmt == ENGINE_TOOLS_MISTRAL) && p < end &&
                   *p == (fmt == ENGINE_TOOLS_LLAMA3 ? '{' : '['))) {
        /* The whole output is the call (forced: its opener is in the
         * prompt), or a list of calls. */
        cJSON *o = cJSON_ParseWithLength(p, (size_t)(end - p));
        if (cJSON_IsArray(o)) {
            const cJSON *c;
            cJSON_ArrayForEach(c, o) ok = ok && add_call(c, calls, &n) == 0;
        } else {
            ok = o && add_call(o, calls, &n) == 0;
        }
        cJSON_Delete(o);
        lead_end = text;
    } else if (fmt == ENGINE_TOOLS_HERMES) {
        /* Content, then <tool_call>{json}</tool_call> blocks (the last one
         * may lack its closer when generation stopped there). */
        p = find(text, end, "<tool_call>");
        lead_end = p ? p : end;
        while (p && ok) {
            p += 11;
            const char *close = find(p, end, "</tool_call>");
            cJSON *o = cJSON_ParseWithLength(p, (size_t)((close ? close : end) - p));
            ok = o && add_call(o, calls, &n) == 0;
            cJSON_Delete(o);
            p = close ? find(close, end, "<tool_call>") : NULL;
            if (close && !p && skip_ws(close + 12, end) != end) ok = 0; /* text after the last call */
        }
    } else {
        lead_end = end;
    }
    if (!ok || n == 0) { /* not calls after all: all of it is content */
        tools_calls_free(calls, n);
        calls = NULL;
        n = 0;
        lead_end = end;
    }
    /* Content before calls loses its trailing whitespace. */
    const char *ce = lead_end;
    if (n) while (ce > text && (ce[-1] == ' ' || ce[-1] == '\n' || ce[-1] == '\t' || ce[-1] == '\r')) ce--;
    if (ce > text || !n) {
        *content = malloc((size_t)(ce - text) + 1);
        if (!*content) {
            tools_calls_free(calls, n);
            return -1;
        }
        memcpy(*content, text, (size_t)(ce - text));
        (*content)[ce - text] = 0;
    }
    *calls_out = calls;
    *n_calls = n;
    return 0;
}

size_t tools_stream_release(engine_tool_format fmt, int forced, const char *text, size_t len)
{
    if (forced) return 0;
    const char *end = text + len;
    if (fmt == ENGINE_TOOLS_HERMES) {
        const char *p = find(text, end, "<tool_call>");
        if (p) return (size_t)(p - text);
        static const char open[] = "<tool_call>";
        for (size_t k = len < sizeof open - 2 ? len : sizeof open - 2; k > 0; k--)
            if (!memcmp(end - k, open, k)) return len - k;
        return len;
    }
    if (fmt == ENGINE_TOOLS_LLAMA3 || fmt == ENGINE_TOOLS_MISTRAL) {
        const char *p = skip_ws(text, end);
        if (p == end) return 0;
        return *p == '{' || *p == '[' ? 0 : len;
    }
    return len;
}
