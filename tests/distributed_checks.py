"""Checks run under `torchrun --nproc_per_node=2` (gloo, CPU) by tests/test_parallel.py.

    torchrun --standalone --nproc_per_node=2 tests/distributed_checks.py OUT_DIR

Each check compares a distributed result with the single-process one computed on every rank and
raises on a mismatch; rank 0 writes OUT_DIR/ok.json naming the checks that passed.
"""

from __future__ import annotations

import copy
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist

from openseedance import layers, parallel
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


def check_ulysses_attention() -> None:
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, 4, 10, 16, generator=g) for _ in range(3))
    full = layers.sdpa_attention(q, k, v, None)
    rank, size = dist.get_rank(), dist.get_world_size()
    local = parallel.ulysses_attention()(*(x.chunk(size, 2)[rank] for x in (q, k, v)), None)
    torch.testing.assert_close(local, full.chunk(size, 2)[rank], atol=1e-5, rtol=1e-5)


def check_context_parallel_model() -> None:
    model = _model()
    streams, text = _inputs()
    expected = model(streams, text)
    got = parallel.ContextParallel(model)(streams, text)
    for s in expected:
        torch.testing.assert_close(got[s], expected[s], atol=1e-4, rtol=1e-4)
    # gradients: the loss on the gathered outputs, parameter gradients summed over the group
    single = _model()
    loss = sum(v.pow(2).mean() for v in single(streams, text).values())
    loss.backward()
    sharded = _model()
    loss = sum(v.pow(2).mean() for v in parallel.ContextParallel(sharded)(streams, text).values())
    loss.backward()
    parallel.reduce_gradients(sharded)
    for (name, a), b in zip(single.named_parameters(), sharded.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-4, rtol=1e-3, msg=name)


def check_context_parallel_shots() -> None:
    """A multi-shot prompt: each shot's clip tokens read the global caption and their own shot's
    part only. Odd token counts, so the per-shot mask meets padding on every process."""
    model = _model()
    streams, text = _inputs(nt=9)
    for s, tok in streams.items():
        n = tok.x.shape[1]
        streams[s] = Tokens(tok.x, tok.t, tok.pos, shot=torch.tensor([[1] * (n // 2) + [2] * (n - n // 2)] * 2))
    parts = torch.tensor([[0, 0, 0, 1, 1, 1, 2, 2, 2], [0, 0, 1, 1, 2, 2, 2, 0, 0]])
    text = Text(text.states, torch.tensor([[True] * 9, [True] * 7 + [False] * 2]), parts)
    expected = model(streams, text)
    got = parallel.ContextParallel(model)(streams, text)
    for s in expected:
        torch.testing.assert_close(got[s], expected[s], atol=1e-4, rtol=1e-4)
    flat = model(streams, Text(text.states, text.mask))  # the mask matters: without it the outputs differ
    assert not torch.allclose(flat["video"], expected["video"], atol=1e-3)


def check_context_parallel_citation_bias() -> None:
    """A model with a citation bias: the prompt's citations and the reference tokens they cite,
    split over the processes like every other token, give the single-process result."""
    torch.manual_seed(1)
    model = AVTransformer(replace(transformer_config("debug"), cite_roles=True, cite_bias=True))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        model.cite_bias.fill_(0.2)  # a logit bias of 2
    streams, text = _inputs()
    video = streams["video"]
    role = torch.zeros(video.x.shape[:2], dtype=torch.long)
    role[:, -5:] = 3  # the last video tokens are reference @image3's
    streams["video"] = Tokens(video.x, video.t, video.pos, role=role)
    cites = torch.zeros(text.mask.shape, dtype=torch.long)
    cites[:, 1:3] = 3
    text = Text(text.states, text.mask, role=cites)
    expected = model(streams, text)
    got = parallel.ContextParallel(model)(streams, text)
    for s in expected:
        torch.testing.assert_close(got[s], expected[s], atol=1e-4, rtol=1e-4)


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
    for name, check in (("ulysses_attention", check_ulysses_attention),
                        ("context_parallel_model", check_context_parallel_model),
                        ("context_parallel_shots", check_context_parallel_shots),
                        ("context_parallel_citation_bias", check_context_parallel_citation_bias),
                        ("fsdp_matches_single_process", lambda: check_fsdp_matches_single_process(out))):  # fmt: skip
        check()
        dist.barrier()
        passed.append(name)
    if dist.get_rank() == 0:
        (out / "ok.json").write_text(json.dumps(passed))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
