/* node.c: start-up, the status document, and shutdown of one node. See node.h.
 *
 * Order matters at start-up: the mesh first (plans need it), then the
 * weights store, the stage host and the models (each planned: solo at once
 * when it fits), then the HTTP servers, and only then is the token printed,
 * so that whoever waits for "token:" can send requests and join at once. */
#include "serve/node.h"

#include <cjson/cJSON.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine/engine.h"
#include "lib/clock.h"
#include "lib/log.h"
#include "lib/sysinfo.h"
#include "mesh/mesh.h"
#include "models/resolve.h"
#include "models/weights_store.h"
#include "serve/api.h"
#include "serve/budget.h"
#include "serve/console_history.h"
#include "serve/demand.h"
#include "serve/http.h"
#include "serve/metrics.h"
#include "serve/model_loader.h"
#include "serve/pipeline.h"
#include "serve/scheduler.h"
#include "serve/stage.h"

#define NODE_DEFAULT_PARALLEL 4 /* --parallel: lanes per model */
#define NODE_MAX_PEERS 256
#define LLMESH_VERSION "0.1.0"

typedef struct {
    const node_config *cfg;
    struct event_base *base;
    mesh *mesh;
    sched *sched;
    budget budget;
    weights_store *weights;
    stage_host *stages;
    pipelines *pipelines;
    api *api;
    http_server *api_http;
    http_server *console_http;
    metrics *metrics;
    console_history *history;    /* GET /api/history: the traffic of the last minutes */
    struct event *history_timer;
    demand *demand;
    model_loader *loader;
    struct event *sigint, *sigterm, *drain_timer;
    int signals_seen;
    uint64_t drain_deadline_ms;
    const char *role;
    int console_loopback;        /* the console is bound to loopback only: it may show the token */
    int waiting[NODE_MAX_MODELS]; /* --model indexes the hub could not give: loaded from the mesh */
    int n_waiting;
    int start_failed;            /* one of them failed: the node exits with 1 */
} node;

