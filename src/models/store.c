/* store.c: the local side of weights_store.h: full files and their
 * remembered manifests, the cache directories, and the worker thread that
 * hash and write off the event loop. The FETCH streams: serve.c (serving)
 * and fetch.c (fetching).
 *
 * Why two worker threads ("lanes"), each with a FIFO: the hash lane runs the
 * long jobs (hashing a file added, checking a partial file on resume:
 * seconds per GB), one at a time so that two big hashes do not fight over
 * the disk, each spread over every CPU by a short-lived thread pool. The
 * sync lane runs the short ones of a fetch in progress (hash and write a
 * received chunk, fsync and rename a finished part), which must never wait
 * behind a long hash, and whose order (every chunk written before the
 * fsync) a FIFO gives for free. */
#define _GNU_SOURCE
#include <assert.h>
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/err.h"
#include "lib/log.h"
#include "models/store_private.h"

static void idle_frame(void *user, mesh_stream *s, const uint8_t *p, size_t len) {}
static void idle_fin(void *user, mesh_stream *s) {}
static void idle_close(void *user, mesh_stream *s, const char *error) {}
const mesh_stream_handlers store_idle_handlers = {idle_frame, idle_fin, idle_close};

/* ---- files and keys -----------------------------------------------------------------*/

int store_file_key(int fd, const char *path, fetch_file_key *key)
{
    struct stat st;
    memset(key, 0, sizeof *key);
    if (fstat(fd, &st) != 0) return -1;
    snprintf(key->path, sizeof key->path, "%s", path);
    key->size = (uint64_t)st.st_size;
    key->mtime_ns = (uint64_t)st.st_mtim.tv_sec * 1000000000ull + (uint64_t)st.st_mtim.tv_nsec;
    key->inode = (uint64_t)st.st_ino;
    key->device = (uint64_t)st.st_dev;
    return 0;
}

int store_keys_equal(const fetch_file_key *a, const fetch_file_key *b)
{
    return !strcmp(a->path, b->path) && a->size == b->size && a->mtime_ns == b->mtime_ns &&
           a->inode == b->inode && a->device == b->device;
}

/* Key of the file at path now; -1 when it cannot be opened. */
static int key_of_path(const char *path, fetch_file_key *key)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = store_file_key(fd, path, key);
    close(fd);
    return rc;
}

/* Whole file through path.tmp + rename: a crash leaves the old file or the
 * new one, never half of one. */
