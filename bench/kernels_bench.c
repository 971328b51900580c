/* kernels_bench.c: matrix-vector speed per tensor type. For each type, a
 * ROWS x COLS matrix of random weights quantized to it, y = W x for one input
 * vector (generation's shape), single-threaded; prints the median over RUNS
 * of GB/s of weight bytes read and the speed relative to F32 measured in the
 * same run, through kernel_matmul with the active ISA (LLMESH_ISA, or
 * --isa). With --variants, also each rows kernel of kernels_rows.h the CPU
 * can run (avx2, avxvnni, and AVX-512's 256- and 512-bit forms), called
 * directly over the matrix, KERNEL_ROWS rows at a time, in GB/s.
 * With --prompt N (a prompt's shape: N input vectors), instead, for each type
 * with a tile kernel at the active ISA: the product of the matrix with N
 * vectors through the rows kernel one vector at a time (the path before tile
 * kernels: 8 vectors per pass over a 4-row group) and through the tile
 * kernel (all N vectors per group), in turn, run after run; prints G
 * multiply-adds per second of each and their ratio (Q4_0 and Q8_0 run in
 * row lanes, without rows or tile kernels: see --matmul).
 * With --layout, for each type with rows kernels: one vector through
 * kernel_matmul on the row-major matrix and on its interleaved copy
 * (kernel_interleave, what the model loader makes), in turn, GB/s of each.
 * With --matmul N: kernel_matmul on the interleaved copy, 1 vector and N
 * vectors, G multiply-adds per second (what the engine runs; only
 * kernel_matmul and kernel_interleave, so it builds against older libraries
 * for A/B).
 * Usage: kernels_bench [--rows R] [--cols C] [--runs N] [--isa NAME]
 *                      [--variants | --prompt N | --layout | --matmul N] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/kernels.h"
#include "engine/kernels_rows.h"
#include "engine/quants.h"
#include "engine/quantize.h"
#include "lib/threadpool.h"

/* The thread's CPU time, not the wall clock: on a machine shared with other
 * jobs, time spent descheduled would otherwise count (the products all run
 * on the calling thread: the pool has one thread). */
