/* gguf_writer.c: the synthetic GGUF writer for tests (see gguf_writer.h).
 *
 * Test support only: errors that can only come from a wrong test (bad type,
 * size mismatch, out of memory) abort with a message instead of returning,
 * so that tests stay short. The byte layout follows the GGUF v3 spec. */
#define _GNU_SOURCE
#include "gguf_writer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint8_t *p;
    size_t len, cap;
} wbuf;

typedef struct {
    char *name;
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS];
    ggml_type type;
    uint8_t *data;
    size_t nbytes;
} wtensor;

struct gguf_writer {
    uint32_t version;
    uint32_t alignment;
    uint64_t n_kv;
    wbuf kv;            /* the key/value section, serialised as added */
    wtensor *tensors;
    size_t n_tensors, cap_tensors;
};

static void die(const char *msg)
{
    fprintf(stderr, "gguf_writer: %s\n", msg);
    abort();
}

static void wbuf_put(wbuf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) cap *= 2;
        uint8_t *q = realloc(b->p, cap);
        if (!q) die("out of memory");
        b->p = q;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void wbuf_u32(wbuf *b, uint32_t v) { wbuf_put(b, &v, 4); }
static void wbuf_u64(wbuf *b, uint64_t v) { wbuf_put(b, &v, 8); }

static void wbuf_str(wbuf *b, const char *s, size_t len)
{
    wbuf_u64(b, len);
    wbuf_put(b, s, len);
}

static void wbuf_zeros(wbuf *b, size_t n)
{
    static const uint8_t z[64];
    while (n) {
        size_t k = n < sizeof z ? n : sizeof z;
        wbuf_put(b, z, k);
        n -= k;
    }
}

gguf_writer *gguf_writer_new(void)
{
    gguf_writer *w = calloc(1, sizeof *w);
    if (!w) die("out of memory");
    w->version = 3;
    w->alignment = GGUF_DEFAULT_ALIGNMENT;
    return w;
}

void gguf_writer_free(gguf_writer *w)
{
    if (!w) return;
    for (size_t i = 0; i < w->n_tensors; i++) {
        free(w->tensors[i].name);
        free(w->tensors[i].data);
    }
    free(w->tensors);
    free(w->kv.p);
    free(w);
}

void gguf_writer_set_version(gguf_writer *w, uint32_t version) { w->version = version; }

void gguf_writer_set_alignment(gguf_writer *w, uint32_t alignment)
{
    if (w->n_tensors) die("set the alignment before adding tensors");
    if (alignment == 0 || (alignment & (alignment - 1))) die("alignment must be a power of two");
    w->alignment = alignment;
    gguf_writer_add_u32(w, "general.alignment", alignment);
}

/* ---- key/values ---------------------------------------------------------- */

static void kv_head(gguf_writer *w, const char *key, gguf_type type)
{
    wbuf_str(&w->kv, key, strlen(key));
    wbuf_u32(&w->kv, (uint32_t)type);
    w->n_kv++;
}

static void kv_scalar(gguf_writer *w, const char *key, gguf_type type, const void *v, size_t n)
{
    kv_head(w, key, type);
    wbuf_put(&w->kv, v, n);
}

void gguf_writer_add_u8(gguf_writer *w, const char *k, uint8_t v) { kv_scalar(w, k, GGUF_TYPE_UINT8, &v, 1); }
void gguf_writer_add_i8(gguf_writer *w, const char *k, int8_t v) { kv_scalar(w, k, GGUF_TYPE_INT8, &v, 1); }
void gguf_writer_add_u16(gguf_writer *w, const char *k, uint16_t v) { kv_scalar(w, k, GGUF_TYPE_UINT16, &v, 2); }
void gguf_writer_add_i16(gguf_writer *w, const char *k, int16_t v) { kv_scalar(w, k, GGUF_TYPE_INT16, &v, 2); }
void gguf_writer_add_u32(gguf_writer *w, const char *k, uint32_t v) { kv_scalar(w, k, GGUF_TYPE_UINT32, &v, 4); }
void gguf_writer_add_i32(gguf_writer *w, const char *k, int32_t v) { kv_scalar(w, k, GGUF_TYPE_INT32, &v, 4); }
void gguf_writer_add_f32(gguf_writer *w, const char *k, float v) { kv_scalar(w, k, GGUF_TYPE_FLOAT32, &v, 4); }
void gguf_writer_add_u64(gguf_writer *w, const char *k, uint64_t v) { kv_scalar(w, k, GGUF_TYPE_UINT64, &v, 8); }
void gguf_writer_add_i64(gguf_writer *w, const char *k, int64_t v) { kv_scalar(w, k, GGUF_TYPE_INT64, &v, 8); }
void gguf_writer_add_f64(gguf_writer *w, const char *k, double v) { kv_scalar(w, k, GGUF_TYPE_FLOAT64, &v, 8); }

