/* test_arch.c: the architectures the engine runs (llama with Llama 3 RoPE
 * factors, qwen2, qwen3, phi3 with LongRoPE factors, gemma3), on synthetic models
 * (tests/unit/model_writer.h).
 *
 * For each architecture: the logits match the slow reference forward
 * (reference_model.h: plain loops, double accumulation, its own RoPE and
 * norms; only the file format's dequantization is shared),
 * batching and thread count change no bit, and a real-shaped config (all the
 * widths of Qwen2.5-0.5B, Llama-3.2-1B, Qwen3-0.6B, Gemma3-1B, Phi-3-mini, two layers, Q8_0 random
 * weights) loads and generates through the engine. Files that break an
 * architecture's rules are refused with a message naming the key or tensor.
 * Not here: the llama demo model (test_model.c, test_perplexity.c). */
#include "engine/engine.h"
#include "engine/gguf.h"
#include "engine/kernels.h"
#include "engine/model.h"
#include "gguf_writer.h"
#include "lib/threadpool.h"
#include "model_writer.h"
#include "reference_model.h"
#include "testlib.h"

#include <math.h>
#include <stdlib.h>
#include <unistd.h>

/* ---- loading ---------------------------------------------------------------- */

typedef struct {
    gguf_file *f;
    model *m;
} loaded;

