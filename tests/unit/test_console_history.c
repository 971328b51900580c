/* test_console_history.c: the console's traffic history
 * (serve/console_history.c): rates from totals, TTFT per interval, the
 * queue, nulls where there is no value, the ring's bound on points and the
 * bound on models. Against a real node and a fresh browser page:
 * tests/integration/console.sh. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve/console_history.h"
#include "testlib.h"

static cJSON *parse(console_history *h, uint64_t now)
{
    char *text = console_history_json(h, now);
    REQUIRE(text);
    cJSON *j = cJSON_Parse(text);
    free(text);
    REQUIRE(j);
    return j;
}

static const cJSON *model_of(const cJSON *j, const char *name)
{
    const cJSON *m;
    cJSON_ArrayForEach(m, cJSON_GetObjectItem(j, "models")) {
        if (!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(m, "model")), name)) return m;
    }
    return NULL;
}

/* Element i of a model's series: its number, or -1 for null. */
static double at(const cJSON *m, const char *series, int i)
{
    const cJSON *x = cJSON_GetArrayItem(cJSON_GetObjectItem(m, series), i);
    REQUIRE(x);
    return cJSON_IsNull(x) ? -1 : x->valuedouble;
}

static void test_rates(void)
{
    console_history *h = console_history_new(1000);
    REQUIRE(h);
    /* 0..5 s: 10 requests, 200 tokens, 4 first tokens in 0.2 s in all; 3 queued. */
    console_history_sample a = {.model = "m", .requests = 10, .completion_tokens = 200, .ttft_count = 4,
                                .ttft_seconds = 0.2, .queued = 3};
    console_history_record(h, 6000, &a, 1);
    /* 5..10 s: nothing new; still served here, none queued. */
    a.queued = 0;
    console_history_record(h, 11000, &a, 1);
    /* 10..12.5 s: 5 more requests and 50 tokens, 1 first token in 0.5 s. */
    a = (console_history_sample){.model = "m", .requests = 15, .completion_tokens = 250, .ttft_count = 5,
                                 .ttft_seconds = 0.7, .queued = 1};
    console_history_record(h, 13500, &a, 1);
    CHECK_EQ_INT(console_history_points(h), 3);
    cJSON *j = parse(h, 14000);
    CHECK_EQ_INT(cJSON_GetObjectItem(j, "interval_ms")->valueint, CONSOLE_HISTORY_INTERVAL_MS);
    CHECK_EQ_INT(cJSON_GetObjectItem(j, "max_points")->valueint, CONSOLE_HISTORY_POINTS);
    const cJSON *ago = cJSON_GetObjectItem(j, "ago_ms");
    CHECK_EQ_INT(cJSON_GetArraySize(ago), 3);
    CHECK_EQ_INT(cJSON_GetArrayItem(ago, 0)->valueint, 8000);
    CHECK_EQ_INT(cJSON_GetArrayItem(ago, 2)->valueint, 500);
    const cJSON *m = model_of(j, "m");
    REQUIRE(m);
    CHECK(at(m, "req_s", 0) == 2);
    CHECK(at(m, "tok_s", 0) == 40);
    CHECK(at(m, "ttft_ms", 0) == 50);
    CHECK(at(m, "queued", 0) == 3);
    CHECK(at(m, "req_s", 1) == 0);
    CHECK(at(m, "ttft_ms", 1) == -1);   /* no generation finished: null, not 0 */
    CHECK(at(m, "queued", 1) == 0);
    CHECK(at(m, "req_s", 2) == 2);
    CHECK(at(m, "tok_s", 2) == 20);
    CHECK(at(m, "ttft_ms", 2) == 500);
    CHECK(at(m, "queued", 2) == 1);
    cJSON_Delete(j);
    console_history_free(h);
}

/* A model first seen later gets nulls before; one with no sample has no
 * traffic (0) and no queue (null); a total that went down gives null. */
