/* mesh.c: membership of the mesh: this node's identity and token, the table
 * of known nodes, and one QUIC connection to each of them (see mesh.h).
 *
 * Connections. Every node dials every node it knows of (full mesh), pinned
 * to the node's id; incoming connections are authenticated by their key and
 * that key is the node's id. A dial tries all of a node's addresses at once
 * and keeps the first connection that completes. Two nodes that dial each
 * other at the same moment end up with two connections; both sides keep the
 * one dialled by the lower id (a rule both can apply without talking) and
 * close the other once no stream uses it. To make that rare, the higher id
 * waits MESH_YIELD_MS before dialling a node it learned of by gossip or lost,
 * which gives the lower id time to dial first. Details in docs/mesh.md.
 *
 * Peer states: "connecting" while the first dial is under way, "alive" with
 * a connection, and the failure detector's "suspect", "dead" and "left"
 * (detect.c decides those; this file tells it when connections come and go).
 * Dead nodes are redialled with exponential backoff and jitter; left and
 * expired ones are not, except that a node with no peer at all redials its
 * bootstrap (join-token) nodes whatever their state.
 *
 * Not here: the stream machinery (stream.c), record exchange (gossip.c), the
 * failure detector (detect.c). */
#include <assert.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/log.h"
#include "mesh/mesh_private.h"
#include "mesh/nat.h"
#include "mesh/swim.h"

_Static_assert(MESH_ID_BYTES == QUIC_KEY_BYTES && MESH_ID_BYTES == IDENTITY_KEY_BYTES,
               "node ids, QUIC keys and identity keys are the same 32 bytes");
_Static_assert(MESH_ID_HEX == IDENTITY_HEX_BYTES, "hex id size");
_Static_assert(ADDR_TEXT_MAX <= sizeof(((mesh_peer *)0)->addresses[0]), "address text fits mesh_peer");

static const char *const node_state_names[] = {"connecting", "alive", "suspect", "dead", "left", "expired"};

const char *mesh_node_state_name(node_state st) { return node_state_names[st]; }

static void mesh_timer_add_ms(struct event *ev, uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(ev, &tv);
}

int mesh_any_alive(const mesh *m)
{
    for (const mesh_node *n = m->nodes; n; n = n->next)
        if (n->link) return 1;
    return 0;
}

/* ---- node table ---------------------------------------------------------------*/

static void mesh_dial_timer_cb(evutil_socket_t fd, short what, void *arg);

mesh_node *mesh_node_find(const mesh *m, const uint8_t id[MESH_ID_BYTES])
{
    for (mesh_node *n = m->nodes; n; n = n->next) {
        int c = memcmp(n->id, id, MESH_ID_BYTES);
        if (c == 0) return n;
        if (c > 0) break;
    }
    return NULL;
}

mesh_node *mesh_node_get(mesh *m, const uint8_t id[MESH_ID_BYTES])
{
    assert(memcmp(id, m->self.public_key, MESH_ID_BYTES) != 0);
    mesh_node *n = mesh_node_find(m, id);
    if (n) return n;
    if (m->n_nodes >= MESH_MAX_NODES) {
        /* Make room by forgetting an expired node for good (its tombstone
         * goes: a relay could bring its old record back, which costs one
         * failed dial and another TTL). */
        for (mesh_node **at = &m->nodes; *at; at = &(*at)->next) {
            mesh_node *o = *at;
            if (o->state != NODE_EXPIRED || o->link || o->dialing || o->bootstrap) continue;
            *at = o->next;
            for (mesh_link *l = m->links; l; l = l->next)
                if (l->node == o) l->node = NULL;
            event_free(o->dial_timer);
            free(o->raw);
            free(o);
            m->n_nodes--;
            break;
        }
    }
    if (m->n_nodes >= MESH_MAX_NODES) {
        log_warn(MESH_LOG, "node table full (%d nodes): ignoring a new node", MESH_MAX_NODES);
        return NULL;
    }
    n = calloc(1, sizeof *n);
    if (!n) return NULL;
    n->m = m;
    memcpy(n->id, id, MESH_ID_BYTES);
    identity_id_hex(id, n->id_hex);
    n->state = NODE_CONNECTING;
    n->dial_timer = evtimer_new(m->base, mesh_dial_timer_cb, n);
    if (!n->dial_timer) {
        free(n);
        return NULL;
    }
    /* Sorted by id: mesh_peers and mesh_pick_host are deterministic. */
    mesh_node **at = &m->nodes;
    while (*at && memcmp((*at)->id, id, MESH_ID_BYTES) < 0) at = &(*at)->next;
    n->next = *at;
    *at = n;
    m->n_nodes++;
    return n;
}

/* ---- links (one per QUIC connection) ----------------------------------------*/

static mesh_link *mesh_link_new(mesh *m, quic_conn *c, mesh_node *n, int outgoing)
{
    mesh_link *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->m = m;
    l->qc = c;
    l->node = n;
    memcpy(l->peer, quic_conn_peer_key(c), MESH_ID_BYTES);
    /* A client's connection no request used yet counts as idle from the
     * start: one dialled for a routing pull closes once the pull is done. */
    l->last_active = m->passive && outgoing ? 0 : detect_now_ms();
    l->outgoing = outgoing;
    l->next = m->links;
    m->links = l;
    quic_conn_set_user(c, l);
    return l;
}

