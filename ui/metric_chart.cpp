#include "ui/chart_style.h"
#include "ui/metric_chart.h"

#include <QContextMenuEvent>
#include <QFile>
#include <QFileDialog>
#include <QFileInfo>
#include <QMenu>
#include <QRegularExpression>
#include <QSvgGenerator>
#include <QTextStream>
#include <QToolTip>
#include <QWheelEvent>

#include <algorithm>
#include <cmath>
#include <limits>

#include "ui/store_worker.h"

namespace ganpo::ui {
namespace {

const QColor kPalette[] = {QColor(31, 119, 180), QColor(255, 127, 14), QColor(44, 160, 44),
                           QColor(214, 39, 40),  QColor(148, 103, 189), QColor(140, 86, 75)};

QColor faint(QColor c, int alpha) {
  c.setAlpha(alpha);
  return c;
}

QString number(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return QString::number(v, 'g', QLocale::FloatingPointShortest);
}


}  // namespace

struct MetricChart::Curve {
  QString key;
  bool derived = false;
  int64_t run_id = 0;  // whose rows: the chart's run, or an overlaid one
  QString run_label;   // "#12 name" on an overlaid run's curve; empty on the chart's own
  double wall_origin = 0;  // an overlaid run's wall time 0 (its first row)
  bool selected = false;   // clicked (or its legend entry): drawn bold, the rest dimmed
  QColor color;
  ChartSeries data;
  EmaState ema;
  QCPGraph* env_min = nullptr;   // lower edge of the min/max band
  QCPGraph* env_max = nullptr;   // upper edge, filled down to env_min
  QCPGraph* env_line = nullptr;  // last value per bucket
  QCPGraph* tail = nullptr;      // raw points that arrived after the envelope was drawn
  QCPGraph* raw = nullptr;
  QCPGraph* smooth = nullptr;
  bool decimated = false;
  std::vector<SeriesBucket> envelope;
  int64_t env_lo = 0, env_hi = -1, env_buckets = 0;
  bool query_in_flight = false;
  bool requery = false;
  uint64_t generation = 0;  // bumped to drop an envelope answer that is no longer wanted

  Qt::PenStyle dash = Qt::SolidLine;  // an overlay's: one pattern per key of the chart
  bool overlay() const { return !run_label.isEmpty(); }
  QString name() const { return overlay() ? run_label + " " + key : key; }
};

MetricChart::MetricChart(StoreWorker* store, int64_t run_id, const QString& title, QWidget* parent)
    : QCustomPlot(parent), store_(store), run_id_(run_id), title_(title) {
  setMinimumSize(320, 220);
  // A click selects a curve (or its legend entry); a drag still pans.
  setInteractions(QCP::iRangeDrag | QCP::iRangeZoom | QCP::iSelectPlottables | QCP::iSelectLegend);
  // A wheel turn without Ctrl is ignored (wheelEvent) so the dashboard's scroll area scrolls: it
  // must be let up to the parents (QCustomPlot accepts every mouse event it handles itself).
  setAttribute(Qt::WA_NoMousePropagation, false);
  setNoAntialiasingOnDrag(true);
  setPlottingHints(QCP::phCacheLabels | QCP::phFastPolylines);
  plotLayout()->insertRow(0);
  QFont title_font = font();
  title_font.setBold(true);
  auto* title_element = new QCPTextElement(this, title, title_font);
  plotLayout()->addElement(0, 0, title_element);
  plotLayout()->setRowSpacing(0);
  title_element->setMargins(QMargins(4, 4, 4, 0));
  QFont tick_font = font();
  tick_font.setPointSizeF(std::max(7.0, tick_font.pointSizeF() - 1));
  xAxis->setTickLabelFont(tick_font);
  yAxis->setTickLabelFont(tick_font);
  xAxis->setLabel("step");
  xAxis->setLabelFont(tick_font);
  yAxis->setNumberFormat("gb");
  xAxis->setNumberFormat("gb");
  legend->setFont(tick_font);
  legend->setRowSpacing(0);
  legend->setSelectableParts(QCPLegend::spItems);
  QFont selected_font = tick_font;
  selected_font.setBold(true);
  legend->setSelectedFont(selected_font);
  title_element_ = title_element;
  applyPalette();
  axisRect()->insetLayout()->setInsetAlignment(0, Qt::AlignTop | Qt::AlignRight);

  // Faint layers (envelopes, raw curves) under the smoothed lines; markers above everything.
  addLayer("faint", layer("main"), QCustomPlot::limBelow);
  addLayer("markers", layer("main"), QCustomPlot::limAbove);
  for (QCPGraph** g : {&nan_top_, &nan_bottom_}) {
    *g = addGraph();
    (*g)->setLayer("markers");
    (*g)->setLineStyle(QCPGraph::lsNone);
    (*g)->removeFromLegend();
    (*g)->setName("NaN / Inf");
    (*g)->setSelectable(QCP::stNone);
  }
  nan_top_->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssTriangleInverted, QPen(Qt::darkRed), QBrush(Qt::red), 9));
  nan_bottom_->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssTriangle, QPen(Qt::darkRed), QBrush(Qt::red), 9));

  decimation_timer_.setSingleShot(true);
  decimation_timer_.setInterval(kDecimationDebounceMs);
  connect(&decimation_timer_, &QTimer::timeout, this, &MetricChart::updateDecimation);
  live_timer_.setSingleShot(true);
  live_timer_.setInterval(kLiveEnvelopeRefreshMs);
  connect(&live_timer_, &QTimer::timeout, this, &MetricChart::updateDecimation);

  connect(xAxis, qOverload<const QCPRange&>(&QCPAxis::rangeChanged), this, [this] {
    if (!auto_ranging_) scheduleDecimation(false);
  });
  connect(this, &QCustomPlot::beforeReplot, this, &MetricChart::placeNanMarkers);
  connect(this, &QCustomPlot::mouseWheel, this, [this] { user_zoomed_ = true; });
  connect(this, &QCustomPlot::mouseMove, this, &MetricChart::onMouseMove);
  connect(this, &QCustomPlot::mouseDoubleClick, this, [this] { resetZoom(); });
  connect(this, &QCustomPlot::selectionChangedByUser, this, &MetricChart::onUserSelection);
}

