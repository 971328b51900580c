/* stage.c: see stage.h.
 *
 * Life of a stage (a `stage_run`), all on the loop thread except compute:
 *   ASSIGN -> reserve memory -> weights: local file, or fetch (STATUS
 *   fetching, with progress) -> load the part (gguf + model_load_part, one
 *   KV state per lane) -> STATUS ready -> START -> data flows -> the control
 *   stream closes -> worker joined, everything freed, memory released.
 *
 * Hand-off between the loop and a stage's worker: the loop copies each
 * FORWARD/FAIL frame into a job on the stage's queue (its own lock and
 * condition); the worker computes and puts the frame to send into the host's
 * outbox (the host's lock), then wakes the loop with one event. A decode
 * step (a FORWARD of a few positions) that finds the worker idle skips all
 * that and runs on the loop thread (in_on_frame says why). Outbox
 * entries name their stage by id, not pointer: a stage may be freed while
 * its last frames wait, and those are then dropped.
 *
 * A FORWARD's position decides what the stage's cache keeps: positions from
 * `pos` on are forgotten first (stage 0 reuses a cached prefix, or replays
 * from 0), and a position beyond what the cache holds is an error the stage
 * reports forward as FAIL, so stage 0 replays the lane. */
#include "serve/stage.h"

#include <cjson/cJSON.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "engine/gguf.h"
#include "engine/kernels.h"
#include "engine/model.h"
#include "lib/clock.h"
#include "lib/log.h"
#include "lib/threadpool.h"
#include "mesh/identity.h"
#include "models/weights_store.h"
#include "serve/plan.h"

#define STAGE_LOG "stage"
#define STAGE_STATUS_EVERY_MS 250  /* fetch progress to the coordinator at most this often */
#define STAGE_STATS_EVERY_MS 1000
#define STAGE_INLINE_POSITIONS 4   /* FORWARDs this short run on the loop thread (see in_on_frame) */
#define STAGE_INLINE_GAP_US 1000   /* ... unless the last one ended less than this ago */

typedef struct stage_job {
    struct stage_job *next;
    uint64_t arrived_us;          /* when the loop took it off the stream */
    size_t len;
    uint8_t frame[];              /* a FORWARD or FAIL frame as received */
} stage_job;

typedef struct stage_out {
    struct stage_out *next;
    uint64_t run_id;
    size_t len;
    uint8_t frame[];              /* a frame to send on the run's data stream */
} stage_out;

typedef struct stage_run {
    stage_host *h;
    uint64_t id;
    stage_assign a;
    uint8_t coordinator[MESH_ID_BYTES];
    char coordinator_hex[MESH_ID_HEX];
    mesh_stream *control;
    mesh_stream *out;             /* to the next stage (or the coordinator) */
    uint8_t state;                /* stage_state */
    uint64_t reserved;            /* bytes reserved in the budget */
    weights_fetch *fetch;
    uint64_t fetched, total;
    uint64_t last_status_ms, last_stats_ms;
    gguf_file *file;
    model *model;
    model_state **states;         /* (n_lanes) */
    threadpool *pool;
    float *x;                     /* (STAGE_MAX_TOKENS, n_embd) the worker's hidden states */
    model_batch *batch;           /* the forward pass's scratch (one FORWARD at a time) */
    /* The worker and its queue. */
    pthread_t thread;
    int thread_started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    stage_job *head, *tail;
    int busy;                     /* a FORWARD is being computed (worker or loop) */
    uint64_t inline_end_us;       /* loop thread: when the last decode step run inline ended */
    int stop;
    stage_stats stats;            /* under lock */
    uint64_t pieces;              /* under lock: lanes' pieces in the FORWARDs computed */
    uint64_t frames_inline;       /* under lock: FORWARDs computed on the loop thread (in_on_frame) */
    stage_stats stats_sent;       /* loop thread */
    struct stage_run *next;
} stage_run;

struct stage_host {
    struct event_base *base;
    mesh *mesh;
    weights_store *ws;
    budget *budget;
    int n_threads;
    uint64_t next_id;
    stage_run *runs;
    stage_ring_fn ring;
    void *ring_ctx;
    uint64_t bad_frames;
    unsigned debug_delay_us;      /* LLMESH_DEBUG_STAGE_DELAY_MS: a slow stage, for tests */
    struct event *wake;
    struct event *timer;
    pthread_mutex_t lock;         /* the outbox */
    stage_out *out_head, *out_tail;
};

static stage_run *run_find(stage_host *h, uint64_t id)
{
    for (stage_run *r = h->runs; r; r = r->next)
        if (r->id == id) return r;
    return NULL;
}