static loaded load(const char *path)
{
    loaded L = {0};
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

/* Small configs, one per architecture feature; F32 unless said. */
static model_writer_params small(const char *arch, uint64_t seed)
{
    model_writer_params p = {.arch = arch, .n_embd = 64, .n_layer = 2, .n_head = 4, .n_head_kv = 2,
                             .n_ff = 96, .n_vocab = 300, .type = GGML_TYPE_F32, .seed = seed};
    if (!strcmp(arch, "qwen2")) {
        p.qkv_bias = 1, p.tied_output = 1, p.rope_freq_base = 1000000.0f, p.rms_eps = 1e-6f;
    } else if (!strcmp(arch, "gemma3")) { /* 7 layers: layer 5 is the global one */
        p.qk_norm = 1, p.tied_output = 1, p.head_dim = 32, p.n_head_kv = 1, p.n_layer = 7,
        p.n_swa = 4, p.rope_freq_base = 1000000.0f, p.rms_eps = 1e-6f;
    } else if (!strcmp(arch, "phi3")) {
        /* Phi-3.5-mini / Phi-4-mini style: LongRoPE factors with the long set
         * in use (context 256 > original 128), their attn_factor, partial
         * rotation (12 of 16), and a sliding_window key of 4 over 9 tokens
         * that must change nothing (llama.cpp does not apply it). */
        p.longrope = 1, p.n_ctx = 256, p.n_ctx_orig = 128, p.attn_factor = 1.19f, p.n_rot = 12,
        p.n_swa = 4;
    } else if (!strcmp(arch, "qwen3")) {
        p.qk_norm = 1, p.tied_output = 1, p.head_dim = 32, p.rope_freq_base = 1000000.0f,
        p.rms_eps = 1e-6f; /* q is 4 * 32 = 128 wide with n_embd 64, as Qwen3-0.6B's 2048 vs 1024 */
    }
    return p;
}

/* The logits agree with the reference. Tolerance for F32 weights: the
 * engine accumulates in float, so each dot product of K terms carries a
 * relative error of at most about K * 2^-24; a logit is the end of a chain
 * of about 8 such products per layer (q/k/v, attention scores and sums, o,
 * gate/up, down) plus 2, so the bound is (8 * n_layer + 2) * K * 2^-24
 * times the logits' scale, K the widest product. Q8_0 also rounds the
 * activations to 8 bits per block (up to half a step, 1/254 of the block's
 * largest value, ~0.4%), compounded over the same chain: 3%. */
static void test_forward_matches_reference(void)
{
    /* phi3: 1 = the short LongRoPE set (original context 512 > 256) and
     * separate q/k/v tensors; 2 = Phi-3-mini-4k's keys (no factors, no
     * attn_factor, full rotation, window 2047) */
    struct { const char *arch; const char *what; ggml_type type; int rope_freqs, llama3, bias, out_bias, tied, kv, phi3; } cases[] = {
        {"llama", "Llama 3 rope_freqs tensor, untied", GGML_TYPE_F32, 1, 0, 0, 0, 0, 2, 0},
        {"llama", "Llama 3.1 scaling from keys only, tied", GGML_TYPE_F32, 0, 1, 0, 0, 1, 4, 0},
        {"llama", "optional q/k/v/o biases", GGML_TYPE_F32, 0, 0, 1, 1, 0, 1, 0},
        {"qwen2", "biases, NEOX, tied", GGML_TYPE_F32, 0, 0, 1, 0, 1, 2, 0},
        {"qwen2", "Q8_0", GGML_TYPE_Q8_0, 0, 0, 1, 0, 1, 2, 0},
        {"qwen3", "q/k norms, head_dim 32 != 64/4", GGML_TYPE_F32, 0, 0, 0, 0, 1, 2, 0},
        {"qwen3", "F16, MHA", GGML_TYPE_F16, 0, 0, 0, 0, 1, 4, 0},
        {"qwen3", "Q8_0", GGML_TYPE_Q8_0, 0, 0, 0, 0, 1, 2, 0},
        {"gemma3", "window 4, layer 5 global, MQA", GGML_TYPE_F32, 0, 0, 0, 0, 1, 1, 0},
        {"gemma3", "Q8_0", GGML_TYPE_Q8_0, 0, 0, 0, 0, 1, 1, 0},
        {"phi3", "fused qkv and gate/up, LongRoPE long set, partial rotation", GGML_TYPE_F32, 0, 0, 0, 0, 0, 2, 0},
        {"phi3", "short set, separate q/k/v, tied", GGML_TYPE_F32, 0, 0, 0, 0, 1, 4, 1},
        {"phi3", "Phi-3-mini-4k keys, MHA", GGML_TYPE_F32, 0, 0, 0, 0, 0, 4, 2},
        {"phi3", "Q8_0", GGML_TYPE_Q8_0, 0, 0, 0, 0, 0, 2, 0},
        {"phi3", "F16", GGML_TYPE_F16, 0, 0, 0, 0, 0, 4, 0},
    };
    enum { N = 9 };
    int32_t tokens[N] = {298, 5, 77, 258, 1, 299, 100, 42, 200};
    char err[256];
    threadpool *pool = threadpool_create(2, err, sizeof err);
    REQUIRE(pool);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        model_writer_params p = small(cases[c].arch, 11 + c);
        p.type = cases[c].type;
        p.rope_freqs = cases[c].rope_freqs;
        p.llama3_keys = cases[c].llama3;
        p.qkv_bias = cases[c].bias;
        p.out_bias = cases[c].out_bias;
        p.tied_output = cases[c].tied;
        p.n_head_kv = cases[c].kv;
        if (cases[c].phi3 == 1) p.n_ctx_orig = 512, p.separate_qkv = 1;
        if (cases[c].phi3 == 2) p.longrope = 0, p.n_ctx_orig = 0, p.attn_factor = 0, p.n_rot = 0, p.n_swa = 2047;
        const char *path = testlib_tmp_path("ref.gguf");
        REQUIRE(model_writer_write(path, &p) == 0);
        loaded L = load(path);
        REQUIRE(L.m);
        const model_config *mc = model_get_config(L.m);
        CHECK_EQ_INT(mc->head_dim, p.head_dim > 0 ? p.head_dim : 16);
        CHECK_EQ_INT(mc->rope_neox, strcmp(p.arch, "llama") != 0);
        model_state *s = model_state_new(L.m, 0, MODEL_KV_F32, err, sizeof err);
        REQUIRE(s);
        static float got[N * 300];
        static double want[N * 300];
        REQUIRE(model_forward(L.m, s, pool, tokens, N, got, 1, err, sizeof err) == 0);
        reference_forward(L.f, &p, tokens, N, want, NULL);
        double scale = 0, worst = 0;
        for (int i = 0; i < N * 300; i++) scale = fmax(scale, fabs(want[i]));
        for (int i = 0; i < N * 300; i++) worst = fmax(worst, fabs(got[i] - want[i]));
        int widest = p.n_ff > 64 ? p.n_ff : 64;
        if (p.n_head * mc->head_dim > widest) widest = p.n_head * mc->head_dim;
        double tol = p.type == GGML_TYPE_Q8_0 ? 0.03 : p.type == GGML_TYPE_F16 ? 1e-4
                   : (8.0 * p.n_layer + 2) * widest * ldexp(1, -24);
        if (getenv("LLMESH_TEST_VERBOSE"))
            fprintf(stderr, "  %s (%s): max diff %g, bound %g, scale %g\n", p.arch, cases[c].what,
                    worst, tol * scale, scale);
        if (worst > tol * scale)
            fprintf(stderr, "  %s (%s): max diff %g > %g (logit scale %g)\n", p.arch, cases[c].what,
                    worst, tol * scale, scale);
        CHECK(worst <= tol * scale);
        CHECK(scale > 0.1); /* not degenerate */
        model_state_free(s);
        unload(&L);
    }
    threadpool_free(pool);
}

