/* gguf.c: the validating GGUF reader declared in gguf.h.
 *
 * For: mapping a file, checking every field of its header, metadata and tensor
 * table against the bytes actually present, and answering lookups. Not for:
 * what the metadata means (model.c, tokenizer.c) or reading tensor data (the
 * kernels do, through gguf_tensor.data).
 *
 * Error policy: the first problem found ends the parse. Its message says what
 * was being read and at which byte offset; nothing is half-returned. All size
 * arithmetic on values taken from the file is checked for overflow before use.
 * Versions 2 and 3 share one layout (64-bit counts and lengths) and are both
 * accepted; version 1 (32-bit counts) is refused. */
#define _GNU_SOURCE
#include "engine/gguf.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/hash.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c reads little-endian fields with memcpy; a big-endian host needs byte swaps"
#endif

/* Caps beyond which a file is treated as corrupt rather than merely large.
 * Real models have tens of keys and at most a few thousand tensors; the caps
 * keep a forged count from turning into a multi-gigabyte allocation. The file
 * size bounds the counts as well (every entry occupies some minimum bytes). */
#define GGUF_MAX_KV         (1u << 20)
#define GGUF_MAX_TENSORS    (1u << 20)
#define GGUF_MAX_KEY_LEN    65535u   /* the spec's limit for keys */
#define GGUF_MAX_NAME_LEN   256u     /* ggml uses 64; be lenient but bounded */
/* Smallest encodings, used to bound counts by the bytes left. */
#define GGUF_MIN_KV_BYTES      (8 + 0 + 4 + 1)          /* key len, empty key, type, u8 */
#define GGUF_MIN_TENSOR_BYTES  (8 + 0 + 4 + 8 + 4 + 8)  /* name len, n_dims, ne[0], type, offset */

typedef struct {
    gguf_str *strings;        /* every string-array element, array after array */
    uint32_t *tensor_slots;   /* open addressing: tensor index + 1, 0 = empty */
    uint64_t n_slots;         /* a power of two, >= 2 * n_tensors */
} gguf_private;

typedef struct {
    const uint8_t *base;
    uint64_t size;
    uint64_t pos;
    char *err;
    size_t errlen;
} reader;

/* ------------------------------------------------------------------------- */
/* Type tables                                                                 */

static const uint8_t gguf_scalar_size[GGUF_TYPE_COUNT] = {
    [GGUF_TYPE_UINT8] = 1, [GGUF_TYPE_INT8] = 1, [GGUF_TYPE_UINT16] = 2,
    [GGUF_TYPE_INT16] = 2, [GGUF_TYPE_UINT32] = 4, [GGUF_TYPE_INT32] = 4,
    [GGUF_TYPE_FLOAT32] = 4, [GGUF_TYPE_BOOL] = 1, [GGUF_TYPE_STRING] = 0,
    [GGUF_TYPE_ARRAY] = 0, [GGUF_TYPE_UINT64] = 8, [GGUF_TYPE_INT64] = 8,
    [GGUF_TYPE_FLOAT64] = 8,
};

static const char *const gguf_type_names[GGUF_TYPE_COUNT] = {
    "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool",
    "string", "array", "uint64", "int64", "float64",
};

static const char *gguf_type_name(uint32_t t)
{
    return t < GGUF_TYPE_COUNT ? gguf_type_names[t] : "unknown";
}

typedef struct {
    ggml_type type;
    uint16_t block_bytes;
    uint16_t block_elems;
    const char *name;
} ggml_type_info;

