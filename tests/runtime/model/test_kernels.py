"""The C++ paged attention against a float64 reference built with plain torch ops: every dtype, the
register-resident head sizes (64, 128) and the generic path (32), grouped and ungrouped heads, lengths that
end mid-block, and scattered block tables."""

from __future__ import annotations

import pytest
import torch
from sloserve_runtime.kernels import cpu_kernels_available

pytestmark = pytest.mark.skipif(not cpu_kernels_available(), reason="C++ kernels could not be built here")


def reference(q, k_cache, v_cache, tables, lengths, block_size, scale):
    """softmax(q k^T * scale) v per sequence, gathering each sequence's slots one by one, in float64."""
    batch, heads, dim = q.shape
    group = heads // k_cache.shape[0]
    out = torch.empty(batch, heads, dim, dtype=torch.float64)
    for b in range(batch):
        n = int(lengths[b])
        slots = torch.tensor([int(tables[b, t // block_size]) * block_size + t % block_size for t in range(n)])
        for h in range(heads):
            k = k_cache[h // group].index_select(0, slots).double()
            v = v_cache[h // group].index_select(0, slots).double()
            weights = torch.softmax((k @ q[b, h].double()) * scale, dim=0)
            out[b, h] = weights @ v
    return out


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2), (torch.float16, 3e-3)])
@pytest.mark.parametrize("heads,kv_heads,dim", [(9, 3, 64), (8, 2, 128), (4, 4, 64), (6, 2, 32), (10, 2, 64)])
def test_matches_reference(dtype, tolerance, heads, kv_heads, dim):
    generator = torch.Generator().manual_seed(heads * 1000 + dim)
    block_size, num_blocks = 16, 80
    lengths = torch.tensor([1, 17, 40, 250], dtype=torch.long)
    width = -(-int(lengths.max()) // block_size)
    tables = torch.randperm(num_blocks - 1, generator=generator)[: len(lengths) * width].view(len(lengths), width) + 1
    k_cache = torch.randn(kv_heads, num_blocks * block_size, dim, generator=generator).to(dtype)
    v_cache = torch.randn(kv_heads, num_blocks * block_size, dim, generator=generator).to(dtype)
    q = torch.randn(len(lengths), heads, dim, generator=generator).to(dtype)
    scale = dim ** -0.5
    got = torch.ops.sloserve.paged_attention(q, k_cache, v_cache, tables, lengths, block_size, scale)
    assert got.dtype == dtype and got.shape == q.shape
    want = reference(q, k_cache, v_cache, tables, lengths, block_size, scale)
    assert torch.allclose(got.double(), want, atol=tolerance, rtol=tolerance), (got.double() - want).abs().max()


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2), (torch.float16, 3e-3)])
@pytest.mark.parametrize("width", [576, 40])  # a multiple of 16 (vector path) and not (scalar tail)
def test_fused_norm_and_activation_match_torch(dtype, tolerance, width):
    generator = torch.Generator().manual_seed(width)
    x = torch.randn(7, width, generator=generator).to(dtype)
    residual = torch.randn(7, width, generator=generator).to(dtype)
    weight = torch.randn(width, generator=generator).to(dtype)
    eps = 1e-5

    def close(got, want):
        return torch.allclose(got.double(), want.double(), atol=tolerance, rtol=tolerance)

    want_sum = x + residual
    want = torch.nn.functional.rms_norm(want_sum.float(), (width,), weight.float(), eps)
    updated = x.clone()
    got = torch.ops.sloserve.add_rms_norm_(updated, residual, weight, eps)
    assert torch.equal(updated, want_sum), "x must hold x + residual afterwards"
    assert close(got, want)
    assert close(torch.ops.sloserve.rms_norm(x, weight, eps),
                 torch.nn.functional.rms_norm(x.float(), (width,), weight.float(), eps))
    gate_up = torch.randn(7, 2 * width, generator=generator).to(dtype) * 4
    gate, up = gate_up.float().chunk(2, dim=-1)
    assert close(torch.ops.sloserve.silu_mul(gate_up), torch.nn.functional.silu(gate) * up)


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
def test_rope_matches_the_torch_rotation(dtype, tolerance):
    from sloserve_runtime.model.rope import rope_tables

    heads, kv_heads, dim = 9, 3, 64
    cos, sin = rope_tables(dim, 10000.0, None, 64, dtype, torch.device("cpu"))
    generator = torch.Generator().manual_seed(1)
    qkv = torch.randn(5, (heads + 2 * kv_heads) * dim, generator=generator).to(dtype)
    positions = torch.tensor([0, 3, 3, 17, 63])
    width = (heads + kv_heads) * dim
    qk = qkv[:, :width].view(5, heads + kv_heads, dim).float()
    want = qk * cos[positions].float().unsqueeze(1) + qk.roll(dim // 2, dims=-1) * sin[positions].float().unsqueeze(1)
    got = qkv.clone()
    torch.ops.sloserve.rope_(got, cos, sin, positions, heads + kv_heads)
    assert torch.allclose(got[:, :width].view_as(want).double(), want.double(), atol=tolerance, rtol=tolerance)
    assert torch.equal(got[:, width:], qkv[:, width:]), "V must not be rotated"
    with pytest.raises(RuntimeError, match="beyond the rotary tables"):
        torch.ops.sloserve.rope_(got, cos, sin, torch.tensor([0, 1, 2, 3, 64]), heads + kv_heads)


def test_rejects_lengths_beyond_the_block_table():
    q = torch.zeros(1, 2, 64)
    cache = torch.zeros(1, 64, 64)
    with pytest.raises(RuntimeError, match="lengths out of range"):
        torch.ops.sloserve.paged_attention(q, cache, cache, torch.tensor([[1]]), torch.tensor([17]), 16, 0.125)


async def test_engine_gives_the_same_tokens_with_and_without_the_kernel(tmp_path):
    """Whole engine, fp32, greedy: mixed decode/prefill steps, chunked prefill (small token budget) and a
    shared prefix served from the cache take the kernel path in one engine and the torch path in the other."""
    import asyncio

    from sloserve_runtime.engine.core import AsyncEngine
    from sloserve_runtime.engine.engine_config import EngineConfig
    from sloserve_runtime.engine.sampling_params import SamplingParams
    from sloserve_runtime.testing import make_tiny_model

    config = EngineConfig(model=str(make_tiny_model(tmp_path)), dtype="float32", max_model_len=256,
                          kv_cache_blocks=128, block_size=4, max_batched_tokens=24)
    shared = list(range(3, 40))
    prompts = [shared + [50 + i] * (i + 1) for i in range(5)] + [[7, 8, 9]]
    results = []
    for use_kernel in (True, False):
        engine = AsyncEngine.from_config(config)
        engine.core.model.cpu_kernels = use_kernel
        await engine.start()
        try:
            async def run(index, prompt, engine=engine):
                params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
                return [t async for out in engine.generate(f"r{index}", prompt, params) for t in out.new_token_ids]

            results.append(await asyncio.gather(*(run(i, p) for i, p in enumerate(prompts))))
        finally:
            await engine.shutdown()
    assert all(len(tokens) == 12 for tokens in results[0])
    assert results[0] == results[1]
