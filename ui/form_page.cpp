#include "ui/form_page.h"

#include <QGridLayout>
#include <QLabel>
#include <QVBoxLayout>

namespace ganpo::ui {

FormSection::FormSection(const QString& title, QWidget* parent) : QGroupBox(title, parent) {
  grid_ = new QGridLayout(this);
  grid_->setColumnStretch(1, 2);
  grid_->setColumnStretch(2, 3);
  // One label width on every page, so editors line up from section to section.
  grid_->setColumnMinimumWidth(0, 200);
  grid_->setColumnMinimumWidth(1, 260);
}

void FormSection::addRow(const QString& label, QWidget* editor, QLabel* error_label, const QString& tooltip) {
  const int row = grid_->rowCount();
  auto* name = new QLabel(label, this);
  name->setBuddy(editor);
  if (!tooltip.isEmpty()) {
    name->setToolTip(tooltip);
    editor->setToolTip(tooltip);
  }
  grid_->addWidget(name, row, 0);
  grid_->addWidget(editor, row, 1);
  if (error_label) grid_->addWidget(error_label, row, 2);
}

void FormSection::addWideRow(QWidget* widget) { grid_->addWidget(widget, grid_->rowCount(), 0, 1, 3); }

FormPage::FormPage(QWidget* parent) : QScrollArea(parent) {
  auto* content = new QWidget(this);
  sections_ = new QVBoxLayout(content);
  sections_->addStretch(1);
  setWidget(content);
  setWidgetResizable(true);
  setFrameShape(QFrame::NoFrame);
}

FormSection* FormPage::addSection(const QString& title) {
  auto* section = new FormSection(title, widget());
  sections_->insertWidget(sections_->count() - 1, section);  // before the closing stretch
  return section;
}

}  // namespace ganpo::ui
