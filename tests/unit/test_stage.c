/* test_stage.c: a model split into parts (pipeline stages) computes exactly
 * what the whole model computes.
 *
 * For llama, qwen2, qwen3, gemma3 and phi3 synthetic models (model_writer.h),
 * in F32 and Q8_0: the layers run as 2 and 3 parts (separate model objects
 * loaded with model_load_part, separate states, hidden states handed from one
 * to the next in uneven batches) give logits bit-identical to model_forward;
 * so do partial files holding only one part's tensors (model_writer_copy,
 * through the production writer, as a peer fetch would write them). Bad parts are
 * refused with messages; the sizes read from the header add up to the
 * loaded weights, and the memory estimate covers what states allocate.
 * Not here: the engine's split and lanes (test_split.c), the architectures'
 * numerics (test_arch.c). */
#include "engine/gguf.h"
#include "engine/model.h"
#include "lib/threadpool.h"
#include "model_writer.h"
#include "testlib.h"

#include <stdlib.h>

/* ---- partial files ------------------------------------------------------------ */

typedef struct {
    model_part part;
    int n_layer;
} part_keep;

static int keep_part(void *ctx, const char *name)
{
    const part_keep *k = ctx;
    return model_part_has_tensor(&k->part, k->n_layer, name);
}

/* Writes to dst the file at src with only the tensors part needs (and all
 * its metadata), as a peer fetch of one stage's weights would. */
static void write_partial(const char *src, const model_part *part, int n_layer, const char *dst)
{
    part_keep k = {*part, n_layer};
    REQUIRE(model_writer_copy(src, dst, keep_part, &k) == 0);
}

/* ---- stages -------------------------------------------------------------------- */

typedef struct {
    gguf_file *f;
    model *m;
    model_state *s;
} stage;

static int stage_open(stage *st, const char *path, const model_part *part)
{
    char err[256];
    memset(st, 0, sizeof *st);
    if (!(st->f = gguf_open(path, err, sizeof err)) ||
        !(st->m = part ? model_load_part(st->f, part, err, sizeof err) : model_load(st->f, err, sizeof err)) ||
        !(st->s = model_state_new(st->m, 0, MODEL_KV_F32, err, sizeof err))) {
        fprintf(stderr, "  %s\n", err);
        return -1;
    }
    return 0;
}

static void stage_close(stage *st)
{
    model_state_free(st->s);
    model_free(st->m);
    gguf_close(st->f);
}

/* Runs tokens through the stages in uneven batches (1, 13, 64, 65, 7, ...):
 * stage 0 embeds, each stage runs its layers on the hidden states, and stage
 * 0 classifies the last stage's output -> logits (n, n_vocab). */
static void run_pipeline(stage *st, int n_stages, threadpool *pool, const int32_t *tokens, int n,
                         int n_vocab, float *logits)
{
    static const int sizes[] = {1, 13, 64, 65, 7, 3, 30};
    char err[256];
    const model_config *c = model_get_config(st[0].m);
    float *x = malloc(sizeof(float) * 65 * (size_t)c->n_embd); /* (batch, n_embd) */
    REQUIRE(x);
    for (int done = 0, k = 0; done < n; k++) {
        int nb = sizes[k % 7] < n - done ? sizes[k % 7] : n - done;
        REQUIRE(model_embed(st[0].m, tokens + done, nb, x, err, sizeof err) == 0);
        for (int i = 0; i < n_stages; i++) {
            const model_part *p = model_get_part(st[i].m);
            if (model_forward_layers(st[i].m, st[i].s, pool, p->first, p->end, x, nb, err, sizeof err))
                fprintf(stderr, "  stage %d: %s\n", i, err);
            CHECK_EQ_INT(model_state_n_past(st[i].s), done + nb);
        }
        REQUIRE(model_output(st[0].m, st[0].s, pool, x, nb, logits + (size_t)done * n_vocab, err,
                             sizeof err) == 0);
        done += nb;
    }
    free(x);
}

/* Logits of the parts (from the full file, then from partial files) equal
 * model_forward's, bit for bit. */
