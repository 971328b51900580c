/* record.c: see record.h. */
#include "mesh/record.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

/* Signatures cover this context string first, so that a record signature can
 * never be replayed as the signature of some other message we add later. */
static const char record_context[] = "llmesh/1 node record";

_Static_assert(MESH_ID_BYTES == IDENTITY_KEY_BYTES, "node ids are Ed25519 public keys");
_Static_assert(RECORD_MAX_BYTES >= 1 + MESH_ID_BYTES + 8 + 1 + 8 + 1 + MESH_MAX_ADDRS * ADDR_WIRE_MAX +
                                   1 + MESH_MAX_MODELS * MESH_MAX_NAME + 3 + 8 + 3 + RECORD_MAX_APP + 3 + 4 +
                                   IDENTITY_SIG_BYTES,
               "largest record must fit the bound");
_Static_assert(RECORD_MAX_APP <= 0xffff, "a field length is a u16");

static void record_put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}

static uint64_t record_get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = v << 8 | p[i];
    return v;
}

const char *record_role_name(uint8_t role)
{
    switch (role) {
    case RECORD_ROLE_HOST: return "host";
    case RECORD_ROLE_STANDBY: return "standby";
    case RECORD_ROLE_CLIENT: return "client";
    default: return "unknown";
    }
}

uint8_t record_role_code(const char *name)
{
    if (!strcmp(name, "host")) return RECORD_ROLE_HOST;
    if (!strcmp(name, "standby")) return RECORD_ROLE_STANDBY;
    if (!strcmp(name, "client")) return RECORD_ROLE_CLIENT;
    return 0;
}

int record_model_name_ok(const char *name, size_t len)
{
    if (len == 0 || len >= MESH_MAX_NAME) return 0;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f) return 0;
    return 1;
}

/* The signed message: context, then every record byte before the signature. */
static int record_signed_message(const uint8_t *p, size_t body_len, uint8_t *msg, size_t cap)
{
    if (sizeof record_context + body_len > cap) return -1;
    memcpy(msg, record_context, sizeof record_context);
    memcpy(msg + sizeof record_context, p, body_len);
    return (int)(sizeof record_context + body_len);
}

int record_encode(const node_record *r, const identity *id, uint8_t *out, size_t cap,
                  char *err, size_t errlen)
{
    assert(memcmp(r->id, id->public_key, MESH_ID_BYTES) == 0);
    assert(r->n_addrs >= 0 && r->n_addrs <= MESH_MAX_ADDRS);
    assert(r->n_models >= 0 && r->n_models <= MESH_MAX_MODELS);
    uint8_t buf[RECORD_MAX_BYTES];
    size_t n = 0;
    buf[n++] = RECORD_KIND_NODE;
    memcpy(buf + n, r->id, MESH_ID_BYTES);
    n += MESH_ID_BYTES;
    record_put_u64(buf + n, r->seq);
    n += 8;
    buf[n++] = r->role;
    record_put_u64(buf + n, r->memory_bytes);
    n += 8;
    buf[n++] = (uint8_t)r->n_addrs;
    for (int i = 0; i < r->n_addrs; i++) n += addr_encode(&r->addrs[i], buf + n);
    buf[n++] = (uint8_t)r->n_models;
    for (int i = 0; i < r->n_models; i++) {
        size_t len = strlen(r->models[i]);
        assert(record_model_name_ok(r->models[i], len));
        buf[n++] = (uint8_t)len;
        memcpy(buf + n, r->models[i], len);
        n += len;
    }
    /* Extension fields: tag, u16 length, value. Fields equal to their
     * default (nothing used, no application bytes) are left out. */
    if (r->memory_used) {
        buf[n++] = RECORD_FIELD_MEMORY_USED;
        buf[n++] = 0;
        buf[n++] = 8;
        record_put_u64(buf + n, r->memory_used);
        n += 8;
    }
    if (r->clients) {
        buf[n++] = RECORD_FIELD_CLIENTS;
        buf[n++] = 0;
        buf[n++] = 4;
        for (int k = 3; k >= 0; k--) buf[n++] = (uint8_t)(r->clients >> (8 * k));
    }
    assert(r->app_len <= RECORD_MAX_APP);
    if (r->app_len) {
        buf[n++] = RECORD_FIELD_APP;
        buf[n++] = (uint8_t)(r->app_len >> 8);
        buf[n++] = (uint8_t)r->app_len;
        memcpy(buf + n, r->app, r->app_len);
        n += r->app_len;
    }
    assert(r->holdings_len <= RECORD_MAX_HOLDINGS);
    if (r->holdings_len) {
        buf[n++] = RECORD_FIELD_HOLDINGS;
        buf[n++] = (uint8_t)(r->holdings_len >> 8);
        buf[n++] = (uint8_t)r->holdings_len;
        memcpy(buf + n, r->holdings, r->holdings_len);
        n += r->holdings_len;
    }
    assert(n + IDENTITY_SIG_BYTES <= sizeof buf);
    if (n + IDENTITY_SIG_BYTES > cap) {
        snprintf(err, errlen, "record buffer too small");
        return -1;
    }
    uint8_t msg[sizeof record_context + RECORD_MAX_BYTES];
    int mlen = record_signed_message(buf, n, msg, sizeof msg);
    assert(mlen > 0);
    if (identity_sign(id, msg, (size_t)mlen, buf + n, err, errlen) != 0) return -1;
    n += IDENTITY_SIG_BYTES;
    memcpy(out, buf, n);
    return (int)n;
}

