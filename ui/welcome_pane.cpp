#include "ui/welcome_pane.h"

#include <QLabel>
#include <QPushButton>
#include <QStyle>
#include <QVBoxLayout>

namespace ganpo::ui {

WelcomePane::WelcomePane(QWidget* parent) : QWidget(parent) {
  setObjectName("welcome-pane");
  auto* outer = new QVBoxLayout(this);
  outer->addStretch(2);
  auto* column = new QVBoxLayout;
  column->setSpacing(10);
  auto* title = new QLabel("Nothing is open yet");
  QFont f = title->font();
  f.setPointSizeF(f.pointSizeF() * 1.4);
  f.setBold(true);
  title->setFont(f);
  column->addWidget(title);
  auto* intro = new QLabel("Train a policy with DPO, SimPO, IPO or hinge, with or without GANPO's latent critics, "
                           "and watch it here as it runs.");
  intro->setWordWrap(true);
  column->addWidget(intro);
  column->addSpacing(6);
  // One button per next step, with what it does beside it.
  auto add = [&](const QString& text, QStyle::StandardPixmap icon, const QString& says, void (WelcomePane::*signal)()) {
    auto* row = new QHBoxLayout;
    auto* button = new QPushButton(style()->standardIcon(icon), text);
    button->setMinimumWidth(170);
    connect(button, &QPushButton::clicked, this, signal);
    row->addWidget(button);
    auto* label = new QLabel(says);
    label->setWordWrap(true);
    row->addWidget(label, 1);
    column->addLayout(row);
    return button;
  };
  add("Try the demo...", QStyle::SP_MediaPlay,
      "A tiny model learns a built-in task: SFT, then DPO + GANPO. A few minutes on a CPU; its Samples tab shows "
      "the answers getting better.",
      &WelcomePane::demoRequested)
      ->setDefault(true);
  add("New Run...", QStyle::SP_FileIcon,
      "A run of your own: a built-in model or a Hugging Face folder, a JSONL preference file (Ctrl+N).",
      &WelcomePane::newRunRequested);
  add("New Study...", QStyle::SP_FileDialogNewFolder,
      "Seeds and a grid of settings, GANPO on and off, with intervals on every difference (Ctrl+Shift+N).",
      &WelcomePane::newStudyRequested);
  add("Open a study...", QStyle::SP_FileDialogDetailedView, "A study queued in this workspace (Ctrl+Shift+S).",
      &WelcomePane::studiesRequested);
  hint_ = new QLabel;
  hint_->setWordWrap(true);
  hint_->hide();
  column->addSpacing(6);
  column->addWidget(hint_);
  auto* centred = new QHBoxLayout;
  centred->addStretch(1);
  centred->addLayout(column, 4);
  centred->addStretch(1);
  outer->addLayout(centred);
  outer->addStretch(3);
}

void WelcomePane::setRunCount(int runs) {
  hint_->setText(runs > 0 ? QString("This workspace has %1 run%2: double-click one in the list to open its "
                                    "dashboard, samples and checkpoints; select several and press Compare (Ctrl+K).")
                                .arg(runs)
                                .arg(runs == 1 ? "" : "s")
                          : QString());
  hint_->setVisible(runs > 0);
}

QString WelcomePane::hintText() const { return hint_->text(); }

}  // namespace ganpo::ui
