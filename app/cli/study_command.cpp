// `ganpo study plan FILE`: the runs a study stands for (shared stages, then arm x seed), each
// with its folder, or every invalid combination named by arm and seed. Nothing is started.
#include <cctype>
#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "app/cli/commands.h"
#include "core/error.h"
#include "core/study_spec.h"

namespace ganpo::cli {

int study_plan_command(const StudyPlanArgs& args) {
  StudySpec spec;
  std::vector<StudyRun> runs;
  try {
    spec = load_study_file(args.file);
    std::string out = args.out;
    if (out.empty()) {
      std::string folder = spec.name;
      for (char& c : folder)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') c = '_';
      out = (std::filesystem::path("studies") / folder).string();
    }
    runs = expand_study(spec, std::filesystem::absolute(out).string());
  } catch (const ConfigError& e) {
    std::fprintf(stderr, "ganpo study plan: %s\n", e.what());
    return 2;
  }
  if (args.json) {
    nlohmann::json j = {{"name", spec.name}, {"runs", nlohmann::json::array()}};
    for (const auto& r : runs)
      j["runs"].push_back({{"stage", r.stage},
                           {"arm", r.arm},
                           {"assignments", r.assignments},
                           {"seed", r.seed},
                           {"output_dir", r.config.output_dir},
                           {"config", config_to_json(r.config)}});
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  size_t arms = 1;
  for (const auto& [key, values] : spec.grid) arms *= values.size();
  std::printf("%s: %zu run(s) = %zu shared stage(s) + %zu arm(s) x %zu seed(s); all configs valid\n",
              spec.name.c_str(), runs.size(), spec.stages.size(), arms,
              spec.seeds.empty() ? size_t{1} : spec.seeds.size());
  for (const auto& r : runs)
    std::printf("  %-60s seed %-4lld %s\n", r.arm.c_str(), static_cast<long long>(r.seed), r.config.output_dir.c_str());
  return 0;
}

}  // namespace ganpo::cli
