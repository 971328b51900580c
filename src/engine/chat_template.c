/* chat_template.c: public API of the chat template interpreter (parse, render,
 * the ChatML fallback), plus what every other part uses: the capped arena,
 * the capped output buffer and the value helpers (Python-style printing,
 * JSON, equality, ordering).
 * Not here: syntax (chat_template_parse.c), evaluation (chat_template_eval.c),
 * filters and methods (chat_template_builtins.c). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/chat_template_private.h"

/* ---- arena ---- */

struct ct_chunk {
    ct_chunk *next;
    size_t used, size;
    _Alignas(max_align_t) unsigned char data[];
};

#define CT_CHUNK_MIN (64u << 10)

void *ct_alloc(ct_arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (n == 0) n = 16;
    if (n > a->cap || a->total > a->cap - n) return NULL;
    ct_chunk *h = a->head;
    if (!h || h->size - h->used < n) {
        /* Big requests get a chunk of their own so that the tail of the
         * current chunk stays usable for small ones. */
        size_t size = n > CT_CHUNK_MIN / 4 ? n : CT_CHUNK_MIN;
        ct_chunk *k = malloc(sizeof *k + size);
        if (!k) return NULL;
        k->used = 0;
        k->size = size;
        if (h && size != CT_CHUNK_MIN) {
            k->next = h->next;       /* keep the small-allocation chunk on top */
            h->next = k;
        } else {
            k->next = h;
            a->head = k;
        }
        h = k;
    }
    void *p = h->data + h->used;
    h->used += n;
    a->total += n;
    memset(p, 0, n);
    return p;
}

void ct_arena_free(ct_arena *a)
{
    ct_chunk *k = a->head;
    while (k) {
        ct_chunk *next = k->next;
        free(k);
        k = next;
    }
    a->head = NULL;
    a->total = 0;
}

/* ---- buffers and strings ---- */

int ct_buf_put(ct_buf *b, const char *s, size_t n)
{
    if (n == 0) return 0;
    if (n > CT_MAX_OUTPUT || b->n > CT_MAX_OUTPUT - n) return -1;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
    return 0;
}

int ct_buf_printf(ct_buf *b, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp) return -1;
    return ct_buf_put(b, tmp, (size_t)n);
}

ct_str ct_cstr(const char *s)
{
    ct_str r = {s ? s : "", s ? strlen(s) : 0};
    return r;
}

int ct_str_eq(ct_str a, const char *lit)
{
    size_t n = strlen(lit);
    return a.n == n && memcmp(a.s, lit, n) == 0;
}

int ct_str_same(ct_str a, ct_str b)
{
    return a.n == b.n && (a.n == 0 || memcmp(a.s, b.s, a.n) == 0);
}

char *ct_strdup(ct_arena *a, const char *s, size_t n)
{
    char *p = ct_alloc(a, n + 1);
    if (p && n) memcpy(p, s, n);
    return p;
}

size_t ct_utf8_len(ct_str s)
{
    size_t n = 0;
    for (size_t i = 0; i < s.n; i++)
        if (((unsigned char)s.s[i] & 0xC0) != 0x80) n++;
    return n;
}

/* ---- lists and dicts ---- */

ct_list *ct_list_new(ct_arena *a, size_t n)
{
    if (n > CT_MAX_MEMORY / sizeof(ct_value)) return NULL;
    ct_list *l = ct_alloc(a, sizeof *l);
    if (!l) return NULL;
    l->n = n;
    if (n && !(l->items = ct_alloc(a, n * sizeof(ct_value)))) return NULL;
    return l;   /* zeroed items are CT_UNDEF */
}

ct_dict *ct_dict_new(ct_arena *a)
{
    return ct_alloc(a, sizeof(ct_dict));
}

const ct_value *ct_dict_get(const ct_dict *d, ct_str key)
{
    for (size_t i = 0; i < d->n; i++)
        if (ct_str_same(d->keys[i], key)) return &d->vals[i];
    return NULL;
}

