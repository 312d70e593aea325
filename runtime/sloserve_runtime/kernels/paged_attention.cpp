// Attention straight from the paged KV cache. Each row of q is one query token that attends to the first
// `length` slots of its own block table: a decode is one row with length = its context; a prefill chunk is one
// row per token, all sharing the sequence's table, with lengths position + 1 (causal, and chunked prefill over a
// cached prefix comes for free). So one call per layer covers a whole mixed batch.
//
// Why: the torch path copies every decode's KV blocks into one batch (index_select) before two batched
// matmuls, and runs prefills through SDPA one sequence at a time. At decode batch 16 on SmolLM2 the copy alone
// was a quarter of the step; here each K/V row is read once, where it lies, widened to float32 in registers
// and used by all the query heads that share it.
//
// Layout (as PagedLlama allocates it): k_cache, v_cache [KVH, slots, D] with slot = block * block_size + offset;
// q [T, H, D] with query head h served by KV head h / (H / KVH); block_tables [T, NB] int64; lengths [T] int64.
// Scores, softmax and the weighted sum are float32 whatever the storage dtype.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "simd.h"

#include <algorithm>
#include <type_traits>
#include <cmath>
#include <vector>

namespace {

// Row helpers on float buffers. With AVX-512 the sums keep one vector accumulator and reduce it once; the
// scalar versions are the fallback for other CPUs (and for head sizes that are not a multiple of 16).
inline void to_float(const float* src, float* dst, int64_t n) { std::copy(src, src + n, dst); }
inline void to_float(const c10::Half* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}
inline void to_float(const double* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}

#if defined(__AVX512F__)
inline void to_float(const c10::BFloat16* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {  // bf16 is the top half of a float32: widen and shift
    const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16)));
  }
  for (; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}
inline float dot(const float* a, const float* b, int64_t n) {
  __m512 acc = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
  float total = _mm512_reduce_add_ps(acc);
  for (; i < n; ++i) total += a[i] * b[i];
  return total;
}
// exp(x - shift) for a row, in place, returning the row's sum: the softmax numerator.
inline float exp_shifted_sum(float* x, int64_t n, float shift) {
  const __m512 s = _mm512_set1_ps(shift);
  __m512 total = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 e = sloserve::exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), s));
    _mm512_storeu_ps(x + i, e);
    total = _mm512_add_ps(total, e);
  }
  float sum = _mm512_reduce_add_ps(total);
  for (; i < n; ++i) {
    x[i] = std::exp(x[i] - shift);
    sum += x[i];
  }
  return sum;
}
inline void axpy(float alpha, const float* x, float* y, int64_t n) {
  const __m512 a = _mm512_set1_ps(alpha);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_fmadd_ps(a, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += alpha * x[i];
}
#else
inline float exp_shifted_sum(float* x, int64_t n, float shift) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - shift);
    sum += x[i];
  }
  return sum;
}
inline void to_float(const c10::BFloat16* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}
inline float dot(const float* a, const float* b, int64_t n) {
  float total = 0.0f;
  for (int64_t i = 0; i < n; ++i) total += a[i] * b[i];
  return total;
}
inline void axpy(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}
#endif

// Visit a row's context in order, block by block (no division per token): visit(position, row pointer).
template <typename T, typename Visit>
inline void for_each_slot(const T* head, const int64_t* table, int64_t length, int64_t block_size, int64_t dim,
                          Visit&& visit) {
  for (int64_t start = 0, blk = 0; start < length; start += block_size, ++blk) {
    const int64_t count = std::min(block_size, length - start);
    const T* rows = head + table[blk] * block_size * dim;
    for (int64_t j = 0; j < count; ++j) visit(start + j, rows + j * dim);
  }
}

#if defined(__AVX512F__)
using sloserve::load16;
inline __m512 load16(const double*) { return _mm512_setzero_ps(); }  // never called: doubles take the generic path