static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Microseconds one matvec takes through a rows kernel (act already in the
 * type's layout), averaged over ~50 ms. */
static double time_rows(kernel_rows_fn fn, const uint8_t *w, size_t stride, int rows, const void *act,
                        int cols, float *y)
{
    double t0 = now();
    int reps = 0;
    do {
        for (int i = 0; i < rows; i += KERNEL_ROWS)
            fn(w + (size_t)i * stride, stride, rows - i < KERNEL_ROWS ? rows - i : KERNEL_ROWS, act, cols, y + i);
        reps++;
    } while (now() - t0 < 0.05);
    return (now() - t0) / reps * 1e6;
}

/* Microseconds of one product with ntok vectors: through the tile kernel,
 * or (tile NULL) the rows kernel one vector at a time, 8 vectors per pass
 * over each 4-row group (the matrix product's old order). */
static double time_prompt(kernel_rows_fn rows_fn, kernel_tile_fn tile, const uint8_t *w, size_t stride, int rows,
                          const uint8_t *act, size_t astride, int ntok, int cols, float *y)
{
    double t0 = now();
    int reps = 0;
    do {
        for (int i = 0; i < rows; i += KERNEL_ROWS) {
            int nr = rows - i < KERNEL_ROWS ? rows - i : KERNEL_ROWS;
            if (tile) {
                tile(w + (size_t)i * stride, stride, nr, act, astride, ntok, cols, y + i, (size_t)rows);
                continue;
            }
            for (int t0k = 0; t0k < ntok; t0k += 8)
                for (int t = t0k; t < ntok && t < t0k + 8; t++)
                    rows_fn(w + (size_t)i * stride, stride, nr, act + (size_t)t * astride, cols, y + (size_t)t * rows + i);
        }
        reps++;
    } while (now() - t0 < 0.1);
    return (now() - t0) / reps * 1e6;
}

/* Microseconds of the same product through a slab: each 4-row group
 * unpacked once, then every vector over it (kernel_matmul's path for
 * batches of MATMUL_SLAB_MIN_TOKENS or more). */
static double time_slab(kernel_slab sl, const uint8_t *w, size_t stride, int rows, const uint8_t *act,
                        size_t astride, int ntok, int cols, float *y, uint8_t *slab)
{
    double t0 = now();
    int reps = 0;
    do {
        for (int i = 0; i < rows; i += KERNEL_ROWS) {
            int nr = rows - i < KERNEL_ROWS ? rows - i : KERNEL_ROWS;
            sl.unpack(w + (size_t)i * stride, stride, nr, cols, slab);
            sl.tile(slab, KERNEL_SLAB_ROW_BYTES(cols), nr, act, astride, ntok, cols, y + i, (size_t)rows);
        }
        reps++;
    } while (now() - t0 < 0.1);
    return (now() - t0) / reps * 1e6;
}

static kernel_slab active_slab(ggml_type t)
{
    switch (kernel_active_isa()) {
    case KERNEL_ISA_AVX512: return kernel_slab_avx512(t);
    case KERNEL_ISA_AVXVNNI: return kernel_slab_avxvnni(t);
    case KERNEL_ISA_AVX2: return kernel_slab_avx2(t);
    default: return (kernel_slab){NULL, NULL};
    }
}

static kernel_rows_fn active_rows(ggml_type t)
{
    switch (kernel_active_isa()) {
    case KERNEL_ISA_AVX512: return kernel_rows_avx512(t);
    case KERNEL_ISA_AVXVNNI: return kernel_rows_avxvnni(t);
    case KERNEL_ISA_AVX2: return kernel_rows_avx2(t);
    default: return NULL;
    }
}

static kernel_tile_fn active_tile(ggml_type t)
{
    switch (kernel_active_isa()) {
    case KERNEL_ISA_AVX512: return kernel_tile_avx512(t);
    case KERNEL_ISA_AVXVNNI: return kernel_tile_avxvnni(t);
    case KERNEL_ISA_AVX2: return kernel_tile_avx2(t);
    default: return NULL;
    }
}

/* Microseconds of one matvec through kernel_matmul, averaged over ~50 ms. */
static double time_matvec(threadpool *pool, const kernel_matrix *m, const float *x, float *y, void *scratch)
{
    double t0 = now();
    int reps = 0;
    do {
        kernel_matmul(pool, m, x, 1, y, scratch);
        reps++;
    } while (now() - t0 < 0.05);
    return (now() - t0) / reps * 1e6;
}

/* --layout: one vector through kernel_matmul on the row-major matrix and on
 * its interleaved copy (kernel_interleave), in turn, per type with rows
 * kernels: GB/s of weights read by each. */
static int bench_layout(int rows, int cols, int runs)
{
    static const ggml_type types[] = {GGML_TYPE_F16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0, GGML_TYPE_Q5_0, GGML_TYPE_Q2_K,
                                      GGML_TYPE_Q3_K, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K};
    printf("isa %s, %d x %d, 1 vector, 1 thread, median of %d (CPU time), GB/s of weights\n",
           kernel_isa_name(kernel_active_isa()), rows, cols, runs);
    printf("%-6s %12s %12s %8s\n", "type", "row-major", "interleaved", "ratio");
    char err[256];
    threadpool *pool = threadpool_create(1, err, sizeof err);
    float *wf = malloc(sizeof(float) * (size_t)cols), *x = malloc(sizeof(float) * (size_t)cols);
    float *y = malloc(sizeof(float) * (size_t)rows);
    void *scratch = malloc(kernel_matmul_scratch_bytes(GGML_TYPE_Q4_K, cols, 1) + 1);
    if (!pool || !wf || !x || !y || !scratch) return 1;
    for (int i = 0; i < cols; i++) x[i] = (float)rand() / RAND_MAX - 0.5f;
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        ggml_type t = types[k];
        size_t row = kernel_row_bytes(t, cols), bytes = row * (size_t)rows;
        uint8_t *w = malloc(bytes), *wi = aligned_alloc(64, (bytes + 63) / 64 * 64);
        if (!w || !wi) return 1;
        for (int r = 0; r < rows; r++) {
            for (int i = 0; i < cols; i++) wf[i] = (float)rand() / RAND_MAX - 0.5f;
            quantize_row(t, wf, w + (size_t)r * row, cols);
        }
        kernel_matrix m = {t, rows, cols, w, 0};
        kernel_interleave(&m, wi);
        kernel_matrix mi = {t, rows, cols, wi, 1};
        double tp[101], ti[101];
        time_matvec(pool, &m, x, y, scratch); /* warm up */
        time_matvec(pool, &mi, x, y, scratch);
        for (int r = 0; r < runs; r++) {
            tp[r] = time_matvec(pool, &m, x, y, scratch);
            ti[r] = time_matvec(pool, &mi, x, y, scratch);
        }
        qsort(tp, (size_t)runs, sizeof tp[0], cmp_double);
        qsort(ti, (size_t)runs, sizeof ti[0], cmp_double);
        printf("%-6s %12.2f %12.2f %7.2fx\n", ggml_type_name(t), bytes / tp[runs / 2] * 1e-3, bytes / ti[runs / 2] * 1e-3,
               tp[runs / 2] / ti[runs / 2]);
        free(w), free(wi);
    }
    threadpool_free(pool);
    free(wf), free(x), free(y), free(scratch);
    return 0;
}

