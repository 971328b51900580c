/* chat_template_parse.c: lexer and parser of the chat template Jinja subset.
 *
 * The lexer turns the source into one token array: TEXT runs between tags,
 * and for each {{ }} or {% %} tag its begin marker, expression tokens and end
 * marker; comments vanish. Whitespace control is settled here, once, with
 * Hugging Face's environment: trim_blocks (drop the first newline after a
 * block or comment tag) and lstrip_blocks (drop spaces and tabs before a
 * block or comment tag that starts a line), plus the explicit '-' markers
 * ({%- -%} {{- -}} {#- -#}) that strip all whitespace on their side, and
 * '+' ({%+) that turns lstrip off for one tag.
 * The parser is recursive descent with Jinja's precedence:
 *   cond (a if c else b) < or < and < not < compare (== != < > <= >= in,
 *   not in) < + - < ~ < * / // % < ** < unary - + < postfix (. [] ()),
 *   filters (|f) and tests (is [not] t).
 * Every recursive entry is counted (CHAT_TEMPLATE_MAX_EXPR_DEPTH), every tree
 * records its height (so long left-leaning chains like a+b+c+... are bounded
 * too) and block nesting is bounded by CHAT_TEMPLATE_MAX_NESTING, so neither
 * parsing nor rendering can recurse without limit.
 * Not here: evaluation. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/chat_template_private.h"

typedef enum {
    TK_TEXT, TK_VAR_BEGIN, TK_VAR_END, TK_BLOCK_BEGIN, TK_BLOCK_END,
    TK_NAME, TK_STRING, TK_INT, TK_FLOAT, TK_OP, TK_EOF
} tk_kind;

typedef struct {
    tk_kind kind;
    int line;
    ct_str s;           /* TEXT, NAME, decoded STRING, OP spelling */
    long long i;
    double f;
} token;

typedef struct {
    chat_template *t;
    token *tk;
    size_t n, cap, pos;
    int depth;          /* recursive expression entries */
    int nesting;        /* open blocks */
    int loops;          /* open for loops (break/continue are legal inside) */
    int in_macro;
    char *err;
    size_t errlen;
    int failed;
} parser;

__attribute__((format(printf, 3, 4)))
static int fail(parser *p, int line, const char *fmt, ...)
{
    if (p->failed) return -1;
    p->failed = 1;
    int n = snprintf(p->err, p->errlen, "line %d: ", line);
    if (n >= 0 && (size_t)n < p->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static int oom(parser *p, int line) { return fail(p, line, "template too large to parse"); }

/* ---- lexer ---- */

static token *push(parser *p, tk_kind kind, int line)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 256;
        token *t = realloc(p->tk, cap * sizeof *t);
        if (!t) { oom(p, line); return NULL; }
        p->tk = t;
        p->cap = cap;
    }
    token *t = &p->tk[p->n++];
    memset(t, 0, sizeof *t);
    t->kind = kind;
    t->line = line;
    return t;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
static int is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static int is_digit(char c) { return c >= '0' && c <= '9'; }

static int count_lines(const char *s, size_t n)
{
    int k = 0;
    for (size_t i = 0; i < n; i++) k += s[i] == '\n';
    return k;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static size_t put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | cp >> 6); o[1] = (char)(0x80 | (cp & 63)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12); o[1] = (char)(0x80 | ((cp >> 6) & 63));
        o[2] = (char)(0x80 | (cp & 63)); return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18); o[1] = (char)(0x80 | ((cp >> 12) & 63));
    o[2] = (char)(0x80 | ((cp >> 6) & 63)); o[3] = (char)(0x80 | (cp & 63)); return 4;
}

/* A Python string literal starting at s[*i] (the quote). Decodes the usual
 * escapes; an unknown escape keeps its backslash, as Python does. */
static int lex_string(parser *p, const char *s, size_t len, size_t *i, int *line, token *t)
{
    char q = s[*i];
    size_t j = *i + 1;
    int start_line = *line;
    while (j < len && s[j] != q) {
        if (s[j] == '\\' && j + 1 < len) j++;
        if (s[j] == '\n') (*line)++;
        j++;
    }
    if (j >= len) return fail(p, start_line, "unterminated string literal");
    /* decoded text is never longer than the source text */
    char *o = ct_alloc(&p->t->arena, j - *i + 1);
    if (!o) return oom(p, start_line);
    size_t n = 0;
    for (size_t k = *i + 1; k < j; k++) {
        if (s[k] != '\\') { o[n++] = s[k]; continue; }
        char e = s[++k];
        switch (e) {
        case 'n': o[n++] = '\n'; break;
        case 't': o[n++] = '\t'; break;
        case 'r': o[n++] = '\r'; break;
        case '0': o[n++] = '\0'; break;
        case '\\': case '\'': case '"': o[n++] = e; break;
        case '\n': break;     /* line continuation */
        case 'x': case 'u': {
            int digits = e == 'x' ? 2 : 4;
            unsigned cp = 0;
            int ok = k + (size_t)digits < j;
            for (int d = 1; ok && d <= digits; d++) {
                int h = hex_value(s[k + (size_t)d]);
                if (h < 0) ok = 0;
                else cp = cp * 16 + (unsigned)h;
            }
            if (!ok) return fail(p, start_line, "bad \\%c escape in string literal", e);
            /* surrogates cannot be encoded; keep them out of the text */
            if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;
            n += put_utf8(o + n, cp);
            k += (size_t)digits;
            break;
        }
        default: o[n++] = '\\'; o[n++] = e; break;
        }
    }
    t->kind = TK_STRING;
    t->s.s = o;
    t->s.n = n;
    *i = j + 1;
    return 0;
}

