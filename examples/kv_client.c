/*
 * kv_client --connect ADDR put KEY VALUE
 * kv_client --connect ADDR get KEY
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arpc/arpc.h"

static int usage(void)
{
    fprintf(stderr, "usage: kv_client --connect ADDR put KEY VALUE | get KEY\n");
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 5 || strcmp(argv[1], "--connect") != 0)
        return usage();
    const char *addr = argv[2], *op = argv[3], *key = argv[4];
    bool put = strcmp(op, "put") == 0;
    if ((put && argc != 6) || (!put && (strcmp(op, "get") != 0 || argc != 5)))
        return usage();
    size_t klen = strlen(key);
    if (klen > 65535) {
        fprintf(stderr, "kv_client: key too long\n");
        return 2;
    }
    arpc_client *c;
    char why[ARPC_ERRBUF_SIZE] = "";
    arpc_client_options o = {.errbuf = why, .errbuf_len = sizeof(why)};
    int rc = arpc_client_connect(&c, addr, &o);
    if (rc != ARPC_OK) {
        /* The code says what kind of failure; why says what exactly, in words. */
        fprintf(stderr, "kv_client: cannot connect (%s): %s\n", arpc_errname(rc), why);
        return 1;
    }
    void *reply = NULL;
    size_t rlen = 0;
    if (put) {
        size_t vlen = strlen(argv[5]);
        unsigned char *req = malloc(2 + klen + vlen);
        req[0] = (unsigned char)(klen & 0xff);
        req[1] = (unsigned char)(klen >> 8);
        memcpy(req + 2, key, klen);
        memcpy(req + 2 + klen, argv[5], vlen);
        rc = arpc_call(c, "kv.put", req, 2 + klen + vlen, &reply, &rlen, 5000);
        free(req);
    } else {
        rc = arpc_call(c, "kv.get", key, klen, &reply, &rlen, 5000);
    }
    if (rc == ARPC_OK)
        printf("%.*s\n", (int)rlen, (const char *)reply);
    else if (reply != NULL)
        fprintf(stderr, "kv_client: %s: %.*s\n", arpc_errname(rc), (int)rlen, (const char *)reply);
    else
        fprintf(stderr, "kv_client: %s: %s\n", arpc_errname(rc), arpc_strerror(rc));
    arpc_free(reply);
    arpc_client_close(c);
    return rc == ARPC_OK ? 0 : 1;
}