static void test_parts_match_whole(void)
{
    const char *arches[] = {"llama", "qwen2", "qwen3", "gemma3", "phi3"};
    ggml_type types[] = {GGML_TYPE_F32, GGML_TYPE_Q8_0};
    enum { N = 150, V = 300 };
    int32_t tokens[N];
    for (int i = 0; i < N; i++) tokens[i] = (i * 53 + 7) % V;
    char err[256];
    threadpool *pool = threadpool_create(2, err, sizeof err);
    REQUIRE(pool);
    static float want[N * V], got[N * V];
    for (size_t a = 0; a < sizeof arches / sizeof arches[0]; a++) {
        for (size_t t = 0; t < 2; t++) {
            model_writer_params p = model_writer_small(arches[a], types[t], 100 + 10 * a + t);
            const char *path = testlib_tmp_path("whole.gguf");
            REQUIRE(model_writer_write(path, &p) == 0);
            stage whole;
            REQUIRE(stage_open(&whole, path, NULL) == 0);
            REQUIRE(model_forward(whole.m, whole.s, pool, tokens, N, want, 1, err, sizeof err) == 0);
            stage_close(&whole);

            int L = p.n_layer;
            model_part splits[2][3] = {
                {{0, L / 2, 1}, {L / 2, L, 0}},
                {{0, 1, 1}, {1, L - 1, 0}, {L - 1, L, 0}},
            };
            int n_parts[2] = {2, 3};
            for (int sp = 0; sp < 2; sp++) {
                for (int partial = 0; partial < 2; partial++) {
                    stage st[3];
                    for (int i = 0; i < n_parts[sp]; i++) {
                        const char *file = path;
                        if (partial) { /* a file of the part's tensors only, loaded as what it holds */
                            char name[32];
                            snprintf(name, sizeof name, "part%d.gguf", i);
                            file = testlib_tmp_path(name);
                            write_partial(path, &splits[sp][i], L, file);
                            gguf_file *f = gguf_open(file, err, sizeof err);
                            REQUIRE(f);
                            model_part held;
                            REQUIRE(model_file_part(f, &held, err, sizeof err) == 0);
                            CHECK(held.first == splits[sp][i].first && held.end == splits[sp][i].end &&
                                  held.head == splits[sp][i].head);
                            gguf_close(f);
                        }
                        REQUIRE(stage_open(&st[i], file, &splits[sp][i]) == 0);
                    }
                    memset(got, 0, sizeof got);
                    run_pipeline(st, n_parts[sp], pool, tokens, N, V, got);
                    int same = memcmp(got, want, sizeof got) == 0;
                    if (!same)
                        fprintf(stderr, "  %s %s, %d parts%s: logits differ\n", arches[a],
                                ggml_type_name(types[t]), n_parts[sp], partial ? " (partial files)" : "");
                    CHECK(same);
                    for (int i = 0; i < n_parts[sp]; i++) stage_close(&st[i]);
                }
            }
        }
    }
    threadpool_free(pool);
}

/* ---- refusals -------------------------------------------------------------------- */

static const char *part_error(const char *path, model_part part)
{
    static char err[256];
    err[0] = 0;
    gguf_file *f = gguf_open(path, err, sizeof err);
    REQUIRE(f);
    model *m = model_load_part(f, &part, err, sizeof err);
    if (m) err[0] = 0;
    model_free(m);
    gguf_close(f);
    return err;
}

static int keep_no_layer_1_3(void *ctx, const char *name)
{
    (void)ctx;
    return strncmp(name, "blk.1.", 6) != 0 && strncmp(name, "blk.3.", 6) != 0;
}

