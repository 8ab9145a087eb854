"""From a request (or a training sample) to model inputs: patchify video latents and lay out audio
latents as tokens, give every token its place on the one clock (seconds, y, x), mark which tokens
are clean conditions (t = 0) for each task, add reference token groups and the prompt's text
states. `prepare(request, encoders)` gives a `Conditions` bundle; the trainer builds the same
bundle from cached latents with `assemble`, and both hand it to the model through
`Conditions.tokens`.

Legend: B batch, D latent channels, T latent frames, H W latent pixels, N tokens, C token
channels, S audio latents.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from einops import rearrange

from openseedance import media
from openseedance.media import Clip
from openseedance.request import TASKS, GenerationRequest, canonical_prompt, role_id, shot_cuts, split_shots
from openseedance.sampling import Branch
from openseedance.text import TextEncoder, join_parts, pad_shots, pad_states
from openseedance.transformer import Text, Tokens

# the conditioning a model learns in training (DESIGN §1): the request tasks a sample can stand for
# ("edit" is extension's mechanism with the given part around the window, not a task of its own),
# and "motion", a reference video of the clip's motion
TRAINING_TASKS = (*(t for t in TASKS if t != "edit"), "motion")
REFERENCE_TASKS = ("references", "motion")  # tasks that need Stage data (references to learn from)


@dataclass(frozen=True)
class Layout:
    """Where a clip's latents sit on the clock: video latent grid (T, H, W) and patch, the frame
    rate and the video autoencoder's temporal factor, and the audio latent count and rate."""

    video_grid: tuple[int, int, int]
    patch: tuple[int, int, int]
    fps: float
    temporal_factor: int
    audio_latents: int
    audio_rate: float  # latents per second

    @property
    def token_grid(self) -> tuple[int, int, int]:
        (t, h, w), (pt, ph, pw) = self.video_grid, self.patch
        if t % pt or h % ph or w % pw:
            raise ValueError(f"latent grid {self.video_grid} is not divisible by the patch {self.patch}")
        return t // pt, h // ph, w // pw

    @property
    def video_tokens(self) -> int:
        t, h, w = self.token_grid
        return t * h * w

    def frame_times(self) -> torch.Tensor:
        """Seconds of each latent frame: frame 0 alone at 0, then the middle of its group of frames."""
        f = self.temporal_factor
        j = torch.arange(self.video_grid[0], dtype=torch.float32)
        return torch.where(j == 0, 0.0, (f * j - (f - 1) / 2) / self.fps)

    def video_positions(self) -> torch.Tensor:
        """(N, 3): seconds, y, x of every video token (patch centres, in token units)."""
        t, h, w = self.token_grid
        pt = self.patch[0]
        times = self.frame_times().view(t, pt).mean(1)
        tt, yy, xx = torch.meshgrid(times, torch.arange(h, dtype=torch.float32),
                                    torch.arange(w, dtype=torch.float32), indexing="ij")  # fmt: skip
        return torch.stack([tt, yy, xx], dim=-1).reshape(-1, 3)

    def audio_positions(self, count: int | None = None) -> torch.Tensor:
        """(S, 3): seconds of each audio latent's centre (the clip's, or `count` from 0 s); audio sits at
        the centre of the picture."""
        _, h, w = self.token_grid
        s = (torch.arange(self.audio_latents if count is None else count, dtype=torch.float32) + 0.5) / self.audio_rate
        return torch.stack([s, torch.full_like(s, (h - 1) / 2), torch.full_like(s, (w - 1) / 2)], dim=-1)


def video_to_tokens(latents: torch.Tensor, patch: tuple[int, int, int]) -> torch.Tensor:
    """(B, D, T, H, W) -> (B, N, D*pt*ph*pw)."""
    pt, ph, pw = patch
    return rearrange(latents, "b d (t pt) (h ph) (w pw) -> b (t h w) (d pt ph pw)", pt=pt, ph=ph, pw=pw)


