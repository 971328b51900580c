/* peer_file.c: see peer_file.h.
 *
 * Two owners: the reader (until peer_file_close) and the loop (until its
 * streams are gone); the last to let go frees. Every field marked "lock" is
 * shared; the streams, the asking state and the pieces that arrived out of
 * order belong to the loop.
 *
 * Several holders: one stream per holder (PEER_FILE_MAX_PEERS), each asking
 * the next piece of the file not yet asked whenever its own window has
 * room; a server answers in the order asked, so each stream keeps its own
 * FIFO of pieces out. Pieces that arrive ahead of the reader's offset wait
 * in `early` (sorted) until the gap before them is filled, then go to the
 * reader in order. A stream that breaks, is refused or brings nothing for
 * PEER_FILE_STALL_MS while another works gives its pieces back (`redo`,
 * asked first by the others). A stream with nothing out and nothing new to
 * ask asks again for the piece the reader waits for when that one is late
 * (PEER_FILE_HOL_MS: the endgame, or a slow holder holding up the others):
 * the copy that comes second is dropped. Asking starts when every holder
 * has answered FILE_OPEN (or after a tick), so the first to answer does
 * not take a whole small file before the others can share it.
 * Memory: everything asked, early or unread stays under PEER_FILE_WINDOW
 * per live stream. Only when every stream has failed does the reader get
 * an error (and download.c goes on from the hub). */
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

#include "lib/clock.h"
#include "lib/log.h"
#include "models/fetch_wire.h"

#define PF_LOG "weights"
#define PF_MAX_ASKED ((int)(PEER_FILE_WINDOW / FETCH_FILE_PIECE)) /* pieces out per stream */
#define PF_MAX_REDO (PEER_FILE_MAX_PEERS * PF_MAX_ASKED)

typedef struct piece {
    struct piece *next;
    uint64_t off;
    size_t len, used;
    uint8_t data[];
} piece;

typedef struct peer_file peer_file;

typedef struct {
    peer_file *pf;
    uint8_t peer[MESH_ID_BYTES];
    mesh_stream *s;
    int info_ok, failed;
    uint64_t asked_off[PF_MAX_ASKED]; /* pieces out, in the order asked */
    uint32_t asked_len[PF_MAX_ASKED];
    uint64_t asked_ms[PF_MAX_ASKED];
    int asked_head, n_asked;
    uint64_t asked_bytes;
    uint64_t bytes;                   /* received from this holder */
    uint64_t last_ms;                 /* opened, or brought a piece */
} pf_stream;

struct peer_file {
    struct event_base *base;
    mesh *mesh;
    uint8_t sha256[32];
    uint64_t size;
    struct event *wake;          /* the loop: open, ask for more, or close */
    struct event *tick;          /* the loop: stalled streams */

    pthread_mutex_t lock;
    pthread_cond_t cond;         /* the reader: a piece arrived, or the end */
    piece *head, *tail;          /* lock: received in order, not yet read */
    uint64_t buffered;           /* lock: their bytes */
    uint64_t delivered;          /* lock: offset of the next byte the reader gets */
    int failed;                  /* lock */
    char error[320];             /* lock */
    int reader_gone, loop_gone;  /* lock */

    /* loop thread */
    pf_stream st[PEER_FILE_MAX_PEERS];
    int n_st;
    int started;
    int asking;                  /* every stream has its FILE_INFO (or failed), or a tick passed */
    uint64_t next_ask;           /* no byte from here on was asked yet */
    uint64_t in_order;           /* every byte before it went to the reader's list */
    piece *early;                /* arrived past in_order, sorted by offset */
    uint64_t early_bytes;
    uint64_t redo_off[PF_MAX_REDO]; /* pieces of failed streams, to ask again */
    uint32_t redo_len[PF_MAX_REDO];
    int n_redo;
    char last_error[200];
};

