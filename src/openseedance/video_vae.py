"""Causal 3-D convolutional video autoencoder.

Time is causal: every convolution sees only the current and earlier frames, and the first frame is
encoded alone, so an image is a one-frame video and a clip of 1 + 4k frames has 1 + k latent frames
(temporal compression 4). Because nothing looks ahead, a long clip can be encoded or decoded chunk
by chunk with each convolution carrying its last few input frames over (`StreamCache`); the result
equals the whole-clip pass and peak memory depends on the chunk, not on the clip.

Legend: B batch, C channels, T frames, H W pixels, D latent channels, t latent frames, h w latent
pixels. Video is float in [-1, 1], shaped (B, 3, T, H, W); latents are (B, D, t, h, w).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class VideoAEConfig:
    latent_channels: int = 8
    channels: tuple[int, ...] = (32, 64, 128)  # width at full resolution, then after each downsampling
    time_down: tuple[bool, ...] = (True, True)  # which downsamplings also halve time (two: 4x)
    blocks: tuple[int, ...] = (1, 1, 2)  # residual blocks per level
    temporal_from: int = 1  # levels below this use 1x3x3 kernels (full-resolution work stays cheap)
    kl_weight: float = 1e-6
    mse_weight: float = 1.0  # added to L1: PSNR is a squared-error measure
    # L1 between the high-pass parts (each frame minus its 3x3 mean) of output and input: small
    # features a few pixels wide (eyes, mouths, edges) weigh little in L1 and MSE, and without it
    # the decoder blurs them away
    detail_weight: float = 1.0
    # L1 between the frame-to-frame differences of output and input: the frames that share a
    # latent otherwise come out nearly alike (a mouth that opens and closes within 4 frames is
    # drawn as their average), since L1 and MSE reward the average of frames the latent cannot
    # tell apart
    temporal_weight: float = 0.0
    # the decoder's own widths and residual blocks per level, listed like `channels` (full resolution
    # first); empty: mirror the encoder. The decoder's full-resolution levels run over every pixel of
    # every frame and take most of the decode time, so a decoder can be narrower there than the
    # encoder and still be trained against the same, frozen latents
    decoder_channels: tuple[int, ...] = ()
    decoder_blocks: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if len(self.channels) != len(self.time_down) + 1 or len(self.blocks) != len(self.channels):
            raise ValueError("channels and blocks need one entry per level, time_down one per downsampling")
        for name in ("decoder_channels", "decoder_blocks"):
            if getattr(self, name) and len(getattr(self, name)) != len(self.channels):
                raise ValueError(f"{name} needs one entry per level ({len(self.channels)}) or none")

    @property
    def decoder_layout(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The decoder's (widths, blocks) per level, full resolution first."""
        return self.decoder_channels or self.channels, self.decoder_blocks or self.blocks

    def encoder_layout(self) -> dict[str, object]:
        """What fixes the latents: two configs with the same encoder layout (and weights) encode
        alike, whatever their decoders and loss weights."""
        return {"latent_channels": self.latent_channels, "channels": self.channels, "time_down": self.time_down,
                "blocks": self.blocks, "temporal_from": self.temporal_from}  # fmt: skip

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.channels) - 1)

    @property
    def temporal_factor(self) -> int:
        return 2 ** sum(self.time_down)


