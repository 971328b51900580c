/* weights.c: model hashes and manifests (see weights.h; the reasons are in
 * docs/weights.md).
 *
 * The metadata is never interpreted here beyond what identity needs: it is
 * handed to the GGUF reader (over a 24-byte header made for it), which
 * bounds every length exactly as it does for files, and the key/value spans
 * it finds are hashed byte for byte. So a peer's metadata is held to the same
 * rules as a local file's, and both sides hash the same bytes.
 *
 * Hashing runs on the caller's thread plus a short-lived thread pool: chunks
 * are independent, so they hash in parallel at close to n x 1.6 GB/s with
 * SHA-NI (measured in docs/weights.md). */
#include "models/weights.h"

#include <assert.h>
#include <errno.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/gguf_write.h"
#include "lib/err.h"
#include "lib/hex.h"
#include "lib/threadpool.h"

#define GGUF_HEAD_BYTES 24 /* magic, version, tensor count, key/value count */

static uint32_t chunk_setting = WEIGHTS_CHUNK_DEFAULT;

static int chunk_size_ok(uint32_t b)
{
    return b >= WEIGHTS_CHUNK_MIN && b <= WEIGHTS_CHUNK_MAX && !(b & (b - 1));
}

uint32_t weights_chunk_bytes(void) { return chunk_setting; }

int weights_set_chunk_bytes(uint32_t bytes)
{
    if (!chunk_size_ok(bytes)) return -1;
    chunk_setting = bytes;
    return 0;
}

/* ---- hashing ------------------------------------------------------------------*/

void weights_sha256(const void *data, size_t len, uint8_t out[WEIGHTS_HASH_BYTES])
{
    /* Cannot fail for SHA-256 short of a broken GnuTLS; assert rather than
     * carry an error path through every caller. */
    int rc = gnutls_hash_fast(GNUTLS_DIG_SHA256, data, len, out);
    assert(rc == 0);
    (void)rc;
}

typedef struct {
    int fd;
    const uint8_t *base;
    const uint64_t *offsets;
    const uint32_t *lens;
    uint8_t (*out)[WEIGHTS_HASH_BYTES];
    const atomic_int *cancel;
    uint8_t **bufs;              /* one per thread, for pread */
    atomic_int stopped;          /* 1 cancelled, 2 read error */
} pieces_job;

static void hash_piece(void *ctx, int task, int thread)
{
    pieces_job *j = ctx;
    if (atomic_load(&j->stopped)) return;
    if (j->cancel && atomic_load(j->cancel)) {
        atomic_store(&j->stopped, 1);
        return;
    }
    const uint8_t *p = j->base ? j->base + j->offsets[task] : NULL;
    if (!p) {
        size_t got = 0, len = j->lens[task];
        while (got < len) {
            ssize_t n = pread(j->fd, j->bufs[thread] + got, len - got, (off_t)(j->offsets[task] + got));
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                atomic_store(&j->stopped, 2);
                return;
            }
            got += (size_t)n;
        }
        p = j->bufs[thread];
    }
    weights_sha256(p, j->lens[task], j->out[task]);
}

int weights_hash_pieces(int fd, const uint8_t *base, size_t n, const uint64_t *offsets, const uint32_t *lens,
                        uint8_t (*out)[WEIGHTS_HASH_BYTES], int n_threads, const atomic_int *cancel)
{
    assert(n <= INT_MAX);
    assert(base || fd >= 0);
    pieces_job j = {fd, base, offsets, lens, out, cancel, NULL, 0};
    threadpool *pool = NULL;
    if (n > 1 && n_threads != 1) pool = threadpool_create(n_threads, NULL, 0);
    int threads = pool ? threadpool_size(pool) : 1;
    uint32_t max = 0;
    for (size_t i = 0; i < n; i++) max = lens[i] > max ? lens[i] : max;
    if (!base) {
        j.bufs = calloc((size_t)threads, sizeof *j.bufs);
        for (int t = 0; j.bufs && t < threads; t++)
            if (!(j.bufs[t] = malloc(max ? max : 1))) break;
        if (!j.bufs || !j.bufs[threads - 1]) atomic_store(&j.stopped, 2);
    }
    if (!atomic_load(&j.stopped)) {
        if (pool) threadpool_run(pool, (int)n, hash_piece, &j);
        else for (size_t i = 0; i < n; i++) hash_piece(&j, (int)i, 0);
    }
    threadpool_free(pool);
    for (int t = 0; j.bufs && t < threads; t++) free(j.bufs[t]);
    free(j.bufs);
    return -atomic_load(&j.stopped);
}

