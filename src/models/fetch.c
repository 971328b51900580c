/* fetch.c: the requesting side of FETCH streams (stream type 7): fetching a
 * part of a model from peers into $home/cache/parts/ (weights_store.h has
 * the contract, docs/weights.md the reasons, docs/PROTOCOL.md section 14 the
 * bytes). The serving side is serve.c.
 *
 * A fetch is a job per part (model hash, layer range, head), shared by every
 * weights_fetch handle that asked for that part. Its life:
 *   connect to one source -> OPEN -> manifest frames -> READY: the manifest
 *   is checked against the model hash, the part file laid out (or, when one
 *   is on disk with the same layout, its chunks are checked on the hash
 *   lane) -> a stream to every other source that holds the part (up to
 *   FETCH_MAX_STREAMS, OPEN without the manifest) -> GETs on every stream,
 *   each taking the next missing chunk in file order while its own window
 *   (window_bytes asked for and not yet received) has room; each DATA is
 *   copied to the sync lane, which checks it against its chunk hash and
 *   writes it at its offset -> fsync, rename, record (sync lane) -> on_done.
 * The chunks go where they are answered fastest: a source that is twice as
 * fast empties its window twice as often and asks twice as much. At the
 * end, a stream with room asks again for chunks out at another for
 * FETCH_ENDGAME_MS (the endgame): the first copy to arrive is written, the
 * other dropped, so a slow or dead source holds up the end by that long
 * plus one round trip of another, not by its whole window. A stream that
 * breaks or stalls gives its chunks back to the others and its peer is
 * tried again after a backoff; when no stream is left, the job goes back
 * to connect after a backoff. The manifest is kept, so every later OPEN
 * asks for READY only.
 *
 * Lifetimes: a callback may cancel handles or abort streams, so every
 * function that can end a job returns 1 when it did, and its callers stop
 * touching the job. Streams a job lets go get idle handlers first, so no
 * callback of theirs reaches freed memory; work items of a job that is gone
 * are told so (job = NULL) and only freed when they come back. */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/clock.h"
#include "lib/err.h"
#include "lib/log.h"
#include "models/store_private.h"

_Static_assert(MESH_ID_BYTES == WEIGHTS_HASH_BYTES, "ids print with weights_hex");


/* A chunk is MISSING (nobody asked for it), ASKED (on the streams of its
 * asked_by bits), WRITING (a copy arrived and is on the sync lane; copies
 * still asked elsewhere are dropped when they come) or DONE. */
enum { CH_MISSING, CH_ASKED, CH_WRITING, CH_DONE };
_Static_assert(FETCH_MAX_STREAMS <= 8, "a bit per stream in asked_by");

typedef struct {
    uint32_t tensor, chunk;
    uint64_t file_off;           /* in the part file */
    uint32_t len;
    uint8_t state;
    uint8_t asked_by;            /* bit i: asked on slots[i]'s stream and not answered there yet */
    uint32_t asked_ms;           /* when last asked, ms since the job started */
} part_chunk;

typedef struct check_work check_work;

struct weights_fetch {
    weights_store *ws;
    fetch_job *job;              /* NULL: answered from the cache (timer) */
    weights_fetch_callbacks cb;
    void *user;
    int cancelled;
    struct event *timer;
    char *path;
    weights_fetch *next;
};

/* One source of a job: a peer, and the stream to it when one is open. A
 * slot keeps its peer between attempts (its counters and backoff with it)
 * until the peer is given up on or another source needs the slot. */
typedef struct {
    fetch_job *job;
    int index;                   /* in job->slots: its bit in part_chunk.asked_by */
    int used;                    /* peer is set */
    uint8_t peer[MESH_ID_BYTES];
    mesh_stream *stream;         /* NULL between attempts */
    int ready;                   /* READY seen on this stream */
    int reading;                 /* this stream carries the manifest */
    int outstanding;             /* GETs not yet answered on this stream */
    uint64_t asked;              /* their bytes */
    uint64_t bytes;              /* verified chunk bytes from this peer in this job */
    uint64_t last_ms;            /* the stream opened or brought a chunk */
    int fails;                   /* failed streams in a row (reset by a verified chunk) */
    uint64_t next_ms;            /* not asked again before then */
    int bad;                     /* chunks that did not verify */
} fetch_slot;

struct fetch_job {
    weights_store *ws;
    uint8_t hash[WEIGHTS_HASH_BYTES];
    int first, end, head;
    uint8_t peer[MESH_ID_BYTES];   /* the source of the last stream opened (for messages) */
    uint8_t named[MESH_ID_BYTES];  /* the peer the caller named (tried when no holder is known) */
    uint8_t shunned[FETCH_MAX_SHUNNED][MESH_ID_BYTES]; /* refused the part or sent bad chunks */
    int n_shunned;
    unsigned turn;                 /* attempts at the manifest: picks among the sources in turn */
    fetch_slot slots[FETCH_MAX_STREAMS];
    char *final_path, *part_path, *record_path;
    int fd;                      /* the .part file */
    int lock_fd;                 /* the same, flock'ed while the job lives */
    fetch_manifest_reader reader; /* the manifest, on the one slot with reading set */
    weights_manifest *manifest;  /* checked against hash */
    uint8_t *wanted;
    uint32_t *first_chunk;       /* per tensor: its first index in chunks, UINT32_MAX when not wanted */
    part_chunk *chunks;
    size_t n_chunks, n_done, cursor; /* cursor: no MISSING chunk before it */
    uint64_t writing;            /* chunk bytes received and not yet written */
    uint64_t done_bytes, total_bytes, resumed_bytes;
    uint64_t duplicate_bytes;    /* endgame copies that arrived second */
    uint64_t unsynced;           /* bytes handed to the sync lane since the last flush */
    int attempts;                /* failed attempts with no stream left, in a row */
    struct event *retry;         /* connect: the first time, after a backoff, or to widen */
    struct event *tick;          /* stalled streams, the endgame */
    check_work *check;
    struct final_work *finishing;
    struct chunk_work *writing_list; /* chunks on the sync lane */
    weights_fetch *handles;
    int dispatching;
    char last_error[160];
    uint64_t started_ms, logged_ms;
    fetch_job *next;
};

struct check_work {
    work w;
    fetch_job *job;              /* NULL once the job is gone (loop thread only) */
    int fd;
    size_t n;
    uint64_t *offsets;
    uint32_t *lens;
    uint8_t (*expect)[WEIGHTS_HASH_BYTES];
    uint8_t (*got)[WEIGHTS_HASH_BYTES];
    int failed;
};

typedef struct final_work {
    work w;
    fetch_job *job;              /* NULL once the job is gone (loop thread only) */
    int fd;                      /* dup of the job's */
    char *part, *final, *record;
    uint8_t *rec;
    size_t rec_len;
    char error[600];
} final_work;

/* A received chunk is hashed and written on the sync lane, so the loop
 * thread only copies it (a megabyte of SHA-256 and pwrite would hold up
 * every other stream for about a millisecond). Its bytes stay in the
 * window until written: a disk slower than the network slows the requests. */
typedef struct chunk_work {
    work w;
    fetch_job *job;              /* NULL once the job is gone (loop thread only) */
    size_t idx;
    uint8_t peer[MESH_ID_BYTES]; /* the source it came from */
    int fd;                      /* dup of the job's */
    uint64_t off;
    uint8_t expect[WEIGHTS_HASH_BYTES];
    uint8_t *data;
    uint32_t len;
    int result;                  /* 0 written, 1 hash mismatch, -errno on a write error */
    struct chunk_work *next;     /* the job's list of chunks being written */
} chunk_work;

static const char *peer_hex(const uint8_t id[MESH_ID_BYTES], char hex[WEIGHTS_HASH_HEX])
{
    weights_hex(id, hex);
    return hex;
}

