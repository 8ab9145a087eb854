"""Contracts of the Stage: scenes, rendering and its ground truth, captions and references.

Everything here runs on the real sampler and renderer (no mocks); checks on pixels are computed
in this file from the frames alone, independently of `stage.detect`.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from openseedance.media import Clip
from openseedance.stage import RenderConfig, Scene, caption, render, sample_scene, world
from openseedance.stage.render import companion_scene, portrait, voice_sample
from openseedance.stage.scene import MIN_SHOT, positions

# A spread of scenes: whatever the sampler picks, plus every forced shot and character count.
SAMPLED = [(seed, None, None) for seed in range(30)]
FORCED = [(seed, n, k) for seed in range(3) for n in (1, 2, 3) for k in (1, 2, 3)]


@pytest.fixture(scope="module")
def scenes() -> list[Scene]:
    return [sample_scene(seed, num_characters=n, num_shots=k) for seed, n, k in SAMPLED + FORCED]


@pytest.fixture(scope="module")
def renderings():
    """A few renderings at 128x128 (bodies big enough to measure to the pixel), mixed shot counts."""
    config = RenderConfig(width=128, height=128)
    picks = [sample_scene(s) for s in range(4)] + [sample_scene(s, num_shots=3) for s in range(2)]
    return [render(s, config) for s in picks]


def _without_seed(scene: Scene) -> dict:
    d = scene.to_dict()
    d.pop("seed")
    return d


# ---------------------------------------------------------------- determinism and serialisation


@pytest.mark.parametrize("seed", [0, 1, 7, 123456])
def test_same_seed_gives_identical_scene_frames_and_audio(seed: int) -> None:
    a, b = sample_scene(seed), sample_scene(seed)
    assert a == b
    assert a.to_dict() == b.to_dict()
    ra, rb = render(a), render(b)
    assert np.array_equal(ra.clip.video, rb.clip.video)
    assert np.array_equal(ra.clip.audio, rb.clip.audio)
    assert ra.truth.to_dict() == rb.truth.to_dict()


def test_different_seeds_give_different_scenes_and_media() -> None:
    seeds = range(12)
    dicts = [json.dumps(_without_seed(sample_scene(s)), sort_keys=True) for s in seeds]
    assert len(set(dicts)) == len(dicts), "two seeds sampled the same scene"
    r0, r1 = render(sample_scene(0)), render(sample_scene(1))
    assert not np.array_equal(r0.clip.video, r1.clip.video)
    assert not np.array_equal(r0.clip.audio, r1.clip.audio)


def test_scene_json_round_trip(scenes: list[Scene]) -> None:
    for scene in scenes:
        text = json.dumps(scene.to_dict())
        back = Scene.from_dict(json.loads(text))
        assert back == scene, f"seed {scene.seed} changed in a JSON round trip"
        assert back.to_dict() == scene.to_dict()
        assert json.dumps(back.to_dict()) == text


def test_truth_is_json_serialisable() -> None:
    r = render(sample_scene(3, num_shots=2))
    data = json.loads(json.dumps(r.truth.to_dict()))
    t, n = len(r.clip.video), len(r.scene.characters)
    assert np.asarray(data["centers"]).shape == (t, n, 2)
    assert np.asarray(data["mouth"]).shape == (t, n)
    assert len(data["shot"]) == t


# ---------------------------------------------------------------- scene invariants


def test_characters_are_told_apart(scenes: list[Scene]) -> None:
    for scene in scenes:
        chars = scene.characters
        assert 1 <= len(chars) <= 3
        colours = [c.identity.colour for c in chars]
        shapes = [c.identity.shape for c in chars]
        pitches = [c.voice.pitch for c in chars]
        assert len(set(colours)) == len(chars), f"seed {scene.seed}: colours repeat {colours}"
        assert len(set(shapes)) == len(chars), f"seed {scene.seed}: shapes repeat {shapes}"
        assert len(set(pitches)) == len(chars), f"seed {scene.seed}: voice pitches repeat {pitches}"
        assert len({c.voice.f0 for c in chars}) == len(chars)
        for c in chars:
            assert c.identity.colour in world.COLOURS
            assert c.identity.shape in world.SHAPES
            assert c.identity.pattern in world.PATTERNS
            assert c.identity.eyes in world.EYES
            assert c.voice.pitch in world.PITCHES
            assert c.voice.timbre in world.TIMBRES
        assert scene.ambience in world.AMBIENCES


def test_shots_tile_the_clip(scenes: list[Scene]) -> None:
    for scene in scenes:
        shots = scene.shots
        assert 1 <= len(shots) <= 3
        assert shots[0].start == 0.0
        assert shots[-1].end == scene.duration
        for a, b in zip(shots, shots[1:], strict=False):
            assert a.end == b.start, f"seed {scene.seed}: gap or overlap between shots"
            assert (a.framing, a.place) != (b.framing, b.place), f"seed {scene.seed}: a cut that changes nothing"
        for shot in shots:
            assert shot.end - shot.start >= MIN_SHOT - 1e-9
            assert shot.framing in world.FRAMINGS
            assert shot.place in world.PLACES
            if shot.framing == "close-up":
                assert shot.focus is not None and 0 <= shot.focus < len(scene.characters)
            else:
                assert shot.focus is None
            zoom = shot.camera[2]
            assert zoom == 1.0 if shot.framing == "wide" else zoom > 1.0


def test_requested_counts_are_honoured(scenes: list[Scene]) -> None:
    for (seed, n, k), scene in zip(SAMPLED + FORCED, scenes, strict=True):
        assert scene.seed == seed
        if n is not None:
            assert (len(scene.characters), len(scene.shots)) == (n, k)
    short = sample_scene(5, duration=2.5)
    assert len(short.shots) <= 2 and short.shots[-1].end == 2.5
    assert sample_scene(5, duration=2.5, num_shots=2).duration == 2.5


def test_framings_restrict_the_shots() -> None:
    for seed in range(6):
        scene = sample_scene(seed, num_shots=3, framings=("wide",))
        assert all(s.framing == "wide" and s.camera == (0.5, 0.5, 1.0) for s in scene.shots)
        scene = sample_scene(seed, framings=("close-up", "medium"))
        assert all(s.framing in ("close-up", "medium") for s in scene.shots)


def test_speech_never_overlaps_between_characters(scenes: list[Scene]) -> None:
    spoke = 0
    for scene in scenes:
        sylls = scene.speech()
        spoke += bool(sylls)
        assert [s for _, s, _ in sylls] == sorted(s for _, s, _ in sylls)
        for i, (ca, sa, ea) in enumerate(sylls):
            assert sa < ea
            for cb, sb, eb in sylls[i + 1 :]:
                if ca != cb:
                    assert ea <= sb or eb <= sa, f"seed {scene.seed}: characters {ca} and {cb} talk at once"
    assert spoke >= len(scenes) // 3, "hardly any scene has speech"


def test_actions_lie_inside_shots(scenes: list[Scene]) -> None:
    for scene in scenes:
        assert any(a.kind in ("jump", "speak") for c in scene.characters for a in c.actions)
        for i, c in enumerate(scene.characters):
            ends = 0.0
            for a in c.actions:
                assert a.kind in ("move", "jump", "speak", "idle")
                assert 0.0 <= a.start < a.end <= scene.duration
                assert a.start >= ends, f"seed {scene.seed}: character {i}'s actions overlap"
                ends = a.end
                inside = [s for s in scene.shots if s.start <= a.start and a.end <= s.end + 1e-4]
                assert inside, f"seed {scene.seed}: {a.kind} at {a.start}-{a.end} crosses a cut"
                shot = inside[0]
                assert shot.focus is None or shot.focus == i, "someone acts outside a close-up's frame"
                for s, e in a.syllables:
                    assert a.start <= s < e <= a.end
                for t in a.landings:
                    assert a.start < t <= a.end + 1e-4
                if a.kind == "speak":
                    assert a.word in world.WORDS and len(a.syllables) == world.WORDS[a.word]
                if a.kind == "jump":
                    assert a.hops >= 1 and a.height > 0
                if a.kind == "move":
                    assert a.direction in world.DIRECTIONS and a.distance > 0


def test_characters_stay_apart_and_on_stage(scenes: list[Scene]) -> None:
    r = world.BODY_RADIUS
    for scene in scenes:
        times = np.linspace(0, scene.duration, 200)
        paths = np.stack([positions(c, times) for c in scene.characters])
        assert paths.min() >= r and paths.max() <= 1 - r, f"seed {scene.seed}: a body leaves the stage"
        for a in range(len(paths)):
            for b in range(a + 1, len(paths)):
                gap = np.linalg.norm(paths[a] - paths[b], axis=-1).min()
                assert gap >= 2 * r, f"seed {scene.seed}: characters {a} and {b} overlap"


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"duration": 0}, "duration"),
        ({"duration": -1}, "duration"),
        ({"duration": float("nan")}, "duration"),
        ({"duration": float("inf")}, "duration"),
        ({"duration": 0.5}, "at least 1 second"),
        ({"num_characters": 0}, "num_characters"),
        ({"num_characters": 4}, "num_characters"),
        ({"num_shots": 4}, "num_shots"),
        ({"num_shots": 0}, "num_shots"),
        ({"duration": 2.0, "num_shots": 2}, "num_shots must be 1..1"),
        ({"framings": ("wide", "extreme-close-up")}, "framings"),
        ({"framings": ()}, "framings"),
    ],
)
def test_sample_scene_rejects_bad_input(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        sample_scene(0, **kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"width": 0}, "width must be an integer from 16 to 4096"),
        ({"width": 10}, "width"),
        ({"width": 64.5}, "width"),
        ({"width": 5000}, "width"),
        ({"height": 8}, "height"),
        ({"fps": 0}, "fps must be between 1 and 240"),
        ({"fps": 500}, "fps"),
        ({"fps": float("nan")}, "fps"),
        ({"sample_rate": 100}, "sample_rate must be an integer from 8000"),
        ({"sample_rate": 16000.0}, "sample_rate"),
    ],
)
def test_render_config_rejects_bad_input(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        RenderConfig(**kwargs)
    assert repr(next(iter(kwargs.values()))) in str(info.value), "the message should show the bad value"


# ---------------------------------------------------------------- rendering


@pytest.mark.parametrize(
    ("config", "duration", "frames", "samples"),
    [
        (RenderConfig(), 4.0, 48, 64000),
        (RenderConfig(width=256, height=256, fps=24, sample_rate=48000), 4.0, 96, 192000),
        (RenderConfig(width=96, height=64), 4.0, 48, 64000),
        (RenderConfig(width=64, height=96, fps=7.5, sample_rate=22050), 2.5, 19, 55125),
    ],
)
def test_render_shapes(config: RenderConfig, duration: float, frames: int, samples: int) -> None:
    scene = sample_scene(2, duration=duration)
    r = render(scene, config)
    assert frames == round(duration * config.fps) == config.num_frames(duration)
    n = len(scene.characters)
    assert isinstance(r.clip, Clip)
    assert r.clip.video.shape == (frames, config.height, config.width, 3)
    assert r.clip.video.dtype == np.uint8
    assert r.clip.audio.shape == (1, samples)
    assert r.clip.audio.dtype == np.float32
    assert np.abs(r.clip.audio).max() <= 1.0
    assert (r.clip.fps, r.clip.sample_rate) == (config.fps, config.sample_rate)
    assert r.truth.centers.shape == (frames, n, 2)
    assert r.truth.radius.shape == r.truth.visible.shape == r.truth.mouth.shape == (frames, n)
    assert r.truth.shot.shape == (frames,)
    assert r.clip.video.std() > 5, "a blank picture"
    assert r.scene is scene and r.config is config


def test_default_config() -> None:
    r = render(sample_scene(0))
    assert r.config == RenderConfig(width=64, height=64, fps=12.0, sample_rate=16000)
    assert r.clip.video.shape[:3] == (48, 64, 64) and r.clip.audio.shape == (1, 64000)


def _hue_mask(video: np.ndarray, rgb: tuple[int, int, int]) -> np.ndarray:
    """Pixels of `rgb`'s hue (or a darker or anti-aliased shade of it), computed here from scratch."""
    f = video.astype(np.float32) / 255

    def hue(r, g, b):
        return np.degrees(np.arctan2(np.sqrt(3) * (g - b), 2 * r - g - b)) % 360

    mx = f.max(-1)
    sat = (mx - f.min(-1)) / np.maximum(mx, 1e-6)
    want = hue(*(np.asarray(rgb, np.float32) / 255))
    d = np.abs((hue(f[..., 0], f[..., 1], f[..., 2]) - want + 180) % 360 - 180)
    return (sat > 0.35) & (mx > 0.25) & (d < 10)


