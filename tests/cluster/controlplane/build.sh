#!/usr/bin/env bash
# Build the test control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler) from the Go module proxy into a git-ignored cache folder.
#
# Why a throwaway module: `go install k8s.io/kubernetes/...@v` refuses modules
# with replace directives, so go.mod here requires k8s.io/kubernetes at one
# release and replaces every k8s.io staging module with the matching v0.x.
# The binaries are rebuilt only when one is missing or the module changed.
#
# Usage: build.sh [OUT_DIR]   (default: <repo>/.cache/controlplane/bin)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
out="${1:-${SLOSERVE_CONTROLPLANE_BIN:-$repo/.cache/controlplane/bin}}"
stamp="$out/.stamp"
want="$(cat "$here/go.mod" "$here/go.sum" | sha256sum | cut -d' ' -f1)"

bins=(etcd kube-apiserver kube-controller-manager kube-scheduler)
missing=0
for b in "${bins[@]}"; do [[ -x "$out/$b" ]] || missing=1; done
if [[ $missing == 0 && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "controlplane: cached in $out"
    exit 0
fi

command -v go >/dev/null || { echo "controlplane: go not found on PATH" >&2; exit 1; }
mkdir -p "$out"
start=$(date +%s)
cd "$here"
echo "controlplane: downloading modules ($(go version))"
go mod download
echo "controlplane: building ${bins[*]} into $out (slow the first time)"
tmp="$(mktemp -d "$out/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
# One go build for all four binaries shares the compilation of common packages.
CGO_ENABLED=0 go build -mod=mod -trimpath -ldflags='-s -w' -o "$tmp/" \
    go.etcd.io/etcd/server/v3 \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler
mv "$tmp/server" "$out/etcd"
for b in kube-apiserver kube-controller-manager kube-scheduler; do mv "$tmp/$b" "$out/$b"; done
echo "$want" >"$stamp"
echo "controlplane: built in $(( $(date +%s) - start ))s"
