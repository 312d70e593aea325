"""Test helpers: a tiny random-weight Llama in Hugging Face layout with SmolLM2's real tokenizer.

Fast enough for engine-logic tests (milliseconds per step) while text still round-trips through the same
tokenizer the bundled model uses. Never use it for benchmarks.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from sloserve_runtime.model.model_args import ModelArgs
from sloserve_runtime.model.model_files import default_model_path


def tiny_args(vocab_size: int, *, attention_bias: bool = False) -> ModelArgs:
    return ModelArgs(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
        num_kv_heads=2, head_dim=16, rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=2048,
        tie_word_embeddings=True, attention_bias=attention_bias, bos_token_id=1, eos_token_ids=[2],
        architecture="qwen2" if attention_bias else "llama",
    )


def random_state(args: ModelArgs, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 0.08) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    h, d = args.hidden_size, args.head_dim
    state = {"model.embed_tokens.weight": rand(args.vocab_size, h, scale=0.1),
             "model.norm.weight": 1 + rand(h, scale=0.1)}
    for i in range(args.num_layers):
        p = f"model.layers.{i}."
        state[p + "input_layernorm.weight"] = 1 + rand(h, scale=0.1)
        state[p + "post_attention_layernorm.weight"] = 1 + rand(h, scale=0.1)
        state[p + "self_attn.q_proj.weight"] = rand(args.num_heads * d, h)
        state[p + "self_attn.k_proj.weight"] = rand(args.num_kv_heads * d, h)
        state[p + "self_attn.v_proj.weight"] = rand(args.num_kv_heads * d, h)
        state[p + "self_attn.o_proj.weight"] = rand(h, args.num_heads * d)
        state[p + "mlp.gate_proj.weight"] = rand(args.intermediate_size, h)
        state[p + "mlp.up_proj.weight"] = rand(args.intermediate_size, h)
        state[p + "mlp.down_proj.weight"] = rand(h, args.intermediate_size)
        if args.attention_bias:
            for n, rows in (("q", args.num_heads * d), ("k", args.num_kv_heads * d), ("v", args.num_kv_heads * d)):
                state[p + f"self_attn.{n}_proj.bias"] = rand(rows, scale=0.05)
    return state


def make_tiny_model(directory: str | Path, *, seed: int = 0, attention_bias: bool = False) -> Path:
    """Write config.json, model.safetensors, tokenizer.json and tokenizer_config.json; return the dir."""
    from sloserve_runtime.model.gguf_loader import load_gguf_tokenizer

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = load_gguf_tokenizer(default_model_path())
    args = tiny_args(tokenizer.vocab_size, attention_bias=attention_bias)
    (out / "config.json").write_text(json.dumps(args.to_hf_config(), indent=2))
    save_file({k: v.contiguous() for k, v in random_state(args, seed).items()}, str(out / "model.safetensors"))
    tokenizer.backend.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "add_bos_token": False,
        "chat_template": tokenizer.chat_template.source,
    }, indent=2))
    return out
