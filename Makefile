# Two commands on a fresh clone: `make demo` and `make test`; both install first when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install demo test test-fast lint format bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the project (editable) with the dev extra

demo: $(STAMP) ## the main job: distil MNv4 Conv-S on the embedded digits data, offline
	$(BIN)/python -m distill student=mnv4_conv_s

test: $(STAMP) ## the whole test suite (what CI runs)
	$(BIN)/pytest -q

test-fast: $(STAMP) ## the one-minute inner loop: everything not marked slow
	$(BIN)/pytest -q -m 'not slow'

lint: $(STAMP) ## ruff check + ruff format --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP) ## run every benchmark; results in bench/results/
	$(BIN)/python -m bench

clean: ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache
