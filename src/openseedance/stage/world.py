"""The Stage's vocabulary: every colour, shape, voice, place and sound a scene can use.

Character colours are saturated and backgrounds are not, so a pixel's saturation alone tells body
from background; colour hues are spread around the wheel so a blob's median hue names its colour
even after H.264's 4:2:0 chroma subsampling.
"""

from __future__ import annotations

import math

import numpy as np

# Saturated body colours (RGB 0-255). Hues: 0, 32, 54, 129, 183, 224, 274, 323 degrees.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (222, 38, 38),
    "orange": (242, 140, 24),
    "yellow": (236, 214, 30),
    "green": (38, 178, 62),
    "cyan": (28, 196, 212),
    "blue": (40, 82, 232),
    "purple": (152, 60, 212),
    "pink": (240, 88, 178),
}

SHAPES = ("circle", "square", "triangle", "diamond")
PATTERNS = ("plain", "striped", "spotted")
EYES = ("round", "big", "sleepy", "single")

# Base pitch per voice class, about six semitones apart so any two are told apart at a glance.
PITCHES: dict[str, float] = {"deep": 100.0, "low": 140.0, "medium": 196.0, "high": 262.0, "squeaky": 370.0}
TIMBRES = ("bright", "warm", "hollow", "nasal")

# Places: (sky/top tone, ground/bottom tone), all of low saturation, and the horizon height.
PLACES: dict[str, tuple[tuple[int, int, int], tuple[int, int, int], float]] = {
    "studio": ((118, 118, 122), (92, 92, 96), 0.62),
    "night": ((22, 26, 44), (40, 40, 52), 0.70),
    "beach": ((176, 190, 200), (196, 182, 150), 0.55),
    "snow": ((206, 212, 222), (236, 238, 242), 0.58),
    "forest": ((70, 84, 72), (58, 66, 50), 0.66),
    "brick": ((120, 98, 90), (84, 74, 70), 0.75),
}

AMBIENCES = ("quiet", "wind", "rain", "hum")
FRAMINGS = ("wide", "medium", "close-up")
DIRECTIONS: dict[str, tuple[float, float]] = {
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
}

# Words a character can say, with their syllable counts.
WORDS: dict[str, int] = {
    "hi": 1,
    "hey": 1,
    "yes": 1,
    "no": 1,
    "wow": 1,
    "hello": 2,
    "okay": 2,
    "hooray": 2,
    "welcome": 2,
    "goodbye": 2,
    "banana": 3,
    "tomorrow": 3,
    "wonderful": 3,
    "good morning": 3,
}

# Geometry, in units of the wide shot's frame height.
BODY_RADIUS = 0.125
MOUTH_COLOUR = (24, 14, 16)
EYE_WHITE = (246, 246, 246)
PUPIL = (12, 12, 16)

# A pattern darkens its parts of the body by this much, except within PATTERN_RIM of the outline.
PATTERN_DARKEN = 0.45
PATTERN_RIM = 0.15


def body_sdf(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance (body radii) to a body's outline; `u`, `v` in body radii from its centre, v down."""
    if shape == "circle":
        return np.sqrt(u * u + v * v) - 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) - 0.88
    if shape == "diamond":
        return (np.abs(u) + np.abs(v) - 1.0) / math.sqrt(2.0)
    if shape == "triangle":  # apex up at (0, -1), base at v = 0.85
        return np.maximum(v - 0.85, (1.85 * np.abs(u) - (v + 1.0)) / 2.103)
    raise ValueError(f"unknown shape {shape!r}")


def pattern_sdf(pattern: str, u: np.ndarray, v: np.ndarray) -> np.ndarray | None:
    """Signed distance to the darker parts of a pattern, fixed to the body (None for plain)."""
    if pattern == "striped":
        return (np.abs(np.mod(v + 1.0, 0.6) - 0.3) - 0.2) * 0.6
    if pattern == "spotted":
        gu, gv = np.mod(u + 0.275, 0.55) - 0.275, np.mod(v + 0.1, 0.55) - 0.275
        return np.sqrt(gu * gu + gv * gv) - 0.15
    return None