def test_truth_centres_match_the_pixels(renderings) -> None:
    checked = 0
    for r in renderings:
        h, w = r.clip.video.shape[1:3]
        for i, c in enumerate(r.scene.characters):
            mask = _hue_mask(r.clip.video, world.COLOURS[c.identity.colour])
            for f in np.flatnonzero(r.truth.visible[:, i] >= 0.999):
                ys, xs = np.nonzero(mask[f])
                assert len(xs), f"seed {r.scene.seed} frame {f}: character {i} is missing"
                cx, cy = r.truth.centers[f, i] * (w, h)
                rad = float(r.truth.radius[f, i]) * min(w, h)
                tol = 1.5 + 0.1 * rad  # the triangle's box sits 0.075 r above its centre
                box_x, box_y = (xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2
                where = f"seed {r.scene.seed} frame {f} character {i} ({c.identity.shape})"
                assert abs(box_x - cx) <= tol and abs(box_y - cy) <= tol, (
                    f"{where}: body at ({box_x:.1f}, {box_y:.1f}), truth ({cx:.1f}, {cy:.1f})"
                )
                half = (xs.max() + 1 - xs.min()) / 2
                assert 0.85 * rad - 1.5 <= half <= rad + 1.5, f"{where}: half-width {half}, radius {rad:.1f}"
                checked += 1
    assert checked > 200


def test_truth_in_the_wide_shot_matches_the_scene() -> None:
    """In a wide shot the world's unit square is the frame's central square."""
    scene = sample_scene(4, num_shots=1, framings=("wide",))
    for config in (RenderConfig(), RenderConfig(width=96, height=64)):
        r = render(scene, config)
        times = np.arange(len(r.clip.video)) / config.fps
        s = min(config.width, config.height)
        for i, c in enumerate(scene.characters):
            px = (positions(c, times) - 0.5) * s + (config.width / 2, config.height / 2)
            np.testing.assert_allclose(r.truth.centers[:, i] * (config.width, config.height), px, atol=1e-3)
            np.testing.assert_allclose(r.truth.radius[:, i], world.BODY_RADIUS, rtol=1e-5)
        assert (r.truth.visible == 1).all()


def test_truth_shots_and_radius(renderings) -> None:
    for r in renderings:
        times = np.arange(len(r.truth.shot)) / r.config.fps
        assert list(r.truth.shot) == [r.scene.shot_at(float(t)) for t in times]
        assert (np.diff(r.truth.shot) >= 0).all()
        for f, k in enumerate(r.truth.shot):
            np.testing.assert_allclose(r.truth.radius[f], world.BODY_RADIUS * r.scene.shots[k].camera[2], rtol=1e-5)
        assert ((r.truth.visible >= 0) & (r.truth.visible <= 1 + 1e-6)).all()


def test_truth_mouth_opens_only_during_syllables(renderings) -> None:
    for r in renderings:
        times = np.arange(len(r.truth.mouth)) / r.config.fps
        assert ((r.truth.mouth >= 0) & (r.truth.mouth <= 1)).all()
        for i, c in enumerate(r.scene.characters):
            sylls = [s for a in c.actions if a.kind == "speak" for s in a.syllables]
            inside = np.zeros(len(times), bool)
            for s, e in sylls:
                during = (times > s) & (times < e)
                inside |= during
                assert during.any() and (r.truth.mouth[during, i] > 0).any()
            assert (r.truth.mouth[~inside, i] == 0).all(), f"seed {r.scene.seed}: mouth {i} open in silence"


def test_truth_events(scenes: list[Scene]) -> None:
    for scene in scenes[:12]:
        truth = render(scene, RenderConfig(width=32, height=32)).truth
        times = [e["time"] for e in truth.events]
        assert times == sorted(times)
        landings = {(c, round(t, 4)) for c, t in scene.landings()}
        sylls = {(c, round(s, 4)) for c, s, _ in scene.speech()}
        got_l = {(e["character"], e["time"]) for e in truth.events if e["kind"] == "landing"}
        got_s = {(e["character"], e["time"]) for e in truth.events if e["kind"] == "syllable"}
        assert got_l == landings and got_s == sylls
        assert len(truth.events) == len(scene.landings()) + len(scene.speech())


def test_voices_are_heard_during_syllables() -> None:
    for seed in range(8):
        r = render(sample_scene(seed))
        audio, sr = r.clip.audio[0], r.clip.sample_rate
        for _, s, e in r.scene.speech():
            mid = audio[int((s + 0.25 * (e - s)) * sr) : int((e - 0.25 * (e - s)) * sr)]
            assert np.sqrt(np.mean(mid**2)) > 0.08, f"seed {seed}: a silent syllable at {s:.2f} s"


# ---------------------------------------------------------------- captions

# A character's colour in the train wording: its name, or one of these phrases.
_TRAIN_COLOUR = {"cyan": ("cyan", "light blue"), "blue": ("blue", "dark blue")}


def _has_word(text: str, word: str) -> bool:
    return re.search(rf"\b{re.escape(word)}\b", text, re.IGNORECASE) is not None


def test_captions_are_deterministic(scenes: list[Scene]) -> None:
    for scene in scenes[:10]:
        for wording in ("train", "heldout"):
            assert caption(scene, wording) == caption(scene, wording)
            assert caption(scene, wording, variant=3) == caption(scene, wording, variant=3)


def test_train_captions_name_every_colour_and_word(scenes: list[Scene]) -> None:
    for scene in scenes:
        cap = caption(scene, "train")
        assert cap.wording == "train"
        for c in scene.characters:
            words = _TRAIN_COLOUR.get(c.identity.colour, (c.identity.colour,))
            assert any(_has_word(cap.prompt, w) for w in words), f"seed {scene.seed}: no {c.identity.colour}"
            for a in c.actions:
                if a.kind == "speak":
                    assert f'"{a.word}"' in cap.prompt


def test_heldout_captions_avoid_the_train_words(scenes: list[Scene]) -> None:
    for scene in scenes:
        held = caption(scene, "heldout")
        assert held.wording == "heldout"
        for word in (*world.COLOURS, *world.SHAPES):
            assert not _has_word(held.prompt, word), f"seed {scene.seed}: held-out caption says {word!r}"
        for c in scene.characters:
            for a in c.actions:
                if a.kind == "speak":
                    assert f'"{a.word}"' in held.prompt
        assert held.prompt != caption(scene, "train").prompt
    red = next(s for s in scenes if any(c.identity.colour == "red" for c in s.characters))
    assert _has_word(caption(red, "heldout").prompt, "scarlet")
    assert _has_word(caption(red, "train").prompt, "red")


def test_caption_shot_parts(scenes: list[Scene]) -> None:
    multi = single = 0
    for scene in scenes:
        cap = caption(scene)
        k = len(scene.shots)
        assert len(cap.shots) == k
        if k == 1:
            single += 1
            assert "[shot" not in cap.prompt and cap.prompt == cap.overall
        else:
            multi += 1
            for i in range(1, k + 1):
                assert f"[shot {i}]" in cap.prompt
            assert f"[shot {k + 1}]" not in cap.prompt
            assert cap.prompt.index("[shot 1]") < cap.prompt.index("[shot 2]")
            assert cap.prompt.startswith(cap.overall)
    assert multi and single


def test_caption_variants_differ() -> None:
    scene = sample_scene(0, num_characters=2, num_shots=2)
    prompts = {caption(scene, "train", variant=v).prompt for v in range(8)}
    assert len(prompts) > 1


def test_caption_rejects_unknown_wording() -> None:
    with pytest.raises(ValueError, match="wording"):
        caption(sample_scene(0), "test")


# ---------------------------------------------------------------- references


@pytest.mark.parametrize(("width", "height"), [(64, 64), (80, 48)])
def test_portrait(width: int, height: int) -> None:
    for c in sample_scene(1, num_characters=3).characters:
        img = portrait(c.identity, width, height)
        assert img.shape == (height, width, 3) and img.dtype == np.uint8
        near = (np.abs(img.astype(int) - world.COLOURS[c.identity.colour]).max(-1) <= 3).mean()
        assert near > 0.03, f"{c.identity.colour} is barely in its portrait ({near:.3f})"
        body = _hue_mask(img[None], world.COLOURS[c.identity.colour])[0]
        ys, xs = np.nonzero(body)
        assert abs(xs.mean() + 0.5 - width / 2) < 0.1 * width
        assert abs(ys.mean() + 0.5 - height / 2) < 0.15 * height
    with pytest.raises(ValueError, match="width"):
        portrait(c.identity, 8, 64)


def test_voice_sample() -> None:
    voice = sample_scene(0).characters[0].voice
    a = voice_sample(voice, 16000, seconds=2.0, seed=3)
    assert a.shape == (1, 32000) and a.dtype == np.float32
    assert np.sqrt(np.mean(a**2)) > 0.03, "a reference voice with no voice in it"
    assert np.abs(a).max() <= 0.99
    assert np.array_equal(a, voice_sample(voice, 16000, seconds=2.0, seed=3))
    assert not np.array_equal(a, voice_sample(voice, 16000, seconds=2.0, seed=4))
    b = voice_sample(voice, 48000, seconds=2.0, seed=3)
    assert b.shape == (1, 96000)


def test_voice_sample_has_the_voice_pitch() -> None:
    """The strongest periodicity of each pitch class's sample is its f0 (within a semitone)."""
    from openseedance.stage.scene import Voice

    sr = 16000
    for pitch in world.PITCHES:
        voice = Voice(pitch=pitch, timbre="warm")
        x = voice_sample(voice, sr, seconds=2.0)[0].astype(np.float64)
        loud = np.abs(x) > 0.5 * np.abs(x).max()
        seg = x[np.flatnonzero(loud)[0] :][: int(0.06 * sr)]
        ac = np.correlate(seg, seg, "full")[len(seg) - 1 :]
        lo, hi = int(sr / 500), int(sr / 80)
        lag = lo + int(np.argmax(ac[lo:hi]))
        semitones = abs(12 * math.log2((sr / lag) / voice.f0))
        assert semitones < 1.0, f"{pitch}: measured {sr / lag:.0f} Hz, want {voice.f0:.0f} Hz"


def test_companion_scene_keeps_identities_and_voices() -> None:
    for seed in range(4):
        scene = sample_scene(seed, num_shots=2)
        other = companion_scene(scene, seed=1000 + seed)
        assert [c.identity for c in other.characters] == [c.identity for c in scene.characters]
        assert [c.voice for c in other.characters] == [c.voice for c in scene.characters]
        assert len(other.shots) == 1 and other.duration == 3.0
        assert [c.actions for c in other.characters] != [c.actions for c in scene.characters]
        assert other == companion_scene(scene, seed=1000 + seed)
        assert Scene.from_dict(json.loads(json.dumps(other.to_dict()))) == other
        r = render(other)
        assert r.clip.video.shape == (36, 64, 64, 3)