MetricChart::~MetricChart() = default;

MetricChart::Curve* MetricChart::find(const QString& key) const {
  for (const auto& c : curves_)
    if (c->key == key && !c->overlay()) return c.get();
  return nullptr;
}

MetricChart::Curve* MetricChart::findOverlay(int64_t run_id, const QString& key) const {
  for (const auto& c : curves_)
    if (c->key == key && c->overlay() && c->run_id == run_id) return c.get();
  return nullptr;
}

bool MetricChart::hasSeries(const QString& key) const { return find(key) != nullptr; }

QStringList MetricChart::seriesKeys() const {
  QStringList keys;
  for (const auto& c : curves_)
    if (!c->overlay()) keys << c->key;
  return keys;
}

const ChartSeries* MetricChart::series(const QString& key) const {
  const Curve* c = find(key);
  return c ? &c->data : nullptr;
}

void MetricChart::addSeries(const QString& key, bool derived) {
  if (find(key)) return;
  size_t own = 0;
  for (const auto& c : curves_) own += c->overlay() ? 0 : 1;
  makeCurve(key, derived, run_id_, QString(), kPalette[own % std::size(kPalette)]);
}

MetricChart::Curve& MetricChart::makeCurve(const QString& key, bool derived, int64_t run_id, const QString& run_label,
                                           const QColor& color) {
  auto c = std::make_shared<Curve>();
  c->key = key;
  c->derived = derived;
  c->run_id = run_id;
  c->run_label = run_label;
  c->color = color;
  auto make = [this](const QString& layer_name) {
    QCPGraph* g = addGraph();
    g->setLayer(layer_name);
    g->removeFromLegend();
    g->setSelectable(QCP::stNone);
    return g;
  };
  c->env_min = make("faint");
  c->env_max = make("faint");
  c->env_line = make("faint");
  c->tail = make("faint");
  c->raw = make("faint");
  c->smooth = make("main");
  c->smooth->setSelectable(QCP::stWhole);
  c->env_max->setChannelFillGraph(c->env_min);
  // An overlay's keys of one chart differ by dash pattern (its colour is its run's), and its legend
  // entry names the key only where the chart has several.
  if (c->overlay()) {
    static const Qt::PenStyle kDashes[] = {Qt::DashLine, Qt::DotLine, Qt::DashDotLine, Qt::DashDotDotLine};
    size_t keys = 0;
    for (const auto& k : curves_) keys += k->overlay() && k->run_id == run_id ? 1 : 0;
    c->dash = kDashes[keys % std::size(kDashes)];
  }
  size_t own = 0;
  for (const auto& k : curves_) own += k->overlay() ? 0 : 1;
  c->smooth->setName(c->overlay() && own <= 1 && find(key) ? run_label : c->name());
  for (QCPGraph* g : {c->env_min, c->env_max, c->env_line}) g->setVisible(false);
  curves_.push_back(c);
  applyPens(*c);
  if (curves_.size() > 1) {
    legend->setVisible(true);
    for (const auto& k : curves_)
      if (!legend->hasItemWithPlottable(k->smooth)) k->smooth->addToLegend();
  }
  return *c;
}

int MetricChart::dotAlpha(const Curve& c) { return c.overlay() ? 80 : 160; }

// The chart's own curves in the palette, solid; an overlaid run's in its run-list colour, dashed
// and fainter. While some curve is selected, the others step back.
void MetricChart::applyPens(Curve& c) {
  bool any_selected = false;
  for (const auto& k : curves_) any_selected = any_selected || k->selected;
  const bool dim = any_selected && !c.selected;
  const int a = dim ? 2 : 5;  // alpha scale, in fifths
  const int raw_alpha = (c.overlay() ? 35 : 60) * a / 5;
  const QPen faint_pen(faint(c.color, raw_alpha), 1);
  c.env_min->setPen(QPen(faint(c.color, 40 * a / 5), 1));
  c.env_max->setPen(QPen(faint(c.color, 40 * a / 5), 1));
  c.env_max->setBrush(QBrush(faint(c.color, (c.overlay() ? 22 : 38) * a / 5)));
  c.env_line->setPen(faint_pen);
  c.tail->setPen(faint_pen);
  c.raw->setPen(faint_pen);
  QColor line = c.overlay() ? c.color : c.color.darker(125);
  if (dim) line.setAlpha(90);
  c.smooth->setPen(QPen(line, c.overlay() ? 1.5 : 1.8, c.dash));
  c.smooth->selectionDecorator()->setPen(QPen(c.color.darker(110), 3.0, c.dash));
  if (c.raw->scatterStyle().shape() != QCPScatterStyle::ssNone)
    c.raw->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssDisc, faint(c.color, dotAlpha(c) * a / 5), 4));
}

