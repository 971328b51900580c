/* scheduler.c: per-model worker threads, the placement of a job on the lane
 * whose cache holds the longest prefix of its prompt, the bounded FIFO with
 * its deadline, and the hand-off of generated text to the event loop. See
 * scheduler.h for the contract.
 *
 * Hand-off protocol (the one subtle part): a job is touched by two threads.
 * The worker appends text to job->pending (one piece per engine output, kept
 * apart: see sched_piece) and, at the end, sets
 * job->worker_done, each time under s->lock, and puts the job on s->ready.
 * It never touches the job after setting worker_done. The loop thread drains
 * s->ready under the same lock and is the only thread that frees jobs: when
 * worker_done is set and the owner is gone (cancelled or on_done delivered).
 * One wake-up event for the whole scheduler avoids freeing an event that
 * another thread might still be activating. */
#include "serve/scheduler.h"

#include "engine/json_grammar.h"

#include <assert.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/clock.h"
#include "lib/log.h"

#define SCHED_MAX_MODELS 16
#define SCHED_DEADLINE_CHECK_MS 250
#define SCHED_MIN_SHARED 4 /* tokens of cached prefix that make a lane the place for a prompt */

/* Where one engine output ends in a job's pending text and tokens. The
 * loop may take several outputs in one wake-up (a fast model on a busy
 * loop); it delivers them one by one, so that a stream sends one chunk per
 * token, as OpenAI does, however late the loop runs. */
typedef struct {
    size_t text_end;
    int toks_end;
} sched_piece;

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
    sched_piece *pending_pieces; /* one per output not yet delivered */
    int n_pending_pieces, pending_pieces_cap;
    /* Inter-token gaps: time between the worker's text outputs, measured
     * where they are produced (the loop may get several in one wake-up). */
    uint64_t last_text_ns;      /* worker only */
    uint32_t *pending_gaps;     /* microseconds, not yet delivered */
    int n_pending_gaps, pending_gaps_cap;
    int worker_done;
    int on_ready_list;
    engine_result result;
    char error[256];
    int error_status;          /* with error: an HTTP status the owner should answer (0: its choice) */
    int aborted;               /* error set by sched_abort_model: the worker keeps it */
    uint64_t queued_ns;        /* when it joined the FIFO (the queue deadline counts from here) */
    int prepared;              /* its prompt is token ids already (engine_prompt_tokens) */
    atomic_int prompt_tokens;  /* the prompt's tokens once the worker has them (0: not yet) */
    atomic_int prompt_cached;  /* of which its lane's cache holds (set before prompt_tokens) */
    /* A request's choices (sched_submit_choices): jobs of one group sit
     * together in the FIFO; the lane that runs the first takes the others
     * onto idle lanes and shares the prompt's keys and values with them. */
    uint64_t group;            /* 0: a job alone */
    struct sched_job *mates[SCHED_MAX_CHOICES]; /* the first choice: those given lanes with it */
    int mate_lanes[SCHED_MAX_CHOICES], n_mates; /* (reserved until the prompt is shared) */
    int shared_prompt;         /* worker: positions the first choice evaluated for all of them */
    double shared_ms;          /* and their time */
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
    int *woken;                /* (n_lanes) woken by sched_submit, has not taken a job yet */
    sched_job **placing;       /* (n_lanes) the job the lane took from the FIFO and is placing */
    sched_job **assigned;      /* (n_lanes) a prepared job handed to this lane (prompt cache) */
    int *reserved;             /* (n_lanes) held for a choice while its prompt is copied in */
    uint64_t *lane_used;       /* (n_lanes) when the lane last took a job: least recent first on ties */
    uint64_t use_clock;
    sched_job *head, *tail;    /* the FIFO: jobs waiting for a lane */
    int n_queued;
    int n_waking;              /* lanes woken by sched_submit that have not taken a job yet */
    uint64_t refused_full;     /* jobs refused: every lane busy and the FIFO full */
    uint64_t timed_out;        /* jobs that waited past the deadline */
    int stop;
} sched_worker;

typedef struct {
    sched_worker *w;
    int lane;
} sched_lane;

