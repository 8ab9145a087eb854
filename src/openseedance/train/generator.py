"""Train the audio-video transformer by flow matching on cached latents.

    openseedance train generator --preset tiny --out runs/gen --video-ae V --audio-ae A --steps 4000
    torchrun --standalone --nproc_per_node=2 -m openseedance.cli train generator ...   (DDP)

One loop for the CPU, one GPU and `torchrun` (DDP: gloo on CPU, NCCL on GPUs). Every step mixes
the tasks of DESIGN §1 through per-token times: text -> AV (nothing clean), first frame clean,
audio clean (-> video), video clean (-> audio) and a clean prefix (extension); clean tokens sit at
t = 0 and are left out of the loss. Captions are dropped now and then so the sampler can guide.

bfloat16 autocast (by default on GPUs), an EMA of the weights, gradient clipping, warmup + cosine; optionally FSDP2,
activation checkpointing and compiled blocks (`parallel.py`). Every `checkpoint_every` steps:
`checkpoint/` (a sharded checkpoint of weights, EMA, optimiser and step, which loads on any number
of processes) and `pipeline/` (the EMA transformer with the autoencoders: loadable by
`Pipeline.from_pretrained`), both replaced by rename.
Batches and noise depend only on (seed, step, rank), so a resumed run continues the trajectory
of the one that stopped. Logs: `log.jsonl`, TensorBoard events in `tb/`, a progress bar.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from openseedance import conditioning as cond
from openseedance import parallel
from openseedance.audio_vae import AudioAutoencoder
from openseedance.checkpoint import config_to_dict, load_component
from openseedance.flow import RectifiedFlow
from openseedance.text import TextEncoder, join_parts, pad_shots, pad_states
from openseedance.train.config import GenTrainConfig
from openseedance.train.latents import CacheSpec, LatentCache
from openseedance.train.schedule import learning_rate
from openseedance.transformer import AVTransformer, Text, transformer_config
from openseedance.video_vae import VideoAutoencoder

log = logging.getLogger(__name__)


@dataclass
class Item:
    """One training sample before batching: its clip's latents, caption, masks and references."""

    video: torch.Tensor  # (D, t, h, w)
    audio: torch.Tensor  # (D, n)
    text: torch.Tensor  # (L, text_dim)
    parts: torch.Tensor | None  # the part of each text token (multi-shot captions), or None
    cuts: tuple[float, ...]
    keep: dict[str, torch.Tensor]  # (1, N) per stream
    task: str
    refs: cond.References | None


@dataclass
class Batch:
    conditions: cond.Conditions  # `clean` holds the whole clips: the targets of the flow
    tasks: list[str]


