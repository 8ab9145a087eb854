"""The causal video autoencoder on the `debug` preset: shapes, causality, chunked = whole-clip,
save/load, bad input, and a short training run that learns."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

import openseedance
from openseedance.checkpoint import load_component, read_config, save_component
from openseedance.video_vae import (
    PRESETS,
    VideoAEConfig,
    VideoAutoencoder,
    frame_steps,
    high_pass,
    video_ae_config,
)


@pytest.fixture(scope="module")
def model() -> VideoAutoencoder:
    torch.manual_seed(0)
    m = VideoAutoencoder(video_ae_config("debug")).eval()
    with torch.no_grad():  # perturb the zero-initialised branches, so every path carries signal
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def _video(frames: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, frames, size, size, generator=g) * 2 - 1


@pytest.mark.parametrize("frames", [1, 5, 9, 17])
def test_shapes(model: VideoAutoencoder, frames: int) -> None:
    x = _video(frames)
    with torch.no_grad():
        z = model.encode(x)
        y = model.decode(z)
    assert z.shape == (2, 4, 1 + (frames - 1) // 4, 8, 8)
    assert y.shape == x.shape
    assert model.latent_shape(frames, 32, 48) == (1 + (frames - 1) // 4, 8, 12)


def test_an_image_is_a_one_frame_video(model: VideoAutoencoder) -> None:
    x = _video(9)
    with torch.no_grad():
        alone = model.encode(x[:, :, :1])
        in_clip = model.encode(x)[:, :, :1]
    torch.testing.assert_close(alone, in_clip, atol=1e-5, rtol=1e-5)


def test_causal(model: VideoAutoencoder) -> None:
    """Changing frames 5.. changes no latent before latent frame 2, and no decoded frame before 5."""
    x = _video(13)
    x2 = x.clone()
    x2[:, :, 5:] = -x2[:, :, 5:]
    with torch.no_grad():
        z, z2 = model.encode(x), model.encode(x2)
        assert torch.equal(z[:, :, :2], z2[:, :, :2])
        assert not torch.allclose(z[:, :, 2:], z2[:, :, 2:])
        y, y2 = model.decode(z), model.decode(z2)
    assert torch.equal(y[:, :, :5], y2[:, :, :5])


@pytest.mark.parametrize(("chunk_frames", "chunk_latents"), [(4, 1), (8, 2), (12, 3)])
def test_chunked_equals_whole(model: VideoAutoencoder, chunk_frames: int, chunk_latents: int) -> None:
    x = _video(25)
    with torch.no_grad():
        z = model.encode(x)
        zc = model.encode(x, chunk_frames=chunk_frames)
        torch.testing.assert_close(zc, z, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(model.decode(z, chunk_latents=chunk_latents), model.decode(z), atol=1e-5, rtol=1e-4)


def test_bad_input(model: VideoAutoencoder) -> None:
    with pytest.raises(ValueError, match="1 \\+ 4k frames"):
        model.encode(_video(8))
    with pytest.raises(ValueError, match="multiples of 4"):
        model.encode(torch.zeros(1, 3, 1, 30, 32))
    with pytest.raises(ValueError, match="B, 3, T, H, W"):
        model.encode(torch.zeros(3, 1, 32, 32))
    with pytest.raises(ValueError, match="float"):
        model.encode(torch.zeros(1, 3, 1, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="latents must be"):
        model.decode(torch.zeros(1, 5, 1, 8, 8))
    with pytest.raises(ValueError, match="multiple of 4"):
        model.encode(_video(9), chunk_frames=6)
    with pytest.raises(ValueError, match="unknown video autoencoder preset"):
        video_ae_config("huge")
    with pytest.raises(ValueError, match="one entry per level"):
        VideoAEConfig(channels=(8, 16), blocks=(1, 1, 1))


def test_presets_compress_as_documented() -> None:
    for name in ("debug", "tiny"):
        cfg = PRESETS[name]
        assert (cfg.temporal_factor, cfg.spatial_factor) == (4, 4)
    assert (PRESETS["base"].temporal_factor, PRESETS["base"].spatial_factor) == (4, 8)
    assert (PRESETS["tiny-t2"].temporal_factor, PRESETS["tiny-t2"].spatial_factor) == (2, 4)
    # tiny-c16 doubles tiny's latent values per position in channels, tiny-t2 in time
    assert (PRESETS["tiny-c16"].temporal_factor, PRESETS["tiny-c16"].spatial_factor) == (4, 4)
    assert PRESETS["tiny-c16"].latent_channels == 2 * PRESETS["tiny"].latent_channels


def test_two_times_temporal_preset_gives_a_latent_per_two_frames() -> None:
    cfg = dataclasses.replace(PRESETS["tiny-t2"], channels=(8, 16, 16))  # the layout, at debug widths
    model = VideoAutoencoder(cfg).eval()
    x = _video(9, 16)
    with torch.no_grad():
        z = model.encode(x)
        assert z.shape == (2, cfg.latent_channels, 5, 4, 4)
        assert model.decode(z).shape == x.shape
        # chunked streaming agrees with the whole clip at this temporal factor too
        torch.testing.assert_close(model.decode(z, chunk_latents=2), model.decode(z), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="1 \\+ 2k"):
        model.encode(_video(4, 16))


def test_save_load_round_trip(model: VideoAutoencoder, tmp_path) -> None:
    with torch.no_grad():
        model.set_latent_statistics(model.encoder(_video(5))[:, :4])
    save_component(model, tmp_path / "vae")
    loaded = load_component(VideoAutoencoder, tmp_path / "vae")
    assert loaded.config == model.config
    x = _video(5, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(loaded.decode(loaded.encode(x)), model.decode(model.encode(x)))
    # the statistics make the stored latents roughly zero-mean, unit-variance
    assert not torch.equal(loaded.latent_std, torch.ones(4))


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    m = VideoAutoencoder(video_ae_config("debug"))
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    loss, metrics = m.training_loss(_video(5))
    loss.backward()
    assert set(metrics) >= {"loss", "l1", "mse", "kl", "psnr"}
    dead = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"no gradient reaches {dead}"


def test_short_training_learns() -> None:
    """60 Adam steps on one batch of smooth moving blobs lift PSNR well above the start."""
    torch.manual_seed(0)
    m = VideoAutoencoder(video_ae_config("debug"))
    t = torch.arange(5).view(1, 1, 5, 1, 1)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    blob = torch.exp(-((xx - 10 - 2 * t) ** 2 + (yy - 16) ** 2) / 30.0)
    x = torch.cat([blob * 1.6 - 0.8, 0.5 - blob, blob * 0 + 0.2], dim=1).expand(2, 3, 5, 32, 32).contiguous()
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    first = None
    for _ in range(60):
        loss, metrics = m.training_loss(x)
        first = metrics["psnr"] if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert metrics["psnr"] > first + 8, (first, metrics["psnr"])


def test_high_pass_sees_small_features_not_flat_colour() -> None:
    flat = torch.full((1, 3, 2, 16, 16), 0.3)
    assert high_pass(flat).abs().max() < 1e-6
    dot = flat.clone()
    dot[:, :, 1, 8, 8] = -1.0  # a one-pixel dark feature in the second frame
    hp = high_pass(dot)
    assert hp.shape == dot.shape
    assert hp[:, :, 0].abs().max() < 1e-6  # frames are filtered on their own
    assert hp[0, 0, 1, 8, 8] < -1.0 and hp[:, :, 1, 8, 8].abs().min() > 5 * hp[:, :, 1, 8, 10].abs().max()


@pytest.mark.parametrize("term", ["detail", "temporal"])
def test_loss_term_is_added_with_its_weight(term: str) -> None:
    x = _video(5, 16)
    plain = VideoAutoencoder(dataclasses.replace(video_ae_config("debug"), **{f"{term}_weight": 0.0}))
    weighted = VideoAutoencoder(dataclasses.replace(video_ae_config("debug"), **{f"{term}_weight": 2.0}))
    weighted.load_state_dict(plain.state_dict())
    loss_p, metrics = plain.training_loss(x, torch.Generator().manual_seed(0))
    loss_w, _ = weighted.training_loss(x, torch.Generator().manual_seed(0))
    assert metrics[term] > 0  # logged even when its weight is 0
    assert float((loss_w - loss_p).detach()) == pytest.approx(2.0 * metrics[term], rel=1e-4)


def test_frame_steps_rate_averaged_motion_worse_than_an_equal_level_error() -> None:
    # a dark mouth that opens and closes every frame, and two reconstructions with the same L1 error:
    # one draws every frame as the average, the other keeps the motion but shifts the level
    target = torch.full((1, 3, 5, 8, 8), 0.5)
    target[:, :, 1::2, 3:5, 3:5] = -0.5
    averaged = target.mean(2, keepdim=True).expand_as(target)
    shifted = target + (averaged - target).abs().mean()
    assert (averaged - target).abs().mean() == pytest.approx(float((shifted - target).abs().mean()))
    assert frame_steps(target).shape == (1, 3, 4, 8, 8)
    assert (frame_steps(shifted) - frame_steps(target)).abs().max() < 1e-6
    assert (frame_steps(averaged) - frame_steps(target)).abs().mean() > 0.05


def test_temporal_term_is_off_by_default_and_zero_for_an_image() -> None:
    model = VideoAutoencoder(video_ae_config("debug"))
    assert model.config.temporal_weight == 0.0
    _, still = model.training_loss(_video(1, 16), torch.Generator().manual_seed(0))
    assert still["temporal"] == 0.0  # an image has no frame steps


THIN = dataclasses.replace(video_ae_config("debug"), decoder_channels=(4, 8, 16))


def test_thin_decoder_layout_round_trips_and_keeps_the_encoder(tmp_path) -> None:
    """`decoder_channels` gives the decoder its own widths (the encoder keeps `channels`); the
    field travels through save/load, and a config saved before the field existed mirrors."""
    torch.manual_seed(0)
    thin = VideoAutoencoder(THIN).eval()
    mirrored = VideoAutoencoder(video_ae_config("debug"))
    assert thin.config.decoder_layout == ((4, 8, 16), (1, 1, 1))
    assert thin.config.encoder_layout() == mirrored.config.encoder_layout()
    assert [p.shape for p in thin.encoder.parameters()] == [p.shape for p in mirrored.encoder.parameters()]
    assert thin.decoder.conv_out.conv.weight.shape == (3, 4, 1, 3, 3)
    save_component(thin, tmp_path / "thin")
    loaded = load_component(VideoAutoencoder, tmp_path / "thin")
    assert loaded.config == THIN
    x = _video(9, seed=4)
    with torch.no_grad():
        z = thin.encode(x)
        assert thin.decode(z).shape == x.shape
        torch.testing.assert_close(loaded.decode(z), thin.decode(z))
        torch.testing.assert_close(thin.decode(z, chunk_latents=1), thin.decode(z))
    # a config.json written before the field existed: its decoder mirrors the encoder
    old = tmp_path / "old"
    old.mkdir()
    fields = json.loads((tmp_path / "thin" / "config.json").read_text())
    (old / "config.json").write_text(json.dumps({k: v for k, v in fields.items()
                                                 if k not in ("decoder_channels", "decoder_blocks")}))  # fmt: skip
    assert read_config(old, VideoAEConfig).decoder_layout == mirrored.config.decoder_layout
    # the bundled model decodes with the thin tiny decoder
    bundled = read_config(Path(openseedance.__file__).parent / "weights" / "tiny" / "video_ae", VideoAEConfig)
    assert bundled.decoder_layout == ((8, 32, 128), (1, 1, 1)) and bundled.channels == (32, 64, 128)


def test_bad_decoder_layout() -> None:
    with pytest.raises(ValueError, match="decoder_channels needs one entry per level"):
        dataclasses.replace(THIN, decoder_channels=(8, 16))
    with pytest.raises(ValueError, match="multiple of latent_channels"):
        VideoAutoencoder(dataclasses.replace(THIN, decoder_channels=(4, 8, 6)))
