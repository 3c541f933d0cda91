#include "core/counter_dropout.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>

namespace ganpo {
namespace {

// Philox 4x32 with 10 rounds (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
// SC 2011; the constants of Random123 and curand).
constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;

inline std::array<uint32_t, 4> philox(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(kMul0) * c0;
    const uint64_t p1 = static_cast<uint64_t>(kMul1) * c2;
    const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    const uint32_t n1 = static_cast<uint32_t>(p1);
    const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    const uint32_t n3 = static_cast<uint32_t>(p0);
    c0 = n0, c1 = n1, c2 = n2, c3 = n3;
    k0 += kWeyl0;
    k1 += kWeyl1;
  }
  return {c0, c1, c2, c3};
}

// out[i] = x[i] * (word i >= threshold ? scale : 0) for the elements of blocks [first, last).
void apply_blocks(const float* __restrict x, float* __restrict out, int64_t first, int64_t last, int64_t numel,
                  uint64_t seed, uint32_t threshold, float scale) {
  const auto k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int64_t b = first; b < last; ++b) {
    const auto r = philox(static_cast<uint32_t>(b), static_cast<uint32_t>(static_cast<uint64_t>(b) >> 32), 0, 0, k0, k1);
    const int64_t base = 4 * b;
    const int64_t n = std::min<int64_t>(4, numel - base);
    for (int64_t j = 0; j < n; ++j) out[base + j] = r[j] >= threshold ? x[base + j] * scale : 0.0f;
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
#define GANPO_PHILOX_AVX2 1
// The same words, eight blocks at a time in AVX2 registers (GCC does not vectorise the 32 x 32
// -> 64-bit products of the loop above): about 4x faster than it on one core. Lane j of c0..c3
// holds word 0..3 of block first + j.
__attribute__((target("avx2"))) inline __m256i mulhi32(__m256i a, __m256i m) {
  const __m256i even = _mm256_srli_epi64(_mm256_mul_epu32(a, m), 32);   // lanes 0, 2, 4, 6
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);    // high halves: lanes 1, 3, 5, 7
  return _mm256_blend_epi32(even, odd, 0xAA);
}

// Whole groups of eight blocks from `first`; returns the first block it did not do.
__attribute__((target("avx2"))) int64_t apply_blocks_avx2(const float* __restrict x, float* __restrict out,
                                                          int64_t first, int64_t last, uint64_t seed,
                                                          uint32_t threshold, float scale) {
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(kMul0)), m1 = _mm256_set1_epi32(static_cast<int>(kMul1));
  // Unsigned word >= threshold as a signed comparison: flip the sign bit of both sides.
  const __m256i sign = _mm256_set1_epi32(static_cast<int>(0x80000000u));
  const __m256i below = _mm256_set1_epi32(static_cast<int>(threshold ^ 0x80000000u));
  const __m256 s = _mm256_set1_ps(scale);
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  int64_t b = first;
  for (; b + 8 <= last; b += 8) {
    if (static_cast<uint32_t>(b) > 0xFFFFFFF8u) break;  // the low word would wrap inside the group
    __m256i c0 = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(b))), lane);
    __m256i c1 = _mm256_set1_epi32(static_cast<int>(static_cast<uint64_t>(b) >> 32));
    __m256i c2 = _mm256_setzero_si256(), c3 = _mm256_setzero_si256();
    uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
    for (int round = 0; round < 10; ++round) {
      const __m256i n0 = _mm256_xor_si256(_mm256_xor_si256(mulhi32(c2, m1), c1), _mm256_set1_epi32(static_cast<int>(k0)));
      const __m256i n1 = _mm256_mullo_epi32(c2, m1);
      const __m256i n2 = _mm256_xor_si256(_mm256_xor_si256(mulhi32(c0, m0), c3), _mm256_set1_epi32(static_cast<int>(k1)));
      const __m256i n3 = _mm256_mullo_epi32(c0, m0);
      c0 = n0, c1 = n1, c2 = n2, c3 = n3;
      k0 += kWeyl0;
      k1 += kWeyl1;
    }
    // Transpose to element order (block j's four words are elements 4j .. 4j + 3): the unpacks
    // give blocks (0, 4), (1, 5), (2, 6), (3, 7) in the two 128-bit halves.
    const __m256i t0 = _mm256_unpacklo_epi32(c0, c1), t1 = _mm256_unpackhi_epi32(c0, c1);
    const __m256i t2 = _mm256_unpacklo_epi32(c2, c3), t3 = _mm256_unpackhi_epi32(c2, c3);
    const __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
    const __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
    const __m256i words[4] = {_mm256_permute2x128_si256(u0, u1, 0x20), _mm256_permute2x128_si256(u2, u3, 0x20),
                              _mm256_permute2x128_si256(u0, u1, 0x31), _mm256_permute2x128_si256(u2, u3, 0x31)};
    for (int q = 0; q < 4; ++q) {
      const __m256i drop = _mm256_cmpgt_epi32(below, _mm256_xor_si256(words[q], sign));  // word < threshold
      const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + 4 * b + 8 * q), s);
      _mm256_storeu_ps(out + 4 * b + 8 * q, _mm256_andnot_ps(_mm256_castsi256_ps(drop), v));
    }
  }
  return b;
}
#endif

