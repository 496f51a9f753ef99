/*
 * smtpd_sasl_type = table, smtpd_sasl_path = TYPE:NAME: a lookup table of
 * `login value`, the value a crypt(3) hash (yescrypt $y$, sha512-crypt $6$,
 * bcrypt $2b$, and whatever else libcrypt knows) or {PLAIN}text. It runs
 * PLAIN and LOGIN (the only mechanisms a hash can serve).
 *
 * The table: texthash: is read by the module itself (postmap's source
 * format: `key value` lines, # comments, continuation lines start with
 * white space; keys compared without case, as Postfix folds them), on a
 * worker thread, again whenever its inode or mtime changes, so an edit
 * applies without a reload (the core's texthash: is read once, as
 * Postfix's). Every other type (hash:, lmdb:, cdb:, sqlite:, pgsql:,
 * mysql:, socketmap:, ...) is opened through Module API 1.1's
 * petrel_table_open() the first time a session asks (the path is per
 * service, so init cannot know it) and looked up with petrel_table_lookup(),
 * whose answer comes on a later loop turn: a remote table never blocks the
 * loop. A table that cannot answer (RETRY) makes 454 4.7.0, never 535.
 *
 * Checking a password costs what the hash was made to cost (yescrypt's
 * default is tens of milliseconds), so it runs on the module's threads; an
 * unknown login is hashed too (against a fixed yescrypt hash), so that
 * timing does not tell which logins exist. Passwords are wiped as soon as
 * they are checked.
 */
#include <crypt.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "sasl_int.h"

struct entry {
    char *login, *value;
};

struct table_db {
    pthread_mutex_t lock;
    char *path;
    dev_t dev;
    ino_t ino;
    struct timespec mtime;
    int loaded;
    struct entry *entries;
    size_t n;
};

/* One smtpd_sasl_path this process has opened: a texthash: file the
 * module reads itself, or a table of any other type through the core. */
struct sasl_table {
    char *spec;
    struct table_db *file;            /* texthash: */
    petrel_table *core;               /* the others (stays open until the module is unloaded) */
    struct sasl_table *next;
};

struct table_check {
    struct sasl_module *sm;
    petrel_sasl_request *r;
    struct table_db *file;            /* texthash:, looked up on the thread; NULL: value came from the core */
    char *login, *password;
    char *value;                      /* the core table's answer, NULL when the login is not there */
    const char *spec;                 /* smtpd_sasl_path, for the log (lives as long as the module) */
    int verdict;                      /* 1 ok, 0 wrong, -1 table unreadable */
    char reason[160];
};

/* A yescrypt setting (libxcrypt's default cost) hashed for unknown logins. */
static const char decoy_setting[] = "$y$j9T$F5Jx5fExrKuPp53xLKQ..1";

static void free_entries(struct table_db *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->entries[i].login);
        if (t->entries[i].value) {
            explicit_bzero(t->entries[i].value, strlen(t->entries[i].value));
            free(t->entries[i].value);
        }
    }
    free(t->entries);
    t->entries = NULL;
    t->n = 0;
}

