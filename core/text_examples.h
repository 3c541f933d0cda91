// Plain-text training examples shared by the dataset readers and the built-in task.
// No torch types: tokenization and batching happen in core/batching.h.
#pragma once

#include <string>

namespace ganpo {

// One preference pair (x, y_w, y_l) as text.
struct PreferenceExample {
  std::string prompt;
  std::string chosen;
  std::string rejected;
};

// One supervised example: the model learns `completion` given `prompt`.
struct SftExample {
  std::string prompt;
  std::string completion;
};

}  // namespace ganpo
