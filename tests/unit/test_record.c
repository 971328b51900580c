/* test_record.c: signed node records (encode, decode, verify, bounds). */
#include <string.h>

#include "mesh/record.h"
#include "testlib.h"

static identity key(void)
{
    static identity id;
    static int made;
    char err[256];
    if (!made) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/record-key", testlib_tmpdir());
        REQUIRE(identity_load_or_create(dir, &id, NULL, err, sizeof err) == 0);
        made = 1;
    }
    return id;
}

static node_record sample(const identity *id)
{
    node_record r;
    memset(&r, 0, sizeof r);
    memcpy(r.id, id->public_key, MESH_ID_BYTES);
    r.seq = 0x0102030405060708ull;
    r.role = RECORD_ROLE_HOST;
    r.memory_bytes = 17ull << 30;
    char err[64];
    addr_parse("10.1.2.3:9337", &r.addrs[0], err, sizeof err);
    addr_parse("[fd00::1]:9337", &r.addrs[1], err, sizeof err);
    r.n_addrs = 2;
    strcpy(r.models[0], "kjv-llama-6.3M-q8_0");
    strcpy(r.models[1], "qwen2.5-7b-instruct");
    r.n_models = 2;
    return r;
}

static void test_round_trip(void)
{
    identity id = key();
    node_record r = sample(&id), back;
    uint8_t buf[RECORD_MAX_BYTES];
    char err[256];
    int n = record_encode(&r, &id, buf, sizeof buf, err, sizeof err);
    REQUIRE(n > 0);
    CHECK_EQ_INT(buf[0], RECORD_KIND_NODE);
    REQUIRE(record_decode(buf, (size_t)n, &back, err, sizeof err) == 0);
    CHECK(memcmp(back.id, r.id, MESH_ID_BYTES) == 0);
    CHECK(back.seq == r.seq);
    CHECK_EQ_INT(back.role, RECORD_ROLE_HOST);
    CHECK(back.memory_bytes == r.memory_bytes);
    CHECK_EQ_INT(back.n_addrs, 2);
    CHECK(addr_compare(&back.addrs[1], &r.addrs[1]) == 0);
    CHECK_EQ_INT(back.n_models, 2);
    CHECK_EQ_STR(back.models[1], "qwen2.5-7b-instruct");
    CHECK(record_verify(buf, (size_t)n, r.id));
    CHECK_EQ_STR(record_role_name(back.role), "host");
    CHECK_EQ_INT(record_role_code("client"), RECORD_ROLE_CLIENT);
    CHECK_EQ_INT(record_role_code("boss"), 0);
    CHECK(back.memory_used == 0);
    CHECK_EQ_INT(back.app_len, 0);

    /* Extension fields: memory in use and the application's bytes. */
    r.memory_used = 5ull << 30;
    r.clients = 70000;
    r.app_len = 3;
    memcpy(r.app, "abc", 3);
    n = record_encode(&r, &id, buf, sizeof buf, err, sizeof err);
    REQUIRE(n > 0);
    REQUIRE(record_decode(buf, (size_t)n, &back, err, sizeof err) == 0);
    CHECK(back.memory_used == 5ull << 30);
    CHECK(back.clients == 70000);
    /* The clients field is the only one with length 4 here: find it (tag 3,
     * length 0x0004) and make it 3 bytes long: malformed. */
    int found = 0;
    for (int i = 0; i + 6 < n; i++) {
        if (buf[i] == RECORD_FIELD_CLIENTS && buf[i + 1] == 0 && buf[i + 2] == 4 &&
            buf[i + 3] == 0 && buf[i + 4] == 1 && buf[i + 5] == 0x11 && buf[i + 6] == 0x70) {
            buf[i + 2] = 3;
            CHECK(record_decode(buf, (size_t)n, &back, err, sizeof err) != 0);
            CHECK(strstr(err, "clients") != NULL);
            buf[i + 2] = 4;
            found = 1;
        }
    }
    CHECK(found);
    CHECK(record_decode(buf, (size_t)n, &back, err, sizeof err) == 0);
    CHECK_EQ_INT(back.app_len, 3);
    CHECK(memcmp(back.app, "abc", 3) == 0);
    CHECK(record_verify(buf, (size_t)n, r.id));
    CHECK_EQ_INT(back.holdings_len, 0);

    /* The holdings field: carried as is; longer than its bound: malformed. */
    r.holdings_len = 5;
    memcpy(r.holdings, "\x01\x00xyz", 5);
    n = record_encode(&r, &id, buf, sizeof buf, err, sizeof err);
    REQUIRE(n > 0);
    REQUIRE(record_decode(buf, (size_t)n, &back, err, sizeof err) == 0);
    CHECK_EQ_INT(back.holdings_len, 5);
    CHECK(memcmp(back.holdings, "\x01\x00xyz", 5) == 0);
    CHECK_EQ_INT(back.app_len, 3);
    found = 0;
    for (int i = 0; i + 3 < n; i++)
        if (buf[i] == RECORD_FIELD_HOLDINGS && buf[i + 1] == 0 && buf[i + 2] == 5 && buf[i + 3] == 1) {
            buf[i + 1] = (uint8_t)((RECORD_MAX_HOLDINGS + 1) >> 8); /* 0x0405 bytes: overruns, too */
            CHECK(record_decode(buf, (size_t)n, &back, err, sizeof err) != 0);
            buf[i + 1] = 0;
            found = 1;
        }
    CHECK(found);

    /* The largest record fits the bound. */
    r.app_len = RECORD_MAX_APP;
    memset(r.app, 0xa5, RECORD_MAX_APP);
    for (int i = 0; i < MESH_MAX_ADDRS; i++) r.addrs[i] = r.addrs[1];
    r.n_addrs = MESH_MAX_ADDRS;
    for (int i = 0; i < MESH_MAX_MODELS; i++) {
        memset(r.models[i], 'm', MESH_MAX_NAME - 1);
        r.models[i][MESH_MAX_NAME - 1] = 0;
    }
    r.n_models = MESH_MAX_MODELS;
    r.holdings_len = RECORD_MAX_HOLDINGS;
    memset(r.holdings, 0x5a, RECORD_MAX_HOLDINGS);
    n = record_encode(&r, &id, buf, sizeof buf, err, sizeof err);
    REQUIRE(n > 0);
    CHECK(record_decode(buf, (size_t)n, &back, err, sizeof err) == 0);
    CHECK(record_verify(buf, (size_t)n, r.id));
    CHECK_EQ_INT(back.n_models, MESH_MAX_MODELS);
    CHECK_EQ_INT(back.app_len, RECORD_MAX_APP);
    CHECK_EQ_INT(back.holdings_len, RECORD_MAX_HOLDINGS);
}

