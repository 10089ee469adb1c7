/*
 * kv_client [--tls-ca FILE] --connect ADDR put KEY VALUE
 * kv_client [--tls-ca FILE] --connect ADDR get KEY
 * --tls-ca: for a tls:// ADDR, the CA (or self-signed certificate) to trust instead of the
 * system's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arpc/arpc.h"

static int usage(void)
{
    fprintf(stderr, "usage: kv_client [--tls-ca FILE] --connect ADDR put KEY VALUE | get KEY\n");
    return 2;
}

int main(int argc, char **argv)
{
    arpc_tls_options tls = {0};
    if (argc > 2 && strcmp(argv[1], "--tls-ca") == 0) {
        tls.ca_file = argv[2];
        argc -= 2;
        argv += 2;
    }
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
    arpc_client_options o = {.errbuf = why, .errbuf_len = sizeof(why), .tls = tls.ca_file != NULL ? &tls : NULL};
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
        if (req == NULL) {
            fprintf(stderr, "kv_client: out of memory\n");
            arpc_client_close(c);
            return 1;
        }
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
