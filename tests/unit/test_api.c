/* test_api.c: the OpenAI API layer over a real scheduler and the demo model,
 * with no mesh and no HTTP: requests go straight to api_handle with a sink
 * that records what the API answers. */
#include "testlib.h"

#include <cjson/cJSON.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "serve/api.h"
#include "serve/scheduler.h"
#include "model_writer.h"
#include "record_sink.h"

#define MODEL_ID "kjv-llama-6.3M-q8_0"

static struct event_base *base;
static sched *sch;
static api *a;

static void setup(void)
{
    if (base) return;
    evthread_use_pthreads();
    /* 5 ms per token: the abort test must catch a stream in flight. */
    setenv("LLMESH_DEBUG_TOKEN_DELAY_MS", "5", 1);
    base = event_base_new();
    sch = sched_new(base);
    char err[256];
    engine_model *m = engine_model_load(testlib_source_path("models/" MODEL_ID ".gguf"), 2, err, sizeof err);
    if (!m) { fprintf(stderr, "load: %s\n", err); exit(1); }
    sched_add_model(sch, m);
    a = api_new(base, sch, NULL);
}

static void request_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    event_base_loopbreak(base);
}

/* Sends a request and runs the loop until the answer ends (30 s at most). */
static void request(record_sink *r, const char *method, const char *path, const char *body)
{
    memset(r, 0, sizeof *r);
    r->sink.ops = &rec_ops;
    r->base = base;
    api_call *c = api_handle(a, method, path, body, body ? strlen(body) : 0, &r->sink, 0);
    if (c) {
        /* A timer of this request's own (event_base_loopexit's would stay
         * armed and could end a later request's wait early). */
        struct timeval limit = {30, 0};
        struct event *timeout = evtimer_new(base, request_timeout, NULL);
        evtimer_add(timeout, &limit);
        event_base_dispatch(base);
        event_free(timeout);
    }
}

static cJSON *body_json(record_sink *r) { return r->body ? cJSON_Parse(r->body) : NULL; }

static int is_openai_error(record_sink *r, const char *type)
{
    cJSON *j = body_json(r);
    cJSON *e = cJSON_GetObjectItem(j, "error");
    int ok = cJSON_IsString(cJSON_GetObjectItem(e, "message")) &&
             cJSON_IsString(cJSON_GetObjectItem(e, "type")) &&
             !strcmp(cJSON_GetObjectItem(e, "type")->valuestring, type);
    cJSON_Delete(j);
    return ok;
}

static void test_models_list(void)
{
    setup();
    record_sink r;
    request(&r, "GET", "/v1/models", NULL);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(r.ended, 1);
    cJSON *j = body_json(&r);
    REQUIRE(j);
    CHECK_EQ_STR(cJSON_GetObjectItem(j, "object")->valuestring, "list");
    cJSON *data = cJSON_GetObjectItem(j, "data");
    CHECK_EQ_INT(cJSON_GetArraySize(data), 1);
    CHECK_EQ_STR(cJSON_GetObjectItem(cJSON_GetArrayItem(data, 0), "id")->valuestring, MODEL_ID);
    cJSON_Delete(j);
    free(r.body);
}

static void test_bad_requests(void)
{
    setup();
    static const struct { const char *method, *path, *body; int status; const char *type; } cases[] = {
        {"POST", "/v1/completions", "{\"model\": ", 400, "invalid_request_error"},
        {"POST", "/v1/completions", "[1,2]", 400, "invalid_request_error"},
        {"POST", "/v1/completions", "{\"prompt\": \"x\"}", 400, "invalid_request_error"},
        {"POST", "/v1/completions", "{\"model\": \"" MODEL_ID "\"}", 400, "invalid_request_error"},
        {"POST", "/v1/completions", "{\"model\": \"" MODEL_ID "\", \"prompt\": \"x\", \"temperature\": 9}", 400, "invalid_request_error"},
        {"POST", "/v1/completions", "{\"model\": \"" MODEL_ID "\", \"prompt\": \"x\", \"n\": 9}", 400, "invalid_request_error"},
        {"POST", "/v1/completions", "{\"model\": \"" MODEL_ID "\", \"prompt\": \"x\", \"stream\": 1}", 400, "invalid_request_error"},
        {"POST", "/v1/completions", "{\"model\": \"" MODEL_ID "\", \"prompt\": \"x\", \"seed\": 1.5}", 400, "invalid_request_error"},
        {"POST", "/v1/chat/completions", "{\"model\": \"" MODEL_ID "\", \"messages\": []}", 400, "invalid_request_error"},
        {"POST", "/v1/chat/completions", "{\"model\": \"" MODEL_ID "\", \"messages\": [{\"content\": \"x\"}]}", 400, "invalid_request_error"},
        {"POST", "/v1/completions", "{\"model\": \"nope\", \"prompt\": \"x\"}", 404, "not_found_error"},
        /* new fields: every one validated and bounded */
        {"POST", "/v1/completions", "{\"model\": \"" MODEL_ID "\", \"prompt\": \"x\", \"stop\": [\"a\",\"b\",\"c\",\"d\",\"e\"]}", 400, "invalid_request_error"},
        {"POST", "/v1/completions", "{\"model\": \"" MODEL_ID "\", \"prompt\": \"x\", \"stop\": \"\"}", 400, "invalid_request_error"},
        {"POST", "/v1/completions", "{\"model\": \"" MODEL_ID "\", \"prompt\": \"x\", \"stop\": 7}", 400, "invalid_request_error"},
        {"POST", "/v1/completions", "{\"model\": \"" MODEL_ID "\", \"prompt\": \"x\", \"logit_bias\": {\"abc\": 1}}", 400, "invalid_request_error"},
        {"POST", "/v1/completions", "{\"model\": \"" MODEL_ID "\", \"prompt\": \"x\", \"logit_bias\": {\"5\": 101}}", 400, "invalid_request_error"},
        {"POST", "/v1/completions", "{\"model\": \"" MODEL_ID "\", \"prompt\": \"x\", \"logit_bias\": {\"99999999\": 1}}", 400, "invalid_request_error"},
        {"POST", "/v1/completions", "{\"model\": \"" MODEL_ID "\", \"prompt\": \"x\", \"logprobs\": 21}", 400, "invalid_request_error"},
        {"POST", "/v1/completions", "{\"model\": \"" MODEL_ID "\", \"prompt\": \"x\", \"logprobs\": 1.5}", 400, "invalid_request_error"},
        {"POST", "/v1/completions", "{\"model\": \"" MODEL_ID "\", \"prompt\": \"x\", \"echo\": \"yes\"}", 400, "invalid_request_error"},
        {"POST", "/v1/completions", "{\"model\": \"" MODEL_ID "\", \"prompt\": [\"a\", \"b\"]}", 400, "invalid_request_error"},
        {"POST", "/v1/completions", "{\"model\": \"" MODEL_ID "\", \"prompt\": [[1, 2], [3]]}", 400, "invalid_request_error"},
        {"POST", "/v1/completions", "{\"model\": \"" MODEL_ID "\", \"prompt\": [1, -2]}", 400, "invalid_request_error"},
        {"POST", "/v1/completions", "{\"model\": \"" MODEL_ID "\", \"prompt\": [1, 99999999]}", 400, "invalid_request_error"},
        {"POST", "/v1/completions", "{\"model\": \"" MODEL_ID "\", \"prompt\": []}", 400, "invalid_request_error"},
        {"POST", "/v1/completions", "{\"model\": \"" MODEL_ID "\", \"prompt\": \"x\", \"min_p\": 2}", 400, "invalid_request_error"},
        {"POST", "/v1/completions", "{\"model\": \"" MODEL_ID "\", \"prompt\": \"x\", \"presence_penalty\": 3}", 400, "invalid_request_error"},
        {"POST", "/v1/completions", "{\"model\": \"" MODEL_ID "\", \"prompt\": \"x\", \"stream_options\": 1}", 400, "invalid_request_error"},
        {"POST", "/v1/chat/completions", "{\"model\": \"" MODEL_ID "\", \"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"top_logprobs\": 30}", 400, "invalid_request_error"},
        {"POST", "/v1/chat/completions", "{\"model\": \"" MODEL_ID "\", \"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"logprobs\": 2}", 400, "invalid_request_error"},
        {"POST", "/tokenize", "{\"content\": 5}", 400, "invalid_request_error"},
        {"POST", "/tokenize", "[]", 400, "invalid_request_error"},
        {"POST", "/detokenize", "{\"tokens\": [1, 99999999]}", 400, "invalid_request_error"},
        {"POST", "/detokenize", "{\"tokens\": \"x\"}", 400, "invalid_request_error"},
        {"POST", "/tokenize", "{\"model\": \"nope\", \"content\": \"x\"}", 404, "not_found_error"},
        {"GET", "/tokenize", NULL, 405, "invalid_request_error"},
        {"GET", "/v1/completions", NULL, 405, "invalid_request_error"},
        {"GET", "/v1/nothing", NULL, 404, "not_found_error"},
    };
    api_counters before, after;
    api_get_counters(a, &before);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        record_sink r;
        request(&r, cases[i].method, cases[i].path, cases[i].body);
        if (r.status != cases[i].status) fprintf(stderr, "  case %zu: status %d\n", i, r.status);
        CHECK_EQ_INT(r.status, cases[i].status);
        CHECK_EQ_INT(r.ended, 1);
        CHECK(is_openai_error(&r, cases[i].type));
        free(r.body);
    }
    api_get_counters(a, &after);
    CHECK_EQ_INT(after.bad_requests - before.bad_requests, sizeof cases / sizeof cases[0]);
}

