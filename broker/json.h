/* json: building JSON responses and the APIs' error shape (jansson).
 *
 * The error shape is the native spec's, also used by the admin API:
 *   {"error": {"code": "...", "message": "...", "details": {...}}}
 * Functions take ownership of the json_t they are given. Any thread.
 */
#pragma once

#include <jansson.h>

#include "http.h"

/* Sets resp to status with body serialised (steals body; NULL: no body). */
void json_respond(struct http_resp *resp, int status, json_t *body);

/* An error in the spec's format; details may be NULL (stolen). */
void json_error(struct http_resp *resp, int status, const char *code, const char *message,
                json_t *details);

/* 422 validation_error naming the field, with allowed values if given
 * (a NULL-terminated list, or NULL). */
void json_invalid(struct http_resp *resp, const char *field, const char *message,
                  const char *const *allowed);
