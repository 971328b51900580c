/* model.c: see model.h.
 *
 * Layout: the weight structures, loading and validation (of a whole model or
 * a part), sizes for placement, the state, and the forward pass, which reads
 * top to bottom like the maths: embed (model_embed) -> per layer (norm, q/k/v
 * [+ biases] [, per-head q/k norm], RoPE, attention, residual, norm, SwiGLU
 * FFN, residual; forward_layers over a layer range) -> final norm ->
 * classifier (model_output). model_forward chains the three for a whole
 * model, so a pipeline of parts runs the very code solo runs. The same computation as llama.cpp's llama, qwen2, qwen3 and
 * phi3 graphs, so their GGUF files mean the same thing here. One forward
 * serves the four: they differ only in optional tensors, the RoPE pairing
 * and factors, and phi3's fused matrices (views made at load), which keeps
 * each step written once (see docs/engine.md, "Architectures"). gemma3 has
 * its own forward; the steps the two passes share (norm_qkv, norm_heads,
 * attend, norm_gate_up) are functions both call. */
#include "engine/model.h"

#include <assert.h>
#include <math.h>
#include <sys/mman.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/kernels.h"

/* ======================================================================== */
/* weights                                                                   */
/* ======================================================================== */

typedef struct {
    float *attn_norm;     /* (n_embd) owned copy */
    kernel_matrix wq;     /* (n_head * head_dim, n_embd) */
    kernel_matrix wk;     /* (n_head_kv * head_dim, n_embd) */
    kernel_matrix wv;     /* (n_head_kv * head_dim, n_embd) */
    float *bq;            /* (n_head * head_dim) or NULL; qwen2 always, llama optionally */
    float *bk;            /* (n_head_kv * head_dim) or NULL */
    float *bv;            /* (n_head_kv * head_dim) or NULL */
    float *q_norm;        /* (head_dim) or NULL; qwen3: RMSNorm of each q head */
    float *k_norm;        /* (head_dim) or NULL; qwen3: RMSNorm of each k head */
    kernel_matrix wo;     /* (n_embd, n_head * head_dim) */
    float *bo;            /* (n_embd) or NULL; llama optionally */
    float *post_attn_norm; /* (n_embd) or NULL; gemma3: norm of the attention output */
    float *ffn_norm;      /* (n_embd) owned copy */
    kernel_matrix w_gate; /* (n_ff, n_embd) */
    kernel_matrix w_up;   /* (n_ff, n_embd) */
    kernel_matrix w_down; /* (n_embd, n_ff) */
    float *post_ffn_norm; /* (n_embd) or NULL; gemma3: norm of the FFN output */
} model_layer;

struct model {
    model_config c;
    model_part part;           /* what is loaded: the rest is zero */
    kernel_matrix token_embd;  /* (n_vocab, n_embd), head only */
    float *output_norm;        /* (n_embd) owned copy, head only */
    kernel_matrix output;      /* (n_vocab, n_embd); token_embd's data when tied; head only */
    float *rope_freq_factors;  /* (n_rot / 2) divisors of each pair's frequency, or NULL */
    float *rope_factors_long;  /* (n_rot / 2) phi3 LongRoPE divisors beyond n_ctx_orig, or NULL */
    float *rope_factors_short; /* (n_rot / 2) phi3 LongRoPE divisors up to n_ctx_orig, or NULL */
    model_layer *layers;       /* (n_layer), indexed by layer; [part.first, part.end) loaded */
    uint64_t weight_bytes;
    size_t matmul_scratch;     /* bytes kernel_matmul needs for MODEL_BATCH tokens */
    void *arena;               /* the interleaved copies of the matrices (interleave_weights), or NULL */
    size_t arena_bytes;
};

/* ======================================================================== */
/* architectures                                                             */
/* ======================================================================== */

#define ARCH_BIT(a) (1u << (a))
#define ARCH_ALL (ARCH_BIT(MODEL_ARCH_LLAMA) | ARCH_BIT(MODEL_ARCH_QWEN2) | \
                  ARCH_BIT(MODEL_ARCH_QWEN3) | ARCH_BIT(MODEL_ARCH_GEMMA3) | \
                  ARCH_BIT(MODEL_ARCH_PHI3))
#define ARCH_NOT_PHI3 (ARCH_ALL & ~ARCH_BIT(MODEL_ARCH_PHI3))

static const struct {
    const char *name;  /* general.architecture, and the prefix of its keys */
    int rope_neox;     /* llama.cpp's LLAMA_ROPE_TYPE_NEOX for this architecture */
} arch_info[MODEL_ARCH_COUNT] = {
    [MODEL_ARCH_LLAMA] = {"llama", 0},
    [MODEL_ARCH_QWEN2] = {"qwen2", 1},
    [MODEL_ARCH_QWEN3] = {"qwen3", 1},
    [MODEL_ARCH_GEMMA3] = {"gemma3", 1},
    [MODEL_ARCH_PHI3] = {"phi3", 1},
};

const char *model_arch_name(model_arch a)
{
    assert(a >= 0 && a < MODEL_ARCH_COUNT);
    return arch_info[a].name;
}

/* Every tensor name an architecture may have; model_load refuses any other
 * (an ignored tensor would mean silently wrong output). Whether one is
 * required is decided where it is loaded. Per layer, after "blk.N.": */
static const struct {
    const char *suffix;
    unsigned archs;
} layer_tensors[] = {
    {"attn_norm.weight", ARCH_ALL},
    {"attn_q.weight", ARCH_ALL}, /* phi3: these three or attn_qkv */
    {"attn_k.weight", ARCH_ALL},
    {"attn_v.weight", ARCH_ALL},
    {"attn_qkv.weight", ARCH_BIT(MODEL_ARCH_PHI3)}, /* q, k, v rows stacked */
    {"attn_output.weight", ARCH_ALL},
    {"ffn_norm.weight", ARCH_ALL},
    {"ffn_gate.weight", ARCH_NOT_PHI3},
    {"ffn_up.weight", ARCH_ALL}, /* phi3: gate and up rows stacked (2 n_ff) */
    {"ffn_down.weight", ARCH_ALL},
    /* llama.cpp's llama graph takes these when present; qwen2 requires q/k/v */
    {"attn_q.bias", ARCH_BIT(MODEL_ARCH_LLAMA) | ARCH_BIT(MODEL_ARCH_QWEN2)},
    {"attn_k.bias", ARCH_BIT(MODEL_ARCH_LLAMA) | ARCH_BIT(MODEL_ARCH_QWEN2)},
    {"attn_v.bias", ARCH_BIT(MODEL_ARCH_LLAMA) | ARCH_BIT(MODEL_ARCH_QWEN2)},
    {"attn_output.bias", ARCH_BIT(MODEL_ARCH_LLAMA)},
    {"attn_q_norm.weight", ARCH_BIT(MODEL_ARCH_QWEN3) | ARCH_BIT(MODEL_ARCH_GEMMA3)},
    {"attn_k_norm.weight", ARCH_BIT(MODEL_ARCH_QWEN3) | ARCH_BIT(MODEL_ARCH_GEMMA3)},
    {"post_attention_norm.weight", ARCH_BIT(MODEL_ARCH_GEMMA3)},
    {"post_ffw_norm.weight", ARCH_BIT(MODEL_ARCH_GEMMA3)},
};
/* and global: the head's (a part with head loads them) and the RoPE
 * factors (every part loads them: every layer rotates with them). */
static const struct {
    const char *name;
    unsigned archs;
    int head;
} global_tensors[] = {
    {"token_embd.weight", ARCH_ALL, 1},
    {"output_norm.weight", ARCH_ALL, 1},
    {"output.weight", ARCH_ALL, 1}, /* absent: tied to token_embd */
    {"rope_freqs.weight", ARCH_BIT(MODEL_ARCH_LLAMA), 0}, /* Llama 3.1+ frequency divisors */
    {"rope_factors_long.weight", ARCH_BIT(MODEL_ARCH_PHI3), 0},  /* LongRoPE divisors, long context */
    {"rope_factors_short.weight", ARCH_BIT(MODEL_ARCH_PHI3), 0}, /* and up to the original context */
};

/* Where a tensor belongs. */
enum { TENSOR_UNKNOWN = -3, TENSOR_HEAD = -2, TENSOR_ROPE = -1 /* >= 0: its layer */ };

/* The place of the tensor called name among the tensors of the architectures
 * in archs (ARCH_BIT mask) with n_layer layers: its layer, TENSOR_HEAD,
 * TENSOR_ROPE, or TENSOR_UNKNOWN ("blk.01." is not layer 1's prefix, and a
 * layer past n_layer is unknown). */
static int tensor_place(const char *name, unsigned archs, int n_layer)
{
    for (size_t g = 0; g < sizeof global_tensors / sizeof global_tensors[0]; g++)
        if ((global_tensors[g].archs & archs) && !strcmp(name, global_tensors[g].name))
            return global_tensors[g].head ? TENSOR_HEAD : TENSOR_ROPE;
    int layer, prefix = 0;
    if (sscanf(name, "blk.%d.%n", &layer, &prefix) != 1 || prefix == 0 || layer < 0 ||
        layer >= n_layer)
        return TENSOR_UNKNOWN;
    char canonical[24];
    snprintf(canonical, sizeof canonical, "blk.%d.", layer);
    if ((int)strlen(canonical) != prefix || strncmp(name, canonical, (size_t)prefix) != 0)
        return TENSOR_UNKNOWN;
    for (size_t k = 0; k < sizeof layer_tensors / sizeof layer_tensors[0]; k++)
        if ((layer_tensors[k].archs & archs) && !strcmp(name + prefix, layer_tensors[k].suffix))
            return layer;
    return TENSOR_UNKNOWN;
}

int model_part_has_tensor(const model_part *part, int n_layer, const char *name)
{
    int place = tensor_place(name, ARCH_ALL, n_layer);
    return place == TENSOR_ROPE || (place == TENSOR_HEAD && part->head) ||
           (place >= part->first && place < part->end);
}

/* Fetches an integer config key into [lo, hi]. A missing key takes def when
 * def >= 0 and is an error otherwise. */
