/* identity.c: see identity.h. */
#include "mesh/identity.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/hex.h"

#define IDENTITY_FILE "key"
#define IDENTITY_MAGIC "llmesh-ed25519-key"
#define IDENTITY_FORMAT_VERSION 1
#define IDENTITY_FILE_MAX 512         /* the real file is 165 bytes */
#define IDENTITY_SECRET_FILE "mesh-secret"
#define IDENTITY_SECRET_MAGIC "llmesh-mesh-secret 1\n"

/* ---- hex --------------------------------------------------------------------*/

static int identity_hex_digit(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Exactly 2n hex digits at hex (the caller checks what follows). */
static int identity_hex_decode(const char *hex, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int hi = identity_hex_digit(hex[2 * i]);
        int lo = hi < 0 ? -1 : identity_hex_digit(hex[2 * i + 1]);
        if (lo < 0) return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

void identity_id_hex(const uint8_t id[IDENTITY_KEY_BYTES], char out[IDENTITY_HEX_BYTES])
{
    hex_encode(id, IDENTITY_KEY_BYTES, out);
}

int identity_id_from_hex(const char *hex, uint8_t id[IDENTITY_KEY_BYTES])
{
    if (strlen(hex) != 2 * IDENTITY_KEY_BYTES) return -1;
    return identity_hex_decode(hex, id, IDENTITY_KEY_BYTES);
}

/* ---- signatures -------------------------------------------------------------*/

static int identity_import(const identity *id, gnutls_privkey_t *key)
{
    gnutls_datum_t pub = {(unsigned char *)id->public_key, IDENTITY_KEY_BYTES};
    gnutls_datum_t sec = {(unsigned char *)id->secret, IDENTITY_KEY_BYTES};
    int rc = gnutls_privkey_init(key);
    if (rc < 0) return rc;
    rc = gnutls_privkey_import_ecc_raw(*key, GNUTLS_ECC_CURVE_ED25519, &pub, NULL, &sec);
    if (rc < 0) gnutls_privkey_deinit(*key);
    return rc;
}

int identity_sign(const identity *id, const void *data, size_t len,
                  uint8_t sig[IDENTITY_SIG_BYTES], char *err, size_t errlen)
{
    gnutls_privkey_t key;
    int rc = identity_import(id, &key);
    if (rc < 0) {
        snprintf(err, errlen, "cannot use the node key: %s", gnutls_strerror(rc));
        return -1;
    }
    gnutls_datum_t msg = {(unsigned char *)data, (unsigned)len}, out = {0};
    rc = gnutls_privkey_sign_data2(key, GNUTLS_SIGN_EDDSA_ED25519, 0, &msg, &out);
    gnutls_privkey_deinit(key);
    if (rc < 0 || out.size != IDENTITY_SIG_BYTES) {
        snprintf(err, errlen, "cannot sign with the node key: %s",
                 rc < 0 ? gnutls_strerror(rc) : "unexpected signature size");
        gnutls_free(out.data);
        return -1;
    }
    memcpy(sig, out.data, IDENTITY_SIG_BYTES);
    gnutls_free(out.data);
    return 0;
}

int identity_verify(const uint8_t public_key[IDENTITY_KEY_BYTES], const void *data, size_t len,
                    const uint8_t sig[IDENTITY_SIG_BYTES])
{
    gnutls_pubkey_t key;
    if (gnutls_pubkey_init(&key) < 0) return 0;
    gnutls_datum_t pub = {(unsigned char *)public_key, IDENTITY_KEY_BYTES};
    gnutls_datum_t msg = {(unsigned char *)data, (unsigned)len};
    gnutls_datum_t s = {(unsigned char *)sig, IDENTITY_SIG_BYTES};
    int ok = gnutls_pubkey_import_ecc_raw(key, GNUTLS_ECC_CURVE_ED25519, &pub, NULL) >= 0 &&
             gnutls_pubkey_verify_data2(key, GNUTLS_SIGN_EDDSA_ED25519, 0, &msg, &s) >= 0;
    gnutls_pubkey_deinit(key);
    return ok;
}

void identity_wipe(identity *id)
{
    explicit_bzero(id->secret, sizeof id->secret);
}

/* ---- the key file -----------------------------------------------------------*/

/* mkdir -p with mode 0700 for the parts that do not exist yet; existing
 * directories keep their mode (the user chose it). */
static int identity_make_dir(const char *dir, char *err, size_t errlen)
{
    char path[4096];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof path) {
        snprintf(err, errlen, "home directory path '%s' is empty or too long", dir);
        return -1;
    }
    memcpy(path, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (path[i] != '/' && path[i] != 0) continue;
        char saved = path[i];
        path[i] = 0;
        if (mkdir(path, 0700) != 0 && errno != EEXIST) {
            snprintf(err, errlen, "cannot create directory %s: %s", path, strerror(errno));
            return -1;
        }
        path[i] = saved;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "%s is not a directory", dir);
        return -1;
    }
    return 0;
}

