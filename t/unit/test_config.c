/*
 * Unit tests for core/config: main.cf reading and expansion, typed values
 * and their error messages, master.cf columns and -o overrides, Postfix's
 * stock Debian files, and postconf-style edits. Each case writes its own
 * confdir under a temporary directory; log lines (stderr) are captured to
 * check the exact messages.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/cfg.h"
#include "lib/log.h"
#include "../tap.h"

#ifndef TEST_DATADIR
#define TEST_DATADIR "t/unit/data/config"
#endif

static char topdir[] = "/tmp/petrel-test-config-XXXXXX";
static int case_number;
static char confdir[512];
static char captured[65536];

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *fp = fopen(path, "w");
    if (!fp) {
        perror(path);
        exit(2);
    }
    fputs(text, fp);
    fclose(fp);
}

static char *read_whole(const char *path, char *out, size_t size)
{
    FILE *fp = fopen(path, "r");
    size_t n = 0;
    if (fp) {
        n = fread(out, 1, size - 1, fp);
        fclose(fp);
    }
    out[n] = '\0';
    return out;
}

/* A fresh confdir with these files (NULL: file absent). */
static const char *new_confdir(const char *main_cf, const char *master_cf)
{
    snprintf(confdir, sizeof(confdir), "%s/c%d", topdir, ++case_number);
    mkdir(confdir, 0700);
    if (main_cf)
        write_file(confdir, "main.cf", main_cf);
    if (master_cf)
        write_file(confdir, "master.cf", master_cf);
    return confdir;
}

/* Redirects fd (stderr for logs, stdout for postconf) into a file until end_capture(). */
static int saved_fd = -1, captured_fd;
static char capture_path[600];
static void begin_capture(int fd)
{
    fflush(stdout);
    snprintf(capture_path, sizeof(capture_path), "%s/capture", topdir);
    FILE *fp = fopen(capture_path, "w");
    saved_fd = dup(fd);
    captured_fd = fd;
    dup2(fileno(fp), fd);
    fclose(fp);
}

static const char *end_capture(void)
{
    fflush(stdout);
    dup2(saved_fd, captured_fd);
    close(saved_fd);
    return read_whole(capture_path, captured, sizeof(captured));
}

static struct cfg *load(const struct cfg_schema *schema, const char *main_cf, const char *master_cf,
                        int *nerrors, const char **log)
{
    new_confdir(main_cf, master_cf);
    begin_capture(2);
    struct cfg *cfg = cfg_load(schema, confdir, nerrors);
    *log = end_capture();
    return cfg;
}

static int contains(const char *haystack, const char *needle)
{
    int found = strstr(haystack, needle) != NULL;
    if (!found)
        printf("#   \"%s\" not found in:\n#   %s\n", needle, haystack);
    return found;
}

static char expect_buf[2048];
#define expect(fmt, arg) (snprintf(expect_buf, sizeof(expect_buf), fmt, arg), expect_buf)

static int list_is(const char *const *list, const char *const *want)
{
    size_t i;
    for (i = 0; want[i]; i++)
        if (!list[i] || strcmp(list[i], want[i]) != 0) {
            printf("#   item %zu: got %s, want %s\n", i, list[i] ? list[i] : "NULL", want[i]);
            return 0;
        }
    if (list[i]) {
        printf("#   extra item %s\n", list[i]);
        return 0;
    }
    return 1;
}

static void test_defaults(const struct cfg_schema *schema)
{
    int nerrors = -1;
    const char *log;
    struct cfg *cfg = load(schema, "", NULL, &nerrors, &log);
    ok(cfg != NULL, "empty main.cf loads");
    is_int(nerrors, 0, "no errors");
    is_str(log, "", "no warnings for the defaults");
    if (!cfg)
        return;
    is_int(cfg_int(cfg, "smtpd_timeout"), 300, "smtpd_timeout default 300s");
    is_int(cfg_int(cfg, "maximal_queue_lifetime"), 5 * 86400, "maximal_queue_lifetime 5d");
    is_int(cfg_int(cfg, "message_size_limit"), 10240000, "message_size_limit");
    is_int(cfg_bool(cfg, "smtputf8_enable"), 1, "smtputf8_enable yes");
    is_str(cfg_get(cfg, "smtpd_forbid_bare_newline"), "normalize", "bare newline normalize");
    is_str(cfg_get(cfg, "config_directory"), confdir, "config_directory is the confdir");
    static const char *const relay[] = { "permit_mynetworks", "permit_sasl_authenticated",
                                         "defer_unauth_destination", NULL };
    ok(list_is(cfg_list(cfg, "smtpd_relay_restrictions"), relay), "relay restrictions default");
    ok(cfg_list(cfg, "smtpd_recipient_restrictions")[0] == NULL, "recipient restrictions empty");
    ok(cfg_list(cfg, "myhostname") != NULL, "cfg_list never NULL");
    const char *host = cfg_get(cfg, "myhostname");
    ok(host && *host, "myhostname computed");
    char banner[600];
    snprintf(banner, sizeof(banner), "%s ESMTP Petrel", host);
    is_str(cfg_get(cfg, "smtpd_banner"), banner, "smtpd_banner expands");
    const char *const *mynet = cfg_list(cfg, "mynetworks");
    ok(mynet[0] && strcmp(mynet[0], "127.0.0.0/8") == 0, "mynetworks starts with loopback");
    is_str(cfg_get(cfg, "smtpd_forbid_bare_newline_exclusions"), cfg_get(cfg, "mynetworks"),
           "exclusions = $mynetworks");
    ok(cfg_is_default(cfg, "smtpd_timeout"), "smtpd_timeout is default");
    ok(cfg_get(cfg, "no_such_thing") == NULL, "unknown name is NULL");
    is_int(cfg_service_count(cfg), 17, "built-in master.cf has 17 services");
    const struct master_service *smtp = cfg_service(cfg, 0);
    is_str(smtp->name, "smtp", "first service smtp");
    is_int(smtp->type, SVC_INET, "inet");
    is_int(smtp->role, ROLE_SMTPD, "smtpd role");
    is_int(smtp->maxproc, 100, "maxproc - = default_process_limit");
    is_int(smtp->private_, 0, "private n");
    is_int(smtp->unpriv, 1, "unpriv - = y");
    is_int(smtp->chroot, 0, "chroot n");
    ok(smtp->cfg == cfg, "no overrides: service uses the main cfg");
    cfg_free(cfg);
}

