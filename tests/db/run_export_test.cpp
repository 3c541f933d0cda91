// Export of a run as CSV and JSON Lines, read back with an independent RFC 4180 parser and
// nlohmann::json.
#include "db/run_export.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace fs = std::filesystem;
using namespace ganpo;

namespace {

using Table = std::vector<std::vector<std::string>>;

// A small RFC 4180 reader: quoted fields may hold commas, doubled quotes and line breaks.
Table parse_csv(const std::string& text) {
  Table rows;
  std::vector<std::string> row;
  std::string field;
  bool quoted = false, any = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        field += c;
      }
    } else if (c == '"') {
      quoted = true;
      any = true;
    } else if (c == ',') {
      row.push_back(field);
      field.clear();
    } else if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') {
      row.push_back(field);
      rows.push_back(row);
      row.clear();
      field.clear();
      any = false;
      ++i;
    } else {
      field += c;
      any = true;
    }
  }
  if (any || !row.empty()) {
    row.push_back(field);
    rows.push_back(row);
  }
  return rows;
}

std::vector<nlohmann::json> parse_jsonl(const std::string& text) {
  std::vector<nlohmann::json> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

class RunExportTest : public ::testing::Test {
protected:
  void SetUp() override {
    static int counter = 0;
    dir_ = fs::temp_directory_path() / ("ganpo_export_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(dir_);
    store_.emplace(RunStore::open((dir_ / "ws.sqlite").string()));
    run_ = store_->create_run("export me", "preference", "{}");
    const double inf = std::numeric_limits<double>::infinity();
    // Step 1 has loss and lr; step 2 adds an eval-only metric; step 3 has NaN and -Inf.
    store_->append_metrics({{0, run_, 1, "loss", 0.6931471805599453, 100.5, 64},
                            {0, run_, 1, "lr", 1e-4, 100.5, 64},
                            {0, run_, 2, "loss", 0.5, 101.5, 128},
                            {0, run_, 2, "lr", 2e-4, 101.5, 128},
                            {0, run_, 2, "eval/acc", 0.75, 101.5, 128},
                            {0, run_, 3, "loss", std::nan(""), 102.5, 192},
                            {0, run_, 3, "lr", -inf, 102.5, 192}});
  }
  void TearDown() override {
    store_.reset();
    fs::remove_all(dir_);
  }
  std::string exported(ExportTable table, ExportFormat format, int64_t* rows = nullptr) {
    std::ostringstream out;
    const int64_t n = export_run(*store_, run_, table, format, out);
    if (rows) *rows = n;
    return out.str();
  }

  fs::path dir_;
  std::optional<RunStore> store_;
  int64_t run_ = 0;
};

}  // namespace

TEST_F(RunExportTest, MetricsCsvIsWideWithOneRowPerStep) {
  int64_t n = 0;
  const Table t = parse_csv(exported(ExportTable::Metrics, ExportFormat::Csv, &n));
  EXPECT_EQ(n, 3);
  ASSERT_EQ(t.size(), 4u);
  EXPECT_EQ(t[0], (std::vector<std::string>{"step", "wall_time", "eval/acc", "loss", "lr"}));
  EXPECT_EQ(t[1][0], "1");
  EXPECT_EQ(t[1][2], "") << "eval/acc was not logged at step 1";
  EXPECT_EQ(std::stod(t[1][3]), 0.6931471805599453) << "full precision round trip";
  EXPECT_EQ(std::stod(t[1][4]), 1e-4);
  EXPECT_EQ(t[2][2], "0.75");
  EXPECT_EQ(std::stod(t[2][1]), 101.5);
  EXPECT_EQ(t[3][3], "nan");
  EXPECT_EQ(t[3][4], "-inf");
  EXPECT_TRUE(std::isnan(std::stod(t[3][3]))) << "readers parse it as a number";
}

TEST_F(RunExportTest, MetricsJsonlKeepsNonFiniteValuesAsStrings) {
  const auto rows = parse_jsonl(exported(ExportTable::Metrics, ExportFormat::Jsonl));
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0]["step"], 1);
  EXPECT_DOUBLE_EQ(rows[0]["loss"].get<double>(), 0.6931471805599453);
  EXPECT_FALSE(rows[0].contains("eval/acc"));
  EXPECT_DOUBLE_EQ(rows[1]["eval/acc"].get<double>(), 0.75);
  EXPECT_EQ(rows[2]["loss"], "NaN");
  EXPECT_EQ(rows[2]["lr"], "-Infinity");
}

