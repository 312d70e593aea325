"""Per-request sampling parameters (OpenAI fields plus vLLM's ignore_eos and min_tokens)."""

from __future__ import annotations

from dataclasses import dataclass, field

# What torch.Generator.manual_seed takes; a larger seed would fail inside the engine, after admission.
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1


class InvalidParameter(ValueError):
    """A request parameter out of range; `param` names it for the OpenAI-style error body."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = -1  # -1 or 0: no top-k
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    logit_bias: dict[int, float] = field(default_factory=dict)
    ignore_eos: bool = False
    min_tokens: int = 0

    def validate(self) -> SamplingParams:
        if self.max_tokens <= 0:
            raise InvalidParameter("max_tokens", f"max_tokens must be at least 1, got {self.max_tokens}")
        if not 0.0 <= self.temperature <= 2.0:
            raise InvalidParameter("temperature", f"temperature must be in [0, 2], got {self.temperature}")
        if not 0.0 <= self.top_p <= 1.0:  # 0 keeps only the most likely token (OpenAI takes 0 too)
            raise InvalidParameter("top_p", f"top_p must be in [0, 1], got {self.top_p}")
        if self.top_k < -1:
            raise InvalidParameter("top_k", f"top_k must be -1 (off) or positive, got {self.top_k}")
        if not 0 <= self.min_tokens <= self.max_tokens:
            raise InvalidParameter("min_tokens", "min_tokens must be between 0 and max_tokens")
        if self.seed is not None and not SEED_MIN <= self.seed <= SEED_MAX:
            raise InvalidParameter("seed", f"seed must be between {SEED_MIN} and {SEED_MAX}, got {self.seed}")
        if len(self.stop) > 16:
            raise InvalidParameter("stop", "at most 16 stop sequences")
        for token, bias in self.logit_bias.items():
            if not -100 <= bias <= 100:
                raise InvalidParameter("logit_bias", f"logit_bias for token {token} must be in [-100, 100]")
        return self

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0
