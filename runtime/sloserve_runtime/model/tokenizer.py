"""Tokenizer facade over the `tokenizers` library, built from a GGUF's metadata or a tokenizer.json.

The engine and server only need encode/decode, the EOS ids and the chat template; this keeps them
independent of where the vocabulary came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from sloserve_runtime.model.chat_template import ChatTemplate

# GGUF token types (llama.cpp's vocab): 3 = control, 4 = user-defined; both are never split by BPE.
_GGUF_SPECIAL_TYPES = (3, 4)

# Pre-tokenizer regexes by GGUF `tokenizer.ggml.pre`; SmolLM/StarCoder split every digit on its own.
_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


class Tokenizer:
    """encode(text) -> ids, decode(ids) -> text, chat template, EOS ids."""

    def __init__(self, backend: HFTokenizer, *, eos_token_ids: set[int], bos_token_id: int | None,
                 add_bos: bool, chat_template: str | None, bos_token: str = "", eos_token: str = "") -> None:
        self.backend = backend
        self.eos_token_ids = set(eos_token_ids)
        self.bos_token_id = bos_token_id
        self.add_bos = add_bos
        self.vocab_size = backend.get_vocab_size(with_added_tokens=True)
        self.chat_template = ChatTemplate(chat_template, bos_token=bos_token, eos_token=eos_token)

    def encode(self, text: str) -> list[int]:
        ids = self.backend.encode(text, add_special_tokens=False).ids
        if self.add_bos and self.bos_token_id is not None and (not ids or ids[0] != self.bos_token_id):
            ids = [self.bos_token_id, *ids]
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> str:
        return self.chat_template.render(messages, add_generation_prompt=add_generation_prompt)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    @classmethod
    def from_gguf_metadata(cls, meta: dict[str, Any]) -> Tokenizer:
        """Byte-level BPE (tokenizer.ggml.model == gpt2) from the vocabulary and merges in a GGUF."""
        kind = meta.get("tokenizer.ggml.model")
        if kind != "gpt2":
            raise ValueError(f"unsupported GGUF tokenizer model {kind!r} (only byte-level BPE 'gpt2')")
        tokens: list[str] = list(meta["tokenizer.ggml.tokens"])
        types: list[int] = list(meta.get("tokenizer.ggml.token_type", [1] * len(tokens)))
        merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
        vocab = {tok: i for i, tok in enumerate(tokens)}
        backend = HFTokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
        backend.pre_tokenizer = _pre_tokenizer(str(meta.get("tokenizer.ggml.pre", "default")))
        backend.decoder = decoders.ByteLevel()
        special = [AddedToken(tok, special=True, normalized=False)
                   for tok, kind_ in zip(tokens, types, strict=True) if kind_ in _GGUF_SPECIAL_TYPES]
        backend.add_special_tokens(special)
        bos = meta.get("tokenizer.ggml.bos_token_id")
        eos = meta.get("tokenizer.ggml.eos_token_id")
        eos_ids = {int(eos)} if eos is not None else set()
        if meta.get("tokenizer.ggml.eot_token_id") is not None:
            eos_ids.add(int(meta["tokenizer.ggml.eot_token_id"]))
        return cls(
            backend,
            eos_token_ids=eos_ids,
            bos_token_id=int(bos) if bos is not None else None,
            add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", False)),
            chat_template=meta.get("tokenizer.chat_template"),
            bos_token=tokens[int(bos)] if bos is not None else "",
            eos_token=tokens[int(eos)] if eos is not None else "",
        )

    @classmethod
    def from_hf_files(cls, tokenizer_json: str, tokenizer_config: dict[str, Any],
                      eos_token_ids: set[int], bos_token_id: int | None) -> Tokenizer:
        """tokenizer.json (+ tokenizer_config.json for the chat template and BOS policy)."""
        backend = HFTokenizer.from_file(tokenizer_json)

        def token_text(value: Any) -> str:
            return value.get("content", "") if isinstance(value, dict) else (value or "")

        bos_token = token_text(tokenizer_config.get("bos_token"))
        eos_token = token_text(tokenizer_config.get("eos_token"))
        if eos_token and backend.token_to_id(eos_token) is not None:
            eos_token_ids = eos_token_ids | {backend.token_to_id(eos_token)}
        if bos_token_id is None and bos_token:
            bos_token_id = backend.token_to_id(bos_token)
        add_bos = bool(tokenizer_config.get("add_bos_token", False))
        return cls(backend, eos_token_ids=eos_token_ids, bos_token_id=bos_token_id, add_bos=add_bos,
                   chat_template=tokenizer_config.get("chat_template"), bos_token=bos_token,
                   eos_token=eos_token)


def _pre_tokenizer(pre: str) -> pre_tokenizers.PreTokenizer:
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    if pre in ("smollm", "starcoder", "refact"):
        return pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ])
    if pre in ("llama3", "llama-bpe", "qwen2", "smaug-bpe"):
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated"),
            byte_level,
        ])
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(_GPT2_SPLIT), behavior="isolated"), byte_level])
