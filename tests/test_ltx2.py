"""The LTX-2 engine on a tiny randomly initialised LTX-2 folder in diffusers layout, built and saved
once per session and loaded through the real `--model` path: shapes and frame snapping, determinism
and reload equality, the conditioning mechanics in latent space (given tokens held exactly, only the
rest sampled), every refusal, damaged folders, the CLI and the server with both official clients,
and `verify` on the output."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import warnings

import av
import httpx
import numpy as np
import pytest
import torch

pytest.importorskip("diffusers", reason="the ltx2 extra is not installed")

from openai import OpenAI
from volcenginesdkarkruntime import Ark

from openseedance import conditioning as cond
from openseedance import engines, media, provenance
from openseedance.cli import main
from openseedance.engines import RunOptions
from openseedance.media import Clip
from openseedance.pipeline import Pipeline
from openseedance.request import GenerationRequest
from openseedance.sampling import Branch
from serve_util import KEY, Server, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
FPS, RATE = 8.0, 24000  # the tiny folder's vocoder makes 24 kHz, like LTX-2's (its audio VAE reads 16 kHz)


@pytest.fixture(scope="session")
def folder(tmp_path_factory):
    from openseedance.engines.ltx2_tiny import save_untrained

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return save_untrained(tmp_path_factory.mktemp("ltx2") / "tiny-ltx2")


@pytest.fixture(scope="module")
def pipe(folder):
    return Pipeline.from_pretrained(folder)


def ask(prompt: str = "a red ball bounces and a bell rings", **kw) -> GenerationRequest:
    kw = {"duration": 1.0, "width": 64, "height": 64, "fps": FPS, "sample_rate": RATE, **kw}
    return GenerationRequest(prompt, **kw)


def source_clip(seconds: float = 1.0, seed: int = 3) -> Clip:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (round(seconds * FPS), 64, 64, 3), dtype=np.uint8)
    audio = (0.3 * np.sin(np.arange(round(seconds * RATE)) / RATE * 2 * np.pi * 440))[None].astype(np.float32)
    return Clip(video=frames, audio=audio, fps=FPS, sample_rate=RATE)


def test_the_folder_is_recognised_and_its_card_read_without_weights(folder, pipe):
    assert engines.kind(folder) == "ltx2"
    card = engines.read_card(folder)
    assert card == pipe.capabilities
    assert (card.engine, card.size_step, card.frames_per_latent, card.max_duration) == ("ltx2", 32, 8, 20.0)
    assert set(card.tasks) == {"t2av", "i2av", "a2v", "v2a", "extend", "edit", "references"}
    # what the HTTP server does: read the card, without importing the ltx2 extra
    probe = (f"import sys; from openseedance import engines; engines.read_card({str(folder)!r}); "
             "assert 'diffusers' not in sys.modules and 'transformers' not in sys.modules")  # fmt: skip
    subprocess.run([sys.executable, "-c", probe], check=True)
    assert card.references == {"image": 0, "video": 0, "audio": 0}  # each kind refused, with its reason


def test_text_to_video_and_audio_shapes_and_frame_snapping(pipe):
    engine = pipe.engine
    for seconds, frames in ((1.0, 8), (1.5, 12)):
        request = ask(duration=seconds, width=96)
        layout = engine.layout(request)
        assert (layout.video_grid[0] - 1) * 8 + 1 == (9 if frames == 8 else 17)  # 1 + 8k frames coded
        out = pipe(request)
        assert out.clip.video.shape == (frames, 64, 96, 3)  # trimmed to what was asked
        assert out.clip.audio.shape == (1, round(seconds * RATE))
        assert out.request["task"] == "t2av" and out.request["steps"] == 2
        # LTX-2's guidances, its spatio-temporal one at block 28 of 48 scaled to this 2-block model
        assert out.request["stg_block"] == 1 and out.request["modality_guidance"] == {"video": 3.0, "audio": 3.0}


def test_same_seed_same_clip_and_reloaded_folder_gives_it_again(folder, pipe):
    a, b = pipe(ask(seed=5)), pipe(ask(seed=5))
    assert np.array_equal(a.clip.video, b.clip.video) and np.array_equal(a.clip.audio, b.clip.audio)
    again = Pipeline.from_pretrained(folder)(ask(seed=5))
    assert np.array_equal(a.clip.video, again.clip.video) and np.array_equal(a.clip.audio, again.clip.audio)
    assert not np.array_equal(pipe(ask(seed=6)).clip.video, a.clip.video)


def sampled(pipe, request: GenerationRequest, seed: int):
    """(clean, keep, latents) of one request, sampled from `seed`'s noise."""
    engine = pipe.engine
    layout = engine.layout(request)
    clean, keep = cond.clip_conditions(request, layout, engine.encoders(request, layout))
    gen = torch.Generator().manual_seed(seed)
    noise = {s: torch.randn(x.shape, generator=gen) for s, x in clean.items()}
    sampler = engine.sampler(RunOptions())
    times = engine.times(sampler.steps, layout.video_tokens)
    with torch.inference_mode():
        x = engine.sample(request, layout, clean, keep, noise, sampler, times, RunOptions(), False)
    return clean, keep, x