/* ======================================================================== */
/* the worker thread                                                         */
/* ======================================================================== */

static void outbox_put(stage_run *r, const uint8_t *head, size_t head_len, const void *data,
                       size_t data_len)
{
    stage_out *o = malloc(sizeof *o + head_len + data_len);
    if (!o) return; /* the lane stalls; stage 0 times the request out */
    o->next = NULL;
    o->run_id = r->id;
    o->len = head_len + data_len;
    memcpy(o->frame, head, head_len);
    if (data_len) memcpy(o->frame + head_len, data, data_len);
    stage_host *h = r->h;
    pthread_mutex_lock(&h->lock);
    if (h->out_tail) h->out_tail->next = o;
    else h->out_head = o;
    h->out_tail = o;
    pthread_mutex_unlock(&h->lock);
    event_active(h->wake, EV_READ, 0);
}

static void worker_fail(stage_run *r, uint16_t lane, const char *why)
{
    uint8_t frame[STAGE_CONTROL_MAX_FRAME];
    int n = stage_encode_message(STAGE_FAIL, lane, why, frame, sizeof frame);
    if (n > 0) outbox_put(r, frame, (size_t)n, NULL, 0);
}

/* Puts a FORWARD or OUTPUT of the pieces h over the rows x (F32) in the
 * outbox, converted to the assigned dtype. */
static void put_states(stage_run *r, uint8_t kind, stage_states *h, const float *x)
{
    const stage_assign *a = &r->a;
    uint8_t head[STAGE_STATES_HEADER_MAX];
    h->dtype = a->dtype;
    int head_len = stage_encode_states_header(kind, h, head, sizeof head);
    size_t values = (size_t)h->n_rows * a->n_embd;
    if (a->dtype == STAGE_DTYPE_F32) {
        outbox_put(r, head, (size_t)head_len, x, values * sizeof(float));
        return;
    }
    uint8_t *half = malloc(values * 2);
    if (!half) {
        for (int i = 0; i < h->n_pieces; i++) worker_fail(r, h->pieces[i].lane, "out of memory");
        return;
    }
    for (size_t i = 0; i < values; i++) {
        uint16_t v = kernel_fp32_to_fp16(x[i]);
        half[2 * i] = (uint8_t)v;
        half[2 * i + 1] = (uint8_t)(v >> 8);
    }
    outbox_put(r, head, (size_t)head_len, half, values * 2);
    free(half);
}

/* One FORWARD (a step of several lanes): each lane's cache is cut back to
 * its piece's position, the layers run once over every piece, and the result
 * goes on: a FORWARD of the same pieces, or from the last stage an OUTPUT of
 * the rows asked for (one per FORWARD, empty when none asked). A lane that
 * cannot be computed (a position past its cache) is answered with FAIL and
 * left out; the others go on. */