static const ggml_type_info ggml_types[] = {
    {GGML_TYPE_F32, 4, 1, "f32"},         {GGML_TYPE_F16, 2, 1, "f16"},
    {GGML_TYPE_BF16, 2, 1, "bf16"},       {GGML_TYPE_Q4_0, 18, 32, "q4_0"},
    {GGML_TYPE_Q4_1, 20, 32, "q4_1"},     {GGML_TYPE_Q5_0, 22, 32, "q5_0"},
    {GGML_TYPE_Q5_1, 24, 32, "q5_1"},     {GGML_TYPE_Q8_0, 34, 32, "q8_0"},
    {GGML_TYPE_Q8_1, 36, 32, "q8_1"},     {GGML_TYPE_Q2_K, 84, 256, "q2_K"},
    {GGML_TYPE_Q3_K, 110, 256, "q3_K"},   {GGML_TYPE_Q4_K, 144, 256, "q4_K"},
    {GGML_TYPE_Q5_K, 176, 256, "q5_K"},   {GGML_TYPE_Q6_K, 210, 256, "q6_K"},
    {GGML_TYPE_Q8_K, 292, 256, "q8_K"},
};

static const ggml_type_info *ggml_type_lookup(uint32_t t)
{
    for (size_t i = 0; i < sizeof ggml_types / sizeof ggml_types[0]; i++)
        if ((uint32_t)ggml_types[i].type == t) return &ggml_types[i];
    return NULL;
}

size_t ggml_type_block_bytes(ggml_type t)
{
    const ggml_type_info *ti = ggml_type_lookup((uint32_t)t);
    return ti ? ti->block_bytes : 0;
}

size_t ggml_type_block_elems(ggml_type t)
{
    const ggml_type_info *ti = ggml_type_lookup((uint32_t)t);
    return ti ? ti->block_elems : 0;
}

const char *ggml_type_name(ggml_type t)
{
    const ggml_type_info *ti = ggml_type_lookup((uint32_t)t);
    return ti ? ti->name : "unknown";
}

/* ------------------------------------------------------------------------- */
/* Bounded reads                                                               */

__attribute__((format(printf, 2, 3)))
static int fail(reader *r, const char *fmt, ...)
{
    if (r->err && r->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->err, r->errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static uint64_t left(const reader *r)
{
    assert(r->pos <= r->size);
    return r->size - r->pos;
}

static int need(reader *r, uint64_t n, const char *what)
{
    if (n > left(r))
        return fail(r, "truncated file: %s at offset %llu needs %llu bytes, %llu left", what,
                    (unsigned long long)r->pos, (unsigned long long)n,
                    (unsigned long long)left(r));
    return 0;
}

static int read_bytes(reader *r, void *out, uint64_t n, const char *what)
{
    if (need(r, n, what) < 0) return -1;
    memcpy(out, r->base + r->pos, (size_t)n);
    r->pos += n;
    return 0;
}

static int read_u32(reader *r, uint32_t *out, const char *what)
{
    return read_bytes(r, out, 4, what);
}

static int read_u64(reader *r, uint64_t *out, const char *what)
{
    return read_bytes(r, out, 8, what);
}

/* A length-prefixed string; max_len bounds it beyond the bytes left (0: none). */
static int read_str(reader *r, gguf_str *out, uint64_t max_len, const char *what)
{
    uint64_t at = r->pos, len;
    if (read_u64(r, &len, what) < 0) return -1;
    if (max_len && len > max_len)
        return fail(r, "%s at offset %llu is %llu bytes long, more than the limit of %llu", what,
                    (unsigned long long)at, (unsigned long long)len,
                    (unsigned long long)max_len);
    if (len > left(r))
        return fail(r, "truncated file: %s at offset %llu needs %llu bytes, %llu left", what,
                    (unsigned long long)at, (unsigned long long)len,
                    (unsigned long long)left(r));
    out->ptr = (const char *)r->base + r->pos;
    out->len = len;
    r->pos += len;
    return 0;
}

static int str_same(gguf_str a, gguf_str b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, (size_t)a.len) == 0);
}

/* ------------------------------------------------------------------------- */
/* Metadata                                                                    */

