/* templates: the one-click application catalog (the native API's
 * /templates): PostgreSQL, MySQL, Redis and WordPress, each with versions
 * and a typed config schema.
 *
 * templates_validate() checks a deploy request's config against the
 * schema (unknown keys, types, patterns, lengths, ranges) and fills in
 * defaults and generated secrets; templates_user_data() turns a valid
 * config into the cloud-init user-data that installs and configures the
 * application on first boot. Secrets are fields marked `secret`: the
 * user-data carries them, templates_public_config() drops them. Pure over
 * jansson values; any thread. Returned strings and values are the
 * caller's.
 */
#pragma once

#include <stddef.h>

#include <jansson.h>

enum tpl_type { TPL_STRING, TPL_INT };

struct tpl_field {
        const char *name;
        enum tpl_type type;
        int required;
        int secret;          /* never shown back; generated when absent */
        const char *pattern; /* TPL_STRING: a small class, see templates.c */
        long min, max;       /* TPL_STRING: length; TPL_INT: value */
        const char *def;     /* default, as text (NULL: none) */
        const char *description;
};

struct tpl {
        const char *id, *name, *description, *category;
        const char *const *versions; /* newest first, NULL-terminated */
        const char *size;            /* the VPS size it deploys on */
        const char *image;
        const struct tpl_field *fields;
        size_t n_fields;
};

const struct tpl *templates_find(const char *id);
const struct tpl *templates_all(size_t *ret_n);
const char *const *templates_ids(void); /* NULL-terminated, for "allowed" lists */

/* The catalog entry as the API shows it (versions and config schema). */
json_t *templates_json(const struct tpl *t);

/* Validates config (an object, or NULL for {}) for t and returns the full
 * config (defaults and generated secrets filled in) in *ret. On a bad
 * config: -EINVAL, field set to the offending key ("config.x") and why to
 * a message. */
int templates_validate(const struct tpl *t, json_t *config, json_t **ret, char *field,
                       size_t field_len, char *why, size_t why_len);

/* The config without its secrets (for showing and storing in the clear). */
json_t *templates_public_config(const struct tpl *t, json_t *full);

/* cloud-init user-data (#cloud-config) installing t's version with the
 * full config; malloc'd. */
char *templates_user_data(const struct tpl *t, const char *version, json_t *full);
