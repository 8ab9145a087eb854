"""What a training run is told: the generator's and the autoencoders' run configs.

Kept apart from the trainers and free of torch at import, so that the command line can build an
option for every field (`openseedance train ... --help`) without loading a model library; the
checks that need the model code import it when a config is made.
"""

from __future__ import annotations

from dataclasses import dataclass

CHECKPOINTING = ("none", "full", "selective")  # activation checkpointing (parallel.parallelize)
AUTOENCODERS = ("video-ae", "audio-ae")


def _check_positive(**values: float) -> None:
    bad = [f"{name}={value}" for name, value in values.items() if not value > 0]  # also refuses NaN
    if bad:
        raise ValueError(f"must be positive: {', '.join(bad)}")


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} must be within {low:g}..{high:g}, got {value}")


def _check_generator_run(cfg) -> None:
    """The checks a generator run and a distillation run share: the schedule, the EMA, the captions
    and the task mix over conditioning.TRAINING_TASKS."""
    from openseedance.conditioning import TRAINING_TASKS as TASKS

    _check_positive(steps=cfg.steps, batch_size=cfg.batch_size, checkpoint_every=cfg.checkpoint_every,
                    log_every=cfg.log_every, lr=cfg.lr, clips=cfg.clips, duration=cfg.duration,
                    grad_clip=cfg.grad_clip)  # fmt: skip
    if cfg.warmup < 0 or not cfg.weight_decay >= 0:
        raise ValueError(f"warmup and weight decay must be 0 or more, got {cfg.warmup} and {cfg.weight_decay}")
    _check_range("min_lr_ratio", cfg.min_lr_ratio, 0, 1)
    _check_range("ema_decay", cfg.ema_decay, 0, 1)
    _check_range("text_dropout", cfg.text_dropout, 0, 1)
    if len(cfg.tasks) != len(TASKS) or min(cfg.tasks) < 0 or sum(cfg.tasks) <= 0:
        raise ValueError(f"tasks needs {len(TASKS)} non-negative weights for {TASKS}")


@dataclass(frozen=True)
class GenTrainConfig:
    preset: str = "tiny"
    video_ae: str = ""  # a trained video autoencoder folder (config.json + safetensors)
    audio_ae: str = ""
    text_encoder: str = "minilm"
    data: str = "stage"  # "stage", or a folder of video files with .txt captions
    clips: int = 1024  # Stage clips in the latent cache
    cache: str = ""  # latent cache folder; default: <out>/latents
    duration: float = 4.0
    width: int = 64
    height: int = 64
    fps: float = 12.0
    sample_rate: int = 16000
    steps: int = 4000
    batch_size: int = 8  # per process
    lr: float = 5e-4
    warmup: int = 200
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    # bfloat16 autocast; None: on GPUs yes, on the CPU no (for the tiny preset on this project's
    # 2-core AVX-512 machine a training step measured 1.85x slower under autocast than in float32)
    bf16: bool | None = None
    text_dropout: float = 0.1
    # task mix (DESIGN §1): weights over conditioning.TRAINING_TASKS
    tasks: tuple[float, ...] = (0.36, 0.12, 0.08, 0.08, 0.12, 0.16, 0.08)
    init: str = ""  # a model folder whose transformer starts a new run (fine-tuning); ignored on resume
    shots: bool = True  # multi-shot Stage clips captioned part by part, each shot reading its own part
    seed: int = 0
    checkpoint_every: int = 200
    log_every: int = 10
    device: str = "cpu"
    # scale (applied from outside the model, parallel.py)
    fsdp: bool = False  # under torchrun: FSDP2 sharding instead of DDP replication
    activation_checkpointing: str = "none"  # none, full (every block) or selective (every second block)
    compile: bool = False  # torch.compile each block

    def __post_init__(self) -> None:
        from openseedance.transformer import transformer_config

        transformer_config(self.preset)
        _check_generator_run(self)
        _check_positive(width=self.width, height=self.height, fps=self.fps, sample_rate=self.sample_rate)
        if self.activation_checkpointing not in CHECKPOINTING:
            raise ValueError(f"activation_checkpointing must be one of {CHECKPOINTING}, "
                             f"got {self.activation_checkpointing!r}")  # fmt: skip


