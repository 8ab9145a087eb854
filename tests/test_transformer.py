"""The AV transformer on the debug preset: shapes, zero-init identity, per-token time, text padding,
rotary positions, gradients, the 1B preset on the meta device."""

from __future__ import annotations

import dataclasses
from dataclasses import replace

import pytest
import torch

from openseedance import layers
from openseedance.request import REFERENCE_LIMITS, role_id
from openseedance.transformer import NUM_ROLES, PRESETS, AVTransformer, Text, Tokens, transformer_config


def _inputs(b: int = 2, nv: int = 12, na: int = 5, nt: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cfg = transformer_config("debug")
    video = Tokens(torch.randn(b, nv, cfg.video_token_channels, generator=g), torch.rand(b, nv, generator=g),
                   torch.rand(b, nv, 3, generator=g) * 4)  # fmt: skip
    audio = Tokens(torch.randn(b, na, cfg.audio_channels, generator=g), torch.rand(b, na, generator=g),
                   torch.rand(b, na, 3, generator=g) * 4)  # fmt: skip
    text = Text(torch.randn(b, nt, cfg.text_dim, generator=g), torch.ones(b, nt, dtype=torch.bool))
    return {"video": video, "audio": audio}, text


def _trained_like(seed: int = 0) -> AVTransformer:
    """A debug model with every weight random (a fresh one is zero at the output by design)."""
    torch.manual_seed(seed)
    model = AVTransformer(transformer_config("debug"))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def test_output_shapes_and_zero_init() -> None:
    model = AVTransformer(transformer_config("debug"))
    streams, text = _inputs()
    out = model(streams, text)
    assert out["video"].shape == streams["video"].x.shape
    assert out["audio"].shape == streams["audio"].x.shape
    assert all(float(v.detach().abs().max()) == 0.0 for v in out.values())  # adaLN-zero heads


def test_one_stream_alone_and_unknown_stream() -> None:
    model = _trained_like()
    streams, text = _inputs()
    assert set(model({"video": streams["video"]}, text)) == {"video"}
    with pytest.raises(ValueError, match="subset"):
        model({"text": streams["video"]}, text)


def test_per_token_time_changes_only_through_t() -> None:
    model = _trained_like()
    streams, text = _inputs()
    base = model(streams, text)["video"]
    streams["video"].t[:, :3] = 0.0
    changed = model(streams, text)["video"]
    assert not torch.allclose(base, changed)


def test_text_padding_is_ignored() -> None:
    model = _trained_like()
    streams, text = _inputs(b=1)
    short = model(streams, text)
    padded = Text(torch.cat([text.states, torch.randn(1, 3, text.states.shape[2])], 1),
                  torch.cat([text.mask, torch.zeros(1, 3, dtype=torch.bool)], 1))  # fmt: skip
    torch.testing.assert_close(model(streams, padded)["video"], short["video"], atol=1e-5, rtol=1e-5)


def test_rotary_scores_depend_only_on_offsets() -> None:
    rope = layers.Rotary((8, 4, 4))
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)
    p, r = torch.tensor([[[1.3, 2.0, 5.0]]]), torch.tensor([[[0.2, 7.0, 1.0]]])
    shift = torch.tensor([[[4.0, -3.0, 2.5]]])

    def score(a, b):
        return (layers.apply_rotary(q, rope(a)) * layers.apply_rotary(k, rope(b))).sum()

    torch.testing.assert_close(score(p, r), score(p + shift, r + shift), atol=1e-4, rtol=1e-4)
    assert abs(float(score(p, r) - score(p + shift, r))) > 1e-3


def test_audio_against_video_timing_changes_the_output() -> None:
    model = _trained_like()
    streams, text = _inputs(b=1)
    base = model(streams, text)["audio"]
    streams["audio"].pos[..., 0] += 0.5
    assert not torch.allclose(model(streams, text)["audio"], base, atol=1e-4)


