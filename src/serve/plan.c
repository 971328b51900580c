/* plan.c: see plan.h.
 *
 * The planner's order of concerns, and why:
 * 1. Solo when the model fits the coordinator: no hop beats any hop.
 * 2. Fewest stages: every boundary costs a network round trip per token
 *    (see ../shared/notes/split-peers.md, "Physics"), so k + 1 stages are
 *    tried only when no set of k fits.
 * 3. Among sets of k, direct links before relayed ones (a relay adds a hop
 *    and a bottleneck), then low RTT. Within that, the nodes with the most
 *    free memory are the fallback when the lowest-RTT ones do not fit.
 * 4. Layers in proportion to free memory, so no stage is filled to the brim
 *    while another idles (mesh-llm's memory-first cut once put 35 of 36
 *    layers on one node); if the proportional cut does not fit (layers of
 *    uneven size, a coordinator carrying the output matrix), each stage in
 *    turn takes as many layers as fit.
 * Cost: a plan over n members tries at most 2 x 16 candidate sets, each a
 * few dozen need() calls: microseconds, done on the loop thread. */
#include "serve/plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/wire.h"
#include "mesh/record.h"

#define PLAN_FORMAT 1 /* first byte of the application field: plans only */
#define PLAN_FORMAT_DEMAND 2 /* plans, then the node's demand per model */
#define PLAN_FORMAT_FILES 3  /* plans, demand (maybe none), then the model files the node holds */
#define MIB(b) ((double)(b) / 1048576.0)

const char *plan_state_name(int state)
{
    switch (state) {
    case PLAN_PLANNING: return "planning";
    case PLAN_LOADING: return "loading";
    case PLAN_READY: return "ready";
    default: return "unknown";
    }
}

const char *stage_state_name(int state)
{
    switch (state) {
    case STAGE_LOADING: return "loading";
    case STAGE_FETCHING: return "fetching";
    case STAGE_READY: return "ready";
    default: return "unknown";
    }
}

int plan_ranges_ok(const plan *p)
{
    if (p->n_stages < 1 || p->n_stages > PLAN_MAX_STAGES || p->n_layer < 1) return 0;
    int at = 0;
    for (int i = 0; i < p->n_stages; i++) {
        if (p->stages[i].first != at || p->stages[i].end <= at) return 0;
        at = p->stages[i].end;
    }
    return at == p->n_layer;
}

/* ======================================================================== */
/* encoding                                                                  */
/* ======================================================================== */

int plan_encode_list(const plan *plans, int n, uint8_t *out, size_t cap)
{
    return plan_encode_app(plans, n, NULL, 0, out, cap);
}

int plan_encode_app(const plan *plans, int n, const plan_demand *demand, int n_demand, uint8_t *out, size_t cap)
{
    return plan_encode_app_files(plans, n, demand, n_demand, NULL, out, cap);
}

static int file_ref_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > PLAN_FILE_REF_MAX) return 0;
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f) return 0;
    return 1;
}

int plan_encode_app_files(const plan *plans, int n, const plan_demand *demand, int n_demand,
                          const plan_extra *extra, uint8_t *out, size_t cap)
{
    wire_writer w = wire_writer_of(out, cap);
    const plan_file *files = extra ? extra->files : NULL;
    int n_files = extra ? extra->n_files : 0, n_sat = extra ? extra->n_saturated : 0;
    if (n < 0 || n > PLAN_MAX_PLANS || n_demand < 0 || n_demand > PLAN_MAX_DEMAND || n_files < 0 ||
        n_files > PLAN_MAX_FILES || n_sat < 0 || n_sat > PLAN_MAX_PLANS)
        return -1;
    for (int i = 0; i < n_files; i++)
        if (!file_ref_ok(files[i].ref)) return -1;
    for (int i = 0; i < n_sat; i++)
        if (!record_model_name_ok(extra->saturated[i].model, strlen(extra->saturated[i].model))) return -1;
    int extended = n_files || n_sat;
    wire_put_u8(&w, extended ? PLAN_FORMAT_FILES : n_demand ? PLAN_FORMAT_DEMAND : PLAN_FORMAT);
    wire_put_u8(&w, (uint8_t)n);
    for (int i = 0; i < n; i++) {
        const plan *p = &plans[i];
        wire_put_str8(&w, p->model);
        wire_put_u8(&w, p->state);
        wire_put_u32(&w, p->version);
        wire_put_u16(&w, (uint16_t)p->n_layer);
        wire_put_u64(&w, p->need_bytes);
        wire_put_str8(&w, p->reason);
        wire_put_u8(&w, (uint8_t)p->n_stages);
        for (int s = 0; s < p->n_stages; s++) {
            const plan_stage *st = &p->stages[s];
            wire_put_bytes(&w, st->node, MESH_ID_BYTES);
            wire_put_u16(&w, (uint16_t)st->first);
            wire_put_u16(&w, (uint16_t)st->end);
            wire_put_u8(&w, st->state);
            wire_put_u64(&w, st->fetched_bytes);
            wire_put_u64(&w, st->total_bytes);
        }
    }
    if (n_demand || extended) {
        wire_put_u8(&w, (uint8_t)n_demand);
        for (int i = 0; i < n_demand; i++) {
            wire_put_str8(&w, demand[i].model);
            wire_put_u32(&w, demand[i].per_min);
        }
    }
    if (extended) {
        wire_put_u8(&w, (uint8_t)n_files);
        for (int i = 0; i < n_files; i++) {
            wire_put_bytes(&w, files[i].sha256, 32);
            wire_put_u64(&w, files[i].size);
            wire_put_str8(&w, files[i].ref);
        }
        wire_put_u8(&w, (uint8_t)n_sat);
        for (int i = 0; i < n_sat; i++) wire_put_str8(&w, extra->saturated[i].model);
    }
    return w.overflow ? -1 : (int)w.len;
}

