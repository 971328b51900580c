/* test_tokenizer.c: the byte-level BPE tokenizer on the demo model and on
 * small hand-built vocabularies.
 *
 * Known-answer vectors: the ids and pre-tokenizer piece ends below were made
 * by an independent Python reference written for this purpose (not part of
 * the repo; its algorithm is in docs/engine-gguf-tokenizer.md): it reads the
 * GGUF with the struct module, pre-tokenizes with the GPT-2 regex through the
 * Python `regex` module and merges the GPT-2 way (every occurrence of the
 * lowest-ranked pair, left to right, until no pair has a rank). The held-out
 * text's token count, 2045, is also the scored-token count in
 * tests/models/reference.json, which came from llama.cpp and PyTorch. A
 * differential run of 3,400 random strings (ASCII, Latin, CJK, emoji,
 * digits, whitespace variants) against the same reference found no mismatch. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/gguf.h"
#include "engine/tokenizer.h"
#include "gguf_writer.h"
#include "testlib.h"

static char err[512];

typedef struct {
    const char *text;
    int32_t ids[64];
    int n_ids;
    size_t ends[32];
    int n_ends;
} known_vector;

static const known_vector demo_vectors[] = {
    {"In the beginning God created the heaven and the earth.",
     {1136, 258, 2241, 389, 3386, 258, 761, 267, 258, 640, 46}, 11,
     {2, 6, 16, 20, 28, 32, 39, 43, 47, 53, 54}, 11},
    {"And Jesus said unto them,",
     {295, 684, 383, 318, 335, 44}, 6,
     {3, 9, 14, 19, 24, 25}, 6},
    {"The LORD is my shepherd; I shall not want.",
     {447, 338, 339, 375, 3421, 59, 302, 312, 344, 3130, 46}, 11,
     {3, 8, 11, 14, 23, 24, 26, 32, 36, 41, 42}, 11},
    {"I'm sure they'll say it's John's, we've seen 'em and he'd know.",
     {73, 39, 109, 1263, 333, 39, 275, 438, 353, 495, 1876, 495, 44, 468, 39, 317, 1237, 32, 39, 480, 267, 308, 39, 100, 608, 46}, 26,
     {1, 3, 8, 13, 16, 20, 23, 25, 30, 32, 33, 36, 39, 44, 46, 48, 52, 55, 57, 62, 63}, 21},
    {"DON'T 'S 're",
     {68, 79, 78, 39, 84, 32, 39, 83, 32, 39, 269}, 11,
     {3, 4, 5, 7, 8, 10, 12}, 7},
    {"Chapter 12: verses 1-10, 3.14159 and 2024 people",
     {580, 3398, 58, 1072, 1042, 983, 45, 49, 48, 44, 1699, 46, 49, 52, 49, 53, 57, 267, 1297, 48, 50, 52, 458}, 23,
     {7, 10, 11, 18, 20, 21, 23, 24, 26, 27, 32, 36, 41, 48}, 14},
    {"a  b\t\tc\n\n\nd   \n  e    ",
     {97, 32, 270, 9, 9, 99, 2796, 10, 100, 32, 32, 32, 10, 32, 329, 32, 32, 32, 32}, 19,
     {1, 2, 4, 5, 6, 7, 9, 10, 11, 16, 18, 22}, 12},
    {"   leading and trailing   ",
     {32, 32, 2390, 290, 267, 2112, 369, 290, 32, 32, 32}, 11,
     {2, 10, 14, 23, 26}, 5},
    {"\xc3\x9cn\xc3\xaf""c\xc3\xb6""d\xc3\xa9 caf\xc3\xa9 na\xc3\xafve \xe2\x80\x94 \xe2\x80\x9cquoted\xe2\x80\x9d \xe2\x80\x98text\xe2\x80\x99",
     {195, 156, 110, 195, 175, 99, 195, 182, 100, 195, 169, 466, 102, 195, 169, 292, 97, 195, 175, 317, 32, 226, 128, 148, 32, 226, 128, 156, 641, 522, 282, 226, 128, 157, 32, 226, 128, 152, 2213, 2366, 226, 128, 153}, 43,
     {11, 17, 24, 28, 32, 38, 41, 45, 49, 52}, 10},
    {"\xe4\xb8\xad\xe6\x96\x87\xe5\xad\x97\xe7\xac\xa6\xef\xbc\x8c\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae\xe3\x83\x86\xe3\x82\xad\xe3\x82\xb9\xe3\x83\x88\xe3\x80\x82\xed\x95\x9c\xea\xb5\xad\xec\x96\xb4",
     {228, 184, 173, 230, 150, 135, 229, 173, 151, 231, 172, 166, 239, 188, 140, 230, 151, 165, 230, 156, 172, 232, 170, 158, 227, 129, 174, 227, 131, 134, 227, 130, 173, 227, 130, 185, 227, 131, 136, 227, 128, 130, 237, 149, 156, 234, 181, 173, 236, 150, 180}, 51,
     {12, 15, 39, 42, 51}, 5},
    {"Hello \xf0\x9f\x91\x8b\xf0\x9f\x8f\xbd world \xf0\x9f\x8e\x89\xf0\x9f\x8e\x89!",
     {72, 575, 111, 32, 240, 159, 145, 139, 240, 159, 143, 189, 1272, 32, 240, 159, 142, 137, 240, 159, 142, 137, 33}, 23,
     {5, 14, 20, 30}, 4},
    {"x\xc2\xa0y\xe3\x80\x80z",
     {120, 194, 160, 121, 227, 128, 128, 122}, 8,
     {1, 3, 4, 7, 8}, 5},
};

/* ---- helpers ------------------------------------------------------------- */

static tokenizer *load_demo(void)
{
    gguf_file *f = gguf_open(testlib_source_path("models/kjv-llama-6.3M-q8_0.gguf"), err,
                             sizeof err);
    if (!f) fprintf(stderr, "  %s\n", err);
    REQUIRE(f);
    tokenizer *t = tokenizer_load(f, err, sizeof err);
    if (!t) fprintf(stderr, "  %s\n", err);
    gguf_close(f); /* the tokenizer must not need the file any more */
    REQUIRE(t);
    return t;
}

