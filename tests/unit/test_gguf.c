/* test_gguf.c: the GGUF reader on real and synthetic files, valid and broken.
 *
 * Valid: the demo model (metadata and tensor table as its README states) and
 * synthetic files with every metadata type. Broken: every prefix of a small
 * file, one test per validation rule (each patches one field of a valid file
 * and checks the error names the problem), and seeded random byte flips that
 * must never crash. Also the writer's fp16 / Q8_0 conversions. */
#define _GNU_SOURCE
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/gguf.h"
#include "gguf_writer.h"
#include "testlib.h"

static char err[512];

/* ---- helpers ------------------------------------------------------------- */

/* A small file with every metadata type, a string array and three tensors. */
static gguf_writer *sample_writer(void)
{
    gguf_writer *w = gguf_writer_new();
    gguf_writer_add_str(w, "general.architecture", "test");
    gguf_writer_add_u8(w, "t.u8", 200);
    gguf_writer_add_i8(w, "t.i8", -100);
    gguf_writer_add_u16(w, "t.u16", 60000);
    gguf_writer_add_i16(w, "t.i16", -30000);
    gguf_writer_add_u32(w, "t.u32", 4000000000u);
    gguf_writer_add_i32(w, "t.i32", -2000000000);
    gguf_writer_add_f32(w, "t.f32", 1.5f);
    gguf_writer_add_bool(w, "t.bool", 1);
    gguf_writer_add_u64(w, "t.u64", 0xffffffffffffull);
    gguf_writer_add_i64(w, "t.i64", -5);
    gguf_writer_add_f64(w, "t.f64", 0.25);
    gguf_writer_add_str_n(w, "t.bytes", "a\0b", 3);
    const char *strs[] = {"alpha", "", "gamma delta"};
    gguf_writer_add_str_array(w, "t.strs", strs, 3);
    int32_t ints[] = {1, -2, 3};
    gguf_writer_add_array(w, "t.ints", GGUF_TYPE_INT32, ints, 3);
    float floats[] = {0.5f, -1.0f};
    gguf_writer_add_array(w, "t.floats", GGUF_TYPE_FLOAT32, floats, 2);
    uint8_t none[1];
    gguf_writer_add_array(w, "t.empty", GGUF_TYPE_UINT8, none, 0);
    float a[4 * 3];
    for (int i = 0; i < 12; i++) a[i] = (float)i;
    uint64_t ne_a[2] = {4, 3};
    gguf_writer_add_tensor(w, "a", 2, ne_a, GGML_TYPE_F32, a, sizeof a);
    uint64_t ne_b[1] = {5};
    gguf_writer_add_tensor(w, "b", 1, ne_b, GGML_TYPE_F16, NULL, 10);
    uint64_t ne_c[4] = {32, 2, 1, 2};
    gguf_writer_add_tensor(w, "c", 4, ne_c, GGML_TYPE_Q8_0, NULL, 34 * 4);
    return w;
}

static uint8_t *sample_bytes(size_t *n)
{
    gguf_writer *w = sample_writer();
    uint8_t *buf;
    REQUIRE(gguf_writer_write_memory(w, &buf, n) == 0);
    gguf_writer_free(w);
    return buf;
}

/* Offset of the first occurrence of a length-prefixed string s in buf. */
static size_t find_lpstr(const uint8_t *buf, size_t n, const char *s)
{
    size_t len = strlen(s);
    for (size_t i = 0; i + 8 + len <= n; i++) {
        uint64_t l;
        memcpy(&l, buf + i, 8);
        if (l == len && memcmp(buf + i + 8, s, len) == 0) return i;
    }
    return (size_t)-1;
}

/* Offset just after the name of tensor info `name` (its n_dims field). */
static size_t tensor_info(const uint8_t *buf, size_t n, const char *name)
{
    size_t at = find_lpstr(buf, n, name);
    REQUIRE(at != (size_t)-1);
    return at + 8 + strlen(name);
}

static void put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

/* Opens buf and expects failure with `needle` in the message. */
static void expect_error(const uint8_t *buf, size_t n, const char *needle)
{
    err[0] = '\0';
    gguf_file *f = gguf_open_memory(buf, n, err, sizeof err);
    CHECK(f == NULL);
    if (f) {
        gguf_close(f);
        fprintf(stderr, "  expected an error containing \"%s\"\n", needle);
        return;
    }
    if (!strstr(err, needle)) {
        fprintf(stderr, "  error \"%s\" lacks \"%s\"\n", err, needle);
        testlib_failed_checks++;
    }
}