// The common head sizes with the query group and the output accumulators held in registers: each K and V row
// is loaded once, widened in registers and used by all `G` query heads of its KV head.
template <typename T, int D, int G>
void attend_in_registers(const T* k_head, const T* v_head, const int64_t* table, int64_t length,
                         int64_t block_size, const float* query, float* scores, float* out) {
  constexpr int R = D / 16;
  __m512 q[G][R];
  for (int g = 0; g < G; ++g)
    for (int r = 0; r < R; ++r) q[g][r] = _mm512_loadu_ps(query + g * D + 16 * r);
  // Plain loops, not for_each_slot: a lambda capturing q and acc by reference kept them out of registers
  // (batch-1 decode step 8.8 -> 10.1 ms).
  for (int64_t start = 0, blk = 0; start < length; start += block_size, ++blk) {
    const int64_t count = std::min(block_size, length - start);
    const T* keys = k_head + table[blk] * block_size * D;
    for (int64_t j = 0; j < count; ++j) {
      __m512 k[R];
      for (int r = 0; r < R; ++r) k[r] = load16(keys + j * D + 16 * r);
      for (int g = 0; g < G; ++g) {
        __m512 acc = _mm512_mul_ps(q[g][0], k[0]);
        for (int r = 1; r < R; ++r) acc = _mm512_fmadd_ps(q[g][r], k[r], acc);
        scores[g * length + start + j] = _mm512_reduce_add_ps(acc);
      }
    }
  }
  float norm[G];
  for (int g = 0; g < G; ++g) {
    float* sg = scores + g * length;
    norm[g] = 1.0f / exp_shifted_sum(sg, length, *std::max_element(sg, sg + length));
  }
  __m512 acc[G][R];
  for (int g = 0; g < G; ++g)
    for (int r = 0; r < R; ++r) acc[g][r] = _mm512_setzero_ps();
  for (int64_t start = 0, blk = 0; start < length; start += block_size, ++blk) {
    const int64_t count = std::min(block_size, length - start);
    const T* values = v_head + table[blk] * block_size * D;
    for (int64_t j = 0; j < count; ++j) {
      __m512 v[R];
      for (int r = 0; r < R; ++r) v[r] = load16(values + j * D + 16 * r);
      for (int g = 0; g < G; ++g) {
        const __m512 p = _mm512_set1_ps(scores[g * length + start + j]);
        for (int r = 0; r < R; ++r) acc[g][r] = _mm512_fmadd_ps(p, v[r], acc[g][r]);
      }
    }
  }
  for (int g = 0; g < G; ++g)
    for (int r = 0; r < R; ++r) _mm512_storeu_ps(out + g * D + 16 * r, _mm512_mul_ps(acc[g][r], _mm512_set1_ps(norm[g])));
}

template <typename T, int D>
bool attend_fixed_dim(int64_t group, const T* k_head, const T* v_head, const int64_t* table, int64_t length,
                      int64_t block_size, const float* query, float* scores, float* out) {
  switch (group) {
    case 1: attend_in_registers<T, D, 1>(k_head, v_head, table, length, block_size, query, scores, out); return true;
    case 2: attend_in_registers<T, D, 2>(k_head, v_head, table, length, block_size, query, scores, out); return true;
    case 3: attend_in_registers<T, D, 3>(k_head, v_head, table, length, block_size, query, scores, out); return true;
    case 4: attend_in_registers<T, D, 4>(k_head, v_head, table, length, block_size, query, scores, out); return true;
    case 8: attend_in_registers<T, D, 8>(k_head, v_head, table, length, block_size, query, scores, out); return true;
    default: return false;
  }
}

template <typename T>
bool attend_fast(int64_t dim, int64_t group, const T* k_head, const T* v_head, const int64_t* table, int64_t length,
                 int64_t block_size, const float* query, float* scores, float* out) {
  if constexpr (std::is_same_v<T, double>) {
    return false;
  } else {
    if (dim == 64) return attend_fixed_dim<T, 64>(group, k_head, v_head, table, length, block_size, query, scores, out);
    if (dim == 128) return attend_fixed_dim<T, 128>(group, k_head, v_head, table, length, block_size, query, scores, out);
    return false;
  }
}
#else
template <typename T>
bool attend_fast(int64_t, int64_t, const T*, const T*, const int64_t*, int64_t, int64_t, const float*, float*, float*) {
  return false;
}
#endif

