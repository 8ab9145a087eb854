"""The LTX-2 engine: Lightricks' joint audio-video transformer from a local folder in diffusers layout
(`model_index.json` naming an LTX-2 pipeline, one sub-folder per component), driven by this
project's own per-token-time loop (`sampling.denoise`) instead of the diffusers pipeline's
`__call__`. LTX-2's transformer takes a diffusion time per video token and per audio token, so a
given first frame, last frame, clip to extend or edit, soundtrack or picture is held clean (t = 0)
while the rest is sampled: what the request gives is kept, picture and sound alike.

The diffusers components are reused as they are: Gemma text encoding and the text connectors, the
video VAE and the mel audio VAE with their latent statistics, the vocoder, and the scheduler's
sigma schedule (its shift for the clip's token count, or the distilled 8-step schedule).

Needs the `ltx2` extra (`pip install "openseedance[ltx2]"`): diffusers and transformers are imported
only when an LTX-2 folder is loaded. Files are read locally only; nothing is ever downloaded.

Legend: B batch, N tokens, C token channels, D latent channels, T latent frames, M mel bins.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from openseedance import conditioning as cond
from openseedance import media
from openseedance.engines.base import Capabilities, EngineOutput, Laps, RunOptions
from openseedance.media import Clip
from openseedance.request import GenerationRequest, shot_cuts, split_shots
from openseedance.sampling import Branch, Latents, Progress, SamplerConfig, denoise

# the components an LTX-2 folder must hold (model_index.json names their classes)
COMPONENTS = ("transformer", "vae", "audio_vae", "vocoder", "connectors", "text_encoder", "tokenizer", "scheduler")
SETTINGS_FILE = "openseedance.json"  # optional, beside model_index.json: the serving defaults below
# LTX-2's distilled schedule (diffusers' DISTILLED_SIGMA_VALUES), then 0
DISTILLED_SIGMAS = (1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875, 0.0)
Said = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # video, audio text states; their masks
MEL_FFT = 1024  # LTX-2's mel front end: 1024-point STFT, Slaney mel scale and norm, magnitude, log


@dataclass(frozen=True)
class LTX2Settings:
    """Serving defaults for an LTX-2 folder (LTX-2's own defaults; a folder may override them in
    `openseedance.json`)."""

    width: int = 768
    height: int = 512
    fps: float = 24.0
    steps: int = 30
    guidance: float = 3.0  # text guidance for the picture
    audio_guidance: float = 7.0  # text guidance for the sound
    # LTX-2's two other guidances, with its scales: spatio-temporal guidance (away from the model with
    # self-attention skipped in block `stg_block`; None: block 28 of 48, scaled to the model's depth)
    # and modality guidance (away from each stream without the other; 1: none)
    stg_guidance: float = 1.0
    audio_stg_guidance: float = 1.0
    stg_block: int | None = None
    modality_guidance: float = 3.0
    audio_modality_guidance: float = 3.0
    min_duration: float = 1.0
    max_duration: float = 20.0
    max_side: int = 1536
    distilled: bool | None = None  # the folder holds a distilled model (None: from the transformer's name)
    max_text_tokens: int = 1024
    decode_timestep: float = 0.0  # the video VAE's decode time, where it takes one
    negative_prompt: str = ""
    # a "[shot N]" prompt: "attention" (each token reads its shot's text, global text included, in one
    # pass) or "chained" (shot by shot, each later shot an extension of the ones before)
    shots: str = "attention"
    # how it runs on a GPU: weights in bfloat16 ("auto": bfloat16 when a CUDA GPU is present, else the
    # dtype asked for), model CPU offload (each model on the GPU only while it runs), tiled VAE decoding
    dtype: str = "auto"  # "auto", "bfloat16" or "float32"
    offload: bool = False
    vae_tiling: bool = True

    def __post_init__(self) -> None:
        if self.shots not in ("attention", "chained"):
            raise ValueError(f"{SETTINGS_FILE}: shots must be attention or chained, got {self.shots!r}")
        if self.dtype not in ("auto", "bfloat16", "float32"):
            raise ValueError(f"{SETTINGS_FILE}: dtype must be auto, bfloat16 or float32, got {self.dtype!r}")


def is_ltx2(path: str | os.PathLike) -> bool:
    """Whether a folder is an LTX-2 pipeline in diffusers layout."""
    index = Path(path) / "model_index.json"
    if not index.is_file():
        return False
    return str(_read_json(index, "model_index.json").get("_class_name", "")).startswith("LTX2")


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read the {what} of the LTX-2 model in {path.parent}: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"the {what} in {path} is not a JSON object")
    return data


def _component_config(folder: Path, name: str) -> dict[str, Any]:
    path = folder / name / ("scheduler_config.json" if name == "scheduler" else "config.json")
    if not path.is_file():
        raise ValueError(f"the LTX-2 model in {folder} has no {name} ({path.relative_to(folder)} is missing)")
    return _read_json(path, f"{name} config")


def _check_folder(folder: Path) -> dict[str, Any]:
    """model_index.json, with every component named and present; a ValueError naming the first that is not."""
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    index = _read_json(folder / "model_index.json", "model_index.json")
    if not str(index.get("_class_name", "")).startswith("LTX2"):
        raise ValueError(f"{folder} holds a {index.get('_class_name')!r} pipeline, not an LTX-2 one")
    for name in COMPONENTS:
        entry = index.get(name)
        if not (isinstance(entry, list) and len(entry) == 2 and entry[1]):
            raise ValueError(f"the LTX-2 model in {folder} names no {name} in model_index.json")
        if not (folder / name).is_dir():
            raise ValueError(f"the LTX-2 model in {folder} has no {name} (the {name}/ folder is missing)")
        if name != "tokenizer":
            _component_config(folder, name)
    return index


def _settings(folder: Path) -> LTX2Settings:
    path = folder / SETTINGS_FILE
    if not path.is_file():
        return LTX2Settings()
    data = _read_json(path, SETTINGS_FILE)
    known = {f.name for f in fields(LTX2Settings)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown settings {unknown}; known: {sorted(known)}")
    return LTX2Settings(**data)


def vae_ratios(config: dict[str, Any]) -> tuple[int, int]:
    """(spatial, temporal) compression of the video VAE, from its config: the ratios it states, or
    its patch times 2 per down block that scales that axis."""
    types = config.get("downsample_type", ("spatial", "temporal", "spatiotemporal", "spatiotemporal"))
    scaling = config.get("spatio_temporal_scaling", True)
    scaling = [scaling] * len(types) if isinstance(scaling, bool) else scaling
    spatial = config.get("spatial_compression_ratio") or config.get("patch_size", 4) * 2 ** sum(
        1 for d, on in zip(types, scaling, strict=False) if on and "spatial" in d)  # fmt: skip
    temporal = config.get("temporal_compression_ratio") or config.get("patch_size_t", 1) * 2 ** sum(
        1 for d, on in zip(types, scaling, strict=False) if on and "temporal" in d)  # fmt: skip
    return int(spatial), int(temporal)


def _has_ic_lora(folder: Path) -> bool:
    return any("lora" in p.name.lower() for p in folder.glob("*.safetensors"))


def _distilled(folder: Path, settings: LTX2Settings) -> bool:
    if settings.distilled is not None:
        return settings.distilled
    source = str(_component_config(folder, "transformer").get("_name_or_path", ""))
    return "distilled" in source.lower() or "distilled" in folder.name.lower()


def card(folder: str | os.PathLike) -> Capabilities:
    """An LTX-2 folder's capabilities from its configs, without loading weights."""
    path = Path(folder)
    _check_folder(path)
    settings = _settings(path)
    spatial, temporal = vae_ratios(_component_config(path, "vae"))
    vocoder = _component_config(path, "vocoder")
    sample_rate = int(vocoder.get("output_sampling_rate", 24000))
    motion = ("an IC-LoRA is in the folder but this engine does not drive IC-LoRAs" if _has_ic_lora(path)
              else "that needs an IC-LoRA and this folder holds none")  # fmt: skip
    refusals = {
        "image": "LTX-2 has no identity references (@image1...): it copies no look from a picture; give the "
                 "picture as the first or last frame, or describe the look in words",
        "audio": "LTX-2 has no voice references (@audio1...): it clones no voice; give the sound as the "
                 "soundtrack to follow, or describe the voice in words",
        "video": f"LTX-2 takes motion references (@video1...) only through an IC-LoRA: {motion}",
    }  # fmt: skip
    # "references" stays a task so that a request with references is refused by their kind, with the reason
    return Capabilities(engine="ltx2", tasks=("t2av", "i2av", "a2v", "v2a", "extend", "edit", "references"),
                        references={"image": 0, "video": 0, "audio": 0}, refusals=refusals,
                        width=settings.width, height=settings.height, fps=settings.fps, size_step=spatial,
                        max_side=settings.max_side, min_duration=settings.min_duration,
                        max_duration=settings.max_duration, sample_rate=sample_rate, frames_per_latent=temporal,
                        steps=8 if _distilled(path, settings) else settings.steps)  # fmt: skip


