/* test_mesh.c: three meshes in one process on one event loop, over real QUIC
 * on loopback: joining through tokens, gossip of roles and models, full-mesh
 * connections, typed streams (echo of many frames incl. 1 MB), rejection of
 * unknown stream types, and noticing a node that went away; and the failure
 * detector with short timings: a hung node suspected then dead and back, a
 * false suspicion refuted, a false death report verified away, forged
 * leaves refused, a clean leave, dead records expiring, rejoining after
 * expiry. Every wait is bounded. */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "lib/base64.h"
#include "lib/log.h"
#include "mesh/identity.h"
#include "mesh/mesh.h"
#include "mesh/mesh_private.h"   /* white box: mesh_test_mute, record seq */
#include "mesh/record.h"
#include "mesh/swim.h"
#include "mesh/token.h"
#include "testlib.h"
#include "testnet.h"

#define MODEL "test-model-7b"
#define ECHO_TYPE 7
#define WAIT_MS 20000

static struct event_base *base;

/* The snapshot of peer other in m, or NULL. Each call has its own slot of a
 * small ring, so that a few results can be used together. */
static const mesh_peer *find_peer_id(mesh *m, const char *hex)
{
    static mesh_peer ring[4];
    static int next;
    mesh_peer peers[16];
    int n = mesh_peers(m, peers, 16);
    for (int i = 0; i < n && i < 16; i++)
        if (!strcmp(peers[i].id, hex)) {
            mesh_peer *slot = &ring[next++ % 4];
            *slot = peers[i];
            return slot;
        }
    return NULL;
}

static const mesh_peer *find_peer(mesh *m, const mesh *other)
{
    return find_peer_id(m, mesh_node_id_hex(other));
}

static int is_alive(mesh *m, const mesh *other)
{
    const mesh_peer *p = find_peer(m, other);
    return p && !strcmp(p->state, "alive");
}

typedef struct { mesh *a, *b, *c; } trio;

static int all_connected(void *arg)
{
    trio *t = arg;
    return is_alive(t->a, t->b) && is_alive(t->a, t->c) && is_alive(t->b, t->a) &&
           is_alive(t->b, t->c) && is_alive(t->c, t->a) && is_alive(t->c, t->b);
}

static int has_model(mesh *m, const mesh *other, const char *model)
{
    const mesh_peer *p = find_peer(m, other);
    if (!p) return 0;
    for (int i = 0; i < p->n_models; i++)
        if (!strcmp(p->models[i], model)) return 1;
    return 0;
}

static int models_known(void *arg)
{
    trio *t = arg;
    const mesh_peer *p = find_peer(t->c, t->a);
    return has_model(t->b, t->a, MODEL) && has_model(t->c, t->a, MODEL) && p &&
           p->memory_bytes == 123456789;
}

static int roles_known(void *arg)
{
    trio *t = arg;
    const mesh_peer *ca = find_peer(t->c, t->a), *cb = find_peer(t->c, t->b), *ac = find_peer(t->a, t->c);
    return ca && cb && ac && !strcmp(ca->role, "host") && !strcmp(cb->role, "standby") &&
           !strcmp(ac->role, "standby");
}

/* ---- echo service on A -------------------------------------------------------*/

typedef struct {
    int frames, fins, closes, aborts;
    const char *close_error;
} echo_server_state;

static echo_server_state server;

static void echo_frame(void *user, mesh_stream *s, const uint8_t *p, size_t len)
{
    server.frames++;
    if (len == 5 && !memcmp(p, "abort", 5)) {
        /* From inside a callback: no more callbacks, handle gone. */
        server.aborts++;
        mesh_stream_abort(s);
        return;
    }
    CHECK(mesh_stream_send(s, p, len) == 0);
}

static void echo_fin(void *user, mesh_stream *s)
{
    server.fins++;
    mesh_stream_finish(s);
}

static void echo_close(void *user, mesh_stream *s, const char *error)
{
    server.closes++;
    server.close_error = error;
}

static const mesh_stream_handlers echo_handlers = {echo_frame, echo_fin, echo_close};

static void echo_accept(void *ctx, mesh_stream *s)
{
    mesh_stream_set_handlers(s, &echo_handlers, ctx);
}

/* ---- the client side --------------------------------------------------------*/

typedef struct {
    int frames, fins, closes, order_ok;
    size_t sizes[16];
    int closed_with_error;
    char error[128];
    int big_ok;
} echo_client_state;

static void client_frame(void *user, mesh_stream *s, const uint8_t *p, size_t len)
{
    echo_client_state *st = user;
    CHECK(st->fins == 0 && st->closes == 0);
    if (st->frames < 16) st->sizes[st->frames] = len;
    if (len == (1u << 20)) {
        st->big_ok = 1;
        for (size_t i = 0; i < len; i++)
            if (p[i] != (uint8_t)(i * 13 + 1)) { st->big_ok = 0; break; }
    }
    st->frames++;
}

static void client_fin(void *user, mesh_stream *s)
{
    echo_client_state *st = user;
    st->fins++;
}

static void client_close(void *user, mesh_stream *s, const char *error)
{
    echo_client_state *st = user;
    CHECK(st->closes == 0);
    st->closes++;
    if (error) {
        st->closed_with_error = 1;
        snprintf(st->error, sizeof st->error, "%s", error);
    }
}

static const mesh_stream_handlers client_handlers = {client_frame, client_fin, client_close};

static int client_closed(void *arg) { return ((echo_client_state *)arg)->closes > 0; }

/* ---- the tests -----------------------------------------------------------------*/

static int second_known(void *arg)
{
    trio *t = arg;
    return has_model(t->c, t->a, "second-model") && has_model(t->b, t->a, "second-model");
}

static int server_closed(void *arg) { return server.closes > 0; }
static int server_got_frame(void *arg) { return server.frames >= 5; }

static char a_id[MESH_ID_HEX];   /* A's id, kept for after mesh_free(A) */

static int alive_by_id(mesh *m, const char *hex)
{
    const mesh_peer *p = find_peer_id(m, hex);
    return p && !strcmp(p->state, "alive");
}

static char a_token[TOKEN_MAX_TEXT];
static unsigned a_port;

static int a_dead(void *arg)
{
    trio *t = arg;
    const mesh_peer *ba = find_peer_id(t->b, a_id), *ca = find_peer_id(t->c, a_id);
    return ba && ca && !strcmp(ba->state, "dead") && !strcmp(ca->state, "dead");
}

static int a_models_dropped(void *arg)
{
    trio *t = arg;
    const mesh_peer *ba = find_peer_id(t->b, a_id), *ca = find_peer_id(t->c, a_id);
    return ba && ca && ba->n_models == 0 && ca->n_models == 0;
}

static int a_gone(void *arg)
{
    trio *t = arg;
    return !alive_by_id(t->b, a_id) && !alive_by_id(t->c, a_id);
}

