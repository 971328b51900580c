/* scheduler.c: per-model worker threads and the hand-off of generated text to
 * the event loop. See scheduler.h for the contract.
 *
 * Hand-off protocol (the one subtle part): a job is touched by two threads.
 * The worker appends text to job->pending and, at the end, sets
 * job->worker_done, each time under s->lock, and puts the job on s->ready.
 * It never touches the job after setting worker_done. The loop thread drains
 * s->ready under the same lock and is the only thread that frees jobs: when
 * worker_done is set and the owner is gone (cancelled or on_done delivered).
 * One wake-up event for the whole scheduler avoids freeing an event that
 * another thread might still be activating. */
#include "serve/scheduler.h"

#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/log.h"

#define SCHED_MAX_MODELS 16

struct sched_job {
    sched *s;
    struct sched_worker *worker;
    engine_request req;        /* prompt and prompt_ids point to owned copies */
    sched_callbacks cb;
    void *user;

    atomic_int cancelled;      /* set by the loop; read by the worker's piece callback */
    /* Under s->lock: */
    char *pending;             /* text produced and not yet delivered */
    size_t pending_len, pending_cap;
    engine_token *pending_toks; /* tokens produced and not yet delivered */
    int n_pending_toks, pending_toks_cap;
    int worker_done;
    int on_ready_list;
    engine_result result;
    char error[256];
    /* Loop thread only: */
    int owner_gone;
    sched_job *next_queued;    /* worker FIFO, under worker->lock */
    sched_job *next_ready;     /* s->ready, under s->lock */
    sched_job *next_all, *prev_all; /* every live job, loop thread only */
};

/* A served model: its FIFO of jobs and one thread per lane (engine_run_lane),
 * each taking the next job when it is free. */
typedef struct sched_worker {
    sched *s;
    engine_model *model;
    pthread_t *threads;        /* (n_lanes) */
    int n_lanes, n_started;
    pthread_mutex_t lock;
    pthread_cond_t *lane_cond; /* (n_lanes) a job for this lane */
    int *idle;                 /* (n_lanes) the lane waits for a job */
    sched_job *head, *tail;
    int stop;
} sched_worker;

typedef struct {
    sched_worker *w;
    int lane;
} sched_lane;

struct sched {
    struct event_base *base;
    unsigned debug_token_delay_us; /* LLMESH_DEBUG_TOKEN_DELAY_MS: tests of shutdown and failover */
    struct event *wake;
    pthread_mutex_t lock;
    sched_job *ready;
    sched_job *all;
    int n_active;
    sched_worker *workers[SCHED_MAX_MODELS];
    int n_workers;
};

/* ---- worker thread --------------------------------------------------------*/

static void job_post_ready_locked(sched_job *job)
{
    if (!job->on_ready_list) {
        job->on_ready_list = 1;
        job->next_ready = job->s->ready;
        job->s->ready = job;
    }
}

static int worker_on_output(void *user, const char *text, size_t len, const engine_token *tokens,
                            int n_tokens)
{
    sched_job *job = user;
    sched *s = job->s;
    if (atomic_load(&job->cancelled)) return 1;
    if (len == 0 && n_tokens == 0) return 0; /* the engine asks "still wanted?" */
    pthread_mutex_lock(&s->lock);
    if (job->pending_len + len > job->pending_cap) {
        size_t cap = job->pending_cap ? job->pending_cap * 2 : 256;
        while (cap < job->pending_len + len) cap *= 2;
        char *p = realloc(job->pending, cap);
        if (!p) { pthread_mutex_unlock(&s->lock); return 1; }
        job->pending = p;
        job->pending_cap = cap;
    }
    if (job->n_pending_toks + n_tokens > job->pending_toks_cap) {
        int cap = job->pending_toks_cap ? job->pending_toks_cap * 2 : 16;
        while (cap < job->n_pending_toks + n_tokens) cap *= 2;
        engine_token *p = realloc(job->pending_toks, sizeof *p * (size_t)cap);
        if (!p) { pthread_mutex_unlock(&s->lock); return 1; }
        job->pending_toks = p;
        job->pending_toks_cap = cap;
    }
    if (len) memcpy(job->pending + job->pending_len, text, len);
    job->pending_len += len;
    if (n_tokens) memcpy(job->pending_toks + job->n_pending_toks, tokens, sizeof *tokens * (size_t)n_tokens);
    job->n_pending_toks += n_tokens;
    job_post_ready_locked(job);
    pthread_mutex_unlock(&s->lock);
    event_active(s->wake, EV_READ, 0);
    if (s->debug_token_delay_us && len) usleep(s->debug_token_delay_us);
    return 0;
}