static int text_ok(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f) return 0;
    return 1;
}

int plan_decode_list(const uint8_t *data, size_t len, plan *out, int max, char *err, size_t errlen)
{
    int n_demand;
    return plan_decode_app(data, len, out, max, NULL, 0, &n_demand, err, errlen);
}

int plan_decode_app(const uint8_t *data, size_t len, plan *out, int max, plan_demand *demand, int max_demand,
                    int *n_demand, char *err, size_t errlen)
{
    return plan_decode_app_files(data, len, out, max, demand, max_demand, n_demand, NULL, err, errlen);
}

static int decode_app(const uint8_t *data, size_t len, plan *out, int max, plan_demand *demand, int max_demand,
                      int *n_demand, plan_extra *extra, char *err, size_t errlen)
{
    *n_demand = 0;
    if (extra) extra->n_files = extra->n_saturated = 0;
    if (len == 0) return 0;
    wire_reader r = wire_reader_of(data, len);
    int format = wire_u8(&r), n = wire_u8(&r);
    if (r.bad || format < PLAN_FORMAT || format > PLAN_FORMAT_FILES) {
        snprintf(err, errlen, "plan list of format %d (this node reads %d to %d)", format, PLAN_FORMAT,
                 PLAN_FORMAT_FILES);
        return -1;
    }
    if (n > PLAN_MAX_PLANS || n > max) {
        snprintf(err, errlen, "plan list of %d plans (at most %d)", n, max < PLAN_MAX_PLANS ? max : PLAN_MAX_PLANS);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        plan *p = &out[i];
        memset(p, 0, sizeof *p);
        wire_str8(&r, p->model, sizeof p->model);
        p->state = wire_u8(&r);
        p->version = wire_u32(&r);
        p->n_layer = wire_u16(&r);
        p->need_bytes = wire_u64(&r);
        wire_str8(&r, p->reason, sizeof p->reason);
        p->n_stages = wire_u8(&r);
        if (r.bad) break;
        if (!record_model_name_ok(p->model, strlen(p->model)) || !text_ok(p->reason) ||
            p->state > PLAN_READY || p->n_stages > PLAN_MAX_STAGES || p->n_layer < 1 ||
            (p->state != PLAN_PLANNING && p->n_stages < 1)) {
            snprintf(err, errlen, "plan %d (%.40s): bad name, reason, state, layer or stage count", i + 1,
                     p->model);
            return -1;
        }
        for (int s = 0; s < p->n_stages; s++) {
            plan_stage *st = &p->stages[s];
            const uint8_t *id = wire_bytes(&r, MESH_ID_BYTES);
            if (id) memcpy(st->node, id, MESH_ID_BYTES);
            st->first = wire_u16(&r);
            st->end = wire_u16(&r);
            st->state = wire_u8(&r);
            st->fetched_bytes = wire_u64(&r);
            st->total_bytes = wire_u64(&r);
            if (!r.bad && st->state > STAGE_READY) {
                snprintf(err, errlen, "plan %.40s: stage %d in unknown state %u", p->model, s, st->state);
                return -1;
            }
        }
        if (r.bad) break;
        if (p->n_stages > 0 && !plan_ranges_ok(p)) {
            snprintf(err, errlen, "plan %.40s: stage layer ranges do not cover [0, %d) in order",
                     p->model, p->n_layer);
            return -1;
        }
    }
    int got = 0;                     /* *n_demand only once all is well */
    if (!r.bad && format >= PLAN_FORMAT_DEMAND) {
        int nd = wire_u8(&r);
        if (nd < (format == PLAN_FORMAT_DEMAND) || nd > PLAN_MAX_DEMAND) {
            snprintf(err, errlen, "demand of %d models (1 to %d)", nd, PLAN_MAX_DEMAND);
            return -1;
        }
        for (int i = 0; i < nd && !r.bad; i++) {
            plan_demand d;
            wire_str8(&r, d.model, sizeof d.model);
            d.per_min = wire_u32(&r);
            if (r.bad) break;
            if (!record_model_name_ok(d.model, strlen(d.model))) {
                snprintf(err, errlen, "demand %d: bad model name", i + 1);
                return -1;
            }
            if (demand && got < max_demand) demand[got++] = d;
        }
    }
    if (!r.bad && format == PLAN_FORMAT_FILES) {
        int nf = wire_u8(&r);
        if (nf > PLAN_MAX_FILES) {
            snprintf(err, errlen, "files: %d (at most %d)", nf, PLAN_MAX_FILES);
            return -1;
        }
        for (int i = 0; i < nf && !r.bad; i++) {
            plan_file f;
            const uint8_t *sha = wire_bytes(&r, 32);
            if (sha) memcpy(f.sha256, sha, 32);
            f.size = wire_u64(&r);
            wire_str8(&r, f.ref, sizeof f.ref);
            if (r.bad) break;
            if (!file_ref_ok(f.ref) || f.size == 0 || f.size > PLAN_FILE_MAX_SIZE) {
                snprintf(err, errlen, "file %d: bad reference or size", i + 1);
                return -1;
            }
            if (extra && extra->files && extra->n_files < extra->max_files) extra->files[extra->n_files++] = f;
        }
        int ns = wire_u8(&r);
        if (!r.bad && (ns > PLAN_MAX_PLANS || (ns == 0 && nf == 0))) {
            snprintf(err, errlen, "format 3 with %d files and %d saturated models (1 to %d)", nf, ns, PLAN_MAX_PLANS);
            return -1;
        }
        for (int i = 0; i < ns && !r.bad; i++) {
            plan_saturated m;
            wire_str8(&r, m.model, sizeof m.model);
            if (r.bad) break;
            if (!record_model_name_ok(m.model, strlen(m.model))) {
                snprintf(err, errlen, "saturated model %d: bad name", i + 1);
                return -1;
            }
            if (extra && extra->saturated && extra->n_saturated < extra->max_saturated)
                extra->saturated[extra->n_saturated++] = m;
        }
    }
    if (r.bad || wire_left(&r) != 0) {
        snprintf(err, errlen, "plan list truncated or with %zu trailing bytes", wire_left(&r));
        return -1;
    }
    *n_demand = got;
    return n;
}

