/*
 * A numbered (at-most-once) call's xid is its seq with ARPC_XID_SEQ_BIT, the same on every
 * send (core/client_internal.h: one field for both, 8 bytes a call less), while a call of
 * other semantics takes a new xid at each send. Against a scripted server (raw frames) that
 * deduplicates and keeps its epoch: two numbered calls and one at-least-once call are read on
 * the first connection, which is then closed unanswered; the client reconnects and sends all
 * three again, which are answered there by the xids they came with.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "arpc/client.h"
#include "arpc/error.h"
#include "arpc/future.h"
#include "core/frame.h"
#include "support/raw_client.h"
#include "support/raw_server.h"
#include "support/test_util.h"

#define CALLS 3 /* 'A' and 'B' numbered, 'L' at-least-once */

struct seen {
    uint64_t sn_xid, sn_seq;
};

struct script {
    struct seen sc_seen[2][CALLS]; /* by connection, by the payload's letter (A, B, L) */
};

static int letter_index(char c) { return c == 'A' ? 0 : c == 'B' ? 1 : c == 'L' ? 2 : -1; }

/* Reads the three requests of connection conn, noting each one's xid and seq. */
static bool read_three(struct raw_client *r, void *arg, int conn)
{
    struct seen *seen = ((struct script *)arg)->sc_seen[conn];
    for (int i = 0; i < CALLS; i++) {
        struct raw_frame f;
        if (!raw_read(r, &f, false) || f.f.f_kind != ARPC_FRAME_REQUEST || f.f.f_payload_len != 1)
            return false;
        int k = letter_index((char)f.f.f_payload[0]);
        if (k < 0 || seen[k].sn_xid != 0)
            return false;
        seen[k] = (struct seen){.sn_xid = f.f.f_xid, .sn_seq = f.f.f_seq};
    }
    return true;
}

static bool script_run(struct raw_server *srv, void *arg)
{
    struct script *s = arg;
    struct raw_client *r = malloc(sizeof(*r));
    if (r == NULL)
        return false;
    bool ok = raw_server_read_twice(srv, r, read_three, s);
    for (int i = 0; ok && i < CALLS; i++)
        ok = raw_server_reply_byte(r, s->sc_seen[1][i].sn_xid, 'r');
    if (ok)
        raw_server_read_to_end(r);
    raw_close(r);
    free(r);
    return ok;
}

static void test_numbered_call_keeps_its_xid(void **state)
{
    (void)state;
    struct script s = {0};
    struct raw_server srv;
    raw_server_start(&srv, script_run, &s);
    arpc_client_options o = {.reconnect_min_ms = 10, .reconnect_max_ms = 20}; /* at-most-once */
    arpc_client *c = NULL;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, srv.rs_addr, &o));
    arpc_call_options alo = {.semantics = ARPC_AT_LEAST_ONCE, .deadline_ms = ARPC_FOREVER};
    arpc_future *fs[CALLS] = {
        arpc_call_async(c, "t.m", "A", 1, ARPC_FOREVER),
        arpc_call_async(c, "t.m", "B", 1, ARPC_FOREVER),
        arpc_call_async_opts(c, "t.m", "L", 1, &alo),
    };
    for (int i = 0; i < CALLS; i++) {
        assert_int_equal(ARPC_OK, arpc_future_wait_for(fs[i], TEST_WAIT_MS));
        arpc_future_release(fs[i]);
    }
    arpc_client_close(c);
    assert_true(raw_server_join(&srv));
    for (int k = 0; k < 2; k++) { /* the numbered calls: the same xid on both connections, their seq's */
        const struct seen *first = &s.sc_seen[0][k], *again = &s.sc_seen[1][k];
        assert_true(first->sn_seq != 0);
        assert_int_equal(first->sn_seq, again->sn_seq);
        assert_int_equal(first->sn_xid, again->sn_xid);
        assert_int_equal(ARPC_XID_SEQ_BIT | first->sn_seq, first->sn_xid);
    }
    assert_true(s.sc_seen[0][0].sn_seq != s.sc_seen[0][1].sn_seq);
    /* The at-least-once call: unnumbered, a new xid at the re-send, never one with the bit. */
    const struct seen *l1 = &s.sc_seen[0][2], *l2 = &s.sc_seen[1][2];
    assert_int_equal(0, l1->sn_seq);
    assert_int_equal(0, l2->sn_seq);
    assert_true(l1->sn_xid != l2->sn_xid);
    assert_int_equal(0, l1->sn_xid & ARPC_XID_SEQ_BIT);
    assert_int_equal(0, l2->sn_xid & ARPC_XID_SEQ_BIT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_numbered_call_keeps_its_xid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
