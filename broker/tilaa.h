/* tilaa: the Tilaa API's pure parts: parameter checks, times, dates,
 * status words, Basic credentials. No I/O but common/tz.c reading a zone
 * once (it caches it); no allocation; any thread. api_tilaa.c validates
 * every request with these before it touches the store, and
 * tests/unit/test_tilaa_valid.c checks them table by table.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* "2014-06-02T11:59:58+02:00" and its NUL */
#define TILAA_TIME_LEN 26

/* Every time the Tilaa API writes goes through this one function: ms
 * since the epoch as RFC 3339 in the zone's offset at that instant (tz: a
 * zoneinfo name such as "Europe/Amsterdam", read by common/tz.c; unknown
 * or NULL: UTC, "+00:00"). */
void tilaa_time(int64_t ms, const char *tz, char out[TILAA_TIME_LEN]);

/* The zone's offset from UTC at that instant, in seconds east (0 for an
 * unknown zone). */
int32_t tilaa_tz_offset(const char *tz, int64_t unix_s);

/* A whole decimal number "0".."max" (no sign, blanks or leading zeros
 * beyond "0"): 0, -EINVAL, -ERANGE (above max). */
int tilaa_uint(const char *s, uint64_t max, uint64_t *ret);

/* A flag parameter ("any non-zero value will do"): absent, "" and "0"
 * (and "00"...) are off; anything else is on. */
int tilaa_flag(const char *s);

/* "YYYY-MM-DD", a real date: 0, -EINVAL. */
int tilaa_date(const char *s, int *y, int *m, int *d);

/* The ms of the local midnight starting that date in tz (in a gap: the
 * gap's end; tz unknown: UTC). */
int64_t tilaa_local_midnight(int y, int m, int d, const char *tz);

/* The possible cancel dates ("YYYY-MM-DD"): the first day of each of the
 * next TILAA_CANCEL_DATES months after now in tz. */
#define TILAA_CANCEL_DATES 12
void tilaa_cancel_dates(int64_t now_ms, const char *tz, char out[TILAA_CANCEL_DATES][11]);

/* A VM name ("for internal use"): 1 to TILAA_NAME_CHARS characters of
 * valid UTF-8, any printable ones (blanks, parentheses, accents, '_'), no
 * control character (C0, DEL, C1, U+2028/9). */
#define TILAA_NAME_CHARS 64
#define TILAA_NAME_BYTES (4 * TILAA_NAME_CHARS)
int tilaa_name_ok(const char *s);
/* The DNS-safe form of a name, for its default dns_name: lowercase
 * letters, digits and '-', every run of other characters (and of '-')
 * one '-', none at either end, at most 63 characters. 0, -EINVAL (nothing
 * is left: "___", "été" leaves "t"). */
int tilaa_dns_label(const char *name, char out[64]);
/* A DNS name: labels of 1 to 63 of a-z, 0-9 and '-' (not at either end),
 * joined by dots, at most 253 bytes, an optional final dot not counted;
 * uppercase letters are lowered into out (254 bytes). 0, -EINVAL. */
int tilaa_dns_name(const char *s, char out[255]);
/* An e-mail address, lowercased into out (255 bytes): a local part of
 * printable ASCII without blanks, '@', '"' or '\', '@', a domain name with
 * at least one dot. 0, -EINVAL. */
int tilaa_email(const char *s, char out[255]);

/* Tilaa's status word for a native status (api_vps_status) and whether
 * the VM counts as locked (an operation in flight). */
const char *tilaa_status(const char *native, int rescue);
int tilaa_locked(const char *native);

/* An "Authorization: Basic ..." value: the e-mail and password (split at
 * the first ':'), each NUL-terminated into the caller's buffers. 0,
 * -EINVAL (not Basic, bad base64, no ':', a NUL or either too long). */
int tilaa_basic(const char *header, char *email, size_t email_len, char *password,
                size_t password_len);
