/* test_identity.c: the node key file (creation, reload, refusal of bad
 * files), signatures, and where the home directory is. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mesh/identity.h"
#include "testlib.h"

static char *path_in(const char *sub)
{
    static char buf[1024];
    snprintf(buf, sizeof buf, "%s/%s", testlib_tmpdir(), sub);
    return buf;
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    REQUIRE(f != NULL);
    fputs(text, f);
    fclose(f);
    REQUIRE(chmod(path, mode) == 0);
}

static void test_first_start_creates_key(void)
{
    char home[1024], key[1100], err[256] = "";
    snprintf(home, sizeof home, "%s", path_in("fresh/nested/home"));
    identity id;
    int created = -1;
    REQUIRE(identity_load_or_create(home, &id, &created, err, sizeof err) == 0);
    CHECK_EQ_INT(created, 1);
    struct stat st;
    REQUIRE(stat(home, &st) == 0);
    CHECK_EQ_INT(st.st_mode & 0777, 0700);
    snprintf(key, sizeof key, "%s/key", home);
    REQUIRE(stat(key, &st) == 0);
    CHECK_EQ_INT(st.st_mode & 0777, 0600);
    CHECK(S_ISREG(st.st_mode));
    /* No temp file left behind. */
    char tmp[1200];
    snprintf(tmp, sizeof tmp, "%s/key.tmp.%ld", home, (long)getpid());
    CHECK(access(tmp, F_OK) != 0);

    identity again;
    REQUIRE(identity_load_or_create(home, &again, &created, err, sizeof err) == 0);
    CHECK_EQ_INT(created, 0);
    CHECK(memcmp(id.public_key, again.public_key, IDENTITY_KEY_BYTES) == 0);
    CHECK(memcmp(id.secret, again.secret, IDENTITY_KEY_BYTES) == 0);

    /* Another home, another node. */
    identity other;
    REQUIRE(identity_load_or_create(path_in("other"), &other, NULL, err, sizeof err) == 0);
    CHECK(memcmp(id.public_key, other.public_key, IDENTITY_KEY_BYTES) != 0);
}

static void test_hex(void)
{
    uint8_t id[IDENTITY_KEY_BYTES], back[IDENTITY_KEY_BYTES];
    for (int i = 0; i < IDENTITY_KEY_BYTES; i++) id[i] = (uint8_t)(i * 37 + 5);
    char hex[IDENTITY_HEX_BYTES];
    identity_id_hex(id, hex);
    CHECK_EQ_INT(strlen(hex), 64);
    CHECK(strncmp(hex, "052a4f", 6) == 0);
    REQUIRE(identity_id_from_hex(hex, back) == 0);
    CHECK(memcmp(id, back, sizeof id) == 0);
    CHECK(identity_id_from_hex("abc", back) != 0);
    hex[10] = 'g';
    CHECK(identity_id_from_hex(hex, back) != 0);
}

static void test_sign_verify(void)
{
    identity id;
    char err[256];
    REQUIRE(identity_load_or_create(path_in("signer"), &id, NULL, err, sizeof err) == 0);
    uint8_t sig[IDENTITY_SIG_BYTES];
    REQUIRE(identity_sign(&id, "hello", 5, sig, err, sizeof err) == 0);
    CHECK(identity_verify(id.public_key, "hello", 5, sig));
    CHECK(!identity_verify(id.public_key, "hellp", 5, sig));
    sig[7] ^= 1;
    CHECK(!identity_verify(id.public_key, "hello", 5, sig));
    identity_wipe(&id);
    static const uint8_t zero[IDENTITY_KEY_BYTES];
    CHECK(memcmp(id.secret, zero, sizeof zero) == 0);
}

/* Each bad file must be refused with a message naming the file. */
static void expect_refused(const char *name, const char *text, mode_t mode, const char *why)
{
    char home[1024], key[1100], err[512] = "";
    snprintf(home, sizeof home, "%s", path_in(name));
    REQUIRE(mkdir(home, 0700) == 0);
    snprintf(key, sizeof key, "%s/key", home);
    write_file(key, text, mode);
    identity id;
    int rc = identity_load_or_create(home, &id, NULL, err, sizeof err);
    if (rc == 0) fprintf(stderr, "  %s was accepted\n", name);
    CHECK(rc != 0);
    CHECK(strstr(err, key) != NULL);
    if (why && !strstr(err, why)) fprintf(stderr, "  %s: unexpected message: %s\n", name, err);
    CHECK(why == NULL || strstr(err, why) != NULL);
}

