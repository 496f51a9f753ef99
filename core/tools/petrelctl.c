/*
 * petrelctl: the admin command (Postfix's postconf, postfix
 * status/stop/reload/check, postqueue/postsuper, postmap/postalias).
 * Commands that act on a running system talk to the master over its
 * control socket ($queue_directory/private/control) with the framed
 * format of lib/ipc.h; the others work on files directly.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "config/cfg.h"
#include "lib/buf.h"
#include "lib/ipc.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "master/master.h"
#include "module/module.h"
#include "tools/dkim_keygen.h"
#include "tools/map_cmd.h"
#include "tools/queue_cmd.h"

static void usage(void)
{
    fprintf(stderr,
            "usage: petrelctl [-c config_directory] COMMAND [ARGS]\n"
            "commands:\n"
            "  config [-n] [-d] [-h] [-x] [name ...]   show parameters (like postconf)\n"
            "  config name=value ...                   edit main.cf in place\n"
            "  config -X name ...                      remove parameters from main.cf\n"
            "  check                                   check the configuration (like postfix check)\n"
            "  modules                                 list the modules main.cf loads and what they provide\n"
            "  status | stop | reload                  talk to the running petreld\n"
            "  metrics                                 the running petreld's metrics (Prometheus text)\n"
            "  stats [--json]                          its figures for a person, with rates over the last minute\n"
            "  top [-b] [-n COUNT]                     petrelctl stats redrawn every second (q quits)\n"
            "  queue [list] [--json] [SELECTOR...]     list the queue (like mailq / postqueue -j)\n"
            "  queue show ID...                        show messages (like postcat -q)\n"
            "  queue delete|hold|release|requeue ID... | ALL | SELECTOR...   (like postsuper)\n"
            "  queue flush [ID... | SELECTOR...]       retry deferred mail now (like postqueue -f)\n"
            "    selectors: --sender ADDR, --recipient-domain DOMAIN, --older-than TIME,\n"
            "               --queue NAME, --reason TEXT\n"
            "  map build [-fnNprwF] [-i] [TYPE:]FILE... compile a lookup table (like postmap)\n"
            "  map query [-fF] TYPE:NAME KEY|-         look a key up (like postmap -q)\n"
            "  map dump [-F] TYPE:NAME                 list a table (like postmap -s)\n"
            "  map delete [-f] TYPE:NAME KEY|-         remove a key (like postmap -d)\n"
            "  alias build|query|dump|delete ...       the same for aliases(5) files (like postalias)\n"
            "  newaliases                              build the alias_database tables (like newaliases)\n"
            "  dkim keygen [--ed25519 | -b BITS] [-D DIR] DOMAIN SELECTOR\n"
            "                                          a DKIM key and the TXT record to publish\n"
            "  MODULE [COMMAND [--json] [ARGS]]        a loaded module's command, run by the running petreld\n"
            "                                          (petrelctl MODULE help lists them; e.g. greylist list)\n");
    exit(2);
}

/* The queue directory from main.cf, malloc'd. */
static char *queue_directory(const char *confdir)
{
    struct cfg_schema *schema = cfg_schema_new();
    char *dir = cfg_peek(schema, confdir, "queue_directory");
    cfg_schema_free(schema);
    if (dir == NULL) {
        fprintf(stderr, "petrelctl: cannot read %s/main.cf: %s\n", confdir, strerror(errno));
        exit(1);
    }
    return dir;
}

/* Sends one control request (command and its args); the reply's text goes
   to *answer (malloc'd). Returns the master's status, or -1 when it could
   not be asked (said on stderr). */
