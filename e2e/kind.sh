#!/usr/bin/env bash
# Create a kind cluster for the e2e suite, build and load both images, install Prometheus and the chart.
#
#   e2e/kind.sh up      # cluster "sloserve-e2e", images sloserve/{operator,runtime}:e2e, chart installed
#   e2e/kind.sh down    # delete the cluster
#
# Needs docker, kind and kubectl, and network access to pull the base images; `make e2e` calls it when
# E2E_USE_EXISTING is not set. The chart is rendered by helm-python-sdk (no helm binary needed).
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTER="${E2E_CLUSTER:-sloserve-e2e}"
PY="${PY:-.venv/bin/python}"

case "${1:-up}" in
  up)
    kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --wait 120s
    docker build -f docker/operator.Dockerfile -t sloserve/operator:e2e .
    docker build -f docker/runtime.Dockerfile -t sloserve/runtime:e2e .
    kind load docker-image --name "$CLUSTER" sloserve/operator:e2e sloserve/runtime:e2e
    kubectl --context "kind-$CLUSTER" apply -f e2e/prometheus.yaml
    # CRDs first, wait for Established, then the rest (one stream fails on a fresh cluster: e2e/install.py)
    "$PY" -m e2e.install --apply --context "kind-$CLUSTER"
    kubectl --context "kind-$CLUSTER" -n sloserve-system rollout status deploy/sloserve --timeout=180s
    kubectl --context "kind-$CLUSTER" -n monitoring rollout status deploy/prometheus --timeout=180s
    ;;
  down)
    kind delete cluster --name "$CLUSTER"
    ;;
  *)
    echo "usage: $0 up|down" >&2; exit 2 ;;
esac
