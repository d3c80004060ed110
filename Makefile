# The one entry point: `make help` lists the targets.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-12s %s\n", $$1, $$2}'

.PHONY: install
install: ## Install eventtally (release build of the Rust core) with test, bench, dev, dask and dataframes extras
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ".[test,bench,dev,dask,dataframes]"

.PHONY: build-dev
build-dev: ## Rebuild the extension in place (debug profile: fast to compile, slow to run)
	$(PIP) install -q -e . --config-settings=build-args="--profile dev"

.PHONY: build-prod
build-prod: ## Rebuild the extension in place (release profile, LTO)
	$(PIP) install -q -e .

.PHONY: serve
serve: ## Run the server with the quick-start demo organization
	$(PYTHON) -m eventtally serve --demo

.PHONY: format
format: ## Format Rust and Python sources
	cargo fmt --all
	$(PYTHON) -m ruff format python tests benches
	$(PYTHON) -m ruff check --fix python tests benches

.PHONY: lint
lint: ## Lint: rustfmt and clippy (pedantic, configured in Cargo.toml), ruff
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(PYTHON) -m ruff check python tests benches
	$(PYTHON) -m ruff format --check python tests benches

.PHONY: typecheck
typecheck: ## mypy on the package and stubtest of the compiled module against _core.pyi
	$(PYTHON) -m mypy
	$(PYTHON) -m mypy.stubtest eventtally._core --allowlist .stubtest-allowlist

.PHONY: test-rust
test-rust: ## Unit tests of the pure-Rust core
	cargo test -p eventtally-core

.PHONY: test-python
test-python: ## pytest: unit, property, server and process tests; benchmarks as smoke tests
	$(PYTHON) -m pytest -q

.PHONY: test
test: install test-rust test-python ## Install what tests need, then run every test

.PHONY: bench
bench: ## Benchmarks with timing enabled (pytest-benchmark), then the one-run ratio scripts
	$(PYTHON) -m pytest benches -q --benchmark-enable --benchmark-only --benchmark-columns=min,median,ops
	$(PYTHON) benches/run_ingest.py
	$(PYTHON) benches/run_query.py
	$(PYTHON) benches/run_scale.py
