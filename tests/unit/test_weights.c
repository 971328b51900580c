/* test_weights.c: model identity and the weights store, with real QUIC
 * between meshes in this process on loopback (as test_mesh.c).
 *
 * Identity: hashes are stable, ignore general.* but not the tokenizer, and
 * change with any tensor byte or the chunk size; a store remembers a
 * manifest (a second add or a restart hashes nothing) and hashes a changed
 * file again. Fetching: a middle layer range from one mesh to another gives
 * a GGUF that gguf_open reads with exactly those tensors, byte for byte; the
 * second start answers from the cache without a stream; two starts share one
 * transfer; streams reset by the source are retried; a fetch cut by a
 * restart resumes with only the missing chunks (damaged ones on disk
 * included); a source that serves corrupt chunks is caught and its data never
 * used; unknown models, layers out of range, garbage on the stream from
 * either side are refused and counted. Chunks are 16 KiB here, so the
 * models of a few MB have hundreds of them. Every wait is bounded. */
#include <cjson/cJSON.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "gguf_writer.h"
#include "lib/clock.h"
#include "lib/log.h"
#include "mesh/mesh.h"
#include "models/fetch_wire.h"
#include "models/peer_file.h"
#include "models/store_private.h" /* white box: retry, window and fault knobs */
#include "models/weights.h"
#include "models/weights_store.h"
#include "testlib.h"
#include "testnet.h"

#define WAIT_MS 30000
#define CHUNK (16u << 10)

static struct event_base *base;

/* ---- models --------------------------------------------------------------------------*/

static uint64_t rng_state;
static float rnd(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng_state >> 40) & 0xffffff) / 16777216.0f - 0.5f;
}

static void add_random(gguf_writer *w, const char *name, uint64_t ne0, uint64_t ne1)
{
    uint64_t ne[2] = {ne0, ne1};
    size_t n = (size_t)(ne0 * ne1);
    float *d = malloc(n * sizeof *d);
    for (size_t i = 0; i < n; i++) d[i] = rnd();
    gguf_writer_add_tensor(w, name, ne1 > 1 ? 2 : 1, ne, GGML_TYPE_F32, d, n * sizeof *d);
    free(d);
}

/* A llama-shaped file: head tensors, rope_freqs, and per layer a 16 KiB,
 * a 256 KiB and a 256-byte tensor (18 chunks of 16 KiB per layer). */
static void write_model(const char *path, int n_layer, uint64_t seed, const char *general_name,
                        const char *tokenizer)
{
    rng_state = seed;
    gguf_writer *w = gguf_writer_new();
    gguf_writer_add_str(w, "general.architecture", "llama");
    if (general_name) gguf_writer_add_str(w, "general.name", general_name);
    gguf_writer_add_u32(w, "llama.block_count", (uint32_t)n_layer);
    gguf_writer_add_u32(w, "llama.embedding_length", 64);
    const char *tokens[] = {"a", "b", "c"};
    gguf_writer_add_str(w, "tokenizer.ggml.model", tokenizer);
    gguf_writer_add_str_array(w, "tokenizer.ggml.tokens", tokens, 3);
    add_random(w, "token_embd.weight", 64, 300);
    add_random(w, "rope_freqs.weight", 16, 1);
    char name[64];
    for (int l = 0; l < n_layer; l++) {
        snprintf(name, sizeof name, "blk.%d.attn_q.weight", l);
        add_random(w, name, 64, 64);
        snprintf(name, sizeof name, "blk.%d.ffn_up.weight", l);
        add_random(w, name, 64, 1024);
        snprintf(name, sizeof name, "blk.%d.attn_norm.weight", l);
        add_random(w, name, 64, 1);
    }
    add_random(w, "output_norm.weight", 64, 1);
    add_random(w, "output.weight", 64, 300);
    REQUIRE(gguf_writer_write_file(w, path) == 0);
    gguf_writer_free(w);
}

static void flip_byte(const char *path, long at)
{
    FILE *f = fopen(path, "r+b");
    REQUIRE(f);
    fseek(f, at, SEEK_SET);
    int c = fgetc(f);
    fseek(f, at, SEEK_SET);
    fputc(c ^ 1, f);
    fclose(f);
}

/* Where the data of the tensor named name starts in the file at path. */
static long tensor_at(const char *path, const char *name)
{
    char err[256];
    gguf_file *f = gguf_open(path, err, sizeof err);
    REQUIRE(f);
    const gguf_tensor *t = gguf_find_tensor(f, name);
    REQUIRE(t);
    long at = (long)((const uint8_t *)t->data - f->base);
    gguf_close(f);
    return at;
}

static int hash_of(const char *path, uint8_t out[WEIGHTS_HASH_BYTES])
{
    char err[512];
    weights_manifest *m = weights_manifest_compute(path, 2, NULL, NULL, err, sizeof err);
    if (!m) {
        fprintf(stderr, "  %s\n", err);
        return -1;
    }
    memcpy(out, m->model_hash, WEIGHTS_HASH_BYTES);
    weights_manifest_free(m);
    return 0;
}

/* ---- identity ------------------------------------------------------------------------*/

static void test_identity(void)
{
    const char *a = testlib_tmp_path("id-a.gguf"), *b = testlib_tmp_path("id-b.gguf"), *c = testlib_tmp_path("id-c.gguf");
    write_model(a, 3, 7, "first name", "gpt2");
    write_model(b, 3, 7, "another name", "gpt2");
    write_model(c, 3, 7, "first name", "llama");
    uint8_t ha[32], ha2[32], hb[32], hc[32], hd[32];
    REQUIRE(hash_of(a, ha) == 0);
    REQUIRE(hash_of(a, ha2) == 0);
    CHECK(!memcmp(ha, ha2, 32));          /* stable */
    REQUIRE(hash_of(b, hb) == 0);
    CHECK(!memcmp(ha, hb, 32));           /* general.name is description */
    REQUIRE(hash_of(c, hc) == 0);
    CHECK(memcmp(ha, hc, 32) != 0);       /* the tokenizer is part of the model */

    /* One bit of one tensor changes the hash. */
    flip_byte(b, tensor_at(b, "blk.1.ffn_up.weight") + 40000);
    REQUIRE(hash_of(b, hd) == 0);
    CHECK(memcmp(ha, hd, 32) != 0);

    /* Another chunk size names another model. */
    REQUIRE(weights_set_chunk_bytes(CHUNK * 2) == 0);
    REQUIRE(hash_of(a, hd) == 0);
    CHECK(memcmp(ha, hd, 32) != 0);
    REQUIRE(weights_set_chunk_bytes(CHUNK) == 0);
    CHECK(weights_set_chunk_bytes(3000) == -1);
    CHECK(weights_set_chunk_bytes(64u << 20) == -1);

    /* The manifest: roles, layers, chunks, and what a part holds. */
    char err[256];
    weights_manifest *m = weights_manifest_compute(a, 1, NULL, NULL, err, sizeof err);
    REQUIRE(m);
    CHECK_EQ_INT(m->n_layers, 3);
    CHECK_EQ_INT(m->n_tensors, 2 + 3 * 3 + 2);
    CHECK_EQ_INT(m->chunk_bytes, CHUNK);
    int roles[3] = {0};
    for (uint32_t i = 0; i < m->n_tensors; i++) roles[m->tensors[i].role]++;
    CHECK_EQ_INT(roles[WEIGHTS_ROLE_LAYER], 9);
    CHECK_EQ_INT(roles[WEIGHTS_ROLE_SHARED], 1);
    CHECK_EQ_INT(roles[WEIGHTS_ROLE_HEAD], 3);
    uint8_t wanted[32];
    CHECK_EQ_INT(weights_select(m, 1, 2, 0, wanted, err, sizeof err), 3 + 1);
    CHECK_EQ_INT(weights_select(m, 0, 3, 1, wanted, err, sizeof err), (int)m->n_tensors);
    CHECK_EQ_INT(weights_select(m, 2, 2, 1, wanted, err, sizeof err), 3 + 1);
    CHECK(weights_select(m, 2, 4, 0, wanted, err, sizeof err) == -1);
    CHECK(strstr(err, "3 layers") != NULL);
    CHECK(weights_select(m, 1, 1, 0, wanted, err, sizeof err) == -1);
    CHECK(weights_select(m, -1, 1, 0, wanted, err, sizeof err) == -1);

    /* A manifest survives its file form, and any change to it is caught. */
    fetch_file_key key = {.size = 1, .mtime_ns = 2, .inode = 3, .device = 4};
    strcpy(key.path, "/x/y.gguf");
    memset(wanted, 1, sizeof wanted);
    size_t len;
    uint8_t *file = fetch_manifest_file_encode(m, wanted, &key, &len);
    REQUIRE(file);
    fetch_file_key back;
    weights_manifest *m2 = fetch_manifest_file_decode(file, len, &back, err, sizeof err);
    REQUIRE(m2);
    CHECK(!memcmp(m2->model_hash, m->model_hash, 32));
    CHECK(store_keys_equal(&key, &back));
    weights_manifest_free(m2);
    file[len - 5] ^= 1; /* a chunk hash */
    CHECK(fetch_manifest_file_decode(file, len, &back, err, sizeof err) == NULL);
    CHECK(strstr(err, "do not match") != NULL);
    file[len - 5] ^= 1;
    CHECK(fetch_manifest_file_decode(file, len - 1, &back, err, sizeof err) == NULL);
    free(file);
    weights_manifest_free(m);

    char hex[WEIGHTS_HASH_HEX];
    uint8_t round[32];
    weights_hex(ha, hex);
    CHECK(weights_parse_hex(hex, round) == 0 && !memcmp(round, ha, 32));
    CHECK(weights_parse_hex("abc", round) == -1);
}

