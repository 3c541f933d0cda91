// Data parallelism end to end, with real processes and a real c10d process group (Gloo over
// loopback): two ranks with batch 4 train exactly as one process with batch 8 (DPO + GANPO:
// losses, critic terms and EMA means per step, and the final weights through their logits),
// `ganpo launch` starts the same run as train.num_processes does, and a rank that dies takes
// the run down at once with a message naming it.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "core/atomic_folder.h"
#include "core/config.h"
#include "core/error.h"
#include "core/memory_estimate.h"
#include "db/sqlite_handle.h"
#include "tests/support/cli_runner.h"
#include "tests/support/expect_contains.h"

namespace fs = std::filesystem;

namespace ganpo::test {
namespace {

// A preference run small enough for seconds: GANPO on, critic dropout off (dropout masks are
// drawn per process, so they could not match), no samples, no judge (one test turns it on).
// `train_extra`: more [train] lines.
std::string run_config(const fs::path& out, int64_t batch, int64_t processes, int64_t steps,
                       const std::string& train_extra = "") {
  return "name = \"dp\"\nstage = \"preference\"\nseed = 7\ndevice = \"cpu\"\noutput_dir = \"" + out.string() +
         "\"\n[model]\npreset = \"\"\nd_model = 32\nn_layers = 2\nn_heads = 2\nmax_seq_len = 128\n"
         "[data]\nbuiltin = \"lists\"\nbuiltin_train_size = 64\nbuiltin_eval_size = 8\nmax_length = 96\nmax_prompt_length = 48\n"
         "[ganpo]\ncritic_hidden = 16\ncritic_layers = 1\ncritic_heads = 2\ncritic_max_len = 128\ncritic_dropout = 0.0\n"
         "[train]\nlearning_rate = 0.001\nper_device_train_batch_size = " + std::to_string(batch) +
         "\nmax_steps = " + std::to_string(steps) + "\nlogging_steps = 1\nnum_threads = 1\nnum_processes = " +
         std::to_string(processes) + "\ndist_timeout_s = 60\n" + train_extra + "[sampling]\nnum_prompts = 0\n[eval]\njudge_at_end = false\n";
}

// run_config's 2 processes of batch 4 whose collectives give up after 5 s (train.dist_timeout_s),
// for a rank that hangs.
std::string short_timeout_run_config(const fs::path& out, int64_t steps, const std::string& train_extra = "") {
  std::string config = run_config(out, 4, 2, steps, train_extra);
  config.replace(config.find("dist_timeout_s = 60"), 19, "dist_timeout_s = 5");
  return config;
}

// run_config's 4 steps of 2 processes with 3 live-sample prompts every 2 steps (4 new tokens) and
// no checkpoint before the last step.
std::string sampling_run_config(const fs::path& out) {
  std::string config = run_config(out, 4, 2, 4, "save_steps = 0\n");
  config.replace(config.find("num_prompts = 0"), 15, "num_prompts = 3\nevery_steps = 2\nmax_new_tokens = 4");
  return config;
}

// The environment that makes a rank end at fault point `spec` as the system's out-of-memory
// killer ends one: counted in a vmstat file of the test's (oom_kill 0 before), which the
// launcher reads for the kernel's count (core/oom_kill_count.h), then SIGKILL.
std::string as_the_oom_killer_at(const fs::path& dir, const std::string& spec) {
  std::ofstream(dir / "vmstat") << "nr_free_pages 1000\noom_kill 0\n";
  return "GANPO_VMSTAT_FOR_TESTS=" + (dir / "vmstat").string() + " GANPO_OOM_KILL_AT=" + spec;
}

std::map<int64_t, nlohmann::json> metrics_by_step(const fs::path& out) {
  std::map<int64_t, nlohmann::json> rows;
  std::ifstream in(out / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    rows[j.at("step").get<int64_t>()] = j;
  }
  return rows;
}

std::vector<double> logits_of(const fs::path& model) {
  auto r = run_cli("logits --model " + model.string() + " --ids 1,40,41,42,10 --json");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::vector<double> all;
  const auto j = nlohmann::json::parse(r.output.substr(r.output.find('{')));
  for (const auto& row : j.at("logits"))
    for (const auto& v : row) all.push_back(v.get<double>());
  return all;
}

std::string read_text(const fs::path& file) {
  std::ifstream in(file);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The rows an SQL query over the workspace gives, as the sqlite3 shell prints them
// ("1|completed\n"; NULL as nothing), read through a read-only connection while runs write.
std::string query(const std::string& db, const std::string& sql) {
  try {
    sql::Database d(db, SQLITE_OPEN_READONLY);
    sql::Statement s(d, sql);
    const int columns = s.column_count();
    std::string rows;
    while (s.step()) {
      for (int c = 0; c < columns; ++c) rows += (c ? "|" : "") + (s.is_null(c) ? std::string() : s.col_text(c));
      rows += "\n";
    }
    return rows;
  } catch (const Error& e) {
    return std::string("(") + e.what() + ")";  // a wait_for asks again
  }
}

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

bool compared_key(const std::string& k) {
  return k == "loss" || k == "opo_loss" || k == "nll_loss" || k == "grad_norm" || k == "tokens_seen" ||
         k.rfind("adv/", 0) == 0 || k.rfind("critic/", 0) == 0 ||
         k.rfind("ema/", 0) == 0 || k.rfind("rewards/", 0) == 0 || k.rfind("logps/", 0) == 0;
}

// The ranks a launcher started, by rank: its children, each known by the RANK in its environment.
std::map<int, pid_t> launched_ranks(pid_t launcher) {
  std::map<int, pid_t> out;
  for (const auto& p : fs::directory_iterator("/proc")) {
    const std::string name = p.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream status(p.path() / "status");
    std::string line;
    pid_t parent = -1;
    while (std::getline(status, line))
      if (line.rfind("PPid:", 0) == 0) parent = std::stoi(line.substr(5));
    if (parent != launcher) continue;
    std::ifstream environ(p.path() / "environ");
    for (std::string entry; std::getline(environ, entry, '\0');)
      if (entry.rfind("RANK=", 0) == 0) out[std::stoi(entry.substr(5))] = std::stoi(name);
  }
  return out;
}

// Alive and not a zombie.
bool running(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const auto close = text.rfind(')');
  return close != std::string::npos && close + 2 < text.size() && text[close + 2] != 'Z';
}

// Rows grouped by length (train.group_by_length): a step's rows count every process's, so both
// runs take the same global order.
TEST(DataParallel, TwoRanksOfBatch4TrainLikeOneProcessOfBatch8) {
  const auto dir = fresh_test_dir("ganpo-dp");
  std::ofstream(dir / "one.toml") << run_config(dir / "one", 8, 1, 5, "group_by_length = true\n");
  std::ofstream(dir / "two.toml") << run_config(dir / "two", 4, 2, 5, "group_by_length = true\n");
  auto one = run_cli("train --no-db --config " + (dir / "one.toml").string());
  ASSERT_EQ(one.exit_code, 0) << one.output;
  auto two = run_cli("train --no-db --config " + (dir / "two.toml").string());
  ASSERT_EQ(two.exit_code, 0) << two.output;
  EXPECT_CONTAINS(read_text(dir / "two" / "events.log"), "data parallel: rank 0 of 2");

  const auto a = metrics_by_step(dir / "one"), b = metrics_by_step(dir / "two");
  ASSERT_EQ(a.size(), 5u);
  ASSERT_EQ(b.size(), 5u) << "rank 0 alone writes the run's files";
  int compared = 0;
  for (const auto& [step, row] : a)
    for (const auto& [k, v] : row.items()) {
      if (!compared_key(k) || !v.is_number()) continue;
      ASSERT_TRUE(b.at(step).contains(k)) << k;
      const double x = v.get<double>(), y = b.at(step).at(k).get<double>();
      EXPECT_NEAR(y, x, 2e-5 * std::max(1.0, std::abs(x))) << k << " at step " << step;
      ++compared;
    }
  EXPECT_GT(compared, 5 * 20) << "losses, critic terms and the six EMA means at every step";
  EXPECT_EQ(b.rbegin()->second.at("ranks/world_size").get<double>(), 2.0);
  EXPECT_GT(b.rbegin()->second.at("ranks/tokens_per_s/1").get<double>(), 0.0);

  const auto la = logits_of(dir / "one" / "final"), lb = logits_of(dir / "two" / "final");
  ASSERT_EQ(la.size(), lb.size());
  double worst = 0;
  for (size_t i = 0; i < la.size(); ++i) worst = std::max(worst, std::abs(la[i] - lb[i]));
  EXPECT_LT(worst, 1e-4) << "the final weights agree";
}

// The same with gradient accumulation (the all-reduce overlaps only the last micro-batch's
// backward pass and carries the earlier ones' part) and gradient checkpointing (the blocks'
// gradients come from a backward pass inside the backward pass), with RPO's NLL term (a mean
// over every chosen token of the step, on every rank): 2 ranks x batch 2 x 2 micro-batches train as 1 process x
// batch 4 x 2 micro-batches.
TEST(DataParallel, AccumulationAndCheckpointingAverageAsOneProcess) {
  const auto dir = fresh_test_dir("ganpo-dp");
  auto config = [&](const fs::path& out, int64_t batch, int64_t processes) {
    std::string c = run_config(out, batch, processes, 3);
    c.insert(c.find("dist_timeout_s"), "gradient_accumulation_steps = 2\ngradient_checkpointing = true\n");
    return c + "[objective]\nrpo_alpha = 1.0\n";
  };
  std::ofstream(dir / "one.toml") << config(dir / "one", 4, 1);
  std::ofstream(dir / "two.toml") << config(dir / "two", 2, 2);
  auto one = run_cli("train --no-db --config " + (dir / "one.toml").string());
  ASSERT_EQ(one.exit_code, 0) << one.output;
  auto two = run_cli("train --no-db --config " + (dir / "two.toml").string());
  ASSERT_EQ(two.exit_code, 0) << two.output;
  const auto a = metrics_by_step(dir / "one"), b = metrics_by_step(dir / "two");
  ASSERT_EQ(b.size(), 3u);
  for (const auto& [step, row] : a)
    for (const char* k : {"loss", "nll_loss", "grad_norm", "adv/loss", "critic/loss_chosen", "ema/w_ref_chosen", "tokens_seen"})
      EXPECT_NEAR(b.at(step).at(k).get<double>(), row.at(k).get<double>(), 2e-5 * std::max(1.0, std::abs(row.at(k).get<double>())))
          << k << " at step " << step;
  const auto la = logits_of(dir / "one" / "final"), lb = logits_of(dir / "two" / "final");
  double worst = 0;
  for (size_t i = 0; i < la.size(); ++i) worst = std::max(worst, std::abs(la[i] - lb[i]));
  EXPECT_LT(worst, 1e-4);
  EXPECT_EQ(read_text(dir / "two" / "events.log").find("arrived twice"), std::string::npos) << "the overlap stayed on";
}

// LoRA under data parallelism: the adapters' gradients are averaged over the ranks and every rank
// holds the same frozen base (drawn from the seed, then rank 0's): 2 ranks x batch 4 train as
// 1 process x batch 8, with PiSSA's start (its first factors, computed on each rank from the same
// base, subtracted beside it) and with DoRA's magnitudes.
TEST(DataParallel, LoraRunsOfTwoRanksTrainLikeOneProcess) {
  const auto dir = fresh_test_dir("ganpo-dp");
  fs::create_directories(dir / "shape");
  std::ofstream(dir / "shape" / "config.json")
      << R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 320, "hidden_size": 32,
             "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
             "max_position_embeddings": 128, "rms_norm_eps": 1e-6, "tie_word_embeddings": false,
             "bos_token_id": 2, "eos_token_id": 1})";
  for (const std::string variant : {"init_lora_weights = \"pissa\"", "use_dora = true"}) {
    SCOPED_TRACE(variant);
    auto config = [&](const fs::path& out, int64_t batch, int64_t processes) {
      std::string c = run_config(out, batch, processes, 3);
      c.insert(c.find("[data]"), "checkpoint = \"" + (dir / "shape").string() + "\"\nrandom_weights = true\n"
                                 "[model.lora]\nr = 4\nalpha = 8\ntarget_modules = \"all-linear\"\n" + variant + "\n");
      c.replace(c.find("learning_rate = 0.001"), 21, "learning_rate = 0.01");
      return c;
    };
    const std::string name = variant.substr(0, variant.find(' '));
    std::ofstream(dir / (name + "-one.toml")) << config(dir / (name + "-one"), 8, 1);
    std::ofstream(dir / (name + "-two.toml")) << config(dir / (name + "-two"), 4, 2);
    auto one = run_cli("train --no-db --config " + (dir / (name + "-one.toml")).string());
    ASSERT_EQ(one.exit_code, 0) << one.output;
    auto two = run_cli("train --no-db --config " + (dir / (name + "-two.toml")).string());
    ASSERT_EQ(two.exit_code, 0) << two.output;
    const std::string events = read_text(dir / (name + "-two") / "events.log");
    EXPECT_CONTAINS(events, "data parallel: rank 0 of 2");
    EXPECT_CONTAINS(events, name == "use_dora" ? "DoRA r 4" : "init_lora_weights pissa");
    const auto a = metrics_by_step(dir / (name + "-one")), b = metrics_by_step(dir / (name + "-two"));
    ASSERT_EQ(a.size(), 3u);
    ASSERT_EQ(b.size(), 3u);
    for (const auto& [step, row] : a)
      for (const char* k : {"loss", "grad_norm", "adv/loss", "rewards/chosen", "rewards/margins", "ema/w_ref_chosen"})
        EXPECT_NEAR(b.at(step).at(k).get<double>(), row.at(k).get<double>(),
                    2e-5 * std::max(1.0, std::abs(row.at(k).get<double>())))
            << k << " at step " << step;
    EXPECT_NE(a.rbegin()->second.at("rewards/margins").get<double>(), 0.0) << "the adapters trained";
    // The merged models agree (final/ holds base + adapters).
    const auto la = logits_of(dir / (name + "-one") / "final"), lb = logits_of(dir / (name + "-two") / "final");
    ASSERT_EQ(la.size(), lb.size());
    double worst = 0;
    for (size_t i = 0; i < la.size(); ++i) worst = std::max(worst, std::abs(la[i] - lb[i]));
    EXPECT_LT(worst, 1e-4);
  }
}

// An SFT stage: each rank's loss divides by the ranks' mean token count of the step, so the averaged
// gradient is the global token mean; the held-out loss is split across the ranks and combined
// by tokens. 2 ranks x batch 4 train and evaluate as 1 process x batch 8.
TEST(DataParallel, AnSftStageTrainsAndEvaluatesAsOneProcess) {
  const auto dir = fresh_test_dir("ganpo-dp");
  auto config = [&](const fs::path& out, int64_t batch, int64_t processes) {
    std::string c = run_config(out, batch, processes, 3);
    return c.replace(c.find("stage = \"preference\""), 20, "stage = \"sft\"");
  };
  std::ofstream(dir / "one.toml") << config(dir / "one", 8, 1);
  std::ofstream(dir / "two.toml") << config(dir / "two", 4, 2);
  auto one = run_cli("train --no-db --config " + (dir / "one.toml").string());
  ASSERT_EQ(one.exit_code, 0) << one.output;
  auto two = run_cli("train --no-db --config " + (dir / "two.toml").string());
  ASSERT_EQ(two.exit_code, 0) << two.output;
  const auto a = metrics_by_step(dir / "one"), b = metrics_by_step(dir / "two");
  for (const auto& [step, row] : a)
    for (const char* k : {"loss", "grad_norm"})
      EXPECT_NEAR(b.at(step).at(k).get<double>(), row.at(k).get<double>(), 2e-5 * std::max(1.0, row.at(k).get<double>()))
          << k << " at step " << step;
  auto last_eval = [&](const fs::path& out) {
    nlohmann::json last;
    std::ifstream in(out / "eval.jsonl");
    for (std::string line; std::getline(in, line);) last = nlohmann::json::parse(line);
    return last.at("preference");
  };
  const auto ea = last_eval(dir / "one"), eb = last_eval(dir / "two");
  EXPECT_NEAR(eb.at("eval_loss").get<double>(), ea.at("eval_loss").get<double>(), 1e-5);
  EXPECT_EQ(eb.at("eval_tokens").get<double>(), ea.at("eval_tokens").get<double>()) << "every held-out token, once";
}

// A pipeline without a workspace starts each stage's ranks itself: SFT, then DPO + GANPO from
// its final weights, each on 2 processes.
// train.precompute_ref_log_probs under data parallelism: each rank scores its share of the
// pairs and they all get the whole split; the run trains as one process does.
TEST(DataParallel, PrecomputedReferenceLogProbsAreSplitAcrossRanks) {
  const auto dir = fresh_test_dir("ganpo-dp");
  for (const auto& [name, batch, processes] : {std::tuple<const char*, int64_t, int64_t>{"one", 8, 1}, {"two", 4, 2}}) {
    std::string c = run_config(dir / name, batch, processes, 3);
    c.replace(c.find("[train]\n"), 8, "[train]\nprecompute_ref_log_probs = true\n");
    std::ofstream(dir / (std::string(name) + ".toml")) << c;
  }
  auto one = run_cli("train --no-db --config " + (dir / "one.toml").string());
  ASSERT_EQ(one.exit_code, 0) << one.output;
  auto two = run_cli("train --no-db --config " + (dir / "two.toml").string());
  ASSERT_EQ(two.exit_code, 0) << two.output;
  EXPECT_CONTAINS(read_text(dir / "two" / "events.log"), "precomputed");
  const auto a = metrics_by_step(dir / "one"), b = metrics_by_step(dir / "two");
  ASSERT_EQ(b.size(), 3u);
  for (const auto& [step, row] : a)
    for (const char* k : {"loss", "opo_loss", "rewards/chosen", "rewards/margins", "adv/loss", "grad_norm"})
      EXPECT_NEAR(b.at(step).at(k).get<double>(), row.at(k).get<double>(), 2e-5 * std::max(1.0, std::abs(row.at(k).get<double>())))
          << k << " at step " << step;
}

// The final judge evaluation deals its sampling jobs (a temperature and a model each) out over
// the ranks and rank 0 judges them all: the report equals one process's, prompt by prompt. A
// learning rate of 1e-12 leaves the weights as they were (the 2-rank run's weights agree with the
// 1-process run's only to float tolerance, and sampling would amplify the difference).
TEST(DataParallel, TheJudgeEvaluationIsSplitAcrossRanksAndEqualsOneProcesss) {
  const auto dir = fresh_test_dir("ganpo-dp");
  for (const auto& [name, batch, processes] : {std::tuple<const char*, int64_t, int64_t>{"one", 8, 1}, {"two", 4, 2}}) {
    std::string c = run_config(dir / name, batch, processes, 1);
    c.replace(c.find("learning_rate = 0.001"), 21, "learning_rate = 1e-12");
    c.replace(c.find("judge_at_end = false"), 20,
              "judge_at_end = true\nnum_prompts = 6\ntemperatures = \"0.7, 1.0, 1.3\"\nmax_new_tokens = 8");
    std::ofstream(dir / (std::string(name) + ".toml")) << c;
  }
  auto one = run_cli("train --no-db --config " + (dir / "one.toml").string());
  ASSERT_EQ(one.exit_code, 0) << one.output;
  auto two = run_cli("train --no-db --config " + (dir / "two.toml").string());
  ASSERT_EQ(two.exit_code, 0) << two.output;
  auto judge_of = [](const fs::path& out) {
    nlohmann::json last;
    std::ifstream in(out / "eval.jsonl");
    for (std::string line; std::getline(in, line);) last = nlohmann::json::parse(line);
    return last.value("judge", nlohmann::json());
  };
  const auto a = judge_of(dir / "one"), b = judge_of(dir / "two");
  ASSERT_TRUE(a.is_object()) << read_text(dir / "one" / "eval.jsonl");
  ASSERT_EQ(a.at("samples").size(), 3u);
  EXPECT_EQ(a.at("samples")[0].at("policy_length").size(), 6u);
  EXPECT_EQ(b.at("samples"), a.at("samples")) << "every prompt's scores and lengths at every temperature";
  EXPECT_EQ(b.at("rows"), a.at("rows"));
}

// A rank whose share of the judge evaluation runs out of memory still takes part in its gather
// (on GPUs NCCL would not notice a rank that left it, and its peers would wait out the timeout):
// every rank ends the judging with the reason, and the run completes with its weights and held-out
// numbers, its log saying which rank could not sample and why.
TEST(DataParallel, ARankWhoseJudgeSamplingRunsOutTellsTheOthers) {
  const auto dir = fresh_test_dir("ganpo-dp");
  std::string c = run_config(dir / "run", 4, 2, 1);
  c.replace(c.find("judge_at_end = false"), 20,
            "judge_at_end = true\nnum_prompts = 6\ntemperatures = \"0.7, 1.0\"\nmax_new_tokens = 8");
  std::ofstream(dir / "run.toml") << c;
  auto r = run_cli("train --no-db --config " + (dir / "run.toml").string(), "GANPO_OOM_AT=judge.batch GANPO_FAULT_RANK=1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_CONTAINS(read_text(dir / "run" / "events.log"),
                  "error: judge evaluation failed, the run's weights and held-out numbers are kept: rank 1 could not "
                  "sample its part of the judge evaluation: std::bad_alloc");
  EXPECT_TRUE(fs::exists(dir / "run" / "final" / "model.safetensors"));
}

TEST(DataParallel, APipelineWithoutAWorkspaceRunsEachStageOnItsProcesses) {
  const auto dir = fresh_test_dir("ganpo-dp");
  std::string c = run_config(dir / "pipe", 4, 2, 2);
  c += "[[pipeline]]\nname = \"sft\"\nset = { stage = \"sft\", \"ganpo.enabled\" = false }\n";
  std::ofstream(dir / "pipe.toml") << c;
  auto r = run_cli("train --no-db --config " + (dir / "pipe.toml").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  int stages = 0;
  for (const auto& entry : fs::recursive_directory_iterator(dir / "pipe"))
    if (entry.path().filename() == "events.log") {
      EXPECT_CONTAINS(read_text(entry.path()), "data parallel: rank 0 of 2");
      ++stages;
    }
  EXPECT_EQ(stages, 2) << r.output;
}

// A checkpoint of a 2-rank run (written by rank 0, with every rank's generators) resumes to the
// same steps and the same final weights as the uninterrupted run: with critic dropout drawn
// from each rank's own generator, and the critics stepping every second step (on steps 2, 4, 6),
// so the checkpoint at step 3 holds critic gradients that wait for step 4 (from every rank, not
// rank 0's alone).
TEST(DataParallel, ResumingATwoRankRunIsExact) {
  const auto dir = fresh_test_dir("ganpo-dp");
  auto config = [&](const fs::path& out) {
    std::string c = run_config(out, 4, 2, 6);
    c.replace(c.find("critic_dropout = 0.0"), 20, "critic_dropout = 0.1\ncritic_update_every = 2");
    return c.insert(c.find("dist_timeout_s"), "save_steps = 3\n");
  };
  std::ofstream(dir / "whole.toml") << config(dir / "whole");
  auto whole = run_cli("train --no-db --config " + (dir / "whole.toml").string());
  ASSERT_EQ(whole.exit_code, 0) << whole.output;
  ASSERT_TRUE(fs::exists(dir / "whole" / "checkpoint-3" / "trainer_state" / "rng.safetensors"));
  ASSERT_TRUE(fs::exists(dir / "whole" / "checkpoint-3" / "trainer_state" / "critic_grads.safetensors"));
  fs::copy(dir / "whole" / "checkpoint-3", dir / "saved-3", fs::copy_options::recursive);
  std::ofstream(dir / "resumed.toml") << config(dir / "resumed");
  auto resumed = run_cli("train --no-db --config " + (dir / "resumed.toml").string() + " --resume " + (dir / "saved-3").string());
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  const auto a = metrics_by_step(dir / "whole"), b = metrics_by_step(dir / "resumed");
  for (int64_t step = 4; step <= 6; ++step)
    for (const auto& [k, v] : a.at(step).items()) {
      if (compared_key(k) && v.is_number()) {
        EXPECT_EQ(b.at(step).at(k).get<double>(), v.get<double>()) << k << " at step " << step;
      }
    }
  EXPECT_EQ(logits_of(dir / "whole" / "final"), logits_of(dir / "resumed" / "final")) << "bitwise, as on one process";
}

// Two hosts, simulated by two launchers on this machine (node ranks 0 and 1, loopback address,
// a port they agree on): the run trains as it does on one host.
TEST(DataParallel, TwoLaunchersAsTwoHostsTrainOneRun) {
  const auto dir = fresh_test_dir("ganpo-dp");
  // With samples: three prompts, split over the two ranks and gathered back in order.
  std::string config = run_config(dir / "run", 4, 1, 3);
  config.replace(config.find("num_prompts = 0"), 15, "num_prompts = 3\nmax_new_tokens = 6");
  std::ofstream(dir / "run.toml") << config;
  std::ofstream(dir / "ref.toml") << run_config(dir / "ref", 8, 1, 3);
  const std::string port = std::to_string(free_port());
  std::vector<pid_t> nodes;
  for (const char* node : {"0", "1"})
    nodes.push_back(spawn_cli({"launch", "--nproc-per-node", "1", "--nnodes", "2", "--node-rank", node, "--master-addr",
                               "127.0.0.1", "--master-port", port, "train", "--no-db", "--config", (dir / "run.toml").string()},
                              dir / (std::string("node") + node + ".log")));
  for (size_t i = 0; i < nodes.size(); ++i) {
    int status = 0;
    ASSERT_TRUE(wait_for([&] { return ::waitpid(nodes[i], &status, WNOHANG) == nodes[i]; }, "node " + std::to_string(i)));
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << read_text(dir / ("node" + std::to_string(i) + ".log"));
  }
  EXPECT_CONTAINS(read_text(dir / "run" / "events.log"), "data parallel: rank 0 of 2 (local 0 of 1)");
  std::map<int64_t, std::vector<int64_t>> prompts_by_step;
  std::ifstream samples(dir / "run" / "samples.jsonl");
  for (std::string line; std::getline(samples, line);) {
    const auto row = nlohmann::json::parse(line);
    prompts_by_step[row.at("step").get<int64_t>()].push_back(row.at("prompt_index").get<int64_t>());
    EXPECT_FALSE(row.at("prompt").get<std::string>().empty());
  }
  EXPECT_EQ(prompts_by_step, (std::map<int64_t, std::vector<int64_t>>{{0, {0, 1, 2}}, {3, {0, 1, 2}}}))
      << "samples at the start and the end, every prompt once, in order";
  auto ref = run_cli("train --no-db --config " + (dir / "ref.toml").string());
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  const auto a = metrics_by_step(dir / "ref"), b = metrics_by_step(dir / "run");
  ASSERT_EQ(b.size(), 3u);
  for (const auto& [step, row] : a)
    EXPECT_NEAR(b.at(step).at("loss").get<double>(), row.at("loss").get<double>(), 2e-5) << "step " << step;
}

// train.num_processes in a workspace run: the worker becomes the launcher of its ranks (and stays
// the run's worker), rank 0 records the run, and every step is recorded once.
TEST(DataParallel, AWorkspaceRunWithTwoProcessesIsRecordedOnce) {
  const auto dir = fresh_test_dir("ganpo-dp");
  std::ofstream(dir / "run.toml") << run_config(dir / "run", 4, 2, 3);
  const std::string db = (dir / "ws.sqlite").string();
  auto r = run_cli("train --config " + (dir / "run.toml").string() + " --db " + db);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_CONTAINS(r.output, "starting 2 processes (train.num_processes)");
  auto show = run_cli("runs --db " + db + " show 1 --json");
  ASSERT_EQ(show.exit_code, 0) << show.output;
  const auto run = nlohmann::json::parse(show.output.substr(show.output.find('{')));
  EXPECT_EQ(run.at("status").get<std::string>(), "completed") << show.output;
  // The store's own rows: one loss per step (rank 1 records nothing).
  EXPECT_EQ(query(db, "SELECT step, COUNT(*) FROM metrics WHERE key = 'loss' GROUP BY step"), "1|1\n2|1\n3|1\n");
}

// Ranks started by a launcher on a config with a workspace (`ganpo launch ... train --config`,
// as torchrun or srun start them): rank 0 records one run; the other ranks leave the store alone.
TEST(DataParallel, ALaunchedConfigIsRecordedOnceInTheWorkspace) {
  const auto dir = fresh_test_dir("ganpo-dp");
  std::ofstream(dir / "run.toml") << run_config(dir / "run", 4, 1, 3);
  const std::string db = (dir / "ws.sqlite").string();
  auto r = run_cli("launch --nproc-per-node 2 train --config " + (dir / "run.toml").string() + " --db " + db);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(query(db, "SELECT COUNT(*), MIN(status) FROM runs"), "1|completed\n");
  EXPECT_EQ(query(db, "SELECT step, COUNT(*) FROM metrics WHERE key = 'loss' GROUP BY step"), "1|1\n2|1\n3|1\n");
  EXPECT_CONTAINS(read_text(dir / "run" / "events.log"), "data parallel: rank 0 of 2");
}

// The same config launched again into the workspace is a second run in "<output_dir>-2" (the
// first run's folder is its own); its other rank, which trains the config as given, writes
// nothing into the first run's folder: the run's files, the held-out prompts of its data file
// included, are rank 0's.
TEST(DataParallel, ALaunchedConfigTrainedAgainWritesOnlyItsOwnFolder) {
  const auto dir = fresh_test_dir("ganpo-dp");
  {
    std::ofstream pairs(dir / "pairs.jsonl");
    for (int i = 0; i < 48; ++i)
      pairs << "{\"prompt\": \"Sort " << i << " 3 1\", \"chosen\": \"1 3 " << i << "\", \"rejected\": \"3 " << i
            << " 1\"}\n";
  }
  std::string c = run_config(dir / "run", 4, 1, 2);
  c.replace(c.find("builtin = \"lists\""), 17, "builtin = \"\"\ntrain = \"" + (dir / "pairs.jsonl").string() +
                                                     "\"\neval_fraction = 0.25");
  c.replace(c.find("judge_at_end = false"), 20, "judge_at_end = false\nnum_prompts = 4");
  std::ofstream(dir / "run.toml") << c;
  const std::string db = (dir / "ws.sqlite").string();
  const std::string launch = "launch --nproc-per-node 2 train --config " + (dir / "run.toml").string() + " --db " + db;
  auto first = run_cli(launch);
  ASSERT_EQ(first.exit_code, 0) << first.output;
  ASSERT_TRUE(fs::exists(dir / "run" / "judge_prompts.jsonl")) << first.output;
  fs::remove(dir / "run" / "judge_prompts.jsonl");
  auto second = run_cli(launch);
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_EQ(query(db, "SELECT id, status FROM runs ORDER BY id"), "1|completed\n2|completed\n");
  EXPECT_TRUE(fs::exists(dir / "run-2" / "judge_prompts.jsonl")) << second.output;
  EXPECT_FALSE(fs::exists(dir / "run" / "judge_prompts.jsonl")) << "rank 1 wrote into the first run's folder";
}

// A workspace run of two processes while it trains: starting it again is refused and leaves it
// training (the launcher claims the run before any rank starts), and `runs control ID stop`
// stops every rank.
TEST(DataParallel, ATrainingRunIsNotStartedTwiceAndStopsOnRequest) {
  const auto dir = fresh_test_dir("ganpo-dp");
  std::ofstream(dir / "run.toml") << run_config(dir / "run", 4, 2, 100000);
  const std::string db = (dir / "ws.sqlite").string();
  const pid_t first = spawn_cli({"train", "--config", (dir / "run.toml").string(), "--db", db}, dir / "first.log");
  ASSERT_TRUE(wait_for([&] { return query(db, "SELECT status FROM runs WHERE id = 1 AND last_step > 0") == "running\n"; },
                       "the run to train"));
  // The launcher stays the run's worker while its ranks train (rank 0 records in its name).
  EXPECT_EQ(query(db, "SELECT worker_pid FROM runs WHERE id = 1"), std::to_string(first) + "\n");
  EXPECT_EQ(launched_ranks(first).size(), 2u);
  for (const std::string& again : {"train --db " + db + " --run 1", "runs --db " + db + " resume 1"}) {
    auto r = run_cli(again);
    EXPECT_EQ(r.exit_code, 2) << again << "\n" << r.output;
    EXPECT_CONTAINS(r.output, "is already being trained by worker pid");
    EXPECT_EQ(query(db, "SELECT status, error FROM runs WHERE id = 1"), "running|\n") << "untouched by " << again;
  }
  auto stop = run_cli("runs --db " + db + " control 1 stop");
  ASSERT_EQ(stop.exit_code, 0) << stop.output;
  int status = 0;
  ASSERT_TRUE(wait_for([&] { return ::waitpid(first, &status, WNOHANG) == first; }, "the run to stop"));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 130) << status << "\n" << read_text(dir / "first.log");
  EXPECT_EQ(query(db, "SELECT status FROM runs WHERE id = 1"), "stopped\n");
}

// A rank of a workspace run dies (SIGKILL in step 3, after the checkpoint of step 2): the run is
// marked failed naming the rank, and continues from that checkpoint to its end, every step
// recorded once.
TEST(DataParallel, ARankThatDiesFailsTheWorkspaceRunWhichThenResumes) {
  const auto dir = fresh_test_dir("ganpo-dp");
  std::string config = run_config(dir / "run", 4, 2, 5);
  std::ofstream(dir / "run.toml") << config.insert(config.find("dist_timeout_s"), "save_steps = 2\n");
  const std::string db = (dir / "ws.sqlite").string();
  auto r = run_cli("train --config " + (dir / "run.toml").string() + " --db " + db,
                   "GANPO_KILL_AT=step.done:3 GANPO_FAULT_RANK=1");
  EXPECT_EQ(r.exit_code, 128 + SIGKILL) << r.output;
  EXPECT_CONTAINS(r.output, "rank 1 (pid");
  const std::string failed = query(db, "SELECT status, error FROM runs WHERE id = 1");
  EXPECT_EQ(failed.rfind("failed|", 0), 0u) << failed;
  EXPECT_CONTAINS(failed, "rank 1");
  EXPECT_EQ(query(db, "SELECT step FROM checkpoints WHERE run_id = 1"), "2\n") << "no half-written checkpoint";

  auto again = run_cli("runs --db " + db + " resume 1");
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_CONTAINS(again.output, "continuing from " + (dir / "run" / "checkpoint-2").string());
  EXPECT_EQ(query(db, "SELECT status FROM runs WHERE id = 1"), "completed\n");
  EXPECT_EQ(query(db, "SELECT step, COUNT(*) FROM metrics WHERE key = 'loss' GROUP BY step"), "1|1\n2|1\n3|1\n4|1\n5|1\n");
}

// `ganpo launch` with the torchrun-style options runs the same thing from a config with one
// process (each rank reads the place the launcher gives it); killing a rank ends the run.
// A rank the system ends while it tries its longest training rows (after step 1: core/train/
// trainer_state.h) is named with where it was: the other ranks' failure says it was trying them,
// the sign of memory that runs out there, and what would need less, in the console and in the
// workspace run's failure. A rank killed after the try is not said to have run out of memory.
TEST(DataParallel, ARankKilledWhileTryingItsLongestRowsIsNamedWithWhereItWas) {
  const auto dir = fresh_test_dir("ganpo-dp");
  std::ofstream(dir / "run.toml") << run_config(dir / "run", 2, 2, 12);
  const std::string db = (dir / "ws.sqlite").string();
  auto killed = run_cli("train --config " + (dir / "run.toml").string() + " --db " + db, "GANPO_KILL_AT=step.longest_rows@1");
  EXPECT_EQ(killed.exit_code, 128 + SIGKILL) << killed.output;
  EXPECT_CONTAINS(killed.output, "was killed by signal 9");
  const std::string why =
      "rank 1: trying its longest training rows ahead after step 1. A rank that went away while trying its longest "
      "training rows ahead (which every rank does after its first step so that memory they would run out of runs out "
      "then) most likely ran out of memory: the system's out-of-memory killer ends such a process without a word";
  const std::string less = "To need less memory, set train.gradient_checkpointing = true, lower "
                           "train.per_device_train_batch_size (now 2) and raise train.gradient_accumulation_steps to "
                           "keep 2 rows per optimizer step in each process";
  const std::string fewer = "or run fewer processes (train.num_processes, now 2: each holds its own copy of the models";
  EXPECT_CONTAINS(killed.output, why);
  const std::string error = query(db, "SELECT error FROM runs WHERE id = 1");
  EXPECT_CONTAINS(error, why);
  EXPECT_CONTAINS(error, less);
  EXPECT_CONTAINS(error, fewer);
  EXPECT_CONTAINS(read_text(dir / "run" / "events.log"), "info: memory: trying a micro-batch of the 2 longest training rows ahead");

  // Rank 0 killed there takes the rendezvous store with it: the launcher's failure in the
  // workspace says it, from the run's last log line (rank 0's, the try's).
  std::ofstream(dir / "zero.toml") << run_config(dir / "zero", 2, 2, 12);
  const std::string zero_db = (dir / "zero.sqlite").string();
  auto zero = run_cli("train --config " + (dir / "zero.toml").string() + " --db " + zero_db,
                      as_the_oom_killer_at(dir, "step.longest_rows@0"));
  EXPECT_EQ(zero.exit_code, 128 + SIGKILL) << zero.output;
  const std::string zero_error = query(zero_db, "SELECT error FROM runs WHERE id = 1");
  EXPECT_CONTAINS(zero_error, "rank 0 (pid ");
  EXPECT_CONTAINS(zero_error, ") was killed by signal 9 (Killed) (the kernel's out-of-memory killer counted a kill since "
                              "the ranks started). It stopped while trying its longest training rows "
                              "ahead (its last log line), which a run does after its first step so that memory they "
                              "would run out of runs out then: the system's out-of-memory killer most likely ended it");
  EXPECT_CONTAINS(zero_error, fewer);

  // Killed in the evaluation right after the try: its note says the try is over.
  std::ofstream(dir / "step.toml") << run_config(dir / "step", 2, 2, 12, "eval_steps = 1\n");
  auto elsewhere = run_cli("train --no-db --config " + (dir / "step.toml").string(), "GANPO_KILL_AT=evaluation.batch@1");
  EXPECT_EQ(elsewhere.exit_code, 128 + SIGKILL) << elsewhere.output;
  EXPECT_CONTAINS(elsewhere.output, "rank 1: tried its longest training rows ahead after step 1");
  EXPECT_EQ(elsewhere.output.find("most likely"), std::string::npos) << elsewhere.output;
  EXPECT_EQ(elsewhere.output.find("To need less memory"), std::string::npos) << elsewhere.output;
}

TEST(DataParallel, LaunchRunsTheRanksAndAKilledRankEndsTheRunNamingIt) {
  const auto dir = fresh_test_dir("ganpo-dp");
  std::ofstream(dir / "run.toml") << run_config(dir / "run", 4, 1, 2);
  auto ok = run_cli("launch --nproc-per-node 2 train --no-db --config " + (dir / "run.toml").string());
  ASSERT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_CONTAINS(read_text(dir / "run" / "events.log"), "data parallel: rank 0 of 2 (local 0 of 2)");

  // A long run; rank 1 is killed once the run has logged a step.
  std::ofstream(dir / "long.toml") << run_config(dir / "long", 4, 2, 100000);
  const pid_t launcher = spawn_cli({"train", "--no-db", "--config", (dir / "long.toml").string()}, dir / "long.log");
  ASSERT_TRUE(wait_for([&] { return fs::exists(dir / "long" / "metrics.jsonl") && fs::file_size(dir / "long" / "metrics.jsonl") > 0; },
                       "the first logged step"));
  const pid_t rank1 = launched_ranks(launcher)[1];
  ASSERT_GT(rank1, 0) << "rank 1 among the launcher's children";
  ::kill(rank1, SIGKILL);
  int status = 0;
  ASSERT_TRUE(wait_for([&] { return ::waitpid(launcher, &status, WNOHANG) == launcher; }, "the launcher to end", 120));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 128 + SIGKILL) << status;
  const std::string out = read_text(dir / "long.log");
  EXPECT_CONTAINS(out, "rank 1 (pid " + std::to_string(rank1) + ") was killed by signal 9");
  EXPECT_CONTAINS(out, "data-parallel");
}

