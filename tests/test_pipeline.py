"""The pipeline on debug components: every supported task end to end, real mp4 out with the
resolved request in its metadata, seeded determinism, save/load round trip, and clear errors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from openseedance import media
from openseedance.conditioning import prompt_text
from openseedance.engines import Capabilities, RunOptions
from openseedance.pipeline import Pipeline
from openseedance.request import GenerationRequest

FAST = RunOptions(steps=2)
UNMARKED = RunOptions(steps=2, mark=False)  # the marks name the request: off to compare clips of two requests


@pytest.fixture(scope="module")
def pipe() -> Pipeline:
    p = Pipeline.untrained("debug")
    with torch.no_grad():  # random heads, so that outputs depend on inputs
        for param in p.engine.transformer.parameters():
            param.add_(0.02 * torch.randn_like(param))
    return p


FACELESS = np.full((64, 64, 3), 90, np.uint8)


def _req(**kw) -> GenerationRequest:
    return GenerationRequest(**{"prompt": "a red circle jumps and says hello", "duration": 1.5, **kw})


def test_text_to_av_writes_a_real_mp4_with_metadata(pipe: Pipeline, tmp_path: Path) -> None:
    out = pipe(_req(), FAST)
    assert out.clip.video.shape == (18, 64, 64, 3) and out.clip.video.dtype == np.uint8
    assert out.clip.audio.shape == (1, 24000)
    path = out.write(tmp_path / "clip.mp4")
    back = media.read_video(path)
    assert back.video.shape[0] == 18 and back.audio is not None
    meta = json.loads(media.read_metadata(path)["openseedance"])
    assert meta["prompt"] == "a red circle jumps and says hello" and meta["steps"] == 2 and meta["task"] == "t2av"


def test_same_seed_same_clip_other_seed_other_clip(pipe: Pipeline) -> None:
    a, b, c = pipe(_req(seed=3), FAST), pipe(_req(seed=3), FAST), pipe(_req(seed=4), FAST)
    assert np.array_equal(a.clip.video, b.clip.video) and np.array_equal(a.clip.audio, b.clip.audio)
    assert not np.array_equal(a.clip.audio, c.clip.audio)


def test_conditioned_tasks_keep_what_was_given(pipe: Pipeline) -> None:
    base = pipe(_req(), FAST).clip
    v2a = pipe(_req(video=base.video), FAST)
    assert v2a.request["task"] == "v2a" and np.array_equal(v2a.clip.video, base.video)
    a2v = pipe(_req(audio=base.audio), FAST)
    assert a2v.request["task"] == "a2v" and np.array_equal(a2v.clip.audio, base.audio)
    i2v = pipe(_req(first_frame=base.video[0]), FAST)
    assert i2v.request["task"] == "i2av" and i2v.clip.video.shape == base.video.shape


def test_no_audio_and_other_sizes(pipe: Pipeline) -> None:
    out = pipe(_req(generate_audio=False, width=96, height=48, duration=1.0), FAST)
    assert out.clip.audio is None and out.clip.video.shape == (12, 48, 96, 3)
    assert Capabilities(engine="bundled").resolve_size("16:9") == (88, 48)
    with pytest.raises(ValueError, match="ratio"):
        Capabilities(engine="bundled").resolve_size("wide")


def test_save_and_load_round_trip(pipe: Pipeline, tmp_path: Path) -> None:
    pipe.engine.save_pretrained(tmp_path / "model")
    again = Pipeline.from_pretrained(tmp_path / "model")
    a, b = pipe(_req(), FAST), again(_req(), FAST)
    assert np.array_equal(a.clip.video, b.clip.video)


@pytest.mark.parametrize(
    ("request_kw", "message"),
    [
        ({"prompt": "  "}, "prompt is empty"),
        ({"duration": 40.0}, "duration must be"),
        ({"width": 60}, "multiple of 8"),
        ({"width": 1024}, "between 8 and 512"),
        ({"sample_rate": 48000}, "16000 Hz"),
        ({"videos": (media.Clip(np.zeros((12, 64, 64, 3), np.uint8), None, fps=12.0),)}, "reference videos must last"),
        (
            {
                "prompt": "@image1 waves",
                "images": (np.zeros((64, 64, 3), np.uint8),),
                "first_frame": FACELESS,
                "audios": (np.zeros((1, 16000), np.float32),),
            },
            "@audio1 lasts 1.00 s",
        ),
        ({"prompt": "Image 2 waves", "images": (np.zeros((64, 64, 3), np.uint8),)}, "cites Image 2 \\(@image2\\)"),
        ({"prompt": "@audio1 sings"}, "cites @audio1 but no reference audios were given"),
        ({"images": (np.zeros((64, 64), np.uint8),)}, "@image1 must be an \\(H, W, 3\\) uint8 picture"),
    ],
)
def test_bad_requests_are_refused_clearly(pipe: Pipeline, request_kw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pipe(_req(**request_kw), FAST)


def test_references_condition_the_clip(pipe: Pipeline) -> None:
    from openseedance.stage.render import portrait, voice_sample
    from openseedance.stage.scene import Identity, Voice

    red = portrait(Identity("red", "circle", "plain", "round"))
    blue = portrait(Identity("blue", "square", "striped", "big"))
    voice = voice_sample(Voice("high", "warm"), seconds=2.0)

    def make(images, prompt="@image1 jumps; image 1 speaks like @audio1"):
        return pipe(_req(prompt=prompt, images=images, audios=(voice,)), FAST)

    a, b = make((red,)), make((blue,))
    assert a.clip.video.shape == (18, 64, 64, 3) and a.clip.audio.shape == (1, 24000)
    assert a.request["task"] == "references"
    assert not np.array_equal(a.clip.video, b.clip.video)  # the picture follows the reference
    assert np.array_equal(a.clip.video, make((red,)).clip.video)  # and is seeded
    # the plain citation "image 1" is read as @image1: the same clip (but for the marks, which name the request)
    plain = pipe(_req(prompt="@image1 jumps; image 1 speaks like @audio1", images=(red,), audios=(voice,)), UNMARKED)
    cited = pipe(_req(prompt="@image1 jumps; @image1 speaks like @audio1", images=(red,), audios=(voice,)), UNMARKED)
    assert np.array_equal(plain.clip.video, cited.clip.video)
    # a reference video (here 30 frames at 15 fps, retimed to the clip's 12) conditions the clip too
    moving = media.Clip(np.stack([np.roll(FACELESS + 40 * (k % 3), 2 * k, axis=1) for k in range(30)]), None, fps=15.0)
    with_video = pipe(_req(prompt="a red circle moves as in @video1", videos=(moving,)), FAST)
    without = pipe(_req(prompt="a red circle moves as in video 1"), FAST)
    assert with_video.clip.video.shape == (18, 64, 64, 3) and with_video.request["task"] == "references"
    assert not np.array_equal(with_video.clip.video, without.clip.video)
    # reference guidance: 1 is the plain sampler; another scale changes the clip and is recorded
    guided = pipe(_req(prompt="@image1 jumps", images=(red,)), replace(FAST, reference_guidance=3.0))
    plain = pipe(_req(prompt="@image1 jumps", images=(red,)), FAST)
    assert guided.request["reference_guidance"] == 3.0 and plain.request["reference_guidance"] == 1.0
    assert not np.array_equal(guided.clip.video, plain.clip.video)
    no_refs = pipe(_req(), replace(FAST, reference_guidance=3.0))  # nothing to guide towards: ignored
    assert "reference_guidance" not in no_refs.request
    assert np.array_equal(no_refs.clip.video, pipe(_req(), FAST).clip.video)
    both = pipe(_req(prompt="@image1 and @image2", images=(red, blue), first_frame=FACELESS), FAST)
    assert both.clip.video.shape == (18, 64, 64, 3) and both.request["task"] == "i2av"


def test_multi_shot_prompts(pipe: Pipeline) -> None:
    encoder = pipe.engine.text_encoder
    shots = "A red circle. [shot 1] Wide, it jumps. [shot 2] Close-up, it says hi."
    text, cuts = prompt_text(encoder, _req(prompt=shots, duration=3.0))
    assert cuts == (1.5,) and text.shot is not None
    parts = text.shot[0][text.mask[0]].tolist()
    assert parts[0] == 0 and set(parts) == {0, 1, 2} and parts == sorted(parts)  # global, shot 1, shot 2
    assert not text.shot[1].any()  # the empty prompt (guidance) has no shots
    # the whole prompt as one text
    flat, no_cuts = prompt_text(encoder, _req(prompt="A red circle. [shot 1] It jumps. [shot 2] It rests."), False)
    assert flat.shot is None and no_cuts == ()
    clip = pipe(_req(prompt="[shot 1] a red circle hops [shot 2] it talks [shot 3] it rests"), FAST).clip
    assert clip.video.shape == (18, 64, 64, 3)
    for prompt, message in (("[shot 1] a [shot 3] b", "numbered"), ("".join(f"[shot {k}] x " for k in range(1, 6)),
                            "at most 4 shots")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            _req(prompt=prompt)


def test_shot_lengths(pipe: Pipeline) -> None:
    from openseedance.request import shot_cuts, split_shots

    assert shot_cuts("no shots here", 4.0) == ()
    assert shot_cuts("[shot 1] a [shot 2] b", 4.0) == (2.0,)
    assert shot_cuts("[shot 1 | 1s] a [shot 2] b [shot 3] c", 4.0) == (1.0, 2.5)
    assert shot_cuts("[Shot 1, 3 seconds] a [shot 2: .5 s] b [shot 3 |0.5s] c", 4.0) == (3.0, 3.5)
    assert split_shots("all [shot 1 | 1s] a [shot 2] b") == ("all", ("a", "b"))  # lengths are not text
    _, cuts = prompt_text(pipe.engine.text_encoder, _req(prompt="[shot 1 | 0.5s] it hops [shot 2] it rests",
                                                         duration=1.5))  # fmt: skip
    assert cuts == (0.5,)
    for prompt, message in (("[shot 1 | 3s] a [shot 2 | 2s] b", "add up to 5 s but the clip is 4 s"),
                            ("[shot 1 | 3.8s] a [shot 2] b", "leave 0.2 s for each other shot"),
                            ("[shot 1 | 3.8s] a [shot 2 | 0.2s] b", "at least 0.5 s, got 0.2 s"),
                            ("[shot 1 | soon] a [shot 2] b", r"length in seconds, like \[shot 1 \| 1.5s\]"),
                            ("[shot 1 | 5s] a", "add up to 5 s")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            _req(prompt=prompt, duration=4.0)


def test_a_model_without_reference_training_refuses_references() -> None:
    fresh = Pipeline.untrained("debug")
    with pytest.raises(ValueError, match="trained without reference images"):
        fresh(_req(prompt="@image1 jumps", images=(FACELESS,)), FAST)


def test_missing_or_damaged_model_folder(tmp_path: Path, pipe: Pipeline) -> None:
    with pytest.raises(ValueError, match=r"no pipeline\.json"):
        Pipeline.from_pretrained(tmp_path)
    pipe.engine.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "transformer" / "model.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(ValueError, match="cannot load the model"):
        Pipeline.from_pretrained(tmp_path / "m")


def _every_path(pipe: Pipeline) -> dict[str, GenerationRequest]:
    """One request per way in: text, first and last frame, sound for a video, picture for a sound,
    references (image, voice, video) with reference guidance, shots, extension and an edit."""
    from openseedance.stage.render import portrait, voice_sample
    from openseedance.stage.scene import Identity, Voice

    base = pipe(_req(), FAST).clip
    red = portrait(Identity("red", "circle", "plain", "round"))
    moving = media.Clip(np.stack([np.roll(FACELESS + 40 * (k % 3), 2 * k, axis=1) for k in range(30)]), None, fps=15.0)
    return {
        "t2av": _req(),
        "frames": _req(first_frame=base.video[0], last_frame=base.video[-1]),
        "v2a": _req(video=base.video),
        "a2v": _req(audio=base.audio),
        "references": _req(prompt="@image1 moves as in @video1 and speaks like @audio1", images=(red,),
                           audios=(voice_sample(Voice("high", "warm"), seconds=2.0),), videos=(moving,)),
        "shots": _req(prompt="A red circle. [shot 1 | 0.5s] It jumps. [shot 2] It says hi."),
        "extend": _req(duration=2.5, source=base, extend="forward"),
        "edit": _req(source=base, edit_window=(0.5, 1.0)),
    }  # fmt: skip


def test_to_a_device_keeps_the_clips(pipe: Pipeline) -> None:
    """`to` moves the model and comes back; on the CPU it changes nothing."""
    request = _req(seed=7)
    before = pipe(request, FAST).clip
    assert pipe.to("cpu") is pipe and pipe.engine.device == torch.device("cpu")
    assert np.array_equal(pipe(request, FAST).clip.video, before.video)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_clips_match_cpu_clips(pipe: Pipeline) -> None:
    """On a GPU every way in gives the CPU's clip, but for float rounding (the same noise is drawn)."""
    requests = _every_path(pipe)
    sampler = replace(FAST, reference_guidance=2.0)
    on_cpu = {k: pipe(r, sampler).clip for k, r in requests.items()}
    try:
        pipe.to("cuda")
        assert next(pipe.engine.transformer.parameters()).is_cuda
        on_gpu = {k: pipe(r, sampler).clip for k, r in requests.items()}
    finally:
        pipe.to("cpu")
    for k in requests:
        a, b = on_cpu[k], on_gpu[k]
        assert a.video.shape == b.video.shape, k
        assert np.abs(a.video.astype(int) - b.video.astype(int)).mean() < 1.0, k
        if a.audio is not None:
            assert np.abs(a.audio - b.audio).max() < 0.02, k


