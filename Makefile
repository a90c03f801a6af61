# modeltrust developer commands. `make test` is the test command CI runs.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
TOOLS   := $(shell bash tests/cluster/build-tools.sh --print-bin-dir 2>/dev/null)
export PATH := $(TOOLS):$(PATH)

# `make wheels`: wheels of PARTS and of every dependency (pinned by the dev lock) into
# WHEELS, to install elsewhere with `pip install --no-index --find-links` (docs/install.md).
PARTS   ?= chain serving operator cli
WHEELS  ?= dist/wheels

.PHONY: install wheels lock-runtime tools tools-real-node node-deps lint test test-fast test-kwok test-real test-unit test-integration test-e2e test-real-pods cluster-up cluster-down demo bench image e2e-kind clean

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

wheels:  ## wheels of PARTS (default: all four components) and their dependencies into WHEELS (dist/wheels)
	$(PY) -m pip wheel --wheel-dir $(WHEELS) --constraint requirements/constraints.txt $(addprefix ./,$(PARTS))

lock-runtime:  ## regenerate requirements/runtime.txt, the image's hash-locked dependencies (pip-compile)
	bash hack/lock-runtime.sh

tools:  ## the local control plane binaries (built once, cached by version)
	bash tests/cluster/build-tools.sh $(if $(filter real,$(MODELTRUST_CLUSTER)),--real-node)

tools-real-node:  ## also CoreDNS and the local images' binaries (the real-node mode)
	bash tests/cluster/build-tools.sh --real-node

node-deps:  ## Debian packages the real-node mode and the tests need: containerd, runc, CNI plugins, nftables, postgresql (root)
	bash tests/cluster/install-node-deps.sh

lint:  ## ruff, mypy --strict, and the layering of the four distributions (import-linter)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy chain/src serving/src operator/src cli/src tests $(wildcard bench/*.py)
	MYPYPATH=hack $(BIN)/mypy hack
	$(BIN)/lint-imports

# `make test` = test-kwok, then test-real (both run even if the first fails; either failing
# fails the target). The real-pod tests and tests/e2e/test_real_node.py start real-node
# clusters of their own in test-kwok, so they need the image and the real-node tools too.
test: install tools-real-node image  ## the whole suite on kwok, then the e2e suite on real pods
	@rc=0; \
	$(MAKE) --no-print-directory test-kwok || rc=1; \
	$(MAKE) --no-print-directory test-real || rc=1; \
	exit $$rc

test-kwok:  ## every test; e2e on a kwok control plane (real_pods tests on a real-node cluster)
	@echo "== make test-kwok: every test, e2e on kwok (real_pods on a real-node cluster)"
	MODELTRUST_CLUSTER=kwok $(BIN)/pytest

# test_real_node.py starts real-node clusters of its own whatever the mode: once (test-kwok) is enough.
test-real:  ## the e2e suite again with real pods (MODELTRUST_CLUSTER=real; real_pods ran in test-kwok)
	@echo "== make test-real: the e2e suite on a real-node cluster"
	# Not again: the real-node harness tests, the quick start's and the benchmarks' quick runs
	# start clusters of their own (real-node, and private kwok ones), whatever
	# MODELTRUST_CLUSTER says.
	MODELTRUST_CLUSTER=real $(BIN)/pytest -m "e2e and not real_pods" \
		--ignore=tests/e2e/test_real_node.py --ignore=tests/e2e/test_quickstart.py \
		--ignore=tests/bench

test-fast: tools  ## the inner loop: everything but the tests marked slow (scale, benchmarks, demo, chart, reliability)
	$(BIN)/pytest -m "not slow"

test-unit:
	$(BIN)/pytest -m unit

test-integration:
	$(BIN)/pytest -m integration

test-e2e: tools-real-node  ## e2e only (the real_pods tests and test_real_node.py need the real-node tools)
	$(BIN)/pytest -m e2e

test-real-pods: install tools-real-node image  ## only the real-pod tests (tests/e2e/test_real_pods.py)
	$(BIN)/pytest -m real_pods

# REAL=1: real pods (a kubelet and containerd; root), ending with an inference through the
# model's Service (~2 min with the image and tools cached).
demo: install $(if $(REAL),tools-real-node image,tools)  ## the whole story on a local cluster: sign, register, roll out, refuse, audit (~15 s; REAL=1: real pods)
	$(BIN)/python hack/demo.py $(if $(REAL),--real)

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
