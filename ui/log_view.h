// LogView: a run's log, live. Follows the worker's log file (appending only the new bytes a few
// times a second); for a run started elsewhere (a terminal, another machine) it shows the run's
// events from the store instead. Reading happens off the UI thread for the store; the file is
// read in increments of at most 1 MiB, starting from its last MiB (a long log's end is where a
// crash is; the view keeps 20,000 lines), with a line saying how much came before.
#pragma once

#include <QPlainTextEdit>
#include <QTimer>

#include <cstdint>

namespace ganpo::ui {

class StoreWorker;

class LogView : public QPlainTextEdit {
  Q_OBJECT
public:
  LogView(StoreWorker* store, int64_t run_id, QString log_path, QWidget* parent = nullptr);
  void setLive(bool live);
  void refresh();

private:
  // appendPlainText, keeping the column the reader is at: the view keeps its cursor in sight,
  // and the cursor at the end of a long last line opened the log scrolled to its far right.
  void appendKeepingColumn(const QString& text);
  StoreWorker* store_;
  int64_t run_id_;
  QString log_path_;
  static constexpr qint64 kTailBytes = 1 << 20;
  static constexpr qint64 kChunkBytes = 1 << 20;
  qint64 file_offset_ = -1;  // -1: not read yet
  int64_t last_event_id_ = 0;
  bool events_pending_ = false;
  QTimer timer_;
};

}  // namespace ganpo::ui
