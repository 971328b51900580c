/* test_models_ref.c: model references (models/ref.h), the Hugging Face
 * cache layout and listing (models/hf.h), and the fit check's need from a
 * file's first bytes (models/resolve.h). No network: the downloads are
 * tested against a local fake hub in tests/integration/models.sh. */
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "models/hf.h"
#include "models/ref.h"
#include "models/resolve.h"
#include "models/weights_store.h"
#include "testlib.h"

static model_ref parse_ok(const char *s)
{
    model_ref r;
    char err[512] = "";
    int rc = model_ref_parse(s, &r, err, sizeof err);
    if (rc != 0) fprintf(stderr, "  parse '%s': %s\n", s, err);
    CHECK_EQ_INT(rc, 0);
    return r;
}

static void parse_bad(const char *s, const char *needle)
{
    model_ref r;
    char err[512] = "";
    CHECK_EQ_INT(model_ref_parse(s, &r, err, sizeof err), -1);
    if (needle && !strstr(err, needle)) {
        fprintf(stderr, "  '%s': message '%s' lacks '%s'\n", s, err, needle);
        CHECK(0);
    }
}

static void test_ref_kinds(void)
{
    model_ref r = parse_ok("/models/x.gguf");
    CHECK_EQ_INT(r.kind, MODEL_REF_PATH);
    CHECK_EQ_STR(r.file, "/models/x.gguf");
    CHECK_EQ_INT(parse_ok("./x.gguf").kind, MODEL_REF_PATH);
    CHECK_EQ_INT(parse_ok("../a/x.gguf").kind, MODEL_REF_PATH);
    CHECK_EQ_INT(parse_ok("~/x.gguf").kind, MODEL_REF_PATH);

    r = parse_ok("Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf");
    CHECK_EQ_INT(r.kind, MODEL_REF_HF_FILE);
    CHECK_EQ_STR(r.repo, "Qwen/Qwen2.5-0.5B-Instruct-GGUF");
    CHECK_EQ_STR(r.file, "qwen2.5-0.5b-instruct-q4_k_m.gguf");
    CHECK_EQ_STR(r.revision, "main");
    r = parse_ok("org/repo/sub/dir/m-Q8_0.gguf@v1.2");
    CHECK_EQ_STR(r.file, "sub/dir/m-Q8_0.gguf");
    CHECK_EQ_STR(r.revision, "v1.2");

    r = parse_ok("bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M");
    CHECK_EQ_INT(r.kind, MODEL_REF_HF_QUANT);
    CHECK_EQ_STR(r.repo, "bartowski/Llama-3.2-1B-Instruct-GGUF");
    CHECK_EQ_STR(r.quant, "Q4_K_M");
    r = parse_ok("a/b:q8_0@0123456789abcdef0123456789abcdef01234567");
    CHECK_EQ_STR(r.revision, "0123456789abcdef0123456789abcdef01234567");

    r = parse_ok("https://example.com/files/m.gguf");
    CHECK_EQ_INT(r.kind, MODEL_REF_URL);
    CHECK_EQ_STR(r.file, "https://example.com/files/m.gguf");
    CHECK_EQ_INT(parse_ok("http://127.0.0.1:8080/plain/m.gguf").kind, MODEL_REF_URL);

    r = parse_ok("Qwen2.5-0.5B-Instruct");
    CHECK_EQ_INT(r.kind, MODEL_REF_CATALOG);
    CHECK_EQ_STR(r.name, "qwen2.5-0.5b-instruct");
    CHECK_EQ_STR(r.repo, "Qwen/Qwen2.5-0.5B-Instruct-GGUF");
}

