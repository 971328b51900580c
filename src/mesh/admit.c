/* admit.c: see admit.h. */
#include "mesh/admit.h"

#include <string.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "lib/consttime.h"

/* The role names differ in their text, so the two proofs of one connection
 * are MACs of different messages. */
static const char *const admit_domain[2] = {"llmesh/1 admission dialler", "llmesh/1 admission acceptor"};

int admit_proof(const uint8_t secret[ADMIT_SECRET_BYTES], admit_role role, const admit_binding *b,
                uint8_t mac[ADMIT_MAC_BYTES])
{
    const char *domain = admit_domain[role == ADMIT_ACCEPTOR];
    size_t dl = strlen(domain) + 1;            /* with its NUL */
    uint8_t msg[64 + ADMIT_EXPORTER_BYTES + 2 * MESH_ID_BYTES];
    size_t n = 0;
    memcpy(msg + n, domain, dl);
    n += dl;
    memcpy(msg + n, b->exporter, ADMIT_EXPORTER_BYTES);
    n += ADMIT_EXPORTER_BYTES;
    memcpy(msg + n, b->dialler, MESH_ID_BYTES);
    n += MESH_ID_BYTES;
    memcpy(msg + n, b->acceptor, MESH_ID_BYTES);
    n += MESH_ID_BYTES;
    int rc = gnutls_hmac_fast(GNUTLS_MAC_SHA256, secret, ADMIT_SECRET_BYTES, msg, n, mac);
    explicit_bzero(msg, sizeof msg);
    return rc == 0 ? 0 : -1;
}

void admit_encode(const uint8_t mac[ADMIT_MAC_BYTES], uint8_t out[ADMIT_FRAME_BYTES])
{
    out[0] = ADMIT_KIND_PROOF;
    memcpy(out + 1, mac, ADMIT_MAC_BYTES);
}

int admit_check(const uint8_t secret[ADMIT_SECRET_BYTES], admit_role role, const admit_binding *b,
                const uint8_t *frame, size_t len, const char **why)
{
    if (len != ADMIT_FRAME_BYTES) {
        *why = "admission frame of the wrong size";
        return -1;
    }
    if (frame[0] != ADMIT_KIND_PROOF) {
        *why = "unknown admission frame kind";
        return -1;
    }
    uint8_t want[ADMIT_MAC_BYTES];
    if (admit_proof(secret, role, b, want) != 0) {
        *why = "cannot compute the proof";
        return 0;
    }
    int ok = consttime_equal(want, sizeof want, frame + 1, ADMIT_MAC_BYTES);
    explicit_bzero(want, sizeof want);
    *why = ok ? NULL : "wrong proof: the peer does not know this mesh's secret";
    return ok;
}