static void scalar_decode(gguf_type t, const uint8_t *p, gguf_kv *kv)
{
    switch (t) {
    case GGUF_TYPE_UINT8: kv->v.u64 = p[0]; break;
    case GGUF_TYPE_INT8: kv->v.i64 = (int8_t)p[0]; break;
    case GGUF_TYPE_BOOL: kv->v.u64 = p[0] != 0; break;
    case GGUF_TYPE_UINT16: { uint16_t x; memcpy(&x, p, 2); kv->v.u64 = x; break; }
    case GGUF_TYPE_INT16: { int16_t x; memcpy(&x, p, 2); kv->v.i64 = x; break; }
    case GGUF_TYPE_UINT32: { uint32_t x; memcpy(&x, p, 4); kv->v.u64 = x; break; }
    case GGUF_TYPE_INT32: { int32_t x; memcpy(&x, p, 4); kv->v.i64 = x; break; }
    case GGUF_TYPE_FLOAT32: { float x; memcpy(&x, p, 4); kv->v.f64 = x; break; }
    case GGUF_TYPE_UINT64: { uint64_t x; memcpy(&x, p, 8); kv->v.u64 = x; break; }
    case GGUF_TYPE_INT64: { int64_t x; memcpy(&x, p, 8); kv->v.i64 = x; break; }
    case GGUF_TYPE_FLOAT64: { double x; memcpy(&x, p, 8); kv->v.f64 = x; break; }
    default: assert(!"not a scalar type");
    }
}

/* Reads one array value (after the type tag). Nested arrays are refused: no
 * model needs them, gguf_kv cannot describe them, and refusing them bounds the
 * recursion an attacker could ask for. */
static int read_array(reader *r, gguf_kv *kv, uint64_t *n_strings)
{
    uint64_t at = r->pos;
    uint32_t et;
    if (read_u32(r, &et, "array element type") < 0) return -1;
    if (et >= GGUF_TYPE_COUNT)
        return fail(r, "unknown array element type %u at offset %llu", et,
                    (unsigned long long)at);
    if (et == GGUF_TYPE_ARRAY)
        return fail(r, "nested array at offset %llu: arrays of arrays are not supported",
                    (unsigned long long)at);
    uint64_t count;
    if (read_u64(r, &count, "array length") < 0) return -1;
    kv->elem_type = (gguf_type)et;
    kv->count = count;
    kv->data = r->base + r->pos;
    if (et == GGUF_TYPE_STRING) {
        /* Each string needs at least its 8-byte length: bound count first so a
         * forged count fails here instead of after a long walk. */
        if (count > left(r) / 8)
            return fail(r, "truncated file: array at offset %llu of %llu strings needs at least "
                        "8 bytes per string, %llu left", (unsigned long long)at,
                        (unsigned long long)count, (unsigned long long)left(r));
        for (uint64_t i = 0; i < count; i++) {
            gguf_str s;
            if (read_str(r, &s, 0, "array string") < 0) return -1;
        }
        *n_strings += count;
        return 0;
    }
    uint64_t es = gguf_scalar_size[et];
    assert(es > 0);
    if (count > left(r) / es)
        return fail(r, "truncated file: array at offset %llu of %llu %s elements needs more "
                    "than the %llu bytes left", (unsigned long long)at,
                    (unsigned long long)count, gguf_type_name(et),
                    (unsigned long long)left(r));
    r->pos += count * es;
    return 0;
}

static int read_kv(reader *r, gguf_kv *kv, uint64_t *n_strings)
{
    char shown[80];
    uint64_t at = r->pos;
    if (read_str(r, &kv->key, GGUF_MAX_KEY_LEN, "metadata key") < 0) return -1;
    if (kv->key.len == 0)
        return fail(r, "empty metadata key at offset %llu", (unsigned long long)at);
    uint64_t type_at = r->pos;
    uint32_t t;
    if (read_u32(r, &t, "metadata value type") < 0) return -1;
    if (t >= GGUF_TYPE_COUNT)
        return fail(r, "unknown metadata value type %u for key '%s' at offset %llu", t,
                    gguf_str_printable(kv->key, shown, sizeof shown), (unsigned long long)type_at);
    kv->type = (gguf_type)t;
    if (t == GGUF_TYPE_STRING)
        return read_str(r, &kv->v.str, 0, "metadata string");
    if (t == GGUF_TYPE_ARRAY)
        return read_array(r, kv, n_strings);
    if (need(r, gguf_scalar_size[t], "metadata value") < 0) return -1;
    scalar_decode(kv->type, r->base + r->pos, kv);
    r->pos += gguf_scalar_size[t];
    return 0;
}

