"""Can the probes be trusted? Ground truth must score ~100%, and each deliberate corruption must
clearly lower the probe that is meant to catch it, and only measurably so.

Everything is rendered and probed once per module (probing costs about half a second a clip).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from openseedance import media
from openseedance.stage import PROBES, RenderConfig, as_clip, probe, render, sample_scene
from openseedance.stage.corrupt import CORRUPTIONS, applicable
from openseedance.stage.detect import onsets
from openseedance.stage.probes import BETWEEN, WITHIN, mouth_moves, movement_kept, reference_voice
from openseedance.stage.scene import Voice

# (seed, num_shots): the first eight sampled scenes, and four three-shot scenes so that the
# identity probe (which needs a character seen in two shots) has something to check.
TRUST_SCENES = [(seed, None) for seed in range(8)] + [(seed, 3) for seed in range(4)]

# The probe each corruption targets, the most its mean may score, and (for the ones that also
# break something else by construction) further probes with their ceilings.
TARGETS: dict[str, dict[str, float]] = {
    "audio +200 ms": {"sync": 0.5},
    "wrong colour": {"attribute": 0.8},
    "swapped voices": {"voice": 0.6},
    "identities swapped between shots": {"identity": 0.5},
    "frozen frames": {"action": 0.8, "sync": 0.3},
}


def _fmt(report) -> str:
    """The failed checks of a report, one short line."""
    parts = []
    for c in report.failed():
        detail = {k: v for k, v in c.items() if k not in ("probe", "check", "ok")}
        parts.append(f"{c['probe']}/{c['check']} {detail}")
    return "; ".join(parts)


@pytest.fixture(scope="module")
def trials() -> list[dict]:
    """For every trust scene: its rendering, and the probe report of the true clip and of each
    applicable corruption."""
    out = []
    for seed, shots in TRUST_SCENES:
        scene = sample_scene(seed, num_shots=shots)
        r = render(scene)
        reports = {"truth": probe(r.clip, scene)}
        unchanged = {}
        for name, corrupt in CORRUPTIONS.items():
            if applicable(name, scene):
                clip = corrupt(r)
                reports[name] = probe(clip, scene)
                unchanged[name] = np.array_equal(clip.video, r.clip.video) and np.array_equal(clip.audio, r.clip.audio)
        out.append({"key": (seed, shots), "rendering": r, "reports": reports, "unchanged": unchanged})
    return out


# ---------------------------------------------------------------- ground truth


def test_every_probe_is_exercised(trials) -> None:
    for name in PROBES:
        scored = [t["reports"]["truth"].scores[name] for t in trials]
        assert sum(s is not None for s in scored) >= 4, f"{name} scored on too few trust scenes"


def test_truth_scores_near_perfect(trials) -> None:
    for name in PROBES:
        per_clip = {t["key"]: t["reports"]["truth"].scores[name] for t in trials}
        scored = {k: v for k, v in per_clip.items() if v is not None}
        worst = min(scored, key=scored.get)
        detail = _fmt(next(t["reports"]["truth"] for t in trials if t["key"] == worst))
        assert np.mean(list(scored.values())) >= 0.99, f"{name}: truth mean {np.mean(list(scored.values())):.3f}"
        assert scored[worst] >= 0.95, f"{name}: truth scene {worst} scored {scored[worst]:.2f}: {detail}"


def test_truth_scores_none_exactly_where_nothing_to_check(trials) -> None:
    for t in trials:
        scene, scores = t["rendering"].scene, t["reports"]["truth"].scores
        assert set(scores) == set(PROBES)
        if len(scene.shots) == 1:
            assert scores["identity"] is None
        if not scene.speech():
            assert scores["voice"] is None
        else:
            assert scores["voice"] is not None
        assert scores["attribute"] is not None and scores["action"] is not None
        assert scores["sync"] is not None


def test_truth_is_in_sync(trials) -> None:
    offsets = [t["reports"]["truth"].av_offset_ms for t in trials]
    assert all(o is not None for o in offsets)
    # a frame lasts 83 ms at 12 fps: the measured lag of true clips stays well inside one
    assert np.mean(np.abs(offsets)) <= 50
    assert max(np.abs(offsets)) <= 70
    corr = [t["reports"]["truth"].mouth_voice_corr for t in trials if t["rendering"].scene.speech()]
    corr = [c for c in corr if c is not None]
    assert len(corr) >= 4 and np.mean(corr) >= 0.6 and min(corr) > 0.3


def test_reports_are_json_serialisable(trials) -> None:
    for t in trials[:4]:
        for report in t["reports"].values():
            data = json.loads(json.dumps(report.to_dict()))
            assert set(data["scores"]) == set(PROBES)
            assert all(isinstance(c["ok"], bool) for c in report.checks)
            assert all(c["probe"] in PROBES for c in report.checks)


# ---------------------------------------------------------------- corruptions


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corruption_lowers_its_probe(trials, name: str) -> None:
    assert set(TARGETS) == set(CORRUPTIONS)
    for target, ceiling in TARGETS[name].items():
        pairs = [
            (t["key"], t["reports"]["truth"].scores[target], t["reports"][name].scores[target])
            for t in trials
            if name in t["reports"] and t["reports"]["truth"].scores[target] is not None
        ]
        assert len(pairs) >= 3, f"{name}: too few scenes where {target} is scored"
        bad = [(k, b) for k, _, b in pairs if b is None]
        assert not bad, f"{name}: {target} not scored on the corrupted clip of {bad}"
        truth = np.mean([a for _, a, _ in pairs])
        broken = np.mean([b for _, _, b in pairs])
        assert broken <= ceiling, f"{name}: {target} mean {broken:.2f} (truth {truth:.2f}) above {ceiling}"
        assert truth - broken >= 0.2, f"{name}: {target} barely moved ({truth:.2f} -> {broken:.2f})"
        # and not by luck on average only: every corrupted clip scores below its true clip, where the
        # corruption changed the clip at all ("wrong colour" recolours character 0 even when a close-up
        # keeps it off screen for the whole clip, leaving the clip untouched)
        unchanged = {t["key"] for t in trials if name in t["reports"] and t["unchanged"][name]}
        same = [(k, a, b) for k, a, b in pairs if b >= a and k not in unchanged]
        assert not same, f"{name}: {target} did not drop on {same}"


def test_onsets_are_timed_within_a_few_ms_of_the_scene_events(trials) -> None:
    errors = []
    for t in trials:
        r = t["rendering"]
        events = np.array([e["time"] for e in r.truth.events])
        found = onsets(r.clip.audio, r.clip.sample_rate)
        if len(events):
            errors += [1000 * (o - events[np.abs(events - o).argmin()]) for o in found]
    errors = np.asarray(errors)
    assert len(errors) >= 20
    # the 5 ms band frames alone put onsets 4-18 ms early; the fine envelope times them
    assert np.mean(np.abs(errors) <= 5) >= 0.85, np.round(np.sort(errors), 1).tolist()
    assert np.mean(np.abs(errors) <= 10) >= 0.95, np.round(np.sort(errors), 1).tolist()


def test_onsets_see_a_pre_echo() -> None:
    """Energy smeared ahead of a sound moves its onset early by about as much: the onsets measure
    can catch a decoder that spreads a sound's energy before it."""
    sr = 16000
    rng = np.random.default_rng(0)
    n, start = sr, int(0.5 * sr)
    t = np.arange(n) / sr
    floor = 0.0005 * rng.standard_normal(n)
    tone = np.where(t >= 0.5, 0.5 * np.sin(2 * np.pi * 220 * t) * np.exp(-(t - 0.5) / 0.2), 0.0)
    clean = floor + tone
    smear = np.zeros(n)
    lead = int(0.02 * sr)  # 20 ms of the tone, 15 dB down, ahead of it
    smear[start - lead : start] = 0.5 * 10 ** (-15 / 20) * np.sin(2 * np.pi * 220 * t[start - lead : start])
    (a,), (b,) = onsets(clean, sr), onsets(clean + smear, sr)
    assert abs(a - 0.5) <= 0.003
    assert 0.015 <= 0.5 - b <= 0.025