int ct_dict_set(ct_arena *a, ct_dict *d, ct_str key, ct_value v)
{
    for (size_t i = 0; i < d->n; i++)
        if (ct_str_same(d->keys[i], key)) { d->vals[i] = v; return 0; }
    if (d->n == d->cap) {
        /* Arena memory cannot be returned, so growth doubles to keep the
         * waste at most the final size. */
        size_t cap = d->cap ? d->cap * 2 : 4;
        ct_str *k = ct_alloc(a, cap * sizeof *k);
        ct_value *vals = ct_alloc(a, cap * sizeof *vals);
        if (!k || !vals) return -1;
        if (d->n) {
            memcpy(k, d->keys, d->n * sizeof *k);
            memcpy(vals, d->vals, d->n * sizeof *vals);
        }
        d->keys = k;
        d->vals = vals;
        d->cap = cap;
    }
    d->keys[d->n] = key;
    d->vals[d->n] = v;
    d->n++;
    return 0;
}

/* ---- value semantics ---- */

int ct_truthy(ct_value v)
{
    switch (v.kind) {
    case CT_UNDEF: case CT_NONE: return 0;
    case CT_BOOL: return v.u.b;
    case CT_INT: return v.u.i != 0;
    case CT_FLOAT: return v.u.f != 0.0;
    case CT_STR: return v.u.str.n != 0;
    case CT_LIST: return v.u.list->n != 0;
    case CT_DICT: return v.u.dict->n != 0;
    case CT_LOOP: case CT_MACRO: return 1;
    }
    return 0;
}

const char *ct_kind_name(ct_kind k)
{
    static const char *names[] = {"undefined", "none", "boolean", "integer", "float",
                                  "string", "list", "dict", "loop", "macro"};
    return (unsigned)k < sizeof names / sizeof names[0] ? names[k] : "?";
}

/* Python's repr() of a float: the shortest of %.15g..%.17g that reads back
 * the same, with ".0" on integral values as Python prints them. */
static int write_float(ct_buf *b, double f)
{
    if (isnan(f)) return ct_buf_put(b, "nan", 3);
    if (isinf(f)) return f > 0 ? ct_buf_put(b, "inf", 3) : ct_buf_put(b, "-inf", 4);
    char tmp[64];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, f);
        if (strtod(tmp, NULL) == f) break;
    }
    if (!strpbrk(tmp, ".eEn")) strcat(tmp, ".0");
    return ct_buf_put(b, tmp, strlen(tmp));
}

/* repr() of a string as Python prints it inside a list: single quotes unless
 * the text has a single quote and no double quote. */
static int write_repr_str(ct_buf *b, ct_str s)
{
    char q = memchr(s.s, '\'', s.n) && !memchr(s.s, '"', s.n) ? '"' : '\'';
    if (ct_buf_put(b, &q, 1)) return -1;
    for (size_t i = 0; i < s.n; i++) {
        unsigned char ch = (unsigned char)s.s[i];
        int r;
        if (ch == (unsigned char)q || ch == '\\') { char e[2] = {'\\', (char)ch}; r = ct_buf_put(b, e, 2); }
        else if (ch == '\n') r = ct_buf_put(b, "\\n", 2);
        else if (ch == '\t') r = ct_buf_put(b, "\\t", 2);
        else if (ch == '\r') r = ct_buf_put(b, "\\r", 2);
        else if (ch < 0x20 || ch == 0x7f) r = ct_buf_printf(b, "\\x%02x", ch);
        else r = ct_buf_put(b, (const char *)&s.s[i], 1);
        if (r) return -1;
    }
    return ct_buf_put(b, &q, 1);
}

static int write_repr(ct_buf *b, ct_value v, int depth);

static int write_container(ct_buf *b, ct_value v, int depth)
{
    if (depth > CHAT_TEMPLATE_MAX_EXPR_DEPTH) return -1;
    if (v.kind == CT_LIST) {
        if (ct_buf_put(b, "[", 1)) return -1;
        for (size_t i = 0; i < v.u.list->n; i++)
            if ((i && ct_buf_put(b, ", ", 2)) || write_repr(b, v.u.list->items[i], depth + 1))
                return -1;
        return ct_buf_put(b, "]", 1);
    }
    if (ct_buf_put(b, "{", 1)) return -1;
    for (size_t i = 0; i < v.u.dict->n; i++)
        if ((i && ct_buf_put(b, ", ", 2)) || write_repr_str(b, v.u.dict->keys[i]) ||
            ct_buf_put(b, ": ", 2) || write_repr(b, v.u.dict->vals[i], depth + 1))
            return -1;
    return ct_buf_put(b, "}", 1);
}

static int write_repr(ct_buf *b, ct_value v, int depth)
{
    if (v.kind == CT_STR) return write_repr_str(b, v.u.str);
    if (v.kind == CT_LIST || v.kind == CT_DICT) return write_container(b, v, depth);
    return ct_write_str(b, v);
}