static char *status_json(void *ctx)
{
    node *n = ctx;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "node_id", mesh_node_id_hex(n->mesh));
    /* A client accepts no joins: it has no token to give. The token carries
     * the mesh secret: only a console on loopback shows it (whoever reaches
     * a console bound elsewhere, key or not, must not learn how to join). */
    if (mesh_is_passive(n->mesh) || !n->console_loopback) cJSON_AddNullToObject(root, "token");
    else cJSON_AddStringToObject(root, "token", mesh_token(n->mesh));
    cJSON_AddStringToObject(root, "role", n->role);
    cJSON_AddStringToObject(root, "version", LLMESH_VERSION);
    cJSON_AddBoolToObject(root, "api_key_required", n->cfg->api_key != NULL);
    cJSON_AddNumberToObject(root, "memory_bytes", (double)n->budget.total);
    cJSON_AddNumberToObject(root, "memory_used", (double)n->budget.used);
    cJSON *models = cJSON_AddArrayToObject(root, "models");
    uint64_t model_bytes = 0;
    for (int i = 0; i < sched_model_count(n->sched); i++) {
        engine_model *m = sched_model_at(n->sched, i);
        char why[8];
        if (pipelines_model_state(n->pipelines, engine_model_id(m), why, sizeof why) != PIPELINE_READY)
            continue;
        cJSON_AddItemToArray(models, cJSON_CreateString(engine_model_id(m)));
        model_bytes += engine_model_bytes(m);
    }
    cJSON_AddNumberToObject(root, "model_bytes", (double)model_bytes);
    pipelines_status(n->pipelines, root);
    if (n->stages) stage_host_status(n->stages, cJSON_AddArrayToObject(root, "stages"));
    if (n->weights) weights_store_status_json(n->weights, cJSON_AddObjectToObject(root, "weights"));
    if (n->loader) model_loader_status(n->loader, root);
    cJSON_AddNumberToObject(root, "jobs_active", sched_jobs_active(n->sched));
    cJSON *lanes = cJSON_AddArrayToObject(root, "lanes"); /* per local model: slots, queue, batch steps */
    for (int i = 0; i < sched_model_count(n->sched); i++) {
        sched_model_stats st;
        sched_model_get_stats(n->sched, i, &st);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "model", engine_model_id(sched_model_at(n->sched, i)));
        cJSON_AddNumberToObject(o, "lanes", st.lanes);
        cJSON_AddNumberToObject(o, "busy", st.busy);
        cJSON_AddNumberToObject(o, "queued", st.queued);
        cJSON_AddNumberToObject(o, "refused_queue_full", (double)st.refused_full);
        cJSON_AddNumberToObject(o, "queue_timeouts", (double)st.timed_out);
        cJSON_AddNumberToObject(o, "batch_steps", (double)st.steps.steps);
        cJSON_AddNumberToObject(o, "batch_sequences", (double)st.steps.seqs);
        cJSON_AddNumberToObject(o, "batch_tokens", (double)st.steps.tokens);
        cJSON_AddItemToArray(lanes, o);
    }
    cJSON_AddNumberToObject(root, "api_port", http_server_port(n->api_http));
    if (mesh_is_passive(n->mesh)) {
        int64_t age = mesh_routes_age_ms(n->mesh);
        if (age < 0) cJSON_AddNullToObject(root, "routes_age_ms");
        else cJSON_AddNumberToObject(root, "routes_age_ms", (double)age);
    } else {
        cJSON_AddNumberToObject(root, "clients_connected", mesh_clients_connected(n->mesh));
    }

    static mesh_peer peers[NODE_MAX_PEERS];
    int count = mesh_peers(n->mesh, peers, NODE_MAX_PEERS);
    if (count > NODE_MAX_PEERS) count = NODE_MAX_PEERS;
    cJSON *list = cJSON_AddArrayToObject(root, "peers");
    for (int i = 0; i < count; i++) {
        mesh_peer *p = &peers[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "id", p->id);
        cJSON *addrs = cJSON_AddArrayToObject(o, "addresses");
        for (int j = 0; j < p->n_addresses; j++) cJSON_AddItemToArray(addrs, cJSON_CreateString(p->addresses[j]));
        cJSON_AddStringToObject(o, "role", p->role);
        cJSON *pm = cJSON_AddArrayToObject(o, "models");
        for (int j = 0; j < p->n_models; j++) cJSON_AddItemToArray(pm, cJSON_CreateString(p->models[j]));
        cJSON_AddNumberToObject(o, "memory_bytes", (double)p->memory_bytes);
        cJSON_AddNumberToObject(o, "memory_used", (double)p->memory_used);
        cJSON_AddNumberToObject(o, "clients", p->clients);
        cJSON_AddStringToObject(o, "state", p->state);
        if (p->link[0]) cJSON_AddStringToObject(o, "link", p->link); /* "direct" | "relayed" */
        if (p->link[0]) cJSON_AddNumberToObject(o, "rtt_ms", p->rtt_ms);
        cJSON_AddNumberToObject(o, "rx_bytes", (double)p->rx_bytes);
        cJSON_AddNumberToObject(o, "tx_bytes", (double)p->tx_bytes);
        cJSON_AddItemToArray(list, o);
    }

    /* Per model: requests, tokens and timings counted for /metrics, and
     * the lanes and queue of those served here (the console's traffic). */
    metrics_status_json(n->metrics, n->sched, cJSON_AddArrayToObject(root, "traffic"));
    console_events_stats es;
    http_console_events_stats(n->console_http, &es);
    cJSON *ev = cJSON_AddObjectToObject(root, "console_events");
    cJSON_AddNumberToObject(ev, "subscribers", es.subscribers);
    cJSON_AddNumberToObject(ev, "max_subscribers", CONSOLE_EVENTS_MAX);
    cJSON_AddNumberToObject(ev, "accepted", (double)es.accepted);
    cJSON_AddNumberToObject(ev, "refused", (double)es.refused);
    cJSON_AddNumberToObject(ev, "dropped", (double)es.dropped);

    api_counters ac;
    api_get_counters(n->api, &ac);
    mesh_counters mc;
    mesh_get_counters(n->mesh, &mc);
    cJSON *c = cJSON_AddObjectToObject(root, "counters");
    cJSON_AddNumberToObject(c, "requests", (double)ac.requests);
    cJSON_AddNumberToObject(c, "bad_requests", (double)ac.bad_requests);
    cJSON_AddNumberToObject(c, "forwarded", (double)ac.forwarded);
    cJSON_AddNumberToObject(c, "retried", (double)ac.retried);
    cJSON_AddNumberToObject(c, "failed", (double)ac.failed);
    cJSON_AddNumberToObject(c, "auth_refused", (double)(http_server_auth_refused(n->api_http) +
                                                        http_server_auth_refused(n->console_http)));
    http_guard_stats ga, gc;
    http_server_guard_stats(n->api_http, &ga);
    http_server_guard_stats(n->console_http, &gc);
    cJSON_AddNumberToObject(c, "http_refused", (double)(ga.refused + gc.refused));
    cJSON_AddNumberToObject(c, "http_slow_cut", (double)(ga.cut_slow + gc.cut_slow));
    cJSON_AddNumberToObject(c, "http_connections", (double)(ga.open + gc.open));
    cJSON_AddNumberToObject(c, "bad_frames", (double)mc.bad_frames);
    cJSON_AddNumberToObject(c, "streams_opened", (double)mc.streams_opened);
    cJSON_AddNumberToObject(c, "streams_accepted", (double)mc.streams_accepted);
    cJSON_AddNumberToObject(c, "routes_served", (double)mc.routes_served);
    cJSON_AddNumberToObject(c, "clients_refused", (double)mc.clients_refused);
    cJSON_AddNumberToObject(c, "routes_pulled", (double)mc.routes_pulled);
    cJSON_AddNumberToObject(c, "routes_failed", (double)mc.routes_failed);
    cJSON_AddNumberToObject(c, "peers_suspected", (double)mc.peers_suspected);
    cJSON_AddNumberToObject(c, "peers_dead", (double)mc.peers_dead);
    cJSON_AddNumberToObject(c, "peers_alive_again", (double)mc.peers_alive_again);
    cJSON_AddNumberToObject(c, "peers_left", (double)mc.peers_left);
    cJSON_AddNumberToObject(c, "admission_refused", (double)mc.admission_refused);
    cJSON_AddNumberToObject(c, "peers_banned", (double)mc.peers_banned);
    cJSON_AddNumberToObject(c, "banned_refused", (double)mc.banned_refused);
    cJSON_AddNumberToObject(c, "quic_refused", (double)mc.conns_refused);
    cJSON_AddNumberToObject(c, "quic_refused_addr", (double)mc.conns_refused_addr);
    cJSON_AddNumberToObject(c, "quic_half_open", (double)mc.conns_half_open);
    cJSON_AddNumberToObject(c, "stage_bad_frames", n->stages ? (double)stage_host_bad_frames(n->stages) : 0);
    weights_counters wc = {0};
    if (n->weights) weights_get_counters(n->weights, &wc);
    cJSON_AddNumberToObject(c, "weights_served_bytes", (double)wc.served_bytes);
    cJSON_AddNumberToObject(c, "weights_fetched_bytes", (double)wc.fetched_bytes);
    cJSON_AddNumberToObject(c, "weights_bad_frames", (double)wc.bad_frames);
    cJSON_AddNumberToObject(c, "weights_bad_chunks", (double)wc.bad_chunks);

    char *out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return out;
}