/* Reads everything a consumer could read, so ASan sees any bad pointer. */
static uint64_t walk(const gguf_file *f)
{
    uint64_t sum = 0;
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const gguf_kv *kv = &f->kv[i];
        for (uint64_t j = 0; j < kv->key.len; j++) sum += (uint8_t)kv->key.ptr[j];
        if (kv->type == GGUF_TYPE_STRING)
            for (uint64_t j = 0; j < kv->v.str.len; j++) sum += (uint8_t)kv->v.str.ptr[j];
        if (kv->type != GGUF_TYPE_ARRAY) continue;
        for (uint64_t j = 0; j < kv->count; j++) {
            gguf_str s;
            int64_t iv;
            float fv;
            if (gguf_arr_str(kv, j, &s) == 0 && s.len) sum += (uint8_t)s.ptr[s.len - 1];
            if (gguf_arr_i64(kv, j, &iv) == 0) sum += (uint64_t)iv;
            if (gguf_arr_f32(kv, j, &fv) == 0) sum += (uint64_t)(fv == fv);
        }
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        const uint8_t *d = t->data;
        if (t->nbytes) sum += d[0] + d[t->nbytes - 1];
        char name[300];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        if (strlen(name) == t->name.len) CHECK(gguf_find_tensor(f, name) != NULL);
    }
    return sum;
}

/* ---- valid files --------------------------------------------------------- */

static void test_demo_model(void)
{
    gguf_file *f = gguf_open(testlib_source_path("models/kjv-llama-6.3M-q8_0.gguf"), err,
                             sizeof err);
    if (!f) fprintf(stderr, "  %s\n", err);
    REQUIRE(f);
    CHECK_EQ_INT(f->version, 3);
    CHECK_EQ_INT(f->n_tensors, 57);
    CHECK_EQ_INT(f->n_kv, 26);
    CHECK_EQ_INT(f->alignment, 32);
    CHECK_EQ_INT(f->size, 6868576);
    CHECK(f->fd >= 0);
    CHECK(f->data_offset % 32 == 0);

    uint32_t u;
    CHECK(gguf_get_u32(f, "llama.block_count", &u) == 0 && u == 6);
    CHECK(gguf_get_u32(f, "llama.embedding_length", &u) == 0 && u == 256);
    CHECK(gguf_get_u32(f, "llama.feed_forward_length", &u) == 0 && u == 704);
    CHECK(gguf_get_u32(f, "llama.attention.head_count_kv", &u) == 0 && u == 2);
    CHECK(gguf_get_u32(f, "tokenizer.ggml.bos_token_id", &u) == 0 && u == 4094);
    CHECK(gguf_get_u32(f, "no.such.key", &u) == -1);
    float x;
    CHECK(gguf_get_f32(f, "llama.rope.freq_base", &x) == 0 && x == 10000.0f);
    CHECK(gguf_get_f32(f, "llama.attention.layer_norm_rms_epsilon", &x) == 0 && x == 1e-5f);
    int b;
    CHECK(gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &b) == 0 && b == 1);
    gguf_str s;
    CHECK(gguf_get_str(f, "general.architecture", &s) == 0 && gguf_str_eq(s, "llama"));
    CHECK(gguf_get_str(f, "tokenizer.ggml.model", &s) == 0 && gguf_str_eq(s, "gpt2"));
    CHECK(gguf_get_str(f, "llama.block_count", &s) == -1); /* wrong type */

    const gguf_kv *tokens = gguf_find(f, "tokenizer.ggml.tokens");
    REQUIRE(tokens && tokens->type == GGUF_TYPE_ARRAY);
    CHECK_EQ_INT(tokens->elem_type, GGUF_TYPE_STRING);
    CHECK_EQ_INT(tokens->count, 4096);
    CHECK(gguf_arr_str(tokens, 4094, &s) == 0 && gguf_str_eq(s, "<|bos|>"));
    CHECK(gguf_arr_str(tokens, 4095, &s) == 0 && gguf_str_eq(s, "<|endoftext|>"));
    CHECK(gguf_arr_str(tokens, 0, &s) == 0 && gguf_str_eq(s, "\xc4\x80")); /* byte 0 -> U+0100 */
    CHECK(gguf_arr_str(tokens, 'A', &s) == 0 && gguf_str_eq(s, "A"));
    CHECK(gguf_arr_str(tokens, 4096, &s) == -1);
    const gguf_kv *merges = gguf_find(f, "tokenizer.ggml.merges");
    REQUIRE(merges);
    CHECK_EQ_INT(merges->count, 3838);
    CHECK(gguf_arr_str(merges, 0, &s) == 0 && gguf_str_eq(s, "t h"));
    const gguf_kv *types = gguf_find(f, "tokenizer.ggml.token_type");
    int64_t tt;
    REQUIRE(types);
    CHECK(gguf_arr_i64(types, 100, &tt) == 0 && tt == 1);
    CHECK(gguf_arr_i64(types, 4094, &tt) == 0 && tt == 3);
    CHECK(gguf_arr_i64(tokens, 0, &tt) == -1); /* strings are not integers */

    const gguf_tensor *t = gguf_find_tensor(f, "token_embd.weight");
    REQUIRE(t);
    CHECK_EQ_INT(t->type, GGML_TYPE_Q8_0);
    CHECK_EQ_INT(t->n_dims, 2);
    CHECK_EQ_INT(t->ne[0], 256);
    CHECK_EQ_INT(t->ne[1], 4096);
    CHECK_EQ_INT(t->ne[2], 1);
    CHECK_EQ_INT(t->offset, 0);
    CHECK_EQ_INT(t->nbytes, 256 / 32 * 34 * 4096);
    CHECK((const uint8_t *)t->data == f->base + f->data_offset);
    t = gguf_find_tensor(f, "output_norm.weight");
    REQUIRE(t);
    CHECK_EQ_INT(t->type, GGML_TYPE_F32);
    CHECK_EQ_INT(t->n_dims, 1);
    CHECK_EQ_INT(t->nbytes, 1024);
    t = gguf_find_tensor(f, "blk.5.ffn_down.weight");
    REQUIRE(t);
    CHECK_EQ_INT(t->ne[0], 704);
    CHECK_EQ_INT(t->ne[1], 256);
    CHECK(gguf_find_tensor(f, "blk.6.ffn_down.weight") == NULL);
    /* The last tensor ends at most one alignment before the end of the file. */
    const gguf_tensor *last = &f->tensors[f->n_tensors - 1];
    CHECK(f->data_offset + last->offset + last->nbytes <= f->size);
    CHECK(f->size - (f->data_offset + last->offset + last->nbytes) < 32);
    walk(f);
    gguf_close(f);
}

