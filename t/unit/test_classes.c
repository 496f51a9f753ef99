/*
 * Unit tests for the parameter classification (core/config/classes.c): the
 * format of parameters.txt (classes, modules, ok= and warn= values, quoted
 * values, texts, errors with their line), the built-in data, value matching
 * (case, separators, times, booleans, $names), and the check of a loaded
 * configuration: what is logged and what counts as an error.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/bind.h"
#include "config/cfg.h"
#include "config/classes.h"
#include "master/master.h"
#include "../tap.h"

static char topdir[] = "/tmp/petrel-test-classes-XXXXXX";

static struct cfg *load(const struct cfg_schema *schema, const char *main_cf)
{
    char path[700];
    snprintf(path, sizeof(path), "%s/main.cf", topdir);
    FILE *fp = fopen(path, "w");
    if (fp == NULL || fputs(main_cf, fp) < 0 || fclose(fp) != 0) {
        perror(path);
        exit(2);
    }
    int nerrors = 0;
    return cfg_load_all(schema, topdir, &nerrors);
}

static void test_parse(void)
{
    char *error = NULL;
    struct cfg_classes *c = cfg_classes_parse(
        "# a comment\n"
        "\n"
        "myhostname       -     \n"
        "biff             1.0   ignored  Petrel never notifies comsat\n"
        "soft_bounce      2.1   warn ok=no   mail is bounced\n"
        "smtpd_milters    2.3   refuse@milter ok=\"\"  mail will NOT be filtered\n"
        "tls_x            3.4   refuse ok=\">=TLSv1.2\" warn=\"!SSLv2, !SSLv3\" warn=>=TLSv1   what not\n",
        &error);
    ok(c != NULL, "a well-formed text parses");
    if (c == NULL) {
        printf("# %s\n", error);
        return;
    }
    is_int(cfg_classes_count(c), 5, "five names");
    is_str(cfg_classes_get(c, 0)->name, "biff", "sorted by name");
    const struct cfg_class *k = cfg_classes_find(c, "myhostname");
    ok(k && k->kind == CFG_CLASS_IMPLEMENTED && k->ok[0] == NULL && *k->text == '\0',
       "a name without a class is implemented");
    k = cfg_classes_find(c, "biff");
    ok(k && k->kind == CFG_CLASS_IGNORED, "ignored");
    is_str(k ? k->text : NULL, "Petrel never notifies comsat", "with its reason");
    is_str(k ? k->since : NULL, "1.0", "and its version");
    k = cfg_classes_find(c, "soft_bounce");
    ok(k && k->kind == CFG_CLASS_WARN && k->ok[0] && strcmp(k->ok[0], "no") == 0 && k->ok[1] == NULL, "warn with ok=no");
    is_str(k ? k->text : NULL, "mail is bounced", "the text follows the values");
    k = cfg_classes_find(c, "smtpd_milters");
    ok(k && k->kind == CFG_CLASS_REFUSE && k->module && strcmp(k->module, "milter") == 0, "refuse@milter");
    ok(k && k->ok[0] && *k->ok[0] == '\0', "ok=\"\" is the empty value");
    k = cfg_classes_find(c, "tls_x");
    ok(k && k->ok[0] && strcmp(k->ok[0], ">=TLSv1.2") == 0, "a quoted ok value");
    ok(k && k->warn_only[0] && strcmp(k->warn_only[0], "!SSLv2, !SSLv3") == 0 && k->warn_only[1] &&
       strcmp(k->warn_only[1], ">=TLSv1") == 0 && k->warn_only[2] == NULL, "quoted and bare warn= values");
    is_str(k ? k->text : NULL, "what not", "the text");
    ok(cfg_classes_find(c, "nothing") == NULL, "an unlisted name is not found");
    cfg_classes_free(c);

    static const struct { const char *text, *error; } bad[] = {
        { "a 1.0\nb\n", "parameters.txt:2: b: no version" },
        { "a 1.0 sometimes text\n", "parameters.txt:1: a: unknown class \"sometimes\"" },
        { "a 1.0 warn ok=1\n", "parameters.txt:1: a: warn without a text" },
        { "a 1.0\n# x\na 2.0\n", "parameters.txt:3: a: listed twice (first at line 1)" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        error = NULL;
        c = cfg_classes_parse(bad[i].text, &error);
        ok(c == NULL, "malformed data is refused (%zu)", i);
        is_str(error, bad[i].error, "naming the line");
        free(error);
        cfg_classes_free(c);
    }

    error = NULL;
    c = cfg_classes_new(&error);
    ok(c != NULL && cfg_classes_count(c) > 900, "the built-in data (parameters.txt) parses: %zu names",
       c ? cfg_classes_count(c) : 0);
    if (error)
        printf("# %s\n", error);
    free(error);
    k = c ? cfg_classes_find(c, "smtpd_milters") : NULL;
    ok(k && k->kind == CFG_CLASS_REFUSE && k->module && strcmp(k->module, "milter") == 0,
       "smtpd_milters is refused unless the milter module is loaded");
    k = c ? cfg_classes_find(c, "transport_destination_recipient_limit") : NULL;
    ok(k && k->kind == CFG_CLASS_IMPLEMENTED, "the per-transport recipient limit is implemented");
    cfg_classes_free(c);
}

static void test_matches(struct cfg_schema *schema)
{
    struct cfg *cfg = load(schema, "myhostname = mx.example.org\n");
    const char *const none[] = { NULL };
    const char *const empty[] = { "", NULL };
    const char *const tls[] = { "!SSLv2, !SSLv3", NULL };
    const char *const secs[] = { "300s", NULL };
    const char *const no[] = { "no", NULL };
    const char *const host[] = { "$myhostname", NULL };
    ok(!cfg_class_value_matches("x", none, cfg), "no values match nothing");
    ok(cfg_class_value_matches("", empty, cfg), "the empty value");
    ok(!cfg_class_value_matches("a", empty, cfg), "is only the empty value");
    ok(cfg_class_value_matches("!sslv2 !sslv3", tls, cfg), "without case, white space as commas");
    ok(cfg_class_value_matches("!SSLv2,!SSLv3", tls, cfg), "commas without spaces");
    ok(!cfg_class_value_matches("!SSLv2", tls, cfg), "but every item counts");
    ok(cfg_class_value_matches("5m", secs, cfg), "times compare in seconds (5m = 300s)");
    ok(cfg_class_value_matches("300", secs, cfg), "a bare number is seconds");
    ok(!cfg_class_value_matches("301", secs, cfg), "and 301 is not 300s");
    ok(cfg_class_value_matches("false", no, cfg), "booleans compare as booleans (false = no)");
    ok(cfg_class_value_matches("mx.example.org", host, cfg), "a $name in a value is expanded");
    ok(!cfg_class_value_matches("other.example.org", host, cfg), "and compared");
    cfg_free(cfg);
}

static int check_text(struct cfg_schema *schema, const char *main_cf)
{
    struct cfg *cfg = load(schema, main_cf);
    int errors = cfg_check_unimplemented(cfg, cfg_get_classes(cfg), petrel_bind_tables, petrel_bind_ntables);
    cfg_free(cfg);
    return errors;
}

static void test_check(struct cfg_schema *schema)
{
    is_int(check_text(schema, "myhostname = mx.example.org\nbiff = yes\n"), 0, "implemented and ignored: no error");
    is_int(check_text(schema, "soft_bounce = yes\n"), 0, "warn: no error");
    is_int(check_text(schema, "smtpd_milters = inet:127.0.0.1:1\n"), 1, "refuse: one error");
    is_int(check_text(schema, "smtpd_milters =\n"), 0, "refuse, with its ok value (empty): no error");
    is_int(check_text(schema, "smtpd_milters = inet:127.0.0.1:1\npetrel_accept_unimplemented = smtpd_milters\n"), 0,
           "refuse, accepted by petrel_accept_unimplemented: no error");
    is_int(check_text(schema, "smtpd_milters = inet:127.0.0.1:1\nmodules = milter\n"), 0,
           "refuse@milter with milter in modules: the module reads it");
    /* No built-in name has warn= values (the TLS protocol lists are
     * implemented): a refused parameter is given some here. */
    char *error = NULL;
    struct cfg_classes *own = cfg_classes_parse(
        "smtp_tls_per_site 2.3 refuse ok=\"\" warn=hash:/a   legacy per-site TLS policy is NOT applied\n", &error);
    ok(own != NULL, "a class with warn= values parses");
    free(error);
    if (own) {
        struct cfg *cfg = load(schema, "smtp_tls_per_site = hash:/a\n");
        is_int(cfg_check_unimplemented(cfg, own, petrel_bind_tables, petrel_bind_ntables), 0, "a warn= value: no error");
        cfg_free(cfg);
        cfg = load(schema, "smtp_tls_per_site = hash:/b\n");
        is_int(cfg_check_unimplemented(cfg, own, petrel_bind_tables, petrel_bind_ntables), 1, "any other value: an error");
        cfg_free(cfg);
        cfg_classes_free(own);
    }
    is_int(check_text(schema, "smtp_tls_per_site = hash:/a\nsmtp_tls_wrappermode = yes\n"), 2,
           "each refusal counts");
}

int main(void)
{
    if (mkdtemp(topdir) == NULL) {
        perror("mkdtemp");
        return 2;
    }
    struct cfg_schema *schema = cfg_schema_new();
    test_parse();
    test_matches(schema);
    test_check(schema);
    cfg_schema_free(schema);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", topdir);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", topdir);
    return done_testing();
}
