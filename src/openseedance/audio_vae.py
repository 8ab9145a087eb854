"""Waveform autoencoder: audio at the sample rate <-> a short sequence of latents on the shared clock.

A 1-D convolutional KL autoencoder. Each stage of the encoder runs dilated residual units and then a
strided convolution; the decoder mirrors it with transposed convolutions. `prod(strides)` samples
make one latent, so the strides set the latent rate (the `tiny` preset: 640 samples at 16 kHz, 25
latents per second). Every audio channel is encoded on its own with the same weights, so mono and
stereo share one model and a stereo clip is two mono clips side by side.

    model = AudioAutoencoder(audio_ae_config("tiny"))
    latents = model.encode(audio)                  # (B, C, S) -> (B, C, D, N), N = ceil(S / hop)
    audio = model.decode(latents, length=S)        # (B, C, D, N) -> (B, C, S)
    loss, metrics = model.training_loss(audio)

Shape letters:
    B  batch                    C  audio channels (1 mono, 2 stereo, ...)
    S  samples                  N  latent frames (S / hop)
    D  latent channels          W  hidden width of a layer
    T  time steps at a layer's own rate (between S and N)
    F  frequency bins           K  STFT frames
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

# Multi-resolution STFT sizes at 16 kHz; other rates scale them so each covers the same time span.
_STFT_SIZES_16K = (256, 512, 1024)
# Short windows (4 and 8 ms at 16 kHz) for the transient term: fine enough in time to see energy
# that a decoder smears ahead of an onset, which the 16-64 ms windows above average away.
_TRANSIENT_SIZES_16K = (64, 128)
# Long windows (64 and 128 ms at 16 kHz) and the band of voices' first harmonics for the harmonic
# term: fine enough in frequency to separate harmonics 100-400 Hz apart, and blind to the hiss and
# rain above, whose many bins otherwise outvote a voice's few.
_HARMONIC_SIZES_16K = (1024, 2048)
_HARMONIC_BAND_HZ = (50.0, 2500.0)
_LOGVAR_RANGE = (-30.0, 20.0)
ACTIVATIONS = ("snake", "silu")


@dataclass(frozen=True)
class AudioAEConfig:
    sample_rate: int = 16000
    # Downsampling factor of each encoder stage, finest first; their product is the hop (samples per
    # latent). Small strides go first, where the signal is long and channels are few.
    strides: tuple[int, ...] = (2, 4, 8, 10)
    # Width after conv-in, and the width after each stage's downsampling as a multiple of it.
    channels: int = 32
    channel_mults: tuple[int, ...] = (2, 3, 4, 5)
    # One residual unit per dilation in every stage; kernel 7 with dilations 1, 3, 9 lets each stage
    # see ~80 steps at its own rate, so the coarse stages span whole syllables.
    dilations: tuple[int, ...] = (1, 3, 9)
    kernel_size: int = 7
    latent_channels: int = 32
    # Snake (x + sin^2(a x) / a) has a periodic bias that suits voiced sound; SiLU costs ~40% less
    # per training step on a CPU, where the elementwise work weighs as much as the convolutions.
    activation: str = "silu"
    # Small on purpose: enough to keep the latents smooth and of moderate scale for the diffusion
    # model, not so much that the autoencoder trades reconstruction for a Gaussian posterior.
    kl_weight: float = 1e-4
    stft_weight: float = 1.0
    # The spectral terms ignore phase; the waveform L1 lines it up. Its values run ~20x below the
    # spectral ones, and at weight 10 SI-SDR climbs several dB higher in the same steps than at 1.
    waveform_weight: float = 10.0
    # Log-magnitude L1 over 4-8 ms windows (`transient_distance`). Without it the decoder spreads
    # each 40 ms latent's energy ahead of sudden sounds, and their onsets come out 5-20 ms early.
    transient_weight: float = 1.0
    # Log-magnitude L1 over 64-128 ms windows in the 50 Hz-2.5 kHz band (`harmonic_distance`): a
    # voice's harmonic levels, which the full-band distances weigh lightly. Without it the decoder
    # fills in the even harmonics that a hollow (odd-harmonic) voice lacks.
    harmonic_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")
        if not self.strides or any(s < 1 for s in self.strides):
            raise ValueError(f"strides must be a non-empty tuple of positive ints, got {self.strides}")
        if len(self.channel_mults) != len(self.strides):
            raise ValueError(f"need one channel multiple per stride: {self.channel_mults} vs {self.strides}")
        if self.channels < 1 or any(m < 1 for m in self.channel_mults):
            raise ValueError("channels and channel_mults must be positive")
        if self.latent_channels < 1:
            raise ValueError(f"latent_channels must be positive, got {self.latent_channels}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")

    @property
    def hop(self) -> int:
        """Samples per latent frame."""
        return math.prod(self.strides)

    @property
    def latent_rate(self) -> float:
        """Latent frames per second."""
        return self.sample_rate / self.hop

    @property
    def widths(self) -> tuple[int, ...]:
        """Hidden width at each rate, finest first: conv-in, then after each downsampling."""
        return (self.channels, *(self.channels * m for m in self.channel_mults))


# The bundled default: 16 kHz, 640 samples per latent = 25 latents/s, ~2.9 M parameters; trains on a
# laptop CPU.
_TINY = AudioAEConfig(
    sample_rate=16000, strides=(2, 4, 8, 10), channels=32, channel_mults=(2, 3, 4, 5), latent_channels=32
)

PRESETS: dict[str, AudioAEConfig] = {
    # Tests: ~20 k parameters, 40 samples per latent.
    "debug": AudioAEConfig(strides=(2, 4, 5), channels=8, channel_mults=(1, 2, 2), dilations=(1, 3), latent_channels=4),
    "tiny": _TINY,
    # The tiny layout with Snake activations (x + sin²(αx)/α, α learned per channel) in place of
    # SiLU: a periodic bias for drawing harmonics, at ~1.3x the time per training step on a CPU.
    "tiny-snake": replace(_TINY, activation="snake"),
    # Real scale: 48 kHz, 1920 samples per latent = 25 latents/s, 64 latent channels, ~52 M parameters.
    "base": AudioAEConfig(
        sample_rate=48000,
        strides=(2, 4, 5, 6, 8),
        channels=64,
        channel_mults=(2, 4, 8, 8, 12),
        latent_channels=64,
        activation="snake",
    ),
}


def audio_ae_config(name: str) -> AudioAEConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown audio autoencoder preset {name!r}; choose one of {sorted(PRESETS)}") from None


@dataclass
class AudioAEOutput:
    recon: torch.Tensor  # (B, C, S)
    mean: torch.Tensor  # (B, C, D, N)
    logvar: torch.Tensor  # (B, C, D, N)


# ---------------------------------------------------------------------------------------- layers


class _SnakeFunction(torch.autograd.Function):
    """Snake with a hand-written backward that keeps only x (and the tiny alpha): autograd's version
    stores and walks several full-size intermediates, costing memory and time at the audio rate."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:  # (B, W, T), (W, 1)
        ctx.save_for_backward(x, alpha)
        return torch.sin(alpha * x).square_().div_(alpha).add_(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, alpha = ctx.saved_tensors
        ax = alpha * x
        sin, cos = torch.sin(ax), torch.cos(ax)
        grad_sin2 = grad * sin * cos * 2  # d/dx sin^2(ax)/a = sin(2ax)
        grad_x = grad + grad_sin2
        # d/da sin^2(ax)/a = x sin(2ax)/a - sin^2(ax)/a^2
        grad_alpha = (grad_sin2 * x).sum((0, 2)) / alpha[:, 0] - (grad * sin.square()).sum((0, 2)) / alpha[:, 0] ** 2
        return grad_x, grad_alpha[:, None]


class Snake(nn.Module):
    """x + sin^2(a x) / a with a learned frequency `a` per channel: a periodic bias that helps a small
    network model harmonic sounds such as voiced speech."""

    def __init__(self, width: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, W, T) -> (B, W, T)
        # |a| is kept away from 0, where sin^2(ax)/a is 0/0 (a reaching 0 is the identity)
        alpha = self.alpha.to(x.dtype)
        alpha = torch.where(alpha.abs() < 1e-4, torch.full_like(alpha, 1e-4), alpha)
        return _SnakeFunction.apply(x, alpha)


def _activation(name: str, width: int) -> nn.Module:
    return Snake(width) if name == "snake" else nn.SiLU()


class ResidualUnit(nn.Module):
    """act -> dilated conv -> act -> 1x1 conv, added to the input; no normalisation, so a sample's
    output never depends on how long the rest of the clip is."""

    def __init__(self, width: int, dilation: int, kernel_size: int, activation: str):
        super().__init__()
        self.act1 = _activation(activation, width)
        self.conv1 = nn.Conv1d(width, width, kernel_size, dilation=dilation, padding=dilation * (kernel_size // 2))
        self.act2 = _activation(activation, width)
        self.conv2 = nn.Conv1d(width, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, W, T) -> (B, W, T)
        return x + self.conv2(self.act2(self.conv1(self.act1(x))))


class Downsample(nn.Module):
    """Strided conv with kernel 2*stride: T -> T / stride for T a multiple of stride."""

    def __init__(self, width_in: int, width_out: int, stride: int, activation: str):
        super().__init__()
        self.act = _activation(activation, width_in)
        self.conv = nn.Conv1d(width_in, width_out, 2 * stride, stride=stride)
        self.pad = ((stride + 1) // 2, stride // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, Wi, T) -> (B, Wo, T / stride)
        return self.conv(F.pad(self.act(x), self.pad))


class Upsample(nn.Module):
    """Transposed conv with kernel 2*stride, cropped to exactly T * stride (mirror of Downsample)."""

    def __init__(self, width_in: int, width_out: int, stride: int, activation: str):
        super().__init__()
        self.act = _activation(activation, width_in)
        self.conv = nn.ConvTranspose1d(width_in, width_out, 2 * stride, stride=stride)
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, Wi, T) -> (B, Wo, T * stride)
        start = self.stride // 2  # the transposed conv yields (T + 1) * stride; drop the overhang evenly
        return self.conv(self.act(x))[..., start : start + x.shape[-1] * self.stride]


def _stage_units(width: int, config: AudioAEConfig) -> list[nn.Module]:
    return [ResidualUnit(width, d, config.kernel_size, config.activation) for d in config.dilations]


class Encoder(nn.Module):
    def __init__(self, config: AudioAEConfig):
        super().__init__()
        w, k = config.widths, config.kernel_size
        self.conv_in = nn.Conv1d(1, w[0], k, padding=k // 2)
        self.stages = nn.ModuleList(
            nn.Sequential(*_stage_units(w[i], config), Downsample(w[i], w[i + 1], s, config.activation))
            for i, s in enumerate(config.strides)
        )
        self.act_out = _activation(config.activation, w[-1])
        self.proj = nn.Conv1d(w[-1], 2 * config.latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, S) -> (B, 2D, N)
        x = self.conv_in(x)
        for stage in self.stages:
            x = stage(x)
        return self.proj(self.act_out(x))


class Decoder(nn.Module):
    def __init__(self, config: AudioAEConfig):
        super().__init__()
        w, k = config.widths, config.kernel_size
        self.conv_in = nn.Conv1d(config.latent_channels, w[-1], k, padding=k // 2)
        self.stages = nn.ModuleList(
            nn.Sequential(Upsample(w[i + 1], w[i], s, config.activation), *_stage_units(w[i], config))
            for i, s in reversed(list(enumerate(config.strides)))
        )
        self.act_out = _activation(config.activation, w[0])
        self.conv_out = nn.Conv1d(w[0], 1, k, padding=k // 2)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, D, N) -> (B, 1, N * hop)
        x = self.conv_in(z)
        for stage in self.stages:
            x = stage(x)
        return self.conv_out(self.act_out(x))


# ----------------------------------------------------------------------------------------- model


class AudioAutoencoder(nn.Module):
    config_class = AudioAEConfig

    def __init__(self, config: AudioAEConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        # per-channel statistics of the latents, set after training, so the generator sees ~N(0, 1)
        self.register_buffer("latent_mean", torch.zeros(config.latent_channels))
        self.register_buffer("latent_std", torch.ones(config.latent_channels))
        if not self.latent_std.is_meta:  # built on "meta" to be loaded: there is nothing to initialise
            self.initialize_weights()

    def initialize_weights(self) -> None:
        # Variance-preserving normal init over each output's true fan-in (a transposed conv with
        # kernel 2*stride sums 2 taps per input channel, not torch's default out_channels * kernel).
        # SiLU halves small inputs, so its layers get twice the gain; Snake is ~identity near 0.
        gain = 2.0 if self.config.activation == "silu" else 1.0
        for m in self.modules():
            if isinstance(m, nn.Conv1d | nn.ConvTranspose1d):
                _init_conv(m, gain)
        for first in (self.encoder.conv_in, self.decoder.conv_in):  # read audio / latents, not activations
            _init_conv(first, 1.0)
        # Residual branches start small so a deep stack begins close to the identity and the
        # activations keep their scale from the first step.
        for m in self.modules():
            if isinstance(m, ResidualUnit):
                m.conv2.weight.data.mul_(0.1)
        # Near-silent output before training: the first loss is the signal's own size, not noise's.
        self.decoder.conv_out.weight.data.mul_(0.01)
        # Little posterior noise at first, so early training sees the signal through the latents.
        d = self.config.latent_channels
        self.encoder.proj.weight.data[d:].mul_(0.01)
        self.encoder.proj.bias.data[d:].fill_(-6.0)

    # -- encode / decode -------------------------------------------------------------------------

    def posterior(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of the latents: (B, C, S) or (B, S) -> 2 x (B, C, D, N)."""
        audio = _check_audio(audio).to(self._dtype)
        b, c, s = audio.shape
        hop = self.config.hop
        n = -(-s // hop)
        x = F.pad(audio.reshape(b * c, 1, s), (0, n * hop - s))  # (B C) 1 (N hop); zeros after the end
        moments = self.encoder(x).reshape(b, c, 2, self.config.latent_channels, n)
        mean, logvar = moments.unbind(2)
        return mean, logvar.clamp(*_LOGVAR_RANGE)

    def encode(
        self, audio: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """(B, C, S) or (B, S) in [-1, 1] -> normalised latents (B, C, D, N) with N = ceil(S / hop):
        the posterior mean (or a draw from the posterior when `sample`), shifted and scaled by the
        stored latent statistics."""
        mean, logvar = self.posterior(audio)
        return self.normalize(_draw(mean, logvar, generator) if sample else mean)

    def decode(self, latents: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """Normalised latents (B, C, D, N) -> audio (B, C, N * hop), or (B, C, length) when given (length <= N * hop).
        The output is not clamped; clamp to [-1, 1] when writing it out as audio."""
        if latents.ndim != 4 or latents.shape[2] != self.config.latent_channels or latents.shape[-1] == 0:
            raise ValueError(
                f"latents must be (B, C, {self.config.latent_channels}, N) with N >= 1, got {tuple(latents.shape)}"
            )
        if not latents.is_floating_point():
            raise ValueError(f"latents must be a float tensor, got {latents.dtype}")
        n = latents.shape[-1]
        full = n * self.config.hop
        if length is not None and not 0 < length <= full:
            raise ValueError(f"length must be in 1..{full} for {n} latent frames, got {length}")
        audio = self._decode_raw(self.denormalize(latents), full)
        return audio if length is None else audio[..., :length]

    def _decode_raw(self, z: torch.Tensor, length: int) -> torch.Tensor:
        b, c, d, n = z.shape
        return self.decoder(z.to(self._dtype).reshape(b * c, d, n)).reshape(b, c, n * self.config.hop)[..., :length]

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        shape = (1, 1, -1, 1)
        return (z - self.latent_mean.view(shape).to(z)) / self.latent_std.view(shape).to(z)

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        shape = (1, 1, -1, 1)
        return latents * self.latent_std.view(shape).to(latents) + self.latent_mean.view(shape).to(latents)

    @torch.no_grad()
    def set_latent_statistics(self, means: torch.Tensor) -> None:
        """Store the per-channel mean and std of raw posterior means (B, C, D, N)."""
        flat = means.float().transpose(0, 2).reshape(self.config.latent_channels, -1)
        self.latent_mean.copy_(flat.mean(1))
        self.latent_std.copy_(flat.std(1).clamp_min(1e-4))

    def forward(self, audio: torch.Tensor, sample: bool | None = None) -> AudioAEOutput:
        """Encode, draw latents (by default when training), decode to the input's length."""
        audio = _check_audio(audio)
        mean, logvar = self.posterior(audio)
        z = _draw(mean, logvar) if (self.training if sample is None else sample) else mean
        return AudioAEOutput(recon=self._decode_raw(z, audio.shape[-1]), mean=mean, logvar=logvar)

    # -- training --------------------------------------------------------------------------------

    def training_loss(self, audio: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar loss for (B, C, S) audio, and named float metrics for logging. The network may run
        under autocast; the losses are computed in float32."""
        audio = _check_audio(audio)
        out = self(audio)
        cfg = self.config
        with torch.autocast(audio.device.type, enabled=False):
            target, recon = audio.float(), out.recon.float()
            mean, logvar = out.mean.float(), out.logvar.float()
            stft = multi_resolution_stft_distance(recon, target, cfg.sample_rate).mean()
            waveform = (recon - target).abs().mean()
            transient = transient_distance(recon, target, cfg.sample_rate).mean()
            kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).mean()  # per latent element
            loss = cfg.stft_weight * stft + cfg.waveform_weight * waveform + cfg.kl_weight * kl
            if cfg.transient_weight:
                loss = loss + cfg.transient_weight * transient
            harmonic = harmonic_distance(recon, target, cfg.sample_rate).mean()
            if cfg.harmonic_weight:
                loss = loss + cfg.harmonic_weight * harmonic
        metrics = {
            "loss": loss.item(),
            "stft": stft.item(),
            "transient": transient.item(),
            "harmonic": harmonic.item(),
            "l1": waveform.item(),
            "kl": kl.item(),
            "latent_std": mean.std().item() if mean.numel() > 1 else 0.0,
        }
        return loss, metrics

    @property
    def _dtype(self) -> torch.dtype:
        return self.encoder.conv_in.weight.dtype


def _init_conv(conv: nn.Conv1d | nn.ConvTranspose1d, gain: float) -> None:
    fan_in = conv.weight[0].numel()
    if isinstance(conv, nn.ConvTranspose1d):
        fan_in = conv.in_channels * conv.kernel_size[0] // conv.stride[0]
    nn.init.normal_(conv.weight, std=gain * fan_in**-0.5)
    nn.init.zeros_(conv.bias)


def _check_audio(audio: torch.Tensor) -> torch.Tensor:
    """(B, S) mono or (B, C, S) -> (B, C, S), or a ValueError that says what is wrong."""
    if not isinstance(audio, torch.Tensor):
        raise ValueError(f"audio must be a torch.Tensor, got {type(audio).__name__}")
    if not audio.is_floating_point():
        raise ValueError(f"audio must be a float tensor in [-1, 1], got {audio.dtype}")
    if audio.ndim == 2:
        audio = audio.unsqueeze(1)
    if audio.ndim != 3:
        raise ValueError(f"audio must be (B, C, S) or (B, S), got shape {tuple(audio.shape)}")
    if audio.numel() == 0:
        raise ValueError(f"audio is empty: shape {tuple(audio.shape)}")
    return audio


def _draw(mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + (0.5 * logvar).exp() * noise


# --------------------------------------------------------------------------------------- metrics


def stft_sizes(sample_rate: int, sizes_16k: tuple[int, ...] = _STFT_SIZES_16K) -> tuple[int, ...]:
    """FFT sizes for the multi-resolution STFT at `sample_rate` (256/512/1024 at 16 kHz), powers of 2."""
    return tuple(2 ** round(math.log2(n * sample_rate / 16000)) for n in sizes_16k)


def _magnitudes(x: torch.Tensor, n_fft: int) -> torch.Tensor:
    """(R, S) -> (R, F * K) STFT magnitudes, hop n_fft / 4, floored ~75 dB below a full-scale sine."""
    return _spectrogram(x, n_fft).reshape(x.shape[0], -1)


def _spectrogram(x: torch.Tensor, n_fft: int) -> torch.Tensor:
    """(R, S) -> (R, F, K) STFT magnitudes, as `_magnitudes`."""
    # a window summing to 1: a full-scale sine peaks at 0.5 at every resolution and sample rate
    window = torch.hann_window(n_fft, device=x.device)
    spec = torch.stft(x, n_fft, n_fft // 4, window=window / window.sum(), pad_mode="constant", return_complex=True)
    # the floor keeps the log finite in silence and stops a loss chasing inaudible detail (log
    # distances otherwise rate faint hiss worse than silence)
    return (spec.real.square() + spec.imag.square() + 1e-8).sqrt()


def _paired(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return torch.stack([a, b]).float().reshape(-1, a.shape[-1])  # (2 ...) S


def multi_resolution_stft_distance(a: torch.Tensor, b: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Spectral convergence + L1 of log magnitudes, averaged over three STFT resolutions.

    a, b: (..., S) -> (...,), one distance per signal: 0 for identical signals, growing with the
    difference, symmetric in a and b. Computed in float32 whatever the inputs' dtype; any length works.
    """
    x = _paired(a, b)
    lead = a.shape[:-1]
    total = torch.zeros(lead, device=a.device)
    sizes = stft_sizes(sample_rate)
    for n_fft in sizes:
        mag_a, mag_b = _magnitudes(x, n_fft).reshape(2, *lead, -1).unbind(0)  # ... (F K)
        # |a - b| / (|a| + |b|): half the usual spectral convergence near a match, but bounded by 1
        # where the reference is silent (|a - b| / |b| would explode there and swamp a batch)
        norm = torch.linalg.vector_norm
        convergence = norm(mag_a - mag_b, dim=-1) / (norm(mag_a, dim=-1) + norm(mag_b, dim=-1))
        log_l1 = (mag_a.log() - mag_b.log()).abs().mean(-1)
        total = total + convergence + log_l1
    return total / len(sizes)


def transient_distance(a: torch.Tensor, b: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """L1 of log magnitudes over 4 and 8 ms windows (at any rate), averaged: (..., S) x 2 -> (...,).

    Energy ahead of a sudden sound, where the reference is quiet, costs a large log difference here
    even when it is too brief to move the longer-window distance; symmetric, 0 for identical signals.
    """
    x = _paired(a, b)
    lead = a.shape[:-1]
    total = torch.zeros(lead, device=a.device)
    sizes = stft_sizes(sample_rate, _TRANSIENT_SIZES_16K)
    for n_fft in sizes:
        mag_a, mag_b = _magnitudes(x, n_fft).reshape(2, *lead, -1).unbind(0)
        total = total + (mag_a.log() - mag_b.log()).abs().mean(-1)
    return total / len(sizes)


def harmonic_distance(a: torch.Tensor, b: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """L1 of log magnitudes over 64 and 128 ms windows (at any rate), in the 50 Hz-2.5 kHz band
    only, averaged: (..., S) x 2 -> (...,).

    A harmonic that one signal has and the other lacks costs a large log difference on the few bins
    it covers; confined to the band of a voice's first harmonics, those bins are not averaged away
    among the many above. Symmetric, 0 for identical signals.
    """
    x = _paired(a, b)
    lead = a.shape[:-1]
    total = torch.zeros(lead, device=a.device)
    sizes = stft_sizes(sample_rate, _HARMONIC_SIZES_16K)
    low, high = _HARMONIC_BAND_HZ
    for n_fft in sizes:
        bins = slice(math.ceil(low * n_fft / sample_rate), math.floor(high * n_fft / sample_rate) + 1)
        mag = _spectrogram(x, n_fft)[:, bins]
        mag_a, mag_b = mag.reshape(2, *lead, -1).unbind(0)
        total = total + (mag_a.log() - mag_b.log()).abs().mean(-1)
    return total / len(sizes)


def si_sdr(estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Scale-invariant signal-to-distortion ratio in dB: (..., S) x 2 -> (...,), computed in float64
    after removing the means. Identical signals score 80 dB (the cap), independent noise of S samples
    about -10 log10(S) dB, a mixture at 10 dB signal-to-noise about 10 dB."""
    if estimate.shape != reference.shape:
        raise ValueError(f"shapes differ: {tuple(estimate.shape)} vs {tuple(reference.shape)}")
    est = estimate.double() - estimate.double().mean(-1, keepdim=True)
    ref = reference.double() - reference.double().mean(-1, keepdim=True)
    ref_energy = ref.square().sum(-1, keepdim=True)
    target = (est * ref).sum(-1, keepdim=True) / (ref_energy + 1e-30) * ref
    residual = (est - target).square().sum(-1)
    target_energy = target.square().sum(-1)
    ratio = (target_energy + 1e-30) / (residual + 1e-8 * target_energy + 1e-30)
    return (10 * torch.log10(ratio)).float()
