/* test_model.c: the llama forward pass and the engine around it.
 *
 * Synthetic random-weight models (tests/unit/gguf_writer.h) check the forward
 * pass against the slow reference of reference_model.h, that batching
 * and thread count change no bit, and that bad files are refused with a
 * useful message. The demo model checks the real thing: its greedy
 * continuation, and engine_generate's streaming and seeding.
 * Not here: perplexity on the demo files (test_perplexity.c). */
#include "engine/engine.h"
#include "engine/gguf.h"
#include "engine/kernels.h"
#include "engine/model.h"
#include "gguf_writer.h"
#include "lib/threadpool.h"
#include "reference_model.h"
#include "testlib.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>

static const char *demo_model(void) { return testlib_source_path("models/kjv-llama-6.3M-q8_0.gguf"); }

static const char *tiny_path(const char *name)
{
    static char buf[4][512];
    static int next;
    char *p = buf[next++ % 4];
    snprintf(p, 512, "%s/%s", testlib_tmpdir(), name);
    return p;
}

/* ---- synthetic models ------------------------------------------------------ */

typedef struct {
    gguf_file *f;
    model *m;
} loaded;

static loaded load_tiny(const char *name, gguf_writer_llama_params p)
{
    loaded L = {0};
    const char *path = tiny_path(name);
    if (gguf_writer_tiny_llama_ex(path, &p) != 0) return L;
    char err[256];
    L.f = gguf_open(path, err, sizeof err);
    if (!L.f) { fprintf(stderr, "  %s\n", err); return L; }
    L.m = model_load(L.f, err, sizeof err);
    if (!L.m) fprintf(stderr, "  %s\n", err);
    return L;
}

static void unload(loaded *L)
{
    model_free(L->m);
    gguf_close(L->f);
}

/* The forward pass agrees with the reference, for each weight type, with
 * GQA and without, tied and untied output. */
static void test_forward_matches_reference(void)
{
    struct { ggml_type type; int n_head_kv; int tied; double tol; } cases[] = {
        {GGML_TYPE_F32, 2, 0, 1e-4}, {GGML_TYPE_F32, 4, 1, 1e-4},
        {GGML_TYPE_F16, 1, 0, 1e-4}, {GGML_TYPE_Q8_0, 2, 0, 0.03},
    };
    enum { N = 7 };
    int32_t tokens[N] = {300, 5, 77, 258, 1, 299, 100};
    char err[256];
    threadpool *pool = threadpool_create(2, err, sizeof err);
    REQUIRE(pool);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        gguf_writer_llama_params p = {.n_embd = 64, .n_layer = 2, .n_head = 4,
                                      .n_head_kv = cases[k].n_head_kv, .n_ff = 96, .n_vocab = 320,
                                      .type = cases[k].type, .seed = 7 + k, .tied_output = cases[k].tied};
        loaded L = load_tiny("ref.gguf", p);
        REQUIRE(L.m);
        const model_config *c = model_get_config(L.m);
        CHECK_EQ_INT(c->n_vocab, 320);
        CHECK_EQ_INT(c->head_dim, 16);
        CHECK_EQ_INT(c->n_head_kv, cases[k].n_head_kv);
        model_state *s = model_state_new(L.m, 0, MODEL_KV_F32, err, sizeof err);
        REQUIRE(s);
        static float got[N * 320];
        static double want[N * 320];
        REQUIRE(model_forward(L.m, s, pool, tokens, N, got, 1, err, sizeof err) == 0);
        model_writer_params ref = {.arch = "llama", .n_embd = p.n_embd, .n_layer = p.n_layer,
                                   .n_head = p.n_head, .n_head_kv = p.n_head_kv, .n_ff = p.n_ff,
                                   .n_vocab = p.n_vocab, .type = p.type};
        reference_forward(L.f, &ref, tokens, N, want, NULL);
        /* Q8_0 also quantizes activations (~0.4% per block): a looser bound. */
        double scale = 0, worst = 0;
        for (int i = 0; i < N * 320; i++) scale = fmax(scale, fabs(want[i]));
        for (int i = 0; i < N * 320; i++) worst = fmax(worst, fabs(got[i] - want[i]));
        if (worst > cases[k].tol * scale)
            fprintf(stderr, "  case %zu: max diff %g (logit scale %g)\n", k, worst, scale);
        CHECK(worst <= cases[k].tol * scale);
        CHECK(scale > 0.1); /* the model is not degenerate */
        model_state_free(s);
        unload(&L);
    }
    threadpool_free(pool);
}

