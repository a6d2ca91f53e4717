#!/usr/bin/env bash
# Plan → Indexed Job of shards → merge on a Kubernetes cluster (DESIGN §10). Kubernetes has no job dependencies, so
# this waits for each step. Edit the manifests first (image, model, options, completions = ONNXALIGN_SHARDS).
#   tools/cluster/k8s/run.sh            apply and wait
#   tools/cluster/k8s/run.sh --check    validate the manifests only: kubectl apply --dry-run=client where a cluster
#                                       answers (client dry-run still asks the API server for its resource types),
#                                       else kubectl's offline parse (kubectl label --local), which checks syntax and kinds
set -euo pipefail
here=$(dirname "$(realpath "$0")")
manifests=("$here/volume.yaml" "$here/plan-job.yaml" "$here/shards-job.yaml" "$here/merge-job.yaml")
if [[ "${1:-}" == "--check" ]]; then
  if kubectl get --raw /version >/dev/null 2>&1; then
    for m in "${manifests[@]}"; do kubectl apply --dry-run=client -o name -f "$m"; done
  else
    echo "no cluster answers: kubectl's offline parse only (syntax, kinds, names)" >&2
    for m in "${manifests[@]}"; do kubectl label --local --dry-run=client -o name -f "$m" checked=yes; done
  fi
  # The shard count is written twice (completions, ONNXALIGN_SHARDS): they must agree.
  completions=$(grep -E '^\s+completions:' "$here/shards-job.yaml" | awk '{print $2}')
  for f in shards-job.yaml merge-job.yaml; do
    grep -A0 'ONNXALIGN_SHARDS, value' "$here/$f" | grep -q "\"$completions\"" || { echo "$f: ONNXALIGN_SHARDS is not completions ($completions)" >&2; exit 1; }
  done
  exit 0
fi
kubectl apply -f "$here/volume.yaml"
kubectl apply -f "$here/plan-job.yaml"
kubectl wait --for=condition=complete --timeout=24h job/onnxalign-plan
kubectl apply -f "$here/shards-job.yaml"
kubectl wait --for=condition=complete --timeout=72h job/onnxalign-shards
kubectl apply -f "$here/merge-job.yaml"
kubectl wait --for=condition=complete --timeout=24h job/onnxalign-merge
echo "merged: /data/merged on the onnxalign-run volume"
