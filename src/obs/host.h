/* host.h - the machine the process runs on, read from Linux /proc: CPUs,
 * memory, CPU steal time (a hypervisor giving this VM's CPUs to others)
 * and pressure stall information (PSI: the share of time tasks waited for
 * a CPU, memory or I/O). For the diagnostics snapshot and its contention
 * findings. Each call reads afresh; thread-safe; a value that cannot be
 * read is reported as unavailable, never as an error. */
#ifndef KILN_OBS_HOST_H
#define KILN_OBS_HOST_H

#include <stdbool.h>
#include <stdint.h>

typedef struct host_info {
    int32_t n_cpus;                    /* online CPUs */
    char cpu_model[128];               /* "AMD EPYC 9R14", or "" */
    uint64_t mem_total, mem_available; /* bytes; 0 when unreadable */
} host_info;

void host_info_read(host_info *out);

/* Cumulative CPU time of the whole machine in clock ticks (/proc/stat):
 * total and steal. ok false when unreadable. Differences of two reads give
 * the steal share of an interval. */
typedef struct host_cpu_times {
    bool ok;
    uint64_t total, steal;
} host_cpu_times;

void host_cpu_times_read(host_cpu_times *out);
/* Clock ticks per second (the unit of host_cpu_times). */
double host_clock_ticks(void);

/* PSI "some" averages (percent of time at least one task stalled) over 10 s
 * and 60 s for one resource, and the cumulative stall time in microseconds
 * of "some" (at least one task stalled) and "full" (all non-idle tasks
 * stalled; 0 where the kernel has no full line, as for cpu before 5.13); ok
 * false when the kernel has no PSI (or it is disabled). */
typedef struct host_pressure {
    bool ok;
    double avg10, avg60;
    uint64_t some_total_us, full_total_us;
} host_pressure;

/* resource: "cpu", "memory" or "io". */
void host_pressure_read(const char *resource, host_pressure *out);

/* Threads of this process (/proc/self/status), -1 when unreadable. */
int32_t host_self_threads(void);

#endif
