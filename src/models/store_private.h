/* store_private.h: what store.c (local files, cache, worker threads),
 * serve.c and fetch.c (the two sides of FETCH streams) share, plus the
 * knobs tests turn.
 * Not for use outside src/models/ except by tests. */
#ifndef LLMESH_MODELS_STORE_PRIVATE_H
#define LLMESH_MODELS_STORE_PRIVATE_H

#include <pthread.h>
#include <stdatomic.h>

#include "models/fetch_wire.h"
#include "models/weights_store.h"

#define WEIGHTS_LOG "weights"

/* Requester: chunk bytes asked for and not yet received, per stream (one
 * per source), and chunk bytes received and not yet written, per job.
 * Enough to fill a 1 Gbit/s link up to ~60 ms of RTT, small enough that
 * stage frames on the same connection do not queue behind much bulk
 * (docs/weights.md). */
#define FETCH_WINDOW_BYTES (8u << 20)
#define FETCH_MAX_STREAMS 4           /* sources one fetch asks at once (a bit each in part_chunk) */
#define FETCH_STALL_MS 5000           /* a stream with chunks out and none back for this long is dropped */
#define FETCH_TICK_MS 500             /* how often a job looks for stalled streams and the endgame */
#define FETCH_ENDGAME_MS 1000         /* a chunk out this long is asked of another source too (at the end) */
#define FETCH_MAX_TALLY 16            /* peers whose bytes the store counts (fetched_from) */
#define FETCH_MAX_OUTSTANDING 32      /* chunk requests in flight, whatever their size */
#define FETCH_MAX_ATTEMPTS 6          /* failed attempts in a row (no chunk between) */
#define FETCH_RETRY_BASE_MS 250       /* doubles per attempt */
#define FETCH_RETRY_CAP_MS 8000
#define FETCH_MAX_BAD_CHUNKS 4        /* corrupt chunks from one fetch's peer before giving up */
#define FETCH_MAX_SOURCES 16          /* peers a fetch picks among (those that hold its part) */
#define FETCH_MAX_SHUNNED 16          /* peers a fetch stops asking (refused it, bad chunks) */
#define FETCH_MAX_PEERS 256           /* peers whose holdings are looked at */
#define FETCH_LOG_EVERY_MS 5000
#define FETCH_SYNC_EVERY (64u << 20)  /* fdatasync the part every so many bytes (fetch.c) */
/* Server: requests queued while the stream's unacknowledged bytes are over
 * SERVE_UNACKED_MAX (a requester that asks faster than it reads). A queue
 * longer than a requester may have outstanding is a protocol error. */
#define SERVE_MAX_QUEUE 64
#define SERVE_UNACKED_MAX (2 * FETCH_WINDOW_BYTES)
#define SERVE_MAX_STREAMS 64
#define SERVE_POLL_MS 2

/* A local full file. Entries are never freed before the store (a replaced
 * one is marked stale), so serving streams can hold a pointer. */
typedef struct local_file {
    char *path;                  /* absolute */
    fetch_file_key key;
    weights_manifest *manifest;
    gguf_file *open;             /* mapped for serving, on first use */
    uint64_t *offsets;           /* per tensor: its data's offset in the file (with open) */
    int stale;
    struct local_file *next;
} local_file;

/* A complete part in the cache (a fetch finished it, or it was there at
 * start with a record that matches it), served to peers like a full file.
 * Never freed before the store (a changed or removed one is marked stale),
 * so serving streams can hold a pointer. */
typedef struct cached_part {
    uint8_t hash[WEIGHTS_HASH_BYTES];
    int first, end, head;        /* layers [first, end), with the head tensors or not */
    char *path;                  /* the .gguf */
    fetch_file_key key;          /* as its record says */
    weights_manifest *manifest;  /* its record's: every tensor's entry, chunk hashes of the part's */
    int fd;                      /* open for serving, on first use; -1 before */
    uint64_t *offsets;           /* per tensor of manifest: its data's offset in the part (with fd) */
    int stale;
    struct cached_part *next;
} cached_part;

/* A job for a worker thread. `done` runs on the loop thread (with the
 * store still alive) unless the store is being freed; the owner may set
 * cancel meanwhile (then done sees it). Two lanes, each its own thread, so
 * that making a finished part durable never waits behind a long hash. */
#define STORE_LANE_HASH 0            /* hashing files, checking partial files */
#define STORE_LANE_SYNC 1            /* fsync and rename of a finished part */
#define STORE_LANES 2
typedef struct work work;
struct work {
    void (*run)(work *w);                       /* worker thread */
    void (*done)(weights_store *ws, work *w);   /* loop thread; frees w */
    void (*drop)(work *w);                      /* frees w without done (store shutting down) */
    atomic_int cancel;
    work *next;
};

