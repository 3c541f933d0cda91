// The dataset preview of the New Run dialog: the first rows of a JSONL/JSON file in TRL format,
// how many rows parse, the bad lines by line number, and the picked row rendered and tokenized
// as training will (the model's tokenizer and chat template, the prompt / completion boundary,
// what truncation drops).
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
class QTextBrowser;

namespace ganpo::ui {

// How training will tokenize the rows, from the config being edited.
struct PreviewTokenizing {
  QString model_folder;   // model.checkpoint; "" = a fresh model with the byte tokenizer
  QString chat_template;  // data.chat_template
  int64_t max_length = 0, max_prompt_length = 0;
  bool operator==(const PreviewTokenizing& o) const {
    return model_folder == o.model_folder && chat_template == o.chat_template && max_length == o.max_length &&
           max_prompt_length == o.max_prompt_length;
  }
};

// A row as the model sees it: the text of each token of each part, and the tokens truncation
// drops (TRL's order: the prompt keeps its end, then the responses are cut to max_length).
struct TokenizedPreviewRow {
  QStringList prompt, chosen, rejected;  // SFT rows: the completion is `chosen`
  int64_t prompt_dropped = 0, chosen_dropped = 0, rejected_dropped = 0;
};

struct DatasetPreview {
  QStringList columns;                  // prompt, chosen, rejected (or prompt, completion for SFT)
  std::vector<QStringList> first_rows;  // up to max_rows parsed rows, one string per column
  int64_t parsed_rows = 0;              // rows that parse
  std::vector<BadLine> bad_lines;       // skipped lines with their 1-based line numbers
  bool json_array = false;              // a JSON array file: bad_lines are numbered by element
  QString error;                        // the file could not be read at all, or nothing parses
  std::vector<TokenizedPreviewRow> tokenized;  // parallel to first_rows
  QString rendering;         // how rows become text: the chat template, or the plain rendering
  QString tokenizing_error;  // the tokenizer or chat template cannot be used (rows still shown)
  bool tokenizer_unusable = false;  // tokenizing_error is the model folder's (the Model page says so)
};

// preference: rows are prompt/chosen/rejected pairs; otherwise SFT rows. The first rows are also
// rendered (chat template) and tokenized as `tokenizing` says training will.
DatasetPreview read_dataset_preview(const QString& path, bool preference, int max_rows,
                                    const PreviewTokenizing& tokenizing = {});

// One tokenized row as HTML: the prompt's tokens, a boundary mark, then each completion's
// tokens; every token a shaded box, so token boundaries and the part it belongs to are visible.
QString tokenized_row_html(const TokenizedPreviewRow& row, bool preference);

class DatasetPreviewWidget : public QWidget {
  Q_OBJECT
public:
  explicit DatasetPreviewWidget(QWidget* parent = nullptr);

  // Shows the preview of this file (after a short pause while the path is still being typed).
  // An empty path clears the preview.
  void setSource(const QString& path, bool preference, const PreviewTokenizing& tokenizing = {});
  // The tokenized view of the row picked in the table (the first by default), as HTML.
  QString tokensHtml() const;
  bool isReading() const { return reading_; }
  QString path() const { return path_; }
  // What the preview on screen says a run training on this file would stop at, as config
  // problems ("key: reason"): bad lines where data.on_bad_line stops the run at the first, a
  // file with no usable row, rows the chat template cannot render. Empty while reading and for
  // a path that is no file (missing_inputs says so).
  QStringList problems(bool bad_line_stops_run) const;

Q_SIGNALS:
  void previewShown();  // a result (or an error) is on screen

private:
  void startReading();
  void showPreview(const DatasetPreview& preview);
  void showTokens();

  static constexpr int kPreviewRows = 5;
  QTimer pause_;
  QString path_;
  bool preference_ = true;
  PreviewTokenizing tokenizing_;
  DatasetPreview shown_;
  QString shown_source_;  // path + kind of what is on screen or being read
  uint64_t generation_ = 0;
  bool reading_ = false;
  // One read at a time: a whole file parsed and a tokenizer loaded per read, so settings changed
  // while one runs start one more read when it ends, not one each (a 400 MB file held once).
  bool read_in_flight_ = false;
  bool read_again_ = false;
  QLabel* summary_;
  QTableWidget* table_;
  QLabel* tokens_caption_;
  QTextBrowser* tokens_;
  QPlainTextEdit* bad_lines_;
};

}  // namespace ganpo::ui