TEST_F(RunExportTest, SamplesCsvQuotesCommasQuotesAndNewlines) {
  SampleRow s;
  s.prompt_index = 0;
  s.prompt = "List 3 fruits, comma separated:";
  s.reference_text = "apple, \"pear\"\nplum";
  s.policy_text = "apple, pear, plum";
  s.reference_score = 0.5;
  s.policy_score = 1.0;
  SampleRow negative = s;  // an external judge may print any finite number
  negative.prompt_index = 2;
  negative.reference_score = -1;
  negative.policy_score = -0.25;
  SampleRow no_judge;
  no_judge.prompt_index = 1;
  no_judge.prompt = "free text";
  store_->add_samples(run_, 40, {s, no_judge, negative});
  int64_t n = 0;
  const Table t = parse_csv(exported(ExportTable::Samples, ExportFormat::Csv, &n));
  EXPECT_EQ(n, 3);
  ASSERT_EQ(t.size(), 4u);
  EXPECT_EQ(t[0], (std::vector<std::string>{"step", "prompt_index", "prompt", "reference", "policy", "reference_score",
                                            "policy_score"}));
  EXPECT_EQ(t[1], (std::vector<std::string>{"40", "0", s.prompt, s.reference_text, s.policy_text, "0.5", "1"}));
  EXPECT_EQ(t[2][5], "") << "no judge: empty score";
  EXPECT_EQ(t[3][5], "-1") << "an external judge's negative scores are scores";
  EXPECT_EQ(t[3][6], "-0.25");
  const auto j = parse_jsonl(exported(ExportTable::Samples, ExportFormat::Jsonl));
  ASSERT_EQ(j.size(), 3u);
  EXPECT_EQ(j[2]["policy_score"], -0.25);
  EXPECT_EQ(j[0]["reference"], s.reference_text);
  EXPECT_TRUE(j[1]["policy_score"].is_null());
}

TEST_F(RunExportTest, EvalsFlattenTheirResults) {
  store_->add_eval(run_, 100, "eval", "{}", R"({"eval_loss":0.61,"eval_rewards/accuracies":0.8})");
  store_->add_eval(run_, 200, "judge", R"({"temperature":0.7})", R"({"win_rate":0.65,"eval_loss":null})");
  const Table t = parse_csv(exported(ExportTable::Evals, ExportFormat::Csv));
  ASSERT_EQ(t.size(), 3u);
  EXPECT_EQ(t[0], (std::vector<std::string>{"checkpoint_step", "kind", "created_at", "params", "eval_loss",
                                            "eval_rewards/accuracies", "win_rate"}));
  EXPECT_EQ(t[1][4], "0.60999999999999999");
  EXPECT_EQ(t[1][6], "");
  EXPECT_EQ(t[2][3], R"({"temperature":0.7})");
  EXPECT_EQ(t[2][4], "nan") << "a stored null (non-finite) result";
  const auto j = parse_jsonl(exported(ExportTable::Evals, ExportFormat::Jsonl));
  ASSERT_EQ(j.size(), 2u);
  EXPECT_DOUBLE_EQ(j[1]["params"]["temperature"].get<double>(), 0.7);
  EXPECT_DOUBLE_EQ(j[1]["result"]["win_rate"].get<double>(), 0.65);
}

TEST_F(RunExportTest, EventsInOrder) {
  store_->add_event(run_, "info", "start", 10);
  store_->add_event(run_, "error", "loss is NaN, stopping", 11);
  const Table t = parse_csv(exported(ExportTable::Events, ExportFormat::Csv));
  ASSERT_EQ(t.size(), 3u);
  EXPECT_EQ(t[2], (std::vector<std::string>{"11", "error", "loss is NaN, stopping"}));
}