int store_write_file(const char *path, const void *data, size_t len, char *err, size_t errlen)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        err_set(err, errlen, "path too long: %s", path);
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        err_set(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
        return -1;
    }
    const uint8_t *p = data;
    size_t left = len;
    while (left) {
        ssize_t n = write(fd, p, left);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            err_set(err, errlen, "cannot write %s: %s", tmp, n < 0 ? strerror(errno) : "short write");
            close(fd);
            unlink(tmp);
            return -1;
        }
        p += n;
        left -= (size_t)n;
    }
    if (fsync(fd) != 0 || close(fd) != 0 || rename(tmp, path) != 0) {
        err_set(err, errlen, "cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

weights_manifest *store_read_manifest(const char *path, fetch_file_key *key, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        err_set(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    uint8_t *buf = NULL;
    weights_manifest *m = NULL;
    if (fstat(fd, &st) != 0 || st.st_size <= 0 || (uint64_t)st.st_size > FETCH_FILE_MAX) {
        err_set(err, errlen, "%s: not a manifest file of a possible size", path);
        goto out;
    }
    size_t len = (size_t)st.st_size, got = 0;
    buf = malloc(len);
    if (!buf) {
        err_set(err, errlen, "out of memory");
        goto out;
    }
    while (got < len) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            err_set(err, errlen, "%s: read error", path);
            goto out;
        }
        got += (size_t)n;
    }
    char why[256];
    m = fetch_manifest_file_decode(buf, len, key, why, sizeof why);
    if (!m) err_set(err, errlen, "%s: %s", path, why);
out:
    free(buf);
    close(fd);
    return m;
}

/* Where the manifest of the local file abs is remembered: named by a hash of
 * the path, so any path fits a file name. */
static void manifest_cache_path(const char *dir, const char *abs, char *out, size_t cap)
{
    uint8_t h[WEIGHTS_HASH_BYTES];
    char hex[WEIGHTS_HASH_HEX];
    weights_sha256(abs, strlen(abs), h);
    weights_hex(h, hex);
    snprintf(out, cap, "%s/%s.wm", dir, hex);
}

/* The manifest of the file at abs: the remembered one when the file is
 * unchanged and was hashed with today's chunk size, else a new hash, then
 * remembered. Any thread: touches no store state. */
static weights_manifest *load_or_hash(const char *manifests_dir, const char *abs, int n_threads,
                                      const atomic_int *cancel, fetch_file_key *key, int *hashed,
                                      uint64_t *bytes, char *err, size_t errlen)
{
    *hashed = 0;
    *bytes = 0;
    if (key_of_path(abs, key) < 0) {
        err_set(err, errlen, "cannot open %s: %s", abs, strerror(errno));
        return NULL;
    }
    char cache[PATH_MAX + 80];
    manifest_cache_path(manifests_dir, abs, cache, sizeof cache);
    fetch_file_key remembered;
    char why[512];
    weights_manifest *m = store_read_manifest(cache, &remembered, why, sizeof why);
    if (m && store_keys_equal(&remembered, key) && m->chunk_bytes == weights_chunk_bytes()) return m;
    if (m) log_debug(WEIGHTS_LOG, "%s changed since its manifest was made: hashing it again", abs);
    weights_manifest_free(m);
    m = weights_manifest_compute(abs, n_threads, cancel, bytes, err, errlen);
    if (!m) return NULL;
    *hashed = 1;
    fetch_file_key after;
    if (key_of_path(abs, &after) < 0 || !store_keys_equal(&after, key)) {
        err_set(err, errlen, "%s changed while it was being hashed", abs);
        weights_manifest_free(m);
        return NULL;
    }
    uint8_t *all = malloc(m->n_tensors);
    size_t len = 0;
    uint8_t *file = all ? (memset(all, 1, m->n_tensors), fetch_manifest_file_encode(m, all, key, &len)) : NULL;
    if (!file || store_write_file(cache, file, len, why, sizeof why) < 0)
        log_warn(WEIGHTS_LOG, "cannot remember the manifest of %s (it will be hashed again next time): %s",
                 abs, file ? why : "out of memory");
    free(file);
    free(all);
    return m;
}

/* ---- local files --------------------------------------------------------------------*/

local_file *store_local(const weights_store *ws, const uint8_t hash[WEIGHTS_HASH_BYTES])
{
    for (local_file *f = ws->files; f; f = f->next)
        if (!f->stale && !memcmp(f->manifest->model_hash, hash, WEIGHTS_HASH_BYTES)) return f;
    return NULL;
}

const char *weights_store_find(const weights_store *ws, const uint8_t hash[WEIGHTS_HASH_BYTES])
{
    local_file *f = store_local(ws, hash);
    return f ? f->path : NULL;
}

const weights_manifest *weights_store_manifest(const weights_store *ws, const uint8_t hash[WEIGHTS_HASH_BYTES])
{
    local_file *f = store_local(ws, hash);
    return f ? f->manifest : NULL;
}

/* Takes m; an older entry for the same path turns stale. */
static local_file *store_insert(weights_store *ws, const char *abs, const fetch_file_key *key,
                                weights_manifest *m)
{
    local_file *lf = calloc(1, sizeof *lf);
    if (lf) lf->path = strdup(abs);
    if (!lf || !lf->path) {
        free(lf);
        weights_manifest_free(m);
        return NULL;
    }
    for (local_file *f = ws->files; f; f = f->next)
        if (!strcmp(f->path, abs)) f->stale = 1;
    lf->key = *key;
    lf->manifest = m;
    lf->next = ws->files;
    ws->files = lf;
    char hex[WEIGHTS_HASH_HEX];
    weights_hex(m->model_hash, hex);
    log_info(WEIGHTS_LOG, "local model %.16s: %s (%u tensors, %d layers, %.1f MiB)", hex, abs, m->n_tensors,
             m->n_layers, m->data_bytes / 1048576.0);
    store_publish(ws);
    return lf;
}

/* The entry for abs when the file is still what it was, or NULL. */
static local_file *store_unchanged(weights_store *ws, const char *abs)
{
    fetch_file_key now;
    if (key_of_path(abs, &now) < 0) return NULL;
    for (local_file *f = ws->files; f; f = f->next)
        if (!f->stale && store_keys_equal(&f->key, &now)) return f;
    return NULL;
}

int weights_store_add_file(weights_store *ws, const char *path, uint8_t hash_out[WEIGHTS_HASH_BYTES],
                           char *err, size_t errlen)
{
    char abs[PATH_MAX];
    if (!realpath(path, abs)) {
        err_set(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    local_file *lf = store_unchanged(ws, abs);
    if (!lf) {
        fetch_file_key key;
        int hashed;
        uint64_t bytes;
        weights_manifest *m =
            load_or_hash(ws->manifests_dir, abs, ws->n_threads, NULL, &key, &hashed, &bytes, err, errlen);
        if (!m) return -1;
        ws->counters.files_hashed += (uint64_t)hashed;
        ws->counters.bytes_hashed += bytes;
        lf = store_insert(ws, abs, &key, m);
        if (!lf) {
            err_set(err, errlen, "out of memory");
            return -1;
        }
    }
    memcpy(hash_out, lf->manifest->model_hash, WEIGHTS_HASH_BYTES);
    return 0;
}

const gguf_file *store_local_open(weights_store *ws, local_file *lf, char *err, size_t errlen)
{
    if (!lf->open) {
        char why[512];
        gguf_file *f = gguf_open(lf->path, why, sizeof why);
        if (!f) {
            err_set(err, errlen, "%s", why);
            return NULL;
        }
        fetch_file_key now;
        int same = store_file_key(f->fd, lf->path, &now) == 0 && store_keys_equal(&now, &lf->key) &&
                   f->n_tensors == lf->manifest->n_tensors;
        for (uint32_t i = 0; same && i < lf->manifest->n_tensors; i++)
            same = gguf_str_eq(f->tensors[i].name, lf->manifest->tensors[i].name) &&
                   f->tensors[i].nbytes == lf->manifest->tensors[i].nbytes;
        if (!same) {
            gguf_close(f);
            lf->stale = 1;
            store_publish(ws);
            err_set(err, errlen, "the file changed since it was hashed");
            return NULL;
        }
        lf->offsets = malloc(sizeof *lf->offsets * (f->n_tensors ? f->n_tensors : 1));
        if (!lf->offsets) {
            gguf_close(f);
            err_set(err, errlen, "out of memory");
            return NULL;
        }
        for (uint32_t i = 0; i < f->n_tensors; i++)
            lf->offsets[i] = (uint64_t)((const uint8_t *)f->tensors[i].data - f->base);
        lf->open = f;
    }
    return lf->open;
}

/* ---- cached parts ---------------------------------------------------------------------*/

int store_add_part(weights_store *ws, const uint8_t hash[WEIGHTS_HASH_BYTES], int first, int end, int head,
                   const char *path)
{
    char record[PATH_MAX], why[300];
    fetch_file_key rec, now;
    if (snprintf(record, sizeof record, "%s.wm", path) >= (int)sizeof record) return -1;
    weights_manifest *m = store_read_manifest(record, &rec, why, sizeof why);
    uint8_t *wanted = m ? malloc(m->n_tensors ? m->n_tensors : 1) : NULL;
    int ok = wanted && key_of_path(path, &now) == 0 && store_keys_equal(&rec, &now) &&
             !memcmp(m->model_hash, hash, WEIGHTS_HASH_BYTES) &&
             weights_select(m, first, end, head, wanted, why, sizeof why) >= 0;
    for (uint32_t i = 0; ok && i < m->n_tensors; i++) ok = !wanted[i] || m->tensors[i].chunks;
    free(wanted);
    cached_part *p = ok ? calloc(1, sizeof *p) : NULL;
    if (p) p->path = strdup(path);
    if (!p || !p->path) {
        free(p);
        weights_manifest_free(m);
        return -1;
    }
    store_part_forget(ws, path); /* an older entry for the same file */
    memcpy(p->hash, hash, WEIGHTS_HASH_BYTES);
    p->first = first;
    p->end = end;
    p->head = head;
    p->key = rec;
    p->manifest = m;
    p->fd = -1;
    p->next = ws->parts;
    ws->parts = p;
    store_publish(ws);
    return 0;
}

cached_part *store_part_covering(const weights_store *ws, const uint8_t hash[WEIGHTS_HASH_BYTES], int first,
                                 int end, int head)
{
    for (cached_part *p = ws->parts; p; p = p->next)
        if (!p->stale && !memcmp(p->hash, hash, WEIGHTS_HASH_BYTES) && p->first <= first && end <= p->end &&
            (!head || p->head))
            return p;
    return NULL;
}

void store_part_forget(weights_store *ws, const char *path)
{
    int changed = 0;
    for (cached_part *p = ws->parts; p; p = p->next)
        if (!p->stale && !strcmp(p->path, path)) p->stale = changed = 1;
    if (changed) store_publish(ws);
}

int store_part_open(weights_store *ws, cached_part *p, char *err, size_t errlen)
{
    if (p->fd >= 0) {
        /* Open already: still the file its record describes, under its name?
         * (A part removed or replaced by hand must stop being offered; the
         * descriptor would still read the old bytes.) */
        fetch_file_key now;
        if (key_of_path(p->path, &now) == 0 && store_keys_equal(&now, &p->key)) return 0;
        /* The descriptor stays open until the store goes: streams serving
         * from it now finish with the bytes they started with. */
        err_set(err, errlen, "the cached part %s changed or is gone", p->path);
        p->stale = 1;
        store_publish(ws);
        return -1;
    }
    const weights_manifest *m = p->manifest;
    fetch_file_key now;
    uint8_t *wanted = malloc(m->n_tensors ? m->n_tensors : 1);
    uint64_t *offsets = calloc(m->n_tensors ? m->n_tensors : 1, sizeof *offsets);
    uint8_t *header = NULL;
    size_t header_len;
    uint64_t size;
    char why[300];
    int fd = open(p->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || store_file_key(fd, p->path, &now) < 0 || !store_keys_equal(&now, &p->key)) {
        err_set(err, errlen, "the cached part %s changed or is gone", p->path);
        goto fail_stale;
    }
    if (!wanted || !offsets) {
        err_set(err, errlen, "out of memory");
        goto fail;
    }
    if (weights_select(m, p->first, p->end, p->head, wanted, why, sizeof why) < 0 ||
        weights_part_layout(m, wanted, &header, &header_len, offsets, &size, why, sizeof why) < 0 ||
        size != p->key.size) {
        err_set(err, errlen, "the cached part %s does not lay out as its record says", p->path);
        goto fail_stale;
    }
    free(header);
    free(wanted);
    p->fd = fd;
    p->offsets = offsets;
    return 0;
fail_stale:
    p->stale = 1;
    store_publish(ws);
fail:
    if (fd >= 0) close(fd);
    free(header);
    free(wanted);
    free(offsets);
    return -1;
}

/* Parts in the cache at start: "<model hash>.<first>-<end>[h].gguf" with a
 * record that matches (a part without one is a fetch to finish or check,
 * which weights_fetch_start does). */
static void store_scan_parts(weights_store *ws)
{
    DIR *d = opendir(ws->parts_dir);
    if (!d) return;
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d))) {
        char hex[WEIGHTS_HASH_HEX], h = 0, tail[8] = "";
        int first, end, used = 0;
        uint8_t hash[WEIGHTS_HASH_BYTES];
        if (strlen(e->d_name) > 120 ||
            sscanf(e->d_name, "%64[0-9a-f].%d-%d%n", hex, &first, &end, &used) != 3 ||
            weights_parse_hex(hex, hash) != 0)
            continue;
        const char *rest = e->d_name + used;
        if (*rest == 'h') h = 1, rest++;
        snprintf(tail, sizeof tail, "%s", rest);
        if (strcmp(tail, ".gguf") != 0 || first < 0 || end < first) continue;
        char path[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s", ws->parts_dir, e->d_name) >= (int)sizeof path) continue;
        n += store_add_part(ws, hash, first, end, h, path) == 0;
    }
    closedir(d);
    if (n) log_info(WEIGHTS_LOG, "%d cached part%s served to peers from %s", n, n == 1 ? "" : "s", ws->parts_dir);
}

void store_publish(weights_store *ws)
{
    if (!ws->mesh) return;
    fetch_holding h[FETCH_MAX_HOLDINGS];
    int n = 0;
    for (const local_file *f = ws->files; f && n < FETCH_MAX_HOLDINGS; f = f->next) {
        if (f->stale) continue;
        memcpy(h[n].hash, f->manifest->model_hash, WEIGHTS_HASH_BYTES);
        h[n].first = 0;
        h[n].end = (uint32_t)f->manifest->n_layers;
        h[n].flags = FETCH_HOLD_HEAD | FETCH_HOLD_FULL;
        n++;
    }
    for (const cached_part *p = ws->parts; p && n < FETCH_MAX_HOLDINGS; p = p->next) {
        if (p->stale) continue;
        memcpy(h[n].hash, p->hash, WEIGHTS_HASH_BYTES);
        h[n].first = (uint32_t)p->first;
        h[n].end = (uint32_t)p->end;
        h[n].flags = p->head ? FETCH_HOLD_HEAD : 0;
        n++;
    }
    uint8_t buf[MESH_MAX_HOLDINGS];
    size_t len = fetch_holdings_encode(h, n, buf, sizeof buf);
    mesh_set_holdings(ws->mesh, buf, len);
}

/* ---- the workers -----------------------------------------------------------------------*/

static void *worker_main(void *arg)
{
    struct store_lane *lane = arg;
    weights_store *ws = lane->ws;
    pthread_mutex_lock(&ws->lock);
    for (;;) {
        while (!lane->queue && !ws->stop) pthread_cond_wait(&ws->cond, &ws->lock);
        if (ws->stop) break;
        work *w = lane->queue;
        lane->queue = w->next;
        if (!lane->queue) lane->tail = NULL;
        w->next = NULL;
        lane->running = w;
        pthread_mutex_unlock(&ws->lock);
        w->run(w);
        pthread_mutex_lock(&ws->lock);
        lane->running = NULL;
        w->next = ws->finished;
        ws->finished = w;
        event_active(ws->wake, EV_READ, 0);
    }
    pthread_mutex_unlock(&ws->lock);
    return NULL;
}

void store_submit(weights_store *ws, work *w, int lane)
{
    assert(lane >= 0 && lane < STORE_LANES);
    struct store_lane *l = &ws->lanes[lane];
    pthread_mutex_lock(&ws->lock);
    w->next = NULL;
    if (l->tail) l->tail->next = w; else l->queue = w;
    l->tail = w;
    pthread_cond_broadcast(&ws->cond);
    pthread_mutex_unlock(&ws->lock);
}

/* Loop thread: runs the completions, oldest first. */
static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    weights_store *ws = arg;
    pthread_mutex_lock(&ws->lock);
    work *list = ws->finished, *rev = NULL;
    ws->finished = NULL;
    pthread_mutex_unlock(&ws->lock);
    while (list) {
        work *next = list->next;
        list->next = rev;
        rev = list;
        list = next;
    }
    while (rev) {
        work *next = rev->next;
        rev->done(ws, rev);
        rev = next;
    }
}

