/* pipeline.c: see pipeline.h.
 *
 * One `pipe` per coordinated model. Its plan moves through
 *   PLANNING --plan fits--> LOADING --every stage ready--> READY
 *       ^                      |                             |
 *       +---- a stage fails, or planning finds no room ------+
 * On the loop thread: planning, the control streams to the stages, the data
 * streams (out to stage 1, in from the last stage), the plan's publication.
 * On the lane threads (the scheduler's, inside engine_run_lane): the tail,
 * which queues hidden states for the loop to send and waits for final ones.
 * The two meet under pipe->lock:
 *   - `ready` says the tail may be used; `epoch` grows at every break;
 *   - each lane has a buffer of final hidden states received, the count the
 *     engine expects, and `broken` (its exchange was cut: the engine must
 *     resume and replay);
 *   - `failing` makes resume give up with `fail_reason` (no plan fits);
 *   - frames the lanes queue (the outbox) carry the epoch they were made in,
 *     and the loop drops those of an older epoch.
 *
 * Why a lane sends its FORWARD itself: handing it to the loop thread costs
 * that thread's wake-up (~50 us of every round trip on the development VM,
 * the loop asleep in epoll, its vCPU halted) before QUIC even starts. So
 * the lane that computed the step writes it to the stream and its packets
 * to the socket (mesh_stream_send_now), under the transport's lock, which
 * the loop holds while it runs any QUIC code: taken with trylock, so a lane
 * never waits for the loop; when the loop is busy in QUIC, or frames are
 * still queued before this one (order), or the stream is not on a direct
 * connection, the FORWARD goes through the outbox and the loop as before
 * (counters: frames_sent_now of frames_sent). The lock order is p->lock,
 * then the transport's (only ever tried); p->data_out changes under p->lock
 * before the stream is aborted, and its on_close takes p->lock, so a lane
 * holding p->lock sends on a live stream.
 *
 * Why the loop spins before a decode step is sent (the "pre-wake", for
 * FORWARDs that still go through the loop): a lane
 * queues its FORWARD and wakes the loop thread, which sends it; on the
 * development VM that wake-up took ~50 us of every round trip (the loop
 * sleeps in epoll, its vCPU halts), a quarter of what the ring costs us
 * beyond the kernel's part. One stream's decode steps come at a steady pace
 * (the stage-0 compute after each reply), so when a reply comes back to an
 * otherwise empty ring, the loop sets a precise timer (lib/precise_timer.h)
 * shortly before the next send is due and then polls the outbox until the
 * FORWARD is there, sending it at once, or the window ends: 250 us plus
 * four times the pace's jitter, 1 ms at most. The cost is that spin (a few
 * percent of a core at tens of tokens per second; it shows in /api/status,
 * prewake_spin_ms) and the loop's other events waiting for it to end. On a
 * loaded machine the pace varies by milliseconds and most windows miss
 * (the FORWARD comes before or after): while fewer than 30 % of the recent
 * ones caught it, only one step in eight is pre-woken. Not
 * pre-woken: steps closer together than PIPE_PREWAKE_MIN_GAP_US (a tiny
 * model: the loop would spin most of the time), and steps sent while others
 * are on the ring (stage 0 computes one of those meanwhile: the hop is not
 * on the stream's path). Nor at all when the process has no CPU to spare
 * for it (its CPUs, sched_getaffinity, no more than its compute threads):
 * the spin would take the core from the compute whose send it waits for. A
 * node pinned to one core (a "machine" of bench/split_machines_bench.sh)
 * spent 18 ms per pre-wake that way, and its lanes do not poll for their
 * replies either (the loop that receives them needs that core).
 *
 * Why memory of the old plan is credited back when replanning: after a
 * stage failure the surviving stages release their reservations only when
 * they see their control stream close, and other nodes learn it by gossip a
 * moment later; planning at once against the stale figures would find the
 * mesh full and fail the requests in flight for nothing. */
#define _GNU_SOURCE /* sched_getaffinity */
#include "serve/pipeline.h"

#include <assert.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine.h"
#include "engine/gguf.h"
#include "engine/model.h"
#include "lib/clock.h"
#include "lib/cpu_relax.h"
#include "lib/log.h"
#include "lib/precise_timer.h"
#include "lib/prom.h"
#include "mesh/identity.h"
#include "models/weights_store.h"
#include "serve/plan.h"
#include "serve/scheduler.h"
#include "serve/stage.h"
#include "serve/stage_wire.h"

#define PIPE_LOG "pipeline"
#define PIPE_MAX 16
#define PIPE_PLAN_RETRY_MS 1000     /* planning again while a model is planning */
#define PIPE_PUBLISH_MS 200         /* plan changes are gossiped at most this often */
#define PIPE_DEMAND_MS 200          /* demand is looked at this often (a new record when its set of models changed) */
#define PIPE_AVOID_MS 10000         /* a node that failed a plan is left out this long */
#define PIPE_SATURATED_ON_MS 2000   /* the queue over the threshold this long: saturated */
#define PIPE_SATURATED_OFF_MS 20000 /* no request waiting this long: not any more */
#define PIPE_RECEIVE_TIMEOUT_S 120  /* a lane waiting longer on the pipeline gives up */
#define PIPE_RESUME_TIMEOUT_S 600   /* loading a new plan (fetching weights) may take this long */
#define PIPE_MAX_AVOID 8
#define PIPE_DECODE_POSITIONS 4     /* a FORWARD this short is a decode step (spin for its reply) */
#define PIPE_SPIN_EARLY_US 200      /* a lane starts polling for its reply this long before it is due */
#define PIPE_SPIN_LATE_US 500       /* and goes to sleep this long after */
#define PIPE_PREWAKE_MIN_GAP_US 2000 /* decode steps closer than this are not pre-woken (see the top) */
#define PIPE_PREWAKE_EARLY_US 100   /* the loop spins from this long before a send is due, */
#define PIPE_PREWAKE_LATE_US 150    /* and until this long after (both plus twice the jitter), */
#define PIPE_PREWAKE_MAX_US 500     /* at most this long on either side */
#define PIPE_PREWAKE_POOR 300       /* a hit rate (per mille) below this: */
#define PIPE_PREWAKE_PROBE 8        /* pre-wake only one step in this many, to keep measuring */

typedef struct pipe_out {
    struct pipe_out *next;
    uint32_t epoch;
    size_t start, len;    /* the frame is frame[start, start + len) */
    uint8_t frame[];
} pipe_out;

/* A step on the ring (sent, its OUTPUT not back yet): who is in it, so that
 * its times can be shared among its lanes when the OUTPUT brings them. */
typedef struct {
    int n;
    uint16_t lane[STAGE_MAX_PIECES];
    uint16_t positions[STAGE_MAX_PIECES];
    uint32_t total;       /* positions in all */
    uint64_t sent_us;     /* when it was handed to the loop */
    uint64_t local_us;    /* stage 0's compute for it */
    uint64_t wait_us;     /* stage 0's wait for room on the ring */
} pipe_step;

/* A lane's share of the stages' time since its request started (us). */
typedef struct {
    double compute_us[PLAN_MAX_STAGES], wait_us[PLAN_MAX_STAGES];
    double hop_us;
} pipe_times;

typedef struct {
    pipe_times times;     /* the running request's */
    float *rows;          /* final hidden states received, (cap_rows, n_embd) */
    int cap_rows;
    int got;              /* rows received since the last receive */
    int broken;
    int decode_sent;      /* the frame in flight is a decode step (a few positions) */
    uint64_t resume_since_us; /* when the lane began to wait for a new pipeline */
    uint64_t resume_last_us;  /* its last call to resume (a gap: a new wait) */
    uint64_t decode_rt_us;/* moving average of a decode step's round trip, 0 = none yet */
    uint64_t back_us;     /* when its last decode step's rows came back, 0 = consumed */
} pipe_lane;

typedef struct pipe {
    pipelines *ps;
    char id[MESH_MAX_NAME];
    char path[1024];
    engine_model *em;     /* owned by the scheduler */
    uint8_t hash[32];
    model_sizes *z;
    int n_layer, n_embd, n_ctx, n_lanes;
    model_kv_type kv_type; /* the engine's, and every stage's (ASSIGN) */
    engine_tail tail;

    /* Loop thread. */
    plan plan;
    plan last_split;                          /* the last plan with several stages */
    uint32_t next_version;
    uint64_t reserved;                        /* this node's part, in the budget */
    uint64_t stage_need[PLAN_MAX_STAGES];     /* what each stage was assigned */
    mesh_stream *control[PLAN_MAX_STAGES];
    stage_stats stats[PLAN_MAX_STAGES];
    prom_histogram step_compute[PLAN_MAX_STAGES]; /* per batch step: each stage's compute (s) */
    prom_histogram step_hop;                      /* per step: its round trip less the stages' times (s) */
    mesh_stream *data_out, *data_in;          /* data_out: written under lock (lanes send on it) */
    uint8_t avoid[PIPE_MAX_AVOID][MESH_ID_BYTES];
    uint64_t avoid_until[PIPE_MAX_AVOID];
    uint64_t planning_since_ms;
    uint64_t ready_at_ms;
    uint64_t breaks;                          /* plans broken by a failure */
    int draining;                             /* being unloaded: no new requests, waits for its jobs */
    int saturated;                            /* published: a standby with room may add a second host */
    uint64_t over_since_ms, calm_since_ms;    /* the hysteresis (pipe_watch_queue) */
    uint64_t refused_seen;                    /* the scheduler's 429 count at the last look */
    uint64_t drain_deadline_ms;               /* then the jobs left are ended with an error */
    int drain_aborted;

    /* Shared with the lanes, under lock. */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int ready, failing, closed;
    uint32_t epoch;
    char fail_reason[PLAN_MAX_REASON];
    pipe_lane *lanes;
    pipe_out *out_head, *out_tail;
    int flushing;                             /* the loop is sending frames it took from the outbox */
    int last_sent_now;                        /* the last FORWARD left from its lane (no pre-wake then) */
    uint64_t sent_now, sent_now_us;           /* FORWARDs sent by their lanes (of sent_frames), their time */
    uint64_t sent_frames, sent_bytes, recv_rows;
    uint64_t sent_pieces;                     /* lanes' pieces in the FORWARDs queued */
    uint64_t steps_sent, steps_back;          /* FORWARDs queued and OUTPUTs received, this plan */
    uint64_t window;                          /* steps allowed on the ring: the stage count */
    pipe_step ring[PLAN_MAX_STAGES];          /* the steps on it, oldest at ring_head */
    int ring_head;
    int ring_stages;                          /* the plan's, for the lanes' timings */
    char ring_node[PLAN_MAX_STAGES][MESH_ID_HEX];
    int ring_first[PLAN_MAX_STAGES], ring_end[PLAN_MAX_STAGES];
    uint64_t steps_max;                       /* the most ever on it at once (<= window) */
    uint64_t window_waits;                    /* sends that waited for the window */
    uint64_t round_trips, round_trip_us;      /* send of a last row to its arrival */
    uint64_t replies_early, replies_caught, replies_late; /* decode replies vs the lane's poll (tail_wait_due) */
    uint64_t *sent_at_us;                     /* (n_lanes) when a lane last asked for rows */
    uint64_t send_gap_us, send_gap_dev_us;    /* a decode step's rows in -> next FORWARD queued: moving
                                                 average and deviation (the pre-wake) */

    /* Loop thread: the pre-wake. The next decode send is expected between
     * these (0: none); spins, those the FORWARD came in, their time. */
    uint64_t spin_from_us, spin_until_us;
    uint64_t spin_frames;                     /* sent_frames when the window was set */
    uint64_t prewakes, prewake_hits, prewake_spin_us;
    uint64_t prewake_late;                    /* windows whose FORWARD had gone before they began */
    unsigned prewake_rate;                    /* recent windows the FORWARD came in, per mille */
    unsigned prewake_turn;                    /* steps since the last window, while that rate is poor */
} pipe;