def test_shifted_audio_is_measured_as_late(trials) -> None:
    truth, shifted = [], []
    for t in trials:
        a, b = t["reports"]["truth"].av_offset_ms, t["reports"]["audio +200 ms"].av_offset_ms
        assert b is not None, f"scene {t['key']}: no offset measured on the shifted clip"
        truth.append(a)
        shifted.append(b)
    assert np.mean(np.abs(shifted)) >= 120
    # the measured lag moves by the 200 ms that were added
    moved = np.asarray(shifted) - np.asarray(truth)
    assert 150 <= np.mean(moved) <= 250, f"offsets moved by {moved.round(1).tolist()} ms"
    assert (moved > 100).all()


def test_corruptions_change_the_clip_they_claim(trials) -> None:
    t = next(t for t in trials if len(t["rendering"].scene.shots) >= 2 and t["rendering"].scene.speech())
    r = t["rendering"]
    shifted = CORRUPTIONS["audio +200 ms"](r)
    assert np.array_equal(shifted.video, r.clip.video) and shifted.audio.shape == r.clip.audio.shape
    k = round(0.2 * r.clip.sample_rate)
    assert np.array_equal(shifted.audio[:, k:], r.clip.audio[:, :-k]) and not shifted.audio[:, :k].any()
    frozen = CORRUPTIONS["frozen frames"](r)
    assert (frozen.video == r.clip.video[:1]).all() and np.array_equal(frozen.audio, r.clip.audio)
    swapped = CORRUPTIONS["identities swapped between shots"](r)
    first = r.truth.shot == 0
    assert np.array_equal(swapped.video[first], r.clip.video[first])
    assert not np.array_equal(swapped.video[~first], r.clip.video[~first])
    voices = CORRUPTIONS["swapped voices"](r)
    assert np.array_equal(voices.video, r.clip.video) and not np.array_equal(voices.audio, r.clip.audio)
    colour = CORRUPTIONS["wrong colour"](r)
    assert np.array_equal(colour.audio, r.clip.audio) and not np.array_equal(colour.video, r.clip.video)


