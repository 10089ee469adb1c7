/*
 * Tutorial step 5 (docs/TUTORIAL.md): a handler that replies later, from a thread of the
 * application's own, and one-way messages.
 * mail.Send's handler hands each request to a "mailer" thread and returns at once, so the
 * server's worker is free for the next call; the mailer waits until it holds three and answers
 * them newest first, to show that replies may come in any order. audit.Log takes one-way
 * messages (arpc_notify): no reply, no outcome.
 * Exits 0 when the replies and the one-way messages all arrived, 1 otherwise.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <arpc/arpc.h>

enum { MAILS = 3, EVENTS = 3 };

/* ---- the server side ---- */

struct job {
    arpc_request *req;
    char text[65];
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t arrived = PTHREAD_COND_INITIALIZER;
static struct job *jobs[MAILS];
static int njobs;

/* Runs on a worker; returns without replying. The request stays valid until it is answered,
 * but what its accessors lend may not outlive the handler's return: copy what you need. */
static void send_mail(arpc_request *req, void *ctx)
{
    (void)ctx;
    size_t len;
    const char *text = arpc_request_data(req, &len);
    struct job *j = len >= 1 && len <= 64 ? malloc(sizeof *j) : NULL;
    if (j == NULL) {
        arpc_reply_error(req, "mail.Send takes a text of 1 to 64 bytes");
        return;
    }
    j->req = req;
    memcpy(j->text, text, len);
    j->text[len] = '\0';
    pthread_mutex_lock(&mu);
    bool room = njobs < MAILS;
    if (room) {
        jobs[njobs++] = j;
        pthread_cond_signal(&arrived);
    }
    pthread_mutex_unlock(&mu);
    if (!room) {
        free(j);
        arpc_reply_error(req, "the mailer takes no more");
    }
}

/* The application's thread: arpc_reply may be called from any thread, once per request. */
static void *mailer(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&mu);
    while (njobs < MAILS)
        pthread_cond_wait(&arrived, &mu);
    pthread_mutex_unlock(&mu);
    for (int i = MAILS - 1; i >= 0; i--) {
        char out[96];
        int n = snprintf(out, sizeof out, "sent \"%s\" (answer %d of %d)", jobs[i]->text, MAILS - i, MAILS);
        int rc = arpc_reply(jobs[i]->req, out, (size_t)n); /* req is arpc's again after this */
        if (rc != ARPC_OK) /* e.g. ARPC_ETIMEDOUT: the server had answered the caller itself */
            fprintf(stderr, "reply: %s\n", arpc_errname(rc));
        free(jobs[i]);
    }
    return NULL;
}

static atomic_int events;
static sem_t event_seen;

/* One-way: nothing goes back, but the request is still finished with arpc_reply. */
static void audit_log(arpc_request *req, void *ctx)
{
    (void)ctx;
    if (arpc_request_is_oneway(req))
        atomic_fetch_add(&events, 1);
    arpc_reply(req, NULL, 0);
    sem_post(&event_seen);
}

/* ---- the client side ---- */

int main(void)
{
    sem_init(&event_seen, 0, 0);
    pthread_t mailer_thread;
    if (pthread_create(&mailer_thread, NULL, mailer, NULL) != 0)
        return 1;
    arpc_server *server;
    char addr[256];
    int rc = arpc_server_create(&server, NULL);
    if (rc == ARPC_OK)
        rc = arpc_server_register(server, "mail.Send", send_mail, NULL, NULL);
    if (rc == ARPC_OK)
        rc = arpc_server_register(server, "audit.Log", audit_log, NULL, NULL);
    if (rc == ARPC_OK)
        rc = arpc_server_listen(server, "tcp://127.0.0.1:0", addr, sizeof addr);
    arpc_client *client;
    if (rc == ARPC_OK)
        rc = arpc_client_connect(&client, addr, NULL);
    if (rc != ARPC_OK) {
        fprintf(stderr, "setup: %s\n", arpc_strerror(rc));
        return 1;
    }
    int ok = 1;

    const char *texts[MAILS] = {"first", "second", "third"};
    arpc_future *mails[MAILS];
    for (int i = 0; i < MAILS; i++)
        mails[i] = arpc_call_async(client, "mail.Send", texts[i], strlen(texts[i]), 5000);
    for (int i = 0; i < MAILS; i++) {
        int st = arpc_future_wait(mails[i]);
        size_t len;
        const char *reply = arpc_future_data(mails[i], &len);
        if (st == ARPC_OK)
            printf("%s: %.*s\n", texts[i], (int)len, reply);
        else
            printf("%s: %s\n", texts[i], arpc_errname(st));
        ok &= st == ARPC_OK;
        arpc_future_release(mails[i]);
    }
    pthread_join(mailer_thread, NULL);

    for (int i = 0; i < EVENTS; i++) {
        rc = arpc_notify(client, "audit.Log", "login", 5); /* ARPC_OK: queued, not delivered */
        ok &= rc == ARPC_OK;
    }
    /* Nothing comes back for a one-way message: the handler says when it ran. 10 s is a
     * bound for a message that never arrives (one may be dropped if the connection breaks). */
    for (int i = 0; i < EVENTS; i++) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 10;
        while (sem_timedwait(&event_seen, &until) != 0 && errno == EINTR)
            ;
    }
    printf("the server handled %d one-way messages\n", atomic_load(&events));
    ok &= atomic_load(&events) == EVENTS;

    arpc_client_close(client);
    arpc_server_destroy(server);
    sem_destroy(&event_seen);
    return ok ? 0 : 1;
}
