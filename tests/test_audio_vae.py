"""Contracts of the waveform autoencoder, on the `debug` preset."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from openseedance.audio_vae import (
    PRESETS,
    AudioAEConfig,
    AudioAEOutput,
    AudioAutoencoder,
    Snake,
    audio_ae_config,
    harmonic_distance,
    multi_resolution_stft_distance,
    si_sdr,
    transient_distance,
)
from openseedance.checkpoint import load_component, save_component

CONFIG = audio_ae_config("debug")
HOP = CONFIG.hop
SR = CONFIG.sample_rate


def make_model(seed: int = 0) -> AudioAutoencoder:
    torch.manual_seed(seed)
    return AudioAutoencoder(CONFIG).eval()


@pytest.fixture(scope="module")
def model() -> AudioAutoencoder:
    return make_model()


def tones_and_clicks(batch: int, channels: int, samples: int, seed: int = 0) -> torch.Tensor:
    """Harmonic tones with a syllable-like envelope plus sharp decaying clicks: (B, C, S) in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / SR
    out = torch.zeros(batch, channels, samples)
    for b in range(batch):
        for c in range(channels):
            f0 = 120 + 200 * torch.rand((), generator=g).item()
            envelope = torch.sin(math.pi * (t / t[-1]).clamp(0, 1)) ** 2
            voice = sum(torch.sin(2 * math.pi * k * f0 * t) / k for k in range(1, 6)) * envelope
            click_at = int(torch.randint(0, samples, (), generator=g))
            decay = torch.exp(-(torch.arange(samples - click_at)) / (0.002 * SR))
            click = torch.zeros(samples)
            click[click_at:] = torch.randn(samples - click_at, generator=g) * decay
            out[b, c] = 0.3 * voice + 0.4 * click
    return out.clamp(-1, 1)


# ------------------------------------------------------------------------------ shapes and lengths


@pytest.mark.parametrize("samples", [1, HOP - 1, HOP, HOP + 1, 10 * HOP, 1234])
def test_any_length_gives_ceil_latents_and_exact_length_back(model: AudioAutoencoder, samples: int) -> None:
    audio = tones_and_clicks(2, 1, samples)
    with torch.no_grad():
        latents = model.encode(audio)
        n = math.ceil(samples / HOP)
        assert latents.shape == (2, 1, CONFIG.latent_channels, n)
        assert model.decode(latents).shape == (2, 1, n * HOP)
        assert model.decode(latents, length=samples).shape == (2, 1, samples)
        assert model(audio).recon.shape == audio.shape


def test_two_dimensional_input_is_mono(model: AudioAutoencoder) -> None:
    audio = tones_and_clicks(3, 1, 500)
    with torch.no_grad():
        assert torch.equal(model.encode(audio[:, 0]), model.encode(audio))


def test_stereo_channels_are_encoded_as_independent_mono(model: AudioAutoencoder) -> None:
    stereo = tones_and_clicks(2, 2, 900, seed=1)
    with torch.no_grad():
        latents = model.encode(stereo)
        recon = model.decode(latents, length=900)
        for k in range(2):
            mono = model.encode(stereo[:, k : k + 1])
            torch.testing.assert_close(latents[:, k : k + 1], mono, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(recon[:, k : k + 1], model.decode(mono, length=900), atol=1e-5, rtol=1e-5)
    assert recon.shape == (2, 2, 900)


def test_latents_do_not_depend_on_clip_length(model: AudioAutoencoder) -> None:
    audio = tones_and_clicks(1, 1, 8000, seed=2)
    with torch.no_grad():
        short, long = model.encode(audio[..., :4000]), model.encode(audio)
    # frames far from the shorter clip's end see identical context
    torch.testing.assert_close(short[..., :40], long[..., :40], atol=1e-5, rtol=1e-5)


def test_forward_returns_named_output(model: AudioAutoencoder) -> None:
    with torch.no_grad():
        out = model(tones_and_clicks(1, 2, 300))
    assert isinstance(out, AudioAEOutput)
    assert out.mean.shape == out.logvar.shape == (1, 2, CONFIG.latent_channels, math.ceil(300 / HOP))


# ---------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "audio",
    [
        torch.zeros(100),  # no batch
        torch.zeros(1, 1, 1, 100),  # too many dims
        torch.zeros(1, 1, 0),  # empty
        torch.zeros(1, 1, 100, dtype=torch.int16),  # not float
    ],
    ids=["1d", "4d", "empty", "int16"],
)
def test_bad_audio_raises_value_error(model: AudioAutoencoder, audio: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="audio"):
        model.encode(audio)


