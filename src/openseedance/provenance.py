"""Provenance: every generated clip is marked, signed and verifiable; real faces are not taken as references.

    frames = embed_video(frames, payload)          # invisible, in the luma of every frame
    audio = embed_audio(audio, 16000, payload)     # invisible, in 300-3800 Hz
    sign_file("clip.mp4", claims)                  # C2PA manifest (or signed metadata)
    report = verify("clip.mp4")                    # marks, payload, confidence, manifest

The payload is 32 bits: a 16-bit hash of the model id and a 16-bit hash of the job id, protected by a
CRC-8 and a rate-1/2 convolutional code (constraint length 7, soft Viterbi decoding).

Video mark. A keyed pattern, periodic with a 64-pixel tile and limited to 2-10 cycles per tile (so it
survives H.264 and halving the size), is added to the luma, along the RGB direction that changes the
luma most for a given RGB error (mostly green: 16% more luma than grey at the same PSNR). Its sign
flips every `SEGMENT` frames (a faster flip is lost by H.264, a slower one gives fewer flips to
read). The pattern is one sync vector (60% of the energy) plus one vector per coded bit; the
coefficients are set knowing the host ("improved spread spectrum"), so the payload reads back free
of the host's own correlation as the detector sees it. The detector folds frames onto the tile and
reads the mark where it changes: the frame-to-frame difference at each flip, which cancels
everything static and most of what moves. Each flip's difference is weighted by the inverse of its
energy in the band, so a cut or a burst of motion between two frames counts for little instead of
drowning the other flips. It tries each phase of the flips and scales 1 and 2, and finds the sync
peak over all circular shifts (so crops are found) by phase-only correlation. Its z-score is taken
against the spread over all shifts, which is what an unmarked clip shows, and the p-value is
Bonferroni-corrected for every shift, phase and scale tried.

Audio mark. The same construction in one dimension: a keyed pattern with a 2048-sample period at
16 kHz in 300-3800 Hz (it survives resampling to 8 kHz and lossy codecs), scaled to follow the
sound's loudness about 26 dB below it. The detector whitens each 2048-sample frame, sums them, and
finds the sync peak over all 2048 shifts (so trims and codec delays are found).

The key is public: the marks tell honest tools that a clip is generated; they are not a secret that
stops a determined forger from removing them.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import itertools
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from math import erfc, sqrt
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import uniform_filter1d

from openseedance import __version__, media
from openseedance.media import Clip

log = logging.getLogger(__name__)

KEY = "openseedance/mark/v1"  # seeds every pattern; changing it makes old marks unreadable
ALPHA = 1e-4  # a mark is reported when its corrected p-value is at most this (false-positive rate)

# ---------------------------------------------------------------- payload and error correction

PAYLOAD_BITS = 32
_CRC_BITS = 8
_INFO_BITS = PAYLOAD_BITS + _CRC_BITS
_K = 7  # constraint length of the convolutional code
_GENERATORS = (0o171, 0o133)
CODE_BITS = len(_GENERATORS) * (_INFO_BITS + _K - 1)  # 92


def hash16(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:2], "big")


@dataclass(frozen=True)
class Payload:
    """What a mark carries: 16-bit hashes of the model id and of the job id."""

    model: int
    job: int

    @classmethod
    def make(cls, model_id: str, job_id: str) -> Payload:
        return cls(hash16(model_id), hash16(job_id))

    @classmethod
    def from_hex(cls, text: str) -> Payload:
        value = int(text, 16)
        return cls(value >> 16, value & 0xFFFF)

    @property
    def hex(self) -> str:
        return f"{self.model:04x}{self.job:04x}"

    def bits(self) -> np.ndarray:
        value = (self.model << 16) | self.job
        return np.array([(value >> (PAYLOAD_BITS - 1 - i)) & 1 for i in range(PAYLOAD_BITS)], np.int8)

    @classmethod
    def from_bits(cls, bits: np.ndarray) -> Payload:
        value = int("".join(str(int(b)) for b in bits), 2)
        return cls(value >> 16, value & 0xFFFF)


def crc8(bits: np.ndarray) -> np.ndarray:
    reg = 0
    for b in bits:
        reg ^= int(b) << 7
        reg = ((reg << 1) ^ 0x07) & 0xFF if reg & 0x80 else (reg << 1) & 0xFF
    return np.array([(reg >> (7 - i)) & 1 for i in range(_CRC_BITS)], np.int8)


def _parity(x: int) -> int:
    return bin(x).count("1") & 1


def encode_payload(payload: Payload) -> np.ndarray:
    """32 payload bits + CRC-8, convolutionally coded: (CODE_BITS,) of 0/1."""
    info = np.concatenate([payload.bits(), crc8(payload.bits())])
    reg, out = 0, []
    for b in [*info.tolist(), *([0] * (_K - 1))]:
        reg = ((reg << 1) | int(b)) & ((1 << _K) - 1)
        out += [_parity(reg & g) for g in _GENERATORS]
    return np.array(out, np.int8)


@functools.cache
def _trellis() -> tuple[np.ndarray, np.ndarray]:
    """For each new state s (the last K-1 inputs) and each dropped oldest bit: the previous state and
    the coded bits of that transition as +-1."""
    states = 1 << (_K - 1)
    prev = np.zeros((states, 2), np.int64)
    signs = np.zeros((states, 2, len(_GENERATORS)))
    for s in range(states):
        for top in range(2):
            prev[s, top] = (s >> 1) | (top << (_K - 2))
            reg = (top << (_K - 1)) | s
            signs[s, top] = [2 * _parity(reg & g) - 1 for g in _GENERATORS]
    return prev, signs


def decode_payload(soft: np.ndarray) -> Payload | None:
    """Soft Viterbi decoding (positive = 1); None when the CRC does not match."""
    prev, signs = _trellis()
    states = len(prev)
    y = np.asarray(soft, np.float64).reshape(-1, len(_GENERATORS))
    metric = np.full(states, -np.inf)
    metric[0] = 0.0
    back = np.zeros((len(y), states), np.int8)
    for i, obs in enumerate(y):
        cand = metric[prev] + signs @ obs
        back[i] = cand.argmax(1)
        metric = cand[np.arange(states), back[i]]
    s, bits = 0, []
    for i in range(len(y) - 1, -1, -1):
        bits.append(s & 1)
        s = prev[s, back[i, s]]
    info = np.array(bits[::-1][:_INFO_BITS], np.int8)
    if not np.array_equal(crc8(info[:PAYLOAD_BITS]), info[PAYLOAD_BITS:]):
        return None
    return Payload.from_bits(info[:PAYLOAD_BITS])


def _seed(tag: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{KEY}/{tag}".encode()).digest()[:8], "big")


def _gauss_tail(z: float) -> float:
    return 0.5 * erfc(z / sqrt(2.0))


@dataclass
class MarkResult:
    """What one detector found. `score` is the sync peak's z-score; `p_value` is the chance that an
    unmarked clip scores as high anywhere the detector looked; `confidence` is 1 - p_value."""

    found: bool
    score: float
    p_value: float
    payload: str | None = None  # 8 hex digits, when the decoded payload passes its CRC
    where: dict[str, Any] = field(default_factory=dict)

    @property
    def confidence(self) -> float:
        return 1.0 - self.p_value

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "confidence": self.confidence}


def _result(z: float, tries: float, soft: np.ndarray | None, where: dict[str, Any]) -> MarkResult:
    p = min(1.0, tries * _gauss_tail(z))
    found = p <= ALPHA
    decoded = decode_payload(soft) if found and soft is not None else None
    return MarkResult(found, round(float(z), 2), p, decoded.hex if decoded else None, where)


def _coefficients(target: np.ndarray, host: np.ndarray, budget: float) -> np.ndarray:
    """Coefficients that move the host's projections to at least `target` (in sign and size) at the
    largest overall scale whose energy fits `budget`; projections already past the target cost nothing."""
    sign = np.sign(target)

    def need(scale: float) -> np.ndarray:
        t = np.abs(target) * scale
        return sign * np.clip(t - sign * host, 0.0, 3.0 * t)

    lo, hi = 0.0, 1.0
    while (need(hi) ** 2).sum() < budget and hi < 1e6:
        lo, hi = hi, 2 * hi
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if (need(mid) ** 2).sum() < budget else (lo, mid)
    return need(lo)


def _shares(sync_share: float) -> np.ndarray:
    """Relative target amplitude of the sync vector and of each coded bit (unit total energy)."""
    return np.array([sqrt(sync_share), *([sqrt((1 - sync_share) / CODE_BITS)] * CODE_BITS)])


# ---------------------------------------------------------------- video mark

TILE = 64  # pixels; the pattern repeats every TILE pixels in both directions
VIDEO_BAND = (2.0, 10.0)  # cycles per tile
SEGMENT = 4  # frames between sign flips: the sign is a square wave of period 2 * SEGMENT frames
VIDEO_PSNR = 40.5  # dB, marked against unmarked
SCALES = (1.0, 2.0)  # the detector also looks at frames scaled up by 2 (a clip resized to half)
_VIDEO_SYNC_SHARE = 0.6  # the sync peak decides detection; the host-informed payload needs less


@functools.cache
def _video_basis() -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal keyed patterns (1 + CODE_BITS, TILE, TILE) and the band mask (TILE, TILE)."""
    rng = np.random.default_rng(_seed("video"))
    k = np.fft.fftfreq(TILE) * TILE
    radius = np.hypot(k[:, None], k[None, :])
    mask = (radius >= VIDEO_BAND[0]) & (radius <= VIDEO_BAND[1])
    noise = rng.standard_normal((1 + CODE_BITS, TILE, TILE))
    band = np.real(np.fft.ifft2(np.fft.fft2(noise) * mask)).reshape(1 + CODE_BITS, -1)
    q, _ = np.linalg.qr(band.T)
    return q.T.reshape(-1, TILE, TILE), mask


