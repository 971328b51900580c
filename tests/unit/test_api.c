/* test_api.c: the OpenAI API layer over a real scheduler and the demo model,
 * with no mesh and no HTTP: requests go straight to api_handle with a sink
 * that records what the API answers. */
#include "testlib.h"

#include <cjson/cJSON.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "serve/api.h"
#include "serve/scheduler.h"

#define MODEL_ID "kjv-llama-6.3M-q8_0"

typedef struct {
    api_sink sink;
    int begun, ended, writes_after_end;
    int status;
    char content_type[64];
    char *body;
    size_t len;
    struct event_base *base;
} record_sink;

static void rec_begin(api_sink *s, int status, const char *ct)
{
    record_sink *r = (record_sink *)s;
    r->begun++;
    r->status = status;
    snprintf(r->content_type, sizeof r->content_type, "%s", ct);
}

static void rec_write(api_sink *s, const char *data, size_t len)
{
    record_sink *r = (record_sink *)s;
    if (r->ended) r->writes_after_end++;
    r->body = realloc(r->body, r->len + len + 1);
    memcpy(r->body + r->len, data, len);
    r->len += len;
    r->body[r->len] = 0;
}

static void rec_end(api_sink *s)
{
    record_sink *r = (record_sink *)s;
    r->ended++;
    event_base_loopbreak(r->base);
}

static const api_sink_ops rec_ops = {rec_begin, rec_write, rec_end};

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

/* Sends a request and runs the loop until the answer ends (10 s at most). */
static void request(record_sink *r, const char *method, const char *path, const char *body)
{
    memset(r, 0, sizeof *r);
    r->sink.ops = &rec_ops;
    r->base = base;
    api_call *c = api_handle(a, method, path, body, body ? strlen(body) : 0, &r->sink, 0);
    if (c) {
        struct timeval limit = {30, 0};
        event_base_loopexit(base, &limit);
        event_base_dispatch(base);
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
        {"POST", "/v1/completions", "{\"model\": \"" MODEL_ID "\", \"prompt\": \"x\", \"n\": 2}", 400, "invalid_request_error"},
        {"POST", "/v1/completions", "{\"model\": \"" MODEL_ID "\", \"prompt\": \"x\", \"stream\": 1}", 400, "invalid_request_error"},
        {"POST", "/v1/completions", "{\"model\": \"" MODEL_ID "\", \"prompt\": \"x\", \"seed\": 1.5}", 400, "invalid_request_error"},
        {"POST", "/v1/chat/completions", "{\"model\": \"" MODEL_ID "\", \"messages\": []}", 400, "invalid_request_error"},
        {"POST", "/v1/chat/completions", "{\"model\": \"" MODEL_ID "\", \"messages\": [{\"content\": \"x\"}]}", 400, "invalid_request_error"},
        {"POST", "/v1/completions", "{\"model\": \"nope\", \"prompt\": \"x\"}", 404, "not_found_error"},
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
}

int main(void)
{
    RUN(test_models_list);
    RUN(test_bad_requests);
    RUN(test_completion_matches_engine);
    RUN(test_chat);
    RUN(test_abort_mid_stream);
    if (a) {
        api_free(a);
        sched_free(sch);
        event_base_free(base);
    }
    return testlib_finish();
}
