/*
 * The mysql module's blocking lookup, for callers that cannot wait: a
 * connection of its own (t->blocking), with the connect, read and write
 * timeouts set to mysql_timeout; up to one attempt more than there are
 * hosts before the lookup fails temporarily.
 */
#include <stdlib.h>
#include <string.h>

#include <mysql.h>

#include <petrel/plugin.h>

#include "mysql_table.h"

static int lookup_server(struct table *t, const char *key, const char **value, petrel_pool *scratch)
{
    for (int attempt = 0; attempt < t->sql.hosts.n + 1; attempt++) {
        if (t->blocking == NULL) {
            int host = sql_table_pick_host(&t->sql);
            if (host < 0)
                break;
            const struct sql_host *h = &t->sql.hosts.items[host];
            t->blocking = mysql_table_client_new(t, 0);
            if (t->blocking == NULL)
                break;
            const char *failed = NULL;
            if (mysql_real_connect(t->blocking, h->host, t->sql.user, t->sql.password, t->sql.dbname,
                                   h->socket ? 0 : h->port_number, h->socket, 0) == NULL)
                failed = "connect to";
            else if (mysql_table_charset_differs(t, t->blocking) &&
                     mysql_set_character_set(t->blocking, t->charset) != 0)
                failed = "set the character set on";
            if (failed) {
                petrel_module_log(t->sql.module, PETREL_LOG_WARNING, "mysql:%s: %s %s: %s", t->sql.config, failed,
                                  h->name, mysql_error(t->blocking));
                sql_table_host_failed(&t->sql, host);
                mysql_close(t->blocking);
                t->blocking = NULL;
                continue;
            }
        }
        int skip;
        char *query = mysql_table_make_query(t, t->blocking, key, &skip);
        if (query == NULL)
            return skip ? 0 : -1;
        int err = mysql_real_query(t->blocking, query, (unsigned long)strlen(query));
        free(query);
        /* Every result set is read (a CALL ends with a status result); the
         * answer is mysql_table_result_sets_answer()'s. */
        MYSQL_RES *first = NULL;
        int more_sets = 0, next = -1;
        if (!err)
            do {
                MYSQL_RES *res = mysql_store_result(t->blocking);
                if (res == NULL && mysql_errno(t->blocking)) {
                    err = 1;
                    break;
                }
                if (res && first) {
                    more_sets = 1;
                    mysql_free_result(res);
                } else if (res) {
                    first = res;
                }
                next = mysql_next_result(t->blocking);
                err = next > 0;
            } while (next == 0);
        if (err) {
            petrel_module_log(t->sql.module, PETREL_LOG_WARNING, "mysql:%s: query failed: %s", t->sql.config,
                              mysql_error(t->blocking));
            if (first)
                mysql_free_result(first);
            mysql_close(t->blocking);
            t->blocking = NULL;
            continue;
        }
        char *out = NULL;
        int status = mysql_table_result_sets_answer(t, first, more_sets, key, &out);
        if (status > 0)
            *value = petrel_pool_strdup(scratch, out);
        free(out);
        return status;
    }
    sql_table_warn_unavailable(&t->sql);
    return -1;
}

int mysql_table_blocking_lookup(void *handle, const char *key, const char **value, petrel_pool *scratch)
{
    struct table *t = handle;
    if (!table_query_eligible(&t->sql.q, key))
        return 0;
    return lookup_server(t, key, value, scratch);
}

