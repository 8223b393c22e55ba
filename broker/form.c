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
                        WHY("bad %%-escape in the value of %s", name_ok(name) ? name : "a parameter");
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
