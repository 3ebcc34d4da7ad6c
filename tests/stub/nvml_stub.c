/* nvml_stub.c - a stand-in for libnvidia-ml.so.1 that test_gpu loads
 * through KILN_NVML_LIB: the NVML entry points obs/gpu.c uses, with NVML's
 * ABI, answering canned values. Built twice (tests/CMakeLists.txt): as is,
 * and with NVML_STUB_OLD_ONLY, which leaves out
 * nvmlDeviceGetCurrentClocksEventReasons as drivers before R535 do.
 *
 * Read from the environment at every call, so a test changes them between
 * reads without reloading:
 *   NVML_STUB_MODE         ok (default) | init_fail (nvmlInit_v2 answers
 *                          NVML_ERROR_DRIVER_NOT_LOADED) | no_devices
 *   NVML_STUB_DEVICES      device count (default 2)
 *   NVML_STUB_UNSUPPORTED  comma-separated entry point names that answer
 *                          NVML_ERROR_NOT_SUPPORTED
 *   NVML_STUB_REASONS      the clocks event reasons mask (default 0)
 *   NVML_STUB_UTIL         GPU utilization percent (default 37)
 * nvmlStubCalls(name) counts the calls of one entry point, for the tests
 * (they dlopen the same file, which shares this instance).
 *
 * Canned values of device i: name "Kiln Stub GPU i"; memory 80 GiB total,
 * 10 GiB + i MiB used; memory utilization 12%; 71 + i C, slowdown at 87 C;
 * SM 1410 MHz (max 1980), memory 1593 MHz (max 1593); power 312500 mW,
 * limit 400000 mW; energy 123456789 mJ; PCIe TX 2048 KB/s, RX 1000 KB/s.
 */
#include <stdlib.h>
#include <string.h>

typedef int nvmlReturn_t;
enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
};
typedef struct nvmlDevice_st {
    int index;
} * nvmlDevice_t;
typedef struct {
    unsigned int gpu, memory;
} nvmlUtilization_t;
typedef struct {
    unsigned long long total, free, used;
} nvmlMemory_t;

#define MAX_DEV 8
static struct nvmlDevice_st devs[MAX_DEV] = {{0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}};
static int initialised; /* NVML counts nested inits */

static const char *const names[] = {
    "nvmlInit_v2",
    "nvmlShutdown",
    "nvmlDeviceGetCount_v2",
    "nvmlDeviceGetHandleByIndex_v2",
    "nvmlDeviceGetCurrentClocksEventReasons",
    "nvmlDeviceGetCurrentClocksThrottleReasons",
    "nvmlDeviceGetPowerUsage",
};
static unsigned calls[sizeof names / sizeof names[0]];

static void count_call(const char *fn) {
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++)
        if (!strcmp(names[k], fn)) calls[k]++;
}

unsigned nvmlStubCalls(const char *fn) {
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++)
        if (!strcmp(names[k], fn)) return calls[k];
    return 0;
}

static const char *env(const char *name, const char *dflt) {
    const char *v = getenv(name);
    return v && *v ? v : dflt;
}

static int n_devices(void) {
    if (!strcmp(env("NVML_STUB_MODE", "ok"), "no_devices")) return 0;
    int n = atoi(env("NVML_STUB_DEVICES", "2"));
    return n < 0 ? 0 : n > MAX_DEV ? MAX_DEV : n;
}

/* NVML_STUB_UNSUPPORTED names fn (a whole item of the comma list). */
static int unsupported(const char *fn) {
    const char *list = env("NVML_STUB_UNSUPPORTED", ""), *p = list;
    size_t n = strlen(fn);
    while ((p = strstr(p, fn))) {
        if ((p == list || p[-1] == ',') && (p[n] == '\0' || p[n] == ',')) return 1;
        p += n;
    }
    return 0;
}

/* The common checks of a device query; NVML_SUCCESS to go on. */
static nvmlReturn_t check(const char *fn, nvmlDevice_t d, const void *out) {
    count_call(fn);
    if (!initialised) return NVML_ERROR_UNINITIALIZED;
    if (!d || !out || d->index < 0 || d->index >= n_devices()) return NVML_ERROR_INVALID_ARGUMENT;
    return unsupported(fn) ? NVML_ERROR_NOT_SUPPORTED : NVML_SUCCESS;
}

