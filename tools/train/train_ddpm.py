"""Trains the Fashion-MNIST DDPM (epsilon prediction, linear betas 1e-4..0.02, 1000 steps) and exports it.

    /usr/bin/python3 tools/train/train_ddpm.py [--steps 3000] [--seed 0] [--out models/fashion]

Deterministic given the seed (torch deterministic algorithms, fixed thread count). Checkpoints every 250 steps
to tools/train/out/ddpm.ckpt so a killed run continues where it stopped (--resume is automatic). Writes the
diffusers layout: OUT/unet/model.onnx (EMA weights, opset 17, dynamic batch, inputs sample/timestep, output
out_sample), OUT/scheduler/scheduler_config.json, OUT/model_index.json, and a JSON log for the model card.
"""
import argparse
import json
import os
import time

import numpy as np
import torch

from common import Log, atomic_write_bytes, export_onnx, load_split, seed_everything
from unet import UNet

HERE = os.path.dirname(os.path.abspath(__file__))

SCHEDULER_CONFIG = {
    "_class_name": "DDPMScheduler",
    "num_train_timesteps": 1000,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "prediction_type": "epsilon",
    "variance_type": "fixed_small",
    "clip_sample": True,
    "clip_sample_range": 1.0,
    "timestep_spacing": "leading",
    "steps_offset": 0,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--base-channels", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=os.path.join(HERE, "..", "..", "models", "fashion"))
    parser.add_argument("--work", default=os.path.join(HERE, "out"))
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    os.makedirs(args.work, exist_ok=True)
    log = Log(os.path.join(args.work, "ddpm_log.jsonl"))
    x_train, _ = load_split("train")
    data = torch.from_numpy(x_train)

    betas = torch.linspace(SCHEDULER_CONFIG["beta_start"], SCHEDULER_CONFIG["beta_end"], 1000, dtype=torch.float64)
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    sqrt_ab = alphas_cumprod.sqrt().float()
    sqrt_1mab = (1.0 - alphas_cumprod).sqrt().float()

    model = UNet(base=args.base_channels)
    ema = UNet(base=args.base_channels)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    step = 0
    ckpt_path = os.path.join(args.work, "ddpm.ckpt")
    if os.path.exists(ckpt_path):
        ckpt = torch.load(ckpt_path)
        model.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        optimizer.load_state_dict(ckpt["optimizer"])
        generator.set_state(ckpt["generator"])
        step = ckpt["step"]
        log(event="resume", step=step)
    params = sum(p.numel() for p in model.parameters())
    log(event="start", parameters=params, **vars(args))

    start = time.time()
    running = 0.0
    while step < args.steps:
        # Linear warm-up over 200 steps, then cosine decay to 10% - a short schedule wants both.
        progress = step / args.steps
        lr = args.lr * min(1.0, (step + 1) / 200) * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * progress)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        idx = torch.randint(0, data.shape[0], (args.batch,), generator=generator)
        x0 = data[idx]
        t = torch.randint(0, 1000, (args.batch,), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        xt = sqrt_ab[t][:, None, None, None] * x0 + sqrt_1mab[t][:, None, None, None] * noise
        loss = (model(xt, t) - noise).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.mul_(decay).add_(pm, alpha=1 - decay)
        step += 1
        running = 0.98 * running + 0.02 * loss.item() if step > 1 else loss.item()
        if step % 50 == 0:
            log(step=step, loss=round(running, 5), lr=round(lr, 7),
                s_per_step=round((time.time() - start) / max(1, step), 3))
        if step % 250 == 0 or step == args.steps:
            tmp = ckpt_path + ".tmp"
            torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                        "generator": generator.get_state(), "step": step}, tmp)
            os.replace(tmp, ckpt_path)

    # Held-out loss of the EMA model on test images (fixed noise), for the model card.
    x_test, _ = load_split("t10k")
    g = torch.Generator().manual_seed(12345)
    with torch.no_grad():
        xt0 = torch.from_numpy(x_test[:2000])
        t = torch.randint(0, 1000, (2000,), generator=g)
        noise = torch.randn(xt0.shape, generator=g)
        xt = sqrt_ab[t][:, None, None, None] * xt0 + sqrt_1mab[t][:, None, None, None] * noise
        test_loss = sum((ema(xt[i:i + 250], t[i:i + 250]) - noise[i:i + 250]).pow(2).mean().item()
                        for i in range(0, 2000, 250)) / 8
    torch.save(ema.state_dict(), os.path.join(args.work, "ddpm_ema.pt"))
    export(ema, args.out)
    log(event="done", step=step, train_loss_ema=round(running, 5), test_loss=round(test_loss, 5),
        train_seconds=round(time.time() - start, 1), parameters=params)


def export(model, out_dir):
    os.makedirs(os.path.join(out_dir, "unet"), exist_ok=True)
    os.makedirs(os.path.join(out_dir, "scheduler"), exist_ok=True)
    example = (torch.randn(2, 1, 32, 32), torch.tensor([10.0, 500.0]))
    export_onnx(model, example, os.path.join(out_dir, "unet", "model.onnx"), ["sample", "timestep"], ["out_sample"])
    atomic_write_bytes(os.path.join(out_dir, "scheduler", "scheduler_config.json"),
                       (json.dumps(SCHEDULER_CONFIG, indent=2) + "\n").encode())
    index = {"_class_name": "DDPMPipeline", "unet": ["diffusers", "UNet2DModel"],
             "scheduler": ["diffusers", "DDPMScheduler"]}
    atomic_write_bytes(os.path.join(out_dir, "model_index.json"), (json.dumps(index, indent=2) + "\n").encode())


if __name__ == "__main__":
    main()
