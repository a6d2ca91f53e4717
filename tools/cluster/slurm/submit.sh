#!/usr/bin/env bash
# Runs an aligned generation as a Slurm job array (DESIGN §10, README "Beyond one machine"):
#   plan job (the global set-up, once) → array of N shard tasks (afterok) → merge job (afterok).
#
#   tools/cluster/slurm/submit.sh [--wait] RUN_DIR N MODEL [generate options …]
#
# RUN_DIR must be on a file system every node sees; it receives plan.json, shards/0 … shards/N-1, merged/ and logs/.
# ONNXALIGN is the command that runs onnxalign on the nodes (default: onnxalign; e.g. "dotnet /opt/onnxalign/OnnxAlign.Cli.dll").
# Extra sbatch options for every job go in SBATCH_OPTIONS (e.g. "--partition=gpu --gres=gpu:1"). Prints the three job ids.
set -euo pipefail
wait=()
if [[ "${1:-}" == "--wait" ]]; then wait=(--wait); shift; fi
if [[ $# -lt 3 ]]; then sed -n '2,11p' "$0" >&2; exit 2; fi
run_dir=$(realpath -m "$1"); shards=$2; shift 2
if ! [[ "$shards" =~ ^[1-9][0-9]*$ ]]; then echo "submit.sh: N '$shards': expected a positive integer" >&2; exit 2; fi
here=$(dirname "$(realpath "$0")")
: "${ONNXALIGN:=onnxalign}"
export ONNXALIGN
mkdir -p "$run_dir/logs" "$run_dir/shards"
read -r -a options <<< "${SBATCH_OPTIONS:-}"
quoted=$(printf '%q ' "$@")

plan_job=$(sbatch --parsable "${options[@]}" --job-name=onnxalign-plan --chdir="$PWD" --output="$run_dir/logs/plan.out" \
  --export=ALL --wrap "$ONNXALIGN plan $quoted --out $(printf '%q' "$run_dir/plan.json") --overwrite")
array_job=$(sbatch --parsable "${options[@]}" --dependency=afterok:"$plan_job" --array=0-$((shards - 1)) --chdir="$PWD" \
  --output="$run_dir/logs/shard_%a.out" --export=ALL,PLAN="$run_dir/plan.json",RUN_DIR="$run_dir" "$here/shard.sbatch")
merge_job=$(sbatch --parsable "${options[@]}" "${wait[@]}" --dependency=afterok:"$array_job" --kill-on-invalid-dep=yes --chdir="$PWD" \
  --output="$run_dir/logs/merge.out" --export=ALL,RUN_DIR="$run_dir",SHARDS="$shards" "$here/merge.sbatch")
echo "plan $plan_job, shards $array_job (array 0-$((shards - 1))), merge $merge_job: results in $run_dir/merged"
