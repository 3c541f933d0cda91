// Checkpoint folders: a model that can be loaded on its own, plus the trainer's state.
//
//   model.safetensors     policy weights (HF Llama-style names)
//   config.json           model shape (HF fields)
//   tokenizer_config.json
//   meta.json             step, stage, run name, metrics at save time
//   run_config.toml       the resolved run configuration
//   trainer_state/        optimizer.pt, critic_optimizer.pt, critics.safetensors, state.json
//                         (step, epoch, data cursor, tokens seen, EMA means), rng.safetensors
// A folder is written as NAME.tmp and renamed when complete, so a crash never leaves a
// half-written checkpoint under its final name.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <map>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "core/model.h"
#include "core/tokenizer.h"

namespace ganpo {

struct LoadedModel {
  CausalLM model{nullptr};
  std::unique_ptr<Tokenizer> tokenizer;
  ModelShape shape;
};

// Writes model.safetensors, config.json and tokenizer_config.json into dir (created).
void save_model_files(const std::string& dir, CausalLM& model, const Tokenizer& tokenizer);
// Loads a model folder onto device; throws ModelFileError with a message saying what to do.
LoadedModel load_model_folder(const std::string& dir, const torch::Device& device);

// Atomic folder write: creates dir + ".tmp", calls write(tmp), then renames over dir.
void write_folder_atomically(const std::string& dir, const std::function<void(const std::string&)>& write);

void write_json_file(const std::string& path, const nlohmann::json& j);
nlohmann::json read_json_file(const std::string& path);  // throws ModelFileError

}  // namespace ganpo