/* Encodes (asking for the size first), or NULL with *n = -1 on failure. */
static int32_t *encode(const tokenizer *t, const char *text, size_t len, int add_bos, int *n)
{
    *n = tokenizer_encode(t, text, len, add_bos, NULL, 0);
    if (*n < 0) return NULL;
    int32_t *ids = malloc(((size_t)*n + 1) * sizeof *ids);
    int again = tokenizer_encode(t, text, len, add_bos, ids, *n);
    CHECK_EQ_INT(again, *n);
    return ids;
}

/* 1 when the ids decode back to exactly text. */
static int decodes_to(const tokenizer *t, const int32_t *ids, int n, const char *text, size_t len)
{
    char *buf = malloc(len + 1);
    size_t at = 0;
    int ok = 1;
    for (int i = 0; i < n && ok; i++) {
        int k = tokenizer_token_bytes(t, ids[i], buf + at, len - at);
        if (k < 0 || (size_t)k > len - at) ok = 0;
        else at += (size_t)k;
    }
    ok = ok && at == len && memcmp(buf, text, len) == 0;
    free(buf);
    return ok;
}

static int round_trips(const tokenizer *t, const char *text, size_t len)
{
    int n;
    int32_t *ids = encode(t, text, len, 0, &n);
    int ok = ids && decodes_to(t, ids, n, text, len);
    free(ids);
    return ok;
}

static void check_split(const tokenizer *t, const char *text, size_t len, const size_t *want,
                        int n_want)
{
    size_t ends[64];
    int n = tokenizer_split(t, text, len, ends, 64);
    CHECK_EQ_INT(n, n_want);
    for (int i = 0; i < n && i < n_want; i++)
        if (ends[i] != want[i]) {
            fprintf(stderr, "  split of \"%s\": piece %d ends at %zu, want %zu\n", text, i,
                    ends[i], want[i]);
            testlib_failed_checks++;
            break;
        }
}

/* Loads a tokenizer from a writer's file image. */
static tokenizer *load_from_writer(gguf_writer *w, char *e, size_t elen)
{
    uint8_t *buf;
    size_t n;
    if (gguf_writer_write_memory(w, &buf, &n) < 0) return NULL;
    gguf_file *f = gguf_open_memory(buf, n, e, elen);
    tokenizer *t = f ? tokenizer_load(f, e, elen) : NULL;
    gguf_close(f);
    free(buf);
    return t;
}

/* ---- the demo model ------------------------------------------------------ */

static void test_demo_vocabulary(void)
{
    tokenizer *t = load_demo();
    CHECK_EQ_INT(tokenizer_n_vocab(t), 4096);
    CHECK_EQ_INT(tokenizer_bos(t), 4094);
    CHECK_EQ_INT(tokenizer_eos(t), 4095);
    CHECK_EQ_INT(tokenizer_add_bos(t), 1);
    char buf[64];
    CHECK_EQ_INT(tokenizer_token_bytes(t, 4094, buf, sizeof buf), 0); /* control */
    CHECK_EQ_INT(tokenizer_token_bytes(t, 4095, buf, sizeof buf), 0);
    CHECK_EQ_INT(tokenizer_token_bytes(t, 0, buf, sizeof buf), 1);
    CHECK(buf[0] == 0);
    CHECK_EQ_INT(tokenizer_token_bytes(t, 32, buf, sizeof buf), 1);
    CHECK(buf[0] == ' ');
    for (int b = 0; b < 256; b++) {
        CHECK_EQ_INT(tokenizer_token_bytes(t, b, buf, sizeof buf), 1);
        CHECK_EQ_INT((uint8_t)buf[0], b);
    }
    int n = tokenizer_token_bytes(t, 258, buf, sizeof buf); /* merge "Ġth e" */
    CHECK(n == 4 && memcmp(buf, " the", 4) == 0);
    /* A short buffer gets a prefix and the full length. */
    memset(buf, '#', sizeof buf);
    CHECK_EQ_INT(tokenizer_token_bytes(t, 258, buf, 2), 4);
    CHECK(memcmp(buf, " t##", 4) == 0);
    CHECK_EQ_INT(tokenizer_token_bytes(t, 4096, buf, sizeof buf), -1);
    CHECK_EQ_INT(tokenizer_token_bytes(t, -1, buf, sizeof buf), -1);
    tokenizer_free(t);
}

static void test_known_vectors(void)
{
    tokenizer *t = load_demo();
    for (size_t v = 0; v < sizeof demo_vectors / sizeof demo_vectors[0]; v++) {
        const known_vector *kv = &demo_vectors[v];
        size_t len = strlen(kv->text);
        int n;
        int32_t *ids = encode(t, kv->text, len, 0, &n);
        REQUIRE(ids);
        int same = n == kv->n_ids;
        for (int i = 0; same && i < n; i++) same = ids[i] == kv->ids[i];
        if (!same) {
            fprintf(stderr, "  vector %zu (\"%s\"): got", v, kv->text);
            for (int i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
            fprintf(stderr, "\n");
            testlib_failed_checks++;
        }
        CHECK(decodes_to(t, ids, n, kv->text, len));
        check_split(t, kv->text, len, kv->ends, kv->n_ends);
        free(ids);
    }
    tokenizer_free(t);
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    *len = fread(buf, 1, (size_t)n, f);
    fclose(f);
    return buf;
}

static uint64_t ids_hash(const int32_t *ids, int n)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a over each id's 4 little-endian bytes */
    for (int i = 0; i < n; i++)
        for (int k = 0; k < 4; k++) {
            h ^= ((uint32_t)ids[i] >> (8 * k)) & 0xff;
            h *= 0x100000001b3ull;
        }
    return h;
}

static void test_heldout_text(void)
{
    tokenizer *t = load_demo();
    size_t len;
    char *text = read_file(testlib_source_path("models/kjv-heldout.txt"), &len);
    REQUIRE(text);
    CHECK_EQ_INT(len, 8155);
    int n;
    int32_t *ids = encode(t, text, len, 0, &n);
    REQUIRE(ids);
    CHECK_EQ_INT(n, 2045);
    CHECK(ids_hash(ids, n) == 0x4be7c6fa1566fb93ull);
    static const int32_t first[16] = {580, 3399, 10, 817, 1159, 339, 258, 3088,
                                      268, 596, 1774, 282, 316, 44, 258, 329};
    CHECK(memcmp(ids, first, sizeof first) == 0);
    CHECK(decodes_to(t, ids, n, text, len));
    free(ids);
    free(text);
    tokenizer_free(t);
}