static int config_int(const gguf_file *f, const char *key, long def, long lo, long hi, int *out,
                      char *err, size_t errlen)
{
    uint32_t v;
    if (gguf_get_u32(f, key, &v) != 0) {
        if (gguf_find(f, key)) {
            snprintf(err, errlen, "metadata key %s is not a non-negative integer", key);
            return -1;
        }
        if (def < 0) {
            snprintf(err, errlen, "metadata key %s is missing", key);
            return -1;
        }
        v = (uint32_t)def;
    }
    if ((long)v < lo || (long)v > hi) {
        snprintf(err, errlen, "metadata key %s = %u is out of range [%ld, %ld]", key, v, lo, hi);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int config_float(const gguf_file *f, const char *key, float def, float *out, char *err,
                        size_t errlen)
{
    if (gguf_get_f32(f, key, out) != 0) {
        if (gguf_find(f, key)) {
            snprintf(err, errlen, "metadata key %s is not a float", key);
            return -1;
        }
        if (def < 0) {
            snprintf(err, errlen, "metadata key %s is missing", key);
            return -1;
        }
        *out = def;
    }
    if (!isfinite(*out) || *out <= 0) {
        snprintf(err, errlen, "metadata key %s = %g must be a positive number", key, (double)*out);
        return -1;
    }
    return 0;
}

/* "{arch}.suffix" into buf (arch names and suffixes are short constants). */
static const char *arch_key(char *buf, size_t cap, const model_config *c, const char *suffix)
{
    int n = snprintf(buf, cap, "%s.%s", model_arch_name(c->arch), suffix);
    assert(n > 0 && (size_t)n < cap);
    (void)n;
    return buf;
}

static int read_config(const gguf_file *f, model_config *c, char *err, size_t errlen)
{
    gguf_str arch;
    if (gguf_get_str(f, "general.architecture", &arch) != 0) {
        snprintf(err, errlen, "metadata key general.architecture is missing");
        return -1;
    }
    int found = 0;
    for (int a = 0; a < MODEL_ARCH_COUNT && !found; a++) {
        if (gguf_str_eq(arch, arch_info[a].name)) {
            c->arch = (model_arch)a;
            found = 1;
        }
    }
    if (!found) {
        char name[72];
        snprintf(err, errlen, "architecture '%s' is not supported (llmesh runs: llama, qwen2, qwen3, "
                 "phi3, gemma3)",
                 gguf_str_printable(arch, name, sizeof name));
        return -1;
    }
    c->rope_neox = arch_info[c->arch].rope_neox;
    const char *an = model_arch_name(c->arch);
    char k[96], k2[96];
#define KEY(suffix) arch_key(k, sizeof k, c, suffix)
    uint32_t experts;
    if (gguf_get_u32(f, KEY("expert_count"), &experts) == 0 && experts > 0) {
        snprintf(err, errlen, "mixture-of-experts %s models (%s = %u) are not supported", an, k,
                 experts);
        return -1;
    }
    if (config_int(f, KEY("embedding_length"), -1, 1, 1 << 16, &c->n_embd, err, errlen) ||
        config_int(f, KEY("block_count"), -1, 1, MODEL_MAX_LAYERS, &c->n_layer, err, errlen) ||
        config_int(f, KEY("feed_forward_length"), -1, 1, 1 << 20, &c->n_ff, err, errlen) ||
        config_int(f, KEY("attention.head_count"), -1, 1, 1024, &c->n_head, err, errlen) ||
        config_int(f, KEY("attention.head_count_kv"), c->n_head, 1, c->n_head, &c->n_head_kv,
                   err, errlen) ||
        config_int(f, KEY("context_length"), -1, 1, 1 << 24, &c->n_ctx_train, err, errlen) ||
        config_float(f, KEY("attention.layer_norm_rms_epsilon"), -1, &c->norm_eps, err, errlen) ||
        config_float(f, KEY("rope.freq_base"), 10000.0f, &c->rope_base, err, errlen))
        return -1;
    if (c->n_head % c->n_head_kv != 0) {
        snprintf(err, errlen, "%s.attention.head_count %d is not a multiple of "
                 "%s.attention.head_count_kv %d", an, c->n_head, an, c->n_head_kv);
        return -1;
    }
    /* The head width is its own key: Qwen3 and Gemma have n_head * head_dim
     * != n_embd. Without the key, llama.cpp's default n_embd / n_head. */
    int key_len, value_len;
    if (c->n_embd % c->n_head == 0) {
        if (config_int(f, KEY("attention.key_length"), c->n_embd / c->n_head, 1, 1 << 12, &key_len,
                       err, errlen))
            return -1;
    } else if (config_int(f, KEY("attention.key_length"), -1, 1, 1 << 12, &key_len, err, errlen)) {
        snprintf(err, errlen, "%s.embedding_length %d is not a multiple of %s.attention.head_count "
                 "%d and %s.attention.key_length is missing", an, c->n_embd, an, c->n_head, an);
        return -1;
    }
    if (config_int(f, KEY("attention.value_length"), key_len, 1, 1 << 12, &value_len, err, errlen))
        return -1;
    if (value_len != key_len) {
        snprintf(err, errlen, "%s.attention.value_length %d differs from key_length %d: not supported",
                 an, value_len, key_len);
        return -1;
    }
    c->head_dim = key_len;
    if ((long)c->n_head * c->head_dim > (1 << 16)) {
        snprintf(err, errlen, "%s: %d heads of %d values is too wide", an, c->n_head, c->head_dim);
        return -1;
    }
    if (config_int(f, KEY("rope.dimension_count"), c->head_dim, 2, c->head_dim, &c->n_rot, err,
                   errlen))
        return -1;
    if (c->n_rot % 2 != 0) {
        snprintf(err, errlen, "%s.rope.dimension_count %d is odd", an, c->n_rot);
        return -1;
    }
    c->rope_scale = 1.0f;
    gguf_str scaling;
    if (gguf_get_str(f, KEY("rope.scaling.type"), &scaling) == 0 && !gguf_str_eq(scaling, "none") &&
        !gguf_str_eq(scaling, "llama3") && /* llama3: frequency factors, see rope_llama3_factors */
        !(c->arch == MODEL_ARCH_PHI3 && gguf_str_eq(scaling, "longrope"))) { /* the factor tensors */
        if (!gguf_str_eq(scaling, "linear")) {
            char name[40];
            snprintf(err, errlen, "RoPE scaling '%s' is not supported (none, linear, llama3)",
                     gguf_str_printable(scaling, name, sizeof name));
            return -1;
        }
        if (config_float(f, arch_key(k2, sizeof k2, c, "rope.scaling.factor"), 1.0f, &c->rope_scale,
                         err, errlen))
            return -1;
    }
    /* llama.cpp multiplies RoPE's cos and sin by this key for every
     * architecture; phi3's converter writes it for LongRoPE models
     * (sqrt(1 + ln(s) / ln(original context)), s = context / original). */
    if (config_float(f, KEY("rope.scaling.attn_factor"), 1.0f, &c->rope_attn_factor, err, errlen))
        return -1;
    c->attn_scale = 1.0f / sqrtf((float)c->head_dim);
    if (c->arch == MODEL_ARCH_PHI3) {
        /* llama.cpp's phi3 graph takes q as the first n_embd values of the
         * fused product, so n_head * head_dim must be n_embd. Its
         * attention.sliding_window key is read and not applied: llama.cpp
         * has disabled Phi-3's window (ggml-org/llama.cpp#13676), so every
         * layer attends to the whole context, as here. */
        if (c->n_head * c->head_dim != c->n_embd) {
            snprintf(err, errlen, "phi3: %d heads of %d values do not make embedding_length %d: "
                     "not supported", c->n_head, c->head_dim, c->n_embd);
            return -1;
        }
        if (config_int(f, KEY("rope.scaling.original_context_length"), c->n_ctx_train, 1, 1 << 24,
                       &c->n_ctx_orig, err, errlen))
            return -1;
    }
    if (c->arch == MODEL_ARCH_GEMMA3) {
        /* As llama.cpp has it (no key carries Gemma's query_pre_attn_scalar):
         * 1/sqrt(head_dim), except the 62-layer 27B's 1/sqrt(n_embd/n_head).
         * Local layers: window from the file, every 6th layer global, RoPE
         * base 10000 without scaling. */
        if (c->n_layer == 62) c->attn_scale = 1.0f / sqrtf((float)(c->n_embd / c->n_head));
        c->swa_pattern = 6;
        c->rope_base_swa = 10000.0f;
        if (config_int(f, KEY("attention.sliding_window"), -1, 1, 1 << 24, &c->n_swa, err, errlen))
            return -1;
        float cap;
        if (gguf_get_f32(f, KEY("final_logit_softcapping"), &cap) == 0 && cap != 0) {
            snprintf(err, errlen, "%s = %g: logit soft-capping is not supported", k, (double)cap);
            return -1;
        }
        if (gguf_get_f32(f, KEY("attn_logit_softcapping"), &cap) == 0 && cap != 0) {
            snprintf(err, errlen, "%s = %g: logit soft-capping is not supported", k, (double)cap);
            return -1;
        }
    }
#undef KEY
    return 0;
}

/* Llama 3.1's RoPE scaling as frequency divisors (the rope_freqs.weight
 * tensor llama.cpp's converter writes; files from other tools may carry only
 * the parameters). For pair j, freq = base^(-2j/n_rot) and wavelength
 * 2 pi / freq: short wavelengths (< original_context / high_freq_factor) keep
 * their frequency, long ones (> original_context / low_freq_factor) are
 * divided by factor, and those between blend the two linearly in
 * original_context / wavelength. Keys: {arch}.rope.scaling.type = "llama3",
 * .factor, .original_context_length (required), .low_freq_factor and
 * .high_freq_factor (default 1 and 4, as in Llama 3.1's config). Returns a
 * malloc'ed (n_rot / 2) array, or NULL with err set (err[0] == 0: the file
 * does not use llama3 scaling). */
static float *rope_llama3_factors(const gguf_file *f, const model_config *c, char *err,
                                  size_t errlen)
{
    char k[96];
    gguf_str scaling;
    err[0] = 0;
    if (gguf_get_str(f, arch_key(k, sizeof k, c, "rope.scaling.type"), &scaling) != 0 ||
        !gguf_str_eq(scaling, "llama3"))
        return NULL;
    float factor, low, high;
    int orig;
    if (config_float(f, arch_key(k, sizeof k, c, "rope.scaling.factor"), -1, &factor, err, errlen) ||
        config_float(f, arch_key(k, sizeof k, c, "rope.scaling.low_freq_factor"), 1.0f, &low, err,
                     errlen) ||
        config_float(f, arch_key(k, sizeof k, c, "rope.scaling.high_freq_factor"), 4.0f, &high, err,
                     errlen) ||
        config_int(f, arch_key(k, sizeof k, c, "rope.scaling.original_context_length"), -1, 1,
                   1 << 24, &orig, err, errlen))
        return NULL;
    if (!(high > low)) {
        snprintf(err, errlen, "llama3 RoPE scaling: high_freq_factor %g must exceed low_freq_factor %g",
                 (double)high, (double)low);
        return NULL;
    }
    int half = c->n_rot / 2;
    float *out = malloc(sizeof(float) * (size_t)half);
    if (!out) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    double low_wavelen = orig / (double)low, high_wavelen = orig / (double)high;
    for (int j = 0; j < half; j++) {
        double wavelen = 2 * 3.14159265358979323846 / pow(c->rope_base, -2.0 * j / c->n_rot);
        double divisor;
        if (wavelen < high_wavelen) {
            divisor = 1;
        } else if (wavelen > low_wavelen) {
            divisor = factor;
        } else { /* new freq = (1 - s) freq / factor + s freq */
            double smooth = (orig / wavelen - low) / (high - low);
            divisor = 1 / ((1 - smooth) / factor + smooth);
        }
        out[j] = (float)divisor;
    }
    return out;
}

/* A 2-D weight matrix: shape (rows, cols) = (ne[1], ne[0]), a type the
 * kernels handle, and data of exactly the implied size, suitably aligned. */
static int get_matrix(const gguf_file *f, const char *name, int rows, int cols, kernel_matrix *out,
                      uint64_t *bytes, char *err, size_t errlen)
{
    const gguf_tensor *t = gguf_find_tensor(f, name);
    if (!t) {
        snprintf(err, errlen, "tensor %s is missing", name);
        return -1;
    }
    if (t->ne[0] != (uint64_t)cols || t->ne[1] != (uint64_t)rows || t->ne[2] != 1 || t->ne[3] != 1) {
        snprintf(err, errlen, "tensor %s has shape [%llu, %llu, %llu, %llu], expected [%d, %d]",
                 name, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                 (unsigned long long)t->ne[2], (unsigned long long)t->ne[3], cols, rows);
        return -1;
    }
    if (!kernel_type_supported(t->type)) {
        snprintf(err, errlen, "tensor %s has type %s; supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, "
                 "Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K", name, ggml_type_name(t->type));
        return -1;
    }
    size_t block = ggml_type_block_elems(t->type);
    if (block == 0 || (size_t)cols % block != 0) {
        snprintf(err, errlen, "tensor %s: row length %d is not a multiple of the %s block", name,
                 cols, ggml_type_name(t->type));
        return -1;
    }
    uint64_t want = (uint64_t)kernel_row_bytes(t->type, cols) * (uint64_t)rows;
    size_t align = t->type == GGML_TYPE_F32 ? 4 : 2;
    if (t->nbytes != want || (uintptr_t)t->data % align != 0) {
        snprintf(err, errlen, "tensor %s: %llu bytes of data, expected %llu (%zu-byte aligned)", name,
                 (unsigned long long)t->nbytes, (unsigned long long)want, align);
        return -1;
    }
    out->type = t->type;
    out->rows = rows;
    out->cols = cols;
    out->data = t->data;
    out->interleaved = 0;
    *bytes += t->nbytes;
    return 0;
}

/* A 1-D vector of n values, converted to an owned float array (norm weights
 * are tiny; converting them once keeps the forward pass type-free). */
static float *get_vector(const gguf_file *f, const char *name, int n, uint64_t *bytes, char *err,
                         size_t errlen)
{
    const gguf_tensor *t = gguf_find_tensor(f, name);
    if (!t) {
        snprintf(err, errlen, "tensor %s is missing", name);
        return NULL;
    }
    if (t->ne[0] != (uint64_t)n || t->ne[1] != 1 || t->ne[2] != 1 || t->ne[3] != 1) {
        snprintf(err, errlen, "tensor %s has shape [%llu, %llu], expected [%d]", name,
                 (unsigned long long)t->ne[0], (unsigned long long)t->ne[1], n);
        return NULL;
    }
    size_t block = ggml_type_block_elems(t->type);
    if (!kernel_type_supported(t->type) || block == 0 || (size_t)n % block != 0 ||
        t->nbytes != kernel_row_bytes(t->type, n) ||
        (uintptr_t)t->data % (t->type == GGML_TYPE_F32 ? 4 : 2) != 0) {
        snprintf(err, errlen, "tensor %s: type %s with %llu bytes is not usable as %d values", name,
                 ggml_type_name(t->type), (unsigned long long)t->nbytes, n);
        return NULL;
    }
    float *v = malloc(sizeof(float) * (size_t)n);
    if (!v) {
        snprintf(err, errlen, "out of memory loading %s", name);
        return NULL;
    }
    kernel_dequantize_row(t->type, t->data, v, n);
    *bytes += t->nbytes;
    return v;
}

/* An optional F32 vector of n RoPE frequency divisors (rope_freqs.weight,
 * phi3's rope_factors_long/short.weight), each a positive number. NULL with
 * err[0] == 0 when the file does not have it. */
static float *get_rope_divisors(const gguf_file *f, const char *name, int n, uint64_t *bytes,
                                char *err, size_t errlen)
{
    err[0] = 0;
    const gguf_tensor *t = gguf_find_tensor(f, name);
    if (!t) return NULL;
    if (t->type != GGML_TYPE_F32) {
        snprintf(err, errlen, "tensor %s must be F32", name);
        return NULL;
    }
    float *v = get_vector(f, name, n, bytes, err, errlen);
    for (int j = 0; v && j < n; j++) {
        if (!isfinite(v[j]) || !(v[j] > 0)) {
            snprintf(err, errlen, "tensor %s: factor %d is %g, not a positive number", name, j,
                     (double)v[j]);
            free(v);
            return NULL;
        }
    }
    return v;
}

/* Rows [first, first + rows) of m, as a matrix of its own (same bytes).
 * phi3 stores q, k and v as one matrix, their rows stacked in that order,
 * and gate and up as one (gate's n_ff rows first); a row is whole blocks of
 * any type, so each part is a view and the forward pass runs the parts as
 * the separate matrices of the other architectures. */
static kernel_matrix matrix_rows(const kernel_matrix *m, int first, int rows)
{
    assert(first >= 0 && rows > 0 && first + rows <= m->rows);
    kernel_matrix v = *m;
    v.rows = rows;
    v.data = (const uint8_t *)m->data + (size_t)first * kernel_row_bytes(m->type, m->cols);
    return v;
}

/* Copies every matrix the kernels can read interleaved (kernel_interleave)
 * into one owned arena in that layout, so that a group of 4 rows is one
 * stream of memory for the rows kernels; the rest stay in the mapping. The
 * file's mapping is left as it is (a peer fetch hashes and sends its bytes)
 * and the pages the copy read are dropped from this process (madvise: the
 * page cache keeps them while memory allows). A tied classifier shares
 * token_embd's copy; phi3's views each get their own. LLMESH_INTERLEAVE=0
 * keeps every matrix in place in the mapping (the layout before, same bits,
 * no copy). Returns -1 when out of memory. */
static int interleave_weights(model *m, char *err, size_t errlen)
{
    const char *env = getenv("LLMESH_INTERLEAVE");
    if (env && !strcmp(env, "0")) return 0;
    kernel_matrix *all[2 + 7 * MODEL_MAX_LAYERS];
    int n = 0, tied = m->part.head && m->output.data == m->token_embd.data;
    if (m->part.head) {
        all[n++] = &m->token_embd;
        if (!tied) all[n++] = &m->output;
    }
    for (int l = m->part.first; l < m->part.end; l++) {
        model_layer *L = &m->layers[l];
        kernel_matrix *mats[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (int k = 0; k < 7; k++) all[n++] = mats[k];
    }
    size_t total = 0;
    for (int k = 0; k < n; k++)
        if (kernel_interleavable(all[k]->type, all[k]->cols) && all[k]->rows >= 4)
            total += (kernel_row_bytes(all[k]->type, all[k]->cols) * (size_t)all[k]->rows + 63) / 64 * 64;
    if (total == 0) return 0;
    uint8_t *arena = NULL;
    if (posix_memalign((void **)&arena, 64, total) != 0) {
        snprintf(err, errlen, "out of memory: %zu bytes for the interleaved weights "
                 "(LLMESH_INTERLEAVE=0 runs them from the file's mapping)", total);
        return -1;
    }
    m->arena = arena;
    m->arena_bytes = total;
    long page = sysconf(_SC_PAGESIZE);
    for (int k = 0; k < n; k++) {
        kernel_matrix *w = all[k];
        if (!kernel_interleavable(w->type, w->cols) || w->rows < 4) continue;
        size_t bytes = kernel_row_bytes(w->type, w->cols) * (size_t)w->rows;
        kernel_interleave(w, arena);
        uintptr_t from = ((uintptr_t)w->data + (uintptr_t)page - 1) / (uintptr_t)page * (uintptr_t)page;
        uintptr_t to = ((uintptr_t)w->data + bytes) / (uintptr_t)page * (uintptr_t)page;
        if (to > from) madvise((void *)from, to - from, MADV_DONTNEED); /* advice: failure changes nothing */
        w->data = arena;
        w->interleaved = 1;
        arena += (bytes + 63) / 64 * 64;
    }
    if (tied) m->output = m->token_embd; /* the same copy */
    return 0;
}

/* The place (tensor_place) of f's tensor i under c's architecture. */
static int file_tensor_place(const gguf_file *f, uint64_t i, const model_config *c)
{
    gguf_str name = f->tensors[i].name;
    char buf[96];
    if (name.len >= sizeof buf) return TENSOR_UNKNOWN;
    memcpy(buf, name.ptr, name.len);
    buf[name.len] = 0;
    return tensor_place(buf, ARCH_BIT(c->arch), c->n_layer);
}

/* Refuses tensors the forward pass would silently ignore (biases or norms
 * of other variants): better an error than wrong output. Every tensor of the
 * file is checked, whatever part is loaded. */
static int check_no_unknown_tensors(const gguf_file *f, const model_config *c, char *err,
                                    size_t errlen)
{
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        if (file_tensor_place(f, i, c) != TENSOR_UNKNOWN) continue;
        char shown[72];
        snprintf(err, errlen, "tensor %s is not part of the %s architecture as llmesh runs it",
                 gguf_str_printable(f->tensors[i].name, shown, sizeof shown), model_arch_name(c->arch));
        return -1;
    }
    return 0;
}

/* n_vocab: token_embd.weight's rows when the file has it (the tokenizer, when
 * present, must agree), else the tokenizer's token count, else 0: a partial
 * file without the head need not know it. */
static int read_vocab(const gguf_file *f, model_config *c, char *err, size_t errlen)
{
    const gguf_tensor *embd = gguf_find_tensor(f, "token_embd.weight");
    const gguf_kv *tokens = gguf_find(f, "tokenizer.ggml.tokens");
    c->n_vocab = 0;
    if (embd) {
        if (embd->ne[1] < 1 || embd->ne[1] > (1 << 24)) {
            snprintf(err, errlen, "tensor token_embd.weight: vocabulary size %llu out of range",
                     (unsigned long long)embd->ne[1]);
            return -1;
        }
        c->n_vocab = (int)embd->ne[1];
        if (tokens && tokens->count != (uint64_t)c->n_vocab) {
            snprintf(err, errlen, "tokenizer.ggml.tokens has %llu tokens but token_embd.weight has %d rows",
                     (unsigned long long)tokens->count, c->n_vocab);
            return -1;
        }
    } else if (tokens) {
        if (tokens->count < 1 || tokens->count > (1 << 24)) {
            snprintf(err, errlen, "tokenizer.ggml.tokens: vocabulary size %llu out of range",
                     (unsigned long long)tokens->count);
            return -1;
        }
        c->n_vocab = (int)tokens->count;
    }
    return 0;
}

/* An optional 1-D tensor: NULL and no error when absent. */
static float *get_optional_vector(const gguf_file *f, const char *name, int n, uint64_t *bytes,
                                  char *err, size_t errlen)
{
    err[0] = 0;
    return gguf_find_tensor(f, name) ? get_vector(f, name, n, bytes, err, errlen) : NULL;
}

static size_t max_size(size_t a, size_t b) { return a > b ? a : b; }

/* Checks a part against the model's layer count. */
static int check_part(const model_part *part, const model_config *c, char *err, size_t errlen)
{
    if (part->first < 0 || part->first >= part->end || part->end > c->n_layer) {
        snprintf(err, errlen, "layers [%d, %d) are not a part of this %d-layer model "
                 "(0 <= first < end <= %d)", part->first, part->end, c->n_layer, c->n_layer);
        return -1;
    }
    return 0;
}

/* model_load_part; part NULL: the whole model (model_load). */
static model *load(const gguf_file *f, const model_part *part, char *err, size_t errlen)
{
    model *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    model_config *c = &m->c;
    if (read_config(f, c, err, errlen) != 0) goto fail;
    m->part = part ? *part : (model_part){0, c->n_layer, 1};
    if (check_part(&m->part, c, err, errlen) != 0 || read_vocab(f, c, err, errlen) != 0 ||
        check_no_unknown_tensors(f, c, err, errlen) != 0)
        goto fail;

    int q_dim = c->n_head * c->head_dim, kv_dim = c->n_head_kv * c->head_dim;
    uint64_t *b = &m->weight_bytes;
    if (m->part.head) {
        if (get_matrix(f, "token_embd.weight", c->n_vocab, c->n_embd, &m->token_embd, b, err, errlen))
            goto fail;
        if (!(m->output_norm = get_vector(f, "output_norm.weight", c->n_embd, b, err, errlen))) goto fail;
        if (gguf_find_tensor(f, "output.weight")) {
            if (get_matrix(f, "output.weight", c->n_vocab, c->n_embd, &m->output, b, err, errlen))
                goto fail;
        } else {
            m->output = m->token_embd; /* tied embeddings */
        }
    }
    if (gguf_find_tensor(f, "rope_freqs.weight")) { /* wins over llama3 keys, as in llama.cpp */
        if (!(m->rope_freq_factors = get_rope_divisors(f, "rope_freqs.weight", c->n_rot / 2, b, err,
                                                       errlen)))
            goto fail;
    } else if (!(m->rope_freq_factors = rope_llama3_factors(f, c, err, errlen)) && err[0]) {
        goto fail;
    }
    /* phi3 LongRoPE (either may be absent: no divisors in that regime, as in llama.cpp) */
    if ((!(m->rope_factors_long = get_rope_divisors(f, "rope_factors_long.weight", c->n_rot / 2, b,
                                                    err, errlen)) && err[0]) ||
        (!(m->rope_factors_short = get_rope_divisors(f, "rope_factors_short.weight", c->n_rot / 2, b,
                                                     err, errlen)) && err[0]))
        goto fail;

    m->layers = calloc((size_t)c->n_layer, sizeof *m->layers);
    if (!m->layers) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (int l = m->part.first; l < m->part.end; l++) {
        model_layer *L = &m->layers[l];
        char name[64];
#define NAME(suffix) (snprintf(name, sizeof name, "blk.%d." suffix, l), name)
        if (!(L->attn_norm = get_vector(f, NAME("attn_norm.weight"), c->n_embd, b, err, errlen)))
            goto fail;
        if (gguf_find_tensor(f, NAME("attn_qkv.weight"))) { /* phi3 (the whitelist saw to that) */
            kernel_matrix qkv;
            if (get_matrix(f, name, q_dim + 2 * kv_dim, c->n_embd, &qkv, b, err, errlen)) goto fail;
            if (gguf_find_tensor(f, NAME("attn_q.weight")) || gguf_find_tensor(f, NAME("attn_k.weight")) ||
                gguf_find_tensor(f, NAME("attn_v.weight"))) {
                snprintf(err, errlen, "tensor %s and blk.%d.attn_qkv.weight are both present", name, l);
                goto fail;
            }
            L->wq = matrix_rows(&qkv, 0, q_dim);
            L->wk = matrix_rows(&qkv, q_dim, kv_dim);
            L->wv = matrix_rows(&qkv, q_dim + kv_dim, kv_dim);
        } else if (get_matrix(f, NAME("attn_q.weight"), q_dim, c->n_embd, &L->wq, b, err, errlen) ||
                   get_matrix(f, NAME("attn_k.weight"), kv_dim, c->n_embd, &L->wk, b, err, errlen) ||
                   get_matrix(f, NAME("attn_v.weight"), kv_dim, c->n_embd, &L->wv, b, err, errlen)) {
            goto fail;
        }
        if (get_matrix(f, NAME("attn_output.weight"), c->n_embd, q_dim, &L->wo, b, err, errlen) ||
            !(L->ffn_norm = get_vector(f, NAME("ffn_norm.weight"), c->n_embd, b, err, errlen)))
            goto fail;
        if (c->arch == MODEL_ARCH_PHI3) { /* gate and up in one: (2 n_ff, n_embd) */
            kernel_matrix gate_up;
            if (get_matrix(f, NAME("ffn_up.weight"), 2 * c->n_ff, c->n_embd, &gate_up, b, err, errlen))
                goto fail;
            L->w_gate = matrix_rows(&gate_up, 0, c->n_ff);
            L->w_up = matrix_rows(&gate_up, c->n_ff, c->n_ff);
        } else if (get_matrix(f, NAME("ffn_gate.weight"), c->n_ff, c->n_embd, &L->w_gate, b, err, errlen) ||
                   get_matrix(f, NAME("ffn_up.weight"), c->n_ff, c->n_embd, &L->w_up, b, err, errlen)) {
            goto fail;
        }
        if (get_matrix(f, NAME("ffn_down.weight"), c->n_embd, c->n_ff, &L->w_down, b, err, errlen))
            goto fail;
        /* Optional per-architecture tensors (check_no_unknown_tensors has
         * refused those the architecture does not have). */
        if ((!(L->bq = get_optional_vector(f, NAME("attn_q.bias"), q_dim, b, err, errlen)) && err[0]) ||
            (!(L->bk = get_optional_vector(f, NAME("attn_k.bias"), kv_dim, b, err, errlen)) && err[0]) ||
            (!(L->bv = get_optional_vector(f, NAME("attn_v.bias"), kv_dim, b, err, errlen)) && err[0]) ||
            (!(L->bo = get_optional_vector(f, NAME("attn_output.bias"), c->n_embd, b, err, errlen)) &&
             err[0]) ||
            (!(L->q_norm = get_optional_vector(f, NAME("attn_q_norm.weight"), c->head_dim, b, err,
                                               errlen)) && err[0]) ||
            (!(L->k_norm = get_optional_vector(f, NAME("attn_k_norm.weight"), c->head_dim, b, err,
                                               errlen)) && err[0]) ||
            (!(L->post_attn_norm = get_optional_vector(f, NAME("post_attention_norm.weight"),
                                                       c->n_embd, b, err, errlen)) && err[0]) ||
            (!(L->post_ffn_norm = get_optional_vector(f, NAME("post_ffw_norm.weight"), c->n_embd, b,
                                                      err, errlen)) && err[0]))
            goto fail;
        const char *missing = NULL;
        if (c->arch == MODEL_ARCH_QWEN2 && (!L->bq || !L->bk || !L->bv))
            missing = !L->bq ? NAME("attn_q.bias") : !L->bk ? NAME("attn_k.bias") : NAME("attn_v.bias");
        if ((c->arch == MODEL_ARCH_QWEN3 || c->arch == MODEL_ARCH_GEMMA3) && (!L->q_norm || !L->k_norm))
            missing = !L->q_norm ? NAME("attn_q_norm.weight") : NAME("attn_k_norm.weight");
        if (c->arch == MODEL_ARCH_GEMMA3 && (!L->post_attn_norm || !L->post_ffn_norm))
            missing = !L->post_attn_norm ? NAME("post_attention_norm.weight") : NAME("post_ffw_norm.weight");
        if (missing) {
            snprintf(err, errlen, "tensor %s is missing (required by %s)", missing,
                     model_arch_name(c->arch));
            goto fail;
        }
#undef NAME
        const kernel_matrix *all[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (size_t k = 0; k < sizeof all / sizeof all[0]; k++)
            m->matmul_scratch = max_size(m->matmul_scratch,
                                         kernel_matmul_scratch_bytes(all[k]->type, all[k]->cols, MODEL_BATCH));
    }
    if (m->part.head)
        m->matmul_scratch = max_size(m->matmul_scratch,
                                     kernel_matmul_scratch_bytes(m->output.type, c->n_embd, MODEL_BATCH));
    if (interleave_weights(m, err, errlen) != 0) goto fail;
    return m;
fail:
    model_free(m);
    return NULL;
}

model *model_load(const gguf_file *f, char *err, size_t errlen) { return load(f, NULL, err, errlen); }

model *model_load_part(const gguf_file *f, const model_part *part, char *err, size_t errlen)
{
    assert(part);
    return load(f, part, err, errlen);
}

int model_file_part(const gguf_file *f, model_part *out, char *err, size_t errlen)
{
    model_config c;
    if (read_config(f, &c, err, errlen) != 0 || check_no_unknown_tensors(f, &c, err, errlen) != 0)
        return -1;
    int first = c.n_layer, last = -1, head = 0;
    unsigned char present[MODEL_MAX_LAYERS] = {0};
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        int place = file_tensor_place(f, i, &c);
        if (place >= 0) {
            present[place] = 1;
            first = place < first ? place : first;
            last = place > last ? place : last;
        }
        head |= place == TENSOR_HEAD && gguf_str_eq(f->tensors[i].name, "token_embd.weight");
    }
    if (last < 0) {
        snprintf(err, errlen, "the file holds no layer's tensors");
        return -1;
    }
    for (int l = first; l <= last; l++)
        if (!present[l]) {
            snprintf(err, errlen, "the file holds tensors of layers %d and %d but none of layer %d",
                     first, last, l);
            return -1;
        }
    *out = (model_part){first, last + 1, head};
    return 0;
}

void model_free(model *m)
{
    if (!m) return;
    if (m->layers) {
        for (int l = 0; l < m->c.n_layer; l++) {
            model_layer *L = &m->layers[l];
            free(L->attn_norm);
            free(L->ffn_norm);
            free(L->bq);
            free(L->bk);
            free(L->bv);
            free(L->bo);
            free(L->q_norm);
            free(L->k_norm);
            free(L->post_attn_norm);
            free(L->post_ffn_norm);
        }
    }
    free(m->layers);
    free(m->output_norm);
    free(m->rope_freq_factors);
    free(m->rope_factors_long);
    free(m->rope_factors_short);
    free(m->arena);
    free(m);
}

const model_config *model_get_config(const model *m) { return &m->c; }
const model_part *model_get_part(const model *m) { return &m->part; }
uint64_t model_weight_bytes(const model *m) { return m->weight_bytes; }

/* ======================================================================== */
/* sizes                                                                     */
/* ======================================================================== */

int model_sizes_read(const gguf_file *f, model_sizes *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    model_config *c = &out->c;
    if (read_config(f, c, err, errlen) != 0 || read_vocab(f, c, err, errlen) != 0 ||
        check_no_unknown_tensors(f, c, err, errlen) != 0)
        return -1;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        int place = file_tensor_place(f, i, c);
        assert(place != TENSOR_UNKNOWN); /* check_no_unknown_tensors */
        if (place >= 0) out->layer_bytes[place] += t->nbytes;
        else if (place == TENSOR_HEAD) out->head_bytes += t->nbytes;
        else out->rope_bytes += t->nbytes;
        /* every matrix is a product's weight (token_embd when tied): the
         * largest input conversion bounds the state's matmul scratch */
        if (t->ne[1] > 1 && kernel_type_supported(t->type) && t->ne[0] <= (1u << 20))
            out->scratch_bytes = max_size(out->scratch_bytes,
                                          kernel_matmul_scratch_bytes(t->type, (int)t->ne[0], MODEL_BATCH));
    }
    out->kv_values_per_pos = 2 * (uint64_t)c->n_head_kv * (uint64_t)c->head_dim;
    return 0;
}

static const char *const kv_type_names[MODEL_KV_TYPE_COUNT] = {"f16", "f32"};

const char *model_kv_type_name(model_kv_type t)
{
    return t >= 0 && t < MODEL_KV_TYPE_COUNT ? kv_type_names[t] : "?";
}

int model_kv_type_from_name(const char *name)
{
    for (int i = 0; i < MODEL_KV_TYPE_COUNT; i++)
        if (!strcmp(name, kv_type_names[i])) return i;
    return -1;
}

size_t model_kv_type_size(model_kv_type t) { return t == MODEL_KV_F32 ? sizeof(float) : sizeof(uint16_t); }

uint64_t model_kv_bytes_per_pos(const model_sizes *z, model_kv_type t)
{
    return z->kv_values_per_pos * model_kv_type_size(t);
}

/* Bytes model_state_new allocates for n_ctx positions of n_layers layers
 * in a cache of kv_type, with attention rows for n_threads (one per query
 * head of a kv head's group each), given the matmul scratch. One formula
 * for the estimate and the state's own count (model_state_bytes). */
static uint64_t state_bytes(const model_config *c, int n_layers, int n_ctx, model_kv_type kv_type,
                            int n_threads, uint64_t matmul_scratch)
{
    uint64_t q_dim = (uint64_t)c->n_head * c->head_dim, kv_dim = (uint64_t)c->n_head_kv * c->head_dim;
    uint64_t half = (uint64_t)c->n_rot / 2;
    uint64_t batch = (uint64_t)MODEL_BATCH * (2 * (uint64_t)c->n_embd + 2 * q_dim + 2 * kv_dim + 2 * (uint64_t)c->n_ff +
                                              (c->n_swa > 0 ? 4 : 2) * half);
    return model_kv_type_size(kv_type) * 2 * (uint64_t)n_layers * (uint64_t)n_ctx * kv_dim +
           sizeof(float) * (batch + (uint64_t)n_threads * (uint64_t)(c->n_head / c->n_head_kv) * (uint64_t)n_ctx +
                            (uint64_t)n_threads * (uint64_t)(c->n_head / c->n_head_kv)) +
           matmul_scratch;
}

uint64_t model_part_need(const model_sizes *z, const model_part *part, int n_ctx,
                         model_kv_type kv_type, int n_lanes, int n_threads)
{
    const model_config *c = &z->c;
    assert(part->first >= 0 && part->first < part->end && part->end <= c->n_layer);
    if (n_ctx <= 0) n_ctx = c->n_ctx_train;
    if (n_lanes < 1) n_lanes = 1;
    if (n_threads < 1) n_threads = 1;
    uint64_t weights = z->rope_bytes + (part->head ? z->head_bytes : 0);
    for (int l = part->first; l < part->end; l++) weights += z->layer_bytes[l];
    uint64_t lane = state_bytes(c, part->end - part->first, n_ctx, kv_type, n_threads, z->scratch_bytes);
    if (part->head) /* the engine's per lane: logits of a token and of a batch (echo
                       scoring), the token record, hidden states sent and received */
        lane += sizeof(float) * ((uint64_t)c->n_vocab * (1 + MODEL_BATCH) + (uint64_t)n_ctx +
                                 2 * (uint64_t)MODEL_BATCH * c->n_embd);
    uint64_t total = weights + (uint64_t)n_lanes * lane;
    return total + total / 16 + (64ull << 20);
}

/* ======================================================================== */
/* state and batch scratch                                                   */
/* ======================================================================== */

/* The scratch of one forward batch of up to MODEL_BATCH tokens, which may
 * belong to several sequences: per token its state and position, and the
 * activations of the batch. A state owns one for its own (single-sequence)
 * calls; model_batch_new makes one for mixed batches. */
struct model_batch {
    const model *m;
    model_state *tok_state[MODEL_BATCH]; /* whose cache token i reads and extends */
    int tok_pos[MODEL_BATCH];            /* its position there */
    float *x;           /* (MODEL_BATCH, n_embd) hidden states of model_forward(_batch) */
    float *xb;          /* (MODEL_BATCH, n_embd) normed input of a block, then its output */
    float *q;           /* (MODEL_BATCH, n_head * head_dim) */
    float *k_new;       /* (MODEL_BATCH, kv_dim) the batch's keys, copied into the caches */
    float *v_new;       /* (MODEL_BATCH, kv_dim) its values */
    float *att_out;     /* (MODEL_BATCH, n_head * head_dim) */
    float *hb;          /* (MODEL_BATCH, n_ff) gate, then silu(gate) * up */
    float *hb2;         /* (MODEL_BATCH, n_ff) up */
    float *rope_cos;    /* (MODEL_BATCH, n_rot / 2) */
    float *rope_sin;    /* (MODEL_BATCH, n_rot / 2) */
    float *rope_cos_swa; /* (MODEL_BATCH, n_rot / 2) gemma3's local layers, else NULL */
    float *rope_sin_swa; /* (MODEL_BATCH, n_rot / 2) */
    float *att;         /* (att_threads, group, att_ctx) attention weights, a row per query
                           head of a kv group per pool thread; group = n_head / n_head_kv */
    float *att_row;     /* (att_threads, group) one position's weights, one per query head of a group */
    int att_threads, att_ctx;
    float *last_logits; /* (last_rows, n_vocab) model_forward_batch's last-token logits */
    int last_rows;
    void *scratch;      /* kernel_matmul's converted inputs */
    uint64_t *profile;  /* (MODEL_PHASE_COUNT) ns per phase, or NULL (model_batch_profile) */
    uint64_t phase_start; /* the calling thread's CPU time when the current phase began */
};

struct model_state {
    const model *m;     /* the model it was made for */
    int n_ctx;
    int n_past;
    int kv_dim;
    int first, n_layers; /* the part's layers, whose caches these are */
    int range_first, range_end; /* while n_past > 0: the layers forward calls run */
    model_kv_type kv_type; /* the caches' element type: uint16_t fp16 or float */
    void *key_cache;    /* (n_layers, n_ctx, kv_dim): layer l at l - first */
    void *value_cache;  /* (n_layers, n_ctx, kv_dim) */
    const float *rope_factors; /* (n_rot / 2) the model's RoPE divisors for this context, or NULL */
    model_batch *work;  /* scratch of the state's own calls */
};

model_batch *model_batch_new(const model *m, char *err, size_t errlen)
{
    const model_config *c = &m->c;
    model_batch *b = calloc(1, sizeof *b);
    if (!b) goto oom;
    b->m = m;
    size_t q_dim = (size_t)c->n_head * c->head_dim, kv_dim = (size_t)c->n_head_kv * c->head_dim;
    size_t half = (size_t)(c->n_rot / 2);
    b->x = calloc((size_t)MODEL_BATCH * c->n_embd, sizeof(float));
    b->xb = calloc((size_t)MODEL_BATCH * c->n_embd, sizeof(float));
    b->q = calloc(MODEL_BATCH * q_dim, sizeof(float));
    b->k_new = calloc(MODEL_BATCH * kv_dim, sizeof(float));
    b->v_new = calloc(MODEL_BATCH * kv_dim, sizeof(float));
    b->att_out = calloc(MODEL_BATCH * q_dim, sizeof(float));
    b->hb = calloc((size_t)MODEL_BATCH * c->n_ff, sizeof(float));
    b->hb2 = calloc((size_t)MODEL_BATCH * c->n_ff, sizeof(float));
    b->rope_cos = calloc(MODEL_BATCH * half, sizeof(float));
    b->rope_sin = calloc(MODEL_BATCH * half, sizeof(float));
    if (c->n_swa > 0) {
        b->rope_cos_swa = calloc(MODEL_BATCH * half, sizeof(float));
        b->rope_sin_swa = calloc(MODEL_BATCH * half, sizeof(float));
        if (!b->rope_cos_swa || !b->rope_sin_swa) goto oom;
    }
    b->scratch = m->matmul_scratch ? malloc(m->matmul_scratch) : NULL;
    if (!b->x || !b->xb || !b->q || !b->k_new || !b->v_new || !b->att_out || !b->hb || !b->hb2 ||
        !b->rope_cos || !b->rope_sin || (m->matmul_scratch && !b->scratch))
        goto oom;
    return b;
oom:
    snprintf(err, errlen, "out of memory for a batch of %d tokens", MODEL_BATCH);
    model_batch_free(b);
    return NULL;
}

void model_batch_profile(model_batch *b, uint64_t *ns) { b->profile = ns; }

/* The calling thread's CPU time: on a shared machine, time descheduled
 * would swamp the phases' own. */
static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The phase that just ended gets the time since the previous mark. */
static void phase_end(model_batch *b, model_phase phase)
{
    if (!b->profile) return;
    uint64_t now = thread_cpu_ns();
    b->profile[phase] += now - b->phase_start;
    b->phase_start = now;
}

void model_batch_free(model_batch *b)
{
    if (!b) return;
    free(b->x);
    free(b->xb);
    free(b->q);
    free(b->k_new);
    free(b->v_new);
    free(b->att_out);
    free(b->hb);
    free(b->hb2);
    free(b->rope_cos);
    free(b->rope_sin);
    free(b->rope_cos_swa);
    free(b->rope_sin_swa);
    free(b->att);
    free(b->att_row);
    free(b->last_logits);
    free(b->scratch);
    free(b);
}

model_state *model_state_new(const model *m, int n_ctx, model_kv_type kv_type, char *err,
                             size_t errlen)
{
    const model_config *c = &m->c;
    if (n_ctx <= 0) n_ctx = c->n_ctx_train;
    model_state *s = calloc(1, sizeof *s);
    if (!s) goto oom;
    s->m = m;
    s->n_ctx = n_ctx;
    s->kv_type = kv_type;
    s->kv_dim = c->n_head_kv * c->head_dim;
    s->first = m->part.first;
    s->n_layers = m->part.end - m->part.first;
    /* phi3 LongRoPE: as llama.cpp, by the context's size (not the tokens
     * in it), so one state's positions all rotate alike. */
    s->rope_factors = c->arch != MODEL_ARCH_PHI3 ? m->rope_freq_factors
                      : n_ctx > c->n_ctx_orig ? m->rope_factors_long : m->rope_factors_short;
    size_t kv = (size_t)s->n_layers * (size_t)n_ctx * (size_t)s->kv_dim;
    s->key_cache = calloc(kv, model_kv_type_size(kv_type));
    s->value_cache = calloc(kv, model_kv_type_size(kv_type));
    if (!s->key_cache || !s->value_cache) goto oom;
    if (!(s->work = model_batch_new(m, err, errlen))) {
        model_state_free(s);
        return NULL;
    }
    return s;
oom:
    snprintf(err, errlen, "out of memory for a context of %d positions", n_ctx);
    model_state_free(s);
    return NULL;
}

void model_state_free(model_state *s)
{
    if (!s) return;
    free(s->key_cache);
    free(s->value_cache);
    model_batch_free(s->work);
    free(s);
}

int model_state_n_ctx(const model_state *s) { return s->n_ctx; }
model_kv_type model_state_kv_type(const model_state *s) { return s->kv_type; }
int model_state_n_past(const model_state *s) { return s->n_past; }

uint64_t model_state_bytes(const model_state *s)
{
    return state_bytes(&s->m->c, s->n_layers, s->n_ctx, s->kv_type, s->work->att_threads,
                       s->m->matmul_scratch);
}

void model_state_truncate(model_state *s, int n_past)
{
    assert(n_past >= 0 && n_past <= s->n_past);
    s->n_past = n_past; /* stale cache rows are overwritten before they are read */
}

void model_state_copy_prefix(model_state *dst, const model_state *src, int n)
{
    assert(dst->m == src->m && dst->n_ctx == src->n_ctx && dst->kv_type == src->kv_type);
    assert(dst->first == src->first && dst->n_layers == src->n_layers);
    assert(n >= 0 && n <= src->n_past);
    size_t row = (size_t)src->kv_dim * model_kv_type_size(src->kv_type);
    for (int l = 0; l < src->n_layers && n > 0; l++) {
        size_t at = (size_t)l * (size_t)src->n_ctx * row;
        memcpy((char *)dst->key_cache + at, (const char *)src->key_cache + at, (size_t)n * row);
        memcpy((char *)dst->value_cache + at, (const char *)src->value_cache + at, (size_t)n * row);
    }
    dst->n_past = n;
    dst->range_first = src->range_first;
    dst->range_end = src->range_end;
}

/* ======================================================================== */
/* forward pass                                                              */
/* ======================================================================== */

/* cos/sin (n, n_rot / 2) of every rotated pair's angle for positions
 * pos0 .. pos0 + n - 1: pos / scale * base^(-2j/n_rot) [/ factors[j]],
 * both times rope_attn_factor (1 unless the file says otherwise).
 * Angles are computed in double: they lose digits in float at long contexts. */
static void rope_tables(const model_config *c, double base, double scale, const float *factors,
                        int pos0, int n, float *cos_out, float *sin_out)
{
    int half = c->n_rot / 2;
    double mscale = c->rope_attn_factor;
    for (int i = 0; i < n; i++) {
        double pos = (double)(pos0 + i) / scale;
        for (int j = 0; j < half; j++) {
            double freq = pow(base, -2.0 * j / c->n_rot);
            if (factors) freq /= factors[j];
            cos_out[i * half + j] = (float)(cos(pos * freq) * mscale);
            sin_out[i * half + j] = (float)(sin(pos * freq) * mscale);
        }
    }
}

/* Rotates pair j of each of n_heads heads of one token by angle j. llama's
 * GGUF q/k weights are permuted so that the pairs are adjacent, (x[2j],
 * x[2j+1]) (llama.cpp's "NORM" RoPE); qwen2/qwen3 keep Hugging Face's layout,
 * where pair j is (x[j], x[j + n_rot/2]) (llama.cpp's "NEOX" RoPE). Dimensions
 * from n_rot on are left alone either way. */
static void rope_apply(const model_config *c, float *v, int n_heads, const float *cosv,
                       const float *sinv)
{
    int half = c->n_rot / 2;
    int stride = c->rope_neox ? 1 : 2;       /* distance between the firsts of two pairs */
    int second = c->rope_neox ? half : 1;    /* distance from a pair's first to its second */
    for (int h = 0; h < n_heads; h++) {
        float *x = v + h * c->head_dim;
        for (int j = 0; j < half; j++) {
            float *a = x + j * stride, *b = a + second;
            float x0 = *a, x1 = *b;
            *a = x0 * cosv[j] - x1 * sinv[j];
            *b = x0 * sinv[j] + x1 * cosv[j];
        }
    }
}

/* Places n tokens of state s in the batch from row i0: positions n_past ..
 * n_past + n - 1, and their RoPE angles (per token: one state's factors and
 * position, so a mixed batch rotates each token as its sequence alone would). */
static void batch_place(const model *m, model_batch *b, int i0, model_state *s, int n)
{
    const model_config *c = &m->c;
    int half = c->n_rot / 2;
    assert(i0 >= 0 && n > 0 && i0 + n <= MODEL_BATCH);
    for (int i = 0; i < n; i++) {
        b->tok_state[i0 + i] = s;
        b->tok_pos[i0 + i] = s->n_past + i;
    }
    /* gemma3 passes no factors to its global layers' table (as llama.cpp) */
    rope_tables(c, c->rope_base, c->rope_scale, c->arch == MODEL_ARCH_GEMMA3 ? NULL : s->rope_factors,
                s->n_past, n, b->rope_cos + (size_t)i0 * half, b->rope_sin + (size_t)i0 * half);
    if (b->rope_cos_swa)
        rope_tables(c, c->rope_base_swa, 1.0, NULL, s->n_past, n, b->rope_cos_swa + (size_t)i0 * half,
                    b->rope_sin_swa + (size_t)i0 * half);
}

typedef struct {
    const model_config *c;
    model_batch *b;
    int layer;  /* the model's layer index */
    int window; /* > 0: attend to the last `window` positions only (sliding window) */
    int pairs, per_task; /* (token, kv head) pairs in all, and per task */
} attention_job;

/* One (token, kv head) pair: causal softmax attention of the kv head's
 * group of query heads (n_head / n_head_kv of them: 7 for Qwen2.5-0.5B)
 * over its own sequence's cache, positions t0 .. its position. An F16 cache
 * is read as is, each key and value row once for the whole group, converted
 * once (kernel_dot_f16_group, kernel_axpy_f16_group: no float copy of the
 * cache, half the memory traffic); each head gets the bits it got when it ran
 * alone (kernel_dot_f16_f32, kernel_axpy_f16), whatever the batch and the
 * thread. */
static void attention_pair(const attention_job *job, int pair, int thread)
{
    const model_config *c = job->c;
    model_batch *b = job->b;
    int group = c->n_head / c->n_head_kv;
    int i = pair / c->n_head_kv, kv_head = pair % c->n_head_kv, h0 = kv_head * group;
    const model_state *s = b->tok_state[i];
    int pos = b->tok_pos[i];
    int hd = c->head_dim, q_dim = c->n_head * hd, kv_dim = s->kv_dim;
    size_t ctx = (size_t)b->att_ctx;
    /* element offset of this layer's and kv head's first row */
    size_t off = (size_t)(job->layer - s->first) * s->n_ctx * kv_dim + (size_t)kv_head * hd;
    const float *q = b->q + (size_t)i * q_dim + (size_t)h0 * hd;           /* (group, head_dim) */
    float *att = b->att + (size_t)thread * group * ctx;                    /* (group, att_ctx) */
    float *w = b->att_row + (size_t)thread * group;                        /* (group) one position's */
    float *out = b->att_out + (size_t)i * q_dim + (size_t)h0 * hd;         /* (group, head_dim) */

    int t0 = job->window > 0 && pos - job->window + 1 > 0 ? pos - job->window + 1 : 0;
    memset(out, 0, sizeof(float) * (size_t)group * hd);
    if (s->kv_type == MODEL_KV_F16) {
        const uint16_t *keys = (const uint16_t *)s->key_cache + off;       /* (pos + 1, kv_dim) */
        const uint16_t *values = (const uint16_t *)s->value_cache + off;   /* (pos + 1, kv_dim) */
        for (int t = t0; t <= pos; t++) {
            kernel_dot_f16_group(keys + (size_t)t * kv_dim, q, group, hd, w);
            for (int g = 0; g < group; g++) att[g * ctx + t] = w[g] * c->attn_scale;
        }
        for (int g = 0; g < group; g++) kernel_softmax(att + g * ctx + t0, pos + 1 - t0);
        for (int t = t0; t <= pos; t++) {
            for (int g = 0; g < group; g++) w[g] = att[g * ctx + t];
            kernel_axpy_f16_group(out, w, values + (size_t)t * kv_dim, group, hd);
        }
    } else {
        const float *keys = (const float *)s->key_cache + off;             /* (pos + 1, kv_dim) */
        const float *values = (const float *)s->value_cache + off;         /* (pos + 1, kv_dim) */
        for (int g = 0; g < group; g++) {
            float *a = att + g * ctx;
            for (int t = t0; t <= pos; t++)
                a[t] = kernel_dot_f32(q + (size_t)g * hd, keys + (size_t)t * kv_dim, hd) * c->attn_scale;
            kernel_softmax(a + t0, pos + 1 - t0);
            for (int t = t0; t <= pos; t++) kernel_axpy(out + (size_t)g * hd, a[t], values + (size_t)t * kv_dim, hd);
        }
    }
}

/* ---- steps both forward passes take, written once ---- */

/* Attention input of layer L for the batch's n tokens: xb = rmsnorm(x) *
 * attn_norm, then q, k, v = xb Wq, Wk, Wv in one dispatch (the input is
 * converted once) -> b->q (n, n_head * head_dim), b->k_new, b->v_new (n, kv_dim). */
static void norm_qkv(const model_config *c, const model_layer *L, model_batch *b, threadpool *pool,
                     const float *x, int n)
{
    int dim = c->n_embd;
    for (int i = 0; i < n; i++)
        kernel_rmsnorm(b->xb + (size_t)i * dim, x + (size_t)i * dim, L->attn_norm, dim, c->norm_eps);
    phase_end(b, MODEL_PHASE_NORM);
    const kernel_matrix *qkv[3] = {&L->wq, &L->wk, &L->wv};
    float *qkv_out[3] = {b->q, b->k_new, b->v_new};
    kernel_matmul_multi(pool, 3, qkv, b->xb, n, qkv_out, b->scratch);
    phase_end(b, MODEL_PHASE_QKV);
}

/* qwen3, gemma3: each head (head_dim) of one token's q and k = rmsnorm(head)
 * * q_norm / k_norm. */
static void norm_heads(const model_config *c, const model_layer *L, float *q, float *k)
{
    for (int h = 0; h < c->n_head; h++)
        kernel_rmsnorm(q + h * c->head_dim, q + h * c->head_dim, L->q_norm, c->head_dim, c->norm_eps);
    for (int h = 0; h < c->n_head_kv; h++)
        kernel_rmsnorm(k + h * c->head_dim, k + h * c->head_dim, L->k_norm, c->head_dim, c->norm_eps);
}

/* Token i's key and value rows of layer l go to its sequence's cache at its
 * position: a copy (F32: the bits computed) or rounded to fp16 (F16). */
static void store_kv(const model_config *c, model_batch *b, int l, int n)
{
    size_t kv_dim = (size_t)c->n_head_kv * c->head_dim;
    for (int i = 0; i < n; i++) {
        model_state *s = b->tok_state[i];
        assert(l >= s->first && l < s->first + s->n_layers && b->tok_pos[i] < s->n_ctx);
        size_t off = ((size_t)(l - s->first) * s->n_ctx + (size_t)b->tok_pos[i]) * kv_dim;
        if (s->kv_type == MODEL_KV_F16) {
            kernel_fp32_to_fp16_row(b->k_new + i * kv_dim, (uint16_t *)s->key_cache + off, (int)kv_dim);
            kernel_fp32_to_fp16_row(b->v_new + i * kv_dim, (uint16_t *)s->value_cache + off, (int)kv_dim);
        } else {
            memcpy((float *)s->key_cache + off, b->k_new + i * kv_dim, sizeof(float) * kv_dim);
            memcpy((float *)s->value_cache + off, b->v_new + i * kv_dim, sizeof(float) * kv_dim);
        }
    }
}

/* A run of consecutive (token, kv head) pairs. */
static void attention_task(void *ctx, int task, int thread)
{
    const attention_job *job = ctx;
    int end = (task + 1) * job->per_task < job->pairs ? (task + 1) * job->per_task : job->pairs;
    for (int pair = task * job->per_task; pair < end; pair++) attention_pair(job, pair, thread);
}

/* Causal attention of the batch's n tokens over their caches of layer l,
 * up to about four tasks per thread, each a run of (token, kv head) pairs
 * (one task per (token, query head), as before, spent a good part of a
 * decode pair's ~1 us claiming it and counting it done on atomics shared by
 * both threads). window > 0 limits each query to the last window positions.
 * -> b->att_out (n, n_head * head_dim). */
static void attend(const model_config *c, model_batch *b, threadpool *pool, int l, int n, int window)
{
    int pairs = n * c->n_head_kv, want = 4 * threadpool_size(pool);
    int per_task = (pairs + want - 1) / want;
    attention_job job = {c, b, l, window, pairs, per_task};
    threadpool_run(pool, (pairs + per_task - 1) / per_task, attention_task, &job);
    phase_end(b, MODEL_PHASE_ATTENTION);
}

/* Feed-forward input of layer L: xb = rmsnorm(x) * ffn_norm, then gate, up =
 * xb Wgate, xb Wup in one dispatch -> b->hb, b->hb2 (n, n_ff). */
static void norm_gate_up(const model_config *c, const model_layer *L, model_batch *b,
                         threadpool *pool, const float *x, int n)
{
    int dim = c->n_embd;
    for (int i = 0; i < n; i++)
        kernel_rmsnorm(b->xb + (size_t)i * dim, x + (size_t)i * dim, L->ffn_norm, dim, c->norm_eps);
    phase_end(b, MODEL_PHASE_NORM);
    const kernel_matrix *gate_up[2] = {&L->w_gate, &L->w_up};
    float *gate_up_out[2] = {b->hb, b->hb2};
    kernel_matmul_multi(pool, 2, gate_up, b->xb, n, gate_up_out, b->scratch);
    phase_end(b, MODEL_PHASE_GATE_UP);
}

typedef struct {
    float *x;
    const float *y;
    int n, slice;
} swiglu_job;

static void swiglu_task(void *ctx, int task, int thread)
{
    (void)thread;
    const swiglu_job *job = ctx;
    int at = task * job->slice, len = job->n - at < job->slice ? job->n - at : job->slice;
    kernel_swiglu(job->x + at, job->y + at, len);
}

/* hb = silu(hb) * hb2 over the batch's n rows (n, n_ff), in slices over the
 * pool: an element's result does not depend on its slice (kernel_swiglu is
 * elementwise, any tail included), so neither the thread count nor the
 * batch changes a bit. A slice is at least SWIGLU_SLICE values: one token
 * of a 0.5B model (4864) runs on the caller, whose hand-off would cost
 * about what the work does. */
#define SWIGLU_SLICE 4096
static void swiglu_rows(const model_config *c, model_batch *b, threadpool *pool, int n)
{
    int total = n * c->n_ff, tasks = total / SWIGLU_SLICE;
    if (tasks > threadpool_size(pool)) tasks = threadpool_size(pool);
    if (tasks < 1) tasks = 1;
    swiglu_job job = {b->hb, b->hb2, total, (total + tasks - 1) / tasks};
    threadpool_run(pool, tasks, swiglu_task, &job);
}

/* Runs the batch's n <= MODEL_BATCH hidden states x (n, n_embd) through
 * layers [first, end), in place: x leaves as those layers' output (after the
 * last, before the final norm). Token i is at position b->tok_pos[i] of
 * b->tok_state[i] (batch_place): the products run over every token at once
 * (each weight row read once for the batch), attention per token over its
 * own sequence. The caller advances the states' n_past. */
static void forward_layers(const model *m, model_batch *b, threadpool *pool, int first, int end,
                           float *x, int n)
{
    const model_config *c = &m->c;
    int dim = c->n_embd, hd = c->head_dim, q_dim = c->n_head * hd, kv_dim = c->n_head_kv * hd;
    int half = c->n_rot / 2;
    assert(n > 0 && n <= MODEL_BATCH);

    for (int l = first; l < end; l++) {
        const model_layer *L = &m->layers[l];

        /* ---- attention: xb = rmsnorm(x) * attn_norm; q, k, v = xb Wq, Wk, Wv ---- */
        norm_qkv(c, L, b, pool, x, n); /* (n, q_dim), (n, kv_dim) x 2 */

        /* ---- biases (qwen2; some llama files): q += bq, k += bk, v += bv ---- */
        for (int i = 0; i < n && L->bq; i++) kernel_add(b->q + (size_t)i * q_dim, L->bq, q_dim);
        for (int i = 0; i < n && L->bk; i++) kernel_add(b->k_new + (size_t)i * kv_dim, L->bk, kv_dim);
        for (int i = 0; i < n && L->bv; i++) kernel_add(b->v_new + (size_t)i * kv_dim, L->bv, kv_dim);

        /* ---- qwen3: each q and k head (head_dim) = rmsnorm(head) * q_norm / k_norm ---- */
        assert(!L->q_norm == !L->k_norm); /* qwen3 requires both, the others refuse both */
        for (int i = 0; i < n && L->q_norm; i++)
            norm_heads(c, L, b->q + (size_t)i * q_dim, b->k_new + (size_t)i * kv_dim);

        /* ---- RoPE on q and k, then k and v into each token's cache ---- */
        for (int i = 0; i < n; i++) {
            rope_apply(c, b->q + (size_t)i * q_dim, c->n_head, b->rope_cos + i * half,
                       b->rope_sin + i * half);
            rope_apply(c, b->k_new + (size_t)i * kv_dim, c->n_head_kv, b->rope_cos + i * half,
                       b->rope_sin + i * half);
        }
        store_kv(c, b, l, n);
        phase_end(b, MODEL_PHASE_ROPE_KV);

        /* ---- grouped-query attention over positions 0 .. pos, per (token, kv head) ---- */
        attend(c, b, pool, l, n, 0); /* -> att_out (n, q_dim) */

        /* ---- output projection and residual: x += att_out Wo ---- */
        kernel_matmul(pool, &L->wo, b->att_out, n, b->xb, b->scratch); /* (n, dim) */
        phase_end(b, MODEL_PHASE_WO);
        for (int i = 0; i < n && L->bo; i++) kernel_add(b->xb + (size_t)i * dim, L->bo, dim);
        kernel_add(x, b->xb, n * dim);
        phase_end(b, MODEL_PHASE_RESIDUAL);

        /* ---- feed-forward: x += (silu(xb Wgate) * (xb Wup)) Wdown, xb = rmsnorm(x) * ffn_norm ---- */
        norm_gate_up(c, L, b, pool, x, n); /* (n, n_ff) x 2 */
        swiglu_rows(c, b, pool, n); /* hb = silu(hb) * hb2 */
        phase_end(b, MODEL_PHASE_ACTIVATION);
        kernel_matmul(pool, &L->w_down, b->hb, n, b->xb, b->scratch); /* (n, dim) */
        phase_end(b, MODEL_PHASE_DOWN);
        kernel_add(x, b->xb, n * dim);
        phase_end(b, MODEL_PHASE_RESIDUAL);
    }
}

/* GELU (tanh form, as Gemma's gelu_pytorch_tanh and ggml's gelu) of the
 * gate times up: x[i] = gelu(x[i]) * y[i]. */
static void gelu_gate(float *x, const float *y, int n)
{
    const float k = 0.7978845608028654f; /* sqrt(2 / pi) */
    for (int i = 0; i < n; i++) {
        float g = x[i];
        x[i] = 0.5f * g * (1.0f + tanhf(k * (g + 0.044715f * g * g * g))) * y[i];
    }
}

/* gemma3: its own pass, as llama.cpp's gemma3 graph. What differs from the
 * llama family: embeddings scaled by sqrt(n_embd) (model_embed); each block's
 * output is normed before its residual add (post_attention_norm,
 * post_ffw_norm); GELU instead of SiLU; q/k RMSNorm per head; local layers (5
 * of every 6) attend to the last n_swa positions and use RoPE base 10000
 * unscaled, global ones the file's base and scaling. GGUF stores Gemma's norm
 * weights as 1 + w (llama.cpp's converter adds the 1), so every norm is a
 * plain RMSNorm here. Same contract as forward_layers. */
static void forward_layers_gemma3(const model *m, model_batch *b, threadpool *pool, int first,
                                  int end, float *x, int n)
{
    const model_config *c = &m->c;
    int dim = c->n_embd, hd = c->head_dim, q_dim = c->n_head * hd, kv_dim = c->n_head_kv * hd;
    int half = c->n_rot / 2;
    assert(n > 0 && n <= MODEL_BATCH);

    for (int l = first; l < end; l++) {
        const model_layer *L = &m->layers[l];
        int local = l % c->swa_pattern != c->swa_pattern - 1;
        const float *rcos = local ? b->rope_cos_swa : b->rope_cos; /* (n, n_rot / 2) */
        const float *rsin = local ? b->rope_sin_swa : b->rope_sin;

        /* ---- attention: xb = rmsnorm(x) * attn_norm; q, k, v = xb Wq, Wk, Wv ---- */
        norm_qkv(c, L, b, pool, x, n); /* (n, q_dim), (n, kv_dim) x 2 */

        /* ---- per head: q, k = rmsnorm(head) * q_norm / k_norm, then RoPE (NEOX); k, v to the caches ---- */
        for (int i = 0; i < n; i++) {
            norm_heads(c, L, b->q + (size_t)i * q_dim, b->k_new + (size_t)i * kv_dim);
            rope_apply(c, b->q + (size_t)i * q_dim, c->n_head, rcos + i * half, rsin + i * half);
            rope_apply(c, b->k_new + (size_t)i * kv_dim, c->n_head_kv, rcos + i * half, rsin + i * half);
        }
        store_kv(c, b, l, n);

        /* ---- attention (q.k * attn_scale), local layers over the last n_swa positions ---- */
        attend(c, b, pool, l, n, local ? c->n_swa : 0); /* -> att_out (n, q_dim) */

        /* ---- x += rmsnorm(att_out Wo) * post_attention_norm ---- */
        kernel_matmul(pool, &L->wo, b->att_out, n, b->xb, b->scratch); /* (n, dim) */
        for (int i = 0; i < n; i++)
            kernel_rmsnorm(b->xb + (size_t)i * dim, b->xb + (size_t)i * dim, L->post_attn_norm, dim,
                           c->norm_eps);
        kernel_add(x, b->xb, n * dim);

        /* ---- x += rmsnorm((gelu(xb Wgate) * (xb Wup)) Wdown) * post_ffw_norm, xb = rmsnorm(x) * ffn_norm ---- */
        norm_gate_up(c, L, b, pool, x, n); /* (n, n_ff) x 2 */
        gelu_gate(b->hb, b->hb2, n * c->n_ff);
        kernel_matmul(pool, &L->w_down, b->hb, n, b->xb, b->scratch); /* (n, dim) */
        for (int i = 0; i < n; i++)
            kernel_rmsnorm(b->xb + (size_t)i * dim, b->xb + (size_t)i * dim, L->post_ffn_norm, dim,
                           c->norm_eps);
        kernel_add(x, b->xb, n * dim);
    }
}

/* ---- the pieces: embed, layers, output; model_forward chains them ---- */

/* x (n, n_embd) = token_embd[tokens[i]] [* sqrt(n_embd) for gemma3]. Ids
 * are checked by the caller. */
static void embed_rows(const model *m, const int32_t *tokens, int n, float *x)
{
    const model_config *c = &m->c;
    int dim = c->n_embd;
    size_t embd_row = kernel_row_bytes(m->token_embd.type, dim);
    float embd_scale = sqrtf((float)dim); /* gemma3, in float as llama.cpp */
    _Alignas(64) uint8_t buf[embd_row]; /* an interleaved row in row-major form */
    for (int i = 0; i < n; i++) {
        float *xi = x + (size_t)i * dim;
        kernel_dequantize_row(m->token_embd.type, kernel_matrix_row(&m->token_embd, tokens[i], buf), xi, dim);
        for (int e = 0; e < dim && c->arch == MODEL_ARCH_GEMMA3; e++) xi[e] *= embd_scale;
    }
}

/* One batch of n <= MODEL_BATCH placed tokens through layers [first, end) of
 * the right pass. */
static void run_layers(const model *m, model_batch *b, threadpool *pool, int first, int end, float *x,
                       int n)
{
    if (m->c.arch == MODEL_ARCH_GEMMA3)
        forward_layers_gemma3(m, b, pool, first, end, x, n);
    else
        forward_layers(m, b, pool, first, end, x, n);
}

/* ---- final norm and classifier: logits = rmsnorm(x) * output_norm Wout ----
 * n <= MODEL_BATCH rows x (n, n_embd) -> logits (n, n_vocab). */
static void output_rows(const model *m, model_batch *b, threadpool *pool, const float *x, int n,
                        float *logits)
{
    const model_config *c = &m->c;
    int dim = c->n_embd;
    assert(n > 0 && n <= MODEL_BATCH);
    for (int i = 0; i < n; i++)
        kernel_rmsnorm(b->xb + (size_t)i * dim, x + (size_t)i * dim, m->output_norm, dim, c->norm_eps);
    phase_end(b, MODEL_PHASE_NORM);
    kernel_matmul(pool, &m->output, b->xb, n, logits, b->scratch); /* (n, n_vocab) */
    phase_end(b, MODEL_PHASE_CLASSIFIER);
}

static int check_tokens(const model *m, const int32_t *tokens, int n, char *err, size_t errlen)
{
    if (n <= 0) {
        snprintf(err, errlen, "no tokens to evaluate");
        return -1;
    }
    for (int i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= m->c.n_vocab) {
            snprintf(err, errlen, "token id %d out of range [0, %d)", (int)tokens[i], m->c.n_vocab);
            return -1;
        }
    }
    return 0;
}

