/* The library's version, compiled in, so a program can compare it with the headers it used. */
#include "arpc/version.h"

unsigned arpc_version(void)
{
    return ARPC_VERSION_NUMBER;
}

const char *arpc_version_string(void)
{
    return ARPC_VERSION_STRING;
}
