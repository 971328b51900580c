/* model.h: the architectures the engine runs (llama, mistral as llama,
 * qwen2, qwen3, phi3, gemma3): their configuration, their weights (zero-copy views
 * into a GGUF file) and their forward pass over a KV cache.
 *
 * A `model` is the immutable part (config + weights) and may be shared; a
 * `model_state` is one sequence's KV cache plus scratch buffers. Tokens are
 * appended to a state in batches of any size; the logits of a token depend
 * only on the tokens before it, never on how they were batched, nor on the
 * thread count (see kernels.h on determinism).
 * Not here: tokenization (tokenizer.h), sampling (sampler.h), generation
 * loops (engine.c). Other architectures are refused at load with a message.
 *
 * Threading: a model may be read by any number of threads. A model_state is
 * used by one thread at a time; model_forward runs its products on the given
 * pool (one forward per pool at a time). */
#ifndef LLMESH_MODEL_H
#define LLMESH_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "engine/gguf.h"
#include "lib/threadpool.h"

/* The architectures model_load accepts (general.architecture). The llama
 * family (llama, qwen2, qwen3, phi3) shares one forward pass; what differs is
 * switched on by the weights present (q/k/v biases, per-head q/k norms, RoPE
 * factors) and by rope_neox; phi3's fused tensors are split into views at
 * load. gemma3 has its own. See docs/engine.md. */
typedef enum {
    MODEL_ARCH_LLAMA = 0, /* "llama": Llama 1-3, Mistral, ...; NORM RoPE, optional biases */
    MODEL_ARCH_QWEN2,     /* "qwen2": q/k/v biases, NEOX RoPE */
    MODEL_ARCH_QWEN3,     /* "qwen3": per-head q/k RMSNorm before RoPE, NEOX RoPE */
    MODEL_ARCH_GEMMA3,    /* "gemma3": scaled embeddings, post-norms, GELU, sliding window */
    MODEL_ARCH_PHI3,      /* "phi3": fused qkv and gate/up tensors, NEOX RoPE, LongRoPE factors */
    MODEL_ARCH_COUNT
} model_arch;

const char *model_arch_name(model_arch a);

typedef struct {
    model_arch arch;
    int n_vocab;
    int n_embd;       /* model width */
    int n_layer;
    int n_head;       /* query heads */
    int n_head_kv;    /* key/value heads (grouped-query attention when < n_head) */
    int head_dim;     /* {arch}.attention.key_length, default n_embd / n_head; q is
                         n_head * head_dim wide, which may differ from n_embd (qwen3) */
    int n_ff;         /* feed-forward hidden width */
    int n_ctx_train;  /* {arch}.context_length */
    int n_rot;        /* leading dimensions of each head that RoPE rotates */
    int rope_neox;    /* 1: rotate (x[j], x[j + n_rot/2]) (NEOX); 0: (x[2j], x[2j+1]) */
    float norm_eps;   /* RMSNorm epsilon */
    float rope_base;  /* RoPE frequency base */
    float rope_scale; /* positions are divided by this (linear RoPE scaling; 1 = none) */
    float rope_attn_factor; /* {arch}.rope.scaling.attn_factor (default 1): RoPE's cos and sin are
                               multiplied by it, so q.k by its square (phi3 LongRoPE) */
    int n_ctx_orig;   /* phi3: rope.scaling.original_context_length (default n_ctx_train); a
                         state of more positions uses rope_factors_long, else _short */
    float attn_scale; /* q.k multiplier: 1/sqrt(head_dim), gemma3-27B 1/sqrt(n_embd/n_head) */
    int n_swa;        /* gemma3: local layers attend to the last n_swa positions; 0 = none */
    int swa_pattern;  /* gemma3: layer l is local unless l % swa_pattern == swa_pattern - 1 */
    float rope_base_swa; /* gemma3: RoPE base of local layers (their scale is 1) */
} model_config;

typedef struct model model;
typedef struct model_state model_state;

/* Reads the config and checks the shape and type of every tensor. The model
 * points into f's mapping: f must stay open until model_free. Returns NULL
 * with a message (naming the key or tensor at fault) in err. */
model *model_load(const gguf_file *f, char *err, size_t errlen);
void model_free(model *m);

const model_config *model_get_config(const model *m);
/* Bytes of the tensor data the model uses. */
uint64_t model_weight_bytes(const model *m);

/* A state holding up to n_ctx positions (n_ctx <= 0: the model's training
 * context). The KV cache is zero-filled memory from calloc, so pages that
 * are never reached are typically never touched. Returns NULL with a message
 * in err. The caller frees. */
model_state *model_state_new(const model *m, int n_ctx, char *err, size_t errlen);
void model_state_free(model_state *s);
int model_state_n_ctx(const model_state *s);
/* Positions already in the cache. */
int model_state_n_past(const model_state *s);
/* Forgets positions from n_past on (0 empties the cache). n_past must not
 * exceed the current count. */
void model_state_truncate(model_state *s, int n_past);

/* Appends n tokens to the state and computes their logits. With all_logits,
 * logits receives [n][n_vocab]; otherwise only the last token's [n_vocab].
 * Returns 0, or -1 with a message (token id out of range, context full). */
int model_forward(const model *m, model_state *s, threadpool *pool, const int32_t *tokens, int n,
                  float *logits, int all_logits, char *err, size_t errlen);

#endif
