# retnetd -- build, test, benchmark.  `make help` lists the targets.
#
# Objects go to build/<flavour>/ (release, asan) so flavours coexist.
# CUDA is auto-detected: with nvcc on PATH (or in /usr/local/cuda) the .cu
# files are compiled and linked even on a machine without a GPU.

SAN ?=
V ?= 0
PREFIX ?= /usr/local

ifeq ($(V),0)
Q := @
endif

ifeq ($(SAN),asan)
OUT := build/asan
OPT := -O1 -g -fno-omit-frame-pointer
SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all
# Instrumented CUDA builds are not worth their trouble: the sanitizer build is CPU-only.
NVCC :=
else
OUT := build/release
OPT := -O2 -g
SANFLAGS :=
NVCC ?= $(shell command -v nvcc 2>/dev/null || { test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc; })
endif

CC ?= cc
WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
        -Wold-style-definition -Wpointer-arith -Wformat=2 -Wundef -Wvla -Wwrite-strings \
        -Wno-psabi
# C++ (the unit tests' CUDA emulation): the same warnings that apply to it.
CXXWARN := -Wall -Wextra -Werror -Wshadow -Wpointer-arith -Wformat=2 -Wundef -Wvla -Wno-psabi \
           -Wno-unknown-pragmas # the kernels' #pragma unroll
# Lazy (=) so pkg-config runs after `make deps` installed what it queries.
PKG_CFLAGS = $(shell pkg-config --cflags openblas libcjson libpcre2-8)
PKG_LIBS = $(shell pkg-config --libs openblas libcjson libpcre2-8)
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo unknown)
SERVER_CFLAGS = -DRD_VERSION='"$(VERSION)"' $(shell pkg-config --cflags libmicrohttpd libuv inih) \
                $(shell pkg-config --exists libsystemd && echo -DRD_HAVE_SYSTEMD)
SERVER_LIBS = $(shell pkg-config --libs libmicrohttpd libuv inih) \
              $(shell pkg-config --exists libsystemd && pkg-config --libs libsystemd)
CHECK_CFLAGS = $(shell pkg-config --cflags check)
CHECK_LIBS = $(shell pkg-config --libs check)
CPPFLAGS_ALL = -D_GNU_SOURCE -Iengine $(PKG_CFLAGS)
CFLAGS_ALL = -std=gnu11 $(OPT) $(WARN) $(SANFLAGS) -pthread -MMD -MP $(CFLAGS)
LDLIBS_ALL = $(PKG_LIBS) -lm -pthread

