/* chat_template_eval.c: renders a parsed chat template: statements (text,
 * output, if, for, set, macro) and expressions (names, attributes, indexing,
 * slicing, calls, operators with Python semantics).
 *
 * Scoping follows Jinja where templates notice it: a for loop body is its own
 * scope, fresh for every iteration, so {% set %} inside a loop does not leak
 * out (templates use namespace() for that); if blocks share their scope.
 * Variables live on one stack searched from the top; a scope is a mark on it.
 * Each iteration truncates the stack back to the mark, so a long loop does
 * not grow it.
 * Statement, expression and iteration counts are charged to the step budget;
 * recursion depth is bounded by the parser (nesting and expression height)
 * and by CT_MAX_CALL_DEPTH for macros.
 * Not here: filters, tests and methods (chat_template_builtins.c). */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/chat_template_private.h"

enum { FLOW_NONE = 0, FLOW_BREAK = 1, FLOW_CONTINUE = 2 };

/* ---- variables ---- */

static const ct_value *lookup(const ct_ctx *c, ct_str name)
{
    for (size_t i = c->n_vars; i-- > 0;)
        if (ct_str_same(c->vars[i].name, name)) return &c->vars[i].v;
    return NULL;
}

static int assign(ct_ctx *c, int line, ct_str name, ct_value v)
{
    for (size_t i = c->frame; i < c->n_vars; i++)
        if (ct_str_same(c->vars[i].name, name)) { c->vars[i].v = v; return 0; }
    if (c->n_vars == c->cap_vars) {
        size_t cap = c->cap_vars ? c->cap_vars * 2 : 16;
        ct_var *p = realloc(c->vars, cap * sizeof *p);
        if (!p) return ct_oom(c, line);
        c->vars = p;
        c->cap_vars = cap;
    }
    c->vars[c->n_vars].name = name;
    c->vars[c->n_vars].v = v;
    c->n_vars++;
    return 0;
}

/* ---- attribute and item access ---- */

int ct_getattr(ct_ctx *c, int line, ct_value obj, ct_str name, ct_value *out)
{
    *out = ct_undef();
    if (obj.kind == CT_DICT) {
        const ct_value *v = ct_dict_get(obj.u.dict, name);
        if (v) *out = *v;
    } else if (obj.kind == CT_LOOP) {
        const ct_loop *l = obj.u.loop;
        if (ct_str_eq(name, "index")) *out = ct_int(l->index0 + 1);
        else if (ct_str_eq(name, "index0")) *out = ct_int(l->index0);
        else if (ct_str_eq(name, "revindex")) *out = ct_int(l->length - l->index0);
        else if (ct_str_eq(name, "revindex0")) *out = ct_int(l->length - l->index0 - 1);
        else if (ct_str_eq(name, "first")) *out = ct_bool(l->index0 == 0);
        else if (ct_str_eq(name, "last")) *out = ct_bool(l->index0 == l->length - 1);
        else if (ct_str_eq(name, "length")) *out = ct_int(l->length);
        else if (ct_str_eq(name, "previtem")) *out = l->prev;
        else if (ct_str_eq(name, "nextitem")) *out = l->next;
    }
    (void)c;
    (void)line;
    return 0;
}

/* Byte offset of code point k in s (k <= number of code points). */
static size_t utf8_offset(ct_str s, size_t k)
{
    size_t i = 0;
    while (i < s.n && k) {
        i++;
        while (i < s.n && ((unsigned char)s.s[i] & 0xC0) == 0x80) i++;
        k--;
    }
    return i;
}

