/*
 * At-most-once namespaces: the key the reply cache (and the reply log) know a client by.
 *
 * A client picks its own client id, so a client id alone says nothing about who sent it: a
 * client that learnt another's id could be answered from its cached replies, or fill them
 * with its own. Where the server's checks named the client (arpc/auth.h: the token's
 * identity, or the uid of a unix peer), the key is SipHash-2-4 of (identity, client id)
 * under a 128-bit secret of the server's; without an identity it is the client id itself,
 * as before. Without the secret nobody can choose a client id whose key meets another
 * identity's (base/siphash.h); by chance two keys meet with probability 2^-64, as two
 * random client ids do.
 *
 *
 * A client whose id the application chose also sends an incarnation (random per client
 * object): the same id in the next process, numbering its calls from 1 again, must not be
 * answered with the replies its predecessor left. With an incarnation the key is SipHash of
 * (identity, client id, incarnation), identity 0 when there is none.
 *
 * The secret must outlive a restart wherever the cache does: with a reply log it is kept in
 * the log's directory (NAMESPACE_FILE, written once through a temporary file and a rename,
 * so it is either whole or absent); without one, a fresh secret per server is enough. The
 * log's records keep the key as they kept the client id: their format does not change.
 *
 * A log that remembers calls is useless without its secret, and worse than useless with a
 * new one: the epoch is unchanged, so clients re-send their unanswered calls, which are then
 * looked up under keys nobody wrote and run again. So a fresh secret is made only for a log
 * that remembers no client (a new directory; or one whose clients all expired, or whose
 * first start crashed before the secret was written); a log that remembers clients and lost
 * its secret refuses to start, saying so.
 *
 * A secret that is there but is not the log's (a key restored from the wrong backup, or one
 * made by hand for a log that had one) is the same danger, silently. So beside the key a
 * check is kept (CHECK_FILE: SipHash of CHECK_MSG and the log's epoch under the secret,
 * written after the key the same way): a key the check does not match, beside a log that
 * remembers clients, refuses to start. The epoch ties the pair to its log: a wrong backup
 * restores both files, which agree with each other, but not with this log's epoch (a
 * review: a check of the key alone let another directory's pair in, and a re-sent call ran
 * again). A check of the key alone (written by an earlier version) is taken and written
 * again with the epoch: it cannot tell the log's own key from another log's whose pair was
 * backed up before that version, so such backups stay unguarded (as is a key without a check,
 * from before the check existed, which is written from the key there; or a crash between the
 * two files). And since the key is written after the log's first segment, a
 * key with no segment beside it means the segments were removed: core/server_journal.c
 * refuses that too (namespace_expected).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arpc/error.h"
#include "base/file_io.h"
#include "base/le.h"
#include "base/siphash.h"
#include "core/server_internal.h"

#define NAMESPACE_FILE "namespace.key"
#define NAMESPACE_TMP "namespace.key.tmp"
#define CHECK_FILE "namespace.check"
#define CHECK_TMP "namespace.check.tmp"
#define CHECK_MSG "arpc namespace.key check"
#define CHECK_SIZE 8

static int fail(char *why, size_t whylen, const char *dir, const char *what, int err)
{
    snprintf(why, whylen, "namespace secret in %s: %s failed: %s", dir, what, strerror(err));
    return ARPC_ESYSTEM;
}

static int fresh_secret(uint8_t *key, char *why, size_t whylen)
{
    if (getrandom(key, ARPC_SIPHASH_KEY_SIZE, 0) == ARPC_SIPHASH_KEY_SIZE)
        return ARPC_OK;
    return fail(why, whylen, "memory", "getrandom", errno);
}

/* Reads the size bytes of DIR/name; ARPC_EAGAIN when it does not exist. */
static int read_small(int dirfd, const char *dir, const char *name, uint8_t *out, size_t size, char *why,
                      size_t whylen)
{
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? ARPC_EAGAIN : fail(why, whylen, dir, "open", errno);
    size_t n;
    int err = arpc_file_read_all(fd, out, size, 0, &n); /* (short reads and signals: NFS, FUSE) */
    close(fd);
    if (err != 0)
        return fail(why, whylen, dir, "read", err);
    if (n == size)
        return ARPC_OK;
    /* Never written short (see the top): someone else's file. Refuse rather than guess. */
    snprintf(why, whylen, "namespace secret: %s/%s holds %zu bytes, not %zu", dir, name, n, size);
    return ARPC_EPROTO;
}

/* Writes DIR/name whole or not at all: a temporary file, synced, renamed, the directory synced. */
static int write_small(int dirfd, const char *dir, const char *name, const char *tmp, const uint8_t *bytes,
                       size_t size, char *why, size_t whylen)
{
    int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return fail(why, whylen, dir, "create", errno);
    int err = arpc_file_write_all(fd, bytes, size, 0);
    const char *call = "write";
    if (err == 0) {
        err = arpc_file_sync(fd, false);
        call = "fsync";
    }
    close(fd);
    if (err != 0)
        return fail(why, whylen, dir, call, err);
    if (renameat(dirfd, tmp, dirfd, name) != 0)
        return fail(why, whylen, dir, "rename", errno);
    if ((err = arpc_file_sync(dirfd, false)) != 0)
        return fail(why, whylen, dir, "fsync", err);
    return ARPC_OK;
}

