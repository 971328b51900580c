/* quic.c: QUIC endpoint, connections and streams on ngtcp2 0.12 + GnuTLS.
 *
 * For: one UDP socket per endpoint on a libevent loop, client and server on
 * the same socket; datagrams routed to connections by destination connection
 * id; TLS 1.3 with raw Ed25519 keys; per-stream send buffers kept until acked;
 * flow-control credit returned as data is delivered; UDP GSO/GRO batching;
 * one timer per connection. Not for: framing, message types, retries or
 * reconnects (mesh/ does those), 0-RTT, Retry tokens, connection migration
 * initiated by us, unidirectional streams, DATAGRAM frames.
 *
 * Re-entrancy model (the part to read before changing anything):
 *   - ngtcp2 is entered from exactly three top-level places: the socket read
 *     handler, a connection's timer, and the endpoint's flush event. Each of
 *     them ends with ep_settle(), which writes packets for every connection
 *     marked dirty, re-arms timers, and frees what died.
 *   - Application callbacks run inside ngtcp2 callbacks (on_data inside
 *     recv_stream_data, ...). Functions the application may call from there
 *     never enter ngtcp2 in a way that could recurse: quic_stream_write and
 *     quic_stream_finish only queue bytes and mark the connection dirty;
 *     quic_stream_reset marks the stream and defers ngtcp2_conn_shutdown_stream
 *     to ep_settle; quic_conn_close delivers on_close/conn_closed at once
 *     but defers CONNECTION_CLOSE and every free to ep_settle.
 *   - Nothing is freed while a callback might be on the stack: dead streams
 *     wait on their connection's dead list, dead connections on the
 *     endpoint's reap list, both emptied at the end of ep_settle.
 *   - One other thread may send (quic_stream_write_now): everything above
 *     runs under the endpoint's lock (ep->mu, recursive), taken by the three
 *     top-level places and by every public function that touches state; a
 *     thread that holds it (quic_endpoint_trylock) can write one stream's
 *     packets itself while the loop thread is elsewhere. It never delivers an
 *     application callback: an error on that write is kept for the loop's
 *     next settle (write_error).
 * See docs/quic.md for the design and measured figures. */
#define _GNU_SOURCE
#include "net/quic.h"

#include "lib/err.h"
#include "lib/log.h"
#include "lib/precise_timer.h"
#include "lib/sockaddr_ip.h"

#include <assert.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>

#ifndef SOL_UDP
#define SOL_UDP 17
#endif

#define MOD "quic"

/* ---- tunables -------------------------------------------------------------*/

/* All our connection ids have one length, so a short-header packet's DCID
 * can be cut out without knowing the connection. */
#define QUIC_CIDLEN 16
/* The bounds on state a remote party can make us hold are quic_limits
 * (quic.h; flags of llmesh serve). Half-open = incoming connections whose
 * handshake has not completed (spoofed Initials land there; without Retry
 * tokens this is our only defence, see docs). The same per IP address
 * (virtual paths aside), so that one host cannot take every slot: a
 * handshake flood from one address leaves room for everyone else. Loopback
 * tests run every node on 127.0.0.1, so the per-address total stays well
 * above what a test mesh needs. */
/* Flow control: credit is returned as soon as bytes reach the application,
 * so windows only bound bytes in flight. ngtcp2 auto-tunes from the
 * initial to the max window by RTT. */
#define QUIC_STREAM_WINDOW (1u << 20)
#define QUIC_STREAM_MAX_WINDOW (16u << 20)
#define QUIC_CONN_WINDOW (4u << 20)
#define QUIC_CONN_MAX_WINDOW (64u << 20)
#define QUIC_MAX_STREAMS_BIDI 1024 /* concurrently open, per direction */
/* Socket I/O. 64 KiB covers one GRO super-datagram; 64 recvmsg calls per
 * readiness keep one busy peer from starving the loop. */
#define QUIC_RX_BUF 65536
#define QUIC_RX_BATCH 64
#define QUIC_TX_BUF 65536
#define QUIC_GSO_MAX_SEGS 64     /* UDP_MAX_SEGMENTS in the kernel */
#define QUIC_GSO_MAX_BYTES 65000 /* one UDP datagram before segmentation */
#define QUIC_SOCK_BUF (4 << 20)
/* Packets written per flush at most; ngtcp2's send quantum usually
 * decides first. */
#define QUIC_MAX_PKTS_PER_WRITE 128
#define QUIC_UNPACED_PKTS 4       /* writes of this many packets or fewer set no pacing time */
/* Send buffer chunks: small writes share a chunk, big ones get big chunks. */
#define QUIC_CHUNK_MIN 4096
#define QUIC_CHUNK_MAX (1u << 20)
/* Stateless resets and version negotiation answers per second. */
#define QUIC_RESPONSES_PER_SEC 100

/* ---- types -----------------------------------------------------------------*/

typedef struct send_chunk {
    struct send_chunk *next;
    size_t len, cap;
    uint8_t data[];
} send_chunk;

struct quic_stream {
    quic_conn *conn;
    int64_t id;
    quic_stream_callbacks cb;
    void *user;
    /* Send buffer: chunks hold stream bytes [acked_off - head_skip, end_off).
     * acked_off <= sent_off <= end_off. send_chunk/send_pos is where
     * sent_off lies. Chunks never move: ngtcp2 keeps pointers into them
     * for retransmission until the bytes are acknowledged. */
    send_chunk *head, *tail, *send_chunk;
    size_t head_skip, send_pos;
    uint64_t acked_off, sent_off, end_off;
    uint64_t reset_code;
    unsigned blocked_pass;       /* write pass in which ngtcp2 said blocked */
    unsigned fin_requested : 1;  /* quic_stream_finish called */
    unsigned fin_sent : 1;
    unsigned detached : 1;       /* no more app callbacks (on_close given or app reset) */
    unsigned ng_closed : 1;      /* ngtcp2 forgot the stream */
    unsigned reset_pending : 1;  /* ngtcp2_conn_shutdown_stream still to call */
    unsigned in_sendq : 1;
    quic_stream *prev, *next;       /* conn->streams, or conn->dead_streams */
    quic_stream *sq_prev, *sq_next; /* conn send queue */
};

enum { CLOSE_NONE, CLOSE_APP, CLOSE_LIBERR, CLOSE_TLS_ALERT };

struct quic_conn {
    quic_endpoint *ep;
    ngtcp2_conn *conn;
    gnutls_session_t tls;
    ngtcp2_crypto_conn_ref conn_ref;
    struct event *timer;
    void *user;
    /* Peer address as the socket sees it (v4-mapped on a dual-stack socket)
     * and as the application sees it (plain IPv4 then). */
    struct sockaddr_storage remote, remote_app;
    socklen_t remote_len, remote_app_len;
    uint8_t peer_key[QUIC_KEY_BYTES];
    ngtcp2_cid *cids;            /* every CID of ours in the endpoint map */
    size_t ncids, cids_cap;
    ngtcp2_tstamp hs_deadline;
    int outgoing, have_peer_key, ready, closing, retired, dirty, half_open;
    int got_stateless_reset;
    int write_error;             /* an ngtcp2 error met by quic_stream_write_now, for the loop to handle */
    ngtcp2_tstamp timer_at;      /* what its libevent timer is set for; UINT64_MAX: not set */
    uint32_t vpath;              /* virtual path it runs on; 0 = the socket */
    /* UDP payload bytes of its packets, both ways (QUIC headers and
     * encryption included, retransmissions counted again): what the link
     * carries, for the console's and /metrics' per-peer figures. */
    uint64_t rx_bytes, tx_bytes;
    int got_crypto;              /* some CRYPTO data decrypted: not garbage */
    int close_kind;
    uint64_t close_code;         /* app error, liberr or TLS alert per close_kind */
    unsigned write_pass;
    size_t npending_resets;
    char reason[160];            /* why it closed (given to conn_closed) */
    char tls_reason[96];         /* set by the verify callback on rejection */
    quic_stream *streams, *dead_streams;
    quic_stream *sq_head, *sq_tail;
    quic_conn *prev, *next;      /* ep->conns, or ep->reap */
    quic_conn *dirty_next;
};

typedef struct {
    quic_conn *conn;             /* NULL = empty slot */
    uint8_t len;
    uint8_t id[NGTCP2_MAX_CIDLEN];
} cid_slot;

typedef struct {
    cid_slot *slots;
    size_t cap, count;           /* cap is a power of two, load kept <= 1/2 */
    uint64_t seed;
} cid_map;

struct quic_endpoint {
    struct event_base *base;
    quic_endpoint_callbacks cb;
    void *user;
    int fd;
    int family;
    struct sockaddr_storage local;
    socklen_t local_len;
    struct event *read_ev, *flush_ev;
    gnutls_certificate_credentials_t cred;
    gnutls_priority_t prio;
    uint8_t public_key[QUIC_KEY_BYTES];
    uint8_t reset_secret[32];
    ngtcp2_duration handshake_timeout, idle_timeout;
    int passive;                 /* our dials offer QUIC_ALPN_PASSIVE */
    cid_map map;
    quic_conn *conns, *reap, *dirty;
    size_t nconns, nhalf_open;
    quic_limits limits;              /* resolved: no zeros */
    uint8_t *rxbuf, *txbuf;
    int gso, gro;
    ngtcp2_cc_algo cc_algo;      /* congestion control: BBR unless LLMESH_QUIC_CC says otherwise */
    pthread_mutex_t mu;          /* recursive: everything below, see "One other thread may send" */
    int in_io;                   /* inside a top-level handler that ends with ep_settle */
    int foreign;                 /* conn_write runs for quic_stream_write_now: no callbacks */
    precise_timer *now_timer;    /* expiries set by quic_stream_write_now (NULL: no timerfd) */
    ngtcp2_tstamp now_timer_at;  /* ... armed for then; 0: not armed */
    quic_conn *now_conn;         /* ... for that connection; NULL: for several */
    int freeing;
    int depth;                   /* application callbacks on the stack */
    quic_virtual_send_fn vsend;  /* virtual paths: where their packets go */
    void *vsend_ctx;
    ngtcp2_tstamp resp_ts;       /* response rate limiter window start */
    unsigned resp_count;
    quic_stats stats;
};

static const char PRIORITY[] =
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:%DISABLE_TLS13_COMPAT_MODE:"
    "-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305:"
    "-CTYPE-ALL:+CTYPE-CLI-RAWPK:+CTYPE-SRV-RAWPK";

static void ep_settle(quic_endpoint *ep);
static void conn_mark_dirty(quic_conn *c);
static void conn_terminate(quic_conn *c, int kind, uint64_t code, const char *reason);

/* ---- small helpers ---------------------------------------------------------*/

static ngtcp2_tstamp quic_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (ngtcp2_tstamp)ts.tv_sec * NGTCP2_SECONDS + (ngtcp2_tstamp)ts.tv_nsec;
}

static void random_bytes(void *p, size_t n)
{
    /* GNUTLS_RND_NONCE is the fast non-blocking generator; good enough for
     * CIDs and padding, which must be unpredictable but not secret keys. */
    if (gnutls_rnd(GNUTLS_RND_NONCE, p, n) != 0) abort();
}

static const char *addr_str(const struct sockaddr *sa, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        port = ntohs(in->sin_port);
        snprintf(buf, len, "%s:%u", host, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        port = ntohs(in6->sin6_port);
        snprintf(buf, len, "[%s]:%u", host, port);
    } else {
        snprintf(buf, len, "(family %d)", sa->sa_family);
    }
    return buf;
}

/* Converts an application address to what the socket needs: IPv4 becomes
 * v4-mapped IPv6 on an IPv6 socket; v4-mapped IPv6 becomes IPv4 on an IPv4
 * socket. -1 when the families cannot meet. */
static int addr_to_socket(int family, const struct sockaddr *in, socklen_t inlen,
                          struct sockaddr_storage *out, socklen_t *outlen)
{
    memset(out, 0, sizeof *out);
    if (in->sa_family == AF_INET && inlen >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *v4 = (const void *)in;
        if (family == AF_INET) {
            memcpy(out, v4, sizeof *v4);
            *outlen = sizeof *v4;
            return 0;
        }
        struct sockaddr_in6 *v6 = (void *)out;
        v6->sin6_family = AF_INET6;
        v6->sin6_port = v4->sin_port;
        v6->sin6_addr.s6_addr[10] = 0xff;
        v6->sin6_addr.s6_addr[11] = 0xff;
        memcpy(&v6->sin6_addr.s6_addr[12], &v4->sin_addr, 4);
        *outlen = sizeof *v6;
        return 0;
    }
    if (in->sa_family == AF_INET6 && inlen >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *v6 = (const void *)in;
        if (family == AF_INET6) {
            memcpy(out, v6, sizeof *v6);
            *outlen = sizeof *v6;
            return 0;
        }
        if (!IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) return -1;
        struct sockaddr_in *v4 = (void *)out;
        v4->sin_family = AF_INET;
        v4->sin_port = v6->sin6_port;
        memcpy(&v4->sin_addr, &v6->sin6_addr.s6_addr[12], 4);
        *outlen = sizeof *v4;
        return 0;
    }
    return -1;
}