static void job_log_name(const fetch_job *j, char *out, size_t cap)
{
    char hex[WEIGHTS_HASH_HEX];
    weights_hex(j->hash, hex);
    snprintf(out, cap, "%.12s layers [%d, %d)%s", hex, j->first, j->end, j->head ? "+head" : "");
}

/* How a slot lets go of its stream, which then gets idle handlers (no
 * callback reaches the job again). */
enum { LET_GO_ABORT, LET_GO_REJECT, LET_GO_FINISH };

static void slot_let_go(fetch_slot *sl, int how, const char *why)
{
    mesh_stream *s = sl->stream;
    if (!s) return;
    sl->stream = NULL;
    mesh_stream_set_handlers(s, &store_idle_handlers, NULL);
    if (how == LET_GO_FINISH) {
        mesh_stream_finish(s);
    } else if (how == LET_GO_REJECT) {
        sl->job->ws->counters.bad_frames++;
        mesh_stream_reject(s, why);
    } else {
        mesh_stream_abort(s);
    }
}

/* Lets go of the slot's stream and gives what it asked for back to the
 * others: a chunk nobody else asked for is missing again. The slot keeps
 * its peer, counters and backoff. */
static void slot_reset(fetch_slot *sl)
{
    fetch_job *j = sl->job;
    slot_let_go(sl, LET_GO_ABORT, NULL);
    if (sl->reading) {
        fetch_manifest_reader_free(&j->reader);
        sl->reading = 0;
    }
    uint8_t bit = (uint8_t)(1u << sl->index);
    for (size_t i = 0; i < j->n_chunks; i++) {
        part_chunk *c = &j->chunks[i];
        if (!(c->asked_by & bit)) continue;
        c->asked_by &= (uint8_t)~bit;
        if (c->state == CH_ASKED && !c->asked_by) {
            c->state = CH_MISSING;
            if (i < j->cursor) j->cursor = i;
        }
    }
    sl->ready = sl->outstanding = 0;
    sl->asked = 0;
}

static int job_live(const fetch_job *j)
{
    int n = 0;
    for (int i = 0; i < FETCH_MAX_STREAMS; i++) n += j->slots[i].stream != NULL;
    return n;
}

static fetch_slot *job_slot_of(fetch_job *j, const uint8_t id[MESH_ID_BYTES])
{
    for (int i = 0; i < FETCH_MAX_STREAMS; i++)
        if (j->slots[i].used && !memcmp(j->slots[i].peer, id, MESH_ID_BYTES)) return &j->slots[i];
    return NULL;
}

/* Lets go of every stream, timer, check and file; the job stays in memory. */
static void job_release(fetch_job *j)
{
    for (int i = 0; i < FETCH_MAX_STREAMS; i++) slot_reset(&j->slots[i]);
    if (j->retry) event_del(j->retry);
    if (j->tick) event_del(j->tick);
    if (j->check) {
        j->check->job = NULL;
        atomic_store(&j->check->w.cancel, 1);
        j->check = NULL;
    }
    if (j->finishing) {
        j->finishing->job = NULL; /* the part is still made durable and renamed */
        j->finishing = NULL;
    }
    for (struct chunk_work *c = j->writing_list; c; c = c->next) c->job = NULL; /* written, then dropped */
    j->writing_list = NULL;
    if (j->fd >= 0) close(j->fd);
    if (j->lock_fd >= 0) close(j->lock_fd);
    j->fd = j->lock_fd = -1;
}

static void job_unlink(fetch_job *j)
{
    for (fetch_job **p = &j->ws->jobs; *p; p = &(*p)->next)
        if (*p == j) {
            *p = j->next;
            break;
        }
}

static void job_free(fetch_job *j)
{
    job_release(j);
    if (j->retry) event_free(j->retry);
    if (j->tick) event_free(j->tick);
    fetch_manifest_reader_free(&j->reader);
    weights_manifest_free(j->manifest);
    free(j->wanted);
    free(j->first_chunk);
    free(j->chunks);
    free(j->final_path);
    free(j->part_path);
    free(j->record_path);
    free(j);
}

/* Ends the job: on_done to every handle still interested, then frees it. */
static void job_finish(fetch_job *j, const char *path, const char *error)
{
    char name[128];
    job_log_name(j, name, sizeof name);
    if (error) log_warn(WEIGHTS_LOG, "fetch %s failed: %s", name, error);
    job_unlink(j);
    job_release(j); /* before the callbacks: one of them may start the same part again */
    weights_fetch *h = j->handles;
    j->handles = NULL;
    j->dispatching++;
    while (h) {
        weights_fetch *next = h->next;
        if (!h->cancelled) h->cb.on_done(h->user, path, error);
        free(h);
        h = next;
    }
    job_free(j);
}

/* Frees cancelled handles; with none left, the job stops (no callbacks).
 * 1 when the job is gone. */
static int job_sweep(fetch_job *j)
{
    if (j->dispatching) return 0;
    for (weights_fetch **p = &j->handles; *p;) {
        weights_fetch *h = *p;
        if (h->cancelled) {
            *p = h->next;
            free(h);
        } else {
            p = &h->next;
        }
    }
    if (j->handles) return 0;
    char name[128];
    job_log_name(j, name, sizeof name);
    log_info(WEIGHTS_LOG, "fetch %s cancelled (%llu of %llu bytes kept for a resume)", name,
             (unsigned long long)j->done_bytes, (unsigned long long)j->total_bytes);
    job_unlink(j);
    job_free(j);
    return 1;
}

/* "a1b2c3d4e5f6 3.0 MiB, 0f1e2d3c4b5a 2.0 MiB": what each source sent. */
static void job_sources_text(const fetch_job *j, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    for (int i = 0; i < FETCH_MAX_STREAMS && n < cap; i++) {
        const fetch_slot *sl = &j->slots[i];
        if (!sl->used && !sl->bytes) continue;
        char hex[WEIGHTS_HASH_HEX];
        int w = snprintf(out + n, cap - n, "%s%.12s %.1f MiB", n ? ", " : "", peer_hex(sl->peer, hex),
                         sl->bytes / 1048576.0);
        if (w < 0) break;
        n += (size_t)w;
    }
}

/* 1 when the job is gone (every handle cancelled in the callbacks). */
static int job_progress(fetch_job *j)
{
    uint64_t now = clock_ms();
    if (now - j->logged_ms >= FETCH_LOG_EVERY_MS && j->total_bytes) {
        char name[128], from[256];
        job_log_name(j, name, sizeof name);
        job_sources_text(j, from, sizeof from);
        double secs = (double)(now - j->started_ms) / 1000.0;
        log_info(WEIGHTS_LOG, "fetch %s: %.0f%% of %.1f MiB, %.1f MiB/s (from %s)", name,
                 100.0 * (double)j->done_bytes / (double)j->total_bytes, j->total_bytes / 1048576.0,
                 secs > 0 ? (double)(j->done_bytes - j->resumed_bytes) / 1048576.0 / secs : 0.0, from);
        j->logged_ms = now;
    }
    j->dispatching++;
    for (weights_fetch *h = j->handles; h; h = h->next)
        if (!h->cancelled && h->cb.on_progress) h->cb.on_progress(h->user, j->done_bytes, j->total_bytes);
    j->dispatching--;
    return job_sweep(j);
}

/* ---- choosing sources ----------------------------------------------------------------------*/

static int job_shuns(const fetch_job *j, const uint8_t id[MESH_ID_BYTES])
{
    for (int i = 0; i < j->n_shunned; i++)
        if (!memcmp(j->shunned[i], id, MESH_ID_BYTES)) return 1;
    return 0;
}

/* The peers that may serve the part now, into out: the alive ones whose
 * record says they hold it (a full file or a cached part covering the
 * range), then the peer the caller named, whether its record says so or
 * not (it may hold the file without having said so yet), less the shunned
 * ones. The named peer comes last: it is usually the coordinator, busy
 * computing stage 0, and the others spread the load. */