/* --matmul N: what the engine runs, per type: kernel_matmul on the
 * interleaved copy (the loader's layout; Q4_0's row lanes) with 1 vector and
 * with N, one thread; G multiply-adds per second of each and the cost of N
 * vectors relative to 1. Uses only kernel_matmul and kernel_interleave, so
 * the same source measures an older library (A/B). */
static int bench_matmul(int rows, int cols, int runs, int ntok)
{
    static const ggml_type types[] = {GGML_TYPE_F16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0, GGML_TYPE_Q5_0, GGML_TYPE_Q4_K,
                                      GGML_TYPE_Q6_K};
    printf("isa %s, %d x %d, 1 and %d vectors through kernel_matmul (interleaved), 1 thread, median of %d (CPU time)\n",
           kernel_isa_name(kernel_active_isa()), rows, cols, ntok, runs);
    printf("%-6s %12s %12s %14s\n", "type", "GMAC/s x1", "GMAC/s xN", "time N / 1");
    char err[256];
    threadpool *pool = threadpool_create(1, err, sizeof err);
    float *wf = malloc(sizeof(float) * (size_t)cols), *x = malloc(sizeof(float) * (size_t)cols * ntok);
    float *y = malloc(sizeof(float) * (size_t)rows * ntok);
    void *scratch = malloc(kernel_matmul_scratch_bytes(GGML_TYPE_Q4_K, cols, ntok) + 1);
    if (!pool || !wf || !x || !y || !scratch) return 1;
    for (int i = 0; i < cols * ntok; i++) x[i] = (float)rand() / RAND_MAX - 0.5f;
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        ggml_type t = types[k];
        if (!kernel_interleavable(t, cols)) continue;
        size_t row = kernel_row_bytes(t, cols), bytes = row * (size_t)rows;
        uint8_t *w = malloc(bytes), *wi = aligned_alloc(64, (bytes + 63) / 64 * 64);
        if (!w || !wi) return 1;
        for (int r = 0; r < rows; r++) {
            for (int i = 0; i < cols; i++) wf[i] = (float)rand() / RAND_MAX - 0.5f;
            quantize_row(t, wf, w + (size_t)r * row, cols);
        }
        kernel_matrix m = {t, rows, cols, w, 0};
        kernel_interleave(&m, wi);
        kernel_matrix mi = {t, rows, cols, wi, 1};
        double t1[101], tn[101];
        for (int r = -1; r < runs; r++) { /* r = -1 warms up */
            double a = now();
            int reps = 0;
            do kernel_matmul(pool, &mi, x, 1, y, scratch), reps++;
            while (now() - a < 0.05);
            double one = (now() - a) / reps;
            a = now(), reps = 0;
            do kernel_matmul(pool, &mi, x, ntok, y, scratch), reps++;
            while (now() - a < 0.1);
            if (r >= 0) t1[r] = one, tn[r] = (now() - a) / reps;
        }
        qsort(t1, (size_t)runs, sizeof t1[0], cmp_double);
        qsort(tn, (size_t)runs, sizeof tn[0], cmp_double);
        double macs = (double)rows * cols;
        printf("%-6s %12.2f %12.2f %13.2fx\n", ggml_type_name(t), macs / t1[runs / 2] * 1e-9,
               macs * ntok / tn[runs / 2] * 1e-9, tn[runs / 2] / t1[runs / 2]);
        free(w), free(wi);
    }
    threadpool_free(pool);
    free(wf), free(x), free(y), free(scratch);
    return 0;
}

