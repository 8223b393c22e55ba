#include "json.h"

#include <stdlib.h>
#include <string.h>

void json_respond(struct http_resp *resp, int status, json_t *body)
{
        resp->status = status;
        resp->body = NULL;
        resp->body_len = 0;
        if (body) {
                resp->body = json_dumps(body, JSON_COMPACT);
                json_decref(body);
                if (!resp->body) {
                        /* Out of memory: answer a fixed, still valid error. */
                        static const char oom[] =
                                "{\"error\":{\"code\":\"internal_error\",\"message\":\"out of memory\"}}";
                        resp->status = 500;
                        resp->body = strdup(oom);
                }
                resp->body_len = resp->body ? strlen(resp->body) : 0;
                resp->content_type = "application/json";
        }
}

void json_error(struct http_resp *resp, int status, const char *code, const char *message,
                json_t *details)
{
        json_t *err = json_pack("{s:s, s:s}", "code", code, "message", message);
        if (err && details)
                json_object_set_new(err, "details", details);
        else if (details)
                json_decref(details);
        json_respond(resp, status, err ? json_pack("{s:o}", "error", err) : NULL);
}

void json_invalid(struct http_resp *resp, const char *field, const char *message,
                  const char *const *allowed)
{
        json_t *details = json_pack("{s:s}", "field", field);
        if (details && allowed) {
                json_t *list = json_array();
                for (size_t i = 0; list && allowed[i]; i++)
                        json_array_append_new(list, json_string(allowed[i]));
                json_object_set_new(details, "allowed", list);
        }
        json_error(resp, 422, "validation_error", message, details);
}