static int index_value(ct_ctx *c, int line, ct_value obj, ct_value key, ct_value *out)
{
    *out = ct_undef();
    if (obj.kind == CT_DICT || obj.kind == CT_LOOP) {
        if (key.kind != CT_STR) return 0;
        return ct_getattr(c, line, obj, key.u.str, out);
    }
    if (obj.kind != CT_LIST && obj.kind != CT_STR) return 0;
    if (key.kind != CT_INT && key.kind != CT_BOOL) {
        if (key.kind == CT_UNDEF) return 0;
        return ct_fail(c, line, "%s indices must be integers, not %s", ct_kind_name(obj.kind),
                       ct_kind_name(key.kind));
    }
    long long i = key.kind == CT_INT ? key.u.i : key.u.b;
    if (obj.kind == CT_LIST) {
        long long n = (long long)obj.u.list->n;
        if (i < 0) i += n;
        if (i >= 0 && i < n) *out = obj.u.list->items[i];
        return 0;
    }
    if (ct_work(c, line, obj.u.str.n)) return -1;
    long long n = (long long)ct_utf8_len(obj.u.str);
    if (i < 0) i += n;
    if (i < 0 || i >= n) return 0;
    size_t a = utf8_offset(obj.u.str, (size_t)i);
    size_t b = a + utf8_offset((ct_str){obj.u.str.s + a, obj.u.str.n - a}, 1);
    *out = ct_string(obj.u.str.s + a, b - a);
    return 0;
}

/* Python slice bounds for a sequence of n elements. */
static int slice_bounds(ct_ctx *c, int line, const ct_value *parts, long long n,
                        long long *start, long long *stop, long long *step)
{
    long long v[3];
    int given[3];
    for (int k = 0; k < 3; k++) {
        given[k] = parts[k].kind != CT_UNDEF && parts[k].kind != CT_NONE;
        if (given[k] && parts[k].kind != CT_INT)
            return ct_fail(c, line, "slice indices must be integers");
        v[k] = given[k] ? parts[k].u.i : 0;
    }
    *step = given[2] ? v[2] : 1;
    if (*step == 0) return ct_fail(c, line, "slice step cannot be zero");
    if (*step == LLONG_MIN) *step = -LLONG_MAX;
    long long lo = *step > 0 ? 0 : -1, hi = *step > 0 ? n : n - 1;
    for (int k = 0; k < 2; k++) {
        long long x;
        if (!given[k]) x = k == 0 ? (*step > 0 ? lo : hi) : (*step > 0 ? hi : lo);
        else {
            x = v[k];
            if (x < 0) { x = x < -n ? lo : x + n; if (x < lo) x = lo; }
            else if (x > hi) x = hi;
        }
        if (k == 0) *start = x; else *stop = x;
    }
    return 0;
}

static int slice_value(ct_ctx *c, int line, ct_value obj, const ct_value *parts, ct_value *out)
{
    *out = ct_undef();
    if (obj.kind != CT_LIST && obj.kind != CT_STR) {
        if (obj.kind == CT_UNDEF) return 0;
        return ct_fail(c, line, "cannot slice a %s", ct_kind_name(obj.kind));
    }
    int is_list = obj.kind == CT_LIST;
    long long n = is_list ? (long long)obj.u.list->n : (long long)ct_utf8_len(obj.u.str);
    long long start = 0, stop = 0, step = 1;
    if (slice_bounds(c, line, parts, n, &start, &stop, &step)) return -1;
    size_t count = 0;
    if (step > 0 && start < stop) count = (size_t)((stop - start + step - 1) / step);
    if (step < 0 && start > stop) count = (size_t)((start - stop + (-step) - 1) / (-step));
    if (ct_work(c, line, is_list ? count : obj.u.str.n)) return -1;
    if (is_list) {
        ct_list *l = ct_list_new(&c->arena, count);
        if (!l) return ct_oom(c, line);
        for (size_t k = 0; k < count; k++) l->items[k] = obj.u.list->items[start + (long long)k * step];
        out->kind = CT_LIST;
        out->u.list = l;
        return 0;
    }
    if (step == 1) {
        size_t a = utf8_offset(obj.u.str, (size_t)start);
        size_t b = utf8_offset(obj.u.str, (size_t)stop);
        *out = ct_string(obj.u.str.s + a, b - a);
        return 0;
    }
    /* general step: copy code point by code point */
    char *o = ct_alloc(&c->arena, obj.u.str.n + 1);
    if (!o) return ct_oom(c, line);
    size_t len = 0;
    for (size_t k = 0; k < count; k++) {
        size_t a = utf8_offset(obj.u.str, (size_t)(start + (long long)k * step));
        size_t b = a + utf8_offset((ct_str){obj.u.str.s + a, obj.u.str.n - a}, 1);
        memcpy(o + len, obj.u.str.s + a, b - a);
        len += b - a;
    }
    *out = ct_string(o, len);
    return 0;
}

/* ---- operators ---- */

