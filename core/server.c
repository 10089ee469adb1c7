/*
 * Design notes.
 *
 * Threads: the loop thread owns listeners, connections and their sockets. A request is copied
 * out of the read buffer into an arpc_request and posted to the method's actor (or group, or
 * run inline on the loop). arpc_reply() encodes the reply frame on the replying thread into
 * one allocation, which travels to the loop through the reply hand-off (core/handoff.h: an
 * unbounded CK stack, so a replying worker never waits for the loop) and is then queued on the
 * connection as is (the output queue frees it once written): one allocation per reply.
 *
 * Lifetimes: a server_conn is referenced by the loop (until its connection closes) and by
 * each of its requests still in a handler; the last reference frees it, so a handler may reply
 * long after the client went away (the reply is dropped). Likewise the server itself is
 * referenced by the user's handle and by every request in flight, so a late reply from an
 * asynchronous handler never touches freed memory; the last reference frees the server and
 * its loop.
 *
 * Graceful stop: refuse new calls (ESHUTDOWN error replies: they did not run), close the
 * listeners, tell clients GOAWAY, wait up to the grace period for calls in flight, then stop
 * the pool discarding what is still queued (answered ESHUTDOWN: did not run; handlers already
 * running are waited for), flush replies already handed over, close every connection, stop
 * the loop.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "arpc/error.h"
#include "arpc/future.h"
#include "arpc/server.h"
#include "async/loop_internal.h"
#include "base/alloc.h"
#include "core/conn.h"
#include "core/frame.h"
#include "core/handoff.h"
#include "core/registry.h"
#include "transport/transport.h"

enum server_state { SV_IDLE, SV_RUNNING, SV_STOPPING, SV_STOPPED };

struct listener {
    ev_io l_io;
    ev_timer l_retry; /* accept failed (e.g. out of fds): pause instead of spinning */
    int l_fd;
    const struct arpc_transport_ops *l_tr;
    char l_rest[ARPC_ADDR_MAX];
    char l_addr[ARPC_ADDR_MAX];
    arpc_server *l_server;
    struct listener *l_next;
};

struct server_conn {
    struct arpc_conn sc_conn;
    atomic_int sc_refs;        /* the loop's (while open) + one per request in a handler */
    arpc_server *sc_server;
    uint64_t sc_client_id;
    uint32_t sc_client_max;    /* largest reply body the client accepts */
    bool sc_hello;
    struct server_conn *sc_prev, *sc_next; /* the loop's list of open connections */
};

struct arpc_server {
    atomic_int sv_refs;        /* the user's handle + one per request in flight */
    atomic_int sv_state;       /* enum server_state */
    atomic_size_t sv_inflight; /* requests handed to handlers and not yet finished */
    arpc_loop *sv_loop;
    bool sv_owns_loop;
    arpc_actor_group *sv_pool;
    uint32_t sv_max_frame;
    struct arpc_registry sv_registry;
    pthread_mutex_t sv_stop_mtx; /* serialises stops: a second stop returns once the first is done */
    struct arpc_handoff sv_replies; /* replies from other threads; never blocks the replier */
    bool sv_replies_started;
    /* loop thread only */
    struct listener *sv_listeners;
    struct server_conn *sv_conns;
};

struct arpc_request {
    struct server_conn *rq_conn;
    const struct arpc_method *rq_method;
    uint64_t rq_xid;
    bool rq_oneway;
    uint32_t rq_len;
    uint8_t rq_data[];
};

/* A reply on its way to the loop; the whole allocation is then the output buffer. */
struct reply_msg {
    ck_stack_entry_t rm_link; /* first: the hand-off's item is the message */
    struct server_conn *rm_conn;
    size_t rm_len;
    uint8_t rm_frame[];
};

/* ---- references ---- */

static void server_free(arpc_server *s)
{
    if (s->sv_owns_loop)
        arpc_loop_destroy(s->sv_loop);
    /* No loop thread drains the hand-off any more (its watcher was stopped on the loop):
     * late replies queued there are delivered to closed connections, i.e. freed. */
    if (s->sv_replies_started)
        arpc_handoff_drain(&s->sv_replies);
    pthread_mutex_destroy(&s->sv_stop_mtx);
    if (s->sv_pool != NULL)
        arpc_actor_group_destroy(s->sv_pool);
    arpc_registry_fini(&s->sv_registry);
    arpc_free(s);
}

