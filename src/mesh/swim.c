/* swim.c: see swim.h. */
#include "mesh/swim.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

/* A LEAVE signature covers this context first, so it can never be taken for
 * a record signature (or the reverse). */
static const char swim_leave_context[] = "llmesh/1 leave";

static void swim_put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}

static uint64_t swim_get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = v << 8 | p[i];
    return v;
}

size_t swim_probe_encode(const swim_probe *p, uint8_t *out)
{
    assert(p->kind == SWIM_PING || p->kind == SWIM_ACK || p->kind == SWIM_PING_REQ);
    out[0] = p->kind;
    swim_put_u64(out + 1, p->nonce);
    if (p->kind != SWIM_PING_REQ) return 9;
    memcpy(out + 9, p->target, MESH_ID_BYTES);
    return 9 + MESH_ID_BYTES;
}

int swim_probe_decode(const uint8_t *p, size_t len, swim_probe *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (len == 0) {
        snprintf(err, errlen, "empty control frame");
        return -1;
    }
    if (p[0] != SWIM_PING && p[0] != SWIM_ACK && p[0] != SWIM_PING_REQ) return 1;
    size_t need = p[0] == SWIM_PING_REQ ? 9 + MESH_ID_BYTES : 9;
    if (len < need) {
        snprintf(err, errlen, "control message kind %u of %zu bytes (at least %zu)", p[0], len, need);
        return -1;
    }
    out->kind = p[0];
    out->nonce = swim_get_u64(p + 1);
    if (out->kind == SWIM_PING_REQ) memcpy(out->target, p + 9, MESH_ID_BYTES);
    return 0;
}

size_t swim_claim_encode(const swim_notice *n, uint8_t *out)
{
    assert(n->kind == SWIM_NOTICE_SUSPECT || n->kind == SWIM_NOTICE_DEAD);
    out[0] = n->kind;
    memcpy(out + 1, n->node, MESH_ID_BYTES);
    swim_put_u64(out + 1 + MESH_ID_BYTES, n->incarnation);
    memcpy(out + 9 + MESH_ID_BYTES, n->from, MESH_ID_BYTES);
    return SWIM_CLAIM_BYTES;
}

/* The signed message: context (with its NUL), then the 41 bytes before the
 * signature. */
#define SWIM_LEAVE_BODY (1 + MESH_ID_BYTES + 8)
static void swim_leave_message(const uint8_t *body, uint8_t *msg)
{
    memcpy(msg, swim_leave_context, sizeof swim_leave_context);
    memcpy(msg + sizeof swim_leave_context, body, SWIM_LEAVE_BODY);
}

int swim_leave_encode(const identity *id, uint64_t incarnation, uint8_t *out, char *err, size_t errlen)
{
    out[0] = SWIM_NOTICE_LEAVE;
    memcpy(out + 1, id->public_key, MESH_ID_BYTES);
    swim_put_u64(out + 1 + MESH_ID_BYTES, incarnation);
    uint8_t msg[sizeof swim_leave_context + SWIM_LEAVE_BODY];
    swim_leave_message(out, msg);
    if (identity_sign(id, msg, sizeof msg, out + SWIM_LEAVE_BODY, err, errlen) != 0) return -1;
    return SWIM_LEAVE_BYTES;
}

int swim_notice_decode(const uint8_t *p, size_t len, swim_notice *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (len == 0) {
        snprintf(err, errlen, "empty notice");
        return -1;
    }
    size_t want;
    switch (p[0]) {
    case SWIM_NOTICE_SUSPECT:
    case SWIM_NOTICE_DEAD: want = SWIM_CLAIM_BYTES; break;
    case SWIM_NOTICE_LEAVE: want = SWIM_LEAVE_BYTES; break;
    default:
        snprintf(err, errlen, "not a notice (kind %u)", p[0]);
        return -1;
    }
    if (len != want) {
        snprintf(err, errlen, "%s notice of %zu bytes (%zu expected)", swim_notice_name(p[0]), len, want);
        return -1;
    }
    out->kind = p[0];
    memcpy(out->node, p + 1, MESH_ID_BYTES);
    out->incarnation = swim_get_u64(p + 1 + MESH_ID_BYTES);
    if (out->kind == SWIM_NOTICE_LEAVE) memcpy(out->from, out->node, MESH_ID_BYTES);
    else memcpy(out->from, p + 9 + MESH_ID_BYTES, MESH_ID_BYTES);
    return 0;
}

int swim_leave_verify(const uint8_t *p, size_t len)
{
    if (len != SWIM_LEAVE_BYTES || p[0] != SWIM_NOTICE_LEAVE) return 0;
    uint8_t msg[sizeof swim_leave_context + SWIM_LEAVE_BODY];
    swim_leave_message(p, msg);
    return identity_verify(p + 1, msg, sizeof msg, p + SWIM_LEAVE_BODY);
}

const char *swim_notice_name(uint8_t kind)
{
    switch (kind) {
    case SWIM_NOTICE_SUSPECT: return "suspect";
    case SWIM_NOTICE_DEAD: return "dead";
    case SWIM_NOTICE_LEAVE: return "leave";
    default: return "unknown";
    }
}
