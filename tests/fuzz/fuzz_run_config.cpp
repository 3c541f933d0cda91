// Run config readers: the input as TOML, as JSON, and line by line as --set overrides. Whatever
// they accept is validated and must survive a round trip: written as TOML (and JSON) and read
// back, it is the same config.
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "core/config.h"
#include "core/error.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

void round_trip(const ganpo::RunConfig& c) {
  using namespace ganpo;
  const std::string toml = config_to_toml(c);
  try {
    if (config_to_toml(config_from_toml(toml)) != toml) fuzz::invariant_failed("TOML round trip changed the config", toml);
    if (config_to_toml(config_from_json(config_to_json(c))) != toml)
      fuzz::invariant_failed("JSON round trip changed the config", toml);
  } catch (const ConfigError& e) {
    fuzz::invariant_failed("a written config does not read back", std::string(e.what()) + "\n" + toml);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ganpo;
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const RunConfig c = config_from_toml(text);
    validate_config(c);
    round_trip(c);
  } catch (const ConfigError&) {
  }
  try {
    const RunConfig c = config_from_json(nlohmann::json::parse(text));
    validate_config(c);
    round_trip(c);
  } catch (const nlohmann::json::exception&) {
  } catch (const ConfigError&) {
  }
  RunConfig overridden;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    try {
      apply_override(overridden, line);
    } catch (const ConfigError&) {
    }
  }
  validate_config(overridden);
  round_trip(overridden);
  return 0;
}
