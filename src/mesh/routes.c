/* routes.c: routing-table pull messages (see routes.h). */
#include "mesh/routes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t routes_get_encode(uint8_t out[1])
{
    out[0] = ROUTES_KIND_GET;
    return 1;
}

int routes_is_get(const uint8_t *p, size_t len) { return len >= 1 && p[0] == ROUTES_KIND_GET; }

size_t routes_end_encode(uint32_t count, uint8_t out[ROUTES_END_BYTES])
{
    out[0] = ROUTES_KIND_END;
    out[1] = (uint8_t)(count >> 24);
    out[2] = (uint8_t)(count >> 16);
    out[3] = (uint8_t)(count >> 8);
    out[4] = (uint8_t)count;
    return ROUTES_END_BYTES;
}

void routes_reply_init(routes_reply *r) { memset(r, 0, sizeof *r); }

void routes_reply_free(routes_reply *r)
{
    free(r->recs);
    routes_reply_init(r);
}

static int reply_fail(routes_reply *r, const char *why)
{
    snprintf(r->error, sizeof r->error, "%s", why);
    return -1;
}

int routes_reply_add(routes_reply *r, const uint8_t *p, size_t len)
{
    if (r->done) return reply_fail(r, "frame after END");
    if (len == 0) return reply_fail(r, "empty frame");
    if (p[0] == ROUTES_KIND_END) {
        if (len != ROUTES_END_BYTES) return reply_fail(r, "END frame of the wrong size");
        uint32_t count = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
        if (count != (uint32_t)(r->n + r->dups)) return reply_fail(r, "END counts a different number of records");
        r->done = 1;
        return 1;
    }
    if (p[0] != RECORD_KIND_NODE) return reply_fail(r, "unknown frame kind");
    if (r->n + r->dups >= ROUTES_MAX_RECORDS) return reply_fail(r, "more records than a mesh holds");
    node_record rec;
    char err[128];
    if (record_decode(p, len, &rec, err, sizeof err) != 0) {
        snprintf(r->error, sizeof r->error, "malformed record: %s", err);
        return -1;
    }
    if (!record_verify(p, len, rec.id)) return reply_fail(r, "record with a bad signature");
    /* The same node twice: keep the newer record, count both (END counts
     * frames sent). */
    for (int i = 0; i < r->n; i++)
        if (!memcmp(r->recs[i].id, rec.id, MESH_ID_BYTES)) {
            if (rec.seq > r->recs[i].seq) r->recs[i] = rec;
            r->dups++;
            return 0;
        }
    if (r->n == r->cap) {
        int cap = r->cap ? 2 * r->cap : 16;
        node_record *grown = realloc(r->recs, (size_t)cap * sizeof *grown);
        if (!grown) return reply_fail(r, "out of memory");
        r->recs = grown;
        r->cap = cap;
    }
    r->recs[r->n++] = rec;
    return 0;
}
