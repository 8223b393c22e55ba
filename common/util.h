/* util: small helpers shared by every binary: clocks, random bytes, hex.
 * Pure or thread-safe; any thread may call them. */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Milliseconds: wall clock (for stored timestamps) and monotonic. */
int64_t util_now_ms(void);
int64_t util_mono_ms(void);
int64_t util_mono_us(void);

/* Fills buf from the kernel's CSPRNG; 0 or -errno. */
int util_random(void *buf, size_t len);

/* Lowercase hex of len bytes into out (2 * len + 1 bytes). */
void util_hex(const void *data, size_t len, char *out);

/* Formats epoch milliseconds as "2024-01-15T10:30:00Z" (21 bytes). */
void util_iso8601_utc(int64_t ms, char out[static 21]);

/* Copies src into dst of size n, always terminated; -ENAMETOOLONG if cut. */
int util_strlcpy(char *dst, const char *src, size_t n);