static void test_store_remembers(void)
{
    const char *home = testlib_tmp_path("remember-home");
    const char *model = testlib_tmp_path("remember.gguf");
    write_model(model, 3, 11, "x", "gpt2");
    char err[512];
    weights_store *ws = weights_store_new(base, NULL, home, err, sizeof err);
    REQUIRE(ws);
    uint8_t h1[32], h2[32], h3[32];
    REQUIRE(weights_store_add_file(ws, model, h1, err, sizeof err) == 0);
    REQUIRE(weights_store_add_file(ws, model, h2, err, sizeof err) == 0);
    CHECK(!memcmp(h1, h2, 32));
    weights_counters c;
    weights_get_counters(ws, &c);
    CHECK_EQ_INT(c.files_hashed, 1);
    CHECK(c.bytes_hashed > 900u << 10);
    CHECK(weights_store_find(ws, h1) != NULL);
    CHECK(weights_store_manifest(ws, h1) != NULL);
    weights_store_free(ws);

    /* A restart reads the remembered manifest. */
    ws = weights_store_new(base, NULL, home, err, sizeof err);
    REQUIRE(ws);
    REQUIRE(weights_store_add_file(ws, model, h2, err, sizeof err) == 0);
    weights_get_counters(ws, &c);
    CHECK_EQ_INT(c.files_hashed, 0);
    CHECK(!memcmp(h1, h2, 32));
    /* A changed file (same bytes, new mtime) is hashed again; the hash stays. */
    struct timespec times[2] = {{0, UTIME_NOW}, {12345, 0}};
    REQUIRE(utimensat(AT_FDCWD, model, times, 0) == 0);
    REQUIRE(weights_store_add_file(ws, model, h2, err, sizeof err) == 0);
    weights_get_counters(ws, &c);
    CHECK_EQ_INT(c.files_hashed, 1);
    CHECK(!memcmp(h1, h2, 32));
    /* A changed byte gives another model; the old hash is no longer here. */
    flip_byte(model, tensor_at(model, "output.weight") + 100);
    REQUIRE(weights_store_add_file(ws, model, h3, err, sizeof err) == 0);
    CHECK(memcmp(h1, h3, 32) != 0);
    CHECK(weights_store_find(ws, h1) == NULL);
    CHECK(weights_store_find(ws, h3) != NULL);
    CHECK(weights_store_add_file(ws, testlib_tmp_path("no-such.gguf"), h3, err, sizeof err) == -1);
    CHECK(strstr(err, "no-such.gguf") != NULL);
    weights_store_free(ws);
}

typedef struct {
    int done;
    uint8_t hash[32];
    char error[256];
} added_state;

static void on_added(void *user, const char *path, const uint8_t *hash, const char *error)
{
    added_state *st = user;
    st->done++;
    if (hash) memcpy(st->hash, hash, 32);
    if (error) snprintf(st->error, sizeof st->error, "%s", error);
}

static int added_two(void *arg) { return ((added_state *)arg)->done >= 2; }

static void test_store_async(void)
{
    const char *home = testlib_tmp_path("async-home");
    const char *dir = testlib_tmp_path("async-models");
    REQUIRE(mkdir(dir, 0700) == 0);
    char p1[700], p2[700];
    snprintf(p1, sizeof p1, "%s/one.gguf", dir);
    snprintf(p2, sizeof p2, "%s/two.gguf", dir);
    write_model(p1, 2, 21, NULL, "gpt2");
    write_model(p2, 2, 22, NULL, "gpt2");
    uint8_t h1[32];
    REQUIRE(hash_of(p1, h1) == 0);
    char err[256];
    weights_store *ws = weights_store_new(base, NULL, home, err, sizeof err);
    REQUIRE(ws);
    added_state st = {0};
    CHECK_EQ_INT(weights_store_add_dir(ws, dir, on_added, &st), 2);
    CHECK_EQ_INT(weights_store_add_dir(ws, testlib_tmp_path("no-such-dir"), on_added, &st), 0);
    CHECK(testnet_run_until(added_two, &st, WAIT_MS));
    CHECK(st.error[0] == '\0');
    CHECK(weights_store_find(ws, h1) != NULL);
    /* Freed with a hash queued: no callback afterwards. */
    added_state late = {0};
    REQUIRE(weights_store_add_file_async(ws, p2, on_added, &late, err, sizeof err) == 0);
    weights_store_free(ws);
    testnet_run_for(50);
    CHECK_EQ_INT(late.done, 0);
}

/* ---- fetching ---------------------------------------------------------------------------*/

typedef struct {
    int done;
    char path[1024];
    char error[512];
    uint64_t progress_done, progress_total;
    int progress_calls;
    int break_at_third;          /* stop the loop there, so the test can "crash" the store */
} fetch_state;

static void on_progress(void *user, uint64_t done, uint64_t total)
{
    fetch_state *st = user;
    st->progress_done = done;
    st->progress_total = total;
    st->progress_calls++;
    if (st->break_at_third && done >= total / 3) {
        st->break_at_third = 0;
        event_base_loopbreak(base);
    }
}

static void on_done(void *user, const char *path, const char *error)
{
    fetch_state *st = user;
    st->done++;
    if (path) snprintf(st->path, sizeof st->path, "%s", path);
    if (error) snprintf(st->error, sizeof st->error, "%s", error);
}

static const weights_fetch_callbacks callbacks = {on_progress, on_done};

static int fetch_done(void *arg) { return ((fetch_state *)arg)->done > 0; }

