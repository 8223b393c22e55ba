/* See tilaa.h. */
#include "tilaa.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "tz.h"
#include "util.h"

int32_t tilaa_tz_offset(const char *tz, int64_t unix_s)
{
        const struct tz *z = tz && *tz ? tz_get(tz) : NULL;
        return z ? tz_offset(z, unix_s) : 0;
}

void tilaa_time(int64_t ms, const char *tz, char out[TILAA_TIME_LEN])
{
        int64_t s = ms / 1000 - (ms % 1000 < 0);
        int32_t off = tilaa_tz_offset(tz, s);
        char utc[21];
        util_iso8601_utc((s + off) * 1000, utc);
        int32_t a = off < 0 ? -off : off;
        snprintf(out, TILAA_TIME_LEN, "%.19s%c%02d:%02d", utc, off < 0 ? '-' : '+',
                 (int)(a / 3600 % 100), (int)(a / 60 % 60));
}

int tilaa_uint(const char *s, uint64_t max, uint64_t *ret)
{
        uint64_t v = 0;
        size_t n = s ? strlen(s) : 0;
        if (n == 0 || n > 20 || (s[0] == '0' && n > 1))
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return -EINVAL;
                unsigned d = (unsigned)(s[i] - '0');
                if (v > (UINT64_MAX - d) / 10)
                        return -ERANGE;
                v = v * 10 + d;
        }
        if (v > max)
                return -ERANGE;
        *ret = v;
        return 0;
}

int tilaa_flag(const char *s)
{
        if (!s)
                return 0;
        return s[strspn(s, "0")] != '\0';
}

static int days_in(int y, int m)
{
        static const int dm[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
        int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        return m == 2 && leap ? 29 : dm[m - 1];
}

int tilaa_date(const char *s, int *y, int *m, int *d)
{
        if (!s || strlen(s) != 10 || s[4] != '-' || s[7] != '-')
                return -EINVAL;
        for (int i = 0; i < 10; i++)
                if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9'))
                        return -EINVAL;
        int yy = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
        int mm = (s[5] - '0') * 10 + (s[6] - '0');
        int dd = (s[8] - '0') * 10 + (s[9] - '0');
        if (yy < 1970 || mm < 1 || mm > 12 || dd < 1 || dd > days_in(yy, mm))
                return -EINVAL;
        *y = yy;
        *m = mm;
        *d = dd;
        return 0;
}

/* Days from 1970-01-01 to a civil date (proleptic Gregorian). */
static int64_t days_from_civil(int y, int m, int d)
{
        y -= m <= 2;
        int64_t era = (y >= 0 ? y : y - 399) / 400;
        unsigned yoe = (unsigned)(y - era * 400);
        unsigned doy = (unsigned)((153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1);
        unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        return era * 146097 + (int64_t)doe - 719468;
}

int64_t tilaa_local_midnight(int y, int m, int d, const char *tz)
{
        const struct tz *z = tz && *tz ? tz_get(tz) : NULL;
        int64_t s;
        if (z && tz_local_midnight(z, y, m, d, &s) == 0)
                return s * 1000;
        /* an unknown zone: UTC */
        int64_t local = days_from_civil(y, m, d) * 86400;
        /* the offset in force at that local time: guess, then correct once
         * (across a change of offset, the later one) */
        int32_t off = tilaa_tz_offset(tz, local);
        off = tilaa_tz_offset(tz, local - off);
        return (local - off) * 1000;
}

void tilaa_cancel_dates(int64_t now_ms, const char *tz, char out[TILAA_CANCEL_DATES][11])
{
        char now[TILAA_TIME_LEN];
        tilaa_time(now_ms, tz, now);
        int y = (now[0] - '0') * 1000 + (now[1] - '0') * 100 + (now[2] - '0') * 10 + (now[3] - '0');
        int m = (now[5] - '0') * 10 + (now[6] - '0');
        for (int i = 0; i < TILAA_CANCEL_DATES; i++) {
                if (++m > 12) {
                        m = 1;
                        y++;
                }
                snprintf(out[i], 11, "%04d-%02d-01", y % 10000, m);
        }
}

int tilaa_name_ok(const char *s)
{
        const unsigned char *p = (const unsigned char *)s;
        size_t chars = 0, n = s ? strlen(s) : 0;
        if (n == 0 || n > TILAA_NAME_BYTES)
                return 0;
        while (*p) {
                unsigned c = *p;
                size_t k;
                unsigned min;
                if (c < 0x80) {
                        if (c < 0x20 || c == 0x7f)
                                return 0; /* a control character */
                        k = 0;
                        min = 0;
                } else if ((c & 0xe0) == 0xc0) {
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
                for (size_t j = 1; j <= k; j++) {
                        if ((p[j] & 0xc0) != 0x80)
                                return 0; /* also the NUL that ends it */
                        c = c << 6 | (p[j] & 0x3f);
                }
                if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff) ||
                    (c >= 0x80 && c <= 0x9f) || c == 0x2028 || c == 0x2029)
                        return 0; /* overlong, a surrogate, a C1 control, a line break */
                p += k + 1;
                chars++;
        }
        return chars <= TILAA_NAME_CHARS;
}

int tilaa_dns_label(const char *name, char out[64])
{
        size_t n = 0;
        int dash = 0;
        for (const char *p = name ? name : ""; *p; p++) {
                char c = *p;
                if (c >= 'A' && c <= 'Z')
                        c = (char)(c - 'A' + 'a');
                if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
                        if (dash && n > 0 && n < 63)
                                out[n++] = '-'; /* a run of others, not at the start */
                        dash = 0;
                        if (n < 63)
                                out[n++] = c;
                } else {
                        dash = 1; /* '-', '_', ' ', '.', any byte of UTF-8... */
                }
        }
        while (n > 0 && out[n - 1] == '-')
                n--;
        out[n] = '\0';
        return n ? 0 : -EINVAL;
}

