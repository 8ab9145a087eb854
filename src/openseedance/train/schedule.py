"""The learning-rate schedule every recipe uses."""

from __future__ import annotations

import math


def learning_rate(cfg, step: int) -> float:
    """Linear warmup over `cfg.warmup` steps, then cosine decay to `cfg.min_lr_ratio` of `cfg.lr`
    at `cfg.steps` (any config with those four fields)."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
