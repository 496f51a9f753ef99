/*
 * dmarc-driver: runs the dmarc module's evaluation component
 * (dmarc_eval.c) for one message, its DNS from --dns with c-ares as the
 * module's will come from dns_resolver, and prints the outcome:
 *
 *   dmarc-driver --dns HOST:PORT --from DOMAIN [--ip ADDR] [--spf DOMAIN RESULT]
 *                [--spf-helo DOMAIN RESULT] [--dkim DOMAIN SELECTOR RESULT]...
 *                [--random N] [--psl FILE] [--history FILE --job ID --reporter HOST --mfrom DOMAIN]
 *
 * Output: "queries: NAME..." then "result=R p=P pct=N dkim_aligned=0|1
 * spf_aligned=0|1 disposition=D sampled_out=0|1 policy_domain=D" and the
 * Authentication-Results text. Test tool only: not installed.
 */
#include <arpa/nameser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>

#include <ares.h>

#include "../dmarc_eval.h"

struct answer {
    int done;
    enum dmarc_dns_status status;
    char *txt[16];
    size_t n;
};

static void on_txt(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct answer *a = arg;
    a->done = 1;
    if (status == ARES_ENOTFOUND || status == ARES_ENODATA) {
        a->status = DMARC_DNS_NOTFOUND;
        return;
    }
    struct ares_txt_ext *txt = NULL;
    if (status != ARES_SUCCESS || ares_parse_txt_reply_ext(abuf, alen, &txt) != ARES_SUCCESS) {
        a->status = DMARC_DNS_TEMPFAIL;
        return;
    }
    a->status = DMARC_DNS_OK;
    char joined[4096];
    size_t jl = 0;
    for (struct ares_txt_ext *p = txt; p; p = p->next) {
        if (p->record_start && jl && a->n < 16) {
            joined[jl] = '\0';
            a->txt[a->n++] = strdup(joined);
            jl = 0;
        }
        size_t take = p->length < sizeof(joined) - 1 - jl ? p->length : sizeof(joined) - 1 - jl;
        memcpy(joined + jl, p->txt, take);
        jl += take;
    }
    if (txt && a->n < 16) {
        joined[jl] = '\0';
        a->txt[a->n++] = strdup(joined);
    }
    ares_free_data(txt);
}

int main(int argc, char **argv)
{
    const char *dns = NULL, *from = NULL, *ip = "192.0.2.1", *psl = NULL, *history = NULL, *job = "job",
               *reporter = "localhost", *mfrom = NULL;
    unsigned random_percent = 0;
    char err[256];
    struct dmarc_eval *e = NULL;
    /* the From domain and the address first: the evaluation needs them */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--from") == 0 && i + 1 < argc)
            from = argv[++i];
        else if (strcmp(argv[i], "--ip") == 0 && i + 1 < argc)
            ip = argv[++i];
        else if (strcmp(argv[i], "--psl") == 0 && i + 1 < argc)
            psl = argv[++i];
        else if (strcmp(argv[i], "--dns") == 0 && i + 1 < argc)
            dns = argv[++i];
    }
    if (dns == NULL || from == NULL) {
        fprintf(stderr, "usage: dmarc-driver --dns HOST:PORT --from DOMAIN [options]\n");
        return 2;
    }
    if (dmarc_library_init(psl, err, sizeof(err)) != 0) {
        fprintf(stderr, "dmarc-driver: %s\n", err);
        return 1;
    }
    e = dmarc_eval_new(ip, from);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--spf") == 0 && i + 2 < argc) {
            dmarc_eval_spf(e, argv[i + 1], argv[i + 2], 0);
            i += 2;
        } else if (strcmp(argv[i], "--spf-helo") == 0 && i + 2 < argc) {
            dmarc_eval_spf(e, argv[i + 1], argv[i + 2], 1);
            i += 2;
        } else if (strcmp(argv[i], "--dkim") == 0 && i + 3 < argc) {
            dmarc_eval_dkim(e, argv[i + 1], argv[i + 2], argv[i + 3]);
            i += 3;
        } else if (strcmp(argv[i], "--random") == 0 && i + 1 < argc) {
            random_percent = (unsigned)strtoul(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--history") == 0 && i + 1 < argc) {
            history = argv[++i];
        } else if (strcmp(argv[i], "--job") == 0 && i + 1 < argc) {
            job = argv[++i];
        } else if (strcmp(argv[i], "--reporter") == 0 && i + 1 < argc) {
            reporter = argv[++i];
        } else if (strcmp(argv[i], "--mfrom") == 0 && i + 1 < argc) {
            mfrom = argv[++i];
        }
    }
    ares_library_init(ARES_LIB_INIT_ALL);
    ares_channel ch;
    struct ares_options opts = { .timeout = 1000, .tries = 2 };
    if (ares_init_options(&ch, &opts, ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES) != ARES_SUCCESS ||
        ares_set_servers_ports_csv(ch, dns) != ARES_SUCCESS) {
        fprintf(stderr, "dmarc-driver: bad --dns %s\n", dns);
        return 1;
    }
    printf("queries:");
    const char *q;
    while ((q = dmarc_eval_next_query(e)) != NULL) {
        printf(" %s", q);
        struct answer a;
        memset(&a, 0, sizeof(a));
        ares_query(ch, q, ns_c_in, ns_t_txt, on_txt, &a);
        while (!a.done) {
            fd_set rd, wr;
            FD_ZERO(&rd);
            FD_ZERO(&wr);
            int nfds = ares_fds(ch, &rd, &wr);
            if (nfds == 0)
                break;
            struct timeval tv, *tvp = ares_timeout(ch, NULL, &tv);
            select(nfds, &rd, &wr, NULL, tvp);
            ares_process(ch, &rd, &wr);
        }
        dmarc_eval_answer(e, a.status, (const char *const *)a.txt, a.n);
        for (size_t i = 0; i < a.n; i++)
            free(a.txt[i]);
    }
    printf("\n");
    struct dmarc_outcome o;
    dmarc_eval_decide(e, random_percent, &o);
    static const char *const disp[] = { "none", "quarantine", "reject" };
    printf("result=%s p=%c pct=%d dkim_aligned=%d spf_aligned=%d disposition=%s sampled_out=%d policy_domain=%s\n",
           o.result, o.p ? o.p : '-', o.pct, o.dkim_aligned, o.spf_aligned, disp[o.disposition], o.sampled_out,
           o.policy_domain[0] ? o.policy_domain : "-");
    char ar[512];
    dmarc_eval_auth_results(e, &o, ar, sizeof(ar));
    printf("%s\n", ar);
    if (history && dmarc_history_append(history, e, &o, job, reporter, mfrom, 1796284800L, err, sizeof(err)) != 0) {
        fprintf(stderr, "dmarc-driver: %s\n", err);
        return 1;
    }
    dmarc_eval_free(e);
    ares_destroy(ch);
    dmarc_library_shutdown();
    return 0;
}
