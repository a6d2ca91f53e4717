"""The PyTorch side of `onnxalign bench --torch`: the same trained UNet (tools/train/unet.py), the same DDIM sampler
(eta = 0, "leading" timesteps), the same steps and batch.

The weights come from the committed ONNX export (models/fashion/unet/model.onnx), so no retraining and no file from
tools/train/out/ is needed: every ONNX initializer is mapped onto the UNet's state_dict by name, and the few that the
exporter renamed (GroupNorm's scale and shift, folded into `onnx::Mul_N` / `onnx::Add_N` of shape [C, 1, 1]) by the
module scope of the node that consumes them (`/down_blocks.0/norm1/Mul` -> `down_blocks.0.norm1.weight`). The mapping
must use every initializer once and fill every parameter, or the script stops. `--checkpoint` loads a training
checkpoint (ddpm_ema.pt) instead.

    /usr/bin/python3 tools/bench/torch_loop.py --steps 20 --batch 64 --repeats 5
    /usr/bin/python3 tools/bench/torch_loop.py --device cuda --compile      # on a GPU machine with torch 2.x
    /usr/bin/python3 tools/bench/torch_loop.py --write-check tests/OnnxAlign.Tests/Fixtures/torch_fashion

Prints one JSON line: the median seconds of a full sampling run, the thread count, the device and the weights'
source. --write-check DIR instead writes x.npy [4,1,32,32], t.npy [4] and eps.npy (the torch network's output) for
the C# test that checks the ONNX model reproduces them (TorchParityTests; needs numpy). The ONNX file is read with
the `onnx` package where it is installed, otherwise with the small protobuf reader below (a GPU image may have torch
only).
"""
import argparse
import json
import os
import statistics
import struct
import sys
import time

import torch

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools", "train"))
from unet import UNet  # noqa: E402

DEFAULT_ONNX = os.path.join(ROOT, "models", "fashion", "unet", "model.onnx")


# --- reading an ONNX file: initializers and the nodes that consume them -------------------------------------------

def _varint(buf, i):
    value = shift = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, i


