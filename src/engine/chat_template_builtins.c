/* chat_template_builtins.c: the filters, tests, methods and global functions
 * chat templates call: the list in docs/chat-templates.md, no more. Filter
 * and test names are checked at parse time (ct_filter_known,
 * ct_test_known) so that a typo is a syntax error with a line number.
 *
 * Text is UTF-8; length and indexing count code points as Python does, but
 * case mapping (upper, lower, title, capitalize) is ASCII only: templates use
 * it on role names. Every operation charges its input size to the step
 * budget (ct_work), so a loop over a huge string cannot hang.
 * Not here: operators and statements (chat_template_eval.c). */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/chat_template_private.h"

/* 2024-07-26 00:00:00 UTC: the fixed date of reproducible renders */
#define CT_FIXED_NOW 1721952000LL

static const char *const filter_names[] = {
    "trim", "length", "count", "upper", "lower", "tojson", "default", "d", "first", "last",
    "join", "replace", "string", "capitalize", "title", "list", "selectattr", "rejectattr",
    "map", "items", "int", "float", "abs", "reverse", "safe", NULL};

static const char *const test_names[] = {
    "defined", "undefined", "none", "string", "number", "integer", "float", "mapping",
    "iterable", "sequence", "true", "false", "boolean", "equalto", "eq", "ne", "sameas",
    "odd", "even", "divisibleby", "lower", "upper", "in", NULL};

static int known(const char *const *names, ct_str name)
{
    for (int i = 0; names[i]; i++)
        if (ct_str_eq(name, names[i])) return 1;
    return 0;
}

int ct_filter_known(ct_str name) { return known(filter_names, name); }
int ct_test_known(ct_str name) { return known(test_names, name); }

/* ---- argument helpers ---- */

/* Argument `pos` positionally, or by keyword name; NULL when absent. */
static const ct_value *arg(const ct_value *args, const ct_str *kw, int n, int pos, const char *name)
{
    int positional = 0;
    for (int i = 0; i < n; i++) {
        if (kw && kw[i].n) {
            if (name && ct_str_eq(kw[i], name)) return &args[i];
        } else if (positional++ == pos) {
            return &args[i];
        }
    }
    return NULL;
}

static int need_str(ct_ctx *c, int line, const ct_value *v, const char *what, ct_str *out)
{
    if (!v || v->kind != CT_STR)
        return ct_fail(c, line, "%s needs a string argument", what);
    *out = v->u.str;
    return 0;
}

static ct_value list_value(ct_list *l) { ct_value v = {0}; v.kind = CT_LIST; v.u.list = l; return v; }