static int lex_number(parser *p, const char *s, size_t len, size_t *i, int line, token *t)
{
    size_t j = *i;
    while (j < len && (is_digit(s[j]) || s[j] == '_')) j++;
    int is_float = 0;
    if (j + 1 < len && s[j] == '.' && is_digit(s[j + 1])) {
        is_float = 1;
        j++;
        while (j < len && is_digit(s[j])) j++;
    }
    if (j < len && (s[j] == 'e' || s[j] == 'E')) {
        size_t k = j + 1;
        if (k < len && (s[k] == '+' || s[k] == '-')) k++;
        if (k < len && is_digit(s[k])) {
            is_float = 1;
            j = k;
            while (j < len && is_digit(s[j])) j++;
        }
    }
    char tmp[64];
    size_t n = 0;
    for (size_t k = *i; k < j; k++)
        if (s[k] != '_') {
            if (n + 1 >= sizeof tmp) return fail(p, line, "number literal too long");
            tmp[n++] = s[k];
        }
    tmp[n] = '\0';
    errno = 0;
    if (is_float) {
        t->kind = TK_FLOAT;
        t->f = strtod(tmp, NULL);
    } else {
        t->kind = TK_INT;
        t->i = strtoll(tmp, NULL, 10);
        if (errno == ERANGE) return fail(p, line, "integer literal too large");
    }
    *i = j;
    return 0;
}

static const char *const two_char_ops[] = {"==", "!=", "<=", ">=", "//", "**"};
static const char one_char_ops[] = "+-*/%~()[]{},.:|=<>";

/* Tokens of one tag body, up to and including its end marker. */
static int lex_tag(parser *p, const char *s, size_t len, size_t *i, int *line, int is_block,
                   int open_line, int *strip_after)
{
    const char end0 = is_block ? '%' : '}';
    for (;;) {
        while (*i < len && is_space(s[*i])) { if (s[*i] == '\n') (*line)++; (*i)++; }
        if (*i >= len)
            return fail(p, open_line, "unclosed '%s' (no matching '%s')", is_block ? "{%" : "{{",
                        is_block ? "%}" : "}}");
        size_t k = *i;
        int minus = 0;
        if (s[k] == '-' && k + 1 < len && s[k + 1] == end0) { minus = 1; k++; }
        if (s[k] == end0 && k + 1 < len && s[k + 1] == '}') {
            if (!push(p, is_block ? TK_BLOCK_END : TK_VAR_END, *line)) return -1;
            *i = k + 2;
            *strip_after = minus;
            return 0;
        }
        token *t = push(p, TK_OP, *line);
        if (!t) return -1;
        char c = s[*i];
        if (c == '"' || c == '\'') {
            if (lex_string(p, s, len, i, line, t)) return -1;
        } else if (is_digit(c)) {
            if (lex_number(p, s, len, i, *line, t)) return -1;
        } else if (is_name_start(c)) {
            size_t j = *i;
            while (j < len && (is_name_start(s[j]) || is_digit(s[j]))) j++;
            t->kind = TK_NAME;
            t->s.s = s + *i;
            t->s.n = j - *i;
            *i = j;
        } else {
            t->s.s = s + *i;
            t->s.n = 0;
            for (size_t o = 0; o < sizeof two_char_ops / sizeof two_char_ops[0]; o++)
                if (*i + 1 < len && s[*i] == two_char_ops[o][0] && s[*i + 1] == two_char_ops[o][1])
                    t->s.n = 2;
            if (!t->s.n && c && strchr(one_char_ops, c)) t->s.n = 1;
            if (!t->s.n) {
                unsigned char uc = (unsigned char)c;
                if (uc >= 0x20 && uc < 0x7f) return fail(p, *line, "unexpected character '%c'", c);
                return fail(p, *line, "unexpected byte 0x%02x", uc);
            }
            *i += t->s.n;
        }
    }
}

