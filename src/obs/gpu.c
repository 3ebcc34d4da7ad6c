/* gpu.c - gpu.h's NVML telemetry: the library is dlopen()ed and the few
 * entry points used are looked up by name, declared here from NVML's
 * documented ABI (nvml.h, which Kiln does not need at build time).
 *
 * Invariants: a gpu_telemetry exists only with NVML loaded, initialised and
 * at least one device handle; the required symbols (init, shutdown, count,
 * handle by index) are non-NULL, every other entry point may be NULL (older
 * driver), which makes its fields invalid. Handles are taken once at open;
 * NVML documents them as stable for the life of the initialisation.
 */
#include "obs/gpu.h"

#include "base/status.h"
#include "obs/metrics.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- NVML's ABI (nvml.h), the part Kiln uses */

typedef int nvmlReturn_t; /* an enum: 0 = success */
enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_FUNCTION_NOT_FOUND = 13,
};
typedef struct nvmlDevice_st *nvmlDevice_t;
typedef struct nvmlUtilization_st {
    unsigned int gpu;    /* percent of the sample period a kernel ran */
    unsigned int memory; /* percent of the sample period memory was read or written */
} nvmlUtilization_t;
typedef struct nvmlMemory_st {
    unsigned long long total, free, used; /* bytes */
} nvmlMemory_t;
enum { NVML_TEMPERATURE_GPU = 0 };                                 /* nvmlTemperatureSensors_t */
enum { NVML_TEMPERATURE_THRESHOLD_SLOWDOWN = 1 };                  /* nvmlTemperatureThresholds_t */
enum { NVML_CLOCK_SM = 1, NVML_CLOCK_MEM = 2 };                    /* nvmlClockType_t (MHz) */
enum { NVML_PCIE_UTIL_TX_BYTES = 0, NVML_PCIE_UTIL_RX_BYTES = 1 }; /* KB/s */
/* nvmlClocksEventReason* (the same bits as the older nvmlClocksThrottleReason*) */
#define NVML_REASON_GPU_IDLE            0x0000000000000001ULL
#define NVML_REASON_APPLICATIONS_CLOCKS 0x0000000000000002ULL
#define NVML_REASON_SW_POWER_CAP        0x0000000000000004ULL
#define NVML_REASON_HW_SLOWDOWN         0x0000000000000008ULL
#define NVML_REASON_SYNC_BOOST          0x0000000000000010ULL
#define NVML_REASON_SW_THERMAL          0x0000000000000020ULL
#define NVML_REASON_HW_THERMAL          0x0000000000000040ULL
#define NVML_REASON_HW_POWER_BRAKE      0x0000000000000080ULL
#define NVML_REASON_DISPLAY_CLOCKS      0x0000000000000100ULL

typedef nvmlReturn_t (*fn_void)(void);
typedef const char *(*fn_errstr)(nvmlReturn_t);
typedef nvmlReturn_t (*fn_count)(unsigned int *);
typedef nvmlReturn_t (*fn_handle)(unsigned int, nvmlDevice_t *);
typedef nvmlReturn_t (*fn_name)(nvmlDevice_t, char *, unsigned int);
typedef nvmlReturn_t (*fn_util)(nvmlDevice_t, nvmlUtilization_t *);
typedef nvmlReturn_t (*fn_mem)(nvmlDevice_t, nvmlMemory_t *);
typedef nvmlReturn_t (*fn_uint_of)(nvmlDevice_t, int, unsigned int *); /* temp, clocks, pcie */
typedef nvmlReturn_t (*fn_uint)(nvmlDevice_t, unsigned int *);         /* power, limit */
typedef nvmlReturn_t (*fn_u64)(nvmlDevice_t, unsigned long long *);    /* energy, reasons */

struct gpu_telemetry {
    void *lib;
    pthread_mutex_t mu;
    int n;
    nvmlDevice_t *dev;
    fn_void shutdown;
    fn_errstr errstr;
    fn_name name;
    fn_util util;
    fn_mem mem;
    fn_uint_of temp, temp_threshold, clock, max_clock, pcie;
    fn_uint power, power_limit;
    fn_u64 energy, reasons, reasons_old;
};

