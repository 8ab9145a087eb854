"""Render a scene to frames and a waveform, with per-frame ground truth, at any size, fps and rate.

Bodies are drawn from signed distance functions with one pixel of anti-aliasing; sounds are
synthesised: voiced syllables are harmonic series whose loudness is the mouth's openness, impacts
are a pitched thump plus a noise click at the exact landing time.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from openseedance.media import Clip, check_format
from openseedance.stage import world
from openseedance.stage.scene import Character, Identity, Scene, Voice, envelope, mouth, positions


@dataclass(frozen=True)
class RenderConfig:
    width: int = 64
    height: int = 64
    fps: float = 12.0
    sample_rate: int = 16000

    def __post_init__(self) -> None:
        check_format(self.width, self.height, self.fps, self.sample_rate)

    def num_frames(self, duration: float) -> int:
        return max(1, int(round(duration * self.fps)))

    def num_samples(self, duration: float) -> int:
        return int(round(duration * self.sample_rate))


@dataclass
class Truth:
    """Per-frame ground truth in screen terms: centres as fractions of width and height, radius as a
    fraction of the frame's shorter side, visible fraction of each body, mouth openness 0..1."""

    centers: np.ndarray  # (T, n, 2)
    radius: np.ndarray  # (T, n)
    visible: np.ndarray  # (T, n)
    mouth: np.ndarray  # (T, n)
    shot: np.ndarray  # (T,)
    events: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        r = lambda a: np.round(a, 4).tolist()  # noqa: E731
        return {
            "centers": r(self.centers),
            "radius": r(self.radius),
            "visible": r(self.visible),
            "mouth": r(self.mouth),
            "shot": self.shot.tolist(),
            "events": self.events,
        }


@dataclass
class Rendering:
    scene: Scene
    config: RenderConfig
    clip: Clip
    truth: Truth


def render(scene: Scene, config: RenderConfig | None = None) -> Rendering:
    config = config or RenderConfig()
    frames, truth = render_video(scene, config)
    audio = render_audio(scene, config.sample_rate)
    clip = Clip(video=frames, audio=audio, fps=config.fps, sample_rate=config.sample_rate)
    return Rendering(scene=scene, config=config, clip=clip, truth=truth)


# ---------------------------------------------------------------- video


def _scale(config: RenderConfig) -> float:
    return float(min(config.width, config.height))


def background(place: str, width: int, height: int) -> np.ndarray:
    """A place: sky and ground tones split at a soft horizon, with a faint texture. (H, W, 3) in 0..1."""
    top, bottom, horizon = world.PLACES[place]
    top_c, bottom_c = np.asarray(top, np.float32) / 255, np.asarray(bottom, np.float32) / 255
    y = (np.arange(height, dtype=np.float32) + 0.5) / height
    x = (np.arange(width, dtype=np.float32) + 0.5) / width
    mix = np.clip((y - horizon) * height / 1.5 + 0.5, 0, 1)[:, None, None]
    shade = (1.0 - 0.12 * np.abs(y - horizon))[:, None, None]
    img = (top_c * (1 - mix) + bottom_c * mix) * shade
    texture = 0.02 * np.sin(2 * np.pi * (x[None, :] * 3.0 + y[:, None] * 1.7 + (zlib.crc32(place.encode()) % 7)))
    img = img + texture[..., None]
    return np.clip(np.broadcast_to(img, (height, width, 3)), 0, 1).astype(np.float32)


# Per shape: eye row, eye spacing, eye scale, mouth row, mouth half-width, largest mouth half-height.
_FACE = {
    "circle": (-0.25, 0.3, 1.0, 0.38, 0.4, 0.32),
    "square": (-0.25, 0.3, 1.0, 0.38, 0.4, 0.32),
    "diamond": (-0.18, 0.28, 0.9, 0.3, 0.34, 0.27),
    "triangle": (0.02, 0.22, 0.85, 0.42, 0.36, 0.28),
}


def _disc(u: np.ndarray, v: np.ndarray, x: float, y: float, r: float) -> np.ndarray:
    return np.sqrt((u - x) ** 2 + (v - y) ** 2) - r


