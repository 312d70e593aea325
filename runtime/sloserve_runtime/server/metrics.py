"""The runtime's Prometheus metrics: an EngineObserver that records engine events under vLLM-style names.

Every metric carries the label model_name. The SLO thresholds (--slo-ttft-ms, --slo-itl-ms) are inserted
as exact bucket boundaries, so "fraction of requests within budget" is read from one bucket, not
interpolated. Each instance owns its own CollectorRegistry so several runtimes (or tests) can live in one
process without clashing.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from sloserve_runtime.engine.observer import EngineObserver

PREFIX = "sloserve:"

# vLLM v1's boundaries, plus a few finer ones where CPU and GPU latencies actually fall.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75,
                1.0, 1.5, 2.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.06, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4,
               0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
REQUEST_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0,
                           40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
REFUSAL_REASONS = ("slo", "queue_full")
TOKEN_COUNT_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000)
# Prompt lengths at half-octave steps (1, 2, 3, 4, 6, 8, 11, 16, ... 131072): the autoscaler reads the
# prompts' spread (E[L^2] / E[L]^2, which sets the attention cost) from this histogram, and 1-2-5 steps
# overstate it by up to a third on real traces where half-octaves stay within a tenth (docs/autoscaling.md).
PROMPT_LENGTH_BUCKETS = tuple(sorted({round(2 ** (k / 2)) for k in range(35)}))


def buckets_with(base: Iterable[float], *thresholds_ms: float | None) -> list[float]:
    """`base` plus each SLO threshold (milliseconds) as an exact boundary in seconds, sorted, no duplicates."""
    edges = set(base)
    for threshold in thresholds_ms:
        if threshold is not None and threshold > 0:
            edges.add(threshold / 1000.0)
    return sorted(edges)


class RuntimeMetrics(EngineObserver):
    """Engine events -> Prometheus series; `render()` gives the /metrics body."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, model_name: str = "", slo_ttft_ms: float | None = None,
                 slo_itl_ms: float | None = None) -> None:
        self.registry = CollectorRegistry()
        self.ttft_buckets = buckets_with(TTFT_BUCKETS, slo_ttft_ms)
        self.itl_buckets = buckets_with(ITL_BUCKETS, slo_itl_ms)
        labels = ["model_name"]
        reg = self.registry
        self._ttft = Histogram(PREFIX + "time_to_first_token_seconds",
                               "Time from request arrival to its first output token.", labels,
                               buckets=self.ttft_buckets, registry=reg)
        self._itl = Histogram(PREFIX + "inter_token_latency_seconds",
                              "Time between consecutive output tokens of a request (per token).", labels,
                              buckets=self.itl_buckets, registry=reg)
        self._e2e = Histogram(PREFIX + "e2e_request_latency_seconds",
                              "Time from request arrival to its last output token.", labels,
                              buckets=REQUEST_LATENCY_BUCKETS, registry=reg)
        self._queue = Histogram(PREFIX + "request_queue_time_seconds",
                                "Time a request waited before it first joined the running batch.", labels,
                                buckets=REQUEST_LATENCY_BUCKETS, registry=reg)
        self._prompt_len = Histogram(PREFIX + "request_prompt_tokens", "Prompt length per request.", labels,
                                     buckets=PROMPT_LENGTH_BUCKETS, registry=reg)
        self._gen_len = Histogram(PREFIX + "request_generation_tokens", "Output length per request.", labels,
                                  buckets=TOKEN_COUNT_BUCKETS, registry=reg)
        self._running = Gauge(PREFIX + "num_requests_running", "Sequences in the running batch.", labels,
                              registry=reg)
        self._waiting = Gauge(PREFIX + "num_requests_waiting", "Requests waiting for a batch slot.", labels,
                              registry=reg)
        self._kv_usage = Gauge(PREFIX + "kv_cache_usage_perc", "Fraction of KV-cache blocks in use (0..1).",
                               labels, registry=reg)
        self._weight_bytes = Gauge(PREFIX + "model_weight_bytes",
                                   "Resident size of the model weights (after quantization).", labels,
                                   registry=reg)
        self._prompt_tokens = Counter(PREFIX + "prompt_tokens", "Prompt tokens of finished requests.",
                                      labels, registry=reg)
        self._gen_tokens = Counter(PREFIX + "generation_tokens", "Generated tokens of finished requests.",
                                   labels, registry=reg)
        self._prefix_queries = Counter(PREFIX + "prefix_cache_queries",
                                       "Prompt tokens looked up in the prefix cache.", labels, registry=reg)
        self._prefix_hits = Counter(PREFIX + "prefix_cache_hits", "Prompt tokens found in the prefix cache.",
                                    labels, registry=reg)
        self._preemptions = Counter(PREFIX + "num_preemptions", "Sequences preempted (KV blocks reclaimed).",
                                    labels, registry=reg)
        self._success = Counter(PREFIX + "request_success", "Finished requests by finish reason.",
                                labels + ["finished_reason"], registry=reg)
        self._refused = Counter(PREFIX + "request_refused",
                                "Requests refused with 429 before they ran: reason slo (expected time to "
                                "first token over the admission limit) or queue_full (--max-queue).",
                                labels + ["reason"], registry=reg)
        self._drafts = Counter(PREFIX + "spec_decode_num_drafts", "Sequences that proposed draft tokens.",
                               labels, registry=reg)
        self._draft_tokens = Counter(PREFIX + "spec_decode_num_draft_tokens", "Draft tokens proposed.",
                                     labels, registry=reg)
        self._accepted_tokens = Counter(PREFIX + "spec_decode_num_accepted_tokens",
                                        "Draft tokens accepted by the target model.", labels, registry=reg)
        self.model_name = ""
        self.bind(model_name)

    def bind(self, model_name: str) -> None:
        """Set the model_name label (known only once the engine has loaded) and create every child series,
        so /metrics shows all of them at zero before the first request."""
        for collector in self._labelled():
            collector.clear()
        self.model_name = model_name
        m = model_name
        self.ttft = self._ttft.labels(m)
        self.itl = self._itl.labels(m)
        self.e2e = self._e2e.labels(m)
        self.queue = self._queue.labels(m)
        self.prompt_len = self._prompt_len.labels(m)
        self.gen_len = self._gen_len.labels(m)
        self.running = self._running.labels(m)
        self.waiting = self._waiting.labels(m)
        self.kv_usage = self._kv_usage.labels(m)
        self.weight_bytes = self._weight_bytes.labels(m)
        self.prompt_tokens = self._prompt_tokens.labels(m)
        self.gen_tokens = self._gen_tokens.labels(m)
        self.prefix_queries = self._prefix_queries.labels(m)
        self.prefix_hits = self._prefix_hits.labels(m)
        self.preemptions = self._preemptions.labels(m)
        self.drafts = self._drafts.labels(m)
        self.draft_tokens = self._draft_tokens.labels(m)
        self.accepted_tokens = self._accepted_tokens.labels(m)
        for reason in ("stop", "length", "abort"):
            self._success.labels(m, reason)
        for reason in REFUSAL_REASONS:
            self._refused.labels(m, reason)

    def _labelled(self) -> list:
        return [self._ttft, self._itl, self._e2e, self._queue, self._prompt_len, self._gen_len, self._running,
                self._waiting, self._kv_usage, self._weight_bytes, self._prompt_tokens, self._gen_tokens,
                self._prefix_queries, self._prefix_hits, self._preemptions, self._success, self._refused, self._drafts,
                self._draft_tokens, self._accepted_tokens]

    # EngineObserver callbacks (called from the engine loop; keep them cheap).

    def on_scheduled(self, request_id: str, queue_seconds: float) -> None:
        self.queue.observe(max(queue_seconds, 0.0))

    def on_first_token(self, request_id: str, ttft_seconds: float) -> None:
        self.ttft.observe(max(ttft_seconds, 0.0))

    def on_token_gap(self, request_id: str, gap_seconds: float, tokens: int = 1) -> None:
        # Several tokens in one step (speculation): each token is charged an equal share of the gap, so the
        # histogram stays a per-token latency distribution, which is what an ITL budget is about.
        tokens = max(tokens, 1)
        per_token = max(gap_seconds, 0.0) / tokens
        for _ in range(tokens):
            self.itl.observe(per_token)

    def on_finished(self, request_id: str, reason: str, e2e_seconds: float,
                    prompt_tokens: int, generation_tokens: int) -> None:
        self.e2e.observe(max(e2e_seconds, 0.0))
        self.prompt_len.observe(prompt_tokens)
        self.gen_len.observe(generation_tokens)
        self.prompt_tokens.inc(prompt_tokens)
        self.gen_tokens.inc(generation_tokens)
        self._success.labels(self.model_name, reason).inc()

    def on_prefix_cache(self, queried_tokens: int, hit_tokens: int) -> None:
        self.prefix_queries.inc(queried_tokens)
        self.prefix_hits.inc(hit_tokens)

    def on_preemption(self, request_id: str) -> None:
        self.preemptions.inc()

    def on_step(self, running: int, waiting: int, kv_usage: float) -> None:
        self.running.set(running)
        self.waiting.set(waiting)
        self.kv_usage.set(kv_usage)

    def on_speculation(self, drafts: int, draft_tokens: int, accepted_tokens: int) -> None:
        self.drafts.inc(drafts)
        self.draft_tokens.inc(draft_tokens)
        self.accepted_tokens.inc(accepted_tokens)

    def refused(self, reason: str) -> None:
        """A request answered 429 before it ran (one of REFUSAL_REASONS)."""
        self._refused.labels(self.model_name, reason).inc()

    def set_weight_bytes(self, size: int) -> None:
        self.weight_bytes.set(size)

    def render(self) -> bytes:
        return generate_latest(self.registry)
