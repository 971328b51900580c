/* detect.c: the failure detector (SWIM with suspicion, docs/mesh.md
 * "Failure detection"; bytes in docs/PROTOCOL.md).
 *
 * Why not the QUIC connection alone: a crashed node's connections end only
 * at the idle timeout (30 s), and a connection that is up says nothing about
 * whether the process behind it still runs its event loop. So every node
 * probes its peers itself:
 *   - each probe interval (1 s) it PINGs up to MESH_PROBES_PER_ROUND alive
 *     peers (round robin) and every suspect, on the connection's CONTROL
 *     stream; an ACK must come back within the probe timeout (500 ms);
 *   - a peer that misses a probe gets a second chance at once: a new PING,
 *     and MESH_INDIRECT_K other peers asked to probe it for us (PING_REQ),
 *     for one more probe timeout (SWIM's indirect round);
 *   - if none of that is answered, or its connection drops without a LEAVE,
 *     it becomes *suspect*: we flood a SUSPECT notice so that the peer learns
 *     of it and refutes (it publishes a record with a larger seq: its
 *     incarnation), ask helpers again and keep probing it directly. Any ACK
 *     from it, direct or relayed, or a newer record, makes it alive again;
 *   - a suspect that stays silent for the suspicion timeout (4 s) is
 *     declared *dead* and a DEAD notice is flooded. A receiver never takes
 *     that on trust: it probes the node itself and removes it only if no ACK
 *     comes within its own verification time (suspicion / 2);
 *   - a node that exits cleanly floods a LEAVE it signed (mesh_leave): peers
 *     mark it *left* at once, without verification, since nobody else can
 *     sign it;
 *   - dead and left nodes expire after a TTL (60 s) and vanish from
 *     mesh_peers; their old record can no longer bring them back, a newer
 *     one (a restart) does.
 * The stream is reliable: a probe lost on the wire is retransmitted by QUIC,
 * and a late ACK still counts. Under 10 % loss the probe timeout is missed
 * now and then; the suspicion timeout, indirect probes and refutation keep
 * that from ever making a live node dead.
 *
 * Not here: connections and dialling (mesh.c), records (gossip.c), the wire
 * format (swim.c). Everything on the event-loop thread. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/clock.h"
#include "lib/log.h"
#include "mesh/mesh_private.h"
#include "mesh/swim.h"

uint64_t detect_now_ms(void) { return clock_ms(); }

void mesh_test_mute(mesh *m, int on) { m->test_mute = on; }

static uint64_t detect_nonce(mesh *m)
{
    /* Nonces only need to be distinct among our outstanding probes (the
     * connection is authenticated); never 0, which means "none". */
    if (++m->next_nonce == 0) m->next_nonce = 1;
    return m->next_nonce;
}

static int detect_send_on(mesh_stream *s, uint8_t kind, uint64_t nonce, const uint8_t *target)
{
    swim_probe p = {.kind = kind, .nonce = nonce};
    if (target) memcpy(p.target, target, MESH_ID_BYTES);
    uint8_t buf[SWIM_CTRL_MAX];
    return mesh_stream_send(s, buf, swim_probe_encode(&p, buf));
}

int detect_send_ping(mesh *m, mesh_stream *s) { return detect_send_on(s, SWIM_PING, detect_nonce(m), NULL); }

int detect_read_probe(mesh_stream *s, const uint8_t *p, size_t len, swim_probe *out)
{
    char err[160];
    int rc = swim_probe_decode(p, len, out, err, sizeof err);
    if (rc < 0) mesh_stream_reject(s, err);
    return rc;
}

static int detect_send_probe(mesh_link *l, uint8_t kind, uint64_t nonce, const uint8_t *target)
{
    if (!l || !l->control) return -1;
    return detect_send_on(l->control, kind, nonce, target);
}

/* A direct PING to n, unless one is already waiting for its ACK. */
static void detect_ping(mesh *m, mesh_node *n, uint64_t now)
{
    if (n->probe_pending || !n->link) return;
    uint64_t nonce = detect_nonce(m);
    if (detect_send_probe(n->link, SWIM_PING, nonce, NULL) != 0) return;
    n->probe_pending = 1;
    n->probe_nonce = nonce;
    n->probe_deadline = now + m->probe_timeout_ms;
}

