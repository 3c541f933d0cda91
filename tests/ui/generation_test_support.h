// Shared helpers for the tests of interactive generation (GenerationService, CheckpointsView):
// tiny model folders written the way a checkpoint is, and lists-task prompts. (The event-loop
// pump with a deadline is dashboard_test_support.h's pump_until.)
#pragma once

#include <QString>

#include <cstdint>
#include <random>
#include <string>

#include "core/checkpoint.h"
#include "core/model/model_shape.h"
#include "core/tasks/lists_task.h"

namespace ganpo::ui::testing {

// Writes a freshly initialised tiny model (seeded) into dir.
inline void write_tiny_model(const QString& dir, uint64_t seed) {
  torch::manual_seed(seed);
  ModelConfig mc;
  mc.preset = "tiny";
  ByteTokenizer tok;
  CausalLM model(resolve_model_shape(mc, tok.vocab_size()));
  save_model_files(dir.toStdString(), model, tok);
}

// A built-in lists-task prompt (so generations get a judge score).
inline std::string lists_prompt(uint64_t seed) {
  std::mt19937_64 rng(seed);
  return lists::render_prompt(lists::random_spec(rng));
}

}  // namespace ganpo::ui::testing
