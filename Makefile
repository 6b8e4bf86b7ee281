# schemahub: `make demo` and `make test` are the two commands a newcomer needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

NODE_STAMP := node_modules/.installed
LAYERS_STAMP := layers/build/.built
CDK_CLI := aws-cdk@2.1148.1
export CDK_DISABLE_CLI_TELEMETRY := true
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20

.PHONY: install install-runtime test lint bench demo run clean layers synth deploy

install: $(STAMP)

# Everything: tests, lint, the CDK app (about 1.1 GB).
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP) $(RUNTIME_STAMP)

# Only what the CLI and the Python API need (pyproject.toml's dependencies, at the versions the requirements
# files pin): no CDK, moto or cfn-lint. `make demo` and `make run` use this.
RUNTIME_STAMP := $(VENV)/.installed-runtime
RUNTIME_PINS = $(shell grep -hE '^(duckdb|pytz)==' requirements-dev.txt | cut -d' ' -f1)

install-runtime: $(RUNTIME_STAMP)

$(RUNTIME_STAMP): requirements.txt pyproject.toml setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements.txt -e . $(RUNTIME_PINS)
	touch $(RUNTIME_STAMP)

$(NODE_STAMP): package.json package-lock.json
	npm ci --silent --no-audit --no-fund
	touch $@

# Lambda layers for manylinux x86_64 / CPython 3.12, from requirements.txt (no Docker needed).
$(LAYERS_STAMP): requirements.txt cdk_app/package.py | $(STAMP)
	$(BIN)/python cdk_app/package.py layers
	touch $@

layers: $(LAYERS_STAMP)

# CDK_DEFAULT_REGION (or AWS_REGION) names the target region: synth warns for a region that a seeded
# exchange geo-blocks (Binance refuses US IPs).
synth: install layers
	CDK_OUTDIR=cdk.out CDK_DEFAULT_REGION=$${CDK_DEFAULT_REGION:-$$AWS_REGION} $(BIN)/python cdk_app/app.py
	@echo "template: cdk.out/Schemahub.template.json"

# Non-interactive (CI, scripts): no approval prompt. The first deploy pins first_date in cdk.json.
deploy: install layers
	$(BIN)/python cdk_app/app.py pin-first-date
	npx --yes $(CDK_CLI) deploy Schemahub --require-approval never $(if $(ALARM_EMAIL),-c alarm_email=$(ALARM_EMAIL))

test: install $(NODE_STAMP) $(LAYERS_STAMP)
	$(BIN)/ruff check --select F functions tests bench cdk_app
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

lint: install
	$(BIN)/ruff check functions tests bench

bench: install
	$(BIN)/python bench/bench_ingest.py
	$(BIN)/python bench/bench_transform.py
	$(BIN)/python bench/bench_query.py
	$(BIN)/python bench/bench_archive.py

clean:
	rm -rf $(VENV) data demo-data .pytest_cache node_modules layers/build build cdk.out

demo: install-runtime
	$(BIN)/schemahub demo

run: install-runtime
	$(BIN)/schemahub run
