"""Probes: score any clip against a scene's ground truth.

Each probe is a list of pass/fail checks and scores their pass rate (0..1, or None when the scene
gives it nothing to check):

- attribute: each character's colour is there, with the right shape and pattern; each shot's place;
  no colour that the scene does not have.
- action: per shot and character, each move goes the right way, the number of hops is right, the
  mouth opens once per syllable (and not at all when silent), still characters stay still.
- identity: each character keeps its shape and pattern from shot to shot.
- sync: visual events (landings, mouths opening) have an audio onset within half a frame + 40 ms,
  and every onset has a visual event (F1). `av_offset_ms` is the best-fitting audio lag and
  `mouth_voice_corr` the correlation of mouth openness with the voice's loudness.
- voice: each speaking character's pitch (within 1 semitone) and timbre (harmonic levels within
  5 dB on average) match its reference voice.

Probes find characters by colour and never by position, so they score a generated clip that puts
characters elsewhere as fairly as one that copies the scene's layout.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from openseedance import media
from openseedance.media import Clip
from openseedance.stage import detect, world
from openseedance.stage.render import RenderConfig, Truth, background, layout, voice_sample
from openseedance.stage.scene import Scene, Voice

PROBES = ("attribute", "action", "identity", "sync", "voice")


@dataclass
class Report:
    scores: dict[str, float | None]
    av_offset_ms: float | None
    mouth_voice_corr: float | None
    checks: list[dict[str, Any]] = field(default_factory=list)

    def failed(self) -> list[dict[str, Any]]:
        return [c for c in self.checks if not c["ok"]]

    def to_dict(self) -> dict[str, Any]:
        return {"scores": self.scores, "av_offset_ms": self.av_offset_ms,
                "mouth_voice_corr": self.mouth_voice_corr, "checks": self.checks}  # fmt: skip


def as_clip(video: Any, audio: Any = None, fps: float = 12.0, sample_rate: int = 16000) -> Clip:
    """A Clip from arrays or torch tensors: video uint8 (T, H, W, 3), or float in [0, 1] (or [-1, 1]
    when it has negative values) as (T, H, W, 3) or (T, 3, H, W); audio (S,) or (C, S)."""
    v = _numpy(video)
    if v is not None and v.dtype != np.uint8:
        if v.ndim == 4 and v.shape[1] == 3 and v.shape[-1] != 3:
            v = v.transpose(0, 2, 3, 1)
        v = v.astype(np.float32)
        if v.min() < -0.01:
            v = (v + 1) / 2
        v = np.round(np.clip(v, 0, 1) * 255).astype(np.uint8)
    a = _numpy(audio)
    if a is not None:
        a = a.astype(np.float32)
        a = a[None] if a.ndim == 1 else a
    return Clip(video=v, audio=a, fps=fps, sample_rate=sample_rate)


def _numpy(x: Any) -> np.ndarray | None:
    if x is None:
        return None
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)


class Analysis:
    """Everything the probes read from one clip, measured once."""

    def __init__(self, clip: Clip, scene: Scene) -> None:
        if clip.video is None:
            raise ValueError("the probes need a clip with video")
        t, h, w = clip.video.shape[:3]
        self.clip, self.scene, self.fps = clip, scene, float(clip.fps)
        self.config = RenderConfig(width=w, height=h, fps=clip.fps, sample_rate=clip.sample_rate)
        truth = layout(scene, self.config)
        # the clip may be a frame longer or shorter than the scene's own frame count
        self.truth = _fit_truth(truth, t)
        self.tracks = detect.tracks(clip.video, list(world.COLOURS))
        times = np.arange(t) / self.fps
        self.segments = [
            np.flatnonzero((times >= s.start) & (times < (s.end if i < len(scene.shots) - 1 else np.inf)))
            for i, s in enumerate(scene.shots)
        ]
        self.radius_px = self.truth.radius[:, 0] * min(h, w)
        self.openness = {c: detect.openness(tr, self.segments) for c, tr in self.tracks.items()}
        self.onsets = detect.onsets(clip.audio, clip.sample_rate) if clip.audio is not None else np.zeros(0)

    def hops(self, colour: str, seg: np.ndarray) -> list[tuple[float, float]]:
        tr = self.tracks[colour]
        if tr.present[seg].mean() < 0.5:
            return []
        found = detect.hops(tr.center[seg, 1], float(np.median(self.radius_px[seg])), self.fps)
        return [(apex + seg[0], land + seg[0]) for apex, land in found]

    def mouth_openings(self, colour: str, seg: np.ndarray) -> list[int]:
        if self.tracks[colour].present[seg].mean() < 0.5:
            return []
        return [int(seg[f]) for f in detect.openings(self.openness[colour][seg]) if f > 0]


def _fit_truth(truth: Truth, t: int) -> Truth:
    n = len(truth.shot)
    idx = np.minimum(np.arange(t), n - 1)
    return Truth(centers=truth.centers[idx], radius=truth.radius[idx], visible=truth.visible[idx],
                 mouth=truth.mouth[idx], shot=truth.shot[idx], events=truth.events)  # fmt: skip


def load(clip: Clip | str | Path) -> Clip:
    if isinstance(clip, str | Path):
        return media.read_video(clip)
    return clip


def probe(clip: Clip | str | Path, scene: Scene, only: tuple[str, ...] = PROBES) -> Report:
    """Score a clip (a Clip or an mp4 path) against the scene it should show."""
    unknown = set(only) - set(PROBES)
    if unknown:
        raise ValueError(f"unknown probes {sorted(unknown)}; choose from {PROBES}")
    a = Analysis(load(clip), scene)
    checks: list[dict[str, Any]] = []
    scores: dict[str, float | None] = {}
    extra: dict[str, float | None] = {"av_offset_ms": None, "mouth_voice_corr": None}
    for name in only:
        found = _PROBES[name](a, extra)
        checks += [{"probe": name, **c} for c in found]
        scores[name] = float(np.mean([c["ok"] for c in found])) if found else None
    return Report(scores=scores, checks=checks, **extra)


def _check(name: str, ok: bool, **detail: Any) -> dict[str, Any]:
    return {"check": name, "ok": bool(ok), **{k: _plain(v) for k, v in detail.items()}}


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v


# ---------------------------------------------------------------- attribute and identity


def _looks(a: Analysis, colour: str, frames: np.ndarray) -> tuple[str | None, str | None]:
    """Majority shape and pattern of a colour's blob over `frames`, each only where the body is
    big enough to show it (None otherwise)."""
    tr = a.tracks[colour]
    sel = frames[tr.present[frames] & tr.whole[frames]]
    big = sel[a.radius_px[sel] >= detect.SHAPE_MIN_RADIUS - 1e-3]
    shapes = [detect.classify_shape(tr.fill[f], tr.widest[f]) for f in big]
    bigger = sel[(a.radius_px[sel] >= detect.PATTERN_MIN_RADIUS) & ~np.isnan(tr.pattern_error[sel, 0])]
    patterns = [detect.classify_pattern(tr.pattern_error[f]) for f in bigger]
    return (detect.majority(shapes) if len(shapes) >= 3 else None), (
        detect.majority(patterns) if len(patterns) >= 3 else None
    )


@functools.cache
def _place_tones(place: str) -> np.ndarray:
    return _band_medians(np.round(background(place, 32, 32) * 255).astype(np.uint8)[None])[0]


def _band_medians(frames: np.ndarray) -> np.ndarray:
    """Median colour of the pixels no body colours, in the top fifth and bottom tenth: (T, 6)."""
    labels, _ = detect.colour_labels(frames)
    h = frames.shape[1]
    out = []
    for f in range(len(frames)):
        parts = []
        for rows in (slice(0, max(1, h // 5)), slice(h - max(1, h // 10), h)):
            px = frames[f, rows][labels[f, rows] < 0]
            parts.append(np.median(px, 0) if len(px) else np.full(3, np.nan))
        out.append(np.concatenate(parts))
    return np.asarray(out)


def _place(a: Analysis, seg: np.ndarray) -> str | None:
    frames = a.clip.video[seg[:: max(1, len(seg) // 6)]]
    tones = _band_medians(frames)
    votes = []
    for t in tones:
        if np.isnan(t).any():
            continue
        votes.append(min(world.PLACES, key=lambda p: float(np.abs(_place_tones(p) - t).sum())))
    return detect.majority(votes)


def _attribute(a: Analysis, extra: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for i, c in enumerate(a.scene.characters):
        ident = c.identity
        seen = np.flatnonzero(a.truth.visible[:, i] >= 0.95)
        if len(seen) == 0:
            continue
        tr = a.tracks[ident.colour]
        out.append(_check("colour", tr.present[seen].mean() >= 0.5, character=i, colour=ident.colour,
                          seen=float(tr.present[seen].mean())))  # fmt: skip
        shape, pattern = _looks(a, ident.colour, seen)
        for what, want, got, min_radius in (
            ("shape", ident.shape, shape, detect.SHAPE_MIN_RADIUS),
            ("pattern", ident.pattern, pattern, detect.PATTERN_MIN_RADIUS),
        ):
            if (a.radius_px[seen] >= min_radius - 1e-3).sum() >= 3:  # big enough to be judged
                out.append(_check(what, got == want, character=i, want=want, got=got))
    for k, shot in enumerate(a.scene.shots):
        if len(a.segments[k]):
            got = _place(a, a.segments[k])
            out.append(_check("place", got == shot.place, shot=k, want=shot.place, got=got))
    mine = [c.identity.colour for c in a.scene.characters]
    strays = {n: seen for n in a.tracks if n not in mine and (seen := _stray(a, n, mine)) >= 0.2}
    out.append(_check("no-extra-characters", not strays, strays=strays))
    return out


def _stray(a: Analysis, colour: str, mine: list[str]) -> float:
    """Fraction of frames with a blob of `colour` that is not the fringe of one of `mine`'s bodies
    (where two hues meet, 4:2:0 chroma mixes them into a thin band of a third hue)."""
    tr = a.tracks[colour]
    alone = tr.present.copy()
    for other in mine:
        o = a.tracks[other]
        near = np.hypot(*(tr.center - o.center).T) < np.nan_to_num(o.radius, nan=0.0)
        alone &= ~(o.present & near)
    return float(alone.mean())


def _identity(a: Analysis, extra: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    if len(a.scene.shots) < 2:
        return out
    for i, c in enumerate(a.scene.characters):
        first = None
        for k, seg in enumerate(a.segments):
            seen = seg[a.truth.visible[seg, i] >= 0.95]
            if len(seen) < 3:
                continue
            present = a.tracks[c.identity.colour].present[seen].mean() >= 0.5
            looks = _looks(a, c.identity.colour, seen) if present else (None, None)
            if first is None:
                first = (k, looks)
                continue
            (k0, (shape0, pattern0)), (shape, pattern) = first, looks
            same = present and all(
                x is None or x0 is None or x == x0 for x, x0 in ((shape, shape0), (pattern, pattern0))
            )
            out.append(_check("same-look", same, character=i, shots=[k0, k],
                              first=[shape0, pattern0], later=[shape, pattern]))  # fmt: skip
    return out


# ---------------------------------------------------------------- action


def _action(a: Analysis, extra: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for k, (shot, seg) in enumerate(zip(a.scene.shots, a.segments, strict=True)):
        if len(seg) < 3:
            continue
        for i, c in enumerate(a.scene.characters):
            if (a.truth.visible[seg, i] >= 0.95).mean() < 0.8:
                continue
            colour = c.identity.colour
            acts = [x for x in c.actions if shot.start <= x.start < shot.end]
            r = float(np.median(a.radius_px[seg]))
            xy = a.tracks[colour].center[seg]
            who = {"character": i, "shot": k}
            for x in acts:
                if x.kind != "move":
                    continue
                want = x.distance * shot.camera[2] * min(a.config.width, a.config.height)
                got = _best_displacement(xy, world.DIRECTIONS[x.direction], x.end - x.start, a.fps)
                out.append(_check(f"move-{x.direction}", got >= 0.5 * want, **who, want_px=round(want, 1),
                                  got_px=round(got, 1)))  # fmt: skip
            want_hops = sum(x.hops for x in acts if x.kind == "jump")
            got_hops = len(a.hops(colour, seg))
            out.append(_check("hops", got_hops == want_hops, **who, want=want_hops, got=got_hops))
            want_sylls = sum(len(x.syllables) for x in acts if x.kind == "speak")
            got_open = len(a.mouth_openings(colour, seg))
            ok = abs(got_open - want_sylls) <= max(1, want_sylls // 3) if want_sylls else got_open == 0
            out.append(_check("speaks" if want_sylls else "silent", ok, **who, want=want_sylls, got=got_open))
            if not any(x.kind == "move" for x in acts):
                xs = xy[:, 0][~np.isnan(xy[:, 0])]
                spread = float(np.ptp(np.percentile(xs, [5, 95]))) if len(xs) else np.inf
                out.append(_check("still", spread < 0.5 * r, **who, spread_px=round(spread, 2)))
    return out


def _best_displacement(xy: np.ndarray, direction: tuple[float, float], duration: float, fps: float) -> float:
    """Largest displacement along `direction` over any window of `duration` seconds (pixels)."""
    along = xy[:, 0] * direction[0] + xy[:, 1] * direction[1]
    span = max(1, min(len(along) - 1, int(round(duration * fps))))
    gains = along[span:] - along[:-span]
    gains = gains[~np.isnan(gains)]
    return float(gains.max()) if len(gains) else 0.0


# ---------------------------------------------------------------- sync


def visual_events(a: Analysis) -> np.ndarray:
    """Times (s) of landings and of mouths opening, read from the frames."""
    events = []
    for c in a.scene.characters:
        for seg in a.segments:
            events += [land / a.fps for _, land in a.hops(c.identity.colour, seg)]
            events += [(f - 0.5) / a.fps for f in a.mouth_openings(c.identity.colour, seg)]
    return np.sort(np.asarray(events, float))


def _sync(a: Analysis, extra: dict[str, Any]) -> list[dict[str, Any]]:
    if a.clip.audio is None or not a.truth.events:
        return []
    visual, audio = visual_events(a), a.onsets
    tol = 0.5 / a.fps + 0.04
    out = [_check("visual-event-heard", _near(v, audio, tol), time=round(float(v), 3)) for v in visual]
    out += [_check("sound-seen", _near(s, visual, tol), time=round(float(s), 3)) for s in audio]
    if not out:
        out.append(_check("events-found", False))
    extra["av_offset_ms"] = _offset(visual, audio, tol)
    extra["mouth_voice_corr"] = _mouth_voice(a)
    return out


def _near(t: float, others: np.ndarray, tol: float) -> bool:
    return bool(len(others) and np.abs(others - t).min() <= tol)


def _offset(visual: np.ndarray, audio: np.ndarray, tol: float) -> float | None:
    """The audio lag (ms) that lines the most onsets up with visual events, refined by the median."""
    if not len(visual) or not len(audio):
        return None
    lags = np.arange(-0.5, 0.5001, 0.005)
    diffs = audio[None, :] - visual[:, None]  # (V, A)
    counts = [(np.abs(diffs - lag).min(1) <= tol).sum() for lag in lags]
    best = max(counts)
    lag = min((lg for lg, n in zip(lags, counts, strict=True) if n == best), key=abs)
    near = diffs[np.arange(len(visual)), np.abs(diffs - lag).argmin(1)]
    near = near[np.abs(near - lag) <= tol]
    return round(float(np.median(near)) * 1000, 1) if len(near) else None


def _mouth_voice(a: Analysis) -> float | None:
    if not a.scene.speech():
        return None
    mouths = [np.nan_to_num(a.openness[c.identity.colour], nan=0.0) for c in a.scene.characters]
    m = np.sum(mouths, 0)
    e = detect.voice_envelope(a.clip.audio, a.clip.sample_rate, np.arange(len(m)) / a.fps)
    if m.std() < 1e-6 or e.std() < 1e-9:
        return None
    return round(float(np.corrcoef(m, e)[0, 1]), 3)


# ---------------------------------------------------------------- voice


@functools.cache
def reference_voice(voice: Voice, sample_rate: int) -> tuple[float, np.ndarray]:
    """Median pitch and harmonic profile of a voice, measured on its reference sample."""
    audio = voice_sample(voice, sample_rate)
    times = np.arange(0.05, audio.shape[1] / sample_rate - 0.05, 0.01)
    env = detect.voice_envelope(audio, sample_rate, times)
    return measure_voice(audio, sample_rate, times[env > 0.3 * env.max()])


def loud_voice(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Times every 10 ms through a clip's sound, and where its voice band is loud (above a quarter
    of its peak): ((N,), (N,) bool)."""
    times = np.arange(0.02, audio.shape[1] / sample_rate - 0.02, 0.01)
    env = detect.voice_envelope(audio, sample_rate, times)
    return times, env > 0.25 * max(float(env.max()), 1e-6)