def tokens_to_video(tokens: torch.Tensor, layout: Layout) -> torch.Tensor:
    """(B, N, C) -> (B, D, T, H, W)."""
    (pt, ph, pw), (t, h, w) = layout.patch, layout.token_grid
    return rearrange(tokens, "b (t h w) (d pt ph pw) -> b d (t pt) (h ph) (w pw)", t=t, h=h, w=w, pt=pt, ph=ph, pw=pw)


def audio_to_tokens(latents: torch.Tensor) -> torch.Tensor:
    """(B, D, S) -> (B, S, D)."""
    return latents.transpose(1, 2)


def tokens_to_audio(tokens: torch.Tensor) -> torch.Tensor:
    return tokens.transpose(1, 2)


def token_shots(times: torch.Tensor, bounds: list[float] | tuple[float, ...]) -> torch.Tensor:
    """The shot (1, 2, ...) each token's time (seconds) falls in, given the cut times between
    shots (n - 1 of them for n shots)."""
    return torch.bucketize(times.contiguous(), torch.tensor(list(bounds), dtype=times.dtype), right=True) + 1


# references sit before the clip on the clock, one slot of this many seconds each (an audio or video
# reference lasts at most 15 s): @image1..9 in slots 1..9, @video1..3 in 10..12, @audio1..3 in 13..15
REF_SLOT = 20.0


@dataclass
class References:
    """Reference token groups per stream: features (1, R, C), positions (1, R, 3), roles (1, R)."""

    x: dict[str, torch.Tensor]
    pos: dict[str, torch.Tensor]
    role: dict[str, torch.Tensor]

    @property
    def count(self) -> dict[str, int]:
        return {s: x.shape[1] for s, x in self.x.items()}


def reference_tokens(images: list[torch.Tensor], audios: list[torch.Tensor], layout: Layout,
                     videos: list[torch.Tensor] | tuple[()] = ()) -> References:  # fmt: skip
    """Token groups for reference images (each (1, D, 1, H, W) video latents: a picture is a 1-frame
    video), reference videos (each (1, D, T, H, W)) and reference audio clips (each (1, D, S) audio
    latents). Image and video references keep the clip's spatial grid, and video and audio
    references their own timing, all shifted into their slot before the clip; each token carries its
    role (`request.role_id`)."""
    out: dict[str, tuple[list, list, list]] = {"video": ([], [], []), "audio": ([], [], [])}
    if layout.patch[0] != 1 and images:
        raise ValueError(f"image references need a temporal patch of 1, got {layout.patch}")
    for kind, group in (("image", images), ("video", videos)):
        for i, lat in enumerate(group):
            if lat.shape[-2:] != layout.video_grid[1:]:
                raise ValueError(f"{kind} reference {i + 1} has latents of {tuple(lat.shape[-2:])}, the clip's "
                                 f"{layout.video_grid[1:]}")  # fmt: skip
            grid = replace(layout, video_grid=(lat.shape[2], *layout.video_grid[1:]))
            tokens = video_to_tokens(lat, layout.patch)
            pos = grid.video_positions()  # an image: one frame, at 0 s
            pos[:, 0] -= REF_SLOT * role_id(kind, i)
            out["video"][0].append(tokens)
            out["video"][1].append(pos)
            out["video"][2].append(torch.full((tokens.shape[1],), role_id(kind, i)))
    for i, lat in enumerate(audios):
        tokens = audio_to_tokens(lat)
        n = tokens.shape[1]
        pos = layout.audio_positions(n)
        pos[:, 0] -= REF_SLOT * role_id("audio", i)
        out["audio"][0].append(tokens)
        out["audio"][1].append(pos)
        out["audio"][2].append(torch.full((n,), role_id("audio", i)))
    refs = References({}, {}, {})
    for stream, (xs, ps, rs) in out.items():
        if xs:
            refs.x[stream] = torch.cat(xs, 1)
            refs.pos[stream] = torch.cat(ps)[None]
            refs.role[stream] = torch.cat(rs)[None]
    return refs


