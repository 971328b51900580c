/* stream.c: typed streams of frames over QUIC streams (see mesh.h for the
 * handler contract and docs/PROTOCOL.md for the bytes).
 *
 * The one subtle part is lifetime. A handler may abort its stream, or a
 * stream the mesh is dispatching to, from inside any callback; so while a
 * callback runs the handle is "busy" and is only marked dead, and whoever
 * holds the busy count frees it last. QUIC's own stream is reset (or is
 * already gone) the moment the handle is dead, so no callback can follow.
 *
 * Not here: which connection to use (mesh.c), what gossip says (gossip.c). */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "mesh/mesh_private.h"
#include "mesh/natmsg.h"
#include "mesh/routes.h"
#include "mesh/swim.h"

static uint32_t stream_frame_bound(const mesh *m, uint8_t type)
{
    if (m->types[type].frame_max) return m->types[type].frame_max;
    if (type == MESH_STREAM_GOSSIP || type == MESH_STREAM_ROUTES) return RECORD_MAX_BYTES;
    if (type == MESH_STREAM_CONTROL) return SWIM_CTRL_MAX;
    if (type == MESH_STREAM_RELAY) return NAT_RELAY_FRAME_MAX;
    if (type == MESH_STREAM_RENDEZVOUS) return NAT_MSG_MAX;
    if (type == MESH_STREAM_ADMISSION) return ADMIT_FRAME_MAX;
    return MESH_MAX_FRAME;
}

int mesh_stream_type_internal(uint8_t type)
{
    return type == MESH_STREAM_GOSSIP || type == MESH_STREAM_CONTROL || type == MESH_STREAM_ROUTES ||
           type == MESH_STREAM_ADMISSION;
}

static const char *stream_peer_hex(const mesh_stream *s, char hex[MESH_ID_HEX])
{
    identity_id_hex(s->peer, hex);
    return hex;
}

static void stream_attach(mesh_link *l, mesh_stream *s)
{
    s->link = l;
    s->next = l->streams;
    if (l->streams) l->streams->prev = s;
    l->streams = s;
    if (!mesh_stream_type_internal(s->type)) {
        l->user_streams++;
        l->last_active = detect_now_ms();
    }
}

/* Takes s off its link; the link may then be closed by the sweep. */
static void stream_detach(mesh_stream *s)
{
    mesh_link *l = s->link;
    if (!l) return;
    if (s->prev) s->prev->next = s->next; else l->streams = s->next;
    if (s->next) s->next->prev = s->prev;
    s->prev = s->next = NULL;
    s->link = NULL;
    if (l->gossip == s) l->gossip = NULL;
    if (l->control == s) l->control = NULL;
    if (s->typed && !mesh_stream_type_internal(s->type)) {
        assert(l->user_streams > 0);
        l->user_streams--;
        l->last_active = detect_now_ms();
        mesh_link_stream_gone(l);
    }
}

/* A malformed frame (or stream) from s's peer: counted; a peer that keeps
 * sending them is cut off (mesh_link_bad_frame). */
static void stream_bad_frame(mesh_stream *s)
{
    s->m->counters.bad_frames++;
    if (s->link) mesh_link_bad_frame(s->link);
}

static void stream_free(mesh_stream *s)
{
    assert(s->dead && !s->busy && !s->link && !s->qs && !s->waiting);
    frame_reader_free(&s->reader);
    free(s->queued);
    free(s->held);
    free(s);
}

/* Takes a waiting stream off its node's list. */
static void stream_unwait(mesh_stream *s)
{
    mesh_node *n = s->waiting;
    if (!n) return;
    if (s->prev) s->prev->next = s->next; else n->pending = s->next;
    if (s->next) s->next->prev = s->prev;
    s->prev = s->next = NULL;
    s->waiting = NULL;
}

static void stream_release(mesh_stream *s)
{
    if (s->dead && !s->busy) stream_free(s);
}

/* Marks s dead: QUIC's stream is reset (if still there) so that no callback
 * follows, and s leaves its link. Freeing is left to stream_release. */