/* Each feature matters: the reference with one feature left out (the
 * NEOX pairing, the biases, the q/k norms, the RoPE factors) is far from the
 * engine, so the test above would catch an engine that skipped it. */
static void test_each_feature_matters(void)
{
    struct { const char *arch; const char *skip; int rope_freqs, llama3; } cases[] = {
        {"llama", "rope_factors", 1, 0}, {"llama", "rope_factors", 0, 1}, {"llama", "neox", 0, 0},
        {"qwen2", "neox", 0, 0}, {"qwen2", "bias", 0, 0}, {"qwen3", "qk_norm", 0, 0},
        {"qwen3", "neox", 0, 0}, {"gemma3", "window", 0, 0}, {"gemma3", "post_norms", 0, 0},
        {"gemma3", "local_rope", 0, 0}, {"phi3", "neox", 0, 0}, {"phi3", "rope_factors", 0, 0},
        {"phi3", "long_short", 0, 0}, {"phi3", "attn_factor", 0, 0}, {"phi3", "gate_up_order", 0, 0},
    };
    enum { N = 6 };
    int32_t tokens[N] = {3, 9, 27, 81, 243, 299};
    char err[256];
    threadpool *pool = threadpool_create(1, err, sizeof err);
    REQUIRE(pool);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        model_writer_params p = small(cases[c].arch, 60 + c);
        p.rope_freqs = cases[c].rope_freqs;
        p.llama3_keys = cases[c].llama3;
        const char *path = testlib_tmp_path("feature.gguf");
        REQUIRE(model_writer_write(path, &p) == 0);
        loaded L = load(path);
        REQUIRE(L.m);
        model_state *s = model_state_new(L.m, 0, MODEL_KV_F32, err, sizeof err);
        REQUIRE(s);
        static float got[N * 300];
        static double want[N * 300];
        REQUIRE(model_forward(L.m, s, pool, tokens, N, got, 1, err, sizeof err) == 0);
        reference_forward(L.f, &p, tokens, N, want, cases[c].skip);
        double scale = 0, worst = 0;
        for (int i = 0; i < N * 300; i++) scale = fmax(scale, fabs(want[i]));
        for (int i = 0; i < N * 300; i++) worst = fmax(worst, fabs(got[i] - want[i]));
        /* at least 20 times the float32 bound of the test above */
        double bound = (8.0 * p.n_layer + 2) * 128 * ldexp(1, -24) * scale;
        if (!(worst > 20 * bound))
            fprintf(stderr, "  %s without %s: max diff only %g\n", p.arch, cases[c].skip, worst);
        CHECK(worst > 20 * bound);
        model_state_free(s);
        unload(&L);
    }
    threadpool_free(pool);
}

/* Whole prompt vs token by token, 1 vs 3 threads, across the 64-token
 * internal batch: bit-identical, for every architecture and KV cache type. */
static void test_batching_and_threads_are_exact(void)
{
    const char *arches[] = {"llama", "qwen2", "qwen3", "gemma3", "phi3"};
    enum { N = 70, V = 300 };
    char err[256];
    threadpool *p1 = threadpool_create(1, err, sizeof err), *p3 = threadpool_create(3, err, sizeof err);
    REQUIRE(p1 && p3);
    for (size_t a = 0; a < sizeof arches / sizeof arches[0]; a++) {
        model_writer_params p = small(arches[a], 40 + a);
        p.type = GGML_TYPE_Q8_0;
        p.rope_freqs = a == 0;
        const char *path = testlib_tmp_path("batch.gguf");
        REQUIRE(model_writer_write(path, &p) == 0);
        loaded L = load(path);
        REQUIRE(L.m);
        int32_t tokens[N];
        for (int i = 0; i < N; i++) tokens[i] = (i * 37 + 11) % V;
        static float all[N * V], one[V];
        for (int kv = 0; kv < MODEL_KV_TYPE_COUNT; kv++) {
            model_state *s = model_state_new(L.m, 0, (model_kv_type)kv, err, sizeof err);
            REQUIRE(s);
            REQUIRE(model_forward(L.m, s, p3, tokens, N, all, 1, err, sizeof err) == 0);
            model_state_truncate(s, 0);
            int bad = 0;
            for (int i = 0; i < N; i++) {
                REQUIRE(model_forward(L.m, s, p1, tokens + i, 1, one, 0, err, sizeof err) == 0);
                bad += memcmp(one, all + (size_t)i * V, sizeof one) != 0;
            }
            if (bad) fprintf(stderr, "  %s, KV %s: %d positions differ\n", arches[a],
                             model_kv_type_name((model_kv_type)kv), bad);
            CHECK_EQ_INT(bad, 0);
            model_state_free(s);
        }
        unload(&L);
    }
    threadpool_free(p1);
    threadpool_free(p3);
}

