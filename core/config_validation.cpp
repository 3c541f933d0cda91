// Validation of a run configuration: every problem found, one actionable message each
// (validate_config, validate_or_throw in core/config.h).

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <functional>
#include <initializer_list>

#include "core/command_line.h"
#include "core/config.h"
#include "core/config_fields.h"
#include "core/error.h"
#include "core/run_files.h"
#include "core/tasks/task.h"
#include "core/toml_assignments.h"

namespace ganpo {
namespace {

using namespace config_detail;

class Checker {
public:
  std::vector<std::string> problems;

  void add(const std::string& msg) { problems.push_back(msg); }

  // Non-finite doubles are reported once, by the registry sweep in validate_config; the range
  // checks skip them so one NaN yields one message, not two.
  void greater(const std::string& key, double v, double lo) {
    if (std::isfinite(v) && !(v > lo)) add(key + " must be > " + format_double(lo) + ", got " + format_double(v));
  }
  void at_least(const std::string& key, double v, double lo) {
    if (std::isfinite(v) && !(v >= lo)) add(key + " must be >= " + format_double(lo) + ", got " + format_double(v));
  }
  void greater(const std::string& key, int64_t v, int64_t lo) {
    if (!(v > lo)) add(key + " must be > " + std::to_string(lo) + ", got " + std::to_string(v));
  }
  void at_least(const std::string& key, int64_t v, int64_t lo) {
    if (!(v >= lo)) add(key + " must be >= " + std::to_string(lo) + ", got " + std::to_string(v));
  }
  // In [lo, hi] or [lo, hi) depending on hi_inclusive; lo is always inclusive here.
  void in_range(const std::string& key, double v, double lo, double hi, bool hi_inclusive) {
    if (!std::isfinite(v)) return;
    const bool ok = v >= lo && (hi_inclusive ? v <= hi : v < hi);
    if (!ok)
      add(key + " must be in [" + format_double(lo) + ", " + format_double(hi) + (hi_inclusive ? "]" : ")") +
          ", got " + format_double(v));
  }
  void one_of(const std::string& key, const std::string& v, const std::vector<std::string>& allowed,
              const std::string& note = "") {
    if (std::find(allowed.begin(), allowed.end(), v) != allowed.end()) return;
    std::vector<std::string> shown;
    for (const auto& a : allowed) shown.push_back(a.empty() ? "\"\"" + note : a);
    add(key + " must be one of " + join(shown, ", ") + "; got " + quote(v));
  }
  void not_empty(const std::string& key, const std::string& v, const std::string& why) {
    if (v.empty()) add(key + " must not be empty (" + why + "), got \"\"");
  }
};

}  // namespace

bool is_valid_device(const std::string& d) {
  if (d == "auto" || d == "cpu" || d == "cuda") return true;
  if (d.rfind("cuda:", 0) != 0 || d.size() == 5) return false;
  return std::all_of(d.begin() + 5, d.end(), [](unsigned char c) { return std::isdigit(c); });
}

std::vector<std::string> validate_config(const RunConfig& c) {
  Checker check;

  for (const Field& f : fields()) {
    const FieldRef ref = f.get(c);
    if (auto p = std::get_if<double*>(&ref); p && !std::isfinite(**p))
      check.add(f.path() + " must be a finite number, got " + format_double(**p));
    // TOML and JSON can write one ("\u0000"), but a path or a name ends there when it reaches the
    // file system or a terminal: output_dir = "runs/a\u0000b" wrote to runs/a without a word.
    if (auto p = std::get_if<std::string*>(&ref); p && (*p)->find('\0') != std::string::npos)
      check.add(f.path() + " must not contain a NUL character (\\u0000), found at position " +
                std::to_string((*p)->find('\0')) + "; remove it (what follows it would be dropped)");
  }

  check.not_empty("name", c.name, "the run's display name");
  // Seeds are used as unsigned 64-bit numbers: -1 was 18446744073709551615 in disguise (and
  // transformers' set_seed refuses negatives too).
  check.at_least("seed", c.seed, int64_t{0});
  check.one_of("stage", c.stage, {"sft", "preference"});
  if (!is_valid_device(c.device))
    check.add("device must be auto, cpu, cuda or cuda:N (N = GPU index); got " + quote(c.device));
  check.not_empty("output_dir", c.output_dir, "the folder the run writes to");

  const ModelConfig& m = c.model;
  check.one_of("model.preset", m.preset, {"tiny", "small", "base", ""}, " (explicit shape)");
  if (m.preset.empty()) {
    const std::string why = " when model.preset is \"\" (explicit shape)";
    if (m.d_model <= 0) check.add("model.d_model must be > 0" + why + ", got " + std::to_string(m.d_model));
    if (m.n_layers <= 0) check.add("model.n_layers must be > 0" + why + ", got " + std::to_string(m.n_layers));
    if (m.n_heads <= 0) check.add("model.n_heads must be > 0" + why + ", got " + std::to_string(m.n_heads));
  } else {
    // 0 means "the preset's value"; only negatives are wrong here.
    check.at_least("model.d_model", m.d_model, int64_t{0});
    check.at_least("model.n_layers", m.n_layers, int64_t{0});
    check.at_least("model.n_heads", m.n_heads, int64_t{0});
  }
  check.at_least("model.n_kv_heads", m.n_kv_heads, int64_t{0});
  check.at_least("model.d_ff", m.d_ff, int64_t{0});
  check.at_least("model.max_seq_len", m.max_seq_len, int64_t{0});
  if (m.d_model > 0 && m.n_heads > 0 && m.d_model % m.n_heads != 0)
    check.add("model.d_model must be divisible by model.n_heads, got d_model " + std::to_string(m.d_model) +
              " and n_heads " + std::to_string(m.n_heads));
  if (m.n_kv_heads > 0 && m.n_heads > 0 && m.n_heads % m.n_kv_heads != 0)
    check.add("model.n_heads must be divisible by model.n_kv_heads, got n_heads " + std::to_string(m.n_heads) +
              " and n_kv_heads " + std::to_string(m.n_kv_heads));
  check.one_of("model.arch", m.arch, {"", "llama", "gpt2"}, " (the preset's)");
  check.greater("model.rope_theta", m.rope_theta, 0.0);
  check.one_of("model.save_dtype", m.save_dtype, {"", "float32", "bfloat16", "float16"}, " (as loaded)");
  check.greater("model.max_shard_mb", m.max_shard_mb, int64_t{0});
  const LoraConfig& lora = m.lora;
  check.at_least("model.lora.r", lora.r, int64_t{0});
  if (lora.r > kMaxLoraRank)
    check.add("model.lora.r must be <= " + std::to_string(kMaxLoraRank) + ", got " + std::to_string(lora.r));
  if (lora.r > 0) {
    check.greater("model.lora.alpha", lora.alpha, 0.0);
    check.in_range("model.lora.dropout", lora.dropout, 0.0, 1.0, false);
    check.one_of("model.lora.bias", lora.bias, {"none", "all", "lora_only"});
    check.one_of("model.lora.init_lora_weights", lora.init_lora_weights, {"default", "gaussian", "pissa", "olora"});
    for (const auto& read : std::initializer_list<std::function<void()>>{
             [&] { lora_target_modules(lora.target_modules); }, [&] { lora_layers(lora.layers_to_transform); },
             [&] { lora_exclude_modules(lora.exclude_modules); }, [&] { lora_rank_pattern(lora.rank_pattern); },
             [&] { lora_alpha_pattern(lora.alpha_pattern); }, [&] { lora_modules_to_save(lora.modules_to_save); },
             [&] { lora_token_indices(lora.trainable_token_indices); }}) {
      try {
        read();
      } catch (const ConfigError& e) {
        check.add(e.what());
      }
    }
    if (m.checkpoint.empty())
      check.add("model.lora.r = " + std::to_string(lora.r) +
                " adapts a pretrained model, but model.checkpoint is empty: set it to the model folder to adapt, "
                "or model.lora.r = 0 to train every weight of a fresh model");
  }

  const DataConfig& d = c.data;
  {
    std::vector<std::string> sources{"auto"};
    for (const Task* t : builtin_tasks()) sources.push_back(t->name());
    sources.push_back("");
    check.one_of("data.builtin", d.builtin, sources, " (read data.train)");
  }
  if (d.builtin.empty() && d.train.empty())
    check.add("data.train must name a JSONL/JSON file when data.builtin is \"\", got \"\"");
  if (!d.builtin.empty() && d.builtin != "auto" && (!d.train.empty() || !d.eval.empty()))
    check.add("data.builtin = \"" + d.builtin + "\" and data." + (d.train.empty() ? "eval" : "train") + " = \"" +
              (d.train.empty() ? d.eval : d.train) +
              "\" are both set, and a run trains on one source: remove data.builtin to train on the file, "
              "or remove data.train and data.eval to train on the built-in task");
  if (d.builtin == "auto" && d.train.empty() && !d.eval.empty())
    check.add("data.eval = \"" + d.eval +
              "\" is set but data.train is not; name the training file in data.train (the held-out file "
              "only goes with a training file)");
  check.in_range("data.eval_fraction", d.eval_fraction, 0.0, 1.0, false);
  check.greater("data.max_length", d.max_length, int64_t{0});
  check.greater("data.max_prompt_length", d.max_prompt_length, int64_t{0});
  if (d.max_length > 0 && d.max_prompt_length > 0 && d.max_prompt_length >= d.max_length)
    check.add("data.max_prompt_length must be < data.max_length (" + std::to_string(d.max_length) +
              ") to leave room for the response, got " + std::to_string(d.max_prompt_length));
  check.in_range("data.label_noise", d.label_noise, 0.0, 1.0, true);
  check.one_of("data.on_bad_line", d.on_bad_line, {"error", "skip"});
  check.greater("data.builtin_train_size", d.builtin_train_size, int64_t{0});
  check.greater("data.builtin_eval_size", d.builtin_eval_size, int64_t{0});

  const ObjectiveConfig& o = c.objective;
  check.one_of("objective.loss_type", o.loss_type, {"sigmoid", "simpo", "ipo", "hinge"});
  if (std::isfinite(o.beta) && o.beta < 0)
    check.add("objective.beta must be > 0, got " + format_double(o.beta) +
              " (or 0 for the loss's default: 0.1, SimPO 2.5)");
  check.at_least("objective.simpo_gamma", o.simpo_gamma, 0.0);
  check.at_least("objective.rpo_alpha", o.rpo_alpha, 0.0);

  const GanpoConfig& g = c.ganpo;
  check.at_least("ganpo.adv_weight", g.adv_weight, 0.0);
  check.greater("ganpo.critic_hidden", g.critic_hidden, int64_t{0});
  check.at_least("ganpo.critic_layers", g.critic_layers, int64_t{1});
  check.greater("ganpo.critic_heads", g.critic_heads, int64_t{0});
  if (g.critic_hidden > 0 && g.critic_heads > 0 && g.critic_hidden % g.critic_heads != 0)
    check.add("ganpo.critic_hidden must be divisible by ganpo.critic_heads, got critic_hidden " +
              std::to_string(g.critic_hidden) + " and critic_heads " + std::to_string(g.critic_heads));
  check.at_least("ganpo.critic_ffn_mult", g.critic_ffn_mult, int64_t{1});
  check.greater("ganpo.critic_max_len", g.critic_max_len, int64_t{0});
  check.in_range("ganpo.critic_dropout", g.critic_dropout, 0.0, 1.0, false);
  check.greater("ganpo.critic_lr_ratio", g.critic_lr_ratio, 0.0);
  check.in_range("ganpo.ema_momentum", g.ema_momentum, 0.0, 1.0, false);
  check.one_of("ganpo.critic_mask", g.critic_mask, {"none", "attention", "response"});
  check.at_least("ganpo.critic_update_every", g.critic_update_every, int64_t{1});

  const TrainConfig& t = c.train;
  check.greater("train.learning_rate", t.learning_rate, 0.0);
  check.one_of("train.lr_scheduler_type", t.lr_scheduler_type, {"constant", "linear", "cosine"});
  check.in_range("train.warmup_ratio", t.warmup_ratio, 0.0, 1.0, true);
  check.at_least("train.per_device_train_batch_size", t.per_device_train_batch_size, int64_t{1});
  check.at_least("train.per_device_eval_batch_size", t.per_device_eval_batch_size, int64_t{0});
  check.at_least("train.gradient_accumulation_steps", t.gradient_accumulation_steps, int64_t{1});
  if (t.max_steps != -1 && t.max_steps <= 0)
    check.add("train.max_steps must be -1 (use num_train_epochs) or > 0, got " + std::to_string(t.max_steps));
  if (t.max_steps == -1 && std::isfinite(t.num_train_epochs) && !(t.num_train_epochs > 0))
    check.add("train.num_train_epochs must be > 0 when train.max_steps is -1, got " +
              format_double(t.num_train_epochs));
  check.at_least("train.max_grad_norm", t.max_grad_norm, 0.0);
  // Clipping divides it by the gradients' norm in their float type: above float's range LibTorch
  // failed the run at its first step with "value cannot be converted to type float", naming no key.
  if (std::isfinite(t.max_grad_norm) && t.max_grad_norm > 1e38)
    check.add("train.max_grad_norm must be in [0, 1e38] (0 = no clipping), got " + format_double(t.max_grad_norm));
  check.at_least("train.weight_decay", t.weight_decay, 0.0);
  check.in_range("train.adam_beta1", t.adam_beta1, 0.0, 1.0, false);
  check.in_range("train.adam_beta2", t.adam_beta2, 0.0, 1.0, false);
  check.greater("train.adam_epsilon", t.adam_epsilon, 0.0);
  check.one_of("train.precision", t.precision, {"fp32", "bf16"});
  check.one_of("train.chunked_logps", t.chunked_logps, {"auto", "on", "off"});
  if (t.precision == "bf16" && c.device == "cpu")
    check.add("train.precision = \"bf16\" needs a CUDA device; on CPU this build computes in float32 "
              "(LibTorch's CPU bf16 kernels are slower, not faster): set train.precision = \"fp32\" "
              "or device = \"cuda\"");
  check.at_least("train.logging_steps", t.logging_steps, int64_t{1});
  check.at_least("train.eval_steps", t.eval_steps, int64_t{0});
  check.at_least("train.save_steps", t.save_steps, int64_t{0});
  check.at_least("train.num_threads", t.num_threads, int64_t{0});
  check.in_range("train.num_processes", static_cast<double>(t.num_processes), 1.0, 1024.0, true);
  check.greater("train.dist_timeout_s", t.dist_timeout_s, 0.0);

  const SamplingConfig& s = c.sampling;
  check.at_least("sampling.every_steps", s.every_steps, int64_t{0});
  check.at_least("sampling.num_prompts", s.num_prompts, int64_t{0});
  check.at_least("sampling.temperature", s.temperature, 0.0);
  if (std::isfinite(s.top_p) && !(s.top_p > 0 && s.top_p <= 1))
    check.add("sampling.top_p must be in (0, 1], got " + format_double(s.top_p));
  check.at_least("sampling.top_k", s.top_k, int64_t{0});
  check.at_least("sampling.max_new_tokens", s.max_new_tokens, int64_t{1});

  const EvalConfig& e = c.eval;
  try {
    if (parse_temperatures(e.temperatures).empty() && e.judge_at_end)
      check.add("eval.temperatures is empty while eval.judge_at_end is true; name at least one, e.g. \"0.7, 1.0\"");
  } catch (const ConfigError& err) {
    check.add(err.what());
  }
  check.at_least("eval.seed", e.seed, int64_t{0});
  check.at_least("eval.num_prompts", e.num_prompts, int64_t{0});
  check.at_least("eval.max_new_tokens", e.max_new_tokens, int64_t{0});
  check.greater("eval.judge_timeout_s", e.judge_timeout_s, 0.0);
  if (!e.judge_command.empty()) {
    std::vector<std::string> argv;
    if (const std::string bad = split_command_line(e.judge_command, argv); !bad.empty())
      check.add("eval.judge_command cannot be run: " + bad);
  }

  // Each pipeline stage is a run of its own: the config with its assignments applied.
  std::vector<std::string> stage_folders;
  for (const auto& stage : c.pipeline) {
    const std::string where = "pipeline stage " + quote(stage.name) + ": ";
    if (stage.name.empty()) check.add("every pipeline stage needs a name");
    const std::string folder = safe_file_name(stage.name, "-_.");
    if (std::find(stage_folders.begin(), stage_folders.end(), folder) != stage_folders.end())
      check.add(where + "another stage has this name; give each its own");
    stage_folders.push_back(folder);
    RunConfig run = c;
    run.pipeline.clear();
    try {
      for (const auto& a : stage.assignments) {
        refuse_per_run_keys(a.substr(0, a.find('=')), where + a);
        apply_override(run, a);
      }
    } catch (const ConfigError& e) {
      check.add(where + e.what());
      continue;
    }
    for (const auto& problem : validate_config(run)) check.add(where + problem);
  }

  return check.problems;
}

std::vector<std::string> missing_inputs(const RunConfig& config) {
  std::vector<std::string> out;
  namespace fs = std::filesystem;
  std::error_code ec;
  for (const auto& [key, path] : {std::pair<const char*, const std::string&>{"model.checkpoint", config.model.checkpoint},
                                  {"model.reference", config.model.reference}})
    if (!path.empty() && !fs::is_directory(path, ec))
      out.push_back(std::string(key) + ": there is no folder at " + path +
                    "; pick a Hugging Face model folder (config.json, *.safetensors) or a run's checkpoint folder");
  if (!uses_builtin_task(config.data))
    for (const auto& [key, path] : {std::pair<const char*, const std::string&>{"data.train", config.data.train},
                                    {"data.eval", config.data.eval}})
      if (!path.empty() && !fs::is_regular_file(path, ec))
        out.push_back(std::string(key) + ": there is no file at " + path + "; pick a JSONL or JSON file of rows");
  return out;
}

void validate_or_throw(const RunConfig& config) {
  const auto problems = validate_config(config);
  if (problems.empty()) return;
  std::string msg = "invalid run configuration:";
  for (const auto& p : problems) msg += "\n  " + p;
  throw ConfigError(msg);
}

}  // namespace ganpo
