/* stage.h: the stages this node runs for other nodes' split models.
 *
 * A coordinator (stage 0 of a model, serve/pipeline.c) opens a
 * STAGE_CONTROL stream to each node of its plan and sends ASSIGN: layers
 * [first, end) of the model with this weights hash, n_lanes sequences of
 * n_ctx positions, output to `next`. The stage host reserves the memory,
 * finds the weights (its own copy of the file, or fetched from the
 * coordinator into the cache, models/weights.h), loads that part, reports
 * STATUS as it goes (fetching with progress, loading, ready), and on START
 * opens a STAGE_DATA stream to the next stage (the last stage's goes back to
 * the coordinator). From then on each FORWARD that arrives is run through
 * the layers on the stage's worker thread and passed on: to the next stage as
 * FORWARD, or, from the last stage, as OUTPUT to stage 0 when stage 0 asked
 * for rows back. The stage lives as long as the control stream: when the
 * coordinator closes it (or dies), everything is freed and released.
 *
 * Data streams are accepted here for every stage index; those addressed to
 * stage 0 of a plan this node coordinates go to the ring handler (the
 * pipeline's), which takes the stream over.
 *
 * Threading: the API is for the event-loop thread; each stage has one
 * worker thread for its compute, which hands frames back to the loop through
 * an outbox and one wake-up event. */
#ifndef LLMESH_STAGE_H
#define LLMESH_STAGE_H

#include <stdint.h>

#include "mesh/mesh.h"
#include "serve/budget.h"
#include "serve/stage_wire.h"

struct event_base;
struct cJSON;
struct weights_store;

typedef struct stage_host stage_host;

/* An incoming data stream addressed to stage 0 (hello->coordinator is this
 * node): the handler sets its own stream handlers, or aborts the stream. */
typedef void (*stage_ring_fn)(void *ctx, mesh_stream *s, const stage_hello *hello);

stage_host *stage_host_new(struct event_base *base, mesh *m, struct weights_store *ws, budget *b,
                           int n_threads);
/* Stops every stage (joins the workers) and frees them. */
void stage_host_free(stage_host *h);
void stage_host_set_ring(stage_host *h, stage_ring_fn fn, void *ctx);

/* The stages this node runs, for /api/status: [{"coordinator", "model",
 * "layers": [first, end], "state", "fetched_bytes", "total_bytes",
 * "memory_bytes", "tokens", "compute_ms", ...}]. */
void stage_host_status(const stage_host *h, struct cJSON *array);
/* Malformed or unexpected stage frames and streams refused so far. */
uint64_t stage_host_bad_frames(const stage_host *h);
void stage_host_count_bad_frame(stage_host *h);

#endif
