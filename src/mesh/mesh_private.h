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
#include "mesh/admit.h"
#include "mesh/frame.h"
#include "mesh/identity.h"
#include "mesh/mesh.h"
#include "mesh/record.h"
#include "mesh/swim.h"
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
#define MESH_HANDSHAKE_MS 10000      /* a dial to a stale address gives up after this */
/* Failure detector defaults (docs/mesh.md, "Failure detection", says why). */
#define MESH_PROBE_INTERVAL_MS 1000
#define MESH_PROBE_TIMEOUT_MS 500
#define MESH_SUSPECT_MS 4000
#define MESH_DEAD_TTL_MS 60000
#define MESH_PROBES_PER_ROUND 8      /* alive peers probed per interval (suspects: all) */
#define MESH_INDIRECT_K 3            /* helpers asked to probe a suspect */
#define MESH_RELAYS 64               /* PING_REQs we are answering at once */
/* Passive clients (passive.c, docs/mesh.md "Passive clients"). */
#define MESH_MAX_CLIENTS 4096        /* client connections a member holds at once */
#define MESH_ROUTES_INTERVAL_MS 30000
#define MESH_ROUTES_MIN_GAP_MS 1000  /* mesh_refresh_routes: at most one pull a second */
#define MESH_ROUTES_TIMEOUT_MS 15000 /* a pull that has no complete answer by then failed */
#define MESH_CLIENT_IDLE_MS 60000    /* a client closes a connection unused this long */
#define MESH_CLIENT_AVOID_MS 30000   /* a host a client could not reach is skipped this long */
#define MESH_MEMBER_IDLE_MS 120000   /* a member closes a client connection unused this long */
#define MESH_PENDING_MAX (32u << 20) /* bytes queued on streams waiting for a connection */
/* A peer that sends this many malformed frames within the window is
 * disconnected and refused for MESH_BAN_MS (mesh.c, docs/mesh.md "Limits").
 * The defaults of mesh_config's max_clients, bad_frames_max and ban_ms. */
#define MESH_BAD_FRAMES_MAX 32
#define MESH_BAD_WINDOW_MS 10000
#define MESH_BAN_MS 60000
#define MESH_BANS 64                 /* peers banned at once (the oldest ban goes first) */
/* Admission (admission.c, docs/mesh.md "Admission"). */
#define ADMISSION_DEADLINE_MS 1000   /* a peer proves itself within this after the handshake */
#define ADMISSION_HOLD_MAX (64u << 10) /* dialler: bytes of streams that overtook the proof */

/* QUIC application error codes of stream resets (docs/PROTOCOL.md). */
#define MESH_RESET_ABORTED 1         /* the application gave up on the stream */
#define MESH_RESET_BAD_FRAME 2       /* malformed or oversized frame */
#define MESH_RESET_UNKNOWN_TYPE 3    /* stream type nobody registered */
#define MESH_RESET_REFUSED 4         /* accepted type, but the handler set no handlers */

/* A peer's state in this node's view (names in mesh.c; machine in
 * docs/mesh.md). EXPIRED: dead or left for longer than the TTL; hidden from
 * mesh_peers, never dialled (unless a bootstrap node of an isolated node),
 * kept only so that its old record cannot bring it back. */
typedef enum { NODE_CONNECTING, NODE_ALIVE, NODE_SUSPECT, NODE_DEAD, NODE_LEFT, NODE_EXPIRED } node_state;

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
    mesh_node *waiting;              /* clients: queued until a connection to it is up */
    uint8_t *queued;                 /* type byte and frames written meanwhile */
    size_t queued_len, queued_cap;
    int fin_queued;                  /* mesh_stream_finish while waiting */
    int busy;                        /* callbacks running on it: free deferred */
    int dead;                        /* no more callbacks; freed when !busy */
    int fin_seen;
    uint8_t *held;                   /* bytes that arrived before the link was admitted */
    size_t held_len, held_cap;
    int held_fin;
    mesh_stream *prev, *next;        /* in link->streams, or in waiting->pending */
};

