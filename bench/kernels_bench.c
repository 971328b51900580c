/* kernels_bench.c: matrix-vector speed per tensor type. For each type, a
 * ROWS x COLS matrix of random weights quantized to it, y = W x for one input
 * vector (generation's shape), single-threaded; prints the median over RUNS
 * of GB/s of weight bytes read and the speed relative to F32 measured in the
 * same run. Usage: kernels_bench [--rows R] [--cols C] [--runs N] [--scalar] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/kernels.h"
#include "engine/quantize.h"
#include "lib/threadpool.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int rows = 4096, cols = 4096, runs = 7;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rows") && i + 1 < argc) rows = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--cols") && i + 1 < argc) cols = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc) runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--scalar")) kernel_force_isa(KERNEL_ISA_SCALAR);
        else {
            fprintf(stderr, "usage: kernels_bench [--rows R] [--cols C (multiple of 256)] [--runs N] [--scalar]\n");
            return 2;
        }
    }
    if (rows < 1 || cols < 256 || cols % 256 || runs < 1 || runs > 101) return 2;
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
    printf("%-6s %10s %10s %10s %8s\n", "type", "bytes/w", "us/matvec", "GB/s", "vs F32");
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
        kernel_matrix m = {t, rows, cols, w};
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
        printf("%-6s %10.4f %10.1f %10.2f %7.2fx\n", ggml_type_name(t), (double)row / cols, us,
               row * (double)rows / us * 1e-3, f32_us / us);
        free(w);
    }
    threadpool_free(pool);
    free(wf);
    free(x);
    free(y);
    free(scratch);
    return 0;
}
