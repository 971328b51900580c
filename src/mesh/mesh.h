/* mesh.h: membership of the llmesh mesh, and typed message streams to peers.
 *
 * A mesh owns this node's identity (mesh/identity.h), its invite token, one
 * QUIC endpoint (net/quic.h), and the table of known nodes, kept in sync by
 * gossip over QUIC. Joining with one token is enough for every node to come
 * to know every other one and connect to it (full mesh).
 *
 * Streams carry length-prefixed frames (see docs/PROTOCOL.md); the first byte
 * of a stream names its type (mesh_stream_type) and the mesh hands incoming
 * streams to whoever registered that type. The mesh knows nothing of models
 * beyond their names, and nothing of HTTP or tensors.
 *
 * Threading: everything runs on the event-loop thread of the event_base given
 * to mesh_new; no function here may be called from another thread. */
#ifndef LLMESH_MESH_H
#define LLMESH_MESH_H

#include <stddef.h>
#include <stdint.h>

#include "net/quic.h"

struct event_base;

#define MESH_ID_BYTES 32
#define MESH_ID_HEX 65           /* 64 hex digits + NUL */
#define MESH_MAX_ADDRS 8
#define MESH_MAX_MODELS 16
#define MESH_MAX_NAME 128
#define MESH_MAX_FRAME (16u << 20) /* hard bound on one frame's payload */

/* Stream types: the first byte of every stream. Never renumber. */
typedef enum {
    MESH_STREAM_GOSSIP = 1,      /* node records, both ways */
    MESH_STREAM_HTTP_TUNNEL = 2, /* an API request forwarded to a host node */
    MESH_STREAM_CONTROL = 3,     /* failure-detector probes (the mesh's own) */
    MESH_STREAM_ROUTES = 4,      /* a passive client's routing-table pull (the mesh's own) */
    MESH_STREAM_FETCH = 7,       /* manifests and tensor chunks of a model (models/fetch.c) */
    MESH_STREAM_RELAY = 10,      /* QUIC packets of a relayed connection (mesh/nat.c) */
    MESH_STREAM_RENDEZVOUS = 11, /* observed addresses, introductions, punching (mesh/nat.c) */
    MESH_STREAM_ADMISSION = 12,  /* proofs of the mesh secret, first on every connection (the mesh's own) */
} mesh_stream_type;

typedef struct {
    const char *home;            /* directory for the identity key (created 0700) */
    const char *listen;          /* "HOST:PORT" for the UDP socket; NULL = "0.0.0.0:9337" */
    const char *const *join_tokens;
    int n_join;
    const char *role;            /* "host", "standby" or "client" */
    /* Failure-detector timings in ms; 0 = the default (docs/mesh.md says
     * why each is what it is). Tests shorten them. */
    uint32_t probe_interval_ms;  /* 1000: how often peers are probed */
    uint32_t probe_timeout_ms;   /* 500: a probe not answered by then makes the peer suspect */
    uint32_t suspect_timeout_ms; /* 4000: a suspect that stays silent this long is dead */
    uint32_t dead_ttl_ms;        /* 60000: dead and left peers are forgotten after this */
    /* Passive clients (role "client") only, 0 = the default. */
    uint32_t routes_interval_ms; /* 30000: how often the routing table is pulled */
    uint32_t client_idle_ms;     /* 60000: a connection no request used this long is closed */
    quic_limits limits;          /* QUIC connection bounds; zeros = the defaults (net/quic.h) */
    /* Members' bounds (docs/mesh.md, "Limits"); 0 = the default. */
    uint32_t max_clients;        /* 4096: passive client connections held at once */
    uint32_t bad_frames_max;     /* 32: malformed frames within 10 s that get a peer banned */
    uint32_t ban_ms;             /* 60000: how long a banned peer is refused */
} mesh_config;

typedef struct mesh mesh;

/* Role "client" makes a passive node (docs/mesh.md, "Passive clients"): it
 * takes no part in gossip or failure detection and accepts no connections.
 * It pulls the routing table (the members' records) from an active node
 * every routes_interval_ms and on mesh_refresh_routes, connects to a member
 * only when it opens a stream to it, and closes that connection once idle.
 * Members never list it among their peers. */

mesh *mesh_new(struct event_base *base, const mesh_config *cfg, char *err, size_t errlen);
/* Closes all connections and frees everything. Without mesh_leave first,
 * peers see the connections close and find the node dead by probing (a few
 * seconds) rather than gone at once. */
void mesh_free(mesh *m);

/* Clean exit, step 1 (SIGINT/SIGTERM): floods a LEAVE signed by this node
 * on every connection and writes it to the socket before returning (no
 * waiting for acknowledgements: it returns in microseconds). Peers mark the
 * node "left" at once, relay the LEAVE to each other (so one peer that got
 * it is enough), and do not redial it. After this the node answers no
 * probes and dials nobody; call mesh_free next (typically right away: the
 * LEAVE is already on the wire). Idempotent. Not from inside a stream
 * callback. 0, or -1 when it could not be signed (then peers find out by
 * probing). */
int mesh_leave(mesh *m);

