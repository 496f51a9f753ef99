/*
 * A module's LIST parameter split as greylist, ratelimit and spf read theirs:
 * items separated by commas and white space, nothing else (no { }
 * grouping, unlike petrel_param_list), so that a service's -o value, read
 * as text with petrel_service_config_string, splits the same way.
 */
#ifndef PETREL_MODULES_LIST_ITEMS_H
#define PETREL_MODULES_LIST_ITEMS_H

#include <stddef.h>

#include <petrel/plugin.h>

/* The items of text (NULL: none) as pool strings, *count of them; the
 * array has room for one more entry (it is never NULL). */
const char **list_items_split(const char *text, size_t *count, petrel_pool *pool);

/* 1 when item is written as a lookup table (TYPE:NAME, "hash:/etc/x"): a
 * list that takes only addresses or names refuses it rather than treat it
 * as one. An IPv6 address ("2001:db8::1", "::1/128") is not a table. */
int list_item_is_table(const char *item);

#endif
