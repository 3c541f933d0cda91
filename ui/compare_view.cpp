#include "ui/chart_style.h"
#include "ui/compare_view.h"

#include <QComboBox>
#include <QDir>
#include <QFile>
#include <QFileDialog>
#include <QFileInfo>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QMenu>
#include <QMessageBox>
#include <QPixmap>
#include <QPushButton>
#include <QRegularExpression>
#include <QSaveFile>
#include <QSplitter>
#include <QTime>
#include <QTableWidget>
#include <QToolButton>
#include <QToolTip>
#include <QVBoxLayout>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <set>

#include "core/config.h"
#include "db/run_export.h"
#include "ui/chart_catalog.h"
#include "ui/chart_qcustomplot.h"
#include "ui/run_list_model.h"
#include "ui/series_smoothing.h"
#include "ui/smoothing_control.h"
#include "ui/store_worker.h"

namespace ganpo::ui {
namespace {

using CsvRows = std::vector<std::vector<std::string>>;

// digits: significant digits for the tables; CSV files take the shortest text that reads back as
// the same double.
QString number_text(double v, int digits = 6) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return QString::number(v, 'g', digits);
}

std::string csv_number(double v) { return number_text(v, QLocale::FloatingPointShortest).toStdString(); }

// QSaveFile replaces the target only once everything is written; the read-back then checks that
// what landed on disk is the whole file.
bool write_csv(const QString& path, const CsvRows& rows) {
  std::string text;
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) text += (i ? "," : "") + csv_field(row[i]);
    text += '\n';
  }
  QSaveFile file(path);
  if (!file.open(QIODevice::WriteOnly)) return false;
  file.write(text.data(), static_cast<qint64>(text.size()));
  if (!file.commit()) return false;
  return QFileInfo(path).size() == static_cast<qint64>(text.size());
}

// Images are drawn into a sibling file that must read back as what it claims to be (a PNG that
// QImage loads, a PDF that starts with %PDF) before it replaces the target.
bool write_checked(const QString& path, const std::function<bool(const QString&)>& write) {
  const QString suffix = QFileInfo(path).suffix().toLower();
  const QString part = path + ".part." + suffix;
  QFile::remove(part);
  bool ok = write(part);
  if (ok && suffix == "png") ok = !QImage(part).isNull();
  if (ok && suffix == "pdf") {
    QFile f(part);
    ok = f.open(QIODevice::ReadOnly) && f.read(4) == "%PDF";
  }
  if (ok && QFile::exists(path)) ok = QFile::remove(path);
  if (ok) ok = QFile::rename(part, path);
  if (!ok) QFile::remove(part);
  return ok;
}

// The debiased EMA of series_smoothing.h over a curve whose points may stand for several: a bucket
// of n points weighs as n points of its value (weight^n), so a line drawn from 1,500 buckets has
// the shape the same smoothing gives the raw points. state: the smoothing of the steps before the
// curve's first (a zoomed read continues where the whole run's line is), updated in place.
std::vector<double> smooth_points(const std::vector<double>& values, const std::vector<int64_t>& counts, double weight,
                                  EmaState& state) {
  std::vector<double> out(values.size(), std::numeric_limits<double>::quiet_NaN());
  for (size_t j = 0; j < values.size(); ++j) {
    const int64_t n = counts.empty() ? 1 : counts[j];
    if (!std::isfinite(values[j]) || n <= 0) continue;
    if (weight <= 0) {
      out[j] = values[j];
      continue;
    }
    const double w = std::pow(weight, static_cast<double>(n));
    state.accum = w * state.accum + (1 - w) * values[j];
    state.count += n;
    out[j] = state.accum / (1 - std::pow(weight, static_cast<double>(state.count)));
  }
  return out;
}

QIcon swatch(const QColor& color) {
  QPixmap p(12, 12);
  p.fill(color);
  return QIcon(p);
}

QWidget* section(const QString& title, QLabel** title_label, QPushButton** export_button, QWidget* body) {
  auto* box = new QWidget;
  auto* v = new QVBoxLayout(box);
  v->setContentsMargins(0, 4, 0, 0);
  auto* head = new QHBoxLayout;
  auto* label = new QLabel(title);
  QFont f = label->font();
  f.setBold(true);
  label->setFont(f);
  head->addWidget(label);
  head->addStretch(1);
  auto* button = new QPushButton("Export CSV...");
  head->addWidget(button);
  v->addLayout(head);
  v->addWidget(body, 1);
  *title_label = label;
  *export_button = button;
  return box;
}

QTableWidget* make_table() {
  auto* t = new QTableWidget;
  t->setEditTriggers(QAbstractItemView::NoEditTriggers);
  t->setSelectionBehavior(QAbstractItemView::SelectItems);
  t->setAlternatingRowColors(true);
  t->verticalHeader()->setDefaultSectionSize(22);
  t->horizontalHeader()->setStretchLastSection(true);
  // A capped column shows the start of its run's name ("#25 paper ..."), not a clipped middle.
  t->horizontalHeader()->setDefaultAlignment(Qt::AlignLeft | Qt::AlignVCenter);
  t->horizontalHeader()->setTextElideMode(Qt::ElideRight);
  return t;
}

// Columns as wide as their contents up to max_width: a long run name or value is elided and
// its cell says it whole in a tooltip, so one wide column does not push every other out of view.
void fit_columns(QTableWidget* table, int max_width) {
  table->resizeColumnsToContents();
  for (int c = 0; c < table->columnCount(); ++c) {
    if (table->columnWidth(c) <= max_width) continue;
    table->setColumnWidth(c, max_width);
    if (QTableWidgetItem* head = table->horizontalHeaderItem(c); head && head->toolTip().isEmpty())
      head->setToolTip(head->text());
    for (int r = 0; r < table->rowCount(); ++r)
      if (QTableWidgetItem* item = table->item(r, c)) item->setToolTip(item->text());
  }
}

constexpr int kMostColumnWidth = 220;

}  // namespace

