// `ganpo inspect`, `ganpo logits` and `ganpo tokenize`: what a model folder holds, its raw
// logits and its token ids, for parity checks against other implementations (transformers, ...).
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "app/cli/commands.h"
#include "core/checkpoint.h"
#include "core/memory_estimate.h"
#include "core/model/architectures.h"
#include "core/model/hf_weights.h"
#include "core/text/chat_template.h"
#include "core/text/hf_tokenizer.h"

namespace ganpo::cli {
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

nlohmann::json describe(const std::string& dir) {
  const ModelShape s = read_model_config(dir);
  const Architecture& arch = architecture(s.arch);
  nlohmann::json j = {
      {"folder", dir},
      {"architecture", arch.hf_class},
      {"family", s.arch},
      {"parameters", parameter_count(s)},
      {"stored_dtype", s.dtype},
      {"weights_bytes", model_weights_bytes(dir)},
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
  try {
    auto tokenizer = load_tokenizer(dir);
    j["tokenizer"] = {{"kind", tokenizer->kind()},
                      {"vocab_size", tokenizer->vocab_size()},
                      {"bos_id", tokenizer->bos_id()},
                      {"eos_id", tokenizer->eos_id()},
                      {"pad_id", tokenizer->pad_id()}};
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

void print_text(const nlohmann::json& j) {
  std::printf("%s\n", j["folder"].get<std::string>().c_str());
  std::printf("  architecture     %s (%s), %.3g B parameters, stored as %s (%s on disk)\n",
              j["architecture"].get<std::string>().c_str(), j["family"].get<std::string>().c_str(),
              j["parameters"].get<double>() / 1e9, j["stored_dtype"].get<std::string>().c_str(),
              gib(j["weights_bytes"].get<double>()).c_str());
  std::printf("  shape            %lld layers, hidden %lld, %lld heads (%lld key/value) of %lld, MLP %lld, "
              "vocabulary %lld, %lld positions\n",
              j["layers"].get<long long>(), j["hidden_size"].get<long long>(), j["attention_heads"].get<long long>(),
              j["key_value_heads"].get<long long>(), j["head_dim"].get<long long>(),
              j["intermediate_size"].get<long long>(), j["vocab_size"].get<long long>(),
              j["max_positions"].get<long long>());
  std::printf("  block            %s, %s, %s positions%s%s\n", j["norm"].get<std::string>().c_str(),
              j["mlp"].get<std::string>().c_str(), j["positions"].get<std::string>().c_str(),
              j.contains("rope_scaling") ? (", rope scaling " + j["rope_scaling"]["type"].get<std::string>()).c_str() : "",
              j["tied_output_head"].get<bool>() ? ", tied output head" : "");
  if (j.contains("sliding_window"))
    std::printf("  sliding window   %lld tokens on %lld of %lld layers\n",
                j["sliding_window"]["size"].get<long long>(), j["sliding_window"]["layers"].get<long long>(),
                j["layers"].get<long long>());
  if (j.contains("attention_softcap") || j.contains("final_logit_softcap"))
    std::printf("  soft-caps        attention %g, final logits %g\n", j.value("attention_softcap", 0.0),
                j.value("final_logit_softcap", 0.0));
  const auto& t = j["tokenizer"];
  if (t.contains("error"))
    std::printf("  tokenizer        not usable: %s\n", t["error"].get<std::string>().c_str());
  else
    std::printf("  tokenizer        %s, %lld tokens, bos %lld, eos %lld, pad %lld\n", t["kind"].get<std::string>().c_str(),
                t["vocab_size"].get<long long>(), t["bos_id"].get<long long>(), t["eos_id"].get<long long>(),
                t["pad_id"].get<long long>());
  if (j.contains("chat_template"))
    std::printf("  chat template    %s\n", j["chat_template"].is_null()
                                              ? "none recognised (set data.chat_template for conversational data)"
                                              : j["chat_template"].get<std::string>().c_str());
  std::printf("  training memory  %s (%s)\n", gib(j["training_memory"]["total_bytes"].get<double>()).c_str(),
              j["training_memory"]["assumes"].get<std::string>().c_str());
}

}  // namespace

int inspect_command(const InspectArgs& args) {
  const auto j = describe(args.model);
  if (args.json)
    std::printf("%s\n", j.dump(2).c_str());
  else
    print_text(j);
  return 0;
}

int logits_command(const LogitsArgs& args) {
  if (args.ids.empty()) {
    std::fprintf(stderr, "ganpo logits: give token ids with --ids, e.g. --ids 1,2,3\n");
    return 2;
  }
  CausalLM model = load_model(args.model, [](const std::string& w) { std::fprintf(stderr, "warning: %s\n", w.c_str()); });
  model->eval();
  const int64_t vocab = model->shape().vocab_size;
  for (int64_t id : args.ids)
    if (id < 0 || id >= vocab) {
      std::fprintf(stderr, "ganpo logits: id %lld is outside the vocabulary [0, %lld)\n", static_cast<long long>(id),
                   static_cast<long long>(vocab));
      return 2;
    }
  torch::NoGradGuard guard;
  auto logits = model->forward(torch::tensor(args.ids, torch::kLong).unsqueeze(0)).logits[0].contiguous();  // [T, V]
  if (args.json) {
    nlohmann::json rows = nlohmann::json::array();
    for (int64_t t = 0; t < logits.size(0); ++t) {
      const float* p = logits[t].data_ptr<float>();
      rows.push_back(std::vector<float>(p, p + vocab));
    }
    std::printf("%s\n", nlohmann::json{{"ids", args.ids}, {"logits", rows}}.dump().c_str());
    return 0;
  }
  const int64_t k = std::min<int64_t>(5, vocab);
  for (int64_t t = 0; t < logits.size(0); ++t) {
    auto top = logits[t].topk(k);
    std::ostringstream line;
    line << "position " << t << " (id " << args.ids[static_cast<size_t>(t)] << "): top " << k << " next ids";
    for (int64_t i = 0; i < k; ++i)
      line << (i ? ", " : " ") << std::get<1>(top)[i].item<int64_t>() << " (" << std::get<0>(top)[i].item<float>() << ")";
    std::printf("%s\n", line.str().c_str());
  }
  std::printf("(--json prints every logit)\n");
  return 0;
}

}  // namespace ganpo::cli

namespace ganpo::cli {

// JSON Lines in, JSON Lines out: {"text"} -> {"ids"}, or with --decode {"ids"} -> {"text"}.
int tokenize_command(const TokenizeArgs& args) {
  auto tokenizer = load_tokenizer(args.tokenizer);
  const auto* hf = dynamic_cast<const HfTokenizer*>(tokenizer.get());
  std::string line;
  int64_t line_no = 0;
  while (std::getline(std::cin, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json row;
    try {
      row = nlohmann::json::parse(line);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "ganpo tokenize: line %lld is not JSON (%s)\n", static_cast<long long>(line_no), e.what());
      return 1;
    }
    nlohmann::json out;
    if (args.decode) {
      if (!row.is_object() || !row.contains("ids") || !row["ids"].is_array()) {
        std::fprintf(stderr, "ganpo tokenize --decode: line %lld needs {\"ids\": [...]}\n", static_cast<long long>(line_no));
        return 1;
      }
      std::vector<int64_t> ids;
      for (const auto& v : row["ids"]) {
        if (!v.is_number_integer()) {
          std::fprintf(stderr, "ganpo tokenize --decode: line %lld: ids must be integers\n", static_cast<long long>(line_no));
          return 1;
        }
        ids.push_back(v.get<int64_t>());
      }
      out["text"] = hf ? hf->decode(ids, /*skip_special_tokens=*/args.no_special) : tokenizer->decode(ids);
    } else {
      if (!row.is_object() || !row.contains("text") || !row["text"].is_string()) {
        std::fprintf(stderr, "ganpo tokenize: line %lld needs {\"text\": \"...\"}\n", static_cast<long long>(line_no));
        return 1;
      }
      const std::string text = row["text"].get<std::string>();
      out["ids"] = hf ? hf->encode(text, /*add_special_tokens=*/!args.no_special) : tokenizer->encode(text);
    }
    std::printf("%s\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  }
  return 0;
}

}  // namespace ganpo::cli
