/* cmd_bench.c: `llmesh bench`, the engine's prefill and decode speed on a
 * local model, in the manner of llama.cpp's llama-bench.
 *
 * For each thread count: one warm-up (the prompt once and one decode step,
 * which also faults the mapped weights in), then --reps repetitions of
 *  - prefill: --pp random token ids appended to an empty cache in one
 *    model_forward call (MODEL_BATCH-token batches inside), logits of the
 *    last position only, as a prompt is evaluated;
 *  - decode: --tg single-token model_forward calls from an empty cache, each
 *    computing its full logits row, as generation does (sampling excluded,
 *    like llama.cpp's eval timer).
 * The figure per test is the median over the repetitions (tok/s and ms).
 * Random ids, not text: speed does not depend on which tokens they are, and
 * no tokenizer is needed (the model.h API, below engine.h's requests, so that
 * no prompt cache or sampler is in the timed path).
 * Not here: comparisons with other programs (bench/vs_llamacpp.sh), any
 * timing threshold. */
#define _GNU_SOURCE
#include "cli/cli.h"
#include "cli/cli_common.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/gguf.h"
#include "engine/model.h"
#include "lib/clock.h"
#include "lib/threadpool.h"

#define BENCH_MAX_THREAD_COUNTS 64
#define BENCH_MAX_TOKENS (1 << 20)
#define BENCH_MAX_REPS 1000

static const char bench_usage[] =
    "usage: llmesh bench --model PATH [--pp N] [--tg N] [--threads LIST] [--reps N] [--kv-type T]\n"
    "                    [--json]\n"
    "\n"
    "Measures prefill (prompt processing) and decode (generation) speed of a local\n"
    "model with random token ids, like llama.cpp's llama-bench. Each figure is the\n"
    "median over the repetitions, after one warm-up per thread count.\n"
    "\n"
    "  --model PATH    GGUF model file\n"
    "  --pp N          prompt tokens evaluated in one pass (default 128; 0 = skip)\n"
    "  --tg N          tokens decoded one at a time (default 64; 0 = skip)\n"
    "  --threads LIST  comma-separated thread counts, e.g. 1,2 (default: one per CPU)\n"
    "  --reps N        repetitions per test (default 3)\n"
    "  --kv-type T     KV cache element type: f16 (default) or f32\n"
    "  --json          one JSON object per thread count instead of a table\n";

typedef struct {
    const char *path;
    long pp, tg, reps;
    int threads[BENCH_MAX_THREAD_COUNTS];
    int n_threads;
    int kv_type;
    int json;
} bench_args;

/* What the table and the JSON rows say about the file. */
typedef struct {
    char id[256];          /* file name without directory and ".gguf" */
    const char *arch;
    char type[16];         /* the type holding most of the matrix bytes, as llama.cpp
                              spells it ("Q4_K") */
    double type_share;     /* its share of the matrix bytes, 0..1 */
    uint64_t file_bytes;
    uint64_t params;       /* elements of every tensor */
    uint64_t decode_bytes; /* tensor bytes one decode step reads: all of them, except that
                              token_embd counts one row when output.weight is the classifier */
} bench_model_info;

typedef struct {
    int threads;
    double pp_ms, tg_ms;   /* medians; NAN when the test is skipped */
} bench_row;

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median of v[0..n) (sorts v). */
static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, compare_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* "1,2,4" into a->threads; one line on stderr and -1 when malformed. */
static int parse_thread_list(const char *s, bench_args *a)
{
    char buf[512];
    if (strlen(s) >= sizeof buf) {
        fprintf(stderr, "llmesh bench: --threads list too long\n");
        return -1;
    }
    if (!s[0] || s[0] == ',' || s[strlen(s) - 1] == ',' || strstr(s, ",,")) {
        fprintf(stderr, "llmesh bench: --threads needs counts separated by commas, e.g. 1,2 (got '%s')\n", s);
        return -1;
    }
    strcpy(buf, s);
    a->n_threads = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        long v;
        if (a->n_threads == BENCH_MAX_THREAD_COUNTS) {
            fprintf(stderr, "llmesh bench: --threads: at most %d counts\n", BENCH_MAX_THREAD_COUNTS);
            return -1;
        }
        if (cli_parse_long("bench", "--threads", tok, 1, 1024, &v)) return -1;
        a->threads[a->n_threads++] = (int)v;
    }
    return 0;
}

