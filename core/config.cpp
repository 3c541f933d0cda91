#include "core/config.h"

#include <algorithm>
#include <functional>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <string_view>
#include <system_error>
#include <variant>

#include <nlohmann/json.hpp>
#include <toml++/toml.h>

#include "core/command_line.h"
#include "core/error.h"
#include "core/model/lora_targets.h"
#include "core/text/regex.h"
#include "core/run_files.h"
#include "core/tasks/task.h"
#include "core/text/utf8.h"
#include "core/toml_assignments.h"

namespace ganpo {
namespace {

// ---------------------------------------------------------------------------------------------
// The field registry: the one list of every key. Parsing (TOML, JSON), saving and overrides all
// walk it, so adding a field to config.h means adding one line here and nothing else.

using FieldRef = std::variant<std::string*, int64_t*, double*, bool*>;

struct Field {
  const char* section;  // "" for top-level keys
  const char* key;
  FieldRef (*ref)(RunConfig&);
  // A list kept as comma-separated text (model.lora.target_modules, eval.temperatures): files and
  // overrides may also give it as an array, as PEFT's and TRL's configs write lists.
  bool list = false;

  std::string path() const { return *section ? std::string(section) + "." + key : key; }
  FieldRef get(RunConfig& c) const { return ref(c); }
  // Readers share the mutable accessor; they never write through the pointer.
  FieldRef get(const RunConfig& c) const { return ref(const_cast<RunConfig&>(c)); }
};

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
      GANPO_FIELD(train, gradient_accumulation_steps),
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

// Section order is the order tables are written in. A section may sit inside another
// ("model.lora" is the table [model.lora], the object {"model": {"lora": {...}}}).
const std::vector<std::string>& sections() {
  static const std::vector<std::string> names = {"model", "model.lora", "data", "objective", "ganpo",
                                                 "train", "sampling", "eval"};
  return names;
}

bool is_section(std::string_view name) {
  const auto& s = sections();
  return std::find(s.begin(), s.end(), name) != s.end();
}

// A table at the top of a file ("model", not "model.lora", which sits inside [model]).
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

// Shortest text that reads back to exactly the same double ("5e-7", "0.1", "10000").
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

// TOML needs a '.' or exponent to read a value back as a float rather than an integer.
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

// A float is accepted for an integer key only when nothing is lost ("max_steps = 300.0").
bool integral_double_to_int64(double v, int64_t& out) {
  if (!std::isfinite(v) || v != std::floor(v) || std::fabs(v) >= 9.2e18) return false;
  out = static_cast<int64_t>(v);
  return true;
}

// ---------------------------------------------------------------------------------------------
// Error messages.

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t subst = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, subst});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// The closest candidate if it is close enough to be a plausible typo, else "".
std::string closest(const std::string& word, const std::vector<std::string>& candidates) {
  // No key is this long: no suggestion, and no quadratic work on a pasted blob (found by fuzzing).
  if (word.size() > 64) return "";
  const std::string w = lower(word);
  std::string best;
  size_t best_d = std::numeric_limits<size_t>::max();
  for (const auto& c : candidates) {
    const size_t d = edit_distance(w, lower(c));
    if (d < best_d) best_d = d, best = c;
  }
  const size_t allowed = std::max<size_t>(2, w.size() / 3);
  return best_d <= allowed ? best : "";
}

// `unknown key "train.learning_rat" (did you mean "learning_rate"?)`, or the list of valid
// names when nothing is close, so the message always says what would have worked. `where` is a
// location prefix ("line 3: ") when the source has one.
[[noreturn]] void throw_unknown(const std::string& what, const std::string& shown, const std::string& typed,
                               const std::vector<std::string>& candidates, const std::string& allowed_label,
                               const std::string& where = "") {
  std::string msg = "unknown " + what + " " + quote(shown.size() > 100 ? shown.substr(0, 100) + "..." : shown);
  const std::string guess = closest(typed, candidates);
  if (!guess.empty())
    msg += " (did you mean " + quote(guess) + "?)";
  else
    msg += "; " + allowed_label + ": " + join(candidates, ", ");
  throw ConfigError(where + msg);
}

std::vector<std::string> top_level_names() {
  std::vector<std::string> names = keys_of("");
  for (const auto& s : sections())
    if (is_top_section(s)) names.push_back(s);
  return names;
}

