/*
 * tablemod: the plugin guide's "Opening tables from a module" example as a
 * test module. init opens tablemod_sender_map (any TYPE:NAME: a socketmap:
 * table from the socketmap module, an inline: table from the core); the
 * mail hook suspends, looks the sender up with petrel_table_lookup, and
 * resumes: found continues, not found rejects, a table that cannot answer
 * defers. Each answer is logged, with whether it came after
 * petrel_table_lookup had returned (it always must).
 *
 * check() verifies the table with petrel_table_check (so petreld -n refuses
 * one that does not open); fini closes it with petrel_table_close, then
 * shows that a lookup and a second close through the closed table are
 * refused (logged), not a use after free.
 */
#include <petrel/plugin.h>

static petrel_table *senders;   /* opened in init */
static int in_lookup;           /* petrel_table_lookup has not returned yet */

static int my_init(petrel_module *m, const char **error)
{
    senders = petrel_table_open(m, petrel_param_string(m, "tablemod_sender_map"), PETREL_TABLE_FOLD_CASE, error);
    return senders ? 0 : -1;
}

static int my_check(petrel_module *m)
{
    const char *spec = petrel_param_string(m, "tablemod_sender_map");
    const char *why = NULL;
    if (petrel_table_check(m, spec, &why) != 0) {
        petrel_config_error(m, "tablemod_sender_map", "%s", why);
        return -1;
    }
    return 0;
}

static void never_called(int status, const char *value, void *arg)
{
    (void)status;
    (void)value;
    (void)arg;
}

static void my_fini(petrel_module *m)
{
    petrel_table_close(senders);
    int rc = petrel_table_lookup(senders, "x", never_called, NULL);
    petrel_module_log(m, PETREL_LOG_INFO, "closed; a lookup after the close returned %d", rc);
    petrel_table_close(senders);
    senders = NULL;
}

static void sender_known(int status, const char *value, void *arg)
{
    petrel_pending *p = arg;
    petrel_session *s = petrel_pending_session(p);
    if (s)
        petrel_log(s, PETREL_LOG_INFO, "answer status=%d value=%s early=%d", status, value ? value : "(none)",
                   in_lookup);
    if (status == PETREL_TABLE_FOUND)
        petrel_resume(p, PETREL_CONTINUE, 0, NULL, NULL);
    else if (status == PETREL_TABLE_NOTFOUND)
        petrel_resume(p, PETREL_REJECT, 550, "5.7.1", "Sender unknown here");
    else   /* the table cannot answer: defer, never "unknown" */
        petrel_resume(p, PETREL_TEMPFAIL, 451, "4.3.0", "Temporary lookup failure");
}

static petrel_verdict my_mail(petrel_session *s, const char *sender)
{
    petrel_pending *p = petrel_suspend(s);
    in_lookup = 1;
    int rc = petrel_table_lookup(senders, sender, sender_known, p);
    in_lookup = 0;
    if (rc != 0)
        return PETREL_TEMPFAIL;
    return PETREL_PENDING;
}

static const petrel_param params[] = {
    { PETREL_PARAM_INIT, .name = "tablemod_sender_map", .type = PETREL_PARAM_STRING, .default_value = "",
      .help = "the table of known senders" },
    { .name = NULL },
};

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "tablemod",
    .version = "1.0",
    .description = "looks senders up in a table it opened (tests only)",
    .params = params,
    .init = my_init,
    .fini = my_fini,
    .check = my_check,
    .hooks = { .mail = my_mail },
};