/* Batching and thread count do not change a bit; truncating and replaying
 * gives the same logits too. Uses more tokens than one internal batch. */
static void test_batching_and_threads_are_exact(void)
{
    gguf_writer_llama_params p = {.n_embd = 64, .n_layer = 2, .n_head = 4, .n_head_kv = 2,
                                  .n_ff = 128, .n_vocab = 300, .n_ctx = 160, .type = GGML_TYPE_Q8_0,
                                  .seed = 3};
    loaded L = load_tiny("batch.gguf", p);
    REQUIRE(L.m);
    enum { N = 150, V = 300 };
    int32_t tokens[N];
    for (int i = 0; i < N; i++) tokens[i] = (i * 37 + 11) % V;
    char err[256];
    static float all[N * V], one[V], other[N * V];
    threadpool *p1 = threadpool_create(1, err, sizeof err), *p3 = threadpool_create(3, err, sizeof err);
    REQUIRE(p1 && p3);
    model_state *s = model_state_new(L.m, 0, MODEL_KV_F32, err, sizeof err);
    REQUIRE(s);
    CHECK_EQ_INT(model_state_n_ctx(s), 160);

    REQUIRE(model_forward(L.m, s, p3, tokens, N, all, 1, err, sizeof err) == 0);
    CHECK_EQ_INT(model_state_n_past(s), N);

    model_state_truncate(s, 0);
    int bad = 0;
    for (int i = 0; i < N; i++) { /* one token at a time, on one thread */
        REQUIRE(model_forward(L.m, s, p1, tokens + i, 1, one, 0, err, sizeof err) == 0);
        bad += memcmp(one, all + (size_t)i * V, sizeof one) != 0;
    }
    CHECK_EQ_INT(bad, 0);

    model_state_truncate(s, 40); /* odd batch sizes after a truncation */
    REQUIRE(model_forward(L.m, s, p1, tokens + 40, 13, other, 1, err, sizeof err) == 0);
    REQUIRE(model_forward(L.m, s, p3, tokens + 53, N - 53, other + 13 * V, 1, err, sizeof err) == 0);
    CHECK(memcmp(other, all + 40 * V, sizeof(float) * (N - 40) * V) == 0);

    /* last-token logits equal the last row of the full logits */
    model_state_truncate(s, 0);
    REQUIRE(model_forward(L.m, s, p3, tokens, N, one, 0, err, sizeof err) == 0);
    CHECK(memcmp(one, all + (size_t)(N - 1) * V, sizeof one) == 0);

    /* errors leave the state alone */
    int32_t bad_token = V;
    CHECK(model_forward(L.m, s, p1, &bad_token, 1, one, 0, err, sizeof err) == -1);
    CHECK(strstr(err, "out of range") != NULL);
    CHECK(model_forward(L.m, s, p1, tokens, 11, one, 0, err, sizeof err) == -1);
    CHECK(strstr(err, "context full") != NULL);
    CHECK_EQ_INT(model_state_n_past(s), N);

    model_state_free(s);
    threadpool_free(p1);
    threadpool_free(p3);
    unload(&L);
}

/* ---- refusing bad files ----------------------------------------------------- */

static void add_llama_keys(gguf_writer *w, const char *arch)
{
    gguf_writer_add_str(w, "general.architecture", arch);
    gguf_writer_add_u32(w, "llama.context_length", 64);
    gguf_writer_add_u32(w, "llama.embedding_length", 32);
    gguf_writer_add_u32(w, "llama.block_count", 1);
    gguf_writer_add_u32(w, "llama.feed_forward_length", 64);
    gguf_writer_add_u32(w, "llama.attention.head_count", 4);
    gguf_writer_add_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
}

/* Writes the file and returns model_load's error (empty when it loaded). */
static const char *load_error(gguf_writer *w)
{
    static char err[256];
    err[0] = 0;
    const char *path = tiny_path("bad.gguf");
    REQUIRE(gguf_writer_write_file(w, path) == 0);
    gguf_writer_free(w);
    gguf_file *f = gguf_open(path, err, sizeof err);
    REQUIRE(f);
    model *m = model_load(f, err, sizeof err);
    if (m) err[0] = 0;
    model_free(m);
    gguf_close(f);
    return err;
}

