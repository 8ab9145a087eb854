"""What a generator is asked for: one request type for every task.

Text only is text -> video + audio. Adding a first or last frame, reference images / videos /
voices, a soundtrack to follow, frames to score, or a clip to extend or edit selects the other
tasks; a generator is any callable `GenerationRequest -> Clip`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from openseedance.media import Clip, check_format

MAX_IMAGES, MAX_VIDEOS, MAX_AUDIOS = 9, 3, 3
EXTEND = ("forward", "backward")


@dataclass
class GenerationRequest:
    prompt: str
    duration: float = 4.0
    width: int = 64
    height: int = 64
    fps: float = 12.0
    sample_rate: int = 16000
    seed: int = 0
    generate_audio: bool = True
    first_frame: np.ndarray | None = None  # (H, W, 3) uint8
    last_frame: np.ndarray | None = None
    images: tuple[np.ndarray, ...] = ()  # @image1.. : identity references
    videos: tuple[Clip, ...] = ()  # @video1.. : motion / camera / style references
    audios: tuple[np.ndarray, ...] = ()  # @audio1.. : voice references, (C, S) at sample_rate
    audio: np.ndarray | None = None  # a soundtrack the video must follow (audio -> video)
    video: np.ndarray | None = None  # frames the sound must follow (video -> audio)
    source: Clip | None = None  # a clip to extend or edit
    extend: str | None = None  # "forward" or "backward" (with source)
    edit_window: tuple[float, float] | None = None  # seconds of source to redo (with source)
    visible_watermark: bool = False  # a visible mark drawn into the frames (the invisible one is always there)

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str):
            raise ValueError(f"prompt must be text, got {type(self.prompt).__name__}")
        if not (isinstance(self.duration, int | float) and math.isfinite(self.duration) and self.duration > 0):
            raise ValueError(f"duration must be a positive number of seconds, got {self.duration!r}")
        check_format(self.width, self.height, self.fps, self.sample_rate)
        for name, limit in (("images", MAX_IMAGES), ("videos", MAX_VIDEOS), ("audios", MAX_AUDIOS)):
            if len(getattr(self, name)) > limit:
                raise ValueError(f"at most {limit} reference {name} are allowed, got {len(getattr(self, name))}")
        if self.extend is not None and self.extend not in EXTEND:
            raise ValueError(f"extend must be one of {EXTEND}, got {self.extend!r}")
        if (self.extend is not None or self.edit_window is not None) and self.source is None:
            raise ValueError("extending or editing needs a source clip")
        if self.edit_window is not None:
            a, b = self.edit_window
            if not 0 <= a < b:
                raise ValueError(f"edit window must be A:B seconds with 0 <= A < B, got {a}:{b}")

    @property
    def task(self) -> str:
        if self.source is not None:
            return "edit" if self.edit_window is not None else "extend"
        if self.audio is not None:
            return "a2v"
        if self.video is not None:
            return "v2a"
        if self.images or self.videos or self.audios:
            return "references"
        if self.first_frame is not None or self.last_frame is not None:
            return "i2av"
        return "t2av"


Generator = Callable[[GenerationRequest], Clip]
