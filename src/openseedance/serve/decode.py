"""Request inputs decoded safely: images, video clips and audio from bytes no client is trusted with.

Bytes are capped before they are decoded; a file's type comes from its magic bytes, never from its name or
declared media type; durations and frame sizes are checked from the container's packets before any frame is
decoded; and every failure, PyAV's and pillow's included, becomes an :class:`InputError` that names the
request field and says what was expected.

Memory: a few kilobytes of H.264 can hold minutes of full-size frames. So media are decoded straight to the
size, frame rate and sample rate the model uses (``size``, ``fps``, ``sample_rate``, ``channels``), frame by
frame, and what that will hold is priced from the probe (:func:`probe_video` and friends) against a
``budget`` of bytes before the first frame is decoded, then counted again while decoding, since a container
can misstate its frame size.
"""

from __future__ import annotations

import io
import logging
import math
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
from openseedance.serve.limits import InputError, InputLimits, MiB, too_large

__all__ = [
    "Probe",
    "decode_audio",
    "decode_image",
    "decode_video",
    "load_audio",
    "load_image",
    "load_video",
    "probe_audio",
    "probe_image",
    "probe_video",
]

log = logging.getLogger(__name__)

MAX_FPS = 240.0  # the highest frame rate media.check_format accepts; bounds the frames one second may decode to
_ORIENTATION = 0x0112  # the EXIF tag
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


def probe_image(data: bytes, limits: InputLimits, field: str) -> Probe:
    """An image's shown size (EXIF rotation applied) from its header, checked against the pixel limit."""
    fmt = _expect(data, "image", limits, field)
    with _decoding(field, fmt, "image"):
        try:
            img = Image.open(io.BytesIO(data))  # reads the header only
        except Image.DecompressionBombError as e:  # pillow's own refusal, far above this server's limit
            raise InputError(field, f"the image is too large ({e}); this server's limit is {limits.max_pixels} "
                                    "pixels: scale it down") from None  # fmt: skip
        with img:
            width, height = img.size
            if img.getexif().get(_ORIENTATION) in (5, 6, 7, 8):  # turned a quarter: exif_transpose swaps the sides
                width, height = height, width
    _check_pixels(width, height, limits, field, "image")
    return Probe(width=width, height=height)


def probe_video(data: bytes, limits: InputLimits, field: str) -> Probe:
    """A video's frame size, rate and length from its packets (nothing decoded), checked against the limits."""
    fmt = _expect(data, "video", limits, field)
    with _decoding(field, fmt, "video") as path:
        path.write_bytes(data)
        return _check_video(path, fmt, limits, field)


def probe_audio(data: bytes, limits: InputLimits, field: str) -> Probe:
    """Audio's length, rate and channels from its packets (nothing decoded), checked against the limits."""
    fmt = _expect(data, "audio", limits, field)
    with _decoding(field, fmt, "audio") as path:
        path.write_bytes(data)
        return _check_audio(path, fmt, limits, field)


def decode_image(
    data: bytes, limits: InputLimits, field: str, *, size: tuple[int, int] | None = None, budget: int | None = None
) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB from PNG, JPEG, WebP, BMP or GIF (its first frame) bytes, resized to ``size``
    (H, W) when given. Pillow decodes at the header's size, so the header prices it."""
    probe = probe_image(data, limits, field)
    fmt = _expect(data, "image", limits, field)
    # pillow holds 4 bytes a pixel: the image, a converted copy (RGBA and its composite on white: two), the result
    need = probe.width * probe.height * 4 * 3 + _picture_bytes(size or (probe.height, probe.width))
    _check_budget(need, budget, limits, field, f"the {probe.width}x{probe.height} image")
    with _decoding(field, fmt, "image") as path:
        path.write_bytes(data)
        return media.read_image(path, size=size)


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
    budget: int | None = None,
) -> media.Clip:
    """A :class:`media.Clip` from MP4, MOV, WebM, MKV, AVI or GIF bytes; the keywords go to ``media.read_video``
    (pass ``fps`` and ``size`` to decode straight to what the model needs and keep memory small). ``budget``:
    the bytes the clip may hold (``limits.max_decoded_bytes`` when None), priced before decoding."""
    fmt = _expect(data, "video", limits, field)
    budget = limits.max_decoded_bytes if budget is None else budget
    with _decoding(field, fmt, "video") as path:
        path.write_bytes(data)
        probe = _check_video(path, fmt, limits, field)
        if fps is None and probe.frame_rate > MAX_FPS:
            raise InputError(field, f"the video's frame rate {probe.frame_rate:g} is over {MAX_FPS:g} fps")
        height, width = size or (probe.height, probe.width)
        rate = fps or probe.frame_rate or MAX_FPS
        frames = math.ceil((probe.seconds + _SLACK) * rate) + 1
        shown = min(frames, probe.video_packets + 1)  # distinct pictures kept: at most one per source frame
        need = (frames + shown) * _picture_bytes((height, width))  # the kept frames, then the stacked array
        need += 2 * probe.width * probe.height * 3  # one source frame as it is converted and resized
        if probe.audio_seconds is not None:
            need += _sound_bytes(probe, sample_rate, channels)
        what = f"the {probe.seconds:.1f} s video at {width}x{height} and {rate:g} fps"
        _check_budget(need, budget, limits, field, what)
        try:
            clip = media.read_video(path, fps=fps, size=size, sample_rate=sample_rate, channels=channels,
                                    need_audio=need_audio, max_bytes=budget)  # fmt: skip
        except media.TooMuchMedia:
            raise _over_budget(f"{what} takes more when decoded than its header says", budget, field) from None
        _check_seconds(clip.duration, limits.max_video_seconds, field, "video")
        if size is None:
            _check_pixels(clip.video.shape[2], clip.video.shape[1], limits, field, "video frame")
        return clip


