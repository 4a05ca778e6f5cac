# tracemeter developer commands. `make test` is the project's test command (CI runs it).
SHELL := /bin/bash
VENV := .venv

.PHONY: venv test lint validate docs goldens run build serve watch invoke lambda-check sam-build deploy-check deploy bench chaos soak fuzz

## venv: create .venv and install the Python tools (moto, cfn-lint, aws-sam-cli, cargo-lambda)
venv:
	dev/venv.sh

## test: template checks and every Rust test, offline against moto on 127.0.0.1
test:
	dev/test.sh

## lint: formatting, clippy with warnings as errors, and the shape check (files <= 500 lines, fns <= 80)
lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	dev/shape.py

## validate: cfn-lint and `sam validate --lint` on template.yaml (offline)
validate:
	dev/validate.sh

## docs: regenerate docs/configuration.md's reference from template.yaml and shared/src/config/catalog.rs
docs:
	. dev/aws-env.sh && TRACEMETER_WRITE_DOCS=1 cargo test -q -p tracemeter-tests --test it -- docs::the_configuration_reference

## goldens: record the requests the official SDKs send (tests/goldens; see docs/conformance.md)
goldens: venv
	$(VENV)/bin/python dev/goldens.py

## run: the local stack (moto, fakes, ingest on a schedule, the SQS event source mapping): TRACES=N (250)
run: venv
	dev/run.sh

## build: release bootstraps of both functions with cargo-lambda + zig (target/lambda/*/bootstrap).
##   ARCH=arm64 (default, what template.yaml deploys) needs `rustup target add aarch64-unknown-linux-gnu`;
##   ARCH=x86_64 builds for this machine (local invoke, or deploy with the same ARCH).
ARCH ?= arm64
build: venv
	dev/lambda.sh build $(ARCH)

## serve: keep the local stack up (moto, fakes, seeded fixture traces) for watch/invoke; Ctrl-C stops it
serve:
	dev/serve.sh

## watch: `cargo lambda watch` on 127.0.0.1:9000 with the environment `make serve` wrote
watch: venv
	dev/lambda.sh watch

## invoke: FN=ingest|process EVENT=events/... (defaults: ingest, events/scheduled.json)
FN ?= ingest
EVENT ?= $(if $(filter process,$(FN)),events/sqs-batch.json,events/scheduled.json)
invoke: venv
	dev/lambda.sh invoke $(FN) $(EVENT)

## lambda-check: serve + watch + invoke of both functions with the events/ fixtures, checked (part of make test)
lambda-check:
	dev/lambda-check.sh

## sam-build: `sam build` (cargo-lambda) for ARCH, offline
sam-build: venv
	dev/lambda.sh sam-build $(ARCH)

## deploy-check: docs/deploying.md's offline commands as the guide has them (sam build, cfn-lint of .aws-sam/build/template.yaml; part of make test)
deploy-check: venv
	dev/deploy-check.sh

## deploy: `sam build` + `sam deploy --guided` for ARCH (needs AWS credentials: the only target that leaves loopback)
deploy: venv
	dev/lambda.sh deploy $(ARCH)

## bench: the benchmark (release bootstraps, counting proxy, fakes); TRACES=1000|10000|40000, see dev/bench.sh
bench: venv
	dev/bench.sh

## chaos: the reliability suite alone (part of make test): CHAOS_TRACES (300), CHAOS_RATE (0.1), see dev/chaos.sh
chaos: venv
	dev/chaos.sh

## soak: fuzz the Langfuse parsers (FUZZ_SECONDS, 60), then the suite with 20,000 traces at 12 % faults per boundary
soak: venv
	dev/soak.sh

## fuzz: the fuzz targets (Langfuse parsers, the command's argument parsers) for FUZZ_SECONDS (60) each; needs nightly
fuzz:
	dev/fuzz.sh
