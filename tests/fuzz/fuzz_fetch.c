/* fuzz_fetch.c: the decoders of FETCH streams and manifest files
 * (models/fetch_wire.h), and what runs on a manifest once decoded: its
 * checks (models/weights.h) and, when well-formed, the part selection and
 * GGUF layout. The first input byte picks what the rest is:
 *   0: requests (a server reading OPEN/GET/FILE_OPEN/FILE_GET), frames as
 *      3-byte big-endian length + bytes;
 *   1: answers (a requester reading manifest frames, READY, DATA, FILE_INFO,
 *      FILE_DATA, ERROR), framed the same way;
 *   2: a whole manifest file of the cache;
 *   3: a node record's holdings field (which parts a peer serves).
 * Seeds: tests/fuzz/corpus/fetch, made by tests/tools/fetch_corpus.c. */
#include <stdlib.h>
#include <string.h>

#include "models/fetch_wire.h"
#include "models/weights.h"

/* What a well-formed manifest goes through on the requester. */
static void use_manifest(weights_manifest *m)
{
    char err[256];
    int rc = weights_manifest_finish(m, 0, err, sizeof err);
    if (rc < 0 && !err[0]) abort();
    if (rc == -1) return;
    /* -2: well-formed, hashes wrong; the rest must still be safe. */
    if (m->n_layers < 0 || m->n_layers > WEIGHTS_MAX_LAYERS || m->alignment == 0 ||
        m->alignment > WEIGHTS_MAX_ALIGNMENT)
        abort();
    uint8_t *wanted = malloc(m->n_tensors);
    uint64_t *offsets = malloc(m->n_tensors * sizeof *offsets);
    if (!wanted || !offsets) abort();
    int ranges[4][3] = {{0, m->n_layers, 1}, {0, 0, 1}, {m->n_layers / 2, m->n_layers, 0}, {1, 0, 0}};
    for (int r = 0; r < 4; r++) {
        int n = weights_select(m, ranges[r][0], ranges[r][1], ranges[r][2], wanted, err, sizeof err);
        if (n < 0) continue;
        uint8_t *header = NULL;
        size_t header_len = 0;
        uint64_t size = 0;
        if (weights_part_layout(m, wanted, &header, &header_len, offsets, &size, err, sizeof err) == 0) {
            for (uint32_t i = 0; i < m->n_tensors; i++)
                if (wanted[i] && (offsets[i] < header_len || offsets[i] % m->alignment || offsets[i] > size))
                    abort();
            free(header);
        }
    }
    free(wanted);
    free(offsets);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    int mode = data[0] % 4;
    data++;
    size--;
    char err[256];
    if (mode == 3) {
        fetch_holding h[FETCH_MAX_HOLDINGS];
        int n = fetch_holdings_decode(data, size, h, FETCH_MAX_HOLDINGS, err, sizeof err);
        if (n < 0 && !err[0]) abort();
        for (int i = 0; i < n; i++) {
            if (h[i].first > h[i].end || h[i].end > WEIGHTS_MAX_LAYERS ||
                (h[i].flags & ~(FETCH_HOLD_HEAD | FETCH_HOLD_FULL)))
                abort();
            if (!fetch_holding_covers(&h[i], h[i].hash, h[i].first, h[i].end, 0)) abort();
        }
        uint8_t back[2 + FETCH_MAX_HOLDINGS * FETCH_HOLDING_BYTES];
        if (n > 0 && (fetch_holdings_encode(h, n, back, sizeof back) != size || memcmp(back, data, size)))
            abort(); /* what decodes encodes back to the same bytes */
        return 0;
    }
    if (mode == 2) {
        fetch_file_key key;
        weights_manifest *m = fetch_manifest_file_decode(data, size, &key, err, sizeof err);
        if (!m && !err[0]) abort();
        if (m) {
            if (strlen(key.path) >= sizeof key.path) abort();
            use_manifest(m);
            weights_manifest_free(m);
        }
        return 0;
    }
    fetch_manifest_reader r;
    fetch_manifest_reader_init(&r);
    int done = 0, dead = 0;
    while (size >= 3) {
        size_t len = (size_t)data[0] << 16 | (size_t)data[1] << 8 | data[2];
        data += 3;
        size -= 3;
        if (len > size) len = size;
        if (mode == 0) {
            fetch_request q;
            if (fetch_request_decode(data, len, &q, err, sizeof err) == 0) {
                if (q.kind != FETCH_OPEN && q.kind != FETCH_GET && q.kind != FETCH_FILE_OPEN &&
                    q.kind != FETCH_FILE_GET)
                    abort();
                if (q.kind == FETCH_OPEN && (q.flags & ~(FETCH_FLAG_HEAD | FETCH_FLAG_NO_MANIFEST))) abort();
                if (q.kind == FETCH_FILE_GET &&
                    (q.length == 0 || q.length > FETCH_FILE_PIECE || q.offset > FETCH_FILE_MAX_SIZE))
                    abort();
            } else if (!err[0]) {
                abort();
            }
        } else {
            fetch_answer a;
            if (fetch_answer_decode(data, len, &a, err, sizeof err) == 0) {
                if (a.kind == FETCH_DATA && (a.len == 0 || a.data + a.len != data + len)) abort();
                if (a.kind == FETCH_FILE_DATA &&
                    (a.len == 0 || a.len > FETCH_FILE_PIECE || a.data + a.len != data + len || a.offset > FETCH_FILE_MAX_SIZE))
                    abort();
                if (a.kind == FETCH_FILE_INFO && a.size > FETCH_FILE_MAX_SIZE) abort();
                if (a.kind == FETCH_ERROR && strlen(a.text) > FETCH_ERROR_TEXT_MAX) abort();
                if (a.kind >= FETCH_HEAD && a.kind <= FETCH_HASHES && !dead) {
                    int rc = fetch_manifest_reader_feed(&r, data, len);
                    if (rc < 0 && !r.error[0]) abort();
                    if (rc < 0) dead = 1;
                    if (rc == 1) done = 1;
                    if (rc == 0 && done) abort();
                }
            }
        }
        data += len;
        size -= len;
    }
    if (done != fetch_manifest_reader_complete(&r) && !dead) abort();
    weights_manifest *m = fetch_manifest_reader_take(&r);
    if (m) {
        use_manifest(m);
        weights_manifest_free(m);
    }
    fetch_manifest_reader_free(&r);
    return 0;
}
