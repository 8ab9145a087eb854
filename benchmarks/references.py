"""Reference images (looks) and voices with a generator, on the stage-bench references cases.

    python benchmarks/references.py                      # the bundled model, 8 cases
    python benchmarks/references.py --model runs/x/pipeline --cases 16
    python benchmarks/references.py --reference-guidance 1,2,3   # a row per reference guidance scale
    python benchmarks/references.py --sampler steps=8 --sampler steps=16,solver=heun --no-controls

Each case is a held-out Stage scene whose prompt names every character only by its references
("@image1 who speaks like @audio1 ... @image1 jumps twice"): a portrait of each character on a
plain card, and a 3-second sample of its voice. So whatever the clip shows of a character's look
can only come from @imageN, and its voice from @audioN.

Rows, each scored by the Stage probes against the scene:
- truth: the scene itself (what a perfect generator scores);
- references: the model given the right references (one row per sampler asked for: `references
  r=S` per reference guidance scale, `references [steps=16,solver=heun]` per `--sampler`; the
  model's default sampler otherwise);
- other references: the same prompt with each character's portrait and voice replaced by another
  character's (another colour and pitch): if the model reads its references, fidelity to the
  scene falls here;
- words, no references: the same model given the scene's ordinary caption, which spells out each
  character's colour, shape, pattern and voice instead (text -> video + audio);
  (`--no-controls` leaves out these two rows, which do not depend on the sampler variants)
- shuffled: another case's scene (right format, wrong content).

Columns: identity fidelity (each visible character's colour, shape and pattern as the probes see
them; then each of the three alone), the whole attribute probe (also the place and no stray characters),
action, voice pitch (within one semitone of the character's voice, where its speech can be
attributed to it), sync. A voice table splits the pitch score by cause: how much of each speaker's
speech the probe could attribute to it (its mouth seen open while it is heard), the pitch where it
could, and, for clips with one speaker, the pitch of all their speech (no mouth needed).

A motion table (for a model that learnt reference videos; others refuse them and the table is
skipped) uses the t2av cases: the scene asked for with its moves and hops left to @video1, a
reference video of the scene's motion twin (the same moves, hops, words and camera with other
looks, voices and places); the same caption without the video (nothing says how anyone moves: the
baseline the video must beat); another case's twin as the video; and the full caption in words.
Its first column is the action probe.

A second table does the same on the stage-bench multi-shot cases (2-3 shots per clip): the model
given each character's references and the cited per-shot prompt, or the ordinary multi-shot
caption. Its first column is the identity probe: each character keeps its looks across the cuts.

A shape table counts, for each row with references, which shape the probes read for each shape
asked for ("none": the body too ragged or small to read).

Two more tables split the rows with references (one shot, and multi-shot) by the number of
characters in the scene: with two, each portrait's look and each voice must go to the right one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from openseedance.engines import RunOptions
from openseedance.pipeline import Pipeline
from openseedance.request import GenerationRequest
from openseedance.stage import bench, world
from openseedance.stage.captions import caption
from openseedance.stage.probes import loud_voice, measure_voice, probe, reference_voice, semitones
from openseedance.stage.render import RenderConfig, portrait, render, voice_sample
from openseedance.stage.scene import Identity, Voice, motion_twin

IDENTITY_CHECKS = ("colour", "shape", "pattern")


def other_references(case: bench.Case) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """Each character's portrait in a colour and voice at a pitch the scene does not have."""
    chars = case.scene.characters
    colours = [c for c in world.COLOURS if c not in {x.identity.colour for x in chars}]
    pitches = list(world.PITCHES)
    req = case.request
    images, voices = [], []
    for i, c in enumerate(chars):
        ident = Identity(colours[i], c.identity.shape, c.identity.pattern, c.identity.eyes)
        pitch = pitches[(pitches.index(c.voice.pitch) + 2) % len(pitches)]
        images.append(portrait(ident, req.width, req.height))
        voices.append(voice_sample(Voice(pitch, c.voice.timbre), req.sample_rate, seed=req.seed))
    return tuple(images), tuple(voices)


