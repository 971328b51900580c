/* scheduler.h: runs generation jobs for the models this node serves.
 *
 * Each local model gets a FIFO of jobs and one worker thread per lane
 * (engine_model_lanes, `--parallel`: each lane has its own KV cache, so that
 * many jobs run at once; solo, the engine evaluates every running lane's
 * tokens in one forward pass per step (continuous batching, see
 * engine/engine_step.c); in a split, a lane waiting on the other stages
 * leaves the pool to the others). A new job is tokenized by the lane that
 * wakes for it and placed on the idle lane whose cache shares the longest
 * prefix with its prompt (the prompt cache: a chat's next turn computes only
 * its new tokens). When every lane is busy, at most queue_max jobs wait
 * (more are refused: 429) and none longer than the queue timeout (then it
 * ends with status 503). Generated text travels back to the
 * event-loop thread: the worker appends it to the job under the scheduler's lock and wakes the
 * loop with one shared event; callbacks then run on the loop thread.
 *
 * Threading: every function here is for the event-loop thread only. Workers
 * never call back into the rest of the program.
 *
 * Ownership: jobs are freed by the scheduler, always on the loop thread, once
 * the worker is done with them and the owner no longer is (sched_cancel or
 * on_done). */
#ifndef LLMESH_SCHEDULER_H
#define LLMESH_SCHEDULER_H

#include "engine/engine.h"

struct event_base;

typedef struct sched sched;
typedef struct sched_job sched_job;

typedef struct {
    /* New text (never a split UTF-8 character) and, when the request asked
     * for log-probabilities, the tokens produced since the last call (see
     * engine_output_fn). Either may be empty. */
    void (*on_output)(void *user, const char *text, size_t len, const engine_token *tokens,
                      int n_tokens);
    /* The job ended: error is NULL on success (then result is filled), else
     * a message, with status the HTTP status to answer when the scheduler
     * knows it (503: it waited in the queue past the deadline), else 0.
     * Last callback; the job handle is invalid afterwards. */
    void (*on_done)(void *user, const engine_result *result, const char *error, int status);
    /* Optional (NULL: not wanted), called before on_output: the times in
     * microseconds between consecutive text outputs since the last call,
     * measured on the worker as the text was made. */
    void (*on_gaps)(void *user, const uint32_t *gaps_us, int n_gaps);
} sched_callbacks;

/* Defaults of `--queue` and `--queue-timeout`. */
#define SCHED_DEFAULT_QUEUE 64
#define SCHED_DEFAULT_QUEUE_TIMEOUT_S 120

typedef enum {
    SCHED_REFUSED_UNKNOWN = 1, /* the model is not served here */
    SCHED_REFUSED_FULL,        /* every lane busy and queue_max jobs waiting */
    SCHED_REFUSED_MEMORY
} sched_refusal;

sched *sched_new(struct event_base *base);
/* At most queue_max jobs (>= 0) wait per model while every lane is busy;
 * a job that waits timeout_s (>= 1) seconds ends with status 503. */
void sched_set_queue(sched *s, int queue_max, int timeout_s);
/* Cancels every job, stops and joins the workers, frees the models. */
void sched_free(sched *s);

/* Takes ownership of m and starts its worker. 0, or -1 when a model with the
 * same id is already served. */
int sched_add_model(sched *s, engine_model *m);
/* Stops the model's worker threads (joined: they are idle) and frees it.
 * 0; 1 when a job of it is queued, running or undelivered (nothing done);
 * -1 when no such model is served. */
int sched_remove_model(sched *s, const char *model_id);
/* Jobs of the model waiting for a lane now, and the queue bound (--queue). */
int sched_model_waiting(const sched *s, const char *model_id, uint64_t *refused_full);
int sched_queue_max(const sched *s);
/* Jobs of the model queued, running or undelivered (0 when not served). */
int sched_model_jobs(const sched *s, const char *model_id);
/* Ends every job of the model with message (status 503 when the client
 * has seen nothing yet, else an error event): waiting ones at once, running
 * ones at their next token. Jobs whose owner left are not touched. */
void sched_abort_model(sched *s, const char *model_id, const char *message);
/* The served model with this id, or NULL. */
engine_model *sched_find_model(const sched *s, const char *model_id);
int sched_model_count(const sched *s);
engine_model *sched_model_at(const sched *s, int i);

/* Queues a generation (or an embedding: req->embed, the vector then in the
 * result given to on_done). The request, its prompt text and ids are copied;
 * its grammar (when not NULL) is taken: the job frees it. NULL with the
 * reason in *why (may be NULL) when model_id is not served, its queue is full
 * (counted) or memory is out: then the grammar stays the caller's. */
sched_job *sched_submit(sched *s, const char *model_id, const engine_request *req,
                        const sched_callbacks *cb, void *user, sched_refusal *why);
/* A request's n choices (OpenAI's `n`) as n jobs of req, choice i with the
 * seed req->sampling.seed + i (its own sampling stream) and users[i]; each
 * job takes a reference to req's grammar (the caller's one included). They
 * queue together; the lane that runs the first puts the others on the idle
 * lanes and evaluates the prompt once for all of them (solo models: its
 * keys and values copied to their lanes), so that they decode in the same
 * batch steps. Choices beyond the idle lanes wait in the queue for lanes
 * (and count against queue_max; a request whose choices would overflow it
 * is refused whole). Its first choice's result counts the shared prompt
 * evaluation as its own (cached_tokens, prompt_ms), the others evaluate
 * the prompt's last token only. n <= SCHED_MAX_CHOICES. 0 with jobs[0..n) set, or -1 with the
 * reason (nothing queued; the grammar stays the caller's). */
#define SCHED_MAX_CHOICES 8
int sched_submit_choices(sched *s, const char *model_id, const engine_request *req, int n,
                         const sched_callbacks *cb, void *const *users, sched_job **jobs, sched_refusal *why);
/* The job's prompt tokens once a worker has tokenized it and placed it on a
 * lane (before its first output), else 0; *cached: how many of them that
 * lane's cache held then. */
int sched_job_prompt_tokens(sched_job *job, int *cached);
/* Whether a job for model_id would be refused as SCHED_REFUSED_FULL now. */
int sched_model_full(const sched *s, const char *model_id);
/* The owner loses interest: no more callbacks; the worker stops at its next token. */
void sched_cancel(sched_job *job);

/* The i-th model's lanes, how many run a job now, and how many jobs wait
 * for a lane (read under the model's lock: a snapshot). */
void sched_model_load(const sched *s, int i, int *lanes, int *busy, int *queued);
typedef struct {
    int lanes, busy, queued;
    uint64_t refused_full;     /* 429s: refused with the queue full */
    uint64_t timed_out;        /* 503s: waited past the queue deadline */
    engine_step_stats steps;   /* the engine's batch steps */
} sched_model_stats;
void sched_model_get_stats(const sched *s, int i, sched_model_stats *out);
/* Jobs queued or running, over all models. */
int sched_jobs_active(const sched *s);

#endif