static int job_sources(const fetch_job *j, uint8_t (*out)[MESH_ID_BYTES], int max)
{
    static mesh_peer peers[FETCH_MAX_PEERS];           /* loop thread only: not on its stack */
    static uint8_t buf[MESH_MAX_HOLDINGS];
    fetch_holding held[FETCH_MAX_HOLDINGS];
    int n = 0;
    int np = j->ws->mesh ? mesh_peers(j->ws->mesh, peers, FETCH_MAX_PEERS) : 0;
    for (int i = 0; i < np && i < FETCH_MAX_PEERS && n < max - 1; i++) {
        uint8_t id[MESH_ID_BYTES];
        char why[160];
        if (strcmp(peers[i].state, "alive") != 0 || weights_parse_hex(peers[i].id, id) != 0 ||
            !memcmp(id, j->named, MESH_ID_BYTES) || job_shuns(j, id))
            continue;
        int len = mesh_node_holdings(j->ws->mesh, id, buf, sizeof buf);
        int nh = len > 0 ? fetch_holdings_decode(buf, (size_t)len, held, FETCH_MAX_HOLDINGS, why, sizeof why) : 0;
        for (int k = 0; k < nh; k++)
            if (fetch_holding_covers(&held[k], j->hash, (uint32_t)j->first, (uint32_t)j->end, j->head)) {
                memcpy(out[n++], id, MESH_ID_BYTES);
                break;
            }
    }
    if (n < max && !job_shuns(j, j->named)) memcpy(out[n++], j->named, MESH_ID_BYTES);
    return n;
}

/* Stops asking this peer (it refused the part or sent bad chunks): its
 * stream goes and its slot is freed. 1 when another source is left. */
static int job_shun(fetch_job *j, const uint8_t id[MESH_ID_BYTES])
{
    if (!job_shuns(j, id) && j->n_shunned < FETCH_MAX_SHUNNED) memcpy(j->shunned[j->n_shunned++], id, MESH_ID_BYTES);
    fetch_slot *sl = job_slot_of(j, id);
    if (sl) {
        slot_reset(sl);
        sl->used = 0;
    }
    uint8_t ids[FETCH_MAX_SOURCES][MESH_ID_BYTES];
    return job_live(j) > 0 || job_sources(j, ids, FETCH_MAX_SOURCES) > 0;
}

static void job_schedule(fetch_job *j, int delay_ms)
{
    struct timeval tv = {delay_ms / 1000, (delay_ms % 1000) * 1000};
    evtimer_add(j->retry, &tv);
}

/* The manifest is in: the other sources get a stream now (job_connect on
 * the next loop turn). */
static void job_widen(fetch_job *j)
{
    event_del(j->retry);
    job_schedule(j, 0);
}

static int backoff_ms(const weights_store *ws, int failures)
{
    int delay = failures > 0 && failures < 20 ? ws->retry_base_ms << (failures - 1) : FETCH_RETRY_CAP_MS;
    return delay > FETCH_RETRY_CAP_MS || delay <= 0 ? FETCH_RETRY_CAP_MS : delay;
}

/* No stream is left: try again after a backoff, or give up. 1 when the job is gone. */
static int job_retry(fetch_job *j, const char *why)
{
    weights_store *ws = j->ws;
    snprintf(j->last_error, sizeof j->last_error, "%s", why);
    for (int i = 0; i < FETCH_MAX_STREAMS; i++) {
        slot_reset(&j->slots[i]);
        j->slots[i].next_ms = 0; /* the job's backoff decides now */
    }
    j->cursor = 0;
    char peer[WEIGHTS_HASH_HEX], msg[400];
    peer_hex(j->peer, peer);
    if (++j->attempts >= ws->max_attempts) {
        snprintf(msg, sizeof msg, "fetch from peer %.16s: gave up after %d attempts: %s", peer, j->attempts, why);
        job_finish(j, NULL, msg);
        return 1;
    }
    int delay = backoff_ms(ws, j->attempts);
    char name[128];
    job_log_name(j, name, sizeof name);
    log_info(WEIGHTS_LOG, "fetch %s from %.12s: %s; again in %d ms (attempt %d of %d)", name, peer, why, delay,
             j->attempts + 1, ws->max_attempts);
    job_schedule(j, delay);
    return 0;
}

static int job_pump(fetch_job *j);

/* The slot's stream failed (broke, refused for now, stalled, malformed).
 * With other streams going, they take its chunks and its peer is asked
 * again after a backoff (given up on after max_attempts in a row); with
 * none, the job retries. 1 when the job is gone. */
static int slot_fail(fetch_slot *sl, const char *why)
{
    fetch_job *j = sl->job;
    weights_store *ws = j->ws;
    slot_reset(sl);
    if (!job_live(j)) {
        memcpy(j->peer, sl->peer, MESH_ID_BYTES);
        return job_retry(j, why);
    }
    char name[128], peer[WEIGHTS_HASH_HEX];
    job_log_name(j, name, sizeof name);
    peer_hex(sl->peer, peer);
    if (++sl->fails >= ws->max_attempts) {
        log_info(WEIGHTS_LOG, "fetch %s: %.12s: %s; not asked again (%d failures), the others go on", name, peer, why,
                 sl->fails);
        job_shun(j, sl->peer);
    } else {
        int delay = backoff_ms(ws, sl->fails);
        log_info(WEIGHTS_LOG, "fetch %s: %.12s: %s; the others take its chunks, it again in %d ms", name, peer, why,
                 delay);
        sl->next_ms = clock_ms() + (uint64_t)delay;
        if (!evtimer_pending(j->retry, NULL)) job_schedule(j, delay);
    }
    return job_pump(j);
}

/* The peer broke the protocol: reset (code 2), counted, and dropped like a failure. */
static int slot_protocol_error(fetch_slot *sl, const char *why)
{
    slot_let_go(sl, LET_GO_REJECT, why);
    char msg[200];
    snprintf(msg, sizeof msg, "malformed answer: %s", why);
    return slot_fail(sl, msg);
}

static int job_fail_write(fetch_job *j, const char *what, const char *path)
{
    char msg[PATH_MAX + 100];
    snprintf(msg, sizeof msg, "cannot %s %s: %s", what, path, strerror(errno));
    job_finish(j, NULL, msg);
    return 1;
}

static uint32_t job_ms(const fetch_job *j) { return (uint32_t)(clock_ms() - j->started_ms); }

/* The next chunk for sl: the first missing one in file order; when none is
 * missing (the endgame), the first one asked elsewhere, not here, at least
 * FETCH_ENDGAME_MS ago, so a slow or dead source does not hold up the end
 * while a healthy one finishing its last chunks is not doubled. SIZE_MAX
 * when none. */
static size_t job_next_chunk(fetch_job *j, const fetch_slot *sl)
{
    while (j->cursor < j->n_chunks && j->chunks[j->cursor].state != CH_MISSING) j->cursor++;
    if (j->cursor < j->n_chunks) return j->cursor;
    uint8_t bit = (uint8_t)(1u << sl->index);
    uint32_t now = job_ms(j);
    for (size_t i = 0; i < j->n_chunks; i++) {
        const part_chunk *c = &j->chunks[i];
        if (c->state == CH_ASKED && !(c->asked_by & bit) && now - c->asked_ms >= FETCH_ENDGAME_MS) return i;
    }
    return SIZE_MAX;
}

/* Asks for chunks on every ready stream, one chunk per stream in turn,
 * while each stream's window has room and the disk keeps up. 1 when the
 * job is gone. */