static void test_lines(const struct cfg_schema *schema)
{
    int nerrors;
    const char *log;
    struct cfg *cfg = load(schema,
                           "  orphan = text\n"
                           "# a comment\n"
                           "mydestination = a.example,\n"
                           "   b.example\n"
                           "   # an indented comment inside\n"
                           "\n"
                           "\tc.example\n"
                           "   \n"
                           "myorigin=example.org   \n"
                           "smtpd_banner   =   hi # not a comment  \n"
                           "relayhost = [first]\n"
                           "relayhost = [second]:587\n",
                           NULL, &nerrors, &log);
    ok(cfg != NULL, "continuations and comments load");
    if (!cfg)
        return;
    static const char *const dest[] = { "a.example", "b.example", "c.example", NULL };
    ok(list_is(cfg_list(cfg, "mydestination"), dest), "continuation lines join");
    is_str(cfg_get(cfg, "myorigin"), "example.org", "name=value without spaces, trailing space trimmed");
    is_str(cfg_get(cfg, "relayhost"), "[second]:587", "later definition wins");
    ok(contains(log, expect("%s/main.cf:12: relayhost: overriding earlier entry at line 11", confdir)),
       "override warned with file:line");
    ok(contains(log, "ignoring text that starts with white space"), "orphan continuation warned");
    is_str(cfg_get(cfg, "smtpd_banner"), "hi # not a comment", "# inside a value is text");
    ok(cfg_get(cfg, "orphan") == NULL, "indented first line ignored");
    ok(!cfg_is_default(cfg, "myorigin"), "myorigin is set");
    cfg_free(cfg);

    cfg = load(schema, "smtpd_banner = x\njunk line without equals\n", NULL, &nerrors, &log);
    ok(cfg == NULL, "missing '=' is an error");
    ok(contains(log, expect("%s/main.cf:2: missing '=' after parameter name", confdir)), "message");
}

static void test_expansion(const struct cfg_schema *schema)
{
    int nerrors;
    const char *log;
    struct cfg *cfg = load(schema,
                           "set = hello\n"
                           "unset =\n"
                           "e1 = $set world\n"
                           "e2 = ${set}!\n"
                           "e3 = $(set)?\n"
                           "e4 = ${set?yes}|${unset?yes}\n"
                           "e5 = ${set:no}|${unset:no}\n"
                           "e6 = ${set?{on}:{off}}|${unset?{on}:{off}}\n"
                           "e7 = $$set costs $$5\n"
                           "e8 = ${set?{$set again}:{none}}\n"
                           "e9 = ${nosuchparam?x}${nosuchparam:fallback}\n"
                           "e10 = ${set?{a, b}}\n"
                           "myhostname = mx.example.com\n"
                           "smtpd_banner = $myhostname ${e1}\n"
                           "mydomain = ${myhostname}\n"
                           "relayhost = $later\n"
                           "later = defined after use\n"
                           "default_rbl_reply = $rbl_code Go away, [$rbl_what] ${rbl_reason?($rbl_reason)}\n",
                           NULL, &nerrors, &log);
    ok(cfg != NULL, "expansion forms load");
    if (!cfg)
        return;
    is_str(cfg_get(cfg, "e1"), "hello world", "$name");
    is_str(cfg_get(cfg, "e2"), "hello!", "${name}");
    is_str(cfg_get(cfg, "e3"), "hello?", "$(name)");
    is_str(cfg_get(cfg, "e4"), "yes|", "${name?value}");
    is_str(cfg_get(cfg, "e5"), "|no", "${name:value}: value only when name is empty");
    is_str(cfg_get(cfg, "e6"), "on|off", "${name?{a}:{b}}");
    is_str(cfg_get(cfg, "e7"), "$set costs $5", "$$ is a literal $");
    is_str(cfg_get(cfg, "e8"), "hello again", "chosen text is expanded");
    is_str(cfg_get(cfg, "e9"), "fallback", "undefined name in a conditional is empty");
    is_str(cfg_get(cfg, "e10"), "a, b", "${name?{text}}");
    is_str(cfg_get(cfg, "smtpd_banner"), "mx.example.com hello world", "nested expansion");
    is_str(cfg_get(cfg, "mydomain"), "mx.example.com", "braced reference");
    is_str(cfg_get(cfg, "relayhost"), "defined after use", "expansion sees later definitions");
    is_str(cfg_get_raw(cfg, "smtpd_banner"), "$myhostname ${e1}", "raw value kept");
    is_str(cfg_get(cfg, "default_rbl_reply"), "$rbl_code Go away, [$rbl_what] ${rbl_reason?($rbl_reason)}",
           "a raw parameter (default_rbl_reply) is never expanded at load time");
    ok(!strstr(log, "later: unknown parameter"), "referenced names are not unused");
    ok(!strstr(log, "undefined"), "no undefined warnings");
    cfg_free(cfg);

    cfg = load(schema, "myhostname = mail.example.net\n", NULL, &nerrors, &log);
    is_str(cfg_get(cfg, "mydomain"), "example.net", "mydomain from myhostname");
    is_str(cfg_get(cfg, "local_transport"), "local:mail.example.net", "local_transport default");
    static const char *const dest[] = { "mail.example.net", "localhost.example.net", "localhost", NULL };
    ok(list_is(cfg_list(cfg, "mydestination"), dest), "mydestination default");
    cfg_free(cfg);

    cfg = load(schema, "smtpd_banner = $nosuch x\n", NULL, &nerrors, &log);
    ok(cfg != NULL, "undefined name is not an error");
    is_str(cfg ? cfg_get(cfg, "smtpd_banner") : NULL, " x", "undefined name expands to empty");
    ok(contains(log, expect("%s/main.cf:1: smtpd_banner: undefined parameter $nosuch", confdir)),
       "undefined name warned");
    cfg_free(cfg);

    cfg = load(schema, "myorigin = $mydomain\nmydomain = ${myorigin}\nrelayhost = $self\nself = $self\n",
               NULL, &nerrors, &log);
    ok(cfg == NULL, "expansion loop is an error");
    ok(contains(log, "parameter expansion loop: mydomain -> myorigin -> mydomain"), "loop chain named");
    ok(contains(log, "self: parameter expansion loop: self -> self"), "self loop named");
    ok(contains(log, expect("%s/main.cf:1: myorigin:", confdir)), "loop reported with file:line");

    /* mydomain's default is computed from myhostname: a myhostname that
     * names $mydomain is a loop too (it recursed until the stack ran out). */
    cfg = load(schema, "myhostname = mx.$mydomain\n", NULL, &nerrors, &log);
    ok(cfg == NULL, "myhostname = x.$mydomain with mydomain's computed default: a loop, an error");
    ok(contains(log, "myhostname: parameter expansion loop: myhostname -> mydomain"), "that loop named");

    cfg = load(schema, "smtpd_banner = ${myhostname\nrelayhost = ${bad name}\n", NULL, &nerrors, &log);
    ok(cfg == NULL, "bad syntax is an error");
    ok(contains(log, "smtpd_banner: missing '}'"), "unterminated ${");
    ok(contains(log, "relayhost: bad parameter name"), "bad name in ${}");
    is_int(nerrors, 2, "both errors counted");
}