static weights_fetch *start_fetch(weights_store *ws, const uint8_t *hash, mesh *from, int first, int end,
                                  int head, fetch_state *st)
{
    char err[256];
    memset(st, 0, sizeof *st);
    weights_fetch *f = weights_fetch_start(ws, hash, mesh_node_id(from), first, end, head, &callbacks, st, err,
                                           sizeof err);
    if (!f) fprintf(stderr, "  weights_fetch_start: %s\n", err);
    return f;
}

static int part_matches(const char *part_path, const char *src_path, int first, int end, int head);

/* Fetches a part from `from` and waits: 1 when it completed without error
 * and holds exactly src's tensors of the part. */
static int fetch_and_check(weights_store *ws, const uint8_t *hash, mesh *from, const char *src, int first, int end,
                           int head, fetch_state *st)
{
    if (!start_fetch(ws, hash, from, first, end, head, st) || !testnet_run_until(fetch_done, st, WAIT_MS)) return 0;
    if (st->error[0]) fprintf(stderr, "  fetch [%d, %d)%s: %s\n", first, end, head ? "+head" : "", st->error);
    return !st->error[0] && part_matches(st->path, src, first, end, head);
}

/* The part at part_path holds exactly the tensors of src in [first, end)
 * (+ head), byte for byte, and src's metadata. */
static int part_matches(const char *part_path, const char *src_path, int first, int end, int head)
{
    char err[256];
    gguf_file *p = gguf_open(part_path, err, sizeof err), *s = gguf_open(src_path, err, sizeof err);
    if (!p || !s) {
        fprintf(stderr, "  gguf_open: %s\n", err);
        gguf_close(p);
        gguf_close(s);
        return 0;
    }
    int ok = p->n_kv == s->n_kv, expected = 0;
    for (uint64_t i = 0; i < s->n_tensors && ok; i++) {
        const gguf_tensor *t = &s->tensors[i];
        char name[300];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        int layer = -1;
        sscanf(name, "blk.%d.", &layer);
        int want = layer >= 0 ? layer >= first && layer < end
                              : !strcmp(name, "rope_freqs.weight") || head;
        const gguf_tensor *q = gguf_find_tensor(p, name);
        if (want != (q != NULL)) {
            fprintf(stderr, "  %s: %s in the part\n", name, q ? "unexpectedly" : "missing");
            ok = 0;
        }
        if (q && (q->nbytes != t->nbytes || memcmp(q->data, t->data, t->nbytes) != 0 ||
                  (uint64_t)((const uint8_t *)q->data - p->base) % p->alignment != 0)) {
            fprintf(stderr, "  %s differs from the source\n", name);
            ok = 0;
        }
        expected += want;
    }
    ok = ok && (int)p->n_tensors == expected;
    uint32_t blocks;
    ok = ok && gguf_get_u32(p, "llama.block_count", &blocks) == 0 && gguf_find(p, "tokenizer.ggml.tokens");
    gguf_close(p);
    gguf_close(s);
    return ok;
}

static uint64_t part_bytes(const weights_manifest *m, int first, int end, int head)
{
    uint8_t wanted[WEIGHTS_MAX_TENSORS > 4096 ? 4096 : WEIGHTS_MAX_TENSORS];
    char err[128];
    if (m->n_tensors > sizeof wanted || weights_select(m, first, end, head, wanted, err, sizeof err) < 0) return 0;
    uint64_t n = 0;
    for (uint32_t i = 0; i < m->n_tensors; i++) n += wanted[i] ? m->tensors[i].nbytes : 0;
    return n;
}

typedef struct {
    mesh *a, *b;
} pair;

typedef struct {
    pair p;
    weights_store *sa, *sb;
    const char *model;
    uint8_t hash[32];
} setup;

/* Meshes A (with the model) and B, connected, each with a store. */
static void setup_pair(setup *s, const char *tag, int n_layer)
{
    char name[64];
    memset(s, 0, sizeof *s);
    snprintf(name, sizeof name, "%s-a", tag);
    s->p.a = testnet_mesh(name, NULL, "host", NULL);
    REQUIRE(s->p.a);
    snprintf(name, sizeof name, "%s-b", tag);
    s->p.b = testnet_mesh(name, NULL, "host", mesh_token(s->p.a));
    REQUIRE(s->p.b);
    REQUIRE(testnet_connect(s->p.a, s->p.b, WAIT_MS));
    char err[512];
    snprintf(name, sizeof name, "%s-a", tag);
    s->sa = weights_store_new(base, s->p.a, testlib_tmp_path(name), err, sizeof err);
    snprintf(name, sizeof name, "%s-b", tag);
    s->sb = weights_store_new(base, s->p.b, testlib_tmp_path(name), err, sizeof err);
    REQUIRE(s->sa && s->sb);
    weights_test_set_retry(s->sb, 20, 4);
    snprintf(name, sizeof name, "%s.gguf", tag);
    s->model = testlib_tmp_path(name);
    write_model(s->model, n_layer, 99, "model", "gpt2");
    REQUIRE(weights_store_add_file(s->sa, s->model, s->hash, err, sizeof err) == 0);
}

static void teardown_pair(setup *s)
{
    weights_store_free(s->sb);
    weights_store_free(s->sa);
    if (s->p.b) mesh_free(s->p.b);
    if (s->p.a) mesh_free(s->p.a);
}

static int two_done(void *arg)
{
    fetch_state *st = arg;
    return st[0].done && st[1].done;
}