static void stream_kill(mesh_stream *s, uint64_t code)
{
    s->dead = 1;
    stream_unwait(s);
    if (s->qs) {
        quic_stream_reset(s->qs, code);
        s->qs = NULL;
    }
    stream_detach(s);
}

/* Ends a stream from our side with an error: reset, then on_close once. */
static void stream_fail(mesh_stream *s, uint64_t code, const char *why)
{
    if (s->dead) return;
    stream_kill(s, code);
    if (s->has_handlers && s->h.on_close) {
        s->busy++;
        s->h.on_close(s->user, s, why);
        s->busy--;
    }
}

void mesh_stream_reject(mesh_stream *s, const char *why)
{
    if (s->dead) return;
    stream_bad_frame(s);
    stream_fail(s, MESH_RESET_BAD_FRAME, why);
    stream_release(s); /* frees it unless a callback of it is running */
}

static mesh_stream *stream_new(mesh *m, const uint8_t peer[MESH_ID_BYTES])
{
    mesh_stream *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->m = m;
    memcpy(s->peer, peer, MESH_ID_BYTES);
    return s;
}

static void stream_set_type(mesh_stream *s, uint8_t type)
{
    s->type = type;
    s->typed = 1;
    frame_reader_init(&s->reader, stream_frame_bound(s->m, type));
}

/* The first byte of an incoming stream: hand it to whoever took the type.
 * 0 to go on reading frames, -1 when the stream is over. */
static int stream_take_type(mesh_stream *s, uint8_t type)
{
    mesh *m = s->m;
    mesh_type_slot *slot = &m->types[type];
    char hex[MESH_ID_HEX];
    if (s->link && s->link->passive && !passive_type_allowed(m, type)) {
        stream_bad_frame(s);
        log_debug(MESH_LOG, "client %.16s opened a stream of type %u, which clients may not: reset",
                  stream_peer_hex(s, hex), type);
        stream_fail(s, MESH_RESET_REFUSED, "stream type not open to clients");
        return -1;
    }
    if (!slot->fn) {
        stream_bad_frame(s);
        log_debug(MESH_LOG, "peer %.16s opened a stream of unknown type %u: reset",
                  stream_peer_hex(s, hex), type);
        stream_fail(s, MESH_RESET_UNKNOWN_TYPE, "unknown stream type");
        return -1;
    }
    stream_set_type(s, type);
    if (s->link && !mesh_stream_type_internal(type)) {
        s->link->user_streams++;
        s->link->last_active = detect_now_ms();
    }
    m->counters.streams_accepted++;
    slot->fn(slot->ctx, s);
    if (s->dead) return -1;
    if (!s->has_handlers) {
        log_debug(MESH_LOG, "accept function for stream type %u set no handlers: reset", type);
        stream_fail(s, MESH_RESET_REFUSED, "stream refused");
        return -1;
    }
    return 0;
}

/* Bytes of a stream that arrived while its link is in admission. The
 * dialler keeps them until the acceptor's proof is in (the acceptor may
 * open streams once admitted, and they can overtake its proof); to an
 * acceptor, any stream but the dialler's ADMISSION one is a breach. 0 held,
 * -1 the stream is over. */
static int stream_hold(mesh_stream *s, const uint8_t *data, size_t len, int fin)
{
    mesh_link *l = s->link;
    if (!l->outgoing) {
        admission_refuse(l, "a stream opened before the admission proof");
        stream_fail(s, MESH_RESET_REFUSED, "not admitted");
        return -1;
    }
    if (l->held_bytes + len > ADMISSION_HOLD_MAX) {
        admission_refuse(l, "too many bytes sent before the admission proof");
        stream_fail(s, MESH_RESET_REFUSED, "not admitted");
        return -1;
    }
    if (s->held_len + len > s->held_cap) {
        size_t cap = s->held_cap ? s->held_cap : 256;
        while (cap < s->held_len + len) cap *= 2;
        uint8_t *grown = realloc(s->held, cap);
        if (!grown) {
            stream_fail(s, MESH_RESET_ABORTED, "out of memory");
            return -1;
        }
        s->held = grown;
        s->held_cap = cap;
    }
    if (len) memcpy(s->held + s->held_len, data, len);
    s->held_len += len;
    l->held_bytes += len;
    s->held_fin |= fin;
    return 0;
}

