"""Latent cache for training the generator: clips encoded once by the frozen autoencoders and the
text encoder, stored in shards.

A shard holds `clips_per_shard` clips: video latents (n, D, T, H, W), audio latents (n, D, S), and
for each clip a few caption wordings with their text states. Stage shards are a pure function of
their index (scene seeds from TRAIN_SEED_BASE), so several processes can fill one cache at once;
a folder source (mp4 files, each with a caption in a .txt file of the same name) is split into
shards in sorted order. A cache records which autoencoders made it and refuses others.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from openseedance import media
from openseedance.audio_vae import AudioAutoencoder
from openseedance.conditioning import frames_to_tensor, hold_last
from openseedance.stage.captions import caption
from openseedance.stage.render import RenderConfig, portrait, render, voice_sample
from openseedance.stage.scene import Scene, motion_twin, sample_scene
from openseedance.text import TextEncoder
from openseedance.train.data import TRAIN_SEED_BASE
from openseedance.video_vae import VideoAutoencoder

log = logging.getLogger(__name__)

REFERENCE_SECONDS = 2.0  # length of the voice samples the generator learns references from


@dataclass(frozen=True)
class CacheSpec:
    source: str = "stage"
    clips: int = 1024
    clips_per_shard: int = 64
    duration: float = 4.0
    width: int = 64
    height: int = 64
    fps: float = 12.0
    sample_rate: int = 16000
    wordings: int = 4  # caption variants per Stage clip

    @property
    def shards(self) -> int:
        return math.ceil(self.clips / self.clips_per_shard)

    def frames(self, temporal_factor: int) -> int:
        """Frames encoded per clip: the clip's frames rounded up to 1 + k * factor."""
        n = round(self.duration * self.fps)
        return 1 + temporal_factor * math.ceil((n - 1) / temporal_factor)


