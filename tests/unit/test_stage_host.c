/* test_stage_host.c: the stage host (serve/stage.h) against a peer that
 * breaks the rules, over real QUIC between two meshes in this process.
 *
 * Node X runs a stage host with a weights store (holding one small llama
 * file, model_writer.h) and a memory budget. Node Y is a bare mesh that
 * plays the coordinator (it opens STAGE_CONTROL streams to X) and the next
 * stage (it takes the STAGE_DATA streams X opens), with frames built by
 * stage_wire.h or byte by byte. Checked:
 * - control streams: an unknown kind, an empty frame, a kind only stages
 *   send, a truncated or padded ASSIGN, ASSIGNs out of bounds (layers,
 *   stage index, stage count, lanes, context, width, dtype, model id), a
 *   second ASSIGN, START first, START while fetching, START with a payload:
 *   each reset and counted, no stage left, the budget back at 0; a frame
 *   over the 1024-byte bound is reset by the mesh, which counts it;
 * - REFUSE: a need over the budget, alone or next to a running stage ("not
 *   enough memory", nothing reserved for it); weights whose width or depth
 *   is not the plan's; a model nobody has from a coordinator that serves no
 *   FETCH (STATUS fetching, then REFUSE once the retries, shortened here,
 *   give up); a next stage that cannot be reached, or that resets the
 *   stream X opened to it (code NEXT). Closing the control stream, after a
 *   REFUSE or during a fetch, frees the stage and releases its memory;
 * - data streams into a running stage: HELLOs for stages not held here,
 *   garbage before HELLO, FORWARDs with a lane, a position range (also one
 *   that wraps 32 bits), a data length, a dtype or rows that are not the
 *   plan's, an OUTPUT, a second HELLO, a malformed FAIL: each stream reset
 *   and counted, while the stage serves the next correct stream with its
 *   lanes' caches intact; a stream its sender ends is closed by X too; a
 *   frame on a stream whose stage has ended resets it;
 * - a FORWARD past what a lane holds comes out downstream as FAIL naming
 *   the lane; a FAIL from upstream is passed on; a next stage that talks
 *   back on X's output stream has it reset, and X opens a new one;
 * - the host serves throughout: ASSIGN for the file X holds gives STATUS
 *   loading then ready, START a data stream to Y that opens with HELLO,
 *   FORWARDs give OUTPUTs equal bit for bit to the same layers run here
 *   (model_load_part + model_forward_layers), STATS reach the coordinator;
 *   and a host freed with work in flight joins and frees everything.
 * Leaks and memory errors are ASan's to find (LLMESH_SANITIZE). Every wait
 * is bounded (testnet.h); the run takes about a second. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/gguf.h"
#include "engine/model.h"
#include "lib/log.h"
#include "lib/threadpool.h"
#include "mesh/mesh.h"
#include "model_writer.h"
#include "models/store_private.h" /* white box: the fetch retry knob */
#include "models/weights_store.h"
#include "serve/budget.h"
#include "serve/plan.h"
#include "serve/stage.h"
#include "serve/stage_wire.h"
#include "testlib.h"
#include "testnet.h"

#define WAIT_MS 10000
#define MODEL_ID "tiny-llama"
#define N_LAYER 4
#define N_EMBD 64
#define N_CTX 32
#define N_LANES 2
#define N_THREADS 2
#define NEED (128ull << 20)       /* more than the stage's own estimate (model_part_need) */
#define BUDGET (1024ull << 20)
#define ROW (N_EMBD * 4)           /* bytes of one F32 hidden state */
#define MAX_ROWS 4                 /* rows a recorded OUTPUT may have */
#define MAX_OUTPUTS 8

/* ---- the two nodes -------------------------------------------------------------- */

static struct {
    mesh *x, *y;
    weights_store *ws;
    budget b;
    stage_host *h;
    const char *path;              /* the model X holds */
    uint8_t hash[WEIGHTS_HASH_BYTES];
} rig;

/* What Y saw on one stream: kept per stream, decoded as it arrives. A peer
 * whose stream may outlive its function (a failed REQUIRE) is static. */
typedef struct {
    mesh_stream *s;                /* NULL once closed */
    int frames, fin, closed;
    char error[200];               /* why it closed; "" for a clean close */
    int undecodable;               /* frames of no known kind, or malformed */
    int n_status;
    stage_status status;           /* the last STATUS */
    int n_stats, n_refuse;
    uint16_t refuse_code;
    char refuse[STAGE_MAX_MESSAGE + 1];
    int n_hello;
    stage_hello hello;
    int n_output;
    struct {
        uint16_t lane, n;
        uint32_t pos;
        int frame;                 /* the OUTPUT frame it came in (n_frames then) */
        float rows[MAX_ROWS * N_EMBD];
    } outputs[MAX_OUTPUTS];
    int n_frames;                  /* OUTPUT frames */
    int n_fail;
    uint16_t fail_lane;
    char fail[STAGE_MAX_MESSAGE + 1];
} peer;

static void peer_frame(void *user, mesh_stream *s, const uint8_t *p, size_t len)
{
    peer *pr = user;
    char err[256];
    pr->frames++;
    switch (len ? p[0] : 0) {
    case STAGE_STATUS:
        if (stage_decode_status(p, len, &pr->status, err, sizeof err) != 0) goto bad;
        pr->n_status++;
        return;
    case STAGE_STATS:
        pr->n_stats++;
        return;
    case STAGE_REFUSE:
        if (stage_decode_message(p, len, &pr->refuse_code, pr->refuse, sizeof pr->refuse, err, sizeof err) != 0)
            goto bad;
        pr->n_refuse++;
        return;
    case STAGE_HELLO:
        if (stage_decode_hello(p, len, &pr->hello, err, sizeof err) != 0) goto bad;
        pr->n_hello++;
        return;
    case STAGE_OUTPUT: {
        stage_states st;
        if (stage_decode_states(p, len, N_EMBD, &st, err, sizeof err) != 0 || st.dtype != STAGE_DTYPE_F32 ||
            pr->n_output + st.n_pieces > MAX_OUTPUTS)
            goto bad;
        const uint8_t *data = st.data;
        for (int i = 0; i < st.n_pieces; i++) { /* one output per piece */
            if (st.pieces[i].n > MAX_ROWS) goto bad;
            pr->outputs[pr->n_output].lane = st.pieces[i].lane;
            pr->outputs[pr->n_output].pos = st.pieces[i].pos;
            pr->outputs[pr->n_output].n = st.pieces[i].n;
            pr->outputs[pr->n_output].frame = pr->n_frames;
            size_t bytes = sizeof(float) * (size_t)st.pieces[i].n * N_EMBD;
            memcpy(pr->outputs[pr->n_output].rows, data, bytes); /* little-endian host */
            data += bytes;
            pr->n_output++;
        }
        pr->n_frames++;
        return;
    }
    case STAGE_FAIL:
        if (stage_decode_message(p, len, &pr->fail_lane, pr->fail, sizeof pr->fail, err, sizeof err) != 0)
            goto bad;
        pr->n_fail++;
        return;
    }
    snprintf(err, sizeof err, "kind 0x%02x", len ? p[0] : 0);
bad:
    fprintf(stderr, "  Y: a frame it cannot read: %s\n", err);
    pr->undecodable++;
}

