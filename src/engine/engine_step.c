/* engine_step.c: continuous batching, solo and split. Every lane's thread
 * (one request each) hands its evaluations to a shared queue, and one forward
 * pass takes, per step, the next token of every generating lane plus a chunk
 * of a prompt, so the weights are read once per step for all of them. Solo:
 * model_forward_batch. Split: the step's tokens are embedded and run through
 * layers [0, local_end) here in one pass, handed to the tail as one send
 * (one FORWARD carrying every lane's piece), and the lanes that asked for
 * rows receive them and classify them here. Not here: sampling, stop
 * strings, log-probabilities (engine.c runs them per lane, unchanged), the
 * resume and replay of a broken split (engine.c's lane_evaluate).
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
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine_private.h"
#include "lib/clock.h"

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
    float *rows;  /* split only: (end - from, n_embd) every new position's final normed hidden
                     state instead of logits (embeddings), or NULL */
    engine_split split; /* where its layers run (the snapshot its lane took) */
    int take;     /* positions this step takes (leader only) */
    int done, rc; /* rc: 0, -1 or ENGINE_TAIL_BROKEN */
    char err[256];
    pthread_cond_t cond; /* its thread waits here: done, or leader wanted */
    engine_step_job *next;
};

int engine_step_init(engine_model *m, char *err, size_t errlen)
{
    pthread_mutex_init(&m->step_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->step_cond, &ca); /* the leader gathering: a lane queued or stopped decoding */
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
    if (!decoding) pthread_cond_signal(&m->step_cond); /* a gathering leader stops waiting for it */
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

/* Picks this step's jobs and their pieces; returns the count in seqs. The
 * jobs of one step share a split generation (the first job picked sets it):
 * a lane that took its snapshot before an engine_set_split waits for a step
 * of its own. */
static int step_compose_locked(engine_model *m, model_seq *seqs, engine_step_job **jobs)
{
    int n_vocab = model_get_config(m->model)->n_vocab, n_embd = model_get_config(m->model)->n_embd;
    int budget = MODEL_BATCH, n = 0, singles = 0, max_singles = MODEL_BATCH;
    for (int pass = 0; pass < 2; pass++) { /* 0: single tokens (decoding), 1: prompt chunks */
        for (engine_step_job *j = m->step_head; j && budget > 0; j = j->next) {
            int left = j->end - j->pos;
            if ((pass == 0) != (left == 1) || j->take) continue;
            if (n > 0 && j->split.generation != jobs[0]->split.generation) continue;
            if (n == 0 && j->split.has_tail && j->split.tail.depth > 1) {
                /* A split with several steps in flight: the generating lanes
                 * in as many steps, so that the stages work on them in turn. */
                int decoding = 0;
                for (int i = 0; i < m->n_lanes; i++) decoding += m->lanes[i].decoding;
                max_singles = (decoding + j->split.tail.depth - 1) / j->split.tail.depth;
                if (max_singles < 1) max_singles = 1;
            }
            if (pass == 0 && singles == max_singles) continue;
            singles += pass == 0;
            int limit = j->pos < j->from ? j->from : j->end; /* a piece is all replay or all new */
            int take = limit - j->pos < budget ? limit - j->pos : budget;
            engine_lane *ln = &m->lanes[j->lane];
            float *logits = NULL;
            if (j->rows && j->pos >= j->from) logits = j->rows + (size_t)(j->pos - j->from) * n_embd;
            else if (j->all && j->pos >= j->from) logits = j->all + (size_t)(j->pos - j->from) * n_vocab;
            else if (!j->all && !j->rows && j->pos + take == j->end) logits = ln->logits;
            j->take = take;
            budget -= take;
            jobs[n] = j;
            seqs[n++] = (model_seq){.state = ln->state, .tokens = ln->cached + j->pos, .n = take,
                                    .logits = logits, .all_logits = (j->all || j->rows) && logits != NULL};
        }
    }
    return n;
}

/* A split step (no lock held): embed every piece, run layers [0, local_end)
 * here over all of them in one pass (into hidden, the leader's), hand them to the tail as one send, then
 * for each piece that asked rows receive them and classify them. rcs[i]
 * (0, -1 or ENGINE_TAIL_BROKEN) and errs[i] per job: one lane's failure
 * (a stage's FAIL) does not fail the others. */
static void step_split(engine_model *m, float *hidden, const engine_split *sp, const model_seq *seqs,
                       engine_step_job **jobs, int n, int *rcs, char (*errs)[256])
{
    const model_config *c = model_get_config(m->model);
    const model_part *part = model_get_part(m->model);
    engine_tail_piece pieces[MODEL_BATCH];
    model_state *states[MODEL_BATCH];
    int counts[MODEL_BATCH];
    char err[256] = "";
    int rc = 0;
    if (sp->local_end > part->end) {
        snprintf(err, sizeof err, "the split runs layers [0, %d) here but only [0, %d) are loaded",
                 sp->local_end, part->end);
        rc = -1;
    }
    pthread_mutex_lock(&m->compute);
    uint64_t t0 = clock_us();
    for (int i = 0, i0 = 0; i < n && rc == 0; i0 += seqs[i].n, i++) {
        rc = model_embed(m->model, seqs[i].tokens, seqs[i].n, hidden + (size_t)i0 * c->n_embd,
                         err, sizeof err);
        states[i] = seqs[i].state;
        counts[i] = seqs[i].n;
        pieces[i] = (engine_tail_piece){.lane = jobs[i]->lane, .pos = jobs[i]->pos, .n = seqs[i].n,
                                        .rows = !seqs[i].logits       ? ENGINE_ROWS_NONE
                                                : seqs[i].all_logits ? ENGINE_ROWS_ALL
                                                                     : ENGINE_ROWS_LAST};
    }
    if (rc == 0 && sp->local_end > 0)
        rc = model_forward_layers_batch(m->model, m->step_batch, m->pool, 0, sp->local_end, states,
                                        counts, n, hidden, err, sizeof err);
    uint64_t local_us = clock_us() - t0;
    pthread_mutex_unlock(&m->compute);
    if (rc == 0) rc = sp->tail.send(sp->tail.ctx, pieces, n, hidden, local_us, err, sizeof err);
    for (int i = 0; i < n; i++) {
        rcs[i] = rc == ENGINE_TAIL_BROKEN ? rc : rc != 0 ? -1 : pieces[i].broken ? ENGINE_TAIL_BROKEN : 0;
        snprintf(errs[i], sizeof errs[i], "%s", err);
    }
    if (rc != 0) return;
    for (int i = 0; i < n; i++) {
        if (rcs[i] != 0 || pieces[i].rows == ENGINE_ROWS_NONE) continue;
        engine_lane *ln = &m->lanes[pieces[i].lane];
        int n_rows = pieces[i].rows == ENGINE_ROWS_ALL ? pieces[i].n : 1;
        int r = sp->tail.receive(sp->tail.ctx, pieces[i].lane, ln->rows, n_rows, errs[i], sizeof errs[i]);
        if (r == 0 && jobs[i]->rows) { /* an embedding: the hidden states as the classifier sees them */
            r = model_final_norm(m->model, ln->rows, n_rows, seqs[i].logits, errs[i], sizeof errs[i]);
        } else if (r == 0) {
            pthread_mutex_lock(&m->compute);
            r = model_output(m->model, ln->state, m->pool, ln->rows, n_rows, seqs[i].logits, errs[i],
                             sizeof errs[i]);
            pthread_mutex_unlock(&m->compute);
        }
        rcs[i] = r == 0 || r == ENGINE_TAIL_BROKEN ? r : -1;
    }
}

/* One step led by lane's thread, entered and left with step_lock held
 * (released while computing). Returns the jobs in it; 0 when every queued
 * job is in another leader's step. */
static int step_run_locked(engine_model *m, int lane)
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
    if (n == 0) return 0;
    pthread_mutex_unlock(&m->step_lock);

    int rcs[MODEL_BATCH];
    char errs[MODEL_BATCH][256];
    const engine_split *sp = &jobs[0]->split;
    if (sp->has_tail) {
        step_split(m, m->lanes[lane].hidden, sp, seqs, jobs, n, rcs, errs);
    } else {
        pthread_mutex_lock(&m->compute);
        rcs[0] = model_forward_batch(m->model, m->step_batch, m->pool, seqs, n, errs[0], sizeof errs[0]);
        pthread_mutex_unlock(&m->compute);
        for (int i = 1; i < n; i++) {
            rcs[i] = rcs[0];
            memcpy(errs[i], errs[0], sizeof errs[0]);
        }
    }

    pthread_mutex_lock(&m->step_lock);
    m->step_stats.steps++;
    m->step_stats.seqs += (uint64_t)n;
    for (int i = 0; i < n; i++) {
        engine_step_job *j = jobs[i];
        m->step_stats.tokens += (uint64_t)j->take;
        if (j->take == 1 && j->end - j->pos == 1) m->step_stats.decode_tokens++;
        if (rcs[i] != 0) {
            j->rc = rcs[i];
            snprintf(j->err, sizeof j->err, "%s", errs[i]);
            j->done = 1;
        } else {
            j->pos += j->take;
            j->done = j->pos == j->end;
        }
        j->take = 0;
    }
    /* unlink the finished jobs and wake their threads (one each: no herd) */
    engine_step_job **pp = &m->step_head;
    m->step_tail = NULL;
    while (*pp) {
        engine_step_job *j = *pp;
        if (j->done) {
            m->lanes[j->lane].queued = 0;
            *pp = j->next;
            pthread_cond_signal(&j->cond);
        } else {
            m->step_tail = j;
            pp = &j->next;
        }
    }
    return n;
}