mesh_link *mesh_link_dial(mesh *m, quic_conn *c, mesh_node *n)
{
    mesh_link *l = mesh_link_new(m, c, n, 1);
    if (!l) {
        quic_conn_close(c, "out of memory");
        return NULL;
    }
    n->dialing++;
    return l;
}

static void mesh_link_unlink(mesh *m, mesh_link *l)
{
    for (mesh_link **at = &m->links; *at; at = &(*at)->next)
        if (*at == l) {
            *at = l->next;
            return;
        }
}

static void mesh_sweep_cb(evutil_socket_t fd, short what, void *arg)
{
    mesh *m = arg;
    /* quic_conn_close may free the link (and change the list) before it
     * returns: start over after each close. */
again:
    for (mesh_link *l = m->links; l; l = l->next) {
        if (l->want_close && !l->close_sent && (!l->ready || l->user_streams == 0 || l->force_close)) {
            l->close_sent = 1;
            log_debug(MESH_LOG, "closing connection to %.16s: %s", l->node ? l->node->id_hex : "?",
                      l->close_reason);
            quic_conn_close(l->qc, l->close_reason);
            goto again;
        }
    }
}

void mesh_schedule_sweep(mesh *m)
{
    if (!m->freeing) event_active(m->sweep_ev, 0, 0);
}

/* Closes l as soon as no user stream runs on it (never from inside a QUIC
 * callback: the sweep runs from the loop). */
static void mesh_link_retire(mesh_link *l, const char *reason)
{
    l->want_close = 1;
    l->close_reason = reason;
    mesh_schedule_sweep(l->m);
}

void mesh_link_close_now(mesh_link *l, const char *reason)
{
    if (l->node && l->node->link == l) l->node->link = NULL;
    l->force_close = 1;
    mesh_link_retire(l, reason);
}

void mesh_link_close_when_idle(mesh_link *l, const char *reason)
{
    if (l->node && l->node->link == l) l->node->link = NULL;
    mesh_link_retire(l, reason);
}

/* ---- bans: peers that keep sending malformed frames -----------------------------*/

static int mesh_banned(mesh *m, const uint8_t id[MESH_ID_BYTES])
{
    uint64_t now = detect_now_ms();
    for (int i = 0; i < MESH_BANS; i++)
        if (m->bans[i].until > now && !memcmp(m->bans[i].id, id, MESH_ID_BYTES)) return 1;
    return 0;
}

void mesh_link_bad_frame(mesh_link *l)
{
    mesh *m = l->m;
    uint64_t now = detect_now_ms();
    if (now - l->bad_window_start > MESH_BAD_WINDOW_MS) {
        l->bad_window_start = now;
        l->bad_in_window = 0;
    }
    if (++l->bad_in_window < (int)m->bad_frames_max || l->banned) return;
    l->banned = 1;
    /* A free or expired slot, else the ban that ends first. */
    int slot = 0;
    for (int i = 1; i < MESH_BANS; i++)
        if (m->bans[i].until < m->bans[slot].until) slot = i;
    memcpy(m->bans[slot].id, l->peer, MESH_ID_BYTES);
    m->bans[slot].until = now + m->ban_ms;
    m->counters.peers_banned++;
    char hex[MESH_ID_HEX];
    identity_id_hex(l->peer, hex);
    log_warn(MESH_LOG, "peer %.16s sent %u malformed frames within %d s: disconnected, refused for %u s",
             hex, (unsigned)m->bad_frames_max, MESH_BAD_WINDOW_MS / 1000, (unsigned)(m->ban_ms / 1000));
    /* Closed as a lost connection (the node stays its link until then), so
     * the failure detector sees it go; redials are refused by the ban. */
    l->force_close = 1;
    mesh_link_retire(l, "too many malformed frames");
}

void mesh_link_stream_gone(mesh_link *l)
{
    if (l->want_close && l->user_streams == 0) mesh_schedule_sweep(l->m);
}

static const uint8_t *mesh_link_dialer(const mesh *m, const mesh_link *l)
{
    return l->outgoing ? m->self.public_key : l->node->id;
}

/* ---- dialling -----------------------------------------------------------------*/

/* The sockaddr to reach a with our socket; -1 when our socket cannot (an
 * IPv6 target from an IPv4 socket, IPv4 from a socket bound to one IPv6 IP). */
static int mesh_dial_sockaddr(const mesh *m, const mesh_addr *a, struct sockaddr_storage *ss,
                              socklen_t *len)
{
    if (m->listen.family == a->family) {
        addr_to_sockaddr(a, ss, len);
        return 0;
    }
    if (a->family == ADDR_FAMILY_IPV6 || !addr_is_wildcard(&m->listen)) return -1;
    /* IPv4 target from a dual-stack IPv6 socket: the v4-mapped form. */
    mesh_addr mapped = {.family = ADDR_FAMILY_IPV6, .port = a->port};
    mapped.ip[10] = mapped.ip[11] = 0xff;
    memcpy(mapped.ip + 12, a->ip, 4);
    addr_to_sockaddr(&mapped, ss, len);
    return 0;
}

static int mesh_dial_candidates(const mesh_node *n, mesh_addr *out)
{
    int count = 0;
    const mesh_addr *lists[3] = {n->has_record ? n->rec.addrs : NULL, n->token_addrs,
                                 n->has_seen_addr ? &n->seen_addr : NULL};
    int sizes[3] = {n->has_record ? n->rec.n_addrs : 0, n->n_token_addrs, n->has_seen_addr};
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < sizes[k]; i++) {
            int dup = 0;
            for (int j = 0; j < count && !dup; j++) dup = addr_compare(&out[j], &lists[k][i]) == 0;
            if (!dup && count < MESH_DIAL_MAX) out[count++] = lists[k][i];
        }
    return count;
}

