/* quic.h: QUIC connections with streams, the only module that includes ngtcp2.
 *
 * One endpoint = one UDP socket on a libevent loop, acting as both client and
 * server. TLS 1.3 via GnuTLS with RFC 7250 raw Ed25519 public keys, mutual
 * authentication, ALPN "llmesh/1": every connection is authenticated to a
 * 32-byte Ed25519 public key (the peer's node id). Outgoing connections pin
 * the expected key and fail the handshake on any other; incoming connections
 * accept any key and report it (the layer above decides whom to trust).
 *
 * What this module is not: it knows no message types or framing (see
 * mesh/), only ordered byte streams. Keeping every ngtcp2 call here means a
 * move to ngtcp2 1.x or to a TCP+TLS fallback touches this module only.
 *
 * Threading: every function must be called on the thread running the
 * endpoint's event_base, and callbacks run on that thread, with one
 * exception: another thread that holds the endpoint's lock
 * (quic_endpoint_trylock) may call quic_stream_write_now, and nothing else,
 * on a stream it knows to be alive. The loop thread holds the same lock
 * while it runs any of this module's code, so the two never overlap.
 *
 * Lifetimes: a quic_conn is valid from quic_connect (or stream/ready callback)
 * until its conn_closed callback returns. A quic_stream is valid until its
 * on_close callback returns, or until quic_stream_reset returns. Closing a
 * connection delivers on_close to each of its open streams first, then
 * conn_closed. */
#ifndef LLMESH_QUIC_H
#define LLMESH_QUIC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct event_base;

typedef struct quic_endpoint quic_endpoint;
typedef struct quic_conn quic_conn;
typedef struct quic_stream quic_stream;

#define QUIC_KEY_BYTES 32
/* ALPN: a mesh member dials with the first, a passive client (`llmesh
 * client`) with the second; a listener accepts both, and the one chosen tells
 * the mesh which kind of node is calling before any stream is opened. */
#define QUIC_ALPN "llmesh/1"
#define QUIC_ALPN_PASSIVE "llmesh-client/1"

typedef struct {
    /* Handshake done and peer key verified. For incoming connections this
     * is the first callback that sees the connection. */
    void (*conn_ready)(void *user, quic_conn *c);
    /* The connection is gone (handshake failure, timeout, idle timeout, peer
     * closed it, quic_conn_close). reason is a short human message. Not
     * called for incoming connections that never became ready. */
    void (*conn_closed)(void *user, quic_conn *c, const char *reason);
    /* The peer opened a bidirectional stream; set its callbacks with
     * quic_stream_set_callbacks before returning, or reset it. */
    void (*stream_opened)(void *user, quic_stream *s);
} quic_endpoint_callbacks;

typedef struct {
    /* Bytes in order. fin=1 when the peer finished its side (data may be
     * empty then). */
    void (*on_data)(void *user, quic_stream *s, const uint8_t *data, size_t len, int fin);
    /* The stream is over: both sides finished (error NULL), or it was reset
     * by the peer, or its connection closed (error says why). Last callback. */
    void (*on_close)(void *user, quic_stream *s, const char *error);
} quic_stream_callbacks;

/* Bounds on the connections others can make an endpoint hold (docs/mesh.md,
 * "Limits"; llmesh serve's --quic-max-* flags). An Initial over a bound is
 * dropped and counted (conns_refused, conns_refused_addr). 0 = the default. */
#define QUIC_DEFAULT_MAX_CONNS 4096
#define QUIC_DEFAULT_MAX_HALF_OPEN 256
#define QUIC_DEFAULT_MAX_CONNS_PER_ADDR 256
#define QUIC_DEFAULT_MAX_HALF_OPEN_PER_ADDR 16
typedef struct {
    uint32_t max_conns;                  /* connections in all (ours included) */
    uint32_t max_half_open;              /* incoming, handshake not done */
    uint32_t max_conns_per_addr;         /* from one IP address */
    uint32_t max_half_open_per_addr;     /* half-open from one IP address */
} quic_limits;

