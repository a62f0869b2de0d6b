# Set-up and entry points. `make demo` and `make test` each create the virtual environment,
# install the pinned dependencies (dev extras for tests) and run; both are safe to repeat.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip --disable-pip-version-check
PIP_INSTALL := $(PIP) install --progress-bar off -q
# uv installs the lock: on 2 cores about 1 min where pip takes about 4 (parallel downloads, and
# bytecode compiled in parallel up front, which the first imports of every Ray worker need)
UV_VERSION := 0.13.9
UV_INSTALL := $(BIN)/uv pip install -q --python $(BIN)/python --compile-bytecode
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: demo test check smoke install install-dev clean lock

# every version comes from requirements.lock (pyproject.toml keeps the ranges it was made from)
$(VENV)/.stamp-uv:
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) uv==$(UV_VERSION)
	touch $@

$(VENV)/.stamp-base: pyproject.toml requirements.lock $(VENV)/.stamp-uv
	$(UV_INSTALL) -c requirements.lock -e .
	touch $@

$(VENV)/.stamp-dev: pyproject.toml requirements.lock $(VENV)/.stamp-base
	$(UV_INSTALL) -c requirements.lock -e '.[dev]'
	touch $@

# rewrite requirements.lock from a fresh install of pyproject.toml's ranges (after changing them)
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --disable-pip-version-check --progress-bar off -q -e '.[dev]'
	{ head -n 2 requirements.lock; .lock-venv/bin/pip freeze --exclude-editable; } > requirements.lock.new
	mv requirements.lock.new requirements.lock && rm -rf .lock-venv

install: $(VENV)/.stamp-base
install-dev: $(VENV)/.stamp-dev

# the demo's fair dataset, handed over as a Hugging Face imagefolder with its card (made anew
# each time: export refuses a folder that exists)
DEMO_EXPORT := runs/demo/export/quota_adaptive

demo: install
	$(BIN)/gammaface run jobs/demo.yaml
	rm -rf $(DEMO_EXPORT)
	$(BIN)/gammaface export jobs/demo.yaml --method quota_adaptive --out $(DEMO_EXPORT)

smoke: install
	$(BIN)/gammaface run jobs/smoke.yaml

# the type checker (about 30 s of one core) runs beside the suite, which leaves a core idle about
# a quarter of its time (processes starting, tests waiting on them); its report follows the
# suite's, and either failing fails the target
test: install-dev
	@$(BIN)/mypy > .mypy-report 2>&1 & checker=$$!; \
	$(BIN)/python -m pytest; suite=$$?; \
	wait $$checker; types=$$?; cat .mypy-report; rm -f .mypy-report; \
	test $$suite -eq 0 -a $$types -eq 0

# the inner loop: lint, the import contracts, the type checker and the tests that start no
# pipeline (minutes)
check: install-dev
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python -m pytest -m "not e2e and not pipeline"

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis .mypy_cache
