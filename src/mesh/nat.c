/* nat.c: observed addresses, hole punching and relaying (see nat.h and
 * docs/reachability.md for the design and its trade-offs).
 *
 * State: per node (n->nat) a relay timer, a deferred punch and the time of
 * the last introduction round; per mesh a table of virtual paths (relayed
 * connections this node is an end of, each bound to one RELAY stream) and a
 * table of pairs of RELAY streams this node forwards between for others.
 *
 * Relay streams are reliable and ordered, QUIC packets are not meant to be:
 * a relay and a path drop packets rather than queue them when the stream
 * backs up (NAT_RELAY_QUEUE) or a pair exceeds its rate (NAT_RELAY_RATE). The
 * relayed connection's own loss recovery and congestion control see those
 * drops as loss and slow down, so memory stays bounded without back-pressure
 * plumbing between the two connections. */
#include "mesh/nat.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "mesh/natmsg.h"

typedef struct {
    uint32_t id;                     /* virtual path number; 0 = free slot */
    mesh_stream *s;                  /* its RELAY stream; NULL once closed */
    int closing;                     /* stream gone: close the connection on it */
    int idle_sweeps;                 /* sweeps without a connection on it */
} nat_path;

typedef struct {
    mesh_stream *a, *b;              /* requester's stream, target's stream */
    int used;
    uint64_t tokens, last_ms;        /* rate bound, bytes */
} nat_pair;

struct nat_node {
    mesh_node *n;
    struct event *relay_timer, *punch_ev;
    mesh_addr punch_addr;
    int punch_pending;
    uint64_t last_intro_ms;
    unsigned relay_rr;               /* round robin over candidate relays */
};

struct nat_state {
    mesh *m;
    nat_path paths[NAT_MAX_PATHS];
    uint32_t path_gen;
    nat_pair pairs[NAT_MAX_RELAYED];
    struct event *sweep_ev;          /* deferred and periodic: close and free paths */
    uint64_t intro_window_ms;
    unsigned intro_count;
    mesh_addr base_addrs[MESH_MAX_ADDRS]; /* what the node advertised before observations */
    int n_base;
    mesh_addr reflexive[2];          /* the last addresses peers saw us at, newest first */
    int n_reflexive;
};

#define NAT_SWEEP_MS 5000

/* ---- helpers ------------------------------------------------------------------*/

static int link_direct_ready(const mesh_link *l)
{
    return l && l->ready && !l->want_close && !quic_conn_virtual_path(l->qc);
}

int nat_link_relayed(const mesh_link *l) { return quic_conn_virtual_path(l->qc) != 0; }

static int link_remote(const mesh_link *l, mesh_addr *out)
{
    socklen_t len;
    const struct sockaddr *sa = quic_conn_remote_addr(l->qc, &len);
    return sa && addr_from_sockaddr(sa, len, out) == 0 ? 0 : -1;
}

static void timer_ms(struct event *ev, uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(ev, &tv);
}

static void noop_frame(void *u, mesh_stream *s, const uint8_t *p, size_t len) {}
static void finish_on_fin(void *u, mesh_stream *s) { mesh_stream_finish(s); }
static void noop_close(void *u, mesh_stream *s, const char *e) {}
static const mesh_stream_handlers one_shot = {noop_frame, finish_on_fin, noop_close};

/* One RENDEZVOUS message on l (open, one frame, FIN). */
static void send_msg(mesh_link *l, const nat_msg *msg)
{
    if (!link_direct_ready(l)) return;
    uint8_t buf[NAT_MSG_MAX];
    size_t len = nat_msg_encode(msg, buf);
    mesh_stream *s = mesh_stream_open_on(l, MESH_STREAM_RENDEZVOUS, &one_shot, NULL);
    if (!s) return;
    mesh_stream_send(s, buf, len);
    mesh_stream_finish(s);
}

static struct nat_node *nat_node_of(mesh_node *n);

/* ---- observed addresses ---------------------------------------------------------*/

void nat_link_ready(mesh_link *l)
{
    mesh_addr a;
    if (!l->m->nat || !l->node || link_remote(l, &a) != 0) return;
    nat_msg msg = {.kind = NAT_MSG_OBSERVED, .addr = a};
    send_msg(l, &msg);
}

