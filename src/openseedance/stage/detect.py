"""Analytic detectors: what is in a clip, read from its pixels and samples alone.

Vision: every saturated pixel is named by the nearest body colour's hue; per frame the largest
connected blob of each colour is a character's track (centre, size, shape, pattern, mouth).
Audio: onsets from band-wise log-energy rises, timed on a 2 ms envelope; pitch by YIN, timbre as
the levels of the first harmonics. Nothing here reads a scene's ground truth; `probes.py` compares against it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, signal

from openseedance.stage import world

# ---------------------------------------------------------------- vision

_HUES = {
    name: float(np.degrees(np.arctan2(np.sqrt(3) * (g - b), 2 * r - g - b)) % 360)
    for name, (r, g, b) in world.COLOURS.items()
}
_NAMES = list(_HUES)
_HUE_ARRAY = np.array([_HUES[n] for n in _NAMES])


def hsv(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hue (degrees), saturation and value of uint8 RGB frames."""
    rgb = frames.astype(np.float32) / 255.0
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = rgb.max(-1)
    s = (v - rgb.min(-1)) / np.maximum(v, 1e-6)
    h = np.degrees(np.arctan2(np.sqrt(3) * (g - b), 2 * r - g - b)) % 360
    return h, s, v


def _hue_table() -> np.ndarray:
    """Body colour index for each whole degree of hue (-1 where no colour is within 22 degrees)."""
    deg = np.arange(360.0)
    dist = np.abs((deg[:, None] - _HUE_ARRAY + 180) % 360 - 180)
    return np.where(dist.min(1) < 22, dist.argmin(1), -1).astype(np.int8)


_HUE_TABLE = _hue_table()


def colour_labels(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index into `world.COLOURS` of each body-coloured pixel (-1 elsewhere), and the value plane."""
    h, s, v = hsv(frames)
    named = _HUE_TABLE[np.round(h).astype(np.int16) % 360]
    return np.where((s > 0.45) & (v > 0.3), named, -1), v


@dataclass
class Track:
    """One colour's largest blob in every frame; NaN / -1 where absent."""

    colour: str
    present: np.ndarray  # (T,) bool
    center: np.ndarray  # (T, 2) pixels
    radius: np.ndarray  # (T,) pixels: half the blob's larger bbox side
    area: np.ndarray  # (T,) pixels
    whole: np.ndarray  # (T,) bool: the blob does not touch the frame's edge
    mouth: np.ndarray  # (T,) dark fraction of the filled body (eyes included; see `openness`)
    fill: np.ndarray  # (T,) filled area / bbox area
    widest: np.ndarray  # (T,) height of the widest row, as a fraction of the bbox height
    pattern_error: np.ndarray  # (T, 3) how badly each of world.PATTERNS explains the body's shading


def _convex_fill(mask: np.ndarray) -> np.ndarray:
    """Fill each row and each column between its extreme pixels: exact for convex bodies, and it
    closes the eyes and mouth even where the anti-aliased edge leaves them open."""
    rows = np.zeros_like(mask)
    cols = np.zeros_like(mask)
    idx_r = np.where(mask.any(1))[0]
    for i in idx_r:
        j = np.where(mask[i])[0]
        rows[i, j[0] : j[-1] + 1] = True
    idx_c = np.where(mask.any(0))[0]
    for j in idx_c:
        i = np.where(mask[:, j])[0]
        cols[i[0] : i[-1] + 1, j] = True
    return rows & cols


def tracks(frames: np.ndarray, colours: list[str] | None = None, min_area: float | None = None) -> dict[str, Track]:
    """The track of each body colour seen in at least one frame (or of each of `colours`)."""
    t, h, w = frames.shape[:3]
    labels, value = colour_labels(frames)
    min_area = min_area if min_area is not None else max(6.0, 0.003 * h * w)
    wanted = colours if colours is not None else [n for i, n in enumerate(_NAMES) if (labels == i).any()]
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = True  # connect within a frame only
    cross = np.zeros((3, 3, 3), bool)
    cross[1] = ndimage.generate_binary_structure(2, 1)
    out = {}
    for name in wanted:
        k = _NAMES.index(name)
        # Pieces of colour at most two pixels apart are one body (at small sizes a row of eyes can
        # cut a body's tip off), but only pieces with a solid core: thin lines of one hue are the
        # fringe where 4:2:0 chroma mixed two others.
        pieces, n_pieces = ndimage.label(labels == k, structure=structure)
        solid = ndimage.sum_labels(ndimage.binary_erosion(pieces > 0, structure=cross), pieces, np.arange(n_pieces + 1))
        mine = (solid > 0)[pieces] & (pieces > 0)
        comp, count = ndimage.label(ndimage.binary_dilation(mine, structure=structure), structure=structure)
        tr = Track(
            colour=name,
            present=np.zeros(t, bool),
            center=np.full((t, 2), np.nan),
            radius=np.full(t, np.nan),
            area=np.zeros(t),
            whole=np.zeros(t, bool),
            mouth=np.full(t, np.nan),
            fill=np.full(t, np.nan),
            widest=np.full(t, np.nan),
            pattern_error=np.full((t, len(world.PATTERNS)), np.nan),
        )
        if count:
            sizes = ndimage.sum_labels(mine, comp, np.arange(1, count + 1))
            slices = ndimage.find_objects(comp)
            best: dict[int, int] = {}
            for lab, sl in enumerate(slices, start=1):
                f = sl[0].start
                if sizes[lab - 1] >= min_area and (f not in best or sizes[lab - 1] > sizes[best[f] - 1]):
                    best[f] = lab
            for f, lab in best.items():
                sl = slices[lab - 1]
                mask = (comp[sl][0] == lab) & mine[sl][0]
                rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
                ys = slice(sl[1].start + rows[0], sl[1].start + rows[-1] + 1)
                xs = slice(sl[2].start + cols[0], sl[2].start + cols[-1] + 1)
                _measure(tr, f, mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1], value[f, ys, xs], ys, xs, h, w)
        out[name] = tr
    return out


