"""The C++ paged decode attention against a float64 reference built with plain torch ops: every dtype, the
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
    got = torch.ops.sloserve.paged_decode_attention(q, k_cache, v_cache, tables, lengths, block_size, scale)
    assert got.dtype == dtype and got.shape == q.shape
    want = reference(q, k_cache, v_cache, tables, lengths, block_size, scale)
    assert torch.allclose(got.double(), want, atol=tolerance, rtol=tolerance), (got.double() - want).abs().max()


def test_rejects_lengths_beyond_the_block_table():
    q = torch.zeros(1, 2, 64)
    cache = torch.zeros(1, 64, 64)
    with pytest.raises(RuntimeError, match="lengths out of range"):
        torch.ops.sloserve.paged_decode_attention(q, cache, cache, torch.tensor([[1]]), torch.tensor([17]), 16, 0.125)
