/* swim.h: the failure detector's messages, encoded and decoded.
 *
 * Two families (bytes in docs/PROTOCOL.md, sections 6 and 8):
 *   - probes, on each connection's CONTROL stream, point to point: PING
 *     (nonce) -> ACK (same nonce), and PING_REQ (nonce, target): "probe the
 *     target for me and ACK my nonce if it answers";
 *   - notices, flooded on the GOSSIP streams next to node records: SUSPECT
 *     and DEAD (a claim by one node about another, unsigned: receivers never
 *     act on a claim without their own round trip), and LEAVE, signed by the
 *     leaving node itself (receivers act at once, so it must be unforgeable).
 *
 * A notice names the target's incarnation: the seq of the target's signed
 * node record that the sender knew. A record with a larger seq refutes it.
 *
 * Not here: what to do with them (detect.c). Threading: pure functions. */
#ifndef LLMESH_MESH_SWIM_H
#define LLMESH_MESH_SWIM_H

#include <stddef.h>
#include <stdint.h>

#include "mesh/identity.h"
#include "mesh/mesh.h"

/* Control stream message kinds (first payload byte). */
#define SWIM_PING 1
#define SWIM_ACK 2
#define SWIM_PING_REQ 3
/* Frame bound on the control stream: the largest message is 41 bytes; the
 * rest is room for a later version's fields. */
#define SWIM_CTRL_MAX 256

/* Gossip message kinds next to RECORD_KIND_NODE (1). */
#define SWIM_NOTICE_SUSPECT 2
#define SWIM_NOTICE_DEAD 3
#define SWIM_NOTICE_LEAVE 4
#define SWIM_CLAIM_BYTES (1 + MESH_ID_BYTES + 8 + MESH_ID_BYTES)          /* 73 */
#define SWIM_LEAVE_BYTES (1 + MESH_ID_BYTES + 8 + IDENTITY_SIG_BYTES)     /* 105 */

typedef struct {
    uint8_t kind;                     /* SWIM_PING, SWIM_ACK, SWIM_PING_REQ */
    uint64_t nonce;
    uint8_t target[MESH_ID_BYTES];    /* PING_REQ only */
} swim_probe;

typedef struct {
    uint8_t kind;                     /* SWIM_NOTICE_* */
    uint8_t node[MESH_ID_BYTES];      /* whom it is about */
    uint64_t incarnation;             /* the seq of node's record the sender knew */
    uint8_t from[MESH_ID_BYTES];      /* SUSPECT/DEAD: who claims it (for logs) */
} swim_notice;

/* Encodes a probe into out (SWIM_CTRL_MAX is enough); returns its length. */
size_t swim_probe_encode(const swim_probe *p, uint8_t *out);
/* 0 with *out, 1 for a kind this version does not know (skip it), -1 with
 * err when malformed. Bytes after the known fields are a later version's and
 * ignored. */
int swim_probe_decode(const uint8_t *p, size_t len, swim_probe *out, char *err, size_t errlen);

/* SUSPECT or DEAD into out (SWIM_CLAIM_BYTES); returns the length. */
size_t swim_claim_encode(const swim_notice *n, uint8_t *out);
/* LEAVE of id's own node at incarnation, signed with id, into out
 * (SWIM_LEAVE_BYTES). Returns the length, or -1 with err. */
int swim_leave_encode(const identity *id, uint64_t incarnation, uint8_t *out, char *err, size_t errlen);
/* Any notice: structure only (a LEAVE's signature is checked by
 * swim_leave_verify). 0, or -1 with err. Trailing bytes are malformed: these
 * messages are fixed-size and are forwarded as received. */
int swim_notice_decode(const uint8_t *p, size_t len, swim_notice *out, char *err, size_t errlen);
/* 1 when a decoded LEAVE carries its node's valid signature. */
int swim_leave_verify(const uint8_t *p, size_t len);

const char *swim_notice_name(uint8_t kind);

#endif
