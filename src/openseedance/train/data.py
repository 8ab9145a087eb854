"""Training data: Stage clips rendered on the fly, or a folder of media files.

Every batch is a pure function of (seed, step), so a resumed run sees exactly the batches the
uninterrupted one would have seen.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from openseedance import media
from openseedance.conditioning import frames_to_tensor, hold_last
from openseedance.stage.render import RenderConfig, render_audio, render_video
from openseedance.stage.scene import sample_scene

log = logging.getLogger(__name__)

# Scene seeds for training start here; benchmarks and tests draw held-out scenes below 1e6.
TRAIN_SEED_BASE = 10_000_000


def _rng(seed: int, step: int, item: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, step, item])


@dataclass(frozen=True)
class VideoWindows:
    """Batches of (B, 3, frames, H, W) windows."""

    source: str = "stage"  # "stage", or a folder of video files
    width: int = 64
    height: int = 64
    fps: float = 12.0
    frames: int = 17

    def batch(self, seed: int, step: int, batch_size: int) -> torch.Tensor:
        clips = [self._clip(_rng(seed, step, i)) for i in range(batch_size)]
        return torch.stack([frames_to_tensor(c) for c in clips])

    def _clip(self, rng: np.random.Generator) -> np.ndarray:
        if self.source == "stage":
            duration = (self.frames + 2) / self.fps
            scene = sample_scene(TRAIN_SEED_BASE + int(rng.integers(1 << 30)), duration=max(duration, 2.0))
            frames, _ = render_video(scene, RenderConfig(self.width, self.height, self.fps, 16000))
        else:
            path = _pick(self.source, media.VIDEO_SUFFIXES, rng)
            frames = media.read_video(path, fps=self.fps, size=(self.height, self.width)).video
        frames = hold_last(frames, self.frames)  # rather than drop a short clip
        start = int(rng.integers(len(frames) - self.frames + 1))
        return frames[start : start + self.frames]


@dataclass(frozen=True)
class AudioWindows:
    """Batches of (B, 1, samples) mono windows."""

    source: str = "stage"
    sample_rate: int = 16000
    seconds: float = 1.0

    def batch(self, seed: int, step: int, batch_size: int) -> torch.Tensor:
        return torch.stack([torch.from_numpy(self._clip(_rng(seed, step, i))) for i in range(batch_size)])

    def _clip(self, rng: np.random.Generator) -> np.ndarray:
        n = int(round(self.seconds * self.sample_rate))
        if self.source == "stage":
            scene = sample_scene(TRAIN_SEED_BASE + int(rng.integers(1 << 30)), duration=max(self.seconds + 1, 3.0))
            audio = render_audio(scene, self.sample_rate)
        else:
            path = _pick(self.source, media.AUDIO_SUFFIXES + media.VIDEO_SUFFIXES, rng)
            audio, _ = media.read_audio(path, sample_rate=self.sample_rate, channels=1)
        if audio.shape[1] < n:
            audio = np.pad(audio, ((0, 0), (0, n - audio.shape[1])))
        start = int(rng.integers(audio.shape[1] - n + 1))
        return np.ascontiguousarray(audio[:1, start : start + n], dtype=np.float32)


def _pick(folder: str, suffixes: tuple[str, ...], rng: np.random.Generator) -> Path:
    files = _listing(folder, suffixes)
    return files[int(rng.integers(len(files)))]


_LISTINGS: dict[tuple[str, tuple[str, ...]], list[Path]] = {}


def _listing(folder: str, suffixes: tuple[str, ...]) -> list[Path]:
    key = (folder, suffixes)
    if key not in _LISTINGS:
        root = Path(folder)
        if not root.is_dir():
            raise ValueError(f"training data {folder!r} is neither 'stage' nor a folder")
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in suffixes)
        if not files:
            raise ValueError(f"no {'/'.join(suffixes)} files under {folder}")
        _LISTINGS[key] = files
    return _LISTINGS[key]
