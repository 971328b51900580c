/* stage_wire.c: see stage_wire.h. Layouts are in docs/PROTOCOL.md,
 * section 13; each decoder reads through a bounded wire_reader and then
 * checks ranges and that nothing is left over. */
#include "serve/stage_wire.h"

#include <stdio.h>
#include <string.h>

#include "engine/model.h"
#include "lib/wire.h"
#include "mesh/record.h"
#include "serve/plan.h"

size_t stage_dtype_size(int dtype)
{
    return dtype == STAGE_DTYPE_F32 ? 4 : dtype == STAGE_DTYPE_F16 ? 2 : 0;
}

static int finish(wire_writer *w) { return w->overflow ? -1 : (int)w->len; }

/* Common tail of every decoder: no overrun, no trailing bytes. */
static int done(const wire_reader *r, const char *what, char *err, size_t errlen)
{
    if (r->bad) {
        snprintf(err, errlen, "%s frame truncated (%zu bytes)", what, r->len);
        return -1;
    }
    if (r->at != r->len) {
        snprintf(err, errlen, "%s frame with %zu trailing bytes", what, r->len - r->at);
        return -1;
    }
    return 0;
}

static int kind_is(wire_reader *r, uint8_t kind, const char *what, char *err, size_t errlen)
{
    uint8_t k = wire_u8(r);
    if (r->bad || k != kind) {
        snprintf(err, errlen, "expected a %s frame, got kind 0x%02x", what, k);
        return 0;
    }
    return 1;
}

/* ---- control ----------------------------------------------------------- */

int stage_encode_assign(const stage_assign *a, uint8_t *out, size_t cap)
{
    wire_writer w = wire_writer_of(out, cap);
    wire_put_u8(&w, STAGE_ASSIGN);
    wire_put_u32(&w, a->version);
    wire_put_bytes(&w, a->model_hash, 32);
    wire_put_str8(&w, a->model);
    wire_put_u16(&w, a->n_layer);
    wire_put_u16(&w, a->first);
    wire_put_u16(&w, a->end);
    wire_put_u8(&w, a->stage);
    wire_put_u8(&w, a->n_stages);
    wire_put_bytes(&w, a->next, MESH_ID_BYTES);
    wire_put_u32(&w, a->n_ctx);
    wire_put_u16(&w, a->n_lanes);
    wire_put_u32(&w, a->n_embd);
    wire_put_u8(&w, a->dtype);
    wire_put_u64(&w, a->need_bytes);
    wire_put_u8(&w, a->kv_type);
    return finish(&w);
}

int stage_decode_assign(const uint8_t *p, size_t len, stage_assign *a, char *err, size_t errlen)
{
    memset(a, 0, sizeof *a);
    wire_reader r = wire_reader_of(p, len);
    if (!kind_is(&r, STAGE_ASSIGN, "ASSIGN", err, errlen)) return -1;
    a->version = wire_u32(&r);
    const uint8_t *hash = wire_bytes(&r, 32);
    if (hash) memcpy(a->model_hash, hash, 32);
    wire_str8(&r, a->model, sizeof a->model);
    a->n_layer = wire_u16(&r);
    a->first = wire_u16(&r);
    a->end = wire_u16(&r);
    a->stage = wire_u8(&r);
    a->n_stages = wire_u8(&r);
    const uint8_t *next = wire_bytes(&r, MESH_ID_BYTES);
    if (next) memcpy(a->next, next, MESH_ID_BYTES);
    a->n_ctx = wire_u32(&r);
    a->n_lanes = wire_u16(&r);
    a->n_embd = wire_u32(&r);
    a->dtype = wire_u8(&r);
    a->need_bytes = wire_u64(&r);
    a->kv_type = wire_u8(&r);
    if (done(&r, "ASSIGN", err, errlen) != 0) return -1;
    if (!record_model_name_ok(a->model, strlen(a->model))) {
        snprintf(err, errlen, "ASSIGN with a malformed model id");
        return -1;
    }
    if (a->n_layer < 1 || a->n_layer > 1024 || a->first >= a->end || a->end > a->n_layer ||
        a->n_stages < 2 || a->n_stages > PLAN_MAX_STAGES || a->stage < 1 || a->stage >= a->n_stages) {
        snprintf(err, errlen, "ASSIGN of layers [%u, %u) of %u as stage %u of %u: out of bounds",
                 a->first, a->end, a->n_layer, a->stage, a->n_stages);
        return -1;
    }
    if (a->n_ctx < 1 || a->n_ctx > (1u << 24) || a->n_lanes < 1 || a->n_lanes > STAGE_MAX_LANES ||
        a->n_embd < 1 || a->n_embd > (1u << 16) || !stage_dtype_size(a->dtype) ||
        a->kv_type >= MODEL_KV_TYPE_COUNT) {
        snprintf(err, errlen, "ASSIGN with context %u, %u lanes, width %u, dtype %u, KV type %u: out of "
                 "bounds", a->n_ctx, a->n_lanes, a->n_embd, a->dtype, a->kv_type);
        return -1;
    }
    return 0;
}

