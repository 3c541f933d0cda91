// `ganpo-workbench`: the desktop app. Opens the workspace (the default one or --db FILE) in the
// main window; training runs in `ganpo` worker processes.
#include <QApplication>
#include <QCommandLineParser>
#include <QSettings>
#include <QTimer>

#include <sys/stat.h>

#include <clocale>

#include "db/workspace_path.h"
#include "ui/main_window.h"
#include "ui/screenshot_tour.h"

int main(int argc, char** argv) {
  // Workspaces, run folders, exports and logs hold a person's data: private to the user.
  ::umask(077);
  QApplication app(argc, argv);
  // Qt sets the user's locale; numbers in files, reports and worker arguments are written and
  // read with the C library, and must not turn into "0,5" under a comma-decimal locale.
  std::setlocale(LC_NUMERIC, "C");
  QApplication::setApplicationName("GANPO Workbench");
  QApplication::setOrganizationName("ganpo-workbench");
  QApplication::setApplicationVersion("0.1.0");
  QCommandLineParser parser;
  parser.setApplicationDescription("Preference optimization workbench (DPO / SimPO / IPO, with or without GANPO)");
  parser.addHelpOption();
  parser.addVersionOption();
  QCommandLineOption db({"d", "db"}, "Workspace database file.", "FILE");
  QCommandLineOption new_run("new-run", "Open the New Run dialog with this preset (e.g. demo).", "PRESET");
  QCommandLineOption shots("screenshots", "Take the README's screenshots into DIR, then quit.", "DIR");
  QCommandLineOption live("live-seconds", "With --screenshots: seconds of training before the dashboard shot.",
                          "N", "40");
  parser.addOption(db);
  parser.addOption(new_run);
  parser.addOption(shots);
  parser.addOption(live);
  parser.process(app);
  // The workspace: --db, else the one used last time, else the default location.
  QString workspace = parser.value(db);
  if (workspace.isEmpty()) workspace = QSettings().value("workspace/last").toString();
  if (workspace.isEmpty()) workspace = QString::fromStdString(ganpo::default_workspace_path());
  ganpo::ui::MainWindow window(workspace);
  window.show();
  if (parser.isSet(shots)) {
    auto* tour = new ganpo::ui::ScreenshotTour(&window, parser.value(shots), parser.value(live).toInt(), &window);
    tour->start();
  } else if (parser.isSet(new_run)) {
    QTimer::singleShot(0, &window, [&window, preset = parser.value(new_run)] { window.openNewRunDialog(preset); });
  }
  return app.exec();
}
