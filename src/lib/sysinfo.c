/* sysinfo.c: see sysinfo.h. */
#include "lib/sysinfo.h"

#include <stdio.h>
#include <string.h>

static uint64_t meminfo_field(const char *name)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    uint64_t value = 0;
    size_t n = strlen(name);
    while (fgets(line, sizeof line, f)) {
        unsigned long long kib;
        if (!strncmp(line, name, n) && line[n] == ':' && sscanf(line + n + 1, "%llu", &kib) == 1) {
            value = (uint64_t)kib * 1024;
            break;
        }
    }
    fclose(f);
    return value;
}

uint64_t sysinfo_memory_available(void) { return meminfo_field("MemAvailable"); }
uint64_t sysinfo_memory_total(void) { return meminfo_field("MemTotal"); }
