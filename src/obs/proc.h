/* proc.h - statistics of the calling process, read from Linux /proc and
 * getrusage, for the process_* metrics (metrics_add_process in metrics.h)
 * and diagnostics. Each call reads afresh (a few system calls; no caching);
 * all are thread-safe. A value that cannot be read comes back as 0 (or -1
 * where stated), never as an error: these are best-effort observations. */
#ifndef KILN_OBS_PROC_H
#define KILN_OBS_PROC_H

#include <stdint.h>

/* Resident set size in bytes (/proc/self/statm), 0 when unreadable. */
uint64_t proc_rss_bytes(void);

/* Virtual memory size in bytes (/proc/self/statm), 0 when unreadable. */
uint64_t proc_vm_bytes(void);

/* User plus system CPU time consumed by all threads so far, in seconds
 * (getrusage RUSAGE_SELF). */
double proc_cpu_seconds(void);

/* Open file descriptors (entries of /proc/self/fd), -1 when unreadable. */
int proc_open_fds(void);

/* The soft limit on open file descriptors (RLIMIT_NOFILE), -1 when unlimited
 * or unreadable. */
int proc_max_fds(void);

/* When the process started, in seconds since the Unix epoch (from
 * /proc/self/stat and the boot time in /proc/stat; resolution one clock
 * tick), 0 when unreadable. */
double proc_start_time_seconds(void);

#endif
