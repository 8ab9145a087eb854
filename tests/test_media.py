"""Round trips through real files: PyAV, soundfile and pillow, no mocks."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from openseedance.media import (
    Clip,
    MediaError,
    mux,
    read_audio,
    read_image,
    read_metadata,
    read_video,
    remix_channels,
    resample_audio,
    resample_frames,
    resize_frames,
    write_audio,
    write_image,
    write_video,
)


def make_clip(
    fps: int = 12,
    sr: int = 16000,
    seconds: float = 2.0,
    size: tuple[int, int] = (64, 64),
    channels: int = 1,
    flash: int | None = None,
) -> Clip:
    """A coloured square drifting over a smooth gradient, a 330 Hz tone, and optionally a white frame at
    `flash` with a click at exactly flash / fps (tone off then, so the click onset is unambiguous)."""
    h, w = size
    n = round(seconds * fps)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, np.full((h, w), 96.0)], axis=-1)
    video = np.repeat(base[None], n, axis=0)
    for i in range(n):
        x, y = (i * 2) % (w - h // 4), (i * 3) % (h - h // 4)
        video[i, y : y + h // 4, x : x + w // 4] = (230, 40, 40)
    t = np.arange(round(seconds * sr)) / sr
    audio = np.repeat((0.3 * np.sin(2 * np.pi * 330 * t))[None], channels, axis=0)
    if flash is not None:
        video[flash] = 255
        audio[:] = 0.0
        start = round(flash / fps * sr)
        audio[:, start : start + sr // 200] = 0.8
    return Clip(video.astype(np.uint8), audio.astype(np.float32), fps=fps, sample_rate=sr)


def onset_seconds(audio: np.ndarray, sr: int, threshold: float = 0.4) -> float:
    return int(np.argmax(np.abs(audio).max(axis=0) > threshold)) / sr


def write_with_av(path: Path, clip: Clip, vcodec: str, acodec: str, audio_delay: float = 0.0) -> Path:
    """Write with PyAV directly, for containers/codecs write_video does not produce."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream(vcodec, rate=Fraction(clip.fps))
        vs.width, vs.height, vs.pix_fmt = clip.size[1], clip.size[0], "yuv420p"
        layout = "mono" if clip.audio.shape[0] == 1 else "stereo"
        aus = out.add_stream(acodec, rate=clip.sample_rate, layout=layout)
        for i, image in enumerate(clip.video):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, round(clip.fps))
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
        start = round(audio_delay * clip.sample_rate)
        for s in range(0, clip.audio.shape[1], 960):
            chunk = np.ascontiguousarray(clip.audio[:, s : s + 960])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate, frame.pts, frame.time_base = (
                clip.sample_rate,
                start + s,
                Fraction(1, clip.sample_rate),
            )
            out.mux(aus.encode(frame))
        out.mux(aus.encode(None))
    return path


def test_mp4_round_trip(tmp_path: Path) -> None:
    clip = make_clip()
    path = write_video(tmp_path / "clip.mp4", clip)
    back = read_video(path)
    assert back.num_frames == clip.num_frames == 24
    assert back.fps == 12.0 and back.size == (64, 64) and back.sample_rate == 16000
    assert np.abs(back.video.astype(float) - clip.video).mean() < 4
    assert abs(back.audio.shape[1] - clip.audio.shape[1]) <= 16000 * 0.003
    n = min(back.audio.shape[1], clip.audio.shape[1])
    assert np.corrcoef(back.audio[0, :n], clip.audio[0, :n])[0, 1] > 0.98
    assert back.duration == pytest.approx(2.0)
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.video[0].format.name == "yuv420p"
        assert container.streams.audio[0].codec_context.name == "aac"


@pytest.mark.parametrize(("fps", "sr"), [(12, 16000), (24, 16000), (12, 48000), (24, 48000)])
def test_av_alignment_survives_aac_priming(tmp_path: Path, fps: int, sr: int) -> None:
    k = 7
    path = write_video(tmp_path / "sync.mp4", make_clip(fps, sr, seconds=1.0, flash=k))
    # The AAC stream really carries priming: its first packet sits before time zero.
    with av.open(str(path)) as container:
        first = next(p for p in container.demux(container.streams.audio[0]) if p.dts is not None)
        assert first.pts < 0
    back = read_video(path)
    assert int(np.argmax(back.video.mean(axis=(1, 2, 3)))) == k
    assert abs(onset_seconds(back.audio, sr) - k / fps) < 0.002
    audio, rate = read_audio(path)
    assert rate == sr and abs(onset_seconds(audio, sr) - k / fps) < 0.002


