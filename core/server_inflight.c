/*
 * Flow limits on the server (loop thread): how many calls one connection, and one client id
 * across its connections, may have read and not yet answered, and how many bytes one
 * connection may make the server hold. At a limit the connection's input is held (core/conn.h,
 * one reason each): its next calls wait in the socket, none is refused, and the loop goes on
 * with the other connections; replies going out let it go.
 *
 * A call counts from its admission (after the at-most-once gate: a reply from the cache is
 * not a call in flight) until its reply is queued on the loop, or until the server learns no
 * reply will come. A duplicate attached to its running original (a retry, on this connection
 * or another) is not a call in flight: it costs a waiter, bounded apart (ARPC_RC_MAX_WAITERS).
 * But its connection owes it an answer, so a half-closed connection stays for it
 * (inflight_attach). A call the server answered itself at its deadline still counts while its
 * handler runs (the server still spends on it), and no longer once it returned. A one-way message counts as a call, with its
 * request's bytes only, until its handler is done with it (arpc_reply, on the loop by a job):
 * its actor's mailbox bounds how many wait, not their bytes.
 *
 * Bytes: a call owes its connection what it holds (the request with its payload copy) and the
 * reply it will queue, whose size nobody knows before the handler gives it. The reply is
 * counted at its method's expected size: the largest of its recent replies (a larger one is
 * taken at once; a smaller one lowers it by an eighth of the difference, so one large value
 * among small ones keeps counting for a while), and before the method's first reply its
 * registration's reply_bytes_hint, or else max_conn_bytes/16. A late reply (the server
 * answered the call at its deadline, and drops it) teaches too, by its real size: a method
 * whose handler always replies late would otherwise keep the guess for good (an
 * integrator's window of 1,000 calls ran 15 at a time). Not the server's own short answer,
 * which would let a client with short deadlines drive a method's expected size down (a
 * review's trial: 6-8x the bound's worth of large replies admitted). So a client asking
 * for large values gets at most about 16 of them accepted
 * before the first is seen, and afterwards only as many as fit the bound. A reply larger than
 * its estimate is still queued whole (never dropped; no worker waits): the bound is overshot by
 * the difference, for calls accepted before the estimate rose. Once queued the reply counts as
 * output (core/conn.c) until written. A hold that only the guesses make (a fresh server's
 * first burst of pipelined calls: the 17th call) is not logged unless the first replies show
 * the guessed calls keep it (inflight_note_hold).
 *
 * Client ids: one entry per id with a connection open or a call in flight, freed when neither
 * is left, listing its open connections. At its limit every one of them is held; as calls
 * finish they are let go one at a time while the count is under the limit (each may read a
 * call at once, reach the limit and hold them all again), so the limit is never passed.
 * A client id is chosen by the client: without authentication one client can use up
 * another's share by claiming its id (the per-connection limits still hold).
 */
#include <stdio.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "base/log.h"
#include "core/request_internal.h"

#define INFLIGHT_MAX_CALLS 1024
#define INFLIGHT_MAX_CLIENT_CALLS 4096
#define INFLIGHT_MAX_CONN_BYTES ((size_t)16 << 20)
#define INFLIGHT_FIRST_REPLY_SHARE 16 /* a method's reply before its first: max_conn_bytes / this */
#define INFLIGHT_LOG_EVERY_NS 1000000000ull
#define INFLIGHT_UNSAID_MAX_S 1.0 /* a hold the guesses made, not said while shorter */

struct inflight_client {
    uint64_t ic_id;
    unsigned ic_calls; /* in flight, on open connections or closed ones */
    unsigned ic_conns; /* open connections, on ic_list */
    unsigned ic_pins;  /* inflight_end in progress: the entry must outlive it */
    struct arpc_dlist ic_list;
};

int inflight_init(arpc_server *s, const arpc_server_options *o)
{
    s->sv_max_calls = o->max_calls_per_conn ? o->max_calls_per_conn : INFLIGHT_MAX_CALLS;
    s->sv_max_client_calls = o->max_calls_per_client ? o->max_calls_per_client : INFLIGHT_MAX_CLIENT_CALLS;
    s->sv_max_conn_bytes = o->max_conn_bytes ? o->max_conn_bytes : INFLIGHT_MAX_CONN_BYTES;
    int rc = arpc_u64_map_init(&s->sv_clients, 16);
    s->sv_clients_ready = rc == ARPC_OK;
    return rc;
}

static void inflight_free_client(void *val, void *arg)
{
    (void)arg;
    arpc_free(val);
}

void inflight_fini(arpc_server *s)
{
    if (!s->sv_clients_ready)
        return;
    arpc_u64_map_drain(&s->sv_clients, inflight_free_client, NULL);
    arpc_u64_map_fini(&s->sv_clients);
    s->sv_clients_ready = false;
}