static void peer_fin(void *user, mesh_stream *s) { ((peer *)user)->fin = 1; }

static void peer_close(void *user, mesh_stream *s, const char *error)
{
    peer *pr = user;
    pr->closed = 1;
    pr->s = NULL;
    snprintf(pr->error, sizeof pr->error, "%s", error ? error : "");
}

static const mesh_stream_handlers peer_handlers = {peer_frame, peer_fin, peer_close};

/* Data streams X opens to Y (as the next stage), in order of arrival. */
static peer incoming[8];
static int n_incoming;

static void y_data_accept(void *ctx, mesh_stream *s)
{
    if (n_incoming == (int)(sizeof incoming / sizeof incoming[0])) {
        mesh_stream_abort(s);
        return;
    }
    peer *pr = &incoming[n_incoming++];
    memset(pr, 0, sizeof *pr);
    pr->s = s;
    mesh_stream_set_handlers(s, &peer_handlers, pr);
}

/* Opens a stream of type from Y to X, recorded in pr. */
static void peer_open(peer *pr, uint8_t type)
{
    char err[256];
    memset(pr, 0, sizeof *pr);
    pr->s = mesh_stream_open(rig.y, mesh_node_id(rig.x), type, &peer_handlers, pr, err, sizeof err);
    if (!pr->s) fprintf(stderr, "  mesh_stream_open: %s\n", err);
    REQUIRE(pr->s);
}

static void peer_send(peer *pr, const void *p, size_t len)
{
    REQUIRE(pr->s);
    CHECK(mesh_stream_send(pr->s, p, len) == 0);
}

/* ---- waits -------------------------------------------------------------------- */

typedef struct {
    const int *counter;
    int at_least;
} count_wait;

static int count_reached(void *arg)
{
    const count_wait *w = arg;
    return *w->counter >= w->at_least;
}

/* Runs the loop until *counter >= at_least: 1, or 0 after WAIT_MS. */
static int wait_count(const int *counter, int at_least)
{
    count_wait w = {counter, at_least};
    return testnet_run_until(count_reached, &w, WAIT_MS);
}

/* Y ends the stream cleanly (FIN, as a coordinator closes a control
 * stream) and waits until both sides are done. */
static void peer_finish(peer *pr)
{
    REQUIRE(pr->s);
    mesh_stream_finish(pr->s);
    CHECK(wait_count(&pr->closed, 1));
    CHECK_EQ_STR(pr->error, "");
}

/* The stages X lists in /api/status (only those that got an ASSIGN). */
static int stages_held(void)
{
    cJSON *a = cJSON_CreateArray();
    stage_host_status(rig.h, a);
    int n = cJSON_GetArraySize(a);
    cJSON_Delete(a);
    return n;
}

/* The state ("loading", "fetching", "ready") and memory of X's only stage. */
static int stage_is(const char *state, double memory_bytes)
{
    cJSON *a = cJSON_CreateArray();
    stage_host_status(rig.h, a);
    cJSON *o = cJSON_GetArrayItem(a, 0);
    int ok = cJSON_GetArraySize(a) == 1 &&
             !strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(o, "state")), state) &&
             cJSON_GetNumberValue(cJSON_GetObjectItem(o, "memory_bytes")) == memory_bytes;
    if (!ok) {
        char *text = cJSON_PrintUnformatted(a);
        fprintf(stderr, "  X's stages: %s (wanted one %s, %.0f bytes)\n", text, state, memory_bytes);
        free(text);
    }
    cJSON_Delete(a);
    return ok;
}

static int host_idle_cond(void *arg) { return stages_held() == 0 && rig.b.used == 0; }

/* X holds no stage and has released every byte (after a close travelled). */
static int host_idle(void) { return testnet_run_until(host_idle_cond, NULL, WAIT_MS); }

/* ---- frames ------------------------------------------------------------------- */

/* The ASSIGN a coordinator would send for the file X holds: X as the last
 * stage, layers [2, 4) of 4, output back to Y. */
static stage_assign good_assign(void)
{
    stage_assign a;
    memset(&a, 0, sizeof a);
    a.version = 7;
    memcpy(a.model_hash, rig.hash, sizeof a.model_hash);
    snprintf(a.model, sizeof a.model, "%s", MODEL_ID);
    a.n_layer = N_LAYER;
    a.first = 2;
    a.end = 4;
    a.stage = 1;
    a.n_stages = 2;
    memcpy(a.next, mesh_node_id(rig.y), MESH_ID_BYTES);
    a.n_ctx = N_CTX;
    a.n_lanes = N_LANES;
    a.n_embd = N_EMBD;
    a.dtype = STAGE_DTYPE_F32;
    a.need_bytes = NEED;
    a.kv_type = MODEL_KV_F16;
    return a;
}

static int assign_frame(const stage_assign *a, uint8_t *out, size_t cap)
{
    int n = stage_encode_assign(a, out, cap);
    REQUIRE(n > 0);
    return n;
}

/* The HELLO of a stream into X's stage 1 of good_assign's plan. */
static int hello_frame(uint8_t *out, size_t cap)
{
    stage_hello h;
    memset(&h, 0, sizeof h);
    memcpy(h.coordinator, mesh_node_id(rig.y), MESH_ID_BYTES);
    snprintf(h.model, sizeof h.model, "%s", MODEL_ID);
    h.version = 7;
    h.stage = 1;
    int n = stage_encode_hello(&h, out, cap);
    REQUIRE(n > 0);
    return n;
}