static int lex(parser *p)
{
    const char *s = p->t->src;
    size_t len = strlen(s);   /* a NUL byte in the source ends it */
    size_t i = 0;
    int line = 1;
    int strip_next = 0, trim_next = 0;
    for (;;) {
        size_t tag = i;
        while (tag + 1 < len && !(s[tag] == '{' && (s[tag + 1] == '{' || s[tag + 1] == '%' || s[tag + 1] == '#')))
            tag++;
        if (tag + 1 >= len) tag = len;
        size_t a = i, b = tag;    /* the text run [a, b) */
        if (strip_next) {
            while (a < b && is_space(s[a])) a++;
        } else if (trim_next) {
            if (a < b && s[a] == '\n') a++;
            else if (a + 1 < b && s[a] == '\r' && s[a + 1] == '\n') a += 2;
        }
        char kind = tag < len ? s[tag + 1] : 0;
        char mod = tag + 2 < len ? s[tag + 2] : 0;
        if (tag < len && mod == '-') {
            while (b > a && is_space(s[b - 1])) b--;
        } else if (tag < len && (kind == '%' || kind == '#') && mod != '+') {
            /* lstrip_blocks: only when the tag starts its line */
            size_t k = b;
            while (k > a && (s[k - 1] == ' ' || s[k - 1] == '\t')) k--;
            if ((k > a && s[k - 1] == '\n') || (k == a && (i == 0 || s[i - 1] == '\n') && a == i))
                b = k;
        }
        if (b > a) {
            token *t = push(p, TK_TEXT, line + count_lines(s + i, a - i));
            if (!t) return -1;
            t->s.s = s + a;
            t->s.n = b - a;
        }
        line += count_lines(s + i, tag - i);
        if (tag >= len) break;
        int open_line = line;
        i = tag + 2 + (mod == '-' || mod == '+');
        strip_next = trim_next = 0;
        if (kind == '#') {
            size_t e = i;
            while (e + 1 < len && !(s[e] == '#' && s[e + 1] == '}')) e++;
            if (e + 1 >= len) return fail(p, open_line, "unclosed comment '{#' (no matching '#}')");
            strip_next = e > i && s[e - 1] == '-';
            trim_next = !strip_next;
            line += count_lines(s + i, e - i);
            i = e + 2;
            continue;
        }
        int is_block = kind == '%';
        if (!push(p, is_block ? TK_BLOCK_BEGIN : TK_VAR_BEGIN, open_line)) return -1;
        int minus = 0;
        if (lex_tag(p, s, len, &i, &line, is_block, open_line, &minus)) return -1;
        strip_next = minus;
        trim_next = is_block && !minus;
    }
    return push(p, TK_EOF, line) ? 0 : -1;
}

/* ---- parser helpers ---- */

static token *cur(parser *p) { return &p->tk[p->pos]; }
static token *peek(parser *p, size_t k)
{
    return p->pos + k < p->n ? &p->tk[p->pos + k] : &p->tk[p->n - 1];
}
static void advance(parser *p) { if (p->tk[p->pos].kind != TK_EOF) p->pos++; }

static int is_op(const token *t, const char *op) { return t->kind == TK_OP && ct_str_eq(t->s, op); }
static int is_kw(const token *t, const char *kw) { return t->kind == TK_NAME && ct_str_eq(t->s, kw); }

static const char *describe(const token *t)
{
    switch (t->kind) {
    case TK_TEXT: return "text";
    case TK_VAR_BEGIN: return "'{{'";
    case TK_VAR_END: return "'}}'";
    case TK_BLOCK_BEGIN: return "'{%'";
    case TK_BLOCK_END: return "'%}'";
    case TK_NAME: return "a name";
    case TK_STRING: return "a string";
    case TK_INT: case TK_FLOAT: return "a number";
    case TK_OP: return "an operator";
    case TK_EOF: return "end of template";
    }
    return "?";
}

static int expect_op(parser *p, const char *op)
{
    if (is_op(cur(p), op)) { advance(p); return 0; }
    return fail(p, cur(p)->line, "expected '%s', got %s", op, describe(cur(p)));
}

static int expect_kind(parser *p, tk_kind k, const char *what)
{
    if (cur(p)->kind == k) { advance(p); return 0; }
    if (cur(p)->kind == TK_NAME)
        return fail(p, cur(p)->line, "expected %s, got '%.*s'", what, (int)cur(p)->s.n, cur(p)->s.s);
    return fail(p, cur(p)->line, "expected %s, got %s", what, describe(cur(p)));
}

static ct_expr *mk(parser *p, ct_expr_kind kind, int line)
{
    ct_expr *e = ct_alloc(&p->t->arena, sizeof *e);
    if (!e) { oom(p, line); return NULL; }
    e->kind = kind;
    e->line = line;
    e->depth = 1;
    return e;
}

/* Call once a node's children are set: records its height and refuses trees
 * too tall to evaluate with bounded recursion. */
static ct_expr *seal(parser *p, ct_expr *e)
{
    if (!e) return NULL;
    const ct_expr *kids[4] = {e->a, e->b, e->c, e->d};
    int h = 0;
    for (int i = 0; i < 4; i++)
        if (kids[i] && kids[i]->depth > h) h = kids[i]->depth;
    for (int i = 0; i < e->n_args; i++)
        if (e->args[i] && e->args[i]->depth > h) h = e->args[i]->depth;
    e->depth = h + 1;
    if (e->depth > CHAT_TEMPLATE_MAX_EXPR_DEPTH) {
        fail(p, e->line, "expression too deeply nested (more than %d levels)",
             CHAT_TEMPLATE_MAX_EXPR_DEPTH);
        return NULL;
    }
    return e;
}

static int enter(parser *p)
{
    if (++p->depth <= CHAT_TEMPLATE_MAX_EXPR_DEPTH) return 0;
    return fail(p, cur(p)->line, "expression too deeply nested (more than %d levels)",
                CHAT_TEMPLATE_MAX_EXPR_DEPTH);
}

static ct_expr *parse_cond(parser *p, int allow_cond);
static ct_expr *parse_or(parser *p);
static ct_expr *parse_unary(parser *p);
static ct_expr *parse_primary(parser *p);

/* Appends to a growing argument array kept in malloc'ed scratch, copied into
 * the arena at the end (arena memory cannot be resized). */
typedef struct { ct_expr **a; ct_str *kw; int n, cap; } arg_list;

