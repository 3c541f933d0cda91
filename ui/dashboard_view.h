// DashboardView: the live Dashboard tab of one run. Charts appear as the run logs metrics,
// grouped as UX.md lists them (Preference, Adversarial, Optimisation, System, Other; only the
// charts whose metrics the run has), fed by a MetricFeed that polls the store a few times a second
// through the StoreWorker. Above the charts: the controls shared by every chart (x axis, smoothing,
// log y, reset zoom, export) and a health line that reads the curves (curve_health.h). The UI
// thread never waits on the database.
#pragma once

#include <QHash>
#include <QList>
#include <QString>
#include <QWidget>

#include <cstdint>
#include <map>
#include <optional>

#include "ui/chart_catalog.h"
#include "ui/chart_series.h"
#include "ui/metric_feed.h"

class QCheckBox;
class QComboBox;
class QGridLayout;
class QLabel;
class QScrollArea;
class QSlider;
class QVBoxLayout;
class QPainter;

namespace ganpo::ui {

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
  double adv_weight_ = 1.0;
  QString health_ = "waiting for metrics";

  QComboBox* x_combo_ = nullptr;
  QSlider* smoothing_slider_ = nullptr;
  QLabel* smoothing_label_ = nullptr;
  QCheckBox* log_check_ = nullptr;
  QLabel* points_label_ = nullptr;
  QLabel* health_label_ = nullptr;
  QScrollArea* scroll_ = nullptr;
  QWidget* content_ = nullptr;
  QVBoxLayout* content_layout_ = nullptr;
  QLabel* empty_label_ = nullptr;
  QHash<QString, Group*> groups_;          // by group name
  QHash<QString, MetricChart*> by_key_;    // metric key -> chart
  QHash<QString, MetricChart*> by_id_;     // chart id -> chart
  // Derived lambda * adv share: values waiting for their partner of the same step.
  std::map<int64_t, MetricPoint> pending_loss_, pending_adv_;
  std::optional<double> wall_origin_;  // the run's first row's wall time: every chart's time 0
};

}  // namespace ganpo::ui