/* GET /metrics: the same sources as status_json. */
static char *metrics_text(void *ctx)
{
    node *n = ctx;
    http_guard_stats ga, gc;
    http_server_guard_stats(n->api_http, &ga);
    http_server_guard_stats(n->console_http, &gc);
    metrics_sources src = {
        .api = n->api, .mesh = n->mesh, .sched = n->sched, .pipelines = n->pipelines,
        .stages = n->stages, .weights = n->weights,
        .auth_refused = http_server_auth_refused(n->api_http) + http_server_auth_refused(n->console_http),
        .http_refused = ga.refused + gc.refused,
        .http_slow_cut = ga.cut_slow + gc.cut_slow,
        .http_connections = ga.open + gc.open,
    };
    return metrics_render(n->metrics, &src);
}

/* A number of a "traffic" entry, or absent when it has none. */
static double traffic_number(const cJSON *o, const char *key, double absent)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) && v->valuedouble >= 0 ? v->valuedouble : absent;
}

/* Every CONSOLE_HISTORY_INTERVAL_MS: a point of the console's history, from
 * the same per-model totals as the status's "traffic" (so the graphs a
 * fresh page draws agree with the rates it computes from the status). */
static void on_history_timer(evutil_socket_t fd, short what, void *arg)
{
    node *n = arg;
    cJSON *traffic = cJSON_CreateArray();
    if (!traffic) return;
    metrics_status_json(n->metrics, n->sched, traffic);
    console_history_sample s[CONSOLE_HISTORY_MODELS];
    int count = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, traffic) {
        const cJSON *model = cJSON_GetObjectItemCaseSensitive(t, "model");
        if (count == CONSOLE_HISTORY_MODELS || !cJSON_IsString(model) || !model->valuestring[0]) continue;
        /* A model served here with no traffic yet has its lanes only. */
        s[count++] = (console_history_sample){
            .model = model->valuestring,
            .requests = (uint64_t)traffic_number(t, "requests", 0),
            .completion_tokens = (uint64_t)traffic_number(t, "completion_tokens", 0),
            .ttft_count = (uint64_t)traffic_number(t, "ttft_count", 0),
            .ttft_seconds = traffic_number(t, "ttft_seconds", 0),
            .queued = (int)traffic_number(t, "queued", -1),
        };
    }
    console_history_record(n->history, clock_ms(), s, count);
    cJSON_Delete(traffic);
}