static void detect_flood_claim(mesh *m, mesh_node *n, uint8_t kind, uint64_t inc, const mesh_link *skip)
{
    uint64_t *relayed = kind == SWIM_NOTICE_SUSPECT ? &n->suspect_relayed : &n->dead_relayed;
    if (*relayed == inc + 1) return;
    *relayed = inc + 1;
    swim_notice sn = {.kind = kind, .incarnation = inc};
    memcpy(sn.node, n->id, MESH_ID_BYTES);
    memcpy(sn.from, m->self.public_key, MESH_ID_BYTES);
    uint8_t buf[SWIM_CLAIM_BYTES];
    gossip_broadcast(m, buf, swim_claim_encode(&sn, buf), skip);
}

/* n answered (directly, through a helper, or by refuting): alive, if we
 * have a connection to use; otherwise the redial decides. */
static void detect_alive(mesh *m, mesh_node *n, const char *how)
{
    n->probe_pending = 0;
    n->indirect_nonce = 0;
    n->indirect_round = 0;
    if ((n->state == NODE_SUSPECT || n->state == NODE_DEAD) && n->link) {
        log_info(MESH_LOG, "node %.16s is alive again (%s)", n->id_hex, how);
        n->state = NODE_ALIVE;
        m->counters.peers_alive_again++;
    }
}

void detect_node_up(mesh *m, mesh_node *n)
{
    n->probe_pending = 0;
    n->indirect_nonce = 0;
    n->indirect_round = 0;
}

/* PING_REQs about n to up to K other alive peers, picked at random so that
 * one bad helper (or one bad path) does not fail every round. */
static void detect_ping_indirect(mesh *m, mesh_node *n)
{
    mesh_node *cand[MESH_MAX_NODES];
    int count = 0;
    for (mesh_node *o = m->nodes; o; o = o->next)
        if (o != n && o->state == NODE_ALIVE && o->link && o->link->control) cand[count++] = o;
    n->indirect_nonce = count ? detect_nonce(m) : 0;
    for (int k = 0; k < MESH_INDIRECT_K && count > 0; k++) {
        uint32_t r;
        evutil_secure_rng_get_bytes(&r, sizeof r);
        int i = (int)(r % (uint32_t)count);
        detect_send_probe(cand[i]->link, SWIM_PING_REQ, n->indirect_nonce, n->id);
        cand[i] = cand[--count];
    }
}

static void detect_suspect(mesh *m, mesh_node *n, uint64_t now, const char *why)
{
    if (n->state != NODE_ALIVE || m->left || m->test_mute) return;
    n->state = NODE_SUSPECT;
    m->counters.peers_suspected++;
    n->indirect_round = 0;
    n->suspect_deadline = now + m->suspect_ms;
    n->suspect_inc = n->has_record ? n->rec.seq : 0;
    log_info(MESH_LOG, "node %.16s suspect: %s", n->id_hex, why);
    detect_ping_indirect(m, n);
    /* Tell everyone, the suspect included: it refutes with a newer record. */
    detect_flood_claim(m, n, SWIM_NOTICE_SUSPECT, n->suspect_inc, NULL);
    detect_ping(m, n, now);
}

static void detect_declare_dead(mesh *m, mesh_node *n, uint64_t now, const char *why)
{
    uint64_t inc = n->state == NODE_SUSPECT ? n->suspect_inc : n->has_record ? n->rec.seq : 0;
    log_info(MESH_LOG, "node %.16s dead: %s", n->id_hex, why);
    n->state = NODE_DEAD;
    m->counters.peers_dead++;
    n->down_at = now;
    n->probe_pending = 0;
    n->indirect_nonce = 0;
    detect_flood_claim(m, n, SWIM_NOTICE_DEAD, inc, NULL);
    /* Streams on its connection fail now (a forwarded request gets its error
     * at once, not at the idle timeout). Redial in the background with
     * backoff: if it was only cut off, the connection comes back. */
    if (n->link) mesh_link_close_now(n->link, "peer declared dead");
    n->failures++;
    mesh_node_want_connection(m, n, 0);
}

void detect_connection_lost(mesh *m, mesh_node *n, const char *reason)
{
    if (n->state == NODE_ALIVE) {
        char why[160];
        snprintf(why, sizeof why, "connection lost (%s)", reason ? reason : "closed");
        detect_suspect(m, n, detect_now_ms(), why);
    }
}

void detect_newer_record(mesh *m, mesh_node *n)
{
    if (n->state == NODE_SUSPECT && n->has_record && n->rec.seq > n->suspect_inc)
        detect_alive(m, n, "refuted");
    if (n->state == NODE_DEAD || n->state == NODE_LEFT || n->state == NODE_EXPIRED) {
        /* A new incarnation: it restarted (or refuted a wrong death). */
        log_info(MESH_LOG, "node %.16s is back with a newer record", n->id_hex);
        n->state = n->link ? NODE_ALIVE : NODE_CONNECTING;
        n->indirect_round = 0;
        n->has_left = 0;
        n->failures = 0;
    }
}