struct mesh_link {
    mesh *m;
    quic_conn *qc;
    mesh_node *node;                 /* the peer; NULL for a passive client or a refused connection */
    uint8_t peer[MESH_ID_BYTES];     /* the peer's key (known at once for outgoing, after the handshake else) */
    int passive;                     /* members: the peer is a passive client (no node) */
    uint64_t last_active;            /* monotonic ms a user stream last opened or closed on it */
    /* clients: probing a host while requests to it are open (passive.c) */
    int probing;
    int ping_pending;
    uint64_t last_heard;
    int outgoing;
    int ready;
    uint64_t ready_order;            /* when it became ready (mesh-local counter) */
    int want_close;                  /* close once no user stream uses it (sweep) */
    int close_sent;
    const char *close_reason;
    int user_streams;                /* open streams other than gossip */
    mesh_stream *streams;
    mesh_stream *gossip;             /* where records go to this peer */
    mesh_stream *control;            /* probes to and from this peer (detect.c) */
    int force_close;                 /* close even with user streams (peer dead or left) */
    /* admission (admission.c): from the handshake until the peer proved it
     * knows the secret; ready stays 0 meanwhile */
    int admitting;
    int refused;                     /* admission failed: closing */
    int admit_proved;                /* the peer's proof checked */
    int admit_stream_seen;           /* acceptor: the dialler's ADMISSION stream came */
    admit_binding bind;              /* exporter value and the two ids */
    struct event *admit_timer;
    size_t held_bytes;               /* sum of the streams' held bytes */
    uint64_t bad_window_start;       /* malformed frames: the window's start, monotonic ms */
    int bad_in_window;
    int banned;                      /* cut off for malformed frames */
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
    uint64_t rx_past, tx_past;       /* bytes of its connections that closed (ready ones) */
    int dialing;                     /* outgoing connections in handshake */
    node_state state;
    int failures;                    /* consecutive failed dial attempts */
    struct event *dial_timer;
    /* failure detector (detect.c); times are monotonic ms */
    int probe_pending;               /* a direct PING awaits its ACK */
    uint64_t probe_nonce, probe_deadline;
    uint64_t indirect_nonce;         /* the nonce our PING_REQs about it carry; 0 = none */
    int indirect_round;              /* alive, missed a probe: helpers asked, not suspect yet */
    uint64_t suspect_deadline;       /* SUSPECT: declared dead at this time */
    uint64_t suspect_inc;            /* the incarnation (record seq) suspected */
    uint64_t down_at;                /* DEAD/LEFT since; expires at down_at + TTL */
    uint64_t suspect_relayed;        /* incarnation + 1 of the last SUSPECT forwarded; 0 = none */
    uint64_t dead_relayed;           /* same for DEAD */
    int has_left;
    uint64_t leave_inc;              /* records with seq <= this are from before its LEAVE */
    struct nat_node *nat;            /* reachability state (nat.c), NULL until needed */
    mesh_stream *pending;            /* clients: streams waiting for a connection to it */
    int listed;                      /* clients: in the last routing table */
    char down_reason[128];           /* clients: why the last dial failed */
    mesh_node *next;                 /* m->nodes, sorted by id */
};

typedef struct {
    mesh_accept_fn fn;
    void *ctx;
    int clients;                     /* passive clients may open it too */
    uint32_t frame_max;              /* bound on its frames, 0 = MESH_MAX_FRAME */
} mesh_type_slot;

