"""Request inputs decoded safely: images, video clips and audio from bytes no client is trusted with.

Bytes are capped before they are decoded; a file's type comes from its magic bytes, never from its name or
declared media type; durations and frame sizes are checked from the container's packets before any frame is
decoded; and every failure, PyAV's and pillow's included, becomes an :class:`InputError` that names the
request field and says what was expected.
"""

from __future__ import annotations

import io
import logging
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import soundfile as sf
from PIL import Image

from openseedance import media
from openseedance.serve.fetch import load_bytes
from openseedance.serve.limits import InputError, InputLimits, too_large

__all__ = ["decode_audio", "decode_image", "decode_video", "load_audio", "load_image", "load_video"]

log = logging.getLogger(__name__)

MAX_FPS = 240.0  # the highest frame rate media.check_format accepts; bounds the frames one second may decode to
_SLACK = 0.1  # seconds: containers round durations to packets (an AAC frame is 64 ms at 16 kHz)


@dataclass(frozen=True)
class _Format:
    suffix: str  # what media.read_* goes by
    label: str  # for messages: "got a PNG image"
    kinds: frozenset[str]


def _format(suffix: str, label: str, *kinds: str) -> _Format:
    return _Format(suffix, label, frozenset(kinds))


_EXPECTED = {
    "image": "an image (PNG, JPEG, WebP, BMP or GIF)",
    "video": "a video (MP4, MOV, WebM, MKV, AVI or GIF)",
    "audio": "audio (WAV, FLAC, OGG, MP3, M4A, or a video with sound)",
}
_AUDIO_BRANDS = (b"M4A ", b"M4B ", b"M4P ", b"F4A ")
_IMAGE_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis")


def _sniff(data: bytes) -> _Format | None:
    """The format the bytes are in, by their first bytes."""
    head = bytes(data[:64])
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return _format(".png", "a PNG image", "image")
    if head.startswith(b"\xff\xd8\xff"):
        return _format(".jpg", "a JPEG image", "image")
    if head.startswith((b"GIF87a", b"GIF89a")):
        return _format(".gif", "a GIF", "image", "video")
    if head.startswith(b"BM") and len(head) >= 26:
        return _format(".bmp", "a BMP image", "image")
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return _format(".webp", "a WebP image", "image")
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return _format(".wav", "a WAV audio file", "audio")
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return _format(".avi", "an AVI file", "video", "audio")
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _AUDIO_BRANDS:
            return _format(".m4a", "an M4A audio file", "audio")
        if brand in _IMAGE_BRANDS:
            return _format(".heic", "a HEIC/AVIF image (not supported; convert it to PNG or JPEG)")
        if brand == b"qt  ":
            return _format(".mov", "a QuickTime (MOV) file", "video", "audio")
        return _format(".mp4", "an MP4 file", "video", "audio")
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        if b"webm" in head:
            return _format(".webm", "a WebM file", "video", "audio")
        return _format(".mkv", "a Matroska (MKV) file", "video", "audio")
    if head.startswith(b"fLaC"):
        return _format(".flac", "a FLAC audio file", "audio")
    if head.startswith(b"OggS"):
        return _format(".ogg", "an Ogg audio file", "audio")
    # MPEG audio: an ID3 tag, or a frame header (11 sync bits, then a layer other than the reserved 00).
    if head.startswith(b"ID3") or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06):
        return _format(".mp3", "an MP3 audio file", "audio")
    return None


