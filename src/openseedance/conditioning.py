"""From latents and a task to token groups: patchify video latents and lay out audio latents as
tokens, give every token its place on the one clock (seconds, y, x), and mark which tokens are
clean conditions (t = 0) for each task.

Legend: B batch, D latent channels, T latent frames, H W latent pixels, N tokens, C token
channels, S audio latents.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from einops import rearrange

# the conditioning every model learns (DESIGN §1); "references" adds reference token groups
# (portraits, voices) to an otherwise text-only clip, "motion" a reference video of its motion
TASKS = ("t2av", "i2av", "a2v", "v2a", "extend", "references", "motion")
REFERENCE_TASKS = ("references", "motion")  # tasks that need Stage data (references to learn from)


@dataclass(frozen=True)
class Layout:
    """Where a clip's latents sit on the clock: video latent grid (T, H, W) and patch, the frame
    rate and the video autoencoder's temporal factor, and the audio latent count and rate."""

    video_grid: tuple[int, int, int]
    patch: tuple[int, int, int]
    fps: float
    temporal_factor: int
    audio_latents: int
    audio_rate: float  # latents per second

    @property
    def token_grid(self) -> tuple[int, int, int]:
        (t, h, w), (pt, ph, pw) = self.video_grid, self.patch
        if t % pt or h % ph or w % pw:
            raise ValueError(f"latent grid {self.video_grid} is not divisible by the patch {self.patch}")
        return t // pt, h // ph, w // pw

    @property
    def video_tokens(self) -> int:
        t, h, w = self.token_grid
        return t * h * w

    def frame_times(self) -> torch.Tensor:
        """Seconds of each latent frame: frame 0 alone at 0, then the middle of its group of frames."""
        f = self.temporal_factor
        j = torch.arange(self.video_grid[0], dtype=torch.float32)
        return torch.where(j == 0, 0.0, (f * j - (f - 1) / 2) / self.fps)

    def video_positions(self) -> torch.Tensor:
        """(N, 3): seconds, y, x of every video token (patch centres, in token units)."""
        t, h, w = self.token_grid
        pt = self.patch[0]
        times = self.frame_times().view(t, pt).mean(1)
        tt, yy, xx = torch.meshgrid(times, torch.arange(h, dtype=torch.float32),
                                    torch.arange(w, dtype=torch.float32), indexing="ij")  # fmt: skip
        return torch.stack([tt, yy, xx], dim=-1).reshape(-1, 3)

    def audio_positions(self, count: int | None = None) -> torch.Tensor:
        """(S, 3): seconds of each audio latent's centre (the clip's, or `count` from 0 s); audio sits at
        the centre of the picture."""
        _, h, w = self.token_grid
        s = (torch.arange(self.audio_latents if count is None else count, dtype=torch.float32) + 0.5) / self.audio_rate
        return torch.stack([s, torch.full_like(s, (h - 1) / 2), torch.full_like(s, (w - 1) / 2)], dim=-1)


def video_to_tokens(latents: torch.Tensor, patch: tuple[int, int, int]) -> torch.Tensor:
    """(B, D, T, H, W) -> (B, N, D*pt*ph*pw)."""
    pt, ph, pw = patch
    return rearrange(latents, "b d (t pt) (h ph) (w pw) -> b (t h w) (d pt ph pw)", pt=pt, ph=ph, pw=pw)


def tokens_to_video(tokens: torch.Tensor, layout: Layout) -> torch.Tensor:
    """(B, N, C) -> (B, D, T, H, W)."""
    (pt, ph, pw), (t, h, w) = layout.patch, layout.token_grid
    return rearrange(tokens, "b (t h w) (d pt ph pw) -> b d (t pt) (h ph) (w pw)", t=t, h=h, w=w, pt=pt, ph=ph, pw=pw)


def audio_to_tokens(latents: torch.Tensor) -> torch.Tensor:
    """(B, D, S) -> (B, S, D)."""
    return latents.transpose(1, 2)


