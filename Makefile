# On a fresh machine with Python 3.10+ and make:
#   make quickstart     create .venv, install, train a tiny Codette on the CPU
#   make test           create or reuse .venv, install dev extras, run the whole test suite
#   make test-fast      the same without the slow tests (training a model, llama.cpp files): the inner loop
# and one for running GGUF files in llama.cpp after a quickstart:
#   make install-llama  build llama-cpp-python (and its server's packages) into .venv: `codette eval x.gguf`,
#                       `codette ask/chat/serve x.gguf`, `codette export --quant q4_k_m`, `python -m llama_cpp.server`
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The CPU build of PyTorch; a bare `torch` would pull gigabytes of CUDA packages.
TORCH_SPEC ?= torch==2.13.0
# llama-cpp-python (the llama.cpp runtime the GGUF tests, `codette eval x.gguf` and the K-quants use) builds from
# source. llama.cpp's default, GGML_NATIVE=ON, compiles for the build machine's CPU (-march=native),
# which includes AMX kernels on Intel Xeons that crash with "Illegal instruction"; a wheel built that
# way also crashes on any CPU with fewer features. So it is built for a fixed instruction set:
# x86-64-v3 (AVX2, FMA, F16C, BMI2) with AVX-512 and AMX off, and never from pip's wheel cache,
# which would hand back a wheel built with other CMAKE_ARGS.
LLAMA_SPEC ?= llama-cpp-python==0.3.36
# The same version with the packages of its OpenAI-compatible server (`python -m llama_cpp.server`).
LLAMA_SERVER_SPEC := $(subst llama-cpp-python,llama-cpp-python[server],$(LLAMA_SPEC))
ARCH := $(shell uname -m)
ifeq ($(ARCH),x86_64)
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_CPU_ALL_VARIANTS=OFF -DGGML_BACKEND_DL=OFF \
  -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_F16C=ON -DGGML_FMA=ON -DGGML_AVX2=ON -DGGML_BMI2=ON \
  -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF \
  -DGGML_AVX512_BF16=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
else
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF
endif
# The stamp's name carries the spec and the flags, so changing either rebuilds and nothing else does.
LLAMA_STAMP := $(VENV)/.llama-$(shell echo '$(LLAMA_SPEC) $(LLAMA_CMAKE_ARGS)' | cksum | cut -d' ' -f1)

# Debian packages, as command:package. execute_python runs in a bubblewrap sandbox (the evaluation's
# tool probes use it); the tests also read the llama.cpp build's machine code with objdump, render the
# Ollama Modelfile's template with Go's own text/template, and drive the web chat page in Chromium.
RUN_DEPS  ?= bwrap:bubblewrap unshare:util-linux
TEST_DEPS ?= $(RUN_DEPS) objdump:binutils go:golang-go chromium:chromium

.PHONY: quickstart test test-fast install install-dev install-llama clean system-deps-run system-deps-test

$(PY):
	$(PYTHON) -m venv $(VENV)

# Install torch first, and only when it is missing, so pip never replaces it with a CUDA build.
$(VENV)/.torch: | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH_SPEC)"
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PIP) install -e .
	touch $@

# The portable llama.cpp build: most of the first install's 9 minutes on 2 cores, once per .venv.
# A llama-cpp-python that is already installed is rebuilt, since it may be a native build. The second
# pip adds its dependencies and its server's (the version is installed, so nothing is rebuilt).
$(LLAMA_STAMP): $(VENV)/.torch
	@echo "Building $(LLAMA_SPEC) from source for a portable instruction set (takes a few minutes, once)"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" FORCE_CMAKE=1 $(PIP) install --no-cache-dir --force-reinstall \
	  --no-deps "$(LLAMA_SPEC)"
	$(PIP) install "$(LLAMA_SERVER_SPEC)"
	rm -f $(VENV)/.llama-*
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.torch $(LLAMA_STAMP)
	$(PIP) install -e ".[dev]"
	touch $@ $(VENV)/.installed

# Installs what is missing with apt-get when run as root; otherwise names the packages and stops.
define system_deps
	@missing=""; for d in $(1); do command -v $${d%%:*} >/dev/null 2>&1 || missing="$$missing $${d#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Debian packages:$$missing"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y --no-install-recommends $$missing || \
	      { apt-get update && apt-get install -y --no-install-recommends $$missing; } || exit 1; \
	  else \
	    echo "error: missing Debian packages:$$missing (install them: sudo apt-get install$$missing)" >&2; exit 1; \
	  fi; \
	fi
endef

system-deps-run:
	$(call system_deps,$(RUN_DEPS))

system-deps-test:
	$(call system_deps,$(TEST_DEPS))

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev
# Codette plus the llama.cpp runtime alone (the same portable build install-dev makes), without the dev extras.
install-llama: $(VENV)/.installed $(LLAMA_STAMP)

quickstart: install system-deps-run
	$(VENV)/bin/codette quickstart

# CODETTE_REQUIRE_RUNTIMES: a missing llama.cpp or transformers fails the suite instead of skipping it.
test: install-dev system-deps-test
	CODETTE_REQUIRE_RUNTIMES=1 $(PY) -m pytest -q

# Every test not marked slow (pyproject.toml's markers): none trains a model or exports a trained one for llama.cpp.
test-fast: install-dev system-deps-test
	CODETTE_REQUIRE_RUNTIMES=1 $(PY) -m pytest -q -m 'not slow'

clean:
	rm -rf codette_model training_logs .pytest_cache