/* Signing and verifying a fixed message proves the public key in the file is
 * the one of its secret. */
static int identity_check_pair(const identity *id)
{
    static const char probe[] = "llmesh identity self-check";
    uint8_t sig[IDENTITY_SIG_BYTES];
    char ignored[128];
    return identity_sign(id, probe, sizeof probe, sig, ignored, sizeof ignored) == 0 &&
           identity_verify(id->public_key, probe, sizeof probe, sig);
}

/* Parses the three lines of identity.h. Returns 0, or -1 with the reason. */
static int identity_parse(const char *text, size_t len, identity *out, const char *path,
                          char *err, size_t errlen)
{
    const char *p = text, *end = text + len;
    char magic[64];
    int magic_len = snprintf(magic, sizeof magic, "%s %d\n", IDENTITY_MAGIC, IDENTITY_FORMAT_VERSION);
    if ((size_t)(end - p) < strlen(IDENTITY_MAGIC) + 1 ||
        memcmp(p, IDENTITY_MAGIC " ", strlen(IDENTITY_MAGIC) + 1) != 0) {
        snprintf(err, errlen, "%s is not a llmesh key file (it should start with '%s'); "
                 "move it away to make a new identity", path, IDENTITY_MAGIC);
        return -1;
    }
    if ((size_t)(end - p) < (size_t)magic_len || memcmp(p, magic, (size_t)magic_len) != 0) {
        snprintf(err, errlen, "%s has a key format this llmesh does not know (expected version %d)",
                 path, IDENTITY_FORMAT_VERSION);
        return -1;
    }
    p += magic_len;
    static const char *const labels[2] = {"secret ", "public "};
    uint8_t *fields[2] = {out->secret, out->public_key};
    for (int i = 0; i < 2; i++) {
        size_t label_len = strlen(labels[i]);
        if ((size_t)(end - p) < label_len + 2 * IDENTITY_KEY_BYTES + 1 ||
            memcmp(p, labels[i], label_len) != 0 ||
            identity_hex_decode(p + label_len, fields[i], IDENTITY_KEY_BYTES) != 0 ||
            p[label_len + 2 * IDENTITY_KEY_BYTES] != '\n') {
            snprintf(err, errlen, "%s is malformed: line %d should be '%s' and 64 hex digits",
                     path, i + 2, labels[i]);
            return -1;
        }
        p += label_len + 2 * IDENTITY_KEY_BYTES + 1;
    }
    if (p != end) {
        snprintf(err, errlen, "%s is malformed: unexpected text after the public key", path);
        return -1;
    }
    if (!identity_check_pair(out)) {
        snprintf(err, errlen, "%s is corrupt: its public key does not belong to its secret", path);
        return -1;
    }
    return 0;
}

/* Reads a private file of the home (the key, the mesh secret) into buf
 * (cap - 1 bytes at most; the rest of buf is wiped by the caller). A file
 * that group or others may read is refused, like ssh does: whoever reads it
 * can impersonate the node or join its mesh. 1 read (*len), 0 absent, -1
 * error. */
static int identity_read_private(const char *path, char *buf, size_t cap, size_t *len,
                                 char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return 0;
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    ssize_t got = -1;
    if (fstat(fd, &st) != 0) {
        snprintf(err, errlen, "cannot stat %s: %s", path, strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s is not a regular file", path);
    } else if (st.st_mode & 077) {
        snprintf(err, errlen, "%s is accessible by group or others (mode %03o); "
                 "run chmod 600 %s", path, (unsigned)(st.st_mode & 0777), path);
    } else {
        size_t n = 0;
        while (n < cap) {
            ssize_t r = read(fd, buf + n, cap - n);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) { got = r < 0 ? -1 : (ssize_t)n; break; }
            n += (size_t)r;
            got = (ssize_t)n;
        }
        if (got < 0) snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        else if ((size_t)got >= cap) {
            snprintf(err, errlen, "%s is too large to be a llmesh key file", path);
            got = -1;
        }
    }
    close(fd);
    if (got < 0) return -1;
    *len = (size_t)got;
    return 1;
}

/* 1 loaded, 0 absent, -1 error. */
static int identity_load(const char *path, identity *out, char *err, size_t errlen)
{
    char buf[IDENTITY_FILE_MAX + 1];
    size_t len = 0;
    int rc = identity_read_private(path, buf, sizeof buf, &len, err, errlen);
    if (rc > 0) rc = identity_parse(buf, len, out, path, err, errlen) == 0 ? 1 : -1;
    explicit_bzero(buf, sizeof buf);
    return rc;
}

