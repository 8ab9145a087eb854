"""Checks run under `torchrun --nproc_per_node=2` (gloo, CPU) by tests/test_parallel.py.

    torchrun --standalone --nproc_per_node=2 tests/distributed_checks.py OUT_DIR

Each check compares a distributed result with the single-process one computed on every rank and
raises on a mismatch; rank 0 writes OUT_DIR/ok.json naming the checks that passed.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from openseedance import parallel
from openseedance.transformer import AVTransformer, Text, Tokens, transformer_config


def _model(seed: int = 0) -> AVTransformer:
    torch.manual_seed(seed)
    model = AVTransformer(transformer_config("debug"))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _inputs(b: int = 2, nv: int = 13, na: int = 7, nt: int = 5):
    g = torch.Generator().manual_seed(123)
    cfg = transformer_config("debug")
    streams = {
        "video": Tokens(torch.randn(b, nv, cfg.video_token_channels, generator=g), torch.rand(b, nv, generator=g),
                        torch.rand(b, nv, 3, generator=g) * 4),
        "audio": Tokens(torch.randn(b, na, cfg.audio_channels, generator=g), torch.rand(b, na, generator=g),
                        torch.rand(b, na, 3, generator=g) * 4),
    }  # fmt: skip
    mask = torch.ones(b, nt, dtype=torch.bool)
    mask[1, 3:] = False
    return streams, Text(torch.randn(b, nt, cfg.text_dim, generator=g), mask)


def check_fsdp_matches_single_process(out: Path) -> None:
    """A few AdamW steps: FSDP2 over 2 processes (each with half the batch) vs one process with
    the whole batch; then a sharded checkpoint for the 1-process load check."""
    streams, text = _inputs(b=4)
    rank, size = dist.get_rank(), dist.get_world_size()

    def loss_of(model, rows):
        sub = {s: Tokens(t.x[rows], t.t[rows], t.pos[rows]) for s, t in streams.items()}
        out = model(sub, Text(text.states[rows], text.mask[rows]))
        return sum((v - 0.5).pow(2).mean() for v in out.values())

    single = _model(1)
    opt1 = torch.optim.AdamW(single.parameters(), lr=1e-2)
    sharded = parallel.parallelize(copy.deepcopy(single), fsdp=True, activation_checkpointing="full",
                                   param_dtype=None)  # fmt: skip
    opt2 = torch.optim.AdamW(sharded.parameters(), lr=1e-2)
    mine = slice(rank * 4 // size, (rank + 1) * 4 // size)
    for _ in range(3):
        opt1.zero_grad()
        loss_of(single, slice(None)).backward()
        opt1.step()
        opt2.zero_grad()
        loss_of(sharded, mine).backward()  # FSDP averages the gradients of the two halves
        opt2.step()
    full = parallel.full_state_dict(sharded)  # gathered on rank 0
    if rank == 0:
        for name, value in single.state_dict().items():
            torch.testing.assert_close(full[name], value, atol=2e-4, rtol=1e-3, msg=name)
    parallel.save_sharded(out / "sharded", sharded, opt2, extra={"step": torch.tensor(3)})
    if rank == 0:
        torch.save(single.state_dict(), out / "expected.pt")


def main() -> None:
    out = Path(sys.argv[1])
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    passed = []
    for name, check in (("fsdp_matches_single_process", lambda: check_fsdp_matches_single_process(out)),):
        check()
        dist.barrier()
        passed.append(name)
    if dist.get_rank() == 0:
        (out / "ok.json").write_text(json.dumps(passed))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