static void server_release(arpc_server *s)
{
    if (atomic_fetch_sub(&s->sv_refs, 1) == 1)
        server_free(s);
}

static void sconn_release(struct server_conn *sc)
{
    if (atomic_fetch_sub(&sc->sc_refs, 1) == 1)
        arpc_free(sc);
}

/* Ends a request's life: drops its references. Any thread. */
static void request_done(arpc_request *req)
{
    struct server_conn *sc = req->rq_conn;
    arpc_server *s = sc->sc_server;
    arpc_free(req);
    sconn_release(sc);
    atomic_fetch_sub(&s->sv_inflight, 1);
    server_release(s);
}

/* ---- sending (loop thread) ---- */

/* The longest error message the client accepts (it announced its frame limit in HELLO). */
static size_t error_msg_cap(const struct server_conn *sc, size_t mlen)
{
    size_t cap = sc->sc_client_max > ARPC_ERROR_FIXED_SIZE ? sc->sc_client_max - ARPC_ERROR_FIXED_SIZE : 0;
    if (cap > UINT16_MAX)
        cap = UINT16_MAX;
    return mlen < cap ? mlen : cap;
}

static void sconn_send_error(struct server_conn *sc, uint64_t xid, int code, const char *msg, size_t mlen)
{
    mlen = error_msg_cap(sc, mlen);
    if (arpc_conn_send_error(&sc->sc_conn, ARPC_FRAME_ERROR, xid, code, msg, (uint16_t)mlen) == ARPC_ENOMEM)
        /* The client would wait for this answer forever: fail the whole connection instead. */
        arpc_conn_close(&sc->sc_conn, ARPC_ENOMEM);
}

/* Loop thread (or the last thread, once no loop runs): queues the reply on its connection. */
static void deliver_reply(struct reply_msg *rm)
{
    struct server_conn *sc = rm->rm_conn;
    if (sc->sc_conn.c_open) {
        if (arpc_conn_send(&sc->sc_conn, rm, rm->rm_frame, rm->rm_len) == ARPC_ENOMEM)
            arpc_conn_close(&sc->sc_conn, ARPC_ENOMEM); /* never leave a caller waiting */
    } else {
        arpc_free(rm);
    }
    sconn_release(sc);
}

static void handoff_deliver_reply(struct arpc_handoff *h, ck_stack_entry_t *item)
{
    (void)h;
    deliver_reply((struct reply_msg *)(void *)item); /* rm_link is the first member */
}

/* Hands an encoded reply to the connection, from any thread, without ever waiting. */
static int reply_hand_over(arpc_server *s, struct reply_msg *rm)
{
    if (arpc_loop_on_thread(s->sv_loop))
        deliver_reply(rm);
    else
        arpc_handoff_push(&s->sv_replies, &rm->rm_link);
    return atomic_load(&s->sv_state) == SV_STOPPED ? ARPC_ESHUTDOWN : ARPC_OK;
}

static int reply_with(arpc_request *req, uint8_t kind, int code, const void *data, size_t len)
{
    if (req == NULL)
        return ARPC_EINVAL;
    if (req->rq_oneway) {
        request_done(req);
        return ARPC_OK;
    }
    struct server_conn *sc = req->rq_conn;
    int rc = ARPC_OK;
    if (kind == ARPC_FRAME_REPLY && len > sc->sc_client_max) {
        kind = ARPC_FRAME_ERROR;
        code = ARPC_ETOOLARGE;
        data = "reply larger than the client accepts";
        len = strlen(data);
        rc = ARPC_ETOOLARGE;
    }
    if (kind == ARPC_FRAME_ERROR)
        len = error_msg_cap(sc, len);
    size_t flen = kind == ARPC_FRAME_REPLY ? ARPC_FRAME_HEADER_SIZE + len : arpc_frame_error_size(len);
    struct reply_msg *rm = arpc_malloc(sizeof(*rm) + flen);
    if (rm == NULL) {
        request_done(req);
        return ARPC_ENOMEM;
    }
    if (kind == ARPC_FRAME_REPLY) {
        arpc_frame_encode_header(rm->rm_frame, ARPC_FRAME_REPLY, req->rq_xid, (uint32_t)len);
        if (len)
            memcpy(rm->rm_frame + ARPC_FRAME_HEADER_SIZE, data, len);
    } else {
        arpc_frame_encode_error(rm->rm_frame, ARPC_FRAME_ERROR, req->rq_xid, (uint32_t)code, data,
                                (uint16_t)len);
    }
    rm->rm_len = flen;
    rm->rm_conn = sc;
    atomic_fetch_add(&sc->sc_refs, 1); /* the reply's, dropped on delivery */
    /* Hand the reply over before the request counts as finished: a stop waiting for in-flight
     * calls must find the reply queued when it sees the count reach zero. request_done may
     * drop the last server reference, so hold one until we are done. */
    arpc_server *s = sc->sc_server;
    atomic_fetch_add(&s->sv_refs, 1);
    int hrc = reply_hand_over(s, rm);
    request_done(req);
    server_release(s);
    return hrc != ARPC_OK ? hrc : rc;
}

