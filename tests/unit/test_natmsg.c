/* test_natmsg.c: the reachability messages (mesh/natmsg.h): round trips,
 * every malformed form refused, unknown kinds skipped, bounds. */
#include <stdlib.h>
#include <string.h>

#include "mesh/natmsg.h"
#include "testlib.h"

static void test_rendezvous_round_trip(void)
{
    char err[128];
    nat_msg m = {.kind = NAT_MSG_PUNCH}, out;
    for (int i = 0; i < MESH_ID_BYTES; i++) m.node[i] = (uint8_t)i;
    REQUIRE(addr_parse("10.77.0.201:9337", &m.addr, err, sizeof err) == 0);
    uint8_t buf[NAT_MSG_MAX];
    size_t n = nat_msg_encode(&m, buf);
    CHECK_EQ_INT(n, 1 + 32 + 7);
    CHECK_EQ_INT(nat_msg_decode(buf, n, &out, err, sizeof err), 0);
    CHECK(out.kind == NAT_MSG_PUNCH && memcmp(out.node, m.node, 32) == 0);
    CHECK(addr_compare(&out.addr, &m.addr) == 0);
    /* every truncation is malformed */
    for (size_t cut = 0; cut < n; cut++) CHECK_EQ_INT(nat_msg_decode(buf, cut, &out, err, sizeof err), -1);
    /* trailing bytes: a later version's, ignored */
    buf[n] = 0xee;
    CHECK_EQ_INT(nat_msg_decode(buf, n + 1, &out, err, sizeof err), 0);

    nat_msg o = {.kind = NAT_MSG_OBSERVED};
    REQUIRE(addr_parse("[2001:db8::7]:1234", &o.addr, err, sizeof err) == 0);
    n = nat_msg_encode(&o, buf);
    CHECK_EQ_INT(n, 1 + 19);
    CHECK_EQ_INT(nat_msg_decode(buf, n, &out, err, sizeof err), 0);
    CHECK(out.kind == NAT_MSG_OBSERVED && addr_compare(&out.addr, &o.addr) == 0);

    nat_msg in = {.kind = NAT_MSG_INTRO};
    memset(in.node, 0xab, 32);
    n = nat_msg_encode(&in, buf);
    CHECK_EQ_INT(n, 33);
    CHECK_EQ_INT(nat_msg_decode(buf, n, &out, err, sizeof err), 0);
    CHECK(out.kind == NAT_MSG_INTRO && out.node[31] == 0xab);
}

static void test_rendezvous_malformed(void)
{
    char err[128];
    nat_msg out;
    CHECK_EQ_INT(nat_msg_decode((const uint8_t *)"", 0, &out, err, sizeof err), -1);
    CHECK_EQ_INT(nat_msg_decode((const uint8_t *)"\x09zz", 3, &out, err, sizeof err), 1); /* unknown kind */
    uint8_t bad_family[] = {NAT_MSG_OBSERVED, 5, 1, 2, 3, 4, 0, 1};
    CHECK_EQ_INT(nat_msg_decode(bad_family, sizeof bad_family, &out, err, sizeof err), -1);
    uint8_t port0[] = {NAT_MSG_OBSERVED, 4, 1, 2, 3, 4, 0, 0};
    CHECK_EQ_INT(nat_msg_decode(port0, sizeof port0, &out, err, sizeof err), -1);
}

static void test_relay_frames(void)
{
    char err[128];
    uint8_t id[MESH_ID_BYTES], node[MESH_ID_BYTES], kind = 0, buf[NAT_RELAY_FRAME_MAX + 2];
    memset(id, 0x5a, sizeof id);
    size_t n = nat_relay_head_encode(NAT_RELAY_CONNECT, id, buf);
    CHECK_EQ_INT(n, 33);
    CHECK_EQ_INT(nat_relay_head_decode(buf, n, &kind, node, err, sizeof err), 0);
    CHECK(kind == NAT_RELAY_CONNECT && memcmp(node, id, 32) == 0);
    CHECK_EQ_INT(nat_relay_head_decode(buf, n - 1, &kind, node, err, sizeof err), -1);
    buf[0] = NAT_RELAY_PACKET;
    CHECK_EQ_INT(nat_relay_head_decode(buf, n, &kind, node, err, sizeof err), -1); /* a packet first */

    const uint8_t *pkt;
    size_t plen;
    memset(buf, 0x11, sizeof buf);
    buf[0] = NAT_RELAY_PACKET;
    CHECK_EQ_INT(nat_relay_packet_decode(buf, 1 + NAT_PACKET_MAX, &pkt, &plen, err, sizeof err), 0);
    CHECK(pkt == buf + 1 && plen == NAT_PACKET_MAX);
    CHECK_EQ_INT(nat_relay_packet_decode(buf, 2 + NAT_PACKET_MAX, &pkt, &plen, err, sizeof err), -1);
    CHECK_EQ_INT(nat_relay_packet_decode(buf, 1, &pkt, &plen, err, sizeof err), -1);   /* empty packet */
    CHECK_EQ_INT(nat_relay_packet_decode(buf, 0, &pkt, &plen, err, sizeof err), -1);
    buf[0] = NAT_RELAY_FROM;
    CHECK_EQ_INT(nat_relay_packet_decode(buf, 33, &pkt, &plen, err, sizeof err), -1);  /* second head */
    buf[0] = 0x7f;
    CHECK_EQ_INT(nat_relay_packet_decode(buf, 5, &pkt, &plen, err, sizeof err), 1);   /* unknown: skip */
}

int main(void)
{
    RUN(test_rendezvous_round_trip);
    RUN(test_rendezvous_malformed);
    RUN(test_relay_frames);
    return testlib_finish();
}
