/* gguf_write.c: see gguf_write.h. Byte layout per the GGUF v3 specification:
 * header (magic, version, tensor count, kv count), key/values, tensor infos
 * (name, n_dims, ne[], type, offset relative to the data section), padding to
 * the alignment, then the data, every tensor on an aligned offset (padded
 * with zeros, the last one too, as ggml's writer does). */
#include "engine/gguf_write.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/err.h"

typedef struct {
    uint8_t *p;
    size_t len, cap;
    int oom;
} wbuf;

typedef struct {
    char *key;     /* NUL-terminated copy, for replacement lookups */
    wbuf bytes;    /* the serialised key/value */
} wkv;

typedef struct {
    char *name;
    size_t name_len;
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS];
    ggml_type type;
    uint64_t nbytes;
} wtensor;

struct gguf_write {
    wkv *kv;
    size_t n_kv, cap_kv;
    wtensor *t;
    size_t n_t, cap_t;
    uint64_t alignment;
};

static void put(wbuf *b, const void *p, size_t n)
{
    if (b->oom) return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n) cap *= 2;
        uint8_t *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void put_u32(wbuf *b, uint32_t v) { put(b, &v, 4); } /* little-endian hosts only (as gguf.c) */
static void put_u64(wbuf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(wbuf *b, const char *s, uint64_t len)
{
    put_u64(b, len);
    put(b, s, (size_t)len);
}

gguf_write *gguf_write_new(void)
{
    gguf_write *w = calloc(1, sizeof *w);
    if (w) w->alignment = GGUF_DEFAULT_ALIGNMENT;
    return w;
}

void gguf_write_free(gguf_write *w)
{
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].bytes.p);
    }
    for (size_t i = 0; i < w->n_t; i++) free(w->t[i].name);
    free(w->kv);
    free(w->t);
    free(w);
}

/* The entry for key: the existing one (emptied) or a new one at the end. */
static wkv *kv_slot(gguf_write *w, const char *key, size_t key_len)
{
    for (size_t i = 0; i < w->n_kv; i++)
        if (strlen(w->kv[i].key) == key_len && !memcmp(w->kv[i].key, key, key_len)) {
            w->kv[i].bytes.len = 0;
            return &w->kv[i];
        }
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? 2 * w->cap_kv : 32;
        wkv *kv = realloc(w->kv, cap * sizeof *kv);
        if (!kv) return NULL;
        w->kv = kv;
        w->cap_kv = cap;
    }
    wkv *e = &w->kv[w->n_kv];
    memset(e, 0, sizeof *e);
    e->key = malloc(key_len + 1);
    if (!e->key) return NULL;
    memcpy(e->key, key, key_len);
    e->key[key_len] = '\0';
    w->n_kv++;
    return e;
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

int gguf_write_copy_kv(gguf_write *w, const gguf_kv *kv, char *err, size_t errlen)
{
    char name[96];
    wkv *e = kv_slot(w, kv->key.ptr, (size_t)kv->key.len);
    if (!e) goto oom;
    wbuf *b = &e->bytes;
    put_str(b, kv->key.ptr, kv->key.len);
    put_u32(b, (uint32_t)kv->type);
    size_t es = scalar_size(kv->type);
    if (es) {
        /* Scalars are held widened by the reader: narrow them back. */
        uint8_t raw[8];
        switch (kv->type) {
        case GGUF_TYPE_FLOAT32: { float f = (float)kv->v.f64; memcpy(raw, &f, 4); break; }
        case GGUF_TYPE_FLOAT64: memcpy(raw, &kv->v.f64, 8); break;
        default: memcpy(raw, &kv->v.u64, 8); break; /* low bytes first: any integer width */
        }
        put(b, raw, es);
    } else if (kv->type == GGUF_TYPE_STRING) {
        put_str(b, kv->v.str.ptr, kv->v.str.len);
    } else if (kv->type == GGUF_TYPE_ARRAY) {
        put_u32(b, (uint32_t)kv->elem_type);
        put_u64(b, kv->count);
        /* The elements are copied raw: contiguous in the source file. */
        size_t raw = 0;
        if (kv->elem_type == GGUF_TYPE_STRING) {
            if (kv->count) {
                assert(kv->str_index);
                const gguf_str *last = &kv->str_index[kv->count - 1];
                raw = (size_t)((const uint8_t *)last->ptr + last->len - kv->data);
            }
        } else if (scalar_size(kv->elem_type)) {
            raw = (size_t)kv->count * scalar_size(kv->elem_type);
        } else {
            err_set(err, errlen, "key %s: arrays of %u are not supported",
                    gguf_str_printable(kv->key, name, sizeof name), (unsigned)kv->elem_type);
            return -1;
        }
        put(b, kv->data, raw);
    } else {
        err_set(err, errlen, "key %s: unknown value type %u",
                gguf_str_printable(kv->key, name, sizeof name), (unsigned)kv->type);
        return -1;
    }
    if (b->oom) goto oom;
    if (gguf_str_eq(kv->key, "general.alignment") && kv->type == GGUF_TYPE_UINT32 &&
        kv->v.u64 && !(kv->v.u64 & (kv->v.u64 - 1)))
        w->alignment = kv->v.u64;
    return 0;
oom:
    err_set(err, errlen, "out of memory copying metadata");
    return -1;
}

int gguf_write_set_u32(gguf_write *w, const char *key, uint32_t v, char *err, size_t errlen)
{
    gguf_kv kv = {.key = {key, strlen(key)}, .type = GGUF_TYPE_UINT32};
    kv.v.u64 = v;
    return gguf_write_copy_kv(w, &kv, err, errlen);
}

