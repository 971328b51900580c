/* model.h: the architectures the engine runs (llama, mistral as llama,
 * qwen2, qwen3, phi3, gemma3): their configuration, their weights (zero-copy views
 * into a GGUF file) and their forward pass over a KV cache.
 *
 * A `model` is the immutable part (config + weights) and may be shared; a
 * `model_state` is one sequence's KV cache plus scratch buffers. Tokens are
 * appended to a state in batches of any size; the logits of a token depend
 * only on the tokens before it, never on how they were batched, nor on the
 * thread count (see kernels.h on determinism).
 *
 * A model may be loaded as a part (model_part): a contiguous range of layers,
 * with or without the head (embeddings, final norm, classifier), so that a
 * pipeline of nodes can run one model between them. The forward pass comes
 * in three pieces (model_embed, model_forward_layers, model_output) that
 * model_forward chains for a whole model: solo is a pipeline of one stage,
 * and a split computes exactly the bits solo computes.
 * Not here: tokenization (tokenizer.h), sampling (sampler.h), generation
 * loops (engine.c), moving hidden states between nodes (serve/). Other
 * architectures are refused at load with a message.
 *
 * Threading: a model may be read by any number of threads. A model_state is
 * used by one thread at a time; the forward functions run their products on
 * the given pool (one forward call per pool at a time). */
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

/* Tokens per pass through the layers. A batch shares each weight row across
 * its tokens (see kernel_matmul), so bigger is faster up to the point where
 * the activations stop fitting in cache; a state's scratch buffers scale with
 * it. Callers that move hidden states between nodes send pieces of this size. */
#define MODEL_BATCH 64
/* {arch}.block_count above this is refused at load. */
#define MODEL_MAX_LAYERS 1024

/* Which part of a model a node runs: layers [first, end) and, with head, the
 * token embeddings and the output (final norm and classifier). The RoPE factor
 * tensors (rope_freqs, rope_factors_long/short) belong to every part: each
 * layer rotates q and k with them. 0 <= first < end <= n_layer. */
typedef struct {
    int first, end;
    int head;
} model_part;

/* Reads the config and checks the shape and type of every tensor. The model
 * points into f's mapping: f must stay open until model_free. Returns NULL
 * with a message (naming the key or tensor at fault) in err.
 * model_load is model_load_part with every layer and the head. */
model *model_load(const gguf_file *f, char *err, size_t errlen);
/* Only the part's tensors are looked up, checked and converted; tensors of
 * other layers may be absent (a partial file, as a peer fetch writes one:
 * the same metadata, a subset of the tensors) but every name in the file must
 * still be one the architecture has. A tensor of the part that is missing is
 * an error naming it. n_vocab is token_embd's row count when the file has
 * it, else tokenizer.ggml.tokens' count, else 0 (only without head). */
model *model_load_part(const gguf_file *f, const model_part *part, char *err, size_t errlen);
void model_free(model *m);

/* The part a file holds: the layers any of whose tensors are present (they
 * must be contiguous), with head when token_embd.weight is present. Does not
 * check that those layers are complete (model_load_part does). 0, or -1 with
 * a message (no layer at all, a gap, an unreadable config). */
int model_file_part(const gguf_file *f, model_part *out, char *err, size_t errlen);
/* Whether a part needs the tensor called name (n_layer: the model's): what a
 * partial file for that part must hold. Unknown names: 0. */
int model_part_has_tensor(const model_part *part, int n_layer, const char *name);

const model_config *model_get_config(const model *m);
const model_part *model_get_part(const model *m);
/* Bytes of the tensor data the model uses (its part's). */
uint64_t model_weight_bytes(const model *m);

/* ---- sizes, for placement: from the file's header alone, nothing loaded ---- */

typedef struct {
    model_config c;              /* n_vocab as model_load_part has it (0: unknown) */
    uint64_t head_bytes;         /* token_embd + output_norm + output (when not tied) */
    uint64_t rope_bytes;         /* RoPE factor tensors, which every part loads (a few KB) */
    uint64_t layer_bytes[MODEL_MAX_LAYERS]; /* (n_layer) tensor bytes of each layer */
    uint64_t kv_values_per_pos;  /* per layer per position: K and V (2 n_head_kv head_dim) */
    uint64_t scratch_bytes;      /* the largest matmul input conversion of one batch */
} model_sizes;

/* The element type of a state's KV cache. F16 (the default, as llama.cpp's)
 * halves the cache and the attention's memory traffic; keys and values are
 * rounded to fp16 once, when stored. F32 keeps the computed bits. */
