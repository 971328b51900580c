/* fuzz_plan.c: the decoder of model plans, demand, held files and saturated
 * models carried in node records' application field (serve/plan.h), on
 * arbitrary bytes. */
#include <stdlib.h>
#include <string.h>

#include "serve/plan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static plan plans[PLAN_MAX_PLANS];
    static plan_demand demand[PLAN_MAX_DEMAND];
    static plan_file files[PLAN_MAX_FILES];
    static plan_saturated sat[PLAN_MAX_PLANS];
    char err[256];
    int nd = 0;
    plan_extra x = {.files = files, .max_files = PLAN_MAX_FILES, .saturated = sat, .max_saturated = PLAN_MAX_PLANS};
    int n = plan_decode_app_files(data, size, plans, PLAN_MAX_PLANS, demand, PLAN_MAX_DEMAND, &nd, &x, err, sizeof err);
    int nf = x.n_files;
    if (n > PLAN_MAX_PLANS || nd < 0 || nd > PLAN_MAX_DEMAND || nf < 0 || nf > PLAN_MAX_FILES || x.n_saturated < 0 ||
        x.n_saturated > PLAN_MAX_PLANS)
        abort();
    if (n != plan_decode_app(data, size, plans, PLAN_MAX_PLANS, demand, PLAN_MAX_DEMAND, &nd, err, sizeof err)) abort();
    if (n != plan_decode_list(data, size, plans, PLAN_MAX_PLANS, err, sizeof err)) abort();
    for (int i = 0; i < n; i++) {
        if (plans[i].n_stages && !plan_ranges_ok(&plans[i])) abort();
        if (strlen(plans[i].model) == 0) abort();
        /* What decodes encodes back to the same bytes' meaning. */
    }
    for (int i = 0; i < nf; i++)
        if (!files[i].ref[0] || files[i].size == 0 || files[i].size > PLAN_FILE_MAX_SIZE) abort();
    for (int i = 0; i < x.n_saturated; i++)
        if (!sat[i].model[0]) abort();
    if (n >= 0 && (n > 0 || nd > 0 || nf > 0 || x.n_saturated > 0)) { /* a field that decoded */
        uint8_t buf[MESH_MAX_APP];
        int len = plan_encode_app_files(plans, n, demand, nd, &x, buf, sizeof buf);
        if (len < 0 || (size_t)len != size || memcmp(buf, data, size) != 0) abort();
    }
    return 0;
}
