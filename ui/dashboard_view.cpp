#include "ui/dashboard_view.h"

#include <QCheckBox>
#include <QComboBox>
#include <QCryptographicHash>
#include <QFileDialog>
#include <QFileInfo>
#include <QGridLayout>
#include <QHBoxLayout>
#include <QJsonDocument>
#include <QJsonObject>
#include <QLabel>
#include <QMenu>
#include <QMessageBox>
#include <QPageSize>
#include <QPainter>
#include <QPdfWriter>
#include <QPushButton>
#include <QScrollArea>
#include <QSettings>
#include <QSvgGenerator>
#include <QVBoxLayout>

#include <cmath>
#include <set>

#include "ui/curve_health.h"
#include "ui/metric_chart.h"
#include "ui/run_list_model.h"
#include "ui/smoothing_control.h"
#include "ui/store_worker.h"

namespace ganpo::ui {
namespace {
constexpr int kColumns = 2;
constexpr int kChartHeight = 250;
constexpr int kHealthBand = 36;  // height of the health line in exported images
constexpr int kOverlayMenuRuns = 40;  // the newest runs offered in the overlay menu
// Points an overlaid run has of a key this run has no chart for are kept up to this many; past
// it the key's points are let go, and read again from the store if this run logs the key later.
constexpr size_t kOverlayWaitingPerKey = 20000;

bool is_derived_key(const std::string& key) {
  for (const DerivedCurve& d : derived_curves())
    if (key == d.key) return true;
  return false;
}
}  // namespace

DashboardView::DashboardView(StoreWorker* store, int64_t run_id, QWidget* parent)
    : QWidget(parent), store_(store), run_id_(run_id) {
  auto* layout = new QVBoxLayout(this);
  layout->setContentsMargins(6, 6, 6, 6);

  auto* controls = new QHBoxLayout;
  controls->addWidget(new QLabel("X axis:"));
  x_combo_ = new QComboBox;
  x_combo_->addItems({"Step", "Wall time", "Tokens seen"});
  controls->addWidget(x_combo_);
  controls->addSpacing(12);
  smoothing_control_ = new SmoothingControl(smoothing_, "Debiased exponential moving average weight (0 = raw)");
  controls->addWidget(smoothing_control_);
  controls->addSpacing(12);
  log_check_ = new QCheckBox("Log y");
  controls->addWidget(log_check_);
  auto* reset = new QPushButton("Reset zoom");
  reset->setToolTip("Restore the automatic range of every chart (or double-click a chart). Ctrl + wheel zooms a chart, "
                   "a drag pans it; the wheel alone scrolls the dashboard");
  controls->addWidget(reset);
  controls->addStretch(1);
  points_label_ = new QLabel("0 points");
  controls->addWidget(points_label_);
  overlay_button_ = new QPushButton("Overlay runs...");
  overlay_button_->setToolTip("Draw other runs of the workspace over these charts (dashed, in their run-list colour)");
  controls->addWidget(overlay_button_);
  auto* export_button = new QPushButton("Export...");
  export_button->setToolTip("Save the whole dashboard as PNG, SVG or PDF");
  controls->addWidget(export_button);
  layout->addLayout(controls);

  health_label_ = new QLabel(health_);
  health_label_->setWordWrap(true);
  health_label_->setTextInteractionFlags(Qt::TextSelectableByMouse);
  health_label_->setContentsMargins(8, 4, 8, 4);
  health_label_->setStyleSheet("QLabel { background: #f2f2f2; border-radius: 3px; color: #555; }");
  layout->addWidget(health_label_);

  scroll_ = new QScrollArea;
  scroll_->setWidgetResizable(true);
  scroll_->setFrameShape(QFrame::NoFrame);
  content_ = new QWidget;
  content_layout_ = new QVBoxLayout(content_);
  content_layout_->setContentsMargins(0, 0, 0, 0);
  empty_label_ = new QLabel("No metrics logged yet.");
  empty_label_->setAlignment(Qt::AlignCenter);
  content_layout_->addWidget(empty_label_);
  for (const QString& name : chart_groups()) {
    auto* g = new Group;
    g->box = new QWidget;
    auto* v = new QVBoxLayout(g->box);
    v->setContentsMargins(0, 6, 0, 6);
    auto* header = new QLabel(name);
    QFont f = header->font();
    f.setBold(true);
    f.setPointSizeF(f.pointSizeF() + 1);
    header->setFont(f);
    v->addWidget(header);
    g->grid = new QGridLayout;
    g->grid->setSpacing(6);
    for (int c = 0; c < kColumns; ++c) g->grid->setColumnStretch(c, 1);
    v->addLayout(g->grid);
    g->box->hide();
    content_layout_->addWidget(g->box);
    groups_.insert(name, g);
  }
  content_layout_->addStretch(1);
  scroll_->setWidget(content_);
  layout->addWidget(scroll_, 1);

  connect(x_combo_, qOverload<int>(&QComboBox::currentIndexChanged), this,
          [this](int i) { setXAxisMode(static_cast<XAxisMode>(i)); });
  connect(smoothing_control_, &SmoothingControl::weightChanged, this, [this](double w) { setSmoothing(w); });
  connect(log_check_, &QCheckBox::toggled, this, &DashboardView::setLogY);
  connect(reset, &QPushButton::clicked, this, &DashboardView::resetZoom);
  connect(export_button, &QPushButton::clicked, this, &DashboardView::exportDialog);
  connect(overlay_button_, &QPushButton::clicked, this, &DashboardView::showOverlayMenu);

  // The config first (queries run in order), so the first batch already knows the loss type.
  if (store_) {
    const int64_t run = run_id_;
    store_->query<std::string>(
        this, [run](RunStore& s) { auto r = s.run(run); return r ? r->config_json : std::string(); },
        [this](std::string json) { onConfig(QString::fromStdString(json)); }, [](QString) {});
  }
  feed_ = new MetricFeed(store_, run_id_, this);
  connect(feed_, &MetricFeed::pointsArrived, this, &DashboardView::onBatch);
  connect(feed_, &MetricFeed::readingAgain, this, &DashboardView::onReadingAgain);
  connect(feed_, &MetricFeed::failed, this, [this](const QString& message) {
    health_label_->setText("Cannot read metrics: " + message);
  });
  feed_->pollNow();
  if (store_)
    for (const QString& id : QSettings().value(overlaysSettingsKey()).toStringList())
      if (bool ok = false; id.toLongLong(&ok), ok) addOverlay(id.toLongLong());
}

QString DashboardView::overlaysSettingsKey() const {
  const QByteArray workspace = QCryptographicHash::hash(QFileInfo(store_->db_path()).absoluteFilePath().toUtf8(),
                                                        QCryptographicHash::Sha1)
                                   .toHex()
                                   .left(16);
  return QStringLiteral("dashboard/overlays/%1/%2").arg(QString::fromLatin1(workspace)).arg(run_id_);
}

void DashboardView::rememberOverlays() const {
  if (!store_) return;
  QStringList ids;
  for (const auto& [id, o] : overlays_) ids << QString::number(id);
  QSettings settings;
  if (ids.isEmpty())
    settings.remove(overlaysSettingsKey());
  else
    settings.setValue(overlaysSettingsKey(), ids);
}

struct DashboardView::Overlay {
  int64_t run_id = 0;
  QString label;  // "#12 name"
  QColor color;
  MetricFeed* feed = nullptr;
  std::optional<double> wall_origin;  // its first row's time: its wall-time 0
  DerivedContext derived_context;
  std::vector<StepJoin> derived_joins;
  MetricBatch waiting;  // points of keys this run has no chart for (yet)
  std::set<std::string> let_go;  // keys whose waiting points outgrew kOverlayWaitingPerKey
};

DashboardView::~DashboardView() { qDeleteAll(groups_); }

void DashboardView::setLive(bool live) {
  feed_->setLive(live);
  if (!live) feed_->pollNow();  // whatever was written last still arrives
  for (auto& [id, o] : overlays_) {
    o->feed->setLive(live);
    if (!live) o->feed->pollNow();
  }
}

bool DashboardView::isLive() const { return feed_->isLive(); }

int64_t DashboardView::pointsLoaded() const { return feed_->rowsLoaded(); }

QString DashboardView::healthText() const { return health_; }

MetricChart* DashboardView::chart(const QString& metric_key) const { return by_key_.value(metric_key, nullptr); }

QList<MetricChart*> DashboardView::charts() const { return by_id_.values(); }

QStringList DashboardView::visibleGroups() const {
  QStringList out;
  for (const QString& name : chart_groups())
    if (!groups_.value(name)->charts.empty()) out << name;
  return out;
}

void DashboardView::onConfig(const QString& config_json) {
  const QJsonObject cfg = QJsonDocument::fromJson(config_json.toUtf8()).object();
  const QJsonObject objective = cfg.value("objective").toObject();
  const QJsonObject ganpo = cfg.value("ganpo").toObject();
  if (objective.contains("loss_type")) sigmoid_loss_ = objective.value("loss_type").toString() == "sigmoid";
  if (ganpo.contains("adv_weight")) derived_context_.adv_weight = ganpo.value("adv_weight").toDouble(1.0);
  total_is_base_ = cfg.value("stage").toString() == "preference" && !ganpo.value("enabled").toBool(true) &&
                   objective.value("rpo_alpha").toDouble(0.0) == 0.0;
  const auto ln2_if = [](bool bce) { return bce ? std::optional<double>(std::log(2.0)) : std::nullopt; };
  if (MetricChart* c = by_id_.value("opo_loss")) c->setReferenceLine(ln2_if(sigmoid_loss_));
  if (MetricChart* c = by_id_.value("loss")) c->setReferenceLine(ln2_if(sigmoid_loss_ && total_is_base_));
}

MetricChart* DashboardView::chartFor(const QString& key, bool derived) {
  if (MetricChart* c = by_key_.value(key)) return c;
  const ChartSpec spec = chart_spec_for_key(key, sigmoid_loss_, total_is_base_);
  MetricChart* chart = by_id_.value(spec.id);
  if (!chart) {
    chart = new MetricChart(store_, run_id_, spec.title);
    chart->setMinimumHeight(kChartHeight);
    chart->setSmoothing(smoothing_);
    chart->setXAxisMode(x_mode_);
    chart->setLogY(log_y_);
    if (wall_origin_) chart->setWallOrigin(*wall_origin_);
    if (spec.bce) chart->setReferenceLine(std::log(2.0));
    if (spec.zero_line) chart->setReferenceLine(0.0);
    by_id_.insert(spec.id, chart);
    Group* g = groups_.value(spec.group);
    g->charts[{spec.order, spec.id}] = chart;
    // Re-lay the group's grid in catalog order.
    while (g->grid->count() > 0) delete g->grid->takeAt(0);
    int i = 0;
    for (auto& [order, c] : g->charts) {
      g->grid->addWidget(c, i / kColumns, i % kColumns);
      ++i;
    }
    g->box->show();
    empty_label_->hide();
  }
  chart->addSeries(key, derived);
  by_key_.insert(key, chart);
  // Overlaid runs' points of this key that came before this run logged it: kept, or read again.
  const std::string k = key.toStdString();
  for (auto& [id, o] : overlays_) {
    if (auto w = o->waiting.find(k); w != o->waiting.end()) {
      const auto points = std::move(w->second);
      o->waiting.erase(w);
      chart->appendOverlayPoints(o->run_id, o->label, o->color, o->wall_origin.value_or(0), key, points, derived);
    } else if (o->let_go.count(k)) {
      o->feed->readAgain();  // every row again (readingAgain clears what it drew)
    }
  }
  return chart;
}

void DashboardView::onBatch(const MetricBatch& batch) {
  if (!wall_origin_) {  // the feed reads from the run's first row: its earliest time
    for (const auto& [key, points] : batch)
      for (const MetricPoint& p : points) wall_origin_ = std::min(wall_origin_.value_or(p.wall_time), p.wall_time);
    if (wall_origin_)
      for (MetricChart* c : by_id_) c->setWallOrigin(*wall_origin_);
  }
  for (const auto& [key, points] : batch) {
    const QString k = QString::fromStdString(key);
    chartFor(k, false)->appendPoints(k, points);
  }
  appendDerived(batch);
  points_label_->setText(QString("%L1 points").arg(pointsLoaded()));
  Q_EMIT pointsLoadedChanged(pointsLoaded());
  updateHealth();
}

void DashboardView::onReadingAgain() {
  for (MetricChart* c : by_id_) c->forgetPoints();
  for (StepJoin& join : derived_joins_) join.clear();
  // The health line and the count were read from rows the run may no longer have (a run started
  // again from its first step has none yet): they wait for the rows read again.
  health_ = "waiting for metrics";
  health_label_->setText(health_);
  health_label_->setStyleSheet("QLabel { background: #f2f2f2; border-radius: 3px; color: #555; }");
  points_label_->setText("0 points");
  Q_EMIT pointsLoadedChanged(0);
  Q_EMIT healthChanged(health_);
}

// Curves computed from logged ones (derived_series.h), as their inputs' steps complete. A step
// written again (a rewound run) replaces its point in the chart.
void DashboardView::appendDerived(const MetricBatch& batch) {
  for (const auto& [key, points] : derive_points(batch, derived_joins_, derived_context_)) {
    const QString k = QString::fromStdString(key);
    chartFor(k, true)->appendPoints(k, points);
  }
}

// ---- overlays ----------------------------------------------------------------------------------

void DashboardView::addOverlay(int64_t run_id) {
  if (run_id == run_id_ || overlays_.count(run_id) || !store_) return;
  auto o = std::make_unique<Overlay>();
  o->run_id = run_id;
  o->label = QString("#%1").arg(run_id);
  o->color = run_color(run_id);
  Overlay* raw = o.get();
  overlays_[run_id] = std::move(o);
  // Its name and lambda first (queries run in order), so its first points are labelled.
  store_->query<std::optional<RunRow>>(
      this, [run_id](RunStore& s) { return s.run(run_id); },
      [this, run_id, raw](std::optional<RunRow> row) {
        if (!overlays_.count(run_id) || overlays_.at(run_id).get() != raw) return;  // removed meanwhile
        if (!row) {
          removeOverlay(run_id);  // deleted since the menu listed it
          return;
        }
        raw->label = QString("#%1 %2").arg(run_id).arg(QString::fromStdString(row->name));
        const QJsonObject ganpo =
            QJsonDocument::fromJson(QByteArray::fromStdString(row->config_json)).object().value("ganpo").toObject();
        raw->derived_context.adv_weight = ganpo.value("adv_weight").toDouble(1.0);
      },
      [](QString) {});
  raw->feed = new MetricFeed(store_, run_id, this);
  connect(raw->feed, &MetricFeed::pointsArrived, this, [this, raw](const MetricBatch& batch) { onOverlayBatch(*raw, batch); });
  connect(raw->feed, &MetricFeed::readingAgain, this, [this, raw] {
    for (MetricChart* c : by_id_) c->forgetOverlayPoints(raw->run_id);
    raw->waiting.clear();
    raw->let_go.clear();
    for (StepJoin& join : raw->derived_joins) join.clear();
  });
  raw->feed->setLive(isLive());
  raw->feed->pollNow();
  rememberOverlays();
}

void DashboardView::removeOverlay(int64_t run_id) {
  auto it = overlays_.find(run_id);
  if (it == overlays_.end()) return;
  it->second->feed->deleteLater();  // a query in flight answers nobody
  it->second->feed->disconnect(this);
  overlays_.erase(it);
  for (MetricChart* c : by_id_) c->removeOverlay(run_id);
  rememberOverlays();
}

std::vector<int64_t> DashboardView::overlays() const {
  std::vector<int64_t> ids;
  for (const auto& [id, o] : overlays_) ids.push_back(id);
  return ids;
}

int64_t DashboardView::overlayPointsLoaded(int64_t run_id) const {
  auto it = overlays_.find(run_id);
  return it == overlays_.end() ? -1 : it->second->feed->rowsLoaded();
}

void DashboardView::onOverlayBatch(Overlay& o, const MetricBatch& batch) {
  if (!o.wall_origin)
    for (const auto& [key, points] : batch)
      for (const MetricPoint& p : points) o.wall_origin = std::min(o.wall_origin.value_or(p.wall_time), p.wall_time);
  for (const auto& [key, points] : batch) drawOverlayPoints(o, key, points);
  for (const auto& [key, points] : derive_points(batch, o.derived_joins, o.derived_context)) drawOverlayPoints(o, key, points);
}

void DashboardView::drawOverlayPoints(Overlay& o, const std::string& key, const std::vector<MetricPoint>& points) {
  const QString k = QString::fromStdString(key);
  if (MetricChart* c = chart(k)) {
    c->appendOverlayPoints(o.run_id, o.label, o.color, o.wall_origin.value_or(0), k, points, is_derived_key(key));
    return;
  }
  if (o.let_go.count(key)) return;
  auto& waiting = o.waiting[key];
  // A step written again replaces the waiting points from it on, as a chart would.
  if (!points.empty())
    while (!waiting.empty() && waiting.back().step >= points.front().step) waiting.pop_back();
  waiting.insert(waiting.end(), points.begin(), points.end());
  if (waiting.size() > kOverlayWaitingPerKey) {  // a key this run may never log: not kept
    o.waiting.erase(key);
    o.let_go.insert(key);
  }
}

// The newest runs of the workspace, each checkable; built when the answer comes, under the button.
void DashboardView::showOverlayMenu() {
  if (!store_) return;
  store_->query<std::vector<RunRow>>(
      this, [](RunStore& s) { return s.runs(); },
      [this](std::vector<RunRow> runs) {
        auto* menu = new QMenu(this);
        menu->setAttribute(Qt::WA_DeleteOnClose);
        std::sort(runs.begin(), runs.end(), [](const RunRow& a, const RunRow& b) { return a.id > b.id; });
        int listed = 0;
        for (const RunRow& r : runs) {
          if (r.id == run_id_ || listed == kOverlayMenuRuns) continue;
          ++listed;
          QPixmap swatch(12, 12);
          swatch.fill(run_color(r.id));
          QAction* a = menu->addAction(QIcon(swatch), QString("#%1 %2 (%3)").arg(r.id).arg(QString::fromStdString(r.name),
                                                                                    QString::fromUtf8(to_string(r.status))));
          a->setCheckable(true);
          a->setChecked(overlays_.count(r.id) > 0);
          const int64_t id = r.id;
          connect(a, &QAction::toggled, this, [this, id](bool on) { on ? addOverlay(id) : removeOverlay(id); });
        }
        if (listed == 0) menu->addAction("No other runs in this workspace")->setEnabled(false);
        if (!overlays_.empty()) {
          menu->addSeparator();
          menu->addAction("Remove every overlay", this, [this] {
            for (int64_t id : overlays()) removeOverlay(id);
          });
        }
        menu->popup(overlay_button_->mapToGlobal(QPoint(0, overlay_button_->height())));
      },
      [this](QString message) { health_label_->setText("Cannot list the workspace's runs: " + message); });
}

void DashboardView::updateHealth() {
  CurveSet curves;
  for (const char* key : {"loss", "opo_loss", "critic/acc_chosen", "critic/acc_rejected", "rewards/accuracies",
                          "logps/chosen", "logps/rejected"}) {
    MetricChart* c = chart(key);
    if (!c) continue;
    if (const ChartSeries* s = c->series(key)) curves[key] = view_of(s->steps, s->values);
  }
  if (curves.empty()) return;
  const auto findings = check_curve_health(curves);
  health_ = QString::fromStdString(health_summary(findings));
  if (findings.empty()) {
    health_label_->setText("\u2714 healthy: no warning signs in the curves");
    health_label_->setStyleSheet("QLabel { background: #e8f5e9; border-radius: 3px; color: #1b5e20; }");
  } else {
    health_label_->setText("\u26a0 " + health_);
    health_label_->setStyleSheet("QLabel { background: #fff3e0; border-radius: 3px; color: #8a4b00; }");
  }
  Q_EMIT healthChanged(health_);
}

void DashboardView::setSmoothing(double weight) {
  smoothing_ = std::clamp(weight, 0.0, 0.99);
  smoothing_control_->setWeight(smoothing_);
  for (MetricChart* c : charts()) c->setSmoothing(smoothing_);
}

void DashboardView::setXAxisMode(XAxisMode mode) {
  x_mode_ = mode;
  if (x_combo_->currentIndex() != static_cast<int>(mode)) x_combo_->setCurrentIndex(static_cast<int>(mode));
  for (MetricChart* c : charts()) c->setXAxisMode(mode);
}

void DashboardView::setLogY(bool on) {
  log_y_ = on;
  if (log_check_->isChecked() != on) log_check_->setChecked(on);
  for (MetricChart* c : charts()) c->setLogY(on);
}

void DashboardView::resetZoom() {
  for (MetricChart* c : charts()) c->resetZoom();
}

// ---- export ------------------------------------------------------------------------------------

void DashboardView::exportDialog() {
  const QString path = QFileDialog::getSaveFileName(this, "Export dashboard", QString("run-%1-dashboard.png").arg(run_id_),
                                                    "PNG image (*.png);;SVG image (*.svg);;PDF document (*.pdf)");
  if (!path.isEmpty() && !exportDashboard(path))
    QMessageBox::warning(this, "Export failed", "Could not write " + path + ".");
}

// Health line on top, then every visible group header and chart where it sits on screen. Charts
// are drawn through QCustomPlot's own painter path, so SVG and PDF keep them as vectors.
void DashboardView::paintDashboard(QPainter& painter, bool vector) {
  painter.fillRect(QRect(0, 0, content_->width(), content_->height() + kHealthBand), palette().color(QPalette::Base));
  painter.setPen(palette().color(QPalette::Text));  // readable on Base in dark palettes too
  painter.drawText(QRect(8, 0, content_->width() - 16, kHealthBand), Qt::AlignVCenter | Qt::TextWordWrap,
                   "Health: " + health_);
  painter.translate(0, kHealthBand);
  for (const QString& name : chart_groups()) {
    Group* g = groups_.value(name);
    if (g->charts.empty()) continue;
    const QPoint at = g->box->mapTo(content_, QPoint(0, 0));
    QFont f = painter.font();
    f.setBold(true);
    painter.save();
    painter.setFont(f);
    painter.drawText(QPoint(at.x() + 2, at.y() + 20), name);
    painter.restore();
    for (auto& [order, chart] : g->charts) {
      const QPoint p = chart->mapTo(content_, QPoint(0, 0));
      painter.save();
      painter.translate(p);
      if (vector) {
        chart->paintTo(static_cast<QCPPainter*>(&painter), chart->width(), chart->height());
      } else {
        painter.drawPixmap(0, 0, chart->toPixmap(chart->width(), chart->height()));
      }
      painter.restore();
    }
  }
}

bool DashboardView::exportDashboard(const QString& path) {
  content_->adjustSize();
  const QSize size(std::max(content_->width(), 640), content_->height() + kHealthBand);
  const QString suffix = QFileInfo(path).suffix().toLower();
  if (suffix == "png") {
    QImage image(size, QImage::Format_ARGB32);
    image.fill(palette().color(QPalette::Base));
    QPainter painter(&image);
    paintDashboard(painter, false);
    painter.end();
    return image.save(path, "PNG");
  }
  if (suffix == "svg" || suffix == "pdf") {
    std::unique_ptr<QPaintDevice> device;
    if (suffix == "svg") {
      auto svg = std::make_unique<QSvgGenerator>();
      svg->setFileName(path);
      svg->setSize(size);
      svg->setViewBox(QRect(QPoint(0, 0), size));
      svg->setTitle("GANPO Workbench dashboard");
      device = std::move(svg);
    } else {
      auto pdf = std::make_unique<QPdfWriter>(path);
      pdf->setResolution(72);  // one pixel of the layout = one point on the page
      pdf->setPageSize(QPageSize(QSizeF(size), QPageSize::Point, "dashboard", QPageSize::ExactMatch));
      pdf->setPageMargins(QMarginsF(0, 0, 0, 0));
      pdf->setCreator("GANPO Workbench");
      device = std::move(pdf);
    }
    QCPPainter painter;
    if (!painter.begin(device.get())) return false;
    painter.setMode(QCPPainter::pmVectorized);
    painter.setMode(QCPPainter::pmNoCaching);
    paintDashboard(painter, true);
    painter.end();
    device.reset();
    return QFileInfo(path).size() > 0;
  }
  return false;
}

}  // namespace ganpo::ui