/* ---- metadata -------------------------------------------------------------------*/

/* Which keys identify the model. general.* describes a file (name, author,
 * licence, URLs, file type, alignment) and is left out, so two copies that
 * differ only there are one model; general.architecture picks the forward
 * pass and is in. Tokenizer keys are in: token ids index the embedding and
 * the output rows, and the chat template shapes every prompt. */
static int key_identifies(gguf_str key)
{
    static const char general[] = "general.";
    if (key.len < sizeof general - 1 || memcmp(key.ptr, general, sizeof general - 1) != 0) return 1;
    return gguf_str_eq(key, "general.architecture");
}

/* The metadata of m as a GGUF file without tensors, opened by the reader.
 * *buf backs it; free both with meta_close. */
static gguf_file *meta_open(const weights_manifest *m, uint8_t **buf, char *err, size_t errlen)
{
    *buf = NULL;
    if (m->meta_len > WEIGHTS_MAX_META || m->n_kv > WEIGHTS_MAX_KV) {
        err_set(err, errlen, "metadata of %zu bytes and %llu keys is over the bounds", m->meta_len,
                (unsigned long long)m->n_kv);
        return NULL;
    }
    size_t size = GGUF_HEAD_BYTES + m->meta_len;
    uint8_t *b = malloc(size);
    if (!b) {
        err_set(err, errlen, "out of memory for %zu bytes of metadata", m->meta_len);
        return NULL;
    }
    uint32_t magic = GGUF_MAGIC, version = 3; /* little-endian hosts only, as gguf.c */
    uint64_t n_tensors = 0;
    memcpy(b, &magic, 4);
    memcpy(b + 4, &version, 4);
    memcpy(b + 8, &n_tensors, 8);
    memcpy(b + 16, &m->n_kv, 8);
    if (m->meta_len) memcpy(b + GGUF_HEAD_BYTES, m->meta, m->meta_len);
    char why[256];
    gguf_file *g = gguf_open_memory(b, size, why, sizeof why);
    if (!g) {
        err_set(err, errlen, "metadata: %s", why);
        free(b);
        return NULL;
    }
    /* The reader stops after n_kv entries; bytes beyond them would slip into
     * a part file's header unhashed. */
    uint64_t start, end = GGUF_HEAD_BYTES;
    if (g->n_kv) gguf_kv_range(g, g->n_kv - 1, &start, &end);
    if (end != size) {
        err_set(err, errlen, "metadata: %zu bytes after the last key", (size_t)(size - end));
        gguf_close(g);
        free(b);
        return NULL;
    }
    *buf = b;
    return g;
}

static void meta_close(gguf_file *g, uint8_t *buf)
{
    gguf_close(g);
    free(buf);
}

static int meta_digest(weights_manifest *m, char *err, size_t errlen)
{
    uint8_t *buf;
    gguf_file *g = meta_open(m, &buf, err, errlen);
    if (!g) return -1;
    gnutls_hash_hd_t h;
    if (gnutls_hash_init(&h, GNUTLS_DIG_SHA256) < 0) {
        meta_close(g, buf);
        err_set(err, errlen, "cannot start SHA-256");
        return -1;
    }
    uint64_t prev_end = GGUF_HEAD_BYTES;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        uint64_t start, end;
        gguf_kv_range(g, i, &start, &end);
        assert(start == prev_end);
        prev_end = end;
        (void)prev_end;
        if (key_identifies(g->kv[i].key)) gnutls_hash(h, g->base + start, (size_t)(end - start));
    }
    gnutls_hash_deinit(h, m->meta_hash);
    if (g->alignment > WEIGHTS_MAX_ALIGNMENT) {
        err_set(err, errlen, "metadata: alignment %llu is over %u", (unsigned long long)g->alignment,
                WEIGHTS_MAX_ALIGNMENT);
        meta_close(g, buf);
        return -1;
    }
    m->alignment = g->alignment;
    m->n_layers = 0;
    gguf_str arch;
    if (gguf_get_str(g, "general.architecture", &arch) == 0 && arch.len < 200) {
        char key[256];
        snprintf(key, sizeof key, "%.*s.block_count", (int)arch.len, arch.ptr);
        uint32_t n;
        if (gguf_get_u32(g, key, &n) == 0 && n <= WEIGHTS_MAX_LAYERS) m->n_layers = (int)n;
    }
    meta_close(g, buf);
    return 0;
}

