/* catalog: the sizes a VPS can be made with (the OS images are a catalog
 * in the store, managed by admins).
 *
 * A static table for now. Slug lists are NULL-terminated, for the
 * "allowed" lists of validation errors. Pure; any thread.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

struct size_def {
        const char *slug;
        uint32_t vcpus;
        uint32_t ram_mb;
        uint32_t disk_gb;
};

const struct size_def *catalog_size(const char *slug);
const char *const *catalog_size_slugs(void);

/* The Tilaa API's presets are a view of the same table: its RAM sizes
 * are the sizes' (ascending), and a RAM size's defaults are that size's
 * vCPUs and no CPU cap (100%); its storage sizes (GB, ascending, the same
 * for hdd and ssd) are the sizes' disks and a few smaller steps. */
size_t catalog_sizes(const struct size_def **ret);
const struct size_def *catalog_size_by_ram(uint32_t ram_mb);
const uint32_t *catalog_storage_sizes(size_t *ret_n);
#define CATALOG_CPU_MAX 8    /* the most vCPUs a Tilaa cpu_count may ask for */
#define CATALOG_CAP_MIN 10   /* cpu_cap: percent of each vCPU, 10..100 (100: no cap) */
