/* money: amounts of money as whole cents (int64_t), and their decimal text
 * ("12.50", "-0.40"). One currency (EUR) everywhere. Pure; any thread. */
#pragma once

#include <stdint.h>

/* Largest amount money_parse() accepts: 1,000,000.00. */
#define MONEY_PARSE_MAX_CENTS INT64_C(100000000)
#define MONEY_STR_MAX         24

/* Parses a non-negative decimal amount: digits, optionally '.' and one or
 * two more digits ("12", "12.5", "12.50"); nothing else, no sign, no
 * spaces, at most MONEY_PARSE_MAX_CENTS. 0 or -EINVAL (-ERANGE if larger). */
int money_parse(const char *s, int64_t *ret_cents);

/* "-12.05": always two decimals. */
void money_format(int64_t cents, char out[static MONEY_STR_MAX]);
