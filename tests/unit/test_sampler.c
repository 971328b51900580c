/* test_sampler.c: greedy, temperature, top-k, top-p, min-p, penalties,
 * logit biases and seeding of the sampler, including checks of the sampled
 * distribution itself. */
#include "engine/sampler.h"
#include "testlib.h"

#include <math.h>
#include <stdlib.h>

enum { V = 1000 };

static void fill_logits(float *l, int n, unsigned seed)
{
    srand(seed);
    for (int i = 0; i < n; i++) l[i] = (float)((double)rand() / RAND_MAX * 8.0 - 4.0);
}

static void test_greedy_is_argmax(void)
{
    float l[V];
    fill_logits(l, V, 1);
    int32_t best = 0;
    for (int i = 1; i < V; i++) if (l[i] > l[best]) best = i;
    sampler_params p = {.temperature = 0, .top_k = 0, .top_p = 1, .seed = 5};
    sampler *s = sampler_new(V, &p);
    REQUIRE(s);
    for (int i = 0; i < 10; i++) CHECK_EQ_INT(sampler_sample(s, l), best);
    sampler_free(s);

    /* ties: the lowest id wins; NaN never wins */
    float t[5] = {1, 3, NAN, 3, 2};
    CHECK_EQ_INT(sampler_argmax(t, 5), 1);
    float n[3] = {NAN, NAN, -INFINITY};
    CHECK_EQ_INT(sampler_argmax(n, 3), 0);
}

static void test_top_k_1_and_tiny_top_p_are_greedy(void)
{
    float l[V];
    for (unsigned k = 0; k < 20; k++) {
        fill_logits(l, V, 100 + k);
        int32_t best = sampler_argmax(l, V);
        sampler_params pk = {.temperature = 1.5f, .top_k = 1, .top_p = 1, .seed = k};
        sampler_params pp = {.temperature = 1.5f, .top_k = 0, .top_p = 1e-6f, .seed = k};
        sampler_params pz = {.temperature = 1.5f, .top_k = 50, .top_p = 0, .seed = k};
        sampler *a = sampler_new(V, &pk), *b = sampler_new(V, &pp), *c = sampler_new(V, &pz);
        REQUIRE(a && b && c);
        for (int i = 0; i < 20; i++) {
            CHECK_EQ_INT(sampler_sample(a, l), best);
            CHECK_EQ_INT(sampler_sample(b, l), best);
            CHECK_EQ_INT(sampler_sample(c, l), best);
        }
        sampler_free(a);
        sampler_free(b);
        sampler_free(c);
    }
    /* a flat distribution with a tiny top_p still returns the first token */
    float flat[V] = {0};
    sampler_params p = {.temperature = 1, .top_k = 0, .top_p = 1e-6f, .seed = 3};
    sampler *s = sampler_new(V, &p);
    REQUIRE(s);
    CHECK_EQ_INT(sampler_sample(s, flat), 0);
    sampler_free(s);
}

static void test_seed_reproducible(void)
{
    float l[V];
    fill_logits(l, V, 7);
    sampler_params p = {.temperature = 0.9f, .top_k = 40, .top_p = 0.95f, .seed = 42};
    sampler *a = sampler_new(V, &p), *b = sampler_new(V, &p);
    p.seed = 43;
    sampler *c = sampler_new(V, &p);
    REQUIRE(a && b && c);
    int differ = 0;
    for (int i = 0; i < 200; i++) {
        int32_t x = sampler_sample(a, l), y = sampler_sample(b, l), z = sampler_sample(c, l);
        CHECK_EQ_INT(x, y);
        differ += x != z;
    }
    CHECK(differ > 0);
    sampler_free(a);
    sampler_free(b);
    sampler_free(c);
}

/* Samples many times from known logits and compares frequencies with the
 * expected probabilities (5 standard deviations). */
