"""Rectified-flow math and the sampler: exact paths, shifts, schedules, guidance, clean tokens,
determinism."""

from __future__ import annotations

import pytest
import torch

from openseedance.engines import RunOptions
from openseedance.flow import RectifiedFlow
from openseedance.sampling import Branch, SamplerConfig, denoise, guided, schedule


def test_path_and_target_are_exact() -> None:
    x0, noise = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    t = torch.rand(2, 5)
    xt = RectifiedFlow.noisy(x0, noise, t)
    torch.testing.assert_close(xt, (1 - t[..., None]) * x0 + t[..., None] * noise)
    v = RectifiedFlow.velocity(x0, noise)
    # one Euler step along the true velocity lands exactly on the path
    torch.testing.assert_close(RectifiedFlow.step(xt, v, t, torch.zeros_like(t)), x0, atol=1e-6, rtol=0)


def test_shift_grows_with_tokens_and_keeps_ends() -> None:
    flow = RectifiedFlow()
    assert flow.shift(256) == pytest.approx(1.6487, rel=1e-3)
    assert flow.shift(4096) > flow.shift(1024) > flow.shift(256)
    t = torch.tensor([0.0, 0.5, 1.0])
    shifted = flow.shift_time(t, 3.0)
    assert shifted[0] == 0 and shifted[2] == 1 and shifted[1] == pytest.approx(0.75)