static void pf_free(peer_file *pf)
{
    while (pf->head) {
        piece *p = pf->head;
        pf->head = p->next;
        free(p);
    }
    while (pf->early) {
        piece *p = pf->early;
        pf->early = p->next;
        free(p);
    }
    if (pf->wake) event_free(pf->wake);
    if (pf->tick) event_free(pf->tick);
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

static void st_let_go(pf_stream *t, int reject, const char *why)
{
    mesh_stream *s = t->s;
    if (!s) return;
    t->s = NULL;
    mesh_stream_set_handlers(s, &pf_idle, NULL);
    if (reject) mesh_stream_reject(s, why);
    else mesh_stream_abort(s);
}

static int pf_live(const peer_file *pf)
{
    int n = 0;
    for (int i = 0; i < pf->n_st; i++) n += pf->st[i].s != NULL;
    return n;
}

/* 1 when [off, off + len) went to the reader already or waits in early. */
static int pf_have(const peer_file *pf, uint64_t off)
{
    if (off < pf->in_order) return 1;
    for (const piece *p = pf->early; p && p->off <= off; p = p->next)
        if (p->off == off) return 1;
    return 0;
}

/* When off was asked on t (ms), or 0 when it is not out there. */
static uint64_t st_asked(const pf_stream *t, uint64_t off)
{
    for (int i = 0; i < t->n_asked; i++) {
        int k = (t->asked_head + i) % PF_MAX_ASKED;
        if (t->asked_off[k] == off) return t->asked_ms[k];
    }
    return 0;
}

/* 1 when the piece the reader waits for was asked somewhere at least
 * PEER_FILE_HOL_MS ago and has not come: another stream may ask it too. */
static int pf_hol_late(const peer_file *pf)
{
    if (pf->in_order >= pf->next_ask || pf_have(pf, pf->in_order)) return 0;
    uint64_t first = UINT64_MAX;
    for (int i = 0; i < pf->n_st; i++) {
        uint64_t at = pf->st[i].s ? st_asked(&pf->st[i], pf->in_order) : 0;
        if (at && at < first) first = at;
    }
    return first != UINT64_MAX && clock_ms() - first >= PEER_FILE_HOL_MS;
}

static void pf_ask(peer_file *pf);

/* Loop: stream t is given up on; its pieces go to the others, or, with
 * none left, the reader gets the error. */
static void st_fail(pf_stream *t, int reject, const char *why)
{
    peer_file *pf = t->pf;
    st_let_go(t, reject, why);
    t->failed = 1;
    for (int i = 0; i < t->n_asked; i++) {
        int k = (t->asked_head + i) % PF_MAX_ASKED;
        if (!pf_have(pf, t->asked_off[k]) && pf->n_redo < PF_MAX_REDO) {
            pf->redo_off[pf->n_redo] = t->asked_off[k];
            pf->redo_len[pf->n_redo++] = t->asked_len[k];
        }
    }
    t->n_asked = 0;
    t->asked_bytes = 0;
    snprintf(pf->last_error, sizeof pf->last_error, "%s", why);
    char hex[2 * MESH_ID_BYTES + 1];
    for (int i = 0; i < 6; i++) snprintf(hex + 2 * i, 3, "%02x", t->peer[i]);
    if (pf_live(pf)) {
        log_info(PF_LOG, "file from peer %s: %s; the other holders take its pieces", hex, why);
        pf_ask(pf);
    } else {
        pf_fail(pf, "%s", why);
    }
}

static int st_send_get(pf_stream *t, uint64_t off, uint32_t n)
{
    uint8_t get[FETCH_FILE_GET_BYTES];
    fetch_file_get_encode(get, off, n);
    if (mesh_stream_send(t->s, get, sizeof get) < 0) return -1;
    int k = (t->asked_head + t->n_asked) % PF_MAX_ASKED;
    t->asked_off[k] = off;
    t->asked_len[k] = n;
    t->asked_ms[k] = clock_ms();
    if (t->n_asked++ == 0) t->last_ms = t->asked_ms[k];
    t->asked_bytes += n;
    return 0;
}

/* Loop: asks for more on every stream with room, while what is asked,
 * early or unread stays under the window. */
static void pf_ask(peer_file *pf)
{
    if (!pf->asking) return;
    pthread_mutex_lock(&pf->lock);
    uint64_t delivered = pf->delivered;
    pthread_mutex_unlock(&pf->lock);
    uint64_t window = (uint64_t)PEER_FILE_WINDOW * (uint64_t)(pf_live(pf) ? pf_live(pf) : 1);
    for (int asked = 1; asked;) {
        asked = 0;
        for (int i = 0; i < pf->n_st; i++) {
            pf_stream *t = &pf->st[i];
            if (!t->s || !t->info_ok || t->n_asked >= PF_MAX_ASKED ||
                t->asked_bytes + FETCH_FILE_PIECE > PEER_FILE_WINDOW)
                continue;
            uint64_t off = 0;
            uint32_t n = 0;
            while (pf->n_redo && !n) { /* a failed stream's pieces first */
                pf->n_redo--;
                if (!pf_have(pf, pf->redo_off[pf->n_redo])) {
                    off = pf->redo_off[pf->n_redo];
                    n = pf->redo_len[pf->n_redo];
                }
            }
            if (!n && pf->next_ask < pf->size && pf->next_ask - delivered < window) {
                uint64_t left = pf->size - pf->next_ask;
                off = pf->next_ask;
                n = left < FETCH_FILE_PIECE ? (uint32_t)left : FETCH_FILE_PIECE;
                pf->next_ask += n;
            }
            /* Nothing new: the piece the reader waits for, when it is late
             * elsewhere and not asked here. */
            if (!n && t->n_asked == 0 && !st_asked(t, pf->in_order) && pf_hol_late(pf)) {
                uint64_t left = pf->size - pf->in_order;
                off = pf->in_order;
                n = left < FETCH_FILE_PIECE ? (uint32_t)left : FETCH_FILE_PIECE;
            }
            if (!n) continue;
            if (st_send_get(t, off, n) < 0) {
                st_fail(t, 0, "cannot send on the stream");
                return;
            }
            asked = 1;
        }
    }
}

/* Loop: lets every stream go; frees when the reader is gone too. */
static void pf_loop_release(peer_file *pf)
{
    for (int i = 0; i < pf->n_st; i++) st_let_go(&pf->st[i], 0, NULL);
    if (pf->tick) event_del(pf->tick);
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
        char err[200] = "";
        for (int i = 0; i < pf->n_st; i++) {
            pf_stream *t = &pf->st[i];
            t->s = mesh_stream_open(pf->mesh, t->peer, MESH_STREAM_FETCH, &pf_handlers, t, err, sizeof err);
            if (!t->s) {
                t->failed = 1;
                continue;
            }
            t->last_ms = clock_ms();
            uint8_t open[FETCH_FILE_OPEN_BYTES];
            fetch_file_open_encode(open, pf->sha256);
            mesh_stream_send(t->s, open, sizeof open);
        }
        if (!pf_live(pf)) pf_fail(pf, "%s", err);
        return;
    }
    pf_ask(pf);
}