static void add_entry(struct table_db *t, const char *line, size_t *cap)
{
    const char *k = line + strspn(line, " \t");
    size_t kl = strcspn(k, " \t");
    if (kl == 0 || *k == '#')
        return;
    const char *v = k + kl;
    v += strspn(v, " \t");
    size_t vl = strlen(v);
    while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t' || v[vl - 1] == '\r'))
        vl--;
    if (t->n == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        t->entries = realloc(t->entries, *cap * sizeof(*t->entries));
        if (t->entries == NULL)
            abort();
    }
    struct entry *e = &t->entries[t->n++];
    e->login = strndup(k, kl);
    e->value = strndup(v, vl);
    for (char *p = e->login; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
}

/* On a worker thread, under t->lock: (re)reads the file when it changed. */
static int refresh(struct table_db *t, char *why, size_t whylen)
{
    struct stat st;
    if (stat(t->path, &st) != 0) {
        snprintf(why, whylen, "cannot read %s: %s", t->path, strerror(errno));
        return -1;
    }
    if (t->loaded && st.st_dev == t->dev && st.st_ino == t->ino && st.st_mtim.tv_sec == t->mtime.tv_sec &&
        st.st_mtim.tv_nsec == t->mtime.tv_nsec)
        return 0;
    FILE *f = fopen(t->path, "re");
    if (f == NULL) {
        snprintf(why, whylen, "cannot read %s: %s", t->path, strerror(errno));
        return -1;
    }
    free_entries(t);
    size_t cap = 0;
    char *line = NULL, *logical = NULL;
    size_t linecap = 0, loglen = 0;
    ssize_t n;
    while ((n = getline(&line, &linecap, f)) >= 0) {
        if (n && line[n - 1] == '\n')
            line[--n] = '\0';
        if ((line[0] == ' ' || line[0] == '\t') && logical) {
            /* a continuation line (postmap's rule) */
            logical = realloc(logical, loglen + (size_t)n + 2);
            logical[loglen++] = ' ';
            memcpy(logical + loglen, line + strspn(line, " \t"), (size_t)n - strspn(line, " \t") + 1);
            loglen += (size_t)n - strspn(line, " \t");
            continue;
        }
        if (logical) {
            add_entry(t, logical, &cap);
            explicit_bzero(logical, loglen);
            free(logical);
        }
        logical = strdup(line);
        loglen = (size_t)n;
    }
    if (logical) {
        add_entry(t, logical, &cap);
        explicit_bzero(logical, loglen);
        free(logical);
    }
    if (line) {
        explicit_bzero(line, linecap);
        free(line);
    }
    fclose(f);
    t->dev = st.st_dev;
    t->ino = st.st_ino;
    t->mtime = st.st_mtim;
    t->loaded = 1;
    return 0;
}

static int equal_consttime(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char d = (unsigned char)(la != lb);
    for (size_t i = 0; i < lb; i++)
        d |= (unsigned char)(a[i % (la ? la : 1)] ^ b[i]);
    return d == 0;
}

static int check_hash(const char *value, const char *password)
{
    if (strncasecmp(value, "{PLAIN}", 7) == 0)
        return equal_consttime(value + 7, password);
    if (value[0] != '$')
        return 0;   /* not a crypt(3) hash we accept (an old DES hash has no $) */
    struct crypt_data *cd = calloc(1, sizeof(*cd));
    if (cd == NULL)
        return 0;
    const char *h = crypt_r(password, value, cd);
    int ok = h && h[0] != '*' && equal_consttime(h, value);
    explicit_bzero(cd, sizeof(*cd));
    free(cd);
    return ok;
}

static void check_work(void *arg)
{
    struct table_check *c = arg;
    char *value = c->value;
    c->value = NULL;
    if (c->file) {
        struct table_db *t = c->file;
        pthread_mutex_lock(&t->lock);
        if (refresh(t, c->reason, sizeof(c->reason)) != 0) {
            pthread_mutex_unlock(&t->lock);
            c->verdict = -1;
            explicit_bzero(c->password, strlen(c->password));
            return;
        }
        for (size_t i = 0; i < t->n; i++)
            if (strcasecmp(t->entries[i].login, c->login) == 0)
                value = strdup(t->entries[i].value);
        pthread_mutex_unlock(&t->lock);
    }
    if (value) {
        c->verdict = check_hash(value, c->password);
        explicit_bzero(value, strlen(value));
        free(value);
    } else {
        struct crypt_data *cd = calloc(1, sizeof(*cd));   /* the same cost as a known login */
        if (cd) {
            crypt_r(c->password, decoy_setting, cd);
            explicit_bzero(cd, sizeof(*cd));
            free(cd);
        }
        c->verdict = 0;
    }
    explicit_bzero(c->password, strlen(c->password));
}

static void check_free(struct table_check *c)
{
    if (c->value) {
        explicit_bzero(c->value, strlen(c->value));
        free(c->value);
    }
    explicit_bzero(c->password, strlen(c->password));
    free(c->password);
    free(c->login);
    free(c);
}

static void check_done(void *arg)
{
    struct table_check *c = arg;
    if (c->verdict == 1)
        sasl_answer(c->r, PETREL_SASL_SUCCESS, NULL, 0, c->login, NULL);
    else if (c->verdict == 0)
        sasl_answer(c->r, PETREL_SASL_FAILURE, NULL, 0, c->login, NULL);
    else {
        petrel_module_log(c->sm->m, PETREL_LOG_WARNING, "table: %s", c->reason);
        sasl_answer(c->r, PETREL_SASL_TEMPFAIL, NULL, 0, c->login, "authentication table unavailable");
    }
    check_free(c);
}

/* smtpd_sasl_path's type and name ("proxy:" skipped: the table itself is
 * what the check can look at). Returns the type's length, 0 without one. */
static size_t split_spec(const char *path, const char **name)
{
    while (strncmp(path, "proxy:", 6) == 0)
        path += 6;
    const char *colon = strchr(path, ':');
    if (colon == NULL || colon == path || colon[1] == '\0')
        return 0;
    *name = colon + 1;
    return (size_t)(colon - path);
}

static int type_is(const char *path, const char *type)
{
    const char *name;
    size_t n = split_spec(path, &name);
    return n == strlen(type) && strncmp(name - n - 1, type, n) == 0;
}

/* A file the check must be able to open, a regular one, else *error:
 * "PATH: why" when the file is the table's NAME, "PATH: FILE: why; hint"
 * when it is a compiled file or a configuration file of its own. */
static int check_file(const char *path, const char *file, int is_name, const char *hint, petrel_pool *pool,
                      const char **error)
{
    FILE *f = fopen(file, "re");
    if (f == NULL) {
        int e = errno;
        if (is_name)
            *error = petrel_pool_printf(pool, "%s: %s (smtpd_sasl_type = table)", path, strerror(e));
        else
            *error = petrel_pool_printf(pool, "%s: %s: %s%s%s (smtpd_sasl_type = table)", path, file, strerror(e),
                                        hint ? "; " : "", hint ? hint : "");
        return -1;
    }
    struct stat st;
    int regular = fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode);
    fclose(f);
    if (!regular) {
        *error = petrel_pool_printf(pool, "%s: %s is not a regular file (smtpd_sasl_type = table)", path, file);
        return -1;
    }
    return 0;
}