static void test_lists(const struct cfg_schema *schema)
{
    int nerrors;
    const char *log;
    char main_cf[2048];
    new_confdir(NULL, NULL);
    write_file(confdir, "nets", "# trusted\n192.168.0.0/16 172.16.0.0/12\n\n  [::1]/128, 10.1.0.0/16 # lab\n");
    snprintf(main_cf, sizeof(main_cf),
             "mynetworks = 10.0.0.0/8, %s/nets\n"
             "smtpd_client_restrictions = check_client_access { inline:{ 1.2.3.4=REJECT } },\n"
             "    {permit_mynetworks}  ,,reject\n"
             "smtpd_recipient_restrictions = { check_policy_service { unix:private/policy, default_action=DUNNO } }\n",
             confdir);
    struct cfg *cfg = load(schema, main_cf, NULL, &nerrors, &log);
    ok(cfg != NULL, "lists load");
    if (!cfg)
        return;
    static const char *const nets[] = { "10.0.0.0/8", "192.168.0.0/16", "172.16.0.0/12", "[::1]/128",
                                        "10.1.0.0/16", NULL };
    ok(list_is(cfg_list(cfg, "mynetworks"), nets), "/file items read into the list");
    static const char *const client[] = { "check_client_access", "inline:{ 1.2.3.4=REJECT }",
                                          "permit_mynetworks", "reject", NULL };
    ok(list_is(cfg_list(cfg, "smtpd_client_restrictions"), client), "braces group and are stripped");
    static const char *const rcpt[] = { "check_policy_service { unix:private/policy, default_action=DUNNO }",
                                        NULL };
    ok(list_is(cfg_list(cfg, "smtpd_recipient_restrictions"), rcpt), "nested braces keep inner ones");
    ok(list_is(cfg_list(cfg, "smtpd_forbid_bare_newline_exclusions"), nets), "$mynetworks file too");
    cfg_free(cfg);

    cfg = load(schema, "mydestination = localhost, /nonexistent/domains\n", NULL, &nerrors, &log);
    ok(cfg == NULL, "unreadable list file is an error");
    ok(contains(log, expect("%s/main.cf:1: mydestination: cannot open \"/nonexistent/domains\": "
                            "No such file or directory", confdir)), "error names the file");

    cfg = load(schema, "alias_maps = hash:/etc/aliases, /etc/aliases\n", NULL, &nerrors, &log);
    ok(cfg == NULL, "table without type is an error");
    ok(contains(log, "alias_maps: bad lookup table \"/etc/aliases\" (expected type:name)"), "message");

    cfg = load(schema, "virtual_maps = nottable\n", NULL, &nerrors, &log);
    ok(cfg == NULL, "bad value reached through a default is an error");
    ok(contains(log, expect("%s/main.cf: virtual_alias_maps (not set in main.cf: its default value "
                            "\"$virtual_maps\"): bad lookup table \"nottable\"", confdir)),
       "default's error names main.cf and the parameter, and says it is the default");
}

