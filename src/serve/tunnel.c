/* tunnel.c: API requests over HTTP_TUNNEL mesh streams. See tunnel.h and
 * docs/PROTOCOL.md ("HTTP tunnel").
 *
 * Entry side: tunnel_forward opens the stream and writes the request; the
 * response frames drive the caller's sink. Host side: tunnel_register accepts
 * streams, gathers the request, hands it to the registered handler (the
 * API's api_handle, from_peer) with a sink that turns the answer back into
 * frames. Both sides are plain state machines on the event-loop thread. */
#include "serve/tunnel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "mesh/mesh.h"
#include "serve/openai.h"

#define TUNNEL_CHUNK (256u << 10)   /* body bytes per frame */

static const char tunnel_failed_sse[] =
    "data: {\"error\":{\"message\":\"the node serving this model went away\","
    "\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\ndata: [DONE]\n\n";

/* Sends body bytes as one or more B frames. */
static int send_body(mesh_stream *s, const char *data, size_t len)
{
    uint8_t *frame = malloc(1 + (len < TUNNEL_CHUNK ? len : TUNNEL_CHUNK));
    if (!frame) return -1;
    int rc = 0;
    do {
        size_t n = len < TUNNEL_CHUNK ? len : TUNNEL_CHUNK;
        frame[0] = TUNNEL_BODY;
        memcpy(frame + 1, data, n);
        if (mesh_stream_send(s, frame, n + 1) != 0) { rc = -1; break; }
        data += n;
        len -= n;
    } while (len > 0);
    free(frame);
    return rc;
}

/* ---- entry side -----------------------------------------------------------*/

struct tunnel_call {
    mesh_stream *stream;
    api_sink *sink;
    int begun;              /* response head seen */
    int event_stream;       /* response is SSE */
    int ended;              /* sink end called */
};

static void call_fail(tunnel_call *c, const char *why)
{
    if (c->ended) return;
    c->ended = 1;
    log_warn("tunnel", "forwarded request failed: %s", why);
    if (!c->begun) {
        char *body = openai_error_json(why, "server_error", NULL);
        c->sink->ops->begin(c->sink, 502, "application/json");
        if (body) c->sink->ops->write(c->sink, body, strlen(body));
        free(body);
    } else if (c->event_stream) {
        c->sink->ops->write(c->sink, tunnel_failed_sse, sizeof tunnel_failed_sse - 1);
    }
    c->sink->ops->end(c->sink);
}

static void entry_on_frame(void *user, mesh_stream *s, const uint8_t *p, size_t len)
{
    tunnel_call *c = user;
    if (c->ended) return;
    if (len >= 1 && p[0] == TUNNEL_RESPONSE_HEAD && !c->begun) {
        int status;
        char type[TUNNEL_MAX_TYPE];
        if (tunnel_decode_response_head(p, len, &status, type) != 0) {
            call_fail(c, "peer sent a malformed response head");
            return;
        }
        c->begun = 1;
        c->event_stream = strncmp(type, "text/event-stream", 17) == 0;
        c->sink->ops->begin(c->sink, status, type);
    } else if (len >= 1 && p[0] == TUNNEL_BODY && c->begun) {
        c->sink->ops->write(c->sink, (const char *)p + 1, len - 1);
    } else {
        call_fail(c, "peer sent an unexpected tunnel frame");
    }
}

static void entry_on_fin(void *user, mesh_stream *s)
{
    tunnel_call *c = user;
    if (c->ended) return;
    if (!c->begun) {
        call_fail(c, "peer closed the tunnel without answering");
        return;
    }
    c->ended = 1;
    c->sink->ops->end(c->sink);
}

static void entry_on_close(void *user, mesh_stream *s, const char *error)
{
    tunnel_call *c = user;
    if (!c->ended) call_fail(c, error ? error : "tunnel closed early");
    free(c);
}

static const mesh_stream_handlers entry_handlers = {entry_on_frame, entry_on_fin, entry_on_close};

