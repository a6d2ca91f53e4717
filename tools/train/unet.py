"""A small DDPM epsilon-prediction UNet for 1x32x32 images (Ho et al. 2020, with GroupNorm/SiLU residual blocks
and self-attention at 8x8). Sized for <= 2 h of training on 2 CPU cores."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def timestep_embedding(t, dim):
    """Sinusoidal embedding of (possibly fractional) timesteps, as in the transformer/DDPM papers."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, emb_dim):
        super().__init__()
        self.norm1 = nn.GroupNorm(8, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2 = nn.GroupNorm(8, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm = nn.GroupNorm(8, c)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.out = nn.Conv2d(c, c, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
        weights = torch.softmax(torch.einsum("bci,bcj->bij", q, k) / math.sqrt(c), dim=-1)
        h_ = torch.einsum("bij,bcj->bci", weights, v).reshape(b, c, h, w)
        return x + self.out(h_)


class UNet(nn.Module):
    def __init__(self, base=32, mults=(1, 2, 2), emb_dim=128):
        super().__init__()
        self.emb_dim = emb_dim
        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        chans = [base * m for m in mults]
        self.conv_in = nn.Conv2d(1, chans[0], 3, padding=1)
        self.down_blocks = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        skips = [chans[0]]
        cin = chans[0]
        for i, c in enumerate(chans):
            self.down_blocks.append(ResBlock(cin, c, emb_dim))
            cin = c
            skips.append(c)
            if i < len(chans) - 1:
                self.downsamples.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
        self.mid1 = ResBlock(cin, cin, emb_dim)
        self.mid_attn = Attention(cin)
        self.mid2 = ResBlock(cin, cin, emb_dim)
        self.up_blocks = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        for i, c in reversed(list(enumerate(chans))):
            blocks = nn.ModuleList()
            for _ in range(2):
                blocks.append(ResBlock(cin + skips.pop(), c, emb_dim))
                cin = c
            self.up_blocks.append(blocks)
            if i > 0:
                self.upsamples.append(nn.Conv2d(c, c, 3, padding=1))
        self.norm_out = nn.GroupNorm(8, cin)
        self.conv_out = nn.Conv2d(cin, 1, 3, padding=1)

    def forward(self, sample, timestep):
        emb = self.time_mlp(timestep_embedding(timestep, self.emb_dim))
        h = self.conv_in(sample)
        hs = [h]
        for i, block in enumerate(self.down_blocks):
            h = block(h, emb)
            hs.append(h)
            if i < len(self.downsamples):
                h = self.downsamples[i](h)
                hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for i, blocks in enumerate(self.up_blocks):
            for block in blocks:
                h = block(torch.cat([h, hs.pop()], dim=1), emb)
            if i < len(self.upsamples):
                h = self.upsamples[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))
