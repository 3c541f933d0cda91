// CUDA checks (ctest label `gpu`): the model gives the same logits on CUDA as on the CPU (plain
// causal, left-padded with a key mask, decoding from a key/value cache); under bf16 autocast
// every weight gets its gradient, with gradient checkpointing and through the critics' spectral
// norm, a reference with its projections stored in bf16 gives the same numbers, decoding reads
// such weights as stored, and a model folder stored in bf16 is loaded so to run; short DPO +
// GANPO runs train on CUDA (fp32, and bf16 with checkpointing) with every metric finite, the fp32
// one resuming where it stopped, and bitwise so with train.deterministic; an optimizer step never
// makes the host wait for the device. Each test skips when no CUDA device is present, so the
// suite passes on CPU machines.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/bf16_autocast.h"
#include "core/chunked_logps.h"
#include "core/checkpoint.h"
#include "core/cuda_memory.h"
#include "core/generate.h"
#include "core/gpu_monitor.h"
#include "core/train/critic.h"
#include "core/host_sync_check.h"
#include "core/model/causal_lm.h"
#include "core/tokenizer.h"
#include "core/train/trainer.h"

namespace fs = std::filesystem;
using namespace ganpo;

namespace {

// cuBLAS reads CUBLAS_WORKSPACE_CONFIG once, at the process's first product, and LibTorch
// remembers then whether deterministic products are possible: set before main, so the
// deterministic test below works after the others in one process (gpu-check.sh runs it so).
[[maybe_unused]] const int kCublasWorkspace = ::setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8", 0);

#define SKIP_WITHOUT_CUDA() \
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device"

class Recorder : public RunObserver {
public:
  void on_metrics(int64_t step, const std::map<std::string, double>& m) override { metrics[step] = m; }
  void on_log(const std::string&, const std::string& text) override { log += text + "\n"; }
  std::map<int64_t, std::map<std::string, double>> metrics;
  std::string log;
};

RunConfig tiny_run(const fs::path& out) {
  RunConfig c;
  c.name = "cuda-test";
  c.device = "cuda";
  c.output_dir = out.string();
  c.model.preset = "tiny";
  c.data.builtin_train_size = 256;
  c.data.builtin_eval_size = 16;
  c.ganpo.enabled = true;
  c.ganpo.critic_hidden = 32;
  c.ganpo.critic_layers = 1;
  c.ganpo.critic_heads = 2;
  c.ganpo.critic_max_len = 256;
  c.train.per_device_train_batch_size = 8;
  c.train.max_steps = 6;
  c.train.logging_steps = 1;
  c.sampling.num_prompts = 2;
  c.sampling.max_new_tokens = 16;
  return c;
}

// The tiny preset on the CPU and a copy of it on CUDA.
std::pair<CausalLM, CausalLM> cpu_and_cuda_models() {
  torch::manual_seed(0);
  ModelConfig mc;
  mc.preset = "tiny";
  CausalLM cpu(resolve_model_shape(mc, 259));
  CausalLM gpu(resolve_model_shape(mc, 259));
  {
    torch::NoGradGuard ng;
    auto src = cpu->named_parameters();
    for (auto& p : gpu->named_parameters()) p.value().copy_(src[p.key()]);
  }
  gpu->to(torch::kCUDA);
  cpu->eval();
  gpu->eval();
  return {cpu, gpu};
}

// A frozen model of shape `s` on CUDA, and its twin with every projection stored in bf16 (a
// frozen reference under bf16: CausalLM::store_projections_in_bf16).
std::pair<CausalLM, CausalLM> float32_and_bf16_stored_on_cuda(const ModelShape& s, uint64_t seed) {
  torch::manual_seed(seed);
  CausalLM float32(s), stored(s);
  {
    torch::NoGradGuard ng;
    auto src = float32->named_parameters();
    for (auto& p : stored->named_parameters()) p.value().copy_(src[p.key()]);
  }
  for (CausalLM* m : {&float32, &stored}) {
    (*m)->to(torch::kCUDA);
    (*m)->eval();
    for (auto& p : (*m)->parameters()) p.requires_grad_(false);
  }
  EXPECT_EQ(stored->store_projections_in_bf16(false), parameter_parts(s).projections);
  return {float32, stored};
}

double max_difference(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.cpu() - b.cpu()).abs().max().item<double>();
}

