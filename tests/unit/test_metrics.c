/* test_metrics.c: the /metrics registry (serve/metrics.c): answers by model
 * and code, generations' tokens and histograms, and the bounds on label
 * values that come from requests (32 models, then "_other"; a 404 names no
 * model). The whole document against real nodes: tests/integration/metrics.sh. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve/metrics.h"
#include "testlib.h"

/* 1 when text has this exact line. */
static int has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)); p += n)
        if ((p == text || p[-1] == '\n') && p[n] == '\n') return 1;
    return 0;
}

static void test_requests_and_generations(void)
{
    metrics *m = metrics_new();
    REQUIRE(m);
    metrics_count_request(m, "tiny", 200);
    metrics_count_request(m, "tiny", 200);
    metrics_count_request(m, "tiny", 503);
    metrics_count_request(m, "made-up", 404);   /* no model label for a 404 */
    metrics_count_request(m, NULL, 401);
    metrics_count_generation(m, "tiny", 4, 8, 0.02);
    metrics_count_generation(m, "tiny", 3, 1, 0.2);
    /* Each gap is one observation: 2 ms, 3 ms and 40 ms. */
    metrics_observe_gaps(m, "tiny", (const uint32_t[]){2000, 3000}, 2);
    metrics_observe_gaps(m, "tiny", (const uint32_t[]){40000}, 1);
    char *t = metrics_render(m, NULL);
    REQUIRE(t);
    CHECK(has_line(t, "llmesh_http_requests_total{model=\"tiny\",code=\"200\"} 2"));
    CHECK(has_line(t, "llmesh_http_requests_total{model=\"tiny\",code=\"503\"} 1"));
    CHECK(has_line(t, "llmesh_http_requests_total{model=\"\",code=\"404\"} 1"));
    CHECK(has_line(t, "llmesh_http_requests_total{model=\"\",code=\"401\"} 1"));
    CHECK(!strstr(t, "made-up"));
    CHECK(has_line(t, "llmesh_generations_total{model=\"tiny\"} 2"));
    CHECK(has_line(t, "llmesh_prompt_tokens_total{model=\"tiny\"} 7"));
    CHECK(has_line(t, "llmesh_completion_tokens_total{model=\"tiny\"} 9"));
    CHECK(has_line(t, "llmesh_time_to_first_token_seconds_bucket{model=\"tiny\",le=\"0.025\"} 1"));
    CHECK(has_line(t, "llmesh_time_to_first_token_seconds_bucket{model=\"tiny\",le=\"0.25\"} 2"));
    CHECK(has_line(t, "llmesh_time_to_first_token_seconds_count{model=\"tiny\"} 2"));
    CHECK(has_line(t, "llmesh_inter_token_latency_seconds_count{model=\"tiny\"} 3"));
    CHECK(has_line(t, "llmesh_inter_token_latency_seconds_bucket{model=\"tiny\",le=\"0.0025\"} 1"));
    CHECK(has_line(t, "llmesh_inter_token_latency_seconds_bucket{model=\"tiny\",le=\"0.005\"} 2"));
    CHECK(has_line(t, "llmesh_inter_token_latency_seconds_bucket{model=\"tiny\",le=\"0.05\"} 3"));
    CHECK(has_line(t, "# TYPE llmesh_time_to_first_token_seconds histogram"));
    free(t);
    metrics_free(m);
}

static void test_model_names_bounded(void)
{
    metrics *m = metrics_new();
    REQUIRE(m);
    char name[32];
    for (int i = 0; i < METRICS_MAX_MODELS + 10; i++) {
        snprintf(name, sizeof name, "model-%d", i);
        metrics_count_request(m, name, 200);
    }
    metrics_count_request(m, "a \"quoted\\\" name", 200); /* escaped, if it got a slot */
    char *t = metrics_render(m, NULL);
    REQUIRE(t);
    CHECK(has_line(t, "llmesh_http_requests_total{model=\"model-31\",code=\"200\"} 1"));
    CHECK(!strstr(t, "model-32"));
    CHECK(has_line(t, "llmesh_http_requests_total{model=\"_other\",code=\"200\"} 11"));
    free(t);

    metrics_free(m);
    m = metrics_new();
    REQUIRE(m);
    metrics_count_request(m, "a \"quoted\\\" name\n", 200);
    t = metrics_render(m, NULL);
    REQUIRE(t);
    CHECK(has_line(t, "llmesh_http_requests_total{model=\"a \\\"quoted\\\\\\\" name\\n\",code=\"200\"} 1"));
    free(t);
    metrics_free(m);
}

int main(void)
{
    RUN(test_requests_and_generations);
    RUN(test_model_names_bounded);
    return testlib_finish();
}