static void test_config_errors(void)
{
    char err[512];
    mesh_config cfg = {.home = testlib_tmp_path("errors"), .listen = "127.0.0.1:0", .role = "boss"};
    CHECK(mesh_new(base, &cfg, err, sizeof err) == NULL);
    CHECK(strstr(err, "role") != NULL);
    cfg.role = "host";
    cfg.listen = "localhost:9";
    CHECK(mesh_new(base, &cfg, err, sizeof err) == NULL);
    CHECK(strstr(err, "listen") != NULL);
    cfg.listen = "127.0.0.1:0";
    const char *bad[] = {"not-a-token"};
    cfg.join_tokens = bad;
    cfg.n_join = 1;
    CHECK(mesh_new(base, &cfg, err, sizeof err) == NULL);
    CHECK(strstr(err, "join token 1") != NULL);
    /* A good config works, and the same home gives the same id and token
     * on the same port. */
    cfg.n_join = 0;
    mesh *m = mesh_new(base, &cfg, err, sizeof err);
    REQUIRE(m != NULL);
    char id[MESH_ID_HEX], tok[TOKEN_MAX_TEXT], listen[64];
    snprintf(id, sizeof id, "%s", mesh_node_id_hex(m));
    snprintf(tok, sizeof tok, "%s", mesh_token(m));
    snprintf(listen, sizeof listen, "127.0.0.1:%u", mesh_listen_port(m));
    token t;
    REQUIRE(token_decode(tok, &t, err, sizeof err) == 0);
    CHECK(memcmp(t.id, mesh_node_id(m), MESH_ID_BYTES) == 0);
    CHECK_EQ_INT(t.n_addrs, 1);
    CHECK_EQ_INT(t.addrs[0].port, mesh_listen_port(m));
    mesh_free(m);
    cfg.listen = listen;
    m = mesh_new(base, &cfg, err, sizeof err);
    REQUIRE(m != NULL);
    CHECK_EQ_STR(mesh_node_id_hex(m), id);
    CHECK_EQ_STR(mesh_token(m), tok);
    /* No peers: no host, no stream. */
    uint8_t pick[MESH_ID_BYTES];
    CHECK(mesh_pick_host(m, MODEL, pick) == -1);
    CHECK(mesh_stream_open(m, t.id, ECHO_TYPE, &client_handlers, NULL, err, sizeof err) == NULL);
    CHECK(strstr(err, "no live connection") != NULL);
    mesh_free(m);
}