static int job_pump(fetch_job *j)
{
    uint64_t window = j->ws->window_bytes;
    if (!j->manifest || j->check || j->finishing) return 0;
    for (int asked = 1; asked;) {
        asked = 0;
        for (int i = 0; i < FETCH_MAX_STREAMS; i++) {
            fetch_slot *sl = &j->slots[i];
            if (!sl->stream || !sl->ready || sl->outstanding >= FETCH_MAX_OUTSTANDING) continue;
            size_t idx = job_next_chunk(j, sl);
            if (idx == SIZE_MAX) continue;
            part_chunk *c = &j->chunks[idx];
            if (sl->asked && sl->asked + c->len > window) continue;
            if (j->writing && j->writing + c->len > window) return 0; /* the disk is behind */
            uint8_t get[FETCH_GET_BYTES];
            fetch_get_encode(get, c->tensor, c->chunk);
            if (mesh_stream_send(sl->stream, get, sizeof get) < 0) return slot_fail(sl, "cannot send on the stream");
            c->state = CH_ASKED;
            c->asked_by |= (uint8_t)(1u << sl->index);
            c->asked_ms = job_ms(j);
            sl->asked += c->len;
            sl->outstanding++;
            if (sl->outstanding == 1) sl->last_ms = clock_ms(); /* the stall clock starts */
            asked = 1;
        }
    }
    return 0;
}

/* Every FETCH_TICK_MS: a stream with chunks out and nothing back for
 * FETCH_STALL_MS while another stream works is dropped (its chunks go to
 * the others; a peer killed without a word is not seen by the transport for
 * much longer). The only stream is left to the transport's timeouts. Then
 * the endgame, for chunks that have waited long enough since. */
static void job_on_tick(evutil_socket_t fd, short what, void *arg)
{
    fetch_job *j = arg;
    uint64_t now = clock_ms();
    for (int i = 0; i < FETCH_MAX_STREAMS; i++) {
        fetch_slot *sl = &j->slots[i];
        if (!sl->stream || !sl->outstanding || now - sl->last_ms < FETCH_STALL_MS || job_live(j) < 2) continue;
        char why[80];
        snprintf(why, sizeof why, "no chunk for %d s", FETCH_STALL_MS / 1000);
        if (slot_fail(sl, why)) return;
    }
    job_pump(j); /* chunks out long enough for the endgame */
}

/* Making a finished part durable runs on the sync lane: fsync of gigabytes
 * written moments ago can take seconds, which the loop thread (probes,
 * stage frames) must not wait for. */

static void final_run(work *w)
{
    final_work *f = (final_work *)w;
    char why[512];
    if (fsync(f->fd) != 0) {
        snprintf(f->error, sizeof f->error, "cannot sync %s: %s", f->part, strerror(errno));
        return;
    }
    /* The pages are clean now: drop them, so that the stage maps pages the
     * kernel reads back through readahead (large folios) rather than the
     * ones our chunked pwrites left. Measured on the development VM (kernel
     * 6.18, ext4): stage compute over 12 layers of the bench model 14.7 ms
     * per token on the written pages, 12.2 ms after they were read back
     * (docs/weights.md, "Page cache after a fetch"). Advice only: a kernel
     * that ignores it costs speed, never data. */
    posix_fadvise(f->fd, 0, 0, POSIX_FADV_DONTNEED);
    if (rename(f->part, f->final) != 0) {
        snprintf(f->error, sizeof f->error, "cannot rename %s: %s", f->part, strerror(errno));
        return;
    }
    /* The record says "this file, unchanged, holds verified chunks": the
     * next start trusts it without hashing, as it trusts local full files.
     * Without it the part is checked chunk by chunk again. */
    if (store_write_file(f->record, f->rec, f->rec_len, why, sizeof why) < 0)
        log_warn(WEIGHTS_LOG, "cannot record %s (it will be checked again next time): %s", f->final, why);
    gguf_file *g = gguf_open(f->final, why, sizeof why);
    if (!g) {
        unlink(f->final);
        unlink(f->record);
        snprintf(f->error, sizeof f->error, "the fetched part does not open: %s", why);
        return;
    }
    gguf_close(g);
}

static void final_drop(work *w)
{
    final_work *f = (final_work *)w;
    if (f->fd >= 0) close(f->fd);
    free(f->part);
    free(f->final);
    free(f->record);
    free(f->rec);
    free(f);
}

static void final_done(weights_store *ws, work *w)
{
    final_work *f = (final_work *)w;
    fetch_job *j = f->job;
    if (j) {
        j->finishing = NULL;
        if (f->error[0]) {
            job_finish(j, NULL, f->error);
        } else {
            char name[128], from[256];
            job_log_name(j, name, sizeof name);
            job_sources_text(j, from, sizeof from);
            double secs = (double)(clock_ms() - j->started_ms) / 1000.0;
            uint64_t moved = j->done_bytes - j->resumed_bytes;
            log_info(WEIGHTS_LOG,
                     "fetched %s: %.1f MiB in %.1f s (%.1f MiB/s; %.1f MiB were on disk, %.1f MiB came twice) from %s -> %s",
                     name, moved / 1048576.0, secs, secs > 0 ? moved / 1048576.0 / secs : 0.0,
                     j->resumed_bytes / 1048576.0, j->duplicate_bytes / 1048576.0, from[0] ? from : "nobody",
                     j->final_path);
            if (store_add_part(ws, j->hash, j->first, j->end, j->head, j->final_path) < 0)
                log_warn(WEIGHTS_LOG, "%s: its record does not read back: not served to peers", j->final_path);
            job_finish(j, j->final_path, NULL);
        }
    }
    final_drop(w);
}

/* Every chunk is in: end the streams, then sync, rename and record on the
 * sync lane; on_done follows from there. */
static void job_complete(fetch_job *j)
{
    for (int i = 0; i < FETCH_MAX_STREAMS; i++) slot_let_go(&j->slots[i], LET_GO_FINISH, NULL);
    event_del(j->tick);
    final_work *f = calloc(1, sizeof *f);
    fetch_file_key key;
    if (f) {
        f->fd = dup(j->fd);
        f->part = strdup(j->part_path);
        f->final = strdup(j->final_path);
        f->record = strdup(j->record_path);
    }
    /* The key taken now stays true: size, mtime, inode and device do not
     * change with fsync or rename. */
    if (!f || f->fd < 0 || !f->part || !f->final || !f->record || store_file_key(j->fd, j->final_path, &key) < 0 ||
        !(f->rec = fetch_manifest_file_encode(j->manifest, j->wanted, &key, &f->rec_len))) {
        if (f) final_drop(&f->w);
        job_finish(j, NULL, "out of memory finishing the part");
        return;
    }
    f->w.run = final_run;
    f->w.done = final_done;
    f->w.drop = final_drop;
    f->job = j;
    j->finishing = f;
    store_submit(j->ws, &f->w, STORE_LANE_SYNC);
}

/* ---- checking a partial file on resume (worker thread) --------------------------------------*/

static void check_run(work *w)
{
    check_work *c = (check_work *)w;
    if (weights_hash_pieces(c->fd, NULL, c->n, c->offsets, c->lens, c->got, 0, &w->cancel) < 0) c->failed = 1;
}

static void check_drop(work *w)
{
    check_work *c = (check_work *)w;
    if (c->fd >= 0) close(c->fd);
    free(c->offsets);
    free(c->lens);
    free(c->expect);
    free(c->got);
    free(c);
}

static void check_done(weights_store *ws, work *w)
{
    check_work *c = (check_work *)w;
    fetch_job *j = c->job;
    if (!j) {
        check_drop(w);
        return;
    }
    j->check = NULL;
    size_t found = 0;
    for (size_t i = 0; i < c->n && !c->failed; i++)
        if (!memcmp(c->got[i], c->expect[i], WEIGHTS_HASH_BYTES)) {
            j->chunks[i].state = CH_DONE;
            j->done_bytes += j->chunks[i].len;
            j->n_done++;
            found++;
        }
    check_drop(w);
    j->resumed_bytes = j->done_bytes;
    j->cursor = 0;
    char name[128];
    job_log_name(j, name, sizeof name);
    if (found) {
        ws->counters.fetches_resumed++;
        log_info(WEIGHTS_LOG, "fetch %s: resuming, %zu of %zu chunks (%.1f of %.1f MiB) on disk are good", name,
                 found, j->n_chunks, j->done_bytes / 1048576.0, j->total_bytes / 1048576.0);
    }
    if (job_progress(j)) return;
    if (j->n_done == j->n_chunks) {
        job_complete(j);
        return;
    }
    job_widen(j);
    job_pump(j);
}

