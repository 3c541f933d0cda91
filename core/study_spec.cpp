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
    // The shortest text that reads back as the same double (0.2, not 0.20000000000000001),
    // whatever the locale.
    char buf[64];
    const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, f->get());
    if (ec == std::errc()) return std::string(buf, end);
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

// "key" = value pairs of a table in file order, with unquoted dotted keys (objective.beta = ...,
// which TOML reads as nested tables) flattened back to "objective.beta".
void flatten(const toml::table& table, const std::string& prefix,
             std::vector<std::pair<std::string, const toml::node*>>& out,
             std::vector<toml::source_position>& positions) {
  for (auto&& [key, node] : table) {
    const std::string name = prefix + std::string(key.str());
    if (const toml::table* nested = node.as_table()) {
      flatten(*nested, name + ".", out, positions);
    } else {
      out.emplace_back(name, &node);
      positions.push_back(key.source().begin);
    }
  }
}

std::vector<std::pair<std::string, const toml::node*>> entries_in_file_order(const toml::table& table) {
  std::vector<std::pair<std::string, const toml::node*>> entries;
  std::vector<toml::source_position> positions;
  flatten(table, "", entries, positions);
  std::vector<size_t> order(entries.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return positions[a].line != positions[b].line ? positions[a].line < positions[b].line
                                                  : positions[a].column < positions[b].column;
  });
  std::vector<std::pair<std::string, const toml::node*>> sorted;
  for (size_t i : order) sorted.push_back(entries[i]);
  return sorted;
}

// Keys every run gets from the study itself (compared as apply_override reads them: trimmed).
void refuse_study_keys(const std::string& key, const std::string& where) {
  const size_t first = key.find_first_not_of(" \t"), last = key.find_last_not_of(" \t");
  const std::string k = first == std::string::npos ? "" : key.substr(first, last - first + 1);
  if (k == "seed" || k == "output_dir" || k == "name")
    throw ConfigError(where + ": " + k + " is set per run by the study" +
                      (k == "seed" ? "; list seeds in the top-level seeds = [...]" : ""));
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
      if (!read_base) continue;
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
      for (const auto& [grid_key, gv] : entries_in_file_order(*grid)) {
        const std::string gwhere = label + ": [grid] " + in_quotes(grid_key);
        const toml::array* values = gv->as_array();
        if (!values || values->empty()) throw ConfigError(gwhere + " must be a non-empty list of values");
        refuse_study_keys(grid_key, gwhere);
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
        const std::string stage_where = label + ": stage " + in_quotes(stage.name);
        for (auto&& [key, value] : *t)
          if (key.str() != "name" && key.str() != "set")
            throw ConfigError(stage_where + ": " + in_quotes(std::string(key.str())) +
                              " is not a stage key; a stage has name = \"...\" and set = { \"section.key\" = value, ... }");
        const toml::table* set = (*t)["set"].as_table();
        if (!set)
          throw ConfigError(stage_where + " needs set = { \"section.key\" = value, ... } saying how it differs from "
                            "the base (e.g. set = { stage = \"sft\" })");
        for (const auto& [key, value] : entries_in_file_order(*set)) {
          const std::string swhere = stage_where + " set " + in_quotes(key);
          refuse_study_keys(key, swhere);
          stage.assignments.push_back(key + "=" + override_text(*value, swhere));
          check_assignment(stage.assignments.back(), swhere);
        }
        for (const auto& other : spec.stages)
          if (safe_name(other.name) == safe_name(stage.name))
            throw ConfigError(stage_where + ": another stage is named " + in_quotes(other.name) +
                              " (their folders would be the same); give each stage its own name");
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

}  // namespace ganpo
