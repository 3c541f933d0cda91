#include "core/model/modules_to_save.h"

#include <algorithm>
#include <set>

#include "core/error.h"
#include "core/model/architectures.h"
#include "core/model/lora_targets.h"

namespace ganpo {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// trainable_token_indices as PEFT's set_additional_trainable_modules applies them: a name picks
// the embedding or the head by the end of its name; a tied head follows the embedding's rows
// unless it has other indices of its own (then, as with a head given rows alone, it is untied).
void resolve_token_rows(const ModelShape& shape, const ModulesToSaveSettings& settings, const std::string& modules_key,
                        const std::set<std::string>& whole, TrainedModules& out) {
  if (settings.token_rows.empty()) return;
  const std::string key = settings.key_prefix + "trainable_token_indices";
  const std::string embedding = hf_module_name(shape, "embed_tokens");
  const std::vector<int64_t>* embedding_rows = nullptr;
  const std::vector<int64_t>* head_rows = nullptr;
  for (const auto& [name, rows] : settings.token_rows) {
    const bool is_embedding = name.empty() || ends_with(embedding, name) || (settings.ours_too && name == "embed_tokens");
    const bool is_head = !is_embedding && ends_with(std::string("lm_head"), name);
    if (!is_embedding && !is_head)
      throw ConfigError(key + " names \"" + name + "\", which is neither the token embedding (" + embedding +
                        ") nor the output head (lm_head) of this " + shape.arch + " model");
    if (std::find(settings.names.begin(), settings.names.end(), name) != settings.names.end() ||
        whole.count(is_embedding ? "embed_tokens" : "lm_head"))
      throw ConfigError(key + " and " + modules_key + " both train " + (is_embedding ? embedding : std::string("lm_head")) +
                        "; train it whole (modules_to_save) or some of its rows (trainable_token_indices), not both");
    std::set<int64_t> seen;
    for (const int64_t id : rows) {
      if (id < 0 || id >= shape.vocab_size)
        throw ConfigError(key + " lists token " + std::to_string(id) + ", but the vocabulary has " +
                          std::to_string(shape.vocab_size) + " tokens (0 to " + std::to_string(shape.vocab_size - 1) + ")");
      // (An adapter file's repeat is taken as PEFT takes it: its rows get the same gradients and
      // stay equal, index_copy writes one of them.)
      if (!seen.insert(id).second && settings.ours_too)
        throw ConfigError(key + " lists token " + std::to_string(id) + " twice");
    }
    if (rows.empty()) throw ConfigError(key + " lists no token of " + (is_embedding ? embedding : std::string("lm_head")));
    (is_embedding ? embedding_rows : head_rows) = &rows;
  }
  if (shape.tie_embeddings && embedding_rows && whole.count("lm_head"))
    throw ConfigError(key + " trains rows of the embedding, which the head is tied to, while " + modules_key +
                      " trains the head whole; give the head its own rows (trainable_token_indices by layer) or train "
                      "both whole");
  const bool mismatch = shape.tie_embeddings && embedding_rows && head_rows && *embedding_rows != *head_rows;
  if (mismatch && settings.ensure_weight_tying)
    throw ConfigError(key + " gives the tied embedding and head different tokens, which ensure_weight_tying cannot keep "
                      "tied; give both the same tokens or set ensure_weight_tying false");
  if (embedding_rows) out.embedding_rows = *embedding_rows;
  // A tied head follows the embedding's rows (its own listing of the same rows included).
  const bool head_follows = shape.tie_embeddings && embedding_rows && !mismatch;
  if (head_rows && !head_follows) {
    out.head_rows = *head_rows;
    if (shape.tie_embeddings) out.untie_head = true;
  }
}

}  // namespace

std::vector<std::string> with_parents(const std::string& name) {
  std::vector<std::string> out = {name};
  for (size_t dot = name.rfind('.'); dot != std::string::npos && dot > 0; dot = name.rfind('.', dot - 1))
    out.push_back(name.substr(0, dot));
  return out;
}

std::vector<std::string> model_modules(const ModelShape& s) {
  std::vector<std::string> out = {"embed_tokens"};
  if (s.positions == PositionKind::learned) out.push_back("embed_positions");
  for (int64_t i = 0; i < s.n_layers; ++i) {
    const std::string layer = "layers." + std::to_string(i) + ".";
    out.push_back(layer + "input_layernorm");
    for (const char* p : {"q_proj", "k_proj", "v_proj", "o_proj"}) out.push_back(layer + "self_attn." + p);
    if (s.qk_norm) {
      out.push_back(layer + "self_attn.q_norm");
      out.push_back(layer + "self_attn.k_norm");
    }
    out.push_back(layer + "post_attention_layernorm");
    if (s.sandwich_norms) {
      out.push_back(layer + "pre_feedforward_layernorm");
      out.push_back(layer + "post_feedforward_layernorm");
    }
    if (s.mlp != MlpKind::gelu_tanh) out.push_back(layer + "mlp.gate_proj");
    out.push_back(layer + "mlp.up_proj");
    out.push_back(layer + "mlp.down_proj");
  }
  out.push_back("norm");
  if (!s.tie_embeddings) out.push_back("lm_head");
  return out;
}

