/* cmd_inspect.c: `llmesh tokenize` (text to token ids) and `llmesh logits`
 * (raw logits of a token sequence): inspection commands, made for checking
 * the tokenizer and the forward pass against an independent implementation
 * (tests/e2e/reference compares them with llama.cpp).
 *
 * `tokenize` reads only the GGUF's tokenizer metadata (no weights are
 * checked), so it also works on vocabulary-only test files. `logits` runs
 * the model's forward pass (model_forward) directly, with no sampling.
 * Output is plain text on stdout (ids, or "pos id logit" lines), or raw
 * little-endian float32 with --out. */
#define _GNU_SOURCE
#include "cli/cli.h"
#include "cli/cli_common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/gguf.h"
#include "engine/model.h"
#include "engine/tokenizer.h"
#include "lib/threadpool.h"

#define INSPECT_MAX_FILES 4096  /* --file arguments of one tokenize call */
#define INSPECT_MAX_IDS 65536   /* ids of one logits call */

static const char tokenize_usage[] =
    "usage: llmesh tokenize --model PATH [--special] [--bos] (TEXT | --file F ...)\n"
    "\n"
    "Prints the token ids of TEXT, or of each file's whole content (one line per\n"
    "--file, in order), separated by spaces. Only the tokenizer is loaded.\n"
    "With neither --special nor --bos this is llama.cpp's\n"
    "llama_tokenize(add_special = false, parse_special = false).\n"
    "\n"
    "  --model PATH   GGUF file with tokenizer metadata\n"
    "  --special      special-token texts (<|endoftext|>, ...) become those tokens\n"
    "  --bos          put the BOS first (when the vocabulary has one)\n"
    "  --file F       tokenize F's bytes; may be repeated\n";

static const char logits_usage[] =
    "usage: llmesh logits --model PATH (--prompt TEXT | --ids I,J,...) [options]\n"
    "\n"
    "Runs the tokens through the model from an empty cache in one batch and\n"
    "prints the logits of the last position (or every position with --all):\n"
    "the --top K largest as 'pos id logit' lines, or all of them as raw\n"
    "little-endian float32 [positions][n_vocab] into --out FILE.\n"
    "\n"
    "  --model PATH    GGUF model file\n"
    "  --prompt TEXT   text, tokenized with BOS when the model asks for it\n"
    "  --ids LIST      comma-separated token ids, used as given\n"
    "  --all           every position, not only the last\n"
    "  --top K         logits printed per position (default 10)\n"
    "  --out FILE      write every logit of the chosen positions, as float32\n"
    "  --threads N     compute threads (default 1)\n"
    "  --kv-type T     KV cache element type: f16 (default) or f32\n";