[[noreturn]] void throw_unknown_key(std::string_view section, const std::string& key, const std::string& where) {
  if (section.empty()) throw_unknown("key", key, key, top_level_names(), "allowed top-level keys and tables", where);
  throw_unknown("key", std::string(section) + "." + key, key, keys_of(section),
                "keys allowed in [" + std::string(section) + "]", where);
}

// Overrides are typed by hand on a command line, so the suggestion is a complete, corrected
// "section.key" and the fallback list is as short as the mistake allows.
[[noreturn]] void throw_unknown_override(const std::string& path, const std::string& section, const std::string& key) {
  if (is_section(path))
    throw ConfigError(quote(path) + " is a table; override one of its keys, e.g. " + path + "." + keys_of(path).front() +
                      "=...; keys allowed in [" + path + "]: " + join(keys_of(path), ", "));
  std::vector<std::string> all;
  for (const Field& g : fields()) all.push_back(g.path());
  std::string guess;
  if (section.empty()) {
    // "learning_rate=1e-4": the key exists, only its table is missing.
    for (const Field& g : fields())
      if (key == g.key) guess = g.path();
  }
  if (guess.empty()) guess = closest(path, all);
  if (!guess.empty()) throw ConfigError("unknown key " + quote(path) + " (did you mean " + quote(guess) + "?)");
  if (section.empty() || is_section(section)) throw_unknown_key(section, key, "");
  const std::string table_guess = closest(section, sections());
  std::string msg = "unknown key " + quote(path) + ": there is no table " + quote(section);
  msg += table_guess.empty() ? "; tables are: " + join(sections(), ", ") : " (did you mean " + quote(table_guess) + "?)";
  throw ConfigError(msg);
}

const char* kind_name(const FieldRef& ref) {
  switch (ref.index()) {
    case 0: return "a string";
    case 1: return "an integer";
    case 2: return "a number";
    default: return "true or false";
  }
}

[[noreturn]] void throw_type(const Field& f, const FieldRef& ref, const std::string& got, const std::string& where = "") {
  const std::string kind = f.list ? "a comma-separated string or an array of names and numbers" : kind_name(ref);
  throw ConfigError(where + f.path() + " must be " + kind + ", got " + got);
}

// A list field's items as its comma-separated text ("q_proj, v_proj"; numbers as written back
// by format_double). `item` gives each item's text, or nullopt for an item that is neither a
// string nor a number, which `describe` names in the message.
template <typename Items, typename ItemText, typename Describe>
std::string list_text(const Field& f, const Items& items, ItemText item, Describe describe, const std::string& where = "") {
  std::vector<std::string> texts;
  for (const auto& node : items) {
    const std::optional<std::string> t = item(node);
    if (!t) throw ConfigError(where + f.path() + " lists names and numbers; the array holds " + describe(node));
    texts.push_back(trim(*t));
  }
  return join(texts, ", ");
}

// ---------------------------------------------------------------------------------------------
// TOML.

std::string toml_where(const toml::source_region& src) {
  return src.begin.line ? "line " + std::to_string(src.begin.line) + ": " : "";
}

std::string describe_toml(const toml::node& node) {
  if (auto s = node.as_string()) return quote(s->get());
  if (auto i = node.as_integer()) return std::to_string(i->get());
  if (auto d = node.as_floating_point()) return format_double(d->get());
  if (auto b = node.as_boolean()) return b->get() ? "true" : "false";
  if (node.is_table()) return "a table";
  if (node.is_array()) return "an array";
  return "a date/time";
}

std::optional<std::string> toml_list_item(const toml::node& node) {
  if (auto s = node.as_string()) return s->get();
  if (auto i = node.as_integer()) return std::to_string(i->get());
  if (auto d = node.as_floating_point()) return format_double(d->get());
  return std::nullopt;
}

void set_from_toml(const Field& f, RunConfig& config, const toml::node& node) {
  const FieldRef ref = f.get(config);
  const std::string where = toml_where(node.source());
  auto fail = [&]() { throw_type(f, ref, describe_toml(node), where); };
  if (auto p = std::get_if<std::string*>(&ref)) {
    if (const toml::array* items = node.as_array(); items && f.list) {
      **p = list_text(f, *items, toml_list_item, describe_toml, where);
      return;
    }
    if (f.list && (node.is_integer() || node.is_floating_point())) {  // one item: layers_to_transform = 3
      **p = *toml_list_item(node);
      return;
    }
    auto s = node.as_string();
    if (!s) fail();
    **p = s->get();
  } else if (auto p = std::get_if<int64_t*>(&ref)) {
    if (auto i = node.as_integer()) {
      **p = i->get();
    } else if (auto d = node.as_floating_point(); d && integral_double_to_int64(d->get(), **p)) {
    } else {
      fail();
    }
  } else if (auto p = std::get_if<double*>(&ref)) {
    if (auto d = node.as_floating_point())
      **p = d->get();
    else if (auto i = node.as_integer())
      **p = static_cast<double>(i->get());
    else
      fail();
  } else if (auto p = std::get_if<bool*>(&ref)) {
    auto b = node.as_boolean();
    if (!b) fail();
    **p = b->get();
  }
}