/* Gives b, per pool thread, a row of attention scratch of n_ctx for each
 * query head of a kv group, and a group's weights of one position. */
static int batch_reserve(model_batch *b, threadpool *pool, int n_ctx, char *err, size_t errlen)
{
    const model_config *c = &b->m->c;
    int threads = threadpool_size(pool), group = c->n_head / c->n_head_kv;
    if (threads > b->att_threads || n_ctx > b->att_ctx) {
        int rows = threads > b->att_threads ? threads : b->att_threads;
        int ctx = n_ctx > b->att_ctx ? n_ctx : b->att_ctx;
        float *att = realloc(b->att, sizeof(float) * (size_t)rows * (size_t)group * (size_t)ctx);
        float *row = att ? realloc(b->att_row, sizeof(float) * (size_t)rows * (size_t)group) : NULL;
        if (att) b->att = att;
        if (!att || !row) {
            snprintf(err, errlen, "out of memory for attention scratch");
            return -1;
        }
        b->att_row = row;
        b->att_threads = rows;
        b->att_ctx = ctx;
    }
    return 0;
}

/* Checks that n more positions through layers [first, end) fit s. */
static int prepare_layers(const model *m, model_state *s, int first, int end, int n, char *err,
                          size_t errlen)
{
    assert(s->m == m);
    if (n <= 0) {
        snprintf(err, errlen, "no positions to evaluate");
        return -1;
    }
    if (first < m->part.first || first >= end || end > m->part.end) {
        snprintf(err, errlen, "layers [%d, %d) are not within the loaded layers [%d, %d)", first, end,
                 m->part.first, m->part.end);
        return -1;
    }
    if (s->n_past > 0 && (first != s->range_first || end != s->range_end)) {
        snprintf(err, errlen, "layers [%d, %d) on a state whose cache holds layers [%d, %d)", first,
                 end, s->range_first, s->range_end);
        return -1;
    }
    if (n > s->n_ctx - s->n_past) {
        snprintf(err, errlen, "context full: %d positions used, %d more do not fit in %d",
                 s->n_past, n, s->n_ctx);
        return -1;
    }
    return 0;
}