TEST(Cuda, ForwardMatchesCpu) {
  SKIP_WITHOUT_CUDA();
  auto [cpu, gpu] = cpu_and_cuda_models();
  auto ids = torch::randint(0, 259, {3, 40}, torch::kLong);
  torch::NoGradGuard ng;
  // TF32 / kernel order differences only.
  EXPECT_LT(max_difference(cpu->forward(ids).logits, gpu->forward(ids.cuda()).logits), 2e-3);
}

// Left padding (a key mask: the SDPA call with an additive mask) and decoding one token from a
// key/value cache (past > 0) give the CPU's logits on CUDA.
TEST(Cuda, PaddedRowsAndCachedDecodingMatchCpu) {
  SKIP_WITHOUT_CUDA();
  auto [cpu, gpu] = cpu_and_cuda_models();
  torch::NoGradGuard ng;
  auto ids = torch::randint(0, 259, {2, 24}, torch::kLong);
  auto keys = torch::ones({2, 24}, torch::kLong);
  keys[0].slice(0, 0, 5).zero_();  // row 0 starts after 5 pad positions
  auto positions = (keys.cumsum(1) - 1).clamp_min(0);
  auto a = cpu->forward(ids, positions, keys).logits;
  auto b = gpu->forward(ids.cuda(), positions.cuda(), keys.cuda()).logits;
  // Pad positions' rows attend to nothing real; compare the real positions.
  EXPECT_LT(max_difference(a[0].slice(0, 5), b[0].slice(0, 5)), 2e-3);
  EXPECT_LT(max_difference(a[1], b[1]), 2e-3);

  KVCache cpu_cache, gpu_cache;
  auto prompt = ids.slice(1, 0, 20), next = ids.slice(1, 20, 21);
  cpu->forward(prompt, {}, {}, &cpu_cache);
  gpu->forward(prompt.cuda(), {}, {}, &gpu_cache);
  auto c = cpu->forward(next, {}, {}, &cpu_cache).logits;
  auto g = gpu->forward(next.cuda(), {}, {}, &gpu_cache).logits;
  EXPECT_LT(max_difference(c, g), 2e-3);
  // And the cached step equals the full pass's position 20.
  auto full = gpu->forward(ids.slice(1, 0, 21).cuda()).logits;
  EXPECT_LT(max_difference(g.select(1, 0), full.select(1, 20)), 2e-3);
}

// bf16 autocast with gradient checkpointing: the blocks' forward runs without gradients and is
// recomputed in the backward pass, so a bf16 copy of a weight cast in the first must not be
// reused by the second (autocast's process-wide cast cache would give one without autograd
// history, and the weight no gradient). Every parameter gets the gradient it gets without
// checkpointing.
TEST(Cuda, Bf16WithGradientCheckpointingGivesEveryWeightItsGradient) {
  SKIP_WITHOUT_CUDA();
  auto gradients = [](bool checkpointing) {
    auto [cpu, gpu] = cpu_and_cuda_models();
    gpu->train();
    gpu->set_gradient_checkpointing(checkpointing);
    torch::manual_seed(1);
    auto ids = torch::randint(0, 259, {4, 32}, torch::kLong).cuda();
    {
      const Bf16Autocast autocast(true);
      auto logits = gpu->forward(ids).logits;
      auto loss = torch::log_softmax(logits.to(torch::kFloat32), -1).mean();
      loss.backward();
    }
    std::map<std::string, torch::Tensor> out;
    for (const auto& p : gpu->named_parameters()) out[p.key()] = p.value().grad();
    return out;
  };
  const auto plain = gradients(false), checkpointed = gradients(true);
  for (const auto& [name, g] : plain) {
    const auto& c = checkpointed.at(name);
    ASSERT_TRUE(g.defined()) << name << " has no gradient without checkpointing";
    ASSERT_TRUE(c.defined()) << name << " has no gradient with checkpointing";
    const double cosine = torch::cosine_similarity(g.flatten(), c.flatten(), 0).item<double>();
    EXPECT_GT(cosine, 0.99) << name;
  }
}

