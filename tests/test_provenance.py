"""Provenance: marks that survive real re-encoding, a signed manifest that notices tampering, `verify`,
the visible label, and the face guard on references."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from openseedance import media, provenance
from openseedance.cli import main
from openseedance.engines import RunOptions
from openseedance.media import Clip
from openseedance.pipeline import Pipeline
from openseedance.request import GenerationRequest
from openseedance.stage.render import RenderConfig, portrait, render
from openseedance.stage.scene import Identity, sample_scene

PAYLOAD = provenance.Payload.make("bundled:tiny", "job-42")


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys")


@pytest.fixture(autouse=True)
def _local_keys(monkeypatch: pytest.MonkeyPatch, key_dir: Path) -> None:
    monkeypatch.setenv("OPENSEEDANCE_C2PA_DIR", str(key_dir))


@pytest.fixture(scope="module")
def stage_clip() -> Clip:
    return render(sample_scene(11, duration=3.0), RenderConfig()).clip


@pytest.fixture(scope="module")
def marked_file(stage_clip: Clip, tmp_path_factory: pytest.TempPathFactory) -> Path:
    clip = provenance.mark_clip(stage_clip, PAYLOAD)
    return media.write_video(tmp_path_factory.mktemp("marked") / "marked.mp4", clip)


def _reencode(path: Path, out: Path, *, crf: int = 18, size: tuple[int, int] | None = None,
              seconds: float | None = None, audio_bitrate: int = 128_000) -> Path:  # fmt: skip
    """Decode with PyAV and encode again (H.264 + AAC), optionally resized or cut short."""
    clip = media.read_video(path, size=size, max_seconds=seconds)
    return media.write_video(out, clip, crf=crf, audio_bitrate=audio_bitrate)


def test_payload_survives_bit_errors() -> None:
    code = provenance.encode_payload(PAYLOAD)
    assert len(code) == provenance.CODE_BITS
    soft = 2.0 * code - 1
    soft[[3, 20, 41, 70]] *= -1  # four wrong bits, spread out
    assert provenance.decode_payload(soft) == PAYLOAD
    assert provenance.Payload.from_hex(PAYLOAD.hex) == PAYLOAD
    rng = np.random.default_rng(0)
    assert sum(provenance.decode_payload(rng.standard_normal(len(code))) is not None for _ in range(50)) <= 2


def test_video_mark_is_invisible_and_survives_reencoding(marked_file: Path, stage_clip: Clip, tmp_path: Path) -> None:
    marked = provenance.embed_video(stage_clip.video, PAYLOAD)
    mse = np.mean((marked.astype(np.float64) - stage_clip.video) ** 2)
    assert 10 * np.log10(255**2 / mse) >= 40.0
    for name, path in {
        "as written": marked_file,
        "crf 28": _reencode(marked_file, tmp_path / "crf28.mp4", crf=28),
        "half size": _reencode(marked_file, tmp_path / "half.mp4", size=(32, 32), crf=23),
        "first 2 s": _reencode(marked_file, tmp_path / "cut.mp4", seconds=2.0, crf=23),
    }.items():
        result = provenance.detect_video(media.read_video(path).video)
        assert result.found and result.confidence > 0.9999, (name, result)
        if name != "half size":
            assert result.payload == PAYLOAD.hex, (name, result)


def test_video_mark_found_after_a_crop(marked_file: Path, tmp_path: Path) -> None:
    frames = media.read_video(marked_file).video[:, 4:62, 2:60]  # 10% off, not centred
    path = media.write_video(tmp_path / "crop.mp4", Clip(frames, None, 12.0), crf=23)
    result = provenance.detect_video(media.read_video(path).video)
    assert result.found and result.where["shift"] != [0, 0]


def test_video_mark_survives_cuts_between_shots(tmp_path: Path) -> None:
    shots = [render(sample_scene(seed, duration=1.0), RenderConfig()).clip.video for seed in (21, 22, 23, 24)]
    cut = np.concatenate(shots)  # a new shot every 12 frames, not aligned with the mark's sign flips
    marked = provenance.embed_video(cut[3:], PAYLOAD)
    path = media.write_video(tmp_path / "cuts.mp4", Clip(marked, None, 12.0), crf=28)
    result = provenance.detect_video(media.read_video(path).video)
    assert result.found and result.payload == PAYLOAD.hex, result


def test_audio_mark_survives_lossy_codecs_and_resampling(marked_file: Path, tmp_path: Path) -> None:
    low = _reencode(marked_file, tmp_path / "aac32.mp4", audio_bitrate=32_000)
    audio, rate = media.read_audio(low)
    narrow = media.resample_audio(media.resample_audio(audio, rate, 8000), 8000, 44100)
    for name, (sound, sr) in {"aac 32k": (audio, rate), "via 8 kHz": (narrow, 44100)}.items():
        result = provenance.detect_audio(sound, sr)
        assert result.found and result.payload == PAYLOAD.hex, (name, result)
    mark = provenance.embed_audio(audio, rate, PAYLOAD) - audio
    assert 10 * np.log10(np.sum(audio**2) / np.sum(mark**2)) > 20  # SNR in dB


def test_audio_mark_stays_finite_where_sound_gives_way_to_silence() -> None:
    """A given soundtrack followed by exact silence (an extended clip) once came back with NaN samples."""
    t = np.arange(16000) / 16000
    audio = np.concatenate([0.3 * np.sin(2 * np.pi * 220 * t), np.zeros(16000)]).astype(np.float32)[None]
    marked = provenance.embed_audio(audio, 16000, PAYLOAD)
    assert np.isfinite(marked).all()
    assert provenance.detect_audio(marked, 16000).payload == PAYLOAD.hex


def test_unmarked_clips_are_not_detected(stage_clip: Clip, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    noise = Clip(rng.integers(0, 256, (36, 64, 64, 3), dtype=np.uint8),
                 (0.1 * rng.standard_normal((1, 48000))).astype(np.float32))  # fmt: skip
    ramp = np.broadcast_to(np.linspace(0, 255, 64, dtype=np.float32)[None, :, None], (64, 64, 3)).astype(np.uint8)
    bars = Clip(np.stack([np.roll(ramp, 2 * t, axis=1) for t in range(36)]), None)  # a moving test pattern
    for i, clip in enumerate((stage_clip, noise, bars)):
        back = media.read_video(media.write_video(tmp_path / f"{i}.mp4", clip))
        assert not provenance.detect_video(back.video).found
        if back.audio is not None:
            assert not provenance.detect_audio(back.audio, back.sample_rate).found


@pytest.mark.parametrize("method", ["c2pa", "metadata"])
def test_manifest_is_intact_until_tampered(method: str, marked_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "signed.mp4"
    path.write_bytes(marked_file.read_bytes())
    claims = {"payload": PAYLOAD.hex, "model": "bundled:tiny"}
    assert provenance.sign_file(path, claims, method=method) == method
    manifest = provenance.read_manifest(path)
    assert manifest.present and manifest.intact and manifest.kind == method, manifest
    assert manifest.claims["payload"] == PAYLOAD.hex
    assert provenance.detect_video(media.read_video(path).video).payload == PAYLOAD.hex
    data = bytearray(path.read_bytes())
    data[-200] ^= 0xFF  # one byte of the media data (the index comes first: faststart)
    path.write_bytes(bytes(data))
    broken = provenance.read_manifest(path)
    assert broken.present and not broken.intact and broken.problems, broken
    assert not provenance.read_manifest(marked_file).present


def test_verify_command_text_and_json(marked_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(marked_file)]) == 0
    text = capsys.readouterr().out
    assert "video mark: FOUND" in text and "audio mark: FOUND" in text and PAYLOAD.hex in text
    assert "(bundled:tiny)" in text and "manifest:   none" in text
    assert main(["verify", str(marked_file), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["marked"] and report["payload"] == PAYLOAD.hex and report["model"] == "bundled:tiny"
    assert report["video"]["found"] and report["audio"]["confidence"] > 0.9999
    assert report["manifest"]["present"] is False
    with pytest.raises(SystemExit):
        main(["verify", "--help"])
    assert "usage: openseedance verify" in capsys.readouterr().out


@pytest.fixture(scope="module")
def debug_pipe() -> Pipeline:
    return Pipeline.untrained("debug")


def test_pipeline_marks_every_clip_and_writes_a_manifest(tmp_path: Path) -> None:
    pipe = Pipeline.from_pretrained()  # the bundled model: its pictures, unlike an untrained one's, are not noise
    request = GenerationRequest("a red circle hops", duration=2.0, seed=3)
    result = pipe(request, job_id="job-7")
    record = result.request["provenance"]
    assert record["payload"] == provenance.Payload.make(pipe.model_id, "job-7").hex
    assert record["invisible_marks"] == ["video", "audio"] and not record["visible_mark"]
    report = provenance.verify(result.write(tmp_path / "gen.mp4"))
    assert report.video.found and report.audio.found and report.payload == record["payload"]
    assert report.manifest.intact and report.manifest.claims["job_id"] == "job-7"
    # Without a job id, one derived from the request: the same request gives the same clip.
    again, other = pipe(request).request["provenance"], pipe(replace(request, seed=4)).request["provenance"]
    assert again["job_id"] == pipe(request).request["provenance"]["job_id"] != other["job_id"]


def test_visible_label_is_drawn_only_when_asked(debug_pipe: Pipeline) -> None:
    unmarked = RunOptions(mark=False)
    plain = debug_pipe(GenerationRequest("a blue square", duration=1.0), unmarked).clip.video
    labelled = debug_pipe(GenerationRequest("a blue square", duration=1.0, visible_watermark=True), unmarked).clip.video
    assert not provenance.detect_video(plain).found
    changed = np.abs(labelled.astype(int) - plain).max(-1) > 8
    assert changed[:, -14:, -24:].sum((1, 2)).min() >= 10  # the label, in the bottom-right corner of every frame
    assert not changed[:, :40, :40].any()


@pytest.fixture(scope="module")
def face_photo() -> np.ndarray:
    skimage_data = pytest.importorskip("skimage.data")
    return skimage_data.astronaut()  # a real photograph, shipped inside the scikit-image wheel


def test_face_guard_refuses_a_real_face(face_photo: np.ndarray, debug_pipe: Pipeline) -> None:
    assert provenance.find_faces(face_photo)
    assert provenance.find_faces(media.resize_frames(face_photo[None], (64, 64))[0])
    with pytest.raises(provenance.FaceError, match="@image2 shows a real human face"):
        debug_pipe.check(
            GenerationRequest("x", images=(portrait(Identity("red", "circle", "plain", "round")), face_photo))
        )
    with pytest.raises(provenance.FaceError, match=r"first frame.*--allow-faces"):
        debug_pipe.check(GenerationRequest("x", first_frame=face_photo))
    video = Clip(np.stack([face_photo[::4, ::4]] * 24), None)
    with pytest.raises(provenance.FaceError, match="@video1"):
        debug_pipe.check(GenerationRequest("x", videos=(video,)))
    consenting = Pipeline(debug_pipe.engine, allow_faces=True)
    consenting.check(GenerationRequest("x", first_frame=face_photo))
    with pytest.raises(ValueError, match="trained without reference images") as refused:
        consenting.check(GenerationRequest("x", images=(face_photo,)))
    assert not isinstance(refused.value, provenance.FaceError)


def test_a_video_face_must_stay_more_than_a_frame(face_photo: np.ndarray) -> None:
    # a clip the bundled model generated: the face finder takes a blur in its frame 10, and only there
    clip = media.read_video(Path(__file__).parent / "data" / "generated_one_frame_fools_face_finder.mp4")
    assert provenance.find_faces(clip.video[10])
    assert not any(provenance.find_faces(f) for i, f in enumerate(clip.video) if i != 10)
    assert not provenance.video_shows_face(clip.video)
    provenance.check_references(GenerationRequest("x", duration=2.0, source=clip, extend="forward"))

    # a real face that moves across the clip, and one shown for only three frames of 48, are refused
    face = media.resize_frames(face_photo[None], (64, 64))[0]
    moving = np.stack([np.roll(face, (t // 4, t // 3), (0, 1)) for t in range(24)])
    assert provenance.video_shows_face(moving)
    backdrop = render(sample_scene(3, duration=4.0), RenderConfig(64, 64)).clip.video
    brief = backdrop.copy()
    brief[17:20] = face  # frame 18 is one of the six looked at; its neighbours confirm it
    assert not provenance.video_shows_face(backdrop) and provenance.video_shows_face(brief)
    with pytest.raises(provenance.FaceError, match="the source clip"):
        provenance.check_references(GenerationRequest("x", source=Clip(brief, None), extend="forward"))


def test_stage_characters_do_not_trip_the_face_guard() -> None:
    rng = np.random.default_rng(5)
    from openseedance.stage import world

    for _ in range(24):
        identity = Identity(
            *(str(rng.choice(v)) for v in (list(world.COLOURS), world.SHAPES, world.PATTERNS, world.EYES))
        )
        for size in (64, 256):
            assert not provenance.find_faces(portrait(identity, size, size)), identity
    for seed in range(6):
        frames = render(sample_scene(seed, duration=1.0), RenderConfig(128, 128)).clip.video
        assert not any(provenance.find_faces(f) for f in frames[::4])


def test_generate_allow_faces_flag(face_photo: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = Pipeline.untrained("debug").engine.save_pretrained(tmp_path / "model")
    image = media.write_image(tmp_path / "face.png", face_photo)
    args = ["generate", "someone waves", "--model", str(model), "--first-frame", str(image), "--duration", "1",
            "--steps", "1", "-o", str(tmp_path / "out.mp4")]  # fmt: skip
    assert main(args) == 1
    assert "real human face" in capsys.readouterr().err and not (tmp_path / "out.mp4").exists()
    assert main([*args, "--allow-faces", "--visible-watermark"]) == 0
    meta = json.loads(media.read_metadata(tmp_path / "out.mp4")["openseedance"])
    assert meta["visible_watermark"] is True and meta["provenance"]["visible_mark"] is True
