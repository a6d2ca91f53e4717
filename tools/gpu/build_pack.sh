#!/usr/bin/env bash
# Builds the GPU runtime pack (issue #21): everything a machine with a GPU and CUDA 13 but no .NET needs to run the
# GPU test and `onnxalign bench --device cuda:0`, split into chunks that each fit one device call's carry limit.
#
#   tools/gpu/build_pack.sh            # -> tools/gpu/out/pack/onnxalign-gpu.tar.xz.NN, SHA256SUMS, MANIFEST.txt
#
# The pack (folder onnxalign-gpu/ inside the tarball):
#   cli/     self-contained linux-x64 publish of the CLI (runs with no .NET installed), ONNX Runtime's natives beside it
#   tests/   the test project's build (framework-dependent), the same natives beside it
#   dotnet/  the .NET runtime (muxer, hostfxr, Microsoft.NETCore.App) and vstest/, the SDK's test runner, which
#            together run the tests as `dotnet test` does (vstest.console + testhost + the xunit adapter)
# ONNX Runtime is NuGet's Microsoft.ML.OnnxRuntime.Gpu.Linux (CUDA 13 build, CUDA-enabled core) with the managed
# API of the same version, selected by the build's own properties; identical files are hard links, so the runtime
# and the natives are stored once. Environment: ORT_PACKAGE, ORT_VERSION, CHUNK (split size, default 45M: 45 MiB
# plus the ~15 MB working tree stays under the 64 MiB a call carries), XZ_LEVEL (default 9).
# The build runs in a copy of the working tree (tools/gpu/out/build/src), so the repository's own bin/ and obj/ and
# its default build (CPU package) are untouched.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$here/out"
ORT_PACKAGE="${ORT_PACKAGE:-Microsoft.ML.OnnxRuntime.Gpu.Linux}"
ORT_VERSION="${ORT_VERSION:-1.31.0}"
CHUNK="${CHUNK:-45M}"
XZ_LEVEL="${XZ_LEVEL:-9}"
src="$out/build/src"
stage="$out/build/stage/onnxalign-gpu"
pack="$out/pack"
props=(-p:OnnxRuntimePackage="$ORT_PACKAGE" -p:OnnxRuntimeVersion="$ORT_VERSION")

step() { printf '== %s\n' "$*" >&2; }

step "copy of the working tree -> $src"
rm -rf "$out/build" && mkdir -p "$src" "$stage"
(cd "$root" && git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf -) | tar -xf - -C "$src"

step "CLI: self-contained linux-x64 publish on $ORT_PACKAGE $ORT_VERSION"
dotnet publish "$src/src/OnnxAlign.Cli" -c Release -r linux-x64 --self-contained true "${props[@]}" -m:1 -nologo \
  -o "$stage/cli" >&2

step "tests: build for linux-x64 (framework-dependent) on the same packages"
dotnet build "$src/tests/OnnxAlign.Tests" -c Release -r linux-x64 --self-contained false "${props[@]}" -m:1 -nologo >&2
cp -r "$src/tests/OnnxAlign.Tests/bin/Release/net10.0/linux-x64" "$stage/tests"

step "the .NET runtime and the SDK's test runner"
dotnet_root="$(dirname "$(readlink -f "$(command -v dotnet)")")"
runtime="$(grep -o '"version": *"[^"]*"' "$stage/tests/OnnxAlign.Tests.runtimeconfig.json" | head -1 | sed 's/.*"\([^"]*\)"$/\1/')"
fx="$(ls "$dotnet_root/shared/Microsoft.NETCore.App" | grep -F "${runtime%.*}." | sort -V | tail -1)"
sdk="$(dotnet --version)"
mkdir -p "$stage/dotnet/host/fxr" "$stage/dotnet/shared/Microsoft.NETCore.App" "$stage/dotnet/vstest"
cp "$dotnet_root/dotnet" "$stage/dotnet/"
cp -r "$dotnet_root/host/fxr/$(ls "$dotnet_root/host/fxr" | sort -V | tail -1)" "$stage/dotnet/host/fxr/"
cp -r "$dotnet_root/shared/Microsoft.NETCore.App/$fx" "$stage/dotnet/shared/Microsoft.NETCore.App/"
sdkdir="$dotnet_root/sdk/$sdk"
(cd "$sdkdir" && cp vstest.console.dll vstest.console.deps.json vstest.console.runtimeconfig.json vstest.console.dll.config \
   testhost*.json testhost.dll Newtonsoft.Json.dll Microsoft.Extensions.FileSystemGlobbing.dll Microsoft.Extensions.DependencyModel.dll \
   Microsoft.TestPlatform.*.dll Microsoft.VisualStudio.TestPlatform.*.dll "$stage/dotnet/vstest/")
