/* record.h: node records, what gossip carries about each node.
 *
 * A record says who a node is (id), where to dial it (addresses), what it
 * does (role, models served, memory) and how new the information is (seq:
 * a larger seq replaces a smaller one). Each record is signed by its node's
 * key, so a record can travel through any number of peers and nobody but
 * the node itself can make one in its name. Byte layout: docs/PROTOCOL.md
 * ("Node record").
 *
 * Records are kept and forwarded as the exact bytes their node signed
 * (extension fields that a newer llmesh appends stay signed and pass through
 * older nodes untouched); record_decode reads the fields this version knows.
 * One extension field is opaque here: the application field, which the
 * layers above the mesh use to tell every node and client what they want
 * known (model plans), so the mesh need not know what a plan is.
 *
 * Not here: who learns what when (mesh.c). Threading: pure functions. */
#ifndef LLMESH_MESH_RECORD_H
#define LLMESH_MESH_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "mesh/addr.h"
#include "mesh/identity.h"
#include "mesh/mesh.h"

/* Gossip message kinds: the first payload byte of a frame on a GOSSIP stream. */
#define RECORD_KIND_NODE 1

/* Role codes on the wire. Unknown codes decode as "unknown" so that a newer
 * role does not make older nodes drop the whole record. */
#define RECORD_ROLE_HOST 1
#define RECORD_ROLE_STANDBY 2
#define RECORD_ROLE_CLIENT 3

/* Bound on one encoded record (kind + body + signature). The largest record
 * this version writes is about 7.4 KiB (2.3 KiB of fields, an application
 * field of at most RECORD_MAX_APP, a holdings field of at most
 * RECORD_MAX_HOLDINGS); the rest is room for extensions. */
#define RECORD_MAX_BYTES 8192
/* Bound on the application field: bytes the mesh carries for the layers
 * above it (serve/ puts its model plans there) without reading them. */
#define RECORD_MAX_APP MESH_MAX_APP
/* Bound on the holdings field: what weights the node holds (models/ writes
 * and reads it; the mesh only carries it). */
#define RECORD_MAX_HOLDINGS MESH_MAX_HOLDINGS

/* Extension field tags (after the models; docs/PROTOCOL.md, "Node record"). */
#define RECORD_FIELD_MEMORY_USED 1 /* u64: bytes of the memory budget in use */
#define RECORD_FIELD_APP 2         /* opaque application bytes */
#define RECORD_FIELD_CLIENTS 3     /* u32: passive clients connected now */
#define RECORD_FIELD_HOLDINGS 4    /* opaque: which weights the node can serve to peers */
#define RECORD_MIN_BYTES (1 + MESH_ID_BYTES + 8 + 1 + 8 + 1 + 1 + IDENTITY_SIG_BYTES)

typedef struct {
    uint8_t id[MESH_ID_BYTES];
    uint64_t seq;
    uint8_t role;                 /* RECORD_ROLE_* or an unknown code */
    uint64_t memory_bytes;        /* the node's memory budget for models */
    uint64_t memory_used;         /* bytes of the budget in use */
    uint32_t clients;             /* passive clients connected to it now */
    mesh_addr addrs[MESH_MAX_ADDRS];
    int n_addrs;
    char models[MESH_MAX_MODELS][MESH_MAX_NAME];
    int n_models;
    uint16_t app_len;
    uint8_t app[RECORD_MAX_APP];  /* application field, opaque to the mesh */
    uint16_t holdings_len;
    uint8_t holdings[RECORD_MAX_HOLDINGS]; /* holdings field, opaque to the mesh */
} node_record;

/* Encodes r and signs it with id (whose public key must be r->id) into out
 * (RECORD_MAX_BYTES is enough). Returns the length, or -1 with err. */
int record_encode(const node_record *r, const identity *id, uint8_t *out, size_t cap,
                  char *err, size_t errlen);

/* Reads an encoded record (the whole frame payload, kind byte included).
 * Checks structure and bounds only; record_verify checks the signature.
 * 0, or -1 with err. */
int record_decode(const uint8_t *p, size_t len, node_record *out, char *err, size_t errlen);

/* 1 when the signature at the end of a decoded record is valid for id. */
int record_verify(const uint8_t *p, size_t len, const uint8_t id[MESH_ID_BYTES]);

/* "host", "standby", "client" or "unknown". */
const char *record_role_name(uint8_t role);
/* RECORD_ROLE_* for a name, or 0 when it is none of the three. */
uint8_t record_role_code(const char *name);

/* 1 when name may be a model id in a record: 1..MESH_MAX_NAME-1 bytes, no
 * control characters. */
int record_model_name_ok(const char *name, size_t len);

#endif