static void test_fetch_middle(void)
{
    setup s;
    setup_pair(&s, "mid", 6);
    const weights_manifest *m = weights_store_manifest(s.sa, s.hash);
    REQUIRE(m);

    /* Layers [2, 4) of 6, no head. */
    fetch_state st;
    REQUIRE(start_fetch(s.sb, s.hash, s.p.a, 2, 4, 0, &st));
    CHECK_EQ_INT(st.done, 0); /* never inside the call */
    weights_fetch_info info[4];
    CHECK_EQ_INT(weights_store_fetches(s.sb, info, 4), 1);
    CHECK_EQ_INT(info[0].first, 2);
    cJSON *status = cJSON_CreateObject();
    weights_store_status_json(s.sb, status);
    char *text = cJSON_PrintUnformatted(status);
    CHECK(strstr(text, "\"fetches\":[{\"model\"") != NULL);
    CHECK(strstr(text, "\"first\":2,\"end\":4,\"head\":false") != NULL);
    free(text);
    cJSON_Delete(status);
    status = cJSON_CreateObject();
    weights_store_status_json(s.sa, status);
    text = cJSON_PrintUnformatted(status);
    CHECK(strstr(text, "\"layers\":6") != NULL);
    free(text);
    cJSON_Delete(status);
    CHECK(testnet_run_until(fetch_done, &st, WAIT_MS));
    CHECK_EQ_STR(st.error, "");
    CHECK(part_matches(st.path, s.model, 2, 4, 0));
    uint64_t want = part_bytes(m, 2, 4, 0);
    CHECK(want > 2 * 16 * CHUNK);
    CHECK_EQ_INT(st.progress_total, want);
    CHECK_EQ_INT(st.progress_done, want);
    CHECK(st.progress_calls >= (int)(want / CHUNK));
    weights_counters ca, cb;
    weights_get_counters(s.sa, &ca);
    weights_get_counters(s.sb, &cb);
    CHECK_EQ_INT(cb.fetched_bytes, want);
    CHECK_EQ_INT(ca.served_bytes, want);
    CHECK_EQ_INT(ca.bad_frames + cb.bad_frames + cb.bad_chunks + cb.fetches_resumed, 0);
    CHECK_EQ_INT(weights_store_fetches(s.sb, info, 4), 0);

    /* Again: from the cache, on the next loop turn, without a stream. */
    mesh_counters before, after;
    mesh_get_counters(s.p.b, &before);
    char first_path[1024];
    snprintf(first_path, sizeof first_path, "%s", st.path);
    REQUIRE(start_fetch(s.sb, s.hash, s.p.a, 2, 4, 0, &st));
    CHECK_EQ_INT(st.done, 0);
    CHECK(testnet_run_until(fetch_done, &st, WAIT_MS));
    CHECK_EQ_STR(st.path, first_path);
    mesh_get_counters(s.p.b, &after);
    CHECK_EQ_INT(after.streams_opened, before.streams_opened);
    weights_get_counters(s.sb, &cb);
    CHECK_EQ_INT(cb.fetched_bytes, want);
    /* ... also after a restart of B's store. */
    weights_store_free(s.sb);
    char err[256];
    s.sb = weights_store_new(base, s.p.b, testlib_tmp_path("mid-b"), err, sizeof err);
    REQUIRE(s.sb);
    REQUIRE(start_fetch(s.sb, s.hash, s.p.a, 2, 4, 0, &st));
    CHECK(testnet_run_until(fetch_done, &st, WAIT_MS));
    CHECK_EQ_STR(st.path, first_path);
    weights_get_counters(s.sb, &cb);
    CHECK_EQ_INT(cb.fetched_bytes, 0);
    /* A cancelled cache answer calls nothing. */
    weights_fetch *f = start_fetch(s.sb, s.hash, s.p.a, 2, 4, 0, &st);
    REQUIRE(f);
    weights_fetch_cancel(f);
    testnet_run_for(30);
    CHECK_EQ_INT(st.done, 0);

    /* Two starts of one part share a transfer; the head comes along. */
    fetch_state two[2];
    REQUIRE(start_fetch(s.sb, s.hash, s.p.a, 4, 6, 1, &two[0]));
    REQUIRE(start_fetch(s.sb, s.hash, s.p.a, 4, 6, 1, &two[1]));
    CHECK_EQ_INT(weights_store_fetches(s.sb, info, 4), 1);
    CHECK(testnet_run_until(two_done, two, WAIT_MS));
    CHECK_EQ_STR(two[0].path, two[1].path);
    CHECK(part_matches(two[0].path, s.model, 4, 6, 1));
    uint64_t want2 = part_bytes(m, 4, 6, 1);
    weights_get_counters(s.sa, &ca);
    CHECK_EQ_INT(ca.served_bytes, want + want2);

    /* The head alone, and the whole model. */
    CHECK(fetch_and_check(s.sb, s.hash, s.p.a, s.model, 0, 0, 1, &st));
    CHECK(fetch_and_check(s.sb, s.hash, s.p.a, s.model, 0, 6, 1, &st));

    /* A cancelled fetch stops calling back. */
    f = start_fetch(s.sb, s.hash, s.p.a, 1, 2, 0, &st);
    REQUIRE(f);
    weights_fetch_cancel(f);
    testnet_run_for(100);
    CHECK_EQ_INT(st.done, 0);
    CHECK_EQ_INT(weights_store_fetches(s.sb, info, 4), 0);
    weights_get_counters(s.sb, &cb);
    CHECK_EQ_INT(cb.bad_frames + cb.bad_chunks, 0);
    teardown_pair(&s);
}

static int progressed(void *arg)
{
    fetch_state *st = arg;
    return st->done || (st->progress_total && st->progress_done >= st->progress_total / 3);
}

/* Starts a fetch that stops the loop a third of the way in. */
static weights_fetch *start_fetch_breaking(weights_store *ws, const uint8_t *hash, mesh *from, int first, int end,
                                           int head, fetch_state *st)
{
    weights_fetch *f = start_fetch(ws, hash, from, first, end, head, st);
    st->break_at_third = 1;
    return f;
}

static void test_fetch_resume(void)
{
    setup s;
    setup_pair(&s, "resume", 6);
    const weights_manifest *m = weights_store_manifest(s.sa, s.hash);
    REQUIRE(m);
    uint64_t want = part_bytes(m, 1, 5, 0);

    /* The source resets every stream after 7 chunks (a one-chunk window
     * makes each attempt's progress certain): each reset is retried and the
     * transfer completes, every chunk written once. */
    weights_test_abort_serving(s.sa, 7);
    weights_test_set_window(s.sb, CHUNK);
    fetch_state st;
    CHECK(fetch_and_check(s.sb, s.hash, s.p.a, s.model, 1, 3, 0, &st));
    weights_counters cb;
    weights_get_counters(s.sb, &cb);
    CHECK_EQ_INT(cb.fetched_bytes, part_bytes(m, 1, 3, 0));
    weights_test_abort_serving(s.sa, 0);

    /* A restart in the middle: B's store goes away a third of the way in,
     * a new one on the same home resumes with the missing chunks only. */
    REQUIRE(start_fetch_breaking(s.sb, s.hash, s.p.a, 1, 5, 0, &st));
    weights_test_set_window(s.sb, CHUNK);
    CHECK(testnet_run_until(progressed, &st, WAIT_MS));
    if (st.done) fprintf(stderr, "  finished early: %s\n", st.error[0] ? st.error : st.path);
    REQUIRE(st.done == 0);
    weights_store_free(s.sb);
    char part[1200], hex[WEIGHTS_HASH_HEX];
    weights_hex(s.hash, hex);
    snprintf(part, sizeof part, "%s/cache/parts/%s.1-5.gguf.part", testlib_tmp_path("resume-b"), hex);
    struct stat sb;
    REQUIRE(stat(part, &sb) == 0);
    /* Damage one chunk that arrived (the first byte of blk.1.ffn_up's data):
     * the resume must find it and fetch it again. */
    char err[256];
    gguf_file *pf = gguf_open(part, err, sizeof err);
    REQUIRE(pf);
    long damaged = (long)((const uint8_t *)gguf_find_tensor(pf, "blk.1.ffn_up.weight")->data - pf->base);
    gguf_close(pf);
    flip_byte(part, damaged);

    s.sb = weights_store_new(base, s.p.b, testlib_tmp_path("resume-b"), err, sizeof err);
    REQUIRE(s.sb);
    weights_test_set_retry(s.sb, 20, 4);
    CHECK(fetch_and_check(s.sb, s.hash, s.p.a, s.model, 1, 5, 0, &st));
    weights_get_counters(s.sb, &cb);
    CHECK_EQ_INT(cb.fetches_resumed, 1);
    CHECK(cb.fetched_bytes > 0);
    CHECK(cb.fetched_bytes < want * 3 / 4); /* a third or more was on disk */
    CHECK(cb.fetched_bytes + (want / 3 - CHUNK) <= want);
    CHECK(access(part, F_OK) != 0);         /* renamed to the final name */

    /* A complete part that changed on disk no longer answers from its
     * record: it is checked, and only its damaged chunk comes again. */
    flip_byte(st.path, tensor_at(st.path, "blk.3.attn_q.weight") + 10);
    weights_counters before;
    weights_get_counters(s.sb, &before);
    CHECK(fetch_and_check(s.sb, s.hash, s.p.a, s.model, 1, 5, 0, &st));
    weights_get_counters(s.sb, &cb);
    CHECK_EQ_INT(cb.cache_discarded, before.cache_discarded + 1);
    CHECK_EQ_INT(cb.fetches_resumed, before.fetches_resumed + 1);
    CHECK_EQ_INT(cb.fetched_bytes - before.fetched_bytes, CHUNK);

    /* Another process (another store) cannot take a part being fetched. */
    weights_store *other = weights_store_new(base, s.p.b, testlib_tmp_path("resume-b"), err, sizeof err);
    REQUIRE(other);
    fetch_state st2;
    REQUIRE(start_fetch(s.sb, s.hash, s.p.a, 0, 2, 0, &st));
    char err2[256];
    CHECK(weights_fetch_start(other, s.hash, mesh_node_id(s.p.a), 0, 2, 0, &callbacks, &st2, err2, sizeof err2) == NULL);
    CHECK(strstr(err2, "another process") != NULL);
    weights_store_free(other);
    CHECK(testnet_run_until(fetch_done, &st, WAIT_MS));
    CHECK_EQ_STR(st.error, "");

    /* The source goes away in the middle: retried, then a clear error. (A
     * one-chunk window: with more, the rest could be on its way already.) */
    weights_test_set_window(s.sb, CHUNK);
    REQUIRE(start_fetch_breaking(s.sb, s.hash, s.p.a, 2, 6, 1, &st));
    CHECK(testnet_run_until(progressed, &st, WAIT_MS));
    CHECK_EQ_INT(st.done, 0);
    weights_store_free(s.sa);
    s.sa = NULL;
    mesh_free(s.p.a);
    s.p.a = NULL;
    CHECK(testnet_run_until(fetch_done, &st, WAIT_MS));
    CHECK(st.path[0] == '\0');
    CHECK(strstr(st.error, "gave up after 4 attempts") != NULL);
    teardown_pair(&s);
}

