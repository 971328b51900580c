/* fuzz_swim.c: the failure detector's decoders (control-stream probes and
 * gossip notices, and the LEAVE signature check) on arbitrary payloads. */
#include <stdlib.h>
#include <string.h>

#include "mesh/swim.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    swim_probe p;
    int rc = swim_probe_decode(data, size, &p, err, sizeof err);
    if (rc == 0) {
        if (p.kind != SWIM_PING && p.kind != SWIM_ACK && p.kind != SWIM_PING_REQ) abort();
        /* What we decode, we encode to the same leading bytes. */
        uint8_t buf[SWIM_CTRL_MAX];
        size_t n = swim_probe_encode(&p, buf);
        if (n > size || memcmp(buf, data, n) != 0) abort();
    } else if (rc != 1 && rc != -1) {
        abort();
    }
    swim_notice sn;
    if (swim_notice_decode(data, size, &sn, err, sizeof err) == 0) {
        if (sn.kind == SWIM_NOTICE_LEAVE) {
            if (size != SWIM_LEAVE_BYTES) abort();
            (void)swim_leave_verify(data, size);
        } else {
            if (size != SWIM_CLAIM_BYTES) abort();
            uint8_t buf[SWIM_CLAIM_BYTES];
            swim_claim_encode(&sn, buf);
            if (memcmp(buf, data, size) != 0) abort();
        }
    }
    return 0;
}