int arpc_reply(arpc_request *req, const void *data, size_t len)
{
    if (req != NULL && data == NULL && len != 0)
        len = 0;
    return reply_with(req, ARPC_FRAME_REPLY, ARPC_OK, data, len);
}

int arpc_reply_error(arpc_request *req, const char *msg)
{
    return reply_with(req, ARPC_FRAME_ERROR, ARPC_EHANDLER, msg ? msg : "", msg ? strlen(msg) : 0);
}

const void *arpc_request_data(const arpc_request *req, size_t *len)
{
    if (len != NULL)
        *len = req->rq_len;
    return req->rq_data;
}

const char *arpc_request_method(const arpc_request *req) { return req->rq_method->m_name; }
bool arpc_request_is_oneway(const arpc_request *req) { return req->rq_oneway; }
uint64_t arpc_request_client_id(const arpc_request *req) { return req->rq_conn->sc_client_id; }

/* ---- receiving (loop thread) ---- */

static void run_handler(arpc_actor *actor, void *arg, int status)
{
    (void)actor;
    arpc_request *req = arg;
    if (status != ARPC_OK) {
        /* Discarded by a stopping pool before it ran. */
        reply_with(req, ARPC_FRAME_ERROR, ARPC_ESHUTDOWN, "server shutting down", 20);
        return;
    }
    req->rq_method->m_fn(req, req->rq_method->m_ctx);
}

static void sconn_on_request(struct server_conn *sc, const struct arpc_frame *f)
{
    arpc_server *s = sc->sc_server;
    bool oneway = f->f_kind == ARPC_FRAME_ONEWAY;
    if (atomic_load(&s->sv_state) != SV_RUNNING) {
        if (!oneway)
            sconn_send_error(sc, f->f_xid, ARPC_ESHUTDOWN, "server shutting down", 20);
        return;
    }
    const struct arpc_method *m = arpc_registry_find(&s->sv_registry, f->f_method, f->f_method_len);
    if (m == NULL) {
        char msg[300];
        int n = snprintf(msg, sizeof(msg), "no such method: %.*s", (int)f->f_method_len, f->f_method);
        if (!oneway)
            sconn_send_error(sc, f->f_xid, ARPC_ENOMETHOD, msg, (size_t)n);
        else
            fprintf(stderr, "arpc: one-way message to unknown method %.*s dropped\n",
                    (int)f->f_method_len, f->f_method);
        return;
    }
    arpc_request *req = arpc_malloc(sizeof(*req) + f->f_payload_len);
    if (req == NULL) {
        if (!oneway)
            sconn_send_error(sc, f->f_xid, ARPC_EREJECTED, "server out of memory", 20);
        return;
    }
    req->rq_conn = sc;
    req->rq_method = m;
    req->rq_xid = f->f_xid;
    req->rq_oneway = oneway;
    req->rq_len = f->f_payload_len;
    memcpy(req->rq_data, f->f_payload, f->f_payload_len);
    atomic_fetch_add(&sc->sc_refs, 1);
    atomic_fetch_add(&s->sv_refs, 1);
    atomic_fetch_add(&s->sv_inflight, 1);
    int rc = ARPC_OK;
    if (m->m_inline)
        run_handler(NULL, req, ARPC_OK);
    else if (m->m_actor != NULL)
        rc = arpc_actor_post(m->m_actor, run_handler, req);
    else
        rc = arpc_actor_group_post(m->m_group ? m->m_group : s->sv_pool, run_handler, req);
    if (rc != ARPC_OK) /* the actor is stopped: the call did not run */
        reply_with(req, ARPC_FRAME_ERROR, ARPC_EREJECTED, "method's actor is stopped", 25);
}

