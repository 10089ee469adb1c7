/* Keeps the support library non-empty before any helper exists. */
typedef int arpc_test_support_empty_unit;
