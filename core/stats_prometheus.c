/*
 * The stats in the Prometheus text exposition format, version 0.0.4
 * (arpc_server_stats_prometheus; the metric names are listed in arpc/stats.h). Each family is
 * written whole, HELP and TYPE first, as the format asks; per-method families carry a method
 * label, outcomes an outcome label (arpc_errname).
 */
#include <inttypes.h>
#include <string.h>

#include "arpc/stats.h"
#include "base/alloc.h"
#include "base/text_buf.h"
#include "base/utf8.h"
#include "core/server_internal.h"

/* The latency buckets' upper bounds, in ns: the usual 1-2.5-5 series from 50 us to 10 s. */
static const uint64_t latency_bounds_ns[] = {
    50000,     100000,    250000,    500000,     1000000,    2500000,    5000000,    10000000, 25000000,
    50000000,  100000000, 250000000, 500000000,  1000000000, 2500000000, 5000000000, 10000000000,
};
#define NBOUNDS (sizeof(latency_bounds_ns) / sizeof(latency_bounds_ns[0]))

static void family(struct text_buf *b, const char *name, const char *type, const char *help)
{
    text_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value: backslash, double quote and line feed escaped, as the format requires, and a
 * byte that is not UTF-8 as the text \xHH (the format is UTF-8: one such byte would fail the
 * whole scrape; the log and arpc.methods write such a name so too). */
static void label_value(struct text_buf *b, const char *v)
{
    text_buf_puts(b, "\"");
    for (const char *p = v; *p != '\0'; p++) {
        size_t n = (unsigned char)*p >= 0x80 ? arpc_utf8_multibyte_len((const unsigned char *)p) : 0;
        if (n != 0) {
            text_buf_append(b, p, n);
            p += n - 1;
        } else if ((unsigned char)*p >= 0x80)
            text_buf_printf(b, "\\\\x%02x", (unsigned char)*p);
        else if (*p == '\\')
            text_buf_puts(b, "\\\\");
        else if (*p == '"')
            text_buf_puts(b, "\\\"");
        else if (*p == '\n')
            text_buf_puts(b, "\\n");
        else
            text_buf_append(b, p, 1);
    }
    text_buf_puts(b, "\"");
}

/* name{method="M"[,outcome="O"]} value */
static void method_sample(struct text_buf *b, const char *name, const char *method, const char *outcome,
                          uint64_t value)
{
    text_buf_printf(b, "%s{method=", name);
    label_value(b, method);
    if (outcome != NULL)
        text_buf_printf(b, ",outcome=\"%s\"", outcome);
    text_buf_printf(b, "} %" PRIu64 "\n", value);
}

/* One method's latency histogram, from a copy so that every line agrees with the others. */
static void method_histogram(struct text_buf *b, const struct arpc_method *m, arpc_hist *snap)
{
    static const char name[] = "arpc_server_call_duration_seconds";
    arpc_hist_init(snap);
    arpc_hist_merge(snap, &m->m_stats->ms_latency);
    for (size_t i = 0; i < NBOUNDS; i++) {
        text_buf_printf(b, "%s_bucket{method=", name);
        label_value(b, m->m_name);
        text_buf_printf(b, ",le=\"%g\"} %" PRIu64 "\n", (double)latency_bounds_ns[i] / 1e9,
                        arpc_hist_count_le(snap, latency_bounds_ns[i]));
    }
    uint64_t total = arpc_hist_count_le(snap, UINT64_MAX);
    text_buf_printf(b, "%s_bucket{method=", name);
    label_value(b, m->m_name);
    text_buf_printf(b, ",le=\"+Inf\"} %" PRIu64 "\n%s_sum{method=", total, name);
    label_value(b, m->m_name);
    text_buf_printf(b, "} %.9f\n%s_count{method=", (double)arpc_hist_sum(snap) / 1e9, name);
    label_value(b, m->m_name);
    text_buf_printf(b, "} %" PRIu64 "\n", total);
}

static void server_sample(struct text_buf *b, const char *name, const char *type, const char *help, uint64_t v)
{
    family(b, name, type, help);
    text_buf_printf(b, "%s %" PRIu64 "\n", name, v);
}

/* A counter of nanoseconds, shown in seconds (Prometheus' unit). */
static void server_seconds(struct text_buf *b, const char *name, const char *help, uint64_t ns)
{
    family(b, name, "counter", help);
    text_buf_printf(b, "%s %.6f\n", name, ns / 1e9);
}

int arpc_server_stats_prometheus(const arpc_server *s, char **out, size_t *len)
{
    arpc_server_stats st;
    int rc = arpc_server_stats(s, &st);
    if (rc != ARPC_OK || out == NULL)
        return rc != ARPC_OK ? rc : ARPC_EINVAL;
    const struct arpc_registry *r = &s->sv_registry;
    size_t n = r->r_count;
    /* One read of each method, so the families below agree with each other. */
    arpc_method_stats *ms = arpc_calloc(n ? n : 1, sizeof(*ms));
    arpc_hist *snap = arpc_malloc(sizeof(*snap));
    if (ms == NULL || snap == NULL) {
        arpc_free(ms);
        arpc_free(snap);
        return ARPC_ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        stats_read_method(r->r_methods[i]->m_stats, &ms[i]);
    struct text_buf b;
    text_buf_init(&b);

    family(&b, "arpc_server_calls_total", "counter", "Calls answered, by method and outcome.");
    for (size_t i = 0; i < n; i++)
        for (int code = 0; code < ARPC_STATS_CODES; code++)
            if (code == ARPC_OK || ms[i].calls.by_outcome[code] != 0)
                method_sample(&b, "arpc_server_calls_total", r->r_methods[i]->m_name, arpc_errname(code),
                              ms[i].calls.by_outcome[code]);
    family(&b, "arpc_server_calls_started_total", "counter", "Calls dispatched to a method.");
    for (size_t i = 0; i < n; i++)
        method_sample(&b, "arpc_server_calls_started_total", r->r_methods[i]->m_name, NULL, ms[i].calls.started);
    family(&b, "arpc_server_calls_in_flight", "gauge", "Calls dispatched and not yet answered.");
    for (size_t i = 0; i < n; i++)
        method_sample(&b, "arpc_server_calls_in_flight", r->r_methods[i]->m_name, NULL, ms[i].calls.in_flight);
    family(&b, "arpc_server_oneway_total", "counter", "One-way requests dispatched to a method.");
    for (size_t i = 0; i < n; i++)
        method_sample(&b, "arpc_server_oneway_total", r->r_methods[i]->m_name, NULL, ms[i].oneway);
    family(&b, "arpc_server_call_duration_seconds", "histogram",
           "Time from a call's dispatch to its answer reaching the server's loop.");
    for (size_t i = 0; i < n; i++)
        method_histogram(&b, r->r_methods[i], snap);

    family(&b, "arpc_server_refused_total", "counter", "Calls answered before reaching a method, by outcome.");
    for (int code = 0; code < ARPC_STATS_CODES; code++)
        if (st.refused[code] != 0)
            text_buf_printf(&b, "arpc_server_refused_total{outcome=\"%s\"} %" PRIu64 "\n", arpc_errname(code),
                            st.refused[code]);
    server_sample(&b, "arpc_server_received_bytes_total", "counter", "Bytes read from connections.", st.bytes_in);
    server_sample(&b, "arpc_server_sent_bytes_total", "counter", "Bytes written to connections.", st.bytes_out);
    server_sample(&b, "arpc_server_connections_accepted_total", "counter", "Connections accepted.",
                  st.connections_accepted);
    server_sample(&b, "arpc_server_connections_closed_total", "counter", "Connections closed.",
                  st.connections_closed);
    server_sample(&b, "arpc_server_connections_open", "gauge", "Connections open.", st.connections_open);
    server_sample(&b, "arpc_server_queued_bytes", "gauge", "Bytes waiting in output queues.", st.queued_bytes);
    server_sample(&b, "arpc_server_handlers_in_flight", "gauge", "Requests queued for or running in handlers.",
                  st.handlers_in_flight);
    server_sample(&b, "arpc_server_connections_half_closed_total", "counter",
                  "Connections whose client ended its sending (half-close or close) between frames.",
                  st.connections_half_closed);
    server_sample(&b, "arpc_server_log_expiries_lost_total", "counter",
                  "Client expiries and goodbyes the reply log could not record (no memory).",
                  st.log_expiries_lost);
    server_sample(&b, "arpc_server_accept_rate_pauses_total", "counter",
                  "Times a listener stopped accepting because max_accept_rate was reached.",
                  st.accept_rate_pauses);
    server_seconds(&b, "arpc_server_accept_rate_paused_seconds_total",
                   "Time listeners stayed stopped for max_accept_rate, summed over listeners.",
                   st.accept_rate_paused_ns);
    server_sample(&b, "arpc_server_connections_faulted_total", "counter",
                  "Connections closed for their peer's fault (malformed frames, refused auth, TLS failures, timeouts).",
                  st.connections_faulted);
    server_sample(&b, "arpc_server_fault_rate_pauses_total", "counter",
                  "Times a listener stopped accepting because faulty connections were over max_fault_rate.",
                  st.fault_rate_pauses);
    server_seconds(&b, "arpc_server_fault_rate_paused_seconds_total",
                   "Time listeners stayed stopped for max_fault_rate, summed over listeners.", st.fault_rate_paused_ns);
    server_sample(&b, "arpc_server_log_records_total", "counter", "Records the reply log wrote.", st.log_records);
    server_sample(&b, "arpc_server_log_failed", "gauge",
                  "1 once a reply log record could not be made durable: no at-most-once call runs until a restart.",
                  st.log_failed);
    server_sample(&b, "arpc_server_reply_cache_bytes", "gauge",
                  "Bytes the at-most-once reply cache keeps, against reply_cache_bytes (full: numbered calls refused).",
                  st.reply_cache_bytes);
    server_sample(&b, "arpc_server_reply_cache_clients", "gauge", "Client ids the reply cache remembers.",
                  st.reply_cache_clients);
    server_sample(&b, "arpc_server_reply_cache_calls", "gauge",
                  "Calls the reply cache remembers: running, or answered and not yet acknowledged.",
                  st.reply_cache_calls);
    server_sample(&b, "arpc_server_oneways_dropped_total", "counter",
                  "One-way messages to a method the server does not have, dropped.", st.oneways_dropped);
    arpc_free(ms);
    arpc_free(snap);
    return text_buf_finish(&b, out, len);
}