static void test_reference_models(void)
{
    const char *names[] = {"tests/models/kjv-llama-6.3M-f16.gguf",
                           "tests/models/kjv-llama-6.3M-f32.gguf"};
    ggml_type want[] = {GGML_TYPE_F16, GGML_TYPE_F32};
    for (int i = 0; i < 2; i++) {
        gguf_file *f = gguf_open(testlib_source_path(names[i]), err, sizeof err);
        if (!f) fprintf(stderr, "  %s\n", err);
        REQUIRE(f);
        CHECK_EQ_INT(f->n_tensors, 57);
        const gguf_tensor *t = gguf_find_tensor(f, "blk.0.attn_k.weight");
        REQUIRE(t);
        CHECK_EQ_INT(t->type, want[i]);
        CHECK_EQ_INT(t->ne[0], 256);
        CHECK_EQ_INT(t->ne[1], 64);
        gguf_close(f);
    }
}

static void test_every_kv_type(void)
{
    size_t n;
    uint8_t *buf = sample_bytes(&n);
    gguf_file *f = gguf_open_memory(buf, n, err, sizeof err);
    if (!f) fprintf(stderr, "  %s\n", err);
    REQUIRE(f);
    CHECK_EQ_INT(f->n_kv, 17);
    CHECK_EQ_INT(f->fd, -1);
    uint32_t u;
    CHECK(gguf_get_u32(f, "t.u8", &u) == 0 && u == 200);
    CHECK(gguf_get_u32(f, "t.u16", &u) == 0 && u == 60000);
    CHECK(gguf_get_u32(f, "t.u32", &u) == 0 && u == 4000000000u);
    CHECK(gguf_get_u32(f, "t.i8", &u) == -1);   /* negative: does not fit */
    CHECK(gguf_get_u32(f, "t.u64", &u) == -1);  /* too large */
    CHECK(gguf_get_u32(f, "t.f32", &u) == -1);  /* not an integer */
    const gguf_kv *kv = gguf_find(f, "t.i16");
    CHECK(kv && kv->type == GGUF_TYPE_INT16 && kv->v.i64 == -30000);
    kv = gguf_find(f, "t.i32");
    CHECK(kv && kv->v.i64 == -2000000000);
    kv = gguf_find(f, "t.i64");
    CHECK(kv && kv->v.i64 == -5);
    kv = gguf_find(f, "t.u64");
    CHECK(kv && kv->v.u64 == 0xffffffffffffull);
    float x;
    CHECK(gguf_get_f32(f, "t.f32", &x) == 0 && x == 1.5f);
    CHECK(gguf_get_f32(f, "t.f64", &x) == 0 && x == 0.25f);
    int b = 0;
    CHECK(gguf_get_bool(f, "t.bool", &b) == 0 && b == 1);
    gguf_str s;
    CHECK(gguf_get_str(f, "t.bytes", &s) == 0 && s.len == 3 && memcmp(s.ptr, "a\0b", 3) == 0);

    kv = gguf_find(f, "t.strs");
    REQUIRE(kv);
    CHECK(gguf_arr_str(kv, 0, &s) == 0 && gguf_str_eq(s, "alpha"));
    CHECK(gguf_arr_str(kv, 1, &s) == 0 && gguf_str_eq(s, ""));
    CHECK(gguf_arr_str(kv, 2, &s) == 0 && gguf_str_eq(s, "gamma delta"));
    CHECK(gguf_arr_str(kv, 3, &s) == -1);
    kv = gguf_find(f, "t.ints");
    int64_t iv;
    REQUIRE(kv);
    CHECK(gguf_arr_i64(kv, 1, &iv) == 0 && iv == -2);
    CHECK(gguf_arr_i64(kv, 2, &iv) == 0 && iv == 3);
    CHECK(gguf_arr_str(kv, 0, &s) == -1);
    CHECK(gguf_arr_f32(kv, 0, &x) == -1);
    kv = gguf_find(f, "t.floats");
    REQUIRE(kv);
    CHECK(gguf_arr_f32(kv, 1, &x) == 0 && x == -1.0f);
    kv = gguf_find(f, "t.empty");
    CHECK(kv && kv->count == 0 && gguf_arr_i64(kv, 0, &iv) == -1);
    /* Every key/value's byte range, one after the other, from the end of the
     * header to the first tensor info. */
    uint64_t at = 24;
    for (uint64_t i = 0; i < f->n_kv; i++) {
        uint64_t start, end;
        gguf_kv_range(f, i, &start, &end);
        CHECK_EQ_INT(start, at);
        CHECK(end > start);
        at = end;
    }
    CHECK_EQ_INT(at, (uint64_t)((const uint8_t *)f->tensors[0].name.ptr - 8 - f->base));

    const gguf_tensor *t = gguf_find_tensor(f, "a");
    REQUIRE(t);
    CHECK_EQ_INT(t->nbytes, 48);
    CHECK(((const float *)t->data)[11] == 11.0f);
    t = gguf_find_tensor(f, "c");
    REQUIRE(t);
    CHECK_EQ_INT(t->n_dims, 4);
    CHECK_EQ_INT(t->ne[3], 2);
    CHECK_EQ_INT(t->nbytes, 136);
    for (uint64_t i = 0; i < f->n_tensors; i++)
        CHECK((f->tensors[i].offset % 32) == 0 &&
              ((const uint8_t *)f->tensors[i].data - f->base) % 32 == 0);
    gguf_close(f);
    free(buf);
}