static void stream_on_data(void *user, quic_stream *qs, const uint8_t *data, size_t len, int fin)
{
    mesh_stream *s = user;
    if (s->dead) return;
    s->busy++;
    if (s->link && s->link->admitting && (len > 0 || fin)) {
        int admission = s->typed ? s->type == MESH_STREAM_ADMISSION
                                 : len > 0 && data[0] == MESH_STREAM_ADMISSION;
        if (!admission) {
            stream_hold(s, data, len, fin);
            goto out;
        }
    }
    if (!s->typed && len > 0) {
        uint8_t type = data[0];
        data++;
        len--;
        if (stream_take_type(s, type) != 0) goto out;
    }
    if (!s->typed) {
        if (fin) {
            stream_bad_frame(s);
            stream_fail(s, MESH_RESET_BAD_FRAME, "stream ended before its type byte");
        }
        goto out;
    }
    for (;;) {
        const uint8_t *payload;
        size_t plen;
        frame_status st = frame_reader_next(&s->reader, &data, &len, &payload, &plen);
        if (st == FRAME_NEED_MORE) break;
        if (st == FRAME_ERROR) {
            stream_bad_frame(s);
            char hex[MESH_ID_HEX];
            log_debug(MESH_LOG, "stream from %.8s: %s: reset", stream_peer_hex(s, hex), s->reader.error);
            stream_fail(s, MESH_RESET_BAD_FRAME, s->reader.error);
            goto out;
        }
        if (s->h.on_frame) s->h.on_frame(s->user, s, payload, plen);
        if (s->dead) goto out;
    }
    if (fin && !s->fin_seen) {
        if (!frame_reader_idle(&s->reader)) {
            stream_bad_frame(s);
            stream_fail(s, MESH_RESET_BAD_FRAME, "stream ended in the middle of a frame");
            goto out;
        }
        s->fin_seen = 1;
        if (s->h.on_fin) s->h.on_fin(s->user, s);
    }
out:
    s->busy--;
    stream_release(s);
}

static void stream_on_close(void *user, quic_stream *qs, const char *error)
{
    mesh_stream *s = user;
    s->qs = NULL;                     /* QUIC frees its stream after we return */
    if (!s->dead) {
        s->dead = 1;
        stream_detach(s);
        if (s->typed && s->has_handlers && s->h.on_close) {
            s->busy++;
            s->h.on_close(s->user, s, error);
            s->busy--;
        }
    }
    stream_detach(s);
    stream_release(s);
}

const quic_stream_callbacks mesh_stream_quic_callbacks = {stream_on_data, stream_on_close};

mesh_stream *mesh_stream_open_on(mesh_link *l, uint8_t type, const mesh_stream_handlers *h,
                                 void *user)
{
    /* Nothing but the proof goes out before admission. */
    assert(l->node && (l->ready || (l->admitting && type == MESH_STREAM_ADMISSION)));
    mesh_stream *s = stream_new(l->m, l->peer);
    if (!s) return NULL;
    s->qs = quic_stream_open(l->qc, &mesh_stream_quic_callbacks, s);
    if (!s->qs) {
        free(s);
        return NULL;
    }
    stream_set_type(s, type);
    if (h) {
        s->h = *h;
        s->has_handlers = 1;
    }
    s->user = user;
    stream_attach(l, s);
    l->m->counters.streams_opened++;
    if (quic_stream_write(s->qs, &type, 1) != 0) {
        stream_kill(s, MESH_RESET_ABORTED);
        stream_free(s);
        return NULL;
    }
    return s;
}