CompareView::CompareView(StoreWorker* store, std::vector<int64_t> run_ids, QWidget* parent)
    : QWidget(parent), store_(store), run_ids_(std::move(run_ids)) {
  auto* layout = new QVBoxLayout(this);
  layout->setContentsMargins(6, 6, 6, 6);

  auto* controls = new QHBoxLayout;
  metric_combo_ = new QComboBox;
  metric_combo_->setMinimumContentsLength(18);
  metric_combo_->setSizeAdjustPolicy(QComboBox::AdjustToMinimumContentsLengthWithIcon);
  metric_combo_->setToolTip("Metrics logged by any of the selected runs");
  controls->addWidget(metric_combo_);
  x_combo_ = new QComboBox;
  x_combo_->addItems({"x: step", "x: wall time", "x: tokens seen"});
  x_combo_->setToolTip("The x axis: step, wall time since each run's first point of the metric (which run is faster), "
                       "or tokens seen (runs of other batch sizes at equal data)");
  controls->addWidget(x_combo_);
  controls->addSpacing(12);
  smoothing_control_ = new SmoothingControl(smoothing_, "Debiased exponential moving average weight, as on the dashboard (0 = raw)");
  controls->addWidget(smoothing_control_);
  auto* reset = new QPushButton("Reset zoom");
  reset->setToolTip("Read every run again, steps logged since included, and show every step (or double-click "
                    "the plot). Runs that log more are read again on their own every few seconds while this tab "
                    "is in front");
  controls->addWidget(reset);
  legend_button_ = new QToolButton;
  legend_button_->setText("Legend");
  legend_button_->setCheckable(true);
  legend_button_->setToolTip("Show the legend on the plot (hidden by default past " + QString::number(kLegendRunLimit) +
                             " runs, where it would cover the curves: hover a curve for its run)");
  controls->addWidget(legend_button_);
  controls->addStretch(1);
  // The exports in one menu: four buttons made the tab so wide that the run list beside it shrank
  // to a sliver once Compare opened.
  auto* exports = new QToolButton;
  exports->setText("Export");
  exports->setPopupMode(QToolButton::InstantPopup);
  exports->setToolButtonStyle(Qt::ToolButtonTextOnly);
  auto* export_menu = new QMenu(exports);
  QAction* png = export_menu->addAction("Overlay as PNG...");
  QAction* pdf = export_menu->addAction("Overlay as PDF...");
  QAction* csv = export_menu->addAction("Overlay data as CSV...");
  export_menu->addSeparator();
  QAction* all = export_menu->addAction("Everything into a folder...");
  all->setToolTip("Write the overlay (PNG, PDF, CSV), the config diff and the results into a folder");
  exports->setMenu(export_menu);
  controls->addWidget(exports);
  layout->addLayout(controls);

  plot_ = new QCustomPlot;
  plot_->setMinimumHeight(260);
  plot_->setInteractions(QCP::iRangeDrag | QCP::iRangeZoom);
  set_x_axis_mode(plot_->xAxis, XAxisMode::Step);
  plot_->legend->setVisible(run_ids_.size() <= static_cast<size_t>(kLegendRunLimit));
  legend_button_->setChecked(plot_->legend->visible());
  plot_->axisRect()->insetLayout()->setInsetAlignment(0, Qt::AlignTop | Qt::AlignRight);
  apply_chart_palette(plot_, palette());
  // The line under the overlay, wrapped rather than widening the tab.
  status_label_ = new QLabel(QString("Loading %1 runs...").arg(run_ids_.size()));
  status_label_->setWordWrap(true);
  auto* overlay = new QWidget;
  auto* overlay_layout = new QVBoxLayout(overlay);
  overlay_layout->setContentsMargins(0, 0, 0, 0);
  overlay_layout->addWidget(plot_, 1);
  overlay_layout->addWidget(status_label_);

  config_table_ = make_table();
  results_table_ = make_table();
  QLabel* config_title = nullptr;
  QLabel* results_title = nullptr;
  QPushButton* config_export = nullptr;
  QPushButton* results_export = nullptr;
  QWidget* config_box = section("Config differences", &config_title, &config_export, config_table_);
  QWidget* results_box = section("Results", &results_title, &results_export, results_table_);

  auto* tables = new QSplitter(Qt::Horizontal);
  tables->addWidget(config_box);
  tables->addWidget(results_box);
  tables->setStretchFactor(0, 1);
  tables->setStretchFactor(1, 1);
  auto* split = new QSplitter(Qt::Vertical);
  split->addWidget(overlay);
  split->addWidget(tables);
  split->setStretchFactor(0, 3);
  split->setStretchFactor(1, 2);
  split->setSizes({600, 280});  // the plot's size hint is small; give it most of the height
  layout->addWidget(split, 1);

  connect(metric_combo_, &QComboBox::textActivated, this, &CompareView::setMetric);
  connect(x_combo_, qOverload<int>(&QComboBox::currentIndexChanged), this,
          [this](int i) { setXAxisMode(static_cast<XAxisMode>(i)); });
  connect(smoothing_control_, &SmoothingControl::weightChanged, this, [this](double w) { setSmoothing(w); });
  connect(reset, &QPushButton::clicked, this, &CompareView::resetZoom);
  connect(plot_, &QCustomPlot::mouseDoubleClick, this, [this] { resetZoom(); });
  connect(legend_button_, &QToolButton::toggled, this, &CompareView::setLegendVisible);
  connect(plot_, &QCustomPlot::mouseMove, this, [this](QMouseEvent* event) {
    const QString text = event->buttons() || !plot_->axisRect()->rect().contains(event->pos())
                             ? QString()
                             : tooltipAt(plot_->xAxis->pixelToCoord(event->pos().x()));
    if (text.isEmpty())
      QToolTip::hideText();
    else
      QToolTip::showText(event->globalPosition().toPoint(), text, plot_);
  });
  // Zoom and pan: once they settle, the runs drawn from buckets are read again for the steps in view.
  zoom_timer_.setSingleShot(true);
  zoom_timer_.setInterval(kZoomDebounceMs);
  connect(&zoom_timer_, &QTimer::timeout, this, &CompareView::onZoomSettled);
  connect(plot_->xAxis, qOverload<const QCPRange&>(&QCPAxis::rangeChanged), this, [this] {
    if (!drawing_ && curves_loaded_) zoom_timer_.start();
  });
  // The NaN / Inf crosses stay near the top of whatever y range is shown (a wheel zoom moves it).
  connect(plot_->yAxis, qOverload<const QCPRange&>(&QCPAxis::rangeChanged), this, [this](const QCPRange& y) {
    if (drawing_) return;
    for (RunGraphs& g : graphs_) {
      if (!g.marks) continue;
      for (auto it = g.marks->data()->begin(); it != g.marks->data()->end(); ++it) it->value = y.upper - 0.04 * y.size();
    }
  });
  connect(png, &QAction::triggered, this, [this] { exportDialog("png"); });
  connect(pdf, &QAction::triggered, this, [this] { exportDialog("pdf"); });
  connect(csv, &QAction::triggered, this, [this] { exportDialog("overlay.csv"); });
  connect(config_export, &QPushButton::clicked, this, [this] { exportDialog("config_diff.csv"); });
  connect(results_export, &QPushButton::clicked, this, [this] { exportDialog("results.csv"); });
  connect(all, &QAction::triggered, this, &CompareView::exportAllDialog);

  // Live: runs that log more are read again once the interval since the last read has passed.
  live_timer_.setSingleShot(true);
  connect(&live_timer_, &QTimer::timeout, this, [this] {
    if (stale_ && isVisible()) refresh();
  });
  readRuns();
}

