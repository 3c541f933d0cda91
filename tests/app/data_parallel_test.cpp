// Data parallelism end to end, with real processes and a real c10d process group (Gloo over
// loopback): two ranks with batch 4 train exactly as one process with batch 8 (DPO + GANPO:
// losses, critic terms and EMA means per step, and the final weights through their logits),
// `ganpo launch` starts the same run as train.num_processes does, and a rank that dies takes
// the run down at once with a message naming it.
#include <signal.h>
#include <sys/wait.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "tests/support/cli_runner.h"
#include "tests/support/expect_contains.h"

namespace fs = std::filesystem;

namespace ganpo::test {
namespace {

// A preference run small enough for seconds: GANPO on, critic dropout off (dropout masks are
// drawn per process, so they could not match), no samples, no judge.
std::string run_config(const fs::path& out, int64_t batch, int64_t processes, int64_t steps) {
  return "name = \"dp\"\nstage = \"preference\"\nseed = 7\ndevice = \"cpu\"\noutput_dir = \"" + out.string() +
         "\"\n[model]\npreset = \"\"\nd_model = 32\nn_layers = 2\nn_heads = 2\nmax_seq_len = 128\n"
         "[data]\nbuiltin = \"lists\"\nbuiltin_train_size = 64\nbuiltin_eval_size = 8\nmax_length = 96\nmax_prompt_length = 48\n"
         "[ganpo]\ncritic_hidden = 16\ncritic_layers = 1\ncritic_heads = 2\ncritic_max_len = 128\ncritic_dropout = 0.0\n"
         "[train]\nlearning_rate = 0.001\nper_device_train_batch_size = " + std::to_string(batch) +
         "\nmax_steps = " + std::to_string(steps) + "\nlogging_steps = 1\nnum_threads = 1\nnum_processes = " +
         std::to_string(processes) + "\ndist_timeout_s = 60\n[sampling]\nnum_prompts = 0\n[eval]\njudge_at_end = false\n";
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

bool compared_key(const std::string& k) {
  return k == "loss" || k == "opo_loss" || k == "grad_norm" || k.rfind("adv/", 0) == 0 || k.rfind("critic/", 0) == 0 ||
         k.rfind("ema/", 0) == 0 || k.rfind("rewards/", 0) == 0 || k.rfind("logps/", 0) == 0;
}

TEST(DataParallel, TwoRanksOfBatch4TrainLikeOneProcessOfBatch8) {
  const auto dir = fresh_test_dir("ganpo-dp");
  std::ofstream(dir / "one.toml") << run_config(dir / "one", 8, 1, 5);
  std::ofstream(dir / "two.toml") << run_config(dir / "two", 4, 2, 5);
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

// `ganpo launch` with the torchrun-style options runs the same thing from a config with one
// process (each rank reads the place the launcher gives it); killing a rank ends the run.
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
  // Rank 1 is the launcher's second child: find it by its environment's RANK=1.
  pid_t rank1 = -1;
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
    std::string env((std::istreambuf_iterator<char>(environ)), std::istreambuf_iterator<char>());
    if (env.find(std::string("RANK=1") + '\0') != std::string::npos && env.find("LOCAL_RANK=1") != std::string::npos)
      rank1 = std::stoi(name);
  }
  ASSERT_GT(rank1, 0) << "rank 1 among the launcher's children";
  ::kill(rank1, SIGKILL);
  int status = 0;
  ASSERT_TRUE(wait_for([&] { return ::waitpid(launcher, &status, WNOHANG) == launcher; }, "the launcher to end", 120));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 128 + SIGKILL) << status;
  const std::string out = read_text(dir / "long.log");
  EXPECT_CONTAINS(out, "rank 1 (pid " + std::to_string(rank1) + ") was killed by signal 9");
  EXPECT_CONTAINS(out, "data-parallel");
}

}  // namespace
}  // namespace ganpo::test
