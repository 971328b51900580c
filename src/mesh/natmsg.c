/* natmsg.c: encoding and decoding of the reachability messages (natmsg.h).
 * Every length is checked before a byte is read; nothing allocates. */
#include "mesh/natmsg.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "lib/err.h"

size_t nat_msg_encode(const nat_msg *m, uint8_t *out)
{
    size_t n = 0;
    out[n++] = m->kind;
    if (m->kind == NAT_MSG_INTRO || m->kind == NAT_MSG_PUNCH) {
        memcpy(out + n, m->node, MESH_ID_BYTES);
        n += MESH_ID_BYTES;
    }
    if (m->kind == NAT_MSG_OBSERVED || m->kind == NAT_MSG_PUNCH) n += addr_encode(&m->addr, out + n);
    assert(n <= NAT_MSG_MAX);
    return n;
}

int nat_msg_decode(const uint8_t *p, size_t len, nat_msg *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (len < 1) {
        err_set(err, errlen, "empty message");
        return -1;
    }
    out->kind = p[0];
    if (out->kind != NAT_MSG_OBSERVED && out->kind != NAT_MSG_INTRO && out->kind != NAT_MSG_PUNCH)
        return 1;
    size_t off = 1;
    if (out->kind != NAT_MSG_OBSERVED) {
        if (len - off < MESH_ID_BYTES) {
            err_set(err, errlen, "truncated node id");
            return -1;
        }
        memcpy(out->node, p + off, MESH_ID_BYTES);
        off += MESH_ID_BYTES;
    }
    if (out->kind != NAT_MSG_INTRO) {
        int used = addr_decode(p + off, len - off, &out->addr);
        if (used < 0) {
            err_set(err, errlen, "malformed address");
            return -1;
        }
    }
    return 0;
}

size_t nat_relay_head_encode(uint8_t kind, const uint8_t node[MESH_ID_BYTES], uint8_t *out)
{
    assert(kind == NAT_RELAY_CONNECT || kind == NAT_RELAY_FROM);
    out[0] = kind;
    memcpy(out + 1, node, MESH_ID_BYTES);
    return 1 + MESH_ID_BYTES;
}

int nat_relay_head_decode(const uint8_t *p, size_t len, uint8_t *kind, uint8_t node[MESH_ID_BYTES],
                          char *err, size_t errlen)
{
    if (len < 1 || (p[0] != NAT_RELAY_CONNECT && p[0] != NAT_RELAY_FROM)) {
        err_set(err, errlen, "relay stream must start with CONNECT or FROM");
        return -1;
    }
    if (len < 1 + MESH_ID_BYTES) {
        err_set(err, errlen, "truncated node id");
        return -1;
    }
    *kind = p[0];
    memcpy(node, p + 1, MESH_ID_BYTES);
    return 0;
}

int nat_relay_packet_decode(const uint8_t *p, size_t len, const uint8_t **pkt, size_t *pktlen,
                            char *err, size_t errlen)
{
    if (len < 1) {
        err_set(err, errlen, "empty relay frame");
        return -1;
    }
    if (p[0] == NAT_RELAY_CONNECT || p[0] == NAT_RELAY_FROM) {
        err_set(err, errlen, "second stream head");
        return -1;
    }
    if (p[0] != NAT_RELAY_PACKET) return 1;
    if (len < 2 || len - 1 > NAT_PACKET_MAX) {
        err_set(err, errlen, "relayed packet of %zu bytes (1..%d)", len - 1, NAT_PACKET_MAX);
        return -1;
    }
    *pkt = p + 1;
    *pktlen = len - 1;
    return 0;
}