def test_training_times_are_seeded_and_in_range() -> None:
    flow = RectifiedFlow()
    a = flow.sample_time(1000, 900, torch.Generator().manual_seed(1))
    b = flow.sample_time(1000, 900, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and float(a.min()) > 0 and float(a.max()) < 1
    assert float(a.median()) > 0.5  # shifted towards noise


def test_loss_ignores_clean_tokens() -> None:
    pred, target = torch.zeros(1, 4, 2), torch.ones(1, 4, 2)
    target[0, :2] = 100.0
    weight = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    assert float(RectifiedFlow.loss(pred, target, weight)) == pytest.approx(1.0)


def test_schedule_runs_from_noise_to_data() -> None:
    s = schedule(4, 1.0)
    torch.testing.assert_close(s, torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
    assert bool((schedule(8, 3.0).diff() < 0).all())


def _linear_field(target: torch.Tensor):
    """The exact velocity field that carries any noise to `target` (a point mass)."""

    def fn(x, t, branches):
        out = {}
        for s in x:
            tt = t[s][..., None].clamp_min(1e-6)
            out[s] = (x[s] - target) / tt  # v = (x_t - x0) / t for a point mass at x0
        return [out for _ in branches]

    return fn


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_denoise_reaches_a_point_mass_and_holds_clean_tokens(solver: str) -> None:
    target = torch.randn(1, 6, 3)
    noise = {"video": torch.randn(1, 6, 3)}
    keep = {"video": torch.tensor([[True, False, False, False, False, True]])}
    clean = {"video": torch.full((1, 6, 3), 7.0)}
    cfg = SamplerConfig(steps=4, solver=solver, guidance={"video": 1.0})
    out = denoise(_linear_field(target), noise, clean, keep, config=cfg, shift=2.0)["video"]
    torch.testing.assert_close(out[:, 1:5], target[:, 1:5], atol=1e-4, rtol=0)
    assert bool((out[:, [0, 5]] == 7.0).all())


def test_guidance_mixes_per_stream() -> None:
    def fn(x, t, branches):
        return [{s: torch.full_like(x[s], 2.0 if b is Branch.COND else 1.0) for s in x} for b in branches]

    v = guided(fn, {"video": 3.0, "audio": 1.0})({"video": torch.zeros(1, 2, 1), "audio": torch.zeros(1, 2, 1)}, {})
    assert float(v["video"][0, 0, 0]) == 4.0  # 1 + 3 * (2 - 1)
    assert float(v["audio"][0, 0, 0]) == 2.0  # scale 1: the conditional velocity


def test_reference_guidance_adds_a_branch_only_when_asked() -> None:
    asked = []
    value = {Branch.COND: 4.0, Branch.UNCOND: 2.0, Branch.BARE: 1.0}

    def fn(x, t, branches):
        asked.append(branches)
        return [{s: torch.full_like(x[s], value[b]) for s in x} for b in branches]

    x = {"video": torch.zeros(1, 2, 1), "audio": torch.zeros(1, 2, 1)}
    v = guided(fn, {"video": 3.0, "audio": 1.0}, reference=2.5)(x, {})
    assert asked == [(Branch.COND, Branch.UNCOND, Branch.BARE)]
    assert float(v["video"][0, 0, 0]) == 1.0 + 2.5 * (2 - 1) + 3.0 * (4 - 2)
    assert float(v["audio"][0, 0, 0]) == 1.0 + 2.5 * (2 - 1) + 1.0 * (4 - 2)
    asked.clear()
    guided(fn, {"video": 3.0}, reference=1.0)(x, {})
    guided(fn, {"video": 1.0, "audio": 1.0}, reference=1.0)(x, {})
    assert asked == [(Branch.COND, Branch.UNCOND), (Branch.COND,)]


def test_perturbed_and_isolated_branches_push_away_only_when_their_scales_are_set() -> None:
    asked = []
    value = {Branch.COND: 4.0, Branch.UNCOND: 2.0, Branch.PERTURBED: 3.0, Branch.ISOLATED: 3.5}

    def fn(x, t, branches):
        asked.append(branches)
        return [{s: torch.full_like(x[s], value[b]) for s in x} for b in branches]

    x = {"video": torch.zeros(1, 2, 1), "audio": torch.zeros(1, 2, 1)}
    away = {Branch.PERTURBED: {"video": 1.0, "audio": 0.5}, Branch.ISOLATED: {"video": 2.0, "audio": 0.0}}
    v = guided(fn, {"video": 3.0, "audio": 1.0}, away=away)(x, {})
    assert asked == [(Branch.COND, Branch.UNCOND, Branch.PERTURBED, Branch.ISOLATED)]
    assert float(v["video"][0, 0, 0]) == 2 + 3 * (4 - 2) + 1.0 * (4 - 3) + 2.0 * (4 - 3.5)
    assert float(v["audio"][0, 0, 0]) == 4 + 0.5 * (4 - 3)
    asked.clear()
    guided(fn, {"video": 1.0, "audio": 1.0}, away={Branch.PERTURBED: {"video": 0.0}})(x, {})
    assert asked == [(Branch.COND,)]


def test_sampler_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="steps"):
        SamplerConfig(steps=0)
    with pytest.raises(ValueError, match="solver"):
        SamplerConfig(solver="rk9")
    with pytest.raises(ValueError, match="reference guidance must be >= 0"):
        SamplerConfig(reference_guidance=-1.0)
    with pytest.raises(ValueError, match="audio guidance must be >= 0, got nan"):
        SamplerConfig(guidance={"video": 3.0, "audio": float("nan")})


def test_rescale_pulls_the_guided_velocity_to_the_cond_size_over_free_tokens() -> None:
    cond = torch.tensor([[[1.0], [-1.0], [1.0], [50.0]]])  # the last token is a held condition

    def fn(x, t, branches):
        return [{s: cond if b is Branch.COND else torch.zeros_like(cond) for s in x} for b in branches]

    x = {"video": torch.zeros(1, 4, 1)}
    free = {"video": torch.tensor([[True, True, True, False]])}
    plain = guided(fn, {"video": 4.0})(x, {})["video"]
    torch.testing.assert_close(plain, 4.0 * cond)  # uncond 0: guidance multiplies the cond velocity
    full = guided(fn, {"video": 4.0}, rescale=1.0, free=free)(x, {})["video"]
    torch.testing.assert_close(full, cond)  # same size as cond over the free tokens: the held one is ignored
    half = guided(fn, {"video": 4.0}, rescale=0.5, free=free)(x, {})["video"]
    torch.testing.assert_close(half, 0.5 * cond + 0.5 * 4.0 * cond)
    with pytest.raises(ValueError, match="rescale"):
        SamplerConfig(rescale=1.5)


def test_shift_must_be_positive() -> None:
    with pytest.raises(ValueError, match="shift must be > 0"):
        SamplerConfig(shift=0.0)


def test_run_options_are_checked_by_the_samplers_rules_where_they_are_made() -> None:
    RunOptions()  # every setting left to the engine
    RunOptions(steps=2, guidance=0.0, shift=3.0)
    for bad, message in (({"steps": 0}, "steps"), ({"guidance": float("nan")}, "video guidance"),
                         ({"audio_guidance": -1.0}, "audio guidance"), ({"guidance_rescale": 2.0}, "rescale"),
                         ({"reference_guidance": -1.0}, "reference guidance"),
                         ({"solver": "rk9"}, "solver")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            RunOptions(**bad)
