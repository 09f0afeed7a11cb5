# capsim: `make run` simulates the embedded default scenario; `make test` runs the test suite;
# `make lint` runs ruff and mypy; `make wheel-check` installs the built wheel outside the repo and runs it.
# `make native` compiles the engine's hot modules with mypyc into .native/ (optional, ~2x faster runs; needs a C
# compiler); `make native-clean` removes them.
# All create .venv (if missing) and install capsim into it first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.capsim-installed
DEV    := $(VENV)/.capsim-dev-installed

.PHONY: run test lint wheel-check bench install clean native native-clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,dask]"
	touch $(STAMP)

$(DEV): $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,dask]"
	touch $(DEV)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/capsim run --out out

test: $(STAMP)
	$(PY) -m pytest -n 2

lint: $(DEV)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

wheel-check: $(STAMP)
	.ci/wheel_check

bench: $(STAMP)
	$(PY) benchmarks/engine_speed.py

native: $(DEV)
	$(PY) tools/build_native.py

native-clean:
	$(PY) tools/build_native.py --clean

clean:
	rm -rf out .pytest_cache build dist