struct pipelines {
    struct event_base *base;
    mesh *mesh;
    sched *sched;
    stage_host *stages;
    weights_store *ws;
    budget *budget;
    pipeline_config cfg;
    pipe *pipes[PIPE_MAX];
    int n_pipes;
    struct event *wake;       /* lanes queued frames */
    struct event *timer;      /* replanning, deferred publication */
    precise_timer *prewake;   /* the pre-wake (see the top); NULL if none: no CPU to spare for it */
    int poll_replies;         /* lanes may poll for their replies: the process has 2 CPUs or more */
    int send_now;             /* lanes send their FORWARDs (see the top); LLMESH_SPLIT_LOOP_SEND=1: no */
    int publish_dirty;
    uint64_t last_publish_ms;
    pipelines_demand_fn demand;   /* this node's demand, published after the plans; may be NULL */
    void *demand_ctx;
    uint64_t demand_checked_ms;
    uint32_t demand_hash;         /* of the demand last published */
    plan_file files[PLAN_MAX_FILES]; /* files this node holds, in its record */
    int n_files;
};

/* ======================================================================== */
/* the tail: lane threads                                                    */
/* ======================================================================== */

/* For pthread_cond_timedwait (CLOCK_REALTIME, its default clock). */
static struct timespec deadline_after(int seconds)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_sec += seconds;
    return t;
}

/* A moving average and its mean deviation, in us (a quarter of each new
 * sample): how long something takes and how much that varies. */
static void average_add(uint64_t *avg, uint64_t *dev, uint64_t sample)
{
    if (!*avg) {
        *avg = sample;
        *dev = sample / 8;
        return;
    }
    uint64_t d = sample > *avg ? sample - *avg : *avg - sample;
    *dev = (3 * *dev + d) / 4;
    *avg = (3 * *avg + sample) / 4;
}

static uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

/* One FORWARD for the whole step: the pieces of lanes whose exchange is
 * broken are left out (and marked), the rest go in one frame. */
static int tail_send(void *ctx, engine_tail_piece *pieces, int n_pieces, const float *x, uint64_t local_us,
                     char *err, size_t errlen)
{
    pipe *p = ctx;
    assert(n_pieces >= 1 && n_pieces <= STAGE_MAX_PIECES);
    size_t width = (size_t)p->n_embd * sizeof(float), total = 0;
    for (int i = 0; i < n_pieces; i++) total += (size_t)pieces[i].n;
    pipe_out *o = malloc(sizeof *o + STAGE_STATES_HEADER_MAX + total * width);
    if (!o) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    pthread_mutex_lock(&p->lock);
    /* Back-pressure: at most `window` steps on the ring. Every FORWARD
     * comes back as one OUTPUT (empty when it asked no rows), so sent - back
     * is what the stages still hold or compute. Without the bound, a stage 0
     * faster than a later stage would queue a whole prompt there (n_ctx x
     * n_embd x 4 bytes per lane); with it, stage 0 waits and the slowest
     * stage sets the pace. The window is the stage count: one step for
     * each later stage to compute while stage 0 computes the next, and one
     * on the wire. A step that asks for rows is waited for by the engine
     * anyway: the window bites on runs of prompt chunks. */
    struct timespec deadline = deadline_after(PIPE_RECEIVE_TIMEOUT_S);
    int waited = 0, rc = 0;
    uint64_t wait_from = clock_us();
    while (!p->closed && p->ready && p->steps_sent - p->steps_back >= p->window && rc != ETIMEDOUT) {
        waited = 1;
        rc = pthread_cond_timedwait(&p->cond, &p->lock, &deadline);
    }
    p->window_waits += (uint64_t)waited;
    if (p->closed || !p->ready || p->steps_sent - p->steps_back >= p->window) {
        int closed = p->closed, full = p->ready && !closed;
        pthread_mutex_unlock(&p->lock);
        free(o);
        if (closed || full) {
            snprintf(err, errlen, closed ? "the node is shutting down"
                                         : "the pipeline took no step in %d s", PIPE_RECEIVE_TIMEOUT_S);
            return -1;
        }
        return ENGINE_TAIL_BROKEN;
    }
    stage_states h = {.dtype = STAGE_DTYPE_F32};
    assert(p->steps_sent - p->steps_back < PLAN_MAX_STAGES);
    pipe_step *step = &p->ring[(p->ring_head + (int)(p->steps_sent - p->steps_back)) % PLAN_MAX_STAGES];
    step->n = 0;
    step->total = 0;
    step->local_us = local_us;
    const float *row = x;
    uint8_t *data = o->frame + STAGE_STATES_HEADER_MAX; /* the header is moved up against it below */
    uint64_t now = clock_us(), back = 0;
    int decode = 1;
    for (int i = 0; i < n_pieces; i++) {
        engine_tail_piece *q = &pieces[i];
        pipe_lane *L = &p->lanes[q->lane];
        if (q->rows == ENGINE_ROWS_NONE || q->n > PIPE_DECODE_POSITIONS) decode = 0;
        if (L->back_us > back) back = L->back_us;
        L->back_us = 0;
        q->broken = L->broken;
        if (!q->broken) {
            h.pieces[h.n_pieces++] = (stage_piece){.lane = (uint16_t)q->lane, .pos = (uint32_t)q->pos,
                                                   .n = (uint16_t)q->n, .rows = (uint8_t)q->rows};
            memcpy(data, row, (size_t)q->n * width);
            data += (size_t)q->n * width;
            if (q->rows != ENGINE_ROWS_NONE) p->sent_at_us[q->lane] = now;
            step->lane[step->n] = (uint16_t)q->lane;
            step->positions[step->n++] = (uint16_t)q->n;
            step->total += (uint32_t)q->n;
            L->decode_sent = q->rows != ENGINE_ROWS_NONE && q->n <= PIPE_DECODE_POSITIONS;
        }
        row += (size_t)q->n * p->n_embd;
    }
    if (h.n_pieces == 0) {
        pthread_mutex_unlock(&p->lock);
        free(o);
        return 0;
    }
    /* The pace of decode steps, for the pre-wake: from the rows of the
     * step before to this send (a gap far past the average is a pause, a
     * new request, not the pace). */
    if (decode && back && now > back && (!p->send_gap_us || now - back < 8 * p->send_gap_us + 10000))
        average_add(&p->send_gap_us, &p->send_gap_dev_us, now - back);
    step->sent_us = now;
    step->wait_us = now - wait_from;
    size_t head = stage_states_header_len(h.n_pieces, 0);
    stage_encode_states_header(STAGE_FORWARD, &h, o->frame + STAGE_STATES_HEADER_MAX - head, head);
    o->start = STAGE_STATES_HEADER_MAX - head;
    o->len = (size_t)(data - o->frame) - o->start;
    o->next = NULL;
    o->epoch = p->epoch;
    p->sent_pieces += h.n_pieces;
    p->steps_sent++;
    if (p->steps_sent - p->steps_back > p->steps_max) p->steps_max = p->steps_sent - p->steps_back;
    /* Sent from here when nothing queued is due before it (see the top). */
    int now_rc = 1;
    if (p->ps->send_now && !p->out_head && !p->flushing && p->data_out &&
        mesh_transport_trylock(p->ps->mesh) == 0) {
        uint64_t t = clock_us();
        now_rc = mesh_stream_send_now(p->data_out, o->frame + o->start, o->len);
        mesh_transport_unlock(p->ps->mesh);
        p->sent_now_us += clock_us() - t;
    }
    p->last_sent_now = now_rc == 0;
    if (now_rc == 0) {
        p->sent_frames++;
        p->sent_bytes += o->len;
        p->sent_now++;
    }
    if (now_rc != 1) { /* sent, or failed as the loop's send would have */
        pthread_mutex_unlock(&p->lock);
        free(o);
        return 0;
    }
    if (p->out_tail) p->out_tail->next = o;
    else p->out_head = o;
    p->out_tail = o;
    pthread_mutex_unlock(&p->lock);
    event_active(p->ps->wake, EV_READ, 0);
    return 0;
}