/* Tells the client why before the connection closes (docs/PROTOCOL.md, GOAWAY). */
static void sconn_send_goaway(struct arpc_conn *conn, int code, const char *msg)
{
    arpc_conn_send_error(conn, ARPC_FRAME_GOAWAY, 0, code, msg, (uint16_t)strlen(msg));
}

static void sconn_on_bad_input(struct arpc_conn *conn, int reason)
{
    sconn_send_goaway(conn, reason,
                      reason == ARPC_ETOOLARGE ? "frame larger than the server accepts"
                                               : "malformed frame or unsupported protocol version");
}

static void sconn_on_frame(struct arpc_conn *conn, const struct arpc_frame *f)
{
    struct server_conn *sc = conn->c_owner;
    if (!sc->sc_hello && f->f_kind != ARPC_FRAME_HELLO) {
        fprintf(stderr, "arpc: closing the connection from %s: first frame is not HELLO\n", conn->c_peer);
        sconn_send_goaway(conn, ARPC_EPROTO, "the first frame must be HELLO");
        arpc_conn_close_after_flush(conn, ARPC_EPROTO);
        return;
    }
    switch (f->f_kind) {
    case ARPC_FRAME_HELLO: {
        if (sc->sc_hello) {
            /* Workers read sc_client_max: it is fixed by the first HELLO. */
            sconn_send_goaway(conn, ARPC_EPROTO, "a second HELLO on one connection");
            arpc_conn_close_after_flush(conn, ARPC_EPROTO);
            return;
        }
        sc->sc_hello = true;
        sc->sc_client_id = f->f_client_id;
        if (f->f_max_frame != 0)
            sc->sc_client_max = f->f_max_frame;
        arpc_conn_send_hello(conn, 0, sc->sc_server->sv_max_frame);
        return;
    }
    case ARPC_FRAME_REQUEST:
    case ARPC_FRAME_ONEWAY:
        sconn_on_request(sc, f);
        return;
    case ARPC_FRAME_PING:
        arpc_conn_answer_ping(conn, f);
        return;
    case ARPC_FRAME_PONG:
        return;
    default:
        fprintf(stderr, "arpc: closing the connection from %s: unexpected frame kind %u from a client\n",
                conn->c_peer, f->f_kind);
        arpc_conn_close(conn, ARPC_EPROTO);
        return;
    }
}

static void sconn_on_close(struct arpc_conn *conn, int reason)
{
    (void)reason;
    struct server_conn *sc = conn->c_owner;
    arpc_server *s = sc->sc_server;
    if (sc->sc_prev != NULL)
        sc->sc_prev->sc_next = sc->sc_next;
    else
        s->sv_conns = sc->sc_next;
    if (sc->sc_next != NULL)
        sc->sc_next->sc_prev = sc->sc_prev;
    sconn_release(sc); /* the loop's reference */
}

static const struct arpc_conn_ops server_conn_ops = {
    .on_frame = sconn_on_frame,
    .on_close = sconn_on_close,
    .on_bad_input = sconn_on_bad_input,
};

/* For log lines: "tcp://10.1.2.3:5555" for a tcp peer, the listener's address otherwise
 * (unix and inproc peers have no address of their own). */
static void describe_peer(int fd, const struct listener *l, char *out, size_t outlen)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    socklen_t sl = sizeof(ss);
    char host[INET6_ADDRSTRLEN] = "";
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) != 0)
        ss.ss_family = AF_UNSPEC;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
        snprintf(out, outlen, "tcp://%s:%u", host, ntohs(a->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
        snprintf(out, outlen, "tcp://[%s]:%u", host, ntohs(a->sin6_port));
    } else {
        snprintf(out, outlen, "%s", l->l_addr);
    }
}

static void listener_on_retry(struct ev_loop *ev, ev_timer *w, int revents)
{
    (void)revents;
    struct listener *l = w->data;
    ev_io_start(ev, &l->l_io);
}

