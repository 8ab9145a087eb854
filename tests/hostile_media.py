"""Small files that decode to a lot: the inputs the server's memory bounds are tested and measured with,
and the /proc readings they are measured by."""

from __future__ import annotations

import io
import re
import struct
import zlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile as sf


def _h264(frames: list[tuple[int, int, int]], fps: int) -> bytes:
    """Raw H.264 (Annex B): `count` solid frames at each (width, height, count), one stream after the other."""
    out_bytes = b""
    for width, height, count in frames:
        buffer = io.BytesIO()
        with av.open(buffer, "w", format="h264") as out:
            stream = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "51"})
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), 90, np.uint8), format="rgb24")
            for i in range(count):
                frame.pts, frame.time_base = i, Fraction(1, fps)
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
        out_bytes += buffer.getvalue()
    return out_bytes


def _to_container(raw: bytes, path: Path, fps: int, declared: tuple[int, int] | None = None) -> Path:
    """Remux raw H.264 into `path` (mp4 or mkv), its header naming `declared` (width, height) when given."""
    with av.open(io.BytesIO(raw), "r", format="h264", options={"framerate": str(fps)}) as src:
        header = src.streams.video[0].codec_context
        width, height = declared or (header.width, header.height)
        extradata = header.extradata
    source = av.open(io.BytesIO(raw), "r", format="h264", options={"framerate": str(fps)})
    with source as src, av.open(str(path), "w") as out:
        stream = out.add_stream("h264", rate=fps)
        stream.codec_context.width, stream.codec_context.height = width, height
        stream.codec_context.pix_fmt, stream.codec_context.extradata = "yuv420p", extradata
        for i, packet in enumerate(p for p in src.demux(src.streams.video[0]) if p.size):
            packet.pts = packet.dts = i
            packet.time_base, packet.duration, packet.stream = Fraction(1, fps), 1, stream
            out.mux(packet)
    return path


def solid_video(path: Path, width: int = 1280, height: int = 720, fps: int = 60, seconds: float = 10.0) -> Path:
    """One colour for `seconds`: a few tens of kilobytes of H.264 that decode to gigabytes at full size."""
    return _to_container(_h264([(width, height, round(fps * seconds))], fps), path, fps)


def lying_video(path: Path, fps: int = 60) -> Path:
    """An MKV whose header (and first 6 s of frames) say 64x64, then 8 s of 1280x720 frames: the header
    prices it at a few megabytes, decoding it whole takes over a gigabyte."""
    return _to_container(_h264([(64, 64, 6 * fps), (1280, 720, 8 * fps)], fps), path, fps, declared=(64, 64))


def solid_png(path: Path, side: int) -> Path:
    """A `side` x `side` grey PNG written a row at a time (a 16000-pixel one is ~1 MB of file)."""
    compressor, row = zlib.compressobj(1), b"\x00" + b"\x5a" * (3 * side)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def quiet_audio(path: Path, seconds: float, rate: int = 16000, channels: int = 1) -> Path:
    """A quiet tone (FLAC packs it into little; WAV keeps every sample)."""
    with sf.SoundFile(str(path), "w", samplerate=rate, channels=channels) as out:
        block = rate  # a second at a time
        t = np.arange(block) / rate
        tone = (0.01 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
        for _ in range(round(seconds)):
            out.write(np.repeat(tone[:, None], channels, axis=1))
    return path


def _status(pid: int | str, field: str) -> int:
    """A /proc/<pid>/status memory line, in bytes."""
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)[1]) * 1024


def reset_peak(pid: int | str = "self") -> int:
    """Start measuring `pid`'s peak resident memory afresh; returns its resident memory now (idle)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return _status(pid, "VmRSS")


def peak(pid: int | str = "self") -> int:
    """`pid`'s peak resident memory since `reset_peak`."""
    return _status(pid, "VmHWM")
