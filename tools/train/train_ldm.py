"""Trains models/fashion-ldm, a small text-conditioned latent diffusion model on Fashion-MNIST laid out as the
diffusers/Optimum ONNX export of Stable Diffusion 1.5 (OnnxStableDiffusionPipeline), and exports it.

    /usr/bin/python3 tools/train/train_ldm.py [--ae-steps 1500] [--steps 1600] [--seed 0] [--out DIR] [--work DIR]

Stages (each checkpointed to WORK = tools/train/out/ldm/, so a killed run continues where it stopped):
 1. autoencoder (ldm.AutoEncoder): 1x32x32 images in [-1, 1] (padded with -1 as models/fashion) <-> 4x8x8 latents,
    MSE reconstruction + a small KL term, sampled posterior (SD's AutoencoderKL recipe in miniature);
 2. the training latents: posterior means and standard deviations; scaling_factor S = 1 / std of the means;
 3. text encoder (CLIP-style, from scratch) and UNet trained jointly: epsilon prediction on z * S (z sampled from
    the posterior) under SD 1.5's scaled_linear betas; prompts "a photo of a {name}" or "{name}" (50/50) with
    the Fashion-MNIST class names, and the empty prompt "" 10 % of the time (classifier-free guidance);
 4. checks in torch: the autoencoder's test reconstruction error, the held-out diffusion loss, and DDIM 50-step
    samples with guidance 3 per prompt, classified by models/fashion/evaluator (its weights loaded into torch),
    the grid in OUT/logs/torch_samples.png;
 5. export: OUT/{text_encoder,unet,vae_decoder,vae_encoder}/model.onnx (opset 17, dynamic batch, EMA weights of
    the text encoder and UNet), the tokenizer (tools/train/clip_tokenizer.py), scheduler and VAE configs,
    model_index.json, OUT/logs/train.json.

Deterministic given the seed (torch deterministic algorithms, one thread by default).
"""
import argparse
import json
import os
import struct
import time
import zlib

import numpy as np
import onnx
import torch
import torch.nn as nn
from onnx import numpy_helper

from clip_tokenizer import CLASS_PROMPT_NAMES, TEMPLATES, ClipTokenizer, reference_json
from common import CLASS_NAMES, Log, atomic_write_bytes, export_onnx, load_split, seed_everything
from ldm import MAX_LENGTH, AutoEncoder, CondUNet, EncoderMean, TextEncoder
from train_classifiers import Evaluator

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")

SCHEDULER = {
    "_class_name": "DDIMScheduler",
    "_diffusers_version": "0.30.0",
    "num_train_timesteps": 1000,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "trained_betas": None,
    "prediction_type": "epsilon",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "timestep_spacing": "leading",
}

MODEL_INDEX = {
    "_class_name": "OnnxStableDiffusionPipeline",
    "_diffusers_version": "0.30.0",
    "text_encoder": ["diffusers", "OnnxRuntimeModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "OnnxRuntimeModel"],
    "vae_decoder": ["diffusers", "OnnxRuntimeModel"],
    "scheduler": ["diffusers", "DDIMScheduler"],
}


def alphas_cumprod():
    """SD's scaled_linear schedule: betas = linspace(sqrt(beta_start), sqrt(beta_end), 1000)^2; float64."""
    betas = torch.linspace(SCHEDULER["beta_start"] ** 0.5, SCHEDULER["beta_end"] ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def lr_at(base, step, steps, warmup=200):
    """Linear warm-up, then cosine decay to 10 % (train_ddpm.py's schedule)."""
    return base * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * step / steps)))


