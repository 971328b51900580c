/* fuzz_tunnel.c: the HTTP tunnel's frame decoders (serve/tunnel.h) on
 * arbitrary frame sequences, as a peer can send them: the host side's
 * request assembly (tunnel_request_feed: head, then body frames) and the
 * entry side's response head (tunnel_decode_response_head).
 *
 * Input: frames, each a 2-byte big-endian length then that many bytes (a
 * short last one is cut to what is left). Every frame goes to the request
 * until it refuses one, and each is also decoded as a response head.
 * Checks: a request's method and path are non-empty, NUL-free and
 * terminated, its body is exactly the BODY frames' bytes in order, a
 * refusal says why, and a decoded head has a status in 100-599 and a
 * NUL-free type no longer than TUNNEL_MAX_TYPE - 1 bytes.
 * Seeds: tests/fuzz/corpus/tunnel; dictionary tests/fuzz/dict/tunnel.dict. */
#include <stdlib.h>
#include <string.h>

#include "serve/tunnel.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tunnel_request r;
    tunnel_request_init(&r);
    int refused = 0;
    size_t body_seen = 0;
    while (size >= 2) {
        size_t len = ((size_t)data[0] << 8) | data[1];
        data += 2;
        size -= 2;
        if (len > size) len = size;
        /* A copy of exactly len bytes, so ASan sees any read past the frame. */
        uint8_t *frame = malloc(len ? len : 1);
        if (!frame) break;
        memcpy(frame, data, len);

        int status = 0;
        char type[TUNNEL_MAX_TYPE];
        if (tunnel_decode_response_head(frame, len, &status, type) == 0) {
            size_t n = strlen(type);
            if (status < 100 || status > 599 || n >= TUNNEL_MAX_TYPE || n > len - 3 ||
                memcmp(type, frame + 3, n) != 0)
                abort();
        }

        if (!refused) {
            const char *why = NULL;
            int had_head = r.have_head;
            if (tunnel_request_feed(&r, frame, len, &why) != 0) {
                if (!why) abort();
                refused = 1;
            } else if (!had_head) {
                size_t ml = strlen(r.method), pl = strlen(r.path);
                if (!r.have_head || frame[0] != TUNNEL_REQUEST_HEAD || ml == 0 || ml >= TUNNEL_MAX_METHOD ||
                    pl == 0 || pl >= TUNNEL_MAX_PATH || len != ml + pl + 3 || memcmp(r.method, frame + 1, ml) ||
                    memcmp(r.path, frame + 2 + ml, pl))
                    abort();
            } else {
                /* A body frame: its bytes appended, nothing else moved. */
                if (frame[0] != TUNNEL_BODY || r.body_len != body_seen + len - 1 ||
                    (len > 1 && memcmp(r.body + body_seen, frame + 1, len - 1)))
                    abort();
                body_seen = r.body_len;
            }
        }
        free(frame);
        data += len;
        size -= len;
    }
    tunnel_request_free(&r);
    return 0;
}
