/* fetch_corpus.c: writes the seed corpus of tests/fuzz/fuzz_fetch.c.
 *
 *   fetch_corpus DIR
 *
 * Seeds are made with the real encoders from a tiny synthetic llama (4 KiB
 * chunks, so several tensors have several chunk hashes), in the input
 * format fuzz_fetch.c reads: a mode byte, then 3-byte-length frames (modes 0
 * and 1), a whole manifest file (mode 2) or a record's holdings field
 * (mode 3). Valid exchanges, and a few
 * broken ones so that each decoder's error paths start covered.
 * Deterministic: same program, same bytes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf_writer.h"
#include "models/fetch_wire.h"
#include "models/weights.h"

typedef struct {
    uint8_t *p;
    size_t len, cap;
} buf;

static void put(buf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2;
        b->p = realloc(b->p, b->cap);
        if (!b->p) exit(1);
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void frame(buf *b, const void *p, size_t n)
{
    uint8_t h[3] = {(uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
    put(b, h, 3);
    put(b, p, n);
}

static void save(const char *dir, const char *name, const buf *b)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(b->p, 1, b->len, f) != b->len || fclose(f) != 0) {
        fprintf(stderr, "fetch_corpus: cannot write %s\n", path);
        exit(1);
    }
}

static buf start(uint8_t mode)
{
    buf b = {0};
    put(&b, &mode, 1);
    return b;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: fetch_corpus DIR\n");
        return 2;
    }
    const char *dir = argv[1];
    char model[4096], err[512];
    snprintf(model, sizeof model, "%s/.fetch-corpus-model.gguf", dir);
    if (gguf_writer_tiny_llama(model, 32, 3, 4, 2, 64, 260, GGML_TYPE_F32, 5) != 0) return 1;
    weights_set_chunk_bytes(4096);
    weights_manifest *m = weights_manifest_compute(model, 1, NULL, NULL, err, sizeof err);
    remove(model);
    if (!m) {
        fprintf(stderr, "fetch_corpus: %s\n", err);
        return 1;
    }
    uint8_t *wanted = malloc(m->n_tensors);
    if (weights_select(m, 1, 3, 1, wanted, err, sizeof err) < 0) return 1;

    /* Requests. */
    uint8_t open[FETCH_OPEN_BYTES], get[FETCH_GET_BYTES];
    buf b = start(0);
    fetch_open_encode(open, m->model_hash, 1, 3, FETCH_FLAG_HEAD);
    frame(&b, open, sizeof open);
    fetch_get_encode(get, 2, 0);
    frame(&b, get, sizeof get);
    fetch_get_encode(get, 7, 1);
    frame(&b, get, sizeof get);
    save(dir, "req-open-get", &b);
    b.len = 1;
    open[41] = 0x80; /* unknown flag */
    frame(&b, open, sizeof open);
    frame(&b, open, 10);
    frame(&b, "\x33", 1);
    frame(&b, "", 0);
    save(dir, "req-bad", &b);
    /* Whole files by SHA-256: FILE_OPEN, FILE_GETs (one past the piece bound). */
    uint8_t fopen_[FETCH_FILE_OPEN_BYTES], fget[FETCH_FILE_GET_BYTES];
    b.len = 1;
    fetch_file_open_encode(fopen_, m->model_hash);
    frame(&b, fopen_, sizeof fopen_);
    fetch_file_get_encode(fget, 0, FETCH_FILE_PIECE);
    frame(&b, fget, sizeof fget);
    fetch_file_get_encode(fget, FETCH_FILE_PIECE, 4096);
    frame(&b, fget, sizeof fget);
    fetch_file_get_encode(fget, 0, FETCH_FILE_PIECE + 1);
    frame(&b, fget, sizeof fget);
    save(dir, "req-file", &b);

    /* Answers: a whole exchange (manifest with the chunk hashes of the part,
     * READY, one DATA, an ERROR). */
    uint8_t *f = malloc(FETCH_FRAME_BUF);
    fetch_manifest_writer w;
    b.len = 0;
    b = start(1);
    fetch_manifest_writer_init(&w, m, wanted);
    size_t n, frames = 0;
    while ((n = fetch_manifest_writer_next(&w, f, FETCH_FRAME_BUF)) > 0) {
        frame(&b, f, n);
        frames++;
    }
    size_t manifest_end = b.len;
    uint8_t ready = FETCH_READY;
    frame(&b, &ready, 1);
    fetch_data_head_encode(f, 2, 0);
    memset(f + FETCH_DATA_HEAD, 0x42, 100);
    frame(&b, f, FETCH_DATA_HEAD + 100);
    n = fetch_error_encode(f, FETCH_ERR_BAD_RANGE, "layers [3, 9) are not a part of a model of 3 layers");
    frame(&b, f, n);
    save(dir, "ans-exchange", &b);
    b.len = manifest_end - 40; /* cut inside the last frame */
    save(dir, "ans-truncated", &b);
    /* The same manifest with no chunk hashes (a requester holding one). */
    b.len = 1;
    fetch_manifest_writer_init(&w, m, NULL);
    while ((n = fetch_manifest_writer_next(&w, f, FETCH_FRAME_BUF)) > 0) frame(&b, f, n);
    save(dir, "ans-no-hashes", &b);
    /* A manifest whose first tensor hash is wrong (well-formed, not verified). */
    weights_manifest *bad = m;
    bad->tensors[0].data_hash[0] ^= 1;
    b.len = 1;
    fetch_manifest_writer_init(&w, bad, wanted);
    while ((n = fetch_manifest_writer_next(&w, f, FETCH_FRAME_BUF)) > 0) frame(&b, f, n);
    save(dir, "ans-bad-hash", &b);
    bad->tensors[0].data_hash[0] ^= 1;
    b.len = 1;
    frame(&b, "\x81\x01", 2);
    frame(&b, "\x77", 1);
    frame(&b, "\x86\0\0\0\0\0\0\0\0", 9);
    frame(&b, "\x8f", 1);
    save(dir, "ans-bad", &b);
    /* A whole file: FILE_INFO, two FILE_DATA, an oversized size. */
    b.len = 1;
    uint8_t info[FETCH_FILE_INFO_BYTES];
    fetch_file_info_encode(info, m->model_hash, 5000);
    frame(&b, info, sizeof info);
    fetch_file_data_head_encode(f, 0);
    memset(f + FETCH_FILE_DATA_HEAD, 0x17, 4096);
    frame(&b, f, FETCH_FILE_DATA_HEAD + 4096);
    fetch_file_data_head_encode(f, 4096);
    frame(&b, f, FETCH_FILE_DATA_HEAD + 904);
    fetch_file_info_encode(info, m->model_hash, FETCH_FILE_MAX_SIZE + 1);
    frame(&b, info, sizeof info);
    save(dir, "ans-file", &b);

    /* Manifest files. */
    fetch_file_key key = {.size = 123456, .mtime_ns = 1700000000000000000ull, .inode = 42, .device = 7};
    snprintf(key.path, sizeof key.path, "/home/user/.llmesh/cache/parts/x.1-3h.gguf");
    size_t len;
    uint8_t *file = fetch_manifest_file_encode(m, wanted, &key, &len);
    b.len = 1;
    put(&b, file, len);
    save(dir, "file-part", &b);
    b.len = 1 + len / 2;
    save(dir, "file-truncated", &b);
    free(file);

    /* Holdings: a full file and two parts; one with unknown flags. */
    fetch_holding h[3] = {{.first = 0, .end = 4, .flags = FETCH_HOLD_HEAD | FETCH_HOLD_FULL},
                          {.first = 1, .end = 3, .flags = 0},
                          {.first = 0, .end = 0, .flags = FETCH_HOLD_HEAD}};
    for (int i = 0; i < 3; i++) memcpy(h[i].hash, m->model_hash, WEIGHTS_HASH_BYTES);
    uint8_t hold[2 + 3 * FETCH_HOLDING_BYTES];
    size_t hlen = fetch_holdings_encode(h, 3, hold, sizeof hold);
    b.len = 1;
    b.p[0] = 3;
    put(&b, hold, hlen);
    save(dir, "holdings", &b);
    b.p[1 + 2 + FETCH_HOLDING_BYTES + 40] = 0x80;
    save(dir, "holdings-bad", &b);
    printf("fetch_corpus: %zu manifest frames, %u tensors, %s\n", frames, m->n_tensors, dir);
    free(b.p);
    free(f);
    free(wanted);
    weights_manifest_free(m);
    return 0;
}
