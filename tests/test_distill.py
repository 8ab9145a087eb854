"""The few-step student: `train distill` on a debug teacher makes its pairs, trains, resumes on the
same trajectory and exports a model folder whose clips take one model pass per step, in every
conditioning mode; and the arithmetic is chosen per machine and recorded with each clip."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from openseedance import precision
from openseedance.audio_vae import AudioAutoencoder, audio_ae_config
from openseedance.checkpoint import save_component
from openseedance.cli import main
from openseedance.engines import RunOptions
from openseedance.media import Clip
from openseedance.pipeline import Pipeline
from openseedance.request import GenerationRequest
from openseedance.train.config import DistillConfig
from openseedance.train.distill import train
from openseedance.train.generator import train as train_generator
from openseedance.train.recipes import RECIPES
from openseedance.video_vae import VideoAutoencoder, video_ae_config


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """A debug model trained for a few steps: a teacher with the bundled model's folder layout."""
    root = tmp_path_factory.mktemp("teacher")
    torch.manual_seed(0)
    save_component(VideoAutoencoder(video_ae_config("debug")), root / "video_ae")
    save_component(AudioAutoencoder(audio_ae_config("debug")), root / "audio_ae")
    cfg = dataclasses.replace(RECIPES["debug"], video_ae=str(root / "video_ae"), audio_ae=str(root / "audio_ae"),
                              cache=str(root / "latents"), clips=2, steps=2)  # fmt: skip
    return train_generator(cfg, root / "run", progress=False)


def _cfg(teacher: Path, **kw) -> DistillConfig:
    # the teacher's own latent cache: the same clips, autoencoders and format
    cache = teacher.parent.parent / "latents"
    base = DistillConfig(teacher=str(teacher), clips=2, cache=str(cache), duration=1.0, pairs=6, teacher_steps=2,
                         steps=4, batch_size=2, lr=1e-3, warmup=1, checkpoint_every=2, log_every=1, bf16=False)
    return dataclasses.replace(base, **kw)


def _log(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]


def test_the_student_trains_resumes_and_exports(teacher: Path, tmp_path: Path) -> None:
    straight = train(_cfg(teacher), tmp_path / "straight", progress=False)
    pairs = sorted((tmp_path / "straight" / "pairs").glob("pairs-*.pt"))
    assert len(pairs) == 1 and torch.load(pairs[0], weights_only=True)["video"].shape[0] == 6
    assert [r["step"] for r in _log(tmp_path / "straight")] == [1, 2, 3, 4]
    assert all(np.isfinite(r["loss"]) for r in _log(tmp_path / "straight"))
    # stopped at step 2 and run again: the same pairs, batches and weights as the straight run
    train(_cfg(teacher), tmp_path / "stopped", progress=False, stop_after=2)
    again = train(_cfg(teacher), tmp_path / "stopped", progress=False)
    for part in ("straight", "stopped"):
        assert (tmp_path / part / "checkpoint.pt").is_file()
    a, b = (load_file(str(f / "transformer" / "model.safetensors")) for f in (straight, again))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(torch.load(pairs[0], weights_only=True)["audio"],
                       torch.load(tmp_path / "stopped" / "pairs" / pairs[0].name, weights_only=True)["audio"])

    config = json.loads((straight / "pipeline.json").read_text())
    teacher_pipe = Pipeline.from_pretrained(teacher)
    assert config["steps"] == 2 and config["guidance"] == config["audio_guidance"] == 1.0
    assert config["distilled_from"] == teacher_pipe.model_id
    # the student's weights moved away from the teacher's
    t = load_file(str(teacher / "transformer" / "model.safetensors"))
    assert any(not torch.equal(t[k].float(), a[k].float()) for k in a)

    # other pairs from another teacher are refused rather than mixed in
    with pytest.raises(ValueError, match="another teacher or settings"):
        train(_cfg(teacher, teacher_steps=3), tmp_path / "straight", progress=False)


