// Study files: parsed, expanded into runs (bounded by kMaxStudyRuns), and written back with
// study_to_toml, which must read back as the same runs.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "core/study_spec.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ganpo;
  const std::string text(reinterpret_cast<const char*>(data), size);
  StudySpec spec;
  std::vector<StudyRun> runs;
  try {
    spec = study_from_toml(text, "/nonexistent", "fuzz.toml");
    runs = expand_study(spec, "/out");
  } catch (const ConfigError&) {
    return 0;
  }
  const std::string written = study_to_toml(spec);
  try {
    const std::vector<StudyRun> again = expand_study(study_from_toml(written, "/nonexistent", "written"), "/out");
    if (again.size() != runs.size()) fuzz::invariant_failed("a written study has another number of runs", written);
    for (size_t i = 0; i < runs.size(); ++i)
      if (config_to_toml(again[i].config) != config_to_toml(runs[i].config))
        fuzz::invariant_failed("a written study's run differs", written);
  } catch (const ConfigError& e) {
    fuzz::invariant_failed("a written study does not read back", std::string(e.what()) + "\n" + written);
  }
  return 0;
}