static void test_refuses_bad_models(void)
{
    gguf_writer *w = gguf_writer_new();
    add_llama_keys(w, "gpt2");
    const char *e = load_error(w);
    CHECK(strstr(e, "'gpt2'") && strstr(e, "llama"));

    w = gguf_writer_new();
    gguf_writer_add_str(w, "general.architecture", "llama");
    e = load_error(w);
    CHECK(strstr(e, "llama.embedding_length") != NULL);

    w = gguf_writer_new();
    add_llama_keys(w, "llama");
    gguf_writer_add_u32(w, "llama.attention.head_count_kv", 3);
    e = load_error(w);
    CHECK(strstr(e, "head_count_kv") != NULL);

    uint64_t ne[2] = {32, 300};
    w = gguf_writer_new();
    add_llama_keys(w, "llama");
    gguf_writer_add_tensor(w, "token_embd.weight", 2, ne, GGML_TYPE_F32, NULL, 32 * 300 * 4);
    uint64_t ne_norm[1] = {32};
    gguf_writer_add_tensor(w, "output_norm.weight", 1, ne_norm, GGML_TYPE_F32, NULL, 32 * 4);
    uint64_t ne_q[2] = {32, 33}; /* wrong: 32 x 32 */
    gguf_writer_add_tensor(w, "blk.0.attn_norm.weight", 1, ne_norm, GGML_TYPE_F32, NULL, 32 * 4);
    gguf_writer_add_tensor(w, "blk.0.attn_q.weight", 2, ne_q, GGML_TYPE_F32, NULL, 32 * 33 * 4);
    e = load_error(w);
    CHECK(strstr(e, "blk.0.attn_q.weight") && strstr(e, "shape"));

    w = gguf_writer_new();
    add_llama_keys(w, "llama");
    gguf_writer_add_tensor(w, "token_embd.weight", 2, ne, GGML_TYPE_Q8_1, NULL,
                           gguf_writer_tensor_nbytes(2, ne, GGML_TYPE_Q8_1));
    e = load_error(w);
    CHECK(strstr(e, "token_embd.weight") && strstr(e, "q8_1"));

    w = gguf_writer_new();
    add_llama_keys(w, "llama");
    gguf_writer_add_tensor(w, "token_embd.weight", 2, ne, GGML_TYPE_F32, NULL, 32 * 300 * 4);
    /* a qwen3 tensor in a llama file: refused rather than ignored */
    gguf_writer_add_tensor(w, "blk.0.attn_q_norm.weight", 1, ne_norm, GGML_TYPE_F32, NULL, 32 * 4);
    e = load_error(w);
    CHECK(strstr(e, "blk.0.attn_q_norm.weight") != NULL);
}

/* ---- the demo model through the engine ------------------------------------- */

typedef struct {
    char text[8192];
    size_t len;
    int pieces;
    int bad_utf8_pieces;
    int stop_after;
} collected;

static int valid_utf8(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char b = s[i];
        int len = b < 0x80 ? 1 : b >= 0xc2 && b <= 0xdf ? 2 : b >= 0xe0 && b <= 0xef ? 3
                : b >= 0xf0 && b <= 0xf4 ? 4 : 0;
        if (!len || i + len > n) return 0;
        for (int k = 1; k < len; k++) if ((s[i + k] & 0xc0) != 0x80) return 0;
        i += len;
    }
    return 1;
}

static int collect(void *user, const char *piece, size_t len)
{
    collected *c = user;
    if (!valid_utf8((const unsigned char *)piece, len)) c->bad_utf8_pieces++;
    if (c->len + len < sizeof c->text) {
        memcpy(c->text + c->len, piece, len);
        c->len += len;
        c->text[c->len] = 0;
    }
    c->pieces++;
    return c->stop_after && c->pieces >= c->stop_after;
}

