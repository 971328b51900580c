/* routes.h: the routing-table pull of passive clients, encoded and decoded.
 * Bytes in docs/PROTOCOL.md ("Routes"); why in docs/mesh.md ("Passive
 * clients").
 *
 * A ROUTES stream carries one exchange: the client sends GET and finishes;
 * the member answers with the node records it holds for itself and for every
 * peer it sees alive (each the exact bytes its node signed, so the member
 * can leave nodes out but cannot forge or alter one), then END with the
 * number of records, and finishes.
 *
 * Threading: pure functions. */
#ifndef LLMESH_MESH_ROUTES_H
#define LLMESH_MESH_ROUTES_H

#include <stddef.h>
#include <stdint.h>

#include "mesh/record.h"

#define ROUTES_KIND_GET 0x10
#define ROUTES_KIND_END 0x11
#define ROUTES_END_BYTES 5
#define ROUTES_MAX_RECORDS 1024   /* bound on one answer (= the mesh's node table) */

/* GET: one byte. Bytes after it are a later version's and ignored. */
size_t routes_get_encode(uint8_t out[1]);
/* 1 when p is a GET (a request of this version), 0 otherwise. */
int routes_is_get(const uint8_t *p, size_t len);
size_t routes_end_encode(uint32_t count, uint8_t out[ROUTES_END_BYTES]);

/* An answer being read, frame by frame. */
typedef struct {
    node_record *recs;            /* verified records, in arrival order (an id at most once: the newest) */
    int n, cap;
    int dups;                     /* records of a node already in recs */
    int done;                     /* END arrived and its count matched */
    char error[160];
} routes_reply;

void routes_reply_init(routes_reply *r);
/* Takes one frame of the answer: 0 when more is expected, 1 when the answer
 * is complete, -1 (r->error says why) when the frame is malformed, a record
 * is forged, the count is off, or anything follows END. */
int routes_reply_add(routes_reply *r, const uint8_t *p, size_t len);
void routes_reply_free(routes_reply *r);

#endif
