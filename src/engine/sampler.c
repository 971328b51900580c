/* sampler.c: see sampler.h.
 *
 * The generator is splitmix64: 64 bits of state, a full period, good enough
 * statistics for sampling, and trivially the same on every platform.
 * Penalties and biases work on a private copy of the logits, so the caller's
 * row stays the model's own distribution (the engine reports log-
 * probabilities from it). */
#include "engine/sampler.h"

#include "engine/kernels.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SAMPLER_DEFAULT_LAST_N 64
#define SAMPLER_MAX_LAST_N 4096

typedef struct {
    float value; /* tempered logit, then probability */
    int32_t id;
} candidate;

struct sampler {
    int n_vocab;
    sampler_params p;
    uint64_t rng;
    candidate *cand;   /* (n_vocab) */
    float *work;       /* (n_vocab) the logits after penalties and biases */
    sampler_bias *bias; /* (n_bias) valid entries only */
    int n_bias;
    int modifies;      /* some penalty or bias is on: sample from work */
    /* Repetition window: the last last_n accepted tokens, a ring. */
    int32_t *window;   /* (last_n) */
    int last_n, n_window, window_pos;
    uint32_t *stamp;   /* (n_vocab) de-duplicates the window per sample */
    uint32_t stamp_now;
    /* Presence/frequency: counts of generated tokens, and which ids have one. */
    int *count;        /* (n_vocab) */
    int32_t *seen;     /* (n_vocab) ids with count > 0, in first-seen order */
    int n_seen;
};

static uint64_t splitmix64_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

sampler *sampler_new(int n_vocab, const sampler_params *p)
{
    if (n_vocab < 1 || p->n_bias < 0) return NULL;
    sampler *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->n_vocab = n_vocab;
    s->p = *p;
    s->p.bias = NULL; /* the copy below is ours; the caller's may go away */
    s->rng = p->seed;
    s->last_n = p->repeat_last_n > 0 ? p->repeat_last_n : SAMPLER_DEFAULT_LAST_N;
    if (s->last_n > SAMPLER_MAX_LAST_N) s->last_n = SAMPLER_MAX_LAST_N;
    s->cand = malloc((size_t)n_vocab * sizeof *s->cand);
    s->work = malloc((size_t)n_vocab * sizeof *s->work);
    s->bias = malloc(((size_t)p->n_bias + 1) * sizeof *s->bias);
    s->window = malloc((size_t)s->last_n * sizeof *s->window);
    s->stamp = calloc((size_t)n_vocab, sizeof *s->stamp);
    s->count = calloc((size_t)n_vocab, sizeof *s->count);
    s->seen = malloc((size_t)n_vocab * sizeof *s->seen);
    if (!s->cand || !s->work || !s->bias || !s->window || !s->stamp || !s->count || !s->seen) {
        sampler_free(s);
        return NULL;
    }
    for (int i = 0; i < p->n_bias; i++)
        if (p->bias[i].token >= 0 && p->bias[i].token < n_vocab && isfinite(p->bias[i].bias))
            s->bias[s->n_bias++] = p->bias[i];
    int repeat_on = p->repeat_penalty > 0 && p->repeat_penalty != 1.0f;
    s->modifies = repeat_on || p->presence_penalty != 0 || p->frequency_penalty != 0 || s->n_bias > 0;
    if (!repeat_on) s->last_n = 0;
    return s;
}

void sampler_free(sampler *s)
{
    if (!s) return;
    free(s->cand);
    free(s->work);
    free(s->bias);
    free(s->window);
    free(s->stamp);
    free(s->count);
    free(s->seen);
    free(s);
}

void sampler_accept(sampler *s, int32_t token, int generated)
{
    if (token < 0 || token >= s->n_vocab) return;
    if (s->last_n > 0) {
        s->window[s->window_pos] = token;
        s->window_pos = (s->window_pos + 1) % s->last_n;
        if (s->n_window < s->last_n) s->n_window++;
    }
    if (generated && s->count[token]++ == 0) s->seen[s->n_seen++] = token;
}

/* Steps 1 and 2 of sampler.h on s->work. */
static void apply_penalties_and_bias(sampler *s, const float *logits)
{
    const sampler_params *p = &s->p;
    float *w = s->work;
    memcpy(w, logits, sizeof(float) * (size_t)s->n_vocab);
    if (s->n_window > 0) {
        /* Each distinct token once, however often it occurs in the window. */
        if (++s->stamp_now == 0) { /* wrapped: old stamps could collide */
            memset(s->stamp, 0, sizeof(uint32_t) * (size_t)s->n_vocab);
            s->stamp_now = 1;
        }
        for (int i = 0; i < s->n_window; i++) {
            int32_t t = s->window[i];
            if (s->stamp[t] == s->stamp_now) continue;
            s->stamp[t] = s->stamp_now;
            w[t] = w[t] > 0 ? w[t] / p->repeat_penalty : w[t] * p->repeat_penalty;
        }
    }
    if (p->presence_penalty != 0 || p->frequency_penalty != 0)
        for (int i = 0; i < s->n_seen; i++) {
            int32_t t = s->seen[i];
            w[t] -= p->presence_penalty + p->frequency_penalty * (float)s->count[t];
        }
    for (int i = 0; i < s->n_bias; i++) {
        int32_t t = s->bias[i].token;
        w[t] = s->bias[i].bias <= SAMPLER_BAN_BIAS ? -INFINITY : w[t] + s->bias[i].bias;
    }
}