/* Where the configuration is checked (petreld -n, the start, a reload),
 * before init. texthash: (read by the module itself) must be an absolute
 * path to a file. The files the other types need are looked at first, for
 * a precise hint (hash:, lmdb: and cdb: their compiled file, sqlite:,
 * pgsql: and mysql: their configuration file); then the core opens the
 * table as the workers will (petrel_table_check), which finds what the
 * file test cannot: a type no loaded module provides, a file that is not
 * a table, a bad socketmap: or inline: spec. */
int sasl_table_check_path(petrel_module *m, const char *path, petrel_pool *pool, const char **error)
{
    const char *name = NULL;
    size_t n = split_spec(path, &name);
    if (n == 0) {
        *error = petrel_pool_printf(pool, "\"%s\": must be TYPE:NAME, a lookup table of login and password hash "
                                    "(smtpd_sasl_type = table)", path);
        return -1;
    }
    if (type_is(path, "texthash")) {
        if (name[0] != '/') {
            *error = "the texthash file must be an absolute path";
            return -1;
        }
        return check_file(path, name, 1, NULL, pool, error);
    }
    const char *suffix = type_is(path, "hash") || type_is(path, "lmdb") ? ".lmdb" : type_is(path, "cdb") ? ".cdb"
                                                                                                          : NULL;
    if (suffix) {
        const char *hint = petrel_pool_printf(pool, "build it with `petrelctl map build %.*s:%s`", (int)n,
                                              name - n - 1, name);
        if (check_file(path, petrel_pool_printf(pool, "%s%s", name, suffix), 0, hint, pool, error) != 0)
            return -1;
    }
    if ((type_is(path, "sqlite") || type_is(path, "pgsql") || type_is(path, "mysql")) &&
        check_file(path, name, 1, NULL, pool, error) != 0)
        return -1;
    const char *why = NULL;
    if (petrel_table_check(m, path, &why) != 0) {
        *error = petrel_pool_printf(pool, "%s (smtpd_sasl_type = table)", why);
        return -1;
    }
    return 0;
}