/* A FORWARD (or other states kind) frame of data_len bytes of values. */
static size_t states_frame(uint8_t *out, size_t cap, uint8_t kind, uint16_t lane, uint32_t pos, uint16_t n,
                           uint8_t rows, uint8_t dtype, const void *data, size_t data_len)
{
    stage_states st = {.dtype = dtype, .n_pieces = 1};
    st.pieces[0] = (stage_piece){.lane = lane, .pos = pos, .n = n, .rows = rows};
    size_t head = stage_states_header_len(1, 0);
    REQUIRE(head + data_len <= cap);
    REQUIRE(stage_encode_states_header(kind, &st, out, cap) == (int)head);
    if (data_len) memcpy(out + head, data, data_len);
    return head + data_len;
}

/* Deterministic hidden states in [-1, 1). */
static void fill_states(float *x, int n, uint32_t seed)
{
    uint32_t s = seed * 2654435761u + 1;
    for (int i = 0; i < n * N_EMBD; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)(s >> 8) / 8388608.0f - 1.0f;
    }
}

/* ---- control streams: garbage ----------------------------------------------- */

/* Opens a control stream, sends the frames, and expects X to reset it and
 * count one bad frame, with no stage left and nothing reserved. */
static void expect_control_reset(const char *what, const uint8_t *const *frames, const size_t *lens, int n)
{
    uint64_t before = stage_host_bad_frames(rig.h);
    static peer c;
    peer_open(&c, STAGE_STREAM_CONTROL);
    for (int i = 0; i < n; i++) peer_send(&c, frames[i], lens[i]);
    int closed = wait_count(&c.closed, 1);
    if (!closed || !c.error[0] || stage_host_bad_frames(rig.h) != before + 1)
        fprintf(stderr, "  %s: closed %d (%s), bad frames %llu -> %llu, refused: %s\n", what, closed, c.error,
                (unsigned long long)before, (unsigned long long)stage_host_bad_frames(rig.h), c.refuse);
    CHECK(closed);
    CHECK(c.error[0] != '\0');        /* reset, not a clean close */
    CHECK_EQ_INT(stage_host_bad_frames(rig.h), before + 1);
    CHECK_EQ_INT(c.n_refuse, 0);
    CHECK_EQ_INT(stages_held(), 0);
    CHECK_EQ_INT(rig.b.used, 0);
    if (c.s) mesh_stream_abort(c.s);
}

static void expect_one_reset(const char *what, const void *frame, size_t len)
{
    const uint8_t *frames[1] = {frame};
    size_t lens[1] = {len};
    expect_control_reset(what, frames, lens, 1);
}

static void expect_bad_assign(const char *what, const stage_assign *a)
{
    uint8_t f[STAGE_CONTROL_MAX_FRAME];
    expect_one_reset(what, f, (size_t)assign_frame(a, f, sizeof f));
}

static void test_control_garbage(void)
{
    static const uint8_t unknown[] = {0x7e, 1, 2, 3};
    static const uint8_t status_kind[] = {STAGE_STATUS, 0, 0, 0};
    static const uint8_t start[] = {STAGE_START};
    static const uint8_t start_long[] = {STAGE_START, 0};
    expect_one_reset("unknown kind", unknown, sizeof unknown);
    expect_one_reset("empty frame", "", 0);
    expect_one_reset("a stage's kind", status_kind, sizeof status_kind);
    expect_one_reset("START first", start, sizeof start);

    /* Not garbage: a control stream ended before any frame just closes. */
    uint64_t before = stage_host_bad_frames(rig.h);
    static peer c;
    peer_open(&c, STAGE_STREAM_CONTROL);
    peer_finish(&c);
    CHECK_EQ_INT(stage_host_bad_frames(rig.h), before);

    stage_assign good = good_assign();
    uint8_t f[STAGE_CONTROL_MAX_FRAME + 1];
    int n = assign_frame(&good, f, sizeof f - 1);
    expect_one_reset("truncated ASSIGN", f, (size_t)n - 3);
    expect_one_reset("ASSIGN of the kind byte only", f, 1);
    f[n] = 0;
    expect_one_reset("ASSIGN with a trailing byte", f, (size_t)n + 1);

    stage_assign a = good;
    a.first = 3, a.end = 3;
    expect_bad_assign("empty layer range", &a);
    a = good, a.first = 3, a.end = 2;
    expect_bad_assign("layers backwards", &a);
    a = good, a.end = N_LAYER + 1;
    expect_bad_assign("end > n_layer", &a);
    a = good, a.n_layer = 0, a.first = 0, a.end = 0;
    expect_bad_assign("no layers", &a);
    a = good, a.stage = 2;
    expect_bad_assign("stage == n_stages", &a);
    a = good, a.stage = 0;
    expect_bad_assign("stage 0 (the coordinator's)", &a);
    a = good, a.n_stages = PLAN_MAX_STAGES + 1, a.stage = 1;
    expect_bad_assign("too many stages", &a);
    a = good, a.n_lanes = 0;
    expect_bad_assign("0 lanes", &a);
    a = good, a.n_lanes = STAGE_MAX_LANES + 1;
    expect_bad_assign("too many lanes", &a);
    a = good, a.n_ctx = 0;
    expect_bad_assign("0 positions", &a);
    a = good, a.n_embd = 0;
    expect_bad_assign("width 0", &a);
    a = good, a.dtype = 7;
    expect_bad_assign("unknown dtype", &a);
    a = good, a.kv_type = MODEL_KV_TYPE_COUNT;
    expect_bad_assign("unknown KV type", &a);
    a = good, snprintf(a.model, sizeof a.model, "tab\there");
    expect_bad_assign("malformed model id", &a);
    CHECK_EQ_INT(rig.b.used, 0);

    /* A good ASSIGN, then a second one: the first stage goes too. */
    n = assign_frame(&good, f, sizeof f);
    const uint8_t *two[2] = {f, f};
    size_t two_lens[2] = {(size_t)n, (size_t)n};
    expect_control_reset("second ASSIGN", two, two_lens, 2);

    /* START with a payload, to a stage that is ready. */
    const uint8_t *ready_then_long[2] = {f, start_long};
    size_t ready_then_long_lens[2] = {(size_t)n, sizeof start_long};
    expect_control_reset("START with a payload", ready_then_long, ready_then_long_lens, 2);

    /* START while the stage fetches (nobody has this model): the fetch is
     * cancelled with the stage. */
    a = good;
    memset(a.model_hash, 0x3c, sizeof a.model_hash);
    uint8_t g[STAGE_CONTROL_MAX_FRAME];
    int gn = assign_frame(&a, g, sizeof g);
    const uint8_t *fetching_then_start[2] = {g, start};
    size_t fetching_then_start_lens[2] = {(size_t)gn, sizeof start};
    expect_control_reset("START while fetching", fetching_then_start, fetching_then_start_lens, 2);

    /* Over the 1024-byte bound: the mesh resets the stream before the stage
     * host sees the frame, and counts it among its own bad frames. */
    static uint8_t big[STAGE_CONTROL_MAX_FRAME + 1];
    memcpy(big, f, (size_t)n);
    mesh_counters mc0, mc1;
    mesh_get_counters(rig.x, &mc0);
    peer_open(&c, STAGE_STREAM_CONTROL);
    peer_send(&c, big, sizeof big);
    CHECK(wait_count(&c.closed, 1));
    CHECK(c.error[0] != '\0');
    mesh_get_counters(rig.x, &mc1);
    CHECK_EQ_INT(mc1.bad_frames, mc0.bad_frames + 1);
    CHECK_EQ_INT(stages_held(), 0);
    CHECK_EQ_INT(rig.b.used, 0);
}