static void test_version2_and_alignment(void)
{
    gguf_writer *w = gguf_writer_new();
    gguf_writer_set_version(w, 2);
    gguf_writer_set_alignment(w, 256);
    uint64_t ne[1] = {3};
    gguf_writer_add_tensor(w, "x", 1, ne, GGML_TYPE_F32, NULL, 12);
    gguf_writer_add_tensor(w, "y", 1, ne, GGML_TYPE_F32, NULL, 12);
    uint8_t *buf;
    size_t n;
    REQUIRE(gguf_writer_write_memory(w, &buf, &n) == 0);
    gguf_writer_free(w);
    gguf_file *f = gguf_open_memory(buf, n, err, sizeof err);
    REQUIRE(f);
    CHECK_EQ_INT(f->version, 2);
    CHECK_EQ_INT(f->alignment, 256);
    CHECK_EQ_INT(f->data_offset % 256, 0);
    CHECK_EQ_INT(gguf_find_tensor(f, "y")->offset, 256);
    gguf_close(f);
    free(buf);

    /* No tensors, no metadata: valid, and the data section may be absent. */
    w = gguf_writer_new();
    REQUIRE(gguf_writer_write_memory(w, &buf, &n) == 0);
    gguf_writer_free(w);
    CHECK_EQ_INT(n, 24);
    f = gguf_open_memory(buf, n, err, sizeof err);
    CHECK(f && f->n_kv == 0 && f->n_tensors == 0);
    gguf_close(f);
    free(buf);
}