static uint64_t mesh_backoff_ms(mesh *m, const mesh_node *n)
{
    uint64_t cap = n->bootstrap && !mesh_any_alive(m) ? MESH_BOOTSTRAP_MAX_MS : MESH_BACKOFF_MAX_MS;
    uint64_t ms = MESH_BACKOFF_MIN_MS;
    for (int i = 1; i < n->failures && ms < cap; i++) ms *= 2;
    if (ms > cap) ms = cap;
    /* +-25% so that nodes that lost the same peer do not redial in step. */
    uint32_t r;
    evutil_secure_rng_get_bytes(&r, sizeof r);
    return ms * 3 / 4 + r % (ms / 2 + 1);
}

void mesh_node_want_connection(mesh *m, mesh_node *n, int now)
{
    /* A passive client dials only when it opens a stream (mesh_node_dial_now). */
    if (m->passive || m->freeing || m->left || n->link || n->dialing) return;
    /* Left and forgotten nodes are not dialled; but a node cut off from
     * everyone goes back to its join tokens, whatever became of them. */
    if ((n->state == NODE_LEFT || n->state == NODE_EXPIRED) && !(n->bootstrap && !mesh_any_alive(m)))
        return;
    uint64_t delay;
    if (n->failures > 0)
        delay = now ? 0 : mesh_backoff_ms(m, n);
    else if (now || n->bootstrap || memcmp(m->self.public_key, n->id, MESH_ID_BYTES) < 0)
        delay = 0;
    else
        delay = MESH_YIELD_MS;
    /* A pending timer that fires sooner stays. */
    struct timeval left;
    if (evtimer_pending(n->dial_timer, &left)) {
        struct timeval cur;
        event_base_gettimeofday_cached(m->base, &cur);
        uint64_t due = (uint64_t)left.tv_sec * 1000 + (uint64_t)left.tv_usec / 1000;
        uint64_t at = (uint64_t)cur.tv_sec * 1000 + (uint64_t)cur.tv_usec / 1000 + delay;
        if (due <= at) return;
    }
    mesh_timer_add_ms(n->dial_timer, delay);
}

static void mesh_node_dial_failed(mesh *m, mesh_node *n, const char *reason)
{
    n->failures++;
    /* The peer closed the connection on our proof: say it once, clearly. */
    if (n->failures == 1 && reason && strstr(reason, "closed by peer: admission refused"))
        log_warn(MESH_LOG, "node %.16s refused this node: our mesh secret is not its mesh's (use a "
                 "token printed by a member of that mesh)", n->id_hex);
    if (m->passive) {
        passive_dial_failed(m, n, reason);
        return;
    }
    /* A suspect stays suspect (the suspicion timeout decides, and peers may
     * still reach it); a node never reached is dead to us. */
    if (n->state == NODE_CONNECTING) {
        log_info(MESH_LOG, "node %.16s unreachable: %s", n->id_hex, reason ? reason : "dial failed");
        n->state = NODE_DEAD;
        m->counters.peers_dead++;
        n->down_at = detect_now_ms();
    } else {
        log_debug(MESH_LOG, "redial of %.16s failed: %s", n->id_hex, reason ? reason : "dial failed");
    }
    mesh_node_want_connection(m, n, 0);
}

static void mesh_node_dial(mesh *m, mesh_node *n)
{
    if (m->freeing || m->left || n->link || n->dialing) return;
    mesh_addr cands[MESH_DIAL_MAX];
    int count = mesh_dial_candidates(n, cands);
    char err[256] = "no address of it can be dialled from this socket";
    for (int i = 0; i < count; i++) {
        struct sockaddr_storage ss;
        socklen_t len;
        if (mesh_dial_sockaddr(m, &cands[i], &ss, &len) != 0) continue;
        quic_conn *c = quic_connect(m->ep, (struct sockaddr *)&ss, len, n->id, err, sizeof err);
        if (!c) continue;
        if (!mesh_link_new(m, c, n, 1)) {
            quic_conn_close(c, "out of memory");
            continue;
        }
        n->dialing++;
        if (log_enabled(LOG_DEBUG)) {
            char text[ADDR_TEXT_MAX];
            addr_format(&cands[i], text);
            log_debug(MESH_LOG, "dialling %.16s at %s", n->id_hex, text);
        }
    }
    /* Introductions for punching; a relay if still nothing. A passive
     * client reaches members directly (docs/mesh.md, "Passive clients"). */
    if (!m->passive) nat_dial_started(m, n);
    if (n->dialing == 0) mesh_node_dial_failed(m, n, err);
}

void mesh_node_dial_now(mesh *m, mesh_node *n) { mesh_node_dial(m, n); }

static void mesh_dial_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    mesh_node *n = arg;
    /* On a passive client the timer is never a redial: it fails the streams
     * that waited for a dial that failed (outside QUIC's callbacks). */
    if (n->m->passive) {
        if (!n->link && !n->dialing) mesh_node_fail_pending(n, n->down_reason);
        return;
    }
    mesh_node_dial(n->m, n);
}

/* ---- connection events --------------------------------------------------------*/