/* Frees c once nothing refers to it. */
static void inflight_client_put(arpc_server *s, struct inflight_client *c)
{
    if (c->ic_conns == 0 && c->ic_calls == 0 && c->ic_pins == 0) {
        arpc_u64_map_take(&s->sv_clients, c->ic_id);
        arpc_free(c);
    }
}

/* Whether bytes (of sc's) keep a hold for bytes: over 3/4 of the bound, where one is let go
 * (core/conn.c). */
static bool inflight_bytes_keep_hold(const struct server_conn *sc, size_t bytes)
{
    size_t max = sc->sc_server->sv_max_conn_bytes;
    return bytes > max - max / 4;
}

/* sc's bytes with its first-reply guesses counted at est each instead. */
static size_t inflight_bytes_reguessed(const struct server_conn *sc, size_t est)
{
    size_t bytes = arpc_conn_bytes(&sc->sc_conn);
    bytes = bytes > sc->sc_guess_est ? bytes - sc->sc_guess_est : 0;
    return bytes + (size_t)sc->sc_guess_calls * est;
}

/* Logs a hold, at most one line per INFLIGHT_LOG_EVERY_NS per server (a client at its limit
 * is held again after every reply: one line each would flood the log). */
static void inflight_say_hold(struct server_conn *sc, unsigned reason)
{
    arpc_server *s = sc->sc_server;
    struct arpc_conn *conn = &sc->sc_conn;
    uint64_t now_ns = (uint64_t)(arpc_loop_now(conn->c_loop) * 1e9), quiet;
    if (!arpc_log_throttle_due(&s->sv_hold_log, now_ns, INFLIGHT_LOG_EVERY_NS, 1, &quiet))
        return;
    char why[320];
    const char *resumes = "its calls finish";
    switch (reason) {
    case ARPC_CONN_HOLD_CALLS:
        snprintf(why, sizeof(why), "%u calls in flight (max_calls_per_conn)", sc->sc_ncalls);
        break;
    case ARPC_CONN_HOLD_CLIENT_CALLS:
        snprintf(why, sizeof(why), "client %016llx has %u calls in flight (max_calls_per_client)",
                 (unsigned long long)sc->sc_client_id, sc->sc_client ? sc->sc_client->ic_calls : 0);
        break;
    case ARPC_CONN_HOLD_BYTES:
        /* Mostly estimates, as a rule: say so, and how to make them closer. */
        snprintf(why, sizeof(why),
                 "%zu bytes read, queued and owed (max_conn_bytes), %zu of them estimated replies to %u calls in "
                 "flight (a method not yet replied counts max_conn_bytes/16 per call unless it sets reply_bytes_hint)",
                 arpc_conn_bytes(conn), sc->sc_owed_est, sc->sc_ncalls);
        break;
    default:
        snprintf(why, sizeof(why), "%zu bytes of output not read by the peer (output backlog)",
                 conn->c_out.q_bytes);
        resumes = "the peer reads its replies";
        break;
    }
    /* Flow control, not a fault: a client pipelining past a limit meets it as a matter of
     * course, so the line says that reading goes on, and counts the holds it did not say. */
    char more[96];
    arpc_log(ARPC_LOG_INFO, "holding input from %s: %s (flow control: reading resumes as %s)%s", conn->c_peer,
             why, resumes, arpc_log_throttle_more(more, sizeof(more), quiet, "holds"));
}

/* A hold was taken. One for bytes that only first-reply guesses make (the bytes without them
 * would not keep it) is not said yet: every fresh server's first burst of pipelined calls
 * makes one (16 calls at max_conn_bytes/16), which its first replies end within a moment and
 * which means nothing. It is said if the guessed calls, counted at what their method's replies
 * turned out to be, keep it (inflight_end: a peer asking for large replies and not reading
 * them), or if no reply ends it: a CANCEL passes it (long polls given up on), or it lasts
 * INFLIGHT_UNSAID_MAX_S (the limits' sweep: long polls). */
static void inflight_note_hold(struct server_conn *sc, unsigned reason)
{
    if (reason == ARPC_CONN_HOLD_BYTES && sc->sc_guess_calls > 0 &&
        !inflight_bytes_keep_hold(sc, inflight_bytes_reguessed(sc, 0))) {
        sc->sc_hold_unsaid = true;
        sc->sc_hold_unsaid_at = arpc_loop_now(sc->sc_conn.c_loop);
        return;
    }
    if (reason == ARPC_CONN_HOLD_BYTES)
        sc->sc_hold_unsaid = false;
    inflight_say_hold(sc, reason);
}

