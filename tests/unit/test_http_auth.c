/* test_http_auth.c: the API key check in front of the HTTP servers: the
 * constant-time compare, the Authorization and x-api-key headers' parsing, the key's
 * validity and which bind addresses count as loopback. The servers' 401
 * answers are tested end to end by tests/integration/api_keys.sh. */
#include <string.h>

#include "lib/consttime.h"
#include "serve/http.h"
#include "testlib.h"

static void test_consttime_equal(void)
{
    CHECK(consttime_equal("secret", 6, "secret", 6));
    CHECK(consttime_equal("", 0, "", 0));
    CHECK(!consttime_equal("secret", 6, "secreT", 6));
    CHECK(!consttime_equal("secret", 6, "Secret", 6));
    CHECK(!consttime_equal("secret", 6, "secre", 5));         /* a prefix */
    CHECK(!consttime_equal("secret", 6, "secrets", 7));       /* longer */
    CHECK(!consttime_equal("secret", 6, "", 0));
    CHECK(!consttime_equal("", 0, "x", 1));
    /* A guess that is the secret followed by NULs is still another length. */
    CHECK(!consttime_equal("ab", 2, "ab\0", 3));
    /* Every single-bit difference at every position. */
    char s[32], g[32];
    for (int i = 0; i < 32; i++) s[i] = (char)(0x21 + i);
    for (int i = 0; i < 32; i++)
        for (int bit = 0; bit < 8; bit++) {
            memcpy(g, s, sizeof g);
            g[i] ^= (char)(1 << bit);
            CHECK(!consttime_equal(s, sizeof s, g, sizeof g));
        }
}

static void test_bearer_header(void)
{
    const char *k = "sk-test-0123";
    size_t n = strlen(k);
    CHECK_EQ_INT(http_auth_check(k, n, "Bearer sk-test-0123"), HTTP_AUTH_OK);
    CHECK_EQ_INT(http_auth_check(k, n, "bearer sk-test-0123"), HTTP_AUTH_OK);   /* scheme in any case */
    CHECK_EQ_INT(http_auth_check(k, n, "BEARER sk-test-0123"), HTTP_AUTH_OK);
    CHECK_EQ_INT(http_auth_check(k, n, "Bearer   sk-test-0123  "), HTTP_AUTH_OK);
    CHECK_EQ_INT(http_auth_check(k, n, " Bearer\tsk-test-0123\t"), HTTP_AUTH_OK);
    CHECK_EQ_INT(http_auth_check(k, n, NULL), HTTP_AUTH_MISSING);
    CHECK_EQ_INT(http_auth_check(k, n, ""), HTTP_AUTH_MISSING);
    CHECK_EQ_INT(http_auth_check(k, n, "Bearer"), HTTP_AUTH_MISSING);
    CHECK_EQ_INT(http_auth_check(k, n, "Bearer "), HTTP_AUTH_MISSING);
    CHECK_EQ_INT(http_auth_check(k, n, "Bearersk-test-0123"), HTTP_AUTH_MISSING);
    CHECK_EQ_INT(http_auth_check(k, n, "Basic c2stdGVzdC0wMTIz"), HTTP_AUTH_MISSING);
    CHECK_EQ_INT(http_auth_check(k, n, "sk-test-0123"), HTTP_AUTH_MISSING);     /* no scheme */
    CHECK_EQ_INT(http_auth_check(k, n, "Bearer sk-test-012"), HTTP_AUTH_WRONG);
    CHECK_EQ_INT(http_auth_check(k, n, "Bearer sk-test-01234"), HTTP_AUTH_WRONG);
    CHECK_EQ_INT(http_auth_check(k, n, "Bearer SK-TEST-0123"), HTTP_AUTH_WRONG); /* the key is exact */
    CHECK_EQ_INT(http_auth_check(k, n, "Bearer sk-test-0123 sk-test-0123"), HTTP_AUTH_WRONG);
    CHECK_EQ_INT(http_auth_check(k, n, "Bearer Bearer sk-test-0123"), HTTP_AUTH_WRONG);
}

/* Anthropic's clients send the key bare in x-api-key (the Messages routes). */
static void test_x_api_key_header(void)
{
    const char *k = "sk-test-0123";
    size_t n = strlen(k);
    CHECK_EQ_INT(http_auth_check_x_api_key(k, n, "sk-test-0123"), HTTP_AUTH_OK);
    CHECK_EQ_INT(http_auth_check_x_api_key(k, n, " \tsk-test-0123 "), HTTP_AUTH_OK); /* spaces around */
    CHECK_EQ_INT(http_auth_check_x_api_key(k, n, NULL), HTTP_AUTH_MISSING);
    CHECK_EQ_INT(http_auth_check_x_api_key(k, n, "  "), HTTP_AUTH_MISSING);
    CHECK_EQ_INT(http_auth_check_x_api_key(k, n, "sk-test-012"), HTTP_AUTH_WRONG);
    CHECK_EQ_INT(http_auth_check_x_api_key(k, n, "Bearer sk-test-0123"), HTTP_AUTH_WRONG); /* no scheme here */
    CHECK_EQ_INT(http_auth_check_x_api_key(k, n, "SK-TEST-0123"), HTTP_AUTH_WRONG);
}

static void test_key_validity(void)
{
    CHECK(http_api_key_valid("k"));
    CHECK(http_api_key_valid("sk-proj_ABC.def~0123+/="));
    CHECK(!http_api_key_valid(""));
    CHECK(!http_api_key_valid("two words"));
    CHECK(!http_api_key_valid("tab\there"));
    CHECK(!http_api_key_valid("line\n"));
    CHECK(!http_api_key_valid("caf\xc3\xa9"));                 /* not ASCII */
    char longest[HTTP_MAX_API_KEY + 2];
    memset(longest, 'k', HTTP_MAX_API_KEY);
    longest[HTTP_MAX_API_KEY] = 0;
    CHECK(http_api_key_valid(longest));
    longest[HTTP_MAX_API_KEY] = 'k';
    longest[HTTP_MAX_API_KEY + 1] = 0;
    CHECK(!http_api_key_valid(longest));
}

static void test_loopback_hosts(void)
{
    CHECK(http_host_is_loopback("127.0.0.1"));
    CHECK(http_host_is_loopback("127.3.2.1"));
    CHECK(http_host_is_loopback("::1"));
    CHECK(http_host_is_loopback("::ffff:127.0.0.1"));
    CHECK(http_host_is_loopback("localhost"));
    CHECK(!http_host_is_loopback("0.0.0.0"));
    CHECK(!http_host_is_loopback("::"));
    CHECK(!http_host_is_loopback("10.1.2.3"));
    CHECK(!http_host_is_loopback("192.168.0.1"));
    CHECK(!http_host_is_loopback("::ffff:10.0.0.1"));
    CHECK(!http_host_is_loopback("fe80::1"));
    CHECK(!http_host_is_loopback(""));
}

int main(void)
{
    RUN(test_consttime_equal);
    RUN(test_bearer_header);
    RUN(test_x_api_key_header);
    RUN(test_key_validity);
    RUN(test_loopback_hosts);
    return testlib_finish();
}