static void worker_forward(stage_run *r, const stage_states *f, uint64_t arrived_us)
{
    const stage_assign *a = &r->a;
    size_t width = a->n_embd, value = stage_dtype_size(f->dtype);
    stage_states h = {0};
    model_state *states[STAGE_MAX_PIECES];
    int counts[STAGE_MAX_PIECES];
    char err[256];
    const uint8_t *in = f->data;
    float *x = r->x;
    for (int i = 0; i < f->n_pieces; in += (size_t)f->pieces[i].n * width * value, i++) {
        const stage_piece *q = &f->pieces[i];
        model_state *s = r->states[q->lane];
        if ((int)q->pos > model_state_n_past(s)) {
            snprintf(err, sizeof err, "stage %u: lane %u position %u, but %d cached", a->stage, q->lane,
                     q->pos, model_state_n_past(s));
            worker_fail(r, q->lane, err);
            continue;
        }
        model_state_truncate(s, (int)q->pos);
        size_t nv = (size_t)q->n * width;
        if (f->dtype == STAGE_DTYPE_F32) {
            memcpy(x, in, nv * sizeof(float));
        } else {
            for (size_t v = 0; v < nv; v++) x[v] = kernel_fp16_to_fp32((uint16_t)(in[2 * v] | in[2 * v + 1] << 8));
        }
        x += nv;
        states[h.n_pieces] = s;
        counts[h.n_pieces] = q->n;
        h.pieces[h.n_pieces++] = *q;
        h.n_rows += q->n;
    }
    /* Even with no piece left (all failed), the frame goes on, empty: stage
     * 0 counts its steps in flight by the OUTPUTs that come back. */
    uint64_t t0 = clock_us();
    if (h.n_pieces > 0 && model_forward_layers_batch(r->model, r->batch, r->pool, a->first, a->end, states,
                                                     counts, h.n_pieces, r->x, err, sizeof err) != 0) {
        for (int i = 0; i < h.n_pieces; i++) worker_fail(r, h.pieces[i].lane, err);
        h.n_pieces = 0;
        h.n_rows = 0;
    }
    uint64_t t1 = clock_us();
    /* Our time on this frame joins the trail (stage 0 gets it with the OUTPUT). */
    h.n_trail = f->n_trail;
    memcpy(h.trail, f->trail, sizeof h.trail[0] * f->n_trail);
    h.trail[h.n_trail++] = (stage_time){.compute_us = (uint32_t)(t1 - t0 > UINT32_MAX ? UINT32_MAX : t1 - t0),
                                        .wait_us = (uint32_t)(t0 - arrived_us > UINT32_MAX ? UINT32_MAX
                                                                                           : t0 - arrived_us)};
    int last = a->stage == a->n_stages - 1;
    size_t bytes_out = 0;
    if (!last) {
        put_states(r, STAGE_FORWARD, &h, r->x);
        bytes_out = (size_t)h.n_rows * width * stage_dtype_size(a->dtype);
    } else {
        /* Gather the rows asked for at the front of x (a row only ever moves
         * down), one OUTPUT piece per lane that asked. */
        stage_states o = {.n_trail = h.n_trail};
        memcpy(o.trail, h.trail, sizeof o.trail[0] * h.n_trail);
        const float *row = r->x;
        for (int i = 0; i < h.n_pieces; row += (size_t)h.pieces[i].n * width, i++) {
            const stage_piece *q = &h.pieces[i];
            if (q->rows == 0) continue; /* ENGINE_ROWS_NONE: stage 0 wants nothing back */
            int n_rows = q->rows == 1 ? 1 : q->n; /* ENGINE_ROWS_LAST: the last row */
            memmove(r->x + (size_t)o.n_rows * width, row + (size_t)(q->n - n_rows) * width,
                    sizeof(float) * (size_t)n_rows * width);
            o.pieces[o.n_pieces++] = (stage_piece){.lane = q->lane, .pos = q->pos + (uint32_t)(q->n - n_rows),
                                                   .n = (uint16_t)n_rows};
            o.n_rows += (uint32_t)n_rows;
        }
        put_states(r, STAGE_OUTPUT, &o, r->x); /* empty when no piece asked: the step's acknowledgement */
        bytes_out = (size_t)o.n_rows * width * stage_dtype_size(a->dtype);
    }
    pthread_mutex_lock(&r->lock);
    r->stats.frames++;
    r->pieces += h.n_pieces;
    r->stats.tokens += h.n_rows;
    r->stats.compute_us += t1 - t0;
    r->stats.send_us += clock_us() - t1;
    r->stats.bytes_in += f->data_len;
    r->stats.bytes_out += bytes_out;
    pthread_mutex_unlock(&r->lock);
}

static void *worker_main(void *arg)
{
    stage_run *r = arg;
    for (;;) {
        pthread_mutex_lock(&r->lock);
        while (!r->head && !r->stop) pthread_cond_wait(&r->cond, &r->lock);
        if (r->stop) {
            pthread_mutex_unlock(&r->lock);
            break;
        }
        stage_job *j = r->head;
        r->head = j->next;
        if (!r->head) r->tail = NULL;
        r->busy = 1;
        pthread_mutex_unlock(&r->lock);
        if (j->frame[0] == STAGE_FAIL) {
            outbox_put(r, j->frame, j->len, NULL, 0); /* pass it on towards stage 0 */
        } else {
            stage_states f;
            char err[256];
            if (r->h->debug_delay_us) usleep(r->h->debug_delay_us);
            /* Checked by the loop before queueing; decoding again only finds the data. */
            if (stage_decode_states(j->frame, j->len, r->a.n_embd, &f, err, sizeof err) == 0)
                worker_forward(r, &f, j->arrived_us);
        }
        free(j);
        pthread_mutex_lock(&r->lock);
        r->busy = 0;
        pthread_mutex_unlock(&r->lock);
    }
    return NULL;
}

/* ======================================================================== */
/* the loop side of a stage                                                  */
/* ======================================================================== */

static void control_send(stage_run *r, const uint8_t *frame, int n)
{
    if (r->control && n > 0) mesh_stream_send(r->control, frame, (size_t)n);
}

static void send_status(stage_run *r)
{
    stage_status st = {r->state, r->fetched, r->total, r->reserved};
    if (st.fetched_bytes > st.total_bytes) st.fetched_bytes = st.total_bytes;
    uint8_t frame[64];
    control_send(r, frame, stage_encode_status(&st, frame, sizeof frame));
    r->last_status_ms = clock_us() / 1000;
}

