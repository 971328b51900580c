/* fetch_wire.c: see fetch_wire.h; the byte tables are in docs/PROTOCOL.md,
 * section 14. Integers are big-endian, as everywhere on the wire. */
#include "models/fetch_wire.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "lib/err.h"
#include "mesh/frame.h"

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)(v >> 32));
    put32(p + 4, (uint32_t)v);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) << 32 | get32(p + 4); }

/* ---- requests -----------------------------------------------------------------------*/

void fetch_open_encode(uint8_t out[FETCH_OPEN_BYTES], const uint8_t hash[WEIGHTS_HASH_BYTES],
                       uint32_t first, uint32_t end, uint8_t flags)
{
    out[0] = FETCH_OPEN;
    memcpy(out + 1, hash, WEIGHTS_HASH_BYTES);
    put32(out + 33, first);
    put32(out + 37, end);
    out[41] = flags;
}

void fetch_get_encode(uint8_t out[FETCH_GET_BYTES], uint32_t tensor, uint32_t chunk)
{
    out[0] = FETCH_GET;
    put32(out + 1, tensor);
    put32(out + 5, chunk);
}

void fetch_file_open_encode(uint8_t out[FETCH_FILE_OPEN_BYTES], const uint8_t sha256[32])
{
    out[0] = FETCH_FILE_OPEN;
    memcpy(out + 1, sha256, 32);
}

void fetch_file_get_encode(uint8_t out[FETCH_FILE_GET_BYTES], uint64_t offset, uint32_t length)
{
    out[0] = FETCH_FILE_GET;
    put64(out + 1, offset);
    put32(out + 9, length);
}

int fetch_request_decode(const uint8_t *p, size_t len, fetch_request *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (len == 0) {
        err_set(err, errlen, "empty frame");
        return -1;
    }
    out->kind = p[0];
    if (p[0] == FETCH_OPEN) {
        if (len != FETCH_OPEN_BYTES) goto size;
        memcpy(out->hash, p + 1, WEIGHTS_HASH_BYTES);
        out->first = get32(p + 33);
        out->end = get32(p + 37);
        out->flags = p[41];
        if (out->flags & ~(FETCH_FLAG_HEAD | FETCH_FLAG_NO_MANIFEST)) {
            err_set(err, errlen, "OPEN with unknown flags 0x%02x", out->flags);
            return -1;
        }
        return 0;
    }
    if (p[0] == FETCH_GET) {
        if (len != FETCH_GET_BYTES) goto size;
        out->tensor = get32(p + 1);
        out->chunk = get32(p + 5);
        return 0;
    }
    if (p[0] == FETCH_FILE_OPEN) {
        if (len != FETCH_FILE_OPEN_BYTES) goto size;
        memcpy(out->sha256, p + 1, 32);
        return 0;
    }
    if (p[0] == FETCH_FILE_GET) {
        if (len != FETCH_FILE_GET_BYTES) goto size;
        out->offset = get64(p + 1);
        out->length = get32(p + 9);
        if (out->length == 0 || out->length > FETCH_FILE_PIECE || out->offset > FETCH_FILE_MAX_SIZE) {
            err_set(err, errlen, "FILE_GET of %u bytes at %llu", out->length, (unsigned long long)out->offset);
            return -1;
        }
        return 0;
    }
    err_set(err, errlen, "unknown request kind 0x%02x", p[0]);
    return -1;
size:
    err_set(err, errlen, "request kind 0x%02x of %zu bytes", p[0], len);
    return -1;
}

/* ---- answers ---------------------------------------------------------------------------*/

void fetch_data_head_encode(uint8_t out[FETCH_DATA_HEAD], uint32_t tensor, uint32_t chunk)
{
    out[0] = FETCH_DATA;
    put32(out + 1, tensor);
    put32(out + 5, chunk);
}

void fetch_file_info_encode(uint8_t out[FETCH_FILE_INFO_BYTES], const uint8_t sha256[32], uint64_t size)
{
    out[0] = FETCH_FILE_INFO;
    memcpy(out + 1, sha256, 32);
    put64(out + 33, size);
}

