"""Live streams: chunks cut on latent groups, the past kept exactly and bounded, prompts steering from
the next chunk, marks that read back across chunks, fragmented mp4 playable while it is written, and
`openseedance stream` end to end with the bundled model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from openseedance import media, provenance
from openseedance.engines import RunOptions
from openseedance.live import HOLD, Live, LiveConfig
from openseedance.media import Clip
from openseedance.pipeline import Pipeline
from openseedance.request import GenerationRequest


@pytest.fixture(scope="module")
def pipe() -> Pipeline:
    return Pipeline.untrained("debug")


def test_chunks_on_latent_groups_with_the_past_bounded(pipe: Pipeline) -> None:
    live = Live(pipe, GenerationRequest("a red circle bounces", seed=3), LiveConfig(chunk=1.0, context=1.0,
                                                                                   duration=4.0))  # fmt: skip
    group = pipe.capabilities.frames_per_latent
    assert (live.window.first - 1) % group == 0 and live.window.chunk % group == 0
    assert (live.window.context - 1) % group == 0
    parts = list(live)
    assert [p.index for p in parts] == list(range(len(parts)))
    assert parts[0].clip.num_frames == live.window.first
    assert all(p.clip.num_frames == live.window.chunk for p in parts[1:])
    assert live.seconds >= 4.0 and live.seconds - 4.0 < live.window.chunk / 12
    rate, hold = 16000 / 12, round(HOLD * 16000)
    for p in parts:  # the end of each chunk's sound goes with the next one
        assert p.start == pytest.approx(sum(q.clip.num_frames for q in parts[: p.index]) / 12)
    assert parts[0].clip.audio.shape[1] == round(live.window.first * rate) - hold
    assert all(p.clip.audio.shape[1] == round(live.window.chunk * rate) for p in parts[1:-1])
    assert sum(p.clip.audio.shape[1] for p in parts) == round(sum(p.clip.num_frames for p in parts) * rate)


def test_each_chunk_extends_the_unmarked_past(pipe: Pipeline) -> None:
    """Chunk k + 1 is made as an extension whose given part is exactly the last `context` frames and
    their sound made so far (unmarked: with marks off, the chunks are what was made)."""
    seen = []
    original = pipe.engine.generate
    pipe.engine.generate = lambda r, o, p: seen.append((r, o)) or original(r, o, p)
    try:
        live = Live(pipe, GenerationRequest("a red circle bounces"), LiveConfig(duration=4.0),
                    options=RunOptions(mark=False))  # fmt: skip
        parts = [p.clip for p in live]
    finally:
        pipe.engine.generate = original
    assert seen[0][0].source is None and all(r.task == "extend" for r, _ in seen[1:])
    assert all(not o.mark for _, o in seen)  # the engine never marks: the stream marks each chunk itself
    made = np.concatenate([c.video for c in parts])
    sound = np.concatenate([c.audio for c in parts], axis=1)
    end, rate, hold = 0, 16000 / 12, round(HOLD * 16000)
    for (request, _), part in zip(seen[1:], parts, strict=False):
        end += part.num_frames
        assert len(request.source.video) == live.window.context  # bounded, whatever the length
        np.testing.assert_array_equal(request.source.video, made[end - live.window.context : end])
        # the sound as sent, but for its last tenth of a second: held back, then cross-faded into the next take
        a, b = round((end - live.window.context) * rate), round(end * rate)
        assert request.source.audio.shape[1] == b - a
        np.testing.assert_array_equal(request.source.audio[:, : -hold], sound[:, a : b - hold])


def test_a_stop_between_chunks_sends_the_sound_held_back(pipe: Pipeline) -> None:
    live = Live(pipe, GenerationRequest("a red circle bounces"))
    parts = []
    for part in live:
        parts.append(part)
        if part.index == 1:
            live.stop()
    assert [p.clip.num_frames for p in parts] == [live.window.first, live.window.chunk, 0]
    assert parts[-1].clip.audio.shape[1] == round(HOLD * 16000)
    total = sum(p.clip.audio.shape[1] for p in parts)
    assert total == round((live.window.first + live.window.chunk) * 16000 / 12)


def test_steering_takes_effect_at_the_next_chunk(pipe: Pipeline) -> None:
    live = Live(pipe, GenerationRequest("a red circle bounces"), LiveConfig(duration=4.0))
    prompts = []
    for part in live:
        prompts.append(part.prompt)
        if part.index == 0:
            live.steer("a blue square slides left")
        if part.index == 1:
            live.steer("[shot] Close-up, it says hi.")
    assert prompts[:3] == ["a red circle bounces", "a blue square slides left", "[shot] Close-up, it says hi."]
    record = live.record()
    assert [p["prompt"] for p in record["prompts"]] == prompts[:3]
    assert record["prompts"][1]["start"] == pytest.approx(live.window.first / 12, abs=1e-3)
    assert record["task"] == "live"


def test_a_cut_is_made_as_two_shots(pipe: Pipeline) -> None:
    seen = []
    original = pipe.engine.generate
    pipe.engine.generate = lambda r, o, p: seen.append(r) or original(r, o, p)
    try:
        live = Live(pipe, GenerationRequest("A red ball. [shot 1] Wide, it jumps."), LiveConfig(duration=3.0))
        for part in live:
            if part.index == 0:
                live.steer("[shot] Close-up, it says hi.")
    finally:
        pipe.engine.generate = original
    cut = seen[1].prompt
    assert cut.startswith("A red ball. [shot 1 | 1.0833s] Wide, it jumps. [shot 2] Close-up, it says hi.")
    assert seen[2].prompt == "A red ball. [shot 1] Close-up, it says hi."


def test_references_and_the_first_frame_go_where_they_belong() -> None:
    pipe = Pipeline.untrained("debug", seed=1)
    with torch.no_grad():  # as if it had learnt references (fresh role embeddings are zero: "none learnt")
        pipe.engine.transformer.roles.weight.normal_(0, 0.02)
    rng = np.random.default_rng(2)
    look = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    start = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    voice = (0.1 * rng.standard_normal((1, 3 * 16000))).astype(np.float32)
    seen = []
    original = pipe.engine.generate
    pipe.engine.generate = lambda r, o, p: seen.append(r) or original(r, o, p)
    try:
        request = GenerationRequest("@image1 hops, speaking like @audio1", images=(look,), audios=(voice,),
                                    first_frame=start)  # fmt: skip
        list(Live(pipe, request, LiveConfig(duration=3.0)))
    finally:
        pipe.engine.generate = original
    assert all(len(r.images) == 1 and np.array_equal(r.images[0], look) for r in seen)  # every chunk: the looks
    assert all(len(r.audios) == 1 and np.array_equal(r.audios[0], voice) for r in seen)  # and the voices
    assert seen[0].first_frame is not None and all(r.first_frame is None for r in seen[1:])


def test_bad_live_requests_are_refused(pipe: Pipeline) -> None:
    with pytest.raises(ValueError, match="one shot at a time"):
        Live(pipe, GenerationRequest("[shot 1] a ball [shot 2] a cube"))
    with pytest.raises(ValueError, match="chunk"):
        LiveConfig(chunk=float("nan"))
    with pytest.raises(ValueError, match="cannot extend"):
        Live(pipe, GenerationRequest("x", source=Clip(np.zeros((13, 64, 64, 3), np.uint8), None), extend="forward"))
    with pytest.raises(ValueError, match="at most 15 s at once"):
        Live(pipe, GenerationRequest("a red circle"), LiveConfig(chunk=10.0, context=10.0))
    live = Live(pipe, GenerationRequest("a red circle"))
    with pytest.raises(ValueError, match="empty"):
        live.steer("  ")
    with pytest.raises(ValueError, match="at most 2000"):
        live.steer("x" * 2001)


def test_marks_made_chunk_by_chunk_read_back_whole() -> None:
    rng = np.random.default_rng(0)
    payload = provenance.Payload.make("bundled:tiny", "live-1")
    video = rng.integers(40, 200, (49, 64, 64, 3), dtype=np.uint8)
    audio = (0.1 * rng.standard_normal((1, 49 * 16000 // 12))).astype(np.float32)
    cuts, marked_v, marked_a = [0, 13, 25, 37, 49], [], []
    for a, b in zip(cuts, cuts[1:], strict=False):
        marked_v.append(provenance.embed_video(video[a:b], payload, offset=a))
        s0, s1 = a * 16000 // 12, b * 16000 // 12
        marked_a.append(provenance.embed_audio(audio[:, s0:s1], 16000, payload, offset=s0))
    v = provenance.detect_video(np.concatenate(marked_v))
    a = provenance.detect_audio(np.concatenate(marked_a, axis=1), 16000)
    assert v.found and v.payload == payload.hex and v.where["frame_offset"] == 0
    assert a.found and a.payload == payload.hex and a.where["shift"] == 0


def _decodable(path: Path) -> tuple[int, int]:
    with av.open(str(path)) as c:
        frames = sum(1 for _ in c.decode(video=0))
    with av.open(str(path)) as c:
        samples = sum(f.samples for f in c.decode(audio=0))
    return frames, samples


def test_fragments_play_while_the_file_is_written(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    path, copy = tmp_path / "live.mp4", tmp_path / "so-far.mp4"
    written = []
    with media.FragmentWriter(path, 64, 48, 12.0, 16000) as out:
        for n in (13, 12, 12):
            out.write(Clip(rng.integers(0, 255, (n, 48, 64, 3), dtype=np.uint8),
                           (0.1 * rng.standard_normal((1, n * 16000 // 12))).astype(np.float32)))  # fmt: skip
            shutil.copy(path, copy)  # what a reader sees at this moment
            written.append(_decodable(copy))
    frames = [f for f, _ in written]
    assert frames[0] >= 8 and frames[1] >= 20 and frames[2] >= 32  # all but the few the interleaving holds back
    clip = media.read_video(path)
    assert clip.video.shape == (37, 48, 64, 3) and clip.audio.shape[1] >= 37 * 16000 // 12
    media.retag(path, {"comment": "finished"})
    assert media.read_metadata(path)["comment"] == "finished" and media.read_video(path).video.shape[0] == 37


def test_fragment_writer_refuses_what_it_cannot_write(tmp_path: Path) -> None:
    with pytest.raises(media.MediaError, match="even"):
        media.FragmentWriter(tmp_path / "x.mp4", 63, 48, 12.0, None)
    with media.FragmentWriter(tmp_path / "y.mp4", 64, 48, 12.0, 16000) as out, \
            pytest.raises(media.MediaError, match="needs its audio"):  # fmt: skip
        out.write(Clip(np.zeros((4, 48, 64, 3), np.uint8), None))


def test_stream_cli_with_a_prompt_change_read_back(tmp_path: Path) -> None:
    out = tmp_path / "live.mp4"
    done = subprocess.run([sys.executable, "-m", "openseedance.cli", "stream", "a red circle bounces", "--duration",
                           "3", "-o", str(out)], input="a blue square slides left\n", capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    record = json.loads(media.read_metadata(out)["openseedance"])
    assert record["task"] == "live" and record["duration"] >= 3.0
    assert [p["prompt"] for p in record["prompts"]] == ["a red circle bounces", "a blue square slides left"]
    assert record["prompts"][1]["start"] > 0
    clip = media.read_video(out)
    assert clip.video.shape[0] == round(record["duration"] * 12)
    report = provenance.verify(out)
    assert report.video.found and report.audio.found and report.manifest.intact


def test_stream_cli_to_standard_output(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "openseedance.cli", "stream", "a green circle hops", "--duration",
                           "2", "-o", "-"], stdin=subprocess.DEVNULL, capture_output=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    (tmp_path / "piped.mp4").write_bytes(done.stdout)
    clip = media.read_video(tmp_path / "piped.mp4")
    assert clip.video.shape[0] >= 24 and clip.audio is not None
    assert provenance.verify(tmp_path / "piped.mp4").video.found