static void test_three_nodes(void)
{
    trio t = {0};
    t.a = testnet_mesh("a", "127.0.0.1:0", "host", NULL);
    REQUIRE(t.a);
    mesh_register_stream_type(t.a, ECHO_TYPE, echo_accept, NULL);
    const char *models[] = {MODEL};
    mesh_set_models(t.a, models, 1);
    mesh_set_memory(t.a, 123456789);
    t.b = testnet_mesh("b", "127.0.0.1:0", "standby", mesh_token(t.a));
    REQUIRE(t.b);
    t.c = testnet_mesh("c", "127.0.0.1:0", "standby", mesh_token(t.b));
    REQUIRE(t.c);

    CHECK(testnet_run_until(all_connected, &t, WAIT_MS));
    if (!testnet_run_until(roles_known, &t, WAIT_MS)) {
        mesh *all[3] = {t.a, t.b, t.c};
        for (int i = 0; i < 3; i++) {
            mesh_peer ps[4];
            int n = mesh_peers(all[i], ps, 4);
            for (int j = 0; j < n; j++)
                fprintf(stderr, "  %c sees %.8s: %s %s models=%d\n", 'A' + i, ps[j].id, ps[j].role,
                        ps[j].state, ps[j].n_models);
        }
        CHECK(!"roles known");
    }
    CHECK(testnet_run_until(models_known, &t, WAIT_MS));
    mesh_peer peers[4];
    CHECK_EQ_INT(mesh_peers(t.c, peers, 4), 2);
    CHECK_EQ_INT(mesh_peers(t.c, peers, 1), 2);   /* count beyond max */
    const mesh_peer *ca = find_peer(t.c, t.a);
    REQUIRE(ca);
    CHECK_EQ_INT(ca->n_addresses, 1);
    char want[64];
    snprintf(want, sizeof want, "127.0.0.1:%u", mesh_listen_port(t.a));
    CHECK_EQ_STR(ca->addresses[0], want);

    uint8_t host[MESH_ID_BYTES];
    REQUIRE(mesh_pick_host(t.c, MODEL, host) == 0);
    CHECK(memcmp(host, mesh_node_id(t.a), MESH_ID_BYTES) == 0);
    CHECK(mesh_pick_host(t.c, "no-such-model", host) == -1);
    CHECK(mesh_pick_host(t.a, MODEL, host) == -1);   /* never itself */

    /* A model change reaches the others. */
    const char *two[] = {MODEL, "second-model"};
    mesh_set_models(t.a, two, 2);
    CHECK(testnet_run_until(second_known, &t, WAIT_MS));

    /* Echo C -> A: several frames including an empty one and 1 MB. */
    echo_client_state st = {0};
    char err[256];
    mesh_stream *s = mesh_stream_open(t.c, mesh_node_id(t.a), ECHO_TYPE, &client_handlers, &st, err, sizeof err);
    REQUIRE(s != NULL);
    CHECK(memcmp(mesh_stream_peer(s), mesh_node_id(t.a), MESH_ID_BYTES) == 0);
    uint8_t *big = malloc(1u << 20);
    for (size_t i = 0; i < (1u << 20); i++) big[i] = (uint8_t)(i * 13 + 1);
    CHECK(mesh_stream_send(s, "hello", 5) == 0);
    CHECK(mesh_stream_send(s, "", 0) == 0);
    CHECK(mesh_stream_send(s, big, 1u << 20) == 0);
    CHECK(mesh_stream_send(s, "bye", 3) == 0);
    CHECK(mesh_stream_unacked(s) > 0);
    free(big);
    mesh_stream_finish(s);
    CHECK(testnet_run_until(client_closed, &st, WAIT_MS));
    CHECK_EQ_INT(st.frames, 4);
    CHECK_EQ_INT(st.sizes[0], 5);
    CHECK_EQ_INT(st.sizes[1], 0);
    CHECK_EQ_INT(st.sizes[2], 1u << 20);
    CHECK_EQ_INT(st.sizes[3], 3);
    CHECK(st.big_ok);
    CHECK_EQ_INT(st.fins, 1);
    CHECK_EQ_INT(st.closes, 1);
    CHECK(!st.closed_with_error);
    CHECK(testnet_run_until(server_closed, NULL, WAIT_MS));
    CHECK_EQ_INT(server.frames, 4);
    CHECK_EQ_INT(server.fins, 1);
    CHECK(server.close_error == NULL);

    /* An unknown stream type is reset by A and counted there. */
    mesh_counters before, after;
    mesh_get_counters(t.a, &before);
    echo_client_state bad = {0};
    s = mesh_stream_open(t.c, mesh_node_id(t.a), 99, &client_handlers, &bad, err, sizeof err);
    REQUIRE(s != NULL);
    CHECK(mesh_stream_send(s, "x", 1) == 0);
    CHECK(testnet_run_until(client_closed, &bad, WAIT_MS));
    CHECK(bad.closed_with_error);
    mesh_get_counters(t.a, &after);
    CHECK_EQ_INT(after.bad_frames, before.bad_frames + 1);

    /* Gossip from a misbehaving peer: an unknown message kind is skipped; a
     * record whose signature is not its node's (B's id, someone else's
     * key), or a frame over the gossip bound, resets the stream and counts. */
    identity forger;
    char dir[600];
    snprintf(dir, sizeof dir, "%s/forger", testlib_tmpdir());
    REQUIRE(identity_load_or_create(dir, &forger, NULL, err, sizeof err) == 0);
    node_record fake = {0};
    memcpy(fake.id, forger.public_key, MESH_ID_BYTES);
    fake.seq = UINT64_MAX - 1;
    fake.role = RECORD_ROLE_HOST;
    strcpy(fake.models[0], "stolen");
    fake.n_models = 1;
    uint8_t raw[RECORD_MAX_BYTES];
    int raw_len = record_encode(&fake, &forger, raw, sizeof raw, err, sizeof err);
    REQUIRE(raw_len > 0);
    memcpy(raw + 1, mesh_node_id(t.b), MESH_ID_BYTES);
    mesh_get_counters(t.a, &before);
    echo_client_state g1 = {0}, g2 = {0};
    s = mesh_stream_open(t.c, mesh_node_id(t.a), MESH_STREAM_GOSSIP, &client_handlers, &g1, err, sizeof err);
    REQUIRE(s != NULL);
    CHECK(mesh_stream_send(s, "\x09future", 7) == 0);
    CHECK(mesh_stream_send(s, raw, (size_t)raw_len) == 0);
    CHECK(testnet_run_until(client_closed, &g1, WAIT_MS));
    CHECK(g1.closed_with_error);
    s = mesh_stream_open(t.c, mesh_node_id(t.a), MESH_STREAM_GOSSIP, &client_handlers, &g2, err, sizeof err);
    REQUIRE(s != NULL);
    uint8_t *oversized = calloc(1, RECORD_MAX_BYTES + 1);
    oversized[0] = 1;
    CHECK(mesh_stream_send(s, oversized, RECORD_MAX_BYTES + 1) == 0);
    free(oversized);
    CHECK(testnet_run_until(client_closed, &g2, WAIT_MS));
    CHECK(g2.closed_with_error);
    mesh_get_counters(t.a, &after);
    CHECK_EQ_INT(after.bad_frames, before.bad_frames + 2);
    CHECK(!has_model(t.a, t.b, "stolen"));
    CHECK(is_alive(t.c, t.a) && is_alive(t.a, t.c));

    /* Abort from the client side: no callbacks after it; the server's
     * stream closes with an error. */
    server.closes = 0;
    server.close_error = NULL;
    echo_client_state ab = {0};
    s = mesh_stream_open(t.c, mesh_node_id(t.a), ECHO_TYPE, &client_handlers, &ab, err, sizeof err);
    REQUIRE(s != NULL);
    CHECK(mesh_stream_send(s, "ping", 4) == 0);
    CHECK(testnet_run_until(server_got_frame, NULL, WAIT_MS));
    mesh_stream_abort(s);
    CHECK(testnet_run_until(server_closed, NULL, WAIT_MS));
    CHECK(server.close_error != NULL);
    testnet_run_for(100);
    CHECK_EQ_INT(ab.closes, 0);                    /* abort: no more callbacks */

    /* The server aborts from inside on_frame, with more frames queued
     * behind the one it reacts to: it gets no more callbacks, the client
     * sees its stream reset. */
    int closes_before = server.closes, frames_before = server.frames;
    echo_client_state sa = {0};
    s = mesh_stream_open(t.c, mesh_node_id(t.a), ECHO_TYPE, &client_handlers, &sa, err, sizeof err);
    REQUIRE(s != NULL);
    CHECK(mesh_stream_send(s, "abort", 5) == 0);
    CHECK(mesh_stream_send(s, "after", 5) == 0);
    CHECK(testnet_run_until(client_closed, &sa, WAIT_MS));
    CHECK(sa.closed_with_error);
    CHECK_EQ_INT(server.aborts, 1);
    CHECK_EQ_INT(server.frames, frames_before + 1);
    CHECK_EQ_INT(server.closes, closes_before);
    CHECK(is_alive(t.c, t.a));                     /* the connection is unharmed */

    mesh_counters cc, ac;
    mesh_get_counters(t.c, &cc);
    mesh_get_counters(t.a, &ac);
    CHECK(cc.streams_opened >= 3);
    CHECK(ac.streams_accepted >= 2);               /* the echo streams (gossip counts too) */

    /* A goes away: B and C notice. */
    snprintf(a_id, sizeof a_id, "%s", mesh_node_id_hex(t.a));
    snprintf(a_token, sizeof a_token, "%s", mesh_token(t.a));
    a_port = mesh_listen_port(t.a);
    CHECK(alive_by_id(t.b, a_id) && alive_by_id(t.c, a_id));
    mesh_free(t.a);
    t.a = NULL;
    uint64_t t0 = testnet_now_ms();
    CHECK(testnet_run_until(a_gone, &t, WAIT_MS));
    fprintf(stderr, "  A seen gone after %llu ms\n", (unsigned long long)(testnet_now_ms() - t0));
    CHECK(is_alive(t.b, t.c) && is_alive(t.c, t.b));
    CHECK(mesh_pick_host(t.c, MODEL, host) == -1);
    /* Its record stays known (role, models), its state turns dead once the
     * redial fails. */
    const mesh_peer *ba = find_peer_id(t.b, a_id);
    REQUIRE(ba);
    CHECK_EQ_STR(ba->role, "host");
    CHECK(testnet_run_until(a_dead, &t, WAIT_MS));

    /* A comes back on the same home and port: same id, same token, and B
     * and C reconnect; A's new record (no models now) replaces the old. */
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%u", a_port);
    t.a = testnet_mesh("a", listen, "host", NULL);
    REQUIRE(t.a);
    CHECK_EQ_STR(mesh_node_id_hex(t.a), a_id);
    CHECK_EQ_STR(mesh_token(t.a), a_token);
    t0 = testnet_now_ms();
    CHECK(testnet_run_until(all_connected, &t, WAIT_MS));
    fprintf(stderr, "  A reconnected after %llu ms\n", (unsigned long long)(testnet_now_ms() - t0));
    CHECK(testnet_run_until(a_models_dropped, &t, WAIT_MS));
    mesh_free(t.a);
    mesh_free(t.b);
    mesh_free(t.c);
}

/* Two nodes that join each other at the same moment dial each other at
 * once: the duplicate connection must be settled to one, the same one on
 * both sides, and streams must work. Over IPv6 loopback. */
typedef struct { mesh *x, *y; } pair;

static int pair_alive(void *arg)
{
    pair *p = arg;
    return is_alive(p->x, p->y) && is_alive(p->y, p->x);
}

static int pair_settled(void *arg)
{
    pair *p = arg;
    return pair_alive(p) && mesh_connections(p->x) == 1 && mesh_connections(p->y) == 1;
}