static int numeric(ct_value v) { return v.kind == CT_INT || v.kind == CT_FLOAT || v.kind == CT_BOOL; }
static double to_double(ct_value v)
{
    return v.kind == CT_FLOAT ? v.u.f : v.kind == CT_INT ? (double)v.u.i : (double)v.u.b;
}
static long long to_int(ct_value v) { return v.kind == CT_INT ? v.u.i : v.u.b; }

static int concat_strings(ct_ctx *c, int line, ct_str a, ct_str b, ct_value *out)
{
    if (b.n == 0) { *out = ct_string(a.s, a.n); return 0; }
    if (a.n == 0) { *out = ct_string(b.s, b.n); return 0; }
    if (a.n > CT_MAX_MEMORY || b.n > CT_MAX_MEMORY) return ct_oom(c, line);
    if (ct_work(c, line, a.n + b.n)) return -1;
    char *o = ct_alloc(&c->arena, a.n + b.n + 1);
    if (!o) return ct_oom(c, line);
    memcpy(o, a.s, a.n);
    memcpy(o + a.n, b.s, b.n);
    *out = ct_string(o, a.n + b.n);
    return 0;
}

static int repeat(ct_ctx *c, int line, ct_value seq, long long times, ct_value *out)
{
    if (times < 0) times = 0;
    size_t unit = seq.kind == CT_STR ? seq.u.str.n : seq.u.list->n * sizeof(ct_value);
    if (unit && (unsigned long long)times > CT_MAX_MEMORY / unit) return ct_oom(c, line);
    if (ct_work(c, line, unit * (size_t)times)) return -1;
    if (seq.kind == CT_STR) {
        size_t n = seq.u.str.n * (size_t)times;
        char *o = ct_alloc(&c->arena, n + 1);
        if (!o) return ct_oom(c, line);
        for (long long k = 0; k < times; k++) memcpy(o + (size_t)k * seq.u.str.n, seq.u.str.s, seq.u.str.n);
        *out = ct_string(o, n);
        return 0;
    }
    size_t m = seq.u.list->n;
    ct_list *l = ct_list_new(&c->arena, m * (size_t)times);
    if (!l) return ct_oom(c, line);
    for (long long k = 0; k < times; k++)
        if (m) memcpy(l->items + (size_t)k * m, seq.u.list->items, m * sizeof(ct_value));
    out->kind = CT_LIST;
    out->u.list = l;
    return 0;
}

static int contains(ct_ctx *c, int line, ct_value hay, ct_value needle, int *result)
{
    *result = 0;
    switch (hay.kind) {
    case CT_STR:
        if (needle.kind != CT_STR)
            return ct_fail(c, line, "'in <string>' needs a string on the left, not %s",
                           ct_kind_name(needle.kind));
        if (ct_work(c, line, hay.u.str.n)) return -1;
        if (needle.u.str.n == 0) { *result = 1; return 0; }
        for (size_t i = 0; i + needle.u.str.n <= hay.u.str.n; i++)
            if (memcmp(hay.u.str.s + i, needle.u.str.s, needle.u.str.n) == 0) { *result = 1; break; }
        return 0;
    case CT_LIST:
        if (ct_work(c, line, hay.u.list->n)) return -1;
        for (size_t i = 0; i < hay.u.list->n; i++)
            if (ct_equal(hay.u.list->items[i], needle)) { *result = 1; break; }
        return 0;
    case CT_DICT:
        *result = needle.kind == CT_STR && ct_dict_get(hay.u.dict, needle.u.str) != NULL;
        return 0;
    case CT_UNDEF:
        return 0;
    default:
        return ct_fail(c, line, "'in' needs a string, list or dict on the right, not %s",
                       ct_kind_name(hay.kind));
    }
}

