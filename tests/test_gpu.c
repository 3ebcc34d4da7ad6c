/* test_gpu.c - obs/gpu.c against stub NVML libraries (tests/stub/nvml_stub.c,
 * built by tests/CMakeLists.txt as NVML_STUB_PATH and, without the
 * clocks-event-reasons call, NVML_STUB_OLD_PATH): loading and its failures,
 * values and unit conversion, unsupported fields as invalid / null, the
 * fallback to the old throttle-reasons call, the JSON section, the
 * kiln_gpu_* metrics in the Prometheus text and the findings. */
#include "testutil.h"

#include "obs/gpu.h"
#include "obs/metrics.h"

#include <dlfcn.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifndef NVML_STUB_PATH
#error "NVML_STUB_PATH: tests/CMakeLists.txt passes the stub library's path"
#endif

/* Points gpu.c at lib with the stub in mode; clears the other knobs. */
static void use_stub(const char *lib, const char *mode) {
    setenv("KILN_NVML_LIB", lib, 1);
    setenv("NVML_STUB_MODE", mode, 1);
    unsetenv("NVML_STUB_UNSUPPORTED");
    unsetenv("NVML_STUB_REASONS");
    unsetenv("NVML_STUB_UTIL");
    unsetenv("NVML_STUB_DEVICES");
}

/* The stub's call counter for fn; the test's own dlopen shares the instance
 * gpu.c loaded (and keeps it loaded while the test looks). */
static unsigned stub_calls(void *lib, const char *fn) {
    unsigned (*calls)(const char *) = (unsigned (*)(const char *))dlsym(lib, "nvmlStubCalls");
    assert_non_null(calls);
    return calls(fn);
}

static gpu_telemetry *open_ok(void) {
    char why[256];
    gpu_telemetry *g = gpu_open(why, sizeof why);
    if (!g) fail_msg("gpu_open: %s", why);
    return g;
}

static void assert_val(gpu_value v, double want) {
    assert_true(v.valid);
    if (fabs(v.v - want) > 1e-9 * fmax(1, fabs(want))) fail_msg("got %.17g, want %.17g", v.v, want);
}

static void test_missing_library(void **state) {
    use_stub("/nonexistent/kiln-test/libnvidia-ml.so.1", "ok");
    char why[256];
    assert_null(gpu_open(why, sizeof why));
    assert_non_null(strstr(why, "cannot load /nonexistent/kiln-test/libnvidia-ml.so.1"));
    assert_int_equal(gpu_count(NULL), 0);
    json_t *j = gpu_json(NULL, why);
    assert_true(json_is_false(json_object_get(j, "available")));
    assert_string_equal(json_string_value(json_object_get(j, "reason")), why);
    json_decref(j);
    assert_null(gpu_open(NULL, 0)); /* no reason wanted */
}

static void test_init_fails(void **state) {
    void *lib = dlopen(NVML_STUB_PATH, RTLD_NOW);
    assert_non_null(lib);
    use_stub(NVML_STUB_PATH, "init_fail");
    char why[256];
    assert_null(gpu_open(why, sizeof why));
    assert_non_null(strstr(why, "nvmlInit_v2 failed: Driver Not Loaded (NVML error 9)"));
    unsigned shut = stub_calls(lib, "nvmlShutdown");
    /* no devices: NULL, and the successful init is undone */
    use_stub(NVML_STUB_PATH, "no_devices");
    assert_null(gpu_open(why, sizeof why));
    assert_non_null(strstr(why, "0 GPUs"));
    assert_int_equal(stub_calls(lib, "nvmlShutdown"), shut + 1);
    dlclose(lib);
}

