/* test_plan.c: plans in the record's application field, and the planner. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve/plan.h"
#include "testlib.h"

/* A model of uniform layers: 50 bytes each, 10 of overhead per stage, 100
 * more for the head (embeddings and output). */
static uint64_t need_uniform(void *ctx, int first, int end, int head)
{
    (void)ctx;
    return 10 + (head ? 100 : 0) + 50ull * (uint64_t)(end - first);
}

static plan_member member(int id, uint64_t free_bytes, int relayed, double rtt)
{
    plan_member m;
    memset(&m, 0, sizeof m);
    m.id[0] = (uint8_t)id;
    m.free_bytes = free_bytes;
    m.relayed = relayed;
    m.rtt_ms = rtt;
    m.prev_first = -1;
    return m;
}

static plan_request request(int n_layer, int force)
{
    plan_request rq = {.model = "m", .n_layer = n_layer, .need = need_uniform, .force_stages = force};
    return rq;
}

static void test_solo_when_it_fits(void)
{
    plan_member ms[2] = {member(1, 10000, 0, 0), member(2, 10000, 0, 1)};
    plan_request rq = request(24, 0);
    plan p;
    REQUIRE(plan_make(&rq, ms, 2, &p) == 0);
    CHECK_EQ_INT(p.n_stages, 1);
    CHECK_EQ_INT(p.stages[0].end, 24);
    CHECK_EQ_INT(p.stages[0].node[0], 1);
    CHECK(p.need_bytes == 110 + 50 * 24);
}

static void test_fewest_stages_proportional(void)
{
    /* 24 layers = 1310 bytes solo; the coordinator has 700, two others
     * 2000 and 600: two stages suffice (coordinator + the big one). */
    plan_member ms[3] = {member(1, 700, 0, 0), member(2, 600, 0, 0.5), member(3, 2000, 0, 2)};
    plan_request rq = request(24, 0);
    plan p;
    REQUIRE(plan_make(&rq, ms, 3, &p) == 0);
    REQUIRE(p.n_stages == 2);
    CHECK(plan_ranges_ok(&p));
    /* Lowest RTT (node 2) first, but it cannot hold the rest: node 3. */
    CHECK_EQ_INT(p.stages[1].node[0], 3);
    /* Proportional to free memory after overhead: 590 vs 1990 -> ~5.5 of 24. */
    CHECK(p.stages[0].end >= 5 && p.stages[0].end <= 6);
    for (int i = 0; i < p.n_stages; i++)
        CHECK(need_uniform(NULL, p.stages[i].first, p.stages[i].end, i == 0) <= ms[p.stages[i].node[0] - 1].free_bytes);
}

static void test_forced_split_on_equal_nodes(void)
{
    plan_member ms[3] = {member(1, 100000, 0, 0), member(2, 100000, 0, 0.1), member(3, 100000, 0, 0.2)};
    plan_request rq = request(12, 3);
    plan p;
    REQUIRE(plan_make(&rq, ms, 3, &p) == 0);
    REQUIRE(p.n_stages == 3);
    CHECK(plan_ranges_ok(&p));
    for (int i = 0; i < 3; i++) CHECK_EQ_INT(p.stages[i].end - p.stages[i].first, 4);
    CHECK_EQ_INT(p.stages[1].node[0], 2); /* by RTT */
    CHECK_EQ_INT(p.stages[2].node[0], 3);
    /* Default --split: 2 stages. */
    rq.force_stages = 2;
    REQUIRE(plan_make(&rq, ms, 3, &p) == 0);
    CHECK_EQ_INT(p.n_stages, 2);
    CHECK_EQ_INT(p.stages[0].end, 6);
}

static void test_sticky_ring_order(void)
{
    /* Nodes 2 and 3 ran layers [8, 12) and [4, 8) before: after a replan
     * with the same memory they get the same layers, whatever the RTTs. */
    plan_member ms[3] = {member(1, 100000, 0, 0), member(2, 100000, 0, 0.1), member(3, 100000, 0, 0.2)};
    ms[1].prev_first = 8;
    ms[2].prev_first = 4;
    plan_request rq = request(12, 3);
    plan p;
    REQUIRE(plan_make(&rq, ms, 3, &p) == 0);
    CHECK_EQ_INT(p.stages[1].node[0], 3);
    CHECK_EQ_INT(p.stages[1].first, 4);
    CHECK_EQ_INT(p.stages[2].node[0], 2);
    CHECK_EQ_INT(p.stages[2].first, 8);
    /* A newcomer goes after the nodes that kept their place. */
    ms[2].prev_first = -1;
    REQUIRE(plan_make(&rq, ms, 3, &p) == 0);
    CHECK_EQ_INT(p.stages[1].node[0], 2);
}