/* The unknown-field rule: metadata is ignored by name, null counts as
 * absent, anything else is a 400 that names the field. */
static void test_unknown_fields(void)
{
    setup();
    static const struct { const char *body; const char *named; } refused[] = {
        {"{\"model\": \"" MODEL_ID "\", \"prompt\": \"x\", \"suffix\": \"y\"}", "'suffix'"},
        {"{\"model\": \"" MODEL_ID "\", \"prompt\": \"x\", \"best_of\": 2}", "'best_of'"},
        {"{\"model\": \"" MODEL_ID "\", \"messages\": [{\"role\": \"user\", \"content\": \"x\"}], "
         "\"functions\": [{\"name\": \"f\"}]}", "'functions'"},
        {"{\"model\": \"" MODEL_ID "\", \"messages\": [{\"role\": \"user\", \"content\": \"x\", "
         "\"audio\": {}}]}", "'audio' in a message"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        record_sink r;
        request(&r, "POST", strstr(refused[i].body, "messages") ? "/v1/chat/completions" : "/v1/completions",
                refused[i].body);
        CHECK_EQ_INT(r.status, 400);
        CHECK(r.body && strstr(r.body, refused[i].named));
        free(r.body);
    }
    record_sink r;
    request(&r, "POST", "/v1/chat/completions",
            "{\"model\": \"" MODEL_ID "\", \"messages\": [{\"role\": \"user\", \"content\": \"x\", "
            "\"name\": \"bob\"}], \"user\": \"u1\", \"store\": false, \"metadata\": {\"a\": \"b\"}, "
            "\"suffix\": null, \"max_tokens\": 1}");
    CHECK_EQ_INT(r.status, 200);
    free(r.body);
}

/* response_format: the answer always parses and fits the schema, whatever
 * the seed (the demo model knows nothing of JSON); streamed too; an
 * unsupported keyword is a 400 naming it. */
static void test_response_format(void)
{
    setup();
    for (int seed = 1; seed <= 6; seed++) {
        char body[1024];
        snprintf(body, sizeof body,
                 "{\"model\": \"" MODEL_ID "\", \"messages\": [{\"role\": \"user\", \"content\": \"Name a king.\"}],"
                 " \"max_tokens\": 300, \"seed\": %d, \"stream\": %s, \"response_format\": {\"type\": \"json_schema\","
                 " \"json_schema\": {\"name\": \"king\", \"strict\": true, \"schema\": {\"type\": \"object\","
                 " \"properties\": {\"king\": {\"type\": \"string\", \"maxLength\": 12}, \"year\": {\"type\": \"integer\"},"
                 " \"good\": {\"type\": \"boolean\"}}, \"required\": [\"king\", \"year\", \"good\"],"
                 " \"additionalProperties\": false}}}}",
                 seed, seed % 2 ? "true" : "false");
        record_sink r;
        request(&r, "POST", "/v1/chat/completions", body);
        CHECK_EQ_INT(r.status, 200);
        char content[4096] = "";
        const char *finish = NULL;
        cJSON *whole = NULL;
        if (seed % 2) { /* streamed: join the deltas */
            for (char *line = r.body ? strstr(r.body, "data: {") : NULL; line; line = strstr(line + 1, "data: {")) {
                cJSON *chunk = cJSON_Parse(line + 6 - 0);
                if (!chunk) { /* the line ends at "\n\n": cut a copy */
                    char *end = strstr(line, "\n\n");
                    char *copy = strndup(line + 6, (size_t)(end - line - 6));
                    chunk = cJSON_Parse(copy);
                    free(copy);
                }
                cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(chunk, "choices"), 0);
                cJSON *c = cJSON_GetObjectItem(cJSON_GetObjectItem(ch, "delta"), "content");
                if (cJSON_IsString(c)) strncat(content, c->valuestring, sizeof content - strlen(content) - 1);
                cJSON *f = cJSON_GetObjectItem(ch, "finish_reason");
                if (cJSON_IsString(f)) finish = strcmp(f->valuestring, "stop") == 0 ? "stop" : "other";
                cJSON_Delete(chunk);
            }
        } else {
            whole = body_json(&r);
            cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(whole, "choices"), 0);
            cJSON *c = cJSON_GetObjectItem(cJSON_GetObjectItem(ch, "message"), "content");
            if (cJSON_IsString(c)) snprintf(content, sizeof content, "%s", c->valuestring);
            cJSON *f = cJSON_GetObjectItem(ch, "finish_reason");
            finish = cJSON_IsString(f) && !strcmp(f->valuestring, "stop") ? "stop" : "other";
            cJSON_Delete(whole);
        }
        cJSON *j = cJSON_Parse(content);
        cJSON *king = cJSON_GetObjectItem(j, "king"), *year = cJSON_GetObjectItem(j, "year");
        int ok = cJSON_IsObject(j) && cJSON_GetArraySize(j) == 3 && cJSON_IsString(king) &&
                 strlen(king->valuestring) <= 12 * 4 && cJSON_IsNumber(year) &&
                 year->valuedouble == (double)(long long)year->valuedouble &&
                 cJSON_IsBool(cJSON_GetObjectItem(j, "good"));
        if (!ok) fprintf(stderr, "  seed %d: %s\n", seed, content);
        CHECK(ok);
        CHECK(finish && !strcmp(finish, "stop"));
        cJSON_Delete(j);
        free(r.body);
    }
    /* json_object */
    record_sink r;
    request(&r, "POST", "/v1/completions",
            "{\"model\": \"" MODEL_ID "\", \"prompt\": \"And God said\", \"max_tokens\": 400, \"seed\": 3,"
            " \"response_format\": {\"type\": \"json_object\"}}");
    CHECK_EQ_INT(r.status, 200);
    cJSON *j = body_json(&r);
    cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    cJSON *text = cJSON_GetObjectItem(ch, "text");
    const char *fr = cJSON_GetStringValue(cJSON_GetObjectItem(ch, "finish_reason"));
    /* A free object may run to max_tokens; when it stopped, it parses. */
    if (fr && !strcmp(fr, "stop")) {
        cJSON *o = cJSON_Parse(text->valuestring);
        CHECK(cJSON_IsObject(o));
        cJSON_Delete(o);
    }
    const char *t = cJSON_IsString(text) ? text->valuestring : "";
    t += strspn(t, " \n\t\r");
    if (t[0] != '{') fprintf(stderr, "  json_object: %s\n", text ? text->valuestring : "(none)");
    CHECK(t[0] == '{');
    cJSON_Delete(j);
    free(r.body);
    /* refused */
    request(&r, "POST", "/v1/chat/completions",
            "{\"model\": \"" MODEL_ID "\", \"messages\": [{\"role\": \"user\", \"content\": \"x\"}],"
            " \"response_format\": {\"type\": \"json_schema\", \"json_schema\": {\"name\": \"s\","
            " \"schema\": {\"type\": \"string\", \"pattern\": \"^a\"}}}}");
    CHECK_EQ_INT(r.status, 400);
    CHECK(r.body && strstr(r.body, "'pattern'"));
    free(r.body);
}

/* n: several choices, each its own sampling stream (seed + index): choice
 * i equals a single request with seed + i; streamed, each index has its
 * role, text and finish; usage counts the prompt once. */
