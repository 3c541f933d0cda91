#include "core/model/model_folder_info.h"

#include <cstdio>

#include "core/checkpoint.h"
#include "core/error.h"
#include "core/memory_estimate.h"
#include "core/model/architectures.h"
#include "core/model/hf_weights.h"
#include "core/model/lora_adapter.h"
#include "core/model/lora_targets.h"
#include "core/text/chat_template.h"
#include "core/text/hf_tokenizer.h"
#include "core/tokenizer.h"

namespace ganpo {
namespace {

std::string gib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", bytes / (1024.0 * 1024.0 * 1024.0));
  return buf;
}

const char* norm_name(NormKind k) {
  switch (k) {
    case NormKind::rms: return "RMSNorm";
    case NormKind::rms_plus_one: return "RMSNorm (1 + w)";
    case NormKind::layer_norm: return "LayerNorm";
  }
  return "?";
}

const char* mlp_name(MlpKind k) {
  switch (k) {
    case MlpKind::gated_silu: return "gated SiLU";
    case MlpKind::gated_gelu_tanh: return "gated tanh-GELU";
    case MlpKind::gelu_tanh: return "tanh-GELU";
  }
  return "?";
}

// The projections an adapter's settings pick (their layers and ranks), or why it cannot be applied.
std::string adapted_text(const ModelShape& base, const LoraSpec& spec) {
  try {
    return lora_targets_text(base, resolve_lora_targets(base, spec));
  } catch (const ConfigError& e) {
    return std::string("nothing this workbench can apply: ") + e.what();
  }
}

// "eos <|eot_id|> (128009)", "pad 258" where the token has no text here, "pad none" for -1.
std::string special_token(const nlohmann::json& tokenizer, const std::string& role) {
  const int64_t id = tokenizer.value(role + "_id", int64_t{-1});
  if (id < 0) return role + " none";
  if (!tokenizer.contains(role + "_token")) return role + " " + std::to_string(id);
  return role + " " + tokenizer[role + "_token"].get<std::string>() + " (" + std::to_string(id) + ")";
}

}  // namespace

