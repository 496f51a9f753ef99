/*
 * notemod: reads the notes apimod sets (apimod.client for the session,
 * apimod.sender for the transaction) and shows what it saw: each RCPT logs
 * them, and end_of_message adds "X-Notes: sender=...; client=..." to the
 * message. It also tries to overwrite apimod.sender, which the core must
 * refuse (a module sets only its own notes), and keeps a note of its own.
 */
#include <stdio.h>

#include <petrel/plugin.h>

static const char *or_unset(const char *v)
{
    return v ? v : "(unset)";
}

static petrel_verdict on_rcpt(petrel_session *s, const char *rcpt)
{
    int forged = petrel_note_set(s, PETREL_NOTE_TRANSACTION, "apimod.sender", "forged@example.org");
    petrel_note_set(s, PETREL_NOTE_TRANSACTION, "notemod.seen", rcpt);
    petrel_log(s, PETREL_LOG_INFO, "saw apimod.sender=%s apimod.client=%s notemod.forged=%s notemod.seen=%s "
               "(overwriting apimod's note: %d)", or_unset(petrel_note_get(s, "apimod.sender")),
               or_unset(petrel_note_get(s, "apimod.client")), or_unset(petrel_note_get(s, "notemod.forged")),
               or_unset(petrel_note_get(s, "notemod.seen")), forged);
    return PETREL_CONTINUE;
}

static petrel_verdict on_eom(petrel_session *s)
{
    char value[512];
    snprintf(value, sizeof(value), "sender=%s; client=%s", or_unset(petrel_note_get(s, "apimod.sender")),
             or_unset(petrel_note_get(s, "apimod.client")));
    petrel_header_add(s, "X-Notes", value);
    return PETREL_CONTINUE;
}

const petrel_module_desc petrel_module_descriptor = {
    PETREL_MODULE_INIT,
    .name = "notemod",
    .version = "1.0",
    .description = "reads apimod's notes (tests only)",
    .hooks = { .rcpt = on_rcpt, .end_of_message = on_eom },
};