static void test_several_choices(void)
{
    setup();
    char one[3][1024];
    int tokens = 0;
    for (int i = 0; i < 3; i++) {
        char body[512];
        snprintf(body, sizeof body, "{\"model\": \"" MODEL_ID "\", \"prompt\": \"And God said\", \"max_tokens\": 12,"
                 " \"seed\": %d}", 40 + i);
        record_sink r;
        request(&r, "POST", "/v1/completions", body);
        cJSON *j = body_json(&r);
        snprintf(one[i], sizeof one[i], "%s",
                 cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), "text")));
        tokens += cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "completion_tokens")->valueint;
        cJSON_Delete(j);
        free(r.body);
    }
    CHECK(strcmp(one[0], one[1]) || strcmp(one[1], one[2])); /* the seeds differ */
    record_sink r;
    request(&r, "POST", "/v1/completions",
            "{\"model\": \"" MODEL_ID "\", \"prompt\": \"And God said\", \"max_tokens\": 12, \"seed\": 40, \"n\": 3}");
    CHECK_EQ_INT(r.status, 200);
    cJSON *j = body_json(&r);
    cJSON *choices = cJSON_GetObjectItem(j, "choices");
    CHECK_EQ_INT(cJSON_GetArraySize(choices), 3);
    for (int i = 0; i < 3 && i < cJSON_GetArraySize(choices); i++) {
        cJSON *c = cJSON_GetArrayItem(choices, i);
        CHECK_EQ_INT(cJSON_GetObjectItem(c, "index")->valueint, i);
        CHECK_EQ_STR(cJSON_GetStringValue(cJSON_GetObjectItem(c, "text")), one[i]);
    }
    CHECK_EQ_INT(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "completion_tokens")->valueint, tokens);
    cJSON_Delete(j);
    free(r.body);

    request(&r, "POST", "/v1/chat/completions",
            "{\"model\": \"" MODEL_ID "\", \"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"max_tokens\": 6,"
            " \"seed\": 7, \"n\": 2, \"stream\": true}");
    CHECK_EQ_INT(r.status, 200);
    int roles[2] = {0}, finishes[2] = {0}, bad_index = 0;
    for (char *line = r.body ? strstr(r.body, "data: {") : NULL; line; line = strstr(line + 1, "data: {")) {
        char *end = strstr(line, "\n\n");
        char *copy = strndup(line + 6, end ? (size_t)(end - line - 6) : strlen(line + 6));
        cJSON *chunk = cJSON_Parse(copy);
        free(copy);
        cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(chunk, "choices"), 0);
        if (c) {
            int i = cJSON_GetObjectItem(c, "index")->valueint;
            if (i < 0 || i > 1) bad_index = 1;
            else {
                roles[i] += cJSON_GetObjectItem(cJSON_GetObjectItem(c, "delta"), "role") != NULL;
                finishes[i] += cJSON_IsString(cJSON_GetObjectItem(c, "finish_reason"));
            }
        }
        cJSON_Delete(chunk);
    }
    CHECK(!bad_index);
    CHECK(roles[0] == 1 && roles[1] == 1 && finishes[0] == 1 && finishes[1] == 1);
    CHECK(r.body && strstr(r.body, "data: [DONE]") && strstr(r.body, "data: [DONE]") == strrchr(r.body, '[') - 6);
    free(r.body);
}

/* /v1/embeddings: unit norm, equal inputs give equal vectors (also when
 * batched with others, and as token ids), base64 is the same floats, the
 * refusals. */
static int embedding_of(cJSON *item, float *out, int cap)
{
    cJSON *e = cJSON_GetObjectItem(item, "embedding");
    int n = 0;
    if (cJSON_IsString(e)) { /* base64 of little-endian float32 */
        static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        unsigned char bytes[65536];
        size_t nb = 0;
        unsigned acc = 0;
        int bits = 0;
        for (const char *p = e->valuestring; *p && *p != '='; p++) {
            acc = acc << 6 | (unsigned)(strchr(b64, *p) - b64);
            bits += 6;
            if (bits >= 8) { bits -= 8; bytes[nb++] = (unsigned char)(acc >> bits); }
        }
        for (size_t i = 0; i + 4 <= nb && n < cap; i += 4) {
            uint32_t u = bytes[i] | bytes[i + 1] << 8 | bytes[i + 2] << 16 | (uint32_t)bytes[i + 3] << 24;
            memcpy(&out[n++], &u, 4);
        }
        return n;
    }
    cJSON *v;
    cJSON_ArrayForEach(v, e) if (n < cap) out[n++] = (float)v->valuedouble;
    return n;
}

static void test_embeddings(void)
{
    setup();
    record_sink r;
    request(&r, "POST", "/v1/embeddings",
            "{\"model\": \"" MODEL_ID "\", \"input\": [\"In the beginning\", \"And God said\", \"In the beginning\"]}");
    CHECK_EQ_INT(r.status, 200);
    cJSON *j = body_json(&r);
    cJSON *data = cJSON_GetObjectItem(j, "data");
    REQUIRE(cJSON_GetArraySize(data) == 3);
    static float v[3][4096];
    int n[3];
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(cJSON_GetObjectItem(cJSON_GetArrayItem(data, i), "index")->valueint, i);
        n[i] = embedding_of(cJSON_GetArrayItem(data, i), v[i], 4096);
        double norm = 0;
        for (int d = 0; d < n[i]; d++) norm += (double)v[i][d] * v[i][d];
        CHECK(fabs(sqrt(norm) - 1.0) < 1e-5);
    }
    CHECK(n[0] > 16 && n[0] == n[1] && n[1] == n[2]);
    CHECK(memcmp(v[0], v[2], sizeof(float) * (size_t)n[0]) == 0); /* equal inputs, equal vectors */
    CHECK(memcmp(v[0], v[1], sizeof(float) * (size_t)n[0]) != 0);
    CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "prompt_tokens")->valueint > 3);
    CHECK_EQ_STR(cJSON_GetStringValue(cJSON_GetObjectItem(j, "object")), "list");
    cJSON_Delete(j);
    free(r.body);

    /* One input alone, in base64: the same floats. */
    request(&r, "POST", "/v1/embeddings",
            "{\"model\": \"" MODEL_ID "\", \"input\": \"In the beginning\", \"encoding_format\": \"base64\"}");
    CHECK_EQ_INT(r.status, 200);
    j = body_json(&r);
    static float b[4096];
    int nb = embedding_of(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "data"), 0), b, 4096);
    CHECK(nb == n[0] && memcmp(b, v[0], sizeof(float) * (size_t)nb) == 0);
    cJSON_Delete(j);
    free(r.body);

    /* Token ids: one array, or several. */
    request(&r, "POST", "/v1/embeddings", "{\"model\": \"" MODEL_ID "\", \"input\": [[5, 6, 7], [5, 6, 7]]}");
    CHECK_EQ_INT(r.status, 200);
    j = body_json(&r);
    int k0 = embedding_of(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "data"), 0), v[0], 4096);
    int k1 = embedding_of(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "data"), 1), v[1], 4096);
    CHECK(k0 == k1 && k0 > 0 && memcmp(v[0], v[1], sizeof(float) * (size_t)k0) == 0);
    cJSON_Delete(j);
    free(r.body);
    request(&r, "POST", "/v1/embeddings", "{\"model\": \"" MODEL_ID "\", \"input\": [5, 6, 7]}");
    CHECK_EQ_INT(r.status, 200);
    free(r.body);

    static const struct { const char *body; int status; const char *says; } bad[] = {
        {"{\"model\": \"" MODEL_ID "\", \"input\": \"x\", \"dimensions\": 8}", 400, "'dimensions'"},
        {"{\"model\": \"" MODEL_ID "\", \"input\": \"\"}", 400, "empty"},
        {"{\"model\": \"" MODEL_ID "\", \"input\": \"x\", \"encoding_format\": \"hex\"}", 400, "encoding_format"},
        {"{\"model\": \"" MODEL_ID "\"}", 400, "'input'"},
        {"{\"model\": \"" MODEL_ID "\", \"input\": [1, 99999999]}", 400, "out of range"},
        {"{\"model\": \"nope\", \"input\": \"x\"}", 404, "does not exist"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        request(&r, "POST", "/v1/embeddings", bad[i].body);
        if (r.status != bad[i].status || !r.body || !strstr(r.body, bad[i].says))
            fprintf(stderr, "  case %zu: %d %s\n", i, r.status, r.body ? r.body : "");
        CHECK_EQ_INT(r.status, bad[i].status);
        CHECK(r.body && strstr(r.body, bad[i].says));
        free(r.body);
    }
}