static void test_direct_before_relayed(void)
{
    /* The relayed node has more memory and a lower RTT; the direct one fits. */
    plan_member ms[3] = {member(1, 500, 0, 0), member(2, 5000, 1, 0.1), member(3, 1500, 0, 5)};
    plan_request rq = request(24, 0);
    plan p;
    REQUIRE(plan_make(&rq, ms, 3, &p) == 0);
    REQUIRE(p.n_stages == 2);
    CHECK_EQ_INT(p.stages[1].node[0], 3);
    /* Without the direct one, the relayed one is used. */
    ms[2].free_bytes = 0;
    REQUIRE(plan_make(&rq, ms, 3, &p) == 0);
    CHECK_EQ_INT(p.stages[1].node[0], 2);
}

static void test_three_stages_when_two_do_not_fit(void)
{
    /* Two stages hold at most 15 + 5 layers: three are needed, and the
     * small ones are filled exactly. */
    plan_member ms[3] = {member(1, 900, 0, 0), member(2, 260, 0, 1), member(3, 260, 0, 2)};
    plan_request rq = request(24, 0);
    plan p;
    REQUIRE(plan_make(&rq, ms, 3, &p) == 0);
    CHECK(plan_ranges_ok(&p));
    for (int i = 0; i < p.n_stages; i++)
        CHECK(need_uniform(NULL, p.stages[i].first, p.stages[i].end, i == 0) <= ms[p.stages[i].node[0] - 1].free_bytes);
    CHECK_EQ_INT(p.n_stages, 3);
}

/* Layers 0-4 of 50 bytes, layer 5 of 500. */
static uint64_t need_heavy_last(void *ctx, int first, int end, int head)
{
    (void)ctx;
    uint64_t b = 10 + (head ? 100 : 0);
    for (int l = first; l < end; l++) b += l == 5 ? 500 : 50;
    return b;
}

static void test_fill_in_turn_when_proportional_fails(void)
{
    /* Proportional gives the coordinator 2 layers and leaves 660 bytes for
     * a node with 640: each in turn then takes what fits. */
    plan_member ms[2] = {member(1, 400, 0, 0), member(2, 640, 0, 1)};
    plan_request rq = {.model = "m", .n_layer = 6, .need = need_heavy_last};
    plan p;
    REQUIRE(plan_make(&rq, ms, 2, &p) == 0);
    REQUIRE(p.n_stages == 2);
    CHECK_EQ_INT(p.stages[0].end, 5);
    CHECK_EQ_INT(p.stages[1].first, 5);
}

static void test_short_of_memory(void)
{
    plan_member ms[2] = {member(1, 500, 0, 0), member(2, 400, 0, 1)};
    plan_request rq = request(24, 0);
    plan p;
    CHECK(plan_make(&rq, ms, 2, &p) == -1);
    CHECK_EQ_INT(p.state, PLAN_PLANNING);
    CHECK_EQ_INT(p.n_stages, 0);
    CHECK(strstr(p.reason, "missing") != NULL);
    /* Forced split without enough nodes: says how many are missing. */
    plan_member big[2] = {member(1, 100000, 0, 0), member(2, 100000, 0, 1)};
    rq.force_stages = 3;
    CHECK(plan_make(&rq, big, 2, &p) == -1);
    CHECK(strstr(p.reason, "waiting for 1 more node") != NULL);
    /* Nodes with nothing free do not count. */
    big[1].free_bytes = 0;
    rq.force_stages = 2;
    CHECK(plan_make(&rq, big, 2, &p) == -1);
    /* More stages than layers. */
    rq = request(2, 3);
    plan_member three[3] = {member(1, 100000, 0, 0), member(2, 100000, 0, 1), member(3, 100000, 0, 1)};
    CHECK(plan_make(&rq, three, 3, &p) == -1);
    CHECK(strstr(p.reason, "only 2 layers") != NULL);
}

