/* admission.c: only holders of the mesh secret get in (docs/mesh.md,
 * "Admission"; bytes in docs/PROTOCOL.md section 15).
 *
 * Every connection, member or passive client, direct or relayed, starts in
 * admission once its TLS handshake is done. The dialler opens an ADMISSION
 * stream and sends its proof (mesh/admit.h); the acceptor checks it and only
 * then answers with its own; the dialler checks that. Until a side has
 * checked the other's proof the link is not ready: the peer is in no table
 * (an acceptor does not even add a node for it), no gossip, control,
 * routes, tunnel, stage or fetch stream of it is taken, and nothing of ours
 * goes to it. A peer that sends a wrong or malformed proof, opens another
 * stream first, or has proved nothing within ADMISSION_DEADLINE_MS, is
 * refused: counted in admission_refused, logged without the secret or the
 * proof, and its connection closed with the reason.
 *
 * One wrinkle: the acceptor is admitted a half round trip before the dialler
 * hears so, and may open streams at once (an OBSERVED message, a tunnel);
 * when those overtake its proof, the dialler holds their bytes (at most
 * ADMISSION_HOLD_MAX per connection, stream.c) and plays them once the proof
 * is in, or drops them with the connection.
 *
 * Why a proof over the TLS exporter rather than the secret as a TLS
 * pre-shared key: TLS 1.3 does not combine an external PSK with the raw
 * public keys that pin node ids, and GnuTLS 3.7 has no way to require both.
 * Everything on the event-loop thread. */
#include <stdio.h>
#include <string.h>

#include "lib/log.h"
#include "mesh/admit.h"
#include "mesh/mesh_private.h"

static const char *link_addr(const mesh_link *l, char text[ADDR_TEXT_MAX])
{
    socklen_t len;
    const struct sockaddr *sa = quic_conn_remote_addr(l->qc, &len);
    mesh_addr a;
    if (!sa || addr_from_sockaddr(sa, len, &a) != 0) snprintf(text, ADDR_TEXT_MAX, "a relay");
    else addr_format(&a, text);
    return text;
}

void admission_refuse(mesh_link *l, const char *why)
{
    if (!l->admitting || l->refused) return;
    mesh *m = l->m;
    l->refused = 1;
    m->counters.admission_refused++;
    if (l->admit_timer) evtimer_del(l->admit_timer);
    char hex[MESH_ID_HEX], addr[ADDR_TEXT_MAX];
    identity_id_hex(l->peer, hex);
    if (l->outgoing)
        log_warn(MESH_LOG, "node %.16s at %s failed admission: %s (was the token made by a node of "
                 "this mesh?)", hex, link_addr(l, addr), why);
    else
        log_info(MESH_LOG, "refused %.16s from %s: %s", hex, link_addr(l, addr), why);
    /* The peer reads this in its CONNECTION_CLOSE: what failed, nothing
     * of the secret (and nothing that tells a stranger which check). */
    mesh_link_close_now(l, "admission refused");
}

static void admission_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    mesh_link *l = arg;
    admission_refuse(l, "no admission proof within 1 s");
}

/* The peer proved it: the link becomes a normal one. */
static void admission_done(mesh_link *l)
{
    if (l->admit_timer) evtimer_del(l->admit_timer);
    l->admitting = 0;
    mesh_link_admitted(l);
}

static int admission_send_proof(mesh_link *l, mesh_stream *s)
{
    uint8_t mac[ADMIT_MAC_BYTES], frame[ADMIT_FRAME_BYTES];
    admit_role mine = l->outgoing ? ADMIT_DIALLER : ADMIT_ACCEPTOR;
    int rc = admit_proof(l->m->secret, mine, &l->bind, mac);
    if (rc == 0) {
        admit_encode(mac, frame);
        rc = mesh_stream_send(s, frame, sizeof frame);
        mesh_stream_finish(s);
    }
    explicit_bzero(mac, sizeof mac);
    explicit_bzero(frame, sizeof frame);
    return rc;
}

