"""Shared layers: norms, adaLN modulation, timestep embedding, rotary positions and the one
`attention()` seam every model goes through (so a parallel or fused kernel can replace it from
outside).

Legend: B batch, N tokens, H heads, Dh head dim, D model width, A position axes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B, H, N, Dh) x3, optional boolean mask (B, 1|H, N, N) with True = may attend."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


_attention: AttentionFn = sdpa_attention


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The seam: every attention in the models calls this; `set_attention` swaps the kernel."""
    return _attention(q, k, v, mask)


def set_attention(fn: AttentionFn | None) -> AttentionFn:
    """Install another attention kernel (None restores SDPA); returns the previous one."""
    global _attention
    previous, _attention = _attention, fn or sdpa_attention
    return previous


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


@dataclass
class Modulation:
    """adaLN parameters for one sub-layer: y = norm(x) * (1 + scale) + shift; x + gate * f(y)."""

    shift: torch.Tensor
    scale: torch.Tensor
    gate: torch.Tensor

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return x * (1 + self.scale) + self.shift


def split_modulation(params: torch.Tensor, count: int) -> list[Modulation]:
    """(..., 3*count*D) -> `count` Modulations."""
    chunks = params.chunk(3 * count, dim=-1)
    return [Modulation(*chunks[3 * i : 3 * i + 3]) for i in range(count)]


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal features of diffusion times in [0, 1] (any shape) -> (..., dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = 1000.0 * t.float()[..., None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.freq_dim).to(self.mlp[0].weight.dtype))


class Rotary(nn.Module):
    """Rotary position embedding over several axes: the head dim is split among the axes (for
    us: time in seconds / `time_unit`, then y and x in tokens). Positions may be fractional, which
    is what lets audio and video at any rate share one clock."""

    def __init__(self, axes_dims: tuple[int, ...], theta: float = 10_000.0):
        super().__init__()
        if any(d % 2 for d in axes_dims):
            raise ValueError(f"every rotary axis needs an even width, got {axes_dims}")
        self.axes_dims = axes_dims
        self.theta = theta

    def forward(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, A) positions -> cos, sin of shape (B, 1, N, Dh/2)."""
        angles = []
        for axis, d in enumerate(self.axes_dims):
            freqs = self.theta ** (-torch.arange(0, d, 2, device=pos.device, dtype=torch.float64) / d)
            angles.append(pos[..., axis, None].double() * freqs)
        angle = torch.cat(angles, dim=-1)[:, None].float()
        return angle.cos(), angle.sin()


def apply_rotary(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotate (..., Dh) by the angles of `Rotary` (pairs of adjacent channels), e.g. (B, H, N, Dh) by
    (B, 1, N, Dh/2) angles. Each pair (a, b) is the complex number a + ib times cos + i sin: one
    complex product instead of four real ones, a difference, a sum and a stack (the same values)."""
    cos, sin = rope
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
    return torch.view_as_real(pairs * torch.complex(cos, sin)).flatten(-2).to(x.dtype)
