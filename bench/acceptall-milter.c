/*
 * acceptall-milter: the smallest useful libmilter filter, for bench/milter.sh.
 *
 *   acceptall-milter SOCKET [noheader]   (libmilter's form: inet:PORT@127.0.0.1)
 *
 * It negotiates every protocol step (connect, HELO, MAIL, RCPT, DATA,
 * headers, EOH, body) and replies CONTINUE to each, so the MTA sends it the
 * whole message as it would to a real content filter; at end of message it
 * adds the header "X-Bench-Milter: accepted" (so a benchmark can count that
 * the filter really saw every message) and accepts. No logging, no state:
 * what the benchmark measures is the MTA's side of the protocol.
 * "noheader": no header is added, the reply to end of message is ACCEPT
 * alone (libmilter then writes one reply packet instead of two: see
 * bench/RESULTS.md on the 40 ms delayed-ACK stall at concurrency 1).
 *
 * Build (bench/milter.sh does it): cc -O2 -o acceptall-milter acceptall-milter.c -lmilter -lpthread
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libmilter/mfapi.h>

static sfsistat on_connect(SMFICTX *ctx, char *host, _SOCK_ADDR *addr)
{
    (void)ctx; (void)host; (void)addr;
    return SMFIS_CONTINUE;
}

static sfsistat on_helo(SMFICTX *ctx, char *helo)
{
    (void)ctx; (void)helo;
    return SMFIS_CONTINUE;
}

static sfsistat on_envfrom(SMFICTX *ctx, char **argv)
{
    (void)ctx; (void)argv;
    return SMFIS_CONTINUE;
}

static sfsistat on_envrcpt(SMFICTX *ctx, char **argv)
{
    (void)ctx; (void)argv;
    return SMFIS_CONTINUE;
}

static sfsistat on_header(SMFICTX *ctx, char *name, char *value)
{
    (void)ctx; (void)name; (void)value;
    return SMFIS_CONTINUE;
}

static sfsistat on_eoh(SMFICTX *ctx)
{
    (void)ctx;
    return SMFIS_CONTINUE;
}

static sfsistat on_body(SMFICTX *ctx, unsigned char *chunk, size_t len)
{
    (void)ctx; (void)chunk; (void)len;
    return SMFIS_CONTINUE;
}

static int add_header = 1;

static sfsistat on_eom(SMFICTX *ctx)
{
    if (add_header && smfi_addheader(ctx, "X-Bench-Milter", "accepted") != MI_SUCCESS)
        return SMFIS_TEMPFAIL;
    return SMFIS_ACCEPT;
}

static struct smfiDesc filter = {
    .xxfi_name = "acceptall",
    .xxfi_version = SMFI_VERSION,
    .xxfi_flags = SMFIF_ADDHDRS,
    .xxfi_connect = on_connect,
    .xxfi_helo = on_helo,
    .xxfi_envfrom = on_envfrom,
    .xxfi_envrcpt = on_envrcpt,
    .xxfi_header = on_header,
    .xxfi_eoh = on_eoh,
    .xxfi_body = on_body,
    .xxfi_eom = on_eom,
};

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3 || (argc == 3 && strcmp(argv[2], "noheader") != 0)) {
        fprintf(stderr, "usage: %s SOCKET [noheader] (e.g. inet:10025@127.0.0.1)\n", argv[0]);
        return 2;
    }
    add_header = argc == 2;
    if (smfi_setconn(argv[1]) == MI_FAILURE || smfi_register(filter) == MI_FAILURE) {
        fprintf(stderr, "%s: cannot set up %s\n", argv[0], argv[1]);
        return 1;
    }
    /* the benchmark runs up to 100 sessions at once: a deep listen queue */
    smfi_setbacklog(256);
    return smfi_main() == MI_SUCCESS ? 0 : 1;
}
