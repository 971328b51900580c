/* cmd_quantize.c: `llmesh quantize IN.gguf OUT.gguf TYPE [--threads N]`.
 * Argument parsing and reporting only; the work is engine/quantize.c. */
#include "cli/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/gguf.h"
#include "engine/quantize.h"

static const char quantize_usage[] =
    "usage: llmesh quantize IN.gguf OUT.gguf TYPE [--threads N]\n"
    "\n"
    "Rewrites a model with its weight matrices in TYPE (norms stay as they are).\n"
    "TYPE: F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q2_K Q3_K Q4_K Q5_K Q6_K (every matrix),\n"
    "      or a mixed recipe: Q4_K_M Q5_K_M Q4_K_S Q5_K_S Q2_K_S Q3_K_S Q3_K_M Q3_K_L\n"
    "      (llama.cpp's mixtures: some tensors kept at more bits, up to Q6_K).\n"
    "The input may be of any type llmesh runs; it is dequantized first.\n";

int cmd_quantize(int argc, char **argv)
{
    const char *pos[3];
    int n_pos = 0;
    long threads = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(quantize_usage, stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--threads")) {
            char *end;
            if (i + 1 >= argc || (threads = strtol(argv[i + 1], &end, 10), *end) || threads < 1 ||
                threads > 1024) {
                fprintf(stderr, "llmesh quantize: --threads needs a number from 1 to 1024\n");
                return 2;
            }
            i++;
            continue;
        }
        if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "llmesh quantize: unknown option '%s'\n\n%s", argv[i], quantize_usage);
            return 2;
        }
        if (n_pos == 3) {
            fprintf(stderr, "llmesh quantize: too many arguments\n\n%s", quantize_usage);
            return 2;
        }
        pos[n_pos++] = argv[i];
    }
    if (n_pos != 3) {
        fprintf(stderr, "llmesh quantize: needs IN.gguf OUT.gguf TYPE\n\n%s", quantize_usage);
        return 2;
    }
    char err[512];
    quantize_recipe recipe;
    if (quantize_recipe_parse(pos[2], &recipe, err, sizeof err) < 0) {
        fprintf(stderr, "llmesh quantize: %s\n", err);
        return 2;
    }
    quantize_stats st;
    if (quantize_file(pos[0], pos[1], &recipe, (int)threads, &st, err, sizeof err) < 0) {
        fprintf(stderr, "llmesh quantize: %s\n", err);
        return 1;
    }
    fprintf(stderr, "%s -> %s (%s): %d tensors, %.2f MB -> %.2f MB;", pos[0], pos[1], recipe.name,
            st.n_tensors, st.bytes_in / 1e6, st.bytes_out / 1e6);
    for (int t = 0; t < 32; t++)
        if (st.n_by_type[t]) fprintf(stderr, " %s x%d", ggml_type_name((ggml_type)t), st.n_by_type[t]);
    fputc('\n', stderr);
    return 0;
}
