"""Incremental detokenization must equal decoding the whole output at once, token by token."""

from __future__ import annotations

import random

import pytest
from bundled_model import requires_smollm2
from sloserve_runtime.engine.detokenizer import IncrementalDetokenizer

pytestmark = requires_smollm2


@pytest.fixture(scope="module")
def tokenizer():
    from sloserve_runtime.model.gguf_loader import load_gguf_tokenizer
    from sloserve_runtime.model.model_files import default_model_path

    return load_gguf_tokenizer(default_model_path())


def assert_matches_full_decode(tokenizer, ids: list[int]) -> None:
    detok = IncrementalDetokenizer(tokenizer)
    for n in range(1, len(ids) + 1):
        assert detok.update(ids[:n]) == tokenizer.decode(ids[:n]), f"differs after {n} of {ids}"


def test_multibyte_text_and_spaces_match_full_decode(tokenizer):
    text = "héllo wörld, 你好世界 🎉🎉 naïve café — “quoted” 日本語\n    indented  two  spaces\n\n"
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert_matches_full_decode(tokenizer, ids)


def test_random_token_streams_match_full_decode(tokenizer):
    """Random ids split characters across tokens and hit special tokens: the hard cases for windows."""
    rng = random.Random(7)
    for _ in range(150):
        assert_matches_full_decode(tokenizer, [rng.randrange(tokenizer.vocab_size) for _ in range(rng.randrange(1, 40))])


def test_incomplete_character_is_held_as_pending_text(tokenizer):
    ids = tokenizer.encode("🎉")
    assert len(ids) > 1  # byte-level BPE splits the emoji's four bytes
    detok = IncrementalDetokenizer(tokenizer)
    assert detok.update(ids[:1]).endswith("\ufffd")
    assert detok.update(ids) == "🎉"


def test_repeating_the_same_ids_adds_nothing(tokenizer):
    ids = tokenizer.encode("stop here")
    detok = IncrementalDetokenizer(tokenizer)
    detok.update(ids)
    assert detok.update(ids) == "stop here"