static void test_tiny_llama_writer(void)
{
    char path[512];
    ggml_type types[] = {GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_Q8_0};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/tiny%d.gguf", testlib_tmpdir(), i);
        REQUIRE(gguf_writer_tiny_llama(path, 64, 2, 4, 2, 96, 300, types[i], 42) == 0);
        gguf_file *f = gguf_open(path, err, sizeof err);
        if (!f) fprintf(stderr, "  %s\n", err);
        REQUIRE(f);
        CHECK_EQ_INT(f->n_tensors, 3 + 9 * 2);
        uint32_t u;
        CHECK(gguf_get_u32(f, "llama.attention.head_count_kv", &u) == 0 && u == 2);
        CHECK(gguf_get_u32(f, "tokenizer.ggml.eos_token_id", &u) == 0 && u == 299);
        const gguf_tensor *t = gguf_find_tensor(f, "blk.1.attn_k.weight");
        REQUIRE(t);
        CHECK_EQ_INT(t->type, types[i]);
        CHECK_EQ_INT(t->ne[0], 64);
        CHECK_EQ_INT(t->ne[1], 32);
        t = gguf_find_tensor(f, "blk.1.ffn_norm.weight");
        REQUIRE(t);
        CHECK_EQ_INT(t->type, GGML_TYPE_F32);
        CHECK(fabsf(((const float *)t->data)[0] - 1.0f) <= 0.1f);
        gguf_close(f);
    }
    /* Same seed, same bytes. */
    char p2[512];
    snprintf(p2, sizeof p2, "%s/tiny-again.gguf", testlib_tmpdir());
    REQUIRE(gguf_writer_tiny_llama(p2, 64, 2, 4, 2, 96, 300, GGML_TYPE_Q8_0, 42) == 0);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s'", path, p2);
    CHECK(system(cmd) == 0);
    CHECK(gguf_writer_tiny_llama(p2, 48, 1, 4, 2, 96, 300, GGML_TYPE_Q8_0, 1) == -1);
    CHECK(gguf_writer_tiny_llama(p2, 64, 1, 4, 3, 96, 300, GGML_TYPE_F32, 1) == -1);
}

/* ---- broken files -------------------------------------------------------- */

static void test_every_truncation_fails(void)
{
    size_t n;
    uint8_t *full = sample_bytes(&n);
    for (size_t len = 0; len < n; len++) {
        /* A fresh allocation of exactly len bytes, so ASan catches any read past it. */
        uint8_t *p = malloc(len ? len : 1);
        memcpy(p, full, len);
        err[0] = '\0';
        gguf_file *f = gguf_open_memory(len ? p : NULL, len, err, sizeof err);
        if (f) {
            fprintf(stderr, "  prefix of %zu/%zu bytes was accepted\n", len, n);
            testlib_failed_checks++;
            gguf_close(f);
        } else if (!err[0]) {
            fprintf(stderr, "  prefix of %zu bytes failed without a message\n", len);
            testlib_failed_checks++;
        }
        free(p);
    }
    gguf_file *f = gguf_open_memory(full, n, err, sizeof err);
    CHECK(f != NULL);
    gguf_close(f);
    free(full);
}

static void test_truncation_message(void)
{
    size_t n;
    uint8_t *buf = sample_bytes(&n);
    size_t at = find_lpstr(buf, n, "gamma delta");
    REQUIRE(at != (size_t)-1);
    char want[128];
    snprintf(want, sizeof want, "truncated file: array string at offset %zu needs 11 bytes, 5 left",
             at);
    expect_error(buf, at + 8 + 5, want);
    free(buf);
}

static void test_bad_header(void)
{
    size_t n;
    uint8_t *buf = sample_bytes(&n);
    buf[0] = 'X';
    expect_error(buf, n, "not a GGUF file");
    buf[0] = 'G';
    put_u32(buf + 4, 1);
    expect_error(buf, n, "unsupported GGUF version 1");
    put_u32(buf + 4, 3);
    put_u64(buf + 8, 1ull << 40);
    expect_error(buf, n, "tensor count");
    put_u64(buf + 8, 3);
    put_u64(buf + 16, UINT64_MAX);
    expect_error(buf, n, "metadata count");
    free(buf);
}

