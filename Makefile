# Two entry points a new user needs: `make demo` (a real audit on the embedded default)
# and `make test` (the whole suite). Both create the virtual environment they need:
# `make demo` installs only the package itself (the demo needs no extra: digits ship with
# scikit-learn, the embedder is the identity), `make test` adds the dev and s3 extras.
# `make bench` runs every benchmarks/bench_*.py in turn (hours on 2 cores; rewrites the
# RESULTS_*.md); `make bench-quick` is a smoke run of minutes (results in a temporary dir).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
export OPENBLAS_NUM_THREADS ?= 1
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1

.PHONY: venv demo test test-all lint bench bench-quick clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints-cpu.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints-cpu.txt -e ".[dev,s3]"
	touch $(STAMP) $(DEMO_STAMP)

# the base package only; a venv made by `make venv`/`make test` (a superset) is reused
$(DEMO_STAMP): pyproject.toml constraints-cpu.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints-cpu.txt -e .
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/otaudit demo --out $(or $(OUT),./otaudit-demo)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-all: $(STAMP)  # also the @pytest.mark.slow end-to-end checks (tens of minutes on 2 cores)
	OTAUDIT_SLOW=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check lib flows tasks tests benchmarks deployments
	$(BIN)/ruff format --check lib flows tasks tests benchmarks deployments

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

bench-quick: $(STAMP)
	$(BIN)/python benchmarks/run_all.py --quick $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache otaudit-demo
