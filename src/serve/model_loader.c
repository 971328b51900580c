/* model_loader.c: loads at run time (the load API), and standby takeover.
 * See model_loader.h.
 *
 * A load's download runs on its own thread because it blocks for minutes;
 * everything else (the job list, the pipelines, the mesh) stays on the
 * loop thread, which the thread wakes with event_active when it is done.
 * What the thread writes while running (bytes, rate) is under the job's
 * lock; the rest of the job is the loop's once the thread has finished. */
#include "serve/model_loader.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "lib/clock.h"
#include "lib/log.h"
#include "mesh/identity.h"
#include "mesh/mesh.h"
#include "models/hf.h"
#include "models/ref.h"
#include "models/resolve.h"
#include "models/weights_store.h"
#include "serve/api.h"
#include "serve/budget.h"
#include "serve/demand.h"
#include "serve/pipeline.h"

#define ML_LOG "models"
#define ML_MAX_JOBS 16
#define ML_MAX_PEERS 256
#define ML_TAKEOVER_BASE_MS 1000   /* a model nobody serves waits this long before a standby takes it ... */
#define ML_TAKEOVER_RANK_MS 3000   /* ... plus this per alive standby ranked before this one */
#define ML_RETRY_FAILED_MS 30000   /* a failed takeover of a model is not retried sooner */
#define ML_MAX_WATCH 32
#define ML_FILES_MS 2000           /* the cache's files and the peers' are looked at this often */
#define ML_MAX_PEER_FILES MODEL_MAX_PEER_FILES
#define ML_MESH_SETTLE_MS 3000     /* the peers' records are taken as known this long after the first arrived */
#define ML_MESH_WAIT_MS 5000       /* a load with the hub down waits this long for the records ... */
#define ML_START_MESH_WAIT_MS 30000 /* ... a --model at start-up this long (the mesh is being joined) */
#define ML_SECOND_HOST_CALM_MS 10000 /* a second host leaves after this long of calm (see drop_second_hosts) */

typedef struct {
    uint8_t peer[MESH_ID_BYTES];
    uint8_t sha256[32];
    uint64_t size;
    char ref[PLAN_FILE_REF_MAX + 1];  /* org/repo/path@commit */
} peer_holding;

typedef enum { JOB_DOWNLOADING, JOB_LOADING, JOB_READY, JOB_FAILED, JOB_UNLOADED } job_state;
static const char *const job_state_names[] = {"downloading", "loading", "ready", "failed", "unloaded"};

typedef struct {
    struct model_loader *L;
    char ref[MODEL_REF_MAX + 1];
    char id[MESH_MAX_NAME];           /* known once resolved */
    int takeover;                     /* started by standby takeover */
    int at_start;                     /* a --model the hub could not give at start-up: its failure stops the node */
    int second_host;                  /* added as a second host of a saturated model: leaves when the load goes */
    uint32_t peak_per_min;            /* second host, ready: the most requests a minute it has seen for the model */
    uint64_t calm_since_ms;           /* second host: since when it may leave (0: not calm) */
    job_state state;                  /* loop thread */
    char error[1024];
    uint64_t started_ms, ended_ms;
    pthread_t thread;
    int thread_live;                  /* joined when 0 */
    atomic_int cancel;
    struct event *done;
    /* Written by the thread, under lock. */
    pthread_mutex_t lock;
    uint64_t done_bytes, total_bytes;
    double rate;
    /* The thread's result, read by the loop after done fired. */
    int rc;
    model_files *mf;
    char path[MODEL_PATH_MAX];        /* the file to serve, while it is hashed */
} load_job;

typedef struct {
    char model[MESH_MAX_NAME];
    uint64_t absent_since_ms;         /* 0: served */
    uint64_t failed_at_ms;
    uint64_t saturated_since_ms;      /* 0: not every host of it is saturated */
} watch;

/* A model every alive host of which says it is saturated (their records). */
typedef struct {
    char model[MESH_MAX_NAME];
    uint64_t need_bytes;              /* from a host's plan: what one copy takes */
    int saturated_hosts;
} saturated_model;

struct model_loader {
    struct event_base *base;
    mesh *mesh;
    pipelines *ps;
    budget *budget;
    demand *demand;
    model_loader_config cfg;
    char standby_ids[MESH_MAX_MODELS][MESH_MAX_NAME]; /* the model id of each --standby-for, "" unknown */
    load_job *jobs[ML_MAX_JOBS];
    int n_jobs;
    watch watches[ML_MAX_WATCH];
    int n_watches;
    struct event *timer;
    struct event *files_timer;
    /* What alive peers' records say they hold: written by the loop, read
     * by download threads (find_peer), under files_lock. */
    pthread_mutex_t files_lock;
    peer_holding holdings[ML_MAX_PEER_FILES];
    int n_holdings;
    uint64_t records_since_ms;        /* when a peer's record was first seen; 0 not yet */
    plan_file files[PLAN_MAX_FILES];  /* loop: this node's, as published */
    int n_files;
    saturated_model saturated[PLAN_MAX_PLANS]; /* loop: from the peers' records */
    int n_saturated;
    char marked[PLAN_MAX_PLANS][MESH_MAX_NAME]; /* loop: models some alive peer marks saturated */
    int n_marked;
};

