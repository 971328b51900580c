/* budget.c: see budget.h. */
#include "serve/budget.h"

#include <assert.h>

#include "lib/sysinfo.h"
#include "mesh/mesh.h"

uint64_t budget_default(void)
{
    uint64_t avail = sysinfo_memory_available(), total = sysinfo_memory_total();
    /* The margin is for the OS, the page cache our own mapped files need
     * while they load, and other programs' growth. */
    uint64_t margin = total / 10 > (512ull << 20) ? total / 10 : 512ull << 20;
    return avail > margin ? avail - margin : 0;
}

uint64_t budget_free(const budget *b) { return b->total > b->used ? b->total - b->used : 0; }

int budget_reserve(budget *b, uint64_t bytes)
{
    if (bytes > budget_free(b)) return -1;
    b->used += bytes;
    if (b->mesh) mesh_set_memory_used(b->mesh, b->used);
    return 0;
}

void budget_release(budget *b, uint64_t bytes)
{
    assert(bytes <= b->used);
    b->used = bytes <= b->used ? b->used - bytes : 0;
    if (b->mesh) mesh_set_memory_used(b->mesh, b->used);
}