static void worker_run_job(sched_worker *w, int lane, sched_job *job)
{
    engine_result result = {0};
    char err[256] = "";
    int rc = 0;
    if (!atomic_load(&job->cancelled))
        rc = engine_run_lane(w->model, lane, &job->req, worker_on_output, job, &result, err, sizeof err);
    sched *s = job->s;
    pthread_mutex_lock(&s->lock);
    job->result = result;
    if (rc != 0) snprintf(job->error, sizeof job->error, "%s", err[0] ? err : "generation failed");
    job->worker_done = 1;      /* the worker's last touch of the job */
    job_post_ready_locked(job);
    pthread_mutex_unlock(&s->lock);
    event_active(s->wake, EV_READ, 0);
}

static void *worker_main(void *arg)
{
    sched_lane lane = *(sched_lane *)arg;
    free(arg);
    sched_worker *w = lane.w;
    for (;;) {
        pthread_mutex_lock(&w->lock);
        while (!w->head && !w->stop) {
            w->idle[lane.lane] = 1;
            pthread_cond_wait(&w->lane_cond[lane.lane], &w->lock);
        }
        w->idle[lane.lane] = 0;
        if (w->stop && !w->head) { pthread_mutex_unlock(&w->lock); break; }
        sched_job *job = w->head;
        w->head = job->next_queued;
        if (!w->head) w->tail = NULL;
        pthread_mutex_unlock(&w->lock);
        worker_run_job(w, lane.lane, job);
    }
    return NULL;
}

/* Stops and joins a model's lane threads (jobs left on the queue stay). */
static void sched_worker_stop(sched_worker *w)
{
    pthread_mutex_lock(&w->lock);
    w->stop = 1;
    for (int l = 0; w->lane_cond && l < w->n_lanes; l++) pthread_cond_signal(&w->lane_cond[l]);
    pthread_mutex_unlock(&w->lock);
    for (int l = 0; l < w->n_started; l++) pthread_join(w->threads[l], NULL);
}

