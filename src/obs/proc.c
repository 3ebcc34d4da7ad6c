/* proc.c - process statistics from Linux /proc and getrusage (see proc.h),
 * and the standard process_* metric families built on them
 * (metrics_add_process, declared in metrics.h). Nothing here keeps state
 * beyond the families' registration. */
#include "obs/proc.h"

#include "base/status.h"
#include "obs/metrics.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* /proc/self/statm: size resident shared text lib data dt, in pages. */
static uint64_t statm_field(int idx) {
    FILE *fp = fopen("/proc/self/statm", "r");
    if (!fp) return 0;
    unsigned long long v[2] = {0, 0};
    int got = fscanf(fp, "%llu %llu", &v[0], &v[1]);
    fclose(fp);
    long page = sysconf(_SC_PAGESIZE);
    if (got != 2 || page <= 0) return 0;
    return (uint64_t)v[idx] * (uint64_t)page;
}

uint64_t proc_rss_bytes(void) {
    return statm_field(1);
}

uint64_t proc_vm_bytes(void) {
    return statm_field(0);
}

double proc_cpu_seconds(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
           1e-6 * (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

int proc_open_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n - 1; /* the directory stream's own descriptor */
}

int proc_max_fds(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ||
        rl.rlim_cur > 0x7fffffff)
        return -1;
    return (int)rl.rlim_cur;
}

/* Field 22 of /proc/self/stat (starttime, clock ticks after boot) plus the
 * boot time (btime, seconds since the epoch) from /proc/stat. The second
 * field (comm) may hold spaces and parentheses, so fields are counted from
 * the last ')'. */
double proc_start_time_seconds(void) {
    char buf[1024];
    FILE *fp = fopen("/proc/self/stat", "r");
    if (!fp) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p) return 0;
    unsigned long long start = 0;
    /* after ")": state(3) ppid pgrp session tty_nr tpgid flags minflt cminflt
     * majflt cmajflt utime stime cutime cstime priority nice num_threads
     * itrealvalue starttime(22) */
    if (sscanf(p + 1,
               " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
               &start) != 1)
        return 0;
    fp = fopen("/proc/stat", "r");
    if (!fp) return 0;
    unsigned long long btime = 0;
    char line[256];
    while (fgets(line, sizeof line, fp))
        if (sscanf(line, "btime %llu", &btime) == 1) break;
    fclose(fp);
    long hz = sysconf(_SC_CLK_TCK);
    if (!btime || hz <= 0) return 0;
    return (double)btime + (double)start / (double)hz;
}

struct proc_families {
    metric *rss, *vm, *cpu, *start, *fds, *max_fds;
};

static void proc_scrape(void *user) {
    struct proc_families *p = user;
    metric_set(p->rss, NULL, (double)proc_rss_bytes());
    metric_set(p->vm, NULL, (double)proc_vm_bytes());
    metric_set(p->cpu, NULL, proc_cpu_seconds());
    int fds = proc_open_fds(), max = proc_max_fds();
    if (fds >= 0) metric_set(p->fds, NULL, fds);
    if (max >= 0) metric_set(p->max_fds, NULL, max);
}

kiln_status metrics_add_process(metrics *m) {
    /* The callback's state lives as long as the registry. */
    struct proc_families *p = metrics_alloc(m, sizeof *p);
    if (!p) return kiln_fail(KILN_ERR_NOMEM, "metrics_add_process: out of memory");
    p->rss =
        metrics_gauge(m, "process_resident_memory_bytes", "Resident memory size in bytes.", NULL);
    p->vm = metrics_gauge(m, "process_virtual_memory_bytes", "Virtual memory size in bytes.", NULL);
    p->cpu = metrics_counter(m, "process_cpu_seconds_total",
                             "Total user and system CPU time spent in seconds.", NULL);
    p->start = metrics_gauge(m, "process_start_time_seconds",
                             "Start time of the process since unix epoch in seconds.", NULL);
    p->fds = metrics_gauge(m, "process_open_fds", "Number of open file descriptors.", NULL);
    p->max_fds =
        metrics_gauge(m, "process_max_fds", "Maximum number of open file descriptors.", NULL);
    if (!p->rss || !p->vm || !p->cpu || !p->start || !p->fds || !p->max_fds)
        return KILN_ERR_INVALID_ARG; /* the failed registration recorded why */
    metric_set(p->start, NULL, proc_start_time_seconds());
    return metrics_on_scrape(m, proc_scrape, p);
}