ENGINE_SRC := $(wildcard engine/*.c engine/cpu/*.c engine/cuda/*.c)
CUDA_SRC := $(wildcard engine/cuda/*.cu)
ifneq ($(NVCC),)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CUDA_ARCH ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90a,code=sm_90a
# --threads 2: each file's two architectures compiled side by side;
# kernels.cu, the build's longest file, took 450 s alone and 251 s so on
# a 2-core machine
NVFLAGS := -std=c++17 -O3 $(CUDA_ARCH) --threads 2 -Xcompiler -Wall,-Wextra \
           -Werror all-warnings -Iengine $(addprefix -I,$(wildcard $(CUDA_HOME)/extras/CUPTI/include))
CPPFLAGS_ALL += -DRN_HAVE_CUDA
CUDA_OBJ := $(CUDA_SRC:%.cu=$(OUT)/%.o)
CUDA_LIBS := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublasLt -lcublas -lcudart
endif

# CUDA_EMU=1: the CUDA backend built as host C++ against the CPU emulation
# of the CUDA runtime, cuBLAS(Lt) and the kernels (tests/emu/cuda_runtime.h),
# into build/<flavour>-emu/, with no nvcc and no GPU: `make check-cuda-emu`.
ifeq ($(CUDA_EMU),1)
override OUT := $(OUT)-emu
NVCC :=
CPPFLAGS_ALL += -DRN_HAVE_CUDA -DRN_CUDA_EMULATED
EMU_RT_OBJ := $(OUT)/tests/emu/cudart_emu.o $(OUT)/tests/emu/cublas_emu.o $(OUT)/tests/unit/cuda_emu.o
CUDA_OBJ := $(CUDA_SRC:%.cu=$(OUT)/%.o) $(EMU_RT_OBJ)
CUDA_LIBS :=
EMU_TEST_OBJ := $(OUT)/tests/emu/check_cudart_emu.o
endif

ENGINE_OBJ := $(ENGINE_SRC:%.c=$(OUT)/%.o) $(CUDA_OBJ)
LIB := $(OUT)/libretnet.a
RETNET := $(OUT)/retnet
TOOL_SRC := $(wildcard tools/retnet/*.c)
TOOL_OBJ := $(TOOL_SRC:%.c=$(OUT)/%.o)
SERVER_SRC := $(wildcard server/*.c)
SERVER_OBJ := $(SERVER_SRC:%.c=$(OUT)/%.o)
RETNETD := $(OUT)/retnetd
TEST_SRC := $(wildcard tests/unit/*.c)
TEST_CXX_SRC := $(wildcard tests/unit/*.cc)
TEST_OBJ := $(filter-out $(EMU_RT_OBJ),$(TEST_SRC:%.c=$(OUT)/%.o) $(TEST_CXX_SRC:%.cc=$(OUT)/%.o)) \
            $(EMU_TEST_OBJ)
TEST_BIN := $(OUT)/tests/check_unit

.PHONY: FORCE check-cuda-emu cuda-emu-suites check-cuda-emu-integration cuda-emu-integration soak load-wrk check-valgrind check-image install uninstall all help deps check check-cuda bench-cuda check-unit check-integration check-sdk check-asan bench bench-http fuzz run format format-check lint clean fixtures info

all: $(RETNET) $(RETNETD) $(TEST_BIN)

help:
	@echo "make            build build/release/{retnetd,retnet} and the tests"
	@echo "make run        start the server on models/ (http://127.0.0.1:8080)"
	@echo "make deps       install missing Debian/Ubuntu packages (apt-get)"
	@echo "make check      deps + build + all tests + lint"
	@echo "make check-integration  the server end to end over loopback (python3, stdlib only)"
	@echo "make check-sdk  the server through the official OpenAI Python SDK (venv from PyPI)"
	@echo "make check-asan the same tests under AddressSanitizer + UBSan"
	@echo "make bench      engine benchmarks next to the PyTorch reference and machine limits"
	@echo "make check-cuda the CUDA backend's parity suites and memcheck on a GPU (skips without one)"
	@echo "make check-cuda-emu  the same suites through the CUDA backend on the CPU (emulated; no GPU)"
	@echo "make check-cuda-emu-integration  retnetd's integration tests on that emulated backend"
	@echo "make bench-cuda GPU benchmark: 1.3B preset vs the device's limits and FLA's RetNet"
	@echo "make bench-http HTTP/SSE latency and throughput next to the engine alone; /health with wrk"
	@echo "make fixtures   regenerate tests/fixtures from the reference packages (needs PyPI)"
	@echo "make fuzz       libFuzzer targets, FUZZ_TIME seconds each (default 600)"
	@echo "make format     clang-format the C sources"
	@echo "make soak       30-minute load and soak test (SOAK_TIME); make check runs 2 minutes"
	@echo "make check-valgrind  unit suites and server tests under valgrind memcheck"
	@echo "make check-image  build and check the CPU container images with podman (docs/docker.md)"
	@echo "make install    install (PREFIX=/usr/local, DESTDIR=) binaries, model, config, unit, docs"
	@echo "make clean      remove build/"

info:
	@echo "nvcc: $(if $(NVCC),$(NVCC) (CUDA backend compiled),not found (CPU only))"

deps:
	$(Q)sh tools/deps.sh

$(OUT)/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CPPFLAGS_ALL) $(CFLAGS_ALL) $(FILE_CFLAGS) -c $< -o $@

# The decode kernels use several tile shapes; whether a compiler fuses a
# multiply and an add may differ between them, so fusion is turned off there
# to keep a batched decode bit-identical to single decodes with any compiler.
$(OUT)/engine/cpu/packed.o: FILE_CFLAGS := -ffp-contract=off

# The unit tests' references and the emulated kernels (below) compute as
# written, each multiply and add rounded, whatever -march a user's CFLAGS
# or CXXFLAGS give: the emulated kernels are held to them bit for bit.
TEST_FP := -ffp-contract=off

$(OUT)/tests/unit/%.o: tests/unit/%.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CPPFLAGS_ALL) $(CHECK_CFLAGS) $(CFLAGS_ALL) $(TEST_FP) -c $< -o $@

# The CUDA emulation that runs engine/cuda/ret_fused.cuh's kernels on the
# CPU (tests/unit/cuda_emu.h): host C++, built with or without nvcc.
$(OUT)/tests/unit/%.o: tests/unit/%.cc
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CXX     $<")
	$(Q)$(CXX) -std=c++17 $(CPPFLAGS_ALL) $(OPT) $(CXXWARN) $(SANFLAGS) -pthread -MMD -MP $(CXXFLAGS) $(TEST_FP) -c $< -o $@

$(OUT)/server/%.o: server/%.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CPPFLAGS_ALL) $(SERVER_CFLAGS) $(CFLAGS_ALL) -c $< -o $@

# The objects that print RD_VERSION are rebuilt when `git describe` changes:
# the stamp is rewritten only when its text differs, so an unchanged version
# rebuilds nothing.
VERSION_STAMP := $(OUT)/version.stamp
$(VERSION_STAMP): FORCE
	@mkdir -p $(dir $@)
	@[ "$$(cat $@ 2>/dev/null)" = "$(VERSION)" ] || echo "$(VERSION)" > $@
$(OUT)/server/main.o $(OUT)/server/metrics.o $(OUT)/server/options.o: $(VERSION_STAMP)
FORCE:

# -MMD -MP as for the C sources: a kernel header (engine/cuda/*.cuh, *.h)
# changed rebuilds the .cu files that include it.
ifeq ($(CUDA_EMU),1)
EMU_CXX = $(CXX) -std=c++17 -DRN_CUDA_EMU=1 -Itests/emu -Itests/unit $(CPPFLAGS_ALL) $(OPT) $(CXXWARN) $(SANFLAGS) \
          -pthread -MMD -MP $(CXXFLAGS) $(TEST_FP)
$(OUT)/%.o: %.cu
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CXX     $< (emulated CUDA)")
	$(Q)$(EMU_CXX) -x c++ -c $< -o $@

$(OUT)/tests/emu/%.o: tests/emu/%.cc
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CXX     $<")
	$(Q)$(EMU_CXX) $(CHECK_CFLAGS) -c $< -o $@
else
$(OUT)/%.o: %.cu
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  NVCC    $<")
	$(Q)$(NVCC) $(NVFLAGS) -MMD -MP -c $< -o $@
endif

$(LIB): $(ENGINE_OBJ)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

$(RETNET): $(TOOL_OBJ) $(LIB)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS_ALL) -o $@ $(TOOL_OBJ) $(LIB) $(CUDA_LIBS) $(LDLIBS_ALL) $(if $(CUDA_OBJ),-lstdc++)

$(RETNETD): $(SERVER_OBJ) $(LIB)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS_ALL) -o $@ $(SERVER_OBJ) $(LIB) $(CUDA_LIBS) $(SERVER_LIBS) $(LDLIBS_ALL) $(if $(CUDA_OBJ),-lstdc++)

# the unit runner also checks the server's self-contained pieces (TEST_SERVER_OBJ)
TEST_SERVER_OBJ := $(OUT)/server/jw.o
$(TEST_BIN): $(TEST_OBJ) $(TEST_SERVER_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS_ALL) -o $@ $(TEST_OBJ) $(TEST_SERVER_OBJ) $(LIB) $(CUDA_LIBS) $(CHECK_LIBS) $(LDLIBS_ALL) -lstdc++

# The whole suite: unit tests (parity against tests/fixtures, malformed models,
# form equivalences), the server's integration tests and the layering lint.
check: deps
	$(Q)$(MAKE) --no-print-directory info
	$(Q)$(MAKE) --no-print-directory check-unit
	$(Q)$(MAKE) --no-print-directory check-cuda-emu CHECK_CUDA_EMU_ONLY='^parity$$'
	$(Q)$(MAKE) --no-print-directory check-integration
	$(Q)$(MAKE) --no-print-directory soak SOAK_TIME=120
	$(Q)$(MAKE) --no-print-directory check-sdk
	$(Q)$(MAKE) --no-print-directory lint

# The CUDA backend on the CPU: its host code and every kernel it launches,
# built against the emulated CUDA runtime and cuBLAS(Lt) (CUDA_EMU=1,
# tests/emu/cuda_runtime.h) into build/<flavour>-emu/: the emulation's own
# suite, then tools/check-cuda.sh's runs that CHECK_CUDA_EMU_ONLY names (an
# awk regular expression over their names; the plain parity, form and
# synthetic suites by default, '.' for every switch's runs), with
# RN_TEST_DEVICE=cuda.  Needs neither nvcc nor a GPU.  The kernels run a
# fiber per CUDA thread, so a suite takes minutes; `make check` runs
# CHECK_CUDA_EMU_ONLY='^parity$'.  SAN=asan adds AddressSanitizer over the
# device memory, which is host memory here.
check-cuda-emu:
	$(Q)$(MAKE) --no-print-directory CUDA_EMU=1 cuda-emu-suites

cuda-emu-suites: $(TEST_BIN) $(RETNET)
	@mkdir -p $(OUT)/check-cuda
	$(Q)CK_RUN_SUITE=cudart_emu $(TEST_BIN) >$(OUT)/check-cuda/cudart_emu.log 2>&1 || \
	    { cat $(OUT)/check-cuda/cudart_emu.log; exit 1; } # the refusals it tests are said on stderr
	@echo "check-cuda-emu: cudart_emu: $$(tail -n 1 $(OUT)/check-cuda/cudart_emu.log)"
	$(Q)CHECK_CUDA_EMULATED=1 CHECK_CUDA_ONLY="$${CHECK_CUDA_EMU_ONLY:-^(parity|forms|synthetic)$$}" \
	    sh tools/check-cuda.sh $(RETNET) $(TEST_BIN)

# The daemon serving on the emulated CUDA backend: test_server.py (the
# API, batching, sessions, streaming, disconnects, drain), test_state.py
# (export, import, persistence), test_tiers.py (host and disk offload, the
# prefix cache), test_faults.py and the others but the install's and the
# SDK's, with RETNETD_TEST_DEVICE=cuda, so the server's paths run through the
# backend's copies and device-side sampling under the emulation's deferred
# execution, and a kernel failing on the device (RN_EMU_FAIL_LAUNCH) must
# end the requests in flight with a 503 and the server with status 1.
# About half an hour; not part of `make check`.
check-cuda-emu-integration:
	$(Q)$(MAKE) --no-print-directory CUDA_EMU=1 cuda-emu-integration

cuda-emu-integration: $(RETNET) $(RETNETD)
	$(Q)CHECK_CUDA_EMULATED=1 CHECK_CUDA_ONLY='^test_' \
	    sh tools/check-cuda.sh $(RETNET) $(TEST_BIN) $(RETNETD)

check-unit: $(TEST_BIN) $(RETNET)
	$(Q)CK_DEFAULT_TIMEOUT=$${CK_DEFAULT_TIMEOUT:-120} RN_RETNET=$(RETNET) $(TEST_BIN)

# The real retnetd on loopback, on a tiny random model written by $(RETNET):
# every endpoint, SSE, sessions, overload, disconnects and SIGTERM.  Each
# server must exit with status 0 and a log free of sanitizer reports.
check-integration: $(RETNETD) $(RETNET)
	$(Q)RETNETD=$(RETNETD) RETNET=$(RETNET) python3 tests/integration/test_server.py
	$(Q)RETNETD=$(RETNETD) RETNET=$(RETNET) python3 tests/integration/test_bad_input.py
	$(Q)RETNETD=$(RETNETD) RETNET=$(RETNET) python3 tests/integration/test_state.py
	$(Q)RETNETD=$(RETNETD) RETNET=$(RETNET) python3 tests/integration/test_tiers.py
	$(Q)RETNETD=$(RETNETD) RETNET=$(RETNET) python3 tests/integration/test_replicas.py
	$(Q)RETNETD=$(RETNETD) python3 tests/integration/test_config.py
	$(Q)RETNETD=$(RETNETD) RETNET=$(RETNET) python3 tests/integration/test_metrics.py
	$(Q)RETNETD=$(RETNETD) RETNET=$(RETNET) python3 tests/integration/test_install.py
	$(Q)RETNETD=$(RETNETD) RETNET=$(RETNET) python3 tests/integration/test_lifecycle.py
	$(Q)RETNETD=$(RETNETD) RETNET=$(RETNET) python3 tests/integration/test_security.py
	$(Q)RETNETD=$(RETNETD) RETNET=$(RETNET) python3 tests/integration/test_faults.py
	$(Q)python3 tests/tools/test_timeline_summary.py
	$(Q)python3 tests/tools/test_bench_compare.py
	$(Q)python3 tests/tools/test_bench_peer.py
	$(Q)python3 tests/tools/test_bench_cuda.py
	$(Q)python3 tests/tools/test_plot_decode.py

# The server through the official OpenAI Python SDK, pinned in $(SDK_REQ) and
# installed from PyPI into $(SDK_VENV) (again only when the pin changes).
# When that fails (no network) the target fails; with RETNETD_ALLOW_SKIP=1 it
# prints SKIPPED and exits 0 instead.  A skip never counts as a pass otherwise.
SDK_VENV := build/sdk-venv
SDK_REQ := tests/integration/requirements-sdk.txt
check-sdk: $(RETNETD) $(RETNET)
	$(Q)if ! cmp -s $(SDK_REQ) $(SDK_VENV)/requirements-sdk.txt; then \
	    echo "check-sdk: installing $$(grep -v '^#' $(SDK_REQ) | tr '\n' ' ')into $(SDK_VENV)"; \
	    rm -rf $(SDK_VENV) && mkdir -p $(dir $(SDK_VENV)); \
	    if python3 -m venv $(SDK_VENV) >$(SDK_VENV).log 2>&1 && \
	       $(SDK_VENV)/bin/python -m pip install -q --disable-pip-version-check -r $(SDK_REQ) \
	           >>$(SDK_VENV).log 2>&1; then \
	        cp $(SDK_REQ) $(SDK_VENV)/requirements-sdk.txt; \
	    else \
	        rm -rf $(SDK_VENV); tail -n 5 $(SDK_VENV).log >&2; \
	        why="cannot create $(SDK_VENV) with $$(grep -v '^#' $(SDK_REQ) | tr '\n' ' ')(no network, or no python3-venv?); log: $(SDK_VENV).log"; \
	        if [ "$${RETNETD_ALLOW_SKIP:-0}" = 1 ]; then echo "SKIPPED: check-sdk: $$why"; exit 0; fi; \
	        echo "check-sdk: FAILED: $$why (RETNETD_ALLOW_SKIP=1 turns this into a skip)" >&2; exit 1; \
	    fi; \
	fi; \
	RETNETD=$(RETNETD) RETNET=$(RETNET) $(SDK_VENV)/bin/python tests/integration/test_openai_sdk.py

# Check forks a child per test; LeakSanitizer runs at each child's exit and a
# leak makes that test fail.  In the integration tests it runs at each
# server's exit: a leak fails the test class that started the server.
check-asan: deps
	$(Q)ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
	    CK_TIMEOUT_MULTIPLIER=4 $(MAKE) --no-print-directory SAN=asan check-unit
	$(Q)ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
	    CK_TIMEOUT_MULTIPLIER=60 $(MAKE) --no-print-directory SAN=asan check-cuda-emu \
	    CHECK_CUDA_EMU_ONLY='^parity$$'
	$(Q)ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
	    $(MAKE) --no-print-directory SAN=asan check-integration

# engine/ must not know HTTP or libuv; server/ must not know CUDA or backend internals.
lint:
	$(Q)! grep -rnE '#include *[<"](microhttpd|uv)\.h' engine/ || { echo "lint: engine/ includes server headers"; exit 1; }
	$(Q)! { test -d server && grep -rnE '#include *[<"](cuda|cublas|.*backend\.h)' server/; } || { echo "lint: server/ includes CUDA or backend headers"; exit 1; }
	@echo "lint: ok"

# Start the server on the shipped model (foreground; Ctrl-C drains and stops).
# RUN_ARGS adds flags, e.g. make run RUN_ARGS="--port 9000 --host 0.0.0.0".
run: deps
	$(Q)$(MAKE) --no-print-directory $(RETNETD)
	$(Q)exec $(RETNETD) --model models $(RUN_ARGS)

# libFuzzer targets (clang), each run for FUZZ_TIME seconds from its committed
# seed corpus; findings land in build/fuzz/<target>/ and become unit tests.
FUZZ_TIME ?= 600
FUZZ_TARGETS := tokenizer config blob options request
FUZZ_FLAGS := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -D_GNU_SOURCE
FUZZ_SRC_tokenizer := $(ENGINE_SRC)
FUZZ_SRC_config := $(ENGINE_SRC)
FUZZ_SRC_blob := $(ENGINE_SRC)
FUZZ_SRC_options := server/options.c
FUZZ_LIBS_options := $(shell pkg-config --libs inih 2>/dev/null)
FUZZ_SRC_request := $(ENGINE_SRC) $(filter-out server/main.c,$(SERVER_SRC))
FUZZ_LIBS_request = $(SERVER_LIBS)
fuzz: deps
	$(Q)for t in $(FUZZ_TARGETS); do $(MAKE) --no-print-directory fuzz-$$t || exit 1; done

fuzz-%: deps
	$(Q)mkdir -p build/fuzz/$*
	$(Q)clang $(FUZZ_FLAGS) -Iengine -Iserver $(PKG_CFLAGS) $(SERVER_CFLAGS) -o build/fuzz/fuzz_$* tests/fuzz/fuzz_$*.c \
	    $(FUZZ_SRC_$*) $(PKG_LIBS) $(FUZZ_LIBS_$*) -lm -pthread -DRN_NO_CLONES
	@echo "fuzz: $* for $(FUZZ_TIME) s"
	$(Q)build/fuzz/fuzz_$* -max_total_time=$(FUZZ_TIME) -max_len=65536 \
	    -artifact_prefix=build/fuzz/$*/ build/fuzz/$* tests/fuzz/corpus/$*

bench: deps $(RETNET)
	$(Q)sh bench/run.sh $(RETNET)

# valgrind memcheck: the unit suites but the two numerical ones (parity and
# forms run for hours under valgrind; check-asan covers them), then the bad-
# input table, the state and the security tests with the server under
# valgrind (test_server.py's timing-bound cases do not survive a 30x slower
# server; check-asan runs them instrumented).  Any error or definite leak fails.
VALGRIND := valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
            --show-leak-kinds=definite
VALGRIND_SUITES := math safetensors model sampler tokenizer cuda_plan state_blob jw
check-valgrind: $(TEST_BIN) $(RETNETD) $(RETNET)
	$(Q)sh tools/deps.sh valgrind
	$(Q)for s in $(VALGRIND_SUITES); do \
	    CK_FORK=no CK_RUN_SUITE=$$s CK_DEFAULT_TIMEOUT=1200 $(VALGRIND) $(TEST_BIN) || exit 1; done
	$(Q)for t in test_bad_input test_state test_security; do \
	    RETNETD_WRAP="$(VALGRIND)" RETNETD=$(RETNETD) RETNET=$(RETNET) \
	        python3 tests/integration/$$t.py || exit 1; done

# Load and soak (tests/load/soak.py): bounded, loopback only, self-stopping.
# `make check` runs 2 minutes of it; `make soak` 30 (SOAK_TIME seconds).
SOAK_TIME ?= 1800
soak: $(RETNETD) $(RETNET)
	$(Q)RETNETD=$(RETNETD) RETNET=$(RETNET) python3 tests/load/soak.py --duration $(SOAK_TIME)

# wrk with tests/load/sse.lua (streaming requests) against a server on the
# default model for 30 s; wrk from tools/deps.sh.
load-wrk: $(RETNETD)
	$(Q)sh tools/deps.sh wrk
	$(Q)$(RETNETD) --model models --port 18765 --threads 2 >build/load-wrk.log 2>&1 & pid=$$!; \
	    sleep 2; wrk -t2 -c16 -d30s -s tests/load/sse.lua http://127.0.0.1:18765; rc=$$?; \
	    kill -TERM $$pid; wait $$pid; exit $$rc

# docker/Dockerfile built with podman (CPU image on Debian 12 and Ubuntu 24.04)
# and checked end to end; IMAGE_CHECK_ARGS=--cuda-standin adds the CUDA build.
check-image:
	$(Q)bash tests/container/image-check.sh $(IMAGE_CHECK_ARGS)

# The CUDA backend on a device: parity and form suites with
# RN_TEST_DEVICE=cuda, compute-sanitizer, then the daemon's integration test
# on the GPU.  Prints SKIPPED and exits 0 without a CUDA build or a device.
check-cuda: $(TEST_BIN) $(RETNET) $(RETNETD)
	$(Q)sh tools/check-cuda.sh $(RETNET) $(TEST_BIN) $(RETNETD)

# The load client of bench-http (bench/sse_load.c): plain C, no library.
$(OUT)/bench/sse_load: bench/sse_load.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) -std=gnu11 $(OPT) $(WARN) -Wconversion $(CFLAGS) -o $@ $<