static void test_ref_refused(void)
{
    parse_bad("", "empty");
    parse_bad("no-such-model", "catalog");
    parse_bad("org/repo", "no such file");
    parse_bad("org/repo/../../etc/passwd.gguf", ".gguf");
    parse_bad("org/repo/x.bin", ".gguf");
    parse_bad("org/repo/a//b.gguf", NULL);
    parse_bad("../org/x.gguf\x01", "control");
    parse_bad("org/re po/x.gguf", "repo");
    parse_bad("-org/repo/x.gguf", "repo");
    parse_bad("org/repo:Q4/K", "quant");
    parse_bad("org/repo:", "quant");
    parse_bad("org/repo/x.gguf@..", "revision");
    parse_bad("org/repo/x.gguf@", "revision");
    parse_bad("https://", "URL");
    parse_bad("https://host", "no file");
    parse_bad("https://host/a b.gguf", "URL");
    char longref[MODEL_REF_MAX + 10];
    memset(longref, 'a', sizeof longref - 1);
    longref[sizeof longref - 1] = 0;
    parse_bad(longref, "longer");
}

static void test_split_names(void)
{
    int no, count;
    size_t stem;
    CHECK(model_ref_split_name("m-Q4_K_M-00002-of-00003.gguf", &no, &count, &stem));
    CHECK_EQ_INT(no, 2);
    CHECK_EQ_INT(count, 3);
    CHECK_EQ_INT(stem, strlen("m-Q4_K_M"));
    CHECK(!model_ref_split_name("m-00004-of-00003.gguf", &no, &count, &stem));
    CHECK(!model_ref_split_name("m-00000-of-00003.gguf", &no, &count, &stem));
    CHECK(!model_ref_split_name("m.gguf", &no, &count, &stem));
    char id[128];
    model_ref_id_from_file("/a/b/qwen-q4_k_m-00001-of-00002.gguf", id, sizeof id);
    CHECK_EQ_STR(id, "qwen-q4_k_m");
    model_ref_id_from_file("x/kjv-llama-6.3M-q8_0.gguf", id, sizeof id);
    CHECK_EQ_STR(id, "kjv-llama-6.3M-q8_0");
    CHECK(model_ref_file_has_quant("Llama-3.2-1B-Instruct-Q4_K_M.gguf", "q4_k_m"));
    CHECK(model_ref_file_has_quant("qwen.q8_0-00001-of-00002.gguf", "Q8_0"));
    CHECK(!model_ref_file_has_quant("x-Q4_K_M.gguf", "Q4_K"));
    CHECK(!model_ref_file_has_quant("x-IQ4_K_M.gguf", "Q4_K_M"));
}

static void test_catalog(void)
{
    CHECK(model_catalog_count() >= 10);
    const char *families[] = {"Qwen", "Llama", "Gemma", "Mistral", "Phi"};
    for (int f = 0; f < 5; f++) {
        int seen = 0;
        for (int i = 0; i < model_catalog_count(); i++) seen |= !strcmp(model_catalog_at(i)->family, families[f]);
        CHECK(seen);
    }
    /* Every entry is a hub file reference that parses. */
    for (int i = 0; i < model_catalog_count(); i++) {
        const model_catalog_entry *e = model_catalog_at(i);
        char s[1024];
        snprintf(s, sizeof s, "%s/%s", e->repo, e->file);
        CHECK_EQ_INT(parse_ok(s).kind, MODEL_REF_HF_FILE);
        CHECK(e->size_bytes > 100000000ull);
    }
}

static void test_pick_quant(void)
{
    char names[8][HF_NAME_CAP] = {"README.md.gguf", "m-Q8_0.gguf", "m-Q4_K_M-00002-of-00002.gguf",
                                  "m-Q4_K_M-00001-of-00002.gguf", "m-Q4_K_S.gguf", "sub/m-Q5_K_M.gguf",
                                  "other-Q5_K_M.gguf"};
    int out[16];
    char err[512];
    CHECK_EQ_INT(hf_pick_quant(names, 7, "Q8_0", out, 16, err, sizeof err), 1);
    CHECK_EQ_INT(out[0], 1);
    CHECK_EQ_INT(hf_pick_quant(names, 7, "q4_k_m", out, 16, err, sizeof err), 2);
    CHECK_EQ_INT(out[0], 3);
    CHECK_EQ_INT(out[1], 2);
    CHECK_EQ_INT(hf_pick_quant(names, 7, "Q5_K_M", out, 16, err, sizeof err), -1);
    CHECK(strstr(err, "matches 2 files") != NULL);
    CHECK_EQ_INT(hf_pick_quant(names, 7, "Q2_K", out, 16, err, sizeof err), -1);
    CHECK(strstr(err, "no .gguf") != NULL);
    /* A part set with a part missing. */
    CHECK_EQ_INT(hf_pick_quant(names + 2, 1, "Q4_K_M", out, 16, err, sizeof err), -1);
    CHECK(strstr(err, "part 1") != NULL);
}