void mesh_stream_incoming(mesh_link *l, quic_stream *qs)
{
    mesh_stream *s = stream_new(l->m, l->peer);
    if (!s) {
        quic_stream_reset(qs, MESH_RESET_REFUSED);
        return;
    }
    s->qs = qs;
    /* Not counted as a user stream until its type is known. */
    s->link = l;
    s->next = l->streams;
    if (l->streams) l->streams->prev = s;
    l->streams = s;
    quic_stream_set_callbacks(qs, &mesh_stream_quic_callbacks, s);
}

/* ---- streams waiting for a connection (passive clients) ----------------------*/

static int stream_queue(mesh_stream *s, const void *p, size_t len)
{
    if (s->queued_len + len > MESH_PENDING_MAX) return -1;
    if (s->queued_len + len > s->queued_cap) {
        size_t cap = s->queued_cap ? s->queued_cap : 256;
        while (cap < s->queued_len + len) cap *= 2;
        uint8_t *grown = realloc(s->queued, cap);
        if (!grown) return -1;
        s->queued = grown;
        s->queued_cap = cap;
    }
    memcpy(s->queued + s->queued_len, p, len);
    s->queued_len += len;
    return 0;
}

mesh_stream *mesh_stream_open_waiting(mesh_node *n, uint8_t type, const mesh_stream_handlers *h,
                                      void *user)
{
    mesh_stream *s = stream_new(n->m, n->id);
    if (!s) return NULL;
    stream_set_type(s, type);
    if (h) {
        s->h = *h;
        s->has_handlers = 1;
    }
    s->user = user;
    if (stream_queue(s, &type, 1) != 0) {
        s->dead = 1;
        stream_free(s);
        return NULL;
    }
    s->waiting = n;
    s->next = n->pending;
    if (n->pending) n->pending->prev = s;
    n->pending = s;
    n->m->counters.streams_opened++;
    return s;
}

void mesh_node_flush_pending(mesh_node *n)
{
    mesh_link *l = n->link;
    while (n->pending && l && l->ready) {
        mesh_stream *s = n->pending;
        stream_unwait(s);
        s->qs = quic_stream_open(l->qc, &mesh_stream_quic_callbacks, s);
        if (!s->qs) {
            stream_fail(s, MESH_RESET_ABORTED, "cannot open a stream (stream limit)");
            stream_release(s);
            continue;
        }
        stream_attach(l, s);
        int rc = quic_stream_write(s->qs, s->queued, s->queued_len);
        free(s->queued);
        s->queued = NULL;
        s->queued_len = s->queued_cap = 0;
        if (rc != 0) {
            stream_fail(s, MESH_RESET_ABORTED, "cannot write the queued frames");
            stream_release(s);
        } else if (s->fin_queued) {
            quic_stream_finish(s->qs);
        }
    }
}

void mesh_node_fail_pending(mesh_node *n, const char *why)
{
    while (n->pending) {
        mesh_stream *s = n->pending;
        stream_fail(s, MESH_RESET_ABORTED, why);   /* unwaits it */
        stream_release(s);
    }
}

void mesh_link_release_held(mesh_link *l)
{
    /* A stream's callbacks may end other streams: start over after each. */
again:
    for (mesh_stream *s = l->streams; s; s = s->next) {
        if (s->dead || !s->qs || (!s->held_len && !s->held_fin)) continue;
        uint8_t *buf = s->held;
        size_t len = s->held_len;
        int fin = s->held_fin;
        s->held = NULL;
        s->held_len = s->held_cap = 0;
        s->held_fin = 0;
        l->held_bytes -= len;
        stream_on_data(s, s->qs, buf, len, fin);
        free(buf);
        goto again;
    }
}

void mesh_link_drop_streams(mesh_link *l, const char *reason)
{
    while (l->streams) {
        mesh_stream *s = l->streams;
        s->busy++;
        int was_dead = s->dead;
        stream_kill(s, MESH_RESET_ABORTED);
        if (!was_dead && s->typed && s->has_handlers && s->h.on_close) s->h.on_close(s->user, s, reason);
        s->busy--;
        stream_release(s);
    }
}

