/* See form.h. */
#include "form.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int hexval(char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

/* Decodes src[0..len) into dst (room for len + 1): its length, or -1 on a
 * bad escape. */
static long unescape(const char *src, size_t len, char *dst)
{
        size_t o = 0;
        for (size_t i = 0; i < len; i++) {
                if (src[i] == '+') {
                        dst[o++] = ' ';
                } else if (src[i] == '%') {
                        int hi, lo;
                        if (i + 2 >= len)
                                return -1; /* both hex digits must be there */
                        hi = hexval(src[i + 1]);
                        lo = hexval(src[i + 2]);
                        if (hi < 0 || lo < 0)
                                return -1;
                        dst[o++] = (char)(hi << 4 | lo);
                        i += 2;
                } else {
                        dst[o++] = src[i];
                }
        }
        dst[o] = '\0';
        return (long)o;
}

static int utf8_ok(const unsigned char *s, size_t n)
{
        size_t i = 0;
        while (i < n) {
                unsigned c = s[i];
                size_t k;
                unsigned min;
                if (c == 0)
                        return 0;
                if (c < 0x80) {
                        i++;
                        continue;
                }
                if ((c & 0xe0) == 0xc0) {
                        k = 1;
                        min = 0x80;
                        c &= 0x1f;
                } else if ((c & 0xf0) == 0xe0) {
                        k = 2;
                        min = 0x800;
                        c &= 0x0f;
                } else if ((c & 0xf8) == 0xf0) {
                        k = 3;
                        min = 0x10000;
                        c &= 0x07;
                } else {
                        return 0;
                }
                if (i + k >= n)
                        return 0; /* cut short */
                for (size_t j = 1; j <= k; j++) {
                        if ((s[i + j] & 0xc0) != 0x80)
                                return 0;
                        c = c << 6 | (s[i + j] & 0x3f);
                }
                if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
                        return 0;
                i += k + 1;
        }
        return 1;
}

static int name_ok(const char *s)
{
        size_t n = strlen(s);
        if (n == 0 || n > FORM_NAME_MAX)
                return 0;
        for (; *s; s++)
                if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                      (*s >= '0' && *s <= '9') || *s == '_' || *s == '.' || *s == '-'))
                        return 0;
        return 1;
}

#define WHY(...) (why && why_len ? (void)snprintf(why, why_len, __VA_ARGS__) : (void)0)

/* One decoded pair into f: the value checked (size, UTF-8), then kept
 * under its name (a name given again: the last value wins), or dropped
 * when the name is none the API could know. *pairs counts every pair. */
static int put(struct form *f, char *name, char *value, size_t vlen, size_t *pairs, char *why,
               size_t why_len)
{
        if (++*pairs > FORM_MAX_PAIRS) {
                WHY("more than %d parameters", FORM_MAX_PAIRS);
                return -E2BIG;
        }
        if (vlen > FORM_VALUE_MAX) {
                WHY("the value of %s is longer than %d bytes", name_ok(name) ? name : "a parameter",
                    FORM_VALUE_MAX);
                return -E2BIG;
        }
        if (!utf8_ok((const unsigned char *)value, vlen)) {
                WHY("the value of %s is not UTF-8 text (or holds a NUL)",
                    name_ok(name) ? name : "a parameter");
                return -EINVAL;
        }
        if (!name_ok(name))
                return 0; /* "foo[]", "a b": no parameter of ours, ignored */
        for (size_t i = 0; i < f->n; i++)
                if (strcmp(f->p[i].name, name) == 0) {
                        f->p[i].value = value;
                        return 0;
                }
        if (f->n == FORM_MAX_PARAMS) {
                WHY("more than %d distinct parameters", FORM_MAX_PARAMS);
                return -E2BIG;
        }
        f->p[f->n].name = name;
        f->p[f->n].value = value;
        f->n++;
        return 0;
}

/* A form with room for len bytes of decoded text and the NULs of
 * FORM_MAX_PAIRS pairs. */
static struct form *form_new(size_t len)
{
        struct form *f = calloc(1, sizeof(*f));
        if (!f)
                return NULL;
        f->buf = malloc(len + 2 * FORM_MAX_PAIRS + 1);
        if (!f->buf) {
                free(f);
                return NULL;
        }
        return f;
}

