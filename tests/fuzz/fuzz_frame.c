/* fuzz_frame.c: the frame reader on arbitrary bytes cut at arbitrary places.
 * Input: byte 0 picks the bound (small, so oversize paths are reached), byte 1
 * the chunk size; the rest is the stream. Frames must come out within the
 * bound and account for every byte until an error. */
#include <stdlib.h>
#include <string.h>

#include "mesh/frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    uint32_t max = (uint32_t)data[0] * 64;
    size_t chunk = (size_t)data[1] + 1;
    data += 2;
    size -= 2;
    frame_reader r;
    frame_reader_init(&r, max);
    size_t consumed = 0, framed = 0;
    for (size_t off = 0; off < size; off += chunk) {
        size_t n = size - off < chunk ? size - off : chunk;
        uint8_t *copy = malloc(n);   /* exact-size copy: overreads show under ASan */
        if (!copy) break;
        memcpy(copy, data + off, n);
        const uint8_t *p = copy;
        size_t len = n;
        frame_status st;
        const uint8_t *payload;
        size_t plen;
        while ((st = frame_reader_next(&r, &p, &len, &payload, &plen)) == FRAME_READY) {
            if (plen > max) abort();
            volatile uint8_t sink = 0;
            for (size_t i = 0; i < plen; i++) sink ^= payload[i];
            (void)sink;
            framed += FRAME_HEADER_BYTES + plen;
        }
        consumed += n - len;
        free(copy);
        if (st == FRAME_ERROR) break;
        if (len != 0) abort();
    }
    if (!r.error && consumed != size) abort();
    if (framed > consumed) abort();
    frame_reader_free(&r);
    return 0;
}
