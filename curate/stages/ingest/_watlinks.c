/* Image links of a block of WAT response records, read by a strict single-pass JSON scanner.
 *
 * Why: Arrow's JSON reader builds a struct for every element of "Links" (~0.6 us each), and most
 * elements are <a href> anchors that ingest throws away; this scanner skips them at memory speed.
 *
 * It only accepts what it is sure Arrow's reader (explicit schema, unexpected fields ignored)
 * reads the same way: RFC 8259 JSON, valid UTF-8 throughout, keys without escapes, no repeated
 * key of interest, the fields of interest of the expected JSON types (objects, an array of
 * objects, strings). Anything else makes scan() return None and the caller reads the block
 * with Arrow (which then handles, counts or rejects it as before).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_DEPTH 512

/* Results of the helpers: 0 ok, -1 memory error, 1 "not sure: let Arrow read it". */
#define OK 0
#define NOMEM (-1)
#define GIVE_UP 1

typedef struct {
    char *data;
    Py_ssize_t len, cap;
} Buf;

static int buf_reserve(Buf *b, Py_ssize_t extra) {
    if (b->len + extra <= b->cap) return 0;
    Py_ssize_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra) cap *= 2;
    char *d = PyMem_Realloc(b->data, (size_t)cap);
    if (!d) return -1;
    b->data = d;
    b->cap = cap;
    return 0;
}

static int buf_put(Buf *b, const void *src, Py_ssize_t n) {
    if (buf_reserve(b, n) < 0) return -1;
    memcpy(b->data + b->len, src, (size_t)n);
    b->len += n;
    return 0;
}

static void buf_free(Buf *b) {
    PyMem_Free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* A string column: values, int32 offsets, one validity byte per row. */
typedef struct {
    Buf values, offsets, valid;
} Column;

static int column_init(Column *c) {
    int32_t zero = 0;
    return buf_put(&c->offsets, &zero, sizeof zero);
}

static int column_add(Column *c, const char *s, Py_ssize_t n, int present) {
    if (present && buf_put(&c->values, s, n) < 0) return NOMEM;
    if (c->values.len > INT32_MAX) return GIVE_UP;  /* past int32 offsets: Arrow's reader copes */
    int32_t end = (int32_t)c->values.len;
    char v = (char)(present ? 1 : 0);
    if (buf_put(&c->offsets, &end, sizeof end) < 0 || buf_put(&c->valid, &v, 1) < 0) return NOMEM;
    return OK;
}

static void column_free(Column *c) {
    buf_free(&c->values);
    buf_free(&c->offsets);
    buf_free(&c->valid);
}

/* ------------------------------------------------------------------ UTF-8 */

/* 1 if [p, end) is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
static int utf8_valid(const unsigned char *p, const unsigned char *end) {
    while (p < end) {
        if (end - p >= 8) {
            uint64_t w;
            memcpy(&w, p, 8);
            if (!(w & 0x8080808080808080ULL)) {
                p += 8;
                continue;
            }
        }
        unsigned char c = *p;
        if (c < 0x80) {
            p++;
        } else if (c >= 0xC2 && c <= 0xDF) {
            if (end - p < 2 || (p[1] & 0xC0) != 0x80) return 0;
            p += 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            if (end - p < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) return 0;
            if (c == 0xE0 && p[1] < 0xA0) return 0;  /* overlong */
            if (c == 0xED && p[1] > 0x9F) return 0;  /* surrogate */
            p += 3;
        } else if (c >= 0xF0 && c <= 0xF4) {
            if (end - p < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80)
                return 0;
            if (c == 0xF0 && p[1] < 0x90) return 0;  /* overlong */
            if (c == 0xF4 && p[1] > 0x8F) return 0;  /* above U+10FFFF */
            p += 4;
        } else {
            return 0;
        }
    }
    return 1;
}

/* ------------------------------------------------------------------ JSON */

typedef struct {
    const unsigned char *p, *end;
    int depth;
    /* Some string of the record ends in 'anguage' (ASCII, any case): the same records as the Arrow
     * path's byte search for 'anguage"' picks, since in valid JSON that quote can only close a
     * string. Only those records get a declared language. */
    int mentions_language;
} Cur;

