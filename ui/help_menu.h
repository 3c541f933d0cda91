// The main window's Help menu: About (the build's versions and where the workspace, run folders
// and worker logs are), the keyboard shortcuts of the window's actions, and the documentation
// (the README installed with the package, else the source tree's).
#pragma once

#include <QList>
#include <QString>

class QAction;
class QMainWindow;

namespace ganpo::ui {

// Adds "Help" to the window's menu bar; `actions` are the ones whose shortcuts the list shows.
void add_help_menu(QMainWindow* window, const QString& workspace_path, const QList<QAction*>& actions);

// The About box's text (HTML): versions, the workspace and the folders beside it.
QString about_text(const QString& workspace_path);
// The shortcuts table (HTML): each action with a shortcut, in the order given.
QString shortcuts_text(const QList<QAction*>& actions);
// The README to open: the installed one, else the one of the source tree this was built from;
// empty when neither exists.
QString documentation_path();

}  // namespace ganpo::ui
