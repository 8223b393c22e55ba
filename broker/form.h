/* form: the decoders of the Tilaa API's POST bodies, into one plain
 * name -> value table: application/x-www-form-urlencoded (what `curl -d`
 * sends) and multipart/form-data (what `curl -F` sends).
 *
 * urlencoded: "a=1&b=two+words&c=%2F": '+' is a space, %XX a byte (both
 * hex digits required: a bad escape is an error, not guessed at). As
 * ordinary form parsers do: empty pairs ("a=1&&b=2", a leading or trailing
 * '&') are skipped; a bare name ("online") has the empty value; a name
 * given again: the last value wins (PHP's rule).
 *
 * Both: at most FORM_MAX_PAIRS pairs (repeats counted) and FORM_MAX_PARAMS
 * distinct names; a name is at most FORM_NAME_MAX bytes after decoding
 * (longer: an error); one of [A-Za-z0-9_.-] only is kept, any other
 * ("foo[]", "a b", "") is no parameter of ours and is dropped; every value
 * is at most FORM_VALUE_MAX bytes of valid UTF-8 without NUL. The form
 * owns its strings (one allocation per decode); form_free(NULL) is a
 * no-op. Pure; any thread.
 */
#pragma once

#include <stddef.h>

#define FORM_MAX_PARAMS   32
#define FORM_MAX_PAIRS    64 /* pairs in a body, repeated names counted */
#define FORM_NAME_MAX     32
#define FORM_BOUNDARY_MAX 70          /* RFC 2046 */
#define FORM_HEADER_MAX   1024        /* a multipart part's header line, CRLF included */
#define FORM_PART_HEADERS 8           /* header lines of a part */
#define FORM_VALUE_MAX    (96 * 1024) /* user_data (64 KiB) with room for escapes */

struct form_param {
        char *name;
        char *value;
};

struct form {
        size_t n;
        struct form_param p[FORM_MAX_PARAMS];
        char *buf; /* the decoded strings */
};

/* Decodes len bytes of an urlencoded body (NULL or len 0: an empty form).
 * 0 and *ret (caller frees with form_free), -EINVAL (why says what, for a
 * human; cut to why_len), -E2BIG (more than FORM_MAX_PAIRS pairs or
 * FORM_MAX_PARAMS names, or a value over FORM_VALUE_MAX), -ENOMEM. */
int form_decode(const char *body, size_t len, struct form **ret, char *why, size_t why_len);
/* Decodes a multipart/form-data body, its boundary from content_type
 * (the whole header value, "multipart/form-data; boundary=..."). Strict:
 * the body opens with the first delimiter and ends with the close one
 * (an epilogue after it is ignored); each part has CRLF header lines (at
 * most FORM_PART_HEADERS of FORM_HEADER_MAX bytes), one of them
 * "Content-Disposition: form-data; name=..." (a quoted or bare name), and
 * its value is its bytes as they are, up to the CRLF before the next
 * delimiter (no transfer encoding). 0 and *ret, -EINVAL, -E2BIG (as
 * form_decode), -ENOTSUP (a file upload: a part with a filename), -ENOMEM;
 * why as form_decode. */
int form_decode_multipart(const char *content_type, const char *body, size_t len, struct form **ret,
                          char *why, size_t why_len);
void form_free(struct form *f);

/* The value of name, or NULL when absent. */
const char *form_get(const struct form *f, const char *name);