void CompareView::readRuns() {
  if (!store_) return;
  runs_in_flight_ = true;
  last_read_.start();
  stale_ = false;
  const std::vector<int64_t> ids = run_ids_;
  store_->query<std::vector<RunInfo>>(
      this,
      [ids](RunStore& s) {
        std::vector<RunInfo> out;
        for (int64_t id : ids) {
          RunInfo info;
          info.id = id;
          if (auto row = s.run(id)) {
            info.found = true;
            info.name = QString::fromStdString(row->name);
            info.config = nlohmann::json::parse(row->config_json, nullptr, false);
            if (info.config.is_discarded()) info.config = nlohmann::json();
            info.keys = s.metric_keys(id);
            const auto latest = s.latest_metrics(id);
            for (const MetricRow& m : latest) info.last_steps[m.key] = m.step;
            info.results = collect_compare_results(s.evals(id), latest);
          }
          out.push_back(std::move(info));
        }
        return out;
      },
      [this](std::vector<RunInfo> runs) {
        runs_in_flight_ = false;
        onRuns(std::move(runs));
      },
      [this](const QString& error) {
        runs_in_flight_ = false;
        curves_loaded_ = true;  // (F5, Reset zoom and the live read try again)
        keep_view_ = false;
        status_label_->setText("Cannot read the runs: " + error + "; F5 reads again");
      });
}

void CompareView::refresh() {
  if (runs_in_flight_ || !curves_loaded_) {
    stale_ = true;  // read again once this read is in
    return;
  }
  // The view stays where it is unless it showed every point (then it grows with the runs), in
  // the x axis's units (steps, seconds or tokens).
  const QCPRange x = plot_->xAxis->range();
  double first = 0, last = 0;
  bool any = false;
  for (size_t i = 0; i < overviews_.size(); ++i) {
    const Curve& c = overviews_[i];
    if (c.steps.empty()) continue;
    const double a = xOf(i, static_cast<double>(c.steps.front())), b = xOf(i, static_cast<double>(c.steps.back()));
    if (!std::isfinite(a) || !std::isfinite(b)) continue;
    first = any ? std::min(first, a) : a;
    last = any ? std::max(last, b) : b;
    any = true;
  }
  keep_view_ = any && (x.lower > first || x.upper < last);
  readRuns();
}

void CompareView::runsChanged(const std::vector<int64_t>& changed) {
  if (std::none_of(changed.begin(), changed.end(),
                   [&](int64_t id) { return std::find(run_ids_.begin(), run_ids_.end(), id) != run_ids_.end(); }))
    return;
  stale_ = true;
  if (live_timer_.isActive()) return;
  live_timer_.start(static_cast<int>(std::max<qint64>(0, live_interval_ms_ - last_read_.elapsed())));
}

void CompareView::setLiveInterval(int ms) { live_interval_ms_ = std::max(0, ms); }

void CompareView::showEvent(QShowEvent* event) {
  QWidget::showEvent(event);
  if (stale_ && !live_timer_.isActive()) live_timer_.start(0);  // what changed while another tab was in front
}

void CompareView::changeEvent(QEvent* event) {
  if (event->type() == QEvent::PaletteChange && plot_) {
    apply_chart_palette(plot_, palette());
    plot_->replot(QCustomPlot::rpQueuedReplot);
  }
  QWidget::changeEvent(event);
}

QString CompareView::metric() const { return metric_; }

QStringList CompareView::metricKeys() const {
  QStringList out;
  for (int i = 0; i < metric_combo_->count(); ++i) out << metric_combo_->itemText(i);
  return out;
}

bool CompareView::isLoaded() const { return runs_loaded_ && curves_loaded_; }

// The legend's name of a run: its label cut at 40 characters, so a study's long run names do not
// cover the plot (the tables and exports keep the whole name).
QString CompareView::legendLabel(size_t i) const {
  const QString label = runLabel(i);
  return label.size() > 40 ? label.left(39) + QChar(0x2026) : label;
}

QString CompareView::runLabel(size_t i) const {
  return QString("#%1 %2").arg(runs_[i].id).arg(runs_[i].found ? runs_[i].name : QString("(deleted)"));
}

// Each run in its run-list colour, except that ids ten apart share one there: the later run of
// such a pair gets a darker or lighter shade of it, so no two curves here look alike.
static std::vector<QColor> compare_colors(const std::vector<int64_t>& run_ids) {
  std::vector<QColor> out;
  for (int64_t id : run_ids) {
    const QColor base = run_color(id);
    QColor pick = base;
    for (const QColor& candidate : {base, base.darker(160), base.lighter(150), base.darker(250), base.lighter(190)})
      if (std::find(out.begin(), out.end(), candidate) == out.end()) {
        pick = candidate;
        break;
      }
    out.push_back(pick);
  }
  return out;
}

QColor CompareView::runColor(int64_t run_id) const {
  for (size_t i = 0; i < runs_.size() && i < colors_.size(); ++i)
    if (runs_[i].id == run_id) return colors_[i];
  return run_color(run_id);
}

