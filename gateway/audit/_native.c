/* The audit log's per-entry hashing loops in C, hashing with OpenSSL's SHA-256.
 *
 * Each function is the exact equivalent of a Python function (which stays the reference and
 * the fallback when this module is not built); tests/audit/test_native.py checks them against
 * each other. They only move per-entry loops out of the interpreter: a SHA-256 of one
 * 850-byte leaf costs about 0.57 us in OpenSSL, and Python adds about 0.3 us of its own around
 * each hashlib call.
 *
 * The writer's: encoding a record (record.py_record_body) on the event loop, and sequencing a
 * batch of appends (record.py_chain_leaves and compact.py_push_leaves) in the writer thread:
 *
 *   record_body(record)                   -> an AuditRecord's canonical JSON: sorted keys, no
 *                                            whitespace, strings escaped to ASCII exactly as
 *                                            json.encoder.encode_basestring_ascii does
 *   chain_leaves(bodies, index, prev[, backs])
 *                                         -> (leaves, hashes): each body wrapped as the leaf
 *                                            {"i":<index>,"prev":"<hex of prev>","r":<body>},
 *                                            each leaf's hash the next one's prev; with backs,
 *                                            each body gets "back":<n or null> as its first
 *                                            key (-1: none, as record.with_back)
 *   push_leaves(border, size, hashes)     -> for each leaf hash, the hashes of the Merkle nodes
 *                                            it completes (its own first), joined; extends the
 *                                            right border (a list, changed in place)
 *
 * The offline verifier's (_verify_fast.py_*):
 *
 *   hash_leaves(block)                    -> [SHA-256(0x00 || line) for each line of block]
 *   hash_lines(block, p, prev_hex, out)   -> (p, prev_hex, bad): checks each line's prefix
 *                                            {"i":<p>,"prev":"<prev_hex>","r": and closing },
 *                                            appends its leaf hash to out; stops at a bad line
 *                                            and returns its offset (-1 if none)
 *   hash_pairs(hashes, start, end)        -> [SHA-256(0x01 || hashes[i] || hashes[i + 1])
 *                                             for i in range(start, end, 2)]
 *   check_records(block, programs)        -> the offset of the first line that is not a leaf
 *                                            of the record schema (-1 if none): the prefix's
 *                                            shape, then a record as one of the programs (one
 *                                            per record version, from record.RECORD_SCHEMAS)
 *
 * A block is any bytes-like object of lines split at "\n"; its last line may lack the "\n".
 * Reading lines in place saves splitting the file into one bytes object per line.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <openssl/evp.h>
#include <stdint.h>
#include <string.h>

#define HASH_SIZE 32
#define HEX_SIZE (2 * HASH_SIZE)

static EVP_MD *sha256_md; /* fetched once: EVP_sha256() would look it up on every init */

typedef struct {
    EVP_MD_CTX *ctx;
} Hasher;