/* ---- asynchronous adds --------------------------------------------------------------------*/

typedef struct {
    work w;
    char *manifests_dir, *abs;
    int n_threads;
    weights_added_fn fn;
    void *user;
    weights_manifest *m;
    fetch_file_key key;
    int hashed;
    uint64_t bytes;
    char err[512];
} add_work;

static void add_run(work *w)
{
    add_work *a = (add_work *)w;
    a->m = load_or_hash(a->manifests_dir, a->abs, a->n_threads, &w->cancel, &a->key, &a->hashed, &a->bytes,
                        a->err, sizeof a->err);
}

static void add_drop(work *w)
{
    add_work *a = (add_work *)w;
    weights_manifest_free(a->m);
    free(a->manifests_dir);
    free(a->abs);
    free(a);
}

static void add_done(weights_store *ws, work *w)
{
    add_work *a = (add_work *)w;
    ws->counters.files_hashed += (uint64_t)a->hashed;
    ws->counters.bytes_hashed += a->bytes;
    local_file *lf = NULL;
    if (a->m) {
        lf = store_insert(ws, a->abs, &a->key, a->m);
        a->m = NULL;
        if (!lf) snprintf(a->err, sizeof a->err, "out of memory");
    }
    if (a->fn) a->fn(a->user, a->abs, lf ? lf->manifest->model_hash : NULL, lf ? NULL : a->err);
    add_drop(w);
}

