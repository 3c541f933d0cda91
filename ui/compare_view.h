// CompareView: the Compare tab for several selected runs. One metric overlaid for every run (a
// combo of the union of the runs' metric keys; x by step, wall time since each run's first point
// or tokens seen; each run in run_color(id), legend
// "#id name", hidden past kLegendRunLimit runs; hovering lists every run's value at that step),
// a config diff table with only the fields that differ (rows = dotted field names, columns =
// runs), and a results table (final eval metrics and judge win rates per sampling temperature,
// one row per run). Every read goes through the StoreWorker; a run with many points of the
// metric is fetched as run-store min/max buckets (decimated_series) rather than raw rows, drawn
// as a faint band, and read again for the steps in view when the user zooms or pans. Each run's
// curve is drawn raw (faint) under the same debiased-EMA smoothing as the dashboard's (slider),
// with the ln 2 chance line on BCE-valued metrics. Each part exports as CSV, the overlay also as
// PNG / PDF; exportAll writes them all to a folder.
#pragma once

#include <QElapsedTimer>
#include <QString>
#include <QStringList>
#include <QTimer>
#include <QWidget>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "ui/chart_series.h"
#include "ui/compare_results.h"
#include "ui/config_diff.h"

class QComboBox;
class QCPGraph;
class QCPItemStraightLine;
class QCustomPlot;
class QLabel;
class QTableWidget;
class QToolButton;

namespace ganpo::ui {

class SmoothingControl;

class StoreWorker;

class CompareView : public QWidget {
  Q_OBJECT
public:
  // Above this many points of the metric a run is drawn from kBuckets min/max buckets.
  static constexpr int64_t kRawPointLimit = 4000;
  static constexpr int64_t kBuckets = 1500;

  CompareView(StoreWorker* store, std::vector<int64_t> run_ids, QWidget* parent = nullptr);

  static constexpr int kZoomDebounceMs = 150;

  // Shows key for every run (loads it through the store).
  void setMetric(const QString& key);
  // Smoothing weight of the drawn lines (0 = raw; clamped to [0, 0.99]).
  void setSmoothing(double weight);
  double smoothing() const { return smoothing_; }
  // Shows steps lo..hi as the user zooming does (envelopes are read again for them), and back.
  // (x-axis units: steps in Step mode.)
  void setStepRange(double lo, double hi);
  // x by step, by wall time since each run's first point of the metric (runs started at other
  // times side by side: which is faster), or by tokens seen (runs of other batch sizes at equal
  // data). A zoom reads each run again over the steps that fall in the x range.
  void setXAxisMode(XAxisMode mode);
  XAxisMode xAxisMode() const { return x_mode_; }
  // Reads every run again (steps logged since included) and shows every step.
  void resetZoom();
  // Reads every run again and keeps the view where the user zoomed (or grows it with the runs
  // where it showed every step). F5 on this tab.
  void refresh();
  // The main window's poll: some of these runs changed. While this tab is visible they are read
  // again, at most once per live interval; a hidden tab is read again when it is shown.
  void runsChanged(const std::vector<int64_t>& changed_run_ids);
  static constexpr int kLiveRefreshMs = 5000;
  void setLiveInterval(int ms);  // (tests: 0)
  QString metric() const;
  QStringList metricKeys() const;
  // Writes overlay.png, overlay.pdf, overlay.csv, config_diff.csv and results.csv into folder
  // (created if needed); false if any of them could not be written.
  bool exportAll(const QString& folder);
  bool exportOverlayImage(const QString& path) const;  // .png or .pdf by suffix
  // run_id,run_name,step,wall_time_s (since the run's first point),tokens_seen,value,kind
  bool exportOverlayCsv(const QString& path) const;
  bool exportConfigDiffCsv(const QString& path) const;
  bool exportResultsCsv(const QString& path) const;

