/* mesh_private.h: the structures shared by mesh.c (nodes, connections,
 * dialling), stream.c (typed streams of frames) and gossip.c (node records).
 * Not an API: nothing outside src/mesh includes this.
 *
 * Ownership: the mesh owns its nodes (never freed before mesh_free) and its
 * links (one per QUIC connection, freed in the conn_closed callback). A link
 * owns the mesh_streams opened on it until they are closed; a stream handle
 * is freed when it is dead and no callback is running on it (busy == 0).
 * Everything runs on the event-loop thread. */
#ifndef LLMESH_MESH_PRIVATE_H
#define LLMESH_MESH_PRIVATE_H

#include <event2/event.h>

#include "mesh/addr.h"
#include "mesh/frame.h"
#include "mesh/identity.h"
#include "mesh/mesh.h"
#include "mesh/record.h"
#include "mesh/token.h"
#include "net/quic.h"

#define MESH_LOG "mesh"
#define MESH_MAX_NODES 1024          /* bound on the node table (records are cheap to forge keys for) */
#define MESH_DIAL_MAX (2 * MESH_MAX_ADDRS + 1)
#define MESH_TICK_MS 10000           /* own record re-sent on every link: keep-alive + refresh */
#define MESH_YIELD_MS 1500           /* the higher id waits this long for the lower id to dial */
#define MESH_BACKOFF_MIN_MS 1000
#define MESH_BACKOFF_MAX_MS 30000
#define MESH_BOOTSTRAP_MAX_MS 5000   /* join tokens, while no peer is connected */
#define MESH_HANDSHAKE_MS 5000

/* QUIC application error codes of stream resets (docs/PROTOCOL.md). */
#define MESH_RESET_ABORTED 1         /* the application gave up on the stream */
#define MESH_RESET_BAD_FRAME 2       /* malformed or oversized frame */
#define MESH_RESET_UNKNOWN_TYPE 3    /* stream type nobody registered */
#define MESH_RESET_REFUSED 4         /* accepted type, but the handler set no handlers */

typedef enum { NODE_CONNECTING, NODE_ALIVE, NODE_DEAD } node_state;

typedef struct mesh_node mesh_node;
typedef struct mesh_link mesh_link;

struct mesh_stream {
    mesh *m;
    mesh_link *link;                 /* NULL once detached */
    quic_stream *qs;                 /* NULL once reset or closed */
    uint8_t peer[MESH_ID_BYTES];
    uint8_t type;
    int typed;                       /* type known (always for outgoing; after byte 1 for incoming) */
    int has_handlers;
    mesh_stream_handlers h;
    void *user;
    frame_reader reader;
    int busy;                        /* callbacks running on it: free deferred */
    int dead;                        /* no more callbacks; freed when !busy */
    int fin_seen;
    mesh_stream *prev, *next;        /* in link->streams */
};

struct mesh_link {
    mesh *m;
    quic_conn *qc;
    mesh_node *node;                 /* the peer; NULL for a refused incoming connection */
    int outgoing;
    int ready;
    uint64_t ready_order;            /* when it became ready (mesh-local counter) */
    int want_close;                  /* close once no user stream uses it (sweep) */
    int close_sent;
    const char *close_reason;
    int user_streams;                /* open streams other than gossip */
    mesh_stream *streams;
    mesh_stream *gossip;             /* where records go to this peer */
    mesh_link *next;                 /* in m->links */
};

struct mesh_node {
    mesh *m;
    uint8_t id[MESH_ID_BYTES];
    char id_hex[MESH_ID_HEX];
    int has_record;
    node_record rec;
    uint8_t *raw;                    /* the record exactly as signed, for forwarding */
    size_t raw_len;
    mesh_addr token_addrs[MESH_MAX_ADDRS];
    int n_token_addrs;
    mesh_addr seen_addr;             /* source of its last incoming connection */
    int has_seen_addr;
    int bootstrap;                   /* named by a join token */
    mesh_link *link;                 /* the connection used for new streams, or NULL */
    int dialing;                     /* outgoing connections in handshake */
    node_state state;
    int failures;                    /* consecutive failed dial attempts */
    struct event *dial_timer;
    mesh_node *next;                 /* m->nodes, sorted by id */
};

typedef struct {
    mesh_accept_fn fn;
    void *ctx;
} mesh_type_slot;

struct mesh {
    struct event_base *base;
    identity self;
    char id_hex[MESH_ID_HEX];
    quic_endpoint *ep;
    mesh_addr listen;                /* with the bound port */
    char token[TOKEN_MAX_TEXT];
    node_record rec;                 /* this node's record */
    uint8_t raw[RECORD_MAX_BYTES];
    size_t raw_len;
    int dirty;                       /* rec changed, not yet signed and sent */
    struct event *publish_ev;        /* deferred: several setters, one new record */
    struct event *sweep_ev;          /* deferred: close links marked want_close */
    struct event *tick;
    mesh_node *nodes;
    int n_nodes;
    mesh_link *links;
    uint64_t link_order;
    mesh_type_slot types[256];
    mesh_counters counters;
    int freeing;
};

/* mesh.c */
mesh_node *mesh_node_find(const mesh *m, const uint8_t id[MESH_ID_BYTES]);
/* Finds or adds (NULL when the table is full). */
mesh_node *mesh_node_get(mesh *m, const uint8_t id[MESH_ID_BYTES]);
/* Asks for a connection to n if there is none (dial rule in docs/mesh.md). */
void mesh_node_want_connection(mesh *m, mesh_node *n, int now);
/* Called by stream.c when a link loses a user stream. */
void mesh_link_stream_gone(mesh_link *l);
void mesh_schedule_sweep(mesh *m);

/* stream.c */
extern const quic_stream_callbacks mesh_stream_quic_callbacks;
mesh_stream *mesh_stream_open_on(mesh_link *l, uint8_t type, const mesh_stream_handlers *h,
                                 void *user);
void mesh_stream_incoming(mesh_link *l, quic_stream *qs);
/* A peer broke the stream's protocol: reset (code 2), count in bad_frames,
 * on_close with why. Safe inside the stream's own callbacks. */
void mesh_stream_reject(mesh_stream *s, const char *why);
/* Detaches every stream still on a closing link (quic already closed them). */
void mesh_link_drop_streams(mesh_link *l, const char *reason);

/* gossip.c */
void gossip_register(mesh *m);
/* Opens the gossip stream on a new outgoing link and sends the table. */
void gossip_start(mesh_link *l);
/* Sends one record (raw bytes) on every link except skip. */
void gossip_broadcast(mesh *m, const uint8_t *raw, size_t len, const mesh_link *skip);
/* Signs this node's record anew (seq bumped) and sends it everywhere. */
void gossip_publish(mesh *m);

#endif
