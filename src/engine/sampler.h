/* sampler.h: picks the next token from a row of logits.
 *
 * Order of the steps (docs/engine.md explains the choice):
 *   1. penalties on a copy of the logits: repetition (CTRL/llama.cpp style,
 *      over the last repeat_last_n accepted tokens, prompt included), then
 *      presence and frequency (OpenAI: l -= presence*(count > 0) +
 *      frequency*count, counting generated tokens only);
 *   2. logit_bias (added; -100 or below bans the token);
 *   3. greedy (temperature <= 0: argmax, lowest id on ties), or:
 *      temperature -> top_k -> top_p (on the tempered, top-k-renormalised
 *      distribution) -> min_p (drops tokens below min_p times the most
 *      likely one's probability) -> one uniform draw.
 * The random numbers come from the sampler's own seeded generator: the same
 * seed, logits and accepted tokens give the same tokens on every machine and
 * thread count.
 * Not here: grammars, DRY, typical sampling.
 *
 * Threading: a sampler is used by one thread at a time. */
#ifndef LLMESH_SAMPLER_H
#define LLMESH_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

/* A logit bias: bias is added to token's logit; <= SAMPLER_BAN_BIAS bans it. */
typedef struct {
    int32_t token;
    float bias;
} sampler_bias;

#define SAMPLER_BAN_BIAS (-100.0f)

/* Zero in every field after seed means "off", so {temp, k, p, seed} still
 * initialises a plain sampler. */
typedef struct {
    float temperature; /* <= 0: greedy */
    int top_k;         /* <= 0 or >= n_vocab: off */
    float top_p;       /* >= 1: off; <= 0 keeps only the most likely token */
    uint64_t seed;
    float min_p;              /* <= 0: off */
    float repeat_penalty;     /* <= 0 or 1: off; > 1 discourages repeats */
    int repeat_last_n;        /* window of accepted tokens; <= 0: 64 */
    float presence_penalty;   /* 0: off; may be negative (encourages) */
    float frequency_penalty;  /* 0: off; may be negative */
    const sampler_bias *bias; /* n_bias entries, copied by sampler_new */
    int n_bias;
} sampler_params;

typedef struct sampler sampler;

/* Returns NULL on allocation failure or n_vocab < 1. The caller frees.
 * Bias entries with a token outside [0, n_vocab) are ignored. */
sampler *sampler_new(int n_vocab, const sampler_params *p);
void sampler_free(sampler *s);

/* Picks a token id in [0, n_vocab) from logits[n_vocab] (not modified).
 * NaN logits are treated as -inf. */
int32_t sampler_sample(sampler *s, const float *logits);

/* Records a token as part of the sequence, for the penalties: prompt tokens
 * enter the repetition window only; generated ones also the presence and
 * frequency counts. Ids outside [0, n_vocab) are ignored. */
void sampler_accept(sampler *s, int32_t token, int generated);

/* Index of the largest value (lowest index on ties); NaN never wins. */
int32_t sampler_argmax(const float *logits, int n);

/* The generator itself, exposed for tests: a uniform float in [0, 1). */
float sampler_random(sampler *s);

#endif
