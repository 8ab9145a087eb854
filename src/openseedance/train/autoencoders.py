"""Train the video or the audio autoencoder.

    openseedance train video-ae --preset tiny --out runs/video-ae --steps 4000
    openseedance train audio-ae --preset tiny --out runs/audio-ae --steps 4000 --data clips/
    openseedance train video-ae --init runs/video-ae/model --decoder-only --out runs/video-dec --steps 2000
    openseedance train video-ae --preset tiny-thin --init runs/video-ae/model --decoder-only --out runs/thin

With `init` a run starts from a trained component instead of fresh weights. With `decoder_only` the
encoder is frozen and only the decoder trains: the latents, and the latent statistics stored with
the component, stay exactly those of `init`, so a generator trained on them keeps working and
simply decodes with the sharper decoder. The decoder may have another layout than `init`'s (a
preset with the same encoder and its own `decoder_channels`, e.g. `tiny-thin` from `tiny`): the
encoder and the latent statistics are then copied exactly, the decoder's tensors where name and
shape match, and the rest of the decoder starts fresh (`init.json` says which). With
`warm_start` a run starts from a trained component of another layout of the same kind (e.g.
`tiny-t2` from `tiny`): what fits is carried over (see `warm_state`), the rest starts fresh, and
the run log says which was which.

Runs on the CPU or one GPU, in float32 or (`bf16`) under bfloat16 autocast. With `workers` > 0,
that many processes render the next batches while the model trains on this one (a GPU step is far
shorter than rendering its clips); each batch depends only on (seed, step), so workers change the
speed and never the data.
Every `checkpoint_every` steps the run writes `checkpoint.pt` (weights, optimiser, step) and the
component (`model/config.json` + `model/model.safetensors`), both by rename, so a run killed at any
moment restarts from its last checkpoint; batches and noise depend only on (seed, step), so the
resumed run follows the same trajectory as one that never stopped. Losses go to `log.jsonl`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import multiprocessing
import os
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from openseedance import audio_vae, video_vae
from openseedance.checkpoint import config_to_dict, load_component, save_component
from openseedance.train.config import AETrainConfig
from openseedance.train.data import AudioWindows, VideoWindows
from openseedance.train.schedule import learning_rate

log = logging.getLogger(__name__)


def loss_terms(kind: str) -> tuple[str, ...]:
    """The weighted loss terms of an autoencoder kind: its config's `<term>_weight` fields."""
    config = {"video-ae": video_vae.VideoAEConfig, "audio-ae": audio_vae.AudioAEConfig}.get(kind)
    fields = dataclasses.fields(config) if config else ()
    return tuple(f.name.removesuffix("_weight") for f in fields if f.name.endswith("_weight"))


def _model_config(cfg: AETrainConfig, config: object) -> object:
    return dataclasses.replace(config, **{f"{term}_weight": float(w) for term, w in cfg.loss_weights})


def _video(cfg: AETrainConfig) -> tuple[torch.nn.Module, Callable[[int], np.ndarray]]:
    model = video_vae.VideoAutoencoder(_model_config(cfg, video_vae.video_ae_config(cfg.preset)))
    model.latent_frames(cfg.frames)  # a clear error now rather than at the first step
    data = VideoWindows(cfg.data, cfg.width, cfg.height, cfg.fps, cfg.frames)
    return model, functools.partial(_batch, data, cfg.seed, cfg.batch_size)


def _audio(cfg: AETrainConfig) -> tuple[torch.nn.Module, Callable[[int], np.ndarray]]:
    config = _model_config(cfg, audio_vae.audio_ae_config(cfg.preset))
    model = audio_vae.AudioAutoencoder(config)
    data = AudioWindows(cfg.data, config.sample_rate, cfg.seconds)
    return model, functools.partial(_batch, data, cfg.seed, cfg.batch_size)


def _batch(data: VideoWindows | AudioWindows, seed: int, batch_size: int, step: int) -> np.ndarray:
    # an array, not a tensor: worker processes then pass it by value, with no shared memory
    return data.batch(seed, step, batch_size).numpy()


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class _Ahead:
    """`get(step)` for consecutive steps, with the next batches rendered by worker processes."""

    def __init__(self, batches: Callable[[int], np.ndarray], workers: int, first: int, last: int):
        self.batches, self.last = batches, last
        self.pending: deque[tuple[int, Future]] = deque()
        self.next = first
        # each worker renders on one thread: numpy's BLAS would otherwise start a thread per core in
        # every worker; the workers start with the first tasks and read these variables then
        saved = {k: os.environ.get(k) for k in THREAD_VARIABLES}
        os.environ.update(dict.fromkeys(THREAD_VARIABLES, "1"))
        try:
            self.pool = ProcessPoolExecutor(workers, multiprocessing.get_context("spawn"), initializer=_one_thread)
            for _ in range(2 * workers):
                self._submit()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def _submit(self) -> None:
        if self.next < self.last:
            self.pending.append((self.next, self.pool.submit(self.batches, self.next)))
            self.next += 1

    def get(self, step: int) -> np.ndarray:
        wanted, future = self.pending.popleft()
        assert wanted == step, f"batches are taken in order (asked {step}, next is {wanted})"
        self._submit()
        return future.result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _one_thread() -> None:
    torch.set_num_threads(1)