def test_large_stereo_48k(tmp_path: Path) -> None:
    clip = make_clip(24, 48000, seconds=1.0, size=(256, 256), channels=2, flash=10)
    clip.audio[1] *= 0.5
    back = read_video(write_video(tmp_path / "big.mp4", clip))
    assert back.video.shape == (24, 256, 256, 3) and back.audio.shape == (2, 48000)
    assert abs(onset_seconds(back.audio, 48000, 0.3) - 10 / 24) < 0.002
    assert np.abs(back.audio[1]).max() == pytest.approx(0.5 * np.abs(back.audio[0]).max(), rel=0.1)


@pytest.mark.parametrize("suffix", [".mov", ".mkv"])
def test_mov_and_mkv(tmp_path: Path, suffix: str) -> None:
    back = read_video(write_video(tmp_path / f"clip{suffix}", make_clip(flash=5)))
    assert back.video.shape == (24, 64, 64, 3)
    assert abs(onset_seconds(back.audio, 16000) - 5 / 12) < 0.002


def test_webm_vp9_opus(tmp_path: Path) -> None:
    assert {"libvpx-vp9", "libopus"} <= av.codecs_available
    clip = make_clip(12, 48000, seconds=1.0, flash=4)
    back = read_video(write_with_av(tmp_path / "clip.webm", clip, "libvpx-vp9", "libopus"))
    assert back.video.shape == (12, 64, 64, 3) and back.sample_rate == 48000
    assert int(np.argmax(back.video.mean(axis=(1, 2, 3)))) == 4
    assert abs(onset_seconds(back.audio, 48000) - 4 / 12) < 0.002


def test_late_audio_gets_leading_silence(tmp_path: Path) -> None:
    clip = make_clip(12, 16000, seconds=1.0, flash=3)
    back = read_video(write_with_av(tmp_path / "late.mkv", clip, "libx264", "aac", audio_delay=0.25))
    assert back.audio.shape == (1, 16000)
    assert abs(onset_seconds(back.audio, 16000) - (3 / 12 + 0.25)) < 0.002


def test_gif(tmp_path: Path) -> None:
    images = [Image.fromarray(np.full((32, 48, 3), 20 * i, np.uint8)) for i in range(6)]
    path = tmp_path / "anim.gif"
    images[0].save(path, save_all=True, append_images=images[1:], duration=100, loop=0)
    back = read_video(path, fps=10)
    assert back.video.shape == (6, 32, 48, 3) and back.audio is None
    assert list(back.video[:, 0, 0, 0]) == [0, 20, 40, 60, 80, 100]
    assert read_image(path).shape == (32, 48, 3)