double MetricChart::xOf(const Curve& c, size_t i) const {
  return c.data.x_of(i, x_mode_, c.overlay() ? c.wall_origin : wall_origin_);
}

void MetricChart::appendPoints(const QString& key, const std::vector<MetricPoint>& points) {
  if (points.empty()) return;
  if (!find(key)) addSeries(key);
  if (!have_origin_) {
    wall_origin_ = points.front().wall_time;
    have_origin_ = true;
  }
  appendTo(*find(key), points);
}

void MetricChart::appendOverlayPoints(int64_t run_id, const QString& run_label, const QColor& color, double wall_origin,
                                      const QString& key, const std::vector<MetricPoint>& points, bool derived) {
  if (points.empty()) return;
  Curve* c = findOverlay(run_id, key);
  if (!c) {
    // The run's other curves here keep the shade it got first; otherwise a shade no curve uses.
    QColor shade = color;
    bool taken = false;
    for (const auto& k : curves_)
      if (k->overlay() && k->run_id == run_id) shade = k->color, taken = true;
    for (const QColor& candidate : {color, color.darker(160), color.lighter(150), color.darker(250)}) {
      if (taken) break;
      shade = candidate;
      taken = std::none_of(curves_.begin(), curves_.end(), [&](const auto& k) { return k->color == candidate; });
    }
    c = &makeCurve(key, derived, run_id, run_label, shade);
    c->wall_origin = wall_origin;
  }
  appendTo(*c, points);
}

void MetricChart::appendTo(Curve& c, const std::vector<MetricPoint>& points) {
  QVector<double> xs, raw, smooth;
  xs.reserve(static_cast<int>(points.size()));
  raw.reserve(xs.capacity());
  smooth.reserve(xs.capacity());
  bool new_nan = false;
  for (const auto& p : points) {
    // A run that goes on from an earlier step (a resume, or train.auto_find_batch_size going on
    // with a smaller batch) writes those steps again: they replace the points drawn for them.
    if (!c.data.steps.empty() && p.step <= c.data.steps.back()) {
      xs.clear(), raw.clear(), smooth.clear();  // this batch's points so far are in c.data: redrawn from it
      forgetFrom(c, p.step);
      new_nan = true;  // the markers of the steps forgotten go too
    }
    double tokens = p.tokens_seen;
    if (std::isnan(tokens)) tokens = c.data.tokens.empty() ? 0.0 : c.data.tokens.back();
    c.data.steps.push_back(p.step);
    c.data.values.push_back(p.value);
    c.data.wall_times.push_back(p.wall_time);
    c.data.tokens.push_back(tokens);
    const size_t i = c.data.size() - 1;
    const double x = xOf(c, i);
    xs.push_back(x);
    const bool finite = std::isfinite(p.value);
    raw.push_back(finite ? p.value : std::numeric_limits<double>::quiet_NaN());  // a gap in the line
    smooth.push_back(smooth_next(c.ema, p.value, smoothing_));
    if (!finite) {
      nan_marks_.push_back({&c, p.step, p.value, x});
      new_nan = true;
    }
  }
  if (xs.isEmpty()) return;
  c.raw->addData(xs, raw, true);
  c.smooth->addData(xs, smooth, true);
  const bool first_rows = c.data.size() == static_cast<size_t>(xs.size());
  if (c.decimated) c.tail->addData(xs, raw, true);
  keepSelection(c);
  if (new_nan) rebuildNanMarkers();
  if (!user_zoomed_) autoRange();
  scheduleDecimation(!first_rows);  // a first load gets its envelope without the live delay
  requestReplot();
}

void MetricChart::setWallOrigin(double wall_time) {
  wall_origin_ = wall_time;
  have_origin_ = true;
}

void MetricChart::forgetPoints() {
  for (auto& c : curves_)
    if (!c->overlay()) forgetFrom(*c, std::numeric_limits<int64_t>::min());
  rebuildNanMarkers();
  if (!user_zoomed_) autoRange();
  requestReplot();
}

void MetricChart::forgetFrom(Curve& c, int64_t step) {
  const auto keep = static_cast<size_t>(std::lower_bound(c.data.steps.begin(), c.data.steps.end(), step) -
                                        c.data.steps.begin());
  c.data.steps.resize(keep);
  c.data.values.resize(keep);
  c.data.wall_times.resize(keep);
  c.data.tokens.resize(keep);
  nan_marks_.erase(std::remove_if(nan_marks_.begin(), nan_marks_.end(),
                                  [&](const NanMark& m) { return m.curve == &c && m.step >= step; }),
                   nan_marks_.end());
  rebuildGraphs(c);  // raw and smooth from what is kept, the smoothing's state with them
  if (c.decimated) showRaw(c, static_cast<int64_t>(keep));  // the envelope is asked for again below
}