/* Waits (p->lock held) for the reply to a decode step by polling around the
 * time it is due: one ring round trip after the send, as the last ones
 * took. Sleeping on the condition instead puts a thread wake-up (~65 us on
 * the development VM) on the path of every token. Until shortly before the
 * reply is due the lane sleeps (a timed wait, off the critical path), then
 * polls with the lock released between looks, PIPE_SPIN_EARLY_US +
 * PIPE_SPIN_LATE_US at most: a few percent of a core at tens of tokens per
 * second. A late reply is then waited for on the condition as before.
 * Counts where the reply found the lane (under the lock): asleep before the
 * window (early), polling (caught), or after it (late: asleep again). */
static void tail_wait_due(pipe *p, pipe_lane *L, int lane, int n_rows)
{
    uint64_t sent = p->sent_at_us[lane];
    if (!L->decode_sent || !L->decode_rt_us || !sent || !p->ps->poll_replies) return;
    uint64_t due = sent + L->decode_rt_us;
    uint64_t from = due > PIPE_SPIN_EARLY_US ? due - PIPE_SPIN_EARLY_US : 0;
    uint64_t until = due + PIPE_SPIN_LATE_US;
    uint64_t t = clock_us();
    if (t < from) {
        struct timespec at;
        clock_gettime(CLOCK_REALTIME, &at);
        uint64_t ns = (uint64_t)at.tv_nsec + (from - t) * 1000;
        at.tv_sec += (time_t)(ns / 1000000000);
        at.tv_nsec = (long)(ns % 1000000000);
        int rc = 0;
        while (!p->closed && !L->broken && L->got < n_rows && rc != ETIMEDOUT)
            rc = pthread_cond_timedwait(&p->cond, &p->lock, &at);
        if (L->got >= n_rows) {
            p->replies_early++;
            return;
        }
    }
    /* The polls read the three words without the lock, which is taken
     * again only when one changed: a poller that held it between looks
     * made the loop, arriving with the rows, sleep on the mutex and need a
     * wake-up of its own. Aligned ints, written under the lock. */
    if (p->closed || L->broken || L->got >= n_rows) return;
    pthread_mutex_unlock(&p->lock);
    while (!__atomic_load_n(&p->closed, __ATOMIC_RELAXED) && !__atomic_load_n(&L->broken, __ATOMIC_RELAXED) &&
           __atomic_load_n(&L->got, __ATOMIC_RELAXED) < n_rows && clock_us() < until)
        for (int i = 0; i < 64; i++) cpu_relax();
    pthread_mutex_lock(&p->lock);
    if (L->got >= n_rows) p->replies_caught++;
    else if (!p->closed && !L->broken) p->replies_late++;
}

static int tail_receive(void *ctx, int lane, float *out, int n_rows, char *err, size_t errlen)
{
    pipe *p = ctx;
    pipe_lane *L = &p->lanes[lane];
    struct timespec deadline = deadline_after(PIPE_RECEIVE_TIMEOUT_S);
    int rc = 0;
    pthread_mutex_lock(&p->lock);
    tail_wait_due(p, L, lane, n_rows);
    while (!p->closed && !L->broken && L->got < n_rows && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&p->cond, &p->lock, &deadline);
    if (p->closed) {
        snprintf(err, errlen, "the node is shutting down");
        rc = -1;
    } else if (L->broken) {
        rc = ENGINE_TAIL_BROKEN;
    } else if (L->got < n_rows) {
        snprintf(err, errlen, "the pipeline gave no answer in %d s", PIPE_RECEIVE_TIMEOUT_S);
        rc = -1;
    } else {
        memcpy(out, L->rows, sizeof(float) * (size_t)n_rows * p->n_embd);
        L->got = 0;
        rc = 0;
    }
    pthread_mutex_unlock(&p->lock);
    return rc;
}

static void tail_timings(void *ctx, int lane, engine_result *r)
{
    pipe *p = ctx;
    pipe_lane *L = &p->lanes[lane];
    pthread_mutex_lock(&p->lock);
    if (!r) {
        memset(&L->times, 0, sizeof L->times);
    } else {
        r->n_stages = p->ring_stages;
        for (int s = 0; s < p->ring_stages; s++) {
            engine_stage_time *t = &r->stages[s];
            snprintf(t->node, sizeof t->node, "%s", p->ring_node[s]);
            t->first = p->ring_first[s];
            t->end = p->ring_end[s];
            t->compute_ms = L->times.compute_us[s] / 1000.0;
            t->wait_ms = L->times.wait_us[s] / 1000.0;
        }
        r->hop_ms = L->times.hop_us / 1000.0;
    }
    pthread_mutex_unlock(&p->lock);
}

/* Waits a second at most for the new pipeline (the engine asks the request
 * whether it is still wanted between calls), PIPE_RESUME_TIMEOUT_S in all. */
static int tail_resume(void *ctx, int lane, char *err, size_t errlen)
{
    pipe *p = ctx;
    pipe_lane *L = &p->lanes[lane];
    struct timespec deadline = deadline_after(1);
    int rc = 0;
    pthread_mutex_lock(&p->lock);
    uint64_t t = clock_us();
    if (!L->resume_since_us || t - L->resume_last_us > 3000000) L->resume_since_us = t;
    L->resume_last_us = t;
    while (!p->closed && !p->failing && !p->ready && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&p->cond, &p->lock, &deadline);
    if (!p->closed && !p->failing && !p->ready &&
        clock_us() - L->resume_since_us < (uint64_t)PIPE_RESUME_TIMEOUT_S * 1000000) {
        pthread_mutex_unlock(&p->lock);
        return ENGINE_TAIL_WAITING;
    }
    L->resume_since_us = 0;
    if (p->closed) {
        snprintf(err, errlen, "the node is shutting down");
        rc = -1;
    } else if (p->failing) {
        snprintf(err, errlen, "the model cannot run any more: %s", p->fail_reason);
        rc = -1;
    } else if (!p->ready) {
        snprintf(err, errlen, "no new pipeline for the model in %d s", PIPE_RESUME_TIMEOUT_S);
        rc = -1;
    } else {
        L->broken = 0;
        L->got = 0;
        rc = 0;
    }
    pthread_mutex_unlock(&p->lock);
    return rc;
}

/* ======================================================================== */
/* plans: loop thread                                                        */
/* ======================================================================== */

/* FNV-1a over the names of the demanded models: a new record only when a
 * model becomes demanded or stops being (a rate decays every second after
 * the last request; gossiping each step would flood the mesh with records
 * that tell a standby nothing new). The rates themselves ride along with
 * every record published for any reason. */
static uint32_t demand_digest(const plan_demand *d, int n)
{
    uint32_t h = 2166136261u;
    for (int i = 0; i < n; i++) {
        for (const char *c = d[i].model; *c; c++) h = (h ^ (uint8_t)*c) * 16777619u;
        h = (h ^ 0xff) * 16777619u;
    }
    return h;
}

void pipelines_set_demand_source(pipelines *ps, pipelines_demand_fn fn, void *ctx)
{
    ps->demand = fn;
    ps->demand_ctx = ctx;
}

static void publish_soon(pipelines *ps)
{
    ps->publish_dirty = 1;
}

static void publish_now(pipelines *ps)
{
    static plan plans[PIPE_MAX]; /* ~2 KB each: not on the stack */
    int n = 0;
    for (int i = 0; i < ps->n_pipes; i++) plans[n++] = ps->pipes[i]->plan;
    uint8_t buf[MESH_MAX_APP];
    static plan_demand demand[PLAN_MAX_DEMAND];
    int nd = ps->demand ? ps->demand(ps->demand_ctx, demand, PLAN_MAX_DEMAND) : 0;
    ps->demand_hash = demand_digest(demand, nd);
    static plan_saturated sat[PIPE_MAX];
    plan_extra extra = {.files = ps->files, .n_files = ps->n_files, .saturated = sat};
    for (int i = 0; i < ps->n_pipes; i++)
        if (ps->pipes[i]->saturated && !ps->pipes[i]->draining && ps->pipes[i]->plan.state == PLAN_READY)
            snprintf(sat[extra.n_saturated++].model, MESH_MAX_NAME, "%s", ps->pipes[i]->id);
    /* When the record is full: the files go first, then the demand, then plans. */
    int len = plan_encode_app_files(plans, n, demand, nd, &extra, buf, sizeof buf);
    while (len < 0 && extra.n_files > 0) {
        extra.n_files--;
        len = plan_encode_app_files(plans, n, demand, nd, &extra, buf, sizeof buf);
    }
    while (len < 0 && nd > 0) len = plan_encode_app_files(plans, n, demand, --nd, &extra, buf, sizeof buf);
    while (len < 0 && n > 0) len = plan_encode_app_files(plans, --n, demand, nd, &extra, buf, sizeof buf);
    if (n < ps->n_pipes) log_warn(PIPE_LOG, "only %d of %d plans fit this node's record", n, ps->n_pipes);
    mesh_set_app_data(ps->mesh, buf, len > 0 ? (size_t)len : 0);
    const char *ready[PIPE_MAX];
    int n_ready = 0;
    for (int i = 0; i < ps->n_pipes; i++)
        if (ps->pipes[i]->plan.state == PLAN_READY && !ps->pipes[i]->draining) ready[n_ready++] = ps->pipes[i]->id;
    mesh_set_models(ps->mesh, ready, n_ready);
    ps->publish_dirty = 0;
    ps->last_publish_ms = clock_ms();
}

void pipelines_set_files(pipelines *ps, const plan_file *files, int n)
{
    if (n > PLAN_MAX_FILES) n = PLAN_MAX_FILES;
    if (n < 0) n = 0;
    if (n == ps->n_files && (n == 0 || !memcmp(ps->files, files, (size_t)n * sizeof *files))) return;
    memset(ps->files, 0, sizeof ps->files);
    if (n) memcpy(ps->files, files, (size_t)n * sizeof *files);
    ps->n_files = n;
    publish_soon(ps);
}

