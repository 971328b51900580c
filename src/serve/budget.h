/* budget.h: this node's memory budget for models, and what is reserved of
 * it. Every part a node runs (a solo model, stage 0 of a split, a stage for
 * another node's model) reserves its need here before it loads; what is in
 * use travels in the node record (mesh_set_memory_used), so planners on
 * other nodes see what is free here.
 *
 * The budget is fixed at start (`--max-memory`, or what was available less
 * a margin): measuring "available" later would count our own models as
 * someone else's use. Threading: event-loop thread only. */
#ifndef LLMESH_BUDGET_H
#define LLMESH_BUDGET_H

#include <stdint.h>

struct mesh;

typedef struct {
    uint64_t total;      /* the budget */
    uint64_t used;       /* reserved by what this node runs */
    struct mesh *mesh;   /* told of every change; may be NULL (tests) */
} budget;

/* The default budget: MemAvailable less max(512 MiB, 10% of MemTotal); 0
 * when /proc/meminfo cannot be read. */
uint64_t budget_default(void);

uint64_t budget_free(const budget *b);
/* Reserves bytes: 0, or -1 (nothing reserved) when they do not fit. */
int budget_reserve(budget *b, uint64_t bytes);
void budget_release(budget *b, uint64_t bytes);

#endif
