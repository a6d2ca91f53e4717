"""Writes the real images the `onnxalign quality` command compares samples with (no training, seconds).

    /usr/bin/python3 tools/train/export_eval_data.py [--out models/fashion]

* tools/train/out/test_u8.npy: the 10 000 test images, uint8 [N, 1, 32, 32] (padded with 0 = pixel -1); not committed.
  `onnxalign quality models/fashion --write-reference tools/train/out/test_u8.npy` turns them into the evaluator-feature
  mean and covariance that are committed (OUT/evaluator/reference_mean.npy, reference_cov.npy).
* OUT/evaluator/real_u8.npy: the last 2 000 training images, the real-image floor of the Frechet distance.
* OUT/data_moments.json: {"variance": v}, the mean per-pixel variance of the training images in [-1, 1], used by the
  hybrid tilt's Gaussian surrogate (DESIGN section 1b).
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
    parser.add_argument("--out", default=os.path.join(HERE, "..", "..", "models", "fashion"))
    parser.add_argument("--work", default=os.path.join(HERE, "out"))
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    x_test, _ = load_split("t10k")
    save_npy(os.path.join(args.work, "test_u8.npy"), to_u8(x_test))
    x_train, _ = load_split("train")
    os.makedirs(os.path.join(args.out, "evaluator"), exist_ok=True)
    save_npy(os.path.join(args.out, "evaluator", "real_u8.npy"), to_u8(x_train[-2000:]))
    variance = float(x_train.reshape(len(x_train), -1).var(axis=0).mean())
    atomic_write_bytes(os.path.join(args.out, "data_moments.json"), (json.dumps({"variance": round(variance, 6)}) + "\n").encode())
    print("wrote", os.path.join(args.work, "test_u8.npy"), ",", os.path.join(args.out, "evaluator", "real_u8.npy"),
          "and data_moments.json (variance", round(variance, 4), ")")


if __name__ == "__main__":
    main()