bool is_peft_tying_name(const std::string& name) {
  const std::string last = name.substr(name.rfind('.') + 1);  // (npos + 1 = 0: the whole name)
  return last == "embed_tokens" || last == "lm_head";
}

std::string hf_module_name(const ModelShape& shape, const std::string& module) {
  const std::string suffix = ".weight";
  const std::string hf = architecture(shape.arch).hf_name(module + suffix).name;
  return hf.substr(0, hf.size() - suffix.size());
}

TrainedModules resolve_modules_to_save(const ModelShape& shape, const ModulesToSaveSettings& settings,
                                       const LoraTargets& adapted) {
  TrainedModules out;
  if (settings.ensure_weight_tying && !shape.tie_embeddings && settings.ours_too)
    throw ConfigError(settings.key_prefix + "ensure_weight_tying is true, but this model's output head is not tied to its "
                      "token embedding (tie_word_embeddings is false); set it false");
  if (settings.names.empty() && settings.token_rows.empty()) return out;
  const std::string key = settings.key_prefix + "modules_to_save";
  std::vector<std::string> modules = model_modules(shape);
  // The tied head is a module of the Hugging Face model (lm_head) though not a weight of its own.
  if (shape.tie_embeddings) modules.push_back("lm_head");
  std::set<std::string> picked;
  for (const std::string& name : settings.names) {
    bool any = false;
    for (const std::string& m : modules) {
      bool hit = false;
      for (const std::string& key_name : with_parents(hf_module_name(shape, m)))
        hit = hit || ends_with(key_name, name);
      if (settings.ours_too)
        for (const std::string& key_name : with_parents(m)) hit = hit || ends_with(key_name, name);
      if (!hit) continue;
      picked.insert(m);
      any = true;
    }
    if (!any && settings.ours_too)
      throw ConfigError((settings.key_prefix.empty() ? "model.lora." + key : key) + " names \"" + name + "\", and no module of this " + shape.arch + " model has a name that ends with it; "
                        "its modules are named like " + hf_module_name(shape, "layers.0.input_layernorm") + ", " +
                        hf_module_name(shape, "norm") + ", lm_head, or by our names: norm, embed_tokens");
  }
  // Our modules that are one module of the Hugging Face model (GPT-2's c_attn: q_proj, k_proj and
  // v_proj) are picked together: PEFT trains and saves that module whole.
  std::set<std::string> picked_hf;
  for (const std::string& m : picked) picked_hf.insert(hf_module_name(shape, m));
  for (const std::string& m : modules)
    if (picked_hf.count(hf_module_name(shape, m))) picked.insert(m);
  const bool tied_pick = shape.tie_embeddings && (picked.count("embed_tokens") || picked.count("lm_head"));
  // ensure_weight_tying, as PEFT's _check_tied_modules reads an adapter file: it ties only where a
  // name's last part is embed_tokens or lm_head (then the embedding's copy is both, even if no
  // module was picked by that name); with another name (GPT-2's "wte") the head stays the
  // original, untied, unless the file holds the head's tensor: PEFT saved GPT-2's tied
  // "lm_head" as "transformer.wte" and the head beside it, and loads that tensor into the head.
  // A run's config ties whatever picks the embedding or the head, and lists lm_head in the
  // adapter folder it writes, so that PEFT ties them too.
  const bool tying_name = std::any_of(settings.names.begin(), settings.names.end(), is_peft_tying_name);
  const bool ties_in_file = tying_name || (tied_pick && settings.head_saved);
  const bool tie = settings.ensure_weight_tying && shape.tie_embeddings && (settings.ours_too ? tied_pick : ties_in_file);
  if (tie) {
    // One trained copy, the embedding's, which the head keeps using.
    picked.erase("lm_head");
    picked.insert("embed_tokens");
  }
  out.untie_head = tied_pick && !tie;
  for (const std::string& m : model_modules(shape))
    if (picked.count(m)) out.modules.push_back(m);
  if (picked.count("lm_head") && shape.tie_embeddings && out.untie_head) out.modules.push_back("lm_head");
  resolve_token_rows(shape, settings, key, picked, out);
  if (tie && !out.head_rows.empty())
    throw ConfigError((settings.key_prefix + "ensure_weight_tying") + " keeps the output head tied to the trained copy of "
                      "the embedding (" + key + "), but " + settings.key_prefix + "trainable_token_indices gives the head "
                      "rows of its own; train the head through the embedding's copy (drop its rows) or set "
                      "ensure_weight_tying false");
  // A module both adapted and saved that PEFT's target matching did not leave out (a name that
  // ends a module's name without a dot before it, "proj"): PEFT would train a copy with the
  // adapter inside it, which we cannot reproduce.
  for (const std::string& m : out.modules) {
    const size_t dot = m.rfind('.');
    if (m.rfind("layers.", 0) != 0 || dot == std::string::npos) continue;
    const int64_t layer = std::stoll(m.substr(7, m.find('.', 7) - 7));
    if (adapted.find(layer, m.substr(dot + 1)) != nullptr)
      throw ConfigError(key + " picks " + hf_module_name(shape, m) + " by a name that ends its name (not after a "
                        "dot), and that module also has a LoRA adapter (target_modules); PEFT would train a copy "
                        "with the adapter inside it: name whole modules (\"mlp\", \"q_proj\", which PEFT then "
                        "leaves unadapted) or take it out of target_modules");
  }
  return out;
}

