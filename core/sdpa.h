// Whether this LibTorch has scaled_dot_product_attention with every argument the models and
// critics pass (attn_mask, dropout_p, is_causal, scale): LibTorch 2.1 and later. LibTorch then
// picks its kernel per call from the device, dtype and mask (flash, memory-efficient or cuDNN on
// CUDA, a flash kernel on the CPU, the math kernel otherwise). Earlier LibTorch (Debian 12 ships
// 1.13) computes attention explicitly: core/model/causal_lm.cpp by blocks of causal queries,
// core/train/critic.cpp as one masked batched product.
#pragma once

#include <torch/version.h>

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
#define GANPO_HAVE_SDPA 1
#else
#define GANPO_HAVE_SDPA 0
#endif
