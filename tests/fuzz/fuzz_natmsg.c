/* fuzz_natmsg.c: the reachability decoders (RENDEZVOUS messages, RELAY stream
 * heads and packet frames) on arbitrary bytes. Input byte 0 picks the
 * decoder; the rest is one frame payload, copied to an exact-size buffer so
 * overreads show under ASan. A message that decodes must re-encode to bytes
 * that decode to the same message. */
#include <stdlib.h>
#include <string.h>

#include "mesh/natmsg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    uint8_t which = data[0] % 3;
    size_t len = size - 1;
    uint8_t *p = malloc(len ? len : 1);
    if (!p) return 0;
    memcpy(p, data + 1, len);
    char err[128];
    if (which == 0) {
        nat_msg m, again;
        if (nat_msg_decode(p, len, &m, err, sizeof err) == 0) {
            uint8_t buf[NAT_MSG_MAX];
            size_t n = nat_msg_encode(&m, buf);
            if (nat_msg_decode(buf, n, &again, err, sizeof err) != 0 || memcmp(&m, &again, sizeof m) != 0)
                abort();
        }
    } else if (which == 1) {
        uint8_t kind, node[MESH_ID_BYTES];
        if (nat_relay_head_decode(p, len, &kind, node, err, sizeof err) == 0 &&
            kind != NAT_RELAY_CONNECT && kind != NAT_RELAY_FROM)
            abort();
    } else {
        const uint8_t *pkt;
        size_t plen;
        if (nat_relay_packet_decode(p, len, &pkt, &plen, err, sizeof err) == 0 &&
            (plen < 1 || plen > NAT_PACKET_MAX || pkt != p + 1 || plen != len - 1))
            abort();
    }
    free(p);
    return 0;
}
