/* cmd_run.c: `llmesh run` (generate text with a local model) and
 * `llmesh perplexity` (measure a model on a text file).
 *
 * `run` prints exactly the generated text on stdout, piece by piece as it is
 * produced, and nothing else: no prompt echo, no trailing newline. The
 * integration tests compare it byte for byte with the API's completion text,
 * so anything informative goes to stderr (--stats).
 * Not here: chat templates, serving (cmd_serve.c). */
#define _GNU_SOURCE
#include "cli/cli.h"
#include "cli/cli_common.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine.h"
#include "lib/clock.h"

#define RUN_DEFAULT_TOKENS 128
#define RUN_DEFAULT_TEMP 0.8f
#define RUN_DEFAULT_TOP_K 40
#define RUN_DEFAULT_TOP_P 0.95f

static const char run_usage[] =
    "usage: llmesh run --model PATH [options]\n"
    "\n"
    "Generates a continuation of the prompt and prints it (only the continuation,\n"
    "exactly as generated, no newline added) to stdout as it is produced.\n"
    "\n"
    "  --model PATH    GGUF model file (llama architecture; F32, F16, BF16, Q8_0)\n"
    "  --prompt TEXT   text to continue (default: empty; BOS only)\n"
    "  -n N            tokens to generate at most (default 128); generation also\n"
    "                  stops at end-of-sequence or when the context is full\n"
    "  --temp T        temperature, 0 = greedy (default 0.8)\n"
    "  --top-k K       sample from the K most likely tokens, 0 = off (default 40)\n"
    "  --top-p P       nucleus sampling, 1 = off (default 0.95)\n"
    "  --seed S        random seed (default: from the clock)\n"
    "  --threads N     compute threads (default: one per CPU)\n"
    "  --kv-type T     KV cache element type: f16 (default) or f32\n"
    "  --stats         print token counts and speed on stderr at the end\n";

static const char perplexity_usage[] =
    "usage: llmesh perplexity --model PATH --file TEXT [options]\n"
    "\n"
    "Tokenizes the file (no BOS, no special tokens), cuts the ids into chunks of\n"
    "CTX-1, evaluates each chunk from an empty cache with BOS in front, scores\n"
    "every chunk token, and prints exp(mean negative log-likelihood).\n"
    "\n"
    "  --model PATH    GGUF model file\n"
    "  --file TEXT     text file to measure\n"
    "  --ctx N         chunk context including BOS (default 256)\n"
    "  --threads N     compute threads (default: one per CPU)\n"
    "  --kv-type T     KV cache element type: f16 (default) or f32\n";

/* ---- run ----------------------------------------------------------------- */

typedef struct {
    double first_piece; /* time the first piece arrived (prompt processed by then) */
    int write_failed;
} run_output;

static int print_piece(void *user, const char *piece, size_t len)
{
    run_output *out = user;
    if (out->first_piece == 0) out->first_piece = clock_s();
    if (fwrite(piece, 1, len, stdout) != len || fflush(stdout) != 0) {
        out->write_failed = 1;
        return 1; /* stdout is gone: stop generating */
    }
    return 0;
}

