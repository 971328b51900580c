/* passive.c: passive clients (`llmesh client`; docs/mesh.md "Passive
 * clients", bytes in docs/PROTOCOL.md "Routes").
 *
 * A client is not a member. It dials with its own ALPN, so a member knows
 * what calls before any stream opens, and members never add it to their node
 * table, gossip to it, probe it or dial it. What a client costs a member is a
 * connection while the client uses it and one routing-table answer per pull.
 *
 * Member side (here): count client connections and cap them; answer ROUTES
 * pulls with the member's own record and those of the peers it sees alive;
 * close client connections nobody used for MESH_MEMBER_IDLE_MS.
 *
 * Client side (here):
 *   - pull the routing table every routes interval (30 s), and soon after
 *     anything suggests it is stale (mesh_refresh_routes: a failed dial, a
 *     connection a host closed, a failed request); from a member it is
 *     connected to if any, else any member the last table listed, else its
 *     join-token nodes, one after the other while pulls fail;
 *   - the table replaces what the client knew: nodes it lists are "alive",
 *     others are hidden; a node the client itself could not reach stays
 *     "dead" for MESH_CLIENT_AVOID_MS unless a newer record says it
 *     restarted (members may not have noticed yet);
 *   - while requests to a host are open, PING it on a CONTROL stream each
 *     probe interval: a host silent for the suspicion time is dropped (its
 *     streams fail at once, a request not yet answered is retried elsewhere
 *     by the API) instead of hanging until QUIC's 30 s idle timeout;
 *   - close connections no request used for the idle time.
 * The dialling itself (on demand, frames queued meanwhile) is in mesh.c and
 * stream.c. Everything on the event-loop thread. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "mesh/mesh_private.h"
#include "mesh/routes.h"

struct passive_state {
    struct event *pull_ev;       /* the next pull; while one is in flight, its deadline */
    struct event *tick_ev;       /* persistent: probes of hosts in use, idle connections */
    mesh_stream *pull;           /* the pull in flight, or NULL */
    routes_reply reply;
    uint8_t source[MESH_ID_BYTES];
    int failures;                /* pulls failed in a row */
    uint32_t pick;               /* random start among the candidates (pull_source) */
    uint64_t last_start, last_done;  /* monotonic ms; last_done 0 = never */
    uint32_t interval_ms, idle_ms;
};

static void timer_add_ms(struct event *ev, uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(ev, &tv);
}

/* ---- member side ---------------------------------------------------------------*/

int passive_type_allowed(const mesh *m, uint8_t type)
{
    return type == MESH_STREAM_ROUTES || type == MESH_STREAM_CONTROL || m->types[type].clients;
}

/* Members' records say how many clients each has (the console shows it).
 * Clients come and go as they use a host, so a burst of them republishes
 * at most once per loop turn (mesh_mark_dirty coalesces). */
static void publish_clients(mesh *m)
{
    uint32_t n = m->n_clients > 0 ? (uint32_t)m->n_clients : 0;
    if (m->rec.clients == n) return;
    m->rec.clients = n;
    mesh_mark_dirty(m);
}

void passive_link_accepted(mesh *m, mesh_link *l)
{
    l->passive = 1;
    m->n_clients++;
    char hex[MESH_ID_HEX];
    identity_id_hex(l->peer, hex);
    if (m->n_clients > (int)m->max_clients) {
        m->counters.clients_refused++;
        log_warn(MESH_LOG, "client %.16s refused: %u client connections already", hex, (unsigned)m->max_clients);
        mesh_link_close_now(l, "too many clients");
        return;
    }
    log_debug(MESH_LOG, "client %.16s connected (%d clients)", hex, m->n_clients);
    publish_clients(m);
}

void passive_link_closed(mesh *m, mesh_link *l)
{
    m->n_clients--;
    publish_clients(m);
    if (log_enabled(LOG_DEBUG)) {
        char hex[MESH_ID_HEX];
        identity_id_hex(l->peer, hex);
        log_debug(MESH_LOG, "client %.16s disconnected (%d clients)", hex, m->n_clients);
    }
}

void passive_sweep_idle(mesh *m)
{
    uint64_t now = detect_now_ms();
    for (mesh_link *l = m->links; l; l = l->next)
        if (l->passive && l->ready && !l->want_close && l->user_streams == 0 &&
            now - l->last_active >= MESH_MEMBER_IDLE_MS)
            mesh_link_close_when_idle(l, "client idle");
}

static void routes_done_frame(void *user, mesh_stream *s, const uint8_t *p, size_t len)
{
    mesh_stream_reject(s, "a second request on a ROUTES stream");
}