static int control_ask(const char *confdir, const char *command, int argc, char **argv, char **answer)
{
    *answer = NULL;
    char *qdir = queue_directory(confdir);
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    int too_long = (size_t)snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/private/control", qdir)
                   >= sizeof(sun.sun_path);
    if (too_long)
        fprintf(stderr, "petrelctl: queue_directory path too long: %s\n", qdir);
    free(qdir);
    if (too_long)
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
        if (fd >= 0)
            close(fd);
        if (strcmp(command, "status") == 0) {
            fprintf(stderr, "petrelctl: the Petrel mail system is not running (no answer on %s)\n", sun.sun_path);
            return -1;
        }
        if (strcmp(command, "module") == 0) {
            /* A module's command, or a typo: only the running petreld knows its modules' commands. */
            fprintf(stderr, "petrelctl: cannot run \"%s\": not a petrelctl command, and no running petreld to ask "
                    "for a module command of that name (%s: %s)\n", argc > 0 ? argv[0] : "", sun.sun_path,
                    strerror(errno));
            return -1;
        }
        fprintf(stderr, "petrelctl: cannot %s: the Petrel mail system is not running (%s: %s)\n", command,
                sun.sun_path, strerror(errno));
        return -1;
    }
    struct buf b = BUF_INIT;
    ipc_begin(&b, IPC_CTL_REQUEST);
    ipc_add_str(&b, command);
    for (int i = 0; i < argc && i < IPC_MAX_FIELDS - 1; i++)
        ipc_add_str(&b, argv[i]);
    ipc_finish(&b);
    if (ipc_write_all(fd, b.data, b.len) != 0) {
        fprintf(stderr, "petrelctl: write to %s: %s\n", sun.sun_path, strerror(errno));
        buf_free(&b);
        close(fd);
        return -1;
    }
    struct ipc_msg reply;
    if (ipc_read_frame(fd, &b, &reply) != 0 || reply.type != IPC_CTL_REPLY || reply.count < 2) {
        fprintf(stderr, "petrelctl: no valid reply from the master on %s\n", sun.sun_path);
        buf_free(&b);
        close(fd);
        return -1;
    }
    char code[16];
    snprintf(code, sizeof(code), "%.*s", (int)(reply.fields[0].len < 15 ? reply.fields[0].len : 15),
             reply.fields[0].data);
    int status = atoi(code);
    *answer = xstrndup(reply.fields[1].data, reply.fields[1].len);
    buf_free(&b);
    close(fd);
    return status;
}

/* Sends command (and args) to the running master; prints its answer. */
static int control(const char *confdir, const char *command, int argc, char **argv)
{
    char *answer;
    int status = control_ask(confdir, command, argc, argv, &answer);
    if (status < 0)
        return 1;
    size_t len = strlen(answer);
    if (len > 0 || status == 0)
        fprintf(status == 0 ? stdout : stderr, "%s%s", answer, len > 0 && answer[len - 1] == '\n' ? "" : "\n");
    free(answer);
    return status;
}

/* The terminal's width, 0 when unknown. */
static size_t terminal_columns(void)
{
    struct winsize ws;
    return ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 ? ws.ws_col : 0;
}

/* Writes text with each line cut at columns (0: as it is), so that a long
   line (a destination's last error) does not wrap and push the screen's
   top out of sight. */
static void put_screen(const char *text, size_t columns)
{
    while (*text) {
        size_t n = strcspn(text, "\n");
        fwrite(text, 1, columns && n > columns ? columns : n, stdout);
        text += n;
        if (*text == '\n') {
            putchar('\n');
            text++;
        }
    }
}

/* petrelctl top: petrelctl stats redrawn every second, like top(1): q or
   Ctrl-C ends it; -n N stops after N screens; without a terminal (or with
   -b) each screen is printed after the last, without clearing. */
static int top_main(const char *confdir, int argc, char **argv)
{
    long iterations = 0;
    int batch = !isatty(STDOUT_FILENO);
    for (int a = 0; a < argc; a++) {
        char *end;
        if (strcmp(argv[a], "-n") == 0 && a + 1 < argc && (iterations = strtol(argv[a + 1], &end, 10)) > 0 &&
            *end == '\0') {
            a++;
        } else if (strcmp(argv[a], "-b") == 0) {
            batch = 1;
        } else {
            fprintf(stderr, "petrelctl: top: usage: petrelctl top [-b] [-n COUNT]\n");
            return 2;
        }
    }
    struct termios saved;
    int raw = !batch && isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0;
    if (raw) {
        struct termios t = saved;
        t.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
        t.c_cc[VMIN] = 0;
        t.c_cc[VTIME] = 0;
        tcsetattr(STDIN_FILENO, TCSANOW, &t);
    }
    int status = 0;
    for (long n = 1; iterations == 0 || n <= iterations; n++) {
        char *answer;
        int rc = control_ask(confdir, "stats", 0, NULL, &answer);
        if (rc != 0) {
            if (rc > 0) {
                fprintf(stderr, "%s\n", answer);
                free(answer);
            }
            status = 1;
            break;
        }
        time_t now = time(NULL);
        char clock[16];
        strftime(clock, sizeof(clock), "%H:%M:%S", localtime(&now));
        printf("%spetrelctl top - %s - every 1 s, q to quit\n", batch ? "" : "\033[H\033[2J", clock);
        put_screen(answer, batch ? 0 : terminal_columns());
        putchar('\n');
        if (batch)
            putchar('\n');
        fflush(stdout);
        free(answer);
        if (iterations && n == iterations)
            break;
        struct pollfd in = { .fd = STDIN_FILENO, .events = POLLIN };
        if (poll(raw ? &in : NULL, raw ? 1 : 0, 1000) > 0) {
            char c = 0;
            if (read(STDIN_FILENO, &c, 1) == 1 && (c == 'q' || c == 'Q'))
                break;
        }
    }
    if (raw)
        tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    return status;
}