/* ---- a load ------------------------------------------------------------------ */

static void on_progress(void *ctx, uint64_t done, uint64_t total, double rate)
{
    load_job *j = ctx;
    pthread_mutex_lock(&j->lock);
    j->done_bytes = done;
    j->total_bytes = total;
    j->rate = rate;
    pthread_mutex_unlock(&j->lock);
}

/* What is free for a model: this node's budget and the members' free
 * memory (the planner splits a model that does not fit one node). */
static uint64_t members_free(model_loader *L, int *n_members)
{
    static mesh_peer peers[ML_MAX_PEERS];
    uint64_t total = 0;
    *n_members = 0;
    int n = mesh_peers(L->mesh, peers, ML_MAX_PEERS);
    for (int i = 0; i < n && i < ML_MAX_PEERS; i++) {
        if (strcmp(peers[i].state, "alive") || !strcmp(peers[i].role, "client")) continue;
        if (peers[i].memory_bytes > peers[i].memory_used) total += peers[i].memory_bytes - peers[i].memory_used;
        (*n_members)++;
    }
    return total;
}

typedef struct {
    load_job *job;
    model_fetch_opts o;
    char avail_what[128];
    char join_dir[MODEL_PATH_MAX];
} job_arg;

/* A download thread: the peers whose records list this file, up to
 * PEER_FILE_MAX_PEERS (model_fetch_opts.find_peer): they share the work. */
static int find_peer(void *ctx, const char *sha256, uint64_t size, peer_file_target *out)
{
    model_loader *L = ctx;
    uint8_t sha[32];
    if (weights_parse_hex(sha256, sha) != 0) return 0;
    int found = 0;
    pthread_mutex_lock(&L->files_lock);
    for (int i = 0; i < L->n_holdings && found < PEER_FILE_MAX_PEERS; i++) {
        const peer_holding *h = &L->holdings[i];
        if (h->size != size || memcmp(h->sha256, sha, 32)) continue;
        if (!found) {
            *out = (peer_file_target){.base = L->base, .mesh = L->mesh, .size = size};
            memcpy(out->peer, h->peer, MESH_ID_BYTES);
            memcpy(out->sha256, sha, 32);
        } else {
            memcpy(out->more[out->n_more++], h->peer, MESH_ID_BYTES);
        }
        found++;
    }
    pthread_mutex_unlock(&L->files_lock);
    return found;
}

/* A download thread, the hub down: what the peers' records list
 * (model_fetch_opts.peer_files); -1 until they are known. */
static int peer_files(void *ctx, model_peer_file *out, int max)
{
    model_loader *L = ctx;
    int n = 0;
    pthread_mutex_lock(&L->files_lock);
    if (!L->records_since_ms || clock_ms() - L->records_since_ms < ML_MESH_SETTLE_MS) n = -1;
    for (int i = 0; n >= 0 && i < L->n_holdings && n < max; i++) {
        const peer_holding *h = &L->holdings[i];
        snprintf(out[n].ref, sizeof out[n].ref, "%s", h->ref);
        weights_hex(h->sha256, out[n].sha256);
        out[n].size = h->size;
        n++;
    }
    pthread_mutex_unlock(&L->files_lock);
    return n;
}

