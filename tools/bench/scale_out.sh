#!/usr/bin/env bash
# The measurement behind README "Beyond one machine": 10 000 samples of models/fashion (DDPM-50) as a plan and 4
# shards run one after another on this machine, then the merge; prints each shard's and the merge's wall time.
#   tools/bench/scale_out.sh [WORK_DIR]     (default /tmp/onnxalign-scale-out; about 15 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${1:-/tmp/onnxalign-scale-out}
mkdir -p "$work"
dotnet build src/OnnxAlign.Cli -c Release -v q -nologo >/dev/null
cli="dotnet src/OnnxAlign.Cli/bin/Release/net10.0/OnnxAlign.Cli.dll"
$cli plan models/fashion --count 10000 --steps 50 --batch 256 --out "$work/plan.json" --overwrite
for i in 0 1 2 3; do
  start=$(date +%s.%N)
  $cli generate --plan "$work/plan.json" --shard $i/4 --out "$work/shard$i" --overwrite >/dev/null
  echo "shard $i: $(echo "$(date +%s.%N) - $start" | bc) s"
done
start=$(date +%s.%N)
$cli merge --out "$work/merged" --overwrite "$work/shard0" "$work/shard1" "$work/shard2" "$work/shard3"
echo "merge: $(echo "$(date +%s.%N) - $start" | bc) s"
