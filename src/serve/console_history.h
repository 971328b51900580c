/* console_history.h: the recent traffic of this node per model, kept by the
 * node so that a web console opened now draws the last minutes at once
 * (GET /api/history on the console port) instead of starting with empty
 * graphs.
 *
 * One point every CONSOLE_HISTORY_INTERVAL_MS, the last
 * CONSOLE_HISTORY_POINTS of them (10 minutes), for at most
 * CONSOLE_HISTORY_MODELS models: requests/s, tokens/s (completion), mean
 * time to first token of the generations that finished in the interval,
 * and the queue depth when the point was taken. A point is made from the
 * totals the node already counts (the registry of serve/metrics.c, the
 * scheduler's queue: /api/status's `traffic`): the history keeps only the
 * differences, so it agrees with the status and /metrics.
 *
 * Bounded memory, fixed at creation: a ring of POINTS times, and per model
 * a ring of POINTS values of 4 floats (32 models x 120 points x 16 bytes =
 * 60 KiB; 66 KiB with the names and totals). A model beyond CONSOLE_HISTORY_MODELS takes the slot of one
 * neither served here nor asked for during the window, or is not kept.
 *
 * Not here: the timer (serve/node.c records a point every interval), HTTP
 * (serve/http.c). Threading: one thread (the event loop). */
#ifndef LLMESH_CONSOLE_HISTORY_H
#define LLMESH_CONSOLE_HISTORY_H

#include <stdint.h>

#define CONSOLE_HISTORY_INTERVAL_MS 5000
#define CONSOLE_HISTORY_POINTS 120
#define CONSOLE_HISTORY_MODELS 32
#define CONSOLE_HISTORY_MAX_NAME 128

typedef struct console_history console_history;

/* One model's totals since the node started, at the time of a record. */
typedef struct {
    const char *model;
    uint64_t requests;           /* API answers naming the model */
    uint64_t completion_tokens;  /* tokens generated */
    uint64_t ttft_count;         /* generations with a first token */
    double ttft_seconds;         /* their times to first token, summed */
    int queued;                  /* requests waiting for a lane; < 0: not served here */
} console_history_sample;

/* start_ms: the node's start (every total is 0 then), on the clock later
 * records use (lib/clock.h clock_ms). NULL if out of memory. */
console_history *console_history_new(uint64_t start_ms);
void console_history_free(console_history *h);

/* A point at now_ms: the rates since the last record (or the start) from
 * the totals of the n models in s. A model not in s had no traffic: its
 * totals are taken as unchanged (0 when never seen). A total that went
 * down gives no value for that point. A record less than 1 ms after the
 * last is ignored. */
void console_history_record(console_history *h, uint64_t now_ms, const console_history_sample *s, int n);

/* The history as JSON, malloc'ed (caller frees), NULL if out of memory:
 * {"interval_ms", "max_points", "ago_ms": [oldest .. newest, how long
 * before now_ms each point was taken], "models": [{"model", "req_s",
 * "tok_s", "ttft_ms", "queued"}]}, each series as long as ago_ms, null
 * where there is no value. Models neither served here nor asked for
 * during the window are left out. docs/PROTOCOL.md, "Console history". */
char *console_history_json(const console_history *h, uint64_t now_ms);

/* Points held now (<= CONSOLE_HISTORY_POINTS). */
int console_history_points(const console_history *h);

#endif
