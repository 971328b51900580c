/* membw.c: a STREAM-like probe of memory read bandwidth, the bound of
 * single-sequence decode (every weight byte is read once per token).
 *
 *   membw [--mib N] [--threads 1,2] [--reps N]
 *
 * Allocates an N MiB buffer (default 1024, far beyond any cache), writes it
 * once (so every page is mapped and not the shared zero page), then for each
 * thread count reads the whole buffer --reps times (default 10), the threads
 * each summing a contiguous slice with 256-bit loads and four independent
 * accumulators, and prints the best rate, as STREAM does: one JSON object
 * per thread count, {"threads", "mib", "read_gb_s"} (GB = 1e9 bytes).
 * Read only, unlike STREAM's copy/scale/add/triad: decode reads weights and
 * writes almost nothing. Standalone (no llmesh code); bench/vs_llamacpp.sh
 * builds it with -O2 -mavx2. */
#define _GNU_SOURCE
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    const uint8_t *p;
    size_t n;               /* bytes, a multiple of 128 */
    pthread_barrier_t *start;
    uint64_t sum;           /* kept so the loads cannot be optimised away */
} slice;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void *read_slice(void *arg)
{
    slice *s = arg;
    pthread_barrier_wait(s->start);
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i < s->n; i += 128) {
        const __m256i *v = (const __m256i *)(s->p + i);
        a0 = _mm256_add_epi64(a0, _mm256_load_si256(v));
        a1 = _mm256_add_epi64(a1, _mm256_load_si256(v + 1));
        a2 = _mm256_add_epi64(a2, _mm256_load_si256(v + 2));
        a3 = _mm256_add_epi64(a3, _mm256_load_si256(v + 3));
    }
    __m256i t = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
    uint64_t lanes[4];
    _mm256_storeu_si256((__m256i *)lanes, t);
    s->sum = lanes[0] + lanes[1] + lanes[2] + lanes[3];
    return NULL;
}

/* Seconds for n_threads threads to read buf once (the caller is one of them). */
static double read_once(const uint8_t *buf, size_t bytes, int n_threads, uint64_t *sum)
{
    slice sl[64];
    pthread_t th[64];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)n_threads + 1);
    size_t per = bytes / (size_t)n_threads / 128 * 128;
    for (int t = 0; t < n_threads; t++) {
        sl[t] = (slice){buf + (size_t)t * per, t == n_threads - 1 ? bytes - (size_t)t * per : per, &start, 0};
        if (pthread_create(&th[t], NULL, read_slice, &sl[t])) {
            fprintf(stderr, "membw: cannot start a thread\n");
            exit(1);
        }
    }
    double t0 = now();
    pthread_barrier_wait(&start);
    for (int t = 0; t < n_threads; t++) {
        pthread_join(th[t], NULL);
        *sum += sl[t].sum;
    }
    double dt = now() - t0;
    pthread_barrier_destroy(&start);
    return dt;
}

int main(int argc, char **argv)
{
    long mib = 1024, reps = 10;
    int threads[64] = {1}, n_threads = 1;
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && !strcmp(argv[i], "--mib")) {
            mib = strtol(argv[++i], NULL, 10);
        } else if (i + 1 < argc && !strcmp(argv[i], "--reps")) {
            reps = strtol(argv[++i], NULL, 10);
        } else if (i + 1 < argc && !strcmp(argv[i], "--threads")) {
            n_threads = 0;
            for (char *s = argv[++i], *end; *s && n_threads < 64; s = *end ? end + 1 : end) {
                long v = strtol(s, &end, 10);
                if (end == s || v < 1 || v > 64 || (*end && *end != ',')) {
                    fprintf(stderr, "membw: --threads needs counts from 1 to 64, e.g. 1,2\n");
                    return 2;
                }
                threads[n_threads++] = (int)v;
            }
        } else {
            fprintf(stderr, "usage: membw [--mib N] [--threads 1,2] [--reps N]\n");
            return 2;
        }
    }
    if (mib < 1 || mib > (1 << 20) || reps < 1 || reps > 1000 || n_threads < 1) {
        fprintf(stderr, "membw: --mib 1..1048576, --reps 1..1000\n");
        return 2;
    }
    size_t bytes = (size_t)mib << 20;
    uint8_t *buf = aligned_alloc(4096, bytes);
    if (!buf) {
        fprintf(stderr, "membw: cannot allocate %ld MiB\n", mib);
        return 1;
    }
    for (size_t i = 0; i < bytes; i++) buf[i] = (uint8_t)(i * 131 + 7);
    uint64_t sum = 0;
    for (int k = 0; k < n_threads; k++) {
        double best = 1e30;
        read_once(buf, bytes, threads[k], &sum); /* warm-up */
        for (long r = 0; r < reps; r++) {
            double dt = read_once(buf, bytes, threads[k], &sum);
            if (dt < best) best = dt;
        }
        printf("{\"threads\":%d,\"mib\":%ld,\"read_gb_s\":%.2f}\n", threads[k], mib, bytes / best / 1e9);
        fflush(stdout);
    }
    fprintf(stderr, "(checksum %llu)\n", (unsigned long long)sum);
    free(buf);
    return 0;
}
