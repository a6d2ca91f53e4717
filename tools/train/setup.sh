#!/usr/bin/env bash
# Installs what the training scripts need from Debian's archive (no pip, no downloads at run time):
# python3-torch 1.13 (CPU), python3-onnx, python3-numpy and the Fashion-MNIST dataset package.
# The scripts run with Debian's interpreter, /usr/bin/python3, because that is where apt puts the modules.
set -euo pipefail
packages=(python3-torch python3-onnx python3-numpy dataset-fashion-mnist)
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  "${sudo_cmd[@]}" apt-get update
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
fi
/usr/bin/python3 -c "import torch, onnx, numpy; print('torch', torch.__version__, '| onnx', onnx.__version__, '| numpy', numpy.__version__)"
ls /usr/share/datasets/fashion-mnist