/* ---- notices (on gossip streams) --------------------------------------------*/

/* We are the subject of a SUSPECT or DEAD claim: refute it with a record
 * whose seq (our incarnation) is larger than the one claimed. */
static void detect_refute(mesh *m, const swim_notice *sn)
{
    if (m->left || m->test_mute || sn->incarnation < m->rec.seq) return;  /* old claim: already refuted */
    char from[MESH_ID_HEX];
    identity_id_hex(sn->from, from);
    log_info(MESH_LOG, "%.16s says this node is %s: refuting", from, swim_notice_name(sn->kind));
    gossip_publish(m);
}

int detect_on_notice(mesh *m, mesh_link *from, const uint8_t *p, size_t len)
{
    swim_notice sn;
    char err[160];
    if (swim_notice_decode(p, len, &sn, err, sizeof err) != 0) {
        log_warn(MESH_LOG, "peer %.16s sent a malformed notice: %s", from->node->id_hex, err);
        return -1;
    }
    uint64_t now = detect_now_ms();
    int self = memcmp(sn.node, m->self.public_key, MESH_ID_BYTES) == 0;
    if (sn.kind == SWIM_NOTICE_LEAVE) {
        if (self) return 0;                 /* ours, echoed back */
        mesh_node *n = mesh_node_find(m, sn.node);
        if (!n) return 0;                   /* never create a node from a notice */
        if ((n->has_left && sn.incarnation <= n->leave_inc) ||
            (n->has_record && sn.incarnation < n->rec.seq))
            return 0;                       /* seen, or older than what it published since */
        if (!swim_leave_verify(p, len)) {
            log_warn(MESH_LOG, "peer %.16s relayed a LEAVE with a bad signature", from->node->id_hex);
            return -1;
        }
        n->has_left = 1;
        n->leave_inc = sn.incarnation;
        gossip_broadcast(m, p, len, from);
        if (n->state != NODE_LEFT && n->state != NODE_EXPIRED) {
            log_info(MESH_LOG, "node %.16s left", n->id_hex);
            n->state = NODE_LEFT;
            m->counters.peers_left++;
            n->down_at = now;
        }
        n->probe_pending = 0;
        n->indirect_nonce = 0;
        n->failures = 0;
        evtimer_del(n->dial_timer);
        /* It drains its requests before it exits: streams already running
         * finish; it closes the connection itself when done. */
        if (n->link) mesh_link_close_when_idle(n->link, "peer left");
        return 0;
    }
    if (self) {
        detect_refute(m, &sn);
        return 0;
    }
    mesh_node *n = mesh_node_find(m, sn.node);
    if (!n || (n->has_record && sn.incarnation < n->rec.seq)) return 0;  /* unknown, or refuted */
    if (n->state == NODE_LEFT || n->state == NODE_EXPIRED) return 0;
    if (sn.kind == SWIM_NOTICE_SUSPECT) {
        /* Only forwarded, so that the suspect hears of it wherever it is
         * reachable from; our own view changes only on our own probes. */
        detect_flood_claim(m, n, SWIM_NOTICE_SUSPECT, sn.incarnation, from);
        return 0;
    }
    /* DEAD: forward (the subject refutes if it hears it), then verify with
     * our own round trip before believing it. */
    detect_flood_claim(m, n, SWIM_NOTICE_DEAD, sn.incarnation, from);
    if (n->state == NODE_DEAD) return 0;
    if (!n->link) {
        detect_declare_dead(m, n, now, "reported dead, and no connection of ours to check");
        return 0;
    }
    if (n->state == NODE_ALIVE) {
        n->state = NODE_SUSPECT;
        m->counters.peers_suspected++;
        n->suspect_inc = sn.incarnation;
        n->suspect_deadline = now + m->verify_ms;
        log_info(MESH_LOG, "node %.16s reported dead: verifying", n->id_hex);
    } else if (n->suspect_deadline > now + m->verify_ms) {
        n->suspect_deadline = now + m->verify_ms;
    }
    detect_ping(m, n, now);
    return 0;
}

/* ---- the control stream ------------------------------------------------------*/