static void test_types(const struct cfg_schema *schema)
{
    int nerrors;
    const char *log;
    struct cfg *cfg = load(schema,
                           "smtpd_timeout = 2m\n"
                           "maximal_queue_lifetime = 2\n"
                           "minimal_backoff_time = 1w\n"
                           "smtpd_helo_required = YES\n"
                           "disable_vrfy_command = true\n"
                           "smtputf8_enable = False\n"
                           "message_size_limit = 0\n"
                           "smtpd_recipient_limit = 5000\n"
                           "smtpd_forbid_bare_newline = Reject\n",
                           NULL, &nerrors, &log);
    ok(cfg != NULL, "good typed values load");
    if (cfg) {
        is_int(cfg_int(cfg, "smtpd_timeout"), 120, "time with unit m");
        is_int(cfg_int(cfg, "maximal_queue_lifetime"), 2 * 86400, "bare number takes the default unit d");
        is_int(cfg_int(cfg, "minimal_backoff_time"), 7 * 86400, "time with unit w");
        is_int(cfg_bool(cfg, "smtpd_helo_required"), 1, "YES");
        is_int(cfg_bool(cfg, "disable_vrfy_command"), 1, "true");
        is_int(cfg_bool(cfg, "smtputf8_enable"), 0, "False");
        is_int(cfg_int(cfg, "message_size_limit"), 0, "size 0");
        is_int(cfg_int(cfg, "smtpd_recipient_limit"), 5000, "int");
        cfg_free(cfg);
    }

    cfg = load(schema,
               "smtpd_timeout = 5x\n"
               "smtpd_helo_required = maybe\n"
               "message_size_limit = 10k\n"
               "smtpd_recipient_limit = abc\n"
               "smtpd_hard_error_limit = 0\n"
               "reject_code = 600\n"
               "smtpd_forbid_bare_newline = sometimes\n"
               "queue_run_delay = -5s\n"
               "bad_ref = 12q\n"
               "smtpd_error_sleep_time = $bad_ref\n",
               NULL, &nerrors, &log);
    ok(cfg == NULL, "bad typed values fail the load");
    /* Ten: postscreen_helo_required = $smtpd_helo_required inherits "maybe". */
    is_int(nerrors, 10, "every error is reported, not just the first");
    ok(contains(log, "postscreen_helo_required (not set in main.cf: its default value \"$smtpd_helo_required\"): "
                     "bad boolean value \"maybe\""),
       "a parameter whose default names a bad one is reported too");
    const char *p = confdir;
    ok(contains(log, expect("%s/main.cf:1: smtpd_timeout: bad time value \"5x\"", p)), "bad time");
    ok(contains(log, expect("%s/main.cf:2: smtpd_helo_required: bad boolean value \"maybe\"", p)), "bad bool");
    ok(contains(log, expect("%s/main.cf:3: message_size_limit: bad size value \"10k\"", p)), "bad size");
    ok(contains(log, expect("%s/main.cf:4: smtpd_recipient_limit: bad integer value \"abc\"", p)), "bad int");
    ok(contains(log, expect("%s/main.cf:5: smtpd_hard_error_limit: value \"0\" is below the minimum 1", p)),
       "below minimum");
    ok(contains(log, expect("%s/main.cf:6: reject_code: value \"600\" is above the maximum 599", p)),
       "above maximum");
    ok(contains(log, expect("%s/main.cf:7: smtpd_forbid_bare_newline: bad value \"sometimes\" "
                            "(expected one of: normalize, yes, reject, no)", p)), "bad choice");
    ok(contains(log, expect("%s/main.cf:8: queue_run_delay: bad time value \"-5s\"", p)), "negative time");
    ok(contains(log, expect("%s/main.cf:10: smtpd_error_sleep_time: bad time value \"12q\"", p)),
       "value reached through $name is checked at the parameter");
    ok(contains(log, "error: "), "errors are logged as errors");
}

static void test_unknown(const struct cfg_schema *schema)
{
    int nerrors;
    const char *log;
    struct cfg *cfg = load(schema,
                           "smtpd_timout = 10s\n"
                           "mua_client_restrictions = permit_sasl_authenticated, reject\n"
                           "smtpd_client_restrictions = $mua_client_restrictions\n"
                           "mua_sender_restrictions = reject_unknown_sender_domain\n"
                           "completely_unrelated_name = 1\n",
                           "submission inet n - n - - smtpd\n"
                           "  -o smtpd_sender_restrictions=$mua_sender_restrictions\n",
                           &nerrors, &log);
    ok(cfg != NULL, "unknown parameters are not errors");
    ok(contains(log, expect("warning: %s/main.cf:1: smtpd_timout: unknown parameter; "
                            "did you mean \"smtpd_timeout\"?", confdir)), "suggestion");
    ok(contains(log, expect("%s/main.cf:5: completely_unrelated_name: unknown parameter\n", confdir)),
       "no suggestion when nothing is close");
    ok(!strstr(log, "mua_client_restrictions:"), "name used in main.cf is not warned about");
    ok(!strstr(log, "mua_sender_restrictions:"), "name used in master.cf -o is not warned about");
    is_str(cfg ? cfg_get(cfg, "smtpd_timout") : NULL, "10s", "unknown name still readable");
    cfg_free(cfg);
}