static void listener_on_readable(struct ev_loop *ev, ev_io *w, int revents)
{
    (void)revents;
    struct listener *l = w->data;
    arpc_server *s = l->l_server;
    for (int i = 0; i < 64; i++) { /* bounded, so one busy listener cannot starve the loop */
        int fd;
        int rc = l->l_tr->t_accept(l->l_fd, &fd);
        if (rc == ARPC_EAGAIN)
            return;
        if (rc != ARPC_OK) {
            /* The listen fd stays readable (level-triggered): pause accepting for 100 ms
             * rather than spin and flood the log, e.g. while out of file descriptors. */
            fprintf(stderr, "arpc: accept on %s failed: %s; pausing 100 ms\n", l->l_addr,
                    arpc_strerror(rc));
            ev_io_stop(ev, &l->l_io);
            ev_timer_set(&l->l_retry, 0.1, 0.);
            ev_timer_start(ev, &l->l_retry);
            return;
        }
        struct server_conn *sc = arpc_calloc(1, sizeof(*sc));
        if (sc == NULL) {
            close(fd);
            continue;
        }
        atomic_init(&sc->sc_refs, 1);
        sc->sc_server = s;
        sc->sc_client_max = ARPC_DEFAULT_MAX_FRAME;
        char peer[ARPC_ADDR_MAX];
        describe_peer(fd, l, peer, sizeof(peer));
        if (arpc_conn_init(&sc->sc_conn, s->sv_loop, fd, s->sv_max_frame, &server_conn_ops, sc,
                           peer) != ARPC_OK) {
            arpc_free(sc);
            continue;
        }
        arpc_conn_limit_backlog(&sc->sc_conn);
        sc->sc_next = s->sv_conns;
        if (s->sv_conns != NULL)
            s->sv_conns->sc_prev = sc;
        s->sv_conns = sc;
    }
}

/* ---- tasks run on the loop for the user's threads ---- */

static void task_add_listener(arpc_loop *loop, void *arg)
{
    struct listener *l = arg;
    arpc_server *s = l->l_server;
    if (atomic_load(&s->sv_state) != SV_RUNNING) {
        /* A stop overtook this listen: never start accepting. */
        l->l_tr->t_unlisten(l->l_rest, l->l_fd);
        arpc_free(l);
        return;
    }
    ev_io_init(&l->l_io, listener_on_readable, l->l_fd, EV_READ);
    ev_timer_init(&l->l_retry, listener_on_retry, 0.1, 0.);
    l->l_io.data = l->l_retry.data = l;
    ev_io_start(arpc_loop_ev(loop), &l->l_io);
    l->l_next = s->sv_listeners;
    s->sv_listeners = l;
}

static void task_goaway(arpc_loop *loop, void *arg)
{
    arpc_server *s = arg;
    while (s->sv_listeners != NULL) {
        struct listener *l = s->sv_listeners;
        s->sv_listeners = l->l_next;
        ev_io_stop(arpc_loop_ev(loop), &l->l_io);
        ev_timer_stop(arpc_loop_ev(loop), &l->l_retry);
        l->l_tr->t_unlisten(l->l_rest, l->l_fd);
        arpc_free(l);
    }
    for (struct server_conn *sc = s->sv_conns; sc != NULL; sc = sc->sc_next)
        sconn_send_goaway(&sc->sc_conn, ARPC_ESHUTDOWN, "server shutting down");
}

struct sync_task {
    arpc_server *st_server;
    arpc_future *st_done;
};

/* Completes a sync task. The waiter may return (and free t) as soon as it is woken, so hold
 * a reference to the future across the completion. */
static void sync_task_done(struct sync_task *t)
{
    arpc_future *done = t->st_done;
    arpc_future_retain(done);
    arpc_future_complete(done, ARPC_OK, NULL, 0);
    arpc_future_release(done);
}

static void task_close_all(arpc_loop *loop, void *arg)
{
    (void)loop;
    struct sync_task *t = arg;
    arpc_server *s = t->st_server;
    /* Replies already handed over (including the pool's "did not run" answers) go out
     * first, as far as the sockets take them without waiting. */
    if (s->sv_replies_started)
        arpc_handoff_drain(&s->sv_replies);
    for (struct server_conn *sc = s->sv_conns, *next; sc != NULL; sc = next) {
        next = sc->sc_next; /* a failed flush closes (and may free) sc */
        arpc_conn_flush_now(&sc->sc_conn);
    }
    while (s->sv_conns != NULL)
        arpc_conn_close(&s->sv_conns->sc_conn, ARPC_ESHUTDOWN); /* on_close unlinks it */
    if (s->sv_replies_started) {
        arpc_handoff_stop(&s->sv_replies);
        arpc_handoff_drain(&s->sv_replies); /* to closed connections: frees them */
    }
    sync_task_done(t);
}

