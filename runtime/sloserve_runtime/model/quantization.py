"""Weight-only quantization of the transformer's linear layers (--quantization none|int8|int4|fp8).

Why weight-only: on CPU and at small batch the decode step is bound by reading weights, so storing them in
8 or 4 bits cuts bytes read per token; activations stay in the model dtype, which keeps the quality cost small.

- int8: per output channel, symmetric: w ~= q * scale[row], q in [-127, 127]. Matmul with torch's
  `_weight_int8pack_mm` (CPU and CUDA), which reads the int8 weights directly.
- int4: group-wise (GROUP_SIZE inputs per group), asymmetric: w ~= (q - 8) * scale + zero, q in [0, 15], packed
  two per byte by `_convert_weight_to_int4pack[_for_cpu]` and multiplied by `_weight_int4pack_mm[_for_cpu]`.
  With groups of 32, a llama.cpp Q4_1 tensor (w = d*q + m per 32 values) maps onto this form exactly
  (scale = d, zero = m + 8d): min/max re-quantization of the dequantized GGUF recovers those codes, so
  SmolLM2's Q4_1 GGUF goes to int4 with (almost) no further loss.
- fp8: CUDA only (float8_e4m3fn per-channel weights, upcast per matmul); on a CPU it is refused at start-up.

Embeddings and the LM head stay in the model dtype (the embedding lookup needs rows, and the head is the most
quality-sensitive matrix); norms and biases too. `linear()` is what model/llama.py calls for every projection.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

SCHEMES = ("none", "int8", "int4", "fp8")
GROUP_SIZE = 32  # int4 group size along the input dimension (32 matches llama.cpp Q4_0/Q4_1 blocks)
_LINEAR_FIELDS = ("wqkv", "wo", "w_gate_up", "w_down")  # the projections of model.llama._Layer


class QuantizationError(ValueError):
    """A scheme that cannot run here (device, shape); raised before serving starts."""


def check_supported(scheme: str, device: torch.device) -> None:
    """Refuse impossible combinations early, with a message that says what to do instead."""
    if scheme not in SCHEMES:
        raise QuantizationError(f"--quantization {scheme!r}: choose one of {', '.join(SCHEMES)}")
    if scheme == "fp8" and device.type != "cuda":
        raise QuantizationError(
            f"--quantization fp8 needs a CUDA GPU (float8 matmuls); this runtime runs on {device.type}. "
            "Use --quantization int8 or int4 on CPU.")


@dataclass
class Int8Weight:
    """[N, K] int8 codes with one scale per output row; multiplies without dequantizing the matrix."""

    q: torch.Tensor
    scales: torch.Tensor  # [N], activation dtype

    @classmethod
    def from_float(cls, w: torch.Tensor, dtype: torch.dtype) -> Int8Weight:
        w = w.float()
        scales = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-10)
        q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
        return cls(q.contiguous(), scales.to(dtype))

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        out = torch.ops.aten._weight_int8pack_mm(flat, self.q, self.scales)
        return out.reshape(*x.shape[:-1], out.shape[-1])

    def dequantize(self) -> torch.Tensor:
        return self.q.float() * self.scales.float()[:, None]


@dataclass
class Int4Weight:
    """[N, K] weights as packed 4-bit codes with a (scale, zero) pair per group of `group_size` inputs."""

    packed: torch.Tensor
    scales_zeros: torch.Tensor  # [K // group_size, N, 2], activation dtype
    group_size: int
    out_features: int
    in_features: int

    @classmethod
    def from_float(cls, w: torch.Tensor, dtype: torch.dtype, group_size: int = GROUP_SIZE) -> Int4Weight:
        n, k = w.shape
        if k % group_size or n % 16:
            raise QuantizationError(f"int4 needs in_features divisible by {group_size} and out_features by 16; "
                                    f"got a {n}x{k} weight")
        groups = w.float().reshape(n, k // group_size, group_size)
        low = groups.amin(dim=-1)
        high = groups.amax(dim=-1)
        scales = ((high - low) / 15.0).clamp(min=1e-10)
        codes = torch.round((groups - low[..., None]) / scales[..., None]).clamp(0, 15).to(torch.int32)
        zeros = low + 8.0 * scales  # the kernels compute (q - 8) * scale + zero
        scales_zeros = torch.stack([scales, zeros], dim=-1).transpose(0, 1).contiguous().to(dtype)
        codes = codes.reshape(n, k)
        if w.device.type == "cpu":
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
        else:
            pairs = (codes[:, ::2] << 4 | codes[:, 1::2]).to(torch.uint8)
            packed = torch.ops.aten._convert_weight_to_int4pack(pairs, 8)
        return cls(packed, scales_zeros.to(w.device), group_size, n, k)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if flat.device.type == "cpu":
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.packed, self.group_size, self.scales_zeros)
        else:
            out = torch.ops.aten._weight_int4pack_mm(flat, self.packed, self.group_size, self.scales_zeros)
        return out.reshape(*x.shape[:-1], self.out_features)


@dataclass
class Fp8Weight:
    """float8_e4m3fn weights with a per-row scale (CUDA only); upcast for the matmul."""

    q: torch.Tensor
    scales: torch.Tensor

    @classmethod
    def from_float(cls, w: torch.Tensor, dtype: torch.dtype) -> Fp8Weight:
        w = w.float()
        scales = (w.abs().amax(dim=1) / torch.finfo(torch.float8_e4m3fn).max).clamp(min=1e-12)
        return cls((w / scales[:, None]).to(torch.float8_e4m3fn), scales.to(dtype))

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.q.to(x.dtype)) * self.scales


QuantizedWeight = Int8Weight | Int4Weight | Fp8Weight


def linear(x: torch.Tensor, weight: torch.Tensor | QuantizedWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear for plain or quantized weights (the model's projections call this)."""
    if isinstance(weight, torch.Tensor):
        return F.linear(x, weight, bias)
    out = weight.matmul(x)
    return out if bias is None else out + bias


def quantize_weight(w: torch.Tensor, scheme: str, dtype: torch.dtype) -> torch.Tensor | QuantizedWeight:
    if scheme == "int8":
        return Int8Weight.from_float(w, dtype)
    if scheme == "int4":
        return Int4Weight.from_float(w, dtype)
    if scheme == "fp8":
        return Fp8Weight.from_float(w, dtype)
    return w


def quantize_model(model: Any, scheme: str) -> int:
    """Replace the projections of every layer of a PagedLlama in place; returns resident weight bytes."""
    check_supported(scheme, model.device)
    if scheme != "none":
        for layer in model.layers:
            for name in _LINEAR_FIELDS:
                setattr(layer, name, quantize_weight(getattr(layer, name), scheme, model.dtype))
    size = weight_bytes(model)
    log.info("weights: %s, %.1f MB resident", scheme, size / 1e6)
    return size


def _tensor_bytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, Int8Weight | Int4Weight | Fp8Weight):
        return sum(_tensor_bytes(getattr(value, f.name)) for f in fields(value))
    return 0


def weight_bytes(model: Any) -> int:
    """Bytes of all weights the model holds (tied embedding/head counted once), quantized or not."""
    seen: set[int] = set()
    total = 0
    values: list[Any] = [model.embed, model.norm, model.lm_head]
    for layer in model.layers:
        values.extend(getattr(layer, f.name) for f in fields(layer))
    for value in values:
        if value is None or id(value) in seen:
            continue
        seen.add(id(value))
        total += _tensor_bytes(value)
    return total