def draw_character(
    canvas: np.ndarray, identity: Identity, cx: float, cy: float, radius: float, openness: float
) -> None:
    """Composite one character onto `canvas` (H, W, 3) float in place. Centre and radius in pixels."""
    h, w = canvas.shape[:2]
    x0, x1 = max(0, int(cx - radius - 2)), min(w, int(cx + radius + 3))
    y0, y1 = max(0, int(cy - radius - 2)), min(h, int(cy + radius + 3))
    if x0 >= x1 or y0 >= y1 or radius <= 0:
        return
    u = (np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - cx) / radius
    v = (np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - cy) / radius
    u, v = np.broadcast_arrays(u, v)
    cover = lambda sdf: np.clip(0.5 - sdf * radius, 0.0, 1.0)[..., None]  # noqa: E731
    region = canvas[y0:y1, x0:x1]
    base = np.asarray(world.COLOURS[identity.colour], np.float32) / 255

    body_sdf = world.body_sdf(identity.shape, u, v)
    body = cover(body_sdf)
    colour = np.broadcast_to(base, region.shape).copy()
    pattern = world.pattern_sdf(identity.pattern, u, v)
    if pattern is not None:  # kept off a clean rim, so the silhouette stays sharp
        colour = colour * (1 - world.PATTERN_DARKEN * cover(pattern) * cover(body_sdf + world.PATTERN_RIM))
    layers = [(body, colour)]

    ey, spacing, scale, my, mw, mh = _FACE[identity.shape]
    eyes = [(0.0, 0.3)] if identity.eyes == "single" else [(-spacing, 0.2), (spacing, 0.2)]
    size = 1.3 if identity.eyes == "big" else 1.0
    for ex, er in eyes:
        er = er * scale * size
        white = cover(_disc(u, v, ex, ey, er))
        if identity.eyes == "sleepy":  # the upper lid covers half the eye
            white = white * np.clip((v - ey) * radius + 0.5, 0, 1)[..., None]
        layers.append((white, np.asarray(world.EYE_WHITE, np.float32) / 255))
        pupil = cover(_disc(u, v, ex, ey + (0.04 if identity.eyes == "sleepy" else 0.0), er * 0.5))
        layers.append((pupil * (white > 0), np.asarray(world.PUPIL, np.float32) / 255))

    half_h = 0.04 + (mh - 0.04) * float(np.clip(openness, 0, 1))
    mouth_sdf = (np.sqrt((u / mw) ** 2 + ((v - my) / half_h) ** 2) - 1.0) * half_h
    layers.append((cover(mouth_sdf), np.asarray(world.MOUTH_COLOUR, np.float32) / 255))

    for alpha, rgb in layers:
        alpha = alpha * body if alpha is not body else alpha
        region *= 1 - alpha
        region += alpha * rgb


def layout(scene: Scene, config: RenderConfig) -> Truth:
    """Where everything is in every frame, without drawing anything."""
    n_frames = config.num_frames(scene.duration)
    times = np.arange(n_frames) / config.fps
    n = len(scene.characters)
    world_xy = np.stack([positions(c, times) for c in scene.characters], 1)  # (T, n, 2)
    shot_idx = np.array([scene.shot_at(float(t)) for t in times], np.int64)
    cameras = np.array([scene.shots[i].camera for i in shot_idx])  # (T, 3)
    s = cameras[:, 2:3] * _scale(config)
    px = (world_xy - cameras[:, None, :2]) * s[:, None] + np.array([config.width / 2, config.height / 2])
    r_px = world.BODY_RADIUS * s  # (T, 1)
    lo, hi = px - r_px[..., None], px + r_px[..., None]
    span = np.clip(np.minimum(hi, (config.width, config.height)) - np.maximum(lo, 0.0), 0.0, None)
    visible = span.prod(-1) / (2 * r_px) ** 2
    events = [{"kind": "landing", "character": c, "time": round(t, 4)} for c, t in scene.landings()]
    events += [{"kind": "syllable", "character": c, "time": round(s, 4)} for c, s, _ in scene.speech()]
    events.sort(key=lambda e: e["time"])
    return Truth(
        centers=(px / (config.width, config.height)).astype(np.float32),
        radius=np.repeat(r_px / _scale(config), n, 1).astype(np.float32),
        visible=visible.astype(np.float32),
        mouth=np.stack([mouth(c, times) for c in scene.characters], 1).astype(np.float32),
        shot=shot_idx,
        events=events,
    )


