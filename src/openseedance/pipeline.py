"""The shared wrapper around any engine: GenerationRequest -> GeneratedClip.

    pipe = Pipeline.from_pretrained()              # the bundled default model, or a model folder
    out = pipe(GenerationRequest("a red circle jumps and says hello"))
    out.write("out.mp4")

Every engine gets the same face guard and check before any work, the given parts of the request
(frames to score, a soundtrack to follow, a clip to extend or edit, first and last frames) put back
exactly, the visible and invisible marks, the resolved request in the file's metadata and the signed
manifest. The CLI, the server's workers, stage-bench and the benchmarks all call this wrapper.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from openseedance import conditioning as cond
from openseedance import engines, media, provenance
from openseedance.engines import Capabilities, Generator, RunOptions
from openseedance.media import Clip
from openseedance.request import GenerationRequest
from openseedance.sampling import Progress


@dataclass
class GeneratedClip:
    clip: Clip
    request: dict[str, Any]  # the resolved request: every setting that made this clip
    seconds: dict[str, float] = field(default_factory=dict)  # time per stage
    tokens: int = 0  # tokens the engine generated (usage)

    def write(self, path: str | os.PathLike) -> Path:
        """H.264 + AAC mp4; the resolved request is stored in the file's metadata, and a signed
        provenance manifest is added (C2PA, or signed metadata where C2PA cannot sign)."""
        path = media.write_video(path, self.clip, metadata={"openseedance": json.dumps(self.request)})
        provenance.sign_file(path, provenance.claims(self.request))
        return path


class Pipeline:
    """An engine behind the shared front. `allow_faces` accepts references that show real human faces."""

    def __init__(self, engine: Generator, allow_faces: bool = False) -> None:
        self.engine = engine
        self.allow_faces = allow_faces

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, dtype: torch.dtype = torch.float32,
                        allow_faces: bool = False, teacher: bool = False) -> Pipeline:  # fmt: skip
        """The engine a model folder holds (default: the bundled model); a clear error when it is
        missing or damaged. `teacher`: the model a distilled folder learnt from, kept in it."""
        if teacher:
            from openseedance.engines.bundled import teacher_folder

            path = teacher_folder(path)
        return cls(engines.load(path, dtype), allow_faces)

    @classmethod
    def untrained(cls, preset: str = "debug", config: Any = None, seed: int = 0) -> Pipeline:
        """The bundled engine's architecture at a preset, with random weights (tests, speed benchmarks)."""
        from openseedance.engines.bundled import BundledEngine

        return cls(BundledEngine.untrained(preset, config, seed))

    @property
    def capabilities(self) -> Capabilities:
        return self.engine.capabilities

    @property
    def model_id(self) -> str:
        return self.engine.model_id

    def to(self, device: str | torch.device) -> Pipeline:
        self.engine.to(device)
        return self

    def check(self, request: GenerationRequest) -> None:
        """Raise ValueError for what the engine cannot do, and provenance.FaceError for a reference
        that shows a real face (unless `allow_faces`), before any work."""
        check_request(request, self.engine, self.allow_faces)

    def __call__(self, request: GenerationRequest, options: RunOptions | None = None,
                 progress: bool | Progress = False, job_id: str | None = None) -> GeneratedClip:  # fmt: skip
        """Generate one clip. Its marks carry the model id and `job_id`; without one, an id derived from
        the request, so that the same request still gives the same clip."""
        options = options or RunOptions()
        self.check(request)
        out = self.engine.generate(request, options, progress)
        clock = time.perf_counter()
        clip = cond.paste_given(out.clip, request, self.capabilities.frames_per_latent)
        resolved = {**resolved_request(request), **out.settings}
        if job_id is None:
            settings = json.dumps({**resolved, "model": self.model_id}, sort_keys=True)
            job_id = "request-" + hashlib.sha256(settings.encode()).hexdigest()[:16]
        clip, resolved["provenance"] = self._provenance(clip, request, job_id, options.mark)
        return GeneratedClip(clip, resolved, {**out.seconds, "mark": time.perf_counter() - clock}, out.tokens)

    def _provenance(self, clip: Clip, request: GenerationRequest, job_id: str,
                    mark: bool) -> tuple[Clip, dict[str, Any]]:  # fmt: skip
        """The visible label when asked for, then the invisible marks on each generated stream (a given
        video or soundtrack is kept as it was); and what was embedded."""
        payload = provenance.Payload.make(self.model_id, job_id)
        video, audio = clip.video, clip.audio
        if request.visible_watermark:
            video = provenance.visible_mark(video)
        marked = {"video": mark and request.video is None, "audio": mark and request.audio is None}
        if marked["video"]:
            video = provenance.embed_video(video, payload)
        if marked["audio"] and audio is not None:
            audio = provenance.embed_audio(audio, clip.sample_rate, payload)
        record = {"payload": payload.hex, "model_id": self.model_id, "job_id": job_id,
                  "invisible_marks": [s for s in ("video", "audio") if marked[s] and getattr(clip, s) is not None],
                  "visible_mark": request.visible_watermark}  # fmt: skip
        return Clip(video=video, audio=audio, fps=clip.fps, sample_rate=clip.sample_rate), record


def check_request(request: GenerationRequest, model: Capabilities | Generator, allow_faces: bool) -> None:
    """What every engine's requests go through before any work: the real-face guard first (a real
    person's likeness is refused as such, whatever else is wrong), then the model's own check: the
    engine's, or its card's in a process that holds only the card (the HTTP server)."""
    if not allow_faces:
        provenance.check_references(request)
    model.check(request)


def resolved_request(request: GenerationRequest) -> dict[str, Any]:
    """A request's plain settings (no media), with its task: what the clip's metadata records."""
    resolved = {f.name: getattr(request, f.name) for f in fields(request)}
    resolved = {k: v for k, v in resolved.items() if not isinstance(v, np.ndarray | tuple | Clip)}
    if request.edit_window is not None:
        resolved["edit_window"] = list(request.edit_window)
    return {**{k: v for k, v in resolved.items() if v is not None}, "task": request.task}


def as_generator(pipe: Pipeline, options: RunOptions | None = None) -> Callable[[GenerationRequest], Clip]:
    """A `GenerationRequest -> Clip` callable (what stage-bench runs)."""

    def generate(request: GenerationRequest) -> Clip:
        return pipe(request, options).clip

    return generate