static int args_push(parser *p, arg_list *l, ct_expr *e, ct_str kw)
{
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 8;
        ct_expr **a = realloc(l->a, (size_t)cap * sizeof *a);
        if (!a) return oom(p, e->line);
        l->a = a;
        ct_str *k = realloc(l->kw, (size_t)cap * sizeof *k);
        if (!k) return oom(p, e->line);
        l->kw = k;
        l->cap = cap;
    }
    l->a[l->n] = e;
    l->kw[l->n] = kw;
    l->n++;
    return 0;
}

static int args_finish(parser *p, arg_list *l, ct_expr *e, int keep_kw)
{
    int r = 0;
    e->n_args = l->n;
    if (l->n) {
        e->args = ct_alloc(&p->t->arena, (size_t)l->n * sizeof *e->args);
        if (!e->args) r = oom(p, e->line);
        else memcpy(e->args, l->a, (size_t)l->n * sizeof *e->args);
        if (!r && keep_kw) {
            e->kwnames = ct_alloc(&p->t->arena, (size_t)l->n * sizeof *e->kwnames);
            if (!e->kwnames) r = oom(p, e->line);
            else memcpy(e->kwnames, l->kw, (size_t)l->n * sizeof *e->kwnames);
        }
    }
    free(l->a);
    free(l->kw);
    return r;
}

/* '(' already consumed: positional and keyword arguments up to ')'. */
static int parse_call_args(parser *p, ct_expr *e)
{
    arg_list l = {0};
    ct_str none = {"", 0};
    while (!is_op(cur(p), ")")) {
        if (l.n && expect_op(p, ",")) goto fail;
        if (is_op(cur(p), ")")) break;    /* trailing comma */
        ct_str kw = none;
        if (cur(p)->kind == TK_NAME && is_op(peek(p, 1), "=")) {
            kw = cur(p)->s;
            advance(p);
            advance(p);
        }
        ct_expr *a = parse_cond(p, 1);
        if (!a || args_push(p, &l, a, kw)) goto fail;
    }
    advance(p);
    return args_finish(p, &l, e, 1);
fail:
    free(l.a);
    free(l.kw);
    return -1;
}

/* ---- expressions ---- */

static ct_expr *parse_list_or_dict(parser *p, int is_dict, const char *close)
{
    ct_expr *e = mk(p, is_dict ? CT_E_DICT : CT_E_LIST, cur(p)->line);
    if (!e) return NULL;
    advance(p);
    arg_list l = {0};
    ct_str none = {"", 0};
    while (!is_op(cur(p), close)) {
        if (l.n && expect_op(p, ",")) goto fail;
        if (is_op(cur(p), close)) break;
        ct_expr *a = parse_cond(p, 1);
        if (!a || args_push(p, &l, a, none)) goto fail;
        if (is_dict) {
            if (expect_op(p, ":")) goto fail;
            ct_expr *v = parse_cond(p, 1);
            if (!v || args_push(p, &l, v, none)) goto fail;
        }
    }
    advance(p);
    if (args_finish(p, &l, e, 0)) return NULL;
    return seal(p, e);
fail:
    free(l.a);
    free(l.kw);
    return NULL;
}

static ct_expr *parse_primary(parser *p)
{
    token *t = cur(p);
    ct_expr *e;
    switch (t->kind) {
    case TK_NAME:
        e = mk(p, CT_E_LITERAL, t->line);
        if (!e) return NULL;
        if (is_kw(t, "true") || is_kw(t, "True")) e->lit = ct_bool(1);
        else if (is_kw(t, "false") || is_kw(t, "False")) e->lit = ct_bool(0);
        else if (is_kw(t, "none") || is_kw(t, "None")) e->lit = ct_none();
        else { e->kind = CT_E_NAME; e->name = t->s; }
        advance(p);
        return e;
    case TK_STRING: {
        e = mk(p, CT_E_LITERAL, t->line);
        if (!e) return NULL;
        /* adjacent literals concatenate, as in Python */
        size_t n = 0, k = 0;
        while (peek(p, k)->kind == TK_STRING) n += peek(p, k++)->s.n;
        if (k == 1) {
            e->lit = ct_string(t->s.s, t->s.n);
        } else {
            char *o = ct_alloc(&p->t->arena, n + 1);
            if (!o) { oom(p, t->line); return NULL; }
            n = 0;
            for (size_t j = 0; j < k; j++) {
                memcpy(o + n, peek(p, j)->s.s, peek(p, j)->s.n);
                n += peek(p, j)->s.n;
            }
            e->lit = ct_string(o, n);
        }
        p->pos += k;
        return e;
    }
    case TK_INT: case TK_FLOAT:
        e = mk(p, CT_E_LITERAL, t->line);
        if (!e) return NULL;
        e->lit = t->kind == TK_INT ? ct_int(t->i) : ct_float(t->f);
        advance(p);
        return e;
    case TK_OP:
        if (is_op(t, "(")) {
            advance(p);
            ct_expr *inner = parse_cond(p, 1);
            if (!inner) return NULL;
            if (is_op(cur(p), ",")) {
                /* a tuple: behaves as a list here */
                ct_expr *l = mk(p, CT_E_LIST, t->line);
                arg_list al = {0};
                ct_str none = {"", 0};
                if (!l || args_push(p, &al, inner, none)) { free(al.a); free(al.kw); return NULL; }
                while (is_op(cur(p), ",")) {
                    advance(p);
                    if (is_op(cur(p), ")")) break;
                    ct_expr *x = parse_cond(p, 1);
                    if (!x || args_push(p, &al, x, none)) { free(al.a); free(al.kw); return NULL; }
                }
                if (args_finish(p, &al, l, 0)) return NULL;
                inner = seal(p, l);
                if (!inner) return NULL;
            }
            if (expect_op(p, ")")) return NULL;
            return inner;
        }
        if (is_op(t, "[")) return parse_list_or_dict(p, 0, "]");
        if (is_op(t, "{")) return parse_list_or_dict(p, 1, "}");
        return fail(p, t->line, "unexpected '%.*s'", (int)t->s.n, t->s.s), NULL;
    default:
        fail(p, t->line, "expected an expression, got %s", describe(t));
        return NULL;
    }
}