void fetch_file_data_head_encode(uint8_t out[FETCH_FILE_DATA_HEAD], uint64_t offset)
{
    out[0] = FETCH_FILE_DATA;
    put64(out + 1, offset);
}

size_t fetch_error_encode(uint8_t out[2 + FETCH_ERROR_TEXT_MAX], uint8_t code, const char *text)
{
    size_t n = strlen(text);
    if (n > FETCH_ERROR_TEXT_MAX) n = FETCH_ERROR_TEXT_MAX;
    out[0] = FETCH_ERROR;
    out[1] = code;
    memcpy(out + 2, text, n);
    return 2 + n;
}

int fetch_answer_decode(const uint8_t *p, size_t len, fetch_answer *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (len == 0) {
        err_set(err, errlen, "empty frame");
        return -1;
    }
    out->kind = p[0];
    out->data = p;
    out->len = len;
    switch (p[0]) {
    case FETCH_HEAD: case FETCH_META: case FETCH_TENSORS: case FETCH_HASHES:
        return 0;
    case FETCH_READY:
        if (len != 1) break;
        return 0;
    case FETCH_DATA:
        if (len <= FETCH_DATA_HEAD) break;
        out->tensor = get32(p + 1);
        out->chunk = get32(p + 5);
        out->data = p + FETCH_DATA_HEAD;
        out->len = len - FETCH_DATA_HEAD;
        return 0;
    case FETCH_FILE_INFO:
        if (len != FETCH_FILE_INFO_BYTES) break;
        memcpy(out->sha256, p + 1, 32);
        out->size = get64(p + 33);
        if (out->size > FETCH_FILE_MAX_SIZE) break;
        return 0;
    case FETCH_FILE_DATA:
        if (len <= FETCH_FILE_DATA_HEAD || len > FETCH_FILE_DATA_HEAD + FETCH_FILE_PIECE) break;
        out->offset = get64(p + 1);
        if (out->offset > FETCH_FILE_MAX_SIZE) break;
        out->data = p + FETCH_FILE_DATA_HEAD;
        out->len = len - FETCH_FILE_DATA_HEAD;
        return 0;
    case FETCH_ERROR:
        if (len < 2 || len > 2 + FETCH_ERROR_TEXT_MAX) break;
        out->code = p[1];
        for (size_t i = 2; i < len; i++)
            out->text[i - 2] = p[i] < 0x20 || p[i] == 0x7f ? '?' : (char)p[i];
        out->text[len - 2] = '\0';
        out->data = NULL;
        out->len = 0;
        return 0;
    default:
        err_set(err, errlen, "unknown answer kind 0x%02x", p[0]);
        return -1;
    }
    err_set(err, errlen, "answer kind 0x%02x of %zu bytes", p[0], len);
    return -1;
}

/* ---- manifest writer ---------------------------------------------------------------------*/

enum { W_HEAD, W_META, W_TENSORS, W_HASHES, W_DONE };

void fetch_manifest_writer_init(fetch_manifest_writer *w, const weights_manifest *m,
                                const uint8_t *with_hashes)
{
    memset(w, 0, sizeof *w);
    w->m = m;
    w->with_hashes = with_hashes;
}

/* The next tensor at or after i whose chunk hashes go out, or n_tensors. */
static uint32_t next_hashed(const fetch_manifest_writer *w, uint32_t i)
{
    while (i < w->m->n_tensors &&
           !(w->with_hashes && w->with_hashes[i] && w->m->tensors[i].n_chunks && w->m->tensors[i].chunks))
        i++;
    return i;
}

static size_t tensor_entry(const weights_tensor *t, uint8_t *out)
{
    size_t n = strlen(t->name), at = 0;
    out[at++] = (uint8_t)(n >> 8);
    out[at++] = (uint8_t)n;
    memcpy(out + at, t->name, n);
    at += n;
    put32(out + at, t->type);
    at += 4;
    out[at++] = (uint8_t)t->n_dims;
    for (uint32_t d = 0; d < t->n_dims; d++, at += 8) put64(out + at, t->ne[d]);
    put64(out + at, t->nbytes);
    at += 8;
    memcpy(out + at, t->data_hash, WEIGHTS_HASH_BYTES);
    at += WEIGHTS_HASH_BYTES;
    return at;
}

