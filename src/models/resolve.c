/* resolve.c: model references to local files, with the fit check before
 * any download. See resolve.h. */
#define _GNU_SOURCE
#include "models/resolve.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine/gguf.h"
#include "engine/model.h"
#include "lib/log.h"
#include "models/hf.h"
#include "models/multipart.h"
#include "models/ref.h"
#include "models/weights.h"

#define RS_LOG "models"
#define RS_MAX_LISTING (8u << 20)    /* the hub's listing of a repo: JSON, a few KB to a few hundred */
#define RS_HEAD_FIRST (2u << 20)     /* first guess at a GGUF header's size (vocabularies make it MBs) */
#define RS_HEAD_MAX (64u << 20)
#define RS_MAX_NAMES 512

static const double GB = 1e9;

/* ---- the fit check ---------------------------------------------------------- */

int model_need_from_head(const uint8_t *head, size_t head_len, uint64_t file_size, uint64_t rest_bytes,
                         const model_fetch_opts *o, uint64_t *need, char *err, size_t errlen)
{
    /* The header says where every tensor is, and the reader checks those
     * offsets against the file's size: so the bytes go into a sparse file
     * of the full size (memory-backed, holes cost nothing) and the reader
     * opens that, exactly as it opens the real file later. */
    int fd = memfd_create("llmesh-gguf-head", MFD_CLOEXEC);
    if (fd < 0) { snprintf(err, errlen, "memfd_create: %s", strerror(errno)); return -1; }
    int rc = -1;
    gguf_file *f = NULL;
    model_sizes *z = malloc(sizeof *z);
    if (!z) { snprintf(err, errlen, "out of memory"); goto out; }
    if (ftruncate(fd, (off_t)file_size) != 0 || pwrite(fd, head, head_len, 0) != (ssize_t)head_len) {
        snprintf(err, errlen, "cannot stage the header: %s", strerror(errno));
        goto out;
    }
    char path[64], inner[400];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    if (!(f = gguf_open(path, inner, sizeof inner))) {
        snprintf(err, errlen, "%s", inner);
        goto out;
    }
    if (f->data_offset > head_len) {
        snprintf(err, errlen, "the header is longer than the %zu bytes read", head_len);
        goto out;
    }
    if (model_sizes_read(f, z, inner, sizeof inner) != 0) {
        snprintf(err, errlen, "%s", inner);
        goto out;
    }
    int ctx = z->c.n_ctx_train < 8192 ? z->c.n_ctx_train : 8192; /* as engine.c caps it */
    if (o->n_ctx > 0) ctx = o->n_ctx;
    model_part whole = {0, z->c.n_layer, 1};
    *need = model_part_need(z, &whole, ctx, (model_kv_type)o->kv_type, o->n_lanes > 0 ? o->n_lanes : 2,
                            o->n_threads > 0 ? o->n_threads : 1) +
            rest_bytes;
    rc = 0;
out:
    if (f) gguf_close(f);
    free(z);
    close(fd);
    return rc;
}

/* Where the first bytes of a file come from for the fit check: the hub
 * (a Range request) or a peer (a dl_source read from offset 0). The count
 * read into buf (at most len), or -1 with err. */
typedef long (*head_reader)(void *ctx, uint8_t *buf, size_t len, char *err, size_t errlen);

typedef struct {
    const char *url;
    const dl_auth *auth;
} url_head;

static long read_url_head(void *ctx, uint8_t *buf, size_t len, char *err, size_t errlen)
{
    const url_head *u = ctx;
    return dl_get_head_bytes(u->url, u->auth, buf, len, err, errlen);
}

typedef struct {
    const dl_source *src;
    const _Atomic int *cancel;
} source_head;

/* A peer streams from the offset asked to the end: the stream is closed
 * once the header's bytes are in (the rest it sent is dropped). */
static long read_source_head(void *ctx, uint8_t *buf, size_t len, char *err, size_t errlen)
{
    const source_head *sh = ctx;
    const dl_source *src = sh->src;
    void *h = src->open(src->ctx, 0, err, errlen);
    if (!h) return -1;
    size_t got = 0;
    while (got < len) {
        long n = src->read(h, buf + got, len - got, sh->cancel, err, errlen);
        if (n < 0) { src->close(h); return -1; }
        if (n == 0) break;
        got += (size_t)n;
    }
    src->close(h);
    return (long)got;
}