TEST_F(RunExportTest, BadNamesAndMissingRunsGiveClearErrors) {
  EXPECT_EQ(parse_export_format("jsonl"), ExportFormat::Jsonl);
  EXPECT_EQ(parse_export_table("samples"), ExportTable::Samples);
  try {
    parse_export_format("xlsx");
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "unknown export format 'xlsx'; use csv or jsonl");
  }
  EXPECT_THROW(parse_export_table("weights"), Error);
  std::ostringstream out;
  EXPECT_THROW(export_run(*store_, run_ + 100, ExportTable::Metrics, ExportFormat::Csv, out), Error);
}

// An --out that names the workspace (or its WAL, or another workspace) is refused before anything
// is written: every run stays readable.
TEST_F(RunExportTest, AnExportNeverReplacesTheWorkspaceOrAnotherDatabase) {
  const std::string ws = (dir_ / "ws.sqlite").string();
  for (const std::string& target : {ws, ws + "-wal", (dir_ / "." / "ws.sqlite").string()}) {
    if (!fs::exists(target)) continue;  // (the WAL exists while the store is open in WAL mode)
    try {
      export_run_to_file(*store_, run_, ExportTable::Metrics, ExportFormat::Csv, target);
      FAIL() << target;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("export to another file"), std::string::npos) << e.what();
    }
  }
  const std::string other = (dir_ / "other.sqlite").string();
  { RunStore::open(other); }
  EXPECT_THROW(export_run_to_file(*store_, run_, ExportTable::Metrics, ExportFormat::Csv, other), Error);
  EXPECT_TRUE(store_->run(run_).has_value()) << "the workspace still reads";
  EXPECT_TRUE(RunStore::open(other).runs().empty()) << "the other workspace is untouched";
  const std::string csv = (dir_ / "m.csv").string();
  std::ofstream(csv) << "old export\n";
  EXPECT_GT(export_run_to_file(*store_, run_, ExportTable::Metrics, ExportFormat::Csv, csv), 0) << "a CSV is replaced";
}

TEST_F(RunExportTest, EmptyRunExportsHeaderOnly) {
  const int64_t empty = store_->create_run("empty", "sft", "{}");
  std::ostringstream out;
  EXPECT_EQ(export_run(*store_, empty, ExportTable::Metrics, ExportFormat::Csv, out), 0);
  EXPECT_EQ(out.str(), "step,wall_time\r\n");
}

TEST_F(RunExportTest, SamplesWithBytesThatAreNotUtf8StillExport) {
  SampleRow s;
  s.prompt = "p";
  s.policy_text = std::string("ok \xff\xfe bytes");  // a tiny byte-level model can emit any byte
  store_->add_samples(run_, 1, {s});
  const auto j = parse_jsonl(exported(ExportTable::Samples, ExportFormat::Jsonl));
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0]["policy"], "ok \xEF\xBF\xBD\xEF\xBF\xBD bytes") << "each bad byte becomes U+FFFD";
}

TEST_F(RunExportTest, DeeplyNestedStoredResultExportsAsItsText) {
  // A damaged workspace whose result nested 100000 levels deep crashed the export with a stack
  // overflow (printing and copying the parsed value recurse per level; found by
  // tests/fuzz/fuzz_workspace.cpp). It is exported as the stored text instead.
  const std::string deep = "{\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
  store_->add_eval(run_, 100, "judge", "{}", deep);
  store_->add_eval(run_, 200, "judge", "{}", R"({"win_rate":0.5})");
  const auto j = parse_jsonl(exported(ExportTable::Evals, ExportFormat::Jsonl));
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[0]["result"], deep);
  EXPECT_DOUBLE_EQ(j[1]["result"]["win_rate"].get<double>(), 0.5);
  const Table t = parse_csv(exported(ExportTable::Evals, ExportFormat::Csv));
  ASSERT_EQ(t.size(), 3u);
  EXPECT_EQ(t[0].back(), "win_rate");
  EXPECT_EQ(t[2].back(), "0.5");
}