static void test_simultaneous_join(void)
{
    /* Learn each node's token first (fixed ports), then start both, each
     * joining the other. y is made with x's token (the loop does not run,
     * so it never dials), so that both hold the same mesh secret. */
    mesh *x = testnet_mesh("x", "[::1]:0", "standby", NULL);
    if (!x) {
        fprintf(stderr, "  no IPv6 loopback here: skipped\n");
        return;
    }
    char x_token[TOKEN_MAX_TEXT], x_listen[64], y_token[TOKEN_MAX_TEXT], y_listen[64];
    snprintf(x_token, sizeof x_token, "%s", mesh_token(x));
    snprintf(x_listen, sizeof x_listen, "[::1]:%u", mesh_listen_port(x));
    mesh *y = testnet_mesh("y", "[::1]:0", "standby", x_token);
    REQUIRE(y);
    snprintf(y_token, sizeof y_token, "%s", mesh_token(y));
    snprintf(y_listen, sizeof y_listen, "[::1]:%u", mesh_listen_port(y));
    const mesh_peer *none = find_peer(x, y);
    CHECK(none == NULL);
    mesh_free(x);
    mesh_free(y);

    pair p;
    p.x = testnet_mesh("x", x_listen, "host", y_token);
    p.y = testnet_mesh("y", y_listen, "host", x_token);
    REQUIRE(p.x && p.y);
    CHECK_EQ_STR(mesh_token(p.x), x_token);
    CHECK(testnet_run_until(pair_alive, &p, WAIT_MS));
    CHECK(testnet_run_until(pair_settled, &p, WAIT_MS));
    testnet_run_for(300);
    CHECK_EQ_INT(mesh_connections(p.x), 1);
    CHECK_EQ_INT(mesh_connections(p.y), 1);
    const mesh_peer *xy = find_peer(p.x, p.y);
    REQUIRE(xy);
    CHECK(strstr(xy->addresses[0], "[::1]:") == xy->addresses[0]);

    /* Streams both ways. */
    mesh_register_stream_type(p.x, ECHO_TYPE, echo_accept, NULL);
    mesh_register_stream_type(p.y, ECHO_TYPE, echo_accept, NULL);
    mesh *from[2] = {p.x, p.y}, *to[2] = {p.y, p.x};
    for (int i = 0; i < 2; i++) {
        echo_client_state st = {0};
        char err[256];
        mesh_stream *s = mesh_stream_open(from[i], mesh_node_id(to[i]), ECHO_TYPE, &client_handlers, &st,
                                          err, sizeof err);
        REQUIRE(s);
        CHECK(mesh_stream_send(s, "ping", 4) == 0);
        mesh_stream_finish(s);
        CHECK(testnet_run_until(client_closed, &st, WAIT_MS));
        CHECK_EQ_INT(st.frames, 1);
        CHECK(!st.closed_with_error);
    }
    mesh_free(p.x);
    mesh_free(p.y);
}

/* Wildcard listeners advertise interface addresses, loopback included, and
 * a dialler tries them all at once. "[::]" is dual-stack: an IPv4-only node
 * reaches it through its IPv4 addresses. */
static void test_wildcard_listen(void)
{
    const char *wildcards[2] = {"0.0.0.0:0", "[::]:0"};
    for (int i = 0; i < 2; i++) {
        pair p = {0};
        p.x = testnet_mesh("w", wildcards[i], "host", NULL);
        if (!p.x && i == 1) {
            fprintf(stderr, "  no IPv6 here: [::] skipped\n");
            return;
        }
        REQUIRE(p.x);
        token t;
        char err[256];
        REQUIRE(token_decode(mesh_token(p.x), &t, err, sizeof err) == 0);
        int loopback = 0;
        for (int k = 0; k < t.n_addrs; k++) {
            CHECK_EQ_INT(t.addrs[k].port, mesh_listen_port(p.x));
            loopback |= addr_is_loopback(&t.addrs[k]);
            if (i == 0) CHECK_EQ_INT(t.addrs[k].family, ADDR_FAMILY_IPV4);
        }
        if (t.n_addrs < MESH_MAX_ADDRS) CHECK(loopback);
        p.y = testnet_mesh("v", "127.0.0.1:0", "standby", mesh_token(p.x));
        REQUIRE(p.y);
        CHECK(testnet_run_until(pair_alive, &p, WAIT_MS));
        const mesh_peer *yx = find_peer(p.y, p.x);
        REQUIRE(yx);
        CHECK_EQ_INT(yx->n_addresses, t.n_addrs);
        CHECK(testnet_run_until(pair_settled, &p, WAIT_MS));
        mesh_free(p.y);
        mesh_free(p.x);
    }
}

/* Six nodes that all join the first one: gossip introduces them to each
 * other, the dial rule makes one connection per pair, and each settles to
 * exactly five connections. */
#define STAR 6
static mesh *star[STAR];

static int star_full(void *arg)
{
    for (int i = 0; i < STAR; i++) {
        if (mesh_connections(star[i]) != STAR - 1) return 0;
        for (int j = 0; j < STAR; j++)
            if (i != j && !is_alive(star[i], star[j])) return 0;
    }
    return 1;
}

static void test_star_join(void)
{
    star[0] = testnet_mesh("s0", "127.0.0.1:0", "host", NULL);
    REQUIRE(star[0]);
    for (int i = 1; i < STAR; i++) {
        char name[8];
        snprintf(name, sizeof name, "s%d", i);
        star[i] = testnet_mesh(name, "127.0.0.1:0", i % 2 ? "standby" : "host", mesh_token(star[0]));
        REQUIRE(star[i]);
    }
    uint64_t t0 = testnet_now_ms();
    CHECK(testnet_run_until(star_full, NULL, WAIT_MS));
    fprintf(stderr, "  full mesh of %d after %llu ms\n", STAR, (unsigned long long)(testnet_now_ms() - t0));
    testnet_run_for(500);
    CHECK(star_full(NULL));
    for (int i = 0; i < STAR; i++) {
        mesh_counters c;
        mesh_get_counters(star[i], &c);
        CHECK_EQ_INT(c.bad_frames, 0);
        mesh_free(star[i]);
    }
}

/* ---- failure detection -------------------------------------------------------*/

#define FD_NODES 4
static mesh *fd[FD_NODES];
static char fd_ids[FD_NODES][MESH_ID_HEX];

/* Short timings so that the test takes seconds; suspicion stays several
 * probe timeouts long, as in production, so that a slow (sanitized) run
 * does not make live nodes dead. */
static mesh *fd_start(int i, const char *listen, const char *join)
{
    char name[16];
    snprintf(name, sizeof name, "f%d", i);
    const char *joins[1] = {join};
    mesh_config cfg = {.home = testlib_tmp_path(name), .listen = listen ? listen : "127.0.0.1:0",
                       .join_tokens = joins, .n_join = join ? 1 : 0, .role = "host",
                       .probe_interval_ms = 200, .probe_timeout_ms = 150,
                       .suspect_timeout_ms = 1200, .dead_ttl_ms = 2000};
    char err[512] = "";
    mesh *m = mesh_new(base, &cfg, err, sizeof err);
    if (!m) fprintf(stderr, "  mesh_new(%s): %s\n", name, err);
    if (m) snprintf(fd_ids[i], sizeof fd_ids[i], "%s", mesh_node_id_hex(m));
    return m;
}

