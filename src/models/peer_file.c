/* peer_file.c: see peer_file.h.
 *
 * Two owners: the reader (until peer_file_close) and the loop (until its
 * stream is gone); the last to let go frees. Every field marked "lock" is
 * shared; the stream and the asking state belong to the loop. */
#define _GNU_SOURCE
#include "models/peer_file.h"

#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/log.h"
#include "models/fetch_wire.h"

#define PF_LOG "weights"

typedef struct piece {
    struct piece *next;
    size_t len, used;
    uint8_t data[];
} piece;

struct peer_file {
    struct event_base *base;
    mesh *mesh;
    uint8_t peer[MESH_ID_BYTES], sha256[32];
    uint64_t size;
    struct event *wake;          /* the loop: open, ask for more, or close */

    pthread_mutex_t lock;
    pthread_cond_t cond;         /* the reader: a piece arrived, or the end */
    piece *head, *tail;          /* lock: received, not yet read */
    uint64_t buffered;           /* lock: their bytes */
    uint64_t delivered;          /* lock: offset of the next byte the reader gets */
    int failed;                  /* lock */
    char error[320];             /* lock */
    int reader_gone, loop_gone;  /* lock */

    /* loop thread */
    mesh_stream *s;
    int started, info_ok;
    uint64_t next_ask;           /* next offset to ask for */
    uint64_t next_recv;          /* offset the next FILE_DATA must carry */
};

static void pf_free(peer_file *pf)
{
    while (pf->head) {
        piece *p = pf->head;
        pf->head = p->next;
        free(p);
    }
    if (pf->wake) event_free(pf->wake);
    pthread_mutex_destroy(&pf->lock);
    pthread_cond_destroy(&pf->cond);
    free(pf);
}

/* Loop: the transfer failed; the reader is told why. */
static void pf_fail(peer_file *pf, const char *fmt, const char *detail)
{
    pthread_mutex_lock(&pf->lock);
    if (!pf->failed) {
        pf->failed = 1;
        snprintf(pf->error, sizeof pf->error, fmt, detail);
    }
    pthread_cond_broadcast(&pf->cond);
    pthread_mutex_unlock(&pf->lock);
}

static void on_frame(void *user, mesh_stream *s, const uint8_t *p, size_t len);
static void on_fin(void *user, mesh_stream *s);
static void on_close(void *user, mesh_stream *s, const char *error);
static const mesh_stream_handlers pf_handlers = {on_frame, on_fin, on_close};

static void idle_frame(void *u, mesh_stream *s, const uint8_t *p, size_t n) { (void)u, (void)s, (void)p, (void)n; }
static void idle_fin(void *u, mesh_stream *s) { (void)u, (void)s; }
static void idle_close(void *u, mesh_stream *s, const char *e) { (void)u, (void)s, (void)e; }
static const mesh_stream_handlers pf_idle = {idle_frame, idle_fin, idle_close};

/* Loop: asks for more while the bytes asked for or unread are under the window. */
static void pf_ask(peer_file *pf)
{
    pthread_mutex_lock(&pf->lock);
    uint64_t unread = pf->buffered;
    pthread_mutex_unlock(&pf->lock);
    while (pf->s && pf->info_ok && pf->next_ask < pf->size &&
           (pf->next_ask - pf->next_recv) + unread < PEER_FILE_WINDOW) {
        uint64_t left = pf->size - pf->next_ask;
        uint32_t n = left < FETCH_FILE_PIECE ? (uint32_t)left : FETCH_FILE_PIECE;
        uint8_t get[FETCH_FILE_GET_BYTES];
        fetch_file_get_encode(get, pf->next_ask, n);
        if (mesh_stream_send(pf->s, get, sizeof get) < 0) return;
        pf->next_ask += n;
    }
}