def with_references(x: dict[str, torch.Tensor], keep: dict[str, torch.Tensor], pos: dict[str, torch.Tensor],
                    shot: dict[str, torch.Tensor], refs: list[References | None]) -> tuple[dict, ...]:  # fmt: skip
    """Each sample's reference tokens (refs[k], or None) after its clip's tokens, per stream, padded to
    the longest in the batch: clean (kept, out of the loss), in no shot (0), hidden where they are
    padding. Returns new (x, keep, pos, shot, valid, role) dicts of (B, N + R, ...) tensors."""
    out: tuple[dict, ...] = ({}, {}, {}, {}, {}, {})
    for s in x:
        b, n, c = x[s].shape
        longest = max((r.count.get(s, 0) for r in refs if r is not None), default=0)
        rx, rp = torch.zeros(b, longest, c), torch.zeros(b, longest, 3)
        ok, rl = torch.zeros(b, longest, dtype=torch.bool), torch.zeros(b, longest, dtype=torch.long)
        for k, r in enumerate(refs):
            m = r.count.get(s, 0) if r is not None else 0
            if m:
                rx[k, :m], rp[k, :m], ok[k, :m], rl[k, :m] = r.x[s][0], r.pos[s][0], True, r.role[s][0]
        none = torch.zeros(b, longest, dtype=torch.long)
        for d, value in zip(out, (torch.cat([x[s], rx], 1), torch.cat([keep[s], torch.ones_like(ok)], 1),
                                  torch.cat([pos[s].expand(b, -1, -1), rp], 1), torch.cat([shot[s], none], 1),
                                  torch.cat([torch.ones(b, n, dtype=torch.bool), ok], 1),
                                  torch.cat([torch.zeros(b, n, dtype=torch.long), rl], 1)), strict=True):  # fmt: skip
            d[s] = value
    return out


def task_masks(task: str, layout: Layout, batch: int = 1, prefix: float = 0.5) -> dict[str, torch.Tensor]:
    """Which tokens are clean conditions (True) for a task, per stream (B, N).

    t2av, references and motion: none (references are extra tokens, clean by definition). i2av: the first
    latent frame (the first frame, encoded alone). a2v: all audio.
    v2a: all video. extend: everything before `prefix` (a fraction of the clip) in both streams.
    """
    if task not in TRAINING_TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {TRAINING_TASKS}")
    video_t = layout.video_positions()[:, 0]
    audio_t = layout.audio_positions()[:, 0]
    video = torch.zeros(layout.video_tokens, dtype=torch.bool)
    audio = torch.zeros(layout.audio_latents, dtype=torch.bool)
    if task == "i2av":
        video = video_t == 0
    elif task == "a2v":
        audio = torch.ones_like(audio)
    elif task == "v2a":
        video = torch.ones_like(video)
    elif task == "extend":
        cut = prefix * layout.audio_latents / layout.audio_rate
        video, audio = video_t < cut, audio_t < cut
    return {"video": video.expand(batch, -1).clone(), "audio": audio.expand(batch, -1).clone()}


def given_masks(layout: Layout, frames: np.ndarray, samples: np.ndarray, hop: int,
                margin: int = 2) -> dict[str, torch.Tensor]:  # fmt: skip
    """Token masks (1, N) from what is given in pixel time: `frames` (F,) and `samples` (S,) booleans.

    A latent frame is given when every frame it codes is (frame 0 alone, then groups of
    `temporal_factor`; frames past the clip count as their last frame); a video token when all its
    latent frames are. An audio latent is given when its `hop` samples are, and so are `margin`
    latents on each side (the audio encoder sees that far into its neighbours).
    """
    f, t_latent = layout.temporal_factor, layout.video_grid[0]
    index = np.minimum(np.arange(1 + f * (t_latent - 1)), len(frames) - 1)
    coded = frames[index]
    latent = np.array([coded[0]] + [coded[1 + f * (j - 1) : 1 + f * j].all() for j in range(1, t_latent)])
    t, h, w = layout.token_grid
    per_token_frame = latent.reshape(t, layout.patch[0]).all(1)
    video = torch.from_numpy(np.repeat(per_token_frame, h * w))
    padded = np.zeros(layout.audio_latents * hop, dtype=bool)
    padded[: min(len(samples), len(padded))] = samples[: len(padded)]
    audio = padded.reshape(layout.audio_latents, hop).all(1)
    if margin:
        ok = np.pad(audio, margin, mode="edge")  # the clip's own ends are no seam
        audio = np.lib.stride_tricks.sliding_window_view(ok, 2 * margin + 1).all(1)
    return {"video": video[None].clone(), "audio": torch.from_numpy(audio.copy())[None]}


