/* nat.h: reachability of nodes behind NAT (docs/reachability.md).
 *
 * Three mechanisms, all over connections the mesh already has:
 *   - observed addresses: each side of a new direct connection tells the
 *     other the address it sees it at; a node adds what its peers see
 *     (its NAT's public address) to the addresses it advertises;
 *   - hole punching: a node that dials another asks its peers to introduce
 *     them; an introducer connected to both tells each the other's observed
 *     address, and both send to it at once (RFC 5128, 3.3);
 *   - relaying: when a node still has no connection to another after
 *     NAT_RELAY_AFTER_MS, it runs the QUIC connection to it through a peer
 *     connected to both (a virtual path of net/quic over a RELAY stream). TLS
 *     runs end to end inside: the relay forwards ciphertext it cannot read.
 *
 * Hooks called by mesh.c; everything else is internal. Event-loop thread. */
#ifndef LLMESH_MESH_NAT_H
#define LLMESH_MESH_NAT_H

#include "mesh/mesh_private.h"

#define NAT_RELAY_AFTER_MS 3000    /* no direct connection by then: relay */
#define NAT_INTRO_EVERY_MS 1000    /* at most one round of introductions per node per second */
#define NAT_UPGRADE_EVERY_MS 30000 /* a relayed link tries for a direct path again this often */
#define NAT_INTRODUCERS 3          /* peers asked to introduce at once */
#define NAT_MAX_PATHS 256          /* relayed connections of this node (either end) */
#define NAT_MAX_RELAYED 64         /* pairs this node relays for others */
#define NAT_RELAY_QUEUE 262144     /* bytes unacknowledged on a relay stream before packets drop */
#define NAT_RELAY_RATE 8388608     /* bytes per second per relayed pair (then packets drop) */
#define NAT_INTROS_PER_SEC 50      /* introductions this node makes for others */

/* Registers the stream types and the virtual-path sender. 0 or -1. */
int nat_init(mesh *m);
void nat_free(mesh *m);
/* mesh.c started a dial to n: ask for introductions, arm the relay timer.
 * Relayed links also ask again every NAT_UPGRADE_EVERY_MS (from the sweep):
 * a punch that works later moves the pair to a direct connection. */
void nat_dial_started(mesh *m, mesh_node *n);
/* l completed its handshake: tell the peer its observed address. */
void nat_link_ready(mesh_link *l);
/* 1 when l runs through a relay. */
int nat_link_relayed(const mesh_link *l);

#endif
