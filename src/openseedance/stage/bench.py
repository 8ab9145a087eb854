"""stage-bench: a fixed, seeded suite of Stage scenes per capability, scored by the probes.

`run(generator)` asks the generator for every case's clip, probes it against the case's scene and
returns one row per capability. Built-in generators: `truth` (renders the scene itself: the
ceiling), `shuffled` (renders another case's scene: a real-looking clip of the wrong thing) and
`noise` (random frames and sound: the floor).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from openseedance.media import Clip
from openseedance.request import GenerationRequest, Generator
from openseedance.stage.captions import caption
from openseedance.stage.probes import PROBES, probe
from openseedance.stage.render import RenderConfig, portrait, render, voice_sample
from openseedance.stage.scene import Scene, sample_scene

log = logging.getLogger(__name__)

CAPABILITIES = ("t2av", "t2av-heldout", "i2av", "references", "multi-shot", "a2v", "v2a", "extension", "editing")


@dataclass
class Case:
    capability: str
    scene: Scene
    request: GenerationRequest


def _base_seed(capability: str) -> int:
    return 100_000 * (CAPABILITIES.index(capability) + 1)


def suite(
    capabilities: tuple[str, ...] = CAPABILITIES, cases: int = 8, config: RenderConfig | None = None
) -> list[Case]:
    """The fixed cases: the same seeds, scenes and requests on every run."""
    unknown = [c for c in capabilities if c not in CAPABILITIES]
    if unknown:
        raise ValueError(f"unknown capabilities {unknown}; choose from {', '.join(CAPABILITIES)}")
    if cases < 1:
        raise ValueError(f"cases must be at least 1, got {cases}")
    config = config or RenderConfig()
    out = []
    for cap in capabilities:
        for i in range(cases):
            seed = _base_seed(cap) + i
            scene = sample_scene(seed, num_shots=int(2 + i % 2) if cap == "multi-shot" else 1)
            out.append(Case(cap, scene, _request(cap, scene, seed, config)))
    return out


def _request(cap: str, scene: Scene, seed: int, config: RenderConfig) -> GenerationRequest:
    wording = "heldout" if cap == "t2av-heldout" else "train"
    base = dict(
        prompt=caption(scene, wording).prompt,
        duration=scene.duration,
        width=config.width,
        height=config.height,
        fps=config.fps,
        sample_rate=config.sample_rate,
        seed=seed,
    )
    if cap in ("t2av", "t2av-heldout", "multi-shot"):
        return GenerationRequest(**base)
    truth = render(scene, config).clip
    if cap == "i2av":
        return GenerationRequest(**base, first_frame=truth.video[0])
    if cap == "references":
        # the prompt names each character only by its references (@image1 for its look, @audio1 for its
        # voice), so what the clip shows of them can only come from the references
        images = tuple(portrait(c.identity, config.width, config.height) for c in scene.characters)
        voices = tuple(voice_sample(c.voice, config.sample_rate, seed=seed) for c in scene.characters)
        prompt = caption(scene, wording, cited=True).prompt
        return GenerationRequest(**{**base, "prompt": prompt}, images=images, audios=voices)
    if cap == "a2v":
        return GenerationRequest(**base, audio=truth.audio)
    if cap == "v2a":
        return GenerationRequest(**base, video=truth.video)
    half = len(truth.video) // 2
    if cap == "extension":
        cut = half / config.fps
        prefix = Clip(video=truth.video[:half], audio=truth.audio[:, : round(cut * config.sample_rate)],
                      fps=config.fps, sample_rate=config.sample_rate)  # fmt: skip
        return GenerationRequest(**base, source=prefix, extend="forward")
    # editing: the window to redo holds another scene's content in the source
    window = (round(scene.duration * 0.35, 2), round(scene.duration * 0.65, 2))
    other = render(sample_scene(seed + 70_000, duration=scene.duration), config).clip
    f0, f1 = (round(t * config.fps) for t in window)
    s0, s1 = (round(t * config.sample_rate) for t in window)
    video, audio = truth.video.copy(), truth.audio.copy()
    video[f0:f1], audio[:, s0:s1] = other.video[f0:f1], other.audio[:, s0:s1]
    source = dataclasses.replace(truth, video=video, audio=audio)
    return GenerationRequest(**base, source=source, edit_window=window)


# ---------------------------------------------------------------- built-in generators


class TruthGenerator:
    """Renders the case's own scene: what a perfect generator would make."""

    def __init__(self, cases: list[Case]) -> None:
        self.scenes = {c.request.seed: c.scene for c in cases}

    def scene_for(self, request: GenerationRequest) -> Scene:
        return self.scenes[request.seed]

    def __call__(self, request: GenerationRequest) -> Clip:
        config = RenderConfig(request.width, request.height, request.fps, request.sample_rate)
        return render(self.scene_for(request), config).clip