/* The first of names (NULL-terminated) the library exports, or NULL. */
static void *sym(void *lib, const char *const *names) {
    for (; *names; names++) {
        void *p = dlsym(lib, *names);
        if (p) return p;
    }
    return NULL;
}
#define SYM(lib, ...) sym(lib, (const char *const[]){__VA_ARGS__, NULL})

static void say(char *why, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(char *why, size_t cap, const char *fmt, ...) {
    if (!why || cap == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, cap, fmt, ap);
    va_end(ap);
}

static const char *errname(const gpu_telemetry *g, nvmlReturn_t rc, char *buf, size_t cap) {
    const char *s = g->errstr ? g->errstr(rc) : NULL;
    snprintf(buf, cap, "%s (NVML error %d)", s ? s : "unknown", rc);
    return buf;
}

gpu_telemetry *gpu_open(char *why, size_t cap) {
    say(why, cap, "%s", "");
    const char *path = getenv("KILN_NVML_LIB");
    if (!path || !*path) path = "libnvidia-ml.so.1";
    gpu_telemetry *g = calloc(1, sizeof *g);
    if (!g) {
        say(why, cap, "out of memory");
        return NULL;
    }
    bool inited = false;
    char eb[160];
    g->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!g->lib) {
        const char *e = dlerror();
        say(why, cap, "NVML not available: cannot load %s: %s", path, e ? e : "unknown error");
        goto fail;
    }
    fn_void init = (fn_void)SYM(g->lib, "nvmlInit_v2", "nvmlInit");
    fn_count count = (fn_count)SYM(g->lib, "nvmlDeviceGetCount_v2", "nvmlDeviceGetCount");
    fn_handle handle =
        (fn_handle)SYM(g->lib, "nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetHandleByIndex");
    g->shutdown = (fn_void)SYM(g->lib, "nvmlShutdown");
    g->errstr = (fn_errstr)SYM(g->lib, "nvmlErrorString");
    if (!init || !count || !handle || !g->shutdown) {
        say(why, cap, "NVML not usable: %s lacks %s", path,
            !init     ? "nvmlInit_v2"
            : !count  ? "nvmlDeviceGetCount_v2"
            : !handle ? "nvmlDeviceGetHandleByIndex_v2"
                      : "nvmlShutdown");
        goto fail;
    }
    nvmlReturn_t rc = init();
    if (rc != NVML_SUCCESS) {
        say(why, cap, "nvmlInit_v2 failed: %s", errname(g, rc, eb, sizeof eb));
        goto fail;
    }
    inited = true;
    unsigned int n = 0;
    if ((rc = count(&n)) != NVML_SUCCESS) {
        say(why, cap, "nvmlDeviceGetCount_v2 failed: %s", errname(g, rc, eb, sizeof eb));
        goto fail;
    }
    if (n == 0 || n > 4096) {
        say(why, cap, "NVML reports %u GPUs", n);
        goto fail;
    }
    if (!(g->dev = calloc(n, sizeof *g->dev))) {
        say(why, cap, "out of memory");
        goto fail;
    }
    for (unsigned int i = 0; i < n; i++)
        if (handle(i, &g->dev[i]) != NVML_SUCCESS) g->dev[i] = NULL; /* reads as !ok */
    g->n = (int)n;
    g->name = (fn_name)SYM(g->lib, "nvmlDeviceGetName");
    g->util = (fn_util)SYM(g->lib, "nvmlDeviceGetUtilizationRates");
    g->mem = (fn_mem)SYM(g->lib, "nvmlDeviceGetMemoryInfo");
    g->temp = (fn_uint_of)SYM(g->lib, "nvmlDeviceGetTemperature");
    g->temp_threshold = (fn_uint_of)SYM(g->lib, "nvmlDeviceGetTemperatureThreshold");
    g->clock = (fn_uint_of)SYM(g->lib, "nvmlDeviceGetClockInfo");
    g->max_clock = (fn_uint_of)SYM(g->lib, "nvmlDeviceGetMaxClockInfo");
    g->pcie = (fn_uint_of)SYM(g->lib, "nvmlDeviceGetPcieThroughput");
    g->power = (fn_uint)SYM(g->lib, "nvmlDeviceGetPowerUsage");
    g->power_limit = (fn_uint)SYM(g->lib, "nvmlDeviceGetEnforcedPowerLimit");
    g->energy = (fn_u64)SYM(g->lib, "nvmlDeviceGetTotalEnergyConsumption");
    /* renamed in CUDA 12.2's driver (R535); the old name stays exported there */
    g->reasons = (fn_u64)SYM(g->lib, "nvmlDeviceGetCurrentClocksEventReasons");
    g->reasons_old = (fn_u64)SYM(g->lib, "nvmlDeviceGetCurrentClocksThrottleReasons");
    if (pthread_mutex_init(&g->mu, NULL) != 0) {
        say(why, cap, "cannot create a mutex");
        goto fail;
    }
    return g;
fail:
    if (inited) g->shutdown();
    if (g->lib) dlclose(g->lib);
    free(g->dev);
    free(g);
    return NULL;
}

