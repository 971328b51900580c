/* test_quic.c: net/quic.h end to end over loopback.
 *
 * Two endpoints in one process share one event_base on 127.0.0.1; a last
 * test forks real server processes to see a killed peer (idle timeout) and
 * a restarted one (stateless reset). Every wait is bounded. Keys are fresh
 * Ed25519 pairs from GnuTLS. Not covered here: throughput (bench/). */
#define _GNU_SOURCE
#include "testkeys.h"
#include "testlib.h"

#include "lib/log.h"
#include "net/quic.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <gnutls/crypto.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct event_base *base;
static struct event *tick_ev;
static int seq; /* orders on_close / conn_closed events */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void tick_cb(evutil_socket_t fd, short what, void *arg) { (void)fd; (void)what; (void)arg; }

/* Runs the loop until cond holds or ms pass; evaluates to cond. */
#define WAIT_FOR(cond, ms) ({ \
    uint64_t dl_ = now_ms() + (ms); \
    while (!(cond) && now_ms() < dl_) { \
        struct timeval tv_ = {0, 20000}; \
        event_add(tick_ev, &tv_); \
        event_base_loop(base, EVLOOP_ONCE); \
    } \
    (cond); })

/* ---- a node: one endpoint plus what its callbacks saw ------------------- */

typedef struct node node;

typedef struct sctx {
    node *n;
    quic_stream *s;
    uint8_t *buf;
    size_t len, cap;
    uint64_t received;
    int fin, nclose, close_seq, bad;
    char err[200];
} sctx;

enum { MODE_ECHO, MODE_SINK_VERIFY, MODE_CLOSE_CONN_ON_DATA, MODE_RESET_ON_DATA };

struct node {
    quic_endpoint *ep;
    uint8_t priv[32], pub[32];
    int nready, nclosed, closed_seq, nopened;
    quic_conn *conn;
    char reason[200];
    int mode;
};

/* Stream contexts live until the test ends (callbacks may come late). */
static sctx *ctxs[1024];
static int nctxs;

static sctx *ctx_new(node *n)
{
    sctx *x = calloc(1, sizeof *x);
    x->n = n;
    if (nctxs < (int)(sizeof ctxs / sizeof ctxs[0])) ctxs[nctxs++] = x;
    return x;
}

static void ctxs_free(void)
{
    for (int i = 0; i < nctxs; i++) {
        free(ctxs[i]->buf);
        free(ctxs[i]);
    }
    nctxs = 0;
}

static uint8_t pattern(uint64_t i) { return (uint8_t)((i * 131) ^ (i >> 11)); }

static void keep(sctx *x, const uint8_t *d, size_t len)
{
    if (!len) return; /* a bare FIN comes with data == NULL */
    if (x->len + len > x->cap) {
        x->cap = (x->len + len) * 2;
        x->buf = realloc(x->buf, x->cap);
    }
    memcpy(x->buf + x->len, d, len);
    x->len += len;
}

static void s_on_data(void *user, quic_stream *s, const uint8_t *d, size_t len, int fin)
{
    sctx *x = user;
    node *n = x->n;
    if (x->fin) x->bad++; /* nothing may follow fin */
    switch (n->mode) {
    case MODE_ECHO:
        keep(x, d, len);
        if (len && quic_stream_write(s, d, len) != 0) x->bad++;
        if (fin) quic_stream_finish(s);
        break;
    case MODE_SINK_VERIFY:
        for (size_t i = 0; i < len; i++)
            if (d[i] != pattern(x->received + i)) { x->bad++; break; }
        x->received += len;
        if (fin) {
            char msg[64];
            snprintf(msg, sizeof msg, "OK %llu", (unsigned long long)x->received);
            quic_stream_write(s, msg, strlen(msg));
            quic_stream_finish(s);
        }
        break;
    case MODE_CLOSE_CONN_ON_DATA:
        keep(x, d, len);
        quic_conn_close(quic_stream_conn(s), "closing from on_data");
        /* s was given on_close already; the stream must stay safe to
         * mention until we return, and writes must fail politely. */
        if (quic_stream_write(s, "x", 1) == 0) x->bad++;
        break;
    case MODE_RESET_ON_DATA:
        keep(x, d, len);
        quic_stream_reset(s, 7);
        return; /* s is gone */
    }
    x->received += (n->mode == MODE_SINK_VERIFY) ? 0 : len;
    if (fin) x->fin = 1;
}

static void s_on_close(void *user, quic_stream *s, const char *error)
{
    sctx *x = user;
    x->nclose++;
    x->close_seq = ++seq;
    snprintf(x->err, sizeof x->err, "%s", error ? error : "");
}

static const quic_stream_callbacks stream_cbs = {s_on_data, s_on_close};

static void ep_conn_ready(void *user, quic_conn *c)
{
    node *n = user;
    n->nready++;
    n->conn = c;
}

static void ep_conn_closed(void *user, quic_conn *c, const char *reason)
{
    node *n = user;
    n->nclosed++;
    n->closed_seq = ++seq;
    snprintf(n->reason, sizeof n->reason, "%s", reason ? reason : "(null)");
    if (n->conn == c) n->conn = NULL;
}

static void ep_stream_opened(void *user, quic_stream *s)
{
    node *n = user;
    n->nopened++;
    sctx *x = ctx_new(n);
    x->s = s;
    quic_stream_set_callbacks(s, &stream_cbs, x);
}

static const quic_endpoint_callbacks ep_cbs = {ep_conn_ready, ep_conn_closed, ep_stream_opened};

static int node_init_on(node *n, const char *host, uint32_t hs_ms, uint32_t idle_ms)
{
    memset(n, 0, sizeof *n);
    testkeys_ed25519(n->priv, n->pub);
    quic_config cfg;
    memset(&cfg, 0, sizeof cfg);
    memcpy(cfg.private_key, n->priv, 32);
    memcpy(cfg.public_key, n->pub, 32);
    cfg.bind_host = host;
    cfg.handshake_timeout_ms = hs_ms;
    cfg.idle_timeout_ms = idle_ms;
    char err[256];
    n->ep = quic_endpoint_new(base, &cfg, &ep_cbs, n, err, sizeof err);
    if (!n->ep) fprintf(stderr, "  endpoint: %s\n", err);
    return n->ep ? 0 : -1;
}

static int node_init(node *n, uint32_t hs_ms, uint32_t idle_ms)
{
    return node_init_on(n, "127.0.0.1", hs_ms, idle_ms);
}

static struct sockaddr_in loopback(uint16_t port)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static quic_conn *dial(node *from, node *to, const uint8_t *pin)
{
    struct sockaddr_in a = loopback(quic_endpoint_port(to->ep));
    char err[256];
    quic_conn *c = quic_connect(from->ep, (struct sockaddr *)&a, sizeof a, pin ? pin : to->pub,
                                err, sizeof err);
    if (!c) fprintf(stderr, "  connect: %s\n", err);
    return c;
}