static const char *fd_state(int observer, int subject)
{
    const mesh_peer *p = find_peer_id(fd[observer], fd_ids[subject]);
    return p ? p->state : "gone";
}

/* Every live node but `subject` sees `subject` in state (NULL: alive everywhere, all pairs). */
typedef struct { int subject; const char *state; } fd_want;

static int fd_seen(void *arg)
{
    const fd_want *w = arg;
    for (int o = 0; o < FD_NODES; o++) {
        if (!fd[o] || o == w->subject) continue;
        if (strcmp(fd_state(o, w->subject), w->state) != 0) return 0;
    }
    return 1;
}

static int fd_all_alive(void *arg)
{
    for (int o = 0; o < FD_NODES; o++)
        for (int s2 = 0; s2 < FD_NODES; s2++)
            if (fd[o] && fd[s2] && o != s2 && strcmp(fd_state(o, s2), "alive") != 0) return 0;
    return 1;
}

/* Sends one raw gossip frame from `from` to `to` on a stream of its own. */
static void fd_inject(int from, int to, const uint8_t *p, size_t len, echo_client_state *st)
{
    char err[256];
    mesh_stream *s = mesh_stream_open(fd[from], mesh_node_id(fd[to]), MESH_STREAM_GOSSIP, &client_handlers,
                                      st, err, sizeof err);
    REQUIRE(s != NULL);
    CHECK(mesh_stream_send(s, p, len) == 0);
}

static int fd_dead_ever;   /* a live subject seen dead while watched */
static void fd_watch(int subject, int ms)
{
    uint64_t end = testnet_now_ms() + (uint64_t)ms;
    while (testnet_now_ms() < end) {
        testnet_run_for(20);
        for (int o = 0; o < FD_NODES; o++)
            if (fd[o] && o != subject && strcmp(fd_state(o, subject), "dead") == 0) fd_dead_ever = 1;
    }
}

static void test_failure_detection(void)
{
    fd[0] = fd_start(0, NULL, NULL);
    REQUIRE(fd[0]);
    char token0[TOKEN_MAX_TEXT];
    snprintf(token0, sizeof token0, "%s", mesh_token(fd[0]));
    for (int i = 1; i < FD_NODES; i++) {
        fd[i] = fd_start(i, NULL, token0);
        REQUIRE(fd[i]);
    }
    CHECK(testnet_run_until(fd_all_alive, NULL, WAIT_MS));
    testnet_run_for(1000);                                 /* a few probe rounds: nobody suspect */
    CHECK(fd_all_alive(NULL));

    /* 1. Node 3 hangs (answers nothing; QUIC still acks): suspect, then dead
     * everywhere; its connections are closed and streams to it refused. */
    mesh_test_mute(fd[3], 1);
    uint64_t t0 = testnet_now_ms();
    fd_want suspect3 = {3, "suspect"}, dead3 = {3, "dead"}, alive3 = {3, "alive"};
    int saw_suspect = 0;
    while (!fd_seen(&dead3) && testnet_now_ms() - t0 < WAIT_MS) {
        testnet_run_for(20);
        for (int o = 0; o < 3; o++) saw_suspect |= !strcmp(fd_state(o, 3), "suspect");
    }
    CHECK(fd_seen(&dead3));
    CHECK(saw_suspect);
    (void)suspect3;
    fprintf(stderr, "  hung node dead everywhere after %llu ms\n", (unsigned long long)(testnet_now_ms() - t0));
    CHECK(strcmp(fd_state(0, 1), "alive") == 0 && strcmp(fd_state(1, 2), "alive") == 0);
    char err[256];
    CHECK(mesh_stream_open(fd[0], mesh_node_id(fd[3]), ECHO_TYPE, &client_handlers, NULL, err, sizeof err) == NULL);

    /* It recovers: the redial with backoff finds it, and it refutes the
     * death it hears of with a newer record. */
    mesh_test_mute(fd[3], 0);
    t0 = testnet_now_ms();
    CHECK(testnet_run_until(fd_seen, &alive3, WAIT_MS));
    fprintf(stderr, "  recovered node alive again after %llu ms\n", (unsigned long long)(testnet_now_ms() - t0));
    CHECK(testnet_run_until(fd_all_alive, NULL, WAIT_MS));

    /* 2. A false suspicion reaches node 1: it refutes by publishing a newer
     * record (its incarnation). */
    uint64_t seq_before = fd[1]->rec.seq;
    swim_notice sn = {.kind = SWIM_NOTICE_SUSPECT, .incarnation = seq_before};
    memcpy(sn.node, mesh_node_id(fd[1]), MESH_ID_BYTES);
    memcpy(sn.from, mesh_node_id(fd[2]), MESH_ID_BYTES);
    uint8_t claim[SWIM_CLAIM_BYTES];
    swim_claim_encode(&sn, claim);
    echo_client_state g0 = {0};
    fd_inject(2, 1, claim, sizeof claim, &g0);
    testnet_run_for(300);
    CHECK(fd[1]->rec.seq > seq_before);
    CHECK(!g0.closed_with_error);

    /* 3. A false death report about node 1, sent to node 0: node 0 checks
     * with its own probe and keeps it; node 1 refutes. Nobody shows it dead. */
    sn.kind = SWIM_NOTICE_DEAD;
    sn.incarnation = fd[1]->rec.seq;
    swim_claim_encode(&sn, claim);
    echo_client_state g1 = {0};
    fd_dead_ever = 0;
    fd_inject(2, 0, claim, sizeof claim, &g1);
    fd_watch(1, 2500);
    CHECK(!fd_dead_ever);
    CHECK(fd_all_alive(NULL));

    /* 4. LEAVEs that node 1 did not sign: one signed by another key, one
     * with a flipped byte. Both reset the stream and count; node 1 stays. */
    identity forger;
    char dir[600];
    snprintf(dir, sizeof dir, "%s/fd-forger", testlib_tmpdir());
    REQUIRE(identity_load_or_create(dir, &forger, NULL, err, sizeof err) == 0);
    uint8_t leave[SWIM_LEAVE_BYTES];
    REQUIRE(swim_leave_encode(&forger, UINT64_MAX, leave, err, sizeof err) == (int)sizeof leave);
    memcpy(leave + 1, mesh_node_id(fd[1]), MESH_ID_BYTES);
    mesh_counters before, after;
    mesh_get_counters(fd[0], &before);
    echo_client_state g2 = {0};
    fd_inject(2, 0, leave, sizeof leave, &g2);
    CHECK(testnet_run_until(client_closed, &g2, WAIT_MS));
    CHECK(g2.closed_with_error);
    mesh_get_counters(fd[0], &after);
    CHECK_EQ_INT(after.bad_frames, before.bad_frames + 1);
    /* A malformed notice (truncated) is refused the same way. */
    echo_client_state g3 = {0};
    fd_inject(2, 0, claim, sizeof claim - 1, &g3);
    CHECK(testnet_run_until(client_closed, &g3, WAIT_MS));
    CHECK(g3.closed_with_error);
    testnet_run_for(300);
    CHECK(fd_all_alive(NULL));

    /* 5. pick_host_except: two hosts of one model, each can be excluded. */
    const char *models[] = {MODEL};
    mesh_set_models(fd[0], models, 1);
    mesh_set_models(fd[1], models, 1);
    trio both = {fd[3], fd[0], fd[1]};
    (void)both;
    uint8_t h1[MESH_ID_BYTES], h2[MESH_ID_BYTES];
    for (int tries = 0; tries < 100; tries++) {
        testnet_run_for(20);
        if (has_model(fd[3], fd[0], MODEL) && has_model(fd[3], fd[1], MODEL)) break;
    }
    REQUIRE(mesh_pick_host(fd[3], MODEL, h1) == 0);
    REQUIRE(mesh_pick_host_except(fd[3], MODEL, h1, h2) == 0);
    CHECK(memcmp(h1, h2, MESH_ID_BYTES) != 0);
    CHECK(!memcmp(h2, mesh_node_id(fd[0]), MESH_ID_BYTES) || !memcmp(h2, mesh_node_id(fd[1]), MESH_ID_BYTES));

    /* 6. Node 2 leaves cleanly: "left" everywhere at once (no waiting for
     * probes), not redialled, forgotten after the TTL. */
    CHECK(mesh_leave(fd[2]) == 0);
    CHECK(mesh_leave(fd[2]) == 0);                 /* idempotent */
    mesh_free(fd[2]);
    fd[2] = NULL;
    t0 = testnet_now_ms();
    fd_want left2 = {2, "left"}, gone2 = {2, "gone"};
    CHECK(testnet_run_until(fd_seen, &left2, WAIT_MS));
    uint64_t left_ms = testnet_now_ms() - t0;
    fprintf(stderr, "  leave seen everywhere after %llu ms\n", (unsigned long long)left_ms);
    CHECK(left_ms < 1000);
    CHECK(testnet_run_until(fd_seen, &gone2, WAIT_MS));
    fprintf(stderr, "  left node forgotten after %llu ms (TTL 2000)\n", (unsigned long long)(testnet_now_ms() - t0));
    mesh_peer peers[8];
    CHECK_EQ_INT(mesh_peers(fd[0], peers, 8), 2);
    CHECK_EQ_INT(mesh_connections(fd[0]), 2);

    /* 7. Node 3 goes without a LEAVE (connections closed): dead, then
     * forgotten; restarted on the same home, it rejoins through its token
     * (its new record beats the tombstone) and is alive everywhere. */
    mesh_free(fd[3]);
    fd[3] = NULL;
    t0 = testnet_now_ms();
    fd_want gone3 = {3, "gone"};
    CHECK(testnet_run_until(fd_seen, &dead3, WAIT_MS));
    fprintf(stderr, "  closed node dead after %llu ms\n", (unsigned long long)(testnet_now_ms() - t0));
    CHECK(testnet_run_until(fd_seen, &gone3, WAIT_MS));
    fd[3] = fd_start(3, NULL, token0);
    REQUIRE(fd[3]);
    CHECK(testnet_run_until(fd_seen, &alive3, WAIT_MS));
    CHECK(testnet_run_until(fd_all_alive, NULL, WAIT_MS));

    for (int i = 0; i < FD_NODES; i++) {
        if (fd[i]) mesh_free(fd[i]);
        fd[i] = NULL;
    }
}