/* n has a usable connection again. */
static void mesh_node_up(mesh *m, mesh_node *n)
{
    n->failures = 0;
    evtimer_del(n->dial_timer);
    detect_node_up(m, n);
    /* A node we declared dead must answer a probe (detect.c) to be alive
     * again: a completed handshake shows that its QUIC stack runs, not that
     * the node does (a hung process's kernel still answers nothing, but a
     * half-hung one might). */
    if (n->state != NODE_ALIVE && n->state != NODE_DEAD && !m->passive)
        log_info(MESH_LOG, "node %.16s connected (%s)", n->id_hex,
                 n->has_record ? record_role_name(n->rec.role) : "role not yet known");
    /* (A client has no probes: a connection is all it knows of a node.) */
    if (n->state != NODE_DEAD || m->passive) n->state = NODE_ALIVE;
    /* Our other handshakes to it (the parallel dial) are not needed any
     * more, unless the new connection is the peer's and we have the lower
     * id: then the peer keeps ours once it completes (duplicate rule), and
     * dropping it here would leave both sides without a connection. */
    if (!n->link->outgoing && memcmp(m->self.public_key, n->id, MESH_ID_BYTES) < 0) return;
    for (mesh_link *o = m->links; o; o = o->next)
        if (o->node == n && o->outgoing && !o->ready && !o->want_close)
            mesh_link_retire(o, "already connected");
}

/* By convention the dialler opens the gossip and control streams. */
static void mesh_link_start_streams(mesh_link *l)
{
    if (!l->gossip) gossip_start(l);
    detect_start(l);
}

/* l just became ready: make it n's connection, or settle a duplicate. */
static void mesh_node_adopt(mesh *m, mesh_node *n, mesh_link *l)
{
    mesh_link *cur = n->link;
    if (!cur) {
        n->link = l;
        mesh_node_up(m, n);
        if (m->passive) {
            mesh_node_flush_pending(n);
            return;
        }
        if (l->outgoing) mesh_link_start_streams(l);
        return;
    }
    int c = memcmp(mesh_link_dialer(m, cur), mesh_link_dialer(m, l), MESH_ID_BYTES);
    /* A direct connection beats a relayed one, whoever dialled them: both
     * ends see the same kinds, so both keep the same one. */
    if (nat_link_relayed(cur) != nat_link_relayed(l)) c = nat_link_relayed(cur) ? 1 : -1;
    if (c != 0) {
        /* Dialled by different nodes: both sides keep the lower id's. */
        mesh_link *keep = c < 0 ? cur : l, *drop = c < 0 ? l : cur;
        n->link = keep;
        mesh_link_retire(drop, "duplicate connection");
        if (keep->outgoing) mesh_link_start_streams(keep);
        return;
    }
    /* Dialled twice by the same node: only the dialler closes one (the
     * newer), or the two sides could close different ones. */
    if (l->outgoing) mesh_link_retire(l, "duplicate connection");
}

/* n's connection l is gone. */
static void mesh_node_lost(mesh *m, mesh_node *n, mesh_link *l, const char *reason)
{
    assert(n->link == l);
    n->link = NULL;
    /* Another ready connection to it (a duplicate being retired) takes over. */
    mesh_link *best = NULL;
    for (mesh_link *o = m->links; o; o = o->next)
        if (o != l && o->node == n && o->ready && !o->close_sent &&
            (!best || o->ready_order < best->ready_order))
            best = o;
    if (best) {
        best->want_close = 0;
        n->link = best;
        if (best->outgoing && !m->passive) mesh_link_start_streams(best);
        return;
    }
    if (m->passive) {
        passive_link_lost(m, n, l->want_close);
        return;
    }
    if (n->state == NODE_LEFT || n->state == NODE_EXPIRED || n->state == NODE_DEAD) return;
    log_debug(MESH_LOG, "node %.16s disconnected: %s", n->id_hex, reason ? reason : "closed");
    if (n->state == NODE_ALIVE) detect_connection_lost(m, n, reason);
    n->failures = 0;
    mesh_node_want_connection(m, n, 0);
}

static void mesh_conn_ready(void *user, quic_conn *c)
{
    mesh *m = user;
    mesh_link *l = quic_conn_user(c);
    if (!l) {
        l = mesh_link_new(m, c, NULL, 0);
        if (!l) {
            quic_conn_close(c, "out of memory");
            return;
        }
        if (memcmp(quic_conn_peer_key(c), m->self.public_key, MESH_ID_BYTES) == 0) {
            mesh_link_retire(l, "connection from this node's own key");
            return;
        }
        if (m->passive) {
            mesh_link_retire(l, "a passive client accepts no connections");
            return;
        }
    }
    if (mesh_banned(m, l->peer)) {
        m->counters.banned_refused++;
        mesh_link_close_now(l, "banned for malformed frames");
        return;
    }
    /* Nothing of the peer is taken, and it is in no table, until it has
     * proved it knows the mesh secret (admission.c). */
    admission_start(l);
}

