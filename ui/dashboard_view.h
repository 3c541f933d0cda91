// DashboardView: the live Dashboard tab of one run. Charts appear as the run logs metrics,
// grouped as UX.md lists them (Preference, Adversarial, Optimisation, System, Other; only the
// charts whose metrics the run has), fed by a MetricFeed that polls the store a few times a second
// through the StoreWorker. Above the charts: the controls shared by every chart (x axis, smoothing,
// log y, reset zoom, overlay of other runs, export) and a health line that reads the curves
// (curve_health.h). An overlaid run is read by a feed of its own and drawn, dashed in its run-list
// colour, on the charts of the keys this run logs too. The UI thread never waits on the database.
#pragma once

#include <QHash>
#include <QList>
#include <QString>
#include <QWidget>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "ui/chart_catalog.h"
#include "ui/chart_series.h"
#include "ui/derived_series.h"
#include "ui/metric_feed.h"

class QCheckBox;
class QPushButton;
class QComboBox;
class QGridLayout;
class QLabel;
class QScrollArea;
class QVBoxLayout;
class QPainter;

namespace ganpo::ui {

class SmoothingControl;

class MetricChart;
class StoreWorker;

class DashboardView : public QWidget {
  Q_OBJECT
public:
  DashboardView(StoreWorker* store, int64_t run_id, QWidget* parent = nullptr);
  ~DashboardView() override;

  // Polling for new rows on / off (a finished run is loaded once either way).
  void setLive(bool live);
  bool isLive() const;
  // Metric rows received so far.
  int64_t pointsLoaded() const;
  // The health line as plain text ("healthy" when no rule fires).
  QString healthText() const;

  // The chart drawing metric_key (nullptr when the run has not logged it).
  MetricChart* chart(const QString& metric_key) const;
  QList<MetricChart*> charts() const;
  // Groups that currently show at least one chart, in display order.
  QStringList visibleGroups() const;
  MetricFeed* feed() const { return feed_; }

  // Controls, also reachable from code.
  void setSmoothing(double weight);
  double smoothing() const { return smoothing_; }
  void setXAxisMode(XAxisMode mode);
  void setLogY(bool on);
  void resetZoom();
  // The whole dashboard as .png, .svg or .pdf (by suffix).
  bool exportDashboard(const QString& path);

  // Another run of the workspace drawn over this run's charts (its derived curves too); read
  // while this dashboard is live, like this run. This run itself, or a run already overlaid, is
  // left as it is. Which runs are overlaid is remembered per workspace and run (QSettings, as the
  // window's geometry): a dashboard opened again, in this session or the next, draws them again.
  void addOverlay(int64_t run_id);
  void removeOverlay(int64_t run_id);
  std::vector<int64_t> overlays() const;
  // Metric rows of an overlaid run received so far (-1 when it is not overlaid).
  int64_t overlayPointsLoaded(int64_t run_id) const;

Q_SIGNALS:
  void pointsLoadedChanged(qint64 points);
  void healthChanged(const QString& text);

private:
  struct Group {
    QWidget* box = nullptr;
    QGridLayout* grid = nullptr;
    std::map<std::pair<int, QString>, MetricChart*> charts;  // (catalog order, id) -> chart
  };
  void onBatch(const MetricBatch& batch);
  void onReadingAgain();  // the run was rewound: the charts are drawn again from its rows
  void onConfig(const QString& config_json);
  MetricChart* chartFor(const QString& key, bool derived);
  void appendDerived(const MetricBatch& batch);
  void updateHealth();
  struct Overlay;
  void onOverlayBatch(Overlay& o, const MetricBatch& batch);
  void drawOverlayPoints(Overlay& o, const std::string& key, const std::vector<MetricPoint>& points);
  void showOverlayMenu();
  QString overlaysSettingsKey() const;  // this workspace file's and run's
  void rememberOverlays() const;
  void exportDialog();
  void paintDashboard(QPainter& painter, bool vector);

  StoreWorker* store_;
  int64_t run_id_;
  MetricFeed* feed_ = nullptr;
  double smoothing_ = 0.6;
  XAxisMode x_mode_ = XAxisMode::Step;
  bool log_y_ = false;
  bool sigmoid_loss_ = true;
  bool total_is_base_ = false;  // a preference stage without GANPO or RPO: loss = the base loss
  DerivedContext derived_context_;  // lambda from the run's config
  QString health_ = "waiting for metrics";

  QComboBox* x_combo_ = nullptr;
  SmoothingControl* smoothing_control_ = nullptr;
  QCheckBox* log_check_ = nullptr;
  QLabel* points_label_ = nullptr;
  QPushButton* overlay_button_ = nullptr;
  QLabel* health_label_ = nullptr;
  QScrollArea* scroll_ = nullptr;
  QWidget* content_ = nullptr;
  QVBoxLayout* content_layout_ = nullptr;
  QLabel* empty_label_ = nullptr;
  QHash<QString, Group*> groups_;          // by group name
  QHash<QString, MetricChart*> by_key_;    // metric key -> chart
  QHash<QString, MetricChart*> by_id_;     // chart id -> chart
  // One per derived_curves() entry: the inputs' points waiting for the rest of their step.
  std::vector<StepJoin> derived_joins_;
  std::optional<double> wall_origin_;  // the run's first row's wall time: every chart's time 0
  std::map<int64_t, std::unique_ptr<Overlay>> overlays_;  // by run id
};

}  // namespace ganpo::ui