static int arith(ct_ctx *c, int line, int op, ct_value a, ct_value b, ct_value *out)
{
    if (!numeric(a) || !numeric(b))
        return ct_fail(c, line, "unsupported operand types for arithmetic: %s and %s",
                       ct_kind_name(a.kind), ct_kind_name(b.kind));
    int floats = a.kind == CT_FLOAT || b.kind == CT_FLOAT || op == CT_OP_DIV;
    if (!floats && op == CT_OP_POW && to_int(b) < 0) floats = 1;
    if (floats) {
        double x = to_double(a), y = to_double(b), r;
        if ((op == CT_OP_DIV || op == CT_OP_FLOORDIV || op == CT_OP_MOD) && y == 0.0)
            return ct_fail(c, line, "division by zero");
        switch (op) {
        case CT_OP_ADD: r = x + y; break;
        case CT_OP_SUB: r = x - y; break;
        case CT_OP_MUL: r = x * y; break;
        case CT_OP_DIV: r = x / y; break;
        case CT_OP_FLOORDIV: r = floor(x / y); break;
        case CT_OP_MOD: r = fmod(x, y); if (r != 0 && ((r < 0) != (y < 0))) r += y; break;
        default: r = pow(x, y); break;
        }
        *out = ct_float(r);
        return 0;
    }
    long long x = to_int(a), y = to_int(b), r = 0;
    int overflow = 0;
    switch (op) {
    case CT_OP_ADD: overflow = __builtin_add_overflow(x, y, &r); break;
    case CT_OP_SUB: overflow = __builtin_sub_overflow(x, y, &r); break;
    case CT_OP_MUL: overflow = __builtin_mul_overflow(x, y, &r); break;
    case CT_OP_FLOORDIV: case CT_OP_MOD:
        if (y == 0) return ct_fail(c, line, "division by zero");
        if (x == LLONG_MIN && y == -1) { overflow = 1; break; }
        r = op == CT_OP_MOD ? x % y : x / y;
        /* Python floors; C truncates toward zero */
        if (op == CT_OP_MOD && r != 0 && ((r < 0) != (y < 0))) r += y;
        if (op == CT_OP_FLOORDIV && (x % y != 0) && ((x < 0) != (y < 0))) r--;
        break;
    default:   /* POW, y >= 0 */
        r = 1;
        for (long long k = 0; k < y && !overflow; k++) {
            overflow = __builtin_mul_overflow(r, x, &r);
            if (r == 0 || r == 1) break;   /* stays put; also ends 1**huge */
            if (x == -1) { r = (y % 2) ? -1 : 1; break; }
        }
        break;
    }
    if (overflow) return ct_fail(c, line, "integer overflow");
    *out = ct_int(r);
    return 0;
}

static int binary(ct_ctx *c, const ct_expr *e, ct_value a, ct_value b, ct_value *out)
{
    int line = e->line, r;
    switch (e->op) {
    case CT_OP_CONCAT: {
        ct_str x = {0}, y = {0};
        if (ct_to_str(c, line, a, &x) || ct_to_str(c, line, b, &y)) return -1;
        return concat_strings(c, line, x, y, out);
    }
    case CT_OP_ADD:
        if (a.kind == CT_STR && b.kind == CT_STR) return concat_strings(c, line, a.u.str, b.u.str, out);
        if (a.kind == CT_LIST && b.kind == CT_LIST) {
            size_t n = a.u.list->n + b.u.list->n;
            if (ct_work(c, line, n)) return -1;
            ct_list *l = ct_list_new(&c->arena, n);
            if (!l) return ct_oom(c, line);
            if (a.u.list->n) memcpy(l->items, a.u.list->items, a.u.list->n * sizeof(ct_value));
            if (b.u.list->n) memcpy(l->items + a.u.list->n, b.u.list->items, b.u.list->n * sizeof(ct_value));
            out->kind = CT_LIST;
            out->u.list = l;
            return 0;
        }
        if (a.kind == CT_STR || b.kind == CT_STR)
            return ct_fail(c, line, "cannot add %s and %s (use ~ to join as text)",
                           ct_kind_name(a.kind), ct_kind_name(b.kind));
        return arith(c, line, e->op, a, b, out);
    case CT_OP_MUL:
        if ((a.kind == CT_STR || a.kind == CT_LIST) && (b.kind == CT_INT || b.kind == CT_BOOL))
            return repeat(c, line, a, to_int(b), out);
        if ((b.kind == CT_STR || b.kind == CT_LIST) && (a.kind == CT_INT || a.kind == CT_BOOL))
            return repeat(c, line, b, to_int(a), out);
        return arith(c, line, e->op, a, b, out);
    case CT_OP_SUB: case CT_OP_DIV: case CT_OP_FLOORDIV: case CT_OP_MOD: case CT_OP_POW:
        return arith(c, line, e->op, a, b, out);
    case CT_OP_EQ: case CT_OP_NE:
        if (a.kind == CT_STR && ct_work(c, line, a.u.str.n)) return -1;
        r = ct_equal(a, b);
        *out = ct_bool(e->op == CT_OP_EQ ? r : !r);
        return 0;
    case CT_OP_IN: case CT_OP_NOT_IN:
        if (contains(c, line, b, a, &r)) return -1;
        *out = ct_bool(e->op == CT_OP_IN ? r : !r);
        return 0;
    default:
        r = ct_compare(a, b);
        if (r == -2)
            return ct_fail(c, line, "cannot compare %s with %s", ct_kind_name(a.kind),
                           ct_kind_name(b.kind));
        switch (e->op) {
        case CT_OP_LT: *out = ct_bool(r < 0); break;
        case CT_OP_GT: *out = ct_bool(r > 0); break;
        case CT_OP_LE: *out = ct_bool(r <= 0); break;
        default: *out = ct_bool(r >= 0); break;
        }
        return 0;
    }
}

