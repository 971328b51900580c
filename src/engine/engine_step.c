/* engine_step.c: continuous batching for solo models. Every lane's thread
 * (one request each) hands its evaluations to a shared queue, and one forward
 * pass (model_forward_batch) takes, per step, the next token of every
 * generating lane plus a chunk of a prompt, so the weights are read once per
 * step for all of them. Not here: sampling, stop strings, log-probabilities
 * (engine.c runs them per lane, unchanged), a split's evaluation (engine.c's
 * eval_split: its lanes wait on the network, not on each other).
 *
 * Why a combining queue and not a scheduler loop: each request keeps its own
 * straight-line generation loop on its own thread (engine_run_lane), and
 * only the forward pass is shared. Whoever arrives when no step is running
 * becomes the leader and runs steps until its own job is done, then hands
 * over to a waiting thread. A new request joins at the next step; a finished
 * one leaves at once. A token's logits are bit-identical whatever else is in
 * its step (model_forward_batch's guarantee), so batching changes no answer.
 *
 * Step composition: decode tokens first (one per generating lane, in queue
 * order), then prompt chunks in queue order up to MODEL_BATCH tokens in
 * all, so a long prompt advances by pieces while the others keep producing
 * tokens. Before a step the leader waits for generating lanes that have not
 * queued their next token yet (they are sampling), at most
 * ENGINE_STEP_GATHER_US: without the wait, the first lane back would run a
 * step alone and the steps would alternate between halves of the batch. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "engine/engine_private.h"

/* How long a step waits for generating lanes to queue their next token. A
 * lane samples and delivers its text in well under this (the loop of
 * engine_run_lane between two evaluations); a lane slower than that (a
 * client's debug delay, a descheduled thread) joins the step after. */
#define ENGINE_STEP_GATHER_US 2000

struct engine_step_job {
    int lane;
    int pos;      /* next position of the lane's record to evaluate */
    int from;     /* positions before from are a replay: no logits */
    int end;      /* evaluate up to here (exclusive) */
    float *all;   /* (end - from, n_vocab) every new position's logits, or NULL: the last's */
    int take;     /* positions this step takes (leader only) */
    int done, rc;
    char err[256];
    engine_step_job *next;
};

int engine_step_init(engine_model *m, char *err, size_t errlen)
{
    pthread_mutex_init(&m->step_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->step_cond, &ca);
    pthread_condattr_destroy(&ca);
    m->step_batch = model_batch_new(m->model, err, errlen);
    return m->step_batch ? 0 : -1;
}

void engine_step_destroy(engine_model *m)
{
    model_batch_free(m->step_batch);
    pthread_cond_destroy(&m->step_cond);
    pthread_mutex_destroy(&m->step_lock);
}

void engine_step_set_decoding(engine_model *m, int lane, int decoding)
{
    pthread_mutex_lock(&m->step_lock);
    m->lanes[lane].decoding = decoding;
    pthread_cond_broadcast(&m->step_cond); /* a gathering leader stops waiting for it */
    pthread_mutex_unlock(&m->step_lock);
}

void engine_model_step_stats(engine_model *m, engine_step_stats *out)
{
    pthread_mutex_lock(&m->step_lock);
    *out = m->step_stats;
    pthread_mutex_unlock(&m->step_lock);
}

/* A generating lane without a queued job: the step should wait for it. */
static int lane_missing_locked(const engine_model *m)
{
    for (int i = 0; i < m->n_lanes; i++)
        if (m->lanes[i].decoding && !m->lanes[i].queued) return 1;
    return 0;
}

