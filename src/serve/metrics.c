/* metrics.c: the registry of what only /metrics counts, and the rendering
 * of every family. See metrics.h; docs/metrics.md is the reference.
 *
 * Split counters come from the plans' status document (pipelines_status,
 * the JSON /api/status shows) rather than from new accessors into the
 * pipeline: one source for both documents, at the cost of building a cJSON
 * tree per scrape (a few plans; scrapes are seconds apart). */
#include "serve/metrics.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "lib/prom.h"
#include "mesh/mesh.h"
#include "models/download.h"
#include "models/weights_store.h"
#include "serve/api.h"
#include "serve/pipeline.h"
#include "serve/scheduler.h"
#include "serve/stage.h"

#define METRICS_MAX_CODES 12
#define METRICS_MAX_PEERS 256
#define METRICS_OTHER_MODEL "_other"

typedef struct {
    int status;
    uint64_t count;
} code_count;

typedef struct {
    char name[MESH_MAX_NAME];
    code_count codes[METRICS_MAX_CODES];
    int n_codes;
    uint64_t other_codes;        /* answers with a status beyond the table (none today) */
    uint64_t generations, prompt_tokens, completion_tokens;
    prom_histogram ttft, itl;
} model_stats;

struct metrics {
    model_stats models[METRICS_MAX_MODELS + 1]; /* the last one is "_other" */
    int n_models;
};

/* Time to first token: from a cached prompt on a fast node (ms) to a long
 * prompt on a split model (tens of seconds). */
static const double ttft_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
/* Between tokens: the demo model (~1 ms) to a large model split over slow
 * links (seconds). */
static const double itl_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
#define N_OF(a) ((int)(sizeof a / sizeof a[0]))

static void model_init(model_stats *s, const char *name)
{
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    prom_histogram_init(&s->ttft, ttft_bounds, N_OF(ttft_bounds));
    prom_histogram_init(&s->itl, itl_bounds, N_OF(itl_bounds));
}

metrics *metrics_new(void)
{
    metrics *m = calloc(1, sizeof *m);
    if (m) model_init(&m->models[METRICS_MAX_MODELS], METRICS_OTHER_MODEL);
    return m;
}

void metrics_free(metrics *m) { free(m); }

static model_stats *model_find(metrics *m, const char *name)
{
    if (!name) name = "";
    for (int i = 0; i < m->n_models; i++)
        if (!strcmp(m->models[i].name, name)) return &m->models[i];
    if (m->n_models == METRICS_MAX_MODELS || strlen(name) >= MESH_MAX_NAME) return &m->models[METRICS_MAX_MODELS];
    model_stats *s = &m->models[m->n_models++];
    model_init(s, name);
    return s;
}

/* The registry's models in order, then "_other" (which shows only once
 * something was counted under it: every sample below needs a count). */
#define EACH_MODEL(m, s) \
    for (int i_ = 0; i_ <= (m)->n_models; i_++) \
        for (const model_stats *s = &(m)->models[i_ < (m)->n_models ? i_ : METRICS_MAX_MODELS]; s; s = NULL)

void metrics_count_request(metrics *m, const char *model, int status)
{
    if (!m) return;
    model_stats *s = model_find(m, status == 404 ? "" : model);
    for (int i = 0; i < s->n_codes; i++)
        if (s->codes[i].status == status) { s->codes[i].count++; return; }
    if (s->n_codes == METRICS_MAX_CODES) { s->other_codes++; return; }
    s->codes[s->n_codes++] = (code_count){status, 1};
}

void metrics_count_generation(metrics *m, const char *model, int prompt_tokens, int completion_tokens,
                              double ttft_s)
{
    if (!m) return;
    model_stats *s = model_find(m, model);
    s->generations++;
    s->prompt_tokens += (uint64_t)(prompt_tokens > 0 ? prompt_tokens : 0);
    s->completion_tokens += (uint64_t)(completion_tokens > 0 ? completion_tokens : 0);
    if (ttft_s >= 0) prom_histogram_observe(&s->ttft, ttft_s);
}

