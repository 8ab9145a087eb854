"""The autoencoder recipe: it writes a loadable component and a log, and a run that is interrupted
(by an exception mid-run, or by SIGKILL) resumes from its last checkpoint onto exactly the
trajectory of a run that never stopped."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from openseedance import video_vae
from openseedance.checkpoint import load_component
from openseedance.train import data
from openseedance.train.autoencoders import AETrainConfig, learning_rate, train, warm_state
from openseedance.video_vae import VideoAutoencoder, video_ae_config


def _cfg(**kw) -> AETrainConfig:
    base = dict(kind="video-ae", preset="debug", steps=4, batch_size=1, checkpoint_every=2, log_every=1,
                width=32, height=32, frames=5, warmup=2)  # fmt: skip
    return AETrainConfig(**{**base, **kw})


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / "model.safetensors"))


def test_run_writes_component_and_log(tmp_path: Path) -> None:
    model_dir = train(_cfg(), tmp_path / "run", progress=False)
    model = load_component(VideoAutoencoder, model_dir)
    assert model.config.latent_channels == 4
    lines = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4]
    assert all(r["loss"] > 0 and "psnr" in r for r in lines)
    # latent statistics were measured for the exported component
    assert not torch.equal(model.latent_std, torch.ones(4))


def test_interrupted_run_resumes_the_same_trajectory(tmp_path: Path, monkeypatch) -> None:
    train(_cfg(), tmp_path / "straight", progress=False)

    real_batch = data.VideoWindows.batch

    def failing(self, seed, step, batch_size):
        if step == 3:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C during step 3
        return real_batch(self, seed, step, batch_size)

    monkeypatch.setattr(data.VideoWindows, "batch", failing)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(), tmp_path / "stopped", progress=False)
    assert torch.load(tmp_path / "stopped" / "checkpoint.pt", weights_only=True)["step"] == 2
    monkeypatch.setattr(data.VideoWindows, "batch", real_batch)
    train(_cfg(), tmp_path / "stopped", progress=False)

    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "stopped")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_worker_processes_give_the_same_run(tmp_path: Path) -> None:
    """Batches rendered ahead by worker processes are the batches the loop would have rendered."""
    train(_cfg(), tmp_path / "inline", progress=False)
    train(_cfg(workers=2), tmp_path / "workers", progress=False)
    a, b = _weights(tmp_path / "inline"), _weights(tmp_path / "workers")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    with pytest.raises(ValueError, match="workers"):
        _cfg(workers=-1)


def test_killed_process_resumes(tmp_path: Path) -> None:
    """SIGKILL a real training process after its first checkpoint; rerunning the same command
    finishes the run and matches an uninterrupted one."""
    args = ["--preset", "debug", "--steps", "6", "--checkpoint-every", "1", "--batch-size", "1",
            "--size", "32x32", "--frames", "5"]  # fmt: skip
    cmd = [sys.executable, "-m", "openseedance.cli", "train", "video-ae", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--out", str(run)], env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "checkpoint.pt").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (run / "checkpoint.pt").exists(), "no checkpoint was written before the kill"
    stopped_at = torch.load(run / "checkpoint.pt", weights_only=True)["step"]
    subprocess.run([*cmd, "--out", str(run)], env=env, check=True, capture_output=True)
    subprocess.run([*cmd, "--out", str(tmp_path / "straight")], env=env, check=True, capture_output=True)
    assert stopped_at <= 6
    a, b = _weights(tmp_path / "straight"), _weights(run)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_refuses_a_different_model(tmp_path: Path) -> None:
    train(_cfg(steps=2), tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="different video-ae configuration"):
        train(_cfg(preset="tiny", steps=3), tmp_path / "run", progress=False)


@pytest.mark.parametrize("kind", ["video-ae", "audio-ae"])
def test_decoder_only_keeps_the_latents(tmp_path: Path, kind: str) -> None:
    """Fine-tuning the decoder from a trained component leaves every encoder weight and the latent
    statistics bit-identical (so a generator trained on those latents stays valid) and trains the
    decoder."""
    extra = {"seconds": 0.25, "batch_size": 2} if kind == "audio-ae" else {}
    base = train(_cfg(kind=kind, steps=3, **extra), tmp_path / "base", progress=False)
    tuned = train(_cfg(kind=kind, steps=6, lr=3e-3, seed=1, init=str(base), decoder_only=True, **extra),
                  tmp_path / "tuned", progress=False)  # fmt: skip
    a, b = _weights(tmp_path / "base"), _weights(tmp_path / "tuned")
    assert a.keys() == b.keys()
    frozen = [k for k in a if k.startswith("encoder.") or k.startswith("latent_")]
    assert frozen and all(torch.equal(a[k], b[k]) for k in frozen)
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("decoder."))
    log = [json.loads(x) for x in (tmp_path / "tuned" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 7))
    assert tuned.name == "model"


def test_decoder_only_into_a_thinner_decoder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A decoder-only run into a preset with the same encoder and its own `decoder_channels`
    copies the encoder and latent statistics bit for bit, carries over the decoder tensors that
    fit, starts the rest fresh and trains them; an encoder of another layout is refused."""
    thin = dataclasses.replace(video_ae_config("debug"), decoder_channels=(4, 8, 16))
    monkeypatch.setitem(video_vae.PRESETS, "debug-thin", thin)
    base = train(_cfg(steps=3), tmp_path / "base", progress=False)
    tuned = train(_cfg(preset="debug-thin", steps=4, lr=3e-3, seed=1, init=str(base), decoder_only=True),
                  tmp_path / "thin", progress=False)  # fmt: skip
    assert load_component(VideoAutoencoder, tuned).config.decoder_layout == ((4, 8, 16), (1, 1, 1))
    a, b = _weights(tmp_path / "base"), _weights(tmp_path / "thin")
    frozen = [k for k in a if not k.startswith("decoder.")]
    assert frozen and all(torch.equal(a[k], b[k]) for k in frozen)
    assert set(b) - set(frozen) == {k for k in b if k.startswith("decoder.")}
    record = json.loads((tmp_path / "thin" / "init.json").read_text())
    assert "decoder.conv_out.conv.weight" in record["decoder_fresh"]  # 4 channels in, not 8
    assert record["decoder_values"]["copied"] > 0  # the lowest-resolution level keeps its width
    assert not torch.equal(a["decoder.conv_in.conv.weight"], b["decoder.conv_in.conv.weight"])  # trained on
    with pytest.raises(ValueError, match="another encoder"):
        train(_cfg(preset="tiny-thin", init=str(base), decoder_only=True), tmp_path / "no", progress=False)
    with pytest.raises(ValueError, match="different"):  # only a decoder-only run may change the layout
        train(_cfg(preset="debug-thin", init=str(base)), tmp_path / "no2", progress=False)