static void test_bos_and_cap(void)
{
    tokenizer *t = load_demo();
    const char *text = "And Jesus said unto them,";
    size_t len = strlen(text);
    int32_t ids[16];
    CHECK_EQ_INT(tokenizer_encode(t, text, len, 1, ids, 16), 7);
    CHECK_EQ_INT(ids[0], 4094);
    CHECK_EQ_INT(ids[1], 295);
    CHECK_EQ_INT(tokenizer_encode(t, text, len, 0, ids, 16), 6);
    CHECK_EQ_INT(ids[0], 295);
    /* Too little room: the count is still right, nothing is written past cap. */
    for (int i = 0; i < 16; i++) ids[i] = -7;
    CHECK_EQ_INT(tokenizer_encode(t, text, len, 1, ids, 3), 7);
    CHECK(ids[0] == 4094 && ids[1] == 295 && ids[2] == 684 && ids[3] == -7);
    CHECK_EQ_INT(tokenizer_encode(t, text, len, 1, NULL, 0), 7);
    CHECK_EQ_INT(tokenizer_encode(t, text, len, 1, ids, -5), 7);
    CHECK_EQ_INT(ids[3], -7);
    /* Empty text. */
    CHECK_EQ_INT(tokenizer_encode(t, "", 0, 1, ids, 16), 1);
    CHECK_EQ_INT(ids[0], 4094);
    CHECK_EQ_INT(tokenizer_encode(t, NULL, 0, 0, ids, 16), 0);
    /* Special tokens are not parsed from text. */
    int n;
    int32_t *sp = encode(t, "<|bos|>x<|endoftext|>", 21, 0, &n);
    REQUIRE(sp);
    for (int i = 0; i < n; i++) CHECK(sp[i] < 4094);
    CHECK(decodes_to(t, sp, n, "<|bos|>x<|endoftext|>", 21));
    free(sp);
    tokenizer_free(t);
}

static void test_unicode_round_trips(void)
{
    tokenizer *t = load_demo();
    static const char *const palette[] = {
        "a", "e", "t", "h", "Z", " ", " ", " ", "  ", "\t", "\n", "\r\n", "0", "7", "42",
        ".", ",", "'s", "'ll", "'", "\"", "-", "(", "\xc3\xa9", "\xc3\xbc", "\xc3\x9f",
        "\xe4\xb8\xad", "\xe6\x96\x87", "\xe3\x81\xae", "\xed\x95\x9c", "\xf0\x9f\x98\x80",
        "\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd", "\xe2\x80\x8d", "\xc2\xa0", "\xe3\x80\x80",
        "\xe2\x80\xa8", "\xd9\xa3", "\xc2\xb2", "\xe2\x85\xab", "\x00", "\x7f", "\xce\xa9",
    };
    const size_t n_palette = sizeof palette / sizeof palette[0];
    uint64_t s = 99;
    char text[512];
    for (int iter = 0; iter < 2000; iter++) {
        size_t len = 0;
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        int parts = (int)((s >> 33) % 40);
        for (int i = 0; i < parts; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            const char *p = palette[(s >> 33) % n_palette];
            size_t k = p[0] ? strlen(p) : 1; /* "\x00" is one NUL byte */
            memcpy(text + len, p, k);
            len += k;
        }
        if (!round_trips(t, text, len)) {
            fprintf(stderr, "  iteration %d does not round-trip\n", iter);
            testlib_failed_checks++;
            break;
        }
    }
    /* Whitespace runs: the last space of a run before a word joins the word. */
    static const size_t ws_ends[] = {1, 4, 8};
    check_split(t, "a    bcd", 8, ws_ends, 3);
    static const size_t digit_ends[] = {3, 7, 8};
    check_split(t, "abc 123!", 8, digit_ends, 3);
    tokenizer_free(t);
}

static void test_invalid_utf8(void)
{
    tokenizer *t = load_demo();
    /* Invalid runs become pieces of their own, between the regex's matches. */
    static const size_t e1[] = {2, 3, 5};
    check_split(t, "ab\xff" "cd", 5, e1, 3);
    static const size_t e2[] = {1, 3, 5};
    check_split(t, "a\xff\xfe b", 5, e2, 3);
    static const size_t e3[] = {2};
    check_split(t, "\xe4\xb8", 2, e3, 1);            /* truncated character */
    static const size_t e4[] = {1, 3};
    check_split(t, "x\xc0\xaf", 3, e4, 2);           /* overlong '/' */
    static const size_t e5[] = {3, 4};
    check_split(t, "\xed\xa0\x80y", 4, e5, 2);       /* surrogate */
    static const size_t e6[] = {2, 3};
    check_split(t, "\x80\x80x", 3, e6, 2);           /* stray continuation bytes */
    const char *cases[] = {("ab\xff" "cd"), "\xe4\xb8", "\xe4\xb8\xad\xe4", "\xf4\x90\x80\x80",
                           "\xf8\x88\x80\x80\x80", "caf\xe9 cr\xe8me", " \xff \xff  \xff"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK(round_trips(t, cases[i], strlen(cases[i])));
    /* Random bytes, any of them. */
    uint64_t s = 7;
    char buf[300];
    for (int iter = 0; iter < 2000; iter++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        size_t len = (s >> 33) % sizeof buf;
        for (size_t i = 0; i < len; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            buf[i] = (char)(s >> 56);
        }
        if (!round_trips(t, buf, len)) {
            fprintf(stderr, "  random bytes, iteration %d, do not round-trip\n", iter);
            testlib_failed_checks++;
            break;
        }
    }
    tokenizer_free(t);
}

static void test_long_inputs(void)
{
    tokenizer *t = load_demo();
    size_t len = 1 << 20;
    char *text = malloc(len);
    /* One 100 KB word: BPE over a single piece must not be quadratic. */
    for (size_t i = 0; i < 100000; i++) text[i] = "thee"[i % 4];
    CHECK(round_trips(t, text, 100000));
    /* 1 MB of spaces, then one letter. */
    memset(text, ' ', len);
    text[len - 1] = 'x';
    CHECK(round_trips(t, text, len));
    /* 300 KB of one CJK character. */
    for (size_t i = 0; i + 3 <= 300000; i += 3) memcpy(text + i, "\xe4\xb8\xad", 3);
    CHECK(round_trips(t, text, 300000));
    free(text);
    tokenizer_free(t);
}

typedef struct {
    const tokenizer *t;
    const char *text;
    size_t len;
    uint64_t hash;
    int n;
} thread_job;

static void *encode_thread(void *arg)
{
    thread_job *j = arg;
    for (int rep = 0; rep < 5; rep++) {
        int n;
        int32_t *ids = encode(j->t, j->text, j->len, 1, &n);
        j->n = n;
        j->hash = ids ? ids_hash(ids, n) : 0;
        free(ids);
    }
    return NULL;
}

static void test_threads(void)
{
    tokenizer *t = load_demo();
    size_t len;
    char *text = read_file(testlib_source_path("models/kjv-heldout.txt"), &len);
    REQUIRE(text);
    thread_job jobs[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (thread_job){t, text + i * 100, len - (size_t)i * 100, 0, 0};
        REQUIRE(pthread_create(&th[i], NULL, encode_thread, &jobs[i]) == 0);
    }
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 4; i++) {
        int n;
        int32_t *ids = encode(t, jobs[i].text, jobs[i].len, 1, &n);
        CHECK_EQ_INT(jobs[i].n, n);
        CHECK(jobs[i].hash == ids_hash(ids, n));
        free(ids);
    }
    CHECK_EQ_INT(jobs[0].n, 2046);
    free(text);
    tokenizer_free(t);
}

