#include "core/model/lora_targets.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <set>

#include "core/error.h"
#include "core/model/architectures.h"
#include "core/model/modules_to_save.h"
#include "core/text/regex.h"

namespace ganpo {
namespace {

// Our projections in a layer's order, and the module each lives under.
struct Projection {
  const char* name;
  const char* parent;
};
constexpr Projection kProjections[] = {{"q_proj", "self_attn"}, {"k_proj", "self_attn"}, {"v_proj", "self_attn"},
                                       {"o_proj", "self_attn"}, {"gate_proj", "mlp"},    {"up_proj", "mlp"},
                                       {"down_proj", "mlp"}};

// The module a projection lives under in a layer ("self_attn", "mlp").
std::string hf_projection_parent(const std::string& projection) {
  for (const auto& p : kProjections)
    if (projection == p.name) return p.parent;
  GANPO_ASSERT(false, "not a projection: " + projection);
  return {};
}

std::vector<std::string> projections_of(const ModelShape& shape) {
  std::vector<std::string> out;
  for (const auto& p : kProjections)
    if (std::string(p.name) != "gate_proj" || shape.mlp != MlpKind::gelu_tanh) out.push_back(p.name);
  return out;
}

bool is_qkv(const std::string& projection) {
  return projection == "q_proj" || projection == "k_proj" || projection == "v_proj";
}

// A family's layer layout, for the families' names without a model at hand.
ModelShape family_shape(const Architecture& arch) {
  ModelShape shape;
  shape.arch = arch.family;
  arch.set_layout(shape);
  return shape;
}

// Whether PEFT's target name (a module name, or the end of a path) picks the module at `path`.
bool picks(const std::string& name, const std::string& path) {
  return name == path || (path.size() > name.size() && path.compare(path.size() - name.size(), name.size(), name) == 0 &&
                          path[path.size() - name.size() - 1] == '.');
}

// Whether a target_modules name picks projection p, whose whole module name is `module`: PEFT's
// exact name or end of a name, "all-linear", or (ours_too) our projection's name.
bool name_picks(const std::string& name, const std::string& p, const std::string& module, bool ours_too) {
  return name == "all-linear" || (ours_too && name == p) || picks(name, module);
}

std::string join_names(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

// "0-3, 5" for layers 0, 1, 2, 3, 5 (sorted).
std::string layer_ranges(const std::vector<int64_t>& layers) {
  std::string out;
  for (size_t i = 0; i < layers.size();) {
    size_t j = i;
    while (j + 1 < layers.size() && layers[j + 1] == layers[j] + 1) ++j;
    out += (out.empty() ? "" : ", ") + std::to_string(layers[i]) + (j > i ? "-" + std::to_string(layers[j]) : "");
    i = j + 1;
  }
  return out;
}

std::string number_text(double v) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%g", v);
  return buffer;
}

// The family's whole name of a projection's module in one layer, as the HF model names it
// ("model.layers.3.self_attn.q_proj", "transformer.h.3.attn.c_attn").
std::string hf_module(const std::string& family, int64_t layer, const std::string& projection) {
  const std::string parent = hf_projection_parent(projection);
  const std::string suffix = ".weight";
  const std::string hf =
      architecture(family).hf_name("layers." + std::to_string(layer) + "." + parent + "." + projection + suffix).name;
  return hf.substr(0, hf.size() - suffix.size());
}

// A pattern of an adapter config compiled as Python's re compiles it; `field` names it in errors.
class PythonPattern {
public:
  PythonPattern(const std::string& pattern, std::string field) : field_(std::move(field)) {
    try {
      regex_ = std::make_unique<text::Regex>(pattern, text::RegexSyntax::python);
    } catch (const Error& e) {
      throw ConfigError(field_ + ": the " + e.what() + "; write it as Python's re module takes it");
    }
  }
  bool match(const std::string& s, std::vector<std::string>* groups = nullptr) const { return run([&] { return regex_->match(s, groups); }); }
  bool full_match(const std::string& s) const { return run([&] { return regex_->full_match(s); }); }

private:
  template <typename F>
  bool run(F f) const {
    try {
      return f();
    } catch (const Error& e) {
      throw ConfigError(field_ + ": " + e.what());
    }
  }
  std::string field_;
  std::unique_ptr<text::Regex> regex_;
};

// rank_pattern / alpha_pattern: PEFT's get_pattern_key takes the first key whose
// "(.*\.)?(key)$" matches a module's whole name from its start.
template <typename T>
class ValuePatterns {
public:
  ValuePatterns(const std::vector<std::pair<std::string, T>>& patterns, const std::string& field) {
    for (const auto& [key, value] : patterns)
      patterns_.emplace_back(std::make_unique<PythonPattern>("(.*\\.)?(" + key + ")$", field + " \"" + key + "\""), value);
  }
  T value(const std::string& module, T otherwise) const {
    for (const auto& [pattern, value] : patterns_)
      if (pattern->match(module)) return value;
    return otherwise;
  }

private:
  std::vector<std::pair<std::unique_ptr<PythonPattern>, T>> patterns_;
};

// target_modules as a regular expression is matched by PEFT against every module of the model,
// not only the projections: one it matches that is not left out (`left_out`: exclude_modules,
// modules_to_save) and is neither a linear projection, the token embedding nor the output head
// makes PEFT stop ("Target module ... is not supported"), and LoRA on GPT-2's positions is not
// built here.
template <typename LeftOut>
void refuse_pattern_on_other_modules(const ModelShape& shape, const PythonPattern& pattern, const std::string& text,
                                     const std::string& prefix, LeftOut left_out) {
  std::set<std::string> projections, seen;
  for (int64_t layer = 0; layer < shape.n_layers; ++layer)
    for (const std::string& p : projections_of(shape)) projections.insert(hf_module(shape.arch, layer, p));
  std::vector<std::string> modules = model_modules(shape);
  if (shape.tie_embeddings) modules.push_back("lm_head");  // a module of the Hugging Face model all the same
  // The other modules in named_modules' order (each after the one holding it), where PEFT meets them.
  std::vector<std::string> others;
  for (const std::string& m : modules) {
    std::vector<std::string> names = with_parents(hf_module_name(shape, m));
    for (auto it = names.rbegin(); it != names.rend(); ++it)
      if (!projections.count(*it) && seen.insert(*it).second) others.push_back(*it);
  }
  for (const std::string& name : others) {
    if (name == hf_module_name(shape, "embed_tokens") || name == "lm_head" || !pattern.full_match(name) || left_out(name))
      continue;
    const bool positions = shape.positions == PositionKind::learned && name == hf_module_name(shape, "embed_positions");
    throw ConfigError(prefix + "target_modules, the regular expression \"" + text + "\", matches " + name + ", " +
                      (positions ? "the position embedding: LoRA on it is not built here; train it with modules_to_save "
                                   "instead"
                                 : "which is not a linear projection (PEFT stops there too: \"Target module ... is not "
                                   "supported\")") +
                      "; make the pattern match projections (and the token embedding or lm_head) only (Python's "
                      "re.fullmatch over whole module names, as " + hf_module(shape.arch, 0, projections_of(shape).front()) + ")");
  }
}

// An adapted token embedding or output head beside the other settings: token rows of an adapted
// table are refused (its adapter changes every row already; a tied head follows the embedding's
// rows); where the two are tied, the one not adapted keeps the original weight and the head
// becomes a module of its own (PEFT's default), unless ensure_weight_tying asks PEFT for its tied
// adapters (the head's lora_A = the embedding's B transposed, lora_B = its A transposed), not
// built here. PEFT ties when a name's last part is embed_tokens or lm_head, or the pattern matches
// one of those words (_check_tied_modules); a run's config ties whenever it asks.
void refuse_with_adapted_tables(const ModelShape& shape, const LoraSpec& spec, const PythonPattern* target_re,
                                LoraTargets& out) {
  const std::string& prefix = spec.key_prefix;
  const std::string embedding = hf_module_name(shape, "embed_tokens");
  if (out.adapts_embedding() && !out.embedding_rows.empty())
    throw ConfigError(prefix + "trainable_token_indices gives rows of the token embedding, which " + prefix +
                      "target_modules adapts too (" + embedding + "); its adapter changes every row already: drop the "
                      "rows or take the embedding out of target_modules");
  if (out.adapts_head() && (!out.head_rows.empty() || (shape.tie_embeddings && !out.embedding_rows.empty())))
    throw ConfigError(prefix + "trainable_token_indices gives rows of the output head" +
                      (out.head_rows.empty() ? std::string(" (the embedding's, which the tied head follows)") : "") +
                      ", which " + prefix + "target_modules adapts too (lm_head); its adapter changes every row "
                      "already: drop the rows or take lm_head out of target_modules");
  if (!shape.tie_embeddings) return;
  const bool tying_name = std::any_of(spec.targets.begin(), spec.targets.end(), is_peft_tying_name);
  const bool ties = spec.ensure_weight_tying &&
                    (!spec.from_adapter_file || tying_name ||
                     (target_re && (target_re->full_match("embed_tokens") || target_re->full_match("lm_head"))));
  if (ties)
    throw ConfigError(prefix + "ensure_weight_tying would keep the output head and the token embedding tied through "
                      "their adapters (PEFT's tied adapters on embed_tokens and lm_head), which is not built here; set "
                      "ensure_weight_tying false (the table not adapted keeps the original weights, as PEFT's default) "
                      "or take " + std::string(out.adapts_head() ? "lm_head" : "the embedding") + " out of " + prefix +
                      "target_modules");
  out.untie_head = true;
}

// Modules named by their path in a layer with the layers they are in where not every layer
// ("input_layernorm in layers 0-1"), the others by name ("norm"); paths: each one's path.
std::vector<std::string> modules_by_path(const ModelShape& shape, const std::vector<std::string>& modules,
                                         std::vector<std::string>& paths) {
  std::map<std::string, std::vector<int64_t>> layers_of;
  for (const std::string& m : modules) {
    std::string path = m;
    if (m.rfind("layers.", 0) == 0) {
      const size_t dot = m.find('.', 7);
      path = m.substr(dot + 1);
      layers_of[path].push_back(std::stoll(m.substr(7, dot - 7)));
    }
    if (std::find(paths.begin(), paths.end(), path) == paths.end()) paths.push_back(path);
  }
  std::vector<std::string> out;
  for (const std::string& path : paths) {
    const auto it = layers_of.find(path);
    std::string text = path;
    if (it != layers_of.end() && static_cast<int64_t>(it->second.size()) != shape.n_layers)
      text += (it->second.size() == 1 ? " in layer " : " in layers ") + layer_ranges(it->second);
    out.push_back(text);
  }
  return out;
}

// PEFT's bias option read against the model: the modules whose bias trains, in the model's
// order, besides those trained whole (whose copies hold their biases).
std::vector<std::string> trained_biases(const ModelShape& shape, const LoraSpec& spec, const LoraTargets& targets,
                                        const std::string& prefix) {
  if (spec.bias == "none") return {};
  if (spec.bias != "all" && spec.bias != "lora_only")
    throw ConfigError(prefix + "bias is \"" + spec.bias + "\"; it must be \"none\", \"all\" or \"lora_only\", as PEFT's LoraConfig takes it");
  std::vector<std::string> out;
  for (const std::string& m : model_modules(shape)) {
    if (module_bias_size(shape, m) == 0 || std::find(targets.trained.begin(), targets.trained.end(), m) != targets.trained.end())
      continue;
    if (spec.bias == "lora_only") {  // (the embedding and the head have no bias)
      const size_t dot = m.rfind('.');
      if (m.rfind("layers.", 0) != 0 || targets.find(std::stoll(m.substr(7, m.find('.', 7) - 7)), m.substr(dot + 1)) == nullptr)
        continue;
    }
    out.push_back(m);
  }
  return out;
}

}  // namespace

double lora_scale(int64_t r, double alpha, bool rslora) {
  const double rank = static_cast<double>(r);
  return rslora ? alpha / std::sqrt(rank) : alpha / rank;
}

double LoraSpec::scale() const { return lora_scale(r, alpha, rslora); }

LoraSpec lora_spec(const LoraConfig& config) {
  LoraSpec spec;
  spec.r = config.r;
  spec.alpha = config.alpha;
  spec.rslora = config.use_rslora;
  spec.dora = config.use_dora;
  spec.dropout = config.dropout;
  spec.key_prefix = "model.lora.";
  if (config.r <= 0) return spec;
  // One string with a pattern's characters is PEFT's regular expression, as in a LoraConfig.
  spec.targets = lora_target_modules(config.target_modules);
  spec.target_regex = lora_module_pattern(config.target_modules);
  spec.layers = lora_layers(config.layers_to_transform);
  spec.exclude = lora_exclude_modules(config.exclude_modules);
  spec.exclude_regex = lora_module_pattern(config.exclude_modules);
  spec.rank_pattern = lora_rank_pattern(config.rank_pattern);
  spec.alpha_pattern = lora_alpha_pattern(config.alpha_pattern);
  spec.modules_to_save = lora_modules_to_save(config.modules_to_save);
  const std::vector<int64_t> tokens = lora_token_indices(config.trainable_token_indices);
  if (!tokens.empty()) spec.trainable_tokens = {{"", tokens}};
  spec.ensure_weight_tying = config.ensure_weight_tying;
  spec.bias = config.bias;
  spec.init = config.init_lora_weights;
  return spec;
}

bool LoraTargets::has(const std::string& projection) const {
  return std::find(projections.begin(), projections.end(), projection) != projections.end();
}

const LoraModule* LoraTargets::find(int64_t layer, const std::string& projection) const {
  for (const LoraModule& m : modules)
    if (m.layer == layer && m.projection == projection) return &m;
  return nullptr;
}

int64_t LoraTargets::first_trained_layer(int64_t n_layers) const {
  if (!embedding_rows.empty() || adapts_embedding()) return 0;
  int64_t first = n_layers;
  for (const LoraModule& m : modules) first = std::min(first, m.layer);
  for (const auto* list : {&trained, &biases})
    for (const std::string& t : *list) {
      if (t == "embed_tokens" || t == "embed_positions") return 0;
      if (t.rfind("layers.", 0) == 0) first = std::min<int64_t>(first, std::stoll(t.substr(7, t.find('.', 7) - 7)));
    }
  return first;
}

std::string hf_projection_path(const std::string& family, const std::string& projection) {
  const std::string module = hf_module(family, 0, projection);
  const size_t layer = module.find(".0.");
  GANPO_ASSERT(layer != std::string::npos, "no layer index in " + module);
  return module.substr(layer + 3);
}

LoraTargets resolve_lora_targets(const ModelShape& shape, const LoraSpec& spec) {
  const std::vector<std::string> own = projections_of(shape);
  std::unique_ptr<PythonPattern> target_re, exclude_re;
  const std::string& prefix = spec.key_prefix;  // "model.lora." or ""
  if (!spec.target_regex.empty()) target_re = std::make_unique<PythonPattern>(spec.target_regex, prefix + "target_modules");
  if (!spec.exclude_regex.empty()) exclude_re = std::make_unique<PythonPattern>(spec.exclude_regex, prefix + "exclude_modules");
  const bool ours_too = !spec.from_adapter_file;
  if (target_re && !spec.layers.empty())
    throw ConfigError(prefix + "layers_to_transform cannot be used when " + prefix +
                      "target_modules is a regular expression (PEFT refuses it too); put the layers in the pattern");
  for (const int64_t layer : spec.layers)
    if (layer >= shape.n_layers && !spec.from_adapter_file)
      throw ConfigError(prefix + "layers_to_transform names layer " + std::to_string(layer) + ", but this model has " +
                        std::to_string(shape.n_layers) + " layers (0 to " + std::to_string(shape.n_layers - 1) + ")");
  // Where a module's name gives its layer (PEFT's check_target_module_exists): the first number
  // after a module list, or after one of layers_pattern's.
  std::vector<std::unique_ptr<PythonPattern>> layer_index;
  if (spec.layers_pattern.empty()) layer_index.push_back(std::make_unique<PythonPattern>(R"(.*?\.[^.]*\.(\d+)\.)", prefix + "layers_pattern"));
  for (const std::string& lp : spec.layers_pattern)
    layer_index.push_back(std::make_unique<PythonPattern>(".*?\\." + lp + "\\.(\\d+)\\.", prefix + "layers_pattern \"" + lp + "\""));
  // PEFT never adapts a module under one of modules_to_save (check_target_module_exists: the
  // name, itself a pattern, matched as whole parts of the module's name, "(^|.*\.)name($|\..*)").
  std::vector<std::unique_ptr<PythonPattern>> saved;
  for (const std::string& m : spec.modules_to_save)
    saved.push_back(std::make_unique<PythonPattern>("(^|.*\\.)" + m + "($|\\..*)", prefix + "modules_to_save \"" + m + "\""));
  const auto under_saved = [&](const std::string& name) {
    return std::any_of(saved.begin(), saved.end(), [&](const auto& pattern) { return pattern->match(name); });
  };
  // What PEFT leaves unadapted by a module's whole name: exclude_modules and modules_to_save.
  const auto left_out = [&](const std::string& module) {
    return (exclude_re && exclude_re->full_match(module)) || under_saved(module) ||
           std::any_of(spec.exclude.begin(), spec.exclude.end(), [&](const std::string& e) { return picks(e, module); });
  };
  const ValuePatterns<int64_t> ranks(spec.rank_pattern, prefix + "rank_pattern");
  const ValuePatterns<double> alphas(spec.alpha_pattern, prefix + "alpha_pattern");

  // One module's adapter, its rank and alpha from the patterns (whole module name) or the spec's.
  const auto adapter_of = [&](const std::string& module, int64_t layer, const std::string& ours) {
    LoraModule m{layer, ours, ranks.value(module, spec.r), alphas.value(module, spec.alpha), 0.0};
    if (m.r <= 0 || !(m.alpha > 0))
      throw ConfigError(prefix + "rank_pattern / " + prefix + "alpha_pattern give " + module + " rank " + std::to_string(m.r) +
                        " and alpha " + number_text(m.alpha) + "; both must be positive");
    m.scale = lora_scale(m.r, m.alpha, spec.rslora);
    return m;
  };

  LoraTargets out;
  out.r = spec.r;
  out.alpha = spec.alpha;
  std::set<std::string> named;  // target names that pick some module (before layers and exclusions)
  bool regex_matched = false, qkv_by_module_name = false;
  std::vector<std::string> groups;
  for (int64_t layer = 0; layer < shape.n_layers; ++layer)
    for (const std::string& p : own) {
      const std::string module = hf_module(shape.arch, layer, p);
      bool found = false, exact = false, by_module_name = false;
      if (target_re) {
        found = by_module_name = exact = target_re->full_match(module);  // (PEFT takes no layers with a pattern)
        regex_matched = regex_matched || found;
      }
      for (const std::string& name : spec.targets) {
        if (!name_picks(name, p, module, ours_too)) continue;
        named.insert(name);
        found = true;
        exact = exact || name == module;  // a whole name: PEFT applies no layers_to_transform to it
        by_module_name = by_module_name || name != p;
      }
      if (found && !exact && !spec.layers.empty()) {
        int64_t index = -1;
        for (const auto& pattern : layer_index)
          if (pattern->match(module, &groups)) {
            // (group 1 is layers_pattern's own first group where it has one, as in PEFT)
            const std::string digits = groups.empty() ? std::string() : groups[0];
            const bool number = !digits.empty() && digits.size() <= 9 &&
                                std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; });
            index = number ? std::stoll(digits) : -1;
            break;
          }
        found = std::find(spec.layers.begin(), spec.layers.end(), index) != spec.layers.end();
      }
      // exclude_modules and modules_to_save as PEFT checks them, and (a run's config) by our
      // names too, where one of GPT-2's q, k and v under one leaves their c_attn unadapted.
      if (!found || left_out(module)) continue;
      if (ours_too && std::find(spec.exclude.begin(), spec.exclude.end(), p) != spec.exclude.end()) continue;
      if (ours_too && !saved.empty() && std::any_of(own.begin(), own.end(), [&](const std::string& other) {
            return hf_module(shape.arch, layer, other) == module &&
                   under_saved("layers." + std::to_string(layer) + "." + hf_projection_parent(other) + "." + other);
          }))
        continue;
      out.modules.push_back(adapter_of(module, layer, p));
      qkv_by_module_name = qkv_by_module_name || (by_module_name && is_qkv(p));
    }

  // The token embedding, as PEFT matches it: by the pattern, its whole name, the end of it, or
  // (a run's config) ours; layers_to_transform leaves it out unless it is named whole (it is in
  // no layer).
  const std::string embedding = hf_module_name(shape, "embed_tokens");
  bool embedding_found = false, embedding_whole = false;
  std::string embedding_by;  // the name that picked it
  if (target_re && target_re->full_match(embedding)) embedding_found = embedding_whole = regex_matched = true;
  for (const std::string& name : spec.targets) {
    if (!picks(name, embedding) && !(ours_too && name == "embed_tokens")) continue;
    named.insert(name);
    embedding_found = true;
    embedding_whole = embedding_whole || name == embedding;
    if (embedding_by.empty()) embedding_by = name;
  }
  if (embedding_found && !embedding_whole && !spec.layers.empty()) {
    if (ours_too)
      throw ConfigError(prefix + "layers_to_transform would leave the token embedding unadapted, which " + prefix +
                        "target_modules names as \"" + embedding_by + "\" (PEFT applies the layers to it, and it is in "
                        "no layer); name it whole, \"" + embedding + "\", to adapt it beside those layers' projections");
    embedding_found = false;
  }
  const bool embedding_excluded =
      left_out(embedding) || (ours_too && std::find(spec.exclude.begin(), spec.exclude.end(), "embed_tokens") != spec.exclude.end());
  if (embedding_found && !embedding_excluded) {
    if (spec.dora)
      throw ConfigError(prefix + "use_dora is on and " + prefix + "target_modules adapts the token embedding (" + embedding +
                        "): DoRA on an embedding is not built here; take the embedding out of target_modules or turn "
                        "use_dora off");
    out.embedding = adapter_of(embedding, -1, "embed_tokens");
  }

  // The output head, "lm_head" in every family and outside the layers: by that name (matched
  // whole, so layers_to_transform does not apply) or the pattern; never by "all-linear" (PEFT
  // leaves the output layer out).
  bool head_found = target_re && target_re->full_match("lm_head");
  regex_matched = regex_matched || head_found;
  for (const std::string& name : spec.targets)
    if (name == "lm_head") {
      named.insert(name);
      head_found = true;
    }
  if (head_found && !left_out("lm_head")) {
    if (spec.dora)
      throw ConfigError(prefix + "use_dora is on and " + prefix + "target_modules adapts the output head (lm_head): "
                        "DoRA on the head is not built here; take lm_head out of target_modules or turn use_dora off");
    out.head = adapter_of("lm_head", -1, "lm_head");
  }

  for (const std::string& name : spec.targets) {
    if (named.count(name)) continue;
    // The family's own module names where they are not ours (GPT-2's).
    std::vector<std::string> hf;
    for (const std::string& p : own) {
      const std::string path = hf_projection_path(shape.arch, p);
      if (!picks(p, path) && std::find(hf.begin(), hf.end(), path) == hf.end()) hf.push_back(path);
    }
    throw ConfigError((prefix.empty() ? std::string("model.lora.") : prefix) + "target_modules names \"" + name + "\", which this " + shape.arch +
                      " model does not have; its projections are " + join_names(own) +
                      (hf.empty() ? "" : " (Hugging Face's modules: " + join_names(hf) + ")") +
                      ", its token embedding " + embedding.substr(embedding.rfind('.') + 1) + ", its output head lm_head, "
                      "or write \"all-linear\"");
  }
  if (target_re && !regex_matched)
    throw ConfigError(prefix + "target_modules, the regular expression \"" + spec.target_regex + "\", matches no projection (nor the token embedding or lm_head) of this " +
                      shape.arch + " model, whose modules are named like " + hf_module(shape.arch, 0, own.front()) +
                      " (Python's re.fullmatch, as PEFT matches it)");
  if (target_re) refuse_pattern_on_other_modules(shape, *target_re, spec.target_regex, prefix, left_out);
  if (out.modules.empty() && !out.adapts_embedding() && !out.adapts_head())
    throw ConfigError(prefix + "layers_to_transform, " + prefix + "exclude_modules and " + prefix +
                      "modules_to_save (whose modules PEFT does not adapt) leave no module of the model adapted; "
                      "adapt at least one projection, the token embedding or lm_head");

  for (const std::string& p : own)
    for (const LoraModule& m : out.modules)
      if (m.projection == p) {
        out.projections.push_back(p);
        break;
      }
  // One A for q, k and v where they are one module, picked as that module, in every layer they are adapted in.
  const bool fused = architecture(shape.arch).hf_name("layers.0.self_attn.q_proj.weight").layout == WeightLayout::fused_qkv;
  bool together = true;
  for (int64_t layer = 0; layer < shape.n_layers; ++layer) {
    const int n = (out.find(layer, "q_proj") != nullptr) + (out.find(layer, "k_proj") != nullptr) + (out.find(layer, "v_proj") != nullptr);
    together = together && (n == 0 || n == 3);
  }
  out.shared_qkv = fused && qkv_by_module_name && together && out.has("q_proj");
  TrainedModules trained = resolve_modules_to_save(
      shape, {spec.modules_to_save, spec.trainable_tokens, spec.ensure_weight_tying, spec.head_saved, ours_too, prefix}, out);
  out.trained = std::move(trained.modules);
  out.untie_head = trained.untie_head;
  out.embedding_rows = std::move(trained.embedding_rows);
  out.head_rows = std::move(trained.head_rows);
  if (out.adapts_embedding() || out.adapts_head()) refuse_with_adapted_tables(shape, spec, target_re.get(), out);
  out.biases = trained_biases(shape, spec, out, prefix);
  if (starts_from_factors(spec.init) && (spec.dora || out.adapts_embedding() || out.adapts_head()))
    throw ConfigError(prefix + "init_lora_weights = \"" + spec.init + "\" starts the adapters from each weight's " +
                      (spec.init == "pissa" ? "singular vectors" : "QR factors") + ", which is built here for the " +
                      "projections' plain LoRA only: " +
                      (spec.dora ? "turn use_dora off" : "take the token embedding and lm_head out of target_modules") +
                      ", or use init_lora_weights = \"default\"");
  return out;
}