static int ends_in_language(const unsigned char *s, const unsigned char *end) {
    static const char word[] = "anguage";
    if (end - s < 7) return 0;
    for (int i = 0; i < 7; i++)
        if ((end[i - 7] | 0x20) != word[i]) return 0;
    return 1;
}

static void skip_ws(Cur *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\n' || *c->p == '\r' || *c->p == '\t')) c->p++;
}

static int hex4(const unsigned char *p, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char h = p[i];
        v <<= 4;
        if (h >= '0' && h <= '9') v |= (unsigned)(h - '0');
        else if (h >= 'a' && h <= 'f') v |= (unsigned)(h - 'a' + 10);
        else if (h >= 'A' && h <= 'F') v |= (unsigned)(h - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

static int put_utf8(Buf *b, unsigned cp) {
    unsigned char s[4];
    Py_ssize_t n;
    if (cp < 0x80) { s[0] = (unsigned char)cp; n = 1; }
    else if (cp < 0x800) { s[0] = (unsigned char)(0xC0 | (cp >> 6)); s[1] = (unsigned char)(0x80 | (cp & 0x3F)); n = 2; }
    else if (cp < 0x10000) {
        s[0] = (unsigned char)(0xE0 | (cp >> 12)); s[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        s[2] = (unsigned char)(0x80 | (cp & 0x3F)); n = 3;
    } else {
        s[0] = (unsigned char)(0xF0 | (cp >> 18)); s[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
        s[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F)); s[3] = (unsigned char)(0x80 | (cp & 0x3F)); n = 4;
    }
    return buf_put(b, s, n);
}

/* A string at c->p (on its opening quote). With `out`, its unescaped bytes are appended there.
 * `*escaped` tells whether it held any backslash. */
static int scan_string(Cur *c, Buf *out, int *escaped) {
    const unsigned char *p = c->p + 1, *end = c->end;
    *escaped = 0;
    for (;;) {
        const unsigned char *run = p;
        /* Eight bytes at a time while none is a quote, a backslash or a control character. */
        while (end - p >= 8) {
            uint64_t w;
            memcpy(&w, p, 8);
            uint64_t q = w ^ 0x2222222222222222ULL, b = w ^ 0x5C5C5C5C5C5C5C5CULL;
            uint64_t hit = ((q - 0x0101010101010101ULL) & ~q) | ((b - 0x0101010101010101ULL) & ~b) |
                           ((w - 0x2020202020202020ULL) & ~w);
            if (hit & 0x8080808080808080ULL) break;
            p += 8;
        }
        while (p < end && *p != '"' && *p != '\\' && *p >= 0x20) p++;
        if (out && p > run && buf_put(out, run, p - run) < 0) return NOMEM;
        if (p >= end || *p < 0x20) return GIVE_UP;  /* unterminated, or a raw control character */
        if (*p == '"') {
            if (ends_in_language(c->p + 1, p)) c->mentions_language = 1;
            c->p = p + 1;
            return OK;
        }
        *escaped = 1;
        if (end - p < 2) return GIVE_UP;
        unsigned char e = p[1];
        char ch;
        switch (e) {
            case '"': ch = '"'; break;
            case '\\': ch = '\\'; break;
            case '/': ch = '/'; break;
            case 'b': ch = '\b'; break;
            case 'f': ch = '\f'; break;
            case 'n': ch = '\n'; break;
            case 'r': ch = '\r'; break;
            case 't': ch = '\t'; break;
            case 'u': {
                unsigned cp, lo;
                if (end - p < 6 || hex4(p + 2, &cp) < 0) return GIVE_UP;
                p += 6;
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, &lo) < 0) return GIVE_UP;
                    if (lo < 0xDC00 || lo > 0xDFFF) return GIVE_UP;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    p += 6;
                } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    return GIVE_UP;  /* a lone low surrogate */
                }
                if (out && put_utf8(out, cp) < 0) return NOMEM;
                continue;
            }
            default:
                return GIVE_UP;
        }
        if (out && buf_put(out, &ch, 1) < 0) return NOMEM;
        p += 2;
    }
}

