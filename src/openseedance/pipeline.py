"""GenerationRequest -> GeneratedClip: text and conditions to tokens, the denoise loop, decoders.

    pipe = Pipeline.from_pretrained()              # the bundled default model
    clip = pipe(GenerationRequest("a red circle jumps and says hello"))
    clip.write("out.mp4")

A pipeline folder holds one sub-folder per component (`transformer/`, `video_ae/`, `audio_ae/`,
each `config.json` + `model.safetensors`) and `pipeline.json` (formats, text encoder, sampler
defaults).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt

from openseedance import conditioning as cond
from openseedance import media, provenance
from openseedance.audio_vae import AudioAutoencoder
from openseedance.checkpoint import config_from_dict, load_component, save_component
from openseedance.flow import RectifiedFlow
from openseedance.media import Clip
from openseedance.request import GenerationRequest, canonical_prompt, shot_cuts, split_shots, swapped_citations
from openseedance.sampling import Progress, SamplerConfig, denoise
from openseedance.text import TextEncoder, join_parts, pad_shots, pad_states
from openseedance.train.data import frames_to_tensor, hold_last, tensor_to_frames
from openseedance.transformer import AVTransformer, Text, Tokens
from openseedance.video_vae import VideoAutoencoder

log = logging.getLogger(__name__)

BUNDLED = Path(__file__).resolve().parent / "weights" / "tiny"
SUPPORTED_TASKS = ("t2av", "i2av", "a2v", "v2a", "extend", "edit", "references")


@dataclass(frozen=True)
class PipelineConfig:
    """The formats the model was trained on and the sampler's defaults."""

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
    binding_guidance: float = 0.0  # guidance away from the prompt with its citations swapped (0: off)
    # the sampling schedule's shift towards noise (None: the one training used for the clip's token
    # count); larger spends more of the steps at high noise, where layout and shapes are decided
    shift: float | None = None
    min_duration: float = 1.0
    max_duration: float = 15.0
    max_side: int = 512


@dataclass
class GeneratedClip:
    clip: Clip
    request: dict[str, Any]  # the resolved request: every setting that made this clip
    seconds: dict[str, float] = field(default_factory=dict)  # time per stage

    def write(self, path: str | os.PathLike) -> Path:
        """H.264 + AAC mp4; the resolved request is stored in the file's metadata, and a signed
        provenance manifest is added (C2PA, or signed metadata where C2PA cannot sign)."""
        path = media.write_video(path, self.clip, metadata={"openseedance": json.dumps(self.request)})
        provenance.sign_file(path, provenance.claims(self.request))
        return path