#define ENTRY_MAX (2 + WEIGHTS_MAX_NAME + 4 + 1 + 8 * GGUF_MAX_DIMS + 8 + WEIGHTS_HASH_BYTES + 1)

size_t fetch_manifest_writer_next(fetch_manifest_writer *w, uint8_t *buf, size_t cap)
{
    assert(cap >= FETCH_FRAME_BUF);
    const weights_manifest *m = w->m;
    switch (w->state) {
    case W_HEAD:
        buf[0] = FETCH_HEAD;
        memcpy(buf + 1, m->model_hash, WEIGHTS_HASH_BYTES);
        put32(buf + 33, m->chunk_bytes);
        put64(buf + 37, m->n_kv);
        put64(buf + 45, m->meta_len);
        put32(buf + 53, m->n_tensors);
        w->state = m->meta_len ? W_META : W_TENSORS;
        return FETCH_HEAD_BYTES;
    case W_META: {
        size_t n = m->meta_len - w->meta_off;
        if (n > FETCH_META_PIECE) n = FETCH_META_PIECE;
        buf[0] = FETCH_META;
        memcpy(buf + 1, m->meta + w->meta_off, n);
        w->meta_off += n;
        if (w->meta_off == m->meta_len) w->state = W_TENSORS;
        return 1 + n;
    }
    case W_TENSORS: {
        size_t at = 5;
        uint32_t count = 0;
        while (w->tensor < m->n_tensors && at + ENTRY_MAX <= FETCH_TENSORS_PIECE) {
            const weights_tensor *t = &m->tensors[w->tensor];
            at += tensor_entry(t, buf + at);
            int hashed = w->with_hashes && w->with_hashes[w->tensor] && t->chunks;
            buf[at++] = (uint8_t)hashed;
            w->tensor++;
            count++;
        }
        buf[0] = FETCH_TENSORS;
        put32(buf + 1, count);
        if (w->tensor == m->n_tensors) {
            w->tensor = next_hashed(w, 0);
            w->chunk = 0;
            w->state = w->tensor < m->n_tensors ? W_HASHES : W_DONE;
        }
        return at;
    }
    case W_HASHES: {
        const weights_tensor *t = &m->tensors[w->tensor];
        uint32_t n = t->n_chunks - w->chunk;
        if (n > FETCH_HASHES_PIECE) n = FETCH_HASHES_PIECE;
        buf[0] = FETCH_HASHES;
        put32(buf + 1, w->tensor);
        put32(buf + 5, w->chunk);
        put32(buf + 9, n);
        memcpy(buf + 13, t->chunks + w->chunk, (size_t)n * WEIGHTS_HASH_BYTES);
        w->chunk += n;
        if (w->chunk == t->n_chunks) {
            w->tensor = next_hashed(w, w->tensor + 1);
            w->chunk = 0;
            if (w->tensor == m->n_tensors) w->state = W_DONE;
        }
        return 13 + (size_t)n * WEIGHTS_HASH_BYTES;
    }
    default:
        return 0;
    }
}

/* ---- manifest reader -----------------------------------------------------------------------*/

enum { R_HEAD, R_META, R_TENSORS, R_HASHES, R_DONE, R_DEAD };

void fetch_manifest_reader_init(fetch_manifest_reader *r)
{
    memset(r, 0, sizeof *r);
}

void fetch_manifest_reader_free(fetch_manifest_reader *r)
{
    weights_manifest_free(r->m);
    free(r->flagged);
    memset(r, 0, sizeof *r);
}

int fetch_manifest_reader_complete(const fetch_manifest_reader *r) { return r->state == R_DONE; }

weights_manifest *fetch_manifest_reader_take(fetch_manifest_reader *r)
{
    if (r->state != R_DONE) return NULL;
    weights_manifest *m = r->m;
    r->m = NULL;
    return m;
}

