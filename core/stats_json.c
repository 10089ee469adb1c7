/*
 * The stats as JSON (arpc_server_stats_json; the built-in method arpc.stats answers it). The
 * layout is in arpc/stats.h. Written by hand: a few objects of numbers and names need no JSON
 * library, and the core depends on none.
 */
#include <inttypes.h>

#include "arpc/stats.h"
#include "base/text_buf.h"
#include "base/utf8.h"
#include "core/server_internal.h"

/* A JSON string: quote and backslash escaped, UTF-8 characters as they are, and every other
 * byte outside printable ASCII as \u00XX (method names are the application's bytes, not
 * necessarily UTF-8: such a byte reads back as the Latin-1 character of its value). */
static void json_string(struct text_buf *b, const char *s)
{
    text_buf_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        size_t n = *p >= 0x80 ? arpc_utf8_multibyte_len(p) : 0;
        if (n != 0) {
            text_buf_append(b, (const char *)p, n);
            p += n - 1;
        } else if (*p == '"' || *p == '\\')
            text_buf_printf(b, "\\%c", *p);
        else if (*p < 0x20 || *p > 0x7e)
            text_buf_printf(b, "\\u%04x", *p);
        else
            text_buf_append(b, (const char *)p, 1);
    }
    text_buf_puts(b, "\"");
}

/* {"ARPC_OK": n, ...} with the codes counted at least once. */
static void json_outcomes(struct text_buf *b, const uint64_t *counts)
{
    text_buf_puts(b, "{");
    const char *sep = "";
    for (int code = 0; code < ARPC_STATS_CODES; code++) {
        if (counts[code] == 0)
            continue;
        text_buf_printf(b, "%s\"%s\": %" PRIu64, sep, arpc_errname(code), counts[code]);
        sep = ", ";
    }
    text_buf_puts(b, "}");
}

static void json_method(struct text_buf *b, const struct arpc_method *m)
{
    arpc_method_stats ms;
    stats_read_method(m->m_stats, &ms);
    json_string(b, m->m_name);
    text_buf_printf(b, ": {\"started\": %" PRIu64 ", \"finished\": %" PRIu64 ", \"in_flight\": %" PRIu64
                       ", \"oneway\": %" PRIu64 ", \"outcomes\": ",
                    ms.calls.started, ms.calls.finished, ms.calls.in_flight, ms.oneway);
    json_outcomes(b, ms.calls.by_outcome);
    text_buf_printf(b, ", \"latency_us\": {\"count\": %" PRIu64 ", \"sum\": %.3f, \"p50\": %.3f, \"p90\": %.3f, "
                       "\"p99\": %.3f, \"p999\": %.3f, \"max\": %.3f}}",
                    ms.latency_count, (double)ms.latency_sum_ns / 1e3, (double)ms.latency_p50_ns / 1e3,
                    (double)ms.latency_p90_ns / 1e3, (double)ms.latency_p99_ns / 1e3,
                    (double)ms.latency_p999_ns / 1e3, (double)ms.latency_max_ns / 1e3);
}

int arpc_server_stats_json(const arpc_server *s, char **out, size_t *len)
{
    arpc_server_stats st;
    int rc = arpc_server_stats(s, &st);
    if (rc != ARPC_OK || out == NULL)
        return rc != ARPC_OK ? rc : ARPC_EINVAL;
    struct text_buf b;
    text_buf_init(&b);
    text_buf_printf(&b, "{\"server\": {\"calls_started\": %" PRIu64 ", \"calls_finished\": %" PRIu64
                        ", \"calls_in_flight\": %" PRIu64 ", \"outcomes\": ",
                    st.calls.started, st.calls.finished, st.calls.in_flight);
    json_outcomes(&b, st.calls.by_outcome);
    text_buf_puts(&b, ", \"refused\": ");
    json_outcomes(&b, st.refused);
    text_buf_printf(&b, ", \"oneway\": %" PRIu64 ", \"bytes_in\": %" PRIu64 ", \"bytes_out\": %" PRIu64
                        ", \"connections_accepted\": %" PRIu64 ", \"connections_closed\": %" PRIu64
                        ", \"connections_open\": %" PRIu64 ", \"queued_bytes\": %" PRIu64
                        ", \"handlers_in_flight\": %" PRIu64 ", \"connections_half_closed\": %" PRIu64
                        ", \"log_expiries_lost\": %" PRIu64 ", \"accept_rate_pauses\": %" PRIu64
                        ", \"accept_rate_paused_ns\": %" PRIu64 ", \"connections_faulted\": %" PRIu64
                        ", \"fault_rate_pauses\": %" PRIu64 ", \"fault_rate_paused_ns\": %" PRIu64
                        ", \"log_records\": %" PRIu64 ", \"log_failed\": %" PRIu64
                        ", \"reply_cache_bytes\": %" PRIu64 ", \"reply_cache_clients\": %" PRIu64
                        ", \"reply_cache_calls\": %" PRIu64 ", \"oneways_dropped\": %" PRIu64
                        "},\n \"methods\": {",
                    st.oneway, st.bytes_in, st.bytes_out, st.connections_accepted, st.connections_closed,
                    st.connections_open, st.queued_bytes, st.handlers_in_flight, st.connections_half_closed,
                    st.log_expiries_lost, st.accept_rate_pauses, st.accept_rate_paused_ns,
                    st.connections_faulted, st.fault_rate_pauses, st.fault_rate_paused_ns, st.log_records,
                    st.log_failed, st.reply_cache_bytes, st.reply_cache_clients, st.reply_cache_calls,
                    st.oneways_dropped);
    const struct arpc_registry *r = &s->sv_registry;
    for (size_t i = 0; i < r->r_count; i++) {
        text_buf_puts(&b, i ? ",\n  " : "\n  ");
        json_method(&b, r->r_methods[i]);
    }
    text_buf_puts(&b, "}}\n");
    return text_buf_finish(&b, out, len);
}
