// End to end through the real `ganpo` binary: a reduced demo (SFT, then DPO + GANPO, then the
// judge), and the same pipeline on a preference file in TRL's JSONL format. Minutes, not
// seconds: labelled `slow`.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include <nlohmann/json.hpp>

#include "tests/support/cli_runner.h"

#include "core/dataset_files.h"
#include "core/tasks/lists_task.h"

namespace fs = std::filesystem;

namespace {

using ganpo::test::run_cli;
const bool kPrivateWorkspace = ganpo::test::use_private_workspace();

fs::path fresh_dir(const std::string& name) {
  auto dir = fs::temp_directory_path() / ("ganpo-e2e-" + name + "-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

nlohmann::json read_json(const fs::path& p) {
  std::ifstream in(p);
  return nlohmann::json::parse(in);
}

std::vector<nlohmann::json> read_jsonl(const fs::path& p) {
  std::vector<nlohmann::json> rows;
  std::ifstream in(p);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

const fs::path& demo_dir() {
  static const fs::path dir = fresh_dir("demo");
  return dir;
}

TEST(CliEndToEnd, QuickDemoImprovesOverReference) {
  auto r = run_cli("demo --quick --output-dir " + demo_dir().string() + " --db " +
                   (demo_dir() / "workspace.sqlite").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("GANPO demo results"), std::string::npos) << r.output;

  auto report = read_json(demo_dir() / "demo_results.json");
  // The reference's implicit reward is 0 for every response, so its accuracy is 0 and any
  // learned preference shows as accuracy above chance.
  const double accuracy = report["preference_eval"]["eval_rewards/accuracies"].get<double>();
  EXPECT_GT(accuracy, 0.6) << r.output;
  EXPECT_GT(report["preference_eval"]["eval_rewards/margins"].get<double>(), 0.0);
  // Judged against its SFT reference over the sampling temperatures, the policy wins more often
  // than it loses (one temperature of a quick demo alone is within sampling noise).
  double win_rates = 0;
  int temperatures = 0;
  for (const auto& row : report["judge"])
    if (row["bucket"] == "all") win_rates += row["win_rate"].get<double>(), ++temperatures;
  ASSERT_EQ(temperatures, 3) << r.output;
  EXPECT_GT(win_rates / temperatures, 0.5) << r.output;

  // Both stages are runs of the (private) workspace, the preference run a child of the SFT run.
  auto listed = run_cli("runs --db " + (demo_dir() / "workspace.sqlite").string() + " list --json");
  ASSERT_EQ(listed.exit_code, 0) << listed.output;
  const auto runs = nlohmann::json::parse(listed.output);
  ASSERT_EQ(runs.size(), 2u) << listed.output;
  EXPECT_EQ(runs[0]["name"], "demo-sft");
  EXPECT_EQ(runs[1]["name"], "demo-ganpo");
  EXPECT_EQ(runs[0]["status"], "completed");
  EXPECT_EQ(runs[1]["status"], "completed");
  EXPECT_EQ(runs[1]["parent_run_id"], runs[0]["id"]);

  // The files contract of `ganpo train`.
  const auto run = demo_dir() / "ganpo";
  for (const char* f : {"config.toml", "metrics.jsonl", "samples.jsonl", "eval.jsonl", "final/model.safetensors",
                        "final/config.json", "final/meta.json"})
    EXPECT_TRUE(fs::exists(run / f)) << f;
  auto metrics = read_jsonl(run / "metrics.jsonl");
  ASSERT_FALSE(metrics.empty());
  for (const char* key : {"step", "loss", "opo_loss", "adv/loss", "critic/acc_chosen", "rewards/margins",
                          "tokens_per_s", "grad_norm", "learning_rate"})
    EXPECT_TRUE(metrics.back().contains(key)) << key;
}

TEST(CliEndToEnd, TrlPreferenceFileTrainEvalGenerate) {
  const auto dir = fresh_dir("file");
  // A briefly trained SFT model is the starting point and reference; quality is not the point.
  std::ofstream(dir / "sft.toml") << "name = \"file-sft\"\nstage = \"sft\"\noutput_dir = \""
                                  << (dir / "sft").string() << "\"\n[data]\nbuiltin_train_size = 400\n"
                                  << "[train]\nlearning_rate = 2e-3\nmax_steps = 10\nper_device_train_batch_size = 8\n"
                                  << "[sampling]\nnum_prompts = 1\nmax_new_tokens = 8\n";
  auto sft = run_cli("train --config " + (dir / "sft.toml").string());
  ASSERT_EQ(sft.exit_code, 0) << sft.output;
  const fs::path sft_final = dir / "sft" / "final";
  auto pairs = ganpo::lists::make_preference_pairs(400, 0.0, 99);
  ganpo::write_preference_jsonl(pairs, (dir / "pairs.jsonl").string());
  {
    std::ofstream bad(dir / "pairs.jsonl", std::ios::app);
    bad << "{\"prompt\": \"broken line\"}\n";  // no chosen/rejected: skipped with a warning
  }
  std::ofstream(dir / "run.toml") << "name = \"file-run\"\nstage = \"preference\"\noutput_dir = \""
                                  << (dir / "out").string() << "\"\n[model]\ncheckpoint = \"" << sft_final.string()
                                  << "\"\n[data]\nbuiltin = \"\"\ntrain = \"" << (dir / "pairs.jsonl").string()
                                  << "\"\non_bad_line = \"skip\"\neval_fraction = 0.1\n"
                                  << "[ganpo]\ncritic_hidden = 32\ncritic_layers = 1\ncritic_heads = 2\n"
                                  << "critic_max_len = 256\n[train]\nlearning_rate = 1e-4\nmax_steps = 12\n"
                                  << "per_device_train_batch_size = 8\nlogging_steps = 4\n[sampling]\nnum_prompts = 2\n"
                                  << "max_new_tokens = 32\n";
  auto train = run_cli("train --config " + (dir / "run.toml").string());
  ASSERT_EQ(train.exit_code, 0) << train.output;
  EXPECT_NE(train.output.find("skipped 1 bad line"), std::string::npos) << train.output;
  EXPECT_TRUE(fs::exists(dir / "out" / "final" / "model.safetensors"));

  auto eval = run_cli("eval --checkpoint " + (dir / "out" / "final").string() + " --reference " +
                      sft_final.string() + " --pairs " + (dir / "pairs.jsonl").string() +
                      " --builtin lists --num-prompts 12 --temperatures 0.7,1.0 --json --batch-size 7");
  ASSERT_EQ(eval.exit_code, 0) << eval.output;
  auto report = nlohmann::json::parse(eval.output.substr(eval.output.find('{')));
  EXPECT_EQ(report["preference"]["eval_pairs"].get<double>(), 400.0);
  EXPECT_EQ(report["judge"]["rows"].size(), 8u);  // 2 temperatures x (all, short, medium, long)
  EXPECT_EQ(report["judge"]["samples"][1]["policy_score"].size(), 12u);  // every prompt's score
  EXPECT_EQ(report["judge"]["top_p"].get<double>(), 1.0) << "the filters the completions were drawn with";
  EXPECT_EQ(report["judge"]["top_k"].get<int64_t>(), 0);

  // Another task's prompts with a judge command of the user's, and one that prints garbage: the
  // report says why, the exit status is 1, and the held-out numbers are still printed.
  const std::string ckpt = " --checkpoint " + (dir / "out" / "final").string() + " --reference " + sft_final.string();
  // The user's judge: a script that gives every completion the score it is called with.
  const fs::path judge = dir / "constant judge.sh";
  std::ofstream(judge) << "#!/bin/sh\nwhile read -r l; do echo \"{\\\"score\\\": $1}\"; done\n";
  fs::permissions(judge, fs::perms::owner_all);
  const std::string judge_arg = " --judge-command \"'" + judge.string() + "' ";
  auto judged = run_cli("eval" + ckpt + " --builtin arithmetic --num-prompts 6 --temperatures 1.0 --json" +
                        judge_arg + "0.25\"");
  ASSERT_EQ(judged.exit_code, 0) << judged.output;
  auto judged_report = nlohmann::json::parse(judged.output.substr(judged.output.find('{')));
  EXPECT_EQ(judged_report["judge"]["task"], "arithmetic");
  EXPECT_EQ(judged_report["judge"]["rows"][0]["win_rate"], 0.5) << "every completion scored 0.25: all ties";
  // The run wrote the held-out prompts a judge of its data file gets: its checkpoints are judged
  // on them later, with the user's judge command.
  ASSERT_TRUE(fs::exists(dir / "out" / "judge_prompts.jsonl"));
  auto on_file = run_cli("eval" + ckpt + " --prompts " + (dir / "out" / "judge_prompts.jsonl").string() +
                         " --num-prompts 4 --temperatures 1.0 --json" + judge_arg + "0.5\"");
  ASSERT_EQ(on_file.exit_code, 0) << on_file.output;
  auto file_report = nlohmann::json::parse(on_file.output.substr(on_file.output.find('{')));
  EXPECT_EQ(file_report["judge"]["task"], "data file");
  EXPECT_EQ(file_report["judge"]["samples"][0]["policy_score"].size(), 4u);
  EXPECT_NE(run_cli("eval" + ckpt + " --prompts " + (dir / "out" / "judge_prompts.jsonl").string()).output.find(
                "give --judge-command"),
            std::string::npos);
  auto garbage = run_cli("eval" + ckpt + " --pairs " + (dir / "pairs.jsonl").string() +
                         " --builtin arithmetic --num-prompts 3 --temperatures 1.0 --json --judge-command 'echo oops'");
  EXPECT_EQ(garbage.exit_code, 1) << garbage.output;
  EXPECT_NE(garbage.output.find("the judge failed"), std::string::npos) << garbage.output;
  // A judge slower than --judge-timeout (the run's eval.judge_timeout_s, which Evaluate passes) is
  // stopped, and the report says so.
  auto slow = run_cli("eval" + ckpt + " --builtin arithmetic --num-prompts 2 --temperatures 1.0 --json "
                      "--judge-command 'sleep 60' --judge-timeout 0.5");
  EXPECT_EQ(slow.exit_code, 1) << slow.output;
  EXPECT_NE(slow.output.find("did not finish within 0.5 s"), std::string::npos) << slow.output;
  // stderr's message (which quotes the protocol's {"score": ...}) comes before the report.
  auto garbage_report = nlohmann::json::parse(garbage.output.substr(garbage.output.find("{\n")));
  EXPECT_TRUE(garbage_report["judge_error"].get<std::string>().find("oops") != std::string::npos) << garbage.output;
  EXPECT_EQ(garbage_report["preference"]["eval_pairs"].get<double>(), 400.0);
  // The pairs' numbers do not depend on --batch-size (7 above, the default 32 here).
  for (const auto& [k, v] : report["preference"].items())
    EXPECT_NEAR(garbage_report["preference"][k].get<double>(), v.get<double>(), 1e-4) << k;

  std::ofstream(dir / "prompts.jsonl") << "{\"prompt\": \"" << pairs[0].prompt << "\"}\n{\"prompt\": \""
                                       << pairs[1].prompt << "\"}\n";
  auto gen = run_cli("generate --checkpoint " + (dir / "out" / "final").string() + " --prompts " +
                     (dir / "prompts.jsonl").string() + " --out " + (dir / "completions.jsonl").string() +
                     " --temperature 0.7 --seed 3");
  ASSERT_EQ(gen.exit_code, 0) << gen.output;
  auto rows = read_jsonl(dir / "completions.jsonl");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0]["prompt"], pairs[0].prompt);
  EXPECT_TRUE(rows[0]["completion"].is_string());
  // Memory that runs out while sampling (GANPO_OOM_AT: the second batch's allocation refused): the
  // completion written before stays, and the message says so and what to lower.
  const fs::path partial = dir / "partial.jsonl";
  auto gen_oom = run_cli("generate --checkpoint " + (dir / "out" / "final").string() + " --prompts " +
                             (dir / "prompts.jsonl").string() + " --out " + partial.string() +
                             " --temperature 0.7 --seed 3 --batch-size 1 --max-new-tokens 8",
                         "GANPO_OOM_AT=generate.batch:2");
  EXPECT_EQ(gen_oom.exit_code, 1) << gen_oom.output;
  EXPECT_NE(gen_oom.output.find("ganpo generate: this machine's RAM ran out of memory while sampling (1 completion is in " +
                                partial.string() + "). To need less memory, lower --batch-size (now 1) or "
                                "--max-new-tokens (now 8). C++: std::bad_alloc"),
            std::string::npos)
      << gen_oom.output;
  const auto kept = read_jsonl(partial);
  ASSERT_EQ(kept.size(), 1u);
  EXPECT_EQ(kept[0]["prompt"], pairs[0].prompt);
  // And while scoring the held-out pairs (their second batch).
  auto eval_oom = run_cli("eval" + ckpt + " --pairs " + (dir / "pairs.jsonl").string() + " --batch-size 7",
                          "GANPO_OOM_AT=evaluation.batch:2");
  EXPECT_EQ(eval_oom.exit_code, 1) << eval_oom.output;
  EXPECT_NE(eval_oom.output.find("ganpo eval: this machine's RAM ran out of memory while evaluating. To need less "
                                 "memory, lower --batch-size (now 7) for the pairs, --num-prompts"),
            std::string::npos)
      << eval_oom.output;
  // --precision: on a CPU device (these tests' machines have no GPU) "auto" is float32, the same
  // completions as fp32; bf16 asks for a GPU.
  const std::string generate_args = "generate --checkpoint " + (dir / "out" / "final").string() + " --prompts " +
                                    (dir / "prompts.jsonl").string() + " --temperature 0.7 --seed 3 --out ";
  auto fp32 = run_cli(generate_args + (dir / "fp32.jsonl").string() + " --precision fp32");
  ASSERT_EQ(fp32.exit_code, 0) << fp32.output;
  EXPECT_EQ(read_jsonl(dir / "fp32.jsonl"), rows);
  auto bf16 = run_cli(generate_args + (dir / "bf16.jsonl").string() + " --precision bf16 --device cpu");
  EXPECT_EQ(bf16.exit_code, 1) << bf16.output;
  EXPECT_NE(bf16.output.find("precision bf16 needs a CUDA device"), std::string::npos) << bf16.output;
  EXPECT_FALSE(fs::exists(dir / "bf16.jsonl"));
  EXPECT_EQ(run_cli(generate_args + (dir / "fp16.jsonl").string() + " --precision fp16").exit_code, 2);
  // Sampling settings out of the run config's ranges are refused before any work (status 2); a
  // negative --seed had been read as 18446744073709551615.
  for (const char* bad : {" --top-p 0", " --top-p 1.5", " --top-p abc", " --top-p 1e999", " --top-k -1",
                          " --temperature -0.5", " --temperature nan", " --temperature inf", " --max-new-tokens 0",
                          " --device bogus", " --device cuda:x", " --seed -1"}) {
    auto refused = run_cli(generate_args + (dir / "bad.jsonl").string() + bad);
    EXPECT_EQ(refused.exit_code, 2) << bad << ": " << refused.output;
    EXPECT_FALSE(fs::exists(dir / "bad.jsonl")) << bad;
    EXPECT_EQ(refused.output.find("179769313486231"), std::string::npos) << "no 300-digit bound: " << refused.output;
  }
  // The prompts file as --out, a folder as --prompts, a file with no prompts: refused, the file kept.
  const std::string prompts_text = [&] {
    std::ifstream in(dir / "prompts.jsonl");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }();
  auto onto_prompts = run_cli("generate --checkpoint " + (dir / "out" / "final").string() + " --prompts " +
                              (dir / "prompts.jsonl").string() + " --out " + (dir / "prompts.jsonl").string());
  EXPECT_EQ(onto_prompts.exit_code, 2) << onto_prompts.output;
  EXPECT_NE(onto_prompts.output.find("is the prompts file"), std::string::npos) << onto_prompts.output;
  EXPECT_EQ([&] {
    std::ifstream in(dir / "prompts.jsonl");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }(), prompts_text);
  std::ofstream(dir / "none.jsonl") << "\n";
  for (const fs::path& p : {dir, dir / "none.jsonl"}) {
    auto o = run_cli("generate --checkpoint " + (dir / "out" / "final").string() + " --prompts " + p.string() +
                     " --out " + (dir / "never.jsonl").string());
    EXPECT_EQ(o.exit_code, 2) << p << ": " << o.output;
    EXPECT_FALSE(fs::exists(dir / "never.jsonl")) << p;
  }
  // eval's settings too, each named in words (a loss type was an internal assertion, NaN rewards,
  // a win rate on empty answers, a LibTorch trace).
  for (const char* bad : {" --loss-type bogus", " --beta inf", " --beta -1", " --temperatures nan",
                          " --temperatures 0.7,-1", " --max-new-tokens 0", " --device bogus", " --seed -1"}) {
    auto refused = run_cli("eval" + ckpt + " --builtin lists --num-prompts 2" + bad);
    EXPECT_EQ(refused.exit_code, 2) << bad << ": " << refused.output;
    EXPECT_EQ(refused.output.find("internal error"), std::string::npos) << bad << ": " << refused.output;
  }
  auto bf16_eval = run_cli("eval" + ckpt + " --builtin lists --num-prompts 2 --precision bf16 --device cpu");
  EXPECT_EQ(bf16_eval.exit_code, 1) << bf16_eval.output;
  EXPECT_NE(bf16_eval.output.find("precision bf16 needs a CUDA device"), std::string::npos) << bf16_eval.output;

  // A model no machine holds (a 1 TiB embedding, which the CPU allocator refuses at once, unless the
  // kernel overcommits everything or AddressSanitizer aborts first): generate and eval say where
  // memory ran out and what to do, not LibTorch's text alone.
  int overcommit = -1;
  std::ifstream("/proc/sys/vm/overcommit_memory") >> overcommit;
#if !defined(__SANITIZE_ADDRESS__)
  if (overcommit != 1) {
    const fs::path huge = dir / "huge";
    fs::copy(dir / "out" / "final", huge);
    for (const char* ours : {"complete.json", "meta.json", "run_config.toml"}) fs::remove(huge / ours);  // a plain HF folder
    auto config = read_json(huge / "config.json");
    config["vocab_size"] = 1 << 24;
    config["hidden_size"] = 1 << 14;
    std::ofstream(huge / "config.json") << config.dump();
    auto no_room = run_cli("generate --checkpoint " + huge.string() + " --prompts " + (dir / "prompts.jsonl").string() +
                           " --out " + (dir / "huge.jsonl").string() + " --device cpu");
    EXPECT_EQ(no_room.exit_code, 1) << no_room.output;
    EXPECT_NE(no_room.output.find("ganpo generate: this machine's RAM ran out of memory while loading " + huge.string() +
                                  ". To need less memory, use a smaller model. LibTorch: "),
              std::string::npos)
        << no_room.output;
    auto no_room_eval = run_cli("eval --checkpoint " + huge.string() + " --reference " + sft_final.string() +
                                " --builtin lists --num-prompts 2 --device cpu");
    EXPECT_EQ(no_room_eval.exit_code, 1) << no_room_eval.output;
    EXPECT_NE(no_room_eval.output.find("ganpo eval: this machine's RAM ran out of memory while loading " + huge.string()),
              std::string::npos)
        << no_room_eval.output;
  }
#endif
}

// ganpo bench: speed with GANPO off and on, and for each the dialog's memory estimate beside what
// the process's peak resident memory grew by (a tiny model, one measured step).
TEST(CliEndToEnd, BenchPrintsSpeedAndMemoryEstimateBesideMeasuredPeak) {
  const auto dir = fresh_dir("bench");
  std::ofstream(dir / "bench.toml") << "device = \"cpu\"\noutput_dir = \"" << (dir / "out").string()
                                    << "\"\n[model]\npreset = \"tiny\"\n[data]\nbuiltin = \"lists\"\n"
                                       "builtin_train_size = 32\nbuiltin_eval_size = 8\n[train]\nper_device_train_batch_size = 4\n"
                                       "num_threads = 1\n[ganpo]\ncritic_hidden = 16\ncritic_layers = 1\ncritic_heads = 2\n"
                                       "[sampling]\nevery_steps = 0\n[eval]\njudge_at_end = false\n";
  auto r = run_cli("bench --config " + (dir / "bench.toml").string() + " --steps 1 --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto json_start = r.output.find('{');
  ASSERT_NE(json_start, std::string::npos) << r.output;
  const nlohmann::json report = nlohmann::json::parse(r.output.substr(json_start));
  for (const char* variant : {"ganpo_off", "ganpo_on"}) {
    const auto& v = report.at(variant);
    EXPECT_GT(v.at("median_step_time_s").get<double>(), 0.0) << variant;
    // Every measured step (here the one), so a noisy median can be read step by step.
    EXPECT_EQ(v.at("step_times_s"), nlohmann::json::array({v.at("median_step_time_s")})) << variant;
    EXPECT_GT(v.at("memory_estimate_bytes").get<int64_t>(), 0) << variant;
    EXPECT_GT(v.at("peak_rss_growth_bytes").get<int64_t>(), 0) << variant << ": Linux reports the peak";
    EXPECT_GT(v.at("model_tflops").get<double>(), 0.0) << variant;
    EXPECT_EQ(v.at("mfu").get<double>(), -1.0) << variant << ": a CPU's peak is not in the table";
    EXPECT_EQ(v.at("cuda_peak_bytes").get<int64_t>(), -1) << variant << ": not a CUDA run";
    // On the CPU the peak of the run's live tensors. The estimate counts full-length rows (held
    // within 15 % of such a run's peak by memory_estimate_measured_test.cpp); these are shorter.
    const double peak = static_cast<double>(v.at("cpu_tensor_peak_bytes").get<int64_t>());
    EXPECT_GT(peak, 0.0) << variant;
    EXPECT_GT(static_cast<double>(v.at("memory_estimate_bytes").get<int64_t>()), 0.85 * peak) << variant;
  }
  // Both variants train the same batches (the same seed), so the FLOPs differ by the critics'.
  const double on = report["ganpo_on"]["model_tflop_per_step"].get<double>();
  const double off = report["ganpo_off"]["model_tflop_per_step"].get<double>();
  EXPECT_GT(on, off) << "a GANPO step counts the critics' FLOPs too";
  EXPECT_DOUBLE_EQ(report["model_flops_ratio"].get<double>(), on / off);
  EXPECT_GT(report["ganpo_on"]["memory_estimate_bytes"].get<int64_t>(),
            report["ganpo_off"]["memory_estimate_bytes"].get<int64_t>())
      << "the critics are counted";
}

TEST(CliEndToEnd, BadConfigIsRejectedBeforeWork) {
  const auto dir = fresh_dir("badcfg");
  std::ofstream(dir / "bad.toml") << "[objective]\nbeta = -1\n[train]\nlearning_rat = 1e-3\n";
  auto r = run_cli("train --config " + (dir / "bad.toml").string());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("learning_rat"), std::string::npos) << r.output;
  std::ofstream(dir / "bad2.toml") << "[objective]\nbeta = -1\n";
  r = run_cli("train --config " + (dir / "bad2.toml").string());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("objective.beta must be"), std::string::npos) << r.output;
}

// An empty config (0 bytes, only comments, "{}", only empty tables) started the full default run without a word:
// most likely a wrong or truncated file, so it is refused before any work, saying what to add.
TEST(CliEndToEnd, ConfigThatSetsNothingIsRefusedBeforeWork) {
  const auto dir = fresh_dir("emptycfg");
  std::ofstream(dir / "zero.toml") << "";
  std::ofstream(dir / "comments.toml") << "# nothing yet\n\n";
  std::ofstream(dir / "empty.json") << "{}\n";
  std::ofstream(dir / "tables.toml") << "[model]\n[model.lora]\n[train]\n";
  std::ofstream(dir / "tables.json") << "{\"train\": {}, \"model\": {\"lora\": {}}}\n";
  for (const char* name : {"zero.toml", "comments.toml", "empty.json", "tables.toml", "tables.json"}) {
    auto r = run_cli("train --no-db --config " + (dir / name).string());
    EXPECT_EQ(r.exit_code, 2) << name << ": " << r.output;
    EXPECT_NE(r.output.find(std::string(name) + " sets no values (it is empty, or holds only comments or empty tables)"),
              std::string::npos)
        << r.output;
    EXPECT_EQ(r.output.find("step 1/"), std::string::npos) << "nothing trained: " << r.output;
  }
}

}  // namespace

