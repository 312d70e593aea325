"""Incremental detokenization: each new token costs the decode of a few recent tokens, not of the whole output.

Decoding all output ids on every step is O(n) per token (O(n^2) per request). Instead the text of the tokens
before `read_offset` is kept, and each step decodes only the window ids[prefix_offset:]: the new text is the
part of that window beyond the decode of ids[prefix_offset:read_offset]. Decoding with the previous step's
tokens as context keeps word-boundary spaces right; while the window ends in an incomplete UTF-8 character
(U+FFFD) the offsets stay put, so the next token's bytes complete it.
"""

from __future__ import annotations

from typing import Protocol


class Decoder(Protocol):
    def decode(self, ids: list[int]) -> str: ...


class IncrementalDetokenizer:
    """Text of a growing list of token ids, equal to decoding the whole list at once."""

    def __init__(self, tokenizer: Decoder) -> None:
        self._tokenizer = tokenizer
        self._settled = ""  # text of ids[:read_offset], final
        self._pending = ""  # text of ids[read_offset:], may end in an incomplete character
        self._prefix_offset = 0
        self._read_offset = 0

    @property
    def text(self) -> str:
        """Decoded text of all ids given to the last update()."""
        return self._settled + self._pending

    def update(self, ids: list[int]) -> str:
        """Catch up with `ids` (the previous list plus appended tokens); returns the full text."""
        prefix_text = self._tokenizer.decode(ids[self._prefix_offset:self._read_offset])
        window_text = self._tokenizer.decode(ids[self._prefix_offset:])
        new_text = window_text[len(prefix_text):]
        if new_text.endswith("\ufffd"):
            self._pending = new_text
        else:
            self._settled += new_text
            self._pending = ""
            self._prefix_offset = self._read_offset
            self._read_offset = len(ids)
        return self.text