/* Server a, client b, connected; REQUIREs success. */
static void pair_up(node *a, node *b)
{
    REQUIRE(node_init(a, 0, 0) == 0);
    REQUIRE(node_init(b, 0, 0) == 0);
    a->mode = MODE_ECHO;
    REQUIRE(dial(b, a, NULL) != NULL);
    REQUIRE(WAIT_FOR(a->nready == 1 && b->nready == 1, 5000));
}

static void pair_down(node *a, node *b)
{
    quic_endpoint_free(b->ep);
    quic_endpoint_free(a->ep);
    a->ep = b->ep = NULL;
    ctxs_free();
}

/* ---- tests ---------------------------------------------------------------- */

static void test_handshake(void)
{
    node a, b;
    pair_up(&a, &b);
    CHECK(memcmp(quic_conn_peer_key(b.conn), a.pub, 32) == 0);
    CHECK(memcmp(quic_conn_peer_key(a.conn), b.pub, 32) == 0);
    CHECK(quic_conn_is_outgoing(b.conn));
    CHECK(!quic_conn_is_outgoing(a.conn));
    CHECK(quic_conn_is_ready(a.conn) && quic_conn_is_ready(b.conn));
    socklen_t len;
    const struct sockaddr *ra = quic_conn_remote_addr(a.conn, &len);
    CHECK(ra->sa_family == AF_INET);
    CHECK(ntohs(((const struct sockaddr_in *)ra)->sin_port) == quic_endpoint_port(b.ep));
    CHECK(quic_conn_rtt_us(b.conn) > 0);
    quic_conn_set_user(b.conn, &b);
    CHECK(quic_conn_user(b.conn) == &b);
    quic_stats st;
    quic_endpoint_stats(a.ep, &st);
    CHECK_EQ_INT(st.conns_accepted, 1);
    fprintf(stderr, "  rtt %llu us, GSO %d, GRO %d\n",
            (unsigned long long)quic_conn_rtt_us(b.conn), st.gso, st.gro);
    pair_down(&a, &b);
    CHECK_EQ_INT(a.nclosed, 1); /* endpoint_free reports every connection */
    CHECK_EQ_INT(b.nclosed, 1);
}

static void test_wrong_pin(void)
{
    node a, b;
    uint8_t other_priv[32], other_pub[32];
    testkeys_ed25519(other_priv, other_pub);
    REQUIRE(node_init(&a, 0, 0) == 0);
    REQUIRE(node_init(&b, 0, 0) == 0);
    REQUIRE(dial(&b, &a, other_pub) != NULL);
    CHECK(WAIT_FOR(b.nclosed == 1, 5000));
    fprintf(stderr, "  client reason: %s\n", b.reason);
    CHECK(strstr(b.reason, "key") != NULL);
    CHECK_EQ_INT(b.nready, 0);
    WAIT_FOR(0, 300); /* give the server every chance to (wrongly) become ready */
    CHECK_EQ_INT(a.nready, 0);
    CHECK_EQ_INT(a.nclosed, 0);
    pair_down(&a, &b);
}

static void test_unreachable_times_out(void)
{
    node b;
    REQUIRE(node_init(&b, 400, 0) == 0);
    /* A socket that swallows datagrams and never answers. */
    int hole = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = loopback(0);
    REQUIRE(bind(hole, (struct sockaddr *)&a, sizeof a) == 0);
    socklen_t alen = sizeof a;
    getsockname(hole, (struct sockaddr *)&a, &alen);
    uint8_t k[32] = {1};
    char err[128];
    uint64_t t0 = now_ms();
    quic_conn *c = quic_connect(b.ep, (struct sockaddr *)&a, sizeof a, k, err, sizeof err);
    REQUIRE(c != NULL);
    CHECK(WAIT_FOR(b.nclosed == 1, 3000));
    uint64_t took = now_ms() - t0;
    fprintf(stderr, "  closed after %llu ms: %s\n", (unsigned long long)took, b.reason);
    CHECK(took >= 350 && took < 1500);
    CHECK(strstr(b.reason, "timed out") != NULL);
    close(hole);
    quic_endpoint_free(b.ep);
}

/* Client-side handler: collect bytes. */
static void collect_on_data(void *user, quic_stream *s, const uint8_t *d, size_t len, int fin)
{
    sctx *x = user;
    if (x->fin) x->bad++;
    keep(x, d, len);
    if (fin) x->fin = 1;
}
static const quic_stream_callbacks collect_cbs = {collect_on_data, s_on_close};

static void test_echo(void)
{
    node a, b;
    pair_up(&a, &b);
    sctx *x = ctx_new(&b);
    quic_stream *s = quic_stream_open(b.conn, &collect_cbs, x);
    REQUIRE(s != NULL);
    CHECK(quic_stream_write(s, "hello ", 6) == 0);
    CHECK(quic_stream_write(s, "world", 5) == 0);
    CHECK(quic_stream_finish(s) == 0);
    CHECK(WAIT_FOR(x->nclose == 1, 5000));
    CHECK(x->len == 11 && memcmp(x->buf, "hello world", 11) == 0);
    CHECK(x->fin);
    CHECK_EQ_INT(x->bad, 0);
    CHECK_EQ_STR(x->err, "");
    CHECK_EQ_INT(a.nopened, 1);
    REQUIRE(nctxs >= 2);
    sctx *srv = ctxs[1];
    CHECK(WAIT_FOR(srv->nclose == 1, 2000));
    CHECK_EQ_STR(srv->err, "");
    CHECK(srv->fin);
    pair_down(&a, &b);
}

/* quic_stream_write_now from another thread while the loop runs (as a
 * pipeline's lane sends): 300 records of 1004 bytes, each written under the
 * endpoint's lock taken with trylock (retried when the loop holds it), come
 * back from the echo server complete and in order; then the loop's own
 * writes and FIN still work, and a finished stream refuses write_now. */
#define NOW_RECORDS 300
#define NOW_PAYLOAD 1000

typedef struct {
    quic_endpoint *ep;
    quic_stream *s;
    int sent, busy, refused, failed;
    int done; /* __atomic */
} now_writer;