@dataclass(frozen=True)
class AETrainConfig:
    kind: str  # "video-ae" or "audio-ae"
    preset: str = "tiny"
    data: str = "stage"  # "stage" (rendered on the fly) or a folder of media files
    steps: int = 2000
    batch_size: int = 4
    lr: float = 1e-3
    warmup: int = 100
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    bf16: bool = False  # on this kind of CPU, conv training measured faster in float32
    checkpoint_every: int = 100
    log_every: int = 10
    # video windows
    width: int = 64
    height: int = 64
    fps: float = 12.0
    frames: int = 9
    # audio windows
    seconds: float = 1.0
    device: str = "cpu"
    init: str = ""  # start from this trained component folder (same preset)
    decoder_only: bool = False  # freeze the encoder (and the latent statistics); needs `init`
    warm_start: str = ""  # start from a trained component of another layout: what fits is carried over
    workers: int = 0  # processes rendering batches ahead (0: render in the training loop)
    # loss weights to use instead of the preset's, as ((term, weight), ...): ("detail", 0.0) sets
    # the model config's `detail_weight`; they are stored with the trained component
    loss_weights: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in AUTOENCODERS:
            raise ValueError(f"unknown autoencoder {self.kind!r}; choose from {sorted(AUTOENCODERS)}")
        _check_positive(steps=self.steps, batch_size=self.batch_size, checkpoint_every=self.checkpoint_every,
                        log_every=self.log_every, lr=self.lr, width=self.width, height=self.height, fps=self.fps,
                        frames=self.frames, seconds=self.seconds, grad_clip=self.grad_clip)  # fmt: skip
        if self.workers < 0:
            raise ValueError(f"workers must be 0 or more, got {self.workers}")
        if self.warmup < 0 or not self.weight_decay >= 0:
            raise ValueError(f"warmup and weight decay must be 0 or more, got {self.warmup} and {self.weight_decay}")
        _check_range("min_lr_ratio", self.min_lr_ratio, 0, 1)
        if self.decoder_only and not self.init:
            raise ValueError("decoder-only training needs a trained component to start from (init)")
        if self.warm_start and (self.init or self.decoder_only):
            raise ValueError("warm start is for another layout; for the same one (or decoder-only), use init alone")
        if self.loss_weights:
            from openseedance.train.autoencoders import loss_terms

            known = loss_terms(self.kind)
            for term, weight in self.loss_weights:
                if term not in known:
                    raise ValueError(f"{self.kind} has no loss term {term!r}; its terms: {', '.join(known)}")
                if not weight >= 0:  # also refuses NaN
                    raise ValueError(f"loss weight {term}={weight}: give a number >= 0")


@dataclass(frozen=True)
class DistillConfig:
    """A few-step student distilled from a model (`train/distill.py`): the teacher's guided clips
    from fixed noise, then the student trained on the straight paths between the two."""

    teacher: str = ""  # the model folder to distil ("": the bundled model)
    data: str = "stage"
    clips: int = 512  # Stage clips in the latent cache the conditions are drawn from
    cache: str = ""  # latent cache folder; default: <out>/latents
    duration: float = 4.0
    pairs: int = 1024  # (noise, teacher's clip) pairs
    teacher_steps: int = 0  # 0: the teacher's own default
    student_steps: int = 2  # the student's default, and the step times its training favours
    steps: int = 1500
    batch_size: int = 8
    lr: float = 2e-4
    warmup: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.995
    bf16: bool | None = None  # bfloat16 autocast for the teacher's clips and the student's steps; None: by machine
    text_dropout: float = 0.05
    # the task mix of the conditions, over conditioning.TRAINING_TASKS (the bundled model's last one)
    tasks: tuple[float, ...] = (0.2, 0.08, 0.06, 0.06, 0.1, 0.5, 0.0)
    shots: bool = True
    seed: int = 0
    checkpoint_every: int = 100
    log_every: int = 10
    device: str = "cpu"

    def __post_init__(self) -> None:
        _check_generator_run(self)
        _check_positive(pairs=self.pairs, student_steps=self.student_steps)
        if self.teacher_steps < 0:
            raise ValueError(f"teacher_steps must be 0 (the teacher's default) or more, got {self.teacher_steps}")
