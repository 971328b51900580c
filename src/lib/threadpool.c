/* threadpool.c: see threadpool.h.
 *
 * One batch is in flight at a time. Its state is one 64-bit atomic word,
 * `claim` = generation (24 bits) | task count (20 bits) | next task (20 bits).
 * The caller publishes a batch by storing a new word (release); any thread
 * takes a task by compare-and-swapping the next-task field up by one, which
 * succeeds only while the word still names the batch it has seen and tasks
 * remain. A finished task bumps `done`; the caller returns when done equals
 * the task count.
 *
 * Why not a barrier on the workers? The caller never waits for a worker that
 * has no task: a worker that was asleep or descheduled when the batch came
 * simply finds it used up (or a newer one) when it runs. On a machine shared
 * with other processes that matters: a barrier would stall every product on
 * the slowest-scheduled thread.
 *
 * Why is reading fn/ctx safe? A thread reads them only after its CAS took a
 * task of generation G; generation G cannot finish before that task does, and
 * the caller writes the next batch's fn/ctx only after G has finished. They
 * are atomics anyway, so a late thread's failed attempt is not a data race.
 * The 24-bit generation makes a stale CAS succeed only if a thread stalls
 * between its load and its CAS for exactly a multiple of 16M batches and the
 * task fields match too; we accept that.
 *
 * Idle workers spin for SPIN_ITERATIONS pauses (~0.1-0.5 ms) before sleeping
 * on a condition variable: back-to-back batches (one per matrix product)
 * then cost no system call, at the price of some idle CPU after each burst. */
#define _GNU_SOURCE
#include "lib/threadpool.h"

#include <assert.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/cpu_relax.h"

#define SPIN_ITERATIONS 4096    /* pauses before an idle worker goes to sleep */
#define YIELD_AFTER 2048        /* pauses before a waiting caller starts yielding its core */

#define TASK_BITS 20
#define TASK_MAX ((1u << TASK_BITS) - 1)  /* tasks per round; bigger batches run in rounds */
#define CLAIM(gen, n, next) (((uint64_t)(gen) << (2 * TASK_BITS)) | ((uint64_t)(n) << TASK_BITS) | (next))
#define CLAIM_GEN(c) ((uint32_t)((c) >> (2 * TASK_BITS)))
#define CLAIM_N(c) ((uint32_t)((c) >> TASK_BITS) & TASK_MAX)
#define CLAIM_NEXT(c) ((uint32_t)(c) & TASK_MAX)
#define GEN_MASK 0xffffffu

struct threadpool {
    int n_threads;               /* caller included */
    pthread_t *workers;          /* n_threads - 1 */
    int n_started;

    pthread_mutex_t mutex;       /* guards n_sleeping; orders publication vs sleep */
    pthread_cond_t wake;
    int n_sleeping;

    _Atomic uint64_t claim;      /* see the file comment */
    atomic_uint done;            /* tasks of the current round finished */
    atomic_int stop;
    atomic_int busy;             /* a threadpool_run is in progress (misuse check) */
    uint32_t generation;         /* caller's copy of the current generation */

    /* The current round. */
    _Atomic(threadpool_fn) fn;
    _Atomic(void *) ctx;
    atomic_int base;             /* task index of the round's first task */
};

typedef struct {
    threadpool *pool;
    int index;                   /* 1 .. n_threads - 1 */
} worker_arg;

/* Takes and runs tasks of generation gen until it has none left. */
static void run_tasks(threadpool *pool, uint32_t gen, int thread)
{
    uint64_t c = atomic_load_explicit(&pool->claim, memory_order_acquire);
    while (CLAIM_GEN(c) == gen && CLAIM_NEXT(c) < CLAIM_N(c)) {
        if (!atomic_compare_exchange_weak_explicit(&pool->claim, &c, c + 1, memory_order_acq_rel,
                                                   memory_order_acquire))
            continue; /* c now holds the current word */
        threadpool_fn fn = atomic_load_explicit(&pool->fn, memory_order_relaxed);
        void *ctx = atomic_load_explicit(&pool->ctx, memory_order_relaxed);
        int base = atomic_load_explicit(&pool->base, memory_order_relaxed);
        fn(ctx, base + (int)CLAIM_NEXT(c), thread);
        atomic_fetch_add_explicit(&pool->done, 1, memory_order_release);
        c = atomic_load_explicit(&pool->claim, memory_order_acquire);
    }
}

/* Waits until the generation differs from seen (or stop); returns the new one. */
static uint32_t wait_generation(threadpool *pool, uint32_t seen)
{
    for (int i = 0; i < SPIN_ITERATIONS; i++) {
        uint32_t g = CLAIM_GEN(atomic_load_explicit(&pool->claim, memory_order_acquire));
        if (g != seen || atomic_load_explicit(&pool->stop, memory_order_relaxed)) return g;
        cpu_relax();
    }
    pthread_mutex_lock(&pool->mutex);
    pool->n_sleeping++;
    uint32_t g;
    while ((g = CLAIM_GEN(atomic_load_explicit(&pool->claim, memory_order_acquire))) == seen &&
           !atomic_load_explicit(&pool->stop, memory_order_relaxed))
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
    uint32_t seen = 0;
    for (;;) {
        seen = wait_generation(pool, seen);
        if (atomic_load_explicit(&pool->stop, memory_order_acquire)) break;
        run_tasks(pool, seen, index);
    }
    return NULL;
}

/* Stores a new claim word (or the stop flag) and wakes sleepers. Doing it
 * under the mutex keeps a worker from missing it between its last check and
 * its sleep. */
static void publish(threadpool *pool, uint64_t claim, int stop)
{
    pthread_mutex_lock(&pool->mutex);
    if (stop) atomic_store_explicit(&pool->stop, 1, memory_order_release);
    else atomic_store_explicit(&pool->claim, claim, memory_order_release);
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
    atomic_init(&pool->claim, CLAIM(0, 0, 0));
    atomic_init(&pool->done, 0);
    atomic_init(&pool->stop, 0);
    atomic_init(&pool->busy, 0);
    atomic_init(&pool->fn, NULL);
    atomic_init(&pool->ctx, NULL);
    atomic_init(&pool->base, 0);
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
        publish(pool, 0, 1);
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

    atomic_store_explicit(&pool->fn, fn, memory_order_relaxed);
    atomic_store_explicit(&pool->ctx, ctx, memory_order_relaxed);
    for (int base = 0; base < n_tasks; base += (int)TASK_MAX) {
        uint32_t n = n_tasks - base < (int)TASK_MAX ? (uint32_t)(n_tasks - base) : TASK_MAX;
        /* The previous round is complete, so no thread reads these now. */
        atomic_store_explicit(&pool->base, base, memory_order_relaxed);
        atomic_store_explicit(&pool->done, 0, memory_order_relaxed);
        pool->generation = (pool->generation + 1) & GEN_MASK;
        publish(pool, CLAIM(pool->generation, n, 0), 0);

        run_tasks(pool, pool->generation, 0);

        for (int spins = 0; atomic_load_explicit(&pool->done, memory_order_acquire) < n; spins++) {
            if (spins < YIELD_AFTER) cpu_relax();
            else sched_yield(); /* the thread running the last task was descheduled */
        }
    }
    atomic_store(&pool->busy, 0);
}
