"""Live: a clip of any length made chunk by chunk while it plays, steered as it goes (DESIGN §8).

    live = Live(pipe, GenerationRequest("a red circle bounces"), LiveConfig(chunk=1.0))
    with media.FragmentWriter("live.mp4", 64, 64, 12.0, 16000) as out:
        for part in live:                    # until live.stop(), or LiveConfig.duration
            out.write(part.clip)             # playable at once
            live.steer("it says hello")      # from the next chunk on
    live.finish("live.mp4")                  # the resolved request and the signed manifest

The first chunk is the request itself (text, a first frame, references...). Every later one is an
extension of a bounded window of the recent past: the last `context` seconds, unmarked, are given as
the clip to extend, and only the new `chunk` seconds are kept, so time and memory per chunk are the
same at any length. Windows are cut on the autoencoder's latent groups (the context is 1 + k groups
of frames, the chunk whole groups), so the given frames are exactly whole latents and the seam is
where a latent starts. Both marks go on every chunk as it is made, at the phase where the one before
ended, so the whole stream reads back like a clip marked at once.

Steering: a new prompt replaces the current one from the next chunk. A prompt that starts with a
shot marker ("[shot] Close-up, it says hi.") cuts to a new shot of the same scene: the first
prompt's global text (the setting and who is in it) is kept, and the chunk after the cut is made as
a two-shot clip whose first shot is the window of the past, so the cut falls where the new chunk
starts. References (looks, voices) are given to every chunk.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from openseedance import conditioning as cond
from openseedance import media, provenance
from openseedance.engines import RunOptions
from openseedance.media import Clip
from openseedance.pipeline import Pipeline, resolved_request
from openseedance.request import GenerationRequest, split_shots

_CUT = re.compile(r"^\s*\[\s*shot\s*\d*\s*\]\s*", re.IGNORECASE)


@dataclass(frozen=True)
class LiveConfig:
    chunk: float = 1.0  # seconds made per step: shorter answers a new prompt sooner, costs more per second
    context: float = 1.0  # seconds of the recent past each chunk continues (1 + whole latent groups of frames)
    duration: float | None = None  # stop after this many seconds (None: until stopped)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.chunk) and 0 < self.chunk <= 10):
            raise ValueError(f"chunk must be 0-10 seconds, got {self.chunk!r}")
        if not (math.isfinite(self.context) and 0 < self.context <= 10):
            raise ValueError(f"context must be 0-10 seconds, got {self.context!r}")
        if self.duration is not None and not (math.isfinite(self.duration) and self.duration > 0):
            raise ValueError(f"duration must be a positive number of seconds, got {self.duration!r}")


@dataclass
class LiveChunk:
    index: int
    start: float  # seconds into the stream
    clip: Clip  # this chunk's frames and sound, marked
    prompt: str  # the prompt it was made with
    seconds: dict[str, float] = field(default_factory=dict)  # time per stage
    tokens: int = 0  # tokens generated for it (the window of the past included: what it cost)


@dataclass
class _Window:
    """Frame counts of a live stream on the autoencoder's latent groups."""

    first: int  # frames of the first chunk: 1 + whole groups
    chunk: int  # frames of every later chunk: whole groups
    context: int  # frames of the past each later chunk continues: 1 + whole groups


def _window(config: LiveConfig, fps: float, group: int, min_duration: float) -> _Window:
    groups = max(1, round(config.chunk * fps / group))
    context = 1 + group * max(1, round((config.context * fps - 1) / group))
    first = 1 + groups * group
    while first / fps < min_duration:  # the engine's shortest clip
        first += group
    return _Window(first, groups * group, context)


