"""Named generator training runs: the stages that `recipes/*.sh` run, as `GenTrainConfig` values.

    openseedance train generator --recipe tiny-shots --out runs/gen --video-ae V --audio-ae A --init M

A recipe holds what makes a stage what it is: the transformer preset, the schedule, the task mix,
the captions. What belongs to one machine or run (the autoencoders, `--init`, `--cache`, the device
for CPU recipes) is given on the command line, and any option given overrides the recipe's value.
"""

from __future__ import annotations

from dataclasses import replace

from openseedance.conditioning import TRAINING_TASKS as TASKS
from openseedance.train.config import GenTrainConfig


def task_mix(**weights: float) -> tuple[float, ...]:
    """Weights over conditioning.TRAINING_TASKS by name; tasks not named get 0."""
    unknown = set(weights) - set(TASKS)
    if unknown:
        raise ValueError(f"unknown tasks {sorted(unknown)}; tasks: {', '.join(TASKS)}")
    return tuple(float(weights.get(task, 0.0)) for task in TASKS)


# the mix the bundled transformer learnt first, and the one it learnt once references existed
BEFORE_REFERENCES = task_mix(t2av=0.5, i2av=0.15, a2v=0.1, v2a=0.1, extend=0.15)
WITH_REFERENCES = task_mix(t2av=0.3, i2av=0.1, a2v=0.08, v2a=0.08, extend=0.12, references=0.32)

_TINY = GenTrainConfig(preset="tiny", batch_size=4, ema_decay=0.995, checkpoint_every=100)

RECIPES: dict[str, GenTrainConfig] = {
    # seconds on a CPU with debug autoencoders: the whole path (latent cache, steps, checkpoint,
    # export) for tests and quick checks, never for a model
    "debug": GenTrainConfig(preset="debug", clips=4, duration=1.0, steps=6, batch_size=2, lr=2e-3, warmup=2,
                            checkpoint_every=3, log_every=1),
    # the bundled tiny transformer from nothing, on the five tasks it learnt before references
    "tiny-scratch": replace(_TINY, steps=1400, lr=1e-3, warmup=100, tasks=BEFORE_REFERENCES),
    # then references (portraits and voices) joined the mix, one caption per clip; the bundled run
    # took 200 steps of this schedule (--stop-after 200)
    "tiny-references": replace(_TINY, steps=900, lr=5e-4, warmup=50, tasks=WITH_REFERENCES, shots=False),
    # then the same mix with multi-shot clips captioned shot by shot
    "tiny-shots": replace(_TINY, steps=1100, lr=5e-4, warmup=50, tasks=WITH_REFERENCES),
    # last, the bundled model trained further with references in half its samples
    "tiny-references-half": replace(_TINY, steps=600, lr=3e-4, warmup=20, seed=2, checkpoint_every=50,
                                    tasks=task_mix(t2av=0.2, i2av=0.08, a2v=0.06, v2a=0.06, extend=0.1,
                                                   references=0.5)),
    # one GPU at batch 32: the bundled transformer trained further on the latents of another video
    # autoencoder (recipes/tiny_t2_gpu.sh gives it the steps that fit its time budget)
    "tiny-gpu": replace(_TINY, batch_size=32, lr=5e-4, warmup=50, tasks=WITH_REFERENCES, checkpoint_every=500,
                        device="cuda"),
}