def save_ckpt(path, obj):
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def kl_of(mean, logvar):
    """KL(N(mean, exp(logvar)) || N(0, 1)) per latent element."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)


# ---------------------------------------------------------------------------------------------------- stage 1

def train_autoencoder(args, log, data):
    ae = AutoEncoder()
    optimizer = torch.optim.Adam(ae.parameters(), lr=args.ae_lr)
    generator = torch.Generator().manual_seed(args.seed)
    step, seconds = 0, 0.0
    path = os.path.join(args.work, "ae.ckpt")
    if os.path.exists(path):
        ckpt = torch.load(path)
        ae.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        generator.set_state(ckpt["generator"])
        step, seconds = ckpt["step"], ckpt["seconds"]
        log(event="resume", stage="autoencoder", step=step)
    if step < args.ae_steps:
        log(event="start", stage="autoencoder", parameters=sum(p.numel() for p in ae.parameters()))
    start = time.time() - seconds
    running = None
    while step < args.ae_steps:
        lr = lr_at(args.ae_lr, step, args.ae_steps, warmup=100)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x = data[torch.randint(0, data.shape[0], (args.ae_batch,), generator=generator)]
        mean, logvar = ae.encoder(x)
        z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=generator)
        rec = (ae.decoder(z) - x).pow(2).mean()
        kl = kl_of(mean, logvar).mean()
        loss = rec + args.kl_weight * kl
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ae.parameters(), 1.0)
        optimizer.step()
        step += 1
        values = np.array([rec.item(), kl.item()])
        running = values if running is None else 0.98 * running + 0.02 * values
        if step % 50 == 0:
            log(stage="autoencoder", step=step, rec_mse=round(float(running[0]), 5), kl=round(float(running[1]), 4),
                lr=round(lr, 7), s_per_step=round((time.time() - start) / step, 3))
        if step % 250 == 0 or step == args.ae_steps:
            save_ckpt(path, {"model": ae.state_dict(), "optimizer": optimizer.state_dict(),
                             "generator": generator.get_state(), "step": step, "seconds": time.time() - start,
                             "rec_mse": float(running[0]), "kl": float(running[1])})
    ckpt = torch.load(path)
    ae.eval()
    ae.requires_grad_(False)
    return ae, ckpt


@torch.no_grad()
def encode_all(encoder, x, chunk=250):
    means, stds = [], []
    for i in range(0, x.shape[0], chunk):
        mean, logvar = encoder(x[i:i + chunk])
        means.append(mean)
        stds.append(torch.exp(0.5 * logvar))
    return torch.cat(means), torch.cat(stds)


# ---------------------------------------------------------------------------------------------------- stage 3

def prompt_table(tokenizer):
    """The 21 training prompts: index 0 = "", 1 + c = "a photo of a {name_c}", 11 + c = "{name_c}"."""
    texts = [""] + [t.format(n) for t in TEMPLATES for n in CLASS_PROMPT_NAMES]
    return texts, torch.tensor([tokenizer(t) for t in texts], dtype=torch.int32)


def train_diffusion(args, log, latent_mean, latent_std, labels, vocab_size, prompt_ids, scale):
    ab = alphas_cumprod()
    sqrt_ab, sqrt_1mab = ab.sqrt().float(), (1.0 - ab).sqrt().float()
    text, unet = TextEncoder(vocab_size, d=args.d_model), CondUNet(context_dim=args.d_model)
    text_ema, unet_ema = TextEncoder(vocab_size, d=args.d_model), CondUNet(context_dim=args.d_model)
    text_ema.load_state_dict(text.state_dict())
    unet_ema.load_state_dict(unet.state_dict())
    params = list(text.parameters()) + list(unet.parameters())
    ema_params = list(text_ema.parameters()) + list(unet_ema.parameters())
    for p in ema_params:
        p.requires_grad_(False)
    optimizer = torch.optim.Adam(params, lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed + 1)
    step, seconds = 0, 0.0
    path = os.path.join(args.work, "ldm.ckpt")
    if os.path.exists(path):
        ckpt = torch.load(path)
        text.load_state_dict(ckpt["text"])
        unet.load_state_dict(ckpt["unet"])
        text_ema.load_state_dict(ckpt["text_ema"])
        unet_ema.load_state_dict(ckpt["unet_ema"])
        optimizer.load_state_dict(ckpt["optimizer"])
        generator.set_state(ckpt["generator"])
        step, seconds = ckpt["step"], ckpt["seconds"]
        log(event="resume", stage="diffusion", step=step)
    if step < args.steps:
        log(event="start", stage="diffusion", text_encoder_parameters=sum(p.numel() for p in text.parameters()),
            unet_parameters=sum(p.numel() for p in unet.parameters()))
    start = time.time() - seconds
    running = None
    n = latent_mean.shape[0]
    while step < args.steps:
        lr = lr_at(args.lr, step, args.steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        idx = torch.randint(0, n, (args.batch,), generator=generator)
        z0 = (latent_mean[idx] + latent_std[idx] * torch.randn(latent_mean[idx].shape, generator=generator)) * scale
        template = torch.randint(0, 2, (args.batch,), generator=generator)
        drop = torch.rand(args.batch, generator=generator) < args.cond_dropout
        which = torch.where(drop, torch.zeros_like(idx), 1 + labels[idx] + 10 * template)
        t = torch.randint(0, 1000, (args.batch,), generator=generator)
        noise = torch.randn(z0.shape, generator=generator)
        zt = sqrt_ab[t][:, None, None, None] * z0 + sqrt_1mab[t][:, None, None, None] * noise
        hidden = text(prompt_ids)[0]  # all 21 prompts at once, then one row per sample
        loss = (unet(zt, t, hidden[which]) - noise).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema_params, params):
                pe.mul_(decay).add_(pm, alpha=1 - decay)
        step += 1
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 25 == 0:
            log(stage="diffusion", step=step, loss=round(running, 5), lr=round(lr, 7),
                s_per_step=round((time.time() - start) / step, 3))
        if step % 100 == 0 or step == args.steps:
            save_ckpt(path, {"text": text.state_dict(), "unet": unet.state_dict(), "text_ema": text_ema.state_dict(),
                             "unet_ema": unet_ema.state_dict(), "optimizer": optimizer.state_dict(),
                             "generator": generator.get_state(), "step": step, "seconds": time.time() - start,
                             "loss": running})
    ckpt = torch.load(path)
    text_ema.load_state_dict(ckpt["text_ema"])
    unet_ema.load_state_dict(ckpt["unet_ema"])
    for m in (text_ema, unet_ema):
        m.eval()
    return text_ema, unet_ema, ckpt


# ---------------------------------------------------------------------------------------------------- stage 4

def ddim_timesteps(steps):
    """diffusers' DDIMScheduler.set_timesteps with 'leading' spacing and steps_offset 1: 981, 961, ..., 1 for 50."""
    ratio = 1000 // steps
    return (np.arange(0, steps) * ratio).round()[::-1].astype(np.int64) + SCHEDULER["steps_offset"]


