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
#include "models/ref.h"

#define MODEL_MAX_PARTS 16
#define MODEL_PATH_MAX 4096
#define MODEL_PEER_REF_MAX 200
#define MODEL_MAX_PEER_FILES 512

/* A whole file a peer's record lists (hf.h hf_cache_held): what lets a hub
 * reference be resolved by the mesh when the hub cannot be asked. */
typedef struct {
    char ref[MODEL_PEER_REF_MAX + 1];  /* org/repo/path@commit */
    char sha256[65];                   /* hex */
    uint64_t size;
} model_peer_file;

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
    /* The hub down (no answer, a 5xx) or HF_HUB_OFFLINE set, and a hub
     * reference not in the cache: the files the peers' records list
     * (into out, at most max; the count), or -1 while the mesh is not
     * known yet (just joined: records still arriving), so that the
     * reference is resolved from them: its files, SHA-256 and commit are
     * the peers' word, its bytes come from them (find_peer) and are
     * checked against that SHA-256. Waited for at most mesh_wait_ms while
     * it says -1. NULL: no mesh to ask. Called on the calling thread
     * with peer_ctx: it must be thread-safe. */
    int (*peer_files)(void *ctx, model_peer_file *out, int max);
    int mesh_wait_ms;
} model_fetch_opts;

typedef struct {
    char id[128];                               /* the model id the files give */
    int n_files;                                /* 1, or the parts in order (no join_dir) */
    int n_parts;                                /* parts the model came in (1: one file) */
    char files[MODEL_MAX_PARTS][MODEL_PATH_MAX];
    uint64_t need_bytes;                        /* 0 when no check ran */
    uint64_t downloaded_bytes;                  /* fetched by this call */
    int from_cache;                             /* 1: no request was made */
    int from_mesh;                              /* 1: resolved by the peers' records (the hub down) */
    int hub_unreachable;                        /* on failure: the hub could not be asked (down,
                                                   HF_HUB_OFFLINE) and the files are not cached */
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

/* Which of the peers' files (as their records list them) the hub
 * reference r (a hub file, a repo and quant, a catalog name) means: the
 * file, or every part of a multi-part one in order, each as an index into
 * files (into idx, at most max). Entries of a revision that is a commit
 * must be at that commit; for a branch or tag any commit a peer holds
 * will do (as the cache's refs/ would). The count, 0 when no peer lists
 * it (err says what is missing), or -1 with err when peers disagree (two
 * different files under one name: name a commit with @). Pure. */
int model_match_peer_files(const model_ref *r, const model_peer_file *files, int n, int *idx, int max,
                           char *err, size_t errlen);

#endif
