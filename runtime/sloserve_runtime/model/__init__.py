"""Llama-family model code: config, weight loaders (GGUF, Hugging Face directory) and the paged forward."""

from sloserve_runtime.model.loader import LoadedModel, load_model
from sloserve_runtime.model.model_args import ModelArgs

__all__ = ["LoadedModel", "ModelArgs", "load_model"]