def test_every_mode_runs_on_the_student_with_one_pass_per_step(teacher: Path, tmp_path: Path) -> None:
    student = train(_cfg(teacher, steps=2), tmp_path / "run", progress=False)
    pipe = Pipeline.from_pretrained(student)
    passes = []
    pipe.engine.transformer.register_forward_hook(lambda m, args, out: passes.append(args[0]["video"].x.shape[0]))
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (12, 64, 64, 3), dtype=np.uint8)
    sound = (0.1 * rng.standard_normal((1, 16000))).astype(np.float32)
    source = Clip(video=frames, audio=sound, fps=12.0, sample_rate=16000)
    requests = {
        "t2av": GenerationRequest("a red circle jumps", duration=1.0),
        "i2av": GenerationRequest("a red circle", duration=1.0, first_frame=frames[0]),
        "last frame": GenerationRequest("a red circle", duration=1.0, last_frame=frames[-1]),
        "a2v": GenerationRequest("a red circle", duration=1.0, audio=sound),
        "v2a": GenerationRequest("a red circle", duration=1.0, video=frames),
        "extend": GenerationRequest("a red circle", duration=2.0, source=source, extend="forward"),
        "edit": GenerationRequest("a red circle", duration=1.0, source=source, edit_window=(0.25, 0.75)),
        "shots": GenerationRequest("[shot 1] a red circle [shot 2] a blue square", duration=1.0),
    }
    for name, request in requests.items():
        passes.clear()
        out = pipe(request)
        assert out.request["steps"] == 2, name
        assert passes == [1, 1], f"{name}: {passes} (one pass per step, no guidance branches)"
        assert out.clip.video.shape[0] == round(request.duration * 12), name
    # guidance is still there when asked for: two branches per step again
    passes.clear()
    assert pipe(requests["t2av"], RunOptions(steps=3, guidance=3.0, audio_guidance=3.0)).request["steps"] == 3
    assert passes == [2, 2, 2]


def test_the_student_keeps_its_teacher_one_flag_away(teacher: Path, tmp_path: Path) -> None:
    student = train(_cfg(teacher, steps=1), tmp_path / "run", progress=False)
    kept = student / "teacher"
    assert sorted(p.name for p in kept.iterdir()) == ["pipeline.json", "transformer"]  # the autoencoders are shared
    original, again = Pipeline.from_pretrained(teacher), Pipeline.from_pretrained(student, teacher=True)
    assert again.model_id == original.model_id  # the same weights, autoencoders included
    assert again.engine.config == original.engine.config
    assert Pipeline.from_pretrained(student).model_id != original.model_id
    # the CLI: --teacher runs it with the teacher's steps, --model alone the student's
    from openseedance import media

    for flags, steps, source in (([], 2, student), (["--teacher"], original.engine.config.steps, kept)):
        out = tmp_path / f"clip{len(flags)}.mp4"
        assert main(["generate", "a red circle", "-o", str(out), "--model", str(student), "--duration", "1",
                     *flags]) == 0  # fmt: skip
        meta = json.loads(media.read_metadata(out)["openseedance"])
        assert (meta["steps"], meta["model"]) == (steps, str(source))
    # an export keeps it; a folder without one says so
    assert main(["export", str(student), str(tmp_path / "exported")]) == 0
    assert (tmp_path / "exported" / "teacher" / "transformer" / "model.safetensors").is_file()
    with pytest.raises(ValueError, match="keeps no teacher"):
        Pipeline.from_pretrained(teacher, teacher=True)
    assert main(["generate", "x", "-o", str(tmp_path / "no.mp4"), "--model", str(teacher), "--teacher"]) != 0


def test_the_arithmetic_is_chosen_per_machine() -> None:
    assert precision.choose("cpu", flags=frozenset({"avx2", "avx512_bf16"})).bf16
    assert precision.choose("cpu", flags=frozenset({"amx_bf16", "amx_tile"})).bf16
    assert precision.choose("cpu", flags=frozenset({"bf16", "asimd"})).bf16  # Arm's BF16 extension
    plain = precision.choose("cpu", flags=frozenset({"avx2", "avx512f"}))
    assert not plain.bf16 and "no native bfloat16" in plain.why
    assert precision.choose("cuda").bf16
    assert precision.choose("cpu", asked=False, flags=frozenset({"amx_bf16"})) == precision.Precision(False, "asked")
    assert precision.choose("cpu", asked=True, flags=frozenset()).bf16


def test_the_chosen_arithmetic_is_in_the_clip_metadata(teacher: Path, tmp_path: Path) -> None:
    pipe = Pipeline.from_pretrained(teacher)
    request = GenerationRequest("a red circle", duration=1.0)
    auto = pipe(request, RunOptions(steps=1)).request
    assert (auto["precision"], auto["precision_chosen"]) == (precision.choose("cpu").name, precision.choose("cpu").why)
    fp32 = pipe(request, RunOptions(steps=1, bf16=False)).request
    assert (fp32["precision"], fp32["precision_chosen"]) == ("float32", "asked")
    out = tmp_path / "out.mp4"
    assert main(["generate", "a red circle", "-o", str(out), "--model", str(teacher), "--duration", "1",
                 "--steps", "1", "--precision", "bf16"]) == 0  # fmt: skip
    from openseedance import media

    meta = json.loads(media.read_metadata(out)["openseedance"])
    assert (meta["precision"], meta["precision_chosen"]) == ("bfloat16", "asked")
