#include "ui/config_form.h"

#include <QCheckBox>
#include <QComboBox>
#include <QFileDialog>
#include <QHBoxLayout>
#include <QLabel>
#include <QLineEdit>
#include <QPushButton>

#include <charconv>
#include <cmath>
#include <system_error>

#include "ui/form_page.h"

namespace ganpo::ui {
namespace {

QString quoted(const QString& text) { return QLatin1Char('"') + text + QLatin1Char('"'); }

// The combo box item for a value, adding one for a value the list does not know (from a
// hand-edited file) so it round-trips and validation can say what is wrong with it.
int index_for_value(QComboBox* combo, const QString& value) {
  int index = combo->findData(value);
  if (index < 0) {
    combo->addItem(value + QObject::tr(" (not a known value)"), value);
    index = combo->count() - 1;
  }
  return index;
}

}  // namespace

QString problem_key(const QString& message) {
  qsizetype end = 0;
  while (end < message.size() && (message[end].isLetterOrNumber() || message[end] == QLatin1Char('_') ||
                                  message[end] == QLatin1Char('.')))
    ++end;
  return message.left(end);
}

QString format_config_number(double value) {
  if (std::isnan(value)) return QStringLiteral("nan");
  if (std::isinf(value)) return value < 0 ? QStringLiteral("-inf") : QStringLiteral("inf");
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof buf, value);
  QString text = QString::fromLatin1(buf, static_cast<int>(res.ptr - buf));
  // to_chars writes "5e-04" and "1e+20"; config files and people write "5e-4" and "1e20".
  const int e = text.indexOf(QLatin1Char('e'));
  if (e >= 0) {
    QString exponent = text.mid(e + 1);
    const bool negative = exponent.startsWith(QLatin1Char('-'));
    if (negative || exponent.startsWith(QLatin1Char('+'))) exponent.remove(0, 1);
    while (exponent.size() > 1 && exponent.startsWith(QLatin1Char('0'))) exponent.remove(0, 1);
    text = text.left(e + 1) + (negative ? QStringLiteral("-") : QString()) + exponent;
  }
  return text;
}

bool parse_config_int(const QString& text, int64_t& out) {
  std::string s = text.trimmed().toStdString();
  if (!s.empty() && s[0] == '+') s.erase(0, 1);
  int64_t v = 0;
  const auto res = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || res.ec != std::errc() || res.ptr != s.data() + s.size()) return false;
  out = v;
  return true;
}

bool parse_config_double(const QString& text, double& out) {
  std::string s = text.trimmed().toStdString();
  if (!s.empty() && s[0] == '+') s.erase(0, 1);
  double v = 0;
  const auto res = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || res.ec != std::errc() || res.ptr != s.data() + s.size()) return false;
  out = v;
  return true;
}

ConfigForm::ConfigForm(QObject* parent) : QObject(parent) {}

QLabel* ConfigForm::makeErrorLabel(const QString& key) {
  auto* label = new QLabel;
  label->setObjectName(key + QStringLiteral(".error"));
  label->setWordWrap(true);
  label->setStyleSheet(QStringLiteral("color: #c62828;"));
  label->setTextInteractionFlags(Qt::TextSelectableByMouse);
  label->hide();
  return label;
}

void ConfigForm::notifyEdited() {
  if (!showing_) Q_EMIT edited();
}

QLineEdit* ConfigForm::addText(FormSection* section, const QString& key, ConfigAccessor<std::string> value,
                               const QString& label, const QString& tooltip) {
  auto* edit = new QLineEdit;
  edit->setObjectName(key);
  connect(edit, &QLineEdit::textChanged, this, &ConfigForm::notifyEdited);
  QLabel* error = addCustom(
      key, edit, [edit, value](const RunConfig& c) { edit->setText(QString::fromStdString(value(const_cast<RunConfig&>(c)))); },
      [edit, value](RunConfig& c) {
        value(c) = edit->text().toStdString();
        return QString();
      });
  section->addRow(label, edit, error, tooltip);
  return edit;
}

