"""Make the example gallery in docs/gallery/: one clip per kind of request, made by the bundled
model (or --model) from held-out Stage scenes, with the inputs beside each clip and a page that
shows them.

    python scripts/gallery.py                  # writes docs/gallery/*.mp4, inputs, README.md
    python scripts/gallery.py --out /tmp/g --model runs/gen/pipeline

Every clip is 4 s, 64x64, 12 fps, 16 kHz, 8 steps: exactly what `openseedance generate` makes by
default. The seeds are fixed, so the gallery is remade identically by the same model.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from openseedance import media
from openseedance.media import Clip
from openseedance.pipeline import Pipeline
from openseedance.request import GenerationRequest
from openseedance.stage.captions import caption
from openseedance.stage.render import RenderConfig, portrait, render, voice_sample
from openseedance.stage.scene import motion_twin, sample_scene

SEED = 900_000  # held-out scenes: far from the training seeds


def examples(config: RenderConfig, videos: bool = True) -> list[tuple[str, str, GenerationRequest, dict[str, object]]]:
    """(name, what it shows, request, inputs to write beside it); `videos`: include the example with
    a reference video (for models that learnt them)."""
    out = []
    base = dict(width=config.width, height=config.height, fps=config.fps, sample_rate=config.sample_rate)

    def scene(k: int):
        s = sample_scene(SEED + k, duration=4.0, num_shots=1)
        return s, render(s, config).clip

    s, truth = scene(0)
    out.append(("text", "text → video + audio", GenerationRequest(caption(s).prompt, seed=1, **base), {}))
    s, truth = scene(1)
    out.append(("first-frame", "first frame + text", GenerationRequest(caption(s).prompt, seed=2,
                first_frame=truth.video[0], **base), {"first_frame": truth.video[0]}))  # fmt: skip
    s, truth = scene(2)
    out.append(("first-last-frame", "first and last frames + text", GenerationRequest(
        caption(s).prompt, seed=3, first_frame=truth.video[0], last_frame=truth.video[-1], **base),
        {"first_frame": truth.video[0], "last_frame": truth.video[-1]}))  # fmt: skip
    s, _ = scene(3)
    images = tuple(portrait(c.identity, config.width, config.height) for c in s.characters)
    voices = tuple(voice_sample(c.voice, config.sample_rate, seed=SEED) for c in s.characters)
    inputs: dict[str, object] = {f"image{i + 1}": im for i, im in enumerate(images)}
    inputs.update({f"audio{i + 1}": v for i, v in enumerate(voices)})
    out.append(("references", "reference images (@imageN) and voices (@audioN) + text", GenerationRequest(
        caption(s, cited=True).prompt, seed=4, images=images, audios=voices, **base), inputs))  # fmt: skip
    if videos:
        s, _ = scene(9)
        moves = render(motion_twin(s, SEED), config).clip  # the same moves by other characters elsewhere
        out.append(("motion", "a reference video (@video1) for the moves + text for the looks", GenerationRequest(
            caption(s, motion="@video1").prompt, seed=10, videos=(moves,), **base), {"video1": moves}))  # fmt: skip
    shots = sample_scene(SEED + 8, duration=4.0, num_shots=3)
    timed = caption(shots).prompt  # each shot but the last given its length: "[shot 1 | 1.4s]"
    for k, shot in enumerate(shots.shots[:-1], start=1):
        timed = timed.replace(f"[shot {k}]", f"[shot {k} | {shot.end - shot.start:.1f}s]")
    out.append(("multi-shot", "three shots of given lengths in one clip ([shot N | Ls] parts)", GenerationRequest(
        timed, seed=9, **base), {}))  # fmt: skip
    s, truth = scene(4)
    out.append(("audio-to-video", "a soundtrack → the picture", GenerationRequest(caption(s).prompt, seed=5,
                audio=truth.audio, **base), {"soundtrack": truth.audio}))  # fmt: skip
    s, truth = scene(5)
    out.append(("video-to-audio", "frames → their sound", GenerationRequest(caption(s).prompt, seed=6,
                video=truth.video, **base), {"frames": truth}))  # fmt: skip
    s, truth = scene(6)
    half = dataclasses.replace(truth, video=truth.video[:24], audio=truth.audio[:, : 2 * config.sample_rate])
    out.append(("extend", "the first 2 s of a clip, extended forward to 4 s", GenerationRequest(
        caption(s).prompt, seed=7, source=half, extend="forward", **base), {"source": half}))  # fmt: skip
    s, truth = scene(7)
    out.append(("edit", "a clip with 1.4-2.6 s redone, the rest kept", GenerationRequest(
        caption(s).prompt, seed=8, source=truth, edit_window=(1.4, 2.6), **base), {"source": truth}))  # fmt: skip
    return out


def write_input(folder: Path, name: str, key: str, value: object, sample_rate: int) -> str:
    if isinstance(value, Clip):
        return media.write_video(folder / f"{name}.{key}.mp4", value).name
    if getattr(value, "ndim", 0) == 3:  # an image
        return media.write_image(folder / f"{name}.{key}.png", value).name
    return media.write_audio(folder / f"{name}.{key}.wav", value, sample_rate).name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("docs/gallery"))
    ap.add_argument("--model", default=None, help="model folder (default: the bundled model)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    pipe = Pipeline.from_pretrained(args.model)
    card = pipe.capabilities
    config = RenderConfig(card.width, card.height, card.fps, card.sample_rate)
    lines = ["# Gallery", "", f"Made by `python scripts/gallery.py` with the model `{pipe.engine.source}` (8 steps, "
             "4 s, 64×64, 12 fps, 16 kHz). The scenes are held-out Stage scenes; inputs sit beside each clip.", "",
             "| clip | request | prompt | inputs |", "|---|---|---|---|"]  # fmt: skip
    for name, what, request, inputs in examples(config, videos=card.references["video"] > 0):
        result = pipe(request)
        clip = result.write(args.out / f"{name}.mp4")
        files = [write_input(args.out, name, k, v, config.sample_rate) for k, v in inputs.items()]
        links = ", ".join(f"[{f.split('.')[1]}]({f})" for f in files) or "–"
        lines.append(f"| [{clip.name}]({clip.name}) | {what} | {request.prompt} | {links} |")
        print(f"{clip}: {what} ({sum(result.seconds.values()):.1f} s)")
    (args.out / "README.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