static void test_huge_string_and_array(void)
{
    size_t n;
    uint8_t *buf = sample_bytes(&n);
    size_t at = find_lpstr(buf, n, "t.bytes");
    REQUIRE(at != (size_t)-1);
    size_t val = at + 8 + 7 + 4; /* the value's length field */
    put_u64(buf + val, UINT64_MAX - 3);
    expect_error(buf, n, "truncated file: metadata string at offset");
    put_u64(buf + val, 3);

    /* Key length over the spec's 65535 limit. */
    put_u64(buf + 24, 70000);
    expect_error(buf, n, "more than the limit");
    put_u64(buf + 24, strlen("general.architecture"));

    at = find_lpstr(buf, n, "t.strs");
    size_t count = at + 8 + 6 + 4 + 4;
    put_u64(buf + count, 1ull << 61);
    expect_error(buf, n, "strings needs at least");
    put_u64(buf + count, 3);

    at = find_lpstr(buf, n, "t.ints");
    count = at + 8 + 6 + 4 + 4;
    put_u64(buf + count, UINT64_MAX / 2);
    expect_error(buf, n, "int32 elements");
    put_u64(buf + count, 3);
    /* Nested arrays and unknown types. */
    put_u32(buf + count - 4, GGUF_TYPE_ARRAY);
    expect_error(buf, n, "nested array");
    put_u32(buf + count - 4, 99);
    expect_error(buf, n, "unknown array element type 99");
    put_u32(buf + count - 4, GGUF_TYPE_INT32);
    put_u32(buf + count - 8, 13);
    expect_error(buf, n, "unknown metadata value type 13 for key 't.ints'");
    put_u32(buf + count - 8, GGUF_TYPE_ARRAY);

    gguf_file *f = gguf_open_memory(buf, n, err, sizeof err);
    CHECK(f != NULL); /* every patch was undone */
    gguf_close(f);
    free(buf);
}

static void test_bad_tensor_infos(void)
{
    size_t n;
    uint8_t *buf = sample_bytes(&n);
    size_t a = tensor_info(buf, n, "a"); /* n_dims, ne[0], ne[1], type, offset */
    size_t c = tensor_info(buf, n, "c");
    uint8_t *copy = malloc(n);

#define PATCHED(stmt, needle) do { memcpy(copy, buf, n); uint8_t *b_ = copy; (void)b_; \
        stmt; expect_error(copy, n, needle); } while (0)
    PATCHED(put_u32(copy + a, 5), "has 5 dimensions");
    PATCHED(put_u32(copy + a, 0), "has 0 dimensions");
    PATCHED(put_u32(copy + a + 4 + 16, 77), "unknown type 77");
    PATCHED(put_u32(copy + a + 4 + 16, 4), "unknown type 4"); /* Q4_2: removed from ggml */
    PATCHED(put_u64(copy + a + 4, 1ull << 62), "element count overflows");
    /* 2^62 F32 elements are countable, but not their 2^64 bytes. */
    PATCHED(put_u32(copy + a, 1); memmove(copy + a + 4, copy + a + 12, n - a - 12);
            put_u64(copy + a + 4, 1ull << 62), "byte size overflows");
    PATCHED(put_u64(copy + a + 12, 1ull << 63), "element count overflows");
    PATCHED(put_u64(copy + c + 4 + 8, 1ull << 31); put_u64(copy + c + 4 + 16, 1ull << 31),
            "element count overflows");
    PATCHED(put_u64(copy + a + 4 + 20, 8), "not a multiple of the alignment");
    PATCHED(put_u64(copy + a + 4 + 20, 1ull << 40), "runs past the end of the file");
    PATCHED(put_u64(copy + a + 4 + 20, UINT64_MAX - 31), "runs past the end of the file");
    PATCHED(put_u64(copy + c + 4, 48), "not a multiple of the q8_0 block size 32");
    PATCHED(memcpy(copy + a - 1, "b", 1), "duplicate tensor name 'b'");
    PATCHED(put_u64(copy + a - 9, 300), "tensor name at offset");
#undef PATCHED
    /* The last tensor's data ends exactly at the end of the file. */
    expect_error(buf, n - 1, "runs past the end of the file");
    free(copy);
    free(buf);
}