/* The stage cannot go on: say why, and close our side. The coordinator
 * closes the stream in turn, which frees the run (control_on_close). */
static void refuse_code(stage_run *r, uint16_t code, const char *why)
{
    log_warn(STAGE_LOG, "%s layers [%u, %u) for %.16s: %s", r->a.model, r->a.first, r->a.end,
             r->coordinator_hex, why);
    uint8_t frame[STAGE_CONTROL_MAX_FRAME];
    control_send(r, frame, stage_encode_message(STAGE_REFUSE, code, why, frame, sizeof frame));
    if (r->control) mesh_stream_finish(r->control);
}

static void refuse(stage_run *r, const char *why) { refuse_code(r, STAGE_REFUSE_SELF, why); }

static void run_free(stage_run *r)
{
    stage_host *h = r->h;
    for (stage_run **p = &h->runs; *p; p = &(*p)->next)
        if (*p == r) {
            *p = r->next;
            break;
        }
    if (r->thread_started) {
        pthread_mutex_lock(&r->lock);
        r->stop = 1;
        pthread_cond_signal(&r->cond);
        pthread_mutex_unlock(&r->lock);
        pthread_join(r->thread, NULL);
    }
    while (r->head) {
        stage_job *j = r->head;
        r->head = j->next;
        free(j);
    }
    if (r->fetch) weights_fetch_cancel(r->fetch);
    if (r->out) mesh_stream_abort(r->out);
    if (r->control) mesh_stream_abort(r->control);
    for (int i = 0; r->states && i < r->a.n_lanes; i++) model_state_free(r->states[i]);
    free(r->states);
    threadpool_free(r->pool);
    model_free(r->model);
    if (r->file) gguf_close(r->file);
    free(r->x);
    model_batch_free(r->batch);
    if (r->reserved) budget_release(h->budget, r->reserved);
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->cond);
    log_info(STAGE_LOG, "%s layers [%u, %u) for %.16s: stopped", r->a.model, r->a.first, r->a.end,
             r->coordinator_hex);
    free(r);
}

/* Loads the part from a GGUF holding (at least) its tensors. */
static int run_load(stage_run *r, const char *path)
{
    char err[512];
    const stage_assign *a = &r->a;
    r->state = STAGE_LOADING;
    send_status(r);
    model_part part = {a->first, a->end, 0};
    if (!(r->file = gguf_open(path, err, sizeof err))) goto fail;
    if (!(r->model = model_load_part(r->file, &part, err, sizeof err))) goto fail;
    const model_config *c = model_get_config(r->model);
    if ((uint32_t)c->n_embd != a->n_embd || c->n_layer != a->n_layer) {
        snprintf(err, sizeof err, "the weights have width %d and %d layers, the plan %u and %u",
                 c->n_embd, c->n_layer, a->n_embd, a->n_layer);
        goto fail;
    }
    /* The coordinator's figure is its estimate; ours, from the weights now
     * here, is what counts: a coordinator cannot make this node take more
     * than its budget by understating the need. */
    model_sizes *z = malloc(sizeof *z);
    if (!z || model_sizes_read(r->file, z, err, sizeof err) != 0) {
        if (!z) snprintf(err, sizeof err, "out of memory");
        free(z);
        goto fail;
    }
    uint64_t own = model_part_need(z, &part, (int)a->n_ctx, (model_kv_type)a->kv_type, a->n_lanes,
                                   r->h->n_threads > 0 ? r->h->n_threads : 1);
    free(z);
    if (own > r->reserved) {
        if (budget_reserve(r->h->budget, own - r->reserved) != 0) {
            snprintf(err, sizeof err, "not enough memory here: the stage needs %.1f MiB (%.1f MiB "
                     "declared), %.1f MiB free", own / 1048576.0, r->reserved / 1048576.0,
                     budget_free(r->h->budget) / 1048576.0);
            goto fail;
        }
        r->reserved = own;
    }
    if (!(r->states = calloc(a->n_lanes, sizeof *r->states))) goto oom;
    for (int i = 0; i < a->n_lanes; i++)
        if (!(r->states[i] = model_state_new(r->model, (int)a->n_ctx, (model_kv_type)a->kv_type, err, sizeof err))) goto fail;
    if (!(r->pool = threadpool_create(r->h->n_threads, err, sizeof err))) goto fail;
    if (!(r->x = malloc(sizeof(float) * STAGE_MAX_TOKENS * a->n_embd))) goto oom;
    if (!(r->batch = model_batch_new(r->model, err, sizeof err))) goto fail;
    if (pthread_create(&r->thread, NULL, worker_main, r) != 0) {
        snprintf(err, sizeof err, "cannot start a worker thread");
        goto fail;
    }
    r->thread_started = 1;
    r->state = STAGE_READY;
    send_status(r);
    log_info(STAGE_LOG, "%s layers [%u, %u) for %.16s: ready (%s)", a->model, a->first, a->end,
             r->coordinator_hex, path);
    return 0;
oom:
    snprintf(err, sizeof err, "out of memory");
fail:
    refuse(r, err);
    return -1;
}

