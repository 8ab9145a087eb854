"""Deliberately wrong versions of a rendered scene: what the probes must catch.

Each corruption takes a true rendering and returns a clip with one thing broken, so a probe that
scores the true clip near 100% and these clearly lower is measuring what it claims.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from openseedance.media import Clip
from openseedance.stage import world
from openseedance.stage.render import Rendering, render
from openseedance.stage.scene import Character, Identity, Scene, Voice


def shift_audio(r: Rendering, seconds: float = 0.2) -> Clip:
    """The soundtrack arrives late by `seconds` (same length, silence in front)."""
    audio = r.clip.audio
    k = round(seconds * r.clip.sample_rate)
    shifted = np.concatenate([np.zeros_like(audio[:, :k]), audio[:, : audio.shape[1] - k]], 1)
    return dataclasses.replace(r.clip, audio=shifted)


def wrong_colour(r: Rendering) -> Clip:
    """The most visible character is drawn in a colour the scene does not have."""
    used = {c.identity.colour for c in r.scene.characters}
    other = next(c for c in world.COLOURS if c not in used)
    k = int(r.truth.visible.sum(0).argmax())
    chars = tuple(
        _with(c, identity=dataclasses.replace(c.identity, colour=other)) if i == k else c
        for i, c in enumerate(r.scene.characters)
    )
    return render(dataclasses.replace(r.scene, characters=chars), r.config).clip


def swap_voices(r: Rendering) -> Clip:
    """Characters speak with each other's voices (a lone character with another voice)."""
    chars = r.scene.characters
    if len(chars) == 1:
        pitch = next(p for p in world.PITCHES if p != chars[0].voice.pitch)
        voices = [Voice(pitch=pitch, timbre=chars[0].voice.timbre)]
    else:
        voices = [chars[(i + 1) % len(chars)].voice for i in range(len(chars))]
    new = tuple(_with(c, voice=v) for c, v in zip(chars, voices, strict=True))
    return render(dataclasses.replace(r.scene, characters=new), r.config).clip


def swap_identities(r: Rendering) -> Clip:
    """From the second shot on, characters trade colours (a lone character turns into another):
    the looks no longer stay with the characters across the cut."""
    chars = r.scene.characters
    if len(chars) == 1:
        ident = chars[0].identity
        colour = next(c for c in world.COLOURS if c != ident.colour)
        shape = next(s for s in world.SHAPES if s != ident.shape)
        idents = [Identity(colour=colour, shape=shape, pattern=ident.pattern, eyes=ident.eyes)]
    else:
        idents = [
            dataclasses.replace(c.identity, colour=chars[(i + 1) % len(chars)].identity.colour)
            for i, c in enumerate(chars)
        ]
    other = render(
        dataclasses.replace(
            r.scene, characters=tuple(_with(c, identity=d) for c, d in zip(chars, idents, strict=True))
        ),
        r.config,
    )
    later = r.truth.shot >= 1
    video = np.where(later[:, None, None, None], other.clip.video, r.clip.video)
    return dataclasses.replace(r.clip, video=video)


def freeze(r: Rendering) -> Clip:
    """Every frame is the first frame; the sound is untouched."""
    video = np.repeat(r.clip.video[:1], len(r.clip.video), 0)
    return dataclasses.replace(r.clip, video=video)


def _with(c: Character, **changes: object) -> Character:
    return dataclasses.replace(c, **changes)


CORRUPTIONS: dict[str, Callable[[Rendering], Clip]] = {
    "audio +200 ms": shift_audio,
    "wrong colour": wrong_colour,
    "swapped voices": swap_voices,
    "identities swapped between shots": swap_identities,
    "frozen frames": freeze,
}


def applicable(name: str, scene: Scene) -> bool:
    """Whether a corruption changes anything a probe could see in this scene."""
    if name == "identities swapped between shots":
        return len(scene.shots) >= 2
    if name == "swapped voices":
        return bool(scene.speech())
    return True