/* ---- tensors ----------------------------------------------------------------------*/

/* N of a canonical "blk.N." prefix (as the engine reads it: no sign, no
 * leading zero), or -1. */
static int layer_of(const char *name)
{
    if (strncmp(name, "blk.", 4) != 0) return -1;
    const char *p = name + 4;
    if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] != '.')) return -1;
    long n = 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        n = n * 10 + (*p - '0');
        if (n >= WEIGHTS_MAX_LAYERS) return -1;
    }
    return *p == '.' ? (int)n : -1;
}

static weights_role role_of(const char *name, int layer)
{
    if (layer >= 0) return WEIGHTS_ROLE_LAYER;
    if (!strcmp(name, "rope_freqs.weight") || !strcmp(name, "rope_factors_long.weight") ||
        !strcmp(name, "rope_factors_short.weight"))
        return WEIGHTS_ROLE_SHARED;
    return WEIGHTS_ROLE_HEAD;
}

/* The byte size a type and shape imply; 0 with a message when invalid. */
static int tensor_shape_ok(const weights_tensor *t, uint32_t chunk_bytes, char *err, size_t errlen)
{
    size_t be = ggml_type_block_elems((ggml_type)t->type), bb = ggml_type_block_bytes((ggml_type)t->type);
    if (!be || !bb) {
        err_set(err, errlen, "tensor %s: unknown type %u", t->name, t->type);
        return -1;
    }
    if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS) {
        err_set(err, errlen, "tensor %s: %u dimensions", t->name, t->n_dims);
        return -1;
    }
    uint64_t nbytes;
    int overflow = t->ne[0] % be != 0 || __builtin_mul_overflow(t->ne[0] / be, bb, &nbytes);
    for (uint32_t d = 1; d < GGUF_MAX_DIMS && !overflow; d++) {
        if (d >= t->n_dims) overflow = t->ne[d] != 1;
        else overflow = __builtin_mul_overflow(nbytes, t->ne[d], &nbytes);
    }
    if (overflow || nbytes != t->nbytes || nbytes > WEIGHTS_MAX_TENSOR_BYTES) {
        err_set(err, errlen, "tensor %s: shape, type %s and size %llu do not agree", t->name,
                ggml_type_name((ggml_type)t->type), (unsigned long long)t->nbytes);
        return -1;
    }
    if (t->n_chunks != (nbytes + chunk_bytes - 1) / chunk_bytes) {
        err_set(err, errlen, "tensor %s: %u chunks for %llu bytes", t->name, t->n_chunks,
                (unsigned long long)nbytes);
        return -1;
    }
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp((*(const weights_tensor *const *)a)->name, (*(const weights_tensor *const *)b)->name);
}

static int names_unique(const weights_manifest *m, char *err, size_t errlen)
{
    const weights_tensor **v = malloc(m->n_tensors * sizeof *v);
    if (!v) {
        err_set(err, errlen, "out of memory");
        return -1;
    }
    for (uint32_t i = 0; i < m->n_tensors; i++) v[i] = &m->tensors[i];
    qsort(v, m->n_tensors, sizeof *v, cmp_names);
    int rc = 0;
    for (uint32_t i = 1; i < m->n_tensors && !rc; i++)
        if (!strcmp(v[i]->name, v[i - 1]->name)) {
            err_set(err, errlen, "tensor %s is listed twice", v[i]->name);
            rc = -1;
        }
    free(v);
    return rc;
}