/* --prompt: rows kernels token by token against tile kernels, per type. */
static int bench_prompt(int rows, int cols, int runs, int ntok)
{
    static const ggml_type types[] = {GGML_TYPE_F16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0, GGML_TYPE_Q5_0, GGML_TYPE_Q2_K,
                                      GGML_TYPE_Q3_K, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K};
    printf("isa %s, %d x %d, %d vectors, 1 thread, median of %d (CPU time)\n", kernel_isa_name(kernel_active_isa()),
           rows, cols, ntok, runs);
    printf("%-6s %16s %16s %8s %16s %11s\n", "type", "rows GMAC/s", "tile GMAC/s", "ratio", "slab GMAC/s",
           "slab/tile");
    float *wf = malloc(sizeof(float) * (size_t)cols), *x = malloc(sizeof(float) * (size_t)cols);
    float *y = malloc(sizeof(float) * (size_t)rows * (size_t)ntok);
    size_t astride_max = kernel_row_bytes(GGML_TYPE_F32, cols);
    uint8_t *act = malloc(astride_max * (size_t)ntok);
    uint8_t *slab = malloc(KERNEL_SLAB_ROW_BYTES(cols) * KERNEL_ROWS);
    if (!wf || !x || !y || !act || !slab) return 1;
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        ggml_type t = types[k];
        kernel_rows_fn rows_fn = active_rows(t);
        kernel_tile_fn tile = active_tile(t);
        if (!rows_fn || !tile) continue;
        size_t stride = kernel_row_bytes(t, cols);
        uint8_t *w = malloc(stride * (size_t)rows);
        if (!w) return 1;
        for (int r = 0; r < rows; r++) {
            for (int i = 0; i < cols; i++) wf[i] = (float)rand() / RAND_MAX - 0.5f;
            quantize_row(t, wf, w + (size_t)r * stride, cols);
        }
        const quant_traits *qt = quant_get_traits(t);
        ggml_type at = t == GGML_TYPE_F16 ? GGML_TYPE_F32 : (qt && qt->act_type == GGML_TYPE_Q8_K) ? GGML_TYPE_Q8_K : GGML_TYPE_Q8_0;
        size_t astride = kernel_row_bytes(at, cols);
        for (int n = 0; n < ntok; n++) {
            for (int i = 0; i < cols; i++) x[i] = (float)rand() / RAND_MAX - 0.5f;
            uint8_t *a = act + (size_t)n * astride;
            if (at == GGML_TYPE_F32) memcpy(a, x, sizeof(float) * (size_t)cols);
            else if (at == GGML_TYPE_Q8_K) quant_quantize_row_q8_k(x, (quant_block_q8_k *)a, cols);
            else kernel_quantize_row_q8_0(x, (kernel_block_q8_0 *)a, cols);
        }
        kernel_slab sl_plain = active_slab(t);
        double tr[101], tt[101], ts[101];
        time_prompt(rows_fn, NULL, w, stride, rows, act, astride, ntok, cols, y); /* warm up */
        time_prompt(rows_fn, tile, w, stride, rows, act, astride, ntok, cols, y);
        for (int r = 0; r < runs; r++) { /* in turn, so load changes hit all three alike */
            tr[r] = time_prompt(rows_fn, NULL, w, stride, rows, act, astride, ntok, cols, y);
            tt[r] = time_prompt(rows_fn, tile, w, stride, rows, act, astride, ntok, cols, y);
            ts[r] = sl_plain.tile ? time_slab(sl_plain, w, stride, rows, act, astride, ntok, cols, y, slab) : 0;
        }
        qsort(tr, (size_t)runs, sizeof tr[0], cmp_double);
        qsort(tt, (size_t)runs, sizeof tt[0], cmp_double);
        qsort(ts, (size_t)runs, sizeof ts[0], cmp_double);
        double macs = (double)rows * cols * ntok;
        printf("%-6s %16.2f %16.2f %7.2fx", ggml_type_name(t), macs / tr[runs / 2] * 1e-3, macs / tt[runs / 2] * 1e-3,
               tr[runs / 2] / tt[runs / 2]);
        if (sl_plain.tile) printf(" %16.2f %10.2fx\n", macs / ts[runs / 2] * 1e-3, tt[runs / 2] / ts[runs / 2]);
        else printf(" %16s %11s\n", "-", "-");
        free(w);
    }
    free(wf), free(x), free(y), free(act), free(slab);
    return 0;
}

