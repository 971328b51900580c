/* peer_file.h: a whole file fetched from peers by its SHA-256 (FETCH
 * streams, FILE_OPEN / FILE_GET, docs/PROTOCOL.md section 14), read as a
 * blocking byte source by a download thread (download.h dl_source).
 *
 * The streams live on the event-loop thread; the reader is another thread
 * (a load's download thread). They meet under one lock: the loop keeps at
 * most PEER_FILE_WINDOW bytes per stream asked for or received and not yet
 * read, so a slow disk never makes us buffer more; the reader takes the
 * pieces in order, writes and hashes them (download.c): hashing never runs
 * on the loop. What arrives is not trusted: the reader's whole-file SHA-256
 * decides. With several holders, one stream each asks for pieces at once
 * (peer_file.c says how a slow or dead one is worked around); the reader
 * sees one stream of bytes.
 *
 * Not here: which peers hold the file (the node records, serve/), the
 * partial file, its hash and the fallback to the hub (download.c). */
#ifndef LLMESH_MODELS_PEER_FILE_H
#define LLMESH_MODELS_PEER_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "mesh/mesh.h"
#include "models/download.h"

struct event_base;

#define PEER_FILE_WINDOW (8u << 20)
#define PEER_FILE_IDLE_MS 10000 /* no byte for this long: the peers are given up on */
#define PEER_FILE_MAX_PEERS 4     /* holders asked at once */
#define PEER_FILE_STALL_MS 5000   /* a holder with pieces out and none back, while another works */
#define PEER_FILE_HOL_MS 1000     /* the piece the reader waits for, out this long, is asked again */
#define PEER_FILE_TICK_MS 500

typedef struct peer_file peer_file;

/* Any thread: starts fetching bytes [offset, size) of the file whose
 * SHA-256 is sha256 from n_peers peers at once (at most PEER_FILE_MAX_PEERS
 * are used; the streams open on the loop thread). NULL when out of memory
 * or n_peers < 1. */
peer_file *peer_file_open(struct event_base *base, mesh *m, const uint8_t (*peers)[MESH_ID_BYTES], int n_peers,
                          const uint8_t sha256[32], uint64_t size, uint64_t offset);
/* The reader's thread: the next bytes, in order, into buf (at most cap).
 * Blocks until some arrive. The count (> 0), 0 at the end of the file, or
 * -1 with err (every peer refused, broke its stream, died or stalled, or
 * nothing came for PEER_FILE_IDLE_MS). */
long peer_file_read(peer_file *pf, uint8_t *buf, size_t cap, const _Atomic int *cancel, char *err,
                    size_t errlen);
/* The reader's thread: done with it (the stream is closed on the loop). */
void peer_file_close(peer_file *pf);

/* Which peers hold which file: what dl_fetch's source opens. */
typedef struct {
    struct event_base *base;
    mesh *mesh;
    uint8_t peer[MESH_ID_BYTES];                            /* a holder */
    uint8_t more[PEER_FILE_MAX_PEERS - 1][MESH_ID_BYTES];   /* other holders, asked at once */
    int n_more;
    uint8_t sha256[32];
    uint64_t size;
} peer_file_target;
/* A download source (download.h) reading t's file from t's peers; t must
 * outlive the download. */
void peer_file_source(const peer_file_target *t, dl_source *out);

#endif