// The critics' spectral norm under bf16 autocast: the power iteration runs without gradients,
// the normalised weight with them; sigma's gradient must reach the weight (as in float32).
TEST(Cuda, Bf16CriticGradientsFollowFloat32) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(0);
  CriticShape shape;
  shape.input_dim = 32;
  shape.hidden = 32;
  shape.layers = 1;
  shape.heads = 2;
  shape.max_len = 64;
  shape.dropout = 0.0;
  auto gradients = [&](bool bf16) {
    torch::manual_seed(0);
    LatentCritic critic(shape);
    critic->to(torch::kCUDA);
    critic->train();
    torch::manual_seed(2);
    auto latents = torch::randn({6, 16, 32}).cuda();
    {
      const Bf16Autocast autocast(bf16);
      auto scores = critic->forward(latents, {});
      EXPECT_EQ(scores.scalar_type(), torch::kFloat32);
      (scores * scores).sum().backward();
    }
    std::map<std::string, torch::Tensor> out;
    for (const auto& p : critic->named_parameters()) out[p.key()] = p.value().grad();
    return out;
  };
  const auto fp32 = gradients(false), bf16 = gradients(true);
  for (const auto& [name, g] : fp32) {
    ASSERT_TRUE(bf16.at(name).defined()) << name;
    if (g.numel() == 1) continue;  // a cosine of one number is its sign
    EXPECT_GT(torch::cosine_similarity(g.flatten(), bf16.at(name).flatten(), 0).item<double>(), 0.95) << name;
  }
  // The output head's weight is a vector: normalising it by sigma removes the whole radial part
  // of its gradient, so a sigma without gradient shows there most.
  const auto& head = fp32.at("head2.weight");
  EXPECT_LT(((bf16.at("head2.weight") - head).norm() / head.norm()).item<double>(), 0.1);
}

// The chunked head under bf16 autocast follows the plain head's bf16 numbers: log-probs within
// bf16 rounding, hidden and weight gradients pointing the same way (cosine > 0.99), with and
// without a soft-cap, in chunks that do not divide the rows.
TEST(Cuda, Bf16ChunkedHeadFollowsThePlainHead) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(21);
  const auto on = torch::TensorOptions().device(torch::kCUDA);
  const int64_t M = 300, d = 64, V = 5000;
  const auto h0 = torch::randn({M, d}, on), w0 = torch::randn({V, d}, on) * 0.2;
  const auto targets = torch::randint(V, {M}, on.dtype(torch::kLong));
  const auto upstream = torch::randn({M}, on);
  auto cosine = [](const torch::Tensor& a, const torch::Tensor& b) {
    return (a.flatten() * b.flatten()).sum().item<double>() / (a.norm() * b.norm()).item<double>();
  };
  for (double cap : {0.0, 5.0}) {
    SCOPED_TRACE("cap " + std::to_string(cap));
    auto grads = [&](bool chunked) {
      auto h = h0.clone().requires_grad_(true), w = w0.clone().requires_grad_(true);
      torch::Tensor logp;
      {
        Bf16Autocast autocast(true);
        if (chunked) {
          logp = chunked_token_logps(h, w, targets, cap, 37);
        } else {
          auto z = torch::mm(h, w.t());  // bf16 under autocast
          if (cap > 0) z = torch::tanh(z / cap) * cap;
          logp = torch::log_softmax(z.to(torch::kFloat32), -1).gather(1, targets.unsqueeze(1)).squeeze(1);
        }
        (logp * upstream).sum().backward();
      }
      return std::tuple{logp.detach(), h.grad(), w.grad()};
    };
    const auto [lp_full, gh_full, gw_full] = grads(false);
    const auto [lp_chunked, gh_chunked, gw_chunked] = grads(true);
    EXPECT_EQ(lp_chunked.scalar_type(), torch::kFloat32);
    EXPECT_EQ(gw_chunked.scalar_type(), torch::kFloat32);
    EXPECT_LT((lp_chunked - lp_full).abs().max().item<double>(), 0.1);
    EXPECT_GT(cosine(gh_chunked, gh_full), 0.99);
    EXPECT_GT(cosine(gw_chunked, gw_full), 0.99);
  }
}