typedef struct fetch_job fetch_job;
typedef struct serve_stream serve_stream;

struct weights_store {
    struct event_base *base;
    mesh *mesh;
    char *home, *manifests_dir, *parts_dir;
    local_file *files;
    cached_part *parts;
    fetch_job *jobs;
    weights_fetch *answers;      /* fetches answered from the cache, on the next loop turn */
    serve_stream *serving;
    int n_serving;
    weights_counters counters;
    weights_source_bytes fetched_from[FETCH_MAX_TALLY]; /* verified chunk bytes per source peer */
    int n_fetched_from;
    int n_threads;               /* for hashing; 0 = one per CPU */
    weights_held_file held[WEIGHTS_MAX_HELD]; /* whole files served by SHA-256 */
    int n_held;
    int test_file_delay_ms;      /* LLMESH_DEBUG_FILE_SERVE_DELAY_MS: a pause after each FILE_DATA */
    int test_chunk_delay_ms;     /* LLMESH_DEBUG_CHUNK_SERVE_DELAY_MS: a pause after each DATA */
    uint8_t *scratch;            /* one DATA frame being built */
    size_t scratch_cap;
    /* workers: one thread per lane; lock guards every field below */
    struct store_lane {
        weights_store *ws;
        pthread_t thread;
        int started;
        work *queue, *tail;
        work *running;           /* taken by the lane's thread now */
    } lanes[STORE_LANES];
    pthread_mutex_t lock;
    pthread_cond_t cond;
    work *finished;
    int stop;
    struct event *wake;
    /* tests */
    int retry_base_ms, max_attempts;
    uint32_t window_bytes;
    int test_corrupt_every;      /* serve every Nth chunk with a flipped byte */
    int test_abort_after;        /* reset each served stream after N chunks */
    uint64_t test_chunks_served;
};

/* store.c */
void store_submit(weights_store *ws, work *w, int lane);
/* The local file of this hash (not stale), or NULL. */
local_file *store_local(const weights_store *ws, const uint8_t hash[WEIGHTS_HASH_BYTES]);
/* Maps a local file for serving, checking it is still the file that was
 * hashed. NULL with err otherwise. */
const gguf_file *store_local_open(weights_store *ws, local_file *lf, char *err, size_t errlen);
int store_file_key(int fd, const char *path, fetch_file_key *key);
int store_keys_equal(const fetch_file_key *a, const fetch_file_key *b);
int store_write_file(const char *path, const void *data, size_t len, char *err, size_t errlen);
/* Reads a whole manifest file and decodes it; NULL when absent or bad. */
weights_manifest *store_read_manifest(const char *path, fetch_file_key *key, char *err, size_t errlen);

/* Cached parts. store_add_part reads the part's record (path + ".wm") and
 * keeps the part for serving when the record names this file as it is now
 * and this model; 0, or -1 when not. store_part_covering: a part holding
 * every tensor of [first, end) (+ head) of the model, or NULL.
 * store_part_open: opens it for serving, checking it is still the file its
 * record describes (else marks it stale); 0, or -1 with err.
 * store_part_forget: the part at path is gone or changed. */
int store_add_part(weights_store *ws, const uint8_t hash[WEIGHTS_HASH_BYTES], int first, int end, int head,
                   const char *path);
cached_part *store_part_covering(const weights_store *ws, const uint8_t hash[WEIGHTS_HASH_BYTES], int first,
                                 int end, int head);
int store_part_open(weights_store *ws, cached_part *p, char *err, size_t errlen);
void store_part_forget(weights_store *ws, const char *path);
/* Publishes what this node can serve (full files, then cached parts) in its
 * node record's holdings field; call after any change of either list. */
void store_publish(weights_store *ws);

/* Handlers for a stream nobody listens to any more (its owner let go). */
extern const mesh_stream_handlers store_idle_handlers;

/* serve.c */
void serve_accept(void *ctx, mesh_stream *s);
void serve_free_all(weights_store *ws);

/* fetch.c */
void fetch_free_all(weights_store *ws);

/* Tests (white box): knobs on one store. */
void weights_test_set_retry(weights_store *ws, int base_ms, int max_attempts);
void weights_test_set_window(weights_store *ws, uint32_t bytes);
void weights_test_corrupt_serving(weights_store *ws, int every_nth);
void weights_test_abort_serving(weights_store *ws, int after_chunks);

#endif