/* Tokenizes text and prints the ids as one line. 0, or -1 after printing. */
static int print_ids(const tokenizer *t, const char *text, size_t len, unsigned flags)
{
    int cap = (int)(len < (size_t)INSPECT_MAX_IDS ? len : INSPECT_MAX_IDS) + 2;
    int32_t *ids = malloc(sizeof *ids * (size_t)cap);
    int n = ids ? tokenizer_encode_ex(t, text, len, flags, ids, cap) : -1;
    if (n > cap) { /* more ids than bytes + 2 cannot happen, but stay safe */
        free(ids);
        cap = n;
        ids = malloc(sizeof *ids * (size_t)cap);
        n = ids ? tokenizer_encode_ex(t, text, len, flags, ids, cap) : -1;
    }
    if (n < 0) {
        fprintf(stderr, "llmesh tokenize: tokenization failed\n");
        free(ids);
        return -1;
    }
    for (int i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
    putchar('\n');
    free(ids);
    return 0;
}

int cmd_tokenize(int argc, char **argv)
{
    const char *model_path = NULL, *text = NULL;
    const char **files = calloc(INSPECT_MAX_FILES, sizeof *files);
    int n_files = 0, special = 0, bos = 0, rc = 2;
    if (!files) return 1;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        int r;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(tokenize_usage, stdout);
            rc = 0;
            goto out;
        }
        if (!strcmp(argv[i], "--special")) {
            special = 1;
        } else if (!strcmp(argv[i], "--bos")) {
            bos = 1;
        } else if ((r = cli_flag_value("tokenize", argc, argv, &i, "--model", &v)) != 0) {
            if (r < 0) goto out;
            model_path = v;
        } else if ((r = cli_flag_value("tokenize", argc, argv, &i, "--file", &v)) != 0) {
            if (r < 0) goto out;
            if (n_files == INSPECT_MAX_FILES) {
                fprintf(stderr, "llmesh tokenize: at most %d --file\n", INSPECT_MAX_FILES);
                goto out;
            }
            files[n_files++] = v;
        } else if (argv[i][0] == '-' && argv[i][1] == '-') {
            fprintf(stderr, "llmesh tokenize: unknown option '%s' (see --help)\n", argv[i]);
            goto out;
        } else if (!text) {
            text = argv[i];
        } else {
            fprintf(stderr, "llmesh tokenize: one TEXT at most (see --help)\n");
            goto out;
        }
    }
    if (!model_path || (!text && !n_files) || (text && n_files)) {
        fprintf(stderr, "llmesh tokenize: --model PATH and either TEXT or --file F are required (see --help)\n");
        goto out;
    }
    rc = 1;
    char err[512];
    gguf_file *f = gguf_open(model_path, err, sizeof err);
    if (!f) {
        fprintf(stderr, "llmesh tokenize: %s\n", err);
        goto out;
    }
    tokenizer *t = tokenizer_load(f, err, sizeof err);
    gguf_close(f);
    if (!t) {
        fprintf(stderr, "llmesh tokenize: %s\n", err);
        goto out;
    }
    unsigned flags = (special ? TOKENIZER_PARSE_SPECIAL : TOKENIZER_PARSE_USER) |
                     (bos ? TOKENIZER_ADD_BOS : 0);
    rc = 0;
    if (text) {
        rc = print_ids(t, text, strlen(text), flags) ? 1 : 0;
    } else {
        for (int i = 0; i < n_files && rc == 0; i++) {
            size_t len;
            char *buf = cli_read_file("tokenize", files[i], &len);
            rc = !buf || print_ids(t, buf, len, flags) ? 1 : 0;
            free(buf);
        }
    }
    tokenizer_free(t);
out:
    free(files);
    return rc;
}

/* ---- logits ---------------------------------------------------------------- */

/* Parses "1,2,3" into ids (at most cap); returns the count or -1 after printing. */
static int parse_ids(const char *s, int32_t *ids, int cap)
{
    int n = 0;
    while (*s) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno || end == s || v < 0 || v > INT32_MAX || (*end && *end != ',') || n == cap) {
            fprintf(stderr, "llmesh logits: --ids: expected comma-separated token ids (at most %d)\n", cap);
            return -1;
        }
        ids[n++] = (int32_t)v;
        s = *end ? end + 1 : end;
    }
    return n;
}

/* The top k (largest first, lowest id on ties) of x[n] into idx. */
static void top_k(const float *x, int n, int k, int *idx)
{
    for (int j = 0; j < k; j++) idx[j] = -1;
    for (int i = 0; i < n; i++) {
        int j = k;
        while (j > 0 && (idx[j - 1] < 0 || x[i] > x[idx[j - 1]])) j--;
        if (j == k) continue;
        memmove(idx + j + 1, idx + j, sizeof *idx * (size_t)(k - 1 - j));
        idx[j] = i;
    }
}