class Live:
    """A live stream of chunks from `pipe`, starting from `request` (its duration is ignored: the
    stream runs until `stop` or `config.duration`). Iterate to make the chunks; `steer` and `stop`
    may be called from any thread."""

    def __init__(self, pipe: Pipeline, request: GenerationRequest, config: LiveConfig | None = None,
                 options: RunOptions | None = None, job_id: str | None = None) -> None:  # fmt: skip
        if request.source is not None or request.audio is not None or request.video is not None:
            raise ValueError("a live stream starts from a prompt (with a first frame and references if wanted); "
                             "it cannot extend, edit, score or follow a given clip")  # fmt: skip
        self.pipe, self.config = pipe, config or LiveConfig()
        self.options = dataclasses.replace(options or RunOptions(), mark=False)  # marked here, chunk by chunk
        self.mark = (options or RunOptions()).mark
        caps = pipe.capabilities
        self.window = _window(self.config, request.fps, caps.frames_per_latent, caps.min_duration)
        self.request = dataclasses.replace(request, duration=self.window.first / request.fps)
        pipe.check(self.request)  # the face guard and the engine's check, once, before any work
        self.job_id = job_id or "live-" + hashlib.sha256(json.dumps(
            resolved_request(self.request), sort_keys=True, default=str).encode()).hexdigest()[:16]  # fmt: skip
        self.payload = provenance.Payload.make(pipe.model_id, self.job_id)
        self.timeline: list[dict[str, Any]] = []  # (start, prompt) of every prompt used
        self.frames = self.samples = 0  # made so far
        self.settings: dict[str, Any] = {}
        self._global, self._shot = _parts(request.prompt)
        self._typed = request.prompt
        self._next: str | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    # ------------------------------------------------------------ steering

    def steer(self, prompt: str) -> None:
        """Make the chunks from the next one on with `prompt` (a "[shot]" prompt cuts to a new shot)."""
        prompt = prompt.strip()
        if not prompt:
            raise ValueError("the new prompt is empty")
        if len(prompt) > 2000:
            raise ValueError(f"the new prompt is {len(prompt)} characters; at most 2000")
        check_prompt(prompt)
        with self._lock:
            self._next = prompt

    def stop(self) -> None:
        """End the stream after the chunk being made."""
        self._stopped.set()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    @property
    def seconds(self) -> float:
        """Seconds made so far."""
        return self.frames / self.request.fps

    # ------------------------------------------------------------ chunks

    def __iter__(self) -> Iterator[LiveChunk]:
        past: Clip | None = None  # the unmarked window of the recent past
        index = 0
        while not self._stopped.is_set():
            if self.config.duration is not None and self.seconds >= self.config.duration - 1e-6:
                break
            clock = time.perf_counter()
            request, prompt = self._chunk_request(index, past)
            out = self.pipe.engine.generate(request, self.options, False)
            made = cond.paste_given(out.clip, request, self.pipe.capabilities.frames_per_latent)
            new = self._new_part(made, past is not None)
            past = self._keep_past(past, new)
            marked = self._marked(new)
            self.settings = {k: v for k, v in out.settings.items()}
            seconds = {**out.seconds, "chunk": time.perf_counter() - clock}
            chunk = LiveChunk(index, self.seconds, marked, prompt, seconds, out.tokens)
            self.frames += marked.num_frames
            self.samples += 0 if marked.audio is None else marked.audio.shape[1]
            index += 1
            yield chunk

    def _chunk_request(self, index: int, past: Clip | None) -> tuple[GenerationRequest, str]:
        """The request for chunk `index`: the stream's own request first, then an extension of the past."""
        with self._lock:
            wanted, self._next = self._next, None
        previous, cut = self._shot, False
        if wanted is not None:
            cut = bool(_CUT.match(wanted))
            if cut:  # the same scene (the global text), a new shot
                self._shot = _CUT.sub("", wanted)
            else:
                self._global, self._shot = _parts(wanted)
            self._typed = wanted
        if not self.timeline or self.timeline[-1]["prompt"] != self._typed:
            self.timeline.append({"start": round(self.seconds, 4), "prompt": self._typed})
        r, fps = self.request, self.request.fps
        seed = (r.seed + index) % 2**32
        text = f"{self._global} [shot 1] {self._shot}" if self._global else self._shot
        if past is None:
            return dataclasses.replace(r, prompt=text, seed=seed), self._typed
        if cut:  # two shots: the window of the past, then the new one from where the chunk starts
            text = f"{self._global} [shot 1 | {len(past.video) / fps:.4f}s] {previous} [shot 2] {self._shot}".strip()
        request = dataclasses.replace(r, prompt=text, seed=seed, duration=(len(past.video) + self.window.chunk) / fps,
                                      source=past, extend="forward", first_frame=None, last_frame=None)  # fmt: skip
        return request, self._typed

    def _new_part(self, made: Clip, extension: bool) -> Clip:
        """The frames and sound after the window of the past."""
        start = self.window.context if extension else 0
        count = self.window.chunk if extension else self.window.first
        rate = self.request.sample_rate / self.request.fps
        video = made.video[start : start + count]
        audio = None if made.audio is None else made.audio[:, round(start * rate) : round((start + count) * rate)]
        return Clip(video=video, audio=audio, fps=made.fps, sample_rate=made.sample_rate)

    def _keep_past(self, past: Clip | None, new: Clip) -> Clip:
        """The last `context` frames (and their sound) of what has been made, unmarked."""
        n, rate = self.window.context, self.request.sample_rate / self.request.fps
        video = new.video if past is None else np.concatenate([past.video, new.video])
        audio = new.audio
        if past is not None and past.audio is not None and new.audio is not None:
            audio = np.concatenate([past.audio, new.audio], axis=1)
        video = video[-n:]
        if audio is not None:
            audio = audio[:, -round(len(video) * rate) :]
        return Clip(video=video, audio=audio, fps=new.fps, sample_rate=new.sample_rate)

    def _marked(self, clip: Clip) -> Clip:
        """The chunk with both invisible marks at the phase the stream has reached (and the visible
        label when asked for)."""
        video, audio = clip.video, clip.audio
        if self.request.visible_watermark:
            video = provenance.visible_mark(video)
        if self.mark:
            video = provenance.embed_video(video, self.payload, offset=self.frames)
            if audio is not None:
                audio = provenance.embed_audio(audio, clip.sample_rate, self.payload, offset=self.samples)
        return Clip(video=video, audio=audio, fps=clip.fps, sample_rate=clip.sample_rate)

    # ------------------------------------------------------------ the finished stream

    def record(self) -> dict[str, Any]:
        """The resolved request of the stream so far: every setting, and every prompt with its start."""
        record = {**resolved_request(self.request), **self.settings, "task": "live",
                  "duration": round(self.seconds, 4), "prompt": self.timeline[0]["prompt"] if self.timeline else
                  self.request.prompt, "prompts": self.timeline, "chunk": self.window.chunk / self.request.fps,
                  "context": self.window.context / self.request.fps}  # fmt: skip
        record["provenance"] = {"payload": self.payload.hex, "model_id": self.pipe.model_id, "job_id": self.job_id,
                                "invisible_marks": [s for s in ("video", "audio") if self.mark and
                                                    (s == "video" or self.request.generate_audio)],
                                "visible_mark": self.request.visible_watermark}  # fmt: skip
        return record

    def finish(self, path: str | os.PathLike) -> Path:
        """Add the resolved request and the signed manifest to the finished file at `path` (written
        with `media.FragmentWriter`): it then verifies like any generated clip."""
        path = Path(path)
        record = self.record()
        media.retag(path, {"openseedance": json.dumps(record)})
        provenance.sign_file(path, provenance.claims(record))
        return path


def check_prompt(prompt: str) -> None:
    """A ValueError for a prompt a live stream cannot take: more than one shot at once, malformed shots."""
    _parts(_CUT.sub("", prompt))


def _parts(prompt: str) -> tuple[str, str]:
    """A live prompt's global text (the setting and who is in it, kept across cuts) and its one shot."""
    whole, shots = split_shots(prompt)
    if len(shots) > 1:
        raise ValueError("a live stream plays one shot at a time: start with one and send each next one as "
                         "'[shot] ...' while it plays")  # fmt: skip
    return (whole, shots[0]) if shots else ("", whole)
