/* test_routes.c: the routing-table pull messages (mesh/routes.h). */
#include <string.h>

#include "mesh/routes.h"
#include "testlib.h"

static identity keys[3];

static void make_keys(void)
{
    char err[256];
    for (int i = 0; i < 3; i++) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/routes-key-%d", testlib_tmpdir(), i);
        REQUIRE(identity_load_or_create(dir, &keys[i], NULL, err, sizeof err) == 0);
    }
}

/* A signed record of key k with the given seq; its length. */
static int record_of(int k, uint64_t seq, const char *model, uint8_t out[RECORD_MAX_BYTES])
{
    node_record r;
    memset(&r, 0, sizeof r);
    memcpy(r.id, keys[k].public_key, MESH_ID_BYTES);
    r.seq = seq;
    r.role = model ? RECORD_ROLE_HOST : RECORD_ROLE_STANDBY;
    char err[128];
    addr_parse("127.0.0.1:9337", &r.addrs[0], err, sizeof err);
    r.n_addrs = 1;
    if (model) {
        snprintf(r.models[0], sizeof r.models[0], "%s", model);
        r.n_models = 1;
    }
    int n = record_encode(&r, &keys[k], out, RECORD_MAX_BYTES, err, sizeof err);
    REQUIRE(n > 0);
    return n;
}

static void test_get(void)
{
    uint8_t b[8];
    CHECK_EQ_INT(routes_get_encode(b), 1);
    CHECK(routes_is_get(b, 1));
    b[1] = 0x55;
    CHECK(routes_is_get(b, 2));          /* later versions may add flags */
    CHECK(!routes_is_get(b, 0));
    b[0] = ROUTES_KIND_END;
    CHECK(!routes_is_get(b, 1));
}

static void test_answer(void)
{
    uint8_t rec[3][RECORD_MAX_BYTES], end[ROUTES_END_BYTES];
    int len[3];
    len[0] = record_of(0, 100, "m-7b", rec[0]);
    len[1] = record_of(1, 200, NULL, rec[1]);
    len[2] = record_of(0, 150, "m-13b", rec[2]);   /* node 0 again, newer */
    routes_reply r;
    routes_reply_init(&r);
    CHECK_EQ_INT(routes_reply_add(&r, rec[0], (size_t)len[0]), 0);
    CHECK_EQ_INT(routes_reply_add(&r, rec[1], (size_t)len[1]), 0);
    CHECK_EQ_INT(routes_reply_add(&r, rec[2], (size_t)len[2]), 0);
    CHECK_EQ_INT(routes_end_encode(3, end), ROUTES_END_BYTES);
    CHECK_EQ_INT(end[0], ROUTES_KIND_END);
    CHECK_EQ_INT(end[4], 3);
    CHECK_EQ_INT(routes_reply_add(&r, end, sizeof end), 1);
    CHECK(r.done);
    CHECK_EQ_INT(r.n, 2);
    CHECK(r.recs[0].seq == 150 && !strcmp(r.recs[0].models[0], "m-13b"));   /* the newer one won */
    CHECK(r.recs[1].seq == 200 && r.recs[1].role == RECORD_ROLE_STANDBY);
    /* Nothing may follow END. */
    CHECK_EQ_INT(routes_reply_add(&r, end, sizeof end), -1);
    CHECK(strstr(r.error, "after END") != NULL);
    routes_reply_free(&r);

    /* An older duplicate does not replace the newer. */
    routes_reply_init(&r);
    CHECK_EQ_INT(routes_reply_add(&r, rec[2], (size_t)len[2]), 0);
    CHECK_EQ_INT(routes_reply_add(&r, rec[0], (size_t)len[0]), 0);
    routes_end_encode(2, end);
    CHECK_EQ_INT(routes_reply_add(&r, end, sizeof end), 1);
    CHECK(r.n == 1 && r.recs[0].seq == 150);
    routes_reply_free(&r);

    /* An empty answer is complete too (a member that sees nobody alive
     * still sends its own record, but the format allows 0). */
    routes_reply_init(&r);
    routes_end_encode(0, end);
    CHECK_EQ_INT(routes_reply_add(&r, end, sizeof end), 1);
    CHECK_EQ_INT(r.n, 0);
    routes_reply_free(&r);
}

static void test_bad_answers(void)
{
    uint8_t rec[RECORD_MAX_BYTES], end[ROUTES_END_BYTES];
    int len = record_of(2, 7, "m", rec);
    routes_reply r;

    /* A count that does not match. */
    routes_reply_init(&r);
    CHECK_EQ_INT(routes_reply_add(&r, rec, (size_t)len), 0);
    routes_end_encode(2, end);
    CHECK_EQ_INT(routes_reply_add(&r, end, sizeof end), -1);
    CHECK(strstr(r.error, "different number") != NULL);
    routes_reply_free(&r);

    /* A record altered on the way: the signature fails. */
    routes_reply_init(&r);
    rec[len - 70] ^= 1;
    CHECK_EQ_INT(routes_reply_add(&r, rec, (size_t)len), -1);
    rec[len - 70] ^= 1;
    routes_reply_free(&r);

    /* Truncated record, END of the wrong size, unknown kind, empty frame. */
    routes_reply_init(&r);
    CHECK_EQ_INT(routes_reply_add(&r, rec, (size_t)len - 1), -1);
    routes_reply_free(&r);
    routes_reply_init(&r);
    CHECK_EQ_INT(routes_reply_add(&r, end, sizeof end - 1), -1);
    routes_reply_free(&r);
    routes_reply_init(&r);
    uint8_t odd[2] = {0x7f, 0};
    CHECK_EQ_INT(routes_reply_add(&r, odd, sizeof odd), -1);
    CHECK_EQ_INT(routes_reply_add(&r, odd, 0), -1);
    routes_reply_free(&r);

    /* More records than a mesh can hold. */
    routes_reply_init(&r);
    int rc = 0, sent = 0;
    while (rc == 0 && sent <= ROUTES_MAX_RECORDS) {
        rc = routes_reply_add(&r, rec, (size_t)len);
        sent++;
    }
    CHECK_EQ_INT(rc, -1);
    CHECK_EQ_INT(sent, ROUTES_MAX_RECORDS + 1);
    routes_reply_free(&r);
}

int main(void)
{
    make_keys();
    RUN(test_get);
    RUN(test_answer);
    RUN(test_bad_answers);
    return testlib_finish();
}
