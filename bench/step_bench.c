/* step_bench.c: what a batched decode step costs, without the server
 * (issue 10: "decode steps alone"). For each batch width B in --widths, B
 * sequences each evaluate a --prompt-token prompt, then --steps decode steps
 * of one token per sequence through one model_forward_batch call each (the
 * call continuous batching makes per step), every sequence's logits
 * computed, as serving does; sampling excluded. Prints the median over
 * --runs of the CPU time per step and per token, and each width's tokens
 * per CPU-second relative to B = 1, widths alternated run after run.
 *
 * CPU time, not wall time: the development machine is shared, and time
 * spent descheduled must not count. The process's CPU time is read
 * (CLOCK_PROCESS_CPUTIME_ID), so with --threads above 1 the pool workers'
 * idle spinning between products counts too; --threads 1 gives the steps'
 * own work. The wall time per step is printed beside it (meaningful on a
 * quiet machine only).
 *
 * --phases: also where each width's decode steps spend their time, phase
 * by phase (model_batch_profile: the calling thread's CPU time, so a
 * parallel phase includes its spin waiting for the pool's last task; the
 * wall time of a step on a quiet machine), in ms per step, mean over every
 * timed run.
 *
 * Usage: step_bench --model PATH [--widths 1,2,4,8] [--steps 32]
 *                   [--prompt 16] [--runs 5] [--threads 1] [--phases 1]
 * Build: bench/step_bench.sh (release build, no sanitizers). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/gguf.h"
#include "engine/model.h"
#include "lib/threadpool.h"

#define MAX_WIDTHS 8
#define MAX_RUNS 101

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static const char *const phase_names[MODEL_PHASE_COUNT] = {
    "embed, RoPE tables", "RMSNorms", "q/k/v products", "biases, RoPE, KV store", "attention",
    "output projection", "gate/up products", "SwiGLU", "down product", "residual adds",
    "classifier", "logits copied out"};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* CPU seconds of `steps` decode steps of `width` sequences from a fresh
 * prompt each (their wall seconds in *wall); -1 on error (printed). With
 * phases, the steps' time per phase is added there. */
