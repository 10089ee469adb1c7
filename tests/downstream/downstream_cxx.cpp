/*
 * A C++ program using the installed headers (every one the install has: the optional parts'
 * only when they were built), compiled with -Wall -Wextra -Werror -pedantic: the headers stay
 * C++-clean (extern "C", no C-only syntax in macros or inline functions). It makes one call
 * over inproc://, with per-call options and a stats snapshot value-initialised as C++ does
 * (arpc/stats.h: arpc_server_stats st{}). Exits 0 and prints "downstream c++ ok" if it holds.
 */
#include <cstdio>
#include <cstring>

#include <arpc/arpc.h>
#include <arpc/auth.h>
#include <arpc/tls.h>
#if __has_include(<arpc/jsonrpc.h>)
#include <arpc/jsonrpc.h>
#endif
#if __has_include(<arpc/protobuf.h>)
#include <arpc/protobuf.h>
#endif

static void echo(arpc_request *req, void *)
{
    size_t len = 0;
    const void *in = arpc_request_data(req, &len);
    arpc_reply(req, in, len);
}

int main()
{
    if (arpc_version() != ARPC_VERSION_NUMBER) {
        std::fprintf(stderr, "downstream c++: headers are %s, library is %s\n", ARPC_VERSION_STRING,
                     arpc_version_string());
        return 1;
    }
    arpc_server *server = nullptr;
    char addr[256];
    arpc_server_options so{};
    so.workers = 1;
    int rc = arpc_server_create(&server, &so);
    if (rc == ARPC_OK)
        rc = arpc_server_register(server, "echo", echo, nullptr, nullptr);
    if (rc == ARPC_OK)
        rc = arpc_server_listen(server, "inproc://downstream-cxx", addr, sizeof(addr));
    arpc_client *client = nullptr;
    if (rc == ARPC_OK)
        rc = arpc_client_connect(&client, addr, nullptr);
    if (rc != ARPC_OK) {
        std::fprintf(stderr, "downstream c++: %s\n", arpc_strerror(rc));
        return 1;
    }
    const char msg[] = "hello from c++";
    arpc_call_options o{};
    o.deadline_at_ns = arpc_now_ns() + 5000ull * 1000000;
    void *reply = nullptr;
    size_t len = 0;
    rc = arpc_call_opts(client, "echo", msg, sizeof(msg), &reply, &len, &o);
    bool ok = rc == ARPC_OK && len == sizeof(msg) && std::memcmp(reply, msg, len) == 0;
    arpc_free(reply);
    arpc_server_stats st{};
    ok = ok && arpc_server_stats(server, &st) == ARPC_OK && st.calls.started >= 1;
    arpc_client_close(client);
    arpc_server_destroy(server);
    if (!ok) {
        std::fprintf(stderr, "downstream c++: the call failed: %s\n", arpc_strerror(rc));
        return 1;
    }
    std::puts("downstream c++ ok");
    return 0;
}
