/*
 * Snapshots of the server's and the client's counters (arpc/stats.h), read on the calling
 * thread while the loop goes on writing them (core/stats.h says why that needs no lock).
 */
#include <string.h>

#include "arpc/stats.h"
#include "core/client_internal.h"
#include "core/server_internal.h"

/* Hands the caller min(its size, ours) of snap; the part of a newer caller's struct we do not
 * know is zeroed. */
static void snapshot_out(void *out, size_t out_size, const void *snap, size_t snap_size)
{
    memset(out, 0, out_size);
    memcpy(out, snap, out_size < snap_size ? out_size : snap_size);
}

static uint64_t clamped_diff(uint64_t a, uint64_t b) { return a > b ? a - b : 0; }

void stats_read_calls(const struct call_stats *cs, arpc_call_counts *out)
{
    /* Read one after the other while the loop writes: in_flight is clamped. */
    out->finished = arpc_stat_get(&cs->cs_finished);
    out->started = arpc_stat_get(&cs->cs_started);
    out->in_flight = clamped_diff(out->started, out->finished);
    for (unsigned i = 0; i < ARPC_STATS_CODES; i++)
        out->by_outcome[i] = arpc_stat_get(&cs->cs_outcome[i]);
}

static void calls_add(arpc_call_counts *sum, const arpc_call_counts *c)
{
    sum->started += c->started;
    sum->finished += c->finished;
    sum->in_flight += c->in_flight;
    for (unsigned i = 0; i < ARPC_STATS_CODES; i++)
        sum->by_outcome[i] += c->by_outcome[i];
}

int arpc_server_stats_v(const arpc_server *s, arpc_server_stats *out, size_t out_size)
{
    if (!server_live(s, "arpc_server_stats") || out == NULL)
        return ARPC_EINVAL;
    arpc_server_stats st;
    memset(&st, 0, sizeof(st));
    const struct server_stats *ss = &s->sv_stats;
    const struct arpc_registry *r = &s->sv_registry;
    for (size_t i = 0; i < r->r_count; i++) {
        const struct method_stats *ms = r->r_methods[i]->m_stats;
        arpc_call_counts c;
        stats_read_calls(&ms->ms_calls, &c);
        calls_add(&st.calls, &c);
        st.oneway += arpc_stat_get(&ms->ms_oneway);
    }
    for (unsigned i = 0; i < ARPC_STATS_CODES; i++)
        st.refused[i] = arpc_stat_get(&ss->ss_refused[i]);
    st.bytes_in = arpc_stat_get(&ss->ss_io.io_bytes_in);
    st.bytes_out = arpc_stat_get(&ss->ss_io.io_bytes_out);
    st.connections_closed = arpc_stat_get(&ss->ss_closed);
    st.connections_accepted = arpc_stat_get(&ss->ss_accepted);
    st.connections_open = clamped_diff(st.connections_accepted, st.connections_closed);
    st.queued_bytes = arpc_stat_get(&ss->ss_io.io_queued);
    /* Less the counts the loop took ahead (core/server_internal.h): two relaxed reads, a gauge. */
    uint32_t held = atomic_load_explicit(&((arpc_server *)s)->sv_inflight, memory_order_relaxed);
    uint32_t ahead = atomic_load_explicit(&((arpc_server *)s)->sv_inflight_ahead, memory_order_relaxed);
    st.handlers_in_flight = held > ahead ? held - ahead : 0;
    st.methods = r->r_count;
    st.connections_half_closed = arpc_stat_get(&ss->ss_half_closed);
    st.log_expiries_lost = arpc_stat_get(&ss->ss_expiries_unlogged);
    st.accept_rate_pauses = arpc_stat_get(&ss->ss_accept_pauses);
    st.accept_rate_paused_ns = arpc_stat_get(&ss->ss_accept_paused_ns);
    st.connections_faulted = arpc_stat_get(&ss->ss_faulted);
    st.fault_rate_pauses = arpc_stat_get(&ss->ss_fault_pauses);
    st.fault_rate_paused_ns = arpc_stat_get(&ss->ss_fault_paused_ns);
    st.log_records = arpc_stat_get(&ss->ss_log_records);
    st.log_failed = atomic_load(&((arpc_server *)s)->sv_log_failed);
    const struct arpc_reply_cache_gauges *rg = &s->sv_cache.rc_gauges;
    st.reply_cache_bytes = arpc_stat_get(&rg->g_bytes);
    st.reply_cache_clients = arpc_stat_get(&rg->g_clients);
    st.reply_cache_calls = arpc_stat_get(&rg->g_entries);
    st.oneways_dropped = arpc_stat_get(&ss->ss_oneways_dropped);
    snapshot_out(out, out_size, &st, sizeof(st));
    return ARPC_OK;
}

/* A method's counters and latency summary. */
void stats_read_method(const struct method_stats *ms, arpc_method_stats *st)
{
    memset(st, 0, sizeof(*st));
    stats_read_calls(&ms->ms_calls, &st->calls);
    st->oneway = arpc_stat_get(&ms->ms_oneway);
    const arpc_hist *h = &ms->ms_latency;
    st->latency_count = arpc_hist_count(h);
    st->latency_sum_ns = arpc_hist_sum(h);
    st->latency_p50_ns = arpc_hist_percentile(h, 50);
    st->latency_p90_ns = arpc_hist_percentile(h, 90);
    st->latency_p99_ns = arpc_hist_percentile(h, 99);
    st->latency_p999_ns = arpc_hist_percentile(h, 99.9);
    st->latency_max_ns = arpc_hist_percentile(h, 100);
}

int arpc_server_method_stats_v(const arpc_server *s, const char *method, arpc_method_stats *out,
                               size_t out_size)
{
    if (!server_live(s, "arpc_server_method_stats") || method == NULL || out == NULL)
        return ARPC_EINVAL;
    const struct arpc_method *m = arpc_registry_find(&s->sv_registry, method, strlen(method));
    if (m == NULL)
        return ARPC_ENOMETHOD;
    arpc_method_stats st;
    stats_read_method(m->m_stats, &st);
    snapshot_out(out, out_size, &st, sizeof(st));
    return ARPC_OK;
}

int arpc_client_stats_v(const arpc_client *c, arpc_client_stats *out, size_t out_size)
{
    if (!client_live(c, "arpc_client_stats") || out == NULL)
        return ARPC_EINVAL;
    arpc_client_stats st;
    memset(&st, 0, sizeof(st));
    const struct client_stats *cs = &c->cl_stats;
    stats_read_calls(&cs->cst_calls, &st.calls);
    st.bytes_in = arpc_stat_get(&cs->cst_io.io_bytes_in);
    st.bytes_out = arpc_stat_get(&cs->cst_io.io_bytes_out);
    st.connections_closed = arpc_stat_get(&cs->cst_closed);
    st.connections_opened = atomic_load_explicit(&((arpc_client *)c)->cl_connections, memory_order_relaxed);
    st.queued_bytes = arpc_stat_get(&cs->cst_io.io_queued);
    st.oneways = arpc_stat_get(&cs->cst_oneways);
    st.oneways_dropped = arpc_stat_get(&cs->cst_oneways_dropped);
    st.name_lookups = atomic_load_explicit(&((arpc_client *)c)->cl_lookups, memory_order_relaxed);
    snapshot_out(out, out_size, &st, sizeof(st));
    return ARPC_OK;
}