/* ---- the manifest and the part file --------------------------------------------------------*/

/* Lays the part out from the checked manifest. 1 when a file with this
 * very layout is there already (its chunks want checking), 0 for a fresh
 * file, -1 with err. */
static int job_layout(fetch_job *j, char *err, size_t errlen)
{
    const weights_manifest *m = j->manifest;
    j->wanted = malloc(m->n_tensors);
    j->first_chunk = malloc(m->n_tensors * sizeof *j->first_chunk);
    uint64_t *offsets = malloc(m->n_tensors * sizeof *offsets);
    uint8_t *header = NULL, *there = NULL;
    size_t header_len = 0;
    uint64_t file_size = 0;
    int rc = -1;
    if (!j->wanted || !j->first_chunk || !offsets) {
        err_set(err, errlen, "out of memory");
        goto out;
    }
    if (weights_select(m, j->first, j->end, j->head, j->wanted, err, errlen) < 0) goto out;
    if (weights_part_layout(m, j->wanted, &header, &header_len, offsets, &file_size, err, errlen) < 0) goto out;
    size_t n = 0;
    for (uint32_t i = 0; i < m->n_tensors; i++) n += j->wanted[i] ? m->tensors[i].n_chunks : 0;
    j->chunks = calloc(n ? n : 1, sizeof *j->chunks);
    if (!j->chunks) {
        err_set(err, errlen, "out of memory");
        goto out;
    }
    j->n_chunks = n;
    n = 0;
    for (uint32_t i = 0; i < m->n_tensors; i++) {
        const weights_tensor *t = &m->tensors[i];
        j->first_chunk[i] = j->wanted[i] ? (uint32_t)n : UINT32_MAX;
        if (!j->wanted[i]) continue;
        for (uint32_t c = 0; c < t->n_chunks; c++, n++) {
            part_chunk *pc = &j->chunks[n];
            pc->tensor = i;
            pc->chunk = c;
            pc->file_off = offsets[i] + weights_chunk_offset(m, c);
            pc->len = weights_chunk_len(m, t, c);
            j->total_bytes += pc->len;
        }
    }
    struct stat st;
    if (fstat(j->fd, &st) != 0) goto io;
    if ((uint64_t)st.st_size == file_size && (there = malloc(header_len)) &&
        pread(j->fd, there, header_len, 0) == (ssize_t)header_len && !memcmp(there, header, header_len)) {
        rc = 1;
        goto out;
    }
    /* A fresh file: the header, then holes that the chunks fill. */
    if (ftruncate(j->fd, 0) != 0 || pwrite(j->fd, header, header_len, 0) != (ssize_t)header_len ||
        ftruncate(j->fd, (off_t)file_size) != 0)
        goto io;
    /* Reserve the blocks now: a disk without room fails here, at once, not
     * after an hour of transfer. (Filesystems without fallocate just skip it.) */
    if (fallocate(j->fd, 0, 0, (off_t)file_size) != 0 && errno == ENOSPC) goto io;
    rc = 0;
    goto out;
io:
    err_set(err, errlen, "cannot write %s: %s", j->part_path, strerror(errno));
out:
    free(there);
    free(header);
    free(offsets);
    return rc;
}

static int job_start_check(fetch_job *j)
{
    check_work *c = calloc(1, sizeof *c);
    size_t n = j->n_chunks ? j->n_chunks : 1;
    if (c) {
        c->fd = dup(j->fd);
        c->offsets = malloc(n * sizeof *c->offsets);
        c->lens = malloc(n * sizeof *c->lens);
        c->expect = malloc(n * sizeof *c->expect);
        c->got = malloc(n * sizeof *c->got);
    }
    if (!c || c->fd < 0 || !c->offsets || !c->lens || !c->expect || !c->got) {
        if (c) check_drop(&c->w);
        return -1;
    }
    c->w.run = check_run;
    c->w.done = check_done;
    c->w.drop = check_drop;
    c->job = j;
    c->n = j->n_chunks;
    for (size_t i = 0; i < j->n_chunks; i++) {
        const part_chunk *pc = &j->chunks[i];
        c->offsets[i] = pc->file_off;
        c->lens[i] = pc->len;
        memcpy(c->expect[i], j->manifest->tensors[pc->tensor].chunks[pc->chunk], WEIGHTS_HASH_BYTES);
    }
    j->check = c;
    store_submit(j->ws, &c->w, STORE_LANE_HASH);
    return 0;
}

/* READY after a manifest on sl's stream: check it, lay the part out, then
 * fetch (or check what is on disk first). 1 when the job is gone. */
static int job_take_manifest(fetch_slot *sl)
{
    fetch_job *j = sl->job;
    char why[300], msg[400], peer[WEIGHTS_HASH_HEX];
    peer_hex(sl->peer, peer);
    weights_manifest *m = fetch_manifest_reader_take(&j->reader);
    fetch_manifest_reader_free(&j->reader);
    sl->reading = 0;
    assert(m);
    int bad = memcmp(m->model_hash, j->hash, WEIGHTS_HASH_BYTES) != 0;
    if (bad) snprintf(why, sizeof why, "it names another model");
    else bad = weights_manifest_finish(m, 0, why, sizeof why) < 0;
    if (bad) {
        /* Hashes that do not match are a refusal of the peer, not of the
         * stream: counted, reset, and not retried (it would send the same). */
        weights_manifest_free(m);
        slot_let_go(sl, LET_GO_REJECT, "manifest does not verify");
        snprintf(msg, sizeof msg, "peer %.16s sent a manifest that does not verify: %s", peer, why);
        job_finish(j, NULL, msg);
        return 1;
    }
    j->manifest = m;
    int rc = job_layout(j, why, sizeof why);
    if (rc < 0) {
        snprintf(msg, sizeof msg, "%s", why);
        job_finish(j, NULL, msg);
        return 1;
    }
    if (rc == 1 && j->n_chunks) {
        if (job_start_check(j) < 0) {
            job_finish(j, NULL, "out of memory");
            return 1;
        }
        return 0;
    }
    if (job_progress(j)) return 1;
    if (j->n_chunks == 0) {
        job_complete(j);
        return 1;
    }
    job_widen(j);
    return 0;
}

