/* test_token.c: invite tokens, the base64url under them, and the address
 * helpers they share with gossip. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/base64.h"
#include "mesh/addr.h"
#include "mesh/token.h"
#include "testlib.h"

static void test_base64_vectors(void)
{
    /* RFC 4648 section 10, without padding. */
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const coded[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        char out[32];
        uint8_t back[32];
        size_t n = strlen(plain[i]);
        CHECK_EQ_INT(base64_url_encode((const uint8_t *)plain[i], n, out, sizeof out), strlen(coded[i]));
        CHECK_EQ_STR(out, coded[i]);
        CHECK_EQ_INT(BASE64_URL_ENCODED_LEN(n), strlen(coded[i]));
        CHECK_EQ_INT(base64_url_decode(coded[i], strlen(coded[i]), back, sizeof back), n);
        CHECK(memcmp(back, plain[i], n) == 0);
    }
    /* The url-safe characters. */
    const uint8_t bytes[] = {0xfb, 0xff, 0xbf};
    char out[8];
    base64_url_encode(bytes, 3, out, sizeof out);
    CHECK_EQ_STR(out, "-_-_");
    /* Rejections. */
    uint8_t back[16];
    CHECK(base64_url_decode("Zm9v=", 5, back, sizeof back) < 0);      /* padding */
    CHECK(base64_url_decode("Zg==", 4, back, sizeof back) < 0);
    CHECK(base64_url_decode("Zm+v", 4, back, sizeof back) < 0);       /* standard alphabet */
    CHECK(base64_url_decode("Zm/v", 4, back, sizeof back) < 0);
    CHECK(base64_url_decode("Zm 9v", 5, back, sizeof back) < 0);
    CHECK(base64_url_decode("Z", 1, back, sizeof back) < 0);          /* 1 mod 4 */
    CHECK(base64_url_decode("Zh", 2, back, sizeof back) < 0);         /* non-zero spare bits */
    CHECK(base64_url_decode("Zm9vYmFy", 8, back, 5) < 0);             /* does not fit */
    CHECK(base64_url_encode((const uint8_t *)"foo", 3, out, 4) < 0);  /* no room for the NUL */
}

static void test_addr_parse_format(void)
{
    mesh_addr a;
    char err[128], text[ADDR_TEXT_MAX];
    REQUIRE(addr_parse("127.0.0.1:9337", &a, err, sizeof err) == 0);
    CHECK_EQ_INT(a.family, ADDR_FAMILY_IPV4);
    CHECK_EQ_INT(a.port, 9337);
    CHECK(addr_is_loopback(&a) && !addr_is_wildcard(&a));
    addr_format(&a, text);
    CHECK_EQ_STR(text, "127.0.0.1:9337");
    REQUIRE(addr_parse("[::1]:0", &a, err, sizeof err) == 0);
    CHECK_EQ_INT(a.family, ADDR_FAMILY_IPV6);
    CHECK_EQ_INT(a.port, 0);
    CHECK(addr_is_loopback(&a));
    addr_format(&a, text);
    CHECK_EQ_STR(text, "[::1]:0");
    REQUIRE(addr_parse("0.0.0.0:9337", &a, err, sizeof err) == 0);
    CHECK(addr_is_wildcard(&a));
    REQUIRE(addr_parse("[::]:1", &a, err, sizeof err) == 0);
    CHECK(addr_is_wildcard(&a));
    REQUIRE(addr_parse("[2001:db8::5]:65535", &a, err, sizeof err) == 0);
    addr_format(&a, text);
    CHECK_EQ_STR(text, "[2001:db8::5]:65535");

    static const char *const bad[] = {"", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1",
                                      "::1:80", "[::1]80", "[::1]:", "localhost:80", "1.2.3:80",
                                      "[1.2.3.4]:80", "127.0.0.1:80x", "[::1:80"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (addr_parse(bad[i], &a, err, sizeof err) == 0) fprintf(stderr, "  accepted '%s'\n", bad[i]);
        CHECK(addr_parse(bad[i], &a, err, sizeof err) != 0);
    }
}

static void test_addr_sockaddr_and_order(void)
{
    mesh_addr a, b, back;
    char err[128];
    REQUIRE(addr_parse("[fd00::7]:4000", &a, err, sizeof err) == 0);
    struct sockaddr_storage ss;
    socklen_t len;
    addr_to_sockaddr(&a, &ss, &len);
    REQUIRE(addr_from_sockaddr((struct sockaddr *)&ss, len, &back) == 0);
    CHECK(addr_compare(&a, &back) == 0);
    REQUIRE(addr_parse("10.0.0.1:1", &b, err, sizeof err) == 0);
    CHECK(addr_compare(&b, &a) < 0);                 /* IPv4 before IPv6 */
    REQUIRE(addr_parse("127.0.0.1:1", &back, err, sizeof err) == 0);
    CHECK(addr_compare(&a, &back) < 0);              /* loopback last */
    /* Wire form round trip and rejection of port 0 / unknown family. */
    uint8_t wire[ADDR_WIRE_MAX];
    CHECK_EQ_INT(addr_encode(&a, wire), 19);
    CHECK_EQ_INT(addr_decode(wire, 19, &back), 19);
    CHECK(addr_compare(&a, &back) == 0);
    CHECK(addr_decode(wire, 18, &back) < 0);
    wire[0] = 5;
    CHECK(addr_decode(wire, 19, &back) < 0);
    CHECK_EQ_INT(addr_encode(&b, wire), 7);
    wire[5] = wire[6] = 0;
    CHECK(addr_decode(wire, 7, &back) < 0);
}

