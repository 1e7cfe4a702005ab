# The two commands a newcomer needs (see README): `make demo` and `make test`.
# Build outputs live outside the clone so CI and later sessions reuse them.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/karpctl-target
export CARGO_TERM_COLOR ?= never

.PHONY: demo test lint unit sandbox-up sandbox-down

## The main job end to end on the local sandbox: karpctl init, the controller, a NodePool and
## a pause Deployment scaled 0 -> 5 -> 12, and which instance types were chosen at what $/hour.
demo:
	examples/demo/run.sh

## Every test: formatting, lints, the sandbox's own tests, then all Rust tests (unit and
## integration) against the running sandbox.
test: lint sandbox-up
	sandbox/sandbox selftest
	cargo test --workspace --locked

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

sandbox-up:
	sandbox/sandbox up

sandbox-down:
	sandbox/sandbox down