// The reference under bf16 keeps its projections in bf16 (CausalLMImpl::store_projections_in_bf16):
// under autocast, which rounds every product's weight to bf16 anyway, it gives the float32
// model's numbers bitwise, through the plain head, the chunked head and a tied or untied head.
TEST(Cuda, ReferenceProjectionsInBf16GiveTheAutocastNumbers) {
  SKIP_WITHOUT_CUDA();
  for (bool tied : {true, false}) {
    SCOPED_TRACE(tied ? "tied head" : "untied head");
    ModelConfig mc;
    mc.preset = "tiny";
    ModelShape s = resolve_model_shape(mc, 259);
    s.tie_embeddings = tied;
    auto [float32, stored] = float32_and_bf16_stored_on_cuda(s, 5);
    const auto ids = torch::randint(0, 256, {4, 96}, torch::kLong).to(torch::kCUDA);
    const auto targets = ids.roll(-1, 1).reshape({-1});
    torch::NoGradGuard ng;
    Bf16Autocast autocast(true);
    const LMOutput a = float32->forward(ids), b = stored->forward(ids);
    EXPECT_TRUE(torch::equal(a.logits, b.logits));
    EXPECT_TRUE(torch::equal(a.hidden, b.hidden));
    const auto h = a.hidden.reshape({-1, s.d_model});
    EXPECT_TRUE(torch::equal(chunked_token_logps(h, float32->head_weight(), targets, 0.0, 64),
                             chunked_token_logps(h, stored->head_weight(), targets, 0.0, 64)));
  }
}

// A bf16 run decodes under autocast (SamplingOptions::bf16_autocast): a model whose projections
// are stored in bf16 gives, token for token, what its float32 twin gives under autocast, and
// reads its weights as stored: outside autocast each product first writes a float32 copy of its
// weight (the largest, 11 MB here, is a lower bound of that decoding's extra peak memory), under
// it none (what the decoding adds stays under half of that copy: the KV cache and activations of
// three short rows). The trainable twin's weights are cast once per call: all their bf16 copies
// are alive during it (its extra peak holds them) and freed at its end.
TEST(Cuda, Bf16DecodingReadsWeightsStoredInBf16AsTheyAre) {
  SKIP_WITHOUT_CUDA();
  torch::zeros({1}, torch::kCUDA);  // (CUDA initialised: the allocator's statistics exist)
  if (!cuda_memory(0)) GTEST_SKIP() << "this build reads no CUDA allocator statistics (GANPO_C10_CUDA unset)";
  ModelConfig mc;
  mc.preset = "";
  mc.arch = "llama";
  mc.d_model = 1024, mc.n_layers = 2, mc.n_heads = 16, mc.max_seq_len = 128;
  const ModelShape s = resolve_model_shape(mc, 259);
  auto [float32, stored] = float32_and_bf16_stored_on_cuda(s, 7);
  std::vector<std::vector<int64_t>> prompts;
  for (int64_t length : {5, 9, 12}) {
    const auto ids = torch::randint(1, 256, {length}, torch::kLong);
    prompts.emplace_back(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + length);
  }
  // Greedy, never stopping (no token is -1): every row decodes 24 tokens.
  auto decode = [&](CausalLM& m, bool autocast, double* extra_peak_mb) {
    SamplingOptions greedy;
    greedy.temperature = 0;
    greedy.max_new_tokens = 24;
    greedy.bf16_autocast = autocast;
    torch::cuda::synchronize();
    reset_cuda_peak(0);
    const double before = cuda_memory(0).value().allocated_mb;
    auto out = generate(m, prompts, greedy, /*eos_id=*/-1, /*pad_id=*/0);
    torch::cuda::synchronize();
    *extra_peak_mb = cuda_memory(0).value().peak_allocated_mb - before;
    return out;
  };
  // The float32 twin as a policy is: trainable, so each weight's bf16 copy is cast once per call.
  for (auto& p : float32->parameters()) p.requires_grad_(true);
  double twin_mb = 0, stored_mb = 0, stored_outside_mb = 0;
  decode(float32, true, &twin_mb);  // (warming up: cuBLAS's workspaces for these products stay)
  const double start_mb = cuda_memory(0).value().allocated_mb;
  const auto twin = decode(float32, true, &twin_mb);
  const double after_twin_mb = cuda_memory(0).value().allocated_mb;
  const auto tokens = decode(stored, true, &stored_mb);
  decode(stored, false, &stored_outside_mb);
  EXPECT_EQ(tokens, twin);
  for (const auto& row : tokens) EXPECT_EQ(row.size(), 24u);
  const double largest_copy_mb = static_cast<double>(s.d_model * s.d_ff * 4) / (1024.0 * 1024.0);
  EXPECT_GE(stored_outside_mb, largest_copy_mb);
  EXPECT_LT(stored_mb, largest_copy_mb / 2) << "outside autocast: " << stored_outside_mb << " MB";
  // The twin's copies, every projection's in bf16, lived through its call and went with it.
  const double all_copies_mb = static_cast<double>(parameter_parts(s).projections * 2) / (1024.0 * 1024.0);
  EXPECT_GE(twin_mb, all_copies_mb);
  EXPECT_LT(after_twin_mb, start_mb + 1.0) << "the bf16 copies went with the call";
}

// load_model_for_inference on CUDA (ganpo generate / eval, the playground): "auto" keeps a folder
// stored in bf16 so and runs it under autocast, a float32 folder in float32; "bf16" rounds a
// float32 folder's projections, "fp32" never stores any in bf16. The bf16 folder decodes token
// for token as its float32 load does under autocast.
TEST(Cuda, InferenceKeepsAFolderStoredInBf16AsStored) {
  SKIP_WITHOUT_CUDA();
  const fs::path root = fs::temp_directory_path() / ("ganpo-cuda-inference-" + std::to_string(::getpid()));
  fs::remove_all(root);
  ModelConfig mc;
  mc.preset = "tiny";
  const ModelShape s = resolve_model_shape(mc, 259);
  for (const std::string dtype : {"bfloat16", "float32"}) {
    torch::manual_seed(11);
    CausalLM m(s);
    save_model_files((root / dtype).string(), m, ByteTokenizer(), {dtype});
  }
  auto values_in_bf16 = [](const LoadedModel& lm) {
    int64_t n = 0;
    for (const auto& p : lm.model->parameters()) {
      EXPECT_TRUE(p.is_cuda());
      EXPECT_FALSE(p.requires_grad());
      if (p.scalar_type() == torch::kBFloat16) n += p.numel();
    }
    return n;
  };
  const int64_t projections = parameter_parts(s).projections;
  struct Case { std::string folder, precision; bool bf16; };
  for (const Case& c : std::vector<Case>{{"bfloat16", "auto", true}, {"float32", "auto", false},
                                         {"float32", "bf16", true}, {"bfloat16", "fp32", false}}) {
    SCOPED_TRACE(c.folder + " folder, precision " + c.precision);
    const auto lm = load_model_for_inference((root / c.folder).string(), torch::kCUDA, c.precision);
    EXPECT_EQ(lm.bf16_autocast, c.bf16);
    EXPECT_EQ(values_in_bf16(lm), c.bf16 ? projections : 0);
  }
  if (const auto gpu = read_gpu(0)) {
    EXPECT_GE(gpu->compute_capability_major, 8) << gpu->name << ": bf16 natively";
  }
  auto as_stored = load_model_for_inference((root / "bfloat16").string(), torch::kCUDA, "auto");
  auto as_float32 = load_model_for_inference((root / "bfloat16").string(), torch::kCUDA, "fp32");
  SamplingOptions greedy;
  greedy.temperature = 0;
  greedy.max_new_tokens = 20;
  greedy.bf16_autocast = true;
  const std::vector<std::vector<int64_t>> prompts{{256, 72, 105}, {256, 10, 20, 30, 40}};
  EXPECT_EQ(generate(as_stored.model, prompts, greedy, -1, 0), generate(as_float32.model, prompts, greedy, -1, 0));
  fs::remove_all(root);
}

