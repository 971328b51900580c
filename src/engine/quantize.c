/* quantize.c: see quantize.h. */
#include "engine/quantize.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "engine/gguf_write.h"
#include "engine/kernels.h"
#include "engine/quants.h"
#include "lib/err.h"
#include "lib/threadpool.h"

enum { MIX_PURE, MIX_Q4_K_M, MIX_Q5_K_M, MIX_Q4_K_S, MIX_Q5_K_S, MIX_Q2_K_S, MIX_Q3_K_S, MIX_Q3_K_M, MIX_Q3_K_L };

/* ftype numbers from llama.cpp's llama_ftype (the GGUF general.file_type).
 * Pure K types are labelled with the nearest llama.cpp ftype ("_S"). */
static const quantize_recipe recipes[] = {
    {"F32", GGML_TYPE_F32, MIX_PURE, 0},     {"F16", GGML_TYPE_F16, MIX_PURE, 1},
    {"BF16", GGML_TYPE_BF16, MIX_PURE, 32},  {"Q8_0", GGML_TYPE_Q8_0, MIX_PURE, 7},
    {"Q4_0", GGML_TYPE_Q4_0, MIX_PURE, 2},   {"Q4_1", GGML_TYPE_Q4_1, MIX_PURE, 3},
    {"Q5_0", GGML_TYPE_Q5_0, MIX_PURE, 8},   {"Q5_1", GGML_TYPE_Q5_1, MIX_PURE, 9},
    {"Q2_K", GGML_TYPE_Q2_K, MIX_PURE, 10},  {"Q3_K", GGML_TYPE_Q3_K, MIX_PURE, 11},
    {"Q4_K", GGML_TYPE_Q4_K, MIX_PURE, 14},  {"Q5_K", GGML_TYPE_Q5_K, MIX_PURE, 16},
    {"Q6_K", GGML_TYPE_Q6_K, MIX_PURE, 18},
    {"Q4_K_M", GGML_TYPE_Q4_K, MIX_Q4_K_M, 15}, {"Q5_K_M", GGML_TYPE_Q5_K, MIX_Q5_K_M, 17},
    {"Q4_K_S", GGML_TYPE_Q4_K, MIX_Q4_K_S, 14}, {"Q5_K_S", GGML_TYPE_Q5_K, MIX_Q5_K_S, 16},
    {"Q2_K_S", GGML_TYPE_Q2_K, MIX_Q2_K_S, 21}, {"Q3_K_S", GGML_TYPE_Q3_K, MIX_Q3_K_S, 11},
    {"Q3_K_M", GGML_TYPE_Q3_K, MIX_Q3_K_M, 12}, {"Q3_K_L", GGML_TYPE_Q3_K, MIX_Q3_K_L, 13},
};

int quantize_recipe_parse(const char *name, quantize_recipe *out, char *err, size_t errlen)
{
    for (size_t i = 0; i < sizeof recipes / sizeof recipes[0]; i++)
        if (!strcasecmp(name, recipes[i].name)) {
            *out = recipes[i];
            return 0;
        }
    err_set(err, errlen, "unknown type '%s' (one of: F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 "
            "Q2_K Q3_K Q4_K Q5_K Q6_K Q4_K_M Q5_K_M Q4_K_S Q5_K_S Q2_K_S Q3_K_S Q3_K_M Q3_K_L)", name);
    return -1;
}

/* Layers that get more bits in the _M recipes (see quantize.h). */
static int more_bits(int layer, int n_layer)
{
    return layer < n_layer / 8 || layer >= 7 * n_layer / 8 || (layer - n_layer / 8) % 3 == 2;
}