static void test_fetch_corrupt(void)
{
    setup s;
    setup_pair(&s, "corrupt", 4);
    const weights_manifest *m = weights_store_manifest(s.sa, s.hash);
    REQUIRE(m);
    char hex[WEIGHTS_HASH_HEX], final[1200];
    weights_hex(s.hash, hex);
    snprintf(final, sizeof final, "%s/cache/parts/%s.0-4h.gguf", testlib_tmp_path("corrupt-b"), hex);

    /* Every third chunk damaged: caught, and after 4 the peer is given up on;
     * no file under the final name. */
    weights_test_corrupt_serving(s.sa, 3);
    fetch_state st;
    REQUIRE(start_fetch(s.sb, s.hash, s.p.a, 0, 4, 1, &st));
    CHECK(testnet_run_until(fetch_done, &st, WAIT_MS));
    CHECK(st.path[0] == '\0');
    CHECK(strstr(st.error, "do not match their hashes") != NULL);
    weights_counters cb;
    weights_get_counters(s.sb, &cb);
    CHECK_EQ_INT(cb.bad_chunks, FETCH_MAX_BAD_CHUNKS);
    CHECK(access(final, F_OK) != 0);

    /* A rare bad chunk is fetched again and the part completes, correct.
     * The count restarts so that the first chunk served now is a bad one
     * (how many the first try served depends on timing). */
    weights_test_corrupt_serving(s.sa, 40);
    s.sa->test_chunks_served = 39;
    CHECK(fetch_and_check(s.sb, s.hash, s.p.a, s.model, 0, 4, 1, &st));
    weights_counters after;
    weights_get_counters(s.sb, &after);
    CHECK(after.bad_chunks > cb.bad_chunks);
    CHECK_EQ_INT(after.fetches_resumed, 1); /* the good chunks of the first try were kept */
    teardown_pair(&s);
}

/* A peer whose FETCH side answers garbage. */
static int garbage_mode;
static void garbage_frame(void *user, mesh_stream *s, const uint8_t *p, size_t len)
{
    static const uint8_t junk[] = {0x77, 1, 2, 3};
    static const uint8_t short_head[] = {FETCH_HEAD, 1, 2};
    if (garbage_mode == 0) mesh_stream_send(s, junk, sizeof junk);
    else mesh_stream_send(s, short_head, sizeof short_head);
}
static void garbage_fin(void *user, mesh_stream *s) { mesh_stream_finish(s); }
static void garbage_close(void *user, mesh_stream *s, const char *error) {}
static const mesh_stream_handlers garbage_handlers = {garbage_frame, garbage_fin, garbage_close};
static void garbage_accept(void *ctx, mesh_stream *s) { mesh_stream_set_handlers(s, &garbage_handlers, NULL); }

typedef struct {
    int closed;
    char error[200];
    int frames;
    uint8_t first_kind;
    uint8_t code;
} raw_state;

static void raw_frame(void *user, mesh_stream *s, const uint8_t *p, size_t len)
{
    raw_state *st = user;
    if (!st->frames++ && len) {
        st->first_kind = p[0];
        if (len > 1) st->code = p[1];
    }
}
static void raw_fin(void *user, mesh_stream *s) {}
static void raw_close(void *user, mesh_stream *s, const char *error)
{
    raw_state *st = user;
    st->closed = 1;
    if (error) snprintf(st->error, sizeof st->error, "%s", error);
}
static const mesh_stream_handlers raw_handlers = {raw_frame, raw_fin, raw_close};
static int raw_closed(void *arg) { return ((raw_state *)arg)->closed; }

/* Opens a FETCH stream from m to peer, sends the frames, waits for the end. */
static void raw_exchange(mesh *m, const uint8_t *peer, const uint8_t *const *frames, const size_t *lens, int n,
                         raw_state *st)
{
    char err[256];
    memset(st, 0, sizeof *st);
    mesh_stream *s = mesh_stream_open(m, peer, MESH_STREAM_FETCH, &raw_handlers, st, err, sizeof err);
    REQUIRE(s);
    for (int i = 0; i < n; i++) CHECK(mesh_stream_send(s, frames[i], lens[i]) == 0);
    mesh_stream_finish(s);
    CHECK(testnet_run_until(raw_closed, st, WAIT_MS));
}