/* The reference: engine_generate called directly. */
static char expected[4096];
static int append_piece(void *user, const char *p, size_t n)
{
    strncat(expected, p, n);
    return 0;
}

static void test_completion_matches_engine(void)
{
    setup();
    engine_sampling s;
    engine_sampling_defaults(&s);
    s.temperature = 0;
    s.max_tokens = 24;
    engine_result res;
    char err[256];
    expected[0] = 0;
    REQUIRE(engine_generate(sched_model_at(sch, 0), "The LORD is my shepherd;", 24, &s, append_piece,
                            NULL, &res, err, sizeof err) == 0);
    REQUIRE(strlen(expected) > 10);

    record_sink r;
    request(&r, "POST", "/v1/completions",
            "{\"model\": \"" MODEL_ID "\", \"prompt\": \"The LORD is my shepherd;\", \"max_tokens\": 24, \"temperature\": 0}");
    CHECK_EQ_INT(r.status, 200);
    cJSON *j = body_json(&r);
    REQUIRE(j);
    cJSON *choice = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    CHECK_EQ_STR(cJSON_GetObjectItem(choice, "text")->valuestring, expected);
    CHECK_EQ_STR(cJSON_GetObjectItem(choice, "finish_reason")->valuestring, "length");
    CHECK_EQ_INT(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "completion_tokens")->valueint, 24);
    cJSON_Delete(j);
    free(r.body);

    /* Streamed: the concatenated chunk texts are the same text. */
    request(&r, "POST", "/v1/completions",
            "{\"model\": \"" MODEL_ID "\", \"prompt\": \"The LORD is my shepherd;\", \"max_tokens\": 24, \"temperature\": 0, \"stream\": true}");
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_STR(r.content_type, "text/event-stream");
    CHECK_EQ_INT(r.writes_after_end, 0);
    REQUIRE(r.body);
    char joined[4096] = "";
    int chunks = 0, done = 0;
    for (char *line = strtok(r.body, "\n"); line; line = strtok(NULL, "\n")) {
        if (!strcmp(line, "data: [DONE]")) { done++; continue; }
        REQUIRE(!strncmp(line, "data: ", 6));
        CHECK(!done); /* nothing after [DONE] */
        cJSON *c = cJSON_Parse(line + 6);
        REQUIRE(c);
        cJSON *t = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(c, "choices"), 0), "text");
        if (cJSON_IsString(t)) strncat(joined, t->valuestring, sizeof joined - strlen(joined) - 1);
        cJSON_Delete(c);
        chunks++;
    }
    CHECK_EQ_INT(done, 1);
    CHECK(chunks > 3);
    CHECK_EQ_STR(joined, expected);
    free(r.body);
}

static void test_chat(void)
{
    setup();
    record_sink r;
    request(&r, "POST", "/v1/chat/completions",
            "{\"model\": \"" MODEL_ID "\", \"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"},"
            "{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"Who made the world?\"}]}],"
            "\"max_tokens\": 6, \"temperature\": 0}");
    CHECK_EQ_INT(r.status, 200);
    cJSON *j = body_json(&r);
    REQUIRE(j);
    CHECK_EQ_STR(cJSON_GetObjectItem(j, "object")->valuestring, "chat.completion");
    cJSON *msg = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), "message");
    CHECK_EQ_STR(cJSON_GetObjectItem(msg, "role")->valuestring, "assistant");
    CHECK(cJSON_IsString(cJSON_GetObjectItem(msg, "content")));
    cJSON_Delete(j);
    free(r.body);
}

/* A client that goes away mid-stream: the call is aborted, the sink is never
 * touched again, and the job is cleaned up (ASan would see a leak or a use
 * after free otherwise). */
static void test_abort_mid_stream(void)
{
    setup();
    record_sink r;
    memset(&r, 0, sizeof r);
    r.sink.ops = &rec_ops;
    r.base = base;
    const char *body = "{\"model\": \"" MODEL_ID "\", \"prompt\": \"In the beginning\", \"max_tokens\": 200, \"stream\": true}";
    api_call *c = api_handle(a, "POST", "/v1/completions", body, strlen(body), &r.sink, 0);
    REQUIRE(c);
    struct timeval tick = {0, 50000};
    for (int i = 0; i < 200 && r.len < 300; i++) {
        event_base_loopexit(base, &tick);
        event_base_dispatch(base);
    }
    REQUIRE(r.len > 0);
    REQUIRE(r.ended == 0); /* still in flight, so c is still valid */
    api_call_abort(c);
    size_t len_at_abort = r.len;
    struct timeval settle = {0, 300000};
    event_base_loopexit(base, &settle);
    event_base_dispatch(base);
    CHECK_EQ_INT(r.len, len_at_abort);
    CHECK_EQ_INT(r.ended, 0);
    CHECK_EQ_INT(sched_jobs_active(sch), 0);
    free(r.body);

    /* several choices (the model has one lane: one runs, two wait): every
     * job of the call goes with it */
    memset(&r, 0, sizeof r);
    r.sink.ops = &rec_ops;
    r.base = base;
    body = "{\"model\": \"" MODEL_ID "\", \"prompt\": \"In the beginning\", \"max_tokens\": 200, \"n\": 3,"
           " \"stream\": true}";
    c = api_handle(a, "POST", "/v1/completions", body, strlen(body), &r.sink, 0);
    REQUIRE(c);
    for (int i = 0; i < 200 && r.len < 300; i++) {
        event_base_loopexit(base, &tick);
        event_base_dispatch(base);
    }
    REQUIRE(r.len > 0);
    REQUIRE(r.ended == 0);
    CHECK_EQ_INT(sched_jobs_active(sch), 3);
    api_call_abort(c);
    len_at_abort = r.len;
    event_base_loopexit(base, &settle);
    event_base_dispatch(base);
    CHECK_EQ_INT(r.len, len_at_abort);
    CHECK_EQ_INT(r.ended, 0);
    CHECK_EQ_INT(sched_jobs_active(sch), 0);
    CHECK_EQ_INT(api_calls_active(a), 0);
    free(r.body);
}

/* The data: events of an SSE body, parsed; NULL-terminated array (caller
 * frees each and the array). *done counts "data: [DONE]" lines. */
static cJSON **sse_events(record_sink *r, int *done)
{
    cJSON **ev = calloc(1024, sizeof *ev);
    int n = 0;
    *done = 0;
    char *copy = strdup(r->body ? r->body : "");
    for (char *line = strtok(copy, "\n"); line && n < 1023; line = strtok(NULL, "\n")) {
        if (!strcmp(line, "data: [DONE]")) { (*done)++; continue; }
        if (strncmp(line, "data: ", 6) == 0) ev[n++] = cJSON_Parse(line + 6);
    }
    free(copy);
    return ev;
}

static void free_events(cJSON **ev)
{
    for (int i = 0; ev[i]; i++) cJSON_Delete(ev[i]);
    free(ev);
}

static cJSON *first_choice(cJSON *j) { return cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0); }

/* Sends body to path and returns the parsed JSON answer (status 200 required). */
static cJSON *post_json(const char *path, const char *body)
{
    record_sink r;
    request(&r, "POST", path, body);
    if (r.status != 200) fprintf(stderr, "  %s -> %d %s\n", path, r.status, r.body ? r.body : "");
    cJSON *j = r.status == 200 ? body_json(&r) : NULL;
    free(r.body);
    return j;
}

/* A stop string that spans two tokens of the greedy continuation is cut
 * there, never emitted, finish_reason "stop"; the same when streamed. */
