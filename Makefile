# Two commands on a fresh clone: `make demo` and `make test`; both install first when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# moto's S3 server for the tests (testkit/servers.py), in its own environment: boto pins
# python-dateutil<3, which the project's environment does not need to share
S3_VENV := .venv-s3
S3_STAMP := $(S3_VENV)/.installed
MOTO := moto[server]>=5.1,<6

.DEFAULT_GOAL := help
.PHONY: help install demo test test-fast lint format bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev]'
	touch $(STAMP)

$(S3_STAMP):
	$(PYTHON) -m venv $(S3_VENV)
	$(S3_VENV)/bin/pip install '$(MOTO)'
	touch $(S3_STAMP)

install: $(STAMP) $(S3_STAMP) ## create .venv and install the project (editable) with the dev extra; .venv-s3: the tests' S3 server

demo: $(STAMP) ## the main job: distil MNv4 Conv-S on the embedded digits data, offline
	$(BIN)/python -m distill student=mnv4_conv_s

test: $(STAMP) $(S3_STAMP) ## the whole test suite (what CI runs)
	$(BIN)/pytest -q

test-fast: $(STAMP) $(S3_STAMP) ## the one-minute inner loop: everything not marked slow
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
	rm -rf $(VENV) $(S3_VENV) .pytest_cache .ruff_cache