static void test_bad_alignment_and_duplicate_key(void)
{
    uint8_t *buf;
    size_t n;
    gguf_writer *w = gguf_writer_new();
    gguf_writer_add_u32(w, "general.alignment", 48);
    REQUIRE(gguf_writer_write_memory(w, &buf, &n) == 0);
    gguf_writer_free(w);
    expect_error(buf, n, "general.alignment at offset 24 is 48, not a power of two");
    put_u32(buf + n - 4, 0);
    expect_error(buf, n, "not a power of two");
    put_u32(buf + n - 4, 64);
    gguf_file *f = gguf_open_memory(buf, n, err, sizeof err);
    CHECK(f && f->alignment == 64);
    gguf_close(f);
    free(buf);

    w = gguf_writer_new();
    gguf_writer_add_u64(w, "general.alignment", 64);
    REQUIRE(gguf_writer_write_memory(w, &buf, &n) == 0);
    gguf_writer_free(w);
    expect_error(buf, n, "has type uint64, expected uint32");
    free(buf);

    w = gguf_writer_new();
    gguf_writer_add_u32(w, "k", 1);
    gguf_writer_add_str(w, "k", "again");
    REQUIRE(gguf_writer_write_memory(w, &buf, &n) == 0);
    gguf_writer_free(w);
    expect_error(buf, n, "duplicate metadata key 'k' at offset 41");
    free(buf);
}

static void test_printable_names(void)
{
    char buf[16];
    gguf_str s = {"a\nb\x1b[2J", 7};
    CHECK_EQ_STR(gguf_str_printable(s, buf, sizeof buf), "a?b?[2J");
    gguf_str long_ascii = {"abcdefghijklmnopqrstuvwxyz", 26};
    CHECK_EQ_STR(gguf_str_printable(long_ascii, buf, sizeof buf), "abcdefghijkl...");
    /* "\xc3\xa9" must not be cut in half at the limit. */
    gguf_str utf8 = {"abcdefghijk\xc3\xa9xyz", 16};
    CHECK_EQ_STR(gguf_str_printable(utf8, buf, sizeof buf), "abcdefghijk...");
    gguf_str exact = {"0123456789abcde", 15};
    CHECK_EQ_STR(gguf_str_printable(exact, buf, sizeof buf), "0123456789abcde");
    /* Names in errors go through it. */
    uint8_t *file;
    size_t n;
    gguf_writer *w = gguf_writer_new();
    gguf_writer_add_u32(w, "bad\nkey", 1);
    gguf_writer_add_u32(w, "bad\nkey", 2);
    REQUIRE(gguf_writer_write_memory(w, &file, &n) == 0);
    gguf_writer_free(w);
    expect_error(file, n, "duplicate metadata key 'bad?key'");
    free(file);
}

static void test_open_errors(void)
{
    CHECK(gguf_open("/nonexistent/x.gguf", err, sizeof err) == NULL);
    CHECK(strstr(err, "cannot open /nonexistent/x.gguf") != NULL);
    CHECK(gguf_open(testlib_tmpdir(), err, sizeof err) == NULL);
    CHECK(strstr(err, "not a regular file") != NULL);
    char path[512];
    snprintf(path, sizeof path, "%s/empty.gguf", testlib_tmpdir());
    FILE *fp = fopen(path, "wb");
    REQUIRE(fp);
    fclose(fp);
    CHECK(gguf_open(path, err, sizeof err) == NULL);
    CHECK(strstr(err, "too small") != NULL);
    /* Errors from the parser carry the path. */
    fp = fopen(path, "wb");
    REQUIRE(fp);
    fwrite("GGUF\x03\0\0\0xxxxxxxxyyyyyyyyzz", 1, 26, fp);
    fclose(fp);
    CHECK(gguf_open(path, err, sizeof err) == NULL);
    CHECK(strstr(err, path) == err && strstr(err, "metadata count") != NULL);
}

/* Seeded random corruption: never a crash (ASan/UBSan watch), either a clean
 * error or a file whose every field can be read. */
