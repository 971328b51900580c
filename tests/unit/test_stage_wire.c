/* test_stage_wire.c: the pipeline's frames round-trip, and every malformed
 * one is refused without reading past its end. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve/plan.h"
#include "serve/stage_wire.h"
#include "testlib.h"

static void save(const char *name, const uint8_t *p, int n)
{
    const char *dir = getenv("LLMESH_WRITE_CORPUS");
    if (!dir || n <= 0) return;
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(p, 1, (size_t)n, f);
        fclose(f);
    }
}

static stage_assign sample_assign(void)
{
    stage_assign a;
    memset(&a, 0, sizeof a);
    a.version = 3;
    memset(a.model_hash, 0xab, 32);
    strcpy(a.model, "kjv-llama-6.3M-q8_0");
    a.n_layer = 8;
    a.first = 3;
    a.end = 6;
    a.stage = 1;
    a.n_stages = 3;
    memset(a.next, 0x42, MESH_ID_BYTES);
    a.n_ctx = 256;
    a.n_lanes = 2;
    a.n_embd = 256;
    a.dtype = STAGE_DTYPE_F32;
    a.need_bytes = 123456789;
    a.kv_type = 1; /* F32: not the zero default, so the round trip shows it is carried */
    return a;
}

static void test_assign(void)
{
    stage_assign a = sample_assign(), b;
    uint8_t buf[STAGE_CONTROL_MAX_FRAME];
    char err[256];
    int n = stage_encode_assign(&a, buf, sizeof buf);
    REQUIRE(n > 0);
    save("assign", buf, n);
    REQUIRE(stage_decode_assign(buf, (size_t)n, &b, err, sizeof err) == 0);
    CHECK(memcmp(&a, &b, sizeof a) == 0);
    for (int cut = 0; cut < n; cut++) CHECK(stage_decode_assign(buf, (size_t)cut, &b, err, sizeof err) == -1);
    /* Out-of-range layers, stages, lanes, dtypes. */
    stage_assign bad = sample_assign();
    bad.end = 9;
    n = stage_encode_assign(&bad, buf, sizeof buf);
    CHECK(stage_decode_assign(buf, (size_t)n, &b, err, sizeof err) == -1);
    CHECK(strstr(err, "out of bounds") != NULL);
    bad = sample_assign();
    bad.first = bad.end;
    n = stage_encode_assign(&bad, buf, sizeof buf);
    CHECK(stage_decode_assign(buf, (size_t)n, &b, err, sizeof err) == -1);
    bad = sample_assign();
    bad.stage = 0;
    n = stage_encode_assign(&bad, buf, sizeof buf);
    CHECK(stage_decode_assign(buf, (size_t)n, &b, err, sizeof err) == -1);
    bad = sample_assign();
    bad.n_lanes = 0;
    n = stage_encode_assign(&bad, buf, sizeof buf);
    CHECK(stage_decode_assign(buf, (size_t)n, &b, err, sizeof err) == -1);
    bad = sample_assign();
    bad.dtype = 7;
    n = stage_encode_assign(&bad, buf, sizeof buf);
    CHECK(stage_decode_assign(buf, (size_t)n, &b, err, sizeof err) == -1);
    bad = sample_assign();
    bad.kv_type = 2;
    n = stage_encode_assign(&bad, buf, sizeof buf);
    CHECK(stage_decode_assign(buf, (size_t)n, &b, err, sizeof err) == -1);
    CHECK(strstr(err, "KV type 2") != NULL);
    /* Trailing bytes. */
    n = stage_encode_assign(&a, buf, sizeof buf);
    CHECK(stage_decode_assign(buf, (size_t)n + 1, &b, err, sizeof err) == -1);
    /* Too small a buffer to encode into. */
    CHECK(stage_encode_assign(&a, buf, 10) == -1);
}