nlohmann::json describe_model_folder(const std::string& dir) {
  if (is_peft_adapter_folder(dir)) {
    // A PEFT adapter folder: its base model as the workbench loads it, and the adapters on it.
    const PeftAdapterConfig adapter = read_peft_adapter_config(dir);
    nlohmann::json j = describe_model_folder(adapter.base_model);
    j["folder"] = dir;
    j["adapter"] = {{"peft_type", "LORA"},
                    {"r", adapter.spec.r},
                    {"alpha", adapter.spec.alpha},
                    {"use_rslora", adapter.spec.rslora},
                    {"use_dora", adapter.spec.dora},
                    {"dropout", adapter.spec.dropout},
                    {"bias", adapter.spec.bias},
                    {"target_modules", adapter.spec.target_regex.empty() ? nlohmann::json(adapter.spec.targets)
                                                                         : nlohmann::json(adapter.spec.target_regex)},
                    // What they name in the base model (PEFT writes "all-linear" as every layer's modules).
                    {"adapted", adapted_text(adapter.base_shape, adapter.spec)},
                    {"base_model", adapter.base_model}};
    return j;
  }
  ModelShape s = read_model_config(dir);
  const uint64_t weights_bytes = model_weights_bytes(dir);
  // The dtype the weights are stored in is the files' (config.json's torch_dtype may be missing,
  // as in GPT-2's, or differ); where they cannot be loaded, the loader's reason.
  std::string weights_error;
  try {
    s.dtype = stored_weights_dtype(dir);
  } catch (const ModelFileError& e) {
    weights_error = e.what();
  }
  const Architecture& arch = architecture(s.arch);
  nlohmann::json j = {
      {"folder", dir},
      {"architecture", arch.hf_class},
      {"family", s.arch},
      {"parameters", parameter_count(s)},
      {"stored_dtype", s.dtype},
      {"weights_bytes", weights_bytes},
      {"has_weights", weights_bytes > 0},  // safetensors files (pytorch_model.bin is not read)
      {"vocab_size", s.vocab_size},
      {"hidden_size", s.d_model},
      {"layers", s.n_layers},
      {"attention_heads", s.n_heads},
      {"key_value_heads", s.n_kv_heads},
      {"head_dim", s.head_size()},
      {"intermediate_size", s.d_ff},
      {"max_positions", s.max_seq_len},
      {"norm", norm_name(s.norm)},
      {"mlp", mlp_name(s.mlp)},
      {"positions", s.positions == PositionKind::rope ? "rotary" : "learned"},
      {"tied_output_head", s.tie_embeddings},
  };
  if (!weights_error.empty()) j["weights_error"] = weights_error;  // a run needs model.random_weights
  if (s.positions == PositionKind::rope) {
    j["rope_theta"] = s.rope_theta;
    if (!s.rope_scaling.type.empty())
      j["rope_scaling"] = {{"type", s.rope_scaling.type}, {"factor", s.rope_scaling.factor}};
  }
  if (s.sliding_window > 0) {
    int64_t windowed = 0;
    for (int64_t i = 0; i < s.n_layers; ++i) windowed += s.layer_is_sliding(i) ? 1 : 0;
    j["sliding_window"] = {{"size", s.sliding_window}, {"layers", windowed}};
  }
  if (s.attn_softcap > 0) j["attention_softcap"] = s.attn_softcap;
  if (s.final_softcap > 0) j["final_logit_softcap"] = s.final_softcap;
  if (!has_tokenizer_files(dir)) {
    j["tokenizer"] = {{"error", "no tokenizer files in the folder (a run of random weights, model.random_weights, "
                                "uses the byte tokenizer)"}};
  } else {
    try {
      auto tokenizer = load_tokenizer(dir);
      j["tokenizer"] = {{"kind", tokenizer->kind()},
                        {"vocab_size", tokenizer->vocab_size()},
                        {"bos_id", tokenizer->bos_id()},
                        {"eos_id", tokenizer->eos_id()},
                        {"pad_id", tokenizer->pad_id()}};
      // The special tokens' texts beside their ids, as HF's tokenizer names them ("<|eot_id|>"
      // says more than 128009 of whether the right EOS is set).
      if (const auto* hf = dynamic_cast<const HfTokenizer*>(tokenizer.get()))
        for (const char* role : {"bos", "eos", "pad"}) {
          const int64_t id = j["tokenizer"][std::string(role) + "_id"].get<int64_t>();
          if (const auto token = id >= 0 ? hf->id_to_token(id) : std::nullopt)
            j["tokenizer"][std::string(role) + "_token"] = *token;
        }
      // What load_model_folder (and a run of random weights) refuses: ids past the embedding.
      if (tokenizer->vocab_size() > s.vocab_size)
        j["tokenizer"]["problem"] = dir + ": tokenizer has " + std::to_string(tokenizer->vocab_size()) +
                                    " tokens but config.json vocab_size is " + std::to_string(s.vocab_size);
      if (tokenizer->uses_chat_template()) {
        try {
          j["chat_template"] = ChatTemplate::from_model_folder(dir, "").variant();
        } catch (const std::exception&) {
          j["chat_template"] = nullptr;  // none, or one this build does not recognise
        }
      }
    } catch (const std::exception& e) {
      j["tokenizer"] = {{"error", e.what()}};
    }
  }
  // Training memory with this build's defaults for a preference run with GANPO on.
  RunConfig c;
  c.stage = "preference";
  c.model.checkpoint = dir;
  const MemoryEstimate e = estimate_training_memory(c, s);
  j["training_memory"] = {{"total_bytes", e.total_bytes},
                          {"assumes", "preference stage, GANPO on, batch " +
                                          std::to_string(c.train.per_device_train_batch_size) + ", max_length " +
                                          std::to_string(c.data.max_length) + ", " + c.train.precision}};
  return j;
}