/* A peer sees us at a: advertise it (it is our NAT's mapping, the address
 * peers outside can reach us at if the NAT lets them). Bounded at two, the
 * newest first: a peer that lies can add one wrong address that others dial
 * in vain, which costs them a handshake timeout, not correctness. */
static void on_observed(mesh *m, const mesh_addr *a)
{
    struct nat_state *st = m->nat;
    if (addr_is_loopback(a) || addr_is_wildcard(a)) return;
    for (int i = 0; i < st->n_base; i++)
        if (addr_compare(&st->base_addrs[i], a) == 0) return;
    for (int i = 0; i < st->n_reflexive; i++)
        if (addr_compare(&st->reflexive[i], a) == 0) return;
    st->reflexive[1] = st->reflexive[0];
    st->reflexive[0] = *a;
    if (st->n_reflexive < 2) st->n_reflexive++;
    /* Observed first: the base list may be full of addresses only a LAN can use. */
    int n = 0;
    for (int i = 0; i < st->n_reflexive; i++) m->rec.addrs[n++] = st->reflexive[i];
    for (int i = 0; i < st->n_base && n < MESH_MAX_ADDRS; i++) m->rec.addrs[n++] = st->base_addrs[i];
    m->rec.n_addrs = n;
    char text[ADDR_TEXT_MAX];
    addr_format(a, text);
    log_info(MESH_LOG, "peers see this node at %s: advertised", text);
    m->dirty = 1;
    event_active(m->publish_ev, 0, 0);
}

/* ---- introductions and punching ------------------------------------------------*/

/* Asks up to NAT_INTRODUCERS directly connected peers to introduce us to n. */
static void send_intros(mesh *m, mesh_node *n)
{
    struct nat_node *nn = nat_node_of(n);
    if (!nn) return;
    uint64_t now = detect_now_ms();
    if (nn->last_intro_ms && now - nn->last_intro_ms < NAT_INTRO_EVERY_MS) return;
    nn->last_intro_ms = now;
    nat_msg msg = {.kind = NAT_MSG_INTRO};
    memcpy(msg.node, n->id, MESH_ID_BYTES);
    int sent = 0;
    for (mesh_node *r = m->nodes; r && sent < NAT_INTRODUCERS; r = r->next) {
        if (r == n || r->state != NODE_ALIVE || !link_direct_ready(r->link)) continue;
        send_msg(r->link, &msg);
        sent++;
    }
    if (sent) log_debug(MESH_LOG, "asked %d peers to introduce %.16s", sent, n->id_hex);
}

/* `from` (directly connected) wants to reach target: tell each where we see
 * the other. Only between nodes we hold direct connections to, and
 * rate-bounded, so we cannot be used to make nodes send at strangers. */
static void on_intro(mesh *m, mesh_link *from, const uint8_t target[MESH_ID_BYTES])
{
    struct nat_state *st = m->nat;
    mesh_node *t = mesh_node_find(m, target);
    mesh_addr fa, ta;
    if (!t || t == from->node || !link_direct_ready(from) || !link_direct_ready(t->link)) return;
    if (link_remote(from, &fa) != 0 || link_remote(t->link, &ta) != 0) return;
    uint64_t now = detect_now_ms();
    if (now - st->intro_window_ms >= 1000) {
        st->intro_window_ms = now;
        st->intro_count = 0;
    }
    if (st->intro_count++ >= NAT_INTROS_PER_SEC) return;
    nat_msg to_target = {.kind = NAT_MSG_PUNCH, .addr = fa};
    memcpy(to_target.node, from->node->id, MESH_ID_BYTES);
    nat_msg to_from = {.kind = NAT_MSG_PUNCH, .addr = ta};
    memcpy(to_from.node, t->id, MESH_ID_BYTES);
    send_msg(t->link, &to_target);
    send_msg(from, &to_from);
    log_debug(MESH_LOG, "introduced %.16s and %.16s", from->node->id_hex, t->id_hex);
}

static void on_punch(mesh *m, const uint8_t peer[MESH_ID_BYTES], const mesh_addr *a)
{
    if (memcmp(peer, m->self.public_key, MESH_ID_BYTES) == 0) return;
    mesh_node *n = mesh_node_find(m, peer); /* introductions only for nodes we know */
    if (!n || (n->link && link_direct_ready(n->link)) || m->left) return;
    struct nat_node *nn = nat_node_of(n);
    if (!nn) return;
    nn->punch_addr = *a;
    nn->punch_pending = 1;
    timer_ms(nn->punch_ev, 0); /* not from inside a stream callback */
}

