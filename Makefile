# modeltrust developer commands. `make test` is the test command CI runs.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
TOOLS   := $(shell bash tests/cluster/build-tools.sh --print-bin-dir 2>/dev/null)
export PATH := $(TOOLS):$(PATH)

.PHONY: install tools tools-real-node node-deps lint test test-fast test-unit test-integration test-e2e cluster-up cluster-down demo bench image e2e-kind clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

KSERVE_VENV ?= $(HOME)/.cache/modeltrust/kserve-venv

install: $(BIN)/python $(KSERVE_VENV)/.installed  ## the Python components (editable) and dev tools, pinned
	$(BIN)/pip install --quiet -r requirements/dev.in -c requirements/constraints.txt

# KServe's SDK cannot share the dev environment's pins: its own virtualenv, for the
# off-the-shelf client test and the serving benchmark's KServe baseline.
$(KSERVE_VENV)/.installed: requirements/kserve.txt
	$(PY) -m venv $(KSERVE_VENV)
	$(KSERVE_VENV)/bin/pip install --quiet -r requirements/kserve.txt
	touch $@

tools:  ## the local control plane binaries (built once, cached by version)
	bash tests/cluster/build-tools.sh $(if $(filter real,$(MODELTRUST_CLUSTER)),--real-node)

tools-real-node:  ## also CoreDNS and the local images' binaries (the real-node mode)
	bash tests/cluster/build-tools.sh --real-node

node-deps:  ## Debian packages the real-node mode needs: containerd, runc, CNI plugins, nftables (root)
	bash tests/cluster/install-node-deps.sh

lint:  ## ruff, mypy --strict, and the layering of the four distributions (import-linter)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy chain/src serving/src operator/src cli/src tests $(wildcard bench/*.py)
	MYPYPATH=hack $(BIN)/mypy hack
	$(BIN)/lint-imports

test: install tools  ## unit, integration and e2e tests (e2e on a local control plane or $KUBECONFIG)
	$(BIN)/pytest

test-fast: tools  ## the inner loop: everything but the tests marked slow (scale, benchmarks, demo, chart, reliability)
	$(BIN)/pytest -m "not slow"

test-unit:
	$(BIN)/pytest -m unit

test-integration:
	$(BIN)/pytest -m integration

test-e2e: tools
	$(BIN)/pytest -m e2e

demo: install tools  ## the whole story on a local cluster: sign, register, roll out, refuse, audit (~15 s)
	$(BIN)/python hack/demo.py

cluster-up: tools  ## a local cluster (MODELTRUST_CLUSTER=real: real pods); prints how to use it
	PYTHONPATH=tests $(BIN)/python -m harness.cluster up

cluster-down:  ## stops the local cluster, whichever mode, and removes what it left
	PYTHONPATH=tests $(BIN)/python -m harness.cluster down

bench: install tools  ## every benchmark, full size: tables with ratios against references run alongside
	@for script in bench/*_bench.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

image:  ## the container image modeltrust:<appVersion> and its archive (Docker, else buildah; cached)
	bash hack/build-image.sh

e2e-kind:  ## chart + image + e2e suite on a throwaway kind cluster (needs Docker and kind)
	bash hack/e2e-kind.sh

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache
