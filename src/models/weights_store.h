/* weights_store.h: the weights this node holds, serves to peers, and fetches
 * from them.
 *
 * A store knows the local full GGUF files by model hash (weights.h). Their
 * manifests are computed once and remembered under $home/cache/manifests/,
 * keyed by (path, size, mtime, inode, device): a restart reads a small file
 * instead of hashing gigabytes; a changed file is hashed again. The store
 * answers FETCH streams (stream type 7) from peers with the tensors of its
 * full files, and fetches parts of a model (the tensors of a layer range,
 * with or without the head) from a peer into $home/cache/parts/: chunk by
 * chunk, each chunk checked against a manifest that was itself checked
 * against the model hash, resumable after a broken connection or a restart,
 * and reused on the next start. docs/weights.md has the layout on disk and
 * the reasons; docs/PROTOCOL.md section 14 the bytes.
 *
 * Threading: every function is for the event-loop thread of `base`, and
 * every callback runs there. Disk work runs on two worker threads per store
 * (hashing files and partial files on one, checking and writing received
 * chunks and syncing finished parts on the other), which wake the loop with
 * event_active: the process must call evthread_use_pthreads() before
 * creating `base`. The exception is weights_store_add_file, which hashes on
 * the calling thread (plus short-lived helper threads) and blocks it: meant
 * for start-up, before the loop runs, and returning at once when the
 * manifest is remembered. Free the store before its mesh. */
#ifndef LLMESH_MODELS_WEIGHTS_STORE_H
#define LLMESH_MODELS_WEIGHTS_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "mesh/mesh.h"
#include "models/weights.h"

struct event_base;

typedef struct weights_store weights_store;
typedef struct weights_fetch weights_fetch;

/* Creates $home/cache/{manifests,parts}/ (0700) and takes FETCH streams on m.
 * NULL with err when the directories cannot be made. */
weights_store *weights_store_new(struct event_base *base, mesh *m, const char *home, char *err,
                                 size_t errlen);
/* Stops serving (open FETCH streams are reset), drops every fetch without
 * further callbacks (their handles become invalid; partial files stay for a
 * later resume), stops the worker (a hash in progress is abandoned), frees. */
void weights_store_free(weights_store *ws);

/* Adds a local full file: its manifest is loaded from the cache when the
 * file is unchanged, else computed now (blocking; all CPUs) and remembered.
 * Writes the model hash. 0, or -1 with err naming the file. */
int weights_store_add_file(weights_store *ws, const char *path, uint8_t hash_out[WEIGHTS_HASH_BYTES],
                           char *err, size_t errlen);
/* The same on the worker thread; done runs later on the loop with the hash,
 * or with error set (hash NULL). Not called after weights_store_free.
 * -1 with err only when the job cannot be queued. */
typedef void (*weights_added_fn)(void *user, const char *path, const uint8_t *hash, const char *error);
int weights_store_add_file_async(weights_store *ws, const char *path, weights_added_fn done, void *user,
                                 char *err, size_t errlen);
/* Queues an async add for every *.gguf in dir (done per file, may be NULL).
 * Returns how many were queued; 0 when dir does not exist. */
int weights_store_add_dir(weights_store *ws, const char *dir, weights_added_fn done, void *user);

/* A local full file of this model (a path owned by the store), or NULL. */
const char *weights_store_find(const weights_store *ws, const uint8_t hash[WEIGHTS_HASH_BYTES]);
/* The manifest of a local full file (tensor sizes by layer, for placement), or NULL. */
const weights_manifest *weights_store_manifest(const weights_store *ws, const uint8_t hash[WEIGHTS_HASH_BYTES]);

typedef struct {
    /* Bytes of the part present and verified so far, of total. May be NULL. */
    void (*on_progress)(void *user, uint64_t done_bytes, uint64_t total_bytes);
    /* Last callback: the part's path (gguf_path, owned by the store until
     * this returns) or an error saying what failed, with the peer. */
    void (*on_done)(void *user, const char *gguf_path, const char *error);
} weights_fetch_callbacks;