int plan_decode_app_files(const uint8_t *data, size_t len, plan *out, int max, plan_demand *demand,
                          int max_demand, int *n_demand, plan_extra *extra, char *err, size_t errlen)
{
    int n = decode_app(data, len, out, max, demand, max_demand, n_demand, extra, err, errlen);
    if (n < 0) { /* a malformed field leaves no count behind */
        *n_demand = 0;
        if (extra) extra->n_files = extra->n_saturated = 0;
    }
    return n;
}

int plan_app_marks_saturated(const uint8_t *p, size_t len, const char *model)
{
    static plan plans[PLAN_MAX_PLANS];
    static plan_demand demand[PLAN_MAX_DEMAND];
    static plan_file files[PLAN_MAX_FILES];
    static plan_saturated sat[PLAN_MAX_PLANS];
    plan_extra extra = {.files = files, .max_files = PLAN_MAX_FILES, .saturated = sat,
                        .max_saturated = PLAN_MAX_PLANS};
    int nd;
    char err[128];
    if (plan_decode_app_files(p, len, plans, PLAN_MAX_PLANS, demand, PLAN_MAX_DEMAND, &nd, &extra, err,
                              sizeof err) < 0)
        return 0;
    for (int i = 0; i < extra.n_saturated; i++)
        if (!strcmp(sat[i].model, model)) return 1;
    return 0;
}

/* ======================================================================== */
/* the planner                                                               */
/* ======================================================================== */

/* Cuts n_layer layers into k contiguous ranges over nodes[0..k) (nodes[0]
 * with the head). 0 with ends[] filled (stage i runs [ends[i-1], ends[i])),
 * or -1 when they do not fit. */
