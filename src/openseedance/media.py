"""Read and write video, audio and images as numpy arrays, with audio kept time-aligned to video.

Video is ``(T, H, W, 3)`` uint8 RGB, audio ``(C, S)`` float32 in [-1, 1], images ``(H, W, 3)`` uint8.
Every failure on bad input surfaces as a one-line :class:`MediaError` naming the file.
"""

from __future__ import annotations

import logging
import numbers
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from math import gcd
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
import soundfile as sf
from PIL import Image, ImageOps

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".gif", ".avi")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".m4a")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
_VIDEO_WRITE_SUFFIXES = (".mp4", ".mov", ".mkv")
_AUDIO_WRITE_SUFFIXES = (".wav", ".flac", ".ogg")
_SOUNDFILE_SUFFIXES = (".wav", ".flac", ".ogg")
_AAC_FRAME = 1024
_ORIENTATION = 0x0112  # the EXIF tag exif_transpose goes by
_LAYOUTS = {1: "mono", 2: "stereo"}
# av.FFmpegError is not an OSError; pillow also raises SyntaxError/EOFError on malformed files.
_IO_ERRORS = (
    av.error.FFmpegError,
    OSError,
    sf.SoundFileError,
    SyntaxError,
    EOFError,
    Image.DecompressionBombError,
)

PathLike = str | os.PathLike


class MediaError(ValueError):
    """Bad or unreadable media; the message is one line a user can act on and names the file."""


class TooMuchMedia(MediaError):
    """Decoding would hold more than the ``max_bytes`` a reader was given."""


@dataclass
class Clip:
    """A video (``None`` for audio-only) with its audio (``None`` for silent)."""

    video: np.ndarray | None
    audio: np.ndarray | None
    fps: float = 12.0
    sample_rate: int = 16000

    def __post_init__(self) -> None:
        if self.video is None and self.audio is None:
            raise ValueError("Clip needs video or audio, got neither")
        if self.video is not None:
            _check_video_array(self.video)
        if self.audio is not None:
            _check_audio_array(self.audio)
        if not self.fps > 0 or not self.sample_rate > 0:
            raise ValueError(f"Clip fps and sample_rate must be positive, got {self.fps} and {self.sample_rate}")

    @property
    def num_frames(self) -> int:
        return 0 if self.video is None else len(self.video)

    @property
    def size(self) -> tuple[int, int] | None:
        return None if self.video is None else (self.video.shape[1], self.video.shape[2])

    @property
    def duration(self) -> float:
        if self.video is not None:
            return self.num_frames / self.fps
        return self.audio.shape[1] / self.sample_rate