class Sampler:
    """Draws training batches from the latent cache; a pure function of (seed, step, rank)."""

    def __init__(self, cfg: GenTrainConfig, cache: LatentCache, layout: cond.Layout, empty_text: torch.Tensor):
        self.cfg, self.cache, self.layout = cfg, cache, layout
        self.empty = empty_text
        self.patch = layout.patch
        weights = np.asarray(cfg.tasks, dtype=np.float64)
        if cache.spec.source != "stage":  # a folder of clips has no references to learn from
            for task in cond.REFERENCE_TASKS:
                weights[cond.TRAINING_TASKS.index(task)] = 0.0
        if weights.sum() <= 0:
            raise ValueError(f"the task mix has weight only on {' and '.join(cond.REFERENCE_TASKS)}, which need "
                             "Stage data")  # fmt: skip
        self.weights = weights / weights.sum()
        self.shots = cfg.shots and cache.spec.source == "stage"  # per-shot captions (Stage clips know their cuts)

    def __call__(self, step: int, rank: int = 0) -> Batch:
        rng = np.random.default_rng([self.cfg.seed, step, rank])
        return self.collate([self.draw(rng) for _ in range(self.cfg.batch_size)])

    def draw(self, rng: np.random.Generator) -> Item:
        """One training sample: a cached clip, its task's masks, its caption (or shots) and references."""
        cfg, spec = self.cfg, self.cache.spec
        i = int(rng.integers(spec.clips))
        shard = self.cache.shard(i // spec.clips_per_shard)
        j = i % spec.clips_per_shard
        task = cond.TRAINING_TASKS[int(rng.choice(len(cond.TRAINING_TASKS), p=self.weights))]
        ref = self.cache.references(i // spec.clips_per_shard)[j] if task == "references" else None
        motion = self.cache.motion(i // spec.clips_per_shard)[j] if task == "motion" else None
        extra = ref if ref is not None else motion  # a reference task's own captions cite its references
        wordings = shard["text"][j] if extra is None else extra["text"]
        drop = rng.random() < cfg.text_dropout
        # a motion caption leaves moves to its video, so it is not split into shots that spell them out
        per_shot = self.shots and not drop and motion is None
        shots = self.cache.shots(i // spec.clips_per_shard)[j] if per_shot else None
        if shots is not None:  # a multi-shot clip: its caption part by part, each shot reading its own
            text, parts = join_parts([x.float() for x in shots["cited" if ref is not None else "plain"]])
            cuts = tuple(shots["cuts"].tolist())
        else:
            k = None if drop else int(rng.integers(len(wordings)))
            text, parts, cuts = self.empty if k is None else wordings[k].float(), None, ()
        keep = cond.task_masks(task, self.layout, prefix=float(rng.uniform(0.2, 0.8)))
        if ref is not None:
            refs = cond.reference_tokens([x[None].float() for x in ref["images"]],
                                         [x[None].float() for x in ref["voices"]], self.layout)  # fmt: skip
        elif motion is not None:
            refs = cond.reference_tokens([], [], self.layout, videos=[motion["video"][None].float()])
        else:
            refs = None
        return Item(shard["video"][j].float(), shard["audio"][j].float(), text, parts, cuts, keep, task, refs)

    def collate(self, items: list[Item], guidance: bool = False) -> Batch:
        """Items as one batch. `guidance` (one item): the text holds the empty prompt as a second
        row, as the sampler's guidance branches read it (`conditioning.prompt_text`)."""
        x0 = {"video": cond.video_to_tokens(torch.stack([it.video for it in items]), self.patch),
              "audio": cond.audio_to_tokens(torch.stack([it.audio for it in items]))}  # fmt: skip
        keep = {s: torch.cat([it.keep[s] for it in items]) for s in x0}
        texts, parts = [it.text for it in items], [it.parts for it in items]
        if guidance:
            texts, parts = [*texts, self.empty], [*parts, None]
        states, mask = pad_states(texts)
        text = Text(states, mask, pad_shots(parts, states.shape[1]) if any(p is not None for p in parts) else None)
        conditions = cond.assemble(x0, keep, self.layout, [it.cuts for it in items], [it.refs for it in items], text)
        return Batch(conditions, [it.task for it in items])


def flow_loss(model: torch.nn.Module, batch: Batch, flow: RectifiedFlow, generator: torch.Generator,
              device: torch.device, *, t: torch.Tensor | None = None, x0: dict[str, torch.Tensor] | None = None,
              noise: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, dict[str, float]]:  # fmt: skip
    """The flow loss on the path from each clip (`x0`, default the batch's clean values) to its
    noise (default drawn), at times `t` (default drawn), over the tokens that are not given."""
    c = batch.conditions
    b = c.text.states.shape[0]
    total = sum(x.shape[1] for x in c.clean.values())
    t = flow.sample_time(b, total, generator) if t is None else t
    xs, times, targets, weights = {}, {}, {}, {}
    for s, clean in c.clean.items():
        x0_s = clean if x0 is None else x0[s]
        noise_s = torch.randn(x0_s.shape, generator=generator) if noise is None else noise[s]
        keep = c.keep[s]
        tt = torch.where(keep, 0.0, t[:, None].expand_as(keep))
        xs[s], times[s] = flow.noisy(x0_s, noise_s, tt).to(device), tt.to(device)
        targets[s] = flow.velocity(x0_s, noise_s).to(device)
        weights[s] = (~keep).float().to(device)
    on = c.to(device)
    pred = model(on.tokens(xs, times), on.text)
    losses = {s: flow.loss(pred[s], targets[s], weights[s]) for s in pred}
    loss = sum(losses.values())
    return loss, {"loss": float(loss.detach()), **{f"loss_{s}": float(v.detach()) for s, v in losses.items()}}


def layout_for(cfg: GenTrainConfig, video_ae: VideoAutoencoder, audio_ae: AudioAutoencoder,
               patch: tuple[int, int, int]) -> cond.Layout:  # fmt: skip
    frames = cond.coded_frames(cfg.duration, cfg.fps, video_ae.config.temporal_factor)
    grid = video_ae.latent_shape(frames, cfg.height, cfg.width)
    samples = round(cfg.duration * cfg.sample_rate)
    return cond.Layout(grid, patch, cfg.fps, video_ae.config.temporal_factor,
                       math.ceil(samples / audio_ae.config.hop), audio_ae.config.latent_rate)  # fmt: skip


def train(cfg: GenTrainConfig, out: str | os.PathLike, progress: bool = True, stop_after: int | None = None) -> Path:
    """Train (or resume) into `out`; returns the exported pipeline folder. `stop_after`: stop (with
    a checkpoint) once this step is reached; the schedule still spans `cfg.steps`, and running again
    continues it."""
    if not cfg.video_ae or not cfg.audio_ae:
        raise ValueError("training the generator needs trained autoencoders: --video-ae and --audio-ae")
    out = Path(out)
    rank, world = _init_distributed(cfg)
    device = torch.device(cfg.device)
    if world > 1 and device.type == "cuda":
        device = torch.device(f"cuda:{rank % torch.cuda.device_count()}")
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    video_ae = load_component(VideoAutoencoder, cfg.video_ae)
    audio_ae = load_component(AudioAutoencoder, cfg.audio_ae)
    text = TextEncoder.load(cfg.text_encoder)
    spec = CacheSpec(cfg.data, cfg.clips, duration=cfg.duration, width=cfg.width, height=cfg.height,
                     fps=cfg.fps, sample_rate=cfg.sample_rate)  # fmt: skip
    _barrier(world)
    cache = LatentCache(cfg.cache or out / "latents", spec, video_ae, audio_ae, text)
    for index in range(rank, cache.spec.shards, world):  # processes share the encoding work
        cache.build(index)
    _barrier(world)

    model_cfg = dataclasses.replace(transformer_config(cfg.preset), video_channels=video_ae.config.latent_channels,
                                    audio_channels=audio_ae.config.latent_channels, text_dim=text.dim)  # fmt: skip
    torch.manual_seed(cfg.seed)
    model = AVTransformer(model_cfg).to(device)
    bf16 = cfg.bf16 if cfg.bf16 is not None else device.type == "cuda"
    parallel.parallelize(model, fsdp=cfg.fsdp and world > 1, activation_checkpointing=cfg.activation_checkpointing,
                         compile=cfg.compile, param_dtype=torch.bfloat16 if bf16 else None)  # fmt: skip
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    ema = [p.detach().clone() for p in model.parameters()]  # shards under FSDP, like the weights
    step = _resume(out, model, opt, ema, world)
    if step == 0 and cfg.init:
        _initialise(model, ema, cfg.init)
    layout = layout_for(cfg, video_ae, audio_ae, model_cfg.patch)
    empty = text.encode([""])[0][0]
    sampler = Sampler(cfg, cache, layout, empty)
    flow = RectifiedFlow()
    ddp = world > 1 and not cfg.fsdp
    wrapped = torch.nn.parallel.DistributedDataParallel(model) if ddp else model
    if rank == 0:
        (out / "train_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    logfile = (out / "log.jsonl").open("a") if rank == 0 else None
    board = _tensorboard(out / "tb") if rank == 0 else None
    bar = tqdm(total=cfg.steps, initial=step, desc="generator", disable=not progress or rank != 0, dynamic_ncols=True)
    model.train()
    try:
        end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
        while step < end:
            t0 = time.perf_counter()
            for group in opt.param_groups:
                group["lr"] = learning_rate(cfg, step)
            batch = sampler(step, rank)
            generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step * 1009 + rank)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss, metrics = flow_loss(wrapped, batch, flow, generator, device)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {float(loss)} at step {step}; last checkpoint is in {out}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            update_ema(ema, model, min(cfg.ema_decay, (1 + step) / (10 + step)))
            step += 1
            bar.update(1)
            if rank == 0 and (step % cfg.log_every == 0 or step == end):
                record = {"step": step, **metrics, "grad_norm": float(grad_norm.full_tensor() if hasattr(
                          grad_norm, "full_tensor") else grad_norm), "lr": opt.param_groups[0]["lr"],
                          "seconds": round(time.perf_counter() - t0, 3)}  # fmt: skip
                logfile.write(json.dumps(record) + "\n")
                logfile.flush()
                if board is not None:
                    for k, v in record.items():
                        if k != "step":
                            board.add_scalar(k, v, step)
                bar.set_postfix(loss=f"{metrics['loss']:.4f}")
            if step % cfg.checkpoint_every == 0 or step == end:
                _save(out, cfg, model, opt, ema, step, world, (video_ae, audio_ae, text.name))
    finally:
        bar.close()
        if logfile is not None:
            logfile.close()
        if board is not None:
            board.close()
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    return out / "pipeline"


@torch.no_grad()
def update_ema(ema: list[torch.Tensor], model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema, model.parameters(), strict=True):
        e.lerp_(p.detach(), 1 - decay)


def _extra(model: torch.nn.Module, ema: list[torch.Tensor], step: int) -> dict:
    """What a checkpoint holds besides weights and optimiser: the EMA (by parameter name) and the step."""
    names = [n for n, _ in model.named_parameters()]
    return {"ema": dict(zip(names, ema, strict=True)), "step": torch.tensor(step)}


def _save(out: Path, cfg: GenTrainConfig, model: AVTransformer, opt: torch.optim.Optimizer, ema: list[torch.Tensor],
          step: int, world: int, parts: tuple) -> None:  # fmt: skip
    """A sharded checkpoint (every process writes its shards) in `checkpoint/`, replaced by rename,
    and the EMA weights exported as a model folder in `pipeline/`."""
    rank = dist.get_rank() if world > 1 else 0
    tmp, final = out / "checkpoint.tmp", out / "checkpoint"
    if rank == 0 and tmp.exists():
        shutil.rmtree(tmp)
    _barrier(world)
    with _quiet_single_process():
        parallel.save_sharded(tmp, model, opt, _extra(model, ema, step))
    _barrier(world)
    weights = _ema_weights(model, ema)  # collective under FSDP
    if rank == 0:
        (tmp / "model_config.json").write_text(json.dumps(config_to_dict(model.config)))
        old = out / "checkpoint.old"
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        if old.exists():
            shutil.rmtree(old)
        _export(out, cfg, model.config, weights, parts)
    _barrier(world)


def _ema_weights(model: torch.nn.Module, ema: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """The EMA as a whole state dict on rank 0: swap it into the model, gather, swap back."""
    _swap(model, ema)
    try:
        return parallel.full_state_dict(model)
    finally:
        _swap(model, ema)


@torch.no_grad()
def _swap(model: torch.nn.Module, ema: list[torch.Tensor]) -> None:
    for p, e in zip(model.parameters(), ema, strict=True):
        held = p.detach().clone()
        p.copy_(e)
        e.copy_(held)


def _export(out: Path, cfg: GenTrainConfig, model_cfg, weights: dict[str, torch.Tensor], parts: tuple) -> None:
    from openseedance.engines.bundled import BundledEngine, PipelineConfig

    video_ae, audio_ae, text_name = parts
    exported = AVTransformer(model_cfg)
    exported.load_state_dict(weights)
    config = PipelineConfig(width=cfg.width, height=cfg.height, fps=cfg.fps, sample_rate=cfg.sample_rate,
                            text_encoder=text_name)  # fmt: skip
    BundledEngine(config, exported, video_ae, audio_ae).save_pretrained(out / "pipeline")


@torch.no_grad()
def _initialise(model: torch.nn.Module, ema: list[torch.Tensor], folder: str) -> None:
    """Start from a trained model's transformer (a model folder, or its `transformer/` part): the
    same configuration is required; parts it lacks (reference roles, in older models) start fresh."""
    path = Path(folder)
    path = path / "transformer" if (path / "transformer").is_dir() else path
    try:
        start = load_component(AVTransformer, path)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot start from {folder}: {err}") from None
    if config_to_dict(start.config) != config_to_dict(model.config):
        raise ValueError(f"{folder} holds a different transformer configuration than --preset asks for")
    full = start.state_dict()
    for (name, p), e in zip(model.named_parameters(), ema, strict=True):
        value = full[name].to(p.dtype)
        if hasattr(p, "device_mesh"):  # an FSDP shard: take this process's part
            from torch.distributed.tensor import distribute_tensor

            value = distribute_tensor(value.to(p.device), p.device_mesh, p.placements)
        p.copy_(value)
        e.copy_(value)
    log.info("starting from the transformer in %s", folder)


def _resume(out: Path, model: AVTransformer, opt: torch.optim.Optimizer, ema: list[torch.Tensor], world: int) -> int:
    folder = out / "checkpoint"
    if not folder.is_dir():
        return 0
    try:
        saved = json.loads((folder / "model_config.json").read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{folder} is unreadable ({err}); move it away to start over") from None
    if saved != config_to_dict(model.config):
        raise ValueError(f"{folder} holds a different transformer configuration; use another --out to start over")
    extra = _extra(model, ema, 0)
    try:
        with _quiet_single_process():
            parallel.load_sharded(folder, model, opt, extra)
    except Exception as err:  # a damaged checkpoint must not be silently replaced by a fresh run
        raise ValueError(f"{folder} is unreadable ({err}); move it away to start over") from None
    step = int(extra["step"])
    log.info("resuming the generator from step %d (saved by any number of processes, loaded on %d)", step, world)
    return step


@contextlib.contextmanager
def _quiet_single_process():
    """torch.distributed.checkpoint warns when used without a process group, which is our 1-process case."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _init_distributed(cfg: GenTrainConfig) -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if cfg.device.startswith("cuda") else "gloo"
        dist.init_process_group(backend)
    if cfg.device.startswith("cuda"):
        torch.cuda.set_device(dist.get_rank() % torch.cuda.device_count())
    return dist.get_rank(), dist.get_world_size()


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def _tensorboard(folder: Path):
    with contextlib.suppress(ImportError):
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(folder))
    log.warning("tensorboard is not installed; logging to log.jsonl only")
    return None