def test_gradients_reach_every_parameter() -> None:
    model = AVTransformer(transformer_config("debug"))
    streams, text = _inputs()
    loss = sum(v.pow(2).mean() for v in model(streams, text).values())
    # adaLN-zero: the heads move first, then the gates, then the weights behind them (text one block later)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(4):
        opt.zero_grad()
        loss = sum((v - 1).pow(2).mean() for v in model(streams, text).values())
        loss.backward()
        opt.step()
    missing = [n for n, p in model.named_parameters() if p.grad is None or float(p.grad.abs().max()) == 0]
    assert not missing, missing


def test_attention_seam_is_used() -> None:
    calls = []

    def counting(q, k, v, mask):
        calls.append(q.shape)
        return layers.sdpa_attention(q, k, v, mask)

    previous = layers.set_attention(counting)
    try:
        model = _trained_like()
        streams, text = _inputs()
        model(streams, text)
    finally:
        layers.set_attention(previous)
    assert len(calls) == model.config.depth
    assert calls[0][2] == 12 + 5 + 4  # joint over video, audio and text tokens


def test_presets_build_on_meta_and_report_size() -> None:
    with torch.device("meta"):
        big = AVTransformer(PRESETS["1b"])
    assert 0.9e9 < big.num_parameters() < 1.5e9
    tokens = {"video": 4096, "audio": 250, "text": 64}
    n, p, cfg = sum(tokens.values()), big.num_parameters(), big.config
    attention = 4 * n * n * cfg.dim * cfg.depth
    # each token passes through its own stream's weights: about a third of the model
    assert 2 * (p / 3) * 4096 + attention < big.flops(tokens) < 2 * (p / 2) * n + attention
    with pytest.raises(ValueError, match="unknown transformer preset"):
        transformer_config("huge")


def test_reference_roles() -> None:
    from openseedance.conditioning import REF_SLOT, Layout, reference_tokens

    model = _trained_like()
    streams, text = _inputs()
    zero = torch.zeros(2, 12, dtype=torch.long)
    same = dict(streams, video=Tokens(streams["video"].x, streams["video"].t, streams["video"].pos, role=zero))
    assert torch.allclose(model(streams, text)["video"], model(same, text)["video"])  # role 0: the clip itself
    other = dict(streams, video=Tokens(streams["video"].x, streams["video"].t, streams["video"].pos, role=zero + 3))
    assert not torch.allclose(model(streams, text)["video"], model(other, text)["video"])
    with pytest.raises(ValueError, match="role"):
        Tokens(streams["video"].x, streams["video"].t, streams["video"].pos, role=zero[:, :3])
    with pytest.raises(ValueError, match="no role for image reference 10"):
        role_id("image", 9)
    # weights saved before roles existed load, with no roles learnt
    state = {k: v for k, v in model.state_dict().items() if k != "roles.weight"}
    fresh = AVTransformer(transformer_config("debug"))
    fresh.load_state_dict(state)
    assert not fresh.roles.weight.detach().any()
    # reference groups sit before the clip, one slot each, with their roles
    layout = Layout((3, 4, 4), (1, 2, 2), 12.0, 4, 25, 25.0)
    refs = reference_tokens([torch.randn(1, 4, 1, 4, 4)] * 2, [torch.randn(1, 8, 50)], layout)
    assert refs.count == {"video": 8, "audio": 50}
    assert refs.role["video"][0].tolist() == [role_id("image", 0)] * 4 + [role_id("image", 1)] * 4
    assert (refs.pos["video"][0, :, 0] < 0).all() and (refs.pos["audio"][0, :, 0] < 0).all()
    assert refs.pos["video"][0, :4, 1:].tolist() == layout.video_positions()[:4, 1:].tolist()
    with pytest.raises(ValueError, match=r"image reference 1 has latents of \(2, 2\), the clip's \(4, 4\)"):
        reference_tokens([torch.randn(1, 4, 1, 2, 2)], [], layout)
    # a reference video keeps its own timing, in its own slot
    clip = torch.randn(1, 4, 5, 4, 4)
    refs = reference_tokens([], [], layout, videos=[clip, clip])
    assert refs.count == {"video": 40} and "audio" not in refs.count
    assert refs.role["video"][0].tolist() == [role_id("video", 0)] * 20 + [role_id("video", 1)] * 20
    own = replace(layout, video_grid=(5, 4, 4)).video_positions()
    first, second = refs.pos["video"][0, :20], refs.pos["video"][0, 20:]
    assert torch.allclose(first[:, 0] - own[:, 0], torch.full((20,), -REF_SLOT * role_id("video", 0)))
    assert torch.allclose(second[:, 0] - first[:, 0], torch.full((20,), -REF_SLOT))
    assert first[:, 0].max() < -REF_SLOT * role_id("image", 8)  # after every image slot, before the clip


def test_the_role_table_has_a_row_for_every_reference_a_request_may_carry() -> None:
    last = max(role_id(kind, limit - 1) for kind, limit in REFERENCE_LIMITS.items())
    assert last == NUM_ROLES - 1 and role_id("target") == 0
    numbers = [role_id(kind, i) for kind, limit in REFERENCE_LIMITS.items() for i in range(limit)]
    assert len(set(numbers)) == len(numbers) == NUM_ROLES - 1  # one row each, none shared


def test_a_shot_reads_only_its_own_caption_and_the_global_one() -> None:
    model = _trained_like()
    streams, _ = _inputs(b=1, nv=12, na=6)
    g = torch.Generator().manual_seed(3)
    states = torch.randn(1, 9, transformer_config("debug").text_dim, generator=g)
    parts = torch.tensor([[0, 0, 0, 1, 1, 1, 2, 2, 2]])  # global, shot 1, shot 2
    shot = {"video": torch.tensor([[1] * 6 + [2] * 6]), "audio": torch.tensor([[1] * 3 + [2] * 3])}
    tok = {s: Tokens(t.x, t.t, t.pos, shot=shot[s]) for s, t in streams.items()}
    ones = torch.ones(1, 9, dtype=torch.bool)

    def run(s: torch.Tensor) -> dict[str, torch.Tensor]:
        return model(tok, Text(s, ones, parts))

    base = run(states)
    other_shot2 = states.clone()
    other_shot2[:, 6:] += 1.0
    changed = run(other_shot2)
    # shot 2's words reach shot 2's tokens; shot 1's tokens only second-hand, through shot 2's tokens
    # in the next block, so much less than without the mask (exactly not at all in one block: below)
    assert not torch.allclose(base["video"][:, 6:], changed["video"][:, 6:])
    flat = model(tok, Text(states, ones)), model(tok, Text(other_shot2, ones))
    masked_change = (changed["video"][:, :6] - base["video"][:, :6]).abs().mean()
    flat_change = (flat[1]["video"][:, :6] - flat[0]["video"][:, :6]).abs().mean()
    assert masked_change < 0.5 * flat_change
    mask = AVTransformer._mask(tok, Text(states, ones, parts))
    assert mask.shape == (1, 1, 12 + 6 + 9, 12 + 6 + 9)
    video_shot1_row = mask[0, 0, 0, 18:].tolist()
    assert video_shot1_row == [True] * 6 + [False] * 3  # global and shot 1's words, not shot 2's
    assert mask[0, 0, 20].all()  # the words themselves read everything


def test_one_block_shot_isolation_is_exact() -> None:
    cfg = transformer_config("debug")
    torch.manual_seed(0)
    model = AVTransformer(dataclasses.replace(cfg, depth=1))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    streams, _ = _inputs(b=1, nv=4, na=2)
    shot = {"video": torch.tensor([[1, 1, 2, 2]]), "audio": torch.tensor([[1, 2]])}
    tok = {s: Tokens(t.x, t.t, t.pos, shot=shot[s]) for s, t in streams.items()}
    states = torch.randn(1, 6, cfg.text_dim)
    parts, ones = torch.tensor([[0, 0, 1, 1, 2, 2]]), torch.ones(1, 6, dtype=torch.bool)
    other = states.clone()
    other[:, 4:] += 1.0  # shot 2's words
    a, b = model(tok, Text(states, ones, parts)), model(tok, Text(other, ones, parts))
    assert torch.allclose(a["video"][:, :2], b["video"][:, :2], atol=1e-6)  # shot 1 never saw them
    assert torch.allclose(a["audio"][:, :1], b["audio"][:, :1], atol=1e-6)
    assert not torch.allclose(a["video"][:, 2:], b["video"][:, 2:])