static void test_demo_greedy(void)
{
    char err[512];
    engine_model *m = engine_model_load(demo_model(), 2, err, sizeof err);
    if (!m) fprintf(stderr, "  %s\n", err);
    REQUIRE(m);
    CHECK_EQ_STR(engine_model_id(m), "kjv-llama-6.3M-q8_0");
    CHECK_EQ_INT(engine_model_context_length(m), 256);
    CHECK(engine_model_bytes(m) > 6000000 && engine_model_bytes(m) < 6868576);
    engine_sampling s;
    engine_sampling_defaults(&s);
    CHECK_EQ_INT(s.max_tokens, 16);
    s.temperature = 0;
    s.max_tokens = 12;
    static collected c;
    memset(&c, 0, sizeof c);
    engine_result r;
    REQUIRE(engine_generate(m, "In the beginning", 16, &s, collect, &c, &r, err, sizeof err) == 0);
    const char *want = " of the world, and in the world";
    CHECK(strncmp(c.text, want, strlen(want)) == 0);
    if (strncmp(c.text, want, strlen(want)) != 0) fprintf(stderr, "  got '%s'\n", c.text);
    CHECK_EQ_INT(r.prompt_tokens, 4); /* BOS + 3 */
    CHECK_EQ_INT(r.completion_tokens, 12);
    CHECK_EQ_STR(r.finish_reason, "length");

    /* The same request again (the cache is reused) and an extension of it
     * give what a fresh model gives. */
    static collected again, longer, fresh;
    memset(&again, 0, sizeof again);
    REQUIRE(engine_generate(m, "In the beginning", 16, &s, collect, &again, &r, err, sizeof err) == 0);
    CHECK_EQ_STR(again.text, c.text);
    const char *ext = "In the beginning of the world";
    memset(&longer, 0, sizeof longer);
    REQUIRE(engine_generate(m, ext, strlen(ext), &s, collect, &longer, &r, err, sizeof err) == 0);
    engine_model *m2 = engine_model_load(demo_model(), 1, err, sizeof err);
    REQUIRE(m2);
    memset(&fresh, 0, sizeof fresh);
    REQUIRE(engine_generate(m2, ext, strlen(ext), &s, collect, &fresh, &r, err, sizeof err) == 0);
    CHECK_EQ_STR(longer.text, fresh.text);
    engine_model_free(m2);

    /* the callback can stop generation */
    static collected stop;
    memset(&stop, 0, sizeof stop);
    stop.stop_after = 2;
    REQUIRE(engine_generate(m, "And", 3, &s, collect, &stop, &r, err, sizeof err) == 0);
    CHECK_EQ_STR(r.finish_reason, "stop");
    CHECK_EQ_INT(stop.pieces, 2);

    /* a prompt longer than the context is an error */
    static char big[4000];
    for (size_t i = 0; i < sizeof big - 1; i++) big[i] = "abc "[i % 4];
    CHECK(engine_generate(m, big, sizeof big - 1, &s, collect, &stop, &r, err, sizeof err) == -1);
    CHECK(strstr(err, "context") != NULL);
    engine_model_free(m);

    CHECK(engine_model_load("/nonexistent/x.gguf", 1, err, sizeof err) == NULL);
    CHECK(strstr(err, "/nonexistent/x.gguf") != NULL);
}

static void test_demo_sampling_seeded(void)
{
    char err[512];
    engine_model *m = engine_model_load(demo_model(), 2, err, sizeof err);
    REQUIRE(m);
    engine_sampling s = {.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .seed = 1234, .max_tokens = 40};
    static collected a, b, c;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    memset(&c, 0, sizeof c);
    engine_result r;
    REQUIRE(engine_generate(m, "And Jesus said", 14, &s, collect, &a, &r, err, sizeof err) == 0);
    REQUIRE(engine_generate(m, "And Jesus said", 14, &s, collect, &b, &r, err, sizeof err) == 0);
    s.seed = 99;
    REQUIRE(engine_generate(m, "And Jesus said", 14, &s, collect, &c, &r, err, sizeof err) == 0);
    CHECK_EQ_STR(a.text, b.text);
    CHECK(strcmp(a.text, c.text) != 0);
    CHECK(a.len > 20);
    engine_model_free(m);
}

/* ---- continuous batching: lanes on threads ---------------------------------- */

enum { LANES = 4 };

/* A lane's whole transcript: text and every token's log-probabilities. */
typedef struct {
    engine_model *m;
    int lane;
    engine_request req;
    char text[4096];
    size_t len;
    engine_token toks[300];
    int n_toks;
    engine_result r;
    int rc;
} transcript;

static int transcript_output(void *user, const char *text, size_t len, const engine_token *toks, int n)
{
    transcript *tr = user;
    if (tr->len + len < sizeof tr->text) {
        memcpy(tr->text + tr->len, text, len);
        tr->len += len;
    }
    for (int i = 0; i < n && tr->n_toks < 300; i++) tr->toks[tr->n_toks++] = toks[i];
    return 0;
}

static void *transcript_thread(void *arg)
{
    transcript *tr = arg;
    char err[256];
    tr->rc = engine_run_lane(tr->m, tr->lane, &tr->req, transcript_output, tr, &tr->r, err, sizeof err);
    return NULL;
}