/* ---- passive clients --------------------------------------------------------*/

typedef struct { mesh *a, *b, *c; echo_client_state st; } passive_t;

static int passive_routes(void *arg)
{
    passive_t *p = arg;
    return is_alive(p->c, p->a) && is_alive(p->c, p->b) && has_model(p->c, p->a, MODEL);
}

static int member_pair(void *arg)
{
    passive_t *p = arg;
    return is_alive(p->a, p->b) && is_alive(p->b, p->a);
}

static int echo_done(void *arg)
{
    passive_t *p = arg;
    return p->st.closes > 0;
}

static int got_echo(void *arg) { return ((passive_t *)arg)->st.frames == 1; }

static int a_has_no_client(void *arg) { return mesh_clients_connected(((passive_t *)arg)->a) == 0; }

static int c_lost_a(void *arg)
{
    passive_t *p = arg;
    return !alive_by_id(p->c, a_id);
}

static mesh *start_client(const char *name, const char *join)
{
    const char *joins[1] = {join};
    mesh_config cfg = {.home = testlib_tmp_path(name), .listen = "127.0.0.1:0", .join_tokens = joins, .n_join = 1,
                       .role = "client", .routes_interval_ms = 60000, .client_idle_ms = 3000,
                       .probe_interval_ms = 200, .suspect_timeout_ms = 1000};
    char err[512] = "";
    mesh *m = mesh_new(base, &cfg, err, sizeof err);
    if (!m) fprintf(stderr, "  mesh_new(%s): %s\n", name, err);
    return m;
}

/* A passive client: routes pulled from a standby member, never listed by the
 * members, connects on demand to the host (frames queued meanwhile), idle
 * connections closed, a host that goes silent under an open stream dropped,
 * and stream types clients may not open refused. */