void mesh_link_admitted(mesh_link *l)
{
    mesh *m = l->m;
    quic_conn *c = l->qc;
    mesh_node *n;
    if (!l->outgoing) {
        if (quic_conn_is_passive(c)) {
            /* A client: no node, no gossip, no probes; routes and tunnels. */
            l->ready = 1;
            l->ready_order = ++m->link_order;
            passive_link_accepted(m, l);
            return;
        }
        n = mesh_node_get(m, l->peer);
        if (!n) {
            mesh_link_retire(l, "node table full");
            return;
        }
        l->node = n;
        socklen_t sl;
        const struct sockaddr *sa = quic_conn_remote_addr(c, &sl);
        if (sa && addr_from_sockaddr(sa, sl, &n->seen_addr) == 0) n->has_seen_addr = 1;
    } else {
        n = l->node;
        assert(n && n->dialing > 0);
        n->dialing--;
    }
    l->ready = 1;
    l->ready_order = ++m->link_order;
    if (l->want_close) return;       /* a parallel dial that lost the race */
    mesh_node_adopt(m, n, l);
    if (!m->passive) nat_link_ready(l);
    /* Streams the peer opened as soon as it had admitted us. */
    mesh_link_release_held(l);
}

static void mesh_conn_closed(void *user, quic_conn *c, const char *reason)
{
    mesh *m = user;
    mesh_link *l = quic_conn_user(c);
    if (!l) return;
    mesh_link_unlink(m, l);
    mesh_link_drop_streams(l, reason ? reason : "connection closed");
    admission_link_free(l);
    if (l->passive) passive_link_closed(m, l);
    mesh_node *n = l->node;
    if (n && l->ready) {
        /* The peer's byte counts go on across its connections. */
        uint64_t rx, tx;
        quic_conn_bytes(c, &rx, &tx);
        n->rx_past += rx;
        n->tx_past += tx;
    }
    if (n && !l->ready) {
        assert(l->outgoing && n->dialing > 0);
        n->dialing--;
        if (!m->freeing && !n->link && n->dialing == 0) mesh_node_dial_failed(m, n, reason);
    } else if (n && n->link == l) {
        if (m->freeing) n->link = NULL;
        else mesh_node_lost(m, n, l, reason);
    }
    free(l);
}

static void mesh_stream_opened(void *user, quic_stream *qs)
{
    mesh_link *l = quic_conn_user(quic_stream_conn(qs));
    /* Members take streams from members and clients; clients from nobody.
     * In admission, stream.c decides (only the proof is taken). */
    if (l && l->admitting && !l->m->passive) {
        mesh_stream_incoming(l, qs);
        return;
    }
    if (!l || !l->ready || (!l->node && !l->passive) || l->m->passive) {
        quic_stream_reset(qs, MESH_RESET_REFUSED);
        return;
    }
    mesh_stream_incoming(l, qs);
}

static const quic_endpoint_callbacks mesh_quic_callbacks = {mesh_conn_ready, mesh_conn_closed,
                                                            mesh_stream_opened};

/* ---- this node's record ------------------------------------------------------*/

static void mesh_publish_cb(evutil_socket_t fd, short what, void *arg)
{
    mesh *m = arg;
    if (m->dirty) gossip_publish(m);
}

void mesh_mark_dirty(mesh *m)
{
    m->dirty = 1;
    event_active(m->publish_ev, 0, 0);
}

static void mesh_tick_cb(evutil_socket_t fd, short what, void *arg)
{
    mesh *m = arg;
    if (m->left || m->passive) return;
    gossip_broadcast(m, m->raw, m->raw_len, NULL);
    passive_sweep_idle(m);
    /* Safety net: a node with no connection, no dial and no timer. This is
     * also how an isolated node goes back to its join tokens. */
    for (mesh_node *n = m->nodes; n; n = n->next)
        if (!n->link && !n->dialing && !evtimer_pending(n->dial_timer, NULL))
            mesh_node_want_connection(m, n, 0);
}

void mesh_set_models(mesh *m, const char *const *model_ids, int n)
{
    node_record next = m->rec;
    next.n_models = 0;
    for (int i = 0; i < n; i++) {
        size_t len = strlen(model_ids[i]);
        if (!record_model_name_ok(model_ids[i], len)) {
            log_warn(MESH_LOG, "model id '%.40s...' not advertised: 1 to %d bytes, no control characters",
                     model_ids[i], MESH_MAX_NAME - 1);
            continue;
        }
        if (next.n_models == MESH_MAX_MODELS) {
            log_warn(MESH_LOG, "only the first %d models are advertised", MESH_MAX_MODELS);
            break;
        }
        memcpy(next.models[next.n_models++], model_ids[i], len + 1);
    }
    int same = next.n_models == m->rec.n_models;
    for (int i = 0; same && i < next.n_models; i++) same = !strcmp(next.models[i], m->rec.models[i]);
    if (same) return;
    memcpy(m->rec.models, next.models, sizeof next.models);
    m->rec.n_models = next.n_models;
    mesh_mark_dirty(m);
}

void mesh_set_memory(mesh *m, uint64_t memory_bytes)
{
    if (m->rec.memory_bytes == memory_bytes) return;
    m->rec.memory_bytes = memory_bytes;
    mesh_mark_dirty(m);
}

void mesh_set_memory_used(mesh *m, uint64_t used_bytes)
{
    if (m->rec.memory_used == used_bytes) return;
    m->rec.memory_used = used_bytes;
    mesh_mark_dirty(m);
}

int mesh_set_app_data(mesh *m, const void *data, size_t len)
{
    if (len > MESH_MAX_APP) return -1;
    if (m->rec.app_len == len && (len == 0 || !memcmp(m->rec.app, data, len))) return 0;
    if (len) memcpy(m->rec.app, data, len);
    m->rec.app_len = (uint16_t)len;
    mesh_mark_dirty(m);
    return 0;
}