static void routes_on_fin(void *user, mesh_stream *s) { mesh_stream_finish(s); }
static void routes_on_close(void *user, mesh_stream *s, const char *error) {}

static const mesh_stream_handlers routes_done_handlers = {routes_done_frame, routes_on_fin, routes_on_close};

/* A GET: our own record, then those of the peers we see alive, END, FIN. */
static void routes_serve_frame(void *user, mesh_stream *s, const uint8_t *p, size_t len)
{
    mesh *m = user;
    if (!routes_is_get(p, len)) {
        mesh_stream_reject(s, "a ROUTES stream must start with GET");
        return;
    }
    if (m->left) {
        /* Shutting down: the client asks someone else. */
        mesh_stream_abort(s);
        return;
    }
    mesh_stream_set_handlers(s, &routes_done_handlers, m);
    uint32_t count = 0;
    if (mesh_stream_send(s, m->raw, m->raw_len) != 0) return;
    count++;
    for (const mesh_node *n = m->nodes; n; n = n->next) {
        if (!n->has_record || !n->raw || n->state != NODE_ALIVE || n->rec.role == RECORD_ROLE_CLIENT)
            continue;
        if (mesh_stream_send(s, n->raw, n->raw_len) != 0) return;
        count++;
    }
    uint8_t end[ROUTES_END_BYTES];
    if (mesh_stream_send(s, end, routes_end_encode(count, end)) != 0) return;
    mesh_stream_finish(s);
    m->counters.routes_served++;
}

static const mesh_stream_handlers routes_serve_handlers = {routes_serve_frame, routes_on_fin, routes_on_close};

static void routes_accept(void *ctx, mesh_stream *s)
{
    mesh_stream_set_handlers(s, &routes_serve_handlers, ctx);
}

void passive_register(mesh *m)
{
    m->types[MESH_STREAM_ROUTES].fn = routes_accept;
    m->types[MESH_STREAM_ROUTES].ctx = m;
}

/* ---- client side: pulling the routing table ------------------------------------*/

static void pull_schedule(mesh *m, uint64_t delay_ms)
{
    struct passive_state *pv = m->pv;
    struct timeval left;
    if (evtimer_pending(pv->pull_ev, &left) &&
        (uint64_t)left.tv_sec * 1000 + (uint64_t)left.tv_usec / 1000 <= delay_ms)
        return;   /* a sooner pull is already due */
    timer_add_ms(pv->pull_ev, delay_ms);
}

/* Where to pull from: a member we are connected to (no handshake), else a
 * member the last table listed, else a join-token node. Within the first of
 * those groups that is not empty, one at random, so that clients spread
 * their pulls over the members (they all hold the same table, in the same
 * order); failed pulls then move on through the group, and the join-token
 * nodes join it once each member in it failed. NULL when there is none. */
static mesh_node *pull_source(mesh *m)
{
    struct passive_state *pv = m->pv;
    mesh_node *cand[MESH_MAX_NODES];
    int count = 0;
    for (int pass = 0; pass < 3 && count == 0; pass++)
        for (mesh_node *n = m->nodes; n && count < MESH_MAX_NODES; n = n->next) {
            int alive = n->state == NODE_ALIVE && n->has_record;
            int take = pass == 0 ? alive && n->link != NULL
                     : pass == 1 ? alive
                                 : n->bootstrap;
            if (take) cand[count++] = n;
        }
    /* Each of them failed once already: the join tokens are worth a try. */
    for (mesh_node *n = m->nodes; n && pv->failures >= count && count < MESH_MAX_NODES; n = n->next)
        if (n->bootstrap && !(n->state == NODE_ALIVE && n->has_record)) cand[count++] = n;
    if (!count) return NULL;
    if (pv->failures == 0) evutil_secure_rng_get_bytes(&pv->pick, sizeof pv->pick);
    return cand[(pv->pick + (uint32_t)pv->failures) % (uint32_t)count];
}

static void pull_failed(mesh *m, const char *why)
{
    struct passive_state *pv = m->pv;
    routes_reply_free(&pv->reply);
    m->counters.routes_failed++;
    pv->failures++;
    char hex[MESH_ID_HEX];
    identity_id_hex(pv->source, hex);
    if (pv->failures == 1 || log_enabled(LOG_DEBUG))
        log_info(MESH_LOG, "routing table pull from %.16s failed: %s", hex, why);
    /* The next candidates at once, then back off up to the interval. */
    uint64_t delay = 0;
    if (pv->failures > 2) {
        delay = MESH_BACKOFF_MIN_MS;
        for (int i = 3; i < pv->failures && delay < pv->interval_ms; i++) delay *= 2;
        if (delay > pv->interval_ms) delay = pv->interval_ms;
    }
    pull_schedule(m, delay);
}

