#!/usr/bin/env bash
# The measurements of models/fashion-ldm's model card: the evaluator's class rate for each class prompt with and
# without classifier-free guidance, and the tilt/CFG interplay (a decoded-image reward, the evaluator's log-probability
# of a class, aligned by the black-box tilt-proposal SMC, with and without guidance, with and without a prompt).
#   tools/bench/ldm_card.sh [WORK_DIR] [COUNT]     (default /tmp/onnxalign-ldm-card, 200 samples per cell)
# Writes WORK_DIR/card.json and prints the two markdown tables of the card. REUSE=1 keeps runs already in WORK_DIR.
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${1:-/tmp/onnxalign-ldm-card}
count=${2:-200}
mkdir -p "$work"
dotnet build src/OnnxAlign.Cli -c Release -v q -nologo >/dev/null
cli="dotnet src/OnnxAlign.Cli/bin/Release/net10.0/OnnxAlign.Cli.dll"
model=models/fashion-ldm
evaluator=models/fashion/evaluator
classes=("t-shirt/top" "trouser" "pullover" "dress" "coat" "sandal" "shirt" "sneaker" "bag" "ankle boot")

classifier=models/fashion/classifier
run() {   # run NAME ARGS… : generate into WORK/NAME (kept with REUSE=1), then the class shares by the evaluator CNN
          # (WORK/NAME.quality.json) and by models/fashion's linear classifier (WORK/NAME.classifier.json)
  local name=$1; shift
  if [ "${REUSE:-0}" != 1 ] || [ ! -f "$work/$name/report.json" ]; then
    $cli generate $model "$@" --count "$count" --steps 50 --sampler ddpm --seed 0 --out "$work/$name" --overwrite 2>/dev/null >/dev/null
  fi
  $cli quality $model --samples "$work/$name" --evaluator $evaluator --out "$work/$name.quality.json" --overwrite >/dev/null
  $cli quality $model --samples "$work/$name" --evaluator $classifier --out "$work/$name.classifier.json" --overwrite >/dev/null
}

for w in 1 3; do
  for c in "${!classes[@]}"; do
    run "prompt$c-w$w" --prompt "a photo of a ${classes[$c]}" --guidance-scale $w
  done
  run "empty-w$w"
done
# Interplay: the evaluator's log-probability of Shirt (the class the model confuses most) as a decoded-image reward.
for lambda in 1 0.3; do
  run "tilt-empty-l$lambda" --reward "onnx:$evaluator@Shirt" --lambda $lambda
  run "tilt-shirt-w1-l$lambda" --prompt "a photo of a shirt" --reward "onnx:$evaluator@Shirt" --lambda $lambda
  run "tilt-shirt-w3-l$lambda" --prompt "a photo of a shirt" --guidance-scale 3 --reward "onnx:$evaluator@Shirt" --lambda $lambda
done
python3 tools/bench/ldm_card_table.py "$work" "$count"