def render_video(scene: Scene, config: RenderConfig) -> tuple[np.ndarray, Truth]:
    truth = layout(scene, config)
    backgrounds = {s.place: background(s.place, config.width, config.height) for s in scene.shots}
    frames = np.empty((len(truth.shot), config.height, config.width, 3), np.uint8)
    size = np.array([config.width, config.height])
    for f in range(len(frames)):
        canvas = backgrounds[scene.shots[truth.shot[f]].place].copy()
        r_px = float(truth.radius[f, 0]) * _scale(config)
        for c in np.argsort(truth.centers[f, :, 1]):  # nearer the bottom = in front
            cx, cy = truth.centers[f, c] * size
            draw_character(canvas, scene.characters[c].identity, cx, cy, r_px, truth.mouth[f, c])
        frames[f] = np.round(canvas * 255).astype(np.uint8)
    return frames, truth


# ---------------------------------------------------------------- audio


def harmonic_weights(timbre: str, count: int) -> np.ndarray:
    k = np.arange(1, count + 1, dtype=np.float64)
    if timbre == "bright":
        a = 1.0 / k
    elif timbre == "warm":
        a = 1.0 / k**2
    elif timbre == "hollow":
        a = np.where(k % 2 == 1, 1.0 / k, 0.0)
    elif timbre == "nasal":
        a = (1.0 / k) * (1.0 + 3.0 * np.exp(-(((k - 4.0) / 1.2) ** 2)))
    else:
        raise ValueError(f"unknown timbre {timbre!r}")
    return a


def _seeded(scene_seed: int, tag: str) -> np.random.Generator:
    return np.random.default_rng([scene_seed & 0xFFFFFFFF, zlib.crc32(tag.encode())])