void gguf_writer_add_bool(gguf_writer *w, const char *k, int v)
{
    uint8_t b = v != 0;
    kv_scalar(w, k, GGUF_TYPE_BOOL, &b, 1);
}

void gguf_writer_add_str_n(gguf_writer *w, const char *key, const char *v, size_t len)
{
    kv_head(w, key, GGUF_TYPE_STRING);
    wbuf_str(&w->kv, v, len);
}

void gguf_writer_add_str(gguf_writer *w, const char *key, const char *v)
{
    gguf_writer_add_str_n(w, key, v, strlen(v));
}

static size_t scalar_size(gguf_type t)
{
    switch (t) {
    case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: case GGUF_TYPE_BOOL: return 1;
    case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16: return 2;
    case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_FLOAT32: return 4;
    case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64: case GGUF_TYPE_FLOAT64: return 8;
    default: return 0;
    }
}

void gguf_writer_add_array(gguf_writer *w, const char *key, gguf_type elem_type,
                           const void *elems, uint64_t count)
{
    size_t es = scalar_size(elem_type);
    if (!es) die("gguf_writer_add_array: element type must be a fixed-size scalar");
    kv_head(w, key, GGUF_TYPE_ARRAY);
    wbuf_u32(&w->kv, (uint32_t)elem_type);
    wbuf_u64(&w->kv, count);
    wbuf_put(&w->kv, elems, (size_t)count * es);
}

void gguf_writer_add_str_array(gguf_writer *w, const char *key, const char *const *strs,
                               uint64_t count)
{
    kv_head(w, key, GGUF_TYPE_ARRAY);
    wbuf_u32(&w->kv, GGUF_TYPE_STRING);
    wbuf_u64(&w->kv, count);
    for (uint64_t i = 0; i < count; i++) wbuf_str(&w->kv, strs[i], strlen(strs[i]));
}

/* ---- tensors ------------------------------------------------------------- */

size_t gguf_writer_tensor_nbytes(uint32_t n_dims, const uint64_t *ne, ggml_type type)
{
    size_t bb = ggml_type_block_bytes(type), be = ggml_type_block_elems(type);
    if (!bb || n_dims == 0 || n_dims > GGUF_MAX_DIMS || ne[0] % be) return 0;
    size_t n = (size_t)(ne[0] / be) * bb;
    for (uint32_t d = 1; d < n_dims; d++) n *= (size_t)ne[d];
    return n;
}

void gguf_writer_add_tensor(gguf_writer *w, const char *name, uint32_t n_dims,
                            const uint64_t *ne, ggml_type type, const void *data, size_t nbytes)
{
    size_t want = gguf_writer_tensor_nbytes(n_dims, ne, type);
    if (nbytes != want) {
        fprintf(stderr, "gguf_writer: tensor %s: %zu data bytes, shape and type need %zu\n",
                name, nbytes, want);
        abort();
    }
    if (w->n_tensors == w->cap_tensors) {
        w->cap_tensors = w->cap_tensors ? 2 * w->cap_tensors : 16;
        w->tensors = realloc(w->tensors, w->cap_tensors * sizeof *w->tensors);
        if (!w->tensors) die("out of memory");
    }
    wtensor *t = &w->tensors[w->n_tensors++];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    t->n_dims = n_dims;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = (uint32_t)d < n_dims ? ne[d] : 1;
    t->type = type;
    t->nbytes = nbytes;
    t->data = calloc(1, nbytes ? nbytes : 1);
    if (!t->name || !t->data) die("out of memory");
    if (data && nbytes) memcpy(t->data, data, nbytes);
}

/* ---- output -------------------------------------------------------------- */

static size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

int gguf_writer_write_memory(const gguf_writer *w, uint8_t **out, size_t *size)
{
    wbuf b = {0};
    wbuf_u32(&b, GGUF_MAGIC);
    wbuf_u32(&b, w->version);
    wbuf_u64(&b, w->n_tensors);
    wbuf_u64(&b, w->n_kv);
    wbuf_put(&b, w->kv.p, w->kv.len);
    size_t offset = 0;
    for (size_t i = 0; i < w->n_tensors; i++) {
        const wtensor *t = &w->tensors[i];
        wbuf_str(&b, t->name, strlen(t->name));
        wbuf_u32(&b, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++) wbuf_u64(&b, t->ne[d]);
        wbuf_u32(&b, (uint32_t)t->type);
        wbuf_u64(&b, offset);
        offset = align_up(offset + t->nbytes, w->alignment);
    }
    if (w->n_tensors) wbuf_zeros(&b, align_up(b.len, w->alignment) - b.len);
    size_t data_start = b.len;
    for (size_t i = 0; i < w->n_tensors; i++) {
        const wtensor *t = &w->tensors[i];
        wbuf_zeros(&b, align_up(b.len - data_start, w->alignment) - (b.len - data_start));
        wbuf_put(&b, t->data, t->nbytes);
    }
    *out = b.p;
    *size = b.len;
    return 0;
}

int gguf_writer_write_file(const gguf_writer *w, const char *path)
{
    uint8_t *buf;
    size_t n;
    if (gguf_writer_write_memory(w, &buf, &n) < 0) return -1;
    FILE *f = fopen(path, "wb");
    if (!f) {
        free(buf);
        return -1;
    }
    int rc = fwrite(buf, 1, n, f) == n ? 0 : -1;
    if (fclose(f) != 0) rc = -1;
    free(buf);
    return rc;
}

/* ---- conversions --------------------------------------------------------- */

uint16_t gguf_writer_f32_to_f16(float x)
{
    uint32_t b;
    memcpy(&b, &x, 4);
    uint16_t sign = (uint16_t)((b >> 16) & 0x8000);
    uint32_t exp = (b >> 23) & 0xff, mant = b & 0x7fffff;
    if (exp == 0xff) /* inf stays inf; NaN stays a (quiet) NaN */
        return (uint16_t)(sign | 0x7c00 | (mant ? 0x200 | (mant >> 13) : 0));
    int32_t e = (int32_t)exp - 127 + 15;
    if (e >= 0x1f) return (uint16_t)(sign | 0x7c00);
    uint32_t h, rem, half;
    if (e <= 0) {
        /* Subnormal half: m = M * 2^(e - 14) with M the 24-bit significand. */
        if (e < -10) return sign;
        uint32_t m = mant | 0x800000, shift = (uint32_t)(14 - e);
        h = m >> shift;
        rem = m & ((1u << shift) - 1);
        half = 1u << (shift - 1);
    } else {
        h = ((uint32_t)e << 10) | (mant >> 13);
        rem = mant & 0x1fff;
        half = 0x1000;
    }
    /* Round to nearest, ties to even; a carry correctly bumps the exponent
     * (up to infinity). */
    if (rem > half || (rem == half && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

float gguf_writer_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    float v;
    if (exp == 0) {
        v = ldexpf((float)mant, -24);
        return sign ? -v : v;
    }
    uint32_t b = exp == 0x1f ? sign | 0x7f800000 | (mant << 13)
                             : sign | ((exp - 15 + 127) << 23) | (mant << 13);
    memcpy(&v, &b, 4);
    return v;
}

void gguf_writer_quantize_q8_0(const float *x, size_t n, void *out)
{
    if (n % 32) die("q8_0 needs a multiple of 32 values");
    uint8_t *o = out;
    for (size_t blk = 0; blk < n / 32; blk++, x += 32, o += 34) {
        float amax = 0;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(x[i]));
        float d = amax / 127.0f;
        uint16_t dh = gguf_writer_f32_to_f16(d);
        memcpy(o, &dh, 2);
        for (int i = 0; i < 32; i++) {
            float q = d > 0 ? roundf(x[i] / d) : 0.0f;
            q = fminf(127.0f, fmaxf(-127.0f, q));
            o[2 + i] = (uint8_t)(int8_t)q;
        }
    }
}

/* ---- tiny llama ---------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull); /* splitmix64 */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static float rng_uniform(uint64_t *s) /* [-1, 1) */
{
    return (float)((rng_next(s) >> 40) * (1.0 / (1ull << 24))) * 2.0f - 1.0f;
}

size_t gguf_writer_byte_symbol(int b, char out[3])
{
    /* GPT-2 shows each byte as a printable character: 33-126, 161-172 and
     * 174-255 stand for themselves, the other 68 bytes get U+0100 upward. */
    int cp = b, n = 0;
    if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) {
        for (int i = 0; i < b; i++)
            if (!((i >= 33 && i <= 126) || (i >= 161 && i <= 172) || (i >= 174 && i <= 255)))
                n++;
        cp = 256 + n;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = '\0';
        return 1;
    }
    out[0] = (char)(0xc0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3f));
    out[2] = '\0';
    return 2;
}

