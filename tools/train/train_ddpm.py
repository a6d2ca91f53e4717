"""Trains a Fashion-MNIST diffusion model and exports it. Two presets, so that no conclusion rests on one network:

    /usr/bin/python3 tools/train/train_ddpm.py                      # models/fashion: 1x32x32 (padded), linear betas
                                                                    # 1e-4..0.02, epsilon prediction, DDPMScheduler
    /usr/bin/python3 tools/train/train_ddpm.py --preset fashion-v   # models/fashion-v: 1x28x28 (unpadded), cosine
                                                                    # schedule (squaredcos_cap_v2), v-prediction,
                                                                    # DDIMScheduler, trailing spacing, no clip_sample
    [--steps 3000] [--seed 0] [--out DIR] [--work DIR]

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

PRESETS = {
    "fashion": {
        "image_size": 32,
        "out": os.path.join(HERE, "..", "..", "models", "fashion"),
        "work": os.path.join(HERE, "out"),
        "scheduler": {
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
        },
        "pipeline": ["DDPMPipeline", "DDPMScheduler"],
    },
    # Another schedule, parameterisation and layout: the data range is not in the scheduler config (clip_sample is
    # off, as in many exports), so it is declared in data_moments.json by export_eval_data.py.
    "fashion-v": {
        "image_size": 28,
        "out": os.path.join(HERE, "..", "..", "models", "fashion-v"),
        "work": os.path.join(HERE, "out", "fashion-v"),
        "scheduler": {
            "_class_name": "DDIMScheduler",
            "num_train_timesteps": 1000,
            "beta_schedule": "squaredcos_cap_v2",
            "prediction_type": "v_prediction",
            "clip_sample": False,
            "set_alpha_to_one": False,
            "timestep_spacing": "trailing",
            "steps_offset": 0,
        },
        "pipeline": ["DDIMPipeline", "DDIMScheduler"],
    },
}


def alphas_cumprod_of(config):
    """alpha-bar_t of the config's beta schedule (diffusers' constructors), float64."""
    n = config["num_train_timesteps"]
    if config["beta_schedule"] == "linear":
        betas = torch.linspace(config["beta_start"], config["beta_end"], n, dtype=torch.float64)
    elif config["beta_schedule"] == "squaredcos_cap_v2":
        def alpha_bar(t):
            return np.cos((t + 0.008) / 1.008 * np.pi / 2) ** 2
        betas = torch.tensor([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)],
                             dtype=torch.float64)
    else:
        raise ValueError(config["beta_schedule"])
    return torch.cumprod(1.0 - betas, dim=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--base-channels", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="fashion")
    parser.add_argument("--out", default=None, help="model folder (default: the preset's)")
    parser.add_argument("--work", default=None, help="checkpoints and logs (default: the preset's)")
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    config = preset["scheduler"]
    args.out = args.out or preset["out"]
    args.work = args.work or preset["work"]

    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    os.makedirs(args.work, exist_ok=True)
    log = Log(os.path.join(args.work, "ddpm_log.jsonl"))
    size = preset["image_size"]
    x_train, _ = load_split("train", size)
    data = torch.from_numpy(x_train)
    v_prediction = config["prediction_type"] == "v_prediction"

    alphas_cumprod = alphas_cumprod_of(config)
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
        # v = alpha*eps - sigma*x0 (DESIGN section 0) for v-prediction, else the noise itself.
        target = sqrt_ab[t][:, None, None, None] * noise - sqrt_1mab[t][:, None, None, None] * x0 if v_prediction else noise
        loss = (model(xt, t) - target).pow(2).mean()
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
    x_test, _ = load_split("t10k", size)
    g = torch.Generator().manual_seed(12345)
    with torch.no_grad():
        xt0 = torch.from_numpy(x_test[:2000])
        t = torch.randint(0, 1000, (2000,), generator=g)
        noise = torch.randn(xt0.shape, generator=g)
        xt = sqrt_ab[t][:, None, None, None] * xt0 + sqrt_1mab[t][:, None, None, None] * noise
        target = sqrt_ab[t][:, None, None, None] * noise - sqrt_1mab[t][:, None, None, None] * xt0 if v_prediction else noise
        test_loss = sum((ema(xt[i:i + 250], t[i:i + 250]) - target[i:i + 250]).pow(2).mean().item()
                        for i in range(0, 2000, 250)) / 8
    torch.save(ema.state_dict(), os.path.join(args.work, "ddpm_ema.pt"))
    export(ema, args.out, preset)
    log(event="done", step=step, train_loss_ema=round(running, 5), test_loss=round(test_loss, 5),
        train_seconds=round(time.time() - start, 1), parameters=params)


def export(model, out_dir, preset):
    os.makedirs(os.path.join(out_dir, "unet"), exist_ok=True)
    os.makedirs(os.path.join(out_dir, "scheduler"), exist_ok=True)
    size = preset["image_size"]
    example = (torch.randn(2, 1, size, size), torch.tensor([10.0, 500.0]))
    export_onnx(model, example, os.path.join(out_dir, "unet", "model.onnx"), ["sample", "timestep"], ["out_sample"])
    atomic_write_bytes(os.path.join(out_dir, "scheduler", "scheduler_config.json"),
                       (json.dumps(preset["scheduler"], indent=2) + "\n").encode())
    pipeline, scheduler = preset["pipeline"]
    index = {"_class_name": pipeline, "unet": ["diffusers", "UNet2DModel"], "scheduler": ["diffusers", scheduler]}
    atomic_write_bytes(os.path.join(out_dir, "model_index.json"), (json.dumps(index, indent=2) + "\n").encode())


if __name__ == "__main__":
    main()