/* Reads the first file's header (growing the read until the header fits)
 * and compares the need with what is free. 0 fits, -1 no (err says by how
 * much) or could not tell (err says why). */
static int check_fit(const char *label, head_reader read_head, void *reader_ctx, uint64_t size, uint64_t rest,
                     const model_fetch_opts *o, uint64_t *need_out, char *err, size_t errlen)
{
    if (!o->avail_what) return 0;
    if (!size) {
        snprintf(err, errlen, "%s: the server gives no size: cannot check that it fits before downloading", label);
        return -1;
    }
    uint64_t need = 0;
    char inner[400] = "";
    int ok = 0;
    for (size_t want = RS_HEAD_FIRST;; want *= 4) {
        size_t n = want < size ? want : (size_t)size;
        uint8_t *buf = malloc(n);
        if (!buf) { snprintf(err, errlen, "out of memory"); return -1; }
        long got = read_head(reader_ctx, buf, n, inner, sizeof inner);
        if (got < 0) {
            free(buf);
            snprintf(err, errlen, "%s: reading its header: %s", label, inner);
            return -1;
        }
        ok = model_need_from_head(buf, (size_t)got, size, rest, o, &need, inner, sizeof inner) == 0;
        free(buf);
        if (ok || n >= size || want >= RS_HEAD_MAX) break;
    }
    if (!ok) {
        snprintf(err, errlen, "%s: not a model llmesh can run (%s); nothing was downloaded", label, inner);
        return -1;
    }
    *need_out = need;
    if (need > o->avail_bytes) {
        snprintf(err, errlen, "%s needs %.2f GB (weights, KV caches, scratch) but %s is %.2f GB: "
                 "%.2f GB missing; nothing was downloaded", label, (double)need / GB, o->avail_what,
                 (double)o->avail_bytes / GB, (double)(need - o->avail_bytes) / GB);
        return -1;
    }
    log_info(RS_LOG, "%s needs %.2f GB; %s is %.2f GB", label, (double)need / GB, o->avail_what,
             (double)o->avail_bytes / GB);
    return 0;
}

/* ---- progress over several files ------------------------------------------------ */

typedef struct {
    const model_fetch_opts *o;
    uint64_t base, total;
} multi_progress;

static void on_file_progress(void *ctx, uint64_t done, uint64_t total, double rate)
{
    multi_progress *mp = ctx;
    if (mp->o->progress) mp->o->progress(mp->o->progress_ctx, mp->base + done, mp->total, rate);
}

/* ---- the hub ----------------------------------------------------------------------- */

typedef struct {
    char path[HF_NAME_CAP];  /* in the repo */
    dl_meta meta;
    int cached;
    char local[MODEL_PATH_MAX];
} hub_file;

/* The paths in the repo a hub file reference means: the file, or every
 * part of a multi-part one in order. The count, or -1 with err. */
static int file_paths(const model_ref *r, char (*paths)[HF_NAME_CAP], char *err, size_t errlen)
{
    int no, count;
    size_t stem;
    if (!model_ref_split_name(r->file, &no, &count, &stem)) {
        snprintf(paths[0], HF_NAME_CAP, "%s", r->file);
        return 1;
    }
    if (count > MODEL_MAX_PARTS) {
        snprintf(err, errlen, "%s has %d parts (at most %d)", r->file, count, MODEL_MAX_PARTS);
        return -1;
    }
    for (int i = 1; i <= count; i++)
        snprintf(paths[i - 1], HF_NAME_CAP, "%.*s-%05d-of-%05d.gguf", (int)stem, r->file, i, count);
    return count;
}

/* Which files of the repo a reference means: the file itself or all parts
 * of a multi-part one; for a quant, from the cached snapshot or the
 * listing. Fills files/n and, from the listing, *commit. 0, -1 with err,
 * or DL_UNREACHABLE with err when the listing was needed and the hub could
 * not be asked. */
