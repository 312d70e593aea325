"""Engine configuration: one dataclass, filled from the CLI (cli.py) or directly by tests and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EngineConfig:
    model: str | None = None  # GGUF file or Hugging Face directory; None: bundled SmolLM2-135M-Instruct
    served_model_name: str | None = None  # name on the API and in metrics; default derived from the model
    dtype: str = "auto"  # auto | bfloat16 | float16 | float32 (auto: bf16 where the device runs it fast)
    device: str = "cpu"  # cpu | cuda | cuda:N
    threads: int | None = None  # torch intra-op threads (CPU)
    max_batch_size: int = 64  # running sequences per step
    max_batched_tokens: int = 4096  # tokens per step (prefill chunk budget + decodes)
    max_model_len: int = 8192  # prompt + output tokens
    block_size: int = 16  # tokens per KV block
    kv_cache_blocks: int | None = None  # explicit pool size; None: from kv_cache_memory_fraction
    kv_cache_memory_fraction: float = 0.3  # of free device memory, when kv_cache_blocks is None
    prefix_caching: bool = True
    quantization: str = "none"  # none | int8 | int4 | fp8 (fp8: CUDA only)
    speculative_method: str = "none"  # none | ngram | draft
    num_speculative_tokens: int = 4
    draft_model: str | None = None
    prompt_lookup_min: int = 2
    prompt_lookup_max: int = 5
    seed: int = 0
