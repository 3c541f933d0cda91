// `ganpo`: the headless command and training worker. Parses the command line and hands off
// to one subcommand (app/cli/*_command.cpp). No exception escapes main.
#include <CLI/CLI.hpp>
#include <signal.h>
#include <sys/stat.h>

#include <charconv>
#include <cmath>
#include <cstdio>
#include <exception>

#include "app/cli/commands.h"
#include "core/build_info.h"
#include "core/config.h"

namespace {

const char* const kPrecisionHelp =
    "auto: bf16 on a CUDA device for a folder stored in bf16, float32 otherwise; fp32; bf16 (CUDA only)";

// A number in [0, inf): NaN, infinities and negatives are refused in words (CLI11's own range
// check lets NaN through and prints its bound as 300 digits).
CLI::Validator finite_at_least(double low, const std::string& words) {
  return CLI::Validator(
      [low, words](std::string& v) {
        try {
          size_t used = 0;
          const double x = std::stod(v, &used);
          if (used != v.size() || !std::isfinite(x) || x < low) return "must be " + words + ", got " + v;
          return std::string();
        } catch (const std::exception&) {
          return "must be " + words + ", got " + v;
        }
      },
      words, "");
}

// --db "": CLI11 passes it on, and an empty path meant the default workspace without a word.
const CLI::Validator kWorkspaceFile(
    [](std::string& v) {
      return v.empty() ? std::string("must name a workspace file, got \"\"; leave --db out for the default workspace")
                       : std::string();
    },
    "FILE", "");

const CLI::Validator kDevice(
    [](std::string& v) {
      return ganpo::is_valid_device(v) ? std::string() : "must be auto, cpu, cuda or cuda:N (N = GPU index), got " + v;
    },
    "auto, cpu, cuda or cuda:N", "");

// "1,2,3" appended to ids; "" when every item is a whole number >= 0, else what is wrong. Split
// here, not by CLI11's delimiter, which drops empty items ("1,,2" was read as 1,2 without a word).
std::string read_ids(const std::string& text, std::vector<int64_t>& ids) {
  if (text.empty()) return "needs at least one id, e.g. --ids 1,2,3";
  for (size_t at = 0;;) {
    const size_t comma = text.find(',', at);
    const std::string item = text.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
    if (item.empty())
      return "has an empty item in \"" + text + "\" (two commas together, or one at an end); give every id";
    int64_t id = 0;
    const auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), id);
    if (ec != std::errc() || end != item.data() + item.size() || id < 0)
      return "every id must be a whole number >= 0, got \"" + item + "\"";
    ids.push_back(id);
    if (comma == std::string::npos) return "";
    at = comma + 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
  using namespace ganpo::cli;
  // Workspaces, run folders, checkpoints and logs hold a person's data: private to the user.
  ::umask(077);
  // A file-size limit (ulimit -f) makes a write fail with EFBIG, reported like a full disk,
  // instead of killing the worker without a word.
  ::signal(SIGXFSZ, SIG_IGN);
  CLI::App app{"ganpo: preference optimization (DPO / SimPO / IPO / hinge, with or without GANPO)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", [] { return ganpo::version_text("ganpo"); }, "Version, git commit, LibTorch and CUDA");

  TrainArgs train;
  auto* t = app.add_subcommand("train", "Run one stage (sft or preference) from a config file");
  t->add_option("--config", train.config_path, "Run config (.toml or .json)");
  t->add_option("--set", train.overrides, "Override a key: section.key=value (repeatable)");
  t->add_option("--resume", train.resume, "Continue from a checkpoint-<step> folder");
  auto* t_db = t->add_option("--db", train.db, "Workspace database (default $XDG_DATA_HOME/ganpo-workbench/workspace.sqlite)")
                   ->check(kWorkspaceFile);
  auto* t_run = t->add_option("--run", train.run_id, "Worker mode: train this run of the database with its stored config");
  // (--db and --run were ignored beside it: a run recorded nowhere, or a stored run trained anyway)
  t->add_flag("--no-db", train.no_db, "Record to files only, not to the workspace database")->excludes(t_db)->excludes(t_run);
  train.argv.assign(argv + 1, argv + argc);

  LaunchArgs launch;
  auto* la = app.add_subcommand(
      "launch", "Start a data-parallel run's processes on this host, torchrun-style: ganpo launch "
                "--nproc-per-node N [--nnodes M --node-rank R --master-addr A --master-port P] train ...");
  la->add_option("--nproc-per-node", launch.nproc_per_node, "Processes on this host (one per GPU on CUDA)")
      ->capture_default_str();
  la->add_option("--nnodes", launch.nnodes, "Hosts taking part")->capture_default_str();
  la->add_option("--node-rank", launch.node_rank, "This host's index, 0 to --nnodes - 1")->capture_default_str();
  la->add_option("--master-addr", launch.master_addr, "Address of node 0, where rank 0 serves the rendezvous")
      ->capture_default_str();
  la->add_option("--master-port", launch.master_port, "Rendezvous port (0 = a free one; several hosts need it set)")
      ->capture_default_str();
  la->prefix_command();  // the rest is the command every process runs

