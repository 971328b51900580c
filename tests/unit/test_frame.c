/* test_frame.c: frame reassembly from arbitrary chunks, and the size bound. */
#include <stdlib.h>
#include <string.h>

#include "mesh/frame.h"
#include "mesh/mesh.h"
#include "testlib.h"

/* A byte stream of frames of the given sizes; payload bytes encode their
 * frame and offset so that any mix-up shows. */
static uint8_t *make_stream(const size_t *sizes, int n, size_t *total)
{
    size_t len = 0;
    for (int i = 0; i < n; i++) len += FRAME_HEADER_BYTES + sizes[i];
    uint8_t *s = malloc(len ? len : 1), *p = s;
    for (int i = 0; i < n; i++) {
        frame_header_encode(p, (uint32_t)sizes[i]);
        p += FRAME_HEADER_BYTES;
        for (size_t j = 0; j < sizes[i]; j++) *p++ = (uint8_t)(i * 31 + j * 7);
    }
    *total = len;
    return s;
}

/* Feeds stream in chunks of the sizes produced by next_chunk and checks every
 * frame comes out whole and in order. */
static void feed_and_check(const uint8_t *stream, size_t total, const size_t *sizes, int n,
                           size_t (*next_chunk)(size_t i), uint32_t max)
{
    frame_reader r;
    frame_reader_init(&r, max);
    int frames = 0;
    size_t off = 0;
    for (size_t c = 0; off < total; c++) {
        size_t want = next_chunk(c);
        if (want > total - off) want = total - off;
        /* Copy the chunk so that a reader pointing into it past its end
         * would show under ASan. */
        uint8_t *chunk = malloc(want ? want : 1);
        memcpy(chunk, stream + off, want);
        const uint8_t *data = chunk;
        size_t len = want;
        for (;;) {
            const uint8_t *payload;
            size_t plen;
            frame_status st = frame_reader_next(&r, &data, &len, &payload, &plen);
            REQUIRE(st != FRAME_ERROR);
            if (st == FRAME_NEED_MORE) break;
            REQUIRE(frames < n);
            CHECK_EQ_INT(plen, sizes[frames]);
            int same = 1;
            for (size_t j = 0; j < plen; j++)
                if (payload[j] != (uint8_t)(frames * 31 + j * 7)) { same = 0; break; }
            CHECK(same);
            frames++;
        }
        CHECK_EQ_INT(len, 0);
        free(chunk);
        off += want;
    }
    CHECK_EQ_INT(frames, n);
    CHECK(frame_reader_idle(&r));
    frame_reader_free(&r);
}

static size_t chunk_1(size_t i) { return 1; }
static size_t chunk_3(size_t i) { return 3; }
static size_t chunk_5(size_t i) { return 5; }
static size_t chunk_4095(size_t i) { return 4095; }
static size_t chunk_mixed(size_t i) { static const size_t s[] = {1, 2, 4, 7, 100, 3, 65536, 9}; return s[i % 8]; }
static size_t chunk_random(size_t i) { return (size_t)(rand() % 70000); }
static size_t chunk_all(size_t i) { return (size_t)-1; }

static void test_reassembly_any_chunking(void)
{
    const size_t sizes[] = {0, 1, 5, 4, 0, 4096, 100000, 3, 70000, 0};
    const int n = (int)(sizeof sizes / sizeof *sizes);
    size_t total;
    uint8_t *stream = make_stream(sizes, n, &total);
    size_t (*chunkers[])(size_t) = {chunk_1, chunk_3, chunk_5, chunk_4095, chunk_mixed, chunk_random, chunk_all};
    srand(7);
    for (size_t k = 0; k < sizeof chunkers / sizeof *chunkers; k++)
        feed_and_check(stream, total, sizes, n, chunkers[k], MESH_MAX_FRAME);
    /* Every split point of the stream into two chunks. */
    static size_t split;
    size_t small_sizes[] = {0, 2, 9, 1};
    size_t small_total;
    uint8_t *small = make_stream(small_sizes, 4, &small_total);
    for (split = 0; split <= small_total; split++) {
        size_t first = split;
        frame_reader r;
        frame_reader_init(&r, 16);
        const uint8_t *data = small;
        size_t len = first;
        int frames = 0;
        const uint8_t *payload;
        size_t plen;
        while (frame_reader_next(&r, &data, &len, &payload, &plen) == FRAME_READY) frames++;
        data = small + first;
        len = small_total - first;
        while (frame_reader_next(&r, &data, &len, &payload, &plen) == FRAME_READY) frames++;
        CHECK_EQ_INT(frames, 4);
        frame_reader_free(&r);
    }
    free(small);
    free(stream);
}

static void test_bound(void)
{
    uint8_t head[FRAME_HEADER_BYTES];
    const uint8_t *data, *payload;
    size_t len, plen;
    frame_reader r;

    /* max + 1 is refused at the header, before any payload arrives. */
    frame_reader_init(&r, 100);
    frame_header_encode(head, 101);
    data = head;
    len = sizeof head;
    CHECK_EQ_INT(frame_reader_next(&r, &data, &len, &payload, &plen), FRAME_ERROR);
    CHECK(r.error != NULL);
    CHECK(r.buf == NULL);
    /* and stays refused. */
    data = head;
    len = sizeof head;
    CHECK_EQ_INT(frame_reader_next(&r, &data, &len, &payload, &plen), FRAME_ERROR);
    CHECK(!frame_reader_idle(&r));
    frame_reader_free(&r);

    /* Exactly max is accepted. */
    size_t sizes[] = {100};
    size_t total;
    uint8_t *stream = make_stream(sizes, 1, &total);
    feed_and_check(stream, total, sizes, 1, chunk_3, 100);
    free(stream);

    /* The mesh bound itself: MESH_MAX_FRAME + 1 refused, MESH_MAX_FRAME read
     * whole; 0xffffffff refused. */
    frame_reader_init(&r, MESH_MAX_FRAME);
    frame_header_encode(head, MESH_MAX_FRAME + 1);
    data = head;
    len = sizeof head;
    CHECK_EQ_INT(frame_reader_next(&r, &data, &len, &payload, &plen), FRAME_ERROR);
    frame_reader_free(&r);
    frame_reader_init(&r, MESH_MAX_FRAME);
    frame_header_encode(head, 0xffffffffu);
    data = head;
    len = sizeof head;
    CHECK_EQ_INT(frame_reader_next(&r, &data, &len, &payload, &plen), FRAME_ERROR);
    frame_reader_free(&r);
    size_t big[] = {MESH_MAX_FRAME, 1};
    stream = make_stream(big, 2, &total);
    feed_and_check(stream, total, big, 2, chunk_mixed, MESH_MAX_FRAME);
    free(stream);
}

/* Buffer memory follows the bytes that arrived, not the announced length. */
static void test_no_allocation_ahead(void)
{
    frame_reader r;
    frame_reader_init(&r, MESH_MAX_FRAME);
    uint8_t head[FRAME_HEADER_BYTES + 10] = {0};
    frame_header_encode(head, MESH_MAX_FRAME);
    const uint8_t *data = head, *payload;
    size_t len = sizeof head, plen;
    CHECK_EQ_INT(frame_reader_next(&r, &data, &len, &payload, &plen), FRAME_NEED_MORE);
    CHECK(r.cap <= 4096);
    frame_reader_free(&r);
}

int main(void)
{
    RUN(test_reassembly_any_chunking);
    RUN(test_bound);
    RUN(test_no_allocation_ahead);
    return testlib_finish();
}
