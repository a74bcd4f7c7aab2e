# Two commands on a fresh machine with Python 3.10+ and make:
#   make quickstart   create .venv, install, train a tiny Codette on the CPU
#   make test         create or reuse .venv, install dev extras, run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The CPU build of PyTorch; a bare `torch` would pull gigabytes of CUDA packages.
TORCH_SPEC ?= torch==2.13.0

.PHONY: quickstart test install install-dev clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Install torch first, and only when it is missing, so pip never replaces it with a CUDA build.
$(VENV)/.torch: | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH_SPEC)"
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.torch
	$(PIP) install -e ".[dev]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

quickstart: install
	$(VENV)/bin/codette quickstart

test: install-dev
	$(PY) -m pytest -q

clean:
	rm -rf codette_model training_logs .pytest_cache
