# The two commands a new machine needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-unit test-integration test-docker lint typecheck bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	# The CPU build of torch that lies on these machines' disk; other specs may download GBs.
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/taas up

test: $(STAMP) lint typecheck
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit tests/test_compose.py

test-integration: $(STAMP)
	$(BIN)/python -m pytest -q -m integration

# Builds the images and runs the compose stack end to end (root: it may start dockerd).
test-docker: $(STAMP)
	VENV=$(VENV) bash tests/docker/run.sh

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
