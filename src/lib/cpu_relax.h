/* cpu_relax.h: the CPU's spin-wait hint, for loops that poll a flag another
 * thread will set (the thread pool's idle workers, a pipeline lane polling
 * for a reply that is due). Generic: knows nothing about llmesh. */
#ifndef LLMESH_CPU_RELAX_H
#define LLMESH_CPU_RELAX_H

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

#endif
