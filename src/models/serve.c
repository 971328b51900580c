/* serve.c: the serving side of FETCH streams (stream type 7): the manifest
 * and the chunks of a local full file, or of a cached part that holds every
 * tensor asked for, for the part a peer asks for (docs/PROTOCOL.md section
 * 14; the requesting side is fetch.c).
 *
 * What a requester can make us hold is bounded: SERVE_MAX_QUEUE chunk
 * requests per stream (more is a protocol error), data written to the
 * stream only while its unacknowledged bytes are under SERVE_UNACKED_MAX
 * (otherwise requests wait and a 2 ms timer looks again), and at most
 * SERVE_MAX_STREAMS streams serving at once (later ones are told BUSY).
 * Chunks are read with pread into one scratch buffer per store. */
#define _GNU_SOURCE
#include <event2/event.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/log.h"
#include "models/store_private.h"

/* Room for one frame of n bytes in the store's scratch buffer. */
static uint8_t *scratch(weights_store *ws, size_t n)
{
    if (n > ws->scratch_cap) {
        uint8_t *p = realloc(ws->scratch, n);
        if (!p) return NULL;
        ws->scratch = p;
        ws->scratch_cap = n;
    }
    return ws->scratch;
}

struct serve_stream {
    weights_store *ws;
    mesh_stream *s;
    /* After a good OPEN: the source, a local full file or a cached part. */
    local_file *file;
    cached_part *part;
    const weights_manifest *m;   /* the source's (a part's has every tensor's entry) */
    int fd;
    const uint64_t *offsets;     /* per tensor of m: its data's offset in fd's file */
    uint8_t *wanted;             /* per tensor of m */
    int file_fd;                 /* after a good FILE_OPEN: the whole file served, else -1 */
    uint64_t file_size;
    uint64_t q_offset[SERVE_MAX_QUEUE]; /* FILE_GETs waiting */
    uint32_t q_length[SERVE_MAX_QUEUE];
    int opened, refused, finished;
    uint32_t q_tensor[SERVE_MAX_QUEUE], q_chunk[SERVE_MAX_QUEUE];
    int q_head, q_len;
    struct event *poll;          /* retries the queue while the peer is behind */
    uint64_t chunks;
    serve_stream *prev, *next;
};

static void serve_free(serve_stream *st)
{
    weights_store *ws = st->ws;
    if (st->prev) st->prev->next = st->next; else ws->serving = st->next;
    if (st->next) st->next->prev = st->prev;
    ws->n_serving--;
    if (st->poll) event_free(st->poll);
    if (st->file_fd >= 0) close(st->file_fd);
    free(st->wanted);
    free(st);
}

/* The requester broke the protocol: reset (code 2), counted. st is gone. */
static void serve_reject(serve_stream *st, const char *why)
{
    mesh_stream *s = st->s;
    char hex[WEIGHTS_HASH_HEX];
    weights_hex(mesh_stream_peer(s), hex);
    log_debug(WEIGHTS_LOG, "FETCH from %.16s: %s: reset", hex, why);
    st->ws->counters.bad_frames++;
    serve_free(st);
    mesh_stream_set_handlers(s, &store_idle_handlers, NULL);
    mesh_stream_reject(s, why);
}

static void serve_finish(serve_stream *st)
{
    if (st->finished) return;
    st->finished = 1;
    mesh_stream_finish(st->s);
}

/* An ERROR frame, then FIN: a refusal, not a protocol error. */
static void serve_refuse(serve_stream *st, fetch_error_code code, const char *text)
{
    uint8_t buf[2 + FETCH_ERROR_TEXT_MAX];
    size_t n = fetch_error_encode(buf, (uint8_t)code, text);
    char hex[WEIGHTS_HASH_HEX];
    weights_hex(mesh_stream_peer(st->s), hex);
    log_info(WEIGHTS_LOG, "FETCH from %.16s refused: %s", hex, text);
    st->refused = 1;
    mesh_stream_send(st->s, buf, n);
    serve_finish(st);
}

/* Sends queued FILE_GET answers while the peer keeps up (and, with the
 * test knob, one per delay). */