int cmd_logits(int argc, char **argv)
{
    const char *model_path = NULL, *prompt = NULL, *ids_arg = NULL, *out_path = NULL;
    long top = 10, threads = 1;
    int all = 0, kv_type = 0;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        int r;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(logits_usage, stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--all")) {
            all = 1;
        } else if ((r = cli_flag_value("logits", argc, argv, &i, "--model", &v)) != 0) {
            if (r < 0) return 2;
            model_path = v;
        } else if ((r = cli_flag_value("logits", argc, argv, &i, "--prompt", &v)) != 0) {
            if (r < 0) return 2;
            prompt = v;
        } else if ((r = cli_flag_value("logits", argc, argv, &i, "--ids", &v)) != 0) {
            if (r < 0) return 2;
            ids_arg = v;
        } else if ((r = cli_flag_value("logits", argc, argv, &i, "--out", &v)) != 0) {
            if (r < 0) return 2;
            out_path = v;
        } else if ((r = cli_flag_value("logits", argc, argv, &i, "--top", &v)) != 0) {
            if (r < 0 || cli_parse_long("logits", "--top", v, 0, 1000, &top)) return 2;
        } else if ((r = cli_flag_value("logits", argc, argv, &i, "--threads", &v)) != 0) {
            if (r < 0 || cli_parse_long("logits", "--threads", v, 1, 1024, &threads)) return 2;
        } else if ((r = cli_flag_value("logits", argc, argv, &i, "--kv-type", &v)) != 0) {
            if (r < 0 || cli_parse_kv_type("logits", "--kv-type", v, &kv_type)) return 2;
        } else {
            fprintf(stderr, "llmesh logits: unknown option '%s' (see --help)\n", argv[i]);
            return 2;
        }
    }
    if (!model_path || !prompt == !ids_arg) {
        fprintf(stderr, "llmesh logits: --model PATH and one of --prompt / --ids are required (see --help)\n");
        return 2;
    }
    int32_t *ids = malloc(sizeof *ids * INSPECT_MAX_IDS);
    if (!ids) return 1;
    int n = 0, rc = 1;
    char err[512];
    gguf_file *f = NULL;
    tokenizer *t = NULL;
    model *m = NULL;
    model_state *st = NULL;
    threadpool *pool = NULL;
    float *logits = NULL;
    FILE *out = NULL;
    if (ids_arg && (n = parse_ids(ids_arg, ids, INSPECT_MAX_IDS)) < 0) {
        rc = 2;
        goto done;
    }
    if (!(f = gguf_open(model_path, err, sizeof err)) || !(m = model_load(f, err, sizeof err))) {
        fprintf(stderr, "llmesh logits: %s\n", err);
        goto done;
    }
    if (prompt) {
        if (!(t = tokenizer_load(f, err, sizeof err))) {
            fprintf(stderr, "llmesh logits: %s\n", err);
            goto done;
        }
        n = tokenizer_encode(t, prompt, strlen(prompt), tokenizer_add_bos(t), ids, INSPECT_MAX_IDS);
        if (n < 0 || n > INSPECT_MAX_IDS) {
            fprintf(stderr, "llmesh logits: cannot tokenize the prompt (at most %d ids)\n", INSPECT_MAX_IDS);
            goto done;
        }
    }
    if (n == 0) {
        fprintf(stderr, "llmesh logits: no tokens\n");
        goto done;
    }
    int n_vocab = model_get_config(m)->n_vocab, n_out = all ? n : 1;
    if (!(pool = threadpool_create((int)threads, err, sizeof err)) ||
        !(st = model_state_new(m, n, (model_kv_type)kv_type, err, sizeof err))) {
        fprintf(stderr, "llmesh logits: %s\n", err);
        goto done;
    }
    logits = malloc(sizeof *logits * (size_t)n_out * (size_t)n_vocab);
    if (!logits) {
        fprintf(stderr, "llmesh logits: out of memory\n");
        goto done;
    }
    if (model_forward(m, st, pool, ids, n, logits, all, err, sizeof err)) {
        fprintf(stderr, "llmesh logits: %s\n", err);
        goto done;
    }
    if (out_path) {
        size_t count = (size_t)n_out * (size_t)n_vocab;
        if (!(out = fopen(out_path, "wb")) || fwrite(logits, sizeof *logits, count, out) != count) {
            fprintf(stderr, "llmesh logits: cannot write %s\n", out_path);
            goto done;
        }
    }
    int k = (int)top < n_vocab ? (int)top : n_vocab, idx[1000];
    for (int p = 0; p < n_out; p++) {
        const float *row = logits + (size_t)p * (size_t)n_vocab;
        top_k(row, n_vocab, k, idx);
        for (int j = 0; j < k; j++)
            printf("%d %d %.9g\n", all ? p : n - 1, idx[j], (double)row[idx[j]]);
    }
    rc = 0;
done:
    if (out && fclose(out) && rc == 0) {
        fprintf(stderr, "llmesh logits: cannot write %s\n", out_path);
        rc = 1;
    }
    free(logits);
    model_state_free(st);
    threadpool_free(pool);
    tokenizer_free(t);
    model_free(m);
    if (f) gguf_close(f);
    free(ids);
    return rc;
}