static void test_stop_across_tokens(void)
{
    setup();
    cJSON *j = post_json("/v1/completions", "{\"model\": \"" MODEL_ID "\", \"prompt\": \"The LORD is my shepherd;\", "
                         "\"max_tokens\": 24, \"temperature\": 0, \"logprobs\": 0}");
    REQUIRE(j);
    const char *full = cJSON_GetObjectItem(first_choice(j), "text")->valuestring;
    cJSON *tokens = cJSON_GetObjectItem(cJSON_GetObjectItem(first_choice(j), "logprobs"), "tokens");
    REQUIRE(cJSON_GetArraySize(tokens) == 24);
    /* The last 2 bytes of token k and the first 2 of token k + 1, for the
     * first k where all are letters or spaces and the string is new in the text. */
    char stop[8] = "";
    size_t at = 0, pos = 0;
    for (int k = 0; k + 1 < 24 && !stop[0]; k++) {
        const char *x = cJSON_GetArrayItem(tokens, k)->valuestring, *y = cJSON_GetArrayItem(tokens, k + 1)->valuestring;
        size_t nx = strlen(x);
        pos += nx;
        if (nx < 3 || strlen(y) < 2) continue;
        char cand[8];
        snprintf(cand, sizeof cand, "%.2s%.2s", x + nx - 2, y);
        int letters = 1;
        for (int i = 0; i < 4; i++) letters &= (cand[i] >= 'a' && cand[i] <= 'z') || cand[i] == ' ';
        const char *first = strstr(full, cand);
        if (letters && first && (size_t)(first - full) == pos - 2) {
            memcpy(stop, cand, 5);
            at = pos - 2;
        }
    }
    REQUIRE(stop[0]);
    char want[256];
    snprintf(want, sizeof want, "%.*s", (int)at, full);
    cJSON_Delete(j);

    char body[512];
    snprintf(body, sizeof body, "{\"model\": \"" MODEL_ID "\", \"prompt\": \"The LORD is my shepherd;\", "
             "\"max_tokens\": 24, \"temperature\": 0, \"stop\": [\"zzzz\", \"%s\"]}", stop);
    j = post_json("/v1/completions", body);
    REQUIRE(j);
    CHECK_EQ_STR(cJSON_GetObjectItem(first_choice(j), "text")->valuestring, want);
    CHECK_EQ_STR(cJSON_GetObjectItem(first_choice(j), "finish_reason")->valuestring, "stop");
    cJSON_Delete(j);

    /* streamed: nothing of the stop string in any chunk */
    snprintf(body, sizeof body, "{\"model\": \"" MODEL_ID "\", \"prompt\": \"The LORD is my shepherd;\", "
             "\"max_tokens\": 24, \"temperature\": 0, \"stop\": \"%s\", \"stream\": true, "
             "\"stream_options\": {\"include_usage\": true}}", stop);
    record_sink r;
    request(&r, "POST", "/v1/completions", body);
    CHECK_EQ_INT(r.status, 200);
    int done;
    cJSON **ev = sse_events(&r, &done);
    char joined[512] = "";
    const char *finish = NULL;
    int usage_chunks = 0;
    for (int i = 0; ev[i]; i++) {
        cJSON *ch = first_choice(ev[i]);
        cJSON *t = cJSON_GetObjectItem(ch, "text");
        if (cJSON_IsString(t)) strncat(joined, t->valuestring, sizeof joined - strlen(joined) - 1);
        cJSON *f = cJSON_GetObjectItem(ch, "finish_reason");
        if (cJSON_IsString(f)) finish = f->valuestring;
        cJSON *u = cJSON_GetObjectItem(ev[i], "usage");
        if (u) {
            usage_chunks++;
            CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(ev[i], "choices")), 0);
            CHECK(cJSON_GetObjectItem(u, "completion_tokens")->valueint > 0);
            CHECK(ev[i + 1] == NULL); /* the last chunk */
        }
    }
    CHECK_EQ_STR(joined, want);
    CHECK_EQ_STR(finish, "stop");
    CHECK_EQ_INT(usage_chunks, 1);
    CHECK_EQ_INT(done, 1);
    free_events(ev);
    free(r.body);
}

/* Token ids from /tokenize (add_special puts the BOS first), back through
 * /detokenize. */
static int tokenize(const char *text, int add_special, int32_t *ids, int cap)
{
    char body[1024];
    snprintf(body, sizeof body, "{\"content\": \"%s\", \"add_special\": %s}", text, add_special ? "true" : "false");
    cJSON *j = post_json("/tokenize", body);
    if (!j) return -1;
    cJSON *t = cJSON_GetObjectItem(j, "tokens");
    int n = cJSON_GetArraySize(t);
    for (int i = 0; i < n && i < cap; i++) ids[i] = cJSON_GetArrayItem(t, i)->valueint;
    cJSON_Delete(j);
    return n;
}

static void test_tokenize_round_trip(void)
{
    setup();
    const char *text = "In the beginning God created the heaven and the earth. \xc3\xa9t\xc3\xa9 \xe2\x80\x9cquoted\xe2\x80\x9d";
    int32_t ids[256], with_bos[256];
    int n = tokenize(text, 0, ids, 256), nb = tokenize(text, 1, with_bos, 256);
    REQUIRE(n > 5 && n < 256);
    CHECK_EQ_INT(nb, n + 1); /* the demo model adds a BOS */
    CHECK(!memcmp(with_bos + 1, ids, sizeof(int32_t) * (size_t)n));
    char body[4096] = "{\"model\": \"" MODEL_ID "\", \"tokens\": [";
    for (int i = 0; i < n; i++)
        snprintf(body + strlen(body), sizeof body - strlen(body), "%s%d", i ? "," : "", (int)ids[i]);
    strcat(body, "]}");
    cJSON *j = post_json("/detokenize", body);
    REQUIRE(j);
    CHECK_EQ_STR(cJSON_GetObjectItem(j, "content")->valuestring, text);
    cJSON_Delete(j);
}

/* A completion's string prompt parses special-token texts (as llama.cpp's
 * server does) unless "parse_special": false: "<|endoftext|>" is one token (EOS) or
 * the several of its characters. Seen through usage.prompt_tokens. */
static int prompt_tokens(const char *extra)
{
    char body[512];
    snprintf(body, sizeof body, "{\"model\": \"" MODEL_ID "\", \"prompt\": \"Amen.<|endoftext|>And\", "
             "\"max_tokens\": 0%s}", extra);
    cJSON *j = post_json("/v1/completions", body);
    if (!j) return -1;
    cJSON *u = cJSON_GetObjectItem(j, "usage");
    int n = u ? cJSON_GetObjectItem(u, "prompt_tokens")->valueint : -1;
    cJSON_Delete(j);
    return n;
}

static void test_prompt_special_tokens(void)
{
    setup();
    int32_t plain[64], special[64];
    int n_plain = tokenize("Amen.<|endoftext|>And", 1, plain, 64);
    REQUIRE(n_plain > 4);
    /* /tokenize with parse_special gives the reference. */
    cJSON *j = post_json("/tokenize", "{\"content\": \"Amen.<|endoftext|>And\", \"add_special\": true, \"parse_special\": true}");
    REQUIRE(j);
    int n_special = cJSON_GetArraySize(cJSON_GetObjectItem(j, "tokens"));
    for (int i = 0; i < n_special && i < 64; i++)
        special[i] = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "tokens"), i)->valueint;
    cJSON_Delete(j);
    REQUIRE(n_special > 2 && n_special < n_plain);
    int eos_seen = 0;
    for (int i = 0; i < n_special; i++) eos_seen |= special[i] == 4095;   /* the demo model's <|endoftext|> */
    CHECK(eos_seen);
    CHECK_EQ_INT(prompt_tokens(""), n_special);
    CHECK_EQ_INT(prompt_tokens(", \"parse_special\": true"), n_special);
    CHECK_EQ_INT(prompt_tokens(", \"parse_special\": false"), n_plain);
}

/* A token-id prompt is used as given: the string prompt's ids minus the BOS
 * give prompt_tokens one less, and with the BOS put back the same text. */
static void test_token_id_prompt(void)
{
    setup();
    int32_t ids[256];
    int n = tokenize("And God said, Let there be light:", 1, ids, 256);
    REQUIRE(n > 3 && n < 200);
    char list[2048] = "";
    for (int i = 1; i < n; i++) snprintf(list + strlen(list), sizeof list - strlen(list), "%s%d", i > 1 ? "," : "", (int)ids[i]);
    char body[4096];
    cJSON *str = post_json("/v1/completions", "{\"model\": \"" MODEL_ID "\", \"prompt\": \"And God said, Let there be light:\", \"max_tokens\": 12, \"temperature\": 0}");
    snprintf(body, sizeof body, "{\"model\": \"" MODEL_ID "\", \"prompt\": [%s], \"max_tokens\": 12, \"temperature\": 0, \"echo\": true, \"logprobs\": 0}", list);
    cJSON *nobos = post_json("/v1/completions", body);
    snprintf(body, sizeof body, "{\"model\": \"" MODEL_ID "\", \"prompt\": [[%d,%s]], \"max_tokens\": 12, \"temperature\": 0}", (int)ids[0], list);
    cJSON *bos = post_json("/v1/completions", body);
    REQUIRE(str && nobos && bos);
    CHECK_EQ_INT(cJSON_GetObjectItem(cJSON_GetObjectItem(str, "usage"), "prompt_tokens")->valueint, n);
    CHECK_EQ_INT(cJSON_GetObjectItem(cJSON_GetObjectItem(nobos, "usage"), "prompt_tokens")->valueint, n - 1);
    CHECK_EQ_INT(cJSON_GetObjectItem(cJSON_GetObjectItem(bos, "usage"), "prompt_tokens")->valueint, n);
    CHECK_EQ_STR(cJSON_GetObjectItem(first_choice(bos), "text")->valuestring,
                 cJSON_GetObjectItem(first_choice(str), "text")->valuestring);
    /* echo of an id prompt: the detokenized prompt, then the completion;
     * its first token is ids[1] (no BOS was added) with a null logprob */
    const char *echoed = cJSON_GetObjectItem(first_choice(nobos), "text")->valuestring;
    CHECK(!strncmp(echoed, "And God said, Let there be light:", 33) || !strncmp(echoed, " And God said", 13));
    cJSON *lp = cJSON_GetObjectItem(first_choice(nobos), "logprobs");
    CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(lp, "tokens")), n - 1 + 12);
    CHECK(cJSON_IsNull(cJSON_GetArrayItem(cJSON_GetObjectItem(lp, "token_logprobs"), 0)));
    CHECK(cJSON_IsNull(cJSON_GetArrayItem(cJSON_GetObjectItem(lp, "top_logprobs"), 0)));
    cJSON_Delete(str);
    cJSON_Delete(nobos);
    cJSON_Delete(bos);
}

