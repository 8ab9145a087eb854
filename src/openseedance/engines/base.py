"""What every model behind the front is: a `Generator` (engine) with its `Capabilities` (the model
card the server checks requests against without loading weights), run with `RunOptions`, giving an
`EngineOutput`. The shared wrapper (`pipeline.Pipeline`) adds what every engine gets alike.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from openseedance.checkpoint import config_from_dict
from openseedance.media import Clip
from openseedance.request import KINDS, REFERENCE_LIMITS, TASKS, GenerationRequest
from openseedance.sampling import Progress, SamplerConfig


@dataclass(frozen=True, kw_only=True)
class Capabilities:
    """What an engine can make. Plain values only, so it is stored as JSON beside the weights and read
    by processes that never load them (the HTTP server)."""

    engine: str  # which engine runs it ("bundled", ...)
    tasks: tuple[str, ...] = TASKS  # the `GenerationRequest.task`s it does
    references: dict[str, int] = field(default_factory=lambda: dict(REFERENCE_LIMITS))  # kind -> how many (0: none)
    refusals: dict[str, str] = field(default_factory=dict)  # kind -> why it takes none of that kind
    width: int = 64  # the native size and frame rate
    height: int = 64
    fps: float = 12.0
    size_step: int = 8  # sides are multiples of this ...
    max_side: int = 512  # ... up to this
    min_duration: float = 1.0  # seconds
    max_duration: float = 15.0
    sample_rate: int = 16000  # of the audio it makes and takes
    frames_per_latent: int = 4  # frames one latent frame codes after the first (a clip grows by this much)
    steps: int = 8  # default sampling steps

    def __post_init__(self) -> None:
        unknown = sorted(set(self.tasks) - set(TASKS)) + sorted(set(self.references) - set(REFERENCE_LIMITS))
        if unknown:
            raise ValueError(f"unknown tasks or reference kinds in the capabilities: {unknown}")

    def check(self, request: GenerationRequest) -> None:
        """Raise a ValueError naming the field for what this engine cannot do, before any work."""
        if not request.prompt.strip() and request.task == "t2av":
            raise ValueError("the prompt is empty: describe the clip to generate")
        if not self.min_duration <= request.duration <= self.max_duration:
            raise ValueError(f"duration must be {self.min_duration:g}-{self.max_duration:g} s, "
                             f"got {request.duration:g}")  # fmt: skip
        step = self.size_step
        for name, v in (("width", request.width), ("height", request.height)):
            if v % step or not step <= v <= self.max_side:
                raise ValueError(f"{name} must be a multiple of {step} between {step} and {self.max_side}, got {v}")
        if request.sample_rate != self.sample_rate:
            raise ValueError(f"this model makes {self.sample_rate} Hz audio, got {request.sample_rate}")
        if request.task not in self.tasks:
            raise ValueError(f"this model does not do {request.task!r} requests yet; it does {self.tasks}")
        for kind in KINDS:
            given, limit = request.reference_counts[kind], self.references.get(kind, 0)
            if given and not limit:
                raise ValueError(self.refusals.get(kind, f"this model takes no reference {kind}s (@{kind}1...)"))
            if given > limit:
                raise ValueError(f"this model takes at most {limit} reference {kind}s, got {given}")
        if request.source is not None:
            self._check_source(request)

    def _check_source(self, request: GenerationRequest) -> None:
        src = request.source
        length = len(src.video) / src.fps
        if request.task == "extend":
            group = self.frames_per_latent / request.fps
            if request.duration - length < group:
                raise ValueError(f"the clip to extend is {length:.2f} s: ask for a duration of at least "
                                 f"{length + group:.2f} s (the whole clip, extension included)")  # fmt: skip
        else:
            a, b = request.edit_window
            if b > length + 1e-6 or b - a > request.duration:
                raise ValueError(f"the edit window {a:g}:{b:g} s must lie within the {length:.2f} s clip")

    def resolve_size(self, ratio: str | None) -> tuple[int, int]:
        """(width, height) with the native pixel count at aspect `ratio` ("16:9", "1:1", ...; None:
        the native size), rounded to multiples of the size step."""
        if ratio is None:
            return self.width, self.height
        try:
            a, b = (float(x) for x in ratio.split(":"))
            if not (a > 0 and b > 0):
                raise ValueError
        except ValueError:
            raise ValueError(f"ratio must look like 16:9, got {ratio!r}") from None
        area, step = self.width * self.height, self.size_step
        width = (area * a / b) ** 0.5
        return max(step, round(width / step) * step), max(step, round(area / width / step) * step)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Capabilities:
        return config_from_dict(cls, data)


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How to run one generation; None keeps the engine's default."""

    steps: int | None = None
    solver: str | None = None  # "euler" or "heun"
    guidance: float | None = None  # text guidance for the picture
    audio_guidance: float | None = None  # text guidance for the sound
    reference_guidance: float | None = None  # guidance towards the references (1: none beyond text)
    guidance_rescale: float | None = None  # 0-1: pull the guided velocity back to the prompt branch's size
    shift: float | None = None  # the schedule's shift towards noise (None: the one training used)
    bf16: bool | None = None  # bfloat16 autocast (True), float32 (False), or what the machine runs fastest (None)
    per_shot: bool = True  # a "[shot N]" prompt encoded part by part (False: as one text, to measure it)
    mark: bool = True  # invisible video and audio marks (off only to measure the marks themselves)

    def __post_init__(self) -> None:
        """The sampler's own rules, applied to the values given, where the options are made."""
        guidance = {s: g for s, g in (("video", self.guidance), ("audio", self.audio_guidance)) if g is not None}
        given = {"steps": self.steps, "solver": self.solver, "reference_guidance": self.reference_guidance,
                 "rescale": self.guidance_rescale, "shift": self.shift}  # fmt: skip
        SamplerConfig(guidance=guidance, **{k: v for k, v in given.items() if v is not None})


class Laps:
    """Seconds per stage of one generation: `laps("encode")` closes the stage that began at the last
    call (or at creation). On a GPU it waits for the stage's kernels to finish, not just be queued."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}
        self._clock = time.perf_counter()

    def __call__(self, name: str) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.seconds[name], self._clock = now - self._clock, now


@dataclass
class EngineOutput:
    """An engine's clip at the request's length (a stream the request gave may be None: the wrapper
    puts the given one back) and the settings it resolved (steps, guidance, shift, ...)."""

    clip: Clip
    settings: dict[str, Any]
    tokens: int  # tokens generated (what usage is billed in)
    seconds: dict[str, float] = field(default_factory=dict)  # time per stage


@runtime_checkable
class Generator(Protocol):
    """A model behind the front."""

    @property
    def capabilities(self) -> Capabilities: ...

    @property
    def model_id(self) -> str: ...

    def check(self, request: GenerationRequest) -> None:
        """A ValueError naming the field for what this engine cannot do, before any work."""

    def generate(self, request: GenerationRequest, options: RunOptions, progress: bool | Progress) -> EngineOutput:
        """One clip; `progress` is True for a progress bar, or told (steps done, steps) and may raise to stop."""

    def to(self, device: str | torch.device) -> Generator: ...