static void check_distribution(const float *logits, int n, sampler_params p, const double *want)
{
    enum { DRAWS = 100000 };
    int counts[16] = {0};
    sampler *s = sampler_new(n, &p);
    REQUIRE(s);
    for (int i = 0; i < DRAWS; i++) {
        int32_t t = sampler_sample(s, logits);
        REQUIRE(t >= 0 && t < n);
        counts[t]++;
    }
    sampler_free(s);
    for (int i = 0; i < n; i++) {
        double f = (double)counts[i] / DRAWS;
        double sd = sqrt(want[i] * (1 - want[i]) / DRAWS);
        if (fabs(f - want[i]) > 5 * sd + 1e-9)
            fprintf(stderr, "  token %d: frequency %.4f, expected %.4f\n", i, f, want[i]);
        CHECK(fabs(f - want[i]) <= 5 * sd + 1e-9);
    }
}

static void test_distribution(void)
{
    /* probabilities 0.4 0.3 0.2 0.1 at temperature 1 */
    float l[4] = {logf(0.4f), logf(0.3f), logf(0.2f), logf(0.1f)};
    double plain[4] = {0.4, 0.3, 0.2, 0.1};
    check_distribution(l, 4, (sampler_params){.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = 11}, plain);

    /* temperature 0.5 squares the probabilities: 16:9:4:1 */
    double hot[4] = {16 / 30.0, 9 / 30.0, 4 / 30.0, 1 / 30.0};
    check_distribution(l, 4, (sampler_params){.temperature = 0.5f, .top_k = 0, .top_p = 1.0f, .seed = 12}, hot);

    /* top_k 2 renormalises the two best: 4:3 */
    double k2[4] = {4 / 7.0, 3 / 7.0, 0, 0};
    check_distribution(l, 4, (sampler_params){.temperature = 1.0f, .top_k = 2, .top_p = 1.0f, .seed = 13}, k2);

    /* top_p 0.6: 0.4 is not enough, 0.4 + 0.3 reaches it: the same 4:3 */
    check_distribution(l, 4, (sampler_params){.temperature = 1.0f, .top_k = 0, .top_p = 0.6f, .seed = 14}, k2);

    /* top_p 0.75: three tokens (0.9 >= 0.75): 4:3:2 */
    double p3[4] = {4 / 9.0, 3 / 9.0, 2 / 9.0, 0};
    check_distribution(l, 4, (sampler_params){.temperature = 1.0f, .top_k = 0, .top_p = 0.75f, .seed = 15}, p3);
    /* top_p measures the distribution left by top_k: after top_k 3 the
     * probabilities are 4/9 3/9 2/9, so 0.75 needs two and 0.8 three */
    check_distribution(l, 4, (sampler_params){.temperature = 1.0f, .top_k = 3, .top_p = 0.75f, .seed = 16}, k2);
    check_distribution(l, 4, (sampler_params){.temperature = 1.0f, .top_k = 3, .top_p = 0.8f, .seed = 17}, p3);
}

static void test_random_uniform(void)
{
    sampler_params p = {.temperature = 1, .seed = 99};
    sampler *s = sampler_new(4, &p);
    REQUIRE(s);
    double sum = 0;
    int buckets[10] = {0};
    for (int i = 0; i < 100000; i++) {
        float u = sampler_random(s);
        REQUIRE(u >= 0 && u < 1);
        sum += u;
        buckets[(int)(u * 10)]++;
    }
    CHECK(fabs(sum / 100000 - 0.5) < 0.01);
    for (int i = 0; i < 10; i++) CHECK(buckets[i] > 9500 && buckets[i] < 10500);
    sampler_free(s);
}

static void test_extreme_logits(void)
{
    float l[4] = {-INFINITY, 5, INFINITY, NAN};
    sampler_params p = {.temperature = 1, .top_k = 0, .top_p = 0.9f, .seed = 1};
    sampler *s = sampler_new(4, &p);
    REQUIRE(s);
    CHECK_EQ_INT(sampler_sample(s, l), 2);
    sampler_free(s);
    float m[3] = {NAN, 1, NAN};
    s = sampler_new(3, &p);
    REQUIRE(s);
    for (int i = 0; i < 10; i++) CHECK_EQ_INT(sampler_sample(s, m), 1);
    sampler_free(s);
    /* a tiny temperature must not overflow */
    float q[3] = {1, 1.001f, 0.5f};
    sampler_params tiny = {.temperature = 1e-30f, .top_k = 0, .top_p = 1, .seed = 1};
    s = sampler_new(3, &tiny);
    REQUIRE(s);
    CHECK_EQ_INT(sampler_sample(s, q), 1);
    sampler_free(s);
    CHECK(sampler_new(0, &tiny) == NULL);
}