// The keys of section `name` (node must be its table); a key naming a section inside it ("lora"
// in [model]) is read as that section.
void read_toml_section(const std::string& name, const toml::node& node, const std::string& where, RunConfig& config) {
  const toml::table* table = node.as_table();
  if (!table) throw ConfigError(where + quote(name) + " must be a table ([" + name + "]), got " + describe_toml(node));
  for (auto&& [sub_key, sub_node] : *table) {
    const std::string sub(sub_key.str());
    if (is_section(name + "." + sub)) {
      read_toml_section(name + "." + sub, sub_node, toml_where(sub_key.source()), config);
      continue;
    }
    const Field* f = find_field(name, sub);
    if (!f) throw_unknown_key(name, sub, toml_where(sub_key.source()));
    set_from_toml(*f, config, sub_node);
  }
}

RunConfig config_from_toml_table(const toml::table& root) {
  RunConfig config;
  for (auto&& [key, node] : root) {
    const std::string name(key.str());
    const std::string where = toml_where(key.source());
    if (name == "pipeline") {
      config.pipeline = stages_from_toml(node, where.empty() ? "config" : where.substr(0, where.size() - 2), "pipeline");
    } else if (is_top_section(name)) {
      read_toml_section(name, node, where, config);
    } else {
      const Field* f = find_field("", name);
      if (!f) {
        if (node.is_table())
          throw_unknown("table", name, name, sections(), "allowed tables", where);
        throw_unknown_key("", name, where);
      }
      set_from_toml(*f, config, node);
    }
  }
  return config;
}

toml::table parse_toml(const std::string& text, const std::string& source_label) {
  try {
    return toml::parse(text);
  } catch (const toml::parse_error& e) {
    const auto& pos = e.source().begin;
    throw ConfigError("invalid TOML in " + source_label + " at line " + std::to_string(pos.line) + ", column " +
                      std::to_string(pos.column) + ": " + std::string(e.description()));
  }
}

std::string toml_value(const FieldRef& ref) {
  if (auto p = std::get_if<std::string*>(&ref)) return quote(**p);
  if (auto p = std::get_if<int64_t*>(&ref)) return std::to_string(**p);
  if (auto p = std::get_if<double*>(&ref)) return format_toml_double(**p);
  return *std::get<bool*>(ref) ? "true" : "false";
}

// ---------------------------------------------------------------------------------------------
// JSON.

std::string describe_json(const nlohmann::json& v) {
  if (v.is_string()) return quote(v.get<std::string>());
  if (v.is_object()) return "an object";
  if (v.is_array()) return "an array";
  if (v.is_number_float()) return format_double(v.get<double>());
  return v.dump();
}

void set_from_json(const Field& f, RunConfig& config, const nlohmann::json& v) {
  const FieldRef ref = f.get(config);
  auto fail = [&]() { throw_type(f, ref, describe_json(v)); };
  if (auto p = std::get_if<std::string*>(&ref)) {
    if (v.is_array() && f.list) {
      **p = list_text(f, v, [](const nlohmann::json& item) -> std::optional<std::string> {
        if (item.is_string()) return item.get<std::string>();
        if (item.is_number_integer()) return item.dump();
        if (item.is_number()) return format_double(item.get<double>());
        return std::nullopt;
      }, describe_json);
      return;
    }
    if (f.list && v.is_number()) {  // one item: "layers_to_transform": 3
      **p = v.is_number_integer() ? v.dump() : format_double(v.get<double>());
      return;
    }
    if (!v.is_string()) fail();
    **p = v.get<std::string>();
  } else if (auto p = std::get_if<int64_t*>(&ref)) {
    if (v.is_number_unsigned()) {
      const auto u = v.get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) fail();
      **p = static_cast<int64_t>(u);
    } else if (v.is_number_integer()) {
      **p = v.get<int64_t>();
    } else if (!(v.is_number_float() && integral_double_to_int64(v.get<double>(), **p))) {
      fail();
    }
  } else if (auto p = std::get_if<double*>(&ref)) {
    if (!v.is_number()) fail();
    **p = v.get<double>();
  } else if (auto p = std::get_if<bool*>(&ref)) {
    if (!v.is_boolean()) fail();
    **p = v.get<bool>();
  }
}

