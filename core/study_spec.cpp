#include "core/study_spec.h"

#include <algorithm>
#include <charconv>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <toml++/toml.h>

#include "core/error.h"
#include "core/run_files.h"
#include "core/toml_assignments.h"

namespace ganpo {
namespace {

// A stage after the first starts from the previous stage's final weights, which are also its
// reference; model.random_weights applied to the first stage only.
void start_from_stage(RunConfig& config, const std::string& previous_final) {
  config.model.checkpoint = config.model.reference = previous_final;
  config.model.random_weights = false;
}

namespace fs = std::filesystem;

std::string in_quotes(const std::string& s) { return "\"" + s + "\""; }

toml::table parse(const std::string& text, const std::string& label) {
  try {
    return toml::parse(text);
  } catch (const toml::parse_error& e) {
    throw ConfigError("invalid TOML in " + label + " at line " + std::to_string(e.source().begin.line) + ": " +
                      std::string(e.description()));
  }
}

// Letters, digits and . - _ kept; anything else becomes _.
std::string safe_name(const std::string& text) { return safe_file_name(text, "-_."); }

// "objective.loss_type=simpo" -> "loss_type-simpo": short, filesystem-safe folder names.
std::string slug(const std::vector<std::string>& assignments, int64_t seed) {
  std::string out;
  for (const auto& a : assignments) {
    const size_t eq = a.find('=');
    std::string key = a.substr(0, eq);
    if (const size_t dot = key.find('.'); dot != std::string::npos) key = key.substr(dot + 1);
    out += (out.empty() ? "" : "__") + safe_name(key + "-" + a.substr(eq + 1));
  }
  return (out.empty() ? std::string("base") : out) + "__seed-" + std::to_string(seed);
}

std::string join(const std::vector<std::string>& parts, const std::string& sep) {
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : sep) + p;
  return out;
}

}  // namespace

StudySpec study_from_toml(const std::string& text, const std::string& source_dir, const std::string& label,
                          bool read_base) {
  const toml::table root = parse(text, label);
  StudySpec spec;
  bool has_base = false;
  for (auto&& [key, node] : root) {
    const std::string k(key.str());
    const std::string where = label + ": " + in_quotes(k);
    if (k == "name") {
      if (!node.is_string()) throw ConfigError(where + " must be a string");
      spec.name = node.as_string()->get();
    } else if (k == "seeds") {
      const toml::array* seeds = node.as_array();
      if (!seeds || seeds->empty()) throw ConfigError(where + " must be a non-empty list of integers, e.g. [1, 2, 3]");
      for (const auto& s : *seeds) {
        if (!s.is_integer()) throw ConfigError(where + " must hold integers only");
        spec.seeds.push_back(s.as_integer()->get());
      }
    } else if (k == "base_config" || k == "base") {
      if (has_base) throw ConfigError(label + ": give either base_config (a file) or a [base] table, not both");
      has_base = true;
      if (!read_base) {
        // The shared stages still count: a stored study's stage runs come first.
        if (const toml::table* t = node.as_table(); t && t->contains("pipeline") && spec.stages.empty())
          spec.base.pipeline = stages_from_toml(*t->get("pipeline"), label + ": [base]", "pipeline");
        continue;
      }
      if (k == "base_config") {
        if (!node.is_string()) throw ConfigError(where + " must be the path of a run config file");
        fs::path path = node.as_string()->get();
        if (path.is_relative()) path = fs::path(source_dir) / path;
        spec.base = load_config_file(path.string());
      } else {
        if (!node.is_table()) throw ConfigError(where + " must be a table of run config keys");
        std::ostringstream base_text;
        base_text << *node.as_table();
        try {
          spec.base = config_from_toml(base_text.str());
        } catch (const ConfigError& e) {
          throw ConfigError(label + ": [base]: " + e.what());
        }
      }
    } else if (k == "grid") {
      const toml::table* grid = node.as_table();
      if (!grid) throw ConfigError(where + " must be a table: \"section.key\" = [values]");
      // In the order the file lists them (toml++ iterates keys sorted): the first varies slowest.
      for (const auto& [written_key, gv] : entries_in_file_order(*grid)) {
        const std::string grid_key = trimmed_key(written_key);  // as apply_override reads it, and the report after it
        const std::string gwhere = label + ": [grid] " + in_quotes(written_key);
        const toml::array* values = gv->as_array();
        if (!values || values->empty()) throw ConfigError(gwhere + " must be a non-empty list of values");
        refuse_per_run_keys(grid_key, gwhere);
        std::vector<std::string> texts;
        for (const auto& v : *values) {
          texts.push_back(override_text(v, gwhere));
          check_assignment(grid_key + "=" + texts.back(), gwhere);
        }
        refuse_same_settings(grid_key, texts, gwhere);
        if (std::any_of(spec.grid.begin(), spec.grid.end(), [&](const auto& g) { return g.first == grid_key; }))
          throw ConfigError(gwhere + " is listed twice in [grid]");
        spec.grid.emplace_back(grid_key, std::move(texts));
      }
    } else if (k == "stage") {
      spec.stages = stages_from_toml(node, label, "stage");
    } else {
      throw ConfigError(where + " is not a study key; use name, seeds, base_config (or [base]), [grid], [[stage]]");
    }
  }
  if (!has_base) throw ConfigError(label + ": no base run config; add base_config = \"run.toml\" or a [base] table");
  // A base config's own pipeline is the study's shared stages.
  if (!spec.base.pipeline.empty()) {
    if (!spec.stages.empty())
      throw ConfigError(label + ": the base config has a [[pipeline]] and the study has [[stage]] tables; give the "
                        "shared stages in one place");
    spec.stages = std::move(spec.base.pipeline);
    spec.base.pipeline.clear();
  }
  if (spec.name.empty()) spec.name = spec.base.name.empty() ? "study" : spec.base.name;
  return spec;
}