/* 2: usage error (printed), 1: --help (printed), 0: parsed. */
static int parse_args(int argc, char **argv, bench_args *a)
{
    *a = (bench_args){.pp = 128, .tg = 64, .reps = 3};
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        int r;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(bench_usage, stdout);
            return 1;
        }
        if (!strcmp(argv[i], "--json")) {
            a->json = 1;
        } else if ((r = cli_flag_value("bench", argc, argv, &i, "--model", &v)) != 0) {
            if (r < 0) return 2;
            a->path = v;
        } else if ((r = cli_flag_value("bench", argc, argv, &i, "--pp", &v)) != 0) {
            if (r < 0 || cli_parse_long("bench", "--pp", v, 0, BENCH_MAX_TOKENS, &a->pp)) return 2;
        } else if ((r = cli_flag_value("bench", argc, argv, &i, "--tg", &v)) != 0) {
            if (r < 0 || cli_parse_long("bench", "--tg", v, 0, BENCH_MAX_TOKENS, &a->tg)) return 2;
        } else if ((r = cli_flag_value("bench", argc, argv, &i, "--reps", &v)) != 0) {
            if (r < 0 || cli_parse_long("bench", "--reps", v, 1, BENCH_MAX_REPS, &a->reps)) return 2;
        } else if ((r = cli_flag_value("bench", argc, argv, &i, "--threads", &v)) != 0) {
            if (r < 0 || parse_thread_list(v, a)) return 2;
        } else if ((r = cli_flag_value("bench", argc, argv, &i, "--kv-type", &v)) != 0) {
            if (r < 0 || cli_parse_kv_type("bench", "--kv-type", v, &a->kv_type)) return 2;
        } else {
            fprintf(stderr, "llmesh bench: unknown option '%s' (see --help)\n", argv[i]);
            return 2;
        }
    }
    if (!a->path) {
        fprintf(stderr, "llmesh bench: --model PATH is required (see --help)\n");
        return 2;
    }
    if (a->pp == 0 && a->tg == 0) {
        fprintf(stderr, "llmesh bench: --pp and --tg are both 0: nothing to measure\n");
        return 2;
    }
    if (a->n_threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        a->threads[0] = n > 0 ? (int)(n < 1024 ? n : 1024) : 1;
        a->n_threads = 1;
    }
    return 0;
}

static void describe_model(const char *path, const gguf_file *f, const model *m, bench_model_info *info)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (n > 5 && !strcmp(base + n - 5, ".gguf")) n -= 5;
    if (n >= sizeof info->id) n = sizeof info->id - 1;
    memcpy(info->id, base, n);
    info->id[n] = 0;
    info->arch = model_arch_name(model_get_config(m)->arch);
    info->file_bytes = f->size;
    /* Matrix bytes per type: what the kernels stream through, so what the
     * speed depends on (a Q4_K_M file is mostly Q4_K with some Q6_K). */
    uint64_t by_type[64] = {0}, matrix_bytes = 0;
    int untied = gguf_find_tensor(f, "output.weight") != NULL;
    info->params = info->decode_bytes = 0;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        uint64_t elems = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) elems *= t->ne[d];
        info->params += elems;
        info->decode_bytes += untied && gguf_str_eq(t->name, "token_embd.weight") && t->ne[1] > 0
                              ? t->nbytes / t->ne[1] : t->nbytes;
        if (t->n_dims == 2 && (unsigned)t->type < 64) {
            by_type[t->type] += t->nbytes;
            matrix_bytes += t->nbytes;
        }
    }
    int best = 0;
    for (int t = 1; t < 64; t++)
        if (by_type[t] > by_type[best]) best = t;
    snprintf(info->type, sizeof info->type, "%s", ggml_type_name((ggml_type)best));
    for (char *p = info->type; *p; p++)
        if (*p >= 'a' && *p <= 'z') *p = (char)(*p - 'a' + 'A');
    info->type_share = matrix_bytes ? (double)by_type[best] / (double)matrix_bytes : 0;
}

