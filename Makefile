# skcl: `make demo` and `make test` set up a virtual environment on first use.
# On a CPU machine the CPU build of torch is installed before anything else
# asks for torch, so no multi-GB CUDA build is ever pulled in. Elsewhere set
# TORCH_INDEX=https://download.pytorch.org/whl/cpu (or a CUDA index) as needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
STAMP := $(VENV)/.skcl-installed
SOURCES := setup.py pyproject.toml $(wildcard csrc/*.cpp csrc/*.hpp csrc/cuda/*.cu csrc/cuda/*.cuh csrc/cuda/*.cpp)

.PHONY: install demo test lint bench bench-kernels clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) $(SOURCES)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(PY) -m pip install "setuptools>=64" wheel "pybind11>=2.11"
	$(PY) -m pip install --no-build-isolation -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/skcl demo --out demo_output

lint: $(STAMP)
	$(PY) -m ruff check skcl tests benchmarks setup.py

test: lint
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/bench_overhead.py

clean:
	rm -rf build dist *.egg-info skcl/*.so demo_output
