/* gpu.h - NVIDIA GPU telemetry through NVML, loaded at run time: no NVML
 * header at build time and no link dependency, so one Kiln binary runs on
 * machines with and without the driver. For the diagnostics snapshot's "gpu"
 * section, the kiln_gpu_* metric families and the GPU findings of the
 * bottleneck analysis.
 *
 * gpu_open dlopen()s libnvidia-ml.so.1 (or the file named by the environment
 * variable KILN_NVML_LIB, which the tests point at a library of canned answers) and initialises
 * NVML; gpu_read fills one device's sample. Every field carries a valid flag:
 * a field the device does not support (NVML_ERROR_NOT_SUPPORTED), a call the
 * installed library does not export, or any other NVML error leaves it
 * invalid, written as JSON null and left out of the metrics, never as 0.
 * Values are converted to base units at the read: bytes, watts, joules,
 * bytes per second, MHz for clocks (Hz in the metrics), ratios in [0, 1].
 *
 * Threads: gpu_read, gpu_json and the scrape callback may be called from any
 * thread; a mutex per handle serialises the reads (NVML calls are slow
 * enough - tens of microseconds to milliseconds - that one reader at a time
 * costs nothing). gpu_open and gpu_close are not concurrent with any use of
 * the handle. The findings and JSON helpers over a sample are pure.
 */
#ifndef KILN_OBS_GPU_H
#define KILN_OBS_GPU_H

#include "kiln.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct metrics metrics;
typedef struct gpu_telemetry gpu_telemetry;

/* One reading; v is meaningful only when valid. */
typedef struct gpu_value {
    bool valid;
    double v;
} gpu_value;

/* Why the clocks are below their maximum (NVML "clocks event reasons",
 * formerly "clocks throttle reasons"), decoded from the bit mask. */
typedef struct gpu_reasons {
    bool gpu_idle;            /* nothing running; clocks drop to idle */
    bool applications_clocks; /* held by the applications clocks setting */
    bool sw_power_cap;        /* software power capping at the power limit */
    bool hw_slowdown;         /* hardware slowdown (thermal, power brake, PSU) */
    bool sync_boost;          /* held in step with other GPUs of a sync-boost group */
    bool sw_thermal;          /* software thermal slowdown */
    bool hw_thermal;          /* hardware thermal slowdown */
    bool hw_power_brake;      /* external power brake assertion */
    bool display_clocks;      /* held by the display clock setting */
} gpu_reasons;

#define GPU_NAME_CAP 96 /* NVML_DEVICE_NAME_V2_BUFFER_SIZE */

typedef struct gpu_sample {
    int index;               /* NVML device index */
    bool ok;                 /* false when the device handle could not be had: all else invalid */
    char name[GPU_NAME_CAP]; /* "" when unknown */
    gpu_value util;          /* share of time a kernel ran, [0, 1] */
    gpu_value mem_util;      /* share of time device memory was read or written, [0, 1] */
    gpu_value mem_used, mem_total;     /* bytes */
    gpu_value temp_c, slowdown_temp_c; /* GPU temperature and the device's own slowdown threshold */
    gpu_value sm_clock_mhz, sm_clock_max_mhz, mem_clock_mhz, mem_clock_max_mhz;
    gpu_value power_w, power_limit_w;   /* draw and the enforced limit */
    gpu_value energy_j;                 /* since the driver was loaded; only grows */
    gpu_value pcie_rx_bps, pcie_tx_bps; /* bytes per second (NVML: KiB/s over ~20 ms) */
    bool reasons_valid;
    uint64_t reasons_raw; /* the NVML bit mask */
    gpu_reasons reasons;
} gpu_sample;

/* Loads NVML and initialises it. Returns the handle, or NULL with a one-line
 * reason in why (cap bytes, always NUL-terminated when cap > 0; why may be
 * NULL): library not found (with dlerror's text), a required symbol missing,
 * nvmlInit failing (with NVML's error), or no devices. The caller frees the
 * handle with gpu_close. */
gpu_telemetry *gpu_open(char *why, size_t cap);
/* nvmlShutdown, dlclose and free. NULL is a no-op. */
void gpu_close(gpu_telemetry *g);