def _fields(buf):
    """Yields (field number, wire type, value) of one protobuf message; value is an int or a memoryview."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            length, i = _varint(buf, i)
            value, i = buf[i:i + length], i + length
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, wire, value


_DTYPES = {1: torch.float32, 10: torch.float16, 11: torch.float64, 7: torch.int64, 6: torch.int32}


def _tensor(buf):
    name, dims, dtype, raw, floats = "", [], None, None, []
    for field, wire, value in _fields(buf):
        if field == 1:  # dims: packed or not
            if wire == 2:
                j = 0
                while j < len(value):
                    d, j = _varint(value, j)
                    dims.append(d)
            else:
                dims.append(value)
        elif field == 2:
            dtype = value
        elif field == 4:  # float_data: packed or not
            floats.extend(struct.unpack(f"<{len(value) // 4}f", bytes(value)) if wire == 2 else struct.unpack("<f", bytes(value)))
        elif field == 8:
            name = bytes(value).decode()
        elif field == 9:
            raw = bytes(value)
        elif field == 14 and value == 1:
            raise ValueError(f"initializer {name or '?'}: external data is not supported")
    if dtype not in _DTYPES:
        raise ValueError(f"initializer {name}: data type {dtype} is not supported")
    if raw is not None:
        array = torch.frombuffer(bytearray(raw), dtype=_DTYPES[dtype]) if raw else torch.zeros(0, dtype=_DTYPES[dtype])
    else:
        array = torch.tensor(floats, dtype=_DTYPES[dtype])
    return name, array.reshape(dims).clone()


def _node(buf):
    inputs, name, op = [], "", ""
    for field, _, value in _fields(buf):
        if field == 1:
            inputs.append(bytes(value).decode())
        elif field == 3:
            name = bytes(value).decode()
        elif field == 4:
            op = bytes(value).decode()
    return name, op, inputs


def read_onnx_builtin(path):
    """(initializers {name: tensor}, nodes [(name, op_type, inputs)]) with no dependency beyond torch."""
    with open(path, "rb") as f:
        model = memoryview(f.read())
    graph = next(value for field, _, value in _fields(model) if field == 7)
    initializers, nodes = {}, []
    for field, _, value in _fields(graph):
        if field == 5:
            name, array = _tensor(value)
            initializers[name] = array
        elif field == 1:
            nodes.append(_node(value))
    return initializers, nodes


def read_onnx_package(path):
    import onnx
    from onnx import numpy_helper
    model = onnx.load(path)
    initializers = {t.name: numpy_helper.to_array(t).copy() for t in model.graph.initializer}
    nodes = [(n.name, n.op_type, list(n.input)) for n in model.graph.node]
    return initializers, nodes


def read_onnx(path):
    try:
        import onnx  # noqa: F401
    except ImportError:
        return read_onnx_builtin(path), "builtin"
    return read_onnx_package(path), "onnx " + __import__("onnx").__version__


def module_path(node_name):
    """`/down_blocks.0/norm1/Mul` -> `down_blocks.0.norm1`; `/time_mlp/time_mlp.0/Gemm` -> `time_mlp.0` (the
    exporter writes a container's child by its full dotted name, a submodule by its attribute name)."""
    path = ""
    for part in [p for p in node_name.split("/") if p][:-1]:
        path = part if not path or part.startswith(path + ".") else f"{path}.{part}"
    return path


_RENAMED = {"Mul": "weight", "Add": "bias"}  # GroupNorm = InstanceNormalization, then x * scale + shift


def state_dict_from_onnx(initializers, nodes, model):
    """The UNet's state_dict from the ONNX initializers; raises if any parameter or initializer is left over."""
    target = model.state_dict()
    consumers = {}
    for name, op, inputs in nodes:
        for i in inputs:
            if i in initializers:
                consumers.setdefault(i, []).append((name, op))
    result, sources = {}, {}
    for init, array in initializers.items():
        array = torch.as_tensor(array)
        if init in target:
            key = init
        else:
            users = consumers.get(init, [])
            if len(users) != 1 or users[0][1] not in _RENAMED:
                raise ValueError(f"initializer {init}: consumed by {users}, cannot tell which parameter it is")
            key = f"{module_path(users[0][0])}.{_RENAMED[users[0][1]]}"
            if key not in target:
                raise ValueError(f"initializer {init} (node {users[0][0]}) maps to {key}, which the UNet does not have")
        if key in result:
            raise ValueError(f"parameter {key}: from both {sources[key]} and {init}")
        want = tuple(target[key].shape)
        if array.numel() != target[key].numel() or (key == init and tuple(array.shape) != want):
            raise ValueError(f"parameter {key}: shape {want}, initializer {init} has {tuple(array.shape)}")
        result[key] = array.to(torch.float32).reshape(want).contiguous()
        sources[key] = init
    missing = sorted(set(target) - set(result))
    if missing:
        raise ValueError(f"no initializer for {missing}")
    return result, sources


def load_unet(onnx_path=None, checkpoint=None, base_channels=None):
    """(UNet in eval mode, a description of where the weights came from)."""
    if checkpoint:
        model = UNet(base=base_channels or 24)
        model.load_state_dict(torch.load(checkpoint, map_location="cpu"))
        return model.eval(), f"checkpoint {checkpoint}"
    (initializers, nodes), reader = read_onnx(onnx_path)
    if "conv_in.weight" not in initializers:
        raise SystemExit(f"{onnx_path}: no initializer conv_in.weight; not an export of tools/train/unet.py's UNet")
    base = base_channels or int(initializers["conv_in.weight"].shape[0])
    model = UNet(base=base)
    weights, sources = state_dict_from_onnx(initializers, nodes, model)
    model.load_state_dict(weights, strict=True)
    renamed = sum(1 for k, v in sources.items() if k != v)
    return model.eval(), f"onnx {os.path.relpath(onnx_path, ROOT)} ({len(sources)} initializers, {renamed} mapped by node scope; {reader})"


# --- the sampler -------------------------------------------------------------------------------------------------

def ddim(model, x, steps, alphas_cumprod):
    stride = 1000 // steps
    timesteps = list(range(0, 1000, stride))[:steps][::-1]
    one = torch.tensor(1.0, device=x.device)
    for i, t in enumerate(timesteps):
        a_t = alphas_cumprod[t]
        a_prev = alphas_cumprod[timesteps[i + 1]] if i + 1 < len(timesteps) else one
        eps = model(x, torch.full((x.shape[0],), float(t), device=x.device))
        x0 = ((x - (1 - a_t).sqrt() * eps) / a_t.sqrt()).clamp(-1, 1)
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    return x


def write_check(model, directory):
    """Inputs and the torch network's ε̂ for the C# parity test: 4 samples, each at its own timestep."""
    import numpy as np
    os.makedirs(directory, exist_ok=True)
    generator = torch.Generator().manual_seed(21)
    x = torch.randn(4, 1, 32, 32, generator=generator)
    t = torch.tensor([0.0, 250.0, 600.0, 999.0])
    with torch.inference_mode():
        eps = model(x, t)
    for name, value in (("x", x), ("t", t), ("eps", eps)):
        np.save(os.path.join(directory, f"{name}.npy"), value.numpy().astype(np.float32))
    return {"wrote": directory, "eps_abs_max": float(eps.abs().max())}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", default=DEFAULT_ONNX, help="ONNX export whose initializers are the weights (default: the committed fashion UNet)")
    parser.add_argument("--checkpoint", help="load this training checkpoint (ddpm_ema.pt) instead of the ONNX weights")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--base-channels", type=int, help="default: from conv_in.weight of the ONNX file (24 with --checkpoint)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet (torch 2.x)")
    parser.add_argument("--write-check", metavar="DIR", help="write x.npy, t.npy, eps.npy for the C# parity test and exit")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, source = load_unet(args.onnx, args.checkpoint, args.base_channels)
    if args.write_check:
        print(json.dumps({**write_check(model, args.write_check), "weights": source, "torch": torch.__version__}))
        return
    device = torch.device(args.device)
    model = model.to(device)
    if args.compile:
        model = torch.compile(model)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    alphas_cumprod = torch.cumprod(1 - betas, 0).float().to(device)
    generator = torch.Generator().manual_seed(0)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times = []
    with torch.inference_mode():
        ddim(model, torch.randn(args.batch, 1, 32, 32, generator=generator).to(device), args.steps, alphas_cumprod)  # warm-up
        sync()
        for _ in range(args.repeats):
            x = torch.randn(args.batch, 1, 32, 32, generator=generator).to(device)
            sync()
            start = time.perf_counter()
            ddim(model, x, args.steps, alphas_cumprod)
            sync()
            times.append(time.perf_counter() - start)
    print(json.dumps({"seconds_median": statistics.median(times), "threads": args.threads, "torch": torch.__version__,
                      "device": str(device), "compiled": args.compile, "weights": source}))


if __name__ == "__main__":
    main()
