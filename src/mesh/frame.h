/* frame.h: length-prefixed frames on a byte stream.
 *
 * A frame is a u32 big-endian payload length followed by the payload. The
 * reader reassembles frames from chunks of any size (as QUIC delivers them)
 * and enforces a bound on the payload length before it buffers anything, so
 * a peer cannot make us allocate more than the bound, and memory grows only
 * as bytes really arrive.
 *
 * The reader is a pull API with no callbacks: the caller loops on
 * frame_reader_next and can stop between frames (for instance when a frame
 * handler closed the stream) without the reader touching freed memory.
 *
 * Not here: the stream type byte and what payloads mean (mesh.c and its
 * users). Threading: a reader belongs to one thread. */
#ifndef LLMESH_MESH_FRAME_H
#define LLMESH_MESH_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define FRAME_HEADER_BYTES 4

typedef enum {
    FRAME_ERROR = -1,   /* oversized frame or out of memory: see r->error; the reader is dead */
    FRAME_NEED_MORE = 0,/* all input consumed, no complete frame */
    FRAME_READY = 1,    /* one frame complete */
} frame_status;

typedef struct {
    uint32_t max;                 /* largest accepted payload */
    uint8_t header[FRAME_HEADER_BYTES];
    unsigned header_got;          /* header bytes seen for the current frame */
    uint32_t need;                /* payload length, once the header is complete */
    uint8_t *buf;                 /* reassembly buffer for frames split across chunks */
    size_t cap, got;
    int release;                  /* free buf at the next call (it held a big frame) */
    const char *error;            /* static text, set with FRAME_ERROR */
} frame_reader;

void frame_reader_init(frame_reader *r, uint32_t max);
void frame_reader_free(frame_reader *r);

/* Consumes input from *data / *len (both advanced) until a frame is complete
 * or the input is used up. On FRAME_READY, *payload / *payload_len hold the
 * frame: they point into the input when the frame arrived in one piece, else
 * into the reader's buffer; valid until the next call or until the input is
 * freed, whichever comes first. After FRAME_ERROR every call returns it again. */
frame_status frame_reader_next(frame_reader *r, const uint8_t **data, size_t *len,
                               const uint8_t **payload, size_t *payload_len);

/* 1 when the reader is between frames (no partial header or payload). */
int frame_reader_idle(const frame_reader *r);

/* The 4-byte header of a payload of len bytes. */
void frame_header_encode(uint8_t out[FRAME_HEADER_BYTES], uint32_t len);

#endif