/* The tests of one thread count: warm-up, then reps of prefill and decode.
 * 0, or -1 with a message. */
static int bench_threads(const model *m, model_state *s, threadpool *pool, const bench_args *a,
                         const int32_t *ids, float *logits, bench_row *row, char *err, size_t errlen)
{
    double *pp_ms = calloc((size_t)a->reps, sizeof *pp_ms), *tg_ms = calloc((size_t)a->reps, sizeof *tg_ms);
    int rc = -1;
    if (!pp_ms || !tg_ms) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    model_state_truncate(s, 0);
    if (a->pp > 0 && model_forward(m, s, pool, ids, (int)a->pp, logits, 0, err, errlen)) goto done;
    model_state_truncate(s, 0);
    if (a->tg > 0 && model_forward(m, s, pool, ids, 1, logits, 0, err, errlen)) goto done;
    for (long r = 0; r < a->reps; r++) {
        if (a->pp > 0) {
            model_state_truncate(s, 0);
            double t0 = clock_s();
            if (model_forward(m, s, pool, ids, (int)a->pp, logits, 0, err, errlen)) goto done;
            pp_ms[r] = (clock_s() - t0) * 1e3;
        }
        if (a->tg > 0) {
            model_state_truncate(s, 0);
            double t0 = clock_s();
            for (long i = 0; i < a->tg; i++)
                if (model_forward(m, s, pool, ids + i, 1, logits, 0, err, errlen)) goto done;
            tg_ms[r] = (clock_s() - t0) * 1e3;
        }
    }
    row->pp_ms = a->pp > 0 ? median(pp_ms, (int)a->reps) : NAN;
    row->tg_ms = a->tg > 0 ? median(tg_ms, (int)a->reps) : NAN;
    rc = 0;
done:
    free(pp_ms);
    free(tg_ms);
    return rc;
}

static double tok_per_s(long tokens, double ms) { return tokens / (ms / 1e3); }

/* A figure rounded to 2 decimals (or null when skipped) into obj. */
static void json_figure(cJSON *obj, const char *name, double v)
{
    if (isnan(v)) cJSON_AddNullToObject(obj, name);
    else cJSON_AddNumberToObject(obj, name, round(v * 100) / 100);
}

static int print_json_row(const bench_model_info *info, const bench_args *a, const bench_row *row)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return -1;
    cJSON_AddStringToObject(o, "model", info->id);
    cJSON_AddStringToObject(o, "arch", info->arch);
    cJSON_AddStringToObject(o, "type", info->type);
    cJSON_AddNumberToObject(o, "file_bytes", (double)info->file_bytes);
    cJSON_AddNumberToObject(o, "params", (double)info->params);
    cJSON_AddNumberToObject(o, "decode_bytes", (double)info->decode_bytes);
    cJSON_AddNumberToObject(o, "threads", row->threads);
    cJSON_AddNumberToObject(o, "pp", (double)a->pp);
    cJSON_AddNumberToObject(o, "tg", (double)a->tg);
    cJSON_AddNumberToObject(o, "reps", (double)a->reps);
    cJSON_AddStringToObject(o, "kv_type", model_kv_type_name((model_kv_type)a->kv_type));
    json_figure(o, "pp_ms", row->pp_ms);
    json_figure(o, "tg_ms", row->tg_ms);
    json_figure(o, "pp_tok_s", a->pp > 0 ? tok_per_s(a->pp, row->pp_ms) : NAN);
    json_figure(o, "tg_tok_s", a->tg > 0 ? tok_per_s(a->tg, row->tg_ms) : NAN);
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!text) return -1;
    printf("%s\n", text);
    fflush(stdout);
    cJSON_free(text);
    return 0;
}