def test_the_models_sampling_shift_is_used_unless_a_sampler_overrides_it(pipe: Pipeline) -> None:
    req = _req(prompt="a red circle jumps")
    before = pipe.engine.config
    try:
        plain = pipe(req, UNMARKED)  # the training shift for this clip's token count
        pipe.engine.config = replace(before, shift=4.0)
        engine = pipe.engine
        assert engine.sampler(RunOptions()).shift == 4.0 and engine.sampler(RunOptions(shift=2.5)).shift == 2.5
        made = pipe(req, UNMARKED)
        assert made.request["shift"] == 4.0 != plain.request["shift"]
        assert not np.array_equal(made.clip.video, plain.clip.video)
    finally:
        pipe.engine.config = before


def test_the_model_card_is_read_without_the_weights(tmp_path: Path) -> None:
    """What the server checks requests with: the engine's own capabilities, read from the configs and
    the role table alone; autoencoder weights (most of a model) are never read."""
    from openseedance import engines
    from openseedance.engines.bundled import BundledEngine

    pipe = Pipeline.untrained("debug")  # no reference roles learnt
    folder = pipe.engine.save_pretrained(tmp_path / "m")
    assert engines.read_card(folder) == pipe.capabilities
    assert engines.read_card(None) == BundledEngine.from_pretrained().capabilities  # the bundled model
    for part in ("video_ae", "audio_ae"):
        (folder / part / "model.safetensors").write_bytes(b"not weights")
    card = engines.read_card(folder)
    assert card == pipe.capabilities and card.references["image"] == 0  # the debug model learnt none
    with pytest.raises(ValueError, match="trained without reference images"):
        card.check(_req(prompt="@image1 jumps", images=(FACELESS,)))
    with pytest.raises(ValueError, match="duration must be"):
        card.check(_req(duration=40.0))
    with pytest.raises(ValueError, match=r"no pipeline\.json"):
        engines.read_card(tmp_path)
    assert Capabilities.from_dict(card.to_dict()) == card