def _measure(tr: Track, f: int, mask: np.ndarray, value: np.ndarray, ys: slice, xs: slice, h: int, w: int) -> None:
    filled = _convex_fill(mask)
    bh, bw = mask.shape
    yy, xx = np.nonzero(filled)
    tr.present[f] = True
    tr.area[f] = float(filled.sum())
    tr.center[f] = (xs.start + xx.mean() + 0.5, ys.start + yy.mean() + 0.5)
    tr.radius[f] = max(bh, bw) / 2.0
    tr.whole[f] = ys.start > 0 and xs.start > 0 and ys.stop < h and xs.stop < w
    dark = np.clip((0.4 - value) / 0.4, 0.0, 1.0) * filled
    tr.mouth[f] = float(dark.sum() / max(filled.sum(), 1))
    tr.fill[f] = float(filled.sum() / (bh * bw))
    widths = filled.sum(1)
    tr.widest[f] = float((np.flatnonzero(widths >= widths.max() - 0.5).mean() + 0.5) / bh)
    # the pattern: which of the world's patterns, laid on this body, best explains its shading. Only
    # body-coloured pixels away from the rim (anti-aliased, and bled into by 4:2:0 chroma) and away
    # from the eyes and mouth (their anti-aliased edges are dark too) are read.
    shape = classify_shape(tr.fill[f], tr.widest[f])
    half, top, bottom = _BOX[shape]
    r = bw / 2.0 / half
    u = np.broadcast_to((np.arange(bw) + 0.5 - bw / 2.0)[None, :] / r, (bh, bw))
    v = np.broadcast_to(top + (np.arange(bh) + 0.5)[:, None] / bh * (bottom - top), (bh, bw))
    inner = ndimage.binary_erosion(mask) & (world.body_sdf(shape, u, v) < -world.PATTERN_RIM - 1.0 / r)
    if inner.sum() >= 10:
        seen = value[inner]
        for k, name in enumerate(world.PATTERNS):
            sdf = world.pattern_sdf(name, u[inner], v[inner])
            keep = np.ones_like(seen) if sdf is None else 1.0 - world.PATTERN_DARKEN * np.clip(0.5 - sdf * r, 0, 1)
            light = max(float((seen * keep).sum() / (keep * keep).sum()), 1e-6)  # the body's own value
            tr.pattern_error[f, k] = float(np.mean((seen - light * keep) ** 2)) / light**2