void metrics_observe_gaps(metrics *m, const char *model, const uint32_t *gaps_us, int n_gaps)
{
    if (!m || n_gaps <= 0) return;
    model_stats *s = model_find(m, model);
    for (int i = 0; i < n_gaps; i++) prom_histogram_observe(&s->itl, gaps_us[i] * 1e-6);
}

void metrics_status_json(const metrics *m, struct sched *served, cJSON *array)
{
    int n_served = served ? sched_model_count(served) : 0;
    EACH_MODEL(m, s) {
        uint64_t requests = s->other_codes;
        for (int i = 0; i < s->n_codes; i++) requests += s->codes[i].count;
        if (!requests && !s->generations && !s->itl.count) continue;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "model", s->name);
        cJSON_AddNumberToObject(o, "requests", (double)requests);
        cJSON_AddNumberToObject(o, "generations", (double)s->generations);
        cJSON_AddNumberToObject(o, "prompt_tokens", (double)s->prompt_tokens);
        cJSON_AddNumberToObject(o, "completion_tokens", (double)s->completion_tokens);
        cJSON_AddNumberToObject(o, "ttft_count", (double)s->ttft.count);
        cJSON_AddNumberToObject(o, "ttft_seconds", s->ttft.sum);
        cJSON_AddNumberToObject(o, "itl_count", (double)s->itl.count);
        cJSON_AddNumberToObject(o, "itl_seconds", s->itl.sum);
        cJSON_AddItemToArray(array, o);
    }
    for (int i = 0; i < n_served; i++) {
        const char *id = engine_model_id(sched_model_at(served, i));
        cJSON *o = NULL;
        cJSON *it;
        cJSON_ArrayForEach(it, array) {
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(it, "model");
            if (cJSON_IsString(name) && !strcmp(name->valuestring, id)) o = it;
        }
        if (!o) {
            o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "model", id);
            cJSON_AddItemToArray(array, o);
        }
        int lanes = 0, busy = 0, queued = 0;
        sched_model_load(served, i, &lanes, &busy, &queued);
        cJSON_AddNumberToObject(o, "lanes", lanes);
        cJSON_AddNumberToObject(o, "lanes_busy", busy);
        cJSON_AddNumberToObject(o, "queued", queued);
    }
}

/* ---- rendering ------------------------------------------------------------*/


static void render_registry(prom_buf *b, const metrics *m)
{
    prom_family(b, "llmesh_http_requests_total", "counter",
                "API answers sent to HTTP clients of this node, by model (empty: none named, or unknown) "
                "and status code.");
    EACH_MODEL(m, s) {
        for (int i = 0; i < s->n_codes; i++) {
            char code[16];
            snprintf(code, sizeof code, "%d", s->codes[i].status);
            prom_sample(b, "llmesh_http_requests_total", (const char *[]){"model", s->name, "code", code, NULL},
                        (double)s->codes[i].count);
        }
        if (s->other_codes)
            prom_sample(b, "llmesh_http_requests_total", (const char *[]){"model", s->name, "code", "other", NULL},
                        (double)s->other_codes);
    }
    prom_family(b, "llmesh_generations_total", "counter",
                "Generations run by this node's engine (solo or as a split's coordinator) that finished.");
    EACH_MODEL(m, s) if (s->generations)
        prom_sample(b, "llmesh_generations_total", (const char *[]){"model", s->name, NULL}, (double)s->generations);
    prom_family(b, "llmesh_prompt_tokens_total", "counter", "Prompt tokens of the finished generations.");
    EACH_MODEL(m, s) if (s->generations)
        prom_sample(b, "llmesh_prompt_tokens_total", (const char *[]){"model", s->name, NULL},
                    (double)s->prompt_tokens);
    prom_family(b, "llmesh_completion_tokens_total", "counter", "Generated tokens of the finished generations.");
    EACH_MODEL(m, s) if (s->generations)
        prom_sample(b, "llmesh_completion_tokens_total", (const char *[]){"model", s->name, NULL},
                    (double)s->completion_tokens);
    prom_family(b, "llmesh_time_to_first_token_seconds", "histogram",
                "From a generation's start to its first output on the event loop, one observation per "
                "finished generation with at least one generated token.");
    EACH_MODEL(m, s) if (s->generations)
        prom_histogram_write(b, "llmesh_time_to_first_token_seconds", (const char *[]){"model", s->name, NULL},
                             &s->ttft);
    prom_family(b, "llmesh_inter_token_latency_seconds", "histogram",
                "Time between consecutive streamed outputs (tokens) of a local generation, measured on "
                "the worker as each is made; one observation per gap.");
    EACH_MODEL(m, s) if (s->generations || s->itl.count)
        prom_histogram_write(b, "llmesh_inter_token_latency_seconds", (const char *[]){"model", s->name, NULL},
                             &s->itl);
}