tunnel_call *tunnel_forward(mesh *m, const uint8_t *peer_id, const char *method, const char *path,
                            const char *body, size_t body_len, api_sink *sink, char *err, size_t errlen)
{
    size_t ml = strlen(method), pl = strlen(path);
    if (ml >= TUNNEL_MAX_METHOD || pl >= TUNNEL_MAX_PATH) {
        snprintf(err, errlen, "method or path too long to forward");
        return NULL;
    }
    tunnel_call *c = calloc(1, sizeof *c);
    if (!c) { snprintf(err, errlen, "out of memory"); return NULL; }
    c->sink = sink;
    c->stream = mesh_stream_open(m, peer_id, MESH_STREAM_HTTP_TUNNEL, &entry_handlers, c, err, errlen);
    if (!c->stream) { free(c); return NULL; }

    uint8_t head[1 + TUNNEL_MAX_METHOD + TUNNEL_MAX_PATH + 2];
    head[0] = TUNNEL_REQUEST_HEAD;
    memcpy(head + 1, method, ml + 1);
    memcpy(head + 2 + ml, path, pl + 1);
    if (mesh_stream_send(c->stream, head, ml + pl + 3) != 0 ||
        (body_len && send_body(c->stream, body, body_len) != 0)) {
        mesh_stream_abort(c->stream);
        free(c);
        snprintf(err, errlen, "could not queue the request on the tunnel");
        return NULL;
    }
    mesh_stream_finish(c->stream);
    return c;
}

void tunnel_abort(tunnel_call *c)
{
    mesh_stream_abort(c->stream);
    free(c);
}

/* ---- host side ------------------------------------------------------------*/

typedef struct {
    api_sink sink;          /* first: the handler calls back with &server->sink */
    const tunnel_handler *handler;
    mesh_stream *stream;
    tunnel_request req;
    void *call;             /* the handler's, while the answer is being produced */
    int ended;
    int failed;             /* protocol error: stream aborted */
} tunnel_server;

static void server_begin(api_sink *sink, int status, const char *content_type)
{
    tunnel_server *t = (tunnel_server *)sink;
    size_t n = strlen(content_type);
    uint8_t head[3 + TUNNEL_MAX_TYPE];
    if (n > TUNNEL_MAX_TYPE) n = TUNNEL_MAX_TYPE;
    head[0] = TUNNEL_RESPONSE_HEAD;
    head[1] = (uint8_t)(status >> 8);
    head[2] = (uint8_t)status;
    memcpy(head + 3, content_type, n);
    mesh_stream_send(t->stream, head, n + 3);
}

static void server_write(api_sink *sink, const char *data, size_t len)
{
    tunnel_server *t = (tunnel_server *)sink;
    if (len) send_body(t->stream, data, len);
}

static void server_end(api_sink *sink)
{
    tunnel_server *t = (tunnel_server *)sink;
    t->ended = 1;
    t->call = NULL;
    mesh_stream_finish(t->stream);
}

static const api_sink_ops server_sink_ops = {server_begin, server_write, server_end, NULL, NULL};

static void server_protocol_error(tunnel_server *t, const char *why)
{
    log_warn("tunnel", "bad tunnel request from a peer: %s", why);
    t->failed = 1;
    mesh_stream_abort(t->stream);
    tunnel_request_free(&t->req);
    free(t);
}

static void server_on_frame(void *user, mesh_stream *s, const uint8_t *p, size_t len)
{
    tunnel_server *t = user;
    const char *why = "unexpected frame";
    /* Nothing may follow the request once it is being answered. */
    if (t->call || t->ended || tunnel_request_feed(&t->req, p, len, &why) != 0) server_protocol_error(t, why);
}

