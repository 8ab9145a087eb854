"""The dual-stream audio-video transformer.

Video, audio and text tokens attend to each other in one joint attention per block; everything
else in a block (norms, projections, QK-norm, SwiGLU, modulation) has its own weights per stream,
held in a `ModuleDict` keyed by stream, so one block class serves every modality. Each token
carries its own diffusion time `t` (clean conditioning tokens have t = 0) and a position on one
clock: (seconds, y, x) for video, (seconds, centre, centre) for audio, zeros for text.

Modulation is adaLN-single with a per-block table: a stream's time embedding is projected once to
six vectors per token, and every block adds its own learned offsets. All gates start at zero
(adaLN-zero), so a new model is the identity plus zero-initialised output heads.

Legend: B batch, N tokens of a stream, L text tokens, D width, H heads, Dh head dim, C token
channels, A position axes (3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from openseedance.layers import (
    RMSNorm,
    Rotary,
    SwiGLU,
    TimestepEmbedder,
    apply_rotary,
    attention,
    split_modulation,
)

GENERATED = ("video", "audio")  # streams the model denoises
STREAMS = (*GENERATED, "text")
# rows of the role table: 0 the clip itself, then one per reference a request may carry
# (`request.role_id` numbers them; a test holds the two together)
NUM_ROLES = 16


@dataclass(frozen=True)
class AVTransformerConfig:
    dim: int = 192
    depth: int = 6
    heads: int = 3
    mlp_ratio: float = 8 / 3  # SwiGLU hidden width = mlp_ratio * dim: the FLOPs of a 4x GELU MLP
    video_channels: int = 8  # latent channels of the video autoencoder
    audio_channels: int = 32  # latent channels of the audio autoencoder
    patch: tuple[int, int, int] = (1, 2, 2)  # latent (t, h, w) cells per video token
    text_dim: int = 384  # width of the text encoder's states
    rope_theta: float = 10_000.0
    rope_time_unit: float = 0.04  # seconds per rotary unit on the time axis: 40 ms, one audio latent

    def __post_init__(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")
        if self.head_dim % 8:
            raise ValueError(f"head dim {self.head_dim} must be a multiple of 8 (rotary axes)")

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def rope_axes(self) -> tuple[int, int, int]:
        """Half of each head's channels rotate with time, a quarter each with y and x."""
        quarter = self.head_dim // 4
        return self.head_dim - 2 * quarter, quarter, quarter

    @property
    def mlp_hidden(self) -> int:
        return 32 * math.ceil(self.mlp_ratio * self.dim / 32)

    @property
    def video_token_channels(self) -> int:
        return self.video_channels * math.prod(self.patch)

    def token_channels(self, stream: str) -> int:
        return {"video": self.video_token_channels, "audio": self.audio_channels, "text": self.text_dim}[stream]


PRESETS: dict[str, AVTransformerConfig] = {
    "debug": AVTransformerConfig(dim=64, depth=2, heads=2, video_channels=4, audio_channels=8),
    # the bundled default: ~8M parameters, trains on a CPU, samples a 4 s clip faster than real time
    "tiny": AVTransformerConfig(),
    "small": AVTransformerConfig(dim=768, depth=16, heads=12, video_channels=16, audio_channels=64),
    # real scale, for GPUs: ~1.2B parameters; heads of 128 channels, the width flash attention runs
    # fastest at (16 heads of 72 were padded to 96 inside the kernels)
    "1b": AVTransformerConfig(dim=1152, depth=24, heads=9, video_channels=16, audio_channels=64, text_dim=1024),
}


def transformer_config(name: str) -> AVTransformerConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown transformer preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]


