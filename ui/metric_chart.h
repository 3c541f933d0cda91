// MetricChart: one live dashboard chart (a QCustomPlot) holding one or more metric curves of a
// run. Each curve is drawn as its raw values, faint, behind a debiased-EMA smoothed line; NaN and
// Inf values become red triangle markers at the top / bottom of the visible range (never
// dropped). New rows are appended (addData(..., alreadySorted=true), rpQueuedReplot), never
// reloaded. When the visible step range holds more than kDecimateAbove points the chart asks the
// run store (on the StoreWorker thread) for min / max / last per pixel column and draws that
// envelope instead of the raw line, so a million-point curve stays exact at any zoom; zoom and
// pan (Ctrl + wheel, drag) re-query after a short debounce and survive live updates until "Reset zoom"
// or a double-click. Also: x axis by step / wall time / tokens seen, log y, an optional ln 2
// reference line, hover tooltips with exact values, and export as PNG / SVG / PDF / CSV.
// Other runs can be overlaid (their curves of the same keys, dashed, in their run-list colour),
// and a click on a curve or its legend entry selects it (bold, the others dimmed): the selection,
// like the zoom, stays while rows stream in.
#pragma once

#include "ui/chart_qcustomplot.h"

#include <QString>
#include <QStringList>
#include <QTimer>

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "db/run_store.h"
#include "ui/chart_series.h"
#include "ui/metric_feed.h"
#include "ui/series_smoothing.h"

namespace ganpo::ui {

class StoreWorker;

class MetricChart : public QCustomPlot {
  Q_OBJECT
public:
  static constexpr int64_t kDecimateAbove = 2000;  // visible points above which the envelope is drawn
  static constexpr int64_t kDotsBelow = 150;       // visible points below which raw points get dots
  static constexpr int kDecimationDebounceMs = 100;
  static constexpr int kLiveEnvelopeRefreshMs = 1000;

  // store may be null (then only in-memory decimation is used, e.g. for derived series).
  MetricChart(StoreWorker* store, int64_t run_id, const QString& title, QWidget* parent = nullptr);
  ~MetricChart() override;

  const QString& title() const { return title_; }

  // A curve of this chart; derived curves are not in the store and are decimated in memory.
  void addSeries(const QString& key, bool derived = false);
  bool hasSeries(const QString& key) const;
  QStringList seriesKeys() const;
  const ChartSeries* series(const QString& key) const;
  // Appends new points of key (creating the curve if needed). A step at or before the curve's
  // last replaces the points from that step on (a rewound run writes its steps again).
  void appendPoints(const QString& key, const std::vector<MetricPoint>& points);
  // Drops this run's curves' points (the curves and the view settings stay; overlaid runs' points
  // stay too): the run is read again.
  void forgetPoints();
  // Wall time 0 of the x axis in wall-time mode (the run's first row, so every chart of a run
  // shares it); without it, the first point this chart receives.
  void setWallOrigin(double wall_time);

  // Another run's points of key, drawn over this chart's (UX.md: "overlay of other runs"), labelled
  // run_label ("#12 name") in the legend and tooltips; wall_origin: that run's first row's time.
  // Steps written again replace their points, as in appendPoints.
  // derived: a curve the dashboard computes (not in the store), decimated in memory. color is the
  // run-list colour; where this chart already draws that colour (its own curves use the same
  // palette) the overlay takes a darker or lighter shade of it.
  void appendOverlayPoints(int64_t run_id, const QString& run_label, const QColor& color, double wall_origin,
                           const QString& key, const std::vector<MetricPoint>& points, bool derived = false);
  void removeOverlay(int64_t run_id);
  void forgetOverlayPoints(int64_t run_id);  // that run was rewound: it is read again
  std::vector<int64_t> overlayRuns() const;
  const ChartSeries* overlaySeries(int64_t run_id, const QString& key) const;
  QCPGraph* overlayGraph(int64_t run_id, const QString& key) const;  // its smoothed line
  const std::vector<SeriesBucket>& overlayEnvelope(int64_t run_id, const QString& key) const;

  // Selection (a click does the same): key's curve of this run, or of overlay_run when not 0; an
  // unknown key clears it. Names as in the legend ("loss", "#12 name loss").
  void selectCurve(const QString& key, int64_t overlay_run = 0);
  QStringList selectedCurves() const;

  void setSmoothing(double weight);
  double smoothing() const { return smoothing_; }
  void setXAxisMode(XAxisMode mode);
  XAxisMode xAxisMode() const { return x_mode_; }
  void setLogY(bool on);
  bool logY() const { return log_y_; }
  // Log y as drawn: only when every value is positive (otherwise the chart stays linear).
  bool logYApplied() const { return log_applied_; }
  // A dashed horizontal line (ln 2 on BCE-valued charts); nullopt removes it.
  void setReferenceLine(std::optional<double> y);
  std::optional<double> referenceLine() const { return reference_y_; }