/* The state now holds layers [first, end) and nb more positions. */
static void state_advance(model_state *s, int first, int end, int nb)
{
    s->range_first = first;
    s->range_end = end;
    s->n_past += nb;
}

static int need_head(const model *m, char *err, size_t errlen)
{
    if (m->part.head) return 0;
    snprintf(err, errlen, "the embeddings and the output are not loaded here (layers [%d, %d) only)",
             m->part.first, m->part.end);
    return -1;
}

static int need_whole(const model *m, const char *what, char *err, size_t errlen)
{
    if (m->part.head && m->part.first == 0 && m->part.end == m->c.n_layer) return 0;
    snprintf(err, errlen, "%s needs the whole model; layers [%d, %d)%s are loaded", what,
             m->part.first, m->part.end, m->part.head ? " and the head" : "");
    return -1;
}

int model_embed(const model *m, const int32_t *tokens, int n, float *x, char *err, size_t errlen)
{
    if (need_head(m, err, errlen) != 0 || check_tokens(m, tokens, n, err, errlen) != 0) return -1;
    embed_rows(m, tokens, n, x);
    return 0;
}

int model_forward_layers(const model *m, model_state *s, threadpool *pool, int first, int end,
                         float *x, int n, char *err, size_t errlen)
{
    if (prepare_layers(m, s, first, end, n, err, errlen) != 0 ||
        batch_reserve(s->work, pool, s->n_ctx, err, errlen) != 0)
        return -1;
    for (int done = 0; done < n; done += MODEL_BATCH) {
        int nb = n - done < MODEL_BATCH ? n - done : MODEL_BATCH;
        batch_place(m, s->work, 0, s, nb);
        run_layers(m, s->work, pool, first, end, x + (size_t)done * m->c.n_embd, nb);
        state_advance(s, first, end, nb);
    }
    return 0;
}

