// A torch-free estimate of the memory one training run needs on its device, for the New Run
// dialog to show before anything is launched.
//
// Counted, in bytes:
//   weights      policy parameters: 4 bytes each (float32 master weights in either precision),
//                LoRA adapters included
//   gradients    one per trained parameter (every one, or only the LoRA adapters), float32
//   optimizer    AdamW's two moments per trained parameter, always fp32 (8 bytes per parameter)
//   reference    a frozen float32 copy of the policy for the preference stage (none for "sft",
//                none with LoRA, whose reference is the policy with its adapters off)
//   critic       GANPO on (preference stage only): the two critics' fp32 weights, gradients and
//                AdamW moments (16 bytes per critic parameter) plus their activations (below)
//   activation   what the policy's backward keeps: per token and layer kActivationValuesPerLayer
//                values per d_model unit, 4 bytes each in "fp32" and 2 under "bf16" autocast
//                (with train.gradient_checkpointing, d_model values per token and layer, the
//                blocks' inputs, plus one layer's full set, recomputed in the backward pass),
//                plus per token the logits and their gradient: 8 bytes per vocabulary entry in
//                "fp32"; 12 under "bf16" (bf16 logits, the float32 copy the log-probs keep, and
//                the gradient of each)
// The policy sees per_device_train_batch_size x 2 rows (chosen and rejected in one forward)
// of data.max_length tokens. kActivationValuesPerLayer = 17 follows Korthikanti et al. 2022
// ("Reducing Activation Recomputation in Large Transformer Models"): 34 s b h bytes per layer
// in 16-bit, i.e. 17 stored values per token per hidden unit, without the attention-score term,
// which scaled_dot_product_attention (LibTorch 2.x) does not keep. LibTorch 1.13 keeps the
// scores, so there the estimate is low for long sequences. The critics compute attention
// explicitly, so their scores and softmax are counted: each critic sees 3 x batch latent rows
// (reference chosen, reference rejected, policy) of min(max_length, critic_max_len) positions,
// with per layer 17 x critic_hidden + 2 x critic_heads x T values per position, in fp32.
// Not counted: the reference's transient forward, the CUDA context, allocator slack, the
// tokenized dataset. Treat the total as a lower bound to compare against the device's memory.
#pragma once

#include <cstdint>
#include <string>

#include "core/config.h"
#include "core/model/model_shape.h"

namespace ganpo {

// Stored activation values per token, per layer and per d_model unit (see above).
inline constexpr int64_t kActivationValuesPerLayer = 17;
// The built-in byte tokenizer's vocabulary (256 bytes + BOS, EOS, PAD).
inline constexpr int64_t kByteTokenizerVocab = 259;

struct MemoryEstimate {
  int64_t parameters = 0;       // policy parameters (the base model's)
  int64_t lora_parameters = 0;  // LoRA adapter parameters (0 without LoRA)
  int64_t weights_bytes = 0;
  int64_t gradients_bytes = 0;
  int64_t optimizer_bytes = 0;
  int64_t reference_bytes = 0;
  int64_t critic_bytes = 0;
  int64_t activation_bytes = 0;
  int64_t total_bytes = 0;
};

// Parameters of one GANPO critic (LatentCritic in core/critic.h) reading input_dim-wide latents.
int64_t critic_parameter_count(const GanpoConfig& ganpo, int64_t input_dim);

// Parameters of the LoRA adapters model.lora puts on a model of this shape (0 when off).
int64_t lora_parameter_count(const ModelShape& shape, const LoraConfig& lora);

// The shape comes from the config (resolve_model_shape) with the byte tokenizer's vocabulary.
MemoryEstimate estimate_training_memory(const RunConfig& config);
// The same for a known shape, e.g. one read from a checkpoint's config.json.
MemoryEstimate estimate_training_memory(const RunConfig& config, const ModelShape& shape);

// A field of /proc/meminfo in bytes ("MemAvailable": free now, reclaimable caches counted;
// "MemTotal"), or -1 where it cannot be read.
int64_t system_memory_bytes(const std::string& field);

// The warning a run logs before it allocates when `processes` processes of this estimate need
// more than `available` bytes of `where` ("this machine's free RAM", "cuda:0 (NVIDIA H200, 140 GiB)"):
// the estimate is a lower bound, so such a run is likely killed by the system or runs out of
// device memory. "" when it fits or `available` is unknown (< 0).
std::string memory_shortfall_warning(const MemoryEstimate& estimate, int processes, int64_t available,
                                     const std::string& where);

}  // namespace ganpo