/* Mixed batches (model_forward_batch): three sequences of different lengths
 * advanced together by pieces of varying sizes (prompt chunks, single
 * tokens, some steps without one of them, the order of the sequences
 * changing), each piece asking for every row's logits, the last row's or
 * none: every row equals the same sequence run alone, bit for bit, for every
 * architecture (gemma3's window and global layer, phi3's LongRoPE included).
 * Alone on one thread, mixed on two: neither the batch nor the thread count
 * may change a bit. */
static void test_mixed_batches_are_exact(void)
{
    const char *arches[] = {"llama", "qwen2", "qwen3", "gemma3", "phi3"};
    enum { S = 3, V = 300, MAXN = 80 };
    static const int len[S] = {37, 80, 23};
    char err[256];
    threadpool *pool = threadpool_create(2, err, sizeof err), *one = threadpool_create(1, err, sizeof err);
    REQUIRE(pool && one);
    for (size_t a = 0; a < sizeof arches / sizeof arches[0]; a++) {
        model_writer_params p = small(arches[a], 60 + a);
        p.type = a % 2 ? GGML_TYPE_Q8_0 : GGML_TYPE_F32;
        p.rope_freqs = a == 0;
        const char *path = testlib_tmp_path("mixed.gguf");
        REQUIRE(model_writer_write(path, &p) == 0);
        loaded L = load(path);
        REQUIRE(L.m);
        static int32_t tokens[S][MAXN];
        static float alone[S][MAXN * V], got[MAXN * V];
        model_state *st[S];
        for (int k = 0; k < S; k++) {
            for (int i = 0; i < len[k]; i++) tokens[k][i] = (int32_t)((i * 31 + k * 101 + 7) % V);
            /* the sequences' caches of different types share the batch */
            st[k] = model_state_new(L.m, 0, (model_kv_type)((k + a) % MODEL_KV_TYPE_COUNT), err, sizeof err);
            REQUIRE(st[k]);
            REQUIRE(model_forward(L.m, st[k], one, tokens[k], len[k], alone[k], 1, err, sizeof err) == 0);
            model_state_truncate(st[k], 0);
        }
        model_batch *b = model_batch_new(L.m, err, sizeof err);
        REQUIRE(b);
        int done[S] = {0}, bad = 0, steps = 0, mixed = 0;
        uint64_t rng = 12345 + a;
        while (done[0] < len[0] || done[1] < len[1] || done[2] < len[2]) {
            model_seq seqs[S];
            int n_seq = 0, total = 0;
            for (int r = 0; r < S; r++) {
                int k = (r + steps) % S; /* the order moves each step */
                rng = rng * 6364136223846793005ull + 1442695040888963407ull;
                int left = len[k] - done[k];
                if (left == 0 || (rng >> 60) == 0) continue; /* sometimes sits a step out */
                int take = (rng >> 33) % 3 == 0 ? 1 + (int)((rng >> 40) % 29) : 1; /* a chunk or one token */
                if (take > left) take = left;
                if (total + take > MODEL_BATCH) continue;
                int mode = (int)((rng >> 20) % 3); /* 0: no logits, 1: last, 2: all */
                seqs[n_seq++] = (model_seq){.state = st[k], .tokens = tokens[k] + done[k], .n = take,
                                            .logits = mode ? got + (size_t)total * V : NULL,
                                            .all_logits = mode == 2};
                total += take;
            }
            steps++;
            if (n_seq == 0) continue;
            mixed += n_seq > 1;
            REQUIRE(model_forward_batch(L.m, b, pool, seqs, n_seq, err, sizeof err) == 0);
            for (int q = 0; q < n_seq; q++) {
                int k = seqs[q].state == st[0] ? 0 : seqs[q].state == st[1] ? 1 : 2;
                const float *ref = alone[k] + (size_t)done[k] * V;
                if (seqs[q].all_logits)
                    bad += memcmp(seqs[q].logits, ref, sizeof(float) * V * (size_t)seqs[q].n) != 0;
                else if (seqs[q].logits)
                    bad += memcmp(seqs[q].logits, ref + (size_t)(seqs[q].n - 1) * V, sizeof(float) * V) != 0;
                done[k] += seqs[q].n;
                CHECK_EQ_INT(model_state_n_past(st[k]), done[k]);
            }
        }
        if (bad) fprintf(stderr, "  %s: %d pieces differ\n", arches[a], bad);
        CHECK_EQ_INT(bad, 0);
        CHECK(mixed >= 3); /* the schedule did mix sequences */
        /* refusals leave every state alone */
        model_seq twice[2] = {{.state = st[0], .tokens = tokens[0], .n = 1},
                              {.state = st[0], .tokens = tokens[0], .n = 1}};
        CHECK(model_forward_batch(L.m, b, pool, twice, 2, err, sizeof err) == -1);
        model_state_truncate(st[2], 0);
        model_seq big = {.state = st[2], .tokens = tokens[1], .n = MODEL_BATCH + 1};
        CHECK(model_forward_batch(L.m, b, pool, &big, 1, err, sizeof err) == -1);
        CHECK_EQ_INT(model_state_n_past(st[2]), 0);
        model_batch_free(b);
        for (int k = 0; k < S; k++) model_state_free(st[k]);
        unload(&L);
    }
    threadpool_free(pool);
    threadpool_free(one);
}

