#include "ui/metric_feed.h"

#include <cmath>
#include <limits>

#include "ui/store_worker.h"

namespace ganpo::ui {

MetricFeed::MetricFeed(StoreWorker* store, int64_t run_id, QObject* parent)
    : QObject(parent), store_(store), run_id_(run_id) {
  timer_.setInterval(kDefaultIntervalMs);
  connect(&timer_, &QTimer::timeout, this, &MetricFeed::pollNow);
}

void MetricFeed::setLive(bool live) {
  if (live == timer_.isActive()) return;
  if (live) {
    timer_.start();
    pollNow();
  } else {
    timer_.stop();
  }
}

void MetricFeed::pollNow() {
  if (in_flight_ || !store_) return;
  in_flight_ = true;
  const int64_t run = run_id_, after = last_row_id_;
  store_->query<std::vector<MetricRow>>(
      this, [run, after](RunStore& s) { return s.metrics_after(run, after, kRowsPerQuery); },
      [this](std::vector<MetricRow> rows) { onRows(std::move(rows)); },
      [this](QString message) {
        in_flight_ = false;
        Q_EMIT failed(message);
      });
}

void MetricFeed::onRows(std::vector<MetricRow> rows) {
  in_flight_ = false;
  if (rows.empty()) return;
  MetricBatch batch;
  for (const auto& r : rows) {
    const double tokens = r.tokens_seen ? *r.tokens_seen : std::numeric_limits<double>::quiet_NaN();
    batch[r.key].push_back({r.step, r.value, r.wall_time, tokens});
  }
  last_row_id_ = rows.back().id;
  rows_loaded_ += static_cast<int64_t>(rows.size());
  const bool more = static_cast<int64_t>(rows.size()) >= kRowsPerQuery;
  Q_EMIT pointsArrived(batch);
  // A full page means the store holds more: fetch it now rather than a tick later.
  if (more) pollNow();
}

}  // namespace ganpo::ui