def test_read_video_options(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.mp4", make_clip(24, 48000, seconds=2.0, flash=12))
    back = read_video(path, fps=12, size=(32, 48), sample_rate=16000, channels=2, max_seconds=1.5)
    assert back.video.shape == (18, 32, 48, 3) and back.fps == 12
    assert back.audio.shape == (2, 24000) and back.sample_rate == 16000
    assert int(np.argmax(back.video.mean(axis=(1, 2, 3)))) == 6
    assert abs(onset_seconds(back.audio, 16000, 0.3) - 0.5) < 0.002


def test_audio_and_image_files(tmp_path: Path) -> None:
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16000)).astype(np.float32)
    stereo = np.stack([tone, -tone])
    for name in ("a.wav", "a.flac"):
        audio, rate = read_audio(write_audio(tmp_path / name, stereo, 16000))
        assert rate == 16000 and audio.shape == (2, 8000) and audio.dtype == np.float32
        assert np.abs(audio - stereo).max() < 1e-3
    audio, rate = read_audio(write_audio(tmp_path / "a.ogg", stereo, 16000))
    assert audio.shape == (2, 8000) and np.corrcoef(audio[0], tone)[0, 1] > 0.95
    audio, rate = read_audio(tmp_path / "a.wav", sample_rate=8000, channels=1)
    assert rate == 8000 and audio.shape == (1, 4000)

    image = make_clip().video[3]
    assert np.array_equal(read_image(write_image(tmp_path / "a.png", image)), image)
    assert np.abs(read_image(write_image(tmp_path / "a.jpg", image)).astype(float) - image).mean() < 3
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:4] = (255, 0, 0, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    composited = read_image(tmp_path / "alpha.png")
    assert tuple(composited[0, 0]) == (255, 0, 0) and tuple(composited[7, 7]) == (255, 255, 255)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_metadata(tmp_path: Path, suffix: str) -> None:
    tags = {"comment": "made by a test", "prompt": "a red square", "seed": "7"}
    meta = read_metadata(write_video(tmp_path / f"m{suffix}", make_clip(seconds=0.5), metadata=tags))
    assert tags.items() <= meta.items()


def test_mux(tmp_path: Path) -> None:
    clip = make_clip(12, 16000, seconds=1.0, flash=5)
    silent = write_video(tmp_path / "silent.mp4", Clip(clip.video, None, fps=12))
    assert read_video(silent).audio is None
    out = mux(silent, clip.audio, tmp_path / "muxed.mp4", sample_rate=16000)
    a, b = read_video(silent), read_video(out, need_audio=True)
    assert np.array_equal(a.video, b.video)
    assert abs(onset_seconds(b.audio, 16000) - 5 / 12) < 0.002
    # From a file, replacing the audio already there, in place.
    other = make_clip(12, 16000, seconds=1.0, flash=2).audio
    write_audio(tmp_path / "other.wav", other, 16000)
    mux(out, tmp_path / "other.wav", out)
    again = read_video(out)
    assert np.array_equal(again.video, a.video)
    assert abs(onset_seconds(again.audio, 16000) - 2 / 12) < 0.002
    with av.open(str(out)) as container:
        assert len(container.streams.audio) == 1


def test_resampling_and_resizing() -> None:
    frames = np.arange(24, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 3), np.uint8)
    down = resample_frames(frames, 24, 12)
    assert list(down[:, 0, 0, 0]) == list(range(0, 24, 2))
    up = resample_frames(frames[:12], 12, 24)
    assert list(up[:, 0, 0, 0]) == [i // 2 for i in range(24)]
    assert len(resample_frames(frames, 24, 10)) == 10

    sr = 48000
    tone = np.sin(2 * np.pi * 440 * np.arange(sr) / sr).astype(np.float32)[None]
    low = resample_audio(tone, sr, 16000)
    assert low.shape == (1, 16000) and low.dtype == np.float32
    assert np.argmax(np.abs(np.fft.rfft(low[0]))) == 440  # 1 s of signal: bin == Hz

    small = resize_frames(make_clip().video[:2], (32, 16))
    assert small.shape == (2, 32, 16, 3) and small.dtype == np.uint8
    assert remix_channels(tone, 2).shape == (2, sr)
    assert np.allclose(remix_channels(np.stack([tone[0], tone[0] * 0]), 1), tone / 2)


def test_clip_validation() -> None:
    with pytest.raises(ValueError, match="uint8"):
        Clip(np.zeros((2, 8, 8, 3), np.float32), None)
    with pytest.raises(ValueError, match=r"\(C, S\)"):
        Clip(None, np.zeros(100, np.float32))
    clip = Clip(None, np.zeros((1, 8000), np.float32), sample_rate=16000)
    assert clip.duration == 0.5 and clip.size is None and clip.num_frames == 0


@pytest.fixture
def good_mp4(tmp_path: Path) -> Path:
    return write_video(tmp_path / "good.mp4", make_clip(seconds=1.0))


def _bad_file(tmp_path: Path, case: str, good: Path) -> Path:
    path = tmp_path / (f"{case}.txt" if case == "suffix" else f"{case}{good.suffix}")
    data = good.read_bytes()
    contents = {
        "empty": b"",
        "corrupt": np.random.default_rng(0).bytes(4096),
        "truncated": data[: len(data) // 2],
    }
    if case in contents:
        path.write_bytes(contents[case])
    elif case == "suffix":
        path.write_text("hello")
    return path


@pytest.mark.parametrize("case", ["missing", "empty", "corrupt", "truncated", "suffix"])
def test_bad_input_files(tmp_path: Path, good_mp4: Path, case: str) -> None:
    path = _bad_file(tmp_path, case, good_mp4)
    for reader in (read_video, read_audio, read_metadata):
        with pytest.raises(MediaError, match=path.name) as info:
            reader(path)
        assert "\n" not in str(info.value)
    good_png = write_image(tmp_path / "good.png", make_clip().video[0])
    with pytest.raises(MediaError, match=f"{case}\\."):
        read_image(_bad_file(tmp_path, case, good_png))


def test_truncated_mkv(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    noisy = Clip(rng.integers(0, 255, (24, 64, 64, 3), dtype=np.uint8), None, fps=12)
    data = write_video(tmp_path / "noisy.mkv", noisy).read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match=r"cut\.mkv.*truncated"):
        read_video(tmp_path / "cut.mkv")


def write_aac_only(path: Path, audio: np.ndarray, sr: int) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=sr, layout="mono")
        for s in range(0, audio.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(audio[:, s : s + 1024]), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts, frame.time_base = sr, s, Fraction(1, sr)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def test_m4a_is_aligned_and_trimmed(tmp_path: Path) -> None:
    audio = np.zeros((1, 16000), np.float32)
    audio[:, 4800:4900] = 0.8
    back, rate = read_audio(write_aac_only(tmp_path / "click.m4a", audio, 16000))
    assert rate == 16000 and back.shape == (1, 16000)
    assert abs(onset_seconds(back, 16000) - 0.3) < 0.001


def test_stream_errors(tmp_path: Path) -> None:
    audio_only = write_aac_only(tmp_path / "audio_only.mp4", np.zeros((1, 1024), np.float32), 16000)
    with pytest.raises(MediaError, match=r"audio_only\.mp4.*no video stream"):
        read_video(audio_only)
    assert read_audio(audio_only)[0].shape == (1, 1024)
    silent = write_video(tmp_path / "silent.mp4", Clip(make_clip().video, None))
    with pytest.raises(MediaError, match=r"silent\.mp4.*no audio stream"):
        read_video(silent, need_audio=True)
    with pytest.raises(MediaError, match=r"silent\.mp4.*no audio stream"):
        read_audio(silent)


def test_write_errors(tmp_path: Path) -> None:
    clip = make_clip(seconds=0.5)
    with pytest.raises(MediaError, match=r"nope.*does not exist"):
        write_video(tmp_path / "nope" / "out.mp4", clip)
    (tmp_path / "file").write_text("x")
    with pytest.raises(MediaError, match=r"out\.mp4.*not a directory"):
        write_video(tmp_path / "file" / "out.mp4", clip)
    for bad in ("out.xyz", "out.txt", "out.webm"):
        with pytest.raises(MediaError, match=bad.replace(".", r"\.")):
            write_video(tmp_path / bad, clip)
    with pytest.raises(MediaError, match=r"odd\.mp4: H\.264 needs even width and height, got 63x64"):
        write_video(tmp_path / "odd.mp4", Clip(np.zeros((2, 64, 63, 3), np.uint8), None))
    with pytest.raises(MediaError, match=r"a\.txt"):
        write_audio(tmp_path / "a.txt", clip.audio, 16000)
    with pytest.raises(MediaError, match=r"a\.xyz"):
        write_image(tmp_path / "a.xyz", clip.video[0])
    with pytest.raises(ValueError, match="float32"):
        write_audio(tmp_path / "a.wav", clip.audio.astype(np.float64), 16000)
    with pytest.raises(ValueError, match="uint8"):
        write_image(tmp_path / "a.png", clip.video[0].astype(np.float32))
    assert not list(tmp_path.glob("*.partial*"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only directories")
def test_write_to_read_only_directory(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(MediaError, match=r"out\.mp4.*not writable"):
            write_video(locked / "out.mp4", make_clip(seconds=0.5))
    finally:
        locked.chmod(0o700)