/* ---- refusals ---------------------------------------------------------------- */

static const char *load_error(const model_writer_params *p, const char *extra_tensor)
{
    static char err[256];
    err[0] = 0;
    const char *path = testlib_tmp_path("bad.gguf");
    REQUIRE(model_writer_write(path, p) == 0);
    if (extra_tensor) { /* rewrite with one more tensor: cheapest through a fresh writer */
        gguf_file *f0 = gguf_open(path, err, sizeof err);
        REQUIRE(f0);
        gguf_writer *w = gguf_writer_new();
        for (uint64_t i = 0; i < f0->n_kv; i++) {
            const gguf_kv *kv = &f0->kv[i];
            char key[128];
            snprintf(key, sizeof key, "%.*s", (int)kv->key.len, kv->key.ptr);
            if (kv->type == GGUF_TYPE_STRING) gguf_writer_add_str_n(w, key, kv->v.str.ptr, kv->v.str.len);
            else if (kv->type == GGUF_TYPE_UINT32) gguf_writer_add_u32(w, key, (uint32_t)kv->v.u64);
            else if (kv->type == GGUF_TYPE_FLOAT32) gguf_writer_add_f32(w, key, (float)kv->v.f64);
        }
        for (uint64_t i = 0; i < f0->n_tensors; i++) {
            const gguf_tensor *t = &f0->tensors[i];
            char name[128];
            snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
            gguf_writer_add_tensor(w, name, t->n_dims, t->ne, t->type, t->data, t->nbytes);
        }
        uint64_t ne[1] = {(uint64_t)p->n_embd};
        gguf_writer_add_tensor(w, extra_tensor, 1, ne, GGML_TYPE_F32, NULL, (size_t)p->n_embd * 4);
        gguf_close(f0);
        REQUIRE(gguf_writer_write_file(w, path) == 0);
        gguf_writer_free(w);
    }
    gguf_file *f = gguf_open(path, err, sizeof err);
    REQUIRE(f);
    model *m = model_load(f, err, sizeof err);
    if (m) err[0] = 0;
    model_free(m);
    gguf_close(f);
    return err;
}