static void *now_writer_main(void *arg)
{
    now_writer *w = arg;
    uint8_t head[4], payload[NOW_PAYLOAD];
    for (int i = 0; i < NOW_RECORDS; i++) {
        head[0] = (uint8_t)(i >> 24), head[1] = (uint8_t)(i >> 16), head[2] = (uint8_t)(i >> 8), head[3] = (uint8_t)i;
        for (int k = 0; k < NOW_PAYLOAD; k++) payload[k] = pattern((uint64_t)i * NOW_PAYLOAD + (uint64_t)k);
        int rc = 1;
        for (int tries = 0; tries < 200000; tries++) { /* bounded: ~10 s at most */
            if (quic_endpoint_trylock(w->ep) == 0) {
                rc = quic_stream_write_now(w->s, head, sizeof head, payload, sizeof payload);
                quic_endpoint_unlock(w->ep);
                break;
            }
            w->busy++;
            usleep(50);
        }
        if (rc == 0) w->sent++;
        else if (rc == 1) w->refused++;
        else w->failed++;
        if (i % 16 == 0) usleep(200); /* let the loop take the lock now and then */
    }
    __atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void test_write_now_from_thread(void)
{
    node a, b;
    pair_up(&a, &b);
    sctx *x = ctx_new(&b);
    quic_stream *s = quic_stream_open(b.conn, &collect_cbs, x);
    REQUIRE(s != NULL);
    CHECK(quic_stream_write(s, "go", 2) == 0); /* the loop's write first, then the thread's */
    now_writer w = {.ep = b.ep, .s = s};
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, now_writer_main, &w) == 0);
    size_t want = 2 + (size_t)NOW_RECORDS * (4 + NOW_PAYLOAD);
    CHECK(WAIT_FOR(__atomic_load_n(&w.done, __ATOMIC_ACQUIRE) && x->len >= want, 20000));
    pthread_join(t, NULL);
    CHECK_EQ_INT(w.sent, NOW_RECORDS);
    CHECK_EQ_INT(w.refused + w.failed, 0);
    quic_stats st;
    quic_endpoint_stats(b.ep, &st);
    CHECK(st.tx_now_writes == (uint64_t)NOW_RECORDS);
    REQUIRE(x->len == want);
    CHECK(memcmp(x->buf, "go", 2) == 0);
    int bad = 0;
    for (int i = 0; i < NOW_RECORDS && !bad; i++) {
        const uint8_t *r = x->buf + 2 + (size_t)i * (4 + NOW_PAYLOAD);
        if ((int)((uint32_t)r[0] << 24 | (uint32_t)r[1] << 16 | (uint32_t)r[2] << 8 | r[3]) != i) bad = 1;
        for (int k = 0; k < NOW_PAYLOAD && !bad; k++)
            if (r[4 + k] != pattern((uint64_t)i * NOW_PAYLOAD + (uint64_t)k)) bad = 1;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK(quic_stream_write(s, "end", 3) == 0);
    CHECK(quic_stream_finish(s) == 0);
    REQUIRE(quic_endpoint_trylock(b.ep) == 0); /* no handler runs: this thread may take it */
    CHECK(quic_stream_write_now(s, "x", 1, NULL, 0) == 1); /* finished: not now, nothing queued */
    quic_endpoint_unlock(b.ep);
    CHECK(WAIT_FOR(x->nclose == 1, 5000));
    CHECK(x->fin && x->len == want + 3 && memcmp(x->buf + want, "end", 3) == 0);
    CHECK_EQ_INT(x->bad, 0);
    CHECK_EQ_STR(x->err, "");
    pair_down(&a, &b);
}

static void test_bulk_20mb(void)
{
    node a, b;
    pair_up(&a, &b);
    a.mode = MODE_SINK_VERIFY;
    const size_t total = 20u << 20;
    uint8_t *data = malloc(total);
    for (size_t i = 0; i < total; i++) data[i] = pattern(i);
    sctx *x = ctx_new(&b);
    quic_stream *s = quic_stream_open(b.conn, &collect_cbs, x);
    REQUIRE(s != NULL);
    uint64_t t0 = now_ms();
    /* Uneven pieces exercise chunk boundaries in the send buffer. */
    for (size_t off = 0; off < total;) {
        size_t n = 1 + (off * 7919) % 300000;
        if (n > total - off) n = total - off;
        REQUIRE(quic_stream_write(s, data + off, n) == 0);
        off += n;
    }
    CHECK(quic_stream_unacked(s) == total);
    CHECK(quic_stream_finish(s) == 0);
    CHECK(WAIT_FOR(x->nclose == 1, 60000));
    uint64_t took = now_ms() - t0;
    fprintf(stderr, "  20 MB in %llu ms (%.0f MB/s)\n", (unsigned long long)took,
            took ? 20.0 * 1000 / took : 0.0);
    char expect[64];
    snprintf(expect, sizeof expect, "OK %zu", total);
    CHECK(x->len == strlen(expect) && memcmp(x->buf, expect, x->len) == 0);
    CHECK_EQ_STR(x->err, "");
    REQUIRE(nctxs >= 2);
    CHECK_EQ_INT(ctxs[1]->bad, 0);
    CHECK(ctxs[1]->received == total);
    free(data);
    pair_down(&a, &b);
}

static void test_200_streams(void)
{
    node a, b;
    pair_up(&a, &b);
    enum { N = 200 };
    sctx *xs[N];
    for (int i = 0; i < N; i++) {
        xs[i] = ctx_new(&b);
        quic_stream *s = quic_stream_open(b.conn, &collect_cbs, xs[i]);
        REQUIRE(s != NULL);
        char msg[2048];
        int len = snprintf(msg, sizeof msg, "stream %d:", i);
        while (len < 1000 + i) { msg[len] = (char)('a' + (i + len) % 26); len++; }
        CHECK(quic_stream_write(s, msg, (size_t)len) == 0);
        CHECK(quic_stream_finish(s) == 0);
    }
    int done = 0;
    CHECK(WAIT_FOR(({ done = 0; for (int i = 0; i < N; i++) done += xs[i]->nclose; done == N; }), 20000));
    int ok = 0;
    for (int i = 0; i < N; i++) {
        char head[32];
        int hl = snprintf(head, sizeof head, "stream %d:", i);
        if (xs[i]->len == (size_t)(1000 + i) && memcmp(xs[i]->buf, head, (size_t)hl) == 0 &&
            xs[i]->err[0] == 0 && xs[i]->nclose == 1)
            ok++;
    }
    CHECK_EQ_INT(ok, N);
    CHECK_EQ_INT(a.nopened, N);
    pair_down(&a, &b);
}

static void test_fin_semantics(void)
{
    node a, b;
    pair_up(&a, &b);
    sctx *x = ctx_new(&b);
    quic_stream *s = quic_stream_open(b.conn, &collect_cbs, x);
    REQUIRE(s != NULL);
    CHECK(quic_stream_write(s, "ping", 4) == 0);
    /* Not finished yet: the echo comes back, the stream stays open. */
    CHECK(WAIT_FOR(x->len == 4, 5000));
    WAIT_FOR(0, 100);
    CHECK(!x->fin);
    CHECK_EQ_INT(x->nclose, 0);
    REQUIRE(nctxs >= 2);
    sctx *srv = ctxs[1];
    CHECK(!srv->fin);
    CHECK(quic_stream_finish(s) == 0);
    CHECK(WAIT_FOR(x->nclose == 1 && srv->nclose == 1, 5000));
    CHECK(x->fin && srv->fin);
    CHECK_EQ_STR(x->err, "");
    CHECK_EQ_STR(srv->err, "");
    WAIT_FOR(0, 100);
    CHECK_EQ_INT(x->nclose, 1); /* exactly once */
    CHECK_EQ_INT(srv->nclose, 1);
    CHECK_EQ_INT(x->bad + srv->bad, 0);
    pair_down(&a, &b);
}