/* ---- control streams: refusals ---------------------------------------------- */

/* Sends an ASSIGN on a new control stream and waits for REFUSE and FIN. */
static void expect_refuse(peer *c, const stage_assign *a, const char *reason)
{
    uint8_t f[STAGE_CONTROL_MAX_FRAME];
    peer_open(c, STAGE_STREAM_CONTROL);
    peer_send(c, f, (size_t)assign_frame(a, f, sizeof f));
    CHECK(wait_count(&c->fin, 1));
    CHECK_EQ_INT(c->n_refuse, 1);
    CHECK_EQ_INT(c->refuse_code, STAGE_REFUSE_SELF);
    if (!strstr(c->refuse, reason)) fprintf(stderr, "  REFUSE \"%s\", wanted \"%s\"\n", c->refuse, reason);
    CHECK(strstr(c->refuse, reason) != NULL);
    CHECK(!c->closed);                /* X waits for the coordinator to close */
}

static void test_refuse_memory(void)
{
    uint64_t bad_before = stage_host_bad_frames(rig.h);
    stage_assign a = good_assign();
    a.need_bytes = BUDGET + 1;
    static peer c, first;
    expect_refuse(&c, &a, "not enough memory");
    CHECK_EQ_INT(rig.b.used, 0);
    CHECK(stage_is("loading", 0));
    peer_finish(&c);
    CHECK(host_idle());
    CHECK_EQ_INT(rig.b.used, 0);

    /* The budget less what is used: a second stage that would not fit next
     * to a first one is refused, and the first keeps its reservation. */
    uint8_t f[STAGE_CONTROL_MAX_FRAME];
    a = good_assign();
    a.need_bytes = BUDGET - NEED + 1;
    peer_open(&first, STAGE_STREAM_CONTROL);
    peer_send(&first, f, (size_t)assign_frame(&a, f, sizeof f));
    CHECK(wait_count(&first.n_status, 2));
    CHECK_EQ_INT(first.status.state, STAGE_READY);
    CHECK_EQ_INT(rig.b.used, BUDGET - NEED + 1);
    a.need_bytes = NEED;
    expect_refuse(&c, &a, "not enough memory");
    CHECK_EQ_INT(rig.b.used, BUDGET - NEED + 1);
    mesh_stream_abort(c.s);           /* a coordinator may reset as well */
    mesh_stream_abort(first.s);
    CHECK(host_idle());

    /* Weights that are not what the plan says. */
    a = good_assign();
    a.n_embd = N_EMBD / 2;
    expect_refuse(&c, &a, "width 64");
    CHECK_EQ_INT(rig.b.used, NEED);   /* held until the coordinator closes */
    peer_finish(&c);
    CHECK(host_idle());
    a = good_assign();
    a.n_layer = N_LAYER + 1;
    expect_refuse(&c, &a, "4 layers");
    peer_finish(&c);
    CHECK(host_idle());

    /* A coordinator that understates the need: the stage reserves its own
     * estimate once the weights are here, and refuses when that does not
     * fit what is free. */
    static peer under;
    a = good_assign();
    a.need_bytes = 1;
    peer_open(&under, STAGE_STREAM_CONTROL);
    peer_send(&under, f, (size_t)assign_frame(&a, f, sizeof f));
    CHECK(wait_count(&under.n_status, 2));
    CHECK_EQ_INT(under.status.state, STAGE_READY);
    uint64_t own = rig.b.used;
    CHECK(own > 1 && own <= NEED);
    CHECK(under.status.memory_bytes == own);
    mesh_stream_abort(under.s);
    CHECK(host_idle());
    CHECK_EQ_INT(rig.b.used, 0);
    rig.b.total = own - 1;          /* room for what it declares, not for what it needs */
    expect_refuse(&c, &a, "declared");
    peer_finish(&c);
    CHECK(host_idle());
    CHECK_EQ_INT(rig.b.used, 0);
    rig.b.total = BUDGET;
    CHECK_EQ_INT(stage_host_bad_frames(rig.h), bad_before); /* refusals are answers */
}

static void test_refuse_fetch(void)
{
    /* Nobody has the model and Y serves no FETCH: the stage says it is
     * fetching, the store retries (quickly here) and gives up, and the stage
     * refuses with the store's reason. */
    weights_test_set_retry(rig.ws, 20, 3);
    stage_assign a = good_assign();
    memset(a.model_hash, 0x5a, sizeof a.model_hash);
    uint64_t t0 = testnet_now_ms();
    static peer c;
    expect_refuse(&c, &a, "fetching weights");
    fprintf(stderr, "  refused after %llu ms: %s\n", (unsigned long long)(testnet_now_ms() - t0), c.refuse);
    CHECK(c.n_status >= 1);
    CHECK_EQ_INT(c.status.state, STAGE_FETCHING);
    CHECK_EQ_INT(c.status.memory_bytes, NEED);
    CHECK_EQ_INT(rig.b.used, NEED);
    peer_finish(&c);
    CHECK(host_idle());

    /* Closed while it fetches (slow retries now): the fetch is cancelled and
     * the memory released at once. */
    weights_test_set_retry(rig.ws, 5000, 6);
    memset(a.model_hash, 0x5b, sizeof a.model_hash);
    uint8_t f[STAGE_CONTROL_MAX_FRAME];
    peer_open(&c, STAGE_STREAM_CONTROL);
    peer_send(&c, f, (size_t)assign_frame(&a, f, sizeof f));
    CHECK(wait_count(&c.n_status, 1));
    CHECK_EQ_INT(c.status.state, STAGE_FETCHING);
    CHECK(stage_is("fetching", NEED));
    CHECK_EQ_INT(rig.b.used, NEED);
    testnet_run_for(100);             /* the first attempt fails meanwhile */
    peer_finish(&c);
    CHECK(host_idle());
    weights_fetch_info info[4];
    CHECK_EQ_INT(weights_store_fetches(rig.ws, info, 4), 0);
    weights_test_set_retry(rig.ws, 20, 3);
}