static void test_random_flips(void)
{
    size_t n;
    uint8_t *orig = sample_bytes(&n);
    uint8_t *buf = malloc(n);
    uint64_t s = 12345;
    int ok = 0, bad = 0;
    for (int iter = 0; iter < 20000; iter++) {
        memcpy(buf, orig, n);
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        int flips = 1 + (int)((s >> 60) & 3);
        for (int k = 0; k < flips; k++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            size_t at = (size_t)((s >> 33) % n);
            /* Half the flips land in the header and metadata, where parsing lives. */
            if (k & 1) at %= 400 < n ? 400 : n;
            buf[at] ^= (uint8_t)(1u << ((s >> 20) & 7));
            if ((s >> 10) % 8 == 0) buf[at] = (uint8_t)(s >> 40);
        }
        gguf_file *f = gguf_open_memory(buf, n, err, sizeof err);
        if (f) {
            walk(f);
            gguf_close(f);
            ok++;
        } else {
            CHECK(err[0] != '\0');
            bad++;
        }
    }
    fprintf(stderr, "  %d accepted, %d rejected\n", ok, bad);
    CHECK(ok > 0 && bad > 0);
    free(buf);
    free(orig);
}

/* ---- writer conversions -------------------------------------------------- */

static void test_f16_conversion(void)
{
    CHECK_EQ_INT(gguf_writer_f32_to_f16(1.0f), 0x3c00);
    CHECK_EQ_INT(gguf_writer_f32_to_f16(-2.0f), 0xc000);
    CHECK_EQ_INT(gguf_writer_f32_to_f16(65504.0f), 0x7bff);
    CHECK_EQ_INT(gguf_writer_f32_to_f16(65520.0f), 0x7c00);       /* rounds up to inf */
    CHECK_EQ_INT(gguf_writer_f32_to_f16(65519.99f), 0x7bff);
    CHECK_EQ_INT(gguf_writer_f32_to_f16(1.0f + 0x1p-11f), 0x3c00); /* tie: to even */
    CHECK_EQ_INT(gguf_writer_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);
    CHECK_EQ_INT(gguf_writer_f32_to_f16(0x1p-24f), 0x0001);        /* smallest subnormal */
    CHECK_EQ_INT(gguf_writer_f32_to_f16(0x1p-25f), 0x0000);        /* tie: to even (0) */
    CHECK_EQ_INT(gguf_writer_f32_to_f16(0x1.8p-24f), 0x0002);      /* tie: to even (2) */
    CHECK_EQ_INT(gguf_writer_f32_to_f16(0x1p-14f - 0x1p-25f), 0x0400); /* up to min normal */
    CHECK_EQ_INT(gguf_writer_f32_to_f16(INFINITY), 0x7c00);
    CHECK((gguf_writer_f32_to_f16(NAN) & 0x7fff) > 0x7c00);
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue; /* NaN payloads */
        if (gguf_writer_f32_to_f16(gguf_writer_f16_to_f32((uint16_t)h)) != h) {
            fprintf(stderr, "  half 0x%04x does not round-trip\n", h);
            testlib_failed_checks++;
            break;
        }
    }
}

static void test_q8_0(void)
{
    float x[64];
    for (int i = 0; i < 64; i++) x[i] = (float)(i - 20) * 0.01f;
    x[40] = 0; /* second block: amax from x[63] */
    uint8_t q[68];
    gguf_writer_quantize_q8_0(x, 64, q);
    uint16_t dh;
    memcpy(&dh, q, 2);
    float d = gguf_writer_f16_to_f32(dh);
    CHECK(fabsf(d - 0.20f / 127) < 1e-5f);
    CHECK_EQ_INT((int8_t)q[2], -127); /* x[0] = -0.20 = -amax */
    CHECK_EQ_INT((int8_t)q[2 + 20], 0);
    for (int i = 0; i < 64; i++) {
        memcpy(&dh, q + (i / 32) * 34, 2);
        float back = gguf_writer_f16_to_f32(dh) * (int8_t)q[(i / 32) * 34 + 2 + i % 32];
        CHECK(fabsf(back - x[i]) < 0.44f / 127);
    }
    float zeros[32] = {0};
    gguf_writer_quantize_q8_0(zeros, 32, q);
    CHECK(q[0] == 0 && q[1] == 0 && q[2] == 0);
}

int main(void)
{
    RUN(test_demo_model);
    RUN(test_reference_models);
    RUN(test_every_kv_type);
    RUN(test_version2_and_alignment);
    RUN(test_tiny_llama_writer);
    RUN(test_every_truncation_fails);
    RUN(test_truncation_message);
    RUN(test_bad_header);
    RUN(test_huge_string_and_array);
    RUN(test_bad_tensor_infos);
    RUN(test_bad_alignment_and_duplicate_key);
    RUN(test_printable_names);
    RUN(test_open_errors);
    RUN(test_random_flips);
    RUN(test_f16_conversion);
    RUN(test_q8_0);
    return testlib_finish();
}