static void serve_pump_file(serve_stream *st)
{
    weights_store *ws = st->ws;
    if (st->refused) st->q_len = 0;
    while (st->q_len && mesh_stream_unacked(st->s) < SERVE_UNACKED_MAX) {
        uint64_t off = st->q_offset[st->q_head];
        uint32_t len = st->q_length[st->q_head];
        st->q_head = (st->q_head + 1) % SERVE_MAX_QUEUE;
        st->q_len--;
        uint8_t *buf = scratch(ws, FETCH_FILE_DATA_HEAD + (size_t)len);
        if (!buf) {
            serve_refuse(st, FETCH_ERR_INTERNAL, "out of memory");
            return;
        }
        fetch_file_data_head_encode(buf, off);
        if (pread(st->file_fd, buf + FETCH_FILE_DATA_HEAD, len, (off_t)off) != (ssize_t)len) {
            serve_refuse(st, FETCH_ERR_INTERNAL, "cannot read the file here (it changed?)");
            return;
        }
        if (mesh_stream_send(st->s, buf, FETCH_FILE_DATA_HEAD + (size_t)len) < 0) return; /* on_close follows */
        ws->counters.file_bytes_served += len;
        if (ws->test_file_delay_ms > 0) {
            /* pending, the timer also holds back the GETs that arrive meanwhile */
            struct timeval tv = {ws->test_file_delay_ms / 1000, (ws->test_file_delay_ms % 1000) * 1000};
            evtimer_add(st->poll, &tv);
            return;
        }
    }
    if (st->q_len) {
        struct timeval tv = {0, SERVE_POLL_MS * 1000};
        evtimer_add(st->poll, &tv);
    }
}

/* FILE_OPEN: a whole file of the held list (weights_store_set_held), by
 * its SHA-256; opened now, its size checked against the list. */
static void serve_file_open(serve_stream *st, const fetch_request *r)
{
    weights_store *ws = st->ws;
    char text[FETCH_ERROR_TEXT_MAX], hex[65];
    st->opened = 1;
    const weights_held_file *h = NULL;
    for (int i = 0; i < ws->n_held && !h; i++)
        if (!memcmp(ws->held[i].sha256, r->sha256, 32)) h = &ws->held[i];
    if (!h) {
        weights_hex(r->sha256, hex);
        snprintf(text, sizeof text, "no file with SHA-256 %.16s here", hex);
        serve_refuse(st, FETCH_ERR_UNKNOWN_MODEL, text);
        return;
    }
    int open_streams = 0;
    for (serve_stream *o = ws->serving; o; o = o->next) open_streams += o->m != NULL || o->file_fd >= 0;
    if (open_streams >= SERVE_MAX_STREAMS) {
        serve_refuse(st, FETCH_ERR_BUSY, "too many fetches served at once, try later");
        return;
    }
    int fd = open(h->path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0 || (uint64_t)sb.st_size != h->size) {
        if (fd >= 0) close(fd);
        snprintf(text, sizeof text, "cannot read the file here (gone or changed)");
        serve_refuse(st, FETCH_ERR_INTERNAL, text);
        return;
    }
    st->file_fd = fd;
    st->file_size = h->size;
    ws->counters.files_served++;
    uint8_t info[FETCH_FILE_INFO_BYTES];
    fetch_file_info_encode(info, h->sha256, h->size);
    mesh_stream_send(st->s, info, sizeof info);
}

