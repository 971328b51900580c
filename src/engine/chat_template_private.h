/* chat_template_private.h: the pieces shared by the chat template
 * interpreter's files; nothing outside src/engine/chat_template*.c includes it.
 *
 *   chat_template.c          public API, arena, values (printing, JSON, compare)
 *   chat_template_parse.c    lexer (whitespace control) and parser -> AST
 *   chat_template_eval.c     statements and expressions
 *   chat_template_builtins.c filters, tests, methods, global functions
 *
 * Memory: a template's AST and a render's values live in arenas, freed in one
 * go, so values never need ownership rules (lists and strings are immutable
 * once built; only namespace objects are written). Every arena has a byte cap,
 * which is what bounds string doubling and similar tricks. */
#ifndef LLMESH_CHAT_TEMPLATE_PRIVATE_H
#define LLMESH_CHAT_TEMPLATE_PRIVATE_H

#include <stdarg.h>
#include <stddef.h>

#include "engine/chat_template.h"

/* Bounds not in the public header. Memory covers all values of one render;
 * output is the prompt (and each {% set %} block / macro body). */
#define CT_MAX_MEMORY (64u << 20)
#define CT_MAX_OUTPUT (16u << 20)
#define CT_MAX_RANGE 100000          /* elements of one range() */
#define CT_MAX_CALL_DEPTH 16         /* nested macro calls */

/* ---- arena ---- */
typedef struct ct_chunk ct_chunk;
typedef struct {
    ct_chunk *head;
    size_t total, cap;
} ct_arena;

/* Zeroed memory, or NULL when the cap would be exceeded. */
void *ct_alloc(ct_arena *a, size_t n);
void ct_arena_free(ct_arena *a);

/* ---- values ---- */
typedef struct { const char *s; size_t n; } ct_str;

typedef enum {
    CT_UNDEF, CT_NONE, CT_BOOL, CT_INT, CT_FLOAT, CT_STR, CT_LIST, CT_DICT,
    CT_LOOP, CT_MACRO
} ct_kind;

typedef struct ct_list ct_list;
typedef struct ct_dict ct_dict;
typedef struct ct_loop ct_loop;
struct ct_node;

typedef struct {
    ct_kind kind;
    union {
        int b;
        long long i;
        double f;
        ct_str str;
        ct_list *list;
        ct_dict *dict;
        const ct_loop *loop;
        const struct ct_node *macro;
    } u;
} ct_value;

struct ct_list { ct_value *items; size_t n; };
/* Keys are strings (all real templates use string keys); insertion order is
 * kept, lookups are linear: dicts in templates have a handful of keys. */
struct ct_dict { ct_str *keys; ct_value *vals; size_t n, cap; int is_namespace; };
/* The `loop` variable of a for loop, read through attributes. */
struct ct_loop { long long index0, length; ct_value prev, next; };

static inline ct_value ct_undef(void) { ct_value v = {0}; v.kind = CT_UNDEF; return v; }
static inline ct_value ct_none(void) { ct_value v = {0}; v.kind = CT_NONE; return v; }
static inline ct_value ct_bool(int b) { ct_value v = {0}; v.kind = CT_BOOL; v.u.b = !!b; return v; }
static inline ct_value ct_int(long long i) { ct_value v = {0}; v.kind = CT_INT; v.u.i = i; return v; }
static inline ct_value ct_float(double f) { ct_value v = {0}; v.kind = CT_FLOAT; v.u.f = f; return v; }
static inline ct_value ct_string(const char *s, size_t n)
{ ct_value v = {0}; v.kind = CT_STR; v.u.str.s = s; v.u.str.n = n; return v; }

