/* test_prom.c: the Prometheus text format writer (lib/prom.c): HELP and
 * TYPE lines, label escaping, number formatting, and histograms written
 * cumulatively with +Inf, _sum and _count. The served /metrics is parsed by
 * a real parser in tests/integration/metrics.sh. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lib/prom.h"
#include "testlib.h"

static void test_family_and_samples(void)
{
    prom_buf b = {0};
    prom_family(&b, "x_requests_total", "counter", "Requests.\nWith a \\ and \"quotes\".");
    prom_sample(&b, "x_requests_total", (const char *[]){"model", "a\"b\\c\nd", "code", "200", NULL}, 3);
    prom_sample(&b, "x_requests_total", NULL, 12345678901234.0);
    prom_family(&b, "x_gauge", "gauge", "A gauge.");
    prom_sample(&b, "x_gauge", (const char *[]){"k", "", NULL}, 0.25);
    prom_sample(&b, "x_gauge", NULL, NAN);
    prom_sample(&b, "x_gauge", NULL, -INFINITY);
    char *t = prom_buf_take(&b);
    REQUIRE(t);
    CHECK_EQ_STR(t,
                 "# HELP x_requests_total Requests.\\nWith a \\\\ and \"quotes\".\n"
                 "# TYPE x_requests_total counter\n"
                 "x_requests_total{model=\"a\\\"b\\\\c\\nd\",code=\"200\"} 3\n"
                 "x_requests_total 12345678901234\n"
                 "# HELP x_gauge A gauge.\n"
                 "# TYPE x_gauge gauge\n"
                 "x_gauge{k=\"\"} 0.25\n"
                 "x_gauge NaN\n"
                 "x_gauge -Inf\n");
    free(t);
    CHECK(b.text == NULL && b.len == 0);
    t = prom_buf_take(&b); /* an empty buffer gives an empty string */
    REQUIRE(t);
    CHECK_EQ_STR(t, "");
    free(t);
}

static void test_histogram(void)
{
    prom_histogram h;
    prom_histogram_init(&h, (const double[]){0.1, 0.5, 1}, 3);
    prom_histogram_observe(&h, 0.05);
    prom_histogram_observe(&h, 0.1);  /* on a bound: le means <= */
    prom_histogram_observe(&h, 0.7);
    prom_histogram_observe(&h, 30);
    CHECK_EQ_INT(h.count, 4);
    prom_buf b = {0};
    prom_family(&b, "x_seconds", "histogram", "H.");
    prom_histogram_write(&b, "x_seconds", (const char *[]){"model", "m", NULL}, &h);
    prom_histogram_init(&h, NULL, 0); /* +Inf only */
    prom_histogram_write(&b, "x_seconds", NULL, &h);
    char *t = prom_buf_take(&b);
    REQUIRE(t);
    CHECK_EQ_STR(t,
                 "# HELP x_seconds H.\n"
                 "# TYPE x_seconds histogram\n"
                 "x_seconds_bucket{model=\"m\",le=\"0.1\"} 2\n"
                 "x_seconds_bucket{model=\"m\",le=\"0.5\"} 2\n"
                 "x_seconds_bucket{model=\"m\",le=\"1\"} 3\n"
                 "x_seconds_bucket{model=\"m\",le=\"+Inf\"} 4\n"
                 "x_seconds_sum{model=\"m\"} 30.85\n"
                 "x_seconds_count{model=\"m\"} 4\n"
                 "x_seconds_bucket{le=\"+Inf\"} 0\n"
                 "x_seconds_sum 0\n"
                 "x_seconds_count 0\n");
    free(t);
}

int main(void)
{
    RUN(test_family_and_samples);
    RUN(test_histogram);
    return testlib_finish();
}