def decode_audio(
    data: bytes,
    limits: InputLimits,
    field: str,
    *,
    sample_rate: int | None = None,
    channels: int | None = None,
    budget: int | None = None,
) -> tuple[np.ndarray, int]:
    """``(audio (C, S) float32, rate)`` from WAV, FLAC, OGG, MP3 or M4A bytes, or a video's sound track
    (``channels=1``: mixed down as it is decoded)."""
    fmt = _expect(data, "audio", limits, field)
    budget = limits.max_decoded_bytes if budget is None else budget
    with _decoding(field, fmt, "audio") as path:
        path.write_bytes(data)
        probe = _check_audio(path, fmt, limits, field)
        what = f"the {probe.audio_seconds:.1f} s of {probe.audio_channels}-channel {probe.audio_rate} Hz audio"
        _check_budget(_sound_bytes(probe, sample_rate, channels), budget, limits, field, what)
        try:
            audio, rate = media.read_audio(path, sample_rate=sample_rate, channels=channels, max_bytes=budget)
        except media.TooMuchMedia:
            raise _over_budget(f"{what} takes more when decoded than its header says", budget, field) from None
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
class Probe:
    """What the header and the packets say about an input, before any decoding."""

    width: int = 0
    height: int = 0
    frame_rate: float = 0.0
    video_seconds: float | None = None  # None: no such stream
    audio_seconds: float | None = None
    audio_rate: int = 0
    audio_channels: int = 0
    video_packets: int = 0
    cut_short: bool = False  # demuxing stopped at the cap: the durations are lower bounds

    @property
    def seconds(self) -> float:
        """The video's length (an image: 0)."""
        return self.video_seconds or 0.0


def _check_video(path: Path, fmt: _Format, limits: InputLimits, field: str) -> Probe:
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
    return probe


def _check_audio(path: Path, fmt: _Format, limits: InputLimits, field: str) -> Probe:
    probe = _probe(path, cap=limits.max_audio_seconds + _SLACK, with_video=False)
    if probe.audio_seconds is None:
        raise InputError(field, f"expected audio, but {fmt.label} has no sound track")
    _check_seconds(probe.audio_seconds, limits.max_audio_seconds, field, "audio", at_least=probe.cut_short)
    if fmt.suffix in (".wav", ".flac", ".ogg"):  # read by soundfile, which goes by the header's length
        info = sf.info(str(path))
        _check_seconds(info.frames / info.samplerate, limits.max_audio_seconds, field, "audio")
        probe.audio_seconds = max(probe.audio_seconds, info.frames / info.samplerate)
        probe.audio_rate, probe.audio_channels = info.samplerate, info.channels
    return probe


def _picture_bytes(size: tuple[int, int]) -> int:
    return size[0] * size[1] * 3


def _sound_bytes(probe: Probe, sample_rate: int | None, channels: int | None) -> int:
    """float32 samples: decoded at the source's rate (mixed down at once to ``channels=1``), joined, and
    resampled (in float64)."""
    seconds = (probe.audio_seconds or 0.0) + _SLACK
    kept = 1 if channels == 1 else max(1, probe.audio_channels)
    decoded = seconds * probe.audio_rate * kept * 4
    return round(2 * decoded + seconds * (sample_rate or probe.audio_rate) * kept * 8 * 2)


def _check_budget(need: float, budget: int | None, limits: InputLimits, field: str, what: str) -> None:
    budget = limits.max_decoded_bytes if budget is None else budget
    if need > budget:
        raise _over_budget(f"{what} would take {need / MiB:.0f} MiB decoded", budget, field)


def _over_budget(took: str, budget: int, field: str) -> InputError:
    return InputError(field, f"{took}, more than the {budget / MiB:.0f} MiB this server decodes for a request's "
                             "media; send shorter or smaller media")  # fmt: skip


def _probe(path: Path, cap: float, with_video: bool = True) -> Probe:
    """Frame size, rate and stream durations from packet timestamps, demuxed without decoding (cheap even
    for a long file, and not fooled by a header that understates the duration). Stops once a stream
    passes ``cap`` seconds: that alone is enough to refuse the file."""
    probe = Probe()
    with av.open(str(path), "r", metadata_errors="replace") as container:
        video = container.streams.video[0] if container.streams.video and with_video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        if video is not None:
            probe.width, probe.height = video.codec_context.width, video.codec_context.height
            rate = video.average_rate or video.guessed_rate
            probe.frame_rate = float(rate) if rate else 0.0
        if audio is not None:
            probe.audio_rate = audio.codec_context.sample_rate or 0
            probe.audio_channels = audio.codec_context.channels or 0
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