uint64_t draw_seed(const c10::optional<at::Generator>& generator) {
  auto* gen = at::get_generator_or_default<at::CPUGeneratorImpl>(generator, at::detail::getDefaultCPUGenerator());
  std::lock_guard<std::mutex> lock(gen->mutex_);
  return gen->random64();
}

// Keeps the words at or above threshold: P(keep) = 1 - threshold / 2^32 = 1 - p to 2^-32.
uint32_t threshold_for(double p) {
  const double t = std::ceil(p * 4294967296.0);
  return t >= 4294967295.0 ? std::numeric_limits<uint32_t>::max() : static_cast<uint32_t>(t);
}

// The mask is linear in x with the same words in both directions, so the backward pass is the
// same function of the incoming gradient (and itself differentiable).
struct PhiloxDropout : torch::autograd::Function<PhiloxDropout> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, int64_t seed,
                               int64_t threshold, double scale) {
    ctx->saved_data["seed"] = seed;
    ctx->saved_data["threshold"] = threshold;
    ctx->saved_data["scale"] = scale;
    return philox_dropout_mask_apply(x, static_cast<uint64_t>(seed), static_cast<uint32_t>(threshold),
                                     static_cast<float>(scale));
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto g = PhiloxDropout::apply(grads[0], ctx->saved_data["seed"].toInt(), ctx->saved_data["threshold"].toInt(),
                                  ctx->saved_data["scale"].toDouble());
    return {g, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key) {
  return philox(counter[0], counter[1], counter[2], counter[3], key[0], key[1]);
}

torch::Tensor philox_dropout_mask_apply(const torch::Tensor& x_in, uint64_t seed, uint32_t threshold, float scale) {
  TORCH_CHECK(x_in.device().is_cpu() && x_in.scalar_type() == torch::kFloat32, "philox dropout: float32 CPU tensors only");
  const auto x = x_in.contiguous();
  auto out = torch::empty_like(x, torch::MemoryFormat::Contiguous);
  const float* xp = x.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t numel = x.numel(), blocks = (numel + 3) / 4;
  // 8k blocks (32k elements) per task: below that, handing work to threads costs more than it
  // saves. ATen's parallel_for is OpenMP in its header: this file is compiled with -fopenmp.
#ifdef GANPO_PHILOX_AVX2
  static const bool avx2 = __builtin_cpu_supports("avx2");
#endif
  at::parallel_for(0, blocks, 8192, [&](int64_t begin, int64_t end) {
#ifdef GANPO_PHILOX_AVX2
    // Not the last block, which may be partial: the vector loop writes whole blocks.
    if (avx2) begin = apply_blocks_avx2(xp, op, begin, std::min(end, numel / 4), seed, threshold, scale);
#endif
    apply_blocks(xp, op, begin, end, numel, seed, threshold, scale);
  });
  return out;
}

torch::Tensor dropout(const torch::Tensor& x, double p, bool training, const c10::optional<at::Generator>& generator) {
  if (!training || p <= 0.0) return x;
  if (!x.device().is_cpu() || x.scalar_type() != torch::kFloat32) {
    if (!generator.has_value()) return torch::dropout(x, p, true);
    auto keep = at::empty_like(x).bernoulli_(1.0 - p, *generator).div_(1.0 - p);
    return x * keep;
  }
  const int64_t seed = static_cast<int64_t>(draw_seed(generator));
  return PhiloxDropout::apply(x, seed, static_cast<int64_t>(threshold_for(p)), 1.0 / (1.0 - p));
}

}  // namespace ganpo