// --master-port out of range was blamed on MASTER_PORT (which the launcher sets) by every rank; more
// CPU processes than cores (here one core, by affinity) ran without a word, each step slower.
TEST(DataParallel, LaunchNamesABadPortOptionAndWarnsOfMoreCpuProcessesThanCores) {
  const auto dir = fresh_test_dir("ganpo-dp");
  std::ofstream(dir / "run.toml") << run_config(dir / "run", 4, 1, 1);
  auto port = run_cli("launch --master-port 70000 train --no-db --config " + (dir / "run.toml").string());
  EXPECT_EQ(port.exit_code, 2) << port.output;
  EXPECT_CONTAINS(port.output, "--master-port must be a port from 1 to 65535 (or 0 for a free one), got 70000");
  EXPECT_EQ(port.output.find("MASTER_PORT"), std::string::npos) << port.output;
  auto crowded = run_cli("launch --nproc-per-node 2 train --no-db --config " + (dir / "run.toml").string(), "taskset -c 0");
  ASSERT_EQ(crowded.exit_code, 0) << crowded.output;
  EXPECT_CONTAINS(crowded.output, "2 processes of this data-parallel run share this host's 1 CPU core(s)");
}

// A rank that fails with a message (as one that runs out of memory does) leaves it in the
// rendezvous store as it goes: rank 0's failed collective says why, not only that a rank went
// away, in the console and in the workspace run's failure.
TEST(DataParallel, ARankThatFailsHasItsReasonSaidByTheOthers) {
  const auto dir = fresh_test_dir("ganpo-dp");
  std::ofstream(dir / "run.toml") << run_config(dir / "run", 4, 2, 1000);
  const std::string db = (dir / "ws.sqlite").string();
  auto r = run_cli("train --config " + (dir / "run.toml").string() + " --db " + db,
                   "GANPO_FAIL_AT=step.done:2 GANPO_FAULT_RANK=1");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  const std::string reason = "rank 1 failed: failed at step.done on purpose (GANPO_FAIL_AT)";
  EXPECT_CONTAINS(r.output, "failed on rank 0 of 2 because " + reason);
  EXPECT_CONTAINS(query(db, "SELECT status, error FROM runs WHERE id = 1"), reason);
}

