/* gguf.h: a validating, zero-copy reader for GGUF v3 model files.
 *
 * The file is mmap'ed read-only; metadata strings and tensor data point into
 * the mapping and live as long as the gguf_file. Every size, count, offset and
 * string length read from the file is checked against the file size before
 * use, so a truncated or corrupt file gives an error message, never a crash.
 * Not here: what the metadata means (engine/model.c, engine/tokenizer.c).
 * Thread-safety: a gguf_file is immutable after open; any thread may read it. */
#ifndef LLMESH_GGUF_H
#define LLMESH_GGUF_H

#include <stddef.h>
#include <stdint.h>

#define GGUF_MAGIC 0x46554747u /* "GGUF" little-endian */
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS 4

/* Metadata value types, numbered as in the GGUF specification. */
typedef enum {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
    GGUF_TYPE_COUNT
} gguf_type;

/* Tensor element types, numbered as ggml numbers them (only some are
 * supported by the engine; the reader accepts any it knows the size of). */
typedef enum {
    GGML_TYPE_F32 = 0,
    GGML_TYPE_F16 = 1,
    GGML_TYPE_Q4_0 = 2,
    GGML_TYPE_Q4_1 = 3,
    GGML_TYPE_Q5_0 = 6,
    GGML_TYPE_Q5_1 = 7,
    GGML_TYPE_Q8_0 = 8,
    GGML_TYPE_Q8_1 = 9,
    GGML_TYPE_Q2_K = 10,
    GGML_TYPE_Q3_K = 11,
    GGML_TYPE_Q4_K = 12,
    GGML_TYPE_Q5_K = 13,
    GGML_TYPE_Q6_K = 14,
    GGML_TYPE_Q8_K = 15,
    GGML_TYPE_BF16 = 30,
} ggml_type;

/* A string inside the mapping: NOT NUL-terminated. */
typedef struct {
    const char *ptr;
    uint64_t len;
} gguf_str;

typedef struct {
    gguf_str key;
    gguf_type type;
    /* For scalars: the value. For strings: str. For arrays: elem_type, count
     * and data (the raw little-endian elements; for string arrays, the first
     * length-prefixed string), read with gguf_arr_* below. */
    union {
        uint64_t u64;
        int64_t i64;
        double f64;
        gguf_str str;
    } v;
    gguf_type elem_type;
    uint64_t count;
    const uint8_t *data;
    /* String arrays only: all count elements, indexed at open (owned by the
     * gguf_file); NULL for every other kind of value. */
    const gguf_str *str_index;
} gguf_kv;

typedef struct {
    gguf_str name;
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS]; /* ne[0] is the fastest-varying (row length); unused dims are 1 */
    ggml_type type;
    uint64_t offset;            /* relative to the start of the data section */
    uint64_t nbytes;
    const void *data;           /* into the mapping */
} gguf_tensor;

typedef struct gguf_file {
    uint32_t version;
    uint64_t n_kv;
    gguf_kv *kv;
    uint64_t n_tensors;
    gguf_tensor *tensors;
    uint64_t alignment;
    const uint8_t *base;        /* whole file */
    uint64_t size;
    uint64_t data_offset;       /* start of the tensor data section */
    int fd;                     /* -1 when opened from memory */
    void *owned_string_arrays;  /* reader-private */
} gguf_file;

/* Opens and validates PATH. On failure returns NULL and writes a message
 * naming the problem (and the byte offset where it applies) into err. */
gguf_file *gguf_open(const char *path, char *err, size_t errlen);
/* Same over a caller-owned buffer that must outlive the result (fuzzing, tests). */
gguf_file *gguf_open_memory(const void *data, size_t size, char *err, size_t errlen);
void gguf_close(gguf_file *f);

/* Bytes per block and elements per block of a ggml type; 0 if unknown. */
size_t ggml_type_block_bytes(ggml_type t);
size_t ggml_type_block_elems(ggml_type t);
const char *ggml_type_name(ggml_type t);

/* Metadata lookup. gguf_find returns NULL when the key is absent. */
const gguf_kv *gguf_find(const gguf_file *f, const char *key);
/* Typed getters: return 0 on success, -1 when absent or of another type
 * (integers of any width convert when the value fits). */
int gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out);
int gguf_get_f32(const gguf_file *f, const char *key, float *out);
int gguf_get_bool(const gguf_file *f, const char *key, int *out);
int gguf_get_str(const gguf_file *f, const char *key, gguf_str *out);
/* Array element access. gguf_arr_str walks length-prefixed strings: O(i)
 * the first time, O(1) after (the reader indexes string arrays at open). */
int gguf_arr_str(const gguf_kv *kv, uint64_t i, gguf_str *out);
int gguf_arr_i64(const gguf_kv *kv, uint64_t i, int64_t *out);
int gguf_arr_f32(const gguf_kv *kv, uint64_t i, float *out);

/* Where key/value i lies in the file: bytes [*start, *end), from its key's
 * length to the end of its value. Consecutive entries are adjacent. For
 * code that copies or hashes metadata byte for byte (models/weights.c). */
void gguf_kv_range(const gguf_file *f, uint64_t i, uint64_t *start, uint64_t *end);

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name);
/* 1 when s equals the NUL-terminated c. */
int gguf_str_eq(gguf_str s, const char *c);
/* For error messages: a NUL-terminated copy of s in buf (cap >= 8) with
 * control characters replaced by '?' and, when s does not fit, cut at a
 * character boundary and ended with "...". Returns buf. */
const char *gguf_str_printable(gguf_str s, char *buf, size_t cap);

#endif