static plan sample_plan(void)
{
    plan p;
    memset(&p, 0, sizeof p);
    strcpy(p.model, "qwen2.5-7b");
    p.state = PLAN_LOADING;
    p.version = 7;
    p.n_layer = 28;
    p.need_bytes = 5ull << 30;
    p.n_stages = 3;
    int ends[3] = {10, 20, 28};
    for (int i = 0; i < 3; i++) {
        p.stages[i].node[0] = (uint8_t)(i + 1);
        p.stages[i].node[31] = 0xee;
        p.stages[i].first = i ? ends[i - 1] : 0;
        p.stages[i].end = ends[i];
        p.stages[i].state = (uint8_t)(i == 1 ? STAGE_FETCHING : STAGE_READY);
        p.stages[i].fetched_bytes = 1000u * (unsigned)i;
        p.stages[i].total_bytes = 5000;
    }
    return p;
}

/* Format 2: the plans, then the node's demand per model. */
static void test_codec_demand(void)
{
    plan ps[1] = {sample_plan()};
    plan_demand d[2] = {{"qwen2.5-7b", 12}, {"nobody-serves-this", 3}};
    uint8_t buf[MESH_MAX_APP];
    int n = plan_encode_app(ps, 1, d, 2, buf, sizeof buf);
    REQUIRE(n > 0);
    plan back[2];
    plan_demand dback[4];
    int nd = -1;
    char err[256];
    REQUIRE(plan_decode_app(buf, (size_t)n, back, 2, dback, 4, &nd, err, sizeof err) == 1);
    CHECK_EQ_INT(nd, 2);
    CHECK_EQ_STR(dback[1].model, "nobody-serves-this");
    CHECK_EQ_INT(dback[1].per_min, 3);
    CHECK_EQ_STR(back[0].model, "qwen2.5-7b");
    /* The plans-only reader takes it too, and the caller's bound on demand holds. */
    CHECK_EQ_INT(plan_decode_list(buf, (size_t)n, back, 2, err, sizeof err), 1);
    CHECK_EQ_INT(plan_decode_app(buf, (size_t)n, back, 2, dback, 1, &nd, err, sizeof err), 1);
    CHECK_EQ_INT(nd, 1);
    for (int cut = 1; cut < n; cut++)
        CHECK(plan_decode_app(buf, (size_t)cut, back, 2, dback, 4, &nd, err, sizeof err) == -1);
    /* Demand alone (no plans), and a bad name in it. */
    n = plan_encode_app(NULL, 0, d, 1, buf, sizeof buf);
    REQUIRE(n > 0);
    CHECK_EQ_INT(plan_decode_app(buf, (size_t)n, back, 2, dback, 4, &nd, err, sizeof err), 0);
    CHECK_EQ_INT(nd, 1);
    buf[4] = 0x01; /* a control character in the model name */
    CHECK_EQ_INT(plan_decode_app(buf, (size_t)n, back, 2, dback, 4, &nd, err, sizeof err), -1);
    /* An empty demand list in format 2 is malformed (format 1 says "none"). */
    uint8_t empty[3] = {2, 0, 0};
    CHECK_EQ_INT(plan_decode_app(empty, 3, back, 2, dback, 4, &nd, err, sizeof err), -1);
}

/* Format 3: plans, demand (maybe none), the files the node holds, the
 * models it finds saturated. */
static int decode3(const uint8_t *buf, size_t n, plan *back, plan_demand *dback, int *nd, plan_extra *x)
{
    char err[256];
    return plan_decode_app_files(buf, n, back, 2, dback, 4, nd, x, err, sizeof err);
}