static int reader_fail(fetch_manifest_reader *r, const char *what)
{
    snprintf(r->error, sizeof r->error, "manifest: %s", what);
    r->state = R_DEAD;
    return -1;
}

/* Capacity for need elements, doubling but never beyond max (>= need). */
static size_t grown_cap(size_t cap, size_t need, size_t max)
{
    size_t c = cap ? cap : 16;
    while (c < need) c *= 2;
    return c > max ? max : c;
}

/* Positions the hash cursor at the first tensor at or after i whose chunk
 * hashes were announced; the manifest is complete when there is none. */
static void reader_seek_hashes(fetch_manifest_reader *r, uint32_t i)
{
    const weights_manifest *m = r->m;
    while (i < m->n_tensors && !(r->flagged[i] && m->tensors[i].n_chunks)) i++;
    r->tensor = i;
    r->chunk = 0;
    r->chunks_cap = 0;
    r->state = i < m->n_tensors ? R_HASHES : R_DONE;
}

static int read_head(fetch_manifest_reader *r, const uint8_t *p, size_t len)
{
    if (len != FETCH_HEAD_BYTES) return reader_fail(r, "HEAD of the wrong size");
    weights_manifest *m = calloc(1, sizeof *m);
    if (!m) return reader_fail(r, "out of memory");
    r->m = m;
    memcpy(m->model_hash, p + 1, WEIGHTS_HASH_BYTES);
    m->chunk_bytes = get32(p + 33);
    m->n_kv = get64(p + 37);
    uint64_t meta_len = get64(p + 45);
    r->n_tensors = get32(p + 53);
    if (m->chunk_bytes < WEIGHTS_CHUNK_MIN || m->chunk_bytes > WEIGHTS_CHUNK_MAX ||
        (m->chunk_bytes & (m->chunk_bytes - 1)))
        return reader_fail(r, "chunk size out of bounds");
    if (m->n_kv > WEIGHTS_MAX_KV || meta_len > WEIGHTS_MAX_META)
        return reader_fail(r, "metadata over the bounds");
    if (r->n_tensors == 0 || r->n_tensors > WEIGHTS_MAX_TENSORS)
        return reader_fail(r, "tensor count out of bounds");
    r->meta_len = (size_t)meta_len;
    r->state = meta_len ? R_META : R_TENSORS;
    return 0;
}

static int read_meta(fetch_manifest_reader *r, const uint8_t *p, size_t len)
{
    weights_manifest *m = r->m;
    size_t n = len - 1;
    if (n == 0 || n > FETCH_META_PIECE || n > r->meta_len - m->meta_len)
        return reader_fail(r, "META piece out of bounds");
    if (m->meta_len + n > r->meta_cap) {
        size_t cap = grown_cap(r->meta_cap, m->meta_len + n, r->meta_len);
        uint8_t *q = realloc(m->meta, cap);
        if (!q) return reader_fail(r, "out of memory");
        m->meta = q;
        r->meta_cap = cap;
    }
    memcpy(m->meta + m->meta_len, p + 1, n);
    m->meta_len += n;
    if (m->meta_len == r->meta_len) r->state = R_TENSORS;
    return 0;
}