/* Loop, every PEER_FILE_TICK_MS: a stream with pieces out and none back for
 * PEER_FILE_STALL_MS while another stream is open gives them to the others
 * (the only stream is left to the reader's PEER_FILE_IDLE_MS); asking
 * starts even if a holder has not answered yet; late pieces are asked
 * again. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    peer_file *pf = arg;
    uint64_t now = clock_ms();
    pf->asking = 1;
    for (int i = 0; i < pf->n_st; i++) {
        pf_stream *t = &pf->st[i];
        if (t->s && t->n_asked && now - t->last_ms >= PEER_FILE_STALL_MS && pf_live(pf) > 1)
            st_fail(t, 0, "no piece for a while");
    }
    pf_ask(pf);
}

/* Loop: hands early pieces that follow in_order to the reader. */
static void pf_deliver(peer_file *pf)
{
    piece *first = NULL, *last = NULL;
    uint64_t bytes = 0;
    while (pf->early && pf->early->off == pf->in_order) {
        piece *p = pf->early;
        pf->early = p->next;
        pf->early_bytes -= p->len;
        pf->in_order += p->len;
        p->next = NULL;
        if (last) last->next = p;
        else first = p;
        last = p;
        bytes += p->len;
    }
    if (!first) return;
    pthread_mutex_lock(&pf->lock);
    if (pf->tail) pf->tail->next = first;
    else pf->head = first;
    pf->tail = last;
    pf->buffered += bytes;
    pthread_cond_broadcast(&pf->cond);
    pthread_mutex_unlock(&pf->lock);
}

