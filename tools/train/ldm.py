"""The three networks of models/fashion-ldm, a small Stable-Diffusion-shaped latent diffusion model:

* AutoEncoder: KL-regularised conv autoencoder 1x32x32 <-> 4x8x8 (SD's AutoencoderKL in miniature). The decoder
  ends in tanh and writes the 2-pixel padding border as exactly -1, the background value of the padded data.
* TextEncoder: CLIP-style text transformer (token + learned position embedding, pre-LN layers with a causal mask,
  final LayerNorm); pooler_output is the hidden state at the EOS token (argmax of the ids, as CLIP).
* CondUNet: epsilon-prediction UNet on the 4x8x8 latent with sinusoidal time embedding and, in every block,
  SD's transformer block (self-attention, cross-attention to all 77 encoder_hidden_states, feed-forward).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from unet import timestep_embedding

MAX_LENGTH = 77


def group_norm(c):
    return nn.GroupNorm(8 if c % 8 == 0 else 4, c)


class ResBlock(nn.Module):
    """GroupNorm/SiLU residual block; emb (time embedding) optional. A [1, E] emb broadcasts over the batch."""

    def __init__(self, cin, cout, emb_dim=None):
        super().__init__()
        self.norm1 = group_norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout) if emb_dim else None
        self.norm2 = group_norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb=None):
        h = self.conv1(F.silu(self.norm1(x)))
        if self.emb is not None:
            h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


# ---------------------------------------------------------------------------------------------------- autoencoder

class Encoder(nn.Module):
    def __init__(self, chans=(16, 32, 64), latent=4):
        super().__init__()
        c0, c1, c2 = chans
        self.conv_in = nn.Conv2d(1, c0, 3, padding=1)
        self.block0 = ResBlock(c0, c0)                            # 32x32
        self.down0 = nn.Conv2d(c0, c1, 3, stride=2, padding=1)
        self.block1 = ResBlock(c1, c1)                            # 16x16
        self.down1 = nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        self.block2 = ResBlock(c2, c2)                            # 8x8
        self.block3 = ResBlock(c2, c2)
        self.norm_out = group_norm(c2)
        self.conv_out = nn.Conv2d(c2, 2 * latent, 3, padding=1)  # mean, log-variance

    def forward(self, x):
        h = self.block0(self.conv_in(x))
        h = self.block1(self.down0(h))
        h = self.block3(self.block2(self.down1(h)))
        mean, logvar = self.conv_out(F.silu(self.norm_out(h))).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)


class Decoder(nn.Module):
    def __init__(self, chans=(16, 32, 64), latent=4, size=32, border=2):
        super().__init__()
        c0, c1, c2 = chans
        self.conv_in = nn.Conv2d(latent, c2, 3, padding=1)
        self.block2 = ResBlock(c2, c2)                            # 8x8
        self.block3 = ResBlock(c2, c2)
        self.up1 = nn.Conv2d(c2, c1, 3, padding=1)
        self.block1 = ResBlock(c1, c1)                            # 16x16
        self.up0 = nn.Conv2d(c1, c0, 3, padding=1)
        self.block0 = ResBlock(c0, c0)                            # 32x32
        self.norm_out = group_norm(c0)
        self.conv_out = nn.Conv2d(c0, 1, 3, padding=1)
        inner = torch.zeros(1, 1, size, size)
        inner[:, :, border:size - border, border:size - border] = 1.0
        self.register_buffer("inner", inner)

    def forward(self, z):
        h = self.block3(self.block2(self.conv_in(z)))
        h = self.block1(self.up1(F.interpolate(h, scale_factor=2.0, mode="nearest")))
        h = self.block0(self.up0(F.interpolate(h, scale_factor=2.0, mode="nearest")))
        x = torch.tanh(self.conv_out(F.silu(self.norm_out(h))))
        return x * self.inner + (self.inner - 1.0)  # the padding border is exactly -1, as in the data


class AutoEncoder(nn.Module):
    def __init__(self, chans=(16, 32, 64), latent=4):
        super().__init__()
        self.encoder = Encoder(chans, latent)
        self.decoder = Decoder(chans, latent)


class EncoderMean(nn.Module):
    """vae_encoder export: sample -> latent_sample (the posterior mean, unscaled)."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, sample):
        return self.encoder(sample)[0]


