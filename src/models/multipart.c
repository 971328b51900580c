/* multipart.c: joining and splitting multi-part GGUF files. See multipart.h. */
#include "models/multipart.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine/gguf.h"
#include "engine/gguf_write.h"

#define MP_MAX_PARTS 256

static int is_split_key(gguf_str key)
{
    return key.len >= 6 && !memcmp(key.ptr, "split.", 6);
}

typedef struct {
    gguf_file **files;
    int n;
    size_t *part_of;     /* (tensors) which part holds written tensor i */
    size_t *index_in;    /* (tensors) its index there */
} join_src;

static int fill_from_parts(void *ctx, size_t index, void *dst, uint64_t nbytes, char *err, size_t errlen)
{
    join_src *s = ctx;
    const gguf_tensor *t = &s->files[s->part_of[index]]->tensors[s->index_in[index]];
    if (t->nbytes != nbytes) {
        snprintf(err, errlen, "tensor %zu: %llu bytes in its part, %llu expected", index,
                 (unsigned long long)t->nbytes, (unsigned long long)nbytes);
        return -1;
    }
    memcpy(dst, t->data, nbytes);
    return 0;
}

static int newer_than_parts(const char *out_path, const char *const *parts, int n)
{
    struct stat so, sp;
    if (stat(out_path, &so) != 0) return 0;
    for (int i = 0; i < n; i++) {
        if (stat(parts[i], &sp) != 0) return 0;
        if (sp.st_mtim.tv_sec > so.st_mtim.tv_sec ||
            (sp.st_mtim.tv_sec == so.st_mtim.tv_sec && sp.st_mtim.tv_nsec > so.st_mtim.tv_nsec))
            return 0;
    }
    return 1;
}

int multipart_join(const char *const *parts, int n, const char *out_path, char *err, size_t errlen)
{
    if (n < 1 || n > MP_MAX_PARTS) {
        snprintf(err, errlen, "%d parts (1 to %d)", n, MP_MAX_PARTS);
        return -1;
    }
    if (newer_than_parts(out_path, parts, n)) return 0;
    join_src s = {.n = n};
    gguf_write *w = gguf_write_new();
    s.files = calloc((size_t)n, sizeof *s.files);
    int rc = -1;
    uint64_t total = 0;
    if (!w || !s.files) { snprintf(err, errlen, "out of memory"); goto out; }
    uint32_t want_tensors = 0;
    for (int i = 0; i < n; i++) {
        char inner[400];
        if (!(s.files[i] = gguf_open(parts[i], inner, sizeof inner))) {
            snprintf(err, errlen, "%s: %s", parts[i], inner);
            goto out;
        }
        uint32_t no, count, tensors;
        if (gguf_get_u32(s.files[i], "split.no", &no) != 0 || gguf_get_u32(s.files[i], "split.count", &count) != 0 ||
            gguf_get_u32(s.files[i], "split.tensors.count", &tensors) != 0) {
            snprintf(err, errlen, "%s: not a part of a multi-part GGUF (no split.no, split.count, split.tensors.count)",
                     parts[i]);
            goto out;
        }
        if (no != (uint32_t)i || count != (uint32_t)n || (i > 0 && tensors != want_tensors)) {
            snprintf(err, errlen, "%s: part %u of %u (of %u tensors), expected part %d of %d", parts[i], no, count,
                     tensors, i, n);
            goto out;
        }
        want_tensors = tensors;
        total += s.files[i]->n_tensors;
    }
    if (total != want_tensors) {
        snprintf(err, errlen, "the %d parts hold %llu tensors, split.tensors.count says %u", n,
                 (unsigned long long)total, want_tensors);
        goto out;
    }
    s.part_of = malloc(total * sizeof *s.part_of);
    s.index_in = malloc(total * sizeof *s.index_in);
    if (!s.part_of || !s.index_in) { snprintf(err, errlen, "out of memory"); goto out; }
    for (uint64_t k = 0; k < s.files[0]->n_kv; k++)
        if (!is_split_key(s.files[0]->kv[k].key) && gguf_write_copy_kv(w, &s.files[0]->kv[k], err, errlen) < 0)
            goto out;
    size_t t = 0;
    for (int i = 0; i < n; i++)
        for (uint64_t k = 0; k < s.files[i]->n_tensors; k++, t++) {
            const gguf_tensor *tt = &s.files[i]->tensors[k];
            if (gguf_write_add_tensor(w, tt->name, tt->n_dims, tt->ne, tt->type, err, errlen) < 0) goto out;
            s.part_of[t] = (size_t)i;
            s.index_in[t] = (size_t)k;
        }
    if (gguf_write_file(w, out_path, fill_from_parts, &s, err, errlen) < 0) goto out;
    rc = 0;
out:
    for (int i = 0; s.files && i < n; i++)
        if (s.files[i]) gguf_close(s.files[i]);
    free(s.files);
    free(s.part_of);
    free(s.index_in);
    gguf_write_free(w);
    return rc;
}

typedef struct {
    const gguf_file *f;
    size_t first;        /* index in f of this part's first tensor */
} split_src;

static int fill_from_file(void *ctx, size_t index, void *dst, uint64_t nbytes, char *err, size_t errlen)
{
    split_src *s = ctx;
    const gguf_tensor *t = &s->f->tensors[s->first + index];
    if (t->nbytes != nbytes) {
        snprintf(err, errlen, "tensor size mismatch");
        return -1;
    }
    memcpy(dst, t->data, nbytes);
    return 0;
}

int multipart_split(const char *in_path, int n, const char *out_dir, const char *out_stem, char *err,
                    size_t errlen)
{
    char inner[400];
    gguf_file *f = gguf_open(in_path, inner, sizeof inner);
    if (!f) { snprintf(err, errlen, "%s: %s", in_path, inner); return -1; }
    int rc = -1;
    if (n < 2 || (uint64_t)n > f->n_tensors || n > 99999) {
        snprintf(err, errlen, "cannot cut %llu tensors into %d parts", (unsigned long long)f->n_tensors, n);
        goto out;
    }
    for (int i = 0; i < n; i++) {
        size_t first = (size_t)(f->n_tensors * (uint64_t)i / (uint64_t)n);
        size_t end = (size_t)(f->n_tensors * (uint64_t)(i + 1) / (uint64_t)n);
        gguf_write *w = gguf_write_new();
        if (!w) { snprintf(err, errlen, "out of memory"); goto out; }
        int ok = 1;
        if (i == 0)
            for (uint64_t k = 0; ok && k < f->n_kv; k++)
                ok = is_split_key(f->kv[k].key) || gguf_write_copy_kv(w, &f->kv[k], err, errlen) == 0;
        ok = ok && gguf_write_set_u32(w, "split.no", (uint32_t)i, err, errlen) == 0 &&
             gguf_write_set_u32(w, "split.count", (uint32_t)n, err, errlen) == 0 &&
             gguf_write_set_u32(w, "split.tensors.count", (uint32_t)f->n_tensors, err, errlen) == 0;
        for (size_t k = first; ok && k < end; k++) {
            const gguf_tensor *t = &f->tensors[k];
            ok = gguf_write_add_tensor(w, t->name, t->n_dims, t->ne, t->type, err, errlen) == 0;
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/%s-%05d-of-%05d.gguf", out_dir, out_stem, i + 1, n);
        split_src src = {f, first};
        ok = ok && gguf_write_file(w, path, fill_from_file, &src, err, errlen) == 0;
        gguf_write_free(w);
        if (!ok) goto out;
    }
    rc = 0;
out:
    gguf_close(f);
    return rc;
}