static int hub_files(const hf_env *env, const model_ref *r, const model_fetch_opts *o, hub_file *files, int *n,
                     char commit[64], char *err, size_t errlen)
{
    static __thread char names[RS_MAX_NAMES][HF_NAME_CAP];
    int picked[MODEL_MAX_PARTS];
    *n = 0;
    if (r->kind != MODEL_REF_HF_QUANT) {
        int k = file_paths(r, names, err, errlen);
        if (k < 0) return -1;
        for (int i = 0; i < k; i++) snprintf(files[(*n)++].path, HF_NAME_CAP, "%.511s", names[i]);
        return 0;
    }
    int count = -1;
    if (commit[0]) {
        int k = hf_cached_gguf_files(env, r->repo, commit, names, RS_MAX_NAMES);
        char inner[512];
        count = k > 0 ? hf_pick_quant(names, k, r->quant, picked, MODEL_MAX_PARTS, inner, sizeof inner) : -1;
    }
    if (count < 0) {
        if (o->offline) {
            snprintf(err, errlen, "%s:%s is not in the cache (%s) and downloads are off", r->repo, r->quant, env->cache);
            return -1;
        }
        if (env->offline) {
            snprintf(err, errlen, "HF_HUB_OFFLINE is set");
            return DL_UNREACHABLE;
        }
        char url[1024], *body = NULL, inner[512];
        size_t len = 0;
        hf_listing_url(env, r->repo, r->revision, url, sizeof url);
        dl_auth auth = {env->token, env->endpoint};
        int lr = dl_get_small(url, &auth, RS_MAX_LISTING, &body, &len, inner, sizeof inner);
        if (lr != 0) {
            snprintf(err, errlen, "listing the files of %s: %s", r->repo, inner);
            return lr;
        }
        int k = hf_parse_listing(body, len, commit, names, RS_MAX_NAMES, inner, sizeof inner);
        free(body);
        if (k < 0) { snprintf(err, errlen, "%s: %s", r->repo, inner); return -1; }
        count = hf_pick_quant(names, k, r->quant, picked, MODEL_MAX_PARTS, inner, sizeof inner);
        if (count < 0) { snprintf(err, errlen, "%s:%s: %s", r->repo, r->quant, inner); return -1; }
    }
    for (int i = 0; i < count; i++) snprintf(files[(*n)++].path, HF_NAME_CAP, "%s", names[picked[i]]);
    return 0;
}

/* ---- the mesh, when the hub cannot be asked ------------------------------------------ */

static int is_commit(const char *s)
{
    if (strlen(s) != 40) return 0;
    for (const char *p = s; *p; p++)
        if (!strchr("0123456789abcdef", *p)) return 0;
    return 1;
}

