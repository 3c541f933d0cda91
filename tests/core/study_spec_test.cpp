#include "core/study_spec.h"

#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include <gtest/gtest.h>

#include "core/error.h"
#include "tests/core/temp_dir_support.h"

namespace ganpo {
namespace {

namespace fs = std::filesystem;

const char* kStudy = R"(
name = "mini"
seeds = [1, 2, 3]
[base]
stage = "preference"
[base.train]
max_steps = 20
[grid]
"objective.loss_type" = ["sigmoid", "simpo"]
"ganpo.enabled" = [false, true]
"data.label_noise" = [0.0, 0.2]
[[stage]]
name = "sft"
set = { stage = "sft", "train.max_steps" = 30 }
)";

std::string error_of(const std::string& text) {
  try {
    expand_study(study_from_toml(text, ".", "study.toml"), "/tmp/out");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(StudySpec, GridTimesSeedsAfterTheSharedStage) {
  const StudySpec spec = study_from_toml(kStudy, ".", "study.toml");
  EXPECT_EQ(spec.name, "mini");
  ASSERT_EQ(spec.grid.size(), 3u);
  EXPECT_EQ(spec.grid[2].second, (std::vector<std::string>{"0", "0.2"}));
  const auto runs = expand_study(spec, "/tmp/study");
  ASSERT_EQ(runs.size(), 1u + 2 * 2 * 2 * 3);

  const StudyRun& sft = runs[0];
  EXPECT_EQ(sft.stage, "sft");
  EXPECT_EQ(sft.config.stage, "sft");
  EXPECT_EQ(sft.config.train.max_steps, 30);
  EXPECT_EQ(sft.config.output_dir, "/tmp/study/stage-sft");

  std::set<std::string> folders, arms;
  for (size_t i = 1; i < runs.size(); ++i) {
    const StudyRun& r = runs[i];
    EXPECT_TRUE(r.stage.empty());
    EXPECT_EQ(r.config.stage, "preference");
    EXPECT_EQ(r.config.train.max_steps, 20);
    EXPECT_EQ(r.config.seed, r.seed);
    EXPECT_EQ(r.config.model.checkpoint, "/tmp/study/stage-sft/final") << "every arm starts from the shared SFT";
    EXPECT_EQ(r.config.model.reference, "/tmp/study/stage-sft/final");
    folders.insert(r.config.output_dir);
    arms.insert(r.arm);
  }
  EXPECT_EQ(folders.size(), runs.size() - 1) << "every run has its own folder";
  EXPECT_EQ(arms.size(), 8u);
  // The first key varies slowest; the seed fastest.
  EXPECT_EQ(runs[1].arm, "objective.loss_type=sigmoid, ganpo.enabled=false, data.label_noise=0");
  EXPECT_EQ(runs[1].seed, 1);
  EXPECT_EQ(runs[3].seed, 3);
  EXPECT_EQ(runs[1].config.output_dir, "/tmp/study/loss_type-sigmoid__enabled-false__label_noise-0__seed-1");
  const StudyRun& last = runs.back();
  EXPECT_EQ(last.config.objective.loss_type, "simpo");
  EXPECT_TRUE(last.config.ganpo.enabled);
  EXPECT_DOUBLE_EQ(last.config.data.label_noise, 0.2);
  EXPECT_EQ(last.config.name, "mini · objective.loss_type=simpo, ganpo.enabled=true, data.label_noise=0.2 · seed 3");
}

TEST(StudySpec, BaseConfigFileIsReadRelativeToTheStudy) {
  const test::TestTempDir tmp;
  const fs::path& dir = tmp.path();
  std::ofstream(dir / "run.toml") << "name = \"from file\"\n[train]\nlearning_rate = 0.001\n";
  std::ofstream(dir / "study.toml") << "base_config = \"run.toml\"\n";
  const StudySpec spec = load_study_file((dir / "study.toml").string());
  EXPECT_EQ(spec.name, "from file");
  const auto runs = expand_study(spec, (dir / "out").string());
  ASSERT_EQ(runs.size(), 1u) << "no grid, no seeds: the base config once";
  EXPECT_EQ(runs[0].arm, "base");
  EXPECT_DOUBLE_EQ(runs[0].config.train.learning_rate, 0.001);
}

TEST(StudySpec, UnquotedDottedKeysAreRunConfigKeys) {
  const StudySpec spec = study_from_toml(
      "[base]\n[grid]\nobjective.loss_type = [\"sigmoid\", \"simpo\"]\nganpo.enabled = [true]\n"
      "[[stage]]\nname = \"sft\"\nset = { stage = \"sft\", train.max_steps = 7 }\n",
      ".", "study.toml");
  ASSERT_EQ(spec.grid.size(), 2u);
  EXPECT_EQ(spec.grid[0].first, "objective.loss_type") << "file order kept";
  EXPECT_EQ(spec.grid[1].first, "ganpo.enabled");
  EXPECT_EQ(spec.stages[0].assignments, (std::vector<std::string>{"stage=sft", "train.max_steps=7"}));
}

TEST(StudySpec, ProblemsNameTheKeyOrTheArm) {
  // Unknown grid key, wrong value type, empty list, keys the study sets itself.
  EXPECT_NE(error_of("[base]\n[grid]\n\"objective.loss_typ\" = [\"simpo\"]\n").find("[grid] \"objective.loss_typ\""),
            std::string::npos);
  EXPECT_NE(error_of("[base]\n[grid]\n\"train.max_steps\" = [\"many\"]\n").find("train.max_steps"), std::string::npos);
  EXPECT_NE(error_of("[base]\n[grid]\n\"ganpo.enabled\" = []\n").find("non-empty"), std::string::npos);
  EXPECT_NE(error_of("[base]\n[grid]\nseed = [1, 2]\n").find("seeds = [...]"), std::string::npos);
  EXPECT_NE(error_of("seeds = [1]\n").find("no base run config"), std::string::npos);
  EXPECT_NE(error_of("[base]\nbogus = 1\n").find("\"bogus\""), std::string::npos);
  EXPECT_NE(error_of("[base]\n[[stage]]\nset = { stage = \"sft\" }\n").find("name"), std::string::npos);
  // Stages: a set table is required, other keys and study-set keys are refused, names distinct.
  EXPECT_NE(error_of("[base]\n[[stage]]\nname = \"sft\"\nset = [\"stage=sft\"]\n").find("needs set = {"), std::string::npos);
  EXPECT_NE(error_of("[base]\n[[stage]]\nname = \"sft\"\nsets = { stage = \"sft\" }\n").find("\"sets\" is not a stage key"),
            std::string::npos);
  EXPECT_NE(error_of("[base]\n[[stage]]\nname = \"sft\"\nset = { seed = 3 }\n").find("set per run by the study"),
            std::string::npos);
  EXPECT_NE(error_of("[base]\n[[stage]]\nname = \"sft 1\"\nset = { stage = \"sft\" }\n[[stage]]\nname = \"sft_1\"\n"
                     "set = { stage = \"sft\" }\n").find("another stage is named"),
            std::string::npos);
  EXPECT_NE(error_of("[base]\n[grid]\n\" seed\" = [1, 2]\n").find("set per run by the study"), std::string::npos);
  // Two runs that would share a folder: a repeated seed.
  EXPECT_NE(error_of("seeds = [1, 1]\n[base]\n").find("same folder as arm base, seed 1"), std::string::npos);
  // Two values that set the same thing would be two arms of identical runs; a key with spaces
  // around it is the key (the report reads it back), so twice with and without them is refused.
  std::string same = error_of("[base]\n[grid]\n\"data.label_noise\" = [\"0.1\", \"0.10\"]\n");
  EXPECT_NE(same.find("\"0.1\" and \"0.10\" set data.label_noise alike (0.1)"), std::string::npos) << same;
  same = error_of("[base]\n[grid]\n\"train.learning_rate\" = [1e-3, 0.001]\n");
  EXPECT_NE(same.find("set train.learning_rate alike"), std::string::npos) << same;
  same = error_of("[base]\n[grid]\n\"ganpo.enabled\" = [\"true\", \"True\"]\n");
  EXPECT_NE(same.find("set ganpo.enabled alike (true)"), std::string::npos) << same;
  const StudySpec spaced = study_from_toml("[base]\n[grid]\n\"ganpo.enabled \" = [false, true]\n", ".", "s");
  ASSERT_EQ(spaced.grid.size(), 1u);
  EXPECT_EQ(spaced.grid[0].first, "ganpo.enabled");
  EXPECT_NE(error_of("[base]\n[grid]\n\"ganpo.enabled \" = [false]\n\"ganpo.enabled\" = [true]\n").find("listed twice"),
            std::string::npos);
  // A problem inside [base] says so.
  EXPECT_NE(error_of("[base]\n[base.train]\nlearning_rat = 1\n").find("study.toml: [base]: "), std::string::npos);
  // A value that parses but makes an invalid run: named with its arm and seed, before anything runs.
  const std::string bad = error_of("seeds = [4]\n[base]\n[grid]\n\"objective.beta\" = [0.1, -1]\n");
  EXPECT_NE(bad.find("1 problem(s)"), std::string::npos) << bad;
  EXPECT_NE(bad.find("arm objective.beta=-1, seed 4: objective.beta must be"), std::string::npos) << bad;
  EXPECT_EQ(error_of("seeds = [4]\n[base]\n[grid]\n\"objective.beta\" = [0.1, 0.2]\n"), "");
  // A grid far too big is refused before a single run is built.
  std::string huge = "seeds = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n[base]\n[grid]\n";
  for (const char* key : {"objective.beta", "train.learning_rate", "ganpo.adv_weight", "data.label_noise"})
    huge += std::string("\"") + key + "\" = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]\n";
  EXPECT_NE(error_of(huge).find("stands for 100000 runs"), std::string::npos) << error_of(huge);
}

const char* kPipeline = R"(
name = "demo"
seed = 7
[train]
max_steps = 20
[[pipeline]]
name = "sft"
set = { stage = "sft", "train.max_steps" = 30, "train.learning_rate" = 3e-3 }
)";

// A run config that chains stages is a study of one arm: the stage first, then the config itself
// from the stage's final weights, with its own seed.
TEST(StudySpec, APipelineIsAStudyOfOneArm) {
  const RunConfig config = config_from_toml(kPipeline);
  ASSERT_EQ(config.pipeline.size(), 1u);
  const StudySpec spec = study_of_pipeline(config);
  EXPECT_EQ(spec.name, "demo");
  EXPECT_TRUE(spec.base.pipeline.empty());
  const auto runs = expand_study(spec, "/tmp/p");
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0].config.stage, "sft");
  EXPECT_EQ(runs[0].config.train.max_steps, 30);
  EXPECT_DOUBLE_EQ(runs[0].config.train.learning_rate, 3e-3);
  EXPECT_EQ(runs[0].config.seed, 7);
  EXPECT_EQ(runs[1].config.stage, "preference");
  EXPECT_EQ(runs[1].config.train.max_steps, 20);
  EXPECT_EQ(runs[1].config.seed, 7);
  EXPECT_EQ(runs[1].config.model.checkpoint, "/tmp/p/stage-sft/final");
  EXPECT_EQ(runs[1].config.model.reference, "/tmp/p/stage-sft/final");
  for (const auto& r : runs) EXPECT_TRUE(r.config.pipeline.empty()) << "every run is one stage";