QLineEdit* ConfigForm::addPath(FormSection* section, const QString& key, ConfigAccessor<std::string> value,
                               const QString& label, PathKind kind, const QString& tooltip) {
  auto* row = new QWidget;
  auto* layout = new QHBoxLayout(row);
  layout->setContentsMargins(0, 0, 0, 0);
  auto* edit = new QLineEdit(row);
  edit->setObjectName(key);
  auto* browse = new QPushButton(tr("Browse…"), row);
  layout->addWidget(edit, 1);
  layout->addWidget(browse);
  connect(edit, &QLineEdit::textChanged, this, &ConfigForm::notifyEdited);
  connect(browse, &QPushButton::clicked, edit, [edit, kind, label]() {
    const QString chosen = kind == PathKind::Folder
                               ? QFileDialog::getExistingDirectory(edit, label, edit->text())
                               : QFileDialog::getOpenFileName(edit, label, edit->text(),
                                                              tr("Datasets (*.jsonl *.json);;All files (*)"));
    if (!chosen.isEmpty()) edit->setText(chosen);
  });
  QLabel* error = addCustom(
      key, edit, [edit, value](const RunConfig& c) { edit->setText(QString::fromStdString(value(const_cast<RunConfig&>(c)))); },
      [edit, value](RunConfig& c) {
        value(c) = edit->text().toStdString();
        return QString();
      });
  section->addRow(label, row, error, tooltip);
  return edit;
}

QComboBox* ConfigForm::addChoice(FormSection* section, const QString& key, ConfigAccessor<std::string> value,
                                 const QString& label, const std::vector<Choice>& choices, const QString& tooltip) {
  auto* combo = new QComboBox;
  combo->setObjectName(key);
  for (const auto& [stored, shown] : choices) combo->addItem(shown, stored);
  connect(combo, &QComboBox::currentIndexChanged, this, &ConfigForm::notifyEdited);
  QLabel* error = addCustom(
      key, combo,
      [combo, value](const RunConfig& c) {
        combo->setCurrentIndex(index_for_value(combo, QString::fromStdString(value(const_cast<RunConfig&>(c)))));
      },
      [combo, value](RunConfig& c) {
        value(c) = combo->currentData().toString().toStdString();
        return QString();
      });
  section->addRow(label, combo, error, tooltip);
  return combo;
}

QComboBox* ConfigForm::addEditableChoice(FormSection* section, const QString& key, ConfigAccessor<std::string> value,
                                         const QString& label, const QStringList& suggestions,
                                         const QString& tooltip) {
  auto* combo = new QComboBox;
  combo->setObjectName(key);
  combo->setEditable(true);
  combo->setInsertPolicy(QComboBox::NoInsert);
  combo->addItems(suggestions);
  connect(combo, &QComboBox::currentTextChanged, this, &ConfigForm::notifyEdited);
  QLabel* error = addCustom(
      key, combo,
      [combo, value](const RunConfig& c) {
        combo->setCurrentText(QString::fromStdString(value(const_cast<RunConfig&>(c))));
      },
      [combo, value](RunConfig& c) {
        value(c) = combo->currentText().trimmed().toStdString();
        return QString();
      });
  section->addRow(label, combo, error, tooltip);
  return combo;
}

QLineEdit* ConfigForm::addInt(FormSection* section, const QString& key, ConfigAccessor<int64_t> value,
                              const QString& label, const QString& tooltip) {
  auto* edit = new QLineEdit;
  edit->setObjectName(key);
  connect(edit, &QLineEdit::textChanged, this, &ConfigForm::notifyEdited);
  QLabel* error = addCustom(
      key, edit, [edit, value](const RunConfig& c) { edit->setText(QString::number(value(const_cast<RunConfig&>(c)))); },
      [edit, value, key](RunConfig& c) -> QString {
        int64_t v = 0;
        if (!parse_config_int(edit->text(), v)) return key + tr(" must be an integer, got ") + quoted(edit->text());
        value(c) = v;
        return QString();
      });
  section->addRow(label, edit, error, tooltip);
  return edit;
}