int form_decode(const char *body, size_t len, struct form **ret, char *why, size_t why_len)
{
        struct form *f = form_new(len);
        if (!f)
                return -ENOMEM;
        /* decoded text is never longer than the body, but for the NULs of
         * a bare name ("a" is "a\0\0"): two per pair */
        char *out = f->buf;
        size_t pos = 0, pairs = 0;
        int r = 0;
        while (body && pos < len && r == 0) {
                size_t plen = 0;
                while (pos + plen < len && body[pos + plen] != '&')
                        plen++;
                const char *pair = body + pos;
                pos += plen + 1; /* past the '&' (or the end) */
                if (plen == 0)
                        continue; /* "a=1&&b=2", "&a=1", "a=1&" */
                const char *eq = memchr(pair, '=', plen);
                size_t nlen = eq ? (size_t)(eq - pair) : plen;
                size_t vlen = eq ? plen - nlen - 1 : 0;
                if (nlen > 3 * FORM_NAME_MAX) {
                        WHY("parameter name longer than %d bytes", FORM_NAME_MAX);
                        r = -EINVAL;
                        break;
                }
                char *name = out;
                long k = unescape(pair, nlen, name);
                if (k < 0) {
                        WHY("bad %%-escape in a parameter name");
                        r = -EINVAL;
                        break;
                }
                if ((size_t)k > FORM_NAME_MAX) {
                        WHY("parameter name longer than %d bytes", FORM_NAME_MAX);
                        r = -EINVAL;
                        break;
                }
                if ((size_t)k != strlen(name))
                        name[0] = '\0'; /* a NUL inside: no name of ours */
                char *value = name + k + 1;
                k = eq ? unescape(eq + 1, vlen, value) : (value[0] = '\0', 0);
                if (k < 0) {
                        WHY("bad %%-escape in the value of %s",
                            name_ok(name) ? name : "a parameter");
                        r = -EINVAL;
                        break;
                }
                r = put(f, name, value, (size_t)k, &pairs, why, why_len);
                out = value + k + 1;
        }
        if (r < 0) {
                form_free(f);
                return r;
        }
        *ret = f;
        return 0;
}

void form_free(struct form *f)
{
        if (!f)
                return;
        free(f->buf);
        free(f);
}

const char *form_get(const struct form *f, const char *name)
{
        for (size_t i = 0; f && i < f->n; i++)
                if (strcmp(f->p[i].name, name) == 0)
                        return f->p[i].value;
        return NULL;
}

/* ---- multipart/form-data (RFC 7578) ---- */

static int ci_eq(const char *a, size_t an, const char *b)
{
        size_t bn = strlen(b);
        if (an != bn)
                return 0;
        for (size_t i = 0; i < an; i++) {
                char x = a[i], y = b[i];
                if (x >= 'A' && x <= 'Z')
                        x = (char)(x - 'A' + 'a');
                if (y >= 'A' && y <= 'Z')
                        y = (char)(y - 'A' + 'a');
                if (x != y)
                        return 0;
        }
        return 1;
}

static const char *skip_blanks(const char *p, const char *end)
{
        while (p < end && (*p == ' ' || *p == '\t'))
                p++;
        return p;
}

/* One "; key=value" parameter list (a Content-Type's or a
 * Content-Disposition's) from p to end: calls want for every key with its
 * value unquoted into val (room val_len; a longer one is -E2BIG). 0,
 * -EINVAL (malformed). */