LoraTargets resolve_lora_targets(const ModelShape& shape, const std::vector<std::string>& names) {
  LoraSpec spec;
  spec.r = 8;
  spec.targets = names;
  return resolve_lora_targets(shape, spec);
}

std::vector<std::string> peft_picked_names(const ModelShape& shape, const std::vector<std::string>& names) {
  const std::vector<std::string> own = projections_of(shape);
  std::vector<std::string> out;
  for (const std::string& name : names) {
    bool any = false;
    for (int64_t layer = 0; !any && layer < shape.n_layers; ++layer)
      for (const std::string& p : own) any = any || name_picks(name, p, hf_module(shape.arch, layer, p), false);
    if (any || picks(name, hf_module_name(shape, "embed_tokens")) || name == "lm_head") out.push_back(name);
  }
  return out;
}

bool is_known_lora_target(const std::string& name) {
  if (name == "all-linear" || name == "embed_tokens" || name == "lm_head") return true;
  for (const Architecture& arch : architectures()) {
    const ModelShape shape = family_shape(arch);
    const std::string embedding = hf_module_name(shape, "embed_tokens");  // "model.embed_tokens", "transformer.wte"
    if (picks(name, embedding)) return true;
    for (const std::string& p : projections_of(shape)) {
      const std::string path = hf_projection_path(arch.family, p);
      // Its own name, the end of its path in a layer, or a whole module name ending in that path.
      if (name == p || picks(name, path) || picks(path, name)) return true;
    }
  }
  return false;
}