  GenerateArgs gen;
  auto* g = app.add_subcommand("generate", "Sample completions for {\"prompt\": ...} rows");
  g->add_option("--checkpoint", gen.checkpoint, "Model folder")->required();
  g->add_option("--prompts", gen.prompts, "JSONL file of {\"prompt\": ...}")->required();
  g->add_option("--out", gen.out, "Output JSONL")->required();
  g->add_option("--temperature", gen.temperature, "0 = greedy")->check(finite_at_least(0, "a number >= 0"))->capture_default_str();
  // (0, 1], as the run config's sampling.top_p
  const CLI::Validator above_zero(  // (CLI11 runs both sides of &: not-a-number is Range's to say)
      [](std::string& v) {
        try {
          return std::stod(v) > 0 ? std::string() : std::string("must be above 0");
        } catch (const std::exception&) {
          return std::string("must be a number above 0");
        }
      },
      "", "above 0");
  g->add_option("--top-p", gen.top_p, "Nucleus sampling: the smallest set of tokens whose probability reaches it (1 = off)")
      ->check(CLI::Range(0.0, 1.0) & above_zero)->capture_default_str();
  g->add_option("--top-k", gen.top_k, "Only the k most likely tokens (0 = off)")->check(finite_at_least(0, "a whole number >= 0 (0 = off)"))->capture_default_str();
  g->add_option("--max-new-tokens", gen.max_new_tokens)->check(finite_at_least(1, "a whole number >= 1"))->capture_default_str();
  // (an unsigned option: CLI11 read -1 as 18446744073709551615 without a word)
  g->add_option("--seed", gen.seed)->check(finite_at_least(0, "a whole number >= 0, as the run config's seed"))->capture_default_str();
  g->add_option("--batch-size", gen.batch_size, "Prompts sampled at once")->check(finite_at_least(1, "a whole number >= 1"))->capture_default_str();
  g->add_option("--device", gen.device)->check(kDevice)->capture_default_str();
  g->add_option("--precision", gen.precision, kPrecisionHelp)->check(CLI::IsMember({"auto", "fp32", "bf16"}))->capture_default_str();

  EvalArgs ev;
  auto* e = app.add_subcommand("eval", "Preference accuracy and margins; judge win rates on a built-in task's prompts");
  e->add_option("--checkpoint", ev.checkpoint, "Policy model folder")->required();
  e->add_option("--reference", ev.reference, "Reference model folder")->required();
  e->add_option("--pairs", ev.pairs, "Preference pairs (TRL JSONL/JSON)");
  e->add_option("--builtin", ev.builtin, "Built-in task whose prompts the judge evaluation samples (lists, arithmetic, mixed)");
  e->add_option("--prompts", ev.prompts,
                "Prompts for the judge evaluation instead of a built-in task's: JSON Lines of {\"prompt\", \"judge_prompt\", "
                "\"bucket\"} (a data-file run writes its own as judge_prompts.jsonl); needs --judge-command");
  e->add_option("--judge-command", ev.judge_command,
                "Command scoring completions (JSON Lines {prompt, completion} in, {score} out) instead of the task's judge");
  e->add_option("--judge-timeout", ev.judge_timeout_s, "Seconds the judge command may take for one temperature's completions")
      ->check(finite_at_least(1e-3, "a number of seconds > 0"))
      ->capture_default_str();
  e->add_option("--chat-template", ev.chat_template,
                "Conversational --pairs: template family or variant (default: the policy's tokenizer_config.json)");
  e->add_option("--temperatures", ev.temperatures, "Sampling temperatures")
      ->delimiter(',')
      ->check(finite_at_least(0, "a number >= 0 (0 = greedy)"))
      ->capture_default_str();
  e->add_option("--num-prompts", ev.num_prompts)->check(finite_at_least(1, "a whole number >= 1"))->capture_default_str();
  e->add_option("--max-new-tokens", ev.max_new_tokens)->check(finite_at_least(1, "a whole number >= 1"))->capture_default_str();
  e->add_option("--batch-size", ev.batch_size, "Pairs per batch of the preference evaluation")
      ->check(finite_at_least(1, "a whole number >= 1"))
      ->capture_default_str();
  e->add_option("--loss-type", ev.loss_type)->check(CLI::IsMember({"sigmoid", "simpo", "ipo", "hinge"}))->capture_default_str();
  e->add_option("--beta", ev.beta, "0 = the loss's default")->check(finite_at_least(0, "a number >= 0 (0 = the loss's default)"));
  e->add_option("--simpo-gamma", ev.simpo_gamma)->capture_default_str();
  e->add_option("--seed", ev.seed)->check(finite_at_least(0, "a whole number >= 0, as the run config's eval.seed"))->capture_default_str();
  e->add_option("--device", ev.device)->check(kDevice)->capture_default_str();
  e->add_option("--precision", ev.precision, kPrecisionHelp)->check(CLI::IsMember({"auto", "fp32", "bf16"}))->capture_default_str();
  e->add_flag("--json", ev.json, "Print JSON");

