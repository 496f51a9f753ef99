/*
 * cmdmod: control commands (ABI 1.1 petrel_command) that exercise the
 * core's side of them: an answer inside run, one after a timer, none at
 * all (the deadline, then a late answer through the stale handle), two
 * answers, a worker that dies mid-command, and an answer past the size
 * limit. Built twice: as badcmdmod (-DCMDMOD_BAD) it declares a command
 * twice, which the loader must refuse.
 */
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <petrel/plugin.h>

#ifdef CMDMOD_BAD
#define CMDMOD_NAME "badcmdmod"
#else
#define CMDMOD_NAME "cmdmod"
#endif

static void cmd_echo(petrel_command_request *r, int argc, const char *const *argv)
{
    if (petrel_command_json(r)) {
        petrel_command_print(r, "[");
        for (int i = 0; i < argc; i++) {
            petrel_command_print(r, "%s", i ? ", " : "");
            petrel_command_print_json_string(r, argv[i]);
        }
        petrel_command_print(r, "]");
    } else {
        petrel_command_print(r, "%d:", argc);
        for (int i = 0; i < argc; i++)
            petrel_command_print(r, " [%s]", argv[i]);
    }
    petrel_command_done(r, PETREL_COMMAND_OK);
}

static void answer_later(void *arg)
{
    petrel_command_request *r = arg;
    petrel_command_print(r, "answered after a timer");
    petrel_command_done(r, PETREL_COMMAND_OK);
}

static void cmd_later(petrel_command_request *r, int argc, const char *const *argv)
{
    (void)argc;
    (void)argv;
    petrel_timer_start(petrel_command_module(r), 300, answer_later, r);
}

/* Never answers in time: the core's deadline answers, then this timer
 * answers through the stale handle. */
static void cmd_never(petrel_command_request *r, int argc, const char *const *argv)
{
    (void)argc;
    (void)argv;
    petrel_timer_start(petrel_command_module(r), 2500, answer_later, r);
}

static void cmd_twice(petrel_command_request *r, int argc, const char *const *argv)
{
    (void)argc;
    (void)argv;
    petrel_command_print(r, "first");
    petrel_command_done(r, PETREL_COMMAND_FAILED);
    petrel_command_print(r, "second");
    petrel_command_done(r, PETREL_COMMAND_OK);
}

static void cmd_die(petrel_command_request *r, int argc, const char *const *argv)
{
    (void)r;
    (void)argc;
    (void)argv;
    kill(getpid(), SIGKILL);
}

static void cmd_big(petrel_command_request *r, int argc, const char *const *argv)
{
    (void)argc;
    (void)argv;
    static char line[1025];
    memset(line, 'x', 1023);
    line[1023] = '\n';
    for (int i = 0; i < 2048; i++)   /* 2 MiB */
        petrel_command_print(r, "%s", line);
    petrel_command_done(r, PETREL_COMMAND_OK);
}

static const petrel_command commands[] = {
    { PETREL_COMMAND_INIT, .name = "echo", .usage = "[WORD...]", .help = "shows its arguments", .min_args = 0,
      .max_args = -1, .flags = PETREL_COMMAND_JSON, .run = cmd_echo },
    { PETREL_COMMAND_INIT, .name = "later", .help = "answers after 300 ms", .run = cmd_later },
    { PETREL_COMMAND_INIT, .name = "never", .help = "answers after its deadline", .run = cmd_never },
    { PETREL_COMMAND_INIT, .name = "twice", .help = "answers twice", .run = cmd_twice },
    { PETREL_COMMAND_INIT, .name = "die", .help = "kills its worker", .run = cmd_die },
    { PETREL_COMMAND_INIT, .name = "big", .help = "answers 2 MiB", .run = cmd_big },
#ifdef CMDMOD_BAD
    { PETREL_COMMAND_INIT, .name = "echo", .help = "again", .run = cmd_echo },
#endif
    { .name = NULL },
};

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = CMDMOD_NAME,
    .version = "1.0",
    .description = "control commands for the tests",
    .commands = commands,
};
