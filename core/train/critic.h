// GANPO's latent critics and relativistic-average losses (../shared/GANPO.md sections 1-3).
//
// A LatentCritic maps a latent sequence [N, T, d] to one logit per sequence: spectrally
// normalised input projection, learned positions, pre-norm transformer encoder layers, masked
// mean pooling, spectrally normalised MLP head. GanpoRegularizer owns the two critics D_w
// ("good") and D_l ("bad"), the six EMA relativistic means, and forms the critic losses
// (L_Dw, L_Dl, on detached latents) and the policy's adversarial term L_adv (critics frozen).
#pragma once

#include <torch/torch.h>

#include <functional>
#include <map>
#include <string>

#include "core/batching.h"
#include "core/config.h"
#include "core/parallel_lanes.h"

namespace ganpo {

// Linear layer whose weight is divided by its largest singular value, estimated by one power
// iteration per training forward (as torch.nn.utils.spectral_norm). In eval mode the stored
// u, v vectors are used without iterating.
class SpectralLinearImpl : public torch::nn::Module {
public:
  SpectralLinearImpl(int64_t in, int64_t out);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor normalized_weight();  // W / sigma with the current u, v
  torch::Tensor weight, bias;         // [out, in], [out]
  torch::Tensor u, v;                 // buffers [out], [in]
};
TORCH_MODULE(SpectralLinear);

struct CriticShape {
  int64_t input_dim = 128;   // d of the policy's hidden states
  int64_t hidden = 512;
  int64_t layers = 2;
  int64_t heads = 8;
  int64_t ffn_mult = 4;
  int64_t max_len = 2048;
  double dropout = 0.1;
};
CriticShape critic_shape(const GanpoConfig& config, int64_t input_dim);
// How this build computes the critics' attention, for the run log (see core/sdpa.h).
std::string critic_attention_note(double dropout, const torch::Device& device);

class LatentCriticImpl : public torch::nn::Module {
public:
  explicit LatentCriticImpl(const CriticShape& shape);
  // latents [N, T, d]; mask [N, T] (1 = position counts) or undefined for all positions.
  torch::Tensor forward(const torch::Tensor& latents, const torch::Tensor& mask);  // [N]
  const CriticShape& shape() const { return shape_; }
  // Dropout draws from this generator instead of the global one, so the two critics can train
  // on two threads and still draw the same numbers whichever runs first (CPU only).
  void set_dropout_generator(c10::optional<at::Generator> generator) { dropout_gen_ = std::move(generator); }
  const c10::optional<at::Generator>& dropout_generator() const { return dropout_gen_; }

private:
  CriticShape shape_;
  c10::optional<at::Generator> dropout_gen_;
  SpectralLinear input_proj_{nullptr};
  torch::Tensor pos_embedding_;  // [1, max_len, hidden]
  torch::nn::ModuleList layers_{nullptr};
  SpectralLinear head1_{nullptr}, head2_{nullptr};
};
TORCH_MODULE(LatentCritic);

// The four latent sets of one micro-batch (detached or not, as the phase needs).
struct LatentSets {
  torch::Tensor ref_chosen;        // A   [B, T, d]
  torch::Tensor ref_rejected;      // B   [B, T, d]
  torch::Tensor policy_chosen;     // P_w [B, T, d]
  torch::Tensor policy_rejected;   // P_l [B, T, d]
  torch::Tensor chosen_mask;       // [B, T] critic mask for chosen rows (undefined = all)
  torch::Tensor rejected_mask;     // [B, T]
};

// The critics' row masks of a preference batch ([chosen; rejected], `pairs` rows each) under
// ganpo.critic_mask: "none" reads every position, padding included; "attention" the rows' real
// tokens; "response" their response tokens. Undefined (every position) for "none", and for
// "attention" when no row is padded: the critics then score the same up to rounding (an all-ones
// mask changes nothing) without a key mask, which under bf16 autocast on CUDA lets
// scaled_dot_product_attention take its flash kernel (it takes no mask; its dropout draws other
// masks than the memory-efficient kernel's, the same in distribution). Known from the host's
// token count: no device read.
struct CriticMasks {
  torch::Tensor chosen;    // [B, T] or undefined
  torch::Tensor rejected;  // [B, T] or undefined
};
CriticMasks critic_masks(const std::string& mode, const SequenceBatch& rows, int64_t pairs);

// One critic's half of the critic phase: D_w on (A, B, P_w) or D_l on (B, A, P_l).
enum class CriticSide { Chosen, Rejected };
struct CriticHalf {
  torch::Tensor loss;  // L_Dw or L_Dl []
  torch::Tensor acc;   // [] fraction of the four comparisons right
};

struct CriticPhase {
  torch::Tensor loss_chosen;    // L_Dw []
  torch::Tensor loss_rejected;  // L_Dl []
  torch::Tensor acc_chosen;     // [] fraction of D_w's four comparisons right
  torch::Tensor acc_rejected;   // []
};

struct AdversarialTerm {
  torch::Tensor loss;        // L_adv []
  torch::Tensor g_chosen;    // bce(D_w(P_w) - mu_w[A], 1) []
  torch::Tensor g_rejected;  // bce(D_l(P_l) - mu_l[B], 1) []
};

// Names of the six EMA means as logged: "ema/w_ref_chosen", ...
struct EmaMeans {
  torch::Tensor w_a, w_b, w_p;  // D_w on A, B, P_w (0-dim, no grad)
  torch::Tensor l_a, l_b, l_p;  // D_l on A, B, P_l
  bool initialized = false;
};

class GanpoRegularizer {
public:
  GanpoRegularizer(const GanpoConfig& config, int64_t input_dim, const torch::Device& device);

