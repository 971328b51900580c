/* natmsg.h: the reachability messages (hole punching and relaying), encoded
 * and decoded. Bytes in docs/PROTOCOL.md, sections 9 and 10; why in
 * docs/reachability.md.
 *
 * Two stream types:
 *   - RENDEZVOUS: one message per stream (open, one frame, FIN). OBSERVED
 *     ("I see you at this address"), INTRO ("introduce me to this node"),
 *     PUNCH ("this node is at this address: send to it now").
 *   - RELAY: the first frame says what the stream is (CONNECT to the relay:
 *     "carry my packets to this node"; FROM, from the relay: "packets from
 *     this node"), then one PACKET frame per QUIC packet of the relayed
 *     connection, both ways.
 *
 * Threading: pure functions. */
#ifndef LLMESH_MESH_NATMSG_H
#define LLMESH_MESH_NATMSG_H

#include <stddef.h>
#include <stdint.h>

#include "mesh/addr.h"
#include "mesh/mesh.h"

#define NAT_MSG_OBSERVED 1
#define NAT_MSG_INTRO 2
#define NAT_MSG_PUNCH 3
#define NAT_MSG_MAX 128           /* frame bound on RENDEZVOUS streams */

#define NAT_RELAY_CONNECT 1
#define NAT_RELAY_FROM 2
#define NAT_RELAY_PACKET 3
#define NAT_PACKET_MAX 1500       /* a QUIC packet carried on a RELAY stream */
#define NAT_RELAY_FRAME_MAX (1 + NAT_PACKET_MAX)

typedef struct {
    uint8_t kind;                 /* NAT_MSG_* */
    uint8_t node[MESH_ID_BYTES];  /* INTRO: the target; PUNCH: the peer to punch to */
    mesh_addr addr;               /* OBSERVED, PUNCH */
} nat_msg;

/* Encodes m into out (NAT_MSG_MAX bytes); returns the length. */
size_t nat_msg_encode(const nat_msg *m, uint8_t *out);
/* 0 with *out, 1 for a kind this version does not know (ignore it), -1 with
 * err when malformed. Bytes after the known fields are a later version's and
 * ignored. */
int nat_msg_decode(const uint8_t *p, size_t len, nat_msg *out, char *err, size_t errlen);

/* The first frame of a RELAY stream: CONNECT or FROM with a node id. */
size_t nat_relay_head_encode(uint8_t kind, const uint8_t node[MESH_ID_BYTES], uint8_t *out);
/* 0 with *kind and node, -1 with err (anything but a well-formed CONNECT or
 * FROM; trailing bytes are ignored as a later version's). */
int nat_relay_head_decode(const uint8_t *p, size_t len, uint8_t *kind, uint8_t node[MESH_ID_BYTES],
                          char *err, size_t errlen);
/* A later frame: 0 with the packet bytes (1..NAT_PACKET_MAX), 1 for an
 * unknown kind (skip), -1 with err. */
int nat_relay_packet_decode(const uint8_t *p, size_t len, const uint8_t **pkt, size_t *pktlen,
                            char *err, size_t errlen);

#endif
