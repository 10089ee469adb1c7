/*
 * Tutorial step 6 (docs/TUTORIAL.md): at-most-once calls and the reply log.
 * A call's reply is lost on its way back (relay.c drops it) and the server is stopped; a new
 * server created on the same reply log directory, at the same address, answers the client's
 * re-sent call from the log: the handler does not run a second time. A new call then runs.
 * usage: step6_at_most_once [DIR]   (where the log goes; default: a new directory in /tmp,
 *                                    removed at the end)
 *        step6_at_most_once --no-log (the same without a log: the new server has forgotten
 *                                    the call, so its outcome is unknown, ARPC_ECONNLOST)
 * Exits 0 when the handler ran once for the first call and once for the second, and the first
 * call ended ARPC_OK (ARPC_ECONNLOST without a log), 1 otherwise.
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpc/arpc.h>

#include "relay.h"

static atomic_int runs; /* how often the handler ran, in either server */
static sem_t ran;

static void deposit(arpc_request *req, void *ctx)
{
    (void)ctx;
    int run = atomic_fetch_add(&runs, 1) + 1;
    char out[64];
    int n = snprintf(out, sizeof out, "deposit done by run %d of the handler", run);
    arpc_reply(req, out, (size_t)n);
    sem_post(&ran);
}

/* A server whose at-most-once calls' results go to a log in dir (NULL: no log) before their
 * replies leave. */
static arpc_server *bank_server(const char *dir, const char *listen, char *addr, size_t addrlen)
{
    char why[ARPC_ERRBUF_SIZE] = "";
    arpc_server_options opts = {.log_dir = dir, .errbuf = why, .errbuf_len = sizeof why};
    arpc_server *s;
    int rc = arpc_server_create(&s, &opts); /* reads the log back, if there is one */
    if (rc != ARPC_OK) {
        fprintf(stderr, "server: %s: %s\n", arpc_errname(rc), why);
        return NULL;
    }
    rc = arpc_server_register(s, "bank.Deposit", deposit, NULL, NULL);
    if (rc == ARPC_OK)
        rc = arpc_server_listen(s, listen, addr, addrlen);
    if (rc != ARPC_OK) {
        fprintf(stderr, "server on %s: %s\n", listen, arpc_errname(rc));
        arpc_server_destroy(s);
        return NULL;
    }
    return s;
}

/* Waits for the call and prints its outcome and reply. */
static int report(const char *what, arpc_future *f)
{
    int status = arpc_future_wait(f);
    size_t len;
    const char *reply = arpc_future_data(f, &len);
    printf("%s: %s, \"%.*s\"\n", what, arpc_errname(status), (int)len, reply != NULL ? reply : "");
    arpc_future_release(f);
    return status;
}

/* Removes dir and the files in it (the reply log has no subdirectories). */
static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        char path[4096];
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0 &&
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name) < (int)sizeof path)
            unlink(path);
    }
    if (d != NULL)
        closedir(d);
    rmdir(dir);
}

int main(int argc, char **argv)
{
    char tmp[] = "/tmp/arpc-tutorial-XXXXXX";
    bool no_log = argc > 1 && strcmp(argv[1], "--no-log") == 0;
    const char *dir = no_log ? NULL : argc > 1 ? argv[1] : mkdtemp(tmp);
    if (dir == NULL && !no_log)
        return 1;
    sem_init(&ran, 0, 0);
    char where[128], addr[256], via[256];
    relay *net;
    /* A unix socket: unlike a tcp port, its path cannot be taken by someone else meanwhile. */
    snprintf(where, sizeof where, "unix:///tmp/arpc-tutorial-%d.sock", (int)getpid());
    arpc_server *server = bank_server(dir, where, addr, sizeof addr);
    arpc_client *client;
    if (server == NULL || relay_start(&net, addr, via, sizeof via) != 0 ||
        arpc_client_connect(&client, via, NULL) != ARPC_OK)
        return 1;

    /* The reply to this call is lost, and the server goes away. */
    relay_drop_replies(net, true);
    int64_t amount = 50;
    arpc_future *f = arpc_call_async(client, "bank.Deposit", &amount, sizeof amount, 10000);
    sem_wait(&ran);               /* the handler has run, and replied */
    arpc_server_destroy(server);  /* returns once the reply's record is written */
    printf("the handler ran %d time(s); its reply was lost; the server stopped\n", atomic_load(&runs));

    /* A new server on the same log and address; the client reconnects and sends the call
     * again, with the same sequence number: the log has its result. */
    char again[256];
    server = bank_server(dir, addr, again, sizeof again);
    if (server == NULL)
        return 1;
    relay_cut(net);
    int ok = report("the first call, after the restart", f) == (no_log ? ARPC_ECONNLOST : ARPC_OK);
    printf("the handler ran %d time(s)\n", atomic_load(&runs));
    ok &= atomic_load(&runs) == 1;

    /* A new call is a new number: it runs. */
    f = arpc_call_async(client, "bank.Deposit", &amount, sizeof amount, 10000);
    ok &= report("a second call", f) == ARPC_OK;
    ok &= atomic_load(&runs) == 2;

    arpc_client_close(client);
    arpc_server_destroy(server);
    relay_stop(net);
    if (argc <= 1)
        remove_dir(dir);
    sem_destroy(&ran);
    return ok ? 0 : 1;
}
