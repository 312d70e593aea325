"""Llama-family model code: config, weight loaders (GGUF, Hugging Face directory) and the paged forward."""

from .config import ModelArgs
from .loader import LoadedModel, load_model

__all__ = ["LoadedModel", "ModelArgs", "load_model"]