static void test_status_stats_messages(void)
{
    uint8_t buf[STAGE_CONTROL_MAX_FRAME];
    char err[256];
    stage_status s = {STAGE_FETCHING, 100, 1000, 5000}, s2;
    int n = stage_encode_status(&s, buf, sizeof buf);
    save("status", buf, n);
    REQUIRE(stage_decode_status(buf, (size_t)n, &s2, err, sizeof err) == 0);
    CHECK(s2.fetched_bytes == 100 && s2.total_bytes == 1000 && s2.memory_bytes == 5000);
    s.fetched_bytes = 2000; /* more than the total */
    n = stage_encode_status(&s, buf, sizeof buf);
    CHECK(stage_decode_status(buf, (size_t)n, &s2, err, sizeof err) == -1);
    s.fetched_bytes = 0;
    s.state = 9;
    n = stage_encode_status(&s, buf, sizeof buf);
    CHECK(stage_decode_status(buf, (size_t)n, &s2, err, sizeof err) == -1);

    stage_stats t = {1, 2, 3, 4, 5, 6}, t2;
    n = stage_encode_stats(&t, buf, sizeof buf);
    save("stats", buf, n);
    REQUIRE(stage_decode_stats(buf, (size_t)n, &t2, err, sizeof err) == 0);
    CHECK(memcmp(&t, &t2, sizeof t) == 0);

    char msg[STAGE_MAX_MESSAGE + 1];
    uint16_t lane;
    n = stage_encode_message(STAGE_FAIL, 7, "position 9 after 4 cached\n", buf, sizeof buf);
    save("fail", buf, n);
    REQUIRE(stage_decode_message(buf, (size_t)n, &lane, msg, sizeof msg, err, sizeof err) == 0);
    CHECK_EQ_INT(lane, 7);
    CHECK_EQ_STR(msg, "position 9 after 4 cached "); /* control characters blanked */
    char longmsg[400];
    memset(longmsg, 'x', sizeof longmsg - 1);
    longmsg[sizeof longmsg - 1] = 0;
    n = stage_encode_message(STAGE_REFUSE, 0, longmsg, buf, sizeof buf);
    REQUIRE(stage_decode_message(buf, (size_t)n, &lane, msg, sizeof msg, err, sizeof err) == 0);
    CHECK_EQ_INT((int)strlen(msg), STAGE_MAX_MESSAGE);
    buf[4] = '\n'; /* a control character from a peer */
    CHECK(stage_decode_message(buf, (size_t)n, &lane, msg, sizeof msg, err, sizeof err) == -1);
}

