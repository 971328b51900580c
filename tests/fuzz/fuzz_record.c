/* fuzz_record.c: the gossip node-record decoder (and signature check) on
 * arbitrary frame payloads. */
#include <stdlib.h>
#include <string.h>

#include "mesh/record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    node_record r;
    char err[256];
    if (record_decode(data, size, &r, err, sizeof err) == 0) {
        if (r.n_addrs < 0 || r.n_addrs > MESH_MAX_ADDRS) abort();
        if (r.n_models < 0 || r.n_models > MESH_MAX_MODELS) abort();
        for (int i = 0; i < r.n_models; i++)
            if (!record_model_name_ok(r.models[i], strlen(r.models[i]))) abort();
        (void)record_verify(data, size, r.id);
    }
    return 0;
}