int weights_store_add_file_async(weights_store *ws, const char *path, weights_added_fn done, void *user,
                                 char *err, size_t errlen)
{
    char abs[PATH_MAX];
    if (!realpath(path, abs)) {
        err_set(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    add_work *a = calloc(1, sizeof *a);
    if (a) {
        a->manifests_dir = strdup(ws->manifests_dir);
        a->abs = strdup(abs);
    }
    if (!a || !a->manifests_dir || !a->abs) {
        if (a) add_drop(&a->w);
        err_set(err, errlen, "out of memory");
        return -1;
    }
    a->w.run = add_run;
    a->w.done = add_done;
    a->w.drop = add_drop;
    a->n_threads = ws->n_threads;
    a->fn = done;
    a->user = user;
    store_submit(ws, &a->w, STORE_LANE_HASH);
    return 0;
}

int weights_store_add_dir(weights_store *ws, const char *dir, weights_added_fn done, void *user)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (e->d_name[0] == '.' || len < 6 || strcmp(e->d_name + len - 5, ".gguf") != 0) continue;
        char path[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path) continue;
        char err[256];
        if (weights_store_add_file_async(ws, path, done, user, err, sizeof err) == 0) n++;
        else log_warn(WEIGHTS_LOG, "%s", err);
    }
    closedir(d);
    return n;
}

