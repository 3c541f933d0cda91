// FormPage and FormSection: the layout the New Run dialog's pages are built from.
//
// A FormPage is a scrollable column of titled sections; a FormSection is a group box laid out
// as a grid of rows "label | editor | reason", where the reason is a red, word-wrapped label
// that stays hidden while it is empty. Only layout lives here; what the editors mean is
// ConfigForm's business (ui/config_form.h).
#pragma once

#include <QGroupBox>
#include <QScrollArea>
#include <QString>

class QGridLayout;
class QLabel;
class QVBoxLayout;

namespace ganpo::ui {

class FormSection : public QGroupBox {
  Q_OBJECT
public:
  explicit FormSection(const QString& title, QWidget* parent = nullptr);

  // label | editor | error_label; the tooltip goes on the label and the editor.
  void addRow(const QString& label, QWidget* editor, QLabel* error_label, const QString& tooltip = {});
  // A widget spanning every column (a preview table, a note).
  void addWideRow(QWidget* widget);

private:
  QGridLayout* grid_;
};

class FormPage : public QScrollArea {
  Q_OBJECT
public:
  explicit FormPage(QWidget* parent = nullptr);
  FormSection* addSection(const QString& title);

private:
  QVBoxLayout* sections_;
};

}  // namespace ganpo::ui