@torch.no_grad()
def sample_ddim(unet, cond, uncond, generator, steps=50, guidance=3.0, batch=64):
    """DDIM (eta 0) with classifier-free guidance, as diffusers' pipeline: eps = eps_u + g (eps_c - eps_u).
    cond [N, 77, D] (one row per sample); uncond [1, 77, D]. Returns scaled latents [N, 4, 8, 8]."""
    ab = alphas_cumprod().float()
    final = ab[0]  # set_alpha_to_one false
    ratio = 1000 // steps
    out = []
    for i in range(0, cond.shape[0], batch):
        c = cond[i:i + batch]
        b = c.shape[0]
        x = torch.randn((b, 4, 8, 8), generator=generator)  # init_noise_sigma = 1
        ctx = torch.cat([uncond.expand(b, -1, -1), c])
        for t in ddim_timesteps(steps):
            eps_u, eps_c = unet(torch.cat([x, x]), torch.tensor([int(t)]), ctx).chunk(2)
            eps = eps_u + guidance * (eps_c - eps_u)
            a = ab[t]
            a_prev = ab[t - ratio] if t - ratio >= 0 else final
            x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
            x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        out.append(x)
    return torch.cat(out)


def load_evaluator(path):
    """models/fashion's evaluator CNN with the weights of its ONNX export (initializers keep torch's names)."""
    cnn = Evaluator(32)
    weights = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in onnx.load(path).graph.initializer}
    cnn.load_state_dict({k: weights[k] for k in cnn.state_dict()})
    return cnn.eval()