static void counter(prom_buf *b, const char *name, const char *help, double value)
{
    prom_family(b, name, "counter", help);
    prom_sample(b, name, NULL, value);
}

static void render_counters(prom_buf *b, const metrics_sources *src)
{
    api_counters ac;
    api_get_counters(src->api, &ac);
    counter(b, "llmesh_api_requests_total",
            "Requests the API handled, from HTTP clients and from peers through the tunnel.", (double)ac.requests);
    counter(b, "llmesh_api_bad_requests_total", "API answers with a 4xx status.", (double)ac.bad_requests);
    counter(b, "llmesh_api_forwarded_total", "Requests sent to a peer, each attempt.", (double)ac.forwarded);
    counter(b, "llmesh_api_retried_total", "Forwarded requests sent again after a host failed before answering.",
            (double)ac.retried);
    counter(b, "llmesh_api_failed_total", "API answers with a 5xx status, or streams ended by an error event.",
            (double)ac.failed);
    counter(b, "llmesh_auth_refused_total", "Requests refused for a missing or wrong API key, on either port.",
            (double)src->auth_refused);
    counter(b, "llmesh_http_refused_total",
            "HTTP connections shut at once: too many in all or from one address (both ports).",
            (double)src->http_refused);
    counter(b, "llmesh_http_slow_cut_total",
            "HTTP connections shut because no whole request arrived within the deadline (both ports).",
            (double)src->http_slow_cut);
    prom_family(b, "llmesh_http_connections", "gauge", "HTTP connections open now (both ports).");
    prom_sample(b, "llmesh_http_connections", NULL, (double)src->http_connections);

    mesh_counters mc;
    mesh_get_counters(src->mesh, &mc);
    counter(b, "llmesh_mesh_bad_frames_total", "Malformed or oversized mesh frames, unknown stream types.",
            (double)mc.bad_frames);
    counter(b, "llmesh_mesh_streams_opened_total", "Mesh streams this node opened.", (double)mc.streams_opened);
    counter(b, "llmesh_mesh_streams_accepted_total", "Mesh streams peers opened to this node.",
            (double)mc.streams_accepted);
    counter(b, "llmesh_routes_served_total", "Routing tables sent to passive clients.", (double)mc.routes_served);
    counter(b, "llmesh_routes_pulled_total", "Routing tables received (passive clients).", (double)mc.routes_pulled);
    prom_family(b, "llmesh_failure_detector_events_total", "counter",
                "Peer state changes this node's failure detector made: suspect, dead, alive_again "
                "(a suspect or dead peer answered), left (a clean exit announced).");
    prom_sample(b, "llmesh_failure_detector_events_total", (const char *[]){"event", "suspect", NULL},
                (double)mc.peers_suspected);
    prom_sample(b, "llmesh_failure_detector_events_total", (const char *[]){"event", "dead", NULL},
                (double)mc.peers_dead);
    prom_sample(b, "llmesh_failure_detector_events_total", (const char *[]){"event", "alive_again", NULL},
                (double)mc.peers_alive_again);
    prom_sample(b, "llmesh_failure_detector_events_total", (const char *[]){"event", "left", NULL},
                (double)mc.peers_left);
    counter(b, "llmesh_admission_refused_total",
            "Mesh connections refused because the peer did not prove it knows the mesh secret.",
            (double)mc.admission_refused);
    counter(b, "llmesh_peers_banned_total",
            "Peers disconnected and refused for a while for sending too many malformed frames.",
            (double)mc.peers_banned);
    counter(b, "llmesh_banned_refused_total", "Connections of banned peers refused.",
            (double)mc.banned_refused);
    counter(b, "llmesh_quic_refused_total",
            "QUIC handshakes dropped by the connection limits (in all, half-open, per address).",
            (double)mc.conns_refused);
    counter(b, "llmesh_quic_refused_addr_total",
            "QUIC handshakes dropped by the per-address bounds (of llmesh_quic_refused_total).",
            (double)mc.conns_refused_addr);
    prom_family(b, "llmesh_quic_half_open", "gauge", "Incoming QUIC connections whose handshake is not done.");
    prom_sample(b, "llmesh_quic_half_open", NULL, (double)mc.conns_half_open);
    counter(b, "llmesh_stage_bad_frames_total", "Malformed pipeline stage frames.",
            src->stages ? (double)stage_host_bad_frames(src->stages) : 0);

    weights_counters wc = {0};
    if (src->weights) weights_get_counters(src->weights, &wc);
    counter(b, "llmesh_weights_served_bytes_total", "Weight chunk bytes sent to peers.", (double)wc.served_bytes);
    counter(b, "llmesh_weights_fetched_bytes_total", "Weight chunk bytes received from peers and verified.",
            (double)wc.fetched_bytes);
    counter(b, "llmesh_weights_bad_frames_total", "Malformed weight fetch frames.", (double)wc.bad_frames);
    counter(b, "llmesh_weights_bad_chunks_total", "Fetched weight chunks whose hash did not match.",
            (double)wc.bad_chunks);

    /* Whole model files (models/download.c: process-wide, atomic). */
    dl_counters dc;
    dl_get_counters(&dc);
    counter(b, "llmesh_download_requests_total", "HTTP requests made for model downloads (HEAD, GET, listings).",
            (double)dc.requests);
    counter(b, "llmesh_download_bytes_total", "Model file bytes downloaded (body bytes received).",
            (double)dc.bytes);
    counter(b, "llmesh_download_peer_bytes_total",
            "Of those, bytes of whole files fetched from peers that hold them instead of the hub.",
            (double)dc.source_bytes);
    counter(b, "llmesh_download_peer_failures_total", "Peers given up on in the middle of a file (the hub took over).",
            (double)dc.source_failures);
    counter(b, "llmesh_download_resumed_total", "Downloads that continued a partial file.", (double)dc.resumed);
    counter(b, "llmesh_download_retries_total", "Download attempts made again after a transient failure.",
            (double)dc.retries);
}