void gpu_close(gpu_telemetry *g) {
    if (!g) return;
    g->shutdown();
    dlclose(g->lib);
    pthread_mutex_destroy(&g->mu);
    free(g->dev);
    free(g);
}

int gpu_count(const gpu_telemetry *g) {
    return g ? g->n : 0;
}

gpu_reasons gpu_reasons_decode(uint64_t m) {
    return (gpu_reasons){
        .gpu_idle = m & NVML_REASON_GPU_IDLE,
        .applications_clocks = m & NVML_REASON_APPLICATIONS_CLOCKS,
        .sw_power_cap = m & NVML_REASON_SW_POWER_CAP,
        .hw_slowdown = m & NVML_REASON_HW_SLOWDOWN,
        .sync_boost = m & NVML_REASON_SYNC_BOOST,
        .sw_thermal = m & NVML_REASON_SW_THERMAL,
        .hw_thermal = m & NVML_REASON_HW_THERMAL,
        .hw_power_brake = m & NVML_REASON_HW_POWER_BRAKE,
        .display_clocks = m & NVML_REASON_DISPLAY_CLOCKS,
    };
}

static gpu_value val(nvmlReturn_t rc, double v) {
    return rc == NVML_SUCCESS ? (gpu_value){true, v} : (gpu_value){false, 0};
}

/* One unsigned reading of kind `what` through f (NULL: not exported). */
static gpu_value read_of(fn_uint_of f, nvmlDevice_t d, int what, double scale) {
    unsigned int v = 0;
    if (!f) return (gpu_value){false, 0};
    nvmlReturn_t rc = f(d, what, &v); /* before v is read: argument order is unspecified */
    return val(rc, v * scale);
}

/* Divided by div, rather than multiplied by its inverse, so that whole
 * milliwatts give the double nearest the exact watts. */
static gpu_value read_u(fn_uint f, nvmlDevice_t d, double div) {
    unsigned int v = 0;
    if (!f) return (gpu_value){false, 0};
    nvmlReturn_t rc = f(d, &v);
    return val(rc, v / div);
}