# GPU benchmark: the 1.3B preset on the CUDA backend next to the device's
# copy bandwidth and bf16 GEMM rate and next to flash-linear-attention's
# RetNet on the same GPU (tools/bench_peer.py).  Results: build/bench/cuda/.
bench-cuda: $(RETNET)
	$(Q)sh bench/cuda.sh $(RETNET)

# HTTP + SSE overhead: retnetd on models/ (the test model when there is none)
# at 1, 8 and 32 concurrent streams next to `retnet bench` decode speed, and
# GET /health with wrk (installed by tools/deps.sh wrk).  Not a test.
bench-http: deps $(RETNETD) $(RETNET) $(OUT)/bench/sse_load
	$(Q)sh tools/deps.sh wrk
	$(Q)python3 bench/http_bench.py --retnetd $(RETNETD) --retnet $(RETNET) --client $(OUT)/bench/sse_load

fixtures:
	$(Q)sh tools/venv.sh >/dev/null && build/venv/bin/python tools/make_fixtures.py --out tests/fixtures

format:
	$(Q)clang-format -i $$(git ls-files '*.c' '*.h' '*.cu' '*.cuh' '*.cc')

format-check:
	$(Q)clang-format --dry-run -Werror $$(git ls-files '*.c' '*.h' '*.cu' '*.cuh' '*.cc')

