// The small elementwise steps around the projections, fused: each was several torch ops that read and wrote
// the whole activation once per op (F.rms_norm alone is seven in bf16: upcast, pow, mean, add, rsqrt, mul,
// mul). On a 200-token SmolLM2 prefill they cost ~10 of ~75 ms; fused they read their input once.
//
//   add_rms_norm_(x, residual, weight, eps) -> normed: x += residual in place, then rms_norm(x) * weight
//   rms_norm(x, weight, eps) -> normed
//   silu_mul(gate_up) -> silu(gate) * up, gate and up the two halves of the last dimension
//   rope_(qkv, cos, sin, positions, rotated_heads) -> (): rotary embedding of the first rotated_heads heads of
//     each row of the fused QKV projection, in place (cos and sign-folded sin tables as model/rope.py builds)
// Statistics and activations are float32 whatever the storage dtype.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <type_traits>
#include <vector>

#include "simd.h"

namespace {

template <typename T>
void rms_norm_rows(T* x, const T* residual, const T* weight, T* out, int64_t rows, int64_t width, float eps) {
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> row(width), w(width);
    for (int64_t d = 0; d < width; ++d) w[d] = static_cast<float>(weight[d]);
    for (int64_t r = begin; r < end; ++r) {
      T* xr = x + r * width;
      float squares = 0.0f;
      for (int64_t d = 0; d < width; ++d) {
        float v = static_cast<float>(xr[d]);
        if (residual != nullptr) {
          v += static_cast<float>(residual[r * width + d]);
          xr[d] = static_cast<T>(v);
          v = static_cast<float>(xr[d]);  // normalize the stored (rounded) sum, as the unfused ops do
        }
        row[d] = v;
        squares += v * v;
      }
      const float inv = 1.0f / std::sqrt(squares / static_cast<float>(width) + eps);
      T* o = out + r * width;
      for (int64_t d = 0; d < width; ++d) o[d] = static_cast<T>(row[d] * inv * w[d]);
    }
  });
}

template <typename T>
void silu_mul_rows(const T* gate_up, T* out, int64_t rows, int64_t width) {
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* gate = gate_up + r * 2 * width;
      const T* up = gate + width;
      T* o = out + r * width;
      int64_t d = 0;
#if defined(__AVX512F__)
      if constexpr (!std::is_same_v<T, double>) {
        const __m512 one = _mm512_set1_ps(1.0f);
        for (; d + 16 <= width; d += 16) {
          const __m512 g = sloserve::load16(gate + d);
          const __m512 silu = _mm512_div_ps(g, _mm512_add_ps(one, sloserve::exp16(_mm512_sub_ps(_mm512_setzero_ps(), g))));
          sloserve::store16(o + d, _mm512_mul_ps(silu, sloserve::load16(up + d)));
        }
      }
#endif
      for (; d < width; ++d) {
        const float g = static_cast<float>(gate[d]);
        o[d] = static_cast<T>(g / (1.0f + std::exp(-g)) * static_cast<float>(up[d]));
      }
    }
  });
}

template <typename T>
void rope_rows(T* qkv, const T* cos, const T* sin, const int64_t* positions, int64_t rows, int64_t row_width,
               int64_t heads, int64_t dim) {
  const int64_t half = dim / 2;
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> x(dim), c(dim), s(dim);
    for (int64_t r = begin; r < end; ++r) {
      const T* cr = cos + positions[r] * dim;
      const T* sr = sin + positions[r] * dim;
      for (int64_t d = 0; d < dim; ++d) {
        c[d] = static_cast<float>(cr[d]);
        s[d] = static_cast<float>(sr[d]);
      }
      for (int64_t h = 0; h < heads; ++h) {
        T* head = qkv + r * row_width + h * dim;
        for (int64_t d = 0; d < dim; ++d) x[d] = static_cast<float>(head[d]);
        for (int64_t d = 0; d < dim; ++d) head[d] = static_cast<T>(x[d] * c[d] + x[(d + half) % dim] * s[d]);
      }
    }
  });
}