/* One entry at p[*at..len) into t. 0, or -1 with the reason in *why. */
static int read_entry(const uint8_t *p, size_t len, size_t *at_io, uint32_t chunk_bytes, weights_tensor *t,
                      uint8_t *flag, const char **why)
{
    size_t at = *at_io;
    *why = "truncated tensor entry";
    if (len - at < 2) return -1;
    size_t n = (size_t)p[at] << 8 | p[at + 1];
    at += 2;
    if (n == 0 || n > WEIGHTS_MAX_NAME || len - at < n + 4 + 1) {
        *why = "bad tensor name length";
        return -1;
    }
    if (memchr(p + at, 0, n)) {
        *why = "NUL in a tensor name";
        return -1;
    }
    t->name = malloc(n + 1);
    if (!t->name) {
        *why = "out of memory";
        return -1;
    }
    memcpy(t->name, p + at, n);
    t->name[n] = '\0';
    at += n;
    t->type = get32(p + at);
    at += 4;
    t->n_dims = p[at++];
    if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS) {
        *why = "tensor dimensions out of bounds";
        return -1;
    }
    if (len - at < 8u * t->n_dims + 8 + WEIGHTS_HASH_BYTES + 1) return -1;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) {
        t->ne[d] = 1;
        if (d < t->n_dims) {
            t->ne[d] = get64(p + at);
            at += 8;
        }
    }
    t->nbytes = get64(p + at);
    at += 8;
    if (t->nbytes > WEIGHTS_MAX_TENSOR_BYTES) {
        *why = "tensor size out of bounds";
        return -1;
    }
    uint64_t n_chunks = (t->nbytes + chunk_bytes - 1) / chunk_bytes;
    if (n_chunks > UINT32_MAX) {
        *why = "too many chunks";
        return -1;
    }
    t->n_chunks = (uint32_t)n_chunks;
    memcpy(t->data_hash, p + at, WEIGHTS_HASH_BYTES);
    at += WEIGHTS_HASH_BYTES;
    if (p[at] > 1) {
        *why = "bad tensor flags";
        return -1;
    }
    *flag = p[at++];
    *at_io = at;
    return 0;
}

static int read_tensors(fetch_manifest_reader *r, const uint8_t *p, size_t len)
{
    weights_manifest *m = r->m;
    if (len < 5) return reader_fail(r, "TENSORS frame too short");
    uint32_t count = get32(p + 1);
    if (count == 0 || count > r->n_tensors - m->n_tensors) return reader_fail(r, "TENSORS count out of bounds");
    /* Each entry takes at least 48 bytes: a forged count fails here, before
     * any allocation. */
    if (count > (len - 5) / 48) return reader_fail(r, "TENSORS count beyond the frame");
    size_t need = (size_t)m->n_tensors + count;
    if (need > r->tensors_cap) {
        size_t cap = grown_cap(r->tensors_cap, need, r->n_tensors);
        weights_tensor *t = realloc(m->tensors, cap * sizeof *t);
        if (t) m->tensors = t;
        uint8_t *f = t ? realloc(r->flagged, cap) : NULL;
        if (f) r->flagged = f;
        if (!t || !f) return reader_fail(r, "out of memory");
        r->tensors_cap = (uint32_t)cap;
    }
    size_t at = 5;
    for (uint32_t k = 0; k < count; k++) {
        weights_tensor *t = &m->tensors[m->n_tensors];
        memset(t, 0, sizeof *t);
        m->n_tensors++; /* counted at once, so that a failure below frees its name */
        const char *why;
        if (read_entry(p, len, &at, m->chunk_bytes, t, &r->flagged[m->n_tensors - 1], &why) < 0)
            return reader_fail(r, why);
    }
    if (at != len) return reader_fail(r, "bytes after the tensor entries");
    if (m->n_tensors == r->n_tensors) reader_seek_hashes(r, 0);
    return 0;
}

static int read_hashes(fetch_manifest_reader *r, const uint8_t *p, size_t len)
{
    weights_manifest *m = r->m;
    if (len < 13) return reader_fail(r, "HASHES frame too short");
    uint32_t tensor = get32(p + 1), first = get32(p + 5), count = get32(p + 9);
    weights_tensor *t = &m->tensors[r->tensor];
    if (tensor != r->tensor || first != r->chunk) return reader_fail(r, "HASHES out of order");
    if (count == 0 || count > FETCH_HASHES_PIECE || count > t->n_chunks - r->chunk)
        return reader_fail(r, "HASHES count out of bounds");
    if (len != 13 + (size_t)count * WEIGHTS_HASH_BYTES) return reader_fail(r, "HASHES of the wrong size");
    size_t need = (size_t)r->chunk + count;
    if (need > r->chunks_cap) {
        size_t cap = grown_cap(r->chunks_cap, need, t->n_chunks);
        void *q = realloc(t->chunks, cap * WEIGHTS_HASH_BYTES);
        if (!q) return reader_fail(r, "out of memory");
        t->chunks = q;
        r->chunks_cap = (uint32_t)cap;
    }
    memcpy(t->chunks + r->chunk, p + 13, (size_t)count * WEIGHTS_HASH_BYTES);
    r->chunk += count;
    if (r->chunk == t->n_chunks) reader_seek_hashes(r, r->tensor + 1);
    return 0;
}

