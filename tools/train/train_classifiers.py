"""Trains the two Fashion-MNIST classifiers and exports them beside the diffusion model.

    /usr/bin/python3 tools/train/train_classifiers.py [--preset fashion|fashion-v] [--seed 0] [--out DIR]

The preset picks the image size of the diffusion model the classifiers go with: fashion (32x32, padded; OUT =
models/fashion) or fashion-v (28x28; OUT = models/fashion-v). Below, S is that size.

* OUT/classifier/: a linear classifier (multinomial logistic regression on the S*S pixels in [-1, 1],
  L2-regularised, full-batch L-BFGS) as W.npy [10, S*S], b.npy [10], model.onnx and classes.json. This is the
  linear / low-rank reward (class:NAME, log-prob:NAME, lowrank rewards).
* OUT/evaluator/: an independent CNN (three conv layers, 128 features) used only to *evaluate* samples
  (class histogram, confidence, Frechet distance of its features), never as a reward. model.onnx has the
  input `x` [batch, 1, S, S] and two outputs: `logits` [batch, 10] and `features` [batch, 128].
"""
import argparse
import json
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from common import CLASS_NAMES, Log, atomic_write_bytes, export_onnx, load_split, save_npy, seed_everything

HERE = os.path.dirname(os.path.abspath(__file__))


class Evaluator(nn.Module):
    def __init__(self, size=32):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv3 = nn.Conv2d(64, 128, 3, padding=1)
        self.fc1 = nn.Linear(128 * (size // 8) ** 2, 128)  # three 2x2 poolings (floor)
        self.fc2 = nn.Linear(128, 10)
        self.dropout = nn.Dropout(0.3)

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        h = F.max_pool2d(F.relu(self.conv3(h)), 2)
        features = F.relu(self.fc1(h.flatten(1)))
        return self.fc2(self.dropout(features)), features


class Linear(nn.Module):
    def __init__(self, w, b):
        super().__init__()
        self.w = nn.Parameter(w)
        self.b = nn.Parameter(b)

    def forward(self, x):
        return x.flatten(1) @ self.w.t() + self.b


def accuracy(logits, labels):
    return float((logits.argmax(1) == labels).float().mean())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--l2", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--preset", choices=["fashion", "fashion-v"], default="fashion")
    parser.add_argument("--out", default=None, help="model folder (default: the preset's)")
    parser.add_argument("--work", default=None, help="logs (default: the preset's)")
    args = parser.parse_args()
    size = 32 if args.preset == "fashion" else 28
    args.out = args.out or os.path.join(HERE, "..", "..", "models", args.preset)
    args.work = args.work or (os.path.join(HERE, "out") if args.preset == "fashion" else os.path.join(HERE, "out", args.preset))
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    log = Log(os.path.join(args.work, "classifiers_log.jsonl"))
    x_train, y_train = map(torch.from_numpy, load_split("train", size))
    x_test, y_test = map(torch.from_numpy, load_split("t10k", size))

    # Linear classifier: convex problem, solved to convergence by full-batch L-BFGS (deterministic).
    flat = x_train.flatten(1)
    linear = Linear(torch.zeros(10, size * size), torch.zeros(10))
    opt = torch.optim.LBFGS(linear.parameters(), lr=1, max_iter=300, history_size=20,
                            tolerance_grad=1e-7, tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(flat @ linear.w.t() + linear.b, y_train) + 0.5 * args.l2 * linear.w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        lin_train = accuracy(linear(x_train), y_train)
        lin_test = accuracy(linear(x_test), y_test)
    log(model="linear", train_accuracy=round(lin_train, 4), test_accuracy=round(lin_test, 4), l2=args.l2)
    out = os.path.join(args.out, "classifier")
    os.makedirs(out, exist_ok=True)
    save_npy(os.path.join(out, "W.npy"), linear.w.detach().numpy().astype(np.float32))
    save_npy(os.path.join(out, "b.npy"), linear.b.detach().numpy().astype(np.float32))
    export_onnx(linear, (torch.zeros(2, 1, size, size),), os.path.join(out, "model.onnx"), ["x"], ["logits"])
    atomic_write_bytes(os.path.join(out, "classes.json"), (json.dumps(CLASS_NAMES) + "\n").encode())

    # Evaluator CNN: Adam, minibatches in a seeded order, learning rate halved every two epochs.
    cnn = Evaluator(size)
    opt = torch.optim.Adam(cnn.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        cnn.train()
        for group in opt.param_groups:
            group["lr"] = 1e-3 * 0.5 ** (epoch // 2)
        order = torch.randperm(x_train.shape[0], generator=generator)
        total = 0.0
        for i in range(0, len(order), 128):
            idx = order[i:i + 128]
            loss = F.cross_entropy(cnn(x_train[idx])[0], y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        cnn.eval()
        with torch.no_grad():
            test = accuracy(torch.cat([cnn(x_test[i:i + 1000])[0] for i in range(0, 10000, 1000)]), y_test)
        log(model="evaluator", epoch=epoch + 1, train_loss=round(total / len(order), 4), test_accuracy=round(test, 4))
    out = os.path.join(args.out, "evaluator")
    os.makedirs(out, exist_ok=True)
    export_onnx(cnn, (torch.zeros(2, 1, size, size),), os.path.join(out, "model.onnx"), ["x"], ["logits", "features"])
    atomic_write_bytes(os.path.join(out, "classes.json"), (json.dumps(CLASS_NAMES) + "\n").encode())
    log(event="done", linear_test_accuracy=round(lin_test, 4), evaluator_test_accuracy=round(test, 4))


if __name__ == "__main__":
    main()