static void test_passive_client(void)
{
    passive_t p = {0};
    memset(&server, 0, sizeof server);
    p.a = testnet_mesh("pa", "127.0.0.1:0", "host", NULL);
    REQUIRE(p.a);
    mesh_register_stream_type(p.a, ECHO_TYPE, echo_accept, NULL);
    mesh_open_to_clients(p.a, ECHO_TYPE);
    const char *models[] = {MODEL};
    mesh_set_models(p.a, models, 1);
    p.b = testnet_mesh("pb", "127.0.0.1:0", "standby", mesh_token(p.a));
    REQUIRE(p.b);
    CHECK(testnet_run_until(member_pair, &p, WAIT_MS));
    p.c = start_client("pc", mesh_token(p.b));
    REQUIRE(p.c);
    CHECK(mesh_is_passive(p.c) && !mesh_is_passive(p.a));
    CHECK(mesh_routes_age_ms(p.c) == -1);

    /* The routing table: both members, from B. */
    CHECK(testnet_run_until(passive_routes, &p, WAIT_MS));
    CHECK(mesh_routes_age_ms(p.c) >= 0);
    mesh_counters cb;
    mesh_get_counters(p.b, &cb);
    CHECK(cb.routes_served >= 1);
    /* A refresh pulls again, from either member (at random); the
     * connection used only for a pull is closed once it is done. */
    mesh_refresh_routes(p.c);
    testnet_run_for(1500);
    mesh_counters cc, ca_;
    mesh_get_counters(p.c, &cc);
    CHECK_EQ_INT(cc.routes_pulled, 2);
    mesh_get_counters(p.b, &cb);
    mesh_get_counters(p.a, &ca_);
    CHECK_EQ_INT(cb.routes_served + ca_.routes_served, 2);
    CHECK_EQ_INT(mesh_connections(p.c), 0);
    CHECK_EQ_INT(mesh_clients_connected(p.a) + mesh_clients_connected(p.b), 0);
    CHECK_EQ_INT(cc.routes_failed, 0);
    /* Members never list it, and do not count it as a member connection. */
    CHECK(find_peer(p.a, p.c) == NULL);
    CHECK(find_peer(p.b, p.c) == NULL);
    mesh_peer peers[8];
    CHECK_EQ_INT(mesh_peers(p.a, peers, 8), 1);
    CHECK_EQ_INT(mesh_connections(p.a), 1);
    CHECK_EQ_INT(mesh_connections(p.b), 1);
    uint8_t host[MESH_ID_BYTES];
    CHECK(mesh_pick_host(p.b, MODEL, host) == 0 && !memcmp(host, mesh_node_id(p.a), MESH_ID_BYTES));
    char err[256];
    CHECK(mesh_stream_open(p.a, mesh_node_id(p.c), ECHO_TYPE, &client_handlers, &p.st, err, sizeof err) == NULL);

    /* On demand: C has no connection to A; frames written before the
     * handshake are queued and arrive in order. */
    const mesh_peer *ca = find_peer(p.c, p.a);
    REQUIRE(ca);
    CHECK_EQ_STR(ca->link, "");
    mesh_stream *s = mesh_stream_open(p.c, mesh_node_id(p.a), ECHO_TYPE, &client_handlers, &p.st, err, sizeof err);
    REQUIRE(s);
    static uint8_t big[1u << 20];
    for (size_t i = 0; i < sizeof big; i++) big[i] = (uint8_t)(i * 13 + 1);
    CHECK(mesh_stream_send(s, "one", 3) == 0);
    CHECK(mesh_stream_send(s, "", 0) == 0);
    CHECK(mesh_stream_send(s, big, sizeof big) == 0);
    CHECK(mesh_stream_unacked(s) > sizeof big);
    mesh_stream_finish(s);
    CHECK(testnet_run_until(echo_done, &p, WAIT_MS));
    CHECK(!p.st.closed_with_error);
    CHECK_EQ_INT(p.st.frames, 3);
    CHECK(p.st.sizes[0] == 3 && p.st.sizes[1] == 0 && p.st.big_ok);
    CHECK_EQ_INT(mesh_clients_connected(p.a), 1);
    ca = find_peer(p.c, p.a);
    CHECK(ca && !strcmp(ca->link, "direct"));

    /* Idle: C closes it (client_idle_ms 3 s). */
    CHECK(testnet_run_until(a_has_no_client, &p, WAIT_MS));

    /* Types a client may not open are refused by the member. */
    mesh_counters ca0, ca1;
    mesh_get_counters(p.a, &ca0);
    memset(&p.st, 0, sizeof p.st);
    s = mesh_stream_open(p.c, mesh_node_id(p.a), MESH_STREAM_RELAY, &client_handlers, &p.st, err, sizeof err);
    REQUIRE(s);
    CHECK(mesh_stream_send(s, "x", 1) == 0);
    CHECK(testnet_run_until(echo_done, &p, WAIT_MS));
    CHECK(p.st.closed_with_error);
    mesh_get_counters(p.a, &ca1);
    CHECK_EQ_INT(ca1.bad_frames, ca0.bad_frames + 1);

    /* A host that goes silent while a stream to it is open is dropped by
     * the client's probes (suspicion 1 s here), not after QUIC's 30 s. */
    memset(&p.st, 0, sizeof p.st);
    s = mesh_stream_open(p.c, mesh_node_id(p.a), ECHO_TYPE, &client_handlers, &p.st, err, sizeof err);
    REQUIRE(s);
    CHECK(mesh_stream_send(s, "held", 4) == 0);
    CHECK(testnet_run_until(got_echo, &p, WAIT_MS));
    mesh_test_mute(p.a, 1);
    uint64_t t0 = testnet_now_ms();
    CHECK(testnet_run_until(echo_done, &p, WAIT_MS));
    uint64_t took = testnet_now_ms() - t0;
    fprintf(stderr, "  silent host dropped after %llu ms (%s)\n", (unsigned long long)took, p.st.error);
    CHECK(p.st.closed_with_error);
    CHECK(took < 5000);
    ca = find_peer(p.c, p.a);
    CHECK(ca && !strcmp(ca->state, "dead"));
    mesh_test_mute(p.a, 0);

    /* A goes away: the next pulls (B no longer sees it alive) drop it. */
    snprintf(a_id, sizeof a_id, "%s", mesh_node_id_hex(p.a));
    mesh_free(p.a);
    p.a = NULL;
    mesh_refresh_routes(p.c);
    CHECK(testnet_run_until(c_lost_a, &p, WAIT_MS));

    mesh_counters cfin;
    mesh_get_counters(p.c, &cfin);
    CHECK_EQ_INT(cfin.bad_frames, 0);
    mesh_free(p.c);
    mesh_free(p.b);
}

/* ---- admission ------------------------------------------------------------------*/

typedef struct {
    mesh *a, *b, *stranger, *client, *joiner, *rogue;
} adm_t;

static uint64_t refused(mesh *m)
{
    mesh_counters c;
    mesh_get_counters(m, &c);
    return c.admission_refused;
}

static int adm_member_in(void *arg)
{
    adm_t *t = arg;
    return is_alive(t->a, t->b) && is_alive(t->b, t->a);
}

static int adm_refused_two(void *arg)
{
    adm_t *t = arg;
    return refused(t->a) + refused(t->b) >= 2;
}

static int adm_joiner_refused(void *arg)
{
    adm_t *t = arg;
    return refused(t->joiner) >= 1;
}

/* A token of m's with another secret: the node id and addresses of a real
 * member, but not its mesh's secret. */
static void wrong_secret_token(const mesh *m, char out[TOKEN_MAX_TEXT])
{
    token t;
    char err[256];
    REQUIRE(token_decode(mesh_token(m), &t, err, sizeof err) == 0);
    t.secret[7] ^= 0x20;
    REQUIRE(token_encode(&t, out, TOKEN_MAX_TEXT) > 0);
}

/* Only holders of the secret get in: a node with a fresh key and a token
 * with the wrong secret, and a passive client with one, are refused within
 * the deadline and listed nowhere; the refusal is mutual (a dialler refuses
 * an acceptor that cannot prove the secret); a version 1 token is refused
 * with a message that asks for a new one. */
