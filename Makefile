# `make test` runs every check; README.md says what each needs. Nothing here assumes a
# pre-installed cluster: hack/local-cluster.sh installs and builds what is missing.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

.PHONY: help test demo demo-fleet toolchain fmt-check clippy unit crds crds-check integration cluster-up cluster-down bench fuzz

help:
	@echo "make demo          weir's whole job on the local cluster: a good release, a bad one rolled back in Git"
	@echo "                   ROUTER=istio, nginx, smi or alb: the same on that router (default gateway-api)"
	@echo "make demo-fleet    two clusters: staging gates production; a bad revision caught in staging never reaches production"
	@echo "make test          every check: fmt, clippy, unit tests, CRD drift, integration tests and the demo on the local cluster"
	@echo "make crds          regenerate crds/ and hack/crds/ from the Rust types"
	@echo "make cluster-up    start the local control plane (hack/local-cluster.sh up)"
	@echo "make cluster-down  stop it"
	@echo "make bench         criterion benchmarks, then the scale and latency harness on the local cluster (writes BENCHMARKS.md)"
	@echo "make fuzz          the hostile-input suite (src/hostile.rs) with many more cases, in the release build"

test: toolchain fmt-check clippy unit crds-check integration

# ROUTER: gateway-api (the default), istio, nginx, smi or alb.
ROUTER ?= gateway-api
demo:
	ROUTER=$(ROUTER) hack/demo.sh

demo-fleet:
	hack/demo-fleet.sh

toolchain:
	@cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
	@cargo clippy --version >/dev/null 2>&1 || rustup component add clippy

fmt-check:
	cargo fmt --check

clippy:
	cargo clippy --all-targets -- -D warnings

unit:
	cargo test --lib --bins

crds:
	cargo run --quiet --bin weir -- crds --dir crds --reference docs/crd-reference.md
	cargo run --quiet --bin weir-sim -- gateway-api-crds --dir hack/crds
	cargo run --quiet --bin weir-sim -- smi-crds --dir hack/crds
	cargo run --quiet --bin weir-sim -- istio-crds --dir hack/crds
	rm -f charts/weir/crds/*.yaml && cp crds/*.yaml charts/weir/crds/

crds-check:
	hack/check-crds.sh

integration:
	hack/integration-tests.sh

cluster-up:
	hack/local-cluster.sh up

cluster-down:
	hack/local-cluster.sh down

bench:
	hack/bench.sh

# WEIR_FUZZ_CASES cases per property (make test runs 48).
fuzz:
	WEIR_FUZZ_CASES=$${WEIR_FUZZ_CASES:-5000} cargo test --release --lib hostile