struct mesh {
    struct event_base *base;
    uint32_t max_clients;            /* mesh_config's bounds, resolved (no zeros) */
    uint32_t bad_frames_max;
    uint32_t ban_ms;
    identity self;
    uint8_t secret[ADMIT_SECRET_BYTES]; /* the mesh secret: never logged */
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
    /* failure detector (detect.c) */
    uint32_t probe_interval_ms, probe_timeout_ms, suspect_ms, verify_ms, dead_ttl_ms;
    struct event *detect_ev;         /* persistent, a fraction of the probe timeout */
    uint64_t next_round;             /* monotonic ms of the next probe round */
    uint8_t probe_cursor[MESH_ID_BYTES]; /* round robin: last node probed */
    uint64_t next_nonce;
    struct {
        uint64_t nonce;              /* of our PING to the target */
        uint64_t req_nonce;          /* of the requester's PING_REQ */
        uint8_t requester[MESH_ID_BYTES];
        uint8_t target[MESH_ID_BYTES];
        uint64_t expires;            /* 0 = free slot */
    } relays[MESH_RELAYS];
    int next_relay;
    int left;                        /* mesh_leave was called */
    int test_mute;                   /* tests: answer no probe, refute nothing (a hung node) */
    int test_admit_anyone;           /* tests: take any dialler's proof (a stranger's acceptor) */
    struct nat_state *nat;           /* observed addresses, punching, relaying (nat.c) */
    int passive;                     /* this node is a passive client */
    int n_clients;                   /* members: passive links open */
    struct passive_state *pv;        /* clients: routing-table pulls, probes (passive.c) */
    struct {
        uint8_t id[MESH_ID_BYTES];
        uint64_t until;              /* monotonic ms; 0 = free slot */
    } bans[MESH_BANS];
};

/* mesh.c */
mesh_node *mesh_node_find(const mesh *m, const uint8_t id[MESH_ID_BYTES]);
/* Finds or adds (NULL when the table is full). */
mesh_node *mesh_node_get(mesh *m, const uint8_t id[MESH_ID_BYTES]);
/* Asks for a connection to n if there is none (dial rule in docs/mesh.md). */
void mesh_node_want_connection(mesh *m, mesh_node *n, int now);
/* Dials n now whatever the dial rules say (a passive client's on-demand
 * connection); nothing when a dial is under way or it is connected. */
void mesh_node_dial_now(mesh *m, mesh_node *n);
/* 1 when some peer has a connection. */
int mesh_any_alive(const mesh *m);
/* This node's record changed: sign and gossip it on the loop's next turn. */
void mesh_mark_dirty(mesh *m);
/* The state names of mesh_peer.state. */
const char *mesh_node_state_name(node_state st);
/* Closes l at once, user streams or not (its peer is dead). */
void mesh_link_close_now(mesh_link *l, const char *reason);
/* No new streams on l; closed once the streams on it have finished (its
 * peer left, and is draining its requests). */
void mesh_link_close_when_idle(mesh_link *l, const char *reason);
/* A link for an outgoing connection to n that someone other than the
 * normal dial started (nat.c: punching, relaying); counts in n->dialing.
 * NULL (c closed) when out of memory. */
mesh_link *mesh_link_dial(mesh *m, quic_conn *c, mesh_node *n);
/* Called by admission.c when l's peer proved itself: l becomes ready (the
 * rest of what a completed handshake did before admission existed). */
void mesh_link_admitted(mesh_link *l);
/* A malformed frame or stream from l's peer (stream.c); too many within the
 * window ban it. */
void mesh_link_bad_frame(mesh_link *l);
/* Called by stream.c when a link loses a user stream. */
void mesh_link_stream_gone(mesh_link *l);
void mesh_schedule_sweep(mesh *m);

/* stream.c */
extern const quic_stream_callbacks mesh_stream_quic_callbacks;
mesh_stream *mesh_stream_open_on(mesh_link *l, uint8_t type, const mesh_stream_handlers *h,
                                 void *user);
void mesh_stream_incoming(mesh_link *l, quic_stream *qs);
/* Plays the bytes held on l's streams while it was in admission. */
void mesh_link_release_held(mesh_link *l);
/* Detaches every stream still on a closing link (quic already closed them). */
void mesh_link_drop_streams(mesh_link *l, const char *reason);

/* 1 for the stream types the mesh runs itself (not user streams: a link
 * with only these open may be closed as a duplicate). */