static void render_lanes(prom_buf *b, sched *s)
{
    static const char *const names[3] = {"llmesh_lanes", "llmesh_lanes_busy", "llmesh_queue_depth"};
    static const char *const helps[3] = {
        "Lanes (requests that can run at once) of each model served here.",
        "Lanes running a request now.",
        "Requests waiting for a free lane."};
    for (int k = 0; k < 3; k++) {
        prom_family(b, names[k], "gauge", helps[k]);
        for (int i = 0; i < sched_model_count(s); i++) {
            int v[3];
            sched_model_load(s, i, &v[0], &v[1], &v[2]);
            prom_sample(b, names[k], (const char *[]){"model", engine_model_id(sched_model_at(s, i)), NULL}, v[k]);
        }
    }
    static const char *const cnames[5] = {"llmesh_queue_refused_total", "llmesh_queue_timeouts_total",
                                          "llmesh_batch_steps_total", "llmesh_batch_sequences_total",
                                          "llmesh_batch_tokens_total"};
    static const char *const chelps[5] = {
        "Requests refused with 429: every lane busy and the queue full.",
        "Requests answered 503 after waiting for a lane past the queue timeout.",
        "Forward passes of the continuous batching steps (solo models).",
        "Sequences summed over those steps (mean batch = sequences / steps).",
        "Positions evaluated by those steps."};
    for (int k = 0; k < 5; k++) {
        prom_family(b, cnames[k], "counter", chelps[k]);
        for (int i = 0; i < sched_model_count(s); i++) {
            sched_model_stats st;
            sched_model_get_stats(s, i, &st);
            uint64_t v[5] = {st.refused_full, st.timed_out, st.steps.steps, st.steps.seqs, st.steps.tokens};
            prom_sample(b, cnames[k], (const char *[]){"model", engine_model_id(sched_model_at(s, i)), NULL},
                        (double)v[k]);
        }
    }
}