namespace {

TEST(CliEndToEnd, SigtermSavesCheckpointAndResumeFinishes) {
  const auto dir = fresh_dir("sigterm");
  std::ofstream(dir / "run.toml") << "name = \"sigterm\"\nstage = \"sft\"\noutput_dir = \"" << (dir / "out").string()
                                  << "\"\n[data]\nbuiltin_train_size = 2000\n[train]\nlearning_rate = 1e-3\n"
                                  << "max_steps = 100000\nper_device_train_batch_size = 4\nlogging_steps = 1\n"
                                  << "[sampling]\nnum_prompts = 1\nmax_new_tokens = 4\n";
  // timeout sends SIGTERM after 6 s and, with --preserve-status, returns the worker's own code.
  const std::string cmd = "timeout --preserve-status -s TERM 6 " + std::string(GANPO_CLI_PATH) +
                          " train --config " + (dir / "run.toml").string() + " > " + (dir / "log.txt").string() +
                          " 2>&1";
  const int status = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 130);
  fs::path checkpoint;
  for (const auto& entry : fs::directory_iterator(dir / "out"))
    if (entry.path().filename().string().rfind("checkpoint-", 0) == 0) checkpoint = entry.path();
  ASSERT_FALSE(checkpoint.empty()) << "no checkpoint after SIGTERM";
  EXPECT_TRUE(fs::exists(checkpoint / "trainer_state" / "optimizer.pt"));
  const int64_t stopped_at = std::stoll(checkpoint.filename().string().substr(11));
  EXPECT_GT(stopped_at, 0);