static void test_listing(void)
{
    static char names[8][HF_NAME_CAP];
    char commit[64], err[256];
    const char *ok = "{\"id\":\"a/b\",\"sha\":\"0123456789abcdef0123456789abcdef01234567\",\"siblings\":"
                     "[{\"rfilename\":\"README.md\"},{\"rfilename\":\"m-Q8_0.gguf\",\"size\":5},"
                     "{\"rfilename\":\"../evil.gguf\"},{\"rfilename\":7},{\"rfilename\":\"d/m-Q4_0.gguf\"}]}";
    CHECK_EQ_INT(hf_parse_listing(ok, strlen(ok), commit, names, 8, err, sizeof err), 2);
    CHECK_EQ_STR(commit, "0123456789abcdef0123456789abcdef01234567");
    CHECK_EQ_STR(names[0], "m-Q8_0.gguf");
    CHECK_EQ_STR(names[1], "d/m-Q4_0.gguf");
    const char *bad[] = {"", "[]", "{\"sha\":\"x\",\"siblings\":[]}", "{\"sha\":\"0123456789abcdef0123456789abcdef01234567\"}"};
    for (int i = 0; i < 4; i++) CHECK_EQ_INT(hf_parse_listing(bad[i], strlen(bad[i]), commit, names, 8, err, sizeof err), -1);
}