/* Keys must be unique (a lookup would otherwise silently pick one). The table
 * is temporary: metadata lookups stay linear, there are only tens of keys. */
static int check_unique_keys(reader *r, const gguf_file *f)
{
    if (f->n_kv < 2) return 0;
    uint64_t n_slots = 4;
    while (n_slots < 2 * f->n_kv) n_slots *= 2;
    uint32_t *slots = calloc(n_slots, sizeof *slots);
    if (!slots) return fail(r, "out of memory indexing %llu metadata keys",
                            (unsigned long long)f->n_kv);
    int rc = 0;
    for (uint64_t i = 0; i < f->n_kv && rc == 0; i++) {
        gguf_str key = f->kv[i].key;
        uint64_t s = hash_fnv1a(key.ptr, (size_t)key.len) & (n_slots - 1);
        for (; slots[s]; s = (s + 1) & (n_slots - 1)) {
            if (str_same(f->kv[slots[s] - 1].key, key)) {
                char shown[80];
                rc = fail(r, "duplicate metadata key '%s' at offset %llu",
                          gguf_str_printable(key, shown, sizeof shown),
                          (unsigned long long)((const uint8_t *)key.ptr - r->base - 8));
                break;
            }
        }
        slots[s] = (uint32_t)(i + 1);
    }
    free(slots);
    return rc;
}

/* Second walk over string arrays, already validated by read_array: fills the
 * index that makes gguf_arr_str O(1). */
static int index_string_arrays(reader *r, gguf_file *f, gguf_private *priv, uint64_t n_strings)
{
    if (n_strings == 0) return 0;
    priv->strings = malloc(n_strings * sizeof *priv->strings);
    if (!priv->strings)
        return fail(r, "out of memory indexing %llu metadata strings",
                    (unsigned long long)n_strings);
    uint64_t next = 0;
    for (uint64_t i = 0; i < f->n_kv; i++) {
        gguf_kv *kv = &f->kv[i];
        if (kv->type != GGUF_TYPE_ARRAY || kv->elem_type != GGUF_TYPE_STRING) continue;
        reader w = {r->base, r->size, (uint64_t)(kv->data - r->base), NULL, 0};
        kv->str_index = priv->strings + next;
        for (uint64_t j = 0; j < kv->count; j++) {
            int rc = read_str(&w, &priv->strings[next++], 0, "array string");
            assert(rc == 0);
            (void)rc;
        }
    }
    assert(next == n_strings);
    return 0;
}

static int read_alignment(reader *r, gguf_file *f)
{
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    const gguf_kv *kv = gguf_find(f, "general.alignment");
    if (!kv) return 0;
    uint64_t at = (uint64_t)((const uint8_t *)kv->key.ptr - r->base - 8);
    if (kv->type != GGUF_TYPE_UINT32)
        return fail(r, "general.alignment at offset %llu has type %s, expected uint32",
                    (unsigned long long)at, gguf_type_name(kv->type));
    uint64_t a = kv->v.u64;
    if (a == 0 || (a & (a - 1)) != 0)
        return fail(r, "general.alignment at offset %llu is %llu, not a power of two",
                    (unsigned long long)at, (unsigned long long)a);
    f->alignment = a;
    return 0;
}

/* ------------------------------------------------------------------------- */
/* Tensors                                                                     */