int gguf_writer_add_gpt2_tokenizer(gguf_writer *w, const char *const *extra, int n_extra,
                                   const char *const *merges, int n_merges, int add_bos)
{
    return gguf_writer_add_bpe_tokenizer(w, "gpt-2", extra, n_extra, merges, n_merges, add_bos);
}

int gguf_writer_add_bpe_tokenizer(gguf_writer *w, const char *pre, const char *const *extra,
                                  int n_extra, const char *const *merges, int n_merges,
                                  int add_bos)
{
    int n_vocab = 256 + n_extra + 2;
    char (*syms)[3] = malloc(256 * sizeof *syms);
    const char **tokens = malloc((size_t)n_vocab * sizeof *tokens);
    int32_t *types = malloc((size_t)n_vocab * sizeof *types);
    if (!syms || !tokens || !types) die("out of memory");
    for (int b = 0; b < 256; b++) {
        gguf_writer_byte_symbol(b, syms[b]);
        tokens[b] = syms[b];
        types[b] = 1; /* NORMAL */
    }
    for (int i = 0; i < n_extra; i++) {
        tokens[256 + i] = extra[i];
        types[256 + i] = 1;
    }
    tokens[n_vocab - 2] = "<|bos|>";
    tokens[n_vocab - 1] = "<|endoftext|>";
    types[n_vocab - 2] = types[n_vocab - 1] = 3; /* CONTROL */
    gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2");
    if (pre) gguf_writer_add_str(w, "tokenizer.ggml.pre", pre);
    gguf_writer_add_str_array(w, "tokenizer.ggml.tokens", tokens, (uint64_t)n_vocab);
    gguf_writer_add_array(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types,
                          (uint64_t)n_vocab);
    gguf_writer_add_str_array(w, "tokenizer.ggml.merges", merges, (uint64_t)n_merges);
    gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)(n_vocab - 2));
    gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)(n_vocab - 1));
    gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", add_bos);
    free(syms);
    free(tokens);
    free(types);
    return n_vocab;
}

static void add_weight(gguf_writer *w, const char *name, uint64_t ne0, uint64_t ne1,
                       ggml_type type, float scale, float bias, uint64_t *rng)
{
    size_t n = (size_t)(ne0 * ne1);
    float *x = malloc(n * sizeof *x);
    if (!x) die("out of memory");
    for (size_t i = 0; i < n; i++) x[i] = bias + scale * rng_uniform(rng);
    uint64_t ne[2] = {ne0, ne1};
    uint32_t n_dims = ne1 == 1 ? 1 : 2;
    size_t nbytes = gguf_writer_tensor_nbytes(n_dims, ne, type);
    uint8_t *data = malloc(nbytes ? nbytes : 1);
    if (!data) die("out of memory");
    if (type == GGML_TYPE_F32) {
        memcpy(data, x, nbytes);
    } else if (type == GGML_TYPE_F16) {
        for (size_t i = 0; i < n; i++) {
            uint16_t h = gguf_writer_f32_to_f16(x[i]);
            memcpy(data + 2 * i, &h, 2);
        }
    } else {
        gguf_writer_quantize_q8_0(x, n, data);
    }
    gguf_writer_add_tensor(w, name, n_dims, ne, type, data, nbytes);
    free(data);
    free(x);
}

