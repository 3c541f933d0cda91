#include "core/model/lora_targets.h"

#include <algorithm>
#include <map>
#include <set>

#include "core/error.h"
#include "core/model/architectures.h"

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

std::vector<std::string> projections_of(const ModelShape& shape) {
  std::vector<std::string> out;
  for (const auto& p : kProjections)
    if (std::string(p.name) != "gate_proj" || shape.mlp != MlpKind::gelu_tanh) out.push_back(p.name);
  return out;
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

std::string join_names(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

// The family's whole name of a projection's module in one layer, as the HF model names it
// ("model.layers.3.self_attn.q_proj", "transformer.h.3.attn.c_attn").
std::string hf_module(const std::string& family, int64_t layer, const std::string& projection) {
  std::string parent;
  for (const auto& p : kProjections)
    if (projection == p.name) parent = p.parent;
  GANPO_ASSERT(!parent.empty(), "not a projection: " + projection);
  const std::string suffix = ".weight";
  const std::string hf =
      architecture(family).hf_name("layers." + std::to_string(layer) + "." + parent + "." + projection + suffix).name;
  return hf.substr(0, hf.size() - suffix.size());
}

// What one target name picks in a model: projections in every layer, and (whole module names)
// projections in the layers named; by_module_name: those picked through the family's module
// names (or "all-linear"), not ours.
struct Picked {
  std::vector<std::string> every_layer;
  std::map<std::string, std::set<int64_t>> some_layers;
  std::set<std::string> by_module_name;
  bool any() const { return !every_layer.empty() || !some_layers.empty(); }
};

Picked pick(const ModelShape& shape, const std::vector<std::string>& own, const std::string& name) {
  Picked out;
  for (const std::string& p : own)
    if (name == "all-linear" || name == p || picks(name, hf_projection_path(shape.arch, p))) {
      out.every_layer.push_back(p);
      if (name != p) out.by_module_name.insert(p);
    }
  // Whole module names, one layer each, as PEFT writes "all-linear" into adapter_config.json
  // ("transformer.h.0.attn.c_proj").
  for (int64_t layer = 0; !out.any() && name.find('.') != std::string::npos && layer < shape.n_layers; ++layer)
    for (const std::string& p : own)
      if (picks(name, hf_module(shape.arch, layer, p))) {
        out.some_layers[p].insert(layer);
        out.by_module_name.insert(p);
      }
  return out;
}

}  // namespace

bool LoraTargets::has(const std::string& projection) const {
  return std::find(projections.begin(), projections.end(), projection) != projections.end();
}

std::string hf_projection_path(const std::string& family, const std::string& projection) {
  const std::string module = hf_module(family, 0, projection);
  const size_t layer = module.find(".0.");
  GANPO_ASSERT(layer != std::string::npos, "no layer index in " + module);
  return module.substr(layer + 3);
}

LoraTargets resolve_lora_targets(const ModelShape& shape, const std::vector<std::string>& names) {
  const std::vector<std::string> own = projections_of(shape);
  LoraTargets out;
  std::map<std::string, std::set<int64_t>> layers_named;  // by whole module names
  bool qkv_by_module_name = false;
  for (const std::string& name : names) {
    const Picked picked = pick(shape, own, name);
    if (!picked.any()) {
      // The family's own module names where they are not ours (GPT-2's).
      std::vector<std::string> hf;
      for (const std::string& p : own) {
        const std::string path = hf_projection_path(shape.arch, p);
        if (!picks(p, path) && std::find(hf.begin(), hf.end(), path) == hf.end()) hf.push_back(path);
      }
      throw ConfigError("model.lora.target_modules names \"" + name + "\", which this " + shape.arch +
                        " model does not have; its projections are " + join_names(own) +
                        (hf.empty() ? "" : " (Hugging Face's modules: " + join_names(hf) + ")") + ", or write \"all-linear\"");
    }
    for (const std::string& p : picked.every_layer)
      if (!out.has(p)) out.projections.push_back(p);
    for (const auto& [p, layers] : picked.some_layers) layers_named[p].insert(layers.begin(), layers.end());
    for (const char* p : {"q_proj", "k_proj", "v_proj"}) qkv_by_module_name = qkv_by_module_name || picked.by_module_name.count(p) > 0;
  }
  for (const auto& [p, layers] : layers_named) {
    if (out.has(p)) continue;  // also named for every layer
    if (static_cast<int64_t>(layers.size()) != shape.n_layers)
      throw ConfigError("model.lora.target_modules names " + hf_projection_path(shape.arch, p) + " in " +
                        std::to_string(layers.size()) + " of the model's " + std::to_string(shape.n_layers) +
                        " layers; adapters on some layers only are not supported: name it in every layer, or by "
                        "its own name for all (\"" + p + "\")");
    out.projections.push_back(p);
  }
  // Keep a layer's order, whatever the order of the names.
  std::vector<std::string> ordered;
  for (const std::string& p : own)
    if (out.has(p)) ordered.push_back(p);
  out.projections = ordered;
  const bool fused = architecture(shape.arch).hf_name("layers.0.self_attn.q_proj.weight").layout == WeightLayout::fused_qkv;
  out.shared_qkv = fused && qkv_by_module_name && out.has("q_proj") && out.has("k_proj") && out.has("v_proj");
  return out;
}

std::vector<std::string> peft_picked_names(const ModelShape& shape, const std::vector<std::string>& names) {
  const std::vector<std::string> own = projections_of(shape);
  std::vector<std::string> out;
  for (const std::string& name : names)
    if (pick(shape, own, name).any()) out.push_back(name);
  return out;
}

bool is_known_lora_target(const std::string& name) {
  if (name == "all-linear") return true;
  for (const Architecture& arch : architectures()) {
    const ModelShape shape = family_shape(arch);
    for (const std::string& p : projections_of(shape)) {
      const std::string path = hf_projection_path(arch.family, p);
      // Its own name, the end of its path in a layer, or a whole module name ending in that path.
      if (name == p || picks(name, path) || picks(path, name)) return true;
    }
  }
  return false;
}

std::string lora_targets_text(const ModelShape& shape, const LoraTargets& targets) {
  std::string out;
  for (const std::string& p : targets.projections) {
    out += (out.empty() ? "" : ", ") + p;
    if (p == "v_proj" && targets.shared_qkv)
      out += " (one A: PEFT's adapter on " + hf_projection_path(shape.arch, p) + ")";
  }
  return out;
}

std::vector<std::string> peft_target_modules(const ModelShape& shape, const LoraTargets& targets) {
  std::vector<std::string> out;
  const std::vector<std::string> own = projections_of(shape);
  for (const std::string& p : targets.projections) {
    const std::string path = hf_projection_path(shape.arch, p);
    const std::string leaf = path.substr(path.rfind('.') + 1);
    bool shared = false;  // another module with this name that is not adapted
    for (const std::string& other : own)
      if (!targets.has(other) && hf_projection_path(shape.arch, other) != path &&
          picks(leaf, hf_projection_path(shape.arch, other)))
        shared = true;
    const std::string name = shared ? path : leaf;
    if (std::find(out.begin(), out.end(), name) == out.end()) out.push_back(name);
  }
  return out;
}

}  // namespace ganpo