std::vector<std::pair<std::string, std::string>> describe_lines(const nlohmann::json& j) {
  std::vector<std::pair<std::string, std::string>> lines;
  auto str = [&j](const char* key) { return j[key].get<std::string>(); };
  auto num = [&j](const char* key) { return std::to_string(j[key].get<long long>()); };
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3g", j["parameters"].get<double>() / 1e9);
  lines.emplace_back("architecture", str("architecture") + " (" + str("family") + "), " + buf + " B parameters, " +
                                         (j.value("has_weights", true)
                                              ? "stored as " + str("stored_dtype") + " (" +
                                                    gib(j["weights_bytes"].get<double>()) + " on disk)"
                                              : std::string("no safetensors weights (a run trains its architecture "
                                                            "from random weights with model.random_weights = true)")));
  if (j.contains("adapter")) {
    const auto& a = j["adapter"];
    std::snprintf(buf, sizeof buf, "%s r %lld, alpha %g%s", a.value("use_dora", false) ? "DoRA" : "LoRA",
                  a["r"].get<long long>(), a["alpha"].get<double>(), a.value("use_rslora", false) ? " (rsLoRA)" : "");
    lines.emplace_back("adapter", std::string("PEFT ") + buf + " on " + a["adapted"].get<std::string>() + ", over the base model " +
                                      a["base_model"].get<std::string>() + ", which the other lines describe");
  }
  lines.emplace_back("shape", num("layers") + " layers, hidden " + num("hidden_size") + ", " + num("attention_heads") +
                                  " heads (" + num("key_value_heads") + " key/value) of " + num("head_dim") + ", MLP " +
                                  num("intermediate_size") + ", vocabulary " + num("vocab_size") + ", " +
                                  num("max_positions") + " positions");
  std::string block = str("norm") + ", " + str("mlp") + ", " + str("positions") + " positions";
  if (j.contains("rope_scaling")) block += ", rope scaling " + j["rope_scaling"]["type"].get<std::string>();
  if (j["tied_output_head"].get<bool>()) block += ", tied output head";
  lines.emplace_back("block", block);
  if (j.contains("sliding_window"))
    lines.emplace_back("sliding window", std::to_string(j["sliding_window"]["size"].get<long long>()) + " tokens on " +
                                             std::to_string(j["sliding_window"]["layers"].get<long long>()) + " of " +
                                             num("layers") + " layers");
  if (j.contains("attention_softcap") || j.contains("final_logit_softcap")) {
    std::snprintf(buf, sizeof buf, "attention %g, final logits %g", j.value("attention_softcap", 0.0),
                  j.value("final_logit_softcap", 0.0));
    lines.emplace_back("soft-caps", buf);
  }
  if (j.contains("weights_error") && j.value("has_weights", true))
    lines.emplace_back("weights", "not usable: " + j["weights_error"].get<std::string>());
  const auto& t = j["tokenizer"];
  if (t.contains("error"))
    lines.emplace_back("tokenizer", "not usable: " + t["error"].get<std::string>());
  else
    lines.emplace_back("tokenizer", t["kind"].get<std::string>() + ", " + std::to_string(t["vocab_size"].get<long long>()) +
                                        " tokens, " + special_token(t, "bos") + ", " + special_token(t, "eos") + ", " +
                                        special_token(t, "pad") +
                                        (t.contains("problem") ? "; not usable: " + t["problem"].get<std::string>() : ""));
  if (j.contains("chat_template"))
    lines.emplace_back("chat template", j["chat_template"].is_null()
                                            ? "none recognised (set data.chat_template for conversational data)"
                                            : j["chat_template"].get<std::string>());
  if (j.contains("training_memory"))
    lines.emplace_back("training memory", gib(j["training_memory"]["total_bytes"].get<double>()) + " (" +
                                              j["training_memory"]["assumes"].get<std::string>() + ")");
  return lines;
}

}  // namespace ganpo