int model_forward_layers_batch(const model *m, model_batch *b, threadpool *pool, int first, int end,
                               model_state *const *states, const int *counts, int n_seq, float *x,
                               char *err, size_t errlen)
{
    assert(b->m == m);
    int total = 0, max_ctx = 0;
    for (int k = 0; k < n_seq; k++) {
        for (int j = 0; j < k; j++)
            if (states[j] == states[k]) {
                snprintf(err, errlen, "a sequence appears twice in one batch");
                return -1;
            }
        if (prepare_layers(m, states[k], first, end, counts[k], err, errlen) != 0) return -1;
        total += counts[k];
        if (states[k]->n_ctx > max_ctx) max_ctx = states[k]->n_ctx;
    }
    if (n_seq <= 0 || total > MODEL_BATCH) {
        snprintf(err, errlen, "a batch holds 1 to %d positions, not %d", MODEL_BATCH, total);
        return -1;
    }
    if (batch_reserve(b, pool, max_ctx, err, errlen) != 0) return -1;
    for (int k = 0, i0 = 0; k < n_seq; i0 += counts[k], k++) batch_place(m, b, i0, states[k], counts[k]);
    run_layers(m, b, pool, first, end, x, total);
    for (int k = 0; k < n_seq; k++) state_advance(states[k], first, end, counts[k]);
    return 0;
}