int record_decode(const uint8_t *p, size_t len, node_record *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (len < RECORD_MIN_BYTES || len > RECORD_MAX_BYTES) {
        snprintf(err, errlen, "node record of %zu bytes (%d to %d allowed)", len,
                 RECORD_MIN_BYTES, RECORD_MAX_BYTES);
        return -1;
    }
    if (p[0] != RECORD_KIND_NODE) {
        snprintf(err, errlen, "not a node record (kind %u)", p[0]);
        return -1;
    }
    /* Everything below reads within body (the signature is not fields). */
    size_t end = len - IDENTITY_SIG_BYTES, i = 1;
    memcpy(out->id, p + i, MESH_ID_BYTES);
    i += MESH_ID_BYTES;
    out->seq = record_get_u64(p + i);
    i += 8;
    out->role = p[i++];
    if (out->role == 0) {
        snprintf(err, errlen, "node record with role 0");
        return -1;
    }
    out->memory_bytes = record_get_u64(p + i);
    i += 8;
    int n_addrs = p[i++];   /* i <= end here: RECORD_MIN_BYTES covers the fixed part */
    if (n_addrs > MESH_MAX_ADDRS) {
        snprintf(err, errlen, "node record with %d addresses (at most %d)", n_addrs, MESH_MAX_ADDRS);
        return -1;
    }
    for (int a = 0; a < n_addrs; a++) {
        int used = addr_decode(p + i, end - i, &out->addrs[a]);
        if (used < 0) {
            snprintf(err, errlen, "node record address %d is truncated or malformed", a + 1);
            return -1;
        }
        i += (size_t)used;
    }
    out->n_addrs = n_addrs;
    if (i >= end) {
        snprintf(err, errlen, "node record truncated before its models");
        return -1;
    }
    int n_models = p[i++];
    if (n_models > MESH_MAX_MODELS) {
        snprintf(err, errlen, "node record with %d models (at most %d)", n_models, MESH_MAX_MODELS);
        return -1;
    }
    for (int m = 0; m < n_models; m++) {
        size_t mlen = i < end ? p[i] : 0;
        if (i >= end || end - i - 1 < mlen || !record_model_name_ok((const char *)p + i + 1, mlen)) {
            snprintf(err, errlen, "node record model %d is truncated or malformed", m + 1);
            return -1;
        }
        memcpy(out->models[m], p + i + 1, mlen);
        out->models[m][mlen] = 0;
        i += 1 + mlen;
    }
    out->n_models = n_models;
    /* Extension fields up to the signature. Unknown tags are a newer
     * version's: signed, kept, forwarded, skipped. A field that overruns
     * the body, or a known one of the wrong size, is malformed. */
    while (i < end) {
        if (end - i < 3) {
            snprintf(err, errlen, "node record extension field truncated");
            return -1;
        }
        uint8_t tag = p[i];
        size_t flen = (size_t)p[i + 1] << 8 | p[i + 2];
        i += 3;
        if (flen > end - i) {
            snprintf(err, errlen, "node record extension field %u of %zu bytes overruns the record",
                     tag, flen);
            return -1;
        }
        if (tag == RECORD_FIELD_MEMORY_USED) {
            if (flen != 8) {
                snprintf(err, errlen, "node record memory field of %zu bytes (8 expected)", flen);
                return -1;
            }
            out->memory_used = record_get_u64(p + i);
        } else if (tag == RECORD_FIELD_CLIENTS) {
            if (flen != 4) {
                snprintf(err, errlen, "node record clients field of %zu bytes (4 expected)", flen);
                return -1;
            }
            out->clients = (uint32_t)p[i] << 24 | (uint32_t)p[i + 1] << 16 | (uint32_t)p[i + 2] << 8 | p[i + 3];
        } else if (tag == RECORD_FIELD_APP) {
            if (flen > RECORD_MAX_APP) {
                snprintf(err, errlen, "node record application field of %zu bytes (at most %d)", flen,
                         RECORD_MAX_APP);
                return -1;
            }
            memcpy(out->app, p + i, flen);
            out->app_len = (uint16_t)flen;
        } else if (tag == RECORD_FIELD_HOLDINGS) {
            if (flen > RECORD_MAX_HOLDINGS) {
                snprintf(err, errlen, "node record holdings field of %zu bytes (at most %d)", flen,
                         RECORD_MAX_HOLDINGS);
                return -1;
            }
            memcpy(out->holdings, p + i, flen);
            out->holdings_len = (uint16_t)flen;
        }
        i += flen;
    }
    return 0;
}

int record_verify(const uint8_t *p, size_t len, const uint8_t id[MESH_ID_BYTES])
{
    if (len < RECORD_MIN_BYTES || len > RECORD_MAX_BYTES) return 0;
    uint8_t msg[sizeof record_context + RECORD_MAX_BYTES];
    int mlen = record_signed_message(p, len - IDENTITY_SIG_BYTES, msg, sizeof msg);
    if (mlen < 0) return 0;
    return identity_verify(id, msg, (size_t)mlen, p + len - IDENTITY_SIG_BYTES);
}