static void server_on_fin(void *user, mesh_stream *s)
{
    tunnel_server *t = user;
    if (!t->req.have_head) { server_protocol_error(t, "no request head"); return; }
    if (t->call || t->ended) return;
    t->call = t->handler->handle(t->handler->ctx, t->req.method, t->req.path, t->req.body, t->req.body_len,
                                 &t->sink);
    tunnel_request_free(&t->req);
}

static void server_on_close(void *user, mesh_stream *s, const char *error)
{
    tunnel_server *t = user;
    if (t->call) {
        log_debug("tunnel", "entry node went away mid-request: %s", error ? error : "closed");
        t->handler->abort(t->call);
    }
    tunnel_request_free(&t->req);
    free(t);
}

static const mesh_stream_handlers server_handlers = {server_on_frame, server_on_fin, server_on_close};

static void tunnel_accept(void *ctx, mesh_stream *s)
{
    tunnel_server *t = calloc(1, sizeof *t);
    if (!t) { mesh_stream_abort(s); return; }
    t->sink.ops = &server_sink_ops;
    t->handler = ctx;
    t->stream = s;
    mesh_stream_set_handlers(s, &server_handlers, t);
}

void tunnel_register(mesh *m, const tunnel_handler *handler)
{
    mesh_register_stream_type(m, MESH_STREAM_HTTP_TUNNEL, tunnel_accept, (void *)handler);
    mesh_open_to_clients(m, MESH_STREAM_HTTP_TUNNEL);
}

/* ---- frame decoding ---------------------------------------------------------*/

int tunnel_request_feed(tunnel_request *r, const uint8_t *p, size_t len, const char **why)
{
    if (len >= 1 && p[0] == TUNNEL_REQUEST_HEAD && !r->have_head) {
        const uint8_t *end = p + len;
        const uint8_t *m = p + 1;
        const uint8_t *z1 = memchr(m, 0, (size_t)(end - m));
        if (!z1 || z1 - m == 0 || z1 - m >= TUNNEL_MAX_METHOD) { *why = "bad method"; return -1; }
        const uint8_t *path = z1 + 1;
        const uint8_t *z2 = path < end ? memchr(path, 0, (size_t)(end - path)) : NULL;
        if (!z2 || z2 - path == 0 || z2 - path >= TUNNEL_MAX_PATH || z2 + 1 != end) {
            *why = "bad path";
            return -1;
        }
        memcpy(r->method, m, (size_t)(z1 - m) + 1);
        memcpy(r->path, path, (size_t)(z2 - path) + 1);
        r->have_head = 1;
        return 0;
    }
    if (len >= 1 && p[0] == TUNNEL_BODY && r->have_head) {
        size_t n = len - 1;
        if (n > API_MAX_BODY - r->body_len) { *why = "body too large"; return -1; }
        if (r->body_len + n > r->body_cap) {
            size_t cap = r->body_cap ? r->body_cap : 4096;
            while (cap < r->body_len + n) cap *= 2;
            char *b = realloc(r->body, cap);
            if (!b) { *why = "out of memory"; return -1; }
            r->body = b;
            r->body_cap = cap;
        }
        if (n) memcpy(r->body + r->body_len, p + 1, n);
        r->body_len += n;
        return 0;
    }
    *why = "unexpected frame";
    return -1;
}

void tunnel_request_free(tunnel_request *r)
{
    free(r->body);
    r->body = NULL;
    r->body_len = r->body_cap = 0;
}

int tunnel_decode_response_head(const uint8_t *p, size_t len, int *status, char type[TUNNEL_MAX_TYPE])
{
    if (len < 3 || p[0] != TUNNEL_RESPONSE_HEAD) return -1;
    int st = (p[1] << 8) | p[2];
    size_t n = len - 3 < TUNNEL_MAX_TYPE - 1 ? len - 3 : TUNNEL_MAX_TYPE - 1;
    if (st < 100 || st > 599 || memchr(p + 3, 0, n)) return -1;
    memcpy(type, p + 3, n);
    type[n] = 0;
    *status = st;
    return 0;
}
