"""A job's spec (`JobSpec`): what to generate, the one contract both APIs write, the job store keeps
(as JSON) and the worker reads.

`references` point at the request's media, stored as received in the job's folder; `echo` holds
the API fields to report back unchanged. `build_request` turns a spec into a `GenerationRequest`
(used at submission, to refuse what the model cannot do before queueing, and again by the worker).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from openseedance import media
from openseedance.checkpoint import config_from_dict
from openseedance.request import KINDS, GenerationRequest, check_citations
from openseedance.serve.decode import decode_audio, decode_image, decode_video
from openseedance.serve.limits import InputError, InputLimits

ROLES = {
    "first_frame": "image",
    "last_frame": "image",
    "reference_image": "image",
    "reference_video": "video",
    "reference_audio": "audio",
}  # the Ark roles; "source_video" (a clip to extend) comes from the OpenAI extensions endpoint


@dataclass(frozen=True)
class StoredReference:
    kind: str  # "image", "video" or "audio"
    role: str  # one of ROLES, or "source_video"
    file: str  # where its bytes are, inside the job's folder


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """What to generate. An API makes it as asked (the size may be left to the server: None); the
    server resolves the size and the references before the job is stored."""

    prompt: str
    duration: float  # seconds of the whole clip (extending: the source clip and what is added)
    fps: float
    seed: int
    width: int | None = None  # None: from resolution / ratio, the first frame or the source clip
    height: int | None = None
    generate_audio: bool = True
    visible_watermark: bool = False
    steps: int | None = None  # None: the model's default
    return_last_frame: bool = False
    references: tuple[StoredReference, ...] = ()
    extend: str | None = None  # "forward", with a "source_video" reference
    extend_by: float | None = None  # asked: seconds to add to the source clip (resolved into duration)
    resolution: str | None = None  # Ark's, as asked ("720p")
    ratio: str | None = None  # Ark's, as asked ("16:9", "adaptive")
    resolution_label: str | None = None  # what Ark reports back
    ratio_label: str | None = None
    echo: dict[str, Any] = field(default_factory=dict)  # API fields reported back unchanged
    base_url: str = "/"  # where the job's files are served (callbacks carry their URLs)
    expires_after: float | None = None  # seconds the job may wait and run

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        """A stored spec; a clear error for one this version cannot read."""
        refs = tuple(StoredReference(**r) for r in data.get("references", ()))
        return config_from_dict(cls, {**data, "references": refs})


def check_refs(prompt: str, counts: dict[str, int]) -> None:
    """Every `@image2`-style mention in the prompt must name a reference that was given."""
    try:
        check_citations(prompt, counts)
    except ValueError as e:
        raise InputError("prompt", str(e)) from None


def decode(kind: str, data: bytes, limits: InputLimits, field: str) -> Any:
    if kind == "image":
        return decode_image(data, limits, field)
    if kind == "video":
        return decode_video(data, limits, field)
    return decode_audio(data, limits, field)


def build_request(spec: JobSpec, media_by_ref: list[Any], sample_rate: int) -> GenerationRequest:
    """`media_by_ref[i]` is the decoded media of `spec.references[i]`."""
    fields: dict[str, Any] = {"images": [], "videos": [], "audios": []}
    for ref, item in zip(spec.references, media_by_ref, strict=True):
        role = ref.role
        if role in ("first_frame", "last_frame"):
            fields[role] = item
        elif role == "source_video":  # a clip to extend (spec.extend: forward or backward)
            fields["source"] = item
        elif ref.kind == "audio":
            track, rate = item
            track = media.resample_audio(track, rate, sample_rate) if rate != sample_rate else track
            fields["audios"].append(np.ascontiguousarray(track, dtype=np.float32))
        else:
            fields[KINDS[ref.kind]].append(item)
    check_refs(spec.prompt, {k: len(fields[v]) for k, v in KINDS.items()})
    return GenerationRequest(
        prompt=spec.prompt, duration=spec.duration, width=spec.width, height=spec.height,
        fps=spec.fps, sample_rate=sample_rate, seed=spec.seed, generate_audio=spec.generate_audio,
        first_frame=fields.get("first_frame"), last_frame=fields.get("last_frame"),
        images=tuple(fields["images"]), videos=tuple(fields["videos"]), audios=tuple(fields["audios"]),
        visible_watermark=spec.visible_watermark,
        source=fields.get("source"), extend=spec.extend if "source" in fields else None,
    )  # fmt: skip


def load_references(spec: JobSpec, folder: Path, limits: InputLimits) -> list[Any]:
    """Decode a stored job's references (the worker's side)."""
    return [decode(ref.kind, (folder / ref.file).read_bytes(), limits, ref.role) for ref in spec.references]


def size_for(resolution: str | None, ratio: str | None, native: tuple[int, int], step: int,
             adaptive_from: np.ndarray | None = None) -> tuple[int, int]:  # fmt: skip
    """(width, height) for an Ark `resolution` ("480p": the short side) and `ratio` ("16:9", or
    "adaptive": the first frame's shape), rounded to multiples of `step`. Unset: the model's own."""
    if ratio in (None, "adaptive", "keep_ratio"):
        if adaptive_from is not None and ratio is not None:
            a, b = adaptive_from.shape[1], adaptive_from.shape[0]
        else:
            a, b = native
    else:
        match = re.fullmatch(r"(\d{1,5}(?:\.\d{1,5})?):(\d{1,5}(?:\.\d{1,5})?)", ratio)
        if not match or not float(match[1]) > 0 or not float(match[2]) > 0:
            raise InputError("ratio", f"ratio must look like 16:9 or be 'adaptive', got {ratio!r}")
        a, b = float(match[1]), float(match[2])
    if resolution is None:
        area = native[0] * native[1]
        width = (area * a / b) ** 0.5
        height = area / width
    else:
        match = re.fullmatch(r"(\d{1,5})p", resolution.strip().lower())
        if not match:
            raise InputError("resolution", f"resolution must look like 480p, got {resolution!r}")
        short = int(match[1])
        width, height = (short * a / b, short) if a >= b else (short, short * b / a)
    return max(step, round(width / step) * step), max(step, round(height / step) * step)
