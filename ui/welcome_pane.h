// WelcomePane: what the right-hand side of the main window shows while no tab is open (UX.md,
// "First run"): what to do next, as buttons: a new run, the built-in demo, a new study, the
// workspace's studies; and, once the workspace has runs, that a double-click opens one. It only
// asks; the main window does the work.
#pragma once

#include <QWidget>

class QLabel;

namespace ganpo::ui {

class WelcomePane : public QWidget {
  Q_OBJECT
public:
  explicit WelcomePane(QWidget* parent = nullptr);
  // How many runs the workspace lists (the hint on opening one shows above 0).
  void setRunCount(int runs);
  QString hintText() const;

Q_SIGNALS:
  void newRunRequested();
  void demoRequested();
  void newStudyRequested();
  void studiesRequested();

private:
  QLabel* hint_ = nullptr;
};

}  // namespace ganpo::ui
