/* tunnel.h: API requests carried over the mesh (stream type HTTP_TUNNEL).
 *
 * The entry node sends the request (method, path, body) as frames and
 * finishes its side; the host node runs it through its own api_handle and
 * sends the response back as frames (status and content type, then body
 * chunks), finishing its side at the end. Body bytes pass through untouched,
 * so a streamed (SSE) answer reaches the client exactly as the host wrote it.
 * Frame layout: docs/PROTOCOL.md, "HTTP tunnel".
 *
 * Threading: event-loop thread only. */
#ifndef LLMESH_TUNNEL_H
#define LLMESH_TUNNEL_H

#include <stddef.h>
#include <stdint.h>

#include "serve/api.h"

struct mesh;

/* Frame kinds, the first byte of each tunnel frame. */
enum {
    TUNNEL_REQUEST_HEAD = 'H',  /* method NUL path NUL */
    TUNNEL_BODY = 'B',          /* body bytes, either direction */
    TUNNEL_RESPONSE_HEAD = 'S', /* u16 big-endian status, content type */
};

typedef struct tunnel_call tunnel_call;

/* Forwards a request to peer. The answer arrives through sink; end is always
 * called (with a 502 error body if the peer fails before answering) unless
 * the call is aborted. NULL with err when no stream could be opened. */
tunnel_call *tunnel_forward(struct mesh *m, const uint8_t *peer_id, const char *method,
                            const char *path, const char *body, size_t body_len,
                            api_sink *sink, char *err, size_t errlen);
/* Stops the call: the stream is reset, the sink is not touched again. */
void tunnel_abort(tunnel_call *c);

/* Serves incoming tunnel streams with a. */
void tunnel_register(struct mesh *m, api *a);

#endif