def semitones(got_hz: float, want_hz: float) -> float:
    """How far apart two pitches are, in semitones (inf when `got_hz` was not measured)."""
    return abs(12 * np.log2(got_hz / want_hz)) if np.isfinite(got_hz) else np.inf


def measure_voice(audio: np.ndarray, sample_rate: int, times: np.ndarray) -> tuple[float, np.ndarray]:
    """Median pitch (Hz; NaN with fewer than 3 voiced frames) and harmonic profile of the voice at `times`."""
    f0, ap = detect.pitch(audio, sample_rate, times)
    ok = (ap < 0.2) & ~np.isnan(f0)
    if ok.sum() < 3:
        return float("nan"), np.full(detect.HARMONICS, np.nan)
    pitch = float(np.median(f0[ok]))
    keep = ok & (np.abs(12 * np.log2(np.where(ok, f0, pitch) / pitch)) < 2)
    profiles = [detect.harmonic_profile(audio, sample_rate, t, f) for t, f in zip(times[keep], f0[keep], strict=True)]
    profiles = [p for p in profiles if p is not None]
    return pitch, (np.median(profiles, 0) if profiles else np.full(detect.HARMONICS, np.nan))


def _voice(a: Analysis, extra: dict[str, Any]) -> list[dict[str, Any]]:
    speakers = sorted({i for i, _, _ in a.scene.speech()})
    if a.clip.audio is None or not speakers:
        return []
    sr = a.clip.sample_rate
    frames = np.arange(len(a.truth.shot))
    mouths = np.stack([np.nan_to_num(a.openness[c.identity.colour], nan=0.0) for c in a.scene.characters], 1)
    env_times, loud = loud_voice(a.clip.audio, sr)
    f = np.clip(np.round(env_times * a.fps).astype(int), 0, len(frames) - 1)
    speaker = np.where(mouths[f].max(1) > detect.MOUTH_OPEN, mouths[f].argmax(1), -1)
    out = []
    for i in speakers:
        want_pitch, want_profile = reference_voice(a.scene.characters[i].voice, sr)
        got_pitch, got_profile = measure_voice(a.clip.audio, sr, env_times[loud & (speaker == i)])
        gap = float(np.abs(got_profile - want_profile).mean()) if np.isfinite(got_profile).all() else np.inf
        out.append(_check("pitch", semitones(got_pitch, want_pitch) <= 1.0, character=i, want_hz=round(want_pitch, 1),
                          got_hz=round(got_pitch, 1) if np.isfinite(got_pitch) else None))  # fmt: skip
        out.append(_check("timbre", gap <= 5.0, character=i, gap_db=round(gap, 2) if np.isfinite(gap) else None))
    return out