  // A base of random weights (a model folder's config.json alone): the first stage draws them,
  // the next starts from that stage's trained weights.
  RunConfig from_scratch = config;
  from_scratch.model.checkpoint = "/models/llama-shape";
  from_scratch.model.random_weights = true;
  const auto scratch_runs = expand_study(study_of_pipeline(from_scratch), "/tmp/p");
  ASSERT_EQ(scratch_runs.size(), 2u);
  EXPECT_EQ(scratch_runs[0].config.model.checkpoint, "/models/llama-shape");
  EXPECT_TRUE(scratch_runs[0].config.model.random_weights);
  EXPECT_EQ(scratch_runs[1].config.model.checkpoint, "/tmp/p/stage-sft/final");
  EXPECT_FALSE(scratch_runs[1].config.model.random_weights) << "the second stage loads the first's weights";

  // The same through a study file whose base config has the pipeline.
  std::string text = "name = \"s\"\n[base]\n";
  text += "[base.train]\nmax_steps = 20\n[[base.pipeline]]\nname = \"sft\"\nset = { stage = \"sft\" }\n";
  const StudySpec from_file = study_from_toml(text, ".", "study.toml");
  ASSERT_EQ(from_file.stages.size(), 1u);
  EXPECT_TRUE(from_file.base.pipeline.empty());
  EXPECT_EQ(expand_study(from_file, "/tmp/q").size(), 2u);
  // A stored study is read without its base, but its shared stages still count.
  EXPECT_EQ(study_from_toml(text, ".", "stored", /*read_base=*/false).base.pipeline.size() +
                study_from_toml(text, ".", "stored", false).stages.size(),
            1u);
  // Shared stages in two places are refused.
  EXPECT_NE(error_of(text + "[[stage]]\nname = \"x\"\nset = { stage = \"sft\" }\n").find("in one place"),
            std::string::npos);
}

