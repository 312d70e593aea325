"""Weight-only quantization: kernel results against the dequantized weights, the Q4_1 -> int4 mapping, the
model's logits under each scheme, resident bytes (engine and /metrics), and fp8 refused on CPU at start-up."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import torch
from sloserve_runtime.engine.core import AsyncEngine
from sloserve_runtime.engine.engine_config import EngineConfig
from sloserve_runtime.model import load_model
from sloserve_runtime.model.llama import PagedLlama, PrefillSlice, StepInput
from sloserve_runtime.model.quantization import (
    Int4Weight,
    Int8Weight,
    QuantizationError,
    check_supported,
    linear,
    quantize_model,
    weight_bytes,
)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_kernel_matches_dequantized_weights(dtype):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(96, 64, generator=g)
    x = torch.randn(5, 64, generator=g).to(dtype)
    q = Int8Weight.from_float(w, dtype)
    assert q.q.dtype == torch.int8 and q.scales.shape == (96,)
    exact = x.float() @ q.dequantize().T
    assert rel_err(linear(x, q), exact) < (1e-5 if dtype == torch.float32 else 1e-2)
    assert rel_err(linear(x, q), x.float() @ w.T) < 0.02  # 8-bit rounding error only
    assert linear(x.reshape(5, 1, 64), q).shape == (5, 1, 96)  # leading dims kept


def test_int4_kernel_is_close_and_packs_two_codes_per_byte():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(128, 64, generator=g)
    x = torch.randn(3, 64, generator=g)
    q = Int4Weight.from_float(w, torch.float32)
    assert q.packed.numel() * q.packed.element_size() == 128 * 64 // 2
    assert q.scales_zeros.shape == (64 // 32, 128, 2)
    err = rel_err(linear(x, q), x @ w.T)
    assert 0.01 < err < 0.15  # really 4-bit (not a float copy), yet close


def test_q4_1_style_groups_go_to_int4_exactly():
    """llama.cpp Q4_1: w = d * q + m per 32 values. Min/max int4 recovers d, m and the codes (no new loss)."""
    g = torch.Generator().manual_seed(2)
    n, k = 32, 64
    codes = torch.randint(0, 16, (n, k // 32, 32), generator=g)
    codes[..., 0], codes[..., 1] = 0, 15  # every block of a real Q4_1 tensor spans its range like this
    d = torch.rand(n, k // 32, 1, generator=g) * 0.02 + 0.001
    m = -torch.rand(n, k // 32, 1, generator=g) * 0.1
    w = (d * codes + m).reshape(n, k)
    x = torch.randn(4, k, generator=g)
    assert rel_err(linear(x, Int4Weight.from_float(w, torch.float32)), x @ w.T) < 1e-5


def test_bad_shapes_and_schemes_are_refused_clearly():
    with pytest.raises(QuantizationError, match="divisible by 32"):
        Int4Weight.from_float(torch.randn(32, 40), torch.float32)
    with pytest.raises(QuantizationError, match="choose one of"):
        check_supported("int3", torch.device("cpu"))
    with pytest.raises(QuantizationError, match="CUDA"):
        check_supported("fp8", torch.device("cpu"))


def prefill_logits(model: PagedLlama, ids: list[int]) -> torch.Tensor:
    n = len(ids)
    step = StepInput(input_ids=torch.tensor(ids), positions=torch.arange(n), slot_mapping=torch.arange(16, 16 + n),
                     num_decodes=0, prefills=[PrefillSlice(0, n, n, None, None)], logits_indices=torch.arange(n))
    return model.forward(step)


@pytest.fixture(scope="module")
def tiny_loaded(tiny_model_dir: Path):
    return load_model(tiny_model_dir)


def build(loaded, dtype: torch.dtype = torch.float32) -> PagedLlama:
    model = PagedLlama(loaded.args, loaded.state, torch.device("cpu"), dtype, 256)
    model.allocate_kv_cache(8, 16)
    return model


@pytest.mark.parametrize("scheme,max_err", [("int8", 0.03), ("int4", 0.2)])
def test_model_logits_and_resident_bytes_per_scheme(tiny_loaded, scheme, max_err):
    ids = [(37 * i + 500) % 40000 + 100 for i in range(24)]
    plain = build(tiny_loaded)
    reference = prefill_logits(plain, ids)
    projections = sum(getattr(layer, name).numel() * 4 for layer in plain.layers
                      for name in ("wqkv", "wo", "w_gate_up", "w_down"))
    quantized = build(tiny_loaded)
    size = quantize_model(quantized, scheme)
    # fp32 -> int8 (+ a scale per row) or int4 (+ scale and zero per 32): at least 70% of projection bytes saved
    assert size == weight_bytes(quantized)
    assert weight_bytes(plain) - size > 0.7 * projections
    logits = prefill_logits(quantized, ids)
    assert rel_err(logits, reference) < max_err
    if scheme == "int8":  # random weights give near-flat logits; int4's argmax agreement is measured on SmolLM2
        assert (logits.argmax(-1) == reference.argmax(-1)).float().mean() >= 0.75


async def test_engine_generates_with_int4_and_reports_weight_bytes(tiny_model_dir: Path):
    cfg = EngineConfig(model=str(tiny_model_dir), dtype="bfloat16", quantization="int4", max_model_len=128,
                       kv_cache_blocks=32, block_size=16)
    engine = AsyncEngine.from_config(cfg)
    await engine.start()
    try:
        await engine.warmup()
        assert isinstance(engine.weight_bytes, int) and engine.weight_bytes == weight_bytes(engine.core.model)
    finally:
        await engine.shutdown()
    engine.core.allocator.check_no_leaks()


def test_fp8_on_cpu_fails_before_loading_anything():
    with pytest.raises(QuantizationError, match="needs a CUDA GPU"):
        AsyncEngine.from_config(EngineConfig(model="/nonexistent/model.gguf", quantization="fp8"))


def test_runtime_process_exposes_weight_bytes_gauge(runtime_factory, tiny_model_dir: Path, tiny_loaded):
    runtime = runtime_factory(tiny_model_dir, "--quantization", "int8", "--dtype", "bfloat16",
                              "--max-model-len", "128")
    text = httpx.get(runtime.url + "/metrics", timeout=10).text
    match = re.search(r'^sloserve:model_weight_bytes\{model_name="tiny"\} (\S+)$', text, re.M)
    assert match, text[:2000]
    expected = build(tiny_loaded, torch.bfloat16)
    assert float(match.group(1)) == quantize_model(expected, "int8") < weight_bytes(build(tiny_loaded, torch.bfloat16))
    assert "int8" in runtime.log()  # the startup log names the scheme and the size


def test_runtime_process_with_fp8_on_cpu_exits_with_a_clear_message(tiny_model_dir: Path):
    result = subprocess.run([sys.executable, "-m", "sloserve_runtime", "--model", str(tiny_model_dir),
                             "--quantization", "fp8", "--port", "0", "--threads", "1"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "--quantization fp8 needs a CUDA GPU" in result.stdout + result.stderr
