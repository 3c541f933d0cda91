// CompareView: the Compare tab for several selected runs. One metric overlaid for every run (a
// combo of the union of the runs' metric keys; x by step; each run in run_color(id), legend
// "#id name"), a config diff table with only the fields that differ (rows = dotted field names,
// columns = runs), and a results table (final eval metrics and judge win rates per sampling
// temperature, one row per run). Every read goes through the StoreWorker; a run with many points
// of the metric is fetched as run-store min/max buckets (decimated_series) rather than raw rows.
// Each part exports as CSV, the overlay also as PNG / PDF; exportAll writes them all to a folder.
#pragma once

#include <QString>
#include <QStringList>
#include <QWidget>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "ui/compare_results.h"
#include "ui/config_diff.h"

class QComboBox;
class QCustomPlot;
class QLabel;
class QTableWidget;

namespace ganpo::ui {

class StoreWorker;

class CompareView : public QWidget {
  Q_OBJECT
public:
  // Above this many points of the metric a run is drawn from kBuckets min/max buckets.
  static constexpr int64_t kRawPointLimit = 4000;
  static constexpr int64_t kBuckets = 1500;

  CompareView(StoreWorker* store, std::vector<int64_t> run_ids, QWidget* parent = nullptr);

  // Shows key for every run (loads it through the store).
  void setMetric(const QString& key);
  QString metric() const;
  QStringList metricKeys() const;
  // Writes overlay.png, overlay.pdf, overlay.csv, config_diff.csv and results.csv into folder
  // (created if needed); false if any of them could not be written.
  bool exportAll(const QString& folder);
  bool exportOverlayImage(const QString& path) const;  // .png or .pdf by suffix
  bool exportOverlayCsv(const QString& path) const;    // run_id,run_name,step,value
  bool exportConfigDiffCsv(const QString& path) const;
  bool exportResultsCsv(const QString& path) const;

  // State, for the main window and tests.
  bool isLoaded() const;  // runs, tables and the current metric's curves are in place
  const std::vector<int64_t>& runIds() const { return run_ids_; }
  QCustomPlot* plot() const { return plot_; }
  QString statusText() const;  // what the line under the overlay says (counts, envelopes, NaN / Inf marks)
  QTableWidget* configTable() const { return config_table_; }
  QTableWidget* resultsTable() const { return results_table_; }
  const std::vector<ConfigDiffRow>& configDiff() const { return diff_; }

Q_SIGNALS:
  void loaded();  // the current metric's curves have been drawn

protected:
  void changeEvent(QEvent* event) override;  // follows a light / dark palette switch

private:
  struct RunInfo {
    int64_t id = 0;
    QString name;
    nlohmann::json config;
    std::vector<std::string> keys;
    std::map<std::string, int64_t> last_steps;  // metric key -> step of its newest row
    CompareResults results;
    bool found = false;
  };
  struct Curve {
    std::vector<int64_t> steps;
    std::vector<double> values;  // decimated: each bucket's min then max at its middle step
    bool decimated = false;
    std::vector<int64_t> non_finite_steps;  // NaN / +-Inf points (marked, never drawn as values)
  };
  void onRuns(std::vector<RunInfo> runs);
  void onCurves(const QString& key, std::vector<Curve> curves);
  void fillConfigTable();
  void fillResultsTable();
  QString runLabel(size_t i) const;
  std::vector<double> temperatures() const;
  void exportDialog(const QString& what);
  void exportAllDialog();

  StoreWorker* store_;
  std::vector<int64_t> run_ids_;
  std::vector<RunInfo> runs_;
  std::vector<Curve> curves_;
  std::vector<ConfigDiffRow> diff_;
  QString metric_;
  int generation_ = 0;  // drops the answers of superseded metric requests
  bool runs_loaded_ = false;
  bool curves_loaded_ = false;

  QComboBox* metric_combo_ = nullptr;
  QLabel* status_label_ = nullptr;
  QCustomPlot* plot_ = nullptr;
  QTableWidget* config_table_ = nullptr;
  QTableWidget* results_table_ = nullptr;
};

}  // namespace ganpo::ui