static int skip_value(Cur *c);

static int skip_number(Cur *c) {
    const unsigned char *p = c->p, *end = c->end;
    if (p < end && *p == '-') p++;
    if (p >= end) return GIVE_UP;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9') p++;
    } else {
        return GIVE_UP;
    }
    if (p < end && *p == '.') {
        p++;
        if (p >= end || *p < '0' || *p > '9') return GIVE_UP;
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (p >= end || *p < '0' || *p > '9') return GIVE_UP;
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    c->p = p;
    return OK;
}

static int skip_literal(Cur *c, const char *word, Py_ssize_t n) {
    if (c->end - c->p < n || memcmp(c->p, word, (size_t)n) != 0) return GIVE_UP;
    c->p += n;
    return OK;
}

/* Calls `on_key(ctx, key, len)` for each member with c->p on the value; on_key must consume it. */
typedef int (*KeyFn)(Cur *c, void *ctx, const unsigned char *key, Py_ssize_t len);

static int scan_object(Cur *c, KeyFn on_key, void *ctx) {
    if (++c->depth > MAX_DEPTH) return GIVE_UP;
    c->p++;  /* '{' */
    skip_ws(c);
    if (c->p < c->end && *c->p == '}') {
        c->p++;
        c->depth--;
        return OK;
    }
    for (;;) {
        if (c->p >= c->end || *c->p != '"') return GIVE_UP;
        const unsigned char *key = c->p + 1;
        int escaped, r = scan_string(c, NULL, &escaped);
        if (r) return r;
        if (escaped) return GIVE_UP;  /* keys are compared as written */
        Py_ssize_t key_len = (c->p - 1) - key;
        skip_ws(c);
        if (c->p >= c->end || *c->p != ':') return GIVE_UP;
        c->p++;
        skip_ws(c);
        r = on_key ? on_key(c, ctx, key, key_len) : skip_value(c);
        if (r) return r;
        skip_ws(c);
        if (c->p >= c->end) return GIVE_UP;
        if (*c->p == ',') {
            c->p++;
            skip_ws(c);
            continue;
        }
        if (*c->p == '}') {
            c->p++;
            c->depth--;
            return OK;
        }
        return GIVE_UP;
    }
}

/* Calls `on_item(c, ctx)` for each element with c->p on it; on_item must consume it (NULL: skip). */
typedef int (*ItemFn)(Cur *c, void *ctx);

static int scan_array(Cur *c, ItemFn on_item, void *ctx) {
    if (c->p >= c->end || *c->p != '[') return GIVE_UP;
    if (++c->depth > MAX_DEPTH) return GIVE_UP;
    c->p++;
    skip_ws(c);
    if (c->p < c->end && *c->p == ']') {
        c->p++;
        c->depth--;
        return OK;
    }
    for (;;) {
        int r = on_item ? on_item(c, ctx) : skip_value(c);
        if (r) return r;
        skip_ws(c);
        if (c->p >= c->end) return GIVE_UP;
        if (*c->p == ',') {
            c->p++;
            skip_ws(c);
            continue;
        }
        if (*c->p == ']') {
            c->p++;
            c->depth--;
            return OK;
        }
        return GIVE_UP;
    }
}

static int skip_value(Cur *c) {
    if (c->p >= c->end) return GIVE_UP;
    int escaped;
    switch (*c->p) {
        case '{': return scan_object(c, NULL, NULL);
        case '[': return scan_array(c, NULL, NULL);
        case '"': return scan_string(c, NULL, &escaped);
        case 't': return skip_literal(c, "true", 4);
        case 'f': return skip_literal(c, "false", 5);
        case 'n': return skip_literal(c, "null", 4);
        default: return skip_number(c);
    }
}

/* ------------------------------------------------------------------ the WAT paths */

#define KEY_IS(name) (len == (Py_ssize_t)(sizeof(name) - 1) && memcmp(key, name, sizeof(name) - 1) == 0)

/* A string field of interest: a string (unescaped into `out`) or null. */
typedef struct {
    Buf value;
    int present;  /* a string was given */
    int seen;     /* the key was met (a second time means: let Arrow decide) */
} Field;