void MetricChart::rebuildGraphs(Curve& c) {
  QVector<double> xs, raw, smooth;
  const auto n = static_cast<int>(c.data.size());
  xs.reserve(n);
  raw.reserve(n);
  smooth.reserve(n);
  c.ema = {};
  for (size_t i = 0; i < c.data.size(); ++i) {
    const double v = c.data.values[i];
    xs.push_back(xOf(c, i));
    raw.push_back(std::isfinite(v) ? v : std::numeric_limits<double>::quiet_NaN());
    smooth.push_back(smooth_next(c.ema, v, smoothing_));
  }
  c.raw->setData(xs, raw, true);
  c.smooth->setData(xs, smooth, true);
  keepSelection(c);
}

void MetricChart::rebuildNanMarkers() {
  QVector<double> top, bottom;
  for (const auto& m : nan_marks_) (m.value < 0 && std::isinf(m.value) ? bottom : top).push_back(m.x);
  QVector<double> zeros_top(top.size(), 0.0), zeros_bottom(bottom.size(), 0.0);
  nan_top_->setData(top, zeros_top, true);
  nan_bottom_->setData(bottom, zeros_bottom, true);
  placeNanMarkers();
}

// Markers sit a few percent inside the visible y range, so they stay visible at any zoom.
void MetricChart::placeNanMarkers() {
  if (nan_marks_.empty()) return;
  const QCPRange r = yAxis->range();
  double top, bottom;
  if (log_applied_ && r.lower > 0) {
    const double span = std::log(r.upper / r.lower);
    top = r.upper * std::exp(-0.04 * span);
    bottom = r.lower * std::exp(0.04 * span);
  } else {
    top = r.upper - 0.04 * r.size();
    bottom = r.lower + 0.04 * r.size();
  }
  for (auto [g, y] : {std::pair{nan_top_, top}, std::pair{nan_bottom_, bottom}})
    for (auto it = g->data()->begin(); it != g->data()->end(); ++it) it->value = y;
}

void MetricChart::autoRange() {
  bool have_x = false, have_y = false;
  QCPRange xr, yr;
  for (const auto& c : curves_) {
    // Every point's x, NaN / Inf ones too (QCustomPlot's key range skips the points whose value is
    // NaN, and a curve that ends in NaN would end the axis before its markers).
    if (c->data.size() == 0) continue;
    const QCPRange k(xOf(*c, 0), xOf(*c, c->data.size() - 1));
    xr = have_x ? QCPRange(std::min(xr.lower, k.lower), std::max(xr.upper, k.upper)) : k;
    have_x = true;
    bool found = false;
    const QCPRange v = c->raw->getValueRange(found, QCP::sdBoth);
    if (!found) continue;
    yr = have_y ? QCPRange(std::min(yr.lower, v.lower), std::max(yr.upper, v.upper)) : v;
    have_y = true;
  }
  if (!have_x) return;
  if (xr.size() <= 0) xr = QCPRange(xr.lower - 1, xr.upper + 1);
  if (!have_y) yr = QCPRange(-1, 1);  // only NaN so far: the markers show it
  // Log y only where every value is positive; a curve through zero stays linear (and says so).
  applyScale(log_y_ && have_y && yr.lower > 0);
  if (yr.size() <= 0) {
    const double pad = yr.lower == 0 ? 1.0 : std::fabs(yr.lower) * 0.1;
    yr = QCPRange(yr.lower - pad, yr.upper + pad);
  }
  if (log_applied_) {
    yr = QCPRange(yr.lower / 1.15, yr.upper * 1.15);
  } else {
    const double pad = yr.size() * 0.06;
    yr = QCPRange(yr.lower - pad, yr.upper + pad);
  }
  auto_ranging_ = true;  // not a zoom: streaming rows refresh envelopes on their own timer
  xAxis->setRange(xr);
  yAxis->setRange(yr);
  auto_ranging_ = false;
}

void MetricChart::setSmoothing(double weight) {
  weight = std::clamp(weight, 0.0, kMaxSmoothingWeight);
  if (weight == smoothing_) return;
  smoothing_ = weight;
  for (auto& c : curves_) rebuildGraphs(*c);
  requestReplot();
}

void MetricChart::setXAxisMode(XAxisMode mode) {
  if (mode == x_mode_) return;
  x_mode_ = mode;
  set_x_axis_mode(xAxis, mode);
  for (auto& c : curves_) {
    rebuildGraphs(*c);
    c->envelope.clear();
    c->env_hi = c->env_lo - 1;
  }
  for (auto& m : nan_marks_) {
    auto [first, last] = m.curve->data.index_range(m.step, m.step);
    if (first < last) m.x = xOf(*m.curve, first);
  }
  rebuildNanMarkers();
  user_zoomed_ = false;
  autoRange();
  updateDecimation();
  requestReplot();
}

void MetricChart::setLogY(bool on) {
  if (on == log_y_) return;
  log_y_ = on;
  if (!on) applyScale(false);
  const QCPRange x = xAxis->range();
  autoRange();  // y only matters here; an x zoom stays as the user left it
  if (user_zoomed_) xAxis->setRange(x);
  requestReplot();
}