static void detect_on_ack(mesh *m, mesh_node *from, uint64_t nonce)
{
    /* Any ACK from a peer answers some PING of ours on its authenticated
     * connection: it is alive, even when the ACK is late. */
    detect_alive(m, from, "answered a probe");
    /* An ACK to a PING we sent for a requester: pass it on. */
    for (int i = 0; i < MESH_RELAYS; i++) {
        if (!m->relays[i].expires || m->relays[i].nonce != nonce ||
            memcmp(m->relays[i].target, from->id, MESH_ID_BYTES) != 0)
            continue;
        m->relays[i].expires = 0;
        mesh_node *req = mesh_node_find(m, m->relays[i].requester);
        if (req && req->link) detect_send_probe(req->link, SWIM_ACK, m->relays[i].req_nonce, NULL);
    }
    /* An ACK from a helper to our PING_REQ: the target answered it. */
    for (mesh_node *n = m->nodes; n; n = n->next)
        if (n != from && n->indirect_nonce && n->indirect_nonce == nonce)
            detect_alive(m, n, "answered through another node");
}

static void detect_on_ping_req(mesh *m, mesh_node *from, uint64_t req_nonce, const uint8_t *target)
{
    if (memcmp(target, m->self.public_key, MESH_ID_BYTES) == 0) {
        detect_send_probe(from->link, SWIM_ACK, req_nonce, NULL);
        return;
    }
    mesh_node *t = mesh_node_find(m, target);
    if (!t || !t->link || !t->link->control) return;   /* we cannot help: the requester times out */
    uint64_t nonce = detect_nonce(m);
    if (detect_send_probe(t->link, SWIM_PING, nonce, NULL) != 0) return;
    /* A ring: under a flood of requests the oldest are forgotten first. */
    int i = m->next_relay;
    m->next_relay = (i + 1) % MESH_RELAYS;
    m->relays[i].nonce = nonce;
    m->relays[i].req_nonce = req_nonce;
    memcpy(m->relays[i].requester, from->id, MESH_ID_BYTES);
    memcpy(m->relays[i].target, target, MESH_ID_BYTES);
    m->relays[i].expires = detect_now_ms() + m->suspect_ms;
}

static void detect_on_frame(void *user, mesh_stream *s, const uint8_t *p, size_t len)
{
    mesh *m = user;
    if (!s->link) return;
    mesh_node *from = s->link->node;
    swim_probe pr;
    int rc = detect_read_probe(s, p, len, &pr);
    if (rc != 0 || m->test_mute || m->left) return;  /* malformed, or a newer version's kind */
    if (!from) {
        /* A passive client checks that a host it waits on still runs. */
        if (pr.kind == SWIM_PING) detect_send_on(s, SWIM_ACK, pr.nonce, NULL);
        return;
    }
    switch (pr.kind) {
    case SWIM_PING: detect_send_on(s, SWIM_ACK, pr.nonce, NULL); break;
    case SWIM_ACK: detect_on_ack(m, from, pr.nonce); break;
    case SWIM_PING_REQ: detect_on_ping_req(m, from, pr.nonce, pr.target); break;
    }
}

static void detect_on_fin(void *user, mesh_stream *s) { mesh_stream_finish(s); }

static void detect_on_close(void *user, mesh_stream *s, const char *error)
{
    if (error && log_enabled(LOG_DEBUG)) {
        char hex[MESH_ID_HEX];
        identity_id_hex(s->peer, hex);
        log_debug(MESH_LOG, "control stream with %.16s closed: %s", hex, error);
    }
}

static const mesh_stream_handlers detect_handlers = {detect_on_frame, detect_on_fin, detect_on_close};

static void detect_accept(void *ctx, mesh_stream *s)
{
    mesh_stream_set_handlers(s, &detect_handlers, ctx);
    assert(s->link);
    s->link->control = s;
}

void detect_start(mesh_link *l)
{
    if (l->control) return;
    mesh_stream *s = mesh_stream_open_on(l, MESH_STREAM_CONTROL, &detect_handlers, l->m);
    if (!s) {
        log_warn(MESH_LOG, "cannot open the control stream to %.16s", l->node->id_hex);
        return;
    }
    l->control = s;
}

/* ---- the clock ----------------------------------------------------------------*/

static void detect_round(mesh *m, uint64_t now)
{
    /* Every suspect, and up to MESH_PROBES_PER_ROUND alive peers after the
     * cursor: with up to 8 peers each is probed every interval (fast
     * detection in small meshes); beyond that the load per node stays
     * bounded and each peer's turn comes every n/8 intervals. */
    int sent = 0;
    mesh_node *first = NULL, *last = NULL;
    for (int pass = 0; pass < 2 && sent < MESH_PROBES_PER_ROUND; pass++)
        for (mesh_node *n = m->nodes; n && sent < MESH_PROBES_PER_ROUND; n = n->next) {
            int after = memcmp(n->id, m->probe_cursor, MESH_ID_BYTES) > 0;
            if (pass == 0 ? !after : after) continue;
            if (n == first) break;
            if (n->state != NODE_ALIVE || !n->link) continue;
            if (!first) first = n;
            detect_ping(m, n, now);
            last = n;
            sent++;
        }
    if (last) memcpy(m->probe_cursor, last->id, MESH_ID_BYTES);
    /* Dead nodes we are connected to again (our redial, or theirs) must
     * answer a probe to count as alive. */
    for (mesh_node *n = m->nodes; n; n = n->next)
        if (n->state == NODE_SUSPECT || (n->state == NODE_DEAD && n->link)) detect_ping(m, n, now);
}