static void test_values_and_units(void **state) {
    void *lib = dlopen(NVML_STUB_PATH, RTLD_NOW);
    assert_non_null(lib);
    use_stub(NVML_STUB_PATH, "ok");
    setenv("NVML_STUB_REASONS", "0x24", 1); /* sw_power_cap + sw_thermal */
    unsigned ev0 = stub_calls(lib, "nvmlDeviceGetCurrentClocksEventReasons");
    unsigned old0 = stub_calls(lib, "nvmlDeviceGetCurrentClocksThrottleReasons");
    gpu_telemetry *g = open_ok();
    assert_int_equal(gpu_count(g), 2);
    gpu_sample s;
    gpu_read(g, 0, &s);
    assert_true(s.ok);
    assert_int_equal(s.index, 0);
    assert_string_equal(s.name, "Kiln Stub GPU 0");
    assert_val(s.util, 0.37);
    assert_val(s.mem_util, 0.12);
    assert_val(s.mem_total, 85899345920.0);
    assert_val(s.mem_used, 10737418240.0);
    assert_val(s.temp_c, 71);
    assert_val(s.slowdown_temp_c, 87);
    assert_val(s.sm_clock_mhz, 1410);
    assert_val(s.sm_clock_max_mhz, 1980);
    assert_val(s.mem_clock_mhz, 1593);
    assert_val(s.mem_clock_max_mhz, 1593);
    assert_val(s.power_w, 312.5);
    assert_val(s.power_limit_w, 400);
    assert_val(s.energy_j, 123456.789);
    assert_val(s.pcie_tx_bps, 2048.0 * 1024);
    assert_val(s.pcie_rx_bps, 1000.0 * 1024);
    assert_true(s.reasons_valid);
    assert_int_equal(s.reasons_raw, 0x24);
    assert_true(s.reasons.sw_power_cap && s.reasons.sw_thermal);
    assert_false(s.reasons.gpu_idle || s.reasons.applications_clocks || s.reasons.hw_slowdown ||
                 s.reasons.sync_boost || s.reasons.hw_thermal || s.reasons.hw_power_brake ||
                 s.reasons.display_clocks);
    /* the new call is preferred when exported */
    assert_int_equal(stub_calls(lib, "nvmlDeviceGetCurrentClocksEventReasons"), ev0 + 1);
    assert_int_equal(stub_calls(lib, "nvmlDeviceGetCurrentClocksThrottleReasons"), old0);

    gpu_read(g, 1, &s);
    assert_string_equal(s.name, "Kiln Stub GPU 1");
    assert_val(s.temp_c, 72);
    assert_val(s.mem_used, 10737418240.0 + 1048576);
    gpu_read(g, 2, &s); /* out of range: nothing valid */
    assert_false(s.ok || s.util.valid || s.reasons_valid);
    gpu_read(g, -1, &s);
    assert_false(s.ok);

    unsigned shut = stub_calls(lib, "nvmlShutdown");
    gpu_close(g);
    assert_int_equal(stub_calls(lib, "nvmlShutdown"), shut + 1);
    gpu_close(NULL);
    dlclose(lib);
}

static void test_reasons_decode(void **state) {
    static const char *const names[] = {"gpu_idle",    "applications_clocks", "sw_power_cap",
                                        "hw_slowdown", "sync_boost",          "sw_thermal",
                                        "hw_thermal",  "hw_power_brake",      "display_clocks"};
    for (int k = 0; k < 9; k++) {
        gpu_reasons r = gpu_reasons_decode(1ULL << k);
        const bool *b = (const bool *)&r; /* gpu_reasons is nine bools in bit order */
        for (int j = 0; j < 9; j++)
            if (b[j] != (j == k)) fail_msg("bit %d decodes %s wrongly", k, names[j]);
    }
    gpu_reasons none = gpu_reasons_decode(0x8000000000000000ULL); /* an unknown bit */
    assert_false(none.gpu_idle || none.hw_thermal || none.display_clocks);
}

