"""A small stand-in for sloserve_runtime.engine.AsyncEngine, used only while the real engine is not in place
and for lifecycle tests that need to hold the engine in a known state (it keeps the same interface)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sloserve_runtime.config import EngineConfig
from sloserve_runtime.observer import EngineObserver
from sloserve_runtime.sampling import SamplingParams


@dataclass
class RequestOutput:
    request_id: str
    new_token_ids: list[int]
    new_text: str
    finished: bool
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int


class ByteTokenizer:
    """Bytes as tokens; id 0 is EOS."""

    eos_token_ids = {0}
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode())

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i).decode(errors="replace")

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        text = "".join(f"<|{m['role']}|>{m['content']}\n" for m in messages)
        return text + ("<|assistant|>" if add_generation_prompt else "")


class FakeEngine:
    """Emits one letter per step for every running request; counts KV blocks like a paged cache would."""

    def __init__(self, config: EngineConfig, observer: EngineObserver | None = None,
                 step_seconds: float = 0.005) -> None:
        self.model_name = config.served_model_name or "fake-model"
        self.max_model_len = config.max_model_len
        self.tokenizer = ByteTokenizer()
        self.observer = observer or EngineObserver()
        self.block_size = config.block_size
        self.num_total_blocks = config.kv_cache_blocks or 1024
        self.max_batch_size = config.max_batch_size
        self.step_seconds = step_seconds
        self._running: dict[str, int] = {}  # request id -> blocks held
        self._waiting: list[str] = []

    @classmethod
    def from_config(cls, config: EngineConfig, observer: EngineObserver | None = None) -> FakeEngine:
        return cls(config, observer)

    num_running = property(lambda self: len(self._running))
    num_waiting = property(lambda self: len(self._waiting))
    num_free_blocks = property(lambda self: self.num_total_blocks - sum(self._running.values()))
    kv_cache_usage = property(lambda self: 1 - self.num_free_blocks / self.num_total_blocks)

    async def start(self) -> None:
        pass

    async def warmup(self) -> None:
        await asyncio.sleep(0)

    async def shutdown(self) -> None:
        pass

    def abort(self, request_id: str) -> None:
        self._running.pop(request_id, None)
        if request_id in self._waiting:
            self._waiting.remove(request_id)

    async def generate(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams,
                       arrival_time: float | None = None) -> AsyncIterator[RequestOutput]:
        arrival = arrival_time or time.monotonic()
        self._waiting.append(request_id)
        try:
            for _ in range(100_000):
                if len(self._running) < self.max_batch_size and self._waiting[0] == request_id:
                    break
                await asyncio.sleep(self.step_seconds)
            self._waiting.remove(request_id)
            self.observer.on_scheduled(request_id, time.monotonic() - arrival)
            generated: list[int] = []
            last = time.monotonic()
            for index in range(params.max_tokens):
                total = len(prompt_token_ids) + index + 1
                self._running[request_id] = math.ceil(total / self.block_size)
                await asyncio.sleep(self.step_seconds)
                token = 97 + (sum(prompt_token_ids) + index) % 26
                generated.append(token)
                now = time.monotonic()
                if index == 0:
                    self.observer.on_first_token(request_id, now - arrival)
                else:
                    self.observer.on_token_gap(request_id, now - last)
                last = now
                done = index + 1 == params.max_tokens
                self.observer.on_step(self.num_running, self.num_waiting, self.kv_cache_usage)
                if done:
                    self.observer.on_finished(request_id, "length", now - arrival, len(prompt_token_ids),
                                              len(generated))
                yield RequestOutput(request_id, [token], chr(token), done, "length" if done else None,
                                    len(prompt_token_ids), len(generated), 0)
        finally:
            self.abort(request_id)