// study_to_toml writes a study that reads back as the same runs, base config inline.
TEST(StudySpec, WrittenStudiesReadBackAsTheSameRuns) {
  const StudySpec spec = study_from_toml(kStudy, ".", "study.toml");
  const std::string text = study_to_toml(spec);
  const StudySpec again = study_from_toml(text, ".", "written");
  EXPECT_EQ(again.name, spec.name);
  EXPECT_EQ(again.seeds, spec.seeds);
  EXPECT_EQ(again.grid, spec.grid);
  ASSERT_EQ(again.stages.size(), 1u);
  EXPECT_EQ(again.stages[0].assignments, spec.stages[0].assignments);
  const auto a = expand_study(spec, "/tmp/s"), b = expand_study(again, "/tmp/s");
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].arm, b[i].arm);
    EXPECT_EQ(config_to_toml(a[i].config), config_to_toml(b[i].config));
  }
  // Values that are not plain numbers or booleans stay strings, whatever they hold.
  StudySpec odd = spec;
  odd.grid = {};
  odd.grid.push_back({"data.chat_template", {"a \" } # b", "true", "1e3", "0.50", "+inf", "1_000", "-0", "7"}});
  const StudySpec odd_again = study_from_toml(study_to_toml(odd), ".", "odd");
  EXPECT_EQ(odd_again.grid, odd.grid);
}

// The shipped "Paper in miniature (CPU)" study: 4 methods x 2 noise levels x 3 seeds after one
// shared SFT stage, every run valid, on the mixed built-in task, judged at the paper's temperatures.
TEST(StudySpec, ThePaperInMiniatureStudyExpandsToValidRuns) {
  const StudySpec spec = load_study_file(std::string(GANPO_SOURCE_DIR) + "/resources/studies/paper-in-miniature.toml");
  const auto runs = expand_study(spec, (std::filesystem::temp_directory_path() / "ganpo-pim-plan").string());
  ASSERT_EQ(runs.size(), 25u);
  EXPECT_EQ(runs[0].config.stage, "sft");
  for (size_t i = 1; i < runs.size(); ++i) {
    EXPECT_EQ(runs[i].config.stage, "preference");
    EXPECT_EQ(runs[i].config.data.builtin, "mixed");
    EXPECT_EQ(parse_temperatures(runs[i].config.eval.temperatures), (std::vector<double>{0.5, 0.7, 1.0, 1.3, 1.5}));
  }
}

}  // namespace
}  // namespace ganpo