int engine_step_eval(engine_model *m, int lane, const engine_split *sp, int start, int from, int n,
                     float *all, float *rows, char *err, size_t errlen)
{
    engine_step_job job = {.lane = lane, .pos = start, .from = from, .end = n, .all = all, .rows = rows,
                           .split = *sp};
    if (start >= n) return 0;
    if (rows && !sp->has_tail) { /* a solo step has no hidden states to give */
        snprintf(err, errlen, "hidden states from the batch steps need a split");
        return -1;
    }
    pthread_cond_init(&job.cond, NULL);
    pthread_mutex_lock(&m->step_lock);
    if (m->step_tail) m->step_tail->next = &job;
    else m->step_head = &job;
    m->step_tail = &job;
    m->lanes[lane].queued = 1;
    pthread_cond_signal(&m->step_cond); /* a gathering leader may be waiting for us */
    /* Solo, one leader; a split, up to the tail's depth (each waits on the
     * network for its step while another computes the next). */
    int leaders = sp->has_tail && sp->tail.depth > 1 ? sp->tail.depth : 1;
    while (!job.done) {
        if (m->step_leaders < leaders && !job.take) {
            m->step_leaders++;
            while (!job.done && step_run_locked(m, lane) > 0) {
            }
            m->step_leaders--;
            /* the first job that no step holds gets a leader */
            for (engine_step_job *j = m->step_head; j; j = j->next)
                if (!j->take && j != &job) {
                    pthread_cond_signal(&j->cond);
                    break;
                }
            if (!job.done) pthread_cond_wait(&job.cond, &m->step_lock); /* in another leader's step */
        } else {
            pthread_cond_wait(&job.cond, &m->step_lock);
        }
    }
    pthread_mutex_unlock(&m->step_lock);
    pthread_cond_destroy(&job.cond);
    if (job.rc != 0) snprintf(err, errlen, "%s", job.err);
    return job.rc;
}