static int read_field(Cur *c, Field *f) {
    if (f->seen) return GIVE_UP;
    f->seen = 1;
    f->value.len = 0;
    if (c->p < c->end && *c->p == 'n') {
        f->present = 0;
        return skip_literal(c, "null", 4);
    }
    if (c->p >= c->end || *c->p != '"') return GIVE_UP;  /* not a string: Arrow's type rules decide */
    int escaped;
    f->present = 1;
    return scan_string(c, &f->value, &escaped);
}

static void field_reset(Field *f) {
    f->seen = f->present = 0;
}

static int column_add_field(Column *c, const Field *f) {
    return column_add(c, f->value.data, f->value.len, f->present);
}

typedef struct {
    Field path, url, alt, title;
} Link;

static int link_key(Cur *c, void *ctx, const unsigned char *key, Py_ssize_t len) {
    Link *l = ctx;
    if (KEY_IS("path")) return read_field(c, &l->path);
    if (KEY_IS("url")) return read_field(c, &l->url);
    if (KEY_IS("alt")) return read_field(c, &l->alt);
    if (KEY_IS("title")) return read_field(c, &l->title);
    return skip_value(c);
}

typedef struct {
    Field name, equiv, content;
} Meta;

typedef struct {
    Column url, alt, title;
    Buf link_page;        /* int32 record index of each image link */
    Py_ssize_t n_links;   /* every element of every Links array */
    Column meta_name, meta_equiv, meta_content;
    Buf meta_page;        /* int32 record index of each <meta> */
    int32_t record;
    Field target;         /* WARC-Target-URI of the current record */
    Field lang_header;    /* its HTTP Content-Language header */
    Link link;
    Meta meta;
    struct {  /* keys of interest met in the current record: a second one goes to Arrow */
        int envelope, header, payload, response, html, links, headers, head, metas;
    } seen;
} Block;

static const char IMG_PATH[] = "IMG@/src";

static int link_item(Cur *c, void *ctx) {
    Block *b = ctx;
    if (c->p >= c->end || *c->p != '{') return GIVE_UP;  /* elements other than objects: Arrow decides */
    Link *l = &b->link;
    field_reset(&l->path);
    field_reset(&l->url);
    field_reset(&l->alt);
    field_reset(&l->title);
    int r = scan_object(c, link_key, l);
    if (r) return r;
    b->n_links++;
    if (!l->path.present || l->path.value.len != (Py_ssize_t)(sizeof IMG_PATH - 1) ||
        memcmp(l->path.value.data, IMG_PATH, sizeof IMG_PATH - 1) != 0)
        return OK;
    int32_t rec = b->record;
    if (buf_put(&b->link_page, &rec, sizeof rec) < 0) return NOMEM;
    if ((r = column_add_field(&b->url, &l->url)) || (r = column_add_field(&b->alt, &l->alt))) return r;
    return column_add_field(&b->title, &l->title);
}

static int scan_links(Cur *c, Block *b) {
    if (b->seen.links) return GIVE_UP;
    b->seen.links = 1;
    return scan_array(c, link_item, b);
}

/* An object-valued field of interest: an object (walked with `fn`); null or anything else is
 * left to Arrow. */
static int nested(Cur *c, Block *b, int *seen, KeyFn fn) {
    if (*seen) return GIVE_UP;
    *seen = 1;
    if (c->p >= c->end || *c->p != '{') return GIVE_UP;
    return scan_object(c, fn, b);
}

static int meta_key(Cur *c, void *ctx, const unsigned char *key, Py_ssize_t len) {
    Meta *m = ctx;
    if (KEY_IS("name")) return read_field(c, &m->name);
    if (KEY_IS("http-equiv")) return read_field(c, &m->equiv);
    if (KEY_IS("content")) return read_field(c, &m->content);
    return skip_value(c);
}