static void test_cache_layout(void)
{
    const char *dir = testlib_tmp_path("hf");
    setenv("HF_HUB_CACHE", dir, 1);
    setenv("HF_ENDPOINT", "http://127.0.0.1:9/", 1);
    setenv("HF_TOKEN", "tok", 1);
    hf_env e;
    hf_env_read(&e);
    CHECK_EQ_STR(e.endpoint, "http://127.0.0.1:9");
    CHECK_EQ_STR(e.token, "tok");
    char url[1024], path[HF_MAX_PATH], err[256];
    hf_resolve_url(&e, "a/b", "main", "d/m.gguf", url, sizeof url);
    CHECK_EQ_STR(url, "http://127.0.0.1:9/a/b/resolve/main/d/m.gguf");
    const char *commit = "0123456789abcdef0123456789abcdef01234567";
    REQUIRE(hf_blob_path(&e, "a/b", "abc", path, sizeof path, err, sizeof err) == 0);
    FILE *f = fopen(path, "w");
    REQUIRE(f);
    fputs("GGUF", f);
    fclose(f);
    char commit_out[64];
    CHECK_EQ_INT(hf_cached_commit(&e, "a/b", "main", commit_out), -1);
    REQUIRE(hf_link_snapshot(&e, "a/b", "main", commit, "d/m.gguf", "abc", path, sizeof path, err, sizeof err) == 0);
    char target[512] = "";
    CHECK(readlink(path, target, sizeof target - 1) > 0);
    CHECK_EQ_STR(target, "../../../blobs/abc");
    CHECK_EQ_INT(hf_cached_commit(&e, "a/b", "main", commit_out), 0);
    CHECK_EQ_STR(commit_out, commit);
    CHECK_EQ_INT(hf_cached_file(&e, "a/b", commit, "d/m.gguf", path, sizeof path), 1);
    CHECK_EQ_INT(hf_cached_file(&e, "a/b", commit, "d/none.gguf", path, sizeof path), 0);
    static char names[4][HF_NAME_CAP];
    CHECK_EQ_INT(hf_cached_gguf_files(&e, "a/b", commit, names, 4), 1);
    CHECK_EQ_STR(names[0], "d/m.gguf");
    /* What peers are told this node holds names the snapshot's commit (a
     * blob named by a 64-hex SHA-256 only). */
    const char *sha = "5555555555555555555555555555555555555555555555555555555555555555";
    char sha_blob[HF_MAX_PATH], link[HF_MAX_PATH];
    REQUIRE(hf_blob_path(&e, "a/b", sha, sha_blob, sizeof sha_blob, err, sizeof err) == 0);
    REQUIRE((f = fopen(sha_blob, "w")) != NULL);
    fputs("GGUF", f);
    fclose(f);
    REQUIRE(hf_link_snapshot(&e, "a/b", "main", commit, "q.gguf", sha, link, sizeof link, err, sizeof err) == 0);
    static weights_held_file held[4];
    CHECK_EQ_INT(hf_cache_held(&e, held, 4), 1);
    char want[300];
    snprintf(want, sizeof want, "a/b/q.gguf@%s", commit);
    CHECK_EQ_STR(held[0].ref, want);
    CHECK_EQ_INT(held[0].size, 4);
    /* The blob deleted: the link still names it (the cache's word when the
     * hub is down), the file is not cached, nothing is offered. */
    char named[65];
    CHECK_EQ_INT(hf_snapshot_blob(&e, "a/b", commit, "q.gguf", named), 1);
    CHECK_EQ_STR(named, sha);
    unlink(sha_blob);
    CHECK_EQ_INT(hf_snapshot_blob(&e, "a/b", commit, "q.gguf", named), 1);
    CHECK_EQ_INT(hf_cached_file(&e, "a/b", commit, "q.gguf", path, sizeof path), 0);
    CHECK_EQ_INT(hf_cached_gguf_files(&e, "a/b", commit, names, 4), 2);
    CHECK_EQ_INT(hf_snapshot_blob(&e, "a/b", commit, "d/m.gguf", named), 0); /* "abc": not a SHA-256 */
    CHECK_EQ_INT(hf_snapshot_blob(&e, "a/b", commit, "none.gguf", named), 0);
    CHECK_EQ_INT(hf_cache_held(&e, held, 4), 0);
    /* A blob deleted by hand leaves a dangling link: not cached. */
    char blob[HF_MAX_PATH];
    REQUIRE(hf_blob_path(&e, "a/b", "abc", blob, sizeof blob, err, sizeof err) == 0);
    unlink(blob);
    CHECK_EQ_INT(hf_cached_file(&e, "a/b", commit, "d/m.gguf", path, sizeof path), 0);
    unsetenv("HF_HUB_CACHE");
    unsetenv("HF_ENDPOINT");
    unsetenv("HF_TOKEN");
}

/* HF_HUB_OFFLINE as huggingface_hub reads it. */
static void test_hub_offline(void)
{
    const char *on[] = {"1", "ON", "yes", "True"}, *off[] = {"0", "", "no", "false", "2"};
    hf_env e;
    for (size_t i = 0; i < sizeof on / sizeof on[0]; i++) {
        setenv("HF_HUB_OFFLINE", on[i], 1);
        hf_env_read(&e);
        CHECK_EQ_INT(e.offline, 1);
    }
    for (size_t i = 0; i < sizeof off / sizeof off[0]; i++) {
        setenv("HF_HUB_OFFLINE", off[i], 1);
        hf_env_read(&e);
        CHECK_EQ_INT(e.offline, 0);
    }
    unsetenv("HF_HUB_OFFLINE");
    hf_env_read(&e);
    CHECK_EQ_INT(e.offline, 0);
}

