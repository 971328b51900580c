/* fetch_wire.h: the bytes of FETCH streams (stream type 7, docs/PROTOCOL.md
 * section 14) and of the manifest files in the cache, which reuse the same
 * frames.
 *
 * Pure encoders and decoders, no I/O: every length, count, index and size a
 * peer sends is checked here against the bounds of weights.h before anything
 * is allocated for it, and memory grows only with the bytes that arrived
 * (a 57-byte HEAD cannot make us reserve gigabytes). Decoders return -1 with
 * a message for anything malformed; what that costs the peer (stream reset,
 * counters) is decided by the caller (weights_store.c).
 *
 * Not here: what to do with a request, when to send what (fetch.c).
 * Threading: no shared state; any thread. */
#ifndef LLMESH_MODELS_FETCH_WIRE_H
#define LLMESH_MODELS_FETCH_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "models/weights.h"

/* Frame kinds: the first byte of every frame. */
#define FETCH_OPEN 0x01    /* requester: model hash, layer range, flags */
#define FETCH_GET 0x02     /* requester: one chunk */
#define FETCH_FILE_OPEN 0x03 /* requester: a whole file by its SHA-256 */
#define FETCH_FILE_GET 0x04  /* requester: bytes of that file */
#define FETCH_KEY 0x70     /* cache files only: which file a manifest belongs to */
#define FETCH_HEAD 0x81    /* manifest: model hash, chunk size, counts */
#define FETCH_META 0x82    /* manifest: a piece of the metadata bytes */
#define FETCH_TENSORS 0x83 /* manifest: tensor entries in file order */
#define FETCH_HASHES 0x84  /* manifest: chunk hashes of one tensor */
#define FETCH_READY 0x85   /* server: chunk requests are welcome now */
#define FETCH_DATA 0x86    /* server: one chunk */
#define FETCH_FILE_INFO 0x87 /* server: the file's SHA-256 and size */
#define FETCH_FILE_DATA 0x88 /* server: bytes of the file at an offset */
#define FETCH_ERROR 0x8f   /* server: a refusal; FIN follows */

#define FETCH_OPEN_BYTES 42
#define FETCH_GET_BYTES 9
#define FETCH_DATA_HEAD 9
#define FETCH_HEAD_BYTES 57
#define FETCH_FILE_OPEN_BYTES 33
#define FETCH_FILE_GET_BYTES 13
#define FETCH_FILE_INFO_BYTES 41
#define FETCH_FILE_DATA_HEAD 9
#define FETCH_FILE_PIECE (1u << 20)   /* FILE_GET: at most this many bytes asked at once */
#define FETCH_FILE_MAX_SIZE (1ull << 50) /* FILE_INFO sizes and FILE_GET offsets: 1 PiB */
#define FETCH_FLAG_HEAD 0x01          /* OPEN: the part includes the head tensors */
#define FETCH_FLAG_NO_MANIFEST 0x02   /* OPEN: the requester holds the manifest: answer READY only */
#define FETCH_ERROR_TEXT_MAX 256
/* Pieces the writer cuts the manifest into (and the reader accepts at most). */
#define FETCH_META_PIECE (1u << 20)
#define FETCH_TENSORS_PIECE (64u << 10)
#define FETCH_HASHES_PIECE 32768u    /* hashes per frame: 1 MiB */
#define FETCH_FRAME_BUF (FETCH_META_PIECE + 64) /* big enough for any manifest frame */

/* ERROR codes. */
typedef enum {
    FETCH_ERR_UNKNOWN_MODEL = 1, /* no full local copy of that model hash (or file) here */
    FETCH_ERR_BAD_RANGE = 2,     /* the layer range is not a part of the model */
    FETCH_ERR_BUSY = 3,          /* too many fetches served now: try later */
    FETCH_ERR_INTERNAL = 4,      /* the local file cannot be read (changed, I/O error) */
} fetch_error_code;

/* ---- requester -> server -------------------------------------------------------*/