static void test_hello_and_states(void)
{
    uint8_t buf[4096];
    char err[256];
    stage_hello h, h2;
    memset(&h, 0, sizeof h);
    memset(h.coordinator, 9, MESH_ID_BYTES);
    strcpy(h.model, "m");
    h.version = 5;
    h.stage = 2;
    int n = stage_encode_hello(&h, buf, sizeof buf);
    save("hello", buf, n);
    REQUIRE(stage_decode_hello(buf, (size_t)n, &h2, err, sizeof err) == 0);
    CHECK(memcmp(&h, &h2, sizeof h) == 0);
    for (int cut = 0; cut < n; cut++) CHECK(stage_decode_hello(buf, (size_t)cut, &h2, err, sizeof err) == -1);

    /* FORWARD: a step of two lanes' pieces (3 and 2 positions) of width 4. */
    stage_states s = {.dtype = STAGE_DTYPE_F32, .n_pieces = 2};
    s.pieces[0] = (stage_piece){.lane = 1, .pos = 10, .n = 3, .rows = 1};
    s.pieces[1] = (stage_piece){.lane = 0, .pos = 0, .n = 2, .rows = 2};
    s.n_trail = 2; /* as stage 3 receives it: stages 1 and 2's times */
    s.trail[0] = (stage_time){.compute_us = 1500, .wait_us = 7};
    s.trail[1] = (stage_time){.compute_us = 0xfffffff0u, .wait_us = 0};
    int head = stage_encode_states_header(STAGE_FORWARD, &s, buf, sizeof buf);
    CHECK_EQ_INT(head, 4 + 2 * 9 + 2 * 8);
    CHECK(stage_encode_states_header(STAGE_FORWARD, &s, buf, (size_t)head - 1) == -1);
    float values[20];
    for (int i = 0; i < 20; i++) values[i] = (float)i * 0.5f;
    memcpy(buf + head, values, sizeof values);
    n = head + (int)sizeof values;
    save("forward", buf, n);
    stage_states d;
    REQUIRE(stage_decode_states(buf, (size_t)n, 4, &d, err, sizeof err) == 0);
    CHECK_EQ_INT(d.n_pieces, 2);
    CHECK_EQ_INT(d.n_rows, 5);
    CHECK_EQ_INT(d.pieces[0].lane, 1);
    CHECK_EQ_INT(d.pieces[0].pos, 10);
    CHECK_EQ_INT(d.pieces[0].n, 3);
    CHECK_EQ_INT(d.pieces[0].rows, 1);
    CHECK_EQ_INT(d.pieces[1].lane, 0);
    CHECK_EQ_INT(d.pieces[1].n, 2);
    CHECK_EQ_INT(d.pieces[1].rows, 2);
    CHECK_EQ_INT(d.n_trail, 2);
    CHECK(d.trail[0].compute_us == 1500 && d.trail[0].wait_us == 7 && d.trail[1].compute_us == 0xfffffff0u);
    CHECK(d.data == buf + head && d.data_len == sizeof values);
    /* The width the receiver expects decides the length. */
    CHECK(stage_decode_states(buf, (size_t)n, 5, &d, err, sizeof err) == -1);
    CHECK(stage_decode_states(buf, (size_t)n - 1, 4, &d, err, sizeof err) == -1);
    for (int cut = 0; cut < head; cut++) CHECK(stage_decode_states(buf, (size_t)cut, 4, &d, err, sizeof err) == -1);
    /* OUTPUT asks for no rows. */
    buf[0] = STAGE_OUTPUT;
    CHECK(stage_decode_states(buf, (size_t)n, 4, &d, err, sizeof err) == -1);
    s.pieces[0].rows = s.pieces[1].rows = 0;
    stage_encode_states_header(STAGE_OUTPUT, &s, buf, sizeof buf);
    CHECK(stage_decode_states(buf, (size_t)n, 4, &d, err, sizeof err) == 0);
    save("output", buf, n);
    /* Zero positions; too many in a piece or in all; a lane twice; out of
     * range; no pieces or too many; an unknown kind. */
    s.pieces[0].rows = 1;
    stage_states bad = s;
    bad.pieces[1].n = 0;
    stage_encode_states_header(STAGE_FORWARD, &bad, buf, sizeof buf);
    CHECK(stage_decode_states(buf, (size_t)head + 12 * 4, 4, &d, err, sizeof err) == -1);
    bad = s;
    bad.pieces[0].n = STAGE_MAX_TOKENS + 1;
    stage_encode_states_header(STAGE_FORWARD, &bad, buf, sizeof buf);
    CHECK(stage_decode_states(buf, (size_t)head + (STAGE_MAX_TOKENS + 3) * 16, 4, &d, err, sizeof err) == -1);
    bad = s;
    bad.pieces[0].n = STAGE_MAX_TOKENS - 1; /* with the other's 2: one too many */
    stage_encode_states_header(STAGE_FORWARD, &bad, buf, sizeof buf);
    CHECK(stage_decode_states(buf, (size_t)head + (STAGE_MAX_TOKENS + 1) * 16, 4, &d, err, sizeof err) == -1);
    bad.pieces[0].n = STAGE_MAX_TOKENS - 2; /* exactly the bound */
    stage_encode_states_header(STAGE_FORWARD, &bad, buf, sizeof buf);
    CHECK(stage_decode_states(buf, (size_t)head + STAGE_MAX_TOKENS * 16, 4, &d, err, sizeof err) == 0);
    bad = s;
    bad.pieces[1].lane = 1;
    stage_encode_states_header(STAGE_FORWARD, &bad, buf, sizeof buf);
    CHECK(stage_decode_states(buf, (size_t)n, 4, &d, err, sizeof err) == -1);
    bad = s;
    bad.pieces[1].lane = STAGE_MAX_LANES;
    stage_encode_states_header(STAGE_FORWARD, &bad, buf, sizeof buf);
    CHECK(stage_decode_states(buf, (size_t)n, 4, &d, err, sizeof err) == -1);
    bad = s;
    bad.pieces[1].rows = 3;
    stage_encode_states_header(STAGE_FORWARD, &bad, buf, sizeof buf);
    CHECK(stage_decode_states(buf, (size_t)n, 4, &d, err, sizeof err) == -1);
    /* No pieces: an empty step (the last stage's acknowledgement), no values. */
    stage_states none = {.dtype = STAGE_DTYPE_F32, .n_trail = 1};
    CHECK_EQ_INT(stage_encode_states_header(STAGE_OUTPUT, &none, buf, sizeof buf), 12);
    REQUIRE(stage_decode_states(buf, 12, 4, &d, err, sizeof err) == 0);
    CHECK(d.n_pieces == 0 && d.n_rows == 0 && d.data_len == 0 && d.n_trail == 1);
    save("output-empty", buf, 12);
    buf[12] = 0;
    CHECK(stage_decode_states(buf, 13, 4, &d, err, sizeof err) == -1); /* a byte of values too many */
    for (int cut = 0; cut < 12; cut++) CHECK(stage_decode_states(buf, (size_t)cut, 4, &d, err, sizeof err) == -1);
    buf[3] = STAGE_MAX_TRAIL + 1; /* a trail longer than any plan */
    CHECK(stage_decode_states(buf, 4 + 8 * (STAGE_MAX_TRAIL + 1), 4, &d, err, sizeof err) == -1);
    none.n_trail = STAGE_MAX_TRAIL + 1;
    CHECK(stage_encode_states_header(STAGE_OUTPUT, &none, buf, sizeof buf) == -1);
    stage_encode_states_header(STAGE_FORWARD, &s, buf, sizeof buf);
    buf[2] = STAGE_MAX_PIECES + 1;
    CHECK(stage_decode_states(buf, (size_t)n, 4, &d, err, sizeof err) == -1);
    buf[2] = 2;
    buf[0] = STAGE_HELLO;
    CHECK(stage_decode_states(buf, (size_t)n, 4, &d, err, sizeof err) == -1);
    /* F16: half the bytes. */
    s.dtype = STAGE_DTYPE_F16;
    stage_encode_states_header(STAGE_FORWARD, &s, buf, sizeof buf);
    CHECK(stage_decode_states(buf, (size_t)head + 40, 4, &d, err, sizeof err) == 0);
    s.dtype = 3;
    stage_encode_states_header(STAGE_FORWARD, &s, buf, sizeof buf);
    CHECK(stage_decode_states(buf, (size_t)head + 40, 4, &d, err, sizeof err) == -1);
}

int main(void)
{
    RUN(test_assign);
    RUN(test_status_stats_messages);
    RUN(test_hello_and_states);
    return testlib_finish();
}