  // Critic phase: critics in train mode; latents are detached here. Updates the EMA means
  // from this batch before forming the losses.
  CriticPhase critic_phase(const LatentSets& latents);
  // The same, plus each half's backward of loss * loss_scale; the two halves share nothing, so
  // they run on the two lanes when given.
  CriticPhase critic_phase_backward(const LatentSets& latents, double loss_scale, ParallelLanes* lanes);
  // One half: critic in train mode, its three EMA means updated, its loss (no backward).
  CriticHalf critic_half(CriticSide side, const LatentSets& latents);
  // Policy phase: critics in eval mode and frozen; gradients flow into the policy latents only.
  AdversarialTerm adversarial_term(const LatentSets& latents);

  LatentCritic& critic_w() { return critic_w_; }
  LatentCritic& critic_l() { return critic_l_; }
  std::vector<torch::Tensor> critic_parameters();
  const EmaMeans& ema() const { return ema_; }
  void set_ema(const EmaMeans& ema) { ema_ = ema; }
  // What a critic phase changes besides the critics' weights (which only their optimizer step
  // changes): the EMA means, the spectral norms' power-iteration vectors and the gradients the
  // critics accumulate between their steps. set_aside() copies the first two and takes the
  // gradients away (the critics then have none); put_back() makes the critics as they were, so
  // a pass that is discarded (Trainer's try of the longest rows) leaves no trace. (The dropout
  // generators: rng_state.)
  struct PhaseState {
    EmaMeans ema;
    std::vector<torch::Tensor> buffers, grads;
  };
  PhaseState set_aside();
  void put_back(PhaseState state);
  std::map<std::string, torch::Tensor> ema_metrics() const;
  // The critics' dropout generator states ("critic_w", "critic_l"; empty on CUDA), for
  // checkpoints, so a resumed run draws the same dropout masks.
  std::vector<std::pair<std::string, torch::Tensor>> rng_state();
  void set_rng_state(const std::map<std::string, torch::Tensor>& state);
  // Data parallelism: makes this process's batch mean of a critic's scores the mean over every
  // process's batch (an all-reduce), so the EMA means follow the global batch as one process's
  // would. Collectives need one order on every rank, so with a reducer the two halves of the
  // critic phase run one after the other on the calling thread.
  void set_batch_mean_reducer(std::function<void(torch::Tensor&)> reducer) { batch_mean_reducer_ = std::move(reducer); }

private:
  std::vector<std::pair<const char*, LatentCritic*>> named_critics();
  void update_ema(torch::Tensor& mean, const torch::Tensor& scores);
  GanpoConfig config_;
  LatentCritic critic_w_{nullptr}, critic_l_{nullptr};
  EmaMeans ema_;
  std::function<void(torch::Tensor&)> batch_mean_reducer_;
};

// bce(z, 1) = softplus(-z), bce(z, 0) = softplus(z), batch mean.
torch::Tensor bce_with_target(const torch::Tensor& z, bool target);

}  // namespace ganpo
