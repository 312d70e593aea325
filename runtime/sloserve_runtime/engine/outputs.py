"""What the engine core hands back per step. A module of its own so that the speculator (which produces
outputs inside the core's step) and the core need not import each other."""

from __future__ import annotations

from dataclasses import dataclass


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


class EngineError(RuntimeError):
    """The engine failed while running a request (the request is aborted)."""
