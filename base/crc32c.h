/*
 * CRC32C (Castagnoli, reflected polynomial 0x82F63B78): the checksum of every reply log
 * record. The same function iSCSI, ext4 and SSE4.2's crc32 instruction compute, so any tool
 * can check a record.
 *
 * Start with crc = 0; feeding the result back in continues the checksum, so
 * arpc_crc32c(arpc_crc32c(0, a, n), b, m) equals the checksum of a and b laid end to end.
 *
 * Pure functions of their arguments: any thread, no allocation. The first call picks the
 * implementation (the crc32 instruction when the CPU has SSE4.2, else a table-driven
 * slice-by-8) and builds the tables, once per process.
 */
#ifndef ARPC_BASE_CRC32C_H
#define ARPC_BASE_CRC32C_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

uint32_t arpc_crc32c(uint32_t crc, const void *p, size_t n);

/* The implementations behind arpc_crc32c, for tests and measurements. arpc_crc32c_hw uses
 * the crc32 instruction when arpc_crc32c_hw_available() says the CPU has it, and is the
 * portable one otherwise. */
uint32_t arpc_crc32c_portable(uint32_t crc, const void *p, size_t n);
bool arpc_crc32c_hw_available(void);
uint32_t arpc_crc32c_hw(uint32_t crc, const void *p, size_t n);

#endif