int model_match_peer_files(const model_ref *r, const model_peer_file *files, int n, int *idx, int max, char *err,
                           size_t errlen)
{
    static __thread char names[RS_MAX_NAMES][HF_NAME_CAP];
    int of[RS_MAX_NAMES], other[RS_MAX_NAMES], k = 0, with_quant = 0;
    size_t rl = strlen(r->repo);
    int pinned = is_commit(r->revision);
    /* The repo's files the peers hold, once per path; two peers holding
     * different bytes under one path (two commits of a branch) make that
     * name ambiguous without the hub (other[]: the second one, or -1). */
    for (int i = 0; i < n; i++) {
        /* Records are outside input: a listed file must parse as a hub file
         * of this repo at a commit (so its path and commit are safe as the
         * cache's directories), or it is skipped. */
        model_ref fr;
        char ferr[64];
        const char *ref = files[i].ref, *at = strrchr(ref, '@');
        if (!at || strncmp(ref, r->repo, rl) || ref[rl] != '/' ||
            model_ref_parse(ref, &fr, ferr, sizeof ferr) != 0 || fr.kind != MODEL_REF_HF_FILE ||
            strcmp(fr.repo, r->repo) || !is_commit(fr.revision) || strcmp(at + 1, fr.revision))
            continue;
        if (pinned && strcmp(fr.revision, r->revision)) continue;
        const char *path = fr.file;
        size_t pl = strlen(path);
        if (!pl || pl >= HF_NAME_CAP) continue;
        int j = 0;
        while (j < k && strcmp(names[j], path)) j++;
        if (j < k) {
            if (other[j] < 0 && (strcmp(files[of[j]].sha256, files[i].sha256) || files[of[j]].size != files[i].size))
                other[j] = i;
            continue;
        }
        if (k == RS_MAX_NAMES) continue;
        snprintf(names[k], HF_NAME_CAP, "%.*s", (int)pl, path);
        const char *base = strrchr(names[k], '/');
        with_quant += r->kind == MODEL_REF_HF_QUANT && model_ref_file_has_quant(base ? base + 1 : names[k], r->quant);
        other[k] = -1;
        of[k++] = i;
    }
    int picked[MODEL_MAX_PARTS], count;
    char inner[512];
    if (r->kind == MODEL_REF_HF_QUANT) {
        if (!with_quant) {
            snprintf(err, errlen, "no peer lists a file of %s carrying %s", r->repo, r->quant);
            return 0;
        }
        count = hf_pick_quant(names, k, r->quant, picked, MODEL_MAX_PARTS, inner, sizeof inner);
        if (count < 0) {
            snprintf(err, errlen, "%s:%s among the peers' files: %s", r->repo, r->quant, inner);
            return -1;
        }
    } else {
        static __thread char want[MODEL_MAX_PARTS][HF_NAME_CAP];
        count = file_paths(r, want, err, errlen);
        if (count < 0) return -1;
        for (int i = 0; i < count; i++) {
            int j = 0;
            while (j < k && strcmp(names[j], want[i])) j++;
            if (j == k) {
                snprintf(err, errlen, "no peer lists %s/%s%s%s", r->repo, want[i], pinned ? "@" : "",
                         pinned ? r->revision : "");
                return 0;
            }
            picked[i] = j;
        }
    }
    if (count > max) { snprintf(err, errlen, "%d parts (at most %d)", count, max); return -1; }
    for (int i = 0; i < count; i++) {
        int j = picked[i];
        if (other[j] >= 0) {
            snprintf(err, errlen, "peers hold different files as %s/%s (at commits %.12s and %.12s): name one with "
                     "@COMMIT", r->repo, names[j], strrchr(files[of[j]].ref, '@') + 1,
                     strrchr(files[other[j]].ref, '@') + 1);
            return -1;
        }
        idx[i] = of[j];
    }
    return count;
}

/* The files the cache itself names: the snapshot of commit has a link for
 * every path (the blobs gone: deleted by hand, or never fetched by this
 * node) and a peer lists each blob's SHA-256. The count into chosen (as
 * the peers list them, with this node's path and commit), or 0. */
static int match_cache_links(const hf_env *env, const model_ref *r, const char *commit, const hub_file *files,
                             int n_files, const model_peer_file *pf, int n, model_peer_file *chosen)
{
    if (!commit[0] || n_files <= 0) return 0;
    for (int i = 0; i < n_files; i++) {
        char sha[65];
        if (!hf_snapshot_blob(env, r->repo, commit, files[i].path, sha)) return 0;
        int j = 0;
        while (j < n && strcmp(pf[j].sha256, sha)) j++;
        if (j == n) return 0;
        chosen[i] = pf[j];
        if (snprintf(chosen[i].ref, sizeof chosen[i].ref, "%s/%s@%s", r->repo, files[i].path, commit) >=
            (int)sizeof chosen[i].ref)
            return 0;
    }
    return n_files;
}

/* The hub cannot be asked (hub_err says why): the reference's files as
 * this node's cache names them (a snapshot link whose blob is gone:
 * cache_commit and files, n_files of them; 0 when unknown) or else as the
 * peers' records list them, the fit check on the first one's header read
 * from its peer, the bytes from the peers, checked against that SHA-256,
 * and kept in the cache (blob, snapshot link at the commit, refs/) exactly
 * as a download from the hub. */
