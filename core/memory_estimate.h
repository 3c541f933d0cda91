// A torch-free estimate of the memory one training run needs on its device at its peak, for the
// New Run dialog to show before anything is launched. `ganpo bench` prints it beside the peak it
// measures: the CUDA allocator's on a GPU, the live CPU tensors' (core/cpu_tensor_memory.h) on
// the CPU, where tests/core/memory_estimate_measured_test.cpp holds it within 15 % of that peak
// in float32 for the layouts it trains (LibTorch 1.13 and 2.x). bf16 autocast and the CUDA
// kernels are counted from what they keep; only a GPU measures them (packaging/gpu-bench-table.sh).
//
// Counted, in bytes:
//   weights      policy parameters: 4 bytes each (float32 master weights in either precision),
//                LoRA adapters included; under bf16 a LoRA run's frozen base projections 2 bytes
//                each when the folder stores them in bf16
//   gradients    one per trained parameter (every one, or only the LoRA adapters), float32
//   optimizer    AdamW's two moments per trained parameter, always fp32 (8 bytes per parameter)
//   reference    a frozen float32 copy of the policy for the preference stage (none for "sft",
//                none with LoRA, whose reference is the policy with its adapters off); under
//                bf16 its projections in bf16 (2 bytes), embeddings and norms float32
//   activation   what the policy keeps from its forward pass to its backward pass, and the
//                largest transient on top of it (below)
//   critic       GANPO on (preference stage only): the two critics' fp32 weights, gradients and
//                AdamW moments (16 bytes per critic parameter), the latents they read, and what
//                their passes add to the peak (below)
//   evaluation   between two steps, instead of the activations: a held-out evaluation's passes
//                without gradients at train.per_device_eval_batch_size (below)
// The run's peak is the larger of an optimizer step's (all but evaluation) and an evaluation's
// (weights, gradients, moments, reference, the critics' weights and the evaluation's passes):
// with a small training batch the evaluation's larger one, and its logits, can be the peak.
// Activations follow this code's tensors (core/model/causal_lm.cpp), one micro-batch of
// full-length rows (data.max_length, prompts of data.max_prompt_length) as the trainer lays
// them out: chosen and rejected in one pass, each prompt run once where train.prefix_sharing
// applies. Per token and layer: the block's input and the residual after attention (float32),
// each norm's output as the products after it keep it (once in float32; under bf16 autocast a
// bf16 copy per product), q k v (k and v per key, per query head), the heads' output, the
// MLP's (4 d_ff values gated, 2 for GELU), Gemma 2's extra norms' inputs, and the attention:
// with scaled_dot_product_attention (LibTorch 2.1 on) its output and log-sum-exp, else (LibTorch
// 1.13, or soft-capped scores) the probabilities of every key a query sees. With LoRA a frozen
// product keeps no input. Gradient checkpointing keeps each block's input and one block's set
// while it runs again. Under autocast each product also keeps its bf16 copy of the weight.
// Then the output head over the response positions: the logits kept and about 16 bytes per
// vocabulary entry in its backward pass, or one chunk of logits through the chunked head
// (train.chunked_logps). The transients: the head's backward pass (with its weight's gradient,
// which a tied embedding holds through the whole pass), the reference's forward pass (its keys
// and values for shared prompts, its head), each critic's phase, or the adversarial term's
// critic activations through the policy's backward pass; at the end of the backward pass, the
// embedding's dense gradient. An evaluation's pass keeps one layer's temporaries (or the shared
// prompts' keys and values) and its head's logits, a float32 copy and their exp.
// Callers pass the resolved device ("auto" counts as the CPU). Not counted: the CUDA context and
// allocator slack, the tokenized dataset, small tensors.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "core/config.h"
#include "core/model/model_shape.h"

namespace ganpo {

// The built-in byte tokenizer's vocabulary (256 bytes + BOS, EOS, PAD).
inline constexpr int64_t kByteTokenizerVocab = 259;

// The shape a fresh model of these fields has, with the byte tokenizer's vocabulary; none where
// model.arch names no model family (a form's config before it is valid).
std::optional<ModelShape> fresh_model_shape(const ModelConfig& model);

struct MemoryEstimate {
  int64_t parameters = 0;       // policy parameters (the base model's)
  int64_t lora_parameters = 0;  // LoRA adapter parameters (0 without LoRA)
  int64_t weights_bytes = 0;
  int64_t gradients_bytes = 0;
  int64_t optimizer_bytes = 0;
  int64_t reference_bytes = 0;
  int64_t critic_bytes = 0;
  int64_t activation_bytes = 0;
  // What a held-out evaluation's passes add to the weights, gradients, moments, reference and
  // critics' weights between two steps, when the step's activations are gone.
  int64_t evaluation_bytes = 0;
  int64_t step_total_bytes = 0;        // an optimizer step's peak: every part above but evaluation
  int64_t evaluation_total_bytes = 0;  // a held-out evaluation's peak
  int64_t total_bytes = 0;             // the run's peak: the larger of the two
};

// Whether the estimate counts scaled_dot_product_attention (LibTorch 2.1 and later, which keeps
// no attention probabilities) for the LibTorch this build links.
bool torch_has_sdpa();

// Parameters of one GANPO critic (LatentCritic in core/train/critic.h) reading input_dim-wide latents.
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

// What a run's memory went to when it ran out: its models' weights (loading them, or a resume's
// optimizer state), its optimizer steps, its passes without gradients (held-out evaluations,
// precomputed reference log-probs), the live samples, or the judge's generations at the end.
enum class MemoryUse { models, training, evaluation, sampling, judging };

// What to change in `config` (its device resolved) so that `use` needs less memory, as a list to
// follow "To need less memory, ": only what changes something for this run (gradient
// checkpointing where it is off, a smaller batch where it is above 1, LoRA where every weight
// trains, bf16 on a GPU that computes in fp32, the chunked output head where a model of
// `vocab_size` entries, 32k and more, does not take it already), each with its config key and
// today's value. The models' weights need less only with LoRA (no reference copy, no gradients
// or AdamW moments of the base), bf16 (a reference stored in bf16) or a smaller model; several
// processes on the CPU (train.num_processes: those on this machine) each hold their own copy.
std::string ways_to_use_less_memory(const RunConfig& config, int64_t vocab_size, MemoryUse use);

// The warning a run logs before it allocates when `processes` processes of this estimate need
// more than `available` bytes of `where` ("this machine's free RAM", "cuda:0 (NVIDIA H200, 140 GiB)"):
// the estimate leaves out the CUDA context and allocator slack, so such a run is likely killed by
// the system or runs out of device memory; with what to change in `config` (a model of
// `vocab_size` entries). "" when it fits or `available` is unknown (< 0).
std::string memory_shortfall_warning(const MemoryEstimate& estimate, int processes, int64_t available,
                                     const std::string& where, const RunConfig& config, int64_t vocab_size);

// Where the estimate's peak is: a held-out evaluation's (MemoryUse::evaluation) or a step's.
inline MemoryUse peak_use(const MemoryEstimate& e) {
  return e.evaluation_total_bytes > e.step_total_bytes ? MemoryUse::evaluation : MemoryUse::training;
}

// "8.0 GiB": bytes in GiB with one decimal, as the messages above say them.
std::string format_gib(double bytes);

}  // namespace ganpo