static void test_unsupported_fields_are_null(void **state) {
    use_stub(NVML_STUB_PATH, "ok");
    setenv("NVML_STUB_UNSUPPORTED",
           "nvmlDeviceGetPowerUsage,nvmlDeviceGetTotalEnergyConsumption,"
           "nvmlDeviceGetPcieThroughput,nvmlDeviceGetTemperatureThreshold",
           1);
    gpu_telemetry *g = open_ok();
    gpu_sample s;
    gpu_read(g, 0, &s);
    assert_false(s.power_w.valid || s.energy_j.valid || s.pcie_rx_bps.valid ||
                 s.pcie_tx_bps.valid || s.slowdown_temp_c.valid);
    assert_val(s.power_limit_w, 400); /* a neighbour still reads */
    assert_val(s.temp_c, 71);

    json_t *j = gpu_json(g, NULL);
    assert_true(json_is_true(json_object_get(j, "available")));
    json_t *d = json_array_get(json_object_get(j, "devices"), 0);
    assert_non_null(d);
    assert_true(json_is_null(json_object_get(d, "power_w")));
    assert_true(json_is_null(json_object_get(d, "energy_j")));
    assert_true(json_is_null(json_object_get(d, "pcie_rx_bytes_per_s")));
    assert_true(json_is_null(json_object_get(d, "slowdown_temperature_c")));
    assert_true(json_is_real(json_object_get(d, "power_limit_w")));
    json_decref(j);

    /* the metrics leave the unsupported series out */
    metrics *m = metrics_create();
    assert_int_equal(gpu_metrics_add(m, g), KILN_OK);
    char *txt;
    size_t len;
    assert_int_equal(metrics_write(m, &txt, &len), KILN_OK);
    assert_null(strstr(txt, "kiln_gpu_power_watts{"));
    assert_null(strstr(txt, "kiln_gpu_energy_joules_total{"));
    assert_non_null(strstr(txt, "# TYPE kiln_gpu_power_watts gauge"));
    assert_non_null(strstr(txt, "kiln_gpu_power_limit_watts{gpu=\"0\"} 400\n"));
    free(txt);
    metrics_destroy(m);

    /* utilization unsupported: no underutilization finding from it */
    setenv("NVML_STUB_UNSUPPORTED", "nvmlDeviceGetUtilizationRates", 1);
    gpu_read(g, 0, &s);
    assert_false(s.util.valid || s.mem_util.valid);
    gpu_finding f[GPU_MAX_FINDINGS];
    assert_int_equal(gpu_findings(&s, 5, f, GPU_MAX_FINDINGS), 0);
    gpu_close(g);
}

static void test_old_throttle_call_only(void **state) {
    void *lib = dlopen(NVML_STUB_OLD_PATH, RTLD_NOW);
    assert_non_null(lib);
    assert_null(dlsym(lib, "nvmlDeviceGetCurrentClocksEventReasons"));
    use_stub(NVML_STUB_OLD_PATH, "ok");
    setenv("NVML_STUB_REASONS", "0x40", 1); /* hw_thermal */
    unsigned old0 = stub_calls(lib, "nvmlDeviceGetCurrentClocksThrottleReasons");
    gpu_telemetry *g = open_ok();
    gpu_sample s;
    gpu_read(g, 0, &s);
    assert_true(s.reasons_valid);
    assert_true(s.reasons.hw_thermal);
    assert_false(s.reasons.sw_thermal);
    assert_int_equal(stub_calls(lib, "nvmlDeviceGetCurrentClocksThrottleReasons"), old0 + 1);
    gpu_finding f[GPU_MAX_FINDINGS];
    assert_int_equal(gpu_findings(&s, 0, f, GPU_MAX_FINDINGS), 1);
    assert_string_equal(f[0].code, "GPU_THERMAL_THROTTLING");
    assert_string_equal(f[0].severity, "critical");
    gpu_close(g);
    dlclose(lib);
}