def decode_image(data: bytes, limits: InputLimits, field: str) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB from PNG, JPEG, WebP, BMP or GIF (its first frame) bytes."""
    fmt = _expect(data, "image", limits, field)
    with _decoding(field, fmt, "image") as path:
        with Image.open(io.BytesIO(data)) as img:  # reads the header only
            width, height = img.size
        _check_pixels(width, height, limits, field, "image")
        path.write_bytes(data)
        return media.read_image(path)


def decode_video(
    data: bytes,
    limits: InputLimits,
    field: str,
    *,
    fps: float | None = None,
    size: tuple[int, int] | None = None,
    sample_rate: int | None = None,
    channels: int | None = None,
    need_audio: bool = False,
) -> media.Clip:
    """A :class:`media.Clip` from MP4, MOV, WebM, MKV, AVI or GIF bytes; the keywords go to ``media.read_video``
    (pass ``fps`` and ``size`` to decode straight to what the model needs and keep memory small)."""
    fmt = _expect(data, "video", limits, field)
    with _decoding(field, fmt, "video") as path:
        path.write_bytes(data)
        probe = _probe(path, cap=limits.max_video_seconds + _SLACK)
        if probe.video_seconds is None:
            raise InputError(field, f"expected a video, but {fmt.label} has no video stream")
        _check_pixels(probe.width, probe.height, limits, field, "video frame")
        if probe.cut_short:  # either stream may be the long one
            longest = max(probe.video_seconds, probe.audio_seconds or 0.0)
            _check_seconds(longest, limits.max_video_seconds, field, "video", at_least=True)
        _check_seconds(probe.video_seconds, limits.max_video_seconds, field, "video")
        if probe.audio_seconds is not None:
            _check_seconds(probe.audio_seconds, limits.max_video_seconds, field, "video's sound track")
        if probe.video_packets > (limits.max_video_seconds + _SLACK) * MAX_FPS:
            raise InputError(field, f"the video has {probe.video_packets} frames, more than {MAX_FPS:g} per second")
        if fps is None and probe.frame_rate > MAX_FPS:
            raise InputError(field, f"the video's frame rate {probe.frame_rate:g} is over {MAX_FPS:g} fps")
        clip = media.read_video(
            path, fps=fps, size=size, sample_rate=sample_rate, channels=channels, need_audio=need_audio
        )
        _check_seconds(clip.duration, limits.max_video_seconds, field, "video")
        if size is None:
            _check_pixels(clip.video.shape[2], clip.video.shape[1], limits, field, "video frame")
        return clip


def decode_audio(
    data: bytes, limits: InputLimits, field: str, *, sample_rate: int | None = None, channels: int | None = None
) -> tuple[np.ndarray, int]:
    """``(audio (C, S) float32, rate)`` from WAV, FLAC, OGG, MP3 or M4A bytes, or a video's sound track."""
    fmt = _expect(data, "audio", limits, field)
    with _decoding(field, fmt, "audio") as path:
        path.write_bytes(data)
        probe = _probe(path, cap=limits.max_audio_seconds + _SLACK, with_video=False)
        if probe.audio_seconds is None:
            raise InputError(field, f"expected audio, but {fmt.label} has no sound track")
        _check_seconds(probe.audio_seconds, limits.max_audio_seconds, field, "audio", at_least=probe.cut_short)
        if fmt.suffix in (".wav", ".flac", ".ogg"):  # read by soundfile, which goes by the header's length
            info = sf.info(str(path))
            _check_seconds(info.frames / info.samplerate, limits.max_audio_seconds, field, "audio")
        audio, rate = media.read_audio(path, sample_rate=sample_rate, channels=channels)
        _check_seconds(audio.shape[1] / rate, limits.max_audio_seconds, field, "audio")
        return audio, rate


def load_image(url: str, limits: InputLimits, field: str) -> np.ndarray:
    """:func:`load_bytes` then :func:`decode_image`."""
    return decode_image(load_bytes(url, limits, field)[0], limits, field)


def load_video(url: str, limits: InputLimits, field: str, **read_kwargs: object) -> media.Clip:
    """:func:`load_bytes` then :func:`decode_video`."""
    return decode_video(load_bytes(url, limits, field)[0], limits, field, **read_kwargs)


def load_audio(url: str, limits: InputLimits, field: str, **read_kwargs: object) -> tuple[np.ndarray, int]:
    """:func:`load_bytes` then :func:`decode_audio`."""
    return decode_audio(load_bytes(url, limits, field)[0], limits, field, **read_kwargs)


