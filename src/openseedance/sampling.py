"""The denoise loop: a shifted schedule from noise to data, Euler or Heun steps, and classifier-
free guidance with a separate scale per stream (text guidance for the video and for the audio)
and, for clips with references, a reference guidance scale. Guidance lives here, not in the model:
the model is asked for the velocities of up to three branches (`Branch`) and the sampler mixes them:

    COND     the prompt, with the references
    UNCOND   the empty prompt, with the references
    BARE     the empty prompt, without references (asked only when reference guidance is not 1)

    v = v_bare + r * (v_uncond - v_bare) + g[stream] * (v_cond - v_uncond)

With r = 1 this is ordinary text guidance in which both branches see the references; reference
guidance pulls towards whatever the references add. A model may offer two more branches, each
with its own scale per stream, added to v away from what that branch predicts:

    PERTURBED   the prompt, with self-attention skipped in some blocks (spatio-temporal guidance)
    ISOLATED    the prompt, each stream without the other (modality guidance)

    v <- v + p[stream] * (v_cond - v_perturbed) + m[stream] * (v_cond - v_isolated)

Large scales overshoot: the guided velocity grows far larger than any the model predicts, which
draws speckle and burnt colours. `rescale` (phi) pulls it back towards the size of the cond
branch's velocity, per clip and stream over the tokens being denoised:

    v <- phi * v * std(v_cond) / std(v) + (1 - phi) * v

Per-token times: tokens marked clean (conditions: a given first frame, a given soundtrack, ...)
stay at t = 0 with their given values throughout; only the others are denoised.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from openseedance.flow import RectifiedFlow


class Branch(enum.Enum):
    """The model branches guidance mixes (module docstring)."""

    COND = "cond"
    UNCOND = "uncond"
    BARE = "bare"
    PERTURBED = "perturbed"
    ISOLATED = "isolated"


Latents = dict[str, torch.Tensor]  # stream -> (B, N, C)
# (latents, per-token times, branches) -> one velocity dict per branch, in the order asked
VelocityFn = Callable[[Latents, Latents, tuple[Branch, ...]], list[Latents]]
Progress = Callable[[int, int], None]  # (steps done, steps)

SOLVERS = ("euler", "heun")


@dataclass(frozen=True, kw_only=True)
class SamplerConfig:
    steps: int = 8
    solver: str = "euler"
    guidance: dict[str, float] = field(default_factory=lambda: {"video": 3.0, "audio": 3.0})
    shift: float | None = None  # None: the flow's shift for the token count
    reference_guidance: float = 1.0  # r above; used only when the clip has references
    rescale: float = 0.0  # phi above: 0 leaves the guided velocity as it is, 1 matches the cond's std
    perturbed_guidance: dict[str, float] = field(default_factory=dict)  # p above, per stream (none: 0)
    isolated_guidance: dict[str, float] = field(default_factory=dict)  # m above, per stream (none: 0)

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        scales = {f"{s} guidance": g for s, g in self.guidance.items()}
        scales["reference guidance"] = self.reference_guidance
        scales.update({f"{s} perturbed guidance": g for s, g in self.perturbed_guidance.items()})
        scales.update({f"{s} isolated guidance": g for s, g in self.isolated_guidance.items()})
        for name, value in scales.items():
            if not value >= 0:  # also refuses NaN
                raise ValueError(f"{name} must be >= 0, got {value}")
        if self.shift is not None and not self.shift > 0:
            raise ValueError(f"shift must be > 0, got {self.shift}")
        if not 0.0 <= self.rescale <= 1.0:
            raise ValueError(f"rescale must be in [0, 1], got {self.rescale}")


def schedule(steps: int, shift: float) -> torch.Tensor:
    """steps + 1 times from 1 (noise) to 0 (data), spaced evenly then shifted towards noise."""
    return RectifiedFlow.shift_time(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64), shift).float()


def guided(fn: VelocityFn, scales: dict[str, float], *, reference: float = 1.0, rescale: float = 0.0,
           free: dict[str, torch.Tensor] | None = None,
           away: dict[Branch, dict[str, float]] | None = None) -> Callable[[Latents, Latents], Latents]:  # fmt: skip
    """The guided velocity (module docstring), asking `fn` only for the branches it needs: one model
    call when every scale is 1. `free[s]` (B, N) marks the tokens being denoised, over which
    `rescale` measures sizes (all tokens when not given). `away`: the PERTURBED and ISOLATED scales
    per stream (branches whose scales are all 0 are not asked for)."""
    away = {b: sc for b, sc in (away or {}).items() if any(sc.values())}

    def resized(v: Latents, cond: Latents) -> Latents:
        if not rescale:
            return v
        out = {}
        for s in v:
            mask = torch.ones(v[s].shape[:2], dtype=torch.bool, device=v[s].device) if free is None else free[s]
            w = mask[..., None].to(v[s].dtype)
            n = (w.sum((1, 2)) * v[s].shape[-1]).clamp_min(1.0)
            std_v = ((v[s] * w).pow(2).sum((1, 2)) / n).sqrt()
            std_c = ((cond[s] * w).pow(2).sum((1, 2)) / n).sqrt()
            factor = (std_c / std_v.clamp_min(1e-8)).view(-1, 1, 1)
            out[s] = rescale * v[s] * factor + (1 - rescale) * v[s]
        return out

    def text(x: Latents, t: Latents) -> tuple[Latents, Latents, dict[Branch, Latents]]:
        """(guided velocity, cond velocity, the `away` branches' velocities)."""
        extra = tuple(away)
        if reference != 1.0:
            cond, uncond, bare, *more = fn(x, t, (Branch.COND, Branch.UNCOND, Branch.BARE, *extra))
            v = {s: bare[s] + reference * (uncond[s] - bare[s]) + scales.get(s, 1.0) * (cond[s] - uncond[s])
                 for s in x}  # fmt: skip
        elif all(scales.get(s, 1.0) == 1.0 for s in x):
            cond, *more = fn(x, t, (Branch.COND, *extra))
            v = cond
        else:
            cond, uncond, *more = fn(x, t, (Branch.COND, Branch.UNCOND, *extra))
            v = {s: uncond[s] + scales.get(s, 1.0) * (cond[s] - uncond[s]) for s in x}
        return v, cond, dict(zip(extra, more, strict=True))

    def velocity(x: Latents, t: Latents) -> Latents:
        v, cond, more = text(x, t)
        for branch, out in more.items():
            v = {s: v[s] + away[branch].get(s, 0.0) * (cond[s] - out[s]) for s in x}
        return v if v is cond else resized(v, cond)

    return velocity


def denoise(fn: VelocityFn, noise: Latents, clean: Latents, keep: dict[str, torch.Tensor], *,
            config: SamplerConfig, shift: float, progress: bool | Progress = False,
            times: torch.Tensor | None = None) -> Latents:  # fmt: skip
    """Integrate from `noise` at t = 1 to data at t = 0. `keep[s]` (B, N) marks tokens that are
    conditions: they hold `clean[s]` at t = 0 the whole way. `progress`: True for a progress bar, or
    a callable told (steps done, steps) after each step (it may raise to stop the loop). `times`:
    the steps + 1 times to visit, from 1 down to 0, where a model comes with its own schedule (default:
    `schedule(config.steps, shift)`)."""
    velocity = guided(fn, config.guidance, reference=config.reference_guidance, rescale=config.rescale,
                      free={s: ~k for s, k in keep.items()},
                      away={Branch.PERTURBED: config.perturbed_guidance,
                            Branch.ISOLATED: config.isolated_guidance})  # fmt: skip
    times = schedule(config.steps, shift) if times is None else times
    if len(times) != config.steps + 1:
        raise ValueError(f"{config.steps} steps need {config.steps + 1} times, got {len(times)}")

    def at(value: float) -> Latents:
        return {s: torch.where(keep[s], 0.0, torch.full_like(keep[s], value, dtype=torch.float32)) for s in x}

    def hold(z: Latents) -> Latents:
        return {s: torch.where(keep[s][..., None], clean[s], z[s]) for s in z}

    x = hold(noise)
    for i in tqdm(range(config.steps), desc="sampling", disable=progress is not True):
        t, t_next = float(times[i]), float(times[i + 1])
        tt, tn = at(t), at(t_next)
        v = velocity(x, tt)
        if config.solver == "heun" and t_next > 0:
            x_pred = hold({s: RectifiedFlow.step(x[s], v[s], tt[s], tn[s]) for s in x})
            v_next = velocity(x_pred, tn)
            v = {s: 0.5 * (v[s] + v_next[s]) for s in x}
        x = hold({s: RectifiedFlow.step(x[s], v[s], tt[s], tn[s]) for s in x})
        if callable(progress):
            progress(i + 1, config.steps)
    return x
