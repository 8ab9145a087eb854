"""The bundled engine: this project's dual-stream transformer and autoencoders, from a folder with
`pipeline.json` and one sub-folder per component (`transformer/`, `video_ae/`, `audio_ae/`, each
`config.json` + `model.safetensors`), or the model that ships inside the package.

A distilled model folder also keeps the model it learnt from in `teacher/`: its own `pipeline.json`
and `transformer/`, the autoencoders being the outer folder's (a model folder inside another
reads the components it leaves out from there). `teacher_folder(path)` finds it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open

from openseedance import conditioning as cond
from openseedance import precision
from openseedance.audio_vae import AudioAutoencoder
from openseedance.checkpoint import config_from_dict, load_component, read_config, save_component
from openseedance.engines.base import Capabilities, EngineOutput, Laps, RunOptions
from openseedance.flow import RectifiedFlow
from openseedance.media import Clip
from openseedance.request import KINDS, REFERENCE_LIMITS, GenerationRequest, role_id
from openseedance.sampling import Latents, Progress, SamplerConfig, denoise
from openseedance.text import TextEncoder
from openseedance.transformer import AVTransformer
from openseedance.video_vae import VideoAutoencoder

BUNDLED = Path(__file__).resolve().parent.parent / "weights" / "tiny"
COMPONENTS = {"transformer": AVTransformer, "video_ae": VideoAutoencoder, "audio_ae": AudioAutoencoder}
TEACHER = "teacher"
# what the marks name the shipped models by (other folders are named by a fingerprint of their weights)
BUNDLED_IDS = {BUNDLED: "bundled:tiny", BUNDLED / TEACHER: "bundled:tiny/teacher"}


def teacher_folder(path: str | os.PathLike | None = None) -> Path:
    """The model a distilled folder (None: the bundled model) learnt from: its `teacher/` folder."""
    folder = (Path(path) if path is not None else BUNDLED) / TEACHER
    if not (folder / "pipeline.json").is_file():
        raise ValueError(f"{folder.parent} keeps no teacher (only a distilled model folder has a teacher/ folder)")
    return folder


def component_folder(folder: Path, name: str) -> Path:
    """Where a model folder's component is: its own sub-folder, or, when it leaves that out and sits
    inside another model folder (a distilled model's `teacher/`), the outer folder's."""
    own = folder / name
    if own.is_dir() or not (folder.parent / "pipeline.json").is_file():
        return own
    return folder.parent / name


@dataclass(frozen=True)
class PipelineConfig:
    """The formats the model was trained on and the sampler's defaults (`pipeline.json`)."""

    width: int = 64
    height: int = 64
    fps: float = 12.0
    sample_rate: int = 16000
    text_encoder: str = "minilm"
    steps: int = 8
    solver: str = "euler"
    guidance: float = 3.0  # text guidance for the video stream
    audio_guidance: float = 3.0  # text guidance for the audio stream
    reference_guidance: float = 1.0  # guidance towards the references (1: none beyond text guidance)
    guidance_rescale: float = 0.0  # pull the guided velocity back to the cond branch's size (0: off)
    # the sampling schedule's shift towards noise (None: the one training used for the clip's token
    # count); larger spends more of the steps at high noise, where layout and shapes are decided
    shift: float | None = None
    min_duration: float = 1.0
    max_duration: float = 15.0
    max_side: int = 512
    distilled_from: str = ""  # the model a few-step student learnt from (its id), or "" for a model trained directly


def read_pipeline_config(folder: Path) -> PipelineConfig:
    meta = folder / "pipeline.json"
    if not meta.is_file():
        raise ValueError(f"{folder} is not a model folder (no pipeline.json)")
    try:
        return config_from_dict(PipelineConfig, json.loads(meta.read_text()))
    except json.JSONDecodeError as err:
        raise ValueError(f"cannot load the model in {folder}: {err}") from None


class BundledEngine:
    def __init__(self, config: PipelineConfig, transformer: AVTransformer, video_ae: VideoAutoencoder,
                 audio_ae: AudioAutoencoder, text_encoder: TextEncoder | None = None,
                 source: str = "in memory") -> None:  # fmt: skip
        self.config = config
        self.transformer = transformer.eval()
        self.video_ae = video_ae.eval()
        self.audio_ae = audio_ae.eval()
        self._text = text_encoder
        self.source = source  # where the weights came from, recorded with every clip
        self.flow = RectifiedFlow()
        self.device = torch.device("cpu")
        self._model_id: str | None = None

    # ------------------------------------------------------------ files

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None,
                        dtype: torch.dtype = torch.float32) -> BundledEngine:  # fmt: skip
        """Load a model folder (default: the bundled model), built on the meta device and filled from
        the files; a clear error when it is missing or damaged."""
        folder = Path(path) if path is not None else BUNDLED
        config = read_pipeline_config(folder)
        try:
            parts = {name: load_component(kind, component_folder(folder, name), dtype)
                     for name, kind in COMPONENTS.items()}  # fmt: skip
        except ValueError as err:
            raise ValueError(f"cannot load the model in {folder}: {err}") from None
        except Exception as err:  # safetensors / json errors on damaged files
            raise ValueError(f"cannot load the model in {folder}: {type(err).__name__}: {err}") from None
        return cls(config, **parts, source=BUNDLED_IDS.get(folder.resolve(), str(folder)))

    @classmethod
    def untrained(cls, preset: str = "debug", config: PipelineConfig | None = None, seed: int = 0) -> BundledEngine:
        """Randomly initialised components of one preset, wired to fit each other (tests,
        benchmarks of speed, the start of training)."""
        from openseedance.audio_vae import audio_ae_config
        from openseedance.transformer import transformer_config
        from openseedance.video_vae import video_ae_config

        torch.manual_seed(seed)
        ae_preset = preset if preset in ("debug", "tiny") else "base"  # real-scale transformers, real-scale latents
        video_ae = VideoAutoencoder(video_ae_config(ae_preset))
        audio_ae = AudioAutoencoder(audio_ae_config(ae_preset))
        tcfg = replace(transformer_config(preset), video_channels=video_ae.config.latent_channels,
                       audio_channels=audio_ae.config.latent_channels, text_dim=384)  # fmt: skip
        config = config or PipelineConfig(sample_rate=audio_ae.config.sample_rate)
        return cls(config, AVTransformer(tcfg), video_ae, audio_ae)

    def save_pretrained(self, path: str | os.PathLike, dtype: torch.dtype | None = None,
                        autoencoders: bool = True) -> Path:  # fmt: skip
        """Write the model folder; `autoencoders=False` leaves them out, for a folder inside another
        model folder whose autoencoders it shares (a distilled model's `teacher/`)."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        for name in COMPONENTS if autoencoders else ("transformer",):
            save_component(getattr(self, name), folder / name, dtype)
        tmp = folder / "pipeline.json.tmp"
        tmp.write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        os.replace(tmp, folder / "pipeline.json")
        return folder

    def to(self, device: str | torch.device) -> BundledEngine:
        """Run the transformer and the autoencoders on `device` ("cuda", "cuda:1", "cpu"); the text
        encoder stays on the CPU. Noise is drawn on the CPU whatever the device, so a seed gives the
        same starting point everywhere (the clips then differ only by the device's arithmetic)."""
        self.device = torch.device(device)
        for name in COMPONENTS:
            getattr(self, name).to(self.device)
        return self

    def use_decoder(self, autoencoder: VideoAutoencoder | AudioAutoencoder) -> None:
        """Decode with `autoencoder` from now on (e.g. one whose decoder was fine-tuned with
        `train video-ae --decoder-only`). Its encoder and latent statistics must be this model's
        (compared in bfloat16, the precision bundled weights are stored in), since the transformer
        was trained on exactly those latents; a ValueError says what differs. A video decoder may
        have its own layout (`decoder_channels`, e.g. the `tiny-thin` preset's narrower one)."""
        attr = "video_ae" if isinstance(autoencoder, VideoAutoencoder) else "audio_ae"
        current: torch.nn.Module = getattr(self, attr)
        if _encoder_layout(autoencoder.config) != _encoder_layout(current.config):
            raise ValueError(f"the new {attr} has another encoder configuration than the model's")
        mine, theirs = current.state_dict(), autoencoder.state_dict()
        for name in (k for k in mine if k.startswith(("encoder.", "latent_"))):
            if not torch.equal(theirs[name].cpu().bfloat16(), mine[name].cpu().bfloat16()):
                raise ValueError(f"the new {attr} encodes differently ({name}): the transformer was trained on "
                                 "this model's latents, so only a decoder trained on them can replace it")  # fmt: skip
        replacement = type(current)(autoencoder.config).to(device=next(current.parameters()).device)
        encoder = {k: v for k, v in mine.items() if not k.startswith("decoder.")}
        replacement.load_state_dict({**encoder, **{k: v for k, v in theirs.items() if k.startswith("decoder.")}})
        setattr(self, attr, replacement.to(dtype=next(current.parameters()).dtype).eval())
        self._model_id = None

    @property
    def text_encoder(self) -> TextEncoder:
        if self._text is None:
            self._text = TextEncoder.load(self.config.text_encoder)
        return self._text

    # ------------------------------------------------------------ what it can do

    @property
    def capabilities(self) -> Capabilities:
        learnt = {kind: bool(self.transformer.roles.weight[role_id(kind, 0)].any()) for kind in KINDS}
        return card(self.config, self.transformer.config.patch, self.video_ae.config, self.audio_ae.config.sample_rate,
                    learnt)  # fmt: skip

    def knows_references(self, kind: str) -> bool:
        """Whether this model learnt references of `kind` ("image", "video" or "audio")."""
        return self.capabilities.references[kind] > 0

    @property
    def model_id(self) -> str:
        """What the marks name as the model: "bundled:tiny" (or "bundled:tiny/teacher"), or a
        fingerprint of the weights (the same after a save and load, whatever the folder)."""
        if self._model_id is None:
            self._model_id = self.source if self.source in BUNDLED_IDS.values() else weights_id(
                getattr(self, name).state_dict() for name in COMPONENTS)  # fmt: skip
        return self._model_id

    def check(self, request: GenerationRequest) -> None:
        self.capabilities.check(request)

    def sampler(self, options: RunOptions) -> SamplerConfig:
        """The model's sampler defaults, with the options' overrides."""
        c, o = self.config, options

        def pick(value: Any, default: Any) -> Any:
            return default if value is None else value

        return SamplerConfig(steps=pick(o.steps, c.steps), solver=pick(o.solver, c.solver),
                             guidance={"video": pick(o.guidance, c.guidance),
                                       "audio": pick(o.audio_guidance, c.audio_guidance)},
                             reference_guidance=pick(o.reference_guidance, c.reference_guidance),
                             rescale=pick(o.guidance_rescale, c.guidance_rescale),
                             shift=pick(o.shift, c.shift))  # fmt: skip

    # ------------------------------------------------------------ generation

    def layout(self, request: GenerationRequest) -> cond.Layout:
        f = self.video_ae.config.temporal_factor
        grid = self.video_ae.latent_shape(cond.coded_frames(request.duration, request.fps, f), request.height,
                                          request.width)  # fmt: skip
        samples = round(request.duration * request.sample_rate)
        return cond.Layout(grid, self.transformer.config.patch, request.fps, f,
                           -(-samples // self.audio_ae.config.hop), self.audio_ae.config.latent_rate)  # fmt: skip

    def encoders(self, bf16: bool = False) -> cond.Encoders:
        """What `cond.prepare` needs of this model; with `bf16` the video encoder runs under bfloat16
        autocast like the decoder (latents within 0.5% of their spread of float32's, 4-5x faster on a
        CPU that multiplies bfloat16 natively; the sound's encoder stays in float32)."""

        def video(frames: np.ndarray, chunk: int | None) -> torch.Tensor:
            x = cond.frames_to_tensor(frames)[None].to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
                return self.video_ae.encode(x, chunk).float().cpu()

        def audio(track: np.ndarray) -> torch.Tensor:
            wave = torch.from_numpy(np.ascontiguousarray(track))[None].to(self.device)
            return self.audio_ae.encode(wave)[:, 0].cpu()

        tc = self.transformer.config
        channels = {"video": tc.video_token_channels, "audio": tc.audio_channels}
        return cond.Encoders(self.text_encoder, video, audio, self.layout, self.audio_ae.config.hop, channels)

    @torch.no_grad()
    def generate(self, request: GenerationRequest, options: RunOptions | None = None,
                 progress: bool | Progress = False) -> EngineOutput:  # fmt: skip
        options = options or RunOptions()
        lap = Laps(self.device)

        sampler = self.sampler(options)
        arithmetic = precision.choose(self.device, options.bf16)
        conditions = cond.prepare(request, self.encoders(arithmetic.bf16), per_shot=options.per_shot)
        if not conditions.has_references:  # nothing for reference guidance to act on
            sampler = replace(sampler, reference_guidance=1.0)
        lap("encode")
        gen = torch.Generator().manual_seed(request.seed)
        noise = {s: torch.randn(x.shape, generator=gen) for s, x in conditions.clean.items()}
        total = sum(conditions.targets.values())
        shift = sampler.shift if sampler.shift is not None else self.flow.shift(total)
        latents = self.sample(conditions, noise, sampler, shift=shift, bf16=arithmetic.bf16, progress=progress)
        lap("sample")
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=arithmetic.bf16):  # the video decoder
            clip = self._decode({s: x[:, : conditions.targets[s]] for s, x in latents.items()}, conditions, request)
        lap("decode")
        settings: dict[str, Any] = {"steps": sampler.steps, "solver": sampler.solver, "guidance": sampler.guidance,
                                    "shift": round(shift, 4), "model": self.source, "precision": arithmetic.name,
                                    "precision_chosen": arithmetic.why}  # fmt: skip
        if conditions.has_references:
            settings["reference_guidance"] = sampler.reference_guidance
        if sampler.rescale:
            settings["guidance_rescale"] = sampler.rescale
        return EngineOutput(clip, settings, total, lap.seconds)

    @torch.no_grad()
    def sample(self, conditions: cond.Conditions, noise: dict[str, torch.Tensor], sampler: SamplerConfig, *,
               shift: float, bf16: bool = False, progress: bool | Progress = False) -> Latents:  # fmt: skip
        """One clip's latents (every token, references included) denoised from `noise` under its
        conditions with the sampler's guidance: what `generate` decodes, and what a student learns."""
        on = conditions.to(self.device)

        def velocity(x: dict[str, torch.Tensor], t: dict[str, torch.Tensor], branches: tuple) -> list:
            streams, text = on.branches(x, t, branches)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
                v = self.transformer(streams, text)
            return [{s: v[s][i : i + 1].float() for s in v} for i in range(len(branches))]

        noise = {s: n.to(self.device) for s, n in noise.items()}
        return denoise(velocity, noise, on.clean, on.keep, config=sampler, shift=shift, progress=progress)

    def _decode(self, latents: dict[str, torch.Tensor], conditions: cond.Conditions,
                request: GenerationRequest) -> Clip:  # fmt: skip
        """The generated streams at the request's length; a stream the request gives whole is not
        decoded (the wrapper puts the given one back)."""
        layout = self.layout(request)
        video = audio = None
        if request.video is None:
            # 16 latents (64 frames) at a time: a clip of up to 65 frames in one piece (half the time of
            # four-latent chunks, measured), memory still bounded for long clips
            video = self.video_ae.decode(cond.tokens_to_video(latents["video"], layout), chunk_latents=16)
            video = cond.tensor_to_frames(video[0])[: round(request.duration * request.fps)]
        if request.generate_audio and request.audio is None:
            samples = round(request.duration * request.sample_rate)
            with torch.autocast(self.device.type, enabled=False):  # float32 samples: 0.08 s of a 4 s clip
                wave = self.audio_ae.decode(cond.tokens_to_audio(latents["audio"]).float()[:, None], length=samples)
            audio = wave[0].float().clamp(-1, 1).cpu().numpy()
        if video is None and audio is None:  # video -> audio without audio: nothing was generated
            video = np.zeros((0, request.height, request.width, 3), np.uint8)
        return Clip(video=video, audio=audio, fps=request.fps, sample_rate=request.sample_rate)


def _encoder_layout(config: Any) -> object:
    """What of an autoencoder's configuration fixes its latents: the encoder layout where the
    config tells it apart (video), else the whole configuration."""
    return config.encoder_layout() if hasattr(config, "encoder_layout") else config


def card(config: PipelineConfig, patch: tuple[int, int, int], video_ae: Any, sample_rate: int,
         learnt: dict[str, bool]) -> Capabilities:  # fmt: skip
    """The bundled engine's capabilities from its configs and which reference kinds it learnt."""
    refusals = {kind: f"this model was trained without reference {kind}s (@{kind}1...): it cannot use them"
                + ("" if kind == "video" else "; give the look or voice in words") for kind in KINDS}  # fmt: skip
    return Capabilities(engine="bundled",
                        references={k: REFERENCE_LIMITS[k] if learnt[k] else 0 for k in KINDS},
                        refusals={k: v for k, v in refusals.items() if not learnt[k]},
                        width=config.width, height=config.height, fps=config.fps,
                        size_step=video_ae.spatial_factor * max(patch[1:]), max_side=config.max_side,
                        min_duration=config.min_duration, max_duration=config.max_duration, sample_rate=sample_rate,
                        frames_per_latent=video_ae.temporal_factor, steps=config.steps)  # fmt: skip


def read_card(folder: str | os.PathLike | None) -> Capabilities:
    """A model folder's capabilities from its configs and the few weights that say which reference
    kinds it learnt, without building the model."""
    from openseedance.audio_vae import AudioAEConfig
    from openseedance.transformer import AVTransformerConfig
    from openseedance.video_vae import VideoAEConfig

    path = Path(folder) if folder is not None else BUNDLED
    config = read_pipeline_config(path)
    transformer = read_config(path / "transformer", AVTransformerConfig)
    video_ae = read_config(component_folder(path, "video_ae"), VideoAEConfig)
    audio_ae = read_config(component_folder(path, "audio_ae"), AudioAEConfig)
    try:
        with safe_open(str(path / "transformer" / "model.safetensors"), "pt") as weights:
            roles = weights.get_tensor("roles.weight") if "roles.weight" in weights.keys() else None  # noqa: SIM118
    except Exception as err:
        raise ValueError(f"cannot read the model in {path}: {type(err).__name__}: {err}") from None
    learnt = {kind: roles is not None and bool(roles[role_id(kind, 0)].any()) for kind in KINDS}
    return card(config, transformer.patch, video_ae, audio_ae.sample_rate, learnt)


def weights_id(state_dicts: Any) -> str:
    """A fingerprint of weights: a sample of every tensor, with its name and shape."""
    digest = hashlib.sha256()
    for state in state_dicts:
        for name, tensor in sorted(state.items()):
            flat = tensor.detach().flatten()
            sample = flat[:: max(1, flat.numel() // 4096)].float().cpu().numpy()
            digest.update(f"{name}{tuple(tensor.shape)}".encode() + sample.tobytes())
    return f"weights:{digest.hexdigest()[:16]}"