static void fetch_on_progress(void *user, uint64_t done, uint64_t total)
{
    stage_run *r = user;
    r->fetched = done;
    r->total = total;
    if (clock_us() / 1000 - r->last_status_ms >= STAGE_STATUS_EVERY_MS) send_status(r);
}

static void fetch_on_done(void *user, const char *path, const char *error)
{
    stage_run *r = user;
    r->fetch = NULL;
    if (error) {
        char why[300];
        snprintf(why, sizeof why, "fetching weights: %s", error);
        refuse(r, why);
        return;
    }
    r->fetched = r->total;
    run_load(r, path);
}

static void start_weights(stage_run *r)
{
    const stage_assign *a = &r->a;
    const char *local = weights_store_find(r->h->ws, a->model_hash);
    if (local) {
        run_load(r, local);
        return;
    }
    char err[256];
    weights_fetch_callbacks cb = {fetch_on_progress, fetch_on_done};
    r->state = STAGE_FETCHING;
    send_status(r);
    log_info(STAGE_LOG, "%s layers [%u, %u): fetching the weights from a node that holds them (%.16s last)",
             a->model, a->first, a->end, r->coordinator_hex);
    r->fetch = weights_fetch_start(r->h->ws, a->model_hash, r->coordinator, a->first, a->end, 0, &cb, r,
                                   err, sizeof err);
    if (!r->fetch) refuse(r, err);
}

static void data_open(stage_run *r);

static void control_on_frame(void *user, mesh_stream *s, const uint8_t *p, size_t len)
{
    stage_run *r = user;
    char err[256];
    if (len == 0) goto bad;
    if (p[0] == STAGE_START) {
        if (len != 1 || r->state != STAGE_READY) goto bad;
        data_open(r);
        return;
    }
    if (p[0] == STAGE_ASSIGN && !r->a.n_layer) {
        if (stage_decode_assign(p, len, &r->a, err, sizeof err) != 0) {
            log_warn(STAGE_LOG, "from %.16s: %s", r->coordinator_hex, err);
            goto bad;
        }
        log_info(STAGE_LOG, "%.16s assigns %s layers [%u, %u) of %u (stage %u of %u)", r->coordinator_hex,
                 r->a.model, r->a.first, r->a.end, r->a.n_layer, r->a.stage, r->a.n_stages);
        if (budget_reserve(r->h->budget, r->a.need_bytes) != 0) {
            snprintf(err, sizeof err, "not enough memory here: the stage needs %.1f MiB, %.1f MiB free",
                     r->a.need_bytes / 1048576.0, budget_free(r->h->budget) / 1048576.0);
            refuse(r, err);
            return;
        }
        r->reserved = r->a.need_bytes;
        start_weights(r);
        return;
    }
bad:
    r->h->bad_frames++;
    log_warn(STAGE_LOG, "unexpected control frame (kind 0x%02x, %zu bytes) from %.16s: closing",
             len ? p[0] : 0, len, r->coordinator_hex);
    r->control = NULL;
    mesh_stream_abort(s);
    run_free(r);
}

static void control_on_fin(void *user, mesh_stream *s)
{
    stage_run *r = user;
    mesh_stream_finish(s);
    (void)r;
}

static void control_on_close(void *user, mesh_stream *s, const char *error)
{
    stage_run *r = user;
    r->control = NULL; /* freed by the mesh after this returns */
    if (error) log_info(STAGE_LOG, "%s: coordinator %.16s gone: %s", r->a.model, r->coordinator_hex, error);
    run_free(r);
}

static const mesh_stream_handlers control_handlers = {control_on_frame, control_on_fin, control_on_close};

static void control_accept(void *ctx, mesh_stream *s)
{
    stage_host *h = ctx;
    stage_run *r = calloc(1, sizeof *r);
    if (!r) {
        mesh_stream_abort(s);
        return;
    }
    r->h = h;
    r->id = ++h->next_id;
    r->control = s;
    memcpy(r->coordinator, mesh_stream_peer(s), MESH_ID_BYTES);
    identity_id_hex(r->coordinator, r->coordinator_hex);
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    r->next = h->runs;
    h->runs = r;
    mesh_stream_set_handlers(s, &control_handlers, r);
}