int64_t module_parameter_count(const ModelShape& s, const std::string& module) {
  const int64_t d = s.d_model, hd = s.head_size(), q = s.n_heads * hd, kv = s.n_kv_heads * hd, ff = s.d_ff;
  const std::string leaf = module.substr(module.rfind('.') + 1);
  const int64_t bias = module_bias_size(s, module);
  if (module == "embed_tokens" || module == "lm_head") return s.vocab_size * d;
  if (module == "embed_positions") return s.max_seq_len * d;
  if (leaf == "q_norm" || leaf == "k_norm") return hd + bias;
  if (leaf == "norm" || ends_with(leaf, "layernorm")) return d + bias;
  if (leaf == "q_proj") return d * q + bias;
  if (leaf == "k_proj" || leaf == "v_proj") return d * kv + bias;
  if (leaf == "o_proj") return q * d + bias;
  if (leaf == "gate_proj" || leaf == "up_proj") return d * ff + bias;
  if (leaf == "down_proj") return ff * d + bias;
  return 0;
}

int64_t module_bias_size(const ModelShape& s, const std::string& module) {
  const int64_t d = s.d_model, hd = s.head_size(), q = s.n_heads * hd, kv = s.n_kv_heads * hd, ff = s.d_ff;
  const std::string leaf = module.substr(module.rfind('.') + 1);
  const bool layer_norm = s.norm == NormKind::layer_norm;
  if (leaf == "q_norm" || leaf == "k_norm") return layer_norm ? hd : 0;
  if (leaf == "norm" || ends_with(leaf, "layernorm")) return layer_norm ? d : 0;
  if (leaf == "q_proj") return s.qkv_bias ? q : 0;
  if (leaf == "k_proj" || leaf == "v_proj") return s.qkv_bias ? kv : 0;
  if (leaf == "o_proj") return s.o_bias ? d : 0;
  if (leaf == "gate_proj" || leaf == "up_proj") return s.mlp_bias ? ff : 0;
  if (leaf == "down_proj") return s.mlp_bias ? d : 0;
  return 0;
}

int64_t trained_copy_parameter_count(const ModelShape& shape, const std::vector<std::string>& modules) {
  int64_t count = 0;
  for (const std::string& m : modules) count += module_parameter_count(shape, m);
  return count;
}

nlohmann::json peft_trainable_token_indices(const ModelShape& shape, const TrainedModules& trained) {
  if (trained.embedding_rows.empty() && trained.head_rows.empty()) return nullptr;
  if (trained.head_rows.empty()) return trained.embedding_rows;
  nlohmann::json out = nlohmann::json::object();
  if (!trained.embedding_rows.empty()) out[hf_module_name(shape, "embed_tokens")] = trained.embedding_rows;
  out["lm_head"] = trained.head_rows;
  return out;
}

std::vector<std::string> peft_modules_to_save(const ModelShape& shape, const TrainedModules& trained) {
  std::vector<std::string> out;
  const bool tied_copy = shape.tie_embeddings && !trained.untie_head &&
                         std::find(trained.modules.begin(), trained.modules.end(), "embed_tokens") != trained.modules.end();
  // PEFT (ensure_weight_tying) ties the head to the embedding's copy when lm_head is listed.
  if (tied_copy) out.push_back("lm_head");
  for (const std::string& m : trained.modules) {
    const std::string name = hf_module_name(shape, m);
    if (std::find(out.begin(), out.end(), name) == out.end()) out.push_back(name);
  }
  return out;
}

}  // namespace ganpo