void CompareView::onRuns(std::vector<RunInfo> runs) {
  runs_ = std::move(runs);
  runs_loaded_ = true;
  std::vector<int64_t> ids;
  for (const RunInfo& r : runs_) ids.push_back(r.id);
  colors_ = compare_colors(ids);
  std::set<QString> keys;
  for (const RunInfo& r : runs_)
    for (const auto& k : r.keys) keys.insert(QString::fromStdString(k));
  metric_combo_->clear();
  for (const QString& k : keys) metric_combo_->addItem(k);
  // Each config as this build reads it (a field an older build did not store takes its default,
  // marked so; one it stored that this build no longer has is marked "not read"), where it reads;
  // as stored otherwise. Where any config does not read, every run is compared as stored (a mix
  // would mark every default field of the others as differing). A deleted run has no config: its
  // column says so and the rows are the fields that differ among the others.
  std::vector<nlohmann::json> effective, stored;
  std::vector<size_t> with_config;
  bool all_read = true;
  const nlohmann::json known = config_to_json(RunConfig{});
  for (size_t i = 0; i < runs_.size(); ++i) {
    if (!runs_[i].found) continue;
    with_config.push_back(i);
    stored.push_back(runs_[i].config);
    try {
      effective.push_back(config_to_json(config_from_json(known_fields_only(runs_[i].config, known))));
    } catch (const std::exception&) {
      all_read = false;
    }
  }
  std::vector<ConfigDiffRow> rows = all_read ? config_diff(effective, &stored) : config_diff(stored);
  for (ConfigDiffRow& row : rows) {
    std::vector<std::string> values(runs_.size(), "(run deleted)");
    for (size_t j = 0; j < with_config.size() && j < row.values.size(); ++j) values[with_config[j]] = row.values[j];
    row.values = std::move(values);
  }
  diff_ = std::move(rows);
  fillConfigTable();
  fillResultsTable();
  QString key = metric_;
  if (key.isEmpty()) {
    for (const char* preferred : {"loss", "rewards/accuracies"})
      if (keys.count(preferred)) {
        key = preferred;
        break;
      }
    if (key.isEmpty() && !keys.empty()) key = *keys.begin();
  }
  if (key.isEmpty()) {
    curves_loaded_ = true;
    status_label_->setText("None of these runs has logged metrics yet.");
    Q_EMIT loaded();
    return;
  }
  setMetric(key);
}

void CompareView::setMetric(const QString& key) {
  metric_ = key;
  const int index = metric_combo_->findText(key);
  if (index >= 0 && metric_combo_->currentIndex() != index) metric_combo_->setCurrentIndex(index);
  if (!runs_loaded_ || !store_) return;  // onRuns asks for it
  curves_loaded_ = false;
  const int generation = ++generation_;
  status_label_->setText("Loading " + key + "...");
  struct Ask {
    int64_t id;
    int64_t last_step;  // -1: the run has not logged key
  };
  std::vector<Ask> asks;
  const std::string k = key.toStdString();
  for (const RunInfo& r : runs_) {
    const auto it = r.last_steps.find(k);
    asks.push_back({r.id, it == r.last_steps.end() ? -1 : it->second});
  }
  zoom_timer_.stop();
  store_->query<std::vector<Curve>>(
      this,
      [asks, k](RunStore& s) {
        std::vector<Curve> out;
        for (const Ask& a : asks)
          out.push_back(a.last_step >= 0 ? readCurve(s, a.id, k, 0, std::max<int64_t>(a.last_step, 1), /*with_clock=*/true) : Curve{});
        return out;
      },
      [this, key, generation](std::vector<Curve> curves) {
        if (generation != generation_) return;
        onCurves(key, std::move(curves));
        if (stale_ && !live_timer_.isActive()) live_timer_.start(live_interval_ms_);  // changed while read
      },
      [this](const QString& error) {
        curves_loaded_ = true;  // (F5, Reset zoom and the live read try again)
        keep_view_ = false;
        status_label_->setText("Cannot read metrics: " + error + "; F5 reads again");
      });
}

CompareView::Curve CompareView::readCurve(RunStore& s, int64_t run_id, const std::string& key, int64_t lo, int64_t hi,
                                          bool with_clock) {
  Curve c;
  c.lo = lo;
  c.hi = hi;
  // The bucket counts say how many points there are without reading them all.
  const auto buckets = s.decimated_series(run_id, key, lo, hi, kBuckets);
  int64_t total = 0;
  for (const auto& b : buckets) total += b.count + b.nan_count;
  if (total <= kRawPointLimit) {
    for (const SeriesPoint& p : s.series(run_id, key, lo, hi)) {
      c.steps.push_back(p.step);
      c.values.push_back(p.value);
      if (!std::isfinite(p.value)) c.non_finite_steps.push_back(p.step), c.non_finite_counts.push_back(1);
    }
    if (with_clock) {
      c.clock_steps = c.steps;
      for (const RunStore::Clock& at : s.clock_at(run_id, key, c.clock_steps))
        c.wall_times.push_back(at.wall_time), c.tokens.push_back(at.tokens_seen);
    }
    return c;
  }
  // Each bucket at its middle step: its min and max (the band, spikes kept) and the mean of its
  // finite values (the line: smoothed as that many points, it has the shape the smoothing gives
  // the raw points; a bucket's last value would carry one point's noise for all of them).
  c.decimated = true;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (const auto& b : buckets) {
    c.steps.push_back((b.first_step + b.last_step) / 2);
    c.mins.push_back(b.count ? b.min : nan);
    c.maxs.push_back(b.count ? b.max : nan);
    c.values.push_back(b.count ? b.mean : nan);
    c.counts.push_back(b.count);
    if (b.nan_count > 0) c.non_finite_steps.push_back(c.steps.back()), c.non_finite_counts.push_back(b.nan_count);
  }
  if (with_clock) {
    // Each bucket's first and last rows (its middle step may have none): the run's ends included.
    for (const auto& b : buckets) c.clock_steps.push_back(b.first_step), c.clock_steps.push_back(b.last_step);
    for (const RunStore::Clock& at : s.clock_at(run_id, key, c.clock_steps))
      c.wall_times.push_back(at.wall_time), c.tokens.push_back(at.tokens_seen);
  }
  return c;
}

// Linear between the whole run's points (`from` ascending), held flat beyond them; NaN where the
// run has no such figure (a run that logged no tokens seen is not placed by them).
template <typename From, typename To>
static double interpolate(const std::vector<From>& from, const std::vector<To>& to, double at) {
  if (from.empty() || from.size() != to.size()) return std::numeric_limits<double>::quiet_NaN();
  const auto hi = std::lower_bound(from.begin(), from.end(), at,
                                   [](From v, double x) { return static_cast<double>(v) < x; });
  if (hi == from.begin()) return static_cast<double>(to.front());
  if (hi == from.end()) return static_cast<double>(to.back());
  const size_t j = static_cast<size_t>(hi - from.begin());
  const double x0 = static_cast<double>(from[j - 1]), x1 = static_cast<double>(from[j]);
  const double t = x1 > x0 ? (at - x0) / (x1 - x0) : 1.0;
  return static_cast<double>(to[j - 1]) + t * (static_cast<double>(to[j]) - static_cast<double>(to[j - 1]));
}

double CompareView::xOf(size_t i, double step) const { return xOf(i, step, x_mode_); }

double CompareView::xOf(size_t i, double step, XAxisMode mode) const {
  if (mode == XAxisMode::Step || i >= overviews_.size()) return step;
  const Curve& o = overviews_[i];
  if (mode == XAxisMode::TokensSeen) return interpolate(o.clock_steps, o.tokens, step);
  if (o.wall_times.empty()) return std::numeric_limits<double>::quiet_NaN();
  return interpolate(o.clock_steps, o.wall_times, step) - o.wall_times.front();
}