/* ---- data streams ------------------------------------------------------ */

static void out_on_frame(void *user, mesh_stream *s, const uint8_t *p, size_t len)
{
    stage_run *r = user;
    r->h->bad_frames++; /* nothing comes back on an outgoing data stream */
    r->out = NULL;
    mesh_stream_abort(s);
}

static void out_on_close(void *user, mesh_stream *s, const char *error)
{
    stage_run *r = user;
    r->out = NULL;
    /* Without its output path the stage is useless: let the coordinator replan. */
    refuse_code(r, STAGE_REFUSE_NEXT, error ? error : "the next stage closed the data stream");
}

static const mesh_stream_handlers out_handlers = {out_on_frame, NULL, out_on_close};

static void data_open(stage_run *r)
{
    if (r->out) return;
    char err[256];
    r->out = mesh_stream_open(r->h->mesh, r->a.next, STAGE_STREAM_DATA, &out_handlers, r, err, sizeof err);
    if (!r->out) {
        char why[300];
        snprintf(why, sizeof why, "cannot reach the next stage: %s", err);
        refuse_code(r, STAGE_REFUSE_NEXT, why);
        return;
    }
    stage_hello hello;
    memset(&hello, 0, sizeof hello);
    memcpy(hello.coordinator, r->coordinator, MESH_ID_BYTES);
    snprintf(hello.model, sizeof hello.model, "%s", r->a.model);
    hello.version = r->a.version;
    hello.stage = r->a.stage == r->a.n_stages - 1 ? 0 : (uint8_t)(r->a.stage + 1);
    uint8_t frame[256];
    int n = stage_encode_hello(&hello, frame, sizeof frame);
    if (n > 0) mesh_stream_send(r->out, frame, (size_t)n);
}

/* An accepted data stream: the host before HELLO, then the run by id. */
typedef struct {
    stage_host *h;
    uint64_t run_id;
} data_in;

static void in_drop(data_in *in, mesh_stream *s)
{
    in->h->bad_frames++;
    mesh_stream_set_handlers(s, &(mesh_stream_handlers){0}, NULL);
    mesh_stream_abort(s);
    free(in);
}

static void host_on_wake(evutil_socket_t fd, short what, void *arg);