int model_output(const model *m, model_state *s, threadpool *pool, const float *x, int n,
                 float *logits, char *err, size_t errlen)
{
    assert(s->m == m);
    if (need_head(m, err, errlen) != 0) return -1;
    if (n <= 0) {
        snprintf(err, errlen, "no hidden states to classify");
        return -1;
    }
    for (int done = 0; done < n; done += MODEL_BATCH) {
        int nb = n - done < MODEL_BATCH ? n - done : MODEL_BATCH;
        output_rows(m, s->work, pool, x + (size_t)done * m->c.n_embd, nb, logits + (size_t)done * m->c.n_vocab);
    }
    return 0;
}

int model_final_norm(const model *m, const float *x, int n, float *out, char *err, size_t errlen)
{
    if (need_head(m, err, errlen) != 0) return -1;
    for (int i = 0; i < n; i++)
        kernel_rmsnorm(out + (size_t)i * m->c.n_embd, x + (size_t)i * m->c.n_embd, m->output_norm, m->c.n_embd,
                       m->c.norm_eps);
    return 0;
}

int model_forward(const model *m, model_state *s, threadpool *pool, const int32_t *tokens, int n,
                  float *logits, int all_logits, char *err, size_t errlen)
{
    if (need_whole(m, "model_forward", err, errlen) != 0 || check_tokens(m, tokens, n, err, errlen) != 0 ||
        prepare_layers(m, s, 0, m->c.n_layer, n, err, errlen) != 0)
        return -1;
    /* one batch of one sequence at a time, through model_forward_batch's code */
    for (int done = 0; done < n; done += MODEL_BATCH) {
        int nb = n - done < MODEL_BATCH ? n - done : MODEL_BATCH;
        int last = done + nb >= n;
        model_seq seq = {.state = s, .tokens = tokens + done, .n = nb,
                         .logits = all_logits ? logits + (size_t)done * m->c.n_vocab : last ? logits : NULL,
                         .all_logits = all_logits};
        if (model_forward_batch(m, s->work, pool, &seq, 1, err, errlen) != 0) return -1;
    }
    return 0;
}

