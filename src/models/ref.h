/* ref.h: model references, the names people type for a model, and the
 * built-in catalog of popular GGUF models.
 *
 * A reference is one of (docs/models.md has the rules and examples):
 *   a path              /m/x.gguf, ./x.gguf, ../x.gguf, ~/x.gguf, or any
 *                       string naming an existing file (the caller checks:
 *                       model_ref_parse is pure and never touches the disk)
 *   a Hugging Face file org/repo/path/file.gguf[@revision]
 *   a repo and a quant  org/repo:Q4_K_M[@revision]  (the file, or the parts
 *                       of a multi-part file, whose name carries the quant)
 *   a URL               https://host/path/file.gguf (http:// too, for a
 *                       local mirror)
 *   a catalog name      qwen2.5-0.5b-instruct (llmesh models --catalog)
 *
 * Everything in a reference comes from outside (a flag, the load API): it is
 * bounded and its characters are checked here, so that a repo or a path in
 * the repo can be used as a directory name in the cache and in a URL without
 * escaping surprises ("..", control characters, backslashes are refused).
 * Threading: pure functions, any thread. */
#ifndef LLMESH_MODELS_REF_H
#define LLMESH_MODELS_REF_H

#include <stddef.h>
#include <stdint.h>

#define MODEL_REF_MAX 1024        /* longest reference accepted, bytes */
#define MODEL_REF_MAX_REPO 200    /* "org/repo" */
#define MODEL_REF_MAX_PATH 512    /* a path in the repo, a local path, a URL */
#define MODEL_REF_MAX_REV 128
#define MODEL_REF_MAX_QUANT 32

typedef enum {
    MODEL_REF_PATH = 0,   /* file: the local path */
    MODEL_REF_HF_FILE,    /* repo, file (path in the repo), revision */
    MODEL_REF_HF_QUANT,   /* repo, quant, revision */
    MODEL_REF_URL,        /* file: the URL */
    MODEL_REF_CATALOG,    /* name; repo, file and revision filled from the catalog */
} model_ref_kind;

typedef struct {
    model_ref_kind kind;
    char repo[MODEL_REF_MAX_REPO];
    char file[MODEL_REF_MAX_PATH];
    char revision[MODEL_REF_MAX_REV]; /* "main" unless given */
    char quant[MODEL_REF_MAX_QUANT];
    char name[64];                    /* catalog name */
} model_ref;

/* Parses s into out. 0, or -1 with a one-line message in err saying what is
 * wrong and what forms are accepted. */
int model_ref_parse(const char *s, model_ref *out, char *err, size_t errlen);
const char *model_ref_kind_name(model_ref_kind k); /* "path", "hf-file", ... */

/* 1 when name ends in -NNNNN-of-NNNNN.gguf (a part of a multi-part GGUF);
 * then *no and *count are the numbers and *stem_len the length of what comes
 * before "-NNNNN". */
int model_ref_split_name(const char *name, int *no, int *count, size_t *stem_len);
/* The model id a file name gives: the base name without ".gguf" and, for a
 * part of a multi-part file, without "-00001-of-00003". */
void model_ref_id_from_file(const char *path, char *out, size_t cap);
/* 1 when file name (a base name) is a GGUF carrying quant q (case does not
 * matter; q must stand between separators: "x-Q4_K_M.gguf", "x.q4_k_m.gguf",
 * "x-Q4_K_M-00001-of-00002.gguf"). */
int model_ref_file_has_quant(const char *name, const char *q);

/* ---- the catalog --------------------------------------------------------- */

typedef struct {
    const char *name;        /* what users type */
    const char *family;      /* Qwen, Llama, Gemma, Mistral, Phi */
    const char *repo;        /* Hugging Face repo */
    const char *file;        /* path of the GGUF in it (first part when split) */
    uint64_t size_bytes;     /* approximate size of the file(s), for the list only:
                                the hub's own figure is what the fit check uses */
    const char *what;        /* one line */
} model_catalog_entry;

int model_catalog_count(void);
const model_catalog_entry *model_catalog_at(int i);
const model_catalog_entry *model_catalog_find(const char *name); /* case-insensitive; NULL */

#endif
