/* demand.c: requests per model per minute. See demand.h. */
#include "serve/demand.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mesh/identity.h"
#include "lib/clock.h"

#define DEMAND_WINDOW_MS 60000u
#define DEMAND_MAX_PEERS 256

typedef struct {
    char model[MESH_MAX_NAME];
    uint64_t window_start_ms;  /* start of the current minute of this entry */
    uint32_t cur, prev;        /* requests in it, and in the minute before */
    uint64_t last_ms;          /* last request: the oldest entry makes room */
} demand_entry;

struct demand {
    demand_entry e[PLAN_MAX_DEMAND];
    int n;
};

demand *demand_new(void) { return calloc(1, sizeof(demand)); }
void demand_free(demand *d) { free(d); }

/* Moves e's window forward to now. */
static void roll(demand_entry *e, uint64_t now)
{
    uint64_t age = now - e->window_start_ms;
    if (age < DEMAND_WINDOW_MS) return;
    e->prev = age < 2 * DEMAND_WINDOW_MS ? e->cur : 0;
    e->cur = 0;
    e->window_start_ms = now - age % DEMAND_WINDOW_MS;
}

static uint32_t rate(const demand_entry *e, uint64_t now)
{
    double into = (double)(now - e->window_start_ms) / DEMAND_WINDOW_MS;
    double r = e->cur + e->prev * (1.0 - (into < 1 ? into : 1));
    return (uint32_t)(r + 0.5) ? (uint32_t)(r + 0.5) : (e->cur || e->prev ? 1 : 0);
}

void demand_note(demand *d, const char *model)
{
    if (!d || !model || !model[0] || strlen(model) >= MESH_MAX_NAME) return;
    uint64_t now = clock_ms();
    demand_entry *e = NULL;
    for (int i = 0; i < d->n && !e; i++)
        if (!strcmp(d->e[i].model, model)) e = &d->e[i];
    if (!e) {
        if (d->n < PLAN_MAX_DEMAND) {
            e = &d->e[d->n++];
        } else {
            e = &d->e[0];
            for (int i = 1; i < d->n; i++)
                if (d->e[i].last_ms < e->last_ms) e = &d->e[i];
        }
        memset(e, 0, sizeof *e);
        strcpy(e->model, model);
        e->window_start_ms = now;
    }
    roll(e, now);
    if (e->cur < UINT32_MAX) e->cur++;
    e->last_ms = now;
}

uint64_t demand_last_ms(const demand *d, const char *model)
{
    for (int i = 0; d && i < d->n; i++)
        if (!strcmp(d->e[i].model, model)) return d->e[i].last_ms;
    return 0;
}

int demand_rates(void *ctx, plan_demand *out, int max)
{
    demand *d = ctx;
    uint64_t now = clock_ms();
    int n = 0;
    for (int i = 0; d && i < d->n && n < max; i++) {
        roll(&d->e[i], now);
        uint32_t r = rate(&d->e[i], now);
        if (!r) continue;
        strcpy(out[n].model, d->e[i].model);
        out[n++].per_min = r;
    }
    return n;
}

static void merge(plan_demand *out, int *n, int max, const plan_demand *x)
{
    for (int i = 0; i < *n; i++)
        if (!strcmp(out[i].model, x->model)) {
            if (x->per_min > out[i].per_min) out[i].per_min = x->per_min;
            return;
        }
    if (*n < max) out[(*n)++] = *x;
}

int demand_in_mesh(demand *d, const mesh *m, plan_demand *out, int max)
{
    static mesh_peer peers[DEMAND_MAX_PEERS];  /* loop thread only: not on its stack */
    static uint8_t app[MESH_MAX_APP];
    static plan plans[PLAN_MAX_PLANS];
    static plan_demand theirs[PLAN_MAX_DEMAND];
    int n = demand_rates(d, out, max);
    int np = mesh_peers(m, peers, DEMAND_MAX_PEERS);
    for (int i = 0; i < np && i < DEMAND_MAX_PEERS; i++) {
        uint8_t id[MESH_ID_BYTES];
        if (!peers[i].app_len || identity_id_from_hex(peers[i].id, id) != 0) continue;
        int len = mesh_node_app_data(m, id, app, sizeof app);
        int nd = 0;
        char err[128];
        if (len <= 0 || plan_decode_app(app, (size_t)len, plans, PLAN_MAX_PLANS, theirs, PLAN_MAX_DEMAND, &nd,
                                        err, sizeof err) < 0)
            continue;
        for (int j = 0; j < nd; j++) merge(out, &n, max, &theirs[j]);
    }
    return n;
}