@dataclass
class Tokens:
    """One stream's tokens: features (B, N, C), diffusion time per token (B, N), positions
    (B, N, A) as (seconds, y, x), optionally which tokens are real (B, N) (False: padding, hidden
    from attention) and each token's role (B, N) (`role_id`: the clip itself, or a reference)."""

    x: torch.Tensor
    t: torch.Tensor
    pos: torch.Tensor
    valid: torch.Tensor | None = None
    role: torch.Tensor | None = None
    shot: torch.Tensor | None = None  # (B, N): the shot (1, 2, ...) each token falls in; 0 for references

    def __post_init__(self) -> None:
        b, n = self.x.shape[:2]
        if self.t.shape != (b, n) or self.pos.shape != (b, n, 3):
            raise ValueError(f"tokens {tuple(self.x.shape)} need t (B, N) and pos (B, N, 3), "
                             f"got {tuple(self.t.shape)} and {tuple(self.pos.shape)}")  # fmt: skip
        for name in ("valid", "role", "shot"):
            value = getattr(self, name)
            if value is not None and value.shape != (b, n):
                raise ValueError(f"tokens {tuple(self.x.shape)} need {name} (B, N), got {tuple(value.shape)}")


@dataclass
class Text:
    """Text encoder states (B, L, text_dim), which of them are real (B, L) (False = padding), and
    for a multi-shot prompt the part each token belongs to (B, L): 0 the global caption, k shot k.
    A clip token of shot k then reads only the global caption and shot k's; all tokens still see
    each other (DESIGN §1)."""

    states: torch.Tensor
    mask: torch.Tensor
    shot: torch.Tensor | None = None

    def rows(self, index: list[int]) -> Text:
        """These prompts' rows (the others dropped)."""
        return Text(*(None if t is None else t[index] for t in (self.states, self.mask, self.shot)))

    def to(self, device: torch.device) -> Text:
        return Text(*(None if t is None else t.to(device) for t in (self.states, self.mask, self.shot)))


class StreamLayers(nn.Module):
    """One stream's weights in one block. A `pre_only` stream (text, in the last block) only offers
    keys and values: nothing after the last block reads its outputs."""

    def __init__(self, cfg: AVTransformerConfig, pre_only: bool = False):
        super().__init__()
        d = cfg.dim
        self.pre_only = pre_only
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(d, (2 if pre_only else 3) * d)
        self.k_norm = RMSNorm(cfg.head_dim)
        # this block's offsets to the stream's adaLN parameters (shift, scale, gate) x 2
        self.modulation = nn.Parameter(torch.zeros((2 if pre_only else 6) * d))
        if not pre_only:
            self.q_norm = RMSNorm(cfg.head_dim)
            self.proj = nn.Linear(d, d)
            self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
            self.mlp = SwiGLU(d, cfg.mlp_hidden)


