/* prom.c: the Prometheus text format writer. See prom.h.
 *
 * Numbers: %.17g would print 0.1 as 0.10000000000000001; %.15g round-trips
 * every value a counter or gauge here holds (integers up to 2^53 exactly,
 * the few decimals of bucket bounds), and parsers read either. */
#include "lib/prom.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void buf_reserve(prom_buf *b, size_t more)
{
    if (b->failed || b->len + more + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more + 1) cap *= 2;
    char *p = realloc(b->text, cap);
    if (!p) { b->failed = 1; return; }
    b->text = p;
    b->cap = cap;
}

static void buf_add(prom_buf *b, const char *s, size_t n)
{
    buf_reserve(b, n);
    if (b->failed) return;
    memcpy(b->text + b->len, s, n);
    b->len += n;
    b->text[b->len] = 0;
}

static void buf_str(prom_buf *b, const char *s) { buf_add(b, s, strlen(s)); }

/* Escapes backslash and line feed, and double quote when quote is set. */
static void buf_escaped(prom_buf *b, const char *s, int quote)
{
    for (const char *p = s; *p; p++) {
        if (*p == '\\') buf_add(b, "\\\\", 2);
        else if (*p == '\n') buf_add(b, "\\n", 2);
        else if (*p == '"' && quote) buf_add(b, "\\\"", 2);
        else buf_add(b, p, 1);
    }
}

static void buf_number(prom_buf *b, double v)
{
    char s[64];
    if (isnan(v)) snprintf(s, sizeof s, "NaN");
    else if (isinf(v)) snprintf(s, sizeof s, v > 0 ? "+Inf" : "-Inf");
    else snprintf(s, sizeof s, "%.15g", v);
    buf_str(b, s);
}

void prom_family(prom_buf *b, const char *name, const char *type, const char *help)
{
    buf_str(b, "# HELP ");
    buf_str(b, name);
    buf_str(b, " ");
    buf_escaped(b, help, 0);
    buf_str(b, "\n# TYPE ");
    buf_str(b, name);
    buf_str(b, " ");
    buf_str(b, type);
    buf_str(b, "\n");
}

/* name{labels[,le="le"]} value\n */
static void sample_line(prom_buf *b, const char *name, const char *suffix, const char *const *labels,
                        const char *le, double value)
{
    buf_str(b, name);
    buf_str(b, suffix);
    int n = 0;
    for (int i = 0; labels && labels[i]; i += 2) {
        buf_str(b, n++ ? "," : "{");
        buf_str(b, labels[i]);
        buf_str(b, "=\"");
        buf_escaped(b, labels[i + 1] ? labels[i + 1] : "", 1);
        buf_str(b, "\"");
    }
    if (le) {
        buf_str(b, n++ ? "," : "{");
        buf_str(b, "le=\"");
        buf_str(b, le);
        buf_str(b, "\"");
    }
    if (n) buf_str(b, "}");
    buf_str(b, " ");
    buf_number(b, value);
    buf_str(b, "\n");
}

void prom_sample(prom_buf *b, const char *name, const char *const *labels, double value)
{
    sample_line(b, name, "", labels, NULL, value);
}

char *prom_buf_take(prom_buf *b)
{
    char *t = b->text;
    if (b->failed) { free(t); t = NULL; }
    else if (!t) t = calloc(1, 1);
    *b = (prom_buf){0};
    return t;
}

void prom_buf_free(prom_buf *b)
{
    free(b->text);
    *b = (prom_buf){0};
}

void prom_histogram_init(prom_histogram *h, const double *bounds, int n)
{
    assert(n >= 0 && n <= PROM_MAX_BUCKETS);
    *h = (prom_histogram){.n_bounds = n};
    for (int i = 0; i < n; i++) {
        assert(isfinite(bounds[i]) && (i == 0 || bounds[i] > bounds[i - 1]));
        h->bounds[i] = bounds[i];
    }
}

void prom_histogram_observe(prom_histogram *h, double value)
{
    int i = 0;
    while (i < h->n_bounds && value > h->bounds[i]) i++; /* le: value <= bound */
    h->counts[i]++;
    h->sum += value;
    h->count++;
}

void prom_histogram_write(prom_buf *b, const char *name, const char *const *labels,
                          const prom_histogram *h)
{
    uint64_t cumulative = 0;
    char le[64];
    for (int i = 0; i < h->n_bounds; i++) {
        cumulative += h->counts[i];
        snprintf(le, sizeof le, "%.15g", h->bounds[i]);
        sample_line(b, name, "_bucket", labels, le, (double)cumulative);
    }
    cumulative += h->counts[h->n_bounds];
    assert(cumulative == h->count);
    sample_line(b, name, "_bucket", labels, "+Inf", (double)cumulative);
    sample_line(b, name, "_sum", labels, NULL, h->sum);
    sample_line(b, name, "_count", labels, NULL, (double)h->count);
}