# ---------------------------------------------------------------------------------------------------- text encoder

class TextLayer(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.head_dim = d // heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)

    def forward(self, x, mask):
        b, n, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + mask, dim=-1)
        x = x + self.out((weights @ v).transpose(1, 2).reshape(b, n, d))
        h = self.fc1(self.ln2(x))
        return x + self.fc2(h * torch.sigmoid(1.702 * h))  # CLIP's quick GELU


class TextEncoder(nn.Module):
    def __init__(self, vocab_size, d=64, layers=2, heads=2, max_length=MAX_LENGTH):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, d)
        self.position_embedding = nn.Parameter(torch.randn(max_length, d) * 0.01)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        self.layers = nn.ModuleList(TextLayer(d, heads) for _ in range(layers))
        self.final_layer_norm = nn.LayerNorm(d)
        self.register_buffer("causal_mask", torch.full((max_length, max_length), -1e9).triu(1))

    def forward(self, input_ids):
        """input_ids int [B, 77] -> (last_hidden_state [B, 77, D], pooler_output [B, D] at the first EOS = argmax id)."""
        x = self.token_embedding(input_ids.long()) + self.position_embedding
        for layer in self.layers:
            x = layer(x, self.causal_mask)
        x = self.final_layer_norm(x)
        eos = input_ids.long().argmax(dim=-1)  # the first EOS: its id is the largest, and argmax takes the first
        onehot = (torch.arange(x.shape[1])[None, :] == eos[:, None]).to(x.dtype)
        return x, (onehot[:, None, :] @ x).squeeze(1)


# ---------------------------------------------------------------------------------------------------- UNet