static void test_master(const struct cfg_schema *schema)
{
    int nerrors;
    const char *log;
    struct cfg *cfg = load(schema,
                           "myhostname = mx.example.com\n"
                           "mua_client_restrictions = permit_sasl_authenticated, reject\n"
                           "default_process_limit = 42\n",
                           "# comment\n"
                           "smtp inet n - n - - smtpd\n"
                           "submission inet n - n - - smtpd\n"
                           "  -o syslog_name=petrel/submission\n"
                           "#  -o commented=out\n"
                           "  -o { smtpd_banner = $myhostname submission ready }\n"
                           "  -o smtpd_timeout=60\n"
                           "  -o smtpd_client_restrictions=$mua_client_restrictions\n"
                           "  -osmtpd_tls_security_level=encrypt\n"
                           "127.0.0.1:2525 inet n y y 10? 5 smtpd -v\n"
                           "[::1]:2526 inet n - n - 0 smtpd\n"
                           "mypipe unix - n n - - pipe flags=R user=x argv=/bin/cat ${recipient}\n",
                           &nerrors, &log);
    ok(cfg != NULL, "master.cf with overrides loads");
    if (!cfg)
        return;
    is_int(cfg_service_count(cfg), 5, "five services");
    const struct master_service *sub = cfg_service(cfg, 1);
    is_str(sub->name, "submission", "submission");
    ok(sub->cfg != cfg, "overrides give the service its own cfg");
    is_int(sub->line, 3, "service line number");
    is_str(cfg_get(sub->cfg, "syslog_name"), "petrel/submission", "-o name=value");
    is_str(cfg_get(sub->cfg, "smtpd_banner"), "mx.example.com submission ready", "-o { name = value }");
    is_int(cfg_int(sub->cfg, "smtpd_timeout"), 60, "override typed and validated");
    is_str(cfg_get(sub->cfg, "smtpd_tls_security_level"), "encrypt", "-oname=value");
    static const char *const client[] = { "permit_sasl_authenticated", "reject", NULL };
    ok(list_is(cfg_list(sub->cfg, "smtpd_client_restrictions"), client), "override expands main.cf names");
    ok(!cfg_is_default(sub->cfg, "smtpd_timeout"), "override is not default");
    is_str(cfg_get(sub->cfg, "service_name"), "submission", "$service_name set");
    is_str(cfg_get(sub->cfg, "myhostname"), "mx.example.com", "inherited values");
    is_int(cfg_int(cfg, "smtpd_timeout"), 300, "main cfg untouched");
    is_str(cfg_get(cfg, "syslog_name"), "petrel", "main syslog_name untouched");
    is_int(cfg_service_count(sub->cfg), 5, "services visible from a service cfg");
    static const char *const sub_argv[] = { "smtpd", NULL };
    ok(list_is(sub->argv, sub_argv), "-o pairs removed from argv");
    const char *file;
    int line;
    cfg_origin(sub->cfg, "smtpd_timeout", &file, &line);
    ok(file && strstr(file, "master.cf") && line == 3, "override origin is master.cf:3");

    const struct master_service *local = cfg_service(cfg, 2);
    is_str(local->name, "127.0.0.1:2525", "host:port service name as written");
    is_int(local->maxproc, 5, "maxproc");
    is_int(local->wakeup, 10, "wakeup");
    is_int(local->wakeup_if_used, 1, "wakeup ?");
    is_int(local->unpriv, 1, "unpriv y");
    is_int(local->chroot, 1, "chroot y");
    static const char *const local_argv[] = { "smtpd", "-v", NULL };
    ok(list_is(local->argv, local_argv), "argv keeps other args");
    ok(local->cfg == cfg, "no overrides: main cfg");
    is_str(cfg_service(cfg, 3)->name, "[::1]:2526", "IPv6 service name");
    is_int(cfg_service(cfg, 3)->maxproc, 0, "maxproc 0 = unlimited");
    is_int(cfg_service(cfg, 0)->maxproc, 42, "maxproc - = default_process_limit");
    const struct master_service *pipe = cfg_service(cfg, 4);
    is_int(pipe->role, ROLE_PIPE, "pipe role");
    static const char *const pipe_argv[] = { "pipe", "flags=R", "user=x", "argv=/bin/cat", "${recipient}", NULL };
    ok(list_is(pipe->argv, pipe_argv), "pipe args kept unexpanded");
    cfg_free(cfg);

    cfg = load(schema, "",
               "smtp inet n - n - - smtpd\n"
               "short inet n - n -\n"
               "x tcp n - n - - smtpd\n"
               "y unix q - n - - smtpd\n"
               "z unix - - n abc - smtpd\n"
               "w unix - - n - many smtpd\n"
               "v unix - - n - - frobnicate\n"
               "smtp inet n - n - - smtpd\n"
               "sub inet n - n - - smtpd -o smtpd_timeout=5x -o novalue\n",
               &nerrors, &log);
    ok(cfg == NULL, "bad master.cf fails");
    is_int(nerrors, 9, "every master.cf error reported");
    const char *p = confdir;
    ok(contains(log, expect("%s/master.cf:2: short: wrong number of columns (6; expected at least 8", p)),
       "column count");
    ok(contains(log, expect("%s/master.cf:3: x: bad service type \"tcp\"", p)), "bad type");
    ok(contains(log, expect("%s/master.cf:4: y: bad private field \"q\" (expected y, n or -)", p)), "bad y/n");
    ok(contains(log, expect("%s/master.cf:5: z: bad wakeup field \"abc\"", p)), "bad wakeup");
    ok(contains(log, expect("%s/master.cf:6: w: bad maxproc field \"many\"", p)), "bad maxproc");
    ok(contains(log, expect("%s/master.cf:7: v: unknown command \"frobnicate\"", p)), "unknown command");
    ok(contains(log, expect("%s/master.cf:8: smtp: duplicate service definition (first at line 1)", p)),
       "duplicate");
    ok(contains(log, expect("%s/master.cf:9: smtpd_timeout: bad time value \"5x\"", p)), "bad -o value");
    ok(contains(log, expect("%s/master.cf:9: sub: bad -o option \"novalue\"", p)), "bad -o syntax");

    cfg = load(schema, "myhostname = a.example.com\n",
               "smtp inet n - n - - smtpd -o myhostname=mx.example.org\n", &nerrors, &log);
    is_str(cfg ? cfg_get(cfg_service(cfg, 0)->cfg, "mydomain") : NULL, "example.org",
           "defaults derived from an overridden value are recomputed");
    is_str(cfg ? cfg_get(cfg, "mydomain") : NULL, "example.com", "main mydomain unchanged");
    cfg_free(cfg);

    cfg = load(schema, "syslog_name = petrel/$service_name\n",
               "smtp inet n - n - - smtpd\nqmgr unix n - n 300 1 qmgr\n", &nerrors, &log);
    ok(cfg != NULL, "main.cf using $service_name loads");
    if (cfg) {
        is_str(cfg_get(cfg_service(cfg, 0)->cfg, "syslog_name"), "petrel/smtp", "per-service $service_name");
        is_str(cfg_get(cfg_service(cfg, 1)->cfg, "syslog_name"), "petrel/qmgr", "second service");
        is_str(cfg_get(cfg_service(cfg, 1)->cfg, "process_name"), "qmgr", "$process_name");
        cfg_free(cfg);
    }
}

/* Postfix's stress parameter: public smtpd services get a second
 * configuration evaluated with stress=yes (what their sessions use while the
 * service is at its limit); main.cf and -o values may say ${stress?...}. */