static model_peer_file listed(const char *ref, char hex, uint64_t size)
{
    model_peer_file f = {.size = size};
    snprintf(f.ref, sizeof f.ref, "%.200s", ref);
    memset(f.sha256, hex, 64);
    return f;
}

/* A hub reference named by the peers' records (the hub down). */
static void test_match_peer_files(void)
{
    const char *c1 = "0123456789abcdef0123456789abcdef01234567", *c2 = "89abcdef0123456789abcdef0123456789abcdef";
    char ref[300], err[512];
    model_peer_file files[8];
    int n = 0, idx[MODEL_MAX_PARTS];
    snprintf(ref, sizeof ref, "Org/m-GGUF/m-Q8_0.gguf@%s", c1);
    files[n++] = listed(ref, 'a', 100);
    snprintf(ref, sizeof ref, "Org/m-GGUF/m-Q4_K_M.gguf@%s", c1);
    files[n++] = listed(ref, 'b', 50);
    snprintf(ref, sizeof ref, "Org/big/b-Q4_0-00002-of-00002.gguf@%s", c1);
    files[n++] = listed(ref, 'd', 20);
    snprintf(ref, sizeof ref, "Org/big/b-Q4_0-00001-of-00002.gguf@%s", c1);
    files[n++] = listed(ref, 'c', 10);
    snprintf(ref, sizeof ref, "Org/m-GGUF-other/m-Q8_0.gguf@%s", c1);  /* another repo with the same prefix */
    files[n++] = listed(ref, 'e', 100);
    /* The same file held by a second peer, at the same commit: one entry. */
    snprintf(ref, sizeof ref, "Org/m-GGUF/m-Q8_0.gguf@%s", c1);
    files[n++] = listed(ref, 'a', 100);

    model_ref r = parse_ok("Org/m-GGUF:q8_0");
    CHECK_EQ_INT(model_match_peer_files(&r, files, n, idx, MODEL_MAX_PARTS, err, sizeof err), 1);
    CHECK_EQ_INT(idx[0], 0);
    r = parse_ok("Org/m-GGUF/m-Q4_K_M.gguf");
    CHECK_EQ_INT(model_match_peer_files(&r, files, n, idx, MODEL_MAX_PARTS, err, sizeof err), 1);
    CHECK_EQ_INT(idx[0], 1);
    /* Any part names every part, in order. */
    r = parse_ok("Org/big/b-Q4_0-00002-of-00002.gguf");
    CHECK_EQ_INT(model_match_peer_files(&r, files, n, idx, MODEL_MAX_PARTS, err, sizeof err), 2);
    CHECK_EQ_INT(idx[0], 3);
    CHECK_EQ_INT(idx[1], 2);
    r = parse_ok("Org/big:Q4_0");
    CHECK_EQ_INT(model_match_peer_files(&r, files, n, idx, MODEL_MAX_PARTS, err, sizeof err), 2);
    CHECK_EQ_INT(idx[0], 3);
    /* Nobody has it: 0 and the message says what is missing. */
    r = parse_ok("Org/m-GGUF:Q2_K");
    CHECK_EQ_INT(model_match_peer_files(&r, files, n, idx, MODEL_MAX_PARTS, err, sizeof err), 0);
    CHECK(strstr(err, "Q2_K") != NULL);
    r = parse_ok("Org/m-GGUF/none.gguf");
    CHECK_EQ_INT(model_match_peer_files(&r, files, n, idx, MODEL_MAX_PARTS, err, sizeof err), 0);
    CHECK(strstr(err, "no peer lists Org/m-GGUF/none.gguf") != NULL);
    /* A revision that is a commit wants that commit. */
    snprintf(ref, sizeof ref, "Org/m-GGUF/m-Q8_0.gguf@%s", c2);
    r = parse_ok(ref);
    CHECK_EQ_INT(model_match_peer_files(&r, files, n, idx, MODEL_MAX_PARTS, err, sizeof err), 0);
    snprintf(ref, sizeof ref, "Org/m-GGUF/m-Q8_0.gguf@%s", c1);
    r = parse_ok(ref);
    CHECK_EQ_INT(model_match_peer_files(&r, files, n, idx, MODEL_MAX_PARTS, err, sizeof err), 1);
    /* Two peers holding different bytes as one name: ambiguous without the
     * hub, refused; naming the commit settles it. */
    snprintf(ref, sizeof ref, "Org/m-GGUF/m-Q8_0.gguf@%s", c2);
    files[n++] = listed(ref, 'f', 100);
    r = parse_ok("Org/m-GGUF:Q8_0");
    CHECK_EQ_INT(model_match_peer_files(&r, files, n, idx, MODEL_MAX_PARTS, err, sizeof err), -1);
    CHECK(strstr(err, "different files") != NULL);
    r = parse_ok(ref);
    CHECK_EQ_INT(model_match_peer_files(&r, files, n, idx, MODEL_MAX_PARTS, err, sizeof err), 1);
    CHECK_EQ_INT(idx[0], n - 1);
    /* Two quants matching: named, refused. */
    snprintf(ref, sizeof ref, "Org/m-GGUF/sub/m-Q4_K_M.gguf@%s", c1);
    files[n++] = listed(ref, '1', 50);
    r = parse_ok("Org/m-GGUF:Q4_K_M");
    CHECK_EQ_INT(model_match_peer_files(&r, files, n, idx, MODEL_MAX_PARTS, err, sizeof err), -1);
    CHECK(strstr(err, "matches 2 files") != NULL);
    /* Records are outside input: a ref without a commit is skipped. */
    files[0] = listed("Org/m-GGUF/m-Q8_0.gguf", 'a', 100);
    r = parse_ok("Org/m-GGUF/m-Q8_0.gguf@" "0123456789abcdef0123456789abcdef01234567");
    CHECK_EQ_INT(model_match_peer_files(&r, files, 1, idx, MODEL_MAX_PARTS, err, sizeof err), 0);
}