/* ---- a running stage, and data streams ---------------------------------------- */

/* The same layers as X's stage, run here. */
typedef struct {
    gguf_file *f;
    model *m;
    model_state *lanes[N_LANES];
    threadpool *pool;
} reference;

static void reference_open(reference *r)
{
    char err[256];
    memset(r, 0, sizeof *r);
    model_part part = {2, 4, 0};
    r->f = gguf_open(rig.path, err, sizeof err);
    REQUIRE(r->f);
    r->m = model_load_part(r->f, &part, err, sizeof err);
    REQUIRE(r->m);
    for (int i = 0; i < N_LANES; i++) REQUIRE((r->lanes[i] = model_state_new(r->m, N_CTX, MODEL_KV_F16, err, sizeof err)));
    REQUIRE((r->pool = threadpool_create(N_THREADS, err, sizeof err)));
}

static void reference_close(reference *r)
{
    for (int i = 0; i < N_LANES; i++) model_state_free(r->lanes[i]);
    threadpool_free(r->pool);
    model_free(r->m);
    if (r->f) gguf_close(r->f);
}

/* Runs n positions of lane through the layers here, x in place. */
static void reference_forward(reference *r, int lane, float *x, int n)
{
    char err[256];
    REQUIRE(model_forward_layers(r->m, r->lanes[lane], r->pool, 2, 4, x, n, err, sizeof err) == 0);
}

/* Sends FORWARD lane/pos of n fresh positions on d (rows: ENGINE_ROWS_*
 * wanted back), runs them here too, and checks that the OUTPUT arriving
 * on out equals the local result bit for bit. */
static void forward_and_compare(peer *d, peer *out, reference *ref, uint16_t lane, uint32_t pos, int n,
                                uint8_t rows, uint32_t seed)
{
    float x[MAX_ROWS * N_EMBD];
    static uint8_t frame[STAGE_STATES_HEADER_MAX + sizeof x];
    REQUIRE(n <= MAX_ROWS);
    fill_states(x, n, seed);
    int before = out->n_output;
    peer_send(d, frame,
              states_frame(frame, sizeof frame, STAGE_FORWARD, lane, pos, (uint16_t)n, rows, STAGE_DTYPE_F32, x,
                           sizeof(float) * (size_t)n * N_EMBD));
    reference_forward(ref, lane, x, n);
    REQUIRE(wait_count(&out->n_output, before + 1));
    int want_rows = rows == ENGINE_ROWS_ALL ? n : 1; /* or ENGINE_ROWS_LAST */
    const float *want = x + (size_t)(n - want_rows) * N_EMBD;
    CHECK_EQ_INT(out->outputs[before].lane, lane);
    CHECK_EQ_INT(out->outputs[before].pos, pos + (uint32_t)(n - want_rows));
    CHECK_EQ_INT(out->outputs[before].n, want_rows);
    CHECK(memcmp(out->outputs[before].rows, want, sizeof(float) * (size_t)want_rows * N_EMBD) == 0);
}

/* Opens a data stream into X's stage with HELLO, then the frames; expects
 * it reset and one bad frame counted. */
static void expect_data_reset(const char *what, int with_hello, const void *frame, size_t len)
{
    uint64_t before = stage_host_bad_frames(rig.h);
    uint8_t hello[256];
    static peer d;
    peer_open(&d, STAGE_STREAM_DATA);
    if (with_hello) peer_send(&d, hello, (size_t)hello_frame(hello, sizeof hello));
    peer_send(&d, frame, len);
    int closed = wait_count(&d.closed, 1);
    if (!closed || stage_host_bad_frames(rig.h) != before + 1)
        fprintf(stderr, "  %s: closed %d (%s), bad frames %llu -> %llu\n", what, closed, d.error,
                (unsigned long long)before, (unsigned long long)stage_host_bad_frames(rig.h));
    CHECK(closed);
    CHECK(d.error[0] != '\0');
    CHECK_EQ_INT(stage_host_bad_frames(rig.h), before + 1);
    if (d.s) mesh_stream_abort(d.s);
}

/* The same with a hidden-states frame: kind and header as given, then
 * data_len bytes of values. */
static void expect_states_reset(const char *what, uint8_t kind, uint16_t lane, uint32_t pos, uint16_t n,
                                uint8_t rows, uint8_t dtype, size_t data_len)
{
    static float x[32 * N_EMBD + 1];
    static uint8_t frame[STAGE_STATES_HEADER_MAX + sizeof x];
    REQUIRE(data_len <= sizeof x);
    fill_states(x, 32, 10);
    size_t len = states_frame(frame, sizeof frame, kind, lane, pos, n, rows, dtype, x, data_len);
    expect_data_reset(what, 1, frame, len);
}

static void expect_hello_reset(const char *what, const stage_hello *h)
{
    uint8_t f[256];
    int n = stage_encode_hello(h, f, sizeof f);
    REQUIRE(n > 0);
    expect_data_reset(what, 0, f, (size_t)n);
}

/* The next data stream X will open to Y, cleared before it arrives. */
static peer *next_incoming(void)
{
    REQUIRE(n_incoming < (int)(sizeof incoming / sizeof incoming[0]));
    memset(&incoming[n_incoming], 0, sizeof incoming[0]);
    return &incoming[n_incoming];
}

/* A stage of good_assign's plan running on X, controlled through c: ASSIGN
 * gives STATUS loading then ready with the memory reserved, START a data
 * stream to `next` (Y, as the coordinator) that opens with HELLO. Returns
 * that stream. */