void MetricChart::applyScale(bool log) {
  const QString label = log_y_ && !log ? QString("log y off: values \u2264 0") : QString();
  if (yAxis->label() != label) yAxis->setLabel(label);
  if (log == log_applied_) return;
  log_applied_ = log;
  yAxis->setScaleType(log ? QCPAxis::stLogarithmic : QCPAxis::stLinear);
  if (log)
    yAxis->setTicker(QSharedPointer<QCPAxisTickerLog>(new QCPAxisTickerLog));
  else
    yAxis->setTicker(QSharedPointer<QCPAxisTicker>(new QCPAxisTicker));
}

void MetricChart::setReferenceLine(std::optional<double> y) {
  reference_y_ = y;
  if (!y) {
    if (reference_line_) removeItem(reference_line_);
    reference_line_ = nullptr;
  } else {
    if (!reference_line_) {
      reference_line_ = new QCPItemStraightLine(this);
      reference_line_->setLayer("faint");
      reference_line_->setPen(QPen(QColor(120, 120, 120), 1, Qt::DashLine));
    }
    reference_line_->point1->setCoords(0, *y);
    reference_line_->point2->setCoords(1, *y);
  }
  requestReplot();
}

void MetricChart::setXRange(double lo, double hi) {
  user_zoomed_ = true;
  xAxis->setRange(lo, hi);
  scheduleDecimation(false);
  requestReplot();
}

void MetricChart::resetZoom() {
  user_zoomed_ = false;
  autoRange();
  scheduleDecimation(false);
  requestReplot();
}

int64_t MetricChart::pointCount() const {
  int64_t n = 0;
  for (const auto& c : curves_) n += static_cast<int64_t>(c->data.size());
  return n;
}

int64_t MetricChart::pointCount(const QString& key) const {
  const Curve* c = find(key);
  return c ? static_cast<int64_t>(c->data.size()) : 0;
}

bool MetricChart::isDecimated(const QString& key) const {
  const Curve* c = find(key);
  return c && c->decimated;
}

const std::vector<SeriesBucket>& MetricChart::envelope(const QString& key) const {
  static const std::vector<SeriesBucket> none;
  const Curve* c = find(key);
  return c ? c->envelope : none;
}

std::pair<int64_t, int64_t> MetricChart::envelopeStepRange(const QString& key) const {
  const Curve* c = find(key);
  return c ? std::pair{c->env_lo, c->env_hi} : std::pair<int64_t, int64_t>{0, -1};
}

int64_t MetricChart::envelopeBuckets(const QString& key) const {
  const Curve* c = find(key);
  return c && c->decimated ? c->env_buckets : 0;
}

bool MetricChart::decimationPending() const {
  if (decimation_timer_.isActive() || live_timer_.isActive()) return true;
  for (const auto& c : curves_)
    if (c->query_in_flight) return true;
  return false;
}

QCPGraph* MetricChart::rawGraph(const QString& key) const {
  const Curve* c = find(key);
  return c ? c->raw : nullptr;
}

QCPGraph* MetricChart::smoothGraph(const QString& key) const {
  const Curve* c = find(key);
  return c ? c->smooth : nullptr;
}

// ---- decimation --------------------------------------------------------------------------------

void MetricChart::scheduleDecimation(bool live) {
  // Zoom / pan restarts the debounce; streaming rows refresh an envelope at most once a second.
  if (!live)
    decimation_timer_.start();
  else if (!live_timer_.isActive() && !decimation_timer_.isActive())
    live_timer_.start();
}

std::pair<size_t, size_t> MetricChart::visibleIndexRange(const Curve& c) const {
  const QCPRange r = xAxis->range();
  const size_t n = c.data.size();
  // x grows with the index under every mode (steps, wall time and tokens only increase).
  size_t first = 0, last = n;
  {
    size_t lo = 0, hi = n;
    while (lo < hi) {
      const size_t mid = (lo + hi) / 2;
      if (xOf(c, mid) < r.lower) lo = mid + 1; else hi = mid;
    }
    first = lo;
  }
  {
    size_t lo = first, hi = n;
    while (lo < hi) {
      const size_t mid = (lo + hi) / 2;
      if (xOf(c, mid) <= r.upper) lo = mid + 1; else hi = mid;
    }
    last = lo;
  }
  return {first, last};
}

void MetricChart::updateDecimation() {
  decimation_timer_.stop();
  live_timer_.stop();
  const int64_t buckets = std::max(64, axisRect()->width() > 0 ? axisRect()->width() : width());
  bool changed = false;
  for (auto& cp : curves_) {
    Curve& c = *cp;
    auto [first, last] = visibleIndexRange(c);
    const int64_t visible = static_cast<int64_t>(last - first);
    if (visible <= kDecimateAbove) {
      if (c.query_in_flight) {
        ++c.generation;  // drops the answer still on its way
        c.query_in_flight = c.requery = false;
      }
      showRaw(c, visible);
      changed = true;
      continue;
    }
    const int64_t lo = c.data.steps[first], hi = c.data.steps[last - 1];
    if (c.derived || !store_) {
      applyEnvelope(c, decimate_in_memory(c.data, lo, hi, buckets), lo, hi, buckets);
    } else {
      requestEnvelope(c, lo, hi, buckets);
    }
  }
  if (changed) {
    requestReplot();
    Q_EMIT decimationApplied();
  }
}

