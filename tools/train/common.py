"""Shared pieces of the training scripts: Fashion-MNIST from Debian's dataset package, seeding, logging.

Pixels are mapped to [-1, 1] and padded from 28x28 to 32x32 with the background value (-1), as the model
card states. Nothing is downloaded: the data come from /usr/share/datasets/fashion-mnist (tools/train/setup.sh).
"""
import gzip
import json
import os
import random
import struct
import time

import numpy as np
import torch

DATA_DIR = os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")
CLASS_NAMES = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle-boot"]


def _read_idx(path):
    with gzip.open(path, "rb") as f:
        magic = struct.unpack(">I", f.read(4))[0]
        ndim = magic & 0xFF
        shape = struct.unpack(">" + "I" * ndim, f.read(4 * ndim))
        return np.frombuffer(f.read(), dtype=np.uint8).reshape(shape)


def load_split(split, size=32):
    """Returns (images float32 [N,1,size,size] in [-1,1], labels int64 [N]) for split 'train' or 't10k'.

    size 32 pads the 28x28 images with the background value -1 (models/fashion); size 28 keeps them as they are
    (models/fashion-v)."""
    if size not in (28, 32):
        raise ValueError(f"size must be 28 or 32, got {size}")
    images = _read_idx(os.path.join(DATA_DIR, f"{split}-images-idx3-ubyte.gz"))
    labels = _read_idx(os.path.join(DATA_DIR, f"{split}-labels-idx1-ubyte.gz"))
    x = images.astype(np.float32) / 127.5 - 1.0
    pad = (size - 28) // 2
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)), constant_values=-1.0)[:, None, :, :]
    return x, labels.astype(np.int64)


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


class Log:
    """Prints and appends JSON lines to a log file, so figures for the model card are on record."""

    def __init__(self, path, append=False):
        """append=True keeps the lines already in the file (a resumed run continues its log)."""
        self.path = path
        self.start = time.time()
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        open(path, "a" if append else "w").close()

    def __call__(self, **fields):
        fields = {"elapsed_s": round(time.time() - self.start, 1), **fields}
        print(json.dumps(fields), flush=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(fields) + "\n")


def atomic_write_bytes(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def export_onnx(model, example_inputs, path, input_names, output_names, dynamic_axes=None):
    """Exports `model` (in eval mode) to ONNX opset 17 at `path`, atomically, with a dynamic batch on every input and
    output (or the given dynamic_axes, torch.onnx.export's argument)."""
    model.eval()
    tmp = path + ".tmp"
    torch.onnx.export(model, example_inputs, tmp, opset_version=17, input_names=input_names, output_names=output_names,
                      dynamic_axes=dynamic_axes or {n: {0: "batch"} for n in input_names + output_names})
    os.replace(tmp, path)


def save_npy(path, array):
    tmp = path + ".tmp.npy"
    np.save(tmp, array)
    os.replace(tmp, path)