// bf16 runs over a folder stored in bf16 keep what stays frozen in bf16 from the load on: a LoRA
// run's base (its reference) and a full fine-tuning run's reference of its own; so does a LoRA
// run of random weights (drawn as bf16 values). Each trains with every metric finite and the
// rewards at 0 at the first step (the reference is the policy's start); the LoRA runs' merged
// final folders reload.
TEST(Cuda, Bf16RunsOverABf16FolderKeepTheFrozenWeightsInBf16) {
  SKIP_WITHOUT_CUDA();
  const fs::path root = fs::temp_directory_path() / ("ganpo-cuda-bf16-folder-" + std::to_string(::getpid()));
  fs::remove_all(root);
  {
    torch::manual_seed(3);
    ModelConfig mc;
    mc.preset = "tiny";
    CausalLM base(resolve_model_shape(mc, 259));
    save_model_files((root / "base").string(), base, ByteTokenizer(), {"bfloat16"});
  }
  for (const std::string kind : {"lora", "full", "random lora"}) {
    SCOPED_TRACE(kind);
    const bool lora = kind != "full";
    RunConfig c = tiny_run(root / kind);
    if (kind != "random lora") {
      c.model.preset = "";
      c.model.checkpoint = (root / "base").string();
    }
    c.train.precision = "bf16";
    if (lora) {
      c.model.lora.r = 4;
      c.model.lora.target_modules = "all-linear";
    }
    Recorder r;
    {
      Trainer t(c, r);
      auto result = t.run();
      ASSERT_EQ(result.status, "completed") << result.message;
    }
    EXPECT_NE(r.log.find(lora ? "the frozen base's projections are stored in bf16" : "the reference's projections are stored in bf16"),
              std::string::npos) << r.log;
    for (const auto& [step, m] : r.metrics)
      for (const auto& [k, v] : m) EXPECT_TRUE(std::isfinite(v)) << k << " at step " << step;
    EXPECT_NEAR(r.metrics.at(1).at("rewards/chosen"), 0.0, 0.05);  // (as Bf16CheckpointedRunTrains)
    if (kind == "random lora") {
      EXPECT_NE(r.log.find("the random weights are drawn as bf16 values"), std::string::npos);
    }
    if (lora) {
      EXPECT_NO_THROW(load_model_folder((root / kind / "final").string(), torch::kCPU));
    }
  }
  fs::remove_all(root);
}

// A bf16 run with gradient checkpointing and precomputed reference log-probs trains: every
// metric finite, the rewards near 0 at the first step (policy and reference scored at the same
// precision; bf16 sums over other batch compositions differ in the last bits), the loss moving.
TEST(Cuda, Bf16CheckpointedRunTrains) {
  SKIP_WITHOUT_CUDA();
  const fs::path root = fs::temp_directory_path() / ("ganpo-cuda-bf16-" + std::to_string(::getpid()));
  fs::remove_all(root);
  RunConfig c = tiny_run(root);
  c.train.precision = "bf16";
  c.train.gradient_checkpointing = true;
  c.train.precompute_ref_log_probs = true;
  Recorder r;
  {
    Trainer t(c, r);
    auto result = t.run();
    ASSERT_EQ(result.status, "completed") << result.message;
  }
  ASSERT_EQ(r.metrics.size(), 6u);
  for (const auto& [step, m] : r.metrics)
    for (const auto& [k, v] : m) EXPECT_TRUE(std::isfinite(v)) << k << " at step " << step;
  EXPECT_NEAR(r.metrics.at(1).at("rewards/chosen"), 0.0, 0.05);
  EXPECT_NE(r.metrics.at(6).at("loss"), r.metrics.at(1).at("loss"));
  fs::remove_all(root);
}

TEST(Cuda, GanpoTrainsAndResumesOnCuda) {
  SKIP_WITHOUT_CUDA();
  const fs::path root = fs::temp_directory_path() / ("ganpo-cuda-" + std::to_string(::getpid()));
  fs::remove_all(root);
  Recorder full;
  {
    Trainer t(tiny_run(root / "full"), full);
    auto r = t.run();
    ASSERT_EQ(r.status, "completed") << r.message;
  }
  ASSERT_EQ(full.metrics.size(), 6u);
  for (const auto& [step, m] : full.metrics)
    for (const auto& [k, v] : m) EXPECT_TRUE(std::isfinite(v)) << k << " at step " << step;
  EXPECT_TRUE(full.metrics.at(6).count("critic/acc_chosen"));

  Recorder first, second;
  TrainerOptions stop;
  stop.stop_after_steps = 3;
  {
    Trainer t(tiny_run(root / "split"), first, stop);
    ASSERT_EQ(t.run().status, "stopped");
  }
  TrainerOptions resume;
  resume.resume_from = (root / "split" / "checkpoint-3").string();
  {
    Trainer t(tiny_run(root / "split"), second, resume);
    ASSERT_EQ(t.run().status, "completed");
  }
  // CUDA kernels are not bitwise deterministic; the resumed losses must still track closely.
  for (int64_t step = 4; step <= 6; ++step)
    EXPECT_NEAR(second.metrics.at(step).at("loss"), full.metrics.at(step).at("loss"), 1e-3) << "step " << step;
  fs::remove_all(root);
}