static void render_peers(prom_buf *b, mesh *msh)
{
    static mesh_peer peers[METRICS_MAX_PEERS];
    int n = mesh_peers(msh, peers, METRICS_MAX_PEERS);
    if (n > METRICS_MAX_PEERS) n = METRICS_MAX_PEERS;
    static const char *const states[] = {"connecting", "alive", "suspect", "dead", "left"};
    prom_family(b, "llmesh_peers", "gauge", "Peers this node knows, by the failure detector's state.");
    for (int k = 0; k < N_OF(states); k++) {
        int count = 0;
        for (int i = 0; i < n; i++) count += !strcmp(peers[i].state, states[k]);
        prom_sample(b, "llmesh_peers", (const char *[]){"state", states[k], NULL}, count);
    }
    prom_family(b, "llmesh_peer_rtt_seconds", "gauge",
                "Smoothed round-trip time of the connection to each connected peer (link: direct or relayed).");
    for (int i = 0; i < n; i++)
        if (peers[i].link[0])
            prom_sample(b, "llmesh_peer_rtt_seconds",
                        (const char *[]){"peer", peers[i].id, "link", peers[i].link, NULL}, peers[i].rtt_ms / 1000.0);
    /* Per peer, over all its connections (a reconnection goes on counting),
     * so no label for the link kind, which can change between them. */
    prom_family(b, "llmesh_peer_received_bytes_total", "counter",
                "Bytes of QUIC packets received from each peer, over all its connections.");
    for (int i = 0; i < n; i++)
        if (peers[i].link[0] || peers[i].rx_bytes)
            prom_sample(b, "llmesh_peer_received_bytes_total", (const char *[]){"peer", peers[i].id, NULL},
                        (double)peers[i].rx_bytes);
    prom_family(b, "llmesh_peer_sent_bytes_total", "counter",
                "Bytes of QUIC packets sent to each peer, over all its connections (retransmissions included).");
    for (int i = 0; i < n; i++)
        if (peers[i].link[0] || peers[i].tx_bytes)
            prom_sample(b, "llmesh_peer_sent_bytes_total", (const char *[]){"peer", peers[i].id, NULL},
                        (double)peers[i].tx_bytes);
}