static void read_device(gpu_telemetry *g, nvmlDevice_t d, gpu_sample *s) {
    if (g->name) {
        char name[GPU_NAME_CAP] = "";
        if (g->name(d, name, sizeof name) == NVML_SUCCESS)
            snprintf(s->name, sizeof s->name, "%.*s", (int)sizeof name - 1, name);
    }
    nvmlUtilization_t u;
    if (g->util && g->util(d, &u) == NVML_SUCCESS) {
        s->util = (gpu_value){true, u.gpu / 100.0};
        s->mem_util = (gpu_value){true, u.memory / 100.0};
    }
    nvmlMemory_t m;
    if (g->mem && g->mem(d, &m) == NVML_SUCCESS) {
        s->mem_used = (gpu_value){true, (double)m.used};
        s->mem_total = (gpu_value){true, (double)m.total};
    }
    s->temp_c = read_of(g->temp, d, NVML_TEMPERATURE_GPU, 1);
    s->slowdown_temp_c = read_of(g->temp_threshold, d, NVML_TEMPERATURE_THRESHOLD_SLOWDOWN, 1);
    s->sm_clock_mhz = read_of(g->clock, d, NVML_CLOCK_SM, 1);
    s->sm_clock_max_mhz = read_of(g->max_clock, d, NVML_CLOCK_SM, 1);
    s->mem_clock_mhz = read_of(g->clock, d, NVML_CLOCK_MEM, 1);
    s->mem_clock_max_mhz = read_of(g->max_clock, d, NVML_CLOCK_MEM, 1);
    s->power_w = read_u(g->power, d, 1000);             /* milliwatts */
    s->power_limit_w = read_u(g->power_limit, d, 1000); /* milliwatts */
    unsigned long long e = 0;
    if (g->energy && g->energy(d, &e) == NVML_SUCCESS)
        s->energy_j = (gpu_value){true, (double)e / 1000}; /* millijoules */
    /* NVML's "KB" here is 1024 bytes (its samples are 1 KiB granular) */
    s->pcie_rx_bps = read_of(g->pcie, d, NVML_PCIE_UTIL_RX_BYTES, 1024);
    s->pcie_tx_bps = read_of(g->pcie, d, NVML_PCIE_UTIL_TX_BYTES, 1024);
    unsigned long long r = 0;
    nvmlReturn_t rc = g->reasons ? g->reasons(d, &r) : NVML_ERROR_FUNCTION_NOT_FOUND;
    if (rc == NVML_ERROR_FUNCTION_NOT_FOUND && g->reasons_old) rc = g->reasons_old(d, &r);
    if (rc == NVML_SUCCESS) {
        s->reasons_valid = true;
        s->reasons_raw = r;
        s->reasons = gpu_reasons_decode(r);
    }
}

void gpu_read(gpu_telemetry *g, int i, gpu_sample *out) {
    memset(out, 0, sizeof *out);
    out->index = i;
    if (!g || i < 0 || i >= g->n || !g->dev[i]) return;
    out->ok = true;
    pthread_mutex_lock(&g->mu);
    read_device(g, g->dev[i], out);
    pthread_mutex_unlock(&g->mu);
}

/* ---- JSON */

static json_t *jnum(gpu_value v) {
    return v.valid ? json_real(v.v) : json_null();
}

/* Whole-number readings (bytes, MHz, degrees) as JSON integers. */
static json_t *jint(gpu_value v) {
    return v.valid ? json_integer((json_int_t)(v.v + 0.5)) : json_null();
}

static const struct {
    const char *name;
    uint64_t bit;
} reason_bits[] = {
    {"gpu_idle", NVML_REASON_GPU_IDLE},
    {"applications_clocks", NVML_REASON_APPLICATIONS_CLOCKS},
    {"sw_power_cap", NVML_REASON_SW_POWER_CAP},
    {"hw_slowdown", NVML_REASON_HW_SLOWDOWN},
    {"sync_boost", NVML_REASON_SYNC_BOOST},
    {"sw_thermal", NVML_REASON_SW_THERMAL},
    {"hw_thermal", NVML_REASON_HW_THERMAL},
    {"hw_power_brake", NVML_REASON_HW_POWER_BRAKE},
    {"display_clocks", NVML_REASON_DISPLAY_CLOCKS},
};
#define N_REASONS (int)(sizeof reason_bits / sizeof reason_bits[0])