static peer *stage_running(peer *c)
{
    stage_assign a = good_assign();
    uint8_t f[STAGE_CONTROL_MAX_FRAME];
    peer_open(c, STAGE_STREAM_CONTROL);
    peer_send(c, f, (size_t)assign_frame(&a, f, sizeof f));
    REQUIRE(wait_count(&c->n_status, 2));
    CHECK_EQ_INT(c->status.state, STAGE_READY);
    CHECK_EQ_INT(c->status.memory_bytes, NEED);
    CHECK_EQ_INT(rig.b.used, NEED);
    CHECK(stage_is("ready", NEED));
    static const uint8_t start[] = {STAGE_START};
    peer *out = next_incoming();
    peer_send(c, start, sizeof start);
    REQUIRE(wait_count(&out->n_hello, 1));
    CHECK_EQ_INT(out->hello.stage, 0);
    CHECK(!memcmp(out->hello.coordinator, mesh_node_id(rig.y), MESH_ID_BYTES));
    CHECK_EQ_STR(out->hello.model, MODEL_ID);
    CHECK_EQ_INT(out->hello.version, 7);
    return out;
}

/* A data stream from Y into X's stage, HELLO sent. */
static void data_open(peer *d)
{
    uint8_t hello[256];
    peer_open(d, STAGE_STREAM_DATA);
    peer_send(d, hello, (size_t)hello_frame(hello, sizeof hello));
}

static void test_stage_serves(void)
{
    reference ref;
    reference_open(&ref);
    int opened = n_incoming;
    static peer c, d, d2, d3;
    peer *out = stage_running(&c);

    /* FORWARDs on a data stream: OUTPUT rows as computed here. */
    data_open(&d);
    forward_and_compare(&d, out, &ref, 0, 0, 3, ENGINE_ROWS_ALL, 1);
    forward_and_compare(&d, out, &ref, 0, 3, 2, ENGINE_ROWS_LAST, 2);
    forward_and_compare(&d, out, &ref, 1, 0, 4, ENGINE_ROWS_ALL, 3);
    uint64_t bad_before = stage_host_bad_frames(rig.h);

    /* HELLOs for stages not held here. */
    stage_hello h;
    memset(&h, 0, sizeof h);
    memcpy(h.coordinator, mesh_node_id(rig.y), MESH_ID_BYTES);
    snprintf(h.model, sizeof h.model, "%s", MODEL_ID);
    h.version = 7;
    h.stage = 2;
    expect_hello_reset("HELLO for stage 2", &h);
    h.stage = 1, h.version = 8;
    expect_hello_reset("HELLO for another version", &h);
    h.version = 7, snprintf(h.model, sizeof h.model, "other-model");
    expect_hello_reset("HELLO for another model", &h);
    snprintf(h.model, sizeof h.model, "%s", MODEL_ID);
    memcpy(h.coordinator, mesh_node_id(rig.x), MESH_ID_BYTES);
    expect_hello_reset("HELLO naming another coordinator", &h);
    memcpy(h.coordinator, mesh_node_id(rig.y), MESH_ID_BYTES), h.stage = 0;
    expect_hello_reset("HELLO for stage 0 of a plan X does not coordinate", &h);

    /* Garbage before HELLO. */
    static float x[32 * N_EMBD];
    static uint8_t frame[STAGE_STATES_HEADER_MAX + sizeof x];
    fill_states(x, 32, 9);
    static const uint8_t junk[] = {0x99, 1, 2};
    expect_data_reset("junk before HELLO", 0, junk, sizeof junk);
    expect_data_reset("empty frame before HELLO", 0, "", 0);
    size_t len = states_frame(frame, sizeof frame, STAGE_FORWARD, 0, 5, 1, ENGINE_ROWS_ALL, STAGE_DTYPE_F32, x,
                              ROW);
    expect_data_reset("FORWARD before HELLO", 0, frame, len);
    int hn = hello_frame(frame, sizeof frame);
    expect_data_reset("truncated HELLO", 0, frame, (size_t)hn - 1);

    /* After HELLO, frames that break the plan. */
    uint8_t all = ENGINE_ROWS_ALL, f32 = STAGE_DTYPE_F32;
    expect_states_reset("lane >= n_lanes", STAGE_FORWARD, N_LANES, 0, 1, all, f32, ROW);
    expect_states_reset("pos + n > n_ctx", STAGE_FORWARD, 0, N_CTX - 1, 2, all, f32, 2 * ROW);
    expect_states_reset("pos + n wrapping 32 bits", STAGE_FORWARD, 0, 0xffffffffu, 1, all, f32, ROW);
    expect_states_reset("pos + n wrapping into the context", STAGE_FORWARD, 0, 0xfffffff0u, 32, all, f32,
                        32 * ROW);
    expect_states_reset("data for 1 of 2 positions", STAGE_FORWARD, 0, 0, 2, all, f32, ROW);
    expect_states_reset("a byte too many", STAGE_FORWARD, 0, 0, 1, all, f32, ROW + 1);
    expect_states_reset("F16 into an F32 plan", STAGE_FORWARD, 0, 0, 2, all, STAGE_DTYPE_F16, ROW);
    expect_states_reset("unknown dtype", STAGE_FORWARD, 0, 0, 1, all, 9, ROW);
    expect_states_reset("rows 3", STAGE_FORWARD, 0, 0, 1, 3, f32, ROW);
    expect_states_reset("OUTPUT into a stage", STAGE_OUTPUT, 0, 0, 1, 0, f32, ROW);
    hn = hello_frame(frame, sizeof frame);
    expect_data_reset("a second HELLO", 1, frame, (size_t)hn);
    static const uint8_t short_fail[] = {STAGE_FAIL, 0};
    expect_data_reset("truncated FAIL", 1, short_fail, sizeof short_fail);
    CHECK_EQ_INT(stage_host_bad_frames(rig.h), bad_before + 21);

    /* The stage serves on: the first stream and a new one carry on the
     * lanes where they were. */
    forward_and_compare(&d, out, &ref, 0, 5, 1, ENGINE_ROWS_ALL, 4);
    data_open(&d2);
    forward_and_compare(&d2, out, &ref, 1, 4, 2, ENGINE_ROWS_ALL, 5);
    /* Positions from pos on are forgotten first: lane 0 again from 2. */
    model_state_truncate(ref.lanes[0], 2);
    forward_and_compare(&d2, out, &ref, 0, 2, 3, ENGINE_ROWS_ALL, 6);

    /* A sender that ends its data stream (FIN, after frames or before
     * HELLO) has it closed by X as well, nothing held for it. */
    data_open(&d3);
    forward_and_compare(&d3, out, &ref, 1, 6, 1, ENGINE_ROWS_ALL, 8);
    peer_finish(&d3);
    peer_open(&d3, STAGE_STREAM_DATA);
    peer_finish(&d3);

    /* Past what a lane holds (lane 1 has 7): FAIL downstream naming the
     * lane; the data stream stays, and so does the stage. */
    len = states_frame(frame, sizeof frame, STAGE_FORWARD, 1, 9, 1, ENGINE_ROWS_ALL, STAGE_DTYPE_F32, x, ROW);
    peer_send(&d2, frame, len);
    CHECK(wait_count(&out->n_fail, 1));
    CHECK_EQ_INT(out->fail_lane, 1);
    CHECK(strstr(out->fail, "lane 1") != NULL);
    fprintf(stderr, "  FAIL: %s\n", out->fail);
    /* A FAIL from upstream is passed on as it came. */
    uint8_t fail[STAGE_CONTROL_MAX_FRAME];
    int fn = stage_encode_message(STAGE_FAIL, 0, "stage 0 broke", fail, sizeof fail);
    REQUIRE(fn > 0);
    peer_send(&d2, fail, (size_t)fn);
    CHECK(wait_count(&out->n_fail, 2));
    CHECK_EQ_INT(out->fail_lane, 0);
    CHECK_EQ_STR(out->fail, "stage 0 broke");
    forward_and_compare(&d2, out, &ref, 1, 7, 1, ENGINE_ROWS_ALL, 7);
    CHECK(!d.closed && !d2.closed && !out->closed);
    CHECK_EQ_INT(stage_host_bad_frames(rig.h), bad_before + 21);
    CHECK_EQ_INT(out->undecodable + c.undecodable, 0);
    CHECK_EQ_INT(c.n_refuse, 0);

    /* STATS reach the coordinator (once a second). */
    CHECK(wait_count(&c.n_stats, 1));

    /* The coordinator closes the control stream: the stage is freed, its
     * memory released, its output stream reset. */
    peer_finish(&c);
    CHECK(host_idle());
    CHECK(wait_count(&out->closed, 1));
    CHECK(out->error[0] != '\0');
    /* A frame on a data stream whose stage is gone: reset, not counted. */
    len = states_frame(frame, sizeof frame, STAGE_FORWARD, 0, 5, 1, ENGINE_ROWS_ALL, STAGE_DTYPE_F32, x, ROW);
    peer_send(&d, frame, len);
    CHECK(wait_count(&d.closed, 1));
    CHECK(d.error[0] != '\0');
    CHECK_EQ_INT(stage_host_bad_frames(rig.h), bad_before + 21);
    if (d2.s) mesh_stream_abort(d2.s);
    CHECK_EQ_INT(n_incoming, opened + 1);
    reference_close(&ref);
}