/* A complete table: it replaces what we knew (see the top of the file). */
static void pull_apply(mesh *m)
{
    struct passive_state *pv = m->pv;
    uint64_t now = detect_now_ms();
    for (mesh_node *n = m->nodes; n; n = n->next) n->listed = 0;
    int alive = 0;
    for (int i = 0; i < pv->reply.n; i++) {
        const node_record *rec = &pv->reply.recs[i];
        if (!memcmp(rec->id, m->self.public_key, MESH_ID_BYTES) || rec->role == RECORD_ROLE_CLIENT) continue;
        mesh_node *n = mesh_node_get(m, rec->id);
        if (!n) continue;
        int newer = !n->has_record || rec->seq > n->rec.seq;
        if (newer) {
            n->rec = *rec;
            n->has_record = 1;
        }
        n->listed = 1;
        if (n->state == NODE_DEAD && !newer && !n->link && now - n->down_at < MESH_CLIENT_AVOID_MS)
            continue;   /* we could not reach it a moment ago */
        n->state = NODE_ALIVE;
        alive++;
    }
    for (mesh_node *n = m->nodes; n; n = n->next)
        if (!n->listed && n->state != NODE_EXPIRED) {
            n->state = NODE_EXPIRED;
            n->down_at = now;
        }
    char hex[MESH_ID_HEX];
    identity_id_hex(pv->source, hex);
    log_debug(MESH_LOG, "routing table from %.16s: %d nodes, %d usable", hex, pv->reply.n, alive);
}

static void pull_on_frame(void *user, mesh_stream *s, const uint8_t *p, size_t len)
{
    mesh *m = user;
    struct passive_state *pv = m->pv;
    if (s != pv->pull) return;
    int rc = routes_reply_add(&pv->reply, p, len);
    if (rc < 0) {
        char why[200];
        snprintf(why, sizeof why, "bad answer: %s", pv->reply.error);
        pv->pull = NULL;
        mesh_stream_reject(s, why);
        pull_failed(m, why);
        return;
    }
    if (rc == 0) return;
    pv->pull = NULL;   /* the stream ends by itself: both sides finished */
    pull_apply(m);
    routes_reply_free(&pv->reply);
    m->counters.routes_pulled++;
    pv->failures = 0;
    pv->last_done = detect_now_ms();
    pull_schedule(m, pv->interval_ms);
}

static void pull_on_close(void *user, mesh_stream *s, const char *error)
{
    mesh *m = user;
    struct passive_state *pv = m->pv;
    if (s != pv->pull) return;
    pv->pull = NULL;
    pull_failed(m, error ? error : "the answer ended before END");
}

static const mesh_stream_handlers pull_handlers = {pull_on_frame, routes_on_fin, pull_on_close};

static void pull_start(mesh *m)
{
    struct passive_state *pv = m->pv;
    if (pv->pull || m->left || m->freeing) return;
    pv->last_start = detect_now_ms();
    mesh_node *src = pull_source(m);
    if (!src) {
        memset(pv->source, 0, sizeof pv->source);
        pull_failed(m, "no node to pull from (no join token, and no table yet)");
        return;
    }
    memcpy(pv->source, src->id, MESH_ID_BYTES);
    routes_reply_init(&pv->reply);
    char err[256];
    mesh_stream *s = mesh_stream_open(m, src->id, MESH_STREAM_ROUTES, &pull_handlers, m, err, sizeof err);
    if (!s) {
        pull_failed(m, err);
        return;
    }
    uint8_t get[1];
    if (mesh_stream_send(s, get, routes_get_encode(get)) != 0) {
        mesh_stream_abort(s);
        pull_failed(m, "cannot send the request");
        return;
    }
    mesh_stream_finish(s);
    pv->pull = s;
    timer_add_ms(pv->pull_ev, MESH_ROUTES_TIMEOUT_MS);   /* the deadline */
}

static void pull_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    mesh *m = arg;
    struct passive_state *pv = m->pv;
    if (pv->pull) {
        mesh_stream *s = pv->pull;
        pv->pull = NULL;
        mesh_stream_abort(s);
        pull_failed(m, "no complete answer in time");
        return;
    }
    pull_start(m);
}

void mesh_refresh_routes(mesh *m)
{
    struct passive_state *pv = m->pv;
    if (!pv || m->left || m->freeing || pv->pull) return;
    uint64_t now = detect_now_ms(), at = pv->last_start + MESH_ROUTES_MIN_GAP_MS;
    pull_schedule(m, at > now ? at - now : 0);
}