/* Sends a punch datagram to the peer's observed address (opens our NAT's
 * mapping towards it, so its packets to us get in) and dials it there; the
 * peer does the same towards us at the same moment. */
static void punch_cb(evutil_socket_t fd, short what, void *arg)
{
    struct nat_node *nn = arg;
    mesh_node *n = nn->n;
    mesh *m = n->m;
    if (!nn->punch_pending || m->freeing) return;
    nn->punch_pending = 0;
    if (n->link && link_direct_ready(n->link)) return;
    struct sockaddr_storage ss;
    socklen_t len;
    if (nn->punch_addr.family != m->listen.family) return; /* a dual-stack socket would map it; rare */
    addr_to_sockaddr(&nn->punch_addr, &ss, &len);
    /* One dial per address at a time. */
    for (mesh_link *l = m->links; l; l = l->next) {
        mesh_addr ra;
        if (l->node == n && !l->ready && l->outgoing && link_remote(l, &ra) == 0 &&
            addr_compare(&ra, &nn->punch_addr) == 0)
            return;
    }
    quic_endpoint_punch(m->ep, (struct sockaddr *)&ss, len);
    char err[160];
    quic_conn *c = quic_connect(m->ep, (struct sockaddr *)&ss, len, n->id, err, sizeof err);
    if (c) mesh_link_dial(m, c, n);
    char text[ADDR_TEXT_MAX];
    addr_format(&nn->punch_addr, text);
    log_debug(MESH_LOG, "punching to %.16s at %s", n->id_hex, text);
}

/* ---- RENDEZVOUS streams ------------------------------------------------------*/

static void rv_on_frame(void *u, mesh_stream *s, const uint8_t *p, size_t len)
{
    mesh *m = u;
    nat_msg msg;
    char err[96];
    int rv = nat_msg_decode(p, len, &msg, err, sizeof err);
    if (rv < 0) {
        mesh_stream_reject(s, err);
        return;
    }
    if (rv > 0 || !s->link || !link_direct_ready(s->link)) return;
    switch (msg.kind) {
    case NAT_MSG_OBSERVED: on_observed(m, &msg.addr); break;
    case NAT_MSG_INTRO: on_intro(m, s->link, msg.node); break;
    case NAT_MSG_PUNCH: on_punch(m, msg.node, &msg.addr); break;
    }
}

static const mesh_stream_handlers rv_handlers = {rv_on_frame, finish_on_fin, noop_close};

static void rv_accept(void *ctx, mesh_stream *s) { mesh_stream_set_handlers(s, &rv_handlers, ctx); }

/* ---- virtual paths: this node is an end of a relayed connection -------------*/

static nat_path *path_find(struct nat_state *st, uint32_t id)
{
    if (!id) return NULL;
    nat_path *p = &st->paths[(id - 1) % NAT_MAX_PATHS];
    return p->id == id ? p : NULL;
}

static nat_path *path_new(struct nat_state *st)
{
    for (int i = 0; i < NAT_MAX_PATHS; i++) {
        if (st->paths[i].id) continue;
        /* slot + 1 + generation * slots: a stale packet for a reused slot
         * names another number and is dropped. */
        st->path_gen = (st->path_gen + 1) % (QUIC_VPATH_MAX / NAT_MAX_PATHS);
        nat_path *p = &st->paths[i];
        memset(p, 0, sizeof *p);
        p->id = (uint32_t)i + 1 + st->path_gen * NAT_MAX_PATHS;
        return p;
    }
    return NULL;
}

static void vsend(void *ctx, uint32_t path, const uint8_t *pkt, size_t len)
{
    struct nat_state *st = ctx;
    nat_path *p = path_find(st, path);
    if (!p || !p->s || len > NAT_PACKET_MAX) return;
    if (mesh_stream_unacked(p->s) > NAT_RELAY_QUEUE) return; /* dropped: the connection backs off */
    uint8_t buf[NAT_RELAY_FRAME_MAX];
    buf[0] = NAT_RELAY_PACKET;
    memcpy(buf + 1, pkt, len);
    mesh_stream_send(p->s, buf, len + 1);
}