def test_bad_latents_or_length_raise_value_error(model: AudioAutoencoder) -> None:
    latents = torch.zeros(1, 1, CONFIG.latent_channels, 3)
    with pytest.raises(ValueError, match="latents"):
        model.decode(torch.zeros(1, CONFIG.latent_channels, 3))
    with pytest.raises(ValueError, match="latents"):
        model.decode(torch.zeros(1, 1, CONFIG.latent_channels + 1, 3))
    with pytest.raises(ValueError, match="length"):
        model.decode(latents, length=3 * HOP + 1)
    with pytest.raises(ValueError, match="length"):
        model.decode(latents, length=0)


# ------------------------------------------------------------------- init, determinism, save/load


def test_untrained_model_is_near_silent(model: AudioAutoencoder) -> None:
    audio = tones_and_clicks(2, 1, 2000)
    with torch.no_grad():
        recon = model.decode(model.encode(audio), length=2000)
    assert recon.abs().max() < 0.05 * audio.abs().max()
    assert recon.abs().max() > 0  # small, not dead


def test_same_seed_same_weights_and_deterministic_eval(model: AudioAutoencoder) -> None:
    other = make_model(seed=0)
    for (name, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    different = make_model(seed=1)
    assert not torch.equal(model.encoder.conv_in.weight, different.encoder.conv_in.weight)
    audio = tones_and_clicks(1, 1, 700)
    with torch.no_grad():
        assert torch.equal(model.encode(audio), model.encode(audio))
        a = model.encode(audio, sample=True, generator=torch.Generator().manual_seed(3))
        b = model.encode(audio, sample=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert not torch.equal(a, model.encode(audio))


def test_save_load_round_trip(model: AudioAutoencoder, tmp_path) -> None:
    save_component(model, tmp_path / "audio_ae")
    loaded = load_component(AudioAutoencoder, tmp_path / "audio_ae")
    assert loaded.config == model.config
    audio = tones_and_clicks(2, 2, 555)
    with torch.no_grad():
        latents = model.encode(audio)
        assert torch.equal(loaded.encode(audio), latents)
        assert torch.equal(loaded.decode(latents, length=555), model.decode(latents, length=555))


# ------------------------------------------------------------------------------------- training


@pytest.mark.parametrize("activation", ["silu", "snake"])
def test_gradients_reach_every_parameter(activation: str) -> None:
    torch.manual_seed(0)
    model = AudioAutoencoder(dataclasses.replace(CONFIG, activation=activation)).train()
    loss, metrics = model.training_loss(tones_and_clicks(2, 2, 800))
    loss.backward()
    assert loss.ndim == 0 and math.isfinite(loss.item())
    assert set(metrics) >= {"loss", "stft", "l1", "kl"}
    assert all(isinstance(v, float) for v in metrics.values())
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_short_training_run_lowers_the_loss() -> None:
    model = make_model().train()
    batch = tones_and_clicks(4, 1, 1600, seed=4)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def eval_loss() -> float:
        model.eval()
        with torch.no_grad():
            loss = model.training_loss(batch)[0].item()
        model.train()
        return loss

    before = eval_loss()
    for _ in range(40):
        loss, _ = model.training_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = eval_loss()
    assert after < 0.7 * before, (before, after)


def test_snake_backward_matches_autograd() -> None:
    snake = Snake(3).double()
    snake.alpha.data = torch.tensor([[0.5], [1.0], [2.5]], dtype=torch.float64)
    x = torch.randn(2, 3, 40, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(2, 3, 40, dtype=torch.float64)
    (snake(x) * grad).sum().backward()
    fused_x, fused_alpha = x.grad.clone(), snake.alpha.grad.clone()
    x.grad, alpha = None, snake.alpha.detach().clone().requires_grad_(True)
    plain = x + torch.sin(alpha * x) ** 2 / alpha
    torch.testing.assert_close(snake(x), plain)
    (plain * grad).sum().backward()
    torch.testing.assert_close(fused_x, x.grad)
    torch.testing.assert_close(fused_alpha, alpha.grad)


def test_runs_under_bfloat16_autocast(model: AudioAutoencoder) -> None:
    audio = tones_and_clicks(1, 2, 1000)
    with torch.no_grad():
        reference = model(audio).recon
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(audio).recon
            loss, _ = model.training_loss(audio)
    assert out.shape == audio.shape
    assert loss.dtype == torch.float32 and math.isfinite(loss.item())
    error = (out.float() - reference).norm() / reference.norm()
    assert error < 0.05


# -------------------------------------------------------------------------------------- metrics


def test_stft_distance_is_zero_for_identical_and_grows_with_noise() -> None:
    clean = tones_and_clicks(2, 1, 4000)
    g = torch.Generator().manual_seed(5)
    noise = torch.randn(clean.shape, generator=g)
    distances = [multi_resolution_stft_distance(clean + level * noise, clean, SR) for level in (0.0, 0.01, 0.1, 0.5)]
    assert distances[0].shape == (2, 1)
    assert torch.allclose(distances[0], torch.zeros(2, 1), atol=1e-6)
    for quieter, louder in zip(distances, distances[1:], strict=False):
        assert (louder > quieter).all()
    with pytest.raises(ValueError):
        multi_resolution_stft_distance(clean, clean[..., :-1], SR)


def test_stft_distance_accepts_short_signals() -> None:
    a = tones_and_clicks(1, 1, 50)
    assert multi_resolution_stft_distance(a, torch.zeros_like(a), SR).item() > 0.5


def test_transient_distance_weighs_an_early_onset_above_a_level_change() -> None:
    time = torch.arange(SR // 2) / SR

    def tone(start: float, gain_db: float = 0.0) -> torch.Tensor:
        return torch.where(time >= start, 0.5 * 10 ** (gain_db / 20) * torch.sin(2 * math.pi * 440 * time), 0.0)

    clean, early, quieter = tone(0.25), tone(0.245), tone(0.25, -3.0)  # onset 5 ms early; 3 dB quieter
    assert transient_distance(clean, clean, SR).item() == pytest.approx(0.0, abs=1e-6)
    assert transient_distance(early, clean, SR).item() == pytest.approx(transient_distance(clean, early, SR).item())
    # the longer windows rate the early onset below the level change; the short ones above it
    assert multi_resolution_stft_distance(early, clean, SR) < multi_resolution_stft_distance(quieter, clean, SR)
    assert transient_distance(early, clean, SR) > transient_distance(quieter, clean, SR)
    with pytest.raises(ValueError):
        transient_distance(clean, clean[:-1], SR)


def test_harmonic_distance_weighs_a_filled_in_harmonic_above_a_level_change_and_ignores_hiss() -> None:
    time = torch.arange(SR // 2) / SR
    noise = 0.002 * torch.randn(time.shape, generator=torch.Generator().manual_seed(0))

    def hollow(even_db: float | None = None, gain_db: float = 0.0, hiss: float = 0.0) -> torch.Tensor:
        """A 300 Hz voice with odd harmonics only; optionally its 2nd harmonic at `even_db`."""
        wave = sum(torch.sin(2 * math.pi * k * 300 * time) / k for k in (1, 3, 5, 7, 9, 11, 13))
        if even_db is not None:
            wave = wave + 10 ** (even_db / 20) * torch.sin(2 * math.pi * 600 * time)
        high = torch.sin(2 * math.pi * 6000 * time) * hiss  # far above the voice band
        return 0.25 * 10 ** (gain_db / 20) * wave + noise + high

    clean, filled, quieter, hissy = hollow(), hollow(even_db=-16.0), hollow(gain_db=-2.0), hollow(hiss=0.05)
    assert harmonic_distance(clean, clean, SR).item() == pytest.approx(0.0, abs=1e-6)
    assert harmonic_distance(filled, clean, SR).item() == pytest.approx(harmonic_distance(clean, filled, SR).item())
    # the full-band distance rates the filled-in harmonic below a 2 dB level change; this one above
    assert multi_resolution_stft_distance(filled, clean, SR) < multi_resolution_stft_distance(quieter, clean, SR)
    assert harmonic_distance(filled, clean, SR) > 1.5 * harmonic_distance(quieter, clean, SR)
    # a tone at 6 kHz moves the full-band distance, not this one
    assert harmonic_distance(hissy, clean, SR) < 0.1 * multi_resolution_stft_distance(hissy, clean, SR)
    with pytest.raises(ValueError):
        harmonic_distance(clean, clean[:-1], SR)


def test_harmonic_weight_adds_the_harmonic_term_to_the_loss() -> None:
    audio = tones_and_clicks(2, 1, 4000)
    losses = []
    for weight in (0.0, 2.0):
        torch.manual_seed(0)
        model = AudioAutoencoder(dataclasses.replace(CONFIG, harmonic_weight=weight)).train()
        torch.manual_seed(1)  # the same latent draw for both
        loss, metrics = model.training_loss(audio)
        losses.append((loss.item(), metrics["harmonic"]))
    (plain, harmonic), (weighted, same) = losses
    assert harmonic > 0 and same == pytest.approx(harmonic)
    assert weighted == pytest.approx(plain + 2.0 * harmonic, rel=1e-5)


def test_si_sdr_matches_the_mixing_ratio() -> None:
    clean = tones_and_clicks(2, 1, 16000)
    g = torch.Generator().manual_seed(6)
    noise = torch.randn(clean.shape, generator=g)
    noise = noise - noise.mean(-1, keepdim=True)
    assert (si_sdr(clean, clean) > 60).all()
    assert (si_sdr(0.5 * clean, clean) > 60).all()  # scale-invariant
    assert (si_sdr(noise, clean) < -10).all()  # unrelated: almost no projection onto the reference
    # noise scaled to 10 dB below the signal gives ~10 dB
    mixed = clean + noise * clean.norm(dim=-1, keepdim=True) / noise.norm(dim=-1, keepdim=True) * 10 ** (-10 / 20)
    torch.testing.assert_close(si_sdr(mixed, clean), torch.full((2, 1), 10.0), atol=0.5, rtol=0)


# -------------------------------------------------------------------------------------- presets


def test_presets_and_latent_rate() -> None:
    tiny = audio_ae_config("tiny")
    assert tiny.sample_rate == 16000
    assert tiny.hop == math.prod(tiny.strides) == 640
    assert tiny.latent_rate == 25.0
    assert audio_ae_config("base").sample_rate == 48000
    assert audio_ae_config("base").latent_rate == 25.0
    assert {"debug", "tiny", "tiny-snake", "base"} <= set(PRESETS)
    # tiny-snake is tiny with Snake activations, nothing else
    assert dataclasses.replace(audio_ae_config("tiny-snake"), activation="silu") == tiny


def test_unknown_preset_names_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown audio autoencoder preset 'huge'") as err:
        audio_ae_config("huge")
    for name in PRESETS:
        assert name in str(err.value)


def test_inconsistent_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="channel multiple"):
        AudioAEConfig(strides=(2, 4), channel_mults=(1, 2, 4))
    with pytest.raises(ValueError, match="activation"):
        AudioAEConfig(activation="relu")