static void test_codec_files(void)
{
    plan ps[1] = {sample_plan()};
    plan_demand d[1] = {{"qwen2.5-7b", 12}};
    plan_file f[2];
    memset(f, 0, sizeof f);
    for (int i = 0; i < 32; i++) f[0].sha256[i] = (uint8_t)i, f[1].sha256[i] = (uint8_t)(255 - i);
    f[0].size = 6868576;
    strcpy(f[0].ref, "TestOrg/kjv-GGUF/kjv-llama-6.3M-q8_0.gguf");
    f[1].size = 1ull << 40;
    strcpy(f[1].ref, "org/repo/sub/x-00001-of-00002.gguf");
    plan_saturated sat[1] = {{"qwen2.5-7b"}};
    uint8_t buf[MESH_MAX_APP];
    plan back[2];
    plan_demand dback[4];
    plan_file fback[PLAN_MAX_FILES];
    plan_saturated sback[PLAN_MAX_PLANS];
    int nd = -1;
    char err[256];
    for (int with_demand = 0; with_demand < 2; with_demand++) {
        plan_extra x = {.files = f, .n_files = 2, .saturated = sat, .n_saturated = 1};
        int n = plan_encode_app_files(ps, 1, d, with_demand, &x, buf, sizeof buf);
        REQUIRE(n > 0);
        CHECK_EQ_INT(buf[0], 3);
        plan_extra y = {.files = fback, .max_files = PLAN_MAX_FILES, .saturated = sback, .max_saturated = 4};
        REQUIRE(decode3(buf, (size_t)n, back, dback, &nd, &y) == 1);
        CHECK_EQ_INT(nd, with_demand);
        CHECK_EQ_INT(y.n_files, 2);
        CHECK_EQ_INT(y.n_saturated, 1);
        CHECK_EQ_STR(sback[0].model, "qwen2.5-7b");
        CHECK(!memcmp(fback[1].sha256, f[1].sha256, 32));
        CHECK(fback[1].size == f[1].size);
        CHECK_EQ_STR(fback[0].ref, f[0].ref);
        /* A reader that does not want the rest still takes the plans and demand. */
        CHECK_EQ_INT(plan_decode_app(buf, (size_t)n, back, 2, dback, 4, &nd, err, sizeof err), 1);
        plan_extra one = {.files = fback, .max_files = 1};
        CHECK_EQ_INT(decode3(buf, (size_t)n, back, dback, &nd, &one), 1);
        CHECK_EQ_INT(one.n_files, 1);
        CHECK_EQ_INT(one.n_saturated, 0);
        for (int cut = 1; cut < n; cut++) CHECK(decode3(buf, (size_t)cut, back, dback, &nd, &y) == -1);
        /* A control byte in the saturated model's name: malformed. */
        buf[n - 2] = 0x01;
        CHECK_EQ_INT(decode3(buf, (size_t)n, back, dback, &nd, &y), -1);
    }
    /* Files alone; saturated models alone. */
    plan_extra files_only = {.files = f, .n_files = 1};
    int n = plan_encode_app_files(NULL, 0, NULL, 0, &files_only, buf, sizeof buf);
    REQUIRE(n > 0);
    plan_extra y = {.files = fback, .max_files = PLAN_MAX_FILES, .saturated = sback, .max_saturated = 4};
    CHECK_EQ_INT(decode3(buf, (size_t)n, back, dback, &nd, &y), 0);
    CHECK_EQ_INT(y.n_files, 1);
    /* A space in the reference: malformed. */
    buf[n - 3] = ' ';
    CHECK_EQ_INT(decode3(buf, (size_t)n, back, dback, &nd, &y), -1);
    plan_extra sat_only = {.saturated = sat, .n_saturated = 1};
    n = plan_encode_app_files(NULL, 0, NULL, 0, &sat_only, buf, sizeof buf);
    REQUIRE(n > 0);
    CHECK_EQ_INT(decode3(buf, (size_t)n, back, dback, &nd, &y), 0);
    CHECK_EQ_INT(y.n_saturated, 1);
    CHECK_EQ_INT(y.n_files, 0);
    /* A size of 0: malformed. */
    plan_file zero = f[0];
    zero.size = 0;
    plan_extra z = {.files = &zero, .n_files = 1};
    n = plan_encode_app_files(NULL, 0, NULL, 0, &z, buf, sizeof buf);
    REQUIRE(n > 0);
    CHECK_EQ_INT(decode3(buf, (size_t)n, back, dback, &nd, &y), -1);
    /* The encoder refuses a bad reference and too many files. */
    plan_file bad = f[0];
    strcpy(bad.ref, "a b");
    plan_extra b = {.files = &bad, .n_files = 1};
    CHECK_EQ_INT(plan_encode_app_files(NULL, 0, NULL, 0, &b, buf, sizeof buf), -1);
    plan_extra many = {.files = f, .n_files = PLAN_MAX_FILES + 1};
    CHECK_EQ_INT(plan_encode_app_files(NULL, 0, NULL, 0, &many, buf, sizeof buf), -1);
    /* Format 3 with neither files nor saturated models: malformed (1 or 2 says "none"). */
    uint8_t empty[5] = {3, 0, 0, 0, 0};
    CHECK_EQ_INT(decode3(empty, 5, back, dback, &nd, &y), -1);
}

