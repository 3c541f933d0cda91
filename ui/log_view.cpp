#include "ui/log_view.h"

#include <QDateTime>
#include <QFile>
#include <QFontDatabase>
#include <QScrollBar>
#include <QTextCursor>

#include <algorithm>

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

void LogView::appendKeepingColumn(const QString& text) {
  QScrollBar* across = horizontalScrollBar();
  const int column = across->value();
  const bool following = verticalScrollBar()->value() == verticalScrollBar()->maximum();
  appendPlainText(text);
  if (following) {
    // The cursor (which the view keeps in sight, also when it is first shown) at the start of the
    // last line, not at its end.
    QTextCursor at = textCursor();
    at.movePosition(QTextCursor::End);
    at.movePosition(QTextCursor::StartOfBlock);
    setTextCursor(at);
  }
  across->setValue(column);
}

void LogView::refresh() {
  QFile file(log_path_);
  if (file.exists()) {
    if (!file.open(QIODevice::ReadOnly)) return;
    if (file_offset_ < 0) {
      // First read: the last kTailBytes, from the line that starts in them.
      file_offset_ = 0;
      if (file.size() > kTailBytes) {
        file.seek(file.size() - kTailBytes);
        const QByteArray head = file.read(kChunkBytes);
        const int newline = head.indexOf('\n');
        file_offset_ = file.size() - kTailBytes + (newline < 0 ? 0 : newline + 1);
        appendKeepingColumn(tr("[... %1 MB of this log before this line: %2]")
                            .arg(static_cast<double>(file_offset_) / 1e6, 0, 'f', 1)
                            .arg(log_path_));
      }
    }
    if (file.size() < file_offset_) file_offset_ = 0;  // truncated
    file.seek(file_offset_);
    const QByteArray chunk = file.read(kChunkBytes);
    int cut = chunk.lastIndexOf('\n');
    // A line longer than a chunk is shown in pieces (waiting for its end stalled the view).
    if (cut < 0 && chunk.size() < kChunkBytes) return;
    const bool whole_lines = cut >= 0;
    if (!whole_lines) {
      // Cut at a character's start: a UTF-8 sequence the chunk ends inside goes to the next piece
      // (cut inside it, both pieces would show U+FFFD).
      cut = chunk.size();
      for (int i = 1; i <= 3 && i <= chunk.size(); ++i) {
        const auto c = static_cast<unsigned char>(chunk[chunk.size() - i]);
        if ((c & 0xC0) == 0x80) continue;  // a continuation byte
        const int length = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        if (length > i) cut = chunk.size() - i;
        break;
      }
    }
    file_offset_ += whole_lines ? cut + 1 : cut;
    appendKeepingColumn(QString::fromUtf8(chunk.left(cut)));
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
          appendKeepingColumn(QString("%1 [%2] %3")
                              .arg(QDateTime::fromMSecsSinceEpoch(static_cast<qint64>(e.time * 1000)).toString("HH:mm:ss"),
                                   QString::fromStdString(e.level), QString::fromStdString(e.text)));
          last_event_id_ = e.id;
        }
      },
      [this](QString) { events_pending_ = false; });
}

}  // namespace ganpo::ui