/* Loop: the stream is let go; frees when the reader is gone too. */
static void pf_loop_release(peer_file *pf)
{
    if (pf->s) {
        mesh_stream *s = pf->s;
        pf->s = NULL;
        mesh_stream_set_handlers(s, &pf_idle, NULL);
        mesh_stream_abort(s);
    }
    pthread_mutex_lock(&pf->lock);
    pf->loop_gone = 1;
    int both = pf->reader_gone;
    pthread_cond_broadcast(&pf->cond);
    pthread_mutex_unlock(&pf->lock);
    if (both) pf_free(pf);
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    peer_file *pf = arg;
    pthread_mutex_lock(&pf->lock);
    int gone = pf->reader_gone, failed = pf->failed;
    pthread_mutex_unlock(&pf->lock);
    if (gone) {
        pf_loop_release(pf);
        return;
    }
    if (failed || pf->loop_gone) return;
    if (!pf->started) {
        pf->started = 1;
        char err[200];
        pf->s = mesh_stream_open(pf->mesh, pf->peer, MESH_STREAM_FETCH, &pf_handlers, pf, err, sizeof err);
        if (!pf->s) {
            pf_fail(pf, "%s", err);
            return;
        }
        uint8_t open[FETCH_FILE_OPEN_BYTES];
        fetch_file_open_encode(open, pf->sha256);
        mesh_stream_send(pf->s, open, sizeof open);
        return;
    }
    pf_ask(pf);
}

/* Loop: the peer broke the protocol: reset, counted by the mesh. */
static void pf_reject(peer_file *pf, const char *why)
{
    mesh_stream *s = pf->s;
    pf->s = NULL;
    pf_fail(pf, "malformed answer: %s", why);
    mesh_stream_set_handlers(s, &pf_idle, NULL);
    mesh_stream_reject(s, why);
}

static void on_frame(void *user, mesh_stream *s, const uint8_t *p, size_t len)
{
    (void)s;
    peer_file *pf = user;
    fetch_answer a;
    char why[160];
    if (fetch_answer_decode(p, len, &a, why, sizeof why) < 0) {
        pf_reject(pf, why);
        return;
    }
    if (a.kind == FETCH_ERROR) {
        pf_fail(pf, "refused: %s", a.text);
        return;
    }
    if (a.kind == FETCH_FILE_INFO && !pf->info_ok) {
        if (memcmp(a.sha256, pf->sha256, 32) || a.size != pf->size) {
            pf_reject(pf, "FILE_INFO for another file or size");
            return;
        }
        pf->info_ok = 1;
        pf->next_recv = pf->next_ask; /* both start at the reader's offset */
        pf_ask(pf);
        return;
    }
    if (a.kind != FETCH_FILE_DATA || !pf->info_ok || a.offset != pf->next_recv ||
        a.len > pf->next_ask - pf->next_recv) {
        pf_reject(pf, "an answer out of order or not asked for");
        return;
    }
    piece *pc = malloc(sizeof *pc + a.len);
    if (!pc) {
        pf_fail(pf, "%s", "out of memory");
        return;
    }
    pc->next = NULL;
    pc->len = a.len;
    pc->used = 0;
    memcpy(pc->data, a.data, a.len);
    pf->next_recv += a.len;
    pthread_mutex_lock(&pf->lock);
    if (pf->tail) pf->tail->next = pc;
    else pf->head = pc;
    pf->tail = pc;
    pf->buffered += a.len;
    pthread_cond_broadcast(&pf->cond);
    pthread_mutex_unlock(&pf->lock);
}

static void on_fin(void *user, mesh_stream *s)
{
    (void)s;
    peer_file *pf = user;
    if (pf->next_recv < pf->size) pf_fail(pf, "%s", "the peer ended the stream early");
}

static void on_close(void *user, mesh_stream *s, const char *error)
{
    (void)s;
    peer_file *pf = user;
    pf->s = NULL;
    if (pf->next_recv < pf->size) pf_fail(pf, "the stream closed: %s", error ? error : "by the peer");
}

