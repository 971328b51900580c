/* tunnel.h: API requests carried over the mesh (stream type HTTP_TUNNEL).
 *
 * The entry node sends the request (method, path, body) as frames and
 * finishes its side; the host node runs it through the handler registered
 * with tunnel_register (its API) and sends the response back as frames
 * (status and content type, then body chunks), finishing its side at the
 * end. Body bytes pass through untouched, so a streamed (SSE) answer reaches
 * the client exactly as the host wrote it. Frame layout: docs/PROTOCOL.md,
 * "HTTP tunnel".
 *
 * Dependency direction: router.c (entry side: tunnel_forward, tunnel_abort)
 * and api.c (host side: tunnel_register) call the tunnel. The tunnel calls
 * nothing else in serve/ but openai_error_json (its 502 body): it answers
 * through the api_sink it is given and reaches the API through the
 * tunnel_handler it is given, so api.h is only a source of types here (the
 * sink, the body bound).
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

/* What the host side runs a request with. handle answers through sink and
 * returns a handle while the answer is still being produced, or NULL once
 * sink->end was called; abort takes that handle when the entry node goes
 * away first (no sink call follows). ctx is handle's first argument. */
typedef struct {
    void *(*handle)(void *ctx, const char *method, const char *path, const char *body,
                    size_t body_len, api_sink *sink);
    void (*abort)(void *call);
    void *ctx;
} tunnel_handler;

/* Serves incoming tunnel streams with handler, which must outlive the mesh's
 * streams (the tunnel keeps the pointer). */
void tunnel_register(struct mesh *m, const tunnel_handler *handler);

/* ---- frame decoding (pure: any thread; tests/fuzz/fuzz_tunnel.c) ---------*/

#define TUNNEL_MAX_METHOD 16     /* bytes with the NUL */
#define TUNNEL_MAX_PATH 1024     /* bytes with the NUL */
#define TUNNEL_MAX_TYPE 128      /* bytes of a response's content type kept, with the NUL */

/* The host side's request as its frames arrive: one REQUEST_HEAD, then any
 * number of BODY frames (at most API_MAX_BODY bytes in all). */
typedef struct {
    char method[TUNNEL_MAX_METHOD];
    char path[TUNNEL_MAX_PATH];
    int have_head;
    char *body;                  /* malloc'ed; NULL while empty */
    size_t body_len, body_cap;
} tunnel_request;

/* Takes one frame of the request. 0, or -1 with *why when the peer broke
 * the protocol (a malformed or second head, a body before the head, an
 * unknown kind, too much body, out of memory): the stream is to be
 * dropped. The head's method and path are non-empty, NUL-free and
 * NUL-terminated. */
int tunnel_request_feed(tunnel_request *r, const uint8_t *p, size_t len, const char **why);
/* Frees the body; r may be fed again from zero after tunnel_request_init. */
void tunnel_request_free(tunnel_request *r);
static inline void tunnel_request_init(tunnel_request *r) { *r = (tunnel_request){0}; }

/* Decodes a RESPONSE_HEAD frame (the entry side): 0 with the status
 * (100-599) and the content type (NUL-free, NUL-terminated, cut to
 * TUNNEL_MAX_TYPE - 1 bytes); -1 when p is not a well-formed head. */
int tunnel_decode_response_head(const uint8_t *p, size_t len, int *status, char type[TUNNEL_MAX_TYPE]);

#endif
