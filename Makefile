# Every target installs what it needs; `make test` is what CI runs.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
VENV := .venv
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export SAM_CLI_TELEMETRY := 0
STATE_DIR := .sluice-local

.PHONY: help venv build build-all lint test demo fuzz dev dev-restart dev-down sam-build bench bench-local bench-engine bench-fleet bench-webhook clean

help:
	@echo "make demo         the main job on the local stack: four pushes, four verdicts"
	@echo "make test         every check and test (what CI runs)"
	@echo "make fuzz         libFuzzer on every parser of outside input (nightly; FUZZ_SECONDS per target)"
	@echo "make dev          start moto + sluice-local in the background; source $(STATE_DIR)/env"
	@echo "make dev-restart  restart sluice-local alone (same ports, same env file)"
	@echo "make dev-down     stop them"
	@echo "make sam-build    build every function of template.yaml with cargo-lambda (x86_64, into .aws-sam/x86_64)"
	@echo "make bench        every benchmark, written to BENCHMARKS.md"
	@echo "make bench-local  latency of invokes through sluice-local, and cold starts"
	@echo "make bench-engine reaction latency, DynamoDB requests per step, schedule drift"
	@echo "make bench-fleet  500 deployments at once, and the cost of a deployment"
	@echo "make bench-webhook a signed push to its first shift, hop by hop"

venv: $(STAMP)

# Pinned Python tools (moto, SAM CLI, cfn-lint, cargo-lambda, zig) in .venv.
$(STAMP): dev-requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --upgrade pip
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r dev-requirements.txt
	touch $@

# Integration tests run the workspace's binaries (sluice-local, the sample apps).
build:
	cargo build --workspace --bins

lint: venv
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	sam validate --lint --template template.yaml
	sam validate --lint --template examples/greeter/template.yaml
	cfn-lint template.yaml examples/greeter/template.yaml tests/fixtures/*.yaml

# The tests' dev-dependencies turn on more features of shared crates than the
# binaries alone need; built with every target at once, the binaries and the
# tests share one build of each crate, and `cargo test` compiles nothing again.
build-all:
	cargo build --workspace --all-targets

# Each integration test binary starts its own local stacks and mostly waits
# on them (function states, scaled timers, moto), so several binaries run side
# by side, the longest first; `-k` runs them all even when one fails, and
# make's exit status says whether any did. `--workspace` keeps the features of
# the build above, so nothing is compiled again.
INTEGRATION_TESTS := $(sort $(basename $(notdir $(wildcard tests/*.rs))) \
	$(notdir $(patsubst %/main.rs,%,$(wildcard tests/*/main.rs))))
LONGEST_TESTS := engine pipeline demo
TEST_JOBS ?= 3

test: lint build-all
	cargo test --workspace --lib --bins --examples
	cargo test --workspace --doc
	$(MAKE) --no-print-directory -k -j$(TEST_JOBS) --output-sync=target \
		$(addprefix test-,$(LONGEST_TESTS) $(filter-out $(LONGEST_TESTS),$(INTEGRATION_TESTS)))

test-%:
	cargo test --workspace --test $*

# The longest binary: its tests wait on state windows and scaled timers far
# more than they compute, so more of them run at once than there are cores.
test-engine: export RUST_TEST_THREADS := 4

# Starts its own local stack and stops it at the end (Ctrl-C too).
demo: venv build
	./target/debug/sluice-demo run

# make test runs the same targets on mutated samples (tests/fuzz.rs); this runs
# them under libFuzzer, which needs a nightly toolchain.
FUZZ_SECONDS ?= 60
fuzz:
	@rustup toolchain list | grep -q '^nightly' || { echo "make fuzz needs a nightly toolchain: rustup toolchain install nightly"; exit 1; }
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	for target in $$(cargo +nightly fuzz list); do \
		cargo +nightly fuzz run $$target -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

# The functions the local Sluice may deploy (template.yaml's ManagedFunctions):
# the greeter, its hooks and its worker (the example app's release group).
MANAGED_FUNCTIONS ?= greeter*

dev: venv build
	./target/debug/sluice-local start --state-dir $(STATE_DIR) --template template.yaml --artifacts target/debug --parameter 'ManagedFunctions=$(MANAGED_FUNCTIONS)'
	@echo "logs: $(STATE_DIR)/*.log"

dev-restart: build
	./target/debug/sluice-local restart --state-dir $(STATE_DIR)

dev-down:
	@if [ -x ./target/debug/sluice-local ]; then ./target/debug/sluice-local stop --state-dir $(STATE_DIR); fi

sam-build: venv
	sam build --build-dir .aws-sam/x86_64 --parameter-overrides Architecture=x86_64 ManagedFunctions=greeter

# The plot's packages (matplotlib) are for `make bench` alone.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): benches/requirements.txt $(STAMP)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r benches/requirements.txt
	touch $@

bench: venv $(BENCH_STAMP)
	cargo build --release --workspace --bins
	benches/report.sh

bench-local: venv
	cargo build --release -p greeter
	cargo bench -p sluice-local --bench invoke

bench-engine: venv
	cargo build --release -p sluice-local -p greeter
	cargo bench --bench engine

bench-fleet: venv $(BENCH_STAMP)
	cargo build --release -p sluice-local -p greeter -p recorder
	cargo bench --bench fleet
	python benches/plot_weights.py

bench-webhook: venv
	cargo build --release --workspace --bins
	cargo bench --bench webhook

clean: dev-down
	rm -rf $(STATE_DIR) .aws-sam