typedef int (*param_fn)(void *ud, const char *key, size_t klen, const char *val, size_t vlen);
static int header_params(const char *p, const char *end, param_fn fn, void *ud, char *val,
                         size_t val_len)
{
        for (;;) {
                p = skip_blanks(p, end);
                if (p == end)
                        return 0;
                if (*p != ';')
                        return -EINVAL;
                p = skip_blanks(p + 1, end);
                if (p == end)
                        return 0; /* a trailing ';' */
                const char *key = p;
                while (p < end && *p != '=' && *p != ';' && *p != ' ' && *p != '\t')
                        p++;
                size_t klen = (size_t)(p - key);
                p = skip_blanks(p, end);
                if (klen == 0 || p == end || *p != '=')
                        return -EINVAL;
                p = skip_blanks(p + 1, end);
                size_t n = 0;
                if (p < end && *p == '"') {
                        for (p++; p < end && *p != '"'; p++) {
                                if (*p == '\\' && p + 1 < end)
                                        p++; /* a quoted pair */
                                if (n + 1 >= val_len)
                                        return -E2BIG;
                                val[n++] = *p;
                        }
                        if (p == end)
                                return -EINVAL; /* no closing quote */
                        p++;
                } else {
                        for (; p < end && *p != ';' && *p != ' ' && *p != '\t'; p++) {
                                if (*p == '"' || *p == '\\')
                                        return -EINVAL;
                                if (n + 1 >= val_len)
                                        return -E2BIG;
                                val[n++] = *p;
                        }
                        if (n == 0)
                                return -EINVAL;
                }
                val[n] = '\0';
                int r = fn(ud, key, klen, val, n);
                if (r < 0)
                        return r;
        }
}

struct ct_params {
        char *boundary; /* FORM_BOUNDARY_MAX + 2: one too long is seen as such */
};

static int ct_param(void *ud, const char *key, size_t klen, const char *val, size_t vlen)
{
        struct ct_params *c = ud;
        if (ci_eq(key, klen, "boundary"))
                memcpy(c->boundary, val, vlen + 1);
        return 0;
}

/* RFC 2046's bchars: 1 to 70, no blank at the end. */
static int boundary_ok(const char *b)
{
        size_t n = strlen(b);
        if (n == 0 || n > FORM_BOUNDARY_MAX || b[n - 1] == ' ')
                return 0;
        for (; *b; b++)
                if (!((*b >= 'a' && *b <= 'z') || (*b >= 'A' && *b <= 'Z') ||
                      (*b >= '0' && *b <= '9') || strchr("'()+_,-./:=? ", *b)))
                        return 0;
        return 1;
}

struct cd_params {
        char name[FORM_NAME_MAX + 1];
        int has_name, is_file;
};

static int cd_param(void *ud, const char *key, size_t klen, const char *val, size_t vlen)
{
        struct cd_params *c = ud;
        if (ci_eq(key, klen, "name")) {
                if (vlen > FORM_NAME_MAX)
                        return -E2BIG;
                memcpy(c->name, val, vlen + 1);
                c->has_name = 1;
        } else if (ci_eq(key, klen, "filename") || ci_eq(key, klen, "filename*")) {
                c->is_file = 1;
        }
        return 0;
}

/* The headers of one part from *pp (just past the boundary line's CRLF)
 * through the blank line: its name in c. 0, -EINVAL, -ENOTSUP (a file). */
static int part_headers(const char **pp, const char *end, struct cd_params *c, char *why,
                        size_t why_len)
{
        const char *p = *pp;
        char val[FORM_HEADER_MAX];
        int n = 0, disposition = 0;
        memset(c, 0, sizeof(*c));
        for (;;) {
                size_t room = (size_t)(end - p);
                if (room > FORM_HEADER_MAX)
                        room = FORM_HEADER_MAX;
                const char *eol = NULL;
                for (size_t i = 0; i + 1 < room; i++)
                        if (p[i] == '\r' && p[i + 1] == '\n') {
                                eol = p + i;
                                break;
                        }
                if (!eol) {
                        WHY("a part's header line is not ended by CRLF within %d bytes",
                            FORM_HEADER_MAX);
                        return -EINVAL;
                }
                if (eol == p) {
                        *pp = p + 2; /* the blank line: the value is next */
                        break;
                }
                if (++n > FORM_PART_HEADERS) {
                        WHY("a part has more than %d header lines", FORM_PART_HEADERS);
                        return -EINVAL;
                }
                const char *colon = memchr(p, ':', (size_t)(eol - p));
                if (!colon || colon == p) {
                        WHY("a part's header line is not \"Name: value\"");
                        return -EINVAL;
                }
                if (ci_eq(p, (size_t)(colon - p), "Content-Disposition")) {
                        const char *v = skip_blanks(colon + 1, eol);
                        const char *t = v;
                        while (t < eol && *t != ';' && *t != ' ' && *t != '\t')
                                t++;
                        if (disposition++ || !ci_eq(v, (size_t)(t - v), "form-data") ||
                            header_params(t, eol, cd_param, c, val, sizeof(val)) < 0) {
                                WHY("a part's Content-Disposition is not one \"form-data; "
                                    "name=...\" (a name of at most %d bytes)",
                                    FORM_NAME_MAX);
                                return -EINVAL;
                        }
                }
                /* Content-Type and the rest: not needed for a value */
                p = eol + 2;
        }
        if (!c->has_name) {
                WHY("a part has no Content-Disposition: form-data; name=\"...\"");
                return -EINVAL;
        }
        if (c->is_file) {
                WHY("part %s is a file upload: send its text as a value (curl -F '%s=<FILE', "
                    "not '%s=@FILE')",
                    name_ok(c->name) ? c->name : "(unnamed)", name_ok(c->name) ? c->name : "NAME",
                    name_ok(c->name) ? c->name : "NAME");
                return -ENOTSUP;
        }
        return 0;
}