typedef enum {
    MODEL_KV_F16 = 0,
    MODEL_KV_F32 = 1,
} model_kv_type;
#define MODEL_KV_TYPE_COUNT 2
const char *model_kv_type_name(model_kv_type t); /* "f16", "f32" */
/* The type called name ("f16", "f32"), or -1. */
int model_kv_type_from_name(const char *name);
/* Bytes of one cached key or value element. */
size_t model_kv_type_size(model_kv_type t);
/* Bytes of K and V per layer per position in a cache of type t. */
uint64_t model_kv_bytes_per_pos(const model_sizes *z, model_kv_type t);

/* Fills out from f's header and tensor table (the data is not read; the file
 * may be a partial one, whose absent layers then count 0 bytes). 0, or -1
 * with a message (bad config, unknown tensor). */
int model_sizes_read(const gguf_file *f, model_sizes *out, char *err, size_t errlen);
/* Bytes a node needs to run part with n_lanes states of n_ctx positions each
 * (n_ctx <= 0: context_length, which may be far more than the engine uses),
 * on n_threads threads: the part's weights (mapped) + its KV caches + each
 * state's scratch (batch buffers, attention rows, matmul scratch) and, with
 * head, what the engine keeps per lane (logits of one token and of a batch,
 * the token record, hidden states in flight). An estimate: it adds 1/16 and
 * 64 MiB for what it does not count (tokenizer and chat template, thread
 * stacks, allocator overhead, the GGUF metadata); see docs/engine.md. */
uint64_t model_part_need(const model_sizes *z, const model_part *part, int n_ctx,
                         model_kv_type kv_type, int n_lanes, int n_threads);

/* A state holding up to n_ctx positions (n_ctx <= 0: the model's training
 * context) of the model's part: a KV cache of kv_type for each of its
 * layers. Every stage of a pipeline must use the same kv_type for the split
 * to give solo's answers. The KV
 * cache is zero-filled memory from calloc, so pages that are never reached
 * are typically never touched. Every stage of a pipeline must use the same
 * n_ctx: phi3 picks its RoPE factors by the state's size. Returns NULL with
 * a message in err. The caller frees. */
model_state *model_state_new(const model *m, int n_ctx, model_kv_type kv_type, char *err,
                             size_t errlen);
void model_state_free(model_state *s);
int model_state_n_ctx(const model_state *s);
model_kv_type model_state_kv_type(const model_state *s);
/* Bytes the state has allocated (KV caches and scratch). */
uint64_t model_state_bytes(const model_state *s);
/* Positions already in the cache. */
int model_state_n_past(const model_state *s);
/* Forgets positions from n_past on (0 empties the cache). n_past must not
 * exceed the current count. */
void model_state_truncate(model_state *s, int n_past);
/* dst holds positions [0, n) of src's caches (n <= src's positions), and no
 * more: a copy of a shared prompt's keys and values, so another sequence
 * goes on from there without evaluating it. Both states of the same model
 * part, n_ctx and kv_type. src must not be written meanwhile (reading it is
 * fine: the copy only reads). */
void model_state_copy_prefix(model_state *dst, const model_state *src, int n);

/* Appends n tokens to the state and computes their logits. With all_logits,
 * logits receives [n][n_vocab]; otherwise only the last token's [n_vocab].
 * Needs a whole model (every layer and the head). Returns 0, or -1 with a
 * message (token id out of range, context full), the state unchanged.
 * = model_embed, model_forward_layers over every layer, model_output, one
 * batch of MODEL_BATCH at a time. */
int model_forward(const model *m, model_state *s, threadpool *pool, const int32_t *tokens, int n,
                  float *logits, int all_logits, char *err, size_t errlen);

/* ---- mixed batches: several sequences in one pass ---- */

/* The scratch of one forward batch (activations of up to MODEL_BATCH tokens,
 * attention rows, the classifier's rows): what model_forward_batch works in.
 * Used by one forward call at a time; the caller frees. NULL with a message. */
typedef struct model_batch model_batch;
model_batch *model_batch_new(const model *m, char *err, size_t errlen);
void model_batch_free(model_batch *b);

/* Where a batch's time goes (bench/step_bench's breakdown): with a table
 * of MODEL_PHASE_COUNT counters, every model_forward_batch on b adds each
 * phase's nanoseconds of its calling thread's CPU time, which is the
 * phase's wall time when nothing deschedules it (the caller spins while it
 * waits for the pool's last task, so a parallel phase's wait counts); NULL
 * stops it. Off by default; when on, one clock read (a system call) per phase. */
