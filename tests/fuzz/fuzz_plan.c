/* fuzz_plan.c: the decoder of model plans and demand carried in node
 * records' application field (serve/plan.h), on arbitrary bytes. */
#include <stdlib.h>
#include <string.h>

#include "serve/plan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static plan plans[PLAN_MAX_PLANS];
    static plan_demand demand[PLAN_MAX_DEMAND];
    char err[256];
    int nd = 0;
    int n = plan_decode_app(data, size, plans, PLAN_MAX_PLANS, demand, PLAN_MAX_DEMAND, &nd, err, sizeof err);
    if (n > PLAN_MAX_PLANS || nd < 0 || nd > PLAN_MAX_DEMAND) abort();
    if (n != plan_decode_list(data, size, plans, PLAN_MAX_PLANS, err, sizeof err)) abort();
    for (int i = 0; i < n; i++) {
        if (plans[i].n_stages && !plan_ranges_ok(&plans[i])) abort();
        if (strlen(plans[i].model) == 0) abort();
        /* What decodes encodes back to the same bytes' meaning. */
    }
    if (n > 0 || nd > 0) {
        uint8_t buf[MESH_MAX_APP];
        int len = plan_encode_app(plans, n, demand, nd, buf, sizeof buf);
        if (len < 0 || (size_t)len != size || memcmp(buf, data, size) != 0) abort();
    }
    return 0;
}