def tokens_to_audio(tokens: torch.Tensor) -> torch.Tensor:
    return tokens.transpose(1, 2)


def token_shots(times: torch.Tensor, bounds: list[float] | tuple[float, ...]) -> torch.Tensor:
    """The shot (1, 2, ...) each token's time (seconds) falls in, given the cut times between
    shots (n - 1 of them for n shots)."""
    return torch.bucketize(times.contiguous(), torch.tensor(list(bounds), dtype=times.dtype), right=True) + 1


# references sit before the clip on the clock, one slot of this many seconds each (an audio or video
# reference lasts at most 15 s): @image1..9 in slots 1..9, @video1..3 in 10..12, @audio1..3 in 13..15
REF_SLOT = 20.0


@dataclass
class References:
    """Reference token groups per stream: features (1, R, C), positions (1, R, 3), roles (1, R)."""

    x: dict[str, torch.Tensor]
    pos: dict[str, torch.Tensor]
    role: dict[str, torch.Tensor]

    @property
    def count(self) -> dict[str, int]:
        return {s: x.shape[1] for s, x in self.x.items()}


def reference_tokens(images: list[torch.Tensor], audios: list[torch.Tensor], layout: Layout,
                     videos: list[torch.Tensor] | tuple[()] = ()) -> References:  # fmt: skip
    """Token groups for reference images (each (1, D, 1, H, W) video latents: a picture is a 1-frame
    video), reference videos (each (1, D, T, H, W)) and reference audio clips (each (1, D, S) audio
    latents). Image and video references keep the clip's spatial grid, and video and audio
    references their own timing, all shifted into their slot before the clip; each token carries its
    role (`transformer.role_id`)."""
    from openseedance.transformer import role_id

    out: dict[str, tuple[list, list, list]] = {"video": ([], [], []), "audio": ([], [], [])}
    if layout.patch[0] != 1 and images:
        raise ValueError(f"image references need a temporal patch of 1, got {layout.patch}")
    for kind, group in (("image", images), ("video", videos)):
        for i, lat in enumerate(group):
            if lat.shape[-2:] != layout.video_grid[1:]:
                raise ValueError(f"{kind} reference {i + 1} has latents of {tuple(lat.shape[-2:])}, the clip's "
                                 f"{layout.video_grid[1:]}")  # fmt: skip
            grid = replace(layout, video_grid=(lat.shape[2], *layout.video_grid[1:]))
            tokens = video_to_tokens(lat, layout.patch)
            pos = grid.video_positions()  # an image: one frame, at 0 s
            pos[:, 0] -= REF_SLOT * role_id(kind, i)
            out["video"][0].append(tokens)
            out["video"][1].append(pos)
            out["video"][2].append(torch.full((tokens.shape[1],), role_id(kind, i)))
    for i, lat in enumerate(audios):
        tokens = audio_to_tokens(lat)
        n = tokens.shape[1]
        pos = layout.audio_positions(n)
        pos[:, 0] -= REF_SLOT * role_id("audio", i)
        out["audio"][0].append(tokens)
        out["audio"][1].append(pos)
        out["audio"][2].append(torch.full((n,), role_id("audio", i)))
    refs = References({}, {}, {})
    for stream, (xs, ps, rs) in out.items():
        if xs:
            refs.x[stream] = torch.cat(xs, 1)
            refs.pos[stream] = torch.cat(ps)[None]
            refs.role[stream] = torch.cat(rs)[None]
    return refs