static void print_table_head(const bench_model_info *info, const bench_args *a)
{
    printf("model: %s (%s, %s %.0f%% of matrix bytes, %.1f MiB, %.2f M params); KV cache %s; "
           "median of %ld\n",
           info->id, info->arch, info->type, info->type_share * 100, info->file_bytes / (1024.0 * 1024.0),
           info->params / 1e6, model_kv_type_name((model_kv_type)a->kv_type), a->reps);
    printf("\n| threads | pp%ld tok/s | tg%ld tok/s | pp%ld ms | tg%ld ms |\n", a->pp, a->tg, a->pp, a->tg);
    printf("|---:|---:|---:|---:|---:|\n");
    fflush(stdout);
}

static void print_table_row(const bench_args *a, const bench_row *row)
{
    char f[4][32];
    snprintf(f[0], sizeof f[0], a->pp > 0 ? "%.2f" : "-", tok_per_s(a->pp, row->pp_ms));
    snprintf(f[1], sizeof f[1], a->tg > 0 ? "%.2f" : "-", tok_per_s(a->tg, row->tg_ms));
    snprintf(f[2], sizeof f[2], a->pp > 0 ? "%.1f" : "-", row->pp_ms);
    snprintf(f[3], sizeof f[3], a->tg > 0 ? "%.1f" : "-", row->tg_ms);
    printf("| %d | %s | %s | %s | %s |\n", row->threads, f[0], f[1], f[2], f[3]);
    fflush(stdout);
}

int cmd_bench(int argc, char **argv)
{
    bench_args a;
    int r = parse_args(argc, argv, &a);
    if (r) return r == 1 ? 0 : 2;

    char err[512];
    gguf_file *f = gguf_open(a.path, err, sizeof err);
    if (!f) {
        fprintf(stderr, "llmesh bench: %s\n", err);
        return 1;
    }
    int rc = 1;
    model *m = NULL;
    model_state *s = NULL;
    int32_t *ids = NULL;
    float *logits = NULL;
    if (!(m = model_load(f, err, sizeof err))) {
        fprintf(stderr, "llmesh bench: %s: %s\n", a.path, err);
        goto done;
    }
    const model_config *c = model_get_config(m);
    long positions = a.pp > a.tg ? a.pp : a.tg;
    if (positions > c->n_ctx_train) {
        fprintf(stderr, "llmesh bench: --pp/--tg of %ld positions exceed %s's context of %d\n",
                positions, a.path, c->n_ctx_train);
        rc = 2;
        goto done;
    }
    if (!(s = model_state_new(m, (int)positions, (model_kv_type)a.kv_type, err, sizeof err))) {
        fprintf(stderr, "llmesh bench: %s: %s\n", a.path, err);
        goto done;
    }
    ids = malloc(sizeof *ids * (size_t)positions);
    logits = malloc(sizeof *logits * (size_t)c->n_vocab);
    if (!ids || !logits) {
        fprintf(stderr, "llmesh bench: out of memory\n");
        goto done;
    }
    uint64_t x = 0x9e3779b97f4a7c15ull; /* xorshift64: the same ids every run */
    for (long i = 0; i < positions; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        ids[i] = (int32_t)(x % (uint64_t)c->n_vocab);
    }

    bench_model_info info;
    describe_model(a.path, f, m, &info);
    if (!a.json) print_table_head(&info, &a);
    for (int t = 0; t < a.n_threads; t++) {
        threadpool *pool = threadpool_create(a.threads[t], err, sizeof err);
        if (!pool) {
            fprintf(stderr, "llmesh bench: %d threads: %s\n", a.threads[t], err);
            goto done;
        }
        bench_row row = {.threads = threadpool_size(pool)};
        int br = bench_threads(m, s, pool, &a, ids, logits, &row, err, sizeof err);
        threadpool_free(pool);
        if (br) {
            fprintf(stderr, "llmesh bench: %s: %s\n", a.path, err);
            goto done;
        }
        if (a.json) {
            if (print_json_row(&info, &a, &row)) {
                fprintf(stderr, "llmesh bench: out of memory\n");
                goto done;
            }
        } else {
            print_table_row(&a, &row);
        }
    }
    rc = 0;
done:
    free(ids);
    free(logits);
    model_state_free(s);
    model_free(m);
    gguf_close(f);
    return rc;
}