static void put_be(gnutls_hash_hd_t h, uint64_t v, int bytes)
{
    uint8_t b[8];
    for (int i = 0; i < bytes; i++) b[i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
    gnutls_hash(h, b, (size_t)bytes);
}

static int model_digest(const weights_manifest *m, uint8_t out[WEIGHTS_HASH_BYTES])
{
    gnutls_hash_hd_t h;
    if (gnutls_hash_init(&h, GNUTLS_DIG_SHA256) < 0) return -1;
    gnutls_hash(h, WEIGHTS_DOMAIN, sizeof WEIGHTS_DOMAIN); /* with its NUL */
    put_be(h, m->chunk_bytes, 4);
    gnutls_hash(h, m->meta_hash, WEIGHTS_HASH_BYTES);
    put_be(h, m->n_tensors, 4);
    for (uint32_t i = 0; i < m->n_tensors; i++) {
        const weights_tensor *t = &m->tensors[i];
        size_t len = strlen(t->name);
        put_be(h, len, 2);
        gnutls_hash(h, t->name, len);
        put_be(h, t->type, 4);
        put_be(h, t->n_dims, 4);
        for (uint32_t d = 0; d < t->n_dims; d++) put_be(h, t->ne[d], 8);
        gnutls_hash(h, t->data_hash, WEIGHTS_HASH_BYTES);
    }
    gnutls_hash_deinit(h, out);
    return 0;
}

int weights_manifest_finish(weights_manifest *m, int compute, char *err, size_t errlen)
{
    if (!chunk_size_ok(m->chunk_bytes)) {
        err_set(err, errlen, "chunk size %u is not a power of two in [%u, %u]", m->chunk_bytes,
                WEIGHTS_CHUNK_MIN, WEIGHTS_CHUNK_MAX);
        return -1;
    }
    if (m->n_tensors == 0 || m->n_tensors > WEIGHTS_MAX_TENSORS) {
        err_set(err, errlen, "%u tensors (1..%u allowed)", m->n_tensors, WEIGHTS_MAX_TENSORS);
        return -1;
    }
    if (meta_digest(m, err, errlen) < 0) return -1;
    int max_layer = -1;
    m->data_bytes = 0;
    for (uint32_t i = 0; i < m->n_tensors; i++) {
        weights_tensor *t = &m->tensors[i];
        size_t len = t->name ? strlen(t->name) : 0;
        if (len == 0 || len > WEIGHTS_MAX_NAME) {
            err_set(err, errlen, "tensor %u: name of %zu bytes", i, len);
            return -1;
        }
        if (tensor_shape_ok(t, m->chunk_bytes, err, errlen) < 0) return -1;
        if (compute && !t->chunks && t->n_chunks) {
            err_set(err, errlen, "tensor %s: no chunk hashes to compute its hash from", t->name);
            return -1;
        }
        t->layer = layer_of(t->name);
        t->role = role_of(t->name, t->layer);
        if (t->layer > max_layer) max_layer = t->layer;
        m->data_bytes += t->nbytes;
    }
    if (max_layer + 1 > m->n_layers) m->n_layers = max_layer + 1;
    if (names_unique(m, err, errlen) < 0) return -1;
    /* Well-formed: now the hashes. */
    for (uint32_t i = 0; i < m->n_tensors; i++) {
        weights_tensor *t = &m->tensors[i];
        if (!t->chunks && t->n_chunks) continue; /* a tensor this manifest only names */
        uint8_t h[WEIGHTS_HASH_BYTES];
        weights_sha256(t->chunks, (size_t)t->n_chunks * WEIGHTS_HASH_BYTES, h);
        if (compute) {
            memcpy(t->data_hash, h, sizeof h);
        } else if (memcmp(h, t->data_hash, sizeof h) != 0) {
            err_set(err, errlen, "tensor %s: its chunk hashes do not match its data hash", t->name);
            return -2;
        }
    }
    uint8_t h[WEIGHTS_HASH_BYTES];
    if (model_digest(m, h) < 0) {
        err_set(err, errlen, "cannot start SHA-256");
        return -1;
    }
    if (compute) {
        memcpy(m->model_hash, h, sizeof h);
    } else if (memcmp(h, m->model_hash, sizeof h) != 0) {
        err_set(err, errlen, "the manifest does not hash to its model hash");
        return -2;
    }
    return 0;
}

/* ---- hashing a file ----------------------------------------------------------------*/

void weights_manifest_free(weights_manifest *m)
{
    if (!m) return;
    for (uint32_t i = 0; i < m->n_tensors; i++) {
        free(m->tensors[i].name);
        free(m->tensors[i].chunks);
    }
    free(m->tensors);
    free(m->meta);
    free(m);
}

uint64_t weights_chunk_offset(const weights_manifest *m, uint32_t c)
{
    return (uint64_t)c * m->chunk_bytes;
}

uint32_t weights_chunk_len(const weights_manifest *m, const weights_tensor *t, uint32_t c)
{
    assert(c < t->n_chunks);
    uint64_t left = t->nbytes - weights_chunk_offset(m, c);
    return left < m->chunk_bytes ? (uint32_t)left : m->chunk_bytes;
}

weights_manifest *weights_manifest_from_gguf(const gguf_file *f, int n_threads, const atomic_int *cancel,
                                             uint64_t *bytes_hashed, char *err, size_t errlen)
{
    if (bytes_hashed) *bytes_hashed = 0;
    if (f->n_tensors == 0 || f->n_tensors > WEIGHTS_MAX_TENSORS) {
        err_set(err, errlen, "%llu tensors (1..%u allowed)", (unsigned long long)f->n_tensors,
                WEIGHTS_MAX_TENSORS);
        return NULL;
    }
    weights_manifest *m = calloc(1, sizeof *m);
    uint64_t *offsets = NULL;
    uint32_t *lens = NULL;
    uint8_t (*hashes)[WEIGHTS_HASH_BYTES] = NULL;
    if (!m) goto oom;
    m->chunk_bytes = weights_chunk_bytes();
    m->n_kv = f->n_kv;
    uint64_t start, meta_end = GGUF_HEAD_BYTES;
    if (f->n_kv) gguf_kv_range(f, f->n_kv - 1, &start, &meta_end);
    m->meta_len = (size_t)(meta_end - GGUF_HEAD_BYTES);
    if (m->meta_len > WEIGHTS_MAX_META) {
        err_set(err, errlen, "metadata of %zu bytes is over %u", m->meta_len, WEIGHTS_MAX_META);
        goto fail;
    }
    m->meta = malloc(m->meta_len ? m->meta_len : 1);
    m->tensors = calloc(f->n_tensors, sizeof *m->tensors);
    if (!m->meta || !m->tensors) goto oom;
    memcpy(m->meta, f->base + GGUF_HEAD_BYTES, m->meta_len);
    m->n_tensors = (uint32_t)f->n_tensors;
    size_t n_chunks = 0;
    for (uint32_t i = 0; i < m->n_tensors; i++) {
        const gguf_tensor *g = &f->tensors[i];
        weights_tensor *t = &m->tensors[i];
        if (g->nbytes > WEIGHTS_MAX_TENSOR_BYTES) {
            err_set(err, errlen, "tensor %u is over %llu bytes", i, WEIGHTS_MAX_TENSOR_BYTES);
            goto fail;
        }
        t->name = strndup(g->name.ptr, (size_t)g->name.len);
        if (!t->name) goto oom;
        if (strlen(t->name) != g->name.len) {
            err_set(err, errlen, "tensor %u: a NUL inside its name", i);
            goto fail;
        }
        t->type = (uint32_t)g->type;
        t->n_dims = g->n_dims;
        memcpy(t->ne, g->ne, sizeof t->ne);
        t->nbytes = g->nbytes;
        t->n_chunks = (uint32_t)((g->nbytes + m->chunk_bytes - 1) / m->chunk_bytes);
        if (t->n_chunks) {
            t->chunks = malloc((size_t)t->n_chunks * WEIGHTS_HASH_BYTES);
            if (!t->chunks) goto oom;
        }
        n_chunks += t->n_chunks;
    }
    if (n_chunks > INT_MAX) {
        err_set(err, errlen, "%zu chunks are too many", n_chunks);
        goto fail;
    }
    /* One flat list of pieces, so that threads share the work across tensors. */
    offsets = malloc((n_chunks ? n_chunks : 1) * sizeof *offsets);
    lens = malloc((n_chunks ? n_chunks : 1) * sizeof *lens);
    hashes = malloc((n_chunks ? n_chunks : 1) * sizeof *hashes);
    if (!offsets || !lens || !hashes) goto oom;
    size_t k = 0;
    uint64_t total = 0;
    for (uint32_t i = 0; i < m->n_tensors; i++) {
        const weights_tensor *t = &m->tensors[i];
        uint64_t at = (uint64_t)((const uint8_t *)f->tensors[i].data - f->base);
        for (uint32_t c = 0; c < t->n_chunks; c++, k++) {
            offsets[k] = at + weights_chunk_offset(m, c);
            lens[k] = weights_chunk_len(m, t, c);
            total += lens[k];
        }
    }
    /* pread rather than the mapping: no page faults (twice as fast here),
     * and a file cut short meanwhile is a read error, not a SIGBUS. */
    int rc = weights_hash_pieces(f->fd, f->fd >= 0 ? NULL : f->base, n_chunks, offsets, lens, hashes, n_threads,
                                 cancel);
    if (rc < 0) {
        err_set(err, errlen, rc == -1 ? "hashing cancelled" : "read error (file changed or out of memory)");
        goto fail;
    }
    k = 0;
    for (uint32_t i = 0; i < m->n_tensors; i++) {
        weights_tensor *t = &m->tensors[i];
        memcpy(t->chunks, hashes + k, (size_t)t->n_chunks * WEIGHTS_HASH_BYTES);
        k += t->n_chunks;
    }
    if (bytes_hashed) *bytes_hashed = total;
    if (weights_manifest_finish(m, 1, err, errlen) < 0) goto fail;
    free(offsets);
    free(lens);
    free(hashes);
    return m;
oom:
    err_set(err, errlen, "out of memory");
fail:
    free(offsets);
    free(lens);
    free(hashes);
    weights_manifest_free(m);
    return NULL;
}

weights_manifest *weights_manifest_compute(const char *path, int n_threads, const atomic_int *cancel,
                                           uint64_t *bytes_hashed, char *err, size_t errlen)
{
    char why[512];
    gguf_file *f = gguf_open(path, why, sizeof why);
    if (!f) {
        err_set(err, errlen, "%s: %s", path, why);
        return NULL;
    }
    weights_manifest *m = weights_manifest_from_gguf(f, n_threads, cancel, bytes_hashed, why, sizeof why);
    if (!m) err_set(err, errlen, "%s: %s", path, why);
    gguf_close(f);
    return m;
}

/* ---- parts ----------------------------------------------------------------------------*/

int weights_select(const weights_manifest *m, int first, int end, int head, uint8_t *wanted,
                   char *err, size_t errlen)
{
    if (first < 0 || end < first || end > m->n_layers || (first == end && !head)) {
        err_set(err, errlen, "layers [%d, %d)%s are not a part of a model of %d layers", first, end,
                head ? " with the head" : "", m->n_layers);
        return -1;
    }
    int n = 0;
    for (uint32_t i = 0; i < m->n_tensors; i++) {
        const weights_tensor *t = &m->tensors[i];
        int in = t->role == WEIGHTS_ROLE_SHARED || (t->role == WEIGHTS_ROLE_HEAD && head) ||
                 (t->role == WEIGHTS_ROLE_LAYER && t->layer >= first && t->layer < end);
        wanted[i] = (uint8_t)in;
        n += in;
    }
    return n;
}

int weights_part_layout(const weights_manifest *m, const uint8_t *wanted, uint8_t **header,
                        size_t *header_len, uint64_t *data_offsets, uint64_t *file_size, char *err,
                        size_t errlen)
{
    uint8_t *buf;
    gguf_file *g = meta_open(m, &buf, err, errlen);
    if (!g) return -1;
    gguf_write *w = gguf_write_new();
    uint64_t *offs = malloc(m->n_tensors * sizeof *offs);
    int rc = -1;
    if (!w || !offs) {
        err_set(err, errlen, "out of memory");
        goto out;
    }
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (gguf_write_copy_kv(w, &g->kv[i], err, errlen) < 0) goto out;
    size_t n = 0;
    for (uint32_t i = 0; i < m->n_tensors; i++) {
        const weights_tensor *t = &m->tensors[i];
        if (!wanted[i]) continue;
        gguf_str name = {t->name, strlen(t->name)};
        if (gguf_write_add_tensor(w, name, t->n_dims, t->ne, (ggml_type)t->type, err, errlen) < 0) goto out;
        n++;
    }
    if (gguf_write_layout(w, header, header_len, offs, file_size, err, errlen) < 0) goto out;
    n = 0;
    for (uint32_t i = 0; i < m->n_tensors; i++)
        if (wanted[i]) data_offsets[i] = offs[n++];
    rc = 0;
out:
    free(offs);
    gguf_write_free(w);
    meta_close(g, buf);
    return rc;
}

/* ---- hex ----------------------------------------------------------------------------------*/

void weights_hex(const uint8_t hash[WEIGHTS_HASH_BYTES], char out[WEIGHTS_HASH_HEX])
{
    hex_encode(hash, WEIGHTS_HASH_BYTES, out);
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int weights_parse_hex(const char *hex, uint8_t out[WEIGHTS_HASH_BYTES])
{
    if (!hex || strlen(hex) != 2 * WEIGHTS_HASH_BYTES) return -1;
    for (int i = 0; i < WEIGHTS_HASH_BYTES; i++) {
        int hi = hex_digit(hex[2 * i]), lo = hex_digit(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}