/* ---- the store ------------------------------------------------------------------------------*/

static int make_dir(const char *path, char *err, size_t errlen)
{
    if (mkdir(path, 0700) == 0 || errno == EEXIST) return 0;
    err_set(err, errlen, "cannot create %s: %s", path, strerror(errno));
    return -1;
}

static char *join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s/%s", a, b);
    return s;
}

weights_store *weights_store_new(struct event_base *base, mesh *m, const char *home, char *err,
                                 size_t errlen)
{
    weights_store *ws = calloc(1, sizeof *ws);
    if (!ws) {
        err_set(err, errlen, "out of memory");
        return NULL;
    }
    ws->base = base;
    ws->mesh = m;
    ws->window_bytes = FETCH_WINDOW_BYTES;
    ws->retry_base_ms = FETCH_RETRY_BASE_MS;
    ws->max_attempts = FETCH_MAX_ATTEMPTS;
    const char *delay = getenv("LLMESH_DEBUG_FILE_SERVE_DELAY_MS"); /* a test knob: a slow source */
    ws->test_file_delay_ms = delay ? atoi(delay) : 0;
    delay = getenv("LLMESH_DEBUG_CHUNK_SERVE_DELAY_MS"); /* the same for chunks (DATA) */
    ws->test_chunk_delay_ms = delay ? atoi(delay) : 0;
    pthread_mutex_init(&ws->lock, NULL);
    pthread_cond_init(&ws->cond, NULL);
    char *cache = join(home, "cache");
    ws->home = strdup(home);
    ws->manifests_dir = cache ? join(cache, "manifests") : NULL;
    ws->parts_dir = cache ? join(cache, "parts") : NULL;
    if (!ws->home || !ws->manifests_dir || !ws->parts_dir) {
        err_set(err, errlen, "out of memory");
        goto fail;
    }
    if (make_dir(home, err, errlen) < 0 || make_dir(cache, err, errlen) < 0 ||
        make_dir(ws->manifests_dir, err, errlen) < 0 || make_dir(ws->parts_dir, err, errlen) < 0)
        goto fail;
    ws->wake = event_new(base, -1, 0, on_wake, ws);
    if (!ws->wake) {
        err_set(err, errlen, "cannot create an event");
        goto fail;
    }
    for (int i = 0; i < STORE_LANES; i++) {
        ws->lanes[i].ws = ws;
        if (pthread_create(&ws->lanes[i].thread, NULL, worker_main, &ws->lanes[i]) != 0) {
            err_set(err, errlen, "cannot start a worker thread");
            goto fail;
        }
        ws->lanes[i].started = 1;
    }
    free(cache);
    store_scan_parts(ws);
    if (m) mesh_register_stream_type(m, MESH_STREAM_FETCH, serve_accept, ws);
    return ws;
fail:
    free(cache);
    weights_store_free(ws);
    return NULL;
}