static void in_on_frame(void *user, mesh_stream *s, const uint8_t *p, size_t len)
{
    data_in *in = user;
    stage_host *h = in->h;
    char err[256];
    if (!in->run_id) {
        stage_hello hello;
        if (stage_decode_hello(p, len, &hello, err, sizeof err) != 0) {
            log_warn(STAGE_LOG, "data stream from %.16s...: %s", "peer", err);
            in_drop(in, s);
            return;
        }
        if (hello.stage == 0) {
            if (memcmp(hello.coordinator, mesh_node_id(h->mesh), MESH_ID_BYTES) != 0 || !h->ring) {
                in_drop(in, s);
                return;
            }
            free(in);
            h->ring(h->ring_ctx, s, &hello); /* the pipeline takes the stream over */
            return;
        }
        for (stage_run *r = h->runs; r; r = r->next)
            if (!memcmp(r->coordinator, hello.coordinator, MESH_ID_BYTES) && r->a.version == hello.version &&
                r->a.stage == hello.stage && !strcmp(r->a.model, hello.model))
                in->run_id = r->id;
        if (!in->run_id) {
            log_warn(STAGE_LOG, "data stream for a stage not held here (%s, stage %u): refused",
                     hello.model, hello.stage);
            in_drop(in, s);
        }
        return;
    }
    stage_run *r = run_find(h, in->run_id);
    if (!r) { /* the stage ended: the stream is stale */
        mesh_stream_set_handlers(s, &(mesh_stream_handlers){0}, NULL);
        mesh_stream_abort(s);
        free(in);
        return;
    }
    stage_states f = {0};
    if (len > 0 && p[0] == STAGE_FAIL) {
        uint16_t lane;
        char msg[STAGE_MAX_MESSAGE + 1];
        if (stage_decode_message(p, len, &lane, msg, sizeof msg, err, sizeof err) != 0) goto bad;
        if (lane >= r->a.n_lanes) {
            snprintf(err, sizeof err, "FAIL for lane %u of %u", lane, r->a.n_lanes);
            goto bad;
        }
    } else {
        if (stage_decode_states(p, len, r->a.n_embd, &f, err, sizeof err) != 0 || p[0] != STAGE_FORWARD)
            goto bad;
        if (f.dtype != r->a.dtype || r->state != STAGE_READY || f.n_trail + 1 != r->a.stage) {
            snprintf(err, sizeof err, "FORWARD of dtype %u (assigned %u), with the times of %u stages (we are "
                     "stage %u), or stage not ready", f.dtype, r->a.dtype, f.n_trail, r->a.stage);
            goto bad;
        }
        for (int i = 0; i < f.n_pieces; i++) {
            const stage_piece *q = &f.pieces[i];
            /* In 64 bits: pos near 2^32 must not wrap into the context. */
            if (q->lane >= r->a.n_lanes || (uint64_t)q->pos + q->n > r->a.n_ctx) {
                snprintf(err, sizeof err, "FORWARD lane %u positions %u+%u (lanes %u, context %u)", q->lane,
                         q->pos, q->n, r->a.n_lanes, r->a.n_ctx);
                goto bad;
            }
        }
    }
    /* A FORWARD of a few positions (a decode step) runs here, on the loop
     * thread, when the worker has nothing to do: handing it over would cost
     * two thread wake-ups on every hop of every token (the worker's, then
     * the loop's to send the result), measured at ~70 us each on the
     * development VM, and the loop would wait for the result anyway. Longer
     * FORWARDs (prompt chunks, up to seconds) go to the worker, so the loop
     * never stops for long; the worker being idle with an empty queue keeps
     * the lane's order and leaves the hidden-state buffer and the thread
     * pool to one thread at a time. Steps arriving back to back (several
     * lanes at once) would keep the loop computing without a break, so one
     * that comes within STAGE_INLINE_GAP_US of the last goes to the worker,
     * and the next ones queue behind it while it works. */
    uint64_t now = clock_us();
    pthread_mutex_lock(&r->lock);
    int inline_ok = f.n_rows > 0 && f.n_rows <= STAGE_INLINE_POSITIONS && !r->head && !r->busy && !h->debug_delay_us &&
                    now - r->inline_end_us > STAGE_INLINE_GAP_US;
    if (inline_ok) r->busy = 1;
    pthread_mutex_unlock(&r->lock);
    if (inline_ok) {
        worker_forward(r, &f, now);
        pthread_mutex_lock(&r->lock);
        r->busy = 0;
        r->frames_inline++;
        pthread_mutex_unlock(&r->lock);
        r->inline_end_us = clock_us();
        host_on_wake(-1, 0, h); /* send it now, not on the next loop turn */
        return;
    }
    stage_job *j = malloc(sizeof *j + len);
    if (!j) return;
    j->next = NULL;
    j->arrived_us = now;
    j->len = len;
    memcpy(j->frame, p, len);
    pthread_mutex_lock(&r->lock);
    if (r->tail) r->tail->next = j;
    else r->head = j;
    r->tail = j;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
    return;
bad:
    log_warn(STAGE_LOG, "%s stage %u: bad data frame: %s", r->a.model, r->a.stage, err);
    in_drop(in, s);
}

/* The sender is done with the stream; nothing goes back on it, so it
 * closes (and in_on_close frees its state) rather than lingering until the
 * connection ends. */
static void in_on_fin(void *user, mesh_stream *s)
{
    mesh_stream_finish(s);
}

static void in_on_close(void *user, mesh_stream *s, const char *error)
{
    free(user);
}

static const mesh_stream_handlers in_handlers = {in_on_frame, in_on_fin, in_on_close};

static void data_accept(void *ctx, mesh_stream *s)
{
    stage_host *h = ctx;
    data_in *in = calloc(1, sizeof *in);
    if (!in) {
        mesh_stream_abort(s);
        return;
    }
    in->h = h;
    mesh_stream_set_handlers(s, &in_handlers, in);
}

/* ---- outbox and timers ---------------------------------------------------- */

static void host_on_wake(evutil_socket_t fd, short what, void *arg)
{
    stage_host *h = arg;
    pthread_mutex_lock(&h->lock);
    stage_out *list = h->out_head;
    h->out_head = h->out_tail = NULL;
    pthread_mutex_unlock(&h->lock);
    while (list) {
        stage_out *o = list;
        list = o->next;
        stage_run *r = run_find(h, o->run_id);
        if (r && !r->out) data_open(r);  /* a FORWARD that overtook START */
        if (r && r->out) mesh_stream_send(r->out, o->frame, o->len);
        free(o);
    }
}