def test_applicable() -> None:
    single = sample_scene(0, num_shots=1)
    multi = sample_scene(0, num_shots=2)
    assert not applicable("identities swapped between shots", single)
    assert applicable("identities swapped between shots", multi)
    silent = next(s for s in (sample_scene(i) for i in range(50)) if not s.speech())
    assert not applicable("swapped voices", silent)
    assert applicable("audio +200 ms", silent) and applicable("frozen frames", silent)


# ---------------------------------------------------------------- files, sizes and tensors


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_probe_reads_an_mp4(tmp_path, seed: int) -> None:
    scene = sample_scene(seed)
    r = render(scene)
    path = media.write_video(tmp_path / f"scene{seed}.mp4", r.clip)
    report = probe(path, scene)
    scored = {k: v for k, v in report.scores.items() if v is not None}
    assert {"attribute", "action", "sync"} <= set(scored)
    low = {k: v for k, v in scored.items() if v < 0.97}
    assert not low, f"after H.264/AAC: {low}: {_fmt(report)}"
    assert report.av_offset_ms is not None and abs(report.av_offset_ms) <= 70
    if seed == 0:
        assert probe(str(path), scene).scores == report.scores


def test_probe_at_high_resolution() -> None:
    scene = sample_scene(0, num_shots=2)
    assert scene.speech(), "pick a scene with speech so the 48 kHz voice probe runs"
    r = render(scene, RenderConfig(width=256, height=256, fps=24, sample_rate=48000))
    report = probe(r.clip, scene)
    scored = {k: v for k, v in report.scores.items() if v is not None}
    assert {"attribute", "action", "sync", "voice"} <= set(scored)
    assert min(scored.values()) >= 0.99, f"{scored}: {_fmt(report)}"
    assert abs(report.av_offset_ms) <= 40  # a frame is 42 ms at 24 fps


