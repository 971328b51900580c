/* fuzz_admit.c: admit_check on arbitrary frames, for both roles, against one
 * fixed binding. A frame is proven only if it is exactly the proof computed
 * for that role (so no other bytes pass, and one role's proof never passes
 * as the other's); everything else is an error or a wrong MAC, never a crash
 * or a read past the frame. */
#include <stdlib.h>
#include <string.h>

#include "mesh/admit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t secret[ADMIT_SECRET_BYTES];
    admit_binding b;
    for (int i = 0; i < ADMIT_SECRET_BYTES; i++) secret[i] = (uint8_t)i;
    for (int i = 0; i < ADMIT_EXPORTER_BYTES; i++) b.exporter[i] = (uint8_t)(0x40 + i);
    for (int i = 0; i < MESH_ID_BYTES; i++) {
        b.dialler[i] = (uint8_t)(0x80 + i);
        b.acceptor[i] = (uint8_t)(0xc0 + i);
    }
    /* A copy of exactly size bytes, so ASan sees any read past the frame. */
    uint8_t *frame = malloc(size ? size : 1);
    if (!frame) return 0;
    if (size) memcpy(frame, data, size);
    for (int role = ADMIT_DIALLER; role <= ADMIT_ACCEPTOR; role++) {
        const char *why = NULL;
        int rc = admit_check(secret, (admit_role)role, &b, frame, size, &why);
        uint8_t mac[ADMIT_MAC_BYTES], want[ADMIT_FRAME_BYTES];
        if (admit_proof(secret, (admit_role)role, &b, mac) != 0) abort();
        admit_encode(mac, want);
        int exact = size == ADMIT_FRAME_BYTES && !memcmp(frame, want, ADMIT_FRAME_BYTES);
        if ((rc == 1) != exact) abort();
        if (rc != 1 && !why) abort();
        if (rc < -1 || rc > 1) abort();
    }
    free(frame);
    return 0;
}
