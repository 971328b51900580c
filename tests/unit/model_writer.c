/* model_writer.c: see model_writer.h.
 *
 * Weights are uniform with a scale of 1/sqrt(fan_in), which keeps the
 * activations O(1) through a few layers; norm weights are near 1 and biases
 * near 0.3 so that each has a visible effect on the logits (a test that
 * drops a bias or a norm must fail). */
#define _GNU_SOURCE
#include "model_writer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/gguf_write.h"
#include "gguf_writer.h"

static void die(const char *msg)
{
    fprintf(stderr, "model_writer: %s\n", msg);
    abort();
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull); /* splitmix64 */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static float rng_uniform(uint64_t *s) /* [-1, 1) */
{
    return (float)((rng_next(s) >> 40) * (1.0 / (1ull << 24))) * 2.0f - 1.0f;
}

/* A (ne1, ne0) tensor of bias + scale * uniform(-1, 1) values. */
static void add_random(gguf_writer *w, const char *name, uint64_t ne0, uint64_t ne1,
                       ggml_type type, float scale, float bias, int fast, uint64_t *rng)
{
    uint64_t ne[2] = {ne0, ne1};
    uint32_t n_dims = ne1 == 1 ? 1 : 2;
    size_t n = (size_t)(ne0 * ne1), nbytes = gguf_writer_tensor_nbytes(n_dims, ne, type);
    uint8_t *data = malloc(nbytes ? nbytes : 1);
    if (!data) die("out of memory");
    if (type == GGML_TYPE_Q8_0 && fast) { /* blocks of 32 random int8 under one scale */
        uint16_t d = gguf_writer_f32_to_f16(scale / 127.0f);
        for (size_t b = 0; b < n / 32; b++) {
            uint8_t *blk = data + b * 34;
            memcpy(blk, &d, 2);
            uint64_t r = 0;
            for (int i = 0; i < 32; i++) {
                if (i % 8 == 0) r = rng_next(rng);
                blk[2 + i] = (uint8_t)(int8_t)((int)(r & 0xff) % 255 - 127);
                r >>= 8;
            }
        }
    } else {
        float *x = malloc(n * sizeof *x);
        if (!x) die("out of memory");
        for (size_t i = 0; i < n; i++) x[i] = bias + scale * rng_uniform(rng);
        if (type == GGML_TYPE_F32) {
            memcpy(data, x, nbytes);
        } else if (type == GGML_TYPE_F16) {
            for (size_t i = 0; i < n; i++) {
                uint16_t h = gguf_writer_f32_to_f16(x[i]);
                memcpy(data + 2 * i, &h, 2);
            }
        } else if (type == GGML_TYPE_Q8_0) {
            gguf_writer_quantize_q8_0(x, n, data);
        } else {
            die("unsupported type");
        }
        free(x);
    }
    gguf_writer_add_tensor(w, name, n_dims, ne, type, data, nbytes);
    free(data);
}

