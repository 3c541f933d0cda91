#include "ui/dataset_preview.h"

#include <QCoreApplication>
#include <QFileInfo>
#include <QHeaderView>
#include <QLabel>
#include <QPlainTextEdit>
#include <QTableWidget>
#include <QTextBrowser>
#include <QVBoxLayout>

#include <algorithm>
#include <limits>
#include <exception>
#include <memory>
#include <type_traits>

#include "core/batching.h"
#include "core/text/chat_template.h"
#include "core/text/hf_tokenizer.h"
#include "core/text/utf8.h"
#include "core/tokenizer.h"
#include "ui/background_read.h"
#include "ui/config_form.h"

namespace ganpo::ui {
namespace {

// One line of a cell: long texts are cut and line breaks shown as a symbol.
QString cell_text(const std::string& text) {
  QString s = QString::fromStdString(text);
  s.replace(QLatin1Char('\n'), QStringLiteral(" ⏎ "));
  constexpr int kMaxChars = 120;
  if (s.size() > kMaxChars) s = s.left(kMaxChars) + QStringLiteral("…");
  return s;
}

constexpr size_t kBadLinesShown = 200;

// What a token reads as: its text with special tokens spelled out; bytes that are not UTF-8 on
// their own (a piece of a character) as <0xNN>.
QString token_text(const Tokenizer& tok, int64_t id) {
  std::string text;
  if (const auto* hf = dynamic_cast<const HfTokenizer*>(&tok))
    text = hf->decode({id}, /*skip_special_tokens=*/false);
  else if (id == tok.bos_id())
    text = "<bos>";
  else if (id == tok.eos_id())
    text = "<eos>";
  else
    text = tok.decode({id});
  if (text::is_valid_utf8(text)) return QString::fromStdString(text);
  QString hex;
  for (unsigned char c : text)
    hex += QStringLiteral("<0x%1>").arg(QString::number(c, 16).toUpper().rightJustified(2, QLatin1Char('0')));
  return hex;
}

QStringList token_texts(const Tokenizer& tok, const std::vector<int64_t>& ids) {
  QStringList out;
  for (int64_t id : ids) out << token_text(tok, id);
  return out;
}

constexpr int64_t kWhole = std::numeric_limits<int64_t>::max() / 4;  // a max_length no row reaches

int64_t dropped(size_t full, size_t kept) { return static_cast<int64_t>(full) - static_cast<int64_t>(kept); }

// Renders (chat template) and tokenizes the first rows as the trainer does.
template <class Row>
void tokenize_rows(std::vector<Row> rows, const PreviewTokenizing& how, const std::string& source, DatasetPreview& out) {
  std::unique_ptr<Tokenizer> tok;
  const std::string folder = how.model_folder.trimmed().toStdString();
  try {
    if (folder.empty())
      tok = std::make_unique<ByteTokenizer>();
    else
      tok = load_tokenizer(folder);
  } catch (const std::exception& e) {
    out.tokenizing_error = QObject::tr("The model folder's tokenizer cannot be used: %1").arg(QString::fromStdString(e.what()));
    out.tokenizer_unusable = true;
    return;
  }
  const bool conversational = std::any_of(rows.begin(), rows.end(), [](const Row& r) { return r.conversational(); });
  if (!conversational) {
    out.rendering = QObject::tr("standard rows: prompt and completions as written");
  } else if (!tok->uses_chat_template()) {
    out.rendering = QObject::tr("conversational rows in the plain <|role|> rendering (the byte tokenizer has no chat template)");
  } else {
    try {
      const ChatTemplate tmpl = ChatTemplate::from_model_folder(folder, how.chat_template.toStdString());
      apply_chat_template(rows, tmpl, source);  // (its errors name the file and row, as training's do)
      out.rendering = QObject::tr("conversational rows in the %1 chat template").arg(QString::fromStdString(tmpl.variant()));
    } catch (const std::exception& e) {
      out.tokenizing_error = QString::fromStdString(e.what());
      return;
    }
  }
  const int64_t max_length = std::max<int64_t>(how.max_length, 1);
  const int64_t max_prompt = std::max<int64_t>(how.max_prompt_length, 1);
  for (const Row& row : rows) {
    TokenizedPreviewRow t;
    if constexpr (std::is_same_v<Row, PreferenceExample>) {
      // Tokenized once whole, then cut as training cuts it: the difference is what it drops.
      const TokenizedPair whole = tokenize_pair(*tok, row, kWhole, kWhole);
      TokenizedPair kept = whole;
      cut_to_fit(kept, max_length, max_prompt);
      t.prompt = token_texts(*tok, kept.prompt);
      t.chosen = token_texts(*tok, kept.chosen);
      t.rejected = token_texts(*tok, kept.rejected);
      t.prompt_dropped = dropped(whole.prompt.size(), kept.prompt.size());
      t.chosen_dropped = dropped(whole.chosen.size(), kept.chosen.size());
      t.rejected_dropped = dropped(whole.rejected.size(), kept.rejected.size());
    } else {
      const TokenizedSft whole = tokenize_sft(*tok, row, kWhole, kWhole);
      TokenizedSft kept = whole;
      cut_to_fit(kept, max_length, max_prompt);
      t.prompt = token_texts(*tok, kept.prompt);
      t.chosen = token_texts(*tok, kept.completion);
      t.prompt_dropped = dropped(whole.prompt.size(), kept.prompt.size());
      t.chosen_dropped = dropped(whole.completion.size(), kept.completion.size());
    }
    out.tokenized.push_back(std::move(t));
  }
}

// Token boxes of one part, alternating two shades of its colour.
QString token_boxes(const QStringList& tokens, const char* light, const char* dark) {
  QString html;
  for (int i = 0; i < tokens.size(); ++i) {
    QString text = tokens[i].toHtmlEscaped();
    text.replace(QLatin1Char('\n'), QStringLiteral("↵<br>"));
    html += QStringLiteral("<span style='background:%1'>%2</span>").arg(QLatin1String(i % 2 ? dark : light), text);
  }
  return html;
}

}  // namespace

QString tokenized_row_html(const TokenizedPreviewRow& row, bool preference) {
  const QString boundary = QStringLiteral("<span style='color:#6a1b9a; font-weight:bold'>┃</span>");
  auto dropped_note = [](int64_t n, const QString& part) {
    return n > 0 ? QObject::tr(" (%1 %2 tokens cut)").arg(n).arg(part) : QString();
  };
  QString html = QStringLiteral("<div style='white-space: pre-wrap; font-family: monospace;'>");
  html += token_boxes(row.prompt, "#e3f2fd", "#bbdefb") + boundary + token_boxes(row.chosen, "#e8f5e9", "#c8e6c9");
  if (preference)
    html += QStringLiteral("<br><br><span style='color:gray'>…same prompt…</span>") + boundary +
            token_boxes(row.rejected, "#ffebee", "#ffcdd2");
  html += QStringLiteral("</div><p style='color:gray'>");
  html += preference ? QObject::tr("prompt %1 tokens%2 (not scored) ┃ chosen %3%4 · rejected %5%6 (scored by the losses)")
                           .arg(row.prompt.size())
                           .arg(dropped_note(row.prompt_dropped, QObject::tr("leading")))
                           .arg(row.chosen.size())
                           .arg(dropped_note(row.chosen_dropped, QObject::tr("trailing")))
                           .arg(row.rejected.size())
                           .arg(dropped_note(row.rejected_dropped, QObject::tr("trailing")))
                     : QObject::tr("prompt %1 tokens%2 (not scored) ┃ completion %3%4 (scored)")
                           .arg(row.prompt.size())
                           .arg(dropped_note(row.prompt_dropped, QObject::tr("leading")))
                           .arg(row.chosen.size())
                           .arg(dropped_note(row.chosen_dropped, QObject::tr("trailing")));
  return html + QStringLiteral("</p>");
}

DatasetPreview read_dataset_preview(const QString& path, bool preference, int max_rows,
                                    const PreviewTokenizing& tokenizing) {
  DatasetPreview out;
  out.columns = preference ? QStringList{QStringLiteral("prompt"), QStringLiteral("chosen"), QStringLiteral("rejected")}
                           : QStringList{QStringLiteral("prompt"), QStringLiteral("completion")};
  const QFileInfo info(path);
  if (!info.exists() || !info.isFile()) {
    out.error = QObject::tr("no file at %1").arg(path);
    return out;
  }
  try {
    const std::string file = path.toStdString();
    if (preference) {
      auto loaded = load_preference_file(file, "skip");
      out.parsed_rows = static_cast<int64_t>(loaded.rows.size());
      out.bad_lines = std::move(loaded.bad_lines);
      out.json_array = loaded.json_array;
      for (size_t i = 0; i < loaded.rows.size() && static_cast<int>(i) < max_rows; ++i)
        out.first_rows.push_back(
            {cell_text(loaded.rows[i].prompt), cell_text(loaded.rows[i].chosen), cell_text(loaded.rows[i].rejected)});
      loaded.rows.resize(out.first_rows.size());
      tokenize_rows(std::move(loaded.rows), tokenizing, file, out);
    } else {
      auto loaded = load_sft_file(file, "skip");
      out.parsed_rows = static_cast<int64_t>(loaded.rows.size());
      out.bad_lines = std::move(loaded.bad_lines);
      out.json_array = loaded.json_array;
      for (size_t i = 0; i < loaded.rows.size() && static_cast<int>(i) < max_rows; ++i)
        out.first_rows.push_back({cell_text(loaded.rows[i].prompt), cell_text(loaded.rows[i].completion)});
      loaded.rows.resize(out.first_rows.size());
      tokenize_rows(std::move(loaded.rows), tokenizing, file, out);
    }
  } catch (const std::exception& e) {
    // The readers throw when nothing parses; the message names the file and the first bad line.
    out.error = QString::fromStdString(e.what());
  }
  return out;
}

DatasetPreviewWidget::DatasetPreviewWidget(QWidget* parent) : QWidget(parent) {
  setObjectName(QStringLiteral("datasetPreview"));
  auto* layout = new QVBoxLayout(this);
  layout->setContentsMargins(0, 0, 0, 0);
  summary_ = new QLabel(this);
  summary_->setObjectName(QStringLiteral("datasetPreview.summary"));
  summary_->setWordWrap(true);
  summary_->setTextInteractionFlags(Qt::TextSelectableByMouse);
  table_ = new QTableWidget(this);
  table_->setObjectName(QStringLiteral("datasetPreview.table"));
  table_->setEditTriggers(QAbstractItemView::NoEditTriggers);
  table_->setMinimumHeight(140);
  table_->horizontalHeader()->setSectionResizeMode(QHeaderView::Stretch);
  table_->verticalHeader()->setVisible(false);
  bad_lines_ = new QPlainTextEdit(this);
  bad_lines_->setObjectName(QStringLiteral("datasetPreview.badLines"));
  bad_lines_->setReadOnly(true);
  bad_lines_->setMaximumHeight(90);
  bad_lines_->setPlaceholderText(tr("Bad lines are listed here by line number."));
  tokens_caption_ = new QLabel(this);
  tokens_caption_->setObjectName(QStringLiteral("datasetPreview.tokensCaption"));
  tokens_caption_->setWordWrap(true);
  tokens_ = new QTextBrowser(this);
  tokens_->setObjectName(QStringLiteral("datasetPreview.tokens"));
  tokens_->setMinimumHeight(150);
  tokens_->setPlaceholderText(tr("The picked row, rendered and tokenized as training will, appears here."));
  layout->addWidget(summary_);
  layout->addWidget(table_);
  layout->addWidget(tokens_caption_);
  layout->addWidget(tokens_);
  layout->addWidget(bad_lines_);
  connect(table_, &QTableWidget::currentCellChanged, this, [this] { showTokens(); });

  pause_.setSingleShot(true);
  pause_.setInterval(300);
  connect(&pause_, &QTimer::timeout, this, &DatasetPreviewWidget::startReading);
  setSource({}, true);
}

void DatasetPreviewWidget::setSource(const QString& path, bool preference, const PreviewTokenizing& tokenizing) {
  path_ = path.trimmed();
  preference_ = preference;
  const QString source = path_ + (preference ? QStringLiteral("|pairs") : QStringLiteral("|sft"));
  if (source == shown_source_ && tokenizing == tokenizing_) return;
  tokenizing_ = tokenizing;
  shown_source_ = source;
  ++generation_;  // whatever is being read now is no longer wanted
  reading_ = false;
  table_->clear();
  table_->setRowCount(0);
  table_->setColumnCount(0);
  bad_lines_->clear();
  shown_ = {};
  showTokens();
  if (path_.isEmpty()) {
    pause_.stop();
    summary_->setText(tr("Choose a training file to see its first rows and any bad lines."));
    return;
  }
  summary_->setText(tr("Reading %1…").arg(path_));
  reading_ = true;
  pause_.start();
}

void DatasetPreviewWidget::startReading() {
  if (read_in_flight_) {
    read_again_ = true;
    return;
  }
  const uint64_t generation = ++generation_;
  reading_ = true;
  read_in_flight_ = true;
  read_in_background(
      this,
      [path = path_, preference = preference_, tokenizing = tokenizing_]() {
        return read_dataset_preview(path, preference, kPreviewRows, tokenizing);
      },
      [this, generation](DatasetPreview preview) {
        read_in_flight_ = false;
        if (generation_ == generation) showPreview(preview);
        if (read_again_) {
          read_again_ = false;
          if (reading_) startReading();  // (the path asked for since; none where it was cleared)
        }
      });
}

QString DatasetPreviewWidget::tokensHtml() const { return tokens_->toHtml(); }

QStringList DatasetPreviewWidget::problems(bool bad_line_stops_run) const {
  QStringList out;
  if (reading_ || path_.isEmpty() || !QFileInfo(path_).isFile()) return out;
  if (!shown_.error.isEmpty()) {  // nothing parses, or the file cannot be read
    out << QStringLiteral("data.train: ") + shown_.error;
    return out;
  }
  if (bad_line_stops_run && !shown_.bad_lines.empty()) {
    const BadLine& first = shown_.bad_lines.front();
    out << tr("data.on_bad_line: the training file has %1 bad line(s) and the run stops at the first (line %2: %3); "
              "fix the file or choose to skip bad lines")
               .arg(shown_.bad_lines.size())
               .arg(first.line)
               .arg(QString::fromStdString(first.reason));
  }
  // Rows the chat template cannot render stop the run too (a model folder's unusable tokenizer
  // is the Model page's problem, not the data's).
  if (!shown_.tokenizing_error.isEmpty() && !shown_.tokenizer_unusable)
    out << (problem_key(shown_.tokenizing_error).contains(QLatin1Char('.'))
                ? shown_.tokenizing_error
                : QStringLiteral("data.train: ") + shown_.tokenizing_error);
  return out;
}

void DatasetPreviewWidget::showTokens() {
  const int row = std::max(0, table_->currentRow());
  if (!shown_.tokenizing_error.isEmpty()) {
    tokens_caption_->setText(QStringLiteral("<span style='color:#c62828'>%1</span>").arg(shown_.tokenizing_error.toHtmlEscaped()));
    tokens_->clear();
    return;
  }
  if (row >= static_cast<int>(shown_.tokenized.size())) {
    tokens_caption_->clear();
    tokens_->clear();
    return;
  }
  const QString tokenizer = tokenizing_.model_folder.trimmed().isEmpty() ? tr("the byte tokenizer (fresh model)")
                                                                          : tr("the model folder's tokenizer");
  tokens_caption_->setText(tr("Row %1 as training sees it: %2, %3; max_length %4, max_prompt_length %5.")
                               .arg(row + 1)
                               .arg(shown_.rendering, tokenizer)
                               .arg(tokenizing_.max_length)
                               .arg(tokenizing_.max_prompt_length));
  tokens_->setHtml(tokenized_row_html(shown_.tokenized[static_cast<size_t>(row)], preference_));
}

void DatasetPreviewWidget::showPreview(const DatasetPreview& preview) {
  reading_ = false;
  shown_ = preview;
  table_->setColumnCount(static_cast<int>(preview.columns.size()));
  table_->setHorizontalHeaderLabels(preview.columns);
  table_->setRowCount(static_cast<int>(preview.first_rows.size()));
  for (int r = 0; r < static_cast<int>(preview.first_rows.size()); ++r)
    for (int c = 0; c < preview.first_rows[r].size(); ++c) {
      auto* item = new QTableWidgetItem(preview.first_rows[r][c]);
      item->setToolTip(preview.first_rows[r][c]);
      table_->setItem(r, c, item);
    }

  const QString kind = preference_ ? tr("pairs") : tr("examples");
  if (!preview.error.isEmpty()) {
    summary_->setText(QStringLiteral("<span style='color:#c62828'>%1</span>").arg(preview.error.toHtmlEscaped()));
  } else {
    QString text = tr("%1 %2 parse").arg(preview.parsed_rows).arg(kind);
    if (!preview.bad_lines.empty())
      text += (preview.bad_lines.size() == 1 ? tr("; 1 bad line") : tr("; %1 bad lines").arg(preview.bad_lines.size())) +
              tr(" (skipped when data.on_bad_line is \"skip\", an error otherwise)");
    summary_->setText(text);
  }
  QStringList lines;
  for (size_t i = 0; i < preview.bad_lines.size() && i < kBadLinesShown; ++i)
    // (A JSON array's rows are its elements: "line 3" would send the reader to the wrong place.)
    lines.append((preview.json_array ? tr("element %1: %2") : tr("line %1: %2"))
                     .arg(preview.bad_lines[i].line)
                     .arg(QString::fromStdString(preview.bad_lines[i].reason)));
  if (preview.bad_lines.size() > kBadLinesShown)
    lines.append(tr("… and %1 more").arg(preview.bad_lines.size() - kBadLinesShown));
  bad_lines_->setPlainText(lines.join(QLatin1Char('\n')));
  showTokens();
  Q_EMIT previewShown();
}

}  // namespace ganpo::ui
