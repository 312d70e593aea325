"""Per-request state inside the engine: tokens, KV blocks, progress, timing and detokenization."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch

from sloserve_runtime.engine.detokenizer import IncrementalDetokenizer
from sloserve_runtime.engine.sampling_params import SamplingParams


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    arrival_time: float
    output_token_ids: list[int] = field(default_factory=list)
    block_ids: list[int] = field(default_factory=list)
    num_computed: int = 0  # tokens whose K/V are in the cache
    num_cached_prompt: int = 0  # prompt tokens served by the prefix cache at admission
    num_registered_blocks: int = 0  # leading full blocks already registered in the prefix cache
    block_hashes: list[int] = field(default_factory=list)
    status: Status = Status.WAITING
    finish_reason: str | None = None
    scheduled_once: bool = False
    last_token_time: float | None = None
    generator: torch.Generator | None = None
    # detokenization: text already emitted, and how far into the decoded text that is
    emitted_text_len: int = 0
    detokenizer: IncrementalDetokenizer | None = None  # created by the engine at the first output token

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    def token_slice(self, start: int, end: int) -> list[int]:
        prompt_len = len(self.prompt_token_ids)
        if end <= prompt_len:
            return self.prompt_token_ids[start:end]
        return (self.prompt_token_ids + self.output_token_ids)[start:end]

    def all_token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids
