// The small models the LoRA tests adapt: d 32, 2 layers, 4 heads (2 key/value heads for Llama),
// 64 positions, the byte tokenizer's vocabulary. Without LibTorch.
#pragma once

#include <string>

#include "core/config.h"
#include "core/model/model_shape.h"

namespace ganpo {

inline ModelConfig lora_test_model(const std::string& arch) {
  ModelConfig c;
  c.preset = "";
  c.arch = arch;
  c.d_model = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = arch == "llama" ? 2 : 0;
  c.max_seq_len = 64;
  return c;
}

inline ModelShape lora_test_shape(const std::string& arch) { return resolve_model_shape(lora_test_model(arch), 259); }

}  // namespace ganpo
