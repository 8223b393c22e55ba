#include "catalog.h"

#include <stddef.h>
#include <string.h>

static const struct size_def sizes[] = {
        { "standard-1vcpu-1gb", 1, 1024, 25 },
        { "standard-1vcpu-2gb", 1, 2048, 50 },
        { "standard-2vcpu-4gb", 2, 4096, 80 },
        { "standard-4vcpu-8gb", 4, 8192, 160 },
        { "standard-8vcpu-16gb", 8, 16384, 320 },
};

static const char *const size_slugs[] = {
        "standard-1vcpu-1gb", "standard-1vcpu-2gb", "standard-2vcpu-4gb",
        "standard-4vcpu-8gb", "standard-8vcpu-16gb", NULL,
};
_Static_assert(sizeof(size_slugs) / sizeof(size_slugs[0]) == sizeof(sizes) / sizeof(sizes[0]) + 1,
               "size_slugs must list every size");

const struct size_def *catalog_size(const char *slug)
{
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
                if (strcmp(sizes[i].slug, slug) == 0)
                        return &sizes[i];
        return NULL;
}

const char *const *catalog_size_slugs(void)
{
        return size_slugs;
}

size_t catalog_sizes(const struct size_def **ret)
{
        *ret = sizes;
        return sizeof(sizes) / sizeof(sizes[0]);
}

const struct size_def *catalog_size_by_ram(uint32_t ram_mb)
{
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
                if (sizes[i].ram_mb == ram_mb)
                        return &sizes[i];
        return NULL;
}

static const uint32_t storage_sizes[] = { 20, 25, 30, 40, 50, 80, 100, 160, 200, 320 };

const uint32_t *catalog_storage_sizes(size_t *ret_n)
{
        *ret_n = sizeof(storage_sizes) / sizeof(storage_sizes[0]);
        return storage_sizes;
}
