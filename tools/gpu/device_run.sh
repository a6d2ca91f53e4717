#!/usr/bin/env bash
# The device side of the GPU pack (tools/gpu/README.md): run from the repository root on the GPU machine, once per
# call, the same command each time, carrying one chunk of tools/gpu/out/pack/ and its SHA256SUMS per call:
#
#   bash tools/gpu/device_run.sh [all|test|bench|env]
#
# 1. stashes the chunks this call carried in $ONNXALIGN_GPU_DIR (default /tmp/onnxalign-gpu; /tmp outlives the
#    call while the machine stays warm, 30 s after each call), each checked against SHA256SUMS;
# 2. until every chunk is there it only says which ones are missing (exit 0, $OUT/status.txt);
# 3. then joins them, checks the whole tarball's SHA-256, unpacks it to $ONNXALIGN_GPU_DIR/pack (once per pack);
# 4. points the loader at the pack's ONNX Runtime and the image's CUDA 13 / cuDNN 9 libraries (the pip wheels'
#    site-packages/nvidia/*/lib of the python3 that holds PyTorch, torch/lib, then /usr/local/cuda*/lib64);
# 5. `test`: the GPU test through vstest (as `dotnet test` runs it; ONNXALIGN_REQUIRE_CUDA=1, so a missing CUDA
#    provider fails instead of skipping) with the loader and parity tests; `bench`: `onnxalign inspect` and
#    `onnxalign bench models/fashion --device cuda:0 ... --throughput --torch` (PyTorch on the same GPU);
#    `all` (default): both. `env`: only steps 1-4 and the environment report.
# Results in $OUT (at most 8 files come back): status.txt, env.txt, tests.txt, inspect.txt, bench_cuda.txt,
# bench_cuda.json. Limits: TEST_TIMEOUT (default 240 s), BENCH_TIMEOUT (default 300 s).
set -uo pipefail
mode="${1:-all}"
repo="$(cd "$(dirname "$0")/../.." && pwd)"
work="${ONNXALIGN_GPU_DIR:-/tmp/onnxalign-gpu}"
OUT="${OUT:-$work/out}"
carried="$repo/tools/gpu/out/pack"
chunks="$work/chunks"
mkdir -p "$chunks" "$OUT"
status() { echo "$*" | tee -a "$OUT/status.txt"; }

# 1. stash what this call carried (a chunk that fails its checksum is dropped, so the next call can carry it again)
[[ -f "$carried/SHA256SUMS" ]] && cp "$carried/SHA256SUMS" "$chunks/SHA256SUMS.new" && {
  if [[ -f "$chunks/SHA256SUMS" ]] && ! cmp -s "$chunks/SHA256SUMS" "$chunks/SHA256SUMS.new"; then
    status "a new pack (SHA256SUMS changed): dropping the chunks of the old one"
    rm -f "$chunks"/onnxalign-gpu.tar.xz.??
  fi
  mv "$chunks/SHA256SUMS.new" "$chunks/SHA256SUMS"
}
[[ -f "$chunks/SHA256SUMS" ]] || { status "no SHA256SUMS: carry tools/gpu/out/pack/SHA256SUMS with each chunk"; exit 3; }
for c in "$carried"/onnxalign-gpu.tar.xz.??; do [[ -f "$c" ]] && cp "$c" "$chunks/" && rm -f "$chunks/${c##*/}.ok"; done
missing=()
while read -r sum name; do
  [[ "$name" == onnxalign-gpu.tar.xz.?? ]] || continue
  if [[ ! -f "$chunks/$name" ]]; then missing+=("$name"); continue; fi
  if [[ ! -f "$chunks/$name.ok" ]]; then
    if [[ "$(sha256sum "$chunks/$name" | cut -d' ' -f1)" == "$sum" ]]; then touch "$chunks/$name.ok"
    else status "$name: SHA-256 mismatch, dropped"; rm -f "$chunks/$name"; missing+=("$name"); fi
  fi
