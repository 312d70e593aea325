"""Device, dtype and KV-pool sizing decisions, kept apart from the engine logic."""

from __future__ import annotations

from pathlib import Path

import torch

from sloserve_runtime.engine.engine_config import EngineConfig

_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
           "float32": torch.float32, "fp32": torch.float32}


# Default ceiling for the CPU KV pool when --kv-cache-blocks is not given (vLLM CPU defaults to 4 GiB).
CPU_KV_CACHE_CAP_BYTES = 1 << 30  # committed at start; 1 GiB is ~45k tokens of SmolLM2-135M


def pick_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return device


def cpu_has_fast_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """auto: bf16 where the device computes it natively (AVX512-BF16/AMX CPUs, Ampere+ GPUs), else fp32/fp16."""
    if name != "auto":
        if name not in _DTYPES:
            raise ValueError(f"unknown dtype {name!r} (auto, bfloat16, float16, float32)")
        return _DTYPES[name]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def _free_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 4 << 30


def plan_kv_blocks(config: EngineConfig, device: torch.device, bytes_per_token: int, max_model_len: int) -> int:
    """Total blocks (including the reserved null block): explicit, or a memory fraction capped at what
    max_batch_size sequences of max_model_len tokens could ever use; always room for one full sequence."""
    bs = config.block_size
    one_sequence = -(-max_model_len // bs)
    if config.kv_cache_blocks is not None:
        if config.kv_cache_blocks < one_sequence:
            raise ValueError(f"--kv-cache-blocks {config.kv_cache_blocks} cannot hold one sequence of "
                             f"--max-model-len {max_model_len} tokens (needs {one_sequence} blocks of {bs})")
        return config.kv_cache_blocks + 1
    budget = int(_free_memory_bytes(device) * config.kv_cache_memory_fraction)
    if device.type == "cpu":
        budget = min(budget, CPU_KV_CACHE_CAP_BYTES)  # host RAM is shared with everything else
    by_memory = budget // (bytes_per_token * bs)
    useful = config.max_batch_size * one_sequence
    return max(one_sequence, min(by_memory, useful)) + 1