/* The invite token: stable for a given key, mesh secret and addresses. It
 * carries the mesh secret: give it only to those who may join, never log
 * it. */
const char *mesh_token(const mesh *m);
const char *mesh_node_id_hex(const mesh *m);
const uint8_t *mesh_node_id(const mesh *m);
/* The bound UDP port (useful with port 0 in cfg->listen). */
uint16_t mesh_listen_port(const mesh *m);

/* What this node tells others about itself; gossiped on change. */
void mesh_set_models(mesh *m, const char *const *model_ids, int n);
/* The memory budget for models, and the bytes of it in use. */
void mesh_set_memory(mesh *m, uint64_t memory_bytes);
void mesh_set_memory_used(mesh *m, uint64_t used_bytes);
/* Application bytes carried in this node's record to every member and
 * client, uninterpreted by the mesh (serve/ puts model plans there).
 * len <= MESH_MAX_APP. Each change is a new signed record flooded to every
 * member: callers rate-limit changes that happen often. 0, or -1 too long. */
#define MESH_MAX_APP 4096
int mesh_set_app_data(mesh *m, const void *data, size_t len);
/* Copies into out (cap bytes) the application bytes of the newest record of
 * node id (this node's own included) and returns their count, or -1 when
 * there is no record of it or cap is too small. */
int mesh_node_app_data(const mesh *m, const uint8_t id[MESH_ID_BYTES], void *out, size_t cap);
/* The same for a second opaque field, the holdings: which weights this node
 * can serve to peers (models/ writes and reads it: weights_store.h). Kept
 * apart from the application field so that the two owners never have to
 * share one buffer. 0, or -1 too long; the getter as mesh_node_app_data. */
#define MESH_MAX_HOLDINGS 1024
int mesh_set_holdings(mesh *m, const void *data, size_t len);
int mesh_node_holdings(const mesh *m, const uint8_t id[MESH_ID_BYTES], void *out, size_t cap);

/* A snapshot of one known peer (never this node). */
typedef struct {
    char id[MESH_ID_HEX];
    char addresses[MESH_MAX_ADDRS][64];  /* "HOST:PORT" */
    int n_addresses;
    char role[16];
    char models[MESH_MAX_MODELS][MESH_MAX_NAME];
    int n_models;
    uint64_t memory_bytes;               /* its memory budget for models */
    uint64_t memory_used;                /* bytes of that budget in use */
    uint32_t clients;                    /* passive clients connected to it (its record says) */
    int app_len;                         /* bytes of its application field (mesh_node_app_data) */
    /* "connecting": learned, first dial under way; "alive": connected and
     * answering probes; "suspect": missed probes or lost its connection,
     * being checked; "dead": declared dead (redialled with backoff);
     * "left": it announced a clean exit. Dead and left peers are listed
     * until their TTL (mesh_config.dead_ttl_ms) passes. */
    char state[16];
    char link[8];                        /* "direct", "relayed" (through a peer), "" without a connection */
    double rtt_ms;                       /* smoothed RTT of that connection, 0 before a sample */
    /* Bytes received from and sent to the peer (QUIC packets) over every
     * connection with it since this node learned of it: the current one's
     * so far plus those of the connections that closed (a reconnection
     * goes on from there; a peer forgotten after dead_ttl_ms and learned
     * again starts at 0). */
    uint64_t rx_bytes, tx_bytes;
} mesh_peer;

/* Copies up to max peers into out; returns how many there are in all. On a
 * passive client these are the nodes of the last routing table: "alive" as
 * the member that sent it saw them, "dead" when this client could not reach
 * one since, "connecting" for a join-token node not yet heard from. */
int mesh_peers(const mesh *m, mesh_peer *out, int max);
/* Picks an alive peer that serves model_id (lowest RTT). 0 with its id, or -1. */
int mesh_pick_host(const mesh *m, const char *model_id, uint8_t id_out[MESH_ID_BYTES]);
/* The same, never choosing exclude (may be NULL): to retry a request on
 * another host after the first one failed. */
int mesh_pick_host_except(const mesh *m, const char *model_id, const uint8_t *exclude,
                          uint8_t id_out[MESH_ID_BYTES]);

/* ---- typed streams of frames ---------------------------------------------*/

typedef struct mesh_stream mesh_stream;

typedef struct {
    void (*on_frame)(void *user, mesh_stream *s, const uint8_t *payload, size_t len);
    /* The peer will send no more frames; the stream is still open for sending. */
    void (*on_fin)(void *user, mesh_stream *s);
    /* Last callback: both sides finished (error NULL), or the stream was
     * reset, broke a frame bound, or lost its connection (error says why).
     * The handle is freed after this returns. */
    void (*on_close)(void *user, mesh_stream *s, const char *error);
} mesh_stream_handlers;

/* Opens a stream of the given type to a connected peer. NULL with err when
 * there is no live connection to it. If the peer is then declared dead or
 * leaves, the stream is closed at once (on_close with an error).
 * On a passive client the peer need not be connected: the connection is
 * dialled now, frames sent meanwhile are queued, and if it cannot be made
 * (10 s) the stream gets on_close with the reason. A host that stops
 * answering probes while streams to it are open is dropped the same way. */