# ---------------------------------------------------------------- pixels and tensors


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (3, T, H, W) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float().div(127.5).sub(1.0)


def tensor_to_frames(video: torch.Tensor) -> np.ndarray:
    """float (3, T, H, W) in [-1, 1] -> uint8 (T, H, W, 3)."""
    v = video.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return v.permute(1, 2, 3, 0).cpu().numpy()


def hold_last(frames: np.ndarray, count: int) -> np.ndarray:
    """At least `count` frames: a short clip is extended by repeating its last frame."""
    if len(frames) >= count:
        return frames
    return np.concatenate([frames, np.repeat(frames[-1:], count - len(frames), 0)])


def mono(track: np.ndarray) -> np.ndarray:
    """(S,) or (C, S) -> (1, S) float32, channels averaged."""
    track = np.asarray(track, dtype=np.float32)
    return track.mean(0, keepdims=True) if track.ndim == 2 else track[None]


def coded_frames(duration: float, fps: float, temporal_factor: int) -> int:
    """Frames a clip is encoded as: its frames rounded up to 1 + k * temporal_factor."""
    frames = round(duration * fps)
    return 1 + temporal_factor * math.ceil(max(frames - 1, 0) / temporal_factor)


# ---------------------------------------------------------------- what a request gives


@dataclass
class Given:
    """What a request gives in pixel time, over the clip's whole length."""

    video: np.ndarray  # (F, H, W, 3) uint8: given frames, and placeholders elsewhere
    frames: np.ndarray  # (F,) bool: given
    audio: np.ndarray  # (1, S) float32
    samples: np.ndarray  # (S,) bool: given
    verbatim: np.ndarray  # (F,) bool: frames to show exactly as given (a source clip's, a first or last frame)


def has_given_frames(request: GenerationRequest) -> bool:
    """Frames to place on the clip's timeline and show as given: a clip to extend or edit, a first or
    last frame (not when the whole video is given, as in video -> audio)."""
    framed = request.source is not None or request.first_frame is not None or request.last_frame is not None
    return framed and request.video is None