# Installation (FHS): binaries, the default model, the config file (kept if
# present), the systemd unit and the docs.  DESTDIR for staging/packaging.
BINDIR ?= $(PREFIX)/bin
DATADIR ?= $(PREFIX)/share/retnetd
DOCDIR ?= $(PREFIX)/share/doc/retnetd
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
UNITDIR ?= $(PREFIX)/lib/systemd/system
STATEDIR ?= /var/lib/retnetd
install: $(RETNETD) $(RETNET)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(DATADIR)/models $(DESTDIR)$(DOCDIR) \
	    $(DESTDIR)$(SYSCONFDIR)/retnetd $(DESTDIR)$(UNITDIR)
	install -m 0755 $(RETNETD) $(RETNET) $(DESTDIR)$(BINDIR)/
	install -m 0644 models/config.json models/model.safetensors models/tokenizer.json \
	    $(DESTDIR)$(DATADIR)/models/
	install -m 0644 README.md docs/*.md $(DESTDIR)$(DOCDIR)/
	sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' -e 's|@DOCDIR@|$(DOCDIR)|g' \
	    systemd/retnetd.service.in >$(DESTDIR)$(UNITDIR)/retnetd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/retnetd.service
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/retnetd/retnetd.conf ]; then \
	    echo "install: keeping $(DESTDIR)$(SYSCONFDIR)/retnetd/retnetd.conf"; \
	else \
	    sed -e 's|^dir = models$$|dir = $(DATADIR)/models|' \
	        -e 's|^state_dir = $$|state_dir = $(STATEDIR)|' \
	        config/retnetd.conf >$(DESTDIR)$(SYSCONFDIR)/retnetd/retnetd.conf && \
	    chmod 0644 $(DESTDIR)$(SYSCONFDIR)/retnetd/retnetd.conf; \
	fi

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/retnetd $(DESTDIR)$(BINDIR)/retnet $(DESTDIR)$(UNITDIR)/retnetd.service
	rm -rf $(DESTDIR)$(DATADIR) $(DESTDIR)$(DOCDIR)
	@echo "uninstall: $(DESTDIR)$(SYSCONFDIR)/retnetd/retnetd.conf and $(STATEDIR) are left in place"

clean:
	rm -rf build/release build/asan build/release-emu build/asan-emu

-include $(ENGINE_OBJ:.o=.d) $(TOOL_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(SERVER_OBJ:.o=.d)
