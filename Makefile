# rotor — the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
# Build output lives in the cache so a second `make test` on a fresh clone is fast.
CARGO_TARGET_DIR ?= $(HOME)/.cache/rotor/target
export CARGO_TARGET_DIR

.PHONY: test deps envtest lint unit-test integration-test demo crd check-crd chart-docs build bench

## test: install everything needed, then fmt check, clippy, unit and integration tests
test: deps envtest lint check-crd
	KUBEBUILDER_ASSETS="$$(hack/envtest.sh)" cargo test --all-targets --locked
	hack/check-static.sh

## demo: local kube-apiserver + etcd, the CRD, the operator, a sample rotating
demo: deps envtest build
	hack/demo.sh

## bench: rotor-bench — vault and schedule speed, the operator at scale (prints numbers)
bench: deps envtest
	KUBEBUILDER_ASSETS="$$(hack/envtest.sh)" cargo bench --locked --bench rotor-bench

deps:
	hack/deps.sh

envtest:
	@hack/envtest.sh >/dev/null

lint:
	cargo fmt --all --check
	cargo clippy --all-targets --locked -- -D warnings

build:
	cargo build --locked

# The chart's copy is not in its crds/ (Helm never upgrades those): its template
# templates/crd-secretrotation.yaml reads it, so `helm upgrade` upgrades the CRD.
CRD_COPIES := crds/secretrotation.yaml config/crd/secretrotation.yaml charts/rotor/files/secretrotation.yaml

## crd: regenerate the CRD (crds/, config/crd/, charts/rotor/files/) from the Rust types
crd:
	cargo run -q --locked -- crd > crds/secretrotation.yaml
	cp crds/secretrotation.yaml config/crd/secretrotation.yaml
	cp crds/secretrotation.yaml charts/rotor/files/secretrotation.yaml

check-crd:
	@for f in $(CRD_COPIES); do cargo run -q --locked -- crd | diff -u $$f - \
	  || { echo "$$f is stale: run 'make crd'"; exit 1; }; done

## chart-docs: regenerate charts/rotor/README.md from values.yaml's `# --` comments
## (a test in `make test` fails when it is stale)
chart-docs: deps
	"$${ROTOR_PYTHON:-$${ROTOR_CACHE:-$$HOME/.cache/rotor}/venv/bin/python}" hack/chart-docs.py
