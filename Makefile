# RadPACS developer entry points. `make run` and `make test` work on a fresh
# Debian machine: they create the venv, install pinned deps and (for tests)
# the Debian packages they need.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# pyenv provides python3.11; fall back to python3 where that is the 3.11.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Touched after a successful install; pip runs again only when the deps change.
STAMP := $(VENV)/.installed
# The browser viewer, built by npm + Vite; rebuilt when its sources change.
VIEWER := frontend/dist/.built
VIEWER_SOURCES := frontend/package.json frontend/package-lock.json frontend/vite.config.js \
	$(wildcard frontend/src/*)
# Extra pytest arguments: make test ARGS="-k foo -x"
ARGS ?=

.PHONY: help install run test lint migrations-check lock

help:
	@echo "make install           create .venv, install pinned deps, build the viewer (no-op when up to date)"
	@echo "make run               migrate, load demo data, start the dev services"
	@echo "make test [ARGS=...]   lint + migrations check + pytest against a throw-away PostgreSQL"
	@echo "make lint              ruff check + ruff format --check"
	@echo "make migrations-check  fail when models have changes without migrations"
	@echo "make lock              regenerate requirements.lock from the venv"

install: $(STAMP) $(VIEWER)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml requirements.lock | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check -q -c requirements.lock -e '.[dev]'
	touch $@

$(VIEWER): $(VIEWER_SOURCES)
	scripts/build-viewer.sh

run: install
	scripts/run.sh

test: install
	scripts/test.sh $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

migrations-check: install
	$(BIN)/python manage.py makemigrations --check --dry-run

# Installs whatever pyproject.toml asks for that the venv lacks (without the
# old constraints, so a bumped pin can move), then freezes the venv.
lock: | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[dev]'
	$(BIN)/python -m pip freeze --disable-pip-version-check --exclude-editable \
		| { grep -v '^#' || true; } > requirements.lock.tmp
	mv requirements.lock.tmp requirements.lock
	touch $(STAMP)