typedef enum {
    MODEL_PHASE_EMBED,      /* embedding rows and RoPE tables */
    MODEL_PHASE_NORM,       /* RMSNorms: attention and FFN inputs, the final one */
    MODEL_PHASE_QKV,        /* the q/k/v products (the input quantized included, as in each product) */
    MODEL_PHASE_ROPE_KV,    /* biases, per-head norms, RoPE, keys and values into the caches */
    MODEL_PHASE_ATTENTION,  /* softmax(q k^T) v over the caches */
    MODEL_PHASE_WO,         /* the attention's output product */
    MODEL_PHASE_GATE_UP,    /* the gate/up products */
    MODEL_PHASE_ACTIVATION, /* SwiGLU (GELU for gemma3) */
    MODEL_PHASE_DOWN,       /* the down product */
    MODEL_PHASE_RESIDUAL,   /* residual adds */
    MODEL_PHASE_CLASSIFIER, /* the output product over the rows that want logits */
    MODEL_PHASE_LOGITS,     /* the last rows' logits copied to their sequences */
    MODEL_PHASE_COUNT
} model_phase;
void model_batch_profile(model_batch *b, uint64_t *ns);

/* One sequence's share of a mixed batch: n tokens appended to state's cache
 * at positions n_past .. n_past + n - 1, and where their logits go: none
 * (logits NULL), the last token's (n_vocab), or with all_logits every
 * token's (n, n_vocab). */
typedef struct {
    model_state *state;
    const int32_t *tokens; /* (n) */
    int n;
    float *logits;
    int all_logits;
} model_seq;

/* One forward pass over the tokens of n_seq different sequences (at most
 * MODEL_BATCH tokens in all, each state once): every matrix product runs
 * over all the batch's tokens at once, so each weight row is read once per
 * step, and each token attends over its own sequence's cache. A token's
 * logits are bit-identical to those of its sequence run alone (each output
 * element is computed the same way whatever the batch: see kernels.h).
 * Needs a whole model. 0, or -1 with a message (a token id out of range, a
 * context full, too many tokens), every state unchanged. model_forward is
 * this with one sequence, MODEL_BATCH tokens at a time. */
int model_forward_batch(const model *m, model_batch *b, threadpool *pool, const model_seq *seqs,
                        int n_seq, char *err, size_t errlen);

/* ---- the pieces of the forward pass, for pipeline stages ---- */

/* x (n, n_embd) = the tokens' embeddings (gemma3's sqrt(n_embd) scaling
 * included). Needs the head. 0, or -1 with a message (token id out of range). */
int model_embed(const model *m, const int32_t *tokens, int n, float *x, char *err, size_t errlen);
/* Runs layers [first, end) (inside the model's part) over n hidden states at
 * positions n_past .. n_past + n - 1 of s: x (n, n_embd) in, the layers'
 * output out; appends their keys and values to those layers' caches and
 * advances n_past by n. Any n (MODEL_BATCH pieces inside). A state's cache
 * holds the layers of one range: while it holds positions (n_past > 0), a call
 * with another range is an error. 0, or -1 with a message (context full, n <=
 * 0, layers not loaded), the state unchanged. */
int model_forward_layers(const model *m, model_state *s, threadpool *pool, int first, int end,
                         float *x, int n, char *err, size_t errlen);
/* model_forward_layers over the hidden states of n_seq sequences at once
 * (at most MODEL_BATCH positions in all, each state once): x (sum of
 * counts, n_embd) holds counts[0] rows of states[0], then counts[1] of
 * states[1], and so on, each at its state's next positions. One pass of
 * every layer over the whole batch (weights read once); each row's output is
 * bit-identical to its sequence run alone. b is the scratch (any state's
 * model). 0, or -1 with a message, every state unchanged. */
int model_forward_layers_batch(const model *m, model_batch *b, threadpool *pool, int first, int end,
                               model_state *const *states, const int *counts, int n_seq, float *x,
                               char *err, size_t errlen);
/* logits (n, n_vocab) of final hidden states x (n, n_embd): the classifier
 * of rmsnorm(x) * output_norm. Needs the head; uses s's scratch only (its
 * cache is not read). 0, or -1 with a message. */
int model_output(const model *m, model_state *s, threadpool *pool, const float *x, int n,
                 float *logits, char *err, size_t errlen);
/* out (n, n_embd) = rmsnorm(x) * output_norm: the final hidden states as the
 * classifier sees them (embeddings). Needs the head. 0, or -1 with a message. */
int model_final_norm(const model *m, const float *x, int n, float *out, char *err, size_t errlen);

#endif