nlohmann::json json_value(const FieldRef& ref) {
  if (auto p = std::get_if<std::string*>(&ref)) return **p;
  if (auto p = std::get_if<int64_t*>(&ref)) return **p;
  if (auto p = std::get_if<double*>(&ref)) return **p;
  return *std::get<bool*>(ref);
}

// ---------------------------------------------------------------------------------------------
// Files.

std::string extension_of(const std::string& path) {
  return lower(std::filesystem::path(path).extension().string());
}

std::string read_file(const std::string& path) {
  // fopen/fread rather than ifstream: they leave errno set, so the message can say why.
  errno = 0;
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw ConfigError("cannot read config file " + path + ": " + std::strerror(errno));
  std::string text;
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
  const bool failed = std::ferror(f);
  const int err = errno;
  std::fclose(f);
  if (failed) throw ConfigError("cannot read config file " + path + ": " + std::strerror(err ? err : EIO));
  return text;
}

// ---------------------------------------------------------------------------------------------
// Validation.

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

bool is_valid_device(const std::string& d) {
  if (d == "auto" || d == "cpu" || d == "cuda") return true;
  if (d.rfind("cuda:", 0) != 0 || d.size() == 5) return false;
  return std::all_of(d.begin() + 5, d.end(), [](unsigned char c) { return std::isdigit(c); });
}

}  // namespace

// =============================================================================================

RunConfig config_from_toml(const std::string& toml_text) {
  return config_from_toml_table(parse_toml(toml_text, "config text"));
}

std::string config_to_toml(const RunConfig& config, const std::string& table_prefix) {
  const std::string prefix = table_prefix.empty() ? "" : table_prefix + ".";
  std::ostringstream out;
  if (table_prefix.empty())
    out << "# GANPO Workbench run configuration (every field written out).\n";
  else
    out << "[" << table_prefix << "]\n";
  for (const Field& f : fields())
    if (!*f.section) out << f.key << " = " << toml_value(f.get(config)) << "\n";
  for (const auto& section : sections()) {
    out << "\n[" << prefix << section << "]\n";
    for (const Field& f : fields())
      if (section == f.section) out << f.key << " = " << toml_value(f.get(config)) << "\n";
  }
  for (const auto& stage : config.pipeline)
    out << "\n[[" << prefix << "pipeline]]\nname = " << quote(stage.name)
        << "\nset = { " << toml_inline_assignments(stage.assignments) << " }\n";
  return out.str();
}

nlohmann::json config_to_json(const RunConfig& config) {
  nlohmann::json j = nlohmann::json::object();
  // "model.lora" -> j["model"]["lora"]
  auto object_of = [&j](const std::string& section) -> nlohmann::json& {
    std::string pointer = "/" + section;
    std::replace(pointer.begin(), pointer.end(), '.', '/');
    return j[nlohmann::json::json_pointer(pointer)];
  };
  for (const auto& section : sections()) object_of(section) = nlohmann::json::object();
  for (const Field& f : fields()) {
    if (*f.section)
      object_of(f.section)[f.key] = json_value(f.get(config));
    else
      j[f.key] = json_value(f.get(config));
  }
  // Only when there is one: stored runs are single stages.
  for (const auto& stage : config.pipeline) j["pipeline"].push_back({{"name", stage.name}, {"set", stage.assignments}});
  return j;
}

// The keys of section `name` from its object; a key naming a section inside it ("lora" in
// "model") is read as that section.
void read_json_section(const std::string& name, const nlohmann::json& object, RunConfig& config) {
  if (!object.is_object()) throw ConfigError(quote(name) + " must be an object, got " + describe_json(object));
  for (auto sub = object.begin(); sub != object.end(); ++sub) {
    if (is_section(name + "." + sub.key())) {
      read_json_section(name + "." + sub.key(), *sub, config);
      continue;
    }
    const Field* f = find_field(name, sub.key());
    if (!f) throw_unknown_key(name, sub.key(), "");
    set_from_json(*f, config, *sub);
  }
}

