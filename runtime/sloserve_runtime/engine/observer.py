"""Engine events the server turns into Prometheus metrics (metrics.py subclasses EngineObserver).

The engine calls these from its loop; they must be cheap. The base class does nothing, so the engine can
run without metrics in tests and benchmarks.
"""

from __future__ import annotations


class EngineObserver:
    def on_scheduled(self, request_id: str, queue_seconds: float) -> None:
        """A request got its first slot in the running batch after waiting `queue_seconds`."""

    def on_first_token(self, request_id: str, ttft_seconds: float) -> None:
        """The first output token of a request was produced (arrival to token)."""

    def on_token_gap(self, request_id: str, gap_seconds: float, tokens: int = 1) -> None:
        """Output tokens after the first; `gap_seconds` since the previous token(s) of this request."""

    def on_finished(self, request_id: str, reason: str, e2e_seconds: float,
                    prompt_tokens: int, generation_tokens: int) -> None:
        """A request ended: reason is stop, length or abort."""

    def on_prefix_cache(self, queried_tokens: int, hit_tokens: int) -> None:
        """A prompt was looked up in the prefix cache (vLLM counts tokens, so do we)."""

    def on_preemption(self, request_id: str) -> None:
        """A running sequence lost its KV blocks and will be recomputed."""

    def on_step(self, running: int, waiting: int, kv_usage: float) -> None:
        """After every engine step: batch sizes and KV-cache usage (0..1)."""

    def on_speculation(self, drafts: int, draft_tokens: int, accepted_tokens: int) -> None:
        """Speculative decoding in one step (vLLM's meanings: drafts = sequences that proposed)."""
