/* money: see money.h. */
#include "money.h"

#include <errno.h>
#include <stdio.h>

int money_parse(const char *s, int64_t *ret_cents)
{
        int64_t whole = 0, frac = 0;
        const char *p = s;
        int digits = 0;
        if (!s)
                return -EINVAL;
        for (; *p >= '0' && *p <= '9'; p++, digits++) {
                whole = whole * 10 + (*p - '0');
                if (whole > MONEY_PARSE_MAX_CENTS / 100)
                        return -ERANGE;
        }
        if (digits == 0)
                return -EINVAL;
        if (*p == '.') {
                int fd = 0;
                for (p++; *p >= '0' && *p <= '9' && fd < 2; p++, fd++)
                        frac = frac * 10 + (*p - '0');
                if (fd == 0)
                        return -EINVAL;
                if (fd == 1)
                        frac *= 10;
        }
        if (*p != '\0')
                return -EINVAL;
        if (whole * 100 + frac > MONEY_PARSE_MAX_CENTS)
                return -ERANGE;
        *ret_cents = whole * 100 + frac;
        return 0;
}

void money_format(int64_t cents, char out[static MONEY_STR_MAX])
{
        /* |INT64_MIN| does not fit an int64_t: go through uint64_t. */
        uint64_t a = cents < 0 ? (uint64_t)0 - (uint64_t)cents : (uint64_t)cents;
        snprintf(out, MONEY_STR_MAX, "%s%llu.%02llu", cents < 0 ? "-" : "",
                 (unsigned long long)(a / 100), (unsigned long long)(a % 100));
}