double CompareView::stepOf(size_t i, double x) const {
  if (x_mode_ == XAxisMode::Step || i >= overviews_.size()) return x;
  const Curve& o = overviews_[i];
  const std::vector<double>& xs = x_mode_ == XAxisMode::TokensSeen ? o.tokens : o.wall_times;
  // (Tokens and wall time grow with the step; where they do not, a gap of NaN or a clock stepped
  // back, there is no step for an x, and the caller reads the whole run.)
  if (xs.empty() || std::any_of(xs.begin(), xs.end(), [](double v) { return !std::isfinite(v); }) ||
      !std::is_sorted(xs.begin(), xs.end()))
    return std::numeric_limits<double>::quiet_NaN();
  return interpolate(xs, o.clock_steps, x_mode_ == XAxisMode::WallTime ? x + xs.front() : x);
}

void CompareView::onCurves(const QString& key, std::vector<Curve> curves) {
  curves_ = std::move(curves);
  overviews_ = curves_;
  plot_->yAxis->setLabel(key);
  // ln 2 where every run's value of this metric is a BCE (the base loss only under sigmoid DPO).
  // (Read through the config reader: a stored config of the wrong shape, a hostile workspace's,
  // counts as neither rather than throwing on the UI thread.)
  bool sigmoid = true, total_is_base = true;
  for (const RunInfo& r : runs_) {
    try {
      const RunConfig c = config_from_json(r.config);
      sigmoid = sigmoid && c.objective.loss_type == "sigmoid";
      total_is_base = total_is_base && c.stage == "preference" && !c.ganpo.enabled && c.objective.rpo_alpha == 0.0;
    } catch (const std::exception&) {
      sigmoid = total_is_base = false;
    }
  }
  const bool bce = chart_spec_for_key(key, sigmoid, total_is_base).bce;
  if (bce && !reference_line_) {
    reference_line_ = new QCPItemStraightLine(plot_);
    reference_line_->setPen(QPen(QColor(120, 120, 120), 1, Qt::DashLine));
    reference_line_->point1->setCoords(0, std::log(2.0));
    reference_line_->point2->setCoords(1, std::log(2.0));
  } else if (!bce && reference_line_) {
    plot_->removeItem(reference_line_);
    reference_line_ = nullptr;
  }
  drawCurves(/*rescale=*/!keep_view_);
  if (keep_view_) zoom_timer_.start();  // the steps in view read again at their resolution
  keep_view_ = false;
  curves_loaded_ = true;
  Q_EMIT loaded();
}

// Every run: the min / max band of its buckets (faint), its raw values (faint) and their smoothing
// (the legend's line); then the NaN / Inf crosses near the top of the y range.
void CompareView::drawCurves(bool rescale) {
  drawing_ = true;
  const QCPRange keep_x = plot_->xAxis->range(), keep_y = plot_->yAxis->range();
  plot_->clearGraphs();
  graphs_.assign(curves_.size(), RunGraphs{});
  drawn_.assign(curves_.size(), Drawn{});
  int drawn = 0, decimated = 0, unplaced = 0;
  for (size_t i = 0; i < runs_.size() && i < curves_.size(); ++i) {
    const Curve& c = curves_[i];
    const QColor color = colors_[i];
    QColor faint = color;
    faint.setAlpha(70);
    // Each point at its x; a point with none under this x mode (no tokens seen logged) is left out.
    Drawn& d = drawn_[i];
    std::vector<size_t> placed;
    QVector<double> xs;
    for (size_t j = 0; j < c.steps.size(); ++j) {
      d.xs.push_back(xOf(i, static_cast<double>(c.steps[j])));
      if (std::isfinite(d.xs.back())) placed.push_back(j), xs << d.xs.back();
    }
    // A gap where a value is not finite (an infinite one would also defeat the axis range).
    const auto to_qvector = [&placed](const std::vector<double>& v) {
      QVector<double> out;
      for (size_t j : placed) out << (j < v.size() && std::isfinite(v[j]) ? v[j] : std::numeric_limits<double>::quiet_NaN());
      return out;
    };
    RunGraphs& g = graphs_[i];
    if (c.decimated) {
      QColor band = color;
      band.setAlpha(45);
      g.band_min = plot_->addGraph();
      g.band_max = plot_->addGraph();
      for (QCPGraph* b : {g.band_min, g.band_max}) {
        b->setPen(QPen(band, 1));
        b->removeFromLegend();
      }
      band.setAlpha(35);
      g.band_max->setBrush(band);
      g.band_max->setChannelFillGraph(g.band_min);
      g.band_min->setData(xs, to_qvector(c.mins), true);
      g.band_max->setData(xs, to_qvector(c.maxs), true);
    }
    g.raw = plot_->addGraph();
    g.raw->setPen(QPen(faint, 1));
    g.raw->removeFromLegend();
    g.raw->setData(xs, to_qvector(c.values), true);
    g.smooth = plot_->addGraph();
    g.smooth->setName(legendLabel(i));
    g.smooth->setPen(QPen(color, 2));
    // A zoomed read's smoothing goes on from the whole run's line at its first step.
    EmaState state;
    if (i < overviews_.size() && c.lo > overviews_[i].lo) {
      const Curve& all = overviews_[i];
      const auto before = static_cast<size_t>(std::lower_bound(all.steps.begin(), all.steps.end(), c.lo) - all.steps.begin());
      const std::vector<double> head(all.values.begin(), all.values.begin() + static_cast<std::ptrdiff_t>(before));
      const std::vector<int64_t> head_counts(all.counts.begin(),
                                             all.counts.begin() + static_cast<std::ptrdiff_t>(std::min(before, all.counts.size())));
      smooth_points(head, head_counts, smoothing_, state);
    }
    d.smoothed = smooth_points(c.values, c.counts, smoothing_, state);
    g.smooth->setData(xs, to_qvector(d.smoothed), true);
    if (placed.size() == 1) g.smooth->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssDisc, 6));
    if (!placed.empty()) ++drawn;
    if (placed.empty() && !c.steps.empty()) ++unplaced;
    if (c.decimated) ++decimated;
  }
  if (rescale) {
    plot_->rescaleAxes();
  } else {
    plot_->xAxis->setRange(keep_x);
    plot_->yAxis->setRange(keep_y);
  }
  // Non-finite points, as on the dashboard: a cross in the run's colour near the top of the range.
  const QCPRange y = plot_->yAxis->range();
  int64_t non_finite = 0;
  for (size_t i = 0; i < runs_.size() && i < curves_.size(); ++i) {
    if (curves_[i].non_finite_steps.empty()) continue;
    QCPGraph* marks = plot_->addGraph();
    marks->setName(legendLabel(i) + " (NaN / Inf)");
    marks->setLineStyle(QCPGraph::lsNone);
    marks->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssCross, colors_[i], 9));
    QVector<double> mx, my;
    for (int64_t step : curves_[i].non_finite_steps)
      if (const double x = xOf(i, static_cast<double>(step)); std::isfinite(x)) mx << x, my << y.upper - 0.04 * y.size();
    marks->setData(mx, my, true);
    graphs_[i].marks = marks;
    for (int64_t n : curves_[i].non_finite_counts) non_finite += n;
  }
  plot_->replot();
  drawing_ = false;
  QString status = QString("%1 of %2 runs have %3").arg(drawn).arg(runs_.size()).arg(metric_);
  if (decimated) status += QString(" (%1 drawn as min/max envelope)").arg(decimated);
  if (unplaced)
    status += QString("; %1 not drawn: no %2 logged").arg(unplaced).arg(x_mode_ == XAxisMode::TokensSeen ? "tokens seen" : "wall time");
  if (non_finite) status += QString("; %1 NaN / Inf point(s) marked \u00d7").arg(non_finite);
  status += QString("; read at %1").arg(QTime::currentTime().toString("HH:mm:ss"));
  status_label_->setText(status);
}