int main(int argc, char **argv)
{
    const char *confdir = getenv("MAIL_CONFIG");
    if (confdir == NULL || *confdir == '\0')
        confdir = PETREL_SYSCONFDIR;
    int i = 1;
    while (i < argc && argv[i][0] == '-') {
        if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
            confdir = argv[i + 1];
            i += 2;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage();
        } else {
            usage();
        }
    }
    if (i >= argc)
        usage();
    const char *command = argv[i];
    log_init("petrel", "petrelctl");
    if (strcmp(command, "config") == 0) {
        /* Module parameters are part of the configuration: declare them first
         * so that -d lists them and they are not "unknown". */
        struct cfg_schema *schema = cfg_schema_new();
        struct module_set *modules = module_set_load(schema, confdir);
        if (modules == NULL)
            fprintf(stderr, "petrelctl: warning: some modules could not be loaded; their parameters are not shown\n");
        int status = postconf_main(schema, confdir, argc - i, argv + i);
        cfg_schema_free(schema);
        module_set_free(modules);
        return status;
    }
    if (strcmp(command, "modules") == 0) {
        struct loaded_config conf;
        if (master_load_config(confdir, &conf, 0) != 0)
            return 1;
        struct buf out = BUF_INIT;
        module_set_describe(conf.modules, &out);
        fputs(out.data ? out.data : "", stdout);
        buf_free(&out);
        master_unload_config(&conf);
        return 0;
    }
    if (strcmp(command, "check") == 0) {
        struct master_options opts = { .confdir = confdir };
        return master_check_config(&opts);
    }
    if (strcmp(command, "queue") == 0)
        return queue_main(confdir, argc - i - 1, argv + i + 1);
    if (strcmp(command, "map") == 0 || strcmp(command, "alias") == 0)
        return map_main(confdir, strcmp(command, "alias") == 0, argc - i - 1, argv + i + 1);
    if (strcmp(command, "dkim") == 0)
        return dkim_keygen_main(confdir, argc - i - 1, argv + i + 1);
    if (strcmp(command, "newaliases") == 0)
        return newaliases_main(confdir, argc - i, argv + i);
    if (strcmp(command, "status") == 0 || strcmp(command, "stop") == 0 || strcmp(command, "reload") == 0 ||
        strcmp(command, "metrics") == 0)
        return control(confdir, command, 0, NULL);
    if (strcmp(command, "top") == 0)
        return top_main(confdir, argc - i - 1, argv + i + 1);
    if (strcmp(command, "stats") == 0) {
        int json = 0;
        for (int a = i + 1; a < argc; a++) {
            if (strcmp(argv[a], "--json") == 0)
                json = 1;
            else {
                fprintf(stderr, "petrelctl: stats: unknown option \"%s\" (only --json)\n", argv[a]);
                return 2;
            }
        }
        return control(confdir, json ? "stats-json" : "stats", 0, NULL);
    }
    /* Anything else may be a loaded module's command (petrelctl greylist
     * list): the master knows the running modules and answers unknown
     * ones itself. */
    if (argc - i > IPC_MAX_FIELDS - 2) {
        fprintf(stderr, "petrelctl: too many arguments\n");
        return 2;
    }
    return control(confdir, "module", argc - i, argv + i);
}