int stage_encode_status(const stage_status *s, uint8_t *out, size_t cap)
{
    wire_writer w = wire_writer_of(out, cap);
    wire_put_u8(&w, STAGE_STATUS);
    wire_put_u8(&w, s->state);
    wire_put_u64(&w, s->fetched_bytes);
    wire_put_u64(&w, s->total_bytes);
    wire_put_u64(&w, s->memory_bytes);
    return finish(&w);
}

int stage_decode_status(const uint8_t *p, size_t len, stage_status *s, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    wire_reader r = wire_reader_of(p, len);
    if (!kind_is(&r, STAGE_STATUS, "STATUS", err, errlen)) return -1;
    s->state = wire_u8(&r);
    s->fetched_bytes = wire_u64(&r);
    s->total_bytes = wire_u64(&r);
    s->memory_bytes = wire_u64(&r);
    if (done(&r, "STATUS", err, errlen) != 0) return -1;
    if (s->state > STAGE_READY || s->fetched_bytes > s->total_bytes) {
        snprintf(err, errlen, "STATUS in state %u with %llu of %llu bytes: out of bounds", s->state,
                 (unsigned long long)s->fetched_bytes, (unsigned long long)s->total_bytes);
        return -1;
    }
    return 0;
}

int stage_encode_stats(const stage_stats *s, uint8_t *out, size_t cap)
{
    wire_writer w = wire_writer_of(out, cap);
    wire_put_u8(&w, STAGE_STATS);
    wire_put_u64(&w, s->frames);
    wire_put_u64(&w, s->tokens);
    wire_put_u64(&w, s->compute_us);
    wire_put_u64(&w, s->send_us);
    wire_put_u64(&w, s->bytes_in);
    wire_put_u64(&w, s->bytes_out);
    return finish(&w);
}

int stage_decode_stats(const uint8_t *p, size_t len, stage_stats *s, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    wire_reader r = wire_reader_of(p, len);
    if (!kind_is(&r, STAGE_STATS, "STATS", err, errlen)) return -1;
    s->frames = wire_u64(&r);
    s->tokens = wire_u64(&r);
    s->compute_us = wire_u64(&r);
    s->send_us = wire_u64(&r);
    s->bytes_in = wire_u64(&r);
    s->bytes_out = wire_u64(&r);
    return done(&r, "STATS", err, errlen);
}

int stage_encode_message(uint8_t kind, uint16_t lane, const char *msg, uint8_t *out, size_t cap)
{
    char cut[STAGE_MAX_MESSAGE + 1];
    snprintf(cut, sizeof cut, "%s", msg);
    for (char *c = cut; *c; c++)
        if ((unsigned char)*c < 0x20) *c = ' ';
    wire_writer w = wire_writer_of(out, cap);
    wire_put_u8(&w, kind);
    wire_put_u16(&w, lane);
    wire_put_str8(&w, cut);
    return finish(&w);
}

int stage_decode_message(const uint8_t *p, size_t len, uint16_t *lane, char *msg, size_t cap,
                         char *err, size_t errlen)
{
    wire_reader r = wire_reader_of(p, len);
    uint8_t kind = wire_u8(&r);
    if (kind != STAGE_REFUSE && kind != STAGE_FAIL) {
        snprintf(err, errlen, "expected REFUSE or FAIL, got kind 0x%02x", kind);
        return -1;
    }
    *lane = wire_u16(&r);
    wire_str8(&r, msg, cap);
    if (done(&r, kind == STAGE_FAIL ? "FAIL" : "REFUSE", err, errlen) != 0) return -1;
    for (const char *c = msg; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f) {
            snprintf(err, errlen, "message with control characters");
            return -1;
        }
    return 0;
}

/* ---- data -------------------------------------------------------------- */

int stage_encode_hello(const stage_hello *h, uint8_t *out, size_t cap)
{
    wire_writer w = wire_writer_of(out, cap);
    wire_put_u8(&w, STAGE_HELLO);
    wire_put_bytes(&w, h->coordinator, MESH_ID_BYTES);
    wire_put_str8(&w, h->model);
    wire_put_u32(&w, h->version);
    wire_put_u8(&w, h->stage);
    return finish(&w);
}

