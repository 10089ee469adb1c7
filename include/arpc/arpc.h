/* arpc: asynchronous RPC in C. Include this for the whole public API but its optional parts,
 * which have headers of their own, installed only by a library built with them:
 * arpc/jsonrpc.h (ARPC_WITH_JSONRPC, jansson) and arpc/protobuf.h (ARPC_WITH_PROTOBUF). */
#ifndef ARPC_ARPC_H
#define ARPC_ARPC_H

#include "arpc/actor.h"
#include "arpc/alloc.h"
#include "arpc/auth.h"
#include "arpc/client.h"
#include "arpc/common.h"
#include "arpc/cq.h"
#include "arpc/error.h"
#include "arpc/future.h"
#include "arpc/log.h"
#include "arpc/loop.h"
#include "arpc/server.h"
#include "arpc/stats.h"
#include "arpc/tls.h"
#include "arpc/version.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif

#endif