void CompareView::setSmoothing(double weight) {
  smoothing_ = std::clamp(weight, 0.0, kMaxSmoothingWeight);
  smoothing_control_->setWeight(smoothing_);
  if (curves_loaded_) drawCurves(/*rescale=*/false);
}

void CompareView::setStepRange(double lo, double hi) {
  plot_->xAxis->setRange(lo, hi);  // as a drag or wheel does: the read follows once it settles
  plot_->replot(QCustomPlot::rpQueuedReplot);
}

void CompareView::resetZoom() {
  // Every run read again (the steps logged since included), every step shown.
  if (runs_in_flight_ || !curves_loaded_) return;
  keep_view_ = false;
  readRuns();
}

// Runs drawn from buckets (or from a zoomed read that no longer covers the view) are read again
// over the steps in view, at full resolution where few enough points fall in it. The view stays.
void CompareView::onZoomSettled() {
  if (!store_ || zoom_in_flight_) {
    if (zoom_in_flight_) zoom_timer_.start();  // asked again once the read in flight is in
    return;
  }
  const QCPRange r = plot_->xAxis->range();
  const std::string k = metric_.toStdString();
  struct Ask {
    size_t index;
    int64_t id, lo, hi;
  };
  std::vector<Ask> asks;
  for (size_t i = 0; i < runs_.size() && i < curves_.size(); ++i) {
    const auto it = runs_[i].last_steps.find(k);
    if (it == runs_[i].last_steps.end()) continue;
    const int64_t last = std::max<int64_t>(it->second, 1);
    // The steps in view (under wall time or tokens seen, this run's own); where x maps to no step,
    // the whole run. (Clamped as doubles first: a far zoom-out reaches beyond any int64.)
    double from = stepOf(i, r.lower), to = stepOf(i, r.upper);
    if (!std::isfinite(from) || !std::isfinite(to)) from = 0, to = static_cast<double>(last);
    const auto lo = static_cast<int64_t>(std::clamp(std::floor(from), 0.0, static_cast<double>(last)));
    const auto hi = static_cast<int64_t>(std::clamp(std::ceil(to), static_cast<double>(lo), static_cast<double>(last)));
    const Curve& c = curves_[i];
    const bool covered = !c.decimated && c.lo <= lo && c.hi >= hi;  // every point in view is drawn already
    if (covered || (c.lo == lo && c.hi == hi)) continue;
    asks.push_back({i, runs_[i].id, lo, hi});
  }
  if (asks.empty()) return;
  zoom_in_flight_ = true;
  const int generation = generation_;
  store_->query<std::vector<std::pair<size_t, Curve>>>(
      this,
      [asks, k](RunStore& s) {
        std::vector<std::pair<size_t, Curve>> out;
        for (const Ask& a : asks) out.emplace_back(a.index, readCurve(s, a.id, k, a.lo, a.hi));
        return out;
      },
      [this, generation](std::vector<std::pair<size_t, Curve>> read) {
        zoom_in_flight_ = false;
        if (generation != generation_) return;  // another metric since
        for (auto& [index, curve] : read)
          if (index < curves_.size()) curves_[index] = std::move(curve);
        drawCurves(/*rescale=*/false);
      },
      [this](const QString& error) {
        zoom_in_flight_ = false;
        status_label_->setText("Cannot read metrics: " + error);
      });
}

int CompareView::runIndex(int64_t run_id) const {
  for (size_t i = 0; i < runs_.size() && i < graphs_.size(); ++i)
    if (runs_[i].id == run_id) return static_cast<int>(i);
  return -1;
}

const CompareView::RunGraphs* CompareView::runGraphs(int64_t run_id) const {
  const int i = runIndex(run_id);
  return i < 0 ? nullptr : &graphs_[static_cast<size_t>(i)];
}

bool CompareView::isDecimated(int64_t run_id) const {
  const int i = runIndex(run_id);
  return i >= 0 && curves_[static_cast<size_t>(i)].decimated;
}

std::pair<int64_t, int64_t> CompareView::stepsRead(int64_t run_id) const {
  const int i = runIndex(run_id);
  return i < 0 ? std::pair<int64_t, int64_t>{0, -1} : std::pair{curves_[static_cast<size_t>(i)].lo, curves_[static_cast<size_t>(i)].hi};
}

std::optional<double> CompareView::referenceLine() const {
  return reference_line_ ? std::optional<double>(reference_line_->point1->coords().y()) : std::nullopt;
}

void CompareView::fillConfigTable() {
  config_table_->clear();
  config_table_->setColumnCount(static_cast<int>(runs_.size()));
  config_table_->setRowCount(static_cast<int>(diff_.size()));
  for (size_t c = 0; c < runs_.size(); ++c) {
    auto* head = new QTableWidgetItem(swatch(colors_[c]), runLabel(c));
    config_table_->setHorizontalHeaderItem(static_cast<int>(c), head);
  }
  QStringList fields;
  for (size_t r = 0; r < diff_.size(); ++r) {
    fields << QString::fromStdString(diff_[r].field);
    for (size_t c = 0; c < diff_[r].values.size(); ++c)
      config_table_->setItem(static_cast<int>(r), static_cast<int>(c),
                             new QTableWidgetItem(QString::fromStdString(diff_[r].values[c])));
  }
  config_table_->setVerticalHeaderLabels(fields);
  fit_columns(config_table_, kMostColumnWidth);
  if (diff_.empty()) config_table_->setToolTip("The configs of these runs are identical.");
}

