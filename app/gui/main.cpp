// `ganpo-workbench`: the desktop app. Opens the workspace (the default one or --db FILE) in the
// main window; training runs in `ganpo` worker processes.
#include <QApplication>
#include <QCommandLineParser>
#include <QSettings>
#include <QTimer>

#include <sys/stat.h>

#include <clocale>
#include <cstdio>

#include "core/build_info.h"
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
  QApplication::setApplicationVersion(QString::fromStdString(ganpo::version_details()));
  QCommandLineParser parser;
  parser.setApplicationDescription("Preference optimization workbench (DPO / SimPO / IPO, with or without GANPO)");
  parser.addHelpOption();
  parser.addVersionOption();
  QCommandLineOption db({"d", "db"}, "Workspace database file.", "FILE");
  QCommandLineOption new_run("new-run", "Open the New Run dialog with this preset (e.g. demo).", "PRESET");
  QCommandLineOption shots("screenshots", "Take the README's screenshots into DIR, then quit.", "DIR");
  QCommandLineOption live("live-seconds", "With --screenshots: seconds of training before the dashboard shot.",
                          "N", "40");
  QCommandLineOption self_test("self-test",
                               "Open the workspace and the window, run the event loop once, then quit (exit 0): "
                               "checks an installation.");
  parser.addPositionalArgument("config", "A run config file (*.ganpo.toml) to open in the New Run dialog.", "[config]");
  parser.addOption(db);
  parser.addOption(self_test);
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
  } else if (parser.isSet(self_test)) {
    QTimer::singleShot(0, &app, [&app, workspace] {
      std::printf("ganpo-workbench started with workspace %s\n", workspace.toLocal8Bit().constData());
      app.quit();
    });
  } else if (parser.isSet(new_run)) {
    QTimer::singleShot(0, &window, [&window, preset = parser.value(new_run)] { window.openNewRunDialog(preset); });
  } else if (!parser.positionalArguments().isEmpty()) {
    QTimer::singleShot(0, &window, [&window, file = parser.positionalArguments().front()] {
      window.openNewRunDialogWithFile(file);
    });
  }
  return app.exec();
}