/* ---- hand-built vocabularies -------------------------------------------- */

static void test_tiny_model_vocab(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/tiny.gguf", testlib_tmpdir());
    REQUIRE(gguf_writer_tiny_llama(path, 32, 1, 2, 1, 64, 300, GGML_TYPE_F32, 3) == 0);
    gguf_file *f = gguf_open(path, err, sizeof err);
    REQUIRE(f);
    tokenizer *t = tokenizer_load(f, err, sizeof err);
    if (!t) fprintf(stderr, "  %s\n", err);
    gguf_close(f);
    REQUIRE(t);
    CHECK_EQ_INT(tokenizer_n_vocab(t), 300);
    CHECK_EQ_INT(tokenizer_bos(t), 298);
    CHECK_EQ_INT(tokenizer_eos(t), 299);
    CHECK_EQ_INT(tokenizer_add_bos(t), 1);
    int32_t ids[16];
    /* "Ġt" (256), "he" (257), "Ġthe" (258). " and" shows BPE at work: "a n"
     * (260) outranks "Ġ a" (263), and "Ġ an" is no merge, so the token
     * "Ġand" (270, from "Ġa nd") is unreachable: Ġ, an, d. */
    CHECK_EQ_INT(tokenizer_encode(t, " the and", 8, 0, ids, 16), 4);
    CHECK(ids[0] == 258 && ids[1] == ' ' && ids[2] == 260 && ids[3] == 'd');
    CHECK_EQ_INT(tokenizer_encode(t, "the", 3, 1, ids, 16), 3);
    CHECK(ids[0] == 298 && ids[1] == 't' && ids[2] == 257);
    char buf[32];
    int n = tokenizer_token_bytes(t, 290, buf, sizeof buf); /* a filler: plain text */
    CHECK(n == 14 && memcmp(buf, "<|unused_290|>", 14) == 0);
    CHECK(round_trips(t, "the quick brown fox", 19));
    tokenizer_free(t);
}

static void test_merge_order(void)
{
    /* Ties go to the leftmost pair; a lower rank always goes first. */
    static const char *const extra[] = {"aa", "aaaa", "bc", "ab", "aaa"};
    static const char *const merges[] = {"a a", "b c", "a b", "aa aa", "aa a"};
    gguf_writer *w = gguf_writer_new();
    gguf_writer_add_gpt2_tokenizer(w, extra, 5, merges, 5, 0);
    tokenizer *t = load_from_writer(w, err, sizeof err);
    gguf_writer_free(w);
    if (!t) fprintf(stderr, "  %s\n", err);
    REQUIRE(t);
    CHECK_EQ_INT(tokenizer_add_bos(t), 0);
    int32_t ids[16];
    CHECK_EQ_INT(tokenizer_encode(t, "aaa", 3, 1, ids, 16), 2);
    CHECK(ids[0] == 261 && ids[1] == 260); /* BOS; aa + a -> "aaa" (rank 4) */        /* aa + a -> "aaa" (rank 4) */
    CHECK_EQ_INT(tokenizer_encode(t, "aaaa", 4, 0, ids, 16), 1);
    CHECK_EQ_INT(ids[0], 257);        /* aa + aa (rank 3) before aa + a (rank 4) */
    CHECK_EQ_INT(tokenizer_encode(t, "aaaaa", 5, 0, ids, 16), 2);
    CHECK(ids[0] == 257 && ids[1] == 'a');
    CHECK_EQ_INT(tokenizer_encode(t, "abc", 3, 0, ids, 16), 2);
    CHECK(ids[0] == 'a' && ids[1] == 258); /* "b c" (rank 1) beats "a b" (rank 2) */
    CHECK_EQ_INT(tokenizer_encode(t, "abd", 3, 0, ids, 16), 2);
    CHECK(ids[0] == 259 && ids[1] == 'd');
    tokenizer_free(t);
}