std::vector<double> CompareView::temperatures() const {
  std::set<double> ts;
  for (const RunInfo& r : runs_)
    for (const auto& [t, rate] : r.results.win_rates) ts.insert(t);
  return {ts.begin(), ts.end()};
}

void CompareView::fillResultsTable() {
  const auto& keys = compare_result_keys();
  const auto temps = temperatures();
  // Short headers keep the table narrow; the tooltip names the metric as stored.
  QStringList headers{"run"}, tips{"Run id and name"};
  for (const auto& k : keys) {
    QString h = QString::fromStdString(k);
    tips << h;
    h.replace("eval_rewards/accuracies", "eval acc").replace("eval_rewards/margins", "eval margin").replace("eval_loss", "eval loss");
    headers << h;
  }
  headers << "at step";
  tips << "The step the evaluation figures are of (every figure of a row is from one evaluation)";
  for (double t : temps) {
    headers << QString("win T=%1").arg(t);
    tips << QString("Judge win rate of the policy over the reference at sampling temperature %1").arg(t);
  }
  if (!temps.empty()) {
    headers << "judged at";
    tips << "The checkpoint step the win rates are of (the newest judged evaluation; it can be older than the "
            "figures beside it when a later evaluation had no judge)";
  }
  results_table_->clear();
  results_table_->setColumnCount(headers.size());
  results_table_->setHorizontalHeaderLabels(headers);
  for (int c = 0; c < headers.size(); ++c) results_table_->horizontalHeaderItem(c)->setToolTip(tips[c]);
  results_table_->setRowCount(static_cast<int>(runs_.size()));
  results_table_->verticalHeader()->hide();
  auto cell = [](const std::optional<double>& v) {
    auto* item = new QTableWidgetItem(v ? number_text(*v) : QString::fromUtf8("\u2014"));
    item->setTextAlignment(Qt::AlignRight | Qt::AlignVCenter);
    return item;
  };
  auto step_cell = [](const std::optional<int64_t>& step) {
    auto* item = new QTableWidgetItem(step ? QString::number(*step) : QString::fromUtf8("\u2014"));
    item->setTextAlignment(Qt::AlignRight | Qt::AlignVCenter);
    return item;
  };
  for (size_t r = 0; r < runs_.size(); ++r) {
    const int row = static_cast<int>(r);
    const CompareResults& res = runs_[r].results;
    results_table_->setItem(row, 0, new QTableWidgetItem(swatch(colors_[r]), runLabel(r)));
    int col = 1;
    for (const auto& k : keys) {
      const auto it = res.metrics.find(k);
      results_table_->setItem(row, col++, cell(it == res.metrics.end() ? std::nullopt : std::optional<double>(it->second)));
    }
    results_table_->setItem(row, col++, step_cell(res.metrics_step));
    for (double t : temps) {
      const auto it = res.win_rates.find(t);
      results_table_->setItem(row, col++, cell(it == res.win_rates.end() ? std::nullopt : std::optional<double>(it->second)));
    }
    if (!temps.empty()) results_table_->setItem(row, col++, step_cell(res.win_rates_step));
  }
  fit_columns(results_table_, kMostColumnWidth);
}

QString CompareView::statusText() const { return status_label_->text(); }

void CompareView::setLegendVisible(bool on) {
  legend_button_->setChecked(on);
  if (plot_->legend->visible() == on) return;
  plot_->legend->setVisible(on);
  plot_->replot(QCustomPlot::rpQueuedReplot);
}

bool CompareView::legendVisible() const { return plot_->legend->visible(); }

// Every drawn run at the point nearest `step`: its value and smoothed value (a bucket's mean, with
// its min and max), highest smoothed value first, as the curves stack on the plot.
QString CompareView::tooltipAt(double x) const {
  struct Line {
    double order;
    QString text;
  };
  std::vector<Line> lines;
  int64_t head = -1;
  for (size_t i = 0; i < curves_.size() && i < drawn_.size(); ++i) {
    const Curve& c = curves_[i];
    const Drawn& d = drawn_[i];
    // The point nearest x (the earlier of two as near); a point not placed under this x mode is none.
    size_t j = c.steps.size();
    for (size_t k = 0; k < d.xs.size() && k < c.steps.size(); ++k)
      if (std::isfinite(d.xs[k]) && (j == c.steps.size() || std::fabs(d.xs[k] - x) < std::fabs(d.xs[j] - x))) j = k;
    if (j == c.steps.size()) continue;
    if (head < 0) head = c.steps[j];
    const double smoothed = j < d.smoothed.size() ? d.smoothed[j] : std::numeric_limits<double>::quiet_NaN();
    QString text = QString("%1: %2").arg(runLabel(i), number_text(c.values[j]));  // whole: the legend cuts names
    if (smoothing_ > 0) text += QString("  (smoothed %1)").arg(number_text(smoothed));
    // (another logging interval; under wall time or tokens seen, runs are at steps of their own)
    if (c.steps[j] != head || x_mode_ != XAxisMode::Step) text += QString("  at step %1").arg(c.steps[j]);
    if (c.decimated && j < c.mins.size())
      text += QString("  [mean of %1 points: min %2, max %3]").arg(c.counts[j]).arg(number_text(c.mins[j]), number_text(c.maxs[j]));
    lines.push_back({std::isfinite(smoothed) ? smoothed : -std::numeric_limits<double>::infinity(), text});
  }
  if (lines.empty()) return QString();
  std::stable_sort(lines.begin(), lines.end(), [](const Line& a, const Line& b) { return a.order > b.order; });
  QString where = QString("step %1").arg(head);
  if (x_mode_ == XAxisMode::WallTime) {
    const auto t = static_cast<int64_t>(std::llround(std::max(0.0, x)));
    where = QString("%1:%2:%3 since each run's first point")
                .arg(t / 3600)
                .arg((t / 60) % 60, 2, 10, QChar('0'))
                .arg(t % 60, 2, 10, QChar('0'));
  } else if (x_mode_ == XAxisMode::TokensSeen) {
    where = QString("%1 tokens seen").arg(std::llround(x));
  }
  QStringList out{where};
  for (const Line& l : lines) out << l.text;
  return out.join('\n');
}