template <typename T>
void decode_attention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                      const at::Tensor& block_tables, const at::Tensor& lengths, int64_t block_size,
                      double scale, at::Tensor& out) {
  const int64_t batch = q.size(0), heads = q.size(1), dim = q.size(2);
  const int64_t kv_heads = k_cache.size(0), slots = k_cache.size(1);
  const int64_t group = heads / kv_heads, table_width = block_tables.size(1);
  const T* q_data = q.data_ptr<T>();
  const T* k_data = k_cache.data_ptr<T>();
  const T* v_data = v_cache.data_ptr<T>();
  const int64_t* tables = block_tables.data_ptr<int64_t>();
  const int64_t* lens = lengths.data_ptr<int64_t>();
  T* out_data = out.data_ptr<T>();
  const float fscale = static_cast<float>(scale);
  int64_t max_length = 0;
  for (int64_t b = 0; b < batch; ++b) max_length = std::max(max_length, lens[b]);

  // One work item per (query row, KV head): its `group` query heads share every K/V row that is read.
  at::parallel_for(0, batch * kv_heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> query(group * dim), acc(group * dim), row(dim), scores(group * max_length), norm(group);
    for (int64_t item = begin; item < end; ++item) {
      // Rows alternate from both ends so that the contiguous range each thread gets mixes short and long
      // contexts (a prefill's rows grow by one token each: in order, one thread would get all the long ones).
      const int64_t pair = item / kv_heads, h = item % kv_heads;
      const int64_t b = (pair % 2 == 0) ? pair / 2 : batch - 1 - pair / 2;
      const int64_t length = lens[b];
      const int64_t* table = tables + b * table_width;
      const T* k_head = k_data + h * slots * dim;
      const T* v_head = v_data + h * slots * dim;
      for (int64_t g = 0; g < group; ++g) {
        to_float(q_data + (b * heads + h * group + g) * dim, query.data() + g * dim, dim);
        for (int64_t d = 0; d < dim; ++d) query[g * dim + d] *= fscale;
      }
      if (attend_fast<T>(dim, group, k_head, v_head, table, length, block_size, query.data(), scores.data(), acc.data())) {
        for (int64_t g = 0; g < group; ++g) {
          T* dst = out_data + (b * heads + h * group + g) * dim;
          for (int64_t d = 0; d < dim; ++d) dst[d] = static_cast<T>(acc[g * dim + d]);
        }
        continue;
      }
      // Generic path: any head size and group, one widened row at a time.
      for_each_slot(k_head, table, length, block_size, dim, [&](int64_t t, const T* key) {
        to_float(key, row.data(), dim);
        for (int64_t g = 0; g < group; ++g) scores[g * length + t] = dot(query.data() + g * dim, row.data(), dim);
      });
      for (int64_t g = 0; g < group; ++g) {
        float* sg = scores.data() + g * length;
        norm[g] = 1.0f / exp_shifted_sum(sg, length, *std::max_element(sg, sg + length));
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      for_each_slot(v_head, table, length, block_size, dim, [&](int64_t t, const T* value) {
        to_float(value, row.data(), dim);
        for (int64_t g = 0; g < group; ++g) axpy(scores[g * length + t], row.data(), acc.data() + g * dim, dim);
      });
      for (int64_t g = 0; g < group; ++g) {
        T* dst = out_data + (b * heads + h * group + g) * dim;
        for (int64_t d = 0; d < dim; ++d) dst[d] = static_cast<T>(acc[g * dim + d] * norm[g]);
      }
    }
  });
}

at::Tensor paged_attention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                  const at::Tensor& block_tables, const at::Tensor& lengths, int64_t block_size,
                                  double scale) {
  TORCH_CHECK(q.dim() == 3 && k_cache.dim() == 3 && v_cache.dim() == 3, "q [B,H,D], caches [KVH,slots,D]");
  TORCH_CHECK(q.is_contiguous() && k_cache.is_contiguous() && v_cache.is_contiguous(), "contiguous inputs");
  TORCH_CHECK(k_cache.sizes() == v_cache.sizes() && q.size(2) == k_cache.size(2), "shape mismatch");
  TORCH_CHECK(q.size(1) % k_cache.size(0) == 0, "query heads must be a multiple of KV heads");
  TORCH_CHECK(q.scalar_type() == k_cache.scalar_type() && q.scalar_type() == v_cache.scalar_type(), "dtypes");
  TORCH_CHECK(block_tables.scalar_type() == at::kLong && lengths.scalar_type() == at::kLong, "int64 tables");
  TORCH_CHECK(block_tables.dim() == 2 && block_tables.size(0) == q.size(0) && lengths.size(0) == q.size(0),
              "one block table and one length per query row");
  const at::Tensor tables = block_tables.contiguous(), lens = lengths.contiguous();
  TORCH_CHECK(sloserve::all_within(lens, 1, tables.size(1) * block_size), "lengths out of range");
  at::Tensor out = at::empty_like(q);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "paged_attention", [&] {
    decode_attention<scalar_t>(q, k_cache, v_cache, tables, lens, block_size, scale, out);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(sloserve, m) {
  m.def("paged_attention(Tensor q, Tensor k_cache, Tensor v_cache, Tensor block_tables, "
        "Tensor lengths, int block_size, float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(sloserve, CPU, m) { m.impl("paged_attention", &paged_attention); }