static void inflight_hold(struct server_conn *sc, unsigned reason)
{
    if (!sc->sc_conn.c_open || (sc->sc_conn.c_hold & reason))
        return;
    arpc_conn_hold_input(&sc->sc_conn, reason);
    inflight_note_hold(sc, reason);
}

void inflight_on_held(struct arpc_conn *conn, unsigned reason) { inflight_note_hold(conn->c_owner, reason); }

/* Said now, if still unsaid and held. */
static void inflight_say_unsaid(struct server_conn *sc)
{
    bool held = sc->sc_conn.c_open && (sc->sc_conn.c_hold & ARPC_CONN_HOLD_BYTES);
    sc->sc_hold_unsaid = false;
    if (held)
        inflight_say_hold(sc, ARPC_CONN_HOLD_BYTES);
}

void inflight_hold_passed(struct server_conn *sc)
{
    if (sc->sc_hold_unsaid)
        inflight_say_unsaid(sc);
}

void inflight_hold_sweep(struct server_conn *sc, double now)
{
    if (sc->sc_hold_unsaid && now - sc->sc_hold_unsaid_at >= INFLIGHT_UNSAID_MAX_S)
        inflight_say_unsaid(sc);
}

void inflight_on_hello(struct server_conn *sc)
{
    arpc_server *s = sc->sc_server;
    if (sc->sc_client_id == 0)
        return; /* anonymous: only the connection's own limits */
    /* Keyed like the reply cache: by client id within the authenticated identity, so a client
     * cannot use up another identity's share by claiming its id (core/server_namespace.c). */
    struct inflight_client *c = arpc_u64_map_get(&s->sv_clients, sc->sc_cache_key);
    if (c == NULL) {
        c = arpc_calloc(1, sizeof(*c));
        if (c == NULL || arpc_u64_map_put(&s->sv_clients, sc->sc_cache_key, c) != ARPC_OK) {
            /* Out of memory: this connection is limited on its own only (it still is). */
            arpc_free(c);
            return;
        }
        c->ic_id = sc->sc_cache_key; /* the map's key */
    }
    c->ic_conns++;
    arpc_dlist_insert_after(&c->ic_list, NULL, &sc->sc_client_link);
    sc->sc_client = c;
    if (c->ic_calls >= s->sv_max_client_calls)
        inflight_hold(sc, ARPC_CONN_HOLD_CLIENT_CALLS); /* a new connection of a client at its limit */
}

void inflight_on_close(struct server_conn *sc)
{
    struct inflight_client *c = sc->sc_client;
    if (c == NULL)
        return; /* no client id (or no memory for its entry) */
    arpc_dlist_remove(&c->ic_list, &sc->sc_client_link);
    c->ic_conns--;
    inflight_client_put(sc->sc_server, c); /* sc_client stays: its calls in flight still count */
}

void inflight_begin(struct server_conn *sc, arpc_request *req)
{
    arpc_server *s = sc->sc_server;
    struct request_state *st = req->rq_state;
    size_t est = st->rs_method->m_reply_est;
    st->rs_guessed = !req->rq_oneway && est == 0;
    if (req->rq_oneway)
        est = 0; /* no reply: only what it holds */
    else if (st->rs_guessed)
        est = s->sv_max_conn_bytes / INFLIGHT_FIRST_REPLY_SHARE;
    st->rs_counted = true;
    st->rs_answered_early = false;
    st->rs_charge = sizeof(*req) + sizeof(*st) + st->rs_len + est;
    sc->sc_owed_est += est;
    if (st->rs_guessed) {
        sc->sc_guess_est += est;
        sc->sc_guess_calls++;
    }
    if (++sc->sc_ncalls >= s->sv_max_calls)
        inflight_hold(sc, ARPC_CONN_HOLD_CALLS);
    struct inflight_client *c = sc->sc_client;
    if (c != NULL && ++c->ic_calls >= s->sv_max_client_calls)
        for (struct arpc_dlink *l = c->ic_list.dl_head; l != NULL; l = l->dl_next)
            inflight_hold(ARPC_DLIST_ENTRY(l, struct server_conn, sc_client_link), ARPC_CONN_HOLD_CLIENT_CALLS);
    arpc_conn_owe(&sc->sc_conn, st->rs_charge); /* may hold for bytes (logged via on_held) */
}

/* A reply of len bytes was made for m: the expected size follows it (see the top). */
void inflight_learn(const struct arpc_method *cm, size_t len)
{
    struct arpc_method *m = (struct arpc_method *)cm; /* m_reply_est alone is the loop's to write */
    size_t est = m->m_reply_est;
    size_t next = len >= est ? len : est - (est - len) / 8;
    /* Stored only when it moves: a store of the same value still takes the method's line
     * from the workers, which read its handler and flags for every call. */
    if (next != est)
        m->m_reply_est = next;
}

