/*
 * A refused frame in words: what the log line and the GOAWAY say when a peer's bytes break
 * the protocol, so that whoever reads them can tell a client on the wrong port (TLS or HTTP
 * speaking to a clear arpc listener) from an older or newer peer or a corrupt stream.
 *
 * The judging is core/frame.c's alone (arpc_frame_header_fault, in the decoder's order); this
 * file only names its verdict. A frame whose header is sound was refused for its body, and
 * each kind has one such fault (its decoder checks one field against the body's length).
 * Peer bytes appear as numbers only: the text goes into logs (docs/SECURITY.md, log safety).
 */
#include <stdio.h>
#include <string.h>

#include "arpc/common.h"
#include "base/le.h"
#include "core/frame.h"

const char *arpc_frame_kind_name(uint8_t kind)
{
    static const char *const names[] = {
        [ARPC_FRAME_HELLO] = "HELLO", [ARPC_FRAME_REQUEST] = "REQUEST", [ARPC_FRAME_ONEWAY] = "ONEWAY",
        [ARPC_FRAME_REPLY] = "REPLY", [ARPC_FRAME_ERROR] = "ERROR",     [ARPC_FRAME_PING] = "PING",
        [ARPC_FRAME_PONG] = "PONG",   [ARPC_FRAME_GOAWAY] = "GOAWAY",   [ARPC_FRAME_CANCEL] = "CANCEL", [ARPC_FRAME_ACK] = "ACK",
    };
    return kind < sizeof(names) / sizeof(names[0]) && names[kind] != NULL ? names[kind] : "unknown";
}

/* Who sends such first bytes to an arpc port, when it is not arpc. */
static const char *stranger(const uint8_t *buf, size_t len)
{
    /* A TLS record: a handshake (a client's hello, a server's) or an alert (a server refusing
     * clear text). */
    if (len >= 2 && (buf[0] == 0x16 || buf[0] == 0x15) && buf[1] == 0x03)
        return "TLS: this side speaks arpc in clear (tcp://, unix://), the peer TLS (tls://)";
    if (len >= 5 && memcmp(buf, "HTTP/", 5) == 0)
        return "an HTTP response";
    static const char *const http[] = {"GET ", "POST", "PUT ", "HEAD", "PRI ", "OPTI", "DELE", "PATC", "CONN"};
    for (size_t i = 0; len >= 4 && i < sizeof(http) / sizeof(http[0]); i++)
        if (memcmp(buf, http[i], 4) == 0)
            return "an HTTP request";
    if (len >= 1 && buf[0] == '{')
        return "JSON (a JSON-RPC client on an arpc port?)";
    return "not arpc's magic";
}

char *arpc_frame_fault_text(const uint8_t *buf, size_t len, char *out, size_t cap)
{
    if (cap == 0)
        return out;
    uint8_t kind = len > 3 ? buf[3] : 0;
    switch (arpc_frame_header_fault(buf, len)) {
    case ARPC_FAULT_MAGIC:
        snprintf(out, cap, "not an arpc frame (%s)", stranger(buf, len));
        break;
    case ARPC_FAULT_VERSION:
        snprintf(out, cap, "protocol version %u; this side speaks %u", buf[2], ARPC_PROTO_VERSION);
        break;
    case ARPC_FAULT_KIND:
        snprintf(out, cap, "unknown frame kind %u", kind);
        break;
    case ARPC_FAULT_SHORT:
        snprintf(out, cap, "%s frame's body of %u bytes is shorter than its fixed fields (%lld bytes)",
                 arpc_frame_kind_name(kind), le_ld32(buf + 4), (long long)arpc_frame_kind_min_body(kind));
        break;
    default: /* a sound header: the body contradicts its fixed fields */
        switch (kind) {
        case ARPC_FRAME_REQUEST:
        case ARPC_FRAME_ONEWAY:
            snprintf(out, cap, "%s frame's method name length is 0, over 255, or past its body",
                     arpc_frame_kind_name(kind));
            break;
        case ARPC_FRAME_HELLO: {
            /* (A large body read apart leaves only the header here: len says what is.) */
            uint32_t max_frame = len >= ARPC_FRAME_HEADER_SIZE + ARPC_HELLO_MAX_FRAME_AT + 4
                                     ? le_ld32(buf + ARPC_FRAME_HEADER_SIZE + ARPC_HELLO_MAX_FRAME_AT)
                                     : 0;
            if (arpc_frame_hello_limit_bad(max_frame))
                snprintf(out, cap, "HELLO frame announces a frame limit of %u bytes, under the %u an arpc peer may announce",
                         max_frame, ARPC_MAX_FRAME_MIN);
            else
                snprintf(out, cap, "HELLO frame promises a token its body does not hold");
            break;
        }
        case ARPC_FRAME_ERROR:
        case ARPC_FRAME_GOAWAY:
            snprintf(out, cap, "%s frame's message runs past its body", arpc_frame_kind_name(kind));
            break;
        case ARPC_FRAME_ACK:
            snprintf(out, cap, "ACK frame's list of waiting calls is over %u long, past its body, out of order, "
                     "or outside (ack, high]", ARPC_ACK_WAITING_MAX);
            break;
        default:
            snprintf(out, cap, "malformed %s frame", arpc_frame_kind_name(kind));
            break;
        }
        break;
    }
    return out;
}
