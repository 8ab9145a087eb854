"""What a generator is asked for: one request type for every task.

Text only is text -> video + audio. Adding a first or last frame, reference images / videos /
voices, a soundtrack to follow, frames to score, or a clip to extend or edit selects the other
tasks; a generator is any callable `GenerationRequest -> Clip`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from openseedance.media import Clip, check_format

# the tasks a request can be (`GenerationRequest.task`); an engine's capabilities name the ones it does
TASKS = ("t2av", "i2av", "a2v", "v2a", "extend", "edit", "references")
EXTEND = ("forward", "backward")
REFERENCE_SECONDS = (2.0, 15.0)  # how long a reference video or audio clip may be
KINDS = {"image": "images", "video": "videos", "audio": "audios"}  # citation word -> request field
REFERENCE_LIMITS = {"image": 9, "video": 3, "audio": 3}  # references a request may carry, per kind
# what a token is (DESIGN §1): 0 the clip itself, then @image1..9, @video1..3, @audio1..3 (the
# transformer's role table has one row per role number)
ROLE_BASE = {"target": 0, "image": 1, "video": 1 + REFERENCE_LIMITS["image"],
             "audio": 1 + REFERENCE_LIMITS["image"] + REFERENCE_LIMITS["video"]}  # fmt: skip


def role_id(kind: str, index: int = 0) -> int:
    """The role number of the clip itself ("target") or of reference `index` (0-based) of a kind."""
    limit = 1 if kind == "target" else REFERENCE_LIMITS.get(kind, 0)
    if not 0 <= index < limit:
        raise ValueError(f"no role for {kind} reference {index + 1}")
    return ROLE_BASE[kind] + index

# `@image1` always cites; the plain "image 1" / "Image 1" cites only when references of that kind
# were given (otherwise "a video 2 seconds long" would be an error)
_CITE = re.compile(r"@(image|video|audio)\s?(\d+)\b|\b(image|video|audio) (\d+)\b", re.IGNORECASE)


MAX_SHOTS = 4
MIN_SHOT_SECONDS = 0.5
# "[shot 2]", or with the shot's length: "[shot 2 | 1.5s]" (also "," or ":" before the length)
_SHOT = re.compile(r"\[\s*shot\s*(\d+)\s*(?:[|,:]([^\]]*))?\]", re.IGNORECASE)
_LENGTH = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:s|secs?|seconds?)?\s*", re.IGNORECASE)


def split_shots(prompt: str) -> tuple[str, tuple[str, ...]]:
    """A multi-shot prompt, "global text [shot 1] first ... [shot 2] second ...", as the global
    text and each shot's; a prompt without `[shot N]` markers is all global, with no shots. The
    shots must be numbered 1, 2, ... in order, at most MAX_SHOTS."""
    marks = list(_SHOT.finditer(prompt))
    if not marks:
        return prompt.strip(), ()
    numbers = [int(m[1]) for m in marks]
    if numbers != list(range(1, len(marks) + 1)):
        got = ", ".join(m[0] for m in marks)
        raise ValueError(f"shots must be numbered [shot 1], [shot 2], ... in order; got {got}")
    if len(marks) > MAX_SHOTS:
        raise ValueError(f"at most {MAX_SHOTS} shots in one clip, got {len(marks)}")
    ends = [m.start() for m in marks[1:]] + [len(prompt)]
    shots = tuple(prompt[m.end() : e].strip() for m, e in zip(marks, ends, strict=True))
    return prompt[: marks[0].start()].strip(), shots


def shot_cuts(prompt: str, duration: float) -> tuple[float, ...]:
    """The times (seconds) of the cuts between a multi-shot prompt's shots. A shot marked with its
    length ("[shot 1 | 2s]") lasts that long; the others share what is left equally. A ValueError
    says what does not fit: lengths that add up to more than the clip, all lengths given but not
    adding up to it, or a shot shorter than MIN_SHOT_SECONDS."""
    split_shots(prompt)  # numbering and count
    lengths: list[float | None] = []
    for m in _SHOT.finditer(prompt):
        if m[2] is None:
            lengths.append(None)
            continue
        length = _LENGTH.fullmatch(m[2])
        if length is None:
            raise ValueError(f"{m[0]}: write a shot's length in seconds, like [shot {m[1]} | 1.5s]")
        lengths.append(float(length[1]))
    if not lengths:
        return ()
    given = sum(x for x in lengths if x is not None)
    free = lengths.count(None)
    if free == 0 and abs(given - duration) > 0.01:
        raise ValueError(f"the shots' lengths add up to {given:g} s but the clip is {duration:g} s long")
    share = (duration - given) / free if free else 0.0
    lengths = [share if x is None else x for x in lengths]
    if min(lengths) < MIN_SHOT_SECONDS:
        if free and share < MIN_SHOT_SECONDS:
            raise ValueError(f"the shots' given lengths ({given:g} s) leave {max(share, 0):.2g} s for each other shot "
                             f"of a {duration:g} s clip; a shot lasts at least {MIN_SHOT_SECONDS:g} s")  # fmt: skip
        raise ValueError(f"a shot lasts at least {MIN_SHOT_SECONDS:g} s, got {min(lengths):g} s")
    cuts = np.cumsum(lengths[:-1]) * (duration / sum(lengths))  # exact total despite the 0.01 s slack
    return tuple(float(c) for c in cuts)


def citations(prompt: str, counts: dict[str, int] | None = None) -> list[tuple[str, int, str]]:
    """(kind, number, as written) for each reference the prompt cites; plain forms count only for
    kinds present in `counts` (references given per kind)."""
    out = []
    for m in _CITE.finditer(prompt):
        if m[1]:
            out.append((m[1].lower(), int(m[2]), m[0]))
        elif counts is not None and counts.get(m[3].lower(), 0) > 0:
            out.append((m[3].lower(), int(m[4]), m[0]))
    return out


def check_citations(prompt: str, counts: dict[str, int]) -> None:
    """Raise ValueError naming the first citation of a reference that was not given."""
    for kind, n, written in citations(prompt, counts):
        given = counts.get(kind, 0)
        if not 1 <= n <= given:
            have = {0: f"no reference {kind}s were given", 1: f"only 1 reference {kind} was given"}.get(
                given, f"only {given} reference {kind}s were given")  # fmt: skip
            also = "" if written == f"@{kind}{n}" else f" (@{kind}{n})"
            raise ValueError(f"the prompt cites {written}{also} but {have}")


def canonical_prompt(prompt: str, counts: dict[str, int]) -> str:
    """The prompt with every citation written `@image1`, the form the model learnt."""
    cited = {w: f"@{k}{n}" for k, n, w in citations(prompt, counts)}
    return _CITE.sub(lambda m: cited.get(m[0], m[0]), prompt)


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
        for kind, name in KINDS.items():
            if len(getattr(self, name)) > REFERENCE_LIMITS[kind]:
                raise ValueError(f"at most {REFERENCE_LIMITS[kind]} reference {name} are allowed, "
                                 f"got {len(getattr(self, name))}")  # fmt: skip
        shot_cuts(self.prompt, self.duration)  # well-formed shots that fit the clip, or a clear error
        self._check_references()
        check_citations(self.prompt, self.reference_counts)
        if self.extend is not None and self.extend not in EXTEND:
            raise ValueError(f"extend must be one of {EXTEND}, got {self.extend!r}")
        if (self.extend is not None or self.edit_window is not None) and self.source is None:
            raise ValueError("extending or editing needs a source clip")
        if self.edit_window is not None:
            a, b = self.edit_window
            if not 0 <= a < b:
                raise ValueError(f"edit window must be A:B seconds with 0 <= A < B, got {a}:{b}")

    def _check_references(self) -> None:
        """Each reference of the right kind, and a voice or motion reference 2-15 s long."""
        low, high = REFERENCE_SECONDS
        for i, image in enumerate(self.images):
            if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3
                    and image.dtype == np.uint8):  # fmt: skip
                raise ValueError(f"@image{i + 1} must be an (H, W, 3) uint8 picture")
        for i, clip in enumerate(self.videos):
            if not isinstance(clip, Clip):
                raise ValueError(f"@video{i + 1} must be a clip, got {type(clip).__name__}")
            seconds = len(clip.video) / clip.fps
            if not low <= seconds <= high:
                raise ValueError(f"@video{i + 1} lasts {seconds:.2f} s; reference videos must last {low:g}-{high:g} s")
        for i, audio in enumerate(self.audios):
            a = np.asarray(audio)
            if a.ndim not in (1, 2) or not np.issubdtype(a.dtype, np.floating):
                raise ValueError(f"@audio{i + 1} must be float samples, (S,) or (channels, S)")
            seconds = a.shape[-1] / self.sample_rate
            if not low <= seconds <= high:
                raise ValueError(f"@audio{i + 1} lasts {seconds:.2f} s; reference audio must last {low:g}-{high:g} s")

    @property
    def reference_counts(self) -> dict[str, int]:
        return {kind: len(getattr(self, name)) for kind, name in KINDS.items()}

    @property
    def task(self) -> str:
        if self.source is not None:
            return "edit" if self.edit_window is not None else "extend"
        if self.audio is not None:
            return "a2v"
        if self.video is not None:
            return "v2a"
        if self.first_frame is not None or self.last_frame is not None:
            return "i2av"
        if self.images or self.videos or self.audios:
            return "references"  # text -> video + audio with references (they join any other task too)
        return "t2av"


Generator = Callable[[GenerationRequest], Clip]