/* Merges for the tiny vocabulary, in rank order; every part is a byte symbol
 * or the result of an earlier merge. "Ġ" is the symbol of the space byte. */
static const char *const tiny_merges[] = {
    "Ġ t", "h e", "Ġt he", "i n", "a n", "e r", "o n", "Ġ a", "r e", "a t", "e n",
    "Ġ s", "o r", "n d", "Ġa nd", "i s", "Ġ o", "Ġ w", "i t", "e s", "Ġ c", "o u",
    "Ġ b", "l l", "Ġ f", "in g", "Ġ h", "e d", "Ġo f", "t h",
};

int gguf_writer_tiny_llama_ex(const char *path, const gguf_writer_llama_params *p)
{
    int q8 = p->type == GGML_TYPE_Q8_0;
    if (p->n_embd <= 0 || p->n_layer <= 0 || p->n_head <= 0 || p->n_head_kv <= 0 ||
        p->n_ff <= 0 || p->n_vocab < 258 || p->n_embd % p->n_head ||
        p->n_head % p->n_head_kv ||
        (p->type != GGML_TYPE_F32 && p->type != GGML_TYPE_F16 && !q8) ||
        (q8 && (p->n_embd % 32 || p->n_ff % 32)))
        return -1;
    int n_vocab = p->n_vocab, head_dim = p->n_embd / p->n_head;
    int n_embd_kv = head_dim * p->n_head_kv;
    int n_merges_max = (int)(sizeof tiny_merges / sizeof tiny_merges[0]);
    int n_merges = n_vocab - 258 < n_merges_max ? n_vocab - 258 : n_merges_max;

    /* Vocabulary: bytes, merge results, fillers, then BOS and EOS. */
    int n_extra = n_vocab - 258;
    char **extra = calloc((size_t)n_extra + 1, sizeof *extra);
    if (!extra) die("out of memory");
    for (int m = 0; m < n_merges; m++) {
        const char *sp = strchr(tiny_merges[m], ' ');
        size_t a = (size_t)(sp - tiny_merges[m]);
        char *t = malloc(strlen(tiny_merges[m]));
        if (!t) die("out of memory");
        memcpy(t, tiny_merges[m], a);
        strcpy(t + a, sp + 1);
        extra[m] = t;
    }
    for (int i = n_merges; i < n_extra; i++) {
        char buf[32];
        snprintf(buf, sizeof buf, "<|unused_%d|>", 256 + i);
        extra[i] = strdup(buf);
        if (!extra[i]) die("out of memory");
    }

    gguf_writer *w = gguf_writer_new();
    gguf_writer_add_str(w, "general.architecture", "llama");
    gguf_writer_add_str(w, "general.name", "tiny-llama-test");
    gguf_writer_add_u32(w, "general.file_type", p->type == GGML_TYPE_F32 ? 0 : p->type == GGML_TYPE_F16 ? 1 : 7);
    gguf_writer_add_u32(w, "llama.context_length", (uint32_t)(p->n_ctx > 0 ? p->n_ctx : 256));
    gguf_writer_add_u32(w, "llama.embedding_length", (uint32_t)p->n_embd);
    gguf_writer_add_u32(w, "llama.block_count", (uint32_t)p->n_layer);
    gguf_writer_add_u32(w, "llama.feed_forward_length", (uint32_t)p->n_ff);
    gguf_writer_add_u32(w, "llama.attention.head_count", (uint32_t)p->n_head);
    gguf_writer_add_u32(w, "llama.attention.head_count_kv", (uint32_t)p->n_head_kv);
    gguf_writer_add_u32(w, "llama.attention.key_length", (uint32_t)head_dim);
    gguf_writer_add_u32(w, "llama.attention.value_length", (uint32_t)head_dim);
    gguf_writer_add_u32(w, "llama.rope.dimension_count", (uint32_t)head_dim);
    gguf_writer_add_f32(w, "llama.rope.freq_base", p->rope_freq_base > 0 ? p->rope_freq_base : 10000.0f);
    gguf_writer_add_f32(w, "llama.attention.layer_norm_rms_epsilon", p->rms_eps > 0 ? p->rms_eps : 1e-5f);
    gguf_writer_add_u32(w, "llama.vocab_size", (uint32_t)n_vocab);
    gguf_writer_add_gpt2_tokenizer(w, (const char *const *)extra, n_extra, tiny_merges,
                                   n_merges, 1);
    gguf_writer_add_bool(w, "tokenizer.ggml.add_eos_token", 0);

    /* Weights: uniform with std ~ 1/sqrt(fan_in) keeps activations O(1). */
    uint64_t rng = p->seed;
    ggml_type t = p->type;
    float s_embd = 1.0f / sqrtf((float)p->n_embd), s_ff = 1.0f / sqrtf((float)p->n_ff);
    add_weight(w, "token_embd.weight", (uint64_t)p->n_embd, (uint64_t)n_vocab, t, 1.0f, 0, &rng);
    add_weight(w, "output_norm.weight", (uint64_t)p->n_embd, 1, GGML_TYPE_F32, 0.1f, 1.0f, &rng);
    if (!p->tied_output)
        add_weight(w, "output.weight", (uint64_t)p->n_embd, (uint64_t)n_vocab, t, s_embd, 0, &rng);
    for (int l = 0; l < p->n_layer; l++) {
        char name[64];
#define LAYER_WEIGHT(suffix, ne0, ne1, type, scale, bias) do { \
        snprintf(name, sizeof name, "blk.%d." suffix, l); \
        add_weight(w, name, (uint64_t)(ne0), (uint64_t)(ne1), type, scale, bias, &rng); \
    } while (0)
        LAYER_WEIGHT("attn_norm.weight", p->n_embd, 1, GGML_TYPE_F32, 0.1f, 1.0f);
        LAYER_WEIGHT("attn_q.weight", p->n_embd, p->n_embd, t, s_embd, 0);
        LAYER_WEIGHT("attn_k.weight", p->n_embd, n_embd_kv, t, s_embd, 0);
        LAYER_WEIGHT("attn_v.weight", p->n_embd, n_embd_kv, t, s_embd, 0);
        LAYER_WEIGHT("attn_output.weight", p->n_embd, p->n_embd, t, s_embd, 0);
        LAYER_WEIGHT("ffn_norm.weight", p->n_embd, 1, GGML_TYPE_F32, 0.1f, 1.0f);
        LAYER_WEIGHT("ffn_gate.weight", p->n_embd, p->n_ff, t, s_embd, 0);
        LAYER_WEIGHT("ffn_up.weight", p->n_embd, p->n_ff, t, s_embd, 0);
        LAYER_WEIGHT("ffn_down.weight", p->n_ff, p->n_embd, t, s_ff, 0);
#undef LAYER_WEIGHT
    }
    int rc = gguf_writer_write_file(w, path);
    gguf_writer_free(w);
    for (int i = 0; i < n_extra; i++) free(extra[i]);
    free(extra);
    return rc;
}

int gguf_writer_tiny_llama(const char *path, int n_embd, int n_layer, int n_head,
                           int n_head_kv, int n_ff, int n_vocab, ggml_type type, uint64_t seed)
{
    gguf_writer_llama_params p = {
        .n_embd = n_embd, .n_layer = n_layer, .n_head = n_head, .n_head_kv = n_head_kv,
        .n_ff = n_ff, .n_vocab = n_vocab, .type = type, .seed = seed,
    };
    return gguf_writer_tiny_llama_ex(path, &p);
}

int gguf_writer_add_spm_tokenizer(gguf_writer *w, const char *const *tokens,
                                  const float *scores, const int32_t *types, int n_tokens,
                                  int add_space_prefix)
{
    gguf_writer_add_str(w, "tokenizer.ggml.model", "llama");
    gguf_writer_add_str_array(w, "tokenizer.ggml.tokens", tokens, (uint64_t)n_tokens);
    gguf_writer_add_array(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, scores,
                          (uint64_t)n_tokens);
    gguf_writer_add_array(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types,
                          (uint64_t)n_tokens);
    if (add_space_prefix >= 0)
        gguf_writer_add_bool(w, "tokenizer.ggml.add_space_prefix", add_space_prefix);
    return n_tokens;
}
