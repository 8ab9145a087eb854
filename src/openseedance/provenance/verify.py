"""Verification: read a media file's marks and manifest, and report them."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from openseedance import media
from openseedance.provenance.audio_mark import detect_audio
from openseedance.provenance.manifest import ManifestResult, read_manifest
from openseedance.provenance.payload import MarkResult, Payload, hash16
from openseedance.provenance.video_mark import detect_video

KNOWN_MODELS = ("bundled:tiny", "bundled:tiny/teacher")


@dataclass
class Verification:
    """Whether a file carries the marks (video and audio apart), their payload, and its manifest."""

    file: str
    video: MarkResult | None  # None: the file has no video
    audio: MarkResult | None  # None: the file has no audio
    manifest: ManifestResult

    @property
    def marked(self) -> bool:
        return any(m is not None and m.found for m in (self.video, self.audio))

    @property
    def payload(self) -> str | None:
        found = [m.payload for m in (self.video, self.audio) if m is not None and m.payload]
        return found[0] if found else None

    @property
    def model(self) -> str | None:
        """The model's name when the payload's model hash is one this package knows."""
        if self.payload is None:
            return None
        model = Payload.from_hex(self.payload).model
        return next((m for m in KNOWN_MODELS if hash16(m) == model), None)

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "marked": self.marked, "payload": self.payload, "model": self.model,
                "video": None if self.video is None else self.video.to_dict(),
                "audio": None if self.audio is None else self.audio.to_dict(),
                "manifest": asdict(self.manifest)}  # fmt: skip

    def text(self) -> str:
        lines = [self.file]
        for name, mark in (("video mark", self.video), ("audio mark", self.audio)):
            if mark is None:
                lines.append(f"  {name}: no {name.split()[0]} stream")
                continue
            state = "FOUND" if mark.found else "not found"
            payload = f", payload {mark.payload}" if mark.payload else (", payload unreadable" if mark.found else "")
            lines.append(f"  {name}: {state} (confidence {mark.confidence:.6f}, z {mark.score:.1f}{payload})")
        if self.payload:
            p = Payload.from_hex(self.payload)
            lines.append(f"  payload:    {self.payload} = model hash {p.model:04x}"
                         f"{f' ({self.model})' if self.model else ''}, job hash {p.job:04x}")  # fmt: skip
        m = self.manifest
        if not m.present:
            lines.append("  manifest:   none")
        else:
            state = "intact" if m.intact else "BROKEN: " + "; ".join(m.problems)
            lines.append(f"  manifest:   {m.kind}, {state}")
            if m.signer:
                lines.append(f"              signed by {m.signer}")
            lines += [f"              note: {note}" for note in m.notes]
            if m.claims:
                lines.append(f"              claims {json.dumps(m.claims, sort_keys=True)}")
        return "\n".join(lines)


def verify(path: str | os.PathLike) -> Verification:
    """Read a media file and report its marks and manifest."""
    path = Path(path)
    if path.suffix.lower() in media.AUDIO_SUFFIXES:
        audio, rate = media.read_audio(path)
        video_result, audio_result = None, detect_audio(audio, rate)
    else:
        clip = media.read_video(path)
        video_result = detect_video(clip.video)
        audio_result = None if clip.audio is None else detect_audio(clip.audio, clip.sample_rate)
    return Verification(str(path), video_result, audio_result, read_manifest(path))