static void test_fetch_errors(void)
{
    setup s;
    setup_pair(&s, "errors", 4);
    fetch_state st;
    char err[256];

    /* Refusals: a model the peer does not have, layers it does not have. */
    uint8_t unknown[32];
    memset(unknown, 0x5a, sizeof unknown);
    REQUIRE(start_fetch(s.sb, unknown, s.p.a, 0, 2, 0, &st));
    CHECK(testnet_run_until(fetch_done, &st, WAIT_MS));
    CHECK(strstr(st.error, "no copy of model 5a5a") != NULL);
    REQUIRE(start_fetch(s.sb, s.hash, s.p.a, 3, 9, 0, &st));
    CHECK(testnet_run_until(fetch_done, &st, WAIT_MS));
    CHECK(strstr(st.error, "not a part of a model of 4 layers") != NULL);
    CHECK(weights_fetch_start(s.sb, s.hash, mesh_node_id(s.p.a), 2, 1, 0, &callbacks, &st, err, sizeof err) == NULL);
    CHECK(strstr(err, "not a part") != NULL);
    CHECK(weights_fetch_start(s.sb, s.hash, mesh_node_id(s.p.a), 2, 2, 0, &callbacks, &st, err, sizeof err) == NULL);
    weights_counters ca;
    weights_get_counters(s.sa, &ca);
    CHECK_EQ_INT(ca.bad_frames, 0); /* refusals are answers, not protocol errors */

    /* A requester breaking the protocol: reset with code 2, counted. */
    static const uint8_t junk[] = {0x33, 0};
    uint8_t open[FETCH_OPEN_BYTES], get_far[FETCH_GET_BYTES], get[FETCH_GET_BYTES];
    fetch_open_encode(open, s.hash, 0, 1, FETCH_FLAG_NO_MANIFEST);
    fetch_get_encode(get_far, 0, 0);      /* token_embd: not in layers [0, 1) */
    fetch_get_encode(get, 2, 0);          /* blk.0.attn_q */
    const uint8_t *f1[] = {junk};
    size_t l1[] = {sizeof junk};
    raw_state rs;
    raw_exchange(s.p.b, mesh_node_id(s.p.a), f1, l1, 1, &rs);
    CHECK(rs.error[0] != '\0');
    const uint8_t *f2[] = {get};
    size_t l2[] = {sizeof get};
    raw_exchange(s.p.b, mesh_node_id(s.p.a), f2, l2, 1, &rs);   /* GET before OPEN */
    CHECK(rs.error[0] != '\0');
    const uint8_t *f3[] = {open, get_far};
    size_t l3[] = {sizeof open, sizeof get_far};
    raw_exchange(s.p.b, mesh_node_id(s.p.a), f3, l3, 2, &rs);   /* outside the part */
    CHECK(rs.error[0] != '\0');
    weights_get_counters(s.sa, &ca);
    CHECK_EQ_INT(ca.bad_frames, 3);
    mesh_counters mc;
    mesh_get_counters(s.p.a, &mc);
    CHECK_EQ_INT(mc.bad_frames, 3);
    /* A good exchange by hand, for contrast: OPEN, one GET, FIN. */
    const uint8_t *f4[] = {open, get};
    size_t l4[] = {sizeof open, sizeof get};
    raw_exchange(s.p.b, mesh_node_id(s.p.a), f4, l4, 2, &rs);
    CHECK_EQ_STR(rs.error, "");
    CHECK_EQ_INT(rs.frames, 2); /* READY, DATA */
    CHECK_EQ_INT(rs.first_kind, FETCH_READY);

    /* A source breaking the protocol: the requester resets, counts, retries,
     * then gives up saying why. */
    weights_store_free(s.sa);
    s.sa = NULL;
    mesh_register_stream_type(s.p.a, MESH_STREAM_FETCH, garbage_accept, NULL);
    for (garbage_mode = 0; garbage_mode < 2; garbage_mode++) {
        weights_counters before, after;
        weights_get_counters(s.sb, &before);
        REQUIRE(start_fetch(s.sb, s.hash, s.p.a, 0, 1, 0, &st));
        CHECK(testnet_run_until(fetch_done, &st, WAIT_MS));
        CHECK(strstr(st.error, "malformed answer") != NULL);
        weights_get_counters(s.sb, &after);
        CHECK_EQ_INT(after.bad_frames - before.bad_frames, 4);
    }
    teardown_pair(&s);
}

/* Holdings: what a node's record says it can serve. */
static void test_holdings_wire(void)
{
    fetch_holding in[3] = {{.first = 0, .end = 24, .flags = FETCH_HOLD_HEAD | FETCH_HOLD_FULL},
                           {.first = 12, .end = 24, .flags = 0},
                           {.first = 0, .end = 0, .flags = FETCH_HOLD_HEAD}};
    memset(in[0].hash, 1, WEIGHTS_HASH_BYTES);
    memset(in[1].hash, 2, WEIGHTS_HASH_BYTES);
    memset(in[2].hash, 2, WEIGHTS_HASH_BYTES);
    uint8_t buf[MESH_MAX_HOLDINGS];
    size_t len = fetch_holdings_encode(in, 3, buf, sizeof buf);
    CHECK_EQ_INT(len, 2 + 3 * FETCH_HOLDING_BYTES);
    CHECK_EQ_INT(fetch_holdings_encode(in, 3, buf, len - 1), 0);
    fetch_holding out[FETCH_MAX_HOLDINGS];
    char err[160];
    CHECK_EQ_INT(fetch_holdings_decode(buf, len, out, FETCH_MAX_HOLDINGS, err, sizeof err), 3);
    for (int i = 0; i < 3; i++)
        CHECK(!memcmp(out[i].hash, in[i].hash, WEIGHTS_HASH_BYTES) && out[i].first == in[i].first &&
              out[i].end == in[i].end && out[i].flags == in[i].flags);
    CHECK_EQ_INT(fetch_holdings_decode(buf, len, out, 1, err, sizeof err), 1);
    CHECK_EQ_INT(fetch_holdings_decode(buf, 0, out, 4, err, sizeof err), 0);
    /* Covering: same model, range inside, head only when held. */
    CHECK(fetch_holding_covers(&out[1], in[1].hash, 12, 24, 0));
    CHECK(fetch_holding_covers(&out[1], in[1].hash, 13, 20, 0));
    CHECK(!fetch_holding_covers(&out[1], in[1].hash, 11, 20, 0));
    CHECK(!fetch_holding_covers(&out[1], in[1].hash, 13, 20, 1));
    CHECK(!fetch_holding_covers(&out[1], in[0].hash, 13, 20, 0));
    CHECK(fetch_holding_covers(&out[0], in[0].hash, 0, 0, 1));
    /* Malformed: refused with a message. */
    uint8_t bad[sizeof buf];
    memcpy(bad, buf, len);
    bad[0] = 2;
    CHECK_EQ_INT(fetch_holdings_decode(bad, len, out, 4, err, sizeof err), -1);
    CHECK(strstr(err, "format") != NULL);
    CHECK_EQ_INT(fetch_holdings_decode(buf, len - 1, out, 4, err, sizeof err), -1);
    CHECK_EQ_INT(fetch_holdings_decode(buf, 1, out, 4, err, sizeof err), -1);
    memcpy(bad, buf, len);
    bad[1] = FETCH_MAX_HOLDINGS + 1;
    CHECK_EQ_INT(fetch_holdings_decode(bad, len, out, 4, err, sizeof err), -1);
    memcpy(bad, buf, len);
    bad[2 + FETCH_HOLDING_BYTES + 40] = 0x04; /* unknown flag */
    CHECK_EQ_INT(fetch_holdings_decode(bad, len, out, 4, err, sizeof err), -1);
    CHECK(strstr(err, "flags") != NULL);
    memcpy(bad, buf, len);
    bad[2 + FETCH_HOLDING_BYTES + 35] = 30; /* first 30 > end 24 */
    CHECK_EQ_INT(fetch_holdings_decode(bad, len, out, 4, err, sizeof err), -1);
    memcpy(bad, buf, len);
    bad[2 + 2 * FETCH_HOLDING_BYTES + 40] = 0; /* no layer, no head */
    CHECK_EQ_INT(fetch_holdings_decode(bad, len, out, 4, err, sizeof err), -1);
}

typedef struct {
    mesh *m;
    const uint8_t *peer, *hash;
    int first, end, head, want; /* want: covered (1) or not (0) */
} holds_wait;

static int holds(void *arg)
{
    holds_wait *w = arg;
    uint8_t buf[MESH_MAX_HOLDINGS];
    fetch_holding h[FETCH_MAX_HOLDINGS];
    char err[160];
    int len = mesh_node_holdings(w->m, w->peer, buf, sizeof buf);
    int n = len > 0 ? fetch_holdings_decode(buf, (size_t)len, h, FETCH_MAX_HOLDINGS, err, sizeof err) : 0;
    int covered = 0;
    for (int i = 0; i < n; i++) covered |= fetch_holding_covers(&h[i], w->hash, w->first, w->end, w->head);
    return covered == w->want;
}

/* A node that holds only a part serves it: C fetches from B's cached part
 * (a sub-range of it), and the peer it names (A, with the whole file) is
 * asked only for what B does not hold, or when B cannot serve after all. */