static void test_reset(void)
{
    node a, b;
    pair_up(&a, &b);
    /* Server resets on first data: the client hears about it, the server
     * gets no further callbacks. */
    a.mode = MODE_RESET_ON_DATA;
    sctx *x = ctx_new(&b);
    quic_stream *s = quic_stream_open(b.conn, &collect_cbs, x);
    REQUIRE(s != NULL);
    CHECK(quic_stream_write(s, "doomed", 6) == 0);
    CHECK(WAIT_FOR(x->nclose == 1, 5000));
    fprintf(stderr, "  client saw: %s\n", x->err);
    CHECK(strstr(x->err, "reset") != NULL && strstr(x->err, "7") != NULL);
    REQUIRE(nctxs >= 2);
    CHECK_EQ_INT(ctxs[1]->nclose, 0);

    /* Client resets its own stream: the server's on_close says so. */
    a.mode = MODE_ECHO;
    sctx *y = ctx_new(&b);
    quic_stream *s2 = quic_stream_open(b.conn, &collect_cbs, y);
    REQUIRE(s2 != NULL);
    CHECK(quic_stream_write(s2, "abc", 3) == 0);
    CHECK(WAIT_FOR(y->len == 3, 5000));
    int before = nctxs;
    quic_stream_reset(s2, 9);
    sctx *srv = ctxs[before - 1];
    CHECK(WAIT_FOR(srv->nclose == 1, 5000));
    CHECK(strstr(srv->err, "9") != NULL);
    WAIT_FOR(0, 100);
    CHECK_EQ_INT(y->nclose, 0); /* the resetting side hears nothing more */
    /* The connection survives resets. */
    CHECK(quic_conn_is_ready(b.conn));
    pair_down(&a, &b);
}

static void test_peer_closes_connection(void)
{
    node a, b;
    pair_up(&a, &b);
    sctx *xs[3];
    for (int i = 0; i < 3; i++) {
        xs[i] = ctx_new(&b);
        quic_stream *s = quic_stream_open(b.conn, &collect_cbs, xs[i]);
        REQUIRE(s != NULL);
        quic_stream_write(s, "hi", 2);
    }
    CHECK(WAIT_FOR(xs[0]->len == 2 && xs[1]->len == 2 && xs[2]->len == 2, 5000));
    quic_conn_close(a.conn, "bye now");
    CHECK_EQ_INT(a.nclosed, 1); /* local close reports at once */
    CHECK(WAIT_FOR(b.nclosed == 1, 5000));
    fprintf(stderr, "  client reason: %s\n", b.reason);
    CHECK(strstr(b.reason, "bye now") != NULL);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(xs[i]->nclose, 1);
        CHECK(xs[i]->err[0] != 0);
        CHECK(xs[i]->close_seq < b.closed_seq); /* streams first */
    }
    pair_down(&a, &b);
    CHECK_EQ_INT(b.nclosed, 1); /* not reported twice at endpoint_free */
}

static void test_garbage_dropped(void)
{
    node a, b;
    REQUIRE(node_init(&a, 0, 0) == 0);
    a.mode = MODE_ECHO;
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in to = loopback(quic_endpoint_port(a.ep));
    uint8_t buf[1500];
    srand(12345);
    int sent = 0;
    for (int i = 0; i < 2000; i++) {
        size_t len = 1 + (size_t)rand() % sizeof buf;
        for (size_t j = 0; j < len; j++) buf[j] = (uint8_t)rand();
        if (i % 4 == 1) { buf[0] = 0xc0; memcpy(buf + 1, "\0\0\0\1", 4); } /* v1 long header */
        if (i % 4 == 2) { buf[0] = 0xc0; memcpy(buf + 1, "\0\0\0\1", 4); buf[5] = 8; if (len < 1200) len = 1200; }
        if (i % 4 == 3) buf[0] = 0x40; /* short header */
        if (sendto(fd, buf, len, 0, (struct sockaddr *)&to, sizeof to) > 0) sent++;
        if (i % 100 == 99) WAIT_FOR(0, 1);
    }
    sendto(fd, buf, 0, 0, (struct sockaddr *)&to, sizeof to);
    WAIT_FOR(0, 200);
    quic_stats st;
    quic_endpoint_stats(a.ep, &st);
    fprintf(stderr, "  %d sent, %llu received, %llu dropped, %llu resets, %llu VN, %llu accepted\n",
            sent, (unsigned long long)st.rx_datagrams, (unsigned long long)st.rx_dropped,
            (unsigned long long)st.stateless_resets_sent,
            (unsigned long long)st.version_negotiations_sent,
            (unsigned long long)st.conns_accepted);
    CHECK(st.rx_dropped > 0);
    CHECK_EQ_INT(a.nready, 0);
    CHECK_EQ_INT(st.conns_open, 0); /* "Initials" that decrypt to nothing are not kept */
    CHECK_EQ_INT(st.conns_half_open, 0);
    /* Still serves a real client afterwards. */
    REQUIRE(node_init(&b, 0, 0) == 0);
    REQUIRE(dial(&b, &a, NULL) != NULL);
    CHECK(WAIT_FOR(a.nready == 1 && b.nready == 1, 5000));
    close(fd);
    pair_down(&a, &b);
}

static void test_close_from_stream_callback(void)
{
    node a, b;
    pair_up(&a, &b);
    a.mode = MODE_CLOSE_CONN_ON_DATA;
    sctx *x[4];
    for (int i = 0; i < 4; i++) {
        x[i] = ctx_new(&b);
        quic_stream *s = quic_stream_open(b.conn, &collect_cbs, x[i]);
        REQUIRE(s != NULL);
        /* Enough data that more frames sit behind the one that closes. */
        static uint8_t big[200000];
        quic_stream_write(s, big, sizeof big);
    }
    CHECK(WAIT_FOR(a.nclosed == 1 && b.nclosed == 1, 5000));
    CHECK(strstr(b.reason, "closing from on_data") != NULL);
    /* Every server stream got exactly one on_close, none after. */
    int srv_streams = 0;
    for (int i = 0; i < nctxs; i++) {
        if (ctxs[i]->n != &a) continue;
        srv_streams++;
        CHECK_EQ_INT(ctxs[i]->nclose, 1);
        CHECK(ctxs[i]->close_seq < a.closed_seq);
        CHECK_EQ_INT(ctxs[i]->bad, 0);
    }
    CHECK(srv_streams >= 1);
    for (int i = 0; i < 4; i++) CHECK_EQ_INT(x[i]->nclose, 1);
    /* The client's endpoint closes from inside a stream callback too. */
    b.mode = MODE_ECHO;
    a.mode = MODE_ECHO;
    a.nready = b.nready = 0;
    REQUIRE(dial(&b, &a, NULL) != NULL);
    REQUIRE(WAIT_FOR(a.nready == 1 && b.nready == 1, 5000));
    b.mode = MODE_CLOSE_CONN_ON_DATA;
    sctx *y = ctx_new(&a);
    quic_stream *s = quic_stream_open(a.conn, &stream_cbs, y); /* server opens, client closes */
    REQUIRE(s != NULL);
    quic_stream_write(s, "x", 1);
    CHECK(WAIT_FOR(a.nclosed == 2 && b.nclosed == 2, 5000));
    CHECK_EQ_INT(y->nclose, 1);
    pair_down(&a, &b);
}

