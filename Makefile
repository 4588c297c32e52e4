# The project's verbs. `make demo` runs the main job; `make test` runs the tests.
# Both make .venv hold the project first (scripts/ensure_venv.sh says what it installs and why,
# and does nothing when .venv already holds this pyproject.toml), so a fresh clone needs nothing else.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PEERS_STAMP := $(VENV)/.peers-installed
# Local runs of the stage benchmarks go here (ignored by git), never into the committed results.
LOCAL_RESULTS := benchmarks/results/local

.PHONY: demo test test-fast lint format gen bench bench-scheduler bench-decode sweep serve \
	bench-engine gpu-check peers bench-peers install venv flag-docs clean

venv:
	@PYTHON=$(PYTHON) VENV=$(VENV) ./scripts/ensure_venv.sh dev,bench

install: venv

demo: venv
	$(PY) -m benchmarks.compare --tag demo

test: peers
	./scripts/install_test_tools.sh
	$(PY) -m pytest -q

# What a developer runs between edits: no GPU, no slow marks (those start peer and rival
# servers, HAProxy, whole benchmarks), no system tools installed.
test-fast: venv
	$(PY) -m pytest -q -m "not gpu and not slow"

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# docs/flags.md is generated from the parsers; tests/docs/test_flag_docs.py fails when it is stale.
flag-docs: venv
	$(PY) -m service.tools.flag_docs > docs/flags.md

# Regenerate service/gen from idl/ (needs the Apache Thrift compiler: apt-get install thrift-compiler).
gen:
	rm -rf service/gen/inference
	thrift --gen py:package_prefix=service.gen. -out service/gen idl/inference.thrift
	rm -f service/gen/inference/InferenceService-remote service/gen/__init__.py
	touch service/gen/__init__.py

# The servers users would pick instead (benchmarks/README.md, "Against other servers"): LitServe
# (the `peers` extra) and a tritonserver binary (scripts/install_triton_peer.sh). Seconds to
# install; `make test` installs them too, so the peers' tests run rather than skip.
peers:
	@PYTHON=$(PYTHON) VENV=$(VENV) ./scripts/ensure_venv.sh dev,bench,peers
	@want=$$(sha256sum scripts/install_triton_peer.sh | cut -d' ' -f1); \
	if [ "$$(cat $(PEERS_STAMP) 2>/dev/null)" != "$$want" ]; then \
	  echo "make: installing the Triton peer into $(VENV) (scripts/install_triton_peer.sh; seconds)"; \
	  PY=$(PY) ./scripts/install_triton_peer.sh && echo "$$want" > $(PEERS_STAMP); \
	fi

bench-peers: peers
	$(PY) -m benchmarks.peers

# The README's headline table, on a GPU box (the README's "Headline" section shows this command;
# tests/docs/test_readme.py checks the two agree).
bench: venv
	$(PY) -m benchmarks.compare --config service/configs/resnet50.toml --workers 8 --mps --concurrency 20,40 --total-number 6000 --warmup 300 --processes 4 --tag core-cpudecode-8

sweep: venv
	$(PY) -m benchmarks.compare --sweep --processes 4 --tag sweep

bench-scheduler: venv
	$(PY) -m benchmarks.scheduler_overhead

bench-decode: venv
	$(PY) -m benchmarks.decode_throughput --json-dir $(LOCAL_RESULTS)

bench-engine: venv
	$(PY) -m benchmarks.engine_throughput --json-dir $(LOCAL_RESULTS)

# The service in the foreground: `make serve HANDLER=baseline PORT=8889`.
serve: venv
	$(PY) -m service --handler $(or $(HANDLER),pipelined) --port $(or $(PORT),8888)

# On a CUDA machine: both handlers on the GPU against a CPU reference of the same model file.
gpu-check: venv
	$(PY) -m service.tools.gpu_check

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