static int fetch_mesh(const hf_env *env, const model_ref *r, const model_fetch_opts *o, model_files *out,
                      const char *hub_err, const char *cache_commit, const hub_file *files, int n_files, char *err,
                      size_t errlen)
{
    char label[800];
    if (r->kind == MODEL_REF_HF_QUANT) snprintf(label, sizeof label, "%s:%s", r->repo, r->quant);
    else snprintf(label, sizeof label, "%s/%s", r->repo, r->file);
    out->hub_unreachable = 1;
    if (!o->peer_files || !o->find_peer) {
        snprintf(err, errlen, "%s: the hub cannot be asked (%s) and it is not in the cache (%s)", label, hub_err,
                 env->cache);
        return -1;
    }
    model_peer_file *pf = malloc((MODEL_MAX_PEER_FILES + MODEL_MAX_PARTS) * sizeof *pf);
    if (!pf) { snprintf(err, errlen, "out of memory"); return -1; }
    model_peer_file *chosen = pf + MODEL_MAX_PEER_FILES;
    int idx[MODEL_MAX_PARTS], k = 0, rc = -1, by_cache = 0;
    char inner[600] = "";
    for (int waited = 0;; waited += 100) {
        int n = o->peer_files(o->peer_ctx, pf, MODEL_MAX_PEER_FILES);
        if (n >= 0) {
            /* The cache's word first: it names the bytes without trusting a peer's naming. */
            k = by_cache = match_cache_links(env, r, cache_commit, files, n_files, pf, n, chosen);
            if (!k && (k = model_match_peer_files(r, pf, n, idx, MODEL_MAX_PARTS, inner, sizeof inner)) > 0)
                for (int i = 0; i < k; i++) chosen[i] = pf[idx[i]];
            break;
        }
        if (waited >= o->mesh_wait_ms || (o->cancel && *o->cancel)) {
            snprintf(inner, sizeof inner, "no peer's record arrived within %.0f s", o->mesh_wait_ms / 1000.0);
            break;
        }
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (k <= 0) {
        snprintf(err, errlen, "%s: the hub cannot be asked (%s), it is not in the cache, and the mesh cannot "
                 "give it: %s", label, hub_err, inner);
        goto out;
    }
    log_info(RS_LOG, "%s: the hub cannot be asked (%s): its %d file%s named by %s", label, hub_err, k,
             k == 1 ? "" : "s", by_cache ? "this node's cache (snapshot links)" : "the peers' records");
    uint64_t total = 0, rest = 0;
    for (int i = 0; i < k; i++) {
        total += chosen[i].size;
        if (i > 0) rest += chosen[i].size;
    }
    const char *commit = strrchr(chosen[0].ref, '@') + 1;
    peer_file_target target;
    dl_source source;
    multi_progress mp = {.o = o, .total = total};
    for (int i = 0; i < k; i++) {
        const model_peer_file *f = &chosen[i];
        const char *path = f->ref + strlen(r->repo) + 1;
        char rpath[HF_NAME_CAP], dest[MODEL_PATH_MAX], partial[MODEL_PATH_MAX + 16], flabel[800];
        snprintf(rpath, sizeof rpath, "%.*s", (int)(strrchr(f->ref, '@') - path), path);
        snprintf(flabel, sizeof flabel, "%s/%s", r->repo, rpath);
        if (!o->find_peer(o->peer_ctx, f->sha256, f->size, &target)) {
            snprintf(err, errlen, "%s: no alive peer holds it any more", flabel);
            goto out;
        }
        peer_file_source(&target, &source);
        source_head head = {&source, o->cancel};
        if (i == 0 && check_fit(label, read_source_head, &head, f->size, rest, o, &out->need_bytes, err,
                                errlen) != 0)
            goto out;
        if (hf_blob_path(env, r->repo, f->sha256, dest, sizeof dest - 16, err, errlen) != 0) goto out;
        snprintf(partial, sizeof partial, "%s.incomplete", dest);
        struct stat sb;
        if (!(stat(dest, &sb) == 0 && (uint64_t)sb.st_size == f->size)) {
            dl_job job = {.partial = partial, .dest = dest, .sha256 = f->sha256, .size = f->size,
                          .progress = on_file_progress, .progress_ctx = &mp, .label = flabel, .cancel = o->cancel,
                          .source = &source};
            if (dl_fetch(&job, err, errlen) != 0) goto out;
            out->downloaded_bytes += f->size;
        }
        mp.base += f->size;
        if (hf_link_snapshot(env, r->repo, r->revision, commit, rpath, f->sha256, out->files[i], MODEL_PATH_MAX,
                             err, errlen) != 0)
            goto out;
    }
    out->n_files = k;
    out->from_mesh = 1;
    out->hub_unreachable = 0;
    rc = 0;
out:
    free(pf);
    return rc;
}

static int fetch_hub(const model_ref *r, const model_fetch_opts *o, model_files *out, char *err, size_t errlen)
{
    hf_env env;
    hf_env_read(&env);
    dl_auth auth = {env.token, env.endpoint};
    char commit[64] = "";
    hf_cached_commit(&env, r->repo, r->revision, commit);
    hub_file *files = calloc(MODEL_MAX_PARTS, sizeof *files);
    if (!files) { snprintf(err, errlen, "out of memory"); return -1; }
    int n = 0, rc = -1, hr;
    char hub_err[700];
    if ((hr = hub_files(&env, r, o, files, &n, commit, err, errlen)) != 0) {
        if (hr == DL_UNREACHABLE) {
            snprintf(hub_err, sizeof hub_err, "%s", err);
            rc = fetch_mesh(&env, r, o, out, hub_err, "", files, 0, err, errlen);
        }
        goto out;
    }

    /* What the cache has. */
    int missing = 0;
    for (int i = 0; i < n; i++) {
        files[i].cached = commit[0] && hf_cached_file(&env, r->repo, commit, files[i].path, files[i].local,
                                                       sizeof files[i].local);
        missing += !files[i].cached;
    }
    if (missing && o->offline) {
        snprintf(err, errlen, "%s/%s is not in the cache (%s) and downloads are off", r->repo, files[0].path, env.cache);
        goto out;
    }
    /* The hub's word on what is missing: sizes, hashes, the commit. */
    uint64_t total = 0, first_size = 0, rest = 0;
    const char *first_url = NULL;
    for (int i = 0; i < n; i++) {
        if (files[i].cached) {
            struct stat sb;
            if (i > 0 && stat(files[i].local, &sb) == 0) rest += (uint64_t)sb.st_size;
            continue;
        }
        char url[2048];
        hf_resolve_url(&env, r->repo, commit[0] && strcmp(r->revision, commit) ? commit : r->revision,
                       files[i].path, url, sizeof url);
        int h = DL_UNREACHABLE;
        if (env.offline) snprintf(hub_err, sizeof hub_err, "HF_HUB_OFFLINE is set");
        else h = dl_head(url, &auth, &files[i].meta, hub_err, sizeof hub_err);
        if (h == DL_UNREACHABLE) {
            rc = fetch_mesh(&env, r, o, out, hub_err, commit, files, n, err, errlen);
            goto out;
        }
        if (h != 0) {
            snprintf(err, errlen, "%s", hub_err);
            goto out;
        }
        total += files[i].meta.size;
        if (i == 0) { first_size = files[i].meta.size; first_url = files[i].meta.url; }
        else rest += files[i].meta.size;
        if (!commit[0] && files[i].meta.commit[0]) snprintf(commit, sizeof commit, "%s", files[i].meta.commit);
    }
    if (missing && !commit[0]) {
        snprintf(err, errlen, "%s: the hub named no commit (X-Repo-Commit) for %s", r->repo, files[0].path);
        goto out;
    }
    char label[800];
    snprintf(label, sizeof label, "%s/%s", r->repo, files[0].path);
    if (missing && first_url) {
        url_head head = {first_url, &auth};
        if (check_fit(label, read_url_head, &head, first_size, rest, o, &out->need_bytes, err, errlen) != 0)
            goto out;
    } else if (missing && o->avail_what) {
        /* The first part is cached: its header is on disk. */
        log_info(RS_LOG, "%s: the first part is cached; the fit check is left to the planner", label);
    }

    multi_progress mp = {.o = o, .total = total};
    for (int i = 0; i < n; i++) {
        if (files[i].cached) continue;
        hub_file *f = &files[i];
        const char *blob = f->meta.sha256[0] ? f->meta.sha256 : f->meta.etag;
        char dest[MODEL_PATH_MAX], partial[MODEL_PATH_MAX + 16], flabel[800];
        if (hf_blob_path(&env, r->repo, blob, dest, sizeof dest - 16, err, errlen) != 0) goto out;
        snprintf(partial, sizeof partial, "%s.incomplete", dest);
        snprintf(flabel, sizeof flabel, "%s/%s", r->repo, f->path);
        struct stat sb;
        /* The blob may be there already (another revision's snapshot, or a
         * link lost): hashed names are content, so it is the same file. */
        if (!(f->meta.sha256[0] && stat(dest, &sb) == 0 && (uint64_t)sb.st_size == f->meta.size)) {
            dl_job job = {.url = f->meta.url, .auth = &auth, .partial = partial, .dest = dest,
                          .sha256 = f->meta.sha256, .size = f->meta.size, .progress = on_file_progress,
                          .progress_ctx = &mp, .label = flabel, .cancel = o->cancel};
            /* Weights cross the internet once: a peer with the same
             * SHA-256 gives them over the mesh; the hub does the rest. */
            peer_file_target target;
            dl_source source;
            if (f->meta.sha256[0] && f->meta.size && o->find_peer &&
                o->find_peer(o->peer_ctx, f->meta.sha256, f->meta.size, &target)) {
                peer_file_source(&target, &source);
                job.source = &source;
            }
            if (dl_fetch(&job, err, errlen) != 0) goto out;
            out->downloaded_bytes += f->meta.size;
        }
        mp.base += f->meta.size;
        if (hf_link_snapshot(&env, r->repo, r->revision, commit, f->path, blob, f->local, sizeof f->local, err,
                             errlen) != 0)
            goto out;
    }
    out->n_files = n;
    for (int i = 0; i < n; i++) snprintf(out->files[i], MODEL_PATH_MAX, "%s", files[i].local);
    rc = 0;
out:
    free(files);
    return rc;
}

/* ---- a URL --------------------------------------------------------------------------- */

static int fetch_url(const model_ref *r, const model_fetch_opts *o, model_files *out, char *err, size_t errlen)
{
    /* home/downloads/<hash of the URL>/<its last component>: the name keeps
     * the model id people expect, the hash keeps two URLs apart. */
    const char *base = strrchr(r->file, '/') + 1;
    char name[256];
    snprintf(name, sizeof name, "%.*s", (int)strcspn(base, "?#"), base);
    if (!name[0] || name[0] == '.') { snprintf(err, errlen, "%s: the URL names no file", r->file); return -1; }
    uint8_t h[32];
    weights_sha256(r->file, strlen(r->file), h);
    char dir[3600];
    snprintf(dir, sizeof dir, "%.3500s/downloads/%02x%02x%02x%02x%02x%02x", o->home, h[0], h[1], h[2], h[3], h[4], h[5]);
    char dest[MODEL_PATH_MAX], partial[MODEL_PATH_MAX + 16];
    snprintf(dest, sizeof dest, "%s/%s", dir, name);
    struct stat sb;
    if (stat(dest, &sb) == 0 && S_ISREG(sb.st_mode)) {
        out->n_files = 1;
        out->from_cache = 1;
        snprintf(out->files[0], MODEL_PATH_MAX, "%s", dest);
        return 0;
    }
    if (o->offline) { snprintf(err, errlen, "%s is not downloaded and downloads are off", r->file); return -1; }
    /* mkdir -p: the home may not exist yet (download before any serve). */
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        int bad = mkdir(dir, 0755) != 0 && errno != EEXIST;
        *p = '/';
        if (bad) break;
    }
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
        return -1;
    }
    dl_meta meta;
    hf_env env;
    hf_env_read(&env);
    dl_auth auth = {env.token, env.endpoint}; /* the token only if the URL is the hub's */
    if (dl_head(r->file, &auth, &meta, err, errlen) != 0) return -1;
    url_head head = {meta.url, &auth};
    if (check_fit(name, read_url_head, &head, meta.size, 0, o, &out->need_bytes, err, errlen) != 0) return -1;
    snprintf(partial, sizeof partial, "%s.incomplete", dest);
    multi_progress mp = {.o = o, .total = meta.size};
    dl_job job = {.url = meta.url, .auth = &auth, .partial = partial, .dest = dest, .sha256 = meta.sha256,
                  .size = meta.size, .progress = on_file_progress, .progress_ctx = &mp, .label = name,
                  .cancel = o->cancel};
    if (dl_fetch(&job, err, errlen) != 0) return -1;
    out->downloaded_bytes = meta.size;
    out->n_files = 1;
    snprintf(out->files[0], MODEL_PATH_MAX, "%s", dest);
    return 0;
}

