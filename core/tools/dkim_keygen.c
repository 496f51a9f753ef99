/*
 * petrelctl dkim keygen: a DKIM signing key and the DNS record to publish
 * (doc/modules/dkim.md), what opendkim-genkey does, plus Ed25519 (RFC 8463).
 *
 *   petrelctl dkim keygen [--ed25519 | -b BITS] [-D DIRECTORY] DOMAIN SELECTOR
 *
 * The key is written as PEM (PKCS#8) to DIRECTORY/SELECTOR.DOMAIN.private
 * (DIRECTORY defaults to dkim/ in the configuration directory), mode 0600,
 * never over an existing file; when root runs it, the file is given to
 * mail_owner, the account petreld reads keys as. The TXT record goes to
 * standard output in zone-file form, its text split into strings of at
 * most 255 bytes (RFC 1035), as opendkim-genkey's .txt file has it.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "config/cfg.h"
#include "tools/dkim_keygen.h"

static int keygen_usage(void)
{
    fprintf(stderr, "usage: petrelctl dkim keygen [--ed25519 | -b BITS] [-D DIRECTORY] DOMAIN SELECTOR\n");
    return 2;
}

/* A domain or selector: labels of letters, digits, '-' and '_' (selectors
 * may hold dots too, RFC 6376 3.1); nothing that could leave a file name. */
static int name_ok(const char *s)
{
    if (*s == '\0' || *s == '.' || strlen(s) > 253 || strstr(s, ".."))
        return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
              *p == '_' || *p == '.'))
            return 0;
    return 1;
}

/* base64 of n bytes, malloc'd. */
static char *base64(const unsigned char *data, size_t n)
{
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    if (out)
        EVP_EncodeBlock((unsigned char *)out, data, (int)n);
    return out;
}

static void print_record(const char *domain, const char *selector, const char *text)
{
    printf("%s._domainkey.%s. IN TXT (", selector, domain);
    size_t len = strlen(text);
    for (size_t o = 0; o < len; o += 255)
        printf(" \"%.*s\"", (int)(len - o < 255 ? len - o : 255), text + o);
    printf(" )\n");
}

int dkim_keygen_main(const char *confdir, int argc, char **argv)
{
    int ed25519 = 0;
    long bits = 2048;
    const char *dir = NULL;
    int i = 0;
    if (argc < 1 || strcmp(argv[0], "keygen") != 0)
        return keygen_usage();
    for (i = 1; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--ed25519") == 0) {
            ed25519 = 1;
        } else if (strcmp(argv[i], "-b") == 0 && i + 1 < argc) {
            char *end;
            bits = strtol(argv[++i], &end, 10);
            if (*end || bits < 1024 || bits > 4096) {
                fprintf(stderr, "petrelctl: dkim keygen: -b %s: expected 1024 to 4096 bits (RFC 8301: at least "
                        "1024; 2048 is the default)\n", argv[i]);
                return 2;
            }
        } else if (strcmp(argv[i], "-D") == 0 && i + 1 < argc) {
            dir = argv[++i];
        } else {
            return keygen_usage();
        }
    }
    if (argc - i != 2)
        return keygen_usage();
    const char *domain = argv[i], *selector = argv[i + 1];
    if (!name_ok(domain) || !name_ok(selector)) {
        fprintf(stderr, "petrelctl: dkim keygen: %s: not a domain name\n", name_ok(domain) ? selector : domain);
        return 2;
    }
    char default_dir[4096], path[4096];
    if (dir == NULL) {
        snprintf(default_dir, sizeof(default_dir), "%s/dkim", confdir);
        dir = default_dir;
        if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
            fprintf(stderr, "petrelctl: dkim keygen: %s: %s\n", dir, strerror(errno));
            return 1;
        }
    }
    if ((size_t)snprintf(path, sizeof(path), "%s/%s.%s.private", dir, selector, domain) >= sizeof(path)) {
        fprintf(stderr, "petrelctl: dkim keygen: %s: path too long\n", dir);
        return 1;
    }

    EVP_PKEY *key = ed25519 ? EVP_PKEY_Q_keygen(NULL, NULL, "ED25519")
                            : EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)bits);
    if (key == NULL) {
        fprintf(stderr, "petrelctl: dkim keygen: OpenSSL could not make the key\n");
        return 1;
    }
    /* the public half, as the record carries it */
    unsigned char raw[64], *der = NULL;
    size_t rawlen = sizeof(raw);
    char *p64 = NULL;
    if (ed25519) {
        if (EVP_PKEY_get_raw_public_key(key, raw, &rawlen) == 1)
            p64 = base64(raw, rawlen);
    } else {
        int n = i2d_PUBKEY(key, &der);
        if (n > 0)
            p64 = base64(der, (size_t)n);
        OPENSSL_free(der);
    }
    if (p64 == NULL) {
        fprintf(stderr, "petrelctl: dkim keygen: OpenSSL could not encode the public key\n");
        EVP_PKEY_free(key);
        return 1;
    }

    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (f == NULL) {
        fprintf(stderr, "petrelctl: dkim keygen: %s: %s%s\n", path, strerror(errno),
                errno == EEXIST ? " (a key is never overwritten: choose a new selector)" : "");
        if (fd >= 0)
            close(fd);
        EVP_PKEY_free(key);
        free(p64);
        return 1;
    }
    int written = PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) == 1;
    int status = 0;
    if (!written || fflush(f) != 0 || fsync(fileno(f)) != 0) {
        fprintf(stderr, "petrelctl: dkim keygen: %s: %s\n", path, written ? strerror(errno) : "cannot write the key");
        status = 1;
    }
    if (status == 0 && geteuid() == 0) {
        struct cfg_schema *schema = cfg_schema_new();
        char *owner = cfg_peek(schema, confdir, "mail_owner");
        cfg_schema_free(schema);
        struct passwd *pw = getpwnam(owner ? owner : "petrel");
        if (pw == NULL || fchown(fileno(f), pw->pw_uid, pw->pw_gid) != 0) {
            fprintf(stderr, "petrelctl: dkim keygen: %s: cannot give it to mail_owner %s: %s\n", path,
                    owner ? owner : "petrel", pw ? strerror(errno) : "no such user");
            status = 1;
        }
        free(owner);
    }
    if (fclose(f) != 0 && status == 0) {
        fprintf(stderr, "petrelctl: dkim keygen: %s: %s\n", path, strerror(errno));
        status = 1;
    }
    EVP_PKEY_free(key);
    if (status != 0) {
        unlink(path);
        free(p64);
        return status;
    }
    char text[2048];
    snprintf(text, sizeof(text), "v=DKIM1; k=%s; p=%s", ed25519 ? "ed25519" : "rsa", p64);
    free(p64);
    print_record(domain, selector, text);
    fprintf(stderr, "petrelctl: dkim keygen: wrote %s\n", path);
    return 0;
}
