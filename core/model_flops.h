// Model FLOPs of a training step, for the dashboard's throughput and model FLOPs utilisation
// (MFU) as PaLM defines it (Chowdhery et al. 2022, appendix B): the matrix products the model
// needs for the tokens it trains on, 2 FLOPs per multiply-add, a backward pass counted as twice
// its forward (input and weight gradients). Not counted: element-wise work, gradient
// checkpointing's recomputation, padding. The output head is counted for every token, as in
// PaLM's 6N (this engine runs it only from the first response position, so for long prompts the
// figure is an upper bound of the head's share); the attention term counts all T x T scores.
//
//   forward per token (model)  = 2 (weight-matrix parameters, head included) + 4 L (H hd) T
//   forward per position (critic) = 2 (its matrix parameters) + 4 L_c h P
//
// A preference micro-batch of B pairs (2B rows, `tokens` real tokens, padded length T):
//   policy     3 x forward x tokens (2 x with LoRA: a frozen weight gets no gradient)
//   reference  1 x forward x tokens (without the head when only GANPO's latents are needed; 0
//              when its log-probs were precomputed and GANPO is off)
//   where a pass shared each prompt between the pair's responses (train.prefix_sharing), its
//   tokens are the batch's less one copy of each prompt
//   critics    each critic scores 3B rows in its phase (forward + backward) and B policy rows
//              in the policy's phase (forward + input gradients): 2 x (3 x 3B + 2 x B) x P x
//              critic forward per position, P = min(T, critic_max_len)
#pragma once

#include <cstdint>

#include "core/config.h"
#include "core/model/model_shape.h"

namespace ganpo {

// Forward FLOPs of one token at sequence length T; without the output head when head = false.
double forward_flops_per_token(const ModelShape& shape, int64_t T, bool head = true);

// Forward FLOPs of one position through a GANPO critic reading `positions` latent positions.
double critic_forward_flops_per_position(const GanpoConfig& ganpo, int64_t input_dim, int64_t positions);

struct MicroBatchWork {
  int64_t tokens = 0;       // real tokens in the batch
  int64_t length = 0;       // padded sequence length T
  int64_t pairs = 0;        // B (preference); 0 for an SFT batch
  bool lora = false;        // only adapters train
  bool reference = true;    // the reference runs
  bool reference_head = true;  // ... with its output head
  bool critics = false;     // GANPO on
  // Prompt tokens that ran once for both responses of their pair (prefix sharing) in the
  // policy's and in the reference's pass: that pass ran that many fewer tokens.
  int64_t policy_shared_prompt_tokens = 0;
  int64_t reference_shared_prompt_tokens = 0;
};

// Model FLOPs of one micro-batch of a run with this config and model shape.
double micro_batch_flops(const RunConfig& config, const ModelShape& shape, const MicroBatchWork& work);

// Peak dense matrix FLOP/s of a GPU named like torch / nvidia-smi name it ("NVIDIA H200"), for
// bf16 and for fp32 (TF32 off); 0 when the name is not in the table (and for CPUs).
double peak_flops_per_second(const std::string& device_name, bool bf16);

}  // namespace ganpo
