// Training examples shared by the dataset readers and the built-in task.
//
// Text fields are what the model is trained on. Conversational rows (TRL's message lists) also
// keep their messages, so a model with a chat template renders them with it
// (apply_chat_template in core/dataset_files.h); until then the text fields hold a plain fallback rendering.
// No torch types: tokenization and batching happen in core/batching.h.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "core/text/chat_template.h"

namespace ganpo {

// One preference pair (x, y_w, y_l) as text.
struct PreferenceExample {
  PreferenceExample() = default;
  PreferenceExample(std::string prompt, std::string chosen, std::string rejected)
      : prompt(std::move(prompt)), chosen(std::move(chosen)), rejected(std::move(rejected)) {}
  std::string prompt;
  std::string chosen;
  std::string rejected;
  // Conversational rows only (empty otherwise): the prompt's messages and each completion's.
  std::vector<ChatMessage> prompt_messages, chosen_messages, rejected_messages;
  bool conversational() const { return !chosen_messages.empty(); }
};

// One supervised example: the model learns `completion` given `prompt`.
struct SftExample {
  SftExample() = default;
  SftExample(std::string prompt, std::string completion)
      : prompt(std::move(prompt)), completion(std::move(completion)) {}
  std::string prompt;
  std::string completion;
  std::vector<ChatMessage> prompt_messages, completion_messages;  // conversational rows only
  bool conversational() const { return !completion_messages.empty(); }
};

}  // namespace ganpo
