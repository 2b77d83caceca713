# Two entry points: `make demo` runs the main job on the embedded default data,
# `make test` runs the test suite. Both create (or reuse) a local virtual
# environment in .venv with the package installed in editable mode.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint bench clean-venv

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(PY) tools/demo.py

test: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_ops.py

clean-venv:
	rm -rf $(VENV)