/* Sends queued chunks while the peer keeps up. 1 when st is gone. */
static int serve_pump(serve_stream *st)
{
    weights_store *ws = st->ws;
    if (st->file_fd >= 0) {
        serve_pump_file(st);
        return 0;
    }
    const weights_manifest *m = st->m;
    if (st->refused) st->q_len = 0;
    while (st->q_len && mesh_stream_unacked(st->s) < SERVE_UNACKED_MAX) {
        uint32_t t = st->q_tensor[st->q_head], c = st->q_chunk[st->q_head];
        st->q_head = (st->q_head + 1) % SERVE_MAX_QUEUE;
        st->q_len--;
        uint32_t len = weights_chunk_len(m, &m->tensors[t], c);
        uint8_t *buf = scratch(ws, FETCH_DATA_HEAD + (size_t)len);
        if (!buf) {
            serve_refuse(st, FETCH_ERR_INTERNAL, "out of memory");
            return 0;
        }
        fetch_data_head_encode(buf, t, c);
        /* pread, not the mapping: a file cut short under us is an error
         * answer, not a SIGBUS (and no page faults on the loop thread). */
        off_t at = (off_t)(st->offsets[t] + weights_chunk_offset(m, c));
        if (pread(st->fd, buf + FETCH_DATA_HEAD, len, at) != (ssize_t)len) {
            if (st->file) st->file->stale = 1;
            else store_part_forget(ws, st->part->path);
            store_publish(ws);
            serve_refuse(st, FETCH_ERR_INTERNAL, "cannot read the model here (it changed?)");
            return 0;
        }
        ws->test_chunks_served++;
        if (ws->test_corrupt_every && ws->test_chunks_served % (uint64_t)ws->test_corrupt_every == 0)
            buf[FETCH_DATA_HEAD + len / 2] ^= 0x20;
        if (mesh_stream_send(st->s, buf, FETCH_DATA_HEAD + (size_t)len) < 0) return 0; /* on_close follows */
        ws->counters.served_bytes += len;
        st->chunks++;
        if (ws->test_chunk_delay_ms > 0) { /* the test knob: a slow source */
            struct timeval tv = {ws->test_chunk_delay_ms / 1000, (ws->test_chunk_delay_ms % 1000) * 1000};
            evtimer_add(st->poll, &tv);
            return 0;
        }
    }
    if (st->q_len) {
        struct timeval tv = {0, SERVE_POLL_MS * 1000};
        evtimer_add(st->poll, &tv);
    }
    return 0;
}

static void serve_poll(evutil_socket_t fd, short what, void *arg) { serve_pump(arg); }

static void serve_open(serve_stream *st, const fetch_request *r)
{
    weights_store *ws = st->ws;
    char text[FETCH_ERROR_TEXT_MAX], why[200], hex[WEIGHTS_HASH_HEX];
    st->opened = 1;
    if (r->first > INT_MAX || r->end > INT_MAX) {
        serve_refuse(st, FETCH_ERR_BAD_RANGE, "layer numbers out of range");
        return;
    }
    int first = (int)r->first, end = (int)r->end, head = r->flags & FETCH_FLAG_HEAD;
    /* A full file when there is one, else a cached part holding the whole
     * range: its record has every tensor's entry (the manifest the
     * requester checks against the model hash) and the chunk hashes of
     * the part's tensors, so it answers exactly as the full file would. */
    local_file *lf = store_local(ws, r->hash);
    cached_part *part = lf ? NULL : store_part_covering(ws, r->hash, first, end, head);
    if (!lf && !part) {
        weights_hex(r->hash, hex);
        snprintf(text, sizeof text, "no copy of model %.16s layers [%d, %d)%s here", hex, first, end,
                 head ? " with the head" : "");
        serve_refuse(st, FETCH_ERR_UNKNOWN_MODEL, text);
        return;
    }
    const weights_manifest *m = lf ? lf->manifest : part->manifest;
    st->wanted = malloc(m->n_tensors ? m->n_tensors : 1);
    if (!st->wanted) {
        serve_refuse(st, FETCH_ERR_INTERNAL, "out of memory");
        return;
    }
    if (weights_select(m, first, end, head, st->wanted, why, sizeof why) < 0) {
        snprintf(text, sizeof text, "%s", why);
        serve_refuse(st, FETCH_ERR_BAD_RANGE, text);
        return;
    }
    int open_streams = 0;
    for (serve_stream *o = ws->serving; o; o = o->next) open_streams += o->m != NULL || o->file_fd >= 0;
    if (open_streams >= SERVE_MAX_STREAMS) {
        serve_refuse(st, FETCH_ERR_BUSY, "too many fetches served at once, try later");
        return;
    }
    if (lf) {
        if (!store_local_open(ws, lf, why, sizeof why)) {
            snprintf(text, sizeof text, "cannot read the model here: %s", why);
            serve_refuse(st, FETCH_ERR_INTERNAL, text);
            return;
        }
        st->file = lf;
        st->fd = lf->open->fd;
        st->offsets = lf->offsets;
    } else {
        if (store_part_open(ws, part, why, sizeof why) < 0) {
            snprintf(text, sizeof text, "cannot read the model here: %s", why);
            serve_refuse(st, FETCH_ERR_INTERNAL, text);
            return;
        }
        st->part = part;
        st->fd = part->fd;
        st->offsets = part->offsets;
        weights_hex(mesh_stream_peer(st->s), hex);
        log_info(WEIGHTS_LOG, "FETCH from %.16s: layers [%d, %d) from the cached part %s", hex, first, end,
                 part->path);
    }
    st->m = m;
    if (!(r->flags & FETCH_FLAG_NO_MANIFEST)) {
        fetch_manifest_writer w;
        fetch_manifest_writer_init(&w, m, st->wanted);
        uint8_t *buf = scratch(ws, FETCH_FRAME_BUF);
        size_t n;
        while (buf && (n = fetch_manifest_writer_next(&w, buf, FETCH_FRAME_BUF)) > 0)
            if (mesh_stream_send(st->s, buf, n) < 0) return;
        if (!buf) {
            serve_refuse(st, FETCH_ERR_INTERNAL, "out of memory");
            return;
        }
    }
    uint8_t ready = FETCH_READY;
    mesh_stream_send(st->s, &ready, 1);
}

