"""The audio mark: the video mark's construction in one dimension.

A keyed pattern with a 2048-sample period at 16 kHz in 300-3800 Hz (it survives resampling to 8 kHz and
lossy codecs), scaled to follow the sound's loudness about 26 dB below it. The detector whitens each
2048-sample frame, sums them, and finds the sync peak over all 2048 shifts (so trims and codec delays
are found).
"""

from __future__ import annotations

import functools
from math import sqrt

import numpy as np

from openseedance import media
from openseedance.provenance.payload import (
    CODE_BITS,
    MarkResult,
    Payload,
    encode_payload,
    keyed_seed,
    mark_result,
    target_shares,
)

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
    rng = np.random.default_rng(keyed_seed("audio"))
    hz = np.fft.rfftfreq(PERIOD, 1 / AUDIO_RATE)
    mask = (hz >= AUDIO_BAND[0]) & (hz <= AUDIO_BAND[1])
    shape = (1 + CODE_BITS, len(hz))
    spectra = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) * mask
    q, _ = np.linalg.qr(np.fft.irfft(spectra, n=PERIOD, axis=1).T)
    return q.T, mask


def _mono(audio: np.ndarray) -> np.ndarray:
    return np.asarray(audio, np.float64).mean(0)


def embed_audio(audio: np.ndarray, sample_rate: int, payload: Payload, snr: float = AUDIO_SNR,
                offset: int = 0) -> np.ndarray:  # fmt: skip
    """Audio (C, S) float32 carrying `payload` about `snr` dB below its own short-term loudness.
    `offset`: the samples already marked before these (a track marked part by part as it is made
    reads back like one marked whole)."""
    basis, _ = _audio_basis()
    target = target_shares(_SYNC_SHARE) * np.concatenate([[1.0], 2.0 * encode_payload(payload) - 1])
    period = (target @ basis) * sqrt(PERIOD)  # unit RMS
    samples = audio.shape[1]
    native = -(-samples * AUDIO_RATE // sample_rate) + 1
    phase = offset * AUDIO_RATE // sample_rate % PERIOD
    mark = np.tile(period, -(-(native + phase) // PERIOD))[phase : phase + native]
    if sample_rate != AUDIO_RATE:
        mark = media.resample_audio(mark[None], AUDIO_RATE, sample_rate)[0]
    mark = np.pad(mark, (0, max(0, samples - len(mark))))[:samples]
    width = max(1, round(_ENVELOPE * sample_rate))
    # a running mean of squares can dip a rounding error below zero after sound gives way to silence
    loudness = np.sqrt(np.maximum(running_mean(_mono(audio) ** 2, width), 0.0))
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
    envelope = running_mean(np.abs(spectra), _WHITEN_BINS, axis=1) + 1e-9
    summed = np.where(mask, spectra / envelope, 0).sum(0)
    sync = np.fft.rfft(basis[0])
    corr = np.fft.irfft(summed * np.conj(sync), n=PERIOD)
    z = (corr - corr.mean()) / max(float(corr.std()), 1e-12)
    shift = int(z.argmax())
    soft = basis[1:] @ np.roll(np.fft.irfft(summed, n=PERIOD), -shift)
    return mark_result(float(z[shift]), PERIOD, soft, {"shift": shift, "periods": frames})


def running_mean(x: np.ndarray, size: int, axis: int = -1) -> np.ndarray:
    """The mean over a window of `size` values centred on each (the edges repeated outwards), along
    `axis`: scipy.ndimage.uniform_filter1d's "nearest" mode, in float64 sums, without importing scipy."""
    x = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
    before, after = size // 2, size - 1 - size // 2
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(before, after)], mode="edge")
    sums = np.cumsum(padded, axis=-1)
    sums = np.concatenate([np.zeros_like(sums[..., :1]), sums], axis=-1)
    return np.moveaxis((sums[..., size:] - sums[..., :-size]) / size, -1, axis)
