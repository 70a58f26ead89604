#!/usr/bin/env bash
# Renders every kustomize overlay under deploy/overlays and validates each rendered object
# strictly (unknown fields are errors) against the Kubernetes API schemas bundled in the PyPI
# package `kubernetes-validate` — offline: no cluster is needed or contacted.
# Usage: deploy/validate.sh [kubernetes version, default 1.33.0 — the k8s-openapi feature pop
# is built with].
set -euo pipefail
cd "$(dirname "$0")"
version="${1:-1.33.0}"
# The manifests use kustomize >= v4.1 (`labels:` with includeSelectors, `patches:`, directory
# resources): kubectl >= 1.22 embeds one. An older kubectl (Debian's kubernetes-client is
# 1.20, kustomize v2.0.3) cannot render them; then a standalone `kustomize` on PATH is tried,
# else this fails with a clear error. (`commonLabels`/`patchesStrategicMerge`/`bases` would
# render there, but `commonLabels` also rewrites selectors — Deployment selectors are
# immutable — so the base keeps `labels:`.)
command -v kubectl >/dev/null || command -v kustomize >/dev/null ||
  { echo "deploy: kubectl (>= 1.22, for kubectl kustomize) or kustomize (>= v4.1) is required" >&2; exit 1; }
command -v kubernetes-validate >/dev/null || { echo "deploy: pip install kubernetes-validate" >&2; exit 1; }
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

# Renders overlay $1 into $2; on failure prints why (and which tools were tried) and fails.
render() {
  if command -v kubectl >/dev/null && kubectl kustomize "$1" > "$2" 2> "$2.err"; then
    return 0
  fi
  if command -v kustomize >/dev/null && kustomize build "$1" > "$2" 2>> "$2.err"; then
    return 0
  fi
  {
    echo "deploy: cannot render overlay $1:"
    sed 's/^/deploy:   /' "$2.err"
    if command -v kubectl >/dev/null; then
      echo "deploy: kubectl here: $(kubectl version --client 2>/dev/null | head -n 1)"
    fi
    echo "deploy: these manifests need kustomize >= v4.1: kubectl >= 1.22, or a standalone"
    echo "deploy: kustomize on PATH (https://kubectl.docs.kubernetes.io/installation/kustomize/)"
  } >&2
  return 1
}

status=0
for overlay in overlays/*/; do
  name="$(basename "$overlay")"
  render "$overlay" "$out/$name.yaml" || exit 1
  count="$(grep -c '^kind:' "$out/$name.yaml")"
  if kubernetes-validate --strict --quiet -k "$version" "$out/$name.yaml"; then
    echo "deploy: overlay $name renders $count objects, all valid for Kubernetes $version"
  else
    echo "deploy: overlay $name does not validate" >&2
    status=1
  fi
done
exit "$status"