static void serve_frame(void *user, mesh_stream *s, const uint8_t *p, size_t len)
{
    serve_stream *st = user;
    weights_store *ws = st->ws;
    fetch_request r;
    char why[160];
    if (fetch_request_decode(p, len, &r, why, sizeof why) < 0) {
        serve_reject(st, why);
        return;
    }
    if (r.kind == FETCH_OPEN || r.kind == FETCH_FILE_OPEN) {
        if (st->opened) serve_reject(st, "a second OPEN");
        else if (r.kind == FETCH_OPEN) serve_open(st, &r);
        else serve_file_open(st, &r);
        return;
    }
    if (r.kind == FETCH_FILE_GET) {
        if (st->file_fd < 0 || st->refused) {
            serve_reject(st, "FILE_GET before a successful FILE_OPEN");
            return;
        }
        if (r.offset >= st->file_size || r.length > st->file_size - r.offset) {
            serve_reject(st, "FILE_GET past the end of the file");
            return;
        }
        if (st->q_len == SERVE_MAX_QUEUE) {
            serve_reject(st, "too many chunk requests outstanding");
            return;
        }
        int at = (st->q_head + st->q_len) % SERVE_MAX_QUEUE;
        st->q_offset[at] = r.offset;
        st->q_length[at] = r.length;
        st->q_len++;
        if (!evtimer_pending(st->poll, NULL)) serve_pump(st);
        return;
    }
    if (!st->m || st->refused) {
        serve_reject(st, "GET before a successful OPEN");
        return;
    }
    const weights_manifest *m = st->m;
    if (r.tensor >= m->n_tensors || !st->wanted[r.tensor] || r.chunk >= m->tensors[r.tensor].n_chunks) {
        serve_reject(st, "GET for a chunk outside the part");
        return;
    }
    if (ws->test_abort_after && st->chunks >= (uint64_t)ws->test_abort_after) {
        /* Tests: the connection breaks here (a reset loses what is unread,
         * so tests pair this with a one-chunk window to know what arrived). */
        serve_free(st);
        mesh_stream_abort(s);
        return;
    }
    if (st->q_len == SERVE_MAX_QUEUE) {
        serve_reject(st, "too many chunk requests outstanding");
        return;
    }
    int at = (st->q_head + st->q_len) % SERVE_MAX_QUEUE;
    st->q_tensor[at] = r.tensor;
    st->q_chunk[at] = r.chunk;
    st->q_len++;
    if (!evtimer_pending(st->poll, NULL)) serve_pump(st);
}

static void serve_fin(void *user, mesh_stream *s) { serve_finish(user); }

static void serve_close(void *user, mesh_stream *s, const char *error) { serve_free(user); }

static const mesh_stream_handlers serve_handlers = {serve_frame, serve_fin, serve_close};

void serve_accept(void *ctx, mesh_stream *s)
{
    weights_store *ws = ctx;
    serve_stream *st = calloc(1, sizeof *st);
    if (st) st->poll = evtimer_new(ws->base, serve_poll, st);
    if (!st || !st->poll) {
        free(st);
        mesh_stream_abort(s);
        return;
    }
    st->ws = ws;
    st->s = s;
    st->file_fd = -1;
    st->next = ws->serving;
    if (ws->serving) ws->serving->prev = st;
    ws->serving = st;
    ws->n_serving++;
    mesh_stream_set_handlers(s, &serve_handlers, st);
}

void serve_free_all(weights_store *ws)
{
    while (ws->serving) {
        serve_stream *st = ws->serving;
        mesh_stream *s = st->s;
        serve_free(st);
        mesh_stream_abort(s);
    }
}
