"""The import rules of the design (DESIGN §4), read from the package's source: model files import only
torch, einops and `layers`; generation never imports `train/` or `stage/`; `stage/` never imports
generation; `serve/` never imports `train/`; nothing imports `cli.py`; only the LTX-2 engine imports
diffusers (an optional extra). Function-level imports count."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "openseedance"
MODEL_FILES = ("transformer", "video_vae", "audio_vae", "layers")
GENERATION = ("engines", "conditioning", "sampling", "pipeline")
ALWAYS_ALLOWED = ("__future__", "math", "dataclasses", "typing", "collections", "functools")
DIFFUSERS_USERS = ("engines.ltx2", "engines.ltx2_tiny")  # the ltx2 extra, imported lazily there only


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def imports(source: str, module: str) -> set[str]:
    """Every module `source` imports (absolute names, relative imports resolved against `module`)."""
    found = set()
    package = module.split(".")[:-1] if not module.endswith("__init__") else module.split(".")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(["openseedance", *package[: len(package) - node.level + 1], base]).strip(".")
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # `from openseedance import media`
    return found


def violations(files: dict[str, str]) -> list[str]:
    """The broken rules in `files` (module name inside the package -> source)."""
    out = []
    for module, source in files.items():
        top = module.split(".")[0]
        own = {n.removeprefix("openseedance.") for n in imports(source, module) if n.startswith("openseedance.")}
        if top in MODEL_FILES:
            for name in imports(source, module):
                ours = name == "openseedance.layers" or name.startswith("openseedance.layers.")
                if name.split(".")[0] not in ("torch", "einops", *ALWAYS_ALLOWED) and not ours:
                    out.append(f"{module} (a model file) imports {name}")
        if top in GENERATION:
            out += [f"{module} (generation) imports {n}" for n in own if n.split(".")[0] in ("train", "stage")]
        if top == "stage":
            out += [f"{module} (the Stage) imports {n}" for n in own if n.split(".")[0] in GENERATION]
        if top == "serve":
            out += [f"{module} (the server) imports {n}" for n in own if n.split(".")[0] == "train"]
        out += [f"{module} imports the CLI" for n in own if n.split(".")[0] == "cli" and top != "cli"]
        if module not in DIFFUSERS_USERS:
            out += [f"{module} imports {n}" for n in imports(source, module) if n.split(".")[0] == "diffusers"]
    return sorted(out)


def package_files() -> dict[str, str]:
    return {module_name(p): p.read_text() for p in PACKAGE.rglob("*.py")}


def test_the_package_keeps_the_import_rules() -> None:
    files = package_files()
    assert {"transformer", "pipeline", "stage.bench", "serve.worker", "engines.bundled"} <= set(files)
    assert violations(files) == []


@pytest.mark.parametrize(("module", "line", "broken"), [
    ("pipeline", "from openseedance.train.data import hold_last", "pipeline (generation) imports train.data"),
    ("engines.bundled", "from openseedance.stage import render", "engines.bundled (generation) imports stage.render"),
    ("conditioning", "import openseedance.stage.scene", "conditioning (generation) imports stage.scene"),
    ("stage.bench", "from openseedance.pipeline import Pipeline", "stage.bench (the Stage) imports pipeline"),
    ("serve.worker", "from ..train import generator", "serve.worker (the server) imports train.generator"),
    ("transformer", "import numpy as np", "transformer (a model file) imports numpy"),
    ("transformer", "from openseedance.request import role_id",
     "transformer (a model file) imports openseedance.request"),
    ("media", "from openseedance.cli import main", "media imports the CLI"),
    ("engines.bundled", "from diffusers import LTX2Pipeline", "engines.bundled imports diffusers"),
    ("serve.api", "import diffusers.pipelines", "serve.api imports diffusers.pipelines"),
])  # fmt: skip
def test_a_forbidden_import_is_caught(module: str, line: str, broken: str) -> None:
    """Each rule, broken once on purpose (inside a function too, where lazy imports hide)."""
    files = package_files()
    files[module] += f"\n\ndef _late() -> None:\n    {line}\n"
    assert broken in violations(files)