/* ---- calls ---- */

#define SMALL_ARGS 8

/* Evaluates e->args into vals (a caller's small array, or arena memory when
 * there are more). */
static int eval_args(ct_ctx *c, const ct_expr *e, ct_value *small, ct_value **vals)
{
    *vals = small;
    if (e->n_args > SMALL_ARGS) {
        *vals = ct_alloc(&c->arena, (size_t)e->n_args * sizeof(ct_value));
        if (!*vals) return ct_oom(c, e->line);
    }
    for (int i = 0; i < e->n_args; i++)
        if (ct_eval(c, e->args[i], &(*vals)[i])) return -1;
    return 0;
}

static int call_macro(ct_ctx *c, const ct_expr *e, const ct_node *m, const ct_value *args,
                      ct_value *out)
{
    if (c->call_depth >= CT_MAX_CALL_DEPTH)
        return ct_fail(c, e->line, "macro calls nested too deeply (more than %d)", CT_MAX_CALL_DEPTH);
    size_t saved_frame = c->frame, saved_n = c->n_vars;
    c->frame = c->n_vars;
    int r = 0, positional = 0;
    for (int i = 0; i < e->n_args && !e->kwnames[i].n; i++) positional++;
    if (positional > m->n_params)
        r = ct_fail(c, e->line, "macro '%.*s' takes %d arguments", (int)m->targets[0].n,
                    m->targets[0].s, m->n_params);
    for (int i = 0; i < m->n_params && r == 0; i++) {
        ct_value v = ct_undef();
        int found = 0;
        if (i < positional) { v = args[i]; found = 1; }
        for (int k = positional; k < e->n_args && !found; k++)
            if (ct_str_same(e->kwnames[k], m->params[i])) { v = args[k]; found = 1; }
        if (!found && m->defaults[i]) r = ct_eval(c, m->defaults[i], &v);
        if (r == 0) r = assign(c, e->line, m->params[i], v);
    }
    ct_buf capture = {0}, *saved_out = c->out;
    if (r == 0) {
        c->out = &capture;
        c->call_depth++;
        r = ct_render_nodes(c, m->body);
        c->call_depth--;
        c->out = saved_out;
        if (r > 0) r = 0;
    }
    c->frame = saved_frame;
    c->n_vars = saved_n;
    if (r == 0) {
        char *s = ct_strdup(&c->arena, capture.p ? capture.p : "", capture.n);
        if (!s) r = ct_oom(c, e->line);
        else *out = ct_string(s, capture.n);
    }
    free(capture.p);
    return r;
}