/* echo + max_tokens 0: the prompt's own log-probabilities (what
 * lm-evaluation-harness's loglikelihood asks for), checked against
 * engine_perplexity, which scores the same tokens after a BOS its own way. */
static void test_echo_scores_prompt(void)
{
    setup();
    const char *text = "And the earth was without form, and void; and darkness was upon the face of the deep.";
    char body[1024];
    snprintf(body, sizeof body, "{\"model\": \"" MODEL_ID "\", \"prompt\": \"%s\", \"max_tokens\": 0, "
             "\"temperature\": 0, \"echo\": true, \"logprobs\": 3}", text);
    cJSON *j = post_json("/v1/completions", body);
    REQUIRE(j);
    cJSON *choice = first_choice(j);
    CHECK_EQ_STR(cJSON_GetObjectItem(choice, "text")->valuestring, text);
    CHECK_EQ_STR(cJSON_GetObjectItem(choice, "finish_reason")->valuestring, "length");
    cJSON *lp = cJSON_GetObjectItem(choice, "logprobs");
    cJSON *lps = cJSON_GetObjectItem(lp, "token_logprobs"), *tops = cJSON_GetObjectItem(lp, "top_logprobs");
    cJSON *offs = cJSON_GetObjectItem(lp, "text_offset");
    int n = cJSON_GetArraySize(lps);
    int prompt_tokens = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "prompt_tokens")->valueint;
    CHECK_EQ_INT(n, prompt_tokens);
    CHECK_EQ_INT(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "completion_tokens")->valueint, 0);
    REQUIRE(n > 10);
    CHECK(cJSON_IsNull(cJSON_GetArrayItem(lps, 0)));
    CHECK(cJSON_IsNull(cJSON_GetArrayItem(tops, 0)));
    double nll = 0;
    long last_off = -1;
    for (int i = 1; i < n; i++) {
        double x = cJSON_GetArrayItem(lps, i)->valuedouble;
        CHECK(x <= 0);
        nll -= x;
        /* top alternatives: 3, sorted, probabilities summing to at most 1,
         * the best at least as likely as the chosen token */
        cJSON *top = cJSON_GetArrayItem(tops, i);
        CHECK_EQ_INT(cJSON_GetArraySize(top), 3);
        double prev = 1, sum = 0;
        cJSON *e;
        cJSON_ArrayForEach(e, top) {
            CHECK(e->valuedouble <= prev + 1e-9);
            prev = e->valuedouble;
            sum += exp(e->valuedouble);
        }
        CHECK(sum <= 1 + 1e-6);
        CHECK(cJSON_GetArrayItem(top, 0)->valuedouble >= x - 1e-6);
        long off = (long)cJSON_GetArrayItem(offs, i)->valuedouble;
        CHECK(off >= last_off);
        last_off = off;
    }
    cJSON_Delete(j);
    engine_perplexity_result pr;
    char err[256];
    REQUIRE(engine_perplexity(sched_model_at(sch, 0), text, strlen(text), 0, &pr, err, sizeof err) == 0);
    CHECK_EQ_INT(pr.scored_tokens, n - 1);
    CHECK(fabs(nll / (n - 1) - pr.mean_nll) < 1e-4);

    /* greedy generation picks the top-1 token: its logprob is the best one */
    j = post_json("/v1/completions", "{\"model\": \"" MODEL_ID "\", \"prompt\": \"In the beginning\", \"max_tokens\": 8, "
                  "\"temperature\": 0, \"logprobs\": 2}");
    REQUIRE(j);
    lp = cJSON_GetObjectItem(first_choice(j), "logprobs");
    CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(lp, "tokens")), 8);
    for (int i = 0; i < 8; i++) {
        double x = cJSON_GetArrayItem(cJSON_GetObjectItem(lp, "token_logprobs"), i)->valuedouble;
        cJSON *top = cJSON_GetArrayItem(cJSON_GetObjectItem(lp, "top_logprobs"), i);
        CHECK_EQ_INT(cJSON_GetArraySize(top), 2);
        CHECK(fabs(cJSON_GetArrayItem(top, 0)->valuedouble - x) < 1e-6);
    }
    CHECK_EQ_INT((long)cJSON_GetArrayItem(cJSON_GetObjectItem(lp, "text_offset"), 0)->valuedouble, 0);
    cJSON_Delete(j);
}

/* Chat logprobs (content entries with bytes and top_logprobs); streamed
 * chunks carry theirs. */
static void test_chat_logprobs(void)
{
    setup();
    const char *req = "{\"model\": \"" MODEL_ID "\", \"messages\": [{\"role\": \"user\", \"content\": \"Who is my shepherd?\"}],"
                      "\"max_tokens\": 6, \"temperature\": 0, \"logprobs\": true, \"top_logprobs\": 3%s}";
    char body[512];
    snprintf(body, sizeof body, req, "");
    cJSON *j = post_json("/v1/chat/completions", body);
    REQUIRE(j);
    cJSON *content = cJSON_GetObjectItem(cJSON_GetObjectItem(first_choice(j), "logprobs"), "content");
    CHECK_EQ_INT(cJSON_GetArraySize(content), 6);
    char joined[512] = "";
    cJSON *e;
    cJSON_ArrayForEach(e, content) {
        CHECK(cJSON_IsString(cJSON_GetObjectItem(e, "token")));
        CHECK(cJSON_GetObjectItem(e, "logprob")->valuedouble <= 0);
        CHECK(cJSON_IsArray(cJSON_GetObjectItem(e, "bytes")));
        CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(e, "top_logprobs")), 3);
        strncat(joined, cJSON_GetObjectItem(e, "token")->valuestring, sizeof joined - strlen(joined) - 1);
    }
    const char *text = cJSON_GetObjectItem(cJSON_GetObjectItem(first_choice(j), "message"), "content")->valuestring;
    CHECK_EQ_STR(joined, text);
    CHECK_EQ_INT(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "completion_tokens")->valueint, 6);

    snprintf(body, sizeof body, req, ", \"stream\": true");
    record_sink r;
    request(&r, "POST", "/v1/chat/completions", body);
    int done, n_lp = 0;
    cJSON **ev = sse_events(&r, &done);
    char streamed[512] = "";
    for (int i = 0; ev[i]; i++) {
        cJSON *ch = first_choice(ev[i]);
        cJSON *c = cJSON_GetObjectItem(cJSON_GetObjectItem(ch, "delta"), "content");
        if (cJSON_IsString(c)) strncat(streamed, c->valuestring, sizeof streamed - strlen(streamed) - 1);
        n_lp += cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetObjectItem(ch, "logprobs"), "content"));
    }
    CHECK_EQ_STR(streamed, text);
    CHECK_EQ_INT(n_lp, 6);
    CHECK_EQ_INT(done, 1);
    free_events(ev);
    free(r.body);
    cJSON_Delete(j);
}

/* Sampling fields reach the sampler: a banned greedy token is not chosen,
 * a seed still reproduces, penalties change a repetitive continuation. */