static void path_on_frame(void *u, mesh_stream *s, const uint8_t *f, size_t len)
{
    nat_path *p = u;
    mesh *m = s->m;
    const uint8_t *pkt;
    size_t pktlen;
    char err[96];
    int rv = nat_relay_packet_decode(f, len, &pkt, &pktlen, err, sizeof err);
    if (rv < 0) {
        mesh_stream_reject(s, err);
        return;
    }
    if (rv == 0 && p->s == s) quic_endpoint_input_virtual(m->ep, p->id, pkt, pktlen);
}

static void path_on_close(void *u, mesh_stream *s, const char *error)
{
    nat_path *p = u;
    if (p->s != s) return;
    p->s = NULL;
    p->closing = 1;
    if (!s->m->freeing) event_active(s->m->nat->sweep_ev, 0, 0);
}

static void path_on_fin(void *u, mesh_stream *s) { mesh_stream_finish(s); }

static const mesh_stream_handlers path_handlers = {path_on_frame, path_on_fin, path_on_close};

/* The link running on path id, if any. */
static mesh_link *path_link(mesh *m, uint32_t id)
{
    for (mesh_link *l = m->links; l; l = l->next)
        if (quic_conn_virtual_path(l->qc) == id) return l;
    return NULL;
}

/* Closes connections whose relay stream is gone, and relay streams whose
 * connection is gone (after a grace period: a stream exists before the
 * first packet creates its connection on the receiving end). */
static void sweep_cb(evutil_socket_t fd, short what, void *arg)
{
    mesh *m = arg;
    struct nat_state *st = m->nat;
    /* A relayed pair tries for a direct path again now and then: a punch
     * that failed (a mapping not there yet, a firewall since opened) may
     * work later, and the adopt rule (mesh.c: direct beats relayed) then
     * moves the pair off the relay. The lower id asks, for both. */
    uint64_t now = detect_now_ms();
    for (mesh_node *n = m->nodes; n && !m->left; n = n->next) {
        struct nat_node *nn = n->nat;
        if (!nn || !n->link || !nat_link_relayed(n->link) || n->state != NODE_ALIVE ||
            memcmp(m->self.public_key, n->id, MESH_ID_BYTES) > 0 ||
            now - nn->last_intro_ms < NAT_UPGRADE_EVERY_MS)
            continue;
        log_debug(MESH_LOG, "link to %.16s is relayed: trying for a direct path", n->id_hex);
        send_intros(m, n);
    }
    for (int i = 0; i < NAT_MAX_PATHS; i++) {
        nat_path *p = &st->paths[i];
        if (!p->id) continue;
        mesh_link *l = path_link(m, p->id);
        if (p->closing) {
            if (l && !l->close_sent) {
                l->close_sent = 1;
                quic_conn_close(l->qc, "relay stream closed");
            }
            p->id = 0;
            continue;
        }
        if (l) {
            p->idle_sweeps = 0;
        } else if (++p->idle_sweeps >= 3 && p->s) {
            mesh_stream *s = p->s;
            p->s = NULL;
            p->id = 0;
            mesh_stream_abort(s);
        }
    }
}

/* Dials n through a directly connected peer (round robin over them, so a
 * relay that cannot reach n is not asked again next time). */
static void relay_dial(mesh *m, mesh_node *n)
{
    struct nat_state *st = m->nat;
    struct nat_node *nn = n->nat;
    mesh_node *cands[16];
    int count = 0;
    for (mesh_node *r = m->nodes; r && count < 16; r = r->next)
        if (r != n && r->state == NODE_ALIVE && link_direct_ready(r->link)) cands[count++] = r;
    if (!count) return;
    mesh_node *r = cands[nn->relay_rr++ % (unsigned)count];
    nat_path *p = path_new(st);
    if (!p) return;
    mesh_stream *s = mesh_stream_open_on(r->link, MESH_STREAM_RELAY, &path_handlers, p);
    if (!s) {
        p->id = 0;
        return;
    }
    p->s = s;
    uint8_t head[1 + MESH_ID_BYTES];
    mesh_stream_send(s, head, nat_relay_head_encode(NAT_RELAY_CONNECT, n->id, head));
    char err[160];
    quic_conn *c = quic_connect_virtual(m->ep, p->id, n->id, err, sizeof err);
    if (!c || !mesh_link_dial(m, c, n)) {
        p->s = NULL;
        p->id = 0;
        mesh_stream_abort(s);
        return;
    }
    log_info(MESH_LOG, "no direct path to %.16s yet: connecting through %.16s", n->id_hex, r->id_hex);
}

