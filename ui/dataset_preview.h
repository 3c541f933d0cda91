// The dataset preview of the New Run dialog: the first rows of a JSONL/JSON file in TRL format,
// how many rows parse, and the bad lines by line number.
//
// read_dataset_preview() reads the whole file with core's readers in "skip" mode (so the count
// and the bad lines are what training would see) and never throws. DatasetPreviewWidget runs it
// on a thread of its own, so a large file never stalls the UI thread; the result comes back
// through the event loop and is dropped if the widget is gone or a newer file was asked for.
#pragma once

#include <QString>
#include <QStringList>
#include <QTimer>
#include <QWidget>

#include <cstdint>
#include <vector>

#include "core/dataset_files.h"

class QLabel;
class QPlainTextEdit;
class QTableWidget;

namespace ganpo::ui {

struct DatasetPreview {
  QStringList columns;                  // prompt, chosen, rejected (or prompt, completion for SFT)
  std::vector<QStringList> first_rows;  // up to max_rows parsed rows, one string per column
  int64_t parsed_rows = 0;              // rows that parse
  std::vector<BadLine> bad_lines;       // skipped lines with their 1-based line numbers
  QString error;                        // the file could not be read at all, or nothing parses
};

// preference: rows are prompt/chosen/rejected pairs; otherwise SFT rows.
DatasetPreview read_dataset_preview(const QString& path, bool preference, int max_rows);

class DatasetPreviewWidget : public QWidget {
  Q_OBJECT
public:
  explicit DatasetPreviewWidget(QWidget* parent = nullptr);

  // Shows the preview of this file (after a short pause while the path is still being typed).
  // An empty path clears the preview.
  void setSource(const QString& path, bool preference);
  bool isReading() const { return reading_; }

Q_SIGNALS:
  void previewShown();  // a result (or an error) is on screen

private:
  void startReading();
  void showPreview(const DatasetPreview& preview);

  static constexpr int kPreviewRows = 5;
  QTimer pause_;
  QString path_;
  bool preference_ = true;
  QString shown_source_;  // path + kind of what is on screen or being read
  uint64_t generation_ = 0;
  bool reading_ = false;
  QLabel* summary_;
  QTableWidget* table_;
  QPlainTextEdit* bad_lines_;
};

}  // namespace ganpo::ui