PRESETS: dict[str, VideoAEConfig] = {
    # seconds on the CPU: tests
    "debug": VideoAEConfig(latent_channels=4, channels=(8, 16, 16), blocks=(1, 1, 1)),
    # the bundled default: 64x64 Stage clips, 4x spatial and 4x temporal compression, small enough
    # to train on a laptop CPU
    "tiny": VideoAEConfig(latent_channels=8, channels=(32, 64, 128), blocks=(1, 1, 1)),
    # the tiny autoencoder with 2x temporal compression: a latent per 2 frames (1/6 s at 12 fps),
    # short enough for a syllable's mouth movement, at twice the video tokens
    "tiny-t2": VideoAEConfig(latent_channels=8, channels=(32, 64, 128), time_down=(True, False), blocks=(1, 1, 1)),
    # the tiny autoencoder with 16 latent channels: twice the latent values per position, spent on
    # detail within each frame rather than on time (compare tiny-t2, which doubles them in time)
    "tiny-c16": VideoAEConfig(latent_channels=16, channels=(32, 64, 128), blocks=(1, 1, 1)),
    # the tiny encoder (same latents) with a decoder a quarter as wide at full resolution and half
    # as wide at half resolution: about a quarter of the decode time (benchmarks/thin_decoder/)
    "tiny-thin": VideoAEConfig(
        latent_channels=8, channels=(32, 64, 128), blocks=(1, 1, 1), decoder_channels=(8, 32, 128)
    ),
    # real scale: 8x spatial, 16 latent channels, for 480p-1080p on GPUs
    "base": VideoAEConfig(
        latent_channels=16, channels=(128, 256, 512, 512), time_down=(False, True, True), blocks=(2, 2, 3, 3)
    ),
}


def video_ae_config(name: str) -> VideoAEConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown video autoencoder preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]


class StreamCache(dict):
    """Per-module state carried from one chunk to the next: each causal convolution's last input
    frames, and which temporal upsamplers have already emitted the first frame."""


class CausalConv3d(nn.Module):
    """A 3-D convolution that looks back in time only. The first chunk is padded with copies of its
    first frame; later chunks start from the frames the previous one left in the cache."""

    def __init__(self, c_in: int, c_out: int, kernel: tuple[int, int, int], stride: tuple[int, int, int] = (1, 1, 1)):
        super().__init__()
        self.kt, self.st = kernel[0], stride[0]
        self.conv = nn.Conv3d(c_in, c_out, kernel, stride, padding=(0, kernel[1] // 2, kernel[2] // 2))

    def forward(self, x: torch.Tensor, cache: StreamCache | None = None) -> torch.Tensor:
        keep = self.kt - self.st  # frames the next chunk needs from this one
        if cache is not None and self in cache:
            x = torch.cat([cache[self], x], dim=2)
        elif self.kt > 1:
            x = torch.cat([x[:, :, :1]] * (self.kt - 1) + [x], dim=2)
        if cache is not None and keep > 0:
            cache[self] = x[:, :, -keep:].detach()
        return self.conv(x)


class ChannelNorm(nn.Module):
    """RMS norm over channels at every voxel: unlike GroupNorm it never mixes frames, so chunked
    and whole-clip passes agree exactly."""

    def __init__(self, c: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rms = x.float().pow(2).mean(1, keepdim=True).add(1e-6).rsqrt()
        return (x.float() * rms).to(x.dtype) * self.weight.view(1, -1, 1, 1, 1).to(x.dtype)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, temporal: bool):
        super().__init__()
        k = (3 if temporal else 1, 3, 3)
        self.norm1, self.conv1 = ChannelNorm(c_in), CausalConv3d(c_in, c_out, k)
        self.norm2, self.conv2 = ChannelNorm(c_out), CausalConv3d(c_out, c_out, k)
        self.skip = nn.Conv3d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, cache: StreamCache | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)), cache)
        h = self.conv2(F.silu(self.norm2(h)), cache)
        return self.skip(x) + h