/* Four requests (different prompts and lengths, greedy and seeded, with
 * log-probabilities) on four lanes at once give, byte for byte, the
 * transcripts they give one at a time; the steps did batch them (more
 * sequences than steps), and a second turn on a lane reuses its cache. */
static void test_lanes_batched_equal_alone(void)
{
    static const char *prompts[LANES] = {"In the beginning", "And the LORD spake unto Moses, saying",
                                         "Blessed are", "And it came to pass, when the"};
    static const int max_tokens[LANES] = {40, 25, 60, 33};
    char err[512];
    engine_load_opts o = {.n_threads = 2, .n_lanes = LANES};
    engine_model *m = engine_model_load_opts(demo_model(), &o, err, sizeof err);
    REQUIRE(m);
    static transcript alone[LANES], together[LANES];
    for (int pass = 0; pass < 2; pass++) {
        transcript *set = pass ? together : alone;
        for (int i = 0; i < LANES; i++) {
            transcript *tr = &set[i];
            memset(tr, 0, sizeof *tr);
            tr->m = m;
            tr->lane = i;
            engine_request_defaults(&tr->req);
            tr->req.prompt = prompts[i];
            tr->req.prompt_len = strlen(prompts[i]);
            tr->req.sampling.temperature = i == 2 ? 0.9f : 0;
            tr->req.sampling.seed = 7;
            tr->req.sampling.max_tokens = max_tokens[i];
            tr->req.logprobs = 1;
            tr->req.top_logprobs = 3;
        }
        if (!pass) {
            for (int i = 0; i < LANES; i++) transcript_thread(&set[i]); /* one at a time */
        } else {
            pthread_t th[LANES];
            for (int i = 0; i < LANES; i++) REQUIRE(pthread_create(&th[i], NULL, transcript_thread, &set[i]) == 0);
            for (int i = 0; i < LANES; i++) pthread_join(th[i], NULL);
        }
    }
    engine_step_stats st;
    engine_model_step_stats(m, &st);
    for (int i = 0; i < LANES; i++) {
        CHECK_EQ_INT(together[i].rc, 0);
        CHECK(together[i].len > 0);
        CHECK(together[i].len == alone[i].len && !memcmp(together[i].text, alone[i].text, alone[i].len));
        CHECK_EQ_INT(together[i].n_toks, alone[i].n_toks);
        int differ = 0; /* field by field: the unused alternatives are not set */
        for (int k = 0; k < alone[i].n_toks && k < together[i].n_toks; k++) {
            const engine_token *x = &alone[i].toks[k], *y = &together[i].toks[k];
            differ += x->id != y->id || memcmp(&x->logprob, &y->logprob, sizeof x->logprob) ||
                      x->n_top != y->n_top || memcmp(x->top, y->top, sizeof x->top[0] * (size_t)x->n_top);
        }
        CHECK_EQ_INT(differ, 0);
        CHECK_EQ_INT(together[i].r.completion_tokens, alone[i].r.completion_tokens);
        /* the same prompt on the same lane again: all but its last token were cached */
        CHECK_EQ_INT(alone[i].r.cached_tokens, 0);
        CHECK_EQ_INT(together[i].r.cached_tokens, together[i].r.prompt_tokens - 1);
        CHECK(together[i].r.prompt_ms >= 0 && together[i].r.predicted_ms > 0);
    }
    CHECK(st.steps > 0 && st.seqs > st.steps); /* some step held several sequences */
    CHECK(st.decode_tokens > 0 && st.tokens >= st.decode_tokens);
    engine_model_free(m);
}

/* One prompt for several sequences (a request's n choices): lane 0
 * evaluates it but its last token once and its keys and values are copied
 * to lanes 1-3 (engine_lane_share_prompt); then four runs at once, each
 * evaluating only the last prompt token, give byte for byte (tokens and
 * log-probabilities) what the prompt alone on a fresh lane gives. */
