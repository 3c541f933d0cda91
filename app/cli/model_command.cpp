// `ganpo inspect`, `ganpo logits` and `ganpo tokenize`: what a model folder holds, its raw
// logits and its token ids, for parity checks against other implementations (transformers, ...).
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "app/cli/commands.h"
#include "core/checkpoint.h"
#include "core/model/model_folder_info.h"
#include "core/text/hf_tokenizer.h"
#ifdef GANPO_WITH_SENTENCEPIECE
#include "core/text/sentencepiece_tokenizer.h"
#endif

namespace ganpo::cli {
namespace {

void print_text(const nlohmann::json& j) {
  std::printf("%s\n", j["folder"].get<std::string>().c_str());
  for (const auto& [label, text] : describe_lines(j)) std::printf("  %-16s %s\n", label.c_str(), text.c_str());
}

}  // namespace

int inspect_command(const InspectArgs& args) {
  const auto j = describe_model_folder(args.model);
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
  // Ids are given, so no tokenizer is read (a PEFT adapter folder: its base with the adapters on).
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
  // The byte tokenizer's encoding adds no special token (as its tokenizer.json does in transformers)
  // and its decoding always drops them: the option changed nothing there, without a word.
  if (args.no_special && tokenizer->kind() == "byte")
    std::fprintf(stderr, "ganpo tokenize: note: the built-in byte tokenizer adds no special tokens when encoding and "
                         "drops them when decoding in any case, so --no-special changes nothing here\n");
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
        if (ids.back() < 0 || ids.back() >= tokenizer->vocab_size()) {
          std::fprintf(stderr, "ganpo tokenize --decode: line %lld: id %lld is outside the vocabulary [0, %lld)\n",
                       static_cast<long long>(line_no), static_cast<long long>(ids.back()),
                       static_cast<long long>(tokenizer->vocab_size()));
          return 1;
        }
      }
      out["text"] = hf ? hf->decode(ids, /*skip_special_tokens=*/args.no_special) : tokenizer->decode(ids);
    } else {
      if (!row.is_object() || !row.contains("text") || !row["text"].is_string()) {
        std::fprintf(stderr, "ganpo tokenize: line %lld needs {\"text\": \"...\"}\n", static_cast<long long>(line_no));
        return 1;
      }
      const std::string text = row["text"].get<std::string>();
      std::vector<int64_t> ids = hf ? hf->encode(text, /*add_special_tokens=*/!args.no_special) : tokenizer->encode(text);
#ifdef GANPO_WITH_SENTENCEPIECE
      // Its encode(text) adds no BOS: the default was --no-special's, unlike HF's.
      if (const auto* sp = dynamic_cast<const SentencePieceTokenizer*>(tokenizer.get()))
        ids = sp->encode(text, /*add_special_tokens=*/!args.no_special);
#endif
      out["ids"] = ids;
    }
    std::printf("%s\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  }
  return 0;
}

}  // namespace ganpo::cli
