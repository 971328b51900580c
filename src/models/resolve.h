/* resolve.h: from a model reference (ref.h) to GGUF files on this disk:
 * the cache when they are there (no request at all), else the hub's word
 * on them, a check that the model fits, and the downloads.
 *
 * Order, for a reference not on disk yet:
 *   1. which files: the reference's file, the parts of a multi-part file
 *      (NAME-0000k-of-0000N.gguf: all N), or for org/repo:QUANT the hub's
 *      file listing (or the cached snapshot's files when the revision is
 *      cached);
 *   2. for each missing file a HEAD of its resolve URL: size, SHA-256
 *      (X-Linked-Etag), commit (X-Repo-Commit), where the bytes are;
 *   3. the fit check, before any byte of weights: the first file's header
 *      (a Range request of its first MiBs) gives the model's shape, so its
 *      need is what the engine will ask for (weights, KV caches for the
 *      served context and lanes, scratch; model_part_need), compared with
 *      what the caller says is free; no fit, no download, and the message
 *      says how much is missing;
 *   4. the downloads (download.h), into the Hugging Face cache (hf.h), or
 *      $home/downloads/ for a URL.
 *
 * Threading: blocking; any thread. Progress goes to the callback on the
 * calling thread. */
#ifndef LLMESH_MODELS_RESOLVE_H
#define LLMESH_MODELS_RESOLVE_H

#include <stddef.h>
#include <stdint.h>

#include "models/download.h"
#include "models/peer_file.h"

#define MODEL_MAX_PARTS 16
#define MODEL_PATH_MAX 4096

typedef struct {
    const char *home;          /* llmesh home: URL downloads go to home/downloads/ */
    int offline;               /* 1: the cache only, never a request */
    /* The fit check: skipped when avail_what is NULL. */
    uint64_t avail_bytes;      /* free memory to compare the need with */
    const char *avail_what;    /* "this node's free budget", "the mesh's free memory" */
    int n_ctx;                 /* served context; <= 0: the model's, capped as the engine caps it */
    int n_lanes;               /* KV caches per model (--parallel); <= 0: 2 */
    int n_threads;             /* for the scratch estimate; <= 0: 1 */
    int kv_type;               /* model_kv_type of the KV caches (0: F16) */
    dl_progress_fn progress;   /* done/total over every file to download; may be NULL */
    void *progress_ctx;
    const _Atomic int *cancel; /* set by another thread: downloads stop (partials kept); may be NULL */
    const char *join_dir;      /* a multi-part model is joined into join_dir/ID.gguf (multipart.h);
                                  NULL: the parts are returned as they are */
    /* A peer that holds a file the hub names (SHA-256 as 64 hex digits, and
     * size): 1 with *out filled, then the file is fetched from it over the
     * mesh first (peer_file.h), the hub doing whatever the peer does not.
     * NULL: never. Called on the calling thread: it must be thread-safe. */
    int (*find_peer)(void *ctx, const char *sha256, uint64_t size, peer_file_target *out);
    void *peer_ctx;
} model_fetch_opts;

typedef struct {
    char id[128];                               /* the model id the files give */
    int n_files;                                /* 1, or the parts in order (no join_dir) */
    int n_parts;                                /* parts the model came in (1: one file) */
    char files[MODEL_MAX_PARTS][MODEL_PATH_MAX];
    uint64_t need_bytes;                        /* 0 when no check ran */
    uint64_t downloaded_bytes;                  /* fetched by this call */
    int from_cache;                             /* 1: no request was made */
} model_files;

/* Resolves ref (a path, a hub file or quant, a URL, a catalog name) to
 * local files, downloading what is missing. 0, or -1 with a one-line err
 * (e.g. "qwen2.5-7b-instruct needs 5.9 GB but this node's free budget is
 * 3.2 GB: 2.7 GB missing; nothing was downloaded"). out is large (64 KB):
 * allocate it. */
int model_fetch(const char *ref, const model_fetch_opts *o, model_files *out, char *err, size_t errlen);

/* The need of a model from the first bytes of its first file (head: those
 * bytes, file_size: its whole size) plus rest_bytes for its other parts,
 * as model_fetch's check computes it. 0 with *need, or -1 with err (the
 * header needs more bytes than head has, or is not a model the engine
 * reads). Exposed for tests. */
int model_need_from_head(const uint8_t *head, size_t head_len, uint64_t file_size, uint64_t rest_bytes,
                         const model_fetch_opts *o, uint64_t *need, char *err, size_t errlen);

#endif