static int meta_item(Cur *c, void *ctx) {
    Block *b = ctx;
    if (c->p >= c->end || *c->p != '{') return GIVE_UP;
    Meta *m = &b->meta;
    field_reset(&m->name);
    field_reset(&m->equiv);
    field_reset(&m->content);
    int r = scan_object(c, meta_key, m);
    if (r) return r;
    int32_t rec = b->record;
    if (buf_put(&b->meta_page, &rec, sizeof rec) < 0) return NOMEM;
    if ((r = column_add_field(&b->meta_name, &m->name)) || (r = column_add_field(&b->meta_equiv, &m->equiv)))
        return r;
    return column_add_field(&b->meta_content, &m->content);
}

static int scan_metas(Cur *c, Block *b) {
    if (b->seen.metas) return GIVE_UP;
    b->seen.metas = 1;
    return scan_array(c, meta_item, b);
}

static int head_key(Cur *c, void *ctx, const unsigned char *key, Py_ssize_t len) {
    if (KEY_IS("Metas")) return scan_metas(c, ctx);
    return skip_value(c);
}

static int html_key(Cur *c, void *ctx, const unsigned char *key, Py_ssize_t len) {
    Block *b = ctx;
    if (KEY_IS("Links")) return scan_links(c, b);
    if (KEY_IS("Head")) return nested(c, b, &b->seen.head, head_key);
    return skip_value(c);
}

static int headers_key(Cur *c, void *ctx, const unsigned char *key, Py_ssize_t len) {
    Block *b = ctx;
    if (KEY_IS("Content-Language")) return read_field(c, &b->lang_header);
    return skip_value(c);
}

static int response_key(Cur *c, void *ctx, const unsigned char *key, Py_ssize_t len) {
    Block *b = ctx;
    if (KEY_IS("HTML-Metadata")) return nested(c, b, &b->seen.html, html_key);
    if (KEY_IS("Headers")) return nested(c, b, &b->seen.headers, headers_key);
    return skip_value(c);
}

static int payload_key(Cur *c, void *ctx, const unsigned char *key, Py_ssize_t len) {
    Block *b = ctx;
    if (KEY_IS("HTTP-Response-Metadata")) return nested(c, b, &b->seen.response, response_key);
    return skip_value(c);
}

static int header_key(Cur *c, void *ctx, const unsigned char *key, Py_ssize_t len) {
    Block *b = ctx;
    if (KEY_IS("WARC-Target-URI")) return read_field(c, &b->target);
    return skip_value(c);
}

static int envelope_key(Cur *c, void *ctx, const unsigned char *key, Py_ssize_t len) {
    Block *b = ctx;
    if (KEY_IS("WARC-Header-Metadata")) return nested(c, b, &b->seen.header, header_key);
    if (KEY_IS("Payload-Metadata")) return nested(c, b, &b->seen.payload, payload_key);
    return skip_value(c);
}

static int top_key(Cur *c, void *ctx, const unsigned char *key, Py_ssize_t len) {
    Block *b = ctx;
    if (KEY_IS("Envelope")) return nested(c, b, &b->seen.envelope, envelope_key);
    return skip_value(c);
}

static PyObject *column_tuple(Column *col) {
    return Py_BuildValue("(y#y#y#)", col->values.data ? col->values.data : "", col->values.len,
                         col->offsets.data, col->offsets.len, col->valid.data ? col->valid.data : "",
                         col->valid.len);
}

PyDoc_STRVAR(scan_doc,
"scan(bodies: list[bytes]) -> tuple | None\n\n"
"The fields ingest reads from WAT response records: (page_url, link_page, url, alt, title,\n"
"n_links, lang_header, meta_page, meta_name, meta_equiv, meta_content). Each string column is\n"
"(values, int32 offsets, validity bytes); link_page and meta_page are int32 record indices;\n"
"n_links counts every Links element. lang_header and the metas are kept only for records that\n"
"mention 'anguage' at the end of a string. None when the block holds anything the scanner\n"
"leaves to Arrow's JSON reader.");

typedef struct {
    Py_ssize_t values, offsets, valid;
} Mark;

static Mark column_mark(Column *c) {
    Mark m = {c->values.len, c->offsets.len, c->valid.len};
    return m;
}

static void column_rewind(Column *c, Mark m) {
    c->values.len = m.values;
    c->offsets.len = m.offsets;
    c->valid.len = m.valid;
}