static void chunk_run(work *w)
{
    chunk_work *c = (chunk_work *)w;
    uint8_t h[WEIGHTS_HASH_BYTES];
    weights_sha256(c->data, c->len, h);
    if (memcmp(h, c->expect, sizeof h) != 0) {
        c->result = 1;
        return;
    }
    size_t done = 0;
    while (done < c->len) {
        ssize_t n = pwrite(c->fd, c->data + done, c->len - done, (off_t)(c->off + done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            c->result = n < 0 ? -errno : -ENOSPC;
            return;
        }
        done += (size_t)n;
    }
    /* Start writing it out now, so that dirty pages do not pile up for the
     * final fsync (which would then write the whole part at once). */
    sync_file_range(c->fd, (off_t)c->off, c->len, SYNC_FILE_RANGE_WRITE);
}

static void chunk_drop(work *w)
{
    chunk_work *c = (chunk_work *)w;
    if (c->fd >= 0) close(c->fd);
    free(c->data);
    free(c);
}

/* Verified bytes from a peer, in the store's tally (the peers fetched from
 * last; the oldest entry makes room). */
static void tally_add(weights_store *ws, const uint8_t peer[MESH_ID_BYTES], uint64_t bytes)
{
    int i = 0;
    while (i < ws->n_fetched_from && memcmp(ws->fetched_from[i].peer, peer, MESH_ID_BYTES)) i++;
    weights_source_bytes e = {.bytes = bytes};
    memcpy(e.peer, peer, MESH_ID_BYTES);
    if (i < ws->n_fetched_from) e.bytes += ws->fetched_from[i].bytes;
    else if (ws->n_fetched_from < FETCH_MAX_TALLY) ws->n_fetched_from++;
    else i = FETCH_MAX_TALLY - 1;
    memmove(&ws->fetched_from[1], &ws->fetched_from[0], (size_t)i * sizeof e); /* most recent first */
    ws->fetched_from[0] = e;
}

static void chunk_done(weights_store *ws, work *w)
{
    chunk_work *cw = (chunk_work *)w;
    fetch_job *j = cw->job;
    if (!j) {
        chunk_drop(w);
        return;
    }
    for (chunk_work **p = &j->writing_list; *p; p = &(*p)->next)
        if (*p == cw) {
            *p = cw->next;
            break;
        }
    size_t idx = cw->idx;
    int result = cw->result;
    uint8_t from[MESH_ID_BYTES];
    memcpy(from, cw->peer, MESH_ID_BYTES);
    chunk_drop(w);
    part_chunk *c = &j->chunks[idx];
    const weights_tensor *t = &j->manifest->tensors[c->tensor];
    fetch_slot *sl = job_slot_of(j, from);
    j->writing -= c->len;
    if (result < 0) {
        errno = -result;
        job_fail_write(j, "write", j->part_path);
        return;
    }
    if (result == 1) {
        char peer[WEIGHTS_HASH_HEX], msg[300];
        peer_hex(from, peer);
        ws->counters.bad_chunks++;
        int bad = sl ? ++sl->bad : FETCH_MAX_BAD_CHUNKS;
        c->state = c->asked_by ? CH_ASKED : CH_MISSING; /* another stream's copy may still come */
        if (c->state == CH_MISSING && idx < j->cursor) j->cursor = idx;
        log_warn(WEIGHTS_LOG, "chunk %u of %s from %.16s does not match its hash (%d so far)", c->chunk, t->name,
                 peer, bad);
        if (bad >= FETCH_MAX_BAD_CHUNKS) {
            snprintf(msg, sizeof msg, "peer %.16s sent %d chunks that do not match their hashes: giving up on it",
                     peer, bad);
            memcpy(j->peer, from, MESH_ID_BYTES);
            if (!job_shun(j, from)) job_finish(j, NULL, msg);
            else if (!job_live(j)) job_retry(j, msg);
            else job_pump(j);
            return;
        }
        job_pump(j);
        return;
    }
    c->state = CH_DONE;
    j->n_done++;
    j->done_bytes += c->len;
    ws->counters.fetched_bytes += c->len;
    tally_add(ws, from, c->len);
    if (sl) {
        sl->bytes += c->len;
        sl->fails = 0;
    }
    j->attempts = 0; /* progress: a later failure starts a new series */
    if (job_progress(j)) return;
    if (j->n_done == j->n_chunks) {
        job_complete(j);
        return;
    }
    job_pump(j);
}

/* Makes what was written so far durable, on the hash lane (idle while a
 * fetch runs), in parallel with the writes: on this VM's disk an fsync costs
 * ~0.3 s per 0.5 GB written since the last one, even with the pages already
 * written out, so one fsync at the end would add ~5% to every fetch. */
typedef struct {
    work w;
    int fd;
} flush_work;

static void flush_run(work *w) { fdatasync(((flush_work *)w)->fd); }

static void flush_drop(work *w)
{
    close(((flush_work *)w)->fd);
    free(w);
}

static void flush_done(weights_store *ws, work *w) { flush_drop(w); }

static void flush_submit(fetch_job *j)
{
    flush_work *f = calloc(1, sizeof *f);
    if (!f) return;
    f->fd = dup(j->fd);
    if (f->fd < 0) {
        free(f);
        return;
    }
    f->w.run = flush_run;
    f->w.done = flush_done;
    f->w.drop = flush_drop;
    store_submit(j->ws, &f->w, STORE_LANE_HASH);
}

static int slot_on_data(fetch_slot *sl, const fetch_answer *a)
{
    fetch_job *j = sl->job;
    const weights_manifest *m = j->manifest;
    if (!sl->ready || !m || j->check) return slot_protocol_error(sl, "DATA before READY");
    if (a->tensor >= m->n_tensors || j->first_chunk[a->tensor] == UINT32_MAX ||
        a->chunk >= m->tensors[a->tensor].n_chunks)
        return slot_protocol_error(sl, "DATA for a chunk outside the part");
    size_t idx = (size_t)j->first_chunk[a->tensor] + a->chunk;
    part_chunk *c = &j->chunks[idx];
    uint8_t bit = (uint8_t)(1u << sl->index);
    if (!(c->asked_by & bit)) return slot_protocol_error(sl, "DATA for a chunk not asked for");
    if (a->len != c->len) return slot_protocol_error(sl, "DATA of the wrong size");
    c->asked_by &= (uint8_t)~bit;
    sl->outstanding--;
    sl->asked -= c->len;
    sl->last_ms = clock_ms();
    if (c->state != CH_ASKED) { /* the endgame: another stream's copy came first */
        j->duplicate_bytes += c->len;
        return job_pump(j);
    }
    chunk_work *cw = calloc(1, sizeof *cw);
    if (cw) {
        cw->fd = dup(j->fd);
        cw->data = malloc(a->len);
    }
    if (!cw || cw->fd < 0 || !cw->data) {
        if (cw) chunk_drop(&cw->w);
        job_finish(j, NULL, "out of memory for a chunk");
        return 1;
    }
    cw->w.run = chunk_run;
    cw->w.done = chunk_done;
    cw->w.drop = chunk_drop;
    cw->job = j;
    cw->idx = idx;
    memcpy(cw->peer, sl->peer, MESH_ID_BYTES);
    cw->off = c->file_off;
    cw->len = c->len;
    memcpy(cw->expect, m->tensors[a->tensor].chunks[a->chunk], WEIGHTS_HASH_BYTES);
    memcpy(cw->data, a->data, a->len);
    cw->next = j->writing_list;
    j->writing_list = cw;
    c->state = CH_WRITING;
    j->writing += c->len;
    store_submit(j->ws, &cw->w, STORE_LANE_SYNC);
    j->unsynced += c->len;
    if (j->unsynced >= FETCH_SYNC_EVERY) {
        j->unsynced = 0;
        flush_submit(j);
    }
    return job_pump(j);
}

static void slot_refused(fetch_slot *sl, const fetch_answer *a)
{
    fetch_job *j = sl->job;
    char peer[WEIGHTS_HASH_HEX], msg[400];
    snprintf(msg, sizeof msg, "peer %.16s: %s", peer_hex(sl->peer, peer), a->text);
    /* A refusal that would not change: that peer is not asked again; the
     * fetch ends with its words when no other source is left, else the
     * others go on (or are asked, as a retry, so the attempts stay bounded). */
    if (a->code == FETCH_ERR_UNKNOWN_MODEL || a->code == FETCH_ERR_BAD_RANGE) {
        uint8_t id[MESH_ID_BYTES];
        memcpy(id, sl->peer, MESH_ID_BYTES);
        memcpy(j->peer, id, MESH_ID_BYTES);
        if (!job_shun(j, id)) job_finish(j, NULL, msg);
        else if (!job_live(j)) job_retry(j, msg);
        else job_pump(j);
        return;
    }
    slot_fail(sl, msg);
}

static void client_frame(void *user, mesh_stream *s, const uint8_t *p, size_t len)
{
    fetch_slot *sl = user;
    fetch_job *j = sl->job;
    fetch_answer a;
    char why[160];
    if (fetch_answer_decode(p, len, &a, why, sizeof why) < 0) {
        slot_protocol_error(sl, why);
        return;
    }
    switch (a.kind) {
    case FETCH_ERROR:
        slot_refused(sl, &a);
        return;
    case FETCH_READY:
        if (sl->ready) {
            slot_protocol_error(sl, "a second READY");
            return;
        }
        if (sl->reading) {
            if (!fetch_manifest_reader_complete(&j->reader)) {
                slot_protocol_error(sl, "READY before the manifest is complete");
                return;
            }
            sl->ready = 1;
            if (job_take_manifest(sl)) return;
        } else if (!j->manifest) {
            slot_protocol_error(sl, "READY without a manifest");
            return;
        }
        sl->ready = 1;
        job_pump(j);
        return;
    case FETCH_DATA:
        slot_on_data(sl, &a);
        return;
    default: /* manifest frames */
        if (!sl->reading) {
            slot_protocol_error(sl, "manifest frames not asked for");
            return;
        }
        if (fetch_manifest_reader_feed(&j->reader, p, len) < 0) slot_protocol_error(sl, j->reader.error);
        return;
    }
}

static void client_fin(void *user, mesh_stream *s) { slot_fail(user, "the peer ended the stream early"); }

static void client_close(void *user, mesh_stream *s, const char *error)
{
    fetch_slot *sl = user;
    sl->stream = NULL; /* freed after we return */
    slot_fail(sl, error ? error : "the stream closed");
}

static const mesh_stream_handlers client_handlers = {client_frame, client_fin, client_close};

/* Opens a stream to peer on sl (OPEN, with the manifest asked for when the
 * job has none yet). 0, or -1 with err. */
static int slot_open(fetch_slot *sl, const uint8_t peer[MESH_ID_BYTES], char *err, size_t errlen)
{
    fetch_job *j = sl->job;
    assert(!sl->stream);
    if (!sl->used || memcmp(sl->peer, peer, MESH_ID_BYTES)) {
        memset(sl, 0, sizeof *sl);
        sl->job = j;
        sl->index = (int)(sl - j->slots);
        sl->used = 1;
        memcpy(sl->peer, peer, MESH_ID_BYTES);
        char name[128], hex[WEIGHTS_HASH_HEX];
        job_log_name(j, name, sizeof name);
        log_info(WEIGHTS_LOG, "fetch %s: asking %.12s%s", name, peer_hex(peer, hex),
                 memcmp(j->named, peer, MESH_ID_BYTES) ? ", which says it holds it" : " (the peer named)");
    }
    memcpy(j->peer, peer, MESH_ID_BYTES);
    mesh_stream *s = mesh_stream_open(j->ws->mesh, peer, MESH_STREAM_FETCH, &client_handlers, sl, err, errlen);
    if (!s) return -1;
    sl->stream = s;
    sl->ready = 0;
    sl->last_ms = clock_ms();
    uint8_t flags = j->head ? FETCH_FLAG_HEAD : 0;
    if (j->manifest) {
        flags |= FETCH_FLAG_NO_MANIFEST;
    } else {
        fetch_manifest_reader_free(&j->reader);
        fetch_manifest_reader_init(&j->reader);
        sl->reading = 1;
    }
    uint8_t open[FETCH_OPEN_BYTES];
    fetch_open_encode(open, j->hash, (uint32_t)j->first, (uint32_t)j->end, flags);
    if (mesh_stream_send(s, open, sizeof open) < 0) {
        slot_reset(sl);
        snprintf(err, errlen, "cannot send on the stream");
        return -1;
    }
    return 0;
}

/* A slot for peer: its own, else one without a peer, else one whose peer
 * has no stream and is no longer a source. NULL when all are busy. */
static fetch_slot *job_slot_for(fetch_job *j, const uint8_t peer[MESH_ID_BYTES], uint8_t (*ids)[MESH_ID_BYTES],
                                int n)
{
    fetch_slot *sl = job_slot_of(j, peer);
    if (sl) return sl;
    for (int i = 0; i < FETCH_MAX_STREAMS; i++)
        if (!j->slots[i].used) return &j->slots[i];
    for (int i = 0; i < FETCH_MAX_STREAMS; i++) {
        fetch_slot *o = &j->slots[i];
        int source = 0;
        for (int k = 0; k < n && !source; k++) source = !memcmp(ids[k], o->peer, MESH_ID_BYTES);
        if (!o->stream && !source) return o;
    }
    return NULL;
}

/* Opens streams: without a manifest, one, to the next source in turn (a
 * source that failed is followed by another); with it, one to every source
 * up to FETCH_MAX_STREAMS, except those waiting out a backoff (the timer
 * comes back for them). With no stream open in the end, a retry. */
static void job_connect(fetch_job *j)
{
    uint8_t ids[FETCH_MAX_SOURCES][MESH_ID_BYTES];
    int n = job_sources(j, ids, FETCH_MAX_SOURCES);
    char err[256] = "";
    if (!j->manifest) {
        if (job_live(j)) return; /* the manifest is on its way */
        if (n == 0) {
            job_finish(j, NULL, j->last_error[0] ? j->last_error : "no peer holds this part");
            return;
        }
        const uint8_t *id = ids[j->turn++ % (unsigned)n];
        fetch_slot *sl = job_slot_for(j, id, ids, n);
        if (sl && slot_open(sl, id, err, sizeof err) == 0) return;
        memcpy(j->peer, id, MESH_ID_BYTES);
        job_retry(j, err[0] ? err : "no free stream slot");
        return;
    }
    uint64_t now = clock_ms(), wait = UINT64_MAX;
    for (int k = 0; k < n; k++) {
        fetch_slot *sl = job_slot_for(j, ids[k], ids, n);
        if (!sl || sl->stream) continue;
        if (sl->used && !memcmp(sl->peer, ids[k], MESH_ID_BYTES) && sl->next_ms > now) {
            if (sl->next_ms - now < wait) wait = sl->next_ms - now;
            continue;
        }
        if (slot_open(sl, ids[k], err, sizeof err) < 0) {
            sl->fails++;
            sl->next_ms = now + (uint64_t)backoff_ms(j->ws, sl->fails);
            if ((uint64_t)backoff_ms(j->ws, sl->fails) < wait) wait = (uint64_t)backoff_ms(j->ws, sl->fails);
            memcpy(j->peer, ids[k], MESH_ID_BYTES);
        }
    }
    if (!job_live(j)) {
        if (n == 0) job_finish(j, NULL, j->last_error[0] ? j->last_error : "no peer holds this part");
        else job_retry(j, err[0] ? err : "every source is waiting out a backoff");
        return;
    }
    if (wait != UINT64_MAX) job_schedule(j, (int)wait);
    job_pump(j);
}

static void job_on_retry(evutil_socket_t fd, short what, void *arg) { job_connect(arg); }

/* ---- the API ------------------------------------------------------------------------------*/

static void answer_unlink(weights_fetch *h)
{
    for (weights_fetch **p = &h->ws->answers; *p; p = &(*p)->next)
        if (*p == h) {
            *p = h->next;
            break;
        }
}

static void cached_answer(evutil_socket_t fd, short what, void *arg)
{
    weights_fetch *h = arg;
    answer_unlink(h);
    event_free(h->timer);
    h->cb.on_done(h->user, h->path, NULL);
    free(h->path);
    free(h);
}

/* 1 when the complete part at final is what its record says and names this
 * model. Otherwise the record goes, and the file becomes a partial one to be
 * checked chunk by chunk (it may be fine, e.g. copied from another home). */
static int part_recorded(weights_store *ws, const fetch_job *want, const char *final, const char *part,
                         const char *record)
{
    if (access(final, F_OK) != 0) return 0;
    fetch_file_key rec, now;
    char why[300];
    weights_manifest *m = store_read_manifest(record, &rec, why, sizeof why);
    int fd = open(final, O_RDONLY | O_CLOEXEC);
    int ok = m && fd >= 0 && store_file_key(fd, final, &now) == 0 && store_keys_equal(&rec, &now) &&
             !memcmp(m->model_hash, want->hash, WEIGHTS_HASH_BYTES);
    if (fd >= 0) close(fd);
    weights_manifest_free(m);
    if (ok) return 1;
    ws->counters.cache_discarded++;
    log_warn(WEIGHTS_LOG, "%s does not match its record (%s): checking it chunk by chunk", final,
             m ? "changed since it was fetched" : why);
    store_part_forget(ws, final);
    unlink(record);
    if (access(part, F_OK) == 0) unlink(final); /* a partial file is there too: keep that one */
    else if (rename(final, part) != 0) unlink(final);
    return 0;
}

static char *part_path(const weights_store *ws, const uint8_t *hash, int first, int end, int head,
                       const char *suffix)
{
    char hex[WEIGHTS_HASH_HEX];
    weights_hex(hash, hex);
    size_t n = strlen(ws->parts_dir) + WEIGHTS_HASH_HEX + 48;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s.%d-%d%s.gguf%s", ws->parts_dir, hex, first, end, head ? "h" : "", suffix);
    return p;
}

weights_fetch *weights_fetch_start(weights_store *ws, const uint8_t hash[WEIGHTS_HASH_BYTES],
                                   const uint8_t peer[MESH_ID_BYTES], int first, int end, int head,
                                   const weights_fetch_callbacks *cb, void *user, char *err, size_t errlen)
{
    head = head != 0;
    if (!cb || !cb->on_done || first < 0 || end < first || end > WEIGHTS_MAX_LAYERS || (first == end && !head)) {
        err_set(err, errlen, "layers [%d, %d)%s: not a part of a model", first, end, head ? " with the head" : "");
        return NULL;
    }
    weights_fetch *h = calloc(1, sizeof *h);
    if (!h) goto oom;
    h->ws = ws;
    h->cb = *cb;
    h->user = user;
    for (fetch_job *j = ws->jobs; j; j = j->next)
        if (!memcmp(j->hash, hash, WEIGHTS_HASH_BYTES) && j->first == first && j->end == end && j->head == head) {
            h->job = j;
            h->next = j->handles;
            j->handles = h;
            return h;
        }
    fetch_job *j = calloc(1, sizeof *j);
    if (!j) goto oom;
    j->fd = j->lock_fd = -1;
    j->ws = ws;
    memcpy(j->hash, hash, WEIGHTS_HASH_BYTES);
    memcpy(j->peer, peer, MESH_ID_BYTES);
    memcpy(j->named, peer, MESH_ID_BYTES);
    j->first = first;
    j->end = end;
    j->head = head;
    fetch_manifest_reader_init(&j->reader);
    j->final_path = part_path(ws, hash, first, end, head, "");
    j->part_path = part_path(ws, hash, first, end, head, ".part");
    j->record_path = part_path(ws, hash, first, end, head, ".wm");
    for (int i = 0; i < FETCH_MAX_STREAMS; i++) {
        j->slots[i].job = j;
        j->slots[i].index = i;
    }
    j->retry = evtimer_new(ws->base, job_on_retry, j);
    j->tick = event_new(ws->base, -1, EV_PERSIST, job_on_tick, j);
    if (!j->final_path || !j->part_path || !j->record_path || !j->retry || !j->tick) {
        job_free(j);
        goto oom;
    }
    if (part_recorded(ws, j, j->final_path, j->part_path, j->record_path)) {
        h->path = strdup(j->final_path);
        h->timer = evtimer_new(ws->base, cached_answer, h);
        job_free(j);
        if (!h->path || !h->timer) {
            if (h->timer) event_free(h->timer);
            free(h->path);
            goto oom;
        }
        struct timeval now = {0, 0};
        evtimer_add(h->timer, &now);
        h->next = ws->answers;
        ws->answers = h;
        return h;
    }
    /* The lock has a descriptor of its own: workers finishing a write with
     * their copies of fd must not keep it after the job is gone. */
    j->lock_fd = open(j->part_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    j->fd = j->lock_fd >= 0 ? open(j->part_path, O_RDWR | O_CLOEXEC) : -1;
    if (j->fd < 0) {
        err_set(err, errlen, "cannot create %s: %s", j->part_path, strerror(errno));
        goto fail;
    }
    if (flock(j->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        err_set(err, errlen, "%s is being fetched by another process on this home", j->part_path);
        goto fail;
    }
    h->job = j;
    j->handles = h;
    j->next = ws->jobs;
    ws->jobs = j;
    j->started_ms = j->logged_ms = clock_ms();
    char name[128], peer_hex[WEIGHTS_HASH_HEX];
    job_log_name(j, name, sizeof name);
    weights_hex(peer, peer_hex);
    log_info(WEIGHTS_LOG, "fetch %s from %.12s into %s", name, peer_hex, j->final_path);
    /* Connecting on the next loop turn keeps every callback out of this call. */
    job_schedule(j, 0);
    struct timeval tick = {FETCH_TICK_MS / 1000, (FETCH_TICK_MS % 1000) * 1000};
    event_add(j->tick, &tick);
    return h;
fail:
    job_free(j);
    free(h);
    return NULL;
oom:
    free(h);
    err_set(err, errlen, "out of memory");
    return NULL;
}

void weights_fetch_cancel(weights_fetch *f)
{
    if (!f) return;
    if (!f->job) {
        answer_unlink(f);
        event_free(f->timer);
        free(f->path);
        free(f);
        return;
    }
    f->cancelled = 1;
    job_sweep(f->job);
}

int weights_store_fetches(const weights_store *ws, weights_fetch_info *out, int max)
{
    int n = 0;
    for (const fetch_job *j = ws->jobs; j; j = j->next, n++) {
        if (n >= max) continue;
        weights_fetch_info *o = &out[n];
        memset(o, 0, sizeof *o);
        weights_hex(j->hash, o->model);
        o->first = j->first;
        o->end = j->end;
        o->head = j->head;
        weights_hex(j->peer, o->peer);
        int live = 0;
        for (int i = 0; i < FETCH_MAX_STREAMS; i++) {
            const fetch_slot *sl = &j->slots[i];
            live += sl->stream != NULL;
            if (!sl->used || o->n_sources >= WEIGHTS_INFO_SOURCES) continue;
            weights_hex(sl->peer, o->sources[o->n_sources].peer);
            o->sources[o->n_sources].bytes = sl->bytes;
            o->sources[o->n_sources].streaming = sl->stream != NULL;
            o->n_sources++;
        }
        int reading = 0, ready = 0;
        for (int i = 0; i < FETCH_MAX_STREAMS; i++) {
            reading |= j->slots[i].reading;
            ready |= j->slots[i].ready;
        }
        o->done_bytes = j->done_bytes;
        o->total_bytes = j->total_bytes;
        o->state = evtimer_pending(j->retry, NULL) && j->attempts && !live ? "retrying"
                   : !live                                               ? "connecting"
                   : reading                                             ? "manifest"
                   : j->check                                            ? "checking"
                   : ready                                               ? "fetching"
                                                                         : "connecting";
        o->attempts = j->attempts;
        snprintf(o->last_error, sizeof o->last_error, "%s", j->last_error);
    }
    return n;
}

int weights_store_fetched_from(const weights_store *ws, weights_source_bytes *out, int max)
{
    int n = ws->n_fetched_from < max ? ws->n_fetched_from : max;
    memcpy(out, ws->fetched_from, (size_t)(n > 0 ? n : 0) * sizeof *out);
    return n;
}

void fetch_free_all(weights_store *ws)
{
    while (ws->answers) {
        weights_fetch *h = ws->answers;
        ws->answers = h->next;
        event_free(h->timer);
        free(h->path);
        free(h);
    }
    while (ws->jobs) {
        fetch_job *j = ws->jobs;
        ws->jobs = j->next;
        while (j->handles) {
            weights_fetch *h = j->handles;
            j->handles = h->next;
            free(h);
        }
        job_free(j);
    }
}
