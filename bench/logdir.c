/* The reply log's directory for one run: created fresh, removed afterwards (see logdir.h). */
#define _XOPEN_SOURCE 700
#include "logdir.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* mkdir -p: each missing component in turn. */
static int make_parents(const char *dir)
{
    char buf[4096];
    int n = snprintf(buf, sizeof(buf), "%s", dir);
    if (n <= 0 || (size_t)n >= sizeof(buf)) {
        fprintf(stderr, "arpc-bench: --log: path too long\n");
        return -1;
    }
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST) {
            fprintf(stderr, "arpc-bench: --log: cannot create %s: %s\n", buf, strerror(errno));
            return -1;
        }
        if (c == '\0')
            return 0;
        *p = c;
    }
}

int bench_logdir_create(const char *parent, char *path, size_t len)
{
    if (make_parents(parent) != 0)
        return -1;
    int n = snprintf(path, len, "%s/arpc-bench-XXXXXX", parent);
    if (n < 0 || (size_t)n >= len) {
        fprintf(stderr, "arpc-bench: --log: path too long\n");
        return -1;
    }
    if (mkdtemp(path) == NULL) {
        fprintf(stderr, "arpc-bench: --log: cannot create a directory in %s: %s\n", parent,
                strerror(errno));
        return -1;
    }
    return 0;
}

static int remove_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)type;
    (void)ftw;
    if (remove(path) != 0)
        fprintf(stderr, "arpc-bench: cannot remove %s: %s\n", path, strerror(errno));
    return 0; /* go on: remove what can be removed */
}

void bench_logdir_remove(const char *path)
{
    if (nftw(path, remove_one, 16, FTW_DEPTH | FTW_PHYS) != 0)
        fprintf(stderr, "arpc-bench: cannot remove %s: %s\n", path, strerror(errno));
}