cp -r "$sdkdir/Extensions" "$stage/dotnet/vstest/"

step "checks"
for lib in libonnxruntime.so libonnxruntime_providers_shared.so libonnxruntime_providers_cuda.so; do
  for dir in cli tests; do
    [[ -f "$stage/$dir/$lib" ]] || { echo "missing $dir/$lib: is $ORT_PACKAGE $ORT_VERSION the GPU build?" >&2; exit 1; }
  done
done
rm -f "$stage"/{cli,tests}/libonnxruntime_providers_tensorrt.so   # not used; saves a MB
managed="$(grep -o '"Microsoft.ML.OnnxRuntime.Managed/[^"]*"' "$stage/cli/OnnxAlign.Cli.deps.json" | head -1 | tr -d '"')"
native="$(grep -ao 'VERS_[0-9.]*' "$stage/cli/libonnxruntime.so" | head -1)"
[[ "${managed#*/}" == "${native#VERS_}" ]] || { echo "managed $managed and native $native differ" >&2; exit 1; }
needs="$(readelf -d "$stage/cli/libonnxruntime_providers_cuda.so" | sed -n 's/.*NEEDED.*\[\(.*\)\]/\1/p' | tr '\n' ' ')"

step "hard links for identical files"
python3 - "$stage" <<'EOF'
import hashlib, os, sys
seen, linked = {}, 0
for folder, _, files in sorted(os.walk(sys.argv[1])):
    for name in sorted(files):
        path = os.path.join(folder, name)
        if os.path.islink(path) or not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        if digest in seen:
            first = seen[digest]
            if os.stat(path).st_mode & 0o111:  # one executable copy keeps them all executable
                os.chmod(first, os.stat(first).st_mode | 0o755)
            os.unlink(path)
            os.link(first, path)
            linked += 1
        else:
            seen[digest] = path
print(f"{linked} files linked to an identical one", file=sys.stderr)
EOF

step "tarball (xz -$XZ_LEVEL) and chunks of $CHUNK -> $pack"
rm -rf "$pack" && mkdir -p "$pack"
commit="$(cd "$root" && git rev-parse --short HEAD)$(cd "$root" && git diff --quiet HEAD || echo '+dirty')"
cat > "$stage/PACK.txt" <<EOF
OnnxAlign GPU pack, built from $commit on $(date -u +%Y-%m-%dT%H:%MZ)
ONNX Runtime: $ORT_PACKAGE $ORT_VERSION (native $native, managed $managed)
.NET runtime: $fx (SDK $sdk for vstest)
libonnxruntime_providers_cuda.so needs: $needs
EOF
tar -C "$(dirname "$stage")" --sort=name --owner=0 --group=0 -cf - onnxalign-gpu \
  | xz -T2 -"$XZ_LEVEL" > "$pack/onnxalign-gpu.tar.xz"
(cd "$pack" && split -b "$CHUNK" -d -a 2 onnxalign-gpu.tar.xz onnxalign-gpu.tar.xz. && rm onnxalign-gpu.tar.xz)
chunks=("$pack"/onnxalign-gpu.tar.xz.??)
{
  cat "$stage/PACK.txt"
  echo "chunks: ${#chunks[@]}"
  du -sb "$stage" | awk '{printf "unpacked bytes (links counted once): %s\n", $1}'
  cat "${chunks[@]}" | wc -c | awk '{printf "packed bytes: %s\n", $1}'
} > "$pack/MANIFEST.txt"
(cd "$pack" && sha256sum onnxalign-gpu.tar.xz.?? > SHA256SUMS && cat "${chunks[@]##*/}" | sha256sum | sed 's/-$/onnxalign-gpu.tar.xz/' >> SHA256SUMS)
cat "$pack/MANIFEST.txt" >&2
ls -l "$pack" >&2
tree_mb="$(cd "$root" && git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)"
echo "working tree: $((tree_mb / 1048576)) MiB; each call carries it plus one chunk and SHA256SUMS (limit 64 MiB)" >&2