int tilaa_dns_name(const char *s, char out[255])
{
        size_t n = s ? strlen(s) : 0;
        if (n && s[n - 1] == '.')
                n--;
        if (n == 0 || n > 253)
                return -EINVAL;
        size_t label = 0;
        for (size_t i = 0; i < n; i++) {
                char c = s[i];
                if (c >= 'A' && c <= 'Z')
                        c = (char)(c - 'A' + 'a');
                if (c == '.') {
                        if (label == 0 || s[i - 1] == '-')
                                return -EINVAL;
                        label = 0;
                } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-') {
                        if (c == '-' && label == 0)
                                return -EINVAL;
                        if (++label > 63)
                                return -EINVAL;
                } else {
                        return -EINVAL;
                }
                out[i] = c;
        }
        if (label == 0 || s[n - 1] == '-')
                return -EINVAL;
        out[n] = '\0';
        return 0;
}

int tilaa_email(const char *s, char out[255])
{
        size_t n = s ? strlen(s) : 0;
        const char *at = s ? strchr(s, '@') : NULL;
        if (n == 0 || n > 254 || !at || at == s || strchr(at + 1, '@'))
                return -EINVAL;
        for (const char *p = s; p < at; p++)
                if (*p <= ' ' || *p > '~' || *p == '"' || *p == '\\' || *p == '(' || *p == ')' ||
                    *p == ',' || *p == ':' || *p == ';' || *p == '<' || *p == '>' || *p == '[' ||
                    *p == ']')
                        return -EINVAL;
        char dom[255];
        if (!strchr(at + 1, '.') || tilaa_dns_name(at + 1, dom) < 0 ||
            at[1 + strlen(at + 1) - 1] == '.')
                return -EINVAL;
        size_t local = (size_t)(at - s);
        for (size_t i = 0; i < local; i++)
                out[i] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] - 'A' + 'a' : s[i]);
        out[local] = '@';
        snprintf(out + local + 1, 255 - local - 1, "%s", dom);
        return 0;
}

static const struct {
        const char *native, *tilaa;
        int locked;
} status_map[] = {
    {"provisioning", "installing", 1}, {"rebuilding", "installing", 1},
    {"running", "running", 0},         {"stopped", "stopped", 0},
    {"starting", "starting", 1},       {"stopping", "stopping", 1},
    {"rebooting", "restarting", 1},    {"resizing", "resizing", 1},
    {"restoring", "restoring", 1},     {"snapshotting", "snapshotting", 1},
    {"paused", "paused", 0},           {"error", "error", 0},
    {"unknown", "unknown", 0},
};

const char *tilaa_status(const char *native, int rescue)
{
        for (size_t i = 0; i < sizeof(status_map) / sizeof(status_map[0]); i++)
                if (strcmp(status_map[i].native, native) == 0)
                        return rescue && strcmp(native, "running") == 0 ? "rescue"
                                                                        : status_map[i].tilaa;
        return "unknown";
}

int tilaa_locked(const char *native)
{
        for (size_t i = 0; i < sizeof(status_map) / sizeof(status_map[0]); i++)
                if (strcmp(status_map[i].native, native) == 0)
                        return status_map[i].locked;
        return 0;
}

static int b64val(char c)
{
        if (c >= 'A' && c <= 'Z')
                return c - 'A';
        if (c >= 'a' && c <= 'z')
                return c - 'a' + 26;
        if (c >= '0' && c <= '9')
                return c - '0' + 52;
        if (c == '+')
                return 62;
        if (c == '/')
                return 63;
        return -1;
}

int tilaa_basic(const char *header, char *email, size_t email_len, char *password,
                size_t password_len)
{
        unsigned char buf[1536];
        size_t o = 0, n;
        if (!header || strncasecmp(header, "Basic ", 6) != 0)
                return -EINVAL;
        header += 6;
        header += strspn(header, " ");
        n = strlen(header);
        while (n && header[n - 1] == ' ')
                n--;
        if (n == 0 || n % 4 != 0 || n / 4 * 3 > sizeof(buf))
                return -EINVAL;
        for (size_t i = 0; i < n; i += 4) {
                int v[4];
                for (int j = 0; j < 4; j++) {
                        char c = header[i + (size_t)j];
                        v[j] = c == '=' && i + 4 == n && j >= 2 ? -2 : b64val(c);
                        if (v[j] == -1)
                                return -EINVAL;
                }
                if (v[2] == -2 && v[3] != -2)
                        return -EINVAL;
                buf[o++] = (unsigned char)(v[0] << 2 | v[1] >> 4);
                if (v[2] != -2)
                        buf[o++] = (unsigned char)((v[1] & 15) << 4 | v[2] >> 2);
                if (v[3] != -2)
                        buf[o++] = (unsigned char)((v[2] & 3) << 6 | v[3]);
        }
        unsigned char *colon = memchr(buf, ':', o);
        if (!colon || memchr(buf, '\0', o))
                return -EINVAL;
        size_t el = (size_t)(colon - buf), pl = o - el - 1;
        if (el >= email_len || pl >= password_len)
                return -EINVAL;
        memcpy(email, buf, el);
        email[el] = '\0';
        memcpy(password, colon + 1, pl);
        password[pl] = '\0';
        return 0;
}