struct sched {
    struct event_base *base;
    int queue_max;             /* jobs that may wait per model when every lane is busy */
    uint64_t queue_timeout_ns; /* a job waiting longer gets 503 */
    struct event *deadline_timer;
    unsigned debug_token_delay_us; /* LLMESH_DEBUG_TOKEN_DELAY_MS: tests of shutdown and failover */
    struct event *wake;
    pthread_mutex_t lock;
    sched_job *ready;
    sched_job *all;
    int n_active;
    uint64_t next_group;       /* loop thread: the last choice group's id */
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
    if (job->n_pending_pieces == job->pending_pieces_cap) {
        int cap = job->pending_pieces_cap ? job->pending_pieces_cap * 2 : 16;
        sched_piece *p = realloc(job->pending_pieces, sizeof *p * (size_t)cap);
        if (!p) { pthread_mutex_unlock(&s->lock); return 1; }
        job->pending_pieces = p;
        job->pending_pieces_cap = cap;
    }
    if (len) {
        /* One gap per text output after the first: what a streaming client
         * sees between chunks (usually one token each), read where the
         * token is made. A gap that cannot be stored is not counted. */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t now = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
        if (job->last_text_ns && job->n_pending_gaps == job->pending_gaps_cap) {
            int cap = job->pending_gaps_cap ? job->pending_gaps_cap * 2 : 16;
            uint32_t *p = realloc(job->pending_gaps, sizeof *p * (size_t)cap);
            if (p) {
                job->pending_gaps = p;
                job->pending_gaps_cap = cap;
            }
        }
        if (job->last_text_ns && job->n_pending_gaps < job->pending_gaps_cap) {
            uint64_t us = (now - job->last_text_ns) / 1000;
            job->pending_gaps[job->n_pending_gaps++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
        }
        job->last_text_ns = now;
        memcpy(job->pending + job->pending_len, text, len);
    }
    job->pending_len += len;
    if (n_tokens) memcpy(job->pending_toks + job->n_pending_toks, tokens, sizeof *tokens * (size_t)n_tokens);
    job->n_pending_toks += n_tokens;
    job->pending_pieces[job->n_pending_pieces++] = (sched_piece){job->pending_len, job->n_pending_toks};
    job_post_ready_locked(job);
    pthread_mutex_unlock(&s->lock);
    event_active(s->wake, EV_READ, 0);
    if (s->debug_token_delay_us && len) usleep(s->debug_token_delay_us);
    return 0;
}

/* The worker's last touch of a job: its result or error, then the loop. */
static void worker_finish(sched_job *job, const engine_result *result, int rc, const char *err)
{
    sched *s = job->s;
    pthread_mutex_lock(&s->lock);
    job->result = *result;
    if (job->shared_prompt > 0) { /* the prompt it evaluated for its group counts as its own */
        job->result.cached_tokens -= job->shared_prompt;
        if (job->result.cached_tokens < 0) job->result.cached_tokens = 0;
        job->result.prompt_ms += job->shared_ms;
    }
    if (rc != 0 && !job->aborted) snprintf(job->error, sizeof job->error, "%s", err[0] ? err : "generation failed");
    job->worker_done = 1;
    job_post_ready_locked(job);
    pthread_mutex_unlock(&s->lock);
    event_active(s->wake, EV_READ, 0);
}

/* The first of a request's choices, placed on a lane (under w->lock): the
 * choices right behind it in the FIFO go onto idle lanes, reserved until
 * worker_share_choices hands them over, so that no one else takes them.
 * Choices beyond the idle lanes stay in the FIFO and run as lanes free;
 * the prompt cache then puts them on a lane that ran a choice, whose cache
 * holds the prompt. */
static void worker_reserve_choices_locked(sched_worker *w, int lane, sched_job *job)
{
    for (int l = 0; l < w->n_lanes && job->n_mates < SCHED_MAX_CHOICES && w->head && w->head->group == job->group;
         l++) {
        if (l == lane || !w->idle[l] || w->assigned[l] || w->reserved[l]) continue;
        sched_job *mate = w->head;
        w->head = mate->next_queued;
        if (!w->head) w->tail = NULL;
        w->n_queued--;
        w->idle[l] = 0;
        w->reserved[l] = 1;
        job->mates[job->n_mates] = mate;
        job->mate_lanes[job->n_mates++] = l;
    }
    if (w->n_waking > w->n_queued) w->n_waking = w->n_queued;
}

/* The first choice, about to run on lane: its prompt is evaluated once
 * here and its keys and values copied to the lanes reserved for the other
 * choices (engine_lane_share_prompt), which then take them: every choice
 * evaluates only the prompt's last token, and they all decode in the same
 * batch steps. */
static void worker_share_choices(sched_worker *w, int lane, sched_job *job)
{
    int k = job->n_mates;
    char err[256];
    uint64_t t0 = clock_ns();
    int shared = 0;
    if (job->prepared && !atomic_load(&job->cancelled)) /* cancelled: the choices are handed over all the same */
        shared = engine_lane_share_prompt(w->model, lane, job->req.prompt_ids, job->req.n_prompt_ids, job->mate_lanes,
                                          k, err, sizeof err);
    if (shared < 0) log_warn("sched", "choices of one prompt: %s (each evaluates it)", err);
    job->shared_prompt = shared > 0 ? shared : 0;
    job->shared_ms = (double)(clock_ns() - t0) * 1e-6;
    for (int i = 0; i < k && job->prepared; i++) { /* the same ids: no tokenizing again */
        sched_job *mate = job->mates[i];
        int32_t *ids = malloc(sizeof(int32_t) * (size_t)job->req.n_prompt_ids);
        if (!ids) continue;
        memcpy(ids, job->req.prompt_ids, sizeof(int32_t) * (size_t)job->req.n_prompt_ids);
        free((int32_t *)mate->req.prompt_ids);
        mate->req.prompt_ids = ids;
        mate->req.n_prompt_ids = job->req.n_prompt_ids;
        mate->prepared = 1;
        /* what its lane holds now (the prompt but its last token, unless a split kept it from
         * being copied); the lane is reserved: nothing runs on it */
        atomic_store(&mate->prompt_cached, engine_lane_cached_prefix(w->model, job->mate_lanes[i], ids,
                                                                     job->req.n_prompt_ids));
        atomic_store(&mate->prompt_tokens, job->req.n_prompt_ids);
    }
    pthread_mutex_lock(&w->lock);
    for (int i = 0; i < k; i++) {
        int l = job->mate_lanes[i];
        w->reserved[l] = 0;
        w->assigned[l] = job->mates[i];
        w->lane_used[l] = ++w->use_clock;
        pthread_cond_signal(&w->lane_cond[l]);
    }
    job->n_mates = 0;
    pthread_mutex_unlock(&w->lock);
}

static void worker_run_job(sched_worker *w, int lane, sched_job *job)
{
    engine_result result = {0};
    char err[256] = "";
    int rc = 0;
    if (job->n_mates > 0) worker_share_choices(w, lane, job); /* cancelled or not: they are handed over */
    if (!atomic_load(&job->cancelled))
        rc = engine_run_lane(w->model, lane, &job->req, worker_on_output, job, &result, err, sizeof err);
    /* The lane is free before its answer goes out: a client that sends its
     * next request as soon as it has the answer must find it idle (n
     * choices reserve only idle lanes, placement reads only free ones).
     * Nothing on the lane runs from here on; the loop at worker_main's top
     * takes whatever is assigned to it or waiting meanwhile. */
    pthread_mutex_lock(&w->lock);
    if (!w->assigned[lane] && !w->reserved[lane]) w->idle[lane] = 1;
    pthread_mutex_unlock(&w->lock);
    worker_finish(job, &result, rc, err);
}

/* A lane's claim on a prompt: the prefix its cache holds, when that is worth
 * taking the lane for: at least SCHED_MIN_SHARED tokens and a tenth of the
 * prompt (a chat's next turn, a shared system prompt; llama-server's slot
 * similarity threshold is of the same kind). Below that (a BOS, a common
 * first word) it counts 0, and the least recently used lane wins: an empty
 * lane before one whose cache another client may come back to. */
static int placement_score(sched_worker *w, int lane, const int32_t *ids, int n)
{
    int len = engine_lane_cached_prefix(w->model, lane, ids, n);
    return len >= SCHED_MIN_SHARED && len * 10 >= n ? len : 0;
}

/* Prompt cache: turns job's prompt into token ids (off the loop thread) and
 * picks, among this lane and the free ones, the lane whose cache shares the
 * longest prefix with it (least recently used on ties, so a cache that
 * nobody matched survives longest). Returns that lane, job->prepared set;
 * -1 when the prompt is refused (the job is finished with the error); -2
 * when the job was taken from this lane meanwhile (see below).
 *
 * Free: idle; woken for a job of the FIFO and not yet holding one; or
 * placing a job of its own (this function, on its thread). Requests that
 * arrive together wake one lane each, in lane order, and each lane takes
 * the next job of the FIFO before any is placed (tokenizing takes longer
 * than waking): were those lanes out of reach, every job would stay on
 * whichever lane took it, whatever that lane's cache (four chats sending
 * their next turn at once missed their caches 2 times in 3). A lane given
 * a job here runs it; the job it was placing goes back to the head of the
 * FIFO (already tokenized) for the next free lane, which is this one at
 * once; its thread, back from tokenizing, finds the job gone and drops its
 * work. Each move takes a job to a strictly longer prefix, so the moves end.
 * Another lane's record is read only while it is free, under w->lock: its
 * thread runs nothing on the lane before it has taken the same lock. */
static int worker_place(sched_worker *w, int lane, sched_job *job)
{
    char err[256];
    int32_t *ids = NULL;
    int n = 0, rc = 0;
    if (!job->prepared) rc = engine_prompt_tokens(w->model, &job->req, &ids, &n, err, sizeof err);
    pthread_mutex_lock(&w->lock);
    if (w->placing[lane] != job) { /* given to another lane's placement meanwhile */
        pthread_mutex_unlock(&w->lock);
        free(ids);
        return -2;
    }
    w->placing[lane] = NULL;
    if (rc != 0) {
        pthread_mutex_unlock(&w->lock);
        engine_result none = {.finish_reason = "stop"};
        worker_finish(job, &none, -1, err);
        return -1;
    }
    if (!job->prepared) {
        free((int32_t *)job->req.prompt_ids);
        job->req.prompt_ids = ids;
        job->req.n_prompt_ids = n;
        job->prepared = 1;
    }
    const int32_t *pids = job->req.prompt_ids;
    int np = job->req.n_prompt_ids;
    int best = lane, best_len = placement_score(w, lane, pids, np);
    for (int l = 0; l < w->n_lanes; l++) {
        if (l == lane || !(w->idle[l] || w->woken[l] || w->placing[l]) || w->assigned[l]) continue;
        int len = placement_score(w, l, pids, np);
        /* a strictly longer prefix moves the job; among lanes that hold
         * none worth keeping, the least recently used one that is idle */
        if (len > best_len || (len == 0 && best_len == 0 && !w->placing[l] && w->lane_used[l] < w->lane_used[best])) {
            best = l;
            best_len = len;
        }
    }
    w->lane_used[best] = ++w->use_clock;
    atomic_store(&job->prompt_cached, engine_lane_cached_prefix(w->model, best, pids, np));
    atomic_store(&job->prompt_tokens, np);
    sched_job *bumped = best != lane ? w->placing[best] : NULL;
    if (best != lane) {
        w->placing[best] = NULL;
        w->assigned[best] = job;
        w->idle[best] = 0;
        /* this lane is free again at once (under the same lock), so a
         * submission meanwhile never sees every lane busy */
        w->idle[lane] = 1;
    }
    if (job->group) worker_reserve_choices_locked(w, best, job);
    if (bumped) { /* back to the head of the FIFO (behind no choice of job's) */
        bumped->next_queued = w->head;
        w->head = bumped;
        if (!w->tail) w->tail = bumped;
        w->n_queued++;
        w->n_waking++; /* the lane that takes it: this one, at once, unless held for a choice */
        for (int l = 0; w->reserved[lane] && l < w->n_lanes; l++)
            if (w->idle[l] && !w->reserved[l]) {
                w->idle[l] = 0;
                w->woken[l] = 1;
                pthread_cond_signal(&w->lane_cond[l]);
                break;
            }
    }
    if (best != lane) pthread_cond_signal(&w->lane_cond[best]);
    pthread_mutex_unlock(&w->lock);
    return best;
}

static void *worker_main(void *arg)
{
    sched_lane lane = *(sched_lane *)arg;
    free(arg);
    sched_worker *w = lane.w;
    for (;;) {
        pthread_mutex_lock(&w->lock);
        /* a reserved lane waits for the choice it is held for */
        while (!w->assigned[lane.lane] && (!w->head || w->reserved[lane.lane]) && !w->stop) {
            if (!w->reserved[lane.lane]) w->idle[lane.lane] = 1;
            pthread_cond_wait(&w->lane_cond[lane.lane], &w->lock);
        }
        w->idle[lane.lane] = 0;
        w->woken[lane.lane] = 0;
        sched_job *job = w->assigned[lane.lane];
        if (job) {
            w->assigned[lane.lane] = NULL;
            pthread_mutex_unlock(&w->lock);
            worker_run_job(w, lane.lane, job);
            continue;
        }
        if (w->stop && !w->head) { pthread_mutex_unlock(&w->lock); break; }
        job = w->head;
        w->head = job->next_queued;
        if (!w->head) w->tail = NULL;
        w->n_queued--;
        if (w->n_waking > 0) w->n_waking--;
        int cancelled = atomic_load(&job->cancelled);
        if (!cancelled) w->placing[lane.lane] = job;
        pthread_mutex_unlock(&w->lock);
        if (cancelled) { /* left while it waited: nothing to place */
            engine_result none = {.finish_reason = "stop"};
            worker_finish(job, &none, 0, "");
            continue;
        }
        if (worker_place(w, lane.lane, job) == lane.lane) worker_run_job(w, lane.lane, job);
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
    free(w->woken);
    free(w->placing);
    free(w->assigned);
    free(w->reserved);
    free(w->lane_used);
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
    free(job->pending_pieces);
    free(job->pending_gaps);
    free((char *)job->req.prompt);
    free((int32_t *)job->req.prompt_ids);
    json_grammar_free((json_grammar *)job->req.grammar);
    free(job->req.embedding);
    free(job);
}

static void sched_on_wake(evutil_socket_t fd, short what, void *arg)
{
    sched *s = arg;
    pthread_mutex_lock(&s->lock);
    sched_job *list = s->ready;
    s->ready = NULL;
    pthread_mutex_unlock(&s->lock);

    /* Callbacks run without the lock; a job may be cancelled by an earlier
     * job's callback (e.g. a shared connection closing), hence the re-checks. */
    while (list) {
        sched_job *job = list;
        /* A job stays marked on_ready_list until it is taken here, under
         * the lock, with its text and its done flag: a worker that posts it
         * meanwhile only adds to pending, so this list is never relinked
         * while it is walked, and a job read done here is never on s->ready
         * again (clearing every mark at once, when the list was taken, let a
         * worker push a job of this list onto s->ready, relinking next_ready:
         * the walk then ran into s->ready and freed jobs still on it, the
         * double free seen 1 run in 10 in CI and in 1 of 3 runs of 8 streams
         * on a 0.5B model). */
        pthread_mutex_lock(&s->lock);
        list = job->next_ready;
        job->on_ready_list = 0;
        char *text = job->pending;
        size_t len = job->pending_len;
        engine_token *toks = job->pending_toks;
        sched_piece *pieces = job->pending_pieces;
        int n_pieces = job->n_pending_pieces;
        uint32_t *gaps = job->pending_gaps;
        int n_gaps = job->n_pending_gaps;
        job->pending_gaps = NULL;
        job->n_pending_gaps = job->pending_gaps_cap = 0;
        job->pending = NULL;
        job->pending_len = job->pending_cap = 0;
        job->pending_toks = NULL;
        job->n_pending_toks = job->pending_toks_cap = 0;
        job->pending_pieces = NULL;
        job->n_pending_pieces = job->pending_pieces_cap = 0;
        int done = job->worker_done;
        pthread_mutex_unlock(&s->lock);

        if (!job->owner_gone && n_gaps && job->cb.on_gaps) job->cb.on_gaps(job->user, gaps, n_gaps);
        free(gaps);
        /* one call per engine output: a stream's chunk per token */
        size_t text_at = 0;
        int toks_at = 0;
        for (int k = 0; k < n_pieces && !job->owner_gone; k++) {
            const sched_piece *pc = &pieces[k];
            assert(pc->text_end >= text_at && pc->text_end <= len && pc->toks_end >= toks_at);
            job->cb.on_output(job->user, text ? text + text_at : "", pc->text_end - text_at,
                              toks ? toks + toks_at : NULL, pc->toks_end - toks_at);
            text_at = pc->text_end;
            toks_at = pc->toks_end;
        }
        free(text);
        free(toks);
        free(pieces);
        if (done) {
            if (!job->owner_gone) {
                job->owner_gone = 1;
                job->cb.on_done(job->user, &job->result, job->error[0] ? job->error : NULL,
                                job->error_status);
            }
            job_free(job);
        }
    }
}

/* Jobs that waited in a FIFO past the deadline leave it with 503: a client
 * is better told to come back than kept waiting without bound. A check
 * every SCHED_DEADLINE_CHECK_MS, so a job may wait that much longer. */
static void sched_on_deadline_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sched *s = arg;
    uint64_t now = clock_ns();
    int any = 0;
    for (int i = 0; i < s->n_workers; i++) {
        sched_worker *w = s->workers[i];
        pthread_mutex_lock(&w->lock);
        sched_job **pp = &w->head;
        w->tail = NULL;
        while (*pp) {
            sched_job *j = *pp;
            if (now - j->queued_ns < s->queue_timeout_ns) {
                w->tail = j;
                pp = &j->next_queued;
                continue;
            }
            *pp = j->next_queued;
            w->n_queued--;
            w->timed_out++;
            pthread_mutex_lock(&s->lock);
            snprintf(j->error, sizeof j->error,
                     "every lane of model '%s' stayed busy for %.0f s; try again later",
                     engine_model_id(w->model), (double)s->queue_timeout_ns * 1e-9);
            j->error_status = 503;
            j->worker_done = 1; /* no worker will see it */
            job_post_ready_locked(j);
            pthread_mutex_unlock(&s->lock);
            any = 1;
        }
        if (w->n_waking > w->n_queued) w->n_waking = w->n_queued; /* woken for a job that left */
        pthread_mutex_unlock(&w->lock);
    }
    if (any) event_active(s->wake, EV_READ, 0);
}

void sched_set_queue(sched *s, int queue_max, int timeout_s)
{
    s->queue_max = queue_max < 0 ? 0 : queue_max;
    s->queue_timeout_ns = (uint64_t)(timeout_s > 0 ? timeout_s : 1) * 1000000000u;
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
    s->queue_max = SCHED_DEFAULT_QUEUE;
    s->queue_timeout_ns = (uint64_t)SCHED_DEFAULT_QUEUE_TIMEOUT_S * 1000000000u;
    s->wake = event_new(base, -1, 0, sched_on_wake, s);
    s->deadline_timer = event_new(base, -1, EV_PERSIST, sched_on_deadline_timer, s);
    if (!s->wake || !s->deadline_timer) {
        if (s->wake) event_free(s->wake);
        free(s);
        return NULL;
    }
    struct timeval every = {0, SCHED_DEADLINE_CHECK_MS * 1000};
    event_add(s->deadline_timer, &every);
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
    event_free(s->deadline_timer);
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
    w->woken = calloc((size_t)w->n_lanes, sizeof *w->woken);
    w->placing = calloc((size_t)w->n_lanes, sizeof *w->placing);
    w->assigned = calloc((size_t)w->n_lanes, sizeof *w->assigned);
    w->reserved = calloc((size_t)w->n_lanes, sizeof *w->reserved);
    w->lane_used = calloc((size_t)w->n_lanes, sizeof *w->lane_used);
    pthread_mutex_init(&w->lock, NULL);
    for (int l = 0; w->lane_cond && l < w->n_lanes; l++) pthread_cond_init(&w->lane_cond[l], NULL);
    for (int l = 0; w->threads && w->lane_cond && w->idle && w->woken && w->placing && w->assigned && w->reserved &&
                    w->lane_used && l < w->n_lanes; l++) {
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

int sched_model_waiting(const sched *s, const char *model_id, uint64_t *refused_full)
{
    sched_worker *w = find_worker(s, model_id);
    *refused_full = 0;
    if (!w) return 0;
    pthread_mutex_lock(&w->lock);
    int n = w->n_queued - w->n_waking;
    *refused_full = w->refused_full;
    pthread_mutex_unlock(&w->lock);
    return n > 0 ? n : 0;
}

int sched_queue_max(const sched *s) { return s->queue_max; }

int sched_model_jobs(const sched *s, const char *model_id)
{
    sched_worker *w = find_worker(s, model_id);
    int n = 0;
    for (sched_job *j = s->all; w && j; j = j->next_all) n += j->worker == w;
    return n;
}

void sched_abort_model(sched *s, const char *model_id, const char *message)
{
    sched_worker *w = find_worker(s, model_id);
    if (!w) return;
    /* Waiting jobs leave the FIFO at once, as past the queue deadline (no
     * worker will see them); running ones keep the message and stop at
     * their next token, their worker then delivering it. */
    pthread_mutex_lock(&w->lock);
    for (sched_job *j = w->head; j; j = j->next_queued) {
        pthread_mutex_lock(&s->lock);
        snprintf(j->error, sizeof j->error, "%s", message);
        j->error_status = 503;
        j->aborted = 1;
        j->worker_done = 1;
        job_post_ready_locked(j);
        pthread_mutex_unlock(&s->lock);
    }
    w->head = w->tail = NULL;
    w->n_queued = 0;
    w->n_waking = 0;
    pthread_mutex_unlock(&w->lock);
    for (sched_job *j = s->all; j; j = j->next_all) {
        if (j->worker != w || j->owner_gone) continue;
        pthread_mutex_lock(&s->lock);
        if (!j->worker_done) {
            snprintf(j->error, sizeof j->error, "%s", message);
            j->error_status = 503;
            j->aborted = 1;
        }
        pthread_mutex_unlock(&s->lock);
        atomic_store(&j->cancelled, 1);
    }
    event_active(s->wake, EV_READ, 0);
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
    sched_model_stats st;
    sched_model_get_stats(s, i, &st);
    *lanes = st.lanes;
    *busy = st.busy;
    *queued = st.queued;
}

void sched_model_get_stats(const sched *s, int i, sched_model_stats *out)
{
    sched_worker *w = s->workers[i];
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&w->lock);
    int idle = 0;
    for (int l = 0; l < w->n_lanes; l++) idle += w->idle[l];
    out->queued = w->n_queued;
    out->refused_full = w->refused_full;
    out->timed_out = w->timed_out;
    pthread_mutex_unlock(&w->lock);
    out->lanes = w->n_lanes;
    /* A lane just handed a job (idle cleared by sched_submit) counts as busy
     * at once, and the job as queued until the lane wakes and takes it. */
    out->busy = w->n_lanes - idle;
    engine_model_step_stats(w->model, &out->steps);
}

/* A job for req on w (copies of its prompt and ids; the grammar is the
 * caller's to hand over), linked into s->all, not yet queued. NULL: out of
 * memory. */
static sched_job *job_new(sched *s, sched_worker *w, const engine_request *req, const sched_callbacks *cb,
                          void *user)
{
    sched_job *job = calloc(1, sizeof *job);
    if (!job) return NULL;
    job->req = *req;
    char *prompt = malloc(req->prompt_len + 1);
    int32_t *ids = NULL;
    if (req->prompt_ids) ids = malloc(sizeof(int32_t) * (size_t)(req->n_prompt_ids > 0 ? req->n_prompt_ids : 1));
    /* An embedding is written into the job, which outlives on_done. */
    float *embedding = req->embed ? calloc((size_t)engine_model_n_embd(w->model), sizeof(float)) : NULL;
    if (!prompt || (req->prompt_ids && !ids) || (req->embed && !embedding)) {
        free(prompt);
        free(ids);
        free(embedding);
        free(job);
        return NULL;
    }
    if (req->prompt_len) memcpy(prompt, req->prompt, req->prompt_len);
    prompt[req->prompt_len] = 0;
    if (ids && req->n_prompt_ids > 0) memcpy(ids, req->prompt_ids, sizeof(int32_t) * (size_t)req->n_prompt_ids);
    job->req.prompt = prompt;
    job->req.prompt_ids = ids;
    job->req.embedding = embedding;
    job->req.grammar = NULL;
    job->s = s;
    job->worker = w;
    job->cb = *cb;
    job->user = user;
    atomic_init(&job->cancelled, 0);
    atomic_init(&job->prompt_tokens, 0);
    atomic_init(&job->prompt_cached, 0);
    job->next_all = s->all;
    if (s->all) s->all->prev_all = job;
    s->all = job;
    s->n_active++;
    return job;
}

/* Whether n more jobs would leave more than queue_max waiting. Under w->lock. */
static int worker_full_locked(const sched *s, const sched_worker *w, int n)
{
    int idle = 0;
    for (int l = 0; l < w->n_lanes; l++) idle += w->idle[l];
    /* a job sits in the FIFO for a moment while the lane woken for it
     * comes: it does not count as waiting */
    int waiting = w->n_queued - w->n_waking + n - idle;
    return waiting > 0 && waiting > s->queue_max;
}

int sched_submit_choices(sched *s, const char *model_id, const engine_request *req, int n,
                         const sched_callbacks *cb, void *const *users, sched_job **jobs, sched_refusal *why)
{
    sched_refusal ignored;
    if (!why) why = &ignored;
    *why = SCHED_REFUSED_UNKNOWN;
    sched_worker *w = find_worker(s, model_id);
    if (!w) return -1;
    if (n < 1 || n > SCHED_MAX_CHOICES) return -1;
    pthread_mutex_lock(&w->lock);
    int full = worker_full_locked(s, w, n);
    if (full) w->refused_full++;
    pthread_mutex_unlock(&w->lock);
    if (full) {
        *why = SCHED_REFUSED_FULL;
        return -1;
    }
    *why = SCHED_REFUSED_MEMORY;
    for (int i = 0; i < n; i++) {
        engine_request one = *req;
        one.sampling.seed = req->sampling.seed + (uint64_t)i; /* each choice its own sampling stream */
        jobs[i] = job_new(s, w, &one, cb, users[i]);
        if (!jobs[i]) {
            while (i-- > 0) {
                jobs[i]->owner_gone = 1;
                job_free(jobs[i]);
                jobs[i] = NULL;
            }
            return -1;
        }
    }
    /* Every job takes a reference to the grammar (the caller's is the first). */
    for (int i = 0; i < n; i++)
        jobs[i]->req.grammar = i == 0 ? req->grammar : json_grammar_retain((json_grammar *)req->grammar);
    uint64_t group = n > 1 ? ++s->next_group : 0;
    uint64_t now = clock_ns();
    pthread_mutex_lock(&w->lock);
    for (int i = 0; i < n; i++) {
        jobs[i]->group = group;
        jobs[i]->queued_ns = now;
        if (w->tail) w->tail->next_queued = jobs[i];
        else w->head = jobs[i];
        w->tail = jobs[i];
        w->n_queued++;
    }
    /* The lowest idle lane wakes for the first and places it (worker_place)
     * on the idle lane whose cache shares the longest prefix with it; that
     * lane takes the other choices (worker_start_choices). */
    for (int l = 0; l < w->n_lanes; l++)
        if (w->idle[l]) {
            w->idle[l] = 0;
            w->woken[l] = 1;
            w->n_waking++;
            pthread_cond_signal(&w->lane_cond[l]);
            break;
        }
    pthread_mutex_unlock(&w->lock);
    return 0;
}

sched_job *sched_submit(sched *s, const char *model_id, const engine_request *req,
                        const sched_callbacks *cb, void *user, sched_refusal *why)
{
    sched_job *job;
    return sched_submit_choices(s, model_id, req, 1, cb, &user, &job, why) == 0 ? job : NULL;
}

int sched_job_prompt_tokens(sched_job *job, int *cached)
{
    int n = atomic_load(&job->prompt_tokens);
    *cached = n ? atomic_load(&job->prompt_cached) : 0;
    return n;
}

int sched_model_full(const sched *s, const char *model_id)
{
    sched_worker *w = find_worker(s, model_id);
    if (!w) return 0;
    pthread_mutex_lock(&w->lock);
    int full = worker_full_locked(s, w, 1);
    pthread_mutex_unlock(&w->lock);
    return full;
}

void sched_cancel(sched_job *job)
{
    atomic_store(&job->cancelled, 1);
    job->owner_gone = 1;
    /* Freed in sched_on_wake once the worker reports done (it stops at the
     * next token, or skips the job if it had not started). */
}