static void test_codec(void)
{
    plan ps[2] = {sample_plan(), sample_plan()};
    strcpy(ps[1].model, "other");
    ps[1].state = PLAN_PLANNING;
    ps[1].n_stages = 0;
    strcpy(ps[1].reason, "not enough memory: 1.0 MiB missing");
    uint8_t buf[MESH_MAX_APP];
    int n = plan_encode_list(ps, 2, buf, sizeof buf);
    REQUIRE(n > 0);
    plan back[4];
    char err[256];
    REQUIRE(plan_decode_list(buf, (size_t)n, back, 4, err, sizeof err) == 2);
    CHECK_EQ_STR(back[0].model, "qwen2.5-7b");
    CHECK_EQ_INT(back[0].version, 7);
    CHECK_EQ_INT(back[0].n_stages, 3);
    CHECK_EQ_INT(back[0].stages[1].first, 10);
    CHECK_EQ_INT(back[0].stages[1].state, STAGE_FETCHING);
    CHECK(back[0].stages[2].fetched_bytes == 2000);
    CHECK(memcmp(back[0].stages[2].node, ps[0].stages[2].node, MESH_ID_BYTES) == 0);
    CHECK_EQ_STR(back[1].reason, ps[1].reason);
    CHECK_EQ_INT(plan_decode_list(buf, 0, back, 4, err, sizeof err), 0);

    /* Every truncation is refused, never read past. */
    for (int cut = 1; cut < n; cut++) CHECK(plan_decode_list(buf, (size_t)cut, back, 4, err, sizeof err) == -1);
    /* Trailing bytes, too many plans for the caller. */
    buf[n] = 0;
    CHECK(plan_decode_list(buf, (size_t)n + 1, back, 4, err, sizeof err) == -1);
    CHECK(plan_decode_list(buf, (size_t)n, back, 1, err, sizeof err) == -1);

    /* Ranges that do not cover the layers, unknown states. */
    plan bad = sample_plan();
    bad.stages[1].first = 11;
    n = plan_encode_list(&bad, 1, buf, sizeof buf);
    CHECK(plan_decode_list(buf, (size_t)n, back, 4, err, sizeof err) == -1);
    CHECK(strstr(err, "cover") != NULL);
    bad = sample_plan();
    bad.stages[2].end = 27;
    n = plan_encode_list(&bad, 1, buf, sizeof buf);
    CHECK(plan_decode_list(buf, (size_t)n, back, 4, err, sizeof err) == -1);
    bad = sample_plan();
    bad.stages[0].state = 9;
    n = plan_encode_list(&bad, 1, buf, sizeof buf);
    CHECK(plan_decode_list(buf, (size_t)n, back, 4, err, sizeof err) == -1);
    bad = sample_plan();
    bad.state = 3;
    n = plan_encode_list(&bad, 1, buf, sizeof buf);
    CHECK(plan_decode_list(buf, (size_t)n, back, 4, err, sizeof err) == -1);
    bad = sample_plan();
    strcpy(bad.model, "bad\nname");
    n = plan_encode_list(&bad, 1, buf, sizeof buf);
    CHECK(plan_decode_list(buf, (size_t)n, back, 4, err, sizeof err) == -1);

    /* The most plans of the most stages do not fit one field: the encoder says so. */
    static plan many[PLAN_MAX_PLANS];
    for (int i = 0; i < PLAN_MAX_PLANS; i++) {
        many[i] = sample_plan();
        many[i].n_stages = PLAN_MAX_STAGES;
        many[i].n_layer = PLAN_MAX_STAGES;
        for (int s = 0; s < PLAN_MAX_STAGES; s++) {
            many[i].stages[s].first = s;
            many[i].stages[s].end = s + 1;
        }
    }
    CHECK(plan_encode_list(many, PLAN_MAX_PLANS, buf, sizeof buf) == -1);
    n = plan_encode_list(many, 2, buf, sizeof buf);
    REQUIRE(n > 0);
    CHECK_EQ_INT(plan_decode_list(buf, (size_t)n, back, 4, err, sizeof err), 2);

    /* Seed corpus for fuzz_plan. */
    const char *dir = getenv("LLMESH_WRITE_CORPUS");
    if (dir) {
        char path[512];
        snprintf(path, sizeof path, "%s/two_plans", dir);
        FILE *f = fopen(path, "wb");
        if (f) {
            int m = plan_encode_list(ps, 2, buf, sizeof buf);
            fwrite(buf, 1, (size_t)m, f);
            fclose(f);
        }
    }
}

int main(void)
{
    RUN(test_solo_when_it_fits);
    RUN(test_fewest_stages_proportional);
    RUN(test_forced_split_on_equal_nodes);
    RUN(test_sticky_ring_order);
    RUN(test_direct_before_relayed);
    RUN(test_three_stages_when_two_do_not_fit);
    RUN(test_fill_in_turn_when_proportional_fails);
    RUN(test_short_of_memory);
    RUN(test_codec);
    RUN(test_codec_demand);
    RUN(test_codec_files);
    return testlib_finish();
}
