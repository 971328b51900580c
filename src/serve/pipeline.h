/* pipeline.h: the models this node coordinates, and how each runs: solo, or
 * split into pipeline stages over the mesh with this node as stage 0.
 *
 * For every model given to `serve --model`, this node is the coordinator:
 * it loads the whole file (mapped; only the layers it runs are touched),
 * plans (serve/plan.h) over its own memory budget and the members' free
 * memory, and carries the plan out: solo at once, or ASSIGN to each stage's
 * node (serve/stage.c runs them), START when every stage is ready, then
 * hidden states flow stage to stage and the last stage's final states come
 * back here, where the engine applies the output matrix and samples (the
 * engine's split "tail" is implemented here). Plans travel to every node and
 * client in this node's record (the application field), and the model is
 * advertised as served only while its plan is ready, so every router sends
 * its requests here, to stage 0.
 *
 * When a stage fails (its node dies or leaves, a stream breaks, it refuses),
 * the coordinator plans again over the members left (solo if the model now
 * fits), and the requests in flight resume on the new pipeline: the engine
 * replays their tokens (engine_tail.resume). A model that no plan fits is
 * `planning`: requests get 503 with the reason, and planning is retried
 * every second, so a node that joins with memory lets it start. A running
 * plan is never disturbed by a node joining.
 *
 * Threading: the API is for the event-loop thread. The tail callbacks run on
 * the scheduler's lane threads and meet the loop under the pipeline's lock. */
#ifndef LLMESH_PIPELINE_H
#define LLMESH_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

#include "lib/prom.h"
#include "mesh/mesh.h"
#include "serve/budget.h"
#include "serve/plan.h"

struct event_base;
struct cJSON;
struct sched;
struct stage_host;
struct weights_store;

typedef struct pipelines pipelines;

typedef struct {
    int n_threads;   /* compute threads, <= 0 all CPUs */
    int n_ctx;       /* served context, <= 0 the model's (capped) */
    int n_lanes;     /* requests in flight per model */
    int split;       /* >= 2: force this many stages */
    int kv_type;     /* model_kv_type of every lane's KV cache, sent to every stage (ASSIGN) */
} pipeline_config;

pipelines *pipelines_new(struct event_base *base, mesh *m, struct sched *s, struct stage_host *sh,
                         struct weights_store *ws, budget *b, const pipeline_config *cfg);
/* Loads the GGUF at path as a model this node coordinates (hashing its
 * weights, mapping it, handing it to the scheduler) and plans it. 0, or -1
 * with a message that names the file. */
int pipelines_add_model(pipelines *ps, const char *path, char *err, size_t errlen);
/* Where this node's demand (requests per model in the last minute) comes
 * from: published with the plans in the node record, looked at every 0.2 s;
 * a new record is gossiped when the set of demanded models changed (the
 * rates ride along with any record). fn fills out (at most max) and returns the
 * count. */
typedef int (*pipelines_demand_fn)(void *ctx, plan_demand *out, int max);
void pipelines_set_demand_source(pipelines *ps, pipelines_demand_fn fn, void *ctx);
/* The model files this node holds whole (serve/model_loader.c scans the
 * Hugging Face cache), published in its record after the demand (format 3,
 * docs/PROTOCOL.md section 13); a new record when the list changed. At most
 * PLAN_MAX_FILES are kept; they are the first left out when the record is full. */
void pipelines_set_files(pipelines *ps, const plan_file *files, int n);
/* Stops serving a model this node coordinates: its stages are released,
 * its memory given back, its workers stopped, and it leaves this node's
 * record. 0 when done at once (no request of it in flight); 2 when it
 * drains: it leaves the record and refuses new requests now, and goes once
 * its requests in flight are done, those left after drain_ms ending with
 * an error (503, or an error event in a stream); 1 with err when it is
 * draining already; -1 with err when this node does not coordinate it. */
int pipelines_remove_model(pipelines *ps, const char *model_id, int drain_ms, char *err, size_t errlen);
/* Wakes every request waiting on a pipeline with an error and refuses new
 * waits: before the scheduler joins its threads at shutdown. */
void pipelines_close(pipelines *ps);
void pipelines_free(pipelines *ps);

/* Where a model stands. PIPELINE_READY: requests for it run here.
 * PIPELINE_NOT_READY: this node or another coordinates it, and it is
 * planning or loading; reason says why (for a 503). PIPELINE_UNKNOWN: no
 * plan for it is known. */
enum { PIPELINE_UNKNOWN = 0, PIPELINE_NOT_READY = 1, PIPELINE_READY = 2 };
int pipelines_model_state(const pipelines *ps, const char *model_id, char *reason, size_t cap);

/* 1 when this node coordinates model_id (whatever its state). */
int pipelines_coordinates(const pipelines *ps, const char *model_id);

/* /api/status: "plans" (every plan this node knows: its own and those in
 * peers' records) into root. */
void pipelines_status(const pipelines *ps, struct cJSON *root);

/* /metrics: for each split this node coordinates and that is ready, its
 * per-batch-step histograms (seconds): compute[s] of each of its n_stages
 * stages (on nodes[s]), and the hops (a step's round trip less the stages'
 * times). Loop thread; the pointers last only for the call. */
typedef void (*pipelines_histograms_fn)(void *ctx, const char *model, int n_stages,
                                        const char (*nodes)[MESH_ID_HEX], const prom_histogram *compute,
                                        const prom_histogram *hop);
void pipelines_step_histograms(const pipelines *ps, pipelines_histograms_fn fn, void *ctx);

#endif