int ct_write_str(ct_buf *b, ct_value v)
{
    switch (v.kind) {
    case CT_UNDEF: return 0;
    case CT_NONE: return ct_buf_put(b, "None", 4);
    case CT_BOOL: return v.u.b ? ct_buf_put(b, "True", 4) : ct_buf_put(b, "False", 5);
    case CT_INT: return ct_buf_printf(b, "%lld", v.u.i);
    case CT_FLOAT: return write_float(b, v.u.f);
    case CT_STR: return ct_buf_put(b, v.u.str.s, v.u.str.n);
    case CT_LIST: case CT_DICT: return write_container(b, v, 0);
    case CT_LOOP: return ct_buf_put(b, "<LoopContext>", 13);
    case CT_MACRO: return ct_buf_put(b, "<Macro>", 7);
    }
    return 0;
}

static int write_json_str(ct_buf *b, ct_str s)
{
    if (ct_buf_put(b, "\"", 1)) return -1;
    size_t run = 0;   /* bytes copied verbatim in one go */
    for (size_t i = 0; i <= s.n; i++) {
        unsigned char ch = i < s.n ? (unsigned char)s.s[i] : 0;
        int special = i == s.n || ch < 0x20 || ch == '"' || ch == '\\';
        if (!special) { run++; continue; }
        if (ct_buf_put(b, s.s + i - run, run)) return -1;
        run = 0;
        if (i == s.n) break;
        int r;
        switch (ch) {
        case '"': r = ct_buf_put(b, "\\\"", 2); break;
        case '\\': r = ct_buf_put(b, "\\\\", 2); break;
        case '\n': r = ct_buf_put(b, "\\n", 2); break;
        case '\r': r = ct_buf_put(b, "\\r", 2); break;
        case '\t': r = ct_buf_put(b, "\\t", 2); break;
        case '\b': r = ct_buf_put(b, "\\b", 2); break;
        case '\f': r = ct_buf_put(b, "\\f", 2); break;
        default: r = ct_buf_printf(b, "\\u%04x", ch); break;
        }
        if (r) return -1;
    }
    return ct_buf_put(b, "\"", 1);
}

static int json_newline(ct_buf *b, int indent, int level)
{
    if (ct_buf_put(b, "\n", 1)) return -1;
    for (int i = 0; i < indent * level; i++)
        if (ct_buf_put(b, " ", 1)) return -1;
    return 0;
}

int ct_write_json(ct_buf *b, ct_value v, int indent, int depth)
{
    if (depth > CHAT_TEMPLATE_MAX_EXPR_DEPTH) return -1;
    /* Python's separators: ", " without indent, "," with it. */
    const char *sep = indent >= 0 ? "," : ", ";
    switch (v.kind) {
    case CT_UNDEF: case CT_NONE: return ct_buf_put(b, "null", 4);
    case CT_BOOL: return v.u.b ? ct_buf_put(b, "true", 4) : ct_buf_put(b, "false", 5);
    case CT_INT: return ct_buf_printf(b, "%lld", v.u.i);
    case CT_FLOAT:
        if (isnan(v.u.f)) return ct_buf_put(b, "NaN", 3);
        if (isinf(v.u.f)) return v.u.f > 0 ? ct_buf_put(b, "Infinity", 8) : ct_buf_put(b, "-Infinity", 9);
        return write_float(b, v.u.f);
    case CT_STR: return write_json_str(b, v.u.str);
    case CT_LIST: {
        const ct_list *l = v.u.list;
        if (l->n == 0) return ct_buf_put(b, "[]", 2);
        if (ct_buf_put(b, "[", 1)) return -1;
        for (size_t i = 0; i < l->n; i++) {
            if (i && ct_buf_put(b, sep, strlen(sep))) return -1;
            if (indent >= 0 && json_newline(b, indent, depth + 1)) return -1;
            if (ct_write_json(b, l->items[i], indent, depth + 1)) return -1;
        }
        if (indent >= 0 && json_newline(b, indent, depth)) return -1;
        return ct_buf_put(b, "]", 1);
    }
    case CT_DICT: {
        const ct_dict *d = v.u.dict;
        if (d->n == 0) return ct_buf_put(b, "{}", 2);
        if (ct_buf_put(b, "{", 1)) return -1;
        for (size_t i = 0; i < d->n; i++) {
            if (i && ct_buf_put(b, sep, strlen(sep))) return -1;
            if (indent >= 0 && json_newline(b, indent, depth + 1)) return -1;
            if (write_json_str(b, d->keys[i]) || ct_buf_put(b, ": ", 2) ||
                ct_write_json(b, d->vals[i], indent, depth + 1))
                return -1;
        }
        if (indent >= 0 && json_newline(b, indent, depth)) return -1;
        return ct_buf_put(b, "}", 1);
    }
    case CT_LOOP: case CT_MACRO: return ct_buf_put(b, "null", 4);
    }
    return 0;
}

