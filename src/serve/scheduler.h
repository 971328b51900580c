/* scheduler.h: runs generation jobs for the models this node serves.
 *
 * Each local model gets a FIFO of jobs and one worker thread per lane
 * (engine_model_lanes: each lane has its own KV cache, so that many jobs run
 * at once; the engine serialises their compute on the model's thread pool,
 * and a lane waiting on a pipeline's other stages leaves it to the others;
 * batching several requests in one pass is a later step). The lowest idle
 * lane takes a new job, so that one client's requests keep landing on the
 * lane whose cache holds their prefix. Generated text travels back to the
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
     * a message. Last callback; the job handle is invalid afterwards. */
    void (*on_done)(void *user, const engine_result *result, const char *error);
} sched_callbacks;

sched *sched_new(struct event_base *base);
/* Cancels every job, stops and joins the workers, frees the models. */
void sched_free(sched *s);

/* Takes ownership of m and starts its worker. 0, or -1 when a model with the
 * same id is already served. */
int sched_add_model(sched *s, engine_model *m);
/* Stops the model's worker threads (joined: they are idle) and frees it.
 * 0; 1 when a job of it is queued, running or undelivered (nothing done);
 * -1 when no such model is served. */
int sched_remove_model(sched *s, const char *model_id);
/* The served model with this id, or NULL. */
engine_model *sched_find_model(const sched *s, const char *model_id);
int sched_model_count(const sched *s);
engine_model *sched_model_at(const sched *s, int i);

/* Queues a generation. The request, its prompt text and ids are copied.
 * NULL when model_id is not served (or out of memory). */
sched_job *sched_submit(sched *s, const char *model_id, const engine_request *req,
                        const sched_callbacks *cb, void *user);
/* The owner loses interest: no more callbacks; the worker stops at its next token. */
void sched_cancel(sched_job *job);

/* The i-th model's lanes, how many run a job now, and how many jobs wait
 * for a lane (read under the model's lock: a snapshot). */
void sched_model_load(const sched *s, int i, int *lanes, int *busy, int *queued);
/* Jobs queued or running, over all models. */
int sched_jobs_active(const sched *s);

#endif