/* The need from a file's first bytes equals the need from the whole file,
 * and a header cut short says so instead of guessing. */
static void test_need_from_head(void)
{
    const char *path = testlib_source_path("models/kjv-llama-6.3M-q8_0.gguf");
    FILE *f = fopen(path, "rb");
    REQUIRE(f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)size);
    REQUIRE(buf && fread(buf, 1, (size_t)size, f) == (size_t)size);
    fclose(f);
    model_fetch_opts o = {.n_ctx = 256, .n_lanes = 2, .n_threads = 1};
    uint64_t whole = 0, head = 0, more = 0;
    char err[512];
    REQUIRE(model_need_from_head(buf, (size_t)size, (uint64_t)size, 0, &o, &whole, err, sizeof err) == 0);
    REQUIRE(model_need_from_head(buf, 512 * 1024, (uint64_t)size, 0, &o, &head, err, sizeof err) == 0);
    CHECK_EQ_INT(head, whole);
    CHECK(whole > (uint64_t)size);
    REQUIRE(model_need_from_head(buf, 512 * 1024, (uint64_t)size, 1000, &o, &more, err, sizeof err) == 0);
    CHECK_EQ_INT(more, whole + 1000);
    o.n_ctx = 512;
    REQUIRE(model_need_from_head(buf, (size_t)size, (uint64_t)size, 0, &o, &more, err, sizeof err) == 0);
    CHECK(more > whole);
    CHECK_EQ_INT(model_need_from_head(buf, 4096, (uint64_t)size, 0, &o, &more, err, sizeof err), -1);
    free(buf);
}

int main(void)
{
    RUN(test_ref_kinds);
    RUN(test_ref_refused);
    RUN(test_split_names);
    RUN(test_catalog);
    RUN(test_pick_quant);
    RUN(test_listing);
    RUN(test_cache_layout);
    RUN(test_hub_offline);
    RUN(test_match_peer_files);
    RUN(test_need_from_head);
    return testlib_finish();
}