static int has_suffix(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* A type whose block divides the row: the recipe's, or the fallback. */
static ggml_type fit_row(ggml_type t, uint64_t row)
{
    if (row % ggml_type_block_elems(t) == 0) return t;
    switch (t) {
    case GGML_TYPE_Q2_K: case GGML_TYPE_Q3_K: t = GGML_TYPE_Q4_0; break;
    case GGML_TYPE_Q4_K: t = GGML_TYPE_Q5_0; break;
    case GGML_TYPE_Q5_K: t = GGML_TYPE_Q5_1; break;
    case GGML_TYPE_Q6_K: t = GGML_TYPE_Q8_0; break;
    default: break;
    }
    return row % ggml_type_block_elems(t) == 0 ? t : GGML_TYPE_F16;
}

ggml_type quantize_choose_type(const quantize_recipe *r, const char *name, uint32_t n_dims,
                               const uint64_t *ne, ggml_type current, const quantize_model *m)
{
    if (n_dims != 2 || ne[1] < 2 || !has_suffix(name, ".weight")) return current;
    ggml_type t = r->base;
    int layer = -1, n_layer = m->n_layer;
    if (!strncmp(name, "blk.", 4)) layer = atoi(name + 4);
    int is_output = !strcmp(name, "output.weight") || (m->tied && !strcmp(name, "token_embd.weight"));
    int is_v = strstr(name, ".attn_v.") != NULL, is_down = strstr(name, ".ffn_down.") != NULL;
    int is_o = strstr(name, ".attn_output.") != NULL, is_qkv = strstr(name, ".attn_qkv.") != NULL;
    if (is_output) {
        if (r->mix != MIX_PURE) t = GGML_TYPE_Q6_K; /* every recipe */
        return fit_row(t, ne[0]);
    }
    if (layer < 0) return fit_row(t, ne[0]);
    switch (r->mix) {
    case MIX_Q4_K_M:
    case MIX_Q5_K_M:
        if ((is_v || is_down) && more_bits(layer, n_layer)) t = GGML_TYPE_Q6_K;
        else if (is_qkv) t = r->mix == MIX_Q4_K_M ? GGML_TYPE_Q5_K : GGML_TYPE_Q6_K;
        break;
    case MIX_Q4_K_S:
        if (is_v && layer < 4) t = GGML_TYPE_Q5_K;
        else if (is_down && layer < (n_layer + 7) / 8) t = GGML_TYPE_Q5_K;
        break;
    case MIX_Q2_K_S:
        if (is_v && m->n_gqa >= 4) t = GGML_TYPE_Q4_K;
        else if (is_down && layer < n_layer / 8) t = GGML_TYPE_Q4_K;
        break;
    case MIX_Q3_K_M:
        if (is_v) t = layer < 2 ? GGML_TYPE_Q5_K : GGML_TYPE_Q4_K;
        else if (is_down) t = layer < n_layer / 16 ? GGML_TYPE_Q5_K : GGML_TYPE_Q4_K;
        else if (is_o || is_qkv) t = GGML_TYPE_Q4_K;
        break;
    case MIX_Q3_K_L:
        if (is_v || is_down || is_o) t = GGML_TYPE_Q5_K;
        else if (is_qkv) t = GGML_TYPE_Q4_K;
        break;
    default: break; /* pure types, Q5_K_S and Q3_K_S: the base type */
    }
    /* 80-layer models (Llama 70B, Qwen2 72B) share each attn_v among 8 query
     * heads: more bits there cost little (llama.cpp's rule). */
    if (is_v && r->mix != MIX_PURE && n_layer == 80 && (t == GGML_TYPE_Q3_K || t == GGML_TYPE_Q4_K)) t = GGML_TYPE_Q5_K;
    return fit_row(t, ne[0]);
}

void quantize_row(ggml_type t, const float *x, void *dst, int n)
{
    switch (t) {
    case GGML_TYPE_F32: memcpy(dst, x, (size_t)n * sizeof(float)); break;
    case GGML_TYPE_F16: {
        uint16_t *h = dst;
        for (int i = 0; i < n; i++) h[i] = kernel_fp32_to_fp16(x[i]);
        break;
    }
    case GGML_TYPE_BF16: {
        uint16_t *h = dst;
        for (int i = 0; i < n; i++) h[i] = kernel_fp32_to_bf16(x[i]);
        break;
    }
    case GGML_TYPE_Q8_0: kernel_quantize_row_q8_0(x, dst, n); break;
    default: {
        const quant_traits *q = quant_get_traits(t);
        assert(q && n % q->block_elems == 0);
        if (q) q->quantize_row(x, dst, n);
    }
    }
}

/* ---- the file ------------------------------------------------------------- */

typedef struct {
    const gguf_file *in;
    ggml_type *types;        /* output type per tensor */
    threadpool *pool;
    /* the tensor being converted */
    const gguf_tensor *t;
    ggml_type to;
    uint8_t *dst;
    int rows, cols, rows_per_task;
    float *rowbuf;           /* [threads][cols] */
} qctx;

static void convert_task(void *arg, int task, int thread)
{
    qctx *c = arg;
    size_t in_stride = kernel_row_bytes(c->t->type, c->cols);
    size_t out_stride = kernel_row_bytes(c->to, c->cols);
    float *row = c->rowbuf + (size_t)thread * (size_t)c->cols;
    int r0 = task * c->rows_per_task;
    int r1 = r0 + c->rows_per_task < c->rows ? r0 + c->rows_per_task : c->rows;
    for (int r = r0; r < r1; r++) {
        kernel_dequantize_row(c->t->type, (const uint8_t *)c->t->data + (size_t)r * in_stride, row, c->cols);
        quantize_row(c->to, row, c->dst + (size_t)r * out_stride, c->cols);
    }
}

static int fill_tensor(void *arg, size_t index, void *dst, uint64_t nbytes, char *err, size_t errlen)
{
    qctx *c = arg;
    const gguf_tensor *t = &c->in->tensors[index];
    ggml_type to = c->types[index];
    if (to == t->type) { /* kept as it is */
        assert(nbytes == t->nbytes);
        memcpy(dst, t->data, (size_t)nbytes);
        return 0;
    }
    char name[96];
    uint64_t rows = t->nbytes / kernel_row_bytes(t->type, (int64_t)t->ne[0]);
    if (rows > INT32_MAX) {
        err_set(err, errlen, "tensor %s: too many rows", gguf_str_printable(t->name, name, sizeof name));
        return -1;
    }
    float *rowbuf = malloc(sizeof(float) * (size_t)t->ne[0] * (size_t)threadpool_size(c->pool));
    if (!rowbuf) {
        err_set(err, errlen, "out of memory converting %s", gguf_str_printable(t->name, name, sizeof name));
        return -1;
    }
    c->t = t;
    c->to = to;
    c->dst = dst;
    c->cols = (int)t->ne[0];
    c->rows = (int)rows;
    c->rowbuf = rowbuf;
    int want = threadpool_size(c->pool) * 4;
    c->rows_per_task = (c->rows + want - 1) / want;
    if (c->rows_per_task < 1) c->rows_per_task = 1;
    threadpool_run(c->pool, (c->rows + c->rows_per_task - 1) / c->rows_per_task, convert_task, c);
    free(rowbuf);
    return 0;
}

int quantize_file(const char *in_path, const char *out_path, const quantize_recipe *r,
                  int n_threads, quantize_stats *stats, char *err, size_t errlen)
{
    char msg[384], name[96];
    int rc = -1;
    gguf_write *w = NULL;
    threadpool *pool = NULL;
    ggml_type *types = NULL;
    gguf_file *in = gguf_open(in_path, msg, sizeof msg);
    if (!in) {
        err_set(err, errlen, "%s: %s", in_path, msg);
        return -1;
    }
    gguf_str arch = {"", 0};
    uint32_t n_layer = 0, n_head = 0, n_head_kv = 0;
    char key[160];
    if (gguf_get_str(in, "general.architecture", &arch) == 0 && arch.len < 64) {
        snprintf(key, sizeof key, "%.*s.block_count", (int)arch.len, arch.ptr);
        gguf_get_u32(in, key, &n_layer);
        snprintf(key, sizeof key, "%.*s.attention.head_count", (int)arch.len, arch.ptr);
        gguf_get_u32(in, key, &n_head);
        snprintf(key, sizeof key, "%.*s.attention.head_count_kv", (int)arch.len, arch.ptr);
        if (gguf_get_u32(in, key, &n_head_kv) != 0) n_head_kv = n_head;
    }
    quantize_model shape = {
        .n_layer = n_layer <= INT32_MAX ? (int)n_layer : 0,
        .tied = gguf_find_tensor(in, "output.weight") == NULL,
        .n_gqa = n_head_kv > 0 && n_head <= INT32_MAX ? (int)(n_head / n_head_kv) : 1,
    };
    w = gguf_write_new();
    types = calloc(in->n_tensors ? in->n_tensors : 1, sizeof *types);
    if (!w || !types) {
        err_set(err, errlen, "out of memory");
        goto out;
    }
    for (uint64_t i = 0; i < in->n_kv; i++)
        if (gguf_write_copy_kv(w, &in->kv[i], msg, sizeof msg) < 0) goto fail_msg;
    if (gguf_write_set_u32(w, "general.file_type", r->ftype, msg, sizeof msg) < 0 ||
        gguf_write_set_u32(w, "general.quantization_version", 2, msg, sizeof msg) < 0)
        goto fail_msg;
    quantize_stats st = {0};
    for (uint64_t i = 0; i < in->n_tensors; i++) {
        const gguf_tensor *t = &in->tensors[i];
        gguf_str_printable(t->name, name, sizeof name);
        ggml_type to = quantize_choose_type(r, name, t->n_dims, t->ne, t->type, &shape);
        if (to != t->type && (!kernel_type_supported(t->type) || t->ne[0] > INT32_MAX / 4)) {
            err_set(err, errlen, "%s: tensor %s has type %s, which llmesh cannot read to requantize",
                    in_path, name, ggml_type_name(t->type));
            goto out;
        }
        types[i] = to;
        if (gguf_write_add_tensor(w, t->name, t->n_dims, t->ne, to, msg, sizeof msg) < 0) goto fail_msg;
        st.bytes_in += t->nbytes;
        st.bytes_out += gguf_write_tensor_nbytes(w, (size_t)i);
        st.n_tensors++;
        if ((unsigned)to < 32) st.n_by_type[to]++;
    }
    pool = threadpool_create(n_threads, msg, sizeof msg);
    if (!pool) goto fail_msg;
    qctx ctx = {.in = in, .types = types, .pool = pool};
    if (gguf_write_file(w, out_path, fill_tensor, &ctx, msg, sizeof msg) < 0) goto fail_msg;
    if (stats) *stats = st;
    rc = 0;
    goto out;
fail_msg:
    err_set(err, errlen, "%s", msg);
out:
    threadpool_free(pool);
    free(types);
    gguf_write_free(w);
    gguf_close(in);
    return rc;
}