static void on_frame(void *user, mesh_stream *s, const uint8_t *p, size_t len)
{
    (void)s;
    pf_stream *t = user;
    peer_file *pf = t->pf;
    fetch_answer a;
    char why[FETCH_ERROR_TEXT_MAX + 16];
    if (fetch_answer_decode(p, len, &a, why, sizeof why) < 0) {
        st_fail(t, 1, why);
        return;
    }
    if (a.kind == FETCH_ERROR) {
        snprintf(why, sizeof why, "refused: %s", a.text);
        st_fail(t, 0, why);
        return;
    }
    if (a.kind == FETCH_FILE_INFO && !t->info_ok) {
        if (memcmp(a.sha256, pf->sha256, 32) || a.size != pf->size) {
            st_fail(t, 1, "FILE_INFO for another file or size");
            return;
        }
        t->info_ok = 1;
        /* Asking starts once every holder answered (or failed), so that the
         * first one does not take a whole window before the others can. */
        int waiting = 0;
        for (int i = 0; i < pf->n_st; i++) waiting += pf->st[i].s && !pf->st[i].info_ok;
        if (!waiting) pf->asking = 1;
        pf_ask(pf);
        return;
    }
    int k = t->asked_head;
    if (a.kind != FETCH_FILE_DATA || !t->info_ok || !t->n_asked || a.offset != t->asked_off[k] ||
        a.len != t->asked_len[k]) {
        st_fail(t, 1, "an answer out of order or not asked for");
        return;
    }
    t->asked_head = (t->asked_head + 1) % PF_MAX_ASKED;
    t->n_asked--;
    t->asked_bytes -= a.len;
    t->bytes += a.len;
    t->last_ms = clock_ms();
    if (!pf_have(pf, a.offset)) { /* else: another holder's copy came first */
        piece *pc = malloc(sizeof *pc + a.len);
        if (!pc) {
            pf_fail(pf, "%s", "out of memory");
            return;
        }
        pc->off = a.offset;
        pc->len = a.len;
        pc->used = 0;
        memcpy(pc->data, a.data, a.len);
        piece **at = &pf->early;
        while (*at && (*at)->off < pc->off) at = &(*at)->next;
        pc->next = *at;
        *at = pc;
        pf->early_bytes += a.len;
        pf_deliver(pf);
    }
    pf_ask(pf);
}

static void on_fin(void *user, mesh_stream *s)
{
    (void)s;
    pf_stream *t = user;
    if (t->pf->in_order < t->pf->size) st_fail(t, 0, "the peer ended the stream early");
}

static void on_close(void *user, mesh_stream *s, const char *error)
{
    (void)s;
    pf_stream *t = user;
    t->s = NULL;
    if (t->pf->in_order < t->pf->size) {
        char why[240];
        snprintf(why, sizeof why, "the stream closed: %s", error ? error : "by the peer");
        st_fail(t, 0, why);
    }
}

peer_file *peer_file_open(struct event_base *base, mesh *m, const uint8_t (*peers)[MESH_ID_BYTES], int n_peers,
                          const uint8_t sha256[32], uint64_t size, uint64_t offset)
{
    if (n_peers < 1) return NULL;
    peer_file *pf = calloc(1, sizeof *pf);
    if (!pf) return NULL;
    pf->base = base;
    pf->mesh = m;
    pf->n_st = n_peers < PEER_FILE_MAX_PEERS ? n_peers : PEER_FILE_MAX_PEERS;
    for (int i = 0; i < pf->n_st; i++) {
        pf->st[i].pf = pf;
        memcpy(pf->st[i].peer, peers[i], MESH_ID_BYTES);
    }
    memcpy(pf->sha256, sha256, 32);
    pf->size = size;
    pf->next_ask = pf->in_order = pf->delivered = offset;
    pthread_mutex_init(&pf->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&pf->cond, &ca);
    pthread_condattr_destroy(&ca);
    pf->wake = event_new(base, -1, 0, on_wake, pf);
    pf->tick = event_new(base, -1, EV_PERSIST, on_tick, pf);
    if (!pf->wake || !pf->tick) {
        pf_free(pf);
        return NULL;
    }
    struct timeval tick = {0, PEER_FILE_TICK_MS * 1000};
    event_add(pf->tick, &tick);
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
    uint8_t peers[PEER_FILE_MAX_PEERS][MESH_ID_BYTES];
    int n = 0;
    memcpy(peers[n++], t->peer, MESH_ID_BYTES);
    for (int i = 0; i < t->n_more && n < PEER_FILE_MAX_PEERS; i++) memcpy(peers[n++], t->more[i], MESH_ID_BYTES);
    peer_file *pf = peer_file_open(t->base, t->mesh, (const uint8_t(*)[MESH_ID_BYTES])peers, n, t->sha256, t->size,
                                   offset);
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
    if (t->n_more > 0) snprintf(out->name, sizeof out->name, "peers %s +%d", hex, t->n_more % PEER_FILE_MAX_PEERS);
    else snprintf(out->name, sizeof out->name, "peer %s", hex);
}