  DemoArgs demo;
  auto* d = app.add_subcommand("demo", "SFT a tiny model on the built-in task, then DPO+GANPO, then evaluate");
  d->add_option("--output-dir", demo.output_dir)->capture_default_str();
  d->add_flag("--quick", demo.quick, "Reduced demo (a few minutes; used by tests)");
  d->add_flag("--json", demo.json, "Also print the results as JSON");
  auto* d_db = d->add_option("--db", demo.db, "Workspace database (default $XDG_DATA_HOME/ganpo-workbench/workspace.sqlite)")
                   ->check(kWorkspaceFile);
  d->add_flag("--no-db", demo.no_db, "Record to files only, not to the workspace database")->excludes(d_db);

  BenchArgs bench;
  auto* b = app.add_subcommand("bench", "Median optimizer-step time and tokens/s with GANPO on and off");
  b->add_option("--config", bench.config_path, "Run config")->required();
  b->add_option("--set", bench.overrides, "Override a key (repeatable)");
  b->add_option("--steps", bench.steps, "Measured optimizer steps per variant (after 2 warm-up steps)")
      ->check(finite_at_least(1, "a whole number >= 1"))->capture_default_str();
  b->add_flag("--json", bench.json, "Print JSON");

  StudyPlanArgs study_plan;
  auto* st = app.add_subcommand("study", "Studies: a base config x a grid of config values x seeds, with shared stages");
  st->require_subcommand(1);
  auto* stp = st->add_subcommand("plan", "List the runs a study file stands for and check every one, starting nothing");
  stp->add_option("file", study_plan.file, "Study file (.toml)")->required();
  stp->add_option("--out", study_plan.out, "Folder the runs would write to (default studies/<name> beside the workspace, as create)");
  stp->add_option("--db", study_plan.db,
                  "Workspace whose finished runs set the speed of the duration estimate (default: the default "
                  "workspace, when it exists)")
      ->check(kWorkspaceFile);
  stp->add_flag("--json", study_plan.json, "Print JSON");
  StudyArgs study;
  st->add_option("--db", study.db, "Workspace database (default $XDG_DATA_HOME/ganpo-workbench/workspace.sqlite)")
      ->check(kWorkspaceFile);
  auto* stc = st->add_subcommand("create", "Queue a study's runs in the workspace (checked first, as plan does)");
  stc->add_option("file", study.file, "Study file (.toml)")->required();
  stc->add_option("--out", study.out, "Folder the runs write to (default studies/<name> beside the workspace)");
  auto* str = st->add_subcommand("run", "Start the study's queued runs as earlier ones finish, until none is left");
  str->add_option("id", study.study_id, "Study id")->required();
  str->add_option("--jobs", study.jobs,
                  "Runs at once; 0 (default) = one per GPU, each worker given its own, or one on a CPU, using every core");
  std::vector<CLI::App*> study_actions{stc, str};
  for (const char* name : {"status", "pause", "resume", "cancel"}) {
    auto* a = st->add_subcommand(name, std::string(name) == "status"    ? "Runs of the study by state"
                                       : std::string(name) == "pause"   ? "Start no further runs (running ones go on)"
                                       : std::string(name) == "resume"  ? "Start runs again"
                                                                        : "Stop the running runs and start no more");
    a->add_option("id", study.study_id, "Study id")->required();
    study_actions.push_back(a);
  }
  auto* strep = st->add_subcommand("report", "Per arm: held-out metrics over seeds with 95% intervals; GANPO on minus off, paired by seed");
  strep->add_option("id", study.study_id, "Study id")->required();
  strep->add_flag("--json", study.json, "Print JSON");
  strep->add_option("--html", study.html, "Also write a self-contained HTML report (plots as SVG) to this file");
  strep->add_option("--csv", study.csv, "Also write every number as CSV to this file");
  study_actions.push_back(strep);
  for (auto* a : study_actions) a->fallthrough();  // --db after the subcommand, as people type it