def test_loss_weights_replace_the_presets_and_travel_with_the_component(tmp_path: Path) -> None:
    base = train(_cfg(steps=2), tmp_path / "base", progress=False)
    assert load_component(VideoAutoencoder, base).config.detail_weight == 1.0
    # a run from `base` with other loss weights: same architecture, so it may start from it
    tuned = train(_cfg(steps=3, init=str(base), decoder_only=True, loss_weights=(("detail", 0.0), ("mse", 2.0))),
                  tmp_path / "tuned", progress=False)  # fmt: skip
    config = load_component(VideoAutoencoder, tuned).config
    assert (config.detail_weight, config.mse_weight) == (0.0, 2.0)
    log = [json.loads(x) for x in (tmp_path / "tuned" / "log.jsonl").read_text().splitlines()]
    assert all(r["loss"] == pytest.approx(r["l1"] + 2.0 * r["mse"] + 1e-6 * r["kl"], rel=1e-4) for r in log)
    # the weights are part of the run: resuming it with others is refused
    with pytest.raises(ValueError, match="different video-ae configuration"):
        train(_cfg(steps=4, init=str(base), decoder_only=True), tmp_path / "tuned", progress=False)
    with pytest.raises(ValueError, match="no loss term 'transient'; its terms: kl, mse, detail"):
        _cfg(loss_weights=(("transient", 1.0),))
    with pytest.raises(ValueError, match=">= 0"):
        _cfg(kind="audio-ae", loss_weights=(("transient", float("nan")),))


def test_init_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs a trained component"):
        _cfg(decoder_only=True)
    with pytest.raises(ValueError, match="cannot start from"):
        train(_cfg(init=str(tmp_path / "missing")), tmp_path / "run", progress=False)
    base = train(_cfg(steps=1), tmp_path / "base", progress=False)
    with pytest.raises(ValueError, match="different"):
        train(_cfg(preset="tiny", init=str(base)), tmp_path / "run2", progress=False)