void CompareView::setXAxisMode(XAxisMode mode) {
  if (x_combo_->currentIndex() != static_cast<int>(mode)) x_combo_->setCurrentIndex(static_cast<int>(mode));
  if (mode == x_mode_) return;
  x_mode_ = mode;
  set_x_axis_mode(plot_->xAxis, mode);
  // The whole of every run again, placed by the new x (a zoomed read's steps mean other x's now;
  // one in flight is dropped when it lands).
  if (!curves_loaded_) return;
  ++generation_;
  zoom_timer_.stop();
  curves_ = overviews_;
  drawCurves(/*rescale=*/true);
}

// ---- export ------------------------------------------------------------------------------------

bool CompareView::exportOverlayImage(const QString& path) const {
  const int w = std::max(plot_->width(), 900), h = std::max(plot_->height(), 500);
  const QString suffix = QFileInfo(path).suffix().toLower();
  if (suffix != "png" && suffix != "pdf") return false;
  return write_checked(path, [&](const QString& part) {
    return suffix == "png" ? plot_->savePng(part, w, h) : plot_->savePdf(part, w, h, QCP::epNoCosmetic, "GANPO Workbench", "Compare runs");
  });
}

// The overlay over every run's whole range as read (not the zoomed steps, which would mix ranges
// between runs drawn from buckets and runs drawn whole): a run's stored points, or for a run drawn
// from buckets, each bucket's min, max and mean at its middle step, said in the "kind" column
// (value / bucket_min / bucket_max / bucket_mean). Unsmoothed: the smoothing is a drawing choice.
bool CompareView::exportOverlayCsv(const QString& path) const {
  CsvRows rows{{"run_id", "run_name", "step", "wall_time_s", "tokens_seen", "value", "kind"}};
  for (size_t i = 0; i < runs_.size() && i < overviews_.size(); ++i) {
    const Curve& c = overviews_[i];
    // Where the run was at the point, as the x axis's other modes place it (empty: not known).
    const auto clock = [&](size_t j, XAxisMode mode) {
      const double v = xOf(i, static_cast<double>(c.steps[j]), mode);
      return std::isfinite(v) ? csv_number(v) : std::string();
    };
    const auto row = [&](size_t j, double v, const char* kind) {
      rows.push_back({std::to_string(runs_[i].id), runs_[i].name.toStdString(), std::to_string(c.steps[j]),
                      clock(j, XAxisMode::WallTime), clock(j, XAxisMode::TokensSeen), csv_number(v), kind});
    };
    for (size_t j = 0; j < c.steps.size(); ++j) {
      if (!c.decimated) {
        row(j, c.values[j], "value");
        continue;
      }
      row(j, c.mins[j], "bucket_min");
      row(j, c.maxs[j], "bucket_max");
      row(j, c.values[j], "bucket_mean");
    }
  }
  return write_csv(path, rows);
}

bool CompareView::exportConfigDiffCsv(const QString& path) const {
  CsvRows rows{{"field"}};
  for (size_t i = 0; i < runs_.size(); ++i) rows[0].push_back(runLabel(i).toStdString());
  for (const auto& d : diff_) {
    rows.push_back({d.field});
    rows.back().insert(rows.back().end(), d.values.begin(), d.values.end());
  }
  return write_csv(path, rows);
}

bool CompareView::exportResultsCsv(const QString& path) const {
  const auto& keys = compare_result_keys();
  const auto temps = temperatures();
  CsvRows rows{{"run_id", "run_name"}};
  rows[0].insert(rows[0].end(), keys.begin(), keys.end());
  rows[0].push_back("eval_step");
  for (double t : temps) rows[0].push_back("win_rate@" + QString::number(t).toStdString());
  if (!temps.empty()) rows[0].push_back("judge_step");
  const auto step_text = [](const std::optional<int64_t>& step) { return step ? std::to_string(*step) : std::string(); };
  for (const RunInfo& r : runs_) {
    std::vector<std::string> row{std::to_string(r.id), r.name.toStdString()};
    for (const auto& k : keys) {
      const auto it = r.results.metrics.find(k);
      row.push_back(it == r.results.metrics.end() ? "" : csv_number(it->second));
    }
    row.push_back(step_text(r.results.metrics_step));
    for (double t : temps) {
      const auto it = r.results.win_rates.find(t);
      row.push_back(it == r.results.win_rates.end() ? "" : csv_number(it->second));
    }
    if (!temps.empty()) row.push_back(step_text(r.results.win_rates_step));
    rows.push_back(std::move(row));
  }
  return write_csv(path, rows);
}

bool CompareView::exportAll(const QString& folder) {
  if (!QDir().mkpath(folder)) return false;
  const QDir dir(folder);
  bool ok = exportOverlayImage(dir.filePath("overlay.png"));
  ok = exportOverlayImage(dir.filePath("overlay.pdf")) && ok;
  ok = exportOverlayCsv(dir.filePath("overlay.csv")) && ok;
  ok = exportConfigDiffCsv(dir.filePath("config_diff.csv")) && ok;
  ok = exportResultsCsv(dir.filePath("results.csv")) && ok;
  return ok;
}

void CompareView::exportDialog(const QString& what) {
  QString base = metric_.isEmpty() ? QString("overlay") : metric_;
  base.replace(QRegularExpression("[^A-Za-z0-9_.-]+"), "_");
  QString name, filter;
  if (what == "png" || what == "pdf") {
    name = "compare-" + base + "." + what;
    filter = what == "png" ? "PNG image (*.png)" : "PDF document (*.pdf)";
  } else {
    name = what == "overlay.csv" ? "compare-" + base + ".csv" : "compare-" + what;
    filter = "CSV (*.csv)";
  }
  const QString path = QFileDialog::getSaveFileName(this, "Export", name, filter);
  if (path.isEmpty()) return;
  bool ok = false;
  if (what == "png" || what == "pdf") ok = exportOverlayImage(path);
  else if (what == "overlay.csv") ok = exportOverlayCsv(path);
  else if (what == "config_diff.csv") ok = exportConfigDiffCsv(path);
  else ok = exportResultsCsv(path);
  if (!ok) QMessageBox::warning(this, "Export failed", "Could not write " + path + ".");
}

void CompareView::exportAllDialog() {
  const QString folder = QFileDialog::getExistingDirectory(this, "Export comparison into folder");
  if (!folder.isEmpty() && !exportAll(folder))
    QMessageBox::warning(this, "Export failed", "Could not write every file into " + folder + ".");
}

}  // namespace ganpo::ui
