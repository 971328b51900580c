/* threadpool.c: see threadpool.h.
 *
 * One batch is in flight at a time. The caller publishes it by writing the job
 * fields and then bumping `generation` (release); workers notice the new
 * generation, claim task indices from the shared `next_task` counter, and
 * check out by decrementing `pending`. The caller claims tasks too, then waits
 * for `pending` to reach zero, so no worker can still be reading the job when
 * the next one is written: that wait is the whole synchronisation story.
 *
 * The trade-off is that the caller waits for every worker to check in, even a
 * worker that found no task left. Workers that are spinning check in within
 * nanoseconds; a sleeping one costs a wake-up, which is why they spin first.
 * Spinning burns a core for up to SPIN_ITERATIONS pauses (~0.1-0.5 ms) after
 * each batch; the figure trades idle CPU against wake-up latency. */
#define _GNU_SOURCE
#include "lib/threadpool.h"

#include <assert.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SPIN_ITERATIONS 4096    /* pauses before a worker goes to sleep */
#define YIELD_AFTER (1 << 14)   /* caller pauses before it starts yielding its core */

struct threadpool {
    int n_threads;               /* caller included */
    pthread_t *workers;          /* n_threads - 1 */
    int n_started;

    pthread_mutex_t mutex;       /* guards n_sleeping, and orders generation vs sleep */
    pthread_cond_t wake;
    int n_sleeping;

    atomic_uint generation;      /* bumped once per batch (and once to stop) */
    atomic_int next_task;        /* next unclaimed task of the current batch */
    atomic_int pending;          /* workers not yet done with the current batch */
    atomic_int stop;
    atomic_int busy;             /* a threadpool_run is in progress (misuse check) */

    /* The current batch; written only while no worker can be reading it. */
    threadpool_fn fn;
    void *ctx;
    int n_tasks;
};

typedef struct {
    threadpool *pool;
    int index;                   /* 1 .. n_threads - 1 */
} worker_arg;

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Claims and runs tasks of the current batch until none is left. */
static void run_tasks(threadpool *pool, int thread)
{
    for (;;) {
        int task = atomic_fetch_add_explicit(&pool->next_task, 1, memory_order_relaxed);
        if (task >= pool->n_tasks) break;
        pool->fn(pool->ctx, task, thread);
    }
}

/* Waits until the generation differs from seen; returns the new one. */
static unsigned wait_generation(threadpool *pool, unsigned seen)
{
    for (int i = 0; i < SPIN_ITERATIONS; i++) {
        unsigned g = atomic_load_explicit(&pool->generation, memory_order_acquire);
        if (g != seen) return g;
        cpu_relax();
    }
    pthread_mutex_lock(&pool->mutex);
    pool->n_sleeping++;
    unsigned g;
    while ((g = atomic_load_explicit(&pool->generation, memory_order_acquire)) == seen)
        pthread_cond_wait(&pool->wake, &pool->mutex);
    pool->n_sleeping--;
    pthread_mutex_unlock(&pool->mutex);
    return g;
}

static void *worker_main(void *arg)
{
    worker_arg *w = arg;
    threadpool *pool = w->pool;
    int index = w->index;
    free(w);
    unsigned seen = 0;
    for (;;) {
        seen = wait_generation(pool, seen);
        if (atomic_load_explicit(&pool->stop, memory_order_acquire)) break;
        run_tasks(pool, index);
        atomic_fetch_sub_explicit(&pool->pending, 1, memory_order_release);
    }
    return NULL;
}

/* Publishes a new generation and wakes sleepers. Bumping under the mutex is
 * what keeps a worker from missing it between its last check and its sleep. */
static void publish(threadpool *pool)
{
    pthread_mutex_lock(&pool->mutex);
    atomic_fetch_add_explicit(&pool->generation, 1, memory_order_release);
    if (pool->n_sleeping > 0) pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mutex);
}

threadpool *threadpool_create(int n_threads, char *err, size_t errlen)
{
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    if (n_threads > 1024) {
        snprintf(err, errlen, "thread count %d is too large (at most 1024)", n_threads);
        return NULL;
    }
    threadpool *pool = calloc(1, sizeof *pool);
    if (!pool) goto oom;
    pool->n_threads = n_threads;
    pthread_mutex_init(&pool->mutex, NULL);
    pthread_cond_init(&pool->wake, NULL);
    atomic_init(&pool->generation, 0);
    atomic_init(&pool->next_task, 0);
    atomic_init(&pool->pending, 0);
    atomic_init(&pool->stop, 0);
    atomic_init(&pool->busy, 0);
    if (n_threads > 1) {
        pool->workers = calloc((size_t)n_threads - 1, sizeof *pool->workers);
        if (!pool->workers) goto oom;
    }
    for (int i = 1; i < n_threads; i++) {
        worker_arg *w = malloc(sizeof *w);
        if (!w) goto oom;
        w->pool = pool;
        w->index = i;
        int rc = pthread_create(&pool->workers[i - 1], NULL, worker_main, w);
        if (rc != 0) {
            free(w);
            snprintf(err, errlen, "cannot start worker thread %d of %d: %s", i, n_threads - 1,
                     strerror(rc));
            threadpool_free(pool);
            return NULL;
        }
        pool->n_started++;
    }
    return pool;
oom:
    snprintf(err, errlen, "out of memory creating a pool of %d threads", n_threads);
    threadpool_free(pool);
    return NULL;
}

void threadpool_free(threadpool *pool)
{
    if (!pool) return;
    assert(!atomic_load(&pool->busy));
    if (pool->n_started > 0) {
        atomic_store_explicit(&pool->stop, 1, memory_order_release);
        publish(pool);
        for (int i = 0; i < pool->n_started; i++) pthread_join(pool->workers[i], NULL);
    }
    pthread_cond_destroy(&pool->wake);
    pthread_mutex_destroy(&pool->mutex);
    free(pool->workers);
    free(pool);
}

int threadpool_size(const threadpool *pool) { return pool->n_threads; }

void threadpool_run(threadpool *pool, int n_tasks, threadpool_fn fn, void *ctx)
{
    assert(fn);
    if (n_tasks <= 0) return;
    int was_busy = atomic_exchange(&pool->busy, 1);
    assert(!was_busy && "threadpool_run: concurrent or nested call on one pool");
    (void)was_busy;

    /* Nothing to share: skip the hand-off entirely. */
    if (pool->n_threads == 1 || n_tasks == 1) {
        for (int t = 0; t < n_tasks; t++) fn(ctx, t, 0);
        atomic_store(&pool->busy, 0);
        return;
    }

    /* No worker reads these until publish(); the previous batch's workers
     * have all checked out (pending reached 0 before the last return). */
    pool->fn = fn;
    pool->ctx = ctx;
    pool->n_tasks = n_tasks;
    atomic_store_explicit(&pool->next_task, 0, memory_order_relaxed);
    atomic_store_explicit(&pool->pending, pool->n_threads - 1, memory_order_relaxed);
    publish(pool);

    run_tasks(pool, 0);

    for (int spins = 0; atomic_load_explicit(&pool->pending, memory_order_acquire) > 0; spins++) {
        if (spins < YIELD_AFTER) cpu_relax();
        else sched_yield(); /* a worker was descheduled: give it our core */
    }
    atomic_store(&pool->busy, 0);
}