json_t *gpu_sample_json(const gpu_sample *s) {
    json_t *r = json_null();
    if (s->reasons_valid) {
        char raw[24];
        snprintf(raw, sizeof raw, "0x%llx", (unsigned long long)s->reasons_raw);
        r = json_pack("{s:s}", "raw", raw);
        for (int k = 0; r && k < N_REASONS; k++)
            json_object_set_new(r, reason_bits[k].name,
                                json_boolean(s->reasons_raw & reason_bits[k].bit));
    }
    return json_pack(
        "{s:i,s:b,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "index",
        s->index, "ok", s->ok, "name", s->name[0] ? json_string(s->name) : json_null(),
        "utilization_ratio", jnum(s->util), "memory_utilization_ratio", jnum(s->mem_util),
        "memory_used_bytes", jint(s->mem_used), "memory_total_bytes", jint(s->mem_total),
        "temperature_c", jint(s->temp_c), "slowdown_temperature_c", jint(s->slowdown_temp_c),
        "sm_clock_mhz", jint(s->sm_clock_mhz), "sm_clock_max_mhz", jint(s->sm_clock_max_mhz),
        "mem_clock_mhz", jint(s->mem_clock_mhz), "mem_clock_max_mhz", jint(s->mem_clock_max_mhz),
        "power_w", jnum(s->power_w), "power_limit_w", jnum(s->power_limit_w), "energy_j",
        jnum(s->energy_j), "pcie_rx_bytes_per_s", jint(s->pcie_rx_bps), "pcie_tx_bytes_per_s",
        jint(s->pcie_tx_bps), "clock_event_reasons", r ? r : json_null());
}

json_t *gpu_json(gpu_telemetry *g, const char *why) {
    if (!g)
        return json_pack("{s:b,s:s}", "available", 0, "reason",
                         why && *why ? why : "NVML not loaded");
    json_t *devs = json_array();
    for (int i = 0; devs && i < g->n; i++) {
        gpu_sample s;
        gpu_read(g, i, &s);
        json_array_append_new(devs, gpu_sample_json(&s));
    }
    return json_pack("{s:b,s:i,s:o}", "available", 1, "count", g->n, "devices",
                     devs ? devs : json_null());
}

/* ---- metrics */

enum {
    GM_UTIL,
    GM_MEM_UTIL,
    GM_MEM_USED,
    GM_MEM_TOTAL,
    GM_TEMP,
    GM_SLOWDOWN,
    GM_SM,
    GM_SM_MAX,
    GM_MEM,
    GM_MEM_MAX,
    GM_POWER,
    GM_LIMIT,
    GM_RX,
    GM_TX,
    GM_N /* the gauges above take gpu_value fields */
};

static const struct {
    const char *name, *help;
    size_t off;   /* of the gpu_value in gpu_sample */
    double scale; /* to the family's unit */
} gauges[GM_N] = {
    [GM_UTIL] = {"kiln_gpu_utilization_ratio", "Share of time a kernel ran on the GPU",
                 offsetof(gpu_sample, util), 1},
    [GM_MEM_UTIL] = {"kiln_gpu_memory_utilization_ratio",
                     "Share of time the GPU memory was read or written",
                     offsetof(gpu_sample, mem_util), 1},
    [GM_MEM_USED] = {"kiln_gpu_memory_used_bytes", "GPU memory in use",
                     offsetof(gpu_sample, mem_used), 1},
    [GM_MEM_TOTAL] = {"kiln_gpu_memory_total_bytes", "GPU memory installed",
                      offsetof(gpu_sample, mem_total), 1},
    [GM_TEMP] = {"kiln_gpu_temperature_celsius", "GPU core temperature",
                 offsetof(gpu_sample, temp_c), 1},
    [GM_SLOWDOWN] = {"kiln_gpu_slowdown_temperature_celsius",
                     "Temperature at which the GPU starts to slow its clocks",
                     offsetof(gpu_sample, slowdown_temp_c), 1},
    [GM_SM] = {"kiln_gpu_sm_clock_hz", "Current SM clock", offsetof(gpu_sample, sm_clock_mhz), 1e6},
    [GM_SM_MAX] = {"kiln_gpu_sm_clock_max_hz", "Maximum SM clock",
                   offsetof(gpu_sample, sm_clock_max_mhz), 1e6},
    [GM_MEM] = {"kiln_gpu_mem_clock_hz", "Current memory clock",
                offsetof(gpu_sample, mem_clock_mhz), 1e6},
    [GM_MEM_MAX] = {"kiln_gpu_mem_clock_max_hz", "Maximum memory clock",
                    offsetof(gpu_sample, mem_clock_max_mhz), 1e6},
    [GM_POWER] = {"kiln_gpu_power_watts", "GPU power draw", offsetof(gpu_sample, power_w), 1},
    [GM_LIMIT] = {"kiln_gpu_power_limit_watts", "Power limit the GPU enforces",
                  offsetof(gpu_sample, power_limit_w), 1},
    [GM_RX] = {"kiln_gpu_pcie_rx_bytes_per_second", "PCIe bytes per second received by the GPU",
               offsetof(gpu_sample, pcie_rx_bps), 1},
    [GM_TX] = {"kiln_gpu_pcie_tx_bytes_per_second", "PCIe bytes per second sent by the GPU",
               offsetof(gpu_sample, pcie_tx_bps), 1},
};

