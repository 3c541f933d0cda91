// What a model folder holds, described once for `ganpo inspect` and the New Run dialog.
//
// describe_model_folder() reads config.json (through the architecture table), the weight files'
// sizes and the tokenizer, and names the chat template it recognises; it loads no weights, so
// it is quick even for a large model. The result is JSON (what `ganpo inspect --json` prints);
// describe_lines() turns it into the labelled lines people read.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace ganpo {

// A PEFT adapter folder is described as its base model plus "adapter" (r, alpha, dropout,
// target_modules, base_model). Throws ModelFileError when config.json is missing or unusable.
// A tokenizer that cannot be read does not throw: "tokenizer" then holds {"error": message}.
nlohmann::json describe_model_folder(const std::string& dir);

// ("architecture", "LlamaForCausalLM (llama), 1.24 B parameters, stored as bfloat16 (2.30 GiB on disk)"), ...
// "training memory" is included when the description has it.
std::vector<std::pair<std::string, std::string>> describe_lines(const nlohmann::json& description);

}  // namespace ganpo