/* Closing a connection while writes are queued, from outside any callback,
 * then tearing everything down: no leaks, no late callbacks. */
static void test_close_with_queued_data(void)
{
    node a, b;
    pair_up(&a, &b);
    sctx *x = ctx_new(&b);
    quic_stream *s = quic_stream_open(b.conn, &collect_cbs, x);
    REQUIRE(s != NULL);
    uint8_t *big = calloc(1, 4u << 20);
    quic_stream_write(s, big, 4u << 20);
    free(big);
    WAIT_FOR(0, 5);
    quic_conn_close(b.conn, "changed my mind");
    CHECK_EQ_INT(x->nclose, 1);
    CHECK_EQ_INT(b.nclosed, 1);
    CHECK(WAIT_FOR(a.nclosed == 1, 5000));
    CHECK(strstr(a.reason, "changed my mind") != NULL);
    quic_endpoint_free(b.ep);
    quic_endpoint_free(a.ep);
    CHECK_EQ_INT(x->nclose, 1);
    CHECK_EQ_INT(b.nclosed, 1);
    ctxs_free();
}

static void test_bad_config(void)
{
    quic_config cfg;
    memset(&cfg, 0, sizeof cfg);
    uint8_t other[32];
    testkeys_ed25519(cfg.private_key, cfg.public_key);
    testkeys_ed25519(other, other);
    memcpy(cfg.public_key, other, 32); /* does not match */
    cfg.bind_host = "127.0.0.1";
    char err[256] = "";
    node n;
    CHECK(quic_endpoint_new(base, &cfg, &ep_cbs, &n, err, sizeof err) == NULL);
    CHECK(strstr(err, "public key") != NULL);
    testkeys_ed25519(cfg.private_key, cfg.public_key);
    cfg.bind_host = "not an address";
    CHECK(quic_endpoint_new(base, &cfg, &ep_cbs, &n, err, sizeof err) == NULL);
    CHECK(err[0] != 0);
}


/* Keep-alives hold an idle connection open well past the idle timeout. */
static void test_keepalive(void)
{
    node a, b;
    REQUIRE(node_init(&a, 0, 600) == 0);
    REQUIRE(node_init(&b, 0, 600) == 0);
    a.mode = MODE_ECHO;
    REQUIRE(dial(&b, &a, NULL) != NULL);
    REQUIRE(WAIT_FOR(a.nready == 1 && b.nready == 1, 5000));
    WAIT_FOR(a.nclosed || b.nclosed, 2000);
    CHECK_EQ_INT(a.nclosed + b.nclosed, 0);
    CHECK(quic_conn_is_ready(b.conn));
    sctx *x = ctx_new(&b);
    quic_stream *s = quic_stream_open(b.conn, &collect_cbs, x);
    REQUIRE(s != NULL);
    quic_stream_write(s, "still here", 10);
    quic_stream_finish(s);
    CHECK(WAIT_FOR(x->nclose == 1, 5000));
    CHECK(x->len == 10);
    pair_down(&a, &b);
}

/* IPv6 on ::1, and a dual-stack "::" endpoint talking to an IPv4 one
 * (addresses reported without the v4-mapped prefix). */
static void test_ipv6_and_dual_stack(void)
{
    node a, b;
    if (node_init_on(&a, "::1", 0, 0) != 0) {
        fprintf(stderr, "  no IPv6 loopback here; skipped\n");
        return;
    }
    REQUIRE(node_init_on(&b, "::1", 0, 0) == 0);
    a.mode = MODE_ECHO;
    struct sockaddr_in6 to6;
    memset(&to6, 0, sizeof to6);
    to6.sin6_family = AF_INET6;
    to6.sin6_port = htons(quic_endpoint_port(a.ep));
    to6.sin6_addr = in6addr_loopback;
    char err[256];
    REQUIRE(quic_connect(b.ep, (struct sockaddr *)&to6, sizeof to6, a.pub, err, sizeof err));
    REQUIRE(WAIT_FOR(a.nready == 1 && b.nready == 1, 5000));
    socklen_t len;
    CHECK(quic_conn_remote_addr(a.conn, &len)->sa_family == AF_INET6);
    sctx *x = ctx_new(&b);
    quic_stream *s = quic_stream_open(b.conn, &collect_cbs, x);
    REQUIRE(s != NULL);
    quic_stream_write(s, "six", 3);
    quic_stream_finish(s);
    CHECK(WAIT_FOR(x->nclose == 1 && x->len == 3, 5000));
    pair_down(&a, &b);

    /* "::" serves IPv4 clients too, and dials IPv4 addresses. */
    REQUIRE(node_init_on(&a, "::", 0, 0) == 0);
    REQUIRE(node_init(&b, 0, 0) == 0);
    a.mode = b.mode = MODE_ECHO;
    REQUIRE(dial(&b, &a, NULL) != NULL); /* 127.0.0.1 to "::" */
    REQUIRE(WAIT_FOR(a.nready == 1 && b.nready == 1, 5000));
    const struct sockaddr *ra = quic_conn_remote_addr(a.conn, &len);
    CHECK(ra->sa_family == AF_INET && len == sizeof(struct sockaddr_in));
    REQUIRE(dial(&a, &b, NULL) != NULL); /* and back, IPv4 address on the IPv6 socket */
    CHECK(WAIT_FOR(a.nready == 2 && b.nready == 2, 5000));
    /* An IPv4 socket cannot reach an IPv6 address: immediate failure. */
    CHECK(quic_connect(b.ep, (struct sockaddr *)&to6, sizeof to6, a.pub, err, sizeof err) == NULL);
    CHECK(err[0] != 0);
    pair_down(&a, &b);
}


/* ---- virtual paths: a connection relayed in-process ------------------------ */

/* The "relay": packets a sender hands over are queued and delivered to the
 * other endpoint from a deferred event, as a relay node would (never from
 * inside the sender: that runs in the middle of the sender's write loop).
 * drop_every > 0 loses every Nth packet. */
typedef struct vpkt {
    struct vpkt *next;
    quic_endpoint *to;
    uint32_t path;
    size_t len;
    uint8_t data[];
} vpkt;

typedef struct {
    quic_endpoint *a, *b;
    vpkt *head, **tail;
    struct event *ev;
    unsigned count, drop_every, delivered, dropped;
} vrelay;

static void vrelay_deliver(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    vrelay *r = arg;
    vpkt *p = r->head;
    r->head = NULL;
    r->tail = &r->head;
    while (p) {
        vpkt *next = p->next;
        r->delivered++;
        quic_endpoint_input_virtual(p->to, p->path, p->data, p->len);
        free(p);
        p = next;
    }
}

