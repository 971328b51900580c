/* gossip.c: spreading node records (docs/PROTOCOL.md "Gossip", docs/mesh.md).
 *
 * Each connection carries one GOSSIP stream, opened by the side that dialled.
 * When it opens, each side sends every record it holds (its own first); after
 * that a record is pushed when it changes: a node's own record when it
 * publishes a new one, and any record learned that is newer than the one
 * held, to every other connection (flooding; newer-seq-wins stops the flood).
 * Every MESH_TICK_MS each node re-sends its own record on every connection:
 * that keeps idle connections alive and costs one small frame.
 *
 * Records are signed by their node and checked before they are believed, so
 * a peer can relay records but cannot forge or alter them.
 *
 * Not here: connections and dialling (mesh.c), frames (stream.c). */
#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/log.h"
#include "mesh/mesh_private.h"
#include "mesh/swim.h"

static void gossip_send_table(mesh *m, mesh_stream *s)
{
    if (mesh_stream_send(s, m->raw, m->raw_len) != 0) return;
    for (mesh_node *n = m->nodes; n; n = n->next)
        /* Dead, left and forgotten nodes are not passed on: a newcomer would
         * only dial them in vain; they spread their own record if they return. */
        if (n->has_record && n != s->link->node &&
            (n->state == NODE_CONNECTING || n->state == NODE_ALIVE || n->state == NODE_SUSPECT) &&
            mesh_stream_send(s, n->raw, n->raw_len) != 0)
            return;
}

void gossip_broadcast(mesh *m, const uint8_t *raw, size_t len, const mesh_link *skip)
{
    for (mesh_link *l = m->links; l; l = l->next)
        if (l != skip && l->gossip) mesh_stream_send(l->gossip, raw, len);
}

static uint64_t gossip_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void gossip_publish(mesh *m)
{
    /* seq follows the wall clock in milliseconds, and always moves forward:
     * a restarted node's first record then beats the one peers remember from
     * its previous run (a node that finds a record of itself with a larger
     * seq, after a clock step back, jumps past it: see gossip_merge). */
    uint64_t now = gossip_now_ms();
    m->rec.seq = now > m->rec.seq ? now : m->rec.seq + 1;
    char err[256];
    int n = record_encode(&m->rec, &m->self, m->raw, sizeof m->raw, err, sizeof err);
    if (n < 0) {
        /* Signing with a key that loaded and self-checked cannot fail short of
         * memory exhaustion; keep the old record and try again next change. */
        log_error(MESH_LOG, "cannot sign this node's record: %s", err);
        return;
    }
    m->raw_len = (size_t)n;
    m->dirty = 0;
    log_debug(MESH_LOG, "record seq %llu published", (unsigned long long)m->rec.seq);
    gossip_broadcast(m, m->raw, m->raw_len, NULL);
}

/* Takes in one record from a peer. -1 when it is malformed or forged (the
 * caller resets the stream), 0 otherwise (also when it is old news). */
static int gossip_merge(mesh *m, mesh_link *from, const uint8_t *p, size_t len)
{
    node_record rec;
    char err[256];
    if (record_decode(p, len, &rec, err, sizeof err) != 0) {
        log_warn(MESH_LOG, "peer %.16s sent a malformed node record: %s", from->node->id_hex, err);
        return -1;
    }
    if (memcmp(rec.id, m->self.public_key, MESH_ID_BYTES) == 0) {
        if (rec.seq > m->rec.seq && record_verify(p, len, rec.id)) {
            /* Our own record from an earlier run (or a clock that stepped
             * back) outranks the current one: jump past it. */
            m->rec.seq = rec.seq;
            gossip_publish(m);
        }
        return 0;
    }
    mesh_node *n = mesh_node_find(m, rec.id);
    if (n && n->has_record && rec.seq <= n->rec.seq) return 0;   /* old news: the common case */
    if (n && n->has_left && rec.seq <= n->leave_inc) return 0;   /* from before its LEAVE */
    if (!record_verify(p, len, rec.id)) {
        log_warn(MESH_LOG, "peer %.16s sent a node record with a bad signature", from->node->id_hex);
        return -1;
    }
    if (!n) n = mesh_node_get(m, rec.id);
    if (!n) return 0;                                             /* table full: logged there */
    uint8_t *raw = malloc(len);
    if (!raw) return 0;
    memcpy(raw, p, len);
    free(n->raw);
    n->raw = raw;
    n->raw_len = len;
    int was_known = n->has_record;
    n->rec = rec;
    n->has_record = 1;
    log_debug(MESH_LOG, "record of %.16s seq %llu (%s, %d models) via %.16s", n->id_hex,
              (unsigned long long)rec.seq, record_role_name(rec.role), rec.n_models, from->node->id_hex);
    gossip_broadcast(m, raw, len, from);
    /* A newer record refutes a suspicion, or is a dead node's new life. */
    int was_down = was_known && (n->state == NODE_DEAD || n->state == NODE_LEFT || n->state == NODE_EXPIRED);
    detect_newer_record(m, n);
    /* A new record of a node we cannot reach: it may have come back, with
     * new addresses perhaps; try now rather than at the end of a backoff. */
    if (!n->link) mesh_node_want_connection(m, n, was_down);
    return 0;
}

static void gossip_on_frame(void *user, mesh_stream *s, const uint8_t *p, size_t len)
{
    mesh *m = user;
    if (!s->link) return;
    if (len == 0) {
        mesh_stream_reject(s, "empty gossip frame");
        return;
    }
    /* Kinds this version does not know are skipped: a newer node may send
     * more kinds of news on the same stream. */
    if (p[0] == SWIM_NOTICE_SUSPECT || p[0] == SWIM_NOTICE_DEAD || p[0] == SWIM_NOTICE_LEAVE) {
        if (detect_on_notice(m, s->link, p, len) != 0) mesh_stream_reject(s, "malformed notice");
        return;
    }
    if (p[0] != RECORD_KIND_NODE) return;
    if (gossip_merge(m, s->link, p, len) != 0) mesh_stream_reject(s, "malformed node record");
}

static void gossip_on_fin(void *user, mesh_stream *s)
{
    mesh_stream_finish(s);
}

static void gossip_on_close(void *user, mesh_stream *s, const char *error)
{
    if (error && log_enabled(LOG_DEBUG)) {
        char hex[MESH_ID_HEX];
        identity_id_hex(s->peer, hex);
        log_debug(MESH_LOG, "gossip stream with %.16s closed: %s", hex, error);
    }
}

static const mesh_stream_handlers gossip_handlers = {gossip_on_frame, gossip_on_fin, gossip_on_close};

static void gossip_accept(void *ctx, mesh_stream *s)
{
    mesh *m = ctx;
    mesh_stream_set_handlers(s, &gossip_handlers, m);
    assert(s->link);
    s->link->gossip = s;
    gossip_send_table(m, s);
}

void gossip_register(mesh *m)
{
    m->types[MESH_STREAM_GOSSIP].fn = gossip_accept;
    m->types[MESH_STREAM_GOSSIP].ctx = m;
}

void gossip_start(mesh_link *l)
{
    mesh_stream *s = mesh_stream_open_on(l, MESH_STREAM_GOSSIP, &gossip_handlers, l->m);
    if (!s) {
        log_warn(MESH_LOG, "cannot open the gossip stream to %.16s", l->node->id_hex);
        return;
    }
    l->gossip = s;
    gossip_send_table(l->m, s);
}
