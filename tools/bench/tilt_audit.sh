#!/usr/bin/env bash
# The ground-truth audit behind README's exactness table (DESIGN §1d): for each trained model and sampler, 4096
# importance-weighted base samples against the exact tilt (SMC) and the fast tilt, at λ = 10 and 3, 50 steps,
# reward class:Trouser. Writes MODEL/logs/verify/SAMPLER/report.json (+ mean images) and SAMPLER.txt (the table).
#   tools/bench/tilt_audit.sh [MODEL...]      default: models/fashion models/fashion-v
# About 10–15 minutes per model and sampler on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
dotnet build src/OnnxAlign.Cli -c Release -v quiet -nologo > /dev/null
cli=(dotnet src/OnnxAlign.Cli/bin/Release/net10.0/OnnxAlign.Cli.dll)
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(models/fashion models/fashion-v)
for model in "${models[@]}"; do
  for sampler in ddpm ddim dpm++2m euler-maruyama; do
    out="$model/logs/verify/$sampler"
    mkdir -p "$model/logs/verify"
    "${cli[@]}" verify "$model" --reward class:Trouser --lambda 10,3 --sampler "$sampler" --steps 50 \
      --base-count 4096 --count 256 --seed 0 --out "$out" --overwrite | tee "$model/logs/verify/$sampler.txt"
  done
done