peer_file *peer_file_open(struct event_base *base, mesh *m, const uint8_t peer[MESH_ID_BYTES],
                          const uint8_t sha256[32], uint64_t size, uint64_t offset)
{
    peer_file *pf = calloc(1, sizeof *pf);
    if (!pf) return NULL;
    pf->base = base;
    pf->mesh = m;
    memcpy(pf->peer, peer, MESH_ID_BYTES);
    memcpy(pf->sha256, sha256, 32);
    pf->size = size;
    pf->next_ask = pf->next_recv = pf->delivered = offset;
    pthread_mutex_init(&pf->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&pf->cond, &ca);
    pthread_condattr_destroy(&ca);
    pf->wake = event_new(base, -1, 0, on_wake, pf);
    if (!pf->wake) {
        pf_free(pf);
        return NULL;
    }
    event_active(pf->wake, EV_READ, 0);
    return pf;
}

long peer_file_read(peer_file *pf, uint8_t *buf, size_t cap, const _Atomic int *cancel, char *err, size_t errlen)
{
    pthread_mutex_lock(&pf->lock);
    if (pf->delivered >= pf->size) {
        pthread_mutex_unlock(&pf->lock);
        return 0;
    }
    /* Waits in 50 ms steps (a cancel is seen quickly), PEER_FILE_IDLE_MS at most. */
    for (int waited = 0; !pf->head && !pf->failed && !pf->loop_gone; waited += 50) {
        if (waited >= PEER_FILE_IDLE_MS || (cancel && *cancel)) {
            snprintf(err, errlen, cancel && *cancel ? "cancelled" : "no byte for %d s", PEER_FILE_IDLE_MS / 1000);
            pthread_mutex_unlock(&pf->lock);
            return -1;
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 50 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&pf->cond, &pf->lock, &ts);
    }
    if (!pf->head) {
        snprintf(err, errlen, "%s", pf->error[0] ? pf->error : "the transfer stopped");
        pthread_mutex_unlock(&pf->lock);
        return -1;
    }
    piece *pc = pf->head;
    size_t n = pc->len - pc->used < cap ? pc->len - pc->used : cap;
    memcpy(buf, pc->data + pc->used, n);
    pc->used += n;
    pf->buffered -= n;
    pf->delivered += n;
    if (pc->used == pc->len) {
        pf->head = pc->next;
        if (!pf->head) pf->tail = NULL;
        free(pc);
    }
    event_active(pf->wake, EV_READ, 0); /* room in the window: the loop asks for more */
    pthread_mutex_unlock(&pf->lock);
    return (long)n;
}

void peer_file_close(peer_file *pf)
{
    if (!pf) return;
    pthread_mutex_lock(&pf->lock);
    pf->reader_gone = 1;
    /* Activated under the lock: the loop frees pf only after taking it. */
    event_active(pf->wake, EV_READ, 0);
    pthread_mutex_unlock(&pf->lock);
}

static void *source_open(void *ctx, uint64_t offset, char *err, size_t errlen)
{
    const peer_file_target *t = ctx;
    peer_file *pf = peer_file_open(t->base, t->mesh, t->peer, t->sha256, t->size, offset);
    if (!pf) snprintf(err, errlen, "out of memory");
    return pf;
}

static long source_read(void *h, uint8_t *buf, size_t cap, const _Atomic int *cancel, char *err, size_t errlen)
{
    return peer_file_read(h, buf, cap, cancel, err, errlen);
}

static void source_close(void *h) { peer_file_close(h); }

void peer_file_source(const peer_file_target *t, dl_source *out)
{
    memset(out, 0, sizeof *out);
    out->open = source_open;
    out->read = source_read;
    out->close = source_close;
    out->ctx = (void *)t;
    char hex[2 * MESH_ID_BYTES + 1];
    for (int i = 0; i < 4; i++) snprintf(hex + 2 * i, 3, "%02x", t->peer[i]);
    snprintf(out->name, sizeof out->name, "peer %s", hex);
}
