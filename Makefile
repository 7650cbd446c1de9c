# Everyday commands. `make run` and `make test` set up .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: run test test-fast check install clean i18n

$(BIN)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

install: $(BIN)/.installed

## Run the portal on the embedded default (SQLite + ./var) at http://127.0.0.1:8000 (another port: make run PORT=8123)
run: $(BIN)/.installed
	$(BIN)/portal serve --host 127.0.0.1 --port $(PORT)

## Run the whole test suite (PostgreSQL too when PORTAL_TEST_DATABASE_URL is set)
test: $(BIN)/.installed
	$(BIN)/python -m pytest

## Skip browser and load tests
test-fast: $(BIN)/.installed
	$(BIN)/python -m pytest -m "not browser and not load"

## Lint and type-check
check: $(BIN)/.installed
	$(BIN)/ruff check portal tests bench
	$(BIN)/mypy

## Extract messages, update the de and fr catalogues, compile them (commit the .po and .mo files)
i18n: $(BIN)/.installed
	$(BIN)/pybabel extract -F babel.cfg -k N_ -k gettext_noop --no-wrap --sort-by-file \
		--project clinic-share-portal --copyright-holder "" -o portal/locale/messages.pot .
	$(BIN)/pybabel update -i portal/locale/messages.pot -d portal/locale -D messages --no-wrap --ignore-obsolete
	$(BIN)/pybabel compile -d portal/locale -D messages --statistics

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache test-output
