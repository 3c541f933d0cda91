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
  // An unknown rewind count (-1) makes the answer start from the run's first row.
  const int64_t run = run_id_, after = last_row_id_, rewinds = read_again_ ? -1 : rewinds_;
  read_again_ = false;
  store_->query<Answer>(
      this,
      [run, after, rewinds](RunStore& s) {
        Answer a;
        a.rewinds = s.rewinds(run);
        a.after = a.rewinds == rewinds ? after : 0;
        a.rows = s.metrics_after(run, a.after, kRowsPerQuery);
        return a;
      },
      [this](Answer answer) { onRows(std::move(answer)); },
      [this](QString message) {
        in_flight_ = false;
        Q_EMIT failed(message);
      });
}

void MetricFeed::onRows(Answer answer) {
  in_flight_ = false;
  if (answer.after != last_row_id_) {  // read again from the run's first row
    rows_loaded_ = 0;
    Q_EMIT readingAgain();
  }
  last_row_id_ = answer.after;
  rewinds_ = answer.rewinds;
  std::vector<MetricRow>& rows = answer.rows;
  if (rows.empty()) {
    if (read_again_) pollNow();
    return;
  }
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
  if (more || read_again_) pollNow();
}

void MetricFeed::readAgain() {
  read_again_ = true;
  pollNow();  // (with a query in flight, its answer asks again)
}

}  // namespace ganpo::ui