static uint64_t pipe_need(void *ctx, int first, int end, int head)
{
    pipe *p = ctx;
    pipelines *ps = p->ps;
    if (first < end) {
        model_part part = {first, end, head};
        return model_part_need(p->z, &part, p->n_ctx, p->kv_type, p->n_lanes,
                               ps->cfg.n_threads > 0 ? ps->cfg.n_threads : 1);
    }
    /* No layer: what one layer costs, taken off a one-layer part. */
    model_part one = {0, 1, head};
    uint64_t with_one = model_part_need(p->z, &one, p->n_ctx, p->kv_type, p->n_lanes,
                                        ps->cfg.n_threads > 0 ? ps->cfg.n_threads : 1);
    uint64_t layer = p->z->layer_bytes[0] +
                     model_kv_bytes_per_pos(p->z, p->kv_type) * (uint64_t)p->n_ctx * (uint64_t)p->n_lanes;
    return with_one > layer ? with_one - layer : with_one;
}

static int avoided(pipe *p, const uint8_t id[MESH_ID_BYTES])
{
    uint64_t now = clock_ms();
    for (int i = 0; i < PIPE_MAX_AVOID; i++)
        if (p->avoid_until[i] > now && !memcmp(p->avoid[i], id, MESH_ID_BYTES)) return 1;
    return 0;
}

static void avoid_node(pipe *p, const uint8_t id[MESH_ID_BYTES])
{
    int slot = 0;
    for (int i = 1; i < PIPE_MAX_AVOID; i++)
        if (p->avoid_until[i] < p->avoid_until[slot]) slot = i;
    memcpy(p->avoid[slot], id, MESH_ID_BYTES);
    p->avoid_until[slot] = clock_ms() + PIPE_AVOID_MS;
}

