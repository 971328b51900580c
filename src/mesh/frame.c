/* frame.c: see frame.h. */
#include "mesh/frame.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* A buffer bigger than this is freed once its frame was delivered, so an idle
 * stream that once carried one large frame does not keep megabytes. */
#define FRAME_KEEP_BUFFER (64u << 10)

void frame_reader_init(frame_reader *r, uint32_t max)
{
    memset(r, 0, sizeof *r);
    r->max = max;
}

void frame_reader_free(frame_reader *r)
{
    free(r->buf);
    r->buf = NULL;
    r->cap = 0;
}

int frame_reader_idle(const frame_reader *r) { return r->header_got == 0 && !r->error; }

void frame_header_encode(uint8_t out[FRAME_HEADER_BYTES], uint32_t len)
{
    out[0] = (uint8_t)(len >> 24);
    out[1] = (uint8_t)(len >> 16);
    out[2] = (uint8_t)(len >> 8);
    out[3] = (uint8_t)len;
}

/* Grows buf to hold at least want bytes, doubling but never past the frame. */
static int frame_reader_reserve(frame_reader *r, size_t want)
{
    if (want <= r->cap) return 0;
    size_t cap = r->cap ? r->cap : 4096;
    while (cap < want) cap *= 2;
    if (cap > r->need) cap = r->need;
    uint8_t *grown = realloc(r->buf, cap);
    if (!grown) return -1;
    r->buf = grown;
    r->cap = cap;
    return 0;
}

frame_status frame_reader_next(frame_reader *r, const uint8_t **data, size_t *len,
                               const uint8_t **payload, size_t *payload_len)
{
    if (r->error) return FRAME_ERROR;
    if (r->release) {
        frame_reader_free(r);
        r->release = 0;
    }
    if (r->header_got < FRAME_HEADER_BYTES) {
        size_t n = FRAME_HEADER_BYTES - r->header_got;
        if (n > *len) n = *len;
        if (n) {
            memcpy(r->header + r->header_got, *data, n);
            r->header_got += (unsigned)n;
            *data += n;
            *len -= n;
        }
        if (r->header_got < FRAME_HEADER_BYTES) return FRAME_NEED_MORE;
        r->need = (uint32_t)r->header[0] << 24 | (uint32_t)r->header[1] << 16 |
                  (uint32_t)r->header[2] << 8 | r->header[3];
        r->got = 0;
        if (r->need > r->max) {
            r->error = "frame longer than the bound for this stream";
            return FRAME_ERROR;
        }
    }
    /* The common case: the whole payload is in this chunk; hand it out in
     * place, no copy. */
    if (r->got == 0 && *len >= r->need) {
        *payload = *data;
        *payload_len = r->need;
        if (r->need) {
            *data += r->need;
            *len -= r->need;
        }
        r->header_got = 0;
        return FRAME_READY;
    }
    size_t n = r->need - r->got;
    if (n > *len) n = *len;
    if (frame_reader_reserve(r, r->got + n) != 0) {
        r->error = "out of memory reassembling a frame";
        return FRAME_ERROR;
    }
    if (n) {
        memcpy(r->buf + r->got, *data, n);
        r->got += n;
        *data += n;
        *len -= n;
    }
    if (r->got < r->need) return FRAME_NEED_MORE;
    assert(r->got == r->need);
    *payload = r->buf;
    *payload_len = r->need;
    r->header_got = 0;
    r->got = 0;
    r->release = r->cap > FRAME_KEEP_BUFFER;
    return FRAME_READY;
}