static void relay_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct nat_node *nn = arg;
    mesh_node *n = nn->n;
    mesh *m = n->m;
    if (m->freeing || m->left || n->link || n->state == NODE_LEFT || n->state == NODE_EXPIRED) return;
    for (mesh_link *l = m->links; l; l = l->next)
        if (l->node == n && !l->ready && quic_conn_virtual_path(l->qc)) return; /* one under way */
    relay_dial(m, n);
}

/* ---- RELAY streams: this node forwards for others ---------------------------*/

static void pair_release(nat_pair *pr)
{
    if (!pr->a && !pr->b) pr->used = 0;
}

static void pair_on_frame(void *u, mesh_stream *s, const uint8_t *f, size_t len)
{
    nat_pair *pr = u;
    const uint8_t *pkt;
    size_t pktlen;
    char err[96];
    int rv = nat_relay_packet_decode(f, len, &pkt, &pktlen, err, sizeof err);
    if (rv < 0) {
        mesh_stream_reject(s, err);
        return;
    }
    mesh_stream *to = s == pr->a ? pr->b : pr->a;
    if (rv > 0 || !to) return;
    /* Token bucket per pair (both directions), then the queue bound. */
    uint64_t now = detect_now_ms();
    pr->tokens += (now - pr->last_ms) * (NAT_RELAY_RATE / 1000);
    if (pr->tokens > NAT_RELAY_RATE / 4) pr->tokens = NAT_RELAY_RATE / 4;
    pr->last_ms = now;
    if (pr->tokens < len || mesh_stream_unacked(to) > NAT_RELAY_QUEUE) return;
    pr->tokens -= len;
    mesh_stream_send(to, f, len);
}

static void pair_on_close(void *u, mesh_stream *s, const char *error)
{
    nat_pair *pr = u;
    mesh_stream *other = s == pr->a ? pr->b : pr->a;
    if (s == pr->a) pr->a = NULL;
    else pr->b = NULL;
    if (other) {
        if (other == pr->a) pr->a = NULL;
        else pr->b = NULL;
        mesh_stream_abort(other);
    }
    pair_release(pr);
}

static void pair_on_fin(void *u, mesh_stream *s)
{
    nat_pair *pr = u;
    mesh_stream *other = s == pr->a ? pr->b : pr->a;
    if (other) mesh_stream_finish(other);
    mesh_stream_finish(s);
}

static const mesh_stream_handlers pair_handlers = {pair_on_frame, pair_on_fin, pair_on_close};

/* CONNECT from a directly connected node: open the other half to the
 * target, if we hold a direct connection to it too. Refused otherwise. */
static void on_connect(mesh *m, mesh_stream *s, const uint8_t target[MESH_ID_BYTES])
{
    struct nat_state *st = m->nat;
    mesh_node *t = mesh_node_find(m, target);
    if (!s->link || !link_direct_ready(s->link) || !t || t == s->link->node ||
        t->state != NODE_ALIVE || !link_direct_ready(t->link)) {
        log_debug(MESH_LOG, "relay request from %.16s refused: no direct connection to the target",
                  s->link && s->link->node ? s->link->node->id_hex : "?");
        mesh_stream_abort(s);
        return;
    }
    nat_pair *pr = NULL;
    for (int i = 0; i < NAT_MAX_RELAYED && !pr; i++)
        if (!st->pairs[i].used) pr = &st->pairs[i];
    if (!pr) {
        log_warn(MESH_LOG, "relay request refused: already relaying %d connections", NAT_MAX_RELAYED);
        mesh_stream_abort(s);
        return;
    }
    mesh_stream *b = mesh_stream_open_on(t->link, MESH_STREAM_RELAY, &pair_handlers, pr);
    if (!b) {
        mesh_stream_abort(s);
        return;
    }
    memset(pr, 0, sizeof *pr);
    pr->used = 1;
    pr->a = s;
    pr->b = b;
    pr->last_ms = detect_now_ms();
    pr->tokens = NAT_RELAY_RATE / 4;
    uint8_t head[1 + MESH_ID_BYTES];
    mesh_stream_send(b, head, nat_relay_head_encode(NAT_RELAY_FROM, s->link->node->id, head));
    mesh_stream_set_handlers(s, &pair_handlers, pr);
    log_info(MESH_LOG, "relaying between %.16s and %.16s", s->link->node->id_hex, t->id_hex);
}