def solo_pitch(clip, scene) -> bool | None:
    """For a scene with one speaker: is the median pitch of the clip's loud voiced sound within a
    semitone of that speaker's voice? Needs no mouth in the picture (None for other scenes)."""
    speakers = {i for i, _, _ in scene.speech()}
    if len(speakers) != 1 or clip.audio is None:
        return None
    want, _ = reference_voice(scene.characters[speakers.pop()].voice, clip.sample_rate)
    times, loud = loud_voice(clip.audio, clip.sample_rate)
    got, _ = measure_voice(clip.audio, clip.sample_rate, times[loud])
    return bool(semitones(got, want) <= 1.0)


def score(clip, scene) -> dict[str, Any]:
    report = probe(clip, scene)
    looks = {k: [c for c in report.checks if c["probe"] == "attribute" and c["check"] == k] for k in IDENTITY_CHECKS}
    ident = [c["ok"] for k in IDENTITY_CHECKS for c in looks[k]]
    voice = [c for c in report.checks if c["probe"] == "voice" and c["check"] == "pitch"]
    heard = [c["ok"] for c in voice if c.get("got_hz") is not None]
    solo = solo_pitch(clip, scene)

    def share(ok: list) -> float | None:
        return float(np.mean(ok)) if ok else None

    return {"identity": share(ident), **{k: share([c["ok"] for c in looks[k]]) for k in IDENTITY_CHECKS},
            # (asked, read) for every character big enough to have its shape judged
            "shapes": [[c["want"], c["got"]] for c in looks["shape"]],
            "attribute": report.scores["attribute"], "action": report.scores["action"],
            "pitch": share([c["ok"] for c in voice]),
            # pitch split by cause: was a speaker's voice attributed to it at all (its mouth seen
            # open while it was heard), and where it was, did the pitch match
            "heard": share([c.get("got_hz") is not None for c in voice]), "pitch_heard": share(heard),
            "solo_pitch": None if solo is None else float(solo),
            "sync": report.scores["sync"], "consistency": report.scores["identity"]}  # fmt: skip


def shape_confusion(title: str, got: list[dict]) -> dict[str, dict[str, int]]:
    """How often each shape asked for was read as each shape ('none': too blurred to read)."""
    reads = (*world.SHAPES, "none")
    counts = {want: dict.fromkeys(reads, 0) for want in world.SHAPES}
    for row in got:
        for want, read in row["shapes"]:
            counts[want][read or "none"] += 1
    print(f"\n{title}\n| asked \\ read | " + " | ".join(reads) + " |\n|---|" + "---|" * len(reads))
    for want, row in counts.items():
        print(f"| {want} | " + " | ".join(str(n) for n in row.values()) + " |")
    return counts


def with_references(case: bench.Case) -> GenerationRequest:
    """The case's scene asked for with each character named only by its references."""
    req, scene = case.request, case.scene
    images = tuple(portrait(c.identity, req.width, req.height) for c in scene.characters)
    voices = tuple(voice_sample(c.voice, req.sample_rate, seed=req.seed) for c in scene.characters)
    return dataclasses.replace(req, prompt=caption(scene, "train", cited=True).prompt, images=images, audios=voices)


def table(title: str, rows: dict[str, list[dict]], cols: tuple[str, ...], heads: tuple[str, ...]) -> dict:
    summary = {}
    for name, got in rows.items():
        summary[name] = {}
        for col in cols:
            values = [g[col] for g in got if g[col] is not None]
            summary[name][col] = float(np.mean(values)) if values else None
    print(f"\n{title}\n| row | " + " | ".join(heads) + " |\n|---|" + "---|" * len(heads))
    for name, row in summary.items():
        print(f"| {name} | " + " | ".join("-" if row[c] is None else f"{100 * row[c]:.1f}%" for c in cols) + " |")
    return summary


SAMPLER_KEYS = {"steps": int, "solver": str, "r": float, "guidance": float, "audio_guidance": float, "rescale": float,
                "shift": float}  # fmt: skip
OPTION_NAMES = {"r": "reference_guidance", "rescale": "guidance_rescale"}  # the `RunOptions` field of a short key


