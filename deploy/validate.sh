#!/usr/bin/env bash
# Renders every kustomize overlay under deploy/overlays and validates each rendered object
# strictly (unknown fields are errors) against the Kubernetes API schemas bundled in the PyPI
# package `kubernetes-validate` — offline: no cluster is needed or contacted.
# Usage: deploy/validate.sh [kubernetes version, default 1.33.0 — the k8s-openapi feature pop
# is built with].
set -euo pipefail
cd "$(dirname "$0")"
version="${1:-1.33.0}"
command -v kubectl >/dev/null || { echo "deploy: kubectl is required (kubectl kustomize)" >&2; exit 1; }
command -v kubernetes-validate >/dev/null || { echo "deploy: pip install kubernetes-validate" >&2; exit 1; }
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
status=0
for overlay in overlays/*/; do
  name="$(basename "$overlay")"
  kubectl kustomize "$overlay" > "$out/$name.yaml"
  count="$(grep -c '^kind:' "$out/$name.yaml")"
  if kubernetes-validate --strict --quiet -k "$version" "$out/$name.yaml"; then
    echo "deploy: overlay $name renders $count objects, all valid for Kubernetes $version"
  else
    echo "deploy: overlay $name does not validate" >&2
    status=1
  fi
done
exit "$status"
