# Makefile - the README's commands, wrapping CMake.
#   make run    set up (Debian packages), build, and run Kiln's main job
#   make test   set up, build, and run every test (CTest)
#   make asan   the unit tests under AddressSanitizer + UBSan
#   make tsan   the thread-pool, matmul, metrics and serving tests under ThreadSanitizer
#   make fuzz   the GGUF reader fuzzer for FUZZ_SECONDS (default 60)
# WERROR=1 turns warnings into errors (CI does).
JOBS ?= $(shell nproc)
WERROR ?= 0
FUZZ_SECONDS ?= 60
CMAKE_FLAGS = -DKILN_WERROR=$(if $(filter 1,$(WERROR)),ON,OFF)

.PHONY: all setup build run test asan tsan fuzz format clean

all: build

setup:
	@./scripts/setup.sh

build: setup
	@cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS) >/dev/null
	@cmake --build build -j$(JOBS)

run: build
	@./scripts/run.sh

test: build
	@cd build && ctest --output-on-failure -j$(JOBS)

asan: setup
	@cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DKILN_SANITIZE=address $(CMAKE_FLAGS) >/dev/null
	@cmake --build build-asan -j$(JOBS)
	@cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j$(JOBS)

tsan: setup
	@cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKILN_SANITIZE=thread $(CMAKE_FLAGS) >/dev/null
	@cmake --build build-tsan -j$(JOBS) --target test_threadpool test_matmul test_metrics test_sched test_batcher test_registry test_trace
	@cd build-tsan && ctest --output-on-failure -R 'test_threadpool|test_matmul|test_metrics|test_sched|test_batcher|test_registry|test_trace'

fuzz: setup
	@./scripts/fuzz.sh $(FUZZ_SECONDS)

format:
	@clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-asan build-tsan build-fuzz