typedef struct {
    uint8_t private_key[QUIC_KEY_BYTES]; /* Ed25519 seed */
    uint8_t public_key[QUIC_KEY_BYTES];
    const char *bind_host;               /* e.g. "0.0.0.0", "127.0.0.1", "::" */
    uint16_t port;                       /* 0 = any free port */
    uint32_t handshake_timeout_ms;       /* 0 = 10000 */
    uint32_t idle_timeout_ms;            /* 0 = 30000 */
    int passive;                         /* dial with QUIC_ALPN_PASSIVE */
    quic_limits limits;
} quic_config;

quic_endpoint *quic_endpoint_new(struct event_base *base, const quic_config *cfg,
                                 const quic_endpoint_callbacks *cb, void *user,
                                 char *err, size_t errlen);
/* Closes every connection at once (a CONNECTION_CLOSE is sent best effort;
 * on_close/conn_closed callbacks are delivered), then frees the endpoint. */
void quic_endpoint_free(quic_endpoint *ep);
/* Writes every packet that is ready to go now instead of on the loop's next
 * turn (e.g. a goodbye message queued just before quic_endpoint_free). Not
 * from inside a callback of this endpoint. */
void quic_endpoint_flush(quic_endpoint *ep);
/* The bound UDP port (useful with port 0). */
uint16_t quic_endpoint_port(const quic_endpoint *ep);

/* Starts a connection to addr, pinned to peer_key. Returns NULL (with err)
 * only for immediate failures; a failed handshake is reported through
 * conn_closed. */
quic_conn *quic_connect(quic_endpoint *ep, const struct sockaddr *addr, socklen_t addrlen,
                        const uint8_t peer_key[QUIC_KEY_BYTES], char *err, size_t errlen);
/* Graceful close; conn_closed follows (possibly before this returns). */
void quic_conn_close(quic_conn *c, const char *reason);
int quic_conn_is_ready(const quic_conn *c);
int quic_conn_is_outgoing(const quic_conn *c);
/* 1 when the handshake chose QUIC_ALPN_PASSIVE (the peer is a passive client). */
int quic_conn_is_passive(const quic_conn *c);
/* The peer's verified key (for outgoing connections, the pinned key). */
const uint8_t *quic_conn_peer_key(const quic_conn *c);
/* NULL (and *len 0) for a connection on a virtual path: it has no address. */
const struct sockaddr *quic_conn_remote_addr(const quic_conn *c, socklen_t *len);
/* Keying material exported from the connection's TLS 1.3 session (RFC 8446
 * section 7.5, the RFC 5705 interface): the same bytes on both ends of this
 * connection and on no other, so a MAC over them binds a proof to it
 * (mesh/admission.c). Only once the connection is ready. 0, or -1. */
int quic_conn_export_keying(const quic_conn *c, const char *label, uint8_t *out, size_t len);
/* Smoothed round-trip time in microseconds (0 before the first sample). */
uint64_t quic_conn_rtt_us(const quic_conn *c);
/* Bytes of this connection's packets received and sent so far (UDP
 * payloads, or the packets on its virtual path; retransmissions count
 * again), from its first packet. */
void quic_conn_bytes(const quic_conn *c, uint64_t *rx, uint64_t *tx);
void quic_conn_set_user(quic_conn *c, void *user);
void *quic_conn_user(const quic_conn *c);

/* Opens a bidirectional stream on a ready connection; NULL when the peer's
 * stream limit is reached or the connection is not ready. */
quic_stream *quic_stream_open(quic_conn *c, const quic_stream_callbacks *cb, void *user);
void quic_stream_set_callbacks(quic_stream *s, const quic_stream_callbacks *cb, void *user);
/* Queues bytes (copied; kept until the peer acknowledges them). 0 or -1. */
int quic_stream_write(quic_stream *s, const void *data, size_t len);
/* Sends FIN after the queued bytes. */
int quic_stream_finish(quic_stream *s);
/* Aborts both directions (RESET_STREAM + STOP_SENDING); no more callbacks;
 * s is invalid when this returns. */
void quic_stream_reset(quic_stream *s, uint64_t app_error);
/* Bytes queued but not yet acknowledged (for back-pressure). */
size_t quic_stream_unacked(const quic_stream *s);
/* From a thread other than the loop's (a pipeline stage's compute thread),
 * holding the endpoint's lock: queues head then data on s, like two
 * quic_stream_write calls, and writes the connection's packets at once
 * instead of on the loop's next turn. 0: sent (or queued behind the
 * congestion window; the loop sends the rest); 1: not now, nothing queued
 * (s or its connection closing, a virtual path, the lock taken from inside
 * a callback): use quic_stream_write on the loop thread; -1: out of memory,
 * as quic_stream_write. Never calls back into the application. */