static void test_malformed_key_files(void)
{
    /* A valid file to derive variants from. */
    identity id;
    char err[256];
    REQUIRE(identity_load_or_create(path_in("model"), &id, NULL, err, sizeof err) == 0);
    char good[512], path[1100];
    snprintf(path, sizeof path, "%s/key", path_in("model"));
    FILE *f = fopen(path, "r");
    REQUIRE(f != NULL);
    size_t n = fread(good, 1, sizeof good - 1, f);
    fclose(f);
    good[n] = 0;
    CHECK_EQ_INT(n, 165);
    CHECK(strncmp(good, "llmesh-ed25519-key 1\nsecret ", 28) == 0);

    expect_refused("empty", "", 0600, "not a llmesh key file");
    expect_refused("garbage", "hello world\n", 0600, "not a llmesh key file");
    char v2[512];
    snprintf(v2, sizeof v2, "%s", good);
    v2[19] = '2';
    expect_refused("version", v2, 0600, "format");
    char badhex[512];
    snprintf(badhex, sizeof badhex, "%s", good);
    badhex[21 + 7 + 3] = 'z';
    expect_refused("badhex", badhex, 0600, "line 2");
    char shorter[512];
    snprintf(shorter, sizeof shorter, "%s", good);
    shorter[n - 10] = '\n';
    shorter[n - 9] = 0;
    expect_refused("short", shorter, 0600, "line 3");
    char trailing[600];
    snprintf(trailing, sizeof trailing, "%sextra\n", good);
    expect_refused("trailing", trailing, 0600, "unexpected text");
    /* A public key that is not the secret's: flip one hex digit of it. */
    char mismatch[512];
    snprintf(mismatch, sizeof mismatch, "%s", good);
    char *pub = strstr(mismatch, "public ") + 7;
    pub[0] = pub[0] == '0' ? '1' : '0';
    expect_refused("mismatch", mismatch, 0600, "does not belong");
    expect_refused("perms", good, 0644, "chmod 600");
    expect_refused("perms-group", good, 0660, "chmod 600");

    /* A key that is a directory. */
    char home[1024], key[1100];
    snprintf(home, sizeof home, "%s", path_in("dirkey"));
    REQUIRE(mkdir(home, 0700) == 0);
    snprintf(key, sizeof key, "%s/key", home);
    REQUIRE(mkdir(key, 0700) == 0);
    CHECK(identity_load_or_create(home, &id, NULL, err, sizeof err) != 0);

    /* A home that is a file. */
    snprintf(home, sizeof home, "%s", path_in("notadir"));
    write_file(home, "x", 0600);
    CHECK(identity_load_or_create(home, &id, NULL, err, sizeof err) != 0);
    CHECK(strstr(err, "not a directory") != NULL);
}

static void test_home_resolution(void)
{
    char out[512], err[256];
    char *saved_home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
    char *saved_env = getenv("LLMESH_HOME") ? strdup(getenv("LLMESH_HOME")) : NULL;

    setenv("HOME", "/home/someone", 1);
    setenv("LLMESH_HOME", "/srv/llmesh", 1);
    REQUIRE(identity_home_dir("/flag/dir", out, sizeof out, err, sizeof err) == 0);
    CHECK_EQ_STR(out, "/flag/dir");
    REQUIRE(identity_home_dir(NULL, out, sizeof out, err, sizeof err) == 0);
    CHECK_EQ_STR(out, "/srv/llmesh");
    REQUIRE(identity_home_dir("", out, sizeof out, err, sizeof err) == 0);
    CHECK_EQ_STR(out, "/srv/llmesh");
    unsetenv("LLMESH_HOME");
    REQUIRE(identity_home_dir(NULL, out, sizeof out, err, sizeof err) == 0);
    CHECK_EQ_STR(out, "/home/someone/.llmesh");
    setenv("LLMESH_HOME", "", 1);
    REQUIRE(identity_home_dir(NULL, out, sizeof out, err, sizeof err) == 0);
    CHECK_EQ_STR(out, "/home/someone/.llmesh");
    unsetenv("HOME");
    CHECK(identity_home_dir(NULL, out, sizeof out, err, sizeof err) != 0);
    CHECK(strstr(err, "--home") != NULL);
    char tiny[8];
    CHECK(identity_home_dir("/a/long/path", tiny, sizeof tiny, err, sizeof err) != 0);

    if (saved_home) setenv("HOME", saved_home, 1);
    if (saved_env) setenv("LLMESH_HOME", saved_env, 1); else unsetenv("LLMESH_HOME");
    free(saved_home);
    free(saved_env);
}