/* FORWARDs carrying several lanes' pieces (a batch step): one pass, one
 * OUTPUT with the rows asked for (none for a piece that asks none), each
 * bit for bit what the lane gives alone; a lane that cannot be computed gets
 * FAIL while the others in its frame go on. */
static void test_stage_batches(void)
{
    reference ref;
    reference_open(&ref);
    static peer c, d;
    peer *out = stage_running(&c);
    data_open(&d);
    static float x[6 * N_EMBD], want[6 * N_EMBD];
    static uint8_t frame[STAGE_STATES_HEADER_MAX + sizeof x];
    struct { uint16_t lane; uint32_t pos; uint16_t n; uint8_t rows; } steps[3][2] = {
        {{0, 0, 3, ENGINE_ROWS_NONE}, {1, 0, 2, ENGINE_ROWS_ALL}},
        {{1, 2, 1, ENGINE_ROWS_LAST}, {0, 3, 2, ENGINE_ROWS_LAST}},
        {{0, 9, 1, ENGINE_ROWS_LAST}, {1, 3, 1, ENGINE_ROWS_LAST}}, /* lane 0 holds 5: FAIL */
    };
    for (int k = 0; k < 3; k++) {
        stage_states st = {.dtype = STAGE_DTYPE_F32, .n_pieces = 2};
        int rows = 0;
        for (int i = 0; i < 2; i++) {
            st.pieces[i] = (stage_piece){steps[k][i].lane, steps[k][i].pos, steps[k][i].n, steps[k][i].rows};
            rows += steps[k][i].n;
        }
        fill_states(x, rows, 20 + (uint32_t)k);
        memcpy(want, x, sizeof(float) * (size_t)rows * N_EMBD);
        int head = stage_encode_states_header(STAGE_FORWARD, &st, frame, sizeof frame);
        REQUIRE(head > 0);
        memcpy(frame + head, x, sizeof(float) * (size_t)rows * N_EMBD);
        int before = out->n_output, frames_before = out->n_frames, fails_before = out->n_fail;
        peer_send(&d, frame, (size_t)head + sizeof(float) * (size_t)rows * N_EMBD);
        int expect = 0;
        float *w = want;
        for (int i = 0; i < 2; i++) {
            int fails = k == 2 && i == 0;
            if (!fails) reference_forward(&ref, steps[k][i].lane, w, steps[k][i].n);
            expect += !fails && steps[k][i].rows != ENGINE_ROWS_NONE;
            w += (size_t)steps[k][i].n * N_EMBD;
        }
        REQUIRE(wait_count(&out->n_output, before + expect));
        CHECK_EQ_INT(out->n_frames, frames_before + 1); /* the step's rows in one OUTPUT */
        w = want;
        for (int i = 0, o = before; i < 2; w += (size_t)steps[k][i].n * N_EMBD, i++) {
            if ((k == 2 && i == 0) || steps[k][i].rows == ENGINE_ROWS_NONE) continue;
            int n_rows = steps[k][i].rows == ENGINE_ROWS_ALL ? steps[k][i].n : 1;
            CHECK_EQ_INT(out->outputs[o].lane, steps[k][i].lane);
            CHECK_EQ_INT(out->outputs[o].pos, steps[k][i].pos + (uint32_t)(steps[k][i].n - n_rows));
            CHECK_EQ_INT(out->outputs[o].n, n_rows);
            CHECK(memcmp(out->outputs[o].rows, w + (size_t)(steps[k][i].n - n_rows) * N_EMBD,
                         sizeof(float) * (size_t)n_rows * N_EMBD) == 0);
            o++;
        }
        if (k == 2) {
            CHECK(wait_count(&out->n_fail, fails_before + 1));
            CHECK_EQ_INT(out->fail_lane, 0);
        }
    }
    /* A lane twice in one frame is malformed: the stream is reset, counted. */
    uint64_t bad_before = stage_host_bad_frames(rig.h);
    stage_states st = {.dtype = STAGE_DTYPE_F32, .n_pieces = 2};
    st.pieces[0] = (stage_piece){1, 4, 1, ENGINE_ROWS_LAST};
    st.pieces[1] = (stage_piece){1, 5, 1, ENGINE_ROWS_LAST};
    int head = stage_encode_states_header(STAGE_FORWARD, &st, frame, sizeof frame);
    memcpy(frame + head, x, 2 * ROW);
    peer_send(&d, frame, (size_t)head + 2 * ROW);
    CHECK(wait_count(&d.closed, 1));
    CHECK_EQ_INT(stage_host_bad_frames(rig.h), bad_before + 1);
    CHECK_EQ_INT(c.n_refuse, 0);
    peer_finish(&c);
    CHECK(host_idle());
    reference_close(&ref);
}

