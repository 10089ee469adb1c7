/* One table, two views: the enum (error.h), the names and the messages below. */
#include "arpc/error.h"

static const char *const error_names[] = {
#define ARPC_ERROR_NAME_(name, msg) "ARPC_" #name,
    ARPC_ERROR_TABLE(ARPC_ERROR_NAME_)
#undef ARPC_ERROR_NAME_
};

static const char *const error_messages[] = {
#define ARPC_ERROR_MSG_(name, msg) msg,
    ARPC_ERROR_TABLE(ARPC_ERROR_MSG_)
#undef ARPC_ERROR_MSG_
};

const char *arpc_errname(int err)
{
    if (err < 0 || err >= ARPC_ERROR_COUNT_)
        return "ARPC_EUNKNOWN";
    return error_names[err];
}

const char *arpc_strerror(int err)
{
    if (err < 0 || err >= ARPC_ERROR_COUNT_)
        return "unknown error";
    return error_messages[err];
}