def check_format(width: int, height: int, fps: float, sample_rate: int) -> None:
    """Raise ValueError unless these are a frame size, frame rate and sample rate clips may have."""
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 16 <= value <= 4096:
            raise ValueError(f"{name} must be an integer from 16 to 4096 pixels, got {value!r}")
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not 1.0 <= float(fps) <= 240.0:
        raise ValueError(f"fps must be between 1 and 240, got {fps!r}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Integral):
        raise ValueError(f"sample_rate must be an integer from 8000 to 192000 Hz, got {sample_rate!r}")
    if not 8000 <= sample_rate <= 192000:
        raise ValueError(f"sample_rate must be an integer from 8000 to 192000 Hz, got {sample_rate!r}")


def _check_video_array(video: np.ndarray) -> None:
    if not isinstance(video, np.ndarray) or video.dtype != np.uint8 or video.ndim != 4 or video.shape[3] != 3:
        raise ValueError(f"video must be a uint8 array shaped (T, H, W, 3), got {_describe(video)}")


def _check_audio_array(audio: np.ndarray) -> None:
    if not isinstance(audio, np.ndarray) or audio.dtype != np.float32 or audio.ndim != 2 or not audio.shape[0]:
        raise ValueError(
            f"audio must be a float32 array shaped (C, S), got {_describe(audio)} (use audio[None] for mono)"
        )


def _describe(x: object) -> str:
    return f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__


def _why(err: BaseException) -> str:
    return (getattr(err, "strerror", None) or str(err) or type(err).__name__).replace("\n", " ")


def _check_input(path: PathLike, suffixes: tuple[str, ...], kind: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise MediaError(f"{path}: file does not exist")
    if not path.is_file():
        raise MediaError(f"{path}: is not a file")
    if path.suffix.lower() not in suffixes:
        raise MediaError(f"{path}: unsupported {kind} type '{path.suffix}'; expected one of {' '.join(suffixes)}")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: file is empty (0 bytes)")
    return path


def _check_output(path: PathLike, suffixes: tuple[str, ...], kind: str) -> Path:
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise MediaError(f"{path}: cannot write {kind} as '{path.suffix}'; use one of {' '.join(suffixes)}")
    parent = path.parent
    if not parent.exists():
        raise MediaError(f"{path}: directory {parent} does not exist")
    if not parent.is_dir():
        raise MediaError(f"{path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK):
        raise MediaError(f"{path}: directory {parent} is not writable")
    return path


@contextmanager
def _atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``, moved over it on success; a failed write leaves no half file."""
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except _IO_ERRORS as err:
        raise MediaError(f"{path}: cannot write ({_why(err)})") from err
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def _open_input(path: Path) -> Iterator[av.container.InputContainer]:
    try:
        container = av.open(str(path), "r", metadata_errors="replace")
    except _IO_ERRORS as err:
        raise MediaError(f"{path}: not a readable media file ({_why(err)})") from err
    try:
        # A cut-off mp4/mov still has its whole index (moov first with faststart) and would decode silently
        # short; the index pointing past the end of the file gives it away.
        size = path.stat().st_size
        for stream in container.streams:
            entries = stream.index_entries
            if len(entries) and entries[len(entries) - 1].pos + entries[len(entries) - 1].size > size:
                raise MediaError(f"{path}: file is truncated (its index points past the end)")
        yield container
    except _IO_ERRORS as err:
        raise MediaError(f"{path}: file is corrupt or truncated ({_why(err)})") from err
    finally:
        container.close()


def _check_complete(path: Path, container: av.container.InputContainer, decoded_end: float) -> None:
    """Matroska writes its duration into the header, so a cut-off file decodes to less than it promises."""
    if "matroska" in container.format.name and container.duration:
        promised = ((container.start_time or 0) + container.duration) / av.time_base
        if decoded_end < promised - 0.5:
            raise MediaError(f"{path}: file is truncated (decoded {decoded_end:.2f} s of {promised:.2f} s)")


def _audio_frame_array(frame: av.AudioFrame) -> np.ndarray:
    arr = frame.to_ndarray()
    if not frame.format.is_planar:
        arr = arr.reshape(-1, frame.layout.nb_channels).T
    if arr.dtype == np.uint8:
        return (arr.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.float32) / float(np.iinfo(arr.dtype).max + 1)
    return arr.astype(np.float32, copy=False)


class _Held:
    """What a reader keeps: each frame converted once (a frame shown several times is one array), and the
    bytes held so far against ``max_bytes``."""

    def __init__(self, path: Path, size: tuple[int, int] | None, max_bytes: int | None) -> None:
        self.path, self.size, self.max_bytes = path, size, max_bytes
        self.bytes = 0
        self._frame: av.VideoFrame | None = None
        self._image: np.ndarray | None = None

    def image(self, frame: av.VideoFrame) -> np.ndarray:
        if frame is not self._frame:
            self.check(frame.width * frame.height * 3, f"a {frame.width}x{frame.height} frame")
            image = frame.to_ndarray(format="rgb24")
            self._image = _resize_image(image, self.size) if self.size is not None else image
            self._frame = frame
            self.add(self._image.nbytes)
        return self._image

    def add(self, nbytes: int) -> None:
        self.bytes += nbytes
        self.check(0, "the sound and frames")

    def check(self, extra: int, what: str) -> None:
        if self.max_bytes is not None and self.bytes + extra > self.max_bytes:
            raise TooMuchMedia(f"{self.path}: decoding {what} would hold over {self.max_bytes / 2**20:.0f} MiB")


def _place_audio(chunks: list[np.ndarray], first_time: float | None, origin: float, rate: int) -> np.ndarray:
    """Join decoded chunks so that sample 0 sits at ``origin`` seconds.

    FFmpeg already drops encoder priming (mp4 edit lists / skip-samples side data shift the first kept frame
    to pts 0), so placing the stream by its first frame's pts handles both priming and late-starting audio.
    """
    audio = np.concatenate(chunks, axis=1)
    offset = round(((first_time if first_time is not None else origin) - origin) * rate)
    if offset > 0:
        audio = np.pad(audio, ((0, 0), (offset, 0)))
    elif offset < 0:
        audio = audio[:, -offset:]
    return audio


def _fit_length(audio: np.ndarray, length: int) -> np.ndarray:
    if audio.shape[1] >= length:
        return audio[:, :length]
    return np.pad(audio, ((0, 0), (0, length - audio.shape[1])))


def _finish_audio(audio: np.ndarray, src_rate: int, sample_rate: int | None, channels: int | None) -> np.ndarray:
    if sample_rate and sample_rate != src_rate:
        audio = resample_audio(audio, src_rate, sample_rate)
    if channels:
        audio = remix_channels(audio, channels)
    return np.ascontiguousarray(np.clip(audio, -1.0, 1.0), dtype=np.float32)


def read_video(
    path: PathLike,
    *,
    fps: float | None = None,
    size: tuple[int, int] | None = None,
    sample_rate: int | None = None,
    channels: int | None = None,
    need_audio: bool = False,
    max_seconds: float | None = None,
    max_bytes: int | None = None,
) -> Clip:
    """Decode all frames (at ``fps`` by presentation time, resized to ``size`` (H, W)) and the first audio
    stream, aligned so that audio sample 0 plays with frame 0 and trimmed or padded to the video's length.

    Frames go one at a time from the decoder to ``size``: only those the output shows are converted, and
    the source's full-size pictures are never kept. With ``channels=1`` the sound is mixed down as it is
    decoded. ``max_bytes`` bounds what the clip holds while it is made (each frame at its decoded size while
    it is converted, then the kept frames, the finished array and the sound); past it a
    :class:`TooMuchMedia` stops the decoding, whatever the container declared."""
    path = _check_input(path, VIDEO_SUFFIXES + AUDIO_SUFFIXES, "video")
    with _open_input(path) as container:
        if not container.streams.video:
            raise MediaError(f"{path}: has no video stream")
        vstream = container.streams.video[0]
        astream = container.streams.audio[0] if container.streams.audio else None
        if need_audio and astream is None:
            raise MediaError(f"{path}: has no audio stream, but audio is required")
        vstream.thread_type = "AUTO"
        src_rate = vstream.average_rate or vstream.guessed_rate
        out_fps = float(fps or src_rate or 0)
        if out_fps <= 0:
            raise MediaError(f"{path}: cannot tell the frame rate; pass fps=")
        frame_dur = 1.0 / float(src_rate) if src_rate else 1.0 / out_fps
        eps = min(1e-3, 0.1 / out_fps)
        limit = None if max_seconds is None else max(1, round(max_seconds * out_fps))

        frames: list[np.ndarray] = []
        chunks: list[np.ndarray] = []
        origin = prev = audio_start = None
        end = audio_end = 0.0
        n_audio = 0
        audio_rate = astream.sample_rate if astream is not None else 0
        held = _Held(path, size, max_bytes)
        for packet in container.demux([s for s in (vstream, astream) if s is not None]):
            for frame in packet.decode():
                if isinstance(frame, av.AudioFrame):
                    if audio_start is None:
                        audio_start = frame.time
                    chunk = _audio_frame_array(frame)
                    chunks.append(chunk.mean(0, keepdims=True) if channels == 1 and len(chunk) > 1 else chunk)
                    held.add(chunks[-1].nbytes)
                    n_audio += chunks[-1].shape[1]
                    audio_end = (audio_start or 0.0) + n_audio / audio_rate
                    continue
                t = frame.time if frame.time is not None else (origin or 0.0) + len(frames) / out_fps
                origin = t if origin is None else origin
                t -= origin
                if limit is not None and len(frames) >= limit:
                    continue
                # Output frame i shows whatever source frame is on screen at i / out_fps.
                while prev is not None and len(frames) / out_fps < t - eps and (limit is None or len(frames) < limit):
                    frames.append(held.image(prev))
                prev, end = frame, t + frame_dur
            if limit is not None and len(frames) >= limit and (astream is None or audio_end > origin + max_seconds):
                break
        if prev is None:
            raise MediaError(f"{path}: video stream has no decodable frames")
        if limit is None:
            _check_complete(path, container, max(origin + end, audio_end))
        total = round(end * out_fps)
        if limit is not None:
            total = min(total, limit)
        while len(frames) < total:
            frames.append(held.image(prev))
        held.check(len(frames) * frames[0].nbytes, f"{len(frames)} frames")  # the stacked copy
        video = np.stack(frames)
        del frames

        audio = None
        if chunks:
            placed = _place_audio(chunks, audio_start, origin, audio_rate)
            placed = _fit_length(placed, round(len(video) / out_fps * audio_rate))
            audio = _finish_audio(placed, audio_rate, sample_rate, channels)
            audio = _fit_length(audio, round(len(video) / out_fps * (sample_rate or audio_rate)))
        elif need_audio:
            raise MediaError(f"{path}: audio stream has no decodable samples")
    return Clip(video, audio, fps=out_fps, sample_rate=int(sample_rate or audio_rate or 16000))


def read_audio(
    path: PathLike, *, sample_rate: int | None = None, channels: int | None = None, max_bytes: int | None = None
) -> tuple[np.ndarray, int]:
    """Return ``(audio (C, S) float32, rate)`` from an audio file or a video file's first audio stream.

    With ``channels=1`` the sound is mixed down as it is decoded; past ``max_bytes`` of decoded samples a
    :class:`TooMuchMedia` stops the decoding."""
    path = _check_input(path, AUDIO_SUFFIXES + VIDEO_SUFFIXES, "audio")
    held = _Held(path, None, max_bytes)
    mix = (lambda c: c.mean(0, keepdims=True) if len(c) > 1 else c) if channels == 1 else (lambda c: c)
    if path.suffix.lower() in _SOUNDFILE_SUFFIXES:
        try:
            with sf.SoundFile(str(path)) as file:
                rate, have, blocks = file.samplerate, file.channels, []
                for block in file.blocks(blocksize=1 << 16, dtype="float32", always_2d=True):
                    blocks.append(mix(np.ascontiguousarray(block.T)))
                    held.add(blocks[-1].nbytes)
        except _IO_ERRORS as err:
            raise MediaError(f"{path}: not a readable audio file ({_why(err)})") from err
        if not blocks:
            blocks = [np.zeros((1 if channels == 1 else have, 0), np.float32)]
        audio = np.concatenate(blocks, axis=1)
    else:
        with _open_input(path) as container:
            if not container.streams.audio:
                raise MediaError(f"{path}: has no audio stream")
            astream = container.streams.audio[0]
            rate = astream.sample_rate
            chunks, first = [], None
            for frame in container.decode(astream):
                first = frame.time if first is None else first
                chunks.append(mix(_audio_frame_array(frame)))
                held.add(chunks[-1].nbytes)
            if not chunks:
                raise MediaError(f"{path}: audio stream has no decodable samples")
            _check_complete(path, container, (first or 0.0) + sum(c.shape[1] for c in chunks) / rate)
            # Align to the video's start when there is one, as read_video does; else to time 0.
            vstreams = container.streams.video
            origin = 0.0
            if vstreams and vstreams[0].start_time is not None:
                origin = float(vstreams[0].start_time * vstreams[0].time_base)
            audio = _place_audio(chunks, first, origin, rate)
            if astream.duration and astream.time_base:
                # Drops the encoder's end padding (AAC rounds up to whole 1024-sample frames).
                audio = audio[:, : round(float(astream.duration * astream.time_base) * rate)]
    return _finish_audio(audio, rate, sample_rate, channels), int(sample_rate or rate)


def read_image(path: PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """Return ``(H, W, 3)`` uint8 RGB, EXIF-rotated; transparency is composited onto white. With ``size``
    (H, W) it is resized as :func:`resize_frames` would, before any full-size array is made."""
    path = _check_input(path, (*IMAGE_SUFFIXES, ".gif"), "image")
    try:
        with Image.open(path) as img:
            if img.getexif().get(_ORIENTATION, 1) != 1:
                img = ImageOps.exif_transpose(img)
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(white, rgba)
                del rgba, white
            if img.mode != "RGB":  # each conversion is a full-size copy
                img = img.convert("RGB")
            if size is not None and img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8).copy()
    except _IO_ERRORS as err:
        raise MediaError(f"{path}: not a readable image ({_why(err)})") from err


def read_metadata(path: PathLike) -> dict[str, str]:
    """Container-level tags (what ``write_video(metadata=...)`` stored, plus muxer tags such as "encoder").

    Keys are lower-cased because Matroska stores tag names in upper case."""
    path = _check_input(path, VIDEO_SUFFIXES + AUDIO_SUFFIXES, "media")
    with _open_input(path) as container:
        return {str(k).lower(): str(v) for k, v in container.metadata.items()}


def _container_options(path: Path) -> dict[str, str]:
    # use_metadata_tags lets mp4/mov keep arbitrary keys; faststart puts the index first for web players.
    return {"movflags": "+faststart+use_metadata_tags"} if path.suffix.lower() in (".mp4", ".mov") else {}


def _add_aac(out: av.container.OutputContainer, path: Path, channels: int, rate: int, bitrate: int) -> av.stream.Stream:
    if channels not in _LAYOUTS:
        raise MediaError(f"{path}: can write mono or stereo audio only, got {channels} channels")
    stream = out.add_stream("aac", rate=rate, layout=_LAYOUTS[channels])
    stream.bit_rate = bitrate
    return stream


def _audio_frames(audio: np.ndarray, rate: int, start: int = 0) -> Iterator[av.AudioFrame]:
    audio = np.ascontiguousarray(np.clip(audio, -1.0, 1.0), dtype=np.float32)
    for s in range(0, audio.shape[1], _AAC_FRAME):
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(audio[:, s : s + _AAC_FRAME]), format="fltp", layout=_LAYOUTS[len(audio)]
        )
        frame.sample_rate, frame.pts, frame.time_base = rate, start + s, Fraction(1, rate)
        yield frame


def write_video(
    path: PathLike,
    clip: Clip,
    *,
    crf: int = 18,
    audio_bitrate: int = 128_000,
    metadata: dict[str, str] | None = None,
    preset: str = "medium",
) -> Path:
    """Write H.264 (yuv420p) + AAC to .mp4/.mov/.mkv; ``metadata`` goes into the container tags."""
    path = _check_output(path, _VIDEO_WRITE_SUFFIXES, "video")
    if not isinstance(clip, Clip) or clip.video is None:
        raise MediaError(f"{path}: write_video needs a Clip with video (use write_audio for audio only)")
    _check_video_array(clip.video)
    n, h, w, _ = clip.video.shape
    if n == 0:
        raise MediaError(f"{path}: clip has no frames")
    if h % 2 or w % 2:
        raise MediaError(f"{path}: H.264 needs even width and height, got {w}x{h}")
    rate = Fraction(clip.fps).limit_denominator(1001)
    audio, sr = clip.audio, clip.sample_rate
    with _atomic_output(path) as tmp, av.open(str(tmp), "w", options=_container_options(path)) as out:
        out.metadata.update({str(k): str(v) for k, v in (metadata or {}).items()})
        vstream = out.add_stream("libx264", rate=rate, options={"crf": str(crf), "preset": preset})
        vstream.width, vstream.height, vstream.pix_fmt = w, h, "yuv420p"
        astream = None if audio is None else _add_aac(out, path, audio.shape[0], sr, audio_bitrate)
        aframes = iter(()) if audio is None else _audio_frames(audio, sr)
        pending = next(aframes, None)
        for i, image in enumerate(clip.video):
            # Feed audio up to this frame's time so the muxer gets the two streams interleaved.
            while pending is not None and pending.pts < (i + 1) * sr / rate:
                out.mux(astream.encode(pending))
                pending = next(aframes, None)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i, 1 / rate
            out.mux(vstream.encode(frame))
        while pending is not None:
            out.mux(astream.encode(pending))
            pending = next(aframes, None)
        out.mux(vstream.encode(None))
        if astream is not None:
            out.mux(astream.encode(None))
    log.debug("wrote %s: %d frames %dx%d @ %s fps, audio=%s", path, n, w, h, rate, audio is not None)
    return path


class FragmentWriter:
    """H.264 + AAC in a fragmented mp4 written as it is made: a header first, then a fragment per
    frame, each flushed when it is written, so a player (a browser's MediaSource, `ffplay -`) plays
    the part written so far while the rest is still being made. `target` is a file path, or a binary
    stream such as standard output (a fragmented mp4 never seeks back). Metadata cannot be added
    afterwards to a stream; `retag` adds it to a finished file."""

    def __init__(self, target: PathLike | BinaryIO, width: int, height: int, fps: float, sample_rate: int | None,
                 *, crf: int = 18, audio_bitrate: int = 128_000) -> None:  # fmt: skip
        if height % 2 or width % 2:
            raise MediaError(f"H.264 needs even width and height, got {width}x{height}")
        options = {"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}
        self.path = None if hasattr(target, "write") else _check_output(target, (".mp4",), "video")
        self._out = av.open(target if self.path is None else str(self.path), "w", format="mp4", options=options)
        self.rate = Fraction(fps).limit_denominator(1001)
        # zerolatency: no frames held back for look-ahead, so each written frame leaves at once
        self._video = self._out.add_stream("libx264", rate=self.rate, options={
            "crf": str(crf), "preset": "veryfast", "tune": "zerolatency", "g": "1"})  # fmt: skip
        self._video.width, self._video.height, self._video.pix_fmt = width, height, "yuv420p"
        self._audio = None if sample_rate is None else _add_aac(self._out, Path("stream.mp4"), 1, sample_rate,
                                                                 audio_bitrate)  # fmt: skip
        self.sample_rate = sample_rate
        self.frames = self.samples = 0

    def write(self, clip: Clip) -> None:
        """Append a clip's frames and (mono) sound; the two streams interleave by time."""
        _check_video_array(clip.video)
        audio = None
        if self._audio is not None:
            if clip.audio is None:
                raise MediaError("this stream has sound: every part written needs its audio")
            audio = np.asarray(clip.audio, np.float32).mean(0, keepdims=True)
        aframes = iter(()) if audio is None else _audio_frames(audio, self.sample_rate, self.samples)
        pending = next(aframes, None)
        for image in clip.video:
            while pending is not None and pending.pts < (self.frames + 1) * self.sample_rate / self.rate:
                self._out.mux(self._audio.encode(pending))
                pending = next(aframes, None)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts, frame.time_base = self.frames, 1 / self.rate
            self._out.mux(self._video.encode(frame))
            self.frames += 1
        while pending is not None:
            self._out.mux(self._audio.encode(pending))
            pending = next(aframes, None)
        if audio is not None:
            self.samples += audio.shape[1]

    def close(self) -> None:
        """Flush the encoders and end the file."""
        if self._out is None:
            return
        try:
            self._out.mux(self._video.encode(None))
            if self._audio is not None:
                self._out.mux(self._audio.encode(None))
        finally:
            self._out.close()
            self._out = None

    def __enter__(self) -> FragmentWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def retag(path: PathLike, tags: dict[str, str]) -> None:
    """Copy every packet of a written file (no re-encoding) into a new one with `tags` added to its
    metadata, in place (an mp4 comes out with its index first, ready to stream)."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tagging{path.suffix}")
    options = {"movflags": "+faststart+use_metadata_tags"} if path.suffix.lower() in (".mp4", ".mov", ".m4v") else {}
    skip = {"major_brand", "minor_version", "compatible_brands", "encoder"}
    try:
        with av.open(str(path)) as src, av.open(str(tmp), "w", options=options) as out:
            out.metadata.update({k: v for k, v in src.metadata.items() if k not in skip} | tags)
            streams = {s.index: out.add_stream_from_template(s) for s in src.streams}
            for packet in src.demux():
                if packet.dts is None:
                    continue
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def mux(
    video_path: PathLike,
    audio: np.ndarray | PathLike,
    out_path: PathLike,
    *,
    sample_rate: int | None = None,
    audio_bitrate: int = 128_000,
) -> Path:
    """Copy ``video_path``'s video packets (no re-encode) beside ``audio`` encoded as AAC, replacing any
    existing audio. ``audio`` is an array (needs ``sample_rate``) or a file; it starts with the video and is
    cut at the video's end."""
    video_path = _check_input(video_path, VIDEO_SUFFIXES, "video")
    out_path = _check_output(out_path, _VIDEO_WRITE_SUFFIXES, "video")
    if isinstance(audio, np.ndarray):
        if not sample_rate:
            raise MediaError(f"{out_path}: mux needs sample_rate= when audio is an array")
        _check_audio_array(audio)
        rate = sample_rate
    else:
        audio, rate = read_audio(audio, sample_rate=sample_rate)
    with _open_input(video_path) as src:
        if not src.streams.video:
            raise MediaError(f"{video_path}: has no video stream")
        vin = src.streams.video[0]
        start = float(vin.start_time * vin.time_base) if vin.start_time is not None else 0.0
        duration = vin.duration * vin.time_base if vin.duration else (src.duration or 0) / av.time_base
        if duration:
            audio = audio[:, : round(float(duration) * rate)]
        with (
            _atomic_output(out_path) as tmp,
            av.open(str(tmp), "w", options=_container_options(out_path)) as out,
        ):
            vout = out.add_stream_from_template(vin)
            astream = _add_aac(out, out_path, audio.shape[0], rate, audio_bitrate)
            apackets = [p for f in _audio_frames(audio, rate, round(start * rate)) for p in astream.encode(f)]
            apackets += astream.encode(None)
            k = 0
            for packet in src.demux(vin):
                if packet.dts is None:
                    continue
                # Interleave by decode time so players need not buffer one stream far ahead.
                now = packet.dts * vin.time_base
                while k < len(apackets) and apackets[k].dts * apackets[k].time_base <= now:
                    out.mux(apackets[k])
                    k += 1
                packet.stream = vout
                out.mux(packet)
            out.mux(apackets[k:])
    return out_path


def write_audio(path: PathLike, audio: np.ndarray, sample_rate: int) -> Path:
    """Write ``(C, S)`` float32 audio as 16-bit wav/flac (or ogg vorbis) with soundfile."""
    path = _check_output(path, _AUDIO_WRITE_SUFFIXES, "audio")
    _check_audio_array(audio)
    subtype = "VORBIS" if path.suffix.lower() == ".ogg" else "PCM_16"
    with _atomic_output(path) as tmp:
        sf.write(
            str(tmp),
            np.clip(audio, -1.0, 1.0).T,
            int(sample_rate),
            subtype=subtype,
            format=path.suffix[1:].upper(),
        )
    return path


def write_image(path: PathLike, image: np.ndarray) -> Path:
    """Write ``(H, W, 3)`` uint8 RGB with pillow (jpg at quality 95)."""
    path = _check_output(path, IMAGE_SUFFIXES, "image")
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be a uint8 array shaped (H, W, 3), got {_describe(image)}")
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower(), path.suffix[1:].upper())
    with _atomic_output(path) as tmp:
        Image.fromarray(image, "RGB").save(tmp, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return path


def resample_frames(frames: np.ndarray, src_fps: float, dst_fps: float) -> np.ndarray:
    """Output frame i is the source frame on screen at time i / dst_fps; the duration is kept."""
    n = round(len(frames) * dst_fps / src_fps)
    idx = np.floor(np.arange(n) * (src_fps / dst_fps) + 1e-6).astype(np.int64)
    return frames[np.clip(idx, 0, len(frames) - 1)]


def resample_audio(audio: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Polyphase resampling along the last axis (zero-phase, so timing is kept)."""
    if src_rate == dst_rate:
        return audio
    g = gcd(int(src_rate), int(dst_rate))
    from scipy.signal import resample_poly  # 0.6-0.8 s to import: only where a rate is changed

    return resample_poly(audio, dst_rate // g, src_rate // g, axis=-1).astype(np.float32)


def _resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    # Pillow's bilinear filter widens its support when shrinking, so downscaling is antialiased.
    return np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR))


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``(T, H, W, 3)`` uint8 frames to ``size`` = (H, W)."""
    return np.stack([_resize_image(f, size) for f in frames]) if len(frames) else frames


def remix_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    """Mono -> N by copying, N -> mono by averaging, otherwise keep the first ``channels`` channels."""
    have = audio.shape[0]
    if have == channels:
        return audio
    if channels == 1:
        return audio.mean(axis=0, keepdims=True, dtype=np.float32)
    if have == 1:
        return np.repeat(audio, channels, axis=0)
    if have > channels:
        return audio[:channels]
    raise ValueError(f"cannot remix {have} audio channels to {channels}")
