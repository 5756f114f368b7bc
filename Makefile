# auditlog — every way to set up, run, test and benchmark the project. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help setup native tools jars go-deps witness prism run demo test test-unit test-integration golden lint bench bench-ingest bench-gateway bench-verify bench-query browser-deps \
        stack-up stack-down stack-status clean

help: ## list every target
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

tools: ## install missing system tools (Java 17, Maven, Go, PostgreSQL, Chromium, Node.js) from Debian's packages
	@infra/bootstrap.sh

# The virtualenv with the project and its dev tools (pytest, ruff, mypy): Python alone builds it
# (every package is a wheel or pure Python), so `make lint` needs no Java, Go or Chromium. Targets
# that run those tools ask for `tools` themselves.
$(INSTALLED): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

# The compiled event core (transforms/native: Rust, PyO3), built by maturin from the dev
# dependencies with cargo and installed into the virtualenv as `auditlog_native`. Needs cargo
# (rustup or Debian's); the crates come from crates.io at Cargo.lock's versions. Without it
# auditlog runs the Python reference (AUDITLOG_CORE=auto); `make native` is part of setup.
NATIVE := $(VENV)/.native
NATIVE_SOURCES := $(wildcard transforms/native/src/*.rs) transforms/native/Cargo.toml transforms/native/Cargo.lock \
                  transforms/native/pyproject.toml

native: $(NATIVE) ## build the compiled event core (Rust, maturin) into the virtualenv

$(NATIVE): $(INSTALLED) $(NATIVE_SOURCES)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pip install -q --no-build-isolation ./transforms/native
	$(PY) -c "from schemas.native import event_core; event_core('native')"
	@touch $@

jars: $(INSTALLED) | tools ## fetch the Kafka broker and Flink Kafka connector jars from Maven Central
	$(PY) -m infra.jars

go-deps: ## fetch the Go modules of the interop checks (sumdb/note, transparency-dev/merkle) and the load generator (grpc-go)
	go -C tests/interop/go mod download
	go -C tests/bench/loadgen mod download

browser-deps: tests/browser/node_modules/.installed ## playwright-core (npm) for the UI's browser tests; Chromium is Debian's

tests/browser/node_modules/.installed: tests/browser/package-lock.json | tools
	cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
	@touch $@

TORCHWOOD_VERSION := v0.6.1
WITNESS_BINS := .local/bin/litewitness .local/bin/witnessctl

witness: $(WITNESS_BINS) ## build the local witness: litewitness and witnessctl (filippo.io/torchwood) into .local/bin

$(WITNESS_BINS): | tools
	GOBIN=$(CURDIR)/.local/bin GOTOOLCHAIN=local go install filippo.io/torchwood/cmd/litewitness@$(TORCHWOOD_VERSION) filippo.io/torchwood/cmd/witnessctl@$(TORCHWOOD_VERSION)

# Beam's Prism runner, built from the Go module proxy at the version of the Beam SDK the virtualenv
# holds (apache-flink pins apache-beam); rebuilt whenever the two differ (`go version -m` names it).
PRISM_BIN := .local/bin/prism

prism: $(INSTALLED) | tools ## build Beam's Prism runner at the Python SDK's version into .local/bin (go install from the module proxy)
	@version=v$$($(PY) -c 'import apache_beam; print(apache_beam.__version__)') && \
	if go version -m $(PRISM_BIN) 2>/dev/null | grep -Eq "^\s+mod\s+github.com/apache/beam/sdks/v2\s+$$version\s"; then \
	  echo "$(PRISM_BIN) is Beam's Prism $$version"; \
	else \
	  echo "GOBIN=$(CURDIR)/.local/bin go install github.com/apache/beam/sdks/v2/go/cmd/prism@$$version"; \
	  GOBIN=$(CURDIR)/.local/bin GOTOOLCHAIN=local go install github.com/apache/beam/sdks/v2/go/cmd/prism@$$version; \
	fi

setup: $(INSTALLED) $(NATIVE) jars go-deps witness prism browser-deps ## install everything: virtualenv, Python packages, jars, Go modules, the witness, Prism, npm

HOME_DIR := $(or $(AUDITLOG_HOME),var)
AUDITLOG := $(PY) -m runners.cli

run: setup ## install everything and run the main job on the embedded default (Kafka → Flink → S3 + chDB)
	$(AUDITLOG) stack up kafka s3 witness
	$(AUDITLOG) produce --events 20000 --tenants 5 --duplicates 0.02 --malformed 0.01 --seed 42
	$(AUDITLOG) ingest --bounded
	$(AUDITLOG) search --tenant t_1000 --limit 5
	$(AUDITLOG) proof --tenant t_1000 $$($(AUDITLOG) search --tenant t_1000 --limit 1 --ids) --out $(HOME_DIR)/proof
	$(AUDITLOG) verify-proof $(HOME_DIR)/proof --key $(HOME_DIR)/keys/auditlog.local.vkey \
	  --witness $(HOME_DIR)/witness/witness.vkey --min-witnesses 1
	$(AUDITLOG) verify
	@echo "The stack keeps running (auditlog stack status); stop it with: make stack-down"

demo: $(INSTALLED) ## the verifiable-log core in one process: build logs, sign, prove, verify
	$(PY) -m runners.cli demo

test: setup ## every test: unit, interop, and the real-service tests (they start and stop the stack)
	$(PY) -m pytest $(PYTEST_ARGS) tests

test-unit: $(INSTALLED) $(NATIVE) | tools ## the pure-core tests only (seconds; the UI verifier's run under node)
	$(PY) -m pytest -q tests/unit

test-integration: setup ## only the tests against the real local stack
	$(PY) -m pytest -m integration $(PYTEST_ARGS) tests

golden: setup ## regenerate the committed recording's golden heads (only when logs are meant to change)
	$(PY) -m tests.golden regenerate

lint: $(INSTALLED) ## ruff (lint, format) over the repository, mypy --strict over every package (needs only Python)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(INSTALLED) $(NATIVE) ## benchmarks of the core (a table; not a test), the compiled core against the Python reference
	$(PY) tests/bench/bench_core.py

bench-ingest: setup ## end-to-end ingest events/s, with and without hashing/signing, and p50/p99 latency
	$(PY) tests/bench/bench_ingest.py

bench-verify: setup ## events verified/s by `auditlog verify` over 1,000,000 events (archive + ClickHouse)
	$(PY) tests/bench/bench_verify.py

bench-query: setup ## auditlog serve: proofs from tiles (16 in flight) and searches (50), req/s, p50/p99, RSS; 1M and 10M events; archive bytes per event
	$(PY) tests/bench/bench_query.py
	$(PY) tests/bench/bench_archive.py

bench-gateway: setup ## gRPC gateway requests/s and events/s (unary, batched) with p50/p99, outbox forwarder events/s
	$(PY) tests/bench/bench_gateway.py

stack-up: setup ## start Kafka, SeaweedFS S3 (Object Lock) and a Flink cluster on 127.0.0.1
	$(PY) -m runners.cli stack up

stack-down: ## stop every service of the local stack
	$(PY) -m runners.cli stack down

stack-status: ## show each service, its address and where its log is
	$(PY) -m runners.cli stack status

clean: stack-down ## stop the stack and remove all local data (var/)
	rm -rf var
