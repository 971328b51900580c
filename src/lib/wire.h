/* wire.h: big-endian fields in a byte buffer, read and written with bounds.
 *
 * Message codecs (model plans, stage frames) read a peer's bytes through a
 * wire_reader: every read past the end returns zero and sets `bad` instead
 * of touching memory, so a decoder reads all its fields first and checks
 * `bad` (and its own range rules) once, rather than testing each length.
 * A wire_writer does the same for output: writing past `cap` sets
 * `overflow` and writes nothing. All inline, no allocation.
 *
 * Not here: framing (mesh/frame.h) or what the fields mean. */
#ifndef LLMESH_WIRE_H
#define LLMESH_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    const uint8_t *p;
    size_t len, at;
    int bad;            /* a read went past the end */
} wire_reader;

typedef struct {
    uint8_t *p;
    size_t cap, len;
    int overflow;       /* a write did not fit */
} wire_writer;

static inline wire_reader wire_reader_of(const void *p, size_t len)
{
    wire_reader r = {(const uint8_t *)p, len, 0, 0};
    return r;
}

static inline size_t wire_left(const wire_reader *r) { return r->bad ? 0 : r->len - r->at; }

/* n bytes at the read position (advanced), or NULL (and bad) when fewer are left. */
static inline const uint8_t *wire_bytes(wire_reader *r, size_t n)
{
    if (r->bad || n > r->len - r->at) {
        r->bad = 1;
        return NULL;
    }
    const uint8_t *q = r->p + r->at;
    r->at += n;
    return q;
}

static inline uint64_t wire_uint(wire_reader *r, int n)
{
    const uint8_t *q = wire_bytes(r, (size_t)n);
    uint64_t v = 0;
    for (int i = 0; q && i < n; i++) v = v << 8 | q[i];
    return v;
}

static inline uint8_t wire_u8(wire_reader *r) { return (uint8_t)wire_uint(r, 1); }
static inline uint16_t wire_u16(wire_reader *r) { return (uint16_t)wire_uint(r, 2); }
static inline uint32_t wire_u32(wire_reader *r) { return (uint32_t)wire_uint(r, 4); }
static inline uint64_t wire_u64(wire_reader *r) { return wire_uint(r, 8); }

/* A string of u8 length into out (cap bytes with the NUL); bad when it does
 * not fit or holds a NUL. */
static inline void wire_str8(wire_reader *r, char *out, size_t cap)
{
    size_t n = wire_u8(r);
    const uint8_t *q = wire_bytes(r, n);
    if (!q || n >= cap || memchr(q, 0, n)) {
        r->bad = 1;
        out[0] = 0;
        return;
    }
    memcpy(out, q, n);
    out[n] = 0;
}

static inline wire_writer wire_writer_of(void *p, size_t cap)
{
    wire_writer w = {(uint8_t *)p, cap, 0, 0};
    return w;
}

static inline void wire_put_bytes(wire_writer *w, const void *data, size_t n)
{
    if (w->overflow || n > w->cap - w->len) {
        w->overflow = 1;
        return;
    }
    if (n) memcpy(w->p + w->len, data, n);
    w->len += n;
}

static inline void wire_put_uint(wire_writer *w, uint64_t v, int n)
{
    uint8_t b[8];
    for (int i = n - 1; i >= 0; i--, v >>= 8) b[i] = (uint8_t)v;
    wire_put_bytes(w, b, (size_t)n);
}

static inline void wire_put_u8(wire_writer *w, uint8_t v) { wire_put_uint(w, v, 1); }
static inline void wire_put_u16(wire_writer *w, uint16_t v) { wire_put_uint(w, v, 2); }
static inline void wire_put_u32(wire_writer *w, uint32_t v) { wire_put_uint(w, v, 4); }
static inline void wire_put_u64(wire_writer *w, uint64_t v) { wire_put_uint(w, v, 8); }

/* A string of at most 255 bytes with a u8 length; longer is an overflow. */
static inline void wire_put_str8(wire_writer *w, const char *s)
{
    size_t n = strlen(s);
    if (n > 255) {
        w->overflow = 1;
        return;
    }
    wire_put_u8(w, (uint8_t)n);
    wire_put_bytes(w, s, n);
}

#endif