typedef struct {
    const float *src; /* (n, n_vocab) */
    float *dst[MODEL_BATCH];
    int n, n_vocab;
} logits_copy_job;

static void logits_copy_task(void *ctx, int task, int thread)
{
    (void)thread;
    const logits_copy_job *job = ctx;
    memcpy(job->dst[task], job->src + (size_t)task * job->n_vocab, sizeof(float) * (size_t)job->n_vocab);
}

int model_forward_batch(const model *m, model_batch *b, threadpool *pool, const model_seq *seqs,
                        int n_seq, char *err, size_t errlen)
{
    const model_config *c = &m->c;
    assert(b->m == m);
    if (need_whole(m, "model_forward_batch", err, errlen) != 0) return -1;
    int total = 0, n_last = 0, max_ctx = 0;
    for (int k = 0; k < n_seq; k++) {
        const model_seq *q = &seqs[k];
        for (int j = 0; j < k; j++)
            if (seqs[j].state == q->state) {
                snprintf(err, errlen, "a sequence appears twice in one batch");
                return -1;
            }
        if (check_tokens(m, q->tokens, q->n, err, errlen) != 0 ||
            prepare_layers(m, q->state, 0, c->n_layer, q->n, err, errlen) != 0)
            return -1;
        total += q->n;
        n_last += q->logits && !q->all_logits;
        if (q->state->n_ctx > max_ctx) max_ctx = q->state->n_ctx;
    }
    if (n_seq <= 0 || total > MODEL_BATCH) {
        snprintf(err, errlen, "a batch holds 1 to %d tokens, not %d", MODEL_BATCH, total);
        return -1;
    }
    if (batch_reserve(b, pool, max_ctx, err, errlen) != 0) return -1;
    if (n_last > b->last_rows) {
        float *p = realloc(b->last_logits, sizeof(float) * (size_t)n_last * (size_t)c->n_vocab);
        if (!p) {
            snprintf(err, errlen, "out of memory for %d rows of logits", n_last);
            return -1;
        }
        b->last_logits = p;
        b->last_rows = n_last;
    }

    /* ---- embed every sequence's tokens, one after another; place them ---- */
    if (b->profile) b->phase_start = thread_cpu_ns();
    int dim = c->n_embd;
    for (int k = 0, i0 = 0; k < n_seq; i0 += seqs[k].n, k++) {
        embed_rows(m, seqs[k].tokens, seqs[k].n, b->x + (size_t)i0 * dim);
        batch_place(m, b, i0, seqs[k].state, seqs[k].n);
    }
    phase_end(b, MODEL_PHASE_EMBED);

    /* ---- every layer over the whole batch ---- */
    run_layers(m, b, pool, 0, c->n_layer, b->x, total);
    for (int k = 0; k < n_seq; k++) state_advance(seqs[k].state, 0, c->n_layer, seqs[k].n);

    /* ---- logits: the last rows of those that want them in one product, all rows apart ---- */
    for (int k = 0, i0 = 0, r = 0; k < n_seq; i0 += seqs[k].n, k++) {
        if (!seqs[k].logits) continue;
        if (seqs[k].all_logits)
            output_rows(m, b, pool, b->x + (size_t)i0 * dim, seqs[k].n, seqs[k].logits);
        else /* gather the last rows at the front of x: rows before i0 + n - 1 are done with */
            memmove(b->x + (size_t)r++ * dim, b->x + (size_t)(i0 + seqs[k].n - 1) * dim, sizeof(float) * dim);
    }
    if (n_last == 1) { /* straight into the one sequence's row */
        for (int k = 0; k < n_seq; k++)
            if (seqs[k].logits && !seqs[k].all_logits) output_rows(m, b, pool, b->x, 1, seqs[k].logits);
    } else if (n_last > 1) {
        output_rows(m, b, pool, b->x, n_last, b->last_logits); /* (n_last, n_vocab) */
        logits_copy_job job = {.src = b->last_logits, .n_vocab = c->n_vocab};
        for (int k = 0; k < n_seq; k++)
            if (seqs[k].logits && !seqs[k].all_logits) job.dst[job.n++] = seqs[k].logits;
        threadpool_run(pool, job.n, logits_copy_task, &job); /* 600 KB a row for a 152k vocabulary */
        phase_end(b, MODEL_PHASE_LOGITS);
    }
    return 0;
}
