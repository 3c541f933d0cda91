// [model.lora]'s lists read from their text: target and excluded modules (names or PEFT's
// regular expression), layer and token indices, modules to save, rank and alpha patterns
// (core/config.h; core/model/lora_targets.h applies them to a model).

#include <algorithm>
#include <cctype>

#include "core/config.h"
#include "core/config_fields.h"
#include "core/error.h"
#include "core/model/lora_targets.h"
#include "core/text/regex.h"

namespace ganpo {

using config_detail::lower;
using config_detail::parse_double;
using config_detail::parse_int64;
using config_detail::quote;
using config_detail::trim;

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

}  // namespace ganpo