static void test_refusals(void)
{
    model_writer_params p = small("falcon", 1);
    const char *e = load_error(&p, NULL);
    CHECK(strstr(e, "architecture 'falcon' is not supported") &&
          strstr(e, "llama, qwen2, qwen3, phi3, gemma3"));

    p = small("phi3", 1); /* q must be n_embd wide, as llama.cpp's phi3 graph takes it */
    p.head_dim = 32;
    e = load_error(&p, NULL);
    CHECK(strstr(e, "phi3") && strstr(e, "embedding_length 64"));
    p = small("phi3", 1); /* a separate gate has no place next to the fused gate/up */
    e = load_error(&p, "blk.0.ffn_gate.weight");
    CHECK(strstr(e, "blk.0.ffn_gate.weight") && strstr(e, "phi3"));
    p = small("phi3", 1); /* fused and separate q: which one? */
    e = load_error(&p, "blk.1.attn_k.weight");
    CHECK(strstr(e, "blk.1.attn_k.weight and blk.1.attn_qkv.weight are both present") != NULL);
    p = small("phi3", 1); /* Llama 3's factors are not phi3's */
    p.rope_freqs = 1;
    e = load_error(&p, NULL);
    CHECK(strstr(e, "rope_freqs.weight") && strstr(e, "phi3"));
    p = small("llama", 1); /* phi3's tensors are phi3's */
    e = load_error(&p, "rope_factors_long.weight");
    CHECK(strstr(e, "rope_factors_long.weight") && strstr(e, "llama"));

    p = small("gemma3", 1); /* no sliding_window key */
    p.n_swa = 0;
    e = load_error(&p, NULL);
    CHECK(strstr(e, "gemma3.attention.sliding_window") != NULL);

    p = small("qwen2", 1);
    p.qkv_bias = 0;
    e = load_error(&p, NULL);
    CHECK(strstr(e, "blk.0.attn_q.bias is missing") != NULL);

    p = small("qwen3", 1);
    p.qk_norm = 0;
    e = load_error(&p, NULL);
    CHECK(strstr(e, "blk.0.attn_q_norm.weight is missing") != NULL);

    p = small("qwen3", 1); /* a norm qwen3 does not have */
    e = load_error(&p, "blk.1.post_attention_norm.weight");
    CHECK(strstr(e, "blk.1.post_attention_norm.weight") && strstr(e, "qwen3"));

    p = small("qwen2", 1); /* rope_freqs is a llama tensor */
    p.rope_freqs = 1;
    e = load_error(&p, NULL);
    CHECK(strstr(e, "rope_freqs.weight") && strstr(e, "qwen2"));

    p = small("qwen2", 1); /* no output bias in qwen2 as llama.cpp runs it */
    e = load_error(&p, "blk.0.attn_output.bias");
    CHECK(strstr(e, "blk.0.attn_output.bias") != NULL);

    p = small("llama", 1); /* a layer that does not exist */
    e = load_error(&p, "blk.2.attn_norm.weight");
    CHECK(strstr(e, "blk.2.attn_norm.weight") != NULL);
    e = load_error(&p, "blk.01.attn_norm.weight");
    CHECK(strstr(e, "blk.01.attn_norm.weight") != NULL);

    p = small("qwen3", 1); /* head width without its key: shapes say 128, config says 64 */
    p.head_dim = 32;
    CHECK(load_error(&p, NULL)[0] == 0);
}

/* ---- real shapes ------------------------------------------------------------- */

static int collect(void *user, const char *piece, size_t len)
{
    (void)piece;
    *(size_t *)user += len;
    return 0;
}

/* All the real widths, two layers, Q8_0 random weights: loads, generates two
 * tokens from a three-token prompt through the engine, and the prompt in one
 * batch equals token by token. */
