# The two commands a newcomer runs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test lint typecheck compose-config bench clean

setup: $(STAMP)

# Plain pip; torch comes in pinned through constraints.txt (the CPU build on this machine's disk).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/coin demo

lint: $(STAMP)
	$(BIN)/ruff check auditor service api workers migrations tests bench
	$(BIN)/ruff format --check auditor service api workers migrations tests bench

typecheck: $(STAMP)
	$(BIN)/mypy auditor service api workers
	$(BIN)/lint-imports

# `docker compose config` must accept docker/compose.yaml; there is no Docker engine here, only the
# client, so the check installs Debian's docker-compose when no compose is present (CI runs as root).
compose-config:
	@if docker compose version >/dev/null 2>&1; then dc="docker compose"; \
	elif command -v docker-compose >/dev/null; then dc=docker-compose; \
	else apt-get update -qq && apt-get install -y -qq docker-compose >/dev/null && dc=docker-compose; fi; \
	$$dc -f docker/compose.yaml --env-file docker/example.env config --quiet && echo "compose.yaml: valid"

test: lint typecheck compose-config
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/merkle.py
	$(BIN)/python bench/commit.py
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache var build dist