static int read_tensor_info(reader *r, gguf_tensor *t, uint64_t alignment)
{
    uint64_t at = r->pos;
    if (read_str(r, &t->name, GGUF_MAX_NAME_LEN, "tensor name") < 0) return -1;
    char name[80];
    gguf_str_printable(t->name, name, sizeof name);
    if (read_u32(r, &t->n_dims, "tensor n_dims") < 0) return -1;
    if (t->n_dims == 0 || t->n_dims > GGUF_MAX_DIMS)
        return fail(r, "tensor '%s' at offset %llu has %u dimensions (1..%d allowed)", name,
                    (unsigned long long)at, t->n_dims, GGUF_MAX_DIMS);
    uint64_t n_elems = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
        t->ne[d] = 1;
        if ((uint32_t)d >= t->n_dims) continue;
        if (read_u64(r, &t->ne[d], "tensor shape") < 0) return -1;
        /* ggml keeps shapes as int64: anything above that is corrupt. */
        if (t->ne[d] > (uint64_t)INT64_MAX ||
            __builtin_mul_overflow(n_elems, t->ne[d], &n_elems) ||
            n_elems > (uint64_t)INT64_MAX)
            return fail(r, "tensor '%s' at offset %llu: element count overflows "
                        "(dimension %d is %llu)", name, (unsigned long long)at, d,
                        (unsigned long long)t->ne[d]);
    }
    uint32_t type;
    if (read_u32(r, &type, "tensor type") < 0) return -1;
    const ggml_type_info *ti = ggml_type_lookup(type);
    if (!ti)
        return fail(r, "tensor '%s' at offset %llu has unknown type %u", name,
                    (unsigned long long)at, type);
    t->type = ti->type;
    if (t->ne[0] % ti->block_elems != 0)
        return fail(r, "tensor '%s' at offset %llu: row length %llu is not a multiple of "
                    "the %s block size %u", name, (unsigned long long)at,
                    (unsigned long long)t->ne[0], ti->name, ti->block_elems);
    if (read_u64(r, &t->offset, "tensor offset") < 0) return -1;
    if (t->offset % alignment != 0)
        return fail(r, "tensor '%s' at offset %llu: data offset %llu is not a multiple of "
                    "the alignment %llu", name, (unsigned long long)at,
                    (unsigned long long)t->offset, (unsigned long long)alignment);
    /* Bytes per element reach 4 (F32): below 2^63 elements can still overflow. */
    uint64_t nbytes;
    int overflow = __builtin_mul_overflow(t->ne[0] / ti->block_elems, ti->block_bytes, &nbytes);
    for (uint32_t d = 1; d < t->n_dims; d++)
        overflow |= __builtin_mul_overflow(nbytes, t->ne[d], &nbytes);
    if (overflow)
        return fail(r, "tensor '%s' at offset %llu: byte size overflows", name,
                    (unsigned long long)at);
    t->nbytes = nbytes;
    return 0;
}

static int index_tensors(reader *r, gguf_file *f, gguf_private *priv)
{
    if (f->n_tensors == 0) return 0;
    uint64_t n_slots = 4;
    while (n_slots < 2 * f->n_tensors) n_slots *= 2;
    priv->tensor_slots = calloc(n_slots, sizeof *priv->tensor_slots);
    if (!priv->tensor_slots)
        return fail(r, "out of memory indexing %llu tensors", (unsigned long long)f->n_tensors);
    priv->n_slots = n_slots;
    char shown[80];
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        gguf_str name = f->tensors[i].name;
        uint64_t s = hash_fnv1a(name.ptr, (size_t)name.len) & (n_slots - 1);
        for (; priv->tensor_slots[s]; s = (s + 1) & (n_slots - 1))
            if (str_same(f->tensors[priv->tensor_slots[s] - 1].name, name))
                return fail(r, "duplicate tensor name '%s' (tensors %u and %llu)",
                            gguf_str_printable(name, shown, sizeof shown),
                            priv->tensor_slots[s] - 1,
                            (unsigned long long)i);
        priv->tensor_slots[s] = (uint32_t)(i + 1);
    }
    return 0;
}

/* ------------------------------------------------------------------------- */
/* Open / close                                                                */