/* ---- a local path ----------------------------------------------------------------------- */

static int local_files(const char *path, model_files *out, char *err, size_t errlen)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    int no, count;
    size_t stem;
    if (!model_ref_split_name(base, &no, &count, &stem)) {
        out->n_files = 1;
        snprintf(out->files[0], MODEL_PATH_MAX, "%s", path);
        return 0;
    }
    if (count > MODEL_MAX_PARTS) { snprintf(err, errlen, "%s: %d parts (at most %d)", path, count, MODEL_MAX_PARTS); return -1; }
    size_t dir_len = (size_t)(base - path);
    for (int i = 1; i <= count; i++) {
        snprintf(out->files[i - 1], MODEL_PATH_MAX, "%.*s%.*s-%05d-of-%05d.gguf", (int)dir_len, path, (int)stem,
                 base, i, count);
        if (access(out->files[i - 1], R_OK) != 0) {
            snprintf(err, errlen, "%s: part %d of %d is missing (%s)", path, i, count, out->files[i - 1]);
            return -1;
        }
    }
    out->n_files = count;
    return 0;
}

int model_fetch(const char *ref, const model_fetch_opts *o, model_files *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    dl_counters before, after;
    dl_get_counters(&before);
    model_ref r;
    struct stat sb;
    int rc;
    if (strlen(ref) < MODEL_PATH_MAX && stat(ref, &sb) == 0 && S_ISREG(sb.st_mode)) {
        out->from_cache = 1;
        rc = local_files(ref, out, err, errlen);
    } else if (model_ref_parse(ref, &r, err, errlen) != 0) {
        return -1;
    } else if (r.kind == MODEL_REF_PATH) {
        char path[MODEL_PATH_MAX];
        const char *home = getenv("HOME");
        if (!strncmp(r.file, "~/", 2) && home) snprintf(path, sizeof path, "%s/%s", home, r.file + 2);
        else snprintf(path, sizeof path, "%s", r.file);
        if (stat(path, &sb) != 0) { snprintf(err, errlen, "%s: %s", path, strerror(errno)); return -1; }
        out->from_cache = 1;
        rc = local_files(path, out, err, errlen);
    } else if (r.kind == MODEL_REF_URL) {
        rc = fetch_url(&r, o, out, err, errlen);
    } else {
        rc = fetch_hub(&r, o, out, err, errlen);
    }
    if (rc != 0) return rc;
    model_ref_id_from_file(out->files[0], out->id, sizeof out->id);
    out->n_parts = out->n_files;
    if (out->n_files > 1 && o->join_dir) {
        /* Joined once, reused while newer than the parts (multipart.h). */
        char joined[MODEL_PATH_MAX];
        snprintf(joined, sizeof joined, "%.3800s/%s.gguf", o->join_dir, out->id);
        const char *parts[MODEL_MAX_PARTS];
        for (int i = 0; i < out->n_files; i++) parts[i] = out->files[i];
        if (mkdir(o->join_dir, 0755) != 0 && errno != EEXIST) {
            snprintf(err, errlen, "cannot create %s: %s", o->join_dir, strerror(errno));
            return -1;
        }
        char inner[768];
        if (multipart_join(parts, out->n_files, joined, inner, sizeof inner) != 0) {
            snprintf(err, errlen, "joining the %d parts of %s: %s", out->n_files, out->id, inner);
            return -1;
        }
        log_info(RS_LOG, "%s: %d parts joined into %s", out->id, out->n_files, joined);
        snprintf(out->files[0], MODEL_PATH_MAX, "%s", joined);
        out->n_files = 1;
    }
    dl_get_counters(&after);
    out->from_cache = after.requests == before.requests && !out->from_mesh;
    return 0;
}
