/* tz: a reader of TZif files (RFC 8536) and of the POSIX TZ rule in their
 * footer. See tz.h. Version 1 files use their 32-bit data; version 2 and
 * later their 64-bit data and footer. Leap-second records are skipped
 * ("right/" zones are read as if they had none). */
#include "tz.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

#define TZ_DIR "/usr/share/zoneinfo"
#define TZ_FILE_MAX (512 * 1024)
#define TZ_FOOTER_MAX 128
#define TZ_TYPES_MAX 256
#define TZ_OFFSET_MAX (26 * 3600) /* |UT offset| of any real zone is below */
/* Instants are clamped to about +-4 million years before calendar math. */
#define TZ_INSTANT_MAX (INT64_C(1) << 47)

enum rule_kind {
        RULE_JULIAN1, /* Jn: 1..365, February 29 never counted */
        RULE_JULIAN0, /* n: 0..365, February 29 counted */
        RULE_MONTH,   /* Mm.w.d: day d (0 = Sunday) of week w (5 = last) of month m */
};

struct tz_rule {
        enum rule_kind kind;
        int n, m, w, d;
        int32_t time; /* seconds after local midnight, may be negative or > 24 h */
};

struct tz {
        char name[TZ_NAME_MAX];
        size_t ntrans;
        int64_t *trans;     /* ascending instants */
        uint8_t *trans_idx; /* index into offs for each transition */
        size_t ntypes;
        int32_t *offs; /* UT offset of each local time type, east positive */
        bool has_footer;
        bool has_dst;
        int32_t std_off, dst_off; /* east positive */
        struct tz_rule start, end;
};

/* ---- calendar ---------------------------------------------------------- */

static int64_t floor_div(int64_t a, int64_t b)
{
        int64_t q = a / b;
        if ((a % b != 0) && ((a < 0) != (b < 0)))
                q--;
        return q;
}