static void host_on_timer(evutil_socket_t fd, short what, void *arg)
{
    stage_host *h = arg;
    for (stage_run *r = h->runs; r; r = r->next) {
        if (r->state != STAGE_READY) continue;
        pthread_mutex_lock(&r->lock);
        stage_stats st = r->stats;
        pthread_mutex_unlock(&r->lock);
        if (!memcmp(&st, &r->stats_sent, sizeof st)) continue;
        uint8_t frame[64];
        control_send(r, frame, stage_encode_stats(&st, frame, sizeof frame));
        r->stats_sent = st;
    }
}

stage_host *stage_host_new(struct event_base *base, mesh *m, weights_store *ws, budget *b, int n_threads)
{
    stage_host *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    h->base = base;
    h->mesh = m;
    h->ws = ws;
    h->budget = b;
    h->n_threads = n_threads;
    /* A testing knob, not a feature: every FORWARD waits this long on the
     * worker (none runs inline), so that tests see back-pressure. */
    const char *delay = getenv("LLMESH_DEBUG_STAGE_DELAY_MS");
    if (delay) h->debug_delay_us = (unsigned)atoi(delay) * 1000u;
    pthread_mutex_init(&h->lock, NULL);
    h->wake = event_new(base, -1, 0, host_on_wake, h);
    h->timer = event_new(base, -1, EV_PERSIST, host_on_timer, h);
    if (!h->wake || !h->timer) {
        stage_host_free(h);
        return NULL;
    }
    struct timeval every = {STAGE_STATS_EVERY_MS / 1000, (STAGE_STATS_EVERY_MS % 1000) * 1000};
    event_add(h->timer, &every);
    mesh_register_stream_type(m, STAGE_STREAM_CONTROL, control_accept, h);
    mesh_set_frame_bound(m, STAGE_STREAM_CONTROL, STAGE_CONTROL_MAX_FRAME);
    mesh_register_stream_type(m, STAGE_STREAM_DATA, data_accept, h);
    return h;
}

void stage_host_free(stage_host *h)
{
    if (!h) return;
    while (h->runs) run_free(h->runs);
    while (h->out_head) {
        stage_out *o = h->out_head;
        h->out_head = o->next;
        free(o);
    }
    if (h->wake) event_free(h->wake);
    if (h->timer) event_free(h->timer);
    pthread_mutex_destroy(&h->lock);
    free(h);
}

void stage_host_set_ring(stage_host *h, stage_ring_fn fn, void *ctx)
{
    h->ring = fn;
    h->ring_ctx = ctx;
}

uint64_t stage_host_bad_frames(const stage_host *h) { return h->bad_frames; }
void stage_host_count_bad_frame(stage_host *h) { h->bad_frames++; }

void stage_host_status(const stage_host *h, cJSON *array)
{
    for (const stage_run *r = h->runs; r; r = r->next) {
        if (!r->a.n_layer) continue;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "model", r->a.model);
        cJSON_AddStringToObject(o, "coordinator", r->coordinator_hex);
        cJSON *layers = cJSON_AddArrayToObject(o, "layers");
        cJSON_AddItemToArray(layers, cJSON_CreateNumber(r->a.first));
        cJSON_AddItemToArray(layers, cJSON_CreateNumber(r->a.end));
        cJSON_AddNumberToObject(o, "stage", r->a.stage);
        cJSON_AddStringToObject(o, "state", stage_state_name(r->state));
        cJSON_AddNumberToObject(o, "fetched_bytes", (double)r->fetched);
        cJSON_AddNumberToObject(o, "total_bytes", (double)r->total);
        cJSON_AddNumberToObject(o, "memory_bytes", (double)r->reserved);
        stage_stats st;
        pthread_mutex_lock((pthread_mutex_t *)&r->lock);
        st = r->stats;
        uint64_t pieces = r->pieces, frames_inline = r->frames_inline;
        pthread_mutex_unlock((pthread_mutex_t *)&r->lock);
        cJSON_AddNumberToObject(o, "frames", (double)st.frames);
        cJSON_AddNumberToObject(o, "frames_inline", (double)frames_inline);
        cJSON_AddNumberToObject(o, "pieces", (double)pieces);
        cJSON_AddNumberToObject(o, "tokens", (double)st.tokens);
        cJSON_AddNumberToObject(o, "compute_ms", st.compute_us / 1000.0);
        cJSON_AddNumberToObject(o, "send_ms", st.send_us / 1000.0);
        cJSON_AddNumberToObject(o, "bytes_in", (double)st.bytes_in);
        cJSON_AddNumberToObject(o, "bytes_out", (double)st.bytes_out);
        cJSON_AddItemToArray(array, o);
    }
}
