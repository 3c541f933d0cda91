#include "core/model/lora_adapter.h"

#include <algorithm>
#include <cmath>
#include <cctype>
#include <filesystem>
#include <map>
#include <set>

#include "core/checkpoint.h"
#include "core/error.h"
#include "core/json_depth.h"
#include "core/model/architectures.h"
#include "core/model/hf_weights.h"
#include "core/model/lora_targets.h"
#include "core/model/modules_to_save.h"
#include "core/model/safetensors.h"

namespace ganpo {
namespace fs = std::filesystem;
namespace {

constexpr const char* kAdapterConfig = "adapter_config.json";
constexpr const char* kAdapterWeights = "adapter_model.safetensors";

// "layers.0.self_attn.q_proj.lora_A" -> ("layers.0.self_attn.q_proj", "lora_A")
std::pair<std::string, std::string> split_lora_name(const std::string& name) {
  const auto dot = name.rfind('.');
  return {name.substr(0, dot), name.substr(dot + 1)};
}

// Where one of our adapter tensors is in a PEFT file: its key, and for the B and the DoRA
// magnitudes of q, k and v on a fused module (GPT-2's c_attn) which rows of it they are
// (0 = q, 1 = k, 2 = v; the A they share is q's lora_A, the whole tensor). Conv1D modules
// (GPT-2's) keep their adapters as nn.Linear's, [r, in] and [out, r], as ours.
struct PeftTensor {
  std::string key;
  int part = -1;  // -1: the whole tensor
};
PeftTensor peft_tensor(const Architecture& arch, const std::string& name) {
  const auto [module, which] = split_lora_name(name);
  const HfTensorName hf = arch.hf_name(module + ".weight");
  const std::string suffix = ".weight";
  // PEFT keeps DoRA's magnitude and an embedding's adapter as parameters ("<module>.lora_magnitude_vector",
  // "<module>.lora_embedding_A"), without ".weight".
  const bool parameter = which == "lora_magnitude_vector" || which == "lora_embedding_A" || which == "lora_embedding_B";
  PeftTensor out{"base_model.model." + hf.name.substr(0, hf.name.size() - suffix.size()) + "." + which +
                 (parameter ? "" : ".weight")};
  if (hf.layout == WeightLayout::fused_qkv && which != "lora_A") out.part = hf.part;
  return out;
}

// The rows [first, first + count) of a fused q, k, v tensor that are a part's; the whole has
// q + 2 kv rows.
std::pair<int64_t, int64_t> fused_rows(const ModelShape& s, int part) {
  const int64_t q = s.n_heads * s.head_size(), kv = s.n_kv_heads * s.head_size();
  return part == 0 ? std::pair{int64_t{0}, q} : std::pair{q + (part - 1) * kv, kv};
}
int64_t fused_total_rows(const ModelShape& s) { return (s.n_heads + 2 * s.n_kv_heads) * s.head_size(); }

bool is_token_rows(const std::string& name);

// The LoRA tensors among the adapter's parameters (not the trained copies of whole modules nor
// trained token rows).
std::vector<std::pair<std::string, torch::Tensor>> lora_tensors(CausalLM& model) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (auto& [name, tensor] : model->adapter_parameters())
    if (!is_trained_copy(name) && !is_token_rows(name)) out.emplace_back(name, tensor);
  return out;
}

// Trained token rows ("embed_tokens.trainable_tokens_delta") and where PEFT keeps them:
// base_model.model.<HF module>.token_adapter.trainable_tokens_delta.
bool is_token_rows(const std::string& name) { return split_lora_name(name).second == "trainable_tokens_delta"; }
std::string peft_token_rows_key(const ModelShape& shape, const std::string& name) {
  return "base_model.model." + hf_module_name(shape, split_lora_name(name).first) + ".token_adapter.trainable_tokens_delta";
}

// The resolution of what trains beside the adapters, as modules_to_save.h gives it.
TrainedModules trained_modules(const LoraTargets& t) { return {t.trained, t.untie_head, t.embedding_rows, t.head_rows}; }

// Whether the model trains one copy of its tied embedding, which serves as its head too
// (modules_to_save with ensure_weight_tying).
bool tied_trained_embedding(CausalLM& model) {
  const LoraTargets& t = model->lora_targets();
  return model->shape().tie_embeddings && std::find(t.trained.begin(), t.trained.end(), "embed_tokens") != t.trained.end();
}
constexpr const char* kPeftPrefix = "base_model.model.";

bool key_ends_with(const std::string& key, const std::string& suffix) {
  return key.size() >= suffix.size() && key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Where PEFT keeps a tensor of the model's own that trains (a module trained whole, a trained
// bias) by its HF name: base_model.model.<HF name>, except the bias of a module with an adapter,
// which is its base layer's (PEFT's bias "all" / "lora_only": "...q_proj.base_layer.bias").
TensorKey peft_trained_key(CausalLM& model) {
  const Architecture& arch = architecture(model->shape().arch);
  std::set<std::string> adapted;  // HF modules with an adapter
  for (const auto& [name, tensor] : lora_tensors(model)) {
    const std::string weight = arch.hf_name(split_lora_name(name).first + ".weight").name;
    adapted.insert(weight.substr(0, weight.rfind('.')));
  }
  return [adapted](const std::string& hf_name) {
    const std::string module = hf_name.substr(0, hf_name.rfind('.'));
    return kPeftPrefix + (key_ends_with(hf_name, ".bias") && adapted.count(module) ? module + ".base_layer.bias" : hf_name);
  };
}

// A run's PiSSA / OLoRA adapter (A, B, with A0 and B0 subtracted) as PEFT converts one to plain
// LoRA (save_pretrained's path_initial_model_for_weight_conversion): rank 2r, A' = [A; -A0],
// B' = [B, B0], the scale kept (alpha doubled, or times sqrt(2) with rsLoRA).
bool converted_to_plain_lora(CausalLM& model) { return starts_from_factors(model->lora().init); }
torch::Tensor plain_lora_tensor(CausalLM& model, const std::string& name, const torch::Tensor& t,
                                const torch::OrderedDict<std::string, torch::Tensor>& buffers) {
  if (!converted_to_plain_lora(model)) return t;
  const auto [module, which] = split_lora_name(name);
  const torch::Tensor* first = buffers.find(module + (which == "lora_A" ? ".lora_A0" : ".lora_B0"));
  GANPO_ASSERT(first != nullptr, "no first values of " + name);
  return which == "lora_A" ? torch::cat({t, -first->to(t.scalar_type())}, 0) : torch::cat({t, first->to(t.scalar_type())}, 1);
}
void double_the_rank(nlohmann::json& config, bool rslora) {
  const double alpha_factor = rslora ? std::sqrt(2.0) : 2.0;
  config["r"] = config["r"].get<int64_t>() * 2;
  config["lora_alpha"] = config["lora_alpha"].get<double>() * alpha_factor;
  for (auto& [key, r] : config["rank_pattern"].items()) r = r.get<int64_t>() * 2;
  for (auto& [key, alpha] : config["alpha_pattern"].items()) alpha = alpha.get<double>() * alpha_factor;
}

// PEFT's PiSSA / OLoRA folder loaded as PEFT loads it: each adapted weight becomes the residual
// of the base (CausalLMImpl::subtract_initial_adapters), the adapters then hold their trained
// values, and the model with its adapters off is that residual model.
void subtract_initial_adapters(CausalLM& model, const std::string& config_path) {
  const std::string& init = model->lora().residual_init;
  const LoraTargets& targets = model->lora_targets();
  const Architecture& arch = architecture(model->shape().arch);
  auto fail = [&](const std::string& what) { throw ModelFileError(config_path + ": init_lora_weights \"" + init + "\" " + what); };
  if (init == "olora" && arch.hf_name("layers.0.mlp.up_proj.weight").layout != WeightLayout::same)
    fail("on " + std::string(arch.hf_class) + "'s Conv1D modules: PEFT's OLoRA factors their transposed weights, which "
         "is not a LoRA of them; merge the adapter with PEFT and load the merged folder");
  if (targets.adapts_head() && targets.untie_head)
    fail("with an adapter on the output head, which is the token embedding: PEFT would change the embedding too; "
         "merge the adapter with PEFT and load the merged folder");
  model->subtract_initial_adapters(init);
}

}  // namespace

std::string peft_adapter_unsupported(CausalLM& model) {
  if (model->lora().r == 0) return "the model has no LoRA adapters";
  if (!model->lora().residual_init.empty())
    return "its base weights are the residual of a " + model->lora().residual_init + " adapter, not a model folder's";
  const Architecture& arch = architecture(model->shape().arch);
  if (model->lora_targets().shared_qkv) return "";
  for (const auto& [name, tensor] : lora_tensors(model)) {
    const std::string module = split_lora_name(name).first;
    if (arch.hf_name(module + ".weight").layout != WeightLayout::fused_qkv) continue;
    const std::string path = hf_projection_path(arch.family, module.substr(module.rfind('.') + 1));
    return std::string(arch.hf_class) + " keeps q, k and v in one module (" + path +
           "), where a PEFT adapter adapts all three with one A: target " + path.substr(path.rfind('.') + 1) +
           " (or all-linear) for an adapter folder; the merged checkpoint holds these separate adapters";
  }
  return "";
}

void save_peft_adapter(const std::string& dir, CausalLM& model, const std::string& base_model) {
  const std::string why = peft_adapter_unsupported(model);
  if (!why.empty()) throw Error("cannot write a PEFT adapter folder: " + why);
  const Architecture& arch = architecture(model->shape().arch);
  // Each PEFT tensor once, in the order of our parameters; the parts of a fused one stacked by rows.
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  std::map<std::string, std::vector<std::pair<int, torch::Tensor>>> parts;
  const auto buffers = model->named_buffers();
  for (const auto& [name, tensor] : lora_tensors(model)) {
    const PeftTensor pt = peft_tensor(arch, name);
    const torch::Tensor t = plain_lora_tensor(model, name, tensor.detach().to(torch::kFloat32), buffers);
    if (pt.part < 0) {
      tensors.emplace_back(pt.key, t);
      continue;
    }
    if (parts.find(pt.key) == parts.end()) tensors.emplace_back(pt.key, torch::Tensor());
    parts[pt.key].emplace_back(pt.part, t);
  }
  for (auto& [key, t] : tensors) {
    if (t.defined()) continue;
    auto& pieces = parts[key];
    std::sort(pieces.begin(), pieces.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    GANPO_ASSERT(pieces.size() == 3, "q, k and v of " + key);
    t = torch::cat({pieces[0].second, pieces[1].second, pieces[2].second}, 0);
  }
  // modules_to_save: each trained copy under its module's HF name, as PEFT saves its copies
  // (and the tied head's once more, as PEFT with ensure_weight_tying does); trained biases
  // likewise, an adapted module's as its base layer's.
  const TensorKey trained_key = peft_trained_key(model);
  for (const auto& [name, tensor] : trained_copies_state(model)) tensors.emplace_back(trained_key(name), tensor.to(torch::kFloat32));
  // trainable_token_indices: each layer's trained rows (a tied head's follow the embedding's, unsaved as in PEFT).
  for (const auto& [name, tensor] : model->adapter_parameters())
    if (is_token_rows(name)) tensors.emplace_back(peft_token_rows_key(model->shape(), name), tensor.detach().to(torch::kFloat32));
  if (tied_trained_embedding(model))
    tensors.emplace_back(std::string(kPeftPrefix) + "lm_head.weight", model->head_weight().detach().to(torch::kFloat32));
  save_safetensors((fs::path(dir) / kAdapterWeights).string(), tensors, {{"format", "pt"}});
  const LoraSpec& spec = model->lora();
  // PEFT adapts GPT-2's Conv1D modules with fan_in_fan_out (it sets it whatever the file says).
  bool conv1d = false;
  for (const auto& [name, tensor] : lora_tensors(model))
    conv1d = conv1d || arch.hf_name(split_lora_name(name).first + ".weight").layout != WeightLayout::same;
  // r, lora_alpha, target_modules, layers_to_transform, rank_pattern, alpha_pattern: the modules
  // and ranks as PEFT picks them.
  nlohmann::json config = peft_target_config(model->shape(), model->lora_targets());
  if (converted_to_plain_lora(model)) double_the_rank(config, spec.rslora);
  config.update({
      {"peft_type", "LORA"},
      {"task_type", "CAUSAL_LM"},
      {"lora_dropout", spec.dropout},
      {"base_model_name_or_path", base_model},
      {"bias", spec.bias},
      {"fan_in_fan_out", conv1d},
      {"inference_mode", true},
      {"init_lora_weights", true},
      {"use_rslora", spec.rslora},
      {"use_dora", spec.dora},
      {"modules_to_save", model->lora_targets().trained.empty()
                              ? nlohmann::json(nullptr)
                              : nlohmann::json(peft_modules_to_save(model->shape(), trained_modules(model->lora_targets())))},
      {"trainable_token_indices", peft_trainable_token_indices(model->shape(), trained_modules(model->lora_targets()))},
      // (an adapted embedding or head whose other table stays the original: PEFT would tie them on reload)
      {"ensure_weight_tying", spec.ensure_weight_tying && !model->lora_targets().adapts_embedding() &&
                                  !model->lora_targets().adapts_head()},
      {"revision", nullptr},
  });
  write_json_file((fs::path(dir) / kAdapterConfig).string(), config);
}

bool is_peft_adapter_folder(const std::string& dir) {
  const fs::path d(dir);
  const bool whole_model = fs::exists(d / "config.json") &&
                           (fs::exists(d / "model.safetensors") || fs::exists(d / "model.safetensors.index.json"));
  return fs::is_regular_file(d / kAdapterConfig) && !whole_model;
}

PeftAdapterConfig read_peft_adapter_config(const std::string& dir) {
  const std::string path = (fs::path(dir) / kAdapterConfig).string();
  const nlohmann::ordered_json j = read_ordered_json_file(path);  // rank_pattern's first match wins, in the file's order
  auto fail = [&](const std::string& what) { throw ModelFileError(path + ": " + what); };
  if (!j.is_object()) fail("must be a JSON object as PEFT writes it");
  if (json_nested_deeper_than(j, 16)) fail("nests deeper than any adapter config; the file is damaged");  // copies recurse
  if (!j.contains("peft_type") || j["peft_type"] != "LORA") fail("peft_type must be \"LORA\"; other PEFT methods are not supported");
  // bias: which biases trained with the adapter (their trained values are in the weights file).
  if (j.contains("bias") && !j["bias"].is_null()) {
    const auto& bias = j["bias"];
    if (!bias.is_string() || (bias != "none" && bias != "all" && bias != "lora_only"))
      fail("\"bias\" is " + bias.dump() + "; PEFT's LoRA takes \"none\", \"all\" or \"lora_only\"");
  }
  // Settings that train or change modules other than the projections' adapters: applying the
  // adapter without them would compute another model.
  for (const char* key : {"target_parameters", "layer_replication"})
    if (j.contains(key) && !j[key].is_null() && !j[key].empty())
      fail(std::string(key) + " is not supported; merge the adapter with PEFT and load the merged folder");
  // PEFT's LoRA variants and options that change what a layer computes (PEFT 0.20 writes each key,
  // off, into every adapter_config.json). PEFT turns a variant on by the value's truth in Python
  // (true, a non-zero number, a non-empty string, list or object), except MonteCLoRA and KaSA,
  // whose configs PEFT builds from any object, {} included. VeLoRA changes only the backward pass
  // and is accepted; fan_in_fan_out PEFT sets from the layer's kind whatever the file says.
  const auto truthy = [](const nlohmann::ordered_json& v) {
    if (v.is_null()) return false;
    if (v.is_boolean()) return v.get<bool>();
    if (v.is_number()) return v.get<double>() != 0.0;
    return !v.empty();  // string, array, object
  };
  auto unsupported_variant = [&](const char* key) {
    fail(std::string(key) + " is set and this LoRA variant is not supported; merge the adapter with PEFT and load the "
                            "merged folder");
  };
  for (const char* key : {"lora_bias", "use_qalora", "use_bdlora", "alora_invocation_tokens", "arrow_config"})
    if (j.contains(key) && truthy(j[key])) unsupported_variant(key);
  for (const char* key : {"monteclora_config", "kasa_config"})
    if (j.contains(key) && !j[key].is_null()) unsupported_variant(key);
  // Ranks and alphas up to kMaxLoraRank: beyond any model's width, and a rank the file's tensors
  // then refuse is not first allocated.
  const auto rank_ok = [](const nlohmann::ordered_json& v) {
    return v.is_number_integer() && v.get<int64_t>() > 0 && v.get<int64_t>() <= kMaxLoraRank;
  };
  const auto alpha_ok = [](const nlohmann::ordered_json& v) {
    return v.is_number() && v.get<double>() > 0 && v.get<double>() <= kMaxLoraRank * 1024.0;
  };
  if (!j.contains("r") || !rank_ok(j["r"])) fail("\"r\" must be a positive integer up to " + std::to_string(kMaxLoraRank));
  if (!j.contains("lora_alpha") || !alpha_ok(j["lora_alpha"])) fail("\"lora_alpha\" must be a positive, finite number");
  PeftAdapterConfig out;
  out.spec.from_adapter_file = true;
  out.spec.r = j["r"].get<int64_t>();
  out.spec.alpha = j["lora_alpha"].get<double>();
  // PEFT scales by alpha / sqrt(r) when use_rslora is true in Python's sense.
  if (j.contains("use_rslora")) out.spec.rslora = truthy(j["use_rslora"]);
  if (j.contains("use_dora")) out.spec.dora = truthy(j["use_dora"]);
  // modules_to_save: module names (PEFT matches each against the end of every module's name).
  if (j.contains("modules_to_save") && !j["modules_to_save"].is_null()) {
    if (!j["modules_to_save"].is_array()) fail("\"modules_to_save\" must list module names");
    for (const auto& name : j["modules_to_save"]) {
      if (!name.is_string() || name.get<std::string>().empty()) fail("\"modules_to_save\" must list module names");
      out.spec.modules_to_save.push_back(name.get<std::string>());
    }
  }
  if (j.contains("ensure_weight_tying")) out.spec.ensure_weight_tying = truthy(j["ensure_weight_tying"]);
  if (j.contains("bias") && j["bias"].is_string()) out.spec.bias = j["bias"].get<std::string>();
  // init_lora_weights: how PEFT drew the adapters first, which matters where it also changed the
  // base weights (PEFT does that again when it loads the folder): PiSSA and OLoRA are computed
  // again here; a randomised SVD, CorDA's data and LoftQ's quantisation cannot be.
  if (j.contains("init_lora_weights") && j["init_lora_weights"].is_string()) {
    const std::string init = j["init_lora_weights"].get<std::string>();
    std::string lower = init;
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
    const auto convert = [&](const std::string& what) {
      fail("init_lora_weights \"" + init + "\" (" + what + ") changed the base model's weights in a way that cannot be "
           "computed again here; convert the adapter to plain LoRA with PEFT (save_pretrained's "
           "path_initial_model_for_weight_conversion) or merge it with PEFT and load the merged folder");
    };
    if (init.rfind("pissa_niter_", 0) == 0) convert("PiSSA by a randomised SVD");
    if (init.rfind("corda", 0) == 0) convert("CorDA, from the training data's activations");
    if (init == "loftq") convert("LoftQ, a quantised base");
    if (init == "pissa" || lower == "olora")
      out.spec.residual_init = init == "pissa" ? "pissa" : "olora";
    else if (init != "gaussian" && init != "eva" && init != "orthogonal" && lower != "mica" && init != "lora_ga")
      fail("init_lora_weights \"" + init + "\" is not one of PEFT's LoRA initialisations");
  }
  // PEFT saves the head's tensor beside the embedding's copy where ensure_weight_tying tied them
  // (and lists the embedding alone in modules_to_save, by a name that need not say so).
  const fs::path weights = fs::path(dir) / kAdapterWeights;
  if (out.spec.ensure_weight_tying && fs::is_regular_file(weights))
    out.spec.head_saved = SafetensorsReader(weights.string()).find(std::string(kPeftPrefix) + "lm_head.weight") != nullptr;
  // trainable_token_indices: token ids of the input embedding, or layer name -> token ids.
  if (j.contains("trainable_token_indices") && !j["trainable_token_indices"].is_null()) {
    const auto& v = j["trainable_token_indices"];
    const auto ids = [&](const nlohmann::ordered_json& list) {
      std::vector<int64_t> out_ids;
      if (!list.is_array()) fail("\"trainable_token_indices\" must list token ids, or map layer names to lists of them");
      for (const auto& id : list) {
        if (!id.is_number_integer()) fail("\"trainable_token_indices\" must list token ids, or map layer names to lists of them");
        out_ids.push_back(id.get<int64_t>());
      }
      return out_ids;
    };
    if (v.is_object()) {
      for (const auto& [name, list] : v.items()) out.spec.trainable_tokens.emplace_back(name, ids(list));
    } else if (!v.empty()) {
      out.spec.trainable_tokens.emplace_back("", ids(v));
    }
  }
  if (j.contains("lora_dropout") && !j["lora_dropout"].is_null() && !j["lora_dropout"].is_number())
    fail("\"lora_dropout\" must be a number");
  out.spec.dropout = j.contains("lora_dropout") && j["lora_dropout"].is_number() ? j["lora_dropout"].get<double>() : 0.0;
  // Module names, or one string: "all-linear" (in any case) or a regular expression. (In a list
  // "all-linear" is a module name to PEFT, which no module has.)
  const auto names = [&](const char* key, std::vector<std::string>& list, std::string& regex) {
    const auto& v = j[key];
    if (v.is_string()) {
      std::string text = v.get<std::string>();
      std::string lower = text;
      std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
      if (std::string(key) == "target_modules" && lower == "all-linear")
        list = {lower};
      else
        regex = text;
      return;
    }
    if (!v.is_array()) fail(std::string("\"") + key + "\" must list module names or be a regular expression");
    for (const auto& t : v) {
      if (!t.is_string()) fail(std::string("\"") + key + "\" must list module names");
      const std::string name = t.get<std::string>();
      if (name != "all-linear" && std::find(list.begin(), list.end(), name) == list.end()) list.push_back(name);
    }
  };
  if (!j.contains("target_modules") || j["target_modules"].is_null() || (j["target_modules"].is_array() && j["target_modules"].empty()))
    fail("\"target_modules\" must list the adapted projections");
  names("target_modules", out.spec.targets, out.spec.target_regex);
  if (j.contains("exclude_modules") && !j["exclude_modules"].is_null()) names("exclude_modules", out.spec.exclude, out.spec.exclude_regex);
  // layers_to_transform: a layer index or a list; layers_pattern: a name or a list.
  // (An empty list is every layer, as in PEFT; an empty string as layers_pattern, any pattern.)
  const bool layers_given = j.contains("layers_to_transform") && !j["layers_to_transform"].is_null();
  if (layers_given) {
    const auto& v = j["layers_to_transform"];
    if (j["target_modules"].is_string())
      fail("layers_to_transform cannot be used when target_modules is one string (a regular expression or "
           "\"all-linear\"); PEFT refuses it too");
    std::set<int64_t> seen;
    for (const auto& layer : v.is_array() ? v : nlohmann::ordered_json::array({v})) {
      if (!layer.is_number_integer() || layer.get<int64_t>() < 0) fail("\"layers_to_transform\" must be a layer index or a list of them");
      if (seen.insert(layer.get<int64_t>()).second) out.spec.layers.push_back(layer.get<int64_t>());
    }
  }
  if (j.contains("layers_pattern") && !j["layers_pattern"].is_null() && j["layers_pattern"] != "") {
    const auto& v = j["layers_pattern"];
    for (const auto& name : v.is_array() ? v : nlohmann::ordered_json::array({v})) {
      if (!name.is_string()) fail("\"layers_pattern\" must be a name or a list of names");
      out.spec.layers_pattern.push_back(name.get<std::string>());
    }
    if (!out.spec.layers_pattern.empty() && !layers_given)
      fail("layers_pattern is set without layers_to_transform (PEFT refuses it too)");
  }
  // rank_pattern / alpha_pattern: pattern -> rank / alpha, in the file's order.
  for (const char* key : {"rank_pattern", "alpha_pattern"}) {
    if (!j.contains(key) || j[key].is_null()) continue;
    if (!j[key].is_object()) fail(std::string("\"") + key + "\" must map module name patterns to values");
    const bool rank = std::string(key) == "rank_pattern";
    for (const auto& [pattern, value] : j[key].items()) {
      if (rank ? !rank_ok(value) : !alpha_ok(value))
        fail(std::string(key) + " gives \"" + pattern + "\" " + value.dump() + "; it must be a positive " +
             (rank ? "integer up to " + std::to_string(kMaxLoraRank) : std::string("finite number")));
      if (rank)
        out.spec.rank_pattern.emplace_back(pattern, value.get<int64_t>());
      else
        out.spec.alpha_pattern.emplace_back(pattern, value.get<double>());
    }
  }
  const std::string base = j.contains("base_model_name_or_path") && j["base_model_name_or_path"].is_string()
                               ? j["base_model_name_or_path"].get<std::string>()
                               : std::string();
  if (base.empty()) fail("base_model_name_or_path is empty; set it to the folder of the model the adapter was trained on");
  fs::path base_path(base);
  if (base_path.is_relative()) base_path = fs::path(dir) / base_path;
  if (!fs::is_directory(base_path))
    fail("base_model_name_or_path " + base + " is not a folder here (a Hub id cannot be downloaded); download the base "
         "model and set base_model_name_or_path to its folder");
  out.base_model = base_path.lexically_normal().string();
  if (is_peft_adapter_folder(out.base_model))
    fail("base_model_name_or_path " + base + " is itself an adapter folder; point it to the full model the adapter was "
         "trained on");
  // PEFT adapts what some name picks and ignores the names no module has, unless none has one.
  // (What a regular expression, layers and exclusions leave is checked where the adapters are
  // put on the model.)
  out.base_shape = read_model_config(out.base_model);
  if (out.spec.target_regex.empty()) {
    const std::vector<std::string> picked = peft_picked_names(out.base_shape, out.spec.targets);
    if (picked.empty())
      fail("target_modules names no projection of the base model " + out.base_model +
           (out.spec.targets.empty() ? std::string() : " (e.g. \"" + out.spec.targets.front() + "\")"));
    out.spec.targets = picked;
  }
  return out;
}

void load_peft_adapter_weights(CausalLM& model, const std::string& dir) {
  const std::string path = (fs::path(dir) / kAdapterWeights).string();
  if (!model->lora().residual_init.empty()) subtract_initial_adapters(model, (fs::path(dir) / kAdapterConfig).string());
  const auto file = load_safetensors(path);
  const Architecture& arch = architecture(model->shape().arch);
  torch::NoGradGuard guard;
  std::set<std::string> used;
  for (auto& [name, tensor] : lora_tensors(model)) {
    const PeftTensor pt = peft_tensor(arch, name);
    auto it = file.tensors.find(pt.key);
    if (it == file.tensors.end())
      throw ModelFileError(path + " has no tensor \"" + pt.key + "\"; the adapter does not match adapter_config.json or the base model");
    // A part of a fused tensor: its rows of the stacked q, k and v.
    std::vector<int64_t> needed = tensor.sizes().vec();
    if (pt.part >= 0) needed[0] = fused_total_rows(model->shape());
    if (it->second.sizes().vec() != needed)
      throw ModelFileError(path + ": tensor \"" + pt.key + "\" has shape " + c10::str(it->second.sizes()) + " but the base model needs " +
                           c10::str(needed));
    const auto [first, rows] = pt.part >= 0 ? fused_rows(model->shape(), pt.part) : std::pair{int64_t{0}, tensor.size(0)};
    tensor.copy_(it->second.narrow(0, first, rows));
    used.insert(pt.key);
  }
  used.merge(load_trained_copies(model, file.tensors, peft_trained_key(model), path));
  // bias "all" with modules_to_save: PEFT saves every tensor named bias, so a module trained
  // whole brings its original's ("<module>.original_module.bias", frozen) and its copy's once
  // more ("<module>.modules_to_save.bias", the copy's bias read above).
  // (Only for a module trained whole, whose copy's weight the file holds too: another such key
  // is none PEFT writes, and is refused below as unused.)
  if (model->lora().bias == "all")
    for (const auto& [key, tensor] : file.tensors)
      for (const std::string infix : {".original_module.bias", ".modules_to_save.bias"}) {
        const std::string module = key_ends_with(key, infix) ? key.substr(0, key.size() - infix.size()) : std::string();
        if (!module.empty() && used.count(module + ".bias") && used.count(module + ".weight")) used.insert(key);
      }
  for (auto& [name, tensor] : model->adapter_parameters()) {
    if (!is_token_rows(name)) continue;
    const std::string key = peft_token_rows_key(model->shape(), name);
    auto it = file.tensors.find(key);
    if (it == file.tensors.end())
      throw ModelFileError(path + " has no tensor \"" + key + "\" for the trainable_token_indices of adapter_config.json; "
                           "the adapter does not match it");
    if (it->second.sizes() != tensor.sizes())
      throw ModelFileError(path + ": tensor \"" + key + "\" has shape " + c10::str(it->second.sizes()) + " but " +
                           std::to_string(tensor.size(0)) + " token ids of width " + std::to_string(tensor.size(1)) + " need " +
                           c10::str(tensor.sizes()));
    tensor.copy_(it->second);
    used.insert(key);
  }
  // An adapted embedding's or head's base weight, which PEFT saves beside its adapter
  // (save_embedding_layers "auto") and loads into the model: so do we (it is the base model's own
  // unless resized or edited; a head tied to the embedding shares its storage, as in PEFT).
  const LoraTargets& targets = model->lora_targets();
  for (const auto& [adapted, module] : {std::pair{targets.adapts_embedding(), "embed_tokens"}, {targets.adapts_head(), "lm_head"}}) {
    const std::string key = kPeftPrefix + hf_module_name(model->shape(), module) + ".base_layer.weight";
    const auto base = file.tensors.find(key);
    if (!adapted || base == file.tensors.end()) continue;
    torch::Tensor weight = model->named_parameters()[std::string(module) + ".weight"];
    if (base->second.sizes() != weight.sizes())
      throw ModelFileError(path + ": tensor \"" + key + "\" has shape " + c10::str(base->second.sizes()) + " but the base "
                           "model's " + (module == std::string("lm_head") ? "output head" : "token embedding") + " is " +
                           c10::str(weight.sizes()) + "; the adapter was trained on a model with another vocabulary");
    weight.copy_(base->second);
    used.insert(key);
  }
  // The tied head's copy, which PEFT saves too: the embedding's, or the file is not one model.
  const auto head = file.tensors.find(std::string(kPeftPrefix) + "lm_head.weight");
  if (tied_trained_embedding(model) && head != file.tensors.end()) {
    const torch::Tensor ours = model->head_weight().detach().cpu();
    if (head->second.sizes() != ours.sizes() || !torch::equal(head->second, ours.to(head->second.scalar_type())))
      throw ModelFileError(path + ": \"" + head->first + "\" differs from the trained embedding it is tied to "
                           "(ensure_weight_tying); the file is damaged or was edited");
    used.insert(head->first);
  }
  if (used.size() != file.tensors.size()) {
    std::string unused;
    for (const auto& [key, tensor] : file.tensors)
      if (!used.count(key)) unused = key;
    throw ModelFileError(path + " has " + std::to_string(file.tensors.size() - used.size()) +
                         " tensor(s) no adapted projection or module to save uses (e.g. \"" + unused +
                         "\"): adapters on other modules than the attention and MLP projections, the token "
                         "embedding and the output head are not supported, "
                         "or the adapter does not match adapter_config.json; merge it with PEFT and load the merged folder");
  }
}

}  // namespace ganpo