static void test_stress(const struct cfg_schema *schema)
{
    int nerrors;
    const char *log;
    struct cfg *cfg = load(schema,
                           "smtpd_soft_error_limit = ${stress?{3}:{9}}\n",
                           "smtp inet n - n - - smtpd\n"
                           "sub inet n - n - 20 smtpd -o smtpd_timeout=${stress?{4}:{40}}s -o smtpd_recipient_limit=7\n"
                           "one inet n - n - 1 smtpd\n"
                           "qmgr unix n - n 300 1 qmgr\n",
                           &nerrors, &log);
    ok(cfg != NULL, "a configuration with ${stress?...} loads");
    if (!cfg)
        return;
    is_str(cfg_get(cfg, "stress"), "", "stress is empty normally");
    is_int(cfg_int(cfg, "smtpd_timeout"), 300, "default smtpd_timeout without stress: 300");
    is_int(cfg_int(cfg, "smtpd_hard_error_limit"), 20, "default smtpd_hard_error_limit without stress: 20");
    is_int(cfg_int(cfg, "smtpd_junk_command_limit"), 100, "default smtpd_junk_command_limit without stress: 100");
    const struct master_service *smtp = cfg_service(cfg, 0);
    ok(smtp->stress_cfg != NULL && smtp->stress_cfg != smtp->cfg, "smtp has a stress configuration");
    if (smtp->stress_cfg) {
        is_str(cfg_get(smtp->stress_cfg, "stress"), "yes", "stress = yes in it");
        is_int(cfg_int(smtp->stress_cfg, "smtpd_timeout"), 10, "Postfix's default under stress: smtpd_timeout 10s");
        is_int(cfg_int(smtp->stress_cfg, "smtpd_hard_error_limit"), 1, "smtpd_hard_error_limit 1");
        is_int(cfg_int(smtp->stress_cfg, "smtpd_junk_command_limit"), 1, "smtpd_junk_command_limit 1");
        is_int(cfg_int(smtp->stress_cfg, "smtpd_soft_error_limit"), 3, "main.cf's own ${stress?{3}:{9}}");
        is_str(cfg_get(smtp->stress_cfg, "myhostname"), cfg_get(cfg, "myhostname"), "other values unchanged");
    }
    is_int(cfg_int(smtp->cfg, "smtpd_soft_error_limit"), 9, "and 9 without stress");
    if (smtp->stress_cfg) {
        static const char *const differing[] = { "stress", "smtpd_timeout", "smtpd_hard_error_limit",
                                                 "smtpd_junk_command_limit", "smtpd_soft_error_limit",
                                                 "postscreen_greet_wait", "postscreen_command_time_limit",
                                                 "smtpd_starttls_timeout", "smtpd_per_record_deadline", NULL };
        static const char *const fewer[] = { "stress", "smtpd_timeout", NULL };
        ok(cfg_same_except(smtp->cfg, smtp->stress_cfg, differing), "cfg_same_except: only those values differ");
        ok(!cfg_same_except(smtp->cfg, smtp->stress_cfg, fewer), "cfg_same_except: others differ too");
    }
    const struct master_service *sub = cfg_service(cfg, 1);
    ok(sub->stress_cfg && sub->stress_cfg != sub->cfg, "a service with -o gets its own stress configuration");
    if (sub->stress_cfg) {
        is_int(cfg_int(sub->stress_cfg, "smtpd_timeout"), 4, "-o smtpd_timeout=${stress?{4}:{40}}s under stress");
        is_int(cfg_int(sub->stress_cfg, "smtpd_recipient_limit"), 7, "its other -o values stay");
    }
    is_int(cfg_int(sub->cfg, "smtpd_timeout"), 40, "and 40 s without stress");
    ok(cfg_service(cfg, 2)->stress_cfg == NULL, "maxproc 1: never under stress (Postfix)");
    ok(cfg_service(cfg, 3)->stress_cfg == NULL, "not an smtpd service: no stress configuration");
    cfg_free(cfg);

    cfg = load(schema, "smtpd_timeout = 60s\nsmtpd_hard_error_limit = 5\nsmtpd_junk_command_limit = 5\n"
               "postscreen_greet_wait = 6s\npostscreen_command_time_limit = 300s\n"
               "smtpd_starttls_timeout = 60s\nsmtpd_per_record_deadline = no\n",
               "smtp inet n - n - - smtpd\n", &nerrors, &log);
    ok(cfg && cfg_service(cfg, 0)->stress_cfg == cfg_service(cfg, 0)->cfg,
       "nothing refers to $stress: the stress configuration is the normal one");
    cfg_free(cfg);

    cfg = load(schema, "smtpd_timeout = ${stress?{soon}:{300}}s\n", "smtp inet n - n - - smtpd\n", &nerrors, &log);
    ok(cfg == NULL, "a value that is bad only under stress fails the load");
    ok(contains(log, expect("%s/main.cf:1: smtpd_timeout: bad time value \"soons\"", confdir)),
       "and names main.cf, its line and the value stress gives");
}

static void copy_fixture(const char *fixture, const char *dir, const char *name)
{
    char path[1024];
    static char text[65536];
    snprintf(path, sizeof(path), "%s/%s", TEST_DATADIR, fixture);
    read_whole(path, text, sizeof(text));
    write_file(dir, name, text);
}