static int parse(reader *r, gguf_file *f)
{
    gguf_private *priv = f->owned_string_arrays;
    uint32_t magic;
    if (read_u32(r, &magic, "magic") < 0) return -1;
    if (magic != GGUF_MAGIC)
        return fail(r, "not a GGUF file: magic at offset 0 is 0x%08x, expected 0x%08x (\"GGUF\")",
                    magic, GGUF_MAGIC);
    if (read_u32(r, &f->version, "version") < 0) return -1;
    if (f->version != 2 && f->version != 3)
        return fail(r, "unsupported GGUF version %u at offset 4 (2 and 3 are supported)",
                    f->version);
    if (read_u64(r, &f->n_tensors, "tensor count") < 0) return -1;
    if (read_u64(r, &f->n_kv, "metadata count") < 0) return -1;
    if (f->n_kv > GGUF_MAX_KV || f->n_kv > left(r) / GGUF_MIN_KV_BYTES)
        return fail(r, "metadata count %llu at offset 16 is impossible for %llu bytes left",
                    (unsigned long long)f->n_kv, (unsigned long long)left(r));
    /* Tensor infos follow the metadata, so this first bound is loose; the
     * exact one is checked again once the metadata is read. */
    if (f->n_tensors > GGUF_MAX_TENSORS || f->n_tensors > left(r) / GGUF_MIN_TENSOR_BYTES)
        return fail(r, "tensor count %llu at offset 8 is impossible for %llu bytes left",
                    (unsigned long long)f->n_tensors, (unsigned long long)left(r));

    f->kv = calloc(f->n_kv ? f->n_kv : 1, sizeof *f->kv);
    if (!f->kv) return fail(r, "out of memory for %llu metadata entries",
                            (unsigned long long)f->n_kv);
    uint64_t n_strings = 0;
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (read_kv(r, &f->kv[i], &n_strings) < 0) return -1;
    if (check_unique_keys(r, f) < 0) return -1;
    if (index_string_arrays(r, f, priv, n_strings) < 0) return -1;
    if (read_alignment(r, f) < 0) return -1;

    if (f->n_tensors > left(r) / GGUF_MIN_TENSOR_BYTES)
        return fail(r, "tensor count %llu is impossible: tensor infos at offset %llu have only "
                    "%llu bytes", (unsigned long long)f->n_tensors, (unsigned long long)r->pos,
                    (unsigned long long)left(r));
    f->tensors = calloc(f->n_tensors ? f->n_tensors : 1, sizeof *f->tensors);
    if (!f->tensors) return fail(r, "out of memory for %llu tensors",
                                 (unsigned long long)f->n_tensors);
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (read_tensor_info(r, &f->tensors[i], f->alignment) < 0) return -1;
    if (index_tensors(r, f, priv) < 0) return -1;

    /* The data section starts at the next multiple of the alignment. A file
     * without tensors may end before that padding; that is still valid. */
    uint64_t pad = (f->alignment - r->pos % f->alignment) % f->alignment;
    f->data_offset = r->pos + pad; /* pos <= size < 2^63: no overflow */
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        char shown[80];
        uint64_t start, end;
        if (__builtin_add_overflow(f->data_offset, t->offset, &start) ||
            __builtin_add_overflow(start, t->nbytes, &end) || end > f->size)
            return fail(r, "tensor '%s': data at offset %llu + %llu (%llu bytes) runs past the "
                        "end of the file (%llu bytes)", gguf_str_printable(t->name, shown, sizeof shown),
                        (unsigned long long)f->data_offset, (unsigned long long)t->offset,
                        (unsigned long long)t->nbytes, (unsigned long long)f->size);
        t->data = f->base + start;
    }
    return 0;
}

