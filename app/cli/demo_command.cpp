#include <chrono>
#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "app/cli/commands.h"
#include "app/cli/console_progress.h"
#include "core/checkpoint.h"
#include "core/cpu_job.h"
#include "core/error.h"
#include "core/eval/evaluation.h"
#include "core/train/trainer.h"
#include "db/run_service.h"
#include "db/run_store.h"

namespace fs = std::filesystem;

namespace ganpo::cli {
namespace {

// The demo's two stages. Sizes are chosen so the whole demo finishes in minutes on 2 cores.
RunConfig sft_config(const DemoArgs& args) {
  RunConfig c;
  c.name = "demo-sft";
  c.stage = "sft";
  c.output_dir = (fs::path(args.output_dir) / "sft").string();
  c.model.preset = "tiny";
  c.data.builtin = "lists";
  c.data.builtin_train_size = 20000;
  c.data.builtin_eval_size = 200;
  c.train.learning_rate = 3e-3;
  c.train.lr_scheduler_type = "cosine";
  c.train.warmup_ratio = 0.05;
  // Small batches and more updates learn the word lists faster for the same tokens.
  c.train.per_device_train_batch_size = 16;
  c.train.max_steps = args.quick ? 240 : 520;
  c.train.weight_decay = 0.01;
  c.train.logging_steps = 25;
  c.sampling.num_prompts = 6;
  return c;
}

RunConfig preference_config(const DemoArgs& args, const std::string& sft_dir) {
  RunConfig c;
  c.name = "demo-ganpo";
  c.stage = "preference";
  c.output_dir = (fs::path(args.output_dir) / "ganpo").string();
  c.model.checkpoint = sft_dir;
  c.data.builtin = "lists";
  c.data.builtin_train_size = 6000;
  c.data.builtin_eval_size = 300;
  c.objective.loss_type = "sigmoid";
  c.objective.beta = 0.1;
  // TRL's rpo_alpha: an NLL term on the chosen answers keeps the tiny policy's samples fluent
  // while DPO + GANPO move its preferences.
  c.objective.rpo_alpha = 1.0;
  c.ganpo.enabled = true;
  c.ganpo.critic_hidden = 64;
  c.ganpo.critic_layers = 1;
  c.ganpo.critic_heads = 4;
  c.ganpo.critic_max_len = 256;
  // Tiny critics at the paper's ratio (policy lr / 2) barely move in a few hundred steps.
  c.ganpo.critic_lr_ratio = 10.0;
  c.train.learning_rate = 2e-4;
  c.train.lr_scheduler_type = "linear";
  c.train.warmup_ratio = 0.05;
  c.train.per_device_train_batch_size = 16;
  c.train.max_steps = args.quick ? 60 : 160;
  c.train.logging_steps = 10;
  c.train.eval_steps = args.quick ? 0 : 40;
  c.sampling.every_steps = 40;
  c.sampling.num_prompts = 6;
  // The stage ends by judging policy and reference samples (the trainer's final evaluation).
  c.eval.temperatures = "0.7, 1.0, 1.3";
  c.eval.num_prompts = args.quick ? 60 : 120;
  c.eval.max_new_tokens = 96;
  c.eval.seed = 4242;
  return c;
}

// A run row for a stage of the demo, so the workbench shows the demo's runs; 0 with --no-db or
// when the workspace cannot be used (the demo then records to files only and says why).
RunRecordTarget record_target(const DemoArgs& args, RunConfig& config, int64_t parent_run, int64_t parent_step) {
  if (args.no_db) return {};
  const std::string db = workspace_path(args.db);
  try {
    make_paths_absolute(config);
    resolve_data_source(config.data);
    RunStore store = RunStore::open(db);
    CreateRunOptions options;
    if (parent_run > 0) options.parent_run = parent_run, options.parent_step = parent_step;
    const int64_t id = RunService(store).create(config, options);
    std::printf("[demo] %s recorded as run %lld in %s\n", config.name.c_str(), static_cast<long long>(id), db.c_str());
    return {db, id};
  } catch (const Error& e) {
    std::fprintf(stderr, "[demo] not recording to the workspace: %s\n", e.what());
    return {};
  }
}

}  // namespace

int demo_command(const DemoArgs& args) {
  install_stop_signal_handlers();
  const auto t0 = std::chrono::steady_clock::now();
  RunConfig sft = sft_config(args);
  std::printf("GANPO demo: SFT of a tiny model on the built-in lists task, then DPO + GANPO.\n");
  const RunRecordTarget sft_record = record_target(args, sft, 0, 0);
  auto sft_result = run_stage(sft, {}, sft_record);
  if (sft_result.status != "completed") {
    std::fprintf(stderr, "ganpo demo: SFT stage %s: %s\n", sft_result.status.c_str(), sft_result.message.c_str());
    return sft_result.status == "stopped" ? 130 : 1;
  }
  RunConfig pref = preference_config(args, sft_result.final_dir);
  const RunRecordTarget pref_record = record_target(args, pref, sft_record.run_id, sft_result.steps);
  auto pref_result = run_stage(pref, {}, pref_record);
  if (pref_result.status != "completed") {
    std::fprintf(stderr, "ganpo demo: preference stage %s: %s\n", pref_result.status.c_str(), pref_result.message.c_str());
    return pref_result.status == "stopped" ? 130 : 1;
  }

  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  const auto& ev = pref_result.final_eval;
  auto get = [&](const char* k) { auto it = ev.find(k); return it == ev.end() ? 0.0 : it->second; };
  std::printf("\n== GANPO demo results (%s) ==\n", format_duration(seconds).c_str());
  std::printf("held-out preference accuracy  %.3f  (%d pairs)\n", get("eval_rewards/accuracies"),
              static_cast<int>(get("eval_pairs")));
  std::printf("held-out reward margin        %.3f\n", get("eval_rewards/margins"));
  if (pref_result.final_judge)
    std::printf("judge: GANPO policy vs its SFT reference (win = higher judge score, tie = 0.5)\n%s",
                format_judge_table(*pref_result.final_judge).c_str());
  std::printf("runs: %s\n", args.output_dir.c_str());

  nlohmann::json report = {{"seconds", seconds}, {"preference_eval", ev}};
  if (pref_result.final_judge) {
    EvalReport judged;
    judged.judge = pref_result.final_judge;
    report["judge"] = to_json(judged)["judge"]["rows"];
  }
  write_json_file((fs::path(args.output_dir) / "demo_results.json").string(), report);
  if (args.json) std::printf("%s\n", report.dump(2).c_str());
  return 0;
}

}  // namespace ganpo::cli
