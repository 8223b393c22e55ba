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

int form_decode(const char *body, size_t len, struct form **ret, char *why, size_t why_len)
{
        struct form *f = calloc(1, sizeof(*f));
        if (!f)
                return -ENOMEM;
        /* decoded text is never longer than the body: one buffer for all */
        f->buf = malloc(len + 2 * FORM_MAX_PARAMS + 1);
        if (!f->buf) {
                free(f);
                return -ENOMEM;
        }
        char *out = f->buf;
        size_t pos = 0;
        int r = 0;
        while (body && pos < len) {
                size_t plen = 0;
                while (pos + plen < len && body[pos + plen] != '&')
                        plen++;
                const char *pair = body + pos;
                if (plen == 0) {
                        WHY("empty parameter in the form");
                        r = -EINVAL;
                        break;
                }
                if (f->n == FORM_MAX_PARAMS) {
                        WHY("more than %d parameters", FORM_MAX_PARAMS);
                        r = -E2BIG;
                        break;
                }
                const char *eq = memchr(pair, '=', plen);
                if (!eq) {
                        WHY("parameter without '=' in the form");
                        r = -EINVAL;
                        break;
                }
                size_t nlen = (size_t)(eq - pair), vlen = plen - nlen - 1;
                if (nlen > 3 * FORM_NAME_MAX) {
                        WHY("parameter name longer than %d bytes", FORM_NAME_MAX);
                        r = -EINVAL;
                        break;
                }
                char *name = out;
                long k = unescape(pair, nlen, name);
                if (k < 0 || !name_ok(name)) {
                        WHY("invalid parameter name (1 to %d of A-Z, a-z, 0-9, '_', '.', '-')",
                            FORM_NAME_MAX);
                        r = -EINVAL;
                        break;
                }
                out += k + 1;
                char *value = out;
                k = unescape(eq + 1, vlen, value);
                if (k < 0) {
                        WHY("bad %%-escape in the value of %s", name);
                        r = -EINVAL;
                        break;
                }
                if ((size_t)k > FORM_VALUE_MAX) {
                        WHY("the value of %s is longer than %d bytes", name, FORM_VALUE_MAX);
                        r = -E2BIG;
                        break;
                }
                if (!utf8_ok((const unsigned char *)value, (size_t)k)) {
                        WHY("the value of %s is not UTF-8 text (or holds a NUL)", name);
                        r = -EINVAL;
                        break;
                }
                out += k + 1;
                if (form_get(f, name)) {
                        WHY("parameter %s given twice", name);
                        r = -EINVAL;
                        break;
                }
                f->p[f->n].name = name;
                f->p[f->n].value = value;
                f->n++;
                pos += plen;
                if (pos < len) {
                        pos++; /* the '&' */
                        if (pos == len) {
                                WHY("empty parameter in the form");
                                r = -EINVAL;
                                break;
                        }
                }
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
