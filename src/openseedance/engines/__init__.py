"""Engines: the models behind the front. Each implements the `Generator` protocol; `load(path)`
picks the engine from what a model folder holds, `read_card(path)` reads its capabilities without
loading weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from openseedance.engines.base import Capabilities, EngineOutput, Generator, RunOptions
from openseedance.engines.bundled import BundledEngine

__all__ = ["Capabilities", "EngineOutput", "Generator", "RunOptions", "load", "read_card"]


def _kind(path: str | os.PathLike | None) -> str:
    """Which engine a folder is for, from what it holds; a ValueError saying what is missing otherwise."""
    if path is None or (Path(path) / "pipeline.json").is_file():
        return "bundled"
    raise ValueError(f"{path} is not a model folder (no pipeline.json)")


def load(path: str | os.PathLike | None = None, dtype: torch.dtype = torch.float32) -> Generator:
    """The engine for a model folder (None: the bundled model)."""
    _kind(path)
    return BundledEngine.from_pretrained(path, dtype)


def read_card(path: str | os.PathLike | None = None) -> Capabilities:
    """A model folder's capabilities, read without building the model or loading its weights."""
    from openseedance.engines.bundled import read_card as bundled_card

    _kind(path)
    return bundled_card(path)