int fetch_manifest_reader_feed(fetch_manifest_reader *r, const uint8_t *p, size_t len)
{
    if (r->state == R_DEAD) return -1;
    if (r->state == R_DONE) return reader_fail(r, "frame after the end");
    if (len == 0) return reader_fail(r, "empty frame");
    static const uint8_t expected[] = {FETCH_HEAD, FETCH_META, FETCH_TENSORS, FETCH_HASHES};
    if (p[0] != expected[r->state]) return reader_fail(r, "frame out of order");
    int rc;
    switch (r->state) {
    case R_HEAD: rc = read_head(r, p, len); break;
    case R_META: rc = read_meta(r, p, len); break;
    case R_TENSORS: rc = read_tensors(r, p, len); break;
    default: rc = read_hashes(r, p, len); break;
    }
    if (rc < 0) return -1;
    return r->state == R_DONE;
}

/* ---- holdings ------------------------------------------------------------------------------*/

size_t fetch_holdings_encode(const fetch_holding *h, int n, uint8_t *out, size_t cap)
{
    assert(n >= 0 && n <= FETCH_MAX_HOLDINGS);
    size_t len = 2 + (size_t)n * FETCH_HOLDING_BYTES;
    if (len > cap) return 0;
    out[0] = FETCH_HOLDINGS_FORMAT;
    out[1] = (uint8_t)n;
    uint8_t *p = out + 2;
    for (int i = 0; i < n; i++, p += FETCH_HOLDING_BYTES) {
        memcpy(p, h[i].hash, WEIGHTS_HASH_BYTES);
        put32(p + 32, h[i].first);
        put32(p + 36, h[i].end);
        p[40] = h[i].flags;
    }
    return len;
}

int fetch_holdings_decode(const uint8_t *p, size_t len, fetch_holding *out, int max, char *err, size_t errlen)
{
    if (len == 0) return 0;
    if (len < 2 || p[0] != FETCH_HOLDINGS_FORMAT) {
        err_set(err, errlen, "holdings of format %d (this node reads %d)", len ? p[0] : -1, FETCH_HOLDINGS_FORMAT);
        return -1;
    }
    int n = p[1];
    if (n > FETCH_MAX_HOLDINGS || len != 2 + (size_t)n * FETCH_HOLDING_BYTES) {
        err_set(err, errlen, "holdings of %d entries in %zu bytes (at most %d, %d bytes each)", n, len,
                FETCH_MAX_HOLDINGS, FETCH_HOLDING_BYTES);
        return -1;
    }
    int kept = 0;
    for (int i = 0; i < n; i++) {
        const uint8_t *e = p + 2 + (size_t)i * FETCH_HOLDING_BYTES;
        fetch_holding h;
        memcpy(h.hash, e, WEIGHTS_HASH_BYTES);
        h.first = get32(e + 32);
        h.end = get32(e + 36);
        h.flags = e[40];
        if (h.flags & ~(FETCH_HOLD_HEAD | FETCH_HOLD_FULL)) {
            err_set(err, errlen, "holding %d: unknown flags 0x%02x", i, h.flags);
            return -1;
        }
        if (h.first > h.end || h.end > WEIGHTS_MAX_LAYERS || (h.first == h.end && !(h.flags & FETCH_HOLD_HEAD))) {
            err_set(err, errlen, "holding %d: layers [%u, %u) are not a part of a model", i, h.first, h.end);
            return -1;
        }
        if (kept < max) out[kept++] = h;
    }
    return kept;
}

int fetch_holding_covers(const fetch_holding *h, const uint8_t hash[WEIGHTS_HASH_BYTES], uint32_t first,
                         uint32_t end, int head)
{
    return !memcmp(h->hash, hash, WEIGHTS_HASH_BYTES) && h->first <= first && end <= h->end &&
           (!head || (h->flags & FETCH_HOLD_HEAD));
}

