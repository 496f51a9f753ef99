/*
 * XFORWARD (Postfix's XFORWARD_README): a content filter that hands mail
 * back (amavis re-injecting on 127.0.0.1:10025) tells us who the original
 * client was, so that the Received: header and the log name that client
 * and not the filter.
 *
 * Only clients in smtpd_authorized_xforward_hosts may send it (others get
 * 550 5.7.0, as in Postfix), a name and address list as Postfix's
 * namadr_list (mail/namadr.c: networks, host and domain names of the
 * client's verified name, type:table, !exclusions; a table that fails ends
 * the session with 421 4.3.0, as Postfix does), only outside a mail
 * transaction; the
 * arguments are parsed and checked by mail/xforward.c (fuzzed with the
 * other command parsers), whose 501 replies are Postfix's.
 *
 * What XFORWARD does not change, as in Postfix: the restrictions, the
 * policy service and the modules still see the connected client (the
 * filter), whose re-injection listener admits it by its own address
 * (mynetworks on that line). The values last until the end of the next
 * mail transaction (delivered, refused or RSET), then the connection's
 * own apply again.
 *
 * The values live in fixed buffers of the session (struct
 * xforward_attrs): a client repeating XFORWARD allocates nothing.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "lib/log.h"
#include "mail/namadr.h"
#include "mail/xforward.h"
#include "smtpd/smtpd_int.h"

int smtpd_xforward_allowed(const struct smtpd_session *s)
{
    if (s->local_submission || namadr_list_empty(s->set->xforward_hosts))
        return 0;
    return namadr_list_match(s->set->xforward_hosts, s->name, s->addr);
}

void smtpd_cmd_xforward(struct smtpd_session *s, const struct smtp_command *cmd)
{
    char reply[400];
    int allowed = 0;
    if (!s->tx && cmd->args_len > 0 && strspn(cmd->args, " \t") < cmd->args_len
        && (allowed = smtpd_xforward_allowed(s)) < 0) {
        msg_warn("don't know if command XFORWARD should be allowed from %s", s->namaddr);
        smtpd_count_error(s, CNT_XFORWARD);
        smtpd_reply(s, "421 4.3.0 %s Server local data error", s->set->myhostname);
        smtpd_session_close_after_flush(s);
        return;
    }
    if (s->tx) {
        smtpd_reply(s, "503 5.5.1 Error: MAIL transaction in progress");
        smtpd_count_error(s, CNT_XFORWARD);
    } else if (cmd->args_len == 0 || strspn(cmd->args, " \t") >= cmd->args_len) {
        smtpd_reply(s, "501 5.5.4 Syntax: XFORWARD attribute=value...");
        smtpd_count_error(s, CNT_XFORWARD);
    } else if (!allowed) {
        smtpd_reply(s, "550 5.7.0 Error: insufficient authorization");
        smtpd_count_error(s, CNT_XFORWARD);
    } else if (xforward_parse(cmd->args, cmd->args_len, &s->xforward, reply, sizeof(reply)) != 0) {
        smtpd_reply(s, "%s", reply);
        smtpd_count_error(s, CNT_XFORWARD);
    } else {
        smtpd_reply(s, "250 2.0.0 Ok");
    }
}

const char *smtpd_xforward_name(const struct smtpd_session *s)
{
    return (s->xforward.set & XFORWARD_F_NAME) ? s->xforward.name : s->name;
}

const char *smtpd_xforward_addr(const struct smtpd_session *s)
{
    return (s->xforward.set & XFORWARD_F_ADDR) ? s->xforward.addr : s->addr;
}

const char *smtpd_xforward_helo(const struct smtpd_session *s)
{
    if (s->xforward.set & XFORWARD_F_HELO)
        return s->xforward.helo[0] ? s->xforward.helo : NULL;
    return s->helo;
}

const char *smtpd_xforward_proto(const struct smtpd_session *s)
{
    return (s->xforward.set & XFORWARD_F_PROTO) ? s->xforward.proto : s->protocol;
}

void smtpd_xforward_log_suffix(const struct smtpd_session *s, char *out, size_t size)
{
    const struct xforward_attrs *x = &s->xforward;
    size_t n = 0;
    out[0] = '\0';
    if (x->set & XFORWARD_F_IDENT)
        n += (size_t)snprintf(out, size, ", orig_queue_id=%s", x->ident);
    if ((x->set & (XFORWARD_F_NAME | XFORWARD_F_ADDR | XFORWARD_F_PORT)) && n < size) {
        /* Postfix's namaddr: name[addr]:port, or the name alone without an address */
        const char *name = smtpd_xforward_name(s), *addr = smtpd_xforward_addr(s);
        if (strcmp(addr, "unknown") == 0)
            snprintf(out + n, size - n, ", orig_client=%s", name);
        else if (x->set & XFORWARD_F_PORT)
            snprintf(out + n, size - n, ", orig_client=%s[%s]:%s", name, addr, x->port);
        else
            snprintf(out + n, size - n, ", orig_client=%s[%s]", name, addr);
    }
}
