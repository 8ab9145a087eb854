"""Parallelism from outside the model, on this CPU with 2 processes on gloo: FSDP2 training matches
single-process training, and a sharded checkpoint saved on 2 processes loads on 1."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from openseedance import parallel
from openseedance.train.config import CHECKPOINTING
from openseedance.transformer import AVTransformer, transformer_config

SRC = Path(__file__).resolve().parents[1] / "src" / "openseedance"


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(Path(__file__).with_name("distributed_checks.py")), str(out)]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def test_fsdp_matches_single_process(two_processes: Path) -> None:
    assert "fsdp_matches_single_process" in json.loads((two_processes / "ok.json").read_text())


def test_sharded_checkpoint_from_two_processes_loads_on_one(two_processes: Path) -> None:
    model = AVTransformer(transformer_config("debug"))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    extra = {"step": torch.tensor(0)}
    parallel.load_sharded(two_processes / "sharded", model, opt, extra=extra)
    expected = torch.load(two_processes / "expected.pt", weights_only=True)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, expected[name], atol=2e-4, rtol=1e-3, msg=name)
    assert int(extra["step"]) == 3 and opt.state_dict()["state"]  # optimiser moments came back too


def test_checkpointing_and_compile_flags_keep_names_and_values() -> None:
    torch.manual_seed(0)
    model = AVTransformer(transformer_config("debug"))
    names = list(model.state_dict())
    parallel.parallelize(model, activation_checkpointing="selective")
    assert list(model.state_dict()) == names
    with pytest.raises(ValueError, match="activation_checkpointing"):
        parallel.parallelize(model, activation_checkpointing="some")
    with pytest.raises(ValueError, match="torchrun"):
        parallel.parallelize(model, fsdp=True)
    assert parallel.CHECKPOINTING == CHECKPOINTING  # what the run config and its option accept


def test_model_files_never_import_distributed() -> None:
    for name in ("transformer.py", "layers.py", "video_vae.py", "audio_vae.py", "flow.py", "sampling.py"):
        tree = ast.parse((SRC / name).read_text())
        imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not [m for m in imported if m.startswith("torch.distributed")], name
