"""Rectified flow: the straight path between data and noise, shared by the trainer and the sampler.

    x_t = (1 - t) x0 + t noise,   v = noise - x0,   t = 1 is pure noise.

Training times are logit-normal, then shifted towards noise by a factor that grows with the number
of tokens (a longer or larger clip keeps its structure at higher noise, so it needs more time
there); the sampler's schedule uses the same shift. Tokens with t = 0 are clean conditions and are
left out of the loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RectifiedFlow:
    logit_mean: float = 0.0
    logit_std: float = 1.0
    # shift = exp(mu), mu linear in the token count between these two points
    base_tokens: int = 256
    max_tokens: int = 4096
    base_mu: float = 0.5
    max_mu: float = 1.15

    def shift(self, tokens: int) -> float:
        slope = (self.max_mu - self.base_mu) / (self.max_tokens - self.base_tokens)
        return math.exp(self.base_mu + slope * (tokens - self.base_tokens))

    @staticmethod
    def shift_time(t: torch.Tensor, shift: float) -> torch.Tensor:
        """Map t in [0, 1] towards 1 (noise) for shift > 1; fixes 0 and 1."""
        return shift * t / (1 + (shift - 1) * t)

    def sample_time(self, batch: int, tokens: int, generator: torch.Generator | None = None,
                    device: torch.device | str = "cpu") -> torch.Tensor:  # fmt: skip
        """(batch,) training times: shifted logit-normal."""
        u = torch.randn(batch, generator=generator, device=device) * self.logit_std + self.logit_mean
        return self.shift_time(torch.sigmoid(u), self.shift(tokens))

    @staticmethod
    def noisy(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x0, noise (B, N, C); t (B, N) per token."""
        t = t[..., None].to(x0.dtype)
        return (1 - t) * x0 + t * noise

    @staticmethod
    def velocity(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return noise - x0

    @staticmethod
    def loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Mean squared error over the tokens with weight > 0 (B, N); clean tokens have weight 0."""
        per_token = (pred.float() - target.float()).pow(2).mean(-1)
        return (per_token * weight).sum() / weight.sum().clamp_min(1.0)

    @staticmethod
    def step(x: torch.Tensor, v: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
        """One Euler step of dx/dt = v from t to t_next (per token, (B, N))."""
        return x + (t_next - t)[..., None].to(x.dtype) * v
