#include "ui/log_view.h"

#include <QDateTime>
#include <QFile>
#include <QFontDatabase>

#include "ui/store_worker.h"

namespace ganpo::ui {

LogView::LogView(StoreWorker* store, int64_t run_id, QString log_path, QWidget* parent)
    : QPlainTextEdit(parent), store_(store), run_id_(run_id), log_path_(std::move(log_path)) {
  setReadOnly(true);
  setFont(QFontDatabase::systemFont(QFontDatabase::FixedFont));
  setMaximumBlockCount(20000);
  setLineWrapMode(QPlainTextEdit::NoWrap);
  connect(&timer_, &QTimer::timeout, this, &LogView::refresh);
  timer_.setInterval(500);
  refresh();
}

void LogView::setLive(bool live) {
  if (live)
    timer_.start();
  else
    timer_.stop();
}

void LogView::refresh() {
  QFile file(log_path_);
  if (file.exists()) {
    if (!file.open(QIODevice::ReadOnly)) return;
    if (file.size() < file_offset_) file_offset_ = 0;  // truncated
    file.seek(file_offset_);
    const QByteArray chunk = file.read(1 << 20);
    const int cut = chunk.lastIndexOf('\n');
    if (cut < 0) return;
    file_offset_ += cut + 1;
    appendPlainText(QString::fromUtf8(chunk.left(cut)));
    return;
  }
  if (events_pending_) return;
  events_pending_ = true;
  const int64_t after = last_event_id_;
  const int64_t id = run_id_;
  store_->query<std::vector<EventRow>>(
      this, [id, after](RunStore& s) { return s.events_after(id, after, 5000); },
      [this](std::vector<EventRow> events) {
        events_pending_ = false;
        for (const auto& e : events) {
          appendPlainText(QString("%1 [%2] %3")
                              .arg(QDateTime::fromMSecsSinceEpoch(static_cast<qint64>(e.time * 1000)).toString("HH:mm:ss"),
                                   QString::fromStdString(e.level), QString::fromStdString(e.text)));
          last_event_id_ = e.id;
        }
      },
      [this](QString) { events_pending_ = false; });
}

}  // namespace ganpo::ui
