"""Parallelism, applied to a model from outside: the model files never import torch.distributed.

- `parallelize(model, ...)`: activation checkpointing per block (every block, or every n-th),
  `torch.compile` per block, and FSDP2 (`fully_shard` per block, then the root) with a mixed
  precision policy. State-dict keys do not change, so checkpoints load either way.
- Sharded checkpoints (`save_sharded` / `load_sharded`) through torch.distributed.checkpoint: a
  checkpoint written by N processes loads on M (including 1, without a process group).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.utils.checkpoint import checkpoint

from openseedance.transformer import AVTransformer

CHECKPOINTING = ("none", "full", "selective")


# ------------------------------------------------------------------ wrapping the model


def checkpoint_blocks(blocks: list[nn.Module], every: int = 1) -> None:
    """Recompute the activations of every `every`-th block in the backward pass instead of keeping
    them. The forward is replaced on the instance, so parameter names stay the same."""
    for i, block in enumerate(blocks):
        if i % every:
            continue
        inner = block.forward

        @functools.wraps(inner)
        def forward(*args, _inner=inner, **kwargs):
            return checkpoint(_inner, *args, use_reentrant=False, **kwargs)

        block.forward = forward


def parallelize(
    model: AVTransformer,
    *,
    fsdp: bool = False,
    activation_checkpointing: str = "none",
    compile: bool = False,
    param_dtype: torch.dtype | None = torch.bfloat16,
    mesh=None,
) -> AVTransformer:
    """Apply (in this order) activation checkpointing, compile and FSDP2 to `model` in place.

    `selective` checkpoints every second block (half the memory saving for half the recompute).
    FSDP2 needs an initialised process group; its parameters are gathered in `param_dtype` and
    gradients reduced in float32.
    """
    if activation_checkpointing not in CHECKPOINTING:
        raise ValueError(f"activation_checkpointing must be one of {CHECKPOINTING}, got {activation_checkpointing!r}")
    blocks = list(model.blocks)
    if activation_checkpointing != "none":
        checkpoint_blocks(blocks, every=1 if activation_checkpointing == "full" else 2)
    if compile:
        for block in blocks:
            block.compile()
    if fsdp:
        if not dist.is_initialized():
            raise ValueError("FSDP needs torch.distributed: run under torchrun")
        policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
        for block in blocks:
            fully_shard(block, mesh=mesh, mp_policy=policy)
        fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


# ------------------------------------------------------------------ sharded checkpoints


def save_sharded(folder: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                 extra: dict | None = None) -> Path:  # fmt: skip
    """Every process writes its shards of the model (and optimiser) state into `folder`."""
    folder = Path(folder)
    dcp.save(_sharded_state(model, optimizer, extra), checkpoint_id=str(folder))
    return folder


def load_sharded(folder: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                 extra: dict | None = None) -> None:  # fmt: skip
    """Load a sharded checkpoint into `model` (and `optimizer`), resharding to however many
    processes are running now (one process needs no process group). Tensors in `extra` are
    filled in place."""
    state = _sharded_state(model, optimizer, extra)
    dcp.load(state, checkpoint_id=str(folder))
    if optimizer is not None:
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    else:
        set_model_state_dict(model, state["model"])


def _sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer | None, extra: dict | None) -> dict:
    if optimizer is not None:
        model_state, optim_state = get_state_dict(model, optimizer)
        state = {"model": model_state, "optimizer": optim_state}
    else:
        state = {"model": get_model_state_dict(model)}
    if extra is not None:
        state["extra"] = extra
    return state


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole (unsharded) weights on the CPU, on rank 0 (empty elsewhere); every process must
    call it (a collective under FSDP)."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