static void sched_worker_free(sched_worker *w)
{
    for (int l = 0; w->lane_cond && l < w->n_lanes; l++) pthread_cond_destroy(&w->lane_cond[l]);
    free(w->lane_cond);
    free(w->idle);
    free(w->threads);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

/* ---- loop thread ----------------------------------------------------------*/

static void job_free(sched_job *job)
{
    sched *s = job->s;
    if (job->prev_all) job->prev_all->next_all = job->next_all;
    else s->all = job->next_all;
    if (job->next_all) job->next_all->prev_all = job->prev_all;
    s->n_active--;
    free(job->pending);
    free(job->pending_toks);
    free((char *)job->req.prompt);
    free((int32_t *)job->req.prompt_ids);
    free(job);
}

static void sched_on_wake(evutil_socket_t fd, short what, void *arg)
{
    sched *s = arg;
    pthread_mutex_lock(&s->lock);
    sched_job *list = s->ready;
    s->ready = NULL;
    for (sched_job *j = list; j; j = j->next_ready) j->on_ready_list = 0;
    pthread_mutex_unlock(&s->lock);

    /* Callbacks run without the lock; a job may be cancelled by an earlier
     * job's callback (e.g. a shared connection closing), hence the re-checks. */
    while (list) {
        sched_job *job = list;
        list = job->next_ready;
        pthread_mutex_lock(&s->lock);
        char *text = job->pending;
        size_t len = job->pending_len;
        engine_token *toks = job->pending_toks;
        int n_toks = job->n_pending_toks;
        job->pending = NULL;
        job->pending_len = job->pending_cap = 0;
        job->pending_toks = NULL;
        job->n_pending_toks = job->pending_toks_cap = 0;
        int done = job->worker_done;
        pthread_mutex_unlock(&s->lock);

        if (!job->owner_gone && (len || n_toks)) job->cb.on_output(job->user, text ? text : "", len, toks, n_toks);
        free(text);
        free(toks);
        if (done) {
            if (!job->owner_gone) {
                job->owner_gone = 1;
                job->cb.on_done(job->user, &job->result, job->error[0] ? job->error : NULL);
            }
            job_free(job);
        }
    }
}

sched *sched_new(struct event_base *base)
{
    sched *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->base = base;
    /* A testing knob, not a feature: slows generation so that tests can
     * catch a request in flight (shutdown, failover). */
    const char *delay = getenv("LLMESH_DEBUG_TOKEN_DELAY_MS");
    if (delay) s->debug_token_delay_us = (unsigned)atoi(delay) * 1000u;
    pthread_mutex_init(&s->lock, NULL);
    s->wake = event_new(base, -1, 0, sched_on_wake, s);
    if (!s->wake) { free(s); return NULL; }
    return s;
}

void sched_free(sched *s)
{
    if (!s) return;
    for (sched_job *j = s->all; j; j = j->next_all) {
        atomic_store(&j->cancelled, 1);
        j->owner_gone = 1;
    }
    for (int i = 0; i < s->n_workers; i++) {
        sched_worker *w = s->workers[i];
        sched_worker_stop(w);
    }
    /* Workers are gone; jobs never started are still on their queues. */
    while (s->all) job_free(s->all);
    for (int i = 0; i < s->n_workers; i++) {
        sched_worker *w = s->workers[i];
        engine_model_free(w->model);
        sched_worker_free(w);
    }
    event_free(s->wake);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

int sched_add_model(sched *s, engine_model *m)
{
    if (s->n_workers == SCHED_MAX_MODELS) return -1;
    if (sched_find_model(s, engine_model_id(m))) return -1;
    sched_worker *w = calloc(1, sizeof *w);
    if (!w) return -1;
    w->s = s;
    w->model = m;
    w->n_lanes = engine_model_lanes(m);
    w->threads = calloc((size_t)w->n_lanes, sizeof *w->threads);
    w->lane_cond = calloc((size_t)w->n_lanes, sizeof *w->lane_cond);
    w->idle = calloc((size_t)w->n_lanes, sizeof *w->idle);
    pthread_mutex_init(&w->lock, NULL);
    for (int l = 0; w->lane_cond && l < w->n_lanes; l++) pthread_cond_init(&w->lane_cond[l], NULL);
    for (int l = 0; w->threads && w->lane_cond && w->idle && l < w->n_lanes; l++) {
        sched_lane *arg = malloc(sizeof *arg);
        if (!arg) break;
        arg->w = w;
        arg->lane = l;
        if (pthread_create(&w->threads[l], NULL, worker_main, arg) != 0) {
            free(arg);
            break;
        }
        w->n_started++;
    }
    if (w->n_started < w->n_lanes) {
        sched_worker_stop(w);
        sched_worker_free(w);
        return -1;
    }
    s->workers[s->n_workers++] = w;
    return 0;
}

static sched_worker *find_worker(const sched *s, const char *model_id)
{
    for (int i = 0; i < s->n_workers; i++)
        if (strcmp(engine_model_id(s->workers[i]->model), model_id) == 0) return s->workers[i];
    return NULL;
}

int sched_remove_model(sched *s, const char *model_id)
{
    sched_worker *w = find_worker(s, model_id);
    if (!w) return -1;
    /* Only an idle model goes: a job in flight (or one whose answer the
     * loop has not delivered) would lose its worker under it. */
    for (sched_job *j = s->all; j; j = j->next_all)
        if (j->worker == w) return 1;
    sched_worker_stop(w);
    engine_model_free(w->model);
    sched_worker_free(w);
    for (int i = 0; i < s->n_workers; i++)
        if (s->workers[i] == w) {
            memmove(&s->workers[i], &s->workers[i + 1], (size_t)(s->n_workers - i - 1) * sizeof s->workers[0]);
            s->n_workers--;
            break;
        }
    return 0;
}

engine_model *sched_find_model(const sched *s, const char *model_id)
{
    sched_worker *w = find_worker(s, model_id);
    return w ? w->model : NULL;
}

int sched_model_count(const sched *s) { return s->n_workers; }
engine_model *sched_model_at(const sched *s, int i) { return s->workers[i]->model; }
int sched_jobs_active(const sched *s) { return s->n_active; }

void sched_model_load(const sched *s, int i, int *lanes, int *busy, int *queued)
{
    sched_worker *w = s->workers[i];
    pthread_mutex_lock(&w->lock);
    int idle = 0, waiting = 0;
    for (int l = 0; l < w->n_lanes; l++) idle += w->idle[l];
    for (const sched_job *j = w->head; j; j = j->next_queued) waiting++;
    pthread_mutex_unlock(&w->lock);
    *lanes = w->n_lanes;
    /* A lane just handed a job (idle cleared by sched_submit) counts as busy
     * at once, and the job as queued until the lane wakes and takes it. */
    *busy = w->n_lanes - idle;
    *queued = waiting;
}

sched_job *sched_submit(sched *s, const char *model_id, const engine_request *req,
                        const sched_callbacks *cb, void *user)
{
    sched_worker *w = find_worker(s, model_id);
    if (!w) return NULL;
    sched_job *job = calloc(1, sizeof *job);
    if (!job) return NULL;
    job->req = *req;
    char *prompt = malloc(req->prompt_len + 1);
    int32_t *ids = NULL;
    if (req->prompt_ids) ids = malloc(sizeof(int32_t) * (size_t)(req->n_prompt_ids > 0 ? req->n_prompt_ids : 1));
    if (!prompt || (req->prompt_ids && !ids)) {
        free(prompt);
        free(ids);
        free(job);
        return NULL;
    }
    if (req->prompt_len) memcpy(prompt, req->prompt, req->prompt_len);
    prompt[req->prompt_len] = 0;
    if (ids && req->n_prompt_ids > 0) memcpy(ids, req->prompt_ids, sizeof(int32_t) * (size_t)req->n_prompt_ids);
    job->req.prompt = prompt;
    job->req.prompt_ids = ids;
    job->s = s;
    job->worker = w;
    job->cb = *cb;
    job->user = user;
    atomic_init(&job->cancelled, 0);
    job->next_all = s->all;
    if (s->all) s->all->prev_all = job;
    s->all = job;
    s->n_active++;

    pthread_mutex_lock(&w->lock);
    if (w->tail) w->tail->next_queued = job;
    else w->head = job;
    w->tail = job;
    /* The lowest idle lane takes it: one client's requests then keep
     * landing on the same lane, whose cached prefix (a chat's earlier
     * turns, a repeated system prompt) is reused. */
    for (int l = 0; l < w->n_lanes; l++)
        if (w->idle[l]) {
            w->idle[l] = 0;
            pthread_cond_signal(&w->lane_cond[l]);
            break;
        }
    pthread_mutex_unlock(&w->lock);
    return job;
}

void sched_cancel(sched_job *job)
{
    atomic_store(&job->cancelled, 1);
    job->owner_gone = 1;
    /* Freed in sched_on_wake once the worker reports done (it stops at the
     * next token, or skips the job if it had not started). */
}