void MetricChart::requestEnvelope(Curve& c, int64_t lo, int64_t hi, int64_t buckets) {
  if (c.query_in_flight) {
    c.requery = true;  // asked again when the current answer arrives
    return;
  }
  c.query_in_flight = true;
  const uint64_t generation = ++c.generation;
  const int64_t run = c.run_id;
  const std::string key = c.key.toStdString();
  // An overlay's curves go when it is removed; the answer is then dropped (the chart's own live as
  // long as the chart, and answers are dropped with it).
  std::weak_ptr<Curve> weak;
  for (const auto& k : curves_)
    if (k.get() == &c) weak = k;
  store_->query<std::vector<SeriesBucket>>(
      this, [run, key, lo, hi, buckets](RunStore& s) { return s.decimated_series(run, key, lo, hi, buckets); },
      [this, weak, generation, lo, hi, buckets](std::vector<SeriesBucket> result) {
        const std::shared_ptr<Curve> target = weak.lock();
        if (!target || generation != target->generation) return;
        target->query_in_flight = false;
        if (target->requery) {
          target->requery = false;
          updateDecimation();  // the view moved while this ran: ask for the current one
          return;
        }
        applyEnvelope(*target, std::move(result), lo, hi, buckets);
        requestReplot();
        Q_EMIT decimationApplied();
      },
      [weak, generation, key](QString message) {
        // The in-memory copy still draws the curve; the envelope just stays as it was.
        qWarning("decimated_series(%s) failed: %s", key.c_str(), qPrintable(message));
        if (const auto target = weak.lock(); target && generation == target->generation) target->query_in_flight = false;
      });
}

void MetricChart::applyEnvelope(Curve& c, std::vector<SeriesBucket> buckets, int64_t lo, int64_t hi, int64_t count) {
  QVector<double> xs, mins, maxs, lx, lv;
  xs.reserve(static_cast<int>(buckets.size() * 2));
  mins.reserve(xs.capacity());
  maxs.reserve(xs.capacity());
  for (const auto& b : buckets) {
    if (b.count == 0) continue;  // all NaN: the markers say so
    auto [f, l] = c.data.index_range(b.first_step, b.last_step);
    if (f >= l) continue;  // rows this chart has not received yet
    const double x0 = xOf(c, f), x1 = xOf(c, l - 1);
    xs << x0 << x1;
    mins << b.min << b.min;
    maxs << b.max << b.max;
    lx << x1;
    lv << b.last;  // (finite or NaN: non-finite values are counted apart)
  }
  c.env_min->setData(xs, mins, true);
  c.env_max->setData(xs, maxs, true);
  c.env_line->setData(lx, lv, true);
  c.envelope = std::move(buckets);
  c.env_lo = lo;
  c.env_hi = hi;
  c.env_buckets = count;
  c.decimated = true;
  // Raw rows after the envelope's last step are drawn as they are until the next refresh.
  auto [tf, tl] = c.data.index_range(hi + 1, std::numeric_limits<int64_t>::max());
  QVector<double> tx, tv;
  for (size_t i = tf; i < tl; ++i) {
    tx << xOf(c, i);
    tv << (std::isfinite(c.data.values[i]) ? c.data.values[i] : std::numeric_limits<double>::quiet_NaN());
  }
  c.tail->setData(tx, tv, true);
  for (QCPGraph* g : {c.env_min, c.env_max, c.env_line, c.tail}) g->setVisible(true);
  c.raw->setVisible(false);
}

void MetricChart::showRaw(Curve& c, int64_t visible) {
  c.decimated = false;
  c.envelope.clear();
  c.env_hi = c.env_lo - 1;
  for (QCPGraph* g : {c.env_min, c.env_max, c.env_line, c.tail}) {
    g->setVisible(false);
    g->data()->clear();
  }
  c.raw->setVisible(true);
  c.raw->setScatterStyle(visible <= kDotsBelow ? QCPScatterStyle(QCPScatterStyle::ssDisc, faint(c.color, dotAlpha(c)), 4)
                                               : QCPScatterStyle());
  applyPens(c);  // dimmed while another curve is selected
}

// ---- overlays and selection -----------------------------------------------------------------

void MetricChart::removeOverlay(int64_t run_id) {
  bool removed = false;
  for (auto it = curves_.begin(); it != curves_.end();) {
    Curve& c = **it;
    if (!c.overlay() || c.run_id != run_id) {
      ++it;
      continue;
    }
    nan_marks_.erase(std::remove_if(nan_marks_.begin(), nan_marks_.end(), [&](const NanMark& m) { return m.curve == &c; }),
                     nan_marks_.end());
    for (QCPGraph* g : {c.env_min, c.env_max, c.env_line, c.tail, c.raw, c.smooth}) removeGraph(g);
    it = curves_.erase(it);  // an envelope answer still on its way finds the curve gone
    removed = true;
  }
  if (!removed) return;
  if (curves_.size() <= 1) legend->setVisible(false);
  for (auto& c : curves_) applyPens(*c);  // the removed one may have been the selected one
  rebuildNanMarkers();
  if (!user_zoomed_) autoRange();
  requestReplot();
}

void MetricChart::forgetOverlayPoints(int64_t run_id) {
  for (auto& c : curves_)
    if (c->overlay() && c->run_id == run_id) forgetFrom(*c, std::numeric_limits<int64_t>::min());
  rebuildNanMarkers();
  if (!user_zoomed_) autoRange();
  requestReplot();
}