void weights_store_free(weights_store *ws)
{
    if (!ws) return;
    if (ws->mesh) mesh_register_stream_type(ws->mesh, MESH_STREAM_FETCH, NULL, NULL);
    fetch_free_all(ws);
    serve_free_all(ws);
    pthread_mutex_lock(&ws->lock);
    ws->stop = 1;
    for (int i = 0; i < STORE_LANES; i++)
        if (ws->lanes[i].running) atomic_store(&ws->lanes[i].running->cancel, 1); /* stops between chunks */
    pthread_cond_broadcast(&ws->cond);
    pthread_mutex_unlock(&ws->lock);
    for (int i = 0; i < STORE_LANES; i++)
        if (ws->lanes[i].started) pthread_join(ws->lanes[i].thread, NULL);
    for (int i = 0; i <= STORE_LANES; i++) {
        work *w = i < STORE_LANES ? ws->lanes[i].queue : ws->finished;
        while (w) {
            work *next = w->next;
            w->drop(w);
            w = next;
        }
    }
    if (ws->wake) event_free(ws->wake);
    while (ws->files) {
        local_file *f = ws->files;
        ws->files = f->next;
        if (f->open) gguf_close(f->open);
        weights_manifest_free(f->manifest);
        free(f->offsets);
        free(f->path);
        free(f);
    }
    while (ws->parts) {
        cached_part *p = ws->parts;
        ws->parts = p->next;
        if (p->fd >= 0) close(p->fd);
        weights_manifest_free(p->manifest);
        free(p->offsets);
        free(p->path);
        free(p);
    }
    pthread_mutex_destroy(&ws->lock);
    pthread_cond_destroy(&ws->cond);
    free(ws->scratch);
    free(ws->home);
    free(ws->manifests_dir);
    free(ws->parts_dir);
    free(ws);
}

