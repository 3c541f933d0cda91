// Metric feed: brings a run's new metric rows into the UI a few times a second. A QTimer asks
// the StoreWorker thread for "rows after the last row id I have" (RunStore::metrics_after), so
// nothing is reloaded (except after the run was rewound: readingAgain) and the UI thread never
// waits on SQLite; at most one query is in flight. Each answer arrives on the UI thread grouped
// by metric key, in row order.
#pragma once

#include <QObject>
#include <QString>
#include <QTimer>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "db/run_store.h"

namespace ganpo::ui {

class StoreWorker;

struct MetricPoint {
  int64_t step = 0;
  double value = 0;
  double wall_time = 0;
  double tokens_seen = 0;  // NaN when the row had none
};

// Metric key -> the new points of that key, in row order.
using MetricBatch = std::map<std::string, std::vector<MetricPoint>>;

class MetricFeed : public QObject {
  Q_OBJECT
public:
  static constexpr int kDefaultIntervalMs = 300;
  static constexpr int64_t kRowsPerQuery = 200000;

  MetricFeed(StoreWorker* store, int64_t run_id, QObject* parent = nullptr);

  // Polling on / off. Starting polls at once, then every interval.
  void setLive(bool live);
  bool isLive() const { return timer_.isActive(); }
  void setInterval(int ms) { timer_.setInterval(ms); }
  // One query now (if none is in flight); used for the first load of a finished run.
  void pollNow();
  // Reads the run again from its first row (readingAgain, then every row), as after a rewind.
  void readAgain();

  int64_t lastRowId() const { return last_row_id_; }
  int64_t rowsLoaded() const { return rows_loaded_; }
  bool busy() const { return in_flight_; }

Q_SIGNALS:
  void pointsArrived(const ganpo::ui::MetricBatch& batch);
  // The run was rewound since the last answer: the points had so far may include steps it no
  // longer has (a metric logged only after the step it went back to). The batches that follow
  // bring every row the run has again, from its first.
  void readingAgain();
  void failed(const QString& message);

private:
  // One answer: the run's rewind count with the rows after `after` (after 0 where it changed).
  struct Answer {
    int64_t rewinds = 0;
    int64_t after = 0;
    std::vector<MetricRow> rows;
  };
  void onRows(Answer answer);

  StoreWorker* store_;
  int64_t run_id_;
  int64_t last_row_id_ = 0;
  int64_t rows_loaded_ = 0;
  // RunStore::rewinds as last seen: where it grows, the run's later rows were written again,
  // maybe under the old ids, so the feed reads the run again from its first row (a chart
  // replaces the points of steps it is sent again: MetricChart::appendPoints).
  int64_t rewinds_ = -1;
  bool in_flight_ = false;
  bool read_again_ = false;  // the next query starts from the first row
  QTimer timer_;
};

}  // namespace ganpo::ui
