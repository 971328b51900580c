/* metrics.h: GET /metrics on the console port, in the Prometheus text
 * format (lib/prom.h).
 *
 * Two kinds of numbers. What only this module counts (the registry, a
 * `metrics`): API answers by model and status code (serve/http.c), and for
 * local generations the prompt and completion tokens, time to first token
 * and inter-token latency (serve/router.c). Everything else is read at
 * scrape time from the same sources /api/status reads (the API's and the
 * mesh's counters, the scheduler's lanes, the plans' stage counters, the
 * weights store), so the two documents agree. docs/metrics.md lists every
 * family.
 *
 * Cardinality: label values that come from outside are bounded. At most
 * METRICS_MAX_MODELS model names are kept; later ones count under the model
 * "_other". A 404 answer names no model (the name named nothing).
 *
 * Threading: event-loop thread only (the registry has no lock; every place
 * that counts runs on the loop). */
#ifndef LLMESH_METRICS_H
#define LLMESH_METRICS_H

#include <stdint.h>

typedef struct metrics metrics;

#define METRICS_MAX_MODELS 32

metrics *metrics_new(void);
void metrics_free(metrics *m);

/* An API answer with this HTTP status; model "" or NULL when the request
 * named none (or an unknown one: 404). */
void metrics_count_request(metrics *m, const char *model, int status);
/* A local generation that finished: its tokens; ttft_s is the time from the
 * request reaching the router to its first output (< 0: not observed);
 * itl_s the mean time between its output tokens (< 0: not observed). */
void metrics_count_generation(metrics *m, const char *model, int prompt_tokens, int completion_tokens,
                              double ttft_s, double itl_s);

struct api;
struct mesh;
struct sched;
struct pipelines;
struct stage_host;
struct weights_store;
typedef struct {
    const struct api *api;
    struct mesh *mesh;
    struct sched *sched;
    const struct pipelines *pipelines;        /* may be NULL */
    const struct stage_host *stages;          /* NULL on a client */
    const struct weights_store *weights;      /* NULL on a client */
    uint64_t auth_refused;                    /* both HTTP servers' 401s */
    uint64_t http_refused, http_slow_cut;     /* both servers' guards (serve/http_guard.h) */
    uint64_t http_connections;
} metrics_sources;

/* The whole exposition, malloc'ed (caller frees); NULL if out of memory.
 * src NULL: the registry's families only (unit tests). */
char *metrics_render(const metrics *m, const metrics_sources *src);

#endif