static void test_json(void **state) {
    use_stub(NVML_STUB_PATH, "ok");
    setenv("NVML_STUB_REASONS", "0x24", 1);
    gpu_telemetry *g = open_ok();
    json_t *j = gpu_json(g, NULL);
    assert_true(json_is_true(json_object_get(j, "available")));
    assert_int_equal(json_integer_value(json_object_get(j, "count")), 2);
    json_t *devs = json_object_get(j, "devices");
    assert_int_equal(json_array_size(devs), 2);
    json_t *d = json_array_get(devs, 0);
    assert_int_equal(json_integer_value(json_object_get(d, "index")), 0);
    assert_string_equal(json_string_value(json_object_get(d, "name")), "Kiln Stub GPU 0");
    assert_true(json_is_integer(json_object_get(d, "memory_total_bytes")));
    assert_int_equal(json_integer_value(json_object_get(d, "memory_total_bytes")), 85899345920LL);
    assert_int_equal(json_integer_value(json_object_get(d, "sm_clock_max_mhz")), 1980);
    assert_int_equal(json_integer_value(json_object_get(d, "pcie_tx_bytes_per_s")), 2097152);
    assert_true(json_real_value(json_object_get(d, "power_w")) == 312.5);
    assert_true(json_real_value(json_object_get(d, "utilization_ratio")) == 0.37);
    assert_true(json_real_value(json_object_get(d, "energy_j")) == 123456.789);
    json_t *r = json_object_get(d, "clock_event_reasons");
    assert_string_equal(json_string_value(json_object_get(r, "raw")), "0x24");
    assert_true(json_is_true(json_object_get(r, "sw_thermal")));
    assert_true(json_is_true(json_object_get(r, "sw_power_cap")));
    assert_true(json_is_false(json_object_get(r, "hw_thermal")));
    assert_int_equal(json_object_size(r), 10); /* nine reasons and raw */
    char *dump = json_dumps(j, JSON_COMPACT);
    assert_non_null(dump); /* serialises (no NaN, no invalid UTF-8) */
    free(dump);
    json_decref(j);

    /* reasons unsupported: null, not an object of falses */
    setenv("NVML_STUB_UNSUPPORTED", "nvmlDeviceGetCurrentClocksEventReasons", 1);
    gpu_sample s;
    gpu_read(g, 0, &s);
    assert_false(s.reasons_valid);
    j = gpu_sample_json(&s);
    assert_true(json_is_null(json_object_get(j, "clock_event_reasons")));
    json_decref(j);
    gpu_close(g);
}

