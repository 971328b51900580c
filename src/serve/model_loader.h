/* model_loader.h: changing what a running node serves, and standby takeover.
 *
 * A load takes a model reference (models/ref.h), resolves it on a worker
 * thread (the cache, else the hub: the fit check against the mesh's free
 * memory, then the download; models/resolve.h), and hands the file to the
 * pipelines on the loop thread (hashing, mapping, planning). Its state
 * (`downloading`, `loading`, `ready`, `failed`, with bytes and errors) is in
 * /api/status under "loads". The console port takes
 *   POST /api/models/load   {"model": REF}  -> 202, the load's state
 *   POST /api/models/unload {"model": ID, "drain_s"?: 0..3600 (30)}
 *        -> 200 (stopped), 202 "draining" while requests of it run (new ones
 *           go to another host or get 503; those left after drain_s end with
 *           an error; then it is unloaded), 409 while it drains already,
 *           404 when not served here
 * behind the node's API key like every console route.
 *
 * Standby takeover: every second, a node looks at the demand in the mesh
 * (serve/demand.h: its own counts and the last record of every peer, dead
 * ones included) for models no live node serves or coordinates. When it has
 * a way to get one (a --standby-for reference with that model id, or a GGUF
 * of that id in its home's models/ or downloads/ or in the Hugging Face
 * cache) it loads it, after a delay that grows with its rank among the
 * alive standbys (so that two standbys do not both take the same model;
 * the first one's plan shows in its record before the next one's turn).
 *
 * A second host: a standby with room and a source for a model every alive
 * host of which marks saturated loads it too; it leaves again (unloads,
 * draining) once no host is saturated, another serves it, and its own
 * requests a minute for it are down to half their peak, for 10 s.
 *
 * Weights cross the internet once: every ML_FILES_MS the loader lists the
 * whole files of the Hugging Face cache (models/hf.h hf_cache_held), offers
 * them to peers (weights_store_set_held) and publishes them in the node
 * record (pipelines_set_files); it keeps a copy of what the peers' records
 * say they hold, so that a load's download thread finds a peer with the
 * file's SHA-256 without touching mesh state (model_fetch_opts.find_peer).
 *
 * Threading: the API is for the event-loop thread; downloads run on one
 * thread per load, joined at free (cancelled first: partial files stay). */
#ifndef LLMESH_MODEL_LOADER_H
#define LLMESH_MODEL_LOADER_H

#include <stddef.h>

#include "serve/budget.h"

struct event_base;
struct cJSON;
struct mesh;
struct pipelines;
struct demand;

typedef struct model_loader model_loader;

#define MODEL_DRAIN_DEFAULT_S 30 /* requests in flight get this long to finish at an unload */
#define MODEL_DRAIN_MAX_S 3600

typedef struct {
    const char *home;                /* llmesh home (URL downloads, models/, downloads/) */
    int n_ctx, n_lanes, n_threads;   /* as the pipelines serve (for the fit check) */
    int kv_type;                     /* model_kv_type of the KV caches, likewise */
    int take_over;                   /* 1: take over demanded models nobody serves */
    const char *const *standby_for;  /* references this node may take over (may be 0 of them) */
    int n_standby_for;
    struct weights_store *weights;   /* serves the files of the HF cache to peers; may be NULL */
    int split;                       /* --split: no fit check for a --model (the planner decides) */
    /* A load of model_loader_start_waiting failed: the node cannot serve
     * what it was started with (err says why). Loop thread. */
    void (*on_start_failed)(void *ctx, const char *ref, const char *err);
    void *start_ctx;
} model_loader_config;

model_loader *model_loader_new(struct event_base *base, struct mesh *m, struct pipelines *ps,
                               budget *b, struct demand *d, const model_loader_config *cfg);
/* Cancels downloads in flight (partial files stay), joins their threads. */
void model_loader_free(model_loader *L);

/* Starts loading ref in the background. 0, or -1 with err (a malformed
 * reference, a load of it already under way, too many loads). */
int model_loader_start(model_loader *L, const char *ref, char *err, size_t errlen);
/* A --model that the hub could not give at start-up (down, or
 * HF_HUB_OFFLINE) and that is not in the cache: loaded as above once the
 * mesh is known (the peers' records name its files and hold its bytes),
 * waiting for the records up to 30 s, with the fit check against this
 * node's budget; a failure calls cfg.on_start_failed. 0, or -1 with err. */
int model_loader_start_waiting(model_loader *L, const char *ref, char *err, size_t errlen);
/* "loads" (and "demand": the mesh's) into root, for /api/status. */
void model_loader_status(model_loader *L, struct cJSON *root);
/* The console's POST /api/models/... (http_post_fn). */
int model_loader_http(void *ctx, const char *path, const char *body, size_t len, char **json);

#endif