/* smtpd_sasl_path opened in this process, the first time a session asks
 * (the path is a service's, so init cannot know it); NULL with a reason.
 * A table that cannot be opened is tried again by the next session. */
static struct sasl_table *table_of(const petrel_sasl_context *c, const char **why)
{
    struct sasl_module *sm = sasl_module_of(c->module);
    const char *path = c->path ? c->path : "";
    for (struct sasl_table *t = sm->tables; t; t = t->next)
        if (strcmp(t->spec, path) == 0)
            return t;
    const char *name = NULL;
    if (split_spec(path, &name) == 0) {
        *why = "smtpd_sasl_path must be TYPE:NAME";
        return NULL;
    }
    struct sasl_table *t = calloc(1, sizeof(*t));
    if (t == NULL)
        abort();
    if (strncmp(path, "texthash:", 9) == 0) {   /* proxy:texthash: goes to the core */
        if (name[0] != '/') {
            free(t);
            *why = "smtpd_sasl_path: the texthash file must be an absolute path";
            return NULL;
        }
        t->file = calloc(1, sizeof(*t->file));
        if (t->file == NULL)
            abort();
        pthread_mutex_init(&t->file->lock, NULL);
        t->file->path = strdup(name);
    } else if ((t->core = petrel_table_open(c->module, path, PETREL_TABLE_FOLD_CASE, why)) == NULL) {
        free(t);
        return NULL;
    }
    t->spec = strdup(path);
    t->next = sm->tables;
    sm->tables = t;
    return t;
}

static const petrel_sasl_mechanism table_mechs[] = { { "PLAIN", PETREL_SASL_PLAINTEXT },
                                                      { "LOGIN", PETREL_SASL_PLAINTEXT } };

void sasl_table_mechanisms(petrel_sasl_request *r, const petrel_sasl_context *c)
{
    const char *why = NULL;
    if (table_of(c, &why) == NULL) {
        petrel_module_log(c->module, PETREL_LOG_ERROR, "table: %s", why);
        sasl_answer(r, PETREL_SASL_TEMPFAIL, NULL, 0, NULL, why);
        return;
    }
    petrel_sasl_offer(r, table_mechs, 2);
}

struct table_exchange {
    int login_mech;                   /* LOGIN: 1 while the user name is awaited, 2 for the password */
    char *user;
};

/* Hashing goes to the module's threads; done on the loop answers. */
static void check_on_thread(struct table_check *chk)
{
    if (sasl_workers_run(chk->sm->workers, check_work, check_done, chk) != 0) {
        sasl_answer(chk->r, PETREL_SASL_TEMPFAIL, NULL, 0, chk->login, "no worker thread");
        check_free(chk);
    }
}

/* petrel_table_lookup's answer, on the loop (never inside the call). */
static void looked_up(int status, const char *value, void *arg)
{
    struct table_check *chk = arg;
    if (status == PETREL_TABLE_RETRY) {
        /* the table cannot answer now (a server down or slow): a back-end
         * that is down, never "wrong password" */
        petrel_module_log(chk->sm->m, PETREL_LOG_WARNING, "table: %s cannot answer now", chk->spec);
        sasl_answer(chk->r, PETREL_SASL_TEMPFAIL, NULL, 0, chk->login, "authentication table unavailable");
        check_free(chk);
        return;
    }
    chk->value = status == PETREL_TABLE_FOUND && value ? strdup(value) : NULL;   /* NULL: the decoy hash */
    check_on_thread(chk);
}

static void verify(petrel_sasl_request *r, const petrel_sasl_context *c, const char *user, const char *password)
{
    const char *why = NULL;
    struct sasl_module *sm = sasl_module_of(c->module);
    struct sasl_table *t = table_of(c, &why);
    if (t == NULL) {
        petrel_module_log(c->module, PETREL_LOG_ERROR, "table: %s", why);
        sasl_answer(r, PETREL_SASL_TEMPFAIL, NULL, 0, user, "authentication table unavailable");
        return;
    }
    struct table_check *chk = calloc(1, sizeof(*chk));
    if (chk == NULL)
        abort();
    chk->sm = sm;
    chk->r = r;
    chk->file = t->file;
    chk->login = strdup(user);
    chk->password = strdup(password);
    if (t->file) {
        check_on_thread(chk);
        return;
    }
    chk->spec = t->spec;
    if (petrel_table_lookup(t->core, user, looked_up, chk) != 0) {
        sasl_answer(r, PETREL_SASL_TEMPFAIL, NULL, 0, user, "authentication table unavailable");
        check_free(chk);
    }
}