static void test_load_errors(void)
{
    static const char *const extra[] = {"ab"};
    struct {
        const char *what;
        const char *needle;
    } cases[] = {
        {"llama model", "not supported"},
        {"no model", "tokenizer.ggml.model is missing"},
        {"unknown merge part", "is not in the vocabulary"},
        {"merge without space", "not two tokens"},
        {"bos out of range", "bos_token_id is not a token id"},
        {"missing byte", "byte 0x00 has no token"},
        {"short token_type", "token_type must be an array"},
        {"unknown pre-tokenizer", "pre-tokenizer 'tekken' (tokenizer.ggml.pre) is not supported"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        gguf_writer *w = gguf_writer_new();
        if (c == 0) {
            gguf_writer_add_str(w, "tokenizer.ggml.model", "bert");
        } else if (c == 1) {
            gguf_writer_add_u32(w, "x", 1);
        } else if (c == 2 || c == 3) {
            const char *bad[] = {c == 2 ? "a q" : "ab"};
            gguf_writer_add_gpt2_tokenizer(w, extra, 1, bad, 1, 1);
        } else if (c == 4) {
            char syms[256][3];
            const char *toks[256];
            for (int b = 0; b < 256; b++) {
                gguf_writer_byte_symbol(b, syms[b]);
                toks[b] = syms[b];
            }
            gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2");
            gguf_writer_add_str_array(w, "tokenizer.ggml.tokens", toks, 256);
            gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", 256);
        } else if (c == 7) {
            gguf_writer_add_bpe_tokenizer(w, "tekken", extra, 1, NULL, 0, 0);
        } else if (c == 5 || c == 6) {
            const char *toks[] = {"a", "b"};
            gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2");
            gguf_writer_add_str_array(w, "tokenizer.ggml.tokens", toks, 2);
            if (c == 6) {
                int32_t types[1] = {1};
                gguf_writer_add_array(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, 1);
            }
        }
        err[0] = '\0';
        tokenizer *t = load_from_writer(w, err, sizeof err);
        gguf_writer_free(w);
        CHECK(t == NULL);
        tokenizer_free(t);
        if (!strstr(err, cases[c].needle)) {
            fprintf(stderr, "  %s: error \"%s\" lacks \"%s\"\n", cases[c].what, err,
                    cases[c].needle);
            testlib_failed_checks++;
        }
    }
}

/* ---- pre-tokenizer table ------------------------------------------------- */

typedef struct {
    const char *text;
    size_t ends[24];
    int n_ends;
} split_vector;

/* Made by an independent Python reference (not in the repo): a hand-written matcher of the llama3 /
 * qwen2 regex (alternatives tried in order, each with its greedy/backtracking
 * result worked out by hand), \p{L} and \p{N} from unicodedata (Unicode 14.0,
 * as PCRE2 10.42), \s as Unicode White_Space; see docs/engine-gguf-tokenizer.md. */
static const split_vector llama3_splits[] = {
    {"Hello world", {5, 11}, 2},
    {"DON'T you'RE we'Ve I'M", {3, 5, 9, 12, 15, 18, 20, 22}, 8},
    {"1234567 and 12 x 1", {3, 6, 7, 11, 12, 14, 16, 17, 18}, 9},
    {"a  b\t\tc\n\n\nd   \n  e    ", {1, 2, 4, 5, 7, 10, 11, 15, 16, 18, 22}, 11},
    {"\xc3\x9cn\xc3\xaf""c\xc3\xb6""d\xc3\xa9 caf\xc3\xa9 \xe2\x80\x94 \xe2\x80\x9cq\xe2\x80\x9d", {11, 17, 21, 25, 26, 29}, 6},
    {"\xe4\xb8\xad\xe6\x96\x87\xe5\xad\x97\xe7\xac\xa6\xef\xbc\x8c\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae", {12, 27}, 2},
    {"Hello \xf0\x9f\x91\x8b\xf0\x9f\x8f\xbd world \xf0\x9f\x8e\x89!", {5, 14, 20, 26}, 4},
    {"x\xc2\xa0y\xe3\x80\x80z\xc2\x85w", {1, 4, 8, 11}, 4},
    {"foo(bar): [1, 2];\r\n\tbaz", {3, 7, 9, 11, 12, 13, 14, 15, 19, 23}, 10},
    {"   leading and trailing   ", {2, 10, 14, 23, 26}, 5},
    {"$%^&*!!\n\nnext", {9, 13}, 2},
    {"\xd9\xa3\xd9\xa4\xd9\xa5\xc2\xb2\xe2\x85\xa7 digits", {6, 11, 18}, 3},
    {"'s 'S 'x ' s", {2, 4, 5, 7, 8, 10, 12}, 7},
    {" ...\n\n...  \n", {6, 9, 12}, 3},
};
static const split_vector qwen2_splits[] = {
    {"Hello world", {5, 11}, 2},
    {"DON'T you'RE we'Ve I'M", {3, 5, 9, 12, 15, 18, 20, 22}, 8},
    {"1234567 and 12 x 1", {1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 14, 16, 17, 18}, 14},
    {"a  b\t\tc\n\n\nd   \n  e    ", {1, 2, 4, 5, 7, 10, 11, 15, 16, 18, 22}, 11},
    {"\xc3\x9cn\xc3\xaf""c\xc3\xb6""d\xc3\xa9 caf\xc3\xa9 \xe2\x80\x94 \xe2\x80\x9cq\xe2\x80\x9d", {11, 17, 21, 25, 26, 29}, 6},
    {"\xe4\xb8\xad\xe6\x96\x87\xe5\xad\x97\xe7\xac\xa6\xef\xbc\x8c\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae", {12, 27}, 2},
    {"Hello \xf0\x9f\x91\x8b\xf0\x9f\x8f\xbd world \xf0\x9f\x8e\x89!", {5, 14, 20, 26}, 4},
    {"x\xc2\xa0y\xe3\x80\x80z\xc2\x85w", {1, 4, 8, 11}, 4},
    {"foo(bar): [1, 2];\r\n\tbaz", {3, 7, 9, 11, 12, 13, 14, 15, 19, 23}, 10},
    {"   leading and trailing   ", {2, 10, 14, 23, 26}, 5},
    {"$%^&*!!\n\nnext", {9, 13}, 2},
    {"\xd9\xa3\xd9\xa4\xd9\xa5\xc2\xb2\xe2\x85\xa7 digits", {2, 4, 6, 8, 11, 18}, 6},
    {"'s 'S 'x ' s", {2, 4, 5, 7, 8, 10, 12}, 7},
    {" ...\n\n...  \n", {6, 9, 12}, 3},
};

static tokenizer *bpe_with_pre(const char *pre, const char *const *extra, int n_extra,
                               const char *const *merges, int n_merges)
{
    gguf_writer *w = gguf_writer_new();
    gguf_writer_add_bpe_tokenizer(w, pre, extra, n_extra, merges, n_merges, 0);
    tokenizer *t = load_from_writer(w, err, sizeof err);
    gguf_writer_free(w);
    if (!t) fprintf(stderr, "  %s\n", err);
    return t;
}

static void check_split_vectors(const char *pre, const split_vector *v, size_t n)
{
    tokenizer *t = bpe_with_pre(pre, NULL, 0, NULL, 0);
    REQUIRE(t);
    for (size_t i = 0; i < n; i++) {
        check_split(t, v[i].text, strlen(v[i].text), v[i].ends, v[i].n_ends);
        CHECK(round_trips(t, v[i].text, strlen(v[i].text)));
    }
    tokenizer_free(t);
}

static void test_pre_tokenizers(void)
{
    check_split_vectors("llama-bpe", llama3_splits, sizeof llama3_splits / sizeof llama3_splits[0]);
    check_split_vectors("qwen2", qwen2_splits, sizeof qwen2_splits / sizeof qwen2_splits[0]);
    /* Aliases map to the same pipeline; no key means llama.cpp's "default". */
    static const struct { const char *pre, *name; } names[] = {
        {"llama3", "llama-bpe"}, {"smaug-bpe", "dbrx"}, {"stablelm2", "qwen2"},
        {"smollm", "starcoder"}, {"olmo", "gpt-2"}, {NULL, "default"}, {"falcon", "falcon"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        tokenizer *t = bpe_with_pre(names[i].pre, NULL, 0, NULL, 0);
        REQUIRE(t);
        CHECK(strcmp(tokenizer_pre_name(t), names[i].name) == 0);
        tokenizer_free(t);
    }
    /* Multi-stage pipelines: starcoder isolates every digit first, so the
     * space before a number is a piece of its own; default splits
     * punctuation runs first and digit runs into threes. */
    tokenizer *t = bpe_with_pre("starcoder", NULL, 0, NULL, 0);
    REQUIRE(t);
    static const size_t sc_ends[] = {1, 2, 3, 4, 8};
    check_split(t, "x 12 abc", 8, sc_ends, 5);
    tokenizer_free(t);
    t = bpe_with_pre(NULL, NULL, 0, NULL, 0);
    REQUIRE(t);
    static const size_t def_ends[] = {2, 3, 4, 7, 9, 11, 13};
    check_split(t, "hi, 12345 x!!", 13, def_ends, 7);
    tokenizer_free(t);
    /* Llama 3 adds a BOS by default and gets ignore_merges. */
    t = bpe_with_pre("llama-bpe", NULL, 0, NULL, 0);
    REQUIRE(t);
    CHECK_EQ_INT(tokenizer_add_bos(t), 0); /* the writer says add_bos_token = false */
    tokenizer_free(t);
    /* Whitespace and newline runs stay linear (one scan per piece). */
    t = bpe_with_pre("llama-bpe", NULL, 0, NULL, 0);
    REQUIRE(t);
    size_t len = 1 << 20;
    char *text = malloc(len);
    memset(text, ' ', len);
    text[len - 1] = 'x';
    CHECK(round_trips(t, text, len));
    for (size_t i = 0; i < len; i++) text[i] = " \n\t"[i % 3];
    CHECK(round_trips(t, text, len));
    free(text);
    tokenizer_free(t);
}

static void test_ignore_merges(void)
{
    /* "abc" is a token no merge reaches: llama-bpe (ignore_merges) takes the
     * whole piece, dbrx (same regex, no ignore_merges) BPEs it. */
    static const char *const extra[] = {"abc", "ab"};
    static const char *const merges[] = {"a b"};
    int32_t ids[8];
    tokenizer *t = bpe_with_pre("llama-bpe", extra, 2, merges, 1);
    REQUIRE(t);
    CHECK_EQ_INT(tokenizer_encode(t, "abc ab", 6, 0, ids, 8), 3);
    CHECK(ids[0] == 256 && ids[1] == ' ' && ids[2] == 257);
    tokenizer_free(t);
    t = bpe_with_pre("dbrx", extra, 2, merges, 1);
    REQUIRE(t);
    CHECK_EQ_INT(tokenizer_encode(t, "abc ab", 6, 0, ids, 8), 4);
    CHECK(ids[0] == 257 && ids[1] == 'c' && ids[2] == ' ' && ids[3] == 257);
    tokenizer_free(t);
}

/* ---- special tokens ------------------------------------------------------ */

static void test_special_tokens(void)
{
    tokenizer *t = load_demo();
    const char *text = "<|bos|>x<|endoftext|>y";
    size_t len = strlen(text);
    int32_t ids[64];
    int n = tokenizer_encode_ex(t, text, len, TOKENIZER_PARSE_SPECIAL, ids, 64);
    CHECK_EQ_INT(n, 4);
    CHECK(ids[0] == 4094 && ids[1] == 'x' && ids[2] == 4095 && ids[3] == 'y');
    /* Without the flag (or with USER only: these are CONTROL) it is text. */
    int n_plain = tokenizer_encode(t, text, len, 0, ids, 64);
    CHECK(n_plain > 4);
    CHECK_EQ_INT(tokenizer_encode_ex(t, text, len, TOKENIZER_PARSE_USER, ids, 64), n_plain);
    CHECK_EQ_INT(tokenizer_encode_ex(t, text, len, TOKENIZER_PARSE_SPECIAL | TOKENIZER_ADD_BOS,
                                     ids, 64), 5);
    CHECK(ids[0] == 4094 && ids[1] == 4094);
    CHECK_EQ_INT(tokenizer_find_token(t, "<|endoftext|>"), 4095);
    CHECK_EQ_INT(tokenizer_find_token(t, "<|nope|>"), -1);
    CHECK_EQ_INT(tokenizer_token_type(t, 4095), TOKENIZER_TYPE_CONTROL);
    CHECK_EQ_INT(tokenizer_token_type(t, 'a'), TOKENIZER_TYPE_NORMAL);
    CHECK_EQ_INT(tokenizer_token_type(t, 4096), -1);
    CHECK(tokenizer_is_eog(t, 4095));
    CHECK(!tokenizer_is_eog(t, 4094));
    CHECK_EQ_INT(tokenizer_eot(t), 4095); /* "<|endoftext|>" by text */
    char buf[32];
    CHECK_EQ_INT(tokenizer_token_text(t, 258, buf, sizeof buf), 5);
    CHECK(memcmp(buf, "\xc4\xa0the", 5) == 0);
    tokenizer_free(t);

    /* Longest token first, even when a shorter one starts further left;
     * end-of-turn texts become CONTROL and EOG. */
    static const char *const extra[] = {"<|user|>", "ab"};
    gguf_writer *w = gguf_writer_new();
    int nv = gguf_writer_add_bpe_tokenizer(w, "llama-bpe", extra, 2, NULL, 0, 0);
    (void)nv;
    t = load_from_writer(w, err, sizeof err);
    gguf_writer_free(w);
    REQUIRE(t);
    CHECK(tokenizer_is_eog(t, 259)); /* <|endoftext|> */
    tokenizer_free(t);
}

/* ---- SentencePiece ------------------------------------------------------- */

typedef struct {
    const char *text;
    size_t len;
    unsigned flags;
    int32_t ids[16];
    int n_ids;
} spm_vector;

/* Made by spmref.py (docs/engine-gguf-tokenizer.md): an obviously quadratic
 * SentencePiece encoder (rescan all adjacent pairs, merge the best score,
 * leftmost on ties; symbols by lead-byte length; byte fallback) and
 * llama.cpp's special-token partition written from its description. */
static const spm_vector spm_vectors[] = {
    {"abc", 3, 1, {1, 268}, 2},
    {"abc", 3, 0, {268}, 1},
    {"a b c", 5, 0, {263, 259, 261, 259, 262}, 5},
    {"abcabc abc", 10, 0, {268, 266, 268}, 3},
    {"  a", 3, 0, {270, 263}, 2},
    {"\xe4\xb8\xad\xe6\x96\x87x", 7, 0, {259, 269, 233, 153, 138, 273}, 6},
    {"caf\xc3\xa9!", 6, 0, {259, 262, 260, 105, 274, 36}, 6},
    {"", 0, 1, {1}, 1},
    {"bcab", 4, 0, {259, 265, 264}, 3},
    {"ab<ctl>abc", 10, 0, {267, 63, 262, 119, 111, 65, 266}, 7},
    {"ab<ctl>abc", 10, 3, {1, 267, 272, 268}, 4},
    {"<|user|>xa b", 12, 4, {271, 259, 276, 259, 261}, 5},
    {"<|user|>xa b", 12, 2, {278, 263, 259, 261}, 4},
    {"x<|im_end|><|user|>", 19, 3, {1, 259, 273, 275, 271}, 5},
    {"\xff\xfe" "a\xc3", 4, 0, {259, 258, 257, 100, 198}, 5},
    {"a\n\tb", 4, 0, {263, 13, 12, 261}, 4},
};

static tokenizer *spm_vocab(int add_space_prefix)
{
    const char *U = "\xe2\x96\x81";
    char bytes[256][8];
    const char *toks[300];
    float scores[300];
    int32_t types[300];
    int n = 0;
    toks[n] = "<unk>", scores[n] = 0, types[n++] = 2;
    toks[n] = "<s>", scores[n] = 0, types[n++] = 3;
    toks[n] = "</s>", scores[n] = 0, types[n++] = 3;
    for (int b = 0; b < 256; b++) {
        snprintf(bytes[b], sizeof bytes[b], "<0x%02X>", b);
        toks[n] = bytes[b], scores[n] = 0, types[n++] = 6;
    }
    char sp[16][16];
    static const struct { const char *pre, *text; float score; int type; } normal[] = {
        {"\xe2\x96\x81", "", -1.0f, 1}, {"", "a", -2.0f, 1}, {"", "b", -2.5f, 1},
        {"", "c", -3.0f, 1}, {"\xe2\x96\x81", "a", -1.5f, 1}, {"", "ab", -1.2f, 1},
        {"", "bc", -1.2f, 1}, {"", "abc", -0.5f, 1}, {"\xe2\x96\x81", "ab", -0.8f, 1},
        {"\xe2\x96\x81", "abc", -0.3f, 1}, {"", "\xe4\xb8\xad", -4.0f, 1},
        {"\xe2\x96\x81\xe2\x96\x81", "", -2.0f, 1}, {"", "<|user|>", 0, 4}, {"", "<ctl>", 0, 3},
        {"", "x", -5.0f, 1}, {"", "\xc3\xa9", -4.0f, 1},
    };
    (void)U;
    for (size_t i = 0; i < sizeof normal / sizeof normal[0]; i++) {
        snprintf(sp[i], sizeof sp[i], "%s%s", normal[i].pre, normal[i].text);
        toks[n] = sp[i], scores[n] = normal[i].score, types[n++] = normal[i].type;
    }
    toks[n] = "<|im_end|>", scores[n] = 0, types[n++] = 3;
    toks[n] = "xa", scores[n] = -6.0f, types[n++] = 1;
    toks[n] = "ax", scores[n] = -6.0f, types[n++] = 1;
    toks[n] = "<|user|>x", scores[n] = 0, types[n++] = 3;
    gguf_writer *w = gguf_writer_new();
    gguf_writer_add_spm_tokenizer(w, toks, scores, types, n, add_space_prefix);
    tokenizer *t = load_from_writer(w, err, sizeof err);
    gguf_writer_free(w);
    if (!t) fprintf(stderr, "  %s\n", err);
    return t;
}

static void test_spm_vectors(void)
{
    tokenizer *t = spm_vocab(-1);
    REQUIRE(t);
    CHECK_EQ_INT(tokenizer_n_vocab(t), 279);
    CHECK_EQ_INT(tokenizer_bos(t), 1);
    CHECK_EQ_INT(tokenizer_eos(t), 2);
    CHECK_EQ_INT(tokenizer_unk(t), 0);
    CHECK_EQ_INT(tokenizer_add_bos(t), 1);
    CHECK_EQ_INT(tokenizer_add_space_prefix(t), 1);
    CHECK(strcmp(tokenizer_pre_name(t), "spm") == 0);
    for (size_t v = 0; v < sizeof spm_vectors / sizeof spm_vectors[0]; v++) {
        const spm_vector *sv = &spm_vectors[v];
        int32_t ids[32];
        int n = tokenizer_encode_ex(t, sv->text, sv->len, sv->flags, ids, 32);
        int same = n == sv->n_ids;
        for (int i = 0; same && i < n; i++) same = ids[i] == sv->ids[i];
        if (!same) {
            fprintf(stderr, "  spm vector %zu: got", v);
            for (int i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
            fprintf(stderr, "\n");
            testlib_failed_checks++;
        }
    }
    /* Decoding: U+2581 is a space, <0xXX> its byte, control tokens nothing. */
    char buf[64];
    CHECK_EQ_INT(tokenizer_token_bytes(t, 268, buf, sizeof buf), 4);
    CHECK(memcmp(buf, " abc", 4) == 0);
    CHECK_EQ_INT(tokenizer_token_bytes(t, 3 + 0xe4, buf, sizeof buf), 1);
    CHECK_EQ_INT((uint8_t)buf[0], 0xe4);
    CHECK_EQ_INT(tokenizer_token_bytes(t, 1, buf, sizeof buf), 0);
    CHECK_EQ_INT(tokenizer_token_bytes(t, 0, buf, sizeof buf), 0);
    CHECK_EQ_INT(tokenizer_token_bytes(t, 271, buf, sizeof buf), 8); /* user-defined: text */
    CHECK(tokenizer_is_eog(t, 2) && tokenizer_is_eog(t, 275) && !tokenizer_is_eog(t, 1));
    /* Round trip: every text decodes back with the prefix space in front. */
    static const char *const texts[] = {"a b  c", "\xe4\xb8\xad\xe6\x96\x87 caf\xc3\xa9",
                                        "x\n\ty", "abcabc"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        char want[64];
        snprintf(want, sizeof want, " %s", texts[i]);
        int n;
        int32_t *ids = encode(t, texts[i], strlen(texts[i]), 0, &n);
        REQUIRE(ids);
        CHECK(decodes_to(t, ids, n, want, strlen(want)));
        free(ids);
    }
    tokenizer_free(t);
    /* add_space_prefix = false: no leading U+2581. */
    t = spm_vocab(0);
    REQUIRE(t);
    int32_t ids[8];
    CHECK_EQ_INT(tokenizer_encode(t, "abc", 3, 0, ids, 8), 1);
    CHECK_EQ_INT(ids[0], 266);
    tokenizer_free(t);
}

static void test_spm_long(void)
{
    tokenizer *t = spm_vocab(-1);
    REQUIRE(t);
    size_t len = 300000;
    char *text = malloc(len);
    for (size_t i = 0; i < len; i++) text[i] = "ab c"[i % 4];
    int n;
    int32_t *ids = encode(t, text, len, 0, &n);
    CHECK(ids && n > 0);
    free(ids);
    free(text);
    tokenizer_free(t);
}

/* ---- streaming ----------------------------------------------------------- */

/* Emits pieces through tokenizer_utf8_complete_len: every chunk handed out
 * must be valid UTF-8 on its own when the whole is. */
static int stream_ok(const tokenizer *t, const int32_t *ids, int n)
{
    char held[4096];
    size_t n_held = 0;
    int ok = 1;
    for (int i = 0; i < n && ok; i++) {
        int k = tokenizer_token_bytes(t, ids[i], held + n_held, sizeof held - n_held);
        if (k < 0 || (size_t)k > sizeof held - n_held) return 0;
        n_held += (size_t)k;
        size_t m = tokenizer_utf8_complete_len(held, n_held);
        for (size_t j = 0; j < m;) { /* the chunk must be whole characters */
            uint8_t b = (uint8_t)held[j];
            size_t cl = b < 0x80 ? 1 : b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : 2;
            if (j + cl > m) { ok = 0; break; }
            j += cl;
        }
        memmove(held, held + m, n_held - m);
        n_held -= m;
    }
    return ok && n_held == 0;
}

static void test_utf8_stream(void)
{
    CHECK_EQ_INT(tokenizer_utf8_complete_len("ab\xe4\xb8", 4), 2);
    CHECK_EQ_INT(tokenizer_utf8_complete_len("ab\xe4\xb8\xad", 5), 5);
    CHECK_EQ_INT(tokenizer_utf8_complete_len("\xf0\x9f\x98", 3), 0);
    CHECK_EQ_INT(tokenizer_utf8_complete_len("\xf0", 1), 0);
    CHECK_EQ_INT(tokenizer_utf8_complete_len("a\xc3", 2), 1);
    CHECK_EQ_INT(tokenizer_utf8_complete_len("a\xff", 2), 2);       /* invalid: passes */
    CHECK_EQ_INT(tokenizer_utf8_complete_len("a\xe0\x80", 3), 3);   /* overlong prefix */
    CHECK_EQ_INT(tokenizer_utf8_complete_len("a\xed\xa0", 3), 3);   /* surrogate prefix */
    CHECK_EQ_INT(tokenizer_utf8_complete_len("\x80\x80\x80", 3), 3);
    CHECK_EQ_INT(tokenizer_utf8_complete_len("", 0), 0);
    /* Byte-level BPE: the demo vocabulary splits CJK and emoji across byte
     * tokens; SentencePiece: byte fallback splits unknown characters. */
    tokenizer *t = load_demo();
    static const char *const palette[] = {"a", " the", "\xe4\xb8\xad", "\xf0\x9f\x98\x80",
                                          "\xc3\xa9", "\n", "\xe2\x80\x94", "7"};
    uint64_t s = 5;
    char text[256];
    for (int iter = 0; iter < 500; iter++) {
        size_t len = 0;
        for (int i = 0; i < 30; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            const char *p = palette[(s >> 33) % 8];
            memcpy(text + len, p, strlen(p));
            len += strlen(p);
        }
        int n;
        int32_t *ids = encode(t, text, len, 0, &n);
        REQUIRE(ids);
        if (!stream_ok(t, ids, n)) {
            testlib_failed_checks++;
            fprintf(stderr, "  byte-level stream %d splits a character\n", iter);
            free(ids);
            break;
        }
        free(ids);
    }
    tokenizer_free(t);
    t = spm_vocab(-1);
    REQUIRE(t);
    int n;
    int32_t *ids = encode(t, "\xe6\x96\x87\xf0\x9f\x98\x80 a\xe4\xb8\xad", 13, 0, &n);
    REQUIRE(ids);
    CHECK(n >= 8);
    CHECK(stream_ok(t, ids, n));
    free(ids);
    tokenizer_free(t);
}

int main(void)
{
    RUN(test_demo_vocabulary);
    RUN(test_known_vectors);
    RUN(test_heldout_text);
    RUN(test_bos_and_cap);
    RUN(test_unicode_round_trips);
    RUN(test_invalid_utf8);
    RUN(test_long_inputs);
    RUN(test_threads);
    RUN(test_tiny_model_vocab);
    RUN(test_merge_order);
    RUN(test_load_errors);
    RUN(test_pre_tokenizers);
    RUN(test_ignore_merges);
    RUN(test_special_tokens);
    RUN(test_spm_vectors);
    RUN(test_spm_long);
    RUN(test_utf8_stream);
    return testlib_finish();
}
