/* stage_wire.h: the frames of a split model's pipeline, encoded and decoded
 * with every bound checked (docs/PROTOCOL.md, section 13).
 *
 * Two stream types carry them:
 * - STAGE_CONTROL (5), coordinator <-> a stage's node: ASSIGN (run these
 *   layers of this model, pass your output to that node), START (every stage
 *   is ready: open your data stream), and from the stage STATUS (loading,
 *   fetching with progress, ready; the memory it uses), STATS (counters) or
 *   REFUSE (why it cannot). Closing the stream ends the stage.
 * - STAGE_DATA (6), stage k -> stage k + 1 and the last stage -> stage 0:
 *   HELLO (which plan and stage this stream feeds), then FORWARD (hidden
 *   states of one batch step: pieces of several lanes' positions), OUTPUT
 *   (the last stage's final hidden states of a step, back to stage 0) and FAIL (a lane could not be computed: stage 0
 *   replays it).
 *
 * Hidden states travel as IEEE-754 binary32, little-endian (F32: a split
 * answers exactly as solo), or binary16 when the plan asks for it.
 *
 * Not here: what a node does with them (serve/stage.c, serve/pipeline.c).
 * Threading: pure functions. */
#ifndef LLMESH_STAGE_WIRE_H
#define LLMESH_STAGE_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "mesh/mesh.h"

#define STAGE_STREAM_CONTROL 5
#define STAGE_STREAM_DATA 6

#define STAGE_CONTROL_MAX_FRAME 1024   /* bound on control frames */
#define STAGE_MAX_TOKENS 64            /* positions in one FORWARD / OUTPUT frame (a step's, MODEL_BATCH) */
#define STAGE_MAX_PIECES 64            /* lanes' pieces in one FORWARD / OUTPUT frame */
#define STAGE_MAX_LANES 256
#define STAGE_MAX_MESSAGE 200          /* REFUSE / FAIL text */

/* REFUSE's code (in the lane field): whose fault it is, so that the
 * coordinator leaves out the right node when it plans again. */
enum {
    STAGE_REFUSE_SELF = 0, /* this stage cannot run (memory, weights, load) */
    STAGE_REFUSE_NEXT = 1, /* the next stage is unreachable or closed the data stream */
};

/* Frame kinds: the first payload byte. */
enum {
    STAGE_ASSIGN = 0x01,
    STAGE_START = 0x02,
    STAGE_STATUS = 0x10,
    STAGE_STATS = 0x11,
    STAGE_REFUSE = 0x12,
    STAGE_HELLO = 0x21,
    STAGE_FORWARD = 0x22,
    STAGE_OUTPUT = 0x23,
    STAGE_FAIL = 0x24,
};

enum { STAGE_DTYPE_F32 = 0, STAGE_DTYPE_F16 = 1 };

typedef struct {
    uint32_t version;                  /* the plan's version */
    uint8_t model_hash[32];            /* identity of the weights (models/weights.h) */
    char model[MESH_MAX_NAME];         /* the model's id */
    uint16_t n_layer;
    uint16_t first, end;               /* layers to run: [first, end) */
    uint8_t stage, n_stages;           /* this stage's index (>= 1) and the count */
    uint8_t next[MESH_ID_BYTES];       /* where the output goes: stage + 1, or the coordinator */
    uint32_t n_ctx;                    /* positions per lane */
    uint16_t n_lanes;                  /* sequences in flight at once */
    uint32_t n_embd;                   /* floats per hidden state */
    uint8_t dtype;                     /* STAGE_DTYPE_* of hidden states on the wire */
    uint64_t need_bytes;               /* memory the coordinator expects the stage to use */
    uint8_t kv_type;                   /* the KV caches' model_kv_type: 0 F16, 1 F32 (the coordinator's) */
} stage_assign;

typedef struct {
    uint8_t state;                     /* stage_state (plan.h) */
    uint64_t fetched_bytes, total_bytes;
    uint64_t memory_bytes;             /* what the stage uses */
} stage_status;

typedef struct {
    uint64_t frames;                   /* FORWARD frames computed */
    uint64_t tokens;                   /* positions computed */
    uint64_t compute_us;               /* time in the layers */
    uint64_t send_us;                  /* time from computed to handed to the transport */
    uint64_t bytes_in, bytes_out;
} stage_stats;