static void test_metrics(void **state) {
    use_stub(NVML_STUB_PATH, "ok");
    setenv("NVML_STUB_REASONS", "0x24", 1);
    gpu_telemetry *g = open_ok();
    metrics *m = metrics_create();
    assert_int_equal(gpu_metrics_add(m, g), KILN_OK);
    char *txt;
    size_t len;
    assert_int_equal(metrics_write(m, &txt, &len), KILN_OK);
    static const char *const want[] = {
        "# TYPE kiln_gpu_utilization_ratio gauge\n",
        "kiln_gpu_utilization_ratio{gpu=\"0\"} 0.37\n",
        "kiln_gpu_utilization_ratio{gpu=\"1\"} 0.37\n",
        "kiln_gpu_memory_used_bytes{gpu=\"0\"} 10737418240\n",
        "kiln_gpu_memory_total_bytes{gpu=\"0\"} 85899345920\n",
        "kiln_gpu_temperature_celsius{gpu=\"1\"} 72\n",
        "kiln_gpu_slowdown_temperature_celsius{gpu=\"0\"} 87\n",
        "kiln_gpu_sm_clock_hz{gpu=\"0\"} 1410000000\n",
        "kiln_gpu_sm_clock_max_hz{gpu=\"0\"} 1980000000\n",
        "kiln_gpu_mem_clock_hz{gpu=\"0\"} 1593000000\n",
        "kiln_gpu_power_watts{gpu=\"0\"} 312.5\n",
        "kiln_gpu_power_limit_watts{gpu=\"0\"} 400\n",
        "# TYPE kiln_gpu_energy_joules_total counter\n",
        "kiln_gpu_energy_joules_total{gpu=\"0\"} 123456.789\n",
        "kiln_gpu_pcie_rx_bytes_per_second{gpu=\"0\"} 1024000\n",
        "kiln_gpu_pcie_tx_bytes_per_second{gpu=\"0\"} 2097152\n",
        "kiln_gpu_info{gpu=\"0\",name=\"Kiln Stub GPU 0\"} 1\n",
        "kiln_gpu_clock_event_reason{gpu=\"0\",reason=\"sw_thermal\"} 1\n",
        "kiln_gpu_clock_event_reason{gpu=\"0\",reason=\"sw_power_cap\"} 1\n",
        "kiln_gpu_clock_event_reason{gpu=\"0\",reason=\"hw_thermal\"} 0\n",
        "kiln_gpu_clock_event_reason{gpu=\"1\",reason=\"display_clocks\"} 0\n",
    };
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++)
        if (!strstr(txt, want[k])) fail_msg("metrics lack %s---\n%s", want[k], txt);
    free(txt);

    /* a scrape reads afresh: the reasons clear */
    setenv("NVML_STUB_REASONS", "0", 1);
    assert_int_equal(metrics_write(m, &txt, &len), KILN_OK);
    assert_non_null(
        strstr(txt, "kiln_gpu_clock_event_reason{gpu=\"0\",reason=\"sw_thermal\"} 0\n"));
    free(txt);
    /* registering twice in one registry fails cleanly */
    assert_int_not_equal(gpu_metrics_add(m, g), KILN_OK);
    metrics_destroy(m);

    /* gpu_metrics_update on its own, from a sample */
    m = metrics_create();
    gpu_metrics *gm = gpu_metrics_register(m);
    assert_non_null(gm);
    gpu_sample s = {.index = 3, .ok = true, .util = {true, 0.5}};
    gpu_metrics_update(gm, &s);
    gpu_metrics_update(NULL, &s);
    assert_int_equal(metrics_write(m, &txt, &len), KILN_OK);
    assert_non_null(strstr(txt, "kiln_gpu_utilization_ratio{gpu=\"3\"} 0.5\n"));
    assert_null(strstr(txt, "kiln_gpu_info{"));
    free(txt);
    metrics_destroy(m);
    gpu_close(g);
}

static int has(const gpu_finding *f, int n, const char *code) {
    for (int k = 0; k < n; k++)
        if (!strcmp(f[k].code, code)) return k;
    return -1;
}