static void test_share_prompt(void)
{
    static const char prompt[] = "And the LORD spake unto Moses, saying, Speak unto the children of Israel";
    char err[512];
    engine_load_opts o = {.n_threads = 2, .n_lanes = LANES};
    engine_model *m = engine_model_load_opts(demo_model(), &o, err, sizeof err);
    REQUIRE(m);
    static transcript alone, shared[LANES];
    transcript *all[LANES + 1] = {&alone, &shared[0], &shared[1], &shared[2], &shared[3]};
    for (int i = 0; i <= LANES; i++) {
        transcript *tr = all[i];
        memset(tr, 0, sizeof *tr);
        tr->m = m;
        tr->lane = i ? i - 1 : LANES - 1;
        engine_request_defaults(&tr->req);
        tr->req.prompt = prompt;
        tr->req.prompt_len = strlen(prompt);
        tr->req.sampling.temperature = 0;
        tr->req.sampling.max_tokens = 30;
        tr->req.logprobs = 1;
    }
    transcript_thread(&alone); /* on lane 3, then emptied by the share below */
    int32_t *ids = NULL;
    int n = 0;
    REQUIRE(engine_prompt_tokens(m, &alone.req, &ids, &n, err, sizeof err) == 0);
    int to[3] = {1, 2, 3};
    CHECK_EQ_INT(engine_lane_share_prompt(m, 0, ids, n, to, 3, err, sizeof err), n - 1);
    for (int l = 0; l < LANES; l++) CHECK_EQ_INT(engine_lane_cached_prefix(m, l, ids, n), n - 1);
    /* again: lane 0 holds it now, nothing to evaluate */
    CHECK_EQ_INT(engine_lane_share_prompt(m, 0, ids, n, to, 3, err, sizeof err), 0);
    engine_step_stats before, after;
    engine_model_step_stats(m, &before);
    pthread_t th[LANES];
    for (int i = 0; i < LANES; i++) REQUIRE(pthread_create(&th[i], NULL, transcript_thread, &shared[i]) == 0);
    for (int i = 0; i < LANES; i++) pthread_join(th[i], NULL);
    engine_model_step_stats(m, &after);
    for (int i = 0; i < LANES; i++) {
        CHECK_EQ_INT(shared[i].rc, 0);
        CHECK(shared[i].len == alone.len && !memcmp(shared[i].text, alone.text, alone.len));
        CHECK_EQ_INT(shared[i].n_toks, alone.n_toks);
        int differ = 0;
        for (int k = 0; k < alone.n_toks && k < shared[i].n_toks; k++)
            differ += alone.toks[k].id != shared[i].toks[k].id ||
                      memcmp(&alone.toks[k].logprob, &shared[i].toks[k].logprob, sizeof alone.toks[k].logprob);
        CHECK_EQ_INT(differ, 0);
        CHECK_EQ_INT(shared[i].r.cached_tokens, n - 1);
    }
    /* the steps evaluated each sequence's last prompt token and its tokens
     * but the last sampled one: no prompt again */
    int completion = alone.r.completion_tokens;
    int length_end = !strcmp(alone.r.finish_reason, "length");
    CHECK_EQ_INT((int)(after.tokens - before.tokens), LANES * (1 + completion - length_end));
    free(ids);
    engine_model_free(m);
}

/* Random weights emit random byte tokens, split UTF-8 characters and
 * invalid sequences: every piece must still be valid UTF-8. */
static void test_pieces_are_valid_utf8(void)
{
    gguf_writer_llama_params p = {.n_embd = 32, .n_layer = 1, .n_head = 2, .n_head_kv = 1,
                                  .n_ff = 64, .n_vocab = 300, .type = GGML_TYPE_F32, .seed = 5};
    const char *path = tiny_path("utf8.gguf");
    REQUIRE(gguf_writer_tiny_llama_ex(path, &p) == 0);
    char err[512];
    engine_model *m = engine_model_load(path, 1, err, sizeof err);
    if (!m) fprintf(stderr, "  %s\n", err);
    REQUIRE(m);
    CHECK_EQ_STR(engine_model_id(m), "utf8");
    engine_sampling s = {.temperature = 3.0f, .top_k = 0, .top_p = 1, .seed = 1, .max_tokens = 200};
    static collected c;
    memset(&c, 0, sizeof c);
    engine_result r;
    REQUIRE(engine_generate(m, "\xc3", 1, &s, collect, &c, &r, err, sizeof err) == 0);
    CHECK_EQ_INT(c.bad_utf8_pieces, 0);
    CHECK(valid_utf8((const unsigned char *)c.text, c.len));
    CHECK(r.completion_tokens > 0);
    engine_model_free(m);
}

int main(void)
{
    RUN(test_forward_matches_reference);
    RUN(test_batching_and_threads_are_exact);
    RUN(test_refuses_bad_models);
    RUN(test_demo_greedy);
    RUN(test_demo_sampling_seeded);
    RUN(test_pieces_are_valid_utf8);
    RUN(test_lanes_batched_equal_alone);
    RUN(test_share_prompt);
    return testlib_finish();
}