@pytest.mark.parametrize("kind", ["first_frame", "last_frame", "forward", "backward", "edit", "a2v", "v2a"])
def test_given_latents_are_held_exactly_and_only_the_rest_is_sampled(pipe, kind):
    src = source_clip()
    image = src.video[0]
    request = {"first_frame": ask(first_frame=image), "last_frame": ask(last_frame=image),
               "forward": ask(duration=2.0, source=src, extend="forward"),
               "backward": ask(duration=2.0, source=src, extend="backward"),
               "edit": ask(duration=2.0, source=source_clip(2.0), edit_window=(0.5, 1.5)),
               "a2v": ask(audio=src.audio[0]), "v2a": ask(video=src.video)}[kind]  # fmt: skip
    clean, keep, one = sampled(pipe, request, 0)
    _, _, two = sampled(pipe, request, 1)
    expect = {"first_frame": ("video",), "last_frame": ("video",), "a2v": ("audio",), "v2a": ("video",)}
    for s in expect.get(kind, ("video", "audio")):
        k = keep[s][0]
        assert (k.any() and not k.all()) or kind in ("a2v", "v2a"), s
        assert torch.equal(one[s][0, k], clean[s][0, k]) and torch.equal(two[s][0, k], clean[s][0, k])
        if not k.all():
            assert not torch.allclose(one[s][0, ~k], two[s][0, ~k])  # the rest is sampled
    if kind == "edit":  # only the window: tokens on both sides of it are held
        t = pipe.engine.layout(request).audio_positions()[:, 0]
        assert keep["audio"][0, t < 0.3].all() and keep["audio"][0, t > 1.7].all() and not keep["audio"][0].all()


