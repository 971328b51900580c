/* model_writer.h: synthetic GGUF models of every architecture the engine
 * runs (llama, qwen2, qwen3, phi3, gemma3), for tests.
 *
 * For: test_arch.c (forward pass against a reference, batching, real-shaped
 * configs), test_stage.c and test_split.c (parts, partial files). Writes the keys llama.cpp's converter writes, under the
 * architecture's prefix, random weights, and a byte-level "gpt2" tokenizer
 * padded with filler tokens to n_vocab. Not for: tokenizer tests (the
 * vocabulary has no merges) or production.
 * Built on gguf_writer.h; like it, a wrong request aborts the test.
 * Threading: no shared state; any thread. */
#ifndef LLMESH_TEST_MODEL_WRITER_H
#define LLMESH_TEST_MODEL_WRITER_H

#include <stdint.h>

#include "engine/gguf.h"

typedef struct {
    const char *arch;     /* general.architecture and key prefix: "llama", "qwen2", ... */
    int n_embd;
    int n_layer;
    int n_head;
    int n_head_kv;
    int head_dim;         /* 0: n_embd / n_head; otherwise written as attention.key_length */
    int n_ff;
    int n_vocab;          /* >= 258 */
    int n_ctx;            /* context_length; 0 means 256 */
    ggml_type type;       /* F32, F16 or Q8_0 for the matrices; vectors are F32 */
    uint64_t seed;
    int tied_output;      /* no output.weight */
    int qkv_bias;         /* blk.N.attn_{q,k,v}.bias */
    int out_bias;         /* blk.N.attn_output.bias */
    int qk_norm;          /* blk.N.attn_{q,k}_norm.weight (head_dim each) */
    int rope_freqs;       /* rope_freqs.weight: random divisors in [1, 8) */
    int llama3_keys;      /* rope.scaling.type "llama3" with factor 8, low 1, high 4, original 64 */
    float rope_freq_base; /* 0 means 10000 */
    float rms_eps;        /* 0 means 1e-5 */
    int fast_random;      /* Q8_0 only: random blocks written directly (real-size models) */
    int n_swa;            /* attention.sliding_window (gemma3, phi3); gemma3's post-norms are
                             always written */
    /* phi3: attn_qkv (q, k, v rows stacked) unless separate_qkv, and ffn_up
     * of 2 n_ff rows (gate, then up) instead of ffn_gate + ffn_up */
    int separate_qkv;
    int n_rot;            /* > 0: rope.dimension_count (partial rotation) */
    int longrope;         /* rope_factors_long.weight, random divisors in [1, 8), and
                             rope_factors_short.weight, in [1, 1.5) */
    int n_ctx_orig;       /* > 0: rope.scaling.original_context_length */
    float attn_factor;    /* > 0: rope.scaling.attn_factor */
    const char *chat_template; /* tokenizer.chat_template when non-NULL */
} model_writer_params;

/* Returns 0, or -1 for impossible parameters or a write error. */
int model_writer_write(const char *path, const model_writer_params *p);

/* The small configs of test_stage.c and test_split.c: 64 wide, 4 layers
 * (gemma3: 7, so that layer 5 is the global one), 300 tokens, with each
 * architecture's features on: llama rope_freqs; qwen2 q/k/v biases, tied,
 * base 1e6; qwen3 q/k norms with head_dim 32; gemma3 window 4, one kv head;
 * phi3 the long LongRoPE set with attn_factor and 12 of 16 dims rotated. */
model_writer_params model_writer_small(const char *arch, ggml_type type, uint64_t seed);

/* Writes to dst the file src with all its metadata and only the tensors
 * keep(ctx, name) accepts (a partial file, as a peer fetch of some layers
 * writes one), through the production writer (engine/gguf_write.h).
 * Returns 0, or -1 with a message on stderr. */
int model_writer_copy(const char *src, const char *dst, int (*keep)(void *ctx, const char *name),
                      void *ctx);

#endif
