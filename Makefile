# Parcours — the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: system-deps help lock run test test-unit test-integration test-e2e lint demo bench broker-jars fhir-validator asyncapi-tools clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

# the packages exactly as locked (hashes checked), then the project itself on top, without resolving again
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

LOCK_VENV := build/lock-venv
LOCK_FLAGS := --quiet --upgrade --allow-unsafe --generate-hashes --no-emit-index-url --no-emit-find-links --strip-extras

lock: ## re-pin every Python package (with hashes) to the newest within pyproject.toml's ranges: requirements.lock (all, tests included) and requirements-runtime.lock (the image's share, same versions)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet 'pip-tools>=7.4,<8'
	CUSTOM_COMPILE_COMMAND='make lock' $(LOCK_VENV)/bin/pip-compile $(LOCK_FLAGS) --extra=test --output-file=requirements.lock pyproject.toml
	grep -E '^[A-Za-z0-9_.-]+==' requirements.lock | sed 's/ .*//' > $(LOCK_VENV)/pins.txt
	CUSTOM_COMPILE_COMMAND='make lock' $(LOCK_VENV)/bin/pip-compile $(LOCK_FLAGS) --constraint=$(LOCK_VENV)/pins.txt \
	  --output-file=requirements-runtime.lock pyproject.toml

system-deps: ## Debian packages: Java and Maven (the broker), prometheus (promtool and the scrape test), wrk (the bench's load), Node.js and npm (the AsyncAPI parser)
	@missing=""; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	command -v promtool >/dev/null && command -v prometheus >/dev/null || missing="$$missing prometheus"; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	command -v npm >/dev/null && command -v node >/dev/null || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
	  echo "installing from Debian:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	fi

ASYNCAPI_TOOLS := tools/asyncapi/node_modules/.installed

$(ASYNCAPI_TOOLS): tools/asyncapi/package.json tools/asyncapi/package-lock.json
	cd tools/asyncapi && npm ci --no-audit --no-fund --loglevel=error
	touch $(ASYNCAPI_TOOLS)

asyncapi-tools: $(ASYNCAPI_TOOLS) ## the official AsyncAPI parser (npm, pinned by package-lock.json) for the document's test

broker-jars: $(STAMP) ## fetch the Apache Kafka jars from Maven Central (cached under ~/.cache/parcours)
	$(BIN)/parcours broker fetch

# HAPI FHIR's validator for the conformance tier (tests/conformance): the closure of its pom, in a
# folder named by the pom's digest (a changed pom, a new folder), fetched once
FHIR_VALIDATOR_POM := tools/fhir-validator/pom.xml
FHIR_VALIDATOR_LIB = $(HOME)/.cache/parcours/fhir-validator-$(shell sha256sum $(FHIR_VALIDATOR_POM) | cut -c1-12)/lib

fhir-validator: ## fetch HAPI FHIR's validator (hapi-fhir-validation 8.6.5, base R4 definitions) from Maven Central (cached under ~/.cache/parcours)
	@lib="$(FHIR_VALIDATOR_LIB)"; if [ ! -f "$$lib/.complete" ]; then \
	  rm -rf "$$lib.partial" && \
	  mvn -B -q -f $(FHIR_VALIDATOR_POM) org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
	    -DincludeScope=runtime -DoutputDirectory="$$lib.partial" && \
	  rm -rf "$$lib" && mv "$$lib.partial" "$$lib" && touch "$$lib/.complete"; fi

run: system-deps $(STAMP) broker-jars ## the main job: the whole backbone on the embedded broker, seeded with the demo
	$(BIN)/parcours up

demo: $(STAMP) broker-jars ## run the demo scenario, print every structure's view, exit
	$(BIN)/parcours demo

test: system-deps $(STAMP) broker-jars fhir-validator asyncapi-tools lint ## lint, then every test tier (unit, integration on a real broker, e2e, FHIR conformance)
	$(BIN)/pytest -q -n 2 --dist loadfile --durations=25 tests

test-unit: $(STAMP) ## the fast pure tests only
	$(BIN)/pytest -q tests/unit

lint: $(STAMP) ## ruff (rules in pyproject.toml) and mypy --strict with the pydantic plugin
	$(BIN)/ruff check services tests
	$(BIN)/mypy

bench: $(STAMP) broker-jars ## print throughput and latency figures
	$(BIN)/parcours bench

clean: ## remove the virtual env and local broker data
	rm -rf $(VENV) .parcours