class Downsample(nn.Module):
    """Halve H and W (and T when `time`): a strided causal convolution plus a shortcut that moves
    space (and time) into channels and averages them down to `c_out`, so the block starts close to
    average pooling and learns what pooling misses. With time, output frame 0 sees input frame 0
    only and frame j sees frames 2j-2..2j (the shortcut: 2j-1 and 2j)."""

    def __init__(self, c_in: int, c_out: int, time: bool):
        super().__init__()
        self.r = 2 if time else 1
        if (c_in * 4 * self.r) % c_out:
            raise ValueError(f"downsampling {c_in} -> {c_out} channels needs {c_in * 4 * self.r} divisible by {c_out}")
        self.c_out = c_out
        self.conv = CausalConv3d(c_in, c_out, (3 if time else 1, 3, 3), (2 if time else 1, 2, 2))

    def forward(self, x: torch.Tensor, cache: StreamCache | None = None) -> torch.Tensor:
        x = F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2))
        first = cache is None or (self, "started") not in cache
        if cache is not None:
            cache[(self, "started")] = True
        s = torch.cat([x[:, :, :1], x], dim=2) if first and self.r > 1 else x  # frame 0 pairs with itself
        b, c, t, h, w = s.shape
        s = s.view(b, c, t // self.r, self.r, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 7, 2, 4, 6)
        s = s.reshape(b, self.c_out, -1, t // self.r, h // 2, w // 2).mean(2)
        return self.conv(x, cache) + s


class Upsample(nn.Module):
    """Double H and W (and T when `time`) by a convolution at the low resolution whose channels are
    then moved into space and time, plus a shortcut that repeats the input's channels and moves
    them the same way, so the block starts close to nearest-neighbour upsampling. Latent frame 0
    becomes one frame, every later one two."""

    def __init__(self, c_in: int, c_out: int, time: bool):
        super().__init__()
        self.r = 2 if time else 1
        if (c_out * 4 * self.r) % c_in:
            raise ValueError(f"upsampling {c_in} -> {c_out} channels needs {c_out * 4 * self.r} divisible by {c_in}")
        self.conv = CausalConv3d(c_in, c_out * 4 * self.r, (3, 3, 3))

    def forward(self, x: torch.Tensor, cache: StreamCache | None = None) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = self.conv(x, cache) + x.repeat_interleave(self.conv.conv.out_channels // c, dim=1)  # (B, C*r*2*2, t, h, w)
        y = y.view(b, -1, self.r, 2, 2, t, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
        y = y.reshape(b, -1, t * self.r, h * 2, w * 2)
        first = cache is None or self not in cache
        if cache is not None:
            cache[self] = True
        return y[:, :, self.r - 1 :] if first and self.r > 1 else y


class Encoder(nn.Module):
    def __init__(self, cfg: VideoAEConfig):
        super().__init__()
        ch = cfg.channels
        if ch[-1] % cfg.latent_channels:
            raise ValueError(f"the last width {ch[-1]} must be a multiple of latent_channels {cfg.latent_channels}")
        self.conv_in = CausalConv3d(3, ch[0], (1, 3, 3))
        self.levels = nn.ModuleList()
        for i, c in enumerate(ch):
            blocks = [ResBlock(c, c, temporal=i >= cfg.temporal_from) for _ in range(cfg.blocks[i])]
            if i < len(ch) - 1:
                blocks.append(Downsample(c, ch[i + 1], cfg.time_down[i]))
            self.levels.append(nn.ModuleList(blocks))
        self.norm_out = ChannelNorm(ch[-1])
        self.conv_out = CausalConv3d(ch[-1], 2 * cfg.latent_channels, (1, 3, 3))

    def forward(self, x: torch.Tensor, cache: StreamCache | None = None) -> torch.Tensor:
        x = self.conv_in(x, cache)
        for level in self.levels:
            for block in level:
                x = block(x, cache)
        h = self.conv_out(F.silu(self.norm_out(x)), cache)  # (B, 2D, t, h, w)
        b, _, t, hh, ww = x.shape
        mean, logvar = h.chunk(2, dim=1)
        # the latent mean starts as a channel average of the last features (a shortcut, as in the
        # downsamplings), so the bottleneck passes information from the first step
        mean = mean + x.view(b, mean.shape[1], -1, t, hh, ww).mean(2)
        return torch.cat([mean, logvar], dim=1)


class Decoder(nn.Module):
    def __init__(self, cfg: VideoAEConfig):
        super().__init__()
        widths, depths = cfg.decoder_layout
        ch = widths[::-1]
        if ch[0] % cfg.latent_channels:
            raise ValueError(f"the decoder's last width {ch[0]} must be a multiple of latent_channels")
        self.conv_in = CausalConv3d(cfg.latent_channels, ch[0], (1, 3, 3))
        self.levels = nn.ModuleList()
        n = len(ch)
        for i, c in enumerate(ch):
            level = n - 1 - i  # the encoder level this mirrors
            blocks = [ResBlock(c, c, temporal=level >= cfg.temporal_from) for _ in range(depths[level])]
            if i < n - 1:
                blocks.append(Upsample(c, ch[i + 1], cfg.time_down[level - 1]))
            self.levels.append(nn.ModuleList(blocks))
        self.norm_out = ChannelNorm(ch[-1])
        self.conv_out = CausalConv3d(ch[-1], 3, (1, 3, 3))

    def forward(self, z: torch.Tensor, cache: StreamCache | None = None) -> torch.Tensor:
        x = self.conv_in(z, cache)
        x = x + z.repeat_interleave(x.shape[1] // z.shape[1], dim=1)
        for level in self.levels:
            for block in level:
                x = block(x, cache)
        return self.conv_out(F.silu(self.norm_out(x)), cache)  # (B, 3, T, H, W)


def high_pass(video: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) -> the same shape: each frame minus its 3x3 local mean (edges repeated)."""
    b, c, t, h, w = video.shape
    frames = video.transpose(1, 2).reshape(b * t, c, h, w)
    low = F.avg_pool2d(F.pad(frames, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return (frames - low).view(b, t, c, h, w).transpose(1, 2)


def frame_steps(video: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, C, T - 1, H, W): each frame minus the one before."""
    return video[:, :, 1:] - video[:, :, :-1]


@dataclass
class VideoAEOutput:
    recon: torch.Tensor  # (B, 3, T, H, W)
    mean: torch.Tensor  # (B, D, t, h, w)
    logvar: torch.Tensor


class VideoAutoencoder(nn.Module):
    config_class = VideoAEConfig

    def __init__(self, config: VideoAEConfig):
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
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="linear")
                nn.init.zeros_(m.bias)
        # residual branches start as the identity, which keeps a deep stack stable
        for m in self.modules():
            if isinstance(m, ResBlock):
                nn.init.zeros_(m.conv2.conv.weight)

    # ------------------------------------------------------------ shapes

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        s = self.config.spatial_factor
        return self.latent_frames(frames), math.ceil(height / s), math.ceil(width / s)

    def latent_frames(self, frames: int) -> int:
        f = self.config.temporal_factor
        if frames < 1 or (frames - 1) % f:
            raise ValueError(f"a clip needs 1 + {f}k frames (1, {1 + f}, {1 + 2 * f}, ...), got {frames}")
        return 1 + (frames - 1) // f

    def _check_video(self, video: torch.Tensor) -> None:
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"video must be (B, 3, T, H, W), got {tuple(video.shape)}")
        if not video.is_floating_point():
            raise ValueError(f"video must be float in [-1, 1], got {video.dtype}")
        self.latent_frames(video.shape[2])
        s = self.config.spatial_factor
        if video.shape[3] % s or video.shape[4] % s:
            raise ValueError(f"height and width must be multiples of {s}, got {video.shape[3]}x{video.shape[4]}")

    # ------------------------------------------------------------ whole clips

    def forward(self, video: torch.Tensor, generator: torch.Generator | None = None) -> VideoAEOutput:
        self._check_video(video)
        mean, logvar = self.encoder(video).chunk(2, dim=1)
        logvar = logvar.clamp(-30.0, 20.0)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        z = mean + (0.5 * logvar).exp() * noise
        return VideoAEOutput(recon=self.decoder(z), mean=mean, logvar=logvar)

    def training_loss(
        self, video: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        out = self(video, generator)
        recon, target = out.recon.float(), video.float()
        l1 = (recon - target).abs().mean()
        mse = (recon - target).pow(2).mean()
        kl = 0.5 * (out.mean.float().pow(2) + out.logvar.float().exp() - 1 - out.logvar.float()).mean()
        detail = (high_pass(recon) - high_pass(target)).abs().mean()
        temporal = (frame_steps(recon) - frame_steps(target)).abs().mean() if video.shape[2] > 1 else l1 * 0
        loss = l1 + self.config.mse_weight * mse + self.config.kl_weight * kl
        if self.config.detail_weight:
            loss = loss + self.config.detail_weight * detail
        if self.config.temporal_weight:
            loss = loss + self.config.temporal_weight * temporal
        m = {"loss": loss, "l1": l1, "mse": mse, "kl": kl, "detail": detail, "temporal": temporal}
        metrics = {k: float(v.detach()) for k, v in m.items()}
        metrics["psnr"] = 10 * math.log10(4.0 / max(metrics["mse"], 1e-12))  # peak-to-peak 2 in [-1, 1]
        return loss, metrics

    def encode(self, video: torch.Tensor, chunk_frames: int | None = None) -> torch.Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> normalised latents (B, D, t, h, w): the posterior mean,
        shifted and scaled by the stored latent statistics. With `chunk_frames` (a multiple of the
        temporal factor) the clip is encoded that many frames at a time."""
        self._check_video(video)
        if chunk_frames is None:
            mean = self.encoder(video)[:, : self.config.latent_channels]
        else:
            mean = torch.cat(list(self._encode_chunks(video, chunk_frames)), dim=2)
        return self.normalize(mean)

    def decode(self, latents: torch.Tensor, chunk_latents: int | None = None) -> torch.Tensor:
        """Normalised latents (B, D, t, h, w) -> video (B, 3, 1 + 4(t-1), H, W), `chunk_latents`
        latent frames at a time when given."""
        if latents.ndim != 5 or latents.shape[1] != self.config.latent_channels:
            raise ValueError(f"latents must be (B, {self.config.latent_channels}, t, h, w), got {tuple(latents.shape)}")
        z = self.denormalize(latents)
        if chunk_latents is None:
            return self.decoder(z)
        return torch.cat(list(self._decode_chunks(z, chunk_latents)), dim=2)

    # ------------------------------------------------------------ chunks

    def _encode_chunks(self, video: torch.Tensor, chunk_frames: int) -> Iterator[torch.Tensor]:
        f = self.config.temporal_factor
        if chunk_frames < f or chunk_frames % f:
            raise ValueError(f"chunk_frames must be a positive multiple of {f}, got {chunk_frames}")
        cache = StreamCache()
        start, end = 0, 1 + chunk_frames  # the first chunk carries the lone first frame too
        while start < video.shape[2]:
            yield self.encoder(video[:, :, start:end], cache)[:, : self.config.latent_channels]
            start, end = end, end + chunk_frames

    def _decode_chunks(self, z: torch.Tensor, chunk_latents: int) -> Iterator[torch.Tensor]:
        if chunk_latents < 1:
            raise ValueError(f"chunk_latents must be positive, got {chunk_latents}")
        cache = StreamCache()
        start, end = 0, 1 + chunk_latents
        while start < z.shape[2]:
            yield self.decoder(z[:, :, start:end], cache)
            start, end = end, end + chunk_latents

    # ------------------------------------------------------------ latent statistics

    def normalize(self, mean: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1, 1)
        return (mean - self.latent_mean.view(shape).to(mean)) / self.latent_std.view(shape).to(mean)

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1, 1)
        return latents * self.latent_std.view(shape).to(latents) + self.latent_mean.view(shape).to(latents)

    @torch.no_grad()
    def set_latent_statistics(self, means: torch.Tensor) -> None:
        """Store the per-channel mean and std of raw posterior means (B, D, t, h, w)."""
        flat = means.float().transpose(0, 1).reshape(self.config.latent_channels, -1)
        self.latent_mean.copy_(flat.mean(1))
        self.latent_std.copy_(flat.std(1).clamp_min(1e-4))
