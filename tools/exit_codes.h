/*
 * tools/exit_codes.h: arpc-call's exit statuses (its --help and the README list them).
 */
#ifndef ARPC_TOOLS_EXIT_CODES_H
#define ARPC_TOOLS_EXIT_CODES_H

#define ARPC_CALL_EXIT_OK 0
#define ARPC_CALL_EXIT_LOCAL 1 /* reading --file or --token-file, writing the output */
#define ARPC_CALL_EXIT_USAGE 2
#define ARPC_CALL_EXIT_BASE 10 /* + the ARPC_E* code of the failure */

#endif
