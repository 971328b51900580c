/* threadpool.h: a fixed set of persistent worker threads that run one batch of
 * independent tasks at a time, with the calling thread working alongside.
 *
 * Made for many small, short dispatches (one per matrix product, dozens per
 * generated token): idle workers spin briefly on an atomic before sleeping on
 * a condition variable, so back-to-back dispatches cost no system call.
 * Not here: queues of unrelated jobs, futures, priorities, work stealing
 * between batches. Generic: knows nothing about llmesh.
 *
 * Threading: one thread at a time may call threadpool_run on a given pool,
 * and a task must not call threadpool_run on its own pool (asserted). */
#ifndef LLMESH_THREADPOOL_H
#define LLMESH_THREADPOOL_H

#include <stddef.h>

typedef struct threadpool threadpool;

/* One task of a batch. task is in [0, n_tasks); thread is in
 * [0, threadpool_size) and identifies the thread running it (0 = the caller of
 * threadpool_run), so a task may use per-thread scratch indexed by it. Which
 * thread runs which task is not fixed: results must not depend on it. */
typedef void (*threadpool_fn)(void *ctx, int task, int thread);

/* Creates a pool of n_threads threads in total, the caller of threadpool_run
 * included (so n_threads - 1 workers are started); n_threads <= 0 means one per
 * online CPU. Returns NULL with a message in err on failure. The caller owns
 * the pool and frees it with threadpool_free. */
threadpool *threadpool_create(int n_threads, char *err, size_t errlen);

/* Stops and joins the workers, then frees the pool. NULL is allowed. Must not
 * be called while a threadpool_run is in progress. */
void threadpool_free(threadpool *pool);

/* Threads in the pool, the calling thread included (>= 1). */
int threadpool_size(const threadpool *pool);

/* Runs fn(ctx, task, thread) once for every task in [0, n_tasks), spread over
 * the pool's threads and the caller, and returns when all have finished.
 * Memory written by the tasks is visible to the caller on return. */
void threadpool_run(threadpool *pool, int n_tasks, threadpool_fn fn, void *ctx);

#endif