/* The application's view of a socket address: v4-mapped becomes IPv4. */
static void addr_to_app(const struct sockaddr_storage *in, socklen_t inlen,
                        struct sockaddr_storage *out, socklen_t *outlen)
{
    const struct sockaddr_in6 *v6 = (const void *)in;
    if (in->ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) {
        addr_to_socket(AF_INET, (const struct sockaddr *)in, inlen, out, outlen);
        return;
    }
    memcpy(out, in, inlen);
    *outlen = inlen;
}

static int addr_eq(const struct sockaddr *a, socklen_t alen, const struct sockaddr *b,
                   socklen_t blen)
{
    return alen == blen && memcmp(a, b, alen) == 0;
}

/* Application callbacks go through these so ep->depth knows when one is on
 * the stack (quic_endpoint_free asserts it is not). */
#define APP_CALL(ep, call) do { (ep)->depth++; call; (ep)->depth--; } while (0)
#define EP_LOCK(ep) pthread_mutex_lock(&(ep)->mu)
#define EP_UNLOCK(ep) pthread_mutex_unlock(&(ep)->mu)

/* ---- connection id map -----------------------------------------------------*/
/* Open addressing with linear probing and backward-shift deletion (no
 * tombstones). Keys are our own random CIDs; lookups come from the network,
 * so the hash is seeded to keep probe chains unguessable. */