int64_t mesh_routes_age_ms(const mesh *m)
{
    if (!m->pv || !m->pv->last_done) return -1;
    return (int64_t)(detect_now_ms() - m->pv->last_done);
}

/* ---- client side: connections --------------------------------------------------*/

void passive_dial_failed(mesh *m, mesh_node *n, const char *reason)
{
    snprintf(n->down_reason, sizeof n->down_reason, "%s", reason ? reason : "dial failed");
    if (n->state != NODE_EXPIRED) {
        n->state = NODE_DEAD;
        n->down_at = detect_now_ms();
    }
    log_info(MESH_LOG, "cannot reach node %.16s: %s", n->id_hex, n->down_reason);
    /* Its waiting streams fail from the loop, not from inside QUIC's
     * callback (their owners may dial someone else at once). */
    if (n->pending) timer_add_ms(n->dial_timer, 0);
    mesh_refresh_routes(m);
}

void passive_link_lost(mesh *m, mesh_node *n, int by_us)
{
    if (by_us) return;
    /* The host closed it: restarting, leaving, or gone. Ask the members. */
    log_debug(MESH_LOG, "node %.16s closed our connection", n->id_hex);
    mesh_refresh_routes(m);
}

static void probe_on_frame(void *user, mesh_stream *s, const uint8_t *p, size_t len)
{
    swim_probe pr;
    if (detect_read_probe(s, p, len, &pr) == 0 && pr.kind == SWIM_ACK && s->link) {
        s->link->ping_pending = 0;
        s->link->last_heard = detect_now_ms();
    }
}

static void probe_on_fin(void *user, mesh_stream *s) { mesh_stream_finish(s); }
static void probe_on_close(void *user, mesh_stream *s, const char *error) {}

static const mesh_stream_handlers probe_handlers = {probe_on_frame, probe_on_fin, probe_on_close};

static void probe_send(mesh *m, mesh_link *l)
{
    if (!l->control) l->control = mesh_stream_open_on(l, MESH_STREAM_CONTROL, &probe_handlers, m);
    if (l->control && detect_send_ping(m, l->control) == 0) l->ping_pending = 1;
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    mesh *m = arg;
    struct passive_state *pv = m->pv;
    if (m->left || m->freeing) return;
    uint64_t now = detect_now_ms();
    for (mesh_link *l = m->links; l; l = l->next) {
        mesh_node *n = l->node;
        if (!l->outgoing || !l->ready || l->want_close || !n || n->link != l) continue;
        if (l->user_streams == 0) {
            l->probing = 0;
            if (now - l->last_active >= pv->idle_ms && !(pv->pull && pv->pull->link == l))
                mesh_link_close_when_idle(l, "idle");
            continue;
        }
        if (!l->probing) {
            l->probing = 1;
            l->ping_pending = 0;
            l->last_heard = now;
        }
        if (now - l->last_heard >= m->suspect_ms) {
            log_warn(MESH_LOG, "node %.16s stopped answering while requests to it were open: dropping it",
                     n->id_hex);
            snprintf(n->down_reason, sizeof n->down_reason, "stopped answering probes");
            n->state = NODE_DEAD;
            n->down_at = now;
            mesh_link_close_now(l, "node stopped answering probes");
            mesh_refresh_routes(m);
            continue;
        }
        if (!l->ping_pending) probe_send(m, l);
    }
}

/* ---- life cycle ----------------------------------------------------------------*/

int passive_init(mesh *m, const mesh_config *cfg)
{
    if (!m->passive) return 0;
    struct passive_state *pv = calloc(1, sizeof *pv);
    if (!pv) return -1;
    m->pv = pv;
    pv->interval_ms = cfg->routes_interval_ms ? cfg->routes_interval_ms : MESH_ROUTES_INTERVAL_MS;
    pv->idle_ms = cfg->client_idle_ms ? cfg->client_idle_ms : MESH_CLIENT_IDLE_MS;
    pv->pull_ev = evtimer_new(m->base, pull_timer_cb, m);
    pv->tick_ev = event_new(m->base, -1, EV_PERSIST, tick_cb, m);
    if (!pv->pull_ev || !pv->tick_ev) return -1;
    timer_add_ms(pv->tick_ev, m->probe_interval_ms);
    timer_add_ms(pv->pull_ev, 0);   /* from the loop: the join tokens are in by then */
    return 0;
}

void passive_free(mesh *m)
{
    struct passive_state *pv = m->pv;
    if (!pv) return;
    if (pv->pull) mesh_stream_abort(pv->pull);
    routes_reply_free(&pv->reply);
    if (pv->pull_ev) event_free(pv->pull_ev);
    if (pv->tick_ev) event_free(pv->tick_ev);
    free(pv);
    m->pv = NULL;
}
