"""Extension (forward and backward), editing a time window, and last frames: the given parts are
kept exactly (up to the invisible mark), the rest is generated, and impossible asks are refused."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from openseedance import conditioning as cond
from openseedance import media
from openseedance.cli import main
from openseedance.engines import RunOptions
from openseedance.engines.bundled import BundledEngine
from openseedance.media import Clip
from openseedance.pipeline import Pipeline
from openseedance.request import GenerationRequest
from openseedance.video_vae import VideoAutoencoder

FAST = RunOptions(steps=2)
FPS, RATE = 12.0, 16000


@pytest.fixture(scope="module", params=[4, 2], ids=["latent-per-4-frames", "latent-per-2-frames"])
def pipe(request: pytest.FixtureRequest) -> Pipeline:
    p = Pipeline.untrained("debug")
    if request.param == 2:  # the tiny-t2 layout: every part must follow the autoencoder's time grid
        video_ae = VideoAutoencoder(replace(p.engine.video_ae.config, time_down=(True, False)))
        p = Pipeline(BundledEngine(p.engine.config, p.engine.transformer, video_ae, p.engine.audio_ae))
    with torch.no_grad():
        for param in p.engine.transformer.parameters():
            param.add_(0.02 * torch.randn_like(param))
    return p


def _clip(seconds: float, seed: int = 0) -> Clip:
    """A moving gradient with a tone: content the kept parts can be compared against."""
    rng = np.random.default_rng(seed)
    n = round(seconds * FPS)
    y, x = np.mgrid[0:64, 0:64]
    frames = np.stack([np.stack([(x * 4 + 9 * i) % 256, (y * 4) % 256, np.full_like(x, 60 + 3 * i)], -1)
                       for i in range(n)]).astype(np.uint8)  # fmt: skip
    t = np.arange(round(seconds * RATE)) / RATE
    audio = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)[None]
    return Clip(video=frames, audio=audio, fps=FPS, sample_rate=RATE)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(mse, 1e-12)))


def _req(**kw) -> GenerationRequest:
    return GenerationRequest(**{"prompt": "a red circle jumps", "seed": 3, **kw})


def test_forward_extension_keeps_the_clip_and_adds_to_it(pipe):
    source = _clip(1.0)
    out = pipe(_req(duration=2.5, source=source, extend="forward"), FAST).clip
    assert out.video.shape[0] == 30 and out.audio.shape[1] == 40000
    assert psnr(out.video[:12], source.video) > 35  # kept (the invisible mark costs ~40 dB)
    assert psnr(out.video[15:], np.repeat(source.video[-1:], 15, 0)) < 30  # the new part is generated
    assert np.abs(out.audio[0, :15000] - source.audio[0, :15000]).max() < 0.05


def test_backward_extension_puts_the_clip_at_the_end(pipe):
    source = _clip(1.0, seed=1)
    out = pipe(_req(duration=2.0, source=source, extend="backward"), FAST).clip
    assert out.video.shape[0] == 24
    assert psnr(out.video[12:], source.video) > 35
    assert psnr(out.video[:9], np.repeat(source.video[:1], 9, 0)) < 30


def test_editing_redoes_only_the_window(pipe):
    source = _clip(2.0, seed=2)
    out = pipe(_req(duration=2.0, source=source, edit_window=(0.75, 1.25)), FAST).clip
    keep = np.r_[0:7, 17:24]  # frames outside the window and its two-frame fades
    assert psnr(out.video[keep], source.video[keep]) > 35
    assert psnr(out.video[9:15], source.video[9:15]) < 30
    assert out.audio.shape == source.audio.shape


def test_first_and_last_frames(pipe):
    first, last = _clip(1.0).video[0], _clip(1.0, seed=5).video[-1]
    for kw in ({"first_frame": first}, {"last_frame": last}, {"first_frame": first, "last_frame": last}):
        out = pipe(_req(duration=1.5, **kw), FAST).clip
        assert out.video.shape == (18, 64, 64, 3)
        if "first_frame" in kw:  # shown as given (up to the invisible mark), then faded into the clip
            assert psnr(out.video[0], first) > 35
        if "last_frame" in kw:
            assert psnr(out.video[-1], last) > 35
        assert psnr(out.video[8], first) < 30 and psnr(out.video[8], last) < 30  # the middle is generated


def test_given_masks_follow_the_latent_groups():
    layout = cond.Layout((5, 4, 4), (1, 1, 1), FPS, 4, 10, 5.0)  # 17 coded frames, 10 audio latents
    frames = np.zeros(17, bool)
    frames[:9] = True  # frame 0 and the first two groups of four
    samples = np.zeros(10 * 100, bool)
    samples[:600] = True
    keep = cond.given_masks(layout, frames, samples, hop=100, margin=2)
    assert keep["video"].view(5, 16)[:, 0].tolist() == [True, True, True, False, False]
    assert keep["audio"][0].tolist() == [True] * 4 + [False] * 6  # 6 given, minus 2 at the seam


def test_impossible_asks_are_refused(pipe):
    with pytest.raises(ValueError, match="at least"):
        pipe(_req(duration=1.0, source=_clip(1.0), extend="forward"), FAST)
    with pytest.raises(ValueError, match="within"):
        pipe(_req(duration=1.0, source=_clip(1.0), edit_window=(0.5, 2.0)), FAST)


def test_cli_extend_and_edit(tmp_path: Path, capsys):
    source = tmp_path / "source.mp4"
    media.write_video(source, _clip(1.0))
    assert main(["generate", "a blue square slides", "--extend", str(source), "--duration", "1",
                 "--steps", "1", "-o", str(tmp_path / "longer.mp4")]) == 0  # fmt: skip
    assert media.read_video(tmp_path / "longer.mp4").video.shape[0] == 24
    assert main(["generate", "a blue square slides", "--edit", str(source), "--window", "0.25:0.5",
                 "--steps", "1", "-o", str(tmp_path / "edited.mp4")]) == 0  # fmt: skip
    assert media.read_video(tmp_path / "edited.mp4").video.shape[0] == 12
    assert main(["generate", "x", "--edit", str(source), "-o", str(tmp_path / "x.mp4")]) == 2
    assert "--window" in capsys.readouterr().err
