"""Read a llama.cpp GGUF file into Hugging Face-named float tensors plus a tokenizer.

Quantized tensors are dequantized with gguf.quants (the engine computes in bf16/fp32). llama.cpp's converter
permutes the rows of the Q and K projections for its interleaved RoPE; we undo that so the weights fit the
standard (rotate-half) Llama forward and match transformers exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from sloserve_runtime.model.model_args import ModelArgs
from sloserve_runtime.model.tokenizer import Tokenizer

_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


def read_metadata(reader: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        meta[key] = field.contents()
    return meta


def unpermute_rope_rows(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of llama.cpp's convert permute: rows were (head, half, pair) -> back to (head, pair, half)."""
    rows = weight.shape[0]
    return (weight.reshape(n_head, rows // n_head // 2, 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def args_from_metadata(meta: dict[str, Any], has_output: bool) -> ModelArgs:
    arch = str(meta.get("general.architecture", "llama"))
    if arch not in ("llama", "qwen2"):
        raise ValueError(f"unsupported GGUF architecture {arch!r} (llama and qwen2 are)")
    hidden = int(meta[f"{arch}.embedding_length"])
    heads = int(meta[f"{arch}.attention.head_count"])
    rope_scaling = None
    if meta.get(f"{arch}.rope.scaling.type") == "linear":
        rope_scaling = {"rope_type": "linear", "factor": float(meta[f"{arch}.rope.scaling.factor"])}
    eos = meta.get("tokenizer.ggml.eos_token_id")
    return ModelArgs(
        vocab_size=len(meta["tokenizer.ggml.tokens"]),
        hidden_size=hidden,
        intermediate_size=int(meta[f"{arch}.feed_forward_length"]),
        num_layers=int(meta[f"{arch}.block_count"]),
        num_heads=heads,
        num_kv_heads=int(meta.get(f"{arch}.attention.head_count_kv", heads)),
        head_dim=int(meta.get(f"{arch}.attention.key_length", hidden // heads)),
        rms_norm_eps=float(meta.get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(meta.get(f"{arch}.rope.freq_base", 10000.0)),
        rope_scaling=rope_scaling,
        max_position_embeddings=int(meta.get(f"{arch}.context_length", 8192)),
        tie_word_embeddings=not has_output,
        attention_bias=arch == "qwen2",
        bos_token_id=meta.get("tokenizer.ggml.bos_token_id"),
        eos_token_ids=[int(eos)] if eos is not None else [],
        architecture=arch,
    )


def load_gguf(path: Path) -> tuple[ModelArgs, dict[str, torch.Tensor], Tokenizer]:
    import gguf  # heavy-ish import kept local

    reader = gguf.GGUFReader(str(path))
    meta = read_metadata(reader)
    names = {t.name for t in reader.tensors}
    args = args_from_metadata(meta, has_output="output.weight" in names)
    # llama.cpp's Llama converter permutes Q/K; its Qwen2 converter does not.
    permuted = args.architecture == "llama"
    state: dict[str, torch.Tensor] = {}
    for tensor in reader.tensors:
        shape = tuple(int(d) for d in reversed(tensor.shape))
        array = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(shape).astype(np.float32)
        name = tensor.name
        if name in _GLOBAL_NAMES:
            hf_name = _GLOBAL_NAMES[name]
        else:
            _, layer, rest = name.split(".", 2)
            if rest not in _LAYER_NAMES:
                continue  # e.g. rope_freqs: recomputed from metadata
            hf_name = f"model.layers.{layer}.{_LAYER_NAMES[rest]}"
            if permuted and rest.startswith("attn_q."):
                array = unpermute_rope_rows(array, args.num_heads)
            elif permuted and rest.startswith("attn_k."):
                array = unpermute_rope_rows(array, args.num_kv_heads)
        state[hf_name] = torch.from_numpy(np.ascontiguousarray(array))
    tokenizer = Tokenizer.from_gguf_metadata(meta)
    if not args.eos_token_ids:
        args.eos_token_ids = sorted(tokenizer.eos_token_ids)
    return args, state, tokenizer


def load_gguf_tokenizer(path: Path) -> Tokenizer:
    """Only the tokenizer (metadata read; no tensor is dequantized)."""
    import gguf

    return Tokenizer.from_gguf_metadata(read_metadata(gguf.GGUFReader(str(path))))
