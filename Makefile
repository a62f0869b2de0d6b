# Set-up and entry points. `make demo` and `make test` each create the virtual environment,
# install the pinned dependencies (dev extras for tests) and run; both are safe to repeat.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip --disable-pip-version-check
PIP_INSTALL := $(PIP) install --progress-bar off -q
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: demo test smoke install install-dev clean

$(VENV)/.stamp-base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -e .
	touch $@

$(VENV)/.stamp-dev: pyproject.toml $(VENV)/.stamp-base
	$(PIP_INSTALL) -e '.[dev]'
	touch $@

install: $(VENV)/.stamp-base
install-dev: $(VENV)/.stamp-dev

demo: install
	$(BIN)/gammaface run jobs/demo.yaml

smoke: install
	$(BIN)/gammaface run jobs/smoke.yaml

test: install-dev
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