static double json_number(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

typedef struct {
    const char *name, *key, *help;
    double scale;   /* ms -> s */
} split_family;

/* Per stage of each plan this node coordinates (stage 0: tokens and
 * compute only), and per plan. */
static const split_family stage_families[] = {
    {"llmesh_split_stage_tokens_total", "tokens", "Positions a stage computed.", 1},
    {"llmesh_split_stage_compute_seconds_total", "compute_ms", "Time a stage spent computing, as it reports.", 1e-3},
    {"llmesh_split_stage_send_seconds_total", "send_ms", "Time a stage spent sending its output, as it reports.",
     1e-3},
    {"llmesh_split_stage_received_bytes_total", "bytes_in", "Bytes a stage received.", 1},
    {"llmesh_split_stage_sent_bytes_total", "bytes_out", "Bytes a stage sent.", 1},
};
static const split_family plan_families[] = {
    {"llmesh_split_frames_sent_total", "frames_sent", "Frames the coordinator sent to its first stage.", 1},
    {"llmesh_split_sent_bytes_total", "bytes_sent", "Bytes the coordinator sent to its first stage.", 1},
    {"llmesh_split_pieces_sent_total", "pieces_sent", "Lanes' pieces in the FORWARDs the coordinator sent (one per lane per batch step).", 1},
    {"llmesh_split_window_waits_total", "window_waits", "Batch steps that waited for room on the ring (back-pressure).", 1},
    {"llmesh_split_round_trips_total", "round_trips", "Decode steps that went round the ring and back.", 1},
    {"llmesh_split_breaks_total", "breaks", "Times the pipeline broke (a stage failed) and was planned again.", 1},
};

static void render_split(prom_buf *b, const pipelines *ps)
{
    cJSON *root = cJSON_CreateObject();
    if (!root) return;
    if (ps) pipelines_status(ps, root);
    const cJSON *plans = cJSON_GetObjectItemCaseSensitive(root, "plans");
    const cJSON *pl;
    for (int f = 0; f < N_OF(stage_families); f++) {
        prom_family(b, stage_families[f].name, "counter", stage_families[f].help);
        cJSON_ArrayForEach(pl, plans) {
            const cJSON *model = cJSON_GetObjectItemCaseSensitive(pl, "model");
            const cJSON *stages = cJSON_GetObjectItemCaseSensitive(pl, "stages");
            int index = 0;
            const cJSON *st;
            cJSON_ArrayForEach(st, stages) {
                const cJSON *c = cJSON_GetObjectItemCaseSensitive(st, "counters");
                const cJSON *node = cJSON_GetObjectItemCaseSensitive(st, "node");
                char idx[16];
                snprintf(idx, sizeof idx, "%d", index++);
                /* Stage 0 has no send time or bytes of its own: no sample. */
                if (!c || !cJSON_IsString(model) || !cJSON_IsString(node) ||
                    !cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(c, stage_families[f].key)))
                    continue;
                prom_sample(b, stage_families[f].name,
                            (const char *[]){"model", model->valuestring, "stage", idx, "node", node->valuestring, NULL},
                            json_number(c, stage_families[f].key) * stage_families[f].scale);
            }
        }
    }
    for (int f = 0; f <= N_OF(plan_families); f++) {
        /* The round trips' total time: /api/status shows their mean. */
        const char *name = f < N_OF(plan_families) ? plan_families[f].name : "llmesh_split_round_trip_seconds_total";
        prom_family(b, name, "counter", f < N_OF(plan_families) ? plan_families[f].help
                    : "Time decode steps took round the ring and back (hop round trips).");
        cJSON_ArrayForEach(pl, plans) {
            const cJSON *model = cJSON_GetObjectItemCaseSensitive(pl, "model");
            const cJSON *c = cJSON_GetObjectItemCaseSensitive(pl, "counters");
            if (!c || !cJSON_IsString(model)) continue;
            double v = f < N_OF(plan_families) ? json_number(c, plan_families[f].key)
                     : json_number(c, "round_trip_ms") * json_number(c, "round_trips") / 1000.0;
            prom_sample(b, name, (const char *[]){"model", model->valuestring, NULL}, v);
        }
    }
    cJSON_Delete(root);
}

/* The splits' per-step histograms: each family written whole, so the plans
 * are walked once per family. */
typedef struct {
    prom_buf *b;
    int hop;   /* 0: stage compute, 1: hops */
} step_writer;

static void write_step_histograms(void *ctx, const char *model, int n_stages, const char (*nodes)[MESH_ID_HEX],
                                  const prom_histogram *compute, const prom_histogram *hop)
{
    step_writer *w = ctx;
    if (w->hop) {
        prom_histogram_write(w->b, "llmesh_split_step_hop_seconds", (const char *[]){"model", model, NULL}, hop);
        return;
    }
    for (int s = 0; s < n_stages; s++) {
        char idx[16];
        snprintf(idx, sizeof idx, "%d", s);
        prom_histogram_write(w->b, "llmesh_split_step_compute_seconds",
                             (const char *[]){"model", model, "stage", idx, "node", nodes[s], NULL}, &compute[s]);
    }
}

static void render_step_histograms(prom_buf *b, const pipelines *ps)
{
    prom_family(b, "llmesh_split_step_compute_seconds", "histogram",
                "Time a batch step of a split spent in each stage's layers (stage 0: the coordinator's), "
                "one observation per step and stage.");
    step_writer w = {b, 0};
    pipelines_step_histograms(ps, write_step_histograms, &w);
    prom_family(b, "llmesh_split_step_hop_seconds", "histogram",
                "A batch step's round trip less the stages' times: the wire, QUIC and framing, one observation "
                "per step.");
    w.hop = 1;
    pipelines_step_histograms(ps, write_step_histograms, &w);
}

char *metrics_render(const metrics *m, const metrics_sources *src)
{
    prom_buf b = {0};
    render_registry(&b, m);
    if (src) {
        render_counters(&b, src);
        render_lanes(&b, src->sched);
        render_peers(&b, src->mesh);
        render_split(&b, src->pipelines);
        render_step_histograms(&b, src->pipelines);
    }
    return prom_buf_take(&b);
}
