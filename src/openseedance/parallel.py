"""Parallelism, applied to a model from outside: the model files never import torch.distributed.

- `parallelize(model, ...)`: activation checkpointing per block (every block, or every n-th),
  `torch.compile` per block, and FSDP2 (`fully_shard` per block, then the root) with a mixed
  precision policy. State-dict keys do not change, so checkpoints load either way.
- Context (sequence) parallelism through the one `attention()` seam: every process holds a slice
  of each stream's tokens; attention swaps the sequence split for a head split with an all-to-all
  (Ulysses), attends over the whole sequence for its heads, and swaps back. Everything else in the
  model works token by token, so nothing else changes. `ContextParallel` shards inputs, runs the
  model and gathers the outputs, for training and for sampling.
- Sharded checkpoints (`save_sharded` / `load_sharded`) through torch.distributed.checkpoint: a
  checkpoint written by N processes loads on M (including 1, without a process group).

Legend: B batch, H heads, N tokens (whole sequence), n tokens on this process, Dh head dim, P
processes in the context-parallel group.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Iterator
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

from openseedance import layers
from openseedance.transformer import AVTransformer, Text, Tokens

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


# ------------------------------------------------------------------ context parallelism


def _all_to_all(x: torch.Tensor, scatter_dim: int, gather_dim: int, group) -> torch.Tensor:
    """Split `x` along `scatter_dim` over the group, and concatenate what arrives along `gather_dim`."""
    size = dist.get_world_size(group)
    inputs = [c.contiguous() for c in x.chunk(size, dim=scatter_dim)]
    outputs = [torch.empty_like(inputs[0]) for _ in range(size)]
    dist.all_to_all(outputs, inputs, group=group)
    return torch.cat(outputs, dim=gather_dim)


class _AllToAll(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scatter_dim: int, gather_dim: int, group) -> torch.Tensor:
        ctx.dims, ctx.group = (scatter_dim, gather_dim), group
        return _all_to_all(x, scatter_dim, gather_dim, group)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        scatter_dim, gather_dim = ctx.dims
        return _all_to_all(grad, gather_dim, scatter_dim, ctx.group), None, None, None


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, dim: int, group) -> torch.Tensor:
        ctx.dim, ctx.group = dim, group
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=dim)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # the gathered output feeds a loss computed identically on every process, so each process's
        # share of the gradient is its own slice
        return grad.chunk(dist.get_world_size(ctx.group), dim=ctx.dim)[dist.get_rank(ctx.group)], None, None


def ulysses_attention(group=None, full_mask: torch.Tensor | None = None,
                      clip_rows: torch.Tensor | None = None) -> layers.AttentionFn:  # fmt: skip
    """Attention over a sequence split across `group`: q, k, v are (B, H, n, Dh) slices (H must be
    divisible by the group size); the key mask, if any, is (B, 1, 1, n) for the local keys.
    `full_mask` (B, 1, N, N), over the whole sequence in the order the processes hold it (process
    0's tokens, then process 1's...), replaces the gathered key mask: a mask that depends on the
    query as well (per-shot text) cannot be gathered from the local ones. It must be given on every
    process or on none; `clip_rows` are its rows for a block whose text asks no queries."""

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        size = dist.get_world_size(group)
        if q.shape[1] % size:
            raise ValueError(f"context parallelism over {size} processes needs heads divisible by {size}")
        q, k, v = (_AllToAll.apply(x, 1, 2, group) for x in (q, k, v))  # (B, H/P, N, Dh)
        if full_mask is None:
            if mask is None:  # every process must join the gather, padded or not
                mask = torch.ones(k.shape[0], 1, 1, k.shape[2] // size, dtype=torch.bool, device=k.device)
            mask = _gather_mask(mask, group)
        elif q.shape[2] == full_mask.shape[2]:
            mask = full_mask.to(q.device)
        else:  # a block whose text asks no queries: the rows of the clip's tokens
            mask = full_mask[:, :, clip_rows].to(q.device)
        out = layers.sdpa_attention(q, k, v, None if bool(mask.all()) else mask)
        return _AllToAll.apply(out, 2, 1, group)  # (B, H, n, Dh)

    return attend


def _gather_mask(mask: torch.Tensor, group) -> torch.Tensor:
    parts = [torch.empty_like(mask) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, mask.contiguous(), group=group)
    return torch.cat(parts, dim=-1)


@contextlib.contextmanager
def attention_kernel(fn: layers.AttentionFn) -> Iterator[None]:
    previous = layers.set_attention(fn)
    try:
        yield
    finally:
        layers.set_attention(previous)


class ContextParallel:
    """Run an AVTransformer with every stream's tokens split across `group`.

    Each stream (and the text) is padded to a multiple of the group size; padding tokens are hidden
    from attention by the key mask and dropped from the outputs. Call it with the whole inputs on
    every process (the same on all of them): it returns the whole outputs, gathered."""

    def __init__(self, model: nn.Module, group=None) -> None:
        self.model, self.group = model, group

    def __call__(self, streams: dict[str, Tokens], text: Text) -> dict[str, torch.Tensor]:
        size, rank = dist.get_world_size(self.group), dist.get_rank(self.group)

        def mine(x: torch.Tensor) -> torch.Tensor:
            return _pad_to(x, size).chunk(size, dim=1)[rank]

        local = {}
        for s, tok in streams.items():
            role = mine(tok.role) if tok.role is not None else None  # references keep their roles
            local[s] = Tokens(mine(tok.x), mine(tok.t), mine(tok.pos), mine(_valid(tok)), role)
        shots = text.shot is not None and bool(text.shot.any())
        full, rows = _shot_mask(streams, text, size) if shots else (None, None)
        with attention_kernel(ulysses_attention(self.group, full, rows)):
            cites = mine(text.role) if text.role is not None else None
            out = self.model(local, Text(mine(text.states), mine(text.mask), None, cites))
        return {s: _AllGather.apply(v, 1, self.group)[:, : streams[s].x.shape[1]] for s, v in out.items()}


def _shot_mask(streams: dict[str, Tokens], text: Text, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's own per-shot attention mask over the padded whole inputs (padding hidden), with
    rows and columns reordered from (streams..., text) to the order the processes hold the tokens:
    each process's share of every stream and of the text, process by process; and which of its rows
    are the clip's tokens (not the text's)."""
    padded = {}
    for s, tok in streams.items():
        shot = tok.shot if tok.shot is not None else torch.zeros(tok.x.shape[:2], dtype=torch.long)
        padded[s] = Tokens(*(_pad_to(x, size) for x in (tok.x, tok.t, tok.pos, _valid(tok))), None,
                           _pad_to(shot.to(tok.x.device), size))  # fmt: skip
    text = Text(_pad_to(text.states, size), _pad_to(text.mask, size), _pad_to(text.shot, size))
    mask = AVTransformer._mask(padded, text)
    lengths = [tok.x.shape[1] for tok in padded.values()] + [text.mask.shape[1]]
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    order = torch.cat([torch.arange(start + r * (n // size), start + (r + 1) * (n // size))
                       for r in range(size) for start, n in zip(starts, lengths, strict=True)])  # fmt: skip
    clip = torch.cat([torch.ones(sum(lengths[:-1]), dtype=torch.bool), torch.zeros(lengths[-1], dtype=torch.bool)])
    return mask[:, :, order][:, :, :, order], clip[order].nonzero().squeeze(1)


def reduce_gradients(model: nn.Module, group=None) -> None:
    """Sum parameter gradients over a context-parallel group: each process saw only its tokens."""
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, group=group)


def _valid(tok: Tokens) -> torch.Tensor:
    """Which of a stream's tokens are real (all of them when it says nothing), on its device; padding
    added by `_pad_to` is False."""
    if tok.valid is None:
        return torch.ones(tok.x.shape[:2], dtype=torch.bool, device=tok.x.device)
    return tok.valid.to(tok.x.device)


def _pad_to(x: torch.Tensor, size: int, dim: int = 1) -> torch.Tensor:
    n = x.shape[dim]
    extra = math.ceil(n / size) * size - n
    if extra == 0:
        return x
    shape = list(x.shape)
    shape[dim] = extra
    return torch.cat([x, torch.zeros(shape, dtype=x.dtype, device=x.device)], dim=dim)


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