// Rank 0 failing takes the rendezvous store with it, so the others may not read its reason there:
// it is the run's failure in the workspace all the same (rank 0 records it).
TEST(DataParallel, RankZeroThatFailsKeepsItsReasonInTheRun) {
  const auto dir = fresh_test_dir("ganpo-dp");
  std::ofstream(dir / "run.toml") << run_config(dir / "run", 4, 2, 1000);
  const std::string db = (dir / "ws.sqlite").string();
  auto r = run_cli("train --config " + (dir / "run.toml").string() + " --db " + db,
                   "GANPO_FAIL_AT=step.done:2 GANPO_FAULT_RANK=0");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  // (The launcher names whichever rank it finds ended first: rank 1 may end before rank 0 has.)
  const std::string failed = query(db, "SELECT status, error FROM runs WHERE id = 1");
  EXPECT_EQ(failed.rfind("failed|", 0), 0u) << failed;
  EXPECT_CONTAINS(failed, "failed at step.done on purpose (GANPO_FAIL_AT)");
  // Rank 1, where the launcher has not stopped it first, says rank 0's reason where the store
  // still answered as rank 0 went, and that rank 0 is the one gone where it did not.
  if (const auto at = r.output.find("[rank 1] ganpo train: failed: data-parallel"); at != std::string::npos) {
    const std::string said = r.output.substr(at, r.output.find('\n', at) - at);
    EXPECT_TRUE(said.find("because rank 0 failed: failed at step.done on purpose") != std::string::npos ||
                said.find("rank 0 stopped or could not be reached") != std::string::npos)
        << said;
  }
}