static ct_expr *parse_subscript(parser *p, ct_expr *obj)
{
    int line = cur(p)->line;
    advance(p);   /* [ */
    ct_expr *parts[3] = {NULL, NULL, NULL};
    int colons = 0;
    for (;;) {
        if (is_op(cur(p), "]")) break;
        if (is_op(cur(p), ":")) {
            if (++colons > 2) return fail(p, line, "bad slice"), NULL;
            advance(p);
            continue;
        }
        if (parts[colons]) return fail(p, line, "expected ':' or ']' in subscript"), NULL;
        if (!(parts[colons] = parse_cond(p, 1))) return NULL;
    }
    advance(p);
    ct_expr *e = mk(p, colons ? CT_E_SLICE : CT_E_INDEX, line);
    if (!e) return NULL;
    e->a = obj;
    if (!colons && !parts[0]) return fail(p, line, "empty subscript"), NULL;
    e->b = parts[0];
    e->c = parts[1];
    e->d = parts[2];
    return seal(p, e);
}

static int starts_test_arg(parser *p)
{
    token *t = cur(p);
    if (t->kind == TK_STRING || t->kind == TK_INT || t->kind == TK_FLOAT) return 1;
    if (t->kind != TK_NAME) return 0;
    static const char *const stop[] = {"else", "or", "and", "if", "in", "not", "is"};
    for (size_t i = 0; i < sizeof stop / sizeof stop[0]; i++)
        if (is_kw(t, stop[i])) return 0;
    return 1;
}

/* postfix . [] (), then filters | and tests is */
static ct_expr *parse_postfix(parser *p, ct_expr *e)
{
    for (;;) {
        token *t = cur(p);
        if (is_op(t, ".")) {
            advance(p);
            if (cur(p)->kind == TK_INT) {
                /* x.0 is x[0] in Jinja */
                ct_expr *k = mk(p, CT_E_LITERAL, t->line), *ix = mk(p, CT_E_INDEX, t->line);
                if (!k || !ix) return NULL;
                k->lit = ct_int(cur(p)->i);
                ix->a = e;
                ix->b = k;
                advance(p);
                if (!(e = seal(p, ix))) return NULL;
                continue;
            }
            if (cur(p)->kind != TK_NAME) return fail(p, t->line, "expected a name after '.'"), NULL;
            ct_expr *a = mk(p, CT_E_ATTR, t->line);
            if (!a) return NULL;
            a->a = e;
            a->name = cur(p)->s;
            advance(p);
            if (!(e = seal(p, a))) return NULL;
        } else if (is_op(t, "[")) {
            if (!(e = parse_subscript(p, e))) return NULL;
        } else if (is_op(t, "(")) {
            ct_expr *call = mk(p, CT_E_CALL, t->line);
            if (!call) return NULL;
            advance(p);
            call->a = e;
            if (parse_call_args(p, call) || !(e = seal(p, call))) return NULL;
        } else if (is_op(t, "|")) {
            advance(p);
            if (cur(p)->kind != TK_NAME) return fail(p, t->line, "expected a filter name after '|'"), NULL;
            ct_expr *f = mk(p, CT_E_FILTER, t->line);
            if (!f) return NULL;
            f->a = e;
            f->name = cur(p)->s;
            if (!ct_filter_known(f->name))
                return fail(p, t->line, "unknown filter '%.*s'", (int)f->name.n, f->name.s), NULL;
            advance(p);
            if (is_op(cur(p), "(")) {
                advance(p);
                if (parse_call_args(p, f)) return NULL;
            }
            if (!(e = seal(p, f))) return NULL;
        } else if (is_kw(t, "is")) {
            advance(p);
            ct_expr *x = mk(p, CT_E_TEST, t->line);
            if (!x) return NULL;
            x->a = e;
            if (is_kw(cur(p), "not")) { x->op = 1; advance(p); }
            if (cur(p)->kind != TK_NAME) return fail(p, t->line, "expected a test name after 'is'"), NULL;
            x->name = cur(p)->s;
            /* none/true/false are keywords elsewhere but names of tests here */
            if (!ct_test_known(x->name))
                return fail(p, t->line, "unknown test '%.*s'", (int)x->name.n, x->name.s), NULL;
            advance(p);
            if (is_op(cur(p), "(")) {
                advance(p);
                if (parse_call_args(p, x)) return NULL;
            } else if (starts_test_arg(p)) {
                ct_expr *arg = parse_primary(p);
                arg_list l = {0};
                ct_str none = {"", 0};
                if (!arg || args_push(p, &l, arg, none) || args_finish(p, &l, x, 1)) return NULL;
            }
            if (!(e = seal(p, x))) return NULL;
        } else {
            return e;
        }
    }
}

