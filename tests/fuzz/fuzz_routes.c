/* fuzz_routes.c: a passive client reading a routing-table answer. The input
 * is a sequence of frames, each a 2-byte big-endian length and its bytes (the
 * stream layer's framing is fuzzed in fuzz_frame). */
#include <stdlib.h>
#include <string.h>

#include "mesh/routes.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    routes_reply r;
    routes_reply_init(&r);
    int rc = 0, frames = 0;
    while (size >= 2 && rc == 0) {
        size_t len = (size_t)data[0] << 8 | data[1];
        data += 2;
        size -= 2;
        if (len > size) len = size;
        rc = routes_reply_add(&r, data, len);
        if (rc != 0 && rc != 1 && rc != -1) abort();
        data += len;
        size -= len;
        frames++;
    }
    /* Invariants: every record kept verifies and appears once; a complete
     * answer counted every record frame; an error says why. */
    if (r.n > r.cap || r.n + r.dups > ROUTES_MAX_RECORDS) abort();
    for (int i = 0; i < r.n; i++)
        for (int j = i + 1; j < r.n; j++)
            if (!memcmp(r.recs[i].id, r.recs[j].id, MESH_ID_BYTES)) abort();
    if (rc == 1 && (!r.done || r.n + r.dups != frames - 1)) abort();
    if (rc == -1 && !r.error[0]) abort();
    (void)routes_is_get(data, size);
    routes_reply_free(&r);
    return 0;
}