static bool is_leap(int64_t y)
{
        return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

int tz_days_in_month(int y, int mon)
{
        static const int mdays[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
        if (mon < 1 || mon > 12)
                return 0;
        return mdays[mon - 1] + (mon == 2 && is_leap(y));
}

/* H. Hinnant's days_from_civil, for the proleptic Gregorian calendar. */
int64_t tz_days_from_civil(int y, int mon, int mday)
{
        int64_t yy = (int64_t)y - (mon <= 2);
        int64_t era = floor_div(yy, 400);
        int64_t yoe = yy - era * 400;
        int64_t mp = (mon + 9) % 12;
        int64_t doy = (153 * mp + 2) / 5 + mday - 1;
        int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        return era * 146097 + doe - 719468;
}

void tz_civil_from_days(int64_t days, int *ret_y, int *ret_mon, int *ret_mday)
{
        int64_t z = days + 719468;
        int64_t era = floor_div(z, 146097);
        int64_t doe = z - era * 146097;
        int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
        int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        int64_t mp = (5 * doy + 2) / 153;
        int64_t d = doy - (153 * mp + 2) / 5 + 1;
        int64_t m = mp < 10 ? mp + 3 : mp - 9;
        int64_t y = yoe + era * 400 + (m <= 2);
        if (ret_y)
                *ret_y = (int)y;
        if (ret_mon)
                *ret_mon = (int)m;
        if (ret_mday)
                *ret_mday = (int)d;
}

static int64_t clamp_instant(int64_t t)
{
        if (t > TZ_INSTANT_MAX)
                return TZ_INSTANT_MAX;
        if (t < -TZ_INSTANT_MAX)
                return -TZ_INSTANT_MAX;
        return t;
}

/* ---- POSIX TZ rule (the footer) ---------------------------------------- */

static const char *parse_tzname(const char *p)
{
        const char *s = p;
        if (*p == '<') {
                p++;
                while (*p && *p != '>') {
                        if (!(*p == '+' || *p == '-' || (*p >= '0' && *p <= '9') ||
                              (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z')))
                                return NULL;
                        p++;
                }
                if (*p != '>' || p - s < 4)
                        return NULL;
                return p + 1;
        }
        while ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z'))
                p++;
        return p - s >= 3 ? p : NULL;
}

static const char *parse_num(const char *p, int lo, int hi, int *ret)
{
        int v = 0;
        if (*p < '0' || *p > '9')
                return NULL;
        while (*p >= '0' && *p <= '9') {
                v = v * 10 + (*p - '0');
                if (v > hi)
                        return NULL;
                p++;
        }
        if (v < lo)
                return NULL;
        *ret = v;
        return p;
}

/* [+-]hh[:mm[:ss]], hours up to max_h. */
static const char *parse_hms(const char *p, int max_h, int32_t *ret)
{
        int sign = 1, h, m = 0, s = 0;
        if (*p == '+' || *p == '-')
                sign = *p++ == '-' ? -1 : 1;
        if (!(p = parse_num(p, 0, max_h, &h)))
                return NULL;
        if (*p == ':') {
                if (!(p = parse_num(p + 1, 0, 59, &m)))
                        return NULL;
                if (*p == ':' && !(p = parse_num(p + 1, 0, 59, &s)))
                        return NULL;
        }
        *ret = sign * (h * 3600 + m * 60 + s);
        return p;
}

static const char *parse_rule(const char *p, struct tz_rule *r)
{
        if (*p == 'J') {
                r->kind = RULE_JULIAN1;
                p = parse_num(p + 1, 1, 365, &r->n);
        } else if (*p == 'M') {
                r->kind = RULE_MONTH;
                if (!(p = parse_num(p + 1, 1, 12, &r->m)) || *p != '.')
                        return NULL;
                if (!(p = parse_num(p + 1, 1, 5, &r->w)) || *p != '.')
                        return NULL;
                p = parse_num(p + 1, 0, 6, &r->d);
        } else {
                r->kind = RULE_JULIAN0;
                p = parse_num(p, 0, 365, &r->n);
        }
        if (!p)
                return NULL;
        r->time = 2 * 3600;
        if (*p == '/')
                p = parse_hms(p + 1, 167, &r->time); /* RFC 8536 extension */
        return p;
}

/* Parses "STDoff[DST[off][,start[/time],end[/time]]]" into z. 0 or -EINVAL. */
static int parse_footer(struct tz *z, const char *s)
{
        const char *p = s;
        int32_t off;
        if (*p == '\0')
                return 0; /* no rule: the last type stays in force */
        if (!(p = parse_tzname(p)) || !(p = parse_hms(p, 24, &off)))
                return -EINVAL;
        z->std_off = -off;
        if (*p == '\0') {
                z->has_footer = true;
                return 0;
        }
        if (!(p = parse_tzname(p)))
                return -EINVAL;
        z->dst_off = z->std_off + 3600;
        if (*p && *p != ',') {
                if (!(p = parse_hms(p, 24, &off)))
                        return -EINVAL;
                z->dst_off = -off;
        }
        if (*p == '\0') {
                /* No rule given: POSIX leaves it to the implementation; the
                 * usual choice is the US rule. */
                p = ",M3.2.0,M11.1.0";
        }
        if (*p != ',' || !(p = parse_rule(p + 1, &z->start)) || *p != ',' ||
            !(p = parse_rule(p + 1, &z->end)) || *p != '\0')
                return -EINVAL;
        z->has_footer = true;
        z->has_dst = true;
        return 0;
}

/* Day (days since the epoch) on which rule r falls in year y. */
static int64_t rule_day(const struct tz_rule *r, int y)
{
        int64_t jan1 = tz_days_from_civil(y, 1, 1);
        switch (r->kind) {
        case RULE_JULIAN1:
                return jan1 + r->n - 1 + (is_leap(y) && r->n >= 60);
        case RULE_JULIAN0:
                return jan1 + r->n;
        case RULE_MONTH:
        default: {
                int64_t first = tz_days_from_civil(y, r->m, 1);
                /* 1970-01-01 was a Thursday (4). */
                int wday1 = (int)(((first % 7) + 7 + 4) % 7);
                int mday = 1 + (r->d - wday1 + 7) % 7 + 7 * (r->w - 1);
                int dim = tz_days_in_month(y, r->m);
                while (mday > dim)
                        mday -= 7;
                return first + mday - 1;
        }
        }
}

static int32_t footer_offset(const struct tz *z, int64_t t)
{
        int y;
        int64_t start, end;
        bool dst;
        if (!z->has_dst)
                return z->std_off;
        tz_civil_from_days(floor_div(t + z->std_off, 86400), &y, NULL, NULL);
        /* Each transition's time is local time as it was before it. */
        start = rule_day(&z->start, y) * 86400 + z->start.time - z->std_off;
        end = rule_day(&z->end, y) * 86400 + z->end.time - z->dst_off;
        if (start < end)
                dst = t >= start && t < end;
        else
                dst = !(t >= end && t < start);
        return dst ? z->dst_off : z->std_off;
}

/* ---- lookups ------------------------------------------------------------ */

int32_t tz_offset(const struct tz *z, int64_t unix_seconds)
{
        int64_t t = clamp_instant(unix_seconds);
        size_t lo, hi;
        if (z->ntrans == 0)
                return z->has_footer ? footer_offset(z, t) : z->offs[0];
        if (t < z->trans[0])
                return z->offs[0];
        if (t > z->trans[z->ntrans - 1] && z->has_footer)
                return footer_offset(z, t);
        /* the last transition at or before t */
        lo = 0;
        hi = z->ntrans;
        while (hi - lo > 1) {
                size_t mid = lo + (hi - lo) / 2;
                if (z->trans[mid] <= t)
                        lo = mid;
                else
                        hi = mid;
        }
        return z->offs[z->trans_idx[lo]];
}

const char *tz_name(const struct tz *z)
{
        return z->name;
}

int64_t tz_local_day(const struct tz *z, int64_t unix_seconds, int *ret_y, int *ret_mon, int *ret_mday)
{
        int64_t t = clamp_instant(unix_seconds);
        int64_t day = floor_div(t + tz_offset(z, t), 86400);
        tz_civil_from_days(day, ret_y, ret_mon, ret_mday);
        return day;
}

/* The first instant in (t, limit] at which the offset differs from the
 * offset at t, or limit if there is none. Scans in half-hour steps and
 * bisects the step that changed: two transitions less than half an hour
 * apart (none in the tz database) could be missed. */
#define TZ_SCAN_STEP 1800
static int64_t next_change(const struct tz *z, int64_t t, int64_t limit)
{
        int32_t o = tz_offset(z, t);
        int64_t prev = t;
        while (prev < limit) {
                int64_t u = prev + TZ_SCAN_STEP < limit ? prev + TZ_SCAN_STEP : limit;
                if (tz_offset(z, u) != o) {
                        int64_t lo = prev, hi = u; /* offset(lo) == o, offset(hi) != o */
                        while (hi - lo > 1) {
                                int64_t mid = lo + (hi - lo) / 2;
                                if (tz_offset(z, mid) == o)
                                        lo = mid;
                                else
                                        hi = mid;
                        }
                        return hi;
                }
                prev = u;
        }
        return limit;
}

int tz_local_midnight(const struct tz *z, int y, int mon, int mday, int64_t *ret_unix_seconds)
{
        int64_t local, t, limit;
        if (y < 1 || y > 9999 || mon < 1 || mon > 12 || mday < 1 || mday > tz_days_in_month(y, mon))
                return -EINVAL;
        local = tz_days_from_civil(y, mon, mday) * 86400;
        /* Offsets stay within +-26 h, so the wall clock reads before local
         * at local - 27 h and at or after it at local + 27 h. Walk the
         * stretches of constant offset between them: in each, wall time is
         * t + offset, rising; the first stretch that reaches local holds
         * the answer. */
        t = local - 27 * 3600;
        limit = local + 27 * 3600;
        while (t < limit) {
                int32_t o = tz_offset(z, t);
                int64_t end = next_change(z, t, limit);
                int64_t cand = local - o > t ? local - o : t;
                if (cand < end || end == limit) {
                        *ret_unix_seconds = cand;
                        return 0;
                }
                t = end;
        }
        *ret_unix_seconds = limit;
        return 0;
}

int tz_next_midnight(const struct tz *z, int64_t unix_seconds, int64_t *ret_unix_seconds)
{
        int64_t day = tz_local_day(z, unix_seconds, NULL, NULL, NULL);
        /* Usually the next day's; a clock turned back over midnight can
         * make that one already past. */
        for (int i = 1; i <= 3; i++) {
                int y, mon, mday, r;
                int64_t m;
                tz_civil_from_days(day + i, &y, &mon, &mday);
                r = tz_local_midnight(z, y, mon, mday, &m);
                if (r < 0)
                        return r;
                if (m > unix_seconds) {
                        *ret_unix_seconds = m;
                        return 0;
                }
        }
        return -EINVAL;
}

/* ---- TZif files ---------------------------------------------------------- */

struct tzif_hdr {
        char version;
        uint32_t isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt;
};

static uint32_t be32(const unsigned char *p)
{
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const unsigned char *p)
{
        return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

static int parse_hdr(const unsigned char *p, size_t len, struct tzif_hdr *h)
{
        if (len < 44 || memcmp(p, "TZif", 4) != 0)
                return -EINVAL;
        h->version = (char)p[4];
        if (h->version != 0 && (h->version < '2' || h->version > '4'))
                return -EINVAL;
        h->isutcnt = be32(p + 20);
        h->isstdcnt = be32(p + 24);
        h->leapcnt = be32(p + 28);
        h->timecnt = be32(p + 32);
        h->typecnt = be32(p + 36);
        h->charcnt = be32(p + 40);
        if (h->typecnt == 0 || h->typecnt > TZ_TYPES_MAX || h->charcnt == 0 ||
            (h->isutcnt != 0 && h->isutcnt != h->typecnt) ||
            (h->isstdcnt != 0 && h->isstdcnt != h->typecnt) || h->timecnt > TZ_FILE_MAX ||
            h->leapcnt > TZ_FILE_MAX || h->charcnt > TZ_FILE_MAX)
                return -EINVAL;
        return 0;
}

static size_t block_len(const struct tzif_hdr *h, size_t tsize)
{
        return (size_t)h->timecnt * (tsize + 1) + (size_t)h->typecnt * 6 + h->charcnt +
               (size_t)h->leapcnt * (tsize + 4) + h->isstdcnt + h->isutcnt;
}

/* Reads the data block at p (after its header) with tsize-byte times. */
static int parse_block(struct tz *z, const struct tzif_hdr *h, const unsigned char *p, size_t tsize)
{
        const unsigned char *idx = p + (size_t)h->timecnt * tsize;
        const unsigned char *types = idx + h->timecnt;
        z->ntrans = h->timecnt;
        z->ntypes = h->typecnt;
        z->trans = calloc(h->timecnt ? h->timecnt : 1, sizeof(*z->trans));
        z->trans_idx = calloc(h->timecnt ? h->timecnt : 1, 1);
        z->offs = calloc(h->typecnt, sizeof(*z->offs));
        if (!z->trans || !z->trans_idx || !z->offs)
                abort();
        for (size_t i = 0; i < h->timecnt; i++) {
                z->trans[i] = tsize == 8 ? be64(p + 8 * i) : (int32_t)be32(p + 4 * i);
                if (i > 0 && z->trans[i] <= z->trans[i - 1])
                        return -EINVAL;
                if (idx[i] >= h->typecnt)
                        return -EINVAL;
                z->trans_idx[i] = idx[i];
        }
        for (size_t i = 0; i < h->typecnt; i++) {
                int32_t off = (int32_t)be32(types + 6 * i);
                if (off < -TZ_OFFSET_MAX || off > TZ_OFFSET_MAX || types[6 * i + 4] > 1 ||
                    types[6 * i + 5] >= h->charcnt)
                        return -EINVAL;
                z->offs[i] = off;
        }
        return 0;
}

static int parse_tzif(struct tz *z, const unsigned char *buf, size_t len)
{
        struct tzif_hdr h;
        size_t n;
        int r = parse_hdr(buf, len, &h);
        if (r < 0)
                return r;
        n = block_len(&h, 4);
        if (len - 44 < n)
                return -EINVAL;
        if (h.version == 0)
                return parse_block(z, &h, buf + 44, 4);

        /* Version 2+: skip the 32-bit data, use the 64-bit data and footer. */
        buf += 44 + n;
        len -= 44 + n;
        if ((r = parse_hdr(buf, len, &h)) < 0)
                return r;
        n = block_len(&h, 8);
        if (len - 44 < n)
                return -EINVAL;
        if ((r = parse_block(z, &h, buf + 44, 8)) < 0)
                return r;
        buf += 44 + n;
        len -= 44 + n;
        if (len >= 2 && buf[0] == '\n') {
                char footer[TZ_FOOTER_MAX];
                const unsigned char *nl = memchr(buf + 1, '\n', len - 1);
                size_t flen;
                if (!nl)
                        return -EINVAL;
                flen = (size_t)(nl - buf - 1);
                if (flen >= sizeof(footer))
                        return -EINVAL;
                memcpy(footer, buf + 1, flen);
                footer[flen] = '\0';
                if (memchr(footer, '\0', flen))
                        return -EINVAL;
                return parse_footer(z, footer);
        }
        return 0;
}

static bool name_valid(const char *name)
{
        size_t len = strnlen(name, TZ_NAME_MAX);
        if (len == 0 || len >= TZ_NAME_MAX || name[0] == '/' || name[len - 1] == '/')
                return false;
        for (size_t i = 0; i < len; i++) {
                char c = name[i];
                if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                      c == '_' || c == '+' || c == '-' || c == '/'))
                        return false; /* also rules out "." and ".." */
                if (c == '/' && name[i + 1] == '/')
                        return false;
        }
        return true;
}

static void tz_free(struct tz *z)
{
        if (!z)
                return;
        free(z->trans);
        free(z->trans_idx);
        free(z->offs);
        free(z);
}

static int read_file(const char *path, unsigned char **ret_buf, size_t *ret_len)
{
        struct stat st;
        unsigned char *buf;
        size_t got = 0;
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        int r = 0;
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0) {
                r = -errno;
                goto out;
        }
        if (!S_ISREG(st.st_mode) || st.st_size <= 0 || st.st_size > TZ_FILE_MAX) {
                r = -EINVAL;
                goto out;
        }
        buf = malloc((size_t)st.st_size);
        if (!buf)
                abort();
        while (got < (size_t)st.st_size) {
                ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        r = n < 0 ? -errno : -EIO;
                        free(buf);
                        goto out;
                }
                got += (size_t)n;
        }
        *ret_buf = buf;
        *ret_len = got;
out:
        close(fd);
        return r;
}

static int tz_load(const char *name, struct tz **ret)
{
        char path[sizeof(TZ_DIR) + TZ_NAME_MAX + 1];
        unsigned char *buf = NULL;
        size_t len = 0;
        struct tz *z;
        int r;
        snprintf(path, sizeof(path), "%s/%s", TZ_DIR, name);
        if ((r = read_file(path, &buf, &len)) < 0)
                return r;
        z = calloc(1, sizeof(*z));
        if (!z)
                abort();
        memcpy(z->name, name, strlen(name) + 1);
        r = parse_tzif(z, buf, len);
        free(buf);
        if (r < 0) {
                tz_free(z);
                return r;
        }
        *ret = z;
        return 0;
}

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tz *cache[TZ_CACHE_MAX];
static size_t cache_n;

const struct tz *tz_get(const char *name)
{
        struct tz *z = NULL;
        int r;
        if (!name || !name_valid(name))
                return NULL;
        pthread_mutex_lock(&cache_lock);
        for (size_t i = 0; i < cache_n; i++)
                if (strcmp(cache[i]->name, name) == 0) {
                        z = cache[i];
                        goto out;
                }
        if (cache_n == TZ_CACHE_MAX) {
                log_warn("tz %s: not loaded, the cache holds %d zones already", name, TZ_CACHE_MAX);
                goto out;
        }
        r = tz_load(name, &z);
        if (r < 0) {
                log_debug("tz %s: cannot read %s/%s: %s", name, TZ_DIR, name, strerror(-r));
                z = NULL;
                goto out;
        }
        cache[cache_n++] = z;
out:
        pthread_mutex_unlock(&cache_lock);
        return z;
}