static int is_number(ct_value v) { return v.kind == CT_INT || v.kind == CT_FLOAT || v.kind == CT_BOOL; }
static double as_double(ct_value v)
{
    return v.kind == CT_FLOAT ? v.u.f : v.kind == CT_INT ? (double)v.u.i : (double)v.u.b;
}

int ct_equal(ct_value a, ct_value b)
{
    if (is_number(a) && is_number(b)) {
        if (a.kind != CT_FLOAT && b.kind != CT_FLOAT)
            return (a.kind == CT_INT ? a.u.i : a.u.b) == (b.kind == CT_INT ? b.u.i : b.u.b);
        return as_double(a) == as_double(b);
    }
    if (a.kind != b.kind) return 0;
    switch (a.kind) {
    case CT_UNDEF: case CT_NONE: return 1;
    case CT_STR: return ct_str_same(a.u.str, b.u.str);
    case CT_LIST:
        if (a.u.list->n != b.u.list->n) return 0;
        /* Lists are built from finite source and bounded input, and cannot
         * contain themselves (they are immutable), so recursion ends. */
        for (size_t i = 0; i < a.u.list->n; i++)
            if (!ct_equal(a.u.list->items[i], b.u.list->items[i])) return 0;
        return 1;
    case CT_DICT:
        if (a.u.dict == b.u.dict) return 1;
        if (a.u.dict->is_namespace || b.u.dict->is_namespace) return 0;
        if (a.u.dict->n != b.u.dict->n) return 0;
        for (size_t i = 0; i < a.u.dict->n; i++) {
            const ct_value *o = ct_dict_get(b.u.dict, a.u.dict->keys[i]);
            if (!o || !ct_equal(a.u.dict->vals[i], *o)) return 0;
        }
        return 1;
    case CT_LOOP: return a.u.loop == b.u.loop;
    case CT_MACRO: return a.u.macro == b.u.macro;
    default: return 0;
    }
}

int ct_compare(ct_value a, ct_value b)
{
    if (is_number(a) && is_number(b)) {
        if (a.kind == CT_INT && b.kind == CT_INT) return (a.u.i > b.u.i) - (a.u.i < b.u.i);
        double x = as_double(a), y = as_double(b);
        if (x != x || y != y) return -2;
        return (x > y) - (x < y);
    }
    if (a.kind == CT_STR && b.kind == CT_STR) {
        size_t n = a.u.str.n < b.u.str.n ? a.u.str.n : b.u.str.n;
        int r = n ? memcmp(a.u.str.s, b.u.str.s, n) : 0;
        if (r) return r < 0 ? -1 : 1;
        return (a.u.str.n > b.u.str.n) - (a.u.str.n < b.u.str.n);
    }
    return -2;
}

/* ---- render context helpers ---- */

