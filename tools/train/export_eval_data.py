"""Writes the real images the `onnxalign quality` command compares samples with (no training, seconds).

    /usr/bin/python3 tools/train/export_eval_data.py [--preset fashion|fashion-v] [--out DIR]

* tools/train/out/test_u8.npy: the 10 000 test images, uint8 [N, 1, S, S] (S = 32 or 28) (padded with 0 = pixel -1); not committed.
  `onnxalign quality models/fashion --write-reference tools/train/out/test_u8.npy` turns them into the evaluator-feature
  mean and covariance that are committed (OUT/evaluator/reference_mean.npy, reference_cov.npy).
* OUT/evaluator/real_u8.npy: the last 2 000 training images, the real-image floor of the Frechet distance.
* OUT/data_moments.json: {"variance": v, "range": [-1, 1]}: the mean per-pixel variance of the training images in
  [-1, 1], used by the hybrid tilt's Gaussian surrogate (DESIGN section 1b), and the range every pixel of the data
  lies in, onto which guidance projects the tilted denoiser's x0 (DESIGN section 1d).
"""
import argparse
import json
import os

import numpy as np

from common import atomic_write_bytes, load_split, save_npy

HERE = os.path.dirname(os.path.abspath(__file__))


def to_u8(x):
    return np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=["fashion", "fashion-v"], default="fashion")
    parser.add_argument("--out", default=None, help="model folder (default: the preset's)")
    parser.add_argument("--work", default=None, help="where test_u8.npy goes (default: the preset's)")
    args = parser.parse_args()
    size = 32 if args.preset == "fashion" else 28
    args.out = args.out or os.path.join(HERE, "..", "..", "models", args.preset)
    args.work = args.work or (os.path.join(HERE, "out") if args.preset == "fashion" else os.path.join(HERE, "out", args.preset))
    os.makedirs(args.work, exist_ok=True)
    x_test, _ = load_split("t10k", size)
    save_npy(os.path.join(args.work, "test_u8.npy"), to_u8(x_test))
    x_train, _ = load_split("train", size)
    os.makedirs(os.path.join(args.out, "evaluator"), exist_ok=True)
    save_npy(os.path.join(args.out, "evaluator", "real_u8.npy"), to_u8(x_train[-2000:]))
    variance = float(x_train.reshape(len(x_train), -1).var(axis=0).mean())
    atomic_write_bytes(os.path.join(args.out, "data_moments.json"), (json.dumps({"variance": round(variance, 6), "range": [-1.0, 1.0]}) + "\n").encode())
    print("wrote", os.path.join(args.work, "test_u8.npy"), ",", os.path.join(args.out, "evaluator", "real_u8.npy"),
          "and data_moments.json (variance", round(variance, 4), ")")


if __name__ == "__main__":
    main()