static void test_debian(const struct cfg_schema *schema)
{
    int nerrors = -1;
    new_confdir(NULL, NULL);
    /* Only the path of /etc/mailname changes (Debian's myorigin file). */
    char path[1024], mailname[1024];
    static char text[65536], edited[65536 + 1024];
    snprintf(path, sizeof(path), "%s/main.cf.debian", TEST_DATADIR);
    read_whole(path, text, sizeof(text));
    snprintf(mailname, sizeof(mailname), "%s/mailname", confdir);
    const char *at = strstr(text, "\nmyorigin = /etc/mailname\n");
    ok(at != NULL, "Debian's main.cf sets myorigin = /etc/mailname");
    if (at == NULL)
        return;
    snprintf(edited, sizeof(edited), "%.*s\nmyorigin = %s\n%s", (int)(at - text), text, mailname,
             at + strlen("\nmyorigin = /etc/mailname\n"));
    write_file(confdir, "main.cf", edited);
    write_file(confdir, "mailname", "mail.example.com\n");
    copy_fixture("master.cf.debian", confdir, "master.cf");
    begin_capture(2);
    struct cfg *cfg = cfg_load(schema, confdir, &nerrors);
    const char *log = end_capture();
    ok(cfg != NULL, "Debian's stock main.cf and master.cf load");
    is_int(nerrors, 0, "without errors");
    is_str(log, "", "without warnings");
    if (!cfg)
        return;
    is_int(cfg_service_count(cfg), 31, "31 services");
    is_str(cfg_get(cfg, "smtpd_banner"), "mail.example.com ESMTP Petrel (Debian/GNU)", "banner");
    is_int(cfg_int(cfg, "mailbox_size_limit"), 0, "mailbox_size_limit");
    is_str(cfg_get(cfg, "myorigin"), "mail.example.com", "myorigin: the first line of the mailname file");
    static const char *const dest[] = { "mail.example.com", "mail.example.com", "localhost.example.com",
                                        "localhost", NULL };
    ok(list_is(cfg_list(cfg, "mydestination"), dest), "empty list items skipped");
    int seen_relay = 0, seen_postlog = 0, seen_maildrop = 0, seen_tlsmgr = 0, seen_smtp = 0;
    for (size_t i = 0; i < cfg_service_count(cfg); i++) {
        const struct master_service *s = cfg_service(cfg, i);
        if (strcmp(s->name, "relay") == 0) {
            seen_relay = s->role == ROLE_SMTP
                && strcmp(cfg_get(s->cfg, "syslog_name"), "postfix/relay") == 0;
        } else if (strcmp(s->name, "postlog") == 0) {
            seen_postlog = s->type == SVC_UNIX_DGRAM && s->role == ROLE_IGNORED && s->maxproc == 1;
        } else if (strcmp(s->name, "maildrop") == 0) {
            static const char *const argv[] = { "pipe", "flags=DRXhu", "user=vmail", "argv=/usr/bin/maildrop",
                                                "-d", "${recipient}", NULL };
            seen_maildrop = s->role == ROLE_PIPE && list_is(s->argv, argv);
        } else if (strcmp(s->name, "tlsmgr") == 0) {
            seen_tlsmgr = s->wakeup == 1000 && s->wakeup_if_used && s->role == ROLE_IGNORED;
        } else if (strcmp(s->name, "smtp") == 0 && s->type == SVC_INET) {
            seen_smtp = s->chroot == 1 && s->role == ROLE_SMTPD && s->cfg == cfg;
        }
    }
    ok(seen_relay, "relay: smtp role, syslog_name from ${multi_instance_name?...}/$service_name");
    ok(seen_postlog, "postlog: unix-dgram, ignored role");
    ok(seen_maildrop, "maildrop: pipe with continuation args");
    ok(seen_tlsmgr, "tlsmgr: wakeup 1000?");
    ok(seen_smtp, "smtp inet: chroot y, smtpd");
    cfg_free(cfg);
}

static void test_schema(void)
{
    struct cfg_schema *schema = cfg_schema_new();
    static const struct cfg_param mod[] = {
        { .name = "greylist_delay", .type = CFG_TIME, .def = "5m", .help = "delay", .min = 1 },
        { .name = "greylist_redis", .type = CFG_STR, .def = "", .help = "redis" },
    };
    static const struct cfg_param dup[] = {
        { .name = "smtpd_timeout", .type = CFG_TIME, .def = "1s", .help = "dup" },
    };
    is_int(cfg_schema_add(schema, mod, 2, "greylist"), 0, "module adds parameters");
    begin_capture(2);
    int rc = cfg_schema_add(schema, dup, 1, "evil");
    end_capture();
    is_int(rc, -1, "duplicate name refused");
    ok(cfg_schema_find(schema, "greylist_delay") == &mod[0], "find module parameter");
    is_str(cfg_schema_owner(schema, "greylist_delay"), "greylist", "owner");
    is_str(cfg_schema_owner(schema, "smtpd_timeout"), "core", "core owner");
    int nerrors;
    const char *log;
    struct cfg *cfg = load(schema, "greylist_delay = 2\n", NULL, &nerrors, &log);
    is_int(cfg ? cfg_int(cfg, "greylist_delay") : -1, 120, "module time default unit from its default (m)");
    cfg_free(cfg);
    char *peek = cfg_peek(schema, confdir, "greylist_delay");
    is_str(peek, "2", "cfg_peek");
    free(peek);
    cfg_schema_free(schema);
}

static const char *run_postconf(const struct cfg_schema *schema, int argc, char **argv)
{
    begin_capture(1);
    postconf_main(schema, confdir, argc, argv);
    return end_capture();
}

