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

.PHONY: install demo test test-fast lint bench bench-overhead bench-kernels clean docs

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

# Everything but the protocol-size runs (tests marked slow); make test runs them all.
test-fast: lint
	$(PY) -m pytest -m "not slow"

# The committed benchmark report: every estimator on main (and sklearn's SGD and MLP)
# over split-digits and permuted-digits, 3 seeds, PROTOCOL.md settings with the
# per-family ones of benchmarks/bench_methods.py; every estimator with a TUNING grid there
# also gets a row tuned on the first 3 tasks' validation data and a labelled oracle row
# (tuned on test data, shown apart). BENCH_ARGS= (empty) resumes an
# interrupted run instead of starting over; BENCH_OUT=DIR writes elsewhere.
BENCH_ARGS ?= --restart
BENCH_OUT ?= benchmarks/results
bench: $(STAMP)
	$(VENV)/bin/skcl bench --estimators all --streams split-digits,permuted-digits \
		--scenarios class,task --seeds 0,1,2 --epochs 5 \
		--settings benchmarks/bench_methods.py --tune first-tasks --tune-tasks 3 \
		--out $(BENCH_OUT) $(BENCH_ARGS)

# The documentation site (docs/, gallery from examples/), warnings as errors.
# Installs the `docs` extra without reinstalling skcl. Pages: docs/_build/html/index.html.
DOCS_STAMP := $(VENV)/.skcl-docs-installed
$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(PY) docs/requirements.py > $(VENV)/docs-requirements.txt
	$(PY) -m pip install -r $(VENV)/docs-requirements.txt
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(PY) -m sphinx -b html -W --keep-going -q docs docs/_build/html

bench-overhead: $(STAMP)
	$(PY) benchmarks/bench_overhead.py

clean:
	rm -rf build dist *.egg-info skcl/*.so demo_output docs/_build docs/generated docs/auto_examples docs/api.rst docs/sg_execution_times.rst
