// The run configuration's field registry and text helpers (core/config_fields.h).

#include "core/config_fields.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <system_error>

#include "core/toml_assignments.h"

namespace ganpo::config_detail {

// ---------------------------------------------------------------------------------------------
// The field registry: the one list of every key. Parsing (TOML, JSON), saving and overrides all
// walk it, so adding a field to config.h means adding one line here and nothing else.

#define GANPO_TOP(member) \
  Field { "", #member, [](RunConfig& c) -> FieldRef { return &c.member; } }
#define GANPO_FIELD(section, member) \
  Field { #section, #member, [](RunConfig& c) -> FieldRef { return &c.section.member; } }
#define GANPO_SUBFIELD(section, sub, member) \
  Field { #section "." #sub, #member, [](RunConfig& c) -> FieldRef { return &c.section.sub.member; } }
#define GANPO_LIST_FIELD(section, member) \
  Field { #section, #member, [](RunConfig& c) -> FieldRef { return &c.section.member; }, true }
#define GANPO_LIST_SUBFIELD(section, sub, member) \
  Field { #section "." #sub, #member, [](RunConfig& c) -> FieldRef { return &c.section.sub.member; }, true }

const std::vector<Field>& fields() {
  static const std::vector<Field> registry = {
      GANPO_TOP(name),
      GANPO_TOP(stage),
      GANPO_TOP(seed),
      GANPO_TOP(device),
      GANPO_TOP(output_dir),

      GANPO_FIELD(model, preset),
      GANPO_FIELD(model, arch),
      GANPO_FIELD(model, d_model),
      GANPO_FIELD(model, n_layers),
      GANPO_FIELD(model, n_heads),
      GANPO_FIELD(model, n_kv_heads),
      GANPO_FIELD(model, d_ff),
      GANPO_FIELD(model, max_seq_len),
      GANPO_FIELD(model, rope_theta),
      GANPO_FIELD(model, checkpoint),
      GANPO_FIELD(model, random_weights),
      GANPO_FIELD(model, reference),
      GANPO_FIELD(model, save_dtype),
      GANPO_FIELD(model, max_shard_mb),
      GANPO_SUBFIELD(model, lora, r),
      GANPO_SUBFIELD(model, lora, alpha),
      GANPO_SUBFIELD(model, lora, use_rslora),
      GANPO_SUBFIELD(model, lora, use_dora),
      GANPO_SUBFIELD(model, lora, dropout),
      GANPO_LIST_SUBFIELD(model, lora, target_modules),
      GANPO_LIST_SUBFIELD(model, lora, layers_to_transform),
      GANPO_LIST_SUBFIELD(model, lora, exclude_modules),
      GANPO_LIST_SUBFIELD(model, lora, rank_pattern),
      GANPO_LIST_SUBFIELD(model, lora, alpha_pattern),
      GANPO_LIST_SUBFIELD(model, lora, modules_to_save),
      GANPO_LIST_SUBFIELD(model, lora, trainable_token_indices),
      GANPO_SUBFIELD(model, lora, ensure_weight_tying),
      GANPO_SUBFIELD(model, lora, bias),
      GANPO_SUBFIELD(model, lora, init_lora_weights),

      GANPO_FIELD(data, builtin),
      GANPO_FIELD(data, train),
      GANPO_FIELD(data, eval),
      GANPO_FIELD(data, eval_fraction),
      GANPO_FIELD(data, max_length),
      GANPO_FIELD(data, max_prompt_length),
      GANPO_FIELD(data, label_noise),
      GANPO_FIELD(data, on_bad_line),
      GANPO_FIELD(data, chat_template),
      GANPO_FIELD(data, builtin_train_size),
      GANPO_FIELD(data, builtin_eval_size),

      GANPO_FIELD(objective, loss_type),
      GANPO_FIELD(objective, beta),
      GANPO_FIELD(objective, simpo_gamma),
      GANPO_FIELD(objective, rpo_alpha),

      GANPO_FIELD(ganpo, enabled),
      GANPO_FIELD(ganpo, adv_weight),
      GANPO_FIELD(ganpo, critic_hidden),
      GANPO_FIELD(ganpo, critic_layers),
      GANPO_FIELD(ganpo, critic_heads),
      GANPO_FIELD(ganpo, critic_ffn_mult),
      GANPO_FIELD(ganpo, critic_max_len),
      GANPO_FIELD(ganpo, critic_dropout),
      GANPO_FIELD(ganpo, critic_lr_ratio),
      GANPO_FIELD(ganpo, ema_momentum),
      GANPO_FIELD(ganpo, critic_mask),
      GANPO_FIELD(ganpo, critic_update_every),

      GANPO_FIELD(train, learning_rate),
      GANPO_FIELD(train, lr_scheduler_type),
      GANPO_FIELD(train, warmup_ratio),
      GANPO_FIELD(train, per_device_train_batch_size),
      GANPO_FIELD(train, per_device_eval_batch_size),
      GANPO_FIELD(train, gradient_accumulation_steps),
      GANPO_FIELD(train, auto_find_batch_size),
      GANPO_FIELD(train, max_steps),
      GANPO_FIELD(train, num_train_epochs),
      GANPO_FIELD(train, max_grad_norm),
      GANPO_FIELD(train, weight_decay),
      GANPO_FIELD(train, adam_beta1),
      GANPO_FIELD(train, adam_beta2),
      GANPO_FIELD(train, adam_epsilon),
      GANPO_FIELD(train, precision),
      GANPO_FIELD(train, gradient_checkpointing),
      GANPO_FIELD(train, deterministic),
      GANPO_FIELD(train, precompute_ref_log_probs),
      GANPO_FIELD(train, chunked_logps),
      GANPO_FIELD(train, prefix_sharing),
      GANPO_FIELD(train, group_by_length),
      GANPO_FIELD(train, logging_steps),
      GANPO_FIELD(train, eval_steps),
      GANPO_FIELD(train, save_steps),
      GANPO_FIELD(train, num_threads),
      GANPO_FIELD(train, num_processes),
      GANPO_FIELD(train, dist_timeout_s),

      GANPO_FIELD(sampling, every_steps),
      GANPO_FIELD(sampling, num_prompts),
      GANPO_FIELD(sampling, temperature),
      GANPO_FIELD(sampling, top_p),
      GANPO_FIELD(sampling, top_k),
      GANPO_FIELD(sampling, max_new_tokens),

      GANPO_FIELD(eval, judge_at_end),
      GANPO_LIST_FIELD(eval, temperatures),
      GANPO_FIELD(eval, num_prompts),
      GANPO_FIELD(eval, max_new_tokens),
      GANPO_FIELD(eval, seed),
      GANPO_FIELD(eval, judge_command),
      GANPO_FIELD(eval, judge_timeout_s),
  };
  return registry;
}

#undef GANPO_TOP
#undef GANPO_FIELD
#undef GANPO_SUBFIELD
#undef GANPO_LIST_FIELD
#undef GANPO_LIST_SUBFIELD

const std::vector<std::string>& sections() {
  static const std::vector<std::string> names = {"model", "model.lora", "data", "objective", "ganpo",
                                                 "train", "sampling", "eval"};
  return names;
}

bool is_section(std::string_view name) {
  const auto& s = sections();
  return std::find(s.begin(), s.end(), name) != s.end();
}

bool is_top_section(std::string_view name) { return is_section(name) && name.find('.') == std::string_view::npos; }

const Field* find_field(std::string_view section, std::string_view key) {
  for (const Field& f : fields())
    if (section == f.section && key == f.key) return &f;
  return nullptr;
}

std::vector<std::string> keys_of(std::string_view section) {
  std::vector<std::string> keys;
  for (const Field& f : fields())
    if (section == f.section) keys.emplace_back(f.key);
  return keys;
}

// ---------------------------------------------------------------------------------------------
// Text helpers. Number formatting avoids printf/strtod because the GUI may set a locale with a
// decimal comma, and a config file must read the same everywhere.

std::string join(const std::vector<std::string>& items, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) out += sep;
    out += items[i];
  }
  return out;
}

std::string quote(std::string_view s) { return toml_quoted(s); }

std::string format_double(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v < 0 ? "-inf" : "inf";
  char buf[512];
  // Whole numbers read better in full ("500000", not "5e5"); beyond 1e15 digits stop helping.
  const bool whole = v == std::floor(v) && std::fabs(v) < 1e15;
  const auto res = whole ? std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed)
                         : std::to_chars(buf, buf + sizeof buf, v);
  std::string s(buf, res.ptr);
  // to_chars writes "5e-07" and "1e+20"; drop the '+' and exponent zeros people never type.
  const auto e = s.find('e');
  if (e != std::string::npos) {
    std::string mantissa = s.substr(0, e), exponent = s.substr(e + 1);
    std::string sign;
    if (exponent[0] == '-' || exponent[0] == '+') {
      if (exponent[0] == '-') sign = "-";
      exponent.erase(0, 1);
    }
    exponent.erase(0, std::min(exponent.find_first_not_of('0'), exponent.size() - 1));
    s = mantissa + "e" + sign + exponent;
  }
  return s;
}

std::string format_toml_double(double v) {
  std::string s = format_double(v);
  if (std::isfinite(v) && s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

std::string trim(std::string_view s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return "";
  const auto e = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(b, e - b + 1));
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

bool parse_int64(std::string_view s, int64_t& out) {
  if (!s.empty() && s[0] == '+') s.remove_prefix(1);
  const auto res = std::from_chars(s.data(), s.data() + s.size(), out);
  return !s.empty() && res.ec == std::errc() && res.ptr == s.data() + s.size();
}

bool parse_double(std::string_view s, double& out) {
  if (!s.empty() && s[0] == '+') s.remove_prefix(1);
  const auto res = std::from_chars(s.data(), s.data() + s.size(), out);
  return !s.empty() && res.ec == std::errc() && res.ptr == s.data() + s.size();
}

bool integral_double_to_int64(double v, int64_t& out) {
  if (!std::isfinite(v) || v != std::floor(v) || std::fabs(v) >= 9.2e18) return false;
  out = static_cast<int64_t>(v);
  return true;
}

}  // namespace ganpo::config_detail
