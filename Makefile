# Set-up and the two entry points of the README: `make example` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
# torch is pinned to the CPU wheel that lies on these machines (see pyproject.toml).
TORCH := torch==2.13.0

.PHONY: example test install install-test services clean

$(PY):
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install $(TORCH)
	$(PIP) install -e '.[web]'
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(PIP) install -e '.[web,postgres,openai,llama,dev]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

## The main job: label the bundled example with the embedded defaults.
example: install
	$(VENV)/bin/duolabel run examples/support_tickets

## System services the tests use for real: PostgreSQL and Chromium (installed when missing).
services:
	@if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql chromium >/dev/null; \
	fi

## The whole test suite (unit, real model, real PostgreSQL, real browser).
test: install-test services
	$(PY) -m pytest

clean:
	rm -rf $(VENV) examples/*/duolabel.db* examples/*/out .pytest_cache
