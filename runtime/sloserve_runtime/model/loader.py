"""Pick the loader for a model path (GGUF file or Hugging Face directory) and build the paged model."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from sloserve_runtime.model.model_args import ModelArgs
from sloserve_runtime.model.tokenizer import Tokenizer


@dataclass
class LoadedModel:
    args: ModelArgs
    state: dict[str, torch.Tensor]  # Hugging Face parameter names, float32
    tokenizer: Tokenizer
    name: str


def load_model(path: Path) -> LoadedModel:
    if path.is_dir():
        from sloserve_runtime.model.hf_loader import load_hf_dir

        args, state, tokenizer = load_hf_dir(path)
        name = path.name
    else:
        from sloserve_runtime.model.gguf_loader import load_gguf

        args, state, tokenizer = load_gguf(path)
        # "SmolLM2-135M-Instruct.Q4_1.gguf" -> "SmolLM2-135M-Instruct": the quantization is not the model's name
        name = re.sub(r"[.-](?:[Ii]?[Qq]\d\w*|[Ff](?:16|32)|[Bb][Ff]16)$", "", path.name.removesuffix(".gguf"))
    return LoadedModel(args=args, state=state, tokenizer=tokenizer, name=name)