// train.auto_find_batch_size over two ranks of a workspace run: rank 1 runs out of memory in step
// 3. The launcher starts both ranks again from checkpoint-2 with half the micro-batch and twice
// the accumulation; the run completes in its row, every step recorded once, steps 3-5 equal to a
// resume of checkpoint-2 configured with that batch, and the checkpoints after it say the batch.
// The ranks started again take the reference's precomputed log-probs from the first start.
TEST(DataParallel, RanksThatRunOutOfMemoryAreStartedAgainWithASmallerBatch) {
  const auto dir = fresh_test_dir("ganpo-dp");
  std::ofstream(dir / "run.toml") << run_config(dir / "run", 4, 2, 5,
                                                "save_steps = 2\nauto_find_batch_size = true\nprecompute_ref_log_probs = true\n");
  const std::string db = (dir / "ws.sqlite").string();
  auto r = run_cli("train --config " + (dir / "run.toml").string() + " --db " + db,
                   "GANPO_OOM_AT=step.done:3 GANPO_FAULT_RANK=1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string ckpt2 = (dir / "run" / "checkpoint-2").string();
  // (Either rank may be the first the launcher finds ended: rank 0 ends so too, as its collective fails.)
  EXPECT_CONTAINS(r.output, "exited with code 75 (to be started again with a smaller batch)");
  EXPECT_CONTAINS(r.output, "ganpo launch: rank 1 ran out of memory; train.auto_find_batch_size: starting the 2 "
                            "processes again with 2 rows a micro-batch x 2 accumulation steps");
  EXPECT_CONTAINS(r.output, "from " + ckpt2 + "\n");
  EXPECT_EQ(query(db, "SELECT status FROM runs WHERE id = 1"), "completed\n");
  EXPECT_EQ(query(db, "SELECT step, COUNT(*) FROM metrics WHERE key = 'loss' GROUP BY step"), "1|1\n2|1\n3|1\n4|1\n5|1\n");
  EXPECT_CONTAINS(query(db, "SELECT text FROM events WHERE run_id = 1 AND text LIKE '%launcher started the ranks again%'"),
                  "2 rows a micro-batch x 2 accumulation steps and evaluation batches of 8 after rank 1 ran out of "
                  "memory: This machine's RAM ran out of memory while training after step 3.");
  // Rank 0's events say where rank 1 ran out, in rank 1's words.
  EXPECT_CONTAINS(query(db, "SELECT text FROM events WHERE run_id = 1 AND text LIKE 'rank 1 ran out of memory;%'"),
                  "as before). Rank 1: This machine's RAM ran out of memory while training after "
                  "step 3. Its estimate for a step was");
  // The reference's precomputed log-probs (evaluations in batches of 8 before and after) are rank
  // 0's from the first start.
  EXPECT_EQ(query(db, "SELECT COUNT(*) FROM events WHERE run_id = 1 AND text LIKE '%pairs precomputed in%'"), "1\n");
  EXPECT_CONTAINS(query(db, "SELECT text FROM events WHERE run_id = 1 AND text LIKE '%pairs kept from%'"),
                  "pairs kept from before the launcher started the ranks again (the same pairs in batches of 8;");
  const auto state = nlohmann::json::parse(std::ifstream(dir / "run" / "checkpoint-4" / "trainer_state" / "state.json"));
  EXPECT_EQ(state.at("per_device_train_batch_size"), 2);
  EXPECT_EQ(state.at("gradient_accumulation_steps"), 2);

  std::ofstream(dir / "ref.toml") << run_config(dir / "ref", 2, 2, 5,
                                                "save_steps = 2\ngradient_accumulation_steps = 2\nprecompute_ref_log_probs = true\n");
  auto ref = run_cli("train --no-db --config " + (dir / "ref.toml").string() + " --resume " + ckpt2);
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  const auto a = metrics_by_step(dir / "run"), b = metrics_by_step(dir / "ref");
  ASSERT_EQ(a.size(), 5u) << "metrics.jsonl keeps one row per step";
  for (int64_t step = 3; step <= 5; ++step)
    for (const auto& [k, v] : b.at(step).items())
      if (compared_key(k) && v.is_number()) {
        EXPECT_EQ(a.at(step).at(k).get<double>(), v.get<double>()) << k << " at step " << step;
      }
}

// On the CPU the system may stop a process that asks for more memory than the machine has before
// any allocation fails, so with train.auto_find_batch_size the ranks start with batches their
// estimate says fit each one's share of the free memory, as one process does. Rank 1 reads less
// free memory than rank 0 (GANPO_FREE_RAM_FOR_TESTS, by rank): both take its batches (the least
// share any rank read), and the run equals one configured with them, step for step.
TEST(DataParallel, CpuRanksWithAutoFindBatchSizeStartWithBatchesThatFitTheirShareOfTheFreeMemory) {
  const auto dir = fresh_test_dir("ganpo-dp");
  const std::string extra = "eval_steps = 2\nper_device_eval_batch_size = 8\n";
  const std::string asked = run_config(dir / "run", 4, 2, 4, extra + "auto_find_batch_size = true\n");
  const std::string two = run_config(dir / "two", 2, 2, 4, extra + "gradient_accumulation_steps = 2\n");
  const MemoryEstimate at4 = estimate_training_memory(config_from_toml(asked)),
                       at2 = estimate_training_memory(config_from_toml(two));
  ASSERT_LT(at2.total_bytes, at4.step_total_bytes);
  const int64_t share = (at2.total_bytes + at4.step_total_bytes) / 2;  // room for 2 rows a process, not 4
  std::ofstream(dir / "run.toml") << asked;
  std::ofstream(dir / "two.toml") << two;
  auto r = run_cli("train --no-db --config " + (dir / "run.toml").string(),
                   "GANPO_FREE_RAM_FOR_TESTS=" + std::to_string(8 * at4.total_bytes) + "," + std::to_string(2 * share));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_CONTAINS(read_text(dir / "run" / "events.log"),
                  "is more than each process's share of this machine's free RAM (MemAvailable over its 2 processes, ");
  EXPECT_CONTAINS(read_text(dir / "run" / "events.log"),
                  "before any allocation fails: the run starts with 2 rows a micro-batch x 2 accumulation steps "
                  "(train.per_device_train_batch_size 4 -> 2, train.gradient_accumulation_steps 1 -> 2; 4 rows per "
                  "optimizer step in each of the 2 processes, 8 in all, as asked)");
  auto ref = run_cli("train --no-db --config " + (dir / "two.toml").string());
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  const auto a = metrics_by_step(dir / "run"), b = metrics_by_step(dir / "two");
  ASSERT_EQ(a.size(), 4u);
  for (int64_t step = 1; step <= 4; ++step)
    for (const auto& [k, v] : b.at(step).items())
      if (compared_key(k) && v.is_number()) {
        EXPECT_EQ(a.at(step).at(k).get<double>(), v.get<double>()) << k << " at step " << step;
      }
}

// The same without a workspace, where rank 0 runs out of memory in the held-out evaluation of
// step 4: the ranks learn it in the evaluation's sum, save step 4 together, and start again from
// checkpoint-4 with evaluation batches of 4, the evaluation of step 4 first (steps 3 and 4 are not
// trained again); the run's files have each step and each evaluation once.
TEST(DataParallel, ARankZeroOutOfMemoryInAnEvaluationStartsTheRanksAgain) {
  const auto dir = fresh_test_dir("ganpo-dp");
  std::ofstream(dir / "run.toml") << run_config(dir / "run", 4, 2, 5,
                                                "save_steps = 2\neval_steps = 2\nauto_find_batch_size = true\n");
  auto r = run_cli("train --no-db --config " + (dir / "run.toml").string(), "GANPO_OOM_AT=evaluation.batch:2 GANPO_FAULT_RANK=0");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_CONTAINS(r.output, "ganpo launch: rank 0 ran out of memory; train.auto_find_batch_size: starting the 2 "
                            "processes again with evaluation batches of 4");
  EXPECT_CONTAINS(r.output, "from " + (dir / "run" / "checkpoint-4").string() + "\n");
  EXPECT_CONTAINS(r.output, "[rank 1] warning: rank 0 ran out of memory while running a held-out evaluation after step 4");
  EXPECT_CONTAINS(read_text(dir / "run" / "events.log"), "the held-out evaluation of step 4 is not in " +
                                                             (dir / "run" / "checkpoint-4").string() +
                                                             " (saved before it): it is done first");
  const std::string rows = read_text(dir / "run" / "metrics.jsonl");
  EXPECT_EQ(std::count(rows.begin(), rows.end(), '\n'), 5) << "steps 3 and 4 trained once:\n" << rows;
  EXPECT_EQ(metrics_by_step(dir / "run").size(), 5u);
  std::vector<int64_t> evaluated;
  std::ifstream eval(dir / "run" / "eval.jsonl");
  for (std::string line; std::getline(eval, line);) evaluated.push_back(nlohmann::json::parse(line).at("step"));
  EXPECT_EQ(evaluated, (std::vector<int64_t>{2, 4, 5}));
  const auto state = nlohmann::json::parse(std::ifstream(dir / "run" / "checkpoint-5" / "trainer_state" / "state.json"));
  EXPECT_EQ(state.at("per_device_eval_batch_size"), 4);
}

// Without train.auto_find_batch_size, rank 1 running out of memory in the held-out evaluation of
// step 2 fails the workspace run, but the ranks learn it in the evaluation's sum and save step 2
// together first (save_steps = 0: no other checkpoint): the run's failure says so, and resuming it
// does the evaluation of step 2 first and completes, each step and each evaluation once.
TEST(DataParallel, ARankOutOfMemoryInAnEvaluationSavesItsStepFirst) {
  const auto dir = fresh_test_dir("ganpo-dp");
  std::ofstream(dir / "run.toml") << run_config(dir / "run", 4, 2, 4, "save_steps = 0\neval_steps = 2\n");
  const std::string db = (dir / "ws.sqlite").string();
  auto r = run_cli("train --config " + (dir / "run.toml").string() + " --db " + db,
                   "GANPO_OOM_AT=evaluation.batch:1 GANPO_FAULT_RANK=1");
  EXPECT_NE(r.exit_code, 0) << r.output;
  const std::string ckpt2 = (dir / "run" / "checkpoint-2").string();
  const std::string error = query(db, "SELECT error FROM runs WHERE id = 1");
  EXPECT_CONTAINS(error, "rank 1 ran out of memory while running a held-out evaluation after step 2 (its own log says "
                         "how far). To need less memory, lower train.per_device_eval_batch_size (now 8;");
  EXPECT_CONTAINS(error, "; then resume from " + ckpt2 + ", where step 2 is saved (nothing trained is lost).");
  EXPECT_CONTAINS(r.output, "[rank 1] error: This machine's RAM ran out of memory while running a held-out evaluation "
                            "after step 2.");
  auto resumed = run_cli("runs resume 1 --db " + db);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_CONTAINS(resumed.output, "continuing from " + ckpt2);
  EXPECT_EQ(query(db, "SELECT status FROM runs WHERE id = 1"), "completed\n");
  EXPECT_EQ(query(db, "SELECT step, COUNT(*) FROM metrics WHERE key = 'loss' GROUP BY step"), "1|1\n2|1\n3|1\n4|1\n");
  std::vector<int64_t> evaluated;
  std::ifstream eval(dir / "run" / "eval.jsonl");
  for (std::string line; std::getline(eval, line);) evaluated.push_back(nlohmann::json::parse(line).at("step"));
  EXPECT_EQ(evaluated, (std::vector<int64_t>{2, 4}));
}

// The same for the live samples, each rank's share of the prompts: rank 1 runs out generating
// step 2's (its third call: both models at step 0, the policy at step 2); the ranks learn it in
// the samples' gather, save step 2 together, marked as saved before its samples, and the run
// fails saying so. A resume generates step 2's samples first; killed after step 3, it is resumed
// from checkpoint-2 again, which makes them again in place of the first, and completes: each
// step trained once and each step's samples recorded once, in the workspace and the files.
TEST(DataParallel, ARankOutOfMemoryInTheLiveSamplesSavesItsStepFirst) {
  const auto dir = fresh_test_dir("ganpo-dp");
  std::ofstream(dir / "run.toml") << sampling_run_config(dir / "run");
  const std::string db = (dir / "ws.sqlite").string();
  auto r = run_cli("train --config " + (dir / "run.toml").string() + " --db " + db, "GANPO_OOM_AT=samples.batch:3@1");
  EXPECT_NE(r.exit_code, 0) << r.output;
  const std::string ckpt2 = (dir / "run" / "checkpoint-2").string();
  const std::string error = query(db, "SELECT error FROM runs WHERE id = 1");
  EXPECT_CONTAINS(error, "rank 1 ran out of memory while generating the live samples after step 2 (its own log says "
                         "how far). To need less memory, lower sampling.num_prompts (now 3) or sampling.max_new_tokens (now 4)");
  EXPECT_CONTAINS(error, "; then resume from " + ckpt2 + ", where step 2 is saved (nothing trained is lost).");
  EXPECT_CONTAINS(r.output, "[rank 1] error: This machine's RAM ran out of memory while generating the live samples "
                            "after step 2.");
  EXPECT_CONTAINS(r.output, "then resume from " + ckpt2 + ", where step 2 is saved (nothing trained is lost). C++:");
  EXPECT_EQ(nlohmann::json::parse(read_text(fs::path(ckpt2) / "meta.json")).at("samples_pending"), true);
  auto killed = run_cli("runs resume 1 --db " + db, "GANPO_KILL_AT=step.done@1");
  EXPECT_NE(killed.exit_code, 0) << killed.output;
  EXPECT_EQ(query(db, "SELECT step, COUNT(*) FROM samples GROUP BY step"), "0|3\n2|3\n");
  auto resumed = run_cli("runs resume 1 --db " + db);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_CONTAINS(read_text(dir / "run" / "events.log"),
                  "the live samples of step 2 are not in " + ckpt2 + " (saved before them): they are done first");
  EXPECT_EQ(query(db, "SELECT status FROM runs WHERE id = 1"), "completed\n");
  EXPECT_EQ(query(db, "SELECT step, COUNT(*) FROM metrics WHERE key = 'loss' GROUP BY step"), "1|1\n2|1\n3|1\n4|1\n");
  EXPECT_EQ(query(db, "SELECT step, COUNT(*) FROM samples GROUP BY step"), "0|3\n2|3\n4|3\n");
  std::map<int64_t, int> sampled;
  std::ifstream samples(dir / "run" / "samples.jsonl");
  for (std::string line; std::getline(samples, line);) ++sampled[nlohmann::json::parse(line).at("step").get<int64_t>()];
  EXPECT_EQ(sampled, (std::map<int64_t, int>{{0, 3}, {2, 3}, {4, 3}}));
}

// A rank 0 whose samples fail otherwise (an error, not memory) writes step 2's checkpoint all
// the same, as the ranks agree in the gather, and the other rank's failure names it and says to
// mend it.
TEST(DataParallel, ARankZeroWhoseLiveSamplesFailSavesItsStepWithTheOthers) {
  const auto dir = fresh_test_dir("ganpo-dp");
  std::ofstream(dir / "run.toml") << sampling_run_config(dir / "run");
  auto r = run_cli("train --no-db --config " + (dir / "run.toml").string(), "GANPO_FAIL_AT=samples.batch:3@0");
  EXPECT_NE(r.exit_code, 0) << r.output;
  const std::string ckpt2 = (dir / "run" / "checkpoint-2").string();
  EXPECT_CONTAINS(r.output, "failed at samples.batch on purpose (GANPO_FAIL_AT)");
  EXPECT_CONTAINS(r.output, "rank 0 failed while generating the live samples after step 2 (its own log says why). Mend "
                            "that; then resume from " + ckpt2 + ", where step 2 is saved (nothing trained is lost).");
  EXPECT_EQ(incomplete_reason(ckpt2), "");
  EXPECT_EQ(nlohmann::json::parse(read_text(fs::path(ckpt2) / "meta.json")).at("samples_pending"), true);
}

// On the CPU the system's out-of-memory killer ends a rank without a word, so it cannot ask to be
// started again. One it ends while it tries its longest rows after step 1 (rank 1, then rank 0,
// which serves the rendezvous store) under train.auto_find_batch_size has left what it would ask
// (a standing request): its launcher takes it, the other rank ends asking too, and every rank
// starts again with half the micro-batch; the run completes (rank 0's in its workspace, which
// rank 0 killed leaves running for the new start to go on with). A kill the kernel did not count
// (a user-space killer's) is taken so too, the message less sure.
TEST(DataParallel, ARankTheSystemEndsWhileTryingItsLongestRowsIsStartedAgainWithASmallerBatch) {
  struct Case {
    int killed;
    bool counted;  // by the kernel (else as by a user-space killer such as systemd-oomd)
  };
  for (const Case& k : {Case{1, true}, Case{0, true}, Case{1, false}}) {
    const int killed = k.killed;
    SCOPED_TRACE("rank " + std::to_string(killed) + (k.counted ? ", counted" : ", not counted"));
    const auto dir = fresh_test_dir("ganpo-dp");
    std::ofstream(dir / "run.toml") << run_config(dir / "run", 4, 2, 3, "auto_find_batch_size = true\n");
    const std::string db = (dir / "ws.sqlite").string();
    const std::string at = "step.longest_rows@" + std::to_string(killed);
    std::string env = as_the_oom_killer_at(dir, at);
    if (!k.counted) env = "GANPO_VMSTAT_FOR_TESTS=" + (dir / "vmstat").string() + " GANPO_KILL_AT=" + at;
    auto r = run_cli("train --config " + (dir / "run.toml").string() + (killed == 0 ? " --db " + db : " --no-db"), env);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const std::string rank = "rank " + std::to_string(killed);
    EXPECT_CONTAINS(r.output, "ganpo launch: " + rank + " (pid");
    EXPECT_CONTAINS(r.output, std::string("was killed by signal 9 (Killed) while trying its longest training rows ahead: ") +
                                  (k.counted ? "the system's out-of-memory killer ended it (the kernel counted it)"
                                             : "most likely the system's out-of-memory killer ended it") +
                                  "; waiting for the other ranks");
    EXPECT_CONTAINS(r.output, "ganpo launch: " + rank + " ran out of memory; train.auto_find_batch_size: starting the 2 "
                              "processes again with 2 rows a micro-batch x 2 accumulation steps");
    EXPECT_CONTAINS(r.output, "from the start\n");
    EXPECT_EQ(metrics_by_step(dir / "run").size(), 3u);
    EXPECT_TRUE(fs::exists(dir / "run" / "final"));
    if (killed == 0) {
      EXPECT_EQ(query(db, "SELECT status, last_step FROM runs WHERE id = 1"), "completed|3\n");
      // (Rank 0 ended without a word: the new start's says why it was started again.)
      EXPECT_CONTAINS(query(db, "SELECT text FROM events WHERE run_id = 1 AND level = 'warning'"),
                      "train.auto_find_batch_size: the launcher started the ranks again with 2 rows a micro-batch x 2 "
                      "accumulation steps and evaluation batches of 8 after rank 0 ran out of memory: it was ended "
                      "without a word while trying its longest training rows ahead after step 1: most likely by the "
                      "system's out-of-memory killer");
    }
  }
}

// A rank that hangs in that try (alive: not the system's doing) leaves its standing request, but
// its launcher never takes it: the other rank, its collective timed out, waits for that in vain and
// fails as before, without a word of memory, and the launcher stops the hung one.
TEST(DataParallel, ARankThatHangsWhileTryingItsLongestRowsIsNotStartedAgain) {
  const auto dir = fresh_test_dir("ganpo-dp");
  std::ofstream(dir / "run.toml") << short_timeout_run_config(dir / "run", 3, "auto_find_batch_size = true\n");
  auto r = run_cli("train --no-db --config " + (dir / "run.toml").string(), "GANPO_HANG_AT=step.longest_rows@1");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_CONTAINS(r.output, "hung past train.dist_timeout_s");
  EXPECT_CONTAINS(r.output, "ganpo launch: rank 0 (pid");
  EXPECT_EQ(r.output.find("starting the 2 processes again"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("ran out of memory"), std::string::npos) << "a hung rank did not go away: " << r.output;
}

// A rank that does not end when another asks to be started again (on GPUs, one waiting on an
// NCCL all-reduce that never notices its peer has gone; here rank 0 stops, alive, after step 3
// as rank 1 runs out of memory there) is ended by its watch (core/relaunch_watch.h) once the
// grace has passed, long before train.dist_timeout_s, and the launcher starts both again.
TEST(DataParallel, ARankThatDoesNotEndWhenAnotherAsksToStartAgainIsEndedByItsWatch) {
  const auto dir = fresh_test_dir("ganpo-dp");
  std::ofstream(dir / "run.toml") << run_config(dir / "run", 4, 2, 5, "save_steps = 2\nauto_find_batch_size = true\n");
  auto r = run_cli("train --no-db --config " + (dir / "run.toml").string(),
                   "GANPO_OOM_AT=step.done:3@1 GANPO_HANG_AT=step.done:3@0");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_CONTAINS(r.output, "rank 0: rank 1 asked the launcher to start every rank again (train.auto_find_batch_size), "
                            "and this rank has not ended with it 6 s later");
  EXPECT_CONTAINS(r.output, "ganpo launch: rank 1 ran out of memory; train.auto_find_batch_size: starting the 2 "
                            "processes again with 2 rows a micro-batch x 2 accumulation steps");
  EXPECT_CONTAINS(r.output, "from " + (dir / "run" / "checkpoint-2").string() + "\n");
  EXPECT_EQ(metrics_by_step(dir / "run").size(), 5u);
}

// `ganpo launch` with a workspace cannot start the ranks again (a new rank 0 would take the run
// as dead, or record a new one), so there the ranks refuse the setting, saying how to start it.
TEST(DataParallel, LaunchWithAWorkspaceRefusesAutoFindBatchSize) {
  const auto dir = fresh_test_dir("ganpo-dp");
  std::ofstream(dir / "run.toml") << run_config(dir / "run", 4, 1, 2, "auto_find_batch_size = true\n");
  auto r = run_cli("launch --nproc-per-node 2 train --config " + (dir / "run.toml").string() + " --db " +
                   (dir / "ws.sqlite").string());
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_CONTAINS(r.output, "train.auto_find_batch_size in a data-parallel run needs a launcher that starts every rank "
                            "again");
  EXPECT_CONTAINS(r.output, "`ganpo launch --nproc-per-node N train --no-db`");
}

// A rank that hangs (stops inside a step, alive) makes rank 0's next collective fail after
// train.dist_timeout_s with the ranks' progress; the launcher then stops the hung rank.
TEST(DataParallel, AHungRankEndsTheRunAfterTheTimeoutNamingTheRankBehind) {
  const auto dir = fresh_test_dir("ganpo-dp");
  std::ofstream(dir / "run.toml") << short_timeout_run_config(dir / "run", 1000);
  auto r = run_cli("train --no-db --config " + (dir / "run.toml").string(), "GANPO_HANG_AT=step.done:2 GANPO_FAULT_RANK=1");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_CONTAINS(r.output, "hung past train.dist_timeout_s");
  EXPECT_CONTAINS(r.output, "rank 0: logging step 2; rank 1: finished step 2 (behind: it hung or died)");
  EXPECT_CONTAINS(r.output, "ganpo launch: rank 0 (pid");
}

// The launcher killed outright (SIGKILL, no chance to pass anything on): its ranks get SIGTERM
// from the kernel and stop, rather than train on with nobody to watch them.
// SIGKILL to a launcher of 2 ranks; each rank ends on its own (or is killed, and the test fails).
void kill_launcher_and_expect_its_ranks_to_end(pid_t launcher) {
  const auto ranks = launched_ranks(launcher);
  ASSERT_EQ(ranks.size(), 2u);
  ::kill(launcher, SIGKILL);
  ASSERT_EQ(::waitpid(launcher, nullptr, 0), launcher);
  for (const auto& [rank, pid] : ranks)
    EXPECT_TRUE(wait_for([&, pid = pid] { return !running(pid); }, "rank " + std::to_string(rank) + " to end", 120));
  for (const auto& [rank, pid] : ranks)
    if (running(pid)) ::kill(pid, SIGKILL);  // (not left behind when the test fails)
}

TEST(DataParallel, RanksStopWhenTheirLauncherIsKilled) {
  const auto dir = fresh_test_dir("ganpo-dp");
  std::ofstream(dir / "long.toml") << run_config(dir / "long", 4, 2, 100000);
  const pid_t launcher = spawn_cli({"train", "--no-db", "--config", (dir / "long.toml").string()}, dir / "long.log");
  ASSERT_TRUE(wait_for([&] { return fs::exists(dir / "long" / "metrics.jsonl") && fs::file_size(dir / "long" / "metrics.jsonl") > 0; },
                       "the first logged step"));
  kill_launcher_and_expect_its_ranks_to_end(launcher);
}

// A rank hung where its stop never comes (here rank 1, paused in its try of the longest rows)
// ends itself train.dist_timeout_s after its launcher is killed: the SIGTERM the launcher's death
// sends it only stops a rank at a step boundary, and it lived on for good before.
TEST(DataParallel, AHungRankEndsWhenItsLauncherIsKilled) {
  const auto dir = fresh_test_dir("ganpo-dp");
  std::ofstream(dir / "run.toml") << short_timeout_run_config(dir / "run", 3);
  ::setenv("GANPO_HANG_AT", "step.longest_rows@1", 1);
  const pid_t launcher = spawn_cli({"train", "--no-db", "--config", (dir / "run.toml").string()}, dir / "run.log");
  ::unsetenv("GANPO_HANG_AT");
  ASSERT_TRUE(wait_for([&] { return read_text(dir / "run" / "events.log").find("memory: trying") != std::string::npos; },
                       "rank 0 to try its longest rows (rank 1 hangs there)"));
  kill_launcher_and_expect_its_ranks_to_end(launcher);
}

}  // namespace
}  // namespace ganpo::test