static void lanes_break(pipe *p, int fail, const char *reason)
{
    pthread_mutex_lock(&p->lock);
    p->ready = 0;
    p->epoch++;
    for (int i = 0; i < p->n_lanes; i++) {
        p->lanes[i].broken = 1;
        p->lanes[i].got = 0;
    }
    if (fail) {
        p->failing = 1;
        snprintf(p->fail_reason, sizeof p->fail_reason, "%s", reason);
    }
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

static void lanes_ready(pipe *p)
{
    pthread_mutex_lock(&p->lock);
    p->ready = 1;
    p->steps_sent = p->steps_back = 0; /* a new ring: nothing on it */
    p->window = p->plan.n_stages < 2 ? 2 : (uint64_t)p->plan.n_stages;
    p->ring_head = 0;
    p->ring_stages = p->plan.n_stages > 1 ? p->plan.n_stages : 0;
    for (int i = 0; i < p->ring_stages; i++) {
        identity_id_hex(p->plan.stages[i].node, p->ring_node[i]);
        p->ring_first[i] = p->plan.stages[i].first;
        p->ring_end[i] = p->plan.stages[i].end;
    }
    p->failing = 0;
    p->fail_reason[0] = 0;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

/* A batch step's compute in one stage, or its hops: 0.1 ms (a few layers of
 * a small model) to 10 s (a long prompt on a slow node or link). */
static const double step_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                     0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

static void step_histograms_reset(pipe *p)
{
    int n = (int)(sizeof step_bounds / sizeof step_bounds[0]);
    for (int i = 0; i < PLAN_MAX_STAGES; i++) prom_histogram_init(&p->step_compute[i], step_bounds, n);
    prom_histogram_init(&p->step_hop, step_bounds, n);
}

/* Closes every stream of the current plan and gives back this node's part. */
static void plan_teardown(pipe *p)
{
    for (int i = 0; i < PLAN_MAX_STAGES; i++)
        if (p->control[i]) {
            mesh_stream_abort(p->control[i]);
            p->control[i] = NULL;
        }
    mesh_stream *out = p->data_out;
    pthread_mutex_lock(&p->lock); /* no lane sends on it from here */
    p->data_out = NULL;
    pthread_mutex_unlock(&p->lock);
    if (out) mesh_stream_abort(out);
    if (p->data_in) mesh_stream_abort(p->data_in);
    p->data_in = NULL;
    if (p->reserved) budget_release(p->ps->budget, p->reserved);
    p->reserved = 0;
    memset(p->stats, 0, sizeof p->stats);
    p->spin_until_us = 0;
    step_histograms_reset(p);
}

static void plan_start(pipe *p);

/* A stage failed: break the lanes' exchanges, tear down, plan again. */
static void plan_break(pipe *p, const uint8_t *culprit, const char *why)
{
    if (p->plan.state == PLAN_PLANNING) return;
    char hex[MESH_ID_HEX] = "";
    if (culprit) {
        identity_id_hex(culprit, hex);
        avoid_node(p, culprit);
    }
    log_warn(PIPE_LOG, "%s: pipeline v%u broken%s%.16s: %s; planning again", p->id, p->plan.version,
             culprit ? " by " : "", hex, why);
    p->breaks++;
    lanes_break(p, 0, why);
    plan_start(p);
}

static const mesh_stream_handlers control_handlers;
static const mesh_stream_handlers data_out_handlers;

static int stage_index_of(pipe *p, mesh_stream *s)
{
    for (int i = 1; i < p->plan.n_stages; i++)
        if (p->control[i] == s) return i;
    return -1;
}

/* Every stage is ready: START them, open the ring, hand the engine its tail. */
static void plan_go(pipe *p)
{
    uint8_t start = STAGE_START;
    for (int i = 1; i < p->plan.n_stages; i++) mesh_stream_send(p->control[i], &start, 1);
    char err[256];
    mesh_stream *out = mesh_stream_open(p->ps->mesh, p->plan.stages[1].node, STAGE_STREAM_DATA,
                                        &data_out_handlers, p, err, sizeof err);
    if (!out) {
        plan_break(p, p->plan.stages[1].node, err);
        return;
    }
    stage_hello hello;
    memset(&hello, 0, sizeof hello);
    memcpy(hello.coordinator, mesh_node_id(p->ps->mesh), MESH_ID_BYTES);
    snprintf(hello.model, sizeof hello.model, "%s", p->id);
    hello.version = p->plan.version;
    hello.stage = 1;
    uint8_t frame[256];
    int n = stage_encode_hello(&hello, frame, sizeof frame);
    mesh_stream_send(out, frame, (size_t)n);
    pthread_mutex_lock(&p->lock);
    p->data_out = out;
    pthread_mutex_unlock(&p->lock);
    p->tail.depth = p->plan.n_stages; /* the window: one step per stage (tail_send) */
    engine_set_split(p->em, p->plan.stages[0].end, &p->tail);
    p->plan.state = PLAN_READY;
    p->plan.stages[0].state = STAGE_READY;
    p->ready_at_ms = clock_ms();
    lanes_ready(p);
    publish_now(p->ps);
    log_info(PIPE_LOG, "%s: pipeline v%u ready: %d stages", p->id, p->plan.version, p->plan.n_stages);
}

static void plan_check_ready(pipe *p)
{
    if (p->plan.state != PLAN_LOADING) return;
    for (int i = 1; i < p->plan.n_stages; i++)
        if (p->plan.stages[i].state != STAGE_READY) return;
    plan_go(p);
}

/* Plans the model over this node and the alive members, and starts the
 * plan: solo at once; split: ASSIGN to every stage. */
static void plan_start(pipe *p)
{
    pipelines *ps = p->ps;
    /* What the old plan held comes back to the members (see the top). */
    uint64_t credit[PLAN_MAX_STAGES];
    uint8_t credit_node[PLAN_MAX_STAGES][MESH_ID_BYTES];
    int n_credit = 0;
    for (int i = 1; i < p->plan.n_stages; i++)
        if (p->control[i] || p->plan.state != PLAN_PLANNING) {
            credit[n_credit] = p->stage_need[i];
            memcpy(credit_node[n_credit++], p->plan.stages[i].node, MESH_ID_BYTES);
        }
    plan_teardown(p);

    static mesh_peer peers[256];
    int n_peers = mesh_peers(ps->mesh, peers, 256);
    if (n_peers > 256) n_peers = 256;
    plan_member *members = calloc((size_t)n_peers + 1, sizeof *members);
    if (!members) return;
    int n = 0;
    memcpy(members[0].id, mesh_node_id(ps->mesh), MESH_ID_BYTES);
    members[0].free_bytes = budget_free(ps->budget);
    members[0].prev_first = 0;
    n = 1;
    for (int i = 0; i < n_peers; i++) {
        const mesh_peer *q = &peers[i];
        if (strcmp(q->state, "alive") || !strcmp(q->role, "client") || !q->link[0]) continue;
        plan_member *m = &members[n];
        if (identity_id_from_hex(q->id, m->id) != 0 || avoided(p, m->id)) continue;
        m->free_bytes = q->memory_bytes > q->memory_used ? q->memory_bytes - q->memory_used : 0;
        for (int c = 0; c < n_credit; c++)
            if (!memcmp(credit_node[c], m->id, MESH_ID_BYTES)) m->free_bytes += credit[c];
        if (m->free_bytes > q->memory_bytes) m->free_bytes = q->memory_bytes;
        m->relayed = !strcmp(q->link, "relayed");
        m->rtt_ms = q->rtt_ms;
        m->prev_first = -1;
        for (int s = 1; s < p->last_split.n_stages; s++)
            if (!memcmp(p->last_split.stages[s].node, m->id, MESH_ID_BYTES)) m->prev_first = p->last_split.stages[s].first;
        n++;
    }
    plan_request rq = {.model = p->id, .n_layer = p->n_layer, .need = pipe_need, .need_ctx = p,
                       .force_stages = ps->cfg.split};
    plan next;
    int rc = plan_make(&rq, members, n, &next);
    free(members);
    next.version = ++p->next_version;
    int was_planning = p->plan.state == PLAN_PLANNING && p->plan.version > 0;
    char old_reason[PLAN_MAX_REASON];
    snprintf(old_reason, sizeof old_reason, "%s", p->plan.reason);
    p->plan = next;
    publish_soon(ps);
    if (rc != 0) {
        if (!was_planning || strcmp(old_reason, next.reason))
            log_warn(PIPE_LOG, "%s: cannot run now: %s", p->id, next.reason);
        if (!p->planning_since_ms) p->planning_since_ms = clock_ms();
        /* Requests waiting to resume end now, with the reason. */
        lanes_break(p, 1, next.reason);
        return;
    }
    p->planning_since_ms = 0;
    uint64_t need0 = pipe_need(p, 0, next.stages[0].end, 1);
    if (budget_reserve(ps->budget, need0) != 0) { /* cannot happen: planned with budget_free */
        p->plan.state = PLAN_PLANNING;
        snprintf(p->plan.reason, sizeof p->plan.reason, "this node's memory is taken");
        return;
    }
    p->reserved = need0;
    if (next.n_stages == 1) {
        engine_set_split(p->em, p->n_layer, NULL);
        p->plan.state = PLAN_READY;
        p->plan.stages[0].state = STAGE_READY;
        p->ready_at_ms = clock_ms();
        lanes_ready(p);
        publish_now(ps);
        log_info(PIPE_LOG, "%s: runs here (solo, %.1f MiB)", p->id, need0 / 1048576.0);
        return;
    }
    p->last_split = next;
    log_info(PIPE_LOG, "%s: plan v%u, %d stages", p->id, next.version, next.n_stages);
    for (int i = 0; i < next.n_stages; i++) {
        char hex[MESH_ID_HEX];
        identity_id_hex(next.stages[i].node, hex);
        log_info(PIPE_LOG, "  stage %d: layers [%d, %d) on %.16s", i, next.stages[i].first,
                 next.stages[i].end, hex);
    }
    p->plan.stages[0].state = STAGE_LOADING;
    for (int i = 1; i < next.n_stages; i++) {
        stage_assign a;
        memset(&a, 0, sizeof a);
        a.version = next.version;
        memcpy(a.model_hash, p->hash, 32);
        snprintf(a.model, sizeof a.model, "%s", p->id);
        a.n_layer = (uint16_t)p->n_layer;
        a.first = (uint16_t)next.stages[i].first;
        a.end = (uint16_t)next.stages[i].end;
        a.stage = (uint8_t)i;
        a.n_stages = (uint8_t)next.n_stages;
        memcpy(a.next, i + 1 < next.n_stages ? next.stages[i + 1].node : mesh_node_id(ps->mesh),
               MESH_ID_BYTES);
        a.n_ctx = (uint32_t)p->n_ctx;
        a.n_lanes = (uint16_t)p->n_lanes;
        a.n_embd = (uint32_t)p->n_embd;
        a.dtype = STAGE_DTYPE_F32;
        a.kv_type = (uint8_t)p->kv_type;
        a.need_bytes = p->stage_need[i] = pipe_need(p, a.first, a.end, 0);
        char err[256];
        p->control[i] = mesh_stream_open(ps->mesh, next.stages[i].node, STAGE_STREAM_CONTROL,
                                         &control_handlers, p, err, sizeof err);
        uint8_t frame[STAGE_CONTROL_MAX_FRAME];
        int len = stage_encode_assign(&a, frame, sizeof frame);
        if (!p->control[i] || len < 0 || mesh_stream_send(p->control[i], frame, (size_t)len) != 0) {
            plan_break(p, next.stages[i].node, p->control[i] ? "cannot send ASSIGN" : err);
            return;
        }
    }
}

/* ---- control streams: the stages' reports ------------------------------ */

static void control_on_frame(void *user, mesh_stream *s, const uint8_t *f, size_t len)
{
    pipe *p = user;
    int i = stage_index_of(p, s);
    if (i < 0) return;
    char err[256];
    plan_stage *st = &p->plan.stages[i];
    if (len && f[0] == STAGE_STATUS) {
        stage_status status;
        if (stage_decode_status(f, len, &status, err, sizeof err) != 0) goto bad;
        int changed = st->state != status.state;
        st->state = status.state;
        st->fetched_bytes = status.fetched_bytes;
        st->total_bytes = status.total_bytes;
        if (changed && status.state == STAGE_READY)
            log_info(PIPE_LOG, "%s: stage %d ready (%.1f MiB of weights fetched)", p->id, i,
                     status.fetched_bytes / 1048576.0);
        publish_soon(p->ps);
        plan_check_ready(p);
        return;
    }
    if (len && f[0] == STAGE_STATS) {
        if (stage_decode_stats(f, len, &p->stats[i], err, sizeof err) != 0) goto bad;
        return;
    }
    if (len && f[0] == STAGE_REFUSE) {
        uint16_t code;
        char msg[STAGE_MAX_MESSAGE + 1];
        if (stage_decode_message(f, len, &code, msg, sizeof msg, err, sizeof err) != 0) goto bad;
        /* A stage whose next hop failed is not at fault: the next one is
         * (the coordinator itself after the last stage: nobody to leave out). */
        const uint8_t *culprit = code != STAGE_REFUSE_NEXT ? st->node
                                 : i + 1 < p->plan.n_stages ? p->plan.stages[i + 1].node : NULL;
        plan_break(p, culprit, msg);
        return;
    }
    snprintf(err, sizeof err, "unexpected control frame of kind 0x%02x", len ? f[0] : 0);
bad:
    stage_host_count_bad_frame(p->ps->stages);
    plan_break(p, st->node, err);
}

static void control_on_close(void *user, mesh_stream *s, const char *error)
{
    pipe *p = user;
    int i = stage_index_of(p, s);
    if (i < 0) return;
    p->control[i] = NULL;
    plan_break(p, p->plan.stages[i].node, error ? error : "the stage closed its control stream");
}

static const mesh_stream_handlers control_handlers = {control_on_frame, NULL, control_on_close};

/* ---- data streams ------------------------------------------------------ */

static void data_out_on_frame(void *user, mesh_stream *s, const uint8_t *f, size_t len)
{
    pipe *p = user;
    stage_host_count_bad_frame(p->ps->stages); /* nothing comes back this way */
    pthread_mutex_lock(&p->lock);
    p->data_out = NULL;
    pthread_mutex_unlock(&p->lock);
    mesh_stream_abort(s);
    plan_break(p, p->plan.stages[1].node, "a frame on the outgoing data stream");
}

static void data_out_on_close(void *user, mesh_stream *s, const char *error)
{
    pipe *p = user;
    if (p->data_out != s) return;
    pthread_mutex_lock(&p->lock); /* a lane sending on it finishes first */
    p->data_out = NULL;
    pthread_mutex_unlock(&p->lock);
    plan_break(p, p->plan.stages[1].node, error ? error : "stage 1 closed the data stream");
}

static const mesh_stream_handlers data_out_handlers = {data_out_on_frame, NULL, data_out_on_close};

/* The times of a step come back (p->lock held): each stage's share, and
 * the hops' (the round trip less the stages' times), go to its lanes in
 * proportion to their positions in it. */
static void step_times(pipe *p, const pipe_step *st, const stage_states *o)
{
    if (!st->total) return;
    double rt = (double)(clock_us() - st->sent_us), staged = 0;
    for (int k = 0; k < o->n_trail; k++) staged += (double)o->trail[k].compute_us + o->trail[k].wait_us;
    double hop = rt > staged ? rt - staged : 0;
    /* Stage 0's counters, beside those the other stages report. */
    p->stats[0].frames++;
    p->stats[0].tokens += st->total;
    p->stats[0].compute_us += st->local_us;
    prom_histogram_observe(&p->step_compute[0], (double)st->local_us / 1e6);
    for (int k = 0; k < o->n_trail && k + 1 < PLAN_MAX_STAGES; k++)
        prom_histogram_observe(&p->step_compute[k + 1], (double)o->trail[k].compute_us / 1e6);
    prom_histogram_observe(&p->step_hop, hop / 1e6);
    for (int i = 0; i < st->n; i++) {
        pipe_times *t = &p->lanes[st->lane[i]].times;
        double share = (double)st->positions[i] / st->total;
        t->compute_us[0] += share * (double)st->local_us;
        t->wait_us[0] += share * (double)st->wait_us;
        for (int k = 0; k < o->n_trail && k + 1 < PLAN_MAX_STAGES; k++) {
            t->compute_us[k + 1] += share * o->trail[k].compute_us;
            t->wait_us[k + 1] += share * o->trail[k].wait_us;
        }
        t->hop_us += share * hop;
    }
}

static void prewake_expect(pipe *p, uint64_t now, uint64_t gap, uint64_t jitter);

static void data_in_on_frame(void *user, mesh_stream *s, const uint8_t *f, size_t len)
{
    pipe *p = user;
    char err[256];
    const uint8_t *last = p->plan.stages[p->plan.n_stages - 1].node;
    if (len && f[0] == STAGE_FAIL) {
        uint16_t lane;
        char msg[STAGE_MAX_MESSAGE + 1];
        if (stage_decode_message(f, len, &lane, msg, sizeof msg, err, sizeof err) != 0 ||
            lane >= p->n_lanes)
            goto bad;
        log_info(PIPE_LOG, "%s: lane %u replays: %s", p->id, lane, msg);
        pthread_mutex_lock(&p->lock);
        p->lanes[lane].broken = 1;
        pthread_cond_broadcast(&p->cond);
        pthread_mutex_unlock(&p->lock);
        return;
    }
    static stage_states o; /* loop thread only; ~1 KB */
    if (len == 0 || f[0] != STAGE_OUTPUT || stage_decode_states(f, len, (uint32_t)p->n_embd, &o, err, sizeof err) != 0)
        goto bad;
    for (int i = 0; i < o.n_pieces; i++)
        if (o.pieces[i].lane >= p->n_lanes || o.dtype != STAGE_DTYPE_F32) {
            snprintf(err, sizeof err, "OUTPUT for lane %u, dtype %u", o.pieces[i].lane, o.dtype);
            goto bad;
        }
    if (o.n_trail + 1 != p->plan.n_stages) {
        snprintf(err, sizeof err, "OUTPUT with the times of %u stages, of %d", o.n_trail, p->plan.n_stages - 1);
        goto bad;
    }
    pthread_mutex_lock(&p->lock);
    if (p->steps_sent == p->steps_back) { /* nothing on the ring: not ours to answer */
        pthread_mutex_unlock(&p->lock);
        snprintf(err, sizeof err, "an OUTPUT for no step sent");
        goto bad;
    }
    step_times(p, &p->ring[p->ring_head], &o);
    p->ring_head = (p->ring_head + 1) % PLAN_MAX_STAGES;
    p->steps_back++;
    const uint8_t *data = o.data;
    uint64_t now = clock_us();
    int decode_back = 0;
    for (int i = 0; i < o.n_pieces; i++) {
        const stage_piece *q = &o.pieces[i];
        size_t bytes = (size_t)q->n * p->n_embd * sizeof(float);
        pipe_lane *L = &p->lanes[q->lane];
        if (!L->broken && L->got + q->n > L->cap_rows) {
            int cap = L->cap_rows ? L->cap_rows : 64;
            while (cap < L->got + q->n) cap *= 2;
            float *grown = realloc(L->rows, sizeof(float) * (size_t)cap * p->n_embd);
            if (!grown) {
                L->broken = 1;
            } else {
                L->rows = grown;
                L->cap_rows = cap;
            }
        }
        if (!L->broken) {
            memcpy(L->rows + (size_t)L->got * p->n_embd, data, bytes);
            __atomic_store_n(&L->got, L->got + q->n, __ATOMIC_RELAXED); /* a lane may poll it (tail_wait_due) */
            p->recv_rows += q->n;
            if (p->sent_at_us[q->lane]) {
                uint64_t rt = now - p->sent_at_us[q->lane];
                p->round_trips++;
                p->round_trip_us += rt;
                p->sent_at_us[q->lane] = 0;
                if (L->decode_sent) L->decode_rt_us = L->decode_rt_us ? (3 * L->decode_rt_us + rt) / 4 : rt;
                /* Pre-wake only when this was the one step on the ring:
                 * then the hop is on the stream's path. With other steps
                 * on it, stage 0 computes one of them meanwhile. */
                if (L->decode_sent && p->steps_sent == p->steps_back) {
                    L->back_us = now;
                    decode_back = 1;
                }
            }
        }
        data += bytes;
    }
    pthread_cond_broadcast(&p->cond);
    uint64_t gap = p->send_gap_us, jitter = p->send_gap_dev_us;
    int sent_now = p->last_sent_now;
    pthread_mutex_unlock(&p->lock);
    if (decode_back && !sent_now) prewake_expect(p, now, gap, jitter);
    return;
bad:
    log_warn(PIPE_LOG, "%s: bad frame from the last stage: %s", p->id, err);
    stage_host_count_bad_frame(p->ps->stages);
    p->data_in = NULL;
    mesh_stream_abort(s);
    plan_break(p, last, err);
}

static void data_in_on_close(void *user, mesh_stream *s, const char *error)
{
    pipe *p = user;
    if (p->data_in != s) return;
    p->data_in = NULL;
    if (p->plan.n_stages > 1)
        plan_break(p, p->plan.stages[p->plan.n_stages - 1].node,
                   error ? error : "the last stage closed the data stream");
}

static const mesh_stream_handlers data_in_handlers = {data_in_on_frame, NULL, data_in_on_close};

/* The last stage's data stream, addressed to stage 0 of one of our plans. */
static void ring_accept(void *ctx, mesh_stream *s, const stage_hello *hello)
{
    pipelines *ps = ctx;
    for (int i = 0; i < ps->n_pipes; i++) {
        pipe *p = ps->pipes[i];
        if (strcmp(p->id, hello->model) || p->plan.version != hello->version || p->plan.n_stages < 2 ||
            memcmp(mesh_stream_peer(s), p->plan.stages[p->plan.n_stages - 1].node, MESH_ID_BYTES))
            continue;
        if (p->data_in) mesh_stream_abort(p->data_in);
        p->data_in = s;
        mesh_stream_set_handlers(s, &data_in_handlers, p);
        return;
    }
    log_warn(PIPE_LOG, "a data stream for %s v%u that is no plan of ours: refused", hello->model,
             hello->version);
    stage_host_count_bad_frame(ps->stages);
    mesh_stream_set_handlers(s, &(mesh_stream_handlers){0}, NULL);
    mesh_stream_abort(s);
}

/* ---- the loop's events ------------------------------------------------- */

/* Sends what the lanes of p queued. 1 if there was anything. */
static int pipe_flush(pipe *p)
{
    pthread_mutex_lock(&p->lock);
    pipe_out *list = p->out_head;
    p->out_head = p->out_tail = NULL;
    uint32_t epoch = p->epoch;
    p->flushing = list != NULL; /* lanes queue behind these rather than overtake them */
    pthread_mutex_unlock(&p->lock);
    if (!list) return 0;
    uint64_t frames = 0, bytes = 0;
    while (list) {
        pipe_out *o = list;
        list = o->next;
        if (o->epoch == epoch && p->data_out && mesh_stream_send(p->data_out, o->frame + o->start, o->len) == 0) {
            frames++;
            bytes += o->len;
        }
        free(o);
    }
    pthread_mutex_lock(&p->lock);
    p->sent_frames += frames;
    p->sent_bytes += bytes;
    p->flushing = 0;
    pthread_mutex_unlock(&p->lock);
    return 1;
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    pipelines *ps = arg;
    for (int i = 0; i < ps->n_pipes; i++) pipe_flush(ps->pipes[i]);
}

/* ---- the pre-wake (see the top) ---------------------------------------- */

/* Sets the timer to the earliest spin window to come, or stops it. */
static void prewake_arm(pipelines *ps)
{
    if (!ps->prewake) return;
    uint64_t at = 0;
    for (int i = 0; i < ps->n_pipes; i++) {
        const pipe *p = ps->pipes[i];
        if (p->spin_until_us && (!at || p->spin_from_us < at)) at = p->spin_from_us;
    }
    if (at) precise_timer_at(ps->prewake, at);
    else precise_timer_stop(ps->prewake);
}

/* A decode step's rows came back at `now`: the lane's next FORWARD is due
 * about `gap` later, give or take `jitter`. */
static void prewake_expect(pipe *p, uint64_t now, uint64_t gap, uint64_t jitter)
{
    if (gap < PIPE_PREWAKE_MIN_GAP_US || !p->ps->prewake) return;
    /* When the pace is too irregular for the window (a loaded machine),
     * most spins would be in vain: then only one step in PIPE_PREWAKE_PROBE
     * is pre-woken, which keeps the rate up to date. */
    if (p->prewake_rate < PIPE_PREWAKE_POOR && ++p->prewake_turn % PIPE_PREWAKE_PROBE) return;
    uint64_t early = min_u64(PIPE_PREWAKE_EARLY_US + 2 * jitter, PIPE_PREWAKE_MAX_US);
    uint64_t late = min_u64(PIPE_PREWAKE_LATE_US + 2 * jitter, PIPE_PREWAKE_MAX_US);
    uint64_t from = now + gap - min_u64(early, gap), until = now + gap + late;
    if (p->spin_until_us && p->spin_until_us > now) { /* one is pending: cover both */
        if (from < p->spin_from_us) p->spin_from_us = from;
        if (until > p->spin_until_us) p->spin_until_us = until;
    } else {
        p->spin_from_us = from;
        p->spin_until_us = until;
        p->spin_frames = p->sent_frames;
    }
    prewake_arm(p->ps);
}

/* The timer: polls the outbox of every pipe whose window has begun until
 * its FORWARD is queued (then sends it at once) or the window ends. */
static void on_prewake(void *arg)
{
    pipelines *ps = arg;
    uint64_t start = clock_us(), t = start;
    pipe *spin[PIPE_MAX];
    int n = 0;
    for (int i = 0; i < ps->n_pipes; i++) {
        pipe *p = ps->pipes[i];
        if (!p->spin_until_us) continue;
        if (p->spin_until_us <= start || !p->data_out) {
            p->spin_until_us = 0; /* over, or no ring */
        } else if (p->sent_frames != p->spin_frames) {
            p->spin_until_us = 0; /* the FORWARD went before the window began: nothing to wait for */
            p->prewake_late++;
            p->prewake_rate = p->prewake_rate * 7 / 8;
        } else if (p->spin_from_us <= start) {
            spin[n++] = p;
        }
    }
    for (int left = n; left > 0; t = clock_us()) {
        for (int i = 0; i < n; i++) {
            pipe *p = spin[i];
            if (!p) continue;
            int sent = pipe_flush(p);
            if (!sent && t < p->spin_until_us) continue;
            p->prewakes++;
            p->prewake_hits += (uint64_t)sent;
            p->prewake_rate = p->prewake_rate * 7 / 8 + (sent ? 1000 / 8 : 0);
            p->prewake_spin_us += t - start;
            p->spin_until_us = 0;
            spin[i] = NULL;
            left--;
        }
        for (int i = 0; i < 64 && left > 0; i++) cpu_relax();
    }
    prewake_arm(ps);
}

static void pipe_unload(pipelines *ps, int i);

/* Saturation, with hysteresis so that a record does not flap: a model
 * becomes saturated when, for PIPE_SATURATED_ON_MS without a break, at
 * least half its queue bound (--queue, at least 1) waits for a lane or a
 * request was refused with the queue full (429); it stops being saturated
 * only after PIPE_SATURATED_OFF_MS with no request waiting. Either change
 * is a new record. */
static void pipe_watch_queue(pipelines *ps, pipe *p, uint64_t now)
{
    uint64_t refused;
    int waiting = sched_model_waiting(ps->sched, p->id, &refused);
    int threshold = (sched_queue_max(ps->sched) + 1) / 2;
    if (threshold < 1) threshold = 1;
    int over = p->plan.state == PLAN_READY && !p->draining && (waiting >= threshold || refused > p->refused_seen);
    p->refused_seen = refused;
    if (over) {
        p->calm_since_ms = 0;
        if (!p->over_since_ms) p->over_since_ms = now;
        if (!p->saturated && now - p->over_since_ms >= PIPE_SATURATED_ON_MS) {
            p->saturated = 1;
            log_info(PIPE_LOG, "%s: saturated (%d waiting, threshold %d): a standby with room may add itself",
                     p->id, waiting, threshold);
            publish_soon(ps);
        }
        return;
    }
    p->over_since_ms = 0;
    if (waiting > 0) {
        p->calm_since_ms = 0;
        return;
    }
    if (!p->calm_since_ms) p->calm_since_ms = now;
    if (p->saturated && now - p->calm_since_ms >= PIPE_SATURATED_OFF_MS) {
        p->saturated = 0;
        log_info(PIPE_LOG, "%s: no longer saturated", p->id);
        publish_soon(ps);
    }
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    pipelines *ps = arg;
    uint64_t now = clock_ms();
    for (int i = 0; i < ps->n_pipes; i++) pipe_watch_queue(ps, ps->pipes[i], now);
    for (int i = ps->n_pipes - 1; i >= 0; i--) {
        pipe *p = ps->pipes[i];
        if (!p->draining) continue;
        if (sched_model_jobs(ps->sched, p->id) == 0) {
            pipe_unload(ps, i);
        } else if (!p->drain_aborted && now >= p->drain_deadline_ms) {
            char message[256];
            snprintf(message, sizeof message,
                     "model '%s' was unloaded from this node: the request ran past the drain deadline", p->id);
            log_warn(PIPE_LOG, "%s: drain deadline passed: ending %d request(s)", p->id,
                     sched_model_jobs(ps->sched, p->id));
            sched_abort_model(ps->sched, p->id, message);
            p->drain_aborted = 1;
        }
    }
    for (int i = 0; i < ps->n_pipes; i++) {
        pipe *p = ps->pipes[i];
        if (p->plan.state == PLAN_PLANNING && now - p->planning_since_ms >= PIPE_PLAN_RETRY_MS) {
            p->planning_since_ms = now;
            plan_start(p);
            if (p->plan.state == PLAN_PLANNING) p->planning_since_ms = now;
        }
    }
    /* Demand changes with every request: looked at every few seconds, and
     * gossiped only when the set of demanded models changed. */
    if (ps->demand && now - ps->demand_checked_ms >= PIPE_DEMAND_MS) {
        static plan_demand demand[PLAN_MAX_DEMAND];
        ps->demand_checked_ms = now;
        if (demand_digest(demand, ps->demand(ps->demand_ctx, demand, PLAN_MAX_DEMAND)) != ps->demand_hash)
            publish_soon(ps);
    }
    if (ps->publish_dirty && now - ps->last_publish_ms >= PIPE_PUBLISH_MS) publish_now(ps);
}

/* ======================================================================== */
/* life cycle                                                                */
/* ======================================================================== */

pipelines *pipelines_new(struct event_base *base, mesh *m, sched *s, stage_host *sh, weights_store *ws,
                         budget *b, const pipeline_config *cfg)
{
    pipelines *ps = calloc(1, sizeof *ps);
    if (!ps) return NULL;
    ps->base = base;
    ps->mesh = m;
    ps->sched = s;
    ps->stages = sh;
    ps->ws = ws;
    ps->budget = b;
    ps->cfg = *cfg;
    /* A knob for comparing the two ways of sending (bench/split_hop_ab.sh)
     * and for testing the pre-wake, which only the loop's sends use. */
    const char *loop_send = getenv("LLMESH_SPLIT_LOOP_SEND");
    ps->send_now = !(loop_send && !strcmp(loop_send, "1"));
    ps->wake = event_new(base, -1, 0, on_wake, ps);
    ps->timer = event_new(base, -1, EV_PERSIST, on_timer, ps);
    if (!ps->wake || !ps->timer) {
        pipelines_free(ps);
        return NULL;
    }
    /* Spinning needs a CPU that compute does not use (see the top). */
    cpu_set_t set;
    int cpus = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
    int threads = cfg->n_threads > 0 && cfg->n_threads < cpus ? cfg->n_threads : cpus;
    ps->poll_replies = cpus > 1;
    if (cpus > threads) {
        char err[128];
        ps->prewake = precise_timer_new(base, on_prewake, ps, err, sizeof err);
        if (!ps->prewake) log_warn(PIPE_LOG, "no pre-wake of the loop for split decode steps: %s", err);
    }
    struct timeval every = {0, 100 * 1000};
    event_add(ps->timer, &every);
    if (sh) stage_host_set_ring(sh, ring_accept, ps);
    return ps;
}

static void pipe_free(pipe *p)
{
    plan_teardown(p);
    while (p->out_head) {
        pipe_out *o = p->out_head;
        p->out_head = o->next;
        free(o);
    }
    for (int i = 0; p->lanes && i < p->n_lanes; i++) free(p->lanes[i].rows);
    free(p->lanes);
    free(p->sent_at_us);
    free(p->z);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->cond);
    free(p);
}

int pipelines_add_model(pipelines *ps, const char *path, char *err, size_t errlen)
{
    if (ps->n_pipes == PIPE_MAX) {
        snprintf(err, errlen, "at most %d models per node", PIPE_MAX);
        return -1;
    }
    pipe *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    pthread_mutex_init(&p->lock, NULL);
    step_histograms_reset(p);
    pthread_cond_init(&p->cond, NULL);
    p->ps = ps;
    p->prewake_rate = 1000;
    snprintf(p->path, sizeof p->path, "%s", path);
    char inner[512];
    /* Sizes for planning, from the header alone. */
    gguf_file *f = gguf_open(path, inner, sizeof inner);
    p->z = malloc(sizeof *p->z);
    if (!f || !p->z || model_sizes_read(f, p->z, inner, sizeof inner) != 0) {
        if (f) gguf_close(f);
        snprintf(err, errlen, "%s: %s", path, p->z ? inner : "out of memory");
        pipe_free(p);
        return -1;
    }
    gguf_close(f);
    if (weights_store_add_file(ps->ws, path, p->hash, inner, sizeof inner) != 0) {
        snprintf(err, errlen, "%s: %s", path, inner);
        pipe_free(p);
        return -1;
    }
    engine_load_opts o = {.n_threads = ps->cfg.n_threads, .n_ctx = ps->cfg.n_ctx,
                          .n_lanes = ps->cfg.n_lanes, .kv_type = ps->cfg.kv_type};
    engine_model *em = engine_model_load_opts(path, &o, err, errlen);
    if (!em) {
        pipe_free(p);
        return -1;
    }
    snprintf(p->id, sizeof p->id, "%s", engine_model_id(em));
    for (int i = 0; i < ps->n_pipes; i++)
        if (!strcmp(ps->pipes[i]->id, p->id)) {
            snprintf(err, errlen, "%s: a model with id '%s' is already served", path, p->id);
            engine_model_free(em);
            pipe_free(p);
            return -1;
        }
    p->n_layer = p->z->c.n_layer;
    p->n_embd = p->z->c.n_embd;
    p->n_ctx = engine_model_context_length(em);
    p->n_lanes = engine_model_lanes(em);
    p->kv_type = (model_kv_type)engine_model_kv_type(em);
    p->lanes = calloc((size_t)p->n_lanes, sizeof *p->lanes);
    p->sent_at_us = calloc((size_t)p->n_lanes, sizeof *p->sent_at_us);
    if (!p->lanes || !p->sent_at_us || sched_add_model(ps->sched, em) != 0) {
        snprintf(err, errlen, "%s: cannot start its workers", path);
        engine_model_free(em);
        pipe_free(p);
        return -1;
    }
    p->em = em; /* the scheduler owns it now */
    p->tail = (engine_tail){.ctx = p, .send = tail_send, .receive = tail_receive, .resume = tail_resume,
                            .timings = tail_timings};
    ps->pipes[ps->n_pipes++] = p;
    if (engine_chat_template_error(em)[0])
        log_warn(PIPE_LOG, "%s: chat uses the plain template: %s", p->id, engine_chat_template_error(em));
    plan_start(p);
    publish_now(ps);
    return 0;
}

/* The pipe's last step: its lanes are idle (no job of it in the scheduler),
 * so once they are joined nothing calls its tail any more and it can go. */
static void pipe_unload(pipelines *ps, int i)
{
    pipe *p = ps->pipes[i];
    char id[MESH_MAX_NAME];
    snprintf(id, sizeof id, "%s", p->id);
    if (sched_remove_model(ps->sched, id) != 0) return; /* a job came back: the timer tries again */
    pthread_mutex_lock(&p->lock);
    p->closed = 1;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    pipe_free(p); /* tears its plan down: streams closed, budget given back */
    memmove(&ps->pipes[i], &ps->pipes[i + 1], (size_t)(ps->n_pipes - i - 1) * sizeof ps->pipes[0]);
    ps->n_pipes--;
    publish_now(ps);
    log_info(PIPE_LOG, "%s: unloaded", id);
}

int pipelines_remove_model(pipelines *ps, const char *model_id, int drain_ms, char *err, size_t errlen)
{
    int i = 0;
    while (i < ps->n_pipes && strcmp(ps->pipes[i]->id, model_id)) i++;
    if (i == ps->n_pipes) {
        snprintf(err, errlen, "model '%s' is not coordinated by this node", model_id);
        return -1;
    }
    pipe *p = ps->pipes[i];
    if (!sched_find_model(ps->sched, model_id)) {
        snprintf(err, errlen, "model '%s' has no workers here", model_id);
        return -1;
    }
    if (p->draining) {
        snprintf(err, errlen, "model '%s' is being unloaded already", model_id);
        return 1;
    }
    int jobs = sched_model_jobs(ps->sched, model_id);
    if (jobs == 0) {
        pipe_unload(ps, i);
        return 0;
    }
    /* Requests in flight finish first: the model leaves the record at once
     * (routers send new requests to another host), this node refuses new
     * ones (pipelines_model_state), and the timer unloads it when the last
     * job is done, or ends the jobs left at the deadline. */
    p->draining = 1;
    p->drain_deadline_ms = clock_ms() + (uint64_t)(drain_ms > 0 ? drain_ms : 0);
    publish_now(ps);
    log_info(PIPE_LOG, "%s: draining %d request(s) before unloading (at most %.1f s)", model_id, jobs,
             drain_ms / 1000.0);
    return 2;
}

void pipelines_close(pipelines *ps)
{
    if (!ps) return;
    for (int i = 0; i < ps->n_pipes; i++) {
        pipe *p = ps->pipes[i];
        pthread_mutex_lock(&p->lock);
        p->closed = 1;
        pthread_cond_broadcast(&p->cond);
        pthread_mutex_unlock(&p->lock);
        plan_teardown(p);
    }
}

void pipelines_free(pipelines *ps)
{
    if (!ps) return;
    for (int i = 0; i < ps->n_pipes; i++) pipe_free(ps->pipes[i]);
    if (ps->wake) event_free(ps->wake);
    if (ps->timer) event_free(ps->timer);
    precise_timer_free(ps->prewake);
    free(ps);
}

/* ======================================================================== */
/* queries                                                                   */
/* ======================================================================== */

/* Calls fn for every plan in the records of peers that are alive (or, with
 * any_live, anything but dead or left), until it returns nonzero; returns
 * that value, or 0. A record whose plans do not decode is skipped. */
typedef int (*peer_plan_fn)(void *ctx, const plan *pl, const char *coordinator_hex);
static int each_peer_plan(const pipelines *ps, int any_live, peer_plan_fn fn, void *ctx)
{
    static mesh_peer peers[256];      /* loop thread only: big, not on its stack */
    static uint8_t app[MESH_MAX_APP];
    static plan plans[PLAN_MAX_PLANS];
    int n = mesh_peers(ps->mesh, peers, 256);
    for (int i = 0; i < n && i < 256; i++) {
        const char *st = peers[i].state;
        if (!peers[i].app_len || (any_live ? !strcmp(st, "dead") || !strcmp(st, "left") : !!strcmp(st, "alive")))
            continue;
        uint8_t id[MESH_ID_BYTES];
        if (identity_id_from_hex(peers[i].id, id) != 0) continue;
        int len = mesh_node_app_data(ps->mesh, id, app, sizeof app);
        char err[128];
        int np = len > 0 ? plan_decode_list(app, (size_t)len, plans, PLAN_MAX_PLANS, err, sizeof err) : 0;
        for (int j = 0; j < np; j++) {
            int rc = fn(ctx, &plans[j], peers[i].id);
            if (rc) return rc;
        }
    }
    return 0;
}

/* Where a model stands by its plan, with the reason when it is not ready. */
static int plan_model_state(const plan *pl, char *reason, size_t cap)
{
    if (pl->state == PLAN_READY) return PIPELINE_READY;
    if (pl->state == PLAN_PLANNING)
        snprintf(reason, cap, "model %s is not running: %s", pl->model, pl->reason);
    else
        snprintf(reason, cap, "model %s is loading (%d stages)", pl->model, pl->n_stages);
    return PIPELINE_NOT_READY;
}

typedef struct {
    const char *model;
    char *reason;
    size_t cap;
} state_query;

static int state_of_peer_plan(void *ctx, const plan *pl, const char *coordinator_hex)
{
    state_query *q = ctx;
    (void)coordinator_hex;
    return strcmp(pl->model, q->model) ? 0 : plan_model_state(pl, q->reason, q->cap);
}

int pipelines_coordinates(const pipelines *ps, const char *model_id)
{
    for (int i = 0; i < ps->n_pipes; i++)
        if (!strcmp(ps->pipes[i]->id, model_id)) return 1;
    return 0;
}

int pipelines_model_state(const pipelines *ps, const char *model_id, char *reason, size_t cap)
{
    reason[0] = 0;
    for (int i = 0; i < ps->n_pipes; i++) {
        if (strcmp(ps->pipes[i]->id, model_id)) continue;
        if (ps->pipes[i]->draining) {
            snprintf(reason, cap, "model '%s' is being unloaded from this node", model_id);
            return PIPELINE_NOT_READY;
        }
        return plan_model_state(&ps->pipes[i]->plan, reason, cap);
    }
    state_query q = {model_id, reason, cap};
    int rc = each_peer_plan(ps, 0, state_of_peer_plan, &q);
    return rc ? rc : PIPELINE_UNKNOWN;
}

static void status_plan(cJSON *list, const plan *pl, const char *coordinator, const pipe *own)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", pl->model);
    cJSON_AddStringToObject(o, "state", plan_state_name(pl->state));
    cJSON_AddStringToObject(o, "coordinator", coordinator);
    cJSON_AddNumberToObject(o, "version", pl->version);
    cJSON_AddNumberToObject(o, "need_bytes", (double)pl->need_bytes);
    if (pl->reason[0]) cJSON_AddStringToObject(o, "reason", pl->reason);
    cJSON *stages = cJSON_AddArrayToObject(o, "stages");
    for (int s = 0; s < pl->n_stages; s++) {
        const plan_stage *st = &pl->stages[s];
        cJSON *so = cJSON_CreateObject();
        char hex[MESH_ID_HEX];
        identity_id_hex(st->node, hex);
        cJSON_AddStringToObject(so, "node", hex);
        cJSON *layers = cJSON_AddArrayToObject(so, "layers");
        cJSON_AddItemToArray(layers, cJSON_CreateNumber(st->first));
        cJSON_AddItemToArray(layers, cJSON_CreateNumber(st->end));
        cJSON_AddStringToObject(so, "state", stage_state_name(st->state));
        cJSON_AddNumberToObject(so, "fetched_bytes", (double)st->fetched_bytes);
        cJSON_AddNumberToObject(so, "total_bytes", (double)st->total_bytes);
        if (own && pl->n_stages > 1) {
            const stage_stats *c = &own->stats[s];
            cJSON *cs = cJSON_AddObjectToObject(so, "counters");
            cJSON_AddNumberToObject(cs, "tokens", (double)c->tokens);
            cJSON_AddNumberToObject(cs, "compute_ms", c->compute_us / 1000.0);
            if (s > 0) { /* stage 0, the coordinator's layers, counts its compute only */
                cJSON_AddNumberToObject(cs, "send_ms", c->send_us / 1000.0);
                cJSON_AddNumberToObject(cs, "bytes_in", (double)c->bytes_in);
                cJSON_AddNumberToObject(cs, "bytes_out", (double)c->bytes_out);
            }
        }
        cJSON_AddItemToArray(stages, so);
    }
    if (own) {
        pipe *p = (pipe *)own;
        cJSON_AddBoolToObject(o, "draining", p->draining);
        cJSON_AddBoolToObject(o, "saturated", p->saturated);
        cJSON *c = cJSON_AddObjectToObject(o, "counters");
        pthread_mutex_lock(&p->lock);
        cJSON_AddNumberToObject(c, "frames_sent", (double)p->sent_frames);
        cJSON_AddNumberToObject(c, "frames_sent_now", (double)p->sent_now);
        cJSON_AddNumberToObject(c, "send_now_ms", p->sent_now_us / 1000.0);
        cJSON_AddNumberToObject(c, "pieces_sent", (double)p->sent_pieces);
        cJSON_AddNumberToObject(c, "steps_in_flight", (double)(p->steps_sent - p->steps_back));
        cJSON_AddNumberToObject(c, "window", (double)p->window);
        cJSON_AddNumberToObject(c, "steps_in_flight_max", (double)p->steps_max);
        cJSON_AddNumberToObject(c, "window_waits", (double)p->window_waits);
        cJSON_AddNumberToObject(c, "bytes_sent", (double)p->sent_bytes);
        cJSON_AddNumberToObject(c, "rows_received", (double)p->recv_rows);
        cJSON_AddNumberToObject(c, "round_trips", (double)p->round_trips);
        cJSON_AddNumberToObject(c, "round_trip_ms",
                                p->round_trips ? p->round_trip_us / 1000.0 / (double)p->round_trips : 0);
        cJSON_AddNumberToObject(c, "replies_early", (double)p->replies_early);
        cJSON_AddNumberToObject(c, "replies_caught", (double)p->replies_caught);
        cJSON_AddNumberToObject(c, "replies_late", (double)p->replies_late);
        pthread_mutex_unlock(&p->lock);
        cJSON_AddNumberToObject(c, "prewakes", (double)p->prewakes);
        cJSON_AddNumberToObject(c, "prewake_hits", (double)p->prewake_hits);
        cJSON_AddNumberToObject(c, "prewake_spin_ms", p->prewake_spin_us / 1000.0);
        cJSON_AddNumberToObject(c, "prewake_late", (double)p->prewake_late);
        cJSON_AddNumberToObject(c, "breaks", (double)p->breaks);
    }
    cJSON_AddItemToArray(list, o);
}