static void test_fetch_from_part(void)
{
    setup s;
    setup_pair(&s, "held", 6);
    const weights_manifest *m = weights_store_manifest(s.sa, s.hash);
    REQUIRE(m);
    fetch_state st;
    CHECK(fetch_and_check(s.sb, s.hash, s.p.a, s.model, 2, 5, 0, &st));
    char b_part[1024];
    snprintf(b_part, sizeof b_part, "%s", st.path);
    mesh *c = testnet_mesh("held-c", NULL, "host", mesh_token(s.p.a));
    REQUIRE(c);
    REQUIRE(testnet_connect(c, s.p.a, WAIT_MS) && testnet_connect(c, s.p.b, WAIT_MS));
    char err[256];
    weights_store *sc = weights_store_new(base, c, testlib_tmp_path("held-c"), err, sizeof err);
    REQUIRE(sc);
    weights_test_set_retry(sc, 20, 4);
    /* C learns from B's record that B holds [2, 5) without the head, and from
     * A's that A holds everything. */
    holds_wait w = {c, mesh_node_id(s.p.b), s.hash, 2, 5, 0, 1};
    CHECK(testnet_run_until(holds, &w, WAIT_MS));
    w = (holds_wait){c, mesh_node_id(s.p.a), s.hash, 0, 6, 1, 1};
    CHECK(testnet_run_until(holds, &w, WAIT_MS));
    w = (holds_wait){c, mesh_node_id(s.p.b), s.hash, 2, 5, 1, 0};
    CHECK(holds(&w));

    /* [3, 5), naming A: B is asked (it holds it), and A, the peer named,
     * too: both serve chunks, each chunk is written once, and C's tally
     * says who sent what. */
    weights_counters ca0, cb0, ca, cb, cc0, cc1;
    weights_get_counters(s.sa, &ca0);
    weights_get_counters(s.sb, &cb0);
    weights_get_counters(sc, &cc0);
    CHECK(fetch_and_check(sc, s.hash, s.p.a, s.model, 3, 5, 0, &st));
    weights_get_counters(s.sa, &ca);
    weights_get_counters(s.sb, &cb);
    weights_get_counters(sc, &cc1);
    CHECK(ca.served_bytes > ca0.served_bytes);
    CHECK(cb.served_bytes > cb0.served_bytes);
    CHECK(ca.served_bytes - ca0.served_bytes + cb.served_bytes - cb0.served_bytes >= part_bytes(m, 3, 5, 0));
    CHECK_EQ_INT(cc1.fetched_bytes - cc0.fetched_bytes, part_bytes(m, 3, 5, 0));
    weights_source_bytes from[4];
    int nf = weights_store_fetched_from(sc, from, 4);
    CHECK_EQ_INT(nf, 2);
    CHECK_EQ_INT(from[0].bytes + from[1].bytes, part_bytes(m, 3, 5, 0));
    CHECK(from[0].bytes > 0 && from[1].bytes > 0);
    /* With the head, B does not hold it: A serves. */
    weights_get_counters(s.sa, &ca0);
    CHECK(fetch_and_check(sc, s.hash, s.p.a, s.model, 3, 5, 1, &st));
    weights_get_counters(s.sa, &ca);
    CHECK_EQ_INT(ca.served_bytes - ca0.served_bytes, part_bytes(m, 3, 5, 1));
    /* Naming B for what only A holds: A, which says it holds it, serves. */
    CHECK(fetch_and_check(sc, s.hash, s.p.b, s.model, 0, 2, 0, &st));

    /* B's part disappears after B said it holds it: B refuses, A serves,
     * and B stops saying it holds it. */
    weights_get_counters(s.sa, &ca0);
    CHECK(unlink(b_part) == 0);
    CHECK(fetch_and_check(sc, s.hash, s.p.a, s.model, 2, 5, 0, &st));
    weights_get_counters(s.sa, &ca);
    CHECK_EQ_INT(ca.served_bytes - ca0.served_bytes, part_bytes(m, 2, 5, 0));
    w = (holds_wait){c, mesh_node_id(s.p.b), s.hash, 2, 5, 0, 0};
    CHECK(testnet_run_until(holds, &w, WAIT_MS));

    /* A store that starts over a home with a part serves it (the scan). */
    weights_store_free(sc);
    sc = weights_store_new(base, c, testlib_tmp_path("held-c"), err, sizeof err);
    REQUIRE(sc);
    cJSON *status = cJSON_CreateObject();
    weights_store_status_json(sc, status);
    char *text = cJSON_PrintUnformatted(status);
    CHECK(strstr(text, "\"first\":2,\"end\":5,\"head\":false") != NULL);
    CHECK(strstr(text, "\"first\":3,\"end\":5,\"head\":true") != NULL);
    free(text);
    cJSON_Delete(status);
    w = (holds_wait){s.p.a, mesh_node_id(c), s.hash, 2, 5, 0, 1};
    CHECK(testnet_run_until(holds, &w, WAIT_MS));

    weights_counters cc;
    weights_get_counters(sc, &cc);
    CHECK_EQ_INT(cc.bad_chunks + cc.bad_frames, 0);
    weights_store_free(sc);
    mesh_free(c);
    teardown_pair(&s);
}

/* One fetch from two holders at once, one of which vanishes halfway (its
 * mesh freed, as a process killed): the other takes its chunks, the part
 * is complete and byte for byte the source's, and every chunk was written
 * once. A slow holder (a pause after each chunk) gets fewer chunks than a
 * fast one but some. */
static void test_fetch_two_sources(void)
{
    setup s;
    setup_pair(&s, "two", 6);
    const weights_manifest *m = weights_store_manifest(s.sa, s.hash);
    REQUIRE(m);
    fetch_state st;
    CHECK(fetch_and_check(s.sb, s.hash, s.p.a, s.model, 0, 6, 1, &st)); /* B holds everything too */
    mesh *c = testnet_mesh("two-c", NULL, "host", mesh_token(s.p.a));
    REQUIRE(c);
    REQUIRE(testnet_connect(c, s.p.a, WAIT_MS) && testnet_connect(c, s.p.b, WAIT_MS));
    char err[256];
    weights_store *sc = weights_store_new(base, c, testlib_tmp_path("two-c"), err, sizeof err);
    REQUIRE(sc);
    weights_test_set_retry(sc, 20, 4);
    holds_wait w = {c, mesh_node_id(s.p.b), s.hash, 0, 6, 1, 1};
    CHECK(testnet_run_until(holds, &w, WAIT_MS));

    /* A slow (10 ms per chunk), B not: both serve, B more. (A window of 4
     * chunks per stream: with the default, one stream could ask for the
     * whole of this small part before the other opens.) */
    weights_test_set_window(sc, 4 * CHUNK);
    uint64_t want = part_bytes(m, 1, 3, 0);
    weights_counters ca0, cb0, ca, cb;
    weights_get_counters(s.sa, &ca0);
    weights_get_counters(s.sb, &cb0);
    s.sa->test_chunk_delay_ms = 10;
    CHECK(fetch_and_check(sc, s.hash, s.p.a, s.model, 1, 3, 0, &st));
    s.sa->test_chunk_delay_ms = 0;
    weights_get_counters(s.sa, &ca);
    weights_get_counters(s.sb, &cb);
    CHECK(ca.served_bytes > ca0.served_bytes);
    CHECK(cb.served_bytes - cb0.served_bytes > ca.served_bytes - ca0.served_bytes);
    weights_counters cc;
    weights_get_counters(sc, &cc);
    CHECK_EQ_INT(cc.fetched_bytes, want);
    weights_source_bytes from[4];
    int nf = weights_store_fetched_from(sc, from, 4);
    CHECK_EQ_INT(nf, 2);
    for (int i = 0; i < nf; i++) CHECK(from[i].bytes >= CHUNK);

    /* A stops answering after its first chunk (a pause of a minute): the
     * chunks it was asked for go to B after FETCH_ENDGAME_MS (the endgame),
     * and the fetch ends in seconds, not when A wakes up. */
    weights_test_set_window(sc, 8 * CHUNK);
    s.sa->test_chunk_delay_ms = 60000;
    weights_counters cc0;
    weights_get_counters(sc, &cc0);
    uint64_t t0 = clock_ms();
    CHECK(fetch_and_check(sc, s.hash, s.p.a, s.model, 3, 5, 0, &st));
    uint64_t took = clock_ms() - t0;
    s.sa->test_chunk_delay_ms = 0;
    CHECK(took < 10000);
    weights_counters cc1;
    weights_get_counters(sc, &cc1);
    CHECK_EQ_INT(cc1.fetched_bytes - cc0.fetched_bytes, part_bytes(m, 3, 5, 0));

    /* B goes away a third of the way in, with chunks asked of it: A,
     * slow enough that B has its share by then, does the rest. */
    s.sa->test_chunk_delay_ms = 5;
    s.sb->test_chunk_delay_ms = 5;
    REQUIRE(start_fetch_breaking(sc, s.hash, s.p.a, 2, 6, 1, &st));
    CHECK(testnet_run_until(progressed, &st, WAIT_MS));
    REQUIRE(st.done == 0);
    nf = weights_store_fetched_from(sc, from, 4);
    uint64_t from_b = 0;
    for (int i = 0; i < nf; i++)
        if (!memcmp(from[i].peer, mesh_node_id(s.p.b), MESH_ID_BYTES)) from_b = from[i].bytes;
    weights_store_free(s.sb);
    s.sb = NULL;
    mesh_free(s.p.b);
    s.p.b = NULL;
    CHECK(testnet_run_until(fetch_done, &st, WAIT_MS * 2));
    CHECK_EQ_STR(st.error, "");
    CHECK(part_matches(st.path, s.model, 2, 6, 1));
    weights_counters cc2;
    weights_get_counters(sc, &cc2);
    CHECK_EQ_INT(cc2.fetched_bytes - cc1.fetched_bytes, part_bytes(m, 2, 6, 1));
    CHECK_EQ_INT(cc2.bad_chunks, 0);
    CHECK(from_b > 0); /* B had served its share before it went */
    s.sa->test_chunk_delay_ms = 0;
    weights_store_free(sc);
    mesh_free(c);
    teardown_pair(&s);
}

