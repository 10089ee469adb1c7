/* Where one JSON object ends in a byte stream, and the memory jansson's parse of it would take,
 * estimated as the scan goes (core/jsonrpc_scan.h). */
#include "core/jsonrpc_scan.h"

#include "arpc/error.h"

size_t jsonrpc_skip_space(const uint8_t *buf, size_t len)
{
    size_t i = 0;
    while (i < len && jsonrpc_is_space(buf[i]))
        i++;
    return i;
}

int jsonrpc_scan(struct jsonrpc_scan *st, const uint8_t *buf, size_t len, size_t *obj_len)
{
    if (st->js_pos == 0 && len > 0 && buf[0] != '{')
        return ARPC_EPROTO;
    for (size_t i = st->js_pos; i < len; i++) {
        uint8_t b = buf[i];
        if (st->js_in_string) {
            if (st->js_escape)
                st->js_escape = false;
            else if (b == '\\')
                st->js_escape = true;
            else if (b == '"')
                st->js_in_string = false;
            continue;
        }
        if (b == '"') {
            st->js_in_string = true;
            st->js_cost += JSONRPC_SCAN_COST_STRING;
        } else if (b == '{' || b == '[') {
            if (++st->js_depth > JSONRPC_SCAN_MAX_DEPTH)
                return ARPC_EPROTO;
            st->js_cost += b == '{' ? JSONRPC_SCAN_COST_OBJECT : JSONRPC_SCAN_COST_ARRAY;
        } else if (b == ',') {
            st->js_cost += JSONRPC_SCAN_COST_VALUE;
        } else if (b == '}' || b == ']') {
            if (st->js_depth == 0)
                return ARPC_EPROTO;
            if (--st->js_depth == 0) {
                *obj_len = i + 1;
                jsonrpc_scan_reset(st);
                return ARPC_OK;
            }
        }
        if (st->js_cost_max != 0 && st->js_cost > st->js_cost_max) {
            st->js_costly = true;
            return ARPC_ETOOLARGE;
        }
    }
    st->js_pos = len;
    return ARPC_EAGAIN;
}

int jsonrpc_next(struct jsonrpc_scan *st, const uint8_t *buf, size_t *start, size_t end, size_t max,
                 size_t *obj_len)
{
    if (st->js_pos == 0) /* between objects: whitespace separates them */
        *start += jsonrpc_skip_space(buf + *start, end - *start);
    size_t have = end - *start;
    *obj_len = 0;
    if (have == 0)
        return ARPC_EAGAIN;
    st->js_cost_max = (uint64_t)max * JSONRPC_SCAN_COST_PER_BYTE + JSONRPC_SCAN_COST_BASE;
    int rc = jsonrpc_scan(st, buf + *start, have, obj_len);
    if (rc == ARPC_EPROTO || rc == ARPC_ETOOLARGE)
        return rc;
    if ((rc == ARPC_EAGAIN ? have : *obj_len) > max)
        return ARPC_ETOOLARGE;
    if (rc == ARPC_EAGAIN)
        *obj_len = have;
    return rc;
}