static void vrelay_queue(vrelay *r, quic_endpoint *to, uint32_t path, const uint8_t *pkt, size_t len)
{
    if (r->drop_every && ++r->count % r->drop_every == 0) {
        r->dropped++;
        return;
    }
    vpkt *p = malloc(sizeof *p + len);
    p->next = NULL;
    p->to = to;
    p->path = path;
    p->len = len;
    memcpy(p->data, pkt, len);
    *r->tail = p;
    r->tail = &p->next;
    event_active(r->ev, 0, 0);
}

static vrelay *vrelay_cur;
static void vsend_from_a(void *ctx, uint32_t path, const uint8_t *pkt, size_t len)
{
    vrelay_queue(ctx, vrelay_cur->b, path, pkt, len);
}
static void vsend_from_b(void *ctx, uint32_t path, const uint8_t *pkt, size_t len)
{
    vrelay_queue(ctx, vrelay_cur->a, path, pkt, len);
}

/* Called after the endpoints are freed: what is still queued is dropped,
 * never delivered (that would be a use after free). */
static void vrelay_free(vrelay *r)
{
    for (vpkt *p = r->head, *next; p; p = next) {
        next = p->next;
        free(p);
    }
    r->head = NULL;
    r->tail = &r->head;
    event_free(r->ev);
}

static void run_virtual(unsigned drop_every, size_t bulk)
{
    node a, b;
    vrelay r = {0};
    r.tail = &r.head;
    r.drop_every = drop_every;
    r.ev = event_new(base, -1, 0, vrelay_deliver, &r);
    vrelay_cur = &r;
    REQUIRE(node_init(&a, 0, 0) == 0);
    REQUIRE(node_init(&b, 0, 0) == 0);
    r.a = a.ep;
    r.b = b.ep;
    a.mode = MODE_SINK_VERIFY;
    quic_endpoint_set_virtual_sender(a.ep, vsend_from_a, &r);
    quic_endpoint_set_virtual_sender(b.ep, vsend_from_b, &r);
    char err[200];
    CHECK(quic_connect_virtual(b.ep, 0, a.pub, err, sizeof err) == NULL);
    quic_conn *c = quic_connect_virtual(b.ep, 7, a.pub, err, sizeof err);
    REQUIRE(c != NULL);
    REQUIRE(WAIT_FOR(a.nready == 1 && b.nready == 1, 5000));
    CHECK_EQ_INT(quic_conn_virtual_path(b.conn), 7);
    CHECK_EQ_INT(quic_conn_virtual_path(a.conn), 7);
    CHECK(memcmp(quic_conn_peer_key(a.conn), b.pub, 32) == 0);
    socklen_t len = 99;
    CHECK(quic_conn_remote_addr(a.conn, &len) == NULL && len == 0);

    /* A stream through the relay, content checked by the sink. */
    sctx *x = ctx_new(&b);
    quic_stream *s = quic_stream_open(b.conn, &collect_cbs, x);
    REQUIRE(s != NULL);
    /* Another thread may not send on a relayed path (its packets go
     * through an application callback): refused, nothing queued. */
    REQUIRE(quic_endpoint_trylock(b.ep) == 0);
    CHECK(quic_stream_write_now(s, "x", 1, NULL, 0) == 1);
    quic_endpoint_unlock(b.ep);
    uint8_t *buf = malloc(bulk);
    for (size_t i = 0; i < bulk; i++) buf[i] = pattern(i);
    uint64_t t0 = now_ms();
    CHECK(quic_stream_write(s, buf, bulk) == 0);
    CHECK(quic_stream_finish(s) == 0);
    free(buf);
    CHECK(WAIT_FOR(x->nclose == 1, 20000));
    char want[64];
    snprintf(want, sizeof want, "OK %zu", bulk);
    CHECK(x->len == strlen(want) && memcmp(x->buf, want, x->len) == 0);
    CHECK(quic_conn_rtt_us(b.conn) > 0);

    /* Nothing went through the sockets; the paths stayed apart. */
    quic_stats sa, sb;
    quic_endpoint_stats(a.ep, &sa);
    quic_endpoint_stats(b.ep, &sb);
    CHECK_EQ_INT(sa.rx_datagrams, 0);
    CHECK_EQ_INT(sb.rx_datagrams, 0);
    CHECK(sa.vpath_rx > 0 && sb.vpath_tx > 0);
    fprintf(stderr, "  %zu bytes in %llu ms, rtt %llu us, %u packets relayed, %u dropped\n", bulk,
            (unsigned long long)(now_ms() - t0), (unsigned long long)quic_conn_rtt_us(b.conn),
            r.delivered, r.dropped);

    /* A packet on a path nobody uses that names no connection is dropped
     * without an answer (the socket and paths are kept apart in
     * ep_handle_datagram: a connection only takes packets from its path). */
    uint64_t before = sa.rx_dropped;
    uint8_t junk[64] = {0x40};
    quic_endpoint_input_virtual(a.ep, 9, junk, sizeof junk);
    quic_endpoint_stats(a.ep, &sa);
    CHECK(sa.rx_dropped == before + 1);

    /* A lost CONNECTION_CLOSE is not retransmitted (the peer would only
     * notice at its idle timeout), so the close itself goes over a clean path. */
    r.drop_every = 0;
    quic_conn_close(b.conn, "bye");
    CHECK(WAIT_FOR(a.nclosed == 1, 3000));
    CHECK(strstr(a.reason, "bye") != NULL);
    pair_down(&a, &b);
    vrelay_free(&r);
}

static void test_virtual_path(void) { run_virtual(0, 1u << 20); }
/* Every 7th packet lost on the way: QUIC's recovery carries on. */
static void test_virtual_path_lossy(void) { run_virtual(7, 256u << 10); }

static void test_virtual_wrong_pin(void)
{
    node a, b;
    vrelay r = {0};
    r.tail = &r.head;
    r.ev = event_new(base, -1, 0, vrelay_deliver, &r);
    vrelay_cur = &r;
    REQUIRE(node_init(&a, 0, 0) == 0);
    REQUIRE(node_init(&b, 0, 0) == 0);
    r.a = a.ep;
    r.b = b.ep;
    quic_endpoint_set_virtual_sender(a.ep, vsend_from_a, &r);
    quic_endpoint_set_virtual_sender(b.ep, vsend_from_b, &r);
    uint8_t other_priv[32], other_pub[32];
    testkeys_ed25519(other_priv, other_pub);
    char err[200];
    REQUIRE(quic_connect_virtual(b.ep, 3, other_pub, err, sizeof err) != NULL);
    CHECK(WAIT_FOR(b.nclosed == 1, 5000));
    CHECK(strstr(b.reason, "does not match") != NULL);
    CHECK_EQ_INT(a.nready, 0);
    pair_down(&a, &b);
    vrelay_free(&r);
}

/* A punch datagram is dropped by the receiving endpoint, which answers
 * nothing (no stateless reset, no version negotiation). */