static void test_models_come_and_go(void)
{
    console_history *h = console_history_new(0);
    REQUIRE(h);
    console_history_sample a = {.model = "a", .requests = 5, .queued = -1};
    console_history_record(h, 5000, &a, 1);
    console_history_sample both[2] = {{.model = "a", .requests = 5, .queued = -1},
                                      {.model = "b", .requests = 10, .completion_tokens = 5, .queued = -1}};
    console_history_record(h, 10000, both, 2);
    console_history_record(h, 15000, NULL, 0);
    both[1].requests = 4; /* went down: not possible in one process, but no nonsense rate */
    console_history_record(h, 20000, both, 2);
    console_history_record(h, 20000, both, 2); /* no time passed: ignored */
    CHECK_EQ_INT(console_history_points(h), 4);
    cJSON *j = parse(h, 20000);
    const cJSON *ma = model_of(j, "a"), *mb = model_of(j, "b");
    REQUIRE(ma && mb);
    CHECK(at(ma, "req_s", 0) == 1);
    CHECK(at(ma, "req_s", 1) == 0);
    CHECK(at(ma, "queued", 0) == -1);
    CHECK(at(mb, "req_s", 0) == -1);
    CHECK(at(mb, "req_s", 1) == 2);
    CHECK(at(mb, "tok_s", 1) == 1);
    CHECK(at(mb, "req_s", 2) == 0);
    CHECK(at(mb, "req_s", 3) == -1);
    cJSON_Delete(j);
    console_history_free(h);
}

/* The ring keeps the last CONSOLE_HISTORY_POINTS points, oldest first. */
static void test_points_bounded(void)
{
    console_history *h = console_history_new(0);
    REQUIRE(h);
    console_history_sample a = {.model = "m", .queued = 0};
    for (int i = 1; i <= CONSOLE_HISTORY_POINTS + 7; i++) {
        a.requests = (uint64_t)i * i; /* rate grows: (2i - 1) per second */
        console_history_record(h, (uint64_t)i * 1000, &a, 1);
    }
    CHECK_EQ_INT(console_history_points(h), CONSOLE_HISTORY_POINTS);
    cJSON *j = parse(h, (CONSOLE_HISTORY_POINTS + 7) * 1000);
    CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(j, "ago_ms")), CONSOLE_HISTORY_POINTS);
    const cJSON *m = model_of(j, "m");
    REQUIRE(m);
    CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(m, "req_s")), CONSOLE_HISTORY_POINTS);
    CHECK(at(m, "req_s", 0) == 2 * 8 - 1);
    CHECK(at(m, "req_s", CONSOLE_HISTORY_POINTS - 1) == 2 * (CONSOLE_HISTORY_POINTS + 7) - 1);
    CHECK_EQ_INT(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "ago_ms"), 0)->valueint,
                 (CONSOLE_HISTORY_POINTS - 1) * 1000);
    cJSON_Delete(j);
    console_history_free(h);
}

/* At most CONSOLE_HISTORY_MODELS models; a slot whose model went quiet for
 * the whole window goes to a new one; quiet models are not listed. */
static void test_models_bounded(void)
{
    console_history *h = console_history_new(0);
    REQUIRE(h);
    console_history_sample s[CONSOLE_HISTORY_MODELS + 1];
    char names[CONSOLE_HISTORY_MODELS + 1][16];
    for (int i = 0; i <= CONSOLE_HISTORY_MODELS; i++) {
        snprintf(names[i], sizeof names[i], "m%d", i);
        s[i] = (console_history_sample){.model = names[i], .requests = 1, .queued = -1};
    }
    console_history_record(h, 1000, s, CONSOLE_HISTORY_MODELS + 1);
    cJSON *j = parse(h, 1000);
    CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(j, "models")), CONSOLE_HISTORY_MODELS);
    CHECK(!model_of(j, names[CONSOLE_HISTORY_MODELS]));
    cJSON_Delete(j);
    /* A whole window with traffic on m32 only, then m32 takes a slot. */
    uint64_t t = 1000;
    for (int i = 0; i < CONSOLE_HISTORY_POINTS; i++) console_history_record(h, t += 1000, NULL, 0);
    j = parse(h, t);
    CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(j, "models")), 0);
    cJSON_Delete(j);
    s[CONSOLE_HISTORY_MODELS].requests = 3;
    console_history_record(h, t += 1000, &s[CONSOLE_HISTORY_MODELS], 1);
    j = parse(h, t);
    const cJSON *m = model_of(j, names[CONSOLE_HISTORY_MODELS]);
    CHECK(m && at(m, "req_s", CONSOLE_HISTORY_POINTS - 1) == 3); /* taken from 0: first seen now */
    CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(j, "models")), 1);
    cJSON_Delete(j);
    console_history_free(h);
}

int main(void)
{
    RUN(test_rates);
    RUN(test_models_come_and_go);
    RUN(test_points_bounded);
    RUN(test_models_bounded);
    return testlib_finish();
}
