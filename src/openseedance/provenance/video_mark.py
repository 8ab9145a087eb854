"""The video marks: an invisible one in the luma of every frame, and a visible label.

Invisible mark. A keyed pattern, periodic with a 64-pixel tile and limited to 2-10 cycles per tile (so it
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

Visible mark. A small "AI" or "AI generated" label in the bottom-right corner.
"""

from __future__ import annotations

import functools

import numpy as np

from openseedance.provenance.payload import (
    CODE_BITS,
    MarkResult,
    Payload,
    encode_payload,
    gauss_tail,
    informed_coefficients,
    keyed_seed,
    mark_result,
    target_shares,
)

TILE = 64  # pixels; the pattern repeats every TILE pixels in both directions
VIDEO_BAND = (2.0, 10.0)  # cycles per tile
SEGMENT = 4  # frames between sign flips: the sign is a square wave of period 2 * SEGMENT frames
VIDEO_PSNR = 40.5  # dB, marked against unmarked
SCALES = (1.0, 2.0)  # the detector also looks at frames scaled up by 2 (a clip resized to half)
_VIDEO_SYNC_SHARE = 0.6  # the sync peak decides detection; the host-informed payload needs less


@functools.cache
def _video_basis() -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal keyed patterns (1 + CODE_BITS, TILE, TILE) and the band mask (TILE, TILE)."""
    rng = np.random.default_rng(keyed_seed("video"))
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


def _host_tile(folded: np.ndarray, offset: int = 0) -> np.ndarray:
    """(T, TILE, TILE) folded luma -> what the detector will read for an unmarked host at the phase
    `offset` frames into the flips, in units of the mark's amplitude."""
    _, mask = _video_basis()
    changes = np.diff(folded, axis=0)
    energy = (np.abs(np.fft.fft2(changes)) ** 2 * mask).sum((1, 2))
    weights = _flip_weights(len(folded), energy)[offset % (2 * SEGMENT)]
    if not weights.any():  # a single segment: no sign change to detect, the mark is still carried
        return folded.mean(0)
    return np.tensordot(weights, changes, 1) / (2 * np.abs(weights).sum())  # a flip changes the mark by 2


def embed_video(frames: np.ndarray, payload: Payload, psnr: float = VIDEO_PSNR, offset: int = 0) -> np.ndarray:
    """Frames (T, H, W, 3) uint8 carrying `payload`, about `psnr` dB from the originals. `offset`:
    the frames already marked before these (a clip marked part by part as it is made reads back
    like one marked whole)."""
    basis, _ = _video_basis()
    t, h, w, _ = frames.shape
    sign = chips(t, offset)
    projections = basis.reshape(len(basis), -1) @ _host_tile(fold(luma(frames)), offset).ravel()
    target = target_shares(_VIDEO_SYNC_SHARE) * np.concatenate([[1.0], 2.0 * encode_payload(payload) - 1])
    budget = 255.0**2 * 10 ** (-psnr / 10) * TILE * TILE / _COLOUR_COST  # of luma
    tile = np.tensordot(informed_coefficients(target, projections, budget), basis, 1)
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
    p_start, p_any = shifts * gauss_tail(at_start), shifts * len(offsets) * gauss_tail(z)
    tries, score = (2 * shifts, at_start) if p_start < p_any else (2 * shifts * len(offsets), z)
    dy, dx = divmod(peak, TILE)
    tile = np.roll(np.real(np.fft.ifft2(spectrum)), (-dy, -dx), axis=(0, 1))
    soft = basis[1:].reshape(CODE_BITS, -1) @ tile.ravel()
    return mark_result(score, tries, soft, {"scale": scale, "frame_offset": offset, "shift": [dy, dx]})

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