struct gpu_metrics {
    metric *g[GM_N];
    metric *energy, *info, *reason;
};

gpu_metrics *gpu_metrics_register(metrics *m) {
    gpu_metrics *gm = metrics_alloc(m, sizeof *gm);
    if (!gm) {
        kiln_fail(KILN_ERR_NOMEM, "gpu metrics: out of memory");
        return NULL;
    }
    static const char *const by_gpu[] = {"gpu", NULL};
    static const char *const by_name[] = {"gpu", "name", NULL};
    static const char *const by_reason[] = {"gpu", "reason", NULL};
    for (int k = 0; k < GM_N; k++)
        if (!(gm->g[k] = metrics_gauge(m, gauges[k].name, gauges[k].help, by_gpu))) return NULL;
    gm->energy = metrics_counter(m, "kiln_gpu_energy_joules_total",
                                 "Energy the GPU used since its driver was loaded", by_gpu);
    gm->info = metrics_gauge(m, "kiln_gpu_info", "GPU model (1 per device)", by_name);
    gm->reason =
        metrics_gauge(m, "kiln_gpu_clock_event_reason",
                      "1 while the reason holds the GPU clocks below their maximum", by_reason);
    return gm->energy && gm->info && gm->reason ? gm : NULL;
}

void gpu_metrics_update(gpu_metrics *gm, const gpu_sample *s) {
    if (!gm || !s->ok) return;
    char idx[16];
    snprintf(idx, sizeof idx, "%d", s->index);
    const char *const lv[] = {idx, NULL};
    for (int k = 0; k < GM_N; k++) {
        const gpu_value *v = (const gpu_value *)((const char *)s + gauges[k].off);
        if (v->valid) metric_set(gm->g[k], lv, v->v * gauges[k].scale);
    }
    if (s->energy_j.valid) metric_set(gm->energy, lv, s->energy_j.v);
    if (s->name[0]) metric_set(gm->info, (const char *const[]){idx, s->name, NULL}, 1);
    if (s->reasons_valid)
        for (int k = 0; k < N_REASONS; k++)
            metric_set(gm->reason, (const char *const[]){idx, reason_bits[k].name, NULL},
                       (s->reasons_raw & reason_bits[k].bit) ? 1 : 0);
}

struct scrape {
    gpu_metrics *gm;
    gpu_telemetry *g;
};

static void on_scrape(void *user) {
    struct scrape *sc = user;
    for (int i = 0; i < sc->g->n; i++) {
        gpu_sample s;
        gpu_read(sc->g, i, &s);
        gpu_metrics_update(sc->gm, &s);
    }
}

kiln_status gpu_metrics_add(metrics *m, gpu_telemetry *g) {
    if (!m || !g) return kiln_fail(KILN_ERR_INVALID_ARG, "gpu_metrics_add: no registry or GPU");
    struct scrape *sc = metrics_alloc(m, sizeof *sc);
    if (!sc) return kiln_fail(KILN_ERR_NOMEM, "gpu metrics: out of memory");
    if (!(sc->gm = gpu_metrics_register(m)))
        return kiln_fail(KILN_ERR_INVALID_ARG,
                         "gpu metrics: cannot register the kiln_gpu_* families");
    sc->g = g;
    return metrics_on_scrape(m, on_scrape, sc);
}

/* ---- findings */