/* c's count went down: lets its held connections go, one at a time, while it is under the
 * limit (each one let go may read a call and hold them all again). */
static void inflight_release_client(arpc_server *s, struct inflight_client *c)
{
    /* Per call, on the loop: references from the loop's stash (no locked add). */
    struct arpc_dlink *l = c->ic_list.dl_head;
    if (l != NULL)
        sconn_retain_loop(ARPC_DLIST_ENTRY(l, struct server_conn, sc_client_link));
    while (l != NULL) {
        struct server_conn *sc = ARPC_DLIST_ENTRY(l, struct server_conn, sc_client_link);
        struct arpc_dlink *next = c->ic_calls < s->sv_max_client_calls ? l->dl_next : NULL;
        if (next != NULL)
            sconn_retain_loop(ARPC_DLIST_ENTRY(next, struct server_conn, sc_client_link));
        if (c->ic_calls < s->sv_max_client_calls)
            arpc_conn_release_input(&sc->sc_conn, ARPC_CONN_HOLD_CLIENT_CALLS); /* may close sc */
        sconn_release_loop(sc);
        l = next; /* a connection closed meanwhile was unlinked: its dl_next is NULL, the walk ends */
    }
}

/* A client that sent all it will (a half-close, or bad input on JSON-RPC) is closed once all
 * it sent is answered. */
static void inflight_close_if_answered(struct server_conn *sc)
{
    if (sconn_input_ended(sc) && !sconn_owes_answers(sc))
        sconn_close_answered(sc);
}

/* sc is held for bytes, unsaid (inflight_note_hold), and a call of it ended: the hold is said
 * once the bytes keep it with the guessed calls counted at est, the ended call's method's
 * estimate now (the best word on what the guesses are worth); forgotten once let go. */
static void inflight_judge_unsaid(struct server_conn *sc, size_t est)
{
    if (!sc->sc_conn.c_open || !(sc->sc_conn.c_hold & ARPC_CONN_HOLD_BYTES))
        sc->sc_hold_unsaid = false;
    else if (inflight_bytes_keep_hold(sc, inflight_bytes_reguessed(sc, est)))
        inflight_say_unsaid(sc);
}

void inflight_answered_early(arpc_request *req)
{
    struct request_state *st = req->rq_state;
    if (!st->rs_counted || st->rs_answered_early)
        return;
    st->rs_answered_early = true;
    st->rs_conn->sc_answered_early++;
}

void inflight_end(arpc_request *req, size_t reply_len)
{
    struct request_state *st = req->rq_state;
    if (!st->rs_counted)
        return;
    st->rs_counted = false;
    struct server_conn *sc = st->rs_conn; /* the server's part holds it */
    bool answered_early = st->rs_answered_early;
    st->rs_answered_early = false;
    arpc_server *s = sc->sc_server;
    size_t est = st->rs_charge - (sizeof(*req) + sizeof(*st) + st->rs_len);
    sc->sc_owed_est -= est;
    if (st->rs_guessed) {
        sc->sc_guess_est -= est;
        sc->sc_guess_calls--;
    }
    int state = atomic_load(&s->sv_state);
    if (state == SV_STOPPED)
        return; /* every connection is closed; the entries go with the server */
    if (reply_len > 0)
        inflight_learn(st->rs_method, reply_len);
    struct inflight_client *c = sc->sc_client;
    sc->sc_ncalls--;
    sc->sc_answered_early -= answered_early;
    if (c != NULL)
        c->ic_calls--;
    if (state != SV_RUNNING) {
        /* Stopping: nothing new is accepted, and letting a connection go hands up its
         * frames, which may close connections while a stop step walks them: they stay held
         * until closed. */
        if (c != NULL)
            inflight_client_put(s, c);
        return;
    }
    if (c != NULL)
        c->ic_pins++; /* each release below may hand up frames, which may close connections */
    arpc_conn_paid(&sc->sc_conn, st->rs_charge);
    if (sc->sc_hold_unsaid) /* a hold the guesses made: do the replies now known keep it? */
        inflight_judge_unsaid(sc, st->rs_method->m_reply_est);
    if (sc->sc_ncalls < s->sv_max_calls)
        arpc_conn_release_input(&sc->sc_conn, ARPC_CONN_HOLD_CALLS);
    if (c != NULL) {
        inflight_release_client(s, c);
        c->ic_pins--;
        inflight_client_put(s, c);
    }
    inflight_close_if_answered(sc);
}

void inflight_attach(struct server_conn *sc) { sc->sc_attached++; }

void inflight_detach(struct server_conn *sc)
{
    sc->sc_attached--;
    inflight_close_if_answered(sc);
}