def chips(frames: int, offset: int = 0) -> np.ndarray:
    """The mark's sign on each of `frames` frames, starting `offset` frames into the square wave."""
    return np.where((np.arange(frames) + offset) // SEGMENT % 2 == 0, 1.0, -1.0)


_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # BT.601, what H.264's RGB -> YUV conversion uses
# The RGB change per unit of luma that costs the least RGB error: (0.67, 1.31, 0.26). Its mean square
# over the three channels is 0.75 per unit of luma squared, against 1 for grey.
_MARK_COLOUR = _LUMA / float(_LUMA @ _LUMA)
_COLOUR_COST = float(_MARK_COLOUR @ _MARK_COLOUR) / 3


def luma(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, H, W) float32, BT.601 weights."""
    return frames.astype(np.float32) @ _LUMA


def fold(images: np.ndarray) -> np.ndarray:
    """(..., H, W) -> (..., TILE, TILE): the average of every tile-sized block at each tile position."""
    h, w = images.shape[-2:]
    total = np.zeros((*images.shape[:-2], TILE, TILE), np.float64)
    count = np.zeros((TILE, TILE))
    for y in range(0, h, TILE):
        for x in range(0, w, TILE):
            block = images[..., y : y + TILE, x : x + TILE]
            total[..., : block.shape[-2], : block.shape[-1]] += block
            count[: block.shape[-2], : block.shape[-1]] += 1
    return total / np.maximum(count, 1)


_FLIP_FLOOR = 0.1  # of the median flip's energy, added to each before weighting: no flip counts for too much


def _flip_weights(t: int, energy: np.ndarray) -> np.ndarray:
    """(2 * SEGMENT, t - 1): for each phase of the flips, the weight of each frame-to-frame difference:
    zero where the sign does not change, else the new sign over that difference's energy."""
    rows = []
    for offset in range(2 * SEGMENT):
        step = np.diff(chips(t, offset)) / 2  # +-1 at a flip, the sign it flips to
        flips = step != 0
        floor = _FLIP_FLOOR * float(np.median(energy[flips])) if flips.any() else 0.0
        rows.append(step / (energy + floor + 1e-9))
    return np.stack(rows)


def _host_tile(folded: np.ndarray) -> np.ndarray:
    """(T, TILE, TILE) folded luma -> what the detector will read for an unmarked host at the first
    phase, in units of the mark's amplitude."""
    _, mask = _video_basis()
    changes = np.diff(folded, axis=0)
    weights = _flip_weights(len(folded), (np.abs(np.fft.fft2(changes)) ** 2 * mask).sum((1, 2)))[0]
    if not weights.any():  # a single segment: no sign change to detect, the mark is still carried
        return folded.mean(0)
    return np.tensordot(weights, changes, 1) / (2 * np.abs(weights).sum())  # a flip changes the mark by 2


def embed_video(frames: np.ndarray, payload: Payload, psnr: float = VIDEO_PSNR) -> np.ndarray:
    """Frames (T, H, W, 3) uint8 carrying `payload`, about `psnr` dB from the originals."""
    basis, _ = _video_basis()
    t, h, w, _ = frames.shape
    sign = chips(t)
    projections = basis.reshape(len(basis), -1) @ _host_tile(fold(luma(frames))).ravel()
    target = _shares(_VIDEO_SYNC_SHARE) * np.concatenate([[1.0], 2.0 * encode_payload(payload) - 1])
    budget = 255.0**2 * 10 ** (-psnr / 10) * TILE * TILE / _COLOUR_COST  # of luma
    tile = np.tensordot(_coefficients(target, projections, budget), basis, 1)
    pattern = np.tile(tile, (-(-h // TILE), -(-w // TILE)))[:h, :w].astype(np.float32)
    marked = frames.astype(np.float32) + (sign[:, None, None] * pattern)[..., None] * _MARK_COLOUR
    return np.clip(np.round(marked), 0, 255).astype(np.uint8)


def _scaled(y: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return y
    import cv2

    t, h, w = y.shape
    size = (round(w * scale), round(h * scale))
    out = [cv2.resize(np.ascontiguousarray(y[i : i + 256].transpose(1, 2, 0)), size, interpolation=cv2.INTER_LINEAR)
           for i in range(0, t, 256)]  # fmt: skip
    return np.concatenate([o.reshape(size[1], size[0], -1) for o in out], axis=2).transpose(2, 0, 1)


def _sync_peaks(spectra: np.ndarray, sync: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Phase-only correlation of each row of `spectra` (N, ...) with the sync pattern's spectrum over
    every circular shift: (z-score of each row's peak, flat index of the peak)."""
    white = np.where(mask, spectra / np.maximum(np.abs(spectra), 1e-9), 0)
    axes = tuple(range(1, spectra.ndim))
    corr = np.real(np.fft.ifftn(white * np.conj(sync), axes=axes)).reshape(len(spectra), -1)
    z = (corr - corr.mean(1, keepdims=True)) / np.maximum(corr.std(1, keepdims=True), 1e-12)
    peak = z.argmax(1)
    return z[np.arange(len(z)), peak], peak


def detect_video(frames: np.ndarray) -> MarkResult:
    """Look for the video mark in frames (T, H, W, 3) uint8, whatever was done to them since."""
    basis, mask = _video_basis()
    sync = np.fft.fft2(basis[0])
    y = luma(frames)
    t = len(y)
    offsets = np.arange(2 * SEGMENT)
    usable = np.array([np.diff(chips(t, int(o))).any() for o in offsets]) if t >= 2 else np.zeros(len(offsets), bool)
    if not usable.any():
        return MarkResult(False, 0.0, 1.0, where={"reason": "too few frames"})
    best: tuple[float, float, int, int, np.ndarray] | None = None
    at_start = 0.0
    for scale in SCALES:
        changes = np.diff(np.fft.fft2(fold(_scaled(y, scale))), axis=0)  # (T - 1, TILE, TILE)
        energy = (np.abs(changes) ** 2 * mask).sum((1, 2))
        combined = np.tensordot(_flip_weights(t, energy)[usable], changes, 1)  # (offsets, TILE, TILE)
        z, peak = _sync_peaks(combined, sync, mask)
        at_start = max(at_start, float(z[0]) if usable[0] else 0.0)
        i = int(z.argmax())
        if best is None or z[i] > best[0]:
            best = (float(z[i]), scale, int(offsets[usable][i]), int(peak[i]), combined[i])
    z, scale, offset, peak, spectrum = best
    # Two looks, each held to ALPHA / 2: the sequence starting with the file (untrimmed or trimmed
    # from the start), and every offset.
    shifts = TILE * TILE * len(SCALES)
    p_start, p_any = shifts * _gauss_tail(at_start), shifts * len(offsets) * _gauss_tail(z)
    tries, score = (2 * shifts, at_start) if p_start < p_any else (2 * shifts * len(offsets), z)
    dy, dx = divmod(peak, TILE)
    tile = np.roll(np.real(np.fft.ifft2(spectrum)), (-dy, -dx), axis=(0, 1))
    soft = basis[1:].reshape(CODE_BITS, -1) @ tile.ravel()
    return _result(score, tries, soft, {"scale": scale, "frame_offset": offset, "shift": [dy, dx]})


# ---------------------------------------------------------------- audio mark

AUDIO_RATE = 16000  # the audio mark lives at this rate; other rates are resampled
PERIOD = 2048  # samples
AUDIO_BAND = (300.0, 3800.0)  # Hz
AUDIO_SNR = 26.0  # dB below the sound's short-term loudness
_FLOOR = 1e-3  # mark amplitude in silence (-60 dBFS)
_ENVELOPE = 0.05  # seconds of loudness smoothing
_WHITEN_BINS = 9
_SYNC_SHARE = 0.5


@functools.cache
def _audio_basis() -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal keyed patterns (1 + CODE_BITS, PERIOD) and the band mask over rfft bins."""
    rng = np.random.default_rng(_seed("audio"))
    hz = np.fft.rfftfreq(PERIOD, 1 / AUDIO_RATE)
    mask = (hz >= AUDIO_BAND[0]) & (hz <= AUDIO_BAND[1])
    shape = (1 + CODE_BITS, len(hz))
    spectra = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) * mask
    q, _ = np.linalg.qr(np.fft.irfft(spectra, n=PERIOD, axis=1).T)
    return q.T, mask


def _mono(audio: np.ndarray) -> np.ndarray:
    return np.asarray(audio, np.float64).mean(0)


def embed_audio(audio: np.ndarray, sample_rate: int, payload: Payload, snr: float = AUDIO_SNR) -> np.ndarray:
    """Audio (C, S) float32 carrying `payload` about `snr` dB below its own short-term loudness."""
    basis, _ = _audio_basis()
    target = _shares(_SYNC_SHARE) * np.concatenate([[1.0], 2.0 * encode_payload(payload) - 1])
    period = (target @ basis) * sqrt(PERIOD)  # unit RMS
    samples = audio.shape[1]
    native = -(-samples * AUDIO_RATE // sample_rate) + 1
    mark = np.tile(period, -(-native // PERIOD))[:native]
    if sample_rate != AUDIO_RATE:
        mark = media.resample_audio(mark[None], AUDIO_RATE, sample_rate)[0]
    mark = np.pad(mark, (0, max(0, samples - len(mark))))[:samples]
    width = max(1, round(_ENVELOPE * sample_rate))
    loudness = np.sqrt(uniform_filter1d(_mono(audio) ** 2, size=width, mode="nearest"))
    gain = 10 ** (-snr / 20) * loudness + _FLOOR
    return np.clip(audio + (gain * mark)[None], -1.0, 1.0).astype(np.float32)


def detect_audio(audio: np.ndarray, sample_rate: int) -> MarkResult:
    """Look for the audio mark in audio (C, S) float32 at `sample_rate`."""
    basis, mask = _audio_basis()
    x = _mono(audio)
    if sample_rate != AUDIO_RATE:
        x = media.resample_audio(x[None], sample_rate, AUDIO_RATE)[0]
    frames = len(x) // PERIOD
    if frames == 0:
        return MarkResult(False, 0.0, 1.0, where={"reason": "shorter than one period"})
    spectra = np.fft.rfft(x[: frames * PERIOD].reshape(frames, PERIOD), axis=1)
    envelope = uniform_filter1d(np.abs(spectra), size=_WHITEN_BINS, axis=1) + 1e-9
    summed = np.where(mask, spectra / envelope, 0).sum(0)
    sync = np.fft.rfft(basis[0])
    corr = np.fft.irfft(summed * np.conj(sync), n=PERIOD)
    z = (corr - corr.mean()) / max(float(corr.std()), 1e-12)
    shift = int(z.argmax())
    soft = basis[1:] @ np.roll(np.fft.irfft(summed, n=PERIOD), -shift)
    return _result(float(z[shift]), PERIOD, soft, {"shift": shift, "periods": frames})


def mark_clip(clip: Clip, payload: Payload) -> Clip:
    """The clip with the invisible video and audio marks."""
    video = None if clip.video is None else embed_video(clip.video, payload)
    audio = None if clip.audio is None else embed_audio(clip.audio, clip.sample_rate, payload)
    return Clip(video=video, audio=audio, fps=clip.fps, sample_rate=clip.sample_rate)


# ---------------------------------------------------------------- visible mark


def visible_mark(frames: np.ndarray, text: str | None = None) -> np.ndarray:
    """Frames with a small label ("AI", or "AI generated" when there is room) in the bottom-right corner."""
    from PIL import Image, ImageDraw, ImageFont

    _, h, w, _ = frames.shape
    text = text or ("AI generated" if w >= 160 else "AI")
    size = max(8, round(min(h, w) * 0.13))
    font = ImageFont.load_default(size=size)
    box = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
    pad = max(1, size // 5)
    bw, bh = box[2] - box[0] + 2 * pad, box[3] - box[1] + 2 * pad
    x0, y0 = max(0, w - bw - pad), max(0, h - bh - pad)
    overlay = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    draw.rectangle((x0, y0, x0 + bw - 1, y0 + bh - 1), fill=(0, 0, 0, 150))
    draw.text((x0 + pad - box[0], y0 + pad - box[1]), text, font=font, fill=(255, 255, 255, 255))
    layer = np.asarray(overlay, np.float32)
    alpha = layer[..., 3:] / 255.0
    out = frames.astype(np.float32) * (1 - alpha) + layer[..., :3] * alpha
    return np.round(out).astype(np.uint8)


# ---------------------------------------------------------------- face guard


class FaceError(ValueError):
    """A reference shows a real human face and faces are not allowed."""


_SKIN_SHARE = 0.5  # of the face box's pixels in the skin-tone range
_SKIN_SPREAD = 40.0  # grey levels between the 10th and 90th percentile of those pixels' brightness


@functools.cache
def _cascades() -> tuple[Any, Any]:
    try:
        import cv2
    except ImportError:  # pragma: no cover - a declared dependency
        raise RuntimeError(
            "the face check needs opencv-python-headless<5 (pip install 'opencv-python-headless<5')"
        ) from None
    folder = Path(cv2.data.haarcascades)
    cascades = tuple(
        cv2.CascadeClassifier(str(folder / f"haarcascade_{n}.xml")) for n in ("frontalface_default", "frontalface_alt2")
    )
    if any(c.empty() for c in cascades):
        raise RuntimeError(f"OpenCV's face cascades are missing from {folder} (opencv-python-headless<5 ships them)")
    return cascades


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def find_faces(image: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Boxes (x, y, w, h) of real human faces in an (H, W, 3) uint8 image.

    A face must be found by two of OpenCV's bundled Haar cascades, and the box must look like a
    photograph of skin: mostly skin tones with natural shading. Drawn faces, such as the Stage's
    characters, have flat colours and fail the second test."""
    import cv2

    scale = max(1.0, 256 / min(image.shape[:2]))
    if scale > 1:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    side = max(24, int(0.08 * min(grey.shape)))
    found = [c.detectMultiScale(cv2.equalizeHist(grey), 1.1, 5, minSize=(side, side)) for c in _cascades()]
    ycc = cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb).astype(np.int16)
    skin = (ycc[..., 1] >= 135) & (ycc[..., 1] <= 173) & (ycc[..., 2] >= 80) & (ycc[..., 2] <= 125)
    faces = []
    for box in found[0]:
        if not any(_overlap(box, other) > 0.3 for other in found[1]):
            continue
        x, y, w, h = (int(v) for v in box)
        region = skin[y : y + h, x : x + w]
        if region.mean() < _SKIN_SHARE:
            continue
        shades = grey[y : y + h, x : x + w][region]
        if np.percentile(shades, 90) - np.percentile(shades, 10) >= _SKIN_SPREAD:
            faces.append(tuple(round(v / scale) for v in (x, y, w, h)))
    return faces


_NEIGHBOURS = (-2, -1, 1, 2)  # frames around a sampled one that show a video's face again


def _reference_images(request: Any) -> list[tuple[str, np.ndarray]]:
    named = [("the first frame", request.first_frame), ("the last frame", request.last_frame)]
    named += [(f"@image{i}", image) for i, image in enumerate(request.images, start=1)]
    return [(name, image) for name, image in named if image is not None]


def _reference_videos(request: Any) -> list[tuple[str, np.ndarray]]:
    named = [(f"@video{i}", clip.video) for i, clip in enumerate(request.videos, start=1)]
    if request.source is not None:
        named.append(("the source clip", request.source.video))
    return [(name, video) for name, video in named if video is not None and len(video)]


def video_shows_face(video: np.ndarray, samples: int = 6) -> bool:
    """Whether a (T, H, W, 3) uint8 clip shows a real human face.

    Looks at `samples` frames spread over the clip. A face found in one of them counts when a frame
    next to it (within two) shows it too: a real face stays a while, while the chance pattern that
    fools the face finder in one generated frame is gone in the next. A one-frame clip is an image."""
    video = np.asarray(video, np.uint8)
    for i in np.linspace(0, len(video) - 1, min(samples, len(video))).astype(int):
        if not find_faces(video[i]):
            continue
        near = [i + d for d in _NEIGHBOURS if 0 <= i + d < len(video)]
        if not near or any(find_faces(video[j]) for j in near):
            return True
    return False


def check_references(request: Any) -> None:
    """Raise FaceError when a reference image or video of `request` shows a real human face."""
    stills = (name for name, image in _reference_images(request) if find_faces(np.asarray(image, np.uint8)))
    clips = (name for name, video in _reference_videos(request) if video_shows_face(video))
    name = next(itertools.chain(stills, clips), None)  # stops at the first one found
    if name is not None:
        raise FaceError(f"{name} shows a real human face; references of real people are refused by default. "
                        "If you have their consent, allow it: --allow-faces on the command line, "
                        "Pipeline.allow_faces = True in Python, or the server's allow-faces setting")  # fmt: skip


# ---------------------------------------------------------------- manifest

TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
ASSERTION = "org.openseedance.provenance"
METADATA_KEY = "openseedance_manifest"
_C2PA_SUFFIXES = {".mp4": "video/mp4", ".mov": "video/quicktime", ".m4v": "video/x-m4v"}


def key_folder() -> Path:
    """Where the signing certificate lives: $OPENSEEDANCE_C2PA_DIR, else the user's cache folder."""
    if os.environ.get("OPENSEEDANCE_C2PA_DIR"):
        return Path(os.environ["OPENSEEDANCE_C2PA_DIR"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "openseedance" / "c2pa"


def _write_private(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _issue_certificates(folder: Path) -> None:
    """A local CA and an ES256 signing certificate it issues (C2PA rejects a self-signed leaf)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "openseedance (local)")])  # fmt: skip

    def usage(sign: bool) -> x509.KeyUsage:
        return x509.KeyUsage(digital_signature=sign, content_commitment=False, key_encipherment=False,
                             data_encipherment=False, key_agreement=False, key_cert_sign=not sign,
                             crl_sign=not sign, encipher_only=False, decipher_only=False)  # fmt: skip

    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = name(f"openseedance local CA {os.urandom(4).hex()}")
    start, end = now - dt.timedelta(days=1), now + dt.timedelta(days=3650)
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(usage(False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))  # fmt: skip
    leaf = (x509.CertificateBuilder().subject_name(name("openseedance signer")).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))  # fmt: skip
    pem = serialization.Encoding.PEM
    folder.mkdir(parents=True, exist_ok=True)
    _write_private(folder / "signer.key", key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                            serialization.NoEncryption()))  # fmt: skip
    _write_private(folder / "ca.pem", ca.public_bytes(pem))
    _write_private(folder / "signer.pem", leaf.public_bytes(pem) + ca.public_bytes(pem))
    log.info("issued a local signing certificate in %s", folder)


def signing_credentials() -> tuple[bytes, bytes]:
    """(certificate chain PEM, private key PEM): the ones in key_folder(), issued there on first use.
    Put your own `signer.pem` (leaf first, then its issuers) and `signer.key` (EC P-256) there to sign
    as yourself."""
    folder = key_folder()
    if not (folder / "signer.pem").is_file() or not (folder / "signer.key").is_file():
        _issue_certificates(folder)
    return (folder / "signer.pem").read_bytes(), (folder / "signer.key").read_bytes()


def claims(request: dict[str, Any]) -> dict[str, Any]:
    """What a generated clip's manifest asserts, from its resolved request."""
    created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return {"generator": f"openseedance {__version__}", "model": request.get("model"), "created": created,
            **request.get("provenance", {})}  # fmt: skip


def _c2pa_manifest(claims: dict[str, Any], title: str) -> dict[str, Any]:
    agent = {"name": "openseedance", "version": __version__}
    created = {"action": "c2pa.created", "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA, "softwareAgent": agent}
    return {"claim_generator_info": [agent], "title": title,
            "assertions": [{"label": "c2pa.actions", "data": {"actions": [created]}},
                           {"label": ASSERTION, "data": claims}]}  # fmt: skip


def _sign_c2pa(path: Path, claims: dict[str, Any]) -> None:
    import c2pa

    chain, key = signing_credentials()
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, chain, key, None))
    tmp = path.with_name(f".{path.stem}.signing{path.suffix}")
    try:
        with c2pa.Builder(json.dumps(_c2pa_manifest(claims, path.name))) as builder:
            builder.sign_file(str(path), str(tmp), signer)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        signer.close()


def content_digest(path: Path) -> str:
    """SHA-256 over every stream's packets: what the metadata manifest signs (tags excluded)."""
    import av

    digest = hashlib.sha256()
    with av.open(str(path)) as container:
        for packet in container.demux():
            if packet.size:
                digest.update(packet.stream.index.to_bytes(2, "big") + bytes(packet))
    return digest.hexdigest()


def _canonical(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def _remux_with_tags(path: Path, tags: dict[str, str]) -> None:
    """Copy every packet of `path` (no re-encoding) into a new file with `tags` added."""
    import av

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


def _sign_metadata(path: Path, claims: dict[str, Any]) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    chain, key_pem = signing_credentials()
    key = serialization.load_pem_private_key(key_pem, password=None)
    body = {"claims": claims, "content_sha256": content_digest(path)}
    signature = key.sign(_canonical(body), ec.ECDSA(hashes.SHA256()))
    leaf = x509.load_pem_x509_certificates(chain)[0].public_bytes(serialization.Encoding.PEM).decode()
    record = {**body, "signature": base64.b64encode(signature).decode(), "certificate": leaf}
    _remux_with_tags(path, {METADATA_KEY: json.dumps(record, sort_keys=True)})


def sign_file(path: str | os.PathLike, claims: dict[str, Any], method: str = "auto") -> str:
    """Add a signed provenance manifest to a written media file, in place. `method`: "c2pa", "metadata"
    (a signed manifest in the container's tags) or "auto" (C2PA where it can sign this format, else
    metadata). Returns the method used."""
    path = Path(path)
    if method not in ("auto", "c2pa", "metadata"):
        raise ValueError(f"manifest method must be auto, c2pa or metadata, got {method!r}")
    if method in ("auto", "c2pa") and path.suffix.lower() in _C2PA_SUFFIXES:
        try:
            _sign_c2pa(path, claims)
            return "c2pa"
        except Exception as err:  # no c2pa library, an unusable key, a format it refuses
            if method == "c2pa":
                raise ValueError(f"{path}: cannot sign a C2PA manifest ({type(err).__name__}: {err})") from None
            log.warning("C2PA signing failed (%s: %s); signing the manifest into the metadata", type(err).__name__, err)
    elif method == "c2pa":
        raise ValueError(f"{path}: C2PA signing supports {', '.join(_C2PA_SUFFIXES)} files")
    _sign_metadata(path, claims)
    return "metadata"


@dataclass
class ManifestResult:
    present: bool
    intact: bool = False
    kind: str | None = None  # "c2pa" or "metadata"
    signer: str | None = None
    claims: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # why it is not intact
    notes: list[str] = field(default_factory=list)  # what does not break it, e.g. a locally issued certificate


def _read_c2pa(path: Path) -> ManifestResult | None:
    try:
        import c2pa
    except ImportError:
        return None
    try:
        with c2pa.Reader(str(path)) as reader:
            state = reader.get_validation_state()
            active = reader.get_active_manifest() or {}
            results = reader.get_validation_results() or {}
    except Exception as err:  # no manifest, or a format the reader does not know
        if "notfound" not in type(err).__name__.lower() and "not found" not in str(err).lower():
            log.debug("no readable C2PA manifest in %s: %s", path, err)
        return None
    claims = next((a.get("data", {}) for a in active.get("assertions", []) if a.get("label") == ASSERTION), {})
    failures = [
        f"{f.get('code')}: {f.get('explanation')}" for f in results.get("activeManifest", {}).get("failure", [])
    ]
    # A certificate outside the public trust lists (the local one issued on first use) is reported, not failed.
    notes = [f for f in failures if f.startswith("signingCredential.untrusted")]
    problems = [f for f in failures if f not in notes] or ([] if state in ("Valid", "Trusted") else [f"state {state}"])
    info = active.get("signature_info", {})
    signer = ", ".join(str(info[k]) for k in ("common_name", "issuer") if info.get(k)) or None
    return ManifestResult(True, not problems, "c2pa", signer, claims, problems, notes)


def _read_metadata_manifest(path: Path) -> ManifestResult | None:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        text = media.read_metadata(path).get(METADATA_KEY)
    except media.MediaError:
        return None
    if text is None:
        return None
    try:
        record = json.loads(text)
        body = {"claims": record["claims"], "content_sha256": record["content_sha256"]}
        cert = x509.load_pem_x509_certificate(record["certificate"].encode())
        signature = base64.b64decode(record["signature"])
    except (ValueError, KeyError, TypeError) as err:
        return ManifestResult(True, False, "metadata", problems=[f"unreadable manifest: {err}"])
    problems = []
    try:
        cert.public_key().verify(signature, _canonical(body), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, TypeError, ValueError):
        problems.append("the signature does not match the manifest")
    if content_digest(path) != body["content_sha256"]:
        problems.append("the audio or video differs from what was signed")
    signer = f"{cert.subject.rfc4514_string()} (issuer {cert.issuer.rfc4514_string()})"
    notes = ["the certificate is not checked against a trust list"]
    return ManifestResult(True, not problems, "metadata", signer, body["claims"], problems, notes)


def read_manifest(path: str | os.PathLike) -> ManifestResult:
    path = Path(path)
    return _read_c2pa(path) or _read_metadata_manifest(path) or ManifestResult(False)


# ---------------------------------------------------------------- verify

KNOWN_MODELS = ("bundled:tiny",)


@dataclass
class Verification:
    """Whether a file carries the marks (video and audio apart), their payload, and its manifest."""

    file: str
    video: MarkResult | None  # None: the file has no video
    audio: MarkResult | None  # None: the file has no audio
    manifest: ManifestResult

    @property
    def marked(self) -> bool:
        return any(m is not None and m.found for m in (self.video, self.audio))

    @property
    def payload(self) -> str | None:
        found = [m.payload for m in (self.video, self.audio) if m is not None and m.payload]
        return found[0] if found else None

    @property
    def model(self) -> str | None:
        """The model's name when the payload's model hash is one this package knows."""
        if self.payload is None:
            return None
        model = Payload.from_hex(self.payload).model
        return next((m for m in KNOWN_MODELS if hash16(m) == model), None)

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "marked": self.marked, "payload": self.payload, "model": self.model,
                "video": None if self.video is None else self.video.to_dict(),
                "audio": None if self.audio is None else self.audio.to_dict(),
                "manifest": asdict(self.manifest)}  # fmt: skip

    def text(self) -> str:
        lines = [self.file]
        for name, mark in (("video mark", self.video), ("audio mark", self.audio)):
            if mark is None:
                lines.append(f"  {name}: no {name.split()[0]} stream")
                continue
            state = "FOUND" if mark.found else "not found"
            payload = f", payload {mark.payload}" if mark.payload else (", payload unreadable" if mark.found else "")
            lines.append(f"  {name}: {state} (confidence {mark.confidence:.6f}, z {mark.score:.1f}{payload})")
        if self.payload:
            p = Payload.from_hex(self.payload)
            lines.append(f"  payload:    {self.payload} = model hash {p.model:04x}"
                         f"{f' ({self.model})' if self.model else ''}, job hash {p.job:04x}")  # fmt: skip
        m = self.manifest
        if not m.present:
            lines.append("  manifest:   none")
        else:
            state = "intact" if m.intact else "BROKEN: " + "; ".join(m.problems)
            lines.append(f"  manifest:   {m.kind}, {state}")
            if m.signer:
                lines.append(f"              signed by {m.signer}")
            lines += [f"              note: {note}" for note in m.notes]
            if m.claims:
                lines.append(f"              claims {json.dumps(m.claims, sort_keys=True)}")
        return "\n".join(lines)


def verify(path: str | os.PathLike) -> Verification:
    """Read a media file and report its marks and manifest."""
    path = Path(path)
    if path.suffix.lower() in media.AUDIO_SUFFIXES:
        audio, rate = media.read_audio(path)
        video_result, audio_result = None, detect_audio(audio, rate)
    else:
        clip = media.read_video(path)
        video_result = detect_video(clip.video)
        audio_result = None if clip.audio is None else detect_audio(clip.audio, clip.sample_rate)
    return Verification(str(path), video_result, audio_result, read_manifest(path))