static int status_peer_plan(void *ctx, const plan *pl, const char *coordinator_hex)
{
    status_plan(ctx, pl, coordinator_hex, NULL);
    return 0;
}

void pipelines_step_histograms(const pipelines *ps, pipelines_histograms_fn fn, void *ctx)
{
    for (int i = 0; ps && i < ps->n_pipes; i++) {
        const pipe *p = ps->pipes[i];
        if (p->plan.n_stages < 2 || p->plan.state != PLAN_READY) continue;
        char nodes[PLAN_MAX_STAGES][MESH_ID_HEX];
        for (int s = 0; s < p->plan.n_stages; s++) identity_id_hex(p->plan.stages[s].node, nodes[s]);
        fn(ctx, p->id, p->plan.n_stages, (const char(*)[MESH_ID_HEX])nodes, p->step_compute, &p->step_hop);
    }
}

void pipelines_status(const pipelines *ps, cJSON *root)
{
    cJSON *list = cJSON_AddArrayToObject(root, "plans");
    const char *self = mesh_node_id_hex(ps->mesh);
    for (int i = 0; i < ps->n_pipes; i++) status_plan(list, &ps->pipes[i]->plan, self, ps->pipes[i]);
    each_peer_plan(ps, 1, status_peer_plan, list);
}
