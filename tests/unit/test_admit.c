/* test_admit.c: the admission proof against vectors made independently
 * (Python's hmac module, from the text of docs/PROTOCOL.md section 15), and
 * the checks: roles, every changed input, wrong sizes and kinds. */
#include <string.h>

#include "mesh/admit.h"
#include "testlib.h"

static const char *const want_hex[2] = {
    "7c4dd89f436647658958d3412ea41873469cb95071df76e9c510f4941ef56035",  /* dialler */
    "f32050b727fd32333bbc77ffe579fdea98838bfb13aeaff7d0a0b1f10898653c",  /* acceptor */
};

static void fixed(uint8_t secret[ADMIT_SECRET_BYTES], admit_binding *b)
{
    for (int i = 0; i < ADMIT_SECRET_BYTES; i++) secret[i] = (uint8_t)i;
    for (int i = 0; i < ADMIT_EXPORTER_BYTES; i++) b->exporter[i] = (uint8_t)(0x40 + i);
    for (int i = 0; i < MESH_ID_BYTES; i++) {
        b->dialler[i] = (uint8_t)(0x80 + i);
        b->acceptor[i] = (uint8_t)(0xc0 + i);
    }
}

static void hex(const uint8_t *p, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) snprintf(out + 2 * i, 3, "%02x", p[i]);
}

static void test_vectors(void)
{
    uint8_t secret[ADMIT_SECRET_BYTES], mac[ADMIT_MAC_BYTES];
    admit_binding b;
    fixed(secret, &b);
    for (int role = 0; role < 2; role++) {
        REQUIRE(admit_proof(secret, (admit_role)role, &b, mac) == 0);
        char text[2 * ADMIT_MAC_BYTES + 1];
        hex(mac, sizeof mac, text);
        CHECK_EQ_STR(text, want_hex[role]);
    }
}

static void test_checks(void)
{
    uint8_t secret[ADMIT_SECRET_BYTES], mac[ADMIT_MAC_BYTES], frame[ADMIT_FRAME_BYTES + 1];
    admit_binding b;
    fixed(secret, &b);
    const char *why;
    REQUIRE(admit_proof(secret, ADMIT_DIALLER, &b, mac) == 0);
    admit_encode(mac, frame);
    CHECK_EQ_INT(frame[0], ADMIT_KIND_PROOF);
    CHECK_EQ_INT(admit_check(secret, ADMIT_DIALLER, &b, frame, ADMIT_FRAME_BYTES, &why), 1);
    /* Not the acceptor's: no reflection. */
    CHECK_EQ_INT(admit_check(secret, ADMIT_ACCEPTOR, &b, frame, ADMIT_FRAME_BYTES, &why), 0);
    CHECK(why && strstr(why, "secret"));
    /* Every bit of the MAC, the secret, the exporter and both ids matters. */
    for (int bit = 0; bit < 8 * ADMIT_MAC_BYTES; bit += 13) {
        frame[1 + bit / 8] ^= (uint8_t)(1 << (bit % 8));
        CHECK_EQ_INT(admit_check(secret, ADMIT_DIALLER, &b, frame, ADMIT_FRAME_BYTES, &why), 0);
        frame[1 + bit / 8] ^= (uint8_t)(1 << (bit % 8));
    }
    uint8_t *inputs[4] = {secret, b.exporter, b.dialler, b.acceptor};
    for (int k = 0; k < 4; k++) {
        inputs[k][9] ^= 4;
        CHECK_EQ_INT(admit_check(secret, ADMIT_DIALLER, &b, frame, ADMIT_FRAME_BYTES, &why), 0);
        inputs[k][9] ^= 4;
    }
    /* The ids swapped (the acceptor posing as the dialler). */
    admit_binding swapped = b;
    memcpy(swapped.dialler, b.acceptor, MESH_ID_BYTES);
    memcpy(swapped.acceptor, b.dialler, MESH_ID_BYTES);
    CHECK_EQ_INT(admit_check(secret, ADMIT_DIALLER, &swapped, frame, ADMIT_FRAME_BYTES, &why), 0);
    /* Malformed: sizes and kinds. */
    CHECK_EQ_INT(admit_check(secret, ADMIT_DIALLER, &b, frame, 0, &why), -1);
    CHECK_EQ_INT(admit_check(secret, ADMIT_DIALLER, &b, frame, ADMIT_FRAME_BYTES - 1, &why), -1);
    frame[ADMIT_FRAME_BYTES] = 0;
    CHECK_EQ_INT(admit_check(secret, ADMIT_DIALLER, &b, frame, ADMIT_FRAME_BYTES + 1, &why), -1);
    frame[0] = 2;
    CHECK_EQ_INT(admit_check(secret, ADMIT_DIALLER, &b, frame, ADMIT_FRAME_BYTES, &why), -1);
    CHECK(why && strstr(why, "kind"));
}

int main(void)
{
    RUN(test_vectors);
    RUN(test_checks);
    return testlib_finish();
}