static void run_real_shape(const char *what, model_writer_params p)
{
    const char *path = testlib_tmp_path("real.gguf");
    p.type = GGML_TYPE_Q8_0;
    p.fast_random = 1;
    p.n_layer = 2;
    p.n_ctx = 4096;
    REQUIRE(model_writer_write(path, &p) == 0);
    char err[512];
    engine_model *em = engine_model_load(path, 2, err, sizeof err);
    if (!em) fprintf(stderr, "  %s: %s\n", what, err);
    REQUIRE(em);
    engine_sampling s;
    engine_sampling_defaults(&s);
    s.temperature = 0;
    s.max_tokens = 2;
    size_t bytes = 0;
    engine_result r;
    REQUIRE(engine_generate(em, "ab", 2, &s, collect, &bytes, &r, err, sizeof err) == 0);
    CHECK_EQ_INT(r.prompt_tokens, 3); /* BOS, 'a', 'b' */
    CHECK(r.completion_tokens >= 1 && r.completion_tokens <= 2);
    engine_model_free(em);

    loaded L = load(path);
    REQUIRE(L.m);
    const model_config *c = model_get_config(L.m);
    CHECK_EQ_INT(c->n_vocab, p.n_vocab);
    CHECK_EQ_INT(c->head_dim, p.head_dim > 0 ? p.head_dim : p.n_embd / p.n_head);
    threadpool *pool = threadpool_create(2, err, sizeof err);
    model_state *st = model_state_new(L.m, 16, MODEL_KV_F32, err, sizeof err);
    REQUIRE(pool && st);
    int32_t tokens[3] = {p.n_vocab - 2, 97, 98};
    float *batch = malloc(sizeof(float) * 3 * (size_t)p.n_vocab), *one = malloc(sizeof(float) * (size_t)p.n_vocab);
    REQUIRE(model_forward(L.m, st, pool, tokens, 3, batch, 1, err, sizeof err) == 0);
    model_state_truncate(st, 0);
    int bad = 0;
    for (int i = 0; i < 3; i++) {
        REQUIRE(model_forward(L.m, st, pool, tokens + i, 1, one, 0, err, sizeof err) == 0);
        bad += memcmp(one, batch + (size_t)i * p.n_vocab, sizeof(float) * (size_t)p.n_vocab) != 0;
    }
    CHECK_EQ_INT(bad, 0);
    int finite = 1;
    for (int i = 0; i < 3 * p.n_vocab; i++) finite &= isfinite(batch[i]) != 0;
    CHECK(finite);
    free(batch);
    free(one);
    model_state_free(st);
    threadpool_free(pool);
    unload(&L);
    unlink(path);
}

static void test_real_shape_qwen2_5_0_5b(void)
{
    model_writer_params p = {.arch = "qwen2", .n_embd = 896, .n_head = 14, .n_head_kv = 2,
                             .n_ff = 4864, .n_vocab = 151936, .tied_output = 1, .qkv_bias = 1,
                             .rope_freq_base = 1000000.0f, .rms_eps = 1e-6f, .seed = 1};
    run_real_shape("Qwen2.5-0.5B", p);
}

static void test_real_shape_llama_3_2_1b(void)
{
    model_writer_params p = {.arch = "llama", .n_embd = 2048, .n_head = 32, .n_head_kv = 8,
                             .n_ff = 8192, .n_vocab = 128256, .tied_output = 1, .rope_freqs = 1,
                             .rope_freq_base = 500000.0f, .seed = 2};
    run_real_shape("Llama-3.2-1B", p);
}

static void test_real_shape_qwen3_0_6b(void)
{
    model_writer_params p = {.arch = "qwen3", .n_embd = 1024, .n_head = 16, .n_head_kv = 8,
                             .head_dim = 128, .n_ff = 3072, .n_vocab = 151936, .tied_output = 1,
                             .qk_norm = 1, .rope_freq_base = 1000000.0f, .rms_eps = 1e-6f, .seed = 3};
    run_real_shape("Qwen3-0.6B", p);
}

static void test_real_shape_gemma3_1b(void)
{
    model_writer_params p = {.arch = "gemma3", .n_embd = 1152, .n_head = 4, .n_head_kv = 1,
                             .head_dim = 256, .n_ff = 6912, .n_vocab = 262144, .tied_output = 1,
                             .qk_norm = 1, .n_swa = 512, .rope_freq_base = 1000000.0f,
                             .rms_eps = 1e-6f, .seed = 4};
    run_real_shape("Gemma3-1B", p);
}

static void test_real_shape_phi3_mini_4k(void)
{
    model_writer_params p = {.arch = "phi3", .n_embd = 3072, .n_head = 32, .n_head_kv = 32,
                             .n_ff = 8192, .n_vocab = 32064, .n_swa = 2047, .seed = 5};
    run_real_shape("Phi-3-mini-4k", p);
}

int main(void)
{
    RUN(test_forward_matches_reference);
    RUN(test_each_feature_matters);
    RUN(test_batching_and_threads_are_exact);
    RUN(test_mixed_batches_are_exact);
    RUN(test_refusals);
    RUN(test_real_shape_qwen2_5_0_5b);
    RUN(test_real_shape_llama_3_2_1b);
    RUN(test_real_shape_qwen3_0_6b);
    RUN(test_real_shape_gemma3_1b);
    RUN(test_real_shape_phi3_mini_4k);
    return testlib_finish();
}