int model_writer_write(const char *path, const model_writer_params *p)
{
    int q8 = p->type == GGML_TYPE_Q8_0;
    int hd = p->head_dim > 0 ? p->head_dim : p->n_head > 0 ? p->n_embd / p->n_head : 0;
    if (!p->arch || p->n_embd <= 0 || p->n_layer <= 0 || p->n_head <= 0 || p->n_head_kv <= 0 ||
        hd <= 0 || p->n_ff <= 0 || p->n_vocab < 258 || p->n_head % p->n_head_kv ||
        (p->head_dim <= 0 && p->n_embd % p->n_head) ||
        (p->type != GGML_TYPE_F32 && p->type != GGML_TYPE_F16 && !q8) ||
        (q8 && (p->n_embd % 32 || p->n_ff % 32 || (p->n_head * hd) % 32)) ||
        (p->n_rot > 0 && (p->n_rot % 2 || p->n_rot > hd)))
        return -1;
    int q_dim = p->n_head * hd, kv_dim = p->n_head_kv * hd;
    gguf_writer *w = gguf_writer_new();
    char key[128];
#define KEY(suffix) (snprintf(key, sizeof key, "%s.%s", p->arch, suffix), key)
    gguf_writer_add_str(w, "general.architecture", p->arch);
    gguf_writer_add_str(w, "general.name", "synthetic-test-model");
    gguf_writer_add_u32(w, KEY("context_length"), (uint32_t)(p->n_ctx > 0 ? p->n_ctx : 256));
    gguf_writer_add_u32(w, KEY("embedding_length"), (uint32_t)p->n_embd);
    gguf_writer_add_u32(w, KEY("block_count"), (uint32_t)p->n_layer);
    gguf_writer_add_u32(w, KEY("feed_forward_length"), (uint32_t)p->n_ff);
    gguf_writer_add_u32(w, KEY("attention.head_count"), (uint32_t)p->n_head);
    gguf_writer_add_u32(w, KEY("attention.head_count_kv"), (uint32_t)p->n_head_kv);
    if (p->head_dim > 0) {
        gguf_writer_add_u32(w, KEY("attention.key_length"), (uint32_t)hd);
        gguf_writer_add_u32(w, KEY("attention.value_length"), (uint32_t)hd);
    }
    gguf_writer_add_f32(w, KEY("rope.freq_base"), p->rope_freq_base > 0 ? p->rope_freq_base : 10000.0f);
    gguf_writer_add_f32(w, KEY("attention.layer_norm_rms_epsilon"), p->rms_eps > 0 ? p->rms_eps : 1e-5f);
    if (p->n_swa > 0) gguf_writer_add_u32(w, KEY("attention.sliding_window"), (uint32_t)p->n_swa);
    if (p->n_rot > 0) gguf_writer_add_u32(w, KEY("rope.dimension_count"), (uint32_t)p->n_rot);
    if (p->n_ctx_orig > 0)
        gguf_writer_add_u32(w, KEY("rope.scaling.original_context_length"), (uint32_t)p->n_ctx_orig);
    if (p->attn_factor > 0) gguf_writer_add_f32(w, KEY("rope.scaling.attn_factor"), p->attn_factor);
    if (p->llama3_keys) {
        gguf_writer_add_str(w, KEY("rope.scaling.type"), "llama3");
        gguf_writer_add_f32(w, KEY("rope.scaling.factor"), 8.0f);
        gguf_writer_add_f32(w, KEY("rope.scaling.low_freq_factor"), 1.0f);
        gguf_writer_add_f32(w, KEY("rope.scaling.high_freq_factor"), 4.0f);
        gguf_writer_add_u32(w, KEY("rope.scaling.original_context_length"), 64);
    }
#undef KEY

    /* Vocabulary: the 256 byte symbols, fillers, then BOS and EOS. */
    int n_extra = p->n_vocab - 258;
    char **extra = malloc(((size_t)n_extra + 1) * sizeof *extra);
    char *names = malloc(((size_t)n_extra + 1) * 32);
    if (!extra || !names) die("out of memory");
    for (int i = 0; i < n_extra; i++) {
        extra[i] = names + (size_t)i * 32;
        snprintf(extra[i], 32, "<|filler_%d|>", i);
    }
    gguf_writer_add_gpt2_tokenizer(w, (const char *const *)extra, n_extra, NULL, 0, 1);
    if (p->chat_template) gguf_writer_add_str(w, "tokenizer.chat_template", p->chat_template);
    free(extra);
    free(names);

    uint64_t rng = p->seed;
    ggml_type t = p->type;
    int fast = p->fast_random;
    float s_embd = 1.0f / sqrtf((float)p->n_embd), s_ff = 1.0f / sqrtf((float)p->n_ff);
    float s_q = 1.0f / sqrtf((float)q_dim);
    add_random(w, "token_embd.weight", (uint64_t)p->n_embd, (uint64_t)p->n_vocab, t, 1.0f, 0, fast, &rng);
    add_random(w, "output_norm.weight", (uint64_t)p->n_embd, 1, GGML_TYPE_F32, 0.1f, 1.0f, 0, &rng);
    if (!p->tied_output)
        add_random(w, "output.weight", (uint64_t)p->n_embd, (uint64_t)p->n_vocab, t, s_embd, 0, fast, &rng);
    int n_rot = p->n_rot > 0 ? p->n_rot : hd;
    if (p->rope_freqs) /* divisors in [1, 8): 1 + 3.5 * (u + 1) */
        add_random(w, "rope_freqs.weight", (uint64_t)n_rot / 2, 1, GGML_TYPE_F32, 3.5f, 4.5f, 0, &rng);
    if (p->longrope) {
        add_random(w, "rope_factors_long.weight", (uint64_t)n_rot / 2, 1, GGML_TYPE_F32, 3.5f, 4.5f, 0, &rng);
        add_random(w, "rope_factors_short.weight", (uint64_t)n_rot / 2, 1, GGML_TYPE_F32, 0.25f, 1.25f, 0,
                   &rng);
    }
    int phi3 = !strcmp(p->arch, "phi3");
    for (int l = 0; l < p->n_layer; l++) {
        char name[64];
#define LAYER(suffix, ne0, ne1, type, scale, bias) do { \
        snprintf(name, sizeof name, "blk.%d." suffix, l); \
        add_random(w, name, (uint64_t)(ne0), (uint64_t)(ne1), type, scale, bias, fast, &rng); \
    } while (0)
        LAYER("attn_norm.weight", p->n_embd, 1, GGML_TYPE_F32, 0.1f, 1.0f);
        if (phi3 && !p->separate_qkv) {
            LAYER("attn_qkv.weight", p->n_embd, q_dim + 2 * kv_dim, t, s_embd, 0);
        } else {
            LAYER("attn_q.weight", p->n_embd, q_dim, t, s_embd, 0);
            LAYER("attn_k.weight", p->n_embd, kv_dim, t, s_embd, 0);
            LAYER("attn_v.weight", p->n_embd, kv_dim, t, s_embd, 0);
        }
        if (p->qkv_bias) {
            LAYER("attn_q.bias", q_dim, 1, GGML_TYPE_F32, 0.3f, 0);
            LAYER("attn_k.bias", kv_dim, 1, GGML_TYPE_F32, 0.3f, 0);
            LAYER("attn_v.bias", kv_dim, 1, GGML_TYPE_F32, 0.3f, 0);
        }
        if (p->qk_norm) {
            LAYER("attn_q_norm.weight", hd, 1, GGML_TYPE_F32, 0.3f, 1.0f);
            LAYER("attn_k_norm.weight", hd, 1, GGML_TYPE_F32, 0.3f, 1.0f);
        }
        LAYER("attn_output.weight", q_dim, p->n_embd, t, s_q, 0);
        if (p->out_bias) LAYER("attn_output.bias", p->n_embd, 1, GGML_TYPE_F32, 0.3f, 0);
        if (!strcmp(p->arch, "gemma3")) {
            LAYER("post_attention_norm.weight", p->n_embd, 1, GGML_TYPE_F32, 0.3f, 1.0f);
            LAYER("post_ffw_norm.weight", p->n_embd, 1, GGML_TYPE_F32, 0.3f, 1.0f);
        }
        LAYER("ffn_norm.weight", p->n_embd, 1, GGML_TYPE_F32, 0.1f, 1.0f);
        if (phi3) {
            LAYER("ffn_up.weight", p->n_embd, 2 * p->n_ff, t, s_embd, 0);
        } else {
            LAYER("ffn_gate.weight", p->n_embd, p->n_ff, t, s_embd, 0);
            LAYER("ffn_up.weight", p->n_embd, p->n_ff, t, s_embd, 0);
        }
        LAYER("ffn_down.weight", p->n_ff, p->n_embd, t, s_ff, 0);
#undef LAYER
    }
    int rc = gguf_writer_write_file(w, path);
    gguf_writer_free(w);
    return rc;
}