  // State, for the main window and tests.
  bool isLoaded() const;  // runs, tables and the current metric's curves are in place
  const std::vector<int64_t>& runIds() const { return run_ids_; }
  QCustomPlot* plot() const { return plot_; }
  // A run's graphs: its smoothed line (in the legend), its raw values (faint), while it is drawn
  // from buckets their min / max band, and its NaN / Inf crosses (nullptr without any).
  struct RunGraphs {
    QCPGraph* smooth = nullptr;
    QCPGraph* raw = nullptr;
    QCPGraph* band_min = nullptr;
    QCPGraph* band_max = nullptr;
    QCPGraph* marks = nullptr;
  };
  const RunGraphs* runGraphs(int64_t run_id) const;  // nullptr for a run not in the view
  // The run's colour here: its run-list colour, or a shade of it where an earlier run in this
  // view has the same one (run-list colours repeat every ten ids).
  QColor runColor(int64_t run_id) const;
  bool isDecimated(int64_t run_id) const;
  std::pair<int64_t, int64_t> stepsRead(int64_t run_id) const;  // the step range last read
  std::optional<double> referenceLine() const;  // ln 2 on BCE-valued metrics
  bool zoomPending() const { return zoom_timer_.isActive() || zoom_in_flight_; }
  QString statusText() const;  // what the line under the overlay says (counts, envelopes, NaN / Inf marks)
  // The plot's legend: shown by default up to kLegendRunLimit runs (past that it covers the
  // curves; the hover tooltip names each run), and toggled by the Legend button.
  static constexpr int kLegendRunLimit = 10;
  void setLegendVisible(bool on);
  bool legendVisible() const;
  // What hovering the plot at x shows: where ("step N"; the wall time or tokens seen in those
  // modes), then each drawn run's value at its point nearest x, named whole, highest smoothed
  // value first (empty where no run is drawn).
  QString tooltipAt(double x) const;
  QTableWidget* configTable() const { return config_table_; }
  QTableWidget* resultsTable() const { return results_table_; }
  const std::vector<ConfigDiffRow>& configDiff() const { return diff_; }

Q_SIGNALS:
  void loaded();  // the current metric's curves have been drawn

protected:
  void changeEvent(QEvent* event) override;  // follows a light / dark palette switch
  void showEvent(QShowEvent* event) override;

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
    std::vector<int64_t> steps;  // raw: every point's; decimated: each bucket's middle step
    std::vector<double> values;  // raw: as stored; decimated: the mean of each bucket's finite values
    std::vector<double> mins, maxs;  // decimated only: each bucket's min / max (NaN: no finite value)
    std::vector<int64_t> counts;     // decimated only: each bucket's finite points
    bool decimated = false;
    int64_t lo = 0, hi = -1;  // the steps read
    std::vector<int64_t> non_finite_steps;  // NaN / +-Inf points (marked, never drawn as values)
    std::vector<int64_t> non_finite_counts;  // per mark: the points it stands for (a bucket's, or 1)
    // Where the run was (wall time, tokens seen) at clock_steps: every point's step, or each
    // bucket's first and last; read with the whole run's curve, which maps steps to wall time
    // and tokens seen for every later read.
    std::vector<int64_t> clock_steps;
    std::vector<double> wall_times, tokens;
  };
  // What is drawn of a run: each point's x (NaN: not placed under this x mode) and smoothed value.
  struct Drawn {
    std::vector<double> xs, smoothed;
  };
  // Reads run's key over steps lo..hi: raw rows up to kRawPointLimit, buckets beyond (store thread).
  // with_clock: also where the run was at each point (the whole run's read).
  static Curve readCurve(RunStore& store, int64_t run_id, const std::string& key, int64_t lo, int64_t hi,
                         bool with_clock = false);
  // x of run i's step under the x mode, and back (interpolated along the run's whole curve).
  double xOf(size_t i, double step) const;
  double xOf(size_t i, double step, XAxisMode mode) const;
  double stepOf(size_t i, double x) const;
  void readRuns();  // names, configs, metric keys and last steps, results; then the metric's curves
  void onRuns(std::vector<RunInfo> runs);
  void onCurves(const QString& key, std::vector<Curve> curves);
  void drawCurves(bool rescale);
  void onZoomSettled();  // reads the steps in view again for the runs drawn from buckets
  int runIndex(int64_t run_id) const;
  void fillConfigTable();
  void fillResultsTable();
  QString runLabel(size_t i) const;
  QString legendLabel(size_t i) const;
  std::vector<double> temperatures() const;
  void exportDialog(const QString& what);
  void exportAllDialog();

  StoreWorker* store_;
  std::vector<int64_t> run_ids_;
  std::vector<RunInfo> runs_;
  std::vector<Curve> curves_;
  std::vector<Curve> overviews_;  // per run, every step as first read: what a zoomed read's smoothing starts from
  std::vector<RunGraphs> graphs_;  // per run, as curves_
  std::vector<Drawn> drawn_;       // per run, as curves_
  std::vector<QColor> colors_;     // per run, as runs_
  QTimer live_timer_;              // the next read of runs that changed
  QElapsedTimer last_read_;
  int live_interval_ms_ = kLiveRefreshMs;
  bool stale_ = false;           // a run changed since the last read
  bool runs_in_flight_ = false;
  bool keep_view_ = false;       // the read in flight keeps the axes (a refresh while zoomed)
  std::vector<ConfigDiffRow> diff_;
  QString metric_;
  int generation_ = 0;  // drops the answers of superseded metric requests
  bool runs_loaded_ = false;
  bool curves_loaded_ = false;

  double smoothing_ = 0.6;
  XAxisMode x_mode_ = XAxisMode::Step;
  bool drawing_ = false;         // axis changes made by drawCurves are not the user's zoom
  bool zoom_in_flight_ = false;
  QTimer zoom_timer_;
  QCPItemStraightLine* reference_line_ = nullptr;
  SmoothingControl* smoothing_control_ = nullptr;

  QComboBox* metric_combo_ = nullptr;
  QComboBox* x_combo_ = nullptr;
  QToolButton* legend_button_ = nullptr;
  QLabel* status_label_ = nullptr;
  QCustomPlot* plot_ = nullptr;
  QTableWidget* config_table_ = nullptr;
  QTableWidget* results_table_ = nullptr;
};

}  // namespace ganpo::ui