// train.deterministic = true (deterministic kernels, no cuDNN autotuning, a fixed cuBLAS
// workspace): a run stopped after 3 steps and resumed from its checkpoint (CUDA generator state
// included) ends with the same losses and the same final weights, byte for byte, as one run of 6.
TEST(Cuda, DeterministicResumeIsBitwise) {
  SKIP_WITHOUT_CUDA();
  const fs::path root = fs::temp_directory_path() / ("ganpo-cuda-det-" + std::to_string(::getpid()));
  fs::remove_all(root);
  auto run_config = [&](const char* name) {
    RunConfig c = tiny_run(root / name);
    c.train.deterministic = true;
    c.sampling.num_prompts = 0;
    return c;
  };
  Recorder full, first, second;
  {
    Trainer t(run_config("full"), full);
    auto r = t.run();
    ASSERT_EQ(r.status, "completed") << r.message;
  }
  TrainerOptions stop;
  stop.stop_after_steps = 3;
  {
    Trainer t(run_config("split"), first, stop);
    ASSERT_EQ(t.run().status, "stopped");
  }
  TrainerOptions resume;
  resume.resume_from = (root / "split" / "checkpoint-3").string();
  {
    Trainer t(run_config("split"), second, resume);
    auto r = t.run();
    ASSERT_EQ(r.status, "completed") << r.message;
  }
  for (int64_t step = 4; step <= 6; ++step)
    EXPECT_EQ(second.metrics.at(step).at("loss"), full.metrics.at(step).at("loss")) << "step " << step;
  auto bytes = [](const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const auto a = bytes(root / "full" / "final" / "model.safetensors");
  ASSERT_FALSE(a.empty());
  EXPECT_TRUE(a == bytes(root / "split" / "final" / "model.safetensors")) << "final weights differ";
  fs::remove_all(root);
}

// The "no host sync in the step": with LibTorch's sync debug mode at its error level
// around every optimizer step (log lines, evaluation and checkpoints outside them may wait), runs
// that touch each path of the step finish: DPO + GANPO in fp32 with gradient accumulation and
// RPO's NLL term; bf16 with gradient checkpointing, precomputed reference log-probs and LoRA;
// SimPO; and the SFT stage.
TEST(Cuda, AnOptimizerStepNeverWaitsForTheDevice) {
  SKIP_WITHOUT_CUDA();
  if (!host_sync_checks_available()) GTEST_SKIP() << "this LibTorch has no CUDA sync debug mode";
  const fs::path root = fs::temp_directory_path() / ("ganpo-cuda-nosync-" + std::to_string(::getpid()));
  fs::remove_all(root);
  std::vector<std::pair<std::string, RunConfig>> runs;
  {
    RunConfig c = tiny_run(root / "fp32");
    c.train.gradient_accumulation_steps = 2;
    c.train.logging_steps = 3;
    c.objective.rpo_alpha = 0.5;
    runs.emplace_back("fp32 DPO + GANPO, accumulation 2, RPO", c);
  }
  {
    RunConfig c = tiny_run(root / "bf16");
    c.train.precision = "bf16";
    c.train.gradient_checkpointing = true;
    c.train.precompute_ref_log_probs = true;
    c.model.checkpoint = (root / "fp32" / "final").string();  // the first run's policy, as the base
    c.model.lora.r = 4;
    c.model.lora.target_modules = "all-linear";
    c.train.chunked_logps = "on";
    runs.emplace_back("bf16 DPO + GANPO, checkpointing, precomputed reference, LoRA, chunked head", c);
  }
  {
    RunConfig c = tiny_run(root / "simpo");
    c.objective.loss_type = "simpo";
    c.ganpo.enabled = false;
    c.train.precision = "bf16";
    c.train.chunked_logps = "on";  // and the head trained in bf16
    runs.emplace_back("SimPO", c);
  }
  {
    RunConfig c = tiny_run(root / "sft");
    c.stage = "sft";
    c.ganpo.enabled = false;
    runs.emplace_back("SFT", c);
  }
  for (auto& [what, config] : runs) {
    config.sampling.num_prompts = 0;
    TrainerOptions options;
    options.forbid_host_sync_in_steps = true;
    Recorder r;
    Trainer t(config, r, options);
    const auto result = t.run();
    EXPECT_EQ(result.status, "completed") << what << ": " << result.message;
  }
  fs::remove_all(root);
}

// train.auto_find_batch_size against CUDA's own out-of-memory error: with the caching allocator
// held to 1.6 times what a step of 32 pairs took at its peak (set_cuda_memory_fraction), a stage
// asked for 128 pairs a micro-batch runs out in its first step for real, goes on with smaller
// micro-batches (the rows per optimizer step kept) and completes; without the setting the same
// stage fails with the way out.
TEST(Cuda, AutoFindBatchSizeGetsPastARealOutOfMemory) {
  SKIP_WITHOUT_CUDA();
  const auto gpu = read_gpu(0);
  if (!gpu || gpu->memory_total_mb <= 0) GTEST_SKIP() << "NVML does not say the GPU's memory";
  const fs::path root = fs::temp_directory_path() / ("ganpo-cuda-auto-batch-" + std::to_string(::getpid()));
  fs::remove_all(root);
  auto config = [&](const char* name, int64_t batch) {
    RunConfig c = tiny_run(root / name);
    c.train.per_device_train_batch_size = batch;
    c.train.max_steps = 2;
    c.sampling.num_prompts = 0;
    c.eval.judge_at_end = false;
    return c;
  };
  // The peak of a 32-pair step: each log line reads the allocator's peak since the one before.
  Recorder measured;
  {
    Trainer t(config("measure", 32), measured);
    ASSERT_EQ(t.run().status, "completed");
  }
  double peak_mb = 0;
  for (const auto& [step, m] : measured.metrics)
    if (m.count("memory/cuda_peak_mb")) peak_mb = std::max(peak_mb, m.at("memory/cuda_peak_mb"));
  ASSERT_GT(peak_mb, 0);
  // The limit is on the allocator's reserved segments, which round small blocks up: 1.6 times the
  // peak leaves 32 pairs room and fails 64 and 128 (about 2 and 4 times it).
  const double limit_mb = 1.6 * peak_mb;
  struct Limit {
    explicit Limit(double fraction) { set_cuda_memory_fraction(0, fraction); }
    ~Limit() { set_cuda_memory_fraction(0, 1.0); }  // also where a run throws
  };
  Recorder found, failed;
  TrainResult with, without;
  {
    const Limit limit(limit_mb / gpu->memory_total_mb);
    {
      RunConfig c = config("found", 128);
      c.train.auto_find_batch_size = true;
      Trainer t(c, found);
      with = t.run();
    }  // its models' memory back before the next
    Trainer t(config("failed", 128), failed);
    without = t.run();
  }
  EXPECT_EQ(with.status, "completed") << with.message << "\n" << found.log;
  EXPECT_NE(found.log.find("ran out of memory while taking optimizer step 1 of 2"), std::string::npos) << found.log;
  EXPECT_NE(found.log.find("train.auto_find_batch_size: the stage goes on with 64 rows a micro-batch x 2 accumulation "
                           "steps"),
            std::string::npos)
      << found.log;
  EXPECT_NE(found.log.find("CUDA out of memory"), std::string::npos) << "LibTorch's own error: " << found.log;
  ASSERT_EQ(found.metrics.size(), 2u);
  for (const auto& [step, m] : found.metrics)
    for (const auto& [k, v] : m) EXPECT_TRUE(std::isfinite(v)) << k << " at step " << step;
  EXPECT_EQ(without.status, "failed");
  EXPECT_NE(without.message.find("ran out of memory while taking optimizer step 1 of 2"), std::string::npos)
      << without.message;
  EXPECT_NE(without.message.find("train.auto_find_batch_size = true does that"), std::string::npos) << without.message;
  std::printf("peak of a 32-pair step %.0f MiB; the allocator held to %.0f MiB; %s\n", peak_mb, limit_mb,
              with.status.c_str());
  fs::remove_all(root);
}

}  // namespace