  InspectArgs inspect;
  auto* in = app.add_subcommand("inspect", "What a model folder holds: architecture, size, tokenizer, memory to train it");
  in->add_option("--model", inspect.model, "Hugging Face model folder or checkpoint")->required();
  in->add_flag("--json", inspect.json, "Print JSON");

  LogitsArgs logits;
  auto* lg = app.add_subcommand("logits", "Logits at every position for given token ids (parity checks)");
  lg->add_option("--model", logits.model, "Hugging Face model folder or checkpoint")->required();
  std::vector<std::string> ids_text;  // read into logits.ids by read_ids
  lg->add_option("--ids", ids_text, "Token ids, comma-separated")
      ->check(CLI::Validator(
          [](std::string& v) {
            std::vector<int64_t> ids;
            return read_ids(v, ids);
          },
          "ID,ID,...", ""))
      ->required();
  lg->add_flag("--json", logits.json, "Print every logit as JSON");

  TokenizeArgs tokenize;
  auto* tk = app.add_subcommand("tokenize", "JSON Lines on stdin: {\"text\"} -> {\"ids\"} (or --decode: {\"ids\"} -> {\"text\"})");
  tk->add_option("--tokenizer", tokenize.tokenizer, "Folder with tokenizer.json / tokenizer.model / our tokenizer")->required();
  tk->add_flag("--no-special", tokenize.no_special,
               "Without special tokens: encode adds none (BOS, ...), decode drops them (as HF add_special_tokens=False / skip_special_tokens=True)");
  tk->add_flag("--decode", tokenize.decode, "Ids to text");

  RunsArgs runs;
  auto* r = app.add_subcommand("runs", "List, inspect, export, delete, tag, control and resume runs of a workspace");
  r->add_option("--db", runs.db, "Workspace database (default $XDG_DATA_HOME/ganpo-workbench/workspace.sqlite)")
      ->check(kWorkspaceFile);
  r->require_subcommand(1);
  auto action = [&](const char* name, const char* help) {
    auto* sub = r->add_subcommand(name, help);
    sub->callback([&runs, name] { runs.action = name; });
    sub->fallthrough();  // `ganpo runs list --db F` as well as `ganpo runs --db F list`
    return sub;
  };
  action("list", "One line per run")->add_flag("--json", runs.json, "Print JSON");
  auto* show = action("show", "Everything about one run");
  show->add_option("id", runs.run_id)->required();
  show->add_flag("--json", runs.json, "Print JSON");
  auto* exp = action("export", "Write a run's metrics (or samples, evals, events) as CSV or JSON Lines");
  exp->add_option("id", runs.run_id)->required();
  // (Checked here, so a wrong name is bad usage, exit 2, as every other option's.)
  exp->add_option("--format", runs.format, "csv | jsonl")->check(CLI::IsMember({"csv", "jsonl"}))->capture_default_str();
  exp->add_option("--table", runs.table, "metrics | samples | evals | events")
      ->check(CLI::IsMember({"metrics", "samples", "evals", "events"}))
      ->capture_default_str();
  exp->add_option("--out", runs.out, "Output file (default: standard output)");
  auto* del = action("delete", "Delete a run's records (and with --files its output folder)");
  del->add_option("id", runs.run_id)->required();
  del->add_flag("--yes", runs.yes, "Do not ask");
  del->add_flag("--files", runs.files, "Also remove the run's output folder");
  auto* tag = action("tag", "Add (or with --remove, remove) a tag");
  tag->add_option("id", runs.run_id)->required();
  tag->add_option("tag", runs.tag)->required();
  tag->add_flag("--remove", runs.remove);
  auto* res = action("resume", "Continue a stopped or crashed run from its last checkpoint, in the same run");
  res->add_option("id", runs.run_id)->required();
  auto* ctl = action("control", "Send pause | resume | stop | sample | checkpoint to a running worker");
  ctl->add_option("id", runs.run_id)->required();
  ctl->add_option("command", runs.command)->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& err) {
    return app.exit(err) == 0 ? 0 : 2;
  }
  try {
    if (*t) return train_command(train);
    if (*la) {
      launch.command = la->remaining();
      return launch_command(launch);
    }
    if (*g) return generate_command(gen);
    if (*e) return eval_command(ev);
    if (*d) return demo_command(demo);
    if (*b) return bench_command(bench);
    if (*r) return runs_command(runs);
    if (*in) return inspect_command(inspect);
    if (*stp) return study_plan_command(study_plan);
    for (auto* a : study_actions)
      if (*a) {
        study.action = a->get_name();
        return study_command(study);
      }
    if (*lg) {
      for (const auto& text : ids_text) read_ids(text, logits.ids);  // (checked by --ids' validator)
      return logits_command(logits);
    }
    if (*tk) return tokenize_command(tokenize);
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "ganpo: %s\n", ex.what());
    return 1;
  }
  return 2;
}