static void detect_expire(mesh *m, mesh_node *n)
{
    log_info(MESH_LOG, "node %.16s forgotten (%s for %u s)", n->id_hex,
             n->state == NODE_LEFT ? "left" : "dead", m->dead_ttl_ms / 1000);
    n->state = NODE_EXPIRED;
    n->failures = 0;
    evtimer_del(n->dial_timer);
    if (n->link) mesh_link_close_now(n->link, "peer forgotten");
}

static void detect_cb(evutil_socket_t fd, short what, void *arg)
{
    mesh *m = arg;
    if (m->left || m->freeing || m->test_mute) return;
    uint64_t now = detect_now_ms();
    for (mesh_node *n = m->nodes; n; n = n->next) {
        if (n->probe_pending && now >= n->probe_deadline) {
            /* The ACK may still come (QUIC retransmits) and then counts. */
            n->probe_pending = 0;
            if (n->state == NODE_ALIVE && !n->indirect_round) {
                /* Second chance before suspicion: under loss this is where
                 * QUIC's retransmission of the first PING or ACK lands. */
                n->indirect_round = 1;
                detect_ping_indirect(m, n);
                detect_ping(m, n, now);
            } else if (n->state == NODE_ALIVE) {
                detect_suspect(m, n, now, "no answer to a probe, direct or indirect");
            }
        }
        if (n->state == NODE_SUSPECT && now >= n->suspect_deadline)
            detect_declare_dead(m, n, now, "no answer, direct or indirect, within the suspicion time");
        if ((n->state == NODE_DEAD || n->state == NODE_LEFT) && now - n->down_at >= m->dead_ttl_ms)
            detect_expire(m, n);
    }
    for (int i = 0; i < MESH_RELAYS; i++)
        if (m->relays[i].expires && now >= m->relays[i].expires) m->relays[i].expires = 0;
    if (now >= m->next_round) {
        m->next_round = now + m->probe_interval_ms;
        detect_round(m, now);
    }
}

int detect_init(mesh *m, const mesh_config *cfg)
{
    m->probe_interval_ms = cfg->probe_interval_ms ? cfg->probe_interval_ms : MESH_PROBE_INTERVAL_MS;
    m->probe_timeout_ms = cfg->probe_timeout_ms ? cfg->probe_timeout_ms : MESH_PROBE_TIMEOUT_MS;
    m->suspect_ms = cfg->suspect_timeout_ms ? cfg->suspect_timeout_ms : MESH_SUSPECT_MS;
    m->verify_ms = m->suspect_ms / 2 > m->probe_timeout_ms ? m->suspect_ms / 2 : m->probe_timeout_ms;
    m->dead_ttl_ms = cfg->dead_ttl_ms ? cfg->dead_ttl_ms : MESH_DEAD_TTL_MS;
    evutil_secure_rng_get_bytes(&m->next_nonce, sizeof m->next_nonce);
    if (m->passive) return 0;   /* clients probe only hosts in use (passive.c) */
    m->detect_ev = event_new(m->base, -1, EV_PERSIST, detect_cb, m);
    if (!m->detect_ev) return -1;
    /* Deadlines are checked at a quarter of the probe timeout (at most
     * 100 ms): late by that much at worst, for a few hundred wake-ups a
     * minute. */
    uint32_t step = m->probe_timeout_ms / 4;
    if (step > 100) step = 100;
    if (step < 5) step = 5;
    struct timeval tv = {0, (suseconds_t)step * 1000};
    event_add(m->detect_ev, &tv);
    m->next_round = detect_now_ms() + m->probe_interval_ms;
    return 0;
}

void detect_free(mesh *m)
{
    if (m->detect_ev) event_free(m->detect_ev);
    m->detect_ev = NULL;
}

void detect_register(mesh *m)
{
    m->types[MESH_STREAM_CONTROL].fn = detect_accept;
    m->types[MESH_STREAM_CONTROL].ctx = m;
}