/* The names of the set reasons among mask, comma-separated, into buf. */
static const char *reason_list(uint64_t raw, uint64_t mask, char *buf, size_t cap) {
    size_t n = 0;
    buf[0] = '\0';
    for (int k = 0; k < N_REASONS; k++)
        if ((raw & mask & reason_bits[k].bit) && n < cap)
            n += (size_t)snprintf(buf + n, cap - n, "%s%s", n ? ", " : "", reason_bits[k].name);
    return buf;
}

static void fmt_temp(const gpu_sample *s, char *buf, size_t cap) {
    buf[0] = '\0';
    if (s->temp_c.valid && s->slowdown_temp_c.valid)
        snprintf(buf, cap, "; %.0f C, slowdown at %.0f C", s->temp_c.v, s->slowdown_temp_c.v);
    else if (s->temp_c.valid)
        snprintf(buf, cap, "; %.0f C", s->temp_c.v);
}

int gpu_findings(const gpu_sample *s, int64_t requests_waiting, gpu_finding *out, int cap) {
    int n = 0;
    char list[128], extra[96];
    if (!s->ok) return 0;
    const uint64_t thermal =
        NVML_REASON_SW_THERMAL | NVML_REASON_HW_THERMAL | NVML_REASON_HW_SLOWDOWN;
    const uint64_t power = NVML_REASON_SW_POWER_CAP | NVML_REASON_HW_POWER_BRAKE;
    if (s->reasons_valid && (s->reasons_raw & thermal) && n < cap) {
        gpu_finding *f = &out[n++];
        bool hw = s->reasons_raw & (NVML_REASON_HW_THERMAL | NVML_REASON_HW_SLOWDOWN);
        *f = (gpu_finding){"GPU_THERMAL_THROTTLING", hw ? "critical" : "warning", s->index, "",
                           "improve the GPU's cooling (airflow, fan curve, ambient temperature) "
                           "or lower its power limit so it holds its clocks"};
        fmt_temp(s, extra, sizeof extra);
        snprintf(f->message, sizeof f->message, "GPU %d slows its clocks for heat (%s)%s", s->index,
                 reason_list(s->reasons_raw, thermal, list, sizeof list), extra);
    }
    if (s->reasons_valid && (s->reasons_raw & power) && n < cap) {
        gpu_finding *f = &out[n++];
        bool brake = s->reasons_raw & NVML_REASON_HW_POWER_BRAKE;
        *f = (gpu_finding){"GPU_POWER_CAPPED", brake ? "warning" : "info", s->index, "",
                           brake ? "check the power supply and cabling: an external power brake "
                                   "is holding the GPU back"
                                 : "raise the power limit (nvidia-smi -pl) if the board allows, "
                                   "or accept lower clocks; smaller batches draw less power"};
        extra[0] = '\0';
        if (s->power_w.valid && s->power_limit_w.valid)
            snprintf(extra, sizeof extra, "; %.0f W of %.0f W", s->power_w.v, s->power_limit_w.v);
        snprintf(f->message, sizeof f->message, "GPU %d is held at its power limit (%s)%s",
                 s->index, reason_list(s->reasons_raw, power, list, sizeof list), extra);
    }
    if (requests_waiting > 0 && s->util.valid && s->util.v < GPU_UNDERUTILIZED_BELOW && n < cap) {
        gpu_finding *f = &out[n++];
        *f = (gpu_finding){"GPU_UNDERUTILIZED", "warning", s->index, "",
                           "requests wait while the GPU idles: raise --parallel so more "
                           "sequences share each step, or look for host-side work (tokenizing, "
                           "sampling) that keeps the GPU waiting"};
        snprintf(f->message, sizeof f->message,
                 "GPU %d was busy %.0f%% of the time while %lld requests waited", s->index,
                 s->util.v * 100, (long long)requests_waiting);
    }
    return n;
}

json_t *gpu_finding_json(const gpu_finding *f) {
    return json_pack("{s:s,s:s,s:i,s:s,s:s}", "code", f->code, "severity", f->severity, "gpu",
                     f->gpu, "message", f->message, "recommendation", f->recommendation);
}