QLineEdit* ConfigForm::addDouble(FormSection* section, const QString& key, ConfigAccessor<double> value,
                                 const QString& label, const QString& tooltip) {
  auto* edit = new QLineEdit;
  edit->setObjectName(key);
  connect(edit, &QLineEdit::textChanged, this, &ConfigForm::notifyEdited);
  QLabel* error = addCustom(
      key, edit,
      [edit, value](const RunConfig& c) { edit->setText(format_config_number(value(const_cast<RunConfig&>(c)))); },
      [edit, value, key](RunConfig& c) -> QString {
        double v = 0;
        if (!parse_config_double(edit->text(), v)) return key + tr(" must be a number, got ") + quoted(edit->text());
        value(c) = v;
        return QString();
      });
  section->addRow(label, edit, error, tooltip);
  return edit;
}

QCheckBox* ConfigForm::addBool(FormSection* section, const QString& key, ConfigAccessor<bool> value,
                               const QString& label, const QString& tooltip) {
  auto* box = new QCheckBox;
  box->setObjectName(key);
  connect(box, &QCheckBox::toggled, this, &ConfigForm::notifyEdited);
  QLabel* error = addCustom(
      key, box, [box, value](const RunConfig& c) { box->setChecked(value(const_cast<RunConfig&>(c))); },
      [box, value](RunConfig& c) {
        value(c) = box->isChecked();
        return QString();
      });
  section->addRow(label, box, error, tooltip);
  return box;
}

QLabel* ConfigForm::addCustom(const QString& key, QWidget* editor, std::function<void(const RunConfig&)> show,
                              std::function<QString(RunConfig&)> read) {
  QLabel* error = makeErrorLabel(key);
  bindings_.push_back({key, editor, error, std::move(show), std::move(read)});
  return error;
}

void ConfigForm::show(const RunConfig& config) {
  const bool was_showing = showing_;
  showing_ = true;
  for (const Binding& b : bindings_) b.show(config);
  showing_ = was_showing;
}

RunConfig ConfigForm::read(const RunConfig& base, QStringList* parse_problems) const {
  RunConfig config = base;
  for (const Binding& b : bindings_) {
    const QString problem = b.read(config);
    if (!problem.isEmpty() && parse_problems) parse_problems->append(problem);
  }
  return config;
}

QStringList ConfigForm::showProblems(const QStringList& problems) {
  QStringList unrouted;
  std::vector<QStringList> reasons(bindings_.size());
  for (const QString& message : problems) {
    const QString key = problem_key(message);
    bool routed = false;
    for (size_t i = 0; i < bindings_.size(); ++i) {
      if (bindings_[i].key != key) continue;
      QString reason = message.mid(key.size()).trimmed();
      if (reason.startsWith(QLatin1Char(',')) || reason.startsWith(QLatin1Char(':'))) reason = reason.mid(1).trimmed();
      reasons[i].append(reason);
      routed = true;
      break;
    }
    if (!routed) unrouted.append(message);
  }
  for (size_t i = 0; i < bindings_.size(); ++i) {
    QLabel* label = bindings_[i].error_label;
    label->setText(reasons[i].join(QLatin1Char('\n')));
    label->setVisible(!reasons[i].isEmpty());
  }
  return unrouted;
}

QWidget* ConfigForm::editor(const QString& key) const {
  for (const Binding& b : bindings_)
    if (b.key == key) return b.editor;
  return nullptr;
}

QStringList ConfigForm::keys() const {
  QStringList out;
  for (const Binding& b : bindings_) out.append(b.key);
  return out;
}

}  // namespace ganpo::ui
