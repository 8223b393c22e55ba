/* catalog: the sizes a VPS can be made with (the OS images are a catalog
 * in the store, managed by admins).
 *
 * A static table for now. Slug lists are NULL-terminated, for the
 * "allowed" lists of validation errors. Pure; any thread.
 */
#pragma once

#include <stdint.h>

struct size_def {
        const char *slug;
        uint32_t vcpus;
        uint32_t ram_mb;
        uint32_t disk_gb;
};

const struct size_def *catalog_size(const char *slug);
const char *const *catalog_size_slugs(void);
