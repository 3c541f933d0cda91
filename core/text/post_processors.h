// The "post_processor" of tokenizer.json: special tokens around an encoded text.
//
// Applied only when encoding with add_special_tokens. TemplateProcessing (the "single"
// template: e.g. Llama 2's "<s> $A", Llama 3.1's "<|begin_of_text|> $A"), RobertaProcessing and
// BertProcessing (cls $A sep), ByteLevel (adds nothing; it only moves offsets, which this
// tokenizer does not compute) and Sequence are supported; others are a ModelFileError.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/text/json_read.h"

namespace ganpo::text {

class PostProcessor {
public:
  virtual ~PostProcessor() = default;
  // Rewrites the ids of one sequence with its special tokens added.
  virtual void add_special_tokens(std::vector<int32_t>& ids) const = 0;
};

// nullptr for a JSON null. Throws ModelFileError naming `at`.
std::unique_ptr<PostProcessor> make_post_processor(const nlohmann::json& j, const JsonPlace& at);

// A template of ids before and after the sequence (also used for tokenizer_config's
// add_bos_token / add_eos_token).
std::unique_ptr<PostProcessor> make_wrap_processor(std::vector<int32_t> before,
                                                   std::vector<int32_t> after);

}  // namespace ganpo::text