static void test_bad_parts(void)
{
    model_writer_params p = model_writer_small("llama", GGML_TYPE_F32, 5);
    const char *path = testlib_tmp_path("bad.gguf");
    REQUIRE(model_writer_write(path, &p) == 0);
    const char *e = part_error(path, (model_part){2, 2, 0});
    CHECK(strstr(e, "layers [2, 2) are not a part of this 4-layer model") != NULL);
    e = part_error(path, (model_part){-1, 2, 1});
    CHECK(strstr(e, "[-1, 2)") != NULL);
    e = part_error(path, (model_part){3, 5, 0});
    CHECK(strstr(e, "[3, 5)") != NULL);
    CHECK(part_error(path, (model_part){3, 4, 0})[0] == 0);

    /* a partial file: layers 1-2 without the head */
    const char *part12 = testlib_tmp_path("part12.gguf");
    write_partial(path, &(model_part){1, 3, 0}, 4, part12);
    CHECK(part_error(part12, (model_part){1, 3, 0})[0] == 0);
    CHECK(part_error(part12, (model_part){2, 3, 0})[0] == 0);
    e = part_error(part12, (model_part){0, 3, 0});
    CHECK(strstr(e, "blk.0.attn_norm.weight is missing") != NULL);
    e = part_error(part12, (model_part){1, 3, 1});
    CHECK(strstr(e, "token_embd.weight is missing") != NULL);

    char err[256];
    gguf_file *f = gguf_open(part12, err, sizeof err);
    REQUIRE(f);
    model *m = model_load_part(f, &(model_part){1, 3, 0}, err, sizeof err);
    REQUIRE(m);
    CHECK_EQ_INT(model_get_config(m)->n_vocab, 300); /* from the tokenizer */
    threadpool *pool = threadpool_create(1, err, sizeof err);
    model_state *s = model_state_new(m, 16, MODEL_KV_F32, err, sizeof err);
    REQUIRE(pool && s);
    int32_t tok = 5;
    float x[64 * 2] = {0}, logits[300];
    CHECK(model_embed(m, &tok, 1, x, err, sizeof err) == -1);
    CHECK(strstr(err, "embeddings and the output are not loaded") != NULL);
    CHECK(model_output(m, s, pool, x, 1, logits, err, sizeof err) == -1);
    CHECK(model_forward(m, s, pool, &tok, 1, logits, 0, err, sizeof err) == -1);
    CHECK(strstr(err, "needs the whole model") != NULL);
    CHECK(model_forward_layers(m, s, pool, 0, 2, x, 1, err, sizeof err) == -1);
    CHECK(strstr(err, "not within the loaded layers [1, 3)") != NULL);
    CHECK(model_forward_layers(m, s, pool, 1, 3, x, 0, err, sizeof err) == -1);
    CHECK(model_forward_layers(m, s, pool, 1, 3, x, 17, err, sizeof err) == -1);
    CHECK(strstr(err, "context full") != NULL);
    CHECK(model_forward_layers(m, s, pool, 1, 3, x, 2, err, sizeof err) == 0);
    /* the cache holds layers 1-2 now: another range must wait for a truncation to 0 */
    CHECK(model_forward_layers(m, s, pool, 2, 3, x, 1, err, sizeof err) == -1);
    CHECK(strstr(err, "cache holds layers [1, 3)") != NULL);
    CHECK_EQ_INT(model_state_n_past(s), 2);
    model_state_truncate(s, 0);
    CHECK(model_forward_layers(m, s, pool, 2, 3, x, 1, err, sizeof err) == 0);
    model_state_free(s);
    threadpool_free(pool);
    model_free(m);
    gguf_close(f);

    /* what a file holds */
    model_part held;
    f = gguf_open(part12, err, sizeof err);
    REQUIRE(f);
    REQUIRE(model_file_part(f, &held, err, sizeof err) == 0);
    CHECK(held.first == 1 && held.end == 3 && held.head == 0);
    gguf_close(f);
    const char *head0 = testlib_tmp_path("head0.gguf"), *gap = testlib_tmp_path("gap.gguf");
    write_partial(path, &(model_part){0, 1, 1}, 4, head0);
    f = gguf_open(head0, err, sizeof err);
    REQUIRE(f);
    REQUIRE(model_file_part(f, &held, err, sizeof err) == 0);
    CHECK(held.first == 0 && held.end == 1 && held.head == 1);
    gguf_close(f);

    /* a gap: layers 0 and 2, not 1 (nor 3) */
    REQUIRE(model_writer_copy(path, gap, keep_no_layer_1_3, NULL) == 0);
    f = gguf_open(gap, err, sizeof err);
    REQUIRE(f);
    CHECK(model_file_part(f, &held, err, sizeof err) == -1);
    CHECK(strstr(err, "layers 0 and 2 but none of layer 1") != NULL);
    m = model_load(f, err, sizeof err);
    CHECK(!m && strstr(err, "blk.1.attn_norm.weight is missing"));
    gguf_close(f);
}

