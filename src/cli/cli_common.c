/* cli_common.c: see cli_common.h. */
#include "cli/cli_common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/model.h"

int cli_flag_value(const char *cmd, int argc, char **argv, int *i, const char *flag,
                   const char **value)
{
    const char *a = argv[*i];
    size_t n = strlen(flag);
    if (strncmp(a, flag, n) != 0) return 0;
    if (a[n] == '=') {
        *value = a + n + 1;
        return 1;
    }
    if (a[n] != 0) return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "llmesh %s: %s needs a value (see --help)\n", cmd, flag);
        return -1;
    }
    *value = argv[++*i];
    return 1;
}

int cli_parse_long(const char *cmd, const char *flag, const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "llmesh %s: %s: '%s' is not an integer in [%ld, %ld]\n", cmd, flag, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_parse_kv_type(const char *cmd, const char *flag, const char *s, int *out)
{
    int t = model_kv_type_from_name(s);
    if (t < 0) {
        fprintf(stderr, "llmesh %s: %s: '%s' is not a KV cache type (f16 or f32)\n", cmd, flag, s);
        return -1;
    }
    *out = t;
    return 0;
}

int cli_parse_float(const char *cmd, const char *flag, const char *s, float lo, float hi,
                    float *out)
{
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "llmesh %s: %s: '%s' is not a number in [%g, %g]\n", cmd, flag, s,
                (double)lo, (double)hi);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_parse_u64(const char *cmd, const char *flag, const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-') {
        fprintf(stderr, "llmesh %s: %s: '%s' is not a non-negative integer\n", cmd, flag, s);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_parse_size(const char *cmd, const char *flag, const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    int shift = 0;
    if (*end == 'K' || *end == 'k') shift = 10;
    else if (*end == 'M' || *end == 'm') shift = 20;
    else if (*end == 'G' || *end == 'g') shift = 30;
    if (shift) end++;
    if (errno || end == s || *end || s[0] == '-' || v == 0 || v > (UINT64_MAX >> shift)) {
        fprintf(stderr, "llmesh %s: %s: '%s' is not a size (a positive number of bytes, or with K, M "
                "or G: 512M, 8G)\n", cmd, flag, s);
        return -1;
    }
    *out = (uint64_t)v << shift;
    return 0;
}

/* Reads in doubling chunks rather than asking the size first, so that pipes
 * and /dev/stdin work as well as regular files. */
char *cli_read_file(const char *cmd, const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "llmesh %s: cannot open %s: %s\n", cmd, path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) break;
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        char *bigger = realloc(buf, cap * 2);
        if (!bigger) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = bigger;
        cap *= 2;
    }
    int failed = !buf || ferror(f);
    fclose(f);
    if (failed) {
        fprintf(stderr, "llmesh %s: cannot read %s\n", cmd, path);
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}