class Pipeline:
    def __init__(self, config: PipelineConfig, transformer: AVTransformer, video_ae: VideoAutoencoder,
                 audio_ae: AudioAutoencoder, text_encoder: TextEncoder | None = None) -> None:  # fmt: skip
        self.config = config
        self.transformer = transformer.eval()
        self.video_ae = video_ae.eval()
        self.audio_ae = audio_ae.eval()
        self._text = text_encoder
        self.flow = RectifiedFlow()
        self.bf16 = False  # bfloat16 autocast for the transformer
        self.device = torch.device("cpu")  # where the transformer and the autoencoders run (`to`)
        self.source = "in memory"  # where the weights came from, recorded with every clip
        self.mark = True  # invisible video and audio marks on every clip (off only to measure them)
        self.allow_faces = False  # accept references that show real human faces
        self.per_shot = True  # a "[shot N]" prompt part by part, each shot reading its own (False: one text)
        self._model_id: str | None = None

    # ------------------------------------------------------------ files

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, dtype: torch.dtype = torch.float32,
                        allow_faces: bool = False) -> Pipeline:  # fmt: skip
        """Load a pipeline folder (default: the bundled model); a clear error when it is missing
        or damaged. `allow_faces` accepts references that show real human faces."""
        folder = Path(path) if path is not None else BUNDLED
        meta = folder / "pipeline.json"
        if not meta.is_file():
            raise ValueError(f"{folder} is not a model folder (no pipeline.json)")
        try:
            config = config_from_dict(PipelineConfig, json.loads(meta.read_text()))
            transformer = load_component(AVTransformer, folder / "transformer", dtype)
            video_ae = load_component(VideoAutoencoder, folder / "video_ae", dtype)
            audio_ae = load_component(AudioAutoencoder, folder / "audio_ae", dtype)
        except ValueError as err:
            raise ValueError(f"cannot load the model in {folder}: {err}") from None
        except Exception as err:  # safetensors / json errors on damaged files
            raise ValueError(f"cannot load the model in {folder}: {type(err).__name__}: {err}") from None
        pipe = cls(config, transformer, video_ae, audio_ae)
        pipe.source = "bundled:tiny" if path is None else str(folder)
        pipe.allow_faces = allow_faces
        return pipe

    @classmethod
    def untrained(cls, preset: str = "debug", config: PipelineConfig | None = None, seed: int = 0) -> Pipeline:
        """Randomly initialised components of one preset, wired to fit each other (tests,
        benchmarks of speed, the start of training)."""
        from dataclasses import replace

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

    def save_pretrained(self, path: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        save_component(self.transformer, folder / "transformer", dtype)
        save_component(self.video_ae, folder / "video_ae", dtype)
        save_component(self.audio_ae, folder / "audio_ae", dtype)
        tmp = folder / "pipeline.json.tmp"
        tmp.write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        os.replace(tmp, folder / "pipeline.json")
        return folder

    def to(self, device: str | torch.device) -> Pipeline:
        """Run the transformer and the autoencoders on `device` ("cuda", "cuda:1", "cpu"); the text
        encoder stays on the CPU. Noise is drawn on the CPU whatever the device, so a seed gives the
        same starting point everywhere (the clips then differ only by the device's arithmetic)."""
        self.device = torch.device(device)
        for part in (self.transformer, self.video_ae, self.audio_ae):
            part.to(self.device)
        return self

    def sampler(self, steps: int | None = None, solver: str | None = None, guidance: float | None = None,
                audio_guidance: float | None = None, reference_guidance: float | None = None,
                rescale: float | None = None, binding: float | None = None,
                shift: float | None = None) -> SamplerConfig:
        """The model's sampler defaults, with any of them overridden (None keeps the default)."""
        c = self.config

        def pick(value: Any, default: Any) -> Any:
            return default if value is None else value

        return SamplerConfig(pick(steps, c.steps), pick(solver, c.solver),
                             {"video": pick(guidance, c.guidance), "audio": pick(audio_guidance, c.audio_guidance)},
                             reference_guidance=pick(reference_guidance, c.reference_guidance),
                             rescale=pick(rescale, c.guidance_rescale),
                             binding=pick(binding, c.binding_guidance), shift=pick(shift, c.shift))  # fmt: skip

    def use_decoder(self, autoencoder: VideoAutoencoder | AudioAutoencoder) -> None:
        """Decode with `autoencoder` from now on (e.g. one whose decoder was fine-tuned with
        `train video-ae --decoder-only`). Its encoder and latent statistics must be this model's
        (compared in bfloat16, the precision bundled weights are stored in), since the transformer
        was trained on exactly those latents; a ValueError says what differs."""
        attr = "video_ae" if isinstance(autoencoder, VideoAutoencoder) else "audio_ae"
        current: torch.nn.Module = getattr(self, attr)
        if autoencoder.config != current.config:
            raise ValueError(f"the new {attr} has another configuration than the model's")
        mine, theirs = current.state_dict(), autoencoder.state_dict()
        frozen = [k for k in mine if k.startswith(("encoder.", "latent_"))]
        for name in frozen:
            if not torch.equal(theirs[name].cpu().bfloat16(), mine[name].cpu().bfloat16()):
                raise ValueError(f"the new {attr} encodes differently ({name}): the transformer was trained on "
                                 "this model's latents, so only a decoder trained on them can replace it")  # fmt: skip
        replacement = type(current)(current.config).to(device=next(current.parameters()).device)
        replacement.load_state_dict({**mine, **{k: v for k, v in theirs.items() if k.startswith("decoder.")}})
        setattr(self, attr, replacement.to(dtype=next(current.parameters()).dtype).eval())
        self._model_id = None

    @property
    def text_encoder(self) -> TextEncoder:
        if self._text is None:
            self._text = TextEncoder.load(self.config.text_encoder)
        return self._text

    # ------------------------------------------------------------ generation

    def check(self, request: GenerationRequest) -> None:
        """Raise ValueError for what this model cannot do, and provenance.FaceError for a reference
        that shows a real face (unless `allow_faces`), before any work."""
        c = self.config
        if not request.prompt.strip() and request.task == "t2av":
            raise ValueError("the prompt is empty: describe the clip to generate")
        if not c.min_duration <= request.duration <= c.max_duration:
            raise ValueError(f"duration must be {c.min_duration:g}-{c.max_duration:g} s, got {request.duration:g}")
        step = self.video_ae.config.spatial_factor * max(self.transformer.config.patch[1:])
        for name, v in (("width", request.width), ("height", request.height)):
            if v % step or not step <= v <= c.max_side:
                raise ValueError(f"{name} must be a multiple of {step} between {step} and {c.max_side}, got {v}")
        if not self.allow_faces:
            provenance.check_references(request)
        if request.task not in SUPPORTED_TASKS:
            raise ValueError(f"this model does not do {request.task!r} requests yet; it does {SUPPORTED_TASKS}")
        for kind in ("image", "video", "audio"):
            if request.reference_counts[kind] and not self.knows_references(kind):
                raise ValueError(f"this model was trained without reference {kind}s (@{kind}1...): it cannot use "
                                 "them" + ("" if kind == "video" else "; give the look or voice in words"))  # fmt: skip
        if request.source is not None:
            self._check_source(request)

    def knows_references(self, kind: str) -> bool:
        """Whether this model learnt references of `kind` ("image", "video" or "audio"): their role
        embeddings are still zero (as initialised) in a model never trained with them."""
        from openseedance.transformer import role_id

        return bool(self.transformer.roles.weight[role_id(kind, 0)].any())

    def _check_source(self, request: GenerationRequest) -> None:
        src = request.source
        length = len(src.video) / src.fps
        if request.task == "extend":
            room = request.duration - length
            group = self.video_ae.config.temporal_factor / request.fps
            if room < group:
                raise ValueError(f"the clip to extend is {length:.2f} s: ask for a duration of at least "
                                 f"{length + group:.2f} s (the whole clip, extension included)")  # fmt: skip
        else:
            a, b = request.edit_window
            if b > length + 1e-6 or b - a > request.duration:
                raise ValueError(f"the edit window {a:g}:{b:g} s must lie within the {length:.2f} s clip")

    def layout(self, request: GenerationRequest) -> cond.Layout:
        f = self.video_ae.config.temporal_factor
        frames = round(request.duration * request.fps)
        coded = 1 + f * math.ceil(max(frames - 1, 0) / f)
        grid = self.video_ae.latent_shape(coded, request.height, request.width)
        samples = round(request.duration * request.sample_rate)
        return cond.Layout(grid, self.transformer.config.patch, request.fps, f,
                           math.ceil(samples / self.audio_ae.config.hop), self.audio_ae.config.latent_rate)  # fmt: skip

    @torch.no_grad()
    def __call__(self, request: GenerationRequest, sampler: SamplerConfig | None = None,
                 progress: bool | Progress = False, job_id: str | None = None) -> GeneratedClip:  # fmt: skip
        """Generate one clip. Its marks carry the model id and `job_id`; without one, an id derived from
        the request, so that the same request still gives the same clip."""
        self.check(request)
        if request.sample_rate != self.audio_ae.config.sample_rate:
            raise ValueError(f"this model makes {self.audio_ae.config.sample_rate} Hz audio, got {request.sample_rate}")
        sampler = sampler or self.sampler()
        seconds: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            if self.device.type == "cuda":  # the stage's kernels have finished, not just been queued
                torch.cuda.synchronize(self.device)
            now = time.perf_counter()
            seconds[name] = now - clock
            clock = now

        layout = self.layout(request)
        text, cuts = self._prompt_text(request, swap=sampler.binding > 0)
        if text.mask.shape[0] < 3:  # no citations to swap: nothing for binding guidance to act on
            sampler = replace(sampler, binding=0.0)
        lap("text")
        given = self._given(request) if _has_given_frames(request) else None
        clean, keep = self._conditions(request, layout, given)
        pos = {"video": layout.video_positions()[None], "audio": layout.audio_positions()[None]}
        targets = {s: x.shape[1] for s, x in clean.items()}
        total = sum(targets.values())
        shot = {s: cond.token_shots(pos[s][0, :, 0], cuts)[None] for s in targets}
        valid = role = None
        if request.images or request.videos or request.audios:  # reference token groups after the clip's, held clean
            refs = [self._references(request, layout)]
            clean, keep, pos, shot, valid, role = cond.with_references(clean, keep, pos, shot, refs)
        lap("encode")
        gen = torch.Generator().manual_seed(request.seed)
        noise = {s: torch.randn(x.shape, generator=gen) for s, x in clean.items()}
        shift = sampler.shift if sampler.shift is not None else self.flow.shift(total)

        bare = None
        if valid is None:  # nothing for reference guidance to act on
            sampler = replace(sampler, reference_guidance=1.0)
        else:  # the "bare" branch hides the reference tokens: as if none were given
            bare = {s: valid[s] & (torch.arange(v.shape[1]) < targets[s]) for s, v in valid.items()}
        clean, keep, pos, shot, valid, role, bare, noise = (
            self._on_device(d) for d in (clean, keep, pos, shot, valid, role, bare, noise))  # fmt: skip
        text = text.to(self.device)

        def velocity(x: dict[str, torch.Tensor], t: dict[str, torch.Tensor], branches: tuple[str, ...]):
            n = len(branches)
            rows = [{"cond": 0, "swapped": 2}.get(b, 1) for b in branches]
            seen = {s: torch.cat([bare[s] if b == "bare" else valid[s] for b in branches]) for s in valid or {}}
            streams = {s: Tokens(x[s].repeat(n, 1, 1), t[s].repeat(n, 1), pos[s].expand(n, -1, -1),
                                 seen[s] if seen else None, role[s].expand(n, -1) if role else None,
                                 shot[s].expand(n, -1)) for s in x}  # fmt: skip
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                v = self.transformer(streams, text.rows(rows))
            return [{s: v[s][i : i + 1].float() for s in v} for i in range(n)]

        latents = denoise(velocity, noise, clean, keep, sampler, shift, progress)
        latents = {s: x[:, : targets[s]] for s, x in latents.items()}  # the clip, without its references
        lap("sample")
        clip = self._decode(latents, layout, request, given)
        lap("decode")
        resolved = {f.name: getattr(request, f.name) for f in fields(request)}
        resolved = {k: v for k, v in resolved.items() if not isinstance(v, np.ndarray | tuple | Clip)}
        if request.edit_window is not None:
            resolved["edit_window"] = list(request.edit_window)
        resolved = {k: v for k, v in resolved.items() if v is not None}
        resolved.update(task=request.task, steps=sampler.steps, solver=sampler.solver, guidance=sampler.guidance,
                        shift=round(shift, 4), model=self.source)  # fmt: skip
        if valid is not None:
            resolved["reference_guidance"] = sampler.reference_guidance
        if sampler.rescale:
            resolved["guidance_rescale"] = sampler.rescale
        if sampler.binding:
            resolved["binding_guidance"] = sampler.binding
        if job_id is None:
            settings = json.dumps({**resolved, "model": self.model_id}, sort_keys=True)
            job_id = "request-" + hashlib.sha256(settings.encode()).hexdigest()[:16]
        clip, resolved["provenance"] = self._provenance(clip, request, job_id)
        lap("mark")
        return GeneratedClip(clip, resolved, seconds)

    @property
    def model_id(self) -> str:
        """What the marks name as the model: "bundled:tiny", or a fingerprint of the weights (the same
        after a save and load, whatever the folder)."""
        if self._model_id is None:
            if self.source == "bundled:tiny":
                self._model_id = self.source
            else:
                digest = hashlib.sha256()
                for part in (self.transformer, self.video_ae, self.audio_ae):
                    for name, tensor in sorted(part.state_dict().items()):
                        flat = tensor.detach().flatten()
                        sample = flat[:: max(1, flat.numel() // 4096)].float().cpu().numpy()
                        digest.update(f"{name}{tuple(tensor.shape)}".encode() + sample.tobytes())
                self._model_id = f"weights:{digest.hexdigest()[:16]}"
        return self._model_id

    def _provenance(self, clip: Clip, request: GenerationRequest, job_id: str) -> tuple[Clip, dict[str, Any]]:
        """The visible label when asked for, then the invisible marks on each generated stream (a given
        video or soundtrack is kept as it was); and what was embedded."""
        payload = provenance.Payload.make(self.model_id, job_id)
        video, audio = clip.video, clip.audio
        if request.visible_watermark:
            video = provenance.visible_mark(video)
        marked = {"video": self.mark and request.video is None, "audio": self.mark and request.audio is None}
        if marked["video"]:
            video = provenance.embed_video(video, payload)
        if marked["audio"] and audio is not None:
            audio = provenance.embed_audio(audio, clip.sample_rate, payload)
        record = {"payload": payload.hex, "model_id": self.model_id, "job_id": job_id,
                  "invisible_marks": [s for s in ("video", "audio") if marked[s] and getattr(clip, s) is not None],
                  "visible_mark": request.visible_watermark}  # fmt: skip
        return Clip(video=video, audio=audio, fps=clip.fps, sample_rate=clip.sample_rate), record

    def _on_device(self, tensors: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
        return None if tensors is None else {s: t.to(self.device) for s, t in tensors.items()}

    def _encode_video(self, frames: np.ndarray, chunk_frames: int | None = None) -> torch.Tensor:
        """uint8 frames (T, H, W, 3) -> normalised latents (1, D, t, h, w), on the CPU."""
        return self.video_ae.encode(frames_to_tensor(frames)[None].to(self.device), chunk_frames).cpu()

    def _encode_audio(self, track: np.ndarray) -> torch.Tensor:
        """A mono track (1, samples) -> normalised latents (1, C, n), on the CPU."""
        return self.audio_ae.encode(torch.from_numpy(np.ascontiguousarray(track))[None].to(self.device))[:, 0].cpu()

    def _given(self, request: GenerationRequest) -> Given:
        """What is given in pixel time: a full-length clip and, per frame and per sample, whether it
        is given. A clip to extend sits at the start (forward) or the end (backward); a clip to edit
        fills the length with its window marked to redo; a last frame fills the final latent group."""
        n, samples = round(request.duration * request.fps), round(request.duration * request.sample_rate)
        size = (request.height, request.width)
        video, frames = np.zeros((n, *size, 3), np.uint8), np.zeros(n, bool)
        audio, heard = np.zeros((1, samples), np.float32), np.zeros(samples, bool)
        if request.source is not None:
            src = request.source
            sv = media.resize_frames(media.resample_frames(src.video, src.fps, request.fps), size)[:n]
            sa = np.zeros((1, 0), np.float32) if src.audio is None else \
                _mono(media.resample_audio(src.audio, src.sample_rate, request.sample_rate))[:, :samples]  # fmt: skip
            if request.extend == "backward":
                video[n - len(sv) :], video[: n - len(sv)] = sv, sv[0]
                frames[n - len(sv) :] = True
                audio[:, samples - sa.shape[1] :] = sa
                heard[samples - sa.shape[1] :] = True
            else:  # forward, or an edit: the source from the start
                video[: len(sv)], video[len(sv) :] = sv, sv[-1]
                frames[: len(sv)] = True
                audio[:, : sa.shape[1]] = sa
                heard[: sa.shape[1]] = True
            if request.edit_window is not None:
                a, b = request.edit_window
                frames[round(a * request.fps) : round(b * request.fps)] = False
                heard[round(a * request.sample_rate) : round(b * request.sample_rate)] = False
        verbatim = frames.copy()
        if request.first_frame is not None:
            video[0], frames[0], verbatim[0] = media.resize_frames(request.first_frame[None], size)[0], True, True
        if request.last_frame is not None:
            f = self.video_ae.config.temporal_factor
            group = slice(max(1, 1 + f * ((n - 2) // f)), n)  # the frames the last latent frame codes
            video[group], frames[group] = media.resize_frames(request.last_frame[None], size)[0], True
            verbatim[-1] = True
        if request.source is None and frames.any():  # the frames between: the nearest given one, held
            known = np.flatnonzero(frames)
            nearest = known[np.abs(np.arange(n)[:, None] - known[None]).argmin(1)]
            video = video[nearest]
        return Given(video, frames, audio, heard, verbatim)

    def _conditions(self, request: GenerationRequest, layout: cond.Layout, given: Given | None):
        """Clean latents (zeros where generated) and the masks of tokens that are given."""
        task = request.task
        if task in ("extend", "edit") or request.last_frame is not None:
            return self._given_latents(given, layout)
        keep = cond.task_masks(task, layout)
        video = torch.zeros(1, layout.video_tokens, self.transformer.config.video_token_channels)
        audio = torch.zeros(1, layout.audio_latents, self.transformer.config.audio_channels)
        frames = (layout.video_grid[0] - 1) * layout.temporal_factor + 1
        if task == "i2av":
            image = media.resize_frames(request.first_frame[None], (request.height, request.width))
            z = self._encode_video(image)  # (1, D, 1, h, w)
            first = cond.video_to_tokens(z, layout.patch)
            video[:, : first.shape[1]] = first
        elif task == "v2a":
            given = hold_last(media.resize_frames(request.video, (request.height, request.width))[:frames], frames)
            video = cond.video_to_tokens(self._encode_video(given, chunk_frames=16), layout.patch)
        elif task == "a2v":
            samples = layout.audio_latents * self.audio_ae.config.hop
            track = _mono(request.audio)
            track = np.pad(track[:, :samples], ((0, 0), (0, max(0, samples - track.shape[1]))))
            audio = cond.audio_to_tokens(self._encode_audio(track))
        return {"video": video, "audio": audio}, keep

    def _prompt_text(self, request: GenerationRequest, swap: bool = False) -> tuple[Text, tuple[float, ...]]:
        """The prompt's text states (row 0) beside the empty prompt's (row 1, for guidance), and
        the cut times between shots. A multi-shot prompt is encoded part by part (global, shot 1,
        ...); its shots last as long as the prompt says, or share the clip's length equally. With
        `swap`, row 2 is the prompt with its citations turned round (`swapped_citations`, for
        binding guidance), if it has any to turn."""
        prompt = canonical_prompt(request.prompt, request.reference_counts)
        text, cuts = self._encode_prompt(prompt, request.duration)
        turned = swapped_citations(prompt, request.reference_counts) if swap else None
        if turned is None:
            return text, cuts
        return _stack_rows(text, self._encode_prompt(turned, request.duration)[0].rows([0])), cuts

    def _encode_prompt(self, prompt: str, duration: float) -> tuple[Text, tuple[float, ...]]:
        """`_prompt_text` for one canonical prompt: its rows, and its cut times."""
        whole, shots = split_shots(prompt)
        cite = self.transformer.config.cite_roles
        if not shots or not self.per_shot:
            states, mask = self.text_encoder.encode([prompt, ""])
            roles = pad_shots([self.text_encoder.citation_roles(prompt), None], states.shape[1]) if cite else None
            return Text(states, mask, role=roles), ()
        states, mask = self.text_encoder.encode([whole, *shots, ""])
        joined, parts = join_parts([states[k, mask[k]] for k in range(len(shots) + 1)])
        empty = states[-1, mask[-1]]
        padded, valid = pad_states([joined, empty])
        roles = None
        if cite:
            cites = torch.cat([self.text_encoder.citation_roles(x) for x in (whole, *shots)])
            roles = pad_shots([cites, None], padded.shape[1])
        return (Text(padded, valid, pad_shots([parts, None], padded.shape[1]), roles),
                shot_cuts(prompt, duration))  # fmt: skip

    def _references(self, request: GenerationRequest, layout: cond.Layout) -> cond.References:
        """Reference images (each resized to the clip's size and encoded as a 1-frame video), videos
        (resized and retimed to the clip's size and frame rate, encoded whole; their sound is not
        used) and voices (mono, encoded whole) as clean token groups."""
        size = (request.height, request.width)
        images = [self._encode_video(media.resize_frames(im[None], size)) for im in request.images]
        videos, f = [], self.video_ae.config.temporal_factor
        for ref in request.videos:
            frames = media.resize_frames(media.resample_frames(ref.video, ref.fps, request.fps), size)
            coded = 1 + f * ((len(frames) - 1) // f)  # whole groups of frames after the first
            videos.append(self._encode_video(frames[:coded], chunk_frames=16))
        voices = [self._encode_audio(_mono(a)) for a in request.audios]
        return cond.reference_tokens(images, voices, layout, videos)

    def _given_latents(self, given: Given, layout: cond.Layout):
        coded = (layout.video_grid[0] - 1) * layout.temporal_factor + 1
        z = self._encode_video(hold_last(given.video, coded)[:coded], chunk_frames=16)
        hop = self.audio_ae.config.hop
        track = np.pad(given.audio, ((0, 0), (0, max(0, layout.audio_latents * hop - given.audio.shape[1]))))
        audio = self._encode_audio(track[:, : layout.audio_latents * hop])
        keep = cond.given_masks(layout, given.frames, given.samples, hop)
        return {"video": cond.video_to_tokens(z, layout.patch), "audio": cond.audio_to_tokens(audio)}, keep

    def _decode(self, latents: dict[str, torch.Tensor], layout: cond.Layout, request: GenerationRequest,
                given: Given | None = None) -> Clip:  # fmt: skip
        frames = round(request.duration * request.fps)
        if request.video is not None:  # video -> audio returns the given frames untouched
            video = media.resize_frames(request.video, (request.height, request.width))[:frames]
        else:
            video = self.video_ae.decode(cond.tokens_to_video(latents["video"], layout), chunk_latents=4)
            video = tensor_to_frames(video[0])[:frames]
        audio = None
        if request.generate_audio:
            samples = round(request.duration * request.sample_rate)
            if request.audio is not None:  # audio -> video keeps the given soundtrack
                audio = _mono(request.audio)[:, :samples]
            else:
                wave = self.audio_ae.decode(cond.tokens_to_audio(latents["audio"])[:, None], length=samples)
                audio = wave[0].float().clamp(-1, 1).cpu().numpy()
        clip = Clip(video=video, audio=audio, fps=request.fps, sample_rate=request.sample_rate)
        return _composite(clip, given) if given is not None else clip


@dataclass
class Given:
    video: np.ndarray  # (F, H, W, 3) uint8: given frames, and placeholders elsewhere
    frames: np.ndarray  # (F,) bool: given
    audio: np.ndarray  # (1, S) float32
    samples: np.ndarray  # (S,) bool: given
    verbatim: np.ndarray  # (F,) bool: frames to show exactly as given (a source clip's, a first or last frame)


def _stack_rows(a: Text, b: Text) -> Text:
    """The rows of `a`, then those of `b`, padded to one length (padding hidden; a part or mark
    one of them lacks is 0 there)."""
    length = max(a.mask.shape[1], b.mask.shape[1])

    def pad(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x.new_zeros(x.shape[0], length - x.shape[1], *x.shape[2:])], 1)

    def ids(x: torch.Tensor | None, y: torch.Tensor | None) -> torch.Tensor | None:
        if x is None and y is None:
            return None
        return pad_shots([*(x if x is not None else [None] * len(a.mask)),
                          *(y if y is not None else [None] * len(b.mask))], length)  # fmt: skip

    return Text(torch.cat([pad(a.states), pad(b.states)]), torch.cat([pad(a.mask), pad(b.mask)]),
                ids(a.shot, b.shot), ids(a.role, b.role))


def _has_given_frames(request: GenerationRequest) -> bool:
    """Frames to place on the clip's timeline and show as given: a clip to extend or edit, a first or
    last frame (not when the whole video is given, as in video -> audio)."""
    framed = request.source is not None or request.first_frame is not None or request.last_frame is not None
    return framed and request.video is None


def _composite(clip: Clip, given: Given, fade_frames: int = 2, fade_seconds: float = 0.02) -> Clip:
    """The given frames (of a clip to extend or edit, a first or last frame) and sound, exactly as
    given, blended into the generated parts over a short fade (so a seam neither jumps nor clicks)."""

    def weights(mask: np.ndarray, fade: float) -> np.ndarray:
        if mask.all() or not mask.any():
            return mask.astype(np.float32)
        distance = distance_transform_edt(~mask)
        return np.clip(1.0 - distance / (fade + 1.0), 0.0, 1.0).astype(np.float32)

    w = weights(given.verbatim, fade_frames)[:, None, None, None]
    video = (w * given.video + (1 - w) * clip.video.astype(np.float32)).round().astype(np.uint8)
    audio = clip.audio
    if audio is not None:
        a = weights(given.samples, fade_seconds * clip.sample_rate)[None]
        audio = (a * given.audio + (1 - a) * audio).astype(np.float32)
    return Clip(video=video, audio=audio, fps=clip.fps, sample_rate=clip.sample_rate)


def _mono(track: np.ndarray) -> np.ndarray:
    """(S,) or (C, S) -> (1, S) float32, channels averaged."""
    track = np.asarray(track, dtype=np.float32)
    return track.mean(0, keepdims=True) if track.ndim == 2 else track[None]


def resolve_size(config: PipelineConfig, ratio: str | None, step: int = 8) -> tuple[int, int]:
    """(width, height) with the model's pixel count at aspect `ratio` ("16:9", "1:1", ...),
    rounded to multiples of `step`."""
    if ratio is None:
        return config.width, config.height
    try:
        a, b = (float(x) for x in ratio.split(":"))
        if not (a > 0 and b > 0):
            raise ValueError
    except ValueError:
        raise ValueError(f"ratio must look like 16:9, got {ratio!r}") from None
    area = config.width * config.height
    width = math.sqrt(area * a / b)
    return max(step, round(width / step) * step), max(step, round(area / width / step) * step)


def as_generator(pipe: Pipeline, sampler: SamplerConfig | None = None):
    """A `GenerationRequest -> Clip` callable (what stage-bench runs)."""

    def generate(request: GenerationRequest) -> Clip:
        return pipe(request, sampler).clip

    return generate