def test_use_decoder_takes_a_thinner_decoder_on_the_same_encoder() -> None:
    """A video decoder of another layout (`decoder_channels`) replaces the model's when its encoder
    and latent statistics are the model's; one with another encoder, in weights or in layout, is
    refused, and the model keeps decoding with its own."""
    from openseedance.engines.bundled import BundledEngine
    from openseedance.video_vae import VideoAutoencoder

    engine = BundledEngine.untrained("debug")
    own = engine.video_ae
    thin = VideoAutoencoder(replace(own.config, decoder_channels=(4, 8, 16)))
    thin.load_state_dict(
        {**thin.state_dict(), **{k: v for k, v in own.state_dict().items() if not k.startswith("decoder.")}}
    )
    engine.use_decoder(thin)
    assert engine.video_ae.config.decoder_layout == ((4, 8, 16), (1, 1, 1))
    assert torch.equal(engine.video_ae.decoder.conv_out.conv.weight, thin.decoder.conv_out.conv.weight)
    assert torch.equal(engine.video_ae.encoder.conv_in.conv.weight, own.encoder.conv_in.conv.weight)
    z = torch.randn(1, 4, 2, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(engine.video_ae.decode(z), thin.decode(z))

    other = VideoAutoencoder(replace(own.config, decoder_channels=(4, 8, 16)))  # freshly drawn encoder
    with pytest.raises(ValueError, match="encodes differently"):
        engine.use_decoder(other)
    wider = VideoAutoencoder(replace(own.config, channels=(8, 16, 32), decoder_channels=(8, 16, 16)))
    with pytest.raises(ValueError, match="another encoder configuration"):
        engine.use_decoder(wider)
    assert engine.video_ae.config.decoder_channels == (4, 8, 16)
