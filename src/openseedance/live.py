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

MAX_PROMPT = 2000  # characters of a prompt given while it plays
HOLD = 0.1  # seconds of each chunk's sound sent with the next one, cross-faded into its take (see `Live._sound`)
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
        longest = (self.window.context + self.window.chunk) / request.fps
        if longest > caps.max_duration:
            raise ValueError(f"context and chunk make {longest:.2f} s windows; this model makes at most "
                             f"{caps.max_duration:g} s at once")  # fmt: skip
        pipe.check(self.request)  # the face guard and the engine's check, once, before any work
        self.job_id = job_id or "live-" + hashlib.sha256(json.dumps(
            resolved_request(self.request), sort_keys=True, default=str).encode()).hexdigest()[:16]  # fmt: skip
        self.payload = provenance.Payload.make(pipe.model_id, self.job_id)
        provenance.prepare()
        getattr(pipe.engine, "text_encoder", None)  # loaded on first use: now, before the first chunk waits for it
        self.timeline: list[dict[str, Any]] = []  # (start, prompt) of every prompt used
        self.frames = self.samples = 0  # made so far
        self.settings: dict[str, Any] = {}
        self._global, self._shot = _parts(request.prompt)
        self._typed = request.prompt
        self._next: str | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._held: np.ndarray | None = None  # the end of the sound made, not sent yet (see `_sound`)
        self._sound_past = np.zeros((1, 0), np.float32)

    # ------------------------------------------------------------ steering

    def steer(self, prompt: str) -> None:
        """Make the chunks from the next one on with `prompt` (a "[shot]" prompt cuts to a new shot)."""
        prompt = check_prompt(prompt)
        with self._lock:
            self._next = prompt

    def stop(self) -> None:
        """End the stream after the chunk being made."""
        self._stopped.set()

    @property
    def seconds(self) -> float:
        """Seconds made so far."""
        return self.frames / self.request.fps

    # ------------------------------------------------------------ chunks

    def __iter__(self) -> Iterator[LiveChunk]:
        past: Clip | None = None  # the unmarked window of the recent past
        index = 0
        while not self._stopped.is_set() and not self._done:
            clock = time.perf_counter()
            request, prompt = self._chunk_request(index, past)
            out = self.pipe.engine.generate(request, self.options, False)
            made = cond.paste_given(out.clip, request, self.pipe.capabilities.frames_per_latent)
            start = self.window.context if past is not None else 0
            video = made.video[start : start + (self.window.chunk if past is not None else self.window.first)]
            self.frames += len(video)
            last = self._done or self._stopped.is_set()
            audio = None if out.clip.audio is None else self._sound(out.clip.audio, start, len(video), last)
            new = Clip(video=video, audio=audio, fps=made.fps, sample_rate=made.sample_rate)
            past = self._keep_past(past, video)
            marked = self._marked(new, self.frames - len(video))
            self.settings = dict(out.settings)
            seconds = {**out.seconds, "chunk": time.perf_counter() - clock}
            yield LiveChunk(index, (self.frames - len(video)) / self.request.fps, marked, prompt, seconds, out.tokens)
            self.samples += 0 if audio is None else audio.shape[1]
            index += 1
        if self._held is not None and self._held.shape[1]:  # stopped between chunks: the sound held back
            tail, self._held = self._held, None
            nothing = np.zeros((0, self.request.height, self.request.width, 3), np.uint8)
            marked = self._marked(Clip(nothing, tail, self.request.fps, self.request.sample_rate), self.frames)
            yield LiveChunk(index, self.seconds, marked, self._typed)
            self.samples += tail.shape[1]

    @property
    def _done(self) -> bool:
        return self.config.duration is not None and self.seconds >= self.config.duration - 1e-6

    def _sound(self, decoded: np.ndarray, start: int, frames: int, last: bool) -> np.ndarray:
        """The sound to send with a chunk of `frames` frames starting at frame `start` of the window
        just made (`decoded`: its whole sound as decoded). The model remakes the last few audio
        latents of the past, so the end of each chunk's sound is held back and sent with the next
        one, cross-faded from the first take into the second over `HOLD` seconds: the seam's sound
        then runs on as the model continued it (a hold of a tenth of a second, video unaffected)."""
        rate = self.request.sample_rate / self.request.fps
        a, b = round(start * rate), round((start + frames) * rate)
        new = decoded[:, a:b]
        head = np.zeros((decoded.shape[0], 0), np.float32)
        if self._held is not None:  # the held sound, cross-faded into the new take of the same samples
            take = decoded[:, a - self._held.shape[1] : a]
            w = 0.5 + 0.5 * np.cos(np.linspace(0.0, np.pi, take.shape[1], dtype=np.float32))
            head = w * self._held + (1 - w) * take
            self._sound_past = np.concatenate([self._sound_past[:, : -self._held.shape[1]], head], axis=1)
        self._sound_past = np.concatenate([self._sound_past, new], axis=1)[:, -round(self.window.context * rate) :]
        hold = 0 if last else min(new.shape[1], round(HOLD * self.request.sample_rate))
        self._held = new[:, new.shape[1] - hold :] if hold else None
        return np.concatenate([head, new[:, : new.shape[1] - hold]], axis=1).astype(np.float32)

    def _chunk_request(self, index: int, past: Clip | None) -> tuple[GenerationRequest, str]:
        """The request for chunk `index`: the stream's own request first, then an extension of the past."""
        with self._lock:  # the stream starts with its own prompt; one asked for meanwhile follows it
            wanted, self._next = (None, self._next) if past is None else (self._next, None)
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

    def _keep_past(self, past: Clip | None, video: np.ndarray) -> Clip:
        """The last `context` frames and their sound made so far, unmarked (the sound as it is sent,
        what is held back included)."""
        frames = video if past is None else np.concatenate([past.video, video])
        frames = frames[-self.window.context :]
        audio = self._sound_past if self.request.generate_audio else None
        if audio is not None:
            audio = audio[:, -round(len(frames) * self.request.sample_rate / self.request.fps) :]
        return Clip(video=frames, audio=audio, fps=self.request.fps, sample_rate=self.request.sample_rate)

    def _marked(self, clip: Clip, frame: int) -> Clip:
        """The chunk with both invisible marks at the phase the stream has reached (its first frame is
        frame `frame` of the stream), and the visible label when asked for."""
        video, audio = clip.video, clip.audio
        if self.request.visible_watermark and len(video):
            video = provenance.visible_mark(video)
        if self.mark:
            if len(video):
                video = provenance.embed_video(video, self.payload, offset=frame)
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


def check_prompt(prompt: str) -> str:
    """The prompt, stripped; a ValueError for one a live stream cannot take: empty, over `MAX_PROMPT`
    characters, more than one shot at once, malformed shots."""
    prompt = prompt.strip()
    if not prompt:
        raise ValueError("the prompt is empty")
    if len(prompt) > MAX_PROMPT:
        raise ValueError(f"the prompt is {len(prompt)} characters; at most {MAX_PROMPT}")
    _parts(_CUT.sub("", prompt))
    return prompt


def _parts(prompt: str) -> tuple[str, str]:
    """A live prompt's global text (the setting and who is in it, kept across cuts) and its one shot."""
    whole, shots = split_shots(prompt)
    if len(shots) > 1:
        raise ValueError("a live stream plays one shot at a time: start with one and send each next one as "
                         "'[shot] ...' while it plays")  # fmt: skip
    return (whole, shots[0]) if shots else ("", whole)
