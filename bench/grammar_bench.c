/* grammar_bench.c: the cost of constrained output's token mask
 * (engine/json_grammar.h) on a real 200k-token vocabulary.
 *
 * usage: grammar_bench VOCAB_FILE [REPS]
 * VOCAB_FILE holds one token a line as standard base64 (bench/grammar/
 * dump_vocab.mjs writes OpenAI's o200k_base that way). Prints the time to
 * build the trie, then for each place in a JSON text (after a prefix) the
 * tokens admitted and the median time of one mask over REPS runs (default
 * 21): what constrained sampling adds to each generated token. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/json_grammar.h"

typedef struct {
    unsigned char **bytes;
    int *len;
    int n;
} vocab;

static int b64(int c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

static int decode(const char *s, unsigned char *out)
{
    int n = 0, bits = 0, acc = 0;
    for (; *s && *s != '='; s++) {
        int v = b64(*s);
        if (v < 0) return -1;
        acc = acc << 6 | v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (unsigned char)(acc >> bits);
        }
    }
    return n;
}

static int token_bytes(void *ctx, int32_t id, char *out, size_t cap)
{
    vocab *v = ctx;
    if (id < 0 || id >= v->n) return -1;
    memcpy(out, v->bytes[id], (size_t)v->len[id] < cap ? (size_t)v->len[id] : cap);
    return v->len[id];
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static const char person[] =
    "{\"type\": \"object\", \"properties\": {\"name\": {\"type\": \"string\", \"maxLength\": 40},"
    "\"age\": {\"type\": \"integer\"}, \"city\": {\"type\": \"string\"},"
    "\"unit\": {\"enum\": [\"celsius\", \"fahrenheit\"]}}, \"required\": [\"name\", \"age\", \"city\", \"unit\"],"
    "\"additionalProperties\": false}";

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: grammar_bench VOCAB_FILE [REPS]\n");
        return 2;
    }
    int reps = argc > 2 ? atoi(argv[2]) : 21;
    FILE *f = fopen(argv[1], "r");
    if (!f) {
        perror(argv[1]);
        return 1;
    }
    vocab v = {malloc(sizeof(char *) * 300000), malloc(sizeof(int) * 300000), 0};
    char line[4096];
    while (v.n < 300000 && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        v.bytes[v.n] = malloc(strlen(line) + 1);
        v.len[v.n] = decode(line, v.bytes[v.n]);
        if (v.len[v.n] < 0) v.len[v.n] = 0;
        v.n++;
    }
    fclose(f);
    double t0 = now();
    json_vocab *jv = json_vocab_new(v.n, token_bytes, &v);
    printf("vocabulary: %d tokens, trie built in %.1f ms\n", v.n, (now() - t0) * 1e3);
    char err[256];
    json_grammar *obj = json_grammar_object(err, sizeof err);
    json_grammar *sch = json_grammar_from_schema(person, strlen(person), err, sizeof err);
    if (!jv || !obj || !sch) {
        fprintf(stderr, "setup failed: %s\n", err);
        return 1;
    }
    static const struct { const char *what; int schema; const char *prefix; } places[] = {
        {"json_object, start", 0, ""},
        {"json_object, after '{'", 0, "{"},
        {"json_object, in a key", 0, "{\"ke"},
        {"json_object, in a string value", 0, "{\"key\": \"some text"},
        {"json_object, in a number", 0, "{\"key\": 12"},
        {"json_object, after a value", 0, "{\"key\": true"},
        {"schema, start", 1, ""},
        {"schema, in a key", 1, "{\"na"},
        {"schema, in a string with maxLength", 1, "{\"name\": \"Jo"},
        {"schema, in a free string", 1, "{\"name\": \"Jo\", \"age\": 33, \"city\": \"Par"},
        {"schema, in an enum value", 1, "{\"name\": \"Jo\", \"age\": 33, \"city\": \"Paris\", \"unit\": \"c"},
    };
    uint8_t *allowed = malloc((size_t)v.n);
    double *t = malloc(sizeof(double) * (size_t)reps);
    printf("%-40s %9s %10s\n", "place", "admitted", "us/mask");
    for (size_t i = 0; i < sizeof places / sizeof places[0]; i++) {
        json_match *m = json_match_new(places[i].schema ? sch : obj);
        if (json_match_feed(m, places[i].prefix, strlen(places[i].prefix)) != 0) {
            fprintf(stderr, "prefix refused: %s\n", places[i].prefix);
            return 1;
        }
        int n = 0;
        for (int r = 0; r < reps; r++) {
            double s = now();
            n = json_match_mask(m, jv, allowed);
            t[r] = now() - s;
        }
        qsort(t, (size_t)reps, sizeof *t, cmp);
        printf("%-40s %9d %10.0f\n", places[i].what, n, t[reps / 2] * 1e6);
        json_match_free(m);
    }
    return 0;
}
