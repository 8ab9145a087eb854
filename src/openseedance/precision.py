"""The arithmetic a machine runs fastest: bfloat16 where the processor multiplies bfloat16 in
hardware (GPUs; x86 CPUs with AMX or AVX-512 BF16; Arm CPUs with the BF16 extension), float32 where
bfloat16 would be emulated and slower. Decided from the CPU's flags when a model is loaded, without
running anything; a request or a command-line option may override it.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass

import torch

# the CPU flags (Linux /proc/cpuinfo) of native bfloat16 dot products
NATIVE_BF16 = ("amx_bf16", "avx512_bf16", "bf16")


@dataclass(frozen=True)
class Precision:
    bf16: bool
    why: str  # how it was chosen, for the clip's metadata

    @property
    def name(self) -> str:
        return "bfloat16" if self.bf16 else "float32"


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (x86 `flags`, Arm `Features`); empty elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def choose(device: torch.device | str, asked: bool | None = None, flags: frozenset[str] | None = None) -> Precision:
    """`asked` (True: bfloat16, False: float32) when given, else what `device` runs fastest (on a
    CPU, read from its `flags`: by default this machine's)."""
    if asked is not None:
        return Precision(asked, "asked")
    device = torch.device(device)
    if device.type == "cuda":
        return Precision(True, "auto: a GPU")
    if device.type != "cpu":
        return Precision(False, f"auto: {device.type}")
    native = sorted(set(NATIVE_BF16) & (cpu_flags() if flags is None else flags))
    if native:
        return Precision(True, f"auto: this CPU multiplies bfloat16 natively ({', '.join(native)})")
    return Precision(False, f"auto: this CPU ({platform.machine()}) has no native bfloat16 arithmetic")
