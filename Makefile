# The two commands a newcomer runs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test lint typecheck compose-config chromium bench resilience clean

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
	$(BIN)/mypy auditor service api workers migrations bench tests
	$(BIN)/lint-imports

# `docker compose config` must accept docker/compose.yaml; there is no Docker engine here, only the
# client, so the check installs Debian's docker-compose when no compose is present (CI runs as root).
compose-config:
	@if docker compose version >/dev/null 2>&1; then dc="docker compose"; \
	elif command -v docker-compose >/dev/null; then dc=docker-compose; \
	else apt-get update -qq && apt-get install -y -qq docker-compose >/dev/null && dc=docker-compose; fi; \
	$$dc -f docker/compose.yaml --env-file docker/example.env config --quiet && echo "compose.yaml: valid"

# The browser tests (tests/browser) drive Debian's Chromium with Playwright, never a browser that
# Playwright downloads; it is installed here when missing, like compose-config's client (CI runs as root).
chromium:
	@test -x /usr/bin/chromium || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
	@/usr/bin/chromium --version 2>/dev/null

# Then the resilience suite's short form (3 trials of each fault, 20 s of load): its last line is its
# figures.
test: lint typecheck compose-config chromium
	$(BIN)/python -m pytest -q
	$(BIN)/python bench/resilience.py --short

# The full resilience suite: 20 trials of each fault, 10 min at 200 reports/s, schemathesis (about
# 25 min: 22 and 27 min in the runs docs/benchmarks.md records).
resilience: $(STAMP)
	$(BIN)/python bench/resilience.py

bench: $(STAMP)
	$(BIN)/python bench/merkle.py
	$(BIN)/python bench/commit.py
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache var build dist