static gguf_file *open_common(const uint8_t *base, uint64_t size, int fd, char *err,
                              size_t errlen)
{
    if (err && errlen) err[0] = '\0';
    gguf_file *f = calloc(1, sizeof *f);
    gguf_private *priv = calloc(1, sizeof *priv);
    if (!f || !priv) {
        free(f);
        free(priv);
        if (err && errlen) snprintf(err, errlen, "out of memory");
        return NULL;
    }
    f->base = base;
    f->size = size;
    f->fd = fd;
    f->owned_string_arrays = priv;
    reader r = {base, size, 0, err, errlen};
    if (size > (uint64_t)INT64_MAX) {
        fail(&r, "file of %llu bytes is too large", (unsigned long long)size);
        goto err;
    }
    if (parse(&r, f) < 0) goto err;
    return f;
err:
    f->fd = -1; /* the caller still owns fd and the mapping on failure */
    gguf_close(f);
    return NULL;
}

gguf_file *gguf_open_memory(const void *data, size_t size, char *err, size_t errlen)
{
    static const uint8_t empty[1];
    return open_common(data ? data : empty, data ? size : 0, -1, err, errlen);
}

gguf_file *gguf_open(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        snprintf(err, errlen, "cannot stat %s: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode) || st.st_size < 24) {
        snprintf(err, errlen, "%s: not a GGUF file (%s, %lld bytes; a header is 24)", path,
                 S_ISREG(st.st_mode) ? "too small" : "not a regular file",
                 (long long)st.st_size);
        close(fd);
        return NULL;
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        snprintf(err, errlen, "cannot map %s: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    char inner[512];
    gguf_file *f = open_common(map, (uint64_t)st.st_size, fd, inner, sizeof inner);
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, inner);
        munmap(map, (size_t)st.st_size);
        close(fd);
    }
    return f;
}

void gguf_close(gguf_file *f)
{
    if (!f) return;
    gguf_private *priv = f->owned_string_arrays;
    if (priv) {
        free(priv->strings);
        free(priv->tensor_slots);
        free(priv);
    }
    free(f->kv);
    free(f->tensors);
    if (f->fd >= 0) {
        munmap((void *)f->base, (size_t)f->size);
        close(f->fd);
    }
    free(f);
}

/* ------------------------------------------------------------------------- */
/* Lookups                                                                     */

int gguf_str_eq(gguf_str s, const char *c)
{
    size_t n = strlen(c);
    return s.len == n && (n == 0 || memcmp(s.ptr, c, n) == 0);
}

const char *gguf_str_printable(gguf_str s, char *buf, size_t cap)
{
    assert(cap >= 8);
    size_t n = s.len < cap ? (size_t)s.len : cap - 4;
    if (n < s.len) /* do not end inside a UTF-8 character */
        while (n > 0 && ((uint8_t)s.ptr[n] & 0xc0) == 0x80) n--;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)s.ptr[i];
        buf[i] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    strcpy(buf + n, n < s.len ? "..." : "");
    return buf;
}

void gguf_kv_range(const gguf_file *f, uint64_t i, uint64_t *start, uint64_t *end)
{
    assert(i < f->n_kv);
    const gguf_kv *kv = &f->kv[i];
    const uint8_t *at = (const uint8_t *)kv->key.ptr - 8, *last;
    switch (kv->type) {
    case GGUF_TYPE_STRING:
        last = (const uint8_t *)kv->v.str.ptr + kv->v.str.len;
        break;
    case GGUF_TYPE_ARRAY:
        if (kv->elem_type != GGUF_TYPE_STRING) last = kv->data + kv->count * gguf_scalar_size[kv->elem_type];
        else if (kv->count) last = (const uint8_t *)kv->str_index[kv->count - 1].ptr + kv->str_index[kv->count - 1].len;
        else last = kv->data;
        break;
    default:
        last = (const uint8_t *)kv->key.ptr + kv->key.len + 4 + gguf_scalar_size[kv->type];
        break;
    }
    *start = (uint64_t)(at - f->base);
    *end = (uint64_t)(last - f->base);
}