static void test_punch(void)
{
    node a, b;
    REQUIRE(node_init(&a, 0, 0) == 0);
    REQUIRE(node_init(&b, 0, 0) == 0);
    struct sockaddr_in to = loopback(quic_endpoint_port(a.ep));
    CHECK(quic_endpoint_punch(b.ep, (struct sockaddr *)&to, sizeof to) == 0);
    quic_stats sa, sb;
    CHECK(WAIT_FOR((quic_endpoint_stats(a.ep, &sa), sa.rx_dropped == 1), 2000));
    WAIT_FOR(0, 100);
    quic_endpoint_stats(a.ep, &sa);
    quic_endpoint_stats(b.ep, &sb);
    CHECK_EQ_INT(sa.tx_datagrams, 0);
    CHECK_EQ_INT(sb.rx_datagrams, 0);
    pair_down(&a, &b);
}

/* ---- chaos: random re-entrant operations from inside callbacks ------------ */

static uint64_t rng_state = 88172645463325252ull;
static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

typedef struct {
    quic_stream *s;       /* NULL once on_close came or we reset it */
    int closes, reset_by_us, finished;
} chaos_stream;

static chaos_stream chaos[4096];
static int nchaos, chaos_conn_closed, chaos_conn_ready, chaos_bad;
static uint8_t junk[70000];

static void chaos_act(chaos_stream *x, int in_callback);

static void chaos_on_data(void *user, quic_stream *s, const uint8_t *d, size_t len, int fin)
{
    chaos_stream *x = user;
    if (x->s != s || x->closes) chaos_bad++; /* callback for a dead stream */
    chaos_act(x, 1);
}

static void chaos_on_close(void *user, quic_stream *s, const char *error)
{
    chaos_stream *x = user;
    if (x->s != s || x->reset_by_us) chaos_bad++;
    x->closes++;
    x->s = NULL;
}

static const quic_stream_callbacks chaos_cbs = {chaos_on_data, chaos_on_close};

static chaos_stream *chaos_new(quic_stream *s)
{
    if (nchaos >= (int)(sizeof chaos / sizeof chaos[0])) return NULL;
    chaos_stream *x = &chaos[nchaos++];
    memset(x, 0, sizeof *x);
    x->s = s;
    return x;
}

/* One random thing to a live stream, possibly from inside its callback. */
static void chaos_act(chaos_stream *x, int in_callback)
{
    if (!x->s) return;
    quic_stream *s = x->s;
    switch (rnd(20)) {
    case 0:
        x->reset_by_us = 1;
        x->s = NULL;
        quic_stream_reset(s, rnd(100));
        return;
    case 1:
        if (in_callback && rnd(4) == 0) {
            quic_conn_close(quic_stream_conn(s), "chaos");
            return;
        }
        break;
    case 2:
    case 3:
        if (!x->finished) {
            x->finished = 1;
            quic_stream_finish(s);
        }
        return;
    default:
        if (!x->finished) quic_stream_write(s, junk, rnd(sizeof junk));
        return;
    }
}

static quic_conn *chaos_live[512];
static int nchaos_live;

static int chaos_incoming_ready;
static void chaos_ready(void *user, quic_conn *c)
{
    chaos_conn_ready++;
    if (!quic_conn_is_outgoing(c)) chaos_incoming_ready++;
    for (int i = 0; i < nchaos_live; i++)
        if (chaos_live[i] == c) chaos_bad += 1000; /* ready twice */
    if (nchaos_live < 512) chaos_live[nchaos_live++] = c;
    /* open a few streams from inside conn_ready */
    for (int i = 0; i < 3; i++) {
        chaos_stream *x = chaos_new(NULL);
        if (!x) return;
        x->s = quic_stream_open(c, &chaos_cbs, x);
        if (x->s) chaos_act(x, 1);
    }
}

static void chaos_closed(void *user, quic_conn *c, const char *reason)
{
    chaos_conn_closed++;
    int found = 0;
    for (int i = 0; i < nchaos_live; i++)
        if (chaos_live[i] == c) {
            chaos_live[i] = chaos_live[--nchaos_live];
            found = 1;
            break;
        }
    if (!found && !quic_conn_is_outgoing(c)) chaos_bad++; /* incoming closed without ready */
}

static void chaos_opened(void *user, quic_stream *s)
{
    chaos_stream *x = chaos_new(s);
    if (!x || rnd(10) == 0) {
        quic_stream_reset(s, 1);
        if (x) {
            x->reset_by_us = 1;
            x->s = NULL;
        }
        return;
    }
    quic_stream_set_callbacks(s, &chaos_cbs, x);
    chaos_act(x, 1);
}

static const quic_endpoint_callbacks chaos_ep_cbs = {chaos_ready, chaos_closed, chaos_opened};

static void test_chaos(void)
{
    node a, b;
    nchaos = chaos_conn_closed = chaos_conn_ready = chaos_bad = nchaos_live = chaos_incoming_ready = 0;
    uint64_t seed = getenv("QUIC_CHAOS_SEED") ? strtoull(getenv("QUIC_CHAOS_SEED"), NULL, 10) : 1;
    rng_state = 88172645463325252ull ^ (seed * 0x9e3779b97f4a7c15ull);
    REQUIRE(node_init(&a, 0, 0) == 0);
    REQUIRE(node_init(&b, 0, 0) == 0);
    quic_endpoint_free(a.ep);
    quic_endpoint_free(b.ep);
    quic_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.bind_host = "127.0.0.1";
    memcpy(cfg.private_key, a.priv, 32);
    memcpy(cfg.public_key, a.pub, 32);
    char err[256];
    a.ep = quic_endpoint_new(base, &cfg, &chaos_ep_cbs, &a, err, sizeof err);
    memcpy(cfg.private_key, b.priv, 32);
    memcpy(cfg.public_key, b.pub, 32);
    b.ep = quic_endpoint_new(base, &cfg, &chaos_ep_cbs, &b, err, sizeof err);
    REQUIRE(a.ep && b.ep);
    int dialled = 0;
    uint64_t end = now_ms() + 3000;
    while (now_ms() < end && nchaos < 3500) {
        if (dialled - chaos_conn_closed < 4 && dialled < 60) {
            struct sockaddr_in to = loopback(quic_endpoint_port(rnd(2) ? a.ep : b.ep));
            node *from = to.sin_port == htons(quic_endpoint_port(a.ep)) ? &b : &a;
            node *peer = from == &a ? &b : &a;
            if (quic_connect(from->ep, (struct sockaddr *)&to, sizeof to, peer->pub, err, sizeof err))
                dialled++;
        }
        /* poke live streams from outside callbacks too */
        for (int i = 0; i < 8 && nchaos; i++) chaos_act(&chaos[rnd((uint32_t)nchaos)], 0);
        WAIT_FOR(0, 5);
    }
    quic_endpoint_free(a.ep);
    quic_endpoint_free(b.ep);
    fprintf(stderr, "  seed %llu: %d connections dialled, %d ready, %d closed, %d streams\n",
            (unsigned long long)seed, dialled, chaos_conn_ready, chaos_conn_closed, nchaos);
    CHECK_EQ_INT(chaos_bad, 0);
    /* conn_closed exactly once for every outgoing connection and for every
     * incoming one that became ready. */
    CHECK_EQ_INT(nchaos_live, 0);
    CHECK_EQ_INT(chaos_conn_closed, dialled + chaos_incoming_ready);
    int once = 1;
    for (int i = 0; i < nchaos; i++) {
        if (chaos[i].closes > 1) once = 0;
        if (!chaos[i].reset_by_us && chaos[i].s) once = 0; /* never heard its end */
    }
    CHECK(once);
}