static int cut_layers(const plan_request *rq, const plan_member *const *nodes, int k, int *ends)
{
    int L = rq->n_layer;
    if (k > L) return -1;
    /* Proportional: weight = free memory after the stage's fixed overhead. */
    double weight[PLAN_MAX_STAGES], total = 0;
    for (int i = 0; i < k; i++) {
        uint64_t overhead = rq->need(rq->need_ctx, 0, 0, i == 0);
        weight[i] = nodes[i]->free_bytes > overhead ? (double)(nodes[i]->free_bytes - overhead) : 0;
        total += weight[i];
    }
    int fits = total > 0;
    double cum = 0;
    int at = 0;
    for (int i = 0; i < k && fits; i++) {
        cum += weight[i];
        int end = i == k - 1 ? L : (int)(L * cum / total + 0.5);
        if (end < at + 1) end = at + 1;                 /* every stage runs a layer */
        if (end > L - (k - 1 - i)) end = L - (k - 1 - i); /* and leaves one for each after it */
        if (rq->need(rq->need_ctx, at, end, i == 0) > nodes[i]->free_bytes) fits = 0;
        ends[i] = at = end;
    }
    if (fits) return 0;
    /* Fill in turn: as many layers as fit, one left for each stage after. */
    at = 0;
    for (int i = 0; i < k; i++) {
        int most = i == k - 1 ? L : L - (k - 1 - i);
        int end = at;
        while (end < most && rq->need(rq->need_ctx, at, end + 1, i == 0) <= nodes[i]->free_bytes) end++;
        if (end == at || (i == k - 1 && end != L)) return -1;
        ends[i] = at = end;
    }
    return 0;
}

typedef struct {
    const plan_member *m;
    int index;
} candidate;

static int by_rtt(const void *a, const void *b)
{
    const candidate *x = a, *y = b;
    if (x->m->relayed != y->m->relayed) return x->m->relayed - y->m->relayed;
    if (x->m->rtt_ms != y->m->rtt_ms) return x->m->rtt_ms < y->m->rtt_ms ? -1 : 1;
    if (x->m->free_bytes != y->m->free_bytes) return x->m->free_bytes > y->m->free_bytes ? -1 : 1;
    return x->index - y->index;
}

static int by_free(const void *a, const void *b)
{
    const candidate *x = a, *y = b;
    if (x->m->relayed != y->m->relayed) return x->m->relayed - y->m->relayed;
    if (x->m->free_bytes != y->m->free_bytes) return x->m->free_bytes > y->m->free_bytes ? -1 : 1;
    if (x->m->rtt_ms != y->m->rtt_ms) return x->m->rtt_ms < y->m->rtt_ms ? -1 : 1;
    return x->index - y->index;
}

/* Tries k stages: the coordinator and k - 1 of the first `pool` candidates,
 * lowest RTT first, then most free memory first. Fills out on success. */
static int try_stages(const plan_request *rq, const plan_member *self, candidate *cand, int pool,
                      int k, plan *out)
{
    if (k - 1 > pool) return -1;
    for (int attempt = 0; attempt < 2; attempt++) {
        qsort(cand, (size_t)pool, sizeof *cand, attempt == 0 ? by_rtt : by_free);
        const plan_member *nodes[PLAN_MAX_STAGES];
        nodes[0] = self;
        for (int i = 1; i < k; i++) nodes[i] = cand[i - 1].m;
        /* Ring order: nodes that ran part of the model before keep their
         * place (the same memory then gives the same layers, which they
         * have cached), the others after them in the order chosen. */
        for (int i = 2; i < k; i++)
            for (int j = i; j > 1 && nodes[j]->prev_first >= 0 &&
                            (nodes[j - 1]->prev_first < 0 || nodes[j - 1]->prev_first > nodes[j]->prev_first);
                 j--) {
                const plan_member *t = nodes[j];
                nodes[j] = nodes[j - 1];
                nodes[j - 1] = t;
            }
        int ends[PLAN_MAX_STAGES];
        if (cut_layers(rq, nodes, k, ends) != 0) continue;
        out->n_stages = k;
        for (int i = 0; i < k; i++) {
            plan_stage *st = &out->stages[i];
            memset(st, 0, sizeof *st);
            memcpy(st->node, nodes[i]->id, MESH_ID_BYTES);
            st->first = i == 0 ? 0 : ends[i - 1];
            st->end = ends[i];
            st->state = STAGE_LOADING;
        }
        return 0;
    }
    return -1;
}