int ct_fail(ct_ctx *c, int line, const char *fmt, ...)
{
    if (c->failed) return -1;
    c->failed = 1;
    if (c->errlen == 0) return -1;
    int n = line > 0 ? snprintf(c->err, c->errlen, "line %d: ", line) : 0;
    if (n < 0) n = 0;
    if ((size_t)n < c->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int ct_step(ct_ctx *c, int line)
{
    if (++c->steps <= CHAT_TEMPLATE_MAX_STEPS) return 0;
    return ct_fail(c, line, "template takes too long (more than %d steps)",
                   CHAT_TEMPLATE_MAX_STEPS);
}

int ct_work(ct_ctx *c, int line, size_t units)
{
    c->steps += (long long)(units / 256);
    return ct_step(c, line);
}

int ct_oom(ct_ctx *c, int line)
{
    return ct_fail(c, line, "template uses too much memory or output (limits %u MiB, %u MiB)",
                   CT_MAX_MEMORY >> 20, CT_MAX_OUTPUT >> 20);
}

int ct_to_str(ct_ctx *c, int line, ct_value v, ct_str *out)
{
    if (v.kind == CT_STR) { *out = v.u.str; return 0; }
    ct_buf b = {0};
    if (ct_write_str(&b, v)) { free(b.p); return ct_oom(c, line); }
    char *p = ct_strdup(&c->arena, b.p ? b.p : "", b.n);
    size_t n = b.n;
    free(b.p);
    if (!p) return ct_oom(c, line);
    out->s = p;
    out->n = n;
    return 0;
}

/* ---- public API ---- */

static void set_err(char *err, size_t errlen, const char *msg)
{
    if (err && errlen) snprintf(err, errlen, "%s", msg);
}

chat_template *chat_template_parse(const char *src, size_t len, char *err, size_t errlen)
{
    if (!src) { set_err(err, errlen, "no template"); return NULL; }
    if (len > CHAT_TEMPLATE_MAX_SOURCE) {
        set_err(err, errlen, "template too large (more than 1 MiB)");
        return NULL;
    }
    chat_template *t = calloc(1, sizeof *t);
    if (!t) { set_err(err, errlen, "out of memory"); return NULL; }
    t->arena.cap = CT_MAX_MEMORY;
    t->src = malloc(len + 1);
    if (!t->src) { free(t); set_err(err, errlen, "out of memory"); return NULL; }
    memcpy(t->src, src, len);
    t->src[len] = '\0';
    char dummy[1];
    if (!err || !errlen) { err = dummy; errlen = sizeof dummy; }
    if (ct_parse(t, err, errlen)) {
        chat_template_free(t);
        return NULL;
    }
    return t;
}

void chat_template_free(chat_template *t)
{
    if (!t) return;
    ct_arena_free(&t->arena);
    free(t->src);
    free(t);
}

static int bind(ct_ctx *c, const char *name, ct_value v)
{
    if (c->n_vars == c->cap_vars) {
        size_t cap = c->cap_vars ? c->cap_vars * 2 : 16;
        ct_var *p = realloc(c->vars, cap * sizeof *p);
        if (!p) return ct_oom(c, 0);
        c->vars = p;
        c->cap_vars = cap;
    }
    c->vars[c->n_vars].name = ct_cstr(name);
    c->vars[c->n_vars].v = v;
    c->n_vars++;
    return 0;
}

/* A JSON value as a template value (numbers: int when integral and in
 * range, else float), in the render's arena. -1 with the render failed. */
static int from_json(ct_ctx *c, const cJSON *j, int depth, ct_value *out)
{
    if (depth > CHAT_TEMPLATE_MAX_JSON_DEPTH) return ct_fail(c, 0, "JSON nested too deep");
    if (cJSON_IsNull(j)) { *out = ct_none(); return 0; }
    if (cJSON_IsBool(j)) { *out = ct_bool(cJSON_IsTrue(j)); return 0; }
    if (cJSON_IsNumber(j)) {
        double d = j->valuedouble;
        *out = d == (double)(long long)d && d > -9.0e15 && d < 9.0e15 ? ct_int((long long)d) : ct_float(d);
        return 0;
    }
    if (cJSON_IsString(j)) {
        size_t n = strlen(j->valuestring);
        char *p = ct_strdup(&c->arena, j->valuestring, n);
        if (!p) return ct_oom(c, 0);
        *out = ct_string(p, n);
        return 0;
    }
    if (cJSON_IsArray(j)) {
        ct_list *l = ct_list_new(&c->arena, (size_t)cJSON_GetArraySize(j));
        if (!l) return ct_oom(c, 0);
        size_t i = 0;
        const cJSON *x;
        cJSON_ArrayForEach(x, j)
            if (from_json(c, x, depth + 1, &l->items[i++])) return -1;
        out->kind = CT_LIST;
        out->u.list = l;
        return 0;
    }
    if (cJSON_IsObject(j)) {
        ct_dict *d = ct_dict_new(&c->arena);
        if (!d) return ct_oom(c, 0);
        const cJSON *x;
        cJSON_ArrayForEach(x, j) {
            ct_value v;
            char *k = ct_strdup(&c->arena, x->string, strlen(x->string));
            if (!k || from_json(c, x, depth + 1, &v)) return k ? -1 : ct_oom(c, 0);
            if (ct_dict_set(&c->arena, d, ct_cstr(k), v)) return ct_oom(c, 0);
        }
        out->kind = CT_DICT;
        out->u.dict = d;
        return 0;
    }
    return ct_fail(c, 0, "unsupported JSON value");
}

/* Parses text as JSON into a template value. */
static int json_value(ct_ctx *c, const char *text, ct_value *out)
{
    cJSON *j = cJSON_Parse(text);
    if (!j) return ct_fail(c, 0, "a JSON variable is not valid JSON");
    int r = from_json(c, j, 0, out);
    cJSON_Delete(j);
    return r;
}

/* The globals a render sees: messages (a list of {role, content} dicts,
 * with the members of each message's json), bos_token, eos_token,
 * add_generation_prompt and the caller's extras. */
static int bind_globals(ct_ctx *c, const chat_message *msgs, int n_msgs,
                        const chat_template_vars *vars)
{
    ct_list *l = ct_list_new(&c->arena, (size_t)n_msgs);
    if (!l) return ct_oom(c, 0);
    for (int i = 0; i < n_msgs; i++) {
        ct_dict *d = ct_dict_new(&c->arena);
        if (!d) return ct_oom(c, 0);
        if (ct_dict_set(&c->arena, d, ct_cstr("role"), ct_string(msgs[i].role, strlen(msgs[i].role))) ||
            ct_dict_set(&c->arena, d, ct_cstr("content"),
                        ct_string(msgs[i].content ? msgs[i].content : "",
                                  msgs[i].content ? strlen(msgs[i].content) : 0)))
            return ct_oom(c, 0);
        if (msgs[i].json) {
            ct_value extra;
            if (json_value(c, msgs[i].json, &extra)) return -1;
            if (extra.kind != CT_DICT) return ct_fail(c, 0, "a message's JSON must be an object");
            for (size_t k = 0; k < extra.u.dict->n; k++)
                if (ct_dict_set(&c->arena, d, extra.u.dict->keys[k], extra.u.dict->vals[k])) return ct_oom(c, 0);
        }
        l->items[i].kind = CT_DICT;
        l->items[i].u.dict = d;
    }
    ct_value mv = {0};
    mv.kind = CT_LIST;
    mv.u.list = l;
    const char *bos = vars && vars->bos_token ? vars->bos_token : "";
    const char *eos = vars && vars->eos_token ? vars->eos_token : "";
    if (bind(c, "messages", mv) || bind(c, "bos_token", ct_string(bos, strlen(bos))) ||
        bind(c, "eos_token", ct_string(eos, strlen(eos))) ||
        bind(c, "add_generation_prompt", ct_bool(vars && vars->add_generation_prompt)))
        return -1;
    for (int i = 0; vars && vars->extra && i < vars->n_extra; i++) {
        const chat_template_extra *x = &vars->extra[i];
        if (!x->name) continue;
        ct_value v = x->string ? ct_string(x->string, strlen(x->string)) : ct_bool(x->boolean);
        if (x->json && json_value(c, x->json, &v)) return -1;
        if (bind(c, x->name, v)) return -1;
    }
    return 0;
}

/* The last occurrence of needle (n bytes) in hay, or NULL. */
static const char *last_occurrence(const char *hay, size_t len, const char *needle, size_t n)
{
    if (n == 0 || n > len) return NULL;
    for (size_t i = len - n + 1; i-- > 0;)
        if (hay[i] == needle[0] && !memcmp(hay + i, needle, n)) return hay + i;
    return NULL;
}

/* Cut after the content, not a generation prompt plus the content: the
 * turn then opens as the template writes it (Mistral's space after [/INST],
 * Llama 3's trimming), which the two can differ in. */
int chat_template_render_continue(const chat_template *t, const chat_message *msgs, int n_msgs,
                                  const chat_template_vars *vars, char **out, size_t *out_len,
                                  char *err, size_t errlen)
{
    char dummy[1];
    if (!err || !errlen) { err = dummy; errlen = sizeof dummy; }
    if (out) *out = NULL;
    if (!vars || !out || !out_len || n_msgs < 1 || !msgs) {
        set_err(err, errlen, "invalid arguments");
        return -1;
    }
    chat_template_vars v = *vars;
    const char *content = msgs[n_msgs - 1].content ? msgs[n_msgs - 1].content : "";
    size_t a = 0, b = strlen(content);
    while (a < b && strchr(" \t\r\n", content[a])) a++;
    while (b > a && strchr(" \t\r\n", content[b - 1])) b--;
    if (a == b) { /* nothing to continue: the turn opens as for any answer */
        v.add_generation_prompt = 1;
        return chat_template_render(t, msgs, n_msgs - 1, &v, out, out_len, err, errlen);
    }
    v.add_generation_prompt = 0;
    if (chat_template_render(t, msgs, n_msgs, &v, out, out_len, err, errlen) != 0) return -1;
    size_t n = strlen(content);
    const char *at = last_occurrence(*out, *out_len, content, n);
    if (!at) { /* the template trims it */
        n = b - a;
        at = last_occurrence(*out, *out_len, content + a, n);
    }
    if (!at) {
        free(*out);
        *out = NULL;
        *out_len = 0;
        set_err(err, errlen, "the chat template does not write the last assistant turn's text as given, so "
                "the answer cannot continue it");
        return -1;
    }
    *out_len = (size_t)(at - *out) + n;
    (*out)[*out_len] = 0;
    return 0;
}

int chat_template_render(const chat_template *t, const chat_message *msgs, int n_msgs,
                         const chat_template_vars *vars, char **out, size_t *out_len,
                         char *err, size_t errlen)
{
    char dummy[1];
    if (!err || !errlen) { err = dummy; errlen = sizeof dummy; }
    err[0] = '\0';
    if (out) *out = NULL;
    if (out_len) *out_len = 0;
    if (!t || !out || n_msgs < 0 || (n_msgs > 0 && !msgs)) {
        set_err(err, errlen, "invalid arguments");
        return -1;
    }
    for (int i = 0; i < n_msgs; i++)
        if (!msgs[i].role) { set_err(err, errlen, "message without a role"); return -1; }
    ct_buf prompt = {0};
    ct_ctx c = {0};
    c.arena.cap = CT_MAX_MEMORY;
    c.out = &prompt;
    c.vars_in = vars;
    c.err = err;
    c.errlen = errlen;
    int r = bind_globals(&c, msgs, n_msgs, vars);
    if (r == 0) {
        c.frame = c.n_vars;   /* template-level {% set %} goes above the globals */
        r = ct_render_nodes(&c, t->root);
    }
    /* break/continue outside a loop come back as positive values */
    if (r > 0) r = ct_fail(&c, 0, "break or continue outside a loop");
    ct_arena_free(&c.arena);
    free(c.vars);
    if (r) {
        free(prompt.p);
        if (!c.failed) set_err(err, errlen, "render failed");
        return -1;
    }
    if (!prompt.p && !(prompt.p = calloc(1, 1))) {
        set_err(err, errlen, "out of memory");
        return -1;
    }
    *out = prompt.p;
    if (out_len) *out_len = prompt.n;
    return 0;
}

const char chat_template_default_source[] =
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/* Written out in C rather than through the interpreter: the fallback must
 * work whatever happens to the interpreter, and it is four lines. */
int chat_template_render_default(const chat_message *msgs, int n_msgs,
                                 const chat_template_vars *vars, char **out, size_t *out_len,
                                 char *err, size_t errlen)
{
    if (out) *out = NULL;
    if (out_len) *out_len = 0;
    if (!out || n_msgs < 0 || (n_msgs > 0 && !msgs)) {
        set_err(err, errlen, "invalid arguments");
        return -1;
    }
    ct_buf b = {0};
    int r = 0;
    for (int i = 0; i < n_msgs && r == 0; i++) {
        const char *role = msgs[i].role, *content = msgs[i].content ? msgs[i].content : "";
        if (!role) { free(b.p); set_err(err, errlen, "message without a role"); return -1; }
        r = ct_buf_put(&b, "<|im_start|>", 12) || ct_buf_put(&b, role, strlen(role)) ||
            ct_buf_put(&b, "\n", 1) || ct_buf_put(&b, content, strlen(content)) ||
            ct_buf_put(&b, "<|im_end|>\n", 11);
    }
    if (r == 0 && vars && vars->add_generation_prompt)
        r = ct_buf_put(&b, "<|im_start|>assistant\n", 22);
    if (r == 0 && !b.p && !(b.p = calloc(1, 1))) r = -1;
    if (r) {
        free(b.p);
        set_err(err, errlen, "prompt too large");
        return -1;
    }
    *out = b.p;
    if (out_len) *out_len = b.n;
    return 0;
}
