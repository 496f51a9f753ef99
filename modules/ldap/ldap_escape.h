/*
 * Escaping of lookup keys for the two places an ldap: table puts them:
 * a search filter (query_filter, RFC 4515 section 3: "*", "(", ")", "\"
 * and NUL become \XX; Postfix's rfc2254_quote escapes the same set) and a
 * DN (search_base, RFC 4514 section 2.4: '"', "+", ",", ";", "<", ">",
 * "\", "=", "#", spaces and NUL become \XX; Postfix's rfc2253_quote escapes
 * every space and "#" too, and so do we). Control characters are escaped
 * in both, which changes no meaning and keeps them out of log lines.
 *
 * Both are table_escape_fn (modules/common/table_config.h): the template
 * expansion passes every piece of the key through one of them, so a key
 * from the network can never open a filter component, add a wildcard or
 * an RDN. Separate from the module so the fuzz target links them alone.
 */
#ifndef PETREL_MODULES_LDAP_ESCAPE_H
#define PETREL_MODULES_LDAP_ESCAPE_H

#include <stddef.h>

#include "table_config.h"

void ldap_escape_filter(struct table_buffer *out, const char *s, size_t n, void *unused);
void ldap_escape_dn(struct table_buffer *out, const char *s, size_t n, void *unused);

#endif