void rope_(at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& positions,
           int64_t rotated_heads) {
  TORCH_CHECK(qkv.dim() == 2 && qkv.is_contiguous(), "qkv must be a contiguous [rows, width] matrix");
  TORCH_CHECK(cos.dim() == 2 && cos.sizes() == sin.sizes() && cos.is_contiguous() && sin.is_contiguous(),
              "cos and sin must be contiguous [positions, head_dim] tables");
  TORCH_CHECK(cos.scalar_type() == qkv.scalar_type() && sin.scalar_type() == qkv.scalar_type(), "table dtype");
  const int64_t dim = cos.size(1);
  TORCH_CHECK(dim % 2 == 0 && rotated_heads * dim <= qkv.size(1), "rotated heads exceed the row");
  TORCH_CHECK(positions.scalar_type() == at::kLong && positions.numel() == qkv.size(0), "one position per row");
  const at::Tensor pos = positions.contiguous();
  TORCH_CHECK(sloserve::all_within(pos, 0, cos.size(0) - 1),
              "position beyond the rotary tables");
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, qkv.scalar_type(), "rope_", [&] {
    rope_rows<scalar_t>(qkv.data_ptr<scalar_t>(), cos.data_ptr<scalar_t>(), sin.data_ptr<scalar_t>(),
                        pos.data_ptr<int64_t>(), qkv.size(0), qkv.size(1), rotated_heads, dim);
  });
}

void check_rows(const at::Tensor& x, const at::Tensor& weight) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous(), "x must be a contiguous [rows, width] matrix");
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == x.size(1) && weight.scalar_type() == x.scalar_type(),
              "weight must be [width] of x's dtype");
}

at::Tensor add_rms_norm_(at::Tensor& x, const at::Tensor& residual, const at::Tensor& weight, double eps) {
  check_rows(x, weight);
  TORCH_CHECK(residual.sizes() == x.sizes() && residual.scalar_type() == x.scalar_type(), "residual like x");
  const at::Tensor res = residual.contiguous(), w = weight.contiguous();
  at::Tensor out = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "add_rms_norm_", [&] {
    rms_norm_rows<scalar_t>(x.data_ptr<scalar_t>(), res.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
                            out.data_ptr<scalar_t>(), x.size(0), x.size(1), static_cast<float>(eps));
  });
  return out;
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  check_rows(x, weight);
  const at::Tensor w = weight.contiguous();
  at::Tensor out = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "rms_norm", [&] {
    rms_norm_rows<scalar_t>(const_cast<scalar_t*>(x.data_ptr<scalar_t>()), nullptr, w.data_ptr<scalar_t>(),
                            out.data_ptr<scalar_t>(), x.size(0), x.size(1), static_cast<float>(eps));
  });
  return out;
}

at::Tensor silu_mul(const at::Tensor& gate_up) {
  TORCH_CHECK(gate_up.dim() == 2 && gate_up.is_contiguous() && gate_up.size(1) % 2 == 0,
              "gate_up must be a contiguous [rows, 2 * width] matrix");
  const int64_t width = gate_up.size(1) / 2;
  at::Tensor out = at::empty({gate_up.size(0), width}, gate_up.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, gate_up.scalar_type(), "silu_mul", [&] {
    silu_mul_rows<scalar_t>(gate_up.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), gate_up.size(0), width);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(sloserve, m) {
  m.def("add_rms_norm_(Tensor(a!) x, Tensor residual, Tensor weight, float eps) -> Tensor");
  m.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor");
  m.def("silu_mul(Tensor gate_up) -> Tensor");
  m.def("rope_(Tensor(a!) qkv, Tensor cos, Tensor sin, Tensor positions, int rotated_heads) -> ()");
}

TORCH_LIBRARY_IMPL(sloserve, CPU, m) {
  m.impl("add_rms_norm_", &add_rms_norm_);
  m.impl("rms_norm", &rms_norm);
  m.impl("silu_mul", &silu_mul);
  m.impl("rope_", &rope_);
}