def test_as_clip_from_torch_matches_the_uint8_clip(trials) -> None:
    t = trials[0]
    r, truth = t["rendering"], t["reports"]["truth"]
    video = torch.from_numpy(r.clip.video).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (T, 3, H, W) in [-1, 1]
    audio = torch.from_numpy(r.clip.audio[0])  # (S,)
    clip = as_clip(video, audio, fps=r.clip.fps, sample_rate=r.clip.sample_rate)
    assert np.array_equal(clip.video, r.clip.video)
    assert clip.audio.shape == r.clip.audio.shape and clip.audio.dtype == np.float32
    np.testing.assert_array_equal(clip.audio, r.clip.audio)
    report = probe(clip, r.scene)
    assert report.scores == truth.scores
    assert report.av_offset_ms == truth.av_offset_ms
    # float (T, H, W, 3) in [0, 1] and uint8 pass through to the same pixels
    unit = as_clip(r.clip.video.astype(np.float32) / 255, r.clip.audio, r.clip.fps, r.clip.sample_rate)
    assert np.array_equal(unit.video, r.clip.video)
    same = as_clip(torch.from_numpy(r.clip.video), torch.from_numpy(r.clip.audio))
    assert np.array_equal(same.video, r.clip.video) and same.video.dtype == np.uint8


def test_noise_scores_low() -> None:
    rng = np.random.default_rng(0)
    attribute, action = [], []
    for seed in range(3):
        scene = sample_scene(seed)
        video = rng.integers(0, 256, (48, 64, 64, 3), dtype=np.uint8)
        audio = rng.uniform(-0.5, 0.5, (1, 64000)).astype(np.float32)
        report = probe(as_clip(video, audio), scene, only=("attribute", "action"))
        attribute.append(report.scores["attribute"])
        action.append(report.scores["action"])
    assert max(attribute) <= 0.4, attribute
    assert np.mean(action) <= 0.6, action


def test_reference_voices_have_their_pitch() -> None:
    for pitch, f0 in (("deep", 100.0), ("medium", 196.0), ("squeaky", 370.0)):
        got, profile = reference_voice(Voice(pitch=pitch, timbre="bright"), 16000)
        assert abs(12 * np.log2(got / f0)) < 0.5, f"{pitch}: {got:.1f} Hz"
        assert profile.shape == (6,) and np.isfinite(profile).all() and profile.max() <= 1e-6


def test_probe_rejects_bad_requests() -> None:
    scene = sample_scene(0)
    clip = render(scene).clip
    with pytest.raises(ValueError, match="unknown probes"):
        probe(clip, scene, only=("attribute", "lipsync"))
    with pytest.raises(ValueError, match="video"):
        probe(media.Clip(video=None, audio=clip.audio), scene)
    only = probe(clip, scene, only=("sync",))
    assert set(only.scores) == {"sync"}
    assert all(c["probe"] == "sync" for c in only.checks)


def test_mouth_movement_kept_reads_one_on_a_copy_and_none_within_averaged_groups(trials) -> None:
    moves_same, moves_averaged = [], []
    for t in trials:
        r = t["rendering"]
        frames = r.clip.video[: 1 + 4 * ((len(r.clip.video) - 1) // 4)]
        # every 4 frames after the first drawn as their average, as a codec that cannot tell them apart
        groups = frames[1:].reshape(-1, 4, *frames.shape[1:]).astype(np.float32).mean(1, keepdims=True)
        averaged = np.concatenate([frames[:1], np.repeat(groups, 4, 1).reshape(-1, *frames.shape[1:]).round()])
        moves_same.append(mouth_moves(r.scene, r.truth, frames, frames, 4))
        moves_averaged.append(mouth_moves(r.scene, r.truth, frames, averaged.astype(np.uint8), 4))
    same, averaged = np.concatenate(moves_same), np.concatenate(moves_averaged)
    assert (same[:, 0] == WITHIN).sum() > 50 and (same[:, 0] == BETWEEN).sum() > 10
    assert movement_kept(same, WITHIN) == pytest.approx(1.0) and movement_kept(same, BETWEEN) == pytest.approx(1.0)
    assert abs(movement_kept(averaged, WITHIN)) < 1e-9
    assert movement_kept(averaged, BETWEEN) > 0.5