int mesh_set_holdings(mesh *m, const void *data, size_t len)
{
    if (len > MESH_MAX_HOLDINGS) return -1;
    if (m->rec.holdings_len == len && (len == 0 || !memcmp(m->rec.holdings, data, len))) return 0;
    if (len) memcpy(m->rec.holdings, data, len);
    m->rec.holdings_len = (uint16_t)len;
    mesh_mark_dirty(m);
    return 0;
}

/* The newest record of node id (this node's own included), or NULL. */
static const node_record *record_of(const mesh *m, const uint8_t id[MESH_ID_BYTES])
{
    if (!memcmp(id, m->self.public_key, MESH_ID_BYTES)) return &m->rec;
    const mesh_node *n = mesh_node_find(m, id);
    return n && n->has_record && n->state != NODE_EXPIRED ? &n->rec : NULL;
}

int mesh_node_app_data(const mesh *m, const uint8_t id[MESH_ID_BYTES], void *out, size_t cap)
{
    const node_record *rec = record_of(m, id);
    if (!rec || rec->app_len > cap) return -1;
    memcpy(out, rec->app, rec->app_len);
    return rec->app_len;
}

int mesh_node_holdings(const mesh *m, const uint8_t id[MESH_ID_BYTES], void *out, size_t cap)
{
    const node_record *rec = record_of(m, id);
    if (!rec || rec->holdings_len > cap) return -1;
    memcpy(out, rec->holdings, rec->holdings_len);
    return rec->holdings_len;
}

/* ---- life cycle ----------------------------------------------------------------*/

static int mesh_add_join(mesh *m, int index, const char *text, char *err, size_t errlen)
{
    token t;
    char why[256];
    if (token_decode(text, &t, why, sizeof why) != 0) {
        snprintf(err, errlen, "join token %d: %s", index + 1, why);
        return -1;
    }
    explicit_bzero(t.secret, sizeof t.secret);   /* mesh_join_secret took it */
    if (memcmp(t.id, m->self.public_key, MESH_ID_BYTES) == 0) {
        log_info(MESH_LOG, "join token %d is this node's own token: ignored", index + 1);
        return 0;
    }
    mesh_node *n = mesh_node_get(m, t.id);
    if (!n) {
        snprintf(err, errlen, "join token %d: out of memory", index + 1);
        return -1;
    }
    n->bootstrap = 1;
    memcpy(n->token_addrs, t.addrs, sizeof t.addrs);
    n->n_token_addrs = t.n_addrs;
    mesh_node_want_connection(m, n, 1);   /* (a client pulls routes from it instead) */
    return 0;
}

/* The mesh secret the join tokens carry (all the same), into out. 1 when
 * there are tokens, 0 without, -1 with err. */
static int mesh_join_secret(const mesh_config *cfg, uint8_t out[ADMIT_SECRET_BYTES], char *err,
                            size_t errlen)
{
    int have = 0;
    for (int i = 0; i < cfg->n_join; i++) {
        token t;
        char why[256];
        if (token_decode(cfg->join_tokens[i], &t, why, sizeof why) != 0) {
            snprintf(err, errlen, "join token %d: %s", i + 1, why);
            return -1;
        }
        if (have && memcmp(out, t.secret, ADMIT_SECRET_BYTES) != 0) {
            explicit_bzero(&t, sizeof t);
            snprintf(err, errlen, "join token %d is of another mesh than join token 1 (another "
                     "mesh secret): a node joins one mesh", i + 1);
            return -1;
        }
        memcpy(out, t.secret, ADMIT_SECRET_BYTES);
        explicit_bzero(&t, sizeof t);
        have = 1;
    }
    return have;
}