/* Devices found at gpu_open (>= 1); 0 for NULL. */
int gpu_count(const gpu_telemetry *g);

/* Reads device i (0 <= i < gpu_count) into *out; never fails as a whole:
 * what cannot be read is invalid. Takes g's mutex. Cost: on real hardware
 * NVML samples PCIe throughput over about 20 ms per direction, so a read
 * takes some 40 ms per device; a caller with a latency budget (the 50 ms
 * snapshot) should serve samples cached off its request path. */
void gpu_read(gpu_telemetry *g, int i, gpu_sample *out);

/* Decodes an NVML reasons mask. */
gpu_reasons gpu_reasons_decode(uint64_t mask);

/* The snapshot's "gpu" section: {"available": false, "reason": why} when g is
 * NULL, else {"available": true, "count": n, "devices": [gpu_sample_json of
 * each device, read now]}. New reference; NULL only when out of memory. */
json_t *gpu_json(gpu_telemetry *g, const char *why);
/* One device: index, name and every field, null when invalid; reasons as an
 * object of named booleans plus the raw mask (as a "0x..." string), or null. */
json_t *gpu_sample_json(const gpu_sample *s);

/* ---- metrics */

/* The kiln_gpu_* families, all labelled gpu="<index>": utilization_ratio,
 * memory_utilization_ratio, memory_used_bytes, memory_total_bytes,
 * temperature_celsius, slowdown_temperature_celsius, sm_clock_hz,
 * sm_clock_max_hz, mem_clock_hz, mem_clock_max_hz, power_watts,
 * power_limit_watts, pcie_rx_bytes_per_second, pcie_tx_bytes_per_second,
 * info (1, with a name label), clock_event_reason (0/1 by a reason label);
 * and kiln_gpu_energy_joules_total, a counter mirrored with metric_set (the
 * energy only grows; as a counter rate() gives watts and survives resets). */
typedef struct gpu_metrics gpu_metrics;

/* Registers the families in m; the state lives in m (metrics_alloc). NULL
 * with kiln_fail() recording why when a family cannot be registered (e.g.
 * registered twice). Call once per registry. */
gpu_metrics *gpu_metrics_register(metrics *m);
/* Sets the series of device s->index from s; invalid fields are not
 * touched. Thread-safe (metric updates are). NULL gm is a no-op. */
void gpu_metrics_update(gpu_metrics *gm, const gpu_sample *s);
/* Registers the families and a scrape callback that reads every device of g
 * and updates them (so /metrics reads the GPUs when scraped). g must outlive
 * every metrics_write of m. KILN_ERR_INVALID_ARG / KILN_ERR_NOMEM. */
kiln_status gpu_metrics_add(metrics *m, gpu_telemetry *g);

/* ---- findings */

typedef struct gpu_finding {
    const char *code;           /* GPU_THERMAL_THROTTLING, GPU_POWER_CAPPED, GPU_UNDERUTILIZED */
    const char *severity;       /* "info", "warning" or "critical" */
    int gpu;                    /* device index */
    char message[256];          /* what was seen, with the evidence */
    const char *recommendation; /* what to do about it */
} gpu_finding;

#define GPU_MAX_FINDINGS 3 /* per sample */

/* Findings for one device's sample, into out[0..cap); returns how many (at
 * most GPU_MAX_FINDINGS; fills no more than cap). Thermal throttling comes
 * from the reason bits sw_thermal, hw_thermal and hw_slowdown - the device's
 * own judgement - never from a fixed temperature; power capping from
 * sw_power_cap and hw_power_brake; underutilization when requests_waiting > 0
 * and the utilization is valid and below GPU_UNDERUTILIZED_BELOW. */
#define GPU_UNDERUTILIZED_BELOW 0.5
int gpu_findings(const gpu_sample *s, int64_t requests_waiting, gpu_finding *out, int cap);
/* {"code", "severity", "gpu", "message", "recommendation"}; new reference. */
json_t *gpu_finding_json(const gpu_finding *f);

#endif
