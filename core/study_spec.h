// A study: one base run config, a grid over any config keys, seeds and optional shared stages,
// and the runs it stands for.
//
//   name = "paper in miniature"
//   seeds = [1, 2, 3]
//   base_config = "demo.toml"          # relative to the study file; or an inline [base] table
//   [grid]
//   "objective.loss_type" = ["sigmoid", "simpo"]
//   "ganpo.enabled" = [false, true]
//   [[stage]]                          # shared stages, each trained once, in order
//   name = "sft"
//   set = { stage = "sft", "train.max_steps" = 300 }
//
// A base config's own [[pipeline]] stages are the study's shared stages (and a run config with a
// pipeline is run as a study of one arm: study_of_pipeline).
//
// Every arm (one point of the grid's cartesian product) x seed is one run: the base config, the
// arm's assignments and the seed; with shared stages it starts from (and uses as reference) the
// last stage's final/. expand_study() validates every run's config and names the arm of each
// problem, so a bad combination is reported before anything runs.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/config.h"

namespace ganpo {

// A shared stage is a pipeline stage: a name and "key=value" assignments, as --set takes them.
using StudyStage = PipelineStage;

struct StudySpec {
  std::string name;
  RunConfig base;
  std::vector<std::pair<std::string, std::vector<std::string>>> grid;  // key -> values (override text)
  std::vector<int64_t> seeds;  // empty = the base config's seed only
  std::vector<StudyStage> stages;
};

struct StudyRun {
  std::string stage;  // the shared stage's name, or "" for a grid arm
  std::string arm;    // "objective.loss_type=simpo, ganpo.enabled=true"; "base" when the grid is empty
  std::vector<std::string> assignments;
  int64_t seed = 0;
  RunConfig config;   // name, output_dir and seed set; validated
};

// Parses a study; base_config paths are read relative to source_dir. Throws ConfigError naming
// the study key (and the grid key) of any problem.
// read_base = false leaves spec.base default (the grid, seeds and stages of a stored study,
// whose base_config file may have moved since).
StudySpec study_from_toml(const std::string& text, const std::string& source_dir, const std::string& source_label,
                          bool read_base = true);
StudySpec load_study_file(const std::string& path);

// The study a run config with a pipeline stands for: its stages shared, one arm, its own seed.
StudySpec study_of_pipeline(const RunConfig& config);
// TOML that study_from_toml reads back as the same study (the base config inline as [base]).
std::string study_to_toml(const StudySpec& spec);

// More runs than this in one study is refused before any is built (a grid typed by mistake).
inline constexpr int64_t kMaxStudyRuns = 10000;

// The shared stages (in order), then every arm x seed, each writing under output_root/<slug>.
// Throws ConfigError listing every run whose config is invalid, with its arm and seed.
std::vector<StudyRun> expand_study(const StudySpec& spec, const std::string& output_root);

}  // namespace ganpo