def _load_component(folder: Path, name: str, library: str, class_name: str, dtype: torch.dtype) -> Any:
    import diffusers
    import transformers

    modules = {"diffusers": diffusers, "transformers": transformers, "ltx2": diffusers.pipelines.ltx2}
    kind = getattr(modules.get(library), class_name, None)
    if kind is None:
        raise ValueError(f"the {name} of the LTX-2 model in {folder} is a {library}.{class_name}, "
                         f"which diffusers {diffusers.__version__} does not have")  # fmt: skip
    kwargs: dict[str, Any] = {"local_files_only": True}
    if isinstance(kind, type) and issubclass(kind, torch.nn.Module):
        kwargs["torch_dtype"] = dtype
    try:
        return kind.from_pretrained(str(folder / name), **kwargs)
    except Exception as err:  # damaged json or safetensors, missing files, shapes that do not fit
        what = f"{type(err).__name__}: {err}"
        raise ValueError(f"cannot load the {name} of the LTX-2 model in {folder}: {what}") from None


def log_mel(wave: torch.Tensor, sample_rate: int, hop: int, bins: int) -> torch.Tensor:
    """(C, S) waveform -> (C, frames, bins) log-magnitude mel spectrogram, LTX-2's audio VAE input:
    a centred 1024-point Hann STFT every `hop` samples, Slaney mel filters up to Nyquist, log of the
    magnitude clamped at 1e-5. One frame per hop (the trailing centred frame dropped)."""
    window = torch.hann_window(MEL_FFT, dtype=torch.float32)
    spec = torch.stft(wave.float(), MEL_FFT, hop, MEL_FFT, window, center=True, pad_mode="reflect",
                      return_complex=True).abs()  # fmt: skip
    mel = torch.einsum("cft,fm->ctm", spec, _slaney_filters(sample_rate, bins))
    return mel.clamp_min(1e-5).log()[:, : wave.shape[-1] // hop]


def _slaney_filters(sample_rate: int, bins: int) -> torch.Tensor:
    """(MEL_FFT // 2 + 1, bins) triangular mel filters on the Slaney scale, area-normalised."""

    def to_mel(f: np.ndarray) -> np.ndarray:
        return np.where(f < 1000, 3 * f / 200, 15 + 27 * np.log(np.maximum(f, 1e-9) / 1000) / np.log(6.4))

    def to_hz(m: np.ndarray) -> np.ndarray:
        return np.where(m < 15, 200 * m / 3, 1000 * np.exp(np.log(6.4) * (m - 15) / 27))

    freqs = np.linspace(0, sample_rate / 2, MEL_FFT // 2 + 1)
    edges = to_hz(np.linspace(to_mel(np.array(0.0)), to_mel(np.array(sample_rate / 2)), bins + 2))
    low, mid, high = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    tri = np.maximum(0, np.minimum((freqs - low) / (mid - low), (high - freqs) / (high - mid)))
    tri *= (2.0 / (high - low))
    return torch.from_numpy(tri.T.astype(np.float32))


class LTX2Engine:
    """An LTX-2 folder behind the front (the `Generator` protocol)."""

    def __init__(self, pipe: Any, folder: Path, capabilities: Capabilities, settings: LTX2Settings,
                 distilled: bool) -> None:  # fmt: skip
        self.pipe = pipe  # the diffusers pipeline object: its components and helpers, never its __call__
        self.folder = folder
        self._card = capabilities
        self.settings = settings
        self.distilled = distilled
        self.device = torch.device("cpu")
        self._model_id: str | None = None

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> LTX2Engine:
        """Load an LTX-2 folder, component by component, from local files only; a ValueError naming
        the component that is missing or damaged."""
        try:
            from diffusers import LTX2Pipeline
        except ImportError as err:
            raise ValueError(f"running LTX-2 needs the ltx2 extra (pip install 'openseedance[ltx2]'): {err}") from None
        folder = Path(path)
        index = _check_folder(folder)
        capabilities = card(folder)
        settings = _settings(folder)
        if settings.dtype != "auto":
            dtype = getattr(torch, settings.dtype)
        elif torch.cuda.is_available():
            dtype = torch.bfloat16
        parts = {name: _load_component(folder, name, *index[name], dtype) for name in COMPONENTS}
        pipe = LTX2Pipeline(**parts)
        for model in (pipe.transformer, pipe.vae, pipe.audio_vae, pipe.vocoder, pipe.connectors, pipe.text_encoder):
            model.eval().requires_grad_(False)
        return cls(pipe, folder, capabilities, settings, _distilled(folder, settings))

    def to(self, device: str | torch.device) -> LTX2Engine:
        """Run on `device`. On a GPU: tiled VAE decoding (`vae_tiling`), and with `offload` each model
        sits on the GPU only while it runs (accelerate's model CPU offload); the latents then live on
        the GPU and every model is moved there for its turn."""
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.settings.vae_tiling:
            self.pipe.vae.enable_tiling()
        if self.device.type == "cuda" and self.settings.offload:
            self.pipe.enable_model_cpu_offload(device=self.device)
        else:
            self.pipe.to(self.device)
        return self

    # ------------------------------------------------------------ what it can do

    @property
    def capabilities(self) -> Capabilities:
        return self._card

    @property
    def model_id(self) -> str:
        """A fingerprint of the transformer's weights (the same after a copy of the folder)."""
        if self._model_id is None:
            from openseedance.engines.bundled import weights_id

            self._model_id = "ltx2:" + weights_id([self.pipe.transformer.state_dict()]).removeprefix("weights:")
        return self._model_id

    def check(self, request: GenerationRequest) -> None:
        self._card.check(request)

    def sampler(self, options: RunOptions) -> SamplerConfig:
        s, o = self.settings, options
        if o.shift is not None:
            raise ValueError("LTX-2 samples its own schedule (its scheduler's shift for the clip's size): "
                             "a shift cannot be set")  # fmt: skip
        if self.distilled:  # a distilled student: its own 8 times, no guidance
            return SamplerConfig(steps=len(DISTILLED_SIGMAS) - 1, guidance={"video": 1.0, "audio": 1.0})
        guidance = {"video": s.guidance if o.guidance is None else o.guidance,
                    "audio": s.audio_guidance if o.audio_guidance is None else o.audio_guidance}  # fmt: skip
        return SamplerConfig(steps=o.steps or s.steps, solver=o.solver or "euler", guidance=guidance,
                             rescale=o.guidance_rescale or 0.0,
                             perturbed_guidance={"video": s.stg_guidance, "audio": s.audio_stg_guidance},
                             isolated_guidance={"video": s.modality_guidance - 1,
                                                "audio": s.audio_modality_guidance - 1})  # fmt: skip

    @property
    def stg_blocks(self) -> list[int]:
        """The block whose self-attention spatio-temporal guidance skips: the one set, or LTX-2's block
        28 of 48 at the same relative depth of this model."""
        layers = len(self.pipe.transformer.transformer_blocks)
        block = self.settings.stg_block if self.settings.stg_block is not None else round(28 * layers / 48)
        if not 0 <= block < layers:
            raise ValueError(f"{SETTINGS_FILE}: stg_block {block} is not a block of this {layers}-block model")
        return [block]

    # ------------------------------------------------------------ layout and codecs

    def audio_hop(self, sample_rate: int) -> int:
        """Samples at `sample_rate` per audio latent (LTX-2: 4 mel frames of 10 ms)."""
        a = self.pipe.audio_vae
        seconds = a.config.mel_hop_length * a.temporal_compression_ratio / a.config.sample_rate
        return round(seconds * sample_rate)

    def layout(self, request: GenerationRequest) -> cond.Layout:
        spatial, temporal = self._card.size_step, self._card.frames_per_latent
        coded = cond.coded_frames(request.duration, request.fps, temporal)
        grid = ((coded - 1) // temporal + 1, request.height // spatial, request.width // spatial)
        tc = self.pipe.transformer.config
        hop = self.audio_hop(request.sample_rate)
        samples = round(request.duration * request.sample_rate)
        return cond.Layout(grid, (tc.patch_size_t, tc.patch_size, tc.patch_size), request.fps, temporal,
                           -(-samples // hop), request.sample_rate / hop)  # fmt: skip

    def encode_video(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (F, H, W, 3) -> normalised latents (1, D, T, h, w)."""
        vae = self.pipe.vae
        x = cond.frames_to_tensor(frames)[None].to(self.device, vae.dtype)
        z = vae.encode(x).latent_dist.mode().float()
        return self.pipe._normalize_latents(z, vae.latents_mean, vae.latents_std, vae.config.scaling_factor).cpu()

    def encode_audio(self, track: np.ndarray, sample_rate: int, latents: int) -> torch.Tensor:
        """A mono track (1, S) at `sample_rate` -> normalised packed audio latents (1, C, latents)."""
        a = self.pipe.audio_vae
        rate = a.config.sample_rate
        wave = torch.from_numpy(np.ascontiguousarray(media.resample_audio(track, sample_rate, rate), np.float32))
        need = latents * a.temporal_compression_ratio * a.config.mel_hop_length
        wave = torch.nn.functional.pad(wave, (0, max(0, need - wave.shape[-1])))[:, :need]
        mel = log_mel(wave.expand(a.config.in_channels, -1), rate, a.config.mel_hop_length, a.config.mel_bins)
        z = a.encode(mel[None].to(self.device, a.dtype)).latent_dist.mode().float()
        packed = self.pipe._pack_audio_latents(z)[:, :latents]
        packed = torch.nn.functional.pad(packed, (0, 0, 0, latents - packed.shape[1]))
        packed = self.pipe._normalize_audio_latents(packed, a.latents_mean, a.latents_std)
        return cond.tokens_to_audio(packed).cpu()

    def encoders(self, request: GenerationRequest, layout: cond.Layout) -> cond.Encoders:
        def video(frames: np.ndarray, chunk: int | None) -> torch.Tensor:
            return self.encode_video(frames)

        def audio(track: np.ndarray) -> torch.Tensor:
            return self.encode_audio(track, request.sample_rate, -(-track.shape[-1] // hop))

        hop = self.audio_hop(request.sample_rate)
        tc = self.pipe.transformer.config
        channels = {"video": tc.in_channels, "audio": tc.audio_in_channels}
        return cond.Encoders(None, video, audio, lambda r: layout, hop, channels)  # type: ignore[arg-type]

    def encode_text(self, prompt: str, guided: bool) -> dict[Branch, Said]:
        """Branch -> (video text states, audio text states, their masks) through Gemma and the connectors."""
        pipe = self.pipe
        length = min(self.settings.max_text_tokens, pipe.tokenizer.model_max_length)
        states, mask, neg, neg_mask = pipe.encode_prompt(prompt, self.settings.negative_prompt, guided,
                                                         max_sequence_length=length, device=self.device)  # fmt: skip
        side = getattr(pipe.tokenizer, "padding_side", "left")
        out = {}
        for branch, (s, m) in ((Branch.COND, (states, mask)), (Branch.UNCOND, (neg, neg_mask))):
            if s is not None:
                video, audio, valid = pipe.connectors(s.to(pipe.connectors.dtype), m, padding_side=side)
                out[branch] = (video, audio, valid, valid)
        return out

    def shot_text(self, parts: list[str], cuts: tuple[float, ...], layout: cond.Layout,
                  guided: bool) -> dict[Branch, Said]:  # fmt: skip
        """Per-shot text attention: the parts' texts side by side, with a mask per token (an additive
        bias, (1, N, K * L)) that lets each video and audio token read only its own shot's text."""
        encoded = [self.encode_text(p, guided) for p in parts]
        when = {"video": layout.video_positions()[:, 0], "audio": layout.audio_positions()[:, 0]}
        shot = {s: (cond.token_shots(t, cuts) - 1).to(self.device) for s, t in when.items()}
        out = {}
        for branch in encoded[0]:
            video, audio, valid = (torch.cat([e[branch][i] for e in encoded], 1) for i in range(3))
            segment = torch.arange(valid.shape[1], device=self.device) // encoded[0][branch][0].shape[1]
            bias = {s: torch.where((segment[None] == shot[s][:, None]) & valid.bool(), 0.0, -10000.0)[None]
                    for s in shot}  # fmt: skip
            out[branch] = (video, audio, bias["video"], bias["audio"])
        return out

    def times(self, steps: int, video_tokens: int) -> torch.Tensor:
        """The steps + 1 times of LTX-2's schedule: its scheduler's shift for the clip's token count,
        or the distilled schedule."""
        if self.distilled:
            return torch.tensor(DISTILLED_SIGMAS)
        from diffusers.pipelines.ltx2.pipeline_ltx2 import calculate_shift

        scheduler = self.pipe.scheduler
        c = scheduler.config
        mu = calculate_shift(video_tokens, c.get("base_image_seq_len", 1024), c.get("max_image_seq_len", 4096),
                             c.get("base_shift", 0.95), c.get("max_shift", 2.05))  # fmt: skip
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu, device="cpu")
        return scheduler.sigmas.float().cpu()

    # ------------------------------------------------------------ generation

    @torch.inference_mode()
    def generate(self, request: GenerationRequest, options: RunOptions | None = None,
                 progress: bool | Progress = False) -> EngineOutput:  # fmt: skip
        options = options or RunOptions()
        lap = Laps(self.device)

        sampler = self.sampler(options)
        layout = self.layout(request)
        clean, keep = cond.clip_conditions(request, layout, self.encoders(request, layout))
        lap("encode")
        gen = torch.Generator().manual_seed(request.seed)
        noise = {s: torch.randn(x.shape, generator=gen) for s, x in clean.items()}
        times = self.times(sampler.steps, layout.video_tokens)
        latents = self.sample(request, layout, clean, keep, noise, sampler, times, options, progress)
        lap("sample")
        clip = self.decode(latents, request, layout, gen)
        lap("decode")
        settings: dict[str, Any] = {"steps": sampler.steps, "solver": sampler.solver, "guidance": sampler.guidance,
                                    "schedule": "distilled" if self.distilled else "ltx2-shifted",
                                    "stg_guidance": sampler.perturbed_guidance or None,
                                    "stg_block": self.stg_blocks[0] if sampler.perturbed_guidance else None,
                                    "modality_guidance": {s: g + 1 for s, g in sampler.isolated_guidance.items()}
                                    or None,
                                    "shots": self.settings.shots if split_shots(request.prompt)[1] and options.per_shot
                                    else None,
                                    "model": str(self.folder)}  # fmt: skip
        settings = {k: v for k, v in settings.items() if v is not None}
        return EngineOutput(clip, settings, layout.video_tokens + layout.audio_latents, lap.seconds)

    def sample(self, request: GenerationRequest, layout: cond.Layout, clean: Latents, keep: Latents, noise: Latents,
               sampler: SamplerConfig, times: torch.Tensor, options: RunOptions,
               progress: bool | Progress) -> Latents:  # fmt: skip
        """The clip's latents: `denoise` with the given tokens held clean. A "[shot N]" prompt (unless
        `options.per_shot` is False: then it is one text) is sampled with per-shot text attention in
        one pass, or, with `shots: chained`, shot by shot, each with the global text and its own and
        every later shot an extension of the shots before it (their tokens held clean)."""
        text, shots = split_shots(request.prompt) if options.per_shot else ("", ())
        cuts = shot_cuts(request.prompt, request.duration) if shots else ()
        parts = [f"{text} {shot}".strip() for shot in shots]
        guided = any(g != 1.0 for g in sampler.guidance.values())
        coords = self._coords(layout)

        def run(said: dict[Branch, Said], given: Latents, held: Latents, told: bool | Progress) -> Latents:
            velocity = self._velocity(said, coords, layout, options)
            on = {name: {s: v.to(self.device) for s, v in z.items()} for name, z in
                  (("noise", noise), ("given", given), ("held", held))}  # fmt: skip
            x = denoise(velocity, on["noise"], on["given"], on["held"], config=sampler, shift=1.0, times=times,
                        progress=told)  # fmt: skip
            return {s: z.cpu() for s, z in x.items()}

        if not shots:
            return run(self.encode_text(request.prompt, guided), clean, keep, progress)
        if self.settings.shots == "attention":
            return run(self.shot_text(parts, cuts, layout, guided), clean, keep, progress)
        when = {"video": layout.video_positions()[:, 0], "audio": layout.audio_positions()[:, 0]}
        x = clean
        for k, (prompt, start) in enumerate(zip(parts, (0.0, *cuts), strict=True)):
            held = {s: keep[s] | (when[s] < start)[None] for s in keep}  # the given tokens and the shots before
            given = {s: torch.where(keep[s][..., None], clean[s], x[s]) for s in x}

            def told(done: int, total: int, k: int = k) -> None:
                progress(k * total + done, total * len(parts))  # type: ignore[operator]

            x = run(self.encode_text(prompt, guided), given, held, told if callable(progress) else progress)
        return x

    def _coords(self, layout: cond.Layout) -> dict[str, torch.Tensor]:
        t, h, w = layout.token_grid
        tr = self.pipe.transformer
        return {"video": tr.rope.prepare_video_coords(1, t, h, w, self.device, fps=layout.fps),
                "audio": tr.audio_rope.prepare_audio_coords(1, layout.audio_latents, self.device)}

    def _velocity(self, text: dict[Branch, tuple], coords: dict[str, torch.Tensor], layout: cond.Layout,
                  options: RunOptions) -> Any:  # fmt: skip
        tr = self.pipe.transformer
        scale = tr.config.timestep_scale_multiplier
        cross = bool(tr.config.use_prompt_adaln_single)  # LTX-2.3 conditions cross-attention on the other stream's time
        t, h, w = layout.token_grid

        def mask(m: torch.Tensor) -> torch.Tensor:
            """(B, L) 0/1 as it is (the transformer turns it into a bias); a per-token bias (B, N, L) cast."""
            return m if m.ndim == 2 else m.to(tr.dtype)

        def forward(x: Latents, tt: Latents, branches: list[Branch], isolate: bool) -> list[Latents]:
            b = len(branches)
            said = [text[Branch.UNCOND if br is Branch.UNCOND else Branch.COND] for br in branches]
            video_text, audio_text, video_mask, audio_mask = (torch.cat([p[i] for p in said]) for i in range(4))
            sigma = {s: tt[s].amax(1).expand(b) * scale for s in tt}  # the clip's current time
            perturbed = [br is Branch.PERTURBED for br in branches]
            stg = {"spatio_temporal_guidance_blocks": self.stg_blocks,
                   "perturbation_mask": torch.tensor([0.0 if p else 1.0 for p in perturbed], device=self.device)
                   } if any(perturbed) else {}  # fmt: skip
            dtype = tr.dtype
            # bfloat16 autocast only when asked for (the weights' dtype, `dtype` in the settings, is the
            # precision otherwise); an unset choice (None) is no autocast
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bool(options.bf16)):
                v, a = tr(hidden_states=x["video"].expand(b, -1, -1).to(dtype),
                          audio_hidden_states=x["audio"].expand(b, -1, -1).to(dtype),
                          encoder_hidden_states=video_text.to(dtype), audio_encoder_hidden_states=audio_text.to(dtype),
                          timestep=tt["video"].expand(b, -1) * scale, audio_timestep=tt["audio"].expand(b, -1) * scale,
                          sigma=sigma["video"], audio_sigma=sigma["audio"],
                          encoder_attention_mask=mask(video_mask), audio_encoder_attention_mask=mask(audio_mask),
                          num_frames=t, height=h, width=w, fps=layout.fps,
                          audio_num_frames=layout.audio_latents, video_coords=coords["video"].expand(b, -1, -1, -1),
                          audio_coords=coords["audio"].expand(b, -1, -1, -1), use_cross_timestep=cross,
                          isolate_modalities=isolate, return_dict=False, **stg)  # fmt: skip
            return [{"video": v[i : i + 1].float(), "audio": a[i : i + 1].float()} for i in range(b)]

        def velocity(x: Latents, tt: Latents, branches: tuple[Branch, ...]) -> list[Latents]:
            """The branches in one batched call, but ISOLATED (a flag of the whole call) in one of its own."""
            joint = [br for br in branches if br is not Branch.ISOLATED]
            out = dict(zip(joint, forward(x, tt, joint, False), strict=True)) if joint else {}
            if Branch.ISOLATED in branches:
                out[Branch.ISOLATED] = forward(x, tt, [Branch.ISOLATED], True)[0]
            return [out[br] for br in branches]

        return velocity

    def decode(self, latents: dict[str, torch.Tensor], request: GenerationRequest, layout: cond.Layout,
               gen: torch.Generator) -> Clip:  # fmt: skip
        """The streams at the request's length (frames trimmed from 1 + 8k, sound resampled); a stream
        the request gives whole is not decoded (the wrapper puts the given one back)."""
        pipe, video, audio = self.pipe, None, None
        if request.video is None:
            vae = pipe.vae
            z = pipe._denormalize_latents(cond.tokens_to_video(latents["video"], layout), vae.latents_mean,
                                          vae.latents_std, vae.config.scaling_factor)  # fmt: skip
            step = None
            if vae.config.timestep_conditioning:
                step = torch.tensor([self.settings.decode_timestep], device=self.device, dtype=vae.dtype)
            frames = vae.decode(z.to(self.device, vae.dtype), step, return_dict=False)[0]
            video = cond.tensor_to_frames(frames[0].float())[: round(request.duration * request.fps)]
        if request.generate_audio and request.audio is None:
            a = pipe.audio_vae
            packed = pipe._denormalize_audio_latents(latents["audio"], a.latents_mean,
                                                     a.latents_std)  # fmt: skip
            bins = a.config.mel_bins // a.mel_compression_ratio
            # the causal audio VAE decodes L latents to 4L - 3 mel frames (the clip's last 30 ms would be
            # missing): the last latent once more gives the decoder the frames after it; those before
            # are unchanged (causal)
            packed = torch.cat([packed, packed[:, -1:]], 1)
            z = pipe._unpack_audio_latents(packed, layout.audio_latents + 1, num_mel_bins=bins)
            mel = a.decode(z.to(self.device, a.dtype), return_dict=False)[0]
            wave = pipe.vocoder(mel.to(pipe.vocoder.dtype)).float().mean(1).cpu().numpy()
            rate = pipe.vocoder.config.output_sampling_rate
            wave = media.resample_audio(wave, rate, request.sample_rate)
            samples = round(request.duration * request.sample_rate)
            audio = np.pad(wave, ((0, 0), (0, max(0, samples - wave.shape[1]))))[:, :samples].clip(-1, 1)
            audio = audio.astype(np.float32)
        if video is None and audio is None:
            video = np.zeros((0, request.height, request.width, 3), np.uint8)
        return Clip(video=video, audio=audio, fps=request.fps, sample_rate=request.sample_rate)