/* ---- whole files from several holders (peer_file) ---------------------------------------------*/

typedef struct {
    peer_file *pf;
    uint8_t *buf;
    size_t cap, got;
    long last;
    char err[256];
    atomic_int done;
    atomic_int first_read;    /* the reader has its first MiB */
} file_reader;

static void *reader_main(void *arg)
{
    file_reader *r = arg;
    for (;;) {
        long n = peer_file_read(r->pf, r->buf + r->got, r->cap - r->got > 65536 ? 65536 : r->cap - r->got, NULL,
                                r->err, sizeof r->err);
        r->last = n;
        if (n <= 0) break;
        r->got += (size_t)n;
        if (r->got >= (1u << 20)) atomic_store(&r->first_read, 1);
    }
    peer_file_close(r->pf);
    atomic_store(&r->done, 1);
    return NULL;
}

static int reader_done(void *arg) { return atomic_load(&((file_reader *)arg)->done); }
static int reader_started(void *arg) { return atomic_load(&((file_reader *)arg)->first_read); }

/* A file held by A and B is read through one peer_file from both: every
 * byte in order, both served some. Then again with B gone (its mesh freed,
 * as a process killed) once the reader has its first MiB and B has pieces
 * out: A serves the rest, the bytes are still the file's. */
static void test_peer_file_two_holders(void)
{
    setup s;
    setup_pair(&s, "pf", 24); /* ~6 MiB: several 1 MiB pieces */
    FILE *f = fopen(s.model, "rb");
    REQUIRE(f);
    fseek(f, 0, SEEK_END);
    size_t size = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *want = malloc(size);
    REQUIRE(want && fread(want, 1, size, f) == size);
    fclose(f);
    REQUIRE(size > 3 * FETCH_FILE_PIECE);
    weights_held_file held = {.size = size};
    weights_sha256(want, size, held.sha256);
    snprintf(held.ref, sizeof held.ref, "Org/repo/pf.gguf");
    snprintf(held.path, sizeof held.path, "%s", s.model);
    weights_store_set_held(s.sa, &held, 1);
    weights_store_set_held(s.sb, &held, 1);
    mesh *c = testnet_mesh("pf-c", NULL, "host", mesh_token(s.p.a));
    REQUIRE(c);
    REQUIRE(testnet_connect(c, s.p.a, WAIT_MS) && testnet_connect(c, s.p.b, WAIT_MS));
    uint8_t peers[2][MESH_ID_BYTES];
    memcpy(peers[0], mesh_node_id(s.p.a), MESH_ID_BYTES);
    memcpy(peers[1], mesh_node_id(s.p.b), MESH_ID_BYTES);

    for (int round = 0; round < 2; round++) {
        weights_counters a0, b0, a1, b1;
        weights_get_counters(s.sa, &a0);
        weights_get_counters(s.sb, &b0);
        /* A pause after each piece, so that both get pieces to serve, and
         * in the second round B still has some out when it goes. */
        s.sa->test_file_delay_ms = s.sb->test_file_delay_ms = round ? 200 : 20;
        file_reader r = {.cap = size, .buf = calloc(1, size)};
        r.pf = peer_file_open(base, c, (const uint8_t(*)[MESH_ID_BYTES])peers, 2, held.sha256, size, 0);
        REQUIRE(r.pf && r.buf);
        pthread_t th;
        REQUIRE(pthread_create(&th, NULL, reader_main, &r) == 0);
        if (round == 1) { /* B vanishes with pieces asked of it */
            CHECK(testnet_run_until(reader_started, &r, WAIT_MS));
            weights_get_counters(s.sb, &b1);
            CHECK(b1.file_bytes_served > b0.file_bytes_served);
            weights_store_free(s.sb);
            s.sb = NULL;
            mesh_free(s.p.b);
            s.p.b = NULL;
        }
        CHECK(testnet_run_until(reader_done, &r, WAIT_MS * 3));
        pthread_join(th, NULL);
        if (r.last < 0) fprintf(stderr, "  peer_file_read: %s\n", r.err);
        CHECK_EQ_INT(r.last, 0);
        CHECK_EQ_INT(r.got, size);
        CHECK(memcmp(r.buf, want, size) == 0);
        weights_get_counters(s.sa, &a1);
        CHECK(a1.file_bytes_served > a0.file_bytes_served);
        if (round == 0) {
            weights_get_counters(s.sb, &b1);
            CHECK(b1.file_bytes_served > b0.file_bytes_served);
        }
        s.sa->test_file_delay_ms = 0;
        if (s.sb) s.sb->test_file_delay_ms = 0;
        free(r.buf);
        testnet_run_for(50); /* the loop lets the streams go */
    }
    free(want);
    mesh_free(c);
    teardown_pair(&s);
}

int main(void)
{
    const char *level = getenv("LLMESH_TEST_LOG");
    log_set_level(LOG_WARN);
    if (level && log_parse_level(level) >= 0) log_set_level((log_level)log_parse_level(level));
    base = testnet_loop();
    if (weights_set_chunk_bytes(CHUNK) != 0) return 1;
    RUN(test_identity);
    RUN(test_store_remembers);
    RUN(test_store_async);
    RUN(test_fetch_middle);
    RUN(test_fetch_resume);
    RUN(test_fetch_corrupt);
    RUN(test_fetch_errors);
    RUN(test_holdings_wire);
    RUN(test_fetch_from_part);
    RUN(test_fetch_two_sources);
    RUN(test_peer_file_two_holders);
    testnet_loop_free();
    return testlib_finish();
}