static double run_width(const model *m, model_batch *b, threadpool *pool, model_state **states, int width,
                        int prompt, int steps, float *logits, unsigned *seed, double *wall, uint64_t *phases)
{
    const model_config *c = model_get_config(m);
    char err[256];
    int32_t toks[64];
    model_seq seqs[MODEL_BATCH];
    for (int k = 0; k < width; k++) {
        model_state_truncate(states[k], 0);
        for (int i = 0; i < prompt; i++) toks[i] = (int32_t)(rand_r(seed) % (unsigned)c->n_vocab);
        seqs[0] = (model_seq){.state = states[k], .tokens = toks, .n = prompt, .logits = logits};
        if (model_forward_batch(m, b, pool, seqs, 1, err, sizeof err) != 0) {
            fprintf(stderr, "step_bench: %s\n", err);
            return -1;
        }
    }
    int32_t next[MODEL_BATCH];
    model_batch_profile(b, phases);
    double t0 = cpu_s(), w0 = wall_s();
    for (int s = 0; s < steps; s++) {
        for (int k = 0; k < width; k++) {
            next[k] = (int32_t)(rand_r(seed) % (unsigned)c->n_vocab);
            seqs[k] = (model_seq){.state = states[k], .tokens = &next[k], .n = 1,
                                  .logits = logits + (size_t)k * c->n_vocab};
        }
        if (model_forward_batch(m, b, pool, seqs, width, err, sizeof err) != 0) {
            fprintf(stderr, "step_bench: %s\n", err);
            return -1;
        }
    }
    double cpu = cpu_s() - t0;
    *wall = wall_s() - w0;
    model_batch_profile(b, NULL);
    return cpu;
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    int widths[MAX_WIDTHS] = {1, 2, 4, 8}, n_widths = 4, steps = 32, prompt = 16, runs = 5, threads = 1, phases = 0;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) goto usage;
        const char *v = argv[++i];
        if (!strcmp(argv[i - 1], "--model")) path = v;
        else if (!strcmp(argv[i - 1], "--steps")) steps = atoi(v);
        else if (!strcmp(argv[i - 1], "--prompt")) prompt = atoi(v);
        else if (!strcmp(argv[i - 1], "--runs")) runs = atoi(v);
        else if (!strcmp(argv[i - 1], "--threads")) threads = atoi(v);
        else if (!strcmp(argv[i - 1], "--phases")) phases = atoi(v);
        else if (!strcmp(argv[i - 1], "--widths")) {
            n_widths = 0;
            for (char *s = (char *)v; *s && n_widths < MAX_WIDTHS; s += *s == ',') widths[n_widths++] = (int)strtol(s, &s, 10);
        } else goto usage;
    }
    if (!path || steps < 1 || steps > 1000 || prompt < 1 || prompt > 64 || runs < 1 || runs > MAX_RUNS ||
        threads < 1 || threads > 64 || n_widths < 1)
        goto usage;
    int max_width = 0;
    for (int w = 0; w < n_widths; w++) {
        if (widths[w] < 1 || widths[w] > MODEL_BATCH) goto usage;
        if (widths[w] > max_width) max_width = widths[w];
    }

    char err[256];
    gguf_file *f = gguf_open(path, err, sizeof err);
    model *m = f ? model_load(f, err, sizeof err) : NULL;
    if (!m) {
        fprintf(stderr, "step_bench: %s: %s\n", path, err);
        return 1;
    }
    const model_config *c = model_get_config(m);
    threadpool *pool = threadpool_create(threads, err, sizeof err);
    model_batch *b = pool ? model_batch_new(m, err, sizeof err) : NULL;
    model_state *states[MODEL_BATCH];
    float *logits = malloc(sizeof(float) * (size_t)max_width * (size_t)c->n_vocab);
    if (!b || !logits) {
        fprintf(stderr, "step_bench: %s\n", logits ? err : "out of memory");
        return 1;
    }
    for (int k = 0; k < max_width; k++)
        if (!(states[k] = model_state_new(m, prompt + steps + 1, MODEL_KV_F16, err, sizeof err))) {
            fprintf(stderr, "step_bench: %s\n", err);
            return 1;
        }

    unsigned seed = 12345;
    double t[MAX_WIDTHS][MAX_RUNS], wall[MAX_WIDTHS][MAX_RUNS], unused;
    static uint64_t phase_ns[MAX_WIDTHS][MODEL_PHASE_COUNT];
    for (int w = 0; w < n_widths; w++) /* warm-up: faults the mapped weights in */
        if (run_width(m, b, pool, states, widths[w], prompt, 2, logits, &seed, &unused, NULL) < 0) return 1;
    for (int r = 0; r < runs; r++)
        for (int w = 0; w < n_widths; w++)
            if ((t[w][r] = run_width(m, b, pool, states, widths[w], prompt, steps, logits, &seed, &wall[w][r],
                                     phases ? phase_ns[w] : NULL)) < 0)
                return 1;

    printf("%s, %d thread%s, %d steps after a %d-token prompt, CPU time, median of %d\n", path, threads,
           threads > 1 ? "s" : "", steps, prompt, runs);
    printf("| sequences | CPU ms per step | CPU ms per token | tokens per CPU-s vs 1 | wall ms per step |\n"
           "|---:|---:|---:|---:|---:|\n");
    double one = 0;
    for (int w = 0; w < n_widths; w++) {
        qsort(t[w], (size_t)runs, sizeof t[w][0], cmp_double);
        qsort(wall[w], (size_t)runs, sizeof wall[w][0], cmp_double);
        double step_ms = t[w][runs / 2] / steps * 1e3;
        if (w == 0) one = step_ms / widths[0];
        printf("| %d | %.2f | %.2f | %.2fx | %.2f |\n", widths[w], step_ms, step_ms / widths[w],
               one / (step_ms / widths[w]), wall[w][runs / 2] / steps * 1e3);
    }
    if (phases) {
        printf("\nms per step by phase (the calling thread's CPU time, mean over %d runs)\n| phase |", runs);
        for (int w = 0; w < n_widths; w++) printf(" %d seq |", widths[w]);
        printf("\n|---|");
        for (int w = 0; w < n_widths; w++) printf("---:|");
        printf("\n");
        double total[MAX_WIDTHS] = {0};
        for (int p = 0; p < MODEL_PHASE_COUNT; p++) {
            printf("| %s |", phase_names[p]);
            for (int w = 0; w < n_widths; w++) {
                double ms = phase_ns[w][p] * 1e-6 / ((double)runs * steps);
                total[w] += ms;
                printf(" %.3f |", ms);
            }
            printf("\n");
        }
        printf("| total |");
        for (int w = 0; w < n_widths; w++) printf(" %.3f |", total[w]);
        printf("\n");
    }
    for (int k = 0; k < max_width; k++) model_state_free(states[k]);
    free(logits);
    model_batch_free(b);
    threadpool_free(pool);
    model_free(m);
    gguf_close(f);
    return 0;
usage:
    fprintf(stderr, "usage: step_bench --model PATH [--widths 1,2,4,8] [--steps 32] [--prompt 16] [--runs 5] "
                    "[--threads 1]\n");
    return 2;
}