def test_extension_and_edit_keep_picture_and_sound_outside_the_window(pipe):
    """Exactly, before the marks (which go on the whole clip, given parts included)."""
    unmarked = RunOptions(mark=False)
    src = source_clip()
    forward = pipe(ask(duration=2.0, source=src, extend="forward"), unmarked).clip
    assert np.array_equal(forward.video[:8], src.video) and np.array_equal(forward.audio[:, :RATE], src.audio)
    backward = pipe(ask(duration=2.0, source=src, extend="backward"), unmarked).clip
    assert np.array_equal(backward.video[-8:], src.video) and np.array_equal(backward.audio[:, -RATE:], src.audio)
    two = source_clip(2.0)
    edited = pipe(ask(duration=2.0, source=two, edit_window=(0.5, 1.5)), unmarked).clip
    assert np.array_equal(edited.video[:4], two.video[:4]) and np.array_equal(edited.video[12:], two.video[12:])
    assert np.array_equal(edited.audio[:, : RATE // 2], two.audio[:, : RATE // 2])
    assert not np.array_equal(edited.video[5:11], two.video[5:11])


def test_soundtrack_to_video_keeps_the_sound_and_video_to_soundtrack_the_picture(pipe):
    src = source_clip()
    a2v = pipe(ask(audio=src.audio[0]))  # a given stream is not marked
    assert np.array_equal(a2v.clip.audio, src.audio) and a2v.request["task"] == "a2v"
    v2a = pipe(ask(video=src.video))
    assert np.array_equal(v2a.clip.video, src.video) and v2a.clip.audio.shape == (1, RATE)
    first = pipe(ask(first_frame=src.video[0]), RunOptions(mark=False)).clip
    assert np.array_equal(first.video[0], src.video[0])


def test_shots_read_their_own_text_and_progress_counts_every_step(pipe, folder, tmp_path):
    """Per-shot text attention: each token reads only its shot's text (global text included)."""
    engine = pipe.engine
    request = ask("a room [shot 1] a red ball [shot 2] a blue cube", duration=2.0)
    layout = engine.layout(request)
    with torch.inference_mode():
        said = engine.shot_text(["a room a red ball", "a room a blue cube"], (1.0,), layout, True)
    video, _, bias, audio_bias = said[Branch.COND]
    length = video.shape[1] // 2
    first, last = bias[0, 0], bias[0, -1]  # the first and the last video token: shots 1 and 2
    assert (first[length:] < 0).all() and (first[:length] == 0).any()
    assert (last[:length] < 0).all() and (last[length:] == 0).any()
    assert audio_bias.shape[1] == layout.audio_latents
    seen = []
    out = pipe(request, progress=lambda done, total: seen.append((done, total)))
    assert out.request["shots"] == "attention" and out.clip.video.shape[0] == 16 and seen[-1] == (2, 2)
    whole = pipe(request, RunOptions(per_shot=False))
    assert "shots" not in whole.request and not np.array_equal(whole.clip.video, out.clip.video)
    with pytest.raises(ValueError, match="shift"):
        pipe(ask(), RunOptions(shift=3.0))

    chained = shutil.copytree(folder, tmp_path / "chained")
    settings = json.loads((folder / "openseedance.json").read_text())
    (chained / "openseedance.json").write_text(json.dumps({**settings, "shots": "chained"}))
    seen.clear()
    out = Pipeline.from_pretrained(chained)(request, progress=lambda done, total: seen.append((done, total)))
    assert out.request["shots"] == "chained" and seen[-1] == (4, 4) and len(seen) == 4  # 2 steps per shot


def test_what_cannot_map_is_refused_by_name_before_any_work(pipe):
    src = source_clip(2.0)
    cases = {"identity": ask("@image1 walks", images=(src.video[0],)),
             "voice": ask("@audio1 sings", audios=(src.audio[0],)),
             "IC-LoRA": ask("moves like @video1", videos=(src,)),
             "multiple of 32": ask(width=48), "20 s": ask(duration=21.0),
             "Hz": ask(sample_rate=16000)}  # fmt: skip
    for words, request in cases.items():
        with pytest.raises(ValueError, match=words):
            pipe.check(request)
        with pytest.raises(ValueError, match=words):
            pipe(request)


def test_a_distilled_folder_samples_the_distilled_schedule_without_guidance(folder, tmp_path):
    distilled = shutil.copytree(folder, tmp_path / "distilled")
    settings = json.loads((folder / "openseedance.json").read_text())
    (distilled / "openseedance.json").write_text(json.dumps({**settings, "distilled": True}))
    pipe = Pipeline.from_pretrained(distilled)
    assert pipe.capabilities.steps == 8
    calls = []
    pipe.engine.pipe.transformer.register_forward_pre_hook(lambda m, a, k: calls.append(k["hidden_states"].shape[0]),
                                                           with_kwargs=True)  # fmt: skip
    out = pipe(ask())
    assert out.request["schedule"] == "distilled" and out.request["steps"] == 8
    assert calls == [1] * 8  # one model evaluation per step: no guidance


def test_a_missing_or_damaged_component_is_named(folder, tmp_path):
    for name, damage in (("vocoder", "remove"), ("transformer", "config"), ("vae", "weights"),
                         ("tokenizer", "remove")):  # fmt: skip
        broken = shutil.copytree(folder, tmp_path / f"{name}-{damage}")
        if damage == "remove":
            shutil.rmtree(broken / name)
        elif damage == "config":
            (broken / name / "config.json").write_text("{ not json")
        else:
            (next((broken / name).glob("*.safetensors"))).write_bytes(b"\0" * 64)
        with pytest.raises(ValueError, match=name):
            engines.load(broken)
    index = json.loads((folder / "model_index.json").read_text())
    other = shutil.copytree(folder, tmp_path / "other")
    (other / "model_index.json").write_text(json.dumps({**index, "_class_name": "FluxPipeline"}))
    with pytest.raises(ValueError, match="not LTX-2"):
        engines.load(other)


def test_cli_generate_with_model_and_verify_finds_marks_and_manifest(folder, tmp_path, capsys):
    out = tmp_path / "ltx.mp4"
    assert main(["generate", "a red ball bounces", "--model", str(folder), "--duration", "2", "--seed", "1",
                 "--output", str(out)]) == 0  # fmt: skip
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "h264" and c.streams.audio[0].codec_context.name == "aac"
    report = provenance.verify(out)
    assert report.video.found and report.audio.found and report.manifest.intact
    assert main(["verify", str(out)]) == 0


def test_server_with_both_official_clients(folder, tmp_path):
    srv = Server(tmp_path / "serve", args=("--model", str(folder))).start()
    try:
        ark = Ark(base_url=f"{srv.url}/api/v3", api_key=KEY, max_retries=0)
        text = {"type": "text", "text": "a red ball bounces --dur 2 --seed 7"}
        created = ark.content_generation.tasks.create(model="ltx2", content=[text], generate_audio=True)
        task = wait_for(lambda: (t := ark.content_generation.tasks.get(task_id=created.id)).status
                        not in ("queued", "running") and t, 180)  # fmt: skip
        assert task.status == "succeeded", task.error
        path = tmp_path / "ark.mp4"
        path.write_bytes(httpx.get(task.content.video_url, timeout=30).content)
        report = provenance.verify(path)
        assert report.video.found and report.audio.found and report.manifest.intact

        client = OpenAI(base_url=f"{srv.url}/v1", api_key=KEY, max_retries=0)
        video = client.videos.create(prompt="a green cube spins", seconds="2", size="64x64")
        done = wait_for(lambda: (v := client.videos.retrieve(video.id)).status in ("completed", "failed") and v, 180)
        assert done.status == "completed", done.error
        with av.open(io.BytesIO(client.videos.download_content(video.id).read())) as c:
            assert (c.streams.video[0].codec_context.width, c.streams.video[0].codec_context.height) == (64, 64)
        content = [{"type": "text", "text": "@image1 walks"},
                   {"type": "image_url", "image_url": {"url": _png()}, "role": "reference_image"}]
        refused = httpx.post(f"{srv.url}/api/v3/contents/generations/tasks", json={"model": "ltx2", "content": content},
                             headers={"authorization": f"Bearer {KEY}"})  # fmt: skip
        assert refused.status_code == 400 and "identity" in refused.text
    finally:
        srv.stop()


def _png() -> str:
    import base64

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 40, 40)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_a_live_stream_runs_on_it(pipe, tmp_path):
    """The live stream asks any engine for extensions: LTX-2's latent groups (8 frames) set its windows."""
    from openseedance.live import Live, LiveConfig

    live = Live(pipe, ask(), LiveConfig(chunk=1.0, context=1.0, duration=3.0))
    assert (live.window.chunk, live.window.context) == (8, 9)  # 1 s at 8 fps: one group; 1 + one group
    path = tmp_path / "live.mp4"
    with media.FragmentWriter(path, 64, 64, FPS, RATE) as out:
        for part in live:
            out.write(part.clip)
            if part.index == 0:
                live.steer("a blue cube slides left")
    live.finish(path)
    clip = media.read_video(path)
    assert clip.video.shape[0] == round(live.seconds * FPS) and live.seconds >= 3.0
    assert [p["prompt"] for p in live.record()["prompts"]] == ["a red ball bounces and a bell rings",
                                                                "a blue cube slides left"]  # fmt: skip
