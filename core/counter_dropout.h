// Dropout whose mask comes from a counter-based generator (Philox 4x32-10, the generator CUDA's
// dropout draws from), on the CPU.
//
// LibTorch's CPU dropout draws a Bernoulli sample per element from a serial generator (one
// locked Mersenne-Twister stream) and then makes two more passes to scale and multiply. Here
// element i keeps its value when the 32-bit word i of Philox(key = seed, counter = i / 4) is at
// least p * 2^32: the words are independent of each other, so the mask is drawn in one
// vectorisable pass split over the intra-op threads, and it is the same for any thread count.
// Nothing is stored for the backward pass, which draws the same words again from the seed.
//
// Each call takes one 64-bit seed from the given generator (or the default CPU generator), so a
// checkpointed generator state repeats the masks. Tensors that are not float32 on the CPU (CUDA,
// bf16) go through torch::dropout.
#pragma once

#include <torch/torch.h>

#include <array>
#include <cstdint>

namespace ganpo {

// x * keep / (1 - p), keep ~ Bernoulli(1 - p) per element; x itself when !training or p == 0.
torch::Tensor dropout(const torch::Tensor& x, double p, bool training,
                      const c10::optional<at::Generator>& generator = c10::nullopt);

// The mask arithmetic, exposed for tests: out[i] = x[i] * scale where word i of the Philox
// stream for `seed` is >= threshold, else 0. x: float32, CPU, contiguous.
torch::Tensor philox_dropout_mask_apply(const torch::Tensor& x, uint64_t seed, uint32_t threshold, float scale);

// One Philox 4x32-10 block. Dropout's word i is word i % 4 of the block at counter
// {i / 4 (low, high 32 bits), 0, 0} with key {seed (low, high 32 bits)}.
std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key);

}  // namespace ganpo