static ct_expr *parse_unary(parser *p)
{
    if (enter(p)) return NULL;
    token *t = cur(p);
    ct_expr *e;
    if (is_op(t, "-") || is_op(t, "+")) {
        advance(p);
        e = mk(p, is_op(t, "-") ? CT_E_NEG : CT_E_POS, t->line);
        if (e && !(e->a = parse_unary(p))) e = NULL;
        e = seal(p, e);
    } else {
        e = parse_primary(p);
        if (e) e = parse_postfix(p, e);
    }
    p->depth--;
    return e;
}

static ct_expr *binary(parser *p, int op, int line, ct_expr *l, ct_expr *r)
{
    if (!l || !r) return NULL;
    ct_expr *e = mk(p, CT_E_BINARY, line);
    if (!e) return NULL;
    e->op = op;
    e->a = l;
    e->b = r;
    return seal(p, e);
}

static ct_expr *parse_pow(parser *p)
{
    ct_expr *e = parse_unary(p);
    while (e && is_op(cur(p), "**")) {
        int line = cur(p)->line;
        advance(p);
        e = binary(p, CT_OP_POW, line, e, parse_unary(p));
    }
    return e;
}

static ct_expr *parse_mul(parser *p)
{
    ct_expr *e = parse_pow(p);
    for (;;) {
        token *t = cur(p);
        int op = is_op(t, "*") ? CT_OP_MUL : is_op(t, "/") ? CT_OP_DIV
               : is_op(t, "//") ? CT_OP_FLOORDIV : is_op(t, "%") ? CT_OP_MOD : -1;
        if (!e || op < 0) return e;
        advance(p);
        e = binary(p, op, t->line, e, parse_pow(p));
    }
}

static ct_expr *parse_concat(parser *p)
{
    ct_expr *e = parse_mul(p);
    while (e && is_op(cur(p), "~")) {
        int line = cur(p)->line;
        advance(p);
        e = binary(p, CT_OP_CONCAT, line, e, parse_mul(p));
    }
    return e;
}

static ct_expr *parse_add(parser *p)
{
    ct_expr *e = parse_concat(p);
    for (;;) {
        token *t = cur(p);
        int op = is_op(t, "+") ? CT_OP_ADD : is_op(t, "-") ? CT_OP_SUB : -1;
        if (!e || op < 0) return e;
        advance(p);
        e = binary(p, op, t->line, e, parse_concat(p));
    }
}

static ct_expr *parse_compare(parser *p)
{
    ct_expr *e = parse_add(p);
    for (;;) {
        token *t = cur(p);
        int op = -1, skip = 1;
        if (is_op(t, "==")) op = CT_OP_EQ;
        else if (is_op(t, "!=")) op = CT_OP_NE;
        else if (is_op(t, "<")) op = CT_OP_LT;
        else if (is_op(t, ">")) op = CT_OP_GT;
        else if (is_op(t, "<=")) op = CT_OP_LE;
        else if (is_op(t, ">=")) op = CT_OP_GE;
        else if (is_kw(t, "in")) op = CT_OP_IN;
        else if (is_kw(t, "not") && is_kw(peek(p, 1), "in")) { op = CT_OP_NOT_IN; skip = 2; }
        if (!e || op < 0) return e;
        p->pos += (size_t)skip;
        e = binary(p, op, t->line, e, parse_add(p));
    }
}

static ct_expr *parse_not(parser *p)
{
    if (!is_kw(cur(p), "not")) return parse_compare(p);
    if (enter(p)) return NULL;
    ct_expr *e = mk(p, CT_E_NOT, cur(p)->line);
    advance(p);
    if (e && !(e->a = parse_not(p))) e = NULL;
    p->depth--;
    return seal(p, e);
}

/* `and` and `or` chains: left-associative, short-circuit at evaluation */
static ct_expr *parse_logic(parser *p, ct_expr_kind kind, const char *kw,
                            ct_expr *(*operand)(parser *))
{
    ct_expr *e = operand(p);
    while (e && is_kw(cur(p), kw)) {
        ct_expr *x = mk(p, kind, cur(p)->line);
        advance(p);
        if (!x || !(x->b = operand(p))) return NULL;
        x->a = e;
        e = seal(p, x);
    }
    return e;
}

static ct_expr *parse_and(parser *p) { return parse_logic(p, CT_E_AND, "and", parse_not); }
static ct_expr *parse_or(parser *p) { return parse_logic(p, CT_E_OR, "or", parse_and); }

/* allow_cond = 0 for a for loop's iterable, where a trailing `if` filters
 * the loop instead of starting a conditional expression. */
static ct_expr *parse_cond(parser *p, int allow_cond)
{
    if (enter(p)) return NULL;
    ct_expr *e = parse_or(p);
    if (e && allow_cond && is_kw(cur(p), "if")) {
        /* a if c else (rest): the else side nests to the right */
        ct_expr *x = mk(p, CT_E_COND, cur(p)->line);
        advance(p);
        if (!x || !(x->b = parse_or(p))) {
            e = NULL;
        } else {
            x->a = e;
            if (is_kw(cur(p), "else")) {
                advance(p);
                if (!(x->c = parse_cond(p, 1))) x = NULL;
            }
            e = seal(p, x);
        }
    }
    p->depth--;
    return e;
}