static void test_sampling_fields(void)
{
    setup();
    cJSON *plain = post_json("/v1/completions", "{\"model\": \"" MODEL_ID "\", \"prompt\": \"In the beginning\", "
                             "\"max_tokens\": 1, \"temperature\": 0, \"logprobs\": 0}");
    REQUIRE(plain);
    int32_t first[4];
    REQUIRE(tokenize(cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(first_choice(plain), "logprobs"),
                                                             "tokens"), 0)->valuestring, 0, first, 4) == 1);
    char body[512];
    snprintf(body, sizeof body, "{\"model\": \"" MODEL_ID "\", \"prompt\": \"In the beginning\", \"max_tokens\": 1, "
             "\"temperature\": 0, \"logit_bias\": {\"%d\": -100}}", (int)first[0]);
    cJSON *banned = post_json("/v1/completions", body);
    REQUIRE(banned);
    CHECK(strcmp(cJSON_GetObjectItem(first_choice(banned), "text")->valuestring,
                 cJSON_GetObjectItem(first_choice(plain), "text")->valuestring) != 0);
    const char *seeded = "{\"model\": \"" MODEL_ID "\", \"prompt\": \"In the beginning\", \"max_tokens\": 20, "
                         "\"temperature\": 0.9, \"seed\": 7, \"min_p\": 0.05, \"frequency_penalty\": 0.5, "
                         "\"presence_penalty\": 0.3, \"repetition_penalty\": 1.2}";
    cJSON *x = post_json("/v1/completions", seeded), *y = post_json("/v1/completions", seeded);
    REQUIRE(x && y);
    CHECK_EQ_STR(cJSON_GetObjectItem(first_choice(x), "text")->valuestring,
                 cJSON_GetObjectItem(first_choice(y), "text")->valuestring);
    /* greedy "In the beginning" repeats ", and in the world" forever; a
     * strong frequency penalty breaks the loop */
    cJSON *loop = post_json("/v1/completions", "{\"model\": \"" MODEL_ID "\", \"prompt\": \"In the beginning\", "
                            "\"max_tokens\": 24, \"temperature\": 0}");
    cJSON *pen = post_json("/v1/completions", "{\"model\": \"" MODEL_ID "\", \"prompt\": \"In the beginning\", "
                           "\"max_tokens\": 24, \"temperature\": 0, \"frequency_penalty\": 2}");
    REQUIRE(loop && pen);
    CHECK(strstr(cJSON_GetObjectItem(first_choice(loop), "text")->valuestring, "in the world, and in the world"));
    CHECK(!strstr(cJSON_GetObjectItem(first_choice(pen), "text")->valuestring, "in the world, and in the world"));
    cJSON_Delete(plain);
    cJSON_Delete(banned);
    cJSON_Delete(x);
    cJSON_Delete(y);
    cJSON_Delete(loop);
    cJSON_Delete(pen);
}

/* The demo model has no tokenizer.chat_template: the plain template, and
 * no special-token parsing. */
static void test_chat_fallback_template(void)
{
    setup();
    engine_model *m = sched_model_at(sch, 0);
    chat_message msgs[] = {{"system", "Be brief.", NULL}, {"user", "Who made the world?", NULL}, {"tool", NULL, NULL}};
    char *out, err[256];
    size_t len;
    int parse_special = -1;
    REQUIRE(engine_render_chat(m, msgs, 3, &out, &len, &parse_special, err, sizeof err) == 0);
    CHECK_EQ_STR(out, "System: Be brief.\nUser: Who made the world?\ntool: \nAssistant:");
    CHECK_EQ_INT(len, strlen(out));
    CHECK_EQ_INT(parse_special, 0);
    CHECK_EQ_STR(engine_chat_template_error(m), "");
    free(out);
}

/* A model with a tokenizer.chat_template: chat requests are rendered with it
 * (here ChatML, Qwen's), with special-token parsing, BOS added once. */
static const char chatml[] =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

static void test_chat_uses_model_template(void)
{
    setup();
    char path[512], err[256];
    snprintf(path, sizeof path, "%s/templated.gguf", testlib_tmpdir());
    model_writer_params p = {.arch = "llama", .n_embd = 32, .n_layer = 1, .n_head = 4, .n_head_kv = 2,
                             .n_ff = 64, .n_vocab = 300, .type = GGML_TYPE_F32, .seed = 3,
                             .chat_template = chatml};
    REQUIRE(model_writer_write(path, &p) == 0);
    engine_model *m = engine_model_load(path, 1, err, sizeof err);
    REQUIRE(m);
    CHECK_EQ_STR(engine_chat_template_error(m), "");
    chat_message msgs[] = {{"system", "Be brief.", NULL}, {"user", "Hi", NULL}};
    char *out;
    size_t len;
    int parse_special = 0;
    REQUIRE(engine_render_chat(m, msgs, 2, &out, &len, &parse_special, err, sizeof err) == 0);
    CHECK_EQ_STR(out, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                      "<|im_start|>assistant\n");
    CHECK_EQ_INT(parse_special, 1);
    int32_t *ids;
    int n_ids;
    REQUIRE(engine_tokenize(m, out, len, 1, 1, &ids, &n_ids, err, sizeof err) == 0);
    free(out);
    REQUIRE(sched_add_model(sch, m) == 0);

    /* Through the API: the prompt is the rendered template, tokenized once. */
    record_sink r;
    request(&r, "POST", "/v1/chat/completions",
            "{\"model\": \"templated\", \"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"},"
            "{\"role\": \"user\", \"content\": \"Hi\"}], \"max_tokens\": 2, \"temperature\": 0}");
    CHECK_EQ_INT(r.status, 200);
    cJSON *j = body_json(&r);
    REQUIRE(j);
    CHECK_EQ_INT(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "prompt_tokens")->valueint, n_ids);
    cJSON_Delete(j);
    free(r.body);
    free(ids);
}

/* ---- tool calls on models with the families' real templates ---------------*/

static char *slurp(const char *rel)
{
    FILE *f = fopen(testlib_source_path(rel), "rb");
    if (!f) return NULL;
    char *buf = calloc(1, 1 << 16);
    size_t n = fread(buf, 1, (1 << 16) - 1, f);
    fclose(f);
    buf[n] = 0;
    return buf;
}

/* Joins a streamed chat answer: content, the tool calls' names and
 * arguments (fragments concatenated, by index), the finish reason. */
typedef struct {
    char content[4096];
    char name[4][64];
    char args[4][2048];
    char ids[4][80];
    int n_calls;
    char finish[32];
} joined;

static void join_stream(const char *body, joined *j)
{
    memset(j, 0, sizeof *j);
    for (const char *line = body ? strstr(body, "data: {") : NULL; line; line = strstr(line + 1, "data: {")) {
        const char *end = strstr(line, "\n\n");
        char *copy = strndup(line + 6, end ? (size_t)(end - line - 6) : strlen(line + 6));
        cJSON *chunk = cJSON_Parse(copy);
        free(copy);
        cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(chunk, "choices"), 0);
        cJSON *delta = cJSON_GetObjectItem(ch, "delta");
        const char *c = cJSON_GetStringValue(cJSON_GetObjectItem(delta, "content"));
        if (c) strncat(j->content, c, sizeof j->content - strlen(j->content) - 1);
        cJSON *tc;
        cJSON_ArrayForEach(tc, cJSON_GetObjectItem(delta, "tool_calls")) {
            int i = cJSON_GetObjectItem(tc, "index")->valueint;
            if (i < 0 || i >= 4) continue;
            if (i + 1 > j->n_calls) j->n_calls = i + 1;
            cJSON *fn = cJSON_GetObjectItem(tc, "function");
            const char *nm = cJSON_GetStringValue(cJSON_GetObjectItem(fn, "name"));
            const char *ar = cJSON_GetStringValue(cJSON_GetObjectItem(fn, "arguments"));
            const char *id = cJSON_GetStringValue(cJSON_GetObjectItem(tc, "id"));
            if (nm) snprintf(j->name[i], sizeof j->name[i], "%s", nm);
            if (id) snprintf(j->ids[i], sizeof j->ids[i], "%s", id);
            if (ar) strncat(j->args[i], ar, sizeof j->args[i] - strlen(j->args[i]) - 1);
        }
        const char *f = cJSON_GetStringValue(cJSON_GetObjectItem(ch, "finish_reason"));
        if (f) snprintf(j->finish, sizeof j->finish, "%s", f);
        cJSON_Delete(chunk);
    }
}

/* The arguments fit the tool's schema: city a string of at most 12
 * characters, unit one of the enum. */