float sampler_random(sampler *s)
{
    return (float)(splitmix64_next(&s->rng) >> 40) * (1.0f / 16777216.0f); /* 24 bits */
}

/* strict: the lowest id wins ties; NaN never compares (kernels.c, vectorized) */
int32_t sampler_argmax(const float *logits, int n) { return kernel_argmax(logits, n); }

/* a ranks before b: more likely, then lower id (a total, deterministic order). */
static int ranks_before(const candidate *a, const candidate *b)
{
    return a->value > b->value || (a->value == b->value && a->id < b->id);
}

static int compare_rank(const void *pa, const void *pb)
{
    const candidate *a = pa, *b = pb;
    if (ranks_before(a, b)) return -1;
    if (ranks_before(b, a)) return 1;
    return 0;
}

/* Min-heap on rank (the worst candidate at the root), for top-k selection. */
static void heap_sift_down(candidate *h, int n, int i)
{
    for (;;) {
        int worst = i, l = 2 * i + 1, r = l + 1;
        if (l < n && ranks_before(&h[worst], &h[l])) worst = l;
        if (r < n && ranks_before(&h[worst], &h[r])) worst = r;
        if (worst == i) return;
        candidate t = h[i];
        h[i] = h[worst];
        h[worst] = t;
        i = worst;
    }
}

/* Keeps the k best of cand[0..n) in cand[0..k), unordered. O(n log k). */
static void select_top_k(candidate *cand, int n, int k)
{
    for (int i = k / 2 - 1; i >= 0; i--) heap_sift_down(cand, k, i);
    for (int i = k; i < n; i++) {
        if (ranks_before(&cand[i], &cand[0])) {
            cand[0] = cand[i];
            heap_sift_down(cand, k, 0);
        }
    }
}

int32_t sampler_sample(sampler *s, const float *logits)
{
    const sampler_params *p = &s->p;
    int n = s->n_vocab;
    if (s->modifies) {
        apply_penalties_and_bias(s, logits);
        logits = s->work;
    }
    if (p->temperature <= 0 || p->top_k == 1 || p->top_p <= 0) return sampler_argmax(logits, n);

    int32_t best = sampler_argmax(logits, n);
    float max = logits[best];
    if (!isfinite(max)) return best; /* all -inf/NaN, or a +inf that takes everything */

    candidate *cand = s->cand;
    for (int i = 0; i < n; i++) {
        cand[i].id = i;
        cand[i].value = isnan(logits[i]) ? -INFINITY : logits[i];
    }
    int n_cand = n;
    if (p->top_k > 0 && p->top_k < n) {
        select_top_k(cand, n, p->top_k);
        n_cand = p->top_k;
    }

    /* Tempered softmax, written as exp((l - max) / T) so that a tiny T cannot
     * overflow: the exponent is never positive. */
    double total = 0;
    for (int i = 0; i < n_cand; i++) {
        cand[i].value = expf((cand[i].value - max) / p->temperature);
        total += cand[i].value;
    }
    assert(total >= 1.0); /* the argmax contributes exp(0) */

    if (p->top_p < 1.0f) {
        /* Tokens below (1 - top_p) / (n_cand - 1) of the mass can never be in
         * the nucleus: together they weigh less than 1 - top_p. Dropping them
         * before the sort keeps it short on large vocabularies. */
        if (n_cand > 1) {
            double cutoff = (1.0 - p->top_p) / (n_cand - 1) * total;
            if (cutoff > 1.0) cutoff = 1.0; /* never drop the most likely token (value 1) */
            int kept = 0;
            for (int i = 0; i < n_cand; i++)
                if (cand[i].value >= cutoff) cand[kept++] = cand[i];
            n_cand = kept;
        }
        assert(n_cand >= 1);
        qsort(cand, (size_t)n_cand, sizeof *cand, compare_rank);
        double need = p->top_p * total, cum = 0;
        int kept = 0;
        while (kept < n_cand) {
            cum += cand[kept++].value;
            if (cum >= need) break;
        }
        n_cand = kept;
        total = cum;
    }

    /* min_p: values are exp((l - max) / T), the most likely token's is 1, so
     * a token's probability relative to the best one is its value. The best
     * token is always kept (top-k and top-p keep it too). */
    if (p->min_p > 0) {
        int kept = 0;
        total = 0;
        for (int i = 0; i < n_cand; i++)
            if (cand[i].value >= p->min_p || cand[i].value == 1.0f) {
                total += cand[i].value;
                cand[kept++] = cand[i];
            }
        n_cand = kept;
        assert(n_cand >= 1);
    }

    double r = (double)sampler_random(s) * total, cum = 0;
    for (int i = 0; i < n_cand; i++) {
        cum += cand[i].value;
        if (r < cum) return cand[i].id;
    }
    return cand[n_cand - 1].id; /* r landed in the rounding slack at the end */
}