static void test_findings_from_stub(void **state) {
    use_stub(NVML_STUB_PATH, "ok");
    setenv("NVML_STUB_REASONS", "0x24", 1); /* thermal + power cap, as the issue asks */
    gpu_telemetry *g = open_ok();
    gpu_sample s;
    gpu_read(g, 0, &s);
    gpu_finding f[GPU_MAX_FINDINGS];
    int n = gpu_findings(&s, 0, f, GPU_MAX_FINDINGS);
    assert_int_equal(n, 2);
    int t = has(f, n, "GPU_THERMAL_THROTTLING"), p = has(f, n, "GPU_POWER_CAPPED");
    assert_true(t >= 0 && p >= 0);
    assert_string_equal(f[t].severity, "warning"); /* software slowdown only */
    assert_string_equal(f[p].severity, "info");
    assert_non_null(strstr(f[t].message, "sw_thermal"));
    assert_non_null(strstr(f[t].message, "71 C, slowdown at 87 C"));
    assert_non_null(strstr(f[p].message, "312 W of 400 W"));
    assert_true(strlen(f[t].recommendation) > 10 && strlen(f[p].recommendation) > 10);
    assert_int_equal(f[t].gpu, 0);

    /* requests waiting at 37% utilization: underutilized too */
    n = gpu_findings(&s, 4, f, GPU_MAX_FINDINGS);
    assert_int_equal(n, 3);
    int u = has(f, n, "GPU_UNDERUTILIZED");
    assert_true(u >= 0);
    assert_non_null(strstr(f[u].message, "37%"));
    assert_non_null(strstr(f[u].message, "4 requests"));
    json_t *j = gpu_finding_json(&f[u]);
    assert_string_equal(json_string_value(json_object_get(j, "code")), "GPU_UNDERUTILIZED");
    assert_string_equal(json_string_value(json_object_get(j, "severity")), "warning");
    assert_int_equal(json_integer_value(json_object_get(j, "gpu")), 0);
    assert_non_null(json_string_value(json_object_get(j, "recommendation")));
    json_decref(j);
    /* cap bounds what is written */
    assert_int_equal(gpu_findings(&s, 4, f, 1), 1);

    /* busy enough, or nothing waiting, or no reasons: nothing */
    setenv("NVML_STUB_REASONS", "0x1", 1); /* gpu_idle is not a finding */
    setenv("NVML_STUB_UTIL", "80", 1);
    gpu_read(g, 0, &s);
    assert_int_equal(gpu_findings(&s, 4, f, GPU_MAX_FINDINGS), 0);
    gpu_close(g);
}

static void test_findings_rules(void **state) {
    gpu_finding f[GPU_MAX_FINDINGS];
    /* hot but not slowed down: thermal findings come from the bits only */
    gpu_sample s = {.index = 1,
                    .ok = true,
                    .temp_c = {true, 95},
                    .slowdown_temp_c = {true, 87},
                    .reasons_valid = true};
    assert_int_equal(gpu_findings(&s, 0, f, GPU_MAX_FINDINGS), 0);
    /* hw_slowdown alone counts as thermal throttling, critical */
    s.reasons_raw = 0x8;
    s.reasons = gpu_reasons_decode(s.reasons_raw);
    assert_int_equal(gpu_findings(&s, 0, f, GPU_MAX_FINDINGS), 1);
    assert_string_equal(f[0].code, "GPU_THERMAL_THROTTLING");
    assert_string_equal(f[0].severity, "critical");
    assert_int_equal(f[0].gpu, 1);
    /* a power brake is a power finding, a warning */
    s.reasons_raw = 0x80;
    assert_int_equal(gpu_findings(&s, 0, f, GPU_MAX_FINDINGS), 1);
    assert_string_equal(f[0].code, "GPU_POWER_CAPPED");
    assert_string_equal(f[0].severity, "warning");
    assert_non_null(strstr(f[0].message, "hw_power_brake"));
    /* reasons unreadable: no reason findings */
    s.reasons_valid = false;
    assert_int_equal(gpu_findings(&s, 0, f, GPU_MAX_FINDINGS), 0);
    /* underutilization at the threshold is not below it */
    s.util = (gpu_value){true, GPU_UNDERUTILIZED_BELOW};
    assert_int_equal(gpu_findings(&s, 1, f, GPU_MAX_FINDINGS), 0);
    s.util.v = 0.1;
    assert_int_equal(gpu_findings(&s, 1, f, GPU_MAX_FINDINGS), 1);
    assert_int_equal(gpu_findings(&s, 0, f, GPU_MAX_FINDINGS), 0);
    s.ok = false; /* no device, no findings */
    assert_int_equal(gpu_findings(&s, 1, f, GPU_MAX_FINDINGS), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_missing_library),
        cmocka_unit_test(test_init_fails),
        cmocka_unit_test(test_values_and_units),
        cmocka_unit_test(test_reasons_decode),
        cmocka_unit_test(test_unsupported_fields_are_null),
        cmocka_unit_test(test_old_throttle_call_only),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_findings_from_stub),
        cmocka_unit_test(test_findings_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