std::string lora_targets_text(const ModelShape& shape, const LoraTargets& targets) {
  // Per projection: the layers (where not all) and the ranks (where not the spec's).
  std::vector<std::string> notes;
  for (const std::string& p : targets.projections) {
    std::vector<int64_t> layers;
    std::set<int64_t> ranks;
    std::set<double> alphas;
    for (const LoraModule& m : targets.modules)
      if (m.projection == p) {
        layers.push_back(m.layer);
        ranks.insert(m.r);
        alphas.insert(m.alpha);
      }
    std::string note;
    if (static_cast<int64_t>(layers.size()) != shape.n_layers)
      note += (layers.size() == 1 ? " in layer " : " in layers ") + layer_ranges(layers);
    std::vector<std::string> values;
    if (ranks.size() > 1)
      values.push_back("r " + std::to_string(*ranks.begin()) + " to " + std::to_string(*ranks.rbegin()) + " by layer");
    else if (*ranks.begin() != targets.r)
      values.push_back("r " + std::to_string(*ranks.begin()));
    if (alphas.size() > 1)
      values.push_back("alpha " + number_text(*alphas.begin()) + " to " + number_text(*alphas.rbegin()) + " by layer");
    else if (*alphas.begin() != targets.alpha)
      values.push_back("alpha " + number_text(*alphas.begin()));
    if (!values.empty()) note += " (" + join_names(values) + ")";
    notes.push_back(note);
  }
  const bool same = std::all_of(notes.begin(), notes.end(), [&](const std::string& n) { return n == notes.front(); });
  std::string out;
  for (size_t i = 0; i < targets.projections.size(); ++i) {
    const std::string& p = targets.projections[i];
    out += (out.empty() ? "" : ", ") + p + (same ? "" : notes[i]);
    if (p == "v_proj" && targets.shared_qkv)
      out += " (one A: PEFT's adapter on " + hf_projection_path(shape.arch, p) + ")";
  }
  if (same && !notes.empty()) out += notes.front();
  if (targets.adapts_embedding()) {
    const LoraModule& e = targets.embedding;
    std::vector<std::string> values;
    if (e.r != targets.r) values.push_back("r " + std::to_string(e.r));
    if (e.alpha != targets.alpha) values.push_back("alpha " + number_text(e.alpha));
    if (targets.untie_head && !targets.adapts_head()) values.push_back("the head keeps the original: untied");
    out += std::string(out.empty() ? "" : ", ") + "the token embedding" + (values.empty() ? "" : " (" + join_names(values) + ")");
  }
  if (targets.adapts_head()) {
    const LoraModule& h = targets.head;
    std::vector<std::string> values;
    if (h.r != targets.r) values.push_back("r " + std::to_string(h.r));
    if (h.alpha != targets.alpha) values.push_back("alpha " + number_text(h.alpha));
    if (targets.untie_head)
      values.push_back(targets.adapts_embedding() ? "untied from the embedding" : "the embedding keeps the original: untied");
    out += std::string(out.empty() ? "" : ", ") + "the output head" + (values.empty() ? "" : " (" + join_names(values) + ")");
  }
  if (!targets.embedding_rows.empty() || !targets.head_rows.empty()) {
    const auto count = [](const std::vector<int64_t>& rows) { return std::to_string(rows.size()) + (rows.size() == 1 ? " token" : " tokens"); };
    std::string rows;
    if (!targets.embedding_rows.empty())
      rows = count(targets.embedding_rows) + " of the embedding" +
             (shape.tie_embeddings && targets.head_rows.empty() ? " (and the head, tied)" : "");
    if (!targets.head_rows.empty()) rows += (rows.empty() ? "" : ", ") + count(targets.head_rows) + " of the head";
    out += "; trained rows: " + rows;
  }
  if (!targets.trained.empty()) {
    std::vector<std::string> paths;
    std::vector<std::string> whole = modules_by_path(shape, targets.trained, paths);
    for (size_t i = 0; i < paths.size(); ++i) {
      if (paths[i] == "lm_head" && targets.untie_head) whole[i] += " (untied from the embedding)";
      if (paths[i] == "embed_tokens" && shape.tie_embeddings && !targets.untie_head) whole[i] += " (still tied to the head)";
      if (paths[i] == "embed_tokens" && targets.untie_head && std::find(paths.begin(), paths.end(), "lm_head") == paths.end())
        whole[i] += " (the head keeps the original: untied)";
    }
    out += "; trained whole: " + join_names(whole);
  }
  std::vector<std::string> paths;
  if (!targets.biases.empty()) out += "; trained biases: " + join_names(modules_by_path(shape, targets.biases, paths));
  return out;
}