static char *history_json(void *ctx)
{
    node *n = ctx;
    return console_history_json(n->history, clock_ms());
}

/* Shutdown budget: in-flight requests get NODE_GRACE_MS to finish, then are
 * closed with an error; NODE_FLUSH_MS more lets those last bytes leave the
 * sockets before the servers are torn down. Both fit the 2 s promise. */
#define NODE_GRACE_MS 1200
#define NODE_FLUSH_MS 150
#define NODE_DRAIN_POLL_MS 50

static void finish_shutdown(node *n)
{
    if (api_calls_active(n->api) > 0) {
        log_warn("node", "closing %d request(s) still in flight", api_calls_active(n->api));
        api_close_all(n->api, "the node serving this request is shutting down");
    }
    struct timeval flush = {0, NODE_FLUSH_MS * 1000};
    event_base_loopexit(n->base, &flush);
}

static void on_drain_timer(evutil_socket_t fd, short what, void *arg)
{
    node *n = arg;
    if (api_calls_active(n->api) == 0 || clock_ms() >= n->drain_deadline_ms) {
        event_del(n->drain_timer);
        finish_shutdown(n);
    }
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    node *n = arg;
    if (++n->signals_seen > 1) {
        /* Second signal: the user wants out now. */
        _exit(130);
    }
    log_info("node", "%s: shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
    /* Tell the mesh first, so peers stop routing to us within milliseconds;
     * then drain what is in flight here. */
    mesh_leave(n->mesh);
    api_set_draining(n->api);
    if (api_calls_active(n->api) == 0) {
        finish_shutdown(n);
        return;
    }
    n->drain_deadline_ms = clock_ms() + NODE_GRACE_MS;
    struct timeval poll = {0, NODE_DRAIN_POLL_MS * 1000};
    event_add(n->drain_timer, &poll);
}

/* --model REF: a path is loaded as it is; a name is found in the cache or
 * downloaded first (blocking: the node is not in anyone's way before its
 * token is printed), after the check that it fits this node's budget.
 * A hub file not in the cache, on a node that joins a mesh, is left to
 * the loader, which waits for the peers' records first
 * (model_loader_start_waiting): a peer that holds it gives its bytes,
 * and with the hub down names it too. A node alone downloads it now, or
 * fails now when the hub cannot be asked. */
static int load_models(node *n)
{
    model_files *mf = malloc(sizeof *mf);
    if (!mf) return -1;
    int rc = 0;
    char joined[4200];
    snprintf(joined, sizeof joined, "%s/cache/joined", n->cfg->home);
    for (int i = 0; i < n->cfg->n_models && rc == 0; i++) {
        char err[1024];
        model_fetch_opts o = {.home = n->cfg->home, .avail_bytes = budget_free(&n->budget),
                              .avail_what = n->cfg->split ? NULL : "this node's free budget (--max-memory)",
                              .n_ctx = n->cfg->ctx, .n_lanes = n->cfg->parallel > 0 ? n->cfg->parallel : 2,
                              .n_threads = n->cfg->threads, .kv_type = n->cfg->kv_type, .join_dir = joined};
        model_ref r;
        struct stat sb;
        int joins = n->cfg->n_joins > 0 && !n->cfg->client;
        o.offline = joins && stat(n->cfg->models[i], &sb) != 0 &&
                    model_ref_parse(n->cfg->models[i], &r, err, sizeof err) == 0 &&
                    (r.kind == MODEL_REF_HF_FILE || r.kind == MODEL_REF_HF_QUANT || r.kind == MODEL_REF_CATALOG);
        if (model_fetch(n->cfg->models[i], &o, mf, err, sizeof err) != 0) {
            if (joins && (o.offline || mf->hub_unreachable)) {
                log_info("node", "--model %s is not in the cache: it will come from a peer once the mesh is known "
                         "(or from the hub when no peer has it)", n->cfg->models[i]);
                n->waiting[n->n_waiting++] = i;
                continue;
            }
            fprintf(stderr, "llmesh: --model %s: %s%s\n", n->cfg->models[i], err,
                    mf->hub_unreachable ? " (with --join, a peer holding it would give it)" : "");
            rc = -1;
        } else if (pipelines_add_model(n->pipelines, mf->files[0], err, sizeof err) != 0) {
            fprintf(stderr, "llmesh: cannot load model %s\n", err);
            rc = -1;
        }
    }
    free(mf);
    return rc;
}

/* The loop: a --model the hub could not give did not come from the mesh
 * either: the node stops, as it would have at start. */
static void on_start_failed(void *ctx, const char *ref, const char *err)
{
    node *n = ctx;
    fprintf(stderr, "llmesh: --model %s: %s\n", ref, err);
    n->start_failed = 1;
    event_base_loopbreak(n->base);
}

int node_run(const node_config *cfg)
{
    node n = {.cfg = cfg};
    int rc = 1;
    char err[512];
    n.role = cfg->client ? "client" : cfg->n_models ? "host" : "standby";

    signal(SIGPIPE, SIG_IGN);
    evthread_use_pthreads();   /* workers wake the loop with event_active */
    n.base = event_base_new();
    if (!n.base) { fprintf(stderr, "llmesh: cannot create the event loop\n"); return 1; }
    n.sched = sched_new(n.base);
    if (n.sched)
        sched_set_queue(n.sched, cfg->queue >= 0 ? cfg->queue : SCHED_DEFAULT_QUEUE,
                        cfg->queue_timeout > 0 ? cfg->queue_timeout : SCHED_DEFAULT_QUEUE_TIMEOUT_S);
    if (!n.sched) goto out;
    n.budget.total = cfg->max_memory ? cfg->max_memory : budget_default();

    mesh_config mc = {
        .home = cfg->home,
        .listen = cfg->listen,
        .join_tokens = cfg->joins,
        .n_join = cfg->n_joins,
        .role = n.role,
        .limits = cfg->quic_limits,
        .max_clients = cfg->max_clients,
        .bad_frames_max = cfg->ban_bad_frames,
        .ban_ms = cfg->ban_ms,
    };
    n.mesh = mesh_new(n.base, &mc, err, sizeof err);
    if (!n.mesh) { fprintf(stderr, "llmesh: cannot start the mesh: %s\n", err); goto out; }
    n.budget.mesh = n.mesh;
    mesh_set_memory(n.mesh, n.budget.total);
    if (!cfg->client) {
        if (!(n.weights = weights_store_new(n.base, n.mesh, cfg->home, err, sizeof err))) {
            fprintf(stderr, "llmesh: weights store in %s: %s\n", cfg->home, err);
            goto out;
        }
        /* Other GGUF files this node holds: a stage of a split can load its
         * layers from one instead of fetching them (hashed in the background). */
        char models_dir[4200];
        snprintf(models_dir, sizeof models_dir, "%s/models", cfg->home);
        weights_store_add_dir(n.weights, models_dir, NULL, NULL);
        if (!(n.stages = stage_host_new(n.base, n.mesh, n.weights, &n.budget, cfg->threads))) goto out;
    }
    /* A client coordinates nothing, but reads the plans it routes by. */
    pipeline_config pc = {.n_threads = cfg->threads, .n_ctx = cfg->ctx,
                          .n_lanes = cfg->parallel > 0 ? cfg->parallel : NODE_DEFAULT_PARALLEL,
                          .split = cfg->split, .kv_type = cfg->kv_type};
    n.pipelines = pipelines_new(n.base, n.mesh, n.sched, n.stages, n.weights, &n.budget, &pc);
    if (!n.pipelines || load_models(&n) != 0) goto out;

    /* Demand and loads: members only (a client publishes no record). */
    if (!cfg->client) {
        model_loader_config lc = {.home = cfg->home, .n_ctx = cfg->ctx, .n_lanes = pc.n_lanes,
                                  .n_threads = cfg->threads, .kv_type = cfg->kv_type,
                                  .take_over = !cfg->n_models || cfg->n_standby_for,
                                  .standby_for = cfg->standby_for, .n_standby_for = cfg->n_standby_for,
                                  .weights = n.weights, .split = cfg->split,
                                  .on_start_failed = on_start_failed, .start_ctx = &n};
        if (!(n.demand = demand_new()) ||
            !(n.loader = model_loader_new(n.base, n.mesh, n.pipelines, &n.budget, n.demand, &lc)))
            goto out;
        pipelines_set_demand_source(n.pipelines, demand_rates, n.demand);
        for (int i = 0; i < n.n_waiting; i++)
            if (model_loader_start_waiting(n.loader, cfg->models[n.waiting[i]], err, sizeof err) != 0) {
                fprintf(stderr, "llmesh: --model %s: %s\n", cfg->models[n.waiting[i]], err);
                goto out;
            }
    }

    n.api = api_new(n.base, n.sched, n.mesh);
    n.metrics = metrics_new();
    n.history = console_history_new(clock_ms());
    n.history_timer = event_new(n.base, -1, EV_PERSIST, on_history_timer, &n);
    if (!n.api || !n.metrics || !n.history || !n.history_timer) goto out;
    struct timeval every = {CONSOLE_HISTORY_INTERVAL_MS / 1000, (CONSOLE_HISTORY_INTERVAL_MS % 1000) * 1000};
    event_add(n.history_timer, &every);
    api_set_metrics(n.api, n.metrics);
    api_serve_tunnel(n.api);
    api_set_pipelines(n.api, n.pipelines);
    api_set_demand(n.api, n.demand);
    n.api_http = http_api_start(n.base, cfg->http_host, (uint16_t)cfg->api_port, n.api, err, sizeof err);
    if (!n.api_http) { fprintf(stderr, "llmesh: API (--port): %s\n", err); goto out; }
    http_server_set_metrics(n.api_http, n.metrics);
    http_server_set_limits(n.api_http, &cfg->http_limits);
    n.console_loopback = http_host_is_loopback(cfg->http_host);
    n.console_http = http_console_start(n.base, cfg->http_host, (uint16_t)cfg->console_port,
                                        status_json, &n, err, sizeof err);
    if (!n.console_http) { fprintf(stderr, "llmesh: console (--console): %s\n", err); goto out; }
    http_console_set_metrics(n.console_http, metrics_text, &n);
    http_console_set_api(n.console_http, n.api);
    http_console_set_history(n.console_http, history_json, &n);
    http_server_set_metrics(n.console_http, n.metrics);
    http_server_set_limits(n.console_http, &cfg->http_limits);
    if (n.loader) http_console_set_post(n.console_http, model_loader_http, n.loader);
    if (cfg->api_key && (http_server_require_key(n.api_http, cfg->api_key) != 0 ||
                         http_server_require_key(n.console_http, cfg->api_key) != 0)) {
        fprintf(stderr, "llmesh: the API key must be 1-%d visible ASCII characters (no spaces)\n",
                HTTP_MAX_API_KEY);
        goto out;
    }

    n.sigint = evsignal_new(n.base, SIGINT, on_signal, &n);
    n.sigterm = evsignal_new(n.base, SIGTERM, on_signal, &n);
    event_add(n.sigint, NULL);
    event_add(n.sigterm, NULL);
    n.drain_timer = event_new(n.base, -1, EV_PERSIST, on_drain_timer, &n);

    printf("node: %s (%s)\n", mesh_node_id_hex(n.mesh), n.role);
    printf("api: http://%s:%u/v1\n", cfg->http_host, http_server_port(n.api_http));
    printf("console: http://%s:%u\n", cfg->http_host, http_server_port(n.console_http));
    /* Scripts wait for this line; a client has no token to give out. */
    printf("token: %s\n", mesh_is_passive(n.mesh) ? "none" : mesh_token(n.mesh));
    fflush(stdout);

    event_base_dispatch(n.base);
    rc = n.start_failed;
out:
    if (n.drain_timer) event_free(n.drain_timer);
    if (n.history_timer) event_free(n.history_timer);
    if (n.sigint) event_free(n.sigint);
    if (n.sigterm) event_free(n.sigterm);
    /* HTTP first (aborts calls, which cancel jobs), then the mesh (closes
     * tunnels), then the scheduler (joins the workers). */
    http_server_free(n.console_http);
    http_server_free(n.api_http);
    /* Downloads in flight are cancelled (their partial files stay). */
    model_loader_free(n.loader);
    /* Lanes waiting on a pipeline are woken before the scheduler joins
     * them; streams are closed while the mesh is still there. */
    pipelines_close(n.pipelines);
    stage_host_free(n.stages);
    weights_store_free(n.weights);
    if (n.mesh) mesh_free(n.mesh);
    api_free(n.api);
    sched_free(n.sched);
    pipelines_free(n.pipelines);
    metrics_free(n.metrics);
    console_history_free(n.history);
    demand_free(n.demand);
    event_base_free(n.base);
    return rc;
}