class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a [B, C, H, W] map (each position's C values), i.e. LayerNorm of the tokens."""

    def forward(self, x):
        mean = x.mean(dim=1, keepdim=True)
        var = (x - mean).pow(2).mean(dim=1, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight[:, None, None] + self.bias[:, None, None]


def conv1x1(cin, cout, bias=True):
    # A position-wise linear layer. 1x1 convolutions here, because Debian's torch has a generic BLAS (slow Linear)
    # but MKL-DNN convolutions; in ONNX this is a Conv instead of a MatMul, the same arithmetic.
    return nn.Conv2d(cin, cout, 1, bias=bias)


class Attention(nn.Module):
    """Multi-head attention of the positions of x [B, C, H, W] over context [B, Cc, M, 1] (a map, or tokens)."""

    def __init__(self, c, context_dim, heads, head_dim):
        super().__init__()
        self.heads = heads
        self.head_dim = head_dim
        inner = heads * head_dim  # as diffusers' Attention, the inner width need not be the query's
        self.q = conv1x1(c, inner, bias=False)
        self.k = conv1x1(context_dim, inner, bias=False)
        self.v = conv1x1(context_dim, inner, bias=False)
        self.out = conv1x1(inner, c)

    def forward(self, x, context):
        b, _, hh, ww = x.shape
        h, d = self.heads, self.head_dim
        q = self.q(x).reshape(b, h, d, hh * ww)
        k = self.k(context).reshape(b, h, d, -1)
        v = self.v(context).reshape(b, h, d, -1)
        weights = torch.softmax(q.transpose(-1, -2) @ k / math.sqrt(d), dim=-1)  # [B, h, N, M]
        return self.out((v @ weights.transpose(-1, -2)).reshape(b, h * d, hh, ww))


class SpatialTransformer(nn.Module):
    """SD's Transformer2DModel with one BasicTransformerBlock: self-attention, cross-attention to the text
    (all 77 positions), GEGLU feed-forward; pre-LayerNorm, residual. context is [B, D, 77, 1]."""

    def __init__(self, c, context_dim, heads=2, head_dim=16):
        super().__init__()
        self.norm = group_norm(c)
        self.proj_in = conv1x1(c, c)
        self.ln1 = ChannelLayerNorm(c)
        self.attn1 = Attention(c, c, heads, head_dim)
        self.ln2 = ChannelLayerNorm(c)
        self.attn2 = Attention(c, context_dim, heads, head_dim)
        self.ln3 = ChannelLayerNorm(c)
        self.ff_in = conv1x1(c, 4 * c)  # GEGLU: 2 x 2c
        self.ff_out = conv1x1(2 * c, c)
        self.proj_out = conv1x1(c, c)

    def forward(self, x, context):
        h = self.proj_in(self.norm(x))
        n = self.ln1(h)
        h = h + self.attn1(n, n)
        h = h + self.attn2(self.ln2(h), context)
        a, gate = self.ff_in(self.ln3(h)).chunk(2, dim=1)
        h = h + self.ff_out(a * F.gelu(gate))
        return x + self.proj_out(h)


class CondUNet(nn.Module):
    """UNet2DConditionModel in miniature: 4x8x8 latent, levels 8x8 (c0) and 4x4 (c1), a ResBlock and a
    SpatialTransformer per block, mid block ResBlock-Transformer-ResBlock."""

    def __init__(self, chans=(64, 64), context_dim=64, latent=4, emb_dim=128):
        super().__init__()
        c0, c1 = chans
        self.emb_dim = emb_dim
        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.conv_in = nn.Conv2d(latent, c0, 3, padding=1)
        self.down0 = ResBlock(c0, c0, emb_dim)
        self.down0_attn = SpatialTransformer(c0, context_dim)
        self.downsample = nn.Conv2d(c0, c0, 3, stride=2, padding=1)
        self.down1 = ResBlock(c0, c1, emb_dim)
        self.down1_attn = SpatialTransformer(c1, context_dim)
        self.mid1 = ResBlock(c1, c1, emb_dim)
        self.mid_attn = SpatialTransformer(c1, context_dim)
        self.mid2 = ResBlock(c1, c1, emb_dim)
        # skips: conv_in (c0, 8x8), down0 (c0, 8x8), downsample (c0, 4x4), down1 (c1, 4x4)
        self.up1 = nn.ModuleList([ResBlock(c1 + c1, c1, emb_dim), ResBlock(c1 + c0, c1, emb_dim)])
        self.up1_attn = nn.ModuleList([SpatialTransformer(c1, context_dim), SpatialTransformer(c1, context_dim)])
        self.upsample = nn.Conv2d(c1, c1, 3, padding=1)
        self.up0 = nn.ModuleList([ResBlock(c1 + c0, c0, emb_dim), ResBlock(c0 + c0, c0, emb_dim)])
        self.up0_attn = nn.ModuleList([SpatialTransformer(c0, context_dim), SpatialTransformer(c0, context_dim)])
        self.norm_out = group_norm(c0)
        self.conv_out = nn.Conv2d(c0, latent, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, sample, timestep, encoder_hidden_states):
        """sample [B, 4, 8, 8], timestep [B] or [1] (int or float), encoder_hidden_states [B, 77, D] -> eps [B, 4, 8, 8]."""
        ctx = encoder_hidden_states.transpose(1, 2)[:, :, :, None]  # [B, D, 77, 1]
        emb = self.time_mlp(timestep_embedding(timestep, self.emb_dim))
        h = self.conv_in(sample)
        hs = [h]
        h = self.down0_attn(self.down0(h, emb), ctx)
        hs.append(h)
        h = self.downsample(h)
        hs.append(h)
        h = self.down1_attn(self.down1(h, emb), ctx)
        hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb), ctx), emb)
        for block, attn in zip(self.up1, self.up1_attn):
            h = attn(block(torch.cat([h, hs.pop()], dim=1), emb), ctx)
        h = self.upsample(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        for block, attn in zip(self.up0, self.up0_attn):
            h = attn(block(torch.cat([h, hs.pop()], dim=1), emb), ctx)
        return self.conv_out(F.silu(self.norm_out(h)))