/* ---- manifest files ------------------------------------------------------------------------*/

typedef struct {
    uint8_t *p;
    size_t len, cap;
} fbuf;

static int fbuf_put(fbuf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) cap *= 2;
        uint8_t *q = realloc(b->p, cap);
        if (!q) return -1;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    return 0;
}

static int fbuf_frame(fbuf *b, const uint8_t *payload, size_t n)
{
    uint8_t head[FRAME_HEADER_BYTES];
    frame_header_encode(head, (uint32_t)n);
    return fbuf_put(b, head, sizeof head) < 0 || fbuf_put(b, payload, n) < 0 ? -1 : 0;
}

#define KEY_FIXED (1 + 4 * 8 + 2)

uint8_t *fetch_manifest_file_encode(const weights_manifest *m, const uint8_t *with_hashes,
                                    const fetch_file_key *key, size_t *len)
{
    fbuf b = {0};
    uint8_t *frame = malloc(FETCH_FRAME_BUF);
    if (!frame) return NULL;
    size_t plen = strnlen(key->path, sizeof key->path - 1);
    frame[0] = FETCH_KEY;
    put64(frame + 1, key->size);
    put64(frame + 9, key->mtime_ns);
    put64(frame + 17, key->inode);
    put64(frame + 25, key->device);
    frame[33] = (uint8_t)(plen >> 8);
    frame[34] = (uint8_t)plen;
    memcpy(frame + KEY_FIXED, key->path, plen);
    int bad = fbuf_put(&b, FETCH_FILE_MAGIC, 8) < 0 || fbuf_frame(&b, frame, KEY_FIXED + plen) < 0;
    fetch_manifest_writer w;
    fetch_manifest_writer_init(&w, m, with_hashes);
    size_t n;
    while (!bad && (n = fetch_manifest_writer_next(&w, frame, FETCH_FRAME_BUF)) > 0)
        bad = fbuf_frame(&b, frame, n) < 0;
    free(frame);
    if (bad) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}

weights_manifest *fetch_manifest_file_decode(const uint8_t *p, size_t len, fetch_file_key *key,
                                             char *err, size_t errlen)
{
    if (len < 8 || memcmp(p, FETCH_FILE_MAGIC, 8) != 0) {
        err_set(err, errlen, "not a manifest file");
        return NULL;
    }
    size_t at = 8;
    int frames = 0, rc = 0;
    fetch_manifest_reader r;
    fetch_manifest_reader_init(&r);
    memset(key, 0, sizeof *key);
    while (at < len) {
        if (len - at < FRAME_HEADER_BYTES) goto truncated;
        size_t n = get32(p + at);
        at += FRAME_HEADER_BYTES;
        if (n > len - at) goto truncated;
        const uint8_t *f = p + at;
        at += n;
        if (frames++ == 0) {
            size_t plen = n >= KEY_FIXED ? (size_t)f[33] << 8 | f[34] : 0;
            if (n < KEY_FIXED || f[0] != FETCH_KEY || n != KEY_FIXED + plen || plen >= sizeof key->path ||
                memchr(f + KEY_FIXED, 0, plen)) {
                err_set(err, errlen, "bad file key");
                goto fail;
            }
            key->size = get64(f + 1);
            key->mtime_ns = get64(f + 9);
            key->inode = get64(f + 17);
            key->device = get64(f + 25);
            memcpy(key->path, f + KEY_FIXED, plen);
            key->path[plen] = '\0';
            continue;
        }
        rc = fetch_manifest_reader_feed(&r, f, n);
        if (rc < 0) {
            err_set(err, errlen, "%s", r.error);
            goto fail;
        }
    }
    if (rc != 1) goto truncated;
    weights_manifest *m = fetch_manifest_reader_take(&r);
    fetch_manifest_reader_free(&r);
    if (weights_manifest_finish(m, 0, err, errlen) < 0) {
        weights_manifest_free(m);
        return NULL;
    }
    return m;
truncated:
    err_set(err, errlen, "truncated manifest file");
fail:
    fetch_manifest_reader_free(&r);
    return NULL;
}