mesh_stream *mesh_stream_open(mesh *m, const uint8_t peer_id[MESH_ID_BYTES], uint8_t type,
                              const mesh_stream_handlers *h, void *user, char *err, size_t errlen);
void mesh_stream_set_handlers(mesh_stream *s, const mesh_stream_handlers *h, void *user);
/* Queues one frame (len <= MESH_MAX_FRAME). 0 or -1. */
int mesh_stream_send(mesh_stream *s, const void *payload, size_t len);
/* Sending from a thread other than the loop's (a pipeline stage's compute
 * thread: its frame leaves without waking the loop). Take the transport's
 * lock with mesh_transport_trylock (0: taken; -1: the loop is busy in it,
 * go through the loop instead: it never waits), then mesh_stream_send_now
 * writes the frame's packets at once: 0 sent, 1 not now (nothing queued: the
 * stream is not on a direct connection yet or any more, or is relayed), -1
 * failed as mesh_stream_send. The caller must know s is alive meanwhile
 * (its owner clears its pointer under a lock the caller holds before it
 * aborts s, and its on_close takes that lock). Then mesh_transport_unlock. */
int mesh_transport_trylock(mesh *m);
void mesh_transport_unlock(mesh *m);
int mesh_stream_send_now(mesh_stream *s, const void *payload, size_t len);
/* No more frames from this side (FIN after the queued ones). */
void mesh_stream_finish(mesh_stream *s);
/* Resets the stream; no more callbacks; the handle is invalid on return. */
void mesh_stream_abort(mesh_stream *s);
/* The peer broke the stream's protocol: resets it with code 2 ("malformed"),
 * counts it in bad_frames, and calls on_close with why. The handle is
 * invalid on return (inside one of its callbacks: once that returns). */
void mesh_stream_reject(mesh_stream *s, const char *why);
/* Bytes queued and not yet acknowledged by the peer (back-pressure). */
size_t mesh_stream_unacked(const mesh_stream *s);
const uint8_t *mesh_stream_peer(const mesh_stream *s);

/* Called for each incoming stream of a registered type, once its type byte
 * arrived; the callee must set handlers (or abort the stream). Streams of an
 * unregistered type are reset and counted as errors. */
typedef void (*mesh_accept_fn)(void *ctx, mesh_stream *s);
void mesh_register_stream_type(mesh *m, uint8_t type, mesh_accept_fn accept, void *ctx);
/* A lower bound than MESH_MAX_FRAME on the incoming frames of a registered
 * type: a longer frame resets the stream (code 2). */
void mesh_set_frame_bound(mesh *m, uint8_t type, uint32_t max);
/* Streams of a registered type are taken from members only, unless this
 * opens the type to passive clients too (the API's tunnel does). */
void mesh_open_to_clients(mesh *m, uint8_t type);

/* Open QUIC connections that completed their handshake (normally one per
 * alive peer; briefly two while a duplicate is being closed). */
int mesh_connections(const mesh *m);

/* Counters for /api/status. */
typedef struct {
    uint64_t bad_frames;         /* malformed or oversized frames, unknown stream types */
    uint64_t streams_opened;
    uint64_t streams_accepted;
    uint64_t routes_served;      /* members: routing tables sent to clients */
    uint64_t clients_refused;    /* members: client connections over mesh_config.max_clients */
    uint64_t routes_pulled;      /* clients: routing tables received */
    uint64_t routes_failed;      /* clients: pulls that got no complete table */
    /* Failure detector (members): a peer's state changes as this node saw them. */
    uint64_t peers_suspected;    /* alive -> suspect (missed probes, lost connection, reported dead) */
    uint64_t peers_dead;         /* declared dead, or never reached */
    uint64_t peers_alive_again;  /* suspect or dead -> alive (answered, refuted) */
    uint64_t peers_left;         /* announced a clean exit (LEAVE) */
    /* Admission: connections closed because the peer did not prove it
     * knows the mesh secret (wrong or malformed proof, none within 1 s,
     * another stream first), ours or theirs. */
    uint64_t admission_refused;
    /* Limits under abuse (docs/mesh.md, "Limits"). */
    uint64_t peers_banned;       /* peers cut off for sending too many malformed frames */
    uint64_t banned_refused;     /* connections of banned peers refused */
    uint64_t conns_refused;      /* QUIC handshakes dropped: too many connections in all, half-open, or from one address */
    uint64_t conns_refused_addr; /* of those, by the per-address bounds */
    uint64_t conns_half_open;    /* now: incoming QUIC connections whose handshake is not done */
} mesh_counters;
void mesh_get_counters(const mesh *m, mesh_counters *out);

/* 1 for a passive client. */
int mesh_is_passive(const mesh *m);
/* Members: passive clients connected now. */
int mesh_clients_connected(const mesh *m);
/* Clients: pull the routing table now (a forwarded request failed, or a
 * model is unknown). At most one pull a second; no-op on members. */
void mesh_refresh_routes(mesh *m);
/* Clients: ms since the last complete routing table, -1 before the first. */
int64_t mesh_routes_age_ms(const mesh *m);

#endif