static void plain(petrel_sasl_request *r, const petrel_sasl_context *c, const unsigned char *data, size_t len)
{
    petrel_sasl_plain f;
    petrel_sasl_plain_verdict v = petrel_sasl_plain_split(data, len, &f);
    if (v == PETREL_SASL_PLAIN_MALFORMED) {
        sasl_answer(r, PETREL_SASL_FAILURE, NULL, 0, NULL, "Invalid authentication data");
        return;
    }
    char *user = strndup(f.authcid, f.authcid_len);
    char *pass = strndup(f.password, f.password_len);
    if (user == NULL || pass == NULL)
        abort();
    if (v == PETREL_SASL_PLAIN_OTHER_AUTHZID)
        sasl_answer(r, PETREL_SASL_FAILURE, NULL, 0, user, "authorization identity differs from the login");
    else
        verify(r, c, user, pass);
    explicit_bzero(pass, f.password_len);
    free(pass);
    free(user);
}

void sasl_table_start(petrel_sasl_request *r, const petrel_sasl_context *c, const char *mech,
                      const unsigned char *initial, size_t len, void **state)
{
    if (strcmp(mech, "PLAIN") == 0) {
        if (initial) {
            plain(r, c, initial, len);
            return;
        }
        struct table_exchange *x = calloc(1, sizeof(*x));
        *state = x;
        sasl_answer(r, PETREL_SASL_CHALLENGE, "", 0, NULL, NULL);
        return;
    }
    if (strcmp(mech, "LOGIN") != 0) {
        sasl_answer(r, PETREL_SASL_FAILURE, NULL, 0, NULL, "Invalid authentication mechanism");
        return;
    }
    struct table_exchange *x = calloc(1, sizeof(*x));
    if (x == NULL)
        abort();
    x->login_mech = 1;
    *state = x;
    if (initial && len) {
        x->user = strndup((const char *)initial, len);
        x->login_mech = 2;
        sasl_answer(r, PETREL_SASL_CHALLENGE, "Password:", 9, NULL, NULL);
        return;
    }
    sasl_answer(r, PETREL_SASL_CHALLENGE, "Username:", 9, NULL, NULL);
}

void sasl_table_step(petrel_sasl_request *r, const petrel_sasl_context *c, void *state, const unsigned char *resp,
                     size_t len)
{
    struct table_exchange *x = state;
    if (x != NULL && x->login_mech == 0) {   /* PLAIN's response: its NULs split it */
        plain(r, c, resp, len);
        return;
    }
    if (x == NULL || memchr(resp, '\0', len)) {   /* LOGIN's user name or password */
        sasl_answer(r, PETREL_SASL_FAILURE, NULL, 0, x ? x->user : NULL, "Invalid authentication data");
        return;
    }
    char *text = strndup((const char *)resp, len);
    if (x->login_mech == 1) {
        free(x->user);
        x->user = text;
        x->login_mech = 2;
        sasl_answer(r, PETREL_SASL_CHALLENGE, "Password:", 9, NULL, NULL);
        return;
    }
    verify(r, c, x->user, text);
    explicit_bzero(text, len);
    free(text);
}

void sasl_table_end(const petrel_sasl_context *c, void *state)
{
    (void)c;
    struct table_exchange *x = state;
    if (x) {
        free(x->user);
        free(x);
    }
}

void sasl_table_fini(struct sasl_module *sm)
{
    while (sm->tables) {
        struct sasl_table *t = sm->tables;
        sm->tables = t->next;
        if (t->file) {
            free_entries(t->file);
            free(t->file->path);
            pthread_mutex_destroy(&t->file->lock);
            free(t->file);
        }
        /* t->core: the core closes a module's tables when it unloads it */
        free(t->spec);
        free(t);
    }
}
