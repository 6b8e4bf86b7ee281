# schemahub: `make demo` and `make test` are the two commands a newcomer needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint bench demo run clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

test: install
	$(BIN)/ruff check --select F functions tests bench
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

lint: install
	$(BIN)/ruff check functions tests bench

bench: install
	$(BIN)/python bench/bench_ingest.py
	$(BIN)/python bench/bench_transform.py
	$(BIN)/python bench/bench_query.py

clean:
	rm -rf $(VENV) data demo-data .pytest_cache

demo: install
	$(BIN)/python -m schemahub.cli demo

run: install
	$(BIN)/python -m schemahub.cli run
