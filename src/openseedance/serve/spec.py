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
from openseedance.engines import Capabilities
from openseedance.request import KINDS, REFERENCE_SECONDS, GenerationRequest, check_citations
from openseedance.serve.decode import (
    Probe,
    decode_audio,
    decode_image,
    decode_video,
    probe_audio,
    probe_image,
    probe_video,
)
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
    live_chunk: float | None = None  # a live job's seconds per chunk (its duration: the most it may last); None: a clip

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


def probe(kind: str, data: bytes, limits: InputLimits, field: str) -> Probe:
    """What a reference's header and packets say (size, length), checked against the limits; nothing decoded."""
    return {"image": probe_image, "video": probe_video, "audio": probe_audio}[kind](data, limits, field)


def target(spec: JobSpec, kind: str, sample_rate: int | None = None) -> dict[str, Any]:
    """What the model uses of a reference of `kind`, as decoding keywords: pictures at the clip's size,
    videos at its frame rate, sound mono (at `sample_rate` when given)."""
    if kind == "audio":
        return {"sample_rate": sample_rate, "channels": 1}
    size = (spec.height, spec.width)
    if kind == "image":
        return {"size": size}
    return {"size": size, "fps": spec.fps, "sample_rate": sample_rate, "channels": 1}


def decode(kind: str, data: bytes, limits: InputLimits, field: str, **keywords: Any) -> Any:
    """One input decoded; `keywords` (see `target`) go to `decode_image`, `decode_video` or `decode_audio`."""
    if kind == "image":
        return decode_image(data, limits, field, **keywords)
    if kind == "video":
        return decode_video(data, limits, field, **keywords)
    return decode_audio(data, limits, field, **keywords)


def decode_references(spec: JobSpec, blobs: list[bytes], fields: list[str], limits: InputLimits,
                      sample_rate: int | None = None) -> list[Any]:  # fmt: skip
    """Each of `spec.references` (its bytes in `blobs`) decoded to what the model uses of it, all of them
    within one budget, `limits.max_decoded_bytes`: a reference is priced from its container against what
    the ones before it left, before it is decoded."""
    left, out = limits.max_decoded_bytes, []
    for ref, blob, where in zip(spec.references, blobs, fields, strict=True):
        item = decode(ref.kind, blob, limits, where, budget=left, **target(spec, ref.kind, sample_rate))
        left -= _nbytes(item)
        out.append(item)
    return out


def _nbytes(item: Any) -> int:
    if isinstance(item, media.Clip):
        return sum(x.nbytes for x in (item.video, item.audio) if x is not None)
    return item[0].nbytes if isinstance(item, tuple) else item.nbytes


def check_counts(refs: list[tuple[str, str, str]], card: Capabilities) -> None:
    """References of a kind the model takes none of, or more than it takes, refused before anything is
    fetched; `refs` are (kind, role, field)."""
    seen = dict.fromkeys(KINDS, 0)
    for kind, role, where in refs:
        if role != f"reference_{kind}":
            continue
        seen[kind] += 1
        limit = card.references.get(kind, 0)
        if not limit:
            raise InputError(where, card.refusals.get(kind, f"this model takes no reference {kind}s (@{kind}1...)"))
        if seen[kind] > limit:
            raise InputError(where, f"this model takes at most {limit} reference {kind}s")


def check_plan(spec: JobSpec, probes: list[Probe], fields: list[str], card: Capabilities, sample_rate: int) -> None:
    """What the model cannot do, refused from the references' headers before any of them is decoded: a clip
    of a length, size or frame rate the model does not make, and reference clips too long to use."""
    try:
        media.check_format(spec.width, spec.height, spec.fps, sample_rate)
    except ValueError as e:
        raise InputError(str(e).split(" ", 1)[0], str(e)) from None
    for name, v in (("width", spec.width), ("height", spec.height)):
        if v % card.size_step or not card.size_step <= v <= card.max_side:
            raise InputError(name, f"{name} must be a multiple of {card.size_step} between {card.size_step} and "
                                   f"{card.max_side}, got {v}")  # fmt: skip
    source = next((f for r, f in zip(spec.references, fields, strict=True) if r.role == "source_video"), None)
    slack = 1 / spec.fps  # a source's length, from its packets, may round to a frame more than it decodes to
    if not card.min_duration <= spec.duration <= card.max_duration + (slack if source else 0.0):
        given = f"the clip to extend and what is added make {spec.duration:.2f} s; " if source else ""
        raise InputError(source or "duration", f"{given}duration must be {card.min_duration:g}-"
                                               f"{card.max_duration:g} s, got {spec.duration:g}")  # fmt: skip
    low, high = REFERENCE_SECONDS
    numbers = dict.fromkeys(KINDS, 0)
    for ref, found, where in zip(spec.references, probes, fields, strict=True):
        if ref.role not in ("reference_video", "reference_audio"):
            continue
        numbers[ref.kind] += 1
        seconds = found.video_seconds if ref.kind == "video" else found.audio_seconds
        if seconds is not None and seconds > high + 1 / spec.fps:
            what = "reference videos" if ref.kind == "video" else "reference audio"
            raise InputError(where, f"@{ref.kind}{numbers[ref.kind]} lasts {seconds:.2f} s; {what} must last "
                                    f"{low:g}-{high:g} s")  # fmt: skip


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
    """Decode a stored job's references (the worker's side), to the clip's size and frame rate.

    The worker decodes the stored bytes again rather than reading arrays the server kept: the server and
    its workers share only the job store and the files, the compressed inputs are what is stored, and a
    decode at the clip's size costs little beside generating. Both sides decode within the same budget,
    so neither holds more than `limits.max_decoded_bytes` of media for a job. Sound stays at its own rate
    (mono): `build_request` and the engine resample it."""
    blobs = [(folder / ref.file).read_bytes() for ref in spec.references]
    return decode_references(spec, blobs, [ref.role for ref in spec.references], limits)


def size_for(resolution: str | None, ratio: str | None, native: tuple[int, int], step: int,
             adaptive_from: tuple[int, int] | None = None) -> tuple[int, int]:  # fmt: skip
    """(width, height) for an Ark `resolution` ("480p": the short side) and `ratio` ("16:9", or
    "adaptive": the first frame's (width, height)), rounded to multiples of `step`. Unset: the model's own."""
    if ratio in (None, "adaptive", "keep_ratio"):
        if adaptive_from is not None and ratio is not None:
            a, b = adaptive_from
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
