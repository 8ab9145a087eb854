"""Components on disk: a folder with `config.json` (the frozen config dataclass, plus the component's
kind) and `model.safetensors` (the weights), the convention of the diffusion ecosystem.

    save_component(model, directory)            # model.config is a frozen dataclass
    model = load_component(VideoAutoencoder, directory, dtype=torch.float32)

Weights may be stored in a smaller dtype (the bundled model keeps bfloat16) and are cast on load.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from safetensors.torch import load_file, save_file

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class Component(Protocol):
    config: Any

    def state_dict(self) -> dict[str, torch.Tensor]: ...


T = TypeVar("T", bound=torch.nn.Module)


def config_to_dict(config: Any) -> dict[str, Any]:
    out = dataclasses.asdict(config)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def config_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build a config dataclass from a dict, with a clear error for unknown or missing fields."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {unknown}")
    values = {}
    for name, value in data.items():
        default = fields[name].default
        values[name] = tuple(value) if isinstance(value, list) and isinstance(default, tuple) else value
    try:
        return cls(**values)
    except TypeError as err:
        raise ValueError(f"bad {cls.__name__}: {err}") from None


def save_component(model: Component, directory: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
    """Write `config.json` and `model.safetensors` into `directory` (created if needed). Files are
    written beside and then renamed, so a crash never leaves half a checkpoint under these names."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"kind": type(model).__name__, **config_to_dict(model.config)}
    tensors = {}
    for name, t in model.state_dict().items():
        t = t.detach().to("cpu")
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        tensors[name] = t.contiguous()
    tmp_weights = directory / (WEIGHTS_NAME + ".tmp")
    save_file(tensors, str(tmp_weights), metadata={"kind": meta["kind"]})
    tmp_config = directory / (CONFIG_NAME + ".tmp")
    tmp_config.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp_weights, directory / WEIGHTS_NAME)
    os.replace(tmp_config, directory / CONFIG_NAME)
    return directory


def read_config(directory: str | os.PathLike, config_cls: type) -> Any:
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise ValueError(f"{directory}: no {CONFIG_NAME} (not a saved component)")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: unreadable config ({err})") from None
    data.pop("kind", None)
    return config_from_dict(config_cls, data)


def load_component(cls: type[T], directory: str | os.PathLike, dtype: torch.dtype = torch.float32) -> T:
    """Rebuild `cls(config)` from `directory` and load its weights (cast to `dtype`). The model is
    built on the meta device and takes the loaded tensors as they are, so nothing is allocated or
    initialised twice."""
    config_cls = cls.config_class  # type: ignore[attr-defined]
    config = read_config(directory, config_cls)
    kind = json.loads((Path(directory) / CONFIG_NAME).read_text()).get("kind")
    if kind is not None and kind != cls.__name__:
        raise ValueError(f"{directory} holds a {kind}, not a {cls.__name__}")
    weights = Path(directory) / WEIGHTS_NAME
    if not weights.is_file():
        raise ValueError(f"{directory}: no {WEIGHTS_NAME}")
    with torch.device("meta"):  # no memory or random init for weights about to be replaced
        model = cls(config)
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in load_file(str(weights)).items()}
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(f"{weights} does not fit {cls.__name__}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.to(dtype).eval()