/* The loop: this node's whole files, offered and published; the peers'. */
static void refresh_files(model_loader *L)
{
    static weights_held_file held[WEIGHTS_MAX_HELD];
    static plan_file mine[PLAN_MAX_FILES];
    hf_env env;
    hf_env_read(&env);
    int n = hf_cache_held(&env, held, WEIGHTS_MAX_HELD), k = 0;
    if (L->cfg.weights) weights_store_set_held(L->cfg.weights, held, n);
    for (int i = 0; i < n && k < PLAN_MAX_FILES; i++) {
        if (strlen(held[i].ref) > PLAN_FILE_REF_MAX) continue;
        memset(&mine[k], 0, sizeof mine[k]);
        memcpy(mine[k].sha256, held[i].sha256, 32);
        mine[k].size = held[i].size;
        snprintf(mine[k].ref, sizeof mine[k].ref, "%s", held[i].ref);
        k++;
    }
    L->n_files = L->cfg.weights ? k : 0;
    memcpy(L->files, mine, sizeof L->files);
    pipelines_set_files(L->ps, mine, L->n_files);

    static mesh_peer peers[ML_MAX_PEERS];
    static uint8_t app[MESH_MAX_APP];
    static plan plans[PLAN_MAX_PLANS];
    static plan_file theirs[PLAN_MAX_FILES];
    static plan_saturated sat[PLAN_MAX_PLANS];
    static peer_holding found[ML_MAX_PEER_FILES];
    int nh = 0, records = 0, np = mesh_peers(L->mesh, peers, ML_MAX_PEERS);
    L->n_saturated = 0;
    L->n_marked = 0;
    for (int i = 0; i < np && i < ML_MAX_PEERS; i++) {
        if (strcmp(peers[i].state, "alive")) continue;
        uint8_t id[MESH_ID_BYTES];
        if (!peers[i].app_len || identity_id_from_hex(peers[i].id, id) != 0) continue;
        int len = mesh_node_app_data(L->mesh, id, app, sizeof app);
        int nd, nf, npl;
        char err[200];
        plan_extra extra = {.files = theirs, .max_files = PLAN_MAX_FILES, .saturated = sat,
                            .max_saturated = PLAN_MAX_PLANS};
        if (len <= 0 || (npl = plan_decode_app_files(app, (size_t)len, plans, PLAN_MAX_PLANS, NULL, 0, &nd, &extra,
                                                     err, sizeof err)) < 0)
            continue;
        nf = extra.n_files;
        records++;
        for (int s = 0; s < extra.n_saturated; s++) {
            int seen = 0;
            for (int q = 0; q < L->n_marked && !seen; q++) seen = !strcmp(L->marked[q], sat[s].model);
            if (!seen && L->n_marked < PLAN_MAX_PLANS)
                snprintf(L->marked[L->n_marked++], MESH_MAX_NAME, "%.127s", sat[s].model);
            int at = 0;
            while (at < L->n_saturated && strcmp(L->saturated[at].model, sat[s].model)) at++;
            if (at == L->n_saturated) {
                if (at == PLAN_MAX_PLANS) continue;
                memset(&L->saturated[at], 0, sizeof L->saturated[at]);
                snprintf(L->saturated[at].model, sizeof L->saturated[at].model, "%.127s", sat[s].model);
                L->n_saturated++;
            }
            L->saturated[at].saturated_hosts++;
            for (int q = 0; q < npl; q++)
                if (!strcmp(plans[q].model, sat[s].model) && plans[q].need_bytes > L->saturated[at].need_bytes)
                    L->saturated[at].need_bytes = plans[q].need_bytes;
        }
        for (int f = 0; f < nf && nh < ML_MAX_PEER_FILES; f++) {
            memcpy(found[nh].peer, id, MESH_ID_BYTES);
            memcpy(found[nh].sha256, theirs[f].sha256, 32);
            found[nh].size = theirs[f].size;
            snprintf(found[nh].ref, sizeof found[nh].ref, "%s", theirs[f].ref);
            nh++;
        }
    }
    /* A second host is for a model none of whose hosts has room left. */
    for (int at = 0; at < L->n_saturated; at++) {
        int hosts = 0;
        for (int i = 0; i < np && i < ML_MAX_PEERS; i++) {
            if (strcmp(peers[i].state, "alive")) continue;
            for (int j = 0; j < peers[i].n_models; j++) hosts += !strcmp(peers[i].models[j], L->saturated[at].model);
        }
        if (hosts > L->saturated[at].saturated_hosts) L->saturated[at--] = L->saturated[--L->n_saturated];
    }
    pthread_mutex_lock(&L->files_lock);
    memcpy(L->holdings, found, (size_t)nh * sizeof found[0]);
    L->n_holdings = nh;
    if (records && !L->records_since_ms) L->records_since_ms = clock_ms();
    pthread_mutex_unlock(&L->files_lock);
}

static void on_files_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    refresh_files(arg);
}

