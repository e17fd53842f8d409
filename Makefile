# Two commands for a fresh machine: `make demo` and `make test`. Each installs what is missing
# into ./.venv first (torch comes from the machine's local wheels), then runs in a loopback-only
# network namespace where the machine allows one (scripts/hermetic.sh): the install needs the
# package registries, the suite and the demo must never send a packet off the machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
HERMETIC := scripts/hermetic.sh

.PHONY: install demo test lint bench clean-demo system-deps emoji-assets reliability-doc config-doc

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel setuptools
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

# Debian packages some tests need (headless Chromium renders the stats report).
system-deps:
	@bash scripts/system_deps.sh

# Emoji artwork for the real-pixel pool (curate.emoji): npm packages and a Debian font.
emoji-assets:
	@VENV=$(VENV) bash scripts/emoji_assets.sh

demo: install emoji-assets
	$(HERMETIC) $(PY) -m curate.demo

test: install system-deps emoji-assets
	$(VENV)/bin/ruff check curate tests benchmarks
	$(HERMETIC) $(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check curate tests benchmarks
	$(VENV)/bin/ruff format --check curate tests benchmarks || true

reliability-doc: install
	CURATE_RELIABILITY_OUT=docs/reliability.md $(HERMETIC) $(PY) -m pytest -q -m fault

# docs/config.md from the config models (tests/test_docs_config.py checks it is current).
config-doc: install
	$(PY) -m curate.docs_config

clean-demo:
	rm -rf demo_out