mesh *mesh_new(struct event_base *base, const mesh_config *cfg, char *err, size_t errlen)
{
    mesh *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    m->base = base;
    const char *role = cfg->role ? cfg->role : "standby";
    uint8_t role_code = record_role_code(role);
    if (!role_code) {
        snprintf(err, errlen, "unknown role '%s' (host, standby or client)", role);
        goto fail;
    }
    if (!cfg->home) {
        snprintf(err, errlen, "no home directory given");
        goto fail;
    }
    if (identity_load_or_create(cfg->home, &m->self, NULL, err, errlen) != 0) goto fail;
    identity_id_hex(m->self.public_key, m->id_hex);
    {
        uint8_t joined[ADMIT_SECRET_BYTES];
        int have = mesh_join_secret(cfg, joined, err, errlen);
        identity_secret_origin origin;
        int rc = have < 0 ? -1 : identity_mesh_secret(cfg->home, have ? joined : NULL, m->secret,
                                                       &origin, err, errlen);
        explicit_bzero(joined, sizeof joined);
        if (rc != 0) goto fail;
        if (origin == IDENTITY_SECRET_CREATED)
            log_info(MESH_LOG, "new mesh: its secret is in %s/mesh-secret and in the token", cfg->home);
        else if (origin == IDENTITY_SECRET_REPLACED)
            log_info(MESH_LOG, "this home now belongs to the mesh of the join token (the mesh secret "
                     "in %s/mesh-secret was replaced)", cfg->home);
    }

    const char *listen = cfg->listen ? cfg->listen : "0.0.0.0:9337";
    char why[256];
    if (addr_parse(listen, &m->listen, why, sizeof why) != 0) {
        snprintf(err, errlen, "listen address: %s", why);
        goto fail;
    }
    m->passive = role_code == RECORD_ROLE_CLIENT;
    m->max_clients = cfg->max_clients ? cfg->max_clients : MESH_MAX_CLIENTS;
    m->bad_frames_max = cfg->bad_frames_max ? cfg->bad_frames_max : MESH_BAD_FRAMES_MAX;
    m->ban_ms = cfg->ban_ms ? cfg->ban_ms : MESH_BAN_MS;
    quic_config qc = {.bind_host = NULL, .port = m->listen.port, .handshake_timeout_ms = MESH_HANDSHAKE_MS,
                      .passive = m->passive, .limits = cfg->limits};
    char host[ADDR_TEXT_MAX];
    addr_format_ip(&m->listen, host);
    qc.bind_host = host;
    memcpy(qc.private_key, m->self.secret, QUIC_KEY_BYTES);
    memcpy(qc.public_key, m->self.public_key, QUIC_KEY_BYTES);
    m->ep = quic_endpoint_new(base, &qc, &mesh_quic_callbacks, m, why, sizeof why);
    explicit_bzero(qc.private_key, sizeof qc.private_key);
    if (!m->ep) {
        snprintf(err, errlen, "cannot listen on %s: %s", listen, why);
        goto fail;
    }
    m->listen.port = quic_endpoint_port(m->ep);

    /* The token and the record advertise the same addresses. */
    token t;
    memcpy(t.id, m->self.public_key, MESH_ID_BYTES);
    memcpy(t.secret, m->secret, sizeof t.secret);
    t.n_addrs = addr_local_list(&m->listen, t.addrs, MESH_MAX_ADDRS, why, sizeof why);
    if (t.n_addrs < 0) {
        snprintf(err, errlen, "%s", why);
        goto fail;
    }
    int encoded = token_encode(&t, m->token, sizeof m->token);
    explicit_bzero(t.secret, sizeof t.secret);
    if (encoded < 0) {
        snprintf(err, errlen, "cannot encode the invite token");
        goto fail;
    }
    memcpy(m->rec.id, m->self.public_key, MESH_ID_BYTES);
    m->rec.role = role_code;
    memcpy(m->rec.addrs, t.addrs, sizeof t.addrs);
    m->rec.n_addrs = t.n_addrs;

    m->publish_ev = event_new(base, -1, 0, mesh_publish_cb, m);
    m->sweep_ev = event_new(base, -1, 0, mesh_sweep_cb, m);
    m->tick = event_new(base, -1, EV_PERSIST, mesh_tick_cb, m);
    if (!m->publish_ev || !m->sweep_ev || !m->tick) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    mesh_timer_add_ms(m->tick, MESH_TICK_MS);
    gossip_register(m);
    admission_register(m);
    detect_register(m);
    passive_register(m);
    if (detect_init(m, cfg) != 0 || nat_init(m) != 0 || passive_init(m, cfg) != 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    gossip_publish(m);
    if (m->raw_len == 0) {
        snprintf(err, errlen, "cannot sign this node's record");
        goto fail;
    }
    for (int i = 0; i < cfg->n_join; i++)
        if (mesh_add_join(m, i, cfg->join_tokens[i], err, errlen) != 0) goto fail;
    if (log_enabled(LOG_DEBUG)) {
        char text[ADDR_TEXT_MAX];
        addr_format(&m->listen, text);
        log_debug(MESH_LOG, "node %s listening on %s", m->id_hex, text);
    }
    return m;
fail:
    mesh_free(m);
    return NULL;
}

void mesh_free(mesh *m)
{
    if (!m) return;
    m->freeing = 1;
    detect_free(m);
    passive_free(m);
    for (mesh_node *n = m->nodes; n; n = n->next) mesh_node_fail_pending(n, "mesh closed");
    /* The endpoint closes every connection: streams get on_close, links are
     * freed in conn_closed. */
    if (m->ep) quic_endpoint_free(m->ep);
    while (m->links) {
        mesh_link *l = m->links;
        m->links = l->next;
        mesh_link_drop_streams(l, "mesh closed");
        admission_link_free(l);
        free(l);
    }
    nat_free(m);
    while (m->nodes) {
        mesh_node *n = m->nodes;
        m->nodes = n->next;
        if (n->dial_timer) event_free(n->dial_timer);
        free(n->raw);
        free(n);
    }
    if (m->publish_ev) event_free(m->publish_ev);
    if (m->sweep_ev) event_free(m->sweep_ev);
    if (m->tick) event_free(m->tick);
    identity_wipe(&m->self);
    explicit_bzero(m->secret, sizeof m->secret);
    explicit_bzero(m->token, sizeof m->token);
    free(m);
}

int mesh_leave(mesh *m)
{
    if (m->left) return 0;
    m->left = 1;
    for (mesh_node *n = m->nodes; n; n = n->next) evtimer_del(n->dial_timer);
    /* The incarnation is our current record's seq: peers drop records up to
     * it, and our next run's first record (a later wall clock) beats it. */
    uint8_t buf[SWIM_LEAVE_BYTES];
    char err[160];
    if (swim_leave_encode(&m->self, m->rec.seq, buf, err, sizeof err) < 0) {
        log_warn(MESH_LOG, "cannot sign the leave message: %s", err);
        return -1;
    }
    gossip_broadcast(m, buf, sizeof buf, NULL);
    /* On the wire now: mesh_free follows at once and would drop what is
     * still queued. Lost on the way, the LEAVE is relayed by any peer that
     * got it, or the node is found dead by probes. */
    quic_endpoint_flush(m->ep);
    log_info(MESH_LOG, "leave sent to %d peers", mesh_connections(m));
    return 0;
}

/* ---- queries -------------------------------------------------------------------*/

const char *mesh_token(const mesh *m) { return m->token; }
const char *mesh_node_id_hex(const mesh *m) { return m->id_hex; }
const uint8_t *mesh_node_id(const mesh *m) { return m->self.public_key; }
uint16_t mesh_listen_port(const mesh *m) { return m->listen.port; }

int mesh_peers(const mesh *m, mesh_peer *out, int max)
{
    int count = 0;
    for (const mesh_node *n = m->nodes; n; n = n->next) {
        if (n->state == NODE_EXPIRED) continue;
        if (count++ >= max) continue;
        mesh_peer *p = &out[count - 1];
        memset(p, 0, sizeof *p);
        memcpy(p->id, n->id_hex, sizeof p->id);
        const mesh_addr *addrs = n->has_record ? n->rec.addrs : n->token_addrs;
        p->n_addresses = n->has_record ? n->rec.n_addrs : n->n_token_addrs;
        for (int i = 0; i < p->n_addresses; i++) addr_format(&addrs[i], p->addresses[i]);
        snprintf(p->role, sizeof p->role, "%s", n->has_record ? record_role_name(n->rec.role) : "unknown");
        if (n->has_record) {
            p->n_models = n->rec.n_models;
            memcpy(p->models, n->rec.models, sizeof p->models);
            p->memory_bytes = n->rec.memory_bytes;
            p->memory_used = n->rec.memory_used;
            p->clients = n->rec.clients;
            p->app_len = n->rec.app_len;
        }
        snprintf(p->state, sizeof p->state, "%s", node_state_names[n->state]);
        p->rx_bytes = n->rx_past;
        p->tx_bytes = n->tx_past;
        if (n->link) {
            snprintf(p->link, sizeof p->link, "%s", nat_link_relayed(n->link) ? "relayed" : "direct");
            p->rtt_ms = (double)quic_conn_rtt_us(n->link->qc) / 1000.0;
            uint64_t rx, tx;
            quic_conn_bytes(n->link->qc, &rx, &tx);
            p->rx_bytes += rx;
            p->tx_bytes += tx;
        }
    }
    return count;
}

int mesh_pick_host(const mesh *m, const char *model_id, uint8_t id_out[MESH_ID_BYTES])
{
    return mesh_pick_host_except(m, model_id, NULL, id_out);
}

int mesh_pick_host_except(const mesh *m, const char *model_id, const uint8_t *exclude,
                          uint8_t id_out[MESH_ID_BYTES])
{
    /* The connected host with the lowest smoothed RTT; the node list is
     * sorted by id, so ties go to the lowest id. */
    const mesh_node *best = NULL;
    uint64_t best_rtt = 0;
    for (const mesh_node *n = m->nodes; n; n = n->next) {
        /* Suspects are skipped: a request sent there may wait for a node
         * that is gone, while an alive one is at hand. */
        if (!n->link || !n->has_record || n->state != NODE_ALIVE) continue;
        if (exclude && memcmp(n->id, exclude, MESH_ID_BYTES) == 0) continue;
        int serves = 0;
        for (int i = 0; i < n->rec.n_models && !serves; i++) serves = !strcmp(n->rec.models[i], model_id);
        if (!serves) continue;
        uint64_t rtt = quic_conn_rtt_us(n->link->qc);
        if (rtt == 0) rtt = UINT64_MAX;
        if (!best || rtt < best_rtt) {
            best = n;
            best_rtt = rtt;
        }
    }
    if (!best) return -1;
    memcpy(id_out, best->id, MESH_ID_BYTES);
    return 0;
}

void mesh_register_stream_type(mesh *m, uint8_t type, mesh_accept_fn accept, void *ctx)
{
    assert(type != 0 && !mesh_stream_type_internal(type));
    if (type == 0 || mesh_stream_type_internal(type)) return;
    m->types[type].fn = accept;
    m->types[type].ctx = ctx;
}

void mesh_set_frame_bound(mesh *m, uint8_t type, uint32_t max)
{
    assert(type != 0 && !mesh_stream_type_internal(type) && max <= MESH_MAX_FRAME);
    if (type != 0 && !mesh_stream_type_internal(type) && max <= MESH_MAX_FRAME) m->types[type].frame_max = max;
}

void mesh_open_to_clients(mesh *m, uint8_t type)
{
    assert(type != 0 && !mesh_stream_type_internal(type));
    if (type != 0 && !mesh_stream_type_internal(type)) m->types[type].clients = 1;
}

void mesh_get_counters(const mesh *m, mesh_counters *out)
{
    *out = m->counters;
    quic_stats qs;
    quic_endpoint_stats(m->ep, &qs);
    out->conns_refused = qs.conns_refused;
    out->conns_refused_addr = qs.conns_refused_addr;
    out->conns_half_open = qs.conns_half_open;
}

int mesh_connections(const mesh *m)
{
    int count = 0;
    for (const mesh_link *l = m->links; l; l = l->next) count += l->ready && !l->close_sent && !l->passive;
    return count;
}

int mesh_is_passive(const mesh *m) { return m->passive; }
int mesh_clients_connected(const mesh *m) { return m->n_clients; }
