"""Load a Hugging Face style model directory: config.json, *.safetensors, tokenizer.json."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from sloserve_runtime.model.model_args import ModelArgs
from sloserve_runtime.model.tokenizer import Tokenizer


def load_hf_dir(path: Path) -> tuple[ModelArgs, dict[str, torch.Tensor], Tokenizer]:
    cfg = json.loads((path / "config.json").read_text())
    args = ModelArgs.from_hf_config(cfg)
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{path} has no *.safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(str(file)))
    if not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{path} has no tokenizer.json")
    tok_cfg_path = path / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_path.read_text()) if tok_cfg_path.is_file() else {}
    gen_path = path / "generation_config.json"
    eos_ids = set(args.eos_token_ids)
    if gen_path.is_file():
        gen_eos = json.loads(gen_path.read_text()).get("eos_token_id")
        if gen_eos is not None:
            eos_ids |= set(gen_eos if isinstance(gen_eos, list) else [gen_eos])
    tokenizer = Tokenizer.from_hf_files(str(path / "tokenizer.json"), tok_cfg, eos_ids, args.bos_token_id)
    args.eos_token_ids = sorted(tokenizer.eos_token_ids)
    return args, state, tokenizer