/* ---- two real processes --------------------------------------------------- */

/* Server mode of this binary (argv: --serve PRIVHEX PUBHEX PORT): an echo
 * endpoint that prints its port on stdout and runs until killed or 20 s. A
 * fresh exec, not a bare fork, so the child shares no event loop state
 * (a forked epoll fd is shared: the child's cleanup would unregister the
 * parent's socket). */
static int serve_main(char **argv)
{
    base = event_base_new();
    tick_ev = evtimer_new(base, tick_cb, NULL);
    static node n;
    n.mode = MODE_ECHO;
    quic_config cfg;
    memset(&cfg, 0, sizeof cfg);
    testkeys_unhex(cfg.private_key, argv[2], 32);
    testkeys_unhex(cfg.public_key, argv[3], 32);
    cfg.bind_host = "127.0.0.1";
    cfg.port = (uint16_t)atoi(argv[4]);
    char err[256];
    n.ep = quic_endpoint_new(base, &cfg, &ep_cbs, &n, err, sizeof err);
    printf("%u\n", n.ep ? (unsigned)quic_endpoint_port(n.ep) : 0u);
    fflush(stdout);
    if (!n.ep) return 2;
    struct timeval limit = {20, 0};
    event_base_loopexit(base, &limit);
    event_base_dispatch(base);
    quic_endpoint_free(n.ep);
    ctxs_free();
    event_free(tick_ev);
    event_base_free(base);
    return 0;
}

static pid_t spawn_server(const uint8_t priv[32], const uint8_t pub[32], uint16_t port,
                          uint16_t *got_port)
{
    char privhex[65], pubhex[65], portstr[8];
    testkeys_hex(privhex, priv, 32);
    testkeys_hex(pubhex, pub, 32);
    snprintf(portstr, sizeof portstr, "%u", (unsigned)port);
    int p[2];
    if (pipe(p) != 0) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        char *args[] = {"test_quic", "--serve", privhex, pubhex, portstr, NULL};
        execv("/proc/self/exe", args);
        _exit(127);
    }
    close(p[1]);
    char line[16] = "";
    ssize_t n = read(p[0], line, sizeof line - 1);
    close(p[0]);
    *got_port = n > 0 ? (uint16_t)atoi(line) : 0;
    return pid;
}

static void kill_server(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static void test_two_processes(void)
{
    uint8_t spriv[32], spub[32];
    testkeys_ed25519(spriv, spub);
    uint16_t port = 0;
    pid_t pid = spawn_server(spriv, spub, 0, &port);
    REQUIRE(pid > 0 && port != 0);

    node b;
    REQUIRE(node_init(&b, 2000, 1200) == 0);
    struct sockaddr_in to = loopback(port);
    char err[256];
    REQUIRE(quic_connect(b.ep, (struct sockaddr *)&to, sizeof to, spub, err, sizeof err));
    REQUIRE(WAIT_FOR(b.nready == 1, 5000));
    sctx *x = ctx_new(&b);
    quic_stream *s = quic_stream_open(b.conn, &collect_cbs, x);
    REQUIRE(s != NULL);
    quic_stream_write(s, "across", 6);
    quic_stream_finish(s);
    CHECK(WAIT_FOR(x->nclose == 1, 5000));
    CHECK(x->len == 6 && memcmp(x->buf, "across", 6) == 0);

    /* A peer that vanishes without a word: the idle timeout notices. */
    kill_server(pid);
    uint64_t t0 = now_ms();
    CHECK(WAIT_FOR(b.nclosed == 1, 5000));
    fprintf(stderr, "  killed peer noticed after %llu ms: %s\n",
            (unsigned long long)(now_ms() - t0), b.reason);
    CHECK(strstr(b.reason, "idle") != NULL);

    /* A peer that restarts with the same key and port: its stateless reset
     * ends our old connection before any timeout. */
    pid = spawn_server(spriv, spub, port, &port);
    REQUIRE(pid > 0 && port == ntohs(to.sin_port));
    REQUIRE(quic_connect(b.ep, (struct sockaddr *)&to, sizeof to, spub, err, sizeof err));
    REQUIRE(WAIT_FOR(b.nready == 2, 5000));
    /* One round trip first, so both sides have confirmed the handshake. */
    sctx *y = ctx_new(&b);
    s = quic_stream_open(b.conn, &collect_cbs, y);
    REQUIRE(s != NULL);
    quic_stream_write(s, "again", 5);
    CHECK(WAIT_FOR(y->len == 5, 5000));
    kill_server(pid);
    pid = spawn_server(spriv, spub, ntohs(to.sin_port), &port);
    REQUIRE(pid > 0 && port == ntohs(to.sin_port));
    t0 = now_ms();
    CHECK(WAIT_FOR(b.nclosed == 2, 5000));
    fprintf(stderr, "  restarted peer noticed after %llu ms: %s\n",
            (unsigned long long)(now_ms() - t0), b.reason);
    CHECK(strstr(b.reason, "stateless reset") != NULL);
    kill_server(pid);
    quic_endpoint_free(b.ep);
    ctxs_free();
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (getenv("QUIC_TEST_LOG")) log_set_level(log_parse_level(getenv("QUIC_TEST_LOG")));
    if (argc == 5 && strcmp(argv[1], "--serve") == 0) return serve_main(argv);
    evthread_use_pthreads(); /* test_write_now_from_thread: a second thread sends */
    base = event_base_new();
    tick_ev = evtimer_new(base, tick_cb, NULL);
    const char *only = getenv("QUIC_TEST_ONLY");
#undef RUN
#define RUN(fn) do { if (!only || strcmp(only, #fn) == 0) testlib_run(#fn, fn); } while (0)
    RUN(test_handshake);
    RUN(test_wrong_pin);
    RUN(test_unreachable_times_out);
    RUN(test_echo);
    RUN(test_fin_semantics);
    RUN(test_reset);
    RUN(test_peer_closes_connection);
    RUN(test_200_streams);
    RUN(test_bulk_20mb);
    RUN(test_write_now_from_thread);
    RUN(test_garbage_dropped);
    RUN(test_close_from_stream_callback);
    RUN(test_close_with_queued_data);
    RUN(test_bad_config);
    RUN(test_keepalive);
    RUN(test_ipv6_and_dual_stack);
    RUN(test_virtual_path);
    RUN(test_virtual_path_lossy);
    RUN(test_virtual_wrong_pin);
    RUN(test_punch);
    RUN(test_chaos);
    RUN(test_two_processes);
    event_free(tick_ev);
    event_base_free(base);
    return testlib_finish();
}
