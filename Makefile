# Parcours — the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help run test test-unit test-integration test-e2e demo bench broker-jars clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

broker-jars: $(STAMP) ## fetch the Apache Kafka jars from Maven Central (cached under ~/.cache/parcours)
	$(BIN)/parcours broker fetch

run: $(STAMP) broker-jars ## the main job: the whole backbone on the embedded broker, seeded with the demo
	$(BIN)/parcours up

demo: $(STAMP) broker-jars ## run the demo scenario, print every structure's view, exit
	$(BIN)/parcours demo

test: $(STAMP) broker-jars ## every test tier (unit, integration on a real broker, e2e)
	$(BIN)/pytest -q tests

test-unit: $(STAMP) ## the fast pure tests only
	$(BIN)/pytest -q tests/unit

bench: $(STAMP) broker-jars ## print throughput and latency figures
	$(BIN)/parcours bench

clean: ## remove the virtual env and local broker data
	rm -rf $(VENV) .parcours
