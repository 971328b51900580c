/* engine.h: the engine's face to the rest of llmesh.
 *
 * Loads a GGUF model (weights, config, tokenizer) and generates text. The
 * engine knows nothing about the network or HTTP: serve/ calls it from its
 * own worker thread. Finer-grained pieces (gguf.h, tokenizer.h, sampler.h,
 * model.h) are public to tests and to later modules (pipeline stages).
 *
 * Threading: engine_model_load/free on any thread. One engine_generate at a
 * time per model (the model owns one KV cache); the caller serialises. The
 * matrix products inside use the engine's thread pool. */
#ifndef LLMESH_ENGINE_H
#define LLMESH_ENGINE_H

#include <stddef.h>
#include <stdint.h>

typedef struct engine_model engine_model;

/* n_threads <= 0 means one per online CPU. */
engine_model *engine_model_load(const char *path, int n_threads, char *err, size_t errlen);
void engine_model_free(engine_model *m);

/* The model's id in the API: the file name without directory and ".gguf". */
const char *engine_model_id(const engine_model *m);
/* Bytes of weights mapped (the GGUF tensor data). */
uint64_t engine_model_bytes(const engine_model *m);
int engine_model_context_length(const engine_model *m);

typedef struct {
    float temperature;  /* 0 = greedy (argmax) */
    int top_k;          /* <= 0: off */
    float top_p;        /* >= 1: off */
    uint64_t seed;      /* same seed, same prompt, same params: same output */
    int max_tokens;     /* tokens to generate at most; generation also stops at EOS
                           or at the end of the context window */
} engine_sampling;

void engine_sampling_defaults(engine_sampling *s); /* temp 1, top_k 0, top_p 1, seed 0, max 16 */

/* Called with each new piece of text as it is produced. Pieces never split a
 * UTF-8 character (incomplete bytes are held back until the character is
 * complete). Return nonzero to stop generation (finish_reason "stop"). */
typedef int (*engine_piece_fn)(void *user, const char *piece, size_t len);

typedef struct {
    int prompt_tokens;
    int completion_tokens;
    const char *finish_reason; /* "stop" (EOS or callback) or "length" */
} engine_result;

/* Tokenizes prompt (BOS added when the model asks for it; no special-token
 * parsing), runs it, and samples up to max_tokens. Returns 0, or -1 with a
 * message in err (e.g. prompt longer than the context). */
int engine_generate(engine_model *m, const char *prompt, size_t prompt_len,
                    const engine_sampling *s, engine_piece_fn on_piece, void *user,
                    engine_result *result, char *err, size_t errlen);

/* ---- additions (engine.c) ---- */

/* Threads in the model's pool (the caller of engine_generate included). */
int engine_model_threads(const engine_model *m);

typedef struct {
    double perplexity;  /* exp(mean_nll) */
    double mean_nll;    /* nats per scored token */
    int scored_tokens;
    int chunks;
} engine_perplexity_result;

/* Perplexity of text, measured the way models/README.md describes: the text
 * is tokenized without BOS and without special-token parsing, cut into
 * consecutive chunks of n_ctx - 1 ids, each chunk is evaluated from an empty
 * KV cache with BOS in front, and every chunk token is scored given all
 * before it in its chunk. n_ctx <= 0 means 256 or the model's context if
 * smaller; a larger n_ctx than the model's is an error. Needs a BOS token.
 * Returns 0, or -1 with a message in err.
 * Same threading rule as engine_generate (it uses the model's KV cache). */
int engine_perplexity(engine_model *m, const char *text, size_t len, int n_ctx,
                      engine_perplexity_result *result, char *err, size_t errlen);

#endif
