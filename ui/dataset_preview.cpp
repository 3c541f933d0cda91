#include "ui/dataset_preview.h"

#include <QCoreApplication>
#include <QFileInfo>
#include <QHeaderView>
#include <QLabel>
#include <QPlainTextEdit>
#include <QPointer>
#include <QTableWidget>
#include <QVBoxLayout>

#include <exception>
#include <thread>

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

}  // namespace

DatasetPreview read_dataset_preview(const QString& path, bool preference, int max_rows) {
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
      for (size_t i = 0; i < loaded.rows.size() && static_cast<int>(i) < max_rows; ++i)
        out.first_rows.push_back(
            {cell_text(loaded.rows[i].prompt), cell_text(loaded.rows[i].chosen), cell_text(loaded.rows[i].rejected)});
    } else {
      auto loaded = load_sft_file(file, "skip");
      out.parsed_rows = static_cast<int64_t>(loaded.rows.size());
      out.bad_lines = std::move(loaded.bad_lines);
      for (size_t i = 0; i < loaded.rows.size() && static_cast<int>(i) < max_rows; ++i)
        out.first_rows.push_back({cell_text(loaded.rows[i].prompt), cell_text(loaded.rows[i].completion)});
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
  layout->addWidget(summary_);
  layout->addWidget(table_);
  layout->addWidget(bad_lines_);

  pause_.setSingleShot(true);
  pause_.setInterval(300);
  connect(&pause_, &QTimer::timeout, this, &DatasetPreviewWidget::startReading);
  setSource({}, true);
}

void DatasetPreviewWidget::setSource(const QString& path, bool preference) {
  path_ = path.trimmed();
  preference_ = preference;
  const QString source = path_ + (preference ? QStringLiteral("|pairs") : QStringLiteral("|sft"));
  if (source == shown_source_) return;
  shown_source_ = source;
  ++generation_;  // whatever is being read now is no longer wanted
  reading_ = false;
  table_->clear();
  table_->setRowCount(0);
  table_->setColumnCount(0);
  bad_lines_->clear();
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
  const uint64_t generation = ++generation_;
  reading_ = true;
  QPointer<DatasetPreviewWidget> self(this);
  std::thread([self, generation, path = path_, preference = preference_]() {
    DatasetPreview preview = read_dataset_preview(path, preference, kPreviewRows);
    QCoreApplication* app = QCoreApplication::instance();
    if (!app) return;
    QMetaObject::invokeMethod(
        app,
        [self, generation, preview = std::move(preview)]() {
          if (self && self->generation_ == generation) self->showPreview(preview);
        },
        Qt::QueuedConnection);
  }).detach();
}

void DatasetPreviewWidget::showPreview(const DatasetPreview& preview) {
  reading_ = false;
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
    lines.append(tr("line %1: %2").arg(preview.bad_lines[i].line).arg(QString::fromStdString(preview.bad_lines[i].reason)));
  if (preview.bad_lines.size() > kBadLinesShown)
    lines.append(tr("… and %1 more").arg(preview.bad_lines.size() - kBadLinesShown));
  bad_lines_->setPlainText(lines.join(QLatin1Char('\n')));
  Q_EMIT previewShown();
}

}  // namespace ganpo::ui
