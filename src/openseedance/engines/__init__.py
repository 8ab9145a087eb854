"""Engines: the models behind the front. Each implements the `Generator` protocol; `load(path)`
picks the engine from what a model folder holds (`pipeline.json`: the bundled engine;
`model_index.json` naming an LTX-2 pipeline: the LTX-2 engine), `read_card(path)` reads its
capabilities without loading weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from openseedance.engines.base import Capabilities, EngineOutput, Generator, RunOptions
from openseedance.engines.bundled import BundledEngine

__all__ = ["Capabilities", "EngineOutput", "Generator", "RunOptions", "load", "read_card"]


def kind(path: str | os.PathLike | None) -> str:
    """Which engine a folder is for ("bundled" or "ltx2"), from what it holds; a ValueError saying
    what is missing otherwise."""
    from openseedance.engines.ltx2 import is_ltx2

    if path is None or (Path(path) / "pipeline.json").is_file():
        return "bundled"
    if is_ltx2(path):
        return "ltx2"
    if (Path(path) / "model_index.json").is_file():
        raise ValueError(f"{path} holds a diffusers pipeline that is not LTX-2 (model_index.json names another "
                         "pipeline class): this project runs LTX-2 folders and its own")  # fmt: skip
    raise ValueError(f"{path} is not a model folder (no pipeline.json, nor an LTX-2 model_index.json)")


def load(path: str | os.PathLike | None = None, dtype: torch.dtype = torch.float32) -> Generator:
    """The engine for a model folder (None: the bundled model)."""
    if kind(path) == "ltx2":
        from openseedance.engines.ltx2 import LTX2Engine

        return LTX2Engine.from_pretrained(path, dtype)  # type: ignore[arg-type]
    return BundledEngine.from_pretrained(path, dtype)


def read_card(path: str | os.PathLike | None = None) -> Capabilities:
    """A model folder's capabilities, read without building the model or loading its weights."""
    if kind(path) == "ltx2":
        from openseedance.engines.ltx2 import card

        return card(path)  # type: ignore[arg-type]
    from openseedance.engines.bundled import read_card as bundled_card

    return bundled_card(path)
