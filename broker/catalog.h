/* catalog: the sizes and OS images a VPS can be made with.
 *
 * Static tables for now (the image catalog moves into the store when
 * images are fetched by agents). Slug lists are NULL-terminated, for the
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

int catalog_image_known(const char *slug);
const char *const *catalog_image_slugs(void);
