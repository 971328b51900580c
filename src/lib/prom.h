/* prom.h: the Prometheus text exposition format (version 0.0.4), written
 * into a growing buffer. Generic: it knows nothing of llmesh.
 *
 * A family is written as "# HELP", "# TYPE", then its samples, all together
 * (the format wants a family's lines contiguous, TYPE before the first
 * sample). Label values and help texts are escaped as the format says:
 * backslash, double quote (label values only) and line feed. A histogram is
 * observed into per-bucket counts and written cumulatively: one _bucket line
 * per upper bound (le), then le="+Inf" equal to _count, then _sum, _count.
 *
 * Not here: which metrics exist (serve/metrics.c), HTTP (serve/http.c).
 *
 * Ownership: prom_buf owns its text until prom_buf_take. Out of memory makes
 * the buffer fail once and for all: prom_buf_take then returns NULL.
 * Threading: none inside; a prom_buf or prom_histogram is one thread's. */
#ifndef LLMESH_PROM_H
#define LLMESH_PROM_H

#include <stddef.h>
#include <stdint.h>

#define PROM_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define PROM_MAX_BUCKETS 24

typedef struct {
    char *text;
    size_t len, cap;
    int failed;
} prom_buf;

/* Labels are given as a NULL-terminated list of name, value pairs:
 * (const char *[]){"model", id, "code", "200", NULL}, or NULL for none.
 * Names must be valid label names ([a-zA-Z_][a-zA-Z0-9_]*); values any
 * UTF-8 text. */

/* "# HELP name help" and "# TYPE name type"; type is "counter", "gauge",
 * "histogram", "summary" or "untyped". */
void prom_family(prom_buf *b, const char *name, const char *type, const char *help);
/* One sample line: name{labels} value. Integers print exactly (up to 2^53),
 * NaN and infinities as NaN, +Inf, -Inf. */
void prom_sample(prom_buf *b, const char *name, const char *const *labels, double value);
/* The malloc'ed text (caller frees), or NULL if out of memory; the buffer
 * is empty afterwards. */
char *prom_buf_take(prom_buf *b);
void prom_buf_free(prom_buf *b);

typedef struct {
    int n_bounds;                      /* upper bounds, ascending, +Inf implied */
    double bounds[PROM_MAX_BUCKETS];
    uint64_t counts[PROM_MAX_BUCKETS + 1]; /* per bucket, not cumulative; last: above all bounds */
    double sum;
    uint64_t count;
} prom_histogram;

/* bounds: n (<= PROM_MAX_BUCKETS) finite values, strictly ascending
 * (asserted). */
void prom_histogram_init(prom_histogram *h, const double *bounds, int n);
void prom_histogram_observe(prom_histogram *h, double value);
/* name_bucket{labels,le="..."} for each bound and +Inf, name_sum, name_count
 * (after a prom_family(b, name, "histogram", ...)). */
void prom_histogram_write(prom_buf *b, const char *name, const char *const *labels,
                          const prom_histogram *h);

#endif
