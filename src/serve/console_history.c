/* console_history.c: the per-model traffic rings behind GET /api/history.
 * See console_history.h.
 *
 * Points live in one ring of times; each model has a ring of values at the
 * same indices, so a point is one index for every model. A value that does
 * not exist (a model not yet seen, no generation in the interval, a model
 * not served here for the queue) is NaN and prints as null. Floats rather
 * than doubles: the page draws 22-pixel graphs, and it halves the memory. */
#include "serve/console_history.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    float req_s, tok_s, ttft_ms, queued;
} history_value;

typedef struct {
    char name[CONSOLE_HISTORY_MAX_NAME];  /* "" : a free slot */
    uint64_t requests, tokens, ttft_count; /* the totals at the last record */
    double ttft_seconds;
    history_value v[CONSOLE_HISTORY_POINTS];
} history_model;

struct console_history {
    uint64_t last_ms;                      /* the last record (or the start) */
    uint64_t t_ms[CONSOLE_HISTORY_POINTS]; /* when each point was taken */
    int next;                              /* the index the next point takes */
    int count;                             /* points held */
    history_model models[CONSOLE_HISTORY_MODELS];
};

static const history_value no_value = {NAN, NAN, NAN, NAN};

console_history *console_history_new(uint64_t start_ms)
{
    console_history *h = calloc(1, sizeof *h);
    if (h) h->last_ms = start_ms;
    return h;
}

void console_history_free(console_history *h) { free(h); }

int console_history_points(const console_history *h) { return h->count; }

/* 1 when model slot m had traffic, or was served here, in a point still
 * held: otherwise it has nothing to show (its rates are all 0) and its
 * slot may go to another model. */
static int model_active(const console_history *h, const history_model *m)
{
    for (int k = 0; k < h->count; k++) {
        const history_value *v = &m->v[(h->next - 1 - k + CONSOLE_HISTORY_POINTS) % CONSOLE_HISTORY_POINTS];
        if (v->req_s > 0 || v->tok_s > 0 || !isnan(v->ttft_ms) || !isnan(v->queued)) return 1;
    }
    return 0;
}

static void model_reset(history_model *m, const char *name)
{
    memset(m, 0, sizeof *m);
    snprintf(m->name, sizeof m->name, "%s", name);
    for (int i = 0; i < CONSOLE_HISTORY_POINTS; i++) m->v[i] = no_value;
}

/* The slot of a model: its own, a free one, or one whose values all left
 * the window (model_active); NULL when every slot is in use (the model is
 * not kept). */
static history_model *model_slot(console_history *h, const char *name)
{
    if (!name || strlen(name) >= CONSOLE_HISTORY_MAX_NAME) return NULL;
    history_model *free_slot = NULL, *stale = NULL;
    for (int i = 0; i < CONSOLE_HISTORY_MODELS; i++) {
        history_model *m = &h->models[i];
        if (!m->name[0]) {
            if (!free_slot) free_slot = m;
        } else if (!strcmp(m->name, name)) {
            return m;
        } else if (!stale && !model_active(h, m)) {
            stale = m;
        }
    }
    history_model *m = free_slot ? free_slot : stale;
    if (m) model_reset(m, name); /* totals 0: a model first seen had none before */
    return m;
}

/* (now - before) / seconds, or NaN when the total went down. */
static float per_second(uint64_t now, uint64_t before, double seconds)
{
    return now >= before ? (float)((double)(now - before) / seconds) : NAN;
}

void console_history_record(console_history *h, uint64_t now_ms, const console_history_sample *s, int n)
{
    if (now_ms < h->last_ms + 1) return;
    double dt = (double)(now_ms - h->last_ms) / 1000.0;
    int at = h->next;
    h->t_ms[at] = now_ms;
    h->next = (at + 1) % CONSOLE_HISTORY_POINTS;
    if (h->count < CONSOLE_HISTORY_POINTS) h->count++;
    h->last_ms = now_ms;
    /* A model with no sample this time: no traffic since the last record
     * (its totals are unchanged), and not served here (no queue). */
    for (int i = 0; i < CONSOLE_HISTORY_MODELS; i++)
        if (h->models[i].name[0]) h->models[i].v[at] = (history_value){0, 0, NAN, NAN};
    for (int j = 0; j < n; j++) {
        history_model *m = model_slot(h, s[j].model);
        if (!m) continue;
        history_value *v = &m->v[at];
        v->req_s = per_second(s[j].requests, m->requests, dt);
        v->tok_s = per_second(s[j].completion_tokens, m->tokens, dt);
        v->ttft_ms = s[j].ttft_count > m->ttft_count && s[j].ttft_seconds >= m->ttft_seconds
                         ? (float)((s[j].ttft_seconds - m->ttft_seconds) * 1000.0 /
                                   (double)(s[j].ttft_count - m->ttft_count))
                         : NAN;
        v->queued = s[j].queued >= 0 ? (float)s[j].queued : NAN;
        m->requests = s[j].requests;
        m->tokens = s[j].completion_tokens;
        m->ttft_count = s[j].ttft_count;
        m->ttft_seconds = s[j].ttft_seconds;
    }
}

/* One series of model m, oldest first, null where there is no value. */
static cJSON *series(const console_history *h, const history_model *m, size_t offset)
{
    cJSON *a = cJSON_CreateArray();
    if (!a) return NULL;
    int oldest = (h->next - h->count + CONSOLE_HISTORY_POINTS) % CONSOLE_HISTORY_POINTS;
    for (int k = 0; k < h->count; k++) {
        const history_value *v = &m->v[(oldest + k) % CONSOLE_HISTORY_POINTS];
        float x;
        memcpy(&x, (const char *)v + offset, sizeof x);
        /* Three decimals are plenty for a graph and keep the document small. */
        cJSON_AddItemToArray(a, isnan(x) ? cJSON_CreateNull() : cJSON_CreateNumber(round(x * 1000.0) / 1000.0));
    }
    return a;
}

char *console_history_json(const console_history *h, uint64_t now_ms)
{
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    cJSON_AddNumberToObject(root, "interval_ms", CONSOLE_HISTORY_INTERVAL_MS);
    cJSON_AddNumberToObject(root, "max_points", CONSOLE_HISTORY_POINTS);
    cJSON *ago = cJSON_AddArrayToObject(root, "ago_ms");
    int oldest = (h->next - h->count + CONSOLE_HISTORY_POINTS) % CONSOLE_HISTORY_POINTS;
    for (int k = 0; k < h->count; k++) {
        uint64_t t = h->t_ms[(oldest + k) % CONSOLE_HISTORY_POINTS];
        cJSON_AddItemToArray(ago, cJSON_CreateNumber(now_ms > t ? (double)(now_ms - t) : 0));
    }
    cJSON *models = cJSON_AddArrayToObject(root, "models");
    for (int i = 0; i < CONSOLE_HISTORY_MODELS; i++) {
        const history_model *m = &h->models[i];
        if (!m->name[0] || !model_active(h, m)) continue;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "model", m->name);
        cJSON_AddItemToObject(o, "req_s", series(h, m, offsetof(history_value, req_s)));
        cJSON_AddItemToObject(o, "tok_s", series(h, m, offsetof(history_value, tok_s)));
        cJSON_AddItemToObject(o, "ttft_ms", series(h, m, offsetof(history_value, ttft_ms)));
        cJSON_AddItemToObject(o, "queued", series(h, m, offsetof(history_value, queued)));
        cJSON_AddItemToArray(models, o);
    }
    char *out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return out;
}