nlohmann::json peft_target_config(const ModelShape& shape, const LoraTargets& targets) {
  // PEFT's modules: a fused module (GPT-2's c_attn with one A) once, as q's.
  struct PeftModule {
    int64_t layer;
    std::string projection, path;
    int64_t r;
    double alpha;
  };
  std::vector<PeftModule> modules;
  std::map<std::string, std::vector<int64_t>> layers_of;  // path inside a layer -> layers
  for (const LoraModule& m : targets.modules) {
    if (targets.shared_qkv && (m.projection == "k_proj" || m.projection == "v_proj")) continue;
    const std::string path = hf_projection_path(shape.arch, m.projection);
    modules.push_back({m.layer, m.projection, path, m.r, m.alpha});
    layers_of[path].push_back(m.layer);
  }
  const std::vector<int64_t> first_layers = layers_of.empty() ? std::vector<int64_t>() : layers_of.begin()->second;
  const bool same_layers = std::all_of(layers_of.begin(), layers_of.end(), [&](const auto& kv) { return kv.second == first_layers; });

  nlohmann::json out = {{"r", targets.r}, {"lora_alpha", targets.alpha}, {"layers_to_transform", nullptr}};
  std::vector<std::string> names;
  if (same_layers) {
    // Each module's own name where no unadapted projection shares it, else its path in a layer.
    const std::vector<std::string> own = projections_of(shape);
    for (const std::string& p : targets.projections) {
      const std::string path = hf_projection_path(shape.arch, p);
      const std::string leaf = path.substr(path.rfind('.') + 1);
      bool shared = false;  // another module with this name that is not adapted
      for (const std::string& other : own)
        if (!targets.has(other) && hf_projection_path(shape.arch, other) != path && picks(leaf, hf_projection_path(shape.arch, other)))
          shared = true;
      const std::string name = shared ? path : leaf;
      if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
    }
    if (!first_layers.empty() && static_cast<int64_t>(first_layers.size()) != shape.n_layers)
      out["layers_to_transform"] = first_layers;
  } else {
    for (const PeftModule& m : modules) names.push_back(hf_module(shape.arch, m.layer, m.projection));  // matched whole, in no layer filter
  }
  // The token embedding by the end of its name ("embed_tokens", GPT-2's "wte"), or whole where
  // layers_to_transform is written (PEFT applies it to names matched by their end).
  const std::string embedding = hf_module_name(shape, "embed_tokens");
  if (targets.adapts_embedding())
    names.push_back(out["layers_to_transform"].is_null() ? embedding.substr(embedding.rfind('.') + 1) : embedding);
  if (targets.adapts_head()) names.push_back("lm_head");  // a whole name: no layers apply
  out["target_modules"] = names;
  // A path's rank where every layer of it has one, else per whole module name.
  nlohmann::json rank_pattern = nlohmann::json::object(), alpha_pattern = nlohmann::json::object();
  for (const auto& [path, layers] : layers_of) {
    std::set<int64_t> ranks;
    std::set<double> alphas;
    for (const PeftModule& m : modules)
      if (m.path == path) {
        ranks.insert(m.r);
        alphas.insert(m.alpha);
      }
    for (const PeftModule& m : modules) {
      if (m.path != path) continue;
      const std::string key = ranks.size() == 1 && alphas.size() == 1 ? path : hf_module(shape.arch, m.layer, m.projection);
      if (m.r != targets.r && (ranks.size() > 1 || !rank_pattern.contains(key))) rank_pattern[key] = m.r;
      if (m.alpha != targets.alpha && (alphas.size() > 1 || !alpha_pattern.contains(key))) alpha_pattern[key] = m.alpha;
    }
  }
  // The embedding's and the head's own rank and alpha by their whole names.
  for (const LoraModule* table : {&targets.embedding, &targets.head}) {
    if (table->r == 0) continue;
    const std::string name = table == &targets.head ? std::string("lm_head") : embedding;
    if (table->r != targets.r) rank_pattern[name] = table->r;
    if (table->alpha != targets.alpha) alpha_pattern[name] = table->alpha;
  }
  out["rank_pattern"] = rank_pattern;
  out["alpha_pattern"] = alpha_pattern;
  return out;
}

}  // namespace ganpo