/* Fetches exactly the tensors of layers [first, end) (+ the head tensors
 * when head; rope_freqs / rope_factors_* always, since every layer uses
 * them) of the model with this hash from every alive node whose record says
 * it holds them and from peer (named; asked last when others hold it), up
 * to FETCH_MAX_STREAMS at once, into a GGUF under
 * $home/cache/parts/ that holds the metadata and just those tensors (opens
 * with gguf_open; data aligned as the source file's). A complete cached part
 * answers on the next loop turn without traffic; a partial one resumes where
 * it stopped (also after a restart): its chunks are checked against the
 * manifest and only the missing or damaged ones are fetched. The manifest
 * is checked against the model hash before use, each chunk against its
 * hash on arrival. A source that breaks, stalls or lags gives its chunks to
 * the others; with none left, the fetch is retried with backoff (6
 * attempts without progress, then on_done with the reason). Two starts of
 * the same part share one transfer; another process fetching the same part
 * makes this one fail at once (err). NULL with err for bad arguments or
 * files that cannot be made; callbacks never run inside this call. */
weights_fetch *weights_fetch_start(weights_store *ws, const uint8_t hash[WEIGHTS_HASH_BYTES],
                                   const uint8_t peer[MESH_ID_BYTES], int first, int end, int head,
                                   const weights_fetch_callbacks *cb, void *user, char *err, size_t errlen);
/* No more callbacks; the handle is freed. The transfer stops when no other
 * start shares it (the partial file stays for a resume). Not from on_done. */
void weights_fetch_cancel(weights_fetch *f);

typedef struct {
    uint64_t served_bytes;       /* chunk bytes sent to peers */
    uint64_t fetched_bytes;      /* chunk bytes received and verified */
    uint64_t bad_frames;         /* malformed FETCH frames, either side (stream reset, code 2) */
    uint64_t bad_chunks;         /* chunks whose hash did not match (fetched again) */
    uint64_t fetches_resumed;    /* fetches that found verified chunks on disk */
    uint64_t files_hashed;       /* full hashes of local files (a remembered manifest is not one) */
    uint64_t bytes_hashed;
    uint64_t cache_discarded;    /* cached parts that did not match their record */
    uint64_t files_served;       /* whole files (FILE_OPEN) served to peers, started */
    uint64_t file_bytes_served;  /* their bytes sent */
} weights_counters;
void weights_get_counters(const weights_store *ws, weights_counters *out);

/* Whole files this node offers by SHA-256 (the Hugging Face cache's blobs:
 * models/hf.h hf_cache_held): served on FETCH streams that ask FILE_OPEN
 * (docs/PROTOCOL.md section 14) to peers that download the same file. The
 * list replaces the previous one (at most WEIGHTS_MAX_HELD entries). */
#define WEIGHTS_MAX_HELD 16
#define WEIGHTS_HELD_REF_MAX 200
typedef struct {
    uint8_t sha256[32];
    uint64_t size;
    char ref[WEIGHTS_HELD_REF_MAX + 1]; /* org/repo/path@commit (the snapshot) */
    char path[4096];                    /* the blob on this disk */
} weights_held_file;
void weights_store_set_held(weights_store *ws, const weights_held_file *files, int n);

/* Verified chunk bytes this node fetched from one peer (all fetches since
 * start; the store counts the FETCH_MAX_TALLY peers it fetched from last). */
typedef struct {
    uint8_t peer[MESH_ID_BYTES];
    uint64_t bytes;
} weights_source_bytes;
int weights_store_fetched_from(const weights_store *ws, weights_source_bytes *out, int max);

/* Fetches under way, for /api/status. */
#define WEIGHTS_INFO_SOURCES 4
typedef struct {
    char model[WEIGHTS_HASH_HEX];
    int first, end, head;
    char peer[MESH_ID_HEX];      /* the source of the first stream (or the last one tried) */
    int n_sources;               /* sources asked in this fetch: */
    struct {
        char peer[MESH_ID_HEX];
        uint64_t bytes;          /* verified chunk bytes from it */
        int streaming;           /* a stream to it is open now */
    } sources[WEIGHTS_INFO_SOURCES];
    uint64_t done_bytes, total_bytes;
    const char *state;           /* "connecting", "manifest", "checking", "fetching", "retrying" */
    int attempts;                /* failed attempts since the last progress */
    char last_error[160];
} weights_fetch_info;
int weights_store_fetches(const weights_store *ws, weights_fetch_info *out, int max);

/* For /api/status: adds to the JSON object obj "local" (model hash, path,
 * layers, bytes of each local full file), "fetches" (weights_store_fetches)
 * and "counters" (weights_counters). */
struct cJSON;
void weights_store_status_json(const weights_store *ws, struct cJSON *obj);

#endif
