/* fuzz_gguf.c: libFuzzer target for the GGUF reader and the tokenizer loader.
 *
 * Feeds the input to gguf_open_memory; when the file is accepted, reads every
 * metadata value and tensor the way consumers do (typed getters, array
 * elements, tensor bytes and lookups), then tries tokenizer_load and, if the
 * vocabulary loads, encodes and decodes a few texts, including a slice of the
 * input itself. Any crash, sanitizer report or hang is a bug; rejections are
 * fine. Without libFuzzer, tests/fuzz/replay_main.c replays the corpus in
 * tests/fuzz/corpus/gguf as a CTest test. */
#include <stdint.h>
#include <stdlib.h> /* abort: a broken invariant is a finding */
#include <string.h>

#include "engine/gguf.h"
#include "engine/tokenizer.h"

/* Keeps the compiler from dropping reads whose results are unused. */
static volatile uint64_t sink;

static void walk_metadata(const gguf_file *f)
{
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const gguf_kv *kv = &f->kv[i];
        char key[128];
        if (kv->key.len < sizeof key) {
            memcpy(key, kv->key.ptr, (size_t)kv->key.len);
            key[kv->key.len] = '\0';
            uint32_t u;
            float x;
            int b;
            gguf_str s;
            sink += (uint64_t)(gguf_find(f, key) != NULL);
            if (gguf_get_u32(f, key, &u) == 0) sink += u;
            if (gguf_get_f32(f, key, &x) == 0) sink += (uint64_t)(x == x);
            if (gguf_get_bool(f, key, &b) == 0) sink += (uint64_t)b;
            if (gguf_get_str(f, key, &s) == 0 && s.len) sink += (uint8_t)s.ptr[s.len - 1];
        }
        if (kv->type != GGUF_TYPE_ARRAY) continue;
        for (uint64_t j = 0; j < kv->count; j++) {
            gguf_str s;
            int64_t v;
            float x;
            if (gguf_arr_str(kv, j, &s) == 0 && s.len) sink += (uint8_t)s.ptr[0] + (uint8_t)s.ptr[s.len - 1];
            if (gguf_arr_i64(kv, j, &v) == 0) sink += (uint64_t)v;
            if (gguf_arr_f32(kv, j, &x) == 0) sink += (uint64_t)(x == x);
        }
    }
}

/* What consumers assume of an accepted tensor, checked independently of
 * the reader's own arithmetic: the shape's size (in 128-bit) is nbytes, and
 * the bytes lie inside the file. */
static void check_tensor(const gguf_file *f, const gguf_tensor *t)
{
    size_t bb = ggml_type_block_bytes(t->type), be = ggml_type_block_elems(t->type);
    if (!bb || !be || t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS || t->ne[0] % be) abort();
    double elems = 1;
    unsigned __int128 bytes = (unsigned __int128)(t->ne[0] / be) * bb;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
        elems *= (double)t->ne[d];
        if (d) bytes *= t->ne[d];
        if ((uint32_t)d >= t->n_dims && t->ne[d] != 1) abort();
    }
    if (elems > 9.3e18 || bytes != t->nbytes) abort();
    const uint8_t *d = t->data;
    if (d < f->base + f->data_offset || (uint64_t)(d - f->base) > f->size ||
        t->nbytes > f->size - (uint64_t)(d - f->base) || (uint64_t)(d - f->base) % f->alignment)
        abort();
}

static void walk_tensors(const gguf_file *f)
{
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        check_tensor(f, t);
        const uint8_t *d = t->data;
        if (t->nbytes) sink += d[0] + d[t->nbytes - 1];
        sink += ggml_type_block_bytes(t->type) + ggml_type_block_elems(t->type);
        sink += (uint8_t)ggml_type_name(t->type)[0];
        char name[300];
        if (t->name.len < sizeof name) {
            memcpy(name, t->name.ptr, (size_t)t->name.len);
            name[t->name.len] = '\0';
            sink += (uint64_t)(gguf_find_tensor(f, name) != NULL);
        }
    }
}

static void exercise_tokenizer(const tokenizer *t, const uint8_t *data, size_t size)
{
    static const char *const texts[] = {
        "", "Hello world, it's 2024!", "  \t\n mixed   whitespace  ",
        "\xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80 caf\xc3\xa9", "bad \xff\xfe utf8 \xe4\xb8",
    };
    int32_t ids[512];
    char buf[64];
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        int n = tokenizer_encode(t, texts[i], strlen(texts[i]), 1, ids, 512);
        for (int k = 0; k < n && k < 512; k++) sink += (uint64_t)tokenizer_token_bytes(t, ids[k], buf, sizeof buf);
    }
    size_t len = size < 256 ? size : 256;
    int n = tokenizer_encode(t, (const char *)data + (size - len), len, 0, ids, 512);
    sink += (uint64_t)n;
    int n_vocab = tokenizer_n_vocab(t);
    for (int id = -1; id <= n_vocab && id < 4096; id++)
        sink += (uint64_t)tokenizer_token_bytes(t, id, buf, sizeof buf);
    sink += (uint64_t)(tokenizer_bos(t) + tokenizer_eos(t) + tokenizer_add_bos(t));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    gguf_file *f = gguf_open_memory(data, size, err, sizeof err);
    if (!f) return 0;
    walk_metadata(f);
    walk_tensors(f);
    tokenizer *t = tokenizer_load(f, err, sizeof err);
    gguf_close(f);
    if (t) {
        exercise_tokenizer(t, data, size);
        tokenizer_free(t);
    }
    return 0;
}