/* The check of key for the log of epoch (0: the key alone, as before the epoch was in it). */
static void check_of(const uint8_t *key, uint64_t epoch, uint8_t out[CHECK_SIZE])
{
    uint8_t msg[sizeof(CHECK_MSG) - 1 + 8];
    memcpy(msg, CHECK_MSG, sizeof(CHECK_MSG) - 1);
    le_st64(msg + sizeof(CHECK_MSG) - 1, epoch);
    le_st64(out, arpc_siphash24(key, msg, epoch != 0 ? sizeof(msg) : sizeof(CHECK_MSG) - 1));
}

static int write_check(arpc_server *s, int dirfd, const char *dir, char *why, size_t whylen)
{
    uint8_t check[CHECK_SIZE];
    check_of(s->sv_ns_secret, s->sv_epoch, check);
    return write_small(dirfd, dir, CHECK_FILE, CHECK_TMP, check, sizeof(check), why, whylen);
}

/* The key read from the directory, beside a log: is it the log's? (see the top) */
static int verify_secret(arpc_server *s, int dirfd, const char *dir, char *why, size_t whylen)
{
    uint8_t check[CHECK_SIZE], want[CHECK_SIZE];
    int rc = read_small(dirfd, dir, CHECK_FILE, check, sizeof(check), why, whylen);
    if (rc == ARPC_EAGAIN)
        return write_check(s, dirfd, dir, why, whylen);
    if (rc != ARPC_OK)
        return rc;
    check_of(s->sv_ns_secret, s->sv_epoch, want);
    if (memcmp(check, want, sizeof(check)) == 0)
        return ARPC_OK;
    check_of(s->sv_ns_secret, 0, want); /* the key's alone: written by an earlier version */
    if (memcmp(check, want, sizeof(check)) == 0 || !arpc_reply_log_had_clients(s->sv_log))
        return write_check(s, dirfd, dir, why, whylen); /* now tied to the log (or nothing to lose) */
    snprintf(why, whylen,
             "namespace secret %s/%s is not the one the reply log there was written with (%s does not match it "
             "and the log's epoch): "
             "the calls the log remembers would run again; refusing to start (restore the log's own %s from a "
             "backup; or move the directory away to start empty)",
             dir, NAMESPACE_FILE, CHECK_FILE, NAMESPACE_FILE);
    return ARPC_EPROTO;
}

int namespace_init(arpc_server *s, const char *log_dir, char *why, size_t whylen)
{
    if (log_dir == NULL)
        return fresh_secret(s->sv_ns_secret, why, whylen);
    int dirfd = open(log_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0)
        return fail(why, whylen, log_dir, "open", errno);
    /* The reply log's lock (taken by journal_open) keeps other servers out of the directory. */
    int rc = read_small(dirfd, log_dir, NAMESPACE_FILE, s->sv_ns_secret, ARPC_SIPHASH_KEY_SIZE, why, whylen);
    if (rc == ARPC_OK)
        rc = verify_secret(s, dirfd, log_dir, why, whylen);
    if (rc == ARPC_EAGAIN && arpc_reply_log_had_clients(s->sv_log)) {
        snprintf(why, whylen,
                 "namespace secret %s/%s is missing, but the reply log there remembers clients: a new "
                 "secret would let calls made before run again; refusing to start (restore %s from a backup; or move "
                 "the directory away to start empty; a log from arpc 0.2, which kept no secret and has no %s "
                 "either, can take a new one: head -c 16 /dev/urandom >%s/%s)",
                 log_dir, NAMESPACE_FILE, NAMESPACE_FILE, CHECK_FILE, log_dir, NAMESPACE_FILE);
        rc = ARPC_EPROTO;
    }
    if (rc == ARPC_EAGAIN) {
        rc = fresh_secret(s->sv_ns_secret, why, whylen);
        if (rc == ARPC_OK)
            rc = write_small(dirfd, log_dir, NAMESPACE_FILE, NAMESPACE_TMP, s->sv_ns_secret, ARPC_SIPHASH_KEY_SIZE,
                             why, whylen);
        if (rc == ARPC_OK)
            rc = write_check(s, dirfd, log_dir, why, whylen);
    }
    close(dirfd);
    return rc;
}

bool namespace_expected(const char *log_dir)
{
    char path[4096];
    struct stat st;
    int n = snprintf(path, sizeof(path), "%s/%s", log_dir, NAMESPACE_FILE);
    return n > 0 && (size_t)n < sizeof(path) && lstat(path, &st) == 0;
}

uint64_t namespace_key(const arpc_server *s, uint64_t identity, uint64_t client_id, uint64_t incarnation)
{
    if ((identity == 0 && incarnation == 0) || client_id == 0) /* client id 0: not deduplicated at all */
        return client_id;
    uint8_t msg[24];
    le_st64(msg, identity);
    le_st64(msg + 8, client_id);
    le_st64(msg + 16, incarnation);
    /* Without an incarnation (an older client) the key is what it was before incarnations,
     * so a reply log written then still finds its clients. */
    uint64_t key = arpc_siphash24(s->sv_ns_secret, msg, incarnation != 0 ? 24 : 16);
    return key != 0 ? key : 1; /* 0 means "no client id" to the cache */
}