static void block_free(Block *b, Column *page, Column *header) {
    Column *cols[] = {page, header, &b->url, &b->alt, &b->title, &b->meta_name, &b->meta_equiv, &b->meta_content};
    for (size_t k = 0; k < sizeof cols / sizeof cols[0]; k++) column_free(cols[k]);
    Buf *bufs[] = {&b->link_page, &b->meta_page, &b->target.value, &b->lang_header.value,
                   &b->link.path.value, &b->link.url.value, &b->link.alt.value, &b->link.title.value,
                   &b->meta.name.value, &b->meta.equiv.value, &b->meta.content.value};
    for (size_t k = 0; k < sizeof bufs / sizeof bufs[0]; k++) buf_free(bufs[k]);
}

static PyObject *scan(PyObject *self, PyObject *arg) {
    (void)self;
    if (!PyList_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "scan() takes a list of bytes");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(arg);
    if (n > INT32_MAX) Py_RETURN_NONE;
    Block b;
    Column page, header;
    Cur c;
    memset(&b, 0, sizeof b);
    memset(&page, 0, sizeof page);
    memset(&header, 0, sizeof header);
    memset(&c, 0, sizeof c);
    int r = OK;
    Column *cols[] = {&page, &header, &b.url, &b.alt, &b.title, &b.meta_name, &b.meta_equiv, &b.meta_content};
    for (size_t k = 0; k < sizeof cols / sizeof cols[0]; k++)
        if (column_init(cols[k])) r = NOMEM;
    for (Py_ssize_t i = 0; i < n && r == OK; i++) {
        PyObject *item = PyList_GET_ITEM(arg, i);
        if (!PyBytes_Check(item)) {
            r = GIVE_UP;
            break;
        }
        const unsigned char *s = (const unsigned char *)PyBytes_AS_STRING(item);
        Py_ssize_t len = PyBytes_GET_SIZE(item);
        if (!utf8_valid(s, s + len)) {
            r = GIVE_UP;
            break;
        }
        c.p = s;
        c.end = s + len;
        c.depth = 0;
        c.mentions_language = 0;
        b.record = (int32_t)i;
        field_reset(&b.target);
        field_reset(&b.lang_header);
        memset(&b.seen, 0, sizeof b.seen);
        Mark names = column_mark(&b.meta_name), equivs = column_mark(&b.meta_equiv),
             contents = column_mark(&b.meta_content);
        Py_ssize_t meta_pages = b.meta_page.len;
        skip_ws(&c);
        if (c.p >= c.end || *c.p != '{') {
            r = GIVE_UP;
            break;
        }
        r = scan_object(&c, top_key, &b);
        if (r) break;
        skip_ws(&c);
        if (c.p != c.end) {
            r = GIVE_UP;  /* more than one JSON value */
            break;
        }
        if (!c.mentions_language) {
            column_rewind(&b.meta_name, names);
            column_rewind(&b.meta_equiv, equivs);
            column_rewind(&b.meta_content, contents);
            b.meta_page.len = meta_pages;
            b.lang_header.present = 0;
        }
        if ((r = column_add_field(&page, &b.target)) == OK) r = column_add_field(&header, &b.lang_header);
    }
    PyObject *result = NULL;
    if (r == NOMEM) {
        PyErr_NoMemory();
    } else if (r == GIVE_UP) {
        result = Py_None;
        Py_INCREF(result);
    } else {
        PyObject *t[8] = {NULL};
        int ok = 1;
        for (int k = 0; k < 8; k++)
            if (!(t[k] = column_tuple(cols[k]))) ok = 0;
        if (ok)
            result = Py_BuildValue("(Oy#OOOnOy#OOO)", t[0], b.link_page.data ? b.link_page.data : "",
                                   b.link_page.len, t[2], t[3], t[4], b.n_links, t[1],
                                   b.meta_page.data ? b.meta_page.data : "", b.meta_page.len, t[5], t[6], t[7]);
        for (int k = 0; k < 8; k++) Py_XDECREF(t[k]);
    }
    block_free(&b, &page, &header);
    return result;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_O, scan_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_watlinks",
    "Strict scanner for the image links of WAT response records (see _watlinks.c).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__watlinks(void) { return PyModule_Create(&module); }