class AVBlock(nn.Module):
    def __init__(self, cfg: AVTransformerConfig, last: bool = False):
        super().__init__()
        self.heads = cfg.heads
        self.streams = nn.ModuleDict({s: StreamLayers(cfg, pre_only=last and s == "text") for s in STREAMS})

    def forward(
        self,
        xs: dict[str, torch.Tensor],  # stream -> (B, N, D)
        mods: dict[str, torch.Tensor],  # stream -> (B, N or 1, 6D)
        rope: tuple[torch.Tensor, torch.Tensor],  # cos, sin (B, ΣN, 1, Dh/2), the streams in the order of xs
        mask: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        # q, k, v stay (B, N, H, Dh), the layout of the projections, and are joined once along N; the
        # attention reads them through strides and writes (B, N, H, Dh) back, so nothing is transposed
        pre, post, qs, ks, vs = {}, {}, [], [], []
        for s, x in xs.items():
            layers = self.streams[s]
            params = mods[s][..., : layers.modulation.shape[0]] + layers.modulation
            if layers.pre_only:
                shift, scale = params.chunk(2, dim=-1)
                k, v = rearrange(layers.qkv(layers.norm1(x) * (1 + scale) + shift),
                                 "b n (two h d) -> two b n h d", two=2, h=self.heads)  # fmt: skip
            else:
                pre[s], post[s] = split_modulation(params, 2)
                q, k, v = rearrange(layers.qkv(pre[s].apply(layers.norm1(x))),
                                    "b n (three h d) -> three b n h d", three=3, h=self.heads)  # fmt: skip
                qs.append(layers.q_norm(q))
            ks.append(layers.k_norm(k))
            vs.append(v)
        answered = list(pre)  # the streams whose queries are asked: all but a pre-only text
        n_q = sum(xs[s].shape[1] for s in answered)
        if mask is not None and mask.shape[2] > 1:  # per-query rows: only those of streams that ask
            mask = mask[:, :, :n_q]
        q = apply_rotary(torch.cat(qs, 1), (rope[0][:, :n_q], rope[1][:, :n_q]))  # the asking streams come first
        k = apply_rotary(torch.cat(ks, 1), rope)
        q, k, v = (rearrange(t, "b n h d -> b h n d") for t in (q, k, torch.cat(vs, 1)))
        out = rearrange(attention(q, k, v, mask), "b h n d -> b n (h d)")  # (B, ΣN queries, D)
        out = out.split([xs[s].shape[1] for s in answered], dim=1)
        result = {}
        for s, o in zip(answered, out, strict=True):
            layers = self.streams[s]
            x = xs[s] + pre[s].gate * layers.proj(o)
            result[s] = x + post[s].gate * layers.mlp(post[s].apply(layers.norm2(x)))
        return result


class OutputHead(nn.Module):
    def __init__(self, dim: int, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Linear(dim, 2 * dim)
        self.linear = nn.Linear(dim, channels)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(nn.functional.silu(temb)).chunk(2, dim=-1)
        return self.linear(self.norm(x) * (1 + scale) + shift)


class AVTransformer(nn.Module):
    config_class = AVTransformerConfig

    def __init__(self, config: AVTransformerConfig):
        super().__init__()
        self.config = cfg = config
        d = cfg.dim
        self.inputs = nn.ModuleDict({s: nn.Linear(cfg.token_channels(s), d) for s in STREAMS})
        # added to reference tokens: which @ref they are; zero until learnt (so no random draw here)
        self.roles = nn.Embedding(NUM_ROLES, d, _weight=torch.zeros(NUM_ROLES, d))
        self.text_norm = RMSNorm(cfg.text_dim)
        self.time = TimestepEmbedder(d)
        self.adaln = nn.ModuleDict({s: nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d)) for s in STREAMS})
        self.rotary = Rotary(cfg.rope_axes, cfg.rope_theta)
        self.blocks = nn.ModuleList([AVBlock(cfg, last=i == cfg.depth - 1) for i in range(cfg.depth)])
        self.heads = nn.ModuleDict({s: OutputHead(d, cfg.token_channels(s)) for s in GENERATED})
        if not self.roles.weight.is_meta:  # built on "meta" to be loaded: there is nothing to initialise
            self.initialize_weights()
        self.register_load_state_dict_pre_hook(_without_roles)

    def initialize_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.time.mlp[0].weight, std=0.02)
        nn.init.normal_(self.time.mlp[2].weight, std=0.02)
        # adaLN-zero: every gate, shift and scale starts at zero, so each block starts as the identity
        for seq in self.adaln.values():
            nn.init.zeros_(seq[1].weight)
            nn.init.zeros_(seq[1].bias)
        nn.init.zeros_(self.roles.weight)  # the clip itself stays as it was; references learn theirs
        # the velocity heads start at zero
        for head in self.heads.values():
            for lin in (head.modulation, head.linear):
                nn.init.zeros_(lin.weight)
                nn.init.zeros_(lin.bias)

    def forward(self, streams: dict[str, Tokens], text: Text) -> dict[str, torch.Tensor]:
        """Velocities (B, N, C) for every generated stream given (video and/or audio)."""
        unknown = set(streams) - set(GENERATED)
        if unknown or not streams:
            raise ValueError(f"streams must be a non-empty subset of {GENERATED}, got {sorted(streams)}")
        b, length = text.states.shape[:2]
        text_pos = torch.zeros(b, length, 3, device=text.states.device)
        xs = {s: self.inputs[s](tok.x) for s, tok in streams.items()}
        for s, tok in streams.items():  # every call uses the table (data-parallel training expects it)
            xs[s] = xs[s] + (self.roles(tok.role.long()) if tok.role is not None else self.roles.weight[0])
        xs["text"] = self.inputs["text"](self.text_norm(text.states))
        temb = {s: self.time(_once_if_shared(tok.t)) for s, tok in streams.items()}  # (B, N or 1, D)
        temb["text"] = self.time(torch.zeros(b, 1, device=text.states.device))  # text is always clean
        mods = {s: self.adaln[s](e) for s, e in temb.items()}  # (B, N or 1, 6D)
        scale = torch.tensor([1 / self.config.rope_time_unit, 1.0, 1.0], device=text.states.device)
        pos = torch.cat([*(tok.pos * scale for tok in streams.values()), text_pos], 1)  # in the order of xs
        cos, sin = self.rotary(pos)  # once per forward: (B, 1, ΣN, Dh/2)
        rope = cos.transpose(1, 2), sin.transpose(1, 2)  # (B, ΣN, 1, Dh/2), for (B, ΣN, H, Dh) queries and keys
        mask = self._mask(streams, text)
        for block in self.blocks:
            xs = block(xs, mods, rope, mask)
        return {s: self.heads[s](xs[s], temb[s]) for s in streams}

    @staticmethod
    def _mask(streams: dict[str, Tokens], text: Text) -> torch.Tensor | None:
        """Keys that are padding are hidden from every query, and with shots a shot's clip tokens
        see only the global caption and their own shot's; None when nothing is hidden. (B, 1, 1, ΣN)
        for padding alone, (B, 1, ΣN, ΣN) with shots (rows and columns: the streams, then text)."""
        shots = text.shot is not None and bool(text.shot.any())
        if (not shots and bool(text.mask.all())
                and all(tok.valid is None or bool(tok.valid.all()) for tok in streams.values())):  # fmt: skip
            return None
        keep = [tok.valid.bool() if tok.valid is not None else torch.ones(tok.x.shape[:2], dtype=torch.bool,
                device=tok.x.device) for tok in streams.values()]  # fmt: skip
        keys = torch.cat([*keep, text.mask.bool()], dim=1)[:, None, None, :]  # (B, 1, 1, ΣN)
        if not shots:
            return keys
        b, length = text.mask.shape
        mine = [tok.shot.long() if tok.shot is not None else torch.zeros(tok.x.shape[:2], dtype=torch.long,
                device=tok.x.device) for tok in streams.values()]  # fmt: skip
        q_shot = torch.cat([*mine, torch.full((b, length), -1, device=text.mask.device)], 1)  # text reads all
        k_shot = torch.cat([torch.full((b, sum(m.shape[1] for m in mine)), -1, device=text.mask.device),
                            text.shot.long()], 1)  # clip tokens are read by all  # fmt: skip
        ok = (k_shot[:, None, :] <= 0) | (q_shot[:, :, None] < 0) | (k_shot[:, None, :] == q_shot[:, :, None])
        return ok[:, None] & keys  # (B, 1, ΣN, ΣN)

    # ------------------------------------------------------------ accounting

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops(self, tokens: dict[str, int]) -> int:
        """Forward FLOPs for one sample with `tokens` per stream (e.g. {"video": 832, "audio":
        100, "text": 32}): 2 per weight per token for the matrix products, plus attention."""
        cfg = self.config
        per_block = {s: sum(p.numel() for p in self.blocks[0].streams[s].parameters()) for s in STREAMS}
        total = sum(tokens.values())
        matmul = sum(2 * n * per_block[s] * cfg.depth for s, n in tokens.items())
        matmul += sum(2 * n * (cfg.token_channels(s) * cfg.dim + 6 * cfg.dim * cfg.dim) for s, n in tokens.items())
        attn = 4 * total * total * cfg.dim * cfg.depth  # QK^T and AV
        return int(matmul + attn)


def _once_if_shared(t: torch.Tensor) -> torch.Tensor:
    """(B, N) times -> (B, 1) when every token of each sample has the same time (text-to-clip
    sampling, clean-only streams): the time embedding and the modulation are then computed once
    per sample and broadcast over the tokens, the same values without N copies of them."""
    return t[:, :1] if t.shape[1] > 1 and bool((t == t[:, :1]).all()) else t


def _without_roles(module: nn.Module, state: dict, prefix: str, *args) -> None:
    """Weights saved before references existed load as they were: no reference roles learnt yet."""
    key = prefix + "roles.weight"
    if key not in state and any(k.startswith(prefix + "inputs.") for k in state):
        state[key] = torch.zeros(module.roles.weight.shape)  # on the CPU, also for a model built on "meta"
