# The project's verbs. `make demo` runs the main job; `make test` runs the tests.
# Both create .venv and install the project into it first, so a fresh clone needs nothing else.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PEERS_STAMP := $(VENV)/.peers-installed

.PHONY: demo test lint format gen bench bench-scheduler bench-decode sweep serve gpu-check bench-engine peers bench-peers install clean

$(STAMP): pyproject.toml
	@echo "installing the project into $(VENV) (about 6 GB, mostly torch; a few minutes)..."
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m benchmarks.compare

test: $(PEERS_STAMP)
	./scripts/install_test_tools.sh
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Regenerate service/gen from idl/ (needs the Apache Thrift compiler: apt-get install thrift-compiler).
gen:
	rm -rf service/gen/inference
	thrift --gen py:package_prefix=service.gen. -out service/gen idl/inference.thrift
	rm -f service/gen/inference/InferenceService-remote service/gen/__init__.py
	touch service/gen/__init__.py

# The servers users would pick instead (benchmarks/README.md, "Against other servers"): LitServe
# (the `peers` extra) and a tritonserver binary (scripts/install_triton_peer.sh). Seconds to
# install; `make test` installs them too, so the peers' tests run rather than skip.
$(PEERS_STAMP): $(STAMP) scripts/install_triton_peer.sh
	$(PY) -m pip install -q -e '.[dev,bench,peers]'
	./scripts/install_triton_peer.sh
	touch $(PEERS_STAMP)

peers: $(PEERS_STAMP)

bench-peers: peers
	$(PY) -m benchmarks.peers

# The reference setting, for a GPU machine (see benchmarks/README.md).
bench: $(STAMP)
	$(PY) -m benchmarks.compare --total-number 10000 --concurrency 10,20 --processes 4 --ping-check

sweep: $(STAMP)
	$(PY) -m benchmarks.compare --sweep --processes 4

bench-engine: $(STAMP)
	$(PY) -m benchmarks.engine_throughput

bench-scheduler: $(STAMP)
	$(PY) -m benchmarks.scheduler_overhead

bench-decode: $(STAMP)
	$(PY) -m benchmarks.decode_throughput

# The service in the foreground: `make serve HANDLER=baseline PORT=8889`.
serve: $(STAMP)
	$(PY) -m service --handler $(or $(HANDLER),pipelined) --port $(or $(PORT),8888)

# On a CUDA machine: both handlers on the GPU against a CPU reference of the same model file.
gpu-check: $(STAMP)
	$(PY) -m service.tools.gpu_check

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