std::vector<int64_t> MetricChart::overlayRuns() const {
  std::vector<int64_t> runs;
  for (const auto& c : curves_)
    if (c->overlay() && std::find(runs.begin(), runs.end(), c->run_id) == runs.end()) runs.push_back(c->run_id);
  return runs;
}

const ChartSeries* MetricChart::overlaySeries(int64_t run_id, const QString& key) const {
  const Curve* c = findOverlay(run_id, key);
  return c ? &c->data : nullptr;
}

QCPGraph* MetricChart::overlayGraph(int64_t run_id, const QString& key) const {
  const Curve* c = findOverlay(run_id, key);
  return c ? c->smooth : nullptr;
}

const std::vector<SeriesBucket>& MetricChart::overlayEnvelope(int64_t run_id, const QString& key) const {
  static const std::vector<SeriesBucket> none;
  const Curve* c = findOverlay(run_id, key);
  return c ? c->envelope : none;
}

void MetricChart::selectCurve(const QString& key, int64_t overlay_run) {
  for (auto& c : curves_)
    c->selected = c->key == key && (overlay_run == 0 ? !c->overlay() : c->overlay() && c->run_id == overlay_run);
  for (auto& c : curves_) {
    applyPens(*c);
    keepSelection(*c);
  }
  requestReplot();
}

QStringList MetricChart::selectedCurves() const {
  QStringList names;
  for (const auto& c : curves_)
    if (c->selected) names << c->name();
  return names;
}

// A click on a curve or its legend entry: QCustomPlot has selected the points there were; the
// chart keeps which curve it was, so the points that arrive later are drawn selected too.
void MetricChart::onUserSelection() {
  for (auto& c : curves_) {
    const QCPPlottableLegendItem* item = legend->itemWithPlottable(c->smooth);
    c->selected = c->smooth->selected() || (item && item->selected());
  }
  for (auto& c : curves_) {
    applyPens(*c);
    keepSelection(*c);
  }
  requestReplot();
}

// QCustomPlot selects data ranges: a curve selected before new points arrived (or before it was
// drawn again with another smoothing or x axis) is selected over all its points again.
void MetricChart::keepSelection(Curve& c) {
  const QCPDataSelection want = c.selected ? QCPDataSelection(c.smooth->data()->dataRange()) : QCPDataSelection();
  if (c.smooth->selection() != want) c.smooth->setSelection(want);
  if (QCPPlottableLegendItem* item = legend->itemWithPlottable(c.smooth); item && item->selected() != c.selected)
    item->setSelected(c.selected);
}

// ---- hover, menu, export -----------------------------------------------------------------------

QString MetricChart::tooltipAt(double x, double pixel_tolerance) const {
  const double px = xAxis->coordToPixel(x);
  for (const auto& m : nan_marks_)
    if (std::fabs(xAxis->coordToPixel(m.x) - px) <= pixel_tolerance) {
      const QString what = std::isnan(m.value) ? "NaN" : (m.value > 0 ? "+Inf" : "-Inf");
      return QString("%1 at step %2 (%3)").arg(what).arg(m.step).arg(m.curve->name());
    }
  QStringList lines;
  int64_t head_step = 0;
  for (const auto& cp : curves_) {
    const Curve& c = *cp;
    if (c.data.size() == 0) continue;
    // Nearest point by x.
    size_t lo = 0, hi = c.data.size();
    while (lo < hi) {
      const size_t mid = (lo + hi) / 2;
      if (xOf(c, mid) < x) lo = mid + 1; else hi = mid;
    }
    size_t i = std::min(lo, c.data.size() - 1);
    if (i > 0 && std::fabs(xOf(c, i - 1) - x) < std::fabs(xOf(c, i) - x)) --i;
    if (lines.isEmpty()) {
      QString head = QString("step %1").arg(c.data.steps[i]);
      if (x_mode_ == XAxisMode::WallTime) head += QString("  (%1 s)").arg(xOf(c, i), 0, 'f', 1);
      if (x_mode_ == XAxisMode::TokensSeen) head += QString("  (%1 tokens)").arg(c.data.tokens[i], 0, 'f', 0);
      lines << head;
      head_step = c.data.steps[i];
    }
    const double smoothed = c.smooth->data()->at(static_cast<int>(i))->value;
    QString line = QString("%1: %2  (smoothed %3)").arg(c.name(), number(c.data.values[i]), number(smoothed));
    if (c.data.steps[i] != head_step) line += QString("  at step %1").arg(c.data.steps[i]);  // another logging interval
    lines << line;
    if (c.decimated) {
      for (const auto& b : c.envelope)
        if (c.data.steps[i] >= b.first_step && c.data.steps[i] <= b.last_step) {
          lines << QString("  steps %1-%2: min %3, max %4, %5 points")
                       .arg(b.first_step).arg(b.last_step).arg(number(b.min), number(b.max))
                       .arg(b.count + b.nan_count);
          break;
        }
    }
  }
  return lines.join('\n');
}