static void test_min_p(void)
{
    float l[4] = {logf(0.4f), logf(0.3f), logf(0.2f), logf(0.1f)};
    /* min_p 0.3: 0.1 is 0.25 of the best and goes; 0.2 is 0.5 and stays */
    double p3[4] = {4 / 9.0, 3 / 9.0, 2 / 9.0, 0};
    check_distribution(l, 4, (sampler_params){.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = 21, .min_p = 0.3f}, p3);
    double k2[4] = {4 / 7.0, 3 / 7.0, 0, 0};
    check_distribution(l, 4, (sampler_params){.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = 22, .min_p = 0.6f}, k2);
    /* a min_p above 1 still keeps the most likely token */
    double one[4] = {1, 0, 0, 0};
    check_distribution(l, 4, (sampler_params){.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = 23, .min_p = 2.0f}, one);
    /* measured on the tempered distribution: at T 0.5 the ratios square,
     * 0.3/0.4 -> 0.5625, so min_p 0.6 keeps only the best */
    check_distribution(l, 4, (sampler_params){.temperature = 0.5f, .top_k = 0, .top_p = 1.0f, .seed = 24, .min_p = 0.6f}, one);
}

static void test_logit_bias(void)
{
    float l[5] = {1, 3, 2, 0, -1};
    /* -100 bans the argmax: greedy takes the next best */
    sampler_bias ban[] = {{1, -100}, {99, 5}, {-3, 5}}; /* out-of-range ids are ignored */
    sampler_params p = {.temperature = 0, .seed = 1, .bias = ban, .n_bias = 3};
    sampler *s = sampler_new(5, &p);
    REQUIRE(s);
    CHECK_EQ_INT(sampler_sample(s, l), 2);
    CHECK(l[1] == 3); /* the caller's logits are untouched */
    sampler_free(s);
    /* a banned token is never sampled, at any temperature */
    p.temperature = 2;
    s = sampler_new(5, &p);
    REQUIRE(s);
    for (int i = 0; i < 2000; i++) CHECK(sampler_sample(s, l) != 1);
    sampler_free(s);
    /* a positive bias can make a token win */
    sampler_bias up[] = {{4, 4.5f}};
    p = (sampler_params){.temperature = 0, .bias = up, .n_bias = 1};
    s = sampler_new(5, &p);
    REQUIRE(s);
    CHECK_EQ_INT(sampler_sample(s, l), 4);
    sampler_free(s);
    /* biases shift the distribution by exp(bias): {0, log 2} on equal logits -> 1:2 */
    float flat[2] = {0, 0};
    sampler_bias half[] = {{1, logf(2.0f)}};
    double want[2] = {1 / 3.0, 2 / 3.0};
    check_distribution(flat, 2, (sampler_params){.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = 31, .bias = half, .n_bias = 1}, want);
}

static void test_repeat_penalty(void)
{
    float l[4] = {2.0f, 1.9f, -1.0f, -1.05f};
    sampler_params p = {.temperature = 0, .repeat_penalty = 1.1f, .repeat_last_n = 2};
    sampler *s = sampler_new(4, &p);
    REQUIRE(s);
    CHECK_EQ_INT(sampler_sample(s, l), 0);
    sampler_accept(s, 0, 0); /* a prompt token counts for the repetition penalty */
    CHECK_EQ_INT(sampler_sample(s, l), 1); /* 2 / 1.1 < 1.9 */
    sampler_accept(s, 0, 1);
    sampler_accept(s, 0, 1); /* repeats in the window penalise once: still 2/1.1 */
    CHECK_EQ_INT(sampler_sample(s, l), 1);
    sampler_accept(s, 3, 1);
    sampler_accept(s, 3, 1); /* token 0 left the window of 2 */
    CHECK_EQ_INT(sampler_sample(s, l), 0);
    sampler_free(s);
    /* negative logits are multiplied: -1 * 1.1 < -1.05 */
    float neg[2] = {-1.0f, -1.05f};
    s = sampler_new(2, &p);
    REQUIRE(s);
    sampler_accept(s, 0, 0);
    CHECK_EQ_INT(sampler_sample(s, neg), 1);
    sampler_free(s);
}