static void test_admission(void)
{
    adm_t t = {0};
    t.a = testnet_mesh("adm-a", "127.0.0.1:0", "host", NULL);
    REQUIRE(t.a);
    t.b = testnet_mesh("adm-b", "127.0.0.1:0", "standby", mesh_token(t.a));
    REQUIRE(t.b);
    CHECK(testnet_run_until(adm_member_in, &t, WAIT_MS));
    /* Same secret on both: same token but for the id and addresses. */
    token ta, tb;
    char err[512];
    REQUIRE(token_decode(mesh_token(t.a), &ta, err, sizeof err) == 0);
    REQUIRE(token_decode(mesh_token(t.b), &tb, err, sizeof err) == 0);
    CHECK(!memcmp(ta.secret, tb.secret, sizeof ta.secret));
    CHECK_EQ_INT(refused(t.a) + refused(t.b), 0);

    char bad[TOKEN_MAX_TEXT];
    wrong_secret_token(t.a, bad);
    uint64_t t0 = testnet_now_ms();
    t.stranger = testnet_mesh("adm-s", "127.0.0.1:0", "standby", bad);
    t.client = start_client("adm-c", bad);
    REQUIRE(t.stranger && t.client);
    /* The client dials when it pulls its routes (at once). */
    CHECK(testnet_run_until(adm_refused_two, &t, WAIT_MS));
    uint64_t took = testnet_now_ms() - t0;
    fprintf(stderr, "  two strangers refused within %llu ms\n", (unsigned long long)took);
    CHECK(took < 1500);
    testnet_run_for(1500);                     /* redials: refused again, never in */
    CHECK(find_peer(t.a, t.stranger) == NULL);
    CHECK(find_peer(t.b, t.stranger) == NULL);
    CHECK(find_peer(t.a, t.client) == NULL);
    mesh_peer peers[8];
    CHECK_EQ_INT(mesh_peers(t.a, peers, 8), 1);
    CHECK_EQ_INT(mesh_peers(t.b, peers, 8), 1);
    CHECK_EQ_INT(mesh_clients_connected(t.a), 0);
    CHECK_EQ_INT(mesh_connections(t.a), 1);
    CHECK(!is_alive(t.stranger, t.a));
    mesh_counters cc;
    mesh_get_counters(t.client, &cc);
    CHECK_EQ_INT(cc.routes_pulled, 0);
    CHECK(cc.routes_failed >= 1);

    /* Mutual: a rogue acceptor takes any proof; a joiner whose token names
     * it (with A's secret, which the rogue does not hold) refuses it. */
    t.rogue = testnet_mesh("adm-r", "127.0.0.1:0", "host", NULL);
    REQUIRE(t.rogue);
    mesh_test_admit_anyone(t.rogue, 1);
    token tr;
    REQUIRE(token_decode(mesh_token(t.rogue), &tr, err, sizeof err) == 0);
    memcpy(tr.secret, ta.secret, sizeof tr.secret);
    char lure[TOKEN_MAX_TEXT];
    REQUIRE(token_encode(&tr, lure, sizeof lure) > 0);
    t.joiner = testnet_mesh("adm-j", "127.0.0.1:0", "standby", lure);
    REQUIRE(t.joiner);
    CHECK(testnet_run_until(adm_joiner_refused, &t, WAIT_MS));
    testnet_run_for(300);
    CHECK(!is_alive(t.joiner, t.rogue));
    CHECK(!is_alive(t.rogue, t.joiner));
    CHECK_EQ_INT(mesh_connections(t.joiner), 0);

    /* Version 1 tokens: refused, with what to do. */
    uint8_t v1[1 + MESH_ID_BYTES + 1 + 7] = {1};
    memcpy(v1 + 1, ta.id, MESH_ID_BYTES);
    v1[33] = 1;
    addr_encode(&ta.addrs[0], v1 + 34);
    char v1_text[TOKEN_MAX_TEXT];
    REQUIRE(base64_url_encode(v1, sizeof v1, v1_text, sizeof v1_text) > 0);
    const char *joins[1] = {v1_text};
    mesh_config cfg = {.home = testlib_tmp_path("adm-v1"), .listen = "127.0.0.1:0", .join_tokens = joins,
                       .n_join = 1, .role = "standby"};
    CHECK(mesh_new(base, &cfg, err, sizeof err) == NULL);
    CHECK(strstr(err, "version 1") && strstr(err, "new token"));
    /* Two tokens of different meshes. */
    const char *two[2] = {mesh_token(t.a), mesh_token(t.rogue)};
    cfg.join_tokens = two;
    cfg.n_join = 2;
    CHECK(mesh_new(base, &cfg, err, sizeof err) == NULL);
    CHECK(strstr(err, "another mesh") != NULL);

    /* The secret is kept in the home, 0600, and a restart keeps the mesh. */
    char path[600];
    snprintf(path, sizeof path, "%s/mesh-secret", testlib_tmp_path("adm-b"));
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);

    mesh_free(t.joiner);
    mesh_free(t.rogue);
    mesh_free(t.client);
    mesh_free(t.stranger);
    mesh_free(t.b);
    mesh_free(t.a);
}

/* ---- limits: a peer that keeps sending malformed frames -----------------------*/

static int ban_seen(void *arg)
{
    adm_t *t = arg;
    mesh_counters c;
    mesh_get_counters(t->a, &c);
    return c.peers_banned >= 1 && !is_alive(t->a, t->b);
}

static int ban_refused(void *arg)
{
    adm_t *t = arg;
    mesh_counters c;
    mesh_get_counters(t->a, &c);
    return c.banned_refused >= 1;
}

/* A member that opens stream after stream of a type nobody knows is cut off
 * after MESH_BAD_FRAMES_MAX of them and refused when it dials again; until
 * then each one only costs it the stream. */
static void test_bad_frame_ban(void)
{
    adm_t t = {0};
    t.a = testnet_mesh("ban-a", "127.0.0.1:0", "host", NULL);
    REQUIRE(t.a);
    t.b = testnet_mesh("ban-b", "127.0.0.1:0", "standby", mesh_token(t.a));
    REQUIRE(t.b);
    CHECK(testnet_run_until(adm_member_in, &t, WAIT_MS));
    char err[256];
    for (int i = 0; i < MESH_BAD_FRAMES_MAX - 1; i++) {
        mesh_stream *s = mesh_stream_open(t.b, mesh_node_id(t.a), 99, NULL, NULL, err, sizeof err);
        REQUIRE(s);
        CHECK(mesh_stream_send(s, "x", 1) == 0);
    }
    testnet_run_for(300);
    mesh_counters c;
    mesh_get_counters(t.a, &c);
    CHECK_EQ_INT(c.bad_frames, MESH_BAD_FRAMES_MAX - 1);
    CHECK_EQ_INT(c.peers_banned, 0);
    CHECK(is_alive(t.a, t.b));
    mesh_stream *s = mesh_stream_open(t.b, mesh_node_id(t.a), 99, NULL, NULL, err, sizeof err);
    REQUIRE(s);
    CHECK(mesh_stream_send(s, "x", 1) == 0);
    CHECK(testnet_run_until(ban_seen, &t, WAIT_MS));
    /* B redials (A is its join node): refused while the ban lasts. */
    CHECK(testnet_run_until(ban_refused, &t, WAIT_MS));
    CHECK(!is_alive(t.a, t.b));
    CHECK_EQ_INT(mesh_connections(t.a), 0);
    mesh_free(t.b);
    mesh_free(t.a);
}

int main(void)
{
    /* LLMESH_TEST_LOG=debug shows the mesh's chatter while debugging. */
    const char *level = getenv("LLMESH_TEST_LOG");
    if (level && log_parse_level(level) >= 0) log_set_level((log_level)log_parse_level(level));
    base = testnet_loop();
    RUN(test_config_errors);
    RUN(test_three_nodes);
    RUN(test_simultaneous_join);
    RUN(test_wildcard_listen);
    RUN(test_star_join);
    RUN(test_failure_detection);
    RUN(test_passive_client);
    RUN(test_admission);
    RUN(test_bad_frame_ban);
    testnet_loop_free();
    return testlib_finish();
}
