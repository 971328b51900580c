/* node.h: one llmesh node: the event loop that ties together the mesh, the
 * scheduler of local models, the API and the console. `llmesh serve` and
 * `llmesh client` are thin argument parsers around node_run. */
#ifndef LLMESH_NODE_H
#define LLMESH_NODE_H

#include <stdint.h>

#include "net/quic.h"
#include "serve/http_guard.h"

#define NODE_MAX_MODELS 16
#define NODE_MAX_JOINS 16

typedef struct {
    const char *models[NODE_MAX_MODELS]; /* model references (models/ref.h) served here */
    int n_models;
    const char *joins[NODE_MAX_JOINS];   /* invite tokens */
    int n_joins;
    const char *home;                    /* identity dir, resolved already */
    const char *listen;                  /* mesh UDP "HOST:PORT", NULL = default */
    const char *http_host;               /* API and console bind address */
    const char *api_key;                 /* required bearer key on both; NULL = none */
    int api_port;                        /* 0 = any free port */
    int console_port;
    int threads;                         /* compute threads, <= 0 = all CPUs */
    uint64_t max_memory;                 /* memory budget for models, bytes; 0 = detected */
    int ctx;                             /* served context per request, <= 0 = the model's (capped) */
    int parallel;                        /* requests a model runs at once (lanes), <= 0 = default */
    int kv_type;                         /* the KV caches' model_kv_type (--kv-type), 0 = F16 */
    int queue;                           /* requests waiting per model, < 0 = default */
    int queue_timeout;                   /* seconds a request may wait for a lane, <= 0 = default */
    int split;                           /* >= 2: split every model into this many stages */
    int client;                          /* llmesh client: no models, forward only */
    const char *standby_for[NODE_MAX_MODELS]; /* references a standby may take over */
    int n_standby_for;
    quic_limits quic_limits;             /* mesh connection bounds; zeros = defaults */
    http_guard_limits http_limits;       /* both HTTP servers' bounds; zeros = defaults */
    uint32_t max_clients, ban_bad_frames, ban_ms; /* mesh_config's; zeros = defaults */
} node_config;

/* Runs the node until SIGINT/SIGTERM. Prints "api: URL", "console: URL" and
 * "token: TOKEN" on stdout once requests and peers are accepted. Returns the
 * process exit code; errors are printed as one line on stderr. */
int node_run(const node_config *cfg);

#endif