/* ---- statements ---- */

static ct_node *mk_node(parser *p, ct_node_kind kind, int line)
{
    ct_node *n = ct_alloc(&p->t->arena, sizeof *n);
    if (!n) { oom(p, line); return NULL; }
    n->kind = kind;
    n->line = line;
    return n;
}

static int end_tag(parser *p) { return expect_kind(p, TK_BLOCK_END, "'%}'"); }

static int expect_name(parser *p, ct_str *out, const char *what)
{
    if (cur(p)->kind != TK_NAME) return fail(p, cur(p)->line, "expected %s", what);
    *out = cur(p)->s;
    advance(p);
    return 0;
}

/* Parses statements until a {% NAME %} tag whose NAME is in stops (NULL-
 * terminated); leaves the parser on that NAME and reports which one in
 * *stop. At the top level (stops == NULL) it runs to the end. */
static int parse_body(parser *p, const char *const *stops, const char *opener, int open_line,
                      ct_node **out, int *stop);

static int enter_block(parser *p, int line)
{
    if (++p->nesting <= CHAT_TEMPLATE_MAX_NESTING) return 0;
    return fail(p, line, "blocks nested too deeply (more than %d)", CHAT_TEMPLATE_MAX_NESTING);
}

static ct_node *parse_if(parser *p, int line)
{
    static const char *const stops[] = {"elif", "else", "endif", NULL};
    static const char *const end_only[] = {"endif", NULL};
    if (enter_block(p, line)) return NULL;
    ct_node *first = NULL, *last = NULL;
    /* elif chains are built in a loop, not by recursion, so a long chain
     * costs no stack (the renderer walks them the same way) */
    for (;;) {
        ct_node *n = mk_node(p, CT_S_IF, line);
        if (!n || !(n->expr = parse_cond(p, 1)) || end_tag(p)) return NULL;
        if (last) { n->n_targets = 1; last->else_body = n; } else first = n;
        last = n;
        int stop;
        if (parse_body(p, stops, "if", line, &n->body, &stop)) return NULL;
        line = cur(p)->line;
        advance(p);
        if (stop == 0) continue;
        if (stop == 1) {
            if (end_tag(p) || parse_body(p, end_only, "if", line, &n->else_body, &stop)) return NULL;
            advance(p);
        }
        if (end_tag(p)) return NULL;
        break;
    }
    p->nesting--;
    return first;
}

static ct_node *parse_for(parser *p, int line)
{
    static const char *const stops[] = {"else", "endfor", NULL};
    static const char *const end_only[] = {"endfor", NULL};
    if (enter_block(p, line)) return NULL;
    ct_node *n = mk_node(p, CT_S_FOR, line);
    if (!n || expect_name(p, &n->targets[0], "a loop variable")) return NULL;
    n->n_targets = 1;
    if (is_op(cur(p), ",")) {
        advance(p);
        if (expect_name(p, &n->targets[1], "a second loop variable")) return NULL;
        n->n_targets = 2;
    }
    if (!is_kw(cur(p), "in")) return fail(p, cur(p)->line, "expected 'in' in for loop"), NULL;
    advance(p);
    if (!(n->expr = parse_cond(p, 0))) return NULL;
    if (is_kw(cur(p), "if")) {
        advance(p);
        if (!(n->cond = parse_cond(p, 0))) return NULL;
    }
    if (is_kw(cur(p), "recursive"))
        return fail(p, cur(p)->line, "recursive loops are not supported"), NULL;
    if (end_tag(p)) return NULL;
    int stop;
    p->loops++;
    int r = parse_body(p, stops, "for", line, &n->body, &stop);
    p->loops--;
    if (r) return NULL;
    advance(p);
    if (stop == 0) {
        if (end_tag(p) || parse_body(p, end_only, "for", line, &n->else_body, &stop)) return NULL;
        advance(p);
    }
    if (end_tag(p)) return NULL;
    p->nesting--;
    return n;
}

static ct_node *parse_set(parser *p, int line)
{
    static const char *const stops[] = {"endset", NULL};
    ct_node *n = mk_node(p, CT_S_SET, line);
    if (!n || expect_name(p, &n->targets[0], "a variable name after 'set'")) return NULL;
    n->n_targets = 1;
    if (is_op(cur(p), ".")) {
        advance(p);
        if (expect_name(p, &n->targets[1], "an attribute name")) return NULL;
        n->n_targets = 2;
    }
    if (is_op(cur(p), ",")) return fail(p, line, "tuple assignment is not supported"), NULL;
    if (cur(p)->kind == TK_BLOCK_END) {
        /* {% set x %}...{% endset %} captures the rendered body */
        advance(p);
        if (enter_block(p, line)) return NULL;
        n->kind = CT_S_SET_BLOCK;
        int stop;
        if (parse_body(p, stops, "set", line, &n->body, &stop)) return NULL;
        advance(p);
        if (end_tag(p)) return NULL;
        p->nesting--;
        return n;
    }
    if (expect_op(p, "=") || !(n->expr = parse_cond(p, 1)) || end_tag(p)) return NULL;
    return n;
}