static void *job_main(void *arg)
{
    job_arg *a = arg;
    load_job *j = a->job;
    char err[1024] = "";
    /* A --model at start-up: the peers' records first, so that a peer
     * holding the file gives it (find_peer) instead of the hub. */
    for (int waited = 0; j->at_start && waited < ML_START_MESH_WAIT_MS && !j->cancel &&
                         peer_files(j->L, NULL, 0) < 0;
         waited += 100) {
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    j->rc = model_fetch(j->ref, &a->o, j->mf, err, sizeof err);
    if (j->rc != 0) snprintf(j->error, sizeof j->error, "%s", err);
    free(a);
    event_active(j->done, 0, 0);
    return NULL;
}

static void refresh_files(model_loader *L);

/* The loop: a load ends in failure; one the node was started with stops it. */
static void job_failed(load_job *j, const char *error)
{
    j->state = JOB_FAILED;
    if (error != j->error) snprintf(j->error, sizeof j->error, "%s", error);
    log_warn(ML_LOG, "load %s: %s", j->ref, j->error);
    if (j->at_start && j->L->cfg.on_start_failed) j->L->cfg.on_start_failed(j->L->cfg.start_ctx, j->ref, j->error);
}

/* The loop: the file is hashed (remembered), so the pipelines' own add is
 * instant: map, plan, serve. */
static void serve_loaded(load_job *j, const char *error)
{
    char err[1024];
    if (error) {
        job_failed(j, error);
    } else if (pipelines_add_model(j->L->ps, j->path, err, sizeof err) != 0) {
        job_failed(j, err);
    } else {
        j->state = JOB_READY;
        log_info(ML_LOG, "load %s: serving %s%s", j->ref, j->id, j->takeover ? " (standby takeover)" : "");
    }
    j->ended_ms = clock_ms();
    refresh_files(j->L); /* a downloaded file is offered to peers at once */
}

static void on_hashed(void *user, const char *path, const uint8_t *hash, const char *error)
{
    (void)path, (void)hash;
    serve_loaded(user, error);
}

static void on_job_done(evutil_socket_t fd, short what, void *arg)
{
    load_job *j = arg;
    pthread_join(j->thread, NULL);
    j->thread_live = 0;
    j->ended_ms = clock_ms();
    if (j->rc != 0) {
        free(j->mf);
        j->mf = NULL;
        job_failed(j, j->error);
        return;
    }
    snprintf(j->id, sizeof j->id, "%s", j->mf->id);
    snprintf(j->path, sizeof j->path, "%s", j->mf->files[0]);
    free(j->mf);
    j->mf = NULL;
    j->state = JOB_LOADING;
    /* The weights hash reads the whole file: on the store's hash lane, not
     * here on the loop thread (seconds per GB for a file not seen before). */
    char err[512];
    if (j->L->cfg.weights && weights_store_add_file_async(j->L->cfg.weights, j->path, on_hashed, j, err,
                                                          sizeof err) == 0)
        return;
    serve_loaded(j, NULL);
}

static void job_free(load_job *j)
{
    if (!j) return;
    if (j->thread_live) {
        j->cancel = 1;
        pthread_join(j->thread, NULL);
    }
    if (j->done) event_free(j->done);
    pthread_mutex_destroy(&j->lock);
    free(j->mf);
    free(j);
}

/* A slot for a new job: a free one, or the oldest finished one. */
static int job_slot(model_loader *L)
{
    if (L->n_jobs < ML_MAX_JOBS) return L->n_jobs++;
    int best = -1;
    for (int i = 0; i < L->n_jobs; i++)
        if ((L->jobs[i]->state == JOB_READY || L->jobs[i]->state == JOB_FAILED ||
             L->jobs[i]->state == JOB_UNLOADED) &&
            (best < 0 || L->jobs[i]->ended_ms < L->jobs[best]->ended_ms))
            best = i;
    if (best >= 0) {
        job_free(L->jobs[best]);
        L->jobs[best] = NULL;
    }
    return best;
}

typedef enum { START_API, START_TAKEOVER, START_SECOND_HOST, START_AT_START } start_kind;

static int start_job(model_loader *L, const char *ref, start_kind kind, char *err, size_t errlen)
{
    for (int i = 0; i < L->n_jobs; i++)
        if (!strcmp(L->jobs[i]->ref, ref) &&
            (L->jobs[i]->state == JOB_DOWNLOADING || L->jobs[i]->state == JOB_LOADING)) {
            snprintf(err, errlen, "%s is being loaded already", ref);
            return -1;
        }
    int slot = job_slot(L);
    if (slot < 0) { snprintf(err, errlen, "%d loads are under way: wait for one to end", ML_MAX_JOBS); return -1; }
    load_job *j = calloc(1, sizeof *j);
    job_arg *a = calloc(1, sizeof *a);
    if (j) j->mf = malloc(sizeof *j->mf);
    if (!j || !a || !j->mf) {
        if (j) free(j->mf);
        free(j);
        free(a);
        if (slot == L->n_jobs - 1) L->n_jobs--;
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    pthread_mutex_init(&j->lock, NULL);
    j->L = L;
    snprintf(j->ref, sizeof j->ref, "%s", ref);
    int takeover = kind == START_TAKEOVER || kind == START_SECOND_HOST, at_start = kind == START_AT_START;
    j->takeover = takeover;
    j->second_host = kind == START_SECOND_HOST;
    j->at_start = at_start;
    j->state = JOB_DOWNLOADING;
    j->started_ms = clock_ms();
    j->done = event_new(L->base, -1, 0, on_job_done, j);
    int members;
    uint64_t free_bytes = budget_free(L->budget) + members_free(L, &members);
    a->job = j;
    snprintf(a->avail_what, sizeof a->avail_what, "the mesh's free memory (this node and %d member%s)", members,
             members == 1 ? "" : "s");
    a->o = (model_fetch_opts){.home = L->cfg.home, .avail_bytes = free_bytes, .avail_what = a->avail_what,
                              .n_ctx = L->cfg.n_ctx, .n_lanes = L->cfg.n_lanes, .n_threads = L->cfg.n_threads,
                              .kv_type = L->cfg.kv_type,
                              .progress = on_progress, .progress_ctx = j, .cancel = &j->cancel,
                              .join_dir = a->join_dir, .find_peer = find_peer, .peer_ctx = L,
                              .peer_files = peer_files,
                              .mesh_wait_ms = at_start ? ML_START_MESH_WAIT_MS : ML_MESH_WAIT_MS};
    if (at_start) {
        /* As at start-up: this node's own budget, none with --split. */
        a->o.avail_bytes = budget_free(L->budget);
        a->o.avail_what = L->cfg.split ? NULL : "this node's free budget (--max-memory)";
    }
    refresh_files(L); /* the peers' files as they are now */
    snprintf(a->join_dir, sizeof a->join_dir, "%.4000s/cache/joined", L->cfg.home);
    L->jobs[slot] = j;
    if (!j->done || pthread_create(&j->thread, NULL, job_main, a) != 0) {
        free(a);
        j->state = JOB_FAILED;
        j->ended_ms = clock_ms();
        snprintf(j->error, sizeof j->error, "cannot start a thread for the download");
        snprintf(err, errlen, "%s", j->error);
        return -1;
    }
    j->thread_live = 1;
    log_info(ML_LOG, "load %s: started%s", ref, takeover ? " (standby takeover)" : "");
    return 0;
}

int model_loader_start(model_loader *L, const char *ref, char *err, size_t errlen)
{
    model_ref r;
    struct stat sb;
    /* A malformed reference is refused now, not in the status later. */
    if (!(strlen(ref) < MODEL_PATH_MAX && stat(ref, &sb) == 0) && model_ref_parse(ref, &r, err, errlen) != 0)
        return -1;
    return start_job(L, ref, START_API, err, errlen);
}

int model_loader_start_waiting(model_loader *L, const char *ref, char *err, size_t errlen)
{
    return start_job(L, ref, START_AT_START, err, errlen);
}

/* ---- standby takeover ----------------------------------------------------------- */

/* A load of model id under way or done (a takeover's id is known from its
 * reference's file name before it resolves). */
static int has_job_for(model_loader *L, const char *id)
{
    for (int i = 0; i < L->n_jobs; i++) {
        load_job *j = L->jobs[i];
        if (j->state == JOB_FAILED || j->state == JOB_UNLOADED) continue;
        char rid[MESH_MAX_NAME];
        model_ref_id_from_file(j->ref, rid, sizeof rid);
        if (!strcmp(j->id, id) || !strcmp(rid, id)) return 1;
    }
    return 0;
}

/* A GGUF whose model id is id under dir (depth levels down), into out. */
static int find_local(const char *dir, const char *id, int depth, char *out, size_t cap)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *de;
    int found = 0;
    while (!found && (de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.') continue;
        char path[MODEL_PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s", dir, de->d_name) >= (int)sizeof path) continue;
        struct stat sb;
        if (stat(path, &sb) != 0) continue;
        size_t n = strlen(de->d_name);
        if (S_ISDIR(sb.st_mode) && depth > 0) {
            found = find_local(path, id, depth - 1, out, cap);
        } else if (S_ISREG(sb.st_mode) && n > 5 && !strcasecmp(de->d_name + n - 5, ".gguf")) {
            char fid[MESH_MAX_NAME];
            int no, count;
            if (model_ref_split_name(de->d_name, &no, &count, NULL) && no != 1) continue;
            model_ref_id_from_file(de->d_name, fid, sizeof fid);
            if (!strcmp(fid, id)) {
                snprintf(out, cap, "%s", path);
                found = 1;
            }
        }
    }
    closedir(d);
    return found;
}

/* How this node could get model id: a --standby-for reference, or a file
 * it holds. 1 with the reference in out. */
static int takeover_ref(model_loader *L, const char *id, char *out, size_t cap)
{
    for (int i = 0; i < L->cfg.n_standby_for; i++)
        if (!strcmp(L->standby_ids[i], id)) {
            snprintf(out, cap, "%s", L->cfg.standby_for[i]);
            return 1;
        }
    char dir[MODEL_PATH_MAX];
    snprintf(dir, sizeof dir, "%.4000s/models", L->cfg.home);
    if (find_local(dir, id, 0, out, cap)) return 1;
    snprintf(dir, sizeof dir, "%.4000s/downloads", L->cfg.home);
    if (find_local(dir, id, 1, out, cap)) return 1;
    hf_env env;
    hf_env_read(&env);
    return find_local(env.cache, id, 6, out, cap);
}

/* Alive standby members whose id sorts before this node's: they go first. */
static int standby_rank(model_loader *L)
{
    static mesh_peer peers[ML_MAX_PEERS];
    int n = mesh_peers(L->mesh, peers, ML_MAX_PEERS), rank = 0;
    const char *self = mesh_node_id_hex(L->mesh);
    for (int i = 0; i < n && i < ML_MAX_PEERS; i++)
        if (!strcmp(peers[i].state, "alive") && !strcmp(peers[i].role, "standby") && strcmp(peers[i].id, self) < 0)
            rank++;
    return rank;
}

static watch *watch_of(model_loader *L, const char *model)
{
    for (int i = 0; i < L->n_watches; i++)
        if (!strcmp(L->watches[i].model, model)) return &L->watches[i];
    if (L->n_watches == ML_MAX_WATCH) return NULL;
    watch *w = &L->watches[L->n_watches++];
    memset(w, 0, sizeof *w);
    snprintf(w->model, sizeof w->model, "%s", model);
    return w;
}

/* Whether model is marked saturated by a host: this node's own record, or
 * an alive peer's (refresh_files). */
static int marked_saturated(model_loader *L, const char *model)
{
    static uint8_t app[MESH_MAX_APP];
    for (int i = 0; i < L->n_marked; i++)
        if (!strcmp(L->marked[i], model)) return 1;
    int len = mesh_node_app_data(L->mesh, mesh_node_id(L->mesh), app, sizeof app);
    return len > 0 && plan_app_marks_saturated(app, (size_t)len, model);
}

/* An alive peer serves model (so leaving it leaves it served). */
static int served_elsewhere(model_loader *L, const char *model)
{
    static mesh_peer peers[ML_MAX_PEERS];
    int n = mesh_peers(L->mesh, peers, ML_MAX_PEERS);
    for (int i = 0; i < n && i < ML_MAX_PEERS; i++) {
        if (strcmp(peers[i].state, "alive")) continue;
        for (int j = 0; j < peers[i].n_models; j++)
            if (!strcmp(peers[i].models[j], model)) return 1;
    }
    return 0;
}

/* A second host leaves when the load that brought it has gone: the
 * trigger was "every host saturated"; leaving needs a second, lower
 * threshold held for a while, or the two would chase each other (the
 * load split over two hosts clears the first one's mark at once):
 *   - no host marks the model saturated (its own record and its peers'),
 *   - another alive node serves it,
 *   - this node saw no request for it for ML_SECOND_HOST_CALM_MS, or the
 *     requests a minute it sees for it fell to half the most it has seen
 *     since it became a host (a load that stays keeps the rate near its
 *     peak; the one-minute window is slow to fall, hence the idle test),
 * all of them for ML_SECOND_HOST_CALM_MS without a break. It then unloads
 * the model with the API's drain (requests in flight finish; new ones go
 * to the other host) and does not take it again for ML_RETRY_FAILED_MS. */
static void drop_second_hosts(model_loader *L, uint64_t now)
{
    static plan_demand mine[PLAN_MAX_DEMAND];
    int nd = demand_rates(L->demand, mine, PLAN_MAX_DEMAND);
    for (int i = 0; i < L->n_jobs; i++) {
        load_job *j = L->jobs[i];
        if (!j->second_host || j->state != JOB_READY) continue;
        uint32_t rate = 0;
        for (int k = 0; k < nd; k++)
            if (!strcmp(mine[k].model, j->id)) rate = mine[k].per_min;
        if (rate > j->peak_per_min) j->peak_per_min = rate;
        uint64_t last = demand_last_ms(L->demand, j->id);
        int idle = now - (last > j->ended_ms ? last : j->ended_ms) >= ML_SECOND_HOST_CALM_MS;
        int calm = !marked_saturated(L, j->id) && served_elsewhere(L, j->id) &&
                   (idle || 2ull * rate <= j->peak_per_min);
        if (!calm) {
            j->calm_since_ms = 0;
            continue;
        }
        if (!j->calm_since_ms) j->calm_since_ms = now;
        if (now - j->calm_since_ms < ML_SECOND_HOST_CALM_MS) continue;
        char err[512];
        int rc = pipelines_remove_model(L->ps, j->id, MODEL_DRAIN_DEFAULT_S * 1000, err, sizeof err);
        if (rc < 0 || rc == 1) {
            log_warn(ML_LOG, "%s: leaving as a second host: %s", j->id, err);
            j->calm_since_ms = 0;
            continue;
        }
        log_info(ML_LOG, "%s: the load is gone (%s; %u requests a minute here, %u at most; no host saturated "
                 "for %d s): no longer a second host%s", j->id, idle ? "no request here" : "half the peak rate", rate,
                 j->peak_per_min, ML_SECOND_HOST_CALM_MS / 1000, rc == 2 ? " (draining)" : "");
        j->state = JOB_UNLOADED;
        watch *w = watch_of(L, j->id);
        if (w) w->failed_at_ms = now;
    }
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    model_loader *L = arg;
    static plan_demand wanted[PLAN_MAX_DEMAND];
    int n = demand_in_mesh(L->demand, L->mesh, wanted, PLAN_MAX_DEMAND);
    uint64_t now = clock_ms();
    for (int i = 0; i < n; i++) {
        const char *model = wanted[i].model;
        char why[8];
        uint8_t host[MESH_ID_BYTES];
        watch *w = watch_of(L, model);
        if (!w) continue;
        if (pipelines_model_state(L->ps, model, why, sizeof why) != PIPELINE_UNKNOWN ||
            mesh_pick_host(L->mesh, model, host) == 0 || has_job_for(L, model)) {
            w->absent_since_ms = 0;
            continue;
        }
        if (!w->absent_since_ms) w->absent_since_ms = now;
        uint64_t wait = ML_TAKEOVER_BASE_MS + (uint64_t)standby_rank(L) * ML_TAKEOVER_RANK_MS;
        if (now - w->absent_since_ms < wait || (w->failed_at_ms && now - w->failed_at_ms < ML_RETRY_FAILED_MS))
            continue;
        char ref[MODEL_PATH_MAX], err[512];
        if (!takeover_ref(L, model, ref, sizeof ref)) continue;
        log_info(ML_LOG, "%s is asked for (%u a minute) and no live node serves it: taking it over from %s",
                 model, wanted[i].per_min, ref);
        if (start_job(L, ref, START_TAKEOVER, err, sizeof err) != 0) {
            w->failed_at_ms = now;
            log_warn(ML_LOG, "takeover of %s: %s", model, err);
        }
    }
    /* A second host for a saturated model: a standby with the memory for
     * one more copy (its own budget: a second copy is not split) and a
     * source for it, after the same rank-ordered wait. */
    for (int i = 0; i < L->n_saturated; i++) {
        const saturated_model *sm = &L->saturated[i];
        watch *w = watch_of(L, sm->model);
        if (!w) continue;
        if (pipelines_coordinates(L->ps, sm->model) || has_job_for(L, sm->model) ||
            budget_free(L->budget) < sm->need_bytes) {
            w->saturated_since_ms = 0;
            continue;
        }
        if (!w->saturated_since_ms) w->saturated_since_ms = now;
        uint64_t wait = ML_TAKEOVER_BASE_MS + (uint64_t)standby_rank(L) * ML_TAKEOVER_RANK_MS;
        if (now - w->saturated_since_ms < wait || (w->failed_at_ms && now - w->failed_at_ms < ML_RETRY_FAILED_MS))
            continue;
        char ref[MODEL_PATH_MAX], err[512];
        if (!takeover_ref(L, sm->model, ref, sizeof ref)) continue;
        log_info(ML_LOG, "%s: every host is saturated (%d): adding this node as another host, from %s", sm->model,
                 sm->saturated_hosts, ref);
        w->saturated_since_ms = 0;
        if (start_job(L, ref, START_SECOND_HOST, err, sizeof err) != 0) {
            w->failed_at_ms = now;
            log_warn(ML_LOG, "second host for %s: %s", sm->model, err);
        }
    }
    drop_second_hosts(L, now);
    /* A takeover that failed is not tried again at once. */
    for (int i = 0; i < L->n_jobs; i++) {
        load_job *j = L->jobs[i];
        if (!j->takeover || j->state != JOB_FAILED) continue;
        char rid[MESH_MAX_NAME];
        model_ref_id_from_file(j->ref, rid, sizeof rid);
        watch *w = watch_of(L, j->id[0] ? j->id : rid);
        if (w && w->failed_at_ms < j->ended_ms) w->failed_at_ms = j->ended_ms;
    }
}

/* ---- life cycle, status, HTTP ------------------------------------------------------ */

model_loader *model_loader_new(struct event_base *base, mesh *m, pipelines *ps, budget *b, demand *d,
                               const model_loader_config *cfg)
{
    model_loader *L = calloc(1, sizeof *L);
    if (!L) return NULL;
    L->base = base;
    L->budget = b;
    L->mesh = m;
    L->ps = ps;
    L->demand = d;
    L->cfg = *cfg;
    if (L->cfg.n_standby_for > MESH_MAX_MODELS) L->cfg.n_standby_for = MESH_MAX_MODELS;
    /* The model id each --standby-for gives: from its file name, or for
     * repo:QUANT from the cache (unknown until it is cached). */
    for (int i = 0; i < L->cfg.n_standby_for; i++) {
        const char *ref = L->cfg.standby_for[i];
        model_ref r;
        char err[512];
        struct stat sb;
        if (stat(ref, &sb) == 0) {
            model_ref_id_from_file(ref, L->standby_ids[i], sizeof L->standby_ids[i]);
        } else if (model_ref_parse(ref, &r, err, sizeof err) != 0) {
            log_warn(ML_LOG, "--standby-for %s: %s", ref, err);
        } else if (r.kind != MODEL_REF_HF_QUANT) {
            model_ref_id_from_file(r.file, L->standby_ids[i], sizeof L->standby_ids[i]);
        } else {
            model_files *mf = malloc(sizeof *mf);
            model_fetch_opts o = {.home = cfg->home, .offline = 1};
            if (mf && model_fetch(ref, &o, mf, err, sizeof err) == 0)
                snprintf(L->standby_ids[i], MESH_MAX_NAME, "%s", mf->id);
            else
                log_warn(ML_LOG, "--standby-for %s: not in the cache, so its model id is unknown: %s", ref, err);
            free(mf);
        }
    }
    pthread_mutex_init(&L->files_lock, NULL);
    L->files_timer = event_new(base, -1, EV_PERSIST, on_files_timer, L);
    struct timeval files_every = {ML_FILES_MS / 1000, (ML_FILES_MS % 1000) * 1000};
    if (!L->files_timer || event_add(L->files_timer, &files_every) != 0) {
        model_loader_free(L);
        return NULL;
    }
    refresh_files(L);
    if (cfg->take_over) {
        L->timer = event_new(base, -1, EV_PERSIST, on_timer, L);
        struct timeval every = {1, 0};
        if (!L->timer || event_add(L->timer, &every) != 0) {
            model_loader_free(L);
            return NULL;
        }
    }
    return L;
}

void model_loader_free(model_loader *L)
{
    if (!L) return;
    if (L->timer) event_free(L->timer);
    if (L->files_timer) event_free(L->files_timer);
    for (int i = 0; i < L->n_jobs; i++) job_free(L->jobs[i]);
    pthread_mutex_destroy(&L->files_lock);
    free(L);
}

void model_loader_status(model_loader *L, cJSON *root)
{
    cJSON *loads = cJSON_AddArrayToObject(root, "loads");
    for (int i = 0; i < L->n_jobs; i++) {
        load_job *j = L->jobs[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "ref", j->ref);
        if (j->id[0]) cJSON_AddStringToObject(o, "model", j->id);
        cJSON_AddStringToObject(o, "state", job_state_names[j->state]);
        cJSON_AddBoolToObject(o, "takeover", j->takeover);
        if (j->second_host) cJSON_AddBoolToObject(o, "second_host", 1);
        pthread_mutex_lock(&j->lock);
        cJSON_AddNumberToObject(o, "done_bytes", (double)j->done_bytes);
        cJSON_AddNumberToObject(o, "total_bytes", (double)j->total_bytes);
        cJSON_AddNumberToObject(o, "bytes_per_s", j->rate);
        pthread_mutex_unlock(&j->lock);
        if (j->state == JOB_FAILED) cJSON_AddStringToObject(o, "error", j->error);
        cJSON_AddItemToArray(loads, o);
    }
    cJSON *files = cJSON_AddArrayToObject(root, "files");
    for (int i = 0; i < L->n_files; i++) {
        cJSON *o = cJSON_CreateObject();
        char hex[WEIGHTS_HASH_HEX];
        weights_hex(L->files[i].sha256, hex);
        cJSON_AddStringToObject(o, "ref", L->files[i].ref);
        cJSON_AddStringToObject(o, "sha256", hex);
        cJSON_AddNumberToObject(o, "size", (double)L->files[i].size);
        cJSON_AddItemToArray(files, o);
    }
    pthread_mutex_lock(&L->files_lock);
    cJSON_AddNumberToObject(root, "peer_files", L->n_holdings);
    pthread_mutex_unlock(&L->files_lock);
    dl_counters dc;
    dl_get_counters(&dc);
    cJSON *dj = cJSON_AddObjectToObject(root, "downloads");
    cJSON_AddNumberToObject(dj, "requests", (double)dc.requests);
    cJSON_AddNumberToObject(dj, "bytes", (double)dc.bytes);
    cJSON_AddNumberToObject(dj, "from_peers_bytes", (double)dc.source_bytes);
    cJSON_AddNumberToObject(dj, "peer_failures", (double)dc.source_failures);
    static plan_demand wanted[PLAN_MAX_DEMAND];
    int n = demand_in_mesh(L->demand, L->mesh, wanted, PLAN_MAX_DEMAND);
    cJSON *dm = cJSON_AddObjectToObject(root, "demand");
    for (int i = 0; i < n; i++) cJSON_AddNumberToObject(dm, wanted[i].model, wanted[i].per_min);
}

static int answer(char **json, int status, const char *message, const char *code)
{
    *json = api_error_json(message, "invalid_request_error", code);
    return status;
}

int model_loader_http(void *ctx, const char *path, const char *body, size_t len, char **json)
{
    model_loader *L = ctx;
    *json = NULL;
    int load = !strcmp(path, "/api/models/load"), unload = !strcmp(path, "/api/models/unload");
    if (!load && !unload) return answer(json, 404, "no such route: POST /api/models/load or /unload", NULL);
    cJSON *root = cJSON_ParseWithLength(body, len);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(root) || !cJSON_IsString(model) || !model->valuestring[0]) {
        cJSON_Delete(root);
        return answer(json, 400, "the body must be a JSON object with \"model\" (a string)", NULL);
    }
    char ref[MODEL_REF_MAX + 1], err[1024];
    if (strlen(model->valuestring) > MODEL_REF_MAX) {
        cJSON_Delete(root);
        return answer(json, 400, "\"model\" is longer than 1024 bytes", NULL);
    }
    const cJSON *drain = cJSON_GetObjectItemCaseSensitive(root, "drain_s");
    if (unload && drain && (!cJSON_IsNumber(drain) || !(drain->valuedouble >= 0 && drain->valuedouble <= MODEL_DRAIN_MAX_S))) {
        cJSON_Delete(root);
        return answer(json, 400, "\"drain_s\" must be a number of seconds from 0 to 3600", NULL);
    }
    double drain_s = drain ? drain->valuedouble : MODEL_DRAIN_DEFAULT_S;
    snprintf(ref, sizeof ref, "%s", model->valuestring);
    cJSON_Delete(root);
    if (unload) {
        int rc = pipelines_remove_model(L->ps, ref, (int)(drain_s * 1000), err, sizeof err);
        if (rc == 1 || rc < 0) return answer(json, rc > 0 ? 409 : 404, err, rc > 0 ? NULL : "model_not_found");
        for (int i = 0; i < L->n_jobs; i++)
            if (L->jobs[i]->state == JOB_READY && !strcmp(L->jobs[i]->id, ref)) L->jobs[i]->state = JOB_UNLOADED;
        /* A takeover of it must not start again at once: it was asked away. */
        watch *w = watch_of(L, ref);
        if (w) w->failed_at_ms = clock_ms();
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "model", ref);
        cJSON_AddStringToObject(o, "state", rc == 2 ? "draining" : "unloaded");
        if (rc == 2) cJSON_AddNumberToObject(o, "drain_s", drain_s);
        *json = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        return rc == 2 ? 202 : 200;
    }
    if (model_loader_start(L, ref, err, sizeof err) != 0) return answer(json, 400, err, NULL);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", ref);
    cJSON_AddStringToObject(o, "state", "downloading");
    *json = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return 202;
}
