"""A tiny, randomly initialised LTX-2 folder in diffusers layout, with configs that fit each other
(a video VAE that codes 1 + 8k frames at 32x compression, a mel audio VAE at 16 kHz that compresses
4x in time and mel, a vocoder to 24 kHz whose upsampling matches the mel hop, a 2-layer Gemma 3, a
tokenizer built in memory): what tests and benchmarks run the LTX-2 engine on, in well under a second per clip on a
CPU. Needs the ltx2 extra; nothing is downloaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

TEXT_WIDTH = 16  # Gemma's hidden size
TEXT_LAYERS = 2


def tokenizer() -> Any:
    """A character-level Gemma tokenizer built in memory (printable ASCII)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GemmaTokenizerFast

    vocab = ["<pad>", "<eos>", "<bos>", "<unk>"] + [chr(c) for c in range(32, 127)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    return GemmaTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                              unk_token="<unk>", model_max_length=128)  # fmt: skip


def save_untrained(path: str | os.PathLike, seed: int = 0, layers: int = 2,
                   settings: dict[str, Any] | None = None) -> Path:  # fmt: skip
    """Build and save the tiny folder (`layers` transformer blocks; `settings`: its openseedance.json)."""
    from diffusers import (
        AutoencoderKLLTX2Audio,
        AutoencoderKLLTX2Video,
        FlowMatchEulerDiscreteScheduler,
        LTX2Pipeline,
        LTX2VideoTransformer3DModel,  # fmt: skip
    )
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    torch.manual_seed(seed)
    h = TEXT_WIDTH
    gemma = Gemma3Config(
        text_config={"vocab_size": 99, "hidden_size": h, "intermediate_size": 32, "num_hidden_layers": TEXT_LAYERS,
                     "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8, "sliding_window": 16,
                     "max_position_embeddings": 256},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 28, "patch_size": 14},
        mm_tokens_per_image=4, boi_token_index=1, eoi_token_index=1, image_token_index=3)  # fmt: skip
    connectors = LTX2TextConnectors(
        caption_channels=h, text_proj_in_factor=TEXT_LAYERS + 1, video_connector_num_attention_heads=2,
        video_connector_attention_head_dim=8, video_connector_num_layers=1,
        video_connector_num_learnable_registers=None, audio_connector_num_attention_heads=2,
        audio_connector_attention_head_dim=8, audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=None)  # fmt: skip
    vae = AutoencoderKLLTX2Video(
        latent_channels=8, block_out_channels=(8, 16, 32, 32), decoder_block_out_channels=(8, 16, 32),
        layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1),
        decoder_inject_noise=(False, False, False, False), decoder_causal=False,
        decoder_spatial_padding_mode="zeros", spatial_compression_ratio=32, temporal_compression_ratio=8)  # fmt: skip
    # 16 mel bins, 2 latent channels: 2 x 16 / 4 = 8 channels per audio token (the latent statistics' size)
    audio_vae = AutoencoderKLLTX2Audio(base_channels=8, ch_mult=(1, 2, 4), num_res_blocks=1, latent_channels=2,
                                       mel_bins=16, sample_rate=16000, mel_hop_length=160)  # fmt: skip
    # like LTX-2's: 16 kHz mel frames (hop 160) in, 24 kHz out, 4 * 5 * 4 * 3 = 240 samples per mel frame
    vocoder = LTX2Vocoder(in_channels=2 * 16, hidden_channels=16, upsample_kernel_sizes=[8, 10, 8, 6],
                          upsample_factors=[4, 5, 4, 3], resnet_kernel_sizes=[3], resnet_dilations=[[1]],
                          output_sampling_rate=24000)  # fmt: skip
    transformer = LTX2VideoTransformer3DModel(
        in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
        audio_in_channels=8, audio_out_channels=8, audio_num_attention_heads=2, audio_attention_head_dim=4,
        audio_cross_attention_dim=8, num_layers=layers, caption_channels=h, use_prompt_adaln_single=False)  # fmt: skip
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05,
                                                base_image_seq_len=1024, max_image_seq_len=4096,
                                                shift_terminal=0.1)  # fmt: skip
    pipe = LTX2Pipeline(scheduler=scheduler, vae=vae, audio_vae=audio_vae,
                        text_encoder=Gemma3ForConditionalGeneration(gemma), tokenizer=tokenizer(),
                        connectors=connectors, transformer=transformer, vocoder=vocoder)  # fmt: skip
    folder = Path(path)
    pipe.save_pretrained(folder, safe_serialization=True)
    serving = {"width": 64, "height": 64, "fps": 8.0, "steps": 2, "min_duration": 1.0, **(settings or {})}
    (folder / "openseedance.json").write_text(json.dumps(serving, indent=2) + "\n")
    return folder