  // Zoom: setXRange acts like the user zooming (auto range stops); resetZoom restores it.
  void setXRange(double lo, double hi);
  void resetZoom();
  bool userZoomed() const { return user_zoomed_; }

  // State, for the dashboard and tests.
  int64_t pointCount() const;
  int64_t pointCount(const QString& key) const;
  int64_t nanCount() const { return static_cast<int64_t>(nan_marks_.size()); }
  bool isDecimated(const QString& key) const;
  const std::vector<SeriesBucket>& envelope(const QString& key) const;
  // Step range and bucket count of the envelope last drawn for key.
  std::pair<int64_t, int64_t> envelopeStepRange(const QString& key) const;
  int64_t envelopeBuckets(const QString& key) const;  // buckets asked for (~ plot width in pixels)
  bool decimationPending() const;  // a store query or the debounce timer is outstanding
  QCPGraph* rawGraph(const QString& key) const;
  QCPGraph* smoothGraph(const QString& key) const;
  QCPGraph* nanMarkerGraph() const { return nan_top_; }
  // The tooltip shown when hovering at plot coordinate x (empty when nothing is near).
  QString tooltipAt(double x, double pixel_tolerance = 6) const;

  // Export by file suffix: .png, .svg or .pdf. width/height 0 = the chart's size (min 640x400).
  bool exportImage(const QString& path, int width = 0, int height = 0);
  // CSV of one curve (the first when key is empty): step,wall_time,tokens_seen,value.
  bool exportCsv(const QString& path, const QString& key = {}) const;
  // Draws the chart with painter at its origin, w x h (used by the dashboard's SVG / PDF export).
  void paintTo(QCPPainter* painter, int width, int height);

Q_SIGNALS:
  void decimationApplied();  // a new envelope (or the raw view) has been put in place

protected:
  void contextMenuEvent(QContextMenuEvent* event) override;
  // A chart scrolled out of view or on a hidden tab only notes that it is stale; it replots when
  // it is painted again. A dashboard of twenty charts then costs one chart's replot per update.
  void paintEvent(QPaintEvent* event) override;
  void changeEvent(QEvent* event) override;  // follows a light / dark palette switch
  void resizeEvent(QResizeEvent* event) override;  // a new width asks for a new bucket count
  // Ctrl + wheel zooms; the wheel alone goes to the dashboard's scroll area (charts fill its width,
  // so a plain-wheel zoom left no place to scroll from and froze the chart's live range unawares).
  void wheelEvent(QWheelEvent* event) override;

private:
  struct Curve;
  Curve* find(const QString& key) const;  // this run's curve of key
  Curve* findOverlay(int64_t run_id, const QString& key) const;
  Curve& makeCurve(const QString& key, bool derived, int64_t run_id, const QString& run_label, const QColor& color);
  void appendTo(Curve& c, const std::vector<MetricPoint>& points);
  void applyPens(Curve& c);
  static int dotAlpha(const Curve& c);  // raw points' dots: fainter on an overlay
  void keepSelection(Curve& c);
  void onUserSelection();
  // Drops the points at `step` and after (a rewound run writes them again) and redraws the rest.
  void forgetFrom(Curve& c, int64_t step);
  void rebuildGraphs(Curve& c);
  void rebuildNanMarkers();
  void placeNanMarkers();
  void autoRange();
  void applyScale(bool log);
  void scheduleDecimation(bool live);
  void updateDecimation();
  void requestEnvelope(Curve& c, int64_t lo, int64_t hi, int64_t buckets);
  void applyEnvelope(Curve& c, std::vector<SeriesBucket> buckets, int64_t lo, int64_t hi, int64_t count);
  void showRaw(Curve& c, int64_t visible);
  std::pair<size_t, size_t> visibleIndexRange(const Curve& c) const;
  double xOf(const Curve& c, size_t i) const;
  void onMouseMove(QMouseEvent* event);
  void requestReplot();
  void applyPalette();
  bool replot_pending_ = false;
  QCPTextElement* title_element_ = nullptr;
  void exportImageDialog();
  void exportCsvDialog(const QString& key);

  StoreWorker* store_;
  int64_t run_id_;
  QString title_;
  std::vector<std::shared_ptr<Curve>> curves_;  // shared: an envelope answer holds a weak_ptr
  double smoothing_ = 0.6;
  XAxisMode x_mode_ = XAxisMode::Step;
  bool log_y_ = false;
  bool log_applied_ = false;
  bool user_zoomed_ = false;
  double wall_origin_ = 0;
  bool have_origin_ = false;
  std::optional<double> reference_y_;
  QCPItemStraightLine* reference_line_ = nullptr;
  QCPGraph* nan_top_ = nullptr;
  QCPGraph* nan_bottom_ = nullptr;
  struct NanMark {
    const Curve* curve;
    int64_t step;
    double value;
    double x;
  };
  std::vector<NanMark> nan_marks_;
  QTimer decimation_timer_;  // zoom / pan debounce
  QTimer live_timer_;        // envelope refresh while rows stream in
  bool auto_ranging_ = false;
};

}  // namespace ganpo::ui