static int identity_generate(identity *out, char *err, size_t errlen)
{
    gnutls_privkey_t key;
    gnutls_datum_t x = {0}, y = {0}, k = {0};
    gnutls_ecc_curve_t curve;
    int rc = gnutls_privkey_init(&key);
    if (rc >= 0) {
        rc = gnutls_privkey_generate(key, GNUTLS_PK_EDDSA_ED25519,
                                     GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_ED25519), 0);
        if (rc >= 0) rc = gnutls_privkey_export_ecc_raw2(key, &curve, &x, &y, &k, 0);
        gnutls_privkey_deinit(key);
    }
    int ok = rc >= 0 && x.size == IDENTITY_KEY_BYTES && k.size == IDENTITY_KEY_BYTES;
    if (ok) {
        memcpy(out->public_key, x.data, IDENTITY_KEY_BYTES);
        memcpy(out->secret, k.data, IDENTITY_KEY_BYTES);
    } else {
        snprintf(err, errlen, "cannot generate an Ed25519 key: %s",
                 rc < 0 ? gnutls_strerror(rc) : "unexpected key size");
    }
    if (k.data) explicit_bzero(k.data, k.size);
    gnutls_free(x.data);
    gnutls_free(y.data);
    gnutls_free(k.data);
    return ok ? 0 : -1;
}

static int identity_write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Writes a private file of the home (mode 0600) without ever exposing a
 * half-written one: a temp file, then link() to the final name, which fails
 * if another process made the file meanwhile (then that one wins and is
 * loaded: two processes sharing a home agree on one identity). rename() is
 * the fallback on file systems without hard links, and the way when replace
 * is set. 1 written, 0 lost the race, -1 error. */
static int identity_write_private(const char *dir, const char *path, const char *name,
                                  const char *text, size_t n, int replace, char *err, size_t errlen)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s/%s.tmp.%ld", dir, name, (long)getpid());
    unlink(tmp);   /* a leftover of a crashed process that had our pid */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
        return -1;
    }
    int bad = identity_write_all(fd, text, n) != 0 || fsync(fd) != 0;
    int saved = errno;
    if (close(fd) != 0 && !bad) { bad = 1; saved = errno; }
    if (bad) {
        snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(saved));
        unlink(tmp);
        return -1;
    }
    int rc = 1;
    if (replace || link(tmp, path) != 0) {
        if (!replace && errno == EEXIST) {
            rc = 0;
        } else if (rename(tmp, path) != 0) {
            snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
            rc = -1;
        }
    }
    unlink(tmp);
    /* Make the new directory entry durable too. */
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    return rc;
}

static int identity_store(const char *dir, const char *path, const identity *id,
                          char *err, size_t errlen)
{
    char text[256], sec[IDENTITY_HEX_BYTES], pub[IDENTITY_HEX_BYTES];
    hex_encode(id->secret, IDENTITY_KEY_BYTES, sec);
    hex_encode(id->public_key, IDENTITY_KEY_BYTES, pub);
    int n = snprintf(text, sizeof text, "%s %d\nsecret %s\npublic %s\n", IDENTITY_MAGIC,
                     IDENTITY_FORMAT_VERSION, sec, pub);
    explicit_bzero(sec, sizeof sec);
    int rc = identity_write_private(dir, path, IDENTITY_FILE, text, (size_t)n, 0, err, errlen);
    explicit_bzero(text, sizeof text);
    return rc;
}

int identity_load_or_create(const char *dir, identity *out, int *created, char *err, size_t errlen)
{
    char path[4200];
    memset(out, 0, sizeof *out);
    if (created) *created = 0;
    if (identity_make_dir(dir, err, errlen) != 0) return -1;
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, IDENTITY_FILE) >= sizeof path) {
        snprintf(err, errlen, "home directory path is too long");
        return -1;
    }
    int rc = identity_load(path, out, err, errlen);
    if (rc != 0) return rc > 0 ? 0 : -1;

    if (identity_generate(out, err, errlen) != 0) return -1;
    rc = identity_store(dir, path, out, err, errlen);
    if (rc < 0) {
        identity_wipe(out);
        return -1;
    }
    if (rc == 0) {
        /* Another process created the key first: use its key. */
        identity_wipe(out);
        return identity_load(path, out, err, errlen) > 0 ? 0 : -1;
    }
    if (created) *created = 1;
    return 0;
}

/* ---- the mesh secret ---------------------------------------------------------*/

