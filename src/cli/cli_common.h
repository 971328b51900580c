/* cli_common.h: argument and file helpers shared by the subcommands.
 *
 * Every helper that fails prints one line, "llmesh CMD: ...", on stderr
 * (naming the flag or file) and returns an error; the caller only picks the
 * exit code. cmd is the subcommand's name as the user typed it ("run").
 * Not here: anything about models or the engine (beyond the name of a KV
 * cache type, which several subcommands take). */
#ifndef LLMESH_CLI_COMMON_H
#define LLMESH_CLI_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* Matches argv[*i] against flag, in "--flag value" or "--flag=value" form;
 * on a match stores the value and advances *i. Returns 1 on a match, 0 if it
 * is another argument, -1 (after printing) when the value is missing. */
int cli_flag_value(const char *cmd, int argc, char **argv, int *i, const char *flag,
                   const char **value);

/* s as a decimal integer in [lo, hi] (long), a number in [lo, hi] (float) or
 * a non-negative integer (u64), into *out. 0, or -1 after printing. */
int cli_parse_long(const char *cmd, const char *flag, const char *s, long lo, long hi, long *out);
int cli_parse_float(const char *cmd, const char *flag, const char *s, float lo, float hi,
                    float *out);
int cli_parse_u64(const char *cmd, const char *flag, const char *s, uint64_t *out);
/* A size in bytes: a positive integer with an optional suffix K, M or G
 * (powers of 1024): "512M", "8G". */
int cli_parse_size(const char *cmd, const char *flag, const char *s, uint64_t *out);
/* A KV cache type by name, "f16" or "f32", as a model_kv_type (engine/model.h). */
int cli_parse_kv_type(const char *cmd, const char *flag, const char *s, int *out);

/* The whole content of path (pipes too), malloc'ed, its length in *len; the
 * caller frees it. NULL after printing on failure. */
char *cli_read_file(const char *cmd, const char *path, size_t *len);

#endif