static void test_presence_frequency(void)
{
    float l[3] = {1.0f, 0.5f, 0.0f};
    sampler_params p = {.temperature = 0, .frequency_penalty = 0.3f};
    sampler *s = sampler_new(3, &p);
    REQUIRE(s);
    sampler_accept(s, 0, 0);
    sampler_accept(s, 0, 0); /* prompt tokens are not counted (OpenAI) */
    CHECK_EQ_INT(sampler_sample(s, l), 0);
    sampler_accept(s, 0, 1); /* 1 - 0.3 = 0.7 > 0.5 */
    CHECK_EQ_INT(sampler_sample(s, l), 0);
    sampler_accept(s, 0, 1); /* 1 - 0.6 = 0.4 < 0.5 */
    CHECK_EQ_INT(sampler_sample(s, l), 1);
    sampler_free(s);

    p = (sampler_params){.temperature = 0, .presence_penalty = 0.6f};
    s = sampler_new(3, &p);
    REQUIRE(s);
    sampler_accept(s, 0, 1); /* 1 - 0.6 = 0.4 < 0.5, whatever the count */
    CHECK_EQ_INT(sampler_sample(s, l), 1);
    sampler_accept(s, 1, 1); /* 0.4, -0.1, 0: token 0 again */
    CHECK_EQ_INT(sampler_sample(s, l), 0);
    sampler_accept(s, 0, 1); /* still 0.4 (presence does not grow): -0.1 < 0 keeps token 0 */
    CHECK_EQ_INT(sampler_sample(s, l), 0);
    sampler_free(s);

    /* exact shift: frequency 0.5 with two counts moves token 0 by -1.0, so
     * {log 2, 0} with token 0 seen twice is e^(log 2 - 1) : 1 */
    float two[2] = {logf(2.0f), 0};
    p = (sampler_params){.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = 41, .frequency_penalty = 0.5f};
    s = sampler_new(2, &p);
    REQUIRE(s);
    sampler_accept(s, 0, 1);
    sampler_accept(s, 0, 1);
    enum { DRAWS = 100000 };
    int zeros = 0;
    for (int i = 0; i < DRAWS; i++) zeros += sampler_sample(s, two) == 0;
    sampler_free(s);
    double want = 2 * exp(-1.0) / (2 * exp(-1.0) + 1);
    CHECK(fabs((double)zeros / DRAWS - want) < 5 * sqrt(want * (1 - want) / DRAWS));
}

static void test_penalties_seed_reproducible(void)
{
    float l[V];
    fill_logits(l, V, 8);
    sampler_bias b[] = {{3, -100}, {7, 2}};
    sampler_params p = {.temperature = 0.9f, .top_k = 40, .top_p = 0.95f, .seed = 42, .min_p = 0.05f,
                        .repeat_penalty = 1.3f, .repeat_last_n = 16, .presence_penalty = 0.2f,
                        .frequency_penalty = 0.1f, .bias = b, .n_bias = 2};
    sampler *x = sampler_new(V, &p), *y = sampler_new(V, &p);
    REQUIRE(x && y);
    for (int i = 0; i < 300; i++) {
        int32_t tx = sampler_sample(x, l), ty = sampler_sample(y, l);
        CHECK_EQ_INT(tx, ty);
        CHECK(tx != 3);
        sampler_accept(x, tx, 1);
        sampler_accept(y, ty, 1);
    }
    sampler_free(x);
    sampler_free(y);
}

int main(void)
{
    RUN(test_greedy_is_argmax);
    RUN(test_top_k_1_and_tiny_top_p_are_greedy);
    RUN(test_seed_reproducible);
    RUN(test_distribution);
    RUN(test_random_uniform);
    RUN(test_extreme_logits);
    RUN(test_min_p);
    RUN(test_logit_bias);
    RUN(test_repeat_penalty);
    RUN(test_presence_frequency);
    RUN(test_penalties_seed_reproducible);
    return testlib_finish();
}
