/*
 * param-readers: prints what the binding tables say (config/bind.h), for
 * t/source/test_param_tables.py and for whoever classifies parameters:
 *
 *   declared NAME TYPE           every parameter of the core schema
 *   read OWNER NAME KIND         every entry of every binding table
 *
 * Fields are separated by TABs. KIND is "bound" for a field a table fills,
 * "read" for a parameter code reads itself.
 */
#include "config.h"

#include <stdio.h>

#include "config/bind.h"
#include "config/cfg.h"
#include "master/master.h"

int main(void)
{
    static const char *const types[] = { "string", "int", "bool", "time", "size", "list", "table" };
    struct cfg_schema *schema = cfg_schema_new();
    for (size_t i = 0; i < cfg_schema_count(schema); i++) {
        const struct cfg_param *p = cfg_schema_param(schema, i);
        printf("declared\t%s\t%s\n", p->name, types[p->type]);
    }
    for (size_t t = 0; t < petrel_bind_ntables; t++) {
        const struct cfg_bind_table *table = petrel_bind_tables[t];
        for (size_t i = 0; i < table->n; i++)
            printf("read\t%s\t%s\t%s\n", table->owner, table->binds[i].name,
                   table->binds[i].kind == CFG_BIND_READ ? "read" : "bound");
    }
    cfg_schema_free(schema);
    return 0;
}