static int eval_call(ct_ctx *c, const ct_expr *e, ct_value *out)
{
    ct_value small[SMALL_ARGS], *args;
    const ct_expr *f = e->a;
    *out = ct_undef();
    if (f->kind == CT_E_ATTR) {
        ct_value obj;
        if (ct_eval(c, f->a, &obj) || eval_args(c, e, small, &args)) return -1;
        return ct_call_method(c, e->line, obj, f->name, args, e->kwnames, e->n_args, out);
    }
    if (f->kind != CT_E_NAME) return ct_fail(c, e->line, "this expression cannot be called");
    const ct_value *bound = lookup(c, f->name);
    if (eval_args(c, e, small, &args)) return -1;
    if (bound && bound->kind == CT_MACRO && bound->u.macro)
        return call_macro(c, e, bound->u.macro, args, out);
    if (bound && !(bound->kind == CT_MACRO && !bound->u.macro))
        return ct_fail(c, e->line, "'%.*s' is not callable", (int)f->name.n, f->name.s);
    int r = ct_call_global(c, e->line, f->name, args, e->kwnames, e->n_args, out);
    if (r == 1) return ct_fail(c, e->line, "unknown function '%.*s'", (int)f->name.n, f->name.s);
    return r;
}

/* ---- expressions ---- */

int ct_eval(ct_ctx *c, const ct_expr *e, ct_value *out)
{
    *out = ct_undef();
    if (ct_step(c, e->line)) return -1;
    ct_value a, b, small[SMALL_ARGS], *args;
    switch (e->kind) {
    case CT_E_LITERAL:
        *out = e->lit;
        return 0;
    case CT_E_NAME: {
        const ct_value *v = lookup(c, e->name);
        if (v) {
            *out = *v;
        } else if (ct_global_known(e->name)) {
            /* builtin functions are defined values (templates test
             * `strftime_now is defined`); a macro value without a node */
            out->kind = CT_MACRO;
            out->u.macro = NULL;
        }
        return 0;
    }
    case CT_E_ATTR:
        if (ct_eval(c, e->a, &a)) return -1;
        return ct_getattr(c, e->line, a, e->name, out);
    case CT_E_INDEX:
        if (ct_eval(c, e->a, &a) || ct_eval(c, e->b, &b)) return -1;
        return index_value(c, e->line, a, b, out);
    case CT_E_SLICE: {
        ct_value parts[3] = {ct_undef(), ct_undef(), ct_undef()};
        const ct_expr *pe[3] = {e->b, e->c, e->d};
        if (ct_eval(c, e->a, &a)) return -1;
        for (int k = 0; k < 3; k++)
            if (pe[k] && ct_eval(c, pe[k], &parts[k])) return -1;
        return slice_value(c, e->line, a, parts, out);
    }
    case CT_E_CALL:
        return eval_call(c, e, out);
    case CT_E_FILTER:
        if (ct_eval(c, e->a, &a) || eval_args(c, e, small, &args)) return -1;
        return ct_apply_filter(c, e, a, args, e->kwnames, e->n_args, out);
    case CT_E_TEST: {
        int r;
        if (ct_eval(c, e->a, &a) || eval_args(c, e, small, &args) ||
            ct_apply_test(c, e, a, args, e->n_args, &r))
            return -1;
        *out = ct_bool(e->op ? !r : r);
        return 0;
    }
    case CT_E_NOT:
        if (ct_eval(c, e->a, &a)) return -1;
        *out = ct_bool(!ct_truthy(a));
        return 0;
    case CT_E_NEG: case CT_E_POS:
        if (ct_eval(c, e->a, &a)) return -1;
        if (!numeric(a)) return ct_fail(c, e->line, "bad operand type for unary %c: %s",
                                        e->kind == CT_E_NEG ? '-' : '+', ct_kind_name(a.kind));
        if (e->kind == CT_E_POS) { *out = a.kind == CT_BOOL ? ct_int(a.u.b) : a; return 0; }
        if (a.kind == CT_FLOAT) { *out = ct_float(-a.u.f); return 0; }
        if (to_int(a) == LLONG_MIN) return ct_fail(c, e->line, "integer overflow");
        *out = ct_int(-to_int(a));
        return 0;
    case CT_E_BINARY:
        if (ct_eval(c, e->a, &a) || ct_eval(c, e->b, &b)) return -1;
        return binary(c, e, a, b, out);
    case CT_E_AND: case CT_E_OR:
        /* Python returns the deciding operand, not a boolean */
        if (ct_eval(c, e->a, &a)) return -1;
        if ((e->kind == CT_E_AND) != ct_truthy(a)) { *out = a; return 0; }
        return ct_eval(c, e->b, out);
    case CT_E_COND:
        if (ct_eval(c, e->b, &b)) return -1;
        if (ct_truthy(b)) return ct_eval(c, e->a, out);
        return e->c ? ct_eval(c, e->c, out) : 0;
    case CT_E_LIST: {
        ct_list *l = ct_list_new(&c->arena, (size_t)e->n_args);
        if (!l) return ct_oom(c, e->line);
        for (int i = 0; i < e->n_args; i++)
            if (ct_eval(c, e->args[i], &l->items[i])) return -1;
        out->kind = CT_LIST;
        out->u.list = l;
        return 0;
    }
    case CT_E_DICT: {
        ct_dict *d = ct_dict_new(&c->arena);
        if (!d) return ct_oom(c, e->line);
        for (int i = 0; i + 1 < e->n_args; i += 2) {
            if (ct_eval(c, e->args[i], &a) || ct_eval(c, e->args[i + 1], &b)) return -1;
            if (a.kind != CT_STR) return ct_fail(c, e->line, "dict keys must be strings");
            if (ct_dict_set(&c->arena, d, a.u.str, b)) return ct_oom(c, e->line);
        }
        out->kind = CT_DICT;
        out->u.dict = d;
        return 0;
    }
    }
    return ct_fail(c, e->line, "bad expression");
}