static int is_ws(char ch) { return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v'; }

static int in_set(char ch, const ct_str *chars)
{
    return chars ? memchr(chars->s, ch, chars->n) != NULL : is_ws(ch);
}

/* Python's str.strip family; chars NULL = whitespace. */
static ct_str strip(ct_str s, const ct_str *chars, int left, int right)
{
    size_t a = 0, b = s.n;
    while (left && a < b && in_set(s.s[a], chars)) a++;
    while (right && b > a && in_set(s.s[b - 1], chars)) b--;
    ct_str r = {s.s + a, b - a};
    return r;
}

enum { CASE_UPPER, CASE_LOWER, CASE_TITLE, CASE_CAPITALIZE };

static int change_case(ct_ctx *c, int line, ct_str s, int mode, ct_value *out)
{
    char *o = ct_alloc(&c->arena, s.n + 1);
    if (!o) return ct_oom(c, line);
    int prev_alpha = 0;
    for (size_t i = 0; i < s.n; i++) {
        unsigned char ch = (unsigned char)s.s[i];
        int up;
        switch (mode) {
        case CASE_UPPER: up = 1; break;
        case CASE_LOWER: up = 0; break;
        case CASE_TITLE: up = !prev_alpha; break;
        default: up = i == 0; break;
        }
        o[i] = (char)(ch < 0x80 ? (up ? toupper(ch) : tolower(ch)) : ch);
        prev_alpha = ch < 0x80 ? isalpha(ch) != 0 : 1;
    }
    *out = ct_string(o, s.n);
    return 0;
}

static int replace(ct_ctx *c, int line, ct_str s, ct_str from, ct_str to, long long count,
                   ct_value *out)
{
    if (from.n == 0) { *out = ct_string(s.s, s.n); return 0; }   /* rare; kept simple */
    ct_buf b = {0};
    size_t i = 0;
    long long done = 0;
    int r = 0;
    while (i < s.n && r == 0) {
        if ((count < 0 || done < count) && i + from.n <= s.n && memcmp(s.s + i, from.s, from.n) == 0) {
            r = ct_buf_put(&b, to.s, to.n);
            i += from.n;
            done++;
        } else {
            size_t j = i + 1;
            while (j < s.n && s.s[j] != from.s[0]) j++;
            r = ct_buf_put(&b, s.s + i, j - i);
            i = j;
        }
    }
    char *o = r == 0 ? ct_strdup(&c->arena, b.p ? b.p : "", b.n) : NULL;
    size_t n = b.n;
    free(b.p);
    if (!o) return ct_oom(c, line);
    *out = ct_string(o, n);
    return 0;
}

static int starts_or_ends(ct_ctx *c, int line, ct_str s, const ct_value *x, int at_end, int *result)
{
    *result = 0;
    if (x && x->kind == CT_LIST) {   /* a tuple of candidates */
        for (size_t i = 0; i < x->u.list->n && !*result; i++)
            if (starts_or_ends(c, line, s, &x->u.list->items[i], at_end, result)) return -1;
        return 0;
    }
    ct_str p = {0};
    if (need_str(c, line, x, at_end ? "endswith" : "startswith", &p)) return -1;
    if (p.n <= s.n) *result = memcmp(at_end ? s.s + s.n - p.n : s.s, p.s, p.n) == 0;
    return 0;
}

/* Python's str.split: sep NULL splits on runs of whitespace and drops empty
 * pieces; otherwise splits exactly at sep. */
static int split(ct_ctx *c, int line, ct_str s, const ct_str *sep, long long maxsplit, ct_value *out)
{
    size_t cap = 8, n = 0;
    ct_str *parts = malloc(cap * sizeof *parts);
    if (!parts) return ct_oom(c, line);
    size_t i = 0;
    int r = 0;
    if (sep && sep->n == 0) { free(parts); return ct_fail(c, line, "split: empty separator"); }
    for (;;) {
        size_t start, end;
        if (!sep) {
            while (i < s.n && is_ws(s.s[i])) i++;
            if (i >= s.n) break;
            start = i;
            if (maxsplit >= 0 && (long long)n >= maxsplit) {
                end = s.n;
                while (end > start && is_ws(s.s[end - 1])) end--;
                i = s.n;
            } else {
                while (i < s.n && !is_ws(s.s[i])) i++;
                end = i;
            }
        } else {
            start = i;
            end = s.n;
            if (maxsplit < 0 || (long long)n < maxsplit)
                for (size_t k = i; k + sep->n <= s.n; k++)
                    if (memcmp(s.s + k, sep->s, sep->n) == 0) { end = k; break; }
            i = end + sep->n;
        }
        if (n == cap) {
            ct_str *p = realloc(parts, cap * 2 * sizeof *p);
            if (!p) { r = ct_oom(c, line); break; }
            parts = p;
            cap *= 2;
        }
        parts[n].s = s.s + start;
        parts[n].n = end - start;
        n++;
        if (sep && end >= s.n) break;
    }
    ct_list *l = r == 0 ? ct_list_new(&c->arena, n) : NULL;
    if (r == 0 && !l) r = ct_oom(c, line);
    for (size_t k = 0; r == 0 && k < n; k++) l->items[k] = ct_string(parts[k].s, parts[k].n);
    free(parts);
    if (r == 0) *out = list_value(l);
    return r;
}

static int items_of(ct_ctx *c, int line, const ct_dict *d, int which, ct_value *out)
{
    /* which: 0 items (pairs), 1 keys, 2 values */
    ct_list *l = ct_list_new(&c->arena, d->n);
    if (!l) return ct_oom(c, line);
    for (size_t i = 0; i < d->n; i++) {
        ct_value key = ct_string(d->keys[i].s, d->keys[i].n);
        if (which == 1) { l->items[i] = key; continue; }
        if (which == 2) { l->items[i] = d->vals[i]; continue; }
        ct_list *pair = ct_list_new(&c->arena, 2);
        if (!pair) return ct_oom(c, line);
        pair->items[0] = key;
        pair->items[1] = d->vals[i];
        l->items[i] = list_value(pair);
    }
    *out = list_value(l);
    return 0;
}

static int to_list(ct_ctx *c, int line, ct_value v, ct_list **out)
{
    static ct_list empty;
    *out = &empty;
    if (v.kind == CT_LIST) { *out = v.u.list; return 0; }
    if (v.kind == CT_UNDEF || v.kind == CT_NONE) return 0;
    if (v.kind == CT_DICT) {
        ct_value keys;
        if (items_of(c, line, v.u.dict, 1, &keys)) return -1;
        *out = keys.u.list;
        return 0;
    }
    if (v.kind == CT_STR) {
        size_t n = ct_utf8_len(v.u.str), a = 0;
        ct_list *l = ct_list_new(&c->arena, n);
        if (!l) return ct_oom(c, line);
        for (size_t i = 0; i < n; i++) {
            size_t b = a + 1;
            while (b < v.u.str.n && ((unsigned char)v.u.str.s[b] & 0xC0) == 0x80) b++;
            l->items[i] = ct_string(v.u.str.s + a, b - a);
            a = b;
        }
        *out = l;
        return 0;
    }
    return ct_fail(c, line, "a %s is not iterable", ct_kind_name(v.kind));
}

/* ---- tests ---- */

static int test_by_name(ct_ctx *c, int line, ct_str name, ct_value v, const ct_value *args, int n,
                        int *result)
{
    const ct_value *a0 = n > 0 ? &args[0] : NULL;
    ct_kind k = v.kind;
    if (ct_str_eq(name, "defined")) *result = k != CT_UNDEF;
    else if (ct_str_eq(name, "undefined")) *result = k == CT_UNDEF;
    else if (ct_str_eq(name, "none")) *result = k == CT_NONE;
    else if (ct_str_eq(name, "string")) *result = k == CT_STR;
    else if (ct_str_eq(name, "number")) *result = k == CT_INT || k == CT_FLOAT;
    else if (ct_str_eq(name, "integer")) *result = k == CT_INT;
    else if (ct_str_eq(name, "float")) *result = k == CT_FLOAT;
    else if (ct_str_eq(name, "boolean")) *result = k == CT_BOOL;
    else if (ct_str_eq(name, "mapping")) *result = k == CT_DICT;
    else if (ct_str_eq(name, "iterable")) *result = k == CT_LIST || k == CT_DICT || k == CT_STR;
    else if (ct_str_eq(name, "sequence")) *result = k == CT_LIST || k == CT_DICT || k == CT_STR;
    else if (ct_str_eq(name, "true")) *result = k == CT_BOOL && v.u.b;
    else if (ct_str_eq(name, "false")) *result = k == CT_BOOL && !v.u.b;
    else if (ct_str_eq(name, "lower") || ct_str_eq(name, "upper")) {
        int want_upper = ct_str_eq(name, "upper");
        *result = k == CT_STR;
        for (size_t i = 0; *result && i < v.u.str.n; i++) {
            unsigned char ch = (unsigned char)v.u.str.s[i];
            if (want_upper ? islower(ch) : isupper(ch)) *result = 0;
        }
    } else if (ct_str_eq(name, "odd") || ct_str_eq(name, "even") || ct_str_eq(name, "divisibleby")) {
        long long d = 2;
        if (ct_str_eq(name, "divisibleby")) {
            if (!a0 || a0->kind != CT_INT || a0->u.i == 0)
                return ct_fail(c, line, "divisibleby needs a non-zero integer");
            d = a0->u.i;
        }
        if (k != CT_INT) return ct_fail(c, line, "test '%.*s' needs an integer", (int)name.n, name.s);
        long long m = d == -1 ? 0 : v.u.i % d;
        *result = ct_str_eq(name, "odd") ? m != 0 : m == 0;
    } else {
        /* equalto, eq, ne, sameas, in: all take one argument */
        if (!a0) return ct_fail(c, line, "test '%.*s' needs an argument", (int)name.n, name.s);
        if (ct_str_eq(name, "in")) {
            ct_list *l;
            if (a0->kind == CT_STR && v.kind == CT_STR) {
                *result = 0;
                if (ct_work(c, line, a0->u.str.n)) return -1;
                for (size_t i = 0; i + v.u.str.n <= a0->u.str.n && !*result; i++)
                    *result = memcmp(a0->u.str.s + i, v.u.str.s, v.u.str.n) == 0;
                return 0;
            }
            if (a0->kind == CT_DICT) {
                *result = v.kind == CT_STR && ct_dict_get(a0->u.dict, v.u.str) != NULL;
                return 0;
            }
            if (to_list(c, line, *a0, &l) || ct_work(c, line, l->n)) return -1;
            *result = 0;
            for (size_t i = 0; i < l->n && !*result; i++) *result = ct_equal(l->items[i], v);
            return 0;
        }
        if (ct_str_eq(name, "sameas") && (k == CT_LIST || k == CT_DICT))
            *result = a0->kind == k && (k == CT_LIST ? a0->u.list == v.u.list : a0->u.dict == v.u.dict);
        else
            *result = ct_equal(v, *a0);
        if (ct_str_eq(name, "ne")) *result = !*result;
    }
    return 0;
}

int ct_apply_test(ct_ctx *c, const ct_expr *e, ct_value v, const ct_value *args, int n, int *result)
{
    return test_by_name(c, e->line, e->name, v, args, n, result);
}

/* ---- filters ---- */

static int filter_by_name(ct_ctx *c, int line, ct_str name, ct_value v, const ct_value *args,
                          const ct_str *kw, int n, ct_value *out);

/* selectattr / rejectattr: attr [, test [, arg]] */
static int select_attr(ct_ctx *c, int line, ct_value v, const ct_value *args, const ct_str *kw,
                       int n, int reject, ct_value *out)
{
    ct_list *l;
    ct_str attr, test = ct_cstr("truthy");
    const ct_value *t = arg(args, kw, n, 1, NULL);
    if (to_list(c, line, v, &l) || need_str(c, line, arg(args, kw, n, 0, NULL), "selectattr", &attr))
        return -1;
    if (t && need_str(c, line, t, "selectattr test", &test)) return -1;
    if (t && !ct_test_known(test))
        return ct_fail(c, line, "unknown test '%.*s'", (int)test.n, test.s);
    const ct_value *targ = arg(args, kw, n, 2, NULL);
    ct_list *res = ct_list_new(&c->arena, l->n);
    if (!res || ct_work(c, line, l->n)) return c->failed ? -1 : ct_oom(c, line);
    size_t k = 0;
    for (size_t i = 0; i < l->n; i++) {
        ct_value field;
        int ok;
        if (ct_getattr(c, line, l->items[i], attr, &field)) return -1;
        if (!t) ok = ct_truthy(field);
        else if (test_by_name(c, line, test, field, targ, targ ? 1 : 0, &ok)) return -1;
        if (ok != reject) res->items[k++] = l->items[i];
    }
    res->n = k;
    *out = list_value(res);
    return 0;
}

/* map(attribute='x' [, default=...]) or map('filter', args...) */
static int map_filter(ct_ctx *c, int line, ct_value v, const ct_value *args, const ct_str *kw,
                      int n, ct_value *out)
{
    ct_list *l;
    if (to_list(c, line, v, &l)) return -1;
    const ct_value *attr = arg(args, kw, n, -1, "attribute");
    const ct_value *dflt = arg(args, kw, n, -1, "default");
    ct_str fname = {0}, attr_name = {0};
    if (attr) {
        if (need_str(c, line, attr, "map attribute", &attr_name)) return -1;
    } else {
        if (need_str(c, line, arg(args, kw, n, 0, NULL), "map", &fname)) return -1;
        if (!ct_filter_known(fname) || ct_str_eq(fname, "map"))
            return ct_fail(c, line, "unknown filter '%.*s'", (int)fname.n, fname.s);
    }
    ct_list *res = ct_list_new(&c->arena, l->n);
    if (!res || ct_work(c, line, l->n)) return c->failed ? -1 : ct_oom(c, line);
    for (size_t i = 0; i < l->n; i++) {
        if (attr) {
            if (ct_getattr(c, line, l->items[i], attr_name, &res->items[i])) return -1;
            if (res->items[i].kind == CT_UNDEF && dflt) res->items[i] = *dflt;
        } else if (filter_by_name(c, line, fname, l->items[i], args + 1, kw ? kw + 1 : NULL, n - 1,
                                  &res->items[i])) {
            return -1;
        }
    }
    *out = list_value(res);
    return 0;
}

static int join_filter(ct_ctx *c, int line, ct_value v, const ct_value *args, const ct_str *kw,
                       int n, ct_value *out)
{
    ct_list *l;
    ct_str sep = {"", 0}, attr = {0};
    const ct_value *s = arg(args, kw, n, 0, "d"), *a = arg(args, kw, n, 1, "attribute");
    if (to_list(c, line, v, &l)) return -1;
    if (s && need_str(c, line, s, "join", &sep)) return -1;
    if (a && need_str(c, line, a, "join attribute", &attr)) return -1;
    ct_buf b = {0};
    int r = ct_work(c, line, l->n);
    for (size_t i = 0; r == 0 && i < l->n; i++) {
        ct_value item = l->items[i];
        if (a && ct_getattr(c, line, item, attr, &item)) { r = -1; break; }
        if ((i && ct_buf_put(&b, sep.s, sep.n)) || ct_write_str(&b, item)) r = ct_oom(c, line);
    }
    char *o = r == 0 ? ct_strdup(&c->arena, b.p ? b.p : "", b.n) : NULL;
    size_t len = b.n;
    free(b.p);
    if (r) return r;
    if (!o) return ct_oom(c, line);
    *out = ct_string(o, len);
    return 0;
}

static int length_of(ct_ctx *c, int line, ct_value v, ct_value *out)
{
    switch (v.kind) {
    case CT_STR: *out = ct_int((long long)ct_utf8_len(v.u.str)); return 0;
    case CT_LIST: *out = ct_int((long long)v.u.list->n); return 0;
    case CT_DICT: *out = ct_int((long long)v.u.dict->n); return 0;
    case CT_UNDEF: *out = ct_int(0); return 0;
    default: return ct_fail(c, line, "a %s has no length", ct_kind_name(v.kind));
    }
}

static int filter_by_name(ct_ctx *c, int line, ct_str name, ct_value v, const ct_value *args,
                          const ct_str *kw, int n, ct_value *out)
{
    if (v.kind == CT_STR && ct_work(c, line, v.u.str.n)) return -1;
    const ct_value *a0 = arg(args, kw, n, 0, NULL);
    ct_str s = {0};
    if (ct_str_eq(name, "default") || ct_str_eq(name, "d")) {
        const ct_value *bool_mode = arg(args, kw, n, 1, "boolean");
        const ct_value *dv = arg(args, kw, n, 0, "default_value");
        int use_default = bool_mode && ct_truthy(*bool_mode) ? !ct_truthy(v) : v.kind == CT_UNDEF;
        *out = use_default ? (dv ? *dv : ct_string("", 0)) : v;
        return 0;
    }
    if (ct_str_eq(name, "length") || ct_str_eq(name, "count")) return length_of(c, line, v, out);
    if (ct_str_eq(name, "safe")) { *out = v; return 0; }
    if (ct_str_eq(name, "tojson")) {
        const ct_value *ind = arg(args, kw, n, 0, "indent");
        int indent = -1;
        if (ind && ind->kind == CT_INT) indent = ind->u.i < 0 ? 0 : ind->u.i > 16 ? 16 : (int)ind->u.i;
        ct_buf b = {0};
        int r = ct_write_json(&b, v, indent, 0);
        char *o = r == 0 ? ct_strdup(&c->arena, b.p ? b.p : "", b.n) : NULL;
        size_t len = b.n;
        free(b.p);
        if (!o) return ct_oom(c, line);
        if (ct_work(c, line, len)) return -1;
        *out = ct_string(o, len);
        return 0;
    }
    if (ct_str_eq(name, "first") || ct_str_eq(name, "last")) {
        ct_list *l;
        if (to_list(c, line, v, &l)) return -1;
        *out = l->n == 0 ? ct_undef() : l->items[ct_str_eq(name, "first") ? 0 : l->n - 1];
        return 0;
    }
    if (ct_str_eq(name, "list")) {
        ct_list *l;
        if (to_list(c, line, v, &l)) return -1;
        *out = list_value(l);
        return 0;
    }
    if (ct_str_eq(name, "reverse")) {
        ct_list *l;
        if (v.kind == CT_STR) {
            /* reverse by code point */
            if (to_list(c, line, v, &l)) return -1;
            char *o = ct_alloc(&c->arena, v.u.str.n + 1);
            if (!o) return ct_oom(c, line);
            size_t k = 0;
            for (size_t i = l->n; i-- > 0;) {
                memcpy(o + k, l->items[i].u.str.s, l->items[i].u.str.n);
                k += l->items[i].u.str.n;
            }
            *out = ct_string(o, k);
            return 0;
        }
        if (to_list(c, line, v, &l)) return -1;
        ct_list *r = ct_list_new(&c->arena, l->n);
        if (!r || ct_work(c, line, l->n)) return c->failed ? -1 : ct_oom(c, line);
        for (size_t i = 0; i < l->n; i++) r->items[i] = l->items[l->n - 1 - i];
        *out = list_value(r);
        return 0;
    }
    if (ct_str_eq(name, "items")) {
        if (v.kind == CT_UNDEF) { *out = list_value(ct_list_new(&c->arena, 0)); return out->u.list ? 0 : ct_oom(c, line); }
        if (v.kind != CT_DICT) return ct_fail(c, line, "items needs a dict, not %s", ct_kind_name(v.kind));
        return items_of(c, line, v.u.dict, 0, out);
    }
    if (ct_str_eq(name, "selectattr")) return select_attr(c, line, v, args, kw, n, 0, out);
    if (ct_str_eq(name, "rejectattr")) return select_attr(c, line, v, args, kw, n, 1, out);
    if (ct_str_eq(name, "map")) return map_filter(c, line, v, args, kw, n, out);
    if (ct_str_eq(name, "join")) return join_filter(c, line, v, args, kw, n, out);
    if (ct_str_eq(name, "int")) {
        if (v.kind == CT_INT) *out = v;
        else if (v.kind == CT_BOOL) *out = ct_int(v.u.b);
        else if (v.kind == CT_FLOAT && isfinite(v.u.f) && fabs(v.u.f) < 9e18) *out = ct_int((long long)v.u.f);
        else if (v.kind == CT_STR) {
            char tmp[32];
            size_t k = v.u.str.n < sizeof tmp - 1 ? v.u.str.n : sizeof tmp - 1;
            memcpy(tmp, v.u.str.s, k);
            tmp[k] = '\0';
            *out = ct_int(strtoll(tmp, NULL, 10));
        } else *out = a0 ? *a0 : ct_int(0);
        return 0;
    }
    if (ct_str_eq(name, "float")) {
        if (v.kind == CT_INT || v.kind == CT_BOOL) *out = ct_float(v.kind == CT_INT ? (double)v.u.i : v.u.b);
        else if (v.kind == CT_FLOAT) *out = v;
        else if (v.kind == CT_STR) {
            char tmp[64];
            size_t k = v.u.str.n < sizeof tmp - 1 ? v.u.str.n : sizeof tmp - 1;
            memcpy(tmp, v.u.str.s, k);
            tmp[k] = '\0';
            *out = ct_float(strtod(tmp, NULL));
        } else *out = ct_float(0);
        return 0;
    }
    if (ct_str_eq(name, "abs")) {
        if (v.kind == CT_INT && v.u.i != (long long)(-9223372036854775807LL - 1)) *out = ct_int(v.u.i < 0 ? -v.u.i : v.u.i);
        else if (v.kind == CT_FLOAT) *out = ct_float(fabs(v.u.f));
        else return ct_fail(c, line, "abs needs a number");
        return 0;
    }
    /* the rest work on text */
    if (ct_to_str(c, line, v, &s)) return -1;
    if (ct_str_eq(name, "string")) { *out = ct_string(s.s, s.n); return 0; }
    if (ct_str_eq(name, "trim")) {
        ct_str chars = {0}, r = {0};
        const ct_value *ch = arg(args, kw, n, 0, "chars");
        if (ch && ch->kind == CT_STR) { chars = ch->u.str; r = strip(s, &chars, 1, 1); }
        else r = strip(s, NULL, 1, 1);
        *out = ct_string(r.s, r.n);
        return 0;
    }
    if (ct_str_eq(name, "upper")) return change_case(c, line, s, CASE_UPPER, out);
    if (ct_str_eq(name, "lower")) return change_case(c, line, s, CASE_LOWER, out);
    if (ct_str_eq(name, "title")) return change_case(c, line, s, CASE_TITLE, out);
    if (ct_str_eq(name, "capitalize")) return change_case(c, line, s, CASE_CAPITALIZE, out);
    if (ct_str_eq(name, "replace")) {
        ct_str from = {0}, to = {0};
        const ct_value *cnt = arg(args, kw, n, 2, "count");
        if (need_str(c, line, a0, "replace", &from) ||
            need_str(c, line, arg(args, kw, n, 1, NULL), "replace", &to))
            return -1;
        return replace(c, line, s, from, to, cnt && cnt->kind == CT_INT ? cnt->u.i : -1, out);
    }
    return ct_fail(c, line, "unknown filter '%.*s'", (int)name.n, name.s);
}

int ct_apply_filter(ct_ctx *c, const ct_expr *e, ct_value v, const ct_value *args,
                    const ct_str *kw, int n, ct_value *out)
{
    return filter_by_name(c, e->line, e->name, v, args, kw, n, out);
}

/* ---- methods ---- */

static int string_method(ct_ctx *c, int line, ct_str s, ct_str name, const ct_value *args,
                         const ct_str *kw, int n, ct_value *out)
{
    const ct_value *a0 = arg(args, kw, n, 0, NULL);
    if (ct_work(c, line, s.n)) return -1;
    int left = ct_str_eq(name, "strip") || ct_str_eq(name, "lstrip");
    int right = ct_str_eq(name, "strip") || ct_str_eq(name, "rstrip");
    if (left || right) {
        ct_str chars = {0}, r = {0};
        if (a0 && a0->kind == CT_STR) { chars = a0->u.str; r = strip(s, &chars, left, right); }
        else r = strip(s, NULL, left, right);
        *out = ct_string(r.s, r.n);
        return 0;
    }
    if (ct_str_eq(name, "startswith") || ct_str_eq(name, "endswith")) {
        int r;
        if (starts_or_ends(c, line, s, a0, ct_str_eq(name, "endswith"), &r)) return -1;
        *out = ct_bool(r);
        return 0;
    }
    if (ct_str_eq(name, "split")) {
        const ct_value *sep = arg(args, kw, n, 0, "sep"), *maxs = arg(args, kw, n, 1, "maxsplit");
        long long m = maxs && maxs->kind == CT_INT ? maxs->u.i : -1;
        if (sep && sep->kind == CT_STR) return split(c, line, s, &sep->u.str, m, out);
        return split(c, line, s, NULL, m, out);
    }
    /* these methods and the filters of the same name are one operation */
    if (ct_str_eq(name, "upper") || ct_str_eq(name, "lower") || ct_str_eq(name, "title") ||
        ct_str_eq(name, "capitalize") || ct_str_eq(name, "replace"))
        return filter_by_name(c, line, name, ct_string(s.s, s.n), args, kw, n, out);
    if (ct_str_eq(name, "find")) {
        ct_str sub = {0};
        if (need_str(c, line, a0, "find", &sub)) return -1;
        *out = ct_int(-1);
        for (size_t i = 0; i + sub.n <= s.n; i++)
            if (memcmp(s.s + i, sub.s, sub.n) == 0) {
                *out = ct_int((long long)ct_utf8_len((ct_str){s.s, i}));
                break;
            }
        return 0;
    }
    if (ct_str_eq(name, "join")) {
        ct_value sep = ct_string(s.s, s.n);
        ct_str d = ct_cstr("d");
        if (!a0) return ct_fail(c, line, "join needs a list");
        return join_filter(c, line, *a0, &sep, &d, 1, out);
    }
    return ct_fail(c, line, "strings have no method '%.*s'", (int)name.n, name.s);
}

int ct_call_method(ct_ctx *c, int line, ct_value obj, ct_str name, const ct_value *args,
                   const ct_str *kw, int n, ct_value *out)
{
    *out = ct_undef();
    if (obj.kind == CT_STR) return string_method(c, line, obj.u.str, name, args, kw, n, out);
    if (obj.kind == CT_DICT) {
        if (ct_str_eq(name, "items")) return items_of(c, line, obj.u.dict, 0, out);
        if (ct_str_eq(name, "keys")) return items_of(c, line, obj.u.dict, 1, out);
        if (ct_str_eq(name, "values")) return items_of(c, line, obj.u.dict, 2, out);
        if (ct_str_eq(name, "get")) {
            const ct_value *key = arg(args, kw, n, 0, NULL), *dflt = arg(args, kw, n, 1, "default");
            const ct_value *v = key && key->kind == CT_STR ? ct_dict_get(obj.u.dict, key->u.str) : NULL;
            *out = v ? *v : dflt ? *dflt : ct_none();
            return 0;
        }
        /* a macro stored in a dict could be called; templates don't do that */
    }
    if (obj.kind == CT_UNDEF)
        return ct_fail(c, line, "cannot call '%.*s' on an undefined value", (int)name.n, name.s);
    return ct_fail(c, line, "a %s has no method '%.*s'", ct_kind_name(obj.kind), (int)name.n, name.s);
}

/* ---- global functions ---- */

static int range_fn(ct_ctx *c, int line, const ct_value *args, int n, ct_value *out)
{
    long long v[3] = {0, 0, 1};
    if (n < 1 || n > 3) return ct_fail(c, line, "range takes 1 to 3 arguments");
    for (int i = 0; i < n; i++) {
        if (args[i].kind != CT_INT) return ct_fail(c, line, "range needs integers");
        v[n == 1 ? 1 : i] = args[i].u.i;
    }
    long long start = v[0], stop = v[1], step = v[2];
    if (step == 0) return ct_fail(c, line, "range step cannot be zero");
    /* count computed in double to avoid overflow on extreme bounds */
    double count = step > 0 ? ceil(((double)stop - (double)start) / (double)step)
                            : ceil(((double)start - (double)stop) / -(double)step);
    if (count < 0) count = 0;
    if (count > CT_MAX_RANGE)
        return ct_fail(c, line, "range too large (more than %d elements)", CT_MAX_RANGE);
    ct_list *l = ct_list_new(&c->arena, (size_t)count);
    if (!l || ct_work(c, line, (size_t)count)) return c->failed ? -1 : ct_oom(c, line);
    for (size_t i = 0; i < l->n; i++) l->items[i] = ct_int(start + (long long)i * step);
    *out = list_value(l);
    return 0;
}

static int strftime_now(ct_ctx *c, int line, const ct_value *fmtv, ct_value *out)
{
    ct_str fmt = {0};
    if (need_str(c, line, fmtv, "strftime_now", &fmt)) return -1;
    if (fmt.n > 256) return ct_fail(c, line, "strftime_now format too long");
    char f[260], buf[1024];
    memcpy(f, fmt.s, fmt.n);
    f[fmt.n] = '\0';
    time_t now = c->vars_in && c->vars_in->now ? (time_t)c->vars_in->now : (time_t)CT_FIXED_NOW;
    struct tm tm;
    if (!gmtime_r(&now, &tm)) return ct_fail(c, line, "strftime_now: bad time");
    size_t k = f[0] ? strftime(buf, sizeof buf, f, &tm) : 0;
    char *o = ct_strdup(&c->arena, buf, k);
    if (!o) return ct_oom(c, line);
    *out = ct_string(o, k);
    return 0;
}

int ct_global_known(ct_str name)
{
    static const char *const names[] = {"raise_exception", "range", "namespace", "dict",
                                        "strftime_now", NULL};
    return known(names, name);
}

int ct_call_global(ct_ctx *c, int line, ct_str name, const ct_value *args, const ct_str *kw,
                   int n, ct_value *out)
{
    *out = ct_undef();
    if (ct_str_eq(name, "raise_exception")) {
        /* the message alone, no line: templates word it for the user */
        ct_str msg = {"template raised an exception", 28};
        if (n > 0) {
            if (ct_to_str(c, line, args[0], &msg)) return -1;
        }
        return ct_fail(c, 0, "%.*s", (int)msg.n, msg.s);
    }
    if (ct_str_eq(name, "range")) {
        for (int i = 0; i < n; i++)
            if (kw && kw[i].n) return ct_fail(c, line, "range takes no keyword arguments");
        return range_fn(c, line, args, n, out);
    }
    if (ct_str_eq(name, "namespace") || ct_str_eq(name, "dict")) {
        ct_dict *d = ct_dict_new(&c->arena);
        if (!d) return ct_oom(c, line);
        d->is_namespace = ct_str_eq(name, "namespace");
        for (int i = 0; i < n; i++) {
            if (kw && kw[i].n) {
                if (ct_dict_set(&c->arena, d, kw[i], args[i])) return ct_oom(c, line);
            } else if (args[i].kind == CT_DICT) {
                const ct_dict *src = args[i].u.dict;
                for (size_t k = 0; k < src->n; k++)
                    if (ct_dict_set(&c->arena, d, src->keys[k], src->vals[k])) return ct_oom(c, line);
            } else {
                return ct_fail(c, line, "%.*s takes keyword arguments", (int)name.n, name.s);
            }
        }
        out->kind = CT_DICT;
        out->u.dict = d;
        return 0;
    }
    if (ct_str_eq(name, "strftime_now")) return strftime_now(c, line, n ? &args[0] : NULL, out);
    return 1;
}