# Per shape: half-width, top and bottom, in body radii from the body's centre.
_BOX = {
    "circle": (1.0, -1.0, 1.0),
    "square": (0.88, -0.88, 0.88),
    "diamond": (1.0, -1.0, 1.0),
    "triangle": (1.0, -1.0, 0.85),
}


def classify_shape(fill: float, widest: float) -> str:
    if fill >= 0.87:
        return "square"
    if widest >= 0.62:
        return "triangle"
    return "circle" if fill >= 0.68 else "diamond"


SHAPE_MIN_RADIUS = 8.0  # pixels: smaller bodies lose their corners to 4:2:0 chroma
PATTERN_MIN_RADIUS = 12.0  # pixels: below this stripes and spots blur into each other


def classify_pattern(errors: np.ndarray) -> str:
    """The pattern whose drawing best fits the body's shading (see `Track.pattern_error`)."""
    return world.PATTERNS[int(np.argmin(errors))]


def majority(labels: list[str]) -> str | None:
    if not labels:
        return None
    names, counts = np.unique(labels, return_counts=True)
    return str(names[counts.argmax()])


def openness(track: Track, segments: list[np.ndarray]) -> np.ndarray:
    """Mouth openness over time: the dark fraction above its floor within each shot (eyes and a
    closed mouth make the floor; zoom changes between shots so each has its own)."""
    out = np.full_like(track.mouth, np.nan)
    for seg in segments:
        m = track.mouth[seg]
        ok = ~np.isnan(m)
        if ok.sum() >= 2:
            out[seg] = m - np.percentile(m[ok], 10)
    return out


def hops(y: np.ndarray, radius: float, fps: float) -> list[tuple[float, float]]:
    """(apex frame, landing time in frames) of each hop in a vertical track (pixels, y down)."""
    y = np.asarray(y, float)
    if np.isnan(y).all() or len(y) < 3:
        return []
    filled = _interp_nans(y)
    wlen = max(3, int(round(0.7 * fps)) | 1)
    with warnings.catch_warnings():  # flat stretches have zero prominence, which is fine
        warnings.filterwarnings("ignore", message="some peaks have a prominence of 0")
        peaks, _ = signal.find_peaks(-filled, prominence=0.45 * radius, wlen=wlen, distance=max(1, int(0.25 * fps)))
    out = []
    for p in peaks:
        # the landing frame: where the fall stops (a walk that follows it keeps going, but slower)
        right = min(len(filled) - 1, p + int(np.ceil(0.35 * fps)))
        land = p
        while land < right and filled[land] < filled[p] + 0.3 * radius:  # past the apex
            land += 1
        while land < right and filled[land + 1] - filled[land] > 0.05 * radius:
            land += 1
        ground = filled[land]
        # airborne frames around the apex, up to the landing
        lo = max(0, p - int(np.ceil(0.25 * fps)))
        if p > lo:  # fit this arc only, after its take-off (back to back, the last one's landing)
            lo += int(np.argmax(filled[lo:p])) + 1
        idx = np.arange(lo, land)
        idx = idx[filled[idx] < ground - 0.05 * radius]
        landing = float(land) - 0.5
        if len(idx) >= 3:
            a, b, c = np.polyfit(idx.astype(float), filled[idx], 2)
            disc = b * b - 4 * a * (c - ground)
            if a > 0 and disc >= 0:
                root = (-b + np.sqrt(disc)) / (2 * a)
                if p <= root <= land + 0.5:
                    landing = float(root)
        out.append((float(p), landing))
    return out


def _interp_nans(x: np.ndarray) -> np.ndarray:
    x = x.copy()
    bad = np.isnan(x)
    if bad.any() and (~bad).any():
        x[bad] = np.interp(np.flatnonzero(bad), np.flatnonzero(~bad), x[~bad])
    return x


MOUTH_OPEN = 0.03  # dark fraction of the body above its floor that counts as an open mouth


def openings(m: np.ndarray, on: float = MOUTH_OPEN, off: float = 0.6 * MOUTH_OPEN) -> list[int]:
    """Frames where a mouth opens (hysteresis on the openness signal)."""
    out, is_open = [], False
    for f, v in enumerate(np.nan_to_num(m, nan=0.0)):
        if not is_open and v > on:
            out.append(f)
            is_open = True
        elif is_open and v < off:
            is_open = False
    return out