int quic_stream_write_now(quic_stream *s, const void *head, size_t head_len, const void *data, size_t len);
/* The endpoint's lock, for quic_stream_write_now: 0 when taken, -1 when
 * another thread holds it (the loop is busy in this module: never waits). */
int quic_endpoint_trylock(quic_endpoint *ep);
void quic_endpoint_unlock(quic_endpoint *ep);
quic_conn *quic_stream_conn(const quic_stream *s);
int64_t quic_stream_id(const quic_stream *s);

/* ---- virtual paths (relayed connections) ---------------------------------
 *
 * A virtual path carries a connection's QUIC packets through something other
 * than the socket: in llmesh, a stream of another connection to a relay node
 * (mesh/nat.c). The connection on it is a normal one (TLS 1.3, pinned key,
 * streams): the relay only ever sees its ciphertext.
 *
 * The layer above numbers its paths (1..QUIC_VPATH_MAX) and installs one
 * sender per endpoint; packets that arrive on a path go in through
 * quic_endpoint_input_virtual (an Initial there creates an incoming
 * connection as on the socket). A connection stays on the path it started
 * on: packets for it from the socket are dropped, and socket connections
 * take nothing from a virtual path, so a relay cannot steer a connection
 * onto a real address or the reverse. No stateless resets or version
 * negotiation are sent on virtual paths. Packets may be lost or dropped on
 * the way (QUIC recovers). */
#define QUIC_VPATH_MAX 0xffffffu
typedef void (*quic_virtual_send_fn)(void *ctx, uint32_t path, const uint8_t *pkt, size_t len);
void quic_endpoint_set_virtual_sender(quic_endpoint *ep, quic_virtual_send_fn fn, void *ctx);
/* Starts a connection over path (1..QUIC_VPATH_MAX), pinned to peer_key. */
quic_conn *quic_connect_virtual(quic_endpoint *ep, uint32_t path,
                                const uint8_t peer_key[QUIC_KEY_BYTES], char *err, size_t errlen);
/* One packet that arrived on path. May run callbacks of this endpoint. */
void quic_endpoint_input_virtual(quic_endpoint *ep, uint32_t path, const uint8_t *pkt, size_t len);
/* The path a connection runs on; 0 for the socket. */
uint32_t quic_conn_virtual_path(const quic_conn *c);
/* Sends one small datagram (a few bytes no QUIC endpoint accepts: the
 * receiver drops it and answers nothing) from our socket to addr, so that
 * our NAT opens a mapping towards it (hole punching, RFC 5128 3.3). 0 or -1. */
int quic_endpoint_punch(quic_endpoint *ep, const struct sockaddr *addr, socklen_t addrlen);

/* Counters of one endpoint, for logs, the console and tests. */
typedef struct {
    uint64_t rx_datagrams, rx_bytes;     /* UDP datagrams (GRO segments counted one by one) */
    uint64_t tx_datagrams, tx_bytes;
    uint64_t rx_calls, tx_calls;         /* recvmsg/sendmsg calls: datagrams per call shows GRO/GSO at work */
    uint64_t rx_dropped;                 /* garbage, unknown connection, refused, malformed */
    uint64_t tx_errors;                  /* datagrams the kernel refused (EAGAIN, EMSGSIZE, ...) */
    uint64_t vpath_rx, vpath_tx;         /* packets in and out on virtual paths */
    uint64_t tx_now_writes;              /* writes by quic_stream_write_now (another thread) */
    uint64_t conns_accepted;             /* incoming connections created from an Initial */
    uint64_t conns_refused;              /* Initials dropped because of connection limits */
    uint64_t conns_refused_addr;         /* of those, because of the per-address limits */
    uint64_t stateless_resets_sent;
    uint64_t version_negotiations_sent;
    uint64_t conns_open;                 /* now: every connection, handshaking or ready */
    uint64_t conns_half_open;            /* now: incoming, handshake not done */
    int gso, gro;                        /* 1 when UDP GSO / GRO are in use */
} quic_stats;

void quic_endpoint_stats(const quic_endpoint *ep, quic_stats *out);

#endif