/* Growable byte buffer with a cap (CT_MAX_OUTPUT); malloc'ed. */
typedef struct { char *p; size_t n, cap; } ct_buf;
int ct_buf_put(ct_buf *b, const char *s, size_t n);   /* -1 past the cap or OOM */
int ct_buf_printf(ct_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

ct_str ct_cstr(const char *s);
int ct_str_eq(ct_str a, const char *lit);
int ct_str_same(ct_str a, ct_str b);
/* Copies n bytes into the arena, NUL-terminated; NULL past the cap. */
char *ct_strdup(ct_arena *a, const char *s, size_t n);

ct_list *ct_list_new(ct_arena *a, size_t n);            /* n items, all undefined */
ct_dict *ct_dict_new(ct_arena *a);
const ct_value *ct_dict_get(const ct_dict *d, ct_str key);
int ct_dict_set(ct_arena *a, ct_dict *d, ct_str key, ct_value v); /* -1 past the cap */

int ct_truthy(ct_value v);
const char *ct_kind_name(ct_kind k);
/* Python's str(): what {{ v }} prints. */
int ct_write_str(ct_buf *b, ct_value v);
/* json.dumps(v, ensure_ascii=False, indent=indent) (indent < 0: none). */
int ct_write_json(ct_buf *b, ct_value v, int indent, int depth);
int ct_equal(ct_value a, ct_value b);
/* -2 when the values do not order (e.g. str < int). */
int ct_compare(ct_value a, ct_value b);
/* Unicode code points in a UTF-8 string (what Python's len() counts). */
size_t ct_utf8_len(ct_str s);

/* ---- AST ---- */
typedef enum {
    CT_E_LITERAL, CT_E_NAME, CT_E_ATTR, CT_E_INDEX, CT_E_SLICE, CT_E_CALL,
    CT_E_FILTER, CT_E_TEST, CT_E_NOT, CT_E_NEG, CT_E_POS, CT_E_BINARY,
    CT_E_AND, CT_E_OR, CT_E_COND, CT_E_LIST, CT_E_DICT
} ct_expr_kind;

typedef enum {
    CT_OP_ADD, CT_OP_SUB, CT_OP_MUL, CT_OP_DIV, CT_OP_FLOORDIV, CT_OP_MOD,
    CT_OP_POW, CT_OP_CONCAT, CT_OP_EQ, CT_OP_NE, CT_OP_LT, CT_OP_GT, CT_OP_LE,
    CT_OP_GE, CT_OP_IN, CT_OP_NOT_IN
} ct_op;

typedef struct ct_expr ct_expr;
struct ct_expr {
    ct_expr_kind kind;
    int line;
    int depth;         /* height of this tree, bounded by CHAT_TEMPLATE_MAX_EXPR_DEPTH */
    int op;            /* BINARY: ct_op; TEST: 1 when negated (is not) */
    ct_str name;       /* NAME, ATTR attribute, FILTER/TEST name */
    ct_value lit;      /* LITERAL */
    ct_expr *a;        /* object / left / condition's true value / filtered value */
    ct_expr *b;        /* right / INDEX key / SLICE start / COND condition */
    ct_expr *c;        /* SLICE stop / COND false value (may be NULL) */
    ct_expr *d;        /* SLICE step */
    ct_expr **args;    /* CALL/FILTER/TEST arguments, LIST items, DICT k,v,k,v */
    ct_str *kwnames;   /* per argument: keyword name, or n == 0 for positional */
    int n_args;
};

typedef enum {
    CT_S_TEXT, CT_S_OUTPUT, CT_S_IF, CT_S_FOR, CT_S_SET, CT_S_SET_BLOCK,
    CT_S_BREAK, CT_S_CONTINUE, CT_S_MACRO
} ct_node_kind;

typedef struct ct_node ct_node;
struct ct_node {
    ct_node_kind kind;
    int line;
    ct_node *next;
    ct_str text;            /* TEXT */
    ct_expr *expr;          /* OUTPUT value, IF condition, FOR iterable, SET value */
    ct_expr *cond;          /* FOR ... if cond */
    ct_node *body, *else_body;
    ct_str targets[2];      /* FOR: loop variables; SET: name or ns, attr */
    int n_targets;          /* IF: 1 when this IF is an elif of the one before */
    /* MACRO: parameter names and defaults (NULL when none) */
    ct_str *params;
    ct_expr **defaults;
    int n_params;
};

struct chat_template {
    ct_arena arena;         /* AST, decoded string literals */
    char *src;              /* copy of the source; text nodes point into it */
    ct_node *root;
};

/* Parser entry: fills t->root, or writes "line N: ..." to err and returns -1. */
int ct_parse(chat_template *t, char *err, size_t errlen);

/* Builtins known at parse time, so an unknown filter is a syntax error. */
int ct_filter_known(ct_str name);
int ct_test_known(ct_str name);

/* ---- render context ---- */
typedef struct { ct_str name; ct_value v; } ct_var;

typedef struct {
    ct_arena arena;
    ct_buf *out;            /* where text goes now (the prompt or a capture) */
    ct_var *vars;
    size_t n_vars, cap_vars, frame;  /* frame: first variable of the innermost scope */
    long long steps;
    int call_depth;
    const chat_template_vars *vars_in;
    char *err;
    size_t errlen;
    int failed;
} ct_ctx;

/* Records the first error as "line N: ..." and returns -1. */
int ct_fail(ct_ctx *c, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Counts one unit of work; -1 once CHAT_TEMPLATE_MAX_STEPS is spent. */
int ct_step(ct_ctx *c, int line);
/* Charges work proportional to bytes or items scanned (1 step per 256), so
 * that cheap-looking operations on huge values count against the budget. */
int ct_work(ct_ctx *c, int line, size_t units);
int ct_oom(ct_ctx *c, int line);

int ct_render_nodes(ct_ctx *c, const ct_node *n);
int ct_eval(ct_ctx *c, const ct_expr *e, ct_value *out);
/* value -> string (str()), allocated in the render arena */
int ct_to_str(ct_ctx *c, int line, ct_value v, ct_str *out);

/* builtins; args already evaluated. kw: keyword names (n == 0: positional) */
int ct_apply_filter(ct_ctx *c, const ct_expr *e, ct_value v, const ct_value *args,
                    const ct_str *kw, int n, ct_value *out);
int ct_apply_test(ct_ctx *c, const ct_expr *e, ct_value v, const ct_value *args, int n,
                  int *result);
int ct_call_method(ct_ctx *c, int line, ct_value obj, ct_str name, const ct_value *args,
                   const ct_str *kw, int n, ct_value *out);
int ct_global_known(ct_str name);
/* Global functions; returns 1 when name is not a builtin function. */
int ct_call_global(ct_ctx *c, int line, ct_str name, const ct_value *args, const ct_str *kw,
                   int n, ct_value *out);
/* Attribute or item lookup shared by `.` and `[]`: undefined when missing. */
int ct_getattr(ct_ctx *c, int line, ct_value obj, ct_str name, ct_value *out);

#endif
