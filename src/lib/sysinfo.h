/* sysinfo.h: facts about this host that placement and status need. Linux. */
#ifndef LLMESH_SYSINFO_H
#define LLMESH_SYSINFO_H

#include <stdint.h>

/* MemAvailable from /proc/meminfo in bytes, or 0 when unknown. */
uint64_t sysinfo_memory_available(void);
/* MemTotal in bytes, or 0 when unknown. */
uint64_t sysinfo_memory_total(void);

#endif