RunConfig config_from_json(const nlohmann::json& j) {
  if (!j.is_object()) throw ConfigError("a JSON run configuration must be an object, got " + describe_json(j));
  RunConfig config;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    if (name == "pipeline") {
      if (!it->is_array()) throw ConfigError("\"pipeline\" must be an array of {\"name\", \"set\": [\"section.key=value\", ...]}");
      for (const auto& stage : *it) {
        if (!stage.is_object() || !stage.contains("name") || !stage["name"].is_string() || !stage.contains("set") ||
            !stage["set"].is_array())
          throw ConfigError("every \"pipeline\" stage must be {\"name\": \"...\", \"set\": [\"section.key=value\", ...]}");
        PipelineStage p;
        p.name = stage["name"].get<std::string>();
        for (const auto& a : stage["set"]) {
          if (!a.is_string()) throw ConfigError("pipeline stage " + quote(p.name) + ": \"set\" must hold strings");
          p.assignments.push_back(a.get<std::string>());
          check_assignment(p.assignments.back(), "pipeline stage " + quote(p.name));
        }
        config.pipeline.push_back(std::move(p));
      }
    } else if (is_top_section(name)) {
      read_json_section(name, *it, config);
    } else {
      const Field* f = find_field("", name);
      if (!f) {
        if (it->is_object()) throw_unknown("table", name, name, sections(), "allowed tables");
        throw_unknown_key("", name, "");
      }
      set_from_json(*f, config, *it);
    }
  }
  return config;
}

RunConfig load_config_file(const std::string& path) {
  const std::string ext = extension_of(path);
  if (ext != ".toml" && ext != ".json")
    throw ConfigError("cannot read config file " + path + ": the name must end in .toml or .json");
  const std::string text = read_file(path);
  if (ext == ".json") {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::parse_error& e) {
      throw ConfigError("invalid JSON in " + path + ": " + e.what());
    }
    try {
      return config_from_json(j);
    } catch (const ConfigError& e) {
      throw ConfigError("config file " + path + ": " + e.what());
    }
  }
  const toml::table table = parse_toml(text, path);
  try {
    return config_from_toml_table(table);
  } catch (const ConfigError& e) {
    throw ConfigError("config file " + path + ": " + e.what());
  }
}

void save_config_file(const RunConfig& config, const std::string& path) {
  const std::string ext = extension_of(path);
  if (ext != ".toml" && ext != ".json")
    throw ConfigError("cannot write config file " + path + ": the name must end in .toml or .json");
  const std::string text = ext == ".json" ? config_to_json(config).dump(2) + "\n" : config_to_toml(config);

  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path parent = fs::path(path).parent_path();
  if (!parent.empty()) fs::create_directories(parent, ec);
  // Write a sibling then rename, so a crash never leaves a half-written config behind.
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw ConfigError("cannot write config file " + path + ": " + std::strerror(errno));
    out << text;
    out.flush();
    if (!out) throw ConfigError("cannot write config file " + path + ": " + std::strerror(errno));
  }
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp);
    throw ConfigError("cannot write config file " + path + ": " + ec.message());
  }
}

void apply_override(RunConfig& config, const std::string& assignment) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos)
    throw ConfigError("override " + quote(assignment) +
                      " must look like section.key=value (or key=value for a top-level key), e.g. "
                      "train.learning_rate=3e-4");
  const std::string path = trim(std::string_view(assignment).substr(0, eq));
  std::string value = trim(std::string_view(assignment).substr(eq + 1));

  const auto dot = path.rfind('.');  // "model.lora.r": section "model.lora", key "r"
  const std::string section = dot == std::string::npos ? "" : path.substr(0, dot);
  const std::string key = dot == std::string::npos ? path : path.substr(dot + 1);
  const Field* f = find_field(section, key);
  if (!f) throw_unknown_override(path, section, key);

  const FieldRef ref = f->get(config);
  if (auto p = std::get_if<std::string*>(&ref)) {
    // A config file is UTF-8 text (TOML and JSON both require it): anything else could not be saved.
    if (!text::is_valid_utf8(value))
      throw ConfigError(path + " must be UTF-8 text; the value given has bytes that are not (check the terminal's encoding)");
    // A list field also takes a TOML array: model.lora.target_modules=["q_proj","v_proj"].
    if (f->list && value.size() >= 2 && value.front() == '[' && value.back() == ']') {
      toml::table parsed;
      try {
        parsed = toml::parse("items = " + value);
      } catch (const toml::parse_error& e) {
        throw ConfigError(path + " = " + value + " is not a TOML array (" + std::string(e.description()) +
                          "); write [\"q_proj\", \"v_proj\"] or q_proj,v_proj");
      }
      **p = list_text(*f, *parsed["items"].as_array(), toml_list_item, describe_toml);
      return;
    }
    // Quotes are optional so `name=demo` works, and needed only to keep surrounding spaces.
    if (value.size() >= 2 && (value.front() == '"' || value.front() == '\'') && value.back() == value.front())
      value = value.substr(1, value.size() - 2);
    **p = value;
  } else if (auto p = std::get_if<int64_t*>(&ref)) {
    // Parse into a local: from_chars may store a prefix ("1" of "1.5") before failing.
    int64_t v = 0;
    if (!parse_int64(value, v)) throw_type(*f, ref, quote(value));
    **p = v;
  } else if (auto p = std::get_if<double*>(&ref)) {
    double v = 0;
    if (!parse_double(value, v)) throw_type(*f, ref, quote(value));
    **p = v;
  } else if (auto p = std::get_if<bool*>(&ref)) {
    const std::string v = lower(value);
    if (v == "true")
      **p = true;
    else if (v == "false")
      **p = false;
    else
      throw_type(*f, ref, quote(value));
  }
}