done < "$chunks/SHA256SUMS"
total="$(grep -c 'onnxalign-gpu.tar.xz\.[0-9][0-9]$' "$chunks/SHA256SUMS")"
if ((${#missing[@]} > 0)); then
  status "have $((total - ${#missing[@]})) of $total chunks in $chunks; still to carry: ${missing[*]}"
  exit 0
fi

# 2-3. join, check, unpack once
whole="$(awk '$2 == "onnxalign-gpu.tar.xz" {print $1}' "$chunks/SHA256SUMS")"
pack="$work/pack/onnxalign-gpu"
if [[ "$(cat "$work/pack/.sha256" 2>/dev/null)" != "$whole" ]]; then
  status "all $total chunks here: joining and unpacking"
  [[ "$(cat "$chunks"/onnxalign-gpu.tar.xz.?? | sha256sum | cut -d' ' -f1)" == "$whole" ]] || { status "joined tarball: SHA-256 mismatch"; exit 4; }
  rm -rf "$work/pack" && mkdir -p "$work/pack"
  if command -v xz > /dev/null; then
    cat "$chunks"/onnxalign-gpu.tar.xz.?? | xz -dc | tar -x -C "$work/pack" || { status "unpacking failed"; exit 4; }
  else
    cat "$chunks"/onnxalign-gpu.tar.xz.?? | python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.stdin.buffer), sys.stdout.buffer, 1 << 20)' \
      | tar -x -C "$work/pack" || { status "unpacking failed"; exit 4; }
  fi
  echo "$whole" > "$work/pack/.sha256"
fi
status "pack $whole unpacked in $pack"

# 4. the loader: the pack's ONNX Runtime first, then the image's CUDA 13 and cuDNN libraries
python="$(command -v python3)"
libdirs="$("$python" - <<'EOF' 2>/dev/null
import glob, os, site, sys
roots = list(site.getsitepackages()) + [site.getusersitepackages()] + [p for p in sys.path if p.endswith("-packages")]
seen = []
for root in roots:
    for lib in sorted(glob.glob(os.path.join(root, "nvidia", "**", "lib*.so*"), recursive=True)):
        d = os.path.dirname(lib)
        if d not in seen:
            seen.append(d)
    t = os.path.join(root, "torch", "lib")
    if os.path.isdir(t) and t not in seen:
        seen.append(t)
print(":".join(seen))
EOF
)"
for d in /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  [[ -d "$d" ]] && libdirs="$libdirs:$d"
done
libdirs="${libdirs#:}"
export LD_LIBRARY_PATH="$pack/cli${libdirs:+:$libdirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
{
  echo "== $(date -u +%FT%TZ) mode $mode"
  cat "$pack/PACK.txt"
  echo "== python3: $python ($("$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")' 2>&1 | tail -1))"
  echo "== LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  echo "== ldd libonnxruntime_providers_cuda.so"
  ldd "$pack/cli/libonnxruntime_providers_cuda.so" 2>&1 | grep -E "not found|cublas|cudart|curand|libcuda|cudnn"
  echo "== cuDNN found: $(for d in ${LD_LIBRARY_PATH//:/ }; do ls "$d"/libcudnn.so* 2>/dev/null; done | head -3 | tr '\n' ' ')"
  echo "== nvidia-smi"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv 2>&1
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
[[ "$mode" == env ]] && exit 0
rc=0

# 5a. the GPU test, as dotnet test runs it (vstest.console -> testhost -> xunit adapter), on the pack's .NET
if [[ "$mode" == all || "$mode" == test ]]; then
  status "tests: CudaTests, TorchParityTests, LoaderTests"
  (
    export DOTNET_ROOT="$pack/dotnet" DOTNET_MULTILEVEL_LOOKUP=0 DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
    export PATH="$pack/dotnet:$PATH" ONNXALIGN_REQUIRE_CUDA=1 ONNXALIGN_REPOSITORY_ROOT="$repo"
    cd "$pack/tests" && timeout "${TEST_TIMEOUT:-240}" "$pack/dotnet/dotnet" "$pack/dotnet/vstest/vstest.console.dll" OnnxAlign.Tests.dll \
      "--TestCaseFilter:FullyQualifiedName~CudaTests|FullyQualifiedName~TorchParityTests|FullyQualifiedName~LoaderTests" \
      "--logger:console;verbosity=detailed" "--ResultsDirectory:$work/results"
  ) > "$OUT/tests.txt" 2>&1
  t=$?; ((t == 0)) || rc=$t
  status "tests: exit $t; $(grep -E '^ *(Total tests|Passed|Failed|Skipped): ' "$OUT/tests.txt" | tr -s ' ' | tr '\n' ' ')"
fi

# 5b. inspect and bench on the GPU, PyTorch on the same GPU for equal work
if [[ "$mode" == all || "$mode" == bench ]]; then
  cli="$pack/cli/OnnxAlign.Cli"
  cd "$repo"
  "$cli" inspect models/fashion --device cuda:0 > "$OUT/inspect.txt" 2>&1 || rc=5
  status "inspect: $(grep -E 'runtime|host buffers' "$OUT/inspect.txt" | tr -s ' ' | tr '\n' ' ')"
  ONNXALIGN_PYTHON="$python" timeout "${BENCH_TIMEOUT:-300}" "$cli" bench models/fashion --device cuda:0 --batch 64 --steps 20 \
    --repeats 5 --throughput --out "$OUT/bench_cuda.json" --torch > "$OUT/bench_cuda.txt" 2>&1
  b=$?; ((b == 0)) || rc=$b
  status "bench: exit $b"
fi
exit "$rc"