def write_png_gray(path, images, rows, cols, pad=2):
    """images float [N, 1, H, W] in [-1, 1], laid out row-major in a rows x cols grid, as an 8-bit grey PNG."""
    n, _, h, w = images.shape
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad), 128, dtype=np.uint8)
    u8 = np.clip((images[:, 0] + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    for k in range(min(n, rows * cols)):
        r, c = divmod(k, cols)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = u8[k]

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + grid[y].tobytes() for y in range(grid.shape[0]))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", grid.shape[1], grid.shape[0], 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    atomic_write_bytes(path, png)


# ---------------------------------------------------------------------------------------------------- stage 5

class TextEncoderExport(nn.Module):
    def __init__(self, text):
        super().__init__()
        self.text = text

    def forward(self, input_ids):
        return self.text(input_ids)


class UNetExport(nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states)


def write_json(path, obj):
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def export_all(out, tokenizer, text, unet, ae, scale, d):
    for sub in ("text_encoder", "unet", "vae_decoder", "vae_encoder", "scheduler", "tokenizer", "logs"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    tokenizer.write(os.path.join(out, "tokenizer"))
    atomic_write_bytes(os.path.join(out, "tokenizer_reference.json"), reference_json(tokenizer))
    ids = torch.tensor([tokenizer("a photo of a bag"), tokenizer("")], dtype=torch.int32)
    export_onnx(TextEncoderExport(text), (ids,), os.path.join(out, "text_encoder", "model.onnx"),
                ["input_ids"], ["last_hidden_state", "pooler_output"])
    declare_output_shapes(os.path.join(out, "text_encoder", "model.onnx"),
                          {"last_hidden_state": ["batch", MAX_LENGTH, d], "pooler_output": ["batch", d]})
    # The timestep's length is its own dynamic axis: a caller may feed [1] (broadcast over the batch) or [batch].
    example = (torch.randn(2, 4, 8, 8), torch.tensor([981, 1], dtype=torch.int64), torch.randn(2, MAX_LENGTH, d))
    export_onnx(UNetExport(unet), example, os.path.join(out, "unet", "model.onnx"),
                ["sample", "timestep", "encoder_hidden_states"], ["out_sample"],
                dynamic_axes={"sample": {0: "batch"}, "timestep": {0: "timestep_batch"},
                              "encoder_hidden_states": {0: "batch"}, "out_sample": {0: "batch"}})
    declare_output_shapes(os.path.join(out, "unet", "model.onnx"), {"out_sample": ["batch", 4, 8, 8]})
    export_onnx(ae.decoder, (torch.randn(2, 4, 8, 8),), os.path.join(out, "vae_decoder", "model.onnx"),
                ["latent_sample"], ["sample"])
    declare_output_shapes(os.path.join(out, "vae_decoder", "model.onnx"), {"sample": ["batch", 1, 32, 32]})
    export_onnx(EncoderMean(ae.encoder), (torch.zeros(2, 1, 32, 32),), os.path.join(out, "vae_encoder", "model.onnx"),
                ["sample"], ["latent_sample"])
    declare_output_shapes(os.path.join(out, "vae_encoder", "model.onnx"), {"latent_sample": ["batch", 4, 8, 8]})
    vae = {"_class_name": "AutoencoderKL", "_diffusers_version": "0.30.0", "in_channels": 1, "out_channels": 1,
           "latent_channels": 4, "sample_size": 32, "scaling_factor": scale}
    write_json(os.path.join(out, "vae_decoder", "config.json"), vae)
    write_json(os.path.join(out, "vae_encoder", "config.json"), vae)
    write_json(os.path.join(out, "text_encoder", "config.json"),
               {"_class_name": "CLIPTextModel", "hidden_size": d, "num_hidden_layers": len(text.layers),
                "num_attention_heads": text.layers[0].heads, "max_position_embeddings": MAX_LENGTH,
                "vocab_size": tokenizer.eos_id + 1, "bos_token_id": tokenizer.bos_id,
                "eos_token_id": tokenizer.eos_id, "pad_token_id": tokenizer.pad_id})
    write_json(os.path.join(out, "unet", "config.json"),
               {"_class_name": "UNet2DConditionModel", "in_channels": 4, "out_channels": 4, "sample_size": 8,
                "cross_attention_dim": d})
    write_json(os.path.join(out, "scheduler", "scheduler_config.json"), SCHEDULER)
    write_json(os.path.join(out, "model_index.json"), MODEL_INDEX)


def declare_output_shapes(path, shapes):
    """Writes the known output shapes into the graph (torch's exporter leaves dims after Resize/MatMul symbolic)."""
    model = onnx.load(path)
    for out in model.graph.output:
        dims = out.type.tensor_type.shape.dim
        for dim, value in zip(dims, shapes[out.name]):
            if isinstance(value, str):
                dim.dim_param = value
            else:
                dim.dim_value = value
    onnx.checker.check_model(model)
    atomic_write_bytes(path, model.SerializeToString())


def describe_onnx(path):
    """Checks the model and returns its inputs and outputs as {name: [elem type, shape]}."""
    model = onnx.load(path)
    onnx.checker.check_model(model)
    if model.opset_import[0].version != 17:
        raise ValueError(f"{path}: opset {model.opset_import[0].version}")

    def desc(values):
        return {v.name: [onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type),
                         [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]] for v in values}

    return {"inputs": desc(model.graph.input), "outputs": desc(model.graph.output), "bytes": os.path.getsize(path)}


# ---------------------------------------------------------------------------------------------------- main

def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ae-steps", type=int, default=1500)
    parser.add_argument("--ae-batch", type=int, default=64)
    parser.add_argument("--ae-lr", type=float, default=1e-3)
    parser.add_argument("--kl-weight", type=float, default=1e-4, help="KL weight against the per-pixel MSE")
    parser.add_argument("--steps", type=int, default=1600)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--cond-dropout", type=float, default=0.1)
    parser.add_argument("--d-model", type=int, default=64, help="text encoder width D (= cross-attention dim)")
    parser.add_argument("--samples-per-prompt", type=int, default=16)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--sample-steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=os.path.join(ROOT, "models", "fashion-ldm"))
    parser.add_argument("--work", default=os.path.join(HERE, "out", "ldm"))
    parser.add_argument("--evaluator", default=os.path.join(ROOT, "models", "fashion", "evaluator", "model.onnx"))
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    os.makedirs(args.work, exist_ok=True)
    log_path = os.path.join(args.work, "ldm_log.jsonl")
    log = Log(log_path, append=os.path.exists(os.path.join(args.work, "ae.ckpt")))
    log(event="run", **vars(args))
    tokenizer = ClipTokenizer.for_prompts()
    x_train, y_train = map(torch.from_numpy, load_split("train", 32))
    x_test, y_test = map(torch.from_numpy, load_split("t10k", 32))

    # 1. autoencoder
    ae, ae_ckpt = train_autoencoder(args, log, x_train)
    mean_test, _ = encode_all(ae.encoder, x_test)
    with torch.no_grad():
        rec_test = torch.cat([ae.decoder(mean_test[i:i + 1000]) for i in range(0, 10000, 1000)])
    rec_mse = float((rec_test - x_test).pow(2).mean())
    rec_mae = float((rec_test - x_test).abs().mean())
    evaluator = load_evaluator(args.evaluator) if os.path.exists(args.evaluator) else None
    rec_acc = None
    if evaluator is not None:
        with torch.no_grad():
            rec_acc = float(torch.cat([evaluator(rec_test[i:i + 1000])[0] for i in range(0, 10000, 1000)])
                            .argmax(1).eq(y_test).float().mean())
    log(stage="autoencoder", event="done", train_seconds=round(ae_ckpt["seconds"], 1), steps=ae_ckpt["step"],
        train_rec_mse=round(ae_ckpt["rec_mse"], 5), train_kl=round(ae_ckpt["kl"], 4),
        test_rec_mse=round(rec_mse, 5), test_rec_mae=round(rec_mae, 5), evaluator_accuracy_on_reconstructions=rec_acc)

    # 2. latents and the scaling factor
    latents_path = os.path.join(args.work, "latents.pt")
    if os.path.exists(latents_path):
        latent_mean, latent_std = torch.load(latents_path)
    else:
        t0 = time.time()
        latent_mean, latent_std = encode_all(ae.encoder, x_train)
        save_ckpt(latents_path, (latent_mean, latent_std))
        log(stage="latents", encode_seconds=round(time.time() - t0, 1))
    scale = float(1.0 / latent_mean.std())
    log(stage="latents", scaling_factor=round(scale, 6), latent_mean=round(float(latent_mean.mean()), 4),
        latent_std=round(float(latent_mean.std()), 4),
        channel_mean=[round(float(v), 3) for v in latent_mean.mean(dim=(0, 2, 3))],
        channel_std=[round(float(v), 3) for v in latent_mean.std(dim=(0, 2, 3))],
        posterior_std_mean=round(float(latent_std.mean()), 5))

    # 3. text encoder + UNet
    texts, prompt_ids = prompt_table(tokenizer)
    text, unet, ldm_ckpt = train_diffusion(args, log, latent_mean, latent_std, y_train, tokenizer.eos_id + 1,
                                           prompt_ids, scale)

    # 4. checks in torch: held-out loss (fixed noise, "a photo of a {name}"), samples per prompt.
    ab = alphas_cumprod().float()
    g = torch.Generator().manual_seed(12345)
    with torch.no_grad():
        hidden = text(prompt_ids)[0]
        z0 = mean_test[:2000] * scale
        t = torch.randint(0, 1000, (2000,), generator=g)
        noise = torch.randn(z0.shape, generator=g)
        zt = ab[t].sqrt()[:, None, None, None] * z0 + (1 - ab[t]).sqrt()[:, None, None, None] * noise
        ctx = hidden[1 + y_test[:2000]]
        test_loss = sum((unet(zt[i:i + 250], t[i:i + 250], ctx[i:i + 250]) - noise[i:i + 250]).pow(2).mean().item()
                        for i in range(0, 2000, 250)) / 8
        test_loss_uncond = sum((unet(zt[i:i + 250], t[i:i + 250], hidden[:1].expand(250, -1, -1)) - noise[i:i + 250])
                               .pow(2).mean().item() for i in range(0, 2000, 250)) / 8
    log(stage="diffusion", event="done", train_seconds=round(ldm_ckpt["seconds"], 1), steps=ldm_ckpt["step"],
        train_loss_ema=round(ldm_ckpt["loss"], 5), test_loss=round(test_loss, 5),
        test_loss_empty_prompt=round(test_loss_uncond, 5))

    t0 = time.time()
    k = args.samples_per_prompt
    g = torch.Generator().manual_seed(args.seed + 2)
    per_prompt = {}
    grid = []
    with torch.no_grad():
        for c in range(10):
            z = sample_ddim(unet, hidden[1 + c].expand(k, -1, -1), hidden[:1], g, args.sample_steps, args.guidance)
            images = ae.decoder(z / scale)
            grid.append(images[:16])
            if evaluator is not None:
                probs = torch.softmax(evaluator(images)[0], dim=1)
                per_prompt[texts[1 + c]] = {"evaluator_accuracy": round(float(probs.argmax(1).eq(c).float().mean()), 4),
                                            "mean_prob_of_class": round(float(probs[:, c].mean()), 4)}
        z = sample_ddim(unet, hidden[:1].expand(k, -1, -1), hidden[:1], g, args.sample_steps, 1.0)
        uncond_images = ae.decoder(z / scale)
    os.makedirs(os.path.join(args.out, "logs"), exist_ok=True)
    write_png_gray(os.path.join(args.out, "logs", "torch_samples.png"), torch.cat(grid).numpy(), 10, 16)
    write_png_gray(os.path.join(args.out, "logs", "torch_samples_empty_prompt.png"), uncond_images[:16].numpy(), 1, 16)
    write_png_gray(os.path.join(args.out, "logs", "autoencoder_test_reconstructions.png"),
                   torch.stack([x_test[:16], rec_test[:16]], 0).reshape(32, 1, 32, 32).numpy(), 2, 16)
    hist = None
    if evaluator is not None:
        hist = np.bincount(evaluator(uncond_images)[0].argmax(1).numpy(), minlength=10).tolist()
    mean_acc = float(np.mean([v["evaluator_accuracy"] for v in per_prompt.values()])) if per_prompt else None
    log(stage="samples", sampler=f"DDIM {args.sample_steps} steps, eta 0", guidance=args.guidance,
        samples_per_prompt=k, per_prompt=per_prompt, mean_evaluator_accuracy=mean_acc,
        empty_prompt_guidance_1_class_histogram=dict(zip(CLASS_NAMES, hist)) if hist else None,
        seconds=round(time.time() - t0, 1))

    # 5. export
    export_all(args.out, tokenizer, text, unet, ae, scale, args.d_model)
    graphs = {name: describe_onnx(os.path.join(args.out, name, "model.onnx"))
              for name in ("text_encoder", "unet", "vae_decoder", "vae_encoder")}
    log(stage="export", graphs=graphs)
    with open(log_path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    atomic_write_bytes(os.path.join(args.out, "logs", "train.json"), (json.dumps(records, indent=1) + "\n").encode())


if __name__ == "__main__":
    main()