# ---------------------------------------------------------------- audio

HOP = 0.005  # seconds


def band_energy(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Log energy (dB) in six bands every 5 ms, and the frame times: ((B, N), (N,))."""
    x = audio.mean(0) if audio.ndim == 2 else audio
    hop = max(1, int(round(HOP * sample_rate)))
    n_fft = 1 << int(np.ceil(np.log2(0.016 * sample_rate)))
    f, times, spec = signal.stft(x, fs=sample_rate, nperseg=n_fft, noverlap=n_fft - hop, boundary=None,
                                 padded=True)  # fmt: skip
    power = np.abs(spec) ** 2
    edges = [40, 250, 500, 1000, 2000, 4000, sample_rate / 2]
    bands = np.stack([power[(f >= lo) & (f < hi)].sum(0) for lo, hi in zip(edges[:-1], edges[1:], strict=True)])
    # stft frames are centred at `times`; report when each frame's window starts to hear a sound
    return 10 * np.log10(bands + 1e-10), times - n_fft / sample_rate / 2 + hop / sample_rate


def onsets(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Times (s) where a sound starts: a band's energy rises by 12 dB within 30 ms and stays up.

    The 5 ms band frames find each rise, but their 16 ms windows hear a sound before it starts and
    the walk back to the rise's first frame wanders with the noise floor (on Stage clips a median
    8 ms early, up to 18 ms). A 2 ms broadband envelope then times it (`_time_rise`), within a few ms."""
    x = audio.mean(0) if audio.ndim == 2 else audio
    energy, times = band_energy(x, sample_rate)
    # a band counts when it is well above its own floor and not far below the loudest sound
    floor = np.maximum(np.percentile(energy, 20, axis=1, keepdims=True), energy.max() - 50.0)
    back = 6
    past = np.stack([np.roll(energy, k, axis=1) for k in range(1, back + 1)]).min(0)
    past[:, :back] = energy[:, :1]
    # the rise must hold for 10 ms: noise flickers, sounds stay
    held = np.minimum(energy, np.roll(energy, -1, axis=1))
    rise = np.where(held > floor + 20, held - past, 0.0)
    strength = rise.max(0)
    peaks, _ = signal.find_peaks(strength, height=12.0, distance=int(0.03 / HOP))
    level = _fine_level(np.asarray(x, dtype=np.float64), sample_rate)
    out = []
    for p in peaks:
        # walk back to the first frame of the rise
        q = p
        band = rise[:, p].argmax()
        while q > 0 and energy[band, q - 1] > past[band, p] + 3.0:
            q -= 1
        out.append(_time_rise(level, sample_rate, float(times[q]), float(times[p])))
    return np.asarray(out)


FINE_WINDOW = 0.002  # seconds


def _fine_level(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Broadband level (dB) over the `FINE_WINDOW` ending at each sample: (S,)."""
    w = max(1, int(round(FINE_WINDOW * sample_rate)))
    c = np.concatenate([[0.0], np.cumsum(x * x)])
    mean = (c[w:] - c[:-w]) / w  # mean[i] covers samples i .. i + w - 1
    return 10 * np.log10(np.concatenate([np.full(w - 1, mean[0] if len(mean) else 0.0), mean]) + 1e-12)


def _time_rise(level: np.ndarray, sample_rate: int, start: float, peak: float) -> float:
    """When a rise found in the band frames (first frame at `start`, steepest at `peak`) starts: the
    first sample whose fine level is within 20 dB of the rise's top and 6 dB above the level of the
    50-10 ms before `start`. Falls back to `start` where the clip is too short to tell."""

    def at(t: float) -> int:
        return max(0, int(t * sample_rate))

    top = level[at(start) : at(peak + 0.04)]
    if not len(top):
        return start
    before = level[at(start - 0.05) : at(start - 0.01)]
    threshold = top.max() - 20.0
    if len(before):
        threshold = max(threshold, float(np.median(before)) + 6.0)
    lo = at(start - 0.015)
    above = np.nonzero(level[lo : at(peak + 0.04)] >= threshold)[0]
    return (lo + int(above[0])) / sample_rate if len(above) else start


def voice_envelope(audio: np.ndarray, sample_rate: int, times: np.ndarray, window: float = 0.03) -> np.ndarray:
    """RMS of the voice band (150 Hz - 3 kHz) around each of `times`."""
    x = audio.mean(0) if audio.ndim == 2 else audio
    sos = signal.butter(4, [150, min(3000, 0.45 * sample_rate)], "bandpass", fs=sample_rate, output="sos")
    y = signal.sosfiltfilt(sos, x) if len(x) > 30 else x
    half = int(window * sample_rate / 2)
    idx = np.clip(np.round(np.asarray(times) * sample_rate).astype(int), 0, max(len(y) - 1, 0))
    c = np.concatenate([[0.0], np.cumsum(y * y)])
    lo, hi = np.clip(idx - half, 0, len(y)), np.clip(idx + half, 0, len(y))
    return np.sqrt((c[hi] - c[lo]) / np.maximum(hi - lo, 1))


def pitch(
    audio: np.ndarray, sample_rate: int, times: np.ndarray, fmin: float = 80.0, fmax: float = 500.0
) -> tuple[np.ndarray, np.ndarray]:
    """YIN f0 (Hz) and aperiodicity (0 = perfectly periodic) in 40 ms windows at `times`."""
    x = audio.mean(0) if audio.ndim == 2 else audio
    n = int(0.04 * sample_rate)
    tau_max = int(sample_rate / fmin)
    tau_min = int(sample_rate / fmax)
    f0 = np.full(len(times), np.nan)
    ap = np.ones(len(times))
    for i, t in enumerate(times):
        s = int(round(t * sample_rate)) - n // 2
        if s < 0 or s + n + tau_max > len(x):
            continue
        frame = x[s : s + n + tau_max]
        # difference function d(k) = sum (x_j - x_{j+k})^2 = e0 + e(k) - 2 r(k), r by FFT
        size = 1 << int(np.ceil(np.log2(len(frame) + n)))
        r = np.fft.irfft(np.conj(np.fft.rfft(frame[:n], size)) * np.fft.rfft(frame, size), size)[: tau_max + 1]
        c = np.concatenate([[0.0], np.cumsum(frame * frame)])
        d = np.maximum(c[n] + (c[n : n + tau_max + 1] - c[: tau_max + 1]) - 2 * r, 0.0)
        cmnd = d[1:] * np.arange(1, tau_max + 1) / np.maximum(np.cumsum(d[1:]), 1e-12)
        cmnd = np.concatenate([[1.0], cmnd])
        region = cmnd[tau_min : tau_max + 1]
        below = np.flatnonzero(region < 0.15)
        if len(below):
            k = below[0]
            while k + 1 < len(region) and region[k + 1] < region[k]:
                k += 1
        else:
            k = int(region.argmin())
        tau = k + tau_min
        if 1 <= tau < tau_max:  # parabolic refinement
            a, b, c = cmnd[tau - 1], cmnd[tau], cmnd[tau + 1]
            shift = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) > 0 else 0.0
            tau_f = tau + float(np.clip(shift, -1, 1))
        else:
            tau_f = float(tau)
        f0[i] = sample_rate / tau_f
        ap[i] = float(cmnd[tau])
    return f0, ap


HARMONICS = 6


def harmonic_profile(audio: np.ndarray, sample_rate: int, t: float, f0: float) -> np.ndarray | None:
    """Levels (dB, loudest = 0, floor -40) of the first harmonics of f0 in a 64 ms window at t."""
    x = audio.mean(0) if audio.ndim == 2 else audio
    n = int(0.064 * sample_rate)
    s = int(round(t * sample_rate)) - n // 2
    if s < 0 or s + n > len(x) or HARMONICS * f0 >= sample_rate / 2:
        return None
    frame = x[s : s + n] * np.hanning(n)
    # a small search around each harmonic absorbs the pitch estimate's error and the glide
    freqs = np.arange(1, HARMONICS + 1)[:, None] * f0 * (1 + np.linspace(-0.02, 0.02, 9))[None, :]
    ts = np.arange(n) / sample_rate
    amps = np.abs(np.exp(-2j * np.pi * freqs[..., None] * ts) @ frame).max(1)
    db = 20 * np.log10(amps / max(amps.max(), 1e-12) + 1e-12)
    return np.maximum(db, -40.0)