/* The next stage breaks the rules on the stream X opened to it. */
static void test_next_misbehaves(void)
{
    reference ref;
    reference_open(&ref);
    static peer c, d;
    peer *out = stage_running(&c);
    data_open(&d);
    forward_and_compare(&d, out, &ref, 0, 0, 2, ENGINE_ROWS_ALL, 11);

    /* It talks back: counted, that stream reset, and the next frame goes
     * out on a new one (HELLO first). */
    uint64_t bad_before = stage_host_bad_frames(rig.h);
    static const uint8_t junk[] = {STAGE_STATUS, 1};
    peer_send(out, junk, sizeof junk);
    CHECK(wait_count(&out->closed, 1));
    CHECK(out->error[0] != '\0');
    CHECK_EQ_INT(stage_host_bad_frames(rig.h), bad_before + 1);
    peer *again = next_incoming();
    forward_and_compare(&d, again, &ref, 0, 2, 1, ENGINE_ROWS_ALL, 12);
    CHECK_EQ_INT(again->n_hello, 1);
    CHECK_EQ_INT(c.n_refuse, 0);

    /* It resets the stream: X refuses, naming the next stage's fault. */
    REQUIRE(again->s);
    mesh_stream_abort(again->s);
    CHECK(wait_count(&c.fin, 1));
    CHECK_EQ_INT(c.n_refuse, 1);
    CHECK_EQ_INT(c.refuse_code, STAGE_REFUSE_NEXT);
    peer_finish(&c);
    CHECK(host_idle());
    CHECK_EQ_INT(stage_host_bad_frames(rig.h), bad_before + 1);
    if (d.s) mesh_stream_abort(d.s);
    reference_close(&ref);

    /* A next stage X cannot reach (a node nobody knows): REFUSE on START. */
    stage_assign a = good_assign();
    memset(a.next, 0x77, sizeof a.next);
    uint8_t f[STAGE_CONTROL_MAX_FRAME];
    static const uint8_t start[] = {STAGE_START};
    peer_open(&c, STAGE_STREAM_CONTROL);
    peer_send(&c, f, (size_t)assign_frame(&a, f, sizeof f));
    peer_send(&c, start, sizeof start);
    CHECK(wait_count(&c.fin, 1));
    CHECK_EQ_INT(c.n_refuse, 1);
    CHECK_EQ_INT(c.refuse_code, STAGE_REFUSE_NEXT);
    CHECK(strstr(c.refuse, "cannot reach the next stage") != NULL);
    peer_finish(&c);
    CHECK(host_idle());
}

/* A stage with work on its way when the host is freed (rig_stop, next):
 * its worker is joined and every frame and stream freed (ASan). */
static void test_freed_while_running(void)
{
    static peer c, d;
    stage_running(&c);
    data_open(&d);
    static float x[MAX_ROWS * N_EMBD];
    static uint8_t frame[STAGE_STATES_HEADER_MAX + sizeof x];
    fill_states(x, MAX_ROWS, 13);
    for (uint32_t pos = 0; pos < 4 * MAX_ROWS; pos += MAX_ROWS)
        peer_send(&d, frame, states_frame(frame, sizeof frame, STAGE_FORWARD, 1, pos, MAX_ROWS, ENGINE_ROWS_ALL,
                                          STAGE_DTYPE_F32, x, sizeof x));
    testnet_run_for(20);
}

/* ---- set-up ------------------------------------------------------------------- */

static int rig_start(void)
{
    char err[512];
    model_writer_params p = model_writer_small("llama", GGML_TYPE_F32, 17);
    rig.path = testlib_tmp_path("tiny-llama.gguf");
    if (p.n_layer != N_LAYER || p.n_embd != N_EMBD || model_writer_write(rig.path, &p) != 0) return -1;
    rig.x = testnet_mesh("x", NULL, "host", NULL);
    rig.y = rig.x ? testnet_mesh("y", NULL, "host", mesh_token(rig.x)) : NULL;
    if (!rig.y || !testnet_connect(rig.x, rig.y, WAIT_MS)) return -1;
    rig.ws = weights_store_new(testnet_loop(), rig.x, testlib_tmp_path("x-store"), err, sizeof err);
    if (!rig.ws || weights_store_add_file(rig.ws, rig.path, rig.hash, err, sizeof err) != 0) {
        fprintf(stderr, "weights store: %s\n", err);
        return -1;
    }
    rig.b.total = BUDGET;
    rig.h = stage_host_new(testnet_loop(), rig.x, rig.ws, &rig.b, N_THREADS);
    if (!rig.h) return -1;
    mesh_register_stream_type(rig.y, STAGE_STREAM_DATA, y_data_accept, NULL);
    return 0;
}

static void rig_stop(void)
{
    stage_host_free(rig.h);
    weights_store_free(rig.ws);
    if (rig.y) mesh_free(rig.y);
    if (rig.x) mesh_free(rig.x);
}

int main(void)
{
    const char *level = getenv("LLMESH_TEST_LOG");
    log_set_level(LOG_ERROR); /* the host warns of every bad frame it is sent here */
    if (level && log_parse_level(level) >= 0) log_set_level((log_level)log_parse_level(level));
    testnet_loop();
    uint64_t t0 = testnet_now_ms();
    if (rig_start() != 0) {
        fprintf(stderr, "cannot set up the two nodes\n");
        rig_stop();
        return 1;
    }
    RUN(test_control_garbage);
    RUN(test_refuse_memory);
    RUN(test_refuse_fetch);
    RUN(test_stage_serves);
    RUN(test_stage_batches);
    RUN(test_next_misbehaves);
    RUN(test_freed_while_running);
    rig_stop();
    testnet_loop_free();
    fprintf(stderr, "took %llu ms\n", (unsigned long long)(testnet_now_ms() - t0));
    return testlib_finish();
}