int main(int argc, char **argv)
{
    int rows = 4096, cols = 4096, runs = 7, variants = 0, prompt = 0, layout = 0, matmul = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rows") && i + 1 < argc) rows = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--cols") && i + 1 < argc) cols = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc) runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--isa") && i + 1 < argc) {
            int isa = kernel_isa_from_name(argv[++i]);
            if (isa < 0 || kernel_force_isa((kernel_isa)isa) != 0) {
                fprintf(stderr, "kernels_bench: this CPU cannot run ISA '%s'\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(argv[i], "--scalar")) kernel_force_isa(KERNEL_ISA_SCALAR);
        else if (!strcmp(argv[i], "--variants")) variants = 1;
        else if (!strcmp(argv[i], "--layout")) layout = 1;
        else if (!strcmp(argv[i], "--matmul") && i + 1 < argc) matmul = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--prompt") && i + 1 < argc) prompt = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: kernels_bench [--rows R] [--cols C (multiple of 256)] [--runs N] [--isa NAME] "
                            "[--variants | --prompt N | --layout | --matmul N]\n");
            return 2;
        }
    }
    if (rows < 1 || cols < 256 || cols % 256 || runs < 1 || runs > 101 || prompt < 0 || prompt > 512) return 2;
    if (prompt) return bench_prompt(rows, cols, runs, prompt);
    if (layout) return bench_layout(rows, cols, runs);
    if (matmul > 0) return bench_matmul(rows, cols, runs, matmul);
    static const ggml_type types[] = {
        GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0,
        GGML_TYPE_Q4_1, GGML_TYPE_Q5_0, GGML_TYPE_Q5_1, GGML_TYPE_Q2_K, GGML_TYPE_Q3_K,
        GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K,
    };
    char err[256];
    threadpool *pool = threadpool_create(1, err, sizeof err);
    float *wf = malloc(sizeof(float) * (size_t)cols), *x = malloc(sizeof(float) * (size_t)cols);
    float *y = malloc(sizeof(float) * (size_t)rows);
    void *scratch = malloc(kernel_matmul_scratch_bytes(GGML_TYPE_Q4_K, cols, 1) + 1);
    if (!pool || !wf || !x || !y || !scratch) return 1;
    srand(1);
    for (int i = 0; i < cols; i++) x[i] = (float)rand() / RAND_MAX - 0.5f;
    printf("isa %s, %d x %d, 1 thread, median of %d\n", kernel_isa_name(kernel_active_isa()), rows, cols, runs);
    printf("%-6s %10s %10s %10s %8s", "type", "bytes/w", "us/matvec", "GB/s", "vs F32");
    struct {
        const char *name;
        kernel_isa isa;
        int bits;
    } vars[] = {{"avx2", KERNEL_ISA_AVX2, 256}, {"avxvnni", KERNEL_ISA_AVXVNNI, 256},
                {"avx512/256", KERNEL_ISA_AVX512, 256}, {"avx512/512", KERNEL_ISA_AVX512, 512}};
    int n_vars = 0;
    if (variants) {
        n_vars = 4;
        for (int v = 0; v < n_vars; v++) printf(" %11s", vars[v].name);
        printf("   (GB/s)");
    }
    printf("\n");
    uint8_t *act = malloc(kernel_row_bytes(GGML_TYPE_Q8_K, cols) + kernel_row_bytes(GGML_TYPE_Q8_0, cols));
    if (!act) return 1;
    double f32_us = 0;
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        ggml_type t = types[k];
        size_t row = kernel_row_bytes(t, cols);
        uint8_t *w = malloc(row * (size_t)rows);
        if (!w) return 1;
        for (int r = 0; r < rows; r++) {
            for (int i = 0; i < cols; i++) wf[i] = (float)rand() / RAND_MAX - 0.5f;
            quantize_row(t, wf, w + (size_t)r * row, cols);
        }
        kernel_matrix m = {t, rows, cols, w, 0};
        double times[101];
        kernel_matmul(pool, &m, x, 1, y, scratch); /* warm up */
        for (int r = 0; r < runs; r++) {
            double t0 = now();
            int reps = 0;
            do {
                kernel_matmul(pool, &m, x, 1, y, scratch);
                reps++;
            } while (now() - t0 < 0.05);
            times[r] = (now() - t0) / reps * 1e6;
        }
        qsort(times, (size_t)runs, sizeof times[0], cmp_double);
        double us = times[runs / 2];
        if (t == GGML_TYPE_F32) f32_us = us;
        printf("%-6s %10.4f %10.1f %10.2f %7.2fx", ggml_type_name(t), (double)row / cols, us,
               row * (double)rows / us * 1e-3, f32_us / us);
        const quant_traits *qt = quant_get_traits(t);
        const void *a = x;
        if (t == GGML_TYPE_Q8_0 || (qt && qt->act_type == GGML_TYPE_Q8_0))
            kernel_quantize_row_q8_0(x, (kernel_block_q8_0 *)act, cols), a = act;
        else if (qt)
            quant_quantize_row_q8_k(x, (quant_block_q8_k *)act, cols), a = act;
        /* The variants take turns, run after run, so that the load of a shared
         * machine falls on all of them alike. */
        kernel_rows_fn fns[4] = {0};
        double vt[4][101];
        for (int v = 0; v < n_vars; v++) {
            if (!kernel_isa_available(vars[v].isa)) continue;
            if (vars[v].isa == KERNEL_ISA_AVX2) fns[v] = kernel_rows_avx2(t);
            else if (vars[v].isa == KERNEL_ISA_AVXVNNI) fns[v] = kernel_rows_avxvnni(t);
            else fns[v] = kernel_rows_avx512_width(t, vars[v].bits);
            if (fns[v]) time_rows(fns[v], w, row, rows, a, cols, y); /* warm up */
        }
        for (int r = 0; r < runs; r++)
            for (int v = 0; v < n_vars; v++)
                if (fns[v]) vt[v][r] = time_rows(fns[v], w, row, rows, a, cols, y);
        for (int v = 0; v < n_vars; v++) {
            if (!fns[v]) {
                printf(" %11s", "-");
                continue;
            }
            qsort(vt[v], (size_t)runs, sizeof vt[v][0], cmp_double);
            printf(" %11.2f", row * (double)rows / vt[v][runs / 2] * 1e-3);
        }
        printf("\n");
        free(w);
    }
    threadpool_free(pool);
    free(wf);
    free(x);
    free(y);
    free(scratch);
    free(act);
    return 0;
}