static void test_addr_local_list(void)
{
    mesh_addr listen, out[MESH_MAX_ADDRS];
    char err[128];
    REQUIRE(addr_parse("127.0.0.1:5555", &listen, err, sizeof err) == 0);
    CHECK_EQ_INT(addr_local_list(&listen, out, MESH_MAX_ADDRS, err, sizeof err), 1);
    CHECK(addr_compare(&out[0], &listen) == 0);

    REQUIRE(addr_parse("0.0.0.0:5555", &listen, err, sizeof err) == 0);
    int n = addr_local_list(&listen, out, MESH_MAX_ADDRS, err, sizeof err);
    REQUIRE(n >= 1);
    int has_loopback = 0;
    for (int i = 0; i < n; i++) {
        CHECK_EQ_INT(out[i].family, ADDR_FAMILY_IPV4);
        CHECK_EQ_INT(out[i].port, 5555);
        if (i) CHECK(addr_compare(&out[i - 1], &out[i]) < 0);
        if (addr_is_loopback(&out[i])) has_loopback = 1;
    }
    if (n < MESH_MAX_ADDRS) CHECK(has_loopback);
    /* Same answer twice: tokens are stable. */
    mesh_addr again[MESH_MAX_ADDRS];
    CHECK_EQ_INT(addr_local_list(&listen, again, MESH_MAX_ADDRS, err, sizeof err), n);
    CHECK(memcmp(out, again, (size_t)n * sizeof *out) == 0);

    REQUIRE(addr_parse("[::]:5555", &listen, err, sizeof err) == 0);
    n = addr_local_list(&listen, out, MESH_MAX_ADDRS, err, sizeof err);
    REQUIRE(n >= 1);
    for (int i = 0; i < n; i++)
        CHECK(!(out[i].family == ADDR_FAMILY_IPV6 && out[i].ip[0] == 0xfe && (out[i].ip[1] & 0xc0) == 0x80));
}

static token sample_token(void)
{
    token t;
    memset(&t, 0, sizeof t);
    for (int i = 0; i < MESH_ID_BYTES; i++) t.id[i] = (uint8_t)(200 - i);
    for (int i = 0; i < TOKEN_SECRET_BYTES; i++) t.secret[i] = (uint8_t)(7 * i + 3);
    char err[64];
    addr_parse("192.168.1.20:9337", &t.addrs[0], err, sizeof err);
    addr_parse("[2001:db8::1]:9337", &t.addrs[1], err, sizeof err);
    addr_parse("127.0.0.1:9337", &t.addrs[2], err, sizeof err);
    t.n_addrs = 3;
    return t;
}

static void test_token_round_trip(void)
{
    token t = sample_token(), back;
    char text[TOKEN_MAX_TEXT], again[TOKEN_MAX_TEXT], err[256];
    int n = token_encode(&t, text, sizeof text);
    REQUIRE(n > 0);
    CHECK_EQ_INT(n, strlen(text));
    CHECK(text[0] == 'A');                       /* version byte 2: 000000|10 */
    REQUIRE(token_decode(text, &back, err, sizeof err) == 0);
    CHECK(memcmp(back.id, t.id, MESH_ID_BYTES) == 0);
    CHECK(memcmp(back.secret, t.secret, TOKEN_SECRET_BYTES) == 0);
    REQUIRE(back.n_addrs == 3);
    for (int i = 0; i < 3; i++) CHECK(addr_compare(&back.addrs[i], &t.addrs[i]) == 0);
    /* Stable: same input, same text; decode + encode gives the text back. */
    token_encode(&t, again, sizeof again);
    CHECK_EQ_STR(text, again);
    token_encode(&back, again, sizeof again);
    CHECK_EQ_STR(text, again);
    /* Surrounding whitespace (a pasted line) is fine. */
    char padded[TOKEN_MAX_TEXT + 8];
    snprintf(padded, sizeof padded, "  %s\n", text);
    CHECK(token_decode(padded, &back, err, sizeof err) == 0);

    /* The largest token fits the text bound. */
    for (int i = 0; i < MESH_MAX_ADDRS; i++) t.addrs[i] = t.addrs[1];
    t.n_addrs = MESH_MAX_ADDRS;
    n = token_encode(&t, text, sizeof text);
    CHECK(n > 0 && n < TOKEN_MAX_TEXT);
    CHECK(token_decode(text, &back, err, sizeof err) == 0);
    t.n_addrs = 0;
    CHECK(token_encode(&t, text, sizeof text) < 0);
    t.n_addrs = MESH_MAX_ADDRS + 1;
    CHECK(token_encode(&t, text, sizeof text) < 0);
}

