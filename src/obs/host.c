/* host.c - host.h's readings of /proc/cpuinfo, /proc/meminfo, /proc/stat,
 * /proc/pressure/<resource> and /proc/self/status. */
#include "obs/host.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

void host_info_read(host_info *out) {
    memset(out, 0, sizeof *out);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    out->n_cpus = n > 0 ? (int32_t)n : 0;
    char line[512];
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10)) continue;
        const char *v = strchr(line, ':');
        if (!v) break;
        v++;
        while (*v == ' ' || *v == '\t') v++;
        snprintf(out->cpu_model, sizeof out->cpu_model, "%.*s", (int)strcspn(v, "\n"), v);
        break;
    }
    if (f) fclose(f);
    if (!(f = fopen("/proc/meminfo", "r"))) return;
    unsigned long long kb;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "MemTotal: %llu kB", &kb) == 1) out->mem_total = kb * 1024;
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) out->mem_available = kb * 1024;
    }
    fclose(f);
}

void host_cpu_times_read(host_cpu_times *out) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return;
    unsigned long long v[10] = {0};
    int got = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1],
                     &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]);
    fclose(f);
    if (got < 8) return;
    /* guest time (fields 9, 10) is already inside user and nice */
    for (int i = 0; i < 8; i++) out->total += v[i];
    out->steal = v[7];
    out->ok = true;
}

void host_pressure_read(const char *resource, host_pressure *out) {
    memset(out, 0, sizeof *out);
    char path[64];
    snprintf(path, sizeof path, "/proc/pressure/%s", resource);
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        double a10, a60;
        unsigned long long total;
        bool some = !strncmp(line, "some ", 5);
        if (sscanf(line + 5, "avg10=%lf avg60=%lf avg300=%*f total=%llu", &a10, &a60, &total) != 3)
            continue;
        if (some) {
            out->avg10 = a10, out->avg60 = a60, out->some_total_us = total;
            out->ok = true;
        } else if (!strncmp(line, "full ", 5)) {
            out->full_total_us = total;
        }
    }
    fclose(f);
}

double host_clock_ticks(void) {
    long t = sysconf(_SC_CLK_TCK);
    return t > 0 ? (double)t : 100;
}

int32_t host_self_threads(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    int n = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "Threads: %d", &n) == 1) break;
    fclose(f);
    return n;
}