int cmd_run(int argc, char **argv)
{
    const char *model_path = NULL, *prompt = "";
    engine_sampling s;
    engine_sampling_defaults(&s);
    s.max_tokens = RUN_DEFAULT_TOKENS;
    s.temperature = RUN_DEFAULT_TEMP;
    s.top_k = RUN_DEFAULT_TOP_K;
    s.top_p = RUN_DEFAULT_TOP_P;
    int seed_given = 0, stats = 0, kv_type = 0;
    long threads = 0;

    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        int r;
        long lv;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(run_usage, stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--stats")) {
            stats = 1;
        } else if ((r = cli_flag_value("run", argc, argv, &i, "--model", &v)) != 0) {
            if (r < 0) return 2;
            model_path = v;
        } else if ((r = cli_flag_value("run", argc, argv, &i, "--prompt", &v)) != 0) {
            if (r < 0) return 2;
            prompt = v;
        } else if ((r = cli_flag_value("run", argc, argv, &i, "-n", &v)) != 0) {
            if (r < 0 || cli_parse_long("run", "-n", v, 0, INT_MAX, &lv)) return 2;
            s.max_tokens = (int)lv;
        } else if ((r = cli_flag_value("run", argc, argv, &i, "--temp", &v)) != 0) {
            if (r < 0 || cli_parse_float("run", "--temp", v, 0, 1000, &s.temperature)) return 2;
        } else if ((r = cli_flag_value("run", argc, argv, &i, "--top-k", &v)) != 0) {
            if (r < 0 || cli_parse_long("run", "--top-k", v, 0, INT_MAX, &lv)) return 2;
            s.top_k = (int)lv;
        } else if ((r = cli_flag_value("run", argc, argv, &i, "--top-p", &v)) != 0) {
            if (r < 0 || cli_parse_float("run", "--top-p", v, 0, 1, &s.top_p)) return 2;
        } else if ((r = cli_flag_value("run", argc, argv, &i, "--seed", &v)) != 0) {
            if (r < 0 || cli_parse_u64("run", "--seed", v, &s.seed)) return 2;
            seed_given = 1;
        } else if ((r = cli_flag_value("run", argc, argv, &i, "--threads", &v)) != 0) {
            if (r < 0 || cli_parse_long("run", "--threads", v, 1, 1024, &threads)) return 2;
        } else if ((r = cli_flag_value("run", argc, argv, &i, "--kv-type", &v)) != 0) {
            if (r < 0 || cli_parse_kv_type("run", "--kv-type", v, &kv_type)) return 2;
        } else {
            fprintf(stderr, "llmesh run: unknown option '%s' (see --help)\n", argv[i]);
            return 2;
        }
    }
    if (!model_path) {
        fprintf(stderr, "llmesh run: --model PATH is required (see --help)\n");
        return 2;
    }
    if (!seed_given) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        s.seed = (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec;
    }

    char err[512];
    engine_load_opts o = {.n_threads = (int)threads, .kv_type = kv_type};
    engine_model *m = engine_model_load_opts(model_path, &o, err, sizeof err);
    if (!m) {
        fprintf(stderr, "llmesh run: %s\n", err);
        return 1;
    }
    run_output out = {0};
    engine_result res;
    double t0 = clock_s();
    int rc = engine_generate(m, prompt, strlen(prompt), &s, print_piece, &out, &res, err, sizeof err);
    double t1 = clock_s();
    if (rc != 0) {
        fprintf(stderr, "llmesh run: %s: %s\n", model_path, err);
    } else if (out.write_failed) {
        fprintf(stderr, "llmesh run: cannot write to stdout: %s\n", strerror(errno));
        rc = -1;
    } else if (stats) {
        double first = out.first_piece ? out.first_piece : t1;
        fprintf(stderr, "\n[%s: prompt %d tokens, generated %d tokens (%s); %.1f ms to the first "
                "token, %.2f tokens/s after it; %d threads]\n",
                engine_model_id(m), res.prompt_tokens, res.completion_tokens, res.finish_reason,
                (first - t0) * 1e3,
                res.completion_tokens > 1 && t1 > first ? (res.completion_tokens - 1) / (t1 - first) : 0.0,
                engine_model_threads(m));
    }
    engine_model_free(m);
    return rc == 0 ? 0 : 1;
}

/* ---- perplexity ---------------------------------------------------------- */

int cmd_perplexity(int argc, char **argv)
{
    const char *model_path = NULL, *file = NULL;
    long ctx = 256, threads = 0;
    int kv_type = 0;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        int r;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(perplexity_usage, stdout);
            return 0;
        }
        if ((r = cli_flag_value("perplexity", argc, argv, &i, "--model", &v)) != 0) {
            if (r < 0) return 2;
            model_path = v;
        } else if ((r = cli_flag_value("perplexity", argc, argv, &i, "--file", &v)) != 0) {
            if (r < 0) return 2;
            file = v;
        } else if ((r = cli_flag_value("perplexity", argc, argv, &i, "--ctx", &v)) != 0) {
            if (r < 0 || cli_parse_long("perplexity", "--ctx", v, 2, 1 << 24, &ctx)) return 2;
        } else if ((r = cli_flag_value("perplexity", argc, argv, &i, "--threads", &v)) != 0) {
            if (r < 0 || cli_parse_long("perplexity", "--threads", v, 1, 1024, &threads)) return 2;
        } else if ((r = cli_flag_value("perplexity", argc, argv, &i, "--kv-type", &v)) != 0) {
            if (r < 0 || cli_parse_kv_type("perplexity", "--kv-type", v, &kv_type)) return 2;
        } else {
            fprintf(stderr, "llmesh perplexity: unknown option '%s' (see --help)\n", argv[i]);
            return 2;
        }
    }
    if (!model_path || !file) {
        fprintf(stderr, "llmesh perplexity: --model PATH and --file TEXT are required (see --help)\n");
        return 2;
    }
    size_t len;
    char *text = cli_read_file("perplexity", file, &len);
    if (!text) return 1;
    char err[512];
    engine_load_opts o = {.n_threads = (int)threads, .kv_type = kv_type};
    engine_model *m = engine_model_load_opts(model_path, &o, err, sizeof err);
    if (!m) {
        fprintf(stderr, "llmesh perplexity: %s\n", err);
        free(text);
        return 1;
    }
    engine_perplexity_result r;
    double t0 = clock_s();
    int rc = engine_perplexity(m, text, len, (int)ctx, &r, err, sizeof err);
    double t1 = clock_s();
    if (rc != 0) {
        fprintf(stderr, "llmesh perplexity: %s on %s: %s\n", model_path, file, err);
    } else {
        printf("perplexity: %.4f\n", r.perplexity);
        printf("scored tokens: %d (%d chunks of at most %ld, mean NLL %.5f)\n", r.scored_tokens,
               r.chunks, ctx, r.mean_nll);
        fprintf(stderr, "[%s: %.2f s, %.0f tokens/s, %d threads]\n", engine_model_id(m), t1 - t0,
                (r.scored_tokens + r.chunks) / (t1 - t0), engine_model_threads(m));
    }
    engine_model_free(m);
    free(text);
    return rc == 0 ? 0 : 1;
}