/* Encodes raw bytes as a token text, for malformed-binary cases. */
static const char *as_text(const uint8_t *bin, size_t n)
{
    static char text[1024];
    REQUIRE(base64_url_encode(bin, n, text, sizeof text) >= 0);
    return text;
}

static void test_token_rejects(void)
{
    token t = sample_token(), back;
    char text[TOKEN_MAX_TEXT], err[256];
    REQUIRE(token_encode(&t, text, sizeof text) > 0);
    size_t len = strlen(text);
    /* Every truncation of the text fails cleanly. */
    for (size_t cut = 0; cut < len; cut++) {
        char part[TOKEN_MAX_TEXT];
        memcpy(part, text, cut);
        part[cut] = 0;
        err[0] = 0;
        CHECK(token_decode(part, &back, err, sizeof err) != 0);
        CHECK(err[0] != 0);
    }
    /* Every truncation of the binary too (valid base64 of fewer bytes). */
    uint8_t bin[TOKEN_MAX_BYTES];
    int n = base64_url_decode(text, len, bin, sizeof bin);
    REQUIRE(n > 0);
    for (int cut = 0; cut < n; cut++) {
        err[0] = 0;
        CHECK(token_decode(as_text(bin, (size_t)cut), &back, err, sizeof err) != 0);
        CHECK(err[0] != 0);
    }
    uint8_t bad[TOKEN_MAX_BYTES + 8];
    memcpy(bad, bin, (size_t)n);
    bad[0] = 3;
    CHECK(token_decode(as_text(bad, (size_t)n), &back, err, sizeof err) != 0);
    CHECK(strstr(err, "version") != NULL);
    /* A version 1 token (no secret) says to use a new one. */
    bad[0] = 1;
    CHECK(token_decode(as_text(bad, (size_t)n), &back, err, sizeof err) != 0);
    CHECK(strstr(err, "version 1") != NULL && strstr(err, "new token") != NULL);
    bad[0] = 0;
    CHECK(token_decode(as_text(bad, (size_t)n), &back, err, sizeof err) != 0);
    memcpy(bad, bin, (size_t)n);
    bad[65] = 0;                                   /* no addresses */
    CHECK(token_decode(as_text(bad, (size_t)n), &back, err, sizeof err) != 0);
    bad[65] = MESH_MAX_ADDRS + 1;
    CHECK(token_decode(as_text(bad, (size_t)n), &back, err, sizeof err) != 0);
    bad[65] = 255;
    CHECK(token_decode(as_text(bad, (size_t)n), &back, err, sizeof err) != 0);
    bad[65] = 2;                                   /* fewer than present: trailing bytes */
    CHECK(token_decode(as_text(bad, (size_t)n), &back, err, sizeof err) != 0);
    bad[65] = 4;                                   /* more than present */
    CHECK(token_decode(as_text(bad, (size_t)n), &back, err, sizeof err) != 0);
    memcpy(bad, bin, (size_t)n);
    bad[66] = 9;                                   /* unknown family */
    CHECK(token_decode(as_text(bad, (size_t)n), &back, err, sizeof err) != 0);
    memcpy(bad, bin, (size_t)n);
    bad[n] = 0;                                    /* one byte too many */
    CHECK(token_decode(as_text(bad, (size_t)n + 1), &back, err, sizeof err) != 0);

    static const char *const garbage[] = {"", "   ", "hello world", "AQ==", "!!!!", "A",
                                          "llmesh://token", "AQIDBA", "AQID+BA"};
    for (size_t i = 0; i < sizeof garbage / sizeof *garbage; i++) {
        err[0] = 0;
        CHECK(token_decode(garbage[i], &back, err, sizeof err) != 0);
        CHECK(err[0] != 0);
    }
    char huge[2048];
    memset(huge, 'A', sizeof huge - 1);
    huge[sizeof huge - 1] = 0;
    CHECK(token_decode(huge, &back, err, sizeof err) != 0);
    CHECK(strstr(err, "too long") != NULL);
}

int main(void)
{
    RUN(test_base64_vectors);
    RUN(test_addr_parse_format);
    RUN(test_addr_sockaddr_and_order);
    RUN(test_addr_local_list);
    RUN(test_token_round_trip);
    RUN(test_token_rejects);
    return testlib_finish();
}
