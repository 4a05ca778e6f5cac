# tracemeter developer commands. `make test` is the project's test command (CI runs it).
SHELL := /bin/bash
VENV := .venv

.PHONY: venv test lint validate run build

## venv: create .venv and install the Python tools (moto, cfn-lint, aws-sam-cli, cargo-lambda)
venv:
	dev/venv.sh

## test: template checks and every Rust test, offline against moto on 127.0.0.1
test:
	dev/test.sh

## lint: formatting and clippy with warnings as errors
lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

## validate: cfn-lint and `sam validate --lint` on template.yaml (offline)
validate:
	dev/validate.sh

## run: the local stack (moto, fakes, ingest on a schedule, the SQS event source mapping)
run: venv
	dev/run.sh

## build: release binaries for Lambda (provided.al2023, arm64) with cargo-lambda + zig
build: venv
	@rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu || { \
	  echo "make build: the Rust target aarch64-unknown-linux-gnu is not installed;" \
	       "run: rustup target add aarch64-unknown-linux-gnu" >&2; exit 1; }
	. dev/aws-env.sh && PATH="$(CURDIR)/$(VENV)/bin:$$PATH" cargo lambda build --release --arm64