_PROBES = {"attribute": _attribute, "action": _action, "identity": _identity, "sync": _sync, "voice": _voice}


# ---------------------------------------------------------------- mouth movement kept by a copy

WITHIN, BETWEEN = 0, 1  # kinds of movement rows, see `mouth_moves`


def mouth_moves(scene: Scene, truth: Truth, original: np.ndarray, copy: np.ndarray, group: int) -> np.ndarray:
    """(N, 3) rows of (kind, original, copy): the speakers' mouth movements read the probes' way
    (each mouth's dark fraction) on a clip's frames and on a copy of them (a reconstruction), for a
    codec that groups frames 1.. by `group` (frame 0 alone). Kind WITHIN is a frame's departure
    from the mean of its group, kind BETWEEN a group mean's departure from the clip's mean."""
    rows = []
    seen, made = detect.tracks(original), detect.tracks(copy)
    for c, character in enumerate(scene.characters):
        name = character.identity.colour
        if truth.mouth[: len(original), c].max() < 0.3 or name not in seen or name not in made:
            continue
        whole = ((len(original) - 1) // group) * group
        a, b = (t[name].mouth[1 : 1 + whole].reshape(-1, group) for t in (seen, made))
        ok = ~(np.isnan(a).any(1) | np.isnan(b).any(1))
        if ok.sum() < 2:
            continue
        a, b = a[ok], b[ok]
        within = zip((a - a.mean(1, keepdims=True)).ravel(), (b - b.mean(1, keepdims=True)).ravel(), strict=True)
        rows += [(WITHIN, x, y) for x, y in within]
        rows += [(BETWEEN, x, y) for x, y in zip(a.mean(1) - a.mean(), b.mean(1) - b.mean(), strict=True)]
    return np.asarray(rows, dtype=np.float64).reshape(-1, 3)


def movement_kept(moves: np.ndarray, kind: int) -> float:
    """How much of the original's movement of `kind` the copy keeps: the least-squares slope of the
    copy's on the original's (1: all of it, 0: none; NaN without rows)."""
    x, y = moves[moves[:, 0] == kind, 1:].T
    return float((x * y).sum() / (x * x).sum()) if len(x) else float("nan")
