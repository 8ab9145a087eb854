"""A Stage scene: characters with identities and voices, their actions over time, shots and sound.

A scene is resolution-free: positions live in world units where the wide shot's central square is
[0, 1] x [0, 1] (y down), times are seconds. `sample_scene(seed)` is deterministic, and every scene
round-trips through JSON (`to_dict` / `Scene.from_dict`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from openseedance.stage import world

MARGIN = 0.15  # seconds kept free of events next to every cut and at both ends of the clip
MIN_SHOT = 1.2  # seconds


@dataclass(frozen=True)
class Identity:
    colour: str
    shape: str
    pattern: str
    eyes: str


@dataclass(frozen=True)
class Voice:
    pitch: str
    timbre: str

    @property
    def f0(self) -> float:
        return world.PITCHES[self.pitch]


@dataclass(frozen=True)
class Action:
    """One thing a character does in [start, end).

    move: `direction`, `distance` (world units); jump: `hops` of `hop_time` s and `height`;
    speak: `word`, and `syllables` as absolute (start, end) times; idle: nothing else.
    """

    kind: str
    start: float
    end: float
    direction: str | None = None
    distance: float = 0.0
    hops: int = 0
    hop_time: float = 0.0
    height: float = 0.0
    word: str | None = None
    syllables: tuple[tuple[float, float], ...] = ()
    intonation: tuple[float, ...] = ()  # semitone glide per syllable

    @property
    def landings(self) -> tuple[float, ...]:
        return tuple(self.start + (i + 1) * self.hop_time for i in range(self.hops))


@dataclass(frozen=True)
class Character:
    identity: Identity
    voice: Voice
    home: tuple[float, float]
    actions: tuple[Action, ...] = ()


@dataclass(frozen=True)
class Shot:
    start: float
    end: float
    framing: str
    place: str
    focus: int | None  # the character a close-up is on
    camera: tuple[float, float, float]  # world centre x, y and zoom (1 = wide)


@dataclass(frozen=True)
class Scene:
    seed: int
    duration: float
    characters: tuple[Character, ...]
    shots: tuple[Shot, ...]
    ambience: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scene:
        def action(a: dict[str, Any]) -> Action:
            a = dict(a)
            a["syllables"] = tuple(tuple(s) for s in a.get("syllables", ()))
            a["intonation"] = tuple(a.get("intonation", ()))
            return Action(**a)

        characters = tuple(
            Character(
                identity=Identity(**c["identity"]),
                voice=Voice(**c["voice"]),
                home=tuple(c["home"]),
                actions=tuple(action(a) for a in c["actions"]),
            )
            for c in data["characters"]
        )
        shots = tuple(Shot(**{**s, "camera": tuple(s["camera"])}) for s in data["shots"])
        return cls(
            seed=data["seed"],
            duration=data["duration"],
            characters=characters,
            shots=shots,
            ambience=data["ambience"],
            meta=dict(data.get("meta", {})),
        )

    def shot_at(self, t: float) -> int:
        for i, shot in enumerate(self.shots):
            if t < shot.end:
                return i
        return len(self.shots) - 1

    def speech(self) -> list[tuple[int, float, float]]:
        """(character, start, end) of every syllable, in time order."""
        out = [
            (i, s, e)
            for i, c in enumerate(self.characters)
            for a in c.actions
            if a.kind == "speak"
            for s, e in a.syllables
        ]
        return sorted(out, key=lambda x: x[1])

    def landings(self) -> list[tuple[int, float]]:
        out = [(i, t) for i, c in enumerate(self.characters) for a in c.actions for t in a.landings]
        return sorted(out, key=lambda x: x[1])


# ---------------------------------------------------------------- motion


def _smoothstep(s: np.ndarray) -> np.ndarray:
    s = np.clip(s, 0.0, 1.0)
    return s * s * (3.0 - 2.0 * s)


def positions(character: Character, times: np.ndarray) -> np.ndarray:
    """World (x, y) of a character's body centre at each time: (N, 2)."""
    times = np.asarray(times, dtype=np.float64)
    xy = np.tile(np.asarray(character.home, dtype=np.float64), (len(times), 1))
    for a in character.actions:
        if a.kind == "move":
            dx, dy = world.DIRECTIONS[a.direction]
            s = _smoothstep((times - a.start) / (a.end - a.start))
            xy[:, 0] += dx * a.distance * s
            xy[:, 1] += dy * a.distance * s
        elif a.kind == "jump":
            phase = (times - a.start) / a.hop_time
            inside = (phase >= 0) & (phase < a.hops)
            frac = np.mod(phase, 1.0)
            xy[:, 1] -= np.where(inside, 4.0 * a.height * frac * (1.0 - frac), 0.0)
    return xy


