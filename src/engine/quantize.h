/* quantize.h: rewrites a GGUF model with its weight matrices in another
 * tensor type: one type for every matrix (F32, F16, BF16, Q8_0, Q4_0, Q4_1,
 * Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) or a mixed recipe (Q4_K_M,
 * Q5_K_M, Q4_K_S, Q5_K_S, Q2_K_S, Q3_K_S, Q3_K_M, Q3_K_L) that keeps some
 * tensors at higher precision.
 *
 * The recipes, and why (following llama.cpp's long-standing practice, which
 * the published perplexity tables of its quantize tool justify):
 * - 1-D tensors (norms) and anything that is not a 2-D ".weight" stay as they
 *   are: a few KB, and they scale every activation.
 * - Q4_K_M / Q5_K_M: output.weight (or token_embd.weight when the output is
 *   tied to it) -> Q6_K: the classifier's error goes straight to the logits.
 *   attn_v and ffn_down -> Q6_K in the first and last eighth of the layers and
 *   every third layer between (layer i with i < n/8, i >= 7n/8, or
 *   (i - n/8) % 3 == 2): these feed the residual stream directly and measured
 *   most sensitive. Everything else: Q4_K / Q5_K.
 * - Q4_K_S: output -> Q6_K; attn_v of the first 4 layers and ffn_down of the
 *   first eighth -> Q5_K; rest Q4_K. Q5_K_S: output -> Q6_K; rest Q5_K.
 *   The _M recipes also put a fused attn_qkv (phi3) at Q5_K / Q6_K.
 * - The 2- and 3-bit recipes, llama.cpp's mixtures for its ftypes 21, 11,
 *   12 and 13 (llama_tensor_get_type; they spend bits where 3-bit error
 *   hurts most: the values and the outputs that feed the residual stream):
 *   Q2_K_S: output -> Q6_K; attn_v -> Q4_K when n_head / n_head_kv >= 4
 *   (a kv head serves 4+ query heads); ffn_down of layers i < n/8 -> Q4_K;
 *   rest Q2_K. Q3_K_S: output -> Q6_K; rest Q3_K. Q3_K_M: output -> Q6_K;
 *   attn_v -> Q5_K in layers 0 and 1, Q4_K after; ffn_down -> Q5_K for
 *   i < n/16, Q4_K after; attn_output and attn_qkv -> Q4_K; rest Q3_K.
 *   Q3_K_L: output -> Q6_K; attn_v, ffn_down, attn_output -> Q5_K;
 *   attn_qkv -> Q4_K; rest Q3_K.
 * - Every recipe, in 80-layer models (Llama 70B, Qwen2 72B): an attn_v that
 *   would be Q3_K or Q4_K is Q5_K (8 query heads share it; llama.cpp's rule
 *   for its 70B type).
 * - A single type: every matrix in that type ("pure"), so each type can be
 *   tested and measured on its own.
 * - A row length that is not a multiple of the chosen type's block falls back
 *   to a 32-block type of at least the same bits, as llama.cpp does:
 *   Q2_K/Q3_K -> Q4_0 (llama.cpp now uses IQ4_NL, which we lack), Q4_K ->
 *   Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0; a row not a multiple of 32 -> F16.
 * general.file_type is set to llama.cpp's ftype number for the recipe and
 * general.quantization_version to 2 (the K-quant layout generation).
 *
 * Input matrices of any type the kernels read are dequantized to F32 first.
 * Threading: quantize_file uses its own thread pool of n_threads. */
#ifndef LLMESH_QUANTIZE_H
#define LLMESH_QUANTIZE_H

#include <stddef.h>
#include <stdint.h>

#include "engine/gguf.h"

typedef struct {
    const char *name;    /* "Q4_K_M", "q8_0", ... as given on the command line */
    ggml_type base;      /* the type of the matrices not singled out */
    int mix;             /* 0 pure, or which mixed recipe */
    uint32_t ftype;      /* llama.cpp's general.file_type number */
} quantize_recipe;

/* Looks up a recipe by name (case-insensitive). Returns 0, or -1 with a
 * message listing the accepted names. */
int quantize_recipe_parse(const char *name, quantize_recipe *out, char *err, size_t errlen);

/* What the recipes need to know of the model being quantized. */
typedef struct {
    int n_layer;   /* {arch}.block_count */
    int tied;      /* token_embd doubles as the output (no output.weight) */
    int n_gqa;     /* query heads per kv head (head_count / head_count_kv), >= 1 */
} quantize_model;

/* The type the recipe gives tensor `name` of shape ne (ne[0] the row length)
 * in model m. Returns the tensor's own type for tensors that are kept as
 * they are. */
ggml_type quantize_choose_type(const quantize_recipe *r, const char *name, uint32_t n_dims,
                               const uint64_t *ne, ggml_type current, const quantize_model *m);

typedef struct {
    uint64_t bytes_in;    /* tensor data bytes read */
    uint64_t bytes_out;   /* tensor data bytes written */
    int n_tensors;
    int n_by_type[32];    /* tensors written per ggml_type number (< 32) */
} quantize_stats;

/* Reads in_path, writes out_path. Returns 0, or -1 with a message naming the
 * file or tensor at fault. stats may be NULL. */
int quantize_file(const char *in_path, const char *out_path, const quantize_recipe *r,
                  int n_threads, quantize_stats *stats, char *err, size_t errlen);

/* Quantizes n floats (a multiple of t's block) into t's layout; t is any
 * type kernel_type_supported accepts. */
void quantize_row(ggml_type t, const float *x, void *dst, int n);

#endif