const gguf_kv *gguf_find(const gguf_file *f, const char *key)
{
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (gguf_str_eq(f->kv[i].key, key)) return &f->kv[i];
    return NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name)
{
    const gguf_private *priv = f->owned_string_arrays;
    if (!priv || !priv->tensor_slots) return NULL;
    size_t n = strlen(name);
    uint64_t s = hash_fnv1a(name, n) & (priv->n_slots - 1);
    for (; priv->tensor_slots[s]; s = (s + 1) & (priv->n_slots - 1)) {
        const gguf_tensor *t = &f->tensors[priv->tensor_slots[s] - 1];
        if (gguf_str_eq(t->name, name)) return t;
    }
    return NULL;
}

static int is_unsigned(gguf_type t)
{
    return t == GGUF_TYPE_UINT8 || t == GGUF_TYPE_UINT16 || t == GGUF_TYPE_UINT32 ||
           t == GGUF_TYPE_UINT64;
}

static int is_signed(gguf_type t)
{
    return t == GGUF_TYPE_INT8 || t == GGUF_TYPE_INT16 || t == GGUF_TYPE_INT32 ||
           t == GGUF_TYPE_INT64;
}

int gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out)
{
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv) return -1;
    if (is_unsigned(kv->type) && kv->v.u64 <= UINT32_MAX) {
        *out = (uint32_t)kv->v.u64;
        return 0;
    }
    if (is_signed(kv->type) && kv->v.i64 >= 0 && kv->v.i64 <= (int64_t)UINT32_MAX) {
        *out = (uint32_t)kv->v.i64;
        return 0;
    }
    return -1;
}

int gguf_get_f32(const gguf_file *f, const char *key, float *out)
{
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv || (kv->type != GGUF_TYPE_FLOAT32 && kv->type != GGUF_TYPE_FLOAT64)) return -1;
    *out = (float)kv->v.f64;
    return 0;
}

int gguf_get_bool(const gguf_file *f, const char *key, int *out)
{
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv || kv->type != GGUF_TYPE_BOOL) return -1;
    *out = kv->v.u64 != 0;
    return 0;
}

int gguf_get_str(const gguf_file *f, const char *key, gguf_str *out)
{
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv || kv->type != GGUF_TYPE_STRING) return -1;
    *out = kv->v.str;
    return 0;
}

int gguf_arr_str(const gguf_kv *kv, uint64_t i, gguf_str *out)
{
    if (!kv || kv->type != GGUF_TYPE_ARRAY || kv->elem_type != GGUF_TYPE_STRING ||
        i >= kv->count || !kv->str_index)
        return -1;
    *out = kv->str_index[i];
    return 0;
}

int gguf_arr_i64(const gguf_kv *kv, uint64_t i, int64_t *out)
{
    if (!kv || kv->type != GGUF_TYPE_ARRAY || i >= kv->count) return -1;
    gguf_type et = kv->elem_type;
    if (!is_unsigned(et) && !is_signed(et) && et != GGUF_TYPE_BOOL) return -1;
    gguf_kv tmp = {0}; /* scalar_decode fills one union member; -O3 cannot see which */
    size_t es = gguf_scalar_size[et];
    scalar_decode(et, kv->data + i * es, &tmp);
    if (is_signed(et)) {
        *out = tmp.v.i64;
        return 0;
    }
    if (tmp.v.u64 > (uint64_t)INT64_MAX) return -1;
    *out = (int64_t)tmp.v.u64;
    return 0;
}

int gguf_arr_f32(const gguf_kv *kv, uint64_t i, float *out)
{
    if (!kv || kv->type != GGUF_TYPE_ARRAY || i >= kv->count) return -1;
    if (kv->elem_type != GGUF_TYPE_FLOAT32 && kv->elem_type != GGUF_TYPE_FLOAT64) return -1;
    gguf_kv tmp = {0}; /* scalar_decode fills one union member; -O3 cannot see which */
    scalar_decode(kv->elem_type, kv->data + i * gguf_scalar_size[kv->elem_type], &tmp);
    *out = (float)tmp.v.f64;
    return 0;
}