/* Runs fn on the loop and waits for it (the loop may be stopped: then runs it here, since no
 * loop thread will touch the server again). */
static void server_run_on_loop(arpc_server *s, arpc_task_fn fn)
{
    struct sync_task t = {s, NULL};
    if (arpc_future_create(&t.st_done) != ARPC_OK)
        return; /* out of memory: the step is skipped; destroy still frees everything */
    if (arpc_loop_on_thread(s->sv_loop))
        fn(s->sv_loop, &t); /* we are the loop thread: run it here, never queue &t and leave */
    else if (arpc_loop_submit(s->sv_loop, fn, &t) == ARPC_OK)
        arpc_loop_wait(s->sv_loop, t.st_done); /* runs the loop here if nobody does */
    else {
        /* The loop is stopped: once no thread runs it, nothing else touches the server's
         * connections, so the step can run here. */
        arpc_loop_wait_not_running(s->sv_loop);
        fn(s->sv_loop, &t);
    }
    arpc_future_release(t.st_done);
}

static void task_start_replies(arpc_loop *loop, void *arg)
{
    struct sync_task *t = arg;
    arpc_server *s = t->st_server;
    arpc_handoff_start(&s->sv_replies, arpc_loop_ev(loop), handoff_deliver_reply, s);
    s->sv_replies_started = true;
    sync_task_done(t);
}

static void task_goaway_sync(arpc_loop *loop, void *arg)
{
    struct sync_task *t = arg;
    task_goaway(loop, t->st_server);
    sync_task_done(t);
}

/* ---- public API ---- */

int arpc_server_create(arpc_server **out, const arpc_server_options *opts)
{
    arpc_server_options o = {0};
    if (opts != NULL)
        o = *opts;
    if (out == NULL)
        return ARPC_EINVAL;
    *out = NULL;
    arpc_server *s = arpc_calloc(1, sizeof(*s));
    if (s == NULL)
        return ARPC_ENOMEM;
    atomic_init(&s->sv_refs, 1);
    atomic_init(&s->sv_state, SV_IDLE);
    atomic_init(&s->sv_inflight, 0);
    s->sv_max_frame = o.max_frame ? o.max_frame : ARPC_DEFAULT_MAX_FRAME;
    arpc_registry_init(&s->sv_registry);
    pthread_mutex_init(&s->sv_stop_mtx, NULL);
    arpc_actor_options ao = {.name = "arpc-worker"};
    unsigned workers = o.workers;
    if (workers == 0) {
        /* Leave a core to the loop thread: more busy threads than cores only adds switches. */
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        workers = ncpu > 2 ? (unsigned)ncpu - 1 : 1;
    }
    int rc = arpc_actor_group_create(&s->sv_pool, workers, &ao);
    if (rc != ARPC_OK) {
        s->sv_pool = NULL;
        server_free(s);
        return rc;
    }
    if (o.loop != NULL) {
        s->sv_loop = o.loop;
        if (arpc_loop_on_thread(o.loop)) {
            /* Created from a task on that loop: we are the loop thread, start it here. */
            arpc_handoff_start(&s->sv_replies, arpc_loop_ev(o.loop), handoff_deliver_reply, s);
            s->sv_replies_started = true;
        } else {
            server_run_on_loop(s, task_start_replies);
        }
        if (!s->sv_replies_started) {
            server_free(s);
            return ARPC_ENOMEM;
        }
    } else {
        rc = arpc_loop_create(&s->sv_loop, NULL);
        if (rc == ARPC_OK) {
            s->sv_owns_loop = true;
            /* Not running yet: the watcher can be started from here. */
            arpc_handoff_start(&s->sv_replies, arpc_loop_ev(s->sv_loop), handoff_deliver_reply, s);
            s->sv_replies_started = true;
            rc = arpc_loop_start(s->sv_loop);
        }
        if (rc != ARPC_OK) {
            server_free(s);
            return rc;
        }
    }
    *out = s;
    return ARPC_OK;
}

