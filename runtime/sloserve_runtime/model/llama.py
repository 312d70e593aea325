"""Llama-family forward over a flat batch of tokens with a paged KV cache.

One step carries decode tokens (one per sequence) first and then prefill chunks; every token writes its K/V
into a slot of the block pool (slot = block_id * block_size + offset) and attends over its sequence's
slots, gathered through the block table. Weights are fused (QKV, gate+up) to keep the number of Python-level
ops per layer small; everything lives on the configured device, nothing assumes CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from sloserve_runtime.kernels import cpu_kernels_available
from sloserve_runtime.model.model_args import ModelArgs
from sloserve_runtime.model.packed import can_prepack, prepack
from sloserve_runtime.model.quantization import linear
from sloserve_runtime.model.rope import rope_tables


@dataclass
class PrefillSlice:
    start: int  # rows of this sequence's new tokens in the flat batch
    end: int
    context_len: int  # tokens in cache after this step (cached + new)
    gather: torch.Tensor | None  # [context_len] slots; None when the chunk is the whole context
    mask: torch.Tensor | None  # [n, context_len] bool (True = attend); None means plain causal


@dataclass
class StepInput:
    input_ids: torch.Tensor  # [T]
    positions: torch.Tensor  # [T]
    slot_mapping: torch.Tensor  # [T]
    num_decodes: int  # the first num_decodes rows are single-token decode steps
    decode_blocks: torch.Tensor | None = None  # [B, NB] block tables, padding points at the zeroed null block
    decode_mask: torch.Tensor | None = None  # [B, 1, 1, L] float32: 0 where attended, -inf on padding
    # For the C++ paged attention (kernels/), which covers every row in one call: each row's block table
    # (its sequence's, padded) and how many slots it attends to (its position + 1).
    row_tables: torch.Tensor | None = None  # [T, NB] int64
    row_lens: torch.Tensor | None = None  # [T] int64
    prefills: list[PrefillSlice] = field(default_factory=list)
    logits_indices: torch.Tensor | None = None  # rows whose next-token logits are needed


@dataclass
class _Layer:
    attn_norm: torch.Tensor
    wqkv: torch.Tensor
    bqkv: torch.Tensor | None
    wo: torch.Tensor
    ffn_norm: torch.Tensor
    w_gate_up: torch.Tensor
    w_down: torch.Tensor


class PagedLlama:
    """Weights plus the KV block pool; forward(step) -> float32 logits for step.logits_indices."""

    def __init__(self, args: ModelArgs, state: dict[str, torch.Tensor], device: torch.device,
                 dtype: torch.dtype, max_positions: int) -> None:
        self.args = args
        self.device = device
        self.dtype = dtype

        def w(name: str) -> torch.Tensor:
            return state[name].to(device=device, dtype=dtype).contiguous()

        self.embed = w("model.embed_tokens.weight")
        self.norm = w("model.norm.weight")
        self.lm_head = self.embed if args.tie_word_embeddings or "lm_head.weight" not in state else w(
            "lm_head.weight")
        self.layers: list[_Layer] = []
        for i in range(args.num_layers):
            p = f"model.layers.{i}."
            wqkv = torch.cat([state[p + f"self_attn.{n}_proj.weight"] for n in "qkv"], dim=0)
            bqkv = None
            if args.attention_bias and (p + "self_attn.q_proj.bias") in state:
                bqkv = torch.cat([state[p + f"self_attn.{n}_proj.bias"] for n in "qkv"], dim=0)
                bqkv = bqkv.to(device=device, dtype=dtype)
            gate_up = torch.cat([state[p + "mlp.gate_proj.weight"], state[p + "mlp.up_proj.weight"]], dim=0)
            self.layers.append(_Layer(
                attn_norm=w(p + "input_layernorm.weight"),
                wqkv=wqkv.to(device=device, dtype=dtype).contiguous(),
                bqkv=bqkv,
                wo=w(p + "self_attn.o_proj.weight"),
                ffn_norm=w(p + "post_attention_layernorm.weight"),
                w_gate_up=gate_up.to(device=device, dtype=dtype).contiguous(),
                w_down=w(p + "mlp.down_proj.weight"),
            ))
        self.cos, self.sin = rope_tables(args.head_dim, args.rope_theta, args.rope_scaling, max_positions,
                                         dtype, device)
        self.block_size = 16
        # The C++ kernels (kernels/: paged attention, fused norms and SiLU); the torch paths are the fallback.
        self.cpu_kernels = device.type == "cpu" and cpu_kernels_available()
        self.k_cache: list[torch.Tensor] = []
        self.v_cache: list[torch.Tensor] = []

    def prepack_weights(self) -> bool:
        """Prepack the projections and the LM head for oneDNN where that helps (CPU bf16/fp16); call
        after any quantization, which replaces the projections it handles."""
        if not can_prepack(self.device, self.dtype):
            return False
        for layer in self.layers:
            for name in ("wqkv", "wo", "w_gate_up", "w_down"):
                setattr(layer, name, prepack(getattr(layer, name)))
        self.lm_head = prepack(self.lm_head)
        return True

    def kv_bytes_per_token(self) -> int:
        a = self.args
        return 2 * a.num_layers * a.num_kv_heads * a.head_dim * torch.finfo(self.dtype).bits // 8

    def allocate_kv_cache(self, num_blocks: int, block_size: int) -> None:
        """Pool of num_blocks * block_size slots per layer; block 0 is the null block for padding.

        Zero-filled: attention reads whole blocks, and masked-out slots must hold finite values
        (softmax weight 0 times NaN garbage would still be NaN). Committed up front, as on a GPU: the pool was
        once mapped lazily (calloc), and then each request that reached never-used blocks paid their page
        faults in its TTFT (200-token prefill: 75 ms with the pool touched, 110-190 ms on fresh blocks)."""
        a = self.args
        # Head-major: [KVH, slots, D]. Gathering a batch's blocks along dim 1 then yields [KVH, B*L, D], which
        # is already the (KVH*B) batch of contiguous [L, D] matrices the decode matmuls want: no transposes.
        shape = (a.num_kv_heads, num_blocks * block_size, a.head_dim)
        self.block_size = block_size
        self.k_cache, self.v_cache = [], []
        for _ in range(a.num_layers):
            self.k_cache.append(torch.zeros(shape, dtype=self.dtype, device=self.device))
            self.v_cache.append(torch.zeros(shape, dtype=self.dtype, device=self.device))

    @torch.inference_mode()
    def forward(self, step: StepInput) -> torch.Tensor:
        a = self.args
        heads, kv_heads, head_dim = a.num_heads, a.num_kv_heads, a.head_dim
        qk_width = (heads + kv_heads) * head_dim
        num_tokens = step.input_ids.shape[0]
        half = head_dim // 2
        if not self.cpu_kernels:
            cos = self.cos[step.positions].unsqueeze(1)
            sin = self.sin[step.positions].unsqueeze(1)
        x = F.embedding(step.input_ids, self.embed)
        pending: torch.Tensor | None = None  # the last sublayer's output, added to x by the next norm
        for i, layer in enumerate(self.layers):
            h = self._add_norm(x, pending, layer.attn_norm)
            qkv = linear(h, layer.wqkv, layer.bqkv)
            if self.cpu_kernels:  # in place, one pass
                torch.ops.sloserve.rope_(qkv, self.cos, self.sin, step.positions, heads + kv_heads)
                qk = qkv[:, :qk_width].view(num_tokens, heads + kv_heads, head_dim)
            else:
                qk = qkv[:, :qk_width].view(num_tokens, heads + kv_heads, head_dim)
                qk = qk * cos + qk.roll(half, dims=-1) * sin
            q = qk[:, :heads]
            k = qk[:, heads:]
            v = qkv[:, qk_width:].view(num_tokens, kv_heads, head_dim)
            k_cache, v_cache = self.k_cache[i], self.v_cache[i]
            k_cache.index_copy_(1, step.slot_mapping, k.transpose(0, 1))
            v_cache.index_copy_(1, step.slot_mapping, v.transpose(0, 1))
            attn = self._attention(step, q, k, v, k_cache, v_cache)
            h = self._add_norm(x, linear(attn, layer.wo), layer.ffn_norm)
            pending = linear(self._silu_mul(linear(h, layer.w_gate_up)), layer.w_down)
        if pending is not None:
            x.add_(pending)
        if step.logits_indices is not None:
            x = x[step.logits_indices]
        x = self._add_norm(x.contiguous(), None, self.norm)
        return linear(x, self.lm_head).float()

    def _add_norm(self, x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor) -> torch.Tensor:
        """x += residual (in place, when given), then RMS-normalize x; one fused pass with the CPU kernels."""
        eps = self.args.rms_norm_eps
        if self.cpu_kernels:
            if residual is None:
                return torch.ops.sloserve.rms_norm(x, weight, eps)
            return torch.ops.sloserve.add_rms_norm_(x, residual, weight, eps)
        if residual is not None:
            x.add_(residual)
        return F.rms_norm(x, (self.args.hidden_size,), weight, eps)

    def _silu_mul(self, gate_up: torch.Tensor) -> torch.Tensor:
        if self.cpu_kernels:
            return torch.ops.sloserve.silu_mul(gate_up)
        gate, up = gate_up.chunk(2, dim=-1)
        return F.silu(gate) * up

    def _attention(self, step: StepInput, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   k_cache: torch.Tensor, v_cache: torch.Tensor) -> torch.Tensor:
        """[T, H, D] queries -> [T, H*D]. With the C++ kernel: every row in one call, read in place from the
        cache. Torch path: decodes batched over gathered blocks, prefills one by one through SDPA."""
        if self.cpu_kernels and step.row_lens is not None:
            out = torch.ops.sloserve.paged_attention(q.contiguous(), k_cache, v_cache, step.row_tables, step.row_lens,
                                                     self.block_size, self.args.head_dim ** -0.5)
            return out.view(q.shape[0], -1)
        outputs: list[torch.Tensor] = []
        b = step.num_decodes
        if b:
            outputs.append(self._decode_attention(step, q[:b], k_cache, v_cache))
        for p in step.prefills:
            qp = q[p.start:p.end].transpose(0, 1).unsqueeze(0)  # [1, H, n, D]
            if p.gather is None:
                kp = k[p.start:p.end].transpose(0, 1).unsqueeze(0)
                vp = v[p.start:p.end].transpose(0, 1).unsqueeze(0)
            else:
                kp = k_cache.index_select(1, p.gather).unsqueeze(0)
                vp = v_cache.index_select(1, p.gather).unsqueeze(0)
            if p.mask is None:
                out = F.scaled_dot_product_attention(qp, kp, vp, is_causal=p.end - p.start > 1, enable_gqa=True)
            else:
                out = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=p.mask, enable_gqa=True)
            outputs.append(out.squeeze(0).transpose(0, 1).reshape(p.end - p.start, -1))
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=0)

    def _decode_attention(self, step: StepInput, q: torch.Tensor, k_cache: torch.Tensor,
                          v_cache: torch.Tensor) -> torch.Tensor:
        """One query token per sequence over its gathered blocks: [B, H, D] -> [B, H*D].

        Whole blocks are gathered with index_select (contiguous runs of block_size*D values; much faster than
        per-slot advanced indexing) from the head-major cache, giving (KVH*B) contiguous [L, D] matrices.
        The query heads sharing a KV head become that head's rows, so grouped-query attention needs no K/V
        repetition, and two batched matmuls beat SDPA's kernel at this shape (a handful of query rows).
        Scores and softmax are float32.
        """
        a = self.args
        b, kvh, d = q.shape[0], a.num_kv_heads, a.head_dim
        group = a.num_heads // kvh
        blocks = step.decode_blocks
        length = blocks.shape[1] * self.block_size
        flat = blocks.reshape(-1)
        k = k_cache.view(kvh, -1, self.block_size * d).index_select(1, flat).view(kvh * b, length, d)
        v = v_cache.view(kvh, -1, self.block_size * d).index_select(1, flat).view(kvh * b, length, d)
        qg = q.view(b, kvh, group, d).transpose(0, 1).reshape(kvh * b, group, d)
        scores = torch.bmm(qg, k.transpose(1, 2)).float().view(kvh, b, group, length)
        scores = scores * (d ** -0.5) + step.decode_mask.view(1, b, 1, length)
        probs = torch.softmax(scores, dim=-1).to(q.dtype).view(kvh * b, group, length)
        out = torch.bmm(probs, v).view(kvh, b, group * d)
        return out.transpose(0, 1).reshape(b, kvh * group * d)