def component_hash(model: torch.nn.Module) -> str:
    """A fingerprint of what makes an autoencoder's latents: every weight and statistic but the
    decoder's (a decoder trained again on the frozen encoder keeps a cache valid)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if name.startswith("decoder."):
            continue
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


class LatentCache:
    def __init__(self, folder: str | os.PathLike, spec: CacheSpec, video_ae: VideoAutoencoder,
                 audio_ae: AudioAutoencoder, text: TextEncoder) -> None:  # fmt: skip
        self.folder = Path(folder)
        if spec.source != "stage":
            spec = replace(spec, clips=min(spec.clips, len(_folder_items(spec.source))))
        self.spec = spec
        # frozen, as the text encoder is: an encode that kept its graph would hold a shard's worth of it
        self.video_ae, self.audio_ae = video_ae.eval().requires_grad_(False), audio_ae.eval().requires_grad_(False)
        self.text = text
        self.identity = {"spec": asdict(spec), "video_ae": component_hash(video_ae),
                         "audio_ae": component_hash(audio_ae), "text": text.name}  # fmt: skip
        self.folder.mkdir(parents=True, exist_ok=True)
        meta = self.folder / "cache.json"
        if meta.is_file():
            if json.loads(meta.read_text()) != self.identity:
                raise ValueError(f"latent cache {self.folder} was made with other data or autoencoders; "
                                 "delete it or choose another folder")  # fmt: skip
        else:  # several processes may open a new cache at once: none may read a half-written file
            tmp = meta.with_name(f"cache.json.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.identity, indent=1))
            os.replace(tmp, meta)
        self._shards: dict[int, dict] = {}

    def shard_path(self, index: int) -> Path:
        return self.folder / f"shard-{index:05d}.pt"

    def shard(self, index: int) -> dict:
        if index not in self._shards:
            path = self.shard_path(index)
            if not path.is_file():
                self.build(index)
            self._shards[index] = torch.load(path, weights_only=True)
        return self._shards[index]

    def build(self, index: int) -> Path:
        """Encode shard `index` and write it atomically (a killed build leaves no half shard)."""
        path = self.shard_path(index)
        if path.is_file():
            return path
        items = [self._clip(i) for i in self._clips(index)]
        shard = {"video": torch.stack([it[0] for it in items]), "audio": torch.stack([it[1] for it in items]),
                 "prompts": [it[2] for it in items], "text": [it[3] for it in items]}  # fmt: skip
        return self._write(shard, path, len(items))

    def _clips(self, index: int) -> range:
        first = index * self.spec.clips_per_shard
        return range(first, min(first + self.spec.clips_per_shard, self.spec.clips))

    @staticmethod
    def _write(data: object, path: Path, clips: int) -> Path:
        """Save under a temporary name (one per process: several may build at once), then rename."""
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(data, tmp)
        os.replace(tmp, path)
        log.info("latent cache: wrote %s (%d clips)", path.name, clips)
        return path

    def _stage_extra(self, name: str, index: int, make: Callable[[int], object], refusal: str) -> list:
        """Per-clip extras of Stage shard `index` (`make(clip)` for each), built on first use and
        kept in `NAME-NNNNN.pt` beside the shard; other data is refused with `refusal`."""
        if self.spec.source != "stage":
            raise ValueError(refusal)
        key = (name, index)
        if key not in self._shards:
            path = self.folder / f"{name}-{index:05d}.pt"
            if not path.is_file():
                self._write([make(i) for i in self._clips(index)], path, len(self._clips(index)))
            self._shards[key] = torch.load(path, weights_only=True)
        return self._shards[key]

    def references(self, index: int) -> list[dict]:
        """Reference latents for the Stage clips of shard `index` (`refs-NNNNN.pt`): per clip, each
        character's portrait (n, D, 1, H, W) and a sample of its voice (n, D, S), and the captions
        that name the characters by them (`@image1`, `@audio1`)."""
        return self._stage_extra("refs", index, self._references,
                                 "reference training needs Stage data (a folder of clips has no references)")

    def shots(self, index: int) -> list[dict | None]:
        """Per-shot captions for the Stage clips of shard `index` (`shots-NNNNN.pt`): per clip, None
        for a single shot, else the cut times between shots and the caption's parts (global, shot 1,
        shot 2, ...) as text states, in words ("plain") and naming characters by their references
        ("cited")."""
        return self._stage_extra("shots", index, self._shots, "per-shot captions need Stage data")

    def motion(self, index: int) -> list[dict]:
        """Motion references for the Stage clips of shard `index` (`motion-NNNNN.pt`): per clip, the
        latents of its motion twin (the same moves, hops, words and camera, with other looks, voices
        and places; (D, T, H, W)) and captions that leave the moves to it (`@video1`)."""
        return self._stage_extra("motion", index, self._motion,
                                 "motion-reference training needs Stage data (a folder of clips has no twins)")

    def _motion(self, i: int) -> dict:
        spec = self.spec
        scene = sample_scene(TRAIN_SEED_BASE + i, duration=spec.duration)
        twin = render(motion_twin(scene, i), self._render_config).clip
        return {"video": self._video_latents(twin.video), "text": self._text_states(motion_prompts(scene))}

    def _shots(self, i: int) -> dict | None:
        scene = sample_scene(TRAIN_SEED_BASE + i, duration=self.spec.duration)
        if len(scene.shots) < 2:
            return None
        out: dict = {"cuts": torch.tensor([s.start for s in scene.shots[1:]], dtype=torch.float32)}
        for name, cited in (("plain", False), ("cited", True)):
            out[name] = self._text_states(shot_prompts(scene, cited))
        return out

    def _references(self, i: int) -> dict:
        spec = self.spec
        scene = sample_scene(TRAIN_SEED_BASE + i, duration=spec.duration)
        images = np.stack([portrait(c.identity, spec.width, spec.height) for c in scene.characters])
        voices = np.stack([voice_sample(c.voice, spec.sample_rate, seconds=REFERENCE_SECONDS, seed=i)
                           for c in scene.characters])  # fmt: skip
        v = self.video_ae.encode(frames_to_tensor(images).transpose(0, 1).unsqueeze(2))  # each a 1-frame video
        a = self.audio_ae.encode(torch.from_numpy(voices))[:, 0]  # (n, D, S)
        text = self._text_states(reference_prompts(scene))
        return {"images": v.to(torch.bfloat16), "voices": a.to(torch.bfloat16), "text": text}

    def _clip(self, i: int) -> tuple[torch.Tensor, torch.Tensor, list[str], list[torch.Tensor]]:
        spec = self.spec
        if spec.source == "stage":
            scene = sample_scene(TRAIN_SEED_BASE + i, duration=spec.duration)
            clip = render(scene, self._render_config).clip
            prompts = list(dict.fromkeys(caption(scene, "train", v).prompt for v in range(spec.wordings)))
        else:
            path = _folder_items(spec.source)[i]
            clip = media.read_video(path, fps=spec.fps, size=(spec.height, spec.width), sample_rate=spec.sample_rate)
            prompts = [path.with_suffix(".txt").read_text().strip()]
        samples = round(spec.duration * spec.sample_rate)
        audio = clip.audio[:1, :samples] if clip.audio is not None else np.zeros((1, samples), np.float32)
        audio = np.pad(audio, ((0, 0), (0, samples - audio.shape[1])))
        a = self.audio_ae.encode(torch.from_numpy(np.ascontiguousarray(audio))[None])[0, 0]  # (D, S)
        return self._video_latents(clip.video), a.to(torch.bfloat16), prompts, self._text_states(prompts)

    @property
    def _render_config(self) -> RenderConfig:
        spec = self.spec
        return RenderConfig(spec.width, spec.height, spec.fps, spec.sample_rate)

    def _video_latents(self, video: np.ndarray) -> torch.Tensor:
        """A clip's frames, cut or held to the cache's length, as (D, T, H, W) bfloat16 latents."""
        frames = self.spec.frames(self.video_ae.config.temporal_factor)
        return self.video_ae.encode(frames_to_tensor(hold_last(video[:frames], frames))[None])[0].to(torch.bfloat16)

    def _text_states(self, texts: list[str]) -> list[torch.Tensor]:
        """Each text's encoder states (L_k, text_dim) without padding, in bfloat16."""
        states, mask = self.text.encode(texts)
        return [states[k, mask[k]].to(torch.bfloat16) for k in range(len(texts))]


def reference_prompts(scene: Scene) -> list[str]:
    """The captions a reference-task clip is trained with: characters named by `@imageN` / `@audioN`
    (the `text` of `LatentCache.references`, in this order)."""
    return list(dict.fromkeys(caption(scene, "train", k, cited=True).prompt for k in range(2)))


def motion_prompts(scene: Scene) -> list[str]:
    """The captions of a motion-task clip, moves left to `@video1` (`LatentCache.motion`'s `text`)."""
    return list(dict.fromkeys(caption(scene, "train", k, motion="@video1").prompt for k in range(2)))


def shot_prompts(scene: Scene, cited: bool) -> list[str]:
    """A multi-shot caption's parts: global, shot 1, shot 2, ... (`LatentCache.shots`' texts)."""
    c = caption(scene, "train", 0, cited=cited)
    return [c.overall, *c.shots]


def _folder_items(folder: str) -> list[Path]:
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"training data {folder!r} is neither 'stage' nor a folder")
    items = sorted(p for p in root.rglob("*") if p.suffix.lower() in media.VIDEO_SUFFIXES)
    items = [p for p in items if p.with_suffix(".txt").is_file()]
    if not items:
        raise ValueError(f"no video files with a caption (.txt of the same name) under {folder}")
    return items