typedef struct {
    uint8_t kind;                         /* FETCH_OPEN or FETCH_GET */
    uint8_t hash[WEIGHTS_HASH_BYTES];     /* OPEN */
    uint32_t first, end;                  /* OPEN: layers [first, end) */
    uint8_t flags;                        /* OPEN: FETCH_FLAG_* (unknown bits are malformed) */
    uint32_t tensor, chunk;               /* GET: tensor index in file order, chunk index */
    uint8_t sha256[32];                   /* FILE_OPEN: the file's SHA-256 */
    uint64_t offset;                      /* FILE_GET: first byte */
    uint32_t length;                      /* FILE_GET: bytes, 1..FETCH_FILE_PIECE */
} fetch_request;

void fetch_open_encode(uint8_t out[FETCH_OPEN_BYTES], const uint8_t hash[WEIGHTS_HASH_BYTES],
                       uint32_t first, uint32_t end, uint8_t flags);
void fetch_get_encode(uint8_t out[FETCH_GET_BYTES], uint32_t tensor, uint32_t chunk);
void fetch_file_open_encode(uint8_t out[FETCH_FILE_OPEN_BYTES], const uint8_t sha256[32]);
void fetch_file_get_encode(uint8_t out[FETCH_FILE_GET_BYTES], uint64_t offset, uint32_t length);
/* 0, or -1 with a message: empty, unknown kind, wrong size, unknown flags,
 * a FILE_GET of 0 or more than FETCH_FILE_PIECE bytes, or past 2^63. */
int fetch_request_decode(const uint8_t *p, size_t len, fetch_request *out, char *err, size_t errlen);

/* ---- server -> requester ---------------------------------------------------------*/

void fetch_data_head_encode(uint8_t out[FETCH_DATA_HEAD], uint32_t tensor, uint32_t chunk);
void fetch_file_info_encode(uint8_t out[FETCH_FILE_INFO_BYTES], const uint8_t sha256[32], uint64_t size);
void fetch_file_data_head_encode(uint8_t out[FETCH_FILE_DATA_HEAD], uint64_t offset);
/* kind, code, text (cut to FETCH_ERROR_TEXT_MAX). Returns the length; out holds 2 + that max. */
size_t fetch_error_encode(uint8_t out[2 + FETCH_ERROR_TEXT_MAX], uint8_t code, const char *text);

typedef struct {
    uint8_t kind;           /* any server kind above */
    uint32_t tensor, chunk; /* DATA */
    uint8_t sha256[32];     /* FILE_INFO */
    uint64_t size;          /* FILE_INFO: the file's size (at most 2^50) */
    uint64_t offset;        /* FILE_DATA: where data goes (data, len: 1..FETCH_FILE_PIECE bytes) */
    const uint8_t *data;    /* DATA, FILE_DATA: the bytes; manifest kinds: the whole frame */
    size_t len;
    uint8_t code;           /* ERROR */
    char text[FETCH_ERROR_TEXT_MAX + 1]; /* ERROR: printable copy (control bytes as '?') */
} fetch_answer;

/* Classifies one server frame and decodes the fixed fields (manifest frames
 * are checked by the manifest reader). 0, or -1 with a message. */
int fetch_answer_decode(const uint8_t *p, size_t len, fetch_answer *out, char *err, size_t errlen);

/* ---- manifests: writer and reader ---------------------------------------------------*/

/* Cuts a manifest into frames: HEAD, META pieces, TENSORS pieces, then the
 * chunk hashes of the tensors marked in with_hashes (NULL: none). */
typedef struct {
    const weights_manifest *m;
    const uint8_t *with_hashes;
    int state;
    uint64_t meta_off;
    uint32_t tensor, chunk;
} fetch_manifest_writer;

void fetch_manifest_writer_init(fetch_manifest_writer *w, const weights_manifest *m,
                                const uint8_t *with_hashes);
/* Writes the next frame into buf (cap >= FETCH_FRAME_BUF); its length, or 0 when done. */
size_t fetch_manifest_writer_next(fetch_manifest_writer *w, uint8_t *buf, size_t cap);

/* Rebuilds a manifest from those frames, in that order. The result is not
 * checked against its hashes yet: weights_manifest_finish does that. */