StudySpec load_study_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError("cannot read the study file " + path);
  std::stringstream text;
  text << in.rdbuf();
  return study_from_toml(text.str(), fs::path(path).parent_path().string(), path);
}

std::vector<StudyRun> expand_study(const StudySpec& spec, const std::string& output_root) {
  std::vector<StudyRun> runs;
  std::vector<std::string> problems;
  auto finish = [&](StudyRun run, const std::string& folder) {
    run.config.pipeline.clear();  // every run is one stage
    run.config.output_dir = (fs::path(output_root) / folder).string();
    run.config.seed = run.seed;
    for (const auto& m : validate_config(run.config))
      problems.push_back((run.stage.empty() ? "arm " + run.arm + ", seed " + std::to_string(run.seed)
                                            : "stage " + run.stage) + ": " + m);
    runs.push_back(std::move(run));
  };

  // Shared stages: each from the previous one's final/. A base config's own pipeline counts as
  // the study's stages when it lists none.
  const std::vector<StudyStage>& stages = spec.stages.empty() ? spec.base.pipeline : spec.stages;
  std::string previous_final;
  for (const auto& stage : stages) {
    StudyRun run;
    run.stage = stage.name;
    run.arm = "stage " + stage.name;
    run.assignments = stage.assignments;
    run.seed = spec.base.seed;
    run.config = spec.base;
    if (!previous_final.empty()) start_from_stage(run.config, previous_final);
    for (const auto& a : stage.assignments) apply_override(run.config, a);
    run.config.name = spec.name + " · stage " + stage.name;
    finish(std::move(run), "stage-" + safe_name(stage.name));
    previous_final = (fs::path(runs.back().config.output_dir) / "final").string();
  }

  // The grid's cartesian product, the first key varying slowest; sized before it is built.
  const std::vector<int64_t> seed_list = spec.seeds.empty() ? std::vector<int64_t>{spec.base.seed} : spec.seeds;
  double planned = static_cast<double>(seed_list.size());
  for (const auto& [key, values] : spec.grid) planned *= static_cast<double>(values.size());
  if (planned > static_cast<double>(kMaxStudyRuns))
    throw ConfigError("the study stands for " + std::to_string(static_cast<long long>(std::min(planned, 1e18))) +
                      " runs (grid values x seeds); at most " + std::to_string(kMaxStudyRuns) +
                      " are allowed: split it into smaller studies");
  std::vector<std::vector<std::string>> points{{}};
  for (const auto& [key, values] : spec.grid) {
    std::vector<std::vector<std::string>> next;
    for (const auto& point : points)
      for (const auto& v : values) {
        next.push_back(point);
        next.back().push_back(key + "=" + v);
      }
    points = std::move(next);
  }
  const std::vector<int64_t>& seeds = seed_list;
  for (const auto& point : points)
    for (int64_t seed : seeds) {
      StudyRun run;
      run.arm = point.empty() ? "base" : join(point, ", ");
      run.assignments = point;
      run.seed = seed;
      run.config = spec.base;
      if (!previous_final.empty()) start_from_stage(run.config, previous_final);
      for (const auto& a : point) apply_override(run.config, a);
      // One run (a pipeline's last stage): the study's own name.
      run.config.name = points.size() == 1 && point.empty() && seeds.size() == 1
                            ? spec.name
                            : spec.name + " · " + run.arm + " · seed " + std::to_string(seed);
      finish(std::move(run), slug(point, seed));
    }

  // Repeated seeds or grid values, or values that differ only in characters a folder name
  // cannot hold, would make two runs share one folder.
  std::map<std::string, std::string> folder_owner;
  for (const auto& run : runs) {
    const std::string who = run.stage.empty() ? "arm " + run.arm + ", seed " + std::to_string(run.seed) : "stage " + run.stage;
    auto [it, fresh] = folder_owner.emplace(run.config.output_dir, who);
    if (!fresh) problems.push_back(who + ": would write to the same folder as " + it->second + " (" + run.config.output_dir +
                                   "); remove repeated seeds or grid values");
  }
  if (!problems.empty()) {
    std::string text = std::to_string(problems.size()) + " problem(s) in the study's runs:";
    for (size_t i = 0; i < problems.size() && i < 20; ++i) text += "\n  " + problems[i];
    if (problems.size() > 20) text += "\n  ... and " + std::to_string(problems.size() - 20) + " more";
    throw ConfigError(text);
  }
  return runs;
}

StudySpec study_of_pipeline(const RunConfig& config) {
  StudySpec spec;
  spec.name = config.name;
  spec.base = config;
  spec.stages = std::move(spec.base.pipeline);
  spec.base.pipeline.clear();
  return spec;
}

std::string study_to_toml(const StudySpec& spec) {
  std::ostringstream out;
  out << "# GANPO Workbench study\nname = " << toml_quoted(spec.name) << "\n";
  if (!spec.seeds.empty()) {
    out << "seeds = [";
    for (size_t i = 0; i < spec.seeds.size(); ++i) out << (i ? ", " : "") << spec.seeds[i];
    out << "]\n";
  }
  if (!spec.grid.empty()) {
    out << "\n[grid]\n";
    for (const auto& [key, values] : spec.grid) {
      out << toml_quoted(key) << " = [";
      for (size_t i = 0; i < values.size(); ++i) out << (i ? ", " : "") << toml_value_of_assignment(values[i]);
      out << "]\n";
    }
  }
  RunConfig base = spec.base;
  if (!spec.stages.empty()) base.pipeline = spec.stages;  // read back as the shared stages
  out << "\n" << config_to_toml(base, "base");
  return out.str();
}

}  // namespace ganpo
