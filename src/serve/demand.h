/* demand.h: how often each model is asked for, here and in the mesh.
 *
 * Every node counts the generation requests it sees per model name: served
 * here, forwarded to a peer, or refused because no live node serves the
 * model (a 404 or 503 is demand too: it is what a standby should answer).
 * The rate is requests in the last minute (the current minute's count plus
 * the previous minute's, weighted by how much of it is still inside the
 * window). Rates travel in the node record after the plans (plan.h,
 * plan_demand), so a standby learns what is wanted from every member, and
 * from the last record of a host that died.
 *
 * Bounds: at most PLAN_MAX_DEMAND names are counted (model names come from
 * requests, so from anyone): the one seen longest ago makes room.
 * Threading: event-loop thread only. */
#ifndef LLMESH_DEMAND_H
#define LLMESH_DEMAND_H

#include <stdint.h>

#include "mesh/mesh.h"
#include "serve/plan.h"

typedef struct demand demand;

demand *demand_new(void);
void demand_free(demand *d);
/* One request for model (a name already checked by the request parser). */
void demand_note(demand *d, const char *model);
/* This node's rates above zero, into out (at most max); the count. Has the
 * shape of pipelines_demand_fn (ctx: the demand). */
int demand_rates(void *d, plan_demand *out, int max);
/* When this node last saw a request for model (clock_ms), 0 never (or
 * forgotten: the oldest of more than PLAN_MAX_DEMAND names). */
uint64_t demand_last_ms(const demand *d, const char *model);
/* Every model some record asks for (this node's counts and every peer's
 * record that the mesh still holds, dead and left ones included), with the
 * largest rate seen for each. The count. */
int demand_in_mesh(demand *d, const mesh *m, plan_demand *out, int max);

#endif