void weights_get_counters(const weights_store *ws, weights_counters *out) { *out = ws->counters; }

void weights_store_status_json(const weights_store *ws, cJSON *obj)
{
    char hex[WEIGHTS_HASH_HEX];
    cJSON *local = cJSON_AddArrayToObject(obj, "local");
    for (const local_file *f = ws->files; f; f = f->next) {
        if (f->stale) continue;
        cJSON *o = cJSON_CreateObject();
        weights_hex(f->manifest->model_hash, hex);
        cJSON_AddStringToObject(o, "model", hex);
        cJSON_AddStringToObject(o, "path", f->path);
        cJSON_AddNumberToObject(o, "layers", f->manifest->n_layers);
        cJSON_AddNumberToObject(o, "bytes", (double)f->manifest->data_bytes);
        cJSON_AddItemToArray(local, o);
    }
    cJSON *parts = cJSON_AddArrayToObject(obj, "parts");
    for (const cached_part *p = ws->parts; p; p = p->next) {
        if (p->stale) continue;
        cJSON *o = cJSON_CreateObject();
        weights_hex(p->hash, hex);
        cJSON_AddStringToObject(o, "model", hex);
        cJSON_AddStringToObject(o, "path", p->path);
        cJSON_AddNumberToObject(o, "first", p->first);
        cJSON_AddNumberToObject(o, "end", p->end);
        cJSON_AddBoolToObject(o, "head", p->head);
        cJSON_AddItemToArray(parts, o);
    }
    weights_fetch_info info[64];
    int n = weights_store_fetches(ws, info, 64);
    cJSON *fetches = cJSON_AddArrayToObject(obj, "fetches");
    for (int i = 0; i < n && i < 64; i++) {
        const weights_fetch_info *f = &info[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "model", f->model);
        cJSON_AddNumberToObject(o, "first", f->first);
        cJSON_AddNumberToObject(o, "end", f->end);
        cJSON_AddBoolToObject(o, "head", f->head);
        cJSON_AddStringToObject(o, "peer", f->peer);
        cJSON_AddStringToObject(o, "state", f->state);
        cJSON_AddNumberToObject(o, "done_bytes", (double)f->done_bytes);
        cJSON_AddNumberToObject(o, "total_bytes", (double)f->total_bytes);
        cJSON_AddNumberToObject(o, "attempts", f->attempts);
        if (f->last_error[0]) cJSON_AddStringToObject(o, "last_error", f->last_error);
        cJSON *sources = cJSON_AddArrayToObject(o, "sources");
        for (int k = 0; k < f->n_sources; k++) {
            cJSON *so = cJSON_CreateObject();
            cJSON_AddStringToObject(so, "peer", f->sources[k].peer);
            cJSON_AddNumberToObject(so, "bytes", (double)f->sources[k].bytes);
            cJSON_AddBoolToObject(so, "streaming", f->sources[k].streaming);
            cJSON_AddItemToArray(sources, so);
        }
        cJSON_AddItemToArray(fetches, o);
    }
    const weights_counters *c = &ws->counters;
    cJSON *k = cJSON_AddObjectToObject(obj, "counters");
    cJSON_AddNumberToObject(k, "served_bytes", (double)c->served_bytes);
    cJSON_AddNumberToObject(k, "files_served", (double)c->files_served);
    cJSON_AddNumberToObject(k, "file_bytes_served", (double)c->file_bytes_served);
    cJSON_AddNumberToObject(k, "fetched_bytes", (double)c->fetched_bytes);
    cJSON_AddNumberToObject(k, "bad_frames", (double)c->bad_frames);
    cJSON_AddNumberToObject(k, "bad_chunks", (double)c->bad_chunks);
    cJSON_AddNumberToObject(k, "fetches_resumed", (double)c->fetches_resumed);
    cJSON_AddNumberToObject(k, "files_hashed", (double)c->files_hashed);
    cJSON_AddNumberToObject(k, "bytes_hashed", (double)c->bytes_hashed);
    cJSON_AddNumberToObject(k, "cache_discarded", (double)c->cache_discarded);
    weights_source_bytes from[FETCH_MAX_TALLY];
    int nf = weights_store_fetched_from(ws, from, FETCH_MAX_TALLY);
    cJSON *fa = cJSON_AddArrayToObject(k, "fetched_from");
    for (int i = 0; i < nf; i++) {
        cJSON *o = cJSON_CreateObject();
        weights_hex(from[i].peer, hex);
        cJSON_AddStringToObject(o, "peer", hex);
        cJSON_AddNumberToObject(o, "bytes", (double)from[i].bytes);
        cJSON_AddItemToArray(fa, o);
    }
}

void weights_test_set_retry(weights_store *ws, int base_ms, int max_attempts)
{
    ws->retry_base_ms = base_ms;
    ws->max_attempts = max_attempts;
}

void weights_test_set_window(weights_store *ws, uint32_t bytes) { ws->window_bytes = bytes; }
void weights_test_corrupt_serving(weights_store *ws, int every_nth) { ws->test_corrupt_every = every_nth; }
void weights_test_abort_serving(weights_store *ws, int after_chunks) { ws->test_abort_after = after_chunks; }

void weights_store_set_held(weights_store *ws, const weights_held_file *files, int n)
{
    if (n > WEIGHTS_MAX_HELD) n = WEIGHTS_MAX_HELD;
    if (n > 0) memcpy(ws->held, files, (size_t)n * sizeof *files);
    ws->n_held = n > 0 ? n : 0;
}
