// Dataset rows as a data file holds them: each line parsed as JSON and read as a preference pair
// and as an SFT row (standard or conversational), conversations rendered as plain text.
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "core/dataset_files.h"
#include "core/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ganpo;
  std::istringstream lines(std::string(reinterpret_cast<const char*>(data), size));
  for (std::string line; std::getline(lines, line);) {
    const nlohmann::json row = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (row.is_discarded()) continue;
    try {
      preference_from_json(row);
    } catch (const Error&) {
    }
    try {
      sft_from_json(row);
    } catch (const Error&) {
    }
    if (row.is_object() && row.contains("messages")) {
      try {
        render_messages(row["messages"], true);
      } catch (const Error&) {
      }
    }
  }
  return 0;
}