void MetricChart::onMouseMove(QMouseEvent* event) {
  if (event->buttons() & Qt::LeftButton) {
    user_zoomed_ = true;  // a drag pans
    return;
  }
  if (!axisRect()->rect().contains(event->pos())) {
    QToolTip::hideText();
    return;
  }
  const QString text = tooltipAt(xAxis->pixelToCoord(event->pos().x()));
  if (text.isEmpty())
    QToolTip::hideText();
  else
    QToolTip::showText(event->globalPosition().toPoint(), text, this);
}

void MetricChart::contextMenuEvent(QContextMenuEvent* event) {
  QMenu menu(this);
  menu.addAction("Reset zoom", this, &MetricChart::resetZoom);
  QAction* log = menu.addAction("Log scale", this, [this](bool on) { setLogY(on); });
  log->setCheckable(true);
  log->setChecked(log_y_);
  menu.addSeparator();
  menu.addAction("Export image (PNG / SVG / PDF)...", this, &MetricChart::exportImageDialog);
  for (const auto& c : curves_) {
    if (c->overlay()) continue;  // an overlaid run's data is exported from its own dashboard
    const QString key = c->key;
    menu.addAction(QString("Export %1 as CSV...").arg(key), this, [this, key] { exportCsvDialog(key); });
  }
  menu.exec(event->globalPos());
}

void MetricChart::wheelEvent(QWheelEvent* event) {
  if (!(event->modifiers() & Qt::ControlModifier)) {
    event->ignore();  // the parent (the dashboard's scroll area) scrolls
    return;
  }
  QCustomPlot::wheelEvent(event);
}

void MetricChart::resizeEvent(QResizeEvent* event) {
  QCustomPlot::resizeEvent(event);
  if (pointCount() > kDecimateAbove) scheduleDecimation(false);
}

void MetricChart::exportImageDialog() {
  QString base = title_;
  base.replace(QRegularExpression("[^A-Za-z0-9_.-]+"), "_");
  const QString path = QFileDialog::getSaveFileName(this, "Export chart", base + ".png",
                                                    "PNG image (*.png);;SVG image (*.svg);;PDF document (*.pdf)");
  if (!path.isEmpty() && !exportImage(path)) QToolTip::showText(QCursor::pos(), "Could not write " + path, this);
}

void MetricChart::exportCsvDialog(const QString& key) {
  QString base = key;
  base.replace(QRegularExpression("[^A-Za-z0-9_.-]+"), "_");
  const QString path = QFileDialog::getSaveFileName(this, "Export data", base + ".csv", "CSV (*.csv)");
  if (!path.isEmpty() && !exportCsv(path, key)) QToolTip::showText(QCursor::pos(), "Could not write " + path, this);
}

void MetricChart::paintTo(QCPPainter* painter, int width, int height) { toPainter(painter, width, height); }

bool MetricChart::exportImage(const QString& path, int w, int h) {
  if (w <= 0) w = std::max(640, width());
  if (h <= 0) h = std::max(400, height());
  const QString suffix = QFileInfo(path).suffix().toLower();
  if (suffix == "png") return savePng(path, w, h);
  if (suffix == "pdf") return savePdf(path, w, h);
  if (suffix == "svg") {
    QSvgGenerator svg;
    svg.setFileName(path);
    svg.setSize(QSize(w, h));
    svg.setViewBox(QRect(0, 0, w, h));
    svg.setTitle(title_);
    QCPPainter painter;
    if (!painter.begin(&svg)) return false;
    painter.setMode(QCPPainter::pmVectorized);
    painter.setMode(QCPPainter::pmNoCaching);
    toPainter(&painter, w, h);
    painter.end();
    return QFileInfo(path).size() > 0;
  }
  return false;
}

bool MetricChart::exportCsv(const QString& path, const QString& key) const {
  const Curve* c = key.isEmpty() ? (curves_.empty() ? nullptr : curves_.front().get()) : find(key);
  if (!c) return false;
  QFile file(path);
  if (!file.open(QIODevice::WriteOnly | QIODevice::Truncate | QIODevice::Text)) return false;
  QTextStream out(&file);
  out << "step,wall_time,tokens_seen,value\n";
  for (size_t i = 0; i < c->data.size(); ++i)
    out << c->data.steps[i] << ',' << QString::number(c->data.wall_times[i], 'f', 3) << ','
        << QString::number(c->data.tokens[i], 'g', 15) << ',' << number(c->data.values[i]) << '\n';
  out.flush();
  return file.error() == QFileDevice::NoError;
}

}  // namespace ganpo::ui

namespace ganpo::ui {

void MetricChart::requestReplot() {
  if (!isVisible() || visibleRegion().isEmpty()) {
    replot_pending_ = true;
    return;
  }
  replot(rpQueuedReplot);
}

void MetricChart::paintEvent(QPaintEvent* event) {
  if (replot_pending_) {
    replot_pending_ = false;
    replot(rpQueuedRefresh);  // renders the layers now; the base class then paints them
  }
  QCustomPlot::paintEvent(event);
}

}  // namespace ganpo::ui

namespace ganpo::ui {

void MetricChart::applyPalette() {
  // Light or dark: the chart takes the widget palette's colours, as the rest of the window does.
  apply_chart_palette(this, palette(), title_element_);
}

void MetricChart::changeEvent(QEvent* event) {
  if (event->type() == QEvent::PaletteChange) {
    applyPalette();
    requestReplot();
  }
  QCustomPlot::changeEvent(event);
}

}  // namespace ganpo::ui