/* ---- public stream API ------------------------------------------------------*/

mesh_stream *mesh_stream_open(mesh *m, const uint8_t peer_id[MESH_ID_BYTES], uint8_t type,
                              const mesh_stream_handlers *h, void *user, char *err, size_t errlen)
{
    mesh_node *n = m->freeing ? NULL : mesh_node_find(m, peer_id);
    if (m->passive && n && !n->link && !m->left) {
        /* A client connects on demand; frames wait for the handshake. */
        mesh_node_dial_now(m, n);
        if (!n->dialing && !n->link) {
            snprintf(err, errlen, "cannot connect to node %.16s: %s", n->id_hex,
                     n->down_reason[0] ? n->down_reason : "no address to dial");
            return NULL;
        }
        if (!n->link) {
            mesh_stream *s = mesh_stream_open_waiting(n, type, h, user);
            if (!s) snprintf(err, errlen, "out of memory");
            return s;
        }
    }
    if (!n || !n->link || (!m->passive && (n->state == NODE_DEAD || n->state == NODE_LEFT))) {
        char hex[MESH_ID_HEX];
        identity_id_hex(peer_id, hex);
        snprintf(err, errlen, "no live connection to node %.16s", hex);
        return NULL;
    }
    mesh_stream *s = mesh_stream_open_on(n->link, type, h, user);
    if (!s) snprintf(err, errlen, "cannot open a stream to node %.16s (stream limit or out of memory)",
                     n->id_hex);
    return s;
}

void mesh_stream_set_handlers(mesh_stream *s, const mesh_stream_handlers *h, void *user)
{
    s->h = *h;
    s->has_handlers = 1;
    s->user = user;
}

int mesh_stream_send(mesh_stream *s, const void *payload, size_t len)
{
    if (s->dead || len > MESH_MAX_FRAME) return -1;
    uint8_t head[FRAME_HEADER_BYTES];
    frame_header_encode(head, (uint32_t)len);
    if (s->waiting) {
        if (s->fin_queued || s->queued_len + sizeof head + len > MESH_PENDING_MAX ||
            stream_queue(s, head, sizeof head) != 0)
            return -1;
        if (len && stream_queue(s, payload, len) != 0) {
            s->queued_len -= sizeof head;
            return -1;
        }
        return 0;
    }
    if (!s->qs) return -1;
    if (quic_stream_write(s->qs, head, sizeof head) != 0) return -1;
    if (len && quic_stream_write(s->qs, payload, len) != 0) return -1;
    return 0;
}

int mesh_transport_trylock(mesh *m) { return quic_endpoint_trylock(m->ep); }
void mesh_transport_unlock(mesh *m) { quic_endpoint_unlock(m->ep); }

int mesh_stream_send_now(mesh_stream *s, const void *payload, size_t len)
{
    if (s->dead || s->waiting || !s->qs) return 1;
    if (len > MESH_MAX_FRAME) return -1;
    uint8_t head[FRAME_HEADER_BYTES];
    frame_header_encode(head, (uint32_t)len);
    return quic_stream_write_now(s->qs, head, sizeof head, payload, len);
}

void mesh_stream_finish(mesh_stream *s)
{
    if (s->waiting) s->fin_queued = 1;
    if (s->dead || !s->qs) return;
    s->busy++;
    quic_stream_finish(s->qs);
    s->busy--;
    stream_release(s);
}

void mesh_stream_abort(mesh_stream *s)
{
    if (s->dead) return;
    stream_kill(s, MESH_RESET_ABORTED);
    stream_release(s);
}

size_t mesh_stream_unacked(const mesh_stream *s)
{
    if (s->waiting) return s->queued_len;
    return s->qs ? quic_stream_unacked(s->qs) : 0;
}

const uint8_t *mesh_stream_peer(const mesh_stream *s) { return s->peer; }
