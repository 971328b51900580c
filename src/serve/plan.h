/* plan.h: where a model runs. A plan is one stage (solo) or several, each a
 * node and a contiguous range of layers; stage 0 is always the coordinator,
 * the node asked to serve the model (it holds the file, tokenizes, embeds,
 * samples). This file has the plan as data, its encoding in a node record's
 * application field (so that every member and passive client learns every
 * plan by gossip), and the planner: a pure function from the model's memory
 * needs and the members' free memory to a plan.
 *
 * Not here: carrying a plan out (serve/pipeline.c, serve/stage.c), the stage
 * wire format (serve/stage_wire.h). Threading: pure functions. */
#ifndef LLMESH_PLAN_H
#define LLMESH_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "mesh/mesh.h"

#define PLAN_MAX_STAGES 16
#define PLAN_MAX_REASON 200
#define PLAN_MAX_PLANS 16     /* plans in one record's application field */

typedef enum {
    PLAN_PLANNING = 0, /* no plan fits the mesh now: `reason` says what is missing */
    PLAN_LOADING = 1,  /* stages assigned, fetching or loading weights */
    PLAN_READY = 2,    /* serving */
} plan_state;

typedef enum {
    STAGE_LOADING = 0,
    STAGE_FETCHING = 1,
    STAGE_READY = 2,
} stage_state;

typedef struct {
    uint8_t node[MESH_ID_BYTES];
    int first, end;          /* layers [first, end) */
    uint8_t state;           /* stage_state */
    uint64_t fetched_bytes;  /* weights fetched from a peer so far */
    uint64_t total_bytes;    /* weights the stage needs to fetch (0: it had them) */
} plan_stage;

typedef struct {
    char model[MESH_MAX_NAME];
    uint8_t state;           /* plan_state */
    uint32_t version;        /* grows with each new plan of the model by its coordinator */
    int n_layer;
    uint64_t need_bytes;     /* what the whole model needs on one node (weights, KV, scratch) */
    char reason[PLAN_MAX_REASON]; /* PLAN_PLANNING: why; else "" */
    int n_stages;            /* 0 while planning */
    plan_stage stages[PLAN_MAX_STAGES];
} plan;

const char *plan_state_name(int state);   /* "planning", "loading", "ready" */
const char *stage_state_name(int state);  /* "loading", "fetching", "ready" */

/* ---- the application field: every plan this node coordinates ----------- */

/* Encodes n plans into out (cap bytes). Returns the length, or -1 when they
 * do not fit. */
int plan_encode_list(const plan *plans, int n, uint8_t *out, size_t cap);
/* Demand: how many requests a node saw for a model in the last minute
 * (served here, forwarded, or refused for want of a host), published
 * after the plans (format 2) so that a standby learns which unserved
 * models are wanted, also from the record of a host that just died. */
#define PLAN_MAX_DEMAND 32
typedef struct {
    char model[MESH_MAX_NAME];
    uint32_t per_min;
} plan_demand;
int plan_encode_app(const plan *plans, int n, const plan_demand *demand, int n_demand, uint8_t *out, size_t cap);
/* plan_decode_list, and the demand into demand (at most max_demand kept;
 * *n_demand their count, 0 when the field is malformed). */
int plan_decode_app(const uint8_t *p, size_t len, plan *out, int max, plan_demand *demand, int max_demand,
                    int *n_demand, char *err, size_t errlen);
/* Model files a node holds whole (issue 11, item 6): the SHA-256 the hub
 * publishes, the size, and the reference org/repo/path (format 3, after the
 * demand), so that a node about to download a file fetches it from a peer
 * that has it. Bounded so that the record keeps room for plans. */
#define PLAN_MAX_FILES 8
#define PLAN_FILE_REF_MAX 160
#define PLAN_FILE_MAX_SIZE (1ull << 50)
typedef struct {
    uint8_t sha256[32];
    uint64_t size;                   /* 1..2^50 */
    char ref[PLAN_FILE_REF_MAX + 1]; /* 1..160 bytes of printable ASCII, no space */
} plan_file;
/* Models this node serves whose queue is over the saturation threshold
 * (issue 11, item 7: a standby with room adds itself as a second host;
 * serve/pipeline.c has the threshold and its hysteresis). Format 3, after
 * the files. */
typedef struct {
    char model[MESH_MAX_NAME];
} plan_saturated;
/* The rest of the application field after plans and demand (format 3). */
typedef struct {
    plan_file *files;            /* encode: the files; decode: room for max_files */
    int n_files, max_files;
    plan_saturated *saturated;   /* the same for saturated models (PLAN_MAX_PLANS at most) */
    int n_saturated, max_saturated;
} plan_extra;
/* Both -1 on bad input: an encode with a bad reference or too many files
 * or saturated models, a decode of a malformed field. extra may be NULL
 * (none to write; none wanted). */
int plan_encode_app_files(const plan *plans, int n, const plan_demand *demand, int n_demand,
                          const plan_extra *extra, uint8_t *out, size_t cap);
int plan_decode_app_files(const uint8_t *p, size_t len, plan *out, int max, plan_demand *demand,
                          int max_demand, int *n_demand, plan_extra *extra, char *err, size_t errlen);
/* 1 when the application field marks model saturated, else 0 (a field that
 * does not decode marks nothing). Loop thread (static buffers). */
int plan_app_marks_saturated(const uint8_t *p, size_t len, const char *model);

/* Decodes what plan_encode_list wrote into out (room for max plans): the
 * count, or -1 with err when the bytes are malformed (bad counts, ranges that
 * do not cover the layers contiguously, unknown states, bad names). An empty
 * field is 0 plans. */
int plan_decode_list(const uint8_t *p, size_t len, plan *out, int max, char *err, size_t errlen);

/* ---- the planner --------------------------------------------------------- */

typedef struct {
    uint8_t id[MESH_ID_BYTES];
    uint64_t free_bytes;     /* budget less what it uses */
    int relayed;             /* reached through a relay, not directly */
    double rtt_ms;           /* from the coordinator; 0 unknown */
    int prev_first;          /* first layer it ran in the model's last plan, -1 none: kept
                                in place when it is chosen again, so its cached weights serve */
} plan_member;

/* Bytes a node needs to run layers [first, end) (first == end: none, just
 * the fixed overhead), with head: the embeddings and the output. */
typedef uint64_t (*plan_need_fn)(void *ctx, int first, int end, int head);

typedef struct {
    const char *model;
    int n_layer;
    plan_need_fn need;
    void *need_ctx;
    int force_stages;        /* 0: solo when it fits; N >= 2: exactly N stages (--split N) */
} plan_request;

/* Plans over members[0] (the coordinator, always stage 0) and the others.
 * Fewest stages first; among as many stages, direct links before relayed
 * ones and low RTT first; layers in proportion to the free memory left after
 * each stage's fixed overhead, or, when that does not fit, as many as fit
 * on each in turn. On success out is PLAN_LOADING with its stages (all
 * STAGE_LOADING) and 0 is returned; otherwise out is PLAN_PLANNING with a
 * reason (how much memory is missing, or how many nodes) and -1. The caller
 * sets out->version. */
int plan_make(const plan_request *rq, const plan_member *members, int n, plan *out);

/* 1 when stage ranges of p cover [0, n_layer) contiguously in order. */
int plan_ranges_ok(const plan *p);

#endif
