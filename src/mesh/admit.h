/* admit.h: the admission proof, computed, encoded and checked. Bytes in
 * docs/PROTOCOL.md section 15; behaviour (who sends what, deadlines) in
 * mesh/admission.c.
 *
 * A proof says "I know the mesh secret, and I am one end of this very
 * connection": HMAC-SHA256 keyed with the secret over a domain string that
 * names the sender's role (dialler or acceptor), the connection's TLS
 * exporter value (RFC 8446 section 7.5: the same on both ends of one
 * connection, different on every other, unknown to anyone outside it), and
 * the two node ids. So a proof seen on one connection is worth nothing on
 * another, and one side's proof cannot be reflected back as the other's.
 *
 * Not here: the TLS exporter itself (net/quic.c), streams and timers.
 * Threading: pure functions, any thread. */
#ifndef LLMESH_MESH_ADMIT_H
#define LLMESH_MESH_ADMIT_H

#include <stddef.h>
#include <stdint.h>

#include "mesh/mesh.h"

#define ADMIT_SECRET_BYTES 32
#define ADMIT_EXPORTER_LABEL "EXPORTER-llmesh-admission"
#define ADMIT_EXPORTER_BYTES 32
#define ADMIT_MAC_BYTES 32
#define ADMIT_KIND_PROOF 0x01
#define ADMIT_FRAME_BYTES (1 + ADMIT_MAC_BYTES)  /* kind + MAC: the one frame each way */
#define ADMIT_FRAME_MAX 64                       /* frame bound on ADMISSION streams */

typedef enum { ADMIT_DIALLER = 0, ADMIT_ACCEPTOR = 1 } admit_role;

/* What both ends of a connection know once its handshake is done. */
typedef struct {
    uint8_t exporter[ADMIT_EXPORTER_BYTES];
    uint8_t dialler[MESH_ID_BYTES];
    uint8_t acceptor[MESH_ID_BYTES];
} admit_binding;

/* The proof of role over binding with secret. 0, or -1 (the MAC failed). */
int admit_proof(const uint8_t secret[ADMIT_SECRET_BYTES], admit_role role, const admit_binding *b,
                uint8_t mac[ADMIT_MAC_BYTES]);
/* The PROOF frame's payload for mac; ADMIT_FRAME_BYTES written. */
void admit_encode(const uint8_t mac[ADMIT_MAC_BYTES], uint8_t out[ADMIT_FRAME_BYTES]);
/* Checks a received frame as the proof of role: 1 proven; 0 a well-formed
 * proof with the wrong MAC (the sender does not know the secret, or is not
 * on this connection); -1 malformed (wrong size or kind), with why. The MAC
 * comparison takes the same time wherever a guess differs. */
int admit_check(const uint8_t secret[ADMIT_SECRET_BYTES], admit_role role, const admit_binding *b,
                const uint8_t *frame, size_t len, const char **why);

#endif
