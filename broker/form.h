/* form: a strict application/x-www-form-urlencoded decoder (what
 * `curl -d` sends), for the Tilaa API's POST bodies.
 *
 * "a=1&b=two+words&c=%2F" is decoded into at most FORM_MAX_PARAMS pairs:
 * '+' is a space, %XX a byte (both hex digits required); a name is
 * 1..FORM_NAME_MAX bytes of [A-Za-z0-9_.-] after decoding; a value at
 * most FORM_VALUE_MAX bytes, valid UTF-8 without NUL. A name given twice,
 * an empty pair ("a=1&&b=2"), a pair without '=' or a bad escape is an
 * error, not guessed at. The form owns its strings (one allocation per
 * decode); form_free(NULL) is a no-op. Pure; any thread.
 */
#pragma once

#include <stddef.h>

#define FORM_MAX_PARAMS 32
#define FORM_NAME_MAX   32
#define FORM_VALUE_MAX  (96 * 1024) /* user_data (64 KiB) with room for escapes */

struct form_param {
        char *name;
        char *value;
};

struct form {
        size_t n;
        struct form_param p[FORM_MAX_PARAMS];
        char *buf; /* the decoded strings */
};

/* Decodes len bytes of body (NULL or len 0: an empty form). 0 and *ret
 * (caller frees with form_free), -EINVAL (why says what, for a human; cut
 * to why_len), -E2BIG (more than FORM_MAX_PARAMS pairs or a value over
 * FORM_VALUE_MAX), -ENOMEM. */
int form_decode(const char *body, size_t len, struct form **ret, char *why, size_t why_len);
void form_free(struct form *f);

/* The value of name, or NULL when absent. */
const char *form_get(const struct form *f, const char *name);