/* FROM: the relay brings us a node's packets; a path takes them. */
static void on_from(mesh *m, mesh_stream *s)
{
    nat_path *p = path_new(m->nat);
    if (!p) {
        mesh_stream_abort(s);
        return;
    }
    p->s = s;
    mesh_stream_set_handlers(s, &path_handlers, p);
}

static void head_on_frame(void *u, mesh_stream *s, const uint8_t *f, size_t len)
{
    mesh *m = u;
    uint8_t kind, node[MESH_ID_BYTES];
    char err[96];
    if (nat_relay_head_decode(f, len, &kind, node, err, sizeof err) != 0) {
        mesh_stream_reject(s, err);
        return;
    }
    if (kind == NAT_RELAY_CONNECT) on_connect(m, s, node);
    else on_from(m, s);
}

static void head_on_fin(void *u, mesh_stream *s) { mesh_stream_finish(s); }
static const mesh_stream_handlers head_handlers = {head_on_frame, head_on_fin, noop_close};

static void relay_accept(void *ctx, mesh_stream *s) { mesh_stream_set_handlers(s, &head_handlers, ctx); }

/* ---- hooks and life cycle ----------------------------------------------------*/

static struct nat_node *nat_node_of(mesh_node *n)
{
    if (n->nat) return n->nat;
    struct nat_node *nn = calloc(1, sizeof *nn);
    if (!nn) return NULL;
    nn->n = n;
    nn->relay_timer = evtimer_new(n->m->base, relay_timer_cb, nn);
    nn->punch_ev = evtimer_new(n->m->base, punch_cb, nn);
    if (!nn->relay_timer || !nn->punch_ev) {
        if (nn->relay_timer) event_free(nn->relay_timer);
        if (nn->punch_ev) event_free(nn->punch_ev);
        free(nn);
        return NULL;
    }
    n->nat = nn;
    return nn;
}

void nat_dial_started(mesh *m, mesh_node *n)
{
    if (!m->nat || m->freeing) return;
    struct nat_node *nn = nat_node_of(n);
    if (!nn) return;
    send_intros(m, n);
    if (!evtimer_pending(nn->relay_timer, NULL)) timer_ms(nn->relay_timer, NAT_RELAY_AFTER_MS);
}

int nat_init(mesh *m)
{
    struct nat_state *st = calloc(1, sizeof *st);
    if (!st) return -1;
    st->m = m;
    st->sweep_ev = event_new(m->base, -1, EV_PERSIST, sweep_cb, m);
    if (!st->sweep_ev) {
        free(st);
        return -1;
    }
    timer_ms(st->sweep_ev, NAT_SWEEP_MS);
    st->n_base = m->rec.n_addrs;
    memcpy(st->base_addrs, m->rec.addrs, sizeof st->base_addrs);
    m->nat = st;
    mesh_register_stream_type(m, MESH_STREAM_RELAY, relay_accept, m);
    mesh_register_stream_type(m, MESH_STREAM_RENDEZVOUS, rv_accept, m);
    quic_endpoint_set_virtual_sender(m->ep, vsend, st);
    return 0;
}

/* Called by mesh_free after the endpoint and the links are gone: their
 * streams' last on_close callbacks still point into the tables here. */
void nat_free(mesh *m)
{
    struct nat_state *st = m->nat;
    for (mesh_node *n = m->nodes; n; n = n->next) {
        struct nat_node *nn = n->nat;
        if (!nn) continue;
        event_free(nn->relay_timer);
        event_free(nn->punch_ev);
        free(nn);
        n->nat = NULL;
    }
    if (!st) return;
    event_free(st->sweep_ev);
    free(st);
    m->nat = NULL;
}