def envelope(times: np.ndarray, syllables: tuple[tuple[float, float], ...]) -> np.ndarray:
    """Loudness (= mouth openness) of a run of syllables: 15 ms attack, 40 ms release."""
    times = np.asarray(times, dtype=np.float64)
    env = np.zeros_like(times)
    for s, e in syllables:
        rise = np.clip((times - s) / 0.015, 0.0, 1.0)
        fall = np.clip((e - times) / 0.040, 0.0, 1.0)
        env = np.maximum(env, np.minimum(rise, fall))
    return env


def mouth(character: Character, times: np.ndarray) -> np.ndarray:
    sylls = tuple(s for a in character.actions if a.kind == "speak" for s in a.syllables)
    return envelope(times, sylls)


# ---------------------------------------------------------------- sampling


def sample_scene(
    seed: int,
    *,
    duration: float = 4.0,
    num_characters: int | None = None,
    num_shots: int | None = None,
    framings: tuple[str, ...] = world.FRAMINGS,
) -> Scene:
    """A random but valid scene: characters never overlap, stay on screen, and speak in turns."""
    if not duration > 0 or not math.isfinite(duration):
        raise ValueError(f"duration must be a positive number of seconds, got {duration}")
    if duration < 1.0:
        raise ValueError(f"a Stage scene needs at least 1 second, got {duration}")
    if num_characters is not None and not 1 <= num_characters <= 3:
        raise ValueError(f"num_characters must be 1, 2 or 3, got {num_characters}")
    max_shots = max(1, min(3, int(duration // MIN_SHOT)))
    if num_shots is not None and not 1 <= num_shots <= max_shots:
        raise ValueError(f"num_shots must be 1..{max_shots} for a {duration:g} s scene, got {num_shots}")
    unknown = set(framings) - set(world.FRAMINGS)
    if unknown or not framings:
        raise ValueError(f"framings must be some of {world.FRAMINGS}, got {framings}")
    rng = np.random.default_rng(seed)
    for _ in range(500):
        scene = _attempt(rng, seed, duration, num_characters, num_shots or None, max_shots, framings)
        if scene is not None:
            return scene
    raise RuntimeError(f"could not sample a valid scene for seed {seed}")  # pragma: no cover


def _attempt(
    rng: np.random.Generator,
    seed: int,
    duration: float,
    num_characters: int | None,
    num_shots: int | None,
    max_shots: int,
    framings: tuple[str, ...],
) -> Scene | None:
    n = num_characters or int(rng.integers(1, 4))
    colours = rng.choice(list(world.COLOURS), size=n, replace=False)
    pitches = rng.choice(list(world.PITCHES), size=n, replace=False)
    shapes = rng.choice(world.SHAPES, size=n, replace=False)  # distinct, so no two look alike
    identities = [
        Identity(
            colour=str(colours[i]),
            shape=str(shapes[i]),
            pattern=str(rng.choice(world.PATTERNS)),
            eyes=str(rng.choice(world.EYES)),
        )
        for i in range(n)
    ]
    voices = [Voice(pitch=str(pitches[i]), timbre=str(rng.choice(world.TIMBRES))) for i in range(n)]
    homes = _homes(rng, n)
    if homes is None:
        return None

    k = num_shots or int(rng.integers(1, max_shots + 1))
    spare = duration - k * MIN_SHOT
    lengths = MIN_SHOT + spare * rng.dirichlet(np.ones(k))
    bounds = np.concatenate([[0.0], np.cumsum(lengths)])
    bounds[-1] = duration
    place = str(rng.choice(list(world.PLACES)))
    layout: list[tuple[str, str, int | None]] = []
    for i in range(k):
        framing = str(rng.choice(framings))
        if i > 0 and rng.random() < 0.4:
            place = str(rng.choice([p for p in world.PLACES if p != place]))
        if i > 0 and (framing, place) == layout[-1][:2]:
            others = [f for f in framings if f != framing]
            if others:
                framing = str(rng.choice(others))
            else:
                place = str(rng.choice([p for p in world.PLACES if p != place]))
        focus = int(rng.integers(n)) if framing == "close-up" else None
        layout.append((framing, place, focus))

    actions: list[list[Action]] = [[] for _ in range(n)]
    speech: list[tuple[float, float]] = []
    for i in range(k):
        s0, s1 = float(bounds[i]) + MARGIN, float(bounds[i + 1]) - MARGIN
        focus = layout[i][2]
        for c in rng.permutation(n):
            if focus is not None and c != focus:
                continue
            actions[c] += _fill(rng, s0, s1, speech)
    characters = [
        Character(identity=identities[c], voice=voices[c], home=homes[c], actions=tuple(actions[c])) for c in range(n)
    ]
    if not any(a.kind in ("jump", "speak") for c in characters for a in c.actions):
        return None
    if not _valid_paths(characters, duration):
        return None
    shots = []
    for i, (framing, place, focus) in enumerate(layout):
        start, end = float(bounds[i]), float(bounds[i + 1])
        camera = _camera(characters, framing, focus, start, end)
        if camera is None:
            return None
        shots.append(Shot(start=start, end=end, framing=framing, place=place, focus=focus, camera=camera))
    return Scene(
        seed=seed,
        duration=float(duration),
        characters=tuple(characters),
        shots=tuple(shots),
        ambience=str(rng.choice(world.AMBIENCES)),
    )


def motion_twin(scene: Scene, seed: int) -> Scene:
    """The scene's motion and camera with other looks, voices and places: what a reference video of
    its motion shows. Every character keeps its home and its actions (moves, hops and words at the
    same times), and the shots their cuts, framings, focus and camera; each character gets a colour
    and a shape the scene does not use, another voice, and each place another place. Deterministic
    in (scene, seed)."""
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 0x7417])
    chars = scene.characters
    colours = rng.permutation([c for c in world.COLOURS if c not in {x.identity.colour for x in chars}])
    shapes = rng.permutation(world.SHAPES)  # a fresh draw: a character may keep its shape, not its colour
    pitches = rng.permutation(list(world.PITCHES))
    twins = []
    for i, c in enumerate(chars):
        identity = Identity(colour=str(colours[i]), shape=str(shapes[i]), pattern=str(rng.choice(world.PATTERNS)),
                            eyes=str(rng.choice(world.EYES)))  # fmt: skip
        pitch = next(str(p) for p in pitches if p != c.voice.pitch and p not in {t.voice.pitch for t in twins})
        twins.append(dataclasses.replace(c, identity=identity, voice=Voice(pitch, str(rng.choice(world.TIMBRES)))))
    places = {p: str(rng.choice([q for q in world.PLACES if q != p])) for p in {s.place for s in scene.shots}}
    shots = tuple(dataclasses.replace(s, place=places[s.place]) for s in scene.shots)
    ambience = str(rng.choice([a for a in world.AMBIENCES if a != scene.ambience]))
    return dataclasses.replace(scene, characters=tuple(twins), shots=shots, ambience=ambience, meta={})


def _homes(rng: np.random.Generator, n: int) -> list[tuple[float, float]] | None:
    for _ in range(100):
        xy = rng.uniform([0.2, 0.38], [0.8, 0.72], size=(n, 2))
        d = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(n)
        if d.min() >= 0.36:
            return [(round(float(x), 4), round(float(y), 4)) for x, y in xy]
    return None


def _fill(rng: np.random.Generator, start: float, end: float, speech: list[tuple[float, float]]) -> list[Action]:
    """A sequence of actions for one character inside one shot's window."""
    out: list[Action] = []
    t = start + float(rng.uniform(0.0, 0.25))
    while end - t > 0.35:
        kind = str(rng.choice(["move", "jump", "speak", "idle"], p=[0.3, 0.27, 0.3, 0.13]))
        action = _make(rng, kind, t)
        if action.end > end or (kind == "speak" and _overlaps(action, speech)):
            action = Action("idle", t, round(min(end, t + float(rng.uniform(0.3, 0.8))), 4))
        if action.kind == "speak":
            speech.append((action.start - 0.15, action.end + 0.15))
        out.append(action)
        t = action.end + float(rng.uniform(0.08, 0.3))
    return out


def _overlaps(action: Action, speech: list[tuple[float, float]]) -> bool:
    return any(action.start < e and s < action.end for s, e in speech)


def _make(rng: np.random.Generator, kind: str, t: float) -> Action:
    r = lambda lo, hi: round(float(rng.uniform(lo, hi)), 4)  # noqa: E731
    t = round(t, 4)
    if kind == "move":
        return Action(
            "move", t, round(t + r(0.8, 1.4), 4),
            direction=str(rng.choice(list(world.DIRECTIONS))), distance=r(0.12, 0.24),
        )  # fmt: skip
    if kind == "jump":
        hops, hop_time = int(rng.integers(1, 4)), r(0.36, 0.46)
        return Action("jump", t, round(t + hops * hop_time, 4), hops=hops, hop_time=hop_time,
                      height=r(0.1, 0.15))  # fmt: skip
    if kind == "speak":
        word = str(rng.choice(list(world.WORDS)))
        sylls, glides, s = [], [], t
        for _ in range(world.WORDS[word]):
            e = round(s + r(0.16, 0.26), 4)
            sylls.append((s, e))
            glides.append(r(-1.0, 1.0))
            s = round(e + r(0.12, 0.2), 4)
        return Action("speak", t, sylls[-1][1], word=word, syllables=tuple(sylls), intonation=tuple(glides))
    return Action("idle", t, round(t + r(0.4, 1.0), 4))


def _valid_paths(characters: list[Character], duration: float) -> bool:
    times = np.arange(0.0, duration, 0.02)
    paths = np.stack([positions(c, times) for c in characters])  # (n, N, 2)
    lo, hi = world.BODY_RADIUS + 0.04, 1.0 - world.BODY_RADIUS - 0.04
    if paths.min() < lo or paths.max() > hi:
        return False
    for a in range(len(characters)):
        for b in range(a + 1, len(characters)):
            if np.linalg.norm(paths[a] - paths[b], axis=-1).min() < 2.6 * world.BODY_RADIUS:
                return False
    return True


def _camera(
    characters: list[Character], framing: str, focus: int | None, start: float, end: float
) -> tuple[float, float, float] | None:
    if framing == "wide":
        return (0.5, 0.5, 1.0)
    times = np.arange(start, end, 0.02)
    members = [focus] if framing == "close-up" else range(len(characters))
    pts = np.concatenate([positions(characters[i], times) for i in members])
    r = world.BODY_RADIUS + 0.03
    x0, y0 = pts.min(0) - r
    x1, y1 = pts.max(0) + r
    span = max(x1 - x0, y1 - y0)
    zoom = min(2.3 if framing == "close-up" else 1.45, 1.0 / span)
    if zoom < 1.15:
        return None  # this framing would look like the wide shot
    return (round(float((x0 + x1) / 2), 4), round(float((y0 + y1) / 2), 4), round(float(zoom), 4))