static void admission_on_frame(void *user, mesh_stream *s, const uint8_t *p, size_t len)
{
    mesh_link *l = user;
    if (!l->admitting || l->refused || l->admit_proved) {
        mesh_stream_reject(s, "unexpected admission frame");
        return;
    }
    const char *why = NULL;
    admit_role theirs = l->outgoing ? ADMIT_ACCEPTOR : ADMIT_DIALLER;
    int rc = admit_check(l->m->secret, theirs, &l->bind, p, len, &why);
    if (l->m->test_admit_anyone && !l->outgoing) rc = 1;
    if (rc < 0) {
        mesh_stream_reject(s, why);
        admission_refuse(l, why);
        return;
    }
    if (rc == 0) {
        admission_refuse(l, why);
        return;
    }
    l->admit_proved = 1;
    /* The acceptor answers only a peer that proved itself: a stranger
     * learns nothing, not even a MAC it cannot use anywhere else. */
    if (!l->outgoing && admission_send_proof(l, s) != 0) {
        admission_refuse(l, "cannot send our proof");
        return;
    }
    admission_done(l);
}

static void admission_on_fin(void *user, mesh_stream *s)
{
    mesh_link *l = user;
    if (!l->admit_proved) admission_refuse(l, "admission stream ended without a proof");
}

/* A closed admission stream says nothing the link does not: the deadline
 * or the connection's own end takes care of it (and here the link may be
 * in the middle of being freed). */
static void admission_on_close(void *user, mesh_stream *s, const char *error) {}

static const mesh_stream_handlers admission_handlers = {admission_on_frame, admission_on_fin,
                                                        admission_on_close};

static void admission_accept(void *ctx, mesh_stream *s)
{
    mesh_link *l = s->link;
    /* Only the dialler opens one, once, while the link is in admission. */
    if (!l || l->outgoing || !l->admitting || l->refused || l->admit_stream_seen) {
        if (l && l->admitting) admission_refuse(l, "unexpected admission stream");
        return;                       /* no handlers: the stream is reset */
    }
    l->admit_stream_seen = 1;
    mesh_stream_set_handlers(s, &admission_handlers, l);
}

void admission_register(mesh *m)
{
    m->types[MESH_STREAM_ADMISSION].fn = admission_accept;
    m->types[MESH_STREAM_ADMISSION].ctx = m;
}

void admission_start(mesh_link *l)
{
    mesh *m = l->m;
    l->admitting = 1;
    memcpy(l->bind.dialler, l->outgoing ? m->self.public_key : l->peer, MESH_ID_BYTES);
    memcpy(l->bind.acceptor, l->outgoing ? l->peer : m->self.public_key, MESH_ID_BYTES);
    if (quic_conn_export_keying(l->qc, ADMIT_EXPORTER_LABEL, l->bind.exporter,
                                sizeof l->bind.exporter) != 0) {
        admission_refuse(l, "cannot export keying material from the TLS session");
        return;
    }
    l->admit_timer = evtimer_new(m->base, admission_timeout_cb, l);
    if (!l->admit_timer) {
        admission_refuse(l, "out of memory");
        return;
    }
    struct timeval tv = {ADMISSION_DEADLINE_MS / 1000, (ADMISSION_DEADLINE_MS % 1000) * 1000};
    evtimer_add(l->admit_timer, &tv);
    if (!l->outgoing) return;
    mesh_stream *s = mesh_stream_open_on(l, MESH_STREAM_ADMISSION, &admission_handlers, l);
    if (!s || admission_send_proof(l, s) != 0) admission_refuse(l, "cannot send our proof");
}

void mesh_test_admit_anyone(mesh *m, int on) { m->test_admit_anyone = on; }

void admission_link_free(mesh_link *l)
{
    if (l->admit_timer) event_free(l->admit_timer);
    l->admit_timer = NULL;
    explicit_bzero(&l->bind, sizeof l->bind);
}