model_writer_params model_writer_small(const char *arch, ggml_type type, uint64_t seed)
{
    model_writer_params p = {.arch = arch, .n_embd = 64, .n_layer = 4, .n_head = 4, .n_head_kv = 2,
                             .n_ff = 96, .n_vocab = 300, .type = type, .seed = seed};
    if (!strcmp(arch, "llama")) {
        p.rope_freqs = 1;
    } else if (!strcmp(arch, "qwen2")) {
        p.qkv_bias = 1, p.tied_output = 1, p.rope_freq_base = 1000000.0f, p.rms_eps = 1e-6f;
    } else if (!strcmp(arch, "qwen3")) {
        p.qk_norm = 1, p.tied_output = 1, p.head_dim = 32, p.rope_freq_base = 1000000.0f,
        p.rms_eps = 1e-6f;
    } else if (!strcmp(arch, "gemma3")) {
        p.qk_norm = 1, p.tied_output = 1, p.head_dim = 32, p.n_head_kv = 1, p.n_layer = 7,
        p.n_swa = 4, p.rope_freq_base = 1000000.0f, p.rms_eps = 1e-6f;
    } else if (!strcmp(arch, "phi3")) {
        p.longrope = 1, p.n_ctx = 256, p.n_ctx_orig = 128, p.attn_factor = 1.19f, p.n_rot = 12;
    }
    return p;
}

typedef struct {
    const gguf_file *src;
    const size_t *index; /* the written tensors' indices in src */
} copy_ctx;

static int copy_tensor(void *ctx, size_t i, void *dst, uint64_t nbytes, char *err, size_t errlen)
{
    const copy_ctx *c = ctx;
    const gguf_tensor *t = &c->src->tensors[c->index[i]];
    if (t->nbytes != nbytes) {
        snprintf(err, errlen, "tensor %zu: %llu bytes, %llu expected", i,
                 (unsigned long long)t->nbytes, (unsigned long long)nbytes);
        return -1;
    }
    memcpy(dst, t->data, nbytes);
    return 0;
}

int model_writer_copy(const char *src, const char *dst, int (*keep)(void *ctx, const char *name),
                      void *ctx)
{
    char err[256] = "out of memory";
    int rc = -1;
    gguf_write *w = NULL;
    size_t *index = NULL, n = 0;
    gguf_file *f = gguf_open(src, err, sizeof err);
    if (!f || !(w = gguf_write_new()) || !(index = malloc(sizeof *index * (f->n_tensors + 1)))) goto out;
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (gguf_write_copy_kv(w, &f->kv[i], err, sizeof err) != 0) goto out;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        if (!keep(ctx, name)) continue;
        if (gguf_write_add_tensor(w, t->name, t->n_dims, t->ne, t->type, err, sizeof err) != 0) goto out;
        index[n++] = (size_t)i;
    }
    copy_ctx c = {f, index};
    rc = gguf_write_file(w, dst, copy_tensor, &c, err, sizeof err);
out:
    if (rc != 0) fprintf(stderr, "model_writer_copy %s: %s\n", src, err);
    free(index);
    gguf_write_free(w);
    gguf_close(f);
    return rc;
}
