/* sampler.h: picks the next token from a row of logits.
 *
 * Greedy (temperature <= 0: argmax, lowest id on ties) or random sampling
 * from softmax(logits / temperature), optionally restricted to the top_k most
 * likely tokens and then to the smallest set whose probability reaches top_p
 * (nucleus). Temperature is applied first, so top_p measures the tempered
 * distribution. The random numbers come from the sampler's own seeded
 * generator: the same seed and the same logits give the same tokens on every
 * machine and thread count.
 * Not here: repetition penalties, grammars, logit biases.
 *
 * Threading: a sampler is used by one thread at a time. */
#ifndef LLMESH_SAMPLER_H
#define LLMESH_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    float temperature; /* <= 0: greedy */
    int top_k;         /* <= 0 or >= n_vocab: off */
    float top_p;       /* >= 1: off; <= 0 keeps only the most likely token */
    uint64_t seed;
} sampler_params;

typedef struct sampler sampler;

/* Returns NULL on allocation failure or n_vocab < 1. The caller frees. */
sampler *sampler_new(int n_vocab, const sampler_params *p);
void sampler_free(sampler *s);

/* Picks a token id in [0, n_vocab) from logits[n_vocab] (not modified).
 * NaN logits are treated as -inf. */
int32_t sampler_sample(sampler *s, const float *logits);

/* Index of the largest value (lowest index on ties); NaN never wins. */
int32_t sampler_argmax(const float *logits, int n);

/* The generator itself, exposed for tests: a uniform float in [0, 1). */
float sampler_random(sampler *s);

#endif