int stage_decode_hello(const uint8_t *p, size_t len, stage_hello *h, char *err, size_t errlen)
{
    memset(h, 0, sizeof *h);
    wire_reader r = wire_reader_of(p, len);
    if (!kind_is(&r, STAGE_HELLO, "HELLO", err, errlen)) return -1;
    const uint8_t *id = wire_bytes(&r, MESH_ID_BYTES);
    if (id) memcpy(h->coordinator, id, MESH_ID_BYTES);
    wire_str8(&r, h->model, sizeof h->model);
    h->version = wire_u32(&r);
    h->stage = wire_u8(&r);
    if (done(&r, "HELLO", err, errlen) != 0) return -1;
    if (!record_model_name_ok(h->model, strlen(h->model)) || h->stage >= PLAN_MAX_STAGES) {
        snprintf(err, errlen, "HELLO with a malformed model id or stage %u", h->stage);
        return -1;
    }
    return 0;
}

int stage_encode_states_header(uint8_t kind, const stage_states *s, uint8_t *out, size_t cap)
{
    size_t len = stage_states_header_len(s->n_pieces, s->n_trail);
    if (len > cap || s->n_trail > STAGE_MAX_TRAIL || s->n_pieces > STAGE_MAX_PIECES) return -1;
    wire_writer w = wire_writer_of(out, len);
    wire_put_u8(&w, kind);
    wire_put_u8(&w, s->dtype);
    wire_put_u8(&w, s->n_pieces);
    for (int i = 0; i < s->n_pieces; i++) {
        const stage_piece *q = &s->pieces[i];
        wire_put_u16(&w, q->lane);
        wire_put_u32(&w, q->pos);
        wire_put_u16(&w, q->n);
        wire_put_u8(&w, q->rows);
    }
    wire_put_u8(&w, s->n_trail);
    for (int i = 0; i < s->n_trail; i++) {
        wire_put_u32(&w, s->trail[i].compute_us);
        wire_put_u32(&w, s->trail[i].wait_us);
    }
    return (int)len;
}

int stage_decode_states(const uint8_t *p, size_t len, uint32_t n_embd, stage_states *s, char *err,
                        size_t errlen)
{
    memset(s, 0, sizeof *s);
    wire_reader r = wire_reader_of(p, len);
    uint8_t kind = wire_u8(&r);
    s->dtype = wire_u8(&r);
    s->n_pieces = wire_u8(&r);
    if (r.bad || (kind != STAGE_FORWARD && kind != STAGE_OUTPUT)) {
        snprintf(err, errlen, "hidden-state frame truncated or of kind 0x%02x", kind);
        return -1;
    }
    size_t value = stage_dtype_size(s->dtype);
    if (!value || s->n_pieces > STAGE_MAX_PIECES) {
        snprintf(err, errlen, "hidden-state frame of %u pieces, dtype %u: out of bounds", s->n_pieces,
                 s->dtype);
        return -1;
    }
    uint64_t seen[STAGE_MAX_LANES / 64] = {0};
    for (int i = 0; i < s->n_pieces; i++) {
        stage_piece *q = &s->pieces[i];
        q->lane = wire_u16(&r);
        q->pos = wire_u32(&r);
        q->n = wire_u16(&r);
        q->rows = wire_u8(&r);
        if (r.bad) {
            snprintf(err, errlen, "hidden-state frame truncated in piece %d of %u", i, s->n_pieces);
            return -1;
        }
        if (q->n < 1 || q->n > STAGE_MAX_TOKENS || q->rows > 2 || q->lane >= STAGE_MAX_LANES ||
            (kind == STAGE_OUTPUT && q->rows != 0) || s->n_rows + q->n > STAGE_MAX_TOKENS ||
            (seen[q->lane / 64] >> (q->lane % 64) & 1)) {
            snprintf(err, errlen, "hidden-state piece %d: %u positions (%u before it), rows %u, lane %u "
                     "(twice?): out of bounds", i, q->n, s->n_rows, q->rows, q->lane);
            return -1;
        }
        seen[q->lane / 64] |= (uint64_t)1 << (q->lane % 64);
        s->n_rows += q->n;
    }
    s->n_trail = wire_u8(&r);
    if (r.bad || s->n_trail > STAGE_MAX_TRAIL) {
        snprintf(err, errlen, "hidden-state frame: trail of %u stages, or truncated", s->n_trail);
        return -1;
    }
    for (int i = 0; i < s->n_trail; i++) {
        s->trail[i].compute_us = wire_u32(&r);
        s->trail[i].wait_us = wire_u32(&r);
    }
    if (r.bad) {
        snprintf(err, errlen, "hidden-state frame truncated in its trail");
        return -1;
    }
    size_t want = (size_t)s->n_rows * n_embd * value;
    if (wire_left(&r) != want) {
        snprintf(err, errlen, "hidden-state frame of %u x %u values has %zu data bytes, expected %zu",
                 s->n_rows, n_embd, wire_left(&r), want);
        return -1;
    }
    s->data = p + r.at;
    s->data_len = want;
    return 0;
}