nvmlReturn_t nvmlInit_v2(void) {
    count_call(__func__);
    if (!strcmp(env("NVML_STUB_MODE", "ok"), "init_fail")) return NVML_ERROR_DRIVER_NOT_LOADED;
    initialised++;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlShutdown(void) {
    count_call(__func__);
    if (!initialised) return NVML_ERROR_UNINITIALIZED;
    initialised--;
    return NVML_SUCCESS;
}

const char *nvmlErrorString(nvmlReturn_t rc) {
    switch (rc) {
    case NVML_SUCCESS:
        return "Success";
    case NVML_ERROR_UNINITIALIZED:
        return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT:
        return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED:
        return "Not Supported";
    case NVML_ERROR_DRIVER_NOT_LOADED:
        return "Driver Not Loaded";
    default:
        return "Unknown Error";
    }
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *n) {
    count_call(__func__);
    if (!initialised) return NVML_ERROR_UNINITIALIZED;
    *n = (unsigned)n_devices();
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int i, nvmlDevice_t *d) {
    count_call(__func__);
    if (!initialised) return NVML_ERROR_UNINITIALIZED;
    if ((int)i >= n_devices()) return NVML_ERROR_INVALID_ARGUMENT;
    *d = &devs[i];
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t d, char *name, unsigned int len) {
    nvmlReturn_t rc = check(__func__, d, name);
    if (rc) return rc;
    const char base[] = "Kiln Stub GPU ";
    if (len < sizeof base + 1) return NVML_ERROR_INVALID_ARGUMENT;
    memcpy(name, base, sizeof base - 1);
    name[sizeof base - 1] = (char)('0' + d->index);
    name[sizeof base] = '\0';
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t *u) {
    nvmlReturn_t rc = check(__func__, d, u);
    if (rc) return rc;
    u->gpu = (unsigned)atoi(env("NVML_STUB_UTIL", "37"));
    u->memory = 12;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *m) {
    nvmlReturn_t rc = check(__func__, d, m);
    if (rc) return rc;
    m->total = 80ULL << 30;
    m->used = (10ULL << 30) + ((unsigned long long)d->index << 20);
    m->free = m->total - m->used;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t d, int sensor, unsigned int *t) {
    nvmlReturn_t rc = check(__func__, d, t);
    if (rc) return rc;
    if (sensor != 0) return NVML_ERROR_INVALID_ARGUMENT; /* NVML_TEMPERATURE_GPU */
    *t = 71 + (unsigned)d->index;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTemperatureThreshold(nvmlDevice_t d, int which, unsigned int *t) {
    nvmlReturn_t rc = check(__func__, d, t);
    if (rc) return rc;
    if (which != 1) return NVML_ERROR_INVALID_ARGUMENT; /* SLOWDOWN only */
    *t = 87;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t d, int type, unsigned int *mhz) {
    nvmlReturn_t rc = check(__func__, d, mhz);
    if (rc) return rc;
    if (type == 1)
        *mhz = 1410; /* NVML_CLOCK_SM */
    else if (type == 2)
        *mhz = 1593; /* NVML_CLOCK_MEM */
    else
        return NVML_ERROR_INVALID_ARGUMENT;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMaxClockInfo(nvmlDevice_t d, int type, unsigned int *mhz) {
    nvmlReturn_t rc = check(__func__, d, mhz);
    if (rc) return rc;
    if (type == 1)
        *mhz = 1980;
    else if (type == 2)
        *mhz = 1593;
    else
        return NVML_ERROR_INVALID_ARGUMENT;
    return NVML_SUCCESS;
}

static unsigned long long reasons(void) {
    return strtoull(env("NVML_STUB_REASONS", "0"), NULL, 0);
}

#ifndef NVML_STUB_OLD_ONLY
nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(nvmlDevice_t d, unsigned long long *r) {
    nvmlReturn_t rc = check(__func__, d, r);
    if (rc) return rc;
    *r = reasons();
    return NVML_SUCCESS;
}
#endif

nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(nvmlDevice_t d, unsigned long long *r) {
    nvmlReturn_t rc = check(__func__, d, r);
    if (rc) return rc;
    *r = reasons();
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t d, unsigned int *mw) {
    nvmlReturn_t rc = check(__func__, d, mw);
    if (rc) return rc;
    *mw = 312500;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t d, unsigned int *mw) {
    nvmlReturn_t rc = check(__func__, d, mw);
    if (rc) return rc;
    *mw = 400000;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t d, unsigned long long *mj) {
    nvmlReturn_t rc = check(__func__, d, mj);
    if (rc) return rc;
    *mj = 123456789ULL;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPcieThroughput(nvmlDevice_t d, int counter, unsigned int *kbs) {
    nvmlReturn_t rc = check(__func__, d, kbs);
    if (rc) return rc;
    if (counter == 0)
        *kbs = 2048; /* NVML_PCIE_UTIL_TX_BYTES */
    else if (counter == 1)
        *kbs = 1000; /* NVML_PCIE_UTIL_RX_BYTES */
    else
        return NVML_ERROR_INVALID_ARGUMENT;
    return NVML_SUCCESS;
}