int plan_make(const plan_request *rq, const plan_member *members, int n, plan *out)
{
    memset(out, 0, sizeof *out);
    snprintf(out->model, sizeof out->model, "%s", rq->model);
    out->n_layer = rq->n_layer;
    out->need_bytes = rq->need(rq->need_ctx, 0, rq->n_layer, 1);
    out->state = PLAN_LOADING;
    const plan_member *self = &members[0];

    if (rq->force_stages <= 1 && out->need_bytes <= self->free_bytes) {
        out->n_stages = 1;
        memcpy(out->stages[0].node, self->id, MESH_ID_BYTES);
        out->stages[0].end = rq->n_layer;
        return 0;
    }

    candidate *cand = calloc((size_t)(n > 1 ? n - 1 : 1), sizeof *cand);
    if (!cand) {
        out->state = PLAN_PLANNING;
        snprintf(out->reason, sizeof out->reason, "out of memory while planning");
        return -1;
    }
    int n_cand = 0, n_direct = 0;
    uint64_t free_all = self->free_bytes;
    for (int i = 1; i < n; i++) {
        if (members[i].free_bytes == 0) continue;
        cand[n_cand].m = &members[i];
        cand[n_cand].index = i;
        n_cand++;
        n_direct += !members[i].relayed;
        free_all += members[i].free_bytes;
    }
    /* Direct links first (the first n_direct), each group by RTT. */
    qsort(cand, (size_t)n_cand, sizeof *cand, by_rtt);
    int max_k = n_cand + 1 < PLAN_MAX_STAGES ? n_cand + 1 : PLAN_MAX_STAGES;
    if (max_k > rq->n_layer) max_k = rq->n_layer;
    int rc = -1;
    if (rq->force_stages >= 2) {
        int k = rq->force_stages;
        if (k <= max_k) {
            rc = try_stages(rq, self, cand, n_direct, k, out);
            if (rc != 0) rc = try_stages(rq, self, cand, n_cand, k, out);
        }
        if (rc != 0) {
            out->state = PLAN_PLANNING;
            out->n_stages = 0;
            if (k > rq->n_layer)
                snprintf(out->reason, sizeof out->reason, "--split %d: the model has only %d layers", k,
                         rq->n_layer);
            else if (k - 1 > n_cand)
                snprintf(out->reason, sizeof out->reason,
                         "--split %d: waiting for %d more node(s) with free memory (%d now)", k,
                         k - 1 - n_cand, n_cand);
            else
                snprintf(out->reason, sizeof out->reason,
                         "--split %d: %d nodes cannot hold %.1f MiB in %d stages (%.1f MiB free)", k, k,
                         MIB(out->need_bytes), k, MIB(free_all));
        }
    } else {
        /* Direct links only first, then relayed ones allowed. */
        for (int k = 2; k <= max_k && rc != 0; k++) rc = try_stages(rq, self, cand, n_direct, k, out);
        for (int k = 2; k <= max_k && rc != 0; k++) rc = try_stages(rq, self, cand, n_cand, k, out);
        if (rc != 0) {
            out->state = PLAN_PLANNING;
            out->n_stages = 0;
            /* What the layers need beyond each stage's fixed part, against
             * what the nodes have beyond theirs. */
            uint64_t layers = out->need_bytes - rq->need(rq->need_ctx, 0, 0, 1), usable = 0;
            uint64_t base0 = rq->need(rq->need_ctx, 0, 0, 1), base = rq->need(rq->need_ctx, 0, 0, 0);
            usable += self->free_bytes > base0 ? self->free_bytes - base0 : 0;
            for (int i = 0; i < n_cand && i < PLAN_MAX_STAGES - 1; i++)
                usable += cand[i].m->free_bytes > base ? cand[i].m->free_bytes - base : 0;
            if (usable < layers)
                snprintf(out->reason, sizeof out->reason,
                         "not enough memory in the mesh: the model needs %.1f MiB on one node; its "
                         "layers need %.1f MiB and %d node(s) have room for %.1f MiB of them "
                         "(%.1f MiB missing)",
                         MIB(out->need_bytes), MIB(layers), n_cand + 1, MIB(usable), MIB(layers - usable));
            else
                snprintf(out->reason, sizeof out->reason,
                         "not enough memory in the mesh: the model needs %.1f MiB and %d node(s) have "
                         "%.1f MiB free, but no split into at most %d stages fits their free memory",
                         MIB(out->need_bytes), n_cand + 1, MIB(free_all), max_k);
        }
    }
    free(cand);
    return rc;
}