def given_parts(request: GenerationRequest, temporal_factor: int) -> Given:
    """A full-length clip and, per frame and per sample, whether it is given. A clip to extend sits
    at the start (forward) or the end (backward); a clip to edit fills the length with its window
    marked to redo; a last frame fills the frames the final latent frame codes (groups of
    `temporal_factor`); the frames between given ones hold the nearest given one."""
    n, samples = round(request.duration * request.fps), round(request.duration * request.sample_rate)
    size = (request.height, request.width)
    video, frames = np.zeros((n, *size, 3), np.uint8), np.zeros(n, bool)
    audio, heard = np.zeros((1, samples), np.float32), np.zeros(samples, bool)
    if request.source is not None:
        src = request.source
        sv = media.resize_frames(media.resample_frames(src.video, src.fps, request.fps), size)[:n]
        sa = np.zeros((1, 0), np.float32) if src.audio is None else \
            mono(media.resample_audio(src.audio, src.sample_rate, request.sample_rate))[:, :samples]  # fmt: skip
        if request.extend == "backward":
            video[n - len(sv) :], video[: n - len(sv)] = sv, sv[0]
            frames[n - len(sv) :] = True
            audio[:, samples - sa.shape[1] :] = sa
            heard[samples - sa.shape[1] :] = True
        else:  # forward, or an edit: the source from the start
            video[: len(sv)], video[len(sv) :] = sv, sv[-1]
            frames[: len(sv)] = True
            audio[:, : sa.shape[1]] = sa
            heard[: sa.shape[1]] = True
        if request.edit_window is not None:
            a, b = request.edit_window
            frames[round(a * request.fps) : round(b * request.fps)] = False
            heard[round(a * request.sample_rate) : round(b * request.sample_rate)] = False
    verbatim = frames.copy()
    if request.first_frame is not None:
        video[0], frames[0], verbatim[0] = media.resize_frames(request.first_frame[None], size)[0], True, True
    if request.last_frame is not None:
        f = temporal_factor
        group = slice(max(1, 1 + f * ((n - 2) // f)), n)  # the frames the last latent frame codes
        video[group], frames[group] = media.resize_frames(request.last_frame[None], size)[0], True
        verbatim[-1] = True
    if request.source is None and frames.any():  # the frames between: the nearest given one, held
        known = np.flatnonzero(frames)
        nearest = known[np.abs(np.arange(n)[:, None] - known[None]).argmin(1)]
        video = video[nearest]
    return Given(video, frames, audio, heard, verbatim)


def paste_given(clip: Clip, request: GenerationRequest, temporal_factor: int, fade_frames: int = 2,
                fade_seconds: float = 0.02) -> Clip:  # fmt: skip
    """A generated clip with what the request gave put back exactly: the frames to score (video ->
    audio), the soundtrack to follow (audio -> video), and the given frames and sound of a clip to
    extend or edit and of a first or last frame, blended into the generated parts over a short fade
    (so a seam neither jumps nor clicks)."""
    video, audio = clip.video, clip.audio
    if request.video is not None:
        frames = round(request.duration * request.fps)
        video = media.resize_frames(request.video, (request.height, request.width))[:frames]
    if not request.generate_audio:
        audio = None
    elif request.audio is not None:
        audio = mono(request.audio)[:, : round(request.duration * request.sample_rate)]
    if has_given_frames(request):
        given = given_parts(request, temporal_factor)
        w = _fade(given.verbatim, fade_frames)[:, None, None, None]
        video = (w * given.video + (1 - w) * video.astype(np.float32)).round().astype(np.uint8)
        if audio is not None:
            a = _fade(given.samples, fade_seconds * request.sample_rate)[None]
            audio = (a * given.audio + (1 - a) * audio).astype(np.float32)
    return Clip(video=video, audio=audio, fps=request.fps, sample_rate=request.sample_rate)


def _fade(mask: np.ndarray, fade: float) -> np.ndarray:
    """1 where given, falling to 0 over `fade` steps away from it."""
    if mask.all() or not mask.any():
        return mask.astype(np.float32)
    given = np.flatnonzero(mask)
    at = np.clip(np.searchsorted(given, np.arange(len(mask))), 1, len(given) - 1) if len(given) > 1 else 0
    here = np.arange(len(mask))
    distance = np.minimum(np.abs(here - given[at]), np.abs(here - given[np.maximum(at - 1, 0)]))
    return np.clip(1.0 - distance / (fade + 1.0), 0.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------- a request as model inputs


@dataclass(frozen=True)
class Encoders:
    """What `prepare` needs of a model: its text encoder; its video encoder, uint8 frames (T, H, W, 3)
    -> normalised latents (1, D, t, h, w) on the CPU (encoded `chunk` frames at a time when given);
    its audio encoder, a mono track (1, S) -> (1, D, n); the layout of a request's clip on the clock;
    the audio samples per latent; and the channels of a video and an audio token."""

    text: TextEncoder
    video: Callable[[np.ndarray, int | None], torch.Tensor]
    audio: Callable[[np.ndarray], torch.Tensor]
    layout: Callable[[GenerationRequest], Layout]
    hop: int
    channels: dict[str, int]


@dataclass
class Conditions:
    """A batch's model inputs per stream, (B, N, ...) each, plus the text: what sampling and training
    both feed the model (`tokens`). The clip's own tokens come first in each stream (`targets` of
    them), then reference tokens."""

    clean: dict[str, torch.Tensor]  # (B, N, C): given values (in training, the whole clip); zeros elsewhere
    keep: dict[str, torch.Tensor]  # (B, N) bool: clean conditions, held at t = 0
    pos: dict[str, torch.Tensor]  # (B, N, 3): seconds, y, x
    shot: dict[str, torch.Tensor]  # (B, N) long: the shot each token is in (0: references)
    text: Text  # sampling: row 0 the prompt, row 1 the empty prompt; training: one row per sample
    targets: dict[str, int]  # tokens of the clip itself per stream
    valid: dict[str, torch.Tensor] | None = None  # (B, N) bool: False for padding; None: all real
    role: dict[str, torch.Tensor] | None = None  # (B, N) long: `request.role_id` of each token

    @property
    def has_references(self) -> bool:
        return self.valid is not None

    def tokens(self, x: dict[str, torch.Tensor], t: dict[str, torch.Tensor]) -> dict[str, Tokens]:
        """The model's inputs for values `x` at per-token times `t`, one sample per row."""
        return {s: Tokens(x[s], t[s], self.pos[s], None if self.valid is None else self.valid[s],
                          None if self.role is None else self.role[s], self.shot[s]) for s in x}  # fmt: skip

    def branches(self, x: dict[str, torch.Tensor], t: dict[str, torch.Tensor],
                 branches: tuple[Branch, ...]) -> tuple[dict[str, Tokens], Text]:  # fmt: skip
        """One sample's inputs for each guidance branch, stacked: COND reads the prompt, UNCOND and
        BARE the empty prompt, and BARE does not see the references (as if none were given)."""
        n = len(branches)
        rows = [0 if b is Branch.COND else 1 for b in branches]
        streams = {}
        for s in x:
            seen = None
            if self.valid is not None:
                clip_only = self.valid[s] & (torch.arange(self.valid[s].shape[1], device=x[s].device) < self.targets[s])
                seen = torch.cat([clip_only if b is Branch.BARE else self.valid[s] for b in branches])
            streams[s] = Tokens(x[s].repeat(n, 1, 1), t[s].repeat(n, 1), self.pos[s].expand(n, -1, -1), seen,
                                None if self.role is None else self.role[s].expand(n, -1),
                                self.shot[s].expand(n, -1))  # fmt: skip
        return streams, self.text.rows(rows)

    def to(self, device: torch.device | str) -> Conditions:
        def move(d: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
            return None if d is None else {s: v.to(device) for s, v in d.items()}

        return Conditions(move(self.clean), move(self.keep), move(self.pos), move(self.shot), self.text.to(device),
                          self.targets, move(self.valid), move(self.role))  # fmt: skip


def assemble(clean: dict[str, torch.Tensor], keep: dict[str, torch.Tensor], layout: Layout,
             cuts: list[tuple[float, ...]], refs: list[References | None], text: Text) -> Conditions:  # fmt: skip
    """A batch's `Conditions` from its clips' clean values and masks (B, N, ...), the cut times of
    each sample's shots, each sample's references (or None) and the text states."""
    pos = {"video": layout.video_positions(), "audio": layout.audio_positions()}
    shot = {s: torch.stack([token_shots(p[:, 0], c) for c in cuts]) for s, p in pos.items()}
    pos = {s: p.expand(len(cuts), -1, -1) for s, p in pos.items()}
    targets = {s: v.shape[1] for s, v in clean.items()}
    valid = role = None
    if any(r is not None for r in refs):
        clean, keep, pos, shot, valid, role = with_references(clean, keep, pos, shot, refs)
    return Conditions(clean, keep, pos, shot, text, targets, valid, role)


def prepare(request: GenerationRequest, encoders: Encoders, per_shot: bool = True) -> Conditions:
    """A request as model inputs: its layout, the given parts encoded as clean tokens, its
    references as clean token groups, and the prompt's text beside the empty prompt's (for
    guidance). A multi-shot prompt is encoded part by part unless `per_shot` is False."""
    layout = encoders.layout(request)
    text, cuts = prompt_text(encoders.text, request, per_shot)
    clean, keep = clip_conditions(request, layout, encoders)
    refs = _references(request, layout, encoders) if any(request.reference_counts.values()) else None
    return assemble(clean, keep, layout, [cuts], [refs], text)


def prompt_text(encoder: TextEncoder, request: GenerationRequest,
                per_shot: bool = True) -> tuple[Text, tuple[float, ...]]:  # fmt: skip
    """The prompt's text states (row 0) beside the empty prompt's (row 1), and the cut times between
    shots. A multi-shot prompt is encoded part by part (global, shot 1, ...), each token marked with
    its part; its shots last as long as the prompt says, or share the clip's length equally."""
    prompt = canonical_prompt(request.prompt, request.reference_counts)
    whole, shots = split_shots(prompt)
    if not shots or not per_shot:
        states, mask = encoder.encode([prompt, ""])
        return Text(states, mask), ()
    states, mask = encoder.encode([whole, *shots, ""])
    joined, parts = join_parts([states[k, mask[k]] for k in range(len(shots) + 1)])
    padded, valid = pad_states([joined, states[-1, mask[-1]]])
    return Text(padded, valid, pad_shots([parts, None], padded.shape[1])), shot_cuts(prompt, request.duration)


def clip_conditions(request: GenerationRequest, layout: Layout,
                     encoders: Encoders) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:  # fmt: skip
    """The clip's clean tokens (zeros where generated) and the masks of the tokens that are given (any
    engine whose model takes a time per token conditions through these)."""
    task = request.task
    if task in ("extend", "edit") or request.last_frame is not None:
        return _given_latents(given_parts(request, layout.temporal_factor), layout, encoders)
    keep = task_masks(task, layout)
    video = torch.zeros(1, layout.video_tokens, encoders.channels["video"])
    audio = torch.zeros(1, layout.audio_latents, encoders.channels["audio"])
    frames = (layout.video_grid[0] - 1) * layout.temporal_factor + 1
    if task == "i2av":
        image = media.resize_frames(request.first_frame[None], (request.height, request.width))
        first = video_to_tokens(encoders.video(image, None), layout.patch)  # (1, D, 1, h, w) latents
        video[:, : first.shape[1]] = first
    elif task == "v2a":
        given = hold_last(media.resize_frames(request.video, (request.height, request.width))[:frames], frames)
        video = video_to_tokens(encoders.video(given, 16), layout.patch)
    elif task == "a2v":
        samples = layout.audio_latents * encoders.hop
        track = mono(request.audio)
        track = np.pad(track[:, :samples], ((0, 0), (0, max(0, samples - track.shape[1]))))
        audio = audio_to_tokens(encoders.audio(track))
    return {"video": video, "audio": audio}, keep


def _given_latents(given: Given, layout: Layout,
                   encoders: Encoders) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:  # fmt: skip
    coded = (layout.video_grid[0] - 1) * layout.temporal_factor + 1
    z = encoders.video(hold_last(given.video, coded)[:coded], 16)
    hop = encoders.hop
    track = np.pad(given.audio, ((0, 0), (0, max(0, layout.audio_latents * hop - given.audio.shape[1]))))
    audio = encoders.audio(track[:, : layout.audio_latents * hop])
    keep = given_masks(layout, given.frames, given.samples, hop)
    return {"video": video_to_tokens(z, layout.patch), "audio": audio_to_tokens(audio)}, keep


def _references(request: GenerationRequest, layout: Layout, encoders: Encoders) -> References:
    """Reference images (each resized to the clip's size and encoded as a 1-frame video), videos
    (resized and retimed to the clip's size and frame rate, encoded whole; their sound is not
    used) and voices (mono, encoded whole) as clean token groups."""
    size = (request.height, request.width)
    images = [encoders.video(media.resize_frames(im[None], size), None) for im in request.images]
    videos, f = [], layout.temporal_factor
    for ref in request.videos:
        frames = media.resize_frames(media.resample_frames(ref.video, ref.fps, request.fps), size)
        coded = 1 + f * ((len(frames) - 1) // f)  # whole groups of frames after the first
        videos.append(encoders.video(frames[:coded], 16))
    voices = [encoders.audio(mono(a)) for a in request.audios]
    return reference_tokens(images, voices, layout, videos)