static ct_node *parse_macro(parser *p, int line)
{
    static const char *const stops[] = {"endmacro", NULL};
    if (p->in_macro) return fail(p, line, "nested macro definitions are not supported"), NULL;
    if (enter_block(p, line)) return NULL;
    ct_node *n = mk_node(p, CT_S_MACRO, line);
    if (!n || expect_name(p, &n->targets[0], "a macro name") || expect_op(p, "(")) return NULL;
    ct_expr holder = {0};
    if (parse_call_args(p, &holder)) return NULL;
    n->n_params = holder.n_args;
    if (n->n_params) {
        n->params = ct_alloc(&p->t->arena, (size_t)n->n_params * sizeof *n->params);
        n->defaults = ct_alloc(&p->t->arena, (size_t)n->n_params * sizeof *n->defaults);
        if (!n->params || !n->defaults) return oom(p, line), NULL;
    }
    for (int i = 0; i < n->n_params; i++) {
        /* parameters come back as `name` or `name=default` arguments */
        const ct_expr *a = holder.args[i];
        if (holder.kwnames[i].n) {
            n->params[i] = holder.kwnames[i];
            n->defaults[i] = holder.args[i];
        } else if (a->kind == CT_E_NAME) {
            n->params[i] = a->name;
        } else {
            return fail(p, line, "bad macro parameter"), NULL;
        }
    }
    if (end_tag(p)) return NULL;
    int stop, loops = p->loops;
    p->in_macro = 1;
    p->loops = 0;
    int r = parse_body(p, stops, "macro", line, &n->body, &stop);
    p->in_macro = 0;
    p->loops = loops;
    if (r) return NULL;
    advance(p);
    if (end_tag(p)) return NULL;
    p->nesting--;
    return n;
}

static int in_stops(const char *const *stops, ct_str name)
{
    for (int i = 0; stops && stops[i]; i++)
        if (ct_str_eq(name, stops[i])) return i;
    return -1;
}

static int parse_body(parser *p, const char *const *stops, const char *opener, int open_line,
                      ct_node **out, int *stop)
{
    static const char *const closers[] = {"elif", "else", "endif", "endfor", "endset",
                                          "endmacro", NULL};
    ct_node *head = NULL, **tail = &head;
    *out = NULL;
    for (;;) {
        token *t = cur(p);
        ct_node *n = NULL;
        if (t->kind == TK_EOF) {
            if (!stops) break;
            const char *closer = stops[0];
            for (int i = 0; stops[i]; i++)
                if (strncmp(stops[i], "end", 3) == 0) closer = stops[i];
            return fail(p, open_line, "unclosed '{%% %s %%}' (missing '{%% %s %%}')", opener, closer);
        } else if (t->kind == TK_TEXT) {
            if (!(n = mk_node(p, CT_S_TEXT, t->line))) return -1;
            n->text = t->s;
            advance(p);
        } else if (t->kind == TK_VAR_BEGIN) {
            advance(p);
            if (!(n = mk_node(p, CT_S_OUTPUT, t->line)) || !(n->expr = parse_cond(p, 1)) ||
                expect_kind(p, TK_VAR_END, "'}}'"))
                return -1;
        } else if (t->kind == TK_BLOCK_BEGIN) {
            advance(p);
            token *name = cur(p);
            if (name->kind != TK_NAME) return fail(p, name->line, "expected a tag name after '{%%'");
            int which = in_stops(stops, name->s);
            if (which >= 0) { *stop = which; break; }
            if (in_stops(closers, name->s) >= 0)
                return fail(p, name->line, "unexpected '%.*s'%s%s%s", (int)name->s.n, name->s.s,
                            opener ? " inside '" : "", opener ? opener : "", opener ? "'" : "");
            advance(p);
            if (ct_str_eq(name->s, "if")) n = parse_if(p, name->line);
            else if (ct_str_eq(name->s, "for")) n = parse_for(p, name->line);
            else if (ct_str_eq(name->s, "set")) n = parse_set(p, name->line);
            else if (ct_str_eq(name->s, "macro")) n = parse_macro(p, name->line);
            else if (ct_str_eq(name->s, "break") || ct_str_eq(name->s, "continue")) {
                if (!p->loops)
                    return fail(p, name->line, "'%.*s' outside a for loop", (int)name->s.n, name->s.s);
                n = mk_node(p, ct_str_eq(name->s, "break") ? CT_S_BREAK : CT_S_CONTINUE, name->line);
                if (n && end_tag(p)) return -1;
            } else {
                return fail(p, name->line, "unknown tag '%.*s'", (int)name->s.n, name->s.s);
            }
            if (!n) return -1;
        } else {
            return fail(p, t->line, "unexpected %s", describe(t));
        }
        *tail = n;
        while (n->next) n = n->next;
        tail = &n->next;
    }
    *out = head;
    return 0;
}

int ct_parse(chat_template *t, char *err, size_t errlen)
{
    parser p = {0};
    p.t = t;
    p.err = err;
    p.errlen = errlen;
    int stop = -1;
    int r = lex(&p);
    if (r == 0) r = parse_body(&p, NULL, NULL, 1, &t->root, &stop);
    free(p.tk);
    return r;
}