int form_decode_multipart(const char *content_type, const char *body, size_t len, struct form **ret,
                          char *why, size_t why_len)
{
        char boundary[FORM_BOUNDARY_MAX + 2] = "", val[FORM_BOUNDARY_MAX + 2];
        struct ct_params ct = {.boundary = boundary};
        const char *c = content_type ? content_type : "";
        const char *semi = c + strcspn(c, ";");
        int r = header_params(semi, c + strlen(c), ct_param, &ct, val, sizeof(val));
        if (r < 0 || !boundary_ok(boundary)) {
                WHY("multipart/form-data needs a boundary parameter of 1 to %d characters",
                    FORM_BOUNDARY_MAX);
                return -EINVAL;
        }
        struct form *f = form_new(len);
        if (!f)
                return -ENOMEM;
        const size_t cap = len + 2 * FORM_MAX_PAIRS + 1, bl = strlen(boundary);
        char delim[FORM_BOUNDARY_MAX + 5]; /* CRLF "--" boundary */
        memcpy(delim, "\r\n--", 4);
        memcpy(delim + 4, boundary, bl);
        const char *p = body, *end = body ? body + len : NULL;
        char *out = f->buf;
        size_t pairs = 0;
        /* strict: the body opens with the first delimiter (no preamble) */
        if (!body || len < 2 + bl || memcmp(p, delim + 2, 2 + bl) != 0) {
                WHY("the body does not start with the boundary");
                r = -EINVAL;
                goto out;
        }
        p += 2 + bl;
        for (;;) {
                if (end - p >= 2 && p[0] == '-' && p[1] == '-')
                        break; /* the close delimiter; an epilogue is ignored */
                p = skip_blanks(p, end);
                if (end - p < 2 || p[0] != '\r' || p[1] != '\n') {
                        WHY("a boundary line is not ended by CRLF (or the close \"--\" is "
                            "missing)");
                        r = -EINVAL;
                        goto out;
                }
                p += 2;
                struct cd_params cd;
                if ((r = part_headers(&p, end, &cd, why, why_len)) < 0)
                        goto out;
                const char *d = memmem(p, (size_t)(end - p), delim, 4 + bl);
                if (!d) {
                        WHY("part %s is not closed by the boundary",
                            name_ok(cd.name) ? cd.name : "(unnamed)");
                        r = -EINVAL;
                        goto out;
                }
                size_t nlen = strlen(cd.name), vlen = (size_t)(d - p);
                if ((size_t)(out - f->buf) + nlen + vlen + 2 > cap) {
                        WHY("the parts are larger than the body"); /* cannot happen */
                        r = -E2BIG;
                        goto out;
                }
                char *name = out, *value = out + nlen + 1;
                memcpy(name, cd.name, nlen + 1);
                memcpy(value, p, vlen);
                value[vlen] = '\0';
                if ((r = put(f, name, value, vlen, &pairs, why, why_len)) < 0)
                        goto out;
                out = value + vlen + 1;
                p = d + 4 + bl;
        }
        r = 0;
out:
        if (r < 0) {
                form_free(f);
                return r;
        }
        *ret = f;
        return 0;
}