  auto r = run_cli("train --config " + (dir / "run.toml").string() + " --set train.max_steps=" +
                   std::to_string(stopped_at + 3) + " --resume " + checkpoint.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(fs::exists(dir / "out" / ("checkpoint-" + std::to_string(stopped_at + 3))));

  // The config trained again is a run of its own in "out-2"; resuming its checkpoint goes on
  // there (not in "out", nor in a new "out-3").
  auto again = run_cli("train --config " + (dir / "run.toml").string() + " --set train.max_steps=2 --set train.save_steps=2");
  ASSERT_EQ(again.exit_code, 0) << again.output;
  ASSERT_TRUE(fs::exists(dir / "out-2" / "checkpoint-2")) << again.output;
  auto resumed = run_cli("train --config " + (dir / "run.toml").string() + " --set train.max_steps=4 --set train.save_steps=2" +
                         " --resume " + (dir / "out-2" / "checkpoint-2").string());
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_TRUE(fs::exists(dir / "out-2" / "checkpoint-4")) << resumed.output;
  EXPECT_FALSE(fs::exists(dir / "out-3"));
  if (stopped_at + 3 != 4) {
    EXPECT_FALSE(fs::exists(dir / "out" / "checkpoint-4"));
  }

  // Not this config's to go on from: a checkpoint of another stage, or one past the last step
  // (each trained nothing and wrote the checkpoint's weights as final/).
  const auto refused = [&](const std::string& set, const std::string& said) {
    auto o = run_cli("train --config " + (dir / "run.toml").string() + " --no-db " + set + " --resume " +
                     checkpoint.string());
    EXPECT_NE(o.exit_code, 0) << set;
    EXPECT_NE(o.output.find(said), std::string::npos) << set << ": " << o.output;
  };
  refused("--set stage=preference --set train.max_steps=" + std::to_string(stopped_at + 3),
          "is a checkpoint of a sft stage and this config trains the preference stage");
  refused("--set train.max_steps=-1 --set train.num_train_epochs=1e18", "optimizer steps; give fewer epochs");
  if (stopped_at > 1)
    refused("--set train.max_steps=" + std::to_string(stopped_at - 1), ", past this run's");
}

}  // namespace