class ShuffledGenerator(TruthGenerator):
    """Renders the next case's scene of the same capability: right format, wrong content."""

    def __init__(self, cases: list[Case]) -> None:
        super().__init__(cases)
        by_cap: dict[str, list[Case]] = {}
        for c in cases:
            by_cap.setdefault(c.capability, []).append(c)
        self.scenes = {}
        for group in by_cap.values():
            for i, c in enumerate(group):
                other = group[(i + 1) % len(group)].scene
                if len(group) == 1:
                    other = sample_scene(c.request.seed + 1, num_shots=len(c.scene.shots))
                self.scenes[c.request.seed] = other


def noise_generator(request: GenerationRequest) -> Clip:
    """Uniform random frames and white noise."""
    rng = np.random.default_rng(request.seed)
    frames = round(request.duration * request.fps)
    video = rng.integers(0, 256, (frames, request.height, request.width, 3), dtype=np.uint8)
    audio = (0.1 * rng.standard_normal((1, round(request.duration * request.sample_rate)))).astype(np.float32)
    return Clip(video=video, audio=audio, fps=request.fps, sample_rate=request.sample_rate)


BUILTIN: dict[str, Callable[[list[Case]], Generator]] = {
    "truth": TruthGenerator,
    "shuffled": ShuffledGenerator,
    "noise": lambda cases: noise_generator,
}


def load_generator(spec: str, cases: list[Case]) -> Generator:
    """A built-in name or `package.module:attribute` naming a callable request -> Clip. (A model is
    wired in by the caller, `openseedance bench stage --generator bundled|DIR`: the bench never
    imports what it measures.)"""
    if spec in BUILTIN:
        return BUILTIN[spec](cases)
    if ":" not in spec:
        raise ValueError(f"unknown generator {spec!r}: use one of {', '.join(BUILTIN)}, bundled, a model folder "
                         "or module:callable")  # fmt: skip
    module, _, attr = spec.partition(":")
    try:
        target = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot load generator {spec!r}: {err}") from err
    if not callable(target):
        raise ValueError(f"generator {spec!r} is not callable")
    return target


# ---------------------------------------------------------------- running


def run(generator: Generator, cases: list[Case], progress: bool = True) -> dict[str, Any]:
    """Generate and probe every case; per-case scores and one summary row per capability."""
    results = []
    for case in tqdm(cases, desc="stage-bench", disable=not progress):
        start = time.perf_counter()
        clip = generator(case.request)
        seconds = time.perf_counter() - start
        report = probe(clip, case.scene)
        results.append({"capability": case.capability, "seed": case.request.seed, "generate_s": seconds,
                        "scores": report.scores, "av_offset_ms": report.av_offset_ms,
                        "mouth_voice_corr": report.mouth_voice_corr})  # fmt: skip
    rows = {}
    for cap in dict.fromkeys(r["capability"] for r in results):
        mine = [r for r in results if r["capability"] == cap]
        row: dict[str, Any] = {"cases": len(mine)}
        for name in PROBES:
            values = [r["scores"][name] for r in mine if r["scores"].get(name) is not None]
            row[name] = float(np.mean(values)) if values else None
        offsets = [abs(r["av_offset_ms"]) for r in mine if r["av_offset_ms"] is not None]
        corrs = [r["mouth_voice_corr"] for r in mine if r["mouth_voice_corr"] is not None]
        row["median_abs_offset_ms"] = float(np.median(offsets)) if offsets else None
        row["mouth_voice_corr"] = float(np.mean(corrs)) if corrs else None
        row["generate_s"] = float(np.mean([r["generate_s"] for r in mine]))
        rows[cap] = row
    return {"rows": rows, "cases": results}


def table(result: dict[str, Any], title: str = "") -> str:
    cols = [*PROBES, "median_abs_offset_ms", "mouth_voice_corr", "generate_s", "cases"]
    heads = ["capability", *PROBES, "|offset| ms", "mouth~voice", "gen s/clip", "n"]

    def cell(col: str, v: Any) -> str:
        if v is None:
            return "-"
        if col in PROBES:
            return f"{100 * v:.1f}%"
        if col == "cases":
            return str(v)
        return f"{v:.3f}" if col != "median_abs_offset_ms" else f"{v:.0f}"

    lines = [f"stage-bench {title}".rstrip(), "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for cap, row in result["rows"].items():
        lines.append("| " + " | ".join([cap, *(cell(c, row[c]) for c in cols)]) + " |")
    return "\n".join(lines)


def save(result: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=float))
    return path