static int hasher_open(Hasher *h) {
    h->ctx = EVP_MD_CTX_new();
    if (h->ctx == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static void hasher_close(Hasher *h) { EVP_MD_CTX_free(h->ctx); }

/* out = SHA-256(prefix || a || b); b may be NULL. */
static int sha256_3(Hasher *h, unsigned char prefix, const char *a, Py_ssize_t alen,
                    const char *b, Py_ssize_t blen, unsigned char out[HASH_SIZE]) {
    if (EVP_DigestInit_ex(h->ctx, sha256_md, NULL) != 1 ||
        EVP_DigestUpdate(h->ctx, &prefix, 1) != 1 ||
        EVP_DigestUpdate(h->ctx, a, (size_t)alen) != 1 ||
        (b != NULL && EVP_DigestUpdate(h->ctx, b, (size_t)blen) != 1) ||
        EVP_DigestFinal_ex(h->ctx, out, NULL) != 1) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL SHA-256 failed");
        return -1;
    }
    return 0;
}

static int check_bytes(PyObject *item, const char *what) {
    if (!PyBytes_Check(item)) {
        PyErr_Format(PyExc_TypeError, "%s must be bytes, not %.100s", what, Py_TYPE(item)->tp_name);
        return -1;
    }
    return 0;
}

/* The lines of a block: split at "\n"; a block's last line may lack its "\n". */
typedef struct {
    const char *data;
    Py_ssize_t size, pos;
} Lines;

static int next_line(Lines *it, const char **line, Py_ssize_t *len) {
    if (it->pos >= it->size) return 0;
    const char *start = it->data + it->pos;
    const char *nl = memchr(start, '\n', (size_t)(it->size - it->pos));
    *line = start;
    *len = nl != NULL ? nl - start : it->size - it->pos;
    it->pos += *len + 1;
    return 1;
}

/* Whether line starts with exactly {"i":<p>,"prev":"<hex>","r": (p >= 0 in decimal). */
static int has_prefix(const char *line, Py_ssize_t len, long long p, const char hex[HEX_SIZE]) {
    static const char head[] = "{\"i\":", middle[] = ",\"prev\":\"", tail[] = "\",\"r\":";
    char digits[24];
    int n = 0;
    unsigned long long v = (unsigned long long)p;
    do {
        digits[sizeof digits - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    Py_ssize_t need = 5 + n + 9 + HEX_SIZE + 6;
    if (len < need) return 0;
    return memcmp(line, head, 5) == 0 && memcmp(line + 5, digits + sizeof digits - n, n) == 0 &&
           memcmp(line + 5 + n, middle, 9) == 0 && memcmp(line + 14 + n, hex, HEX_SIZE) == 0 &&
           memcmp(line + 14 + n + HEX_SIZE, tail, 6) == 0;
}

static int append_digest(PyObject *list, const unsigned char digest[HASH_SIZE]) {
    PyObject *item = PyBytes_FromStringAndSize((const char *)digest, HASH_SIZE);
    if (item == NULL) return -1;
    int appended = PyList_Append(list, item);
    Py_DECREF(item);
    return appended;
}

static const char hex_digits[] = "0123456789abcdef";

static void to_hex(const unsigned char digest[HASH_SIZE], char hex[HEX_SIZE]) {
    for (int k = 0; k < HASH_SIZE; k++) {
        hex[2 * k] = hex_digits[digest[k] >> 4];
        hex[2 * k + 1] = hex_digits[digest[k] & 15];
    }
}

/* A list item that must be bytes of exactly HASH_SIZE bytes. */
static int check_hash(PyObject *item, const char *what, Py_ssize_t i) {
    if (check_bytes(item, what) < 0) return -1;
    if (PyBytes_GET_SIZE(item) != HASH_SIZE) {
        PyErr_Format(PyExc_ValueError, "%s %zd has %zd bytes, not %d", what, i,
                     PyBytes_GET_SIZE(item), HASH_SIZE);
        return -1;
    }
    return 0;
}

/* One back-link of chain_leaves (record.with_back): -1 (NO_BACK: none), -2 (None: null), or an
 * index >= 0. */
static int parse_back(PyObject *item, long long *back) {
    if (item == Py_None) {
        *back = -2;
        return 0;
    }
    if (!PyLong_Check(item)) {
        PyErr_Format(PyExc_ValueError, "chain_leaves: back-link %R is not an index, None or NO_BACK",
                     item);
        return -1;
    }
    *back = PyLong_AsLongLong(item);
    if (*back == -1 && PyErr_Occurred()) return -1;
    if (*back < -1) {
        PyErr_Format(PyExc_ValueError, "chain_leaves: back-link %R is not an index, None or NO_BACK",
                     item);
        return -1;
    }
    return 0;
}

static PyObject *chain_leaves(PyObject *module, PyObject *args) {
    PyObject *bodies, *backs = Py_None;
    long long index;
    const char *prev_in;
    Py_ssize_t prev_len;
    if (!PyArg_ParseTuple(args, "O!Ly#|O:chain_leaves", &PyList_Type, &bodies, &index, &prev_in,
                          &prev_len, &backs))
        return NULL;
    if (index < 0) {
        PyErr_Format(PyExc_ValueError, "chain_leaves: index %lld is negative", index);
        return NULL;
    }
    if (prev_len != HASH_SIZE) {
        PyErr_Format(PyExc_ValueError, "chain_leaves: prev has %zd bytes, not %d", prev_len,
                     HASH_SIZE);
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(bodies);
    for (Py_ssize_t i = 0; i < n; i++)
        if (check_bytes(PyList_GET_ITEM(bodies, i), "each body") < 0) return NULL;
    if (backs != Py_None) {
        if (!PyList_Check(backs)) {
            PyErr_SetString(PyExc_TypeError, "chain_leaves: backs must be a list or None");
            return NULL;
        }
        if (PyList_GET_SIZE(backs) != n) {
            PyErr_Format(PyExc_ValueError, "chain_leaves: %zd back-links for %zd bodies",
                         PyList_GET_SIZE(backs), n);
            return NULL;
        }
    }
    /* The back-links, parsed before anything is built: a bad one refuses the whole batch. */
    long long *links = NULL;
    if (backs != Py_None && n > 0) {
        links = PyMem_Malloc((size_t)n * sizeof(long long));
        if (links == NULL) return PyErr_NoMemory();
        for (Py_ssize_t i = 0; i < n; i++) {
            if (parse_back(PyList_GET_ITEM(backs, i), &links[i]) < 0) {
                PyMem_Free(links);
                return NULL;
            }
            PyObject *body = PyList_GET_ITEM(bodies, i);
            if (links[i] != -1 && (PyBytes_GET_SIZE(body) == 0 || PyBytes_AS_STRING(body)[0] != '{')) {
                PyErr_SetString(PyExc_ValueError,
                                "chain_leaves: a body with a back-link must be a JSON object");
                PyMem_Free(links);
                return NULL;
            }
        }
    }
    PyObject *leaves = PyList_New(n), *hashes = PyList_New(n);
    Hasher h;
    if (leaves == NULL || hashes == NULL || hasher_open(&h) < 0) {
        Py_XDECREF(leaves);
        Py_XDECREF(hashes);
        PyMem_Free(links);
        return NULL;
    }
    /* Own the bodies: an allocation below may run a finalizer that changes the list. */
    PyObject *owned = PyList_GetSlice(bodies, 0, n);
    if (owned == NULL) goto error;
    unsigned char digest[HASH_SIZE];
    memcpy(digest, prev_in, HASH_SIZE);
    static const char head[] = "{\"i\":", middle[] = ",\"prev\":\"", tail[] = "\",\"r\":";
    for (Py_ssize_t i = 0; i < n; i++, index++) {
        PyObject *body = PyList_GET_ITEM(owned, i);
        char digits[24], back[40];
        int nd = snprintf(digits, sizeof digits, "%lld", index);
        int nb = 0; /* the bytes of {"back":<n>, that replace the body's "{" */
        long long link = links != NULL ? links[i] : -1;
        if (link == -2)
            nb = snprintf(back, sizeof back, "{\"back\":null,");
        else if (link >= 0)
            nb = snprintf(back, sizeof back, "{\"back\":%lld,", link);
        Py_ssize_t blen = PyBytes_GET_SIZE(body), skip = nb > 0 ? 1 : 0;
        Py_ssize_t len = 5 + nd + 9 + HEX_SIZE + 6 + nb + blen - skip + 1;
        PyObject *leaf = PyBytes_FromStringAndSize(NULL, len);
        if (leaf == NULL) goto error;
        char *w = PyBytes_AS_STRING(leaf);
        memcpy(w, head, 5);
        memcpy(w += 5, digits, (size_t)nd);
        memcpy(w += nd, middle, 9);
        to_hex(digest, w += 9);
        memcpy(w += HEX_SIZE, tail, 6);
        memcpy(w += 6, back, (size_t)nb);
        memcpy(w += nb, PyBytes_AS_STRING(body) + skip, (size_t)(blen - skip));
        w[blen - skip] = '}';
        PyList_SET_ITEM(leaves, i, leaf);
        if (sha256_3(&h, 0x00, PyBytes_AS_STRING(leaf), len, NULL, 0, digest) < 0) goto error;
        PyObject *item = PyBytes_FromStringAndSize((const char *)digest, HASH_SIZE);
        if (item == NULL) goto error;
        PyList_SET_ITEM(hashes, i, item);
    }
    hasher_close(&h);
    Py_DECREF(owned);
    PyMem_Free(links);
    return Py_BuildValue("(NN)", leaves, hashes);
error:
    hasher_close(&h);
    Py_XDECREF(owned);
    Py_DECREF(leaves);
    Py_DECREF(hashes);
    PyMem_Free(links);
    return NULL;
}

static PyObject *push_leaves(PyObject *module, PyObject *args) {
    PyObject *border, *hashes;
    long long size;
    if (!PyArg_ParseTuple(args, "O!LO!:push_leaves", &PyList_Type, &border, &size, &PyList_Type,
                          &hashes))
        return NULL;
    Py_ssize_t have = PyList_GET_SIZE(border);
    if (size < 0 || have != __builtin_popcountll((unsigned long long)size)) {
        PyErr_Format(PyExc_ValueError,
                     "push_leaves: a border of %zd hashes is not that of a tree of size %lld",
                     have, size);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < have; i++)
        if (check_hash(PyList_GET_ITEM(border, i), "border hash", i) < 0) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(hashes);
    if (size > (1LL << 62) - n) {
        PyErr_Format(PyExc_OverflowError, "push_leaves: a tree of %lld + %zd is too large",
                     size, n);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (check_hash(PyList_GET_ITEM(hashes, i), "leaf hash", i) < 0) return NULL;
    /* Work on a C copy of the border (at most 64 levels) and write it back at the end, so that
       nothing is half-changed on an error and no finalizer can change it under us. */
    unsigned char stack[64][HASH_SIZE];
    Py_ssize_t depth = have;
    for (Py_ssize_t i = 0; i < have; i++)
        memcpy(stack[i], PyBytes_AS_STRING(PyList_GET_ITEM(border, i)), HASH_SIZE);
    unsigned char (*leaf_hashes)[HASH_SIZE] = PyMem_Malloc((size_t)(n ? n : 1) * HASH_SIZE);
    PyObject *result = PyList_New(n), *fresh = NULL;
    Hasher h;
    if (leaf_hashes == NULL || result == NULL || hasher_open(&h) < 0) {
        PyMem_Free(leaf_hashes);
        Py_XDECREF(result);
        return leaf_hashes == NULL ? PyErr_NoMemory() : NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        memcpy(leaf_hashes[i], PyBytes_AS_STRING(PyList_GET_ITEM(hashes, i)), HASH_SIZE);
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned long long at = (unsigned long long)size + (unsigned long long)i;
        int completed = __builtin_ctzll(~at); /* nodes above the leaf that it completes */
        PyObject *nodes = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(1 + completed) * HASH_SIZE);
        if (nodes == NULL) goto error;
        PyList_SET_ITEM(result, i, nodes);
        unsigned char *w = (unsigned char *)PyBytes_AS_STRING(nodes);
        memcpy(w, leaf_hashes[i], HASH_SIZE);
        for (int level = 1; level <= completed; level++, w += HASH_SIZE) {
            /* depth >= completed: a tree of size `at` has a border node per set bit */
            if (sha256_3(&h, 0x01, (const char *)stack[--depth], HASH_SIZE, (const char *)w,
                         HASH_SIZE, w + HASH_SIZE) < 0)
                goto error;
        }
        if (depth >= 64) { /* cannot happen below 2**62 leaves; never write past the stack */
            PyErr_SetString(PyExc_RuntimeError, "push_leaves: the border outgrew 64 levels");
            goto error;
        }
        memcpy(stack[depth++], w, HASH_SIZE);
    }
    fresh = PyList_New(depth);
    if (fresh == NULL) goto error;
    for (Py_ssize_t i = 0; i < depth; i++) {
        PyObject *item = PyBytes_FromStringAndSize((const char *)stack[i], HASH_SIZE);
        if (item == NULL) goto error;
        PyList_SET_ITEM(fresh, i, item);
    }
    if (PyList_SetSlice(border, 0, PyList_GET_SIZE(border), fresh) < 0) goto error;
    Py_DECREF(fresh);
    hasher_close(&h);
    PyMem_Free(leaf_hashes);
    return result;
error:
    hasher_close(&h);
    PyMem_Free(leaf_hashes);
    Py_XDECREF(fresh);
    Py_DECREF(result);
    return NULL;
}

/* -- record_body: an audit record's canonical JSON ------------------------------------------ */

typedef struct {
    char *data;
    Py_ssize_t len, cap;
    int heap;
} Buf;

/* A buffer that starts in caller's memory (``stack``) and moves to the heap when it grows. */
static int buf_grow(Buf *b, Py_ssize_t more) {
    if (b->len + more <= b->cap) return 0;
    Py_ssize_t cap = b->cap;
    while (cap < b->len + more) cap *= 2;
    char *data = PyMem_Malloc((size_t)cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(data, b->data, (size_t)b->len);
    if (b->heap) PyMem_Free(b->data);
    b->data = data;
    b->cap = cap;
    b->heap = 1;
    return 0;
}

static int buf_put(Buf *b, const char *s, Py_ssize_t n) {
    if (buf_grow(b, n) < 0) return -1;
    memcpy(b->data + b->len, s, (size_t)n);
    b->len += n;
    return 0;
}

#define BUF_LIT(b, s) buf_put((b), (s), (Py_ssize_t)(sizeof(s) - 1))

/* A JSON string as json.encoder.encode_basestring_ascii writes it: quoted, ASCII only. */
static int buf_quote(Buf *b, PyObject *value, const char *name) {
    if (!PyUnicode_Check(value)) {
        PyErr_Format(PyExc_TypeError, "record field %s must be str, not %.100s", name,
                     Py_TYPE(value)->tp_name);
        return -1;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(value);
    if (buf_grow(b, 2 + 12 * n) < 0) return -1; /* at worst a surrogate pair per code point */
    int kind = PyUnicode_KIND(value);
    const void *data = PyUnicode_DATA(value);
    char *w = b->data + b->len;
    *w++ = '"';
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c >= ' ' && c <= '~' && c != '"' && c != '\\') {
            *w++ = (char)c;
            continue;
        }
        *w++ = '\\';
        switch (c) {
        case '"': *w++ = '"'; continue;
        case '\\': *w++ = '\\'; continue;
        case '\b': *w++ = 'b'; continue;
        case '\f': *w++ = 'f'; continue;
        case '\n': *w++ = 'n'; continue;
        case '\r': *w++ = 'r'; continue;
        case '\t': *w++ = 't'; continue;
        }
        if (c >= 0x10000) { /* a surrogate pair, high then low */
            Py_UCS4 v = c - 0x10000, high = 0xd800 | (v >> 10);
            c = 0xdc00 | (v & 0x3ff);
            *w++ = 'u';
            for (int shift = 12; shift >= 0; shift -= 4) *w++ = hex_digits[(high >> shift) & 15];
            *w++ = '\\';
        }
        *w++ = 'u';
        for (int shift = 12; shift >= 0; shift -= 4) *w++ = hex_digits[(c >> shift) & 15];
    }
    *w++ = '"';
    b->len = w - b->data;
    return 0;
}

/* int(value) in decimal; past 64 bits through Python's own int to str. */
static int buf_int(Buf *b, PyObject *value) {
    PyObject *number = PyNumber_Long(value);
    if (number == NULL) return -1;
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(number, &overflow);
    if (!overflow) {
        Py_DECREF(number);
        if (v == -1 && PyErr_Occurred()) return -1;
        char digits[24];
        return buf_put(b, digits, snprintf(digits, sizeof digits, "%lld", v));
    }
    PyObject *text = PyObject_Str(number);
    Py_DECREF(number);
    if (text == NULL) return -1;
    Py_ssize_t n;
    const char *digits = PyUnicode_AsUTF8AndSize(text, &n);
    int put = digits == NULL ? -1 : buf_put(b, digits, n);
    Py_DECREF(text);
    return put;
}

static PyObject *record_body(PyObject *module, PyObject *record) {
    /* The keys in sorted order, each with how its value is written. */
    static const struct {
        const char *name, *key;
        char kind; /* s: string, b: boolean, i: integer, l: list of strings */
    } fields[] = {
        {"backend", "{\"backend\":", 's'},
        {"basis", ",\"basis\":", 's'},
        {"basis_ref", ",\"basis_ref\":", 's'},
        {"calls", ",\"calls\":", 'i'},
        {"category", ",\"category\":", 's'},
        {"cert_sha256", ",\"cert_sha256\":", 's'},
        {"decision", ",\"decision\":", 's'},
        {"emergency", ",\"emergency\":", 'b'},
        {"latency_us", ",\"latency_us\":", 'i'},
        {"org", ",\"org\":", 's'},
        {"org_type", ",\"org_type\":", 's'},
        {"outcome", ",\"outcome\":", 's'},
        {"policies", ",\"policies\":", 'l'},
        {"policy_set", ",\"policy_set\":", 's'},
        {"purpose", ",\"purpose\":", 's'},
        {"reason", ",\"reason\":", 's'},
        {"released_sha256", ",\"released_sha256\":", 's'},
        {"request_id", ",\"request_id\":", 's'},
        {"rpc", ",\"rpc\":", 's'},
        {"subject", ",\"subject\":", 's'},
        {"time", ",\"time\":", 's'},
        {"v", ",\"v\":", 'i'},
    };
    enum { FIELDS = sizeof fields / sizeof fields[0] };
    static PyObject *names[FIELDS]; /* interned once: an attribute lookup by str is cheap */
    if (names[0] == NULL)
        for (size_t f = 0; f < FIELDS; f++)
            if ((names[f] = PyUnicode_InternFromString(fields[f].name)) == NULL) return NULL;
    char stack[2048]; /* a record's body fits here, most of the time */
    Buf b = {stack, 0, sizeof stack, 0};
    for (size_t f = 0; f < FIELDS; f++) {
        PyObject *value = PyObject_GetAttr(record, names[f]);
        if (value == NULL) goto error;
        int ok = buf_put(&b, fields[f].key, (Py_ssize_t)strlen(fields[f].key));
        if (ok == 0) {
            switch (fields[f].kind) {
            case 's': ok = buf_quote(&b, value, fields[f].name); break;
            case 'i': ok = buf_int(&b, value); break;
            case 'b': {
                int truth = PyObject_IsTrue(value);
                ok = truth < 0 ? -1 : truth ? BUF_LIT(&b, "true") : BUF_LIT(&b, "false");
                break;
            }
            default: { /* 'l' */
                PyObject *items = PySequence_Fast(value, "record field policies must be a sequence");
                ok = items == NULL ? -1 : BUF_LIT(&b, "[");
                for (Py_ssize_t i = 0; ok == 0 && i < PySequence_Fast_GET_SIZE(items); i++)
                    if ((i > 0 && BUF_LIT(&b, ",") < 0) ||
                        buf_quote(&b, PySequence_Fast_GET_ITEM(items, i), "policies[]") < 0)
                        ok = -1;
                if (ok == 0) ok = BUF_LIT(&b, "]");
                Py_XDECREF(items);
            }
            }
        }
        Py_DECREF(value);
        if (ok < 0) goto error;
    }
    if (BUF_LIT(&b, "}") < 0) goto error;
    PyObject *result = PyBytes_FromStringAndSize(b.data, b.len);
    if (b.heap) PyMem_Free(b.data);
    return result;
error:
    if (b.heap) PyMem_Free(b.data);
    return NULL;
}

static PyObject *hash_leaves(PyObject *module, PyObject *args) {
    Py_buffer block;
    if (!PyArg_ParseTuple(args, "y*:hash_leaves", &block)) return NULL;
    PyObject *result = PyList_New(0);
    Hasher h;
    if (result == NULL || hasher_open(&h) < 0) {
        Py_XDECREF(result);
        PyBuffer_Release(&block);
        return NULL;
    }
    Lines it = {block.buf, block.len, 0};
    const char *line;
    Py_ssize_t len;
    while (next_line(&it, &line, &len)) {
        unsigned char digest[HASH_SIZE];
        if (sha256_3(&h, 0x00, line, len, NULL, 0, digest) < 0 || append_digest(result, digest) < 0) {
            Py_CLEAR(result);
            break;
        }
    }
    hasher_close(&h);
    PyBuffer_Release(&block);
    return result;
}

static PyObject *hash_lines(PyObject *module, PyObject *args) {
    Py_buffer block;
    PyObject *out;
    long long p;
    const char *prev_in;
    Py_ssize_t prev_len;
    if (!PyArg_ParseTuple(args, "y*Ly#O!:hash_lines", &block, &p, &prev_in, &prev_len,
                          &PyList_Type, &out))
        return NULL;
    if (prev_len != HEX_SIZE || p < 0) {
        if (p < 0)
            PyErr_Format(PyExc_ValueError, "hash_lines: index %lld is negative", p);
        else
            PyErr_Format(PyExc_ValueError,
                         "hash_lines: prev_hex must be %d hex digits, not %zd bytes", HEX_SIZE,
                         prev_len);
        PyBuffer_Release(&block);
        return NULL;
    }
    char hex[HEX_SIZE]; /* the hex leaf hash of the previous line */
    memcpy(hex, prev_in, HEX_SIZE);
    Hasher h;
    if (hasher_open(&h) < 0) {
        PyBuffer_Release(&block);
        return NULL;
    }
    Lines it = {block.buf, block.len, 0};
    Py_ssize_t bad = -1, at = 0;
    const char *line;
    Py_ssize_t len;
    PyObject *result = NULL;
    while (next_line(&it, &line, &len)) {
        if (!has_prefix(line, len, p, hex) || line[len - 1] != '}') {
            bad = at;
            break;
        }
        unsigned char digest[HASH_SIZE];
        if (sha256_3(&h, 0x00, line, len, NULL, 0, digest) < 0 || append_digest(out, digest) < 0)
            goto done;
        to_hex(digest, hex);
        p++;
        at = it.pos;
    }
    result = Py_BuildValue("Ly#n", p, hex, (Py_ssize_t)HEX_SIZE, bad);
done:
    hasher_close(&h);
    PyBuffer_Release(&block);
    return result;
}

static PyObject *hash_pairs(PyObject *module, PyObject *args) {
    PyObject *hashes;
    Py_ssize_t start, end;
    if (!PyArg_ParseTuple(args, "O!nn:hash_pairs", &PyList_Type, &hashes, &start, &end))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(hashes);
    if (start < 0 || end > n || end < start || (end - start) % 2 != 0) {
        PyErr_Format(PyExc_ValueError,
                     "hash_pairs: [%zd, %zd) is not an even-sized range of a list of %zd hashes",
                     start, end, n);
        return NULL;
    }
    PyObject *result = PyList_New((end - start) / 2);
    Hasher h;
    if (result == NULL || hasher_open(&h) < 0) {
        Py_XDECREF(result);
        return NULL;
    }
    for (Py_ssize_t i = start; i < end; i += 2) {
        if (i + 1 >= PyList_GET_SIZE(hashes)) { /* a finalizer run by an allocation shrank it */
            PyErr_SetString(PyExc_RuntimeError, "hash_pairs: the list shrank while being hashed");
            goto error;
        }
        PyObject *left = PyList_GET_ITEM(hashes, i), *right = PyList_GET_ITEM(hashes, i + 1);
        unsigned char digest[HASH_SIZE];
        if (check_bytes(left, "each hash") < 0 || check_bytes(right, "each hash") < 0) goto error;
        if (PyBytes_GET_SIZE(left) != HASH_SIZE || PyBytes_GET_SIZE(right) != HASH_SIZE) {
            PyErr_Format(PyExc_ValueError, "hash_pairs: hash %zd is not %d bytes",
                         PyBytes_GET_SIZE(left) != HASH_SIZE ? i : i + 1, HASH_SIZE);
            goto error;
        }
        if (sha256_3(&h, 0x01, PyBytes_AS_STRING(left), HASH_SIZE, PyBytes_AS_STRING(right),
                     HASH_SIZE, digest) < 0)
            goto error;
        PyObject *item = PyBytes_FromStringAndSize((const char *)digest, HASH_SIZE);
        if (item == NULL) goto error;
        PyList_SET_ITEM(result, (i - start) / 2, item);
    }
    hasher_close(&h);
    return result;
error:
    hasher_close(&h);
    Py_DECREF(result);
    return NULL;
}

/* --- the record schema (check_records) ---------------------------------------------------
 * A program is bytes of items, each <type><literal>\0: the literal must come next, then a
 * value of the type: 's' a JSON string, 'i' an integer, 'b' true or false, 'l' a list of
 * strings, 'n' a non-negative integer or null, 'z' nothing (the literal alone). The line must
 * end where the last item does. */

static int match_lit(const char *s, Py_ssize_t n, Py_ssize_t *i, const char *lit, size_t len) {
    if ((size_t)(n - *i) < len || memcmp(s + *i, lit, len) != 0) return 0;
    *i += (Py_ssize_t)len;
    return 1;
}

static int is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

/* The bytes a JSON string (as json.dumps writes it, ensure_ascii) holds as they are: printable
 * ASCII and DEL, but not '"' or '\\'. Filled in once, when the module is first imported. */
static unsigned char plain_byte[256];

static void fill_plain_bytes(void) {
    for (int c = 0x20; c < 0x80; c++) plain_byte[c] = c != '"' && c != '\\';
}

/* Whether all 8 bytes at p are plain (plain_byte), 8 at a time: none has its high bit set,
 * is below 0x20, or is '"' or '\\' (a byte is zero in v ^ c where it equals c). */
static int swar_plain(const char *p) {
    uint64_t w;
    memcpy(&w, p, 8);
    const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
#define HAS_ZERO(v) (((v) - ones) & ~(v) & high)
    uint64_t bad = (w & high) | ((w - 0x20 * ones) & ~w & high) | HAS_ZERO(w ^ (0x22 * ones)) |
                   HAS_ZERO(w ^ (0x5c * ones));
#undef HAS_ZERO
    return bad == 0;
}

static int match_string(const char *s, Py_ssize_t n, Py_ssize_t *i) {
    const unsigned char *u = (const unsigned char *)s;
    Py_ssize_t k = *i;
    if (k >= n || s[k] != '"') return 0;
    k++;
    for (;;) {
        while (k + 8 <= n && swar_plain(s + k)) k += 8;
        while (k < n && plain_byte[u[k]]) k++;
        if (k >= n) return 0;
        if (s[k] == '"') {
            *i = k + 1;
            return 1;
        }
        if (s[k] != '\\' || k + 1 >= n) return 0; /* a control or non-ASCII byte */
        char e = s[k + 1];
        if (e == 'u') {
            if (k + 5 >= n || !is_hex(s[k + 2]) || !is_hex(s[k + 3]) || !is_hex(s[k + 4]) ||
                !is_hex(s[k + 5]))
                return 0;
            k += 6;
        } else if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' ||
                   e == 'r' || e == 't') {
            k += 2;
        } else {
            return 0;
        }
    }
}

static int match_int(const char *s, Py_ssize_t n, Py_ssize_t *i) {
    Py_ssize_t k = *i;
    if (k < n && s[k] == '-') k++;
    if (k >= n || s[k] < '0' || s[k] > '9') return 0;
    if (s[k] == '0') {
        k++;
    } else {
        while (k < n && s[k] >= '0' && s[k] <= '9') k++;
    }
    *i = k;
    return 1;
}

static int match_value(char type, const char *s, Py_ssize_t n, Py_ssize_t *i) {
    switch (type) {
    case 's':
        return match_string(s, n, i);
    case 'i':
        return match_int(s, n, i);
    case 'b':
        return match_lit(s, n, i, "true", 4) || match_lit(s, n, i, "false", 5);
    case 'l':
        if (!match_lit(s, n, i, "[", 1)) return 0;
        if (match_lit(s, n, i, "]", 1)) return 1;
        do {
            if (!match_string(s, n, i)) return 0;
        } while (match_lit(s, n, i, ",", 1));
        return match_lit(s, n, i, "]", 1);
    case 'n':
        if (match_lit(s, n, i, "null", 4)) return 1;
        return *i < n && s[*i] != '-' && match_int(s, n, i);
    case 'z':
        return 1;
    default:
        return 0;
    }
}

/* A program, split into its items once per call instead of once per line. */
#define MAX_ITEMS 256
typedef struct {
    char type;
    const char *lit;
    size_t len;
} Item;

typedef struct {
    Item items[MAX_ITEMS];
    int count;
} Program;

static int compile_program(PyObject *bytes, Program *prog) {
    const char *at = PyBytes_AS_STRING(bytes), *end = at + PyBytes_GET_SIZE(bytes);
    prog->count = 0;
    while (at < end) {
        const char *nul = memchr(at + 1, '\0', (size_t)(end - at - 1));
        if (nul == NULL || at + 1 > end || prog->count == MAX_ITEMS) {
            PyErr_SetString(PyExc_ValueError, "check_records: a malformed program");
            return -1;
        }
        prog->items[prog->count++] = (Item){at[0], at + 1, (size_t)(nul - at - 1)};
        at = nul + 1;
    }
    return 0;
}

static int run_program(const Program *prog, const char *s, Py_ssize_t n, Py_ssize_t i) {
    for (int k = 0; k < prog->count; k++) {
        const Item *item = &prog->items[k];
        if (!match_lit(s, n, &i, item->lit, item->len) || !match_value(item->type, s, n, &i))
            return 0;
    }
    return i == n;
}

/* {"i":<decimal>,"prev":"<64 lowercase hex>","r": -> the offset after it, or -1. */
static Py_ssize_t prefix_shape(const char *s, Py_ssize_t n) {
    Py_ssize_t i = 0;
    if (!match_lit(s, n, &i, "{\"i\":", 5)) return -1;
    if (i >= n || s[i] < '0' || s[i] > '9') return -1;
    if (s[i] == '0') {
        i++;
    } else {
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
    }
    if (!match_lit(s, n, &i, ",\"prev\":\"", 9) || n - i < HEX_SIZE) return -1;
    for (int k = 0; k < HEX_SIZE; k++, i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return -1;
    if (!match_lit(s, n, &i, "\",\"r\":", 6)) return -1;
    return i;
}

static PyObject *check_records(PyObject *module, PyObject *args) {
    Py_buffer block;
    PyObject *programs;
    if (!PyArg_ParseTuple(args, "y*O!:check_records", &block, &PyTuple_Type, &programs))
        return NULL;
    Py_ssize_t count = PyTuple_GET_SIZE(programs);
    Program *compiled = PyMem_Calloc((size_t)(count ? count : 1), sizeof(Program));
    if (compiled == NULL) {
        PyBuffer_Release(&block);
        return PyErr_NoMemory();
    }
    PyObject *result = NULL;
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *prog = PyTuple_GET_ITEM(programs, k);
        if (check_bytes(prog, "each program") < 0 || compile_program(prog, &compiled[k]) < 0)
            goto done;
    }
    Lines it = {block.buf, block.len, 0};
    const char *line;
    Py_ssize_t len, bad = -1, at = 0;
    while (next_line(&it, &line, &len)) {
        Py_ssize_t body = prefix_shape(line, len);
        int ok = 0;
        for (Py_ssize_t k = 0; body >= 0 && !ok && k < count; k++)
            ok = run_program(&compiled[k], line, len, body);
        if (!ok) {
            bad = at;
            break;
        }
        at = it.pos;
    }
    result = PyLong_FromSsize_t(bad);
done:
    PyMem_Free(compiled);
    PyBuffer_Release(&block);
    return result;
}

static PyMethodDef methods[] = {
    {"record_body", record_body, METH_O,
     "record_body(record) -> the canonical JSON of an AuditRecord (AuditRecord.body)."},
    {"chain_leaves", chain_leaves, METH_VARARGS,
     "chain_leaves(bodies, index, prev[, backs]) -> (leaves, hashes): wrap and chain bodies."},
    {"push_leaves", push_leaves, METH_VARARGS,
     "push_leaves(border, size, hashes) -> the Merkle nodes each leaf completes, joined."},
    {"hash_leaves", hash_leaves, METH_VARARGS,
     "hash_leaves(block) -> the RFC 6962 leaf hash of each line of block, in a list."},
    {"hash_lines", hash_lines, METH_VARARGS,
     "hash_lines(block, p, prev_hex, out) -> (p, prev_hex, bad): check and hash entry lines."},
    {"hash_pairs", hash_pairs, METH_VARARGS,
     "hash_pairs(hashes, start, end) -> the RFC 6962 parents of the pairs in [start, end)."},
    {"check_records", check_records, METH_VARARGS,
     "check_records(block, programs) -> the offset of the first line off the schema, or -1."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gateway.audit._native",
    .m_doc = "The audit log's hashing loops in C (see record, compact, _verify_fast).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__native(void) {
    if (sha256_md == NULL) {
        sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
        fill_plain_bytes();
        if (sha256_md == NULL) {
            PyErr_SetString(PyExc_ImportError, "OpenSSL has no SHA-256 here");
            return NULL;
        }
    }
    return PyModule_Create(&module_def);
}