def ambience(kind: str, num_samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    from scipy.signal import butter, sosfilt

    t = np.arange(num_samples) / sample_rate
    noise = rng.standard_normal(num_samples)
    if kind == "quiet":
        return 0.0005 * noise
    if kind == "wind":
        sos = butter(2, 320, "low", fs=sample_rate, output="sos")
        gust = 0.65 + 0.35 * np.sin(2 * np.pi * 0.3 * t + rng.uniform(0, 6.28))
        return 0.05 * sosfilt(sos, noise) * gust
    if kind == "rain":
        sos = butter(2, min(2500, 0.4 * sample_rate), "high", fs=sample_rate, output="sos")
        return 0.02 * sosfilt(sos, noise)
    if kind == "hum":
        return 0.02 * np.sin(2 * np.pi * 60 * t) + 0.01 * np.sin(2 * np.pi * 120 * t) + 0.001 * noise
    raise ValueError(f"unknown ambience {kind!r}")


def impact(sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A landing: a falling 95->55 Hz thump and a short bright click."""
    t = np.arange(int(0.4 * sample_rate)) / sample_rate
    freq = 55 + 40 * np.exp(-t / 0.04)
    thump = np.sin(2 * np.pi * np.cumsum(freq) / sample_rate) * np.exp(-t / 0.06)
    click = rng.standard_normal(len(t)) * np.exp(-t / 0.008)
    fade = np.clip((t[-1] - t) / 0.1, 0.0, 1.0)  # no click where the sound is cut off
    return (0.5 * thump + 0.25 * click) * fade


def syllable(voice: Voice, duration: float, glide: float, sample_rate: int) -> np.ndarray:
    """One voiced syllable at full loudness (the envelope is applied by the caller)."""
    n = int(round(duration * sample_rate))
    tau = np.arange(n) / max(n, 1)
    f0 = voice.f0 * 2.0 ** (glide * tau / 12.0)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    count = int(max(1, min(30, (min(5000.0, 0.45 * sample_rate)) // (voice.f0 * 1.07))))
    weights = harmonic_weights(voice.timbre, count)
    wave = sum(w * np.sin((k + 1) * phase) for k, w in enumerate(weights) if w > 0)
    return 0.25 * wave / math.sqrt(float((weights**2).sum()) / 2)


def speak(
    out: np.ndarray, voice: Voice, syllables: tuple[tuple[float, float], ...], glides: tuple[float, ...],
    sample_rate: int,
) -> None:  # fmt: skip
    """Add the voiced syllables of one word to `out` in place."""
    for (s, e), g in zip(syllables, glides, strict=True):
        i0 = int(round(s * sample_rate))
        wave = syllable(voice, e - s, g, sample_rate)
        times = s + np.arange(len(wave)) / sample_rate
        wave = wave * envelope(times, ((s, e),))
        i1 = min(len(out), i0 + len(wave))
        out[i0:i1] += wave[: i1 - i0]


def render_audio(scene: Scene, sample_rate: int) -> np.ndarray:
    """The scene's soundtrack, mono: (1, S) float32."""
    n = int(round(scene.duration * sample_rate))
    out = ambience(scene.ambience, n, sample_rate, _seeded(scene.seed, "ambience"))
    rng = _seeded(scene.seed, "impacts")
    for _, t in scene.landings():
        i0 = int(round(t * sample_rate))
        hit = impact(sample_rate, rng)
        i1 = min(n, i0 + len(hit))
        out[i0:i1] += hit[: i1 - i0]
    for c in scene.characters:
        for a in c.actions:
            if a.kind == "speak":
                speak(out, c.voice, a.syllables, a.intonation, sample_rate)
    return np.clip(out, -0.99, 0.99).astype(np.float32)[None]


# ---------------------------------------------------------------- references


def portrait(identity: Identity, width: int = 64, height: int = 64) -> np.ndarray:
    """The character alone, centred and large, on a plain light-grey card: (H, W, 3) uint8."""
    RenderConfig(width=width, height=height)  # validates the size
    canvas = np.full((height, width, 3), 0.78, np.float32)
    draw_character(canvas, identity, width / 2, height / 2, 0.3 * min(width, height), 0.0)
    return np.round(canvas * 255).astype(np.uint8)


def voice_sample(voice: Voice, sample_rate: int = 16000, seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """The voice saying a few words alone in a quiet room: (1, S) float32."""
    rng = _seeded(seed, f"voice-{voice.pitch}-{voice.timbre}")
    n = int(round(seconds * sample_rate))
    out = ambience("quiet", n, sample_rate, rng)
    t = 0.15
    while True:
        count = int(rng.integers(1, 4))
        sylls, glides, s = [], [], t
        for _ in range(count):
            e = s + float(rng.uniform(0.16, 0.26))
            sylls.append((s, e))
            glides.append(float(rng.uniform(-1, 1)))
            s = e + float(rng.uniform(0.12, 0.2))
        if sylls[-1][1] > seconds - 0.1:
            break
        speak(out, voice, tuple(sylls), tuple(glides), sample_rate)
        t = sylls[-1][1] + float(rng.uniform(0.25, 0.5))
    return np.clip(out, -0.99, 0.99).astype(np.float32)[None]


def companion_scene(scene: Scene, seed: int, duration: float = 3.0) -> Scene:
    """Another single-shot scene with the same characters (looks and voices) doing other things:
    the scene's reference video."""
    from openseedance.stage.scene import sample_scene

    other = sample_scene(seed, duration=duration, num_characters=len(scene.characters), num_shots=1)
    characters = tuple(
        Character(identity=mine.identity, voice=mine.voice, home=theirs.home, actions=theirs.actions)
        for mine, theirs in zip(scene.characters, other.characters, strict=True)
    )
    return Scene(seed=seed, duration=other.duration, characters=characters, shots=other.shots,
                 ambience=other.ambience)  # fmt: skip