static uint64_t cid_hash(const cid_map *m, const uint8_t *id, size_t len)
{
    uint64_t h = m->seed ^ 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) {
        h ^= id[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 32;
    h *= 0xd6e8feb86659fd93ull;
    h ^= h >> 32;
    return h;
}

static size_t cid_find(const cid_map *m, const uint8_t *id, size_t len)
{
    size_t mask = m->cap - 1, i = cid_hash(m, id, len) & mask;
    while (m->slots[i].conn) {
        if (m->slots[i].len == len && memcmp(m->slots[i].id, id, len) == 0) return i;
        i = (i + 1) & mask;
    }
    return SIZE_MAX;
}

static quic_conn *cid_map_get(const cid_map *m, const uint8_t *id, size_t len)
{
    if (!m->cap || len > NGTCP2_MAX_CIDLEN) return NULL;
    size_t i = cid_find(m, id, len);
    return i == SIZE_MAX ? NULL : m->slots[i].conn;
}

static int cid_map_grow(cid_map *m)
{
    size_t ncap = m->cap ? m->cap * 2 : 64;
    cid_slot *ns = calloc(ncap, sizeof *ns);
    if (!ns) return -1;
    cid_slot *old = m->slots;
    size_t ocap = m->cap;
    m->slots = ns;
    m->cap = ncap;
    for (size_t i = 0; i < ocap; i++) {
        if (!old[i].conn) continue;
        size_t j = cid_hash(m, old[i].id, old[i].len) & (ncap - 1);
        while (ns[j].conn) j = (j + 1) & (ncap - 1);
        ns[j] = old[i];
    }
    free(old);
    return 0;
}

/* 0 inserted, 1 already present (left alone), -1 out of memory. */
static int cid_map_put(cid_map *m, const uint8_t *id, size_t len, quic_conn *c)
{
    if (len > NGTCP2_MAX_CIDLEN) return -1;
    if ((m->count + 1) * 2 > m->cap && cid_map_grow(m) != 0) return -1;
    if (cid_find(m, id, len) != SIZE_MAX) return 1;
    size_t mask = m->cap - 1, i = cid_hash(m, id, len) & mask;
    while (m->slots[i].conn) i = (i + 1) & mask;
    m->slots[i].conn = c;
    m->slots[i].len = (uint8_t)len;
    memcpy(m->slots[i].id, id, len);
    m->count++;
    return 0;
}

static void cid_map_del(cid_map *m, const uint8_t *id, size_t len, const quic_conn *c)
{
    if (!m->cap) return;
    size_t i = cid_find(m, id, len);
    if (i == SIZE_MAX || m->slots[i].conn != c) return;
    size_t mask = m->cap - 1, j = i;
    m->slots[i].conn = NULL;
    m->count--;
    /* Pull later members of the probe chain back so lookups never stop
     * early at the hole. */
    for (;;) {
        j = (j + 1) & mask;
        if (!m->slots[j].conn) break;
        size_t k = cid_hash(m, m->slots[j].id, m->slots[j].len) & mask;
        int stays = (i <= j) ? (i < k && k <= j) : (i < k || k <= j);
        if (stays) continue;
        m->slots[i] = m->slots[j];
        m->slots[j].conn = NULL;
        i = j;
    }
}

static int conn_add_cid(quic_conn *c, const ngtcp2_cid *cid)
{
    if (c->ncids == c->cids_cap) {
        size_t ncap = c->cids_cap ? c->cids_cap * 2 : 4;
        ngtcp2_cid *n = realloc(c->cids, ncap * sizeof *n);
        if (!n) return -1;
        c->cids = n;
        c->cids_cap = ncap;
    }
    int rv = cid_map_put(&c->ep->map, cid->data, cid->datalen, c);
    if (rv < 0) return -1;
    if (rv == 1) return 1; /* somebody else's: not ours to remove later */
    c->cids[c->ncids++] = *cid;
    return 0;
}

static void conn_remove_cid(quic_conn *c, const ngtcp2_cid *cid)
{
    for (size_t i = 0; i < c->ncids; i++) {
        if (ngtcp2_cid_eq(&c->cids[i], cid)) {
            cid_map_del(&c->ep->map, cid->data, cid->datalen, c);
            c->cids[i] = c->cids[--c->ncids];
            return;
        }
    }
}

/* ---- stream send buffer ----------------------------------------------------*/

static int stream_append(quic_stream *s, const uint8_t *p, size_t len)
{
    while (len) {
        send_chunk *t = s->tail;
        if (!t || t->len == t->cap) {
            size_t cap = len < QUIC_CHUNK_MIN ? QUIC_CHUNK_MIN
                       : len > QUIC_CHUNK_MAX ? QUIC_CHUNK_MAX : len;
            t = malloc(sizeof *t + cap);
            if (!t) return -1;
            t->next = NULL;
            t->len = 0;
            t->cap = cap;
            if (s->tail) s->tail->next = t;
            else s->head = t;
            s->tail = t;
            if (!s->send_chunk) {
                s->send_chunk = t;
                s->send_pos = 0;
            }
        }
        size_t take = t->cap - t->len < len ? t->cap - t->len : len;
        memcpy(t->data + t->len, p, take);
        t->len += take;
        p += take;
        len -= take;
        s->end_off += take;
    }
    return 0;
}

/* Unsent bytes as iovecs, from sent_off on. */
static size_t stream_vecs(quic_stream *s, ngtcp2_vec *v, size_t max, uint64_t *total)
{
    size_t n = 0;
    uint64_t t = 0;
    size_t pos = s->send_pos;
    for (send_chunk *ch = s->send_chunk; ch && n < max; ch = ch->next, pos = 0) {
        if (pos >= ch->len) continue;
        v[n].base = ch->data + pos;
        v[n].len = ch->len - pos;
        t += v[n].len;
        n++;
    }
    *total = t;
    return n;
}

static void stream_advance(quic_stream *s, size_t n)
{
    s->sent_off += n;
    while (s->send_chunk) {
        send_chunk *ch = s->send_chunk;
        size_t avail = ch->len - s->send_pos;
        size_t take = n < avail ? n : avail;
        s->send_pos += take;
        n -= take;
        if (s->send_pos < ch->len || !ch->next) break;
        s->send_chunk = ch->next;
        s->send_pos = 0;
    }
    assert(n == 0);
}

/* ngtcp2 reports acknowledged ranges in order and without overlap. */
static void stream_ack(quic_stream *s, uint64_t offset, uint64_t len)
{
    uint64_t end = offset + len;
    if (end <= s->acked_off) return;
    uint64_t n = end - s->acked_off;
    s->acked_off = end;
    while (n && s->head) {
        send_chunk *h = s->head;
        size_t avail = h->len - s->head_skip;
        if (n < avail) {
            s->head_skip += (size_t)n;
            return;
        }
        n -= avail;
        if (s->send_chunk == h) {
            s->send_chunk = h->next;
            s->send_pos = 0;
        }
        if (s->tail == h) s->tail = NULL;
        s->head = h->next;
        s->head_skip = 0;
        free(h);
    }
}

static int stream_has_pending(const quic_stream *s)
{
    return s->sent_off < s->end_off || (s->fin_requested && !s->fin_sent);
}

static void stream_free(quic_stream *s)
{
    send_chunk *ch = s->head;
    while (ch) {
        send_chunk *n = ch->next;
        free(ch);
        ch = n;
    }
    free(s);
}

/* ---- stream lists -----------------------------------------------------------*/

static void sendq_add(quic_stream *s)
{
    quic_conn *c = s->conn;
    if (s->in_sendq) return;
    s->in_sendq = 1;
    s->sq_next = NULL;
    s->sq_prev = c->sq_tail;
    if (c->sq_tail) c->sq_tail->sq_next = s;
    else c->sq_head = s;
    c->sq_tail = s;
}

static void sendq_remove(quic_stream *s)
{
    quic_conn *c = s->conn;
    if (!s->in_sendq) return;
    if (s->sq_prev) s->sq_prev->sq_next = s->sq_next;
    else c->sq_head = s->sq_next;
    if (s->sq_next) s->sq_next->sq_prev = s->sq_prev;
    else c->sq_tail = s->sq_prev;
    s->sq_prev = s->sq_next = NULL;
    s->in_sendq = 0;
}

static void list_push(quic_stream **head, quic_stream *s)
{
    s->prev = NULL;
    s->next = *head;
    if (*head) (*head)->prev = s;
    *head = s;
}

static void list_unlink(quic_stream **head, quic_stream *s)
{
    if (s->prev) s->prev->next = s->next;
    else *head = s->next;
    if (s->next) s->next->prev = s->prev;
    s->prev = s->next = NULL;
}

static quic_stream *stream_new(quic_conn *c, int64_t id)
{
    quic_stream *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->conn = c;
    s->id = id;
    list_push(&c->streams, s);
    return s;
}

/* Stops app callbacks for s and queues RESET_STREAM + STOP_SENDING. */
static void stream_abort(quic_stream *s, uint64_t code)
{
    quic_conn *c = s->conn;
    s->detached = 1;
    sendq_remove(s);
    if (!s->reset_pending && !s->ng_closed && !c->closing) {
        s->reset_pending = 1;
        s->reset_code = code;
        c->npending_resets++;
        conn_mark_dirty(c);
    }
}

/* ---- ngtcp2 callbacks ------------------------------------------------------*/

static void cb_rand(uint8_t *dest, size_t destlen, const ngtcp2_rand_ctx *ctx)
{
    (void)ctx;
    random_bytes(dest, destlen);
}

static int cb_get_new_connection_id(ngtcp2_conn *nc, ngtcp2_cid *cid, uint8_t *token,
                                    size_t cidlen, void *ud)
{
    quic_conn *c = ud;
    if (cidlen != QUIC_CIDLEN) return NGTCP2_ERR_CALLBACK_FAILURE;
    for (int tries = 0;; tries++) {
        random_bytes(cid->data, cidlen);
        cid->datalen = cidlen;
        int rv = conn_add_cid(c, cid);
        if (rv == 0) break;
        if (rv < 0 || tries > 8) return NGTCP2_ERR_CALLBACK_FAILURE;
    }
    if (ngtcp2_crypto_generate_stateless_reset_token(token, c->ep->reset_secret,
                                                     sizeof c->ep->reset_secret, cid) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    return 0;
}

static int cb_remove_connection_id(ngtcp2_conn *nc, const ngtcp2_cid *cid, void *ud)
{
    conn_remove_cid(ud, cid);
    return 0;
}

static int cb_handshake_completed(ngtcp2_conn *nc, void *ud)
{
    quic_conn *c = ud;
    quic_endpoint *ep = c->ep;
    if (!c->have_peer_key) {
        snprintf(c->tls_reason, sizeof c->tls_reason, "peer presented no key");
        return NGTCP2_ERR_CALLBACK_FAILURE;
    }
    c->ready = 1;
    if (c->half_open) {
        c->half_open = 0;
        ep->nhalf_open--;
    }
    if (log_enabled(LOG_DEBUG)) {
        char a[64];
        log_debug(MOD, "%s connection with %s ready",
                  c->outgoing ? "outgoing" : "incoming",
                  addr_str((struct sockaddr *)&c->remote_app, a, sizeof a));
    }
    if (!c->closing && ep->cb.conn_ready) APP_CALL(ep, ep->cb.conn_ready(ep->user, c));
    return 0;
}

static int cb_recv_crypto_data(ngtcp2_conn *nc, ngtcp2_crypto_level level, uint64_t offset,
                               const uint8_t *data, size_t len, void *ud)
{
    quic_conn *c = ud;
    c->got_crypto = 1;
    return ngtcp2_crypto_recv_crypto_data_cb(nc, level, offset, data, len, ud);
}

static int cb_recv_stream_data(ngtcp2_conn *nc, uint32_t flags, int64_t sid, uint64_t offset,
                               const uint8_t *data, size_t len, void *ud, void *sud)
{
    quic_conn *c = ud;
    quic_stream *s = sud;
    /* Credit goes back at once: the application takes the bytes now and
     * buffers what it cannot process yet. Back-pressure towards the peer is
     * the application's business (its own protocol), not the window's. */
    ngtcp2_conn_extend_max_stream_offset(nc, sid, len);
    ngtcp2_conn_extend_max_offset(nc, len);
    if (!s || s->detached || c->closing) return 0;
    int fin = (flags & NGTCP2_STREAM_DATA_FLAG_FIN) != 0;
    if (s->cb.on_data && (len || fin))
        APP_CALL(c->ep, s->cb.on_data(s->user, s, data, len, fin));
    return 0;
}

static int cb_acked_stream_data_offset(ngtcp2_conn *nc, int64_t sid, uint64_t offset,
                                       uint64_t datalen, void *ud, void *sud)
{
    quic_stream *s = sud;
    if (s) stream_ack(s, offset, datalen);
    return 0;
}

static int cb_stream_open(ngtcp2_conn *nc, int64_t sid, void *ud)
{
    quic_conn *c = ud;
    quic_endpoint *ep = c->ep;
    if (!ngtcp2_is_bidi_stream(sid)) return 0; /* we allow none; ngtcp2 enforces */
    quic_stream *s = stream_new(c, sid);
    if (!s) return NGTCP2_ERR_CALLBACK_FAILURE;
    if (ngtcp2_conn_set_stream_user_data(nc, sid, s) != 0) {
        list_unlink(&c->streams, s);
        stream_free(s);
        return 0;
    }
    if (c->closing || !c->ready || !ep->cb.stream_opened) {
        stream_abort(s, 0);
        return 0;
    }
    APP_CALL(ep, ep->cb.stream_opened(ep->user, s));
    /* Contract: set callbacks or reset. Neither means nobody listens. */
    if (!s->detached && !s->cb.on_data && !s->cb.on_close) stream_abort(s, 0);
    return 0;
}

static void stream_report_close(quic_stream *s, const char *error)
{
    if (s->detached) return;
    s->detached = 1;
    sendq_remove(s);
    if (s->cb.on_close) APP_CALL(s->conn->ep, s->cb.on_close(s->user, s, error));
}

static int cb_stream_close(ngtcp2_conn *nc, uint32_t flags, int64_t sid, uint64_t app_error,
                           void *ud, void *sud)
{
    quic_conn *c = ud;
    quic_stream *s = sud;
    if (!ngtcp2_conn_is_local_stream(nc, sid) && ngtcp2_is_bidi_stream(sid))
        ngtcp2_conn_extend_max_streams_bidi(nc, 1);
    if (!s) return 0;
    s->ng_closed = 1;
    if (s->reset_pending) {
        s->reset_pending = 0;
        c->npending_resets--;
    }
    if (!c->closing) {
        char msg[64];
        const char *err = NULL;
        if (flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET) {
            snprintf(msg, sizeof msg, "stream reset (code %llu)", (unsigned long long)app_error);
            err = msg;
        }
        stream_report_close(s, err);
    }
    sendq_remove(s);
    /* Freed in conn_settle, after whatever ngtcp2 call got us here returns. */
    list_unlink(&c->streams, s);
    list_push(&c->dead_streams, s);
    return 0;
}

/* The peer aborted its side (RESET_STREAM) or ours (STOP_SENDING). Our API
 * has no half-aborted stream: report the end and abort our side too. */
static int stream_peer_abort(quic_conn *c, quic_stream *s, const char *what, uint64_t code)
{
    if (!s || c->closing) return 0;
    char msg[64];
    snprintf(msg, sizeof msg, "stream %s by peer (code %llu)", what, (unsigned long long)code);
    stream_report_close(s, msg);
    stream_abort(s, 0);
    return 0;
}

static int cb_stream_reset(ngtcp2_conn *nc, int64_t sid, uint64_t final_size,
                           uint64_t app_error, void *ud, void *sud)
{
    return stream_peer_abort(ud, sud, "reset", app_error);
}

static int cb_stream_stop_sending(ngtcp2_conn *nc, int64_t sid, uint64_t app_error, void *ud,
                                  void *sud)
{
    return stream_peer_abort(ud, sud, "stopped", app_error);
}

static int cb_recv_stateless_reset(ngtcp2_conn *nc, const ngtcp2_pkt_stateless_reset *sr,
                                   void *ud)
{
    quic_conn *c = ud;
    c->got_stateless_reset = 1;
    return 0;
}

static void ngtcp2_log_cb(void *user, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ngtcp2_log_cb(void *user, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    log_write(LOG_TRACE, "ngtcp2", "%s", buf);
}

static void fill_callbacks(ngtcp2_callbacks *cb, int server)
{
    memset(cb, 0, sizeof *cb);
    if (server) cb->recv_client_initial = ngtcp2_crypto_recv_client_initial_cb;
    else cb->client_initial = ngtcp2_crypto_client_initial_cb;
    cb->recv_crypto_data = cb_recv_crypto_data;
    cb->encrypt = ngtcp2_crypto_encrypt_cb;
    cb->decrypt = ngtcp2_crypto_decrypt_cb;
    cb->hp_mask = ngtcp2_crypto_hp_mask_cb;
    cb->recv_retry = ngtcp2_crypto_recv_retry_cb;
    cb->update_key = ngtcp2_crypto_update_key_cb;
    cb->delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb;
    cb->delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb;
    cb->get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb;
    cb->version_negotiation = ngtcp2_crypto_version_negotiation_cb;
    cb->rand = cb_rand;
    cb->get_new_connection_id = cb_get_new_connection_id;
    cb->remove_connection_id = cb_remove_connection_id;
    cb->handshake_completed = cb_handshake_completed;
    cb->recv_stream_data = cb_recv_stream_data;
    cb->acked_stream_data_offset = cb_acked_stream_data_offset;
    cb->stream_open = cb_stream_open;
    cb->stream_close = cb_stream_close;
    cb->stream_reset = cb_stream_reset;
    cb->stream_stop_sending = cb_stream_stop_sending;
    cb->recv_stateless_reset = cb_recv_stateless_reset;
}

static void fill_settings(const quic_endpoint *ep, ngtcp2_settings *s)
{
    ngtcp2_settings_default(s);
    s->initial_ts = quic_now();
    s->handshake_timeout = ep->handshake_timeout;
    s->max_window = QUIC_CONN_MAX_WINDOW;
    s->max_stream_window = QUIC_STREAM_MAX_WINDOW;
    s->cc_algo = ep->cc_algo;
    if (log_enabled(LOG_TRACE)) s->log_printf = ngtcp2_log_cb;
}

static void fill_params(const quic_endpoint *ep, ngtcp2_transport_params *p)
{
    ngtcp2_transport_params_default(p);
    p->initial_max_stream_data_bidi_local = QUIC_STREAM_WINDOW;
    p->initial_max_stream_data_bidi_remote = QUIC_STREAM_WINDOW;
    p->initial_max_stream_data_uni = 0;
    p->initial_max_data = QUIC_CONN_WINDOW;
    p->initial_max_streams_bidi = QUIC_MAX_STREAMS_BIDI;
    p->initial_max_streams_uni = 0;
    p->max_idle_timeout = ep->idle_timeout;
    p->active_connection_id_limit = 4;
}

/* ---- TLS --------------------------------------------------------------------*/

static ngtcp2_conn *conn_ref_get(ngtcp2_crypto_conn_ref *ref)
{
    quic_conn *c = ref->user_data;
    return c->conn;
}

/* Runs inside the handshake when the peer's certificate (a raw public key)
 * arrived. Outgoing: the key must equal the pinned one. Incoming: any
 * Ed25519 key is accepted and recorded. The TLS handshake itself proves the
 * peer holds the private key (CertificateVerify). Nonzero fails the
 * handshake with an alert. */
static int tls_verify_peer(gnutls_session_t session)
{
    ngtcp2_crypto_conn_ref *ref = gnutls_session_get_ptr(session);
    quic_conn *c = ref->user_data;
    int ok = 0;
    gnutls_pubkey_t pk = NULL;
    gnutls_datum_t x = {NULL, 0};
    gnutls_ecc_curve_t curve;
    unsigned n = 0;

    if (gnutls_certificate_type_get2(session, GNUTLS_CTYPE_PEERS) != GNUTLS_CRT_RAWPK) {
        snprintf(c->tls_reason, sizeof c->tls_reason, "peer did not present a raw public key");
        goto out;
    }
    const gnutls_datum_t *certs = gnutls_certificate_get_peers(session, &n);
    if (!certs || n != 1) {
        snprintf(c->tls_reason, sizeof c->tls_reason, "peer presented no key");
        goto out;
    }
    if (gnutls_pubkey_init(&pk) != 0) goto out;
    if (gnutls_pubkey_import(pk, &certs[0], GNUTLS_X509_FMT_DER) != 0 ||
        gnutls_pubkey_get_pk_algorithm(pk, NULL) != GNUTLS_PK_EDDSA_ED25519 ||
        gnutls_pubkey_export_ecc_raw2(pk, &curve, &x, NULL, 0) != 0 ||
        curve != GNUTLS_ECC_CURVE_ED25519 || x.size != QUIC_KEY_BYTES) {
        snprintf(c->tls_reason, sizeof c->tls_reason, "peer key is not Ed25519");
        goto out;
    }
    if (c->outgoing) {
        if (memcmp(x.data, c->peer_key, QUIC_KEY_BYTES) != 0) {
            snprintf(c->tls_reason, sizeof c->tls_reason,
                     "peer key does not match the expected node id");
            goto out;
        }
    } else {
        memcpy(c->peer_key, x.data, QUIC_KEY_BYTES);
        c->have_peer_key = 1;
    }
    ok = 1;
out:
    gnutls_free(x.data);
    if (pk) gnutls_pubkey_deinit(pk);
    return ok ? 0 : -1;
}

static int conn_tls_init(quic_conn *c, int server, char *err, size_t errlen)
{
    quic_endpoint *ep = c->ep;
    unsigned flags = (server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_ENABLE_RAWPK |
                     GNUTLS_NO_END_OF_EARLY_DATA | GNUTLS_NO_TICKETS;
    int rv = gnutls_init(&c->tls, flags);
    if (rv != 0) {
        c->tls = NULL;
        err_set(err, errlen, "gnutls_init: %s", gnutls_strerror(rv));
        return -1;
    }
    rv = server ? ngtcp2_crypto_gnutls_configure_server_session(c->tls)
                : ngtcp2_crypto_gnutls_configure_client_session(c->tls);
    if (rv != 0) {
        err_set(err, errlen, "ngtcp2_crypto_gnutls_configure_session failed");
        return -1;
    }
    if ((rv = gnutls_priority_set(c->tls, ep->prio)) != 0 ||
        (rv = gnutls_credentials_set(c->tls, GNUTLS_CRD_CERTIFICATE, ep->cred)) != 0) {
        err_set(err, errlen, "gnutls session setup: %s", gnutls_strerror(rv));
        return -1;
    }
    if (server) gnutls_certificate_server_set_request(c->tls, GNUTLS_CERT_REQUIRE);
    /* A listener takes either protocol; a dialler offers the one of its kind. */
    gnutls_datum_t alpn[2] = {{(unsigned char *)QUIC_ALPN, sizeof QUIC_ALPN - 1},
                              {(unsigned char *)QUIC_ALPN_PASSIVE, sizeof QUIC_ALPN_PASSIVE - 1}};
    const gnutls_datum_t *offer = server ? alpn : &alpn[ep->passive ? 1 : 0];
    if ((rv = gnutls_alpn_set_protocols(c->tls, offer, server ? 2 : 1, GNUTLS_ALPN_MANDATORY)) != 0) {
        err_set(err, errlen, "gnutls_alpn_set_protocols: %s", gnutls_strerror(rv));
        return -1;
    }
    c->conn_ref.get_conn = conn_ref_get;
    c->conn_ref.user_data = c;
    gnutls_session_set_ptr(c->tls, &c->conn_ref);
    ngtcp2_conn_set_tls_native_handle(c->conn, c->tls);
    return 0;
}

/* The credential is built once per endpoint: our key pair as a raw public
 * key certificate, and the verify callback. */
static int ep_tls_init(quic_endpoint *ep, const quic_config *cfg, char *err, size_t errlen)
{
    gnutls_privkey_t priv = NULL;
    gnutls_pubkey_t pub = NULL;
    gnutls_pcert_st pcert;
    int have_pcert = 0, rv;
    const char *where = "";
    gnutls_datum_t x = {(unsigned char *)cfg->public_key, QUIC_KEY_BYTES};
    gnutls_datum_t k = {(unsigned char *)cfg->private_key, QUIC_KEY_BYTES};

    if ((rv = gnutls_priority_init2(&ep->prio, PRIORITY, &where, 0)) != 0) {
        ep->prio = NULL;
        err_set(err, errlen, "TLS priority string rejected at '%s': %s", where, gnutls_strerror(rv));
        return -1;
    }
    if ((rv = gnutls_certificate_allocate_credentials(&ep->cred)) != 0) {
        ep->cred = NULL;
        goto fail;
    }
    if ((rv = gnutls_privkey_init(&priv)) != 0) goto fail;
    if ((rv = gnutls_privkey_import_ecc_raw(priv, GNUTLS_ECC_CURVE_ED25519, &x, NULL, &k)) != 0)
        goto fail;
    if ((rv = gnutls_pubkey_init(&pub)) != 0) goto fail;
    if ((rv = gnutls_pubkey_import_privkey(pub, priv, 0, 0)) != 0) goto fail;
    /* A seed and a public key that do not belong together would fail every
     * handshake later with an obscure error; say it now. GnuTLS keeps the
     * public half as given, so only a signature shows whether they match. */
    {
        static const uint8_t probe[] = "llmesh key pair check";
        gnutls_datum_t msg = {(unsigned char *)probe, sizeof probe}, sig = {NULL, 0};
        rv = gnutls_privkey_sign_data2(priv, GNUTLS_SIGN_EDDSA_ED25519, 0, &msg, &sig);
        if (rv == 0) rv = gnutls_pubkey_verify_data2(pub, GNUTLS_SIGN_EDDSA_ED25519, 0, &msg, &sig);
        gnutls_free(sig.data);
        if (rv != 0) {
            err_set(err, errlen, "public key does not belong to the private key");
            gnutls_pubkey_deinit(pub);
            gnutls_privkey_deinit(priv);
            return -1;
        }
    }
    if ((rv = gnutls_pcert_import_rawpk(&pcert, pub, 0)) != 0) goto fail;
    pub = NULL; /* owned by pcert now */
    have_pcert = 1;
    if ((rv = gnutls_certificate_set_key(ep->cred, NULL, 0, &pcert, 1, priv)) != 0) goto fail;
    /* pcert's contents and priv belong to the credential from here on. */
    gnutls_certificate_set_verify_function(ep->cred, tls_verify_peer);
    return 0;
fail:
    err_set(err, errlen, "TLS credential setup: %s", gnutls_strerror(rv));
    if (have_pcert) gnutls_pcert_deinit(&pcert);
    if (pub) gnutls_pubkey_deinit(pub);
    if (priv) gnutls_privkey_deinit(priv);
    return -1;
}

/* ---- socket output ----------------------------------------------------------*/

static int send_one(quic_endpoint *ep, const struct sockaddr *to, socklen_t tolen,
                    const uint8_t *buf, size_t len, size_t seg)
{
    struct iovec iov = {(void *)buf, len};
    union {
        char buf[CMSG_SPACE(sizeof(uint16_t))];
        struct cmsghdr align;
    } ctl;
    struct msghdr mh;
    memset(&mh, 0, sizeof mh);
    mh.msg_name = (void *)to;
    mh.msg_namelen = tolen;
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    if (seg && seg < len) {
        memset(&ctl, 0, sizeof ctl);
        mh.msg_control = ctl.buf;
        mh.msg_controllen = sizeof ctl.buf;
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_UDP;
        cm->cmsg_type = UDP_SEGMENT;
        cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        uint16_t s16 = (uint16_t)seg;
        memcpy(CMSG_DATA(cm), &s16, sizeof s16);
    }
    ssize_t n;
    do n = sendmsg(ep->fd, &mh, 0);
    while (n < 0 && errno == EINTR);
    ep->stats.tx_calls++;
    return n < 0 ? -errno : 0;
}

/* Sends len bytes as datagrams of seg bytes (the last may be shorter), in
 * one GSO sendmsg when the kernel allows. A refused datagram is counted and
 * dropped: QUIC loss recovery resends what mattered. */
static void ep_send(quic_endpoint *ep, const struct sockaddr *to, socklen_t tolen,
                    const uint8_t *buf, size_t len, size_t seg)
{
    if (!seg || seg > len) seg = len;
    size_t count = (len + seg - 1) / seg;
    if (count > 1 && ep->gso) {
        int rv = send_one(ep, to, tolen, buf, len, seg);
        if (rv == 0) {
            ep->stats.tx_datagrams += count;
            ep->stats.tx_bytes += len;
            return;
        }
        if (rv != -EIO && rv != -EINVAL && rv != -EOPNOTSUPP && rv != -ENOPROTOOPT) {
            ep->stats.tx_errors += count;
            log_trace(MOD, "sendmsg (GSO): %s", strerror(-rv));
            return;
        }
        /* The device or kernel cannot segment: stop trying, send singly. */
        log_debug(MOD, "UDP GSO refused (%s); sending datagrams one by one", strerror(-rv));
        ep->gso = 0;
    }
    for (size_t off = 0; off < len; off += seg) {
        size_t l = len - off < seg ? len - off : seg;
        int rv = send_one(ep, to, tolen, buf + off, l, 0);
        if (rv == 0) {
            ep->stats.tx_datagrams++;
            ep->stats.tx_bytes += l;
        } else {
            ep->stats.tx_errors++;
            log_trace(MOD, "sendmsg: %s", strerror(-rv));
        }
    }
}

/* A connection's packets: to the socket, or one by one (no GSO) to the
 * virtual path's sender. Without a sender they are lost, which QUIC's loss
 * recovery and timeouts handle like any other loss. */
static void conn_send(quic_conn *c, const struct sockaddr *to, socklen_t tolen,
                      const uint8_t *buf, size_t len, size_t seg)
{
    quic_endpoint *ep = c->ep;
    c->tx_bytes += len;
    if (!c->vpath) {
        ep_send(ep, to, tolen, buf, len, seg);
        return;
    }
    if (!seg || seg > len) seg = len;
    for (size_t off = 0; off < len; off += seg) {
        size_t l = len - off < seg ? len - off : seg;
        ep->stats.vpath_tx++;
        if (ep->vsend) APP_CALL(ep, ep->vsend(ep->vsend_ctx, c->vpath, buf + off, l));
    }
}

/* ---- connection lifecycle ---------------------------------------------------*/

static void conn_mark_dirty(quic_conn *c)
{
    quic_endpoint *ep = c->ep;
    if (c->retired) return;
    if (!c->dirty) {
        c->dirty = 1;
        c->dirty_next = ep->dirty;
        ep->dirty = c;
    }
    /* Outside a top-level handler nobody will settle for us: ask the loop. */
    if (!ep->in_io) event_active(ep->flush_ev, EV_WRITE, 0);
}

static void conn_set_reason_from_peer(quic_conn *c)
{
    if (c->got_stateless_reset) {
        snprintf(c->reason, sizeof c->reason,
                 "stateless reset from peer (it restarted or lost the connection)");
        return;
    }
    ngtcp2_connection_close_error ce;
    ngtcp2_conn_get_connection_close_error(c->conn, &ce);
    /* The peer's reason text is untrusted: keep it short and printable. */
    char text[81];
    size_t n = 0;
    for (size_t i = 0; ce.reason && i < ce.reasonlen && n < sizeof text - 1; i++) {
        unsigned char ch = ce.reason[i];
        text[n++] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
    }
    text[n] = 0;
    if (ce.type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_APPLICATION) {
        if (n) snprintf(c->reason, sizeof c->reason, "closed by peer: %s", text);
        else snprintf(c->reason, sizeof c->reason, "closed by peer (code %llu)",
                      (unsigned long long)ce.error_code);
    } else if ((ce.error_code & ~(uint64_t)0xff) == NGTCP2_CRYPTO_ERROR) {
        snprintf(c->reason, sizeof c->reason,
                 "handshake rejected by peer (TLS alert %u%s)", (unsigned)(ce.error_code & 0xff),
                 (ce.error_code & 0xff) == 42 ? ": bad certificate, wrong key?" : "");
    } else if (ce.error_code == NGTCP2_NO_ERROR) {
        snprintf(c->reason, sizeof c->reason, "closed by peer%s%s", n ? ": " : "", text);
    } else {
        snprintf(c->reason, sizeof c->reason, "closed by peer: transport error 0x%llx%s%s",
                 (unsigned long long)ce.error_code, n ? " " : "", text);
    }
}

/* Maps an ngtcp2 error on read, write or expiry to how the connection ends. */
static void conn_on_ngtcp2_error(quic_conn *c, int rv)
{
    char msg[160];
    switch (rv) {
    case NGTCP2_ERR_DRAINING:
        conn_set_reason_from_peer(c);
        snprintf(msg, sizeof msg, "%s", c->reason);
        conn_terminate(c, CLOSE_NONE, 0, msg);
        return;
    case NGTCP2_ERR_IDLE_CLOSE:
        conn_terminate(c, CLOSE_NONE, 0, "idle timeout (peer silent)");
        return;
    case NGTCP2_ERR_HANDSHAKE_TIMEOUT:
        conn_terminate(c, CLOSE_NONE, 0, "handshake timed out (peer unreachable?)");
        return;
    case NGTCP2_ERR_DROP_CONN:
    case NGTCP2_ERR_RETRY:
        conn_terminate(c, CLOSE_NONE, 0, "connection dropped by protocol");
        return;
    case NGTCP2_ERR_RECV_VERSION_NEGOTIATION:
    case NGTCP2_ERR_VERSION_NEGOTIATION_FAILURE:
        conn_terminate(c, CLOSE_NONE, 0, "no QUIC version in common with peer");
        return;
    case NGTCP2_ERR_CRYPTO: {
        uint8_t alert = ngtcp2_conn_get_tls_alert(c->conn);
        if (c->tls_reason[0])
            snprintf(msg, sizeof msg, "handshake failed: %s", c->tls_reason);
        else
            snprintf(msg, sizeof msg, "handshake failed (TLS alert %u)", alert);
        conn_terminate(c, CLOSE_TLS_ALERT, alert, msg);
        return;
    }
    default:
        if (c->tls_reason[0]) snprintf(msg, sizeof msg, "handshake failed: %s", c->tls_reason);
        else snprintf(msg, sizeof msg, "QUIC error: %s", ngtcp2_strerror(rv));
        conn_terminate(c, CLOSE_LIBERR, (uint64_t)(int64_t)rv, msg);
        return;
    }
}

/* The one way a connection ends. Reports to the application at once:
 * on_close for each stream still attached, then conn_closed (for outgoing
 * connections, and incoming ones that became ready). Sending
 * CONNECTION_CLOSE and freeing wait for ep_settle. Idempotent. */
static void conn_terminate(quic_conn *c, int kind, uint64_t code, const char *reason)
{
    quic_endpoint *ep = c->ep;
    if (c->closing) return;
    c->closing = 1;
    c->close_kind = kind;
    c->close_code = code;
    snprintf(c->reason, sizeof c->reason, "%s", reason ? reason : "closed");
    if (c->ready || c->outgoing) {
        char a[64];
        log_debug(MOD, "connection with %s closed: %s",
                  addr_str((struct sockaddr *)&c->remote_app, a, sizeof a), c->reason);
    }
    conn_mark_dirty(c);
    /* Streams are never freed during this walk (frees wait for settle), and
     * no stream is attached after closing, so next pointers stay valid. */
    for (quic_stream *s = c->streams; s; s = s->next) {
        if (s->detached) continue;
        s->detached = 1;
        sendq_remove(s);
        if (s->cb.on_close) APP_CALL(ep, s->cb.on_close(s->user, s, c->reason));
    }
    if ((c->ready || c->outgoing) && ep->cb.conn_closed)
        APP_CALL(ep, ep->cb.conn_closed(ep->user, c, c->reason));
}

static void conn_send_close(quic_conn *c)
{
    quic_endpoint *ep = c->ep;
    if (!c->conn || ngtcp2_conn_is_in_closing_period(c->conn) ||
        ngtcp2_conn_is_in_draining_period(c->conn))
        return;
    ngtcp2_connection_close_error ce;
    ngtcp2_connection_close_error_default(&ce);
    switch (c->close_kind) {
    case CLOSE_APP: {
        size_t n = strlen(c->reason);
        if (n > 64) n = 64;
        ngtcp2_connection_close_error_set_application_error(&ce, c->close_code,
                                                            (const uint8_t *)c->reason, n);
        break;
    }
    case CLOSE_TLS_ALERT:
        ngtcp2_connection_close_error_set_transport_error_tls_alert(&ce, (uint8_t)c->close_code,
                                                                    NULL, 0);
        break;
    case CLOSE_LIBERR:
        ngtcp2_connection_close_error_set_transport_error_liberr(&ce, (int)(int64_t)c->close_code,
                                                                 NULL, 0);
        break;
    default:
        return;
    }
    ngtcp2_path_storage ps;
    ngtcp2_path_storage_zero(&ps);
    ngtcp2_pkt_info pi;
    size_t max = ngtcp2_conn_get_max_tx_udp_payload_size(c->conn);
    if (max > QUIC_TX_BUF) max = QUIC_TX_BUF;
    ngtcp2_ssize n = ngtcp2_conn_write_connection_close(c->conn, &ps.path, &pi, ep->txbuf, max,
                                                        &ce, quic_now());
    if (n > 0) conn_send(c, (struct sockaddr *)&c->remote, c->remote_len, ep->txbuf, (size_t)n, 0);
}

/* Takes a closing connection out of routing and timers; it is freed at the
 * end of ep_settle. */
static void conn_retire(quic_conn *c)
{
    quic_endpoint *ep = c->ep;
    if (c->retired) return;
    c->retired = 1;
    for (size_t i = 0; i < c->ncids; i++)
        cid_map_del(&ep->map, c->cids[i].data, c->cids[i].datalen, c);
    c->ncids = 0;
    if (c->timer) event_del(c->timer);
    if (c->half_open) {
        c->half_open = 0;
        ep->nhalf_open--;
    }
    if (c->prev) c->prev->next = c->next;
    else ep->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    ep->nconns--;
    c->prev = NULL;
    c->next = ep->reap;
    ep->reap = c;
}

static void conn_free(quic_conn *c)
{
    if (c->ep->now_conn == c) c->ep->now_conn = NULL; /* the now timer, if set, walks them all */
    if (c->timer) event_free(c->timer);
    if (c->conn) ngtcp2_conn_del(c->conn);
    if (c->tls) gnutls_deinit(c->tls);
    quic_stream *lists[2] = {c->streams, c->dead_streams};
    for (int i = 0; i < 2; i++) {
        quic_stream *s = lists[i];
        while (s) {
            quic_stream *n = s->next;
            stream_free(s);
            s = n;
        }
    }
    free(c->cids);
    free(c);
}

/* Frees a connection that never got linked into the endpoint. */
static void conn_discard(quic_conn *c)
{
    for (size_t i = 0; i < c->ncids; i++)
        cid_map_del(&c->ep->map, c->cids[i].data, c->cids[i].datalen, c);
    conn_free(c);
}

static quic_conn *conn_alloc(quic_endpoint *ep, const struct sockaddr_storage *remote,
                             socklen_t remote_len)
{
    quic_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->ep = ep;
    memcpy(&c->remote, remote, remote_len);
    c->remote_len = remote_len;
    addr_to_app(&c->remote, remote_len, &c->remote_app, &c->remote_app_len);
    c->hs_deadline = quic_now() + ep->handshake_timeout;
    return c;
}

static void conn_on_timer(evutil_socket_t fd, short what, void *arg);

/* Links a fully built connection into the endpoint. On failure nothing is
 * linked; conn_discard undoes the rest. */
static int conn_attach(quic_conn *c, const ngtcp2_cid *scid)
{
    quic_endpoint *ep = c->ep;
    c->timer = evtimer_new(ep->base, conn_on_timer, c);
    if (!c->timer) return -1;
    c->timer_at = UINT64_MAX;
    if (conn_add_cid(c, scid) != 0) return -1;
    /* Keep-alives hold NAT bindings open and keep idle mesh links from
     * timing out; a third of the idle timeout survives one lost PING. */
    ngtcp2_conn_set_keep_alive_timeout(c->conn, ep->idle_timeout / 3);
    c->next = ep->conns;
    if (ep->conns) ep->conns->prev = c;
    ep->conns = c;
    ep->nconns++;
    return 0;
}

/* Builds c's ngtcp2 connection and TLS session and links it into the
 * endpoint: server side when hd (the client's first Initial) is given,
 * client side otherwise. On failure the caller conn_discards c. */
static int conn_setup(quic_conn *c, const ngtcp2_pkt_hd *hd, char *err, size_t errlen)
{
    quic_endpoint *ep = c->ep;
    ngtcp2_cid scid, dcid;
    scid.datalen = QUIC_CIDLEN;
    do random_bytes(scid.data, QUIC_CIDLEN);
    while (cid_map_get(&ep->map, scid.data, QUIC_CIDLEN));
    ngtcp2_callbacks cbs;
    ngtcp2_settings settings;
    ngtcp2_transport_params params;
    fill_callbacks(&cbs, hd != NULL);
    fill_settings(ep, &settings);
    fill_params(ep, &params);
    ngtcp2_path path = {
        {(ngtcp2_sockaddr *)&ep->local, ep->local_len},
        {(ngtcp2_sockaddr *)&c->remote, c->remote_len},
        NULL,
    };
    int rv;
    if (hd) {
        params.original_dcid = hd->dcid;
        params.stateless_reset_token_present = 1;
        ngtcp2_crypto_generate_stateless_reset_token(params.stateless_reset_token,
                                                     ep->reset_secret, sizeof ep->reset_secret,
                                                     &scid);
        rv = ngtcp2_conn_server_new(&c->conn, &hd->scid, &scid, &path, hd->version, &cbs,
                                    &settings, &params, NULL, c);
    } else {
        dcid.datalen = QUIC_CIDLEN;
        random_bytes(dcid.data, QUIC_CIDLEN);
        rv = ngtcp2_conn_client_new(&c->conn, &dcid, &scid, &path, NGTCP2_PROTO_VER_V1, &cbs,
                                    &settings, &params, NULL, c);
    }
    if (rv != 0) {
        c->conn = NULL;
        err_set(err, errlen, "ngtcp2 connection: %s", ngtcp2_strerror(rv));
        return -1;
    }
    if (conn_tls_init(c, hd != NULL, err, errlen) != 0) return -1;
    if (conn_attach(c, &scid) != 0) {
        err_set(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

/* ---- writing ----------------------------------------------------------------*/

static quic_stream *sendq_next(quic_conn *c, unsigned pass, int data_ok)
{
    for (quic_stream *s = c->sq_head; s; s = s->sq_next) {
        if (s->blocked_pass == pass) continue;
        if (!data_ok && s->sent_off < s->end_off) continue;
        return s;
    }
    return NULL;
}

/* Writes what ngtcp2 will let us send now: up to the send quantum, in GSO
 * batches of equal-sized datagrams. Streams take turns packet by packet. */
static void conn_write(quic_conn *c)
{
    quic_endpoint *ep = c->ep;
    ngtcp2_tstamp ts = quic_now();
    size_t pktmax = ngtcp2_conn_get_max_tx_udp_payload_size(c->conn);
    if (pktmax > QUIC_TX_BUF / 2) pktmax = QUIC_TX_BUF / 2;
    size_t max_pkts = ngtcp2_conn_get_send_quantum(c->conn) / pktmax;
    if (max_pkts < 1) max_pkts = 1;
    if (max_pkts > QUIC_MAX_PKTS_PER_WRITE) max_pkts = QUIC_MAX_PKTS_PER_WRITE;

    ngtcp2_path_storage ps;
    ngtcp2_path_storage_zero(&ps);
    ngtcp2_pkt_info pi;
    struct sockaddr_storage bto; /* destination of the batch being built */
    socklen_t btolen = 0;
    size_t boff = 0, bstart = 0, bseg = 0, bsegs = 0, bmax = 0, npkts = 0;
    unsigned pass = ++c->write_pass;
    quic_stream *s = NULL;

    for (;;) {
        ngtcp2_vec vec[16];
        size_t nvec = 0;
        uint64_t want = 0;
        int64_t sid = -1;
        uint32_t flags = NGTCP2_WRITE_STREAM_FLAG_NONE;
        if (!s) s = sendq_next(c, pass, ngtcp2_conn_get_max_data_left(c->conn) > 0);
        if (s) {
            sid = s->id;
            nvec = stream_vecs(s, vec, 16, &want);
            flags = NGTCP2_WRITE_STREAM_FLAG_MORE;
            if (s->fin_requested && !s->fin_sent && s->sent_off + want == s->end_off)
                flags |= NGTCP2_WRITE_STREAM_FLAG_FIN;
        }
        ngtcp2_ssize ndatalen = -1;
        ngtcp2_ssize n = ngtcp2_conn_writev_stream(c->conn, &ps.path, &pi, ep->txbuf + boff,
                                                   pktmax, &ndatalen, flags, sid, vec, nvec, ts);
        if (s && ndatalen >= 0) {
            stream_advance(s, (size_t)ndatalen);
            if ((flags & NGTCP2_WRITE_STREAM_FLAG_FIN) && s->sent_off == s->end_off)
                s->fin_sent = 1;
        }
        if (n < 0) {
            if (n == NGTCP2_ERR_WRITE_MORE) {
                /* Room left in the packet: offer the next stream. A stream
                 * that made no progress sits out the rest of this pass. */
                if (s && !stream_has_pending(s)) sendq_remove(s);
                else if (s && ndatalen <= 0) s->blocked_pass = pass;
                s = NULL;
                continue;
            }
            if (n == NGTCP2_ERR_STREAM_DATA_BLOCKED) {
                if (s) s->blocked_pass = pass;
                s = NULL;
                continue;
            }
            if (n == NGTCP2_ERR_STREAM_SHUT_WR || n == NGTCP2_ERR_STREAM_NOT_FOUND) {
                if (s) sendq_remove(s);
                s = NULL;
                continue;
            }
            if (bsegs) conn_send(c, (struct sockaddr *)&bto, btolen, ep->txbuf + bstart, boff - bstart, bseg);
            if (ep->foreign) c->write_error = (int)n; /* callbacks only on the loop: conn_settle */
            else conn_on_ngtcp2_error(c, (int)n);
            return;
        }
        if (s) {
            /* Round robin: whoever just sent goes to the back of the queue. */
            if (!stream_has_pending(s)) {
                sendq_remove(s);
            } else if (ndatalen >= 0) {
                sendq_remove(s);
                sendq_add(s);
            }
            s = NULL;
        }
        if (n == 0) break;

        /* A GSO batch is equal-sized datagrams to one address, only the last
         * one shorter. Anything else starts a new batch. */
        int same_dest = bsegs && addr_eq(ps.path.remote.addr, ps.path.remote.addrlen,
                                         (struct sockaddr *)&bto, btolen);
        if (bsegs && ((size_t)n > bseg || !same_dest)) {
            conn_send(c, (struct sockaddr *)&bto, btolen, ep->txbuf + bstart, boff - bstart, bseg);
            bstart = boff;
            bsegs = 0;
        }
        if (!bsegs) {
            bseg = (size_t)n;
            bmax = QUIC_GSO_MAX_BYTES / bseg;
            if (bmax > QUIC_GSO_MAX_SEGS) bmax = QUIC_GSO_MAX_SEGS;
            if (!ep->gso) bmax = 1;
            memcpy(&bto, ps.path.remote.addr, ps.path.remote.addrlen);
            btolen = ps.path.remote.addrlen;
        }
        boff += (size_t)n;
        bsegs++;
        npkts++;
        if ((size_t)n < bseg || bsegs >= bmax || boff + pktmax > QUIC_TX_BUF) {
            conn_send(c, (struct sockaddr *)&bto, btolen, ep->txbuf + bstart, boff - bstart, bseg);
            boff = bstart = 0;
            bsegs = 0;
        }
        if (npkts >= max_pkts) break;
    }
    if (bsegs) conn_send(c, (struct sockaddr *)&bto, btolen, ep->txbuf + bstart, boff - bstart, bseg);
    /* Pacing: ngtcp2 folds the next send time into get_expiry. Not during
     * the handshake: ngtcp2 0.12 paces the first flight at cwnd/initial_rtt
     * (333 ms), which held the client's Finished back ~22 ms after its
     * Initial and added that to every connection setup on a LAN. The
     * handshake is a few packets; pacing starts with a real RTT sample.
     * Nor after a write of a few packets (a hidden state of one pipeline
     * hop, ACKs): with BBR the pacing time it sets held the next small
     * frame back, 3.6 KB ping-pongs on loopback took 27-35 us instead of
     * 17-18 (docs/quic.md, "Congestion control"); bulk writes fill their
     * quantum and stay paced. */
    if (c->ready && npkts > QUIC_UNPACED_PKTS) ngtcp2_conn_update_pkt_tx_time(c->conn, ts);
}

static void conn_arm_timer(quic_conn *c)
{
    quic_endpoint *ep = c->ep;
    ngtcp2_tstamp exp = ngtcp2_conn_get_expiry(c->conn);
    /* Our own handshake deadline as a backstop to ngtcp2's. */
    if (!c->ready && c->hs_deadline < exp) exp = c->hs_deadline;
    c->timer_at = exp;
    if (ep->now_timer_at && ep->now_conn == c) { /* its own timer covers it again */
        precise_timer_stop(ep->now_timer);
        ep->now_timer_at = 0;
        ep->now_conn = NULL;
    }
    if (exp == UINT64_MAX) {
        event_del(c->timer);
        return;
    }
    ngtcp2_tstamp t = quic_now();
    uint64_t d = exp > t ? exp - t : 0;
    uint64_t us = (d + 999) / 1000; /* round up: firing early only spins */
    struct timeval tv = {(time_t)(us / 1000000), (suseconds_t)(us % 1000000)};
    evtimer_add(c->timer, &tv);
}

static void conn_apply_resets(quic_conn *c)
{
    quic_stream *next;
    for (quic_stream *s = c->streams; s && c->npending_resets; s = next) {
        next = s->next; /* shutdown may close s, which moves it to dead_streams */
        if (!s->reset_pending) continue;
        s->reset_pending = 0;
        c->npending_resets--;
        ngtcp2_conn_shutdown_stream(c->conn, s->id, s->reset_code);
    }
}

/* Everything deferred for one connection, run where no ngtcp2 call and no
 * application callback is on the stack. */
static void conn_settle(quic_conn *c)
{
    while (c->dead_streams) {
        quic_stream *s = c->dead_streams;
        c->dead_streams = s->next;
        stream_free(s);
    }
    if (c->retired) return;
    if (c->closing) {
        conn_send_close(c);
        conn_retire(c);
        return;
    }
    if (c->write_error) {
        int rv = c->write_error;
        c->write_error = 0;
        conn_on_ngtcp2_error(c, rv); /* closing and dirty: ep_settle comes back to it */
        return;
    }
    if (c->npending_resets) conn_apply_resets(c);
    conn_write(c);
    if (c->closing) {
        conn_mark_dirty(c); /* conn_write failed: settle again to retire */
        return;
    }
    const ngtcp2_path *p = ngtcp2_conn_get_path(c->conn);
    if (!addr_eq(p->remote.addr, p->remote.addrlen, (struct sockaddr *)&c->remote, c->remote_len)) {
        /* The peer moved (NAT rebinding) and ngtcp2 validated the path. */
        memcpy(&c->remote, p->remote.addr, p->remote.addrlen);
        c->remote_len = p->remote.addrlen;
        addr_to_app(&c->remote, c->remote_len, &c->remote_app, &c->remote_app_len);
    }
    conn_arm_timer(c);
}

static void ep_settle(quic_endpoint *ep)
{
    int was = ep->in_io;
    ep->in_io = 1;
    while (ep->dirty) {
        quic_conn *c = ep->dirty;
        ep->dirty = c->dirty_next;
        c->dirty = 0;
        conn_settle(c);
    }
    while (ep->reap) {
        quic_conn *c = ep->reap;
        ep->reap = c->next;
        conn_free(c);
    }
    ep->in_io = was;
}

static void conn_on_timer(evutil_socket_t fd, short what, void *arg)
{
    quic_conn *c = arg;
    quic_endpoint *ep = c->ep;
    EP_LOCK(ep);
    if (c->closing) {
        EP_UNLOCK(ep);
        return;
    }
    ep->in_io = 1;
    ngtcp2_tstamp t = quic_now();
    int rv = ngtcp2_conn_handle_expiry(c->conn, t);
    if (rv != 0) conn_on_ngtcp2_error(c, rv);
    else if (!c->ready && t >= c->hs_deadline)
        conn_on_ngtcp2_error(c, NGTCP2_ERR_HANDSHAKE_TIMEOUT);
    conn_mark_dirty(c);
    ep_settle(ep);
    ep->in_io = 0;
    EP_UNLOCK(ep);
}

static void ep_on_flush(evutil_socket_t fd, short what, void *arg)
{
    quic_endpoint *ep = arg;
    EP_LOCK(ep);
    ep->in_io = 1;
    ep_settle(ep);
    ep->in_io = 0;
    EP_UNLOCK(ep);
}

/* An expiry quic_stream_write_now set (loss detection for what it sent)
 * came before the connection's own timer: handled as that timer would,
 * and the connection's timer set again. */
static void ep_on_now_timer(void *arg)
{
    quic_endpoint *ep = arg;
    EP_LOCK(ep);
    ep->now_timer_at = 0;
    ep->now_conn = NULL;
    ep->in_io = 1;
    ngtcp2_tstamp t = quic_now();
    for (quic_conn *c = ep->conns; c; c = c->next) {
        if (c->closing || c->retired || !c->conn) continue;
        ngtcp2_tstamp exp = ngtcp2_conn_get_expiry(c->conn);
        if (exp >= c->timer_at) continue;
        if (exp <= t) {
            int rv = ngtcp2_conn_handle_expiry(c->conn, t);
            if (rv != 0) conn_on_ngtcp2_error(c, rv);
        }
        conn_mark_dirty(c); /* settle writes what is due and sets its timer */
    }
    ep_settle(ep);
    ep->in_io = 0;
    EP_UNLOCK(ep);
}

/* ---- reading ----------------------------------------------------------------*/

/* Token bucket for unsolicited answers (stateless reset, version
 * negotiation), so garbage cannot turn us into a packet cannon. */
static int ep_response_allowed(quic_endpoint *ep)
{
    ngtcp2_tstamp t = quic_now();
    if (t - ep->resp_ts >= NGTCP2_SECONDS) {
        ep->resp_ts = t;
        ep->resp_count = 0;
    }
    return ep->resp_count++ < QUIC_RESPONSES_PER_SEC;
}

static void ep_send_version_negotiation(quic_endpoint *ep, const struct sockaddr *to,
                                        socklen_t tolen, const ngtcp2_version_cid *vc,
                                        size_t pktlen)
{
    /* Only a padded client Initial (>= 1200 bytes) deserves an answer. */
    if (pktlen < 1200 || !ep_response_allowed(ep)) return;
    uint8_t buf[1024];
    uint8_t r;
    uint32_t sv[] = {NGTCP2_PROTO_VER_V1};
    random_bytes(&r, 1);
    ngtcp2_ssize n = ngtcp2_pkt_write_version_negotiation(buf, sizeof buf, r, vc->scid, vc->scidlen,
                                                          vc->dcid, vc->dcidlen, sv, 1);
    if (n <= 0) return;
    ep_send(ep, to, tolen, buf, (size_t)n, 0);
    ep->stats.version_negotiations_sent++;
}

/* A short-header packet for a connection id we do not know: perhaps we
 * restarted and the peer still talks to the old connection. The reset
 * secret is derived from our long-term key, so the tokens we hand out
 * survive a restart and the peer learns at once that the connection is gone
 * instead of waiting for its idle timeout. */
static void ep_send_stateless_reset(quic_endpoint *ep, const struct sockaddr *to,
                                    socklen_t tolen, const uint8_t *dcid, size_t pktlen)
{
    /* One byte shorter than the trigger (RFC 9000 10.3), so resets shrink
     * and a loop between two endpoints dies out; a reset is at least 21
     * bytes (ngtcp2 writes the random bytes, first byte included, then the
     * token). A keep-alive PING is 36 bytes. */
    size_t min_reset = NGTCP2_MIN_STATELESS_RESET_RANDLEN + NGTCP2_STATELESS_RESET_TOKENLEN;
    if (pktlen < min_reset + 1 || !ep_response_allowed(ep)) return;
    size_t len = pktlen - 1 > 43 ? 43 : pktlen - 1;
    size_t randlen = len - NGTCP2_STATELESS_RESET_TOKENLEN;
    uint8_t token[NGTCP2_STATELESS_RESET_TOKENLEN], rnd[64], buf[64];
    ngtcp2_cid cid;
    ngtcp2_cid_init(&cid, dcid, QUIC_CIDLEN);
    if (ngtcp2_crypto_generate_stateless_reset_token(token, ep->reset_secret,
                                                     sizeof ep->reset_secret, &cid) != 0)
        return;
    random_bytes(rnd, randlen);
    ngtcp2_ssize n = ngtcp2_pkt_write_stateless_reset(buf, sizeof buf, token, rnd, randlen);
    if (n <= 0 || (size_t)n >= pktlen) return;
    ep_send(ep, to, tolen, buf, (size_t)n, 0);
    ep->stats.stateless_resets_sent++;
}

/* A stateless reset arrives with a random DCID, so routing by CID cannot
 * find its connection: it ends with the reset token the peer gave us for
 * one of the DCIDs we send to. Only connections to the sender's address
 * are candidates; the scan runs for unroutable short packets only. */
static quic_conn *ep_match_stateless_reset(quic_endpoint *ep, const struct sockaddr_storage *from,
                                           socklen_t fromlen, const uint8_t *pkt, size_t len)
{
    if (len < NGTCP2_MIN_STATELESS_RESET_RANDLEN + NGTCP2_STATELESS_RESET_TOKENLEN) return NULL;
    const uint8_t *token = pkt + len - NGTCP2_STATELESS_RESET_TOKENLEN;
    ngtcp2_cid_token dcids[16];
    for (quic_conn *c = ep->conns; c; c = c->next) {
        if (c->closing || c->vpath || !addr_eq((const struct sockaddr *)from, fromlen,
                                   (const struct sockaddr *)&c->remote, c->remote_len))
            continue;
        if (ngtcp2_conn_get_num_active_dcid(c->conn) > sizeof dcids / sizeof dcids[0]) continue;
        size_t n = ngtcp2_conn_get_active_dcid(c->conn, dcids);
        for (size_t i = 0; i < n; i++)
            if (dcids[i].token_present &&
                memcmp(dcids[i].token, token, NGTCP2_STATELESS_RESET_TOKENLEN) == 0)
                return c;
    }
    return NULL;
}

/* A client Initial for no known connection: make a server connection. */
static quic_conn *ep_accept(quic_endpoint *ep, const struct sockaddr_storage *from,
                            socklen_t fromlen, const uint8_t *pkt, size_t len, uint32_t vpath)
{
    ngtcp2_pkt_hd hd;
    if (ngtcp2_accept(&hd, pkt, len) != 0) return NULL; /* also: Retry wanted; we never do Retry */
    if (ep->freeing) return NULL;
    if (ep->nconns >= ep->limits.max_conns || ep->nhalf_open >= ep->limits.max_half_open) {
        ep->stats.conns_refused++;
        return NULL;
    }
    if (!vpath) {
        /* O(connections), bounded by limits.max_conns, and only for Initials
         * that would create a connection. */
        size_t same = 0, same_half = 0;
        for (const quic_conn *o = ep->conns; o; o = o->next)
            if (!o->vpath && sockaddr_same_ip(&o->remote, from)) {
                same++;
                same_half += (size_t)o->half_open;
            }
        if (same >= ep->limits.max_conns_per_addr || same_half >= ep->limits.max_half_open_per_addr) {
            ep->stats.conns_refused++;
            ep->stats.conns_refused_addr++;
            return NULL;
        }
    }
    quic_conn *c = conn_alloc(ep, from, fromlen);
    if (!c) return NULL;
    c->vpath = vpath;
    char err[128] = "out of memory";
    if (conn_setup(c, &hd, err, sizeof err) != 0) {
        log_debug(MOD, "incoming connection setup failed: %s", err);
        conn_discard(c);
        return NULL;
    }
    /* The client keeps using its first DCID until it hears from us. */
    conn_add_cid(c, &hd.dcid);
    c->half_open = 1;
    ep->nhalf_open++;
    ep->stats.conns_accepted++;
    if (log_enabled(LOG_DEBUG)) {
        char a[64];
        if (vpath) log_debug(MOD, "incoming connection on virtual path %u", (unsigned)vpath);
        else log_debug(MOD, "incoming connection from %s",
                       addr_str((struct sockaddr *)&c->remote_app, a, sizeof a));
    }
    return c;
}

/* One datagram from the socket (vpath 0) or one packet from a virtual path
 * (from is then the path's made-up address). */
static void ep_handle_datagram(quic_endpoint *ep, const struct sockaddr_storage *from,
                               socklen_t fromlen, const uint8_t *pkt, size_t len, uint32_t vpath)
{
    if (vpath) {
        ep->stats.vpath_rx++;
    } else {
        ep->stats.rx_datagrams++;
        ep->stats.rx_bytes += len;
    }
    ngtcp2_version_cid vc;
    int rv = ngtcp2_pkt_decode_version_cid(&vc, pkt, len, QUIC_CIDLEN);
    if (rv == NGTCP2_ERR_VERSION_NEGOTIATION && vpath) rv = NGTCP2_ERR_INVALID_ARGUMENT;
    if (rv == NGTCP2_ERR_VERSION_NEGOTIATION) {
        ep_send_version_negotiation(ep, (const struct sockaddr *)from, fromlen, &vc, len);
        ep->stats.rx_dropped++;
        return;
    }
    if (rv != 0) {
        ep->stats.rx_dropped++;
        return;
    }
    int long_header = (pkt[0] & 0x80) != 0;
    quic_conn *c = cid_map_get(&ep->map, vc.dcid, vc.dcidlen);
    if (!c) {
        if (vpath) {
            /* No unsolicited answers on a virtual path: the relay would
             * carry them, and a reset there could only end our own
             * connections' peers' attempts. */
            if (long_header && vc.version == NGTCP2_PROTO_VER_V1)
                c = ep_accept(ep, from, fromlen, pkt, len, vpath);
        } else if (!long_header) {
            quic_conn *reset = ep_match_stateless_reset(ep, from, fromlen, pkt, len);
            if (reset) {
                /* RFC 9000 10.3.1: straight to draining, send nothing. */
                reset->got_stateless_reset = 1;
                conn_set_reason_from_peer(reset);
                char msg[160];
                snprintf(msg, sizeof msg, "%s", reset->reason);
                conn_terminate(reset, CLOSE_NONE, 0, msg);
                return;
            }
            if (vc.dcidlen == QUIC_CIDLEN)
                ep_send_stateless_reset(ep, (const struct sockaddr *)from, fromlen, vc.dcid, len);
        } else if (vc.version == NGTCP2_PROTO_VER_V1) {
            c = ep_accept(ep, from, fromlen, pkt, len, 0);
        }
        if (!c) {
            ep->stats.rx_dropped++;
            return;
        }
    }
    /* A connection lives on one path: the socket and each virtual path are
     * separate worlds (no migration between them). */
    if (c->closing || c->vpath != vpath) {
        ep->stats.rx_dropped++;
        return;
    }
    ngtcp2_path path = {
        {(ngtcp2_sockaddr *)&ep->local, ep->local_len},
        {(ngtcp2_sockaddr *)from, fromlen},
        NULL,
    };
    ngtcp2_pkt_info pi = {0};
    int fresh = !c->outgoing && !c->got_crypto;
    c->rx_bytes += len;
    rv = ngtcp2_conn_read_pkt(c->conn, &path, &pi, pkt, len, quic_now());
    if (rv != 0) {
        log_trace(MOD, "read_pkt: %s", ngtcp2_strerror(rv));
        conn_on_ngtcp2_error(c, rv);
    } else if (fresh && !c->got_crypto) {
        /* An "Initial" that passed ngtcp2_accept but decrypted to nothing
         * is noise (or a spoof): drop the connection now rather than hold a
         * half-open slot until the handshake timeout. A real client's first
         * datagram always carries the start of its ClientHello. */
        ep->stats.rx_dropped++;
        conn_terminate(c, CLOSE_NONE, 0, "first packet did not decrypt");
    }
    conn_mark_dirty(c);
}

static void ep_on_readable(evutil_socket_t fd, short what, void *arg)
{
    quic_endpoint *ep = arg;
    EP_LOCK(ep);
    ep->in_io = 1;
    for (int i = 0; i < QUIC_RX_BATCH; i++) {
        struct sockaddr_storage from;
        struct iovec iov = {ep->rxbuf, QUIC_RX_BUF};
        union {
            char buf[CMSG_SPACE(sizeof(int))];
            struct cmsghdr align;
        } ctl;
        struct msghdr mh;
        memset(&mh, 0, sizeof mh);
        mh.msg_name = &from;
        mh.msg_namelen = sizeof from;
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        mh.msg_control = ctl.buf;
        mh.msg_controllen = sizeof ctl.buf;
        ssize_t n = recvmsg(ep->fd, &mh, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                log_debug(MOD, "recvmsg: %s", strerror(errno));
            break;
        }
        ep->stats.rx_calls++;
        if ((mh.msg_flags & MSG_TRUNC) || n == 0) {
            ep->stats.rx_dropped++;
            continue;
        }
        size_t seg = (size_t)n;
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
            if (cm->cmsg_level == SOL_UDP && cm->cmsg_type == UDP_GRO) {
                int g;
                memcpy(&g, CMSG_DATA(cm), sizeof g);
                if (g > 0) seg = (size_t)g;
            }
        }
        for (size_t off = 0; off < (size_t)n; off += seg) {
            size_t l = (size_t)n - off < seg ? (size_t)n - off : seg;
            ep_handle_datagram(ep, &from, mh.msg_namelen, ep->rxbuf + off, l, 0);
        }
        /* Answer (ACKs, data) after each GRO batch rather than after the
         * whole loop, so the peer's window keeps moving. */
        ep_settle(ep);
    }
    ep_settle(ep);
    ep->in_io = 0;
    EP_UNLOCK(ep);
}

/* ---- endpoint ---------------------------------------------------------------*/

static int ep_socket(quic_endpoint *ep, const quic_config *cfg, char *err, size_t errlen)
{
    struct addrinfo hints, *res = NULL;
    char port[8];
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(port, sizeof port, "%u", (unsigned)cfg->port);
    const char *host = cfg->bind_host && *cfg->bind_host ? cfg->bind_host : "0.0.0.0";
    int rv = getaddrinfo(host, port, &hints, &res);
    if (rv != 0 || !res) {
        err_set(err, errlen, "cannot resolve bind address '%s': %s", host, gai_strerror(rv));
        return -1;
    }
    ep->family = res->ai_family;
    ep->fd = socket(res->ai_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (ep->fd < 0) {
        err_set(err, errlen, "socket: %s", strerror(errno));
        freeaddrinfo(res);
        return -1;
    }
    int one = 1, zero = 0, buf = QUIC_SOCK_BUF;
    if (ep->family == AF_INET6) {
        /* Dual stack: "::" also serves IPv4 peers (as v4-mapped). */
        setsockopt(ep->fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        int pmtu = IPV6_PMTUDISC_DO;
        setsockopt(ep->fd, IPPROTO_IPV6, IPV6_MTU_DISCOVER, &pmtu, sizeof pmtu);
    }
    /* Don't-fragment, so ngtcp2's path MTU probes mean something. */
    int pmtu4 = IP_PMTUDISC_DO;
    setsockopt(ep->fd, IPPROTO_IP, IP_MTU_DISCOVER, &pmtu4, sizeof pmtu4);
    /* Big buffers absorb bursts; FORCE needs CAP_NET_ADMIN, else the plain
     * option is capped by net.core.[rw]mem_max. */
    if (setsockopt(ep->fd, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof buf) != 0)
        setsockopt(ep->fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
    if (setsockopt(ep->fd, SOL_SOCKET, SO_SNDBUFFORCE, &buf, sizeof buf) != 0)
        setsockopt(ep->fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
    if (bind(ep->fd, res->ai_addr, res->ai_addrlen) != 0) {
        err_set(err, errlen, "cannot bind UDP %s port %u: %s", host, (unsigned)cfg->port,
                strerror(errno));
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    ep->local_len = sizeof ep->local;
    if (getsockname(ep->fd, (struct sockaddr *)&ep->local, &ep->local_len) != 0) {
        err_set(err, errlen, "getsockname: %s", strerror(errno));
        return -1;
    }
    /* GSO: asking for the option's value tells whether the kernel knows it
     * (Linux >= 4.18). A device that cannot do it is caught on first send. */
    int val = 0;
    socklen_t vlen = sizeof val;
    ep->gso = getsockopt(ep->fd, SOL_UDP, UDP_SEGMENT, &val, &vlen) == 0;
    ep->gro = setsockopt(ep->fd, SOL_UDP, UDP_GRO, &one, sizeof one) == 0;
    return 0;
}

quic_endpoint *quic_endpoint_new(struct event_base *base, const quic_config *cfg,
                                 const quic_endpoint_callbacks *cb, void *user,
                                 char *err, size_t errlen)
{
    if (!base || !cfg || !cb) {
        err_set(err, errlen, "quic_endpoint_new: missing argument");
        return NULL;
    }
    quic_endpoint *ep = calloc(1, sizeof *ep);
    if (!ep) {
        err_set(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&ep->mu, &attr);
    pthread_mutexattr_destroy(&attr);
    ep->fd = -1;
    ep->base = base;
    ep->cb = *cb;
    ep->user = user;
    memcpy(ep->public_key, cfg->public_key, QUIC_KEY_BYTES);
    ep->passive = cfg->passive;
    ep->limits.max_conns = cfg->limits.max_conns ? cfg->limits.max_conns : QUIC_DEFAULT_MAX_CONNS;
    ep->limits.max_half_open = cfg->limits.max_half_open ? cfg->limits.max_half_open : QUIC_DEFAULT_MAX_HALF_OPEN;
    ep->limits.max_conns_per_addr =
        cfg->limits.max_conns_per_addr ? cfg->limits.max_conns_per_addr : QUIC_DEFAULT_MAX_CONNS_PER_ADDR;
    ep->limits.max_half_open_per_addr =
        cfg->limits.max_half_open_per_addr ? cfg->limits.max_half_open_per_addr : QUIC_DEFAULT_MAX_HALF_OPEN_PER_ADDR;
    ep->handshake_timeout =
        (ngtcp2_duration)(cfg->handshake_timeout_ms ? cfg->handshake_timeout_ms : 10000) *
        NGTCP2_MILLISECONDS;
    ep->idle_timeout = (ngtcp2_duration)(cfg->idle_timeout_ms ? cfg->idle_timeout_ms : 30000) *
                       NGTCP2_MILLISECONDS;
    /* Congestion control: BBR. Over a 1 Gbit/s link with a 5 ms queue
     * (tbf), a tensor fetch ran at a median of 86 MB/s with BBR against 64
     * with cubic, and a small frame on another stream of the connection
     * waited less behind it (docs/quic.md, "Congestion control"); cubic
     * fills the queue until it drops, then halves. (Its pacing cost small
     * frames ~8 us per round trip: see conn_write for why no longer.) The other
     * algorithms of ngtcp2 stay reachable for comparing them:
     * LLMESH_QUIC_CC=cubic|reno|bbr2 (read once per endpoint). */
    const char *cc = getenv("LLMESH_QUIC_CC");
    ep->cc_algo = !cc                   ? NGTCP2_CC_ALGO_BBR
                  : !strcmp(cc, "cubic") ? NGTCP2_CC_ALGO_CUBIC
                  : !strcmp(cc, "bbr2")  ? NGTCP2_CC_ALGO_BBR2
                  : !strcmp(cc, "reno")  ? NGTCP2_CC_ALGO_RENO
                                         : NGTCP2_CC_ALGO_BBR;
    random_bytes(&ep->map.seed, sizeof ep->map.seed);
    {
        /* Stateless reset secret = SHA-256(label || seed): stable across
         * restarts of the same identity, see ep_send_stateless_reset. */
        static const char label[] = "llmesh/quic stateless reset v1";
        uint8_t in[sizeof label - 1 + QUIC_KEY_BYTES];
        memcpy(in, label, sizeof label - 1);
        memcpy(in + sizeof label - 1, cfg->private_key, QUIC_KEY_BYTES);
        int rv = gnutls_hash_fast(GNUTLS_DIG_SHA256, in, sizeof in, ep->reset_secret);
        gnutls_memset(in, 0, sizeof in);
        if (rv != 0) {
            err_set(err, errlen, "SHA-256 unavailable: %s", gnutls_strerror(rv));
            goto fail;
        }
    }
    ep->rxbuf = malloc(QUIC_RX_BUF);
    ep->txbuf = malloc(QUIC_TX_BUF);
    if (!ep->rxbuf || !ep->txbuf) {
        err_set(err, errlen, "out of memory");
        goto fail;
    }
    if (ep_tls_init(ep, cfg, err, errlen) != 0) goto fail;
    if (ep_socket(ep, cfg, err, errlen) != 0) goto fail;
    ep->read_ev = event_new(base, ep->fd, EV_READ | EV_PERSIST, ep_on_readable, ep);
    ep->flush_ev = event_new(base, -1, 0, ep_on_flush, ep);
    if (!ep->read_ev || !ep->flush_ev || event_add(ep->read_ev, NULL) != 0) {
        err_set(err, errlen, "libevent: cannot create events");
        goto fail;
    }
    {
        char why[128];
        ep->now_timer = precise_timer_new(base, ep_on_now_timer, ep, why, sizeof why);
        if (!ep->now_timer) log_debug(MOD, "writes from other threads will wake the loop to set timers: %s", why);
    }
    ep->stats.gso = ep->gso;
    ep->stats.gro = ep->gro;
    if (log_enabled(LOG_DEBUG)) {
        char a[64];
        log_debug(MOD, "endpoint on %s (GSO %s, GRO %s)",
                  addr_str((struct sockaddr *)&ep->local, a, sizeof a), ep->gso ? "on" : "off",
                  ep->gro ? "on" : "off");
    }
    return ep;
fail:
    quic_endpoint_free(ep);
    return NULL;
}

void quic_endpoint_free(quic_endpoint *ep)
{
    if (!ep) return;
    assert(ep->depth == 0 && "quic_endpoint_free called from inside a quic callback");
    EP_LOCK(ep); /* no other thread may send from here on (the caller stopped them) */
    ep->freeing = 1;
    ep->in_io = 1;
    for (quic_conn *c = ep->conns; c; c = c->next)
        conn_terminate(c, CLOSE_APP, 0, "endpoint shutting down");
    ep_settle(ep);
    assert(!ep->conns && ep->nconns == 0);
    EP_UNLOCK(ep);
    pthread_mutex_destroy(&ep->mu);
    if (ep->read_ev) event_free(ep->read_ev);
    if (ep->flush_ev) event_free(ep->flush_ev);
    precise_timer_free(ep->now_timer);
    if (ep->fd >= 0) close(ep->fd);
    if (ep->cred) gnutls_certificate_free_credentials(ep->cred);
    if (ep->prio) gnutls_priority_deinit(ep->prio);
    gnutls_memset(ep->reset_secret, 0, sizeof ep->reset_secret);
    free(ep->map.slots);
    free(ep->rxbuf);
    free(ep->txbuf);
    free(ep);
}

/* The flush event's work, done now: used before quic_endpoint_free by a
 * layer that queued a last message (mesh_leave) and cannot wait a turn. */
void quic_endpoint_flush(quic_endpoint *ep)
{
    assert(ep->depth == 0 && "quic_endpoint_flush called from inside a quic callback");
    ep_on_flush(-1, 0, ep);
}

uint16_t quic_endpoint_port(const quic_endpoint *ep)
{
    if (ep->local.ss_family == AF_INET) return ntohs(((const struct sockaddr_in *)&ep->local)->sin_port);
    return ntohs(((const struct sockaddr_in6 *)&ep->local)->sin6_port);
}

void quic_endpoint_stats(const quic_endpoint *ep, quic_stats *out)
{
    quic_endpoint *w = (quic_endpoint *)ep; /* the lock only */
    EP_LOCK(w);
    *out = ep->stats;
    out->conns_open = ep->nconns;
    out->conns_half_open = ep->nhalf_open;
    out->gso = ep->gso;
    out->gro = ep->gro;
    EP_UNLOCK(w);
}

int quic_endpoint_trylock(quic_endpoint *ep) { return pthread_mutex_trylock(&ep->mu) == 0 ? 0 : -1; }
void quic_endpoint_unlock(quic_endpoint *ep) { EP_UNLOCK(ep); }

/* ---- connections: public API -----------------------------------------------*/

/* The made-up peer address of a virtual path, which ngtcp2 needs for its
 * path bookkeeping: in the endpoint's family, from ranges no socket ever
 * reports as a source (0.0.0.0/8, "this network"; 100::/64, discard-only,
 * RFC 6666), the path number in the low bits. Never sent to. */
static void vpath_addr(int family, uint32_t path, struct sockaddr_storage *out, socklen_t *outlen)
{
    memset(out, 0, sizeof *out);
    if (family == AF_INET) {
        struct sockaddr_in *v4 = (void *)out;
        v4->sin_family = AF_INET;
        v4->sin_addr.s_addr = htonl(path & 0xffffffu);
        v4->sin_port = htons(9);
        *outlen = sizeof *v4;
    } else {
        struct sockaddr_in6 *v6 = (void *)out;
        v6->sin6_family = AF_INET6;
        v6->sin6_addr.s6_addr[0] = 0x01;
        uint32_t be = htonl(path);
        memcpy(&v6->sin6_addr.s6_addr[12], &be, 4);
        v6->sin6_port = htons(9);
        *outlen = sizeof *v6;
    }
}

static quic_conn *conn_start(quic_endpoint *ep, const struct sockaddr_storage *remote,
                             socklen_t remote_len, uint32_t vpath,
                             const uint8_t peer_key[QUIC_KEY_BYTES], char *err, size_t errlen);

quic_conn *quic_connect(quic_endpoint *ep, const struct sockaddr *addr, socklen_t addrlen,
                        const uint8_t peer_key[QUIC_KEY_BYTES], char *err, size_t errlen)
{
    struct sockaddr_storage remote;
    socklen_t remote_len;
    if (!addr || addr_to_socket(ep->family, addr, addrlen, &remote, &remote_len) != 0) {
        err_set(err, errlen, "address family does not match the endpoint's socket");
        return NULL;
    }
    return conn_start(ep, &remote, remote_len, 0, peer_key, err, errlen);
}

quic_conn *quic_connect_virtual(quic_endpoint *ep, uint32_t path,
                                const uint8_t peer_key[QUIC_KEY_BYTES], char *err, size_t errlen)
{
    if (path == 0 || path > QUIC_VPATH_MAX) {
        err_set(err, errlen, "virtual path number out of range");
        return NULL;
    }
    struct sockaddr_storage remote;
    socklen_t remote_len;
    vpath_addr(ep->family, path, &remote, &remote_len);
    return conn_start(ep, &remote, remote_len, path, peer_key, err, errlen);
}

static quic_conn *conn_start_locked(quic_endpoint *ep, const struct sockaddr_storage *remote,
                                    socklen_t remote_len, uint32_t vpath,
                                    const uint8_t peer_key[QUIC_KEY_BYTES], char *err, size_t errlen);

static quic_conn *conn_start(quic_endpoint *ep, const struct sockaddr_storage *remote,
                             socklen_t remote_len, uint32_t vpath,
                             const uint8_t peer_key[QUIC_KEY_BYTES], char *err, size_t errlen)
{
    EP_LOCK(ep);
    quic_conn *c = conn_start_locked(ep, remote, remote_len, vpath, peer_key, err, errlen);
    EP_UNLOCK(ep);
    return c;
}

static quic_conn *conn_start_locked(quic_endpoint *ep, const struct sockaddr_storage *remote,
                                    socklen_t remote_len, uint32_t vpath,
                                    const uint8_t peer_key[QUIC_KEY_BYTES], char *err, size_t errlen)
{
    if (ep->freeing) {
        err_set(err, errlen, "endpoint is shutting down");
        return NULL;
    }
    if (ep->nconns >= ep->limits.max_conns) {
        err_set(err, errlen, "too many connections (%u)", (unsigned)ep->limits.max_conns);
        return NULL;
    }
    quic_conn *c = conn_alloc(ep, remote, remote_len);
    if (!c) {
        err_set(err, errlen, "out of memory");
        return NULL;
    }
    c->vpath = vpath;
    c->outgoing = 1;
    c->have_peer_key = 1;
    memcpy(c->peer_key, peer_key, QUIC_KEY_BYTES);

    if (conn_setup(c, NULL, err, errlen) != 0) {
        conn_discard(c);
        return NULL;
    }
    if (log_enabled(LOG_DEBUG)) {
        char a[64];
        if (vpath) log_debug(MOD, "connecting on virtual path %u", (unsigned)vpath);
        else log_debug(MOD, "connecting to %s", addr_str((struct sockaddr *)&c->remote_app, a, sizeof a));
    }
    conn_mark_dirty(c); /* the Initial goes out from ep_settle */
    return c;
}

void quic_endpoint_set_virtual_sender(quic_endpoint *ep, quic_virtual_send_fn fn, void *ctx)
{
    ep->vsend = fn;
    ep->vsend_ctx = ctx;
}

void quic_endpoint_input_virtual(quic_endpoint *ep, uint32_t path, const uint8_t *pkt, size_t len)
{
    if (path == 0 || path > QUIC_VPATH_MAX || len == 0) return;
    EP_LOCK(ep);
    if (ep->freeing) {
        EP_UNLOCK(ep);
        return;
    }
    struct sockaddr_storage from;
    socklen_t fromlen;
    vpath_addr(ep->family, path, &from, &fromlen);
    /* Usually called from inside a callback of another connection (a relay
     * stream's data): then the outer handler settles; otherwise we do. */
    int was = ep->in_io;
    ep->in_io = 1;
    ep_handle_datagram(ep, &from, fromlen, pkt, len, path);
    if (!was) ep_settle(ep);
    ep->in_io = was;
    EP_UNLOCK(ep);
}

uint32_t quic_conn_virtual_path(const quic_conn *c) { return c->vpath; }

int quic_endpoint_punch(quic_endpoint *ep, const struct sockaddr *addr, socklen_t addrlen)
{
    struct sockaddr_storage to;
    socklen_t tolen;
    if (!addr || addr_to_socket(ep->family, addr, addrlen, &to, &tolen) != 0) return -1;
    /* One zero byte: a short header whose connection id is cut off, which
     * every QUIC endpoint (ours: ngtcp2_pkt_decode_version_cid) drops
     * without an answer; too short for a stateless reset to be due. */
    static const uint8_t probe[1] = {0};
    EP_LOCK(ep);
    int rc = send_one(ep, (const struct sockaddr *)&to, tolen, probe, sizeof probe, 0);
    if (rc != 0) {
        ep->stats.tx_errors++;
    } else {
        ep->stats.tx_datagrams++;
        ep->stats.tx_bytes += sizeof probe;
    }
    EP_UNLOCK(ep);
    return rc != 0 ? -1 : 0;
}

void quic_conn_close(quic_conn *c, const char *reason)
{
    if (!c) return;
    quic_endpoint *ep = c->ep;
    EP_LOCK(ep);
    if (!c->closing) conn_terminate(c, CLOSE_APP, 0, reason && *reason ? reason : "closed");
    EP_UNLOCK(ep);
}

int quic_conn_is_ready(const quic_conn *c) { return c->ready && !c->closing; }
int quic_conn_is_outgoing(const quic_conn *c) { return c->outgoing; }

int quic_conn_is_passive(const quic_conn *c)
{
    gnutls_datum_t p;
    if (!c->tls || gnutls_alpn_get_selected_protocol(c->tls, &p) != 0) return 0;
    return p.size == sizeof QUIC_ALPN_PASSIVE - 1 && !memcmp(p.data, QUIC_ALPN_PASSIVE, p.size);
}
const uint8_t *quic_conn_peer_key(const quic_conn *c) { return c->peer_key; }
void quic_conn_set_user(quic_conn *c, void *user) { c->user = user; }
void *quic_conn_user(const quic_conn *c) { return c->user; }

const struct sockaddr *quic_conn_remote_addr(const quic_conn *c, socklen_t *len)
{
    if (c->vpath) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = c->remote_app_len;
    return (const struct sockaddr *)&c->remote_app;
}

void quic_conn_bytes(const quic_conn *c, uint64_t *rx, uint64_t *tx)
{
    EP_LOCK(c->ep);
    *rx = c->rx_bytes;
    *tx = c->tx_bytes;
    EP_UNLOCK(c->ep);
}

int quic_conn_export_keying(const quic_conn *c, const char *label, uint8_t *out, size_t len)
{
    if (!c->ready || c->closing || !c->tls) return -1;
    /* An empty context: the label alone names the use. */
    return gnutls_prf_rfc5705(c->tls, strlen(label), label, 0, NULL, len, (char *)out) == 0 ? 0 : -1;
}

uint64_t quic_conn_rtt_us(const quic_conn *c)
{
    if (!c->conn) return 0;
    ngtcp2_conn_stat st;
    EP_LOCK(c->ep);
    ngtcp2_conn_get_conn_stat(c->conn, &st);
    EP_UNLOCK(c->ep);
    if (st.first_rtt_sample_ts == UINT64_MAX) return 0; /* smoothed_rtt is still the guess */
    return st.smoothed_rtt / NGTCP2_MICROSECONDS;
}

/* ---- streams: public API ----------------------------------------------------*/

quic_stream *quic_stream_open(quic_conn *c, const quic_stream_callbacks *cb, void *user)
{
    if (!c) return NULL;
    EP_LOCK(c->ep);
    quic_stream *s = NULL;
    int64_t id;
    if (!c->ready || c->closing || !(s = stream_new(c, -1))) goto out;
    /* Safe inside ngtcp2 callbacks: it only creates stream state. */
    if (ngtcp2_conn_open_bidi_stream(c->conn, &id, s) != 0) {
        list_unlink(&c->streams, s);
        stream_free(s);
        s = NULL;
        goto out;
    }
    s->id = id;
    if (cb) s->cb = *cb;
    s->user = user;
out:
    EP_UNLOCK(c->ep);
    return s;
}

void quic_stream_set_callbacks(quic_stream *s, const quic_stream_callbacks *cb, void *user)
{
    if (cb) s->cb = *cb;
    else memset(&s->cb, 0, sizeof s->cb);
    s->user = user;
}

int quic_stream_write(quic_stream *s, const void *data, size_t len)
{
    quic_conn *c = s->conn;
    EP_LOCK(c->ep);
    int rc = -1;
    if (s->detached || s->fin_requested || s->ng_closed || c->closing) goto out;
    rc = 0;
    if (!len) goto out;
    if (stream_append(s, data, len) != 0) {
        rc = -1;
        goto out;
    }
    sendq_add(s);
    conn_mark_dirty(c);
out:
    EP_UNLOCK(c->ep);
    return rc;
}

/* Why a thread other than the loop's may send at all: a pipeline stage's
 * hidden states are ready on a compute thread, and handing them to the loop
 * costs a thread wake-up (~50 us on the development VM) on every hop of
 * every token; written here, under the lock, they leave as soon as they
 * exist. The loop keeps everything else: reading, timers, other streams'
 * writes, every callback. */
int quic_stream_write_now(quic_stream *s, const void *head, size_t head_len, const void *data, size_t len)
{
    quic_conn *c = s->conn;
    quic_endpoint *ep = c->ep;
    /* Held by us (trylock): the loop thread is outside every handler, so
     * in_io and depth are 0 unless this thread is itself inside one. */
    if (ep->in_io || ep->depth || ep->freeing || c->vpath || !c->ready || c->closing || c->retired ||
        c->write_error || s->detached || s->fin_requested || s->ng_closed)
        return 1;
    if (stream_append(s, head, head_len) != 0 || (len && stream_append(s, data, len) != 0)) return -1;
    sendq_add(s);
    ep->in_io = 1; /* conn_mark_dirty: no flush event, we write now */
    ep->foreign = 1;
    conn_write(c);
    ep->foreign = 0;
    ep->in_io = 0;
    if (c->write_error) {
        conn_mark_dirty(c); /* the loop closes it, with its callbacks */
        return 0;
    }
    ep->stats.tx_now_writes++;
    /* Loss detection for what just left: its expiry is usually earlier than
     * the connection's timer. Setting that libevent timer from here would
     * wake the loop at once (libevent recomputes its epoll timeout), just
     * when the next stage's process wants the idle CPU to receive this; a
     * timerfd set for the earliest such expiry wakes nobody until it fires,
     * and the loop stops it when it sets the connection's timer itself. */
    ngtcp2_tstamp exp = ngtcp2_conn_get_expiry(c->conn);
    if (exp >= c->timer_at) return 0;
    if (!ep->now_timer) {
        conn_arm_timer(c);
    } else if (!ep->now_timer_at || exp < ep->now_timer_at) {
        ep->now_conn = !ep->now_timer_at || ep->now_conn == c ? c : NULL;
        ep->now_timer_at = exp;
        precise_timer_at(ep->now_timer, (exp + 999) / 1000);
    } else if (ep->now_conn != c) {
        ep->now_conn = NULL;
    }
    return 0;
}

int quic_stream_finish(quic_stream *s)
{
    quic_conn *c = s->conn;
    EP_LOCK(c->ep);
    int rc = -1;
    if (s->detached || s->ng_closed || c->closing) goto out;
    rc = 0;
    if (s->fin_requested) goto out;
    s->fin_requested = 1;
    sendq_add(s);
    conn_mark_dirty(c);
out:
    EP_UNLOCK(c->ep);
    return rc;
}

void quic_stream_reset(quic_stream *s, uint64_t app_error)
{
    if (!s) return;
    quic_endpoint *ep = s->conn->ep;
    EP_LOCK(ep);
    if (!s->detached) stream_abort(s, app_error);
    EP_UNLOCK(ep);
}

size_t quic_stream_unacked(const quic_stream *s)
{
    EP_LOCK(s->conn->ep);
    size_t n = (size_t)(s->end_off - s->acked_off);
    EP_UNLOCK(s->conn->ep);
    return n;
}
quic_conn *quic_stream_conn(const quic_stream *s) { return s->conn; }
int64_t quic_stream_id(const quic_stream *s) { return s->id; }
