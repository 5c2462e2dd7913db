# The two commands: `make demo` and `make test`. Each sets up everything it
# needs on a fresh machine (virtualenv, install, migrate) and can be run again.
# Then `make drill` (every anti-pattern against the example shop, measured),
# `make bench` (the benchmarks) and `make docs` (the documentation site).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo drill test venv services browser lint typecheck pytest docs wheel-check bench clean

demo: $(STAMP)
	$(BIN)/python -m example_project.run_demo

# DRILL_ARGS: --quick (seconds per run), --only <scenario>, --publish (charts into the docs).
drill: $(STAMP)
	$(BIN)/python manage.py stability_drill $(DRILL_ARGS)

test: $(STAMP) services lint typecheck pytest docs wheel-check
	@echo "make test: all green"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e ".[dev,bench]"
	touch $(STAMP)

venv: $(STAMP)

services: $(STAMP)
	@$(BIN)/python scripts/check_services.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The browser tests drive Debian's Chromium (never Playwright's own downloads).
CHROMIUM := /usr/bin/chromium

browser:
	@test -x $(CHROMIUM) || (apt-get update -qq && apt-get install -y -qq chromium)

pytest: $(STAMP) browser
	$(BIN)/pytest $(PYTEST_ARGS)

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir build/site

wheel-check: $(STAMP)
	rm -rf build/dist
	$(BIN)/python -m build --wheel --no-isolation --outdir build/dist . > build/wheel.log 2>&1 || (cat build/wheel.log; exit 1)
	$(BIN)/python scripts/check_wheel.py build/dist/*.whl

bench: $(STAMP) services
	$(BIN)/python benchmarks/run.py $(BENCH)

clean:
	rm -rf build dist *.egg-info example_project/db.sqlite3