/* ---- sizes ------------------------------------------------------------------------- */

/* The header's sizes add up to what loading finds, part by part, and the
 * estimate covers the weights and what the states allocate. */
static void test_sizes(void)
{
    const char *arches[] = {"llama", "qwen2", "gemma3", "phi3"};
    char err[256];
    threadpool *pool = threadpool_create(3, err, sizeof err);
    REQUIRE(pool);
    static model_sizes z;
    for (size_t a = 0; a < sizeof arches / sizeof arches[0]; a++) {
        model_writer_params p = model_writer_small(arches[a], a % 2 ? GGML_TYPE_Q8_0 : GGML_TYPE_F32, 7 + a);
        const char *path = testlib_tmp_path("sizes.gguf");
        REQUIRE(model_writer_write(path, &p) == 0);
        gguf_file *f = gguf_open(path, err, sizeof err);
        REQUIRE(f);
        REQUIRE(model_sizes_read(f, &z, err, sizeof err) == 0);
        CHECK_EQ_INT(z.c.n_layer, p.n_layer);
        CHECK_EQ_INT(z.c.n_vocab, 300);
        model *whole = model_load(f, err, sizeof err);
        REQUIRE(whole);
        uint64_t sum = z.head_bytes + z.rope_bytes;
        for (int l = 0; l < p.n_layer; l++) sum += z.layer_bytes[l];
        CHECK_EQ_INT(sum, model_weight_bytes(whole));
        CHECK(z.rope_bytes > 0 || (strcmp(arches[a], "llama") && strcmp(arches[a], "phi3")));
        model_free(whole);

        model_part parts[] = {{0, 1, 1}, {1, p.n_layer, 0}, {0, p.n_layer, 1}};
        for (size_t i = 0; i < 3; i++) {
            model *m = model_load_part(f, &parts[i], err, sizeof err);
            REQUIRE(m);
            uint64_t want = z.rope_bytes + (parts[i].head ? z.head_bytes : 0);
            for (int l = parts[i].first; l < parts[i].end; l++) want += z.layer_bytes[l];
            CHECK_EQ_INT(model_weight_bytes(m), want);
            uint64_t need_by_type[MODEL_KV_TYPE_COUNT];
            for (int t = 0; t < MODEL_KV_TYPE_COUNT; t++) {
                model_state *s = model_state_new(m, 100, (model_kv_type)t, err, sizeof err);
                REQUIRE(s);
                float *x = calloc(100 * (size_t)p.n_embd, sizeof(float));
                REQUIRE(model_forward_layers(m, s, pool, parts[i].first, parts[i].end, x, 100, err, sizeof err) == 0);
                free(x);
                uint64_t need = need_by_type[t] = model_part_need(&z, &parts[i], 100, (model_kv_type)t, 2, 3);
                CHECK(need >= want + 2 * model_state_bytes(s));
                /* KV grows with the layers and positions: 2 states of 100 positions */
                uint64_t kv = 2 * 100 * (uint64_t)(parts[i].end - parts[i].first) *
                              model_kv_bytes_per_pos(&z, (model_kv_type)t);
                CHECK(model_state_bytes(s) >= kv / 2);
                CHECK(model_part_need(&z, &parts[i], 200, (model_kv_type)t, 2, 3) - need >= kv);
                model_state_free(s);
            }
            /* an F16 cache is half an F32 one: 2 bytes less per value, 2 states */
            uint64_t values = 2 * 100 * (uint64_t)(parts[i].end - parts[i].first) * z.kv_values_per_pos;
            CHECK(need_by_type[MODEL_KV_F32] - need_by_type[MODEL_KV_F16] >= 2 * values);
            model_free(m);
        }
        gguf_close(f);
    }
    threadpool_free(pool);
}

int main(void)
{
    RUN(test_parts_match_whole);
    RUN(test_bad_parts);
    RUN(test_sizes);
    return testlib_finish();
}
