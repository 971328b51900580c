/* sampler.c: see sampler.h.
 *
 * The generator is splitmix64: 64 bits of state, a full period, good enough
 * statistics for sampling, and trivially the same on every platform. */
#include "engine/sampler.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>

typedef struct {
    float value; /* tempered logit, then probability */
    int32_t id;
} candidate;

struct sampler {
    int n_vocab;
    sampler_params p;
    uint64_t rng;
    candidate *cand; /* n_vocab */
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
    if (n_vocab < 1) return NULL;
    sampler *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->cand = malloc((size_t)n_vocab * sizeof *s->cand);
    if (!s->cand) {
        free(s);
        return NULL;
    }
    s->n_vocab = n_vocab;
    s->p = *p;
    s->rng = p->seed;
    return s;
}

void sampler_free(sampler *s)
{
    if (!s) return;
    free(s->cand);
    free(s);
}

float sampler_random(sampler *s)
{
    return (float)(splitmix64_next(&s->rng) >> 40) * (1.0f / 16777216.0f); /* 24 bits */
}

int32_t sampler_argmax(const float *logits, int n)
{
    int32_t best = 0;
    float best_value = -INFINITY;
    for (int i = 0; i < n; i++) {
        if (logits[i] > best_value) { /* strict: the lowest id wins ties; NaN never compares */
            best_value = logits[i];
            best = i;
        }
    }
    return best;
}

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

    double r = (double)sampler_random(s) * total, cum = 0;
    for (int i = 0; i < n_cand; i++) {
        cum += cand[i].value;
        if (r < cum) return cand[i].id;
    }
    return cand[n_cand - 1].id; /* r landed in the rounding slack at the end */
}