static void test_tampering_and_truncation(void)
{
    identity id = key();
    node_record r = sample(&id), back;
    uint8_t buf[RECORD_MAX_BYTES];
    char err[256];
    int n = record_encode(&r, &id, buf, sizeof buf, err, sizeof err);
    REQUIRE(n > 0);
    /* Any flipped byte: either undecodable or a bad signature. */
    for (int i = 0; i < n; i++) {
        buf[i] ^= 0x40;
        int ok = record_decode(buf, (size_t)n, &back, err, sizeof err) == 0 &&
                 record_verify(buf, (size_t)n, back.id);
        CHECK(!ok);
        buf[i] ^= 0x40;
    }
    /* Any truncation fails. */
    for (int cut = 0; cut < n; cut++) {
        int ok = record_decode(buf, (size_t)cut, &back, err, sizeof err) == 0 &&
                 record_verify(buf, (size_t)cut, back.id);
        CHECK(!ok);
    }
    /* Another node's key does not verify it. */
    uint8_t other[MESH_ID_BYTES];
    memcpy(other, r.id, sizeof other);
    other[0] ^= 1;
    CHECK(!record_verify(buf, (size_t)n, other));
}

static void test_bounds(void)
{
    identity id = key();
    node_record r = sample(&id), back;
    uint8_t buf[RECORD_MAX_BYTES + 16];
    char err[256];
    int n = record_encode(&r, &id, buf, sizeof buf, err, sizeof err);
    REQUIRE(n > 0);
    size_t addr_count_at = 1 + MESH_ID_BYTES + 8 + 1 + 8;
    uint8_t saved = buf[addr_count_at];
    buf[addr_count_at] = MESH_MAX_ADDRS + 1;
    CHECK(record_decode(buf, (size_t)n, &back, err, sizeof err) != 0);
    buf[addr_count_at] = saved;
    size_t role_at = 1 + MESH_ID_BYTES + 8;
    buf[role_at] = 0;
    CHECK(record_decode(buf, (size_t)n, &back, err, sizeof err) != 0);
    buf[role_at] = 77;   /* a newer role: decodes, shown as unknown */
    CHECK(record_decode(buf, (size_t)n, &back, err, sizeof err) == 0);
    CHECK_EQ_STR(record_role_name(back.role), "unknown");
    buf[role_at] = RECORD_ROLE_HOST;
    buf[0] = 2;
    CHECK(record_decode(buf, (size_t)n, &back, err, sizeof err) != 0);
    buf[0] = RECORD_KIND_NODE;
    /* Extension bytes before the signature decode (they are not fields). */
    uint8_t ext[RECORD_MAX_BYTES + 16];
    size_t body = (size_t)n - IDENTITY_SIG_BYTES;
    memcpy(ext, buf, body);
    memcpy(ext + body, "\x09\x00\x01\x09", 4);   /* an unknown field: skipped */
    memcpy(ext + body + 4, buf + body, IDENTITY_SIG_BYTES);
    CHECK(record_decode(ext, (size_t)n + 4, &back, err, sizeof err) == 0);
    CHECK_EQ_INT(back.n_models, 2);
    CHECK(!record_verify(ext, (size_t)n + 4, back.id));   /* not signed that way */
    memcpy(ext + body, "\x09\x09\x09", 3);       /* a field overrunning the record */
    memcpy(ext + body + 3, buf + body, IDENTITY_SIG_BYTES);
    CHECK(record_decode(ext, (size_t)n + 3, &back, err, sizeof err) != 0);
    memcpy(ext + body, "\x01\x00\x02\x00\x00", 5); /* memory field of the wrong size */
    memcpy(ext + body + 5, buf + body, IDENTITY_SIG_BYTES);
    CHECK(record_decode(ext, (size_t)n + 5, &back, err, sizeof err) != 0);
    /* Over the size bound. */
    CHECK(record_decode(ext, RECORD_MAX_BYTES + 1, &back, err, sizeof err) != 0);
    /* Model names with control characters. */
    CHECK(!record_model_name_ok("a\nb", 3));
    CHECK(!record_model_name_ok("", 0));
    CHECK(record_model_name_ok("llama-3.1-8b", 12));
}

int main(void)
{
    RUN(test_round_trip);
    RUN(test_tampering_and_truncation);
    RUN(test_bounds);
    return testlib_finish();
}
