#include "core/study_spec.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <toml++/toml.h>

#include "core/error.h"

namespace ganpo {
namespace {

namespace fs = std::filesystem;

std::string in_quotes(const std::string& s) { return "\"" + s + "\""; }

// A TOML scalar as the text apply_override parses.
std::string override_text(const toml::node& node, const std::string& where) {
  if (auto s = node.as_string()) return s->get();
  if (auto b = node.as_boolean()) return b->get() ? "true" : "false";
  if (auto i = node.as_integer()) return std::to_string(i->get());
  if (auto f = node.as_floating_point()) {
    // The shortest text that reads back as the same double: 0.2, not 0.20000000000000001.
    for (int digits = 1; digits <= 17; ++digits) {
      std::ostringstream out;
      out.precision(digits);
      out << f->get();
      if (std::stod(out.str()) == f->get() || digits == 17) return out.str();
    }
  }
  throw ConfigError(where + " must be a string, number or boolean");
}

// Checks that `key=value` is a known key with a value of its type.
void check_assignment(const std::string& assignment, const std::string& where) {
  RunConfig probe;
  try {
    apply_override(probe, assignment);
  } catch (const ConfigError& e) {
    throw ConfigError(where + ": " + e.what());
  }
}

toml::table parse(const std::string& text, const std::string& label) {
  try {
    return toml::parse(text);
  } catch (const toml::parse_error& e) {
    throw ConfigError("invalid TOML in " + label + " at line " + std::to_string(e.source().begin.line) + ": " +
                      std::string(e.description()));
  }
}

// Letters, digits and . - _ kept; anything else becomes _.
std::string safe_name(std::string text) {
  for (char& c : text)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '_') c = '_';
  return text;
}

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

StudySpec study_from_toml(const std::string& text, const std::string& source_dir, const std::string& label) {
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
      if (k == "base_config") {
        if (!node.is_string()) throw ConfigError(where + " must be the path of a run config file");
        fs::path path = node.as_string()->get();
        if (path.is_relative()) path = fs::path(source_dir) / path;
        spec.base = load_config_file(path.string());
      } else {
        if (!node.is_table()) throw ConfigError(where + " must be a table of run config keys");
        std::ostringstream base_text;
        base_text << *node.as_table();
        spec.base = config_from_toml(base_text.str());
      }
    } else if (k == "grid") {
      const toml::table* grid = node.as_table();
      if (!grid) throw ConfigError(where + " must be a table: \"section.key\" = [values]");
      // In the order the file lists them (toml++ iterates keys sorted): the first varies slowest.
      std::vector<std::pair<const toml::key*, const toml::node*>> entries;
      for (auto&& [gk, gv] : *grid) entries.emplace_back(&gk, &gv);
      std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
        const auto &sa = a.first->source().begin, &sb = b.first->source().begin;
        return sa.line != sb.line ? sa.line < sb.line : sa.column < sb.column;
      });
      for (const auto& [gk_ptr, gv_ptr] : entries) {
        const toml::key& gk = *gk_ptr;
        const toml::node& gv = *gv_ptr;
        const std::string grid_key(gk.str());
        const std::string gwhere = label + ": [grid] " + in_quotes(grid_key);
        const toml::array* values = gv.as_array();
        if (!values || values->empty()) throw ConfigError(gwhere + " must be a non-empty list of values");
        if (grid_key == "seed" || grid_key == "output_dir" || grid_key == "name")
          throw ConfigError(gwhere + ": " + grid_key + " is set per run by the study" +
                            (grid_key == "seed" ? "; list seeds in the top-level seeds = [...]" : ""));
        std::vector<std::string> texts;
        for (const auto& v : *values) {
          texts.push_back(override_text(v, gwhere));
          check_assignment(grid_key + "=" + texts.back(), gwhere);
        }
        spec.grid.emplace_back(grid_key, std::move(texts));
      }
    } else if (k == "stage") {
      const toml::array* stages = node.as_array();
      if (!stages) throw ConfigError(where + " must be [[stage]] tables with a name and a set = { ... } table");
      for (const auto& s : *stages) {
        const toml::table* t = s.as_table();
        if (!t || !(*t)["name"].is_string()) throw ConfigError(where + ": every [[stage]] needs name = \"...\"");
        StudyStage stage;
        stage.name = (*t)["name"].as_string()->get();
        if (const toml::table* set = (*t)["set"].as_table())
          for (auto&& [sk, sv] : *set) {
            const std::string swhere = label + ": stage " + in_quotes(stage.name) + " set " + in_quotes(std::string(sk.str()));
            stage.assignments.push_back(std::string(sk.str()) + "=" + override_text(sv, swhere));
            check_assignment(stage.assignments.back(), swhere);
          }
        spec.stages.push_back(std::move(stage));
      }
    } else {
      throw ConfigError(where + " is not a study key; use name, seeds, base_config (or [base]), [grid], [[stage]]");
    }
  }
  if (!has_base) throw ConfigError(label + ": no base run config; add base_config = \"run.toml\" or a [base] table");
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
    run.config.output_dir = (fs::path(output_root) / folder).string();
    run.config.seed = run.seed;
    for (const auto& m : validate_config(run.config))
      problems.push_back((run.stage.empty() ? "arm " + run.arm + ", seed " + std::to_string(run.seed)
                                            : "stage " + run.stage) + ": " + m);
    runs.push_back(std::move(run));
  };

  // Shared stages: each from the previous one's final/.
  std::string previous_final;
  for (const auto& stage : spec.stages) {
    StudyRun run;
    run.stage = stage.name;
    run.arm = "stage " + stage.name;
    run.assignments = stage.assignments;
    run.seed = spec.base.seed;
    run.config = spec.base;
    if (!previous_final.empty()) run.config.model.checkpoint = run.config.model.reference = previous_final;
    for (const auto& a : stage.assignments) apply_override(run.config, a);
    run.config.name = spec.name + " · stage " + stage.name;
    finish(std::move(run), "stage-" + safe_name(stage.name));
    previous_final = (fs::path(runs.back().config.output_dir) / "final").string();
  }

  // The grid's cartesian product, the first key varying slowest.
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
  const std::vector<int64_t> seeds = spec.seeds.empty() ? std::vector<int64_t>{spec.base.seed} : spec.seeds;
  for (const auto& point : points)
    for (int64_t seed : seeds) {
      StudyRun run;
      run.arm = point.empty() ? "base" : join(point, ", ");
      run.assignments = point;
      run.seed = seed;
      run.config = spec.base;
      if (!previous_final.empty()) run.config.model.checkpoint = run.config.model.reference = previous_final;
      for (const auto& a : point) apply_override(run.config, a);
      run.config.name = spec.name + " · " + run.arm + " · seed " + std::to_string(seed);
      finish(std::move(run), slug(point, seed));
    }

  if (!problems.empty()) {
    std::string text = std::to_string(problems.size()) + " problem(s) in the study's runs:";
    for (size_t i = 0; i < problems.size() && i < 20; ++i) text += "\n  " + problems[i];
    if (problems.size() > 20) text += "\n  ... and " + std::to_string(problems.size() - 20) + " more";
    throw ConfigError(text);
  }
  return runs;
}

}  // namespace ganpo