int gguf_write_add_tensor(gguf_write *w, gguf_str name, uint32_t n_dims, const uint64_t *ne,
                          ggml_type type, char *err, size_t errlen)
{
    char pname[96];
    size_t be = ggml_type_block_elems(type), bb = ggml_type_block_bytes(type);
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS || !be || ne[0] % be) {
        err_set(err, errlen, "tensor %s: %u dims, row of %llu, type %s: not writable",
                gguf_str_printable(name, pname, sizeof pname), n_dims,
                (unsigned long long)ne[0], ggml_type_name(type));
        return -1;
    }
    uint64_t nbytes = ne[0] / be * bb;
    for (uint32_t d = 1; d < n_dims; d++) {
        if (ne[d] && nbytes > UINT64_MAX / ne[d]) {
            err_set(err, errlen, "tensor %s: size overflows", gguf_str_printable(name, pname, sizeof pname));
            return -1;
        }
        nbytes *= ne[d];
    }
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? 2 * w->cap_t : 64;
        wtensor *t = realloc(w->t, cap * sizeof *t);
        if (!t) goto oom;
        w->t = t;
        w->cap_t = cap;
    }
    wtensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    t->name = malloc(name.len ? name.len : 1);
    if (!t->name) goto oom;
    memcpy(t->name, name.ptr, name.len);
    t->name_len = name.len;
    t->n_dims = n_dims;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = (uint32_t)d < n_dims ? ne[d] : 1;
    t->type = type;
    t->nbytes = nbytes;
    w->n_t++;
    return 0;
oom:
    err_set(err, errlen, "out of memory");
    return -1;
}

uint64_t gguf_write_tensor_nbytes(const gguf_write *w, size_t i)
{
    assert(i < w->n_t);
    return w->t[i].nbytes;
}

static uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

static int write_zeros(FILE *f, uint64_t n)
{
    static const uint8_t z[256];
    while (n) {
        size_t k = n < sizeof z ? (size_t)n : sizeof z;
        if (fwrite(z, 1, k, f) != k) return -1;
        n -= k;
    }
    return 0;
}

int gguf_write_layout(const gguf_write *w, uint8_t **out, size_t *len, uint64_t *data_offsets,
                      uint64_t *file_size, char *err, size_t errlen)
{
    wbuf head = {0};
    put_u32(&head, GGUF_MAGIC);
    put_u32(&head, 3);
    put_u64(&head, w->n_t);
    put_u64(&head, w->n_kv);
    for (size_t i = 0; i < w->n_kv; i++) put(&head, w->kv[i].bytes.p, w->kv[i].bytes.len);
    uint64_t offset = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        put_str(&head, t->name, t->name_len);
        put_u32(&head, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++) put_u64(&head, t->ne[d]);
        put_u32(&head, (uint32_t)t->type);
        put_u64(&head, offset);
        offset = align_up(offset + t->nbytes, w->alignment);
    }
    static const uint8_t zeros[256];
    size_t pad = (size_t)(align_up(head.len, w->alignment) - head.len);
    while (pad) {
        size_t k = pad < sizeof zeros ? pad : sizeof zeros;
        put(&head, zeros, k);
        pad -= k;
    }
    if (head.oom) {
        free(head.p);
        err_set(err, errlen, "out of memory");
        return -1;
    }
    uint64_t at = head.len;
    for (size_t i = 0; i < w->n_t; i++) {
        if (data_offsets) data_offsets[i] = at;
        at = align_up(at + w->t[i].nbytes, w->alignment);
    }
    *out = head.p;
    *len = head.len;
    if (file_size) *file_size = at;
    return 0;
}

int gguf_write_file(const gguf_write *w, const char *path, gguf_write_fill_fn fill, void *ctx,
                    char *err, size_t errlen)
{
    uint8_t *head = NULL;
    size_t head_len = 0;
    if (gguf_write_layout(w, &head, &head_len, NULL, NULL, err, errlen) < 0) return -1;
    uint64_t max_bytes = 0;
    for (size_t i = 0; i < w->n_t; i++)
        max_bytes = w->t[i].nbytes > max_bytes ? w->t[i].nbytes : max_bytes;
    size_t tmp_len = strlen(path) + 5;
    char *tmp = malloc(tmp_len);
    void *data = malloc(max_bytes ? (size_t)max_bytes : 1);
    FILE *f = NULL;
    int rc = -1;
    if (!tmp || !data) {
        err_set(err, errlen, "out of memory");
        goto out;
    }
    snprintf(tmp, tmp_len, "%s.tmp", path);
    f = fopen(tmp, "wb");
    if (!f) {
        err_set(err, errlen, "cannot create %s", tmp);
        goto out;
    }
    if (fwrite(head, 1, head_len, f) != head_len) goto io;
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        if (fill(ctx, i, data, t->nbytes, err, errlen) < 0) goto fail;
        if (fwrite(data, 1, (size_t)t->nbytes, f) != t->nbytes ||
            write_zeros(f, align_up(t->nbytes, w->alignment) - t->nbytes) < 0)
            goto io;
    }
    if (fclose(f) != 0) {
        f = NULL;
        goto io;
    }
    f = NULL;
    if (rename(tmp, path) != 0) {
        err_set(err, errlen, "cannot rename %s to %s", tmp, path);
        goto fail;
    }
    rc = 0;
    goto out;
io:
    err_set(err, errlen, "write error on %s (disk full?)", tmp);
fail:
    if (f) fclose(f);
    f = NULL;
    remove(tmp);
out:
    if (f) fclose(f);
    free(tmp);
    free(data);
    free(head);
    return rc;
}