static void test_postconf(const struct cfg_schema *schema)
{
    new_confdir("# top comment\n"
                "myhostname = old.example\n"
                "mydestination = a,\n"
                "    b\n"
                "# keep me\n"
                "relayhost =\n"
                "smtpd_banner = one\n"
                "  # indented comment in the value\n"
                "  continued\n"
                "smtpd_banner = duplicate\n"
                "last_line = no newline", NULL);
    char *edit_args[] = { "config", "mydestination=x, y", "smtpd_banner = $myhostname hi",
                          "newparam=1", "other =", NULL };
    is_int(postconf_main(schema, confdir, 5, edit_args), 0, "edit succeeds");
    char path[600], text[4096];
    snprintf(path, sizeof(path), "%s/main.cf", confdir);
    is_str(read_whole(path, text, sizeof(text)),
           "# top comment\n"
           "myhostname = old.example\n"
           "mydestination = x, y\n"
           "# keep me\n"
           "relayhost =\n"
           "smtpd_banner = $myhostname hi\n"
           "last_line = no newline\n"
           "newparam = 1\n"
           "other =\n",
           "edits keep comments and order, replace continuations, drop duplicates, append new names");

    char *show_n[] = { "config", "-n", NULL };
    is_str(run_postconf(schema, 2, show_n),
           "last_line = no newline\n"
           "mydestination = x, y\n"
           "myhostname = old.example\n"
           "newparam = 1\n"
           "other =\n"
           "relayhost =\n"
           "smtpd_banner = $myhostname hi\n", "-n lists main.cf settings, raw, sorted");
    char *show_x[] = { "config", "-x", "smtpd_banner", "smtpd_timeout", NULL };
    is_str(run_postconf(schema, 4, show_x), "smtpd_banner = old.example hi\nsmtpd_timeout = 300s\n",
           "-x expands; selected names");
    char *show_h[] = { "config", "-h", "myhostname", NULL };
    is_str(run_postconf(schema, 3, show_h), "old.example\n", "-h prints the value only");
    char *show_d[] = { "config", "-d", "smtpd_banner", "maximal_queue_lifetime", NULL };
    is_str(run_postconf(schema, 4, show_d),
           "smtpd_banner = $myhostname ESMTP $mail_name\nmaximal_queue_lifetime = 5d\n", "-d defaults");
    char *show_all[] = { "config", NULL };
    const char *all = run_postconf(schema, 1, show_all);
    ok(strstr(all, "\nsmtpd_timeout = ${stress?{10}:{300}}s\n") && strstr(all, "\nnewparam = 1\n"),
       "no args: every parameter (raw, as postconf prints them)");

    char *remove_args[] = { "config", "-X", "relayhost", "newparam", NULL };
    is_int(postconf_main(schema, confdir, 4, remove_args), 0, "-X succeeds");
    read_whole(path, text, sizeof(text));
    ok(!strstr(text, "relayhost") && !strstr(text, "newparam") && strstr(text, "# keep me\n"), "-X removes");

    new_confdir(NULL, NULL);
    char *create_args[] = { "config", "-e", "myhostname=new.example", NULL };
    is_int(postconf_main(schema, confdir, 3, create_args), 0, "edit creates a missing main.cf");
    snprintf(path, sizeof(path), "%s/main.cf", confdir);
    is_str(read_whole(path, text, sizeof(text)), "myhostname = new.example\n", "created content");
    char *bad_args[] = { "config", "-e", "novalue", NULL };
    begin_capture(2);
    int rc = postconf_main(schema, confdir, 3, bad_args);
    end_capture();
    is_int(rc, 1, "edit without = fails");
    /* A line break would write a second parameter (or text that joins this
     * value): refused, and main.cf stays as it was. */
    char *newline_args[] = { "config", "smtpd_banner = hi\nmynetworks = 0.0.0.0/0", NULL };
    begin_capture(2);
    rc = postconf_main(schema, confdir, 2, newline_args);
    end_capture();
    is_int(rc, 1, "a value with a line break is refused");
    is_str(read_whole(path, text, sizeof(text)), "myhostname = new.example\n", "and main.cf is unchanged");
}

/* postscreen_dnsbl_max_ttl: hours by default (its default's unit), and the
 * old postscreen_dnsbl_ttl (Postfix 2.8-3.0) decides it, with or without a
 * unit, as in Postfix. */
static void test_dnsbl_ttl(const struct cfg_schema *schema)
{
    static const struct {
        const char *main_cf;
        long long seconds;
        const char *what;
    } cases[] = {
        { "", 3600, "postscreen_dnsbl_max_ttl default: 1h" },
        { "postscreen_dnsbl_max_ttl = 2\n", 2 * 3600, "a bare number is hours (Postfix's default unit here)" },
        { "postscreen_dnsbl_max_ttl = 90s\n", 90, "with a unit" },
        { "postscreen_dnsbl_ttl = 2h\n", 2 * 3600, "the old postscreen_dnsbl_ttl with a unit decides it" },
        { "postscreen_dnsbl_ttl = 30m\n", 1800, "in minutes" },
        { "postscreen_dnsbl_ttl = 3\n", 3 * 3600, "without a unit: hours" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int nerrors = -1;
        const char *log;
        struct cfg *cfg = load(schema, cases[i].main_cf, NULL, &nerrors, &log);
        ok(cfg != NULL && nerrors == 0, "case %zu loads without errors", i + 1);
        if (cfg == NULL) {
            printf("#   %s\n", log);
            continue;
        }
        is_int(cfg_int(cfg, "postscreen_dnsbl_max_ttl"), cases[i].seconds, "%s", cases[i].what);
        cfg_free(cfg);
    }
    /* postscreen's other old names decide the new ones, as in Postfix. */
    int nerrors = -1;
    const char *log;
    struct cfg *cfg = load(schema,
                           "postscreen_dnsbl_whitelist_threshold = -2\n"
                           "postscreen_whitelist_interfaces = !192.0.2.8 static:all\n"
                           "postscreen_blacklist_action = drop\n",
                           NULL, &nerrors, &log);
    ok(cfg != NULL && nerrors == 0, "postscreen's old names load");
    if (cfg) {
        is_int(cfg_int(cfg, "postscreen_dnsbl_allowlist_threshold"), -2, "postscreen_dnsbl_whitelist_threshold");
        is_str(cfg_get(cfg, "postscreen_allowlist_interfaces"), "!192.0.2.8 static:all",
               "postscreen_whitelist_interfaces");
        is_str(cfg_get(cfg, "postscreen_denylist_action"), "drop", "postscreen_blacklist_action");
        cfg_free(cfg);
    }
}

int main(void)
{
    if (!mkdtemp(topdir)) {
        perror("mkdtemp");
        return 2;
    }
    log_init("petrel", "test");
    struct cfg_schema *schema = cfg_schema_new();
    test_defaults(schema);
    test_lines(schema);
    test_expansion(schema);
    test_lists(schema);
    test_types(schema);
    test_dnsbl_ttl(schema);
    test_unknown(schema);
    test_master(schema);
    test_stress(schema);
    test_debian(schema);
    test_schema();
    test_postconf(schema);
    cfg_schema_free(schema);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", topdir);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", topdir);
    return done_testing();
}