/* ---- statements ---- */

/* The sequence a for loop walks: list items, dict keys, string characters. */
static int iterable(ct_ctx *c, int line, ct_value v, ct_list **out)
{
    static ct_list empty;
    *out = &empty;
    switch (v.kind) {
    case CT_UNDEF: return 0;
    case CT_LIST: *out = v.u.list; return 0;
    case CT_DICT: {
        ct_list *l = ct_list_new(&c->arena, v.u.dict->n);
        if (!l) return ct_oom(c, line);
        for (size_t i = 0; i < v.u.dict->n; i++)
            l->items[i] = ct_string(v.u.dict->keys[i].s, v.u.dict->keys[i].n);
        *out = l;
        return 0;
    }
    case CT_STR: {
        size_t n = ct_utf8_len(v.u.str);
        if (ct_work(c, line, v.u.str.n)) return -1;
        ct_list *l = ct_list_new(&c->arena, n);
        if (!l) return ct_oom(c, line);
        size_t a = 0;
        for (size_t i = 0; i < n; i++) {
            size_t b = a + utf8_offset((ct_str){v.u.str.s + a, v.u.str.n - a}, 1);
            l->items[i] = ct_string(v.u.str.s + a, b - a);
            a = b;
        }
        *out = l;
        return 0;
    }
    default:
        return ct_fail(c, line, "cannot loop over a %s", ct_kind_name(v.kind));
    }
}

static int bind_targets(ct_ctx *c, const ct_node *n, ct_value item)
{
    if (n->n_targets == 1) return assign(c, n->line, n->targets[0], item);
    if (item.kind != CT_LIST || item.u.list->n != 2)
        return ct_fail(c, n->line, "cannot unpack a %s into two loop variables",
                       ct_kind_name(item.kind));
    return assign(c, n->line, n->targets[0], item.u.list->items[0]) ||
           assign(c, n->line, n->targets[1], item.u.list->items[1]) ? -1 : 0;
}

static int render_for(ct_ctx *c, const ct_node *n)
{
    ct_value v;
    ct_list *items;
    if (ct_eval(c, n->expr, &v) || iterable(c, n->line, v, &items)) return -1;
    size_t saved_frame = c->frame, saved_n = c->n_vars;
    c->frame = c->n_vars;
    int r = 0;
    if (n->cond) {
        /* `for x in xs if cond` filters first: loop.length counts what is kept */
        ct_list *kept = ct_list_new(&c->arena, items->n);
        if (!kept) r = ct_oom(c, n->line);
        size_t k = 0;
        for (size_t i = 0; r == 0 && i < items->n; i++) {
            ct_value keep;
            c->n_vars = c->frame;
            r = ct_step(c, n->line);
            if (r == 0) r = bind_targets(c, n, items->items[i]);
            if (r == 0) r = ct_eval(c, n->cond, &keep);
            if (r == 0 && ct_truthy(keep)) kept->items[k++] = items->items[i];
        }
        if (r == 0) { kept->n = k; items = kept; }
    }
    ct_loop *loop = ct_alloc(&c->arena, sizeof *loop);
    if (r == 0 && !loop) r = ct_oom(c, n->line);
    for (size_t i = 0; r == 0 && i < items->n; i++) {
        c->n_vars = c->frame;
        if ((r = ct_step(c, n->line))) break;
        loop->index0 = (long long)i;
        loop->length = (long long)items->n;
        loop->prev = i ? items->items[i - 1] : ct_undef();
        loop->next = i + 1 < items->n ? items->items[i + 1] : ct_undef();
        ct_value lv = {0};
        lv.kind = CT_LOOP;
        lv.u.loop = loop;
        if ((r = assign(c, n->line, ct_cstr("loop"), lv))) break;
        if ((r = bind_targets(c, n, items->items[i]))) break;
        r = ct_render_nodes(c, n->body);
        if (r == FLOW_CONTINUE) r = 0;
        else if (r == FLOW_BREAK) { r = 0; break; }
    }
    c->frame = saved_frame;
    c->n_vars = saved_n;
    if (r == 0 && items->n == 0 && n->else_body) r = ct_render_nodes(c, n->else_body);
    return r;
}