static int weather_args_ok(const char *args)
{
    cJSON *obj = cJSON_Parse(args);
    const char *city = cJSON_GetStringValue(cJSON_GetObjectItem(obj, "city"));
    const char *unit = cJSON_GetStringValue(cJSON_GetObjectItem(obj, "unit"));
    int ok = cJSON_IsObject(obj) && cJSON_GetArraySize(obj) == 2 && city && strlen(city) <= 48 && unit &&
             (!strcmp(unit, "celsius") || !strcmp(unit, "fahrenheit"));
    cJSON_Delete(obj);
    return ok;
}

#define TOOLS_JSON \
    "[{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"The weather in a city\"," \
    " \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\", \"maxLength\": 12}," \
    " \"unit\": {\"enum\": [\"celsius\", \"fahrenheit\"]}}, \"required\": [\"city\", \"unit\"]," \
    " \"additionalProperties\": false}}}, {\"type\": \"function\", \"function\": {\"name\": \"get_time\"," \
    " \"parameters\": {\"type\": \"object\", \"properties\": {\"zone\": {\"type\": \"string\", \"maxLength\": 8}}," \
    " \"additionalProperties\": false}}}]"

/* For each family's real template on a random-weight model: a forced call
 * (named, and required) always parses and fits the schema, plain and
 * streamed, with finish_reason tool_calls; a history with a call and its
 * result renders (the request succeeds); auto gives a well-formed answer. */
static void test_tool_calls(void)
{
    setup();
    static const char *const families[][2] = {
        {"tools-qwen", "tests/fuzz/corpus/chat_template/qwen2.5.jinja"},
        {"tools-llama", "tests/fuzz/corpus/chat_template/llama3.2.jinja"},
        {"tools-mistral", "tests/fuzz/corpus/chat_template/mistral-v0.3.jinja"},
    };
    for (size_t f = 0; f < sizeof families / sizeof families[0]; f++) {
        char path[512], err[256];
        snprintf(path, sizeof path, "%s/%s.gguf", testlib_tmpdir(), families[f][0]);
        char *tmpl = slurp(families[f][1]);
        REQUIRE(tmpl);
        model_writer_params p = {.arch = "llama", .n_embd = 32, .n_layer = 1, .n_head = 4, .n_head_kv = 2,
                                 .n_ff = 64, .n_vocab = 300, .n_ctx = 2048, .type = GGML_TYPE_F32,
                                 .seed = 5 + f, .chat_template = tmpl};
        REQUIRE(model_writer_write(path, &p) == 0);
        free(tmpl);
        engine_model *m = engine_model_load(path, 1, err, sizeof err);
        REQUIRE(m);
        REQUIRE(sched_add_model(sch, m) == 0);
        for (int v = 0; v < 4; v++) {
            char body[4096];
            snprintf(body, sizeof body,
                     "{\"model\": \"%s\", \"messages\": [{\"role\": \"system\", \"content\": \"Use tools.\"},"
                     " {\"role\": \"user\", \"content\": \"Weather in Paris?\"}], \"tools\": " TOOLS_JSON ","
                     " \"tool_choice\": %s, \"max_tokens\": 400, \"seed\": %d, \"stream\": %s}",
                     families[f][0],
                     v < 2 ? "{\"type\": \"function\", \"function\": {\"name\": \"get_weather\"}}" : "\"required\"",
                     v, v % 2 ? "true" : "false");
            record_sink r;
            request(&r, "POST", "/v1/chat/completions", body);
            CHECK_EQ_INT(r.status, 200);
            joined j;
            if (v % 2) {
                join_stream(r.body, &j);
            } else {
                memset(&j, 0, sizeof j);
                cJSON *o = body_json(&r);
                cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0);
                cJSON *msg = cJSON_GetObjectItem(ch, "message");
                const char *fr = cJSON_GetStringValue(cJSON_GetObjectItem(ch, "finish_reason"));
                snprintf(j.finish, sizeof j.finish, "%s", fr ? fr : "");
                CHECK(cJSON_IsNull(cJSON_GetObjectItem(msg, "content")));
                cJSON *tc;
                cJSON_ArrayForEach(tc, cJSON_GetObjectItem(msg, "tool_calls")) {
                    cJSON *fn = cJSON_GetObjectItem(tc, "function");
                    if (j.n_calls >= 4) break;
                    snprintf(j.name[j.n_calls], 64, "%s", cJSON_GetStringValue(cJSON_GetObjectItem(fn, "name")));
                    snprintf(j.args[j.n_calls], 2048, "%s", cJSON_GetStringValue(cJSON_GetObjectItem(fn, "arguments")));
                    snprintf(j.ids[j.n_calls], 80, "%s", cJSON_GetStringValue(cJSON_GetObjectItem(tc, "id")));
                    CHECK_EQ_STR(cJSON_GetStringValue(cJSON_GetObjectItem(tc, "type")), "function");
                    j.n_calls++;
                }
                cJSON_Delete(o);
            }
            if (j.n_calls != 1) fprintf(stderr, "  %s v%d: %d calls: %s\n", families[f][0], v, j.n_calls, r.body);
            CHECK_EQ_INT(j.n_calls, 1);
            CHECK_EQ_STR(j.finish, "tool_calls");
            CHECK(strlen(j.ids[0]) == 9 && strspn(j.ids[0], "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") == 9);
            if (v < 2 || !strcmp(j.name[0], "get_weather")) {
                CHECK_EQ_STR(j.name[0], "get_weather");
                if (!weather_args_ok(j.args[0])) fprintf(stderr, "  %s v%d: args %s\n", families[f][0], v, j.args[0]);
                CHECK(weather_args_ok(j.args[0]));
            } else {
                CHECK_EQ_STR(j.name[0], "get_time");
                cJSON *obj = cJSON_Parse(j.args[0]);
                CHECK(cJSON_IsObject(obj));
                cJSON_Delete(obj);
            }
            free(r.body);
        }
        /* The next turn: the call and its result in the history; auto. */
        char body[4096];
        snprintf(body, sizeof body,
                 "{\"model\": \"%s\", \"messages\": [{\"role\": \"user\", \"content\": \"Weather in Paris?\"},"
                 " {\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"id\": \"abc123XYZ\", \"type\": \"function\","
                 " \"function\": {\"name\": \"get_weather\", \"arguments\": \"{\\\"city\\\": \\\"Paris\\\", \\\"unit\\\": \\\"celsius\\\"}\"}}]},"
                 " {\"role\": \"tool\", \"tool_call_id\": \"abc123XYZ\", \"content\": \"18 degrees\"}], \"tools\": " TOOLS_JSON ","
                 " \"max_tokens\": 8, \"seed\": 1}", families[f][0]);
        record_sink r;
        request(&r, "POST", "/v1/chat/completions", body);
        if (r.status != 200) fprintf(stderr, "  %s history: %s\n", families[f][0], r.body);
        CHECK_EQ_INT(r.status, 200);
        cJSON *o = body_json(&r);
        const char *fr = cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0), "finish_reason"));
        CHECK(fr && (!strcmp(fr, "stop") || !strcmp(fr, "length") || !strcmp(fr, "tool_calls")));
        cJSON_Delete(o);
        free(r.body);
    }
    /* A model whose template has no tool format: 400 that says so. */
    record_sink r;
    request(&r, "POST", "/v1/chat/completions",
            "{\"model\": \"" MODEL_ID "\", \"messages\": [{\"role\": \"user\", \"content\": \"x\"}],"
            " \"tools\": " TOOLS_JSON "}");
    CHECK_EQ_INT(r.status, 400);
    CHECK(r.body && strstr(r.body, "cannot take tools"));
    free(r.body);
}

int main(void)
{
    RUN(test_models_list);
    RUN(test_bad_requests);
    RUN(test_unknown_fields);
    RUN(test_response_format);
    RUN(test_several_choices);
    RUN(test_embeddings);
    RUN(test_completion_matches_engine);
    RUN(test_chat);
    RUN(test_abort_mid_stream);
    RUN(test_stop_across_tokens);
    RUN(test_tokenize_round_trip);
    RUN(test_token_id_prompt);
    RUN(test_echo_scores_prompt);
    RUN(test_prompt_special_tokens);
    RUN(test_chat_logprobs);
    RUN(test_sampling_fields);
    RUN(test_chat_fallback_template);
    RUN(test_chat_uses_model_template);
    RUN(test_tool_calls); /* last: it adds models, and /tokenize then needs 'model' */
    if (a) {
        api_free(a);
        sched_free(sch);
        event_base_free(base);
    }
    return testlib_finish();
}
