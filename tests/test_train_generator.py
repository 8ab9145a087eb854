"""The generator recipe on debug components: the loss falls, a stopped run resumes onto the same
trajectory, DDP under torchrun (2 CPU processes, gloo) trains and exports, and a folder of mp4 +
caption files works as data."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from openseedance import media
from openseedance.audio_vae import AudioAutoencoder, audio_ae_config
from openseedance.checkpoint import load_component, save_component
from openseedance.cli import main
from openseedance.conditioning import TRAINING_TASKS
from openseedance.engines import RunOptions
from openseedance.pipeline import Pipeline
from openseedance.request import GenerationRequest, role_id
from openseedance.stage.render import portrait, render, voice_sample
from openseedance.stage.scene import motion_twin, sample_scene
from openseedance.text import TextEncoder
from openseedance.train.data import TRAIN_SEED_BASE
from openseedance.train.generator import GenTrainConfig, Sampler, layout_for, train
from openseedance.train.latents import CacheSpec, LatentCache
from openseedance.train.recipes import RECIPES
from openseedance.transformer import transformer_config
from openseedance.video_vae import VideoAutoencoder, video_ae_config


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("parts")
    torch.manual_seed(0)
    save_component(VideoAutoencoder(video_ae_config("debug")), root / "video_ae")
    save_component(AudioAutoencoder(audio_ae_config("debug")), root / "audio_ae")
    return root


def _cfg(parts: Path, **kw) -> GenTrainConfig:
    places = dict(video_ae=str(parts / "video_ae"), audio_ae=str(parts / "audio_ae"), cache=str(parts / "latents"))
    return dataclasses.replace(RECIPES["debug"], **{**places, **kw})


def _log(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]


def test_loss_falls_and_the_export_generates(parts: Path, tmp_path: Path) -> None:
    # every task at once on two clips: the model must fit them
    folder = train(_cfg(parts, steps=60, clips=2, checkpoint_every=30, cache=str(tmp_path / "lat")), tmp_path / "run",
                   progress=False)  # fmt: skip
    losses = [r["loss"] for r in _log(tmp_path / "run")]
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:10]) / 10
    assert (tmp_path / "run" / "tb").is_dir() and any((tmp_path / "run" / "tb").iterdir())
    pipe = Pipeline.from_pretrained(folder)
    clip = pipe(GenerationRequest("a red circle", duration=1.0), RunOptions(steps=2)).clip
    assert clip.video.shape == (12, 64, 64, 3)


def test_a_latent_per_two_frames_trains_and_generates(parts: Path, tmp_path: Path) -> None:
    # the tiny-t2 layout at debug widths: the cache, the task masks and the export follow its time grid
    torch.manual_seed(0)
    video_ae = VideoAutoencoder(dataclasses.replace(video_ae_config("debug"), time_down=(True, False)))
    save_component(video_ae, tmp_path / "video_ae")
    cfg = _cfg(parts, video_ae=str(tmp_path / "video_ae"), cache=str(tmp_path / "lat"), steps=4, clips=2)
    folder = train(cfg, tmp_path / "run", progress=False)
    shard = torch.load(tmp_path / "lat" / "shard-00000.pt", weights_only=True)
    assert shard["video"].shape[2] == 7  # 12 frames held to 13 = 1 + 2 * 6: a latent per 2 frames
    pipe = Pipeline.from_pretrained(folder)
    assert pipe.engine.video_ae.config.temporal_factor == 2
    clip = pipe(GenerationRequest("a red circle", duration=1.0), RunOptions(steps=2)).clip
    assert clip.video.shape == (12, 64, 64, 3)


def test_the_command_line_trains_at_another_size_and_frame_rate(parts: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["train", "generator", "--recipe", "debug", "--out", str(run), "--video-ae", str(parts / "video_ae"),
                 "--audio-ae", str(parts / "audio_ae"), "--cache", str(tmp_path / "lat"), "--clips", "2",
                 "--steps", "2", "--size", "48x32", "--fps", "8"]) == 0  # fmt: skip
    saved = json.loads((run / "train_config.json").read_text())
    assert (saved["preset"], saved["width"], saved["height"], saved["fps"], saved["steps"]) == ("debug", 48, 32, 8, 2)
    shard = torch.load(tmp_path / "lat" / "shard-00000.pt", weights_only=True)
    assert shard["video"].shape[2:] == (3, 8, 12)  # 8 frames held to 9: 3 latent frames of 32/4 x 48/4
    pipe = Pipeline.from_pretrained(run / "pipeline")
    assert (pipe.capabilities.width, pipe.capabilities.height, pipe.capabilities.fps) == (48, 32, 8)
    request = GenerationRequest("a red circle", duration=1.0, width=48, height=32, fps=8)
    assert pipe(request, RunOptions(steps=1)).clip.video.shape == (8, 32, 48, 3)


def test_resume_follows_the_same_trajectory(parts: Path, tmp_path: Path) -> None:
    train(_cfg(parts), tmp_path / "straight", progress=False)
    train(_cfg(parts, steps=3), tmp_path / "stopped", progress=False)
    train(_cfg(parts), tmp_path / "stopped", progress=False)  # resumes at step 3
    a = load_file(str(tmp_path / "straight" / "pipeline" / "transformer" / "model.safetensors"))
    b = load_file(str(tmp_path / "stopped" / "pipeline" / "transformer" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in _log(tmp_path / "stopped")] == [1, 2, 3, 4, 5, 6]
    # stopping early on purpose keeps the whole run's schedule
    train(_cfg(parts), tmp_path / "paused", progress=False, stop_after=4)
    assert [r["step"] for r in _log(tmp_path / "paused")] == [1, 2, 3, 4]
    train(_cfg(parts), tmp_path / "paused", progress=False)
    c = load_file(str(tmp_path / "paused" / "pipeline" / "transformer" / "model.safetensors"))
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_changed_model_refuses_to_resume(parts: Path, tmp_path: Path) -> None:
    train(_cfg(parts, steps=3), tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="different transformer configuration"):
        train(_cfg(parts, preset="tiny", steps=4), tmp_path / "run", progress=False)


def _torchrun(parts: Path, out: Path, *extra: str, steps: int = 4) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "openseedance.cli", "train", "generator", "--preset", "debug", "--out", str(out),
           "--video-ae", str(parts / "video_ae"), "--audio-ae", str(parts / "audio_ae"), "--clips", "4",
           "--cache", str(out.parent / "latents-2p"), "--duration", "1", "--steps", str(steps), "--batch-size", "1",
           "--warmup", "1", "--checkpoint-every", "2", *extra]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_cpu_processes_then_resume_on_one(parts: Path, tmp_path: Path, mode: str) -> None:
    extra = ("--fsdp", "--activation-checkpointing", "full") if mode == "fsdp" else ()
    _torchrun(parts, tmp_path / "run", *extra)
    assert [r["step"] for r in _log(tmp_path / "run")][-1] == 4
    assert (tmp_path / "run" / "pipeline" / "pipeline.json").is_file()
    assert len(list((tmp_path / "latents-2p").glob("shard-*.pt"))) == 1  # every clip encoded once
    # the checkpoint written by two processes carries on in one
    train(_cfg(parts, steps=6, clips=4, cache=str(tmp_path / "latents-2p"), batch_size=1, warmup=1,
               checkpoint_every=2), tmp_path / "run", progress=False)  # fmt: skip
    assert [r["step"] for r in _log(tmp_path / "run")][-2:] == [5, 6]


def _one_task(parts: Path, tmp_path: Path, task: str, batch_size: int):
    """A 4-step run config training only `task` on 4 clips, its latent cache and layout, and the
    first batch the trainer would draw."""
    only = tuple(1.0 if t == task else 0.0 for t in TRAINING_TASKS)
    cfg = _cfg(parts, steps=4, clips=4, cache=str(tmp_path / "lat"), tasks=only, batch_size=batch_size)
    vae = load_component(VideoAutoencoder, cfg.video_ae)
    aae = load_component(AudioAutoencoder, cfg.audio_ae)
    text = TextEncoder.load("minilm")
    cache = LatentCache(cfg.cache, CacheSpec(clips=4, duration=1.0), vae, aae, text)
    layout = layout_for(cfg, vae, aae, transformer_config("debug").patch)
    return cfg, cache, layout, Sampler(cfg, cache, layout, text.encode([""])[0][0])(0)


def test_the_cache_is_encoded_without_autograd(parts: Path, tmp_path: Path) -> None:
    """Autoencoders load trainable (weights that require grad); a shard built with autograd on held
    every clip's graph until written, about 12 GB per process for 64 clips of `tiny-t2`. The cache
    freezes the autoencoders it is given: no encode builds a graph, whatever path it comes by."""
    _, cache, _, _ = _one_task(parts, tmp_path, "t2av", batch_size=1)
    assert not any(p.requires_grad for ae in (cache.video_ae, cache.audio_ae) for p in ae.parameters())
    graphs: list[bool] = []
    for ae in (cache.video_ae, cache.audio_ae):
        ae.encoder.register_forward_hook(lambda _m, _i, out: graphs.append(out.grad_fn is not None))
    cache.shard_path(0).unlink()
    cache.build(0)
    cache.references(0)
    assert len(graphs) >= 4 and not any(graphs)
    shard = torch.load(cache.shard_path(0), weights_only=True)
    assert not shard["video"].requires_grad and not shard["audio"].requires_grad


def test_the_cache_outlives_a_new_decoder_but_not_a_new_encoder(parts: Path, tmp_path: Path) -> None:
    """The latents are the encoders': a decoder trained again on the frozen encoder (the thin one)
    keeps the cache valid; any change to an encoder or its latent statistics is refused."""
    cfg, cache, _, _ = _one_task(parts, tmp_path, "t2av", batch_size=1)
    text = TextEncoder.load("minilm")
    vae, aae = load_component(VideoAutoencoder, cfg.video_ae), load_component(AudioAutoencoder, cfg.audio_ae)
    with torch.no_grad():
        for ae in (vae, aae):
            next(ae.decoder.parameters()).add_(1.0)
    LatentCache(cfg.cache, cache.spec, vae, aae, text)  # accepted
    with torch.no_grad():
        next(vae.encoder.parameters()).add_(1.0)
    with pytest.raises(ValueError, match="other data or autoencoders"):
        LatentCache(cfg.cache, cache.spec, vae, aae, text)


def test_references_are_learnt_from_portraits_and_voices(parts: Path, tmp_path: Path) -> None:
    cfg, cache, layout, batch = _one_task(parts, tmp_path, "references", batch_size=3)
    n = layout.video_tokens
    assert batch.tasks == ["references"] * 3
    c = batch.conditions
    assert (
        c.role["video"][:, :n].eq(0).all() and c.role["video"][:, n:][c.valid["video"][:, n:]].ge(1).all()
    )
    assert c.keep["video"][:, n:].all() and not c.keep["video"][:, :n].any()  # references: clean, no loss
    refs = cache.references(0)
    scene = sample_scene(TRAIN_SEED_BASE, duration=1.0)
    assert refs[0]["images"].shape[0] == len(scene.characters) == refs[0]["voices"].shape[0]
    assert len(refs[0]["text"]) >= 1  # the cited captions' text states
    # trained on references, the exported model takes them
    folder = train(cfg, tmp_path / "run", progress=False)
    pipe = Pipeline.from_pretrained(folder)
    assert pipe.engine.transformer.roles.weight.detach().any()
    request = GenerationRequest("@image1 jumps, speaking like @audio1", duration=1.0,
                                images=(portrait(scene.characters[0].identity),),
                                audios=(voice_sample(scene.characters[0].voice, seconds=2.0),))  # fmt: skip
    assert pipe(request, RunOptions(steps=2)).clip.video.shape == (12, 64, 64, 3)


def test_motion_is_learnt_from_reference_videos(parts: Path, tmp_path: Path) -> None:
    """The "motion" task: each clip with a reference video of its motion twin (same moves, other
    looks and places), a caption that leaves the moves to @video1; the trained model takes a
    reference video, and one never trained on portraits refuses them."""
    cfg, cache, layout, batch = _one_task(parts, tmp_path, "motion", batch_size=2)
    n = layout.video_tokens
    assert batch.tasks == ["motion"] * 2
    assert batch.conditions.clean["video"].shape[1] == 2 * n  # the twin is as long as the clip
    c = batch.conditions
    assert c.role["video"][:, n:].eq(role_id("video", 0)).all() and c.keep["video"][:, n:].all()
    assert batch.conditions.clean["audio"].shape[1] == layout.audio_latents  # a reference video brings no sound
    twin = cache.motion(0)[0]
    assert twin["video"].shape == cache.shard(0)["video"][0].shape
    assert not torch.equal(twin["video"], cache.shard(0)["video"][0])  # other looks and places
    folder = train(cfg, tmp_path / "run", progress=False)
    pipe = Pipeline.from_pretrained(folder)
    assert pipe.engine.knows_references("video") and not pipe.engine.knows_references("image")
    scene = sample_scene(TRAIN_SEED_BASE, duration=2.0)
    reference = render(motion_twin(scene, 7)).clip  # 2 s at 64x64, 12 fps
    request = GenerationRequest("A red circle. It moves as in @video1", duration=1.0, videos=(reference,))
    out = pipe(request, RunOptions(steps=2))
    assert out.clip.video.shape == (12, 64, 64, 3) and out.request["task"] == "references"
    with pytest.raises(ValueError, match="trained without reference images"):
        pipe(GenerationRequest("@image1 hops", duration=1.0, images=(portrait(scene.characters[0].identity),)))


def test_multi_shot_clips_are_captioned_shot_by_shot(parts: Path, tmp_path: Path) -> None:
    cfg = _cfg(parts, steps=2, clips=6, duration=4.0, cache=str(tmp_path / "lat"), batch_size=6,
               tasks=tuple(1.0 if t in ("t2av", "references") else 0.0 for t in TRAINING_TASKS),
               text_dropout=0.0)  # fmt: skip
    vae, aae = load_component(VideoAutoencoder, cfg.video_ae), load_component(AudioAutoencoder, cfg.audio_ae)
    text = TextEncoder.load("minilm")
    cache = LatentCache(cfg.cache, CacheSpec(clips=6, duration=4.0), vae, aae, text)
    layout = layout_for(cfg, vae, aae, transformer_config("debug").patch)
    shots = cache.shots(0)
    multi = [k for k, s in enumerate(shots) if s is not None]
    assert multi and len(multi) < 6  # the Stage mixes one-shot and multi-shot clips
    scene = sample_scene(TRAIN_SEED_BASE + multi[0], duration=4.0)
    assert len(shots[multi[0]]["plain"]) == len(scene.shots) + 1  # global + one part per shot
    assert shots[multi[0]]["cuts"].tolist() == pytest.approx([s.start for s in scene.shots[1:]])
    batch = Sampler(cfg, cache, layout, text.encode([""])[0][0])(1)
    assert batch.conditions.text.shot is not None and batch.conditions.text.shot.max() >= 2
    n = layout.video_tokens
    c = batch.conditions
    assert c.shot["video"][:, :n].min() >= 1 and c.shot["video"][:, n:].eq(0).all()  # references: none
    train(cfg, tmp_path / "run", progress=False)  # the masked batches train
    assert [r["step"] for r in _log(tmp_path / "run")] == [1, 2]


def test_folder_of_mp4_and_captions(parts: Path, tmp_path: Path) -> None:
    data = tmp_path / "clips"
    data.mkdir()
    for i in range(2):
        scene = sample_scene(10 + i, duration=1.5)
        media.write_video(data / f"c{i}.mp4", render(scene).clip)
        (data / f"c{i}.txt").write_text(f"clip number {i}\n")
    (data / "no_caption.mp4").write_bytes((data / "c0.mp4").read_bytes())  # skipped: no caption
    train(_cfg(parts, data=str(data), cache="", steps=2, checkpoint_every=2), tmp_path / "run", progress=False)
    shard = torch.load(tmp_path / "run" / "latents" / "shard-00000.pt", weights_only=True)
    assert shard["prompts"] == [["clip number 0"], ["clip number 1"]]


def test_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="autoencoders"):
        train(GenTrainConfig(), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="tasks"):
        GenTrainConfig(tasks=(1.0,) * (len(TRAINING_TASKS) + 1))
    with pytest.raises(ValueError, match="positive: fps=0, sample_rate=-1"):
        GenTrainConfig(fps=0, sample_rate=-1)
    with pytest.raises(ValueError, match="ema_decay"):
        GenTrainConfig(ema_decay=float("nan"))
    with pytest.raises(ValueError, match="activation_checkpointing"):
        GenTrainConfig(activation_checkpointing="some")