KINDS = {"video-ae": _video, "audio-ae": _audio}
CALIBRATION_STEP = 1 << 40  # batches no training step draws


def train(cfg: AETrainConfig, out: str | os.PathLike, progress: bool = True) -> Path:
    """Train (or resume) into `out`; returns the folder of the trained component."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model, batches = KINDS[cfg.kind](cfg)
    if cfg.decoder_only:
        model.encoder.requires_grad_(False)
    model.to(cfg.device)
    trained = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trained, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    step = _resume(out, cfg, model, opt)
    if step == 0:  # a resumed run has its weights from the checkpoint and needs neither source any more
        if cfg.init:
            _start_from(model, cfg.init, out if cfg.decoder_only else None)
        if cfg.warm_start:
            _warm_start(model, cfg.warm_start, out)
    (out / "train_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    logfile = (out / "log.jsonl").open("a")
    bar = tqdm(total=cfg.steps, initial=step, desc=cfg.kind, disable=not progress, dynamic_ncols=True)
    ahead = _Ahead(batches, cfg.workers, step, cfg.steps) if cfg.workers else None
    model.train()
    try:
        while step < cfg.steps:
            t0 = time.perf_counter()
            x = torch.from_numpy(ahead.get(step) if ahead else batches(step)).to(cfg.device)
            torch.manual_seed(cfg.seed * 1_000_003 + step)  # the posterior's noise, reproducible on resume
            for group in opt.param_groups:
                group["lr"] = learning_rate(cfg, step)
            with torch.autocast(torch.device(cfg.device).type, dtype=torch.bfloat16, enabled=cfg.bf16):
                loss, metrics = model.training_loss(x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(trained, cfg.grad_clip)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {float(loss)} at step {step}; last checkpoint is in {out}")
            opt.step()
            step += 1
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.steps:
                record = {"step": step, **metrics, "grad_norm": float(grad_norm), "lr": opt.param_groups[0]["lr"],
                          "seconds": round(time.perf_counter() - t0, 3)}  # fmt: skip
                logfile.write(json.dumps(record) + "\n")
                logfile.flush()
                bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items() if k in ("loss", "psnr", "stft")})
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                _save(out, cfg, model, opt, step, batches)
    finally:
        if ahead:
            ahead.close()
        bar.close()
        logfile.close()
    return out / "model"


def _save(out: Path, cfg: AETrainConfig, model: torch.nn.Module, opt: torch.optim.Optimizer, step: int,
          batches: Callable[[int], np.ndarray]) -> None:  # fmt: skip
    state = {"step": step, "model": model.state_dict(), "optimizer": opt.state_dict(),
             "train_config": dataclasses.asdict(cfg), "model_config": config_to_dict(model.config)}  # fmt: skip
    tmp = out / "checkpoint.pt.tmp"
    torch.save(state, tmp)
    os.replace(tmp, out / "checkpoint.pt")
    # the exported component carries latent statistics measured on a few training batches; the
    # training state above keeps the raw weights, so statistics never feed back into training
    export = type(model)(model.config).to(cfg.device)
    export.load_state_dict(model.state_dict())
    if not cfg.decoder_only:  # a frozen encoder keeps the statistics it came with, exactly
        _calibrate(export, [torch.from_numpy(batches(CALIBRATION_STEP + i)) for i in range(4)], cfg)
    save_component(export.cpu(), out / "model")


def _architecture(config: object) -> dict:
    return {k: v for k, v in config_to_dict(config).items() if not k.endswith("_weight")}


def _start_from(model: torch.nn.Module, folder: str, decoder_only_out: Path | None = None) -> None:
    """Load a trained component of the same architecture (latent statistics included); the loss
    weights it was trained with may differ from this run's. For a decoder-only run
    (`decoder_only_out`: the run's folder) the decoder's layout may differ: see the module doc."""
    try:
        init = load_component(type(model), folder)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot start from {folder}: {err}") from None
    if _architecture(init.config) == _architecture(model.config):
        model.load_state_dict(init.state_dict())
        return
    same_encoder = hasattr(model.config, "encoder_layout") and (
        init.config.encoder_layout() == model.config.encoder_layout()
    )
    if decoder_only_out is None or not same_encoder:
        raise ValueError(f"{folder} holds a different {type(model).__name__} configuration than this preset"
                         + ("" if same_encoder else " (and another encoder)"))  # fmt: skip
    state, how = warm_state(model, init.state_dict())
    frozen = {name: way for name, way in how.items() if not name.startswith("decoder.")}
    if set(frozen.values()) != {"copied"}:  # cannot happen with equal encoder layouts; a guard all the same
        raise ValueError(f"{folder}: the encoder did not carry over exactly ({frozen})")
    model.load_state_dict(state)
    counts: Counter[str] = Counter()
    for name, way in how.items():
        if name.startswith("decoder."):
            counts[way] += state[name].numel()
    record = {"init": folder, "encoder": "copied", "decoder_values": dict(counts),
              "decoder_fresh": sorted(k for k, v in how.items() if v == "fresh")}  # fmt: skip
    (decoder_only_out / "init.json").write_text(json.dumps(record, indent=2) + "\n")
    log.info("decoder of another layout from %s: %s", folder, ", ".join(f"{n:,} values {w}" for w, n in counts.items()))


def warm_state(
    model: torch.nn.Module, source: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The weights of `model` taken from `source`, a trained state of another layout of the same
    kind, and for each tensor how: "copied" (same name and shape); "folded in time" (a temporal
    kernel summed into a one-frame kernel: on a still scene the one-frame layer computes what the
    source's did); "merged time slots" (an upsampler that made 2 frames per latent frame and now
    makes 1: its outputs for the 2 frames averaged); or "fresh" (kept as initialised)."""
    state = model.state_dict()
    how: dict[str, str] = {}
    for name, target in state.items():
        tensor = source.get(name)
        if tensor is None:
            how[name] = "fresh"
        elif tensor.shape == target.shape:
            state[name], how[name] = tensor.clone(), "copied"
        elif (tensor.ndim == 5 and target.ndim == 5 and target.shape[2] == 1
              and tensor.shape[:2] + tensor.shape[3:] == target.shape[:2] + target.shape[3:]):  # fmt: skip
            state[name], how[name] = tensor.sum(2, keepdim=True), "folded in time"
        elif (name.endswith((".weight", ".bias")) and tensor.shape[1:] == target.shape[1:]
              and tensor.shape[0] == 2 * target.shape[0] and _in_one_frame_upsampler(model, name)):  # fmt: skip
            # output channels are laid out (channel, time slot, dy, dx): average the two time slots
            merged = tensor.view(target.shape[0] // 4, 2, 4, *tensor.shape[1:]).mean(1)
            state[name], how[name] = merged.reshape(target.shape), "merged time slots"
        else:
            how[name] = "fresh"
    return state, how


def _in_one_frame_upsampler(model: torch.nn.Module, name: str) -> bool:
    owner = name.rsplit(".", 3)[0] if name.count(".") >= 3 else ""
    module = model.get_submodule(owner) if owner else None
    return isinstance(module, video_vae.Upsample) and module.r == 1


def _warm_start(model: torch.nn.Module, folder: str, out: Path) -> None:
    try:
        source = load_component(type(model), folder)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot warm-start from {folder}: {err}") from None
    state, how = warm_state(model, source.state_dict())
    model.load_state_dict(state)
    counts: Counter[str] = Counter()
    for name, way in how.items():
        counts[way] += state[name].numel()
    carried = 1 - counts.get("fresh", 0) / sum(counts.values())
    if carried < 0.5:  # another size altogether: a fresh start would be more honest
        raise ValueError(f"{folder} fits only {carried:.0%} of this preset's weights: warm-start from the same size")
    not_copied = {k: v for k, v in how.items() if v != "copied"}
    record = {"warm_start": folder, "values": dict(counts), "not_copied": not_copied}
    (out / "warm_start.json").write_text(json.dumps(record, indent=2) + "\n")
    log.info("warm start from %s: %s", folder, ", ".join(f"{n:,} values {w}" for w, n in counts.items()))


@torch.no_grad()
def _calibrate(model: torch.nn.Module, samples: list[torch.Tensor], cfg: AETrainConfig) -> None:
    if not hasattr(model, "set_latent_statistics"):
        return
    model.eval()
    means = []
    for x in samples:
        with torch.autocast(torch.device(cfg.device).type, dtype=torch.bfloat16, enabled=cfg.bf16):
            means.append(model(x.to(cfg.device)).mean.float())
    model.set_latent_statistics(torch.cat(means))


def _resume(out: Path, cfg: AETrainConfig, model: torch.nn.Module, opt: torch.optim.Optimizer) -> int:
    path = out / "checkpoint.pt"
    if not path.is_file():
        return 0
    try:
        state = torch.load(path, map_location=cfg.device, weights_only=True)
    except Exception as err:  # a damaged file must not be silently replaced by a fresh run
        raise ValueError(f"{path} is unreadable ({err}); move it away to start over") from None
    if state["model_config"] != config_to_dict(model.config):
        raise ValueError(f"{path} holds a different {cfg.kind} configuration; use another --out to start over")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    log.info("resuming %s from step %d", cfg.kind, state["step"])
    return int(state["step"])