int mesh_stream_type_internal(uint8_t type);

/* detect.c: the failure detector */
int detect_init(mesh *m, const mesh_config *cfg);
void detect_free(mesh *m);
void detect_register(mesh *m);
/* Opens the control stream on a link we dialled. */
void detect_start(mesh_link *l);
/* A gossip frame of a notice kind (SUSPECT, DEAD, LEAVE) from a peer. -1
 * when it is malformed or forged (the caller resets the stream). */
int detect_on_notice(mesh *m, mesh_link *from, const uint8_t *p, size_t len);
/* n got a connection (a completed handshake is a round trip). */
void detect_node_up(mesh *m, mesh_node *n);
/* n's last connection is gone without a LEAVE: suspect it. */
void detect_connection_lost(mesh *m, mesh_node *n, const char *reason);
/* A record of n newer than the one held arrived (was_state: before it). */
void detect_newer_record(mesh *m, mesh_node *n);
uint64_t detect_now_ms(void);
/* Reads one CONTROL-stream frame into *out: 0, 1 for a kind this version
 * does not know (skip it), -1 when malformed (s has been reset). */
int detect_read_probe(mesh_stream *s, const uint8_t *p, size_t len, swim_probe *out);
/* Sends a PING with a fresh nonce on a CONTROL stream. 0 or -1. */
int detect_send_ping(mesh *m, mesh_stream *s);
/* Tests: a muted node answers no probe and refutes nothing, as a node whose
 * process hangs while its kernel and QUIC stack still acknowledge packets. */
void mesh_test_mute(mesh *m, int on);
/* Tests: as an acceptor, take any dialler's proof unchecked and answer with
 * our own: a stranger that lets anyone in, to show that a dialler checks
 * the acceptor's proof too (admission.c). */
void mesh_test_admit_anyone(mesh *m, int on);

/* stream.c, clients: streams opened before the connection is up */
mesh_stream *mesh_stream_open_waiting(mesh_node *n, uint8_t type, const mesh_stream_handlers *h,
                                      void *user);
/* n's connection is ready: its waiting streams go out on it. */
void mesh_node_flush_pending(mesh_node *n);
/* n cannot be reached: its waiting streams get on_close(why). */
void mesh_node_fail_pending(mesh_node *n, const char *why);

/* admission.c */
void admission_register(mesh *m);
/* l's handshake is done: exchange proofs (the dialler sends first). */
void admission_start(mesh_link *l);
/* Refuses l's peer (counted, logged, connection closed); no-op once l is
 * admitted or already refused. */
void admission_refuse(mesh_link *l, const char *why);
void admission_link_free(mesh_link *l);

/* passive.c */
int passive_init(mesh *m, const mesh_config *cfg);
void passive_free(mesh *m);
void passive_register(mesh *m);
/* Members: an incoming connection from a passive client (counted, capped). */
void passive_link_accepted(mesh *m, mesh_link *l);
void passive_link_closed(mesh *m, mesh_link *l);
/* Stream types a passive client may open on a member. */
int passive_type_allowed(const mesh *m, uint8_t type);
/* Clients: a dial to n failed (pending streams fail, routes are pulled). */
void passive_dial_failed(mesh *m, mesh_node *n, const char *reason);
/* Clients: n's connection closed; by_us when the client closed it. */
void passive_link_lost(mesh *m, mesh_node *n, int by_us);
/* Members: closes client connections idle for MESH_MEMBER_IDLE_MS (tick). */
void passive_sweep_idle(mesh *m);

/* gossip.c */
void gossip_register(mesh *m);
/* Opens the gossip stream on a new outgoing link and sends the table. */
void gossip_start(mesh_link *l);
/* Sends one record (raw bytes) on every link except skip. */
void gossip_broadcast(mesh *m, const uint8_t *raw, size_t len, const mesh_link *skip);
/* Signs this node's record anew (seq bumped) and sends it everywhere. */
void gossip_publish(mesh *m);

#endif
