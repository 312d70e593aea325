"""A stand-in for a runtime replica's /metrics: prometheus_client metrics with the runtime's names.

Tests record exactly the requests they want (so expected figures are known) and serve them over HTTP
from a private registry the way the bundled runtime does: always the text format 0.0.4. With
`negotiate=True` it answers the scraper's Accept header the way vLLM and SGLang do (prometheus_client's own
negotiation), which for a Prometheus 2.x scraper means OpenMetrics with the colons of the names escaped to
underscores. `prefix` picks the engine's names (sloserve, vllm).
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST, choose_encoder
from sloserve_runtime.server.metrics import PROMPT_LENGTH_BUCKETS

TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0)
E2E_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOKEN_BUCKETS = (16, 64, 256, 1024, 4096)


class SyntheticRuntime:
    """Runtime-named metrics on a private registry, served on 127.0.0.1 at a free port."""

    def __init__(self, model_name: str = "smollm2", prefix: str = "sloserve", negotiate: bool = False) -> None:
        self.model_name = model_name
        self.negotiate = negotiate
        self.registry = CollectorRegistry()
        labels = ["model_name"]

        def histogram(name: str, buckets: tuple[float, ...]) -> Histogram:
            metric = Histogram(name, name, labels, buckets=buckets, registry=self.registry)
            return metric.labels(model_name=model_name)

        def counter(name: str) -> Counter:
            return Counter(name, name, labels, registry=self.registry).labels(model_name=model_name)

        def gauge(name: str) -> Gauge:
            return Gauge(name, name, labels, registry=self.registry).labels(model_name=model_name)

        self.ttft = histogram(f"{prefix}:time_to_first_token_seconds", TTFT_BUCKETS)
        self.itl = histogram(f"{prefix}:inter_token_latency_seconds", ITL_BUCKETS)
        self.e2e = histogram(f"{prefix}:e2e_request_latency_seconds", E2E_BUCKETS)
        self.queue = histogram(f"{prefix}:request_queue_time_seconds", TTFT_BUCKETS)
        self.prompt_hist = histogram(f"{prefix}:request_prompt_tokens", PROMPT_LENGTH_BUCKETS)
        self.output_hist = histogram(f"{prefix}:request_generation_tokens", TOKEN_BUCKETS)
        self.prompt_tokens = counter(f"{prefix}:prompt_tokens")
        self.generation_tokens = counter(f"{prefix}:generation_tokens")
        self.running = gauge(f"{prefix}:num_requests_running")
        self.waiting = gauge(f"{prefix}:num_requests_waiting")
        self.kv_usage = gauge(f"{prefix}:kv_cache_usage_perc")
        self.prefix_queries = counter(f"{prefix}:prefix_cache_queries")
        self.prefix_hits = counter(f"{prefix}:prefix_cache_hits")
        self.refusals = Counter(f"{prefix}:request_refused", "refused", labels + ["reason"], registry=self.registry)
        for reason in ("slo", "queue_full"):  # at zero from the start, as the runtime's (else increase() misses it)
            self.refusals.labels(model_name=model_name, reason=reason)
        self._server = None
        self.url = ""

    def serve(self) -> str:
        registry, negotiate = self.registry, self.negotiate

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                encoder, content_type = choose_encoder(self.headers.get("Accept", "")) if negotiate else \
                    (generate_latest, CONTENT_TYPE_LATEST)
                body = encoder(registry)
                self.send_response(200 if self.path == "/metrics" else 404)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        return self.url

    def record(self, count: int, ttft: float, itl: float, prompt_tokens: int = 100, output_tokens: int = 20) -> None:
        """`count` finished requests, each with the given TTFT and inter-token gap."""
        for _ in range(count):
            self.ttft.observe(ttft)
            for _ in range(output_tokens - 1):
                self.itl.observe(itl)
            self.e2e.observe(ttft + itl * (output_tokens - 1))
            self.queue.observe(0.0)
            self.prompt_hist.observe(prompt_tokens)
            self.output_hist.observe(output_tokens)
            self.prompt_tokens.inc(prompt_tokens)
            self.generation_tokens.inc(output_tokens)

    def refuse(self, count: int, reason: str = "slo") -> None:
        """`count` requests answered 429 by admission."""
        self.refusals.labels(model_name=self.model_name, reason=reason).inc(count)

    def prefix_lookups(self, queried: int, hit: int) -> None:
        self.prefix_queries.inc(queried)
        self.prefix_hits.inc(hit)

    def set_load(self, running: float, waiting: float, kv_usage: float) -> None:
        self.running.set(running)
        self.waiting.set(waiting)
        self.kv_usage.set(kv_usage)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None