def with_references(x: dict[str, torch.Tensor], keep: dict[str, torch.Tensor], pos: dict[str, torch.Tensor],
                    shot: dict[str, torch.Tensor], refs: list[References | None]) -> tuple[dict, ...]:  # fmt: skip
    """Each sample's reference tokens (refs[k], or None) after its clip's tokens, per stream, padded to
    the longest in the batch: clean (kept, out of the loss), in no shot (0), hidden where they are
    padding. Returns new (x, keep, pos, shot, valid, role) dicts of (B, N + R, ...) tensors."""
    out: tuple[dict, ...] = ({}, {}, {}, {}, {}, {})
    for s in x:
        b, n, c = x[s].shape
        longest = max((r.count.get(s, 0) for r in refs if r is not None), default=0)
        rx, rp = torch.zeros(b, longest, c), torch.zeros(b, longest, 3)
        ok, rl = torch.zeros(b, longest, dtype=torch.bool), torch.zeros(b, longest, dtype=torch.long)
        for k, r in enumerate(refs):
            m = r.count.get(s, 0) if r is not None else 0
            if m:
                rx[k, :m], rp[k, :m], ok[k, :m], rl[k, :m] = r.x[s][0], r.pos[s][0], True, r.role[s][0]
        none = torch.zeros(b, longest, dtype=torch.long)
        for d, value in zip(out, (torch.cat([x[s], rx], 1), torch.cat([keep[s], torch.ones_like(ok)], 1),
                                  torch.cat([pos[s].expand(b, -1, -1), rp], 1), torch.cat([shot[s], none], 1),
                                  torch.cat([torch.ones(b, n, dtype=torch.bool), ok], 1),
                                  torch.cat([torch.zeros(b, n, dtype=torch.long), rl], 1)), strict=True):  # fmt: skip
            d[s] = value
    return out


def task_masks(task: str, layout: Layout, batch: int = 1, prefix: float = 0.5) -> dict[str, torch.Tensor]:
    """Which tokens are clean conditions (True) for a task, per stream (B, N).

    t2av, references and motion: none (references are extra tokens, clean by definition). i2av: the first
    latent frame (the first frame, encoded alone). a2v: all audio.
    v2a: all video. extend: everything before `prefix` (a fraction of the clip) in both streams.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {TASKS}")
    video_t = layout.video_positions()[:, 0]
    audio_t = layout.audio_positions()[:, 0]
    video = torch.zeros(layout.video_tokens, dtype=torch.bool)
    audio = torch.zeros(layout.audio_latents, dtype=torch.bool)
    if task == "i2av":
        video = video_t == 0
    elif task == "a2v":
        audio = torch.ones_like(audio)
    elif task == "v2a":
        video = torch.ones_like(video)
    elif task == "extend":
        cut = prefix * layout.audio_latents / layout.audio_rate
        video, audio = video_t < cut, audio_t < cut
    return {"video": video.expand(batch, -1).clone(), "audio": audio.expand(batch, -1).clone()}


def given_masks(layout: Layout, frames: np.ndarray, samples: np.ndarray, hop: int,
                margin: int = 2) -> dict[str, torch.Tensor]:  # fmt: skip
    """Token masks (1, N) from what is given in pixel time: `frames` (F,) and `samples` (S,) booleans.

    A latent frame is given when every frame it codes is (frame 0 alone, then groups of
    `temporal_factor`; frames past the clip count as their last frame); a video token when all its
    latent frames are. An audio latent is given when its `hop` samples are, and so are `margin`
    latents on each side (the audio encoder sees that far into its neighbours).
    """
    f, t_latent = layout.temporal_factor, layout.video_grid[0]
    index = np.minimum(np.arange(1 + f * (t_latent - 1)), len(frames) - 1)
    coded = frames[index]
    latent = np.array([coded[0]] + [coded[1 + f * (j - 1) : 1 + f * j].all() for j in range(1, t_latent)])
    t, h, w = layout.token_grid
    per_token_frame = latent.reshape(t, layout.patch[0]).all(1)
    video = torch.from_numpy(np.repeat(per_token_frame, h * w))
    padded = np.zeros(layout.audio_latents * hop, dtype=bool)
    padded[: min(len(samples), len(padded))] = samples[: len(padded)]
    audio = padded.reshape(layout.audio_latents, hop).all(1)
    if margin:
        ok = np.pad(audio, margin, mode="edge")  # the clip's own ends are no seam
        audio = np.lib.stride_tricks.sliding_window_view(ok, 2 * margin + 1).all(1)
    return {"video": video[None].clone(), "audio": torch.from_numpy(audio.copy())[None]}