/* The mesh secret: made once, kept, replaced by a join token's, refused when
 * others may read it or it is malformed. */
static void test_mesh_secret(void)
{
    const char *dir = testlib_tmp_path("secret-home");
    char path[600], err[512];
    snprintf(path, sizeof path, "%s/mesh-secret", dir);
    uint8_t s1[IDENTITY_SECRET_BYTES], s2[IDENTITY_SECRET_BYTES], tok[IDENTITY_SECRET_BYTES];
    identity_secret_origin how;
    REQUIRE(identity_mesh_secret(dir, NULL, s1, &how, err, sizeof err) == 0);
    CHECK_EQ_INT(how, IDENTITY_SECRET_CREATED);
    struct stat st;
    REQUIRE(stat(path, &st) == 0);
    CHECK_EQ_INT(st.st_mode & 0777, 0600);
    REQUIRE(identity_mesh_secret(dir, NULL, s2, &how, err, sizeof err) == 0);
    CHECK_EQ_INT(how, IDENTITY_SECRET_LOADED);
    CHECK(!memcmp(s1, s2, sizeof s1));
    /* Another home makes another secret. */
    uint8_t other[IDENTITY_SECRET_BYTES];
    REQUIRE(identity_mesh_secret(testlib_tmp_path("secret-other"), NULL, other, &how, err, sizeof err) == 0);
    CHECK(memcmp(s1, other, sizeof s1) != 0);
    /* A token's secret: the same changes nothing, another replaces it. */
    REQUIRE(identity_mesh_secret(dir, s1, s2, &how, err, sizeof err) == 0);
    CHECK_EQ_INT(how, IDENTITY_SECRET_LOADED);
    for (int i = 0; i < IDENTITY_SECRET_BYTES; i++) tok[i] = (uint8_t)(i * 5 + 1);
    REQUIRE(identity_mesh_secret(dir, tok, s2, &how, err, sizeof err) == 0);
    CHECK_EQ_INT(how, IDENTITY_SECRET_REPLACED);
    CHECK(!memcmp(s2, tok, sizeof tok));
    REQUIRE(identity_mesh_secret(dir, NULL, s2, &how, err, sizeof err) == 0);
    CHECK(!memcmp(s2, tok, sizeof tok));
    REQUIRE(stat(path, &st) == 0);
    CHECK_EQ_INT(st.st_mode & 0777, 0600);
    REQUIRE(identity_mesh_secret(testlib_tmp_path("secret-new"), tok, s2, &how, err, sizeof err) == 0);
    CHECK_EQ_INT(how, IDENTITY_SECRET_FROM_TOKEN);
    /* Readable by others: refused with the chmod to run. */
    chmod(path, 0644);
    CHECK(identity_mesh_secret(dir, NULL, s2, &how, err, sizeof err) != 0);
    CHECK(strstr(err, "chmod 600") != NULL);
    /* Malformed files are refused, never overwritten. */
    static const char *const bad[] = {"", "llmesh-mesh-secret 1\n",
                                      "llmesh-mesh-secret 2\nsecret 00\n",
                                      "llmesh-mesh-secret 1\nsecret 0011\n",
                                      "llmesh-mesh-secret 1\nsecret "
                                      "zz01020304050607080910111213141516171819202122232425262728293031\n"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        write_file(path, bad[i], 0600);
        err[0] = 0;
        CHECK(identity_mesh_secret(dir, NULL, s2, &how, err, sizeof err) != 0);
        CHECK(strstr(err, "mesh-secret") != NULL);
    }
}

int main(void)
{
    RUN(test_first_start_creates_key);
    RUN(test_hex);
    RUN(test_sign_verify);
    RUN(test_malformed_key_files);
    RUN(test_home_resolution);
    RUN(test_mesh_secret);
    return testlib_finish();
}