def test_warm_start_carries_the_bundled_tiny_over_to_tiny_t2() -> None:
    """`tiny-t2` differs from `tiny` in one downsampling and one upsampling (the second level no
    longer halves time). Warm-started from the bundled `tiny`, it reconstructs Stage clips about as
    well as `tiny` before any training; with those three tensors fresh, or taken the wrong way
    (one time slot of the upsampler, one tap of the temporal kernel), it does not."""
    from openseedance.engines.bundled import BUNDLED

    source = load_component(VideoAutoencoder, BUNDLED / "video_ae")
    torch.manual_seed(0)  # tiny-t2 with the bundled decoder's widths (the thin one)
    t2 = dataclasses.replace(video_ae_config("tiny-t2"), decoder_channels=source.config.decoder_channels)
    model = VideoAutoencoder(t2)
    fresh = {k: t.clone() for k, t in model.state_dict().items()}
    state, how = warm_state(model, source.state_dict())
    assert {k: w for k, w in how.items() if w != "copied"} == {
        "encoder.levels.1.1.conv.conv.weight": "folded in time",
        "decoder.levels.0.1.conv.conv.weight": "merged time slots",
        "decoder.levels.0.1.conv.conv.bias": "merged time slots",
    }
    clips = data.VideoWindows("stage", 64, 64, 12.0, 5).batch(3, 1 << 41, 2)

    def psnr(weights: dict[str, torch.Tensor] | None, m: VideoAutoencoder = model) -> float:
        if weights is not None:
            m.load_state_dict(weights)
        with torch.no_grad():
            recon = m.eval()(clips).recon.clamp(-1, 1)
        return float(10 * torch.log10(4 / (recon - clips).pow(2).mean()))

    tiny = psnr(None, source)
    assert psnr(state) > tiny - 1.0
    src = source.state_dict()
    up, down = "decoder.levels.0.1.conv.conv.", "encoder.levels.1.1.conv.conv.weight"
    half = fresh[up + "bias"].shape[0]  # one of the source upsampler's two time slots
    wrong = [
        {**state, **{k: fresh[k] for k, w in how.items() if w != "copied"}},
        {**state, up + "weight": src[up + "weight"][:half], up + "bias": src[up + "bias"][:half]},
        {**state, down: src[down][:, :, 2:]},
    ]
    assert all(psnr(w) < tiny - 2.5 for w in wrong)


def test_warm_start_run(tmp_path: Path) -> None:
    """A run warm-started from another preset's component records what it carried over, trains,
    resumes like any run (without its source), and refuses what is not a warm start."""
    base = train(_cfg(steps=1), tmp_path / "base", progress=False)
    with pytest.raises(ValueError, match="use init alone"):
        _cfg(warm_start=str(base), init=str(base))
    with pytest.raises(ValueError, match="cannot warm-start from"):
        train(_cfg(warm_start=str(tmp_path / "missing")), tmp_path / "run0", progress=False)
    with pytest.raises(ValueError, match="fits only 0% of this preset"):
        train(_cfg(preset="tiny-t2", warm_start=str(base)), tmp_path / "run1", progress=False)
    tiny = train(_cfg(preset="tiny", steps=1), tmp_path / "tiny", progress=False)
    run = tmp_path / "t2"
    train(_cfg(preset="tiny-t2", steps=2, warm_start=str(tiny)), run, progress=False)
    record = json.loads((run / "warm_start.json").read_text())
    assert set(record["values"]) == {"copied", "folded in time", "merged time slots"}  # nothing fresh
    assert load_component(VideoAutoencoder, run / "model").config.temporal_factor == 2
    shutil.rmtree(tmp_path / "tiny")  # a resumed run takes its weights from the checkpoint alone
    train(_cfg(preset="tiny-t2", steps=3, warm_start=str(tiny)), run, progress=False)  # resumes at step 2
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]


def test_bad_config() -> None:
    with pytest.raises(ValueError, match="unknown autoencoder"):
        _cfg(kind="text-ae")
    with pytest.raises(ValueError, match="positive"):
        _cfg(steps=0)
    with pytest.raises(ValueError, match="1 \\+ 4k frames"):
        train(_cfg(frames=6), "/tmp/never-written", progress=False)


def test_schedule_warms_up_then_decays() -> None:
    cfg = _cfg(steps=100, warmup=10, lr=1.0, min_lr_ratio=0.1)
    lrs = [learning_rate(cfg, s) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[-1] == pytest.approx(0.1, abs=0.01)


def test_folder_of_clips_is_training_data(tmp_path: Path) -> None:
    from openseedance.cli import main

    assert main(["stage", "sample", "-n", "2", "--out", str(tmp_path / "clips"), "--size", "32x32",
                 "--duration", "1"]) == 0  # fmt: skip
    windows = data.VideoWindows(str(tmp_path / "clips"), 32, 32, 12.0, 5)
    batch = windows.batch(0, 0, 2)
    assert batch.shape == (2, 3, 5, 32, 32) and batch.min() >= -1 and batch.max() <= 1
    assert torch.equal(batch, windows.batch(0, 0, 2))
    audio = data.AudioWindows(str(tmp_path / "clips"), 16000, 0.5).batch(0, 1, 2)
    assert audio.shape == (2, 1, 8000) and audio.abs().max() > 0
    with pytest.raises(ValueError, match="neither 'stage' nor a folder"):
        data.VideoWindows("/nonexistent/folder").batch(0, 0, 1)