def parse_sampler(spec: str) -> dict[str, Any]:
    """'steps=16,solver=heun,r=12' -> {'steps': 16, 'solver': 'heun', 'reference_guidance': 12.0}."""
    out: dict[str, Any] = {}
    for part in filter(None, spec.split(",")):
        key, _, value = part.partition("=")
        if key not in SAMPLER_KEYS or not value:
            raise SystemExit(f"--sampler {spec!r}: each part is KEY=VALUE with KEY one of {sorted(SAMPLER_KEYS)}")
        out[OPTION_NAMES.get(key, key)] = SAMPLER_KEYS[key](value)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="", help="model folder (default: the bundled model)")
    ap.add_argument("--cases", type=int, default=8)
    ap.add_argument("--reference-guidance", default="",
                    help="comma-separated reference guidance scales, a 'references' row each (default: the model's)")
    ap.add_argument("--sampler", action="append", default=[],
                    help="a sampler variant, KEY=VALUE[,KEY=VALUE] with KEY steps, solver, r, guidance, "
                         "audio_guidance, rescale or shift: a 'references' row each (repeat the flag for "
                         "more)")  # fmt: skip
    ap.add_argument("--no-controls", action="store_true",
                    help="skip the 'other references' and 'words' rows (two generations per case)")
    ap.add_argument("--out", default="benchmarks/references/references.json")
    args = ap.parse_args()

    pipe = Pipeline.from_pretrained(args.model or None)
    named: dict[str, dict[str, Any]] = {}
    for r in [float(x) for x in args.reference_guidance.split(",") if x]:
        named[f"references r={r:g}"] = {"reference_guidance": r}
    for spec in args.sampler:
        named[f"references [{spec}]"] = parse_sampler(spec)
    if not named:
        named["references"] = {}
    options = {name: RunOptions(**overrides) for name, overrides in named.items()}
    samplers = {name: pipe.engine.sampler(o) for name, o in options.items()}  # what each row's options resolve to
    seconds: dict[str, list[float]] = {}

    def timed(request: GenerationRequest, name: str = "default"):
        start = time.perf_counter()
        clip = pipe(request, options.get(name)).clip
        seconds.setdefault(name, []).append(time.perf_counter() - start)
        return clip

    cases = bench.suite(("references",), args.cases)
    shuffled = bench.ShuffledGenerator(cases)
    controls = () if args.no_controls else ("other references", "words, no references")
    rows: dict[str, list[dict]] = {k: [] for k in ("truth", *named, *controls, "shuffled")}
    for case in cases:
        req, scene = case.request, case.scene
        config = RenderConfig(req.width, req.height, req.fps, req.sample_rate)
        rows["truth"].append(score(render(scene, config).clip, scene))
        for name in named:
            rows[name].append(score(timed(req, name), scene))
        if controls:
            images, voices = other_references(case)
            other = dataclasses.replace(req, images=images, audios=voices)
            rows["other references"].append(score(timed(other), scene))
            words = dataclasses.replace(req, prompt=caption(scene, "train").prompt, images=(), audios=())
            rows["words, no references"].append(score(timed(words), scene))
        rows["shuffled"].append(score(shuffled(req), scene))

    # multi-shot: 2-3 shots per clip; the identity probe checks each character keeps its looks across cuts
    shots = bench.suite(("multi-shot",), args.cases)
    shuffled = bench.ShuffledGenerator(shots)
    multi: dict[str, list[dict]] = {k: [] for k in ("truth", *named, *controls[1:], "shuffled")}
    for case in shots:
        req, scene = case.request, case.scene
        config = RenderConfig(req.width, req.height, req.fps, req.sample_rate)
        multi["truth"].append(score(render(scene, config).clip, scene))
        for name in named:
            multi[name].append(score(timed(with_references(case), name), scene))
        if controls:
            multi["words, no references"].append(score(timed(req), scene))
        multi["shuffled"].append(score(shuffled(req), scene))

    motion: dict[str, list[dict]] = {}
    if pipe.capabilities.references["video"]:
        plain = bench.suite(("t2av",), args.cases)
        motion = {k: [] for k in ("truth", "@video1: its motion twin", "same caption, no video",
                                  "@video1: another case's twin", "words (moves described)")}  # fmt: skip
        for k, case in enumerate(plain):
            req, scene = case.request, case.scene
            config = RenderConfig(req.width, req.height, req.fps, req.sample_rate)
            other = plain[(k + 1) % len(plain)].scene
            twin = render(motion_twin(scene, k), config).clip
            prompt = caption(scene, "train", motion="@video1").prompt
            motion["truth"].append(score(render(scene, config).clip, scene))
            motion["@video1: its motion twin"].append(score(timed(dataclasses.replace(req, prompt=prompt,
                                                                                        videos=(twin,))), scene))
            no_video = prompt.replace("@video1", "the reference")
            motion["same caption, no video"].append(score(timed(dataclasses.replace(req, prompt=no_video)), scene))
            wrong = dataclasses.replace(req, prompt=prompt, videos=(render(motion_twin(other, k), config).clip,))
            motion["@video1: another case's twin"].append(score(timed(wrong), scene))
            motion["words (moves described)"].append(score(timed(req), scene))

    every = [x for v in seconds.values() for x in v]
    print(f"model {pipe.engine.source}, {args.cases} cases per table, {np.mean(every):.2f} s per generated clip")
    for name in named:
        print(f"  {name}: {np.mean(seconds[name]):.2f} s per clip ({samplers[name]})")
    one = table("references (one shot)", rows, ("identity", "colour", "shape", "pattern", "attribute", "action",
                                                "pitch", "sync"),
                ("identity fidelity", "of which colour", "shape", "pattern", "attribute", "action",
                 "voice pitch ±1 st", "sync"))  # fmt: skip
    shapes = {name: shape_confusion(f"shapes read for each shape asked ({name}, one shot)", rows[name])
              for name in named}
    voices = table("voice pitch by cause (one shot)", rows, ("pitch", "heard", "pitch_heard", "solo_pitch"),
                   ("voice pitch ±1 st", "speech attributed to its speaker", "pitch ±1 st where attributed",
                    "one-speaker clips: pitch of all speech ±1 st"))  # fmt: skip
    # one character or several: with two, each look and voice must go to the right one (binding)
    count = {"one": [len(c.scene.characters) for c in cases], "multi": [len(c.scene.characters) for c in shots]}

    def by_characters(got: dict[str, list[dict]], counts: list[int]) -> dict[str, list[dict]]:
        return {f"{name}, {n} character{'s' * (n > 1)}": [g for g, k in zip(got[name], counts, strict=True) if k == n]
                for name in named for n in sorted(set(counts))}  # fmt: skip

    split_one = table("by characters in the scene (one shot)", by_characters(rows, count["one"]),
                      ("identity", "solo_pitch", "attribute"),
                      ("identity fidelity", "one-speaker clips: pitch of all speech ±1 st", "attribute"))  # fmt: skip
    split_multi = table("by characters in the scene (multi-shot)", by_characters(multi, count["multi"]),
                        ("consistency", "identity"), ("cross-shot identity consistency", "identity fidelity"))
    two = table("multi-shot (2-3 shots)", multi, ("consistency", "identity", "colour", "pitch", "action"),
                ("cross-shot identity consistency", "identity fidelity", "of which colour", "voice pitch ±1 st",
                 "action"))  # fmt: skip
    three = (table("motion from a reference video (one shot)", motion, ("action", "attribute", "sync"),
                   ("action", "attribute", "sync")) if motion else None)  # fmt: skip
    if not motion:
        print("\nmotion table skipped: this model was not trained with reference videos")
    Path(args.out).write_text(json.dumps({
        "machine": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d"),
        "model": pipe.engine.source, "cases": args.cases, "seconds_per_clip": float(np.mean(every)),
        "seconds_per_clip_by_row": {k: float(np.mean(v)) for k, v in seconds.items()},
        "samplers": {k: dataclasses.asdict(v) for k, v in samplers.items()},
        "references": one, "shapes": shapes, "voices": voices, "multi_shot": two, "motion": three,
        "by_characters": {"references": split_one, "multi_shot": split_multi, "counts": count},
        "per_case": {"references": rows, "multi_shot": multi, "motion": motion}}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
