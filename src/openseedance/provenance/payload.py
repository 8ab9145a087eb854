"""The payload both marks carry, its error-correcting code, and what both detectors share.

The payload is 32 bits: a 16-bit hash of the model id and a 16-bit hash of the job id, protected by a
CRC-8 and a rate-1/2 convolutional code (constraint length 7, soft Viterbi decoding).

Both marks are keyed patterns made of one sync vector plus one vector per coded bit, seeded from `KEY`;
their coefficients are set knowing the host ("improved spread spectrum", `informed_coefficients`), and
each detector reports a `MarkResult` held to the same false-positive rate, `ALPHA`.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import asdict, dataclass, field
from math import erfc, sqrt
from typing import Any

import numpy as np

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


# ---------------------------------------------------------------- shared by both marks


def keyed_seed(tag: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{KEY}/{tag}".encode()).digest()[:8], "big")


def gauss_tail(z: float) -> float:
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


def mark_result(z: float, tries: float, soft: np.ndarray | None, where: dict[str, Any]) -> MarkResult:
    p = min(1.0, tries * gauss_tail(z))
    found = p <= ALPHA
    decoded = decode_payload(soft) if found and soft is not None else None
    return MarkResult(found, round(float(z), 2), p, decoded.hex if decoded else None, where)


def informed_coefficients(target: np.ndarray, host: np.ndarray, budget: float) -> np.ndarray:
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


def target_shares(sync_share: float) -> np.ndarray:
    """Relative target amplitude of the sync vector and of each coded bit (unit total energy)."""
    return np.array([sqrt(sync_share), *([sqrt((1 - sync_share) / CODE_BITS)] * CODE_BITS)])