/* Picks this step's jobs and their pieces; returns the count in seqs. */
static int step_compose_locked(engine_model *m, model_seq *seqs, engine_step_job **jobs)
{
    int n_vocab = model_get_config(m->model)->n_vocab;
    int budget = MODEL_BATCH, n = 0;
    for (int pass = 0; pass < 2; pass++) { /* 0: single tokens (decoding), 1: prompt chunks */
        for (engine_step_job *j = m->step_head; j && budget > 0; j = j->next) {
            int left = j->end - j->pos;
            if ((pass == 0) != (left == 1) || j->take) continue;
            int limit = j->pos < j->from ? j->from : j->end; /* a piece is all replay or all new */
            int take = limit - j->pos < budget ? limit - j->pos : budget;
            engine_lane *ln = &m->lanes[j->lane];
            float *logits = NULL;
            if (j->all && j->pos >= j->from) logits = j->all + (size_t)(j->pos - j->from) * n_vocab;
            else if (!j->all && j->pos + take == j->end) logits = ln->logits;
            j->take = take;
            budget -= take;
            jobs[n] = j;
            seqs[n++] = (model_seq){.state = ln->state, .tokens = ln->cached + j->pos, .n = take,
                                    .logits = logits, .all_logits = j->all != NULL && logits != NULL};
        }
    }
    return n;
}

/* One step, entered and left with step_lock held (released while computing). */
static void step_run_locked(engine_model *m)
{
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_nsec += ENGINE_STEP_GATHER_US * 1000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    while (lane_missing_locked(m))
        if (pthread_cond_timedwait(&m->step_cond, &m->step_lock, &deadline) == ETIMEDOUT) break;

    model_seq seqs[MODEL_BATCH];
    engine_step_job *jobs[MODEL_BATCH];
    int n = step_compose_locked(m, seqs, jobs);
    if (n == 0) return; /* cannot happen while the leader's own job waits */
    pthread_mutex_unlock(&m->step_lock);

    char err[256] = "";
    pthread_mutex_lock(&m->compute);
    int rc = model_forward_batch(m->model, m->step_batch, m->pool, seqs, n, err, sizeof err);
    pthread_mutex_unlock(&m->compute);

    pthread_mutex_lock(&m->step_lock);
    m->step_stats.steps++;
    m->step_stats.seqs += (uint64_t)n;
    for (int i = 0; i < n; i++) {
        engine_step_job *j = jobs[i];
        m->step_stats.tokens += (uint64_t)j->take;
        if (j->take == 1 && j->end - j->pos == 1) m->step_stats.decode_tokens++;
        if (rc != 0) {
            j->rc = -1;
            snprintf(j->err, sizeof j->err, "%s", err);
            j->done = 1;
        } else {
            j->pos += j->take;
            j->done = j->pos == j->end;
        }
        j->take = 0;
    }
    /* unlink the finished jobs */
    engine_step_job **pp = &m->step_head;
    m->step_tail = NULL;
    while (*pp) {
        if ((*pp)->done) {
            m->lanes[(*pp)->lane].queued = 0;
            *pp = (*pp)->next;
        } else {
            m->step_tail = *pp;
            pp = &(*pp)->next;
        }
    }
    pthread_cond_broadcast(&m->step_cond);
}

int engine_step_eval(engine_model *m, int lane, int start, int from, int n, float *all, char *err,
                     size_t errlen)
{
    engine_step_job job = {.lane = lane, .pos = start, .from = from, .end = n, .all = all};
    if (start >= n) return 0;
    pthread_mutex_lock(&m->step_lock);
    if (m->step_tail) m->step_tail->next = &job;
    else m->step_head = &job;
    m->step_tail = &job;
    m->lanes[lane].queued = 1;
    pthread_cond_broadcast(&m->step_cond); /* a gathering leader may be waiting for us */
    while (!job.done) {
        if (!m->step_leader) {
            m->step_leader = 1;
            while (!job.done) step_run_locked(m);
            m->step_leader = 0;
            pthread_cond_broadcast(&m->step_cond); /* a waiting job's thread takes over */
        } else {
            pthread_cond_wait(&m->step_cond, &m->step_lock);
        }
    }
    pthread_mutex_unlock(&m->step_lock);
    if (job.rc != 0) snprintf(err, errlen, "%s", job.err);
    return job.rc;
}