def _expect(data: bytes, kind: str, limits: InputLimits, field: str) -> _Format:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InputError(field, f"expected {_EXPECTED[kind]} as bytes, got {type(data).__name__}")
    if len(data) > limits.max_bytes:
        raise too_large(field, limits, f"the {kind} is")
    if not len(data):
        raise InputError(field, f"expected {_EXPECTED[kind]}, got no data")
    fmt = _sniff(data)
    if fmt is None:
        raise InputError(field, f"expected {_EXPECTED[kind]}, but the data is not in a media format this server reads")
    if kind not in fmt.kinds:
        raise InputError(field, f"expected {_EXPECTED[kind]}, got {fmt.label}")
    return fmt


@contextmanager
def _decoding(field: str, fmt: _Format, kind: str) -> Iterator[Path]:
    """A temporary path to write the bytes to; any failure inside becomes an InputError naming ``field``."""
    with tempfile.TemporaryDirectory(prefix="openseedance-input-") as folder:
        path = Path(folder) / f"input{fmt.suffix}"
        try:
            yield path
        except InputError:
            raise
        except Exception as err:  # untrusted bytes reach C decoders: whatever they raise is the input's fault
            log.debug("cannot decode %s for %s", fmt.label, field, exc_info=True)
            raise InputError(field, f"cannot read {fmt.label} ({_reason(err, path)}); send {_EXPECTED[kind]}") from None


def _reason(err: BaseException, path: Path) -> str:
    """The decoder's complaint without our temporary path, FFmpeg's error numbers or Python object reprs."""
    text = str(err).replace(f"{path}: ", "").replace(f": '{path}'", "").replace(str(path), "the file")
    text = re.sub(r"\[Errno -?\d+\] |\s*<[\w.]+ object at 0x[0-9a-f]+>|\s+", " ", text).strip(" .:")
    return text or type(err).__name__


@dataclass
class _Probe:
    width: int = 0
    height: int = 0
    frame_rate: float = 0.0
    video_seconds: float | None = None  # None: no such stream
    audio_seconds: float | None = None
    video_packets: int = 0
    cut_short: bool = False  # demuxing stopped at the cap: the durations are lower bounds


def _probe(path: Path, cap: float, with_video: bool = True) -> _Probe:
    """Frame size, rate and stream durations from packet timestamps, demuxed without decoding (cheap even
    for a long file, and not fooled by a header that understates the duration). Stops once a stream
    passes ``cap`` seconds: that alone is enough to refuse the file."""
    probe = _Probe()
    with av.open(str(path), "r", metadata_errors="replace") as container:
        video = container.streams.video[0] if container.streams.video and with_video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        if video is not None:
            probe.width, probe.height = video.codec_context.width, video.codec_context.height
            rate = video.average_rate or video.guessed_rate
            probe.frame_rate = float(rate) if rate else 0.0
        spans: dict[int, list[float]] = {}
        for packet in container.demux([s for s in (video, audio) if s is not None]):
            if packet.pts is None or packet.time_base is None:
                continue
            start = float(packet.pts * packet.time_base)
            end = start + float((packet.duration or 0) * packet.time_base)
            span = spans.setdefault(packet.stream.index, [start, end])
            span[0], span[1] = min(span[0], start), max(span[1], end)
            if packet.stream is video:
                probe.video_packets += 1
            if span[1] - span[0] > cap or probe.video_packets > cap * MAX_FPS:
                probe.cut_short = True
                break
        # Read while the container is open: its streams are not to be touched after close.
        if video is not None:
            probe.video_seconds = _span(spans.get(video.index))
        if audio is not None:
            probe.audio_seconds = _span(spans.get(audio.index))
    return probe


def _span(span: list[float] | None) -> float:
    return 0.0 if span is None else span[1] - span[0]


def _check_seconds(seconds: float, limit: float, field: str, what: str, at_least: bool = False) -> None:
    if seconds > limit + _SLACK:
        lasts = f"{'over ' if at_least else ''}{seconds:.1f} s"
        raise InputError(field, f"the {what} lasts {lasts}, longer than this server's limit of {limit:g} s")


def _check_pixels(width: int, height: int, limits: InputLimits, field: str, what: str) -> None:
    if width * height > limits.max_pixels:
        raise InputError(
            field,
            f"the {what} is {width}x{height} = {width * height} pixels, over this server's limit of "
            f"{limits.max_pixels} pixels; scale it down",
        )
