"""Captions for a scene in varied wordings.

Every fact (a colour, a shape, an action, a voice, a place...) has several phrasings. The "train"
phrasings are what a model learns from; the "heldout" ones (synonyms and sentence shapes the train
set never uses) measure whether it understood the words or only memorised the templates.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from openseedance.stage.scene import Action, Character, Scene

WORDINGS = ("train", "heldout")

_TRAIN: dict[str, list[str]] = {
    "red": ["red"], "orange": ["orange"], "yellow": ["yellow"], "green": ["green"],
    "cyan": ["cyan", "light blue"], "blue": ["blue", "dark blue"], "purple": ["purple"], "pink": ["pink"],
    "circle": ["circle", "ball"], "square": ["square", "block"], "triangle": ["triangle"],
    "diamond": ["diamond"],
    "plain": ["", "plain"], "striped": ["striped", "stripy"], "spotted": ["spotted", "dotted"],
    "round": ["round eyes", "two round eyes"], "big": ["big eyes", "large eyes"],
    "sleepy": ["sleepy eyes", "droopy eyes"], "single": ["one eye", "a single eye"],
    "deep": ["deep", "very low"], "low": ["low"], "medium": ["medium", "middle"], "high": ["high"],
    "squeaky": ["squeaky", "very high"],
    "bright": ["bright", "buzzy"], "warm": ["warm", "soft"], "hollow": ["hollow", "woody"],
    "nasal": ["nasal", "twangy"],
    "studio": ["a grey studio", "a grey room"], "night": ["the night", "a dark night"],
    "beach": ["a sandy beach", "the beach"], "snow": ["a snowy field", "the snow"],
    "forest": ["a dark forest", "the woods"], "brick": ["a brick room", "a room with brick walls"],
    "quiet": ["It is quiet.", "All is quiet."], "wind": ["Wind blows.", "The wind is blowing."],
    "rain": ["Rain falls.", "It is raining."], "hum": ["A low hum fills the air.", "A machine hums."],
    "wide": ["Wide shot", "Wide view"], "medium-shot": ["Medium shot", "Mid shot"],
    "close-up": ["Close-up on {who}", "Close shot of {who}"],
    "move": ["moves {dir}", "walks {dir}", "slides {dir}"],
    "jump1": ["jumps", "jumps once", "hops"], "jump2": ["jumps twice", "hops twice", "bounces twice"],
    "jump3": ["jumps three times", "hops three times", "bounces three times"],
    "speak": ['says "{word}"', 'says "{word}" out loud', 'speaks: "{word}"'],
    "idle": ["stays still", "waits"],
    "voice": ["with a {pitch} {timbre} voice", "who speaks in a {pitch}, {timbre} voice"],
    "then": [", then ", " and then "],
    "in": ["Setting: {place}", "Scene: {place}", "The place: {place}"],
    "motion": ["Everyone moves as in {video}.", "The movements follow {video}.", "They move just like in {video}."],
}  # fmt: skip

_HELDOUT: dict[str, list[str]] = {
    "red": ["scarlet"], "orange": ["tangerine"], "yellow": ["golden"], "green": ["emerald"],
    "cyan": ["turquoise"], "blue": ["navy"], "purple": ["violet"], "pink": ["rose-coloured"],
    "circle": ["disc"], "square": ["cube"], "triangle": ["pyramid"], "diamond": ["rhombus"],
    "plain": ["plain-coloured"], "striped": ["banded"], "spotted": ["polka-dot"],
    "round": ["ordinary eyes"], "big": ["huge eyes"], "sleepy": ["half-closed eyes"],
    "single": ["just one eye"],
    "deep": ["bass"], "low": ["lowish"], "medium": ["mid-range"], "high": ["high-pitched"],
    "squeaky": ["shrill"],
    "bright": ["brassy"], "warm": ["mellow"], "hollow": ["breathy, flute-like"], "nasal": ["reedy"],
    "studio": ["an empty grey hall"], "night": ["the dark of night"], "beach": ["the seaside"],
    "snow": ["a white winter field"], "forest": ["a shadowy wood"], "brick": ["a brick-walled chamber"],
    "quiet": ["Silence all around."], "wind": ["A breeze howls."], "rain": ["Raindrops patter down."],
    "hum": ["Something drones in the background."],
    "wide": ["Long shot"], "medium-shot": ["Waist-level shot"], "close-up": ["Tight shot on {who}"],
    "move": ["travels {dir}ward"], "jump1": ["leaps up once"], "jump2": ["springs up two times"],
    "jump3": ["leaps three times in a row"], "speak": ['utters the word "{word}"'],
    "idle": ["holds its position"],
    "voice": ["whose voice is {pitch} and {timbre}"], "then": [" and after that "],
    "in": ["Somewhere in {place}"],
    "motion": ["Motion copied from {video}."],
}  # fmt: skip


@dataclass(frozen=True)
class Captions:
    """`prompt` is the whole description (global + `[shot N]` parts when there are several shots)."""

    prompt: str
    overall: str
    shots: tuple[str, ...]
    wording: str


class _Phraser:
    def __init__(self, wording: str, rng: np.random.Generator, cast: tuple[Character, ...] = (),
                 motion: bool = False) -> None:  # fmt: skip
        if wording not in WORDINGS:
            raise ValueError(f"wording must be one of {WORDINGS}, got {wording!r}")
        self.table = _TRAIN if wording == "train" else _HELDOUT
        self.wording = wording
        self.rng = rng
        self.cast = cast  # characters named by their references (@image1, @audio1) instead of words
        self.motion = motion  # moves and hops are left to a reference video (@video1), not described

    def __call__(self, key: str, **kw: str) -> str:
        options = self.table[key]
        return options[int(self.rng.integers(len(options)))].format(**kw)

    def _cited(self, c: Character) -> int | None:
        return next((i + 1 for i, x in enumerate(self.cast) if x is c), None)

    def name(self, c: Character) -> str:
        k = self._cited(c)
        return f"@image{k}" if k else f"the {self(c.identity.colour)} {self(c.identity.shape)}"

    def describe(self, c: Character) -> str:
        k = self._cited(c)
        if k:
            return f"@image{k} " + ["with the voice of @audio{k}", "who speaks like @audio{k}"][
                int(self.rng.integers(2))].format(k=k)  # fmt: skip
        ident = c.identity
        pattern = self(ident.pattern)
        words = " ".join(w for w in (pattern, self(ident.colour), self(ident.shape)) if w)
        article = "an" if words[0] in "aeiou" else "a"
        voice = self("voice", pitch=self(c.voice.pitch), timbre=self(c.voice.timbre))
        return f"{article} {words} with {self(ident.eyes)}, {voice}"

    def action(self, a: Action) -> str:
        if a.kind == "move":
            return self("move", dir=a.direction)
        if a.kind == "jump":
            return self(f"jump{a.hops}")
        if a.kind == "speak":
            return self("speak", word=a.word)
        return self("idle")

    def doings(self, c: Character, start: float, end: float) -> str:
        """What `c` does between `start` and `end`; "" when it is all left to a motion reference."""
        hidden = ("idle", "move", "jump") if self.motion else ("idle",)
        acts = [a for a in c.actions if start <= a.start < end and a.kind not in hidden]
        if not acts:
            return "" if self.motion else self("idle")
        text = self.action(acts[0])
        for a in acts[1:]:
            text += self("then") + self.action(a)
        return text


def caption(scene: Scene, wording: str = "train", variant: int = 0, cited: bool = False,
            motion: str = "") -> Captions:  # fmt: skip
    """Describe a scene; `variant` picks another phrasing of the same facts. `cited`: character k
    is not described but named by its references, `@imagek` (its look) and `@audiok` (its voice),
    as a prompt given reference images and voices would. `motion` (e.g. "@video1"): the moves and
    hops are not described but left to that reference video of the scene's motion (words spoken are
    still written)."""
    rng = np.random.default_rng([scene.seed & 0xFFFFFFFF, zlib.crc32(wording.encode()), variant])
    say = _Phraser(wording, rng, scene.characters if cited else (), motion=bool(motion))
    chars = scene.characters
    people = "; ".join(say.describe(c) for c in chars)
    sound = say(scene.ambience)
    if motion:
        sound = f"{say('motion', video=motion)} {sound}"
    place = say("in", place=say(scene.shots[0].place))

    def acts(members: list[Character] | tuple[Character, ...], start: float, end: float) -> str:
        done = ((c, say.doings(c, start, end)) for c in members)
        return " ".join(f"{_cap(say.name(c))} {d}." for c, d in done if d)

    if len(scene.shots) == 1:
        text = " ".join(x for x in (f"{place}: {people}.", acts(chars, 0.0, scene.duration), sound) if x)
        return Captions(prompt=text, overall=text, shots=(text,), wording=wording)
    overall = f"{people}. {sound}"
    shots = []
    for shot in scene.shots:
        key = "medium-shot" if shot.framing == "medium" else shot.framing
        frame = say(key, who=say.name(chars[shot.focus]) if shot.focus is not None else "")
        where = say(shot.place)
        members = [c for i, c in enumerate(chars) if shot.focus is None or i == shot.focus]
        shots.append(" ".join(x for x in (f"{frame}, {where}.", acts(members, shot.start, shot.end)) if x))
    prompt = overall + " " + " ".join(f"[shot {i + 1}] {s}" for i, s in enumerate(shots))
    return Captions(prompt=prompt, overall=overall, shots=tuple(shots), wording=wording)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]