static int render_set(ct_ctx *c, const ct_node *n)
{
    ct_value v;
    if (n->kind == CT_S_SET_BLOCK) {
        ct_buf capture = {0}, *saved = c->out;
        c->out = &capture;
        int r = ct_render_nodes(c, n->body);
        c->out = saved;
        char *s = r == 0 ? ct_strdup(&c->arena, capture.p ? capture.p : "", capture.n) : NULL;
        size_t len = capture.n;
        free(capture.p);
        if (r) return r;
        if (!s) return ct_oom(c, n->line);
        v = ct_string(s, len);
    } else if (ct_eval(c, n->expr, &v)) {
        return -1;
    }
    if (n->n_targets == 1) return assign(c, n->line, n->targets[0], v);
    const ct_value *ns = lookup(c, n->targets[0]);
    if (!ns || ns->kind != CT_DICT || !ns->u.dict->is_namespace)
        return ct_fail(c, n->line, "'%.*s' is not a namespace (set %.*s = namespace(...) first)",
                       (int)n->targets[0].n, n->targets[0].s, (int)n->targets[0].n, n->targets[0].s);
    if (ct_dict_set(&c->arena, ns->u.dict, n->targets[1], v)) return ct_oom(c, n->line);
    return 0;
}

static int render_if(ct_ctx *c, const ct_node *n)
{
    for (;;) {
        ct_value v;
        if (ct_eval(c, n->expr, &v)) return -1;
        if (ct_truthy(v)) return ct_render_nodes(c, n->body);
        const ct_node *e = n->else_body;
        if (e && e->kind == CT_S_IF && e->n_targets == 1) { n = e; continue; }
        return ct_render_nodes(c, e);
    }
}

/* Returns 0, -1 on error, or FLOW_BREAK / FLOW_CONTINUE to the enclosing loop. */
int ct_render_nodes(ct_ctx *c, const ct_node *n)
{
    for (; n; n = n->next) {
        if (ct_step(c, n->line)) return -1;
        int r = 0;
        switch (n->kind) {
        case CT_S_TEXT:
            if (ct_work(c, n->line, n->text.n) || ct_buf_put(c->out, n->text.s, n->text.n))
                return c->failed ? -1 : ct_oom(c, n->line);
            break;
        case CT_S_OUTPUT: {
            ct_value v;
            if (ct_eval(c, n->expr, &v)) return -1;
            if (v.kind == CT_STR && ct_work(c, n->line, v.u.str.n)) return -1;
            if (ct_write_str(c->out, v)) return ct_oom(c, n->line);
            break;
        }
        case CT_S_IF: r = render_if(c, n); break;
        case CT_S_FOR: r = render_for(c, n); break;
        case CT_S_SET: case CT_S_SET_BLOCK: r = render_set(c, n); break;
        case CT_S_MACRO: {
            ct_value v = {0};
            v.kind = CT_MACRO;
            v.u.macro = n;
            r = assign(c, n->line, n->targets[0], v);
            break;
        }
        case CT_S_BREAK: return FLOW_BREAK;
        case CT_S_CONTINUE: return FLOW_CONTINUE;
        }
        if (r) return r;
    }
    return 0;
}