typedef struct {
    weights_manifest *m;     /* n_tensors and meta_len count what arrived so far */
    int state;
    uint32_t n_tensors;      /* announced by HEAD */
    size_t meta_len;         /* announced by HEAD */
    size_t meta_cap;
    uint32_t tensors_cap;
    uint8_t *flagged;        /* per tensor: its chunk hashes follow */
    uint32_t tensor, chunk;  /* the next chunk hash expected */
    uint32_t chunks_cap;
    char error[160];
} fetch_manifest_reader;

void fetch_manifest_reader_init(fetch_manifest_reader *r);
/* One manifest frame. 0: more needed; 1: complete (later frames are errors);
 * -1: malformed (r->error), the reader is dead. */
int fetch_manifest_reader_feed(fetch_manifest_reader *r, const uint8_t *p, size_t len);
/* 1 once every frame of the manifest arrived. */
int fetch_manifest_reader_complete(const fetch_manifest_reader *r);
/* The complete manifest, now the caller's (NULL before completion). */
weights_manifest *fetch_manifest_reader_take(fetch_manifest_reader *r);
void fetch_manifest_reader_free(fetch_manifest_reader *r);

/* ---- holdings: what a node can serve (its record's holdings field) ----------------------*/

/* Which parts of which models a node holds and serves to peers: its local
 * full files (layers [0, n_layers) with the head) and its complete cached
 * parts. Gossiped in the node record (mesh_set_holdings), so that a stage
 * can fetch its tensors from any node holding them, not only from the
 * coordinator. Format byte, count, then per entry: model hash, first and
 * end layer (u32 each), flags. */
#define FETCH_HOLDINGS_FORMAT 1
#define FETCH_MAX_HOLDINGS 24           /* 2 + 24 x 41 = 986 bytes <= MESH_MAX_HOLDINGS */
#define FETCH_HOLDING_BYTES 41
#define FETCH_HOLD_HEAD 0x01            /* the entry includes the head tensors */
#define FETCH_HOLD_FULL 0x02            /* a whole file (else a cached part) */

typedef struct {
    uint8_t hash[WEIGHTS_HASH_BYTES];
    uint32_t first, end;                /* layers [first, end) */
    uint8_t flags;                      /* FETCH_HOLD_* */
} fetch_holding;

/* Encodes n (<= FETCH_MAX_HOLDINGS) entries; the length, or 0 when cap is too small. */
size_t fetch_holdings_encode(const fetch_holding *h, int n, uint8_t *out, size_t cap);
/* The entries (at most max), or -1 with a message: another format, a count
 * over the bound or not matching the length, unknown flags, a range that is
 * not a part (first > end, end > WEIGHTS_MAX_LAYERS, no layer and no head).
 * An empty field is 0 entries. */
int fetch_holdings_decode(const uint8_t *p, size_t len, fetch_holding *out, int max, char *err, size_t errlen);
/* 1 when entry h holds every tensor of the part [first, end) (+ head) of the model hash. */
int fetch_holding_covers(const fetch_holding *h, const uint8_t hash[WEIGHTS_HASH_BYTES], uint32_t first,
                         uint32_t end, int head);

/* ---- manifest files (the cache) --------------------------------------------------------*/

/* Which file a remembered manifest describes; a changed file is hashed again. */
typedef struct {
    char path[4096];
    uint64_t size, mtime_ns, inode, device;
} fetch_file_key;

#define FETCH_FILE_MAGIC "llmeshW1"   /* 8 bytes, then frames (u32 length + payload) */
#define FETCH_FILE_MAX (256u << 20)

/* The whole file: magic, a KEY frame, then the manifest's frames (chunk
 * hashes of the tensors marked in with_hashes). malloc'ed; NULL when out of memory. */
uint8_t *fetch_manifest_file_encode(const weights_manifest *m, const uint8_t *with_hashes,
                                    const fetch_file_key *key, size_t *len);
/* Parses such a file and checks the manifest against its hashes
 * (weights_manifest_finish). NULL with a message when anything is off. */
weights_manifest *fetch_manifest_file_decode(const uint8_t *p, size_t len, fetch_file_key *key,
                                             char *err, size_t errlen);

#endif