bool is_module_pattern(const std::string& text) { return text.find_first_of("*+?()[]{}|^$\\") != std::string::npos; }

std::string lora_module_pattern(const std::string& text) { return is_module_pattern(text) ? trim(text) : std::string(); }

namespace {

// A target_modules / exclude_modules pattern compiled as core/model/lora_targets.cpp runs it.
void check_module_pattern(const std::string& key, const std::string& pattern) {
  try {
    text::Regex(pattern, text::RegexSyntax::python);
  } catch (const Error& e) {
    throw ConfigError("model.lora." + key + " " + quote(pattern) + " reads as a regular expression (it holds one of "
                      "* + ? ( ) [ ] { } | ^ $ \\), and the " + e.what() + "; write it as Python's re module takes it, or list names");
  }
}

}  // namespace

std::vector<std::string> lora_target_modules(const std::string& text) {
  if (is_module_pattern(text)) {
    check_module_pattern("target_modules", trim(text));
    return {};
  }
  std::vector<std::string> out;
  std::string rest = text;
  while (!rest.empty()) {
    const size_t comma = rest.find(',');
    std::string name = trim(rest.substr(0, comma));
    rest = comma == std::string::npos ? "" : rest.substr(comma + 1);
    if (name.empty()) continue;
    if (lower(name) == "all-linear") name = "all-linear";  // in any case, as PEFT takes it
    if (!is_known_lora_target(name))
      throw ConfigError("model.lora.target_modules names " + quote(name) +
                        ", which is not a projection of any supported model; use q_proj, k_proj, v_proj, o_proj, "
                        "gate_proj, up_proj, down_proj, embed_tokens, lm_head, a Hugging Face module name (GPT-2's c_attn, "
                        "c_proj, c_fc, wte), a list of them (or comma-separated) or \"all-linear\"");
    if (std::find(out.begin(), out.end(), name) == out.end()) out.push_back(name);
  }
  if (out.empty())
    throw ConfigError("model.lora.target_modules is empty; name the projections to adapt, e.g. \"q_proj,v_proj\", or \"all-linear\"");
  return out;
}