typedef struct {
    uint8_t coordinator[MESH_ID_BYTES];
    char model[MESH_MAX_NAME];
    uint32_t version;
    uint8_t stage;                     /* the receiving stage's index (0: the coordinator) */
} stage_hello;

/* FORWARD and OUTPUT carry a batch: the pieces of several lanes (each lane
 * once), their values one after another in the pieces' order. Every FORWARD
 * the last stage computes gives exactly one OUTPUT (with no pieces when none
 * asked rows): stage 0 counts its steps in flight by them (back-pressure). */
typedef struct {
    uint16_t lane;
    uint32_t pos;                      /* first position */
    uint16_t n;                        /* positions (FORWARD) or rows (OUTPUT) */
    uint8_t rows;                      /* FORWARD: ENGINE_ROWS_* wanted back; OUTPUT: 0 */
} stage_piece;

/* A stage's time on one frame, appended by each stage k >= 1 as the frame
 * passes (so stage k receives k - 1 of them): what per-request timings are
 * made of. */
#define STAGE_MAX_TRAIL 15
typedef struct {
    uint32_t compute_us;               /* its layers over the frame */
    uint32_t wait_us;                  /* from the frame's arrival to its compute (queued) */
} stage_time;

typedef struct {
    uint8_t dtype;
    uint8_t n_trail;                   /* 0..STAGE_MAX_TRAIL */
    stage_time trail[STAGE_MAX_TRAIL]; /* stages 1, 2, ... in order */
    uint8_t n_pieces;                  /* 0..STAGE_MAX_PIECES (0: a step all of whose pieces
                                          failed, or an OUTPUT that acknowledges a step
                                          asking no rows) */
    stage_piece pieces[STAGE_MAX_PIECES];
    uint32_t n_rows;                   /* decoded: the pieces' n summed (<= STAGE_MAX_TOKENS) */
    const uint8_t *data;               /* n_rows x n_embd values, pointing into the frame */
    size_t data_len;
} stage_states;

/* Encoders return the frame length, or -1 when it does not fit cap. */
int stage_encode_assign(const stage_assign *a, uint8_t *out, size_t cap);
int stage_encode_status(const stage_status *s, uint8_t *out, size_t cap);
int stage_encode_stats(const stage_stats *s, uint8_t *out, size_t cap);
int stage_encode_message(uint8_t kind, uint16_t lane, const char *msg, uint8_t *out, size_t cap); /* REFUSE, FAIL */
int stage_encode_hello(const stage_hello *h, uint8_t *out, size_t cap);
/* FORWARD / OUTPUT header (kind, dtype, the pieces, the trail); the values follow it.
 * Returns its length (stage_states_header_len), or -1 when it exceeds cap. */
#define STAGE_STATES_HEADER_MAX (4 + 9 * STAGE_MAX_PIECES + 8 * STAGE_MAX_TRAIL)
static inline size_t stage_states_header_len(int n_pieces, int n_trail)
{
    return 4 + 9 * (size_t)n_pieces + 8 * (size_t)n_trail;
}
int stage_encode_states_header(uint8_t kind, const stage_states *s, uint8_t *out, size_t cap);

/* Decoders: 0, or -1 with err. They check sizes and ranges that need no
 * context; the receiver checks the rest (lane < n_lanes, pos + n <= n_ctx). */
int stage_decode_assign(const uint8_t *p, size_t len, stage_assign *out, char *err, size_t errlen);
int stage_decode_status(const uint8_t *p, size_t len, stage_status *out, char *err, size_t errlen);
int stage_decode_stats(const uint8_t *p, size_t len, stage_stats *out, char *err, size_t errlen);
int stage_decode_message(const uint8_t *p, size_t len, uint16_t *lane, char *msg, size_t cap,
                         char *err, size_t errlen);
int stage_decode_hello(const uint8_t *p, size_t len, stage_hello *out, char *err, size_t errlen);
/* FORWARD or OUTPUT (by p[0]); n_embd: the receiver's width, to check the
 * data length against. */
int stage_decode_states(const uint8_t *p, size_t len, uint32_t n_embd, stage_states *out, char *err,
                        size_t errlen);

/* Bytes per value of a dtype, 0 for an unknown one. */
size_t stage_dtype_size(int dtype);

#endif