int arpc_server_register(arpc_server *s, const char *name, arpc_handler_fn fn, void *ctx,
                         const arpc_method_options *mopts)
{
    if (s == NULL || name == NULL || fn == NULL || name[0] == '\0' || strlen(name) > ARPC_METHOD_MAX)
        return ARPC_EINVAL;
    if (mopts != NULL && (!!mopts->actor + !!mopts->group + !!mopts->inline_on_loop) > 1)
        return ARPC_EINVAL;
    if (atomic_load(&s->sv_state) != SV_IDLE)
        return ARPC_EBUSY;
    return arpc_registry_add(&s->sv_registry, name, fn, ctx, mopts);
}

int arpc_server_listen(arpc_server *s, const char *addr, char *bound, size_t boundlen)
{
    if (s == NULL || addr == NULL)
        return ARPC_EINVAL;
    int state = atomic_load(&s->sv_state);
    if (state == SV_STOPPING || state == SV_STOPPED)
        return ARPC_ESHUTDOWN;
    const char *rest;
    const struct arpc_transport_ops *tr = arpc_transport_find(addr, &rest);
    if (tr == NULL || strlen(addr) >= ARPC_ADDR_MAX)
        return ARPC_EADDR;
    struct listener *l = arpc_calloc(1, sizeof(*l));
    if (l == NULL)
        return ARPC_ENOMEM;
    int rc = tr->t_listen(rest, &l->l_fd, l->l_addr, sizeof(l->l_addr));
    if (rc != ARPC_OK) {
        arpc_free(l);
        return rc;
    }
    l->l_tr = tr;
    l->l_server = s;
    snprintf(l->l_rest, sizeof(l->l_rest), "%s", rest);
    if (bound != NULL && boundlen > 0)
        snprintf(bound, boundlen, "%s", l->l_addr);
    /* From now on the registry is read by the loop: no more registrations. */
    state = SV_IDLE;
    atomic_compare_exchange_strong(&s->sv_state, &state, SV_RUNNING);
    rc = arpc_loop_submit(s->sv_loop, task_add_listener, l);
    if (rc != ARPC_OK) {
        tr->t_unlisten(rest, l->l_fd);
        arpc_free(l);
        return rc;
    }
    return ARPC_OK;
}

int arpc_server_stop(arpc_server *s, int64_t timeout_ms)
{
    if (s == NULL)
        return ARPC_EINVAL;
    if (arpc_loop_on_thread(s->sv_loop))
        return ARPC_EBUSY;
    for (unsigned i = 0; i < arpc_actor_group_size(s->sv_pool); i++)
        if (arpc_actor_on_thread(arpc_actor_group_member(s->sv_pool, i)))
            return ARPC_EBUSY; /* a handler would wait for itself */
    pthread_mutex_lock(&s->sv_stop_mtx);
    int state = atomic_exchange(&s->sv_state, SV_STOPPING);
    if (state == SV_STOPPING || state == SV_STOPPED) {
        atomic_store(&s->sv_state, SV_STOPPED);
        pthread_mutex_unlock(&s->sv_stop_mtx);
        return ARPC_OK;
    }
    server_run_on_loop(s, task_goaway_sync);
    /* Grace period: a cold path, so a plain 1 ms sleep-poll is fine here. */
    uint64_t until = arpc_now_ns() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms) * 1000000ull;
    while (atomic_load(&s->sv_inflight) != 0 && arpc_now_ns() < until) {
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    /* Past the grace period: calls still queued on the pool do not run; their callers get
     * ESHUTDOWN ("did not run") before the connections close. Handlers already running
     * finish; their replies are dropped. */
    arpc_actor_group_stop(s->sv_pool, ARPC_ACTOR_DISCARD);
    server_run_on_loop(s, task_close_all);
    if (s->sv_owns_loop)
        arpc_loop_stop(s->sv_loop);
    atomic_store(&s->sv_state, SV_STOPPED);
    pthread_mutex_unlock(&s->sv_stop_mtx);
    return ARPC_OK;
}

void arpc_server_destroy(arpc_server *s)
{
    if (s == NULL)
        return;
    if (arpc_server_stop(s, 1000) == ARPC_EBUSY) {
        /* From a handler or the loop: stopping would wait for ourselves. */
        fprintf(stderr, "arpc: arpc_server_destroy called from the server's own loop or worker: ignored\n");
        return;
    }
    server_release(s);
}