namespace {

// The items of a comma-separated list, trimmed, empty ones skipped.
std::vector<std::string> list_items(const std::string& text) {
  std::vector<std::string> out;
  std::string rest = text;
  while (!rest.empty()) {
    const size_t comma = rest.find(',');
    const std::string item = trim(rest.substr(0, comma));
    rest = comma == std::string::npos ? "" : rest.substr(comma + 1);
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

// "pattern=value" items; the value after the last '=' (a pattern may hold one: "(?=...)").
template <typename T, typename Parse>
std::vector<std::pair<std::string, T>> lora_pattern(const std::string& key, const std::string& text, Parse parse,
                                                    const char* what) {
  std::vector<std::pair<std::string, T>> out;
  for (const std::string& item : list_items(text)) {
    const size_t eq = item.rfind('=');
    const std::string pattern = eq == std::string::npos ? "" : trim(item.substr(0, eq));
    T value{};
    if (pattern.empty() || !parse(trim(item.substr(eq + 1)), value) || !(value > 0) ||
        !(static_cast<double>(value) <= kMaxLoraRank))
      throw ConfigError("model.lora." + key + " lists " + quote(item) + "; write pattern=" + what +
                        " items, e.g. \"self_attn.q_proj=16\" (a Python regular expression matching the end of module "
                        "names, and a positive " + what + " up to " + std::to_string(kMaxLoraRank) + ")");
    try {  // as core/model/lora_targets.cpp runs it
      text::Regex("(.*\\.)?(" + pattern + ")$", text::RegexSyntax::python);
    } catch (const Error& e) {
      throw ConfigError("model.lora." + key + " lists " + quote(item) + ": the " + e.what() +
                        "; write the pattern as Python's re module takes it");
    }
    out.emplace_back(pattern, value);
  }
  return out;
}

}  // namespace

namespace {

// "0, 2, 4-7": indices below `limit` and ranges of them, each once, in the order listed; an
// item that is neither is refused with `how` (what to write).
std::vector<int64_t> index_ranges(const std::string& key, const std::string& text, int64_t limit, const std::string& how) {
  std::vector<int64_t> out;
  std::vector<bool> listed(static_cast<size_t>(limit), false);
  for (const std::string& item : list_items(text)) {
    const size_t dash = item.find('-', 1);
    int64_t first = 0, last = 0;
    const bool ok = dash == std::string::npos
                        ? parse_int64(item, first) && (last = first, true)
                        : parse_int64(trim(item.substr(0, dash)), first) && parse_int64(trim(item.substr(dash + 1)), last);
    if (ok && first >= 0 && last >= limit)
      throw ConfigError("model.lora." + key + " lists " + quote(item) + ", beyond " + std::to_string(limit - 1) +
                        ", more than any model has; " + how);
    if (!ok || first < 0 || last < first) throw ConfigError("model.lora." + key + " lists " + quote(item) + "; " + how);
    for (int64_t i = first; i <= last; ++i)
      if (!listed[static_cast<size_t>(i)]) {
        listed[static_cast<size_t>(i)] = true;
        out.push_back(i);
      }
  }
  return out;
}

}  // namespace

std::vector<int64_t> lora_layers(const std::string& text) {
  // (10000: far beyond any model; bounds what a range can ask for)
  return index_ranges("layers_to_transform", text, 10000,
                      "write layer indices from 0, or ranges such as 20-31, e.g. \"0, 1, 20-31\"");
}

std::vector<std::string> lora_exclude_modules(const std::string& text) {
  if (is_module_pattern(text)) {
    check_module_pattern("exclude_modules", trim(text));
    return {};
  }
  std::vector<std::string> out;
  for (const std::string& name : list_items(text)) {
    if (!is_known_lora_target(name) || name == "all-linear")
      throw ConfigError("model.lora.exclude_modules names " + quote(name) +
                        ", which is not a projection of any supported model; name modules as target_modules does "
                        "(q_proj, self_attn.q_proj, model.layers.0.self_attn.q_proj, GPT-2's c_attn)");
    if (std::find(out.begin(), out.end(), name) == out.end()) out.push_back(name);
  }
  return out;
}

std::vector<int64_t> lora_token_indices(const std::string& text) {
  // (1000000: beyond any vocabulary, Gemma's 262144 included)
  return index_ranges("trainable_token_indices", text, 1'000'000,
                      "write token ids, or ranges such as 128000-128010, e.g. \"5, 128000-128010\"");
}

std::vector<std::string> lora_modules_to_save(const std::string& text) {
  std::vector<std::string> out;
  for (const std::string& name : list_items(text)) {
    const bool plain = std::all_of(name.begin(), name.end(), [](unsigned char c) { return std::isalnum(c) || c == '_' || c == '.'; });
    if (!plain)
      throw ConfigError("model.lora.modules_to_save names " + quote(name) +
                        "; list module names (letters, digits, '_' and '.'), e.g. \"lm_head, embed_tokens\" or \"norm\"");
    if (std::find(out.begin(), out.end(), name) == out.end()) out.push_back(name);
  }
  return out;
}

std::vector<std::pair<std::string, int64_t>> lora_rank_pattern(const std::string& text) {
  return lora_pattern<int64_t>("rank_pattern", text, [](const std::string& v, int64_t& out) { return parse_int64(v, out); }, "rank");
}

std::vector<std::pair<std::string, double>> lora_alpha_pattern(const std::string& text) {
  return lora_pattern<double>("alpha_pattern", text, [](const std::string& v, double& out) { return parse_double(v, out); }, "alpha");
}

std::vector<std::string> config_keys() {
  std::vector<std::string> keys;
  for (const Field& f : fields()) keys.push_back(f.path());
  return keys;
}

std::string config_value_text(const RunConfig& config, const std::string& key) {
  const auto dot = key.rfind('.');
  const Field* f = dot == std::string::npos ? find_field("", key) : find_field(key.substr(0, dot), key.substr(dot + 1));
  if (!f) throw_unknown_override(key, dot == std::string::npos ? "" : key.substr(0, dot),
                                 dot == std::string::npos ? key : key.substr(dot + 1));
  const FieldRef ref = f->get(config);
  if (auto p = std::get_if<std::string*>(&ref)) return **p;
  if (auto p = std::get_if<double*>(&ref)) return format_double(**p);
  return toml_value(ref);
}

std::vector<std::string> validate_config(const RunConfig& c) {
  Checker check;

  for (const Field& f : fields()) {
    const FieldRef ref = f.get(c);
    if (auto p = std::get_if<double*>(&ref); p && !std::isfinite(**p))
      check.add(f.path() + " must be a finite number, got " + format_double(**p));
  }

  check.not_empty("name", c.name, "the run's display name");
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
  check.at_least("train.gradient_accumulation_steps", t.gradient_accumulation_steps, int64_t{1});
  if (t.max_steps != -1 && t.max_steps <= 0)
    check.add("train.max_steps must be -1 (use num_train_epochs) or > 0, got " + std::to_string(t.max_steps));
  if (t.max_steps == -1 && std::isfinite(t.num_train_epochs) && !(t.num_train_epochs > 0))
    check.add("train.num_train_epochs must be > 0 when train.max_steps is -1, got " +
              format_double(t.num_train_epochs));
  check.at_least("train.max_grad_norm", t.max_grad_norm, 0.0);
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

void validate_or_throw(const RunConfig& config) {
  const auto problems = validate_config(config);
  if (problems.empty()) return;
  std::string msg = "invalid run configuration:";
  for (const auto& p : problems) msg += "\n  " + p;
  throw ConfigError(msg);
}

void make_paths_absolute(RunConfig& config) {
  for (std::string* p : {&config.output_dir, &config.model.checkpoint, &config.model.reference, &config.data.train,
                         &config.data.eval})
    if (!p->empty()) *p = std::filesystem::absolute(*p).lexically_normal().string();
}

bool uses_chunked_logps(const TrainConfig& train, int64_t vocab_size) {
  return train.chunked_logps == "on" || (train.chunked_logps == "auto" && vocab_size > 100000);
}

int64_t chunked_logps_rows(int64_t vocab_size, bool cuda) {
  // On the CPU, chunks the heap serves again (core/cpu_runtime.cpp keeps allocations up to
  // 32 MiB out of fresh mmaps, whose pages fault in at each use): twice as fast here as 128 MiB.
  // On a GPU, products with more rows; the caching allocator reuses the blocks anyway.
  const int64_t bytes = cuda ? int64_t{128} << 20 : int64_t{32} << 20;
  return std::max<int64_t>(16, bytes / (4 * std::max<int64_t>(vocab_size, 1)));
}

bool uses_builtin_task(const DataConfig& data) {
  return data.builtin == "auto" ? data.train.empty() : !data.builtin.empty();
}

std::string builtin_task_name(const DataConfig& data) {
  if (!uses_builtin_task(data)) return "";
  return data.builtin == "auto" ? "lists" : data.builtin;
}

std::vector<double> parse_temperatures(const std::string& text) {
  std::vector<double> out;
  std::string_view rest = text;
  while (!trim(rest).empty()) {
    const size_t comma = rest.find(',');
    const std::string item = trim(rest.substr(0, comma));
    double v = 0;
    if (!parse_double(item, v) || !std::isfinite(v) || v < 0)
      throw ConfigError("eval.temperatures must be numbers >= 0 separated by commas, got " + quote(item) + " in " +
                        quote(text));
    out.push_back(v);
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  return out;
}

void resolve_data_source(DataConfig& data) {
  if (data.builtin == "auto") data.builtin = data.train.empty() ? "lists" : "";
}

double effective_beta(const ObjectiveConfig& objective) {
  if (objective.beta > 0) return objective.beta;
  return objective.loss_type == "simpo" ? 2.5 : 0.1;
}

}  // namespace ganpo
