"""The PyTorch side of `onnxalign bench --torch`: the same trained UNet (tools/train/unet.py with the training
script's EMA checkpoint), the same DDIM sampler (eta = 0, "leading" timesteps), the same steps and batch, on CPU.

    /usr/bin/python3 tools/bench/torch_loop.py --checkpoint tools/train/out/ddpm_ema.pt --steps 20 --batch 64 --repeats 5

Prints one JSON line: the median seconds of a full sampling run and the thread count. Needs tools/train/setup.sh.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "train"))
from unet import UNet  # noqa: E402


def ddim(model, x, steps, alphas_cumprod):
    stride = 1000 // steps
    timesteps = list(range(0, 1000, stride))[:steps][::-1]
    for i, t in enumerate(timesteps):
        a_t = alphas_cumprod[t]
        a_prev = alphas_cumprod[timesteps[i + 1]] if i + 1 < len(timesteps) else torch.tensor(1.0)
        eps = model(x, torch.full((x.shape[0],), float(t)))
        x0 = ((x - (1 - a_t).sqrt() * eps) / a_t.sqrt()).clamp(-1, 1)
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    return x


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--base-channels", type=int, default=24)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = UNet(base=args.base_channels)
    model.load_state_dict(torch.load(args.checkpoint))
    model.eval()
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    alphas_cumprod = torch.cumprod(1 - betas, 0).float()
    generator = torch.Generator().manual_seed(0)
    times = []
    with torch.inference_mode():
        ddim(model, torch.randn(args.batch, 1, 32, 32, generator=generator), args.steps, alphas_cumprod)  # warm-up
        for _ in range(args.repeats):
            x = torch.randn(args.batch, 1, 32, 32, generator=generator)
            start = time.perf_counter()
            ddim(model, x, args.steps, alphas_cumprod)
            times.append(time.perf_counter() - start)
    print(json.dumps({"seconds_median": statistics.median(times), "threads": args.threads, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
