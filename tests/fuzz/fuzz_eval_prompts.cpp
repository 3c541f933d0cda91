// Evaluation prompt files (judge_prompts.jsonl, `ganpo eval --prompts`): anything is either read
// as prompts or refused with a DataError.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "core/tasks/task.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    ganpo::parse_eval_prompts(std::string(reinterpret_cast<const char*>(data), size), "fuzz.jsonl");
  } catch (const ganpo::DataError&) {
  }
  return 0;
}
