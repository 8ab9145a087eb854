"""Distil a model into a few-step student: rectified flow's reflow, with the teacher's guidance
folded in.

    openseedance train distill --out runs/student --steps 1500          (the bundled model as teacher)

1. *Pairs.* Conditions are drawn as the generator's training draws them (every task: text only,
   first frame, soundtrack, frames, extension, references, shots), a noise is drawn per condition,
   and the teacher turns the noise into a clip with its own sampler: its default steps, text
   guidance and reference guidance, the given tokens held clean. Each pair (noise, teacher's clip)
   is a pure function of (seed, index); they are stored in shards in `<out>/pairs/`.
2. *Student.* A copy of the teacher's transformer learns the straight path from each noise to the
   teacher's clip: at a time t it sees (1 - t) clip + t noise (given tokens clean) and the prompt
   alone, and is trained to predict noise - clip. Where the teacher's paths cross, the straight
   ones do not have to, so a student that has learnt them needs one or two Euler steps, and as
   the guided clips are its targets it needs no guidance passes. Half the times are the student's
   own step times (t = 1 and the middle of its schedule), half drawn as the generator's training
   draws them.

The student is exported as a model folder (`<out>/pipeline/`: the teacher's autoencoders, the
student transformer, and `pipeline.json` with the student's steps and guidance 1), which keeps the
teacher in `teacher/` (`--teacher` runs it). Batches, noise
and times depend only on (seed, step), so a stopped run resumes on the same trajectory; logs go
to `log.jsonl` and a progress bar.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from openseedance import precision
from openseedance.checkpoint import config_to_dict
from openseedance.engines.bundled import TEACHER
from openseedance.flow import RectifiedFlow
from openseedance.request import GenerationRequest
from openseedance.train.config import DistillConfig
from openseedance.train.generator import Sampler, flow_loss, update_ema
from openseedance.train.latents import CacheSpec, LatentCache
from openseedance.train.schedule import learning_rate
from openseedance.transformer import AVTransformer

PAIRS_PER_SHARD = 32


def train(cfg: DistillConfig, out: str | os.PathLike, progress: bool = True, stop_after: int | None = None) -> Path:
    """Make the pairs still missing, then train (or resume) the student; returns its model folder."""
    from openseedance.engines.bundled import BundledEngine

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(cfg.device)
    bf16 = precision.choose(device, cfg.bf16).bf16
    teacher = BundledEngine.from_pretrained(cfg.teacher or default_teacher()).to(device)
    pc = teacher.config
    spec = CacheSpec(cfg.data, cfg.clips, duration=cfg.duration, width=pc.width, height=pc.height, fps=pc.fps,
                     sample_rate=pc.sample_rate)  # fmt: skip
    cache = LatentCache(cfg.cache or out / "latents", spec, teacher.video_ae, teacher.audio_ae, teacher.text_encoder)
    for index in range(spec.shards):
        cache.build(index)
    layout = teacher.layout(GenerationRequest("", duration=cfg.duration, width=pc.width, height=pc.height, fps=pc.fps,
                                              sample_rate=pc.sample_rate))  # fmt: skip
    empty = teacher.text_encoder.encode([""])[0][0]
    draws = Sampler(cfg, cache, layout, empty)
    (out / "distill_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    pairs = Pairs(out / "pairs", cfg, draws, teacher, bf16)
    pairs.make(progress)

    student = AVTransformer(teacher.transformer.config)
    student.load_state_dict(teacher.transformer.state_dict())
    student.to(device).train()
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    ema = [p.detach().clone() for p in student.parameters()]
    step = _resume(out, student, opt, ema)
    flow = RectifiedFlow()
    total = sum(pairs.targets.values())
    shift = flow.shift(total)
    student_times = torch.tensor(sorted({1.0, float(flow.shift_time(torch.tensor(0.5), shift))}))
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    bar = tqdm(total=cfg.steps, initial=step, desc="student", disable=not progress, dynamic_ncols=True)
    try:
        with (out / "log.jsonl").open("a") as log:
            while step < end:
                t0 = time.perf_counter()
                for group in opt.param_groups:
                    group["lr"] = learning_rate(cfg, step)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    loss, metrics = _loss(student, pairs, cfg, step, flow, total, student_times, device)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss became {float(loss)} at step {step}; last checkpoint is in {out}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.grad_clip)
                opt.step()
                update_ema(ema, student, min(cfg.ema_decay, (1 + step) / (10 + step)))
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.4f}")
                if step % cfg.log_every == 0 or step == end:
                    record = {"step": step, **metrics, "grad_norm": float(grad_norm), "lr": opt.param_groups[0]["lr"],
                              "seconds": round(time.perf_counter() - t0, 3)}  # fmt: skip
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                if step % cfg.checkpoint_every == 0 or step == end:
                    _save(out, student, opt, ema, step, teacher, cfg)
    finally:
        bar.close()
    return out / "pipeline"


class Pairs:
    """The (noise, teacher's clip) pairs: pair i's conditions and noise are redrawn from (seed, i);
    the teacher's clip (the tokens it generated, per stream) is stored, 32 pairs to a shard."""

    def __init__(self, folder: Path, cfg: DistillConfig, draws: Sampler, teacher, bf16: bool) -> None:
        self.folder, self.cfg, self.draws, self.teacher, self.bf16 = folder, cfg, draws, teacher, bf16
        self.targets = {"video": draws.layout.video_tokens, "audio": draws.layout.audio_latents}
        self.shards = -(-cfg.pairs // PAIRS_PER_SHARD)
        self._loaded: dict[int, dict[str, torch.Tensor]] = {}
        folder.mkdir(parents=True, exist_ok=True)
        identity = {"teacher": teacher.model_id, "seed": cfg.seed, "tasks": list(cfg.tasks), "clips": cfg.clips,
                    "duration": cfg.duration, "teacher_steps": cfg.teacher_steps, "text_dropout": cfg.text_dropout,
                    "shots": cfg.shots, "bf16": bf16}  # fmt: skip
        meta = folder / "pairs.json"
        if meta.is_file() and json.loads(meta.read_text()) != identity:
            raise ValueError(f"the pairs in {folder} were made by another teacher or settings; delete them or "
                             "choose another --out")  # fmt: skip
        meta.write_text(json.dumps(identity, indent=1) + "\n")

    def condition(self, i: int):
        """Pair i's conditions (one clip, the empty prompt beside its own) and noise."""
        item = self.draws.draw(np.random.default_rng([self.cfg.seed, 7, i]))
        conditions = self.draws.collate([item], guidance=True).conditions
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + i)
        noise = {s: torch.randn(x.shape, generator=gen) for s, x in conditions.clean.items()}
        return item, conditions, noise

    def path(self, shard: int) -> Path:
        return self.folder / f"pairs-{shard:05d}.pt"

    def make(self, progress: bool) -> None:
        sampler = self.teacher.sampler(_options(self.cfg))
        todo = [k for k in range(self.shards) if not self.path(k).is_file()]
        bar = tqdm(total=self.cfg.pairs, initial=(self.shards - len(todo)) * PAIRS_PER_SHARD, desc="teacher pairs",
                   disable=not progress, dynamic_ncols=True)  # fmt: skip
        for k in todo:
            made: dict[str, list[torch.Tensor]] = {s: [] for s in self.targets}
            for i in range(k * PAIRS_PER_SHARD, min(self.cfg.pairs, (k + 1) * PAIRS_PER_SHARD)):
                _, conditions, noise = self.condition(i)
                run = sampler if conditions.has_references else dataclasses.replace(sampler, reference_guidance=1.0)
                x = self.teacher.sample(conditions, noise, run, shift=RectifiedFlow().shift(sum(self.targets.values())),
                                        bf16=self.bf16)  # fmt: skip
                for s in made:
                    made[s].append(x[s][0, : self.targets[s]].to(torch.bfloat16).cpu())
                bar.update(1)
            tmp = self.path(k).with_suffix(".tmp")
            torch.save({s: torch.stack(v) for s, v in made.items()}, tmp)
            os.replace(tmp, self.path(k))
        bar.close()

    def clip(self, i: int) -> dict[str, torch.Tensor]:
        """The teacher's clip of pair i (its generated tokens per stream, (N, C))."""
        k = i // PAIRS_PER_SHARD
        if k not in self._loaded:
            if len(self._loaded) > 64:
                self._loaded.clear()
            self._loaded[k] = torch.load(self.path(k), weights_only=True)
        return {s: v[i % PAIRS_PER_SHARD].float() for s, v in self._loaded[k].items()}


def default_teacher() -> Path | None:
    """The bundled model's teacher when it ships one (its default is then a student), else the
    bundled model itself (None)."""
    from openseedance.engines.bundled import BUNDLED

    return BUNDLED / TEACHER if (BUNDLED / TEACHER / "pipeline.json").is_file() else None


def _options(cfg: DistillConfig):
    from openseedance.engines.base import RunOptions

    return RunOptions(steps=cfg.teacher_steps or None)


def _loss(student: AVTransformer, pairs: Pairs, cfg: DistillConfig, step: int, flow: RectifiedFlow, total: int,
          student_times: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:  # fmt: skip
    """The reflow loss on one batch of pairs: the velocity of the straight path from each pair's
    noise to its teacher clip, on the tokens the teacher generated."""
    rng = np.random.default_rng([cfg.seed, 11, step])
    index = rng.integers(cfg.pairs, size=cfg.batch_size)
    items, noises, clips = [], [], []
    for i in index:
        item, _, noise = pairs.condition(int(i))
        items.append(item)
        noises.append(noise)
        clips.append(pairs.clip(int(i)))
    batch = pairs.draws.collate(items)
    c = batch.conditions
    generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step * 1009)
    drawn = flow.sample_time(cfg.batch_size, total, generator)
    own = student_times[torch.randint(len(student_times), (cfg.batch_size,), generator=generator)]
    t = torch.where(torch.rand(cfg.batch_size, generator=generator) < 0.5, own, drawn)
    x0, noise = {}, {}
    for s, clean in c.clean.items():
        n, length = pairs.targets[s], clean.shape[1]
        # the clip's tokens: given ones as they are, generated ones the teacher's; references after
        x0[s] = clean.clone()
        x0[s][:, :n] = torch.where(c.keep[s][:, :n, None], clean[:, :n], torch.stack([x[s] for x in clips]))
        # each pair's noise over its own tokens (its references may be fewer than the batch's longest)
        noise[s] = torch.cat([torch.nn.functional.pad(nz[s], (0, 0, 0, length - nz[s].shape[1])) for nz in noises])
    return flow_loss(student, batch, flow, generator, device, t=t, x0=x0, noise=noise)


def _save(out: Path, student: AVTransformer, opt: torch.optim.Optimizer, ema: list[torch.Tensor], step: int,
          teacher, cfg: DistillConfig) -> None:  # fmt: skip
    """`checkpoint.pt` (weights, EMA, optimiser, step), replaced by rename, and the EMA student
    exported as a model folder in `pipeline/`."""
    names = [n for n, _ in student.named_parameters()]
    tmp = out / "checkpoint.pt.tmp"
    torch.save({"model": student.state_dict(), "ema": dict(zip(names, ema, strict=True)), "opt": opt.state_dict(),
                "step": step, "model_config": config_to_dict(student.config)}, tmp)  # fmt: skip
    os.replace(tmp, out / "checkpoint.pt")
    from openseedance.engines.bundled import BundledEngine

    exported = AVTransformer(student.config)
    state = student.state_dict()
    state.update(dict(zip(names, (e.detach().cpu() for e in ema), strict=True)))
    exported.load_state_dict(state)
    config = dataclasses.replace(teacher.config, steps=cfg.student_steps, guidance=1.0, audio_guidance=1.0,
                                 reference_guidance=1.0, guidance_rescale=0.0,
                                 distilled_from=teacher.model_id)  # fmt: skip
    folder, staging = out / "pipeline", out / "pipeline.tmp"
    if staging.exists():
        shutil.rmtree(staging)
    BundledEngine(config, exported.float(), teacher.video_ae, teacher.audio_ae).save_pretrained(staging)
    teacher.save_pretrained(staging / TEACHER, autoencoders=False)  # the teacher, one flag away (--teacher)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(staging, folder)


def _resume(out: Path, student: AVTransformer, opt: torch.optim.Optimizer, ema: list[torch.Tensor]) -> int:
    path = out / "checkpoint.pt"
    if not path.is_file():
        return 0
    try:
        saved = torch.load(path, weights_only=True)
    except Exception as err:  # a damaged checkpoint must not be silently replaced by a fresh run
        raise ValueError(f"{path} is unreadable ({err}); move it away to start over") from None
    if saved["model_config"] != config_to_dict(student.config):
        raise ValueError(f"{path} holds a different transformer; use another --out to start over")
    student.load_state_dict(saved["model"])
    opt.load_state_dict(saved["opt"])
    names = [n for n, _ in student.named_parameters()]
    for name, e in zip(names, ema, strict=True):
        e.copy_(saved["ema"][name])
    return int(saved["step"])