/* 1 loaded, 0 absent, -1 error. */
static int identity_secret_load(const char *path, uint8_t out[IDENTITY_SECRET_BYTES],
                                char *err, size_t errlen)
{
    char buf[IDENTITY_FILE_MAX + 1];
    size_t len = 0;
    int rc = identity_read_private(path, buf, sizeof buf, &len, err, errlen);
    size_t magic = strlen(IDENTITY_SECRET_MAGIC), label = strlen("secret ");
    if (rc > 0 && (len != magic + label + 2 * IDENTITY_SECRET_BYTES + 1 ||
                   memcmp(buf, IDENTITY_SECRET_MAGIC, magic) != 0 ||
                   memcmp(buf + magic, "secret ", label) != 0 ||
                   identity_hex_decode(buf + magic + label, out, IDENTITY_SECRET_BYTES) != 0 ||
                   buf[len - 1] != '\n')) {
        snprintf(err, errlen, "%s is not a llmesh mesh secret file (two lines: '%.*s' and "
                 "'secret' with 64 hex digits); move it away, then join with a token", path,
                 (int)magic - 1, IDENTITY_SECRET_MAGIC);
        explicit_bzero(out, IDENTITY_SECRET_BYTES);
        rc = -1;
    }
    explicit_bzero(buf, sizeof buf);
    return rc;
}

static int identity_secret_store(const char *dir, const char *path,
                                 const uint8_t secret[IDENTITY_SECRET_BYTES], int replace,
                                 char *err, size_t errlen)
{
    char text[160], hex[2 * IDENTITY_SECRET_BYTES + 1];
    hex_encode(secret, IDENTITY_SECRET_BYTES, hex);
    int n = snprintf(text, sizeof text, "%ssecret %s\n", IDENTITY_SECRET_MAGIC, hex);
    explicit_bzero(hex, sizeof hex);
    int rc = identity_write_private(dir, path, IDENTITY_SECRET_FILE, text, (size_t)n, replace,
                                    err, errlen);
    explicit_bzero(text, sizeof text);
    return rc;
}

int identity_mesh_secret(const char *dir, const uint8_t *from_token,
                         uint8_t out[IDENTITY_SECRET_BYTES], identity_secret_origin *origin,
                         char *err, size_t errlen)
{
    char path[4200];
    if (identity_make_dir(dir, err, errlen) != 0) return -1;
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, IDENTITY_SECRET_FILE) >= sizeof path) {
        snprintf(err, errlen, "home directory path is too long");
        return -1;
    }
    uint8_t held[IDENTITY_SECRET_BYTES];
    int rc = identity_secret_load(path, held, err, errlen);
    if (rc < 0) return -1;
    if (from_token) {
        /* The token names the mesh to be in: keep its secret (a home that
         * was in another mesh moves to this one). */
        int same = rc > 0 && !memcmp(held, from_token, IDENTITY_SECRET_BYTES);
        explicit_bzero(held, sizeof held);
        memcpy(out, from_token, IDENTITY_SECRET_BYTES);
        *origin = same ? IDENTITY_SECRET_LOADED : rc > 0 ? IDENTITY_SECRET_REPLACED
                                                         : IDENTITY_SECRET_FROM_TOKEN;
        if (same) return 0;
        return identity_secret_store(dir, path, out, 1, err, errlen) < 0 ? -1 : 0;
    }
    if (rc > 0) {
        memcpy(out, held, IDENTITY_SECRET_BYTES);
        explicit_bzero(held, sizeof held);
        *origin = IDENTITY_SECRET_LOADED;
        return 0;
    }
    /* The first node of a new mesh. */
    int grc = gnutls_rnd(GNUTLS_RND_KEY, out, IDENTITY_SECRET_BYTES);
    if (grc < 0) {
        snprintf(err, errlen, "cannot make a mesh secret: %s", gnutls_strerror(grc));
        return -1;
    }
    *origin = IDENTITY_SECRET_CREATED;
    rc = identity_secret_store(dir, path, out, 0, err, errlen);
    if (rc == 0) {
        /* Another process sharing the home made one first: use it. */
        *origin = IDENTITY_SECRET_LOADED;
        rc = identity_secret_load(path, out, err, errlen) > 0 ? 1 : -1;
    }
    if (rc < 0) explicit_bzero(out, IDENTITY_SECRET_BYTES);
    return rc < 0 ? -1 : 0;
}

/* ---- home directory ----------------------------------------------------------*/

int identity_home_dir(const char *flag, char *out, size_t cap, char *err, size_t errlen)
{
    const char *env = getenv("LLMESH_HOME");
    const char *home = getenv("HOME");
    int n;
    if (flag && *flag) {
        n = snprintf(out, cap, "%s", flag);
    } else if (env && *env) {
        n = snprintf(out, cap, "%s", env);
    } else if (home && *home) {
        n = snprintf(out, cap, "%s/.llmesh", home);
    } else {
        snprintf(err, errlen, "no home directory: pass --home DIR or set LLMESH_HOME");
        return -1;
    }
    if (n < 0 || (size_t)n >= cap) {
        snprintf(err, errlen, "home directory path is too long");
        return -1;
    }
    return 0;
}
